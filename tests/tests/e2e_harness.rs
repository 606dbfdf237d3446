//! The harness itself, without the sensor: every app starts, serves its
//! endpoints over real TLS as the leak tests expect, and stops cleanly; the
//! separate root really is separate.  Runs as root (nginx user, chroot).

use std::time::Instant;

use sensor_e2e::client::PyClient;
use sensor_e2e::proc::{descendants, is_alive};
use sensor_e2e::secrets::{base64_encode, Secret};
use sensor_e2e::server::{deterministic_bytes, NGINX_LARGE_FILE, NGINX_SMALL_FILE};
use sensor_e2e::{curl, curl_keepalive, require_root, separate_root, serial, Server, TestCert};

fn assert_stops(mut server: Server) {
    let pids = server.pids();
    assert!(!pids.is_empty(), "{} has no processes", server.name());
    server.stop();
    let alive: Vec<u32> = pids.iter().copied().filter(|&p| is_alive(p)).collect();
    assert!(
        alive.is_empty(),
        "{} left processes behind: {alive:?}",
        server.name()
    );
}

/// The leak endpoints answer with the credential in the intended place and
/// encoding (what the sensor must then find).
fn check_leaky_app(server: &Server, cert: &TestCert, flask: bool) {
    let key = Secret::random("ak_", 28);
    let r = curl(
        cert,
        &server.url("/v1/items"),
        &["-H", &format!("x-api-key: {}", key.expose())],
    )
    .unwrap();
    assert_eq!(r.status, 401);
    assert!(contains(&r.body, key.expose()));

    let bearer = Secret::random("tk", 30);
    let auth = format!("Authorization: Bearer {}", bearer.expose());
    let id_token = Secret::random("idt", 26);
    let r = curl(
        cert,
        &server.url("/oauth/authorize?response_type=token&client_id=demo&state=s1"),
        &[
            "-H",
            &auth,
            "-H",
            &format!("x-id-token: {}", id_token.expose()),
        ],
    )
    .unwrap();
    assert_eq!(r.status, 302);
    let loc = r.header("location").unwrap();
    let (query, fragment) = loc.split_once('#').unwrap();
    assert!(query.contains(&format!("access_token={}", bearer.expose())));
    assert!(fragment.contains(&format!("id_token={}", id_token.expose())));
    assert_eq!(
        contains(&r.body, bearer.expose()),
        flask,
        "Flask's redirect page repeats the URL"
    );

    let html_key = Secret::from_parts(&[
        "hk_",
        &sensor_e2e::secrets::random_alphanum(6),
        "&",
        &sensor_e2e::secrets::random_alphanum(20),
    ]);
    let escaped = html_key.expose().replace('&', "%26");
    let r = curl(
        cert,
        &server.url(&format!("/search?q=shoes&api_key={escaped}")),
        &[],
    )
    .unwrap();
    assert!(contains(&r.body, &html_key.expose().replace('&', "&amp;")));
    assert!(!contains(&r.body, html_key.expose()));

    let password = Secret::random("pw-", 20);
    let r = curl(
        cert,
        &server.url("/v1/account"),
        &["-u", &format!("alice.wonderland:{}", password.expose())],
    )
    .unwrap();
    assert_eq!(r.status, 401);
    assert!(contains(&r.body, password.expose()));

    let cs = Secret::from_parts(&[
        "cs_",
        &sensor_e2e::secrets::random_alphanum(8),
        "/",
        &sensor_e2e::secrets::random_alphanum(8),
        "+",
        &sensor_e2e::secrets::random_alphanum(8),
    ]);
    let r = if flask {
        let body = format!(
            r#"{{"grant_type":"client_credentials","client_id":"demo","client_secret":"{}"}}"#,
            cs.expose().replace('/', "\\/")
        );
        curl(
            cert,
            &server.url("/oauth/token"),
            &[
                "-H",
                "content-type: application/json",
                "--data-binary",
                &body,
            ],
        )
        .unwrap()
    } else {
        curl(
            cert,
            &server.url("/oauth/token"),
            &[
                "-d",
                "grant_type=client_credentials",
                "-d",
                "client_id=demo",
                "--data-urlencode",
                &format!("client_secret={}", cs.expose()),
            ],
        )
        .unwrap()
    };
    assert_eq!(r.status, 401);
    if flask {
        assert!(contains(&r.body, cs.expose()));
    } else {
        assert!(contains(&r.body, &cs.expose().replace('/', "\\/")));
        assert!(!contains(&r.body, cs.expose()));
    }

    let xat = Secret::random("xat_", 24);
    let r = curl(
        cert,
        &server.url("/v1/session"),
        &["-H", &format!("x-auth-token: {}", xat.expose())],
    )
    .unwrap();
    assert_eq!(r.header("x-debug-token"), Some(xat.expose()));

    let r = curl(
        cert,
        &server.url("/gz/export"),
        &[
            "-H",
            &format!("x-api-key: {}", key.expose()),
            "-H",
            "accept-encoding: gzip",
        ],
    )
    .unwrap();
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert!(
        !contains(&r.body, key.expose()),
        "raw gzip body must not contain the key"
    );
    let r = curl(
        cert,
        &server.url("/gz/export"),
        &[
            "-H",
            &format!("x-api-key: {}", key.expose()),
            "--compressed",
        ],
    )
    .unwrap();
    assert!(contains(&r.body, key.expose()));

    let r = curl(
        cert,
        &server.url("/v1/stream"),
        &["-H", &format!("x-api-key: {}", key.expose())],
    )
    .unwrap();
    assert!(r
        .header("transfer-encoding")
        .is_some_and(|v| v.contains("chunked")));
    let at = find(&r.body, key.expose()).unwrap();
    assert!(at >= 65536, "key at {at}, must be past 64 KiB");

    let r = curl(cert, &server.url("/v1/debug/blob"), &["-H", &auth]).unwrap();
    let blob = base64_encode(
        format!(
            r#"{{"path": "/v1/debug/blob", "authorization": "Bearer {}"}}"#,
            bearer.expose()
        )
        .as_bytes(),
    );
    assert!(contains(&r.body, &blob));

    let pkey = Secret::from_parts(&[
        "pk+",
        &sensor_e2e::secrets::random_alphanum(10),
        "/",
        &sensor_e2e::secrets::random_alphanum(10),
        "=",
    ]);
    let r = curl(
        cert,
        &server.url("/v1/links"),
        &["-H", &format!("x-api-key: {}", pkey.expose())],
    )
    .unwrap();
    assert!(contains(
        &r.body,
        &pkey
            .expose()
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    ));

    let session = Secret::random("sess_", 24);
    let cookie = format!("session={}", session.expose());
    let r = curl(cert, &server.url("/v1/remember"), &["-b", &cookie]).unwrap();
    assert!(r
        .header("set-cookie")
        .unwrap()
        .starts_with(&format!("remember_token={}", session.expose())));
    let r = curl(cert, &server.url("/v1/profile"), &["-b", &cookie]).unwrap();
    assert!(r
        .header("set-cookie")
        .unwrap()
        .starts_with(&format!("session={}", session.expose())));

    let r = curl(cert, &server.url("/v1/admin"), &["-H", &auth]).unwrap();
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains(bearer.expose()));

    // Benign.
    let sk = Secret::random("sk_live_", 24);
    let r = curl(
        cert,
        &server.url("/v1/masked"),
        &["-H", &format!("x-api-key: {}", sk.expose())],
    )
    .unwrap();
    let masked = format!("sk_live_****{}", &sk.expose()[sk.len() - 4..]);
    assert!(contains(&r.body, &masked) && !contains(&r.body, sk.expose()));
    let r = curl(
        cert,
        &server.url("/v1/whoami"),
        &["-u", &format!("alice.wonderland:{}", password.expose())],
    )
    .unwrap();
    assert!(contains(&r.body, "alice.wonderland") && !contains(&r.body, password.expose()));
    let r = curl(cert, &server.url("/v1/large"), &[]).unwrap();
    assert_eq!(r.body, deterministic_bytes(1 << 20));
    let r = curl(cert, &server.url("/v1/stream/plain"), &[]).unwrap();
    assert_eq!(r.body.len(), 25 * 8192);
    let r = curl(cert, &server.url("/v1/status"), &["-I"]).unwrap();
    assert_eq!(r.status, 200);
    let r = curl(cert, &server.url("/v1/items/7"), &["-X", "DELETE"]).unwrap();
    assert_eq!(r.status, 204);
    let r = curl(
        cert,
        &server.url("/v1/etag"),
        &["-H", "If-None-Match: \"v1\""],
    )
    .unwrap();
    assert_eq!(r.status, 304);

    // Keep-alive: 12 requests on one connection, with http.client, httpx and curl.
    for lib in ["http.client", "httpx"] {
        let (_, results) = PyClient::run(
            cert,
            server.port(),
            lib,
            &[
                "keepalive",
                "--n",
                "12",
                "--path",
                "/v1/items/k{i}",
                "-H",
                &format!("x-api-key: {}", key.expose()),
            ],
        )
        .unwrap();
        assert_eq!(results.len(), 12);
        assert!(
            results
                .iter()
                .all(|r| r.status == 401 && r.local_port == results[0].local_port),
            "{lib}: not one connection"
        );
    }
    let urls: Vec<String> = (0..12)
        .map(|i| server.url(&format!("/v1/items/c{i}")))
        .collect();
    let (_, results) =
        curl_keepalive(cert, &urls, &[&format!("x-api-key: {}", key.expose())]).unwrap();
    assert!(results.iter().all(|&(s, _)| s == 401));

    // Upload 1 MiB.
    let (_, results) = PyClient::run(
        cert,
        server.port(),
        "http.client",
        &["upload", "--size", "1048576"],
    )
    .unwrap();
    assert_eq!(results[0].status, 200);
}

