//! Finding TLS libraries mapped by running processes: `/proc/*/maps`.
//!
//! A TLS library is a `libssl.so*` (by name), or any other mapped executable
//! file that has OpenSSL linked in: a program such as node, or a library that
//! bundles OpenSSL under its own name (see [`EmbeddedOpenssl`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::library::{has_openssl, open_library};

/// Lines of one `/proc/PID/maps` read at most (a process with more is unusual;
/// the rest is ignored rather than growing memory).
pub const MAX_MAPS_LINES: usize = 100_000;

/// One file-backed mapping line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The address range field as written (`7f12…-7f13…`): names the mapping
    /// under `/proc/PID/map_files/`.
    pub range: String,
    /// `makedev(major, minor)` of the device field.
    pub dev: u64,
    pub ino: u64,
    /// Path inside the process' mount namespace (no " (deleted)" suffix).
    pub path: String,
    pub deleted: bool,
    /// Mapped executable (`r-xp`): where code runs, so where probes go.
    pub exec: bool,
}

/// Parses one line: `start-end perms offset major:minor inode   path`.
/// Anonymous mappings and malformed lines give `None`.
pub fn parse_maps_line(line: &str) -> Option<Mapping> {
    let mut rest = line;
    let mut field = || {
        rest = rest.trim_start_matches(' ');
        let end = rest.find(' ').unwrap_or(rest.len());
        let (f, r) = rest.split_at(end);
        rest = r;
        f
    };
    let range = field();
    let perms = field();
    let _offset = field();
    let dev = field();
    let ino: u64 = field().parse().ok()?;
    let path = rest.trim_start_matches(' ');
    if ino == 0 || !path.starts_with('/') {
        return None;
    }
    let (major, minor) = dev.split_once(':')?;
    let major = u32::from_str_radix(major, 16).ok()?;
    let minor = u32::from_str_radix(minor, 16).ok()?;
    let (path, deleted) = match path.strip_suffix(" (deleted)") {
        Some(p) => (p, true),
        None => (path, false),
    };
    Some(Mapping {
        range: range.to_string(),
        dev: libc::makedev(major, minor),
        ino,
        path: path.to_string(),
        deleted,
        exec: perms.as_bytes().get(2) == Some(&b'x'),
    })
}

/// Is this the file name of an OpenSSL libssl (`libssl.so`, `libssl.so.3`, …)?
pub fn is_libssl(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name == "libssl.so" || name.starts_with("libssl.so.")
}

/// A distinct TLS library file (by device + inode) and the processes mapping it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LibraryInstance {
    pub dev: u64,
    pub ino: u64,
    /// Path as seen inside the first process found mapping it.
    pub path: String,
    /// A path that opens exactly this file from the sensor's mount namespace
    /// (see [`open_path_for`]).
    pub open_path: PathBuf,
    pub pids: BTreeSet<u32>,
}

/// Files judged by [`EmbeddedOpenssl`] at most; past it the verdicts start
/// over (a host maps a few hundred distinct executable files).
pub const MAX_JUDGED_FILES: usize = 65_536;

/// Which mapped executable files (other than `libssl.so*`) have OpenSSL
/// linked in, by device + inode: node's official builds, programs and Python
/// wheels that bundle it.  A file qualifies when its symbol table defines
/// `SSL_read`, `SSL_write` and `SSL_free` ([`has_openssl`]); a program that
/// calls a shared libssl only imports them.
///
/// Each file is read once (headers and symbol names only).  After every full
/// scan, verdicts of files that no process maps any more are dropped: the
/// map stays the size of what is mapped, and an inode number reused by a new
/// file is judged afresh.
#[derive(Default, Debug)]
pub struct EmbeddedOpenssl {
    verdicts: HashMap<(u64, u64), bool>,
}

