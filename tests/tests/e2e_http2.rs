//! End to end over HTTP/2: nginx (`listen … ssl http2`) and node
//! (`http2.createSecureServer`) leaking credentials in DATA, HEADERS and
//! trailers, requested by curl `--http2` and httpx `http2=True` on one
//! connection (one after the other, or as concurrent streams).  A leak over
//! HTTP/2 must give exactly the findings the same leak gives over HTTP/1.1
//! (role server for nginx/node, client for curl/python), one pair per stream
//! with version `HTTP/2`, and no raw credential in any output.
//! `tests/harness/http2.rs` has the endpoint tables.  Needs root and a built
//! sensor; the `*_serves_*` tests check the servers and clients alone.

use std::collections::BTreeSet;

use sensor_e2e::client::PyClient;
use sensor_e2e::contract::{Finding, Pair};
use sensor_e2e::http2::{H2App, H2Client, H2ClientRun, H2Scenario, RawLeak};
use sensor_e2e::proc::is_alive;
use sensor_e2e::sensor::metric_sum_where;
use sensor_e2e::server::deterministic_bytes;
use sensor_e2e::wait::{SENSOR_LAG, SETTLE};
use sensor_e2e::{
    assert_no_secrets, check_findings, curl, curl_h2, findings_of, require_root, serial,
    ExpectedFinding, Secret, Sensor, Server, TestCert,
};

fn pairs_of(pairs: &[Pair], role: &str, pids: &[u32]) -> Vec<Pair> {
    pairs
        .iter()
        .filter(|p| p.role == role && pids.contains(&p.process.pid))
        .cloned()
        .collect()
}

/// Every problem a test found, reported together: which findings and which
/// pairs are missing or wrong on which side, not only the first.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.0.push(msg());
        }
    }

    fn assert_none(self, sensor: &Sensor) {
        if !self.0.is_empty() {
            let metrics = sensor.metrics().unwrap_or_default();
            panic!(
                "{} problem(s) over HTTP/2 (sensor_http_parse_errors_total{{reason=\"http2\"}} = {}):\n- {}",
                self.0.len(),
                metric_sum_where(
                    &metrics,
                    "sensor_http_parse_errors_total",
                    &[("reason", "http2")]
                ) + 0.0,
                self.0.join("\n- ")
            );
        }
    }
}

/// Waits until both sides have `n` pairs (or [`SENSOR_LAG`] passed: the
/// checks then say what is missing), then lets late outputs arrive.
fn wait_pairs(sensor: &Sensor, server_pids: &[u32], client_pids: &[u32], n: usize) {
    let done = |p: &[Pair]| {
        pairs_of(p, "server", server_pids).len() >= n
            && pairs_of(p, "client", client_pids).len() >= n
    };
    if sensor.wait_for_pairs(done, SENSOR_LAG).is_err() {
        eprintln!("not every HTTP/2 pair appeared within {SENSOR_LAG:?}");
    }
    std::thread::sleep(SETTLE);
}

/// All `pairs` on one connection, numbered 1..=n in some order (HTTP/2
/// streams complete in any order), HTTP/2 on both heads, by `comm`.
fn check_one_h2_connection(
    problems: &mut Problems,
    side: &str,
    pairs: &[Pair],
    comm: impl Fn(&str) -> bool,
) {
    let Some(first) = pairs.first() else {
        return;
    };
    let conn = &first.connection.id;
    let mut seqs = BTreeSet::new();
    for p in pairs {
        let what = format!("{side} pair {} {}", p.request.method, p.path_only());
        problems.check(&p.connection.id == conn, || {
            format!("{what}: on connection {}, not {conn}", p.connection.id)
        });
        problems.check(p.request.version == "HTTP/2", || {
            format!("{what}: request version {}", p.request.version)
        });
        problems.check(p.response.version == "HTTP/2", || {
            format!("{what}: response version {}", p.response.version)
        });
        problems.check(comm(&p.process.comm), || {
            format!("{what}: comm {}", p.process.comm)
        });
        seqs.insert(p.connection.seq.unwrap_or(0));
    }
    let want: BTreeSet<u64> = (1..=pairs.len() as u64).collect();
    problems.check(seqs == want, || {
        format!(
            "{side}: pair numbers on the connection {seqs:?}, expected 1..={}",
            pairs.len()
        )
    });
}

