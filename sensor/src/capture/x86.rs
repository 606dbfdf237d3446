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

/// Where a function's first `push` is, in bytes from its start: 0 when it
/// begins with `push` (emulated by the kernel's uprobe code, hence cheap), 4
/// when an `endbr64` comes first.  An error when it begins otherwise.
pub fn push_entry(code: &[u8], addr: u64) -> Result<u64, WrapperError> {
    let insn = after_endbr64(code, addr)
        .next()
        .ok_or(WrapperError::Undecodable)?;
    if insn.mnemonic() == Mnemonic::Push {
        Ok(insn.ip() - addr)
    } else {
        Err(WrapperError::TargetNotPush(
            format!("{:?}", insn.mnemonic()).to_lowercase(),
        ))
    }
}

/// Where to put the probe of a function that need not start with `push` (an
/// exported entry, `SSL_free`), and whether the kernel emulates the probed
/// instruction: on the `push` after a leading `endbr64` when there is one
/// (emulated), else at the start (single-stepped unless it is a `push`).
pub fn probe_entry(code: &[u8], addr: u64) -> (u64, bool) {
    match push_entry(code, addr) {
        Ok(offset) => (offset, true),
        Err(_) => (0, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(push_entry(&[0x41, 0x57], 0), Ok(0)); // push %r15
        assert_eq!(push_entry(&[0x55], 0), Ok(0)); // push %rbp
        assert!(matches!(
            push_entry(&[0x48, 0x83, 0xec, 0x08], 0),
            Err(WrapperError::TargetNotPush(_))
        ));
        assert_eq!(push_entry(&[], 0), Err(WrapperError::Undecodable));
    }

    /// Debian 13's libssl (OpenSSL 3.5, built with `-fcf-protection`).
    #[test]
    fn push_after_endbr64_is_the_site() {
        // ssl_read_internal: endbr64; push %r14; push %r13
        let code = [0xf3, 0x0f, 0x1e, 0xfa, 0x41, 0x56, 0x41, 0x55];
        assert_eq!(push_entry(&code, 0x3d830), Ok(4));
        assert_eq!(probe_entry(&code, 0x3d830), (4, true));
        // SSL_read: endbr64; sub $0x18,%rsp — single-stepped either way: the start.
        let code = [0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x83, 0xec, 0x18];
        assert_eq!(
            push_entry(&code, 0x3da40),
            Err(WrapperError::TargetNotPush("sub".into()))
        );
        assert_eq!(probe_entry(&code, 0x3da40), (0, false));
        // SSL_free: endbr64; test %rdi,%rdi; je … — the start.
        let code = [0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x85, 0xff, 0x74, 0x6f];
        assert_eq!(probe_entry(&code, 0x46500), (0, false));
        // Only one endbr64 is skipped; a truncated one is not code.
        let code = [0xf3, 0x0f, 0x1e, 0xfa, 0xf3, 0x0f, 0x1e, 0xfa, 0x55];
        assert!(push_entry(&code, 0).is_err());
        assert_eq!(
            push_entry(&[0xf3, 0x0f, 0x1e, 0xfa], 0),
            Err(WrapperError::Undecodable)
        );
        assert_eq!(probe_entry(&[0xf3, 0x0f, 0x1e], 0), (0, false));
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
