//! Profiles of the hot paths with `perf`: the sensor and the nginx worker
//! while nginx serves 1 KiB under wrk with full capture (the worker's profile
//! shows what the probes cost in the kernel), and `sensor replay` of the
//! mixed recording (the userspace pipeline alone).  The top symbols go to
//! the report; the full `perf report` text to `target/bench/profile-*.txt`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::json;

use super::proc::{run_measured, Proc};
use super::report::{BenchReport, Figure};
use super::sensor::{SensorOptions, Variant};
use super::servers::start_nginx;
use super::wrk::WrkLoad;
use super::{Ctx, PORT_NGINX, PORT_NGINX_UPSTREAM};

/// Sampling frequency (Hz): low enough to not disturb a 2-core machine much.
const FREQ: &str = "999";
/// Call chains from DWARF unwinding: release builds keep no frame pointers, so
/// `-g` alone loses the callers of libc's memmove/malloc, which is what one
/// needs to know to fix them.
const CALL_GRAPH: [&str; 2] = ["--call-graph", "dwarf,16384"];

/// The call-graph arguments of `perf record`: none in the smoke mode, where
/// DWARF unwinding in `perf report` took ~100 s of a run meant to stay under
/// two minutes (the smoke run checks the harness, not the callers).
fn call_graph(quick: bool) -> &'static [&'static str] {
    if quick {
        &[]
    } else {
        &CALL_GRAPH
    }
}
/// Symbols kept per profile in the report.
const TOP: usize = 15;
/// Of those, shown in the table.
const TOP_IN_TABLE: usize = 3;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Sym {
    pub percent: f64,
    pub dso: String,
    pub symbol: String,
}

/// Lines of `perf report --stdio --no-children -g none --fields overhead,dso,sym`:
/// `    12.34%  sensor  [.] sensor::pipeline::Pipeline::handle_raw`.
pub fn parse_report(text: &str) -> Vec<Sym> {
    let mut out = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        let Some((pct, rest)) = t.split_once('%') else {
            continue;
        };
        let Ok(percent) = pct.trim().parse::<f64>() else {
            continue;
        };
        let rest = rest.trim();
        let (dso, sym) = match rest.find("[.]").or_else(|| rest.find("[k]")) {
            Some(i) => (rest[..i].trim(), rest[i..].trim()),
            None => continue,
        };
        out.push(Sym {
            percent,
            dso: dso.to_string(),
            symbol: sym.trim_end().to_string(),
        });
    }
    out
}

