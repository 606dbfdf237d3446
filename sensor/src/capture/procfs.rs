//! Finding TLS libraries mapped by running processes: `/proc/*/maps`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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
    let _perms = field();
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

/// Groups the libssl mappings of many processes by (dev, ino).
#[derive(Default, Debug)]
pub struct LibraryIndex {
    pub libraries: BTreeMap<(u64, u64), LibraryInstance>,
}

impl LibraryIndex {
    pub fn add_process(&mut self, proc_root: &Path, pid: u32, mappings: &[Mapping]) {
        for m in mappings {
            if m.deleted || !is_libssl(&m.path) {
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

/// One scan of every process: the libssl instances and the pids that map one.
pub fn scan(proc_root: &Path, include: impl Fn(u32) -> bool) -> LibraryIndex {
    let mut index = LibraryIndex::default();
    let me = std::process::id();
    for pid in list_pids(proc_root).unwrap_or_default() {
        if pid == me || !include(pid) {
            continue;
        }
        // Processes vanish between readdir and open: that is normal, skip them.
        if let Ok(maps) = read_maps(proc_root, pid) {
            index.add_process(proc_root, pid, &maps);
        }
    }
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
        };
        let crypto = Mapping {
            range: "3000-4000".into(),
            dev: 1,
            ino: 11,
            path: "/usr/lib/libcrypto.so.3".into(),
            deleted: false,
        };
        let mut idx = LibraryIndex::default();
        // Several mappings of one file in one process (r--p, r-xp, …) count once.
        idx.add_process(root, 100, &[host.clone(), host.clone(), crypto.clone()]);
        idx.add_process(root, 200, &[same_other_path]);
        idx.add_process(root, 300, &[container]);
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
        let idx = scan(Path::new("/proc"), |_| true);
        for lib in idx.libraries.values() {
            assert!(is_libssl(&lib.path));
            assert!(!lib.pids.is_empty());
        }
    }
}
