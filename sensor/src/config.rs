//! `sensor run` settings: command-line flags (`RunArgs`), an optional config
//! file (`--config FILE`, TOML, or YAML when it ends in `.yaml`/`.yml`), and
//! the resolved, validated `RunConfig`.
//!
//! Precedence: built-in defaults < config file < command-line flags.  The file
//! takes every flag's name without the dashes and with `_` for `-`
//! (`metrics_addr = "0.0.0.0:9477"`, `pid = [4242]`), plus a `[leak]` section
//! (`leak::config::LeakConfig`).  Unknown keys are errors, so a typo never
//! silently leaves a default in place.  Relative paths in the file are taken
//! from the file's directory.  Every error is one line that names the setting,
//! where it came from, and what would be accepted.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use zeroize::Zeroizing;

use crate::capture::config::{CaptureConfig, ProbeMode};
use crate::http::limits::{HttpLimits, DEFAULT_MAX_BODY_BYTES};
use crate::http::types::Role;
use crate::leak::config::LeakConfig;
use crate::outputs::api::{ApiConfig, DEFAULT_FINDINGS_RING, MAX_FINDINGS_RING};

pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9477";
pub const DEFAULT_API_ADDR: &str = "127.0.0.1:9478";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/sensor";
/// File name of the fingerprint key under the state dir.
pub const FINGERPRINT_KEY_NAME: &str = "fingerprint.key";
/// Connections tracked at once (the HTTP stage's LRU table).
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
pub const MAX_MAX_CONNECTIONS: usize = 1 << 20;
/// Ring buffer bounds: above the kernel side's wake-up threshold, and a sane memory ceiling.
pub const MIN_RING_BUFFER_BYTES: u32 = 1 << 20;
pub const MAX_RING_BUFFER_BYTES: u32 = 1 << 30;
pub const MIN_MAX_BODY_BYTES: usize = 1024;
pub const MAX_MAX_BODY_BYTES: usize = 256 << 20;
/// Memory all tracked connections may hold together (`max_buffered_bytes`).
pub const MIN_MAX_BUFFERED_BYTES: usize = 1 << 20;
pub const MAX_MAX_BUFFERED_BYTES: usize = 64 << 30;
pub const MIN_DECOMPRESSED_BYTES: usize = 1024;
pub const MAX_DECOMPRESSED_BYTES: usize = 1 << 30;
/// Largest config or token file read (they are a few KiB; this stops a wrong path
/// such as a disk image from being read into memory).
pub const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;
/// The kernel keeps 15 bytes of a command name (TASK_COMM_LEN − 1).
pub const MAX_COMM_LEN: usize = 15;

/// Which side of connections to inspect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RoleFilter {
    /// Processes serving APIs (they read the request).
    Server,
    /// Processes calling APIs (they write the request).
    Client,
    /// Both.
    #[default]
    Any,
}

impl RoleFilter {
    pub fn allows(self, role: Role) -> bool {
        match self {
            RoleFilter::Any => true,
            RoleFilter::Server => role == Role::Server,
            RoleFilter::Client => role == Role::Client,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            RoleFilter::Server => "server",
            RoleFilter::Client => "client",
            RoleFilter::Any => "any",
        }
    }
}

