//! Harness for the end-to-end tests: real TLS servers (FastAPI/uvicorn,
//! Flask/gunicorn, nginx, node, nginx and node over HTTP/2, the stdlib demo
//! API, a server in a separate root filesystem), real clients (curl, Python
//! http.client/httpx, over HTTP/1.1 and HTTP/2), and the sensor binary, all
//! on loopback, all bounded in time and stopped by pid.
//!
//! Test-output hygiene: every piece of external text the harness prints (server
//! or sensor stderr on failure) goes through [`secrets::redact`], so a raw test
//! credential never reaches the test log even when a test fails.

pub mod cert;
pub mod client;
pub mod contract;
pub mod expect;
pub mod http2;
pub mod net;
pub mod paths;
pub mod proc;
pub mod rootfs;
pub mod scenario;
pub mod secrets;
pub mod sensor;
pub mod server;
pub mod wait;

pub use cert::TestCert;
pub use client::{curl, curl_h2, curl_keepalive, curl_sequence, CurlResponse, PyClient};
pub use contract::{Finding, Pair};
pub use expect::{check_findings, findings_of, ExpectedFinding};
pub use net::{delaying_relay, free_port, http_get};
pub use rootfs::separate_root;
pub use secrets::{assert_no_secrets, Secret};
pub use sensor::Sensor;
pub use server::Server;

use std::sync::{Mutex, MutexGuard};

/// The e2e tests must run as root (the sensor loads eBPF programs, the
/// separate-root fixture chroots).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("e2e tests need root: run `sudo cargo xtask test`");
    }
}

static SERIAL: Mutex<()> = Mutex::new(());

/// One e2e test at a time in a test binary: each starts its own sensor, which
/// sees every TLS process on the host, and the machine has few cores.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