fn contains(hay: &[u8], needle: &str) -> bool {
    find(hay, needle).is_some()
}

fn find(hay: &[u8], needle: &str) -> Option<usize> {
    hay.windows(needle.len())
        .position(|w| w == needle.as_bytes())
}

#[test]
fn fastapi_serves_every_leak_and_benign_endpoint() {
    require_root();
    let _g = serial();
    let cert = TestCert::new().unwrap();
    let server = Server::fastapi(&cert).unwrap();
    eprintln!("uvicorn ready in {:?}", server.started_in());
    check_leaky_app(&server, &cert, false);
    assert_stops(server);
}

#[test]
fn node_serves_every_leak_and_benign_endpoint() {
    require_root();
    let _g = serial();
    let cert = TestCert::new().unwrap();
    let server = Server::node(&cert).unwrap();
    eprintln!("node ready in {:?}", server.started_in());
    check_leaky_app(&server, &cert, false);
    assert_stops(server);
}

#[test]
fn flask_serves_every_leak_and_benign_endpoint() {
    require_root();
    let _g = serial();
    let cert = TestCert::new().unwrap();
    let server = Server::flask(&cert).unwrap();
    eprintln!("gunicorn ready in {:?}", server.started_in());
    assert!(server.pids().len() >= 2, "gunicorn master and worker");
    check_leaky_app(&server, &cert, true);
    assert_stops(server);
}

