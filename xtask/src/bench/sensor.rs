//! Starting `sensor run` in one of the measured modes, waiting until its
//! probes are attached (`/readyz`), reading `/metrics`, stopping it by pid.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;

use super::http::{get, prom_sum, prom_sum_where, wait_200};
use super::proc::{cpu_seconds, status_kib, Proc, STOP_GRACE};

/// How long the sensor may take to load and attach its probes.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// What runs next to the load: nothing (the baseline) or the sensor in one mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// No sensor.
    Baseline,
    /// `--probe-mode auto`: internal probe sites, data copied (what ships).
    Full,
    /// `--probe-mode exported`: the exported SSL_* entries (what comparable tools do).
    Exported,
    /// `--count-only`: probes count calls, copy nothing (the floor capture cannot beat).
    CountOnly,
}

impl Variant {
    pub const SENSOR: [Variant; 3] = [Variant::Full, Variant::Exported, Variant::CountOnly];

    pub fn label(self) -> &'static str {
        match self {
            Variant::Baseline => "no sensor",
            Variant::Full => "full capture",
            Variant::Exported => "exported SSL_*",
            Variant::CountOnly => "count only",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Variant::Baseline => "baseline",
            Variant::Full => "full",
            Variant::Exported => "exported",
            Variant::CountOnly => "count_only",
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            Variant::Baseline => &[],
            Variant::Full => &["--probe-mode", "auto"],
            Variant::Exported => &["--probe-mode", "exported"],
            Variant::CountOnly => &["--probe-mode", "auto", "--count-only"],
        }
    }
}

/// Variants in run `run`'s order: rotated by one each run so no variant always
/// runs first (or right after a warm-up) and drift spreads over all of them.
pub fn rotated(variants: &[Variant], run: usize) -> Vec<Variant> {
    let mut v = variants.to_vec();
    if !v.is_empty() {
        let k = run % v.len();
        v.rotate_left(k);
    }
    v
}

pub struct Sensor {
    pub proc: Proc,
    pub metrics_addr: SocketAddr,
    pub ready_after: Duration,
}

#[derive(Clone, Debug, Default)]
pub struct SensorOptions {
    pub ring_buffer_bytes: Option<u32>,
    /// `--pid` scope (empty: every process).
    pub pids: Vec<u32>,
    /// `--max-buffered-bytes` (the pipeline's memory budget).
    pub max_buffered_bytes: Option<u64>,
}

/// Starts the sensor and waits for `/readyz`.  `ports` are (metrics, api).
pub fn start(
    bin: &Path,
    variant: Variant,
    opts: &SensorOptions,
    dir: &Path,
    ports: (u16, u16),
) -> anyhow::Result<Sensor> {
    if variant == Variant::Baseline {
        bail!("the baseline runs without a sensor");
    }
    std::fs::create_dir_all(dir)?;
    let metrics_addr: SocketAddr = ([127, 0, 0, 1], ports.0).into();
    let api_addr: SocketAddr = ([127, 0, 0, 1], ports.1).into();
    let mut c = Command::new(bin);
    c.arg("run")
        .arg("--findings")
        .arg(dir.join("findings.jsonl"))
        .args(["--metrics-addr", &metrics_addr.to_string()])
        .args(["--api-addr", &api_addr.to_string()])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(variant.args())
        .env("RUST_LOG", "warn");
    if let Some(n) = opts.ring_buffer_bytes {
        c.args(["--ring-buffer-bytes", &n.to_string()]);
    }
    for p in &opts.pids {
        c.args(["--pid", &p.to_string()]);
    }
    if let Some(n) = opts.max_buffered_bytes {
        c.args(["--max-buffered-bytes", &n.to_string()]);
    }
    let mut proc = Proc::spawn("sensor", &mut c, Some(&dir.join("sensor.log")))?;
    let ready_after = wait_200(metrics_addr, "/readyz", READY_TIMEOUT, || {
        proc.ensure_alive()
    })
    .with_context(|| format!("sensor ({}) did not become ready", variant.label()))?;
    Ok(Sensor {
        proc,
        metrics_addr,
        ready_after,
    })
}

