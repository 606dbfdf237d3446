//! Real HTTP over loopback against the live API and the metrics server.
//! Ports: 21000-21099 (this helper's range), one per test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::finding::*;
use crate::http::types::{ConnInfo, ProcessInfo, Role};
use crate::outputs::live::{FindingsPage, StatsSnapshot, StreamItem};
use crate::outputs::metrics::Metrics;
use crate::outputs::metrics_server::MetricsServer;

pub(crate) fn sample_finding(n: u64) -> Finding {
    Finding {
        schema: FINDING_SCHEMA.to_string(),
        ts: "2026-11-22T21:00:00.123456Z".to_string(),
        kind: "credential_leak".to_string(),
        severity: Severity::High,
        exposure: Exposure::Full,
        credential: CredentialRef {
            source: CredentialSource::Header,
            name: "x-api-key".to_string(),
            kind: CredentialType::ApiKey,
            fingerprint: format!("{n:016x}"),
            length: 40,
        },
        sink: Sink {
            location: SinkLocation::Body,
            name: None,
            encoding: Encoding::JsonEscaped,
            content_encoding: ContentEncoding::Identity,
            offset: 12,
        },
        request: RequestSummary {
            method: "GET".into(),
            path: format!("/v1/items/{n}"),
            host: Some("api.example".into()),
        },
        response: ResponseSummary {
            status: 400,
            content_type: Some("application/json".into()),
        },
        role: Role::Server,
        process: ProcessInfo {
            pid: 4242,
            comm: "uvicorn".into(),
            ..Default::default()
        },
        connection: ConnInfo {
            id: format!("4242:7:{n}").into(),
            peer: None,
        },
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).expect("json body")
    }
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

fn request_bytes(path: &str, token: Option<&str>, close: bool) -> Vec<u8> {
    let mut r = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n");
    if let Some(t) = token {
        r.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if close {
        r.push_str("Connection: close\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

fn split_head(buf: &[u8]) -> Option<(String, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some((String::from_utf8_lossy(&buf[..end]).into_owned(), end + 4))
}

fn status_of(head: &str) -> u16 {
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Decodes a complete chunked body.
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let nl = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap().trim(), 16).unwrap();
        b = &b[nl + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// A blocking HTTP/1.1 GET with `Connection: close` (run off the runtime's threads).
fn get_blocking(a: SocketAddr, path: &str, token: Option<&str>) -> Reply {
    let mut s = TcpStream::connect(a).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&request_bytes(path, token, true)).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read reply");
    let (head, at) = split_head(&buf).expect("reply head");
    let raw = &buf[at..];
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(raw)
    } else {
        raw.to_vec()
    };
    Reply {
        status: status_of(&head),
        head,
        body,
    }
}

async fn get(a: SocketAddr, path: &str, token: Option<&str>) -> Reply {
    let path = path.to_string();
    let token = token.map(str::to_string);
    tokio::task::spawn_blocking(move || get_blocking(a, &path, token.as_deref()))
        .await
        .unwrap()
}

/// An open `/api/v1/stream` connection read line by line.
struct StreamClient {
    s: TcpStream,
    raw: Vec<u8>,
    lines: std::collections::VecDeque<String>,
}

impl StreamClient {
    fn open(a: SocketAddr, token: Option<&str>) -> (u16, Option<StreamClient>) {
        Self::open_path(a, "/api/v1/stream", token)
    }

    fn open_path(a: SocketAddr, path: &str, token: Option<&str>) -> (u16, Option<StreamClient>) {
        let mut s = TcpStream::connect(a).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&request_bytes(path, token, false)).unwrap();
        let mut buf = Vec::new();
        let mut tmp = [0u8; 4096];
        let (head, at) = loop {
            if let Some(h) = split_head(&buf) {
                break h;
            }
            let n = s.read(&mut tmp).expect("read head");
            assert!(n > 0, "closed before the head");
            buf.extend_from_slice(&tmp[..n]);
        };
        let status = status_of(&head);
        if status != 200 {
            return (status, None);
        }
        assert!(head.to_ascii_lowercase().contains("application/x-ndjson"));
        let c = StreamClient {
            s,
            raw: buf[at..].to_vec(),
            lines: Default::default(),
        };
        (status, Some(c))
    }

    /// Moves complete chunks from `raw` into lines.  Returns false at the last chunk.
    fn parse(&mut self) -> bool {
        loop {
            let Some(nl) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return true;
            };
            let size_str = std::str::from_utf8(&self.raw[..nl])
                .unwrap()
                .trim()
                .to_string();
            let size = usize::from_str_radix(&size_str, 16).expect("chunk size");
            if size == 0 {
                return false;
            }
            if self.raw.len() < nl + 2 + size + 2 {
                return true;
            }
            let data = self.raw[nl + 2..nl + 2 + size].to_vec();
            self.raw.drain(..nl + 2 + size + 2);
            for l in String::from_utf8(data).unwrap().split_inclusive('\n') {
                assert!(l.ends_with('\n'), "a chunk holds whole lines");
                self.lines.push_back(l.trim_end().to_string());
            }
        }
    }

    /// Next line, or None at the end of the stream / timeout.
    fn next_line(&mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut tmp = [0u8; 65536];
        loop {
            let more = self.parse();
            if let Some(l) = self.lines.pop_front() {
                return Some(l);
            }
            if !more {
                return None;
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.s
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.s.read(&mut tmp) {
                Ok(0) => return None,
                Ok(n) => self.raw.extend_from_slice(&tmp[..n]),
                Err(_) => return None,
            }
        }
    }
}

struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ApiError>>,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("server stops within 5 s after shutdown")
            .unwrap()
            .unwrap();
    }
}

