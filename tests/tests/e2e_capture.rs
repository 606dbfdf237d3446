//! End to end: what the sensor reassembles from real TLS traffic, checked
//! through `--pairs` (method, path, status, byte-exact body lengths,
//! connection attribution) and the loss counters.  Needs root and a built
//! sensor.

use std::collections::{BTreeMap, BTreeSet};

use sensor_e2e::client::PyClient;
use sensor_e2e::contract::Pair;
use sensor_e2e::paths::{venv_bin, wheel_set_pythonpath};
use sensor_e2e::proc::run_bounded;
use sensor_e2e::server::{NGINX_LARGE_FILE, NGINX_SMALL_FILE};
use sensor_e2e::wait::{SENSOR_LAG, SETTLE};
use sensor_e2e::{
    assert_no_secrets, check_findings, curl, curl_keepalive, findings_of, http_get, require_root,
    separate_root, serial, ExpectedFinding, Secret, Sensor, Server, TestCert,
};

const MIB: u64 = 1 << 20;

fn pairs_of(pairs: &[Pair], role: &str, pids: &[u32]) -> Vec<Pair> {
    pairs
        .iter()
        .filter(|p| p.role == role && pids.contains(&p.process.pid))
        .cloned()
        .collect()
}

fn wait_server_pairs(sensor: &Sensor, pids: &[u32], n: usize) -> Vec<Pair> {
    sensor
        .wait_for_pairs(|p| pairs_of(p, "server", pids).len() >= n, SENSOR_LAG)
        .unwrap();
    std::thread::sleep(SETTLE);
    pairs_of(&sensor.pairs().unwrap(), "server", pids)
}

fn assert_no_loss(sensor: &Sensor) {
    assert_eq!(
        sensor
            .metric_sum("sensor_capture_lost_events_total")
            .unwrap(),
        0.0,
        "lost events"
    );
    assert_eq!(
        sensor
            .metric_sum("sensor_capture_truncated_bytes_total")
            .unwrap(),
        0.0,
        "truncated bytes"
    );
}

/// The server findings of `pids`: exactly `n`, each the `x-api-key` `key`
/// leaked by `GET <path>` answered `status`.
fn assert_api_key_leaks(
    sensor: &Sensor,
    pids: &[u32],
    key: &Secret,
    (path, status): (&str, u16),
    n: usize,
) -> Vec<sensor_e2e::Finding> {
    let expected = [ExpectedFinding::new(key, "header", "x-api-key")
        .kind("api_key")
        .request("GET", path, status)];
    let findings = findings_of(&sensor.findings().unwrap(), "server", pids);
    assert_eq!(findings.len(), n);
    for f in &findings {
        check_findings(std::slice::from_ref(f), &expected, "server").unwrap();
    }
    findings
}

/// Pairs of one connection, in order, numbered 1..n.
fn assert_one_connection(pairs: &[Pair]) {
    let conn = &pairs[0].connection.id;
    for (i, p) in pairs.iter().enumerate() {
        assert_eq!(&p.connection.id, conn, "pair {i} on another connection");
        assert_eq!(p.connection.seq, Some(i as u64 + 1), "pair {i} sequence");
    }
}

/// `pairs` are the `GET /v1/items` of one connection, in order, each with
/// the (status, body length) its client got.
fn assert_item_pairs(pairs: &[Pair], responses: &[(u16, u64)], who: &str) {
    assert_eq!(pairs.len(), responses.len(), "{who}");
    assert_one_connection(pairs);
    for (p, &(status, body_len)) in pairs.iter().zip(responses) {
        assert_eq!(
            (p.request.method.as_str(), p.path_only(), p.response.status),
            ("GET", "/v1/items", status),
            "{who}"
        );
        assert_eq!(p.response.body_len, body_len, "{who}");
    }
}

