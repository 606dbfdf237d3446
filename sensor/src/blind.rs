//! Blind spots: processes that talk TCP through TLS code the sensor is not
//! attached to, so their leaks would go unseen.  Reported in the live API's
//! stats and as `sensor_blind_processes{reason, expected}`.
//!
//! Expected blind: every Kubernetes node runs Go agents that talk TLS
//! (kubelet, containerd, kube-proxy, the CNI agent), which the sensor can
//! never see into.  An alert on every blind process fired on every node and
//! said nothing.  Processes whose executable (or comm) is on the
//! `expected_blind` list (config; [`DEFAULT_EXPECTED_BLIND`]) are still
//! listed and counted — `sensor check`, the live API (`expected: true`) and
//! the gauge show them — but under `expected="true"`, so the alert rule can
//! leave them out (`expected!="true"`) while a Go API server or a
//! rustls/BoringSSL-static program of the node's workloads still fires it.
//! A label rather than a filter, so that nothing is hidden: the list names
//! what the operator accepts not to see, and that stays visible.
//!
//! A process is blind when it holds a TCP socket (listening or connected) and
//! its executable or a mapped library carries TLS code the sensor is not
//! attached to:
//!
//! | reason | how it is recognised |
//! | --- | --- |
//! | `go_tls` | Go binary (`.go.buildinfo`/`.gopclntab`) with `crypto/tls.` functions |
//! | `boringssl` | defines `SSL_write` and BoringSSL markers (`BORINGSSL_*`, "BoringSSL"), or stripped (no `.symtab`, with or without a `.dynsym`: grpcio's `cygrpc.so`) with "BoringSSL" in `.rodata` |
//! | `static_openssl` | an executable or non-libssl library defining `SSL_write`/`SSL_write_ex` (node, bundled wheels) that the probes are not attached to (the attach failed; attached ones are covered), or stripped with an OpenSSL version string |
//! | `openssl_unattached` | a shared `libssl.so*` mapped but not attached (attach failed or pending) |
//! | `rustls` | a Rust program with rustls in it: its symbols (`…6rustls…`), or, stripped, rustls's source paths in `.rodata` |
//! | `java_tls` | a JVM (`libjvm.so` mapped): Java's own TLS (JSSE) runs in the JVM, where no probe reaches |
//! | `erlang_tls` | the Erlang VM (executable `beam.smp`/`beam`, or an `erts-*` path mapped) with OTP's crypto NIF (`lib/crypto-*/priv/lib/crypto.so`) mapped: OTP's `ssl` does TLS in Erlang, using libcrypto only for the ciphers |
//! | `gnutls`, `nss`, `wolfssl`, `mbedtls` | the library is mapped (`libgnutls`, `libnss3`/`libssl3.so`, `libwolfssl`, `libmbedtls`) |
//! | `unknown_tls` | another TLS library without probes or a reason of its own is mapped (`libs2n`, `libbotan`) |
//!
//! A process with an attached libssl (or attached OpenSSL in its program) and
//! another TLS library is partly blind: it is listed with the other
//! library's reason (grpcio's BoringSSL or pycurl's GnuTLS in a Python that
//! imported `ssl`, a JVM that loaded libssl).  Not when only OpenSSL users
//! need that library: Debian's libcurl (OpenSSL) needs librtmp and libldap,
//! which need GnuTLS, so every curl maps it — what a library is needed by is
//! read from DT_NEEDED (see `reached_past_openssl_users`).  Other OpenSSL
//! copies in such a process (an attach pending) do not make it blind.
//!
//! Processes with sockets and no TLS code (plain HTTP) are not blind: there is
//! nothing to decrypt.  ELF verdicts are cached per (device, inode), checked
//! against size and mtime, in a bounded LRU.  Classifying one file reads its
//! headers and symbol tables, and, when it has no `.symtab` (most installed
//! libraries), its `.rodata` once (at most MAX_SECTION_SCAN_BYTES; libc's is
//! ~200 KiB, cygrpc.so's 1.7 MiB): a linear search for three markers
//! (classifying cygrpc.so, 17 MB, took 60 ms once, cold).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::num::NonZeroUsize;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use object::{Object, ObjectSection, ObjectSymbol};

