//! The suite-wide secret check of `cargo xtask test`: every test credential the
//! e2e harness makes is written to a ledger (see tests/harness/secrets.rs);
//! after the run, every captured line of test output is searched for each of
//! them.  A hit fails the run and names where, never what.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// Where one `cargo xtask test` run keeps its ledger and logs.
pub struct TestRun {
    pub dir: PathBuf,
}

impl TestRun {
    /// A fresh `target/test-run/` (the previous run's is removed).
    pub fn new(workspace: &Path) -> anyhow::Result<Self> {
        let dir = workspace.join("target/test-run");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(TestRun { dir })
    }

    pub fn ledger(&self) -> PathBuf {
        self.dir.join("secret-ledger")
    }

    pub fn log(&self, step: &str) -> PathBuf {
        self.dir.join(format!("{step}.log"))
    }

    /// Scans every log of this run for every ledger secret, then deletes the ledger.
    pub fn scan_and_forget(&self) -> anyhow::Result<ScanReport> {
        let secrets = read_ledger(&self.ledger())?;
        let mut report = ScanReport {
            secrets: secrets.len(),
            ..Default::default()
        };
        let mut logs: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        for log in logs {
            let text = std::fs::read(&log)?;
            report.bytes += text.len();
            report.hits.extend(
                find_secrets(&text, &secrets)
                    .into_iter()
                    .map(|(secret, line)| {
                        format!("secret #{secret} in {} line {line}", log.display())
                    }),
            );
        }
        if let Err(e) = std::fs::remove_file(self.ledger()) {
            if e.kind() != std::io::ErrorKind::NotFound {
                bail!(
                    "cannot delete the secret ledger {}: {e}",
                    self.ledger().display()
                );
            }
        }
        Ok(report)
    }
}

#[derive(Default, Debug)]
pub struct ScanReport {
    pub secrets: usize,
    pub bytes: usize,
    /// "secret #N in FILE line L", one per hit.
    pub hits: Vec<String>,
}

fn read_ledger(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(b
            .split(|&c| c == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// (secret index, 1-based line) of every line holding a secret.
fn find_secrets(text: &[u8], secrets: &[Vec<u8>]) -> Vec<(usize, usize)> {
    let mut hits = Vec::new();
    for (n, line) in text.split(|&c| c == b'\n').enumerate() {
        for (i, s) in secrets.iter().enumerate() {
            if contains(line, s) {
                hits.push((i, n + 1));
            }
        }
    }
    hits
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_secret_and_names_the_line_not_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let run = TestRun::new(dir.path()).unwrap();
        std::fs::write(run.ledger(), "sk_live_AAAA1111\nghp_BBBB2222\n").unwrap();
        std::fs::write(run.log("unit"), "ok\nleaked sk_live_AAAA1111 here\n").unwrap();
        std::fs::write(run.log("e2e"), "fine\n").unwrap();
        let r = run.scan_and_forget().unwrap();
        assert_eq!(r.secrets, 2);
        assert_eq!(r.hits.len(), 1);
        assert!(r.hits[0].starts_with("secret #0 in "), "{:?}", r.hits);
        assert!(r.hits[0].ends_with("unit.log line 2"), "{:?}", r.hits);
        assert!(!r.hits[0].contains("AAAA"));
        assert!(!run.ledger().exists(), "the ledger is deleted");
    }

    #[test]
    fn clean_logs_and_no_ledger_pass() {
        let dir = tempfile::tempdir().unwrap();
        let run = TestRun::new(dir.path()).unwrap();
        std::fs::write(run.log("unit"), "nothing to see\n").unwrap();
        let r = run.scan_and_forget().unwrap();
        assert!(r.hits.is_empty());
        assert_eq!(r.secrets, 0);
    }
}