/// Options of `sensor run`.  All optional here so a config file can supply them.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct RunArgs {
    /// Config file (TOML; YAML if named *.yaml/*.yml) with any of these settings; flags given here win.
    #[arg(long, value_name = "FILE", env = "SENSOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Findings as JSON lines: a file (appended) or `-` for stdout [default: -].
    #[arg(long, value_name = "PATH|-")]
    pub findings: Option<String>,
    /// Every request/response pair as JSON lines, credential values redacted (debugging aid).
    #[arg(long, value_name = "PATH|-")]
    pub pairs: Option<String>,
    /// Write the raw capture stream for `sensor replay` (mode 0600: it holds secrets).
    #[arg(long, value_name = "PATH")]
    pub record: Option<PathBuf>,
    /// Prometheus /metrics, /healthz, /readyz [default: 127.0.0.1:9477].
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Live findings/stats API used by `sensor watch` [default: 127.0.0.1:9478].
    #[arg(long, value_name = "ADDR")]
    pub api_addr: Option<SocketAddr>,
    /// File holding the live API's bearer token (required when --api-addr is not loopback).
    #[arg(long, value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Key for credential fingerprints [default: <state-dir>/fingerprint.key, created once, mode 0600].
    #[arg(long, value_name = "FILE")]
    pub fingerprint_key_file: Option<PathBuf>,
    /// Directory for state kept across restarts [default: /var/lib/sensor].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Inspect connections where the process is the server, the client, or both [default: any].
    #[arg(long, value_enum)]
    pub role: Option<RoleFilter>,
    /// Only this process (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pub pid: Vec<u32>,
    /// Only processes with this command name (repeatable; at most 15 bytes, as the kernel keeps it).
    #[arg(long = "comm", value_name = "NAME")]
    pub comm: Vec<String>,
    /// Where probes go in TLS libraries [default: auto].
    #[arg(long, value_enum)]
    pub probe_mode: Option<ProbeMode>,
    /// Count TLS calls but copy nothing (benchmark floor; no findings).
    #[arg(long)]
    pub count_only: bool,
    /// Ring buffer size in bytes (power of two, 1 MiB to 1 GiB) [default: 33554432].
    #[arg(long, value_name = "BYTES")]
    pub ring_buffer_bytes: Option<u32>,
    /// Body bytes kept per HTTP message; the rest is counted [default: 4194304].
    #[arg(long, value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// TLS connections tracked at once; the least recently used is evicted [default: 16384].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Memory all tracked connections may hold together (buffers, kept bodies);
    /// past it the least recently used is evicted [default: 536870912].
    #[arg(long, value_name = "BYTES")]
    pub max_buffered_bytes: Option<usize>,
    /// Recent findings kept for the live API [default: 1024].
    #[arg(long, value_name = "N")]
    pub findings_ring: Option<usize>,
}

/// Where JSON lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Stdout,
    File(PathBuf),
}

impl Output {
    fn parse(s: &str, base: Option<&Path>) -> Output {
        if s == "-" {
            Output::Stdout
        } else {
            Output::File(resolve(Path::new(s), base))
        }
    }
}

/// A secret read from a file; zeroized on drop, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Everything `sensor run` needs, resolved and validated.
#[derive(Clone, Debug, PartialEq)]
pub struct RunConfig {
    pub config_file: Option<PathBuf>,
    pub findings: Output,
    pub pairs: Option<Output>,
    pub record: Option<PathBuf>,
    pub metrics_addr: SocketAddr,
    pub api_addr: SocketAddr,
    pub api_token_file: Option<PathBuf>,
    /// Read from `api_token_file` at load time.
    pub api_token: Option<Secret>,
    pub fingerprint_key_file: PathBuf,
    pub state_dir: PathBuf,
    pub role: RoleFilter,
    /// Probe mode, count-only, ring buffer size, pid and comm scope.
    pub capture: CaptureConfig,
    pub http_limits: HttpLimits,
    pub max_connections: usize,
    pub max_buffered_bytes: usize,
    pub findings_ring: usize,
    pub leak: LeakConfig,
    /// Programs expected to be blind (a node's own agents): still listed,
    /// counted under `expected="true"` (`blind::ExpectedBlind`).
    pub expected_blind: Vec<String>,
}

/// The part of the config a running sensor applies on SIGHUP without restarting:
/// the scope (role, pids, comms) and the leak lists.
#[derive(Clone, Debug, PartialEq)]
pub struct Reloadable {
    pub role: RoleFilter,
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    pub leak: LeakConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {path}: cannot read it: {reason}")]
    Read { path: String, reason: String },
    #[error("config {path}: {location}{message}")]
    Parse {
        path: String,
        /// "line N: " or empty.
        location: String,
        message: String,
    },
    #[error("{setting}: {message}")]
    Invalid { setting: String, message: String },
    #[error("--api-token-file {path}: {reason}")]
    Token { path: String, reason: String },
}

