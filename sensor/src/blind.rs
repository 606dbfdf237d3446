//! Blind spots: processes that talk TCP through TLS code the sensor is not
//! attached to, so their leaks would go unseen.  Reported in the live API's
//! stats and as `sensor_blind_processes{reason}`.
//!
//! A process is blind when it holds a TCP socket (listening or connected) and
//! none of its mapped files is a TLS library the sensor attached to, and its
//! executable or a mapped library carries TLS code:
//!
//! | reason | how it is recognised |
//! | --- | --- |
//! | `go_tls` | Go binary (`.go.buildinfo`/`.gopclntab`) with `crypto/tls.` functions |
//! | `boringssl` | defines `SSL_write` and BoringSSL markers (`BORINGSSL_*`, "BoringSSL") |
//! | `static_openssl` | an executable or non-libssl library defining `SSL_write`/`SSL_write_ex` (node, bundled wheels) that the probes are not attached to (the attach failed; attached ones are covered), or stripped with an OpenSSL version string |
//! | `openssl_unattached` | a shared `libssl.so*` mapped but not attached (attach failed or pending) |
//! | `rustls` | a Rust program with rustls in it: its symbols (`…6rustls…`), or, stripped, rustls's source paths in `.rodata` |
//! | `java_tls` | a JVM (`libjvm.so` mapped): Java's own TLS (JSSE) runs in the JVM, where no probe reaches |
//! | `gnutls`, `nss`, `wolfssl`, `mbedtls` | the library is mapped (`libgnutls`, `libnss3`/`libssl3.so`, `libwolfssl`, `libmbedtls`) |
//! | `unknown_tls` | another TLS library without probes or a reason of its own is mapped (`libs2n`, `libbotan`) |
//!
//! Processes with sockets and no TLS code (plain HTTP) are not blind: there is
//! nothing to decrypt.  ELF verdicts are cached per (device, inode), checked
//! against size and mtime, in a bounded LRU.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::num::NonZeroUsize;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use object::{Object, ObjectSection, ObjectSymbol};

use crate::identity::{parse_proc_net_tcp, socket_inodes_at, MAX_PROC_NET_BYTES};
use crate::outputs::live::BlindProcess;
use crate::outputs::metrics::Metrics;

/// Every reason, in the order a process's reason is chosen when it has several.
pub const REASONS: &[&str] = &[
    "go_tls",
    "boringssl",
    "static_openssl",
    "openssl_unattached",
    "rustls",
    "java_tls",
    "gnutls",
    "nss",
    "wolfssl",
    "mbedtls",
    "unknown_tls",
];
/// ELF verdicts kept (executables and libraries of the host, by inode).
pub const ELF_CACHE_ENTRIES: usize = 8192;
/// Largest section searched for marker strings (Go's function table, .rodata).
pub const MAX_SECTION_SCAN_BYTES: u64 = 256 * 1024 * 1024;
/// Largest /proc/PID/maps read.
pub const MAX_MAPS_BYTES: u64 = 8 * 1024 * 1024;

/// (device, inode) as `stat` gives them (`st_dev`, `st_ino`).
pub type FileKey = (u64, u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Verdict {
    size: u64,
    mtime_ns: i64,
    reason: Option<&'static str>,
}

/// Scans /proc for blind processes, remembering ELF verdicts between scans.
pub struct BlindScanner {
    proc_root: PathBuf,
    elf_cache: lru::LruCache<FileKey, Verdict>,
}

impl Default for BlindScanner {
    fn default() -> Self {
        Self::new()
    }
}

/// One file-backed mapping of /proc/PID/maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub key: FileKey,
    pub executable: bool,
    pub path: String,
    /// The file was replaced or removed since it was mapped (`(deleted)`).
    pub deleted: bool,
}

impl BlindScanner {
    pub fn new() -> BlindScanner {
        Self::with_proc_root(Path::new("/proc"))
    }

