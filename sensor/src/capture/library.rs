//! Where to put the probes in one file with OpenSSL in it (a libssl, or a
//! program or library with OpenSSL linked in, such as node): ELF symbols,
//! file offsets, and the choice between internal and exported probe sites.
//!
//! Files are read through [`ReadCache`]: only the headers, the symbol names
//! and a few bytes of code are read, so a 100 MB program costs what a
//! 700 KiB libssl does.

use std::fs::File;
use std::path::Path;

use object::elf::{SHN_UNDEF, STT_FUNC};
use object::read::elf::{ElfFile64, SectionHeader, Sym};
use object::read::{ReadCache, ReadRef};
use object::{Endianness, Object, ObjectSection};

use super::config::ProbeMode;
use super::x86::{probe_entry, push_entry, wrapper_call_target, WrapperError};

/// Bytes of a function read for decoding (the wrapper pattern is 9 bytes).
const DECODE_WINDOW: u64 = 32;

/// A string table larger than this is not read to look for the `SSL_*`
/// names (node's `.dynstr` is ~3 MiB; an unstripped program's `.strtab` can
/// be far larger, and is only looked at when `.dynsym` has none of them).
const MAX_STRING_TABLE_BYTES: u64 = 64 * 1024 * 1024;
/// Which eBPF program goes where.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Program {
    SslWriteEntry,
    SslReadEntry,
    SslWriteExEntry,
    SslReadExEntry,
    SslWriteInternalEntry,
    /// OpenSSL 3.3 and later: `ssl_write_internal(s, buf, num, flags, written)`.
    SslWriteInternalFlagsEntry,
    SslReadInternalEntry,
    SslReturn,
    SslFreeEntry,
}

impl Program {
    /// Name of the program in the eBPF object.
    pub fn name(self) -> &'static str {
        match self {
            Program::SslWriteEntry => "ssl_write_entry",
            Program::SslReadEntry => "ssl_read_entry",
            Program::SslWriteExEntry => "ssl_write_ex_entry",
            Program::SslReadExEntry => "ssl_read_ex_entry",
            Program::SslWriteInternalEntry => "ssl_write_internal_entry",
            Program::SslWriteInternalFlagsEntry => "ssl_write_internal_flags_entry",
            Program::SslReadInternalEntry => "ssl_read_internal_entry",
            Program::SslReturn => "ssl_return",
            Program::SslFreeEntry => "ssl_free_entry",
        }
    }

    pub const ALL: [Program; 9] = [
        Program::SslWriteEntry,
        Program::SslReadEntry,
        Program::SslWriteExEntry,
        Program::SslReadExEntry,
        Program::SslWriteInternalEntry,
        Program::SslWriteInternalFlagsEntry,
        Program::SslReadInternalEntry,
        Program::SslReturn,
        Program::SslFreeEntry,
    ];
}

/// The probe sites chosen for one library.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbePlan {
    pub mode: SiteMode,
    /// (program, file offset) pairs to attach.
    pub sites: Vec<(Program, u64)>,
    /// Why internal mode was not used (when `mode` is Exported under Auto).
    pub fallback_reason: Option<String>,
    /// Entry sites whose first instruction the kernel single-steps (not a
    /// `push`): each probed call there costs several times what it costs at a
    /// `push` (~11 against ~1.7 µs on the benchmark machine).  Internal sites
    /// never are; exported entries beginning `sub` or `endbr64; sub` are.
    pub single_stepped: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SiteMode {
    Internal,
    Exported,
}

