//! `ConnectionParser::feed` on one direction: the first byte picks the direction,
//! the limits and the feed size; the rest is the stream.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sensor_http::capture::event::Direction;
use sensor_http::http::limits::HttpLimits;
use sensor_http::http::{ConnectionParser, ParserOutput};

fuzz_target!(|data: &[u8]| {
    let Some((&cfg, stream)) = data.split_first() else {
        return;
    };
    let dir = if cfg & 1 == 0 {
        Direction::Read
    } else {
        Direction::Write
    };
    let limits = if cfg & 2 == 0 {
        HttpLimits::default()
    } else {
        HttpLimits {
            max_body_bytes: 16,
            max_request_body_kept: 8,
            max_head_bytes: 128,
            max_headers: 4,
            max_pending_requests: 2,
        }
    };
    let feed = 1 + (cfg >> 2) as usize * 8;
    let stream = Bytes::copy_from_slice(stream);
    let mut p = ConnectionParser::new(limits.clone());
    let mut out = ParserOutput::default();
    let mut at = 0;
    while at < stream.len() {
        let end = (at + feed).min(stream.len());
        p.feed(dir, &stream.slice(at..end), at as u64, &mut out);
        assert!(p.buffered_bytes() <= limits.max_buffered_bytes());
        at = end;
    }
    p.close(u64::MAX, &mut out);
    assert_eq!(p.buffered_bytes(), 0);
    // One direction alone never completes an exchange.
    assert!(out.exchanges.is_empty());
});