    pub fn with_proc_root(proc_root: &Path) -> BlindScanner {
        BlindScanner {
            proc_root: proc_root.to_path_buf(),
            elf_cache: lru::LruCache::new(NonZeroUsize::new(ELF_CACHE_ENTRIES).expect("non-zero")),
        }
    }

    /// Blind processes now, ordered by pid.  `attached` holds the (st_dev,
    /// st_ino) of every TLS library file the probes are attached to.
    pub fn scan(&mut self, attached: &HashSet<FileKey>) -> Vec<BlindProcess> {
        let mut pids: Vec<u32> = match std::fs::read_dir(&self.proc_root) {
            Ok(rd) => rd
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect(),
            Err(e) => {
                tracing::warn!("cannot list {}: {e}", self.proc_root.display());
                return Vec::new();
            }
        };
        pids.sort_unstable();
        let me = std::process::id();
        // TCP socket inodes per network namespace, read once per scan.
        let mut tcp_by_netns: HashMap<String, HashSet<u64>> = HashMap::new();
        let mut out = Vec::new();
        for pid in pids {
            if pid == me {
                continue;
            }
            if let Some(reason) = self.check_process(pid, attached, &mut tcp_by_netns) {
                let comm = std::fs::read_to_string(self.proc_root.join(format!("{pid}/comm")))
                    .map(|s| s.trim_end().to_string())
                    .unwrap_or_default();
                out.push(BlindProcess {
                    pid,
                    comm,
                    reason: reason.to_string(),
                });
            }
        }
        out
    }

    fn check_process(
        &mut self,
        pid: u32,
        attached: &HashSet<FileKey>,
        tcp_by_netns: &mut HashMap<String, HashSet<u64>>,
    ) -> Option<&'static str> {
        let dir = self.proc_root.join(pid.to_string());
        // Cheapest filter first: does it hold any TCP socket?
        let sockets = socket_inodes_at(&self.proc_root, pid).ok()?;
        if sockets.is_empty() {
            return None;
        }
        let netns = std::fs::read_link(dir.join("ns/net"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| format!("pid:{pid}"));
        let tcp = tcp_by_netns
            .entry(netns)
            .or_insert_with(|| tcp_inodes(&dir.join("net")));
        if sockets.is_disjoint(tcp) {
            return None;
        }
        let maps = read_capped(&dir.join("maps"), MAX_MAPS_BYTES)?;
        let mappings = parse_maps(&maps);
        let root = dir.join("root");
        let exe = std::fs::read_link(dir.join("exe")).ok().map(|p| {
            p.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_string()
        });
        // Covered when any mapped file is an attached TLS library — by the
        // identity maps shows, or by the one stat gives through the process's
        // root (they differ on overlayfs).
        for m in &mappings {
            if attached.contains(&m.key) {
                return None;
            }
            if looks_like_tls_library(&m.path) {
                if let Ok(md) = std::fs::metadata(in_root(&root, &m.path)) {
                    if attached.contains(&(md.dev(), md.ino())) {
                        return None;
                    }
                }
            }
        }
        let mut reasons: Vec<&'static str> = Vec::new();
        let mut seen = HashSet::new();
        for m in mappings.iter().filter(|m| m.executable) {
            if !seen.insert(m.key) {
                continue;
            }
            if let Some(r) = library_reason_by_name(&m.path) {
                reasons.push(r);
                continue;
            }
            // The executable is read through /proc/PID/exe: that is the mapped
            // file even when it was replaced on disk since.
            let source = if exe.as_deref() == Some(m.path.as_str()) {
                dir.join("exe")
            } else if m.deleted {
                // The path now names another file (or none): judging it could be wrong.
                continue;
            } else {
                in_root(&root, &m.path)
            };
            if let Some(r) = self.elf_reason(&source, m.key) {
                // A shared OpenSSL that is not attached is a different problem
                // from OpenSSL built into a binary.
                let r = if r == "static_openssl" && is_shared_libssl(&m.path) {
                    "openssl_unattached"
                } else {
                    r
                };
                reasons.push(r);
            }
        }
        REASONS.iter().copied().find(|r| reasons.contains(r))
    }

