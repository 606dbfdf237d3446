//! `sensor watch` without a terminal (`sensor watch </dev/null >out`,
//! `kubectl exec` without `-t`): one line saying what to do, exit code 2, no
//! panic; `--once` and `--json` need no terminal.  No sensor runs: the API
//! address is a closed port, and the TUI's check comes before connecting.

use std::process::{Command, Output, Stdio};

/// A port nothing listens on (connecting is refused at once).
const CLOSED_API: &str = "http://127.0.0.1:1";

fn watch(extra: &[&str]) -> (Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out");
    let out_file = std::fs::File::create(&out_path).unwrap();
    let log = dir.path().join("watch.log");
    let output = Command::new(env!("CARGO_BIN_EXE_sensor"))
        .arg("watch")
        .args(["--api", CLOSED_API])
        .arg("--log-file")
        .arg(&log)
        .args(extra)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(out_file)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stdout = std::fs::read_to_string(&out_path).unwrap();
    (output, stdout)
}

#[test]
fn tui_without_a_terminal_says_so_and_exits_2() {
    let (out, stdout) = watch(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "a panic: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("needs a terminal"), "{stderr}");
    assert!(stderr.contains("--json"), "names the way out: {stderr}");
    assert!(stdout.is_empty(), "nothing drawn into the file: {stdout:?}");
}

#[test]
fn once_and_json_need_no_terminal() {
    for mode in ["--once", "--json"] {
        let (out, _) = watch(&[mode]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // They get past the check and fail only on the closed port.
        assert!(!stderr.contains("needs a terminal"), "{mode}: {stderr}");
        assert!(!stderr.contains("panicked"), "{mode}: {stderr}");
        assert!(stderr.contains("unreachable"), "{mode}: {stderr}");
        assert_eq!(out.status.code(), Some(1), "{mode}: {stderr}");
    }
}
