//! Which processes the sensor looks at (`--pid`, `--comm`), decided per tgid
//! in userspace and cached.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Cached decisions at most; the cache is cleared when it fills (cheap to rebuild).
pub const MAX_SCOPE_CACHE: usize = 65_536;

pub struct Scope {
    pids: Vec<u32>,
    comms: Vec<String>,
    proc_root: PathBuf,
    cache: HashMap<u32, bool>,
}

impl Scope {
    pub fn new(pids: Vec<u32>, comms: Vec<String>, proc_root: &Path) -> Scope {
        Scope {
            pids,
            comms,
            proc_root: proc_root.to_path_buf(),
            cache: HashMap::new(),
        }
    }

    pub fn is_everything(&self) -> bool {
        self.pids.is_empty() && self.comms.is_empty()
    }

    /// Only `--pid`s, no `--comm`: the set of processes is fixed (their
    /// children are not in it), so each can be probed on its own.
    pub fn is_pids_only(&self) -> bool {
        !self.pids.is_empty() && self.comms.is_empty()
    }

    /// Is this process in scope?  A process matches when its tgid is one of
    /// `pids` or its (main thread's) comm is one of `comms`; with neither set,
    /// every process is.
    pub fn includes(&mut self, tgid: u32) -> bool {
        if self.is_everything() || self.pids.contains(&tgid) {
            return true;
        }
        if self.comms.is_empty() {
            return false;
        }
        if let Some(&d) = self.cache.get(&tgid) {
            return d;
        }
        // A process that is already gone cannot be checked: left out, and
        // not remembered (its events may still say who it was).
        let Some(comm) = super::procfs::read_comm(&self.proc_root, tgid) else {
            return false;
        };
        let decision = self.comms.contains(&comm);
        self.remember(tgid, decision);
        decision
    }

    /// Is the process that made an event in scope?  As [`Scope::includes`],
    /// and when the process is already gone, by the `comm` the kernel put
    /// in the event (the calling thread's, NUL-padded).  A short-lived
    /// client (a curl of 50 ms) has often exited by the time its events are
    /// read: judged by /proc alone it was out of every `--comm` scope.
    pub fn includes_event(&mut self, tgid: u32, event_comm: &[u8]) -> bool {
        if self.is_everything() || self.pids.contains(&tgid) {
            return true;
        }
        if self.comms.is_empty() {
            return false;
        }
        if let Some(&d) = self.cache.get(&tgid) {
            return d;
        }
        let decision = match super::procfs::read_comm(&self.proc_root, tgid) {
            Some(comm) => self.comms.contains(&comm),
            None => {
                let n = event_comm
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(event_comm.len());
                self.comms.iter().any(|c| c.as_bytes() == &event_comm[..n])
            }
        };
        self.remember(tgid, decision);
        decision
    }

    /// `tgid` just exec'd a new program (its comm changed with it): the
    /// decision is made again, now, while the process surely exists, so
    /// that its events are judged right even if it is gone when they are read.
    pub fn decide_at_exec(&mut self, tgid: u32) -> bool {
        self.cache.remove(&tgid);
        self.includes(tgid)
    }

    fn remember(&mut self, tgid: u32, decision: bool) {
        if self.cache.len() >= MAX_SCOPE_CACHE {
            self.cache.clear();
        }
        self.cache.insert(tgid, decision);
    }

    /// New `--pid`/`--comm` lists (SIGHUP): every cached decision is dropped,
    /// so events and the next rescan follow the new scope.
    pub fn set(&mut self, pids: Vec<u32>, comms: Vec<String>) {
        self.pids = pids;
        self.comms = comms;
        self.cache.clear();
    }

    /// Forget a process (it exited; its tgid may be reused).
    pub fn forget(&mut self, tgid: u32) {
        self.cache.remove(&tgid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_rules() {
        let proc_root = Path::new("/proc");
        let me = std::process::id();
        let mut all = Scope::new(vec![], vec![], proc_root);
        assert!(all.includes(me) && all.includes(1));

        let mut by_pid = Scope::new(vec![42], vec![], proc_root);
        assert!(by_pid.includes(42));
        assert!(!by_pid.includes(me));

        let my_comm = super::super::procfs::read_comm(proc_root, me).unwrap();
        let mut by_comm = Scope::new(vec![], vec![my_comm], proc_root);
        assert!(by_comm.includes(me));
        assert!(!by_comm.includes(u32::MAX)); // no such process
        by_comm.forget(me);
        assert!(by_comm.includes(me));

        let mut other = Scope::new(vec![], vec!["no-such-comm".into()], proc_root);
        assert!(!other.includes(me));
        // A reload widens or narrows the scope at once, cache included.
        other.set(vec![me], vec![]);
        assert!(other.includes(me));
        other.set(vec![], vec![]);
        assert!(other.is_everything() && other.includes(me));
        other.set(vec![1], vec![]);
        assert!(!other.includes(me));
    }

    /// A short-lived client is often gone when its events are read: it is
    /// judged by the comm its events carry (before: out of scope, and that
    /// decision kept).
    #[test]
    fn a_process_gone_before_its_events_are_read_is_judged_by_their_comm() {
        let proc_root = Path::new("/proc");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        let mut s = Scope::new(vec![], vec!["curl".into()], proc_root);
        assert!(!s.includes(gone), "nothing to judge it by");
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        assert!(s.includes_event(gone, &comm));
        assert!(s.includes(gone), "remembered until it is forgotten");
        s.forget(gone);
        let mut other = [0u8; 16];
        other[..4].copy_from_slice(b"wget");
        assert!(!s.includes_event(gone, &other));
        // A live process is judged by its main thread's comm, not the event's.
        let me = std::process::id();
        assert!(!s.includes_event(me, &comm));
        // An exec decides again (the comm changes with the program).
        let my_comm = super::super::procfs::read_comm(proc_root, me).unwrap();
        s.set(vec![], vec![my_comm]);
        s.cache.insert(me, false);
        assert!(s.decide_at_exec(me));
    }
}
