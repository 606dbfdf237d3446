//! Who a process is: executable, container and pod (from its cgroup), and —
//! best effort — the remote address of its TLS connection.
//!
//! Everything here reads /proc and never guesses: when the answer is not
//! certain the field stays `None`.
//!
//! What the cgroup path can tell (cgroup v2 `0::/…`, or any v1 hierarchy line):
//! - the container id (64 hex digits) for containerd (`cri-containerd-<id>.scope`,
//!   or `…:cri-containerd:<id>`), CRI-O (`crio-<id>.scope`), Docker (`/docker/<id>`,
//!   `docker-<id>.scope`), Podman (`libpod-<id>.scope`), and cgroupfs kubepods
//!   (`/kubepods/<qos>/pod<uid>/<id>`);
//! - the pod UID (`pod<uid>` components; systemd writes its dashes as `_`).
//!   The pod *name* and *namespace* live only in the API server, which the
//!   sensor does not call (it needs no RBAC): `ProcessInfo.pod` is set to
//!   `uid:<pod uid>` and `namespace` stays `None`.
//!
//! `exe` is the link /proc/PID/exe, i.e. the path in the process's own mount
//! namespace (inside its container).

use std::collections::HashSet;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use crate::http::types::ProcessInfo;

/// Largest /proc/PID/cgroup read (a few hundred bytes in practice).
pub const MAX_CGROUP_BYTES: u64 = 64 * 1024;
/// Largest /proc/PID/comm read (the kernel's limit is 16 bytes with the newline).
pub const MAX_COMM_BYTES: u64 = 64;
/// Largest /proc/PID/net/tcp{,6} read (about 150 bytes a socket: ~100k sockets).
pub const MAX_PROC_NET_BYTES: u64 = 16 * 1024 * 1024;
/// File descriptors looked at per process when mapping sockets.
pub const MAX_FDS_SCANNED: usize = 65_536;
/// `peer_for` gives up (None) on processes holding more sockets than this:
/// they cannot have a single connection worth naming, and reading their
/// network tables on every call would cost more than the answer is worth.
pub const MAX_SOCKETS_FOR_PEER: usize = 256;

/// What a cgroup path says about the process's container and pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupIdentity {
    /// 64 lower-case hex digits.
    pub container_id: Option<String>,
    /// "containerd", "cri-o", "docker", "podman", or "unknown" (a bare id under kubepods).
    pub runtime: Option<&'static str>,
    /// Pod UID in its canonical dashed form.
    pub pod_uid: Option<String>,
}

/// Reads a small /proc file, at most `cap` bytes.
fn read_capped(path: &Path, cap: u64) -> std::io::Result<String> {
    let mut s = String::new();
    std::fs::File::open(path)?
        .take(cap)
        .read_to_string(&mut s)?;
    Ok(s)
}

/// The process's identity.  `comm` is the process's own name
/// (/proc/PID/comm of the thread-group leader: `ruby`, what `--comm` and
/// operators know it by), not the name of the thread that made the call
/// (`comm_from_event`, e.g. Ruby's `server.rb:289`), which is used only when
/// the process's cannot be read (it exited).  exe and cgroup are read now
/// (callers cache per pid).
pub fn process_info(pid: u32, comm_from_event: &str) -> ProcessInfo {
    process_info_at(Path::new("/proc"), pid, comm_from_event)
}

