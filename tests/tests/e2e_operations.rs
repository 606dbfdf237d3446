//! End to end, what operators do around a running sensor: replay a
//! recording with the node's config and key (the same findings and
//! fingerprints as live), and rotate the output files the logrotate way
//! (rename, then SIGHUP: the sensor writes to new files).  Needs root and a
//! built sensor.

use std::process::Command;
use std::time::Duration;

use sensor_e2e::contract::parse_lines;
use sensor_e2e::paths::sensor_bin;
use sensor_e2e::proc::run_bounded;
use sensor_e2e::wait::{SENSOR_LAG, SETTLE};
use sensor_e2e::{assert_no_secrets, curl, require_root, serial, Secret, Sensor, Server, TestCert};

/// A header only the config's `[leak]` list makes a credential.
const CUSTOM_HEADER: &str = "x-partner-credential";

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

fn leak(cert: &TestCert, server: &Server, header: &str, key: &Secret) {
    let resp = curl(
        cert,
        &server.url("/debug"),
        &["-H", &format!("{header}: {}", key.expose())],
    )
    .unwrap();
    assert_eq!(resp.status, 200);
}

/// `sensor replay --config` with the node's config: its leak rules (a
/// custom credential header), limits and fingerprint key (from its
/// state_dir) give the live run's findings, fingerprints included.  A key
/// that is not there is an error that says what to do, not a new key.
#[test]
fn replay_with_the_node_config_gives_the_live_findings_and_fingerprints() {
    require_root();
    let _serial = serial();
    let cert = TestCert::new().unwrap();
    let server = Server::demo(&cert).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sensor.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\nmax_body_bytes = 65536\n\
             [leak]\nheaders = [\"x-api-key\", \"{CUSTOM_HEADER}\"]\n"
        ),
    )
    .unwrap();
    let rec = dir.path().join("capture.rec");
    let mut sensor = Sensor::start(&[
        "--config",
        config.to_str().unwrap(),
        "--record",
        rec.to_str().unwrap(),
    ])
    .unwrap();
    let custom = Secret::random("pc_", 32);
    let api_key = Secret::random("sk_live_", 32);
    leak(&cert, &server, CUSTOM_HEADER, &custom);
    leak(&cert, &server, "x-api-key", &api_key);
    let pids = server.pids();
    sensor
        .wait_for_findings(
            |f| {
                f.iter()
                    .filter(|f| f.role == "server" && pids.contains(&f.process.pid))
                    .count()
                    >= 2
            },
            SENSOR_LAG,
        )
        .unwrap();
    std::thread::sleep(SETTLE);
    sensor.stop().unwrap();
    let live = canonical(sensor.findings_path());
    assert!(
        live.iter().any(|l| l.contains(CUSTOM_HEADER)),
        "the config's header is a credential live"
    );

    let replayed = dir.path().join("replay.jsonl");
    let mut cmd = Command::new(sensor_bin().unwrap());
    cmd.arg("replay")
        .arg(&rec)
        .arg("--config")
        .arg(&config)
        .arg("--findings")
        .arg(&replayed)
        .env_remove("SENSOR_CONFIG");
    let out = run_bounded("sensor-replay", &cmd, Duration::from_secs(60)).unwrap();
    assert!(
        out.status.success(),
        "replay failed: {}",
        sensor_e2e::secrets::redact(&String::from_utf8_lossy(&out.stderr))
    );
    let replay = canonical(&replayed);
    assert_eq!(replay.len(), live.len());
    for (l, r) in live.iter().zip(&replay) {
        assert_eq!(l, r, "finding differs between live and replay");
    }
    let fingerprints = |lines: &[String]| {
        let mut v: Vec<String> = lines
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["credential"]["fingerprint"].as_str().unwrap().to_string()
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(fingerprints(&live), fingerprints(&replay));
    println!(
        "replay with --config: {} findings, fingerprints equal to live",
        replay.len()
    );

    // Another state dir has no key: one line that says what to do, and no
    // key is made.
    let elsewhere = dir.path().join("elsewhere");
    let mut cmd = Command::new(sensor_bin().unwrap());
    cmd.arg("replay")
        .arg(&rec)
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(&elsewhere)
        .arg("--findings")
        .arg(dir.path().join("none.jsonl"))
        .env_remove("SENSOR_CONFIG");
    let out = run_bounded("sensor-replay", &cmd, Duration::from_secs(60)).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a missing key is an error");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--create-fingerprint-key"), "{stderr}");
    assert!(!elsewhere.join("fingerprint.key").exists());
    assert_no_secrets(
        "sensor output",
        &format!(
            "{}{}",
            sensor.all_output(),
            std::fs::read_to_string(&replayed).unwrap()
        ),
        &[&custom, &api_key],
    );
}