#[test]
fn nginx_keep_alive_pairs_are_exact() {
    require_root();
    let _serial = serial();
    let cert = TestCert::new().unwrap();
    let server = Server::nginx(&cert, 1).unwrap();
    let mut sensor = Sensor::start(&[]).unwrap();
    let pids = server.pids();

    const N: usize = 12;
    let files: Vec<(&str, usize)> = (0..N)
        .map(|i| {
            if i % 3 == 2 {
                NGINX_LARGE_FILE
            } else {
                NGINX_SMALL_FILE
            }
        })
        .collect();
    let urls: Vec<String> = files.iter().map(|(p, _)| server.url(p)).collect();
    let key = Secret::random("ak_", 30);
    let (curl_pid, results) =
        curl_keepalive(&cert, &urls, &[&format!("x-api-key: {}", key.expose())]).unwrap();

    let pairs = wait_server_pairs(&sensor, &pids, N);
    assert_eq!(pairs.len(), N);
    assert_one_connection(&pairs);
    for (i, p) in pairs.iter().enumerate() {
        assert_eq!(p.schema, "sensor.pair.v1");
        assert_eq!(
            (p.request.method.as_str(), p.path_only()),
            ("GET", files[i].0)
        );
        assert_eq!(p.request.version, "HTTP/1.1");
        assert_eq!(p.request.body_len, 0);
        assert_eq!(p.response.status, 200);
        assert_eq!(p.response.body_len, files[i].1 as u64);
        assert_eq!(p.response.body_len, results[i].1);
        assert!(!p.request.body_truncated && !p.response.body_truncated);
        assert_eq!(p.request_header("x-api-key"), Some("<redacted>"));
    }
    // The same exchanges seen from curl's side.
    let client = pairs_of(&sensor.pairs().unwrap(), "client", &[curl_pid]);
    assert_eq!(client.len(), N);
    assert_one_connection(&client);
    assert!(client
        .iter()
        .zip(&files)
        .all(|(p, f)| p.response.body_len == f.1 as u64));
    assert_no_loss(&sensor);
    assert!(findings_of(&sensor.findings().unwrap(), "server", &pids).is_empty());
    assert_no_secrets("sensor output", &sensor.all_output(), &[&key]);
    sensor.stop().unwrap();
}

#[test]
fn python_keep_alive_pairs_are_exact() {
    require_root();
    let _serial = serial();
    let cert = TestCert::new().unwrap();
    let server = Server::fastapi(&cert).unwrap();
    let mut sensor = Sensor::start(&[]).unwrap();
    let pids = server.pids();
    let key = Secret::random("ak_", 30);

    for lib in ["http.client", "httpx"] {
        let before = pairs_of(&sensor.pairs().unwrap(), "server", &pids).len();
        let (_, results) = PyClient::run(
            &cert,
            server.port(),
            lib,
            &[
                "keepalive",
                "--n",
                "12",
                "--path",
                "/v1/etag",
                "-H",
                &format!("x-api-key: {}", key.expose()),
            ],
        )
        .unwrap();
        assert!(
            results
                .iter()
                .all(|r| r.local_port == results[0].local_port),
            "{lib}: one connection"
        );
        let pairs = wait_server_pairs(&sensor, &pids, before + 12);
        let pairs = &pairs[before..];
        assert_eq!(pairs.len(), 12, "{lib}");
        assert_one_connection(pairs);
        for (p, r) in pairs.iter().zip(&results) {
            assert_eq!(
                (p.request.method.as_str(), p.path_only(), p.response.status),
                ("GET", "/v1/etag", 200)
            );
            assert_eq!(p.response.body_len, r.body_len);
            assert_eq!(
                p.request_header("x-api-key"),
                Some("<redacted>"),
                "credential headers are redacted"
            );
        }
    }
    assert_no_secrets("sensor output", &sensor.all_output(), &[&key]);
    sensor.stop().unwrap();
}