pub(crate) fn process_info_at(proc_root: &Path, pid: u32, comm_from_event: &str) -> ProcessInfo {
    let dir = proc_root.join(pid.to_string());
    let exe = std::fs::read_link(dir.join("exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let cg = read_capped(&dir.join("cgroup"), MAX_CGROUP_BYTES)
        .map(|t| parse_cgroup(&t))
        .unwrap_or_default();
    ProcessInfo {
        pid,
        comm: process_comm(&dir).unwrap_or_else(|| comm_from_event.to_string()),
        exe,
        container_id: cg.container_id,
        pod: cg.pod_uid.map(|u| format!("uid:{u}")),
        namespace: None,
    }
}

/// The process's own command name (/proc/PID/comm), if readable and not empty.
fn process_comm(proc_dir: &Path) -> Option<String> {
    let text = read_capped(&proc_dir.join("comm"), MAX_COMM_BYTES).ok()?;
    let comm = text.trim_end_matches('\n');
    (!comm.is_empty()).then(|| comm.to_string())
}

/// Container id and pod UID from the text of /proc/PID/cgroup.  The cgroup v2
/// line (`0::…`) is preferred; v1 lines are used when it says nothing.
pub fn parse_cgroup(text: &str) -> CgroupIdentity {
    let mut paths: Vec<&str> = Vec::new();
    for line in text.lines() {
        // hierarchy-ID:controller-list:path — the path itself may contain ':'.
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(_), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" {
            paths.insert(0, path);
        } else {
            paths.push(path);
        }
    }
    for path in paths {
        let found = parse_cgroup_path(path);
        if found.container_id.is_some() || found.pod_uid.is_some() {
            return found;
        }
    }
    CgroupIdentity::default()
}

fn parse_cgroup_path(path: &str) -> CgroupIdentity {
    let mut out = CgroupIdentity::default();
    let mut under_docker = false;
    let mut under_kubepods = false;
    // systemd's containerd layout joins parts with ':' inside one component
    // (`kubepods-…-pod<uid>.slice:cri-containerd:<id>`); treat ':' as a separator too.
    let mut parts = path.split(['/', ':']).filter(|p| !p.is_empty()).peekable();
    while let Some(part) = parts.next() {
        let name = part
            .strip_suffix(".scope")
            .or_else(|| part.strip_suffix(".slice"))
            .unwrap_or(part);
        if name == "docker" {
            under_docker = true;
        }
        if name == "kubepods" || name.starts_with("kubepods-") {
            under_kubepods = true;
        }
        if let Some(uid) = pod_uid_of(name) {
            out.pod_uid = Some(uid);
            continue;
        }
        // `cri-containerd:<id>`: the runtime and the id in separate parts.
        if name == "cri-containerd" {
            if let Some(id) = parts.peek().filter(|p| is_container_id(p)) {
                out.container_id = Some(id.to_ascii_lowercase());
                out.runtime = Some("containerd");
                parts.next();
            }
            continue;
        }
        for (prefix, runtime) in [
            ("cri-containerd-", "containerd"),
            ("crio-", "cri-o"),
            ("docker-", "docker"),
            ("libpod-", "podman"),
        ] {
            if let Some(id) = name.strip_prefix(prefix).filter(|id| is_container_id(id)) {
                out.container_id = Some(id.to_ascii_lowercase());
                out.runtime = Some(runtime);
            }
        }
        if is_container_id(name) {
            out.container_id = Some(name.to_ascii_lowercase());
            out.runtime = Some(if under_docker && !under_kubepods {
                "docker"
            } else {
                "unknown"
            });
        }
    }
    out
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `pod<uid>`, `kubepods-pod<uid>`, `kubepods-burstable-pod<uid>` (uid with `-` or `_`).
fn pod_uid_of(name: &str) -> Option<String> {
    let at = name.rfind("pod")?;
    let before = &name[..at];
    if !(before.is_empty() || before.starts_with("kubepods"))
        || (!before.is_empty() && !before.ends_with('-'))
    {
        return None;
    }
    let uid = name[at + 3..].replace('_', "-").to_ascii_lowercase();
    is_uuid(&uid).then_some(uid)
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// TCP states of /proc/net/tcp (include/net/tcp_states.h).
pub const TCP_ESTABLISHED: u8 = 0x01;
pub const TCP_LISTEN: u8 = 0x0A;

/// One row of /proc/PID/net/tcp or tcp6.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpSocket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u8,
    pub inode: u64,
}

/// Parses /proc/net/tcp or /proc/net/tcp6 text; malformed rows are skipped.
pub fn parse_proc_net_tcp(text: &str) -> Vec<TcpSocket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                return None;
            }
            Some(TcpSocket {
                local: parse_hex_addr(f[1])?,
                remote: parse_hex_addr(f[2])?,
                state: u8::from_str_radix(f[3], 16).ok()?,
                inode: f[9].parse().ok()?,
            })
        })
        .collect()
}