impl EmbeddedOpenssl {
    fn judge(&mut self, proc_root: &Path, pid: u32, m: &Mapping) -> bool {
        let key = (m.dev, m.ino);
        if let Some(&v) = self.verdicts.get(&key) {
            return v;
        }
        let file = match open_library(&open_path_for(proc_root, pid, m)) {
            Ok(f) => f,
            // A device or the like: never a TLS library.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                self.remember(key, false);
                return false;
            }
            // Gone or unreadable now: not remembered, judged when seen again.
            Err(_) => return false,
        };
        let v = has_openssl(&file);
        self.remember(key, v);
        v
    }

    fn remember(&mut self, key: (u64, u64), v: bool) {
        if self.verdicts.len() >= MAX_JUDGED_FILES {
            self.verdicts.clear();
        }
        self.verdicts.insert(key, v);
    }

    /// Forgets the verdicts of files not in `mapped`.
    fn retain(&mut self, mapped: &HashSet<(u64, u64)>) {
        self.verdicts.retain(|k, _| mapped.contains(k));
    }

    pub fn judged(&self) -> usize {
        self.verdicts.len()
    }
}

/// Groups the TLS library mappings of many processes by (dev, ino).
#[derive(Default, Debug)]
pub struct LibraryIndex {
    pub libraries: BTreeMap<(u64, u64), LibraryInstance>,
    /// Executable files mapped by the processes added (judged or not).
    pub exec_files: HashSet<(u64, u64)>,
}

impl LibraryIndex {
    pub fn add_process(
        &mut self,
        proc_root: &Path,
        pid: u32,
        mappings: &[Mapping],
        embedded: &mut EmbeddedOpenssl,
    ) {
        for m in mappings {
            if m.deleted {
                continue;
            }
            if m.exec {
                self.exec_files.insert((m.dev, m.ino));
            }
            let tls = is_libssl(&m.path) || (m.exec && embedded.judge(proc_root, pid, m));
            if !tls {
                continue;
            }
            let lib = self
                .libraries
                .entry((m.dev, m.ino))
                .or_insert_with(|| LibraryInstance {
                    dev: m.dev,
                    ino: m.ino,
                    path: m.path.clone(),
                    open_path: open_path_for(proc_root, pid, m),
                    pids: BTreeSet::new(),
                });
            lib.pids.insert(pid);
        }
    }
}

/// Where the host keeps its shared libraries (relative to its root): a
/// `libssl.so*` found here is attached before any process maps it.
pub const HOST_LIBRARY_DIRS: &[&str] = &[
    "lib",
    "lib64",
    "usr/lib",
    "usr/lib64",
    "lib/x86_64-linux-gnu",
    "usr/lib/x86_64-linux-gnu",
    "usr/local/lib",
    "usr/local/lib64",
];

/// `statfs` magic of overlayfs: there `stat` and `/proc/PID/maps` may name a
/// file by different device numbers.
const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;

impl LibraryIndex {
    /// Adds the host's shared `libssl.so*` files, mapped or not (no pids).
    /// Probes follow the file, so a process that maps it later is seen from
    /// its first call: a short-lived client such as curl is over before a
    /// rescan could find its mapping.  Skipped on an overlayfs root, where
    /// the identity `stat` gives may not be the one maps shows (the same
    /// file would be attached twice).
    pub fn add_host_libraries(&mut self, proc_root: &Path) {
        use std::os::unix::fs::MetadataExt;
        let Some(root) = host_root(proc_root) else {
            return;
        };
        for dir in HOST_LIBRARY_DIRS {
            let dir_path = root.join(dir);
            if is_overlayfs(&dir_path) {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir_path) else {
                continue;
            };
            // Runs every rescan: only the libssl names go further.  Files
            // before symlinks to them: a library is named by its file.
            let mut entries: Vec<_> = entries
                .flatten()
                .filter(|e| e.file_name().to_str().is_some_and(is_libssl))
                .collect();
            entries.sort_by_key(|e| (e.file_type().is_ok_and(|t| t.is_symlink()), e.file_name()));
            for e in entries {
                let name = e.file_name();
                let name = name.to_string_lossy();
                // Through symlinks (libssl.so -> libssl.so.3): the file itself.
                let Ok(md) = std::fs::metadata(e.path()) else {
                    continue;
                };
                if !md.is_file() {
                    continue;
                }
                self.libraries
                    .entry((md.dev(), md.ino()))
                    .or_insert_with(|| LibraryInstance {
                        dev: md.dev(),
                        ino: md.ino(),
                        path: format!("/{dir}/{name}"),
                        open_path: e.path(),
                        pids: BTreeSet::new(),
                    });
            }
        }
    }
}

