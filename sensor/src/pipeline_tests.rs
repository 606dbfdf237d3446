//! The pipeline fed raw events exactly as the reader or a recording hands them
//! over: counting, loss accounting, bounds, and one leak end to end.

use crate::test_tools::with_logs;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::*;
use crate::leak::config::LeakConfig;
use crate::leak::fingerprint::Fingerprinter;

const SERVER: ConnId = ConnId {
    tgid: 42,
    ssl: 0x1000,
};

struct Harness {
    pipeline: Pipeline,
    metrics: Metrics,
    findings: Arc<Mutex<Vec<Finding>>>,
}

fn harness(cfg: PipelineConfig) -> Harness {
    let metrics = Metrics::new();
    let findings = Arc::new(Mutex::new(Vec::new()));
    let sink = findings.clone();
    let outputs = Outputs {
        on_finding: Some(Box::new(move |f: &Finding| {
            sink.lock().unwrap().push(f.clone())
        })),
        ..Outputs::default()
    };
    let detector = Arc::new(Detector::new(
        LeakConfig::default(),
        Fingerprinter::new([3; 32]),
    ));
    let resolver = Box::new(|pid: u32, comm: &str| ProcessInfo {
        pid,
        comm: comm.to_string(),
        ..ProcessInfo::default()
    });
    Harness {
        pipeline: Pipeline::new(cfg, detector, metrics.clone(), outputs, resolver),
        metrics,
        findings,
    }
}

fn raw(ev: &CaptureEvent) -> Bytes {
    Bytes::from(ev.encode())
}

fn data(conn: ConnId, dir: Direction, seq: u32, bytes: &[u8]) -> Bytes {
    raw(&CaptureEvent::data(
        conn,
        dir,
        seq,
        seq as u64 * 1000,
        bytes,
    ))
}

fn close(conn: ConnId) -> Bytes {
    let mut ev = CaptureEvent::data(conn, Direction::Write, 99, 99_000, b"");
    ev.kind = EventKind::Close;
    raw(&ev)
}

fn events(m: &Metrics, label: &str) -> u64 {
    m.capture_events.with_label_values(&[label]).get()
}

const LEAKY_REQUEST: &[u8] =
    b"GET /v1/items HTTP/1.1\r\nHost: api\r\nX-Api-Key: sk_live_5f2a9c81d7e34b6aa0c3\r\n\r\n";
