//! `sensor run`: attach, reassemble, detect, serve — until SIGTERM/SIGINT.
//!
//! Order matters for operators: configuration and listening sockets are checked
//! before any eBPF is loaded, so a typo or a port in use is one clear line and
//! never leaves probes behind.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use crate::capture::config::CaptureConfig;
use crate::capture::record::Recorder;
use crate::capture::{Capture, CaptureMsg};
use crate::config::{RunArgs, RunConfig};
use crate::leak::{load_or_create_key, Detector, Fingerprinter};
use crate::outputs::api::{serve_api, serve_metrics, ApiConfig, LiveHub};
use crate::outputs::jsonl::JsonLinesWriter;
use crate::outputs::metrics::Metrics;
use crate::outputs::stats::StatsTracker;
use crate::pipeline::{clock_offset_ns, Outputs, Pipeline, PipelineConfig};

/// How long SIGTERM may take: detach, drain, flush.
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(4);
/// How often blind processes are looked for (a /proc walk).
const BLIND_SCAN_EVERY: Duration = Duration::from_secs(15);

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let cfg = RunConfig::load(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(run_async(args, cfg))
}

fn detector_for(cfg: &RunConfig) -> anyhow::Result<Arc<Detector>> {
    let key = load_or_create_key(&cfg.fingerprint_key_file).with_context(|| {
        format!(
            "cannot read or create the fingerprint key {} (set --fingerprint-key-file or --state-dir to a writable place)",
            cfg.fingerprint_key_file.display()
        )
    })?;
    Ok(Arc::new(Detector::new(cfg.leak.clone(), Fingerprinter::new(key))))
}

async fn run_async(args: RunArgs, cfg: RunConfig) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let detector = detector_for(&cfg)?;
    let hub = LiveHub::new(cfg.findings_ring);

    // Servers first: a port in use is reported before anything is attached.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let metrics_listener = serve_metrics(cfg.metrics_addr, metrics.clone(), hub.clone(), stopped(stop_rx.clone()));
    let api_listener = serve_api(
        ApiConfig {
            addr: cfg.api_addr,
            token: cfg.api_token.clone(),
        },
        hub.clone(),
        stopped(stop_rx.clone()),
    );
    let metrics_task = tokio::spawn(metrics_listener);
    let api_task = tokio::spawn(api_listener);
    // Give the listeners a moment to fail on bind (port in use) before attaching.
    tokio::time::sleep(Duration::from_millis(50)).await;
    for t in [&metrics_task, &api_task] {
        if t.is_finished() {
            break;
        }
    }
    if metrics_task.is_finished() {
        return metrics_task.await?.map_err(anyhow::Error::from);
    }
    if api_task.is_finished() {
        return api_task.await?.map_err(anyhow::Error::from);
    }

    let capture_cfg = CaptureConfig {
        probe_mode: cfg.probe_mode,
        count_only: cfg.count_only,
        ring_buffer_bytes: cfg.ring_buffer_bytes,
        pids: cfg.pids.clone(),
        comms: cfg.comms.clone(),
        ..CaptureConfig::default()
    };
    let (capture, mut rx) = Capture::start(capture_cfg, metrics.clone()).await?;

    let clock_offset = clock_offset_ns();
    let outputs = Outputs {
        findings: Some(
            JsonLinesWriter::open(&cfg.findings, "findings")
                .with_context(|| format!("cannot open --findings {} for writing", cfg.findings))?,
        ),
        pairs: match &cfg.pairs {
            Some(p) => Some(JsonLinesWriter::open(p, "pairs").with_context(|| format!("cannot open --pairs {p} for writing"))?),
            None => None,
        },
        recorder: match &cfg.record {
            Some(p) => Some(
                Recorder::create(p, clock_offset)
                    .with_context(|| format!("cannot create --record {}", p.display()))?,
            ),
            None => None,
        },
        on_finding: Some({
            let hub = hub.clone();
            Box::new(move |f| hub.publish_finding(f))
        }),
    };
    let pipeline_cfg = PipelineConfig {
        http: crate::http::limits::HttpLimits {
            max_body_bytes: cfg.max_body_bytes,
            ..Default::default()
        },
        max_connections: cfg.max_connections,
        role: cfg.role,
        clock_offset_ns: clock_offset,
        ..PipelineConfig::default()
    };
    let resolver = Box::new(|pid: u32, comm: &str| crate::identity::process_info(pid, comm));
    let mut pipeline = Pipeline::new(pipeline_cfg, detector, metrics.clone(), outputs, resolver);

    let mut tracker = StatsTracker::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut blind = Vec::new();
    let mut last_blind_scan: Option<std::time::Instant> = None;
    hub.set_ready(true);
    tracing::info!(
        metrics = %cfg.metrics_addr,
        api = %cfg.api_addr,
        libraries = capture.attached().len(),
        "sensor running"
    );

    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(CaptureMsg::Events(batch)) => {
                    for raw in &batch {
                        pipeline.handle_raw(raw);
                    }
                    pipeline.flush();
                }
                Some(CaptureMsg::ProcessExited(tgid)) => pipeline.process_exited(tgid),
                None => {
                    tracing::error!("the capture stopped unexpectedly; exiting");
                    break;
                }
            },
            _ = tick.tick() => {
                if last_blind_scan.is_none_or(|t| t.elapsed() >= BLIND_SCAN_EVERY) {
                    let inodes: std::collections::HashSet<(u64, u64)> = capture.attached_inodes().into_iter().collect();
                    blind = tokio::task::spawn_blocking(move || crate::blind::scan_blind_processes(&inodes))
                        .await
                        .unwrap_or_default();
                    crate::blind::set_gauge(&metrics, &blind);
                    last_blind_scan = Some(std::time::Instant::now());
                }
                hub.publish_stats(tracker.snapshot(&metrics, capture.attached(), blind.clone()));
            }
            _ = sighup.recv() => {
                match RunConfig::load(&args).and_then(|c| Ok((detector_for(&c)?, c))) {
                    Ok((d, c)) => {
                        pipeline.set_detector(d);
                        pipeline.set_role_filter(c.role);
                        tracing::info!("configuration reloaded (leak lists, role); capture scope changes need a restart");
                    }
                    Err(e) => tracing::error!("configuration not reloaded, keeping the old one: {e:#}"),
                }
            }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: detaching and flushing"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: detaching and flushing"); break; }
        }
    }

    hub.set_ready(false);
    let drain = async {
        capture.shutdown().await;
        while let Ok(msg) = rx.try_recv() {
            match msg {
                CaptureMsg::Events(batch) => batch.iter().for_each(|raw| pipeline.handle_raw(raw)),
                CaptureMsg::ProcessExited(tgid) => pipeline.process_exited(tgid),
            }
        }
        pipeline.finish();
    };
    if tokio::time::timeout(SHUTDOWN_BUDGET, drain).await.is_err() {
        tracing::warn!("shutdown took longer than {SHUTDOWN_BUDGET:?}; exiting anyway");
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        let _ = metrics_task.await;
        let _ = api_task.await;
    })
    .await;
    Ok(())
}
