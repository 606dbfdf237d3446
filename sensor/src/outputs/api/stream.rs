//! `GET /api/v1/stream`: newline-delimited JSON `StreamItem`s, one chunk per
//! line so each reaches the client as soon as it is published.
//!
//! A subscriber that falls behind the broadcast channel is re-positioned at
//! the head and caught up from the findings ring; only findings that already
//! fell out of the ring are lost, and those are counted.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::{broadcast, watch};

use super::hub::{HubEvent, LiveHub, Subscription};
use crate::finding::Finding;
use crate::outputs::live::{StatsSnapshot, StreamItem};

/// Concurrent `/api/v1/stream` clients; more get 503 (each costs a channel slot
/// and a task, and `sensor watch` needs one).
pub const MAX_STREAM_SUBSCRIBERS: usize = 64;

/// Holds one of the `MAX_STREAM_SUBSCRIBERS` slots until dropped.
pub(crate) struct SubscriberSlot(Arc<AtomicUsize>);

impl SubscriberSlot {
    pub(crate) fn acquire(count: &Arc<AtomicUsize>) -> Option<SubscriberSlot> {
        count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_STREAM_SUBSCRIBERS).then_some(n + 1)
            })
            .ok()
            .map(|_| SubscriberSlot(count.clone()))
    }
}

impl Drop for SubscriberSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct State {
    hub: Arc<LiveHub>,
    sub: Subscription,
    pending: VecDeque<Bytes>,
    stop: watch::Receiver<bool>,
    _slot: SubscriberSlot,
}

pub(crate) fn line(item: &StreamItem) -> Bytes {
    // Serializing these plain data types cannot fail; an empty line is harmless if it ever did.
    let mut v = serde_json::to_vec(item).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn finding_line(f: &Finding) -> Bytes {
    line(&StreamItem::Finding(Box::new(f.clone())))
}

fn stats_line(s: &StatsSnapshot) -> Bytes {
    line(&StreamItem::Stats(Box::new(s.clone())))
}

/// The body stream of one subscriber: the latest stats first (so a viewer has
/// something to show at once), then — with `since` — the ring's findings newer
/// than that id (a reconnecting viewer misses nothing still in the ring), then
/// findings and stats as published, until the server shuts down or the
/// client goes away.
pub(crate) fn subscriber_stream(
    hub: Arc<LiveHub>,
    since: Option<u64>,
    stop: watch::Receiver<bool>,
    slot: SubscriberSlot,
) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
    let sub = hub.subscribe_at();
    let mut pending = VecDeque::new();
    if let Some(s) = hub.latest_stats() {
        pending.push_back(stats_line(&s));
    }
    if let Some(since) = since {
        // An id beyond the newest is from before a restart: start over.
        let since = if since > sub.last_id { 0 } else { since };
        let (found, _) = hub.backfill(since, sub.last_id);
        pending.extend(found.iter().map(|(_, f)| finding_line(f)));
    }
    let state = State {
        hub,
        sub,
        pending,
        stop,
        _slot: slot,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(b) = st.pending.pop_front() {
                return Some((Ok(b), st));
            }
            if *st.stop.borrow() {
                return None;
            }
            let ev = tokio::select! {
                _ = st.stop.changed() => return None,
                ev = st.sub.rx.recv() => ev,
            };
            match ev {
                Ok(HubEvent::Finding(id, f)) => {
                    // Already sent from the ring after a lag.
                    if id <= st.sub.last_id {
                        continue;
                    }
                    st.sub.last_id = id;
                    return Some((Ok(finding_line(&f)), st));
                }
                Ok(HubEvent::Stats(s)) => return Some((Ok(stats_line(&s)), st)),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let after = st.sub.last_id;
                    let fresh = st.hub.subscribe_at();
                    let (found, missing) = st.hub.backfill(after, fresh.last_id);
                    st.hub.count_dropped(missing);
                    if missing > 0 {
                        tracing::warn!(
                            missing,
                            "live API stream subscriber too slow: findings skipped (still in the findings file)"
                        );
                    }
                    for (_, f) in &found {
                        st.pending.push_back(finding_line(f));
                    }
                    st.sub = fresh;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}