#[test]
fn nginx_serves_static_files() {
    require_root();
    let _g = serial();
    let cert = TestCert::new().unwrap();
    let server = Server::nginx(&cert, 1).unwrap();
    eprintln!("nginx ready in {:?}", server.started_in());
    for (path, size) in [NGINX_SMALL_FILE, NGINX_LARGE_FILE] {
        let r = curl(&cert, &server.url(path), &[]).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, deterministic_bytes(size));
    }
    assert!(server.dir().join("nginx.pid").exists());
    assert_stops(server);
}

#[test]
fn demo_api_serves_its_leaks_with_keep_alive() {
    require_root();
    let _g = serial();
    let cert = TestCert::new().unwrap();
    let server = Server::demo(&cert).unwrap();
    eprintln!("demo-api ready in {:?}", server.started_in());
    let key = Secret::random("ak_", 28);
    let r = curl(
        &cert,
        &server.url("/v1/items"),
        &["-H", &format!("x-api-key: {}", key.expose())],
    )
    .unwrap();
    assert_eq!(r.status, 400);
    assert!(contains(&r.body, key.expose()));
    let bearer = Secret::random("tk", 30);
    let r = curl(
        &cert,
        &server.url("/oauth/authorize?state=x"),
        &["-H", &format!("Authorization: Bearer {}", bearer.expose())],
    )
    .unwrap();
    assert_eq!(r.status, 302);
    assert!(r
        .header("location")
        .unwrap()
        .contains(&format!("#access_token={}", bearer.expose())));
    let r = curl(
        &cert,
        &server.url("/debug"),
        &["-H", &format!("Authorization: Bearer {}", bearer.expose())],
    )
    .unwrap();
    assert!(contains(&r.body, bearer.expose()));
    let (_, results) = PyClient::run(
        &cert,
        server.port(),
        "http.client",
        &["demo", "--rounds", "3"],
    )
    .unwrap();
    assert_eq!(results.len(), 18);
    assert!(results
        .iter()
        .all(|r| r.local_port == results[0].local_port));
    let urls: Vec<String> = (0..10).map(|_| server.url("/v1/status")).collect();
    curl_keepalive(&cert, &urls, &[]).unwrap();
    assert_stops(server);
}

