//! Debugging aid: start the capture and print one line per event (no payload
//! bytes — they may hold secrets — only sizes and flags).
//!
//! `cargo xtask build && sudo target/debug/examples/capture_dump [exported] [count-only]`

use sensor::capture::event::{CaptureEvent, EventKind};
use sensor::capture::{Capture, CaptureConfig, CaptureMsg, ProbeMode};
use sensor::outputs::metrics::Metrics;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = CaptureConfig {
        probe_mode: if args.iter().any(|a| a == "exported") {
            ProbeMode::Exported
        } else {
            ProbeMode::Auto
        },
        count_only: args.iter().any(|a| a == "count-only"),
        ..CaptureConfig::default()
    };
    let (capture, mut feed) = match Capture::start(cfg, Metrics::new()).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    for a in capture.attached() {
        eprintln!(
            "attached: {} ({}, {} processes)",
            a.path, a.mode, a.processes
        );
    }
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            msg = feed.recv() => match msg {
                Some(CaptureMsg::Events(evs)) => {
                    for raw in evs {
                        match CaptureEvent::parse(&raw) {
                            Ok(e) => {
                                let what = match &e.kind {
                                    EventKind::Data(d) => format!("{} {}B", e.direction.as_str(), d.len()),
                                    EventKind::Close => "close".to_string(),
                                };
                                println!(
                                    "{} {}/{} ssl={:#x} seq={} off={}/{} {} gap={} lost_before={} trunc={}",
                                    e.comm, e.conn.tgid, e.tid, e.conn.ssl, e.call_seq, e.offset,
                                    e.call_len, what, e.gap_before, e.lost_before, e.call_truncated
                                );
                            }
                            Err(err) => println!("bad event: {err}"),
                        }
                    }
                }
                Some(CaptureMsg::ProcessExited(pid)) => println!("exited {pid}"),
                None => break,
            }
        }
    }
    eprintln!("kernel counters: {:?}", capture.kernel_counters());
    capture.shutdown().await;
    Ok(())
}
