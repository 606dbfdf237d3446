//! Tests that need a tool of the host (node, go, libssl-dev): they are
//! skipped where it is missing, except under `SENSOR_REQUIRE_TOOLS=1` (set by
//! `cargo xtask test`, whose setup installs them), where a missing tool fails.

/// `what` is missing: fails under `SENSOR_REQUIRE_TOOLS=1`, else says the
/// test is skipped (the caller returns).
pub(crate) fn tool_missing(what: &str) {
    assert!(
        !std::env::var("SENSOR_REQUIRE_TOOLS").is_ok_and(|v| v == "1"),
        "{what} is required (SENSOR_REQUIRE_TOOLS=1)"
    );
    eprintln!("SKIPPED: {what} not found");
}

/// Log lines written while `f` runs on this thread.
pub(crate) fn with_logs<R>(f: impl FnOnce() -> R) -> (R, String) {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Logs {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let logs = Logs::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let r = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    (r, text)
}