/// Uploads `n` 1 MiB bodies to `/v1/upload`, then downloads `n` from
/// `/v1/large` (http.client, one connection each), checking what the client saw.
fn one_mib_each_way(cert: &TestCert, port: u16, n: usize) {
    let n = n.to_string();
    let (_, up) = PyClient::run(
        cert,
        port,
        "http.client",
        &["upload", "--size", &MIB.to_string(), "--n", &n],
    )
    .unwrap();
    assert!(up.iter().all(|r| r.status == 200));
    let (_, down) = PyClient::run(
        cert,
        port,
        "http.client",
        &["keepalive", "--n", &n, "--path", "/v1/large"],
    )
    .unwrap();
    assert!(down.iter().all(|r| r.body_len == MIB));
}

/// The server pairs of [`one_mib_each_way`]: `n` complete 1 MiB uploads and
/// `n` complete 1 MiB downloads.
fn assert_one_mib_pairs(pairs: &[Pair], n: usize) {
    let uploads: Vec<&Pair> = pairs
        .iter()
        .filter(|p| p.request.method == "POST")
        .collect();
    let downloads: Vec<&Pair> = pairs.iter().filter(|p| p.request.method == "GET").collect();
    assert_eq!((uploads.len(), downloads.len()), (n, n));
    for p in uploads {
        assert_eq!(p.path_only(), "/v1/upload");
        assert_eq!(p.request.body_len, MIB);
        assert!(
            !p.request.body_truncated,
            "1 MiB request body must be complete"
        );
        assert_eq!(p.response.status, 200);
    }
    for p in downloads {
        assert_eq!(p.path_only(), "/v1/large");
        assert_eq!(p.response.body_len, MIB);
        assert!(
            !p.response.body_truncated,
            "1 MiB response body must be complete"
        );
    }
}

#[test]
fn one_mib_bodies_are_byte_exact() {
    require_root();
    let _serial = serial();
    let cert = TestCert::new().unwrap();
    let server = Server::fastapi(&cert).unwrap();
    let mut sensor = Sensor::start(&[]).unwrap();
    let pids = server.pids();

    one_mib_each_way(&cert, server.port(), 2);
    let pairs = wait_server_pairs(&sensor, &pids, 4);
    assert_eq!(pairs.len(), 4);
    assert_one_mib_pairs(&pairs, 2);
    assert_no_loss(&sensor);
    sensor.stop().unwrap();
}

#[test]
fn chunked_responses_are_decoded() {
    require_root();
    let _serial = serial();
    let cert = TestCert::new().unwrap();
    let fastapi = Server::fastapi(&cert).unwrap();
    let flask = Server::flask(&cert).unwrap();
    let mut sensor = Sensor::start(&[]).unwrap();

    let key = Secret::random("ak_", 30);
    for server in [&fastapi, &flask] {
        let pids = server.pids();
        let r = curl(
            &cert,
            &server.url("/v1/stream/plain"),
            &["-H", &format!("x-api-key: {}", key.expose())],
        )
        .unwrap();
        assert!(r
            .header("transfer-encoding")
            .is_some_and(|v| v.contains("chunked")));
        assert_eq!(r.body.len(), 25 * 8192);
        let pairs = wait_server_pairs(&sensor, &pids, 1);
        assert_eq!(pairs.len(), 1, "{}", server.name());
        let p = &pairs[0];
        assert_eq!(
            (p.path_only(), p.response.status),
            ("/v1/stream/plain", 200)
        );
        assert_eq!(
            p.response.body_len,
            25 * 8192,
            "{}: decoded length, without chunk framing",
            server.name()
        );
        assert!(!p.response.body_truncated);
        assert!(findings_of(&sensor.findings().unwrap(), "server", &pids).is_empty());
    }
    assert_no_loss(&sensor);
    assert_no_secrets("sensor output", &sensor.all_output(), &[&key]);
    sensor.stop().unwrap();
}

