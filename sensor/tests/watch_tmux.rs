//! `sensor watch` against a fake live API on loopback: `--once`, `--json`, the
//! unreachable case, and an end-to-end run of the real binary in tmux.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use sensor::outputs::live::FindingsPage;
use sensor::watch::client::ApiClient;
use sensor::watch::fixtures::{finding, stats, varied_findings};

const TOKEN: &str = "test-token-0123456789";

fn authorized(h: &HeaderMap) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

type Params = Query<std::collections::HashMap<String, String>>;

/// Serves canned findings/stats and a stream: one finding, then stats every 300 ms.
async fn fake_api(port: u16, require_token: bool) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let app = Router::new()
        .route(
            "/api/v1/stats",
            get(move |h: HeaderMap| async move {
                if require_token && !authorized(&h) {
                    return Err(StatusCode::UNAUTHORIZED);
                }
                Ok(Json(stats()))
            }),
        )
        .route(
            "/api/v1/findings",
            get(move |h: HeaderMap, q: Params| async move {
                if require_token && !authorized(&h) {
                    return Err(StatusCode::UNAUTHORIZED);
                }
                let since: u64 = q.get("since").and_then(|s| s.parse().ok()).unwrap_or(0);
                let findings = if since == 0 {
                    varied_findings()
                } else {
                    vec![]
                };
                Ok(Json(FindingsPage { next: 7, findings }))
            }),
        )
        .route(
            "/api/v1/stream",
            get(move |h: HeaderMap| async move {
                if require_token && !authorized(&h) {
                    return Err(StatusCode::UNAUTHORIZED);
                }
                let s = futures_util::stream::unfold(0u32, |i| async move {
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    let line = if i == 0 {
                        serde_json::json!({"type": "finding",
                            "finding": finding(100, "/v9/live-leak", "body")})
                    } else {
                        serde_json::json!({"type": "stats", "stats": stats()})
                    };
                    Some((Ok::<_, std::io::Error>(format!("{line}\n")), i + 1))
                });
                Ok(Body::from_stream(s))
            }),
        );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let h = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, h)
}

#[tokio::test]
async fn once_prints_stats_and_grouped_findings() {
    let (addr, server) = fake_api(22011, true).await;
    let client = ApiClient::new(&format!("http://{addr}"), Some(TOKEN.into()));
    let text = sensor::watch::once(&client).await.unwrap();
    assert!(text.contains("sensor 0.1.0 on node-a"), "{text}");
    assert!(text.contains("findings: 5 groups"), "{text}");
    assert!(
        text.contains("GET /v1/items 400") && text.contains("x3"),
        "{text}"
    );
    assert!(!text.contains(TOKEN));
    // Without the token the API refuses, and --once says so.
    let anon = ApiClient::new(&format!("http://{addr}"), None);
    let err = sensor::watch::once(&anon).await.unwrap_err().to_string();
    assert!(err.contains("HTTP 401"), "{err}");
    server.abort();
}

#[tokio::test]
async fn json_streams_findings_as_lines() {
    let (addr, server) = fake_api(22012, false).await;
    let client = ApiClient::new(&format!("http://{addr}"), None);
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        sensor::watch::json(&client, &mut out),
    )
    .await;
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 8, "7 backfilled + 1 streamed: {text}");
    assert_eq!(lines[7]["request"]["path"], "/v9/live-leak");
    assert!(lines.iter().all(|l| l["schema"] == "sensor.finding.v1"));
    server.abort();
}

#[test]
fn once_unreachable_exits_nonzero_with_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_sensor"))
        .args([
            "watch",
            "--once",
            "--api",
            "http://127.0.0.1:22019",
            "--log-file",
            "/tmp/watch-test-unreach.log",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("sensor at http://127.0.0.1:22019 unreachable: connection refused"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_for(session: &str, pred: impl Fn(&str) -> bool, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let screen = tmux(&["capture-pane", "-p", "-t", session]);
        if pred(&screen) {
            return screen;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}; screen:\n{screen}");
        }
        std::thread::sleep(Duration::from_millis(150));
    }
}

#[test]
fn tui_end_to_end_in_tmux() {
    if Command::new("tmux").arg("-V").output().is_err() {
        assert!(
            std::env::var("SENSOR_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "tmux is required (SENSOR_REQUIRE_TOOLS=1): run `cargo xtask setup`"
        );
        eprintln!("tmux not installed; skipping");
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (addr, server) = rt.block_on(fake_api(22013, false));
    let session = format!("watch-e2e-{}", std::process::id());
    let cmd = format!(
        "{} watch --api http://{addr} --log-file /tmp/watch-e2e.log; echo WATCH-EXITED-$?; sleep 30",
        env!("CARGO_BIN_EXE_sensor")
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "100",
        "-y",
        "30",
        &cmd,
    ]);
    let screen = wait_for(
        &session,
        |s| s.contains("/v9/live-leak") && s.contains("/v1/items"),
        "findings",
    );
    println!("{screen}");
    tmux(&["send-keys", "-t", &session, "/", "v9", "Enter"]);
    let screen = wait_for(&session, |s| s.contains("findings 1/6"), "filter");
    // Only the live-leak row is left (the top-routes panel stays unfiltered).
    assert_eq!(
        screen.lines().filter(|l| l.contains("api_key")).count(),
        1,
        "{screen}"
    );
    tmux(&["send-keys", "-t", &session, "Enter"]);
    let screen = wait_for(&session, |s| s.contains("finding detail"), "detail pane");
    println!("{screen}");
    assert!(screen.contains("3f9a0c1b2d4e5f60"));
    tmux(&["send-keys", "-t", &session, "Escape"]);
    wait_for(&session, |s| !s.contains("finding detail"), "detail closed");
    tmux(&["send-keys", "-t", &session, "q"]);
    let screen = wait_for(&session, |s| s.contains("WATCH-EXITED-0"), "exit");
    // Exit code 0, and the shell's output lands on a restored terminal after the TUI.
    let last = screen
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    assert_eq!(last.trim(), "WATCH-EXITED-0", "{screen}");
    tmux(&["kill-session", "-t", &session]);
    server.abort();
}
