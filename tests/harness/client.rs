//! Real TLS clients: curl (one request, or several on one kept-alive
//! connection) and `tests/apps/client.py` (http.client / httpx).

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cert::TestCert;
use crate::paths::{apps_dir, system_python, venv_bin};
use crate::proc::{run_bounded, tail};
use crate::secrets::redact;

/// Longest a single client invocation may take.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// What curl saw for one request.
#[derive(Debug)]
pub struct CurlResponse {
    /// curl's pid (for client-side findings).
    pub pid: u32,
    pub status: u16,
    /// Raw response headers as received (status line included).
    pub headers: String,
    /// The body as delivered to the application (after --compressed decoding, if asked).
    pub body: Vec<u8>,
    /// Local port of the connection (to tell connections apart).
    pub local_port: u16,
}

impl CurlResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// `curl -sS --cacert <cert> <args…> <url>`: one request; `args` may add
/// headers (`-H`), a method (`-X`), a body (`--data-binary`), `--compressed`…
pub fn curl(cert: &TestCert, url: &str, args: &[&str]) -> Result<CurlResponse> {
    let dir = tempfile::tempdir()?;
    let body_path = dir.path().join("body");
    let headers_path = dir.path().join("headers");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "30", "--cacert"])
        .arg(cert.cert())
        .arg("-o")
        .arg(&body_path)
        .arg("-D")
        .arg(&headers_path)
        .args(["-w", "%{http_code} %{local_port}"])
        .args(args)
        .arg(url);
    let out = run_bounded("curl", &cmd, CLIENT_TIMEOUT)?;
    if !out.status.success() {
        bail!(
            "curl failed ({}): {}",
            out.status,
            redact(&String::from_utf8_lossy(&out.stderr))
        );
    }
    let w = String::from_utf8_lossy(&out.stdout);
    let mut fields = w.split_whitespace();
    let status = fields
        .next()
        .and_then(|s| s.parse().ok())
        .context("curl: no status")?;
    let local_port = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok(CurlResponse {
        pid: out.pid,
        status,
        headers: String::from_utf8_lossy(&std::fs::read(&headers_path).unwrap_or_default())
            .into_owned(),
        body: std::fs::read(&body_path).unwrap_or_default(),
        local_port,
    })
}

/// One curl process requesting every URL in order on ONE kept-alive
/// connection (`headers` sent with each); returns (status, body length) per
/// request and curl's pid.  Fails if curl opened more than one connection.
pub fn curl_keepalive(
    cert: &TestCert,
    urls: &[String],
    headers: &[&str],
) -> Result<(u32, Vec<(u16, u64)>)> {
    let headers: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let requests: Vec<(String, Vec<String>)> =
        urls.iter().map(|u| (u.clone(), headers.clone())).collect();
    curl_sequence(cert, &requests)
}

/// `tests/apps/client.py`, run with the tools venv's Python (or the system
/// Python for `--lib http.client` when no venv is needed).
pub struct PyClient;

/// One request as client.py reports it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct PyResult {
    pub status: u16,
    pub body_len: u64,
    pub body_sha256: String,
    pub local_port: Option<u16>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub i: Option<u64>,
    #[serde(default)]
    pub thread: Option<u64>,
}

impl PyClient {
    /// Runs `client.py <args>` against `port`; returns its pid and one result
    /// per request.
    pub fn run(
        cert: &TestCert,
        port: u16,
        lib: &str,
        args: &[&str],
    ) -> Result<(u32, Vec<PyResult>)> {
        let python = if lib == "httpx" {
            venv_bin("python")?
        } else {
            venv_bin("python").unwrap_or_else(|_| system_python())
        };
        let sub = args.first().context("client.py needs a subcommand")?;
        let mut cmd = Command::new(python);
        cmd.arg(apps_dir().join("client.py"))
            .arg(sub)
            .args(["--port", &port.to_string(), "--lib", lib])
            .arg("--cacert")
            .arg(cert.cert())
            .args(&args[1..])
            .env("PYTHONDONTWRITEBYTECODE", "1");
        let out = run_bounded("client.py", &cmd, CLIENT_TIMEOUT)?;
        if !out.status.success() {
            bail!(
                "client.py {sub} failed ({}):\n{}",
                out.status,
                tail(&redact(&String::from_utf8_lossy(&out.stderr)), 20)
            );
        }
        let results = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<Vec<PyResult>, _>>()
            .context("client.py output")?;
        Ok((out.pid, results))
    }
}

/// One curl process sending each (url, headers) in order on ONE kept-alive
/// connection (`--next` between requests); returns curl's pid and (status,
/// body length) per request.  Fails if curl opened more than one connection.
pub fn curl_sequence(
    cert: &TestCert,
    requests: &[(String, Vec<String>)],
) -> Result<(u32, Vec<(u16, u64)>)> {
    let mut cmd = Command::new("curl");
    for (n, (url, headers)) in requests.iter().enumerate() {
        if n > 0 {
            cmd.arg("--next");
        }
        cmd.args(["-sS", "--max-time", "60", "--cacert"])
            .arg(cert.cert())
            .args([
                "-w",
                "%{http_code} %{size_download} %{num_connects}\n",
                "-o",
                "/dev/null",
            ]);
        for h in headers {
            cmd.args(["-H", h]);
        }
        cmd.arg(url);
    }
    let out = run_bounded("curl", &cmd, CLIENT_TIMEOUT)?;
    if !out.status.success() {
        bail!(
            "curl failed ({}): {}",
            out.status,
            redact(&String::from_utf8_lossy(&out.stderr))
        );
    }
    let mut results = Vec::new();
    let mut connects = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<u64> = line
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect();
        if f.len() != 3 {
            bail!("curl -w output not understood: {line:?}");
        }
        results.push((f[0] as u16, f[1]));
        connects += f[2];
    }
    if results.len() != requests.len() {
        bail!(
            "curl reported {} results for {} requests",
            results.len(),
            requests.len()
        );
    }
    if connects != 1 {
        bail!(
            "curl opened {connects} connections for {} requests, expected 1",
            requests.len()
        );
    }
    Ok((out.pid, results))
}
