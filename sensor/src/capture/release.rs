//! Releasing the probes of a library no process maps any more.
//!
//! A library attached for a process that is gone (a container's own libssl,
//! the node program of a job that ended, a copy in a wheel) kept its
//! uprobes forever: kernel memory for each, and at shutdown a detach each
//! (~0.6 s a library).  After every scan, an attached library that no
//! process in scope maps and that is not one of the host's shared libssl
//! files (attached before anyone maps them, and kept: short-lived clients
//! depend on it) is noted unused; one unused for [`RELEASE_AFTER`] (every
//! scan in between agreeing) is detached (`State::detach_library`, in the
//! background).
//!
//! Why a grace period, not at the last exit: the same file is often mapped
//! again by the next process (a cron job, a pod restarted, a worker
//! respawned), and attaching anew costs ~ms and, for a short-lived process,
//! its first calls.  A process that maps a released file later is attached
//! by its exec looks (or the next scan) like any file not seen before; one
//! that maps it while its detach is still under way is attached by the first
//! scan after the detach ends (`Detacher::is_detaching`; scans are every
//! second).  The race left: a process exec'd after the scan read /proc and
//! before the release may have its calls missed until then — once per
//! release, at most once per RELEASE_AFTER and file.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long an attached library stays attached with no process mapping it.
pub const RELEASE_AFTER: Duration = Duration::from_secs(60);

/// Libraries seen unused by the scans, since when.
#[derive(Debug, Default)]
pub struct Unused {
    since: HashMap<(u64, u64), Instant>,
}

impl Unused {
    /// After a scan: `attached` lists each attached library's key and
    /// whether it is in use (mapped by a process in scope, or a host
    /// library); returns the keys to release now.
    pub fn after_scan(
        &mut self,
        attached: impl IntoIterator<Item = ((u64, u64), bool)>,
        now: Instant,
    ) -> Vec<(u64, u64)> {
        let mut keep = HashMap::new();
        let mut release = Vec::new();
        for (key, in_use) in attached {
            if in_use {
                continue;
            }
            let since = self.since.get(&key).copied().unwrap_or(now);
            if now.duration_since(since) >= RELEASE_AFTER {
                release.push(key);
            } else {
                keep.insert(key, since);
            }
        }
        // Keys in use again, or no longer attached, are forgotten.
        self.since = keep;
        release
    }

    /// Libraries waiting out their grace period.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.since.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_only_after_a_grace_period_unused_throughout() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let (a, b, host) = ((1, 10), (1, 11), (1, 12));
        let mut u = Unused::default();
        // a and b lose their last process; the host library is kept in use.
        assert!(u
            .after_scan([(a, false), (b, false), (host, true)], t0)
            .is_empty());
        assert_eq!(u.waiting(), 2);
        // b is mapped again half-way (a process started later): its clock stops.
        assert!(u
            .after_scan([(a, false), (b, true), (host, true)], t0 + s(30))
            .is_empty());
        assert_eq!(
            u.after_scan([(a, false), (b, false), (host, true)], t0 + RELEASE_AFTER),
            [a]
        );
        // b's grace starts over from when it was last seen unused.
        assert!(u
            .after_scan([(b, false), (host, true)], t0 + RELEASE_AFTER + s(30))
            .is_empty());
        assert_eq!(
            u.after_scan([(b, false), (host, true)], t0 + s(30) + 2 * RELEASE_AFTER),
            [b]
        );
        // Nothing is remembered for libraries no longer attached.
        assert!(u.after_scan([(host, true)], t0 + s(1000)).is_empty());
        assert_eq!(u.waiting(), 0);
    }
}
