//! Where to put the probes in one TLS library file: ELF symbols, file offsets,
//! and the choice between internal and exported probe sites.

use object::{Object, ObjectSection, ObjectSymbol};

use super::config::ProbeMode;
use super::x86::{starts_with_push, wrapper_call_target, WrapperError};

/// Bytes of a function read for decoding (the wrapper pattern is 9 bytes).
const DECODE_WINDOW: usize = 32;

/// A library larger than this is not read (libssl.so.3 is ~700 KiB).
pub const MAX_LIBRARY_BYTES: u64 = 64 * 1024 * 1024;

/// Which eBPF program goes where.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Program {
    SslWriteEntry,
    SslReadEntry,
    SslWriteExEntry,
    SslReadExEntry,
    SslWriteInternalEntry,
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
            Program::SslReadInternalEntry => "ssl_read_internal_entry",
            Program::SslReturn => "ssl_return",
            Program::SslFreeEntry => "ssl_free_entry",
        }
    }

    pub const ALL: [Program; 8] = [
        Program::SslWriteEntry,
        Program::SslReadEntry,
        Program::SslWriteExEntry,
        Program::SslReadExEntry,
        Program::SslWriteInternalEntry,
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
    #[error("not an ELF file: {0}")]
    Elf(String),
    #[error("symbol {0} not found in .dynsym")]
    MissingSymbol(&'static str),
    #[error("address {0:#x} is not inside a section with file contents")]
    NoFileOffset(u64),
}

/// A function found in the library's dynamic symbol table.
#[derive(Clone, Copy, Debug)]
struct Function {
    vaddr: u64,
    file_offset: u64,
}

struct Elf<'a> {
    file: object::File<'a>,
}

impl<'a> Elf<'a> {
    fn parse(data: &'a [u8]) -> Result<Self, LibraryError> {
        let file = object::File::parse(data).map_err(|e| LibraryError::Elf(e.to_string()))?;
        Ok(Elf { file })
    }

    fn symbol(&self, name: &'static str) -> Result<Function, LibraryError> {
        let sym = self
            .file
            .dynamic_symbols()
            .find(|s| s.is_definition() && s.name().ok() == Some(name))
            .ok_or(LibraryError::MissingSymbol(name))?;
        self.function(sym.address())
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

    /// Up to [`DECODE_WINDOW`] bytes of code at `f`.
    fn code<'d>(&self, data: &'d [u8], f: Function) -> &'d [u8] {
        let start = f.file_offset as usize;
        let end = start.saturating_add(DECODE_WINDOW).min(data.len());
        data.get(start..end).unwrap_or(&[])
    }
}

/// Looks for the internal probe sites: the call targets of `SSL_write_ex` and
/// `SSL_read_ex`, both starting with `push`.
fn internal_sites(elf: &Elf<'_>, data: &[u8]) -> Result<Vec<(Program, u64)>, String> {
    let mut sites = Vec::new();
    let mut targets = Vec::new();
    for (wrapper, program) in [
        ("SSL_write_ex", Program::SslWriteInternalEntry),
        ("SSL_read_ex", Program::SslReadInternalEntry),
    ] {
        let f = elf.symbol(wrapper).map_err(|e| e.to_string())?;
        let target = wrapper_call_target(elf.code(data, f), f.vaddr)
            .map_err(|e| format!("{wrapper}: {e}"))?;
        let t = elf
            .function(target)
            .map_err(|e| format!("{wrapper} calls {target:#x}: {e}"))?;
        starts_with_push(elf.code(data, t), t.vaddr)
            .map_err(|e: WrapperError| format!("{wrapper} calls {target:#x}: {e}"))?;
        targets.push(target);
        sites.push((program, t.file_offset));
    }
    if targets[0] == targets[1] {
        return Err("SSL_write_ex and SSL_read_ex call the same function".into());
    }
    Ok(sites)
}

fn exported_sites(elf: &Elf<'_>) -> Result<Vec<(Program, u64)>, LibraryError> {
    let mut sites = Vec::new();
    for (name, program) in [
        ("SSL_write", Program::SslWriteEntry),
        ("SSL_read", Program::SslReadEntry),
        ("SSL_write_ex", Program::SslWriteExEntry),
        ("SSL_read_ex", Program::SslReadExEntry),
    ] {
        sites.push((program, elf.symbol(name)?.file_offset));
    }
    Ok(sites)
}