const LEAKY_RESPONSE: &[u8] = b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{\"error\":\"bad key sk_live_5f2a9c81d7e34b6aa0c3\"}\r\n";

/// A request carrying a key and a response that echoes it, on `SERVER`.
fn leaky_exchange(p: &mut Pipeline) {
    p.handle_raw(data(SERVER, Direction::Read, 1, LEAKY_REQUEST));
    p.handle_raw(data(SERVER, Direction::Write, 2, LEAKY_RESPONSE));
}

#[test]
fn every_event_is_counted_once_by_direction() {
    let mut h = harness(PipelineConfig::default());
    leaky_exchange(&mut h.pipeline);
    h.pipeline.handle_raw(close(SERVER));
    assert_eq!(events(&h.metrics, "read"), 1);
    assert_eq!(events(&h.metrics, "write"), 1);
    assert_eq!(events(&h.metrics, "close"), 1);
}

#[test]
fn a_leak_in_raw_events_becomes_one_finding_without_the_secret() {
    let mut h = harness(PipelineConfig::default());
    leaky_exchange(&mut h.pipeline);
    h.pipeline.finish();
    let findings = h.findings.lock().unwrap();
    assert_eq!(findings.len(), 1, "{findings:?}");
    let json = serde_json::to_string(&findings[0]).unwrap();
    assert!(!json.contains("sk_live_5f2a9c81d7e34b6aa0c3"));
    assert!(!h.metrics.render().contains("sk_live_5f2a9c81d7e34b6aa0c3"));
}

/// The sensor hands events over in place in the ring buffer
/// (`handle_record`), replay and tests as owned buffers (`handle_raw`): the
/// same events give the same findings, pairs and counts either way, padded,
/// malformed and split ones included.
#[test]
fn events_read_in_place_give_what_owned_events_give() {
    let mut padded = data(SERVER, Direction::Read, 3, LEAKY_REQUEST).to_vec();
    padded.extend_from_slice(&[0xAA; 13]); // ring records are padded
    let mut truncated = data(SERVER, Direction::Read, 9, LEAKY_REQUEST).to_vec();
    truncated.truncate(truncated.len() - 10);
    let (head, body) = LEAKY_RESPONSE.split_at(60);
    let stream: Vec<Vec<u8>> = vec![
        data(SERVER, Direction::Read, 1, LEAKY_REQUEST).to_vec(),
        data(SERVER, Direction::Write, 2, LEAKY_RESPONSE).to_vec(),
        padded,
        data(SERVER, Direction::Write, 4, head).to_vec(),
        data(SERVER, Direction::Write, 5, body).to_vec(),
        b"short".to_vec(),
        truncated,
        close(SERVER).to_vec(),
    ];
    let run = |in_place: bool| {
        let mut h = harness(PipelineConfig::default());
        for ev in &stream {
            if in_place {
                h.pipeline.handle_record(ev);
            } else {
                h.pipeline.handle_raw(Bytes::copy_from_slice(ev));
            }
        }
        h.pipeline.finish();
        let findings: Vec<String> = h
            .findings
            .lock()
            .unwrap()
            .iter()
            .map(|f| serde_json::to_string(f).unwrap())
            .collect();
        (findings, h.metrics.render())
    };
    let (owned, owned_metrics) = run(false);
    let (in_place, in_place_metrics) = run(true);
    assert_eq!(owned.len(), 2, "{owned:?}");
    assert_eq!(in_place, owned);
    assert_eq!(in_place_metrics, owned_metrics);
    assert!(!in_place.concat().contains("sk_live_5f2a9c81d7e34b6aa0c3"));
}

#[test]
fn announced_losses_are_counted_only_when_asked() {
    for (count, expected) in [(false, 0), (true, 700)] {
        let mut h = harness(PipelineConfig {
            count_announced_losses: count,
            ..PipelineConfig::default()
        });
        let mut ev = CaptureEvent::data(SERVER, Direction::Read, 1, 1000, LEAKY_REQUEST);
        ev.gap_before = true;
        ev.lost_before = 700;
        h.pipeline.handle_raw(raw(&ev));
        assert_eq!(
            h.metrics.capture_truncated_bytes.get(),
            expected,
            "count_announced_losses: {count}"
        );
    }
}

#[test]
fn malformed_raw_events_are_counted_and_skipped() {
    let mut h = harness(PipelineConfig::default());
    h.pipeline.handle_raw(Bytes::from_static(b"short"));
    let mut bad = data(SERVER, Direction::Read, 1, LEAKY_REQUEST).to_vec();
    bad.truncate(bad.len() - 10); // declares more data than it carries
    h.pipeline.handle_raw(Bytes::from(bad));
    let bad_events = |r: &str| h.metrics.capture_bad_events.with_label_values(&[r]).get();
    assert_eq!(bad_events("short"), 1);
    assert_eq!(bad_events("length_mismatch"), 1);
    assert_eq!(h.pipeline.connections(), 0);
}

#[test]
fn the_connection_table_never_exceeds_its_bound() {
    let mut h = harness(PipelineConfig {
        max_connections: 8,
        ..PipelineConfig::default()
    });
    for i in 0..100u64 {
        let conn = ConnId { tgid: 7, ssl: i };
        h.pipeline
            .handle_raw(data(conn, Direction::Read, 1, b"GET / HTTP/1.1\r\n"));
        assert!(h.pipeline.connections() <= 8);
    }
    let evicted = h
        .metrics
        .connections_evicted
        .with_label_values(&["lru"])
        .get();
    assert_eq!(evicted, 92);
}

#[test]
fn buffered_bytes_stay_under_the_budget() {
    let budget = 64 * 1024;
    let mut h = harness(PipelineConfig {
        max_buffered_bytes: budget,
        ..PipelineConfig::default()
    });
    // Many connections each stuck in the middle of a large response body
    // (to a request with a credential: those bodies are kept).
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n";
    let chunk = vec![b'x'; 16 * 1024];
    for i in 0..40u64 {
        let conn = ConnId { tgid: 9, ssl: i };
        h.pipeline.handle_raw(data(
            conn,
            Direction::Read,
            1,
            b"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer tok_9fK2mQ7xLp4Rz8Wv1Nb6\r\n\r\n",
        ));
        h.pipeline.handle_raw(data(conn, Direction::Write, 2, head));
        h.pipeline
            .handle_raw(data(conn, Direction::Write, 3, &chunk));
        assert!(
            h.pipeline.buffered_bytes() <= budget,
            "{} > {budget}",
            h.pipeline.buffered_bytes()
        );
    }
    let evicted = h
        .metrics
        .connections_evicted
        .with_label_values(&["memory"])
        .get();
    assert!(evicted > 0, "the budget never forced an eviction");
}

/// A response to a request without a credential keeps no body (the leak
/// stage would not look at it): only its length is counted.  One to a request
/// with a credential keeps it, so a leak at its very end is found.
#[test]
fn only_responses_to_requests_with_credentials_keep_their_body() {
    const KEY: &str = "sk_live_5f2a9c81d7e34b6aa0c3";
    let mut h = harness(PipelineConfig::default());
    let filler = vec![b'x'; 100_000];
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
        filler.len() + KEY.len()
    );
    let exchange = |h: &mut Harness, conn: ConnId, request: &[u8]| -> usize {
        h.pipeline
            .handle_raw(data(conn, Direction::Read, 1, request));
        h.pipeline
            .handle_raw(data(conn, Direction::Write, 2, head.as_bytes()));
        h.pipeline
            .handle_raw(data(conn, Direction::Write, 3, &filler));
        let held = h.pipeline.buffered_bytes();
        h.pipeline
            .handle_raw(data(conn, Direction::Write, 4, KEY.as_bytes()));
        held
    };
    let plain = exchange(
        &mut h,
        ConnId { tgid: 9, ssl: 1 },
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    assert!(plain < 8 * 1024, "held {plain} for a body nobody needs");
    let keyed = exchange(
        &mut h,
        ConnId { tgid: 9, ssl: 2 },
        format!("GET / HTTP/1.1\r\nHost: a\r\nX-Api-Key: {KEY}\r\n\r\n").as_bytes(),
    );
    assert!(keyed >= filler.len(), "held {keyed}");
    assert_eq!(h.metrics.hot.pairs_server.get(), 2);
    assert_eq!(h.findings.lock().unwrap().len(), 1);
    assert!(h.pipeline.buffered_bytes() < 8 * 1024);
}

/// A form body of exactly the request body limit yields its last field; one
/// byte more cuts that field, which is then not taken (it would be a shorter,
/// different value), whatever the request's split into events.
#[test]
fn request_body_limit_end_to_end_at_every_split() {
    const SECRET: &str = "tok_9fK2mQ7xLp4Rz8Wv1Nb6";
    const LIMIT: usize = 64;
    for (secret, findings, not_kept) in [(SECRET.to_string(), 1, 0), (format!("{SECRET}Q"), 0, 1)] {
        let body = format!("a={}&client_secret={secret}", "p".repeat(23));
        assert_eq!(body.len(), LIMIT + not_kept);
        let mut req = format!(
            "POST /token HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body.as_bytes());
        let echo = format!("{{\"error\":\"bad secret {secret}\"}}");
        let resp = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{echo}",
            echo.len()
        );
        for at in 0..=req.len() {
            let mut h = harness(PipelineConfig {
                http: HttpLimits {
                    max_request_body_kept: LIMIT,
                    ..HttpLimits::default()
                },
                ..PipelineConfig::default()
            });
            h.pipeline
                .handle_raw(data(SERVER, Direction::Read, 1, &req[..at]));
            h.pipeline
                .handle_raw(data(SERVER, Direction::Read, 2, &req[at..]));
            h.pipeline
                .handle_raw(data(SERVER, Direction::Write, 3, resp.as_bytes()));
            h.pipeline.finish();
            assert_eq!(
                h.findings.lock().unwrap().len(),
                findings,
                "body {} bytes, split at {at}",
                body.len()
            );
            assert_eq!(h.metrics.request_body_bytes_not_kept.get(), not_kept as u64);
        }
    }
}

fn budget_run(budget: usize) -> Harness {
    let mut h = harness(PipelineConfig {
        max_buffered_bytes: budget,
        ..PipelineConfig::default()
    });
    // Two connections, each in the middle of a request body (16 KiB events,
    // kept as slices) and one with many small events (gathered).
    for (i, piece) in [(0u64, 16 * 1024), (1, 100)] {
        let conn = ConnId { tgid: 9, ssl: i };
        h.pipeline.handle_raw(data(
            conn,
            Direction::Read,
            1,
            b"POST /up HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n",
        ));
        for seq in 0..3 {
            h.pipeline
                .handle_raw(data(conn, Direction::Read, 2 + seq, &vec![b'x'; piece]));
        }
    }
    h
}

fn memory_evictions(h: &Harness) -> u64 {
    h.metrics
        .connections_evicted
        .with_label_values(&["memory"])
        .get()
}

#[test]
fn memory_budget_at_and_one_byte_under_what_is_held() {
    let held = budget_run(usize::MAX).pipeline.buffered_bytes();
    // What the budget counts is what is held: the connections' own state, the
    // events their kept slices pin, per-chunk overhead.
    assert!(held >= 2 * CONNECTION_BYTES + 3 * 16 * 1024 + 300, "{held}");
    assert!(
        held <= 2 * CONNECTION_BYTES + 3 * (16 * 1024 + 256) + 2 * 8 * 1024 + 2048,
        "{held}"
    );

    let at = budget_run(held);
    assert_eq!(memory_evictions(&at), 0);
    assert_eq!(at.pipeline.connections(), 2);
    assert_eq!(at.pipeline.buffered_bytes(), held);
    assert!(!at.pipeline.budget_eviction_logged);

    let under = budget_run(held - 1);
    assert_eq!(memory_evictions(&under), 1);
    assert_eq!(under.pipeline.connections(), 1);
    assert!(under.pipeline.buffered_bytes() < held);
    assert!(under.pipeline.budget_eviction_logged);
}

#[test]
fn tiny_events_do_not_inflate_what_is_held() {
    let mut h = harness(PipelineConfig::default());
    let conn = ConnId { tgid: 9, ssl: 1 };
    h.pipeline.handle_raw(data(
        conn,
        Direction::Read,
        1,
        b"POST /up HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n",
    ));
    let base = h.pipeline.buffered_bytes();
    // 64 KiB of request body in 200-byte events: gathered into 8 KiB blocks.
    for seq in 0..(64 * 1024 / 200) {
        h.pipeline
            .handle_raw(data(conn, Direction::Read, 2 + seq, &[b'x'; 200]));
    }
    let held = h.pipeline.buffered_bytes() - base;
    assert!(held <= 64 * 1024 + 8 * 1024 + 16 * 128, "{held}");
}

/// HTTP/2 end to end through the pipeline: credentials from a stream's
/// headers (a cookie split over two `cookie` fields, as HTTP/2 allows), an
/// echo in a debug header and one in a gzipped body of the same response,
/// while another stream without credentials is answered in between.
#[test]
fn http2_leaks_become_findings_per_stream() {
    use std::io::Write as _;

    use crate::http::h2::tests::Conn;
    const TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.h2tokenpayload.sig9f8e7d6c";
    const SESSION: &str = "s3ss10n_9a8b7c6d5e4f3a2b1c0d";
    let mut c = Conn::new();
    let bearer = format!("Bearer {TOKEN}");
    let cookie = format!("session={SESSION}");
    c.request(
        1,
        "GET",
        "/v1/me",
        &[
            ("authorization", bearer.as_bytes()),
            ("cookie", b"theme=dark"),
            ("cookie", cookie.as_bytes()),
        ],
        None,
    );
    c.request(3, "GET", "/healthz", &[], None);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    write!(gz, "{{\"error\":\"expired\",\"session\":\"{SESSION}\"}}").unwrap();
    let body = gz.finish().unwrap();
    c.response(3, 200, &[], b"{\"status\":\"ok\"}");
    c.response(
        1,
        401,
        &[
            ("content-encoding", b"gzip"),
            ("x-debug-token", TOKEN.as_bytes()),
        ],
        &body,
    );
    let mut h = harness(PipelineConfig::default());
    h.pipeline
        .handle_raw(data(SERVER, Direction::Read, 1, &c.client));
    h.pipeline
        .handle_raw(data(SERVER, Direction::Write, 2, &c.server));
    h.pipeline.finish();
    assert_eq!(h.metrics.hot.pairs_server.get(), 2);
    let findings = h.findings.lock().unwrap();
    let mut got: Vec<(String, String, Option<String>, &str)> = findings
        .iter()
        .map(|f| {
            (
                f.request.path.clone(),
                f.sink.location.as_str().to_string(),
                f.sink.name.clone(),
                f.sink.content_encoding.as_str(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("/v1/me".to_string(), "body".to_string(), None, "gzip"),
            (
                "/v1/me".to_string(),
                "header".to_string(),
                Some("x-debug-token".to_string()),
                "identity"
            ),
        ]
    );
    let json = serde_json::to_string(&*findings).unwrap();
    for secret in [TOKEN, SESSION] {
        assert!(!json.contains(secret));
        assert!(!h.metrics.render().contains(secret));
    }
}

const STREAM_KEY: &str = "sk_live_9c1e7a04f3b25d68e2aa";

fn stream_request() -> Vec<u8> {
    format!("GET /v1/events HTTP/1.1\r\nHost: api\r\nX-Api-Key: {STREAM_KEY}\r\n\r\n").into_bytes()
}

fn chunk(s: &str) -> Vec<u8> {
    format!("{:x}\r\n{s}\r\n", s.len()).into_bytes()
}

/// A server-sent event stream that echoes the key in its first event is
/// reported while it lasts (once it is older than STREAM_INSPECT_AFTER_NS),
/// once: later looks, later echoes and the stream's end add nothing.
#[test]
fn a_leak_in_a_stream_is_reported_while_it_lasts_and_once() {
    let mut h = harness(PipelineConfig::default());
    let p = &mut h.pipeline;
    p.handle_raw(data(SERVER, Direction::Read, 1, &stream_request()));
    let head =
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut first = head.as_bytes().to_vec();
    first.extend(chunk(&format!("data: {{\"key\":\"{STREAM_KEY}\"}}\n\n")));
    p.handle_raw(data(SERVER, Direction::Write, 2, &first));
    let started = 2_000;
    p.inspect_streaming(started + STREAM_INSPECT_AFTER_NS - 1);
    assert!(h.findings.lock().unwrap().is_empty(), "too early");
    p.inspect_streaming(started + STREAM_INSPECT_AFTER_NS);
    {
        let f = h.findings.lock().unwrap();
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].sink.offset, 14);
        assert_eq!(f[0].response.status, 200);
    }
    // Nothing new kept: no look.  New bytes, the same echo again: nothing new.
    p.inspect_streaming(started + 2 * STREAM_INSPECT_AFTER_NS);
    p.handle_raw(data(SERVER, Direction::Write, 3, &chunk("data: tick\n\n")));
    p.handle_raw(data(
        SERVER,
        Direction::Write,
        4,
        &chunk(&format!("data: {STREAM_KEY}\n\n")),
    ));
    p.inspect_streaming(started + 3 * STREAM_INSPECT_AFTER_NS);
    p.handle_raw(data(SERVER, Direction::Write, 5, b"0\r\n\r\n"));
    p.finish();
    let f = h.findings.lock().unwrap();
    assert_eq!(f.len(), 1, "{f:?}");
    let json = serde_json::to_string(&*f).unwrap();
    assert!(!json.contains(STREAM_KEY));
}

/// An echo cut by the end of one look is found by the next (the looks
/// overlap), at its offset in the whole body; a stream with a content-coding
/// is searched only when it ends.
#[test]
fn stream_looks_overlap_and_compressed_streams_wait_for_the_end() {
    let mut h = harness(PipelineConfig::default());
    let p = &mut h.pipeline;
    p.handle_raw(data(SERVER, Direction::Read, 1, &stream_request()));
    let head = "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
    let filler = "x".repeat(5000);
    let mut first = head.as_bytes().to_vec();
    first.extend(format!("{filler}{}", &STREAM_KEY[..10]).as_bytes());
    p.handle_raw(data(SERVER, Direction::Write, 2, &first));
    p.inspect_streaming(2_000 + STREAM_INSPECT_AFTER_NS);
    assert!(h.findings.lock().unwrap().is_empty());
    p.handle_raw(data(
        SERVER,
        Direction::Write,
        3,
        &STREAM_KEY.as_bytes()[10..],
    ));
    p.inspect_streaming(2_000 + 2 * STREAM_INSPECT_AFTER_NS);
    {
        let f = h.findings.lock().unwrap();
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].sink.offset, 5000);
    }

    let mut h = harness(PipelineConfig::default());
    let p = &mut h.pipeline;
    p.handle_raw(data(SERVER, Direction::Read, 1, &stream_request()));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, format!("data: {STREAM_KEY}\n\n").as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    let mut resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        gz.len() + 10
    )
    .into_bytes();
    resp.extend(&gz);
    p.handle_raw(data(SERVER, Direction::Write, 2, &resp));
    p.inspect_streaming(2_000 + 5 * STREAM_INSPECT_AFTER_NS);
    assert!(h.findings.lock().unwrap().is_empty());
    p.handle_raw(data(SERVER, Direction::Write, 3, &[0; 10]));
    p.finish();
    assert_eq!(h.findings.lock().unwrap().len(), 1);
}