/// The figures read from `/metrics` (sums over labels).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Counters {
    pub events: f64,
    pub lost_events: f64,
    pub truncated_bytes: f64,
    /// Pairs where the probed process was the server (nginx, uvicorn): the
    /// load client (wrk, python) is probed too and adds its own client-role pairs.
    pub server_pairs: f64,
    pub pairs: f64,
    pub connections_active: f64,
    /// Connections dropped to keep the pipeline under its memory budget.
    pub memory_evictions: f64,
    /// Request body bytes past the kept first 64 KiB.
    pub request_body_bytes_not_kept: f64,
}

impl Counters {
    pub fn delta(&self, before: &Counters) -> Counters {
        Counters {
            events: self.events - before.events,
            lost_events: self.lost_events - before.lost_events,
            truncated_bytes: self.truncated_bytes - before.truncated_bytes,
            server_pairs: self.server_pairs - before.server_pairs,
            pairs: self.pairs - before.pairs,
            connections_active: self.connections_active,
            memory_evictions: self.memory_evictions - before.memory_evictions,
            request_body_bytes_not_kept: self.request_body_bytes_not_kept
                - before.request_body_bytes_not_kept,
        }
    }
}

impl Sensor {
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        cpu_seconds(self.pid())
    }

    /// (VmRSS, VmHWM) in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<(u64, u64)> {
        Ok((
            status_kib(self.pid(), "VmRSS")?,
            status_kib(self.pid(), "VmHWM")?,
        ))
    }

    pub fn metrics(&mut self) -> anyhow::Result<String> {
        self.proc.ensure_alive()?;
        let (status, body) = get(self.metrics_addr, "/metrics", Duration::from_secs(10))?;
        if status != 200 {
            bail!("GET /metrics answered {status}");
        }
        Ok(body)
    }

    pub fn counters(&mut self) -> anyhow::Result<Counters> {
        let m = self.metrics()?;
        let f = |n: &str| prom_sum(&m, n).unwrap_or(0.0);
        if prom_sum(&m, "sensor_capture_events_total").is_none()
            && prom_sum(&m, "sensor_build_info").is_none()
        {
            bail!("/metrics has none of the sensor's metrics:\n{m}");
        }
        Ok(Counters {
            events: f("sensor_capture_events_total"),
            lost_events: f("sensor_capture_lost_events_total"),
            truncated_bytes: f("sensor_capture_truncated_bytes_total"),
            server_pairs: prom_sum_where(&m, "sensor_http_pairs_total", "role=\"server\"")
                .unwrap_or(0.0),
            pairs: f("sensor_http_pairs_total"),
            connections_active: f("sensor_connections_active"),
            memory_evictions: prom_sum_where(
                &m,
                "sensor_connections_evicted_total",
                "reason=\"memory\"",
            )
            .unwrap_or(0.0),
            request_body_bytes_not_kept: f("sensor_http_request_body_bytes_not_kept_total"),
        })
    }

    /// Still running and still ready?
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        self.proc.ensure_alive()?;
        let (s, _) =
            get(self.metrics_addr, "/readyz", Duration::from_secs(10)).context("sensor /readyz")?;
        if s != 200 {
            bail!("sensor /readyz answered {s} under load");
        }
        Ok(())
    }

    /// Stops it; an exit other than by our SIGTERM is an error (the sensor died).
    pub fn stop(mut self) -> anyhow::Result<()> {
        if let Some(st) = self.proc.exited() {
            bail!(
                "sensor exited during the benchmark ({st}){}",
                self.proc.log_tail()
            );
        }
        match self.proc.stop(STOP_GRACE) {
            Some(st) if st.success() || st.code().is_none() => Ok(()),
            Some(st) => bail!(
                "sensor exited with {st} when stopped{}",
                self.proc.log_tail()
            ),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_moves_every_variant_to_the_front_once() {
        let all = [
            Variant::Baseline,
            Variant::Full,
            Variant::Exported,
            Variant::CountOnly,
        ];
        let firsts: Vec<Variant> = (0..4).map(|r| rotated(&all, r)[0]).collect();
        assert_eq!(firsts, all.to_vec());
        assert_eq!(rotated(&all, 5), rotated(&all, 1));
        assert!(rotated(&[], 3).is_empty());
    }
}