impl SiteMode {
    /// Label of `sensor_tls_attachments{mode}` and the live API.
    pub fn as_str(self) -> &'static str {
        match self {
            SiteMode::Internal => "internal",
            SiteMode::Exported => "exported",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error("not a 64-bit ELF file: {0}")]
    Elf(String),
    #[error("symbol {0} not found (neither in .dynsym nor in .symtab)")]
    MissingSymbol(&'static str),
    #[error("address {0:#x} is not inside a section with file contents")]
    NoFileOffset(u64),
    #[error("cannot read the code at file offset {0:#x}")]
    NoCode(u64),
}

/// A function found in the file's symbol table.
#[derive(Clone, Copy, Debug)]
struct Function {
    vaddr: u64,
    file_offset: u64,
}

/// The symbols the probes may use.  All of them are looked up in one pass
/// over the symbol table: node's `.dynsym` has ~100,000 entries.
const SYMBOLS: [&str; 6] = [
    "SSL_write",
    "SSL_read",
    "SSL_write_ex",
    "SSL_read_ex",
    "SSL_free",
    "SSL_write_ex2",
];

/// The length of the longest of [`SYMBOLS`].
const LONGEST_SYMBOL: usize = {
    let mut i = 0;
    let mut max = 0;
    while i < SYMBOLS.len() {
        if SYMBOLS[i].len() > max {
            max = SYMBOLS[i].len();
        }
        i += 1;
    }
    max
};

struct Elf<'a, R: ReadRef<'a>> {
    file: ElfFile64<'a, Endianness, R>,
    /// Address of each of [`SYMBOLS`] (same index), where the file defines it.
    found: [Option<u64>; SYMBOLS.len()],
}

impl<'a, R: ReadRef<'a>> Elf<'a, R> {
    fn parse(data: R) -> Result<Self, LibraryError> {
        let file = ElfFile64::<Endianness, R>::parse(data)
            .map_err(|e| LibraryError::Elf(e.to_string()))?;
        // Exported symbols first; a program linked statically keeps them in
        // .symtab only, unless stripped.
        let mut found = defined_functions(&file, file.elf_dynamic_symbol_table());
        if found.iter().all(Option::is_none) {
            found = defined_functions(&file, file.elf_symbol_table());
        }
        Ok(Elf { file, found })
    }

    fn has(&self, name: &'static str) -> bool {
        self.address(name).is_some()
    }

    fn address(&self, name: &'static str) -> Option<u64> {
        let i = SYMBOLS.iter().position(|n| *n == name)?;
        self.found[i]
    }

    fn symbol(&self, name: &'static str) -> Result<Function, LibraryError> {
        let vaddr = self
            .address(name)
            .ok_or(LibraryError::MissingSymbol(name))?;
        self.function(vaddr)
    }

    fn function(&self, vaddr: u64) -> Result<Function, LibraryError> {
        let file_offset = self
            .file_offset(vaddr)
            .ok_or(LibraryError::NoFileOffset(vaddr))?;
        Ok(Function { vaddr, file_offset })
    }

    /// File offset of a virtual address, through the section that contains it.
    fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.file.sections().find_map(|s| {
            let (off, size) = s.file_range()?;
            let start = s.address();
            (vaddr >= start && vaddr - start < size.min(s.size())).then(|| off + (vaddr - start))
        })
    }

    /// Up to [`DECODE_WINDOW`] bytes of code at virtual address `vaddr`.
    fn code_at(&self, vaddr: u64) -> Option<&'a [u8]> {
        self.code(self.function(vaddr).ok()?).ok()
    }

    /// Up to [`DECODE_WINDOW`] bytes of code at `f` (fewer at the end of the file).
    fn code(&self, f: Function) -> Result<&'a [u8], LibraryError> {
        let data = self.file.data();
        let len = data
            .len()
            .map_err(|()| LibraryError::NoCode(f.file_offset))?;
        let n = DECODE_WINDOW.min(len.saturating_sub(f.file_offset));
        data.read_bytes_at(f.file_offset, n)
            .map_err(|()| LibraryError::NoCode(f.file_offset))
    }
}

