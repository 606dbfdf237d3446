//! The live API (`--api-addr`): recent findings, a live stream of findings and
//! stats, the latest stats.  `sensor watch` and scripts read it.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /api/v1/findings?since=N` | `FindingsPage` JSON: findings with id > N, and `next` |
//! | `GET /api/v1/stream[?since=N]` | newline-delimited JSON `StreamItem`s: latest stats, the ring's findings with id > N (with `since`), then findings as they come and stats once a second |
//! | `GET /api/v1/stats` | the latest `StatsSnapshot` (503 until the first one) |
//! | `GET /healthz`, `GET /readyz` | liveness; readiness (200 once probes are attached) — no token needed |
//!
//! With a token configured every `/api/` route needs `Authorization: Bearer
//! <token>`.  An address other than loopback refuses to start without one:
//! findings describe where credentials leak, which is itself sensitive.

mod auth;
pub mod hub;
pub(crate) mod listen;
pub mod stream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::watch;

pub use hub::{LiveHub, DEFAULT_FINDINGS_RING, MAX_FINDINGS_PER_PAGE, MAX_FINDINGS_RING};
pub use stream::MAX_STREAM_SUBSCRIBERS;

use auth::TokenCheck;
use listen::Listening;

/// Where the live API listens and the token it requires.
#[derive(Clone)]
pub struct ApiConfig {
    pub addr: SocketAddr,
    /// From `--api-token-file`; required when `addr` is not loopback.
    pub token: Option<String>,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: never printed.
        f.debug_struct("ApiConfig")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "the live API on {addr} would be reachable from other hosts without a token: \
         pass --api-token-file FILE, or bind it to loopback (--api-addr 127.0.0.1:{port})",
        port = addr.port()
    )]
    TokenRequired { addr: SocketAddr },
    #[error("the live API token is empty: put the token in the file given to --api-token-file")]
    EmptyToken,
    #[error("cannot listen on {addr} for {what}: {reason} (choose another with {flag})")]
    Listen {
        addr: SocketAddr,
        what: &'static str,
        flag: &'static str,
        reason: String,
    },
    #[error("{what} server failed: {source}")]
    Serve {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// A live API bound to its address, not yet serving (so `sensor run` can fail
/// on a busy port before attaching any probe).
pub struct ApiServer {
    listening: Listening,
    router: Router,
    stop_tx: watch::Sender<bool>,
}

#[derive(Clone)]
struct AppState {
    hub: Arc<LiveHub>,
    stop: watch::Receiver<bool>,
    subscribers: Arc<AtomicUsize>,
}

impl ApiServer {
    pub async fn bind(cfg: ApiConfig, hub: Arc<LiveHub>) -> Result<ApiServer, ApiError> {
        let token = match cfg.token.as_deref() {
            Some(t) if t.trim().is_empty() => return Err(ApiError::EmptyToken),
            Some(t) => Some(TokenCheck::new(t)),
            None if !cfg.addr.ip().is_loopback() => {
                return Err(ApiError::TokenRequired { addr: cfg.addr })
            }
            None => None,
        };
        let listening = listen::bind(cfg.addr, "the live API", "--api-addr").await?;
        let (stop_tx, stop) = watch::channel(false);
        let state = AppState {
            hub,
            stop,
            subscribers: Arc::new(AtomicUsize::new(0)),
        };
        Ok(ApiServer {
            listening,
            router: api_router(state, token),
            stop_tx,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listening.addr
    }

    /// Serves until `shutdown` completes; open streams end then too.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ApiError> {
        let stop_tx = self.stop_tx;
        let signal = async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        };
        listen::serve(self.listening, self.router, signal, "live API").await
    }
}

/// Binds and serves the live API until `shutdown` completes.
pub async fn serve_api(
    cfg: ApiConfig,
    hub: Arc<LiveHub>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    ApiServer::bind(cfg, hub).await?.serve(shutdown).await
}

fn api_router(state: AppState, token: Option<TokenCheck>) -> Router {
    let mut api = Router::new()
        .route("/api/v1/findings", get(findings))
        .route("/api/v1/stream", get(stream_items))
        .route("/api/v1/stats", get(stats));
    if let Some(check) = token {
        api = api.route_layer(middleware::from_fn_with_state(check, require_token));
    }
    api.merge(health_router(state.hub.clone()))
        .fallback(not_found)
        .with_state(state)
}

/// `/healthz` and `/readyz`, served by the metrics server too.
pub(crate) fn health_router<S: Clone + Send + Sync + 'static>(hub: Arc<LiveHub>) -> Router<S> {
    Router::new().route("/healthz", get(healthz)).route(
        "/readyz",
        get(move || {
            let hub = hub.clone();
            async move { readyz(&hub) }
        }),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

fn readyz(hub: &LiveHub) -> Response {
    if hub.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such route")
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn require_token(State(check): State<TokenCheck>, req: Request, next: Next) -> Response {
    if check.allows(req.headers()) {
        return next.run(req).await;
    }
    let mut resp = error(
        StatusCode::UNAUTHORIZED,
        "missing or wrong token: send Authorization: Bearer <token from --api-token-file>",
    );
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

#[derive(Deserialize)]
struct FindingsQuery {
    #[serde(default)]
    since: u64,
}

async fn findings(State(st): State<AppState>, Query(q): Query<FindingsQuery>) -> Response {
    Json(st.hub.findings_since(q.since)).into_response()
}

async fn stats(State(st): State<AppState>) -> Response {
    match st.hub.latest_stats() {
        Some(s) => Json(s).into_response(),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no stats yet: the pipeline is starting",
        ),
    }
}

#[derive(Deserialize)]
struct StreamQuery {
    since: Option<u64>,
}

async fn stream_items(State(st): State<AppState>, Query(q): Query<StreamQuery>) -> Response {
    let Some(slot) = stream::SubscriberSlot::acquire(&st.subscribers) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many stream subscribers; try again later",
        );
    };
    let body =
        axum::body::Body::from_stream(stream::subscriber_stream(st.hub, q.since, st.stop, slot));
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-store")
        .body(body)
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "stream setup failed"))
}

#[cfg(test)]
mod tests;
