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
    lines
}