/// A key cut by the end of what a look sees is not reported as a partial
/// echo (its start is long enough to be one): the response's end finds it
/// whole, and that is the one finding.
#[test]
fn a_key_cut_by_a_look_is_not_a_partial_leak() {
    let mut h = harness(PipelineConfig::default());
    let p = &mut h.pipeline;
    p.handle_raw(data(SERVER, Direction::Read, 1, &stream_request()));
    let mut first = b"HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\ndata: ".to_vec();
    first.extend(&STREAM_KEY.as_bytes()[..20]);
    p.handle_raw(data(SERVER, Direction::Write, 2, &first));
    p.inspect_streaming(2_000 + STREAM_INSPECT_AFTER_NS);
    assert!(h.findings.lock().unwrap().is_empty(), "{:?}", h.findings);
    let mut rest = STREAM_KEY.as_bytes()[20..].to_vec();
    rest.resize(200 - 6 - 20, b' ');
    p.handle_raw(data(SERVER, Direction::Write, 3, &rest));
    p.finish();
    let f = h.findings.lock().unwrap();
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].exposure, Exposure::Full);
    assert_eq!(f[0].sink.offset, 6);
}

fn pairs(m: &Metrics, role: &str) -> u64 {
    m.http_pairs.with_label_values(&[role]).get()
}