/// Addresses of the [`SYMBOLS`] that `table` defines as functions.  The
/// names are compared in the string table read whole (one read), not one
/// read per symbol.
fn defined_functions<'a, R: ReadRef<'a>>(
    file: &ElfFile64<'a, Endianness, R>,
    table: &object::read::elf::SymbolTable<'a, object::elf::FileHeader64<Endianness>, R>,
) -> [Option<u64>; SYMBOLS.len()] {
    let mut found = [None; SYMBOLS.len()];
    let endian = file.endian();
    if table.is_empty() {
        return found;
    }
    let Ok(section) = file.elf_section_table().section(table.string_section()) else {
        return found;
    };
    let Some((offset, size)) = section.file_range(endian) else {
        return found;
    };
    if size > MAX_STRING_TABLE_BYTES {
        return found;
    }
    let Ok(strings) = file.data().read_bytes_at(offset, size) else {
        return found;
    };
    for sym in table.symbols() {
        if sym.st_shndx(endian) == SHN_UNDEF || sym.st_type() != STT_FUNC {
            continue;
        }
        let Some(rest) = strings.get(sym.st_name(endian) as usize..) else {
            continue;
        };
        // Look for a name's end no further than the longest name's.
        let rest = &rest[..rest.len().min(LONGEST_SYMBOL + 1)];
        let Some(end) = memchr::memchr(0, rest) else {
            continue;
        };
        if let Some(i) = SYMBOLS.iter().position(|n| n.as_bytes() == &rest[..end]) {
            found[i].get_or_insert(sym.st_value(endian));
        }
    }
    found
}

/// Looks for the internal probe sites: the call targets of the write wrapper
/// and of `SSL_read_ex`, both starting with `push` (after an `endbr64` in CET
/// builds).  The write wrapper is `SSL_write_ex2` where the file defines it
/// (OpenSSL 3.3 and later: there `SSL_write_ex` jumps to it, and
/// `ssl_write_internal` takes a `flags` argument before `written`), else
/// `SSL_write_ex`.
fn internal_sites<'a, R: ReadRef<'a>>(elf: &Elf<'a, R>) -> Result<Vec<(Program, u64)>, String> {
    let write = if elf.has("SSL_write_ex2") {
        ("SSL_write_ex2", Program::SslWriteInternalFlagsEntry)
    } else {
        ("SSL_write_ex", Program::SslWriteInternalEntry)
    };
    let mut sites = Vec::new();
    let mut targets = Vec::new();
    for (wrapper, program) in [write, ("SSL_read_ex", Program::SslReadInternalEntry)] {
        let f = elf.symbol(wrapper).map_err(|e| e.to_string())?;
        let code = elf.code(f).map_err(|e| e.to_string())?;
        let target = wrapper_call_target(code, f.vaddr).map_err(|e| format!("{wrapper}: {e}"))?;
        let t = elf
            .function(target)
            .map_err(|e| format!("{wrapper} calls {target:#x}: {e}"))?;
        let code = elf.code(t).map_err(|e| e.to_string())?;
        let push = push_entry(code, t.vaddr, &|a| elf.code_at(a))
            .map_err(|e: WrapperError| format!("{wrapper} calls {target:#x}: {e}"))?;
        targets.push(target);
        sites.push((program, t.file_offset + push));
    }
    if targets[0] == targets[1] {
        return Err(format!(
            "{} and SSL_read_ex call the same function",
            write.0
        ));
    }
    Ok(sites)
}

/// The exported entries: `SSL_write` and `SSL_read` always, the `_ex` pair
/// where the file has it (OpenSSL 1.1.1 and later; not older ones, nor
/// BoringSSL).  Where `SSL_write_ex` is a tail call into `SSL_write_ex2`
/// (OpenSSL ≥ 3.3, Debian 13's and the cryptography wheel's builds),
/// `SSL_write_ex2` is probed in its place: that one probe sees both, and
/// programs calling `SSL_write_ex2` directly are not missed.  (Probing both
/// would see an `SSL_write_ex` call twice.)
fn exported_sites<'a, R: ReadRef<'a>>(
    elf: &Elf<'a, R>,
) -> Result<(Vec<(Program, u64)>, usize), LibraryError> {
    let mut sites = Vec::new();
    let mut single_stepped = 0;
    let write_ex = if elf.has("SSL_write_ex2") && write_ex_forwards_to_ex2(elf)? {
        ("SSL_write_ex2", Program::SslWriteInternalFlagsEntry, false)
    } else {
        ("SSL_write_ex", Program::SslWriteExEntry, false)
    };
    for (name, program, required) in [
        ("SSL_write", Program::SslWriteEntry, true),
        ("SSL_read", Program::SslReadEntry, true),
        write_ex,
        ("SSL_read_ex", Program::SslReadExEntry, false),
    ] {
        if required || elf.has(name) {
            let (offset, at_push) = entry_site(elf, elf.symbol(name)?)?;
            single_stepped += usize::from(!at_push);
            sites.push((program, offset));
        }
    }
    Ok((sites, single_stepped))
}