/// `0100007F:1F90` (IPv4) or 32 hex digits `:port` (IPv6); each 32-bit word
/// is in host (little-endian on the platforms the sensor runs on) order.
fn parse_hex_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Option<Vec<u32>> = (0..ip.len() / 8)
        .map(|i| {
            ip.get(i * 8..i * 8 + 8)
                .and_then(|w| u32::from_str_radix(w, 16).ok())
        })
        .collect();
    let words = words?;
    let ip = match (ip.len(), words.as_slice()) {
        (8, [w]) => IpAddr::V4(Ipv4Addr::from(w.to_ne_bytes())),
        (32, [a, b, c, d]) => {
            let mut bytes = [0u8; 16];
            for (i, w) in [a, b, c, d].iter().enumerate() {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            let v6 = Ipv6Addr::from(bytes);
            // A v4 peer on a dual-stack socket: show it as v4.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Inodes of the sockets a process holds (from /proc/PID/fd links `socket:[N]`).
pub fn socket_inodes(pid: u32) -> std::io::Result<HashSet<u64>> {
    socket_inodes_at(Path::new("/proc"), pid)
}

pub(crate) fn socket_inodes_at(proc_root: &Path, pid: u32) -> std::io::Result<HashSet<u64>> {
    let fd_dir = proc_root.join(pid.to_string()).join("fd");
    Ok(socket_fds(&fd_dir)?.map(|(_, inode)| inode).collect())
}

/// The sockets among a process's fds (`fd_dir`: its /proc/PID/fd), lazily:
/// each fd's link path and its socket inode (`socket:[inode]`); at most
/// [`MAX_FDS_SCANNED`] fds are looked at.
pub(crate) fn socket_fds(
    fd_dir: &Path,
) -> std::io::Result<impl Iterator<Item = (std::path::PathBuf, u64)>> {
    Ok(std::fs::read_dir(fd_dir)?
        .take(MAX_FDS_SCANNED)
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let target = std::fs::read_link(&path).ok()?;
            let inode = target
                .to_string_lossy()
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()?;
            Some((path, inode))
        }))
}

/// TCP sockets (v4 and v6) in the process's network namespace whose inode the
/// process holds.
pub fn tcp_sockets_of(pid: u32) -> std::io::Result<Vec<TcpSocket>> {
    tcp_sockets_at(Path::new("/proc"), pid)
}

pub(crate) fn tcp_sockets_at(proc_root: &Path, pid: u32) -> std::io::Result<Vec<TcpSocket>> {
    let inodes = socket_inodes_at(proc_root, pid)?;
    if inodes.is_empty() {
        return Ok(Vec::new());
    }
    let net = proc_root.join(pid.to_string()).join("net");
    let mut out = Vec::new();
    for file in ["tcp", "tcp6"] {
        // tcp6 is absent when IPv6 is disabled.
        let Ok(text) = read_capped(&net.join(file), MAX_PROC_NET_BYTES) else {
            continue;
        };
        out.extend(
            parse_proc_net_tcp(&text)
                .into_iter()
                .filter(|s| inodes.contains(&s.inode)),
        );
    }
    Ok(out)
}

/// The remote address of the process's TLS connection, when it is certain:
/// the process holds exactly one established TCP connection.
///
/// What it cannot know: which socket an SSL object uses (the probes see the
/// SSL pointer, not the fd), so a process with several connections — a busy
/// server, a pooled client — gives `None`, as does a process behind a proxy
/// (the peer is then the proxy).  Read at finding time, it may also miss a
/// connection that has just closed.
///
/// Cost: a walk of /proc/PID/fd and a read of its /proc/PID/net/tcp{,6};
/// call it once per connection, not per pair.
pub fn peer_for(pid: u32) -> Option<String> {
    let proc_root = Path::new("/proc");
    if socket_inodes_at(proc_root, pid).ok()?.len() > MAX_SOCKETS_FOR_PEER {
        return None;
    }
    peer_from_sockets(&tcp_sockets_at(proc_root, pid).ok()?)
}

fn peer_from_sockets(sockets: &[TcpSocket]) -> Option<String> {
    let mut established = sockets.iter().filter(|s| s.state == TCP_ESTABLISHED);
    let only = established.next()?;
    if established.next().is_some() {
        return None;
    }
    Some(only.remote.to_string())
}

#[cfg(test)]
mod tests;
