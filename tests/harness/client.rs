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
        header_in(&self.headers, name)
    }
}

/// The first `name:` line of a curl header dump.
fn header_in<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
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
    /// httpx's `response.http_version` (`plan`, `raw-h2`).
    #[serde(default)]
    pub http_version: Option<String>,
    /// Body bytes as received, before content decoding (httpx `plan`).
    #[serde(default)]
    pub raw_len: Option<u64>,
    /// `raw-h2`: each trailer's name, with the request headers whose values it repeats.
    #[serde(default)]
    pub trailers: Option<std::collections::BTreeMap<String, Vec<String>>>,
    /// `raw-h2`: how the stream ended (`end_stream`, or `reset` / `close` with `--end-early`).
    #[serde(default)]
    pub ended_by: Option<String>,
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

/// One transfer of a [`curl_h2`] run, as curl saw it.
#[derive(Debug)]
pub struct CurlTransfer {
    pub status: u16,
    /// curl's `%{http_version}`: `2` for HTTP/2.
    pub http_version: String,
    /// Raw response headers as curl dumped them (`-D`).
    pub headers: String,
    /// The body as received (not content-decoded unless `--compressed` was given).
    pub body: Vec<u8>,
    /// Connections curl opened for this transfer (`%{num_connects}`).
    pub connects: u64,
}

impl CurlTransfer {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }
}

/// What one [`curl_h2`] process did: its pid (client-side findings come
/// from it) and one transfer per request, in request order.
#[derive(Debug)]
pub struct CurlRun {
    pub pid: u32,
    pub transfers: Vec<CurlTransfer>,
}

/// One curl process sending every (url, args) with `--http2` on ONE
/// connection: one after the other (`--next`), or, with `parallel`, all at
/// once as concurrent streams multiplexed on it (`--parallel`).  `args` are
/// per request (`-H`, `-X`, `--data-binary`, …).  Fails unless every
/// response really was HTTP/2 and curl opened exactly one connection.
pub fn curl_h2(
    cert: &TestCert,
    requests: &[(String, Vec<String>)],
    parallel: bool,
) -> Result<CurlRun> {
    let dir = tempfile::tempdir()?;
    let mut cmd = Command::new("curl");
    if parallel {
        cmd.args(["--parallel", "--parallel-max", "100"]);
    }
    for (n, (url, args)) in requests.iter().enumerate() {
        if n > 0 {
            cmd.arg("--next");
        }
        cmd.args(["--http2", "-sS", "--max-time", "60", "--cacert"])
            .arg(cert.cert())
            .arg("-o")
            .arg(dir.path().join(format!("body{n}")))
            .arg("-D")
            .arg(dir.path().join(format!("headers{n}")))
            .arg("-w")
            .arg(format!(
                "{n} %{{http_code}} %{{http_version}} %{{num_connects}}\\n"
            ))
            .args(args)
            .arg(url);
    }
    let out = run_bounded("curl", &cmd, CLIENT_TIMEOUT)?;
    if !out.status.success() {
        bail!(
            "curl --http2 failed ({}): {}",
            out.status,
            redact(&String::from_utf8_lossy(&out.stderr))
        );
    }
    let mut seen: Vec<Option<(u16, String, u64)>> = vec![None; requests.len()];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let parsed = match f[..] {
            [n, code, version, connects] => n
                .parse::<usize>()
                .ok()
                .zip(code.parse::<u16>().ok())
                .zip(connects.parse::<u64>().ok())
                .map(|((n, code), connects)| (n, code, version.to_string(), connects)),
            _ => None,
        };
        let Some((n, code, version, connects)) = parsed else {
            bail!("curl -w output not understood: {line:?}");
        };
        match seen.get_mut(n) {
            Some(slot @ None) => *slot = Some((code, version, connects)),
            _ => bail!("curl reported transfer {n} twice or out of range"),
        }
    }
    let mut transfers = Vec::with_capacity(requests.len());
    for (n, result) in seen.into_iter().enumerate() {
        let Some((status, http_version, connects)) = result else {
            bail!("curl reported nothing for transfer {n}");
        };
        if http_version != "2" {
            bail!(
                "transfer {n} ({}) used HTTP/{http_version}, not HTTP/2",
                redact(&requests[n].0)
            );
        }
        let read = |name: String| std::fs::read(dir.path().join(name)).unwrap_or_default();
        transfers.push(CurlTransfer {
            status,
            http_version,
            headers: String::from_utf8_lossy(&read(format!("headers{n}"))).into_owned(),
            body: read(format!("body{n}")),
            connects,
        });
    }
    let connects: u64 = transfers.iter().map(|t| t.connects).sum();
    if connects != 1 {
        bail!(
            "curl opened {connects} connections for {} requests, expected 1",
            requests.len()
        );
    }
    Ok(CurlRun {
        pid: out.pid,
        transfers,
    })
}
