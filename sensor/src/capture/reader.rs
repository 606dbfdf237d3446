//! Reading the ring buffer: `AsyncFd` for wake-ups plus a short timer (the kernel
//! side submits without wake-ups until the buffer passes a threshold), batching
//! raw events into [`CaptureMsg::Events`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use bytes::Bytes;
use sensor_common::{
    EventHeader, EVENT_HEADER_LEN, FLAG_LOST_BEFORE, KIND_CLOSE, MAX_TRACKED_CONNECTIONS,
};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};

use super::event::parse_header;
use super::scope::Scope;
use super::CaptureMsg;
use crate::outputs::metrics::Metrics;

/// Userspace poll period: bounds the latency of events submitted without wake-up.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// Events per `CaptureMsg::Events` at most.
pub const MAX_BATCH_EVENTS: usize = 1024;
/// How long a full channel may hold up the reader before a batch is dropped.
pub const SEND_TIMEOUT: Duration = Duration::from_millis(200);
/// tgids remembered for exit reporting at most.
pub const MAX_SEEN_TGIDS: usize = 65_536;

/// tgids that produced events since the last rescan (for `ProcessExited`).
pub type SeenTgids = Arc<Mutex<std::collections::HashSet<u32>>>;

/// Bytes dropped in userspace (channel full) per connection, to be flagged on
/// that connection's next event so the pipeline knows about the hole.
#[derive(Default)]
struct PendingLoss {
    by_conn: HashMap<(u32, u64, u8), u32>,
}

impl PendingLoss {
    fn note(&mut self, raw: &[u8]) {
        let Ok(h) = parse_header(raw) else { return };
        let key = ((h.pid_tgid >> 32) as u32, h.ssl, h.direction);
        if h.kind == KIND_CLOSE {
            self.by_conn.retain(|k, _| (k.0, k.1) != (key.0, key.1));
            return;
        }
        if self.by_conn.len() >= MAX_TRACKED_CONNECTIONS as usize
            && !self.by_conn.contains_key(&key)
        {
            return;
        }
        let e = self.by_conn.entry(key).or_insert(0);
        *e = e.saturating_add(h.data_len);
    }

    /// Marks the hole on this event (header patched in place) if there is one.
    fn apply(&mut self, raw: Bytes) -> Bytes {
        if self.by_conn.is_empty() {
            return raw;
        }
        let Ok(mut h) = parse_header(&raw) else {
            return raw;
        };
        let key = ((h.pid_tgid >> 32) as u32, h.ssl, h.direction);
        let Some(lost) = self.by_conn.remove(&key) else {
            return raw;
        };
        h.flags |= FLAG_LOST_BEFORE;
        h.lost_before = h.lost_before.saturating_add(lost);
        let mut v = raw.to_vec();
        // SAFETY: EventHeader is repr(C) plain data; `v` holds at least its size.
        let hb = unsafe {
            core::slice::from_raw_parts(&h as *const EventHeader as *const u8, EVENT_HEADER_LEN)
        };
        v[..EVENT_HEADER_LEN].copy_from_slice(hb);
        Bytes::from(v)
    }
}

pub struct Reader {
    pub ring: RingBuf<MapData>,
    pub tx: mpsc::Sender<CaptureMsg>,
    pub metrics: Metrics,
    pub scope: Arc<Mutex<Scope>>,
    pub seen: SeenTgids,
    pub stop: watch::Receiver<bool>,
}