/// One pair per request of the scenario: method, path, status, body lengths
/// (request as sent, response as the client got it), `:authority` as `host`,
/// trailers appended to the response headers.
fn check_scenario_pairs(
    problems: &mut Problems,
    side: &str,
    pairs: &[Pair],
    sc: &H2Scenario,
    run: &H2ClientRun,
    port: u16,
    comm: impl Fn(&str) -> bool,
) {
    problems.check(pairs.len() == sc.requests.len(), || {
        format!(
            "{side}: {} pairs for {} requests",
            pairs.len(),
            sc.requests.len()
        )
    });
    check_one_h2_connection(problems, side, pairs, comm);
    let authority = format!("127.0.0.1:{port}");
    for (i, r) in sc.requests.iter().enumerate() {
        let what = format!("{side} pair {} {}", r.method, r.path());
        let matching: Vec<&Pair> = pairs
            .iter()
            .filter(|p| p.request.method == r.method && p.path_only() == r.path())
            .collect();
        let [p] = matching[..] else {
            problems
                .0
                .push(format!("{what}: {} pairs, expected 1", matching.len()));
            continue;
        };
        problems.check(p.response.status == r.status, || {
            format!("{what}: status {} != {}", p.response.status, r.status)
        });
        problems.check(p.response.body_len == run.response_body_lens[i], || {
            format!(
                "{what}: response body_len {} != {}",
                p.response.body_len, run.response_body_lens[i]
            )
        });
        problems.check(p.request.body_len == r.request_body_len(), || {
            format!(
                "{what}: request body_len {} != {}",
                p.request.body_len,
                r.request_body_len()
            )
        });
        problems.check(
            !p.request.body_truncated && !p.response.body_truncated,
            || format!("{what}: body truncated"),
        );
        problems.check(p.request_header("host") == Some(authority.as_str()), || {
            format!(
                "{what}: host {:?}, expected :authority {authority}",
                p.request_header("host")
            )
        });
        for leak in &r.leaks {
            if let RawLeak::Trailer(name, _) = leak {
                problems.check(p.response_header(name).is_some(), || {
                    format!("{what}: trailer {name} not in the response headers")
                });
            }
        }
    }
}

/// Findings of one side: exactly the expected ones, from processes with the
/// right `comm`, naming the request's `:authority` as host.
fn check_side(
    problems: &mut Problems,
    side: &str,
    findings: &[Finding],
    expected: &[ExpectedFinding],
    port: u16,
    comm: impl Fn(&str) -> bool,
) {
    if let Err(e) = check_findings(findings, expected, side) {
        problems.0.push(format!("{side} {e}"));
    }
    let authority = format!("127.0.0.1:{port}");
    for f in findings {
        problems.check(comm(&f.process.comm), || {
            format!("{side}: comm of {}", f.summary())
        });
        problems.check(
            f.request.host.as_deref() == Some(authority.as_str()),
            || {
                format!(
                    "{side}: host {:?} (expected {authority}) of {}",
                    f.request.host,
                    f.summary()
                )
            },
        );
    }
}

fn check_no_h2_parse_errors(problems: &mut Problems, sensor: &Sensor) {
    let metrics = sensor.metrics().unwrap();
    let errors = metric_sum_where(
        &metrics,
        "sensor_http_parse_errors_total",
        &[("reason", "http2")],
    );
    problems.check(errors == 0.0, || {
        format!("{errors} HTTP/2 connections counted as parse errors")
    });
}

