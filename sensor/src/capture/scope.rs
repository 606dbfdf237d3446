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
        // A process that is already gone cannot be checked: leave it out.
        let decision = super::procfs::read_comm(&self.proc_root, tgid)
            .is_some_and(|c| self.comms.contains(&c));
        if self.cache.len() >= MAX_SCOPE_CACHE {
            self.cache.clear();
        }
        self.cache.insert(tgid, decision);
        decision
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
}
