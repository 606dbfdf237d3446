//! Process exec/exit notifications from the kernel (`PROC_EVENTS`, raw
//! tracepoints `sched_process_exec` / `sched_process_exit`).
//!
//! An exec makes us decide at once whether the process is in the `--comm`
//! scope (its comm is the new program's from the exec on; a short-lived
//! client may be gone by the time its events are read), and look at its
//! libraries: at once (the dynamic loader maps a curl's libssl ~2 ms after
//! the exec, and the whole curl may last 15 ms: a library of its own is
//! attached only if it is looked at that early), at 50 ms and 500 ms, and,
//! while it has mapped no TLS file the probes take, at 10, 25, 100, 150, 200,
//! 300 and 400 ms too (a library loaded later, as Python's `import ssl`, is
//! attached at most ~100 ms after it is mapped in those first 500 ms; later,
//! at the periodic rescan).  Each look also judges whether the process is blind
//! (`crate::blind::judge_new_process`), so that a short-lived one is counted
//! in `sensor_blind_processes_seen_total`.  Notifications are read every
//! PROC_POLL, so each look is up to that much later.  A leader's exit is
//! reported as `ProcessExited` after a short delay, so that data events the
//! process produced before exiting (in the other ring buffer) reach the
//! pipeline first.  Lossy by design: the periodic rescan catches anything
//! missed here.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use sensor_common::{ProcEvent, PROC_EXEC, PROC_EXIT};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{lock, State};

/// When to look at an exec'd process' mappings, after the exec is read
/// (at most PROC_POLL after it): at once, when a dynamically linked program
/// has most often mapped its libraries (the scope is decided then too), and
/// again once a lazily loaded libssl — e.g. Python's `import ssl` — is
/// likely there.
pub const EXEC_CHECK_DELAYS: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_millis(50),
    Duration::from_millis(500),
];
/// Looks in between, only at a process that has mapped no TLS file the
/// probes take and was not found blind yet: a library mapped just after the
/// first look is attached within a few ms (10, 25 ms: a short-lived
/// process's own libssl), a lazily loaded one within ~100 ms instead of at
/// 500 ms.
pub const EXEC_FOLLOW_UP_DELAYS: [Duration; 7] = [
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(100),
    Duration::from_millis(150),
    Duration::from_millis(200),
    Duration::from_millis(300),
    Duration::from_millis(400),
];
/// Follow-up looks run per second at most: in an exec storm (1,000
/// processes/s) the work stays bounded, and beyond this only the two looks
/// of EXEC_CHECK_DELAYS are made.  Measured (blind::tests, cost_of_one_look):
/// a look at a live Python that imported ssl and holds a socket costs ~2 ms
/// (~1 ms the capture's maps read, ~1 ms the blind judgment), at a process
/// already gone ~8 µs; so at most ~0.1 s of one thread a second here (the
/// maps read), and as much for the judgments below: a sensor on every node
/// must not spend a core on a build host's exec storm.
pub const MAX_FOLLOW_UPS_PER_SEC: u32 = 100;
/// Blind judgments of new processes per second at most (same cost bound);
/// beyond, a short-lived blind process may go uncounted (the periodic scan
/// still lists the ones that live 30 s).
pub const MAX_BLIND_JUDGMENTS_PER_SEC: u32 = 100;
/// Follow-ups are queued only while the queue is below this, so they never
/// crowd out the EXEC_CHECK_DELAYS looks and exit reports.
pub const MAX_PENDING_WITH_FOLLOW_UPS: usize = MAX_PENDING / 2;
/// Delay before reporting an exit (the data reader polls every 5 ms).
pub const EXIT_REPORT_DELAY: Duration = Duration::from_millis(100);
/// Pending checks at most; beyond, notifications are dropped (rescan covers them).
pub const MAX_PENDING: usize = 4096;
/// How often the notifications are read: the kernel side submits them
/// without waking us (a wake-up cost every exec and exit ~14 us) until a
/// quarter of the ring is full.  5 ms, as the data reader's poll: an exec
/// read 20 ms late was read after a whole curl (~15 ms here) was over, so a
/// libssl of its own was never attached; a poll of an empty ring is a few µs.
pub const PROC_POLL: Duration = Duration::from_millis(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// The first look, as the exec is read: the scope is decided afresh.
    Exec(u32),
    CheckExec(u32),
    /// A look made only while the process is not settled (see EXEC_FOLLOW_UP_DELAYS).
    FollowUp(u32),
    ReportExit(u32),
}

