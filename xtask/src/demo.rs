//! `cargo xtask demo`: build everything, start the sensor and the bundled leaky
//! TLS demo API (Python standard library over the system OpenSSL), drive
//! traffic with curl, show what the sensor saw, then stop everything.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::util::{is_root, root};

#[derive(clap::Args, Default)]
pub struct Options {
    /// Open the live view (`sensor watch`) after the traffic, instead of a one-shot snapshot.
    #[arg(long)]
    pub watch: bool,
    /// Port of the demo API.
    #[arg(long, default_value_t = 8443)]
    pub port: u16,
}

/// A child process that is killed (by pid) when dropped.
struct Guard {
    child: Child,
    name: &'static str,
}

impl Drop for Guard {
    fn drop(&mut self) {
        // SIGTERM first so the sensor can detach and flush; then make sure.
        unsafe { libc_kill(self.child.id() as i32, 15) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("xtask: {} did not stop within 5 s; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn wait_port(port: u16, what: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{what} did not start listening on 127.0.0.1:{port} within {timeout:?}")
}

fn free_port(preferred: u16) -> u16 {
    if std::net::TcpListener::bind(("127.0.0.1", preferred)).is_ok() {
        return preferred;
    }
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("an ephemeral port");
    l.local_addr().expect("bound").port()
}

fn make_cert(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::piped())
        .output()
        .context("cannot run openssl to make the demo certificate (is the openssl package installed? `cargo xtask setup`)")?;
    if !out.status.success() {
        bail!(
            "openssl could not make the demo certificate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((cert, key))
}

/// The traffic: (description, curl arguments after the URL base).  The secrets
/// are demo values, made up for this run.
fn requests(base: &str) -> Vec<(&'static str, Vec<String>)> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        (
            "API key echoed in a 400 JSON error",
            s(&[
                "-H",
                "x-api-key: sk_live_demo4f9a8b7c6d5e4f3a2b1c",
                &format!("{base}/v1/items?limit=oops"),
            ]),
        ),
        (
            "bearer token put into an OAuth redirect fragment",
            s(&[
                "-H",
                "Authorization: Bearer demo-token-7Hq2LmX9pR4sT8vW",
                &format!("{base}/oauth/authorize?client_id=demo&response_type=token"),
            ]),
        ),
        (
            "debug endpoint dumping request headers",
            s(&[
                "-H",
                "Authorization: Bearer demo-token-Zk3Nn8Qw1Ee5Rr7T",
                &format!("{base}/debug"),
            ]),
        ),
        (
            "api_key query reflected into an HTML page",
            s(&[&format!(
                "{base}/search?q=shoes&api_key=demoQk8Zx2Lp5Vn7Bm3Hj9Ty"
            )]),
        ),
        (
            "masked echo (not a leak)",
            s(&[
                "-H",
                "x-api-key: sk_live_demoA1b2C3d4E5f6G7h8I9j0",
                &format!("{base}/v1/masked"),
            ]),
        ),
        (
            "plain JSON (not a leak)",
            s(&[
                "-H",
                "x-api-key: sk_live_demoP0o9I8u7Y6t5R4e3W2q1",
                &format!("{base}/v1/status"),
            ]),
        ),
    ]
}

pub fn run(o: &Options) -> anyhow::Result<()> {
    if !is_root() {
        bail!("the demo loads eBPF programs and needs root: run `sudo -E cargo xtask demo`");
    }
    crate::setup::run(&crate::setup::Options {
        without_test_runtimes: true,
        ..Default::default()
    })?;
    let sensor_bin = crate::build::run(&crate::build::Options::default())?;
    let ws = root();
    let dir = std::env::temp_dir().join(format!("sensor-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (cert, key) = make_cert(&dir)?;
    let findings = dir.join("findings.jsonl");
    let pairs = dir.join("pairs.jsonl");
    let metrics_port = free_port(9477);
    let api_port = free_port(9478);
    let api = format!("http://127.0.0.1:{api_port}");

    eprintln!(
        "xtask: starting the sensor (metrics on 127.0.0.1:{metrics_port}, live API on {api})"
    );
    let sensor = Guard {
        child: Command::new(&sensor_bin)
            .args(["run", "--findings"])
            .arg(&findings)
            .arg("--pairs")
            .arg(&pairs)
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(["--api-addr", &format!("127.0.0.1:{api_port}")])
            .arg("--state-dir")
            .arg(dir.join("state"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("sensor.log"))?)
            .spawn()
            .context("cannot start the sensor")?,
        name: "sensor",
    };
    wait_ready(metrics_port, Duration::from_secs(30)).with_context(|| {
        format!(
            "the sensor did not become ready; its log: {}",
            dir.join("sensor.log").display()
        )
    })?;

    let port = free_port(o.port);
    eprintln!(
        "xtask: starting the leaky demo API on https://127.0.0.1:{port} (tests/apps/demo_api.py)"
    );
    let _api = Guard {
        child: Command::new("python3")
            .arg(ws.join("tests/apps/demo_api.py"))
            .args(["--port", &port.to_string()])
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("demo_api.log"))?)
            .spawn()
            .context("cannot start python3 for the demo API")?,
        name: "demo API",
    };
    wait_port(port, "the demo API", Duration::from_secs(15))?;

    let base = format!("https://127.0.0.1:{port}");
    for (what, args) in requests(&base) {
        eprintln!("xtask: curl: {what}");
        let status = Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "--max-time", "10", "--cacert"])
            .arg(&cert)
            .args(&args)
            .status()
            .context("cannot run curl")?;
        if !status.success() {
            eprintln!("xtask: curl failed ({status}); continuing");
        }
    }
    // Findings reach the file within the sensor's batch latency (< 100 ms).
    std::thread::sleep(Duration::from_millis(700));

    println!("\n== pairs the sensor reassembled ({}) ==", pairs.display());
    for line in read_lines(&pairs) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        println!(
            "  {:<6} {} {:<45} -> {}  ({} bytes)",
            v["role"].as_str().unwrap_or("?"),
            v["request"]["method"].as_str().unwrap_or("?"),
            v["request"]["path"].as_str().unwrap_or("?"),
            v["response"]["status"],
            v["response"]["body_len"],
        );
    }
    println!("\n== findings ({}) ==", findings.display());
    let lines = read_lines(&findings);
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        println!(
            "  LEAK {} {} {} -> {}: {} {} ({}, fingerprint {}) came back in the {}{} as {}",
            v["severity"].as_str().unwrap_or("?"),
            v["request"]["method"].as_str().unwrap_or("?"),
            v["request"]["path"].as_str().unwrap_or("?"),
            v["response"]["status"],
            v["credential"]["source"].as_str().unwrap_or("?"),
            v["credential"]["name"].as_str().unwrap_or("?"),
            v["credential"]["type"].as_str().unwrap_or("?"),
            v["credential"]["fingerprint"].as_str().unwrap_or("?"),
            v["sink"]["location"].as_str().unwrap_or("?"),
            v["sink"]["name"]
                .as_str()
                .map(|n| format!(" {n}"))
                .unwrap_or_default(),
            v["sink"]["encoding"].as_str().unwrap_or("?"),
        );
    }
    if lines.is_empty() {
        println!("  (none: see {})", dir.join("sensor.log").display());
    }

    if o.watch {
        let _ = Command::new(&sensor_bin)
            .args(["watch", "--api", &api])
            .status();
    } else {
        println!("\n== live view snapshot (`sensor watch --once`; `cargo xtask demo --watch` opens the live view) ==");
        let _ = Command::new(&sensor_bin)
            .args(["watch", "--once", "--api", &api])
            .status();
    }
    drop(sensor);
    println!(
        "\nxtask: demo done; everything it started is stopped. Files kept in {}",
        dir.display()
    );
    if lines.is_empty() {
        bail!("the demo produced no findings");
    }
    Ok(())
}

fn wait_ready(metrics_port: u16, timeout: Duration) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", metrics_port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s
                .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
            let mut resp = String::new();
            let _ = s.read_to_string(&mut resp);
            if resp.starts_with("HTTP/1.1 200") {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("no 200 from http://127.0.0.1:{metrics_port}/readyz within {timeout:?}")
}

fn read_lines(p: &Path) -> Vec<String> {
    match std::fs::File::open(p) {
        Ok(f) => BufReader::new(f).lines().map_while(Result::ok).collect(),
        Err(_) => Vec::new(),
    }
}
