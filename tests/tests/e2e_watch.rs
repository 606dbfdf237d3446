//! End to end: the real `sensor watch` TUI, in tmux, against a real running
//! sensor while the demo API leaks a key over real TLS.  Asserts the finding
//! appears on screen within a few seconds, that `/` filtering and the detail
//! pane work, that `q` exits 0 with the terminal restored, and that the raw key
//! is never on the screen.  Needs root, tmux and a built sensor.

use std::process::Command;
use std::time::{Duration, Instant};

use sensor_e2e::paths::sensor_bin;
use sensor_e2e::{
    assert_no_secrets, curl, http_get, require_root, serial, Secret, Sensor, Server, TestCert,
};

/// From the leaky request to the row on screen (the contract: a few seconds).
const ON_SCREEN_DEADLINE: Duration = Duration::from_secs(5);
/// Each later step (filter, detail, quit) is a key press away.
const KEY_DEADLINE: Duration = Duration::from_secs(5);

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("tmux is not installed ({e}): run `cargo xtask setup`"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Kills the tmux session even when an assertion fails.
struct Session(String);

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .output();
    }
}

fn wait_for(session: &str, deadline: Duration, pred: impl Fn(&str) -> bool, what: &str) -> String {
    let until = Instant::now() + deadline;
    loop {
        let screen = tmux(&["capture-pane", "-p", "-t", session]);
        if pred(&screen) {
            return screen;
        }
        if Instant::now() > until {
            panic!("timed out after {deadline:?} waiting for {what}; screen:\n{screen}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn watch_shows_a_live_leak_filters_details_and_quits_cleanly() {
    require_root();
    let _serial = serial();
    let cert = TestCert::new().unwrap();
    let server = Server::demo(&cert).unwrap();
    let sensor = Sensor::start(&[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Ready (what Sensor::start waited for) means every route answers: a
    // watch started now must not meet "no stats yet".
    let (status, body) =
        http_get(sensor.api_addr(), "/api/v1/stats", Duration::from_secs(5)).unwrap();
    assert_eq!(status, 200, "{body}");

    let session = Session(format!("sensor-e2e-watch-{}", std::process::id()));
    let cmd = format!(
        "{} watch --api http://{} --log-file {}; echo WATCH-EXITED-$?; sleep 60",
        sensor_bin().unwrap().display(),
        sensor.api_addr(),
        dir.path().join("watch.log").display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session.0,
        "-x",
        "120",
        "-y",
        "32",
        &cmd,
    ]);
    // Connected and empty before the leak: the row cannot be a leftover.
    let screen = wait_for(
        &session.0,
        KEY_DEADLINE,
        |s| s.contains("sensor") && !s.contains("/v1/items"),
        "the connected, empty view",
    );
    assert!(!screen.contains("unreachable"), "{screen}");

    // The leak: a rejected x-api-key quoted back in a 400 JSON error, plus a
    // benign request on another route that must be filtered away.
    let key = Secret::random("sk_live_", 28);
    let leaked_at = Instant::now();
    let resp = curl(
        &cert,
        &server.url("/v1/items?limit=oops"),
        &["-H", &format!("x-api-key: {}", key.expose())],
    )
    .unwrap();
    assert_eq!(resp.status, 400);
    let other = Secret::random("tok_", 24);
    let resp = curl(
        &cert,
        &server.url("/oauth/authorize?state=e2e"),
        &["-H", &format!("authorization: Bearer {}", other.expose())],
    )
    .unwrap();
    assert_eq!(resp.status, 302);

    let screen = wait_for(
        &session.0,
        ON_SCREEN_DEADLINE,
        |s| s.contains("/v1/items") && s.contains("/oauth/authorize"),
        "both leaks on screen",
    );
    println!(
        "leak on screen {} ms after the request:\n{screen}",
        leaked_at.elapsed().as_millis()
    );
    assert!(
        screen.contains("api_key"),
        "credential type shown: {screen}"
    );
    assert!(screen.contains("400"), "status shown: {screen}");
    assert_no_secrets("watch screen", &screen, &[&key, &other]);

    // Filter to the leaking route: only its row remains in the table.
    // Each leak is a server row (the API that leaked) and a client row (curl,
    // which received it): four groups; the filter keeps the server's /v1/items.
    wait_for(
        &session.0,
        ON_SCREEN_DEADLINE,
        |s| s.contains("findings 4/4"),
        "server and client rows of both leaks",
    );
    tmux(&[
        "send-keys",
        "-t",
        &session.0,
        "/",
        "items role:server",
        "Enter",
    ]);
    let screen = wait_for(
        &session.0,
        KEY_DEADLINE,
        |s| s.contains("findings 1/4"),
        "the filter applied",
    );
    assert!(
        screen
            .lines()
            .any(|l| l.contains("srv") && l.contains("/v1/items")),
        "the server row is the one left:\n{screen}"
    );
    assert!(screen.contains("/v1/items"), "{screen}");

    // Detail pane of the selected finding, with what to do about it.
    tmux(&["send-keys", "-t", &session.0, "Enter"]);
    let screen = wait_for(
        &session.0,
        KEY_DEADLINE,
        |s| s.contains("finding detail"),
        "the detail pane",
    );
    println!("detail pane:\n{screen}");
    assert!(
        screen.contains("x-api-key"),
        "credential name shown: {screen}"
    );
    assert_no_secrets("watch screen", &screen, &[&key, &other]);
    tmux(&["send-keys", "-t", &session.0, "Escape"]);
    wait_for(
        &session.0,
        KEY_DEADLINE,
        |s| !s.contains("finding detail"),
        "the detail pane closed",
    );

    // q exits 0 and hands back a restored terminal (the shell's echo is the
    // last thing on the screen, not a TUI frame).
    tmux(&["send-keys", "-t", &session.0, "q"]);
    let screen = wait_for(
        &session.0,
        KEY_DEADLINE,
        |s| s.contains("WATCH-EXITED-"),
        "watch to exit",
    );
    let last = screen
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    assert_eq!(last.trim(), "WATCH-EXITED-0", "{screen}");
    let log = std::fs::read_to_string(dir.path().join("watch.log")).unwrap_or_default();
    assert_no_secrets("watch log", &log, &[&key, &other]);
    drop(sensor);
    drop(server);
}
