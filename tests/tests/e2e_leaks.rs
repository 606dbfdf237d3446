//! End to end: the sensor against the leaky FastAPI and Flask apps.  Every
//! leak endpoint gives exactly its findings (source, sink, encoding, status,
//! role, fingerprint consistency), benign endpoints give none, findings on a
//! kept-alive connection belong to the request that caused them, and no raw
//! credential appears in any output.  Needs root and a built sensor.

use sensor_e2e::contract::Pair;
use sensor_e2e::scenario::{run_leak_scenario, App};
use sensor_e2e::sensor::metric_sum_where;
use sensor_e2e::server::{Asgi, Proxy};
use sensor_e2e::wait::{SENSOR_LAG, SETTLE};
use sensor_e2e::{
    assert_no_secrets, check_findings, curl_sequence, findings_of, require_root, serial,
    ExpectedFinding, Secret, Sensor, Server, TestCert,
};

fn server_pairs(pairs: &[Pair], pids: &[u32]) -> Vec<Pair> {
    pairs
        .iter()
        .filter(|p| p.role == "server" && pids.contains(&p.process.pid))
        .cloned()
        .collect()
}

fn start(app: App, cert: &TestCert) -> Server {
    match app {
        App::FastApi => Server::fastapi(cert),
        App::Flask => Server::flask(cert),
        App::Node => Server::node(cert),
    }
    .unwrap()
}

fn leaks_are_reported_exactly(app: App) {
    leaks_are_reported_exactly_on(app, "HTTP/1.1", |cert| start(app, cert));
}

/// The scenario of `app` against the server `start` gives: exact pairs (each
/// in HTTP `version`) and findings on both sides, and no raw credential
/// anywhere.
fn leaks_are_reported_exactly_on(app: App, version: &str, start: impl FnOnce(&TestCert) -> Server) {
    require_root();
    let _serial = serial();
    let cert = TestCert::new().unwrap();
    let server = start(&cert);
    let mut sensor = Sensor::start(&[]).unwrap();
    let pids = server.pids();

    let scenario = run_leak_scenario(&server, &cert, app).unwrap();
    sensor
        .wait_for_pairs(
            |p| server_pairs(p, &pids).len() >= scenario.requests,
            SENSOR_LAG,
        )
        .unwrap();
    std::thread::sleep(SETTLE);

    // One pair per request, each with the method, path, status and body
    // lengths curl saw (matched by method + path: the scenario's are unique).
    let pairs = server_pairs(&sensor.pairs().unwrap(), &pids);
    assert_eq!(pairs.len(), scenario.requests, "one pair per request");
    for m in &scenario.made {
        let p = pairs
            .iter()
            .find(|p| p.request.method == m.method && p.path_only() == m.path)
            .unwrap_or_else(|| panic!("no pair for {} {}", m.method, m.path));
        assert_eq!(p.response.status, m.status, "{} {}", m.method, m.path);
        assert_eq!(
            (p.request.version.as_str(), p.response.version.as_str()),
            (version, version),
            "{} {}",
            m.method,
            m.path
        );
        assert_eq!(
            p.response.body_len, m.response_body_len,
            "{} {} response body",
            m.method, m.path
        );
        if let Some(len) = m.request_body_len {
            assert_eq!(
                p.request.body_len, len,
                "{} {} request body",
                m.method, m.path
            );
        }
        assert!(
            !p.request.body_truncated && !p.response.body_truncated,
            "{} {}",
            m.method,
            m.path
        );
    }
    let findings = sensor.findings().unwrap();
    check_findings(
        &findings_of(&findings, "server", &pids),
        &scenario.expected,
        "server",
    )
    .unwrap();
    // curl saw the same responses: the same leaks, from the client side.
    check_findings(
        &findings_of(&findings, "client", &scenario.client_pids),
        &scenario.expected,
        "client",
    )
    .unwrap();
    assert!(
        sensor.metric_sum("sensor_masked_echoes_total").unwrap() >= 1.0,
        "the masked echo of /v1/masked must be counted"
    );

    // Metrics count the leaks by role, and never carry a path, pid or fingerprint.
    let metrics = sensor.metrics().unwrap();
    let leaks = metric_sum_where(
        &metrics,
        "sensor_credential_leaks_total",
        &[("role", "server")],
    );
    assert!(
        leaks >= scenario.expected.len() as f64,
        "sensor_credential_leaks_total{{role=server}} = {leaks}"
    );
    assert!(
        metric_sum_where(&metrics, "sensor_http_pairs_total", &[("role", "server")])
            >= scenario.requests as f64
    );
    for f in &findings {
        assert!(
            !metrics.contains(&f.credential.fingerprint),
            "a fingerprint in /metrics"
        );
    }
    assert!(
        !metrics.contains("/v1/") && !metrics.contains("/oauth/"),
        "a request path in /metrics"
    );

    let secrets: Vec<&Secret> = scenario.secrets.iter().collect();
    assert_no_secrets(
        "sensor findings/pairs/logs/metrics",
        &sensor.all_output(),
        &secrets,
    );
    sensor.stop().unwrap();
    assert_no_secrets(
        "sensor findings/pairs/logs after stop",
        &sensor.all_output(),
        &secrets,
    );
}

