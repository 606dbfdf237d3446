//! Memory: the sensor's RSS (VmRSS now, VmHWM peak, from /proc/PID/status)
//! idle; with 10,000 idle TLS connections to nginx that each made one request
//! (so the sensor tracks them); and during 1,000 concurrent 1 MiB uploads
//! (every upload half-sent, held, then finished), with the default memory
//! budget and with a small one that the uploads overrun.  A fresh sensor per
//! scenario, so VmHWM is that scenario's peak.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::json;

use super::overhead::settle;
use super::proc::{Lines, Proc, RssSampler};
use super::report::{BenchReport, Figure};
use super::sensor::{Counters, Sensor, SensorOptions, Variant};
use super::servers::start_nginx;
use super::{Ctx, PORT_NGINX, PORT_NGINX_UPSTREAM};

const CLIENTS: &str = include_str!("bench_clients.py");

/// The sensor's own bounds (defaults), to read the figures against:
/// `sensor_common::DEFAULT_RING_BUFFER_BYTES` (kernel memory, but mapped into
/// the sensor and so part of its RSS once touched; events are handled in
/// place in it, with no queue after it) and
/// `sensor::pipeline::DEFAULT_MAX_BUFFERED_BYTES` (what all tracked
/// connections hold).  The bound of a run is its idle RSS plus these two.
const MAX_BUFFERED_BYTES: u64 = 512 * 1024 * 1024;
const RING_BYTES: u64 = sensor_common::DEFAULT_RING_BUFFER_BYTES as u64;

/// The bound of a run whose idle sensor had `idle_rss_kib`, in KiB.
fn bound_kib(idle_rss_kib: u64, budget: u64) -> u64 {
    idle_rss_kib + (RING_BYTES + budget) / 1024
}

/// The budget a scenario's sensor ran with.
fn budget_of(scenario: &str) -> u64 {
    if scenario.starts_with("small_budget") {
        SMALL_BUDGET_BYTES
    } else {
        MAX_BUFFERED_BYTES
    }
}

/// The budget of the second uploads scenario: small enough that the uploads
/// overrun it, so the budget (not the request body limit) is what bounds memory.
const SMALL_BUDGET_BYTES: u64 = 32 * 1024 * 1024;

/// How long the 10,000 connections are held before RSS is read.
const HOLD_SETTLE: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, Default, serde::Serialize)]
struct Cell {
    run: usize,
    scenario: &'static str,
    connections: usize,
    vm_rss_kib: u64,
    vm_hwm_kib: u64,
    vm_rss_peak_kib: u64,
    counters: Option<Counters>,
}

fn client(ctx: &Ctx, script: &Path, args: &[String]) -> anyhow::Result<(Proc, Lines)> {
    let mut c = Command::new(&ctx.python);
    c.arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut p = Proc::spawn_raw("bench client", &mut c, None)?;
    let lines = Lines::new(p.take_stdout().context("client stdout")?);
    Ok((p, lines))
}

/// "word OK ERRORS" → fails unless every connection succeeded.
fn expect_all(line: &str, want: usize) -> anyhow::Result<()> {
    let mut it = line.split_whitespace().skip(1);
    let ok: usize = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
    let errors: usize = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
    if ok != want || errors != 0 {
        bail!("the load client reports {line:?} (wanted {want} good connections); see its stderr above");
    }
    Ok(())
}

fn measure(
    s: &mut Sensor,
    run: usize,
    scenario: &'static str,
    conns: usize,
) -> anyhow::Result<Cell> {
    s.check_alive()?;
    let (rss, hwm) = s.rss_kib()?;
    Ok(Cell {
        run,
        scenario,
        connections: conns,
        vm_rss_kib: rss,
        vm_hwm_kib: hwm,
        vm_rss_peak_kib: rss,
        counters: Some(s.counters()?),
    })
}