use crate::identity::{parse_proc_net_tcp, socket_fds, socket_inodes_at, MAX_PROC_NET_BYTES};
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
    "erlang_tls",
    "gnutls",
    "nss",
    "wolfssl",
    "mbedtls",
    "unknown_tls",
];
/// ELF verdicts kept (executables and libraries of the host, by inode).
pub const ELF_CACHE_ENTRIES: usize = 8192;
/// DT_NEEDED lists kept (libraries of partly covered processes, by inode).
pub const NEEDED_CACHE_ENTRIES: usize = 2048;
/// Largest section searched for marker strings (Go's function table, .rodata).
pub const MAX_SECTION_SCAN_BYTES: u64 = 256 * 1024 * 1024;
/// Largest /proc/PID/maps read.
pub const MAX_MAPS_BYTES: u64 = 8 * 1024 * 1024;

/// (device, inode) as `stat` gives them (`st_dev`, `st_ino`).
pub type FileKey = (u64, u64);

/// (size, mtime in ns) of a file: a cached answer about it holds while they do.
type FileStamp = (u64, i64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Verdict {
    stamp: FileStamp,
    reason: Option<&'static str>,
}

fn file_stamp(file: &File) -> Option<FileStamp> {
    let md = file.metadata().ok()?;
    Some((md.size(), md.mtime() * 1_000_000_000 + md.mtime_nsec()))
}

/// Scans /proc for blind processes, remembering ELF verdicts between scans.
pub struct BlindScanner {
    proc_root: PathBuf,
    elf_cache: lru::LruCache<FileKey, Verdict>,
    /// DT_NEEDED lists, read only for partly covered processes.
    needed_cache: lru::LruCache<FileKey, (FileStamp, std::sync::Arc<[String]>)>,
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
            needed_cache: lru::LruCache::new(
                NonZeroUsize::new(NEEDED_CACHE_ENTRIES).expect("non-zero"),
            ),
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
        let expected = expected_blind();
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
                let exe = exe_name(&self.proc_root, pid);
                out.push(BlindProcess {
                    pid,
                    expected: expected.matches(exe.as_deref(), &comm),
                    comm,
                    reason: reason.to_string(),
                });
            }
        }
        out
    }

    /// Why one process is blind now, if it is (see `scan`).
    pub fn check_pid(&mut self, pid: u32, attached: &HashSet<FileKey>) -> Option<&'static str> {
        self.check_process(pid, attached, &mut HashMap::new())
    }

    fn check_process(
        &mut self,
        pid: u32,
        attached: &HashSet<FileKey>,
        tcp_by_netns: &mut HashMap<String, HashSet<u64>>,
    ) -> Option<&'static str> {
        let dir = self.proc_root.join(pid.to_string());
        // Cheapest filter first: does it hold any TCP socket?
        match tcp_socket_by_protocol(&dir.join("fd"))? {
            Some(false) => return None,
            Some(true) => {}
            // The kernel does not name socket protocols: by the TCP table.
            None => {
                let sockets = socket_inodes_at(&self.proc_root, pid).ok()?;
                let netns = std::fs::read_link(dir.join("ns/net"))
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| format!("pid:{pid}"));
                let tcp = tcp_by_netns
                    .entry(netns)
                    .or_insert_with(|| tcp_inodes(&dir.join("net")));
                if sockets.is_disjoint(tcp) {
                    return None;
                }
            }
        }
        let maps = read_capped(&dir.join("maps"), MAX_MAPS_BYTES)?;
        let mappings = parse_maps(&maps);
        let root = dir.join("root");
        let exe = std::fs::read_link(dir.join("exe")).ok().map(|p| {
            p.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_string()
        });
        let attached_at: Vec<bool> = mappings
            .iter()
            .map(|m| is_attached(m, &root, attached))
            .collect();
        let mut found = self.tls_in_mappings(&dir, exe.as_deref(), &mappings, &attached_at);
        if attached_at.contains(&true) {
            // Partly covered: what goes through the attached library is seen.
            // Another OpenSSL copy is most likely one whose attach is pending;
            // another TLS stack is blind, unless only an OpenSSL user pulls it
            // in (Debian's libcurl needs librtmp and libldap, which need GnuTLS).
            found.retain(|&(r, _)| !is_openssl_reason(r));
            if !found.is_empty() {
                let reached =
                    self.reached_past_openssl_users(&dir, exe.as_deref(), &mappings, &attached_at);
                found.retain(|&(_, i)| reached[i]);
            }
        }
        REASONS
            .iter()
            .copied()
            .find(|r| found.iter().any(|(f, _)| f == r))
    }

    /// Every TLS stack the process's executable mappings carry, with the
    /// index of the mapping that carries it (attached mappings are skipped).
    fn tls_in_mappings(
        &mut self,
        dir: &Path,
        exe: Option<&str>,
        mappings: &[Mapping],
        attached_at: &[bool],
    ) -> Vec<(&'static str, usize)> {
        let root = dir.join("root");
        let mut found: Vec<(&'static str, usize)> = Vec::new();
        if let Some(nif) = erlang_crypto_nif(exe, mappings) {
            found.push(("erlang_tls", nif));
        }
        let mut seen = HashSet::new();
        for (i, m) in mappings.iter().enumerate() {
            if !m.executable || attached_at[i] || !seen.insert(m.key) {
                continue;
            }
            if let Some(r) = library_reason_by_name(&m.path) {
                found.push((r, i));
                continue;
            }
            let Some(source) = mapped_file(dir, &root, exe, m) else {
                continue;
            };
            if let Some(r) = self.elf_reason(&source, m.key) {
                // A shared OpenSSL that is not attached is a different problem
                // from OpenSSL built into a binary.
                let r = if r == "static_openssl" && is_shared_libssl(&m.path) {
                    "openssl_unattached"
                } else {
                    r
                };
                found.push((r, i));
            }
        }
        found
    }

    /// Which mappings are reached from the process's roots (the executable
    /// and what was dlopen'ed: objects no other mapped object needs) along
    /// DT_NEEDED without going through an OpenSSL user (an object that needs
    /// a libssl or is attached itself).  A TLS library reached so is used for
    /// its own sake; one only OpenSSL users need is a side dependency of the
    /// OpenSSL code that is seen.  Unreadable objects count as needing
    /// nothing, so they are roots (reported rather than hidden).
    fn reached_past_openssl_users(
        &mut self,
        dir: &Path,
        exe: Option<&str>,
        mappings: &[Mapping],
        attached_at: &[bool],
    ) -> Vec<bool> {
        let root = dir.join("root");
        let needed: Vec<Vec<usize>> = mappings
            .iter()
            .map(|m| {
                if !m.executable {
                    return Vec::new();
                }
                let names = mapped_file(dir, &root, exe, m)
                    .map(|source| self.needed_libraries(&source, m.key))
                    .unwrap_or_default();
                names
                    .iter()
                    .filter_map(|n| mappings.iter().position(|o| provides(&o.path, n)))
                    .collect()
            })
            .collect();
        let openssl_user: Vec<bool> = (0..mappings.len())
            .map(|i| {
                attached_at[i]
                    || needed[i]
                        .iter()
                        .any(|&d| is_shared_libssl(&mappings[d].path))
            })
            .collect();
        let mut is_needed = vec![false; mappings.len()];
        for &d in needed.iter().flatten() {
            is_needed[d] = true;
        }
        let mut reached = vec![false; mappings.len()];
        let mut todo: Vec<usize> = (0..mappings.len()).filter(|&i| !is_needed[i]).collect();
        while let Some(i) = todo.pop() {
            if std::mem::replace(&mut reached[i], true) || openssl_user[i] {
                continue;
            }
            todo.extend(needed[i].iter().copied().filter(|&d| !reached[d]));
        }
        reached
    }

    /// DT_NEEDED of an ELF file, cached like the verdicts.
    fn needed_libraries(&mut self, path: &Path, key: FileKey) -> std::sync::Arc<[String]> {
        let Ok(file) = File::open(path) else {
            return std::sync::Arc::from([]);
        };
        let Some(stamp) = file_stamp(&file) else {
            return std::sync::Arc::from([]);
        };
        if let Some((s, names)) = self.needed_cache.get(&key) {
            if *s == stamp {
                return names.clone();
            }
        }
        let names: std::sync::Arc<[String]> = elf_needed(file).into();
        self.needed_cache.put(key, (stamp, names.clone()));
        names
    }

    fn elf_reason(&mut self, path: &Path, key: FileKey) -> Option<&'static str> {
        // Not cached when unreadable: it may be readable next time.
        let file = File::open(path).ok()?;
        let stamp = file_stamp(&file)?;
        if let Some(v) = self.elf_cache.get(&key) {
            if v.stamp == stamp {
                return v.reason;
            }
        }
        let reason = classify_elf(file);
        self.elf_cache.put(key, Verdict { stamp, reason });
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

/// The scanner behind `judge_new_process`: its own (one caller, procwatch),
/// so a judgment never waits for a periodic scan.
fn new_process_scanner() -> &'static Mutex<BlindScanner> {
    static SCANNER: OnceLock<Mutex<BlindScanner>> = OnceLock::new();
    SCANNER.get_or_init(|| Mutex::new(BlindScanner::new()))
}

