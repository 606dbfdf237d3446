//! End to end: a real Prometheus (Debian package) scrapes a running sensor on
//! loopback, with the project's alert rules loaded, while the demo API leaks a
//! key over real TLS.  Asserts the leak counter as Prometheus stored it and
//! that `SensorCredentialLeak` becomes firing, with the labels the rules promise.
//! Needs root and a built sensor.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use sensor_e2e::net::{free_port, http_get};
use sensor_e2e::paths::workspace_root;
use sensor_e2e::proc::Process;
use sensor_e2e::{assert_no_secrets, curl, require_root, serial, Secret, Sensor, Server, TestCert};

/// Prometheus must have scraped, evaluated and fired within this.
const PROMETHEUS_DEADLINE: Duration = Duration::from_secs(60);

fn prometheus_bin() -> String {
    for p in ["/usr/bin/prometheus", "/usr/local/bin/prometheus"] {
        if std::path::Path::new(p).exists() {
            return p.to_string();
        }
    }
    panic!("prometheus is not installed: run `cargo xtask setup` (Debian package `prometheus`)");
}

/// GET a Prometheus API path and parse the JSON.
fn prom_get(addr: SocketAddr, path: &str) -> Option<serde_json::Value> {
    let (status, body) = http_get(addr, path, Duration::from_secs(5)).ok()?;
    if status != 200 {
        return None;
    }
    serde_json::from_str(&body).ok()
}

#[test]
fn prometheus_scrapes_the_leak_and_the_alert_fires() {
    require_root();
    let _serial = serial();
    let cert = TestCert::new().unwrap();
    let server = Server::demo(&cert).unwrap();
    let sensor = Sensor::start(&[]).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let rules = workspace_root().join("deploy/prometheus/sensor-rules.yaml");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {}\n\
         scrape_configs:\n  - job_name: sensor\n    static_configs:\n      - targets: ['{}']\n",
        rules.display(),
        sensor.metrics_addr()
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let prom_addr: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    let mut cmd = Command::new(prometheus_bin());
    cmd.arg(format!(
        "--config.file={}",
        dir.path().join("prometheus.yml").display()
    ))
    .arg(format!(
        "--storage.tsdb.path={}",
        dir.path().join("data").display()
    ))
    .arg(format!("--web.listen-address={prom_addr}"))
    .current_dir(dir.path());
    let mut prom =
        Process::spawn("prometheus", &cmd, Duration::from_secs(180), dir.path()).unwrap();

    // The leak: the demo API quotes a rejected x-api-key back in a 400 JSON error.
    let key = Secret::random("sk_live_", 28);
    let resp = curl(
        &cert,
        &server.url("/v1/items?limit=oops"),
        &["-H", &format!("x-api-key: {}", key.expose())],
    )
    .unwrap();
    assert_eq!(resp.status, 400);

    let deadline = Instant::now() + PROMETHEUS_DEADLINE;
    let mut stored = 0.0;
    let mut alert: Option<serde_json::Value> = None;
    while Instant::now() < deadline && alert.is_none() {
        std::thread::sleep(Duration::from_millis(500));
        if let Some(v) = prom_get(
            prom_addr,
            "/api/v1/query?query=sum(sensor_credential_leaks_total%7Brole%3D%22server%22%7D)",
        ) {
            stored = v["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0.0);
        }
        if let Some(v) = prom_get(prom_addr, "/api/v1/alerts") {
            alert = v["data"]["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| {
                    a["labels"]["alertname"] == "SensorCredentialLeak"
                        && a["labels"]["role"] == "server"
                        && a["state"] == "firing"
                })
                .cloned();
        }
    }
    let stderr = prom.stderr_tail();
    prom.kill();
    assert!(
        stored >= 1.0,
        "Prometheus never stored a server-side leak (last value {stored}); prometheus log:\n{stderr}"
    );
    let alert = alert.unwrap_or_else(|| panic!("SensorCredentialLeak never fired within {PROMETHEUS_DEADLINE:?}; prometheus log:\n{stderr}"));
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["labels"]["source"], "header");
    assert_eq!(alert["labels"]["sink"], "body");
    assert_eq!(alert["labels"]["type"], "api_key");
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .unwrap_or("")
            .contains("api_key"),
        "{alert}"
    );
    // What Prometheus stored has no secret in it.
    let (_, series) = http_get(
        prom_addr,
        "/api/v1/series?match%5B%5D=%7Bjob%3D%22sensor%22%7D",
        Duration::from_secs(5),
    )
    .unwrap_or_default();
    assert_no_secrets("prometheus series", &series, &[&key]);
    assert_no_secrets("sensor output", &sensor.all_output(), &[&key]);
}
