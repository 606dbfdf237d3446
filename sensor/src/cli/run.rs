//! `sensor run`: attach, reassemble, detect, serve — until SIGTERM/SIGINT.
//!
//! Order matters for operators: configuration and listening sockets are checked
//! before any eBPF is loaded, so a typo or a port in use is one clear line and
//! never leaves probes behind.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use crate::capture::record::Recorder;
use crate::capture::{Capture, EventSource};
use crate::config::{Output, RunArgs, RunConfig};
use crate::leak::{load_or_create_key, Detector, Fingerprinter};
use crate::outputs::api::{ApiServer, LiveHub};
use crate::outputs::jsonl::{Delivery, JsonLinesWriter, ReopenHandle};
use crate::outputs::metrics::{MatcherCacheExport, Metrics};
use crate::outputs::metrics_server::MetricsServer;
use crate::outputs::stats::StatsTracker;
use crate::pipeline::{clock_offset_ns, Outputs, Pipeline, PipelineConfig};

/// How long SIGTERM may take: drain, flush, detach (the contract says 5 s).
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(4);
/// At most this much of it waits for the capture's tasks to stop (a rescan
/// in progress).
const STOP_TASKS_WAIT: Duration = Duration::from_secs(1);
/// At most this much of it waits for the findings, pairs and recording to
/// be written.
const OUTPUTS_WAIT: Duration = Duration::from_secs(2);
/// Detaching the probes gets at least this much, whatever is left of the
/// budget (handed to the kernel it takes a few ms).
const MIN_DETACH_WAIT: Duration = Duration::from_millis(500);
/// How often blind processes are looked for (a /proc walk; ELF verdicts are cached).
const BLIND_SCAN_EVERY: Duration = Duration::from_secs(30);

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let cfg = RunConfig::load(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Two workers: the main task (which handles capture events, in place in
    // the ring buffer) is one task, so it takes at most one core; the other
    // worker keeps /metrics and the API answering while it works.
    rt.block_on(async {
        tokio::spawn(run_async(args, cfg))
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("the sensor's main task failed: {e}")))
    })
}

fn detector_for(cfg: &RunConfig) -> anyhow::Result<Arc<Detector>> {
    let key = load_or_create_key(&cfg.fingerprint_key_file).with_context(|| {
        format!(
            "cannot read or create the fingerprint key {} (set --fingerprint-key-file or --state-dir to a writable place)",
            cfg.fingerprint_key_file.display()
        )
    })?;
    Ok(Arc::new(Detector::new(
        cfg.leak.clone(),
        Fingerprinter::new(key),
    )))
}

/// Findings and pairs are written by a thread of their own: the event loop
/// never waits on them; what their queue cannot take (a reader that does
/// not read, a full disk) is dropped and counted in
/// `sensor_output_dropped_total{output=what}`.
fn open_output(
    o: &Output,
    what: &'static str,
    flag: &str,
    metrics: &Metrics,
) -> anyhow::Result<JsonLinesWriter> {
    let target = match o {
        Output::Stdout => "-".to_string(),
        Output::File(p) => p.display().to_string(),
    };
    let delivery = Delivery {
        reopen_failed: metrics.output_reopen_failures.with_label_values(&[what]),
        ..Delivery::dropping(metrics.output_dropped.with_label_values(&[what]))
    };
    JsonLinesWriter::open_with(&target, what, delivery)
        .with_context(|| format!("cannot open {flag} {target} for writing"))
}

