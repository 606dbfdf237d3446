//! Small helpers shared by the subcommands.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

/// Runs a command, echoing it, and fails with its exit status.
pub fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: $ {}", display(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("could not start {}", display(cmd)))?;
    if !status.success() {
        bail!("{} failed with {status}", display(cmd));
    }
    Ok(())
}

/// Like [`run_cmd`], and also appends everything the command prints (stdout
/// and stderr, interleaved as they arrive) to `log`.
pub fn run_cmd_logged(cmd: &mut Command, log: &std::path::Path) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};
    eprintln!("xtask: $ {}", display(cmd));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open the test log {}", log.display()))?;
    let file = Arc::new(Mutex::new(file));
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {}", display(cmd)))?;
    fn pump(
        mut from: impl Read + Send + 'static,
        to_stdout: bool,
        file: Arc<Mutex<std::fs::File>>,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let _ = if to_stdout {
                    std::io::stdout().write_all(&buf[..n])
                } else {
                    std::io::stderr().write_all(&buf[..n])
                };
                let _ = file
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .write_all(&buf[..n]);
            }
        })
    }
    let out = pump(child.stdout.take().expect("piped"), true, file.clone());
    let err = pump(child.stderr.take().expect("piped"), false, file);
    let status = child.wait()?;
    let _ = out.join();
    let _ = err.join();
    if !status.success() {
        bail!("{} failed with {status}", display(cmd));
    }
    Ok(())
}

pub fn display(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
