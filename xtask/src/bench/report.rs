//! Results: min/median/max summaries, the machine they ran on, the JSON file
//! per benchmark and the table printed at the end.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// min / median / max of the runs of one figure.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Summary {
    pub min: f64,
    pub median: f64,
    pub max: f64,
    pub n: usize,
}

impl Summary {
    /// `None` when no run produced a finite value.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Summary {
            min: v[0],
            median,
            max: v[n - 1],
            n,
        })
    }
}

/// One number the benchmark reports, measured once per run.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Figure {
    /// What it is, e.g. `nginx 1KiB, full capture: requests/s`.
    pub name: String,
    /// `x` for a ratio against the same run's baseline, else a unit.
    pub unit: String,
    /// One value per run (JSON `null` where a run produced none).
    #[serde(deserialize_with = "nulls_as_nan")]
    pub runs: Vec<f64>,
    pub summary: Option<Summary>,
    /// The goal, when the brief states one (informative: benchmarks never fail on a number).
    pub target: Option<String>,
}

/// serde_json writes NaN as `null`; read it back as NaN.
fn nulls_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    let v: Vec<Option<f64>> = Deserialize::deserialize(d)?;
    Ok(v.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
}

impl Figure {
    pub fn new(name: impl Into<String>, unit: impl Into<String>, runs: Vec<f64>) -> Figure {
        let summary = Summary::of(&runs);
        Figure {
            name: name.into(),
            unit: unit.into(),
            runs,
            summary,
            target: None,
        }
    }

    pub fn target(mut self, t: impl Into<String>) -> Figure {
        self.target = Some(t.into());
        self
    }
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub mem_total_mib: u64,
    /// /proc/loadavg (1, 5, 15 min) when the benchmark started and ended: the
    /// machine is shared, a high load means noisier figures.
    pub load_before: [f64; 3],
    pub load_after: [f64; 3],
    /// Other `sensor` processes running when the benchmark started / ended
    /// (other people's tests): their probes fire too and inflate the cost.
    #[serde(default)]
    pub other_sensors_before: Vec<u32>,
    #[serde(default)]
    pub other_sensors_after: Vec<u32>,
}

impl Machine {
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, m)| m.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let nproc = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let mem_total_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map(|kib| kib / 1024)
            .unwrap_or(0);
        let load = loadavg();
        let others = running_sensors();
        Machine {
            nproc,
            cpu_model,
            kernel,
            mem_total_mib,
            load_before: load,
            load_after: load,
            other_sensors_before: others.clone(),
            other_sensors_after: others,
        }
    }
}

/// Pids of processes whose command name is `sensor`.
pub fn running_sensors() -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "sensor") {
                out.push(pid);
            }
        }
    }
    out.sort_unstable();
    out
}

pub fn loadavg() -> [f64; 3] {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = s
        .split_whitespace()
        .map(|x| x.parse::<f64>().unwrap_or(f64::NAN));
    [
        it.next().unwrap_or(f64::NAN),
        it.next().unwrap_or(f64::NAN),
        it.next().unwrap_or(f64::NAN),
    ]
}

/// Everything one benchmark measured; written to `target/bench/<benchmark>.json`.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct BenchReport {
    pub benchmark: String,
    pub timestamp: String,
    pub quick: bool,
    pub machine: Machine,
    /// Durations, sizes, connection counts, tool versions.
    pub params: serde_json::Value,
    pub figures: Vec<Figure>,
    /// Every run's raw measurements.
    pub raw: serde_json::Value,
    pub notes: Vec<String>,
}

impl BenchReport {
    pub fn new(benchmark: &str, quick: bool) -> BenchReport {
        BenchReport {
            benchmark: benchmark.to_string(),
            timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            quick,
            machine: Machine::probe(),
            params: serde_json::Value::Null,
            figures: Vec::new(),
            raw: serde_json::Value::Null,
            notes: Vec::new(),
        }
    }

    pub fn finish(&mut self) {
        self.machine.load_after = loadavg();
        self.machine.other_sensors_after = running_sensors();
        if !self.machine.other_sensors_before.is_empty()
            || !self.machine.other_sensors_after.is_empty()
        {
            self.notes.push(format!(
                "other sensor processes were running (pids {:?} at the start, {:?} at the end): their probes fire on the same libraries and inflate the cost measured here",
                self.machine.other_sensors_before, self.machine.other_sensors_after
            ));
        }
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<std::path::PathBuf> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{}.json", self.benchmark));
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(&path, text + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

/// Reads every `<name>.json` report in `dir` (for `--report`).
pub fn read_all(dir: &Path) -> anyhow::Result<Vec<BenchReport>> {
    let mut out = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {} (run `cargo xtask bench` first)", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    for p in paths {
        let text = std::fs::read_to_string(&p)?;
        match serde_json::from_str::<BenchReport>(&text) {
            Ok(r) => out.push(r),
            Err(e) => eprintln!("xtask bench: skipping {}: {e}", p.display()),
        }
    }
    Ok(out)
}

/// A value in a table cell: ratios with 2 decimals, large numbers without.
pub fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        "-".into()
    } else if x.abs() >= 1000.0 {
        format!("{x:.0}")
    } else if x.abs() >= 100.0 {
        format!("{x:.1}")
    } else if x.abs() >= 0.01 || x == 0.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.2e}")
    }
}

