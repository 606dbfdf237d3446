//! What leaves the process: findings, pairs (redacted), metrics, the live API.

pub mod api;
pub mod jsonl;
pub mod live;
pub mod metrics;
pub mod metrics_server;
pub mod pairs;
pub mod stats;

/// RFC 3339 UTC with microseconds, the time format of findings and pairs.
pub fn rfc3339_micros(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
