//! End to end: short-lived processes are seen.  A curl lives ~15 ms here;
//! under `--comm curl` every one of them is paired (the host's libssl is
//! attached from the start, and a process gone before its events are read is
//! judged by the comm its events carry), and one that brings a libssl of its
//! own (a file no process mapped before) is attached while it runs (its exec
//! is read within 5 ms and looked at at once).  Needs root and a built sensor.

use std::process::Command;
use std::time::Duration;

use sensor_e2e::proc::run_bounded;
use sensor_e2e::wait::SENSOR_LAG;
use sensor_e2e::{delaying_relay, require_root, serial, Sensor, Server, TestCert};

/// Runs one curl to `url` (optionally with `LD_LIBRARY_PATH`); its pid.
fn one_curl(cert: &TestCert, url: &str, lib_dir: Option<&std::path::Path>) -> u32 {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "-o", "/dev/null", "--cacert"])
        .arg(cert.cert())
        .arg(url);
    if let Some(d) = lib_dir {
        cmd.env("LD_LIBRARY_PATH", d);
    }
    let out = run_bounded("curl", &cmd, Duration::from_secs(30)).expect("curl runs");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.pid
}

/// Client pairs the sensor wrote for these pids (waits until all are there
/// or SENSOR_LAG passes), counted per pid.
fn client_pairs_of(sensor: &Sensor, pids: &[u32], timeout: Duration) -> usize {
    let seen = |pairs: &[sensor_e2e::contract::Pair]| {
        pids.iter()
            .filter(|p| {
                pairs
                    .iter()
                    .any(|x| x.role == "client" && x.process.pid == **p)
            })
            .count()
    };
    let pairs = sensor
        .wait_for_pairs(|p| seen(p) == pids.len(), timeout)
        .or_else(|_| sensor.pairs())
        .expect("pairs file");
    seen(&pairs)
}

/// Under `--comm curl`, N serial short-lived curls are all paired.  Before:
/// 0 of 50 (comm_scope_test.sh) — nothing was attached until a curl was found
/// mapping libssl by a look or a rescan, and a curl is over before either —
/// and 23 of 50 when another process in scope kept libssl attached (the
/// curls gone before their events were read were judged out of scope).
#[test]
fn comm_scope_pairs_every_short_lived_curl() {
    require_root();
    let _serial = serial();
    let cert = TestCert::new().unwrap();
    let server = Server::nginx(&cert, 1).unwrap();
    let sensor = Sensor::start(&["--comm", "curl"]).unwrap();
    let url = server.url("/");
    let pids: Vec<u32> = (0..20).map(|_| one_curl(&cert, &url, None)).collect();
    let seen = client_pairs_of(&sensor, &pids, SENSOR_LAG);
    assert_eq!(
        seen,
        pids.len(),
        "curls paired under --comm curl; sensor stderr:\n{}",
        sensor.stderr_tail()
    );
    // And nothing of the server, which is out of scope.
    let pairs = sensor.pairs().unwrap();
    assert!(
        pairs.iter().all(|p| p.process.comm == "curl"),
        "only curl's pairs"
    );
}

/// Each curl brings its own copy of libssl (a file never mapped before, as
/// the first process of a new container image) and sends its request 30 ms
/// after its start: it is attached while it runs and its pair is seen.
/// Before, the first look at a new process came 50–70 ms after its exec,
/// when such a curl (~45 ms) was over: 0 of 10 (and 0 of 20 without the
/// relay, where a curl lasts ~15 ms; 9 of 20 after).
#[test]
fn a_short_lived_process_with_its_own_libssl_is_attached_while_it_runs() {
    require_root();
    let _serial = serial();
    let system = std::path::Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3");
    if !system.exists() {
        eprintln!("skipped: no {}", system.display());
        return;
    }
    let cert = TestCert::new().unwrap();
    let server = Server::nginx(&cert, 1).unwrap();
    let relay = delaying_relay(server.port(), Duration::from_millis(30));
    let sensor = Sensor::start(&[]).unwrap();
    let libs = tempfile::tempdir().unwrap();
    let url = format!("https://127.0.0.1:{relay}/");
    let mut pids = Vec::new();
    for i in 0..10 {
        let dir = libs.path().join(format!("lib{i}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::copy(system, dir.join("libssl.so.3")).unwrap();
        pids.push(one_curl(&cert, &url, Some(&dir)));
        std::thread::sleep(Duration::from_millis(100));
    }
    let seen = client_pairs_of(&sensor, &pids, Duration::from_secs(10));
    let attached = sensor
        .all_output()
        .lines()
        .filter(|l| l.contains("attached to") && l.contains(&libs.path().display().to_string()))
        .count();
    assert!(
        seen >= 8,
        "{seen} of 10 short-lived curls with their own libssl paired ({attached} copies attached); \
         sensor stderr:\n{}",
        sensor.stderr_tail()
    );
}