/// The FastAPI app under hypercorn, over HTTP/2 (curl offers h2 and
/// hypercorn takes it).
#[test]
fn fastapi_under_hypercorn_leaks_are_reported_exactly() {
    leaks_are_reported_exactly_on(App::FastApi, "HTTP/2", |cert| {
        Server::fastapi_under(Asgi::Hypercorn, cert).unwrap()
    });
}

/// The FastAPI app under uvicorn with uvloop and httptools (its production setup).
#[test]
fn fastapi_under_uvicorn_with_uvloop_leaks_are_reported_exactly() {
    leaks_are_reported_exactly_on(App::FastApi, "HTTP/1.1", |cert| {
        Server::fastapi_under(Asgi::UvicornUvloop, cert).unwrap()
    });
}

/// The FastAPI app under daphne (Twisted's TLS on the cryptography wheel's
/// OpenSSL, through pyOpenSSL), over HTTP/2.
#[test]
fn fastapi_under_daphne_leaks_are_reported_exactly() {
    leaks_are_reported_exactly_on(App::FastApi, "HTTP/2", |cert| {
        Server::fastapi_under(Asgi::Daphne, cert).unwrap()
    });
}

/// The FastAPI app over plain HTTP behind HAProxy terminating TLS: the
/// sensor sees the proxy's traffic (its process, its TLS), and the same
/// leaks.  HAProxy offers HTTP/1.1 only here, so curl speaks HTTP/1.1 to it.
#[test]
fn leaks_through_haproxy_over_http1_are_reported_exactly() {
    leaks_are_reported_exactly_on(App::FastApi, "HTTP/1.1", |cert| {
        Server::fastapi_behind(Proxy::HAProxy, cert, &["http/1.1"]).unwrap()
    });
}

/// The same with HAProxy offering h2: curl speaks HTTP/2 to the proxy (which
/// speaks HTTP/1.1 to the app).
#[test]
fn leaks_through_haproxy_over_http2_are_reported_exactly() {
    leaks_are_reported_exactly_on(App::FastApi, "HTTP/2", |cert| {
        Server::fastapi_behind(Proxy::HAProxy, cert, &["h2", "http/1.1"]).unwrap()
    });
}

/// Apache httpd (mod_ssl, mod_proxy; event MPM: a root parent and www-data
/// workers) terminating TLS in front of the FastAPI app, over HTTP/1.1.
#[test]
fn leaks_through_apache_over_http1_are_reported_exactly() {
    leaks_are_reported_exactly_on(App::FastApi, "HTTP/1.1", |cert| {
        Server::fastapi_behind(Proxy::Apache, cert, &["http/1.1"]).unwrap()
    });
}

/// The same over HTTP/2 (mod_http2).
#[test]
fn leaks_through_apache_over_http2_are_reported_exactly() {
    leaks_are_reported_exactly_on(App::FastApi, "HTTP/2", |cert| {
        Server::fastapi_behind(Proxy::Apache, cert, &["h2", "http/1.1"]).unwrap()
    });
}

#[test]
fn fastapi_leaks_are_reported_exactly() {
    leaks_are_reported_exactly(App::FastApi);
}

#[test]
fn flask_leaks_are_reported_exactly() {
    leaks_are_reported_exactly(App::Flask);
}

/// node links OpenSSL into its own program (no libssl.so): the sensor
/// probes the node executable.
#[test]
fn node_leaks_are_reported_exactly() {
    leaks_are_reported_exactly(App::Node);
}

