//! Errors of `Capture::start`: each one line that says what is wrong and how to fix it.

/// Verifier log lines kept in a load error (the last ones say why).
pub const VERIFIER_TAIL_LINES: usize = 6;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("not enough privileges to load eBPF programs: run as root or grant CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE ({0})")]
    Privileges(String),
    #[error("attaching uprobes is not permitted ({0}): {fix}", fix = super::check::UPROBES_DENIED_FIX)]
    UprobesDenied(std::io::Error),
    #[error("/sys/kernel/btf/vmlinux missing: needs a kernel with CONFIG_DEBUG_INFO_BTF")]
    NoBtf,
    #[error(
        "this sensor binary was built without its eBPF object: build with `cargo xtask build`"
    )]
    NotBuilt,
    #[error(
        "ring buffer size {0} is not a power of two multiple of the page size: pick e.g. 33554432"
    )]
    BadRingBufferSize(u32),
    #[error("eBPF program {program} rejected by the kernel verifier (SENSOR_VERIFIER_LOG=<file> writes the whole log): {tail}")]
    Verifier { program: String, tail: String },
    #[error("loading the eBPF object failed: {0}")]
    Load(String),
    #[error("the eBPF object lacks {0}: rebuild with `cargo xtask build`")]
    MissingObject(String),
}

/// Last non-empty lines of a verifier log, joined with " | ".
pub fn verifier_tail(log: &str) -> String {
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(VERIFIER_TAIL_LINES);
    lines[start..].join(" | ")
}

/// True when an error's text says the kernel refused for lack of privileges.
pub fn is_permission_error(text: &str) -> bool {
    text.contains("Operation not permitted") || text.contains("Permission denied")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_tail_keeps_last_lines() {
        let log = "0: r1 = 0\n\n1: r2 = 1\n2\n3\n4\n5\n6\nR2 min value is negative\n";
        let t = verifier_tail(log);
        assert!(t.ends_with("R2 min value is negative"));
        assert_eq!(t.split(" | ").count(), VERIFIER_TAIL_LINES);
        assert_eq!(verifier_tail(""), "");
    }

    #[test]
    fn messages_are_one_line() {
        for e in [
            CaptureError::Privileges("EPERM".into()),
            CaptureError::NoBtf,
            CaptureError::NotBuilt,
            CaptureError::BadRingBufferSize(3),
            CaptureError::Verifier {
                program: "p".into(),
                tail: verifier_tail("a\nb"),
            },
        ] {
            let s = e.to_string();
            assert!(!s.contains('\n'), "{s}");
        }
    }
}
