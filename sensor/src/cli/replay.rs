//! `sensor replay FILE`: a recording through the same pipeline as `sensor run`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::capture::record::{Record, RecordingReader};
use crate::config::RoleFilter;
use crate::http::limits::HttpLimits;
use crate::http::types::ProcessInfo;
use crate::leak::{load_or_create_key, Detector, Fingerprinter, LeakConfig};
use crate::outputs::jsonl::JsonLinesWriter;
use crate::outputs::metrics::Metrics;
use crate::pipeline::{Outputs, Pipeline, PipelineConfig};

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// Recording made with `sensor run --record FILE`.
    pub file: PathBuf,
    /// Findings as JSON lines (`-` = stdout).
    #[arg(long, default_value = "-")]
    pub findings: String,
    /// Every pair as JSON lines, credentials redacted (`-` = stdout).
    #[arg(long)]
    pub pairs: Option<String>,
    /// Key for credential fingerprints; use the live sensor's key to get the same fingerprints.
    #[arg(long, default_value = "/var/lib/sensor/fingerprint.key")]
    pub fingerprint_key_file: PathBuf,
    /// Only pairs where the process was the server, the client, or any.
    #[arg(long, value_enum, default_value_t = RoleFilter::Any)]
    pub role: RoleFilter,
    /// Body bytes kept per message.
    #[arg(long, default_value_t = crate::http::limits::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Print the metrics (Prometheus text) to stderr at the end.
    #[arg(long)]
    pub print_metrics: bool,
}

pub fn run(a: ReplayArgs) -> anyhow::Result<()> {
    let mut reader = RecordingReader::open(&a.file)?;
    let key = load_or_create_key(&a.fingerprint_key_file).with_context(|| {
        format!(
            "cannot read or create the fingerprint key {} (choose another with --fingerprint-key-file)",
            a.fingerprint_key_file.display()
        )
    })?;
    let detector = Arc::new(Detector::new(
        LeakConfig::default(),
        Fingerprinter::new(key),
    ));
    let metrics = Metrics::new();
    let outputs = Outputs {
        findings: Some(
            JsonLinesWriter::open(&a.findings, "findings")
                .with_context(|| format!("cannot open --findings {}", a.findings))?,
        ),
        pairs: match &a.pairs {
            Some(p) => Some(
                JsonLinesWriter::open(p, "pairs")
                    .with_context(|| format!("cannot open --pairs {p}"))?,
            ),
            None => None,
        },
        recorder: None,
        on_finding: None,
    };
    let cfg = PipelineConfig {
        http: HttpLimits {
            max_body_bytes: a.max_body_bytes,
            ..HttpLimits::default()
        },
        role: a.role,
        clock_offset_ns: reader.clock_offset_ns(),
        count_announced_losses: true,
        ..PipelineConfig::default()
    };
    // Processes the recording names (process records) are remembered by the
    // pipeline; any other is known only by what its events carry.
    let resolver = Box::new(|pid: u32, comm: &str| ProcessInfo {
        pid,
        comm: comm.to_string(),
        ..ProcessInfo::default()
    });
    let mut pipeline = Pipeline::new(cfg, detector, metrics.clone(), outputs, resolver);
    let mut events = 0u64;
    while let Some(rec) = reader.next_record()? {
        match rec {
            Record::Event(raw) => {
                events += 1;
                pipeline.handle_raw(bytes::Bytes::from(raw));
            }
            Record::ProcessExited(tgid) => pipeline.process_exited(tgid),
            Record::Process(info) => pipeline.remember_process(info),
        }
    }
    pipeline.finish();
    tracing::info!(events, "replay finished");
    if a.print_metrics {
        eprint!("{}", metrics.render());
    }
    Ok(())
}
