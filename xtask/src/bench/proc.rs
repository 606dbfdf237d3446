//! Processes the benchmarks start: every one is owned by a [`Proc`] that stops
//! it by pid (SIGTERM, then SIGKILL) when dropped, so an error or a panic
//! half-way through a benchmark leaves nothing running.  Plus what /proc says
//! about a pid (CPU time, memory, children).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long a process gets to exit after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

pub struct Proc {
    pub name: String,
    child: Child,
    log: Option<PathBuf>,
    exited: Option<ExitStatus>,
}

impl Proc {
    /// Starts `cmd` with stdout+stderr appended to `log` (when given) and stdin closed.
    pub fn spawn(name: &str, cmd: &mut Command, log: Option<&Path>) -> anyhow::Result<Proc> {
        cmd.stdin(Stdio::null());
        if let Some(log) = log {
            let f = File::options()
                .create(true)
                .append(true)
                .open(log)
                .with_context(|| format!("opening {}", log.display()))?;
            cmd.stdout(f.try_clone()?).stderr(f);
        }
        Self::spawn_raw(name, cmd, log)
    }

    /// Starts `cmd` as configured by the caller (pipes etc.).
    pub fn spawn_raw(name: &str, cmd: &mut Command, log: Option<&Path>) -> anyhow::Result<Proc> {
        let child = cmd
            .spawn()
            .with_context(|| format!("could not start {name} ({})", crate::util::display(cmd)))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log: log.map(Path::to_path_buf),
            exited: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    pub fn stdin(&mut self) -> Option<&mut std::process::ChildStdin> {
        self.child.stdin.as_mut()
    }

    pub fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }

    /// `Some(status)` once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Fails with the log tail when the process is no longer running.
    pub fn ensure_alive(&mut self) -> anyhow::Result<()> {
        if let Some(st) = self.exited() {
            bail!(
                "{} (pid {}) exited unexpectedly ({st}){}",
                self.name,
                self.pid(),
                self.log_tail()
            );
        }
        Ok(())
    }

    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(st) = self.exited() {
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL.  Returns the exit status.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(st) = self.exited() {
            return Some(st);
        }
        signal(self.pid(), libc::SIGTERM);
        if let Some(st) = self.wait_timeout(grace) {
            return Some(st);
        }
        eprintln!(
            "xtask bench: {} (pid {}) ignored SIGTERM for {grace:?}; killing it",
            self.name,
            self.pid()
        );
        let _ = self.child.kill();
        self.exited = self.child.wait().ok();
        self.exited
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        match &self.log {
            Some(p) => {
                let text = std::fs::read_to_string(p).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(15)..].join("\n  ");
                format!("; last lines of {}:\n  {tail}", p.display())
            }
            None => String::new(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(STOP_GRACE);
    }
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a pid we started; no memory is involved.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// Lines of a child's stdout, read on a thread so waiting for one can time out.
pub struct Lines {
    rx: mpsc::Receiver<String>,
}

impl Lines {
    pub fn new(out: ChildStdout) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { rx }
    }

    /// The next line starting with `prefix` (other lines are skipped), within `limit`.
    pub fn wait_for(&self, prefix: &str, limit: Duration) -> anyhow::Result<String> {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return Ok(l),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!("no '{prefix}' line within {limit:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("the process closed its output before printing '{prefix}'")
                }
            }
        }
    }
}

/// The result of [`run_measured`].
pub struct Measured {
    pub status: i32,
    pub wall: Duration,
    /// User + system CPU seconds of the process (and its waited-for children).
    pub cpu_s: f64,
    pub max_rss_kib: u64,
}