#[test]
fn separate_root_serves_tls_with_its_own_libssl() {
    require_root();
    let _g = serial();
    let cert = TestCert::new().unwrap();
    let t = Instant::now();
    let server = separate_root(&cert).unwrap();
    eprintln!("separate root built and serving in {:?}", t.elapsed());
    let r = curl(&cert, &server.url("/v1/status"), &[]).unwrap();
    assert_eq!(r.status, 200);

    // The server's process runs in the chroot and maps the root's copy of libssl.
    let pid = *server.pids().last().unwrap();
    let root_link = std::fs::read_link(format!("/proc/{pid}/root")).unwrap();
    assert_eq!(
        std::fs::canonicalize(&root_link).unwrap(),
        std::fs::canonicalize(server.dir()).unwrap()
    );
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let libssl_line = maps
        .lines()
        .find(|l| l.contains("libssl.so"))
        .expect("libssl mapped");
    let inode: u64 = libssl_line
        .split_whitespace()
        .nth(4)
        .unwrap()
        .parse()
        .unwrap();
    // Seen from the host, the mapping's path is inside the root directory.
    let mapped = std::path::PathBuf::from(libssl_line.split_whitespace().nth(5).unwrap());
    let root_dir = std::fs::canonicalize(server.dir()).unwrap();
    let in_root = mapped
        .strip_prefix(&root_dir)
        .expect("libssl mapped from inside the root");
    use std::os::unix::fs::MetadataExt;
    let host_inode = std::fs::metadata(std::path::Path::new("/").join(in_root))
        .unwrap()
        .ino();
    let root_inode = std::fs::metadata(&mapped).unwrap().ino();
    assert_eq!(inode, root_inode, "mapped libssl is the root's copy");
    assert_ne!(
        inode, host_inode,
        "the root's libssl must be a different inode than the host's"
    );
    assert!(descendants(pid).contains(&pid));
    assert_stops(server);
}