/// The host's root directory: `/proc/1/root` (what a sensor in a container
/// with the host's pid namespace reaches it by), else, on the real /proc,
/// our own `/` (a sensor run on the host itself, where pid 1 may be out of
/// reach; in a container `/` is an overlayfs, skipped by the caller).
fn host_root(proc_root: &Path) -> Option<PathBuf> {
    let pid1_root = proc_root.join("1").join("root");
    if std::fs::read_dir(&pid1_root).is_ok() {
        return Some(pid1_root);
    }
    (proc_root == Path::new("/proc")).then(|| PathBuf::from("/"))
}

fn is_overlayfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a statfs buffer of the right type.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == OVERLAYFS_SUPER_MAGIC
}

/// A path to the mapped file that works from here.  `maps` shows paths relative
/// to the *reader's* root where it can: a container's library (another mount
/// namespace) shows as `/usr/lib/…`, reached through `/proc/PID/root/`, while a
/// chrooted process' library shows with its host path, which `/proc/PID/root/`
/// would wrongly prefix.  So: `/proc/PID/root/<path>` if it is the same file
/// (device and inode), else `/proc/PID/map_files/<range>` (the mapping itself,
/// whatever the namespaces), else the first (for a vanished process).
pub fn open_path_for(proc_root: &Path, pid: u32, m: &Mapping) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let pid_dir = proc_root.join(pid.to_string());
    let via_root = pid_dir.join("root").join(m.path.trim_start_matches('/'));
    let candidates = [via_root.clone(), pid_dir.join("map_files").join(&m.range)];
    candidates
        .into_iter()
        .find(|p| {
            std::fs::metadata(p)
                .map(|md| md.dev() == m.dev && md.ino() == m.ino)
                .unwrap_or(false)
        })
        .unwrap_or(via_root)
}

/// Reads `/proc/PID/maps` (bounded).
pub fn read_maps(proc_root: &Path, pid: u32) -> std::io::Result<Vec<Mapping>> {
    use std::io::BufRead;
    let f = std::fs::File::open(proc_root.join(pid.to_string()).join("maps"))?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f).lines().take(MAX_MAPS_LINES) {
        if let Some(m) = parse_maps_line(&line?) {
            out.push(m);
        }
    }
    Ok(out)
}

/// Numeric entries of /proc: the running processes.
pub fn list_pids(proc_root: &Path) -> std::io::Result<Vec<u32>> {
    Ok(std::fs::read_dir(proc_root)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect())
}

/// `/proc/PID/comm` without the newline.
pub fn read_comm(proc_root: &Path, pid: u32) -> Option<String> {
    let s = std::fs::read_to_string(proc_root.join(pid.to_string()).join("comm")).ok()?;
    Some(s.trim_end_matches('\n').to_string())
}

