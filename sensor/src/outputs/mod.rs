//! What leaves the process: findings, pairs (redacted), metrics, the live API.

pub mod jsonl;
pub mod live;
pub mod metrics;