/// With `--role server`, a connection whose first bytes show the client's
/// side is muted at once: reported once for the kernel, not parsed from then
/// on (nothing is held for it), reported unmuted when it leaves the table
/// (its process exits, it closes); a new role forgets it, so its next bytes
/// are looked at afresh.
#[test]
fn connections_out_of_the_role_scope_are_muted_once_and_forgotten() {
    const CLIENT: ConnId = ConnId {
        tgid: 43,
        ssl: 0x2000,
    };
    let mut h = harness(PipelineConfig {
        role: RoleFilter::Server,
        mute_in_kernel: true,
        ..PipelineConfig::default()
    });
    let p = &mut h.pipeline;
    leaky_exchange(p);
    p.handle_raw(data(CLIENT, Direction::Write, 1, LEAKY_REQUEST));
    let updates = p.take_mute_updates();
    assert_eq!(
        updates.muted,
        vec![(CLIENT, 1000)],
        "the client's side, once"
    );
    assert!(updates.unmuted.is_empty());
    let held = p.buffered_bytes();
    // What the kernel sent before the mute landed: dropped, not parsed.
    p.handle_raw(data(CLIENT, Direction::Read, 2, LEAKY_RESPONSE));
    p.handle_raw(data(CLIENT, Direction::Write, 3, b"GET /x HTTP/1.1\r\nHo"));
    assert_eq!(p.buffered_bytes(), held, "nothing held for it");
    assert_eq!(p.take_mute_updates(), MuteUpdates::default(), "once");
    assert_eq!(pairs(&h.metrics, "server"), 1);
    assert_eq!(pairs(&h.metrics, "client"), 0);
    assert_eq!(h.findings.lock().unwrap().len(), 1, "the server's only");

    let p = &mut h.pipeline;
    p.process_exited(CLIENT.tgid);
    assert_eq!(
        p.take_mute_updates().unmuted,
        vec![CLIENT],
        "its process exited"
    );
    p.handle_raw(data(CLIENT, Direction::Write, 4, LEAKY_REQUEST));
    assert_eq!(p.take_mute_updates().muted, vec![(CLIENT, 4000)]);
    p.handle_raw(close(CLIENT));
    assert_eq!(p.take_mute_updates().unmuted, vec![CLIENT], "closed");

    // SIGHUP to `any`: the client's side is unmuted and looked at again
    // from its next bytes.
    p.handle_raw(data(CLIENT, Direction::Write, 5, LEAKY_REQUEST));
    assert_eq!(p.take_mute_updates().muted, vec![(CLIENT, 5000)]);
    assert!(p.set_role_filter(RoleFilter::Any));
    assert!(!p.set_role_filter(RoleFilter::Any), "no change");
    assert_eq!(p.take_mute_updates().unmuted, vec![CLIENT], "back in scope");
    p.handle_raw(data(CLIENT, Direction::Write, 6, LEAKY_REQUEST));
    p.handle_raw(data(CLIENT, Direction::Read, 7, LEAKY_RESPONSE));
    assert_eq!(p.take_mute_updates(), MuteUpdates::default());
    p.finish();
    assert_eq!(pairs(&h.metrics, "client"), 1);
    assert_eq!(h.findings.lock().unwrap().len(), 2);
}