fn h2_leaks_are_reported_exactly(app: H2App, client: H2Client) {
    require_root();
    let _serial = serial();
    let cert = TestCert::new().unwrap();
    let server = app.start(&cert).unwrap();
    let mut sensor = Sensor::start(&[]).unwrap();
    let pids = server.pids();

    let sc = H2Scenario::new(app).unwrap();
    let run = match client {
        H2Client::Curl => sc.run_curl(&server, &cert),
        H2Client::Httpx => sc.run_httpx(&server, &cert),
    }
    .unwrap();
    let n = sc.requests.len();
    wait_pairs(&sensor, &pids, &[run.pid], n);

    let mut problems = Problems::default();
    let findings = sensor.findings().unwrap();
    let expected = sc.expected();
    check_side(
        &mut problems,
        "server",
        &findings_of(&findings, "server", &pids),
        &expected,
        server.port(),
        |c| c == app.comm(),
    );
    check_side(
        &mut problems,
        "client",
        &findings_of(&findings, "client", &[run.pid]),
        &expected,
        server.port(),
        |c| client.is_comm(c),
    );

    let pairs = sensor.pairs().unwrap();
    check_scenario_pairs(
        &mut problems,
        "server",
        &pairs_of(&pairs, "server", &pids),
        &sc,
        &run,
        server.port(),
        |c| c == app.comm(),
    );
    check_scenario_pairs(
        &mut problems,
        "client",
        &pairs_of(&pairs, "client", &[run.pid]),
        &sc,
        &run,
        server.port(),
        |c| client.is_comm(c),
    );
    check_no_h2_parse_errors(&mut problems, &sensor);
    if app == H2App::Node {
        let masked = sensor.metric_sum("sensor_masked_echoes_total").unwrap();
        problems.check(masked >= 1.0, || {
            "the masked echo of /v1/masked was not counted".to_string()
        });
    }

    let secrets = sc.secret_refs();
    assert_no_secrets(
        "sensor findings/pairs/logs/metrics",
        &sensor.all_output(),
        &secrets,
    );
    problems.assert_none(&sensor);
    sensor.stop().unwrap();
    assert_no_secrets(
        "sensor findings/pairs/logs after stop",
        &sensor.all_output(),
        &secrets,
    );
}

#[test]
fn nginx_h2_curl_leaks_are_reported_exactly() {
    h2_leaks_are_reported_exactly(H2App::Nginx, H2Client::Curl);
}

#[test]
fn nginx_h2_httpx_leaks_are_reported_exactly() {
    h2_leaks_are_reported_exactly(H2App::Nginx, H2Client::Httpx);
}

#[test]
fn node_h2_curl_leaks_are_reported_exactly() {
    h2_leaks_are_reported_exactly(H2App::Node, H2Client::Curl);
}

#[test]
fn node_h2_httpx_leaks_are_reported_exactly() {
    h2_leaks_are_reported_exactly(H2App::Node, H2Client::Httpx);
}

/// A request of the multiplexed run: path, expected status, whether the
/// response echoes the request's key.
struct MuxRequest {
    path: String,
    status: u16,
    leaks: bool,
}

/// 12 requests as concurrent streams of one connection (`curl --parallel`),
/// each with its own key of its own length (so a finding's credential length
/// tells which stream's key it is): the `/v1/items/m{i}` ones leak, the large
/// responses (several DATA frames, interleaved with the others) and
/// `/v1/status/m{i}` do not.
fn mux_requests(app: H2App) -> Vec<MuxRequest> {
    (0..12)
        .map(|i| match i % 4 {
            0 | 2 => MuxRequest {
                path: format!("/v1/items/m{i}"),
                status: 401,
                leaks: true,
            },
            1 => MuxRequest {
                path: app.large_path().0.to_string(),
                status: 200,
                leaks: false,
            },
            _ => MuxRequest {
                path: format!("/v1/status/m{i}"),
                status: 200,
                leaks: false,
            },
        })
        .collect()
}