/// The config file's shape (deny unknown fields: a typo is an error, not a default).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    findings: Option<Spanned<String>>,
    pairs: Option<Spanned<String>>,
    record: Option<Spanned<PathBuf>>,
    metrics_addr: Option<Spanned<SocketAddr>>,
    api_addr: Option<Spanned<SocketAddr>>,
    api_token_file: Option<Spanned<PathBuf>>,
    fingerprint_key_file: Option<Spanned<PathBuf>>,
    state_dir: Option<Spanned<PathBuf>>,
    role: Option<Spanned<RoleFilter>>,
    pid: Option<Spanned<Vec<u32>>>,
    comm: Option<Spanned<Vec<String>>>,
    probe_mode: Option<Spanned<ProbeMode>>,
    count_only: Option<Spanned<bool>>,
    ring_buffer_bytes: Option<Spanned<u32>>,
    max_body_bytes: Option<Spanned<usize>>,
    max_connections: Option<Spanned<usize>>,
    max_buffered_bytes: Option<Spanned<usize>>,
    findings_ring: Option<Spanned<usize>>,
    leak: Option<LeakConfig>,
    expected_blind: Option<Vec<String>>,
}

/// Where a value came from, to name it in an error the way the user wrote it.
#[derive(Clone, Debug)]
enum Origin {
    Default,
    Flag,
    File { path: String, line: usize },
}

struct Loaded {
    path: PathBuf,
    /// The TOML text parsed (for YAML files: converted from the YAML).
    text: String,
    /// Lines of `text` are not the file's lines: name keys, not lines.
    yaml: bool,
    cfg: FileConfig,
}

impl Loaded {
    fn origin<T>(&self, v: &Spanned<T>) -> Origin {
        Origin::File {
            path: self.path.display().to_string(),
            line: if self.yaml {
                0
            } else {
                line_of(&self.text, v.span())
            },
        }
    }
}

fn line_of(text: &str, span: Range<usize>) -> usize {
    let end = span.start.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Names a setting as the user wrote it: `--max-connections 0` or
/// `config /etc/sensor.toml: line 7: max_connections = 0`.
fn setting_name(key: &str, shown: &str, origin: &Origin) -> String {
    match origin {
        Origin::Flag => format!("--{} {shown}", key.replace('_', "-")),
        Origin::File { path, line: 0 } => format!("config {path}: {key} = {shown}"),
        Origin::File { path, line } => format!("config {path}: line {line}: {key} = {shown}"),
        Origin::Default => format!("default {key} = {shown}"),
    }
}

fn invalid(
    key: &str,
    shown: impl fmt::Display,
    origin: &Origin,
    message: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        setting: setting_name(key, &shown.to_string(), origin),
        message: message.into(),
    }
}

/// A path from the config file is relative to the file's directory.
fn resolve(p: &Path, base: Option<&Path>) -> PathBuf {
    match base {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p.to_path_buf(),
    }
}

/// Reads a small text file, refusing anything larger than `MAX_CONFIG_FILE_BYTES`.
fn read_small(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| io_reason(&e))?;
    let meta = f.metadata().map_err(|e| io_reason(&e))?;
    if meta.is_dir() {
        return Err("it is a directory".into());
    }
    let mut text = String::new();
    f.take(MAX_CONFIG_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| io_reason(&e))?;
    if text.len() as u64 > MAX_CONFIG_FILE_BYTES {
        return Err(format!(
            "larger than {MAX_CONFIG_FILE_BYTES} bytes; is it the right file?"
        ));
    }
    Ok(text)
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::InvalidData => "not UTF-8 text".into(),
        _ => e.to_string(),
    }
}