async fn run_async(args: RunArgs, cfg: RunConfig) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    crate::blind::set_expected_blind(crate::blind::ExpectedBlind::new(cfg.expected_blind.clone()));
    let detector = detector_for(&cfg)?;
    let hub = LiveHub::with_metrics(cfg.findings_ring, &metrics);

    // Listeners first: a port in use is reported before anything is attached.
    let metrics_server =
        MetricsServer::bind(cfg.metrics_addr, metrics.clone(), hub.clone()).await?;
    let api_server = ApiServer::bind(cfg.api_config(), hub.clone()).await?;
    let findings = open_output(&cfg.findings, "findings", "--findings", &metrics)?;
    let pairs = match &cfg.pairs {
        Some(o) => Some(open_output(o, "pairs", "--pairs", &metrics)?),
        None => None,
    };
    // SIGHUP reopens the output files (logrotate renamed them): asked of
    // their writer threads, the event loop does not wait on it.
    let reopen: Vec<ReopenHandle> = std::iter::once(&findings)
        .chain(pairs.as_ref())
        .map(JsonLinesWriter::reopen_handle)
        .collect();
    let clock_offset = clock_offset_ns();
    let recorder = match &cfg.record {
        // Through a writer thread too, drops counted under output="record".
        Some(p) => Some(
            Recorder::create_with(
                p,
                clock_offset,
                Delivery::dropping(metrics.output_dropped.with_label_values(&["record"])),
            )
            .with_context(|| format!("cannot create --record {}", p.display()))?,
        ),
        None => None,
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let metrics_task = tokio::spawn(metrics_server.serve(stopped(stop_rx.clone())));
    let api_task = tokio::spawn(api_server.serve(stopped(stop_rx.clone())));

    let (capture, mut feed) = Capture::start(cfg.capture.clone(), metrics.clone()).await?;

    let outputs = Outputs {
        findings: Some(findings),
        pairs,
        recorder,
        on_finding: Some({
            let hub = hub.clone();
            Box::new(move |f| hub.publish_finding(f))
        }),
    };
    let pipeline_cfg = PipelineConfig {
        http: cfg.http_limits.clone(),
        max_connections: cfg.max_connections,
        max_buffered_bytes: cfg.max_buffered_bytes,
        role: cfg.role,
        clock_offset_ns: clock_offset,
        mute_in_kernel: true,
        ..PipelineConfig::default()
    };
    let resolver = Box::new(|pid: u32, comm: &str| crate::identity::process_info(pid, comm));
    let mut pipeline = Pipeline::new(pipeline_cfg, detector, metrics.clone(), outputs, resolver);
    let muter = capture.muter();

    let mut tracker = StatsTracker::new();
    let mut cache_export = MatcherCacheExport::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut blind = Vec::new();
    let mut last_blind_scan: Option<Instant> = None;
    // The scan runs beside the loop, not awaited in it: it reads every
    // process's maps (~0.2-0.5 s on a busy host), and the ring buffer is
    // only drained by this loop.
    let mut blind_scan: Option<tokio::task::JoinHandle<Vec<crate::outputs::live::BlindProcess>>> =
        None;
    let mut current = cfg;
    // Ready means every route answers: the first stats go out before (the
    // first blind scan ends a while later and publishes them again), so
    // `sensor watch` started on readiness never meets a 503.
    hub.publish_stats(tracker.snapshot(&metrics, capture.attached(), blind.clone()));
    hub.set_ready(true);
    tracing::info!(
        metrics = %current.metrics_addr,
        api = %current.api_addr,
        libraries = capture.attached().len(),
        "sensor running"
    );

    loop {
        tokio::select! {
            _ = feed.events.ready() => {
                feed.events.drain(|raw| pipeline.handle_record(raw));
                pipeline.flush();
                muter.apply(&pipeline.take_mute_updates());
            }
            exit = feed.exits.recv() => match exit {
                Some(tgid) => {
                    // Its last events may still be in the ring: they go first.
                    drain_all(&mut feed.events, &mut pipeline);
                    pipeline.process_exited(tgid);
                    muter.apply(&pipeline.take_mute_updates());
                }
                None => {
                    tracing::error!("the capture stopped unexpectedly; exiting");
                    break;
                }
            },
            _ = tick.tick() => {
                pipeline.inspect_streaming(crate::pipeline::monotonic_now_ns());
                pipeline.flush();
                if blind_scan.is_none() && last_blind_scan.is_none_or(|t| t.elapsed() >= BLIND_SCAN_EVERY) {
                    let inodes: HashSet<(u64, u64)> = capture.attached_inodes().into_iter().collect();
                    blind_scan = Some(tokio::task::spawn_blocking(move || crate::blind::scan_blind_processes(&inodes)));
                    last_blind_scan = Some(Instant::now());
                }
                let detector = pipeline.detector();
                cache_export.export(&metrics, detector.matcher_cache_stats(), detector.matcher_cache_entries());
                hub.publish_stats(tracker.snapshot(&metrics, capture.attached(), blind.clone()));
            }
            found = async { blind_scan.as_mut().expect("guarded").await }, if blind_scan.is_some() => {
                blind_scan = None;
                blind = found.unwrap_or_default();
                crate::blind::update_blind_gauge(&metrics, &blind);
                crate::blind::count_blind_seen(&metrics, &blind);
                hub.publish_stats(tracker.snapshot(&metrics, capture.attached(), blind.clone()));
            }
            _ = sighup.recv() => {
                for h in &reopen {
                    h.reopen();
                }
                reload(&args, &mut current, &mut pipeline, &capture);
            }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: detaching and flushing"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: detaching and flushing"); break; }
        }
    }

    hub.set_ready(false);
    let shutdown_start = Instant::now();
    // What was captured before the signal is handled and written out first,
    // while the probes are still attached (taking them off is the slow
    // part, and a SIGKILL after the grace period must find nothing left in
    // flight); then the probes go.
    let mut capture = capture;
    if tokio::time::timeout(STOP_TASKS_WAIT, capture.stop())
        .await
        .is_err()
    {
        tracing::warn!("the capture's tasks did not stop within {STOP_TASKS_WAIT:?}; going on");
    }
    drain_all(&mut feed.events, &mut pipeline);
    while let Ok(tgid) = feed.exits.try_recv() {
        pipeline.process_exited(tgid);
    }
    pipeline.finish();
    // The writer threads get at most OUTPUTS_WAIT to write what they hold;
    // a reader that does not read cannot hold the exit.
    let left = SHUTDOWN_BUDGET.saturating_sub(shutdown_start.elapsed());
    let outputs_wait = left.min(OUTPUTS_WAIT);
    if !tokio::task::block_in_place(|| pipeline.finish_outputs(outputs_wait)) {
        tracing::warn!(
            "findings, pairs or the recording not all written within {outputs_wait:?} of shutting down; \
             counted in sensor_output_dropped_total"
        );
    }
    let left = SHUTDOWN_BUDGET
        .saturating_sub(shutdown_start.elapsed())
        .max(MIN_DETACH_WAIT);
    let d = capture.detach_within(left).await;
    if d.all {
        tracing::info!(
            links = d.links,
            handed_to_kernel = d.released_to_kernel,
            "probes detached in {} ms; shut down in {} ms",
            d.took.as_millis(),
            shutdown_start.elapsed().as_millis()
        );
    } else {
        tracing::warn!(
            "{} of {} probe links not detached within {left:?}; exiting: the kernel detaches them as the process exits",
            d.left,
            d.links
        );
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        let _ = metrics_task.await;
        let _ = api_task.await;
    })
    .await;
    Ok(())
}

