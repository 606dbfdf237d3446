//! Capture overhead on real TLS servers: nginx (1 KiB and 64 KiB static
//! files, TLS 1.3, keep-alive) and uvicorn/FastAPI (when the tools venv has
//! it) under `wrk --latency`, with no sensor and with the sensor in each mode.
//!
//! Per run and variant: requests/s, p50/p99 latency (ratios against the same
//! run's no-sensor baseline), the sensor's CPU seconds per 1,000 requests
//! (/proc/PID/stat before/after), the server's CPU per 1,000 requests (the
//! probes' cost lands there) and the share of requests the sensor paired.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::json;

use super::report::{BenchReport, Figure};
use super::sensor::{rotated, Counters, SensorOptions, Variant};
use super::servers::{start_nginx, start_nginx_on, start_uvicorn, Nginx};
use super::wrk::{private_tls_libs, WrkLoad, WrkResult};
use super::{ratio, Ctx, PORT_NGINX, PORT_NGINX_UPSTREAM, PORT_UVICORN};

/// The measured server and its load.
pub struct Target {
    pub name: String,
    pub server_pid: u32,
    pub load: WrkLoad,
    /// How the sensor is started (scoped to the server with `--isolate-client`).
    pub sensor: SensorOptions,
}

/// One (run, variant) measurement.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Cell {
    pub run: usize,
    pub variant: Variant,
    pub wrk: WrkResult,
    pub sensor_cpu_s: Option<f64>,
    pub server_cpu_s: f64,
    pub counters: Option<Counters>,
    pub sensor_ready_s: Option<f64>,
}

/// Lets the sensor drain what the load left in the ring buffer before it is read.
pub fn settle(ctx: &Ctx) {
    std::thread::sleep(Duration::from_millis(if ctx.quick { 300 } else { 1000 }));
}

/// Measures `target` under every variant, `ctx.runs` times, interleaved.
pub fn measure(ctx: &Ctx, target: &Target, variants: &[Variant]) -> anyhow::Result<Vec<Cell>> {
    // Warm-up (caches, TLS session setup, page faults): not recorded.
    WrkLoad {
        duration: Duration::from_secs(1),
        ..target.load.clone()
    }
    .run()?;
    let mut cells = Vec::new();
    for run in 0..ctx.runs {
        for v in rotated(variants, run) {
            let mut sensor = ctx.maybe_sensor_with(v, &target.sensor)?;
            let before = match sensor.as_mut() {
                Some(s) => Some((s.cpu_seconds()?, s.counters()?)),
                None => None,
            };
            let server0 = super::proc::cpu_seconds(target.server_pid)?;
            let wrk = target.load.run()?;
            let server_cpu_s = super::proc::cpu_seconds(target.server_pid)? - server0;
            let mut cell = Cell {
                run,
                variant: v,
                wrk,
                sensor_cpu_s: None,
                server_cpu_s,
                counters: None,
                sensor_ready_s: None,
            };
            if let (Some(mut s), Some((cpu0, c0))) = (sensor, before) {
                settle(ctx);
                s.check_alive()?;
                cell.counters = Some(s.counters()?.delta(&c0));
                cell.sensor_cpu_s = Some(s.cpu_seconds()? - cpu0);
                cell.sensor_ready_s = Some(s.ready_after.as_secs_f64());
                s.stop()?;
            }
            eprintln!(
                "xtask bench:   {} run {} {:<15} {:>9.0} req/s  p50 {:>8.0} us  p99 {:>8.0} us{}",
                target.name,
                run + 1,
                v.label(),
                cell.wrk.requests_per_s,
                cell.wrk.p50_us,
                cell.wrk.p99_us,
                cell.counters.map_or(String::new(), |c| format!(
                    "  pairs {:.0} lost {:.0}",
                    c.server_pairs, c.lost_events
                )),
            );
            cells.push(cell);
        }
    }
    Ok(cells)
}

fn by_run(cells: &[Cell], v: Variant, run: usize) -> Option<&Cell> {
    cells.iter().find(|c| c.variant == v && c.run == run)
}