/// Whether the file's `SSL_write_ex` is only a tail call into `SSL_write_ex2`.
fn write_ex_forwards_to_ex2<'a, R: ReadRef<'a>>(elf: &Elf<'a, R>) -> Result<bool, LibraryError> {
    if !elf.has("SSL_write_ex") {
        return Ok(false);
    }
    let f = elf.symbol("SSL_write_ex")?;
    Ok(super::x86::write_ex2_tail_call(elf.code(f)?, f.vaddr).is_some())
}

/// The file offset of a probe on `f`'s entry: past a leading `endbr64` when a
/// `push` follows it; and whether it is on a `push` (see [`probe_entry`]).
fn entry_site<'a, R: ReadRef<'a>>(
    elf: &Elf<'a, R>,
    f: Function,
) -> Result<(u64, bool), LibraryError> {
    let (offset, at_push) = probe_entry(elf.code(f)?, f.vaddr, &|a| elf.code_at(a));
    Ok((f.file_offset + offset, at_push))
}

/// Decides where the probes go in the file whose contents `data` reads.
///
/// Every entry site also gets the shared return probe; `SSL_free` gets the close probe.
pub fn plan<'a, R: ReadRef<'a>>(data: R, mode: ProbeMode) -> Result<ProbePlan, LibraryError> {
    let elf = Elf::parse(data)?;
    let (free, _) = entry_site(&elf, elf.symbol("SSL_free")?)?;
    let (site_mode, (mut sites, single_stepped), fallback_reason) = match mode {
        ProbeMode::Exported => (SiteMode::Exported, exported_sites(&elf)?, None),
        ProbeMode::Auto => match internal_sites(&elf) {
            Ok(s) => (SiteMode::Internal, (s, 0), None),
            Err(reason) => (SiteMode::Exported, exported_sites(&elf)?, Some(reason)),
        },
    };
    let returns: Vec<(Program, u64)> = sites
        .iter()
        .map(|&(_, off)| (Program::SslReturn, off))
        .collect();
    sites.extend(returns);
    sites.push((Program::SslFreeEntry, free));
    Ok(ProbePlan {
        mode: site_mode,
        sites,
        fallback_reason,
        single_stepped,
    })
}

/// Does this ELF file have OpenSSL in it: does it define `SSL_read`,
/// `SSL_write` and `SSL_free` as functions?  (A program that only calls
/// them through libssl imports them: undefined, not counted.)
pub fn has_openssl<'a, R: ReadRef<'a>>(data: R) -> bool {
    Elf::parse(data)
        .is_ok_and(|elf| elf.has("SSL_read") && elf.has("SSL_write") && elf.has("SSL_free"))
}