/// Decides where the probes go in the library whose bytes are `data`.
///
/// Every entry site also gets the shared return probe; `SSL_free` gets the close probe.
pub fn plan(data: &[u8], mode: ProbeMode) -> Result<ProbePlan, LibraryError> {
    let elf = Elf::parse(data)?;
    let free = elf.symbol("SSL_free")?;
    let (site_mode, mut sites, fallback_reason) = match mode {
        ProbeMode::Exported => (SiteMode::Exported, exported_sites(&elf)?, None),
        ProbeMode::Auto => match internal_sites(&elf, data) {
            Ok(s) => (SiteMode::Internal, s, None),
            Err(reason) => (SiteMode::Exported, exported_sites(&elf)?, Some(reason)),
        },
    };
    let returns: Vec<(Program, u64)> = sites
        .iter()
        .map(|&(_, off)| (Program::SslReturn, off))
        .collect();
    sites.extend(returns);
    sites.push((Program::SslFreeEntry, free.file_offset));
    Ok(ProbePlan {
        mode: site_mode,
        sites,
        fallback_reason,
    })
}

/// Reads a library file, refusing absurd sizes.
pub fn read_library(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut data = Vec::new();
    f.take(MAX_LIBRARY_BYTES + 1).read_to_end(&mut data)?;
    if data.len() as u64 > MAX_LIBRARY_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_LIBRARY_BYTES} bytes"
        )));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSTEM_LIBSSL: &str = "/usr/lib/x86_64-linux-gnu/libssl.so.3";

    fn system_libssl() -> Option<Vec<u8>> {
        std::fs::read(SYSTEM_LIBSSL).ok()
    }

    #[test]
    fn system_libssl_gets_internal_sites() {
        let Some(data) = system_libssl() else {
            eprintln!("skipped: {SYSTEM_LIBSSL} not present");
            return;
        };
        let plan = plan(&data, ProbeMode::Auto).unwrap();
        assert_eq!(plan.mode, SiteMode::Internal, "{:?}", plan.fallback_reason);
        let progs: Vec<Program> = plan.sites.iter().map(|s| s.0).collect();
        assert_eq!(
            progs,
            [
                Program::SslWriteInternalEntry,
                Program::SslReadInternalEntry,
                Program::SslReturn,
                Program::SslReturn,
                Program::SslFreeEntry
            ]
        );
        // Each internal site starts with push in the file itself.
        for &(p, off) in &plan.sites[..2] {
            let code = &data[off as usize..off as usize + 16];
            assert!(starts_with_push(code, off).is_ok(), "{p:?} at {off:#x}");
        }
        // And they are distinct from the exported entries.
        let exported = super::plan(&data, ProbeMode::Exported).unwrap();
        assert_eq!(exported.mode, SiteMode::Exported);
        assert_eq!(exported.sites.len(), 4 + 4 + 1);
        for &(_, off) in &plan.sites[..2] {
            assert!(!exported.sites[..4].iter().any(|&(_, o)| o == off));
        }
    }

    #[test]
    fn exported_offsets_match_symbol_table() {
        let Some(data) = system_libssl() else {
            return;
        };
        let elf = Elf::parse(&data).unwrap();
        let f = elf.symbol("SSL_write").unwrap();
        // In a shared library .text's file offset equals its address on Debian.
        assert_eq!(elf.file_offset(f.vaddr), Some(f.file_offset));
        // The 4-byte `sub $imm8,%rsp` prologue of the exported entries.
        let code = elf.code(&data, elf.symbol("SSL_write_ex").unwrap());
        assert_eq!(&code[..3], &[0x48, 0x83, 0xec]);
    }

    #[test]
    fn unrecognised_wrapper_falls_back_to_exported() {
        let Some(mut data) = system_libssl() else {
            return;
        };
        let elf = Elf::parse(&data).unwrap();
        let f = elf.symbol("SSL_write_ex").unwrap();
        drop(elf);
        // Replace `sub $8,%rsp` by `mov %rsp,%rcx; nop` — not the wrapper pattern.
        let off = f.file_offset as usize;
        data[off..off + 4].copy_from_slice(&[0x48, 0x89, 0xe1, 0x90]);
        let plan = plan(&data, ProbeMode::Auto).unwrap();
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
            plan(b"not an elf at all", ProbeMode::Auto),
            Err(LibraryError::Elf(_))
        ));
        // A real ELF without SSL_* symbols: this test binary itself.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(matches!(
            plan(&me, ProbeMode::Auto),
            Err(LibraryError::MissingSymbol("SSL_free"))
        ));
    }
}