/// The looks an exec asks for, as (delay, action), given how many are queued.
fn exec_actions(tgid: u32, pending: usize) -> Vec<(Duration, Action)> {
    let mut out: Vec<(Duration, Action)> = EXEC_CHECK_DELAYS
        .iter()
        .map(|&d| {
            let a = if d.is_zero() {
                Action::Exec(tgid)
            } else {
                Action::CheckExec(tgid)
            };
            (d, a)
        })
        .collect();
    if pending < MAX_PENDING_WITH_FOLLOW_UPS {
        out.extend(
            EXEC_FOLLOW_UP_DELAYS
                .iter()
                .map(|&d| (d, Action::FollowUp(tgid))),
        );
    }
    out
}

/// At most `limit` of something per second.
struct RateBudget {
    limit: u32,
    second_start: Instant,
    used: u32,
}

impl RateBudget {
    fn new(limit: u32, now: Instant) -> RateBudget {
        RateBudget {
            limit,
            second_start: now,
            used: 0,
        }
    }

    /// Takes one from the budget, if any is left this second.
    fn take(&mut self, now: Instant) -> bool {
        if now.duration_since(self.second_start) >= Duration::from_secs(1) {
            self.second_start = now;
            self.used = 0;
        }
        if self.used >= self.limit {
            return false;
        }
        self.used += 1;
        true
    }
}

/// Processes needing no more follow-ups: they mapped a TLS file the probes
/// take, or were found blind.  Forgotten at exit; cleared when full (the
/// cost: a few extra looks).
struct Settled(HashSet<u32>);

impl Settled {
    fn insert(&mut self, pid: u32) {
        if self.0.len() >= MAX_PENDING {
            self.0.clear();
        }
        self.0.insert(pid);
    }
}

/// Parses one raw notification.
fn parse(raw: &[u8]) -> Option<ProcEvent> {
    if raw.len() < core::mem::size_of::<ProcEvent>() {
        return None;
    }
    // SAFETY: ProcEvent is repr(C) plain data (two u32), valid for any bits.
    Some(unsafe { core::ptr::read_unaligned(raw.as_ptr() as *const ProcEvent) })
}

pub async fn run(
    ring: RingBuf<MapData>,
    state: Arc<Mutex<State>>,
    tx: mpsc::Sender<u32>,
    mut stop: watch::Receiver<bool>,
) {
    // SAFETY: the RingBuf owns its map fd, open and unchanged until it is dropped.
    let mut fd =
        match unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) } {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!("process notifications unavailable ({e}); relying on rescans");
                return;
            }
        };
    let me = std::process::id();
    let mut pending: VecDeque<(Instant, Action)> = VecDeque::new();
    let mut dropped = 0u64;
    let mut settled = Settled(HashSet::new());
    let mut follow_ups = RateBudget::new(MAX_FOLLOW_UPS_PER_SEC, Instant::now());
    let mut judgments = RateBudget::new(MAX_BLIND_JUDGMENTS_PER_SEC, Instant::now());
    loop {
        let poll = Instant::now() + PROC_POLL;
        let next_due = pending
            .iter()
            .map(|(t, _)| *t)
            .min()
            .map_or(poll, |t| t.min(poll));
        tokio::select! {
            _ = stop.changed() => return,
            r = fd.readable_mut() => {
                if let Ok(mut g) = r { g.clear_ready(); }
            }
            _ = tokio::time::sleep_until(next_due) => {}
        }
        let ring = fd.get_mut();
        let now = Instant::now();
        while let Some(item) = ring.next() {
            let Some(ev) = parse(&item) else { continue };
            if ev.tgid == me || ev.tgid == 0 {
                continue;
            }
            let actions = match ev.kind {
                PROC_EXEC => exec_actions(ev.tgid, pending.len()),
                PROC_EXIT => {
                    settled.0.remove(&ev.tgid);
                    vec![(EXIT_REPORT_DELAY, Action::ReportExit(ev.tgid))]
                }
                _ => Vec::new(),
            };
            for (delay, action) in actions {
                if pending.len() >= MAX_PENDING {
                    dropped += 1;
                    if dropped == 1 {
                        tracing::debug!(
                            "process notifications backlog full; rescans will catch up"
                        );
                    }
                    continue;
                }
                pending.push_back((now + delay, action));
            }
        }
        let now = Instant::now();
        let due: Vec<Action> = {
            let mut due = Vec::new();
            pending.retain(|&(t, a)| {
                if t <= now {
                    due.push(a);
                    false
                } else {
                    true
                }
            });
            due
        };
        // Follow-ups of settled processes, and beyond the budget, are skipped.
        let due: Vec<Action> = due
            .into_iter()
            .filter(|a| match a {
                Action::FollowUp(pid) => !settled.0.contains(pid) && follow_ups.take(now),
                _ => true,
            })
            .collect();
        let judge: Vec<u32> = due
            .iter()
            .filter_map(|a| match a {
                Action::CheckExec(pid) | Action::FollowUp(pid) => Some(*pid),
                // Too early to judge: it holds no socket yet.
                Action::Exec(_) | Action::ReportExit(_) => None,
            })
            .filter(|_| judgments.take(now))
            .collect();
        if due.is_empty() {
            continue;
        }
        let state = state.clone();
        let tx = tx.clone();
        let newly_settled = tokio::task::spawn_blocking(move || run_due(&state, due, judge, &tx))
            .await
            .unwrap_or_default();
        for pid in newly_settled {
            settled.insert(pid);
        }
    }
}

