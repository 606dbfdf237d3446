//! Userspace pipeline throughput: `sensor replay` of synthetic recordings
//! (small pairs, 1 MiB bodies, a mix with gzip/chunked/uploads and leaks),
//! per core (the replay process' own CPU time, from wait4).  Baselines in the
//! same run: reading the file (`cat FILE > /dev/null`) and replaying an empty
//! recording (start-up cost, subtracted from the per-core figures).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::bail;
use serde_json::json;

use super::http::prom_sum;
use super::proc::{run_measured, Measured};
use super::report::{BenchReport, Figure};
use super::synth::{self, Workload, Written};
use super::{ratio, Ctx};

/// A replay may take this long before it is considered hung.
const REPLAY_LIMIT: Duration = Duration::from_secs(600);

pub fn workloads(quick: bool) -> Vec<Workload> {
    let q = |full: usize, small: usize| if quick { small } else { full };
    let small = Workload {
        name: "small",
        connections: 64,
        pairs: q(200_000, 2_000),
        body_min: 1024,
        body_max: 1024,
        gzip_every: 0,
        chunked_every: 0,
        leak_every: 100,
        upload_every: 0,
        distinct_keys: false,
    };
    vec![
        small.clone(),
        Workload {
            name: "large",
            connections: 8,
            pairs: q(512, 8),
            body_min: 1 << 20,
            body_max: 1 << 20,
            gzip_every: 0,
            chunked_every: 0,
            leak_every: 16,
            upload_every: 0,
            distinct_keys: false,
        },
        Workload {
            name: "mixed",
            connections: 32,
            pairs: q(3_000, 60),
            body_min: 1024,
            body_max: 1 << 20,
            gzip_every: 5,
            chunked_every: 7,
            leak_every: 20,
            upload_every: 10,
            distinct_keys: false,
        },
        // As small, but every request carries a key no other pair has: what a
        // node with many distinct clients costs, and a figure no cache keyed
        // by credentials can improve by reuse.  Last, so the others keep
        // their seeds (0x5eed + index).
        Workload {
            name: "small-distinct",
            distinct_keys: true,
            ..small
        },
    ]
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ReplayOut {
    pub wall_s: f64,
    pub cpu_s: f64,
    pub max_rss_kib: u64,
    pub pairs: f64,
    pub findings: usize,
}

/// Runs `sensor replay` over `rec`; fails when the replay fails.
pub fn replay(ctx: &Ctx, rec: &Path, dir: &Path) -> anyhow::Result<ReplayOut> {
    std::fs::create_dir_all(dir)?;
    let findings = dir.join("findings.jsonl");
    let err = dir.join("stderr");
    let mut c = Command::new(ctx.sensor_bin()?);
    c.arg("replay")
        .arg(rec)
        .arg("--findings")
        .arg(&findings)
        .arg("--fingerprint-key-file")
        .arg(dir.join("fingerprint.key"))
        // A bench has no live run whose fingerprints it must match.
        .arg("--create-fingerprint-key")
        .arg("--print-metrics")
        .env("RUST_LOG", "warn");
    let m: Measured = run_measured(
        &mut c,
        File::create(dir.join("stdout"))?,
        File::create(&err)?,
        REPLAY_LIMIT,
    )?;
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    if m.status != 0 {
        bail!(
            "sensor replay {} failed (exit {}):\n{stderr}",
            rec.display(),
            m.status
        );
    }
    let findings_n = std::fs::read_to_string(&findings)
        .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0);
    Ok(ReplayOut {
        wall_s: m.wall.as_secs_f64(),
        cpu_s: m.cpu_s,
        max_rss_kib: m.max_rss_kib,
        pairs: prom_sum(&stderr, "sensor_http_pairs_total").unwrap_or(0.0),
        findings: findings_n,
    })
}

fn cat(path: &Path) -> anyhow::Result<Measured> {
    let mut c = Command::new("cat");
    c.arg(path);
    let m = run_measured(
        &mut c,
        File::create("/dev/null")?,
        File::create("/dev/null")?,
        REPLAY_LIMIT,
    )?;
    if m.status != 0 {
        bail!("cat {} failed", path.display());
    }
    Ok(m)
}