/// Judges one process shortly after its exec, so that one too short-lived
/// for the periodic scan is counted in `sensor_blind_processes_seen_total`.
pub fn judge_new_process(
    pid: u32,
    attached: &HashSet<FileKey>,
    metrics: &Metrics,
) -> Option<&'static str> {
    let proc_root = Path::new("/proc");
    let reason = new_process_scanner()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .check_pid(pid, attached)?;
    let comm = crate::capture::procfs::read_comm(proc_root, pid).unwrap_or_default();
    let expected = expected_blind().matches(exe_name(proc_root, pid).as_deref(), &comm);
    seen_processes().count(proc_root, pid, reason, expected, metrics);
    Some(reason)
}

/// Counts what a periodic scan found in `sensor_blind_processes_seen_total`
/// (each process once per reason, whichever look found it first).
pub fn count_blind_seen(metrics: &Metrics, found: &[BlindProcess]) {
    // Every reason's series exists from the first scan on (0 until counted).
    for r in REASONS {
        for e in ["false", "true"] {
            metrics.blind_processes_seen.with_label_values(&[r, e]);
        }
    }
    let mut seen = seen_processes();
    for b in found {
        if let Some(r) = REASONS.iter().copied().find(|r| *r == b.reason) {
            seen.count(Path::new("/proc"), b.pid, r, b.expected, metrics);
        }
    }
}