#[test]
fn twenty_concurrent_connections_are_attributed() {
    require_root();
    let _serial = serial();
    let cert = TestCert::new().unwrap();
    let server = Server::fastapi(&cert).unwrap();
    let mut sensor = Sensor::start(&[]).unwrap();
    let pids = server.pids();

    const THREADS: usize = 20;
    const PER_THREAD: usize = 3;
    // Key length differs per thread: a finding's credential length names its thread.
    let keys: Vec<Secret> = (0..THREADS)
        .map(|t| Secret::random("kc_", 20 + t))
        .collect();
    let keys_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        keys_file.path(),
        keys.iter()
            .map(|k| format!("{}\n", k.expose()))
            .collect::<String>(),
    )
    .unwrap();
    let (client_pid, results) = PyClient::run(
        &cert,
        server.port(),
        "http.client",
        &[
            "concurrent",
            "--threads",
            &THREADS.to_string(),
            "--per-thread",
            &PER_THREAD.to_string(),
            "--keys-file",
            keys_file.path().to_str().unwrap(),
            "--path",
            "/v1/items/t{t}-{i}",
        ],
    )
    .unwrap();
    assert_eq!(results.len(), THREADS * PER_THREAD);

    let pairs = wait_server_pairs(&sensor, &pids, THREADS * PER_THREAD);
    assert_eq!(pairs.len(), THREADS * PER_THREAD);
    // Group by connection: each connection carries exactly one thread's requests, in order.
    let mut by_conn: BTreeMap<String, Vec<&Pair>> = BTreeMap::new();
    for p in &pairs {
        by_conn.entry(p.connection.id.clone()).or_default().push(p);
    }
    assert_eq!(by_conn.len(), THREADS, "one connection per client thread");
    let mut conn_of_thread = BTreeMap::new();
    for (conn, ps) in &by_conn {
        let mut ps = ps.clone();
        ps.sort_by_key(|p| p.connection.seq);
        let thread = ps[0]
            .path_only()
            .trim_start_matches("/v1/items/t")
            .split('-')
            .next()
            .unwrap()
            .to_string();
        for (i, p) in ps.iter().enumerate() {
            assert_eq!(
                p.path_only(),
                format!("/v1/items/t{thread}-{i}"),
                "connection {conn} mixes requests"
            );
            assert_eq!(p.connection.seq, Some(i as u64 + 1));
            assert_eq!(p.response.status, 401);
        }
        conn_of_thread.insert(thread.parse::<usize>().unwrap(), conn.clone());
    }

    let expected: Vec<ExpectedFinding> = (0..THREADS)
        .flat_map(|t| (0..PER_THREAD).map(move |i| (t, i)))
        .map(|(t, i)| {
            ExpectedFinding::new(&keys[t], "header", "x-api-key")
                .kind("api_key")
                .request("GET", &format!("/v1/items/t{t}-{i}"), 401)
        })
        .collect();
    let findings = sensor.findings().unwrap();
    let server_findings = findings_of(&findings, "server", &pids);
    check_findings(&server_findings, &expected, "server").unwrap();
    for f in &server_findings {
        let t: usize = f
            .path_only()
            .trim_start_matches("/v1/items/t")
            .split('-')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            f.connection.id, conn_of_thread[&t],
            "finding of thread {t} on the wrong connection"
        );
    }
    check_findings(
        &findings_of(&findings, "client", &[client_pid]),
        &expected,
        "client",
    )
    .unwrap();
    let distinct: BTreeSet<&str> = server_findings
        .iter()
        .map(|f| f.credential.fingerprint.as_str())
        .collect();
    assert_eq!(distinct.len(), THREADS);

    let secrets: Vec<&Secret> = keys.iter().collect();
    assert_no_secrets("sensor output", &sensor.all_output(), &secrets);
    assert_no_loss(&sensor);
    sensor.stop().unwrap();
}