/// 12 requests on one connection, each with its own key (of its own length,
/// so a finding's credential length tells which request's key it is); the
/// even ones leak, the odd ones do not.
fn keep_alive_findings_belong_to_their_request(app: App) {
    require_root();
    let _serial = serial();
    let cert = TestCert::new().unwrap();
    let server = start(app, &cert);
    let mut sensor = Sensor::start(&[]).unwrap();
    let pids = server.pids();

    const N: usize = 12;
    let keys: Vec<Secret> = (0..N).map(|i| Secret::random("ka_", 20 + i)).collect();
    let requests: Vec<(String, Vec<String>)> = (0..N)
        .map(|i| {
            let path = if i % 2 == 0 {
                format!("/v1/items/a{i}")
            } else {
                "/v1/status".to_string()
            };
            (
                server.url(&path),
                vec![format!("x-api-key: {}", keys[i].expose())],
            )
        })
        .collect();
    let (curl_pid, results) = curl_sequence(&cert, &requests).unwrap();
    for (i, (status, _)) in results.iter().enumerate() {
        assert_eq!(*status, if i % 2 == 0 { 401 } else { 200 });
    }

    let pairs = sensor
        .wait_for_pairs(|p| server_pairs(p, &pids).len() >= N, SENSOR_LAG)
        .unwrap();
    std::thread::sleep(SETTLE);
    let pairs = server_pairs(&sensor.pairs().unwrap_or(pairs), &pids);
    assert_eq!(pairs.len(), N);
    let conn = &pairs[0].connection.id;
    for (i, p) in pairs.iter().enumerate() {
        assert_eq!(&p.connection.id, conn, "all on one connection");
        assert_eq!(p.connection.seq, Some(i as u64 + 1));
        assert_eq!(
            p.path_only(),
            if i % 2 == 0 {
                format!("/v1/items/a{i}")
            } else {
                "/v1/status".into()
            }
        );
        assert_eq!(p.response.body_len, results[i].1);
        assert_eq!(p.request_header("x-api-key"), Some("<redacted>"));
    }

    let expected: Vec<ExpectedFinding> = (0..N)
        .step_by(2)
        .map(|i| {
            ExpectedFinding::new(&keys[i], "header", "x-api-key")
                .kind("api_key")
                .request("GET", &format!("/v1/items/a{i}"), 401)
        })
        .collect();
    let findings = sensor.findings().unwrap();
    let server_findings = findings_of(&findings, "server", &pids);
    check_findings(&server_findings, &expected, "server").unwrap();
    assert!(server_findings.iter().all(|f| &f.connection.id == conn));
    check_findings(
        &findings_of(&findings, "client", &[curl_pid]),
        &expected,
        "client",
    )
    .unwrap();

    let secrets: Vec<&Secret> = keys.iter().collect();
    assert_no_secrets("sensor output", &sensor.all_output(), &secrets);
    sensor.stop().unwrap();
}

#[test]
fn fastapi_keep_alive_findings_belong_to_their_request() {
    keep_alive_findings_belong_to_their_request(App::FastApi);
}

#[test]
fn node_keep_alive_findings_belong_to_their_request() {
    keep_alive_findings_belong_to_their_request(App::Node);
}

#[test]
fn flask_keep_alive_findings_belong_to_their_request() {
    keep_alive_findings_belong_to_their_request(App::Flask);
}

/// The bundled demo: what `cargo xtask demo` shows.
#[test]
fn demo_api_leaks_are_reported() {
    require_root();
    let _serial = serial();
    let cert = TestCert::new().unwrap();
    let server = Server::demo(&cert).unwrap();
    let mut sensor = Sensor::start(&[]).unwrap();
    let pids = server.pids();

    let key = Secret::random("ak_", 32);
    let bearer = Secret::random("tk", 32);
    let masked = Secret::random("sk_live_", 24);
    let h_key = format!("x-api-key: {}", key.expose());
    let h_bearer = format!("Authorization: Bearer {}", bearer.expose());
    let requests = vec![
        (server.url("/v1/items"), vec![h_key.clone()]),
        (
            server.url("/oauth/authorize?response_type=token&state=x"),
            vec![h_bearer.clone()],
        ),
        (server.url("/debug"), vec![h_bearer.clone()]),
        (
            server.url(&format!("/search?api_key={}", key.expose())),
            vec![],
        ),
        (
            server.url("/v1/masked"),
            vec![format!("x-api-key: {}", masked.expose())],
        ),
        (server.url("/v1/status"), vec![h_key.clone()]),
    ];
    let (curl_pid, _) = curl_sequence(&cert, &requests).unwrap();
    sensor
        .wait_for_pairs(
            |p| server_pairs(p, &pids).len() >= requests.len(),
            SENSOR_LAG,
        )
        .unwrap();
    std::thread::sleep(SETTLE);

    let e = ExpectedFinding::new;
    let expected = vec![
        e(&key, "header", "x-api-key")
            .kind("api_key")
            .request("GET", "/v1/items", 400),
        e(&bearer, "authorization", "bearer")
            .kind("bearer_token")
            .request("GET", "/oauth/authorize", 302)
            .in_header("location"),
        e(&bearer, "authorization", "bearer")
            .kind("bearer_token")
            .request("GET", "/debug", 200),
        e(&key, "query", "api_key")
            .kind("api_key")
            .request("GET", "/search", 200),
    ];
    let findings = sensor.findings().unwrap();
    check_findings(
        &findings_of(&findings, "server", &pids),
        &expected,
        "server",
    )
    .unwrap();
    check_findings(
        &findings_of(&findings, "client", &[curl_pid]),
        &expected,
        "client",
    )
    .unwrap();
    assert_no_secrets(
        "sensor output",
        &sensor.all_output(),
        &[&key, &bearer, &masked],
    );
    sensor.stop().unwrap();
}
