//! Reading the ring buffer in place: `AsyncFd` for wake-ups plus a short
//! timer (the kernel side submits without wake-ups until the buffer passes a
//! threshold), each event handed to the pipeline as a slice of the ring's
//! memory and released once handled.
//!
//! The ring buffer is the only queue between the kernel and the pipeline: no
//! event is copied before the HTTP stage sees it (it copies what it keeps),
//! and the event work runs in one task, so it never takes more than one core
//! from the processes it watches.  When the pipeline falls behind,
//! the ring fills and the kernel drops events: counted, and announced on each
//! connection's next event (`FLAG_LOST_BEFORE`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use sensor_common::EVENT_HEADER_LEN;
use tokio::io::unix::AsyncFd;

use super::event::parse_header;
use super::scope::Scope;
use crate::outputs::metrics::Metrics;

/// Userspace poll period: bounds the latency of events submitted without wake-up.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// Events handled per [`EventSource::drain`] at most: other tasks (signals,
/// the metrics and API servers, timers) run between drains.
pub const MAX_EVENTS_PER_DRAIN: usize = 1024;
/// Bytes of events handled per [`EventSource::drain`] at most (a drain stops
/// once it reaches this, so it can pass it by one event).
pub const MAX_BYTES_PER_DRAIN: usize = 1024 * 1024;
/// Bytes of the next record fetched into cache while one is handled: its
/// ring and event headers and the start of its data (an HTTP head).
const PREFETCH_BYTES: usize = 384;

/// Asks the CPU for the record after `record` (its ring header follows
/// `record`'s data, rounded up to 8 bytes) while `record` is handled.  The
/// producer wrote it on another core, and reading it cold was ~17 % of the
/// live sensor's cycles (perf, nginx 1 KiB: the ring header 8 %, the search
/// for the end of the HTTP head 6 %, the event header 3 %); fetched while the
/// record before it is handled, sensor CPU per 1,000 requests went 2.25 →
/// 2.06 ms (6 interleaved rounds, lower in each).  A hint only: an address
/// past what was written, or past the mapping, costs nothing.
#[inline(always)]
fn prefetch_next_record(record: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let next = record
            .as_ptr()
            .wrapping_add(record.len().next_multiple_of(8));
        let mut at = 0;
        while at < PREFETCH_BYTES {
            // SAFETY: prefetch never faults and reads nothing architecturally.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(at) as *const i8) };
            at += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = record;
}

/// tgids remembered for exit reporting at most.
pub const MAX_SEEN_TGIDS: usize = 65_536;

/// tgids that produced events since the last rescan (for `ProcessExited`).
pub type SeenTgids = Arc<Mutex<std::collections::HashSet<u32>>>;

/// The capture ring buffer, read in place.
pub struct EventSource {
    fd: AsyncFd<RingBuf<MapData>>,
    tick: tokio::time::Interval,
    metrics: Metrics,
    scope: Arc<Mutex<Scope>>,
    seen: SeenTgids,
    /// The last drain stopped at its budget: more events are waiting.
    backlog: bool,
    /// This drain's scope decisions, by tgid.
    decided: Vec<(u32, bool)>,
}

/// Processes whose scope decision a drain remembers at most (the events of
/// any more are looked up one by one).
const MAX_DECIDED_PER_DRAIN: usize = 16;

/// Whether `tgid`'s events are in scope (judged by `comm`, the event's,
/// when the process is gone); if so, it is noted as seen (for exit
/// reporting).  The locks are taken here, one lookup at a time, never across
/// the pipeline's work on an event: rescans and exec handling need them.
fn admit(scope: &Mutex<Scope>, seen: &SeenTgids, tgid: u32, comm: &[u8]) -> bool {
    if !scope
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .includes_event(tgid, comm)
    {
        return false;
    }
    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    if seen.len() < MAX_SEEN_TGIDS {
        seen.insert(tgid);
    }
    true
}

impl EventSource {
    pub(crate) fn new(
        ring: RingBuf<MapData>,
        metrics: Metrics,
        scope: Arc<Mutex<Scope>>,
        seen: SeenTgids,
    ) -> std::io::Result<EventSource> {
        // SAFETY: the RingBuf owns its map fd, which stays open and unchanged
        // until the RingBuf (moved into the AsyncFd) is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE)? };
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(EventSource {
            fd,
            tick,
            metrics,
            scope,
            seen,
            backlog: false,
            decided: Vec::with_capacity(MAX_DECIDED_PER_DRAIN),
        })
    }

    /// Waits until events may be waiting: the ring's wake-up or the poll
    /// timer; after a drain that stopped at its budget, only until other
    /// tasks have had their turn.  Cancel-safe.
    pub async fn ready(&mut self) {
        if self.backlog {
            tokio::task::yield_now().await;
            return;
        }
        tokio::select! {
            r = self.fd.readable_mut() => {
                if let Ok(mut guard) = r {
                    guard.clear_ready();
                }
            }
            _ = self.tick.tick() => {}
        }
    }

    /// Hands each waiting event (header + data, padding cut off) of a process
    /// in scope to `handle`, in place in the ring buffer, up to
    /// [`MAX_EVENTS_PER_DRAIN`] and [`MAX_BYTES_PER_DRAIN`]; returns how many
    /// events were taken out of the ring.
    pub fn drain(&mut self, mut handle: impl FnMut(&[u8])) -> usize {
        let mut taken = 0;
        let mut bytes = 0;
        // Decided afresh each drain, so a scope change (SIGHUP) applies from
        // the next one.
        self.decided.clear();
        let ring = self.fd.get_mut();
        self.backlog = false;
        while taken < MAX_EVENTS_PER_DRAIN && bytes < MAX_BYTES_PER_DRAIN {
            // The record stays in the ring until `item` is dropped.
            let Some(item) = ring.next() else {
                return taken;
            };
            taken += 1;
            let record: &[u8] = &item;
            prefetch_next_record(record);
            let h = match parse_header(record) {
                Ok(h) => h,
                Err(e) => {
                    self.metrics
                        .capture_bad_events
                        .with_label_values(&[e.reason()])
                        .inc();
                    continue;
                }
            };
            let tgid = (h.pid_tgid >> 32) as u32;
            // Events of a few processes are the rule: each is looked up once
            // per drain.
            let in_scope = match self.decided.iter().find(|d| d.0 == tgid) {
                Some(&(_, in_scope)) => in_scope,
                None => {
                    let in_scope = admit(&self.scope, &self.seen, tgid, &h.comm);
                    if self.decided.len() < MAX_DECIDED_PER_DRAIN {
                        self.decided.push((tgid, in_scope));
                    }
                    in_scope
                }
            };
            if !in_scope {
                continue;
            }
            // The kernel reserves records in size classes: what follows the
            // header's data_len is padding (a short record is left whole for
            // the parser to reject).
            let raw = &record[..record.len().min(EVENT_HEADER_LEN + h.data_len as usize)];
            // Counted in sensor_capture_events_total by the pipeline, which
            // sees every event that gets this far.
            bytes += raw.len();
            handle(raw);
        }
        self.backlog = true;
        taken
    }
}