#[test]
fn servers_started_after_the_sensor_are_captured() {
    require_root();
    let _serial = serial();
    let cert = TestCert::new().unwrap();
    let mut sensor = Sensor::start(&[]).unwrap();
    let demo = Server::demo(&cert).unwrap();
    let nginx = Server::nginx(&cert, 1).unwrap();

    let key = Secret::random("ak_", 30);
    let urls: Vec<String> = (0..3).map(|_| demo.url("/v1/items")).collect();
    curl_keepalive(&cert, &urls, &[&format!("x-api-key: {}", key.expose())]).unwrap();
    let pairs = wait_server_pairs(&sensor, &demo.pids(), 3);
    assert_eq!(pairs.len(), 3);
    assert_one_connection(&pairs);
    assert!(pairs
        .iter()
        .all(|p| p.path_only() == "/v1/items" && p.response.status == 400));
    // Three requests, three findings (one per response), each as expected.
    let findings = assert_api_key_leaks(&sensor, &demo.pids(), &key, ("/v1/items", 400), 3);
    assert!(findings
        .iter()
        .all(|f| f.credential.fingerprint == findings[0].credential.fingerprint));

    let urls: Vec<String> = (0..4).map(|_| nginx.url(NGINX_SMALL_FILE.0)).collect();
    curl_keepalive(&cert, &urls, &[]).unwrap();
    let pairs = wait_server_pairs(&sensor, &nginx.pids(), 4);
    assert_eq!(pairs.len(), 4);
    assert!(pairs
        .iter()
        .all(|p| p.response.body_len == NGINX_SMALL_FILE.1 as u64));

    assert_no_secrets("sensor output", &sensor.all_output(), &[&key]);
    sensor.stop().unwrap();
}

/// Servers in a separate root filesystem (their own copy of libssl, as in a
/// container): one running before the sensor starts, one started after.
#[test]
fn separate_root_servers_are_captured() {
    require_root();
    let _serial = serial();
    let cert = TestCert::new().unwrap();
    let before = separate_root(&cert).unwrap();
    let mut sensor = Sensor::start(&[]).unwrap();
    let after = separate_root(&cert).unwrap();

    let mut secrets = Vec::new();
    for server in [&before, &after] {
        let key = Secret::random("ak_", 30);
        let pids = server.pids();
        let r = curl(
            &cert,
            &server.url("/v1/items"),
            &["-H", &format!("x-api-key: {}", key.expose())],
        )
        .unwrap();
        assert_eq!(r.status, 400);
        let pairs = wait_server_pairs(&sensor, &pids, 1);
        assert_eq!(pairs.len(), 1, "{:?}", server.dir());
        assert_eq!(
            (pairs[0].path_only(), pairs[0].response.status),
            ("/v1/items", 400)
        );
        assert_eq!(pairs[0].response.body_len, r.body.len() as u64);
        let expected = [ExpectedFinding::new(&key, "header", "x-api-key")
            .kind("api_key")
            .request("GET", "/v1/items", 400)];
        check_findings(
            &findings_of(&sensor.findings().unwrap(), "server", &pids),
            &expected,
            "server",
        )
        .unwrap();
        secrets.push(key);
    }
    let secrets: Vec<&Secret> = secrets.iter().collect();
    assert_no_secrets("sensor output", &sensor.all_output(), &secrets);
    sensor.stop().unwrap();
}