/// Runs the due actions and judges `judge` blind or not; returns the
/// processes looked at that are settled now.
fn run_due(
    state: &Mutex<State>,
    due: Vec<Action>,
    judge: Vec<u32>,
    tx: &mpsc::Sender<u32>,
) -> Vec<u32> {
    let mut settled = Vec::new();
    let (attached, metrics) = {
        let mut s = lock(state);
        for a in due {
            match a {
                Action::Exec(pid) => {
                    s.scope
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .decide_at_exec(pid);
                    s.check_pid(pid);
                    if s.known_pids.contains(&pid) {
                        settled.push(pid);
                    }
                }
                Action::CheckExec(pid) | Action::FollowUp(pid) => {
                    s.check_pid(pid);
                    if s.known_pids.contains(&pid) {
                        settled.push(pid);
                    }
                }
                Action::ReportExit(pid) => s.process_exited(pid, tx),
            }
        }
        let attached: HashSet<(u64, u64)> = s.attached.keys().copied().collect();
        (attached, s.metrics.clone())
    };
    // Judged without the capture's lock: reading another process's fds and
    // maps must not hold up attaching.
    for pid in judge {
        if crate::blind::judge_new_process(pid, &attached, &metrics).is_some() {
            settled.push(pid);
        }
    }
    settled
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_notifications() {
        let raw = [7u8, 0, 0, 0, 2, 0, 0, 0];
        assert_eq!(
            parse(&raw),
            Some(ProcEvent {
                tgid: 7,
                kind: PROC_EXIT
            })
        );
        assert_eq!(parse(&raw[..7]), None);
    }

    /// A library loaded lazily (Python's `import ssl`, ~100 ms after exec)
    /// is looked at within 100 ms of being mapped in the first 500 ms; before,
    /// the looks were at 50 and 500 ms only.
    #[test]
    fn exec_looks_are_at_most_100_ms_apart_in_the_first_500_ms() {
        let mut at: Vec<Duration> = exec_actions(7, 0).into_iter().map(|(d, _)| d).collect();
        at.sort();
        assert_eq!(at.first(), Some(&Duration::ZERO));
        assert_eq!(at.last(), Some(&Duration::from_millis(500)));
        for w in at.windows(2) {
            assert!(w[1] - w[0] <= Duration::from_millis(100), "{at:?}");
        }
    }

    #[test]
    fn follow_ups_are_bounded() {
        // A full queue: only the two looks every exec gets.
        let busy = exec_actions(7, MAX_PENDING_WITH_FOLLOW_UPS);
        assert_eq!(busy.len(), EXEC_CHECK_DELAYS.len());
        assert!(busy
            .iter()
            .all(|(_, a)| matches!(*a, Action::Exec(7) | Action::CheckExec(7))));
        // At most MAX_FOLLOW_UPS_PER_SEC a second.
        let t0 = Instant::now();
        let mut b = RateBudget::new(MAX_FOLLOW_UPS_PER_SEC, t0);
        let granted = (0..3 * MAX_FOLLOW_UPS_PER_SEC)
            .filter(|_| b.take(t0 + Duration::from_millis(500)))
            .count();
        assert_eq!(granted, MAX_FOLLOW_UPS_PER_SEC as usize);
        assert!(b.take(t0 + Duration::from_millis(1001)), "a new second");
        let mut s = Settled(HashSet::new());
        for pid in 0..(MAX_PENDING as u32 + 10) {
            s.insert(pid);
        }
        assert!(s.0.len() <= MAX_PENDING);
    }
}