/// Processes counted in `sensor_blind_processes_seen_total` (remembered).
pub const SEEN_PROCESSES_REMEMBERED: usize = 16_384;

/// Which reasons each process was counted with, by (pid, start time): a pid
/// reused by a new process is a new process.  Bounded: a process forgotten
/// (16k blind processes later) and still blind would be counted again.
pub struct SeenProcesses {
    counted: lru::LruCache<(u32, u64), u32>,
}

impl SeenProcesses {
    pub fn new() -> SeenProcesses {
        SeenProcesses {
            counted: lru::LruCache::new(
                NonZeroUsize::new(SEEN_PROCESSES_REMEMBERED).expect("non-zero"),
            ),
        }
    }

    /// Counts `pid` with `reason` unless it was already; true when counted.
    /// `expected`: it is on the expected-blind list (the `expected` label).
    pub fn count(
        &mut self,
        proc_root: &Path,
        pid: u32,
        reason: &str,
        expected: bool,
        metrics: &Metrics,
    ) -> bool {
        let Some(bit) = REASONS.iter().position(|r| *r == reason) else {
            return false;
        };
        // A process gone meanwhile has no start time: counted under 0.
        let key = (pid, start_time(proc_root, pid).unwrap_or(0));
        let mask = self.counted.get_or_insert_mut(key, || 0);
        if *mask & (1 << bit) != 0 {
            return false;
        }
        *mask |= 1 << bit;
        metrics
            .blind_processes_seen
            .with_label_values(&[reason, expected_label(expected)])
            .inc();
        true
    }
}

