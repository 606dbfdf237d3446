//! `sensor check`: can this host run the sensor?  Line by line, without root.

use std::path::Path;

use super::config::ProbeMode;
use super::library::{open_library, plan};
use super::procfs;

/// One line of `sensor check`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CheckLine {
    /// What was checked ("kernel", "btf", "uprobes", "ring buffer", "privileges",
    /// "ebpf object", "tls library").
    pub what: String,
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// How to fix it, when not ok.
    pub fix: Option<String>,
}

impl std::fmt::Display for CheckLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = if self.ok { "ok     " } else { "MISSING" };
        write!(f, "{status} {:<12} {}", self.what, self.detail)?;
        if let Some(fix) = &self.fix {
            write!(f, " -> {fix}")?;
        }
        Ok(())
    }
}

fn line(what: &str, ok: bool, detail: String, fix: Option<&str>) -> CheckLine {
    CheckLine {
        what: what.into(),
        ok,
        detail,
        fix: if ok { None } else { fix.map(str::to_string) },
    }
}

/// (major, minor) of a kernel release string such as "6.18.44-fc-v782".
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// Ring buffers (BPF_MAP_TYPE_RINGBUF) arrived in 5.8.
const MIN_KERNEL: (u32, u32) = (5, 8);

const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capabilities of this process from /proc/self/status.
/// Whether this process may create uprobes, asked of the kernel itself: a
/// uprobe perf event on this executable at file offset 0 (the ELF header,
/// never mapped executable, so no breakpoint is ever placed), opened and
/// closed at once.  Capabilities alone cannot tell: Linux 5.8 let
/// CAP_PERFMON create uprobes, and stable kernels since mid-2025 (6.x, e.g.
/// 6.18) want CAP_SYS_ADMIN again.
pub fn uprobes_permitted() -> std::io::Result<()> {
    let pmu: u32 = std::fs::read_to_string("/sys/bus/event_source/devices/uprobe/type")?
        .trim()
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let path = c"/proc/self/exe";
    // struct perf_event_attr (PERF_ATTR_SIZE_VER5 = 112 bytes is enough):
    // type, size, config1 = the path, config2 = the offset, disabled.
    let mut attr = [0u8; 112];
    attr[0..4].copy_from_slice(&pmu.to_ne_bytes());
    attr[4..8].copy_from_slice(&112u32.to_ne_bytes());
    attr[40..48].copy_from_slice(&1u64.to_ne_bytes()); // disabled
    attr[56..64].copy_from_slice(&(path.as_ptr() as u64).to_ne_bytes());
    // SAFETY: a valid perf_event_attr buffer and a NUL-terminated path that
    // outlive the call; the returned fd is closed right away.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            -1i32,
            0i32,
            -1i32,
            8u64, // PERF_FLAG_FD_CLOEXEC
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: our own fd.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// What to do when [`uprobes_permitted`] says no.
pub const UPROBES_DENIED_FIX: &str = "this kernel lets only CAP_SYS_ADMIN create uprobes \
     (CAP_BPF + CAP_PERFMON are not enough on stable kernels since mid-2025): run as root, \
     or add SYS_ADMIN to the capabilities (deploy/kubernetes/daemonset.yaml has it)";

fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

pub fn check_host() -> Vec<CheckLine> {
    let mut out = Vec::new();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let version = kernel_version(&release);
    let new_enough = version.is_some_and(|v| v >= MIN_KERNEL);
    out.push(line(
        "kernel",
        new_enough,
        format!("Linux {release}"),
        Some("needs Linux 5.8 or later (BPF ring buffer)"),
    ));
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    out.push(line(
        "btf",
        btf,
        if btf {
            "/sys/kernel/btf/vmlinux present".into()
        } else {
            "/sys/kernel/btf/vmlinux missing".into()
        },
        Some("needs a kernel with CONFIG_DEBUG_INFO_BTF"),
    ));
    let uprobes = Path::new("/sys/bus/event_source/devices/uprobe/type").exists();
    out.push(line(
        "uprobes",
        uprobes,
        if uprobes {
            "uprobe perf events available".into()
        } else {
            "/sys/bus/event_source/devices/uprobe missing".into()
        },
        Some("needs a kernel with CONFIG_UPROBE_EVENTS"),
    ));
    out.push(line(
        "ring buffer",
        new_enough,
        if new_enough {
            "BPF_MAP_TYPE_RINGBUF supported (kernel >= 5.8)".into()
        } else {
            "kernel older than 5.8".into()
        },
        Some("upgrade the kernel to 5.8 or later"),
    ));
    let euid = unsafe { libc::geteuid() };
    let caps = effective_caps().unwrap_or(0);
    let has_caps = caps & (1 << CAP_BPF) != 0 && caps & (1 << CAP_PERFMON) != 0;
    let probes = uprobes_permitted();
    let denied =
        matches!(&probes, Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)));
    out.push(line(
        "privileges",
        (euid == 0 || has_caps) && !denied,
        match (&probes, euid == 0 || has_caps) {
            (Err(e), true) if denied => format!("creating a uprobe was refused ({e})"),
            (_, false) => format!("uid {euid} without CAP_BPF/CAP_PERFMON"),
            (Ok(()), true) => format!(
                "{}; creating uprobes permitted",
                if euid == 0 { "running as root" } else { "CAP_BPF and CAP_PERFMON granted" }
            ),
            (Err(e), true) => format!(
                "{}; uprobe permission not checked ({e})",
                if euid == 0 { "running as root" } else { "CAP_BPF and CAP_PERFMON granted" }
            ),
        },
        Some(if denied {
            UPROBES_DENIED_FIX
        } else {
            "run `sensor run` as root or grant CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN and CAP_SYS_RESOURCE"
        }),
    ));
    let built = super::loader::ebpf_object_embedded();
    out.push(line(
        "ebpf object",
        built,
        if built {
            "embedded in this binary".into()
        } else {
            "not embedded in this binary".into()
        },
        Some("build with `cargo xtask build`"),
    ));
    out.extend(tls_library_lines(Path::new("/proc"), euid == 0).0);
    out
}

