//! JSON-lines writers for `--findings` and `--pairs` (`-` is stdout).

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use serde::Serialize;

/// Writes one JSON object per line.  Buffered; the pipeline flushes after each
/// batch of events so a finding reaches its reader within the batch latency.
pub struct JsonLinesWriter {
    out: BufWriter<Box<dyn Write + Send>>,
    what: &'static str,
}

impl JsonLinesWriter {
    /// `-` means stdout; anything else is a file, appended to (created mode 0600,
    /// as pairs and findings describe the host's traffic).
    pub fn open(target: &str, what: &'static str) -> io::Result<Self> {
        let inner: Box<dyn Write + Send> = if target == "-" {
            Box::new(io::stdout())
        } else {
            use std::os::unix::fs::OpenOptionsExt;
            let path = Path::new(target);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            Box::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(path)?,
            )
        };
        Ok(JsonLinesWriter {
            out: BufWriter::with_capacity(64 * 1024, inner),
            what,
        })
    }

    /// A writer into any sink (tests, benchmarks).
    pub fn from_writer(w: Box<dyn Write + Send>, what: &'static str) -> Self {
        JsonLinesWriter {
            out: BufWriter::new(w),
            what,
        }
    }

    pub fn write<T: Serialize>(&mut self, value: &T) {
        let res = serde_json::to_writer(&mut self.out, value).map_err(io::Error::from);
        let res = res.and_then(|_| self.out.write_all(b"\n"));
        if let Err(e) = res {
            tracing::error!(output = self.what, "cannot write {}: {e}", self.what);
        }
    }

    pub fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            tracing::error!(output = self.what, "cannot flush {}: {e}", self.what);
        }
    }
}