/// One scan of every process: the TLS library instances and the pids that
/// map one.  `embedded` keeps its verdicts between scans.
pub fn scan(
    proc_root: &Path,
    include: impl Fn(u32) -> bool,
    embedded: &mut EmbeddedOpenssl,
) -> LibraryIndex {
    let mut index = LibraryIndex::default();
    let me = std::process::id();
    for pid in list_pids(proc_root).unwrap_or_default() {
        if pid == me || !include(pid) {
            continue;
        }
        // Processes vanish between readdir and open: that is normal, skip them.
        if let Ok(maps) = read_maps(proc_root, pid) {
            index.add_process(proc_root, pid, &maps, embedded);
        }
    }
    embedded.retain(&index.exec_files);
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let l = "7f1c2a000000-7f1c2a01f000 r--p 00000000 fd:01 1835211                    /usr/lib/x86_64-linux-gnu/libssl.so.3";
        let m = parse_maps_line(l).unwrap();
        assert_eq!(m.dev, libc::makedev(0xfd, 0x01));
        assert_eq!(m.ino, 1835211);
        assert_eq!(m.path, "/usr/lib/x86_64-linux-gnu/libssl.so.3");
        assert!(!m.deleted);
        assert!(!m.exec, "r--p is not executable");
        let l = "7f1c2a01f000-7f1c2a07a000 r-xp 0001f000 fd:01 1835211 /usr/lib/x86_64-linux-gnu/libssl.so.3";
        assert!(parse_maps_line(l).unwrap().exec);

        let l =
            "7f1c2a000000-7f1c2a01f000 r-xp 00001000 00:2a 99 /opt/my lib/libssl.so.3 (deleted)";
        let m = parse_maps_line(l).unwrap();
        assert_eq!(m.path, "/opt/my lib/libssl.so.3");
        assert!(m.deleted);
        assert_eq!(m.dev, libc::makedev(0, 0x2a));

        assert_eq!(
            parse_maps_line("7ffd-7ffe rw-p 00000000 00:00 0 [stack]"),
            None
        );
        assert_eq!(parse_maps_line("7ffd-7ffe rw-p 00000000 00:00 0"), None);
        assert_eq!(parse_maps_line(""), None);
        assert_eq!(parse_maps_line("garbage"), None);
        assert_eq!(parse_maps_line("a b c zz:01 12 /x"), None);
        assert_eq!(parse_maps_line("a b c 01:01 notanumber /x"), None);
    }

    #[test]
    fn recognises_libssl_names() {
        assert!(is_libssl("/usr/lib/x86_64-linux-gnu/libssl.so.3"));
        assert!(is_libssl("/lib/libssl.so.1.1"));
        assert!(is_libssl("/x/libssl.so"));
        assert!(!is_libssl("/usr/lib/libssl3.so")); // NSS, not OpenSSL
        assert!(!is_libssl("/usr/lib/libcrypto.so.3"));
        assert!(!is_libssl("/usr/lib/libssl.so.3.bak/x"));
    }

    #[test]
    fn open_path_is_the_mapped_file_even_when_maps_shows_a_foreign_path() {
        // A file mapping of this very process (its own executable or libc).
        let me = std::process::id();
        let maps = read_maps(Path::new("/proc"), me).unwrap();
        let m = maps.iter().find(|m| !m.deleted).expect("a file mapping");
        // As maps shows it: /proc/PID/root/<path> is that file.
        assert_eq!(
            open_path_for(Path::new("/proc"), me, m),
            PathBuf::from(format!("/proc/{me}/root{}", m.path))
        );
        // A chrooted process' maps line shows a path that does not exist under
        // its root: the mapping itself (map_files) is used, verified by inode.
        let foreign = Mapping {
            path: "/no/such/dir/libssl.so.3".into(),
            ..m.clone()
        };
        let p = open_path_for(Path::new("/proc"), me, &foreign);
        assert_eq!(
            p,
            PathBuf::from(format!("/proc/{me}/map_files/{}", m.range))
        );
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!((md.dev(), md.ino()), (m.dev, m.ino));
    }

    #[test]
    fn dedupes_by_inode_across_processes_and_namespaces() {
        let root = Path::new("/proc");
        let host = Mapping {
            range: "1000-2000".into(),
            dev: 1,
            ino: 10,
            path: "/usr/lib/libssl.so.3".into(),
            deleted: false,
            exec: true,
        };
        // Same file seen through a different path (e.g. a bind mount): same inode.
        let same_other_path = Mapping {
            path: "/lib/libssl.so.3".into(),
            ..host.clone()
        };
        // A container's own copy: different device and inode.
        let container = Mapping {
            range: "1000-2000".into(),
            dev: 2,
            ino: 10,
            path: "/usr/lib/libssl.so.3".into(),
            deleted: false,
            exec: false,
        };
        let crypto = Mapping {
            range: "3000-4000".into(),
            dev: 1,
            ino: 11,
            path: "/usr/lib/libcrypto.so.3".into(),
            deleted: false,
            exec: false,
        };
        let mut idx = LibraryIndex::default();
        let mut embedded = EmbeddedOpenssl::default();
        // Several mappings of one file in one process (r--p, r-xp, …) count once.
        idx.add_process(
            root,
            100,
            &[host.clone(), host.clone(), crypto.clone()],
            &mut embedded,
        );
        idx.add_process(root, 200, &[same_other_path], &mut embedded);
        idx.add_process(root, 300, &[container], &mut embedded);
        assert_eq!(idx.libraries.len(), 2);
        let h = &idx.libraries[&(1, 10)];
        assert_eq!(h.pids.iter().copied().collect::<Vec<_>>(), [100, 200]);
        assert_eq!(
            h.open_path,
            PathBuf::from("/proc/100/root/usr/lib/libssl.so.3")
        );
        let c = &idx.libraries[&(2, 10)];
        assert_eq!(
            c.open_path,
            PathBuf::from("/proc/300/root/usr/lib/libssl.so.3")
        );
    }

    #[test]
    fn scans_this_machine_without_failing() {
        // Our own process is excluded; the scan must simply not fail or panic.
        let mut embedded = EmbeddedOpenssl::default();
        let idx = scan(Path::new("/proc"), |_| true, &mut embedded);
        for lib in idx.libraries.values() {
            assert!(!lib.pids.is_empty());
        }
        // Only files still mapped keep a verdict.
        assert!(embedded.judged() <= idx.exec_files.len());
    }

    fn spawn(program: &str, args: &[&str]) -> Option<std::process::Child> {
        std::process::Command::new(program)
            .args(args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .ok()
    }

    /// The executable of `pid` once it has exec'd `name` (path, dev + inode).
    fn exe_key(pid: u32, name: &str) -> (PathBuf, (u64, u64)) {
        use std::os::unix::fs::MetadataExt;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
            if exe
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(name))
            {
                let md = std::fs::metadata(&exe).unwrap();
                return (exe, (md.dev(), md.ino()));
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{pid} did not exec {name}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// A running node (OpenSSL linked into the program): its executable is a
    /// TLS library; `sleep` (no OpenSSL) is not.  A verdict goes with the
    /// last process that mapped the file.
    #[test]
    fn program_with_openssl_linked_in_is_a_tls_library() {
        let Some(mut node) = spawn("node", &["-e", "setTimeout(() => {}, 20000)"]) else {
            crate::test_tools::tool_missing("node");
            return;
        };
        let mut sleep = spawn("sleep", &["20"]).expect("sleep");
        let (node_pid, sleep_pid) = (node.id(), sleep.id());
        let ours = |p: u32| p == node_pid || p == sleep_pid;
        let mut embedded = EmbeddedOpenssl::default();
        let (node_exe, node_key) = exe_key(node_pid, "node");
        let (_, sleep_key) = exe_key(sleep_pid, "sleep");
        let idx = scan(Path::new("/proc"), ours, &mut embedded);
        let linked_in = has_openssl(&open_library(&node_exe).unwrap());
        if linked_in {
            let lib = &idx.libraries[&node_key];
            assert_eq!(lib.pids.iter().copied().collect::<Vec<_>>(), [node_pid]);
            assert_eq!(embedded.verdicts.get(&node_key), Some(&true));
        } else {
            // A node built against the shared libssl: that library is found by name.
            eprintln!("note: {} uses a shared libssl", node_exe.display());
            assert!(idx.libraries.values().any(|l| l.pids.contains(&node_pid)));
        }
        assert!(idx.libraries.values().all(|l| !l.pids.contains(&sleep_pid)));
        assert_eq!(embedded.verdicts.get(&sleep_key), Some(&false));
        // Both gone: the next scan forgets their verdicts.
        for c in [&mut node, &mut sleep] {
            let _ = c.kill();
            let _ = c.wait();
        }
        scan(Path::new("/proc"), ours, &mut embedded);
        assert_eq!(embedded.verdicts.get(&node_key), None);
        assert_eq!(embedded.verdicts.get(&sleep_key), None);
    }

    #[test]
    fn host_libraries_are_found_unmapped_by_their_files() {
        use std::os::unix::fs::MetadataExt;
        let proc_root = tempfile::tempdir().unwrap();
        let lib_dir = proc_root.path().join("1/root/usr/lib/x86_64-linux-gnu");
        std::fs::create_dir_all(&lib_dir).unwrap();
        std::fs::write(lib_dir.join("libssl.so.3"), b"elf").unwrap();
        std::os::unix::fs::symlink("libssl.so.3", lib_dir.join("libssl.so")).unwrap();
        std::fs::write(lib_dir.join("libcrypto.so.3"), b"elf").unwrap();
        std::fs::create_dir_all(proc_root.path().join("1/root/usr/local/lib")).unwrap();
        std::fs::write(
            proc_root.path().join("1/root/usr/local/lib/libssl.so.1.1"),
            b"old",
        )
        .unwrap();
        let mut idx = LibraryIndex::default();
        idx.add_host_libraries(proc_root.path());
        let mut found: Vec<(&str, usize)> = idx
            .libraries
            .values()
            .map(|l| (l.path.as_str(), l.pids.len()))
            .collect();
        found.sort();
        assert_eq!(
            found,
            [
                ("/usr/lib/x86_64-linux-gnu/libssl.so.3", 0),
                ("/usr/local/lib/libssl.so.1.1", 0)
            ]
        );
        let md = std::fs::metadata(lib_dir.join("libssl.so.3")).unwrap();
        let lib = &idx.libraries[&(md.dev(), md.ino())];
        assert_eq!(lib.open_path, lib_dir.join("libssl.so.3"));
        // A mapping of the same file later joins the same entry.
        let mut embedded = EmbeddedOpenssl::default();
        let m = Mapping {
            range: "1000-2000".into(),
            dev: md.dev(),
            ino: md.ino(),
            path: "/usr/lib/x86_64-linux-gnu/libssl.so.3".into(),
            deleted: false,
            exec: true,
        };
        idx.add_process(proc_root.path(), 42, &[m], &mut embedded);
        assert_eq!(idx.libraries.len(), 2);
        assert_eq!(idx.libraries[&(md.dev(), md.ino())].pids.len(), 1);
    }

    /// A device mapped executable (GPU drivers do this) is judged without
    /// being opened, and remembered as not TLS.
    #[test]
    fn mapped_devices_are_not_tls_libraries() {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata("/dev/zero").unwrap();
        let m = Mapping {
            range: "1000-2000".into(),
            dev: md.dev(),
            ino: md.ino(),
            path: "/dev/zero".into(),
            deleted: false,
            exec: true,
        };
        let mut embedded = EmbeddedOpenssl::default();
        let mut idx = LibraryIndex::default();
        idx.add_process(Path::new("/proc"), std::process::id(), &[m], &mut embedded);
        assert!(idx.libraries.is_empty());
        assert_eq!(embedded.verdicts.get(&(md.dev(), md.ino())), Some(&false));
    }
}