impl Reader {
    pub async fn run(self) {
        let Reader {
            ring,
            tx,
            metrics,
            scope,
            seen,
            mut stop,
        } = self;
        // SAFETY: the RingBuf owns its map fd, which stays open and unchanged
        // until the RingBuf (moved into the AsyncFd) is dropped.
        let registered =
            unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) };
        let mut fd = match registered {
            Ok(fd) => fd,
            Err(e) => {
                tracing::error!("cannot poll the capture ring buffer: {e}");
                return;
            }
        };
        let mut loss = PendingLoss::default();
        let mut dropped_logged = false;
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                r = fd.readable_mut() => {
                    if let Ok(mut guard) = r { guard.clear_ready(); }
                }
                _ = tick.tick() => {}
            }
            loop {
                let batch = drain(fd.get_mut(), &metrics, &scope, &seen, &mut loss);
                if batch.is_empty() {
                    break;
                }
                let full = batch.len() >= MAX_BATCH_EVENTS;
                let n = batch.len();
                match tx
                    .send_timeout(CaptureMsg::Events(batch), SEND_TIMEOUT)
                    .await
                {
                    Ok(()) => {}
                    Err(mpsc::error::SendTimeoutError::Timeout(CaptureMsg::Events(batch))) => {
                        let bytes: u64 = batch
                            .iter()
                            .map(|e| e.len().saturating_sub(EVENT_HEADER_LEN) as u64)
                            .sum();
                        metrics.capture_lost_events.inc_by(n as u64);
                        metrics.capture_truncated_bytes.inc_by(bytes);
                        metrics
                            .capture_bad_events
                            .with_label_values(&["channel_full"])
                            .inc_by(n as u64);
                        for raw in &batch {
                            loss.note(raw);
                        }
                        if !dropped_logged {
                            tracing::warn!("capture: pipeline too slow, dropped {n} events (counted in sensor_capture_lost_events_total and sensor_capture_bad_events_total{{reason=\"channel_full\"}}); further drops are only counted");
                            dropped_logged = true;
                        }
                    }
                    Err(_) => return, // receiver gone: the pipeline stopped
                }
                if !full {
                    break;
                }
            }
        }
    }
}

/// Takes up to [`MAX_BATCH_EVENTS`] events out of the ring buffer.
fn drain(
    ring: &mut RingBuf<MapData>,
    metrics: &Metrics,
    scope: &Mutex<Scope>,
    seen: &SeenTgids,
    loss: &mut PendingLoss,
) -> Vec<Bytes> {
    let mut batch = Vec::new();
    // Each event is copied out of the ring exactly once, into its own
    // allocation of its own size: the pipeline slices it without copying, and
    // a body chunk it keeps pins only that event, never a shared arena.
    let mut scope = scope.lock().unwrap_or_else(|e| e.into_inner());
    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    while batch.len() < MAX_BATCH_EVENTS {
        let Some(item) = ring.next() else { break };
        let raw: &[u8] = &item;
        let h = match parse_header(raw) {
            Ok(h) => h,
            Err(e) => {
                metrics
                    .capture_bad_events
                    .with_label_values(&[e.reason()])
                    .inc();
                continue;
            }
        };
        let tgid = (h.pid_tgid >> 32) as u32;
        if !scope.includes(tgid) {
            continue;
        }
        if seen.len() < MAX_SEEN_TGIDS {
            seen.insert(tgid);
        }
        // Counted in sensor_capture_events_total by the pipeline, which sees
        // every event that gets this far.
        batch.push(loss.apply(Bytes::copy_from_slice(raw)));
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::event::{CaptureEvent, ConnId, Direction};

    #[test]
    fn userspace_drop_is_flagged_on_next_event_of_that_connection_and_direction() {
        let a = ConnId { tgid: 7, ssl: 0x10 };
        let b = ConnId { tgid: 7, ssl: 0x20 };
        let mut loss = PendingLoss::default();
        loss.note(&CaptureEvent::data(a, Direction::Read, 1, 1, b"12345").encode());
        loss.note(&CaptureEvent::data(a, Direction::Read, 2, 2, b"678").encode());
        // Other connection: untouched.
        let other = Bytes::from(CaptureEvent::data(b, Direction::Read, 1, 3, b"x").encode());
        assert_eq!(loss.apply(other.clone()), other);
        // The other direction of the same connection: its stream is intact.
        let write = Bytes::from(CaptureEvent::data(a, Direction::Write, 3, 4, b"ok").encode());
        assert_eq!(loss.apply(write.clone()), write);
        let next = loss.apply(Bytes::from(
            CaptureEvent::data(a, Direction::Read, 4, 5, b"ok").encode(),
        ));
        let ev = CaptureEvent::parse(&next).unwrap();
        assert!(ev.gap_before);
        assert_eq!(ev.lost_before, 8);
        // Only once.
        let again = loss.apply(Bytes::from(
            CaptureEvent::data(a, Direction::Read, 5, 6, b"ok").encode(),
        ));
        assert!(!CaptureEvent::parse(&again).unwrap().gap_before);
        // Garbage passes through untouched and does not panic.
        loss.note(b"short");
        assert_eq!(
            loss.apply(Bytes::from_static(b"short")),
            Bytes::from_static(b"short")
        );
    }
}
