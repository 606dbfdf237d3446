//! A self-signed certificate for 127.0.0.1 / localhost, made with the
//! `openssl` CLI in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::proc::run_bounded;

pub struct TestCert {
    dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl TestCert {
    /// An ECDSA P-256 certificate (fast to make) valid two days for
    /// `IP:127.0.0.1, DNS:localhost`.
    pub fn new() -> Result<TestCert> {
        let dir = tempfile::Builder::new()
            .prefix("sensor-e2e-cert")
            .tempdir()?;
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let mut cmd = Command::new("openssl");
        cmd.args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert);
        let out = run_bounded("openssl-req", &cmd, Duration::from_secs(20))?;
        if !out.status.success() || !cert.exists() {
            bail!(
                "openssl req failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(TestCert { dir, cert, key })
    }

    /// The certificate (also the CA to trust: it is self-signed).
    pub fn cert(&self) -> &Path {
        &self.cert
    }

    pub fn key(&self) -> &Path {
        &self.key
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
