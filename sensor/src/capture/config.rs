//! What `capture` is asked to do.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the probes go in a TLS library.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProbeMode {
    /// Internal call targets (cheap, emulated first instruction) when the
    /// library's wrappers are recognised, the exported `SSL_*` entries otherwise.
    #[default]
    Auto,
    /// Always the exported `SSL_*` entry points (what comparable tools do; for benchmarks).
    Exported,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureConfig {
    pub probe_mode: ProbeMode,
    /// Attach probes that count calls but copy nothing (benchmark floor).
    pub count_only: bool,
    /// Ring buffer size in bytes (power of two, page multiple).
    pub ring_buffer_bytes: u32,
    /// Only these processes (empty: all).
    pub pids: Vec<u32>,
    /// Only processes with these command names (empty: all).
    pub comms: Vec<String>,
    /// How often /proc is rescanned for new TLS libraries and exited processes.
    pub rescan_interval: Duration,
    /// Per-thread in-flight slots in the kernel (power of two): threads whose
    /// slot is busy fall back to a hash map.  Tests set 1 to force sharing.
    pub inflight_slots: u32,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            probe_mode: ProbeMode::Auto,
            count_only: false,
            ring_buffer_bytes: sensor_common::DEFAULT_RING_BUFFER_BYTES,
            pids: Vec::new(),
            comms: Vec::new(),
            rescan_interval: Duration::from_secs(1),
            inflight_slots: sensor_common::INFLIGHT_SLOTS,
        }
    }
}