/// Traffic the parser gives up on (here not HTTP at all, and a WebSocket
/// after its upgrade) is muted whatever the role; HTTP is not; and replay
/// (no kernel to tell) collects nothing.
#[test]
fn connections_the_parser_gave_up_on_are_muted() {
    const DB: ConnId = ConnId { tgid: 44, ssl: 1 };
    const WS: ConnId = ConnId { tgid: 44, ssl: 2 };
    for (mute_in_kernel, want) in [(true, vec![DB, WS]), (false, vec![])] {
        let mut h = harness(PipelineConfig {
            mute_in_kernel,
            ..PipelineConfig::default()
        });
        let p = &mut h.pipeline;
        leaky_exchange(p);
        // A PostgreSQL startup message over TLS, and the server's answer
        // (one direction alone may be HTTP joined midway: it waits).
        p.handle_raw(data(
            DB,
            Direction::Write,
            1,
            b"\0\0\0\x29\0\x03\0\0user\0app\0",
        ));
        p.handle_raw(data(DB, Direction::Read, 2, b"R\0\0\0\x08\0\0\0\0"));
        p.handle_raw(data(
            WS,
            Direction::Read,
            1,
            b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        ));
        p.handle_raw(data(
            WS,
            Direction::Write,
            2,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        ));
        let mut got: Vec<ConnId> = p
            .take_mute_updates()
            .muted
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        got.sort();
        assert_eq!(got, want, "mute_in_kernel = {mute_in_kernel}");
        assert_eq!(pairs(&h.metrics, "server"), 1, "the leaky exchange only");
    }
}