    fn elf_reason(&mut self, path: &Path, key: FileKey) -> Option<&'static str> {
        // Not cached when unreadable: it may be readable next time.
        let file = File::open(path).ok()?;
        let md = file.metadata().ok()?;
        let (size, mtime_ns) = (md.size(), md.mtime() * 1_000_000_000 + md.mtime_nsec());
        if let Some(v) = self.elf_cache.get(&key) {
            if v.size == size && v.mtime_ns == mtime_ns {
                return v.reason;
            }
        }
        let reason = classify_elf(file);
        self.elf_cache.put(
            key,
            Verdict {
                size,
                mtime_ns,
                reason,
            },
        );
        reason
    }
}

/// The process-wide scanner behind `scan_blind_processes`.
fn shared_scanner() -> &'static Mutex<BlindScanner> {
    static SCANNER: OnceLock<Mutex<BlindScanner>> = OnceLock::new();
    SCANNER.get_or_init(|| Mutex::new(BlindScanner::new()))
}

/// Blind processes on this host now (see the module docs).  `attached_inodes`:
/// (st_dev, st_ino) of every TLS library file the probes are attached to.
pub fn scan_blind_processes(attached_inodes: &HashSet<FileKey>) -> Vec<BlindProcess> {
    let mut s = shared_scanner().lock().unwrap_or_else(|e| e.into_inner());
    s.scan(attached_inodes)
}

/// Sets `sensor_blind_processes{reason}` for every reason (0 when none).
pub fn update_blind_gauge(metrics: &Metrics, found: &[BlindProcess]) {
    for r in REASONS {
        let n = found.iter().filter(|b| b.reason == *r).count();
        metrics
            .blind_processes
            .with_label_values(&[r])
            .set(n as i64);
    }
}

fn read_capped(path: &Path, cap: u64) -> Option<String> {
    use std::io::Read;
    let mut s = String::new();
    File::open(path)
        .ok()?
        .take(cap)
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

fn tcp_inodes(net_dir: &Path) -> HashSet<u64> {
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|f| read_capped(&net_dir.join(f), MAX_PROC_NET_BYTES))
        .flat_map(|t| parse_proc_net_tcp(&t).into_iter().map(|s| s.inode))
        .collect()
}

/// A path from the process's mount namespace, seen through /proc/PID/root.
fn in_root(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// File-backed mappings of /proc/PID/maps (`dev` converted to `st_dev` form).
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        // address perms offset dev inode path
        let mut f = line.splitn(6, ' ');
        let (Some(_), Some(perms), Some(_), Some(dev), Some(inode)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let path = f.next().unwrap_or("").trim_start();
        let Ok(inode) = inode.parse::<u64>() else {
            continue;
        };
        if inode == 0 || !path.starts_with('/') {
            continue;
        }
        let Some((maj, min)) = dev.split_once(':') else {
            continue;
        };
        let (Ok(maj), Ok(min)) = (u32::from_str_radix(maj, 16), u32::from_str_radix(min, 16))
        else {
            continue;
        };
        let deleted = path.ends_with(" (deleted)");
        let path = path.strip_suffix(" (deleted)").unwrap_or(path).to_string();
        let key = (libc::makedev(maj, min), inode);
        let executable = perms.as_bytes().get(2) == Some(&b'x');
        match out.iter_mut().find(|m| m.key == key) {
            Some(m) => m.executable |= executable,
            None => out.push(Mapping {
                key,
                executable,
                path,
                deleted,
            }),
        }
    }
    out
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn is_shared_libssl(path: &str) -> bool {
    let n = file_name(path);
    n.starts_with("libssl.so") || (n.starts_with("libssl-") && n.contains(".so"))
}

fn looks_like_tls_library(path: &str) -> bool {
    let n = file_name(path);
    n.contains("ssl") || n.contains("tls")
}

/// Shared TLS libraries recognised by name (their code is not probed).
fn library_reason_by_name(path: &str) -> Option<&'static str> {
    let n = file_name(path);
    if n.starts_with("libgnutls") {
        Some("gnutls")
    } else if n.starts_with("libnss3.so") || n.starts_with("libssl3.so") {
        Some("nss")
    } else if n.starts_with("libwolfssl") {
        Some("wolfssl")
    } else if n.starts_with("libmbedtls") {
        Some("mbedtls")
    } else if n == "libjvm.so" {
        // HotSpot (OpenJDK) and OpenJ9 both name it so.
        Some("java_tls")
    } else if n.starts_with("librustls") {
        // rustls-ffi, rustls behind a C API.
        Some("rustls")
    } else if n.starts_with("libs2n") || n.starts_with("libbotan") {
        Some("unknown_tls")
    } else {
        None
    }
}

