//! The once-a-second `StatsSnapshot` of the live API, derived from the metrics
//! (one source of truth: what `/metrics` says is what `sensor watch` shows).

use std::time::Instant;

use crate::outputs::live::{AttachedLibrary, BlindProcess, StatsSnapshot};
use crate::outputs::metrics::Metrics;

/// Sum of every series of a metric family (counter or gauge).
pub fn family_sum(metrics: &Metrics, name: &str) -> f64 {
    metrics
        .registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| {
            let counter = f.get_field_type() == prometheus::proto::MetricType::COUNTER;
            f.get_metric().iter().map(move |m| {
                if counter {
                    m.get_counter().value()
                } else {
                    m.get_gauge().value()
                }
            })
        })
        .sum()
}

/// Turns counters into rates between snapshots.
pub struct StatsTracker {
    started: Instant,
    node: String,
    last: Option<(Instant, u64, u64, u64)>,
}

impl StatsTracker {
    pub fn new() -> Self {
        StatsTracker {
            started: Instant::now(),
            node: hostname(),
            last: None,
        }
    }

    pub fn snapshot(
        &mut self,
        metrics: &Metrics,
        attached_libraries: Vec<AttachedLibrary>,
        blind_processes: Vec<BlindProcess>,
    ) -> StatsSnapshot {
        let now = Instant::now();
        let events = family_sum(metrics, "sensor_capture_events_total") as u64;
        let pairs_server = metrics.http_pairs.with_label_values(&["server"]).get();
        let pairs_client = metrics.http_pairs.with_label_values(&["client"]).get();
        let rate = |new: u64, old: u64, dt: f64| {
            if dt > 0.0 {
                new.saturating_sub(old) as f64 / dt
            } else {
                0.0
            }
        };
        let (eps, pss, psc) = match self.last {
            Some((t, e, s, c)) => {
                let dt = now.duration_since(t).as_secs_f64();
                (
                    rate(events, e, dt),
                    rate(pairs_server, s, dt),
                    rate(pairs_client, c, dt),
                )
            }
            None => (0.0, 0.0, 0.0),
        };
        self.last = Some((now, events, pairs_server, pairs_client));
        let attached_processes = attached_libraries.iter().map(|l| l.processes).sum();
        StatsSnapshot {
            version: env!("CARGO_PKG_VERSION").to_string(),
            node: self.node.clone(),
            uptime_s: now.duration_since(self.started).as_secs(),
            attached_libraries,
            attached_processes,
            blind_processes,
            events_total: events,
            events_per_s: eps,
            lost_events: metrics.capture_lost_events.get(),
            truncated_bytes: metrics.capture_truncated_bytes.get(),
            parse_errors: family_sum(metrics, "sensor_http_parse_errors_total") as u64,
            connections_active: metrics.connections_active.get().max(0) as u64,
            pairs_server,
            pairs_client,
            pairs_per_s_server: pss,
            pairs_per_s_client: psc,
            findings_total: family_sum(metrics, "sensor_credential_leaks_total") as u64,
            masked_echoes: family_sum(metrics, "sensor_masked_echoes_total") as u64,
        }
    }
}

impl Default for StatsTracker {
    fn default() -> Self {
        Self::new()
    }
}

/// The node name: $NODE_NAME (set from the DaemonSet's downward API) or the hostname.
pub fn hostname() -> String {
    if let Ok(n) = std::env::var("NODE_NAME") {
        if !n.is_empty() {
            return n;
        }
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reflects_metrics() {
        let m = Metrics::new();
        m.capture_events.with_label_values(&["read"]).inc_by(5);
        m.capture_events.with_label_values(&["write"]).inc_by(7);
        m.http_pairs.with_label_values(&["server"]).inc_by(3);
        m.http_parse_errors.with_label_values(&["not_http"]).inc();
        m.http_parse_errors.with_label_values(&["http2"]).inc();
        m.credential_leaks
            .with_label_values(&["server", "header", "api_key", "body", "full"])
            .inc();
        let mut t = StatsTracker::new();
        let s = t.snapshot(&m, vec![], vec![]);
        assert_eq!(s.events_total, 12);
        assert_eq!(s.pairs_server, 3);
        assert_eq!(s.parse_errors, 2);
        assert_eq!(s.findings_total, 1);
        m.capture_events.with_label_values(&["read"]).inc_by(100);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let s2 = t.snapshot(&m, vec![], vec![]);
        assert!(s2.events_per_s > 0.0);
    }
}