#[derive(Clone, Debug, serde::Serialize)]
struct Cell {
    run: usize,
    workload: String,
    cat_wall_s: f64,
    cat_cpu_s: f64,
    replay: ReplayOut,
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<BenchReport>> {
    let mut report = BenchReport::new("replay", ctx.quick);
    if ctx.sensor.is_none() {
        report
            .notes
            .push("skipped: needs the sensor binary (--no-sensor)".into());
        return Ok(vec![report]);
    }
    let dir = ctx.scratch("replay");
    std::fs::create_dir_all(&dir)?;
    let empty = dir.join("empty.rec");
    synth::write_empty(&empty)?;
    let mut recs: Vec<(Workload, PathBuf, Written)> = Vec::new();
    for (i, w) in workloads(ctx.quick).into_iter().enumerate() {
        let p = dir.join(format!("{}.rec", w.name));
        let written = synth::write(&p, &w, 0x5eed + i as u64)?;
        eprintln!(
            "xtask bench:   recording {}: {} pairs, {} leaks, {} events, {:.1} MB",
            w.name,
            written.pairs,
            written.leaks,
            written.events,
            written.file_bytes as f64 / 1e6
        );
        recs.push((w, p, written));
    }
    // Warm the page cache and the binary; not recorded.
    for (_, p, _) in &recs {
        cat(p)?;
    }
    replay(ctx, &empty, &dir.join("warm"))?;

    let mut cells: Vec<Cell> = Vec::new();
    let mut startup: Vec<f64> = Vec::new();
    for run in 0..ctx.runs {
        let s = replay(ctx, &empty, &dir.join(format!("empty-{run}")))?;
        startup.push(s.cpu_s);
        let n = recs.len();
        for k in 0..n {
            let (w, p, _) = &recs[(k + run) % n];
            let c = cat(p)?;
            let r = replay(ctx, p, &dir.join(format!("{}-{run}", w.name)))?;
            eprintln!(
                "xtask bench:   replay run {} {:<6} cpu {:.3} s  pairs {:.0}  findings {}",
                run + 1,
                w.name,
                r.cpu_s,
                r.pairs,
                r.findings
            );
            cells.push(Cell {
                run,
                workload: w.name.to_string(),
                cat_wall_s: c.wall.as_secs_f64(),
                cat_cpu_s: c.cpu_s,
                replay: r,
            });
        }
    }
    report.figures.push(Figure::new(
        "start-up (empty recording)",
        "cpu-s",
        startup.clone(),
    ));
    for (w, _, written) in &recs {
        let cs: Vec<&Cell> = cells.iter().filter(|c| c.workload == w.name).collect();
        let net = |c: &Cell| (c.replay.cpu_s - startup[c.run]).max(1e-6);
        let name = w.name;
        let mut pairs = Figure::new(
            format!("{name}: pairs/s per core"),
            "pairs/s",
            cs.iter().map(|c| c.replay.pairs / net(c)).collect(),
        );
        let mut mbs = Figure::new(
            format!("{name}: MB/s per core"),
            "MB/s",
            cs.iter()
                .map(|c| written.payload_bytes as f64 / 1e6 / net(c))
                .collect(),
        );
        if name == "small" || name == "small-distinct" {
            pairs = pairs.target("≥ 200000");
        }
        if name == "large" {
            mbs = mbs.target("≥ 1000");
        }
        report.figures.push(pairs);
        report.figures.push(mbs);
        report.figures.push(Figure::new(
            format!("{name}: replay CPU vs reading the file (cat wall)"),
            "x",
            cs.iter()
                .map(|c| ratio(c.replay.cpu_s, c.cat_wall_s))
                .collect(),
        ));
        report.figures.push(Figure::new(
            format!("{name}: pairs reported / written"),
            "share",
            cs.iter()
                .map(|c| ratio(c.replay.pairs, written.pairs as f64))
                .collect(),
        ));
        report.figures.push(Figure::new(
            format!("{name}: findings / leaks written"),
            "share",
            cs.iter()
                .map(|c| ratio(c.replay.findings as f64, written.leaks as f64))
                .collect(),
        ));
        if cs.iter().any(|c| c.replay.pairs < written.pairs as f64) {
            report.notes.push(format!(
                "{name}: the replay reported fewer pairs than the recording holds ({} written)",
                written.pairs
            ));
        }
    }
    report.params = json!({
        "runs": ctx.runs,
        "workloads": recs.iter().map(|(w, _, written)| json!({"workload": w, "written": written})).collect::<Vec<_>>(),
        "per_core": "pairs (or payload bytes) / (replay CPU seconds − the same run's empty-recording CPU seconds)",
    });
    report.raw = json!({"startup_cpu_s": startup, "cells": cells});
    Ok(vec![report])
}
