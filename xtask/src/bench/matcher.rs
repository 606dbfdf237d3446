//! Matcher throughput: GB/s scanning a 1 MiB body for 1, 16, 64, 256
//! credentials, every variant against the naive baseline (one memmem pass per
//! needle) of the same run.  The measuring is done by the sensor crate's
//! example `matcher_bench` (release build), which prints JSON.

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::json;

use super::report::{BenchReport, Figure};
use super::{ratio, Ctx};
use crate::util::root;

const BASELINE: &str = "naive_memmem";

#[derive(Deserialize, serde::Serialize, Debug)]
struct Row {
    run: usize,
    needles: usize,
    variant: String,
    seconds_per_scan: f64,
    matches: u64,
    iterations: u64,
}

#[derive(Deserialize, Debug)]
struct Output {
    body_bytes: u64,
    builds: serde_json::Value,
    rows: Vec<Row>,
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<BenchReport>> {
    let mut report = BenchReport::new("matcher", ctx.quick);
    let min_ms = if ctx.quick { 10 } else { 300 };
    let mut c = Command::new("cargo");
    c.current_dir(root())
        .args(["run", "--quiet", "-p", "sensor"]);
    // The smoke run only checks that the harness works: the debug build
    // `cargo xtask test` already has is enough and saves a release build.
    if !ctx.quick {
        c.arg("--release");
    }
    c.args(["--example", "matcher_bench", "--"])
        .args(["--runs", &ctx.runs.to_string()])
        .args(["--min-ms", &min_ms.to_string()]);
    eprintln!("xtask bench:   $ {}", crate::util::display(&c));
    let out = c.output().context("running cargo")?;
    if !out.status.success() {
        bail!(
            "matcher_bench failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let o: Output = serde_json::from_str(text.trim())
        .with_context(|| format!("matcher_bench printed {text:?}"))?;
    let gbs = |r: &Row| o.body_bytes as f64 / r.seconds_per_scan / 1e9;
    let counts: BTreeSet<usize> = o.rows.iter().map(|r| r.needles).collect();
    let variants: BTreeSet<&str> = o.rows.iter().map(|r| r.variant.as_str()).collect();
    for &n in &counts {
        let find = |v: &str, run: usize| {
            o.rows
                .iter()
                .find(|r| r.needles == n && r.variant == v && r.run == run)
        };
        let runs = 0..ctx.runs;
        report.figures.push(Figure::new(
            format!("{n} needle(s), {BASELINE} (baseline)"),
            "GB/s",
            runs.clone()
                .filter_map(|r| find(BASELINE, r).map(gbs))
                .collect(),
        ));
        for v in variants.iter().filter(|v| **v != BASELINE) {
            report.figures.push(Figure::new(
                format!("{n} needle(s), {v}"),
                "GB/s",
                runs.clone().filter_map(|r| find(v, r).map(gbs)).collect(),
            ));
            report.figures.push(Figure::new(
                format!("{n} needle(s), {v} vs baseline"),
                "x",
                runs.clone()
                    .filter_map(|r| Some(ratio(gbs(find(v, r)?), gbs(find(BASELINE, r)?))))
                    .collect(),
            ));
        }
    }
    if !variants.iter().any(|v| v.starts_with("sensor")) {
        report.notes.push("the sensor's own matcher (sensor::leak::matcher) is not in this build yet: only the naive baseline and plain aho-corasick were measured".into());
    }
    report.params = json!({
        "runs": ctx.runs,
        "body_bytes": o.body_bytes,
        "min_ms_per_measurement": min_ms,
        "builds": o.builds,
        "harness": "sensor/examples/matcher_bench.rs",
    });
    report.raw = serde_json::to_value(&o.rows)?;
    Ok(vec![report])
}
