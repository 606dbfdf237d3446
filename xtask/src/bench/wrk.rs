//! Running the load: `wrk --latency` (HTTP/1.1), or `h2load` (HTTP/2, one
//! stream at a time per connection, as wrk keeps one request in flight per
//! connection) with per-request latencies from its `--log-file`.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct WrkResult {
    pub requests: u64,
    pub seconds: f64,
    pub requests_per_s: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub non_2xx: u64,
    pub socket_errors: u64,
}

#[derive(Clone, Debug)]
pub struct WrkLoad {
    pub url: String,
    pub threads: u32,
    pub connections: u32,
    pub duration: Duration,
    /// A directory with private copies of libssl/libcrypto for wrk
    /// (`LD_LIBRARY_PATH`): a different inode, so a sensor scoped to the server
    /// with `--pid` never attaches to the load generator.
    pub private_libs: Option<std::path::PathBuf>,
    /// HTTP/2 with h2load instead of HTTP/1.1 with wrk.
    pub http2: bool,
    /// Extra request headers (`Name: value`) on every request.
    pub headers: Vec<String>,
}

impl WrkLoad {
    /// What wrk and h2load take alike: the extra headers (`-H`) and the
    /// private libssl.
    fn client_options(&self, c: &mut Command) {
        for h in &self.headers {
            c.args(["-H", h]);
        }
        if let Some(dir) = &self.private_libs {
            c.env("LD_LIBRARY_PATH", dir);
        }
    }

    pub fn run(&self) -> anyhow::Result<WrkResult> {
        if self.http2 {
            return self.run_h2load();
        }
        let secs = self.duration.as_secs().max(1);
        let mut c = Command::new("wrk");
        c.args([
            "--latency",
            "-t",
            &self.threads.to_string(),
            "-c",
            &self.connections.to_string(),
            "-d",
            &format!("{secs}s"),
            "--timeout",
            "10s",
            &self.url,
        ]);
        self.client_options(&mut c);
        let what = crate::util::display(&c);
        let (text, errtext) = run_load(&mut c, secs)?;
        let r = parse(&text).with_context(|| format!("reading the output of {what}:\n{text}"))?;
        if r.requests == 0 {
            bail!("{what} completed no request:\n{text}{errtext}");
        }
        if r.non_2xx > 0 {
            bail!(
                "{what}: {} responses were not 2xx/3xx (server misconfigured?)",
                r.non_2xx
            );
        }
        Ok(r)
    }
}

/// Runs a load generator that stops itself after `secs` (the limit only
/// catches a hung run): its stdout and stderr, or why it failed.
fn run_load(c: &mut Command, secs: u64) -> anyhow::Result<(String, String)> {
    let what = crate::util::display(c);
    let dir = tempfile::tempdir()?;
    let out_path = dir.path().join("out");
    let out = std::fs::File::create(&out_path)?;
    let err = std::fs::File::create(dir.path().join("err"))?;
    let m = super::proc::run_measured(c, out, err, Duration::from_secs(secs + 60))?;
    let text = std::fs::read_to_string(&out_path)?;
    let errtext = std::fs::read_to_string(dir.path().join("err")).unwrap_or_default();
    if m.status != 0 {
        bail!("{what} failed (exit {}): {text}{errtext}", m.status);
    }
    Ok((text, errtext))
}

impl WrkLoad {
    fn run_h2load(&self) -> anyhow::Result<WrkResult> {
        let secs = self.duration.as_secs().max(1);
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("requests.tsv");
        let mut c = Command::new("h2load");
        c.args(["-t", &self.threads.to_string()])
            .args(["-c", &self.connections.to_string()])
            .args(["-m", "1", "-D", &secs.to_string()])
            .arg(format!("--log-file={}", log.display()))
            .arg(&self.url);
        self.client_options(&mut c);
        let what = crate::util::display(&c);
        let (text, _) = run_load(&mut c, secs)?;
        let log =
            std::fs::read_to_string(&log).with_context(|| format!("{what}: no --log-file"))?;
        let r = parse_h2load(&text, &log)
            .with_context(|| format!("reading the output of {what}:\n{text}"))?;
        if r.non_2xx > 0 || r.socket_errors > 0 {
            bail!(
                "{what}: {} responses were not 2xx/3xx, {} requests failed (server misconfigured?)",
                r.non_2xx,
                r.socket_errors
            );
        }
        Ok(r)
    }
}

/// h2load's summary (`finished in 6.00s, 65889.00 req/s`, `requests: …`,
/// `status codes: …`) and its per-request log (start µs, status, duration
/// µs): percentiles from the log, failed requests as `socket_errors`.
pub fn parse_h2load(text: &str, log: &str) -> anyhow::Result<WrkResult> {
    let mut r = WrkResult::default();
    let mut have_rps = false;
    let number = |s: &str| s.trim().parse::<u64>().ok();
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("finished in ") {
            // "6.00s, 65889.00 req/s, 72.26MB/s"
            let mut parts = rest.split(',');
            r.seconds = parts
                .next()
                .and_then(duration_us)
                .map_or(0.0, |us| us / 1e6);
            r.requests_per_s = parts
                .next()
                .and_then(|p| p.trim().strip_suffix(" req/s"))
                .and_then(|v| v.trim().parse().ok())
                .context("req/s")?;
            have_rps = true;
        } else if let Some(rest) = t.strip_prefix("requests:") {
            // "197667 total, 197683 started, 197667 done, 197667 succeeded, 0 failed, 0 errored, 0 timeout"
            for kv in rest.split(',') {
                let mut it = kv.split_whitespace();
                let (Some(n), Some(k)) = (it.next().and_then(number), it.next()) else {
                    continue;
                };
                match k {
                    "succeeded" => r.requests = n,
                    "failed" | "errored" | "timeout" => r.socket_errors += n,
                    _ => {}
                }
            }
        } else if let Some(rest) = t.strip_prefix("status codes:") {
            // "16000 2xx, 0 3xx, 0 4xx, 0 5xx"
            for kv in rest.split(',') {
                let mut it = kv.split_whitespace();
                if let (Some(n), Some("4xx" | "5xx")) = (it.next().and_then(number), it.next()) {
                    r.non_2xx += n;
                }
            }
        }
    }
    let mut us: Vec<f64> = log
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.trim().parse().ok())
        .collect();
    if !have_rps || us.is_empty() {
        bail!("no req/s summary or no per-request log");
    }
    us.sort_by(f64::total_cmp);
    let at = |q: f64| us[((us.len() - 1) as f64 * q).round() as usize];
    (r.p50_us, r.p90_us, r.p99_us) = (at(0.50), at(0.90), at(0.99));
    Ok(r)
}

