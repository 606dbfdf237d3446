//! Reading the ring buffer: `AsyncFd` for wake-ups plus a short timer (the kernel
//! side submits without wake-ups until the buffer passes a threshold), batching
//! raw events into [`CaptureMsg::Events`].
//!
//! The queue to the pipeline is bounded in bytes as well as in batches: at
//! most [`MAX_QUEUED_BYTES`] of events are in flight (queued or being
//! handled), in batches of at most [`MAX_BATCH_BYTES`].  When the pipeline
//! falls behind, the reader waits up to [`SEND_TIMEOUT`] and then drops the
//! batch: counted, and announced on each connection's next event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use bytes::Bytes;
use sensor_common::{
    EventHeader, EVENT_HEADER_LEN, FLAG_LOST_BEFORE, KIND_CLOSE, MAX_TRACKED_CONNECTIONS,
};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch, Semaphore};

use super::event::parse_header;
use super::scope::Scope;
use super::{CaptureMsg, EventBatch, CHANNEL_CAPACITY};
use crate::http::SLICE_MIN;
use crate::outputs::metrics::Metrics;

/// Userspace poll period: bounds the latency of events submitted without wake-up.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// Events per `CaptureMsg::Events` at most.
pub const MAX_BATCH_EVENTS: usize = 1024;
/// Bytes per `CaptureMsg::Events` at most (a batch closes once it reaches this,
/// so it can pass it by one event).
pub const MAX_BATCH_BYTES: usize = 128 * 1024;
/// Bytes of events in flight from the reader to the pipeline at most: queued
/// in the channel or being handled (a batch gives its share back when dropped).
pub const MAX_QUEUED_BYTES: usize = 32 * 1024 * 1024;
/// How long a full queue (in batches or in bytes) may hold up the reader
/// before a batch is dropped.
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

    /// No hole is waiting to be announced.
    fn is_empty(&self) -> bool {
        self.by_conn.is_empty()
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

/// The queue's byte budget: a batch takes its bytes' worth before it is sent.
#[derive(Clone)]
pub(crate) struct QueueBudget(Arc<Semaphore>);

impl QueueBudget {
    pub(crate) fn new(max_bytes: usize) -> Self {
        QueueBudget(Arc::new(Semaphore::new(max_bytes)))
    }

    /// Waits until `deadline` for room for `events`; Err: still no room, the
    /// events are given back (to be dropped).
    pub(crate) async fn reserve(
        &self,
        events: Vec<Bytes>,
        deadline: tokio::time::Instant,
    ) -> Result<EventBatch, Vec<Bytes>> {
        let bytes: usize = events.iter().map(|e| e.len()).sum();
        let Ok(n) = u32::try_from(bytes) else {
            return Err(events);
        };
        match tokio::time::timeout_at(deadline, self.0.clone().acquire_many_owned(n)).await {
            Ok(Ok(share)) => Ok(EventBatch::queued(events, share)),
            _ => Err(events),
        }
    }

    /// Bytes free now.
    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.0.available_permits()
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
        let queue = QueueBudget::new(MAX_QUEUED_BYTES);
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
                let full =
                    batch.len() >= MAX_BATCH_EVENTS || batch_bytes(&batch) >= MAX_BATCH_BYTES;
                let deadline = tokio::time::Instant::now() + SEND_TIMEOUT;
                let dropped = match queue.reserve(batch, deadline).await {
                    Err(batch) => Some(batch),
                    Ok(batch) => {
                        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
                        match tx.send_timeout(CaptureMsg::Events(batch), wait).await {
                            Ok(()) => None,
                            Err(mpsc::error::SendTimeoutError::Timeout(CaptureMsg::Events(
                                batch,
                            ))) => Some(batch.into_events()),
                            Err(_) => return, // receiver gone: the pipeline stopped
                        }
                    }
                };
                if let Some(batch) = dropped {
                    drop_batch(&batch, &metrics, &mut loss, &mut dropped_logged);
                }
                if !full {
                    break;
                }
            }
        }
    }
}

fn batch_bytes(batch: &[Bytes]) -> usize {
    batch.iter().map(|e| e.len()).sum()
}

/// The pipeline did not take `batch` in time: counted as lost, and the hole
/// announced on each connection's next event.
fn drop_batch(batch: &[Bytes], metrics: &Metrics, loss: &mut PendingLoss, logged: &mut bool) {
    let n = batch.len();
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
    for raw in batch {
        loss.note(raw);
    }
    if !*logged {
        tracing::warn!(
            "capture: pipeline too slow (queue to it full: {CHANNEL_CAPACITY} batches or {} MiB), dropped {n} events; counted in sensor_capture_lost_events_total and sensor_capture_bad_events_total{{reason=\"channel_full\"}}, further drops are only counted",
            MAX_QUEUED_BYTES >> 20
        );
        *logged = true;
    }
}

/// Events whose data is shorter than this are copied into one buffer shared
/// by their batch (one allocation per batch, not one per event: malloc and
/// free per event were ~10 % of the live sensor's CPU).  The HTTP stage keeps
/// no slice of a piece shorter than [`SLICE_MIN`] (it copies what it keeps of
/// those), so a shared buffer is never pinned past its batch; longer events
/// get their own allocation, so a body slice pins only its event.
pub const SHARED_EVENT_MAX: usize = SLICE_MIN;

/// Where an event of a batch is: its own allocation, or a range of the batch's
/// shared buffer.
enum Slot {
    Own(Bytes),
    Shared(std::ops::Range<usize>),
}

