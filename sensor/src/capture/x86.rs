//! Recognising OpenSSL's thin `_ex` wrappers in x86-64 machine code.
//!
//! In Debian's libssl.so.3, `SSL_write_ex` is `sub $8,%rsp; call ssl_write_internal; …`
//! with the four arguments passed through untouched, and `SSL_read_ex` likewise
//! calls `ssl_read_internal`.  Probing those internal functions covers all four
//! exported functions and is ~10× cheaper: they begin with `push`, which the kernel
//! emulates, while the exported entries begin with `sub`, which must be
//! single-stepped.  Anything that does not match the pattern exactly is rejected,
//! and the caller falls back to the exported entry points.
//!
//! Builds with Intel CET (`-fcf-protection`: Debian 13, Ubuntu, Fedora, RHEL)
//! begin every function with `endbr64`, which the kernel does not emulate: a
//! uprobe there is single-stepped, ~16× the cost of one on the `push` after it
//! (9.6 against 0.6 µs per hit, measured on this kernel).  So a probe goes on
//! the `push` right after a leading `endbr64` ([`push_entry`]): every call of
//! the function executes it, the stack is untouched by then (the return
//! address is still on top, for the return probe), and no branch inside the
//! function goes back to a `push` of its prologue (running it twice would
//! unbalance the stack).
//!
//! Newer GCCs shrink-wrap: a function that returns early on a NULL argument
//! tests it before its prologue (`test %rdi,%rdi; je early_out; push …`:
//! OpenSSL ≥ 3.2's `ssl_write_internal` in the manylinux_2_28 wheels, Debian
//! 13's `SSL_free`).  The probe then goes on the `push` after that guard,
//! once the early-out is checked to do nothing but return; without that,
//! such a build fell back to the exported entries, single-stepped.

use iced_x86::{Code, Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

/// Instructions looked at before the call (an optional `endbr64`, then `sub rsp`).
const MAX_PROLOGUE_INSTRUCTIONS: usize = 2;

/// Why a wrapper was not recognised (logged, and the library gets exported probes).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WrapperError {
    #[error("could not decode the first instructions")]
    Undecodable,
    #[error("unexpected instruction `{0}` before the call")]
    UnexpectedPrologue(String),
    #[error("no direct call in the first instructions")]
    NoCall,
    #[error("call target starts with `{0}`, not `push`")]
    TargetNotPush(String),
}

/// Decodes the wrapper's code at virtual address `addr` and returns the virtual
/// address of the function it tail-forwards its arguments to.
///
/// Accepted: `[endbr64] sub rsp, imm; call rel32` — the stack adjustment does not
/// touch the argument registers, so the callee sees exactly the wrapper's arguments.
pub fn wrapper_call_target(code: &[u8], addr: u64) -> Result<u64, WrapperError> {
    let mut decoder = Decoder::with_ip(64, code, addr, DecoderOptions::NONE);
    let mut insn = Instruction::default();
    for _ in 0..=MAX_PROLOGUE_INSTRUCTIONS {
        if !decoder.can_decode() {
            return Err(WrapperError::Undecodable);
        }
        decoder.decode_out(&mut insn);
        if insn.is_invalid() {
            return Err(WrapperError::Undecodable);
        }
        match insn.code() {
            Code::Endbr64 => continue,
            Code::Sub_rm64_imm8 | Code::Sub_rm64_imm32
                if insn.op0_kind() == OpKind::Register && insn.op0_register() == Register::RSP =>
            {
                continue
            }
            Code::Call_rel32_64 => return Ok(insn.near_branch_target()),
            _ => {
                return Err(WrapperError::UnexpectedPrologue(
                    format!("{:?}", insn.mnemonic()).to_lowercase(),
                ))
            }
        }
    }
    Err(WrapperError::NoCall)
}

/// Whether `code` (at `addr`) is OpenSSL ≥ 3.3's `SSL_write_ex` as a tail
/// call into `SSL_write_ex2(s, buf, num, 0, written)`: `[endbr64] mov
/// %rcx,%r8; xor %ecx,%ecx; jmp` (the fourth argument moved to the fifth,
/// flags 0); the jump's target (often a PLT stub) when it is.
pub fn write_ex2_tail_call(code: &[u8], addr: u64) -> Option<u64> {
    let mut insns = after_endbr64(code, addr);
    let (mov, xor, jmp) = (insns.next()?, insns.next()?, insns.next()?);
    let moves_written = mov.code() == Code::Mov_rm64_r64
        && mov.op0_register() == Register::R8
        && mov.op1_register() == Register::RCX;
    let zeroes_flags = matches!(xor.code(), Code::Xor_r32_rm32 | Code::Xor_rm32_r32)
        && xor.op0_register() == Register::ECX
        && xor.op1_register() == Register::ECX;
    let jumps = matches!(jmp.code(), Code::Jmp_rel32_64 | Code::Jmp_rel8_64);
    (moves_written && zeroes_flags && jumps).then(|| jmp.near_branch_target())
}