/// logrotate's `postrotate` recipe: rename the findings and pairs files,
/// SIGHUP.  The sensor writes what comes next to new files at the paths
/// (it wrote to the renamed ones forever); what was written before stays
/// in the renamed ones.
#[test]
fn sighup_after_a_rename_writes_findings_and_pairs_to_new_files() {
    require_root();
    let _serial = serial();
    let cert = TestCert::new().unwrap();
    let server = Server::demo(&cert).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut sensor = Sensor::start(&["--state-dir", state.to_str().unwrap()]).unwrap();
    let pids = server.pids();
    let ours = |f: &[sensor_e2e::Finding]| {
        f.iter()
            .filter(|f| f.role == "server" && pids.contains(&f.process.pid))
            .count()
    };
    let before = Secret::random("sk_live_", 32);
    leak(&cert, &server, "x-api-key", &before);
    sensor
        .wait_for_findings(|f| ours(f) >= 1, SENSOR_LAG)
        .unwrap();
    std::thread::sleep(SETTLE);
    let rotated_findings = dir.path().join("findings.jsonl.1");
    let rotated_pairs = dir.path().join("pairs.jsonl.1");
    std::fs::rename(sensor.findings_path(), &rotated_findings).unwrap();
    std::fs::rename(sensor.pairs_path(), &rotated_pairs).unwrap();
    sensor.signal(libc::SIGHUP).unwrap();
    let deadline = std::time::Instant::now() + SENSOR_LAG;
    while sensor.stderr().matches("reopened").count() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no reopen after SIGHUP:\n{}",
            sensor.stderr_tail()
        );
        leak(&cert, &server, "x-api-key", &Secret::random("sk_live_", 32));
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = Secret::random("sk_live_", 32);
    leak(&cert, &server, "x-api-key", &after);
    sensor
        .wait_for_findings(|f| ours(f) >= 1, SENSOR_LAG)
        .unwrap();
    std::thread::sleep(SETTLE);
    sensor.stop().unwrap();
    let rotated = std::fs::read_to_string(&rotated_findings).unwrap();
    let rotated_count = parse_lines::<sensor_e2e::Finding>(&rotated).unwrap().len();
    assert!(rotated_count >= 1, "the findings before the rotation stay");
    assert!(!sensor.findings().unwrap().is_empty(), "new findings file");
    assert!(!sensor.pairs().unwrap().is_empty(), "new pairs file");
    assert!(
        no_reopen_failure_logged(&sensor),
        "no reopen failure counted"
    );
    assert_no_secrets(
        "sensor output",
        &format!("{}{rotated}", sensor.all_output()),
        &[&before, &after],
    );
}

fn no_reopen_failure_logged(sensor: &Sensor) -> bool {
    !sensor.stderr().contains("cannot reopen")
}

/// `--record` into a destination that takes nothing (a FIFO whose reader
/// never reads): capture goes on (the event loop used to block in the
/// recording's write once the pipe was full, and no finding came out
/// again); the recording's drops are counted under output="record".
#[test]
fn a_blocked_record_destination_does_not_stall_capture() {
    require_root();
    let _serial = serial();
    let cert = TestCert::new().unwrap();
    let server = Server::demo(&cert).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("capture.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // A reader that never reads (so the sensor's open does not wait).
    use std::os::unix::fs::OpenOptionsExt;
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let state = dir.path().join("state");
    let sensor = Sensor::start(&[
        "--state-dir",
        state.to_str().unwrap(),
        "--record",
        fifo.to_str().unwrap(),
    ])
    .unwrap();
    // 4 MB of request bodies (the demo API takes 1 MiB at most), seen on
    // both sides: far more than the pipe and any buffer hold.
    let body = dir.path().join("body");
    std::fs::write(&body, vec![b'a'; 512 << 10]).unwrap();
    for _ in 0..8 {
        let resp = curl(
            &cert,
            &server.url("/v1/items"),
            &["--data-binary", &format!("@{}", body.display())],
        )
        .unwrap();
        assert_eq!(resp.status, 200);
    }
    let pids = server.pids();
    let key = Secret::random("sk_live_", 32);
    leak(&cert, &server, "x-api-key", &key);
    sensor
        .wait_for_findings(
            |f| {
                f.iter()
                    .any(|f| f.role == "server" && pids.contains(&f.process.pid))
            },
            SENSOR_LAG,
        )
        .expect("capture goes on while the recording is blocked");
    let metrics = sensor.metrics().unwrap();
    assert!(
        metrics.contains("sensor_output_dropped_total{output=\"record\"}"),
        "the record drops series is there"
    );
    assert_no_secrets("sensor output", &sensor.all_output(), &[&key]);
}
