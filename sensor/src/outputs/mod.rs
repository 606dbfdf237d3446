//! What leaves the process: findings, pairs (redacted), metrics, the live API.

pub mod api;
pub mod live;
pub mod metrics;
pub mod metrics_server;