/// The instructions of `code` (at `addr`) past one leading `endbr64`, until
/// the code ends or stops decoding.
fn after_endbr64(code: &[u8], addr: u64) -> impl Iterator<Item = Instruction> + '_ {
    let mut decoder = Decoder::with_ip(64, code, addr, DecoderOptions::NONE);
    let mut insns = std::iter::from_fn(move || {
        let insn = decoder.can_decode().then(|| decoder.decode());
        insn.filter(|i| !i.is_invalid())
    })
    .fuse()
    .peekable();
    insns.next_if(|i| i.code() == Code::Endbr64);
    insns
}

/// Instructions an early-out may run before its `ret`: setting the return
/// value, and zeroing the call-clobbered registers (Debian 13 builds with
/// `-fzero-call-used-regs`: `xor %eax,%eax; xor %edx,%edx; xor %esi,%esi;
/// xor %edi,%edi; ret`).
const MAX_EARLY_OUT_INSTRUCTIONS: usize = 8;

/// Where a function's first `push` is, in bytes from its start: 0 when it
/// begins with `push` (emulated by the kernel's uprobe code, hence cheap), 4
/// when an `endbr64` comes first.  A shrink-wrapped function may test an
/// argument before its prologue (`test %rdi,%rdi; je early_out; push …`,
/// OpenSSL ≥ 3.2's `ssl_write_internal` built by newer GCCs: the NULL check):
/// the `push` after that guard is the site when `early_out` only sets the
/// return value and returns, since every call that does any work then runs
/// the `push` with the stack and argument registers untouched (`test` and
/// `je` change neither).  `code_at` gives the code at a virtual address (the
/// early-out's).  An error when the function begins otherwise.
pub fn push_entry<'c>(
    code: &[u8],
    addr: u64,
    code_at: &dyn Fn(u64) -> Option<&'c [u8]>,
) -> Result<u64, WrapperError> {
    let mut insns = after_endbr64(code, addr);
    let first = insns.next().ok_or(WrapperError::Undecodable)?;
    if first.mnemonic() == Mnemonic::Push {
        return Ok(first.ip() - addr);
    }
    let not_push = || WrapperError::TargetNotPush(format!("{:?}", first.mnemonic()).to_lowercase());
    let tests_a_register = matches!(first.code(), Code::Test_rm64_r64 | Code::Test_rm32_r32)
        && first.op0_kind() == OpKind::Register
        && first.op0_register() == first.op1_register();
    if !tests_a_register {
        return Err(not_push());
    }
    let jump = insns.next().ok_or_else(not_push)?;
    if !matches!(jump.code(), Code::Je_rel8_64 | Code::Je_rel32_64) {
        return Err(not_push());
    }
    let target = jump.near_branch_target();
    if !code_at(target).is_some_and(|c| returns_at_once(c, target)) {
        return Err(not_push());
    }
    match insns.next() {
        Some(push) if push.mnemonic() == Mnemonic::Push => Ok(push.ip() - addr),
        _ => Err(not_push()),
    }
}

/// Whether `code` (at `addr`) returns at once: at most
/// [`MAX_EARLY_OUT_INSTRUCTIONS`] that only set registers to constants
/// (`xor %reg,%reg`, `mov $imm,%eax`, `or $-1,%eax`), then `ret`.
fn returns_at_once(code: &[u8], addr: u64) -> bool {
    let mut decoder = Decoder::with_ip(64, code, addr, DecoderOptions::NONE);
    for _ in 0..=MAX_EARLY_OUT_INSTRUCTIONS {
        if !decoder.can_decode() {
            return false;
        }
        let insn = decoder.decode();
        let to_register = insn.op_count() > 0 && insn.op0_kind() == OpKind::Register;
        let to_eax = to_register && insn.op0_register() == Register::EAX;
        match insn.code() {
            Code::Retnq => return true,
            Code::Xor_r32_rm32 | Code::Xor_rm32_r32
                if to_register
                    && insn.op1_kind() == OpKind::Register
                    && insn.op1_register() == insn.op0_register() => {}
            Code::Mov_r32_imm32 if to_eax => {}
            Code::Or_rm32_imm8 if to_eax && insn.immediate8to32() == -1 => {}
            _ => return false,
        }
    }
    false
}