fn parse_file(path: &Path) -> Result<Loaded, ConfigError> {
    let shown = path.display().to_string();
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let text = read_small(path).map_err(|reason| ConfigError::Read {
        path: shown.clone(),
        reason,
    })?;
    let yaml = matches!(ext, "yaml" | "yml");
    let text = if yaml {
        yaml_to_toml(&text).map_err(|(location, message)| ConfigError::Parse {
            path: shown.clone(),
            location,
            message,
        })?
    } else {
        text
    };
    let cfg: FileConfig = toml::from_str(&text).map_err(|e| {
        let (location, key) = match e.span() {
            // Lines of the converted text mean nothing to the user; the key does.
            Some(span) if yaml => (String::new(), key_on_line(&text, line_of(&text, span))),
            Some(span) => {
                let line = line_of(&text, span.clone());
                (format!("line {line}: "), key_on_line(&text, line))
            }
            None => (String::new(), None),
        };
        let message = one_line(e.message());
        // Type errors ("invalid type: string ..., expected u32") do not say which key.
        let message = match key {
            Some(k) if !message.contains(&format!("`{k}`")) => format!("{k}: {message}"),
            _ => message,
        };
        ConfigError::Parse {
            path: shown.clone(),
            location,
            message,
        }
    })?;
    Ok(Loaded {
        path: path.to_path_buf(),
        text,
        yaml,
        cfg,
    })
}

/// The same settings written as YAML, re-expressed as TOML text so one parser
/// (and its unknown-key and type checks) serves both.  Errors: (location, message).
fn yaml_to_toml(text: &str) -> Result<String, (String, String)> {
    if text.trim().is_empty() {
        return Ok(String::new());
    }
    let value: toml::Value = serde_norway::from_str(text).map_err(|e| {
        let location = e
            .location()
            .map(|l| format!("line {}: ", l.line()))
            .unwrap_or_default();
        let message = one_line(&e.to_string());
        // serde_norway appends " at line N column M"; the location says it already.
        let message = match message.find(" at line ") {
            Some(i) if !location.is_empty() => message[..i].to_string(),
            _ => message,
        };
        let message = if message.contains("unit value") || message.contains("null") {
            format!("{message} (empty values are not allowed: remove the key to use its default)")
        } else {
            message
        };
        (location, message)
    })?;
    if !value.is_table() {
        return Err((
            String::new(),
            "expected a mapping of settings (key: value)".into(),
        ));
    }
    toml::to_string(&value).map_err(|e| (String::new(), one_line(&e.to_string())))
}

