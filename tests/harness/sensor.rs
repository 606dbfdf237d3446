//! The sensor under test: `sensor run --findings F --pairs P --metrics-addr A
//! --api-addr B [extra]`, ready when `/readyz` answers 200.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::contract::{parse_lines, Finding, Pair};
use crate::net::{free_port, http_get};
use crate::paths::sensor_bin;
use crate::proc::{Process, DEFAULT_HARD_TIMEOUT};
use crate::secrets::redact;

/// How long the sensor may take to attach and answer /readyz.
pub const SENSOR_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `stop()` waits after SIGTERM before SIGKILL (contract: clean exit).
pub const SENSOR_STOP_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Sensor {
    process: Process,
    findings_path: PathBuf,
    pairs_path: PathBuf,
    metrics_addr: SocketAddr,
    api_addr: SocketAddr,
    started_in: Duration,
    stopped: bool,
    dir: tempfile::TempDir,
}

impl Sensor {
    /// Starts the sensor with `extra` arguments after the standard ones and
    /// waits for `/readyz`.
    pub fn start(extra: &[&str]) -> Result<Sensor> {
        Sensor::start_bin(&sensor_bin()?, extra)
    }

    /// As [`Sensor::start`], with an explicit binary.
    pub fn start_bin(bin: &Path, extra: &[&str]) -> Result<Sensor> {
        let dir = tempfile::Builder::new()
            .prefix("sensor-e2e-sensor")
            .tempdir()?;
        let findings_path = dir.path().join("findings.jsonl");
        let pairs_path = dir.path().join("pairs.jsonl");
        let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let api_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .arg("--findings")
            .arg(&findings_path)
            .arg("--pairs")
            .arg(&pairs_path)
            .arg("--metrics-addr")
            .arg(metrics_addr.to_string())
            .arg("--api-addr")
            .arg(api_addr.to_string())
            .args(extra);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let started = Instant::now();
        let process = Process::spawn("sensor", &cmd, DEFAULT_HARD_TIMEOUT, dir.path())?;
        let mut sensor = Sensor {
            process,
            findings_path,
            pairs_path,
            metrics_addr,
            api_addr,
            started_in: Duration::ZERO,
            stopped: false,
            dir,
        };
        sensor.wait_ready(SENSOR_READY_TIMEOUT)?;
        sensor.started_in = started.elapsed();
        Ok(sensor)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.process.try_exited() {
                bail!(
                    "sensor exited ({status}) before it was ready; stderr:\n{}",
                    self.stderr_tail()
                );
            }
            if let Ok((200, _)) = http_get(self.metrics_addr, "/readyz", Duration::from_secs(2)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "sensor not ready (/readyz on {}) within {timeout:?}; stderr:\n{}",
                    self.metrics_addr,
                    self.stderr_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.main_pid()
    }

    pub fn findings_path(&self) -> &Path {
        &self.findings_path
    }

    pub fn pairs_path(&self) -> &Path {
        &self.pairs_path
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every finding written so far.
    pub fn findings(&self) -> Result<Vec<Finding>> {
        parse_lines(&read_or_empty(&self.findings_path)?).context("findings file")
    }

    /// Every pair written so far.
    pub fn pairs(&self) -> Result<Vec<Pair>> {
        parse_lines(&read_or_empty(&self.pairs_path)?).context("pairs file")
    }

    /// Polls the findings until `pred` holds (returns them) or `timeout`.
    pub fn wait_for_findings(
        &self,
        pred: impl Fn(&[Finding]) -> bool,
        timeout: Duration,
    ) -> Result<Vec<Finding>> {
        self.wait_for(|| self.findings(), pred, timeout, "findings")
    }

    /// Polls the pairs until `pred` holds (returns them) or `timeout`.
    pub fn wait_for_pairs(
        &self,
        pred: impl Fn(&[Pair]) -> bool,
        timeout: Duration,
    ) -> Result<Vec<Pair>> {
        self.wait_for(|| self.pairs(), pred, timeout, "pairs")
    }

    fn wait_for<T>(
        &self,
        read: impl Fn() -> Result<Vec<T>>,
        pred: impl Fn(&[T]) -> bool,
        timeout: Duration,
        what: &str,
    ) -> Result<Vec<T>> {
        let deadline = Instant::now() + timeout;
        loop {
            let items = read()?;
            if pred(&items) {
                return Ok(items);
            }
            if Instant::now() >= deadline {
                bail!(
                    "expected {what} did not appear within {timeout:?} ({} so far); sensor stderr:\n{}",
                    items.len(),
                    self.stderr_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The Prometheus text from `/metrics`.
    pub fn metrics(&self) -> Result<String> {
        let (status, body) = http_get(self.metrics_addr, "/metrics", Duration::from_secs(5))?;
        if status != 200 {
            bail!("/metrics answered {status}");
        }
        Ok(body)
    }

    /// Sum of every sample of `name` (all label sets) in `/metrics`.
    pub fn metric_sum(&self, name: &str) -> Result<f64> {
        Ok(metric_sum(&self.metrics()?, name))
    }

    /// Sends `signal` (e.g. SIGHUP) to the sensor process.
    pub fn signal(&self, signal: i32) -> Result<()> {
        self.process.signal_main(signal)
    }

    /// SIGTERM, then wait up to [`SENSOR_STOP_TIMEOUT`]; an error if it had to
    /// be killed or exited non-zero.
    pub fn stop(&mut self) -> Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        if self.process.try_exited().is_some() {
            bail!("sensor had already exited; stderr:\n{}", self.stderr_tail());
        }
        self.process.signal_main(libc::SIGTERM)?;
        match self.process.wait_timeout(SENSOR_STOP_TIMEOUT) {
            Some(status) if status.success() => Ok(()),
            Some(status) => bail!(
                "sensor exited with {status} on SIGTERM; stderr:\n{}",
                self.stderr_tail()
            ),
            None => {
                self.process.kill();
                bail!(
                    "sensor did not exit within {SENSOR_STOP_TIMEOUT:?} of SIGTERM; stderr:\n{}",
                    self.stderr_tail()
                )
            }
        }
    }

    /// The sensor's stderr (its logs), raw: for secret checks, not printing.
    pub fn stderr(&self) -> String {
        self.process.stderr()
    }

    /// The last lines of the log, secrets redacted.
    pub fn stderr_tail(&self) -> String {
        self.process.stderr_tail()
    }

    /// Everything the sensor emitted (findings, pairs, logs, stdout, and the
    /// metrics if it still runs), for [`crate::assert_no_secrets`].
    pub fn all_output(&self) -> String {
        let mut all = String::new();
        all.push_str(&read_or_empty(&self.findings_path).unwrap_or_default());
        all.push_str(&read_or_empty(&self.pairs_path).unwrap_or_default());
        all.push_str(&self.process.stderr());
        all.push_str(&self.process.stdout());
        if !self.stopped {
            all.push_str(&self.metrics().unwrap_or_default());
        }
        all
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- sensor stderr (tail, secrets redacted) ---\n{}",
                redact(&self.stderr_tail())
            );
        }
        if !self.stopped {
            let _ = self.stop();
        }
        self.process.kill();
    }
}

/// Sum of every sample of metric `name` in Prometheus text.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    metric_sum_where(text, name, &[])
}

/// Sum of the samples of `name` whose labels include every `(label, value)`.
pub fn metric_sum_where(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn read_or_empty(path: &Path) -> Result<String> {
    match std::fs::read(path) {
        Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::metric_sum;

    #[test]
    fn metric_sum_adds_label_sets_and_ignores_prefixes() {
        let text = "# HELP x\nsensor_http_pairs_total{role=\"server\"} 3\nsensor_http_pairs_total{role=\"client\"} 2\nsensor_http_pairs_total_extra 9\n";
        assert_eq!(metric_sum(text, "sensor_http_pairs_total"), 5.0);
        assert_eq!(metric_sum(text, "sensor_capture_lost_events_total"), 0.0);
        assert_eq!(
            super::metric_sum_where(text, "sensor_http_pairs_total", &[("role", "client")]),
            2.0
        );
    }
}