/// Where to put the probe of a function that need not start with `push` (an
/// exported entry, `SSL_free`), and whether the kernel emulates the probed
/// instruction: on the function's first `push` ([`push_entry`]) when it can
/// be (emulated), else at the start (single-stepped unless it is a `push`).
pub fn probe_entry<'c>(
    code: &[u8],
    addr: u64,
    code_at: &dyn Fn(u64) -> Option<&'c [u8]>,
) -> (u64, bool) {
    match push_entry(code, addr, code_at) {
        Ok(offset) => (offset, true),
        Err(_) => (0, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No code anywhere else: a guard's early-out cannot be checked.
    const NO_CODE: &dyn Fn(u64) -> Option<&'static [u8]> = &|_| None;

    #[test]
    fn debian_wrapper_pattern() {
        // sub $0x8,%rsp; call rel32 (-0x479); xor %edx,%edx
        let code = [
            0x48, 0x83, 0xec, 0x08, 0xe8, 0x87, 0xfb, 0xff, 0xff, 0x31, 0xd2,
        ];
        assert_eq!(wrapper_call_target(&code, 0x35a10), Ok(0x355a0));
    }

    #[test]
    fn endbr_and_imm32_sub_accepted() {
        // endbr64; sub $0x108,%rsp; call +0x100
        let code = [
            0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x81, 0xec, 0x08, 0x01, 0x00, 0x00, 0xe8, 0x00, 0x01,
            0x00, 0x00,
        ];
        assert_eq!(wrapper_call_target(&code, 0x1000), Ok(0x1000 + 16 + 0x100));
    }

    #[test]
    fn direct_call_accepted() {
        let code = [0xe8, 0x10, 0x00, 0x00, 0x00];
        assert_eq!(wrapper_call_target(&code, 0x2000), Ok(0x2015));
    }

    #[test]
    fn argument_shuffling_rejected() {
        // mov %rsp,%rcx; call …  — the wrapper changes an argument register.
        let code = [0x48, 0x89, 0xe1, 0xe8, 0x00, 0x00, 0x00, 0x00];
        assert!(matches!(
            wrapper_call_target(&code, 0),
            Err(WrapperError::UnexpectedPrologue(_))
        ));
        // push %rbx; sub $8,%rsp; call — a real function, not a wrapper.
        let code = [0x53, 0x48, 0x83, 0xec, 0x08, 0xe8, 0, 0, 0, 0];
        assert!(wrapper_call_target(&code, 0).is_err());
        // sub $8,%rdi (not rsp)
        let code = [0x48, 0x83, 0xef, 0x08, 0xe8, 0, 0, 0, 0];
        assert!(wrapper_call_target(&code, 0).is_err());
    }

    #[test]
    fn too_long_prologue_and_garbage_rejected() {
        // endbr64; sub; sub; call — more than the allowed prologue.
        let code = [
            0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x83, 0xec, 0x08, 0x48, 0x83, 0xec, 0x08, 0xe8, 0, 0, 0,
            0,
        ];
        assert_eq!(wrapper_call_target(&code, 0), Err(WrapperError::NoCall));
        assert_eq!(wrapper_call_target(&[], 0), Err(WrapperError::Undecodable));
        assert_eq!(
            wrapper_call_target(&[0x48, 0x83], 0),
            Err(WrapperError::Undecodable)
        );
        // Indirect call through a register.
        assert!(wrapper_call_target(&[0xff, 0xd0], 0).is_err());
    }

    #[test]
    fn push_detection() {
        assert_eq!(push_entry(&[0x41, 0x57], 0, NO_CODE), Ok(0)); // push %r15
        assert_eq!(push_entry(&[0x55], 0, NO_CODE), Ok(0)); // push %rbp
        assert!(matches!(
            push_entry(&[0x48, 0x83, 0xec, 0x08], 0, NO_CODE),
            Err(WrapperError::TargetNotPush(_))
        ));
        assert_eq!(push_entry(&[], 0, NO_CODE), Err(WrapperError::Undecodable));
    }

    /// Debian 13's libssl (OpenSSL 3.5, built with `-fcf-protection`).
    #[test]
    fn push_after_endbr64_is_the_site() {
        // ssl_read_internal: endbr64; push %r14; push %r13
        let code = [0xf3, 0x0f, 0x1e, 0xfa, 0x41, 0x56, 0x41, 0x55];
        assert_eq!(push_entry(&code, 0x3d830, NO_CODE), Ok(4));
        assert_eq!(probe_entry(&code, 0x3d830, NO_CODE), (4, true));
        // SSL_read: endbr64; sub $0x18,%rsp — single-stepped either way: the start.
        let code = [0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x83, 0xec, 0x18];
        assert_eq!(
            push_entry(&code, 0x3da40, NO_CODE),
            Err(WrapperError::TargetNotPush("sub".into()))
        );
        assert_eq!(probe_entry(&code, 0x3da40, NO_CODE), (0, false));
        // SSL_free: endbr64; test %rdi,%rdi; je … — the start.
        let code = [0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x85, 0xff, 0x74, 0x6f];
        assert_eq!(probe_entry(&code, 0x46500, NO_CODE), (0, false));
        // Only one endbr64 is skipped; a truncated one is not code.
        let code = [0xf3, 0x0f, 0x1e, 0xfa, 0xf3, 0x0f, 0x1e, 0xfa, 0x55];
        assert!(push_entry(&code, 0, NO_CODE).is_err());
        assert_eq!(
            push_entry(&[0xf3, 0x0f, 0x1e, 0xfa], 0, NO_CODE),
            Err(WrapperError::Undecodable)
        );
        assert_eq!(probe_entry(&[0xf3, 0x0f, 0x1e], 0, NO_CODE), (0, false));
    }

    /// OpenSSL 3.5's `ssl_write_internal` in the `cryptography` 45 wheel
    /// (manylinux_2_28, GCC shrink-wrapping): `test %rdi,%rdi; je 340f60;
    /// push %r14`, and at 340f60 `xor %eax,%eax; ret`.
    const GUARDED: [u8; 11] = [
        0x48, 0x85, 0xff, 0x0f, 0x84, 0x17, 0x01, 0x00, 0x00, 0x41, 0x56,
    ];
    const GUARDED_AT: u64 = 0x340e40;
    const EARLY_OUT_AT: u64 = 0x340f60;

    /// `code_at` with `early_out` at [`EARLY_OUT_AT`] and nothing elsewhere.
    fn early_out(code: &'static [u8]) -> impl Fn(u64) -> Option<&'static [u8]> {
        move |a| (a == EARLY_OUT_AT).then_some(code)
    }

    #[test]
    fn push_after_a_null_guard_is_the_site() {
        let returns_0: &'static [u8] = &[0x31, 0xc0, 0xc3];
        assert_eq!(
            push_entry(&GUARDED, GUARDED_AT, &early_out(returns_0)),
            Ok(9)
        );
        assert_eq!(
            probe_entry(&GUARDED, GUARDED_AT, &early_out(returns_0)),
            (9, true)
        );
        // The same after endbr64, with a short je (Debian 13's SSL_free,
        // whose early-out zeroes the call-clobbered registers).
        let mut code = vec![0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x85, 0xff, 0x74, 0x6f, 0x53];
        let target = 0x47220 + 9 + 0x6f;
        let zeroes: &'static [u8] = &[0x31, 0xc0, 0x31, 0xd2, 0x31, 0xf6, 0x31, 0xff, 0xc3];
        let at = move |a| (a == target).then_some(zeroes);
        assert_eq!(push_entry(&code, 0x47220, &at), Ok(9));
        // `mov $-1,%eax; ret` and `or $-1,%eax; ret` return a constant too;
        // a void function's early-out is a bare `ret`.
        for out in [
            &[0xb8, 0xff, 0xff, 0xff, 0xff, 0xc3][..],
            &[0x83, 0xc8, 0xff, 0xc3],
            &[0xc3],
        ] {
            let out: &'static [u8] = Box::leak(out.to_vec().into_boxed_slice());
            assert_eq!(
                push_entry(&GUARDED, GUARDED_AT, &early_out(out)),
                Ok(9),
                "{out:x?}"
            );
        }
        // test %edi,%edi (32 bits) is a guard as well.
        code[4] = 0x85;
        code.remove(4);
        assert_eq!(code[4..6], [0x85, 0xff]);
        let target = 0x47220 + 8 + 0x6f;
        let at = move |a| (a == target).then_some(zeroes);
        assert_eq!(push_entry(&code, 0x47220, &at), Ok(8));
    }

    /// A guard is skipped only when its early-out provably does nothing but
    /// return: otherwise a call that does work could run past the probe.
    #[test]
    fn guards_that_may_do_work_are_not_skipped() {
        let rejected = |code: &[u8], out: &'static [u8]| {
            let r = push_entry(code, GUARDED_AT, &early_out(out));
            assert!(
                matches!(r, Err(WrapperError::TargetNotPush(_))),
                "{code:x?} / {out:x?}: {r:?}"
            );
        };
        let returns_0: &'static [u8] = &[0x31, 0xc0, 0xc3];
        // Early-outs that call, jump, write memory, use the stack, run too long.
        rejected(&GUARDED, &[0xe8, 0, 0, 0, 0, 0xc3]); // call
        rejected(&GUARDED, &[0xe9, 0, 0, 0, 0]); // jmp
        rejected(&GUARDED, &[0x31, 0xc0, 0x89, 0x07, 0xc3]); // mov %eax,(%rdi)
        rejected(&GUARDED, &[0x50, 0x58, 0xc3]); // push; pop
        rejected(
            &GUARDED,
            &[
                0x31, 0xc0, 0x31, 0xd2, 0x31, 0xf6, 0x31, 0xff, 0x31, 0xc9, 0x45, 0x31, 0xc0, 0x45,
                0x31, 0xc9, 0x45, 0x31, 0xd2, 0x45, 0x31, 0xdb, 0xc3,
            ],
        ); // 9 before ret
        rejected(&GUARDED, &[0x31, 0xd0, 0xc3]); // xor %edx,%eax: not a constant
        rejected(&GUARDED, &[0x31, 0xc0]); // no ret in sight
                                           // The early-out's code is not available.
        assert!(push_entry(&GUARDED, GUARDED_AT, NO_CODE).is_err());
        // Not that guard: jne (the fall-through is the early-out), two
        // registers, cmp, or no push after it.
        let mut jne = GUARDED;
        jne[4] = 0x85;
        rejected(&jne, returns_0);
        let mut two = GUARDED;
        two[2] = 0xf7; // test %rsi,%rdi
        rejected(&two, returns_0);
        rejected(
            &[
                0x48, 0x83, 0xff, 0x00, 0x0f, 0x84, 0x14, 0x01, 0x00, 0x00, 0x41, 0x56,
            ],
            returns_0,
        ); // cmp $0,%rdi
        let mut no_push = GUARDED;
        no_push[9..].copy_from_slice(&[0x89, 0xc0]); // mov %eax,%eax
        rejected(&no_push, returns_0);
    }

    /// OpenSSL 3.3+'s `SSL_write_ex2` is the same wrapper around
    /// `ssl_write_internal` (which takes a fifth argument there).
    #[test]
    fn debian13_write_ex2_wrapper() {
        // endbr64; sub $0x8,%rsp; call 3dbf0
        let code = [
            0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x83, 0xec, 0x08, 0xe8, 0x83, 0xfa, 0xff, 0xff,
        ];
        assert_eq!(wrapper_call_target(&code, 0x3e160), Ok(0x3dbf0));
        // SSL_write_ex there: mov %rcx,%r8; xor %ecx,%ecx; jmp SSL_write_ex2@plt.
        let code = [
            0xf3, 0x0f, 0x1e, 0xfa, 0x49, 0x89, 0xc8, 0x31, 0xc9, 0xe9, 0x22, 0x7d, 0xfe, 0xff,
        ];
        assert!(matches!(
            wrapper_call_target(&code, 0x3e190),
            Err(WrapperError::UnexpectedPrologue(_))
        ));
        // ...which is recognised as the tail call into SSL_write_ex2.
        assert_eq!(
            write_ex2_tail_call(&code, 0x3e190),
            Some(0x3e190 + 14 - 0x182de)
        );
        // Not without endbr64's successor pattern exactly.
        assert_eq!(write_ex2_tail_call(&code[..13], 0x3e190), None);
        let mut other = code;
        other[6] = 0xd0; // mov %rdx,%r8
        assert_eq!(write_ex2_tail_call(&other, 0x3e190), None);
        let mut call = code;
        call[9] = 0xe8; // call instead of jmp
        assert_eq!(write_ex2_tail_call(&call, 0x3e190), None);
        // Debian 12's SSL_write_ex (sub; call ssl_write_internal) is not one.
        let code = [0x48, 0x83, 0xec, 0x08, 0xe8, 0x83, 0xfa, 0xff, 0xff];
        assert_eq!(write_ex2_tail_call(&code, 0x1000), None);
    }
}