/// Waits until the sensor lists a TLS library whose path contains `part`,
/// and returns its probe mode.
/// OpenSSL ≥ 3.3 under exported probes (`--probe-mode exported`, as when
/// a build's internal sites are not recognised): `SSL_write_ex2` is probed
/// in place of `SSL_write_ex`, which only jumps to it there.  A client that
/// calls `SSL_write_ex2` itself (tests/apps/ssl_write_ex2_client.c, through
/// Debian 13's loader) is seen; uvicorn's `SSL_write_ex` calls are seen
/// once each, byte-exact.  With `SSL_write_ex` probed instead, the client's
/// requests were missed.
#[test]
fn exported_probes_see_ssl_write_ex2_callers_on_openssl_3_5() {
    require_root();
    let _serial = serial();
    let cert = TestCert::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client_bin = dir.path().join("ssl_write_ex2_client");
    let built = std::process::Command::new("cc")
        .args(["-O1", "-Wall", "-Werror", "-o"])
        .arg(&client_bin)
        .arg(sensor_e2e::paths::apps_dir().join("ssl_write_ex2_client.c"))
        .args(["-lssl", "-lcrypto", "-ldl"])
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let mut sensor = Sensor::start(&["--probe-mode", "exported"]).unwrap();
    let server = Server::fastapi_on_debian13(&cert).unwrap();
    let pids = server.pids();
    assert_eq!(wait_attached_mode(&sensor, ".tools/debian13/"), "exported");

    let key = Secret::random("ak_", 30);
    let client = sensor_e2e::paths::debian13_command(&client_bin)
        .unwrap()
        .args(["127.0.0.1", &server.port().to_string(), "/v1/items"])
        .arg(key.expose())
        .arg("3")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let client_pid = client.id();
    let out = client.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let responses: Vec<(u16, u64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (status, len) = l.split_once(' ').unwrap();
            (status.parse().unwrap(), len.parse().unwrap())
        })
        .collect();
    assert_eq!(responses.len(), 3);
    one_mib_each_way(&cert, server.port(), 1);

    let server_pairs = wait_server_pairs(&sensor, &pids, 5);
    assert_eq!(server_pairs.len(), 5, "each SSL_write_ex call seen once");
    assert_one_mib_pairs(&server_pairs[3..], 1);
    let client_pairs = pairs_of(&sensor.pairs().unwrap(), "client", &[client_pid]);
    assert_eq!(client_pairs.len(), 3, "the client's SSL_write_ex2 requests");
    assert_item_pairs(&client_pairs, &responses, "client");
    assert_item_pairs(&server_pairs[..3], &responses, "server");
    assert_api_key_leaks(&sensor, &pids, &key, ("/v1/items", 401), 3);
    assert_no_loss(&sensor);
    assert_no_secrets("sensor output", &sensor.all_output(), &[&key]);
    sensor.stop().unwrap();
}

