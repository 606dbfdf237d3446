//! Loss: the heaviest load wrk produces here (64 KiB responses, 2 threads,
//! 64 connections) with full capture, first with the default ring buffer, then
//! with a deliberately small one (1 MiB) to show behaviour past the limit:
//! loss is counted, the sensor stays alive and ready, memory stays bounded.

use std::time::Duration;

use serde_json::json;

use super::overhead::settle;
use super::proc::RssSampler;
use super::report::{BenchReport, Figure};
use super::sensor::{rotated, Counters, SensorOptions, Variant};
use super::servers::start_nginx;
use super::wrk::{WrkLoad, WrkResult};
use super::{ratio, Ctx, PORT_NGINX, PORT_NGINX_UPSTREAM};

/// The deliberately small ring buffer: the smallest `sensor run` accepts
/// (`MIN_RING_BUFFER_BYTES`; it must stay above the eBPF side's 256 KiB
/// wake-up threshold, so 256 KiB itself is refused).
pub const SMALL_RING_BYTES: u32 = 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum Case {
    NoSensor,
    DefaultRing,
    SmallRing,
}

impl Case {
    fn label(self) -> &'static str {
        match self {
            Case::NoSensor => "no sensor",
            Case::DefaultRing => "default ring buffer",
            Case::SmallRing => "1 MiB ring buffer",
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
struct Cell {
    run: usize,
    case: Case,
    wrk: WrkResult,
    counters: Option<Counters>,
    vm_hwm_kib: Option<u64>,
    vm_rss_peak_kib: Option<u64>,
    vm_rss_end_kib: Option<u64>,
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<BenchReport>> {
    let mut report = BenchReport::new("loss", ctx.quick);
    let dir = ctx.scratch("loss");
    let nginx = start_nginx(&dir, &ctx.cert, PORT_NGINX, PORT_NGINX_UPSTREAM, 1024)?;
    let load = WrkLoad {
        url: nginx.url("/64k.bin"),
        threads: 2,
        connections: 64,
        duration: Duration::from_secs(ctx.loss_seconds),
        private_libs: None,
        http2: false,
        headers: Vec::new(),
    };
    let cases: Vec<Case> = if ctx.sensor.is_some() {
        vec![Case::NoSensor, Case::DefaultRing, Case::SmallRing]
    } else {
        vec![Case::NoSensor]
    };
    let mut cells = Vec::new();
    for run in 0..ctx.runs {
        let order = rotated(&[Variant::Baseline, Variant::Full, Variant::CountOnly], run);
        // Reuse the rotation of three variants to order the three cases.
        let order: Vec<Case> = order
            .iter()
            .map(|v| match v {
                Variant::Baseline => Case::NoSensor,
                Variant::Full => Case::DefaultRing,
                _ => Case::SmallRing,
            })
            .filter(|c| cases.contains(c))
            .collect();
        for case in order {
            let mut sensor = match case {
                Case::NoSensor => None,
                Case::DefaultRing => {
                    Some(ctx.start_sensor(Variant::Full, &SensorOptions::default())?)
                }
                Case::SmallRing => Some(ctx.start_sensor(
                    Variant::Full,
                    &SensorOptions {
                        ring_buffer_bytes: Some(SMALL_RING_BYTES),
                        ..Default::default()
                    },
                )?),
            };
            let before = match sensor.as_mut() {
                Some(s) => Some(s.counters()?),
                None => None,
            };
            let sampler = sensor
                .as_ref()
                .map(|s| RssSampler::start(s.pid(), Duration::from_millis(200)));
            let wrk = load.run()?;
            let mut cell = Cell {
                run,
                case,
                wrk,
                counters: None,
                vm_hwm_kib: None,
                vm_rss_peak_kib: None,
                vm_rss_end_kib: None,
            };
            if let (Some(mut s), Some(c0)) = (sensor, before) {
                settle(ctx);
                s.check_alive()?;
                cell.counters = Some(s.counters()?.delta(&c0));
                let (rss, hwm) = s.rss_kib()?;
                cell.vm_rss_end_kib = Some(rss);
                cell.vm_hwm_kib = Some(hwm);
                cell.vm_rss_peak_kib = sampler.map(|x| x.stop());
                s.stop()?;
            }
            eprintln!(
                "xtask bench:   loss run {} {:<20} {:>8.0} req/s{}",
                run + 1,
                case.label(),
                cell.wrk.requests_per_s,
                cell.counters.map_or(String::new(), |c| format!(
                    "  events {:.0} lost {:.0} truncated {:.0} B  pairs {:.0}",
                    c.events, c.lost_events, c.truncated_bytes, c.server_pairs
                ))
            );
            cells.push(cell);
        }
    }
    drop(nginx);
    let get = |case: Case, r: usize| cells.iter().find(|c| c.case == case && c.run == r);
    let runs = 0..ctx.runs;
    report.figures.push(Figure::new(
        "64KiB max load, no sensor: requests/s",
        "req/s",
        runs.clone()
            .filter_map(|r| Some(get(Case::NoSensor, r)?.wrk.requests_per_s))
            .collect(),
    ));
    for case in [Case::DefaultRing, Case::SmallRing] {
        if !cases.contains(&case) {
            continue;
        }
        let l = case.label();
        let per = |f: &dyn Fn(&Cell) -> Option<f64>| -> Vec<f64> {
            runs.clone().filter_map(|r| f(get(case, r)?)).collect()
        };
        report.figures.push(Figure::new(
            format!("64KiB max load, {l}: requests/s"),
            "x",
            runs.clone()
                .filter_map(|r| {
                    Some(ratio(
                        get(case, r)?.wrk.requests_per_s,
                        get(Case::NoSensor, r)?.wrk.requests_per_s,
                    ))
                })
                .collect(),
        ));
        report.figures.push(Figure::new(
            format!("64KiB max load, {l}: lost events"),
            "events",
            per(&|c| Some(c.counters?.lost_events)),
        ));
        report.figures.push(Figure::new(
            format!("64KiB max load, {l}: lost events share"),
            "share",
            per(&|c| {
                let k = c.counters?;
                Some(ratio(k.lost_events, k.events + k.lost_events))
            }),
        ));
        report.figures.push(Figure::new(
            format!("64KiB max load, {l}: truncated bytes"),
            "bytes",
            per(&|c| Some(c.counters?.truncated_bytes)),
        ));
        report.figures.push(Figure::new(
            format!("64KiB max load, {l}: requests paired"),
            "share",
            per(&|c| Some(ratio(c.counters?.server_pairs, c.wrk.requests as f64))),
        ));
        report.figures.push(Figure::new(
            format!("64KiB max load, {l}: sensor VmHWM"),
            "MiB",
            per(&|c| Some(c.vm_hwm_kib? as f64 / 1024.0)),
        ));
    }
    report.params = json!({
        "runs": ctx.runs,
        "seconds": ctx.loss_seconds,
        "url": load.url,
        "wrk_threads": load.threads,
        "wrk_connections": load.connections,
        "small_ring_buffer_bytes": SMALL_RING_BYTES,
    });
    report.raw = serde_json::to_value(&cells)?;
    report.notes.push("`requests paired` < 1 with no lost events means the sensor saw the bytes but did not pair them all (or lost them in userspace): a bug worth chasing".into());
    Ok(vec![report])
}