fn multiplexed_findings_belong_to_their_stream(app: H2App) {
    require_root();
    let _serial = serial();
    let cert = TestCert::new().unwrap();
    let server = app.start(&cert).unwrap();
    let mut sensor = Sensor::start(&[]).unwrap();
    let pids = server.pids();

    let plan = mux_requests(app);
    let keys: Vec<Secret> = (0..plan.len())
        .map(|i| Secret::random("mx_", 20 + i))
        .collect();
    let requests: Vec<(String, Vec<String>)> = plan
        .iter()
        .zip(&keys)
        .map(|(r, k)| {
            (
                server.url(&r.path),
                vec!["-H".into(), format!("x-api-key: {}", k.expose())],
            )
        })
        .collect();
    let run = curl_h2(&cert, &requests, true).unwrap();
    let (large, large_len) = app.large_path();
    for ((r, k), t) in plan.iter().zip(&keys).zip(&run.transfers) {
        assert_eq!(t.status, r.status, "{}", r.path);
        assert_eq!(contains(&t.body, k.expose()), r.leaks, "{}", r.path);
        if r.path == large {
            assert_eq!(t.body.len() as u64, large_len, "{}", r.path);
        }
    }
    wait_pairs(&sensor, &pids, &[run.pid], plan.len());

    let mut problems = Problems::default();
    let expected: Vec<ExpectedFinding> = plan
        .iter()
        .zip(&keys)
        .filter(|(r, _)| r.leaks)
        .map(|(r, k)| {
            ExpectedFinding::new(k, "header", "x-api-key")
                .kind("api_key")
                .request("GET", &r.path, 401)
        })
        .collect();
    let findings = sensor.findings().unwrap();
    let server_findings = findings_of(&findings, "server", &pids);
    check_side(
        &mut problems,
        "server",
        &server_findings,
        &expected,
        server.port(),
        |c| c == app.comm(),
    );
    check_side(
        &mut problems,
        "client",
        &findings_of(&findings, "client", &[run.pid]),
        &expected,
        server.port(),
        |c| c == "curl",
    );

    // One pair per stream: (path, status, response body length) as curl got them.
    let mut want: Vec<(String, u16, u64)> = plan
        .iter()
        .zip(&run.transfers)
        .map(|(r, t)| (r.path.clone(), r.status, t.body.len() as u64))
        .collect();
    want.sort();
    let pairs = sensor.pairs().unwrap();
    for (side, side_pairs) in [
        ("server", pairs_of(&pairs, "server", &pids)),
        ("client", pairs_of(&pairs, "client", &[run.pid])),
    ] {
        check_one_h2_connection(&mut problems, side, &side_pairs, |c| {
            c == if side == "server" { app.comm() } else { "curl" }
        });
        let mut got: Vec<(String, u16, u64)> = side_pairs
            .iter()
            .map(|p| {
                (
                    p.path_only().to_string(),
                    p.response.status,
                    p.response.body_len,
                )
            })
            .collect();
        got.sort();
        problems.check(got == want, || {
            format!("{side}: pairs (path, status, body_len) {got:?}, expected {want:?}")
        });
        if let (Some(first), "server") = (side_pairs.first(), side) {
            let conn = &first.connection.id;
            problems.check(
                server_findings.iter().all(|f| &f.connection.id == conn),
                || "server findings not on the pairs' connection".to_string(),
            );
        }
    }
    check_no_h2_parse_errors(&mut problems, &sensor);

    let secrets: Vec<&Secret> = keys.iter().collect();
    assert_no_secrets("sensor output", &sensor.all_output(), &secrets);
    problems.assert_none(&sensor);
    sensor.stop().unwrap();
    assert_no_secrets("sensor output after stop", &sensor.all_output(), &secrets);
}

#[test]
fn nginx_h2_multiplexed_findings_belong_to_their_stream() {
    multiplexed_findings_belong_to_their_stream(H2App::Nginx);
}

