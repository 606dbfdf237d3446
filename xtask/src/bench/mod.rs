//! `cargo xtask bench`: what the sensor costs, as ratios against a baseline
//! measured in the same run.
//!
//! Every benchmark repeats its measurement (`--runs`, default 5), runs the
//! baseline and the variants interleaved (rotated each run, so drift on a
//! shared machine hits all alike), and reports min/median/max.  Results go to
//! stdout (a table), `target/bench/<benchmark>.json` (every raw number, the
//! machine, the time) and `target/bench/summary.md`.
//!
//! Benchmarks never fail on a number — only when something is broken: a
//! server does not start, the sensor dies, a tool is missing.
//!
//! One module per benchmark: `event_cost`, `overhead`, `loss`, `memory`,
//! `replay`, `matcher`, `profile`.  `--quick` (run by `cargo xtask test`)
//! runs each once with tiny durations.

mod event_cost;
mod http;
mod loss;
mod matcher;
mod memory;
mod overhead;
mod proc;
mod profile;
mod replay;
mod report;
mod sensor;
mod servers;
mod synth;
mod wrk;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::util::{is_root, root};
use report::BenchReport;
use sensor::{Sensor, SensorOptions, Variant};
use servers::Cert;

/// Every benchmark, in the order they run.
pub const BENCHMARKS: &[&str] = &[
    "event_cost",
    "overhead",
    "loss",
    "memory",
    "replay",
    "matcher",
    "profile",
];

/// The TCP ports this bench uses (all on 127.0.0.1).
pub const PORT_NGINX: u16 = 24500;
pub const PORT_NGINX_UPSTREAM: u16 = 24501;
pub const PORT_UVICORN: u16 = 24502;
pub const PORT_EVENT_COST: u16 = 24503;
/// nginx's HTTP/2 listener (same server, same files as `PORT_NGINX`).
pub const PORT_NGINX_H2: u16 = 24504;
/// Sensor metrics/API ports are taken in pairs from here (a fresh pair per
/// start, so a port in TIME_WAIT never delays the next one).
const PORT_SENSOR_FIRST: u16 = 24600;
const PORT_SENSOR_LAST: u16 = 24999;

/// Open files needed for the 10,000-connection memory benchmark (client + server).
const WANT_NOFILE: u64 = 65536;

#[derive(clap::Args, Default, Clone)]
pub struct Options {
    /// Smoke mode: every benchmark once, tiny sizes, under 2 minutes (run by `cargo xtask test`).
    #[arg(long)]
    pub quick: bool,
    /// Repetitions of every measurement (default 5; 1 with --quick).
    #[arg(long)]
    pub runs: Option<usize>,
    /// Only these benchmarks (comma-separated): event_cost, overhead, loss, memory, replay, matcher, profile.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Seconds of load per wrk measurement (default 10; 1 with --quick).
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Seconds of load per loss measurement (default 60; 3 with --quick).
    #[arg(long)]
    pub loss_seconds: Option<u64>,
    /// Use this sensor binary instead of building one with `cargo xtask build`.
    #[arg(long, env = "SENSOR_BIN")]
    pub sensor: Option<PathBuf>,
    /// Baselines only (no sensor): checks the harness and measures the machine.
    #[arg(long)]
    pub no_sensor: bool,
    /// Overhead: give wrk a private copy of libssl and scope the sensor to the
    /// server (`--pid`), so only the server's SSL calls are probed.
    #[arg(long)]
    pub isolate_client: bool,
    /// Print the table of the JSON results already in target/bench and exit.
    #[arg(long)]
    pub report: bool,
}

