//! `sensor replay FILE`: a recording through the same pipeline as `sensor run`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::capture::record::{Record, RecordingReader};
use crate::config::{ReplayConfig, RoleFilter, RunArgs};
use crate::http::types::ProcessInfo;
use crate::leak::{load_or_create_key, Detector, Fingerprinter};
use crate::outputs::jsonl::JsonLinesWriter;
use crate::outputs::metrics::Metrics;
use crate::pipeline::{Outputs, Pipeline, PipelineConfig};

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Fingerprints: replay uses the fingerprint key of the live sensor, so its findings carry the same \
fingerprints: --fingerprint-key-file, else the config file's fingerprint_key_file (or \
<state_dir>/fingerprint.key), else /var/lib/sensor/fingerprint.key. A missing key file is an \
error; --create-fingerprint-key makes a new one there instead (its fingerprints match no live run).

Config file (--config): the file `sensor run` uses, with the same precedence (defaults < file < \
flags). Replay takes from it the settings that decide the findings: the [leak] section, role, \
max_body_bytes, max_connections, max_buffered_bytes, fingerprint_key_file and state_dir; the \
outputs, addresses and capture settings are the live sensor's and are not used.")]
pub struct ReplayArgs {
    /// Recording made with `sensor run --record FILE`.
    pub file: PathBuf,
    /// Config file of the live sensor (TOML; YAML if named *.yaml/*.yml); flags given here win.
    #[arg(long, value_name = "FILE", env = "SENSOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Findings as JSON lines (`-` = stdout).
    #[arg(long, default_value = "-")]
    pub findings: String,
    /// Every pair as JSON lines, credentials redacted (`-` = stdout).
    #[arg(long)]
    pub pairs: Option<String>,
    /// Key for credential fingerprints: the live sensor's, to get its fingerprints
    /// [default: the config's, else /var/lib/sensor/fingerprint.key].
    #[arg(long, value_name = "FILE")]
    pub fingerprint_key_file: Option<PathBuf>,
    /// Directory holding fingerprint.key [default: the config's, else /var/lib/sensor].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Create the fingerprint key file when it does not exist (a new key: its
    /// fingerprints match no live run).  Without it a missing key is an error.
    #[arg(long)]
    pub create_fingerprint_key: bool,
    /// Only pairs where the process was the server, the client, or any [default: the config's, else any].
    #[arg(long, value_enum)]
    pub role: Option<RoleFilter>,
    /// Body bytes kept per message [default: the config's, else 4194304].
    #[arg(long, value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// TLS connections tracked at once [default: the config's, else 16384].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Memory all tracked connections may hold together [default: the config's, else 536870912].
    #[arg(long, value_name = "BYTES")]
    pub max_buffered_bytes: Option<usize>,
    /// Print the metrics (Prometheus text) to stderr at the end.
    #[arg(long)]
    pub print_metrics: bool,
}

impl ReplayArgs {
    /// The flags that the config file may also set, as `sensor run`'s.
    fn as_run_args(&self) -> RunArgs {
        RunArgs {
            config: self.config.clone(),
            fingerprint_key_file: self.fingerprint_key_file.clone(),
            state_dir: self.state_dir.clone(),
            role: self.role,
            max_body_bytes: self.max_body_bytes,
            max_connections: self.max_connections,
            max_buffered_bytes: self.max_buffered_bytes,
            ..RunArgs::default()
        }
    }
}

/// The fingerprint key: the configured file; created only when asked.
fn fingerprint_key(path: &Path, create: bool) -> anyhow::Result<[u8; 32]> {
    if !create && !path.exists() {
        anyhow::bail!(
            "fingerprint key {} does not exist: replay needs the live sensor's key to give its \
             fingerprints; point at it (--fingerprint-key-file, or --config with the node's config), \
             or pass --create-fingerprint-key for a new key (its fingerprints match no live run)",
            path.display()
        );
    }
    load_or_create_key(path).with_context(|| {
        format!(
            "cannot {} the fingerprint key {} (choose another with --fingerprint-key-file)",
            if create { "read or create" } else { "read" },
            path.display()
        )
    })
}

pub fn run(a: ReplayArgs) -> anyhow::Result<()> {
    let cfg = ReplayConfig::load(&a.as_run_args())?;
    let mut reader = RecordingReader::open(&a.file)?;
    let key = fingerprint_key(&cfg.fingerprint_key_file, a.create_fingerprint_key)?;
    let detector = Arc::new(Detector::new(cfg.leak.clone(), Fingerprinter::new(key)));
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
    let pipeline_cfg = PipelineConfig {
        http: cfg.http_limits.clone(),
        max_connections: cfg.max_connections,
        max_buffered_bytes: cfg.max_buffered_bytes,
        role: cfg.role,
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
    let mut pipeline = Pipeline::new(pipeline_cfg, detector, metrics.clone(), outputs, resolver);
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