/// Copies the system libssl.so.3 and libcrypto.so.3 into `dir` (see
/// [`WrkLoad::private_libs`]).
pub fn private_tls_libs(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let out = Command::new("ldd")
        .arg(super::which("wrk").context("wrk")?)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut copied = 0;
    for line in text.lines() {
        // "libssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x...)"
        let Some((name, rest)) = line.trim().split_once(" => ") else {
            continue;
        };
        if !(name.starts_with("libssl") || name.starts_with("libcrypto")) {
            continue;
        }
        let path = rest.split_whitespace().next().unwrap_or_default();
        std::fs::copy(path, dir.join(name)).with_context(|| format!("copying {path}"))?;
        copied += 1;
    }
    if copied == 0 {
        bail!("wrk does not link libssl dynamically; cannot give it a private copy");
    }
    Ok(dir.to_path_buf())
}

/// `390.00us`, `1.20ms`, `2.00s`, `1.00m` → microseconds.
fn duration_us(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e6)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600e6)
    } else {
        return None;
    };
    num.trim().parse::<f64>().ok().map(|x| x * mult)
}

pub fn parse(text: &str) -> anyhow::Result<WrkResult> {
    let mut r = WrkResult::default();
    let mut have_rps = false;
    for line in text.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            r.requests_per_s = v.trim().parse().context("Requests/sec")?;
            have_rps = true;
        } else if let Some((pct, v)) = t.split_once('%') {
            let v = duration_us(v);
            match (pct.trim(), v) {
                ("50", Some(v)) => r.p50_us = v,
                ("90", Some(v)) => r.p90_us = v,
                ("99", Some(v)) => r.p99_us = v,
                _ => {}
            }
        } else if t.contains(" requests in ") {
            // "123456 requests in 10.00s, 1.23GB read"
            let mut it = t.split_whitespace();
            r.requests = it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            r.seconds = t
                .split(" requests in ")
                .nth(1)
                .and_then(|x| x.split(',').next())
                .and_then(duration_us)
                .map(|us| us / 1e6)
                .unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            r.socket_errors = v
                .split(',')
                .filter_map(|kv| kv.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
        }
    }
    if !have_rps || r.p99_us == 0.0 {
        bail!("no Requests/sec or latency distribution (was --latency given?)");
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Running 2s test @ https://127.0.0.1:24500/1k.bin
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   620.51us  300.12us  12.03ms   91.23%
    Req/Sec    25.71k     1.02k   27.00k    80.00%
  Latency Distribution
     50%  583.00us
     75%  650.00us
     90%  744.00us
     99%    1.64ms
  51170 requests in 2.00s, 60.03MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:  25571.47
Transfer/sec:     30.00MB
";

    #[test]
    fn parses_wrk_latency_report() {
        let r = parse(SAMPLE).unwrap();
        assert_eq!(r.requests, 51170);
        assert!((r.seconds - 2.0).abs() < 1e-9);
        assert!((r.requests_per_s - 25571.47).abs() < 1e-6);
        assert!((r.p50_us - 583.0).abs() < 1e-9);
        assert!((r.p90_us - 744.0).abs() < 1e-9);
        assert!((r.p99_us - 1640.0).abs() < 1e-6);
        assert_eq!(r.socket_errors, 3);
        assert_eq!(r.non_2xx, 0);
    }

    #[test]
    fn parses_h2load_summary_and_log() {
        let text = "finished in 6.00s, 65889.50 req/s, 72.26MB/s
requests: 400 total, 401 started, 400 done, 398 succeeded, 1 failed, 1 errored, 0 timeout
status codes: 397 2xx, 0 3xx, 1 4xx, 0 5xx
time for request:       81us      6.56ms       233us        95us    99.17%
";
        let log: String = (1..=100)
            .map(|i| format!("17960686{i:08}\t200\t{}\n", i * 10))
            .collect();
        let r = parse_h2load(text, &log).unwrap();
        assert!((r.seconds - 6.0).abs() < 1e-9);
        assert!((r.requests_per_s - 65889.5).abs() < 1e-9);
        assert_eq!((r.requests, r.socket_errors, r.non_2xx), (398, 2, 1));
        assert_eq!((r.p50_us, r.p90_us, r.p99_us), (510.0, 900.0, 990.0));
        assert!(parse_h2load(text, "").is_err());
        assert!(parse_h2load("garbage", &log).is_err());
    }

    #[test]
    fn rejects_output_without_latency() {
        assert!(parse("Requests/sec: 5\n").is_err());
        assert!(parse("garbage").is_err());
        assert_eq!(duration_us("2.00s"), Some(2e6));
        assert_eq!(duration_us("1.5m"), Some(90e6));
        assert_eq!(duration_us("x"), None);
    }
}
