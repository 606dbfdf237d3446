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