fn wait_attached_mode(sensor: &Sensor, part: &str) -> String {
    let deadline = std::time::Instant::now() + SENSOR_LAG;
    loop {
        let (status, body) = http_get(
            sensor.api_addr(),
            "/api/v1/stats",
            std::time::Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(status, 200, "{body}");
        let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
        let found = stats["attached_libraries"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["path"].as_str().is_some_and(|p| p.contains(part)));
        if let Some(lib) = found {
            return lib["mode"].as_str().unwrap_or_default().to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no library with {part:?} in its path attached: {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A second OpenSSL build: Debian 13's 3.5, built with CET (`endbr64` at
/// every function entry, where a probe would be single-stepped) and with
/// OpenSSL 3.3's write path (`SSL_write_ex` jumps to `SSL_write_ex2`;
/// `ssl_write_internal` takes `flags` before `written`).  A real uvicorn on it,
/// through Debian 13's own loader: probed at its internal sites, and its
/// traffic — leaks, 1 MiB both ways — captured exactly.
#[test]
fn debian13_openssl_is_probed_at_internal_sites() {
    require_root();
    let _serial = serial();
    let cert = TestCert::new().unwrap();
    let mut sensor = Sensor::start(&[]).unwrap();
    let server = Server::fastapi_on_debian13(&cert).unwrap();
    let pids = server.pids();
    assert_eq!(wait_attached_mode(&sensor, ".tools/debian13/"), "internal");

    let key = Secret::random("ak_", 30);
    let (_, leaks) = PyClient::run(
        &cert,
        server.port(),
        "http.client",
        &[
            "keepalive",
            "--n",
            "5",
            "--path",
            "/v1/items",
            "-H",
            &format!("x-api-key: {}", key.expose()),
        ],
    )
    .unwrap();
    assert!(leaks.iter().all(|r| r.status == 401));
    one_mib_each_way(&cert, server.port(), 1);

    let pairs = wait_server_pairs(&sensor, &pids, 7);
    assert_eq!(pairs.len(), 7);
    let responses: Vec<(u16, u64)> = leaks.iter().map(|r| (r.status, r.body_len)).collect();
    assert_item_pairs(&pairs[..5], &responses, "server");
    assert_one_mib_pairs(&pairs[5..], 1);

    assert_api_key_leaks(&sensor, &pids, &key, ("/v1/items", 401), 5);
    assert_no_loss(&sensor);
    assert_no_secrets("sensor output", &sensor.all_output(), &[&key]);
    sensor.stop().unwrap();
}

/// A third OpenSSL build, bundled: pyOpenSSL (as Twisted and daphne use it)
/// runs on the OpenSSL that the `cryptography` wheel links into its own
/// extension module, with `SSL_*` only in its `.symtab`.  The sensor finds
/// it there, probes it at its internal sites, and sees the leak.
#[test]
fn openssl_bundled_in_a_python_wheel_is_probed() {
    require_root();
    let _serial = serial();
    let cert = TestCert::new().unwrap();
    let sensor = Sensor::start(&[]).unwrap();
    let server = Server::pyopenssl(&cert).unwrap();
    assert_bundled_pyopenssl_probed(sensor, &server, &cert, "site-packages/");
}

/// OpenSSL 1.1.1, still what Ubuntu 20.04, RHEL 8 and many images run:
/// the `cryptography` 36 wheel links 1.1.1n into its extension module
/// (pyOpenSSL 22 on top).  Its wrappers are 1.1.1's (no `SSL_write_ex2`,
/// `ssl_write_internal` without `flags`); the sensor must find the internal
/// sites there too, not fall back to the exported entries.
#[test]
fn openssl_1_1_1_is_probed_at_its_internal_sites() {
    wheel_set_is_probed("openssl111", "OpenSSL 1.1.1");
}

/// OpenSSL 3.5 as newer GCCs build it (the `cryptography` 45 wheel):
/// `ssl_write_internal` tests its `SSL *` for NULL before its prologue, so
/// the probe goes on the `push` after that guard, with the return probe
/// there too.  Before, such builds fell back to the exported entries.
#[test]
fn shrink_wrapped_openssl_3_5_is_probed_at_its_internal_sites() {
    wheel_set_is_probed("openssl35", "OpenSSL 3.5");
}

/// leaky_pyopenssl.py on wheel set `set`, whose OpenSSL version starts with
/// `version`: probed at its internal sites, 3 pairs exact, 3 leaks.
fn wheel_set_is_probed(set: &str, version: &str) {
    require_root();
    let _serial = serial();
    let mut python = std::process::Command::new(venv_bin("python").unwrap());
    python
        .args([
            "-c",
            "from OpenSSL import SSL; print(SSL.SSLeay_version(SSL.SSLEAY_VERSION).decode())",
        ])
        .env("PYTHONPATH", wheel_set_pythonpath(set).unwrap());
    let out = run_bounded(
        "openssl-version",
        &python,
        std::time::Duration::from_secs(30),
    )
    .unwrap();
    let runs_on = String::from_utf8_lossy(&out.stdout);
    assert!(runs_on.starts_with(version), "{set} runs on {runs_on:?}");

    let cert = TestCert::new().unwrap();
    let sensor = Sensor::start(&[]).unwrap();
    let server = Server::pyopenssl_on_wheel_set(&cert, set).unwrap();
    assert_bundled_pyopenssl_probed(sensor, &server, &cert, &format!("/{set}/"));
}

/// `server` (leaky_pyopenssl.py on a wheel's bundled OpenSSL) is probed in
/// internal mode (the library at `<wheel_dir>cryptography/hazmat/bindings/`),
/// its 3 keep-alive pairs are exact and each leaks the key.
fn assert_bundled_pyopenssl_probed(
    mut sensor: Sensor,
    server: &Server,
    cert: &TestCert,
    wheel_dir: &str,
) {
    let pids = server.pids();
    let library = format!("{wheel_dir}cryptography/hazmat/bindings/");
    assert_eq!(wait_attached_mode(&sensor, &library), "internal");

    let key = Secret::random("ak_", 30);
    let urls: Vec<String> = (0..3).map(|_| server.url("/v1/items")).collect();
    let (_, responses) =
        curl_keepalive(cert, &urls, &[&format!("x-api-key: {}", key.expose())]).unwrap();
    let pairs = wait_server_pairs(&sensor, &pids, 3);
    assert_eq!(pairs.len(), 3);
    assert!(responses.iter().all(|&(status, _)| status == 401));
    assert_item_pairs(&pairs, &responses, "server");
    assert_api_key_leaks(&sensor, &pids, &key, ("/v1/items", 401), 3);
    assert_no_loss(&sensor);
    assert_no_secrets("sensor output", &sensor.all_output(), &[&key]);
    sensor.stop().unwrap();
}

/// A TLS echo server and its client, both in Python (system libssl), for a
/// protocol that is not HTTP.  The client waits for a line on stdin, sends
/// one 4 KiB record, waits 0.5 s, then 199 more, reading each echo back;
/// prints DONE.
const ECHO_PAIR: &str = r#"
import os, socket, ssl, sys, threading, time
mode, port = sys.argv[1], int(sys.argv[2])
if mode == "server":
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])
    ls = socket.create_server(("127.0.0.1", port))
    print("READY", flush=True)
    conn, _ = ls.accept()
    with ctx.wrap_socket(conn, server_side=True) as tls:
        while True:
            data = tls.recv(65536)
            if not data:
                break
            tls.sendall(data)
else:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    sys.stdin.readline()
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port))) as tls:
        for i in range(200):
            msg = b"\x00\x01BIN" + os.urandom(4090)
            tls.sendall(msg)
            got = b""
            while len(got) < len(msg):
                got += tls.recv(len(msg) - len(got))
            if i == 0:
                time.sleep(0.5)
    print("DONE", flush=True)