/// `n` times the leaky exchange on one keep-alive connection, at `path`.
fn leaky_exchanges(p: &mut Pipeline, conn: ConnId, path: &str, n: u32) {
    let request = String::from_utf8(LEAKY_REQUEST.to_vec())
        .unwrap()
        .replace("/v1/items", path);
    for i in 0..n {
        p.handle_raw(data(conn, Direction::Read, 2 * i + 1, request.as_bytes()));
        p.handle_raw(data(conn, Direction::Write, 2 * i + 2, LEAKY_RESPONSE));
    }
}

/// One leaky endpoint under load: a finding per response (findings output,
/// metrics), but one log line per leak and path a minute, not one each.
#[test]
fn the_leak_log_line_is_said_once_a_minute_per_leak_not_per_response() {
    let mut h = harness(PipelineConfig::default());
    let ((), logs) = with_logs(|| {
        leaky_exchanges(&mut h.pipeline, SERVER, "/v1/items", 200);
        leaky_exchanges(&mut h.pipeline, SERVER, "/v1/other", 200);
        h.pipeline.flush();
    });
    assert_eq!(h.findings.lock().unwrap().len(), 400);
    let leak_lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("credential leak"))
        .collect();
    assert_eq!(leak_lines.len(), 2, "{logs}");
    assert!(leak_lines[0].contains("/v1/items") && leak_lines[1].contains("/v1/other"));
    assert!(!logs.contains("sk_live_5f2a9c81d7e34b6aa0c3"));
    let leaks: u64 = h
        .metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("sensor_credential_leaks_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(leaks, 400);
}

