//! `LiveHub`: what the pipeline hands the live API — a bounded ring of recent
//! findings, a broadcast of findings and stats for streaming subscribers, the
//! latest stats snapshot and the readiness flag.
//!
//! Publishing never blocks and never waits for a subscriber: the ring drops its
//! oldest finding when full, and a slow stream subscriber lags (it is caught up
//! from the ring where possible; what fell out of the ring is counted in
//! `sensor_findings_dropped_total`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus::IntCounter;
use tokio::sync::broadcast;

use crate::finding::Finding;
use crate::outputs::live::{FindingsPage, StatsSnapshot, StreamItem};
use crate::outputs::metrics::Metrics;

/// Findings kept for `GET /api/v1/findings` when the config does not say.
pub const DEFAULT_FINDINGS_RING: usize = 1024;
/// Upper bound of the ring size a config may ask for (memory guard: a finding
/// is well under 2 KiB, so this is at most tens of MiB).
pub const MAX_FINDINGS_RING: usize = 65_536;
/// Most findings one `GET /api/v1/findings` page returns; `next` continues.
pub const MAX_FINDINGS_PER_PAGE: usize = 1000;
/// Items buffered per stream subscriber before it lags.
pub const STREAM_CHANNEL_CAPACITY: usize = 1024;

/// The ring and the id counter, under one lock so that ids, ring order and
/// broadcast order always agree.
struct Ring {
    /// Ids are contiguous: the newest is `last_id`, the oldest `last_id - len + 1`.
    items: VecDeque<Arc<Finding>>,
    /// Id of the newest finding published (0: none yet).
    last_id: u64,
}

pub struct LiveHub {
    capacity: usize,
    ring: Mutex<Ring>,
    tx: broadcast::Sender<HubEvent>,
    /// Public plain-`StreamItem` view for in-process consumers.
    items_tx: broadcast::Sender<StreamItem>,
    latest_stats: Mutex<Option<StatsSnapshot>>,
    ready: AtomicBool,
    findings_dropped: IntCounter,
}

/// What the hub broadcasts internally: the finding's id lets a lagging
/// subscriber know exactly which findings it missed.
#[derive(Clone, Debug)]
pub(crate) enum HubEvent {
    Finding(u64, Arc<Finding>),
    Stats(Arc<StatsSnapshot>),
}

/// A stream subscription positioned at a known finding id: every finding with
/// a larger id will arrive on `rx` (unless it lags).
pub(crate) struct Subscription {
    pub rx: broadcast::Receiver<HubEvent>,
    pub last_id: u64,
}