/// The key of a `key = value` line, if that line is one.
fn key_on_line(text: &str, line: usize) -> Option<String> {
    let l = text.lines().nth(line.checked_sub(1)?)?;
    let (k, _) = l.split_once('=')?;
    let k = k.trim();
    (!k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    .then(|| k.to_string())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Flag if given, else the file's value (with its line), else the default.
fn pick<T: Clone>(
    flag: Option<T>,
    file: Option<&Spanned<T>>,
    loaded: Option<&Loaded>,
    default: T,
) -> (T, Origin) {
    if let Some(v) = flag {
        return (v, Origin::Flag);
    }
    if let (Some(v), Some(l)) = (file, loaded) {
        return (v.get_ref().clone(), l.origin(v));
    }
    (default, Origin::Default)
}

impl RunConfig {
    /// Defaults < config file (`args.config`) < flags, validated.  Reads the
    /// config file and the API token file; creates nothing.
    pub fn load(args: &RunArgs) -> Result<RunConfig, ConfigError> {
        let loaded = match &args.config {
            Some(p) => Some(parse_file(p)?),
            None => None,
        };
        let l = loaded.as_ref();
        let f = l.map(|l| &l.cfg);
        let empty = FileConfig::default();
        let f = f.unwrap_or(&empty);
        // Relative paths in the file are relative to it; on the command line, to the cwd.
        let base = l.and_then(|l| l.path.parent()).map(Path::to_path_buf);
        let base = base.as_deref();
        let path_from =
            |flag: &Option<PathBuf>, file: &Option<Spanned<PathBuf>>| -> Option<PathBuf> {
                flag.clone()
                    .or_else(|| file.as_ref().map(|v| resolve(v.get_ref(), base)))
            };

        let findings = match (&args.findings, &f.findings) {
            (Some(s), _) => Output::parse(s, None),
            (None, Some(s)) => Output::parse(s.get_ref(), base),
            (None, None) => Output::Stdout,
        };
        let (pairs, pairs_origin) = match (&args.pairs, &f.pairs) {
            (Some(s), _) => (Some(Output::parse(s, None)), Origin::Flag),
            (None, Some(s)) => (
                Some(Output::parse(s.get_ref(), base)),
                l.map_or(Origin::Default, |l| l.origin(s)),
            ),
            (None, None) => (None, Origin::Default),
        };
        if findings == Output::Stdout && pairs == Some(Output::Stdout) {
            return Err(invalid(
                "pairs",
                "-",
                &pairs_origin,
                "findings already go to stdout; write pairs to a file (--pairs FILE) or findings to a file",
            ));
        }
        let record = path_from(&args.record, &f.record);
        if let Some(r) = &record {
            if r.as_os_str() == "-" {
                return Err(ConfigError::Invalid {
                    setting: "--record -".into(),
                    message: "the recording holds secrets and binary data; give a file path".into(),
                });
            }
        }

        let default_metrics: SocketAddr = DEFAULT_METRICS_ADDR.parse().expect("valid default");
        let default_api: SocketAddr = DEFAULT_API_ADDR.parse().expect("valid default");
        let (metrics_addr, _) = pick(
            args.metrics_addr,
            f.metrics_addr.as_ref(),
            l,
            default_metrics,
        );
        let (api_addr, api_origin) = pick(args.api_addr, f.api_addr.as_ref(), l, default_api);
        if metrics_addr == api_addr && api_addr.port() != 0 {
            return Err(invalid(
                "api_addr",
                api_addr,
                &api_origin,
                "the same address as --metrics-addr; give them different ports",
            ));
        }
        let api_token_file = path_from(&args.api_token_file, &f.api_token_file);
        let api_token = match &api_token_file {
            Some(p) => Some(read_token(p)?),
            None => None,
        };
        if api_token.is_none() && !api_addr.ip().is_loopback() {
            return Err(invalid(
                "api_addr",
                api_addr,
                &api_origin,
                format!(
                    "reachable from other hosts, so it needs a token: pass --api-token-file FILE, \
                     or bind it to loopback (--api-addr 127.0.0.1:{})",
                    api_addr.port()
                ),
            ));
        }

        let (state_dir, fingerprint_key_file) = key_file(args, f, base);
        let (role, _) = pick(args.role, f.role.as_ref(), l, RoleFilter::Any);

        let (pids, pid_origin) = pick(
            (!args.pid.is_empty()).then(|| args.pid.clone()),
            f.pid.as_ref(),
            l,
            Vec::new(),
        );
        if let Some(bad) = pids.iter().find(|&&p| p == 0) {
            return Err(invalid("pid", bad, &pid_origin, "process ids start at 1"));
        }
        let (comms, comm_origin) = pick(
            (!args.comm.is_empty()).then(|| args.comm.clone()),
            f.comm.as_ref(),
            l,
            Vec::new(),
        );
        for c in &comms {
            if c.is_empty() {
                return Err(invalid("comm", "\"\"", &comm_origin, "empty process name"));
            }
            if c.len() > MAX_COMM_LEN {
                let cut: String = c.bytes().take(MAX_COMM_LEN).map(char::from).collect();
                return Err(invalid(
                    "comm",
                    c,
                    &comm_origin,
                    format!("the kernel keeps only the first {MAX_COMM_LEN} bytes of a command name; use {cut:?}"),
                ));
            }
        }

        let (probe_mode, _) = pick(args.probe_mode, f.probe_mode.as_ref(), l, ProbeMode::Auto);
        let (count_only, _) = pick(
            args.count_only.then_some(true),
            f.count_only.as_ref(),
            l,
            false,
        );
        let (ring_buffer_bytes, rb_origin) = pick(
            args.ring_buffer_bytes,
            f.ring_buffer_bytes.as_ref(),
            l,
            sensor_common::DEFAULT_RING_BUFFER_BYTES,
        );
        if !ring_buffer_bytes.is_power_of_two()
            || !(MIN_RING_BUFFER_BYTES..=MAX_RING_BUFFER_BYTES).contains(&ring_buffer_bytes)
        {
            return Err(invalid(
                "ring_buffer_bytes",
                ring_buffer_bytes,
                &rb_origin,
                format!(
                    "must be a power of two from {MIN_RING_BUFFER_BYTES} to {MAX_RING_BUFFER_BYTES} (e.g. {})",
                    sensor_common::DEFAULT_RING_BUFFER_BYTES
                ),
            ));
        }
        let (max_body_bytes, max_connections, max_buffered_bytes) = limits(args, f, l)?;
        let (findings_ring, fr_origin) = pick(
            args.findings_ring,
            f.findings_ring.as_ref(),
            l,
            DEFAULT_FINDINGS_RING,
        );
        check_range(
            "findings_ring",
            findings_ring,
            1..=MAX_FINDINGS_RING,
            &fr_origin,
        )?;

        let leak = validate_leak(f.leak.clone().unwrap_or_default(), l)?;
        let expected_blind = f.expected_blind.clone().unwrap_or_else(|| {
            crate::blind::DEFAULT_EXPECTED_BLIND
                .iter()
                .map(|s| s.to_string())
                .collect()
        });

        Ok(RunConfig {
            config_file: args.config.clone(),
            findings,
            pairs,
            record,
            metrics_addr,
            api_addr,
            api_token_file,
            api_token,
            fingerprint_key_file,
            state_dir,
            role,
            capture: CaptureConfig {
                probe_mode,
                count_only,
                ring_buffer_bytes,
                pids,
                comms,
                ..CaptureConfig::default()
            },
            http_limits: HttpLimits {
                max_body_bytes,
                ..HttpLimits::default()
            },
            max_connections,
            max_buffered_bytes,
            findings_ring,
            leak,
            expected_blind,
        })
    }

    /// What SIGHUP applies: scope and leak lists.
    pub fn reloadable_part(&self) -> Reloadable {
        Reloadable {
            role: self.role,
            pids: self.capture.pids.clone(),
            comms: self.capture.comms.clone(),
            leak: self.leak.clone(),
        }
    }

    /// Settings that differ from `newer` but only take effect on restart (for a
    /// SIGHUP log line: "changed ...; restart to apply").
    pub fn restart_needed_for(&self, newer: &RunConfig) -> Vec<&'static str> {
        let mut v = Vec::new();
        macro_rules! cmp {
            ($($field:ident).+ => $name:literal) => {
                if self.$($field).+ != newer.$($field).+ {
                    v.push($name);
                }
            };
        }
        cmp!(findings => "findings");
        cmp!(pairs => "pairs");
        cmp!(record => "record");
        cmp!(metrics_addr => "metrics_addr");
        cmp!(api_addr => "api_addr");
        cmp!(api_token => "api_token_file");
        cmp!(fingerprint_key_file => "fingerprint_key_file");
        cmp!(state_dir => "state_dir");
        cmp!(capture.probe_mode => "probe_mode");
        cmp!(capture.count_only => "count_only");
        cmp!(capture.ring_buffer_bytes => "ring_buffer_bytes");
        cmp!(http_limits => "max_body_bytes");
        cmp!(max_connections => "max_connections");
        cmp!(max_buffered_bytes => "max_buffered_bytes");
        cmp!(findings_ring => "findings_ring");
        v
    }

    /// The live API's address and token.
    pub fn api_config(&self) -> ApiConfig {
        ApiConfig {
            addr: self.api_addr,
            token: self.api_token.as_ref().map(|t| t.expose().to_string()),
        }
    }
}

/// `max_body_bytes`, `max_connections`, `max_buffered_bytes`: flag, file
/// or default, validated (run and replay alike).
fn limits(
    args: &RunArgs,
    f: &FileConfig,
    l: Option<&Loaded>,
) -> Result<(usize, usize, usize), ConfigError> {
    let (max_body_bytes, mb_origin) = pick(
        args.max_body_bytes,
        f.max_body_bytes.as_ref(),
        l,
        DEFAULT_MAX_BODY_BYTES,
    );
    check_range(
        "max_body_bytes",
        max_body_bytes,
        MIN_MAX_BODY_BYTES..=MAX_MAX_BODY_BYTES,
        &mb_origin,
    )?;
    let (max_connections, mc_origin) = pick(
        args.max_connections,
        f.max_connections.as_ref(),
        l,
        DEFAULT_MAX_CONNECTIONS,
    );
    check_range(
        "max_connections",
        max_connections,
        1..=MAX_MAX_CONNECTIONS,
        &mc_origin,
    )?;
    let (max_buffered_bytes, bb_origin) = pick(
        args.max_buffered_bytes,
        f.max_buffered_bytes.as_ref(),
        l,
        crate::pipeline::DEFAULT_MAX_BUFFERED_BYTES,
    );
    check_range(
        "max_buffered_bytes",
        max_buffered_bytes,
        MIN_MAX_BUFFERED_BYTES..=MAX_MAX_BUFFERED_BYTES,
        &bb_origin,
    )?;
    Ok((max_body_bytes, max_connections, max_buffered_bytes))
}

/// The state dir and the fingerprint key file: flag, file or default.
fn key_file(args: &RunArgs, f: &FileConfig, base: Option<&Path>) -> (PathBuf, PathBuf) {
    let path_from = |flag: &Option<PathBuf>, file: &Option<Spanned<PathBuf>>| -> Option<PathBuf> {
        flag.clone()
            .or_else(|| file.as_ref().map(|v| resolve(v.get_ref(), base)))
    };
    let state_dir = path_from(&args.state_dir, &f.state_dir)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    let fingerprint_key_file = path_from(&args.fingerprint_key_file, &f.fingerprint_key_file)
        .unwrap_or_else(|| state_dir.join(FINGERPRINT_KEY_NAME));
    (state_dir, fingerprint_key_file)
}

/// What `sensor replay` takes from a config file (`--config`, the same
/// file and precedence as `sensor run`: defaults < file < flags): the
/// settings that decide which findings a capture gives and their
/// fingerprints.  The rest of the file (outputs, addresses, capture and
/// scope settings) is the live sensor's business and not used.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayConfig {
    pub config_file: Option<PathBuf>,
    pub fingerprint_key_file: PathBuf,
    pub role: RoleFilter,
    pub http_limits: HttpLimits,
    pub max_connections: usize,
    pub max_buffered_bytes: usize,
    pub leak: LeakConfig,
}

