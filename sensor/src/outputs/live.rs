//! Types of the live API (`--api-addr`) that `sensor watch` and scripts read.

use serde::{Deserialize, Serialize};

use crate::finding::Finding;

/// A TLS library the probes are attached to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedLibrary {
    /// Path as first seen (host view, or /proc/PID/root/... for containers).
    pub path: String,
    /// "openssl", …
    pub library: String,
    /// "internal" (cheap probe sites inside the library) or "exported" (SSL_* entry points).
    pub mode: String,
    /// Processes currently mapping it.
    pub processes: u32,
}

/// A process the sensor knows it cannot see into.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlindProcess {
    pub pid: u32,
    pub comm: String,
    /// "go_tls", "boringssl", "static_openssl", "openssl_unattached", "rustls", "java_tls", "erlang_tls", "gnutls", "nss", "wolfssl", "mbedtls", "unknown_tls" (`blind::REASONS`)
    pub reason: String,
    /// On the expected-blind list (a node's own agents: kubelet, containerd,
    /// …; `blind::DEFAULT_EXPECTED_BLIND`, config `expected_blind`): listed,
    /// and counted under `expected="true"`, which the alert leaves out.
    #[serde(default)]
    pub expected: bool,
}

/// `GET /api/v1/stats`, and the `stats` items of `GET /api/v1/stream` (once a second).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    pub version: String,
    pub node: String,
    pub uptime_s: u64,
    pub attached_libraries: Vec<AttachedLibrary>,
    pub attached_processes: u32,
    pub blind_processes: Vec<BlindProcess>,
    pub events_total: u64,
    pub events_per_s: f64,
    pub lost_events: u64,
    pub truncated_bytes: u64,
    pub parse_errors: u64,
    pub connections_active: u64,
    pub pairs_server: u64,
    pub pairs_client: u64,
    pub pairs_per_s_server: f64,
    pub pairs_per_s_client: f64,
    pub findings_total: u64,
    pub masked_echoes: u64,
}

/// One line of `GET /api/v1/stream` (newline-delimited JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum StreamItem {
    Finding(Box<Finding>),
    Stats(Box<StatsSnapshot>),
}

/// `GET /api/v1/findings?since=ID`: findings newer than `since`, and the id to ask from next.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FindingsPage {
    pub findings: Vec<Finding>,
    pub next: u64,
}
