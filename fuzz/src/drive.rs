//! Drives a `ConnectionParser` from fuzz input (the `http_conn` and
//! `http2_conn` targets): a sequence of `[op, len, data...]` records feeding
//! both directions interleaved, with capture holes, close and looks at the
//! responses in progress.  A twin parser
//! is fed the same bytes borrowed (as the sensor feeds events read in place in
//! the ring buffer) and must give the same output, holding no more memory.

use bytes::Bytes;

use crate::capture::event::Direction;
use crate::http::limits::HttpLimits;
use crate::http::{ConnectionParser, FeedData, LookAt, ParserOutput};

/// Feeds `opening` (each `(direction, bytes)` in turn), then what `data` says.
pub fn connection(data: &[u8], opening: &[(Direction, &[u8])]) {
    let limits = HttpLimits {
        max_body_bytes: 64,
        max_request_body_kept: 32,
        max_head_bytes: 512,
        max_headers: 16,
        max_pending_requests: 4,
    };
    let mut p = ConnectionParser::new(limits.clone());
    let mut out = ParserOutput::default();
    let mut twin = ConnectionParser::new(limits.clone());
    let mut twin_out = ParserOutput::default();
    for (dir, bytes) in opening {
        p.feed(*dir, &Bytes::copy_from_slice(bytes), 0, &mut out);
        twin.feed_with(*dir, FeedData::Borrowed(bytes), 0, &mut twin_out, &|_| true);
    }
    let input = Bytes::copy_from_slice(data);
    let mut at = 0;
    let mut ts = 0u64;
    while at + 2 <= input.len() {
        let (op, len) = (input[at], input[at + 1] as usize);
        at += 2;
        ts += 1;
        let dir = if op & 1 == 0 {
            Direction::Read
        } else {
            Direction::Write
        };
        match op >> 1 {
            0..=99 => {
                let end = (at + len).min(input.len());
                p.feed(dir, &input.slice(at..end), ts, &mut out);
                let borrowed = FeedData::Borrowed(&data[at..end]);
                twin.feed_with(dir, borrowed, ts, &mut twin_out, &|_| true);
                at = end;
            }
            100..=120 => {
                p.gap(dir, len as u64, ts, &mut out);
                twin.gap(dir, len as u64, ts, &mut twin_out);
            }
            121 => {
                p.close(ts, &mut out);
                twin.close(ts, &mut twin_out);
            }
            122 => {
                // A look at the responses in progress (the sensor's
                // once-a-second tick): the same of both parsers, within
                // the body cap, each a slice of what was kept.
                let look = LookAt {
                    now_ns: ts,
                    min_age_ns: (len % 4) as u64,
                    overlap: len % 32,
                };
                let (mut looks, mut twin_looks) = (Vec::new(), Vec::new());
                p.streaming_snapshots(look, &mut looks);
                twin.streaming_snapshots(look, &mut twin_looks);
                assert_eq!(looks.len(), twin_looks.len());
                for (l, t) in looks.iter().zip(&twin_looks) {
                    assert_eq!((&l.exchange, l.from), (&t.exchange, t.from));
                    let body = &l.exchange.response.body;
                    assert!(body.truncated && body.len == body.kept_len() as u64);
                    assert!(l.from as usize + body.kept_len() <= limits.max_body_bytes);
                }
            }
            _ => {
                let _ = (p.is_ignored(), p.role());
            }
        }
        assert!(p.buffered_bytes() <= limits.max_buffered_bytes());
        assert!(twin.buffered_bytes() <= p.buffered_bytes());
    }
    p.close(ts + 1, &mut out);
    twin.close(ts + 1, &mut twin_out);
    assert_eq!(p.buffered_bytes(), 0);
    assert_eq!(twin.buffered_bytes(), 0);
    assert_eq!(twin_out.exchanges, out.exchanges);
    assert_eq!(twin_out.errors, out.errors);
    for e in &out.exchanges {
        // A request keeps a prefix of its body: seen whole, kept in part.
        let req = &e.request.body;
        assert!(req.kept_len() <= limits.request_body_cap());
        assert!(
            req.truncated
                || req.len == req.kept_len() as u64
                || req.kept_len() == limits.request_body_cap()
        );
        assert!(req.is_partial() == (req.truncated || req.len > req.kept_len() as u64));
        for b in [&e.request.body, &e.response.body] {
            assert!(b.kept_len() <= limits.max_body_bytes);
            assert!(b.len >= b.kept_len() as u64);
        }
        let resp = &e.response.body;
        assert!(resp.truncated || resp.len == resp.kept_len() as u64);
        assert!(e.timing.request_start_ns <= e.timing.request_end_ns);
        assert!(e.timing.response_start_ns <= e.timing.response_end_ns);
    }
}