#[test]
fn node_h2_multiplexed_findings_belong_to_their_stream() {
    multiplexed_findings_belong_to_their_stream(H2App::Node);
}

/// node ends a response with an empty DATA frame carrying END_STREAM,
/// written after the body; curl, once the body has its content-length,
/// resets the stream (RST_STREAM) or, for its last transfer, closes the
/// connection without reading that frame.  The response was delivered all
/// the same: each of these streams must give its pair and its finding on
/// both sides, as the same exchange over HTTP/1.1 does.  `client.py raw-h2
/// --end-early` does what curl does, deterministically; a third stream read
/// to its END_STREAM is the control.
#[test]
fn node_h2_streams_the_client_ends_early_are_reported() {
    require_root();
    let _serial = serial();
    let cert = TestCert::new().unwrap();
    let server = H2App::Node.start(&cert).unwrap();
    let mut sensor = Sensor::start(&[]).unwrap();
    let pids = server.pids();

    let modes = ["reset", "close", "end_stream"];
    let keys: Vec<Secret> = (0..modes.len())
        .map(|i| Secret::random("ee_", 24 + i))
        .collect();
    let mut client_pids = Vec::new();
    let mut runs = Vec::new();
    for (mode, key) in modes.iter().zip(&keys) {
        let path = format!("/v1/items/{mode}");
        let header = format!("x-api-key: {}", key.expose());
        let mut args = vec!["raw-h2", "--path", &path, "-H", &header];
        if *mode != "end_stream" {
            args.extend(["--end-early", mode]);
        }
        let (pid, results) = PyClient::run(&cert, server.port(), "httpx", &args).unwrap();
        let r = &results[0];
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(
            r.ended_by.as_deref(),
            Some(*mode),
            "{path}: how the stream ended"
        );
        client_pids.push(pid);
        runs.push((path, r.body_len));
    }
    wait_pairs(&sensor, &pids, &client_pids, modes.len());

    let mut problems = Problems::default();
    let expected: Vec<ExpectedFinding> = runs
        .iter()
        .zip(&keys)
        .map(|((path, _), k)| {
            ExpectedFinding::new(k, "header", "x-api-key")
                .kind("api_key")
                .request("GET", path, 401)
        })
        .collect();
    let findings = sensor.findings().unwrap();
    check_side(
        &mut problems,
        "server",
        &findings_of(&findings, "server", &pids),
        &expected,
        server.port(),
        |c| c == "node",
    );
    check_side(
        &mut problems,
        "client",
        &findings_of(&findings, "client", &client_pids),
        &expected,
        server.port(),
        |c| c.starts_with("python"),
    );
    let pairs = sensor.pairs().unwrap();
    for (side, side_pairs) in [
        ("server", pairs_of(&pairs, "server", &pids)),
        ("client", pairs_of(&pairs, "client", &client_pids)),
    ] {
        for (path, body_len) in &runs {
            let what = format!("{side} pair GET {path}");
            let matching: Vec<&Pair> = side_pairs
                .iter()
                .filter(|p| p.path_only() == path)
                .collect();
            let [p] = matching[..] else {
                problems
                    .0
                    .push(format!("{what}: {} pairs, expected 1", matching.len()));
                continue;
            };
            problems.check(
                p.response.status == 401
                    && p.response.body_len == *body_len
                    && !p.response.body_truncated
                    && p.response.version == "HTTP/2",
                || {
                    format!(
                        "{what}: status {} body_len {} (expected {body_len}) truncated {} version {}",
                        p.response.status,
                        p.response.body_len,
                        p.response.body_truncated,
                        p.response.version
                    )
                },
            );
        }
    }
    check_no_h2_parse_errors(&mut problems, &sensor);

    let secrets: Vec<&Secret> = keys.iter().collect();
    assert_no_secrets("sensor output", &sensor.all_output(), &secrets);
    problems.assert_none(&sensor);
    sensor.stop().unwrap();
}