impl ReplayConfig {
    /// `args` holds `sensor replay`'s flags (`config`, `fingerprint_key_file`,
    /// `state_dir`, `role`, `max_body_bytes`, `max_connections`,
    /// `max_buffered_bytes`); other fields are ignored.  Reads the config
    /// file only.
    pub fn load(args: &RunArgs) -> Result<ReplayConfig, ConfigError> {
        let loaded = match &args.config {
            Some(p) => Some(parse_file(p)?),
            None => None,
        };
        let l = loaded.as_ref();
        let empty = FileConfig::default();
        let f = l.map_or(&empty, |l| &l.cfg);
        let base = l.and_then(|l| l.path.parent()).map(Path::to_path_buf);
        let (_, fingerprint_key_file) = key_file(args, f, base.as_deref());
        let (role, _) = pick(args.role, f.role.as_ref(), l, RoleFilter::Any);
        let (max_body_bytes, max_connections, max_buffered_bytes) = limits(args, f, l)?;
        let leak = validate_leak(f.leak.clone().unwrap_or_default(), l)?;
        Ok(ReplayConfig {
            config_file: args.config.clone(),
            fingerprint_key_file,
            role,
            http_limits: HttpLimits {
                max_body_bytes,
                ..HttpLimits::default()
            },
            max_connections,
            max_buffered_bytes,
            leak,
        })
    }
}