async fn start_api(port: u16, token: Option<&str>, hub: Arc<LiveHub>) -> Running {
    let cfg = ApiConfig {
        addr: addr(port),
        token: token.map(str::to_string),
    };
    let server = ApiServer::bind(cfg, hub).await.expect("bind");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let a = server.local_addr();
    let task = tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    Running {
        addr: a,
        stop: Some(tx),
        task,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_route_pages_from_since() {
    let hub = LiveHub::new(100);
    let srv = start_api(21000, None, hub.clone()).await;
    let empty: FindingsPage = get(srv.addr, "/api/v1/findings", None).await.json();
    assert_eq!((empty.findings.len(), empty.next), (0, 0));
    for n in 1..=3 {
        hub.publish_finding(&sample_finding(n));
    }
    let r = get(srv.addr, "/api/v1/findings?since=0", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    let p: FindingsPage = r.json();
    assert_eq!(
        p.findings,
        vec![sample_finding(1), sample_finding(2), sample_finding(3)]
    );
    assert_eq!(p.next, 3);
    let p: FindingsPage = get(srv.addr, "/api/v1/findings?since=2", None).await.json();
    assert_eq!((p.findings, p.next), (vec![sample_finding(3)], 3));
    let p: FindingsPage = get(srv.addr, "/api/v1/findings?since=3", None).await.json();
    assert_eq!((p.findings.len(), p.next), (0, 3));
    // A `since` from before a restart (beyond the newest id) starts over.
    let p: FindingsPage = get(srv.addr, "/api/v1/findings?since=999", None)
        .await
        .json();
    assert_eq!((p.findings.len(), p.next), (3, 3));
    assert_eq!(
        get(srv.addr, "/api/v1/findings?since=abc", None)
            .await
            .status,
        400
    );
    assert_eq!(get(srv.addr, "/api/v1/nope", None).await.status, 404);
    srv.stop().await;
}

#[test]
fn ring_keeps_only_the_newest_capacity_findings() {
    let hub = LiveHub::new(5);
    for n in 1..=12 {
        hub.publish_finding(&sample_finding(n));
    }
    let p = hub.findings_since(0);
    assert_eq!(p.findings, (8..=12).map(sample_finding).collect::<Vec<_>>());
    assert_eq!(p.next, 12);
    assert_eq!(hub.findings_since(10).findings.len(), 2);
    // Clamped to the bounds.
    assert_eq!(LiveHub::new(0).capacity(), 1);
    assert_eq!(LiveHub::new(usize::MAX).capacity(), MAX_FINDINGS_RING);
}

#[test]
fn pages_are_capped_and_next_continues() {
    let hub = LiveHub::new(MAX_FINDINGS_PER_PAGE + 500);
    for n in 1..=(MAX_FINDINGS_PER_PAGE as u64 + 500) {
        hub.publish_finding(&sample_finding(n));
    }
    let p1 = hub.findings_since(0);
    assert_eq!(p1.findings.len(), MAX_FINDINGS_PER_PAGE);
    assert_eq!(p1.next, MAX_FINDINGS_PER_PAGE as u64);
    let p2 = hub.findings_since(p1.next);
    assert_eq!(p2.findings.len(), 500);
    assert_eq!(
        p2.findings[0],
        sample_finding(MAX_FINDINGS_PER_PAGE as u64 + 1)
    );
    assert_eq!(p2.next, MAX_FINDINGS_PER_PAGE as u64 + 500);
}

fn sample_stats() -> StatsSnapshot {
    StatsSnapshot {
        version: "0.1.0".into(),
        node: "node-a".into(),
        uptime_s: 7,
        events_total: 99,
        findings_total: 3,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_health_and_readiness() {
    let hub = LiveHub::new(10);
    let srv = start_api(21001, None, hub.clone()).await;
    assert_eq!(get(srv.addr, "/api/v1/stats", None).await.status, 503);
    hub.publish_stats(sample_stats());
    let r = get(srv.addr, "/api/v1/stats", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json::<StatsSnapshot>(), sample_stats());
    assert_eq!(get(srv.addr, "/healthz", None).await.status, 200);
    assert_eq!(get(srv.addr, "/readyz", None).await.status, 503);
    hub.set_ready(true);
    assert_eq!(get(srv.addr, "/readyz", None).await.status, 200);
    hub.set_ready(false);
    assert_eq!(get(srv.addr, "/readyz", None).await.status, 503);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_required_on_every_api_route() {
    const TOKEN: &str = "tok-0123456789abcdef";
    let hub = LiveHub::new(10);
    hub.publish_stats(sample_stats());
    let srv = start_api(21002, Some(TOKEN), hub.clone()).await;
    for path in [
        "/api/v1/findings?since=0",
        "/api/v1/stats",
        "/api/v1/stream",
    ] {
        for bad in [
            None,
            Some("wrong"),
            Some("tok-0123456789abcde"),
            Some("tok-0123456789abcdef0"),
        ] {
            let r = if path.ends_with("stream") {
                let a = srv.addr;
                let bad_owned = bad.map(str::to_string);
                let (status, _) = tokio::task::spawn_blocking(move || {
                    StreamClient::open(a, bad_owned.as_deref())
                })
                .await
                .unwrap();
                assert_eq!(status, 401, "{path} with {bad:?}");
                continue;
            } else {
                get(srv.addr, path, bad).await
            };
            assert_eq!(r.status, 401, "{path} with {bad:?}");
            assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
            let body = String::from_utf8_lossy(&r.body).into_owned();
            assert!(!body.contains(TOKEN), "the token never appears in answers");
        }
        if path.ends_with("stream") {
            let a = srv.addr;
            let (status, c) =
                tokio::task::spawn_blocking(move || StreamClient::open(a, Some(TOKEN)))
                    .await
                    .unwrap();
            assert_eq!(status, 200);
            drop(c);
        } else {
            assert_eq!(get(srv.addr, path, Some(TOKEN)).await.status, 200, "{path}");
        }
    }
    // Probes need no token.
    assert_eq!(get(srv.addr, "/healthz", None).await.status, 200);
    assert_eq!(get(srv.addr, "/readyz", None).await.status, 503);
    srv.stop().await;
}

#[tokio::test]
async fn no_auth_when_no_token_on_loopback() {
    let hub = LiveHub::new(10);
    let srv = start_api(21003, None, hub).await;
    let r = get(srv.addr, "/api/v1/findings", Some("anything")).await;
    assert_eq!(r.status, 200);
    srv.stop().await;
}

#[tokio::test]
async fn non_loopback_address_refuses_to_start_without_a_token() {
    let hub = LiveHub::new(10);
    for ip in ["0.0.0.0", "::", "10.1.2.3"] {
        let cfg = ApiConfig {
            addr: SocketAddr::new(ip.parse().unwrap(), 21004),
            token: None,
        };
        let err = ApiServer::bind(cfg, hub.clone())
            .await
            .err()
            .expect("refused");
        let msg = err.to_string();
        assert!(matches!(err, ApiError::TokenRequired { .. }));
        assert!(
            msg.contains("--api-token-file") && !msg.contains('\n'),
            "{msg}"
        );
    }
    let cfg = ApiConfig {
        addr: addr(21004),
        token: Some("  \n".into()),
    };
    assert!(matches!(
        ApiServer::bind(cfg, hub.clone()).await,
        Err(ApiError::EmptyToken)
    ));
    // Debug output never shows the token.
    let cfg = ApiConfig {
        addr: addr(21004),
        token: Some("hunter2-secret".into()),
    };
    assert!(!format!("{cfg:?}").contains("hunter2"));
}

#[tokio::test]
async fn port_in_use_is_one_actionable_line() {
    let _taken = std::net::TcpListener::bind(addr(21005)).unwrap();
    let hub = LiveHub::new(10);
    let cfg = ApiConfig {
        addr: addr(21005),
        token: None,
    };
    let err = serve_api(cfg, hub.clone(), async {}).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot listen on 127.0.0.1:21005 for the live API: address in use (choose another with --api-addr)"
    );
    let err =
        crate::outputs::metrics_server::serve_metrics(addr(21005), Metrics::new(), hub, async {})
            .await
            .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot listen on 127.0.0.1:21005 for metrics: address in use (choose another with --metrics-addr)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_delivers_a_published_finding_within_100ms() {
    let hub = LiveHub::new(10);
    hub.publish_stats(sample_stats());
    let srv = start_api(21006, None, hub.clone()).await;
    let a = srv.addr;
    let hub2 = hub.clone();
    let latencies = tokio::task::spawn_blocking(move || {
        let (status, c) = StreamClient::open(a, None);
        assert_eq!(status, 200);
        let mut c = c.unwrap();
        // The latest stats come first.
        let first: StreamItem =
            serde_json::from_str(&c.next_line(Duration::from_secs(2)).unwrap()).unwrap();
        assert_eq!(first, StreamItem::Stats(Box::new(sample_stats())));
        let mut lat = Vec::new();
        for n in 1..=20 {
            let t = Instant::now();
            hub2.publish_finding(&sample_finding(n));
            let l = c.next_line(Duration::from_secs(2)).expect("a line");
            lat.push(t.elapsed());
            let item: StreamItem = serde_json::from_str(&l).unwrap();
            assert_eq!(item, StreamItem::Finding(Box::new(sample_finding(n))));
            assert!(l.starts_with(r#"{"type":"finding","#), "{l}");
        }
        hub2.publish_stats(sample_stats());
        let l = c.next_line(Duration::from_secs(2)).expect("stats line");
        assert!(l.starts_with(r#"{"type":"stats","#), "{l}");
        lat
    })
    .await
    .unwrap();
    let worst = latencies.iter().max().unwrap();
    eprintln!("stream latency worst of 20: {worst:?}");
    assert!(
        *worst < Duration::from_millis(100),
        "worst latency {worst:?}"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams() {
    let hub = LiveHub::new(10);
    let srv = start_api(21007, None, hub.clone()).await;
    let a = srv.addr;
    let reader = tokio::task::spawn_blocking(move || {
        let (_, c) = StreamClient::open(a, None);
        let mut c = c.unwrap();
        let t = Instant::now();
        assert!(
            c.next_line(Duration::from_secs(10)).is_none(),
            "the stream ends"
        );
        t.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    srv.stop().await;
    let waited = reader.await.unwrap();
    assert!(waited < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_subscribers_are_bounded() {
    let hub = LiveHub::new(10);
    let srv = start_api(21008, None, hub.clone()).await;
    let a = srv.addr;
    let statuses = tokio::task::spawn_blocking(move || {
        let mut open = Vec::new();
        for _ in 0..MAX_STREAM_SUBSCRIBERS {
            let (s, c) = StreamClient::open(a, None);
            assert_eq!(s, 200);
            open.push(c.unwrap());
        }
        let (over, _) = StreamClient::open(a, None);
        drop(open);
        std::thread::sleep(Duration::from_millis(300));
        let (again, _) = StreamClient::open(a, None);
        (over, again)
    })
    .await
    .unwrap();
    assert_eq!(statuses, (503, 200));
    srv.stop().await;
}

/// A subscriber that stops reading lags behind the broadcast channel: it is
/// caught up from the ring; findings already out of the ring are counted.
#[tokio::test]
async fn lagging_subscriber_is_caught_up_from_the_ring_and_losses_counted() {
    use futures_util::StreamExt;
    let metrics = Metrics::new();
    let ring = 2000;
    let hub = LiveHub::with_metrics(ring, &metrics);
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let slot = stream::SubscriberSlot::acquire(&count).unwrap();
    let s = stream::subscriber_stream(hub.clone(), None, stop, slot);
    futures_util::pin_mut!(s);
    let total = 3 * ring as u64; // far beyond the channel's capacity
    for n in 1..=total {
        hub.publish_finding(&sample_finding(n));
    }
    let mut got = Vec::new();
    while let Ok(Some(Ok(b))) = tokio::time::timeout(Duration::from_millis(200), s.next()).await {
        let item: StreamItem = serde_json::from_slice(&b).unwrap();
        let StreamItem::Finding(f) = item else {
            panic!("only findings")
        };
        got.push(
            f.connection
                .id
                .rsplit(':')
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap(),
        );
    }
    let expected: Vec<u64> = (total - ring as u64 + 1..=total).collect();
    assert_eq!(
        got, expected,
        "exactly the ring's findings, in order, no duplicates"
    );
    assert_eq!(hub.findings_dropped(), total - ring as u64);
    assert_eq!(metrics.findings_dropped.get(), total - ring as u64);
    // After catching up it follows live publishing again.
    hub.publish_finding(&sample_finding(total + 1));
    let b = s.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&b).contains(&format!("4242:7:{}", total + 1)));
}

/// The same over HTTP: a client that does not read while many findings are
/// published gets, in order and without duplicates, what was not dropped, and
/// received + dropped adds up.  The publisher never blocks meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_http_subscriber_never_blocks_the_publisher() {
    let metrics = Metrics::new();
    let hub = LiveHub::with_metrics(1000, &metrics);
    let srv = start_api(21009, None, hub.clone()).await;
    let a = srv.addr;
    let (status, c) = tokio::task::spawn_blocking(move || StreamClient::open(a, None))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let mut c = c.unwrap();
    let total: u64 = 30_000;
    let t = Instant::now();
    for n in 1..=total {
        hub.publish_finding(&sample_finding(n));
    }
    let publish_time = t.elapsed();
    let got = tokio::task::spawn_blocking(move || {
        let mut got = Vec::new();
        while let Some(l) = c.next_line(Duration::from_millis(500)) {
            let item: StreamItem = serde_json::from_str(&l).unwrap();
            if let StreamItem::Finding(f) = item {
                got.push(
                    f.connection
                        .id
                        .rsplit(':')
                        .next()
                        .unwrap()
                        .parse::<u64>()
                        .unwrap(),
                );
            }
        }
        got
    })
    .await
    .unwrap();
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicates"
    );
    assert!(metrics.findings_dropped.get() > 0, "the subscriber did lag");
    assert_eq!(*got.last().unwrap(), total, "the newest arrives");
    assert_eq!(got.len() as u64 + metrics.findings_dropped.get(), total);
    eprintln!(
        "published {total} in {publish_time:?}; slow subscriber got {}, dropped {}",
        got.len(),
        metrics.findings_dropped.get()
    );
    assert!(publish_time < Duration::from_secs(10));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_server_serves_metrics_and_probes() {
    let metrics = Metrics::new();
    let hub = LiveHub::new(10);
    let server = MetricsServer::bind(addr(21010), metrics.clone(), hub.clone())
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    metrics.capture_lost_events.inc_by(3);
    let r = get(addr(21010), "/metrics", None).await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(r.body).unwrap();
    for needle in [
        "sensor_build_info{version=\"",
        "sensor_capture_lost_events_total 3",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(text.contains(needle), "{needle} missing from /metrics");
    }
    // Registering twice is harmless.
    metrics.register_process_collector();
    assert_eq!(get(addr(21010), "/healthz", None).await.status, 200);
    assert_eq!(get(addr(21010), "/readyz", None).await.status, 503);
    hub.set_ready(true);
    assert_eq!(get(addr(21010), "/readyz", None).await.status, 200);
    assert_eq!(get(addr(21010), "/api/v1/findings", None).await.status, 404);
    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_since_replays_the_ring_then_follows() {
    let hub = LiveHub::new(3);
    for n in 1..=5 {
        hub.publish_finding(&sample_finding(n));
    }
    let srv = start_api(21011, None, hub.clone()).await;
    let a = srv.addr;
    let hub2 = hub.clone();
    let ids = tokio::task::spawn_blocking(move || {
        let ids_of = |c: &mut StreamClient, n: usize| -> Vec<String> {
            (0..n)
                .map(|_| {
                    let l = c.next_line(Duration::from_secs(2)).expect("a line");
                    match serde_json::from_str::<StreamItem>(&l).unwrap() {
                        StreamItem::Finding(f) => f.connection.id.to_string(),
                        StreamItem::Stats(_) => panic!("no stats published"),
                    }
                })
                .collect()
        };
        // since=3: ids 4 and 5 from the ring, then live ones.
        let (_, c) = StreamClient::open_path(a, "/api/v1/stream?since=3", None);
        let mut c = c.unwrap();
        let mut got = ids_of(&mut c, 2);
        hub2.publish_finding(&sample_finding(6));
        got.extend(ids_of(&mut c, 1));
        // since=0 while the ring holds only 3..5: what is still there.
        let (_, c0) = StreamClient::open_path(a, "/api/v1/stream?since=0", None);
        let mut c0 = c0.unwrap();
        got.extend(ids_of(&mut c0, 3));
        // Without since: only live findings.
        let (_, c1) = StreamClient::open(a, None);
        let mut c1 = c1.unwrap();
        assert!(c1.next_line(Duration::from_millis(200)).is_none());
        got
    })
    .await
    .unwrap();
    assert_eq!(
        ids,
        ["4242:7:4", "4242:7:5", "4242:7:6", "4242:7:4", "4242:7:5", "4242:7:6"]
    );
    srv.stop().await;
}

/// `findings_since` and `backfill` agree with a naive model for every small
/// ring size, fill level and cursor (edges: empty, full, wrapped, beyond).
#[test]
fn ring_ranges_match_a_naive_model() {
    for cap in 1..6usize {
        for total in 0..12u64 {
            let hub = LiveHub::new(cap);
            for n in 1..=total {
                hub.publish_finding(&sample_finding(n));
            }
            let kept: Vec<u64> = (1..=total)
                .skip((total as usize).saturating_sub(cap))
                .collect();
            for since in 0..14u64 {
                let eff = if since > total { 0 } else { since };
                let want: Vec<u64> = kept.iter().copied().filter(|&i| i > eff).collect();
                let p = hub.findings_since(since);
                let got: Vec<u64> = p
                    .findings
                    .iter()
                    .map(|f| u64::from_str_radix(&f.credential.fingerprint, 16).unwrap())
                    .collect();
                assert_eq!(got, want, "cap {cap} total {total} since {since}");
                assert_eq!(p.next, want.last().copied().unwrap_or(eff));
                for upto in since..14u64 {
                    let (found, missing) = hub.backfill(since, upto);
                    let want: Vec<u64> = kept
                        .iter()
                        .copied()
                        .filter(|&i| i > since && i <= upto)
                        .collect();
                    assert_eq!(found.iter().map(|(i, _)| *i).collect::<Vec<_>>(), want);
                    for (i, f) in &found {
                        assert_eq!(**f, sample_finding(*i));
                    }
                    assert_eq!(missing, (upto - since) - want.len() as u64);
                }
            }
        }
    }
}
