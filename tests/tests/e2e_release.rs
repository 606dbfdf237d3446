//! End to end: the probes of a library no process maps any more are
//! released (after release::RELEASE_AFTER, 60 s), and the same file mapped
//! again later is attached again and seen.  Before, they stayed attached
//! for the sensor's whole life.  Needs root and a built sensor (~75 s).

use std::process::Command;
use std::time::{Duration, Instant};

use sensor_e2e::proc::run_bounded;
use sensor_e2e::sensor::metric_sum_where;
use sensor_e2e::{delaying_relay, require_root, serial, Sensor, Server, TestCert};

fn curl_with(cert: &TestCert, url: &str, lib_dir: &std::path::Path) -> u32 {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "-o", "/dev/null", "--cacert"])
        .arg(cert.cert())
        .arg(url)
        .env("LD_LIBRARY_PATH", lib_dir);
    let out = run_bounded("curl", &cmd, Duration::from_secs(30)).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.pid
}

#[test]
fn a_library_no_process_maps_is_released_and_attached_again_when_mapped() {
    require_root();
    let _serial = serial();
    let system = std::path::Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3");
    if !system.exists() {
        eprintln!("skipped: no {}", system.display());
        return;
    }
    let cert = TestCert::new().unwrap();
    let server = Server::nginx(&cert, 1).unwrap();
    // Each curl lives ~1 s: every look and scan finds its library.
    let relay = delaying_relay(server.port(), Duration::from_millis(1000));
    let url = format!("https://127.0.0.1:{relay}/");
    let sensor = Sensor::start(&[]).unwrap();
    let lib = tempfile::tempdir().unwrap();
    std::fs::copy(system, lib.path().join("libssl.so.3")).unwrap();
    let copy = lib.path().join("libssl.so.3").display().to_string();
    // Lines of the sensor's log about the copy (other processes of the host
    // come and go meanwhile: the attachment gauge alone would not say).
    let lines = |what: &str| {
        sensor
            .all_output()
            .lines()
            .filter(|l| l.contains(what) && l.contains(&copy))
            .count()
    };
    let first = curl_with(&cert, &url, lib.path());
    sensor
        .wait_for_pairs(
            |p| {
                p.iter()
                    .any(|x| x.role == "client" && x.process.pid == first)
            },
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(lines("attached to "), 1, "the copy is attached");
    // No process maps it now: released after the grace period.
    let t = Instant::now();
    let deadline = t + Duration::from_secs(90);
    while lines("released ") == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    let released_in = t.elapsed();
    assert_eq!(
        lines("released "),
        1,
        "not released within 90 s; stderr:\n{}",
        sensor.stderr_tail()
    );
    assert!(
        released_in >= Duration::from_secs(50),
        "released after {released_in:?}: before its grace period"
    );
    let m = sensor.metrics().unwrap();
    assert!(metric_sum_where(&m, "sensor_tls_released_total", &[]) >= 1.0);
    eprintln!("released {released_in:?} after the last process exited");
    // The same file mapped again: attached again, and seen.
    std::thread::sleep(Duration::from_secs(2));
    let again = curl_with(&cert, &url, lib.path());
    sensor
        .wait_for_pairs(
            |p| {
                p.iter()
                    .any(|x| x.role == "client" && x.process.pid == again)
            },
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(lines("attached to "), 2, "attached again");
}
