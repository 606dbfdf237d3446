//! Bounded child processes: every process the harness starts runs under
//! `timeout -s KILL` in its own process group, so it dies even if the test
//! process is killed; Drop kills the whole group.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::secrets::redact;

/// Longest any helper process (server, client, sensor) may live.
pub const DEFAULT_HARD_TIMEOUT: Duration = Duration::from_secs(300);
/// How long `kill` waits for the killed processes to disappear.
pub const KILL_WAIT: Duration = Duration::from_secs(3);
/// Lines of a process's stderr shown when something fails.
pub const STDERR_TAIL_LINES: usize = 40;

/// A running process (and its process group) with stdout/stderr in files.
pub struct Process {
    name: String,
    child: Child,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    status: Option<ExitStatus>,
    /// Runs under a `timeout` wrapper (the command is the wrapper's child).
    wrapped: bool,
}

impl Process {
    /// Starts `cmd` as `timeout -s KILL <hard_timeout> <cmd>` in a new process
    /// group; stdout/stderr go to `<log_dir>/<name>.{stdout,stderr}`.
    pub fn spawn(
        name: &str,
        cmd: &Command,
        hard_timeout: Duration,
        log_dir: &Path,
    ) -> Result<Self> {
        Self::spawn_inner(name, cmd, Some(hard_timeout), log_dir)
    }

    /// Starts `cmd` directly (no `timeout` wrapper: its pid is the command's),
    /// in a new process group.  For short-lived clients whose caller enforces
    /// the time limit.
    pub fn spawn_unwrapped(name: &str, cmd: &Command, log_dir: &Path) -> Result<Self> {
        Self::spawn_inner(name, cmd, None, log_dir)
    }

    fn spawn_inner(
        name: &str,
        cmd: &Command,
        hard_timeout: Option<Duration>,
        log_dir: &Path,
    ) -> Result<Self> {
        use std::os::unix::process::CommandExt;

        let stdout_path = log_dir.join(format!("{name}.stdout"));
        let stderr_path = log_dir.join(format!("{name}.stderr"));
        let mut wrapped = match hard_timeout {
            Some(t) => {
                let mut w = Command::new("timeout");
                w.arg("-s")
                    .arg("KILL")
                    .arg(format!("{}", t.as_secs().max(1)))
                    .arg(cmd.get_program());
                w
            }
            None => Command::new(cmd.get_program()),
        };
        wrapped
            .args(cmd.get_args())
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path).context("creating stdout log")?)
            .stderr(File::create(&stderr_path).context("creating stderr log")?)
            .process_group(0);
        for (key, value) in cmd.get_envs() {
            match value {
                Some(v) => wrapped.env(key, v),
                None => wrapped.env_remove(key),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            wrapped.current_dir(dir);
        }
        let child = wrapped
            .spawn()
            .with_context(|| format!("could not start {name} ({:?})", cmd.get_program()))?;
        Ok(Process {
            name: name.to_string(),
            child,
            stdout_path,
            stderr_path,
            status: None,
            wrapped: hard_timeout.is_some(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Pid of the process started (the `timeout` wrapper if wrapped), which is
    /// also the process group id.
    pub fn group_pid(&self) -> u32 {
        self.child.id()
    }

    /// Pid of the command itself (the wrapper's child), once it exists.
    pub fn main_pid(&self) -> Option<u32> {
        if !self.wrapped {
            return Some(self.child.id());
        }
        children_of(self.group_pid()).into_iter().min()
    }

    /// Every live process the command became (itself and all descendants,
    /// e.g. gunicorn's workers or the process inside `unshare … chroot`).
    pub fn tree(&self) -> Vec<u32> {
        let all = descendants(self.group_pid());
        if self.wrapped {
            all.into_iter().filter(|&p| p != self.group_pid()).collect()
        } else {
            all
        }
    }

    /// The exit status if it has exited (non-blocking).
    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to the command itself (not the `timeout` wrapper).
    pub fn signal_main(&self, signal: i32) -> Result<()> {
        let pid = self.main_pid().context("process has no child yet")?;
        // SAFETY: kill(2) with a pid we started; no memory is involved.
        if unsafe { libc::kill(pid as i32, signal) } != 0 {
            bail!("kill({pid}, {signal}): {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// SIGKILL to the whole process group, reap, and wait (bounded) until
    /// every process of the tree is gone.
    pub fn kill(&mut self) {
        let tree = self.tree();
        self.kill_group();
        let deadline = Instant::now() + KILL_WAIT;
        while tree.iter().any(|&p| is_alive(p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill_group(&mut self) {
        if self.try_exited().is_none() {
            // SAFETY: kill(2) on the process group we created.
            unsafe {
                libc::kill(-(self.group_pid() as i32), libc::SIGKILL);
            }
            let _ = self.child.wait().map(|s| self.status = Some(s));
        } else {
            // The wrapper is gone; stray members of its group may not be.
            // SAFETY: as above; ESRCH when the group is empty is fine.
            unsafe {
                libc::kill(-(self.group_pid() as i32), libc::SIGKILL);
            }
        }
    }

    pub fn stdout(&self) -> String {
        std::fs::read(&self.stdout_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read(&self.stderr_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub fn stderr_path(&self) -> &Path {
        &self.stderr_path
    }

    /// The last lines of stderr, with test secrets redacted: safe to print.
    pub fn stderr_tail(&self) -> String {
        tail(&redact(&self.stderr()), STDERR_TAIL_LINES)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a finished bounded command produced.
pub struct Finished {
    pub pid: u32,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs `cmd` to completion within `timeout` (killed and an error after it).
pub fn run_bounded(name: &str, cmd: &Command, timeout: Duration) -> Result<Finished> {
    let dir = tempfile::tempdir()?;
    let mut p = Process::spawn_unwrapped(name, cmd, dir.path())?;
    let pid = p.group_pid();
    let status = match p.wait_timeout(timeout) {
        Some(s) => s,
        None => {
            p.kill();
            bail!(
                "{name} did not finish within {timeout:?}; stderr:\n{}",
                p.stderr_tail()
            );
        }
    };
    Ok(Finished {
        pid,
        status,
        stdout: std::fs::read(&p.stdout_path).unwrap_or_default(),
        stderr: std::fs::read(&p.stderr_path).unwrap_or_default(),
    })
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// (pid, ppid) of every process in /proc.
fn process_table() -> Vec<(u32, u32)> {
    let mut table = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return table;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parens.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
            table.push((pid, ppid));
        }
    }
    table
}

/// True while `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Direct children of `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    process_table()
        .into_iter()
        .filter(|&(_, ppid)| ppid == pid)
        .map(|(p, _)| p)
        .collect()
}

/// `pid` and all its live descendants.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut by_parent: HashMap<u32, Vec<u32>> = HashMap::new();
    for (p, ppid) in process_table() {
        by_parent.entry(ppid).or_default().push(p);
    }
    let mut out = vec![pid];
    let mut queue = VecDeque::from([pid]);
    while let Some(p) = queue.pop_front() {
        for &c in by_parent.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            out.push(c);
            queue.push_back(c);
        }
    }
    out
}