#[test]
fn sensor_handle_reads_outputs_and_stops_a_stand_in() {
    // No root needed: a stand-in script plays the sensor's outside contract.
    let _g = serial();
    let fake = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("harness/fake_sensor.py");
    let wrapper = tempfile::Builder::new()
        .prefix("fake-sensor")
        .tempdir()
        .unwrap();
    let bin = wrapper.path().join("sensor");
    std::fs::write(
        &bin,
        format!(
            "#!/bin/sh\nexec {} {} \"$@\"\n",
            sensor_e2e::paths::system_python().display(),
            fake.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut sensor = sensor_e2e::Sensor::start_bin(&bin, &["--role", "any"]).unwrap();

    let pairs = sensor
        .wait_for_pairs(|p| p.len() == 1, std::time::Duration::from_secs(5))
        .unwrap();
    assert_eq!(pairs[0].connection.seq, Some(1));
    assert_eq!(pairs[0].request_header("x-api-key"), Some("<redacted>"));
    // The trailing partial line is not parsed yet.
    let findings = sensor.findings().unwrap();
    assert_eq!(findings.len(), 1);
    let key = Secret::random("k", 29);
    let expected = [
        sensor_e2e::ExpectedFinding::new(&key, "header", "x-api-key")
            .kind("api_key")
            .request("GET", "/v1/items", 401),
    ];
    let pids = [4242];
    sensor_e2e::check_findings(
        &sensor_e2e::findings_of(&findings, "server", &pids),
        &expected,
        "server",
    )
    .unwrap();
    // Wrong expectations are reported, not silently accepted.
    let wrong = [
        sensor_e2e::ExpectedFinding::new(&key, "header", "x-api-key")
            .request("GET", "/v1/items", 401)
            .encoding("base64"),
    ];
    let err = sensor_e2e::check_findings(&findings, &wrong, "server")
        .unwrap_err()
        .to_string();
    assert!(err.contains("encoding plain != base64"), "{err}");
    let err = sensor_e2e::check_findings(&findings, &[], "server")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unexpected finding"), "{err}");
    assert_eq!(
        sensor.metric_sum("sensor_masked_echoes_total").unwrap(),
        2.0
    );
    assert_no_secrets_ok(&sensor.all_output(), &key);
    sensor.stop().unwrap();
}

fn assert_no_secrets_ok(text: &str, key: &Secret) {
    sensor_e2e::assert_no_secrets("stand-in output", text, &[key]);
}

/// The leak scenario the sensor tests run gets the statuses its expectations
/// assume, from every app.
#[test]
fn leak_scenario_runs_against_every_app() {
    require_root();
    let _g = serial();
    let cert = TestCert::new().unwrap();
    for app in [
        sensor_e2e::scenario::App::FastApi,
        sensor_e2e::scenario::App::Flask,
        sensor_e2e::scenario::App::Node,
    ] {
        let server = match app {
            sensor_e2e::scenario::App::FastApi => Server::fastapi(&cert),
            sensor_e2e::scenario::App::Flask => Server::flask(&cert),
            sensor_e2e::scenario::App::Node => Server::node(&cert),
        }
        .unwrap();
        let t = Instant::now();
        let sc = sensor_e2e::scenario::run_leak_scenario(&server, &cert, app).unwrap();
        eprintln!(
            "{app:?}: {} requests in {:?}, {} expected findings per side",
            sc.requests,
            t.elapsed(),
            sc.expected.len()
        );
        assert_eq!(sc.client_pids.len(), sc.requests);
        let made = |m: &str, p: &str| {
            sc.made
                .iter()
                .find(|r| r.method == m && r.path == p)
                .unwrap()
                .clone()
        };
        assert_eq!(made("HEAD", "/v1/status").response_body_len, 0);
        assert_eq!(made("GET", "/v1/large").response_body_len, 1 << 20);
        assert_eq!(made("POST", "/v1/upload").request_body_len, Some(1 << 20));
        assert_eq!(made("GET", "/v1/stream/plain").response_body_len, 25 * 8192);
        assert_eq!(made("DELETE", "/v1/items/7").status, 204);
        assert_eq!(made("GET", "/v1/etag").response_body_len, 0);
        // (method, path) identifies each request: the leak tests match pairs by it.
        let mut keys: Vec<(&str, &str)> = sc
            .made
            .iter()
            .map(|r| (r.method, r.path.as_str()))
            .collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), sc.requests);
        assert_eq!(
            sc.expected.len(),
            if app == sensor_e2e::scenario::App::Flask {
                16
            } else {
                14
            }
        );
        assert_stops(server);
    }
}

/// Start-up time of each app, 3 runs each (`cargo test -p sensor-e2e --test
/// e2e_harness -- --ignored --nocapture startup`).
#[test]
#[ignore = "measurement, not a check"]
fn startup_times() {
    require_root();
    let _g = serial();
    let cert = TestCert::new().unwrap();
    type Start = fn(&TestCert) -> anyhow::Result<Server>;
    let apps: [(&str, Start); 6] = [
        ("uvicorn (FastAPI)", Server::fastapi),
        ("gunicorn (Flask)", Server::flask),
        ("nginx", |c| Server::nginx(c, 1)),
        ("demo_api.py", Server::demo),
        ("node", Server::node),
        ("separate root (build + start)", |c| separate_root(c)),
    ];
    for (name, start) in apps {
        let times: Vec<String> = (0..3)
            .map(|_| {
                let t = Instant::now();
                let s = start(&cert).unwrap();
                let total = t.elapsed();
                assert_stops(s);
                format!("{:.0} ms", total.as_secs_f64() * 1000.0)
            })
            .collect();
        eprintln!("startup {name}: {}", times.join(", "));
    }
}