/// (device, inode) of every TLS file mapped now that `sensor run` would
/// attach to (its probe sites are found): the processes mapping them are
/// not blind, so `sensor check` does not list them (node, with OpenSSL
/// linked in and its `SSL_*` exported, is seen through those).
pub fn attachable_tls_files(proc_root: &Path) -> std::collections::HashSet<(u64, u64)> {
    tls_library_lines(proc_root, true).1
}

fn tls_library_lines(
    proc_root: &Path,
    root: bool,
) -> (Vec<CheckLine>, std::collections::HashSet<(u64, u64)>) {
    let index = procfs::scan(proc_root, |_| true, &mut procfs::EmbeddedOpenssl::default());
    let mut out = Vec::new();
    let mut attachable = std::collections::HashSet::new();
    for (key, lib) in &index.libraries {
        let detail = match open_library(&lib.open_path)
            .map_err(|e| e.to_string())
            .and_then(|f| plan(&f, ProbeMode::Auto).map_err(|e| e.to_string()))
        {
            Ok(p) => {
                attachable.insert(*key);
                let mut s = format!(
                    "{} ({} processes): {} probes",
                    lib.path,
                    lib.pids.len(),
                    p.mode.as_str()
                );
                if let Some(why) = p.fallback_reason {
                    s.push_str(&format!(" ({why})"));
                }
                if p.single_stepped > 0 {
                    s.push_str(&format!(
                        "; {} entries single-stepped: several µs more per SSL call",
                        p.single_stepped
                    ));
                }
                Ok(s)
            }
            Err(e) => Err(format!("{}: cannot probe: {e}", lib.path)),
        };
        out.push(match detail {
            Ok(d) => line("tls library", true, d, None),
            Err(d) => line(
                "tls library",
                false,
                d,
                Some("the sensor skips this library; its traffic is not seen"),
            ),
        });
    }
    if out.is_empty() {
        let mut detail =
            "no running process maps libssl.so or a program with OpenSSL linked in".to_string();
        if !root {
            detail.push_str(" (only this user's processes are visible without root)");
        }
        out.push(line(
            "tls library",
            false,
            detail,
            Some("start the TLS service; processes started later are picked up by `sensor run`"),
        ));
    }
    (out, attachable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("6.18.44-fc-v782"), Some((6, 18)));
        assert_eq!(kernel_version("5.8.0"), Some((5, 8)));
        assert_eq!(kernel_version("garbage"), None);
        assert!(kernel_version("5.4.0").unwrap() < MIN_KERNEL);
    }

    #[test]
    fn check_host_runs_and_lines_are_single_line() {
        let lines = check_host();
        assert!(lines.iter().any(|l| l.what == "kernel"));
        assert!(lines.iter().any(|l| l.what == "tls library"));
        for l in &lines {
            let s = l.to_string();
            assert!(!s.contains('\n'), "{s}");
            assert_eq!(l.ok, l.fix.is_none(), "{s}");
        }
    }
}