/// What every benchmark needs.
pub struct Ctx {
    pub quick: bool,
    pub runs: usize,
    /// Seconds per wrk measurement.
    pub seconds: u64,
    pub loss_seconds: u64,
    pub isolate_client: bool,
    /// `target/bench` (`target/bench/quick` for `--quick`).
    pub out_dir: PathBuf,
    /// Scratch space, removed at the end.
    pub tmp: PathBuf,
    pub sensor: Option<PathBuf>,
    pub cert: Cert,
    /// Python for the load clients (stdlib only).
    pub python: PathBuf,
    /// The tools venv's python when it has uvicorn + fastapi.
    pub venv_python: Option<PathBuf>,
    next_port: Cell<u16>,
    next_dir: Cell<u32>,
}

impl Ctx {
    /// Baseline first, then the sensor modes (when a sensor is available).
    pub fn variants(&self) -> Vec<Variant> {
        let mut v = vec![Variant::Baseline];
        if self.sensor.is_some() {
            v.extend(Variant::SENSOR);
        }
        v
    }

    pub fn sensor_bin(&self) -> anyhow::Result<&Path> {
        self.sensor
            .as_deref()
            .context("no sensor binary (--no-sensor was given)")
    }

    /// A fresh scratch directory under the run's temporary directory.
    pub fn scratch(&self, what: &str) -> PathBuf {
        let n = self.next_dir.get();
        self.next_dir.set(n + 1);
        self.tmp.join(format!("{what}-{n}"))
    }

    fn sensor_ports(&self) -> (u16, u16) {
        let p = self.next_port.get();
        let next = if p + 3 > PORT_SENSOR_LAST {
            PORT_SENSOR_FIRST
        } else {
            p + 2
        };
        self.next_port.set(next);
        (p, p + 1)
    }

    pub fn start_sensor(&self, variant: Variant, opts: &SensorOptions) -> anyhow::Result<Sensor> {
        let dir = self.scratch(&format!("sensor-{}", variant.key()));
        sensor::start(self.sensor_bin()?, variant, opts, &dir, self.sensor_ports())
    }

    /// The sensor for `variant`, or none for the baseline.
    pub fn maybe_sensor(&self, variant: Variant) -> anyhow::Result<Option<Sensor>> {
        self.maybe_sensor_with(variant, &SensorOptions::default())
    }

    pub fn maybe_sensor_with(
        &self,
        variant: Variant,
        opts: &SensorOptions,
    ) -> anyhow::Result<Option<Sensor>> {
        if variant == Variant::Baseline {
            Ok(None)
        } else {
            self.start_sensor(variant, opts).map(Some)
        }
    }

    pub fn wrk_duration(&self) -> Duration {
        Duration::from_secs(self.seconds)
    }
}