/// What TLS code an ELF file carries, if any.  Reads only headers, symbol
/// tables and (for Go and stripped binaries) one section.
pub fn classify_elf(file: File) -> Option<&'static str> {
    let cache = object::ReadCache::new(file);
    let elf = object::File::parse(&cache).ok()?;
    if elf.section_by_name(".go.buildinfo").is_some() || elf.section_by_name(".gopclntab").is_some()
    {
        let by_symbol = elf
            .symbols()
            .any(|s| s.name_bytes().is_ok_and(|n| n.starts_with(b"crypto/tls.")));
        let uses_tls = by_symbol || section_contains(&elf, ".gopclntab", b"crypto/tls.");
        return uses_tls.then_some("go_tls");
    }
    let mut defines_ssl_write = false;
    let mut imports_ssl_write = false;
    let mut boring = false;
    let mut rustls = false;
    for s in elf.dynamic_symbols().chain(elf.symbols()) {
        let Ok(name) = s.name_bytes() else { continue };
        // Rust's mangled paths carry each segment with its length (legacy
        // `_ZN6rustls…`, v0 `…6rustls…`).
        if !rustls && name.len() > 8 && memchr::memmem::find(name, b"6rustls").is_some() {
            rustls = true;
        }
        if matches!(name, b"SSL_write" | b"SSL_write_ex" | b"SSL_read") {
            if s.is_definition() {
                defines_ssl_write = true;
            } else if s.is_undefined() {
                imports_ssl_write = true;
            }
        }
        if name.starts_with(b"BORINGSSL_") || name == b"OPENSSL_is_boringssl" {
            boring = true;
        }
    }
    if defines_ssl_write {
        return Some(
            if boring || section_contains(&elf, ".rodata", b"BoringSSL") {
                "boringssl"
            } else {
                "static_openssl"
            },
        );
    }
    if rustls {
        return Some("rustls");
    }
    // Uses a shared libssl: that library is judged on its own mapping.
    if imports_ssl_write {
        return None;
    }
    // No symbols at all (a static program, stripped): OpenSSL's version
    // string gives it away.  (Not with a .dynsym: libcrypto has that string.)
    let no_symtab = elf.symbols().next().is_none();
    if no_symtab && elf.dynamic_symbols().next().is_none() {
        if section_contains(&elf, ".rodata", b"BoringSSL") {
            return Some("boringssl");
        }
        if section_contains(&elf, ".rodata", b"OpenSSL 1.")
            || section_contains(&elf, ".rodata", b"OpenSSL 3.")
        {
            return Some("static_openssl");
        }
    }
    // Stripped of .symtab (a dynamically linked one keeps the .dynsym of what
    // it imports): rustls's panic locations keep its source paths
    // (`…/rustls-0.23.12/src/…`).
    if no_symtab && section_contains(&elf, ".rodata", b"/rustls-") {
        return Some("rustls");
    }
    None
}

fn section_contains<'d, R: object::ReadRef<'d>>(
    elf: &object::File<'d, R>,
    name: &str,
    needle: &[u8],
) -> bool {
    let Some(sec) = elf.section_by_name(name) else {
        return false;
    };
    if sec.size() > MAX_SECTION_SCAN_BYTES {
        return false;
    }
    sec.data()
        .is_ok_and(|d| memchr::memmem::find(d, needle).is_some())
}

#[cfg(test)]
mod tests;
