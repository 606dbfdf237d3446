//! A quick throughput baseline of the parser (small keep-alive pairs, 1 MiB
//! bodies), for the benchmark work.  Run it in a release build: the sensor's
//! ignored test `http::tests::throughput`, or `cargo run --release --example
//! http_throughput` in `fuzz/` (which compiles only the HTTP stage).

use bytes::Bytes;
use std::time::Instant;

use super::limits::HttpLimits;
use super::{ConnectionParser, ParserOutput};
use crate::capture::event::Direction::{Read, Write};

/// Runs the measurements; one human-readable line each.
pub fn measure() -> Vec<String> {
    let mut lines = Vec::new();
    let req = Bytes::from_static(
        b"GET /v1/items?page=2 HTTP/1.1\r\nHost: api.example\r\nUser-Agent: bench/1\r\nAccept: */*\r\nAuthorization: Bearer abcdefghijklmnopqrstuvwxyz012345\r\n\r\n",
    );
    let resp = Bytes::from(format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 200\r\nDate: Mon, 23 Nov 2026 08:00:00 GMT\r\n\r\n{}",
        "x".repeat(200)
    ));
    let n = 200_000u64;
    let mut p = ConnectionParser::new(HttpLimits::default());
    let mut out = ParserOutput::default();
    let mut pairs = 0u64;
    let t = Instant::now();
    for i in 0..n {
        p.feed(Read, &req, i, &mut out);
        p.feed(Write, &resp, i, &mut out);
        pairs += out.exchanges.len() as u64;
        out.clear();
    }
    let secs = t.elapsed().as_secs_f64();
    let bytes = n as f64 * (req.len() + resp.len()) as f64;
    assert_eq!(pairs, n);
    lines.push(format!(
        "small keep-alive pairs: {:.0} exchanges/s, {:.1} MB/s",
        n as f64 / secs,
        bytes / secs / 1e6
    ));

    const BODY: usize = 1024 * 1024;
    const FEED: usize = 16 * 1024;
    let head = Bytes::from(format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n"));
    let piece = Bytes::from(vec![b'y'; FEED]);
    let m = 1000u64;
    let mut p = ConnectionParser::new(HttpLimits::default());
    let t = Instant::now();
    for i in 0..m {
        p.feed(Read, &req, i, &mut out);
        p.feed(Write, &head, i, &mut out);
        for _ in 0..BODY / FEED {
            p.feed(Write, &piece, i, &mut out);
        }
        debug_assert_eq!(out.exchanges.len(), 1);
        out.clear();
    }
    let secs = t.elapsed().as_secs_f64();
    lines.push(format!(
        "1 MiB response bodies (16 KiB feeds): {:.0} exchanges/s, {:.0} MB/s",
        m as f64 / secs,
        m as f64 * BODY as f64 / secs / 1e6
    ));
    let chunked_head = Bytes::from_static(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    let chunk = {
        let mut v = format!("{FEED:x}\r\n").into_bytes();
        v.extend_from_slice(&piece);
        v.extend_from_slice(b"\r\n");
        Bytes::from(v)
    };
    let end = Bytes::from_static(b"0\r\n\r\n");
    let t = Instant::now();
    for i in 0..m {
        p.feed(Read, &req, i, &mut out);
        p.feed(Write, &chunked_head, i, &mut out);
        for _ in 0..BODY / FEED {
            p.feed(Write, &chunk, i, &mut out);
        }
        p.feed(Write, &end, i, &mut out);
        debug_assert_eq!(out.exchanges.len(), 1);
        out.clear();
    }
    let secs = t.elapsed().as_secs_f64();
    lines.push(format!(
        "1 MiB chunked response bodies (16 KiB chunks): {:.0} exchanges/s, {:.0} MB/s",
        m as f64 / secs,
        m as f64 * BODY as f64 / secs / 1e6
    ));
    lines.extend(measure_http2(n, m));
    lines
}

/// The same exchanges over one HTTP/2 connection: a stream each, headers
/// HPACK-encoded as a client and a server would (repeated fields indexed).
fn measure_http2(n: u64, m: u64) -> Vec<String> {
    use super::h2::frame::{
        encode as frame, DATA, FLAG_END_HEADERS as END_HEADERS, FLAG_END_STREAM as END_STREAM,
        HEADERS, PREFACE, SETTINGS,
    };
    let mut lines = Vec::new();
    let mut enc_client = crate::http::h2::hpack::Encoder::new();
    let mut enc_server = crate::http::h2::hpack::Encoder::new();
    let request = |enc: &mut crate::http::h2::hpack::Encoder, stream: u32| {
        let block = enc.encode(vec![
            (&b":method"[..], &b"GET"[..]),
            (b":scheme", b"https"),
            (b":authority", b"api.example"),
            (b":path", b"/v1/items?page=2"),
            (b"user-agent", b"bench/1"),
            (b"accept", b"*/*"),
            (b"authorization", b"Bearer abcdefghijklmnopqrstuvwxyz012345"),
        ]);
        Bytes::from(frame(HEADERS, END_HEADERS | END_STREAM, stream, &block))
    };
    let response_head = |enc: &mut crate::http::h2::hpack::Encoder, stream: u32, len: usize| {
        let len = len.to_string();
        let block = enc.encode(vec![
            (&b":status"[..], &b"200"[..]),
            (b"content-type", b"application/json"),
            (b"content-length", len.as_bytes()),
            (b"date", b"Mon, 23 Nov 2026 08:00:00 GMT"),
        ]);
        frame(HEADERS, END_HEADERS, stream, &block)
    };
    let preface = Bytes::from_static(PREFACE);
    let settings = Bytes::from(frame(SETTINGS, 0, 0, &[]));

    let mut feeds = Vec::with_capacity(n as usize);
    for i in 0..n {
        let stream = 1 + 2 * i as u32;
        let mut resp = response_head(&mut enc_server, stream, 200);
        resp.extend(frame(DATA, END_STREAM, stream, &[b'x'; 200]));
        feeds.push((request(&mut enc_client, stream), Bytes::from(resp)));
    }
    let bytes: usize = feeds.iter().map(|(q, r)| q.len() + r.len()).sum();
    let mut p = ConnectionParser::new(HttpLimits::default());
    let mut out = ParserOutput::default();
    p.feed(Write, &settings, 0, &mut out);
    p.feed(Read, &preface, 0, &mut out);
    let mut pairs = 0u64;
    let t = Instant::now();
    for (i, (q, r)) in feeds.iter().enumerate() {
        p.feed(Read, q, i as u64, &mut out);
        p.feed(Write, r, i as u64, &mut out);
        pairs += out.exchanges.len() as u64;
        out.clear();
    }
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(pairs, n);
    lines.push(format!(
        "HTTP/2 small streams on one connection: {:.0} exchanges/s, {:.1} MB/s",
        n as f64 / secs,
        bytes as f64 / secs / 1e6
    ));

    const BODY: usize = 1024 * 1024;
    const FRAME: usize = 16 * 1024;
    // A new connection: new HPACK tables on both ends.
    let mut enc_client = crate::http::h2::hpack::Encoder::new();
    let mut enc_server = crate::http::h2::hpack::Encoder::new();
    let mut p = ConnectionParser::new(HttpLimits::default());
    p.feed(Write, &settings, 0, &mut out);
    p.feed(Read, &preface, 0, &mut out);
    let payload = vec![b'y'; FRAME];
    let mut streams = Vec::with_capacity(m as usize);
    for i in 0..m {
        let stream = 1 + 2 * i as u32;
        let head = Bytes::from(response_head(&mut enc_server, stream, BODY));
        let frames: Vec<Bytes> = (0..BODY / FRAME)
            .map(|k| {
                let end = if k + 1 == BODY / FRAME { END_STREAM } else { 0 };
                Bytes::from(frame(DATA, end, stream, &payload))
            })
            .collect();
        streams.push((request(&mut enc_client, stream), head, frames));
    }
    let mut pairs = 0;
    let t = Instant::now();
    for (i, (q, head, frames)) in streams.iter().enumerate() {
        p.feed(Read, q, i as u64, &mut out);
        p.feed(Write, head, i as u64, &mut out);
        for f in frames {
            p.feed(Write, f, i as u64, &mut out);
        }
        pairs += out.exchanges.len() as u64;
        out.clear();
    }
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(pairs, m);
    lines.push(format!(
        "HTTP/2 1 MiB response bodies (16 KiB DATA frames): {:.0} exchanges/s, {:.0} MB/s",
        m as f64 / secs,
        m as f64 * BODY as f64 / secs / 1e6
    ));
    lines
}