/// `uploads` concurrent uploads of `size` bytes against a fresh sensor
/// (`budget`: its `--max-buffered-bytes`): half sent and held, then finished.
fn upload_scenario(
    ctx: &Ctx,
    script: &Path,
    run: usize,
    (uploads, upload_size): (usize, usize),
    budget: Option<u64>,
    names: (&'static str, &'static str),
) -> anyhow::Result<(Cell, Cell)> {
    let step = Duration::from_secs(600);
    let opts = SensorOptions {
        max_buffered_bytes: budget,
        ..SensorOptions::default()
    };
    let mut s = ctx.start_sensor(Variant::Full, &opts)?;
    let sampler = RssSampler::start(s.pid(), Duration::from_millis(100));
    let args: Vec<String> = [
        "upload",
        "--port",
        &PORT_NGINX.to_string(),
        "--conns",
        &uploads.to_string(),
        "--size",
        &upload_size.to_string(),
        "--path",
        "/upload",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    let (mut cl, lines) = client(ctx, script, &args)?;
    let line = lines.wait_for("half", step)?;
    expect_all(&line, uploads)?;
    // Let nginx read (and the sensor see) every first half.
    std::thread::sleep(if ctx.quick {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(3)
    });
    let mid = measure(&mut s, run, names.0, uploads)?;
    cl.stdin()
        .context("client stdin")?
        .write_all(b"go\n")
        .context("telling the client to finish")?;
    let line = lines.wait_for("done", step)?;
    expect_all(&line, uploads)?;
    settle(ctx);
    let mut done = measure(&mut s, run, names.1, uploads)?;
    done.vm_rss_peak_kib = sampler.stop().max(done.vm_rss_kib).max(mid.vm_rss_kib);
    cl.close_stdin();
    if cl.wait_timeout(Duration::from_secs(60)).is_none() {
        cl.stop(Duration::from_secs(5));
    }
    s.stop()?;
    Ok((mid, done))
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<BenchReport>> {
    let mut report = BenchReport::new("memory", ctx.quick);
    if ctx.sensor.is_none() {
        report
            .notes
            .push("skipped: needs the sensor (--no-sensor)".into());
        return Ok(vec![report]);
    }
    let (hold_conns, uploads, upload_size) = if ctx.quick {
        (200usize, 20usize, 1usize << 20)
    } else {
        (10_000, 1_000, 1 << 20)
    };
    let dir = ctx.scratch("memory");
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("bench_clients.py");
    std::fs::write(&script, CLIENTS)?;
    let nginx = start_nginx(
        &dir,
        &ctx.cert,
        PORT_NGINX,
        PORT_NGINX_UPSTREAM,
        (hold_conns + uploads) as u32 * 2 + 256,
    )?;
    let step = Duration::from_secs(600);
    let mut cells = Vec::new();
    for run in 0..ctx.runs {
        // Idle.
        let mut s = ctx.start_sensor(Variant::Full, &SensorOptions::default())?;
        std::thread::sleep(if ctx.quick {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(2)
        });
        let idle = measure(&mut s, run, "idle", 0)?;
        s.stop()?;

        // Idle connections, each having made one request.
        let mut s = ctx.start_sensor(Variant::Full, &SensorOptions::default())?;
        let sampler = RssSampler::start(s.pid(), Duration::from_millis(200));
        let args: Vec<String> = [
            "hold",
            "--port",
            &PORT_NGINX.to_string(),
            "--conns",
            &hold_conns.to_string(),
            "--path",
            "/1k.bin",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        let (mut cl, lines) = client(ctx, &script, &args)?;
        let line = lines.wait_for("ready", step)?;
        expect_all(&line, hold_conns)?;
        std::thread::sleep(HOLD_SETTLE);
        let mut held = measure(&mut s, run, "idle_connections", hold_conns)?;
        held.vm_rss_peak_kib = sampler.stop().max(held.vm_rss_kib);
        cl.close_stdin();
        if cl.wait_timeout(Duration::from_secs(60)).is_none() {
            cl.stop(Duration::from_secs(5));
        }
        s.stop()?;

        // Concurrent uploads, with the default budget and with a small one.
        let (mid, done) = upload_scenario(
            ctx,
            &script,
            run,
            (uploads, upload_size),
            None,
            ("uploads_half_sent", "uploads_done"),
        )?;
        let (small_mid, small_done) = upload_scenario(
            ctx,
            &script,
            run,
            (uploads, upload_size),
            Some(SMALL_BUDGET_BYTES),
            (
                "small_budget_uploads_half_sent",
                "small_budget_uploads_done",
            ),
        )?;
        eprintln!(
            "xtask bench:   memory run {}: idle {} KiB, {} conns {} KiB (hwm {}), uploads mid {} KiB, hwm {} KiB, bound {} KiB, {} of {} uploads paired, {} memory evictions",
            run + 1,
            idle.vm_rss_kib,
            hold_conns,
            held.vm_rss_kib,
            held.vm_hwm_kib,
            mid.vm_rss_kib,
            done.vm_hwm_kib,
            bound_kib(idle.vm_rss_kib, MAX_BUFFERED_BYTES),
            done.counters.map_or(0.0, |c| c.server_pairs),
            uploads,
            done.counters.map_or(0.0, |c| c.memory_evictions),
        );
        eprintln!(
            "xtask bench:   memory run {}: {} MiB budget: uploads hwm {} KiB, bound {} KiB, {} paired, {} memory evictions",
            run + 1,
            SMALL_BUDGET_BYTES >> 20,
            small_done.vm_hwm_kib,
            bound_kib(idle.vm_rss_kib, SMALL_BUDGET_BYTES),
            small_done.counters.map_or(0.0, |c| c.server_pairs),
            small_done.counters.map_or(0.0, |c| c.memory_evictions),
        );
        cells.extend([idle, held, mid, done, small_mid, small_done]);
    }
    drop(nginx);
    let mib = |k: u64| k as f64 / 1024.0;
    let per = |scenario: &str, f: &dyn Fn(&Cell) -> f64| -> Vec<f64> {
        cells
            .iter()
            .filter(|c| c.scenario == scenario)
            .map(f)
            .collect()
    };
    // Each run's bound, from that run's idle sensor.
    let idle_rss: Vec<u64> = cells
        .iter()
        .filter(|c| c.scenario == "idle")
        .map(|c| c.vm_rss_kib)
        .collect();
    let bound_of = |c: &Cell| {
        bound_kib(
            idle_rss.get(c.run).copied().unwrap_or(0),
            budget_of(c.scenario),
        )
    };
    let peak = |c: &Cell| c.vm_hwm_kib.max(c.vm_rss_peak_kib);
    let within = |scenario: &str| {
        let cs: Vec<&Cell> = cells.iter().filter(|c| c.scenario == scenario).collect();
        let ok = cs.iter().filter(|c| peak(c) <= bound_of(c)).count();
        (ok, cs.len())
    };
    let bound = "≤ idle + ring + budget".to_string();
    let paired_pct = |c: &Cell| {
        c.counters
            .map_or(f64::NAN, |k| 100.0 * k.server_pairs / uploads as f64)
    };
    report.figures.extend([
        Figure::new("idle: VmRSS", "MiB", per("idle", &|c| mib(c.vm_rss_kib))),
        Figure::new("idle: VmHWM", "MiB", per("idle", &|c| mib(c.vm_hwm_kib))),
        Figure::new(
            format!(
                "bound: idle VmRSS + ring {} + budget {} MiB",
                RING_BYTES >> 20,
                MAX_BUFFERED_BYTES >> 20
            ),
            "MiB",
            per("idle", &|c| {
                mib(bound_kib(c.vm_rss_kib, MAX_BUFFERED_BYTES))
            }),
        ),
        Figure::new(
            format!("{hold_conns} idle TLS connections: VmRSS"),
            "MiB",
            per("idle_connections", &|c| mib(c.vm_rss_kib)),
        )
        .target(bound.clone()),
        Figure::new(
            format!("{hold_conns} idle TLS connections: peak (VmHWM)"),
            "MiB",
            per("idle_connections", &|c| mib(peak(c))),
        )
        .target(bound.clone()),
        Figure::new(
            format!("{hold_conns} idle TLS connections: headroom to the bound"),
            "MiB",
            per("idle_connections", &|c| mib(bound_of(c)) - mib(peak(c))),
        )
        .target("> 0"),
        Figure::new(
            format!("{hold_conns} idle TLS connections: tracked by the sensor"),
            "conns",
            per("idle_connections", &|c| {
                c.counters.map_or(f64::NAN, |k| k.connections_active)
            }),
        ),
        Figure::new(
            format!("{uploads} concurrent 1 MiB uploads, half sent: VmRSS"),
            "MiB",
            per("uploads_half_sent", &|c| mib(c.vm_rss_kib)),
        )
        .target(bound.clone()),
        Figure::new(
            format!("{uploads} concurrent 1 MiB uploads: peak (VmHWM)"),
            "MiB",
            per("uploads_done", &|c| mib(peak(c))),
        )
        .target(bound),
        Figure::new(
            format!("{uploads} concurrent 1 MiB uploads: headroom to the bound"),
            "MiB",
            per("uploads_done", &|c| mib(bound_of(c)) - mib(peak(c))),
        )
        .target("> 0"),
        Figure::new(
            format!("{uploads} concurrent 1 MiB uploads: paired"),
            "%",
            per("uploads_done", &paired_pct),
        ),
        Figure::new(
            format!("{uploads} concurrent 1 MiB uploads: memory evictions"),
            "conns",
            per("uploads_done", &|c| {
                c.counters.map_or(f64::NAN, |k| k.memory_evictions)
            }),
        ),
        Figure::new(
            format!("{uploads} concurrent 1 MiB uploads: events lost, ring buffer full"),
            "events",
            per("uploads_done", &|c| {
                c.counters.map_or(f64::NAN, |k| k.lost_events)
            }),
        ),
        Figure::new(
            format!("{uploads} concurrent 1 MiB uploads: request body not kept"),
            "MiB",
            per("uploads_done", &|c| {
                c.counters.map_or(f64::NAN, |k| {
                    k.request_body_bytes_not_kept / (1024.0 * 1024.0)
                })
            }),
        ),
        Figure::new(
            format!(
                "{uploads} concurrent 1 MiB uploads, {} MiB budget: peak (VmHWM)",
                SMALL_BUDGET_BYTES >> 20
            ),
            "MiB",
            per("small_budget_uploads_done", &|c| mib(peak(c))),
        )
        .target(format!("≤ idle + ring + {} MiB", SMALL_BUDGET_BYTES >> 20)),
        Figure::new(
            format!(
                "{uploads} concurrent 1 MiB uploads, {} MiB budget: headroom to the bound",
                SMALL_BUDGET_BYTES >> 20
            ),
            "MiB",
            per("small_budget_uploads_done", &|c| {
                mib(bound_of(c)) - mib(peak(c))
            }),
        )
        .target("> 0"),
        Figure::new(
            format!(
                "{uploads} concurrent 1 MiB uploads, {} MiB budget: paired",
                SMALL_BUDGET_BYTES >> 20
            ),
            "%",
            per("small_budget_uploads_done", &paired_pct),
        ),
        Figure::new(
            format!(
                "{uploads} concurrent 1 MiB uploads, {} MiB budget: memory evictions",
                SMALL_BUDGET_BYTES >> 20
            ),
            "conns",
            per("small_budget_uploads_done", &|c| {
                c.counters.map_or(f64::NAN, |k| k.memory_evictions)
            }),
        ),
    ]);
    for (scenario, what) in [
        (
            "idle_connections",
            format!("{hold_conns} idle TLS connections"),
        ),
        (
            "uploads_done",
            format!("{uploads} concurrent 1 MiB uploads"),
        ),
        (
            "small_budget_uploads_done",
            format!(
                "{uploads} concurrent 1 MiB uploads with a {} MiB budget",
                SMALL_BUDGET_BYTES >> 20
            ),
        ),
    ] {
        let (ok, n) = within(scenario);
        report.notes.push(format!(
            "{what}: peak within the bound in {ok} of {n} runs{}",
            if ok == n { "" } else { " (NOT within)" }
        ));
    }
    report.params = json!({
        "runs": ctx.runs,
        "idle_connections": hold_conns,
        "uploads": uploads,
        "upload_bytes": upload_size,
        "bounds": {
            "max_buffered_bytes": MAX_BUFFERED_BYTES,
            "small_budget_bytes": SMALL_BUDGET_BYTES,
            "ring_buffer_bytes": RING_BYTES,
        },
        "client": "bench_clients.py (python asyncio + ssl)",
    });
    report.raw = serde_json::to_value(&cells)?;
    report.notes.push(format!(
        "bound = that run's idle VmRSS + the default ring buffer ({} MiB, where events are handled in place) + the pipeline's memory budget ({} MiB: what connections hold, counted by capacity and pinned events); allocator fragmentation and decompression scratch are not in it, so a peak inside it is measured, not guaranteed",
        RING_BYTES >> 20,
        MAX_BUFFERED_BYTES >> 20
    ));
    Ok(vec![report])
}