/// Drains per [`drain_all`] at most: the ring may be refilled as fast as it
/// is read (64 MiB of events at most).
const MAX_DRAINS_AT_ONCE: usize = 64;

/// Handles the events waiting in the ring buffer (all of them unless it
/// keeps being refilled).
fn drain_all(events: &mut EventSource, pipeline: &mut Pipeline) {
    for _ in 0..MAX_DRAINS_AT_ONCE {
        if events.drain(|raw| pipeline.handle_record(raw)) == 0 {
            break;
        }
    }
    pipeline.flush();
}

/// SIGHUP: re-read the configuration; apply the scope (role, pid, comm) and
/// the leak lists now, say which other changes need a restart.  A bad file
/// keeps the running config.
fn reload(
    args: &RunArgs,
    current: &mut RunConfig,
    pipeline: &mut Pipeline,
    capture: &crate::capture::Capture,
) {
    let newer = match RunConfig::load(args) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("configuration not reloaded, keeping the running one: {e}");
            return;
        }
    };
    let detector = match detector_for(&newer) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!("configuration not reloaded, keeping the running one: {e:#}");
            return;
        }
    };
    pipeline.set_detector(detector);
    crate::blind::set_expected_blind(crate::blind::ExpectedBlind::new(
        newer.expected_blind.clone(),
    ));
    if pipeline.set_role_filter(newer.role) {
        capture.muter().apply(&pipeline.take_mute_updates());
    }
    if newer.capture.pids != current.capture.pids || newer.capture.comms != current.capture.comms {
        capture.set_scope(newer.capture.pids.clone(), newer.capture.comms.clone());
    }
    let restart = current.restart_needed_for(&newer);
    if restart.is_empty() {
        tracing::info!("configuration reloaded (role, pid/comm scope, leak lists)");
    } else {
        tracing::warn!(
            "configuration reloaded (role, pid/comm scope, leak lists); changed but only applied on restart: {}",
            restart.join(", ")
        );
    }
    *current = newer;
}