// --- the servers and clients alone (no sensor) ---

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn assert_stops(mut server: Server) {
    let pids = server.pids();
    assert!(!pids.is_empty(), "{} has no processes", server.name());
    server.stop();
    let alive: Vec<u32> = pids.iter().copied().filter(|&p| is_alive(p)).collect();
    assert!(alive.is_empty(), "{} left {alive:?}", server.name());
}

/// Every leak endpoint echoes its credential where the findings say (curl
/// `--http2`, raw responses), trailers really are HTTP/2 trailers, httpx
/// negotiates HTTP/2, gzip bodies decode to the credential, large bodies are
/// byte-exact, and `--parallel` multiplexes on one connection.
fn h2_server_serves_every_leak_and_benign_endpoint(app: H2App) {
    require_root();
    let _serial = serial();
    let cert = TestCert::new().unwrap();
    let server = app.start(&cert).unwrap();
    eprintln!("{app:?} (HTTP/2) ready in {:?}", server.started_in());

    let sc = H2Scenario::new(app).unwrap();
    let run = sc.run_curl(&server, &cert).unwrap();
    assert_eq!(run.response_body_lens.len(), sc.requests.len());
    sc.check_trailers(&server, &cert).unwrap();
    let run = sc.run_httpx(&server, &cert).unwrap();
    assert_eq!(run.response_body_lens.len(), sc.requests.len());
    let expected = sc.expected();
    eprintln!(
        "{app:?}: {} requests, {} expected findings per side",
        sc.requests.len(),
        expected.len()
    );
    assert_eq!(
        expected.len(),
        match app {
            H2App::Nginx => 8,
            H2App::Node => 12,
        }
    );
    // (method, path) identifies each request: pairs are matched by it.
    let keys: BTreeSet<(&str, &str)> = sc.requests.iter().map(|r| (r.method, r.path())).collect();
    assert_eq!(keys.len(), sc.requests.len());
    assert!(
        sc.requests.iter().any(|r| r.request_body_len() > 0),
        "a request with a body"
    );

    // gzip: the decoded body holds the key.
    let gz = sc
        .requests
        .iter()
        .find(|r| r.path() == "/gz/export")
        .unwrap();
    let mut args = vec!["--http2".to_string(), "--compressed".to_string()];
    for (n, v) in &gz.headers {
        args.push("-H".into());
        args.push(format!("{n}: {v}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = curl(&cert, &server.url("/gz/export"), &args).unwrap();
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert!(
        sc.secrets.iter().any(|s| contains(&r.body, s.expose())),
        "decoded gzip body echoes the key"
    );

    // The large body, byte-exact, over HTTP/2.
    let (large, len) = app.large_path();
    let t = curl_h2(&cert, &[(server.url(large), vec![])], false).unwrap();
    assert_eq!(t.transfers[0].body, deterministic_bytes(len as usize));

    if app == H2App::Node {
        let upload = sc
            .requests
            .iter()
            .find(|r| r.path() == "/v1/upload")
            .unwrap();
        assert_eq!(upload.request_body_len(), 1 << 20);
    }

    // Concurrent streams on one connection (curl_h2 checks one connection and HTTP/2).
    let requests: Vec<(String, Vec<String>)> = mux_requests(app)
        .iter()
        .map(|r| (server.url(&r.path), vec![]))
        .collect();
    let run = curl_h2(&cert, &requests, true).unwrap();
    for (r, t) in mux_requests(app).iter().zip(&run.transfers) {
        assert_eq!(t.status, r.status, "{}", r.path);
    }
    assert_stops(server);
}

#[test]
fn nginx_h2_serves_every_leak_and_benign_endpoint() {
    h2_server_serves_every_leak_and_benign_endpoint(H2App::Nginx);
}

#[test]
fn node_h2_serves_every_leak_and_benign_endpoint() {
    h2_server_serves_every_leak_and_benign_endpoint(H2App::Node);
}