/// Opens a file for [`plan`] and [`has_openssl`]: read on demand, never whole.
/// Only regular files: a mapped device (a GPU driver's, say) is not opened,
/// let alone read.
pub fn open_library(path: &Path) -> std::io::Result<ReadCache<File>> {
    if !std::fs::metadata(path)?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(ReadCache::new(File::open(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSTEM_LIBSSL: &str = "/usr/lib/x86_64-linux-gnu/libssl.so.3";

    fn system_libssl() -> Option<Vec<u8>> {
        std::fs::read(SYSTEM_LIBSSL).ok()
    }

    /// Plans `data` in auto mode and checks that it got the internal sites,
    /// with `write` as the write program, then the returns and `SSL_free`.
    fn internal_plan(data: &[u8], write: Program) -> ProbePlan {
        let plan = plan(data, ProbeMode::Auto).unwrap();
        assert_eq!(plan.mode, SiteMode::Internal, "{:?}", plan.fallback_reason);
        let progs: Vec<Program> = plan.sites.iter().map(|s| s.0).collect();
        assert_eq!(
            progs,
            [
                write,
                Program::SslReadInternalEntry,
                Program::SslReturn,
                Program::SslReturn,
                Program::SslFreeEntry
            ]
        );
        plan
    }

    #[test]
    fn system_libssl_gets_internal_sites() {
        let Some(data) = system_libssl() else {
            eprintln!("skipped: {SYSTEM_LIBSSL} not present");
            return;
        };
        let plan = internal_plan(&data, Program::SslWriteInternalEntry);
        // Each internal site starts with push in the file itself.
        for &(p, off) in &plan.sites[..2] {
            let code = &data[off as usize..off as usize + 16];
            assert_eq!(push_entry(code, off, &|_| None), Ok(0), "{p:?} at {off:#x}");
        }
        assert_eq!(plan.single_stepped, 0);
        // And they are distinct from the exported entries.
        let exported = super::plan(data.as_slice(), ProbeMode::Exported).unwrap();
        assert_eq!(exported.mode, SiteMode::Exported);
        assert_eq!(exported.sites.len(), 4 + 4 + 1);
        // Debian 12's exported entries begin with `sub`.
        assert_eq!(exported.single_stepped, 4);
        for &(_, off) in &plan.sites[..2] {
            assert!(!exported.sites[..4].iter().any(|&(_, o)| o == off));
        }
    }

    /// Debian 13's libssl (OpenSSL 3.5, CET build), unpacked by `cargo xtask setup`.
    fn debian13_libssl() -> Option<Vec<u8>> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../.tools/debian13/root/usr/lib/x86_64-linux-gnu/libssl.so.3");
        let data = std::fs::read(&path).ok();
        if data.is_none() {
            crate::test_tools::tool_missing("Debian 13 libssl (`cargo xtask setup`)");
        }
        data
    }

    /// OpenSSL 3.5 built with `-fcf-protection`: every function begins with
    /// `endbr64`, `SSL_write_ex` jumps to `SSL_write_ex2`, and
    /// `ssl_write_internal` takes `flags` before `written`.
    #[test]
    fn debian13_libssl_gets_internal_sites_past_endbr64() {
        let Some(data) = debian13_libssl() else {
            return;
        };
        const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];
        let plan = internal_plan(&data, Program::SslWriteInternalFlagsEntry);
        // Each entry site is the push right after the function's endbr64,
        // and each return probe sits on its entry's site.
        for &(p, off) in &plan.sites[..2] {
            let off = off as usize;
            assert_eq!(data[off - 4..off], ENDBR64, "{p:?} at {off:#x}");
            assert_eq!(
                push_entry(&data[off..off + 16], off as u64, &|_| None),
                Ok(0)
            );
        }
        assert_eq!(plan.sites[2].1, plan.sites[0].1);
        assert_eq!(plan.sites[3].1, plan.sites[1].1);
        // SSL_free begins `endbr64; test %rdi,%rdi; je <xor…; ret>; push
        // %rbx` (the NULL check before the prologue; the early-out zeroes
        // the call-clobbered registers and returns): probed on that push.
        let elf = Elf::parse(data.as_slice()).unwrap();
        let free = elf.symbol("SSL_free").unwrap();
        let start = free.file_offset as usize;
        assert_eq!(data[start..][..4], ENDBR64);
        assert_eq!(data[start + 4..][..3], [0x48, 0x85, 0xff]); // test %rdi,%rdi
        assert_eq!(data[start + 7], 0x74); // je rel8
        assert_eq!(plan.sites[4].1, free.file_offset + 9);
        assert_eq!(data[start + 9], 0x53); // push %rbx
                                           // The exported entries begin `endbr64; sub`: probed at their start
                                           // (single-stepped either way).
        assert_eq!(plan.single_stepped, 0);
        let exported = super::plan(data.as_slice(), ProbeMode::Exported).unwrap();
        for &(p, off) in &exported.sites[..4] {
            assert_eq!(data[off as usize..][..4], ENDBR64, "{p:?}");
        }
        assert_eq!(exported.single_stepped, 4);
        // SSL_write_ex there only jumps to SSL_write_ex2: the latter is
        // probed in its place (flags variant: `written` is the fifth
        // argument), so direct callers of SSL_write_ex2 are seen too and
        // an SSL_write_ex call once.
        let programs: Vec<Program> = exported.sites[..4].iter().map(|s| s.0).collect();
        assert_eq!(
            programs,
            [
                Program::SslWriteEntry,
                Program::SslReadEntry,
                Program::SslWriteInternalFlagsEntry,
                Program::SslReadExEntry
            ]
        );
        assert_eq!(
            exported.sites[2].1,
            elf.symbol("SSL_write_ex2").unwrap().file_offset
        );
    }

    /// The OpenSSL builds the `cryptography` wheels link into their
    /// extension modules, which `cargo xtask setup` puts under `.tools`: the
    /// venv's (4.0.3), the wheel sets' (`openssl111`: 1.1.1n, `openssl35`:
    /// 3.5.2) and every line of `tests/apps/openssl-builds.txt` (3.0 to 3.5,
    /// manylinux and musllinux).  All keep their local symbols in `.symtab`.
    /// `None` when one is missing.
    fn wheel_openssl_builds() -> Option<Vec<(String, Vec<u8>)>> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let tools = root.join(".tools");
        let bindings = "cryptography/hazmat/bindings";
        let mut paths = vec![
            tools.join(format!(
                "venv/lib/python3.11/site-packages/{bindings}/_rust.abi3.so"
            )),
            tools.join(format!("openssl111/{bindings}/_openssl.abi3.so")),
            tools.join(format!("openssl35/{bindings}/_rust.abi3.so")),
        ];
        let list = std::fs::read_to_string(root.join("tests/apps/openssl-builds.txt")).unwrap();
        for line in list
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (version, platform) = line.split_once(' ').unwrap();
            let so = format!(
                "openssl-builds/cryptography-{version}-{}.so",
                platform.trim()
            );
            paths.push(tools.join(so));
        }
        let mut found = Vec::new();
        for path in paths {
            let Ok(data) = std::fs::read(&path) else {
                crate::test_tools::tool_missing(&format!(
                    "{} (`cargo xtask setup`)",
                    path.display()
                ));
                return None;
            };
            found.push((path.display().to_string(), data));
        }
        Some(found)
    }

    /// Where a build keeps `ssl_read_internal` and `ssl_write_internal` in
    /// `.symtab`, the sites found from the wrappers' code (which is all a
    /// stripped libssl offers) are exactly those functions' first `push`: a
    /// check against ground truth on 1.1.1's wrappers, 3.0–3.2's, and 3.3+'s
    /// (`SSL_write_ex2`, the `flags` write program), from two toolchains.
    /// Some of them shrink-wrap `ssl_write_internal` (a NULL test before the
    /// prologue): those must be among them, or the guard goes untested.
    #[test]
    fn internal_sites_are_the_internal_functions_named_in_symtab() {
        use object::ObjectSymbol;
        let Some(builds) = wheel_openssl_builds() else {
            return;
        };
        let mut guarded = 0;
        for (name, data) in &builds {
            let elf = Elf::parse(data.as_slice()).unwrap();
            let write = if elf.has("SSL_write_ex2") {
                Program::SslWriteInternalFlagsEntry
            } else {
                Program::SslWriteInternalEntry
            };
            let plan = internal_plan(data, write);
            for (i, symbol) in ["ssl_write_internal", "ssl_read_internal"]
                .into_iter()
                .enumerate()
            {
                let vaddr = elf
                    .file
                    .symbol_by_name(symbol)
                    .unwrap_or_else(|| panic!("{name}: no {symbol} in .symtab"))
                    .address();
                let f = elf.function(vaddr).unwrap();
                let code = elf.code(f).unwrap();
                let push = push_entry(code, f.vaddr, &|a| elf.code_at(a)).unwrap();
                assert_eq!(plan.sites[i].1, f.file_offset + push, "{name}: {symbol}");
                if push_entry(code, f.vaddr, &|_| None).is_err() {
                    guarded += 1;
                }
            }
            assert_eq!(plan.sites[2].1, plan.sites[0].1, "{name}");
            assert_eq!(plan.sites[3].1, plan.sites[1].1, "{name}");
        }
        assert!(guarded >= 3, "{guarded} shrink-wrapped functions");
    }

    #[test]
    fn exported_offsets_match_symbol_table() {
        let Some(data) = system_libssl() else {
            return;
        };
        let elf = Elf::parse(data.as_slice()).unwrap();
        let f = elf.symbol("SSL_write").unwrap();
        // In a shared library .text's file offset equals its address on Debian.
        assert_eq!(elf.file_offset(f.vaddr), Some(f.file_offset));
        // The 4-byte `sub $imm8,%rsp` prologue of the exported entries.
        let code = elf.code(elf.symbol("SSL_write_ex").unwrap()).unwrap();
        assert_eq!(&code[..3], &[0x48, 0x83, 0xec]);
        // OpenSSL 3.0 has no SSL_write_ex2: SSL_write_ex is probed itself.
        let exported = super::plan(data.as_slice(), ProbeMode::Exported).unwrap();
        let f = elf.symbol("SSL_write_ex").unwrap();
        assert!(exported
            .sites
            .contains(&(Program::SslWriteExEntry, f.file_offset)));
        assert!(!exported
            .sites
            .iter()
            .any(|s| s.0 == Program::SslWriteInternalFlagsEntry));
    }

    #[test]
    fn unrecognised_wrapper_falls_back_to_exported() {
        let Some(mut data) = system_libssl() else {
            return;
        };
        let elf = Elf::parse(data.as_slice()).unwrap();
        let f = elf.symbol("SSL_write_ex").unwrap();
        drop(elf);
        // Replace `sub $8,%rsp` by `mov %rsp,%rcx; nop` — not the wrapper pattern.
        let off = f.file_offset as usize;
        data[off..off + 4].copy_from_slice(&[0x48, 0x89, 0xe1, 0x90]);
        let plan = plan(data.as_slice(), ProbeMode::Auto).unwrap();
        assert_eq!(plan.mode, SiteMode::Exported);
        assert!(plan
            .fallback_reason
            .as_deref()
            .unwrap()
            .contains("SSL_write_ex"));
    }

    #[test]
    fn non_elf_and_missing_symbols_are_errors() {
        assert!(matches!(
            plan(&b"not an elf at all"[..], ProbeMode::Auto),
            Err(LibraryError::Elf(_))
        ));
        // A real ELF without SSL_* symbols: this test binary itself.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(matches!(
            plan(me.as_slice(), ProbeMode::Auto),
            Err(LibraryError::MissingSymbol("SSL_free"))
        ));
    }

    #[test]
    fn a_file_read_on_demand_plans_like_its_bytes() {
        let Some(data) = system_libssl() else {
            return;
        };
        let file = open_library(Path::new(SYSTEM_LIBSSL)).unwrap();
        for mode in [ProbeMode::Auto, ProbeMode::Exported] {
            assert_eq!(
                plan(&file, mode).unwrap(),
                plan(data.as_slice(), mode).unwrap()
            );
        }
        assert!(has_openssl(&file));
    }

    #[test]
    fn only_files_defining_the_ssl_functions_have_openssl() {
        let libcrypto = "/usr/lib/x86_64-linux-gnu/libcrypto.so.3";
        if let Ok(f) = open_library(Path::new(libcrypto)) {
            assert!(!has_openssl(&f), "{libcrypto}");
        }
        // curl and openssl(1) import SSL_read & co from libssl: not theirs.
        for program in ["/usr/bin/curl", "/usr/bin/openssl"] {
            if let Ok(f) = open_library(Path::new(program)) {
                assert!(!has_openssl(&f), "{program}");
            }
        }
        let me = open_library(&std::env::current_exe().unwrap()).unwrap();
        assert!(!has_openssl(&me));
        // Devices and directories are not even opened.
        for not_a_file in ["/dev/null", "/dev/zero", "/tmp"] {
            let e = open_library(Path::new(not_a_file)).map(|_| ()).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{not_a_file}");
        }
        assert!(!has_openssl(&b"\x7fELF but not really"[..]));
    }

    /// node's builds link OpenSSL in and export its functions: a 100 MB
    /// program, planned from its symbol tables without reading it whole.
    #[test]
    fn node_is_planned_from_its_exported_symbols() {
        let node = Path::new("/usr/bin/node");
        let Ok(file) = open_library(node) else {
            crate::test_tools::tool_missing("node");
            return;
        };
        if !has_openssl(&file) {
            eprintln!("SKIPPED: {} uses a shared libssl", node.display());
            return;
        }
        let plan = plan(&file, ProbeMode::Auto).unwrap();
        let entries = plan.sites.len() / 2;
        // Entries, as many returns, one SSL_free.
        assert_eq!(plan.sites.len(), 2 * entries + 1, "{plan:?}");
        match plan.mode {
            SiteMode::Internal => assert_eq!(entries, 2),
            // node's SSL_write_ex has ssl_write_internal inlined: no call to follow.
            SiteMode::Exported => {
                assert_eq!(entries, 4);
                assert!(plan.fallback_reason.is_some());
                // node's exported entries begin with `push`.
                assert_eq!(plan.single_stepped, 0);
            }
        }
        let elf = Elf::parse(&file).unwrap();
        // SSL_write_ex2 is OpenSSL 3.3's.
        for name in SYMBOLS
            .into_iter()
            .filter(|&n| n != "SSL_write_ex2" || elf.has(n))
        {
            let f = elf.symbol(name).unwrap();
            // Code, inside the file: the first bytes of each function read.
            assert!(!elf.code(f).unwrap().is_empty(), "{name}");
        }
        // Reading it on demand read only a sliver of it.
        let size = std::fs::metadata(node).unwrap().len();
        assert!(size > 16 * 1024 * 1024, "node is {size} bytes");
    }

    /// A program linked statically against libssl.a without exporting its
    /// symbols: found through .symtab, and probed at the internal sites like
    /// the shared library (the same code, linked in).
    #[test]
    fn static_openssl_found_through_symtab() {
        let lib_dir = Path::new("/usr/lib/x86_64-linux-gnu");
        if !lib_dir.join("libssl.a").exists() {
            crate::test_tools::tool_missing("libssl-dev (libssl.a)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("static_tls.c");
        std::fs::write(
            &src,
            "#include <openssl/ssl.h>\n\
             int main(int argc, char **argv) {\n\
               if (argc > 9) { size_t n; SSL_write_ex(0, argv, 1, &n); SSL_read_ex(0, argv, 1, &n);\n\
                 SSL_write(0, argv, 1); SSL_read(0, argv, 1); SSL_free(0); }\n\
               return 0; }\n",
        )
        .unwrap();
        let bin = dir.path().join("static_tls");
        let out = std::process::Command::new("cc")
            .arg(&src)
            .arg("-o")
            .arg(&bin)
            .args([
                "-Wl,-Bstatic",
                "-lssl",
                "-lcrypto",
                "-Wl,-Bdynamic",
                "-lpthread",
                "-ldl",
            ])
            .output()
            .expect("cc");
        assert!(
            out.status.success(),
            "cc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let file = open_library(&bin).unwrap();
        let elf = Elf::parse(&file).unwrap();
        assert!(
            elf.file
                .elf_dynamic_symbol_table()
                .symbols()
                .iter()
                .all(|s| {
                    let name = elf
                        .file
                        .elf_dynamic_symbol_table()
                        .symbol_name(Endianness::Little, s)
                        .unwrap_or_default();
                    !name.starts_with(b"SSL_")
                }),
            "SSL_* must not be exported for this test"
        );
        assert!(has_openssl(&file));
        let plan = plan(&file, ProbeMode::Auto).unwrap();
        assert_eq!(plan.mode, SiteMode::Internal, "{:?}", plan.fallback_reason);
        let exported = super::plan(&file, ProbeMode::Exported).unwrap();
        assert_eq!(exported.sites.len(), 4 + 4 + 1);
    }
}
