//! Event cost: what one probed SSL call costs, in nanoseconds.  A small C
//! program (evcost.c, compiled here against the system libssl) ping-pongs
//! 64-byte SSL_write/SSL_read on a loopback TLS connection; ns per call with
//! no sensor, count-only, full capture and exported entries, and the
//! difference against the no-sensor run of the same round.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::json;

use super::proc::run_measured;
use super::report::{BenchReport, Figure};
use super::sensor::{rotated, Variant};
use super::{ratio, Ctx, PORT_EVENT_COST};

const SOURCE: &str = include_str!("evcost.c");

pub fn compile(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let src = dir.join("evcost.c");
    let bin = dir.join("evcost");
    std::fs::write(&src, SOURCE)?;
    let out = Command::new("cc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&bin)
        .arg(&src)
        .args(["-lssl", "-lcrypto", "-lpthread"])
        .output()
        .context("running cc")?;
    if !out.status.success() {
        bail!(
            "compiling evcost.c failed (libssl headers missing? `apt-get install -y libssl-dev`):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(bin)
}

#[derive(serde::Deserialize, serde::Serialize, Clone, Debug)]
struct EvOut {
    iterations: u64,
    calls: u64,
    seconds: f64,
    cpu_seconds: f64,
    ns_per_call: f64,
    cpu_ns_per_call: f64,
}

fn run_once(ctx: &Ctx, bin: &Path, iterations: u64) -> anyhow::Result<EvOut> {
    let dir = ctx.scratch("evcost-run");
    std::fs::create_dir_all(&dir)?;
    let mut c = Command::new(bin);
    c.arg(&ctx.cert.cert)
        .arg(&ctx.cert.key)
        .arg(PORT_EVENT_COST.to_string())
        .arg(iterations.to_string());
    let out_path = dir.join("out");
    let err_path = dir.join("err");
    let m = run_measured(
        &mut c,
        std::fs::File::create(&out_path)?,
        std::fs::File::create(&err_path)?,
        Duration::from_secs(300),
    )?;
    let out = std::fs::read_to_string(&out_path)?;
    if m.status != 0 {
        bail!(
            "evcost failed (exit {}): {}{}",
            m.status,
            out,
            std::fs::read_to_string(&err_path).unwrap_or_default()
        );
    }
    serde_json::from_str(out.trim()).with_context(|| format!("evcost printed {out:?}"))
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<BenchReport>> {
    let mut report = BenchReport::new("event_cost", ctx.quick);
    let bin = compile(&ctx.scratch("evcost"))?;
    let iterations: u64 = if ctx.quick { 2_000 } else { 50_000 };
    let variants = ctx.variants();
    // Warm-up, not recorded.
    run_once(ctx, &bin, iterations / 10 + 1)?;
    let mut cells: Vec<(usize, Variant, EvOut)> = Vec::new();
    for run in 0..ctx.runs {
        for v in rotated(&variants, run) {
            let sensor = ctx.maybe_sensor(v)?;
            let out = run_once(ctx, &bin, iterations)?;
            if let Some(mut s) = sensor {
                s.check_alive()?;
                s.stop()?;
            }
            eprintln!(
                "xtask bench:   event cost run {} {:<15} {:>7.0} ns/call CPU, {:>7.0} wall",
                run + 1,
                v.label(),
                out.cpu_ns_per_call,
                out.ns_per_call
            );
            cells.push((run, v, out));
        }
    }
    for (what, pick) in [
        ("CPU", (|o: &EvOut| o.cpu_ns_per_call) as fn(&EvOut) -> f64),
        ("wall", |o: &EvOut| o.ns_per_call),
    ] {
        let get = |v: Variant, r: usize| {
            cells
                .iter()
                .find(|(run, var, _)| *run == r && *var == v)
                .map(|(_, _, o)| pick(o))
        };
        let base = |r| get(Variant::Baseline, r);
        let unit = format!("ns/call ({what})");
        report.figures.push(Figure::new(
            "64 B SSL call, no sensor",
            unit.clone(),
            (0..ctx.runs).filter_map(base).collect(),
        ));
        for v in [Variant::CountOnly, Variant::Full, Variant::Exported] {
            if !variants.contains(&v) {
                continue;
            }
            let l = v.label();
            report.figures.push(Figure::new(
                format!("64 B SSL call, {l}"),
                unit.clone(),
                (0..ctx.runs).filter_map(|r| get(v, r)).collect(),
            ));
            report.figures.push(Figure::new(
                format!("64 B SSL call, {l}: added"),
                unit.clone(),
                (0..ctx.runs)
                    .filter_map(|r| Some(get(v, r)? - base(r)?))
                    .collect(),
            ));
            if what == "CPU" {
                report.figures.push(Figure::new(
                    format!("64 B SSL call, {l}: time"),
                    "x",
                    (0..ctx.runs)
                        .filter_map(|r| Some(ratio(get(v, r)?, base(r)?)))
                        .collect(),
                ));
            }
        }
    }
    report.params = json!({
        "runs": ctx.runs,
        "iterations": iterations,
        "calls_per_iteration": 4,
        "message_bytes": 64,
        "what": "one thread drives both ends of a loopback TLS 1.3 connection: client SSL_write, server SSL_read, server SSL_write, client SSL_read; CPU = CLOCK_THREAD_CPUTIME_ID (probe traps are charged to it, preemption is not)",
    });
    report.raw = serde_json::to_value(
        cells
            .iter()
            .map(|(r, v, o)| json!({"run": r, "variant": v, "result": o}))
            .collect::<Vec<_>>(),
    )?;
    report.notes.push("both ends of the connection are in the probed process: each of the 4 calls per round trip is probed (entry + return); CPU figures are the precise ones on a shared machine".into());
    Ok(vec![report])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evcost_compiles_and_measures() {
        if crate::bench::which("cc").is_none() || crate::bench::which("openssl").is_none() {
            return; // the benchmark itself fails with a clear message then
        }
        let dir = tempfile::tempdir().unwrap();
        let bin = compile(dir.path()).unwrap();
        let cert = crate::bench::servers::make_cert(dir.path()).unwrap();
        // An ephemeral-range port of our own range, distinct from the benchmark's.
        let out = Command::new(&bin)
            .arg(&cert.cert)
            .arg(&cert.key)
            .arg((PORT_EVENT_COST + 300).to_string())
            .arg("200")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let o: EvOut = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(o.calls, 800);
        assert!(o.ns_per_call > 0.0 && o.cpu_ns_per_call > 0.0);
        assert!(o.cpu_seconds <= o.seconds * 1.05 + 0.001);
    }
}