/// Takes up to [`MAX_BATCH_EVENTS`] events, about [`MAX_BATCH_BYTES`], out of
/// the ring buffer.
fn drain(
    ring: &mut RingBuf<MapData>,
    metrics: &Metrics,
    scope: &Mutex<Scope>,
    seen: &SeenTgids,
    loss: &mut PendingLoss,
) -> Vec<Bytes> {
    let mut slots = Vec::new();
    let mut shared: Vec<u8> = Vec::new();
    let mut bytes = 0;
    // Each event is copied out of the ring exactly once; the pipeline slices
    // it without copying.
    let mut scope = scope.lock().unwrap_or_else(|e| e.into_inner());
    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    let mut last_tgid = None;
    while slots.len() < MAX_BATCH_EVENTS && bytes < MAX_BATCH_BYTES {
        let Some(item) = ring.next() else { break };
        let record: &[u8] = &item;
        let h = match parse_header(record) {
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
        if last_tgid != Some(tgid) {
            // Runs of events from one process are the rule: look it up once.
            if !scope.includes(tgid) {
                continue;
            }
            if seen.len() < MAX_SEEN_TGIDS {
                seen.insert(tgid);
            }
            last_tgid = Some(tgid);
        }
        // The kernel reserves records in size classes: what follows the
        // header's data_len is padding, never copied (a short record is left
        // whole for the parser to reject).
        let raw = &record[..record.len().min(EVENT_HEADER_LEN + h.data_len as usize)];
        // Counted in sensor_capture_events_total by the pipeline, which sees
        // every event that gets this far.
        bytes += raw.len();
        if (h.data_len as usize) < SHARED_EVENT_MAX && loss.is_empty() {
            if shared.is_empty() {
                shared.reserve(MAX_BATCH_BYTES + EVENT_HEADER_LEN + SHARED_EVENT_MAX);
            }
            let at = shared.len();
            shared.extend_from_slice(raw);
            slots.push(Slot::Shared(at..shared.len()));
        } else {
            slots.push(Slot::Own(loss.apply(Bytes::copy_from_slice(raw))));
        }
    }
    if shared.len() * 2 < shared.capacity() {
        // A sparse batch does not hold a whole batch's worth while queued.
        shared.shrink_to_fit();
    }
    let shared = Bytes::from(shared);
    slots
        .into_iter()
        .map(|s| match s {
            Slot::Own(b) => b,
            Slot::Shared(r) => shared.slice(r),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::event::{CaptureEvent, ConnId, Direction};

    #[tokio::test]
    async fn a_batch_holds_its_share_until_its_last_event_is_handled() {
        let q = QueueBudget::new(1000);
        let events = vec![Bytes::from(vec![0u8; 300]), Bytes::from(vec![0u8; 200])];
        let soon = tokio::time::Instant::now() + Duration::from_millis(20);
        let batch = q.reserve(events, soon).await.unwrap();
        let mut seen = Vec::new();
        batch.handle_each(|e| seen.push((e.len(), q.available())));
        assert_eq!(seen, vec![(300, 500), (200, 500)]);
        assert_eq!(q.available(), 1000);
    }

    #[tokio::test]
    async fn the_queue_holds_at_most_its_bytes_until_batches_are_dropped() {
        let q = QueueBudget::new(1000);
        let ev = |n: usize| vec![Bytes::from(vec![0u8; n])];
        let soon = || tokio::time::Instant::now() + Duration::from_millis(20);
        // Exactly the budget fits.
        let a = q.reserve(ev(600), soon()).await.unwrap();
        let b = q.reserve(ev(400), soon()).await.unwrap();
        assert_eq!(
            (a.queued_bytes(), b.queued_bytes(), q.available()),
            (600, 400, 0)
        );
        // One byte more waits, then gives the events back to be dropped.
        let back = q.reserve(ev(1), soon()).await.unwrap_err();
        assert_eq!(back.len(), 1);
        // A handled batch gives its share back; taking the events out too.
        drop(a);
        let c = q.reserve(ev(600), soon()).await.unwrap();
        assert_eq!(c.into_events().len(), 1);
        assert_eq!(q.available(), 600);
        // Room made while waiting is used.
        let q2 = q.clone();
        let waiting = tokio::spawn(async move {
            q2.reserve(
                vec![Bytes::from(vec![0u8; 1000])],
                tokio::time::Instant::now() + Duration::from_secs(5),
            )
            .await
            .map(|b| b.queued_bytes())
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(b);
        assert_eq!(waiting.await.unwrap(), Ok(1000));
        // More than the whole budget never fits.
        let q = QueueBudget::new(10);
        assert!(q.reserve(ev(11), soon()).await.is_err());
    }

    #[test]
    fn dropped_batches_are_counted_and_announced() {
        let metrics = Metrics::new();
        let mut loss = PendingLoss::default();
        let mut logged = false;
        let a = ConnId { tgid: 7, ssl: 0x10 };
        let batch: Vec<Bytes> = (0..3)
            .map(|i| {
                Bytes::from(CaptureEvent::data(a, Direction::Read, i, i as u64, b"12345").encode())
            })
            .collect();
        drop_batch(&batch, &metrics, &mut loss, &mut logged);
        drop_batch(&batch, &metrics, &mut loss, &mut logged);
        assert!(logged);
        assert_eq!(metrics.capture_lost_events.get(), 6);
        assert_eq!(metrics.capture_truncated_bytes.get(), 30);
        let next = loss.apply(Bytes::from(
            CaptureEvent::data(a, Direction::Read, 9, 9, b"ok").encode(),
        ));
        assert_eq!(CaptureEvent::parse(&next).unwrap().lost_before, 30);
    }

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