"#;

/// Traffic that is not HTTP (a database or message protocol over TLS) is
/// counted once as `not_http`, then muted in the kernel: its later calls are
/// counted in `sensor_capture_muted_calls_total` and never copied (before,
/// every byte went through the ring buffer to be dropped unread).
#[test]
fn traffic_that_is_not_http_is_muted_after_its_first_bytes() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    require_root();
    let _serial = serial();
    let cert = TestCert::new().unwrap();
    let port = sensor_e2e::free_port().unwrap();
    let python = sensor_e2e::paths::system_python();
    let mut server = Command::new(&python)
        .args(["-c", ECHO_PAIR, "server", &port.to_string()])
        .arg(cert.cert())
        .arg(cert.key())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "READY");
    let mut client = Command::new(&python)
        .args(["-c", ECHO_PAIR, "client", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (server_pid, client_pid) = (server.id().to_string(), client.id().to_string());
    // Only these two processes: the counters below are theirs alone.
    let sensor = Sensor::start(&["--pid", &server_pid, "--pid", &client_pid]).unwrap();
    writeln!(client.stdin.as_mut().unwrap(), "go").unwrap();
    let mut done = String::new();
    BufReader::new(client.stdout.take().unwrap())
        .read_line(&mut done)
        .unwrap();
    assert_eq!(done.trim(), "DONE");
    let _ = client.wait();
    let _ = server.kill();
    let _ = server.wait();
    // Kernel counters reach the metrics once a second.
    let deadline = std::time::Instant::now() + SENSOR_LAG;
    let muted = loop {
        let m = sensor
            .metric_sum("sensor_capture_muted_calls_total")
            .unwrap();
        if m >= 700.0 || std::time::Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let metrics = sensor.metrics().unwrap();
    let not_http = sensor_e2e::sensor::metric_sum_where(
        &metrics,
        "sensor_http_parse_errors_total",
        &[("reason", "not_http")],
    );
    let events = sensor_e2e::sensor::metric_sum_where(
        &metrics,
        "sensor_capture_events_total",
        &[("direction", "write")],
    ) + sensor_e2e::sensor::metric_sum_where(
        &metrics,
        "sensor_capture_events_total",
        &[("direction", "read")],
    );
    println!("muted calls {muted}, data events {events}, not_http {not_http}");
    // 200 writes and at least 200 reads on each side; the first round trip
    // (before the 0.5 s pause) is copied and judged.
    assert_eq!(not_http, 2.0, "each side judged once");
    assert!(muted >= 199.0 * 4.0, "muted calls {muted}");
    assert!(events <= 8.0, "data events copied {events}");
    assert!(sensor.findings().unwrap().is_empty());
}