fn check_range(
    key: &str,
    v: usize,
    range: std::ops::RangeInclusive<usize>,
    origin: &Origin,
) -> Result<(), ConfigError> {
    if range.contains(&v) {
        return Ok(());
    }
    Err(invalid(
        key,
        v,
        origin,
        format!("must be from {} to {}", range.start(), range.end()),
    ))
}

fn validate_leak(mut leak: LeakConfig, l: Option<&Loaded>) -> Result<LeakConfig, ConfigError> {
    let origin = l.map_or(Origin::Default, |l| Origin::File {
        path: l.path.display().to_string(),
        line: l
            .text
            .lines()
            .position(|line| line.trim() == "[leak]")
            .filter(|_| !l.yaml)
            .map_or(if l.yaml { 0 } else { 1 }, |i| i + 1),
    });
    let key = |k: &str| format!("[leak] {k}");
    if leak.min_length == 0 {
        return Err(invalid(
            &key("min_length"),
            0,
            &origin,
            "must be at least 1 (default 8)",
        ));
    }
    if !(0.0..=8.0).contains(&leak.min_entropy_bits) || leak.min_entropy_bits.is_nan() {
        return Err(invalid(
            &key("min_entropy_bits"),
            leak.min_entropy_bits,
            &origin,
            "bits per byte, from 0 to 8 (default 2.5)",
        ));
    }
    if !(MIN_DECOMPRESSED_BYTES..=MAX_DECOMPRESSED_BYTES).contains(&leak.max_decompressed_bytes) {
        return Err(invalid(
            &key("max_decompressed_bytes"),
            leak.max_decompressed_bytes,
            &origin,
            format!("must be from {MIN_DECOMPRESSED_BYTES} to {MAX_DECOMPRESSED_BYTES}"),
        ));
    }
    if leak.partial_min_chars == 0 {
        return Err(invalid(
            &key("partial_min_chars"),
            0,
            &origin,
            "must be at least 1 (default 16)",
        ));
    }
    // Header names are matched lower-case (HTTP/2 and the HTTP stage lower-case them).
    for list in [&mut leak.headers, &mut leak.header_suffixes] {
        for h in list.iter_mut() {
            *h = h.trim().to_ascii_lowercase();
        }
    }
    // Name words are matched against names lower-cased with only their
    // letters and digits kept (`new_password` → `newpassword`).
    for list in [
        &mut leak.credential_name_suffixes,
        &mut leak.not_credential_words,
    ] {
        for w in list.iter_mut() {
            w.retain(|c| c.is_ascii_alphanumeric());
            w.make_ascii_lowercase();
        }
    }
    let lists: [(&str, &Vec<String>); 8] = [
        ("headers", &leak.headers),
        ("header_suffixes", &leak.header_suffixes),
        ("query_params", &leak.query_params),
        ("cookies", &leak.cookies),
        ("body_fields", &leak.body_fields),
        ("credential_name_suffixes", &leak.credential_name_suffixes),
        ("not_credential_words", &leak.not_credential_words),
        ("not_credential_cookies", &leak.not_credential_cookies),
    ];
    for (name, list) in lists {
        if let Some(bad) = list.iter().find(|s| s.trim().is_empty()) {
            return Err(invalid(
                &key(name),
                format!("{bad:?}"),
                &origin,
                "empty entry in the list",
            ));
        }
    }
    Ok(leak)
}

fn read_token(path: &Path) -> Result<Secret, ConfigError> {
    let err = |reason: String| ConfigError::Token {
        path: path.display().to_string(),
        reason,
    };
    let text = Zeroizing::new(read_small(path).map_err(err)?);
    let token = text.trim();
    if token.is_empty() {
        return Err(err("the file is empty; put the token in it".into()));
    }
    if token.contains(char::is_whitespace) || !token.is_ascii() {
        return Err(err(
            "the token must be one line of printable ASCII without spaces".into(),
        ));
    }
    warn_if_readable_by_others(path);
    Ok(Secret(Zeroizing::new(token.to_string())))
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o004 != 0 {
            tracing::warn!(
                path = %path.display(),
                "the API token file is readable by every user; chmod 600 it"
            );
        }
    }
}

#[cfg(test)]
mod tests;