fn cells(f: &Figure) -> [String; 3] {
    match &f.summary {
        Some(s) => [fmt_num(s.min), fmt_num(s.median), fmt_num(s.max)],
        None => ["-".into(), "-".into(), "-".into()],
    }
}

/// The plain-text table printed to stdout.
pub fn text_table(reports: &[BenchReport]) -> String {
    let mut rows: Vec<[String; 7]> = vec![[
        "benchmark".into(),
        "figure".into(),
        "unit".into(),
        "min".into(),
        "median".into(),
        "max".into(),
        "target".into(),
    ]];
    for r in reports {
        for f in &r.figures {
            let [a, b, c] = cells(f);
            rows.push([
                r.benchmark.clone(),
                f.name.clone(),
                f.unit.clone(),
                a,
                b,
                c,
                f.target.clone().unwrap_or_default(),
            ]);
        }
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        for (j, (w, c)) in widths.iter().zip(row).enumerate() {
            let pad = w - c.chars().count();
            if (3..6).contains(&j) {
                let _ = write!(out, "{}{}  ", " ".repeat(pad), c);
            } else {
                let _ = write!(out, "{}{}  ", c, " ".repeat(pad));
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        if i == 0 {
            let total: usize = widths.iter().sum::<usize>() + 2 * 6;
            out.push_str(&"-".repeat(total));
            out.push('\n');
        }
    }
    for r in reports {
        for n in &r.notes {
            let _ = writeln!(out, "note [{}]: {n}", r.benchmark);
        }
    }
    out
}

/// The Markdown table for BENCHMARKS.md (`target/bench/summary.md`).
pub fn markdown(reports: &[BenchReport]) -> String {
    let mut out = String::new();
    if let Some(r) = reports.first() {
        let m = &r.machine;
        let _ = writeln!(
            out,
            "Machine: {} × {}, {} MiB RAM, kernel {}.\n",
            m.nproc, m.cpu_model, m.mem_total_mib, m.kernel
        );
    }
    out.push_str("| benchmark | figure | unit | min | median | max | target | runs | when (UTC) | load 1m before→after |\n");
    out.push_str("| --- | --- | --- | ---: | ---: | ---: | --- | ---: | --- | --- |\n");
    for r in reports {
        for f in &r.figures {
            let [a, b, c] = cells(f);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1}→{:.1} |",
                r.benchmark,
                f.name,
                f.unit,
                a,
                b,
                c,
                f.target.clone().unwrap_or_default(),
                f.summary.as_ref().map_or(0, |s| s.n),
                r.timestamp,
                r.machine.load_before[0],
                r.machine.load_after[0],
            );
        }
    }
    let notes: Vec<_> = reports
        .iter()
        .flat_map(|r| r.notes.iter().map(move |n| (r.benchmark.as_str(), n)))
        .collect();
    if !notes.is_empty() {
        out.push('\n');
        for (b, n) in notes {
            let _ = writeln!(out, "- **{b}**: {n}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_min_median_max() {
        let s = Summary::of(&[3.0, 1.0, 2.0, f64::NAN, 10.0]).unwrap();
        assert_eq!(
            s,
            Summary {
                min: 1.0,
                median: 2.5,
                max: 10.0,
                n: 4
            }
        );
        assert_eq!(Summary::of(&[5.0]).unwrap().median, 5.0);
        assert!(Summary::of(&[f64::NAN]).is_none());
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn table_has_every_figure() {
        let mut r = BenchReport::new("demo", true);
        r.figures
            .push(Figure::new("a: requests/s", "x", vec![0.5, 0.7, 0.6]).target("≥ 0.65"));
        r.figures.push(Figure::new("b", "ns", vec![]));
        let t = text_table(std::slice::from_ref(&r));
        assert!(t.contains("a: requests/s"), "{t}");
        assert!(t.contains("0.60"), "{t}");
        assert!(t.contains("≥ 0.65"), "{t}");
        r.figures.push(Figure::new("c", "x", vec![1.0, f64::NAN]));
        let json = serde_json::to_string(&r).unwrap();
        let back: BenchReport = serde_json::from_str(&json).unwrap();
        assert!(back.figures[2].runs[1].is_nan());
        let md = markdown(&[r]);
        assert!(md.contains("| demo | b | ns | - | - | - |"), "{md}");
    }
}