/// Runs a command to completion within `limit` (killed after), stdout and stderr
/// to the given files, and returns its CPU time from wait4's rusage.
pub fn run_measured(
    cmd: &mut Command,
    stdout: File,
    stderr: File,
    limit: Duration,
) -> anyhow::Result<Measured> {
    let what = crate::util::display(cmd);
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("could not start {what}"))?;
    let pid = child.id() as i32;
    // The child is reaped by wait4 below, not by std.
    drop(child);
    let end = start + limit;
    loop {
        let mut status = 0i32;
        // SAFETY: zeroed rusage is a valid value; wait4 fills both outputs.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            let wall = start.elapsed();
            let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            };
            return Ok(Measured {
                status: code,
                wall,
                cpu_s: tv(ru.ru_utime) + tv(ru.ru_stime),
                max_rss_kib: ru.ru_maxrss as u64,
            });
        }
        if r < 0 {
            bail!("waiting for {what}: {}", std::io::Error::last_os_error());
        }
        if Instant::now() >= end {
            signal(pid as u32, libc::SIGKILL);
            // SAFETY: reaping the child we just killed.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            bail!("{what} did not finish within {limit:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a whole process (all its threads), in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/PID/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let ticks: f64 = f
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .zip(f.get(12).and_then(|s| s.parse::<f64>().ok()))
        .map(|(u, s)| u + s)
        .context("malformed /proc/PID/stat")?;
    Ok(ticks / clock_ticks_per_s())
}

/// A `kB` field of /proc/PID/status (`VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in {path}"))
}

/// Direct children of a process.
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out
}

/// Raises this process' open-file limit (inherited by everything it starts):
/// the memory benchmark holds 10,000 connections open.
pub fn raise_nofile(want: u64) -> anyhow::Result<u64> {
    // SAFETY: getrlimit/setrlimit with a struct we own.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        if rl.rlim_cur >= want {
            return Ok(rl.rlim_cur);
        }
        let new = libc::rlimit {
            rlim_cur: want,
            rlim_max: rl.rlim_max.max(want),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &new) != 0 {
            // Without privilege only the soft limit can go up, to the hard one.
            let capped = libc::rlimit {
                rlim_cur: rl.rlim_max,
                rlim_max: rl.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &capped);
            return Ok(rl.rlim_max);
        }
        Ok(want)
    }
}

/// The current soft limit on open files.
pub fn nofile_limit() -> u64 {
    // SAFETY: getrlimit with a struct we own.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 1024;
        }
        rl.rlim_cur
    }
}

/// Samples a process' VmRSS every `every` on a thread; `stop()` returns the peak (KiB).
pub struct RssSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<u64>>,
}

impl RssSampler {
    pub fn start(pid: u32, every: Duration) -> RssSampler {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            while !s.load(Ordering::Relaxed) {
                if let Ok(v) = status_kib(pid, "VmRSS") {
                    peak = peak.max(v);
                }
                std::thread::sleep(every);
            }
            peak
        });
        RssSampler {
            stop,
            handle: Some(handle),
        }
    }

    pub fn stop(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle
            .take()
            .map(|h| h.join().unwrap_or(0))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_figures() {
        let me = std::process::id();
        assert!(cpu_seconds(me).unwrap() >= 0.0);
        assert!(status_kib(me, "VmRSS").unwrap() > 0);
        assert!(status_kib(me, "VmHWM").unwrap() > 0);
        assert!(status_kib(me, "NoSuchField").is_err());
    }

    #[test]
    fn proc_is_stopped_on_drop_and_measured_runs_report_cpu() {
        let mut c = Command::new("sleep");
        c.arg("30");
        let p = Proc::spawn("sleep", &mut c, None).unwrap();
        let pid = p.pid();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(p);
        // Reaped: the pid is gone (or reused by something that is not our sleep).
        let gone = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim() != "sleep")
            .unwrap_or(true);
        assert!(gone);

        let null = || File::create("/dev/null").unwrap();
        let mut c = Command::new("sh");
        c.args([
            "-c",
            "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exit 3",
        ]);
        let m = run_measured(&mut c, null(), null(), Duration::from_secs(30)).unwrap();
        assert_eq!(m.status, 3);
        assert!(m.cpu_s > 0.0);
        let mut c = Command::new("sleep");
        c.arg("5");
        assert!(run_measured(&mut c, null(), null(), Duration::from_millis(100)).is_err());
    }
}