impl Ring {
    /// Findings with ids in `(after, upto]` still kept, oldest first, at most `limit`.
    fn range(&self, after: u64, upto: u64, limit: usize) -> Vec<(u64, Arc<Finding>)> {
        let first = self.last_id + 1 - self.items.len() as u64;
        let start = after.saturating_add(1).max(first);
        let end = upto.min(self.last_id);
        if start > end {
            return Vec::new();
        }
        let skip = (start - first) as usize;
        let take = ((end - start + 1) as usize).min(limit);
        self.items
            .iter()
            .skip(skip)
            .take(take)
            .enumerate()
            .map(|(i, f)| (start + i as u64, f.clone()))
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LiveHub {
    /// A hub whose dropped-findings count is private (tests, replay).
    pub fn new(capacity: usize) -> Arc<Self> {
        let dropped = IntCounter::new(
            "sensor_findings_dropped_total",
            "Findings not delivered to a slow live-API subscriber.",
        )
        .expect("valid metric");
        Self::build(capacity, dropped)
    }

    /// A hub that counts dropped findings in `metrics.findings_dropped`.
    pub fn with_metrics(capacity: usize, metrics: &Metrics) -> Arc<Self> {
        Self::build(capacity, metrics.findings_dropped.clone())
    }

    fn build(capacity: usize, findings_dropped: IntCounter) -> Arc<Self> {
        let capacity = capacity.clamp(1, MAX_FINDINGS_RING);
        let (tx, _) = broadcast::channel(STREAM_CHANNEL_CAPACITY);
        let (items_tx, _) = broadcast::channel(STREAM_CHANNEL_CAPACITY);
        Arc::new(LiveHub {
            capacity,
            ring: Mutex::new(Ring {
                items: VecDeque::with_capacity(capacity.min(4096)),
                last_id: 0,
            }),
            tx,
            items_tx,
            latest_stats: Mutex::new(None),
            ready: AtomicBool::new(false),
            findings_dropped,
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Keeps the finding in the ring (id = previous + 1) and sends it to stream
    /// subscribers.  Never blocks on a subscriber.
    pub fn publish_finding(&self, f: &Finding) {
        let shared = Arc::new(f.clone());
        let mut ring = lock(&self.ring);
        ring.last_id += 1;
        let id = ring.last_id;
        if ring.items.len() == self.capacity {
            ring.items.pop_front();
        }
        ring.items.push_back(shared.clone());
        // Sent under the ring lock so broadcast order equals id order; `send`
        // only fails when nobody listens, which is fine.
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(HubEvent::Finding(id, shared));
        }
        if self.items_tx.receiver_count() > 0 {
            let _ = self.items_tx.send(StreamItem::Finding(Box::new(f.clone())));
        }
    }

    /// Findings with an id greater than `since` (oldest first, at most
    /// `MAX_FINDINGS_PER_PAGE`), and the id to ask from next.  A `since` beyond
    /// the newest id (the sensor restarted and ids began again) is read as 0.
    pub fn findings_since(&self, since: u64) -> FindingsPage {
        // Only Arcs are copied under the lock; the findings are cloned after.
        let (picked, next) = {
            let ring = lock(&self.ring);
            let since = if since > ring.last_id { 0 } else { since };
            let picked = ring.range(since, ring.last_id, MAX_FINDINGS_PER_PAGE);
            let next = picked.last().map_or(since, |(id, _)| *id);
            (picked, next)
        };
        FindingsPage {
            findings: picked.into_iter().map(|(_, f)| (*f).clone()).collect(),
            next,
        }
    }

    /// Id of the newest finding published so far (0: none).
    pub fn last_id(&self) -> u64 {
        lock(&self.ring).last_id
    }

    /// Subscribes to findings and stats as they are published.
    pub fn subscribe(&self) -> broadcast::Receiver<StreamItem> {
        self.items_tx.subscribe()
    }

    /// Subscribes and says which finding id the subscription starts after,
    /// atomically with respect to `publish_finding`.
    pub(crate) fn subscribe_at(&self) -> Subscription {
        let ring = lock(&self.ring);
        Subscription {
            rx: self.tx.subscribe(),
            last_id: ring.last_id,
        }
    }

    /// Findings with ids in `(after, upto]` still in the ring, and how many of
    /// that range fell out of it.  Used to catch up a lagging subscriber.
    pub(crate) fn backfill(&self, after: u64, upto: u64) -> (Vec<(u64, Arc<Finding>)>, u64) {
        let found = lock(&self.ring).range(after, upto, usize::MAX);
        let wanted = upto.saturating_sub(after);
        let missing = wanted.saturating_sub(found.len() as u64);
        (found, missing)
    }

    pub(crate) fn count_dropped(&self, n: u64) {
        if n > 0 {
            self.findings_dropped.inc_by(n);
        }
    }

    /// Findings a slow subscriber did not get (also in the metric when built `with_metrics`).
    pub fn findings_dropped(&self) -> u64 {
        self.findings_dropped.get()
    }

    /// The pipeline calls this once a second: kept as the latest (`GET
    /// /api/v1/stats`) and sent to stream subscribers.
    pub fn publish_stats(&self, s: StatsSnapshot) {
        if self.items_tx.receiver_count() > 0 {
            let _ = self.items_tx.send(StreamItem::Stats(Box::new(s.clone())));
        }
        let shared = Arc::new(s.clone());
        *lock(&self.latest_stats) = Some(s);
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(HubEvent::Stats(shared));
        }
    }

    pub fn latest_stats(&self) -> Option<StatsSnapshot> {
        lock(&self.latest_stats).clone()
    }

    /// Ready once probes are attached and the pipeline runs (`/readyz` is 200 only then).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}