pub fn run(o: &Options) -> anyhow::Result<()> {
    let ws = root();
    // The smoke run (`cargo xtask test`) writes apart, so it never replaces
    // the results of a real run.
    let out_dir = if o.quick && !o.report {
        ws.join("target/bench/quick")
    } else {
        ws.join("target/bench")
    };
    if o.report {
        let reports = report::read_all(&out_dir)?;
        print!("{}", report::text_table(&reports));
        std::fs::write(out_dir.join("summary.md"), report::markdown(&reports))?;
        return Ok(());
    }
    let selected: Vec<&str> = if o.only.is_empty() {
        BENCHMARKS.to_vec()
    } else {
        for name in &o.only {
            if !BENCHMARKS.contains(&name.as_str()) {
                bail!(
                    "unknown benchmark {name:?}; known: {}",
                    BENCHMARKS.join(", ")
                );
            }
        }
        BENCHMARKS
            .iter()
            .copied()
            .filter(|b| o.only.iter().any(|x| x == b))
            .collect()
    };
    for tool in ["nginx", "wrk", "h2load", "openssl", "cc", "perf"] {
        if which(tool).is_none() {
            bail!("`{tool}` is not installed; run `cargo xtask setup` (it installs the benchmark tools)");
        }
    }
    let sensor = if o.no_sensor {
        None
    } else {
        if !is_root() {
            bail!("the sensor loads eBPF programs: run `sudo -E cargo xtask bench` (or `--no-sensor` for the baselines alone)");
        }
        Some(match &o.sensor {
            Some(p) => p.clone(),
            // Numbers come from the release build; the smoke run (from
            // `cargo xtask test`) reuses the debug build the tests just made.
            None => crate::build::run(&crate::build::Options { release: !o.quick })?,
        })
    };
    if let Some(s) = &sensor {
        if !s.exists() {
            bail!("sensor binary {} does not exist", s.display());
        }
    }
    let nofile = proc::raise_nofile(WANT_NOFILE)?;
    std::fs::create_dir_all(&out_dir)?;
    let tmp_holder = tempfile::Builder::new()
        .prefix("tmp-")
        .tempdir_in(&out_dir)
        .context("creating a scratch directory under target/bench")?;
    let tmp = tmp_holder.path().to_path_buf();
    let cert = servers::make_cert(&tmp)?;
    let venv = ws.join(".tools/venv");
    let venv_python = servers::venv_with_uvicorn(&venv);
    let python = if venv.join("bin/python").exists() {
        venv.join("bin/python")
    } else {
        which("python3").context("python3 is needed for the load clients")?
    };
    let ctx = Ctx {
        quick: o.quick,
        runs: o.runs.unwrap_or(if o.quick { 1 } else { 5 }).max(1),
        seconds: o.seconds.unwrap_or(if o.quick { 1 } else { 10 }).max(1),
        loss_seconds: o
            .loss_seconds
            .unwrap_or(if o.quick { 3 } else { 60 })
            .max(1),
        isolate_client: o.isolate_client,
        out_dir: out_dir.clone(),
        tmp,
        sensor,
        cert,
        python,
        venv_python,
        next_port: Cell::new(PORT_SENSOR_FIRST),
        next_dir: Cell::new(0),
    };
    eprintln!(
        "xtask bench: {} run(s) per figure, {} s per load, sensor: {}, open-file limit {nofile}, load average {:?}",
        ctx.runs,
        ctx.seconds,
        ctx.sensor
            .as_deref()
            .map_or("none (baselines only)".into(), |p| p.display().to_string()),
        report::loadavg()
    );

    let started = Instant::now();
    let mut reports: Vec<BenchReport> = Vec::new();
    let mut failures = Vec::new();
    for name in selected {
        eprintln!("xtask bench: == {name} ==");
        let t = Instant::now();
        let result = match name {
            "event_cost" => event_cost::run(&ctx),
            "overhead" => overhead::run(&ctx),
            "loss" => loss::run(&ctx),
            "memory" => memory::run(&ctx),
            "replay" => replay::run(&ctx),
            "matcher" => matcher::run(&ctx),
            "profile" => profile::run(&ctx),
            _ => unreachable!("checked above"),
        };
        match result {
            Ok(mut list) => {
                for r in &mut list {
                    r.finish();
                    let p = r.write(&out_dir)?;
                    eprintln!(
                        "xtask bench: {name} done in {:.0?}, wrote {}",
                        t.elapsed(),
                        p.display()
                    );
                }
                reports.extend(list);
            }
            Err(e) => {
                eprintln!("xtask bench: {name} FAILED: {e:#}");
                failures.push(format!("{name}: {e:#}"));
            }
        }
    }
    print!("{}", report::text_table(&reports));
    // The summary covers every result on disk (benchmarks may be run one at a time).
    let all = report::read_all(&out_dir)?;
    std::fs::write(out_dir.join("summary.md"), report::markdown(&all))?;
    eprintln!(
        "xtask bench: finished in {:.0?}; results in {}",
        started.elapsed(),
        out_dir.display()
    );
    drop(ctx);
    drop(tmp_holder);
    if !failures.is_empty() {
        bail!("benchmarks broken:\n  {}", failures.join("\n  "));
    }
    Ok(())
}

pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// `part / whole`, NaN when `whole` is 0.
pub fn ratio(part: f64, whole: f64) -> f64 {
    if whole == 0.0 {
        f64::NAN
    } else {
        part / whole
    }
}
