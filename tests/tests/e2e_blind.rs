//! End to end: what the sensor says it cannot see.  A process it attaches to
//! is never blind (node over TLS, OpenSSL linked into its program, is seen
//! through its exported `SSL_*`), both in `sensor check` and in `sensor
//! run`'s gauge and live API.  A Go TLS server named like a node agent
//! (kubelet) is listed and counted but as expected (`expected="true"`, which
//! the SensorBlindProcesses alert leaves out); the same program under an
//! application's name is blind and not expected.  Needs root, a built
//! sensor, go and node.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sensor_e2e::paths::sensor_bin;
use sensor_e2e::sensor::metric_sum_where;
use sensor_e2e::wait::SENSOR_LAG;
use sensor_e2e::{free_port, http_get, require_root, serial, Sensor, Server, TestCert};

const GO_TLS_SERVER: &str = r#"package main

import (
	"crypto/tls"
	"fmt"
	"os"
	"time"
)

func main() {
	cfg := &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		return nil, fmt.Errorf("no certificate")
	}}
	l, err := tls.Listen("tcp", os.Args[1], cfg)
	if err != nil {
		panic(err)
	}
	fmt.Println("listening")
	_ = l
	time.Sleep(300 * time.Second)
}
"#;

struct Kid(Child);
impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg(if tool == "go" { "version" } else { "--version" })
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Builds the Go TLS server once into `dir` (build cache under target/).
fn go_tls_server(dir: &Path) -> PathBuf {
    let src = dir.join("server.go");
    std::fs::write(&src, GO_TLS_SERVER).unwrap();
    let bin = dir.join("goapi");
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/go-build-cache");
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(&src)
        .env("GOCACHE", &cache)
        .env("GOPATH", dir.join("gopath"))
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .output()
        .expect("go build");
    assert!(
        out.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// Starts `bin` listening on a free loopback port; waits for "listening".
fn start(bin: &Path) -> Kid {
    let port = free_port().unwrap();
    let mut c = Command::new(bin)
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(c.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "listening");
    Kid(c)
}

struct Fixture {
    _dir: tempfile::TempDir,
    kubelet: Kid,
    goapi: Kid,
    node: Server,
    _cert: TestCert,
}

fn fixture() -> Option<Fixture> {
    if !(have("go") && have("node")) {
        assert!(
            std::env::var_os("SENSOR_REQUIRE_TOOLS").is_none(),
            "go and node are required"
        );
        eprintln!("skipped: needs go and node");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let goapi = go_tls_server(dir.path());
    let kubelet = dir.path().join("kubelet");
    std::fs::copy(&goapi, &kubelet).unwrap();
    let cert = TestCert::new().unwrap();
    let node = Server::node(&cert).unwrap();
    Some(Fixture {
        kubelet: start(&kubelet),
        goapi: start(&goapi),
        node,
        _dir: dir,
        _cert: cert,
    })
}

/// (reason, expected) of `pid` in a list of blind processes (JSON).
fn listed(list: &serde_json::Value, pid: u32) -> Option<(String, bool)> {
    list.as_array()?
        .iter()
        .find(|b| b["pid"].as_u64() == Some(pid as u64))
        .map(|b| {
            (
                b["reason"].as_str().unwrap_or("").to_string(),
                b["expected"].as_bool().unwrap_or(false),
            )
        })
}

/// `sensor check` listed node (static_openssl) and every TLS Go program
/// alike before: it judged with nothing attached, though `sensor run`
/// attaches node, and had no notion of expected ones.
#[test]
fn check_leaves_out_what_run_attaches_and_marks_node_agents_expected() {
    require_root();
    let _serial = serial();
    let Some(f) = fixture() else { return };
    let node_pid = f.node.main_pid().expect("node runs");
    let out = Command::new(sensor_bin().unwrap())
        .args(["check", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check --json: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let list = &v["tls_processes_not_probed_now"];
    assert_eq!(
        listed(list, node_pid),
        None,
        "node over TLS is attached by `sensor run`, not blind"
    );
    assert_eq!(listed(list, f.goapi.0.id()), Some(("go_tls".into(), false)));
    assert_eq!(
        listed(list, f.kubelet.0.id()),
        Some(("go_tls".into(), true))
    );
    let names: Vec<&str> = v["expected_blind"]
        .as_array()
        .expect("the list in force")
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    assert!(names.contains(&"kubelet") && names.contains(&"containerd"));
    // The text form says which are expected, and the list.
    let text = Command::new(sensor_bin().unwrap())
        .arg("check")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    let (blind, expected) = text
        .split_once("expected blind (")
        .unwrap_or_else(|| panic!("no expected section:\n{text}"));
    assert!(
        blind.contains(&format!("pid {:<7} goapi", f.goapi.0.id())),
        "{text}"
    );
    assert!(
        expected.contains(&format!("pid {:<7} kubelet", f.kubelet.0.id())),
        "{text}"
    );
    assert!(!text.contains(&format!("pid {node_pid} ")), "{text}");
}

/// `sensor run`: the gauge splits Go's blind processes by `expected`; node
/// (attached) is in neither, nor in the live API's list, where the agent is
/// `"expected": true`.
#[test]
fn run_counts_node_agents_as_expected_and_never_an_attached_process() {
    require_root();
    let _serial = serial();
    let Some(f) = fixture() else { return };
    let node_pid = f.node.main_pid().expect("node runs");
    let sensor = Sensor::start(&[]).unwrap();
    let deadline = Instant::now() + SENSOR_LAG;
    let (mut app, mut agents) = (0.0, 0.0);
    while Instant::now() < deadline {
        let m = sensor.metrics().unwrap();
        let g = |e| {
            metric_sum_where(
                &m,
                "sensor_blind_processes",
                &[("reason", "go_tls"), ("expected", e)],
            )
        };
        (app, agents) = (g("false"), g("true"));
        if app >= 1.0 && agents >= 1.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        app >= 1.0 && agents >= 1.0,
        "go_tls expected=false {app}, expected=true {agents}; stderr:\n{}",
        sensor.stderr_tail()
    );
    let (status, body) =
        http_get(sensor.api_addr(), "/api/v1/stats", Duration::from_secs(5)).unwrap();
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    let list = &stats["blind_processes"];
    assert_eq!(listed(list, node_pid), None, "node is attached: {list}");
    assert_eq!(
        listed(list, f.kubelet.0.id()),
        Some(("go_tls".into(), true))
    );
    assert_eq!(listed(list, f.goapi.0.id()), Some(("go_tls".into(), false)));
}