fn perf_report(data: &Path, txt_out: &Path, with_callers: bool) -> anyhow::Result<Vec<Sym>> {
    let out = Command::new("perf")
        .args(["report", "--stdio", "--no-children", "-g", "none"])
        .args([
            "--fields",
            "overhead,dso,sym",
            "--percent-limit",
            "0.3",
            "-i",
        ])
        .arg(data)
        .output()
        .context("running perf report")?;
    if !out.status.success() {
        bail!(
            "perf report failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    std::fs::write(txt_out, &text)?;
    // Who calls the hot symbols: the callers' chains of everything above 1 %.
    if !with_callers {
        let mut syms = parse_report(&text);
        syms.truncate(TOP);
        return Ok(syms);
    }
    let graph = Command::new("perf")
        .args(["report", "--stdio", "--no-children", "-G"])
        .args(["--percent-limit", "1", "-i"])
        .arg(data)
        .output()
        .context("running perf report -G")?;
    std::fs::write(
        txt_out.with_extension("callers.txt"),
        String::from_utf8_lossy(&graph.stdout).as_bytes(),
    )?;
    let mut syms = parse_report(&text);
    syms.truncate(TOP);
    Ok(syms)
}

/// `perf record -g` of `pid` for `secs`, started now (in the background).
fn record_pid(pid: u32, secs: u64, quick: bool, data: &Path, log: &Path) -> anyhow::Result<Proc> {
    let mut c = Command::new("perf");
    c.args(["record", "-F", FREQ])
        .args(call_graph(quick))
        .args(["-p", &pid.to_string(), "-o"])
        .arg(data)
        .args(["--", "sleep", &secs.to_string()]);
    Proc::spawn("perf record", &mut c, Some(log))
}

fn finish_record(mut p: Proc, secs: u64) -> anyhow::Result<()> {
    match p.wait_timeout(Duration::from_secs(secs + 60)) {
        Some(st) if st.success() => Ok(()),
        Some(st) => bail!("perf record exited with {st}{}", p.log_tail()),
        None => bail!("perf record did not finish"),
    }
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<BenchReport>> {
    let mut report = BenchReport::new("profile", ctx.quick);
    let dir = ctx.scratch("profile");
    std::fs::create_dir_all(&dir)?;
    let secs = if ctx.quick { 2 } else { ctx.seconds.max(10) };
    let mut profiles = serde_json::Map::new();

    // 1. Live: nginx 1 KiB under wrk, full capture.
    let nginx = start_nginx(&dir, &ctx.cert, PORT_NGINX, PORT_NGINX_UPSTREAM, 1024)?;
    let mut sensor = if ctx.sensor.is_some() {
        Some(ctx.start_sensor(Variant::Full, &SensorOptions::default())?)
    } else {
        None
    };
    let load = WrkLoad {
        url: nginx.url("/1k.bin"),
        threads: 1,
        connections: 16,
        duration: Duration::from_secs(secs + 2),
        private_libs: None,
        http2: false,
        headers: Vec::new(),
    };
    let wrk = std::thread::spawn(move || load.run());
    // Let the load reach its steady state before sampling.
    std::thread::sleep(Duration::from_secs(1));
    let mut recs = vec![(
        "nginx_worker",
        record_pid(
            nginx.worker,
            secs,
            ctx.quick,
            &dir.join("nginx.data"),
            &dir.join("perf-nginx.log"),
        )?,
        dir.join("nginx.data"),
    )];
    if let Some(s) = &sensor {
        recs.push((
            "sensor_live",
            record_pid(
                s.pid(),
                secs,
                ctx.quick,
                &dir.join("sensor.data"),
                &dir.join("perf-sensor.log"),
            )?,
            dir.join("sensor.data"),
        ));
    }
    let mut datas = Vec::new();
    for (name, p, data) in recs {
        finish_record(p, secs)?;
        datas.push((name, data));
    }
    let w = wrk
        .join()
        .map_err(|_| anyhow::anyhow!("the wrk thread panicked"))??;
    if let Some(s) = sensor.as_mut() {
        s.check_alive()?;
    }
    if let Some(s) = sensor {
        s.stop()?;
    }
    drop(nginx);
    for (name, data) in datas {
        let syms = perf_report(
            &data,
            &ctx.out_dir.join(format!("profile-{name}.txt")),
            !ctx.quick,
        )?;
        profiles.insert(name.into(), serde_json::to_value(&syms)?);
    }

    // 2. The userspace pipeline alone: replay of the mixed recording.
    if ctx.sensor.is_some() {
        let w = super::replay::workloads(ctx.quick)
            .into_iter()
            .find(|w| w.name == "mixed")
            .expect("the mixed workload exists");
        let rec = dir.join("mixed.rec");
        super::synth::write(&rec, &w, 0x5eed)?;
        let data = dir.join("replay.data");
        let mut c = Command::new("perf");
        c.args(["record", "-F", FREQ])
            .args(call_graph(ctx.quick))
            .arg("-o")
            .arg(&data)
            .arg("--")
            .arg(ctx.sensor_bin()?)
            .arg("replay")
            .arg(&rec)
            .arg("--findings")
            .arg(dir.join("findings.jsonl"))
            .arg("--fingerprint-key-file")
            .arg(dir.join("fingerprint.key"))
            // A bench has no live run whose fingerprints it must match.
            .arg("--create-fingerprint-key")
            .env("RUST_LOG", "warn");
        let m = run_measured(
            &mut c,
            std::fs::File::create(dir.join("replay.out"))?,
            std::fs::File::create(dir.join("replay.err"))?,
            Duration::from_secs(600),
        )?;
        if m.status != 0 {
            bail!(
                "perf record of sensor replay failed: {}",
                std::fs::read_to_string(dir.join("replay.err")).unwrap_or_default()
            );
        }
        let syms = perf_report(
            &data,
            &ctx.out_dir.join("profile-sensor_replay.txt"),
            !ctx.quick,
        )?;
        profiles.insert("sensor_replay".into(), serde_json::to_value(&syms)?);
    }

    for (name, syms) in &profiles {
        let syms: Vec<Sym> = serde_json::from_value(syms.clone()).unwrap_or_default();
        let line = syms
            .iter()
            .take(8)
            .map(|s| format!("{:.1}% {} ({})", s.percent, s.symbol, s.dso))
            .collect::<Vec<_>>()
            .join("; ");
        report.notes.push(format!("{name} top symbols: {line}"));
        for s in syms.iter().take(TOP_IN_TABLE) {
            report.figures.push(Figure::new(
                format!("{name}: {}", s.symbol),
                "% samples",
                vec![s.percent],
            ));
        }
    }
    report.params = json!({
        "seconds": secs,
        "frequency_hz": FREQ,
        "load": {"url": "/1k.bin", "wrk_threads": 1, "wrk_connections": 16, "requests_per_s": w.requests_per_s},
        "full_reports": "target/bench/profile-<name>.txt",
    });
    report.raw = serde_json::Value::Object(profiles);
    Ok(vec![report])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_perf_report_lines() {
        let text = "# Samples: 1K of event 'cpu-clock'\n#\n# Overhead  Shared Object  Symbol\n\
            # ........\n#\n\
            \x20   23.45%  sensor             [.] sensor::pipeline::Pipeline::handle_raw\n\
            \x20    5.10%  [kernel.kallsyms]  [k] uprobe_notify_resume\n\
            \x20    0.40%  libc.so.6          [.] __memmove_avx_unaligned_erms\n";
        let s = parse_report(text);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].percent, 23.45);
        assert_eq!(s[0].dso, "sensor");
        assert_eq!(s[0].symbol, "[.] sensor::pipeline::Pipeline::handle_raw");
        assert_eq!(s[1].dso, "[kernel.kallsyms]");
    }
}