/// One value per run: `f(variant cell, baseline cell)`.
pub fn per_run(
    ctx: &Ctx,
    cells: &[Cell],
    v: Variant,
    base: Variant,
    f: impl Fn(&Cell, &Cell) -> f64,
) -> Vec<f64> {
    (0..ctx.runs)
        .filter_map(|r| Some(f(by_run(cells, v, r)?, by_run(cells, base, r)?)))
        .collect()
}

/// The figures of one target.
pub fn figures(ctx: &Ctx, name: &str, cells: &[Cell], is_nginx_1k: bool) -> Vec<Figure> {
    let b = Variant::Baseline;
    let mut out = vec![
        Figure::new(
            format!("{name}, no sensor: requests/s"),
            "req/s",
            per_run(ctx, cells, b, b, |c, _| c.wrk.requests_per_s),
        ),
        Figure::new(
            format!("{name}, no sensor: p99 latency"),
            "us",
            per_run(ctx, cells, b, b, |c, _| c.wrk.p99_us),
        ),
    ];
    for v in Variant::SENSOR {
        if !cells.iter().any(|c| c.variant == v) {
            continue;
        }
        let l = v.label();
        let mut rps = Figure::new(
            format!("{name}, {l}: requests/s"),
            "x",
            per_run(ctx, cells, v, b, |c, base| {
                ratio(c.wrk.requests_per_s, base.wrk.requests_per_s)
            }),
        );
        let p50 = Figure::new(
            format!("{name}, {l}: p50 latency"),
            "x",
            per_run(ctx, cells, v, b, |c, base| {
                ratio(c.wrk.p50_us, base.wrk.p50_us)
            }),
        );
        let mut p99 = Figure::new(
            format!("{name}, {l}: p99 latency"),
            "x",
            per_run(ctx, cells, v, b, |c, base| {
                ratio(c.wrk.p99_us, base.wrk.p99_us)
            }),
        );
        if is_nginx_1k && v == Variant::Full {
            rps = rps.target("≥ 0.65");
            p99 = p99.target("≤ 1.5");
        }
        out.extend([rps, p50, p99]);
        out.push(Figure::new(
            format!("{name}, {l}: sensor CPU per 1k requests"),
            "cpu-s",
            per_run(ctx, cells, v, b, |c, _| {
                c.sensor_cpu_s.unwrap_or(f64::NAN) * 1000.0 / c.wrk.requests as f64
            }),
        ));
        out.push(Figure::new(
            format!("{name}, {l}: server CPU per request"),
            "x",
            per_run(ctx, cells, v, b, |c, base| {
                ratio(
                    c.server_cpu_s / c.wrk.requests as f64,
                    base.server_cpu_s / base.wrk.requests as f64,
                )
            }),
        ));
        if v != Variant::CountOnly {
            out.push(Figure::new(
                format!("{name}, {l}: requests paired by the sensor"),
                "share",
                per_run(ctx, cells, v, b, |c, _| {
                    c.counters
                        .map_or(f64::NAN, |k| ratio(k.server_pairs, c.wrk.requests as f64))
                }),
            ));
        }
    }
    if cells.iter().any(|c| c.variant == Variant::CountOnly)
        && cells.iter().any(|c| c.variant == Variant::Full)
    {
        let mut f = Figure::new(
            format!("{name}, full capture vs count-only floor: requests/s"),
            "x",
            per_run(ctx, cells, Variant::Full, Variant::CountOnly, |c, floor| {
                ratio(c.wrk.requests_per_s, floor.wrk.requests_per_s)
            }),
        );
        if is_nginx_1k {
            f = f.target("≥ 0.95");
        }
        out.push(f);
        // What the sensor adds at p99 above the probes' own traps: the p99
        // target is against no sensor, and the floor alone can exceed it.
        out.push(Figure::new(
            format!("{name}, full capture vs count-only floor: p99 latency"),
            "x",
            per_run(ctx, cells, Variant::Full, Variant::CountOnly, |c, floor| {
                ratio(c.wrk.p99_us, floor.wrk.p99_us)
            }),
        ));
    }
    out
}

