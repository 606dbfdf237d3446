//! The metrics server (`--metrics-addr`): Prometheus `/metrics` (the sensor's
//! metrics plus the process's CPU, memory and file descriptors), `/healthz`
//! and `/readyz` for the kubelet.  Serves no findings, so it needs no token.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::outputs::api::{health_router, listen, ApiError, LiveHub};
use crate::outputs::metrics::Metrics;

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Metrics {
    /// Adds `process_cpu_seconds_total`, `process_resident_memory_bytes`,
    /// `process_open_fds` & co. to the registry.  Idempotent.
    pub fn register_process_collector(&self) {
        let pc = prometheus::process_collector::ProcessCollector::for_self();
        match self.registry.register(Box::new(pc)) {
            Ok(()) | Err(prometheus::Error::AlreadyReg) => {}
            Err(e) => tracing::warn!("process metrics unavailable: {e}"),
        }
    }
}

/// The metrics server bound to its address, not yet serving.
pub struct MetricsServer {
    listening: listen::Listening,
    router: Router,
}

impl MetricsServer {
    pub async fn bind(
        addr: SocketAddr,
        metrics: Metrics,
        hub: Arc<LiveHub>,
    ) -> Result<MetricsServer, ApiError> {
        let listening = listen::bind(addr, "metrics", "--metrics-addr").await?;
        metrics.register_process_collector();
        let router = Router::new()
            .route(
                "/metrics",
                get(move || {
                    let m = metrics.clone();
                    async move { render(&m) }
                }),
            )
            .merge(health_router(hub))
            .fallback(|| async { (StatusCode::NOT_FOUND, "see /metrics\n") });
        Ok(MetricsServer { listening, router })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listening.addr
    }

    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ApiError> {
        listen::serve(self.listening, self.router, shutdown, "metrics").await
    }
}

/// Binds and serves `/metrics`, `/healthz`, `/readyz` until `shutdown` completes.
pub async fn serve_metrics(
    addr: SocketAddr,
    metrics: Metrics,
    hub: Arc<LiveHub>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    MetricsServer::bind(addr, metrics, hub)
        .await?
        .serve(shutdown)
        .await
}

fn render(m: &Metrics) -> Response {
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], m.render()).into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::finding::*;
    use crate::http::types::Role;

    const ROLES: [Role; 2] = [Role::Server, Role::Client];
    const SOURCES: [CredentialSource; 6] = [
        CredentialSource::Authorization,
        CredentialSource::Header,
        CredentialSource::Query,
        CredentialSource::Cookie,
        CredentialSource::Form,
        CredentialSource::Json,
    ];
    const TYPES: [CredentialType; 10] = [
        CredentialType::ApiKey,
        CredentialType::BearerToken,
        CredentialType::Jwt,
        CredentialType::BasicCredentials,
        CredentialType::Password,
        CredentialType::SessionCookie,
        CredentialType::ClientSecret,
        CredentialType::RefreshToken,
        CredentialType::AccessToken,
        CredentialType::Secret,
    ];
    const SINKS: [SinkLocation; 2] = [SinkLocation::Body, SinkLocation::Header];
    const EXPOSURES: [Exposure; 2] = [Exposure::Full, Exposure::Partial];

    /// Time series of the sensor's own metrics in a text exposition.
    fn sensor_series(text: &str) -> BTreeSet<String> {
        text.lines()
            .filter(|l| l.starts_with("sensor_"))
            .map(|l| l.rsplit_once(' ').map(|(k, _)| k).unwrap_or(l).to_string())
            .collect()
    }

    /// What the pipeline does per finding / pair / event: labels only from the
    /// enums' `as_str`, never from the finding's free-form fields.
    fn record(m: &Metrics, i: usize) {
        let role = ROLES[i % 2];
        m.credential_leaks
            .with_label_values(&[
                role.as_str(),
                SOURCES[i % 6].as_str(),
                TYPES[(i / 7) % 10].as_str(),
                SINKS[(i / 3) % 2].as_str(),
                EXPOSURES[(i / 11) % 2].as_str(),
            ])
            .inc();
        m.masked_echoes
            .with_label_values(&[role.as_str(), SINKS[i % 2].as_str()])
            .inc();
        m.http_pairs.with_label_values(&[role.as_str()]).inc();
        m.capture_events
            .with_label_values(&[["read", "write", "close"][i % 3]])
            .inc();
    }

    #[test]
    fn series_stay_bounded_and_carry_no_request_data() {
        let m = Metrics::new();
        m.register_process_collector();
        let mut secrets = Vec::new();
        let mut after_half = 0;
        for i in 0..10_000usize {
            // The per-item data a naive implementation might put in labels.
            let path = format!("/v1/tenants/{i}/items");
            let key = format!("sk_live_{:032x}", i * 7919);
            let fingerprint = format!("{:016x}", i * 104_729);
            let pid = 100_000 + i;
            record(&m, i);
            if i % 997 == 0 {
                secrets.push((path, key, fingerprint, pid));
            }
            if i == 4_999 {
                after_half = sensor_series(&m.render()).len();
            }
        }
        let text = m.render();
        let series = sensor_series(&text);
        let leaks = series
            .iter()
            .filter(|s| s.starts_with("sensor_credential_leaks_total{"))
            .count();
        let max_leak_series =
            ROLES.len() * SOURCES.len() * TYPES.len() * SINKS.len() * EXPOSURES.len();
        assert!(leaks <= max_leak_series, "{leaks} leak series");
        assert!(
            series.len() <= max_leak_series + 64,
            "{} sensor series",
            series.len()
        );
        assert_eq!(
            series.len(),
            after_half,
            "no new series from the second 5,000 items"
        );
        for (path, key, fingerprint, pid) in &secrets {
            assert!(!text.contains(path.as_str()));
            assert!(!text.contains(key.as_str()));
            assert!(!text.contains(fingerprint.as_str()));
            assert!(!text.contains(&format!("\"{pid}\"")));
        }
        // Every label value is one of the small fixed sets.
        let allowed: BTreeSet<&str> = ROLES
            .iter()
            .map(|r| r.as_str())
            .chain(SOURCES.iter().map(|s| s.as_str()))
            .chain(TYPES.iter().map(|t| t.as_str()))
            .chain(SINKS.iter().map(|s| s.as_str()))
            .chain(EXPOSURES.iter().map(|e| e.as_str()))
            .chain(["read", "write", "close", env!("CARGO_PKG_VERSION")])
            .chain(["findings", "pairs", "record"])
            .collect();
        for s in &series {
            if let Some(labels) = s.split_once('{').map(|(_, l)| l.trim_end_matches('}')) {
                for kv in labels.split(',') {
                    let v = kv.split_once('=').unwrap().1.trim_matches('"');
                    assert!(allowed.contains(v), "label value {v:?} in {s}");
                }
            }
        }
        eprintln!(
            "{} sensor series after 10,000 items ({leaks} leak series)",
            series.len()
        );
    }
}