#[test]
fn the_leak_log_limiter_says_repeats_after_a_minute_and_stays_bounded() {
    let mut l = LeakLogLimiter::new(4);
    let t0 = std::time::Instant::now();
    let min = LEAK_LOG_EVERY;
    assert_eq!(l.due(1, t0), Some(0), "first time: logged");
    for s in 1..=59 {
        assert_eq!(l.due(1, t0 + std::time::Duration::from_secs(s)), None);
    }
    assert_eq!(
        l.due(1, t0 + min),
        Some(59),
        "a minute on: with the repeats"
    );
    assert_eq!(l.due(1, t0 + min), None);
    assert_eq!(l.due(1, t0 + 2 * min), Some(1));
    // Bounded: 4 keys; the least recently seen is forgotten.
    for k in 2..=5 {
        assert_eq!(l.due(k, t0), Some(0));
    }
    assert_eq!(l.seen.len(), 4);
    assert_eq!(l.due(1, t0 + 2 * min), Some(0), "forgotten, logged again");
    assert_eq!(l.due(5, t0 + min / 2), None, "remembered");
}

/// `--findings` into a pipe nobody reads: the pipeline goes on at its pace
/// (it blocked in the write, and with it the whole event loop).
#[test]
fn a_findings_reader_that_does_not_read_does_not_stop_the_pipeline() {
    let (ours, peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut h = harness(PipelineConfig::default());
        h.pipeline.outputs.findings =
            Some(JsonLinesWriter::from_writer(Box::new(ours), "findings"));
        let started = std::time::Instant::now();
        for round in 0..20 {
            leaky_exchanges(&mut h.pipeline, SERVER, &format!("/r{round}"), 100);
            h.pipeline.flush();
        }
        let _ = done_tx.send((started.elapsed(), h.findings.lock().unwrap().len()));
    });
    let (took, findings) = done_rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the pipeline blocked on its findings output");
    assert_eq!(findings, 2000);
    eprintln!("2000 findings into a pipe nobody reads: {took:?}");
    drop(peer);
}