/// The key wrk sends with the credential-bearing target: made up, shaped like
/// a live Stripe key so the sensor takes it for one (vendor prefix, random).
const BENCH_API_KEY: &str = "sk_live_bench7Qm2Xv9Lp4Rz8Wn1Kd6Tc3Y";

/// Files under `dir` (recursively, not following links) that contain `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            let kind = e.file_type()?;
            if kind.is_dir() {
                todo.push(e.path());
            } else if kind.is_file() {
                // Unreadable files (sockets gone, races with nginx) are skipped.
                if let Ok(b) = std::fs::read(e.path()) {
                    if b.windows(needle.len()).any(|w| w == needle) {
                        found.push(e.path());
                    }
                }
            }
        }
    }
    Ok(found)
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<BenchReport>> {
    let mut report = BenchReport::new("overhead", ctx.quick);
    let dir = ctx.scratch("overhead");
    let variants = ctx.variants();
    let nginx = start_nginx(&dir, &ctx.cert, PORT_NGINX, PORT_NGINX_UPSTREAM, 1024)?;
    // --isolate-client: wrk gets its own copy of libssl and the sensor is
    // scoped to the server, so only the server's SSL calls are probed.
    let private_libs = if ctx.isolate_client {
        Some(private_tls_libs(&dir.join("client-libs"))?)
    } else {
        None
    };
    let scoped = |pid: u32| SensorOptions {
        pids: if ctx.isolate_client {
            vec![pid]
        } else {
            vec![]
        },
        ..Default::default()
    };
    let mut raw = serde_json::Map::new();
    let mut params = Vec::new();
    // One nginx target: wrk (h2load for HTTP/2) on `path`, 16 connections,
    // `headers` on every request, under `variants`; its figures, parameters
    // and cells are recorded under `name` and `key`.
    let mut measure_nginx = |nginx: &Nginx,
                             (name, path, key, http2): (&str, &str, &str, bool),
                             headers: &[String],
                             variants: &[Variant],
                             openssl: Option<&Path>|
     -> anyhow::Result<()> {
        let target = Target {
            name: name.into(),
            server_pid: nginx.worker,
            load: WrkLoad {
                url: if http2 {
                    nginx.h2_url(path)
                } else {
                    nginx.url(path)
                },
                threads: 1,
                connections: 16,
                duration: ctx.wrk_duration(),
                private_libs: private_libs.clone(),
                http2,
                headers: headers.to_vec(),
            },
            sensor: scoped(nginx.worker),
        };
        let cells = measure(ctx, &target, variants)?;
        report
            .figures
            .extend(figures(ctx, name, &cells, key == "nginx_1k"));
        let mut p = json!({"target": name, "url": target.load.url, "wrk_threads": 1,
            "wrk_connections": 16, "seconds": ctx.seconds,
            "load": if http2 { "h2load -m 1" } else { "wrk" }});
        if let Some(lib) = openssl {
            p["openssl"] = json!(lib.display().to_string());
        }
        if !headers.is_empty() {
            // Names only: the value is a made-up key, but a key all the same.
            let names: Vec<&str> = headers.iter().filter_map(|h| h.split(':').next()).collect();
            p["request_headers"] = json!(names);
        }
        params.push(p);
        raw.insert(key.into(), serde_json::to_value(&cells)?);
        Ok(())
    };
    for target in [
        ("nginx 1KiB", "/1k.bin", "nginx_1k", false),
        ("nginx 64KiB", "/64k.bin", "nginx_64k", false),
        // HTTP/2 (h2load, one stream at a time per connection, as wrk).
        ("nginx 1KiB HTTP/2", "/1k.bin", "nginx_h2_1k", true),
    ] {
        measure_nginx(&nginx, target, &[], &variants, None)?;
    }
    // API traffic carries credentials: with a key on every request the
    // sensor takes it out and searches each response for it.  The exported
    // column is left out (it says nothing new here, and takes the most time).
    let with_key: Vec<Variant> = variants
        .iter()
        .copied()
        .filter(|v| *v != Variant::Exported)
        .collect();
    measure_nginx(
        &nginx,
        (
            "nginx 1KiB, API key on each request",
            "/1k.bin",
            "nginx_1k_api_key",
            false,
        ),
        &[format!("x-api-key: {BENCH_API_KEY}")],
        &with_key,
        None,
    )?;
    if ctx.quick {
        report.notes.push(
            "--quick runs a debug build of the sensor: with an API key on every request its unoptimised matcher falls behind and events are lost; the release build loses none (BENCHMARKS.md, note 19)".into(),
        );
    }
    // The sensor saw that key on every request: it must not be in anything
    // the sensor wrote (logs, findings, state).
    if let Some(at) = files_holding(&ctx.tmp, BENCH_API_KEY.as_bytes())?.first() {
        bail!(
            "the API key sent by wrk was written out in clear, in {}",
            at.display()
        );
    }
    drop(nginx);
    // The same nginx on Debian 13's OpenSSL 3.5 (a CET build), through its
    // own loader: what the probes cost on a second OpenSSL build.
    if let Some(lib) = &crate::setup::debian13_unpacked() {
        let nginx = start_nginx_on(
            &ctx.scratch("overhead-debian13"),
            &ctx.cert,
            PORT_NGINX,
            PORT_NGINX_UPSTREAM,
            1024,
            Some(lib),
        )?;
        let target = (
            "nginx 1KiB, Debian 13 OpenSSL 3.5",
            "/1k.bin",
            "nginx_1k_debian13",
            false,
        );
        measure_nginx(&nginx, target, &[], &variants, Some(lib))?;
    } else {
        report.notes.push(
            "nginx on Debian 13's OpenSSL skipped: not unpacked (run `cargo xtask setup`)".into(),
        );
    }
    match &ctx.venv_python {
        Some(py) => {
            let uv = start_uvicorn(&dir, py, &ctx.cert, PORT_UVICORN)?;
            let target = Target {
                name: "uvicorn 1KiB".into(),
                server_pid: uv.proc.pid(),
                load: WrkLoad {
                    url: uv.url(),
                    threads: 1,
                    connections: 8,
                    duration: ctx.wrk_duration(),
                    private_libs: private_libs.clone(),
                    http2: false,
                    headers: Vec::new(),
                },
                sensor: scoped(uv.proc.pid()),
            };
            let cells = measure(ctx, &target, &variants)?;
            report
                .figures
                .extend(figures(ctx, "uvicorn 1KiB", &cells, false));
            params.push(json!({"target": "uvicorn 1KiB", "url": target.load.url,
                "wrk_threads": 1, "wrk_connections": 8, "seconds": ctx.seconds}));
            raw.insert("uvicorn_1k".into(), serde_json::to_value(&cells)?);
        }
        None => report.notes.push(
            "uvicorn/FastAPI skipped: <workspace>/.tools/venv has no uvicorn+fastapi (run `cargo xtask setup`)".into(),
        ),
    }
    report.notes.push(if ctx.isolate_client {
        "--isolate-client: wrk used a private copy of libssl and the sensor ran with --pid <server>, so only the server's SSL calls were probed (a node whose clients are elsewhere)".into()
    } else {
        "wrk links libssl.so.3 too, so the sensor probes the load generator's SSL calls as well as the server's (as it would any client on a node): the ratios include that client-side cost (see --isolate-client)".into()
    });
    report.params =
        json!({"runs": ctx.runs, "isolate_client": ctx.isolate_client, "targets": params});
    report.raw = serde_json::Value::Object(raw);
    Ok(vec![report])
}

#[cfg(test)]
mod tests {
    use super::files_holding;

    #[test]
    fn files_holding_finds_the_needle_in_nested_files_only() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/log"), b"x-api-key: sk_live_k3y\n").unwrap();
        std::fs::write(d.path().join("a/other"), b"sk_live_<redacted>").unwrap();
        std::fs::write(d.path().join("top"), b"").unwrap();
        let found = files_holding(d.path(), b"sk_live_k3y").unwrap();
        assert_eq!(found, vec![d.path().join("a/b/log")]);
        assert!(files_holding(d.path(), b"nothing like it")
            .unwrap()
            .is_empty());
    }
}
