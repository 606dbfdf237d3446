//! End to end: `sensor run --record` during the FastAPI leak scenario, then
//! `sensor replay` of that recording gives the same pairs and the same
//! findings, line for line, as the live run; the recording is mode 0600.
//! Needs root and a built sensor.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use sensor_e2e::contract::parse_lines;
use sensor_e2e::paths::sensor_bin;
use sensor_e2e::proc::run_bounded;
use sensor_e2e::scenario::{run_leak_scenario, App};
use sensor_e2e::wait::{SENSOR_LAG, SETTLE};
use sensor_e2e::{require_root, serial, Sensor, Server, TestCert};

/// The JSON lines of a file, each re-serialised (keys sorted), then sorted:
/// the live pipeline emits in arrival order across connections, replay in
/// recorded order; per line both must be the same.
fn canonical(path: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut v: Vec<String> = parse_lines::<serde_json::Value>(&text)
        .expect("one JSON object per line")
        .iter()
        .map(|x| x.to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn replay_of_a_recording_gives_the_live_pairs_and_findings() {
    require_root();
    let _serial = serial();
    let cert = TestCert::new().unwrap();
    let server = Server::fastapi(&cert).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("capture.rec");
    let key = dir.path().join("fingerprint.key");
    let mut sensor = Sensor::start(&[
        "--record",
        rec.to_str().unwrap(),
        "--fingerprint-key-file",
        key.to_str().unwrap(),
    ])
    .unwrap();
    let pids = server.pids();
    let scenario = run_leak_scenario(&server, &cert, App::FastApi).unwrap();
    sensor
        .wait_for_pairs(
            |p| {
                p.iter()
                    .filter(|p| p.role == "server" && pids.contains(&p.process.pid))
                    .count()
                    >= scenario.requests
            },
            SENSOR_LAG,
        )
        .unwrap();
    std::thread::sleep(SETTLE);
    sensor.stop().unwrap();
    let mode = std::fs::metadata(&rec).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the recording holds secrets");

    let replay_findings = dir.path().join("replay-findings.jsonl");
    let replay_pairs = dir.path().join("replay-pairs.jsonl");
    let mut cmd = Command::new(sensor_bin().unwrap());
    cmd.arg("replay")
        .arg(&rec)
        .arg("--findings")
        .arg(&replay_findings)
        .arg("--pairs")
        .arg(&replay_pairs)
        .arg("--fingerprint-key-file")
        .arg(&key);
    let out = run_bounded("sensor-replay", &cmd, Duration::from_secs(60)).unwrap();
    assert!(
        out.status.success(),
        "replay failed: {}",
        sensor_e2e::secrets::redact(&String::from_utf8_lossy(&out.stderr))
    );

    let live_pairs = canonical(sensor.pairs_path());
    let live_findings = canonical(sensor.findings_path());
    assert!(live_pairs.len() >= scenario.requests);
    assert!(!live_findings.is_empty());
    let replayed_pairs = canonical(&replay_pairs);
    let replayed_findings = canonical(&replay_findings);
    assert_eq!(
        replayed_pairs.len(),
        live_pairs.len(),
        "as many pairs replayed as live"
    );
    for (l, r) in live_pairs.iter().zip(&replayed_pairs) {
        assert_eq!(l, r, "pair differs between live and replay");
    }
    assert_eq!(replayed_findings.len(), live_findings.len());
    for (l, r) in live_findings.iter().zip(&replayed_findings) {
        assert_eq!(l, r, "finding differs between live and replay");
    }
    println!(
        "replay: {} pairs and {} findings identical to the live run ({} bytes recorded)",
        live_pairs.len(),
        live_findings.len(),
        std::fs::metadata(&rec).unwrap().len()
    );
}
