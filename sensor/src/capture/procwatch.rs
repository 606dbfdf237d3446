//! Process exec/exit notifications from the kernel (`PROC_EVENTS`, raw
//! tracepoints `sched_process_exec` / `sched_process_exit`).
//!
//! An exec makes us look at that one process' libraries shortly afterwards (the
//! dynamic loader maps them after the exec), so a new library is probed within
//! ~50-70 ms (the poll period plus the first check delay) instead of at the
//! next rescan.  A leader's exit is reported as
//! `ProcessExited` after a short delay, so that data events the process produced
//! before exiting (in the other ring buffer) reach the pipeline first.  Lossy by
//! design: the periodic rescan catches anything missed here.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use sensor_common::{ProcEvent, PROC_EXEC, PROC_EXIT};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{lock, State};

/// When to look at an exec'd process' mappings (early, and again once a lazily
/// loaded libssl — e.g. Python's `import ssl` — is likely there).
pub const EXEC_CHECK_DELAYS: [Duration; 2] =
    [Duration::from_millis(50), Duration::from_millis(500)];
/// Delay before reporting an exit (the data reader polls every 5 ms).
pub const EXIT_REPORT_DELAY: Duration = Duration::from_millis(100);
/// Pending checks at most; beyond, notifications are dropped (rescan covers them).
pub const MAX_PENDING: usize = 4096;
/// How often the notifications are read: the kernel side submits them
/// without waking us (a wake-up cost every exec and exit ~14 us) until a
/// quarter of the ring is full.
pub const PROC_POLL: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    CheckExec(u32),
    ReportExit(u32),
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
            let actions: &[(Duration, Action)] = match ev.kind {
                PROC_EXEC => &[
                    (EXEC_CHECK_DELAYS[0], Action::CheckExec(ev.tgid)),
                    (EXEC_CHECK_DELAYS[1], Action::CheckExec(ev.tgid)),
                ],
                PROC_EXIT => &[(EXIT_REPORT_DELAY, Action::ReportExit(ev.tgid))],
                _ => &[],
            };
            for &(delay, action) in actions {
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
        if due.is_empty() {
            continue;
        }
        let state = state.clone();
        let tx = tx.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let mut s = lock(&state);
            for a in due {
                match a {
                    Action::CheckExec(pid) => s.check_pid(pid),
                    Action::ReportExit(pid) => s.process_exited(pid, &tx),
                }
            }
        })
        .await;
    }
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
}