impl Default for SeenProcesses {
    fn default() -> Self {
        Self::new()
    }
}

fn seen_processes() -> std::sync::MutexGuard<'static, SeenProcesses> {
    static SEEN: OnceLock<Mutex<SeenProcesses>> = OnceLock::new();
    SEEN.get_or_init(|| Mutex::new(SeenProcesses::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The process's start time (clock ticks after boot, /proc/PID/stat field 22).
fn start_time(proc_root: &Path, pid: u32) -> Option<u64> {
    let stat = read_capped(&proc_root.join(format!("{pid}/stat")), MAX_STAT_BYTES)?;
    // After the command name, which may hold spaces and parentheses.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// Largest /proc/PID/stat read (~300 bytes in practice).
const MAX_STAT_BYTES: u64 = 4096;

/// Sets `sensor_blind_processes{reason, expected}` for every reason, both
/// ways (0 when none).
pub fn update_blind_gauge(metrics: &Metrics, found: &[BlindProcess]) {
    for r in REASONS {
        for expected in [false, true] {
            let n = found
                .iter()
                .filter(|b| b.reason == *r && b.expected == expected)
                .count();
            metrics
                .blind_processes
                .with_label_values(&[r, expected_label(expected)])
                .set(n as i64);
        }
    }
}

/// The `expected` label's value.
pub fn expected_label(expected: bool) -> &'static str {
    if expected {
        "true"
    } else {
        "false"
    }
}

/// Programs a node runs for itself that talk TLS the sensor cannot see (Go's
/// crypto/tls): Kubernetes' node agents and control plane, container
/// runtimes, CNI and node add-on agents.  Names of executables (or comms);
/// `name*` matches a prefix.  Replaced as a whole by `expected_blind` in the
/// config (an empty list expects nothing).  Not on it: proxies that carry
/// the workloads' traffic (Envoy, Traefik, Caddy), and everything else.
pub const DEFAULT_EXPECTED_BLIND: &[&str] = &[
    // Kubernetes: node agents and control plane.
    "kubelet",
    "kube-proxy",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "cloud-controller-manager",
    "etcd",
    "k3s",
    "rke2",
    "kubelite",
    // Container runtimes.
    "containerd",
    "containerd-shim*",
    "dockerd",
    "cri-dockerd",
    "crio",
    // CNI and network agents.
    "calico-node",
    "calico-typha",
    "cilium-agent",
    "cilium-operator*",
    "cilium-health*",
    "flanneld",
    "kindnetd",
    "aws-k8s-agent",
    "antrea-agent",
    "kube-router",
    "weaver",
    // Node add-ons.
    "coredns",
    "konnectivity-agent",
    "csi-node-driver-registrar",
    "livenessprobe",
    "node_exporter",
];

/// Which blind processes are expected (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedBlind {
    names: Vec<String>,
}

impl Default for ExpectedBlind {
    fn default() -> Self {
        ExpectedBlind::new(DEFAULT_EXPECTED_BLIND.iter().map(|s| s.to_string()))
    }
}

impl ExpectedBlind {
    pub fn new(names: impl IntoIterator<Item = String>) -> ExpectedBlind {
        ExpectedBlind {
            names: names.into_iter().filter(|n| !n.is_empty()).collect(),
        }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether a process whose executable's file name is `exe` and whose
    /// comm is `comm` is on the list.
    pub fn matches(&self, exe: Option<&str>, comm: &str) -> bool {
        let one = |n: &str, v: &str| match n.strip_suffix('*') {
            Some(prefix) => v.starts_with(prefix),
            None => n == v,
        };
        self.names
            .iter()
            .any(|n| exe.is_some_and(|e| one(n, e)) || (!comm.is_empty() && one(n, comm)))
    }
}

fn expected_slot() -> &'static Mutex<ExpectedBlind> {
    static EXPECTED: OnceLock<Mutex<ExpectedBlind>> = OnceLock::new();
    EXPECTED.get_or_init(|| Mutex::new(ExpectedBlind::default()))
}

/// The expected-blind list in force (the defaults until `set_expected_blind`).
pub fn expected_blind() -> ExpectedBlind {
    expected_slot()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// Sets the expected-blind list (`sensor run`'s config, at start and SIGHUP).
pub fn set_expected_blind(list: ExpectedBlind) {
    *expected_slot().lock().unwrap_or_else(|e| e.into_inner()) = list;
}

/// The file name of a process's executable (`/proc/PID/exe`), not its comm,
/// which the kernel cuts at 15 bytes (`kube-controller`).
fn exe_name(proc_root: &Path, pid: u32) -> Option<String> {
    let target = std::fs::read_link(proc_root.join(format!("{pid}/exe"))).ok()?;
    let s = target.to_string_lossy();
    let s = s.trim_end_matches(" (deleted)");
    Some(file_name(s).to_string())
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

/// Whether a process (its /proc/PID/fd) holds a TCP socket, by each socket's
/// protocol name (the `system.sockprotoname` xattr: "TCP", "TCPv6",
/// "MPTCP"), ~10 µs a socket; `Some(None)` when the kernel does not name
/// them.  Reading /proc/PID/net/tcp instead walks the kernel's whole
/// connection hash table: 8 ms on the test machine with 70 sockets, too
/// much for a look at every new process.
fn tcp_socket_by_protocol(fd_dir: &Path) -> Option<Option<bool>> {
    let mut named = true;
    for (fd_link, _) in socket_fds(fd_dir).ok()? {
        match socket_protocol(&fd_link) {
            Some(p) if p.starts_with(b"TCP") || p.starts_with(b"MPTCP") => return Some(Some(true)),
            Some(_) => {}
            None => named = false,
        }
    }
    Some(named.then_some(false))
}

/// A socket's protocol name ("TCP", "UNIX-STREAM", …) through its fd link.
fn socket_protocol(fd_link: &Path) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(fd_link.as_os_str().as_bytes()).ok()?;
    let mut buf = [0u8; 32];
    // SAFETY: both strings are NUL-terminated; the kernel writes at most buf.len() bytes.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"system.sockprotoname".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).ok()?;
    let name = &buf[..n.min(buf.len())];
    Some(name.split(|&b| b == 0).next().unwrap_or(name).to_vec())
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

/// Whether a mapping is an attached TLS library — by the identity maps
/// shows, or by the one stat gives through the process's root (they differ
/// on overlayfs).
fn is_attached(m: &Mapping, root: &Path, attached: &HashSet<FileKey>) -> bool {
    if attached.contains(&m.key) {
        return true;
    }
    looks_like_tls_library(&m.path)
        && std::fs::metadata(in_root(root, &m.path))
            .is_ok_and(|md| attached.contains(&(md.dev(), md.ino())))
}

/// Where a mapped file can be read, if it can be trusted to be the mapped one.
fn mapped_file(dir: &Path, root: &Path, exe: Option<&str>, m: &Mapping) -> Option<PathBuf> {
    if exe == Some(m.path.as_str()) {
        // Through /proc/PID/exe: that is the mapped file even when it was
        // replaced on disk since.
        Some(dir.join("exe"))
    } else if m.deleted {
        // The path now names another file (or none): judging it could be wrong.
        None
    } else {
        Some(in_root(root, &m.path))
    }
}

/// Reasons that are OpenSSL (copies the probes could attach to).
fn is_openssl_reason(reason: &str) -> bool {
    matches!(reason, "static_openssl" | "openssl_unattached")
}

/// Whether the mapped file at `path` is the library a DT_NEEDED entry names:
/// maps shows the real file (`libgnutls.so.30.34.3`), the entry its soname
/// (`libgnutls.so.30`).
fn provides(path: &str, needed: &str) -> bool {
    let n = file_name(path);
    n.strip_prefix(needed)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// The index of OTP's crypto NIF (`…/lib/crypto-<vsn>/priv/lib/crypto.so`)
/// when the process is the Erlang VM (`beam.smp`/`beam`, or the runtime's
/// `erts-<vsn>` directory mapped).  OTP's `ssl` does TLS in Erlang and uses
/// libcrypto, through that NIF, for the ciphers only: no libssl, no SSL_*.
fn erlang_crypto_nif(exe: Option<&str>, mappings: &[Mapping]) -> Option<usize> {
    let is_beam_file = |p: &str| matches!(file_name(p), "beam.smp" | "beam");
    let is_vm = exe.is_some_and(is_beam_file)
        || mappings
            .iter()
            .any(|m| is_beam_file(&m.path) || m.path.split('/').any(|c| c.starts_with("erts-")));
    if !is_vm {
        return None;
    }
    mappings.iter().position(|m| is_otp_crypto_nif(&m.path))
}

fn is_otp_crypto_nif(path: &str) -> bool {
    let parts: Vec<&str> = path.rsplit('/').take(4).collect();
    matches!(parts.as_slice(), ["crypto.so", "lib", "priv", app] if app.starts_with("crypto-"))
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
    // Stripped of .symtab: what is left are strings in .rodata (read once,
    // at most MAX_SECTION_SCAN_BYTES; the verdict is cached per inode).
    if elf.symbols().next().is_some() {
        return None;
    }
    let rodata = section_data(&elf, ".rodata")?;
    let has = |needle: &[u8]| memchr::memmem::find(rodata, needle).is_some();
    // BoringSSL names itself, with or without a .dynsym: grpcio's cygrpc.so
    // keeps one for its own exports and none of the SSL_* ones.
    if has(b"BoringSSL") {
        return Some("boringssl");
    }
    // No symbols at all (a static program): OpenSSL's version string gives
    // it away.  (Not with a .dynsym: libcrypto has that string.)
    if elf.dynamic_symbols().next().is_none() && (has(b"OpenSSL 1.") || has(b"OpenSSL 3.")) {
        return Some("static_openssl");
    }
    // A dynamically linked one keeps the .dynsym of what it imports:
    // rustls's panic locations keep its source paths (`…/rustls-0.23.12/src/…`).
    if has(b"/rustls-") {
        return Some("rustls");
    }
    None
}

/// The libraries an ELF file names in DT_NEEDED (sonames), empty when it is
/// not a dynamically linked ELF file.
fn elf_needed(file: File) -> Vec<String> {
    use object::read::elf::{Dyn, ElfFile64};
    let cache = object::ReadCache::new(file);
    let Ok(elf) = ElfFile64::<object::Endianness, _>::parse(&cache) else {
        return Vec::new();
    };
    let endian = elf.endian();
    let sections = elf.elf_section_table();
    let Ok(Some((entries, strtab))) = sections.dynamic(endian, &cache) else {
        return Vec::new();
    };
    let Ok(strings) = sections.strings(endian, &cache, strtab) else {
        return Vec::new();
    };
    entries
        .iter()
        .filter(|d| d.tag32(endian) == Some(object::elf::DT_NEEDED))
        .filter_map(|d| strings.get(d.val32(endian)?).ok())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect()
}

/// A section's bytes, unless it is larger than MAX_SECTION_SCAN_BYTES.
fn section_data<'d, R: object::ReadRef<'d>>(
    elf: &object::File<'d, R>,
    name: &str,
) -> Option<&'d [u8]> {
    let sec = elf.section_by_name(name)?;
    if sec.size() > MAX_SECTION_SCAN_BYTES {
        return None;
    }
    sec.data().ok()
}

fn section_contains<'d, R: object::ReadRef<'d>>(
    elf: &object::File<'d, R>,
    name: &str,
    needle: &[u8],
) -> bool {
    section_data(elf, name).is_some_and(|d| memchr::memmem::find(d, needle).is_some())
}

#[cfg(test)]
mod tests;
