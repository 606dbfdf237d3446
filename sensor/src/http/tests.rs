//! Behaviour of the HTTP stage, table-driven; property tests in `proptests`.

use bytes::Bytes;

use super::decode::CHUNK_OVERHEAD;
use super::limits::HttpLimits;
use super::types::{Exchange, Header, Role};
use super::{ConnectionParser, FeedData, ParseErrorReason as E, ParserOutput};
use crate::capture::event::Direction::{self, Read, Write};

mod proptests;

#[derive(Clone, Debug)]
pub(super) enum Ev {
    /// One SSL call's bytes (or its first chunk) read / written.
    R(Vec<u8>),
    W(Vec<u8>),
    /// A later chunk of the SSL call before it, read / written.
    Rc(Vec<u8>),
    Wc(Vec<u8>),
    Gap(Direction, u64),
    Close,
}

pub(super) fn r(s: impl AsRef<[u8]>) -> Ev {
    Ev::R(s.as_ref().to_vec())
}
pub(super) fn w(s: impl AsRef<[u8]>) -> Ev {
    Ev::W(s.as_ref().to_vec())
}

pub(super) struct Run {
    pub ex: Vec<Exchange>,
    pub errors: Vec<E>,
    pub resyncs: super::connection::Resyncs,
    pub interim_not_kept: u64,
    pub over_cap: u64,
    /// Request body bytes past `max_request_body_kept`.
    pub not_kept: u64,
    pub p: ConnectionParser,
}

pub(super) fn run_with(limits: HttpLimits, evs: &[Ev]) -> Run {
    let mut p = ConnectionParser::new(limits.clone());
    let mut out = ParserOutput::default();
    let mut ex = Vec::new();
    let mut errors = Vec::new();
    let mut over_cap = 0;
    let mut not_kept = 0;
    let mut resyncs = super::connection::Resyncs::default();
    let mut interim_not_kept = 0;
    // A twin fed the same bytes borrowed (as the sensor feeds events read in
    // place in the ring buffer) must give the same output after every event,
    // holding no more memory (it copies what it keeps instead of slicing).
    let mut twin = ConnectionParser::new(limits.clone());
    let mut twin_out = ParserOutput::default();
    for (i, ev) in evs.iter().enumerate() {
        let ts = (i as u64 + 1) * 1000;
        let all = &|_: &crate::http::types::Request| true;
        match ev {
            Ev::R(d) => {
                p.feed(Read, &Bytes::copy_from_slice(d), ts, &mut out);
                twin.feed_with(Read, FeedData::Borrowed(d), ts, &mut twin_out, all);
            }
            Ev::W(d) => {
                p.feed(Write, &Bytes::copy_from_slice(d), ts, &mut out);
                twin.feed_with(Write, FeedData::Borrowed(d), ts, &mut twin_out, all);
            }
            Ev::Rc(d) | Ev::Wc(d) => {
                let dir = if matches!(ev, Ev::Rc(_)) { Read } else { Write };
                p.next_feed_continues_call(dir);
                twin.next_feed_continues_call(dir);
                p.feed(dir, &Bytes::copy_from_slice(d), ts, &mut out);
                twin.feed_with(dir, FeedData::Borrowed(d), ts, &mut twin_out, all);
            }
            Ev::Gap(dir, n) => {
                p.gap(*dir, *n, ts, &mut out);
                twin.gap(*dir, *n, ts, &mut twin_out);
            }
            Ev::Close => {
                p.close(ts, &mut out);
                twin.close(ts, &mut twin_out);
            }
        }
        assert!(p.buffered_bytes() <= limits.max_buffered_bytes());
        assert_eq!(
            twin_out.exchanges, out.exchanges,
            "borrowed input, event {i}"
        );
        assert_eq!(twin_out.errors, out.errors, "borrowed input, event {i}");
        assert_eq!(
            (
                twin_out.body_bytes_over_cap,
                twin_out.request_body_bytes_not_kept
            ),
            (out.body_bytes_over_cap, out.request_body_bytes_not_kept)
        );
        assert!(twin.buffered_bytes() <= p.buffered_bytes());
        assert_eq!(twin_out.resyncs, out.resyncs, "borrowed input, event {i}");
        twin_out.clear();
        ex.append(&mut out.exchanges);
        errors.append(&mut out.errors);
        over_cap += out.body_bytes_over_cap;
        not_kept += out.request_body_bytes_not_kept;
        resyncs.after_gap += out.resyncs.after_gap;
        resyncs.joined_midway += out.resyncs.joined_midway;
        interim_not_kept += out.interim_heads_not_kept;
        out.clear();
    }
    Run {
        ex,
        errors,
        resyncs,
        interim_not_kept,
        over_cap,
        not_kept,
        p,
    }
}

pub(super) fn run(evs: &[Ev]) -> Run {
    run_with(HttpLimits::default(), evs)
}

/// (method, target, request body, status, response body)
type Summary = (String, String, Vec<u8>, u16, Vec<u8>);

fn summary(ex: &[Exchange]) -> Vec<Summary> {
    ex.iter()
        .map(|e| {
            (
                e.request.method.clone(),
                e.request.target.clone(),
                e.request.body.to_vec(),
                e.response.status,
                e.response.body.to_vec(),
            )
        })
        .collect()
}

fn s(m: &str, t: &str, rb: &[u8], st: u16, sb: &[u8]) -> Summary {
    (m.into(), t.into(), rb.to_vec(), st, sb.to_vec())
}

const GET: &str = "GET /a?token=x HTTP/1.1\r\nHost: h\r\n\r\n";
const OK5: &str = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

#[test]
fn server_and_client_roles() {
    let srv = run(&[r(GET), w(OK5)]);
    assert_eq!(srv.p.role(), Some(Role::Server));
    assert_eq!(srv.ex.len(), 1);
    assert_eq!(srv.ex[0].role, Role::Server);
    assert_eq!(
        summary(&srv.ex),
        [s("GET", "/a?token=x", b"", 200, b"hello")]
    );
    assert_eq!(srv.ex[0].request.header("host").unwrap(), b"h");
    let cli = run(&[w(GET), r(OK5)]);
    assert_eq!(cli.p.role(), Some(Role::Client));
    assert_eq!(cli.ex[0].role, Role::Client);
    assert!(srv.errors.is_empty() && cli.errors.is_empty());
    // Role is known from the first bytes, before the head is complete.
    let early = run(&[r("GET /x HT")]);
    assert_eq!(early.p.role(), Some(Role::Server));
    assert!(early.ex.is_empty());
}

#[test]
fn behaviour_table() {
    type Case = (
        &'static str,
        Vec<Ev>,
        Vec<(String, String, Vec<u8>, u16, Vec<u8>)>,
        Vec<E>,
    );
    let cases: Vec<Case> = vec![
        (
            "keep-alive, several requests, split heads",
            vec![r("GET /1 HTTP/1.1\r\nHo"), r("st: h\r\n\r"), r("\n"), w("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"),
                 r("POST /2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz"), w("HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
                 r("GET /3 HTTP/1.1\r\n\r\n"), w("HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno")],
            vec![s("GET", "/1", b"", 200, b"a"), s("POST", "/2", b"xyz", 201, b""), s("GET", "/3", b"", 404, b"no")],
            vec![],
        ),
        (
            "many requests in one feed (pipelining), responses in one feed",
            vec![r("GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nPUT /3 HTTP/1.1\r\nContent-Length: 2\r\n\r\nab"),
                 w("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n3")],
            vec![s("GET", "/1", b"", 200, b"1"), s("GET", "/2", b"", 200, b"2"), s("PUT", "/3", b"ab", 200, b"3")],
            vec![],
        ),
        (
            "chunked both ways, extensions and trailers",
            vec![r("POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;a=b\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n"),
                 w("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n")],
            vec![s("POST", "/c", b"abcde", 200, b"z")],
            vec![],
        ),
        (
            "transfer-encoding wins over content-length",
            vec![r("POST /c HTTP/1.1\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n"), w(OK5)],
            vec![s("POST", "/c", b"a", 200, b"hello")],
            vec![],
        ),
        (
            "close-delimited response ends at close",
            vec![r(GET), w("HTTP/1.1 200 OK\r\n\r\npart1"), w("part2"), Ev::Close],
            vec![s("GET", "/a?token=x", b"", 200, b"part1part2")],
            vec![],
        ),
        (
            "close-delimited response never emitted without close",
            vec![r(GET), w("HTTP/1.1 200 OK\r\n\r\npart1")],
            vec![],
            vec![],
        ),
        (
            "response with unknown transfer-coding is close-delimited",
            vec![r(GET), w("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz"), Ev::Close],
            vec![s("GET", "/a?token=x", b"", 200, b"zz")],
            vec![],
        ),
        (
            "HTTP/1.0 response without length reads to close",
            vec![r("GET / HTTP/1.0\r\n\r\n"), w("HTTP/1.0 200 OK\r\n\r\nold"), Ev::Close],
            vec![s("GET", "/", b"", 200, b"old")],
            vec![],
        ),
        (
            "expect 100-continue",
            vec![r("PUT /u HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"), w("HTTP/1.1 100 Continue\r\n\r\n"),
                 r("data"), w("HTTP/1.1 204 No Content\r\n\r\n")],
            vec![s("PUT", "/u", b"data", 204, b"")],
            vec![],
        ),
        (
            "103 early hints skipped",
            vec![r(GET), w("HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")],
            vec![s("GET", "/a?token=x", b"", 200, b"x")],
            vec![],
        ),
        (
            "HEAD response has no body despite content-length",
            vec![r("HEAD /h HTTP/1.1\r\n\r\nGET /g HTTP/1.1\r\n\r\n"), w("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"), w(OK5)],
            vec![s("HEAD", "/h", b"", 200, b""), s("GET", "/g", b"", 200, b"hello")],
            vec![],
        ),
        (
            "204 and 304 have no body",
            vec![r("GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n"),
                 w("HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n"), w(OK5)],
            vec![s("GET", "/1", b"", 204, b""), s("GET", "/2", b"", 304, b""), s("GET", "/3", b"", 200, b"hello")],
            vec![],
        ),
        (
            "early response before the request body is complete",
            vec![r("POST /big HTTP/1.1\r\nContent-Length: 6\r\n\r\nabc"), w("HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n"), r("def")],
            vec![s("POST", "/big", b"abcdef", 413, b"")],
            vec![],
        ),
        (
            "stray CRLF between messages",
            vec![r("POST /p HTTP/1.1\r\nContent-Length: 1\r\n\r\nx\r\n"), w(OK5), r("\r\nGET /q HTTP/1.1\r\n\r\n"), w(OK5)],
            vec![s("POST", "/p", b"x", 200, b"hello"), s("GET", "/q", b"", 200, b"hello")],
            vec![],
        ),
        (
            "response without request is dropped, parsing goes on",
            vec![r(GET), w(OK5), w(OK5), r("GET /n HTTP/1.1\r\n\r\n"), w("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nn")],
            vec![s("GET", "/a?token=x", b"", 200, b"hello"), s("GET", "/n", b"", 200, b"n")],
            vec![E::ResponseWithoutRequest],
        ),
        (
            "101 switching protocols ends parsing",
            vec![r("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
                 w(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"), r(b"\x81\x85garbage"), Ev::Close],
            vec![],
            vec![E::Upgrade],
        ),
        (
            "CONNECT tunnel: exchange emitted, then parsing ends",
            vec![w("CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n"), r("HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x01"), w("\x16\x03\x01\x00")],
            vec![s("CONNECT", "h:443", b"", 200, b"")],
            vec![E::Upgrade],
        ),
        // The first bytes of a direction may be the middle of a message
        // (the sensor joined the connection then): it waits for a start.
        // Both directions opening with no start is not HTTP.
        ("garbage both ways", vec![r("\x16\x03\x01\x02\x00"), w("\x16\x03\x03\x00\x02"), r(GET)], vec![], vec![E::NotHttp]),
        // (The first response may answer what the garbage was the end of:
        // a client that pipelines sent the request right behind it.)
        ("garbage one way, then a request at a call's start", vec![r("\x16\x03\x01\x02\x00"), r(GET), w(OK5), w("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nn")], vec![s("GET", "/a?token=x", b"", 200, b"n")], vec![E::ResponseWithoutRequest]),
        ("server-first protocol (SMTP banner)", vec![w("220 mail.example ESMTP ready\r\n"), r("EHLO x\r\n")], vec![], vec![E::NotHttp]),
        ("bad request line later on", vec![r(GET), w(OK5), r("GET /x HTTP/9.9\r\n")], vec![s("GET", "/a?token=x", b"", 200, b"hello")], vec![E::InvalidRequest]),
        ("binary in a head", vec![r("GET / HTTP/1.1\r\nX: \x01\r\n\r\n")], vec![], vec![E::InvalidRequest]),
        // A whole head in one feed is judged by its parse; a bad start line
        // still earns what it earns when judged on its own (above).
        ("bad request line later on, whole head in one feed", vec![r(GET), w(OK5), r("GET /x HTTP/9.9\r\nHost: a\r\n\r\n")], vec![s("GET", "/a?token=x", b"", 200, b"hello")], vec![E::InvalidRequest]),
        ("token-space garbage, whole head in one feed, both ways", vec![r("FOO bar baz\r\nX: y\r\n\r\n"), w("\x00\x01binary")], vec![], vec![E::NotHttp]),
        ("bad status line later on, whole head in one feed", vec![r(GET), w(OK5), r(GET), w("HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n")], vec![s("GET", "/a?token=x", b"", 200, b"hello")], vec![E::InvalidResponse]),
        (
            "resync candidate with a bad start line, whole head in one feed: scanning goes on after it",
            vec![Ev::Gap(Read, 0), r("GET /a HTTX\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"), w(OK5)],
            vec![s("GET", "/2", b"", 200, b"hello")],
            vec![E::GapInHead],
        ),
        (
            "response candidate with a bad status line after a hole: the next one answers the newest request",
            vec![r("GET /1 HTTP/1.1\r\n\r\n"), w("HTTP/1.1 200 OK\r\nConte"), Ev::Gap(Write, 50),
                 w("HTTP/1.1 2000 OK\r\n\r\n"), r("GET /2 HTTP/1.1\r\n\r\n"), w("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2")],
            vec![s("GET", "/2", b"", 200, b"2")],
            vec![E::GapInHead],
        ),
        (
            "response head after a hole that does not parse: the next one still answers the newest request",
            vec![r("GET /1 HTTP/1.1\r\n\r\n"), w("HTTP/1.1 200 OK\r\nConte"), Ev::Gap(Write, 50),
                 w("HTTP/1.1 200 OK\r\nX: \x01\r\n\r\n"), r("GET /2 HTTP/1.1\r\n\r\n"), w("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2")],
            vec![s("GET", "/2", b"", 200, b"2")],
            vec![E::GapInHead],
        ),
        // HTTP/2 is followed (h2::tests); here only its start and its failures.
        ("http2 preface", vec![w("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), r("\0\0\0\x04")], vec![], vec![]),
        ("http2 preface split, then a stray CONTINUATION", vec![w("PRI * H"), w("TTP/2.0\r\n\r\nSM\r\n\r\n"), w("\0\0\x01\x09\x04\0\0\0\x01x")], vec![], vec![E::Http2]),
        ("http2 preface, wrong", vec![w("PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")], vec![], vec![E::Http2]),
        // A direction's first bytes: maybe a body's (joined midway).
        ("request where a response belongs, first bytes", vec![r(GET), w(GET), w(OK5)], vec![s("GET", "/a?token=x", b"", 200, b"hello")], vec![]),
        ("request where a response belongs, later", vec![r(GET), w(OK5), r(GET), w(GET)], vec![s("GET", "/a?token=x", b"", 200, b"hello")], vec![E::InvalidResponse]),
        ("response where a request belongs", vec![r(GET), w(OK5), r(OK5)], vec![s("GET", "/a?token=x", b"", 200, b"hello")], vec![E::InvalidRequest]),
        ("bad content-length", vec![r("POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n")], vec![], vec![E::InvalidContentLength]),
        ("conflicting content-length", vec![r("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")], vec![], vec![E::InvalidContentLength]),
        ("request with non-chunked transfer-encoding", vec![r("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n")], vec![], vec![E::InvalidRequest]),
        ("bad chunk", vec![r("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")], vec![], vec![E::InvalidChunk]),
        ("HTTP/2 status line later on", vec![r(GET), w(OK5), r(GET), w("HTTP/2 200\r\n\r\n")], vec![s("GET", "/a?token=x", b"", 200, b"hello")], vec![E::InvalidResponse]),
        // Gaps.
        (
            "gap inside a content-length body: truncated, next message fine",
            vec![r(GET), w("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"), Ev::Gap(Write, 4), w("hij"),
                 r(GET), w(OK5)],
            vec![s("GET", "/a?token=x", b"", 200, b"abchij"), s("GET", "/a?token=x", b"", 200, b"hello")],
            vec![],
        ),
        (
            "gap ending exactly at the body end",
            vec![r(GET), w("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"), Ev::Gap(Write, 7), r(GET), w(OK5)],
            vec![s("GET", "/a?token=x", b"", 200, b"abc"), s("GET", "/a?token=x", b"", 200, b"hello")],
            vec![],
        ),
        (
            "gap inside a chunk is skipped",
            vec![r(GET), w("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nab"), Ev::Gap(Write, 4), w("gh\r\n0\r\n\r\n")],
            vec![s("GET", "/a?token=x", b"", 200, b"abgh")],
            vec![],
        ),
        (
            "unresolvable chunked gap: message ends truncated, resync at next response",
            vec![r(GET), w("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nab"), Ev::Gap(Write, 0),
                 w("garbage\r\n0\r\n\r\n"), r("GET /n HTTP/1.1\r\n\r\n"), w("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nn")],
            vec![s("GET", "/a?token=x", b"", 200, b"ab"), s("GET", "/n", b"", 200, b"n")],
            vec![E::GapInBody],
        ),
        (
            "gap in a request head: resync at the next request line",
            vec![r("GET /1 HTTP/1.1\r\nX-Lo"), Ev::Gap(Read, 100), r("ng: x\r\n\r\n"), w(OK5),
                 r("GET /2 HTTP/1.1\r\n\r\n"), w("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2")],
            vec![s("GET", "/2", b"", 200, b"2")],
            vec![E::GapInHead, E::ResponseWithoutRequest],
        ),
        (
            "gap in a response head: the next response answers the newest request",
            vec![r("GET /1 HTTP/1.1\r\n\r\n"), w("HTTP/1.1 200 OK\r\nConte"), Ev::Gap(Write, 50), w("nt\r\n\r\nbody"),
                 r("GET /2 HTTP/1.1\r\n\r\n"), w("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2")],
            vec![s("GET", "/2", b"", 200, b"2")],
            vec![E::GapInHead],
        ),
        (
            "resync split across feeds, candidate that is not a head",
            vec![Ev::Gap(Read, 0), r("xx\nGE"), r("T /1 HTTP/1.1\r\n\r\n"), w(OK5)],
            vec![s("GET", "/1", b"", 200, b"hello")],
            vec![E::GapInHead],
        ),
        (
            "attach mid-stream: gap first, then resync",
            vec![Ev::Gap(Read, 0), r("rest of a body\r\nGET body\r\n\nPOST /1 HTTP/1.1\r\nContent-Length: 1\r\n\r\nz"), w(OK5)],
            vec![s("POST", "/1", b"z", 200, b"hello")],
            vec![E::GapInHead],
        ),
    ];
    for (name, evs, want, want_err) in cases {
        let got = run(&evs);
        assert_eq!(summary(&got.ex), want, "{name}");
        assert_eq!(got.errors, want_err, "{name}");
        if want_err
            .iter()
            .any(|e| !matches!(e, E::GapInHead | E::GapInBody | E::ResponseWithoutRequest))
        {
            assert!(got.p.is_ignored(), "{name}: ignored");
            assert_eq!(got.p.buffered_bytes(), 0, "{name}: buffers freed");
        }
    }
}

#[test]
fn ignored_connection_counts_once_and_stays_ignored() {
    let mut evs = vec![r("\x16\x03\x01garbage"), w("\x17\x03\x03garbage")];
    for _ in 0..10 {
        evs.push(r("more garbage \x00\x01\x02"));
        evs.push(w(OK5));
        evs.push(Ev::Gap(Read, 3));
    }
    evs.push(Ev::Close);
    let got = run(&evs);
    assert_eq!(got.errors, [E::NotHttp]);
    assert!(got.p.is_ignored());
    assert_eq!(got.p.buffered_bytes(), 0);
}

#[test]
fn truncation_flags_and_lengths() {
    let got = run(&[
        r("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"),
        Ev::Gap(Read, 4),
        r("hij"),
        w(OK5),
    ]);
    let b = &got.ex[0].request.body;
    assert_eq!(
        (b.len, b.truncated, b.to_vec()),
        (10, true, b"abchij".to_vec())
    );
    assert!(!got.ex[0].response.body.truncated);
    // Close-delimited: a hole of known size counts into the length.
    let got = run(&[
        r(GET),
        w("HTTP/1.1 200 OK\r\n\r\nab"),
        Ev::Gap(Write, 5),
        w("cd"),
        Ev::Close,
    ]);
    let b = &got.ex[0].response.body;
    assert_eq!(
        (b.len, b.truncated, b.to_vec()),
        (9, true, b"abcd".to_vec())
    );
    // A hole past the end of a content-length body: the length is the declared one.
    let got = run(&[
        r(GET),
        w("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab"),
        Ev::Gap(Write, 50),
    ]);
    let b = &got.ex[0].response.body;
    assert_eq!((b.len, b.truncated, b.to_vec()), (4, true, b"ab".to_vec()));
    assert_eq!(got.errors, [E::GapInBody]);
}

#[test]
fn timing_from_first_and_last_bytes() {
    // ts of event i is (i+1)*1000.
    let got = run(&[
        r("POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n"),
        r("a"),
        r("b"),
        w("HTTP/1.1 200 OK\r\nContent-"),
        w("Length: 1\r\n\r\n"),
        w("z"),
    ]);
    let t = got.ex[0].timing;
    assert_eq!(
        (
            t.request_start_ns,
            t.request_end_ns,
            t.response_start_ns,
            t.response_end_ns
        ),
        (1000, 3000, 4000, 6000)
    );
    assert_eq!(t.latency_us(), 5);
}

#[test]
fn bodies_are_zero_copy_slices_of_the_fed_bytes() {
    use super::decode::SLICE_MIN;
    let in_range = |b: &Bytes, p: *const u8| {
        (b.as_ptr() as usize..b.as_ptr() as usize + b.len()).contains(&(p as usize))
    };
    // A large body piece is a slice of its event; a head is always its own
    // copy (its names are lower-cased in it), so it never pins its event.
    let mut p = ConnectionParser::new(HttpLimits::default());
    let mut out = ParserOutput::default();
    p.feed(Read, &Bytes::from_static(GET.as_bytes()), 1, &mut out);
    let head = Bytes::from_static(b"HTTP/1.1 200 OK\r\nContent-Length: 4096\r\nX-K: v\r\n\r\n");
    p.feed(Write, &head, 2, &mut out);
    let body = Bytes::from(vec![b'b'; SLICE_MIN]);
    p.feed(Write, &body, 3, &mut out);
    let e = &out.exchanges[0];
    assert!(in_range(&body, e.response.body.chunks[0].as_ptr()));
    assert!(!in_range(&head, e.response.header("x-k").unwrap().as_ptr()));
    assert_eq!(e.response.header("x-k"), Some(&b"v"[..]));
    // Small pieces are copied: they do not pin the event.
    let mut p = ConnectionParser::new(HttpLimits::default());
    let mut out = ParserOutput::default();
    p.feed(Read, &Bytes::from_static(GET.as_bytes()), 1, &mut out);
    let mut v = b"HTTP/1.1 200 OK\r\nContent-Length: 4000\r\nX-K: v\r\n\r\n".to_vec();
    v.extend(std::iter::repeat_n(b'b', 4000));
    let resp = Bytes::from(v);
    p.feed(Write, &resp, 2, &mut out);
    let e = &out.exchanges[0];
    assert!(!in_range(&resp, e.response.header("x-k").unwrap().as_ptr()));
    assert!(!in_range(&resp, e.response.body.chunks[0].as_ptr()));
    assert_eq!(e.response.body.to_vec(), vec![b'b'; 4000]);
}

/// A piece shorter than `SLICE_MIN` is copied, never kept as a slice of its
/// event: a small event pinned by a slice would hold its whole allocation
/// for a few bytes (and `max_body_held` counts on slices being large).  Every way a kept
/// piece can arrive (request body, response body, chunked data, a head split
/// over events), each in pieces of `SLICE_MIN - 1` bytes or fewer.
#[test]
fn nothing_kept_points_into_an_event_shorter_than_slice_min() {
    use super::decode::SLICE_MIN;
    let body = vec![b'q'; 3 * SLICE_MIN];
    let chunked: Vec<u8> = [
        format!("{:x}\r\n", body.len()).as_bytes(),
        &body[..],
        b"\r\n0\r\n\r\n",
    ]
    .concat();
    let req: Vec<u8> = [
        format!(
            "POST /u HTTP/1.1\r\nHost: h\r\nX-Api-Key: k\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
        &body[..],
    ]
    .concat();
    let resp_len: Vec<u8> = [
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(),
        &body[..],
    ]
    .concat();
    let resp_chunked: Vec<u8> = [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        &chunked[..],
    ]
    .concat();
    for resp in [&resp_len, &resp_chunked] {
        for piece in [1, 7, 100, SLICE_MIN / 2, SLICE_MIN - 1] {
            let mut p = ConnectionParser::new(HttpLimits::default());
            let mut out = ParserOutput::default();
            let mut fed: Vec<Bytes> = Vec::new();
            for (dir, stream) in [(Read, &req), (Write, resp)] {
                for (i, c) in stream.chunks(piece).enumerate() {
                    let ev = Bytes::copy_from_slice(c);
                    p.feed(dir, &ev, i as u64 + 1, &mut out);
                    fed.push(ev);
                }
            }
            assert_eq!(out.exchanges.len(), 1, "piece {piece}");
            let e = &out.exchanges[0];
            assert_eq!(e.request.body.to_vec(), body);
            assert_eq!(e.response.body.to_vec(), body);
            let kept = e
                .request
                .body
                .chunks
                .iter()
                .chain(&e.response.body.chunks)
                .map(|c| c.as_ptr() as usize)
                .chain(
                    [
                        e.request.header("x-api-key"),
                        e.response.header("content-length"),
                    ]
                    .into_iter()
                    .flatten()
                    .map(|v| v.as_ptr() as usize),
                );
            for at in kept {
                assert!(
                    !fed.iter()
                        .any(|ev| (ev.as_ptr() as usize..ev.as_ptr() as usize + ev.len())
                            .contains(&at)),
                    "piece {piece}: a kept piece points into a fed event"
                );
            }
        }
    }
}

#[test]
fn header_values_raw_and_names_lower_case() {
    let got = run(&[
        r(b"GET / HTTP/1.1\r\nX-API-Key: AbC\xff\r\nAuthorization:  Bearer t \r\n\r\n"),
        w(OK5),
    ]);
    let h: Vec<Header> = got.ex[0].request.headers.iter().collect();
    assert_eq!(h[0].name, "x-api-key");
    assert_eq!(h[0].value, b"AbC\xff");
    assert_eq!(h[1].name, "authorization");
    assert_eq!(h[1].value, b"Bearer t");
    assert_eq!(got.ex[0].request.version, "HTTP/1.1");
}

// ---- limits, exactly at and one past each ----

fn small_limits() -> HttpLimits {
    HttpLimits {
        max_body_bytes: 8,
        max_request_body_kept: 8,
        max_head_bytes: 64,
        max_headers: 4,
        max_pending_requests: 3,
    }
}

#[test]
fn body_cap_at_and_past_limit() {
    for (n, truncated, over) in [(8usize, false, 0u64), (9, true, 1)] {
        let body = "b".repeat(n);
        let got = run_with(
            small_limits(),
            &[
                r("GET / HTTP/1.1\r\n\r\n"),
                w(format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n{body}"
                )),
            ],
        );
        let b = &got.ex[0].response.body;
        assert_eq!(
            (b.len, b.kept_len(), b.truncated, got.over_cap),
            (n as u64, 8, truncated, over),
            "{n}"
        );
    }
}

fn head_of_len(n: usize) -> String {
    // "GET / HTTP/1.1\r\nX: " + value + "\r\n\r\n"
    let fixed = "GET / HTTP/1.1\r\nX: \r\n\r\n".len();
    format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "v".repeat(n - fixed))
}

#[test]
fn head_size_at_and_past_limit() {
    let lim = small_limits();
    for split in [false, true] {
        for (n, ok) in [(64usize, true), (65, false)] {
            let h = head_of_len(n);
            assert_eq!(h.len(), n);
            let evs = if split {
                vec![r(&h[..20]), r(&h[20..])]
            } else {
                vec![r(&h)]
            };
            let got = run_with(lim.clone(), &evs);
            if ok {
                assert!(got.errors.is_empty(), "{n}");
                // The parsed head is held until answered: a slice of its
                // event, or the buffer it was gathered in.
                let held = got.p.buffered_bytes();
                if split {
                    assert!(
                        held >= n + CHUNK_OVERHEAD && held <= 2 * n + CHUNK_OVERHEAD,
                        "{held}"
                    );
                } else {
                    assert_eq!(held, n + CHUNK_OVERHEAD);
                }
            } else {
                assert_eq!(got.errors, [E::HeadTooLarge], "{n} split={split}");
            }
        }
    }
    // Without its end in sight: exactly max_head_bytes - 1 is still waiting, max_head_bytes fails.
    let got = run_with(lim.clone(), &[r(&head_of_len(200)[..63])]);
    assert!(got.errors.is_empty());
    assert_eq!(got.p.buffered_bytes(), 63);
    let got = run_with(lim, &[r(&head_of_len(200)[..64])]);
    assert_eq!(got.errors, [E::HeadTooLarge]);
}

#[test]
fn header_count_at_and_past_limit() {
    for (n, ok) in [(4usize, true), (5, false)] {
        let hs: String = (0..n).map(|i| format!("H{i}: v\r\n")).collect();
        let got = run_with(
            small_limits(),
            &[
                r(format!("GET / HTTP/1.1\r\n{hs}\r\n")),
                w("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            ],
        );
        if ok {
            assert_eq!(got.ex[0].request.headers.len(), n);
        } else {
            assert_eq!(got.errors, [E::TooManyHeaders]);
        }
        let got = run_with(
            small_limits(),
            &[
                r("GET / HTTP/1.1\r\n\r\n"),
                w(format!("HTTP/1.1 200 OK\r\n{hs}\r\n")),
            ],
        );
        if ok {
            assert!(got.errors.is_empty());
        } else {
            assert_eq!(got.errors, [E::TooManyHeaders]);
        }
    }
}

#[test]
fn pending_requests_at_and_past_limit() {
    for (n, ok) in [(3usize, true), (4, false)] {
        let reqs: String = (0..n)
            .map(|i| format!("GET /{i} HTTP/1.1\r\n\r\n"))
            .collect();
        let resps: String = (0..n)
            .map(|i| format!("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n{i}"))
            .collect();
        let got = run_with(small_limits(), &[r(reqs), w(resps)]);
        if ok {
            assert_eq!(got.ex.len(), n);
            assert!(got.errors.is_empty());
        } else {
            // The oldest is dropped, its answer skipped: the rest in step.
            assert_eq!(got.errors, [E::TooManyPending]);
            assert!(!got.p.is_ignored());
            let want: Vec<Summary> = (1..n)
                .map(|i| s("GET", &format!("/{i}"), b"", 200, i.to_string().as_bytes()))
                .collect();
            assert_eq!(summary(&got.ex), want);
        }
    }
}

/// Requests pipelined past `max_pending_requests`: the oldest waiting are
/// dropped (counted) and their responses skipped when they come, framed as
/// answers to what they were (a HEAD's has no body), so every response
/// after them still goes to its own request — with the responses in one
/// write or cut anywhere, one arriving while the requests still come, and
/// requests after the overflow paired as usual.
#[test]
fn pipelining_past_the_limit_drops_the_oldest_and_stays_in_step() {
    let lim = small_limits(); // 3 pending
    let methods = [
        "GET", "HEAD", "GET", "HEAD", "HEAD", "GET", "GET", "HEAD", "GET",
    ];
    let req = |i: usize| format!("{} /{i} HTTP/1.1\r\nX-Api-Key: k{i}\r\n\r\n", methods[i]);
    let resp = |i: usize| {
        if methods[i] == "HEAD" {
            // A HEAD's answer announces a body it does not carry.
            "HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n".to_string()
        } else {
            format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nr{i}")
        }
    };
    let n = methods.len();
    let reqs: String = (0..n).map(req).collect();
    let resps: String = (0..n).map(resp).collect();
    let after = "GET /after HTTP/1.1\r\n\r\n";
    let after_resp = "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nra";
    let kept = |from: usize| -> Vec<Summary> {
        let mut v: Vec<Summary> = (from..n)
            .map(|i| {
                let body = if methods[i] == "HEAD" {
                    String::new()
                } else {
                    format!("r{i}")
                };
                s(methods[i], &format!("/{i}"), b"", 200, body.as_bytes())
            })
            .collect();
        v.push(s("GET", "/after", b"", 404, b"ra"));
        v
    };
    let dropped = vec![E::TooManyPending; n - 3];
    for k in 0..=resps.len() {
        let got = run_with(
            lim.clone(),
            &[
                r(&reqs),
                w(&resps[..k]),
                w(&resps[k..]),
                r(after),
                w(after_resp),
            ],
        );
        assert_eq!(summary(&got.ex), kept(n - 3), "responses cut at {k}");
        assert_eq!(got.errors, dropped, "responses cut at {k}");
        assert_eq!(got.p.buffered_bytes(), 0);
    }
    for k in 0..=reqs.len() {
        let got = run_with(
            lim.clone(),
            &[
                r(&reqs[..k]),
                r(&reqs[k..]),
                w(&resps),
                r(after),
                w(after_resp),
            ],
        );
        assert_eq!(summary(&got.ex), kept(n - 3), "requests cut at {k}");
    }
    // A response being read when the limit passes: its request is kept
    // (it is being answered), the next oldest are dropped.
    let r0 = resp(0);
    let (head0, rest0) = r0.split_at(r0.len() - 1);
    let got = run_with(
        lim.clone(),
        &[
            r(req(0) + &req(1) + &req(2)),
            w(head0),
            r(req(3) + &req(4)),
            w(rest0.to_string() + &resp(1) + &resp(2) + &resp(3) + &resp(4)),
        ],
    );
    let want = vec![
        s("GET", "/0", b"", 200, b"r0"),
        s("HEAD", "/3", b"", 200, b""),
        s("HEAD", "/4", b"", 200, b""),
    ];
    assert_eq!(summary(&got.ex), want);
    assert_eq!(got.errors, [E::TooManyPending, E::TooManyPending]);
}

#[test]
fn error_reasons_are_fixed_labels() {
    let labels: std::collections::HashSet<_> = E::ALL.iter().map(|e| e.as_str()).collect();
    assert_eq!(labels.len(), E::ALL.len());
    assert!(labels.iter().all(|l| l
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())));
}

/// Requests keep their first `max_request_body_kept` bytes, exactly: the
/// default 64 KiB with content-length and chunked framing, split around the
/// limit and the head's end.
#[test]
fn request_body_kept_at_and_past_limit() {
    use super::limits::MAX_REQUEST_BODY_KEPT as K;
    for n in [K, K + 1] {
        for chunked in [false, true] {
            let body: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
            let mut req = if chunked {
                b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec()
            } else {
                format!("POST /up HTTP/1.1\r\nContent-Length: {n}\r\n\r\n").into_bytes()
            };
            let body_start = req.len();
            if chunked {
                // Two chunks, the first ending just before the limit.
                let (a, b) = body.split_at(K - 1);
                req.extend(format!("{:x}\r\n", a.len()).bytes());
                req.extend_from_slice(a);
                req.extend(format!("\r\n{:x}\r\n", b.len()).bytes());
                req.extend_from_slice(b);
                req.extend_from_slice(b"\r\n0\r\n\r\n");
            } else {
                req.extend_from_slice(&body);
            }
            let splits = [
                None,
                Some(body_start - 1),
                Some(body_start),
                Some(body_start + 1),
                Some(req.len() - 12),
                Some(req.len() - 8),
                Some(req.len() - 6),
                Some(req.len() - 1),
            ];
            for split in splits {
                let evs = match split {
                    None => vec![r(&req), w(OK5)],
                    Some(at) => vec![r(&req[..at]), r(&req[at..]), w(OK5)],
                };
                let got = run(&evs);
                let ctx = format!("n={n} chunked={chunked} split={split:?}");
                assert!(got.errors.is_empty(), "{ctx}: {:?}", got.errors);
                let b = &got.ex[0].request.body;
                assert_eq!(b.len, n as u64, "{ctx}");
                assert_eq!(b.to_vec(), body[..K], "{ctx}");
                // Seen whole (not truncated), kept in part.
                assert!(!b.truncated, "{ctx}");
                assert_eq!(b.is_partial(), n > K, "{ctx}");
                assert_eq!(got.not_kept, (n - K) as u64, "{ctx}");
                assert_eq!(got.over_cap, 0, "{ctx}");
                assert_eq!(got.p.buffered_bytes(), 0, "{ctx}");
            }
        }
    }
}

/// The same at a small limit, the request cut at every byte offset; responses
/// keep up to `max_body_bytes` whatever the request limit.
#[test]
fn request_body_limit_every_split() {
    let lim = HttpLimits {
        max_request_body_kept: 16,
        max_body_bytes: 64,
        ..HttpLimits::default()
    };
    for n in [16usize, 17] {
        let body: Vec<u8> = (0..n).map(|i| b'a' + i as u8).collect();
        let mut req = format!("POST / HTTP/1.1\r\nContent-Length: {n}\r\n\r\n").into_bytes();
        req.extend_from_slice(&body);
        let resp_body = "r".repeat(40);
        let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n{resp_body}");
        for at in 0..=req.len() {
            let got = run_with(lim.clone(), &[r(&req[..at]), r(&req[at..]), w(&resp)]);
            assert!(got.errors.is_empty(), "n={n} at={at}");
            let e = &got.ex[0];
            assert_eq!(e.request.body.to_vec(), body[..16], "n={n} at={at}");
            assert_eq!(e.request.body.is_partial(), n > 16);
            assert!(!e.request.body.truncated);
            assert_eq!(got.not_kept, (n - 16) as u64);
            assert_eq!(e.response.body.to_vec(), resp_body.as_bytes());
            assert_eq!(got.over_cap, 0);
        }
    }
    // A request limit above the body cap: the body cap decides, counted as over cap.
    let lim = HttpLimits {
        max_request_body_kept: 100,
        max_body_bytes: 8,
        ..HttpLimits::default()
    };
    let got = run_with(
        lim,
        &[
            r("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789"),
            w(OK5),
        ],
    );
    assert_eq!(got.ex[0].request.body.to_vec(), b"01234567");
    assert!(got.ex[0].request.body.truncated);
    assert_eq!((got.over_cap, got.not_kept), (2, 0));
}

/// Memory is counted as held, not as kept: many tiny body pieces are gathered
/// into blocks (not one event each), and a small piece of a large event does
/// not pin it.
#[test]
fn held_memory_is_gathered_and_bounded() {
    use super::decode::{GATHER_BLOCK, MIN_GATHER_BLOCK, SLICE_MIN};
    let mut p = ConnectionParser::new(HttpLimits::default());
    let mut out = ParserOutput::default();
    p.feed(
        Read,
        &Bytes::from_static(b"POST / HTTP/1.1\r\nContent-Length: 100000\r\n\r\n"),
        1,
        &mut out,
    );
    let base = p.buffered_bytes();
    // 1,000 pieces of 50 bytes, each its own allocation.
    for i in 0..1000 {
        p.feed(Read, &Bytes::from(vec![b'x'; 50]), 2 + i, &mut out);
    }
    let held = p.buffered_bytes() - base;
    assert!(
        held <= 50_000 + GATHER_BLOCK + 16 * CHUNK_OVERHEAD,
        "{held} for 50,000 bytes in 50-byte pieces"
    );
    // A small body holds about its size, not a whole block.
    let mut q = ConnectionParser::new(HttpLimits::default());
    q.feed(
        Read,
        &Bytes::from_static(b"POST / HTTP/1.1\r\nContent-Length: 300\r\n\r\n"),
        1,
        &mut out,
    );
    let base = q.buffered_bytes();
    q.feed(Read, &Bytes::from(vec![b'x'; 100]), 2, &mut out);
    assert_eq!(q.buffered_bytes() - base, MIN_GATHER_BLOCK);
    q.feed(Read, &Bytes::from(vec![b'x'; 200]), 3, &mut out);
    // The first block filled, a second one as large as what was kept.
    assert_eq!(
        q.buffered_bytes() - base,
        2 * MIN_GATHER_BLOCK + CHUNK_OVERHEAD
    );
    // A piece at the slice threshold is sliced and counted as its whole event
    // (and the gathered bytes before it become a chunk of their own).
    let before = p.buffered_bytes();
    p.feed(Read, &Bytes::from(vec![b'y'; SLICE_MIN]), 9000, &mut out);
    assert_eq!(p.buffered_bytes() - before, SLICE_MIN + 2 * CHUNK_OVERHEAD);
    // An upload keeping 100 bytes of a 64 KiB event copies them into a block
    // sized to what may still be kept: the event is not pinned.
    let mut p = ConnectionParser::new(HttpLimits {
        max_request_body_kept: 100,
        ..HttpLimits::default()
    });
    p.feed(
        Read,
        &Bytes::from_static(b"POST / HTTP/1.1\r\nContent-Length: 65536\r\n\r\n"),
        1,
        &mut out,
    );
    let base = p.buffered_bytes();
    p.feed(Read, &Bytes::from(vec![b'z'; 64 * 1024]), 2, &mut out);
    assert_eq!(p.buffered_bytes() - base, 100);
    assert_eq!(out.request_body_bytes_not_kept, 64 * 1024 - 100);
}

/// A long body streamed in 16 KiB feeds: memory stays at the cap, the length is right.
#[test]
fn hundred_mib_body_bounded() {
    const TOTAL: u64 = 100 * 1024 * 1024;
    const FEED: usize = 16 * 1024;
    for chunked in [false, true] {
        let limits = HttpLimits::default();
        let mut p = ConnectionParser::new(limits.clone());
        let mut out = ParserOutput::default();
        p.feed(
            Read,
            &Bytes::from_static(b"POST /up HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"),
            1,
            &mut out,
        );
        let head = if chunked {
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_string()
        } else {
            format!("HTTP/1.1 200 OK\r\nContent-Length: {TOTAL}\r\n\r\n")
        };
        p.feed(Write, &Bytes::from(head), 2, &mut out);
        let payload = Bytes::from(vec![b'x'; FEED]);
        let framed = {
            let mut v = format!("{FEED:x}\r\n").into_bytes();
            v.extend_from_slice(&payload);
            v.extend_from_slice(b"\r\n");
            Bytes::from(v)
        };
        let mut max_buffered = 0;
        for i in 0..TOTAL / FEED as u64 {
            p.feed(
                Write,
                if chunked { &framed } else { &payload },
                3 + i,
                &mut out,
            );
            max_buffered = max_buffered.max(p.buffered_bytes());
        }
        if chunked {
            p.feed(Write, &Bytes::from_static(b"0\r\n\r\n"), u64::MAX, &mut out);
        }
        // The kept bytes, plus 16 KiB feed slices' overhead (under 2 %).
        assert!(
            max_buffered <= limits.max_body_bytes * 51 / 50 + 2 * limits.max_head_bytes,
            "{max_buffered}"
        );
        assert_eq!(out.exchanges.len(), 1);
        let b = &out.exchanges[0].response.body;
        assert_eq!(b.len, TOTAL);
        assert_eq!(b.kept_len(), limits.max_body_bytes);
        assert!(b.truncated);
        assert_eq!(
            out.body_bytes_over_cap,
            TOTAL - limits.max_body_bytes as u64
        );
        assert_eq!(p.buffered_bytes(), 0);
    }
}

/// Baseline throughput for the benchmark work:
/// `cargo test --release -p sensor --lib http::tests::throughput -- --ignored --nocapture`
#[test]
#[ignore]
fn throughput() {
    for line in super::throughput::measure() {
        println!("{line}");
    }
}

/// A response body the caller did not want (asked of its complete request)
/// keeps no byte and says so; one answering a request still incomplete, or
/// one that was wanted, is kept and does not.  The pipeline skips the leak
/// stage's second look at a request on `discarded`.
#[test]
fn unwanted_response_bodies_are_discarded_and_marked() {
    let none = &|_: &crate::http::types::Request| false;
    let feed = |p: &mut ConnectionParser, out: &mut ParserOutput, dir, d: &[u8]| {
        p.feed_with(dir, FeedData::Borrowed(d), 1, out, none)
    };
    let mut p = ConnectionParser::new(HttpLimits::default());
    let mut out = ParserOutput::default();
    feed(&mut p, &mut out, Read, b"GET /a HTTP/1.1\r\n\r\n");
    feed(&mut p, &mut out, Write, OK5.as_bytes());
    // The request's body is still arriving when its response starts.
    feed(
        &mut p,
        &mut out,
        Read,
        b"POST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nx",
    );
    feed(&mut p, &mut out, Write, OK5.as_bytes());
    feed(&mut p, &mut out, Read, b"y");
    let got: Vec<_> = out
        .exchanges
        .iter()
        .map(|e| {
            (
                e.request.target.as_str(),
                e.response.body.discarded,
                e.response.body.to_vec(),
                e.response.body.len,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![("/a", true, vec![], 5), ("/b", false, b"hello".to_vec(), 5)]
    );
    let run = run(&[r(GET), w(OK5)]);
    assert!(!run.ex[0].response.body.discarded);
}

/// A built head (HTTP/2) counts the allocation it was built in, not only
/// the bytes written into it: buffers start at a typical head's size.
#[test]
fn built_headers_count_their_allocation() {
    let mut b = super::types::HeadersBuilder::with_capacity(256);
    b.push("x", b"y");
    let h = b.finish();
    // Room for 16 spans comes with the builder, as in every built head.
    let spans = 16 * std::mem::size_of::<super::types::HeaderSpan>();
    assert!(h.held() >= 256 + spans, "{}", h.held());
}

/// Fields after a chunked body's last chunk join their message's headers
/// (after the head's, in order), whatever the split; LF-only lines too.
#[test]
fn chunked_trailers_join_the_headers_at_every_split() {
    let req = "POST /t HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\nX-Req-Sig: s1\r\n\r\n";
    let resp = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Head: h\r\n\r\n3\r\nxyz\r\n0\r\nX-Debug-Token: t0k\r\nServer-Timing: db;dur=5\n\r\n";
    for at in 0..=resp.len() {
        let got = run(&[r(req), w(&resp[..at]), w(&resp[at..])]);
        assert!(got.errors.is_empty(), "at={at}: {:?}", got.errors);
        assert_eq!(got.ex.len(), 1, "at={at}");
        let e = &got.ex[0];
        assert_eq!(e.response.body.to_vec(), b"xyz");
        let names: Vec<&str> = e.response.headers.iter().map(|h| h.name).collect();
        assert_eq!(
            names,
            [
                "transfer-encoding",
                "x-head",
                "x-debug-token",
                "server-timing"
            ],
            "at={at}"
        );
        assert_eq!(e.response.header("x-debug-token"), Some(&b"t0k"[..]));
        assert_eq!(e.request.header("x-req-sig"), Some(&b"s1"[..]));
    }
    // No trailer: the headers are the head's, as before.
    let got = run(&[
        r(req),
        w("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ]);
    assert_eq!(got.ex[0].response.headers.len(), 1);
}

/// A trailer section that does not parse as fields (or has more than
/// `max_headers`) adds nothing, and the exchange is kept: its body was whole.
#[test]
fn trailers_that_do_not_parse_are_ignored() {
    let lim = HttpLimits {
        max_headers: 2,
        ..HttpLimits::default()
    };
    for trailer in [
        "no colon here\r\n",
        "A: 1\r\nB: 2\r\nC: 3\r\n",
        "bad name: x\r\n",
    ] {
        let resp = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n{trailer}\r\n"
        );
        let got = run_with(lim.clone(), &[r(GET), w(&resp)]);
        assert!(got.errors.is_empty(), "{trailer:?}: {:?}", got.errors);
        assert_eq!(got.ex.len(), 1, "{trailer:?}");
        assert_eq!(got.ex[0].response.headers.len(), 1, "{trailer:?}");
        assert_eq!(got.ex[0].response.body.to_vec(), b"z");
    }
}

/// A connection that closes inside a length- or chunk-framed response body
/// (a client hanging up on a download, an SSE stream cut) still gives its
/// exchange, cut: the response as far as it got, marked truncated, and one
/// `closed_mid_message`.  Every split point of the body.
#[test]
fn close_inside_a_framed_response_keeps_it_cut() {
    let body = "data: key=k-0123456789\n\n".repeat(3);
    let heads = [
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            body.len() + 100
        ),
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_string(),
    ];
    for head in &heads {
        let chunked = head.contains("chunked");
        for at in 0..body.len() {
            let sent = if chunked {
                format!("{at:x}\r\n{}", &body[..at])
            } else {
                body[..at].to_string()
            };
            let got = run(&[r(GET), w(format!("{head}{sent}")), Ev::Close]);
            assert_eq!(got.errors, [E::ClosedMidMessage], "at={at}");
            assert_eq!(got.ex.len(), 1, "at={at}");
            let resp = &got.ex[0].response;
            assert_eq!(resp.body.to_vec(), &body.as_bytes()[..at], "at={at}");
            assert!(resp.body.truncated, "at={at}");
            assert_eq!(got.p.buffered_bytes(), 0);
        }
    }
}

/// A request cut inside its body, with no response: nothing to pair, but the
/// cut is counted.  A response cut inside its head gives nothing (no status).
#[test]
fn close_inside_a_request_body_or_a_response_head() {
    let got = run(&[
        r("POST /up HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc"),
        Ev::Close,
    ]);
    assert!(got.ex.is_empty());
    assert_eq!(got.errors, [E::ClosedMidMessage]);
    let got = run(&[r(GET), w("HTTP/1.1 200 OK\r\nContent-Le"), Ev::Close]);
    assert!(got.ex.is_empty());
    assert!(got.errors.is_empty(), "{:?}", got.errors);
}

// ---- connections joined in the middle of a message ----

/// A keep-alive conversation of `n` messages, each request and response
/// written as SSL calls (heads alone, bodies in 16-byte calls), bodies that
/// hold text shaped like heads in the middle of their calls.  Responses
/// carry their request's tag (`r<i>`) first.
fn conversation(n: usize) -> Vec<(Kind, usize, bool, Vec<u8>)> {
    let mut evs = Vec::new();
    let split = |evs: &mut Vec<(Kind, usize, bool, Vec<u8>)>,
                 kind: Kind,
                 i: usize,
                 head: String,
                 body: Vec<u8>| {
        evs.push((kind, i, true, head.into_bytes()));
        for c in body.chunks(16) {
            evs.push((kind, i, false, c.to_vec()));
        }
    };
    for i in 0..n {
        // Request bodies hold a request line, response bodies a status
        // line and a whole response head, never at a call's start.
        if i % 3 == 1 {
            let body =
                format!("form=1&x=2\r\nGET /fake{i} HTTP/1.1\r\nHost: f\r\n\r\nend").into_bytes();
            let head = format!(
                "POST /{i} HTTP/1.1\r\nX-Api-Key: k{i}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            split(&mut evs, Kind::Req, i, head, body);
        } else {
            split(
                &mut evs,
                Kind::Req,
                i,
                format!("GET /{i} HTTP/1.1\r\nX-Api-Key: k{i}\r\n\r\n"),
                Vec::new(),
            );
        }
        let text = format!(
            "r{i}: the log says\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nGET /fake HTTP/1.1\r\n\r\nand more"
        );
        if i % 4 == 2 {
            let body = format!("{:x}\r\n{text}\r\n0\r\n\r\n", text.len()).into_bytes();
            split(
                &mut evs,
                Kind::Resp,
                i,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".into(),
                body,
            );
        } else {
            split(
                &mut evs,
                Kind::Resp,
                i,
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", text.len()),
                text.into_bytes(),
            );
        }
    }
    evs
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Req,
    Resp,
}

/// The events the sensor gets of `calls`: each call cut in `chunk`-byte
/// events, later ones continuing it, on the side `role` gives its kind.
fn as_events(calls: &[(Kind, usize, bool, Vec<u8>)], role: Role, chunk: usize) -> Vec<Ev> {
    let mut evs = Vec::new();
    for (kind, _, _, bytes) in calls {
        let read = (*kind == Kind::Req) == (role == Role::Server);
        for (j, c) in bytes.chunks(chunk).enumerate() {
            evs.push(match (read, j) {
                (true, 0) => Ev::R(c.to_vec()),
                (false, 0) => Ev::W(c.to_vec()),
                (true, _) => Ev::Rc(c.to_vec()),
                (false, _) => Ev::Wc(c.to_vec()),
            });
        }
    }
    evs
}

/// The sensor starts at every call of a keep-alive conversation, in the
/// middle of requests (uploads) and of responses (content-length and
/// chunked), on either role, with calls cut in events down to a byte each:
/// every request it sees from its start is paired with its own response,
/// nothing else is, text shaped like heads in the bodies is never taken for
/// one, and a direction that joined mid-message counts one resync.
#[test]
fn joined_at_every_call_every_request_seen_whole_is_paired_with_its_own_response() {
    let n = 6;
    let calls = conversation(n);
    for role in [Role::Server, Role::Client] {
        for chunk in [1, 5, usize::MAX] {
            for join in 0..calls.len() {
                let seen = &calls[join..];
                let got = run(&as_events(seen, role, chunk));
                let ctx = format!("{role:?} chunk {chunk} joined at call {join}");
                let want: Vec<String> = (0..n)
                    .filter(|i| {
                        seen.iter()
                            .any(|(k, m, start, _)| *k == Kind::Req && m == i && *start)
                    })
                    .map(|i| format!("/{i}"))
                    .collect();
                let paired: Vec<String> = got.ex.iter().map(|e| e.request.target.clone()).collect();
                assert_eq!(paired, want, "{ctx}");
                for e in &got.ex {
                    let tag = format!("r{}:", &e.request.target[1..]);
                    assert!(
                        e.response.body.to_vec().starts_with(tag.as_bytes()),
                        "{ctx}: {e:?}"
                    );
                }
                assert!(
                    got.errors.iter().all(|e| *e == E::ResponseWithoutRequest),
                    "{ctx}: {:?}",
                    got.errors
                );
                assert!(!got.p.is_ignored(), "{ctx}");
                // Joined mid-message: that direction resynchronised once, at
                // the next message's start (if one came).
                let (kind, msg, start, _) = &calls[join];
                let later_start = seen[1..].iter().any(|(k, _, s, _)| k == kind && *s);
                let want_resync = u64::from(!*start && later_start);
                assert_eq!(
                    got.resyncs.joined_midway, want_resync,
                    "{ctx} (message {msg})"
                );
                assert_eq!(got.resyncs.after_gap, 0, "{ctx}");
            }
        }
    }
}

/// Joined in the middle of an upload: its answer is never paired with the
/// next request — a client that waits for it (the answer is dropped: no
/// request was seen for it) or one that pipelines the next request right
/// behind the upload (the answer still to come is owed to the upload).  A
/// response that came before the upload's tail answered it already.
#[test]
fn the_answer_to_an_upload_joined_midway_is_not_the_next_requests() {
    let tail = "aaaaaaaaaaaaaaaa\r\nGET /fake HTTP/1.1\r\n\r\n";
    let next = "GET /next HTTP/1.1\r\nX-Api-Key: kn\r\n\r\n";
    let upload_answer = "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nup";
    let next_answer = "HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\nkn";
    let want = vec![s("GET", "/next", b"", 401, b"kn")];
    for k in 1..tail.len() {
        let waits = run(&[
            r(&tail[..k]),
            Ev::Rc(tail[k..].into()),
            w(upload_answer),
            r(next),
            w(next_answer),
        ]);
        assert_eq!(summary(&waits.ex), want, "waits, tail cut at {k}");
        assert_eq!(waits.errors, [E::ResponseWithoutRequest]);
        let pipelines = run(&[
            r(&tail[..k]),
            Ev::Rc(tail[k..].into()),
            r(next),
            w(upload_answer),
            w(next_answer),
        ]);
        assert_eq!(summary(&pipelines.ex), want, "pipelines, tail cut at {k}");
        assert_eq!(pipelines.errors, [E::ResponseWithoutRequest]);
        let answered_early = run(&[
            w(upload_answer),
            r(&tail[..k]),
            Ev::Rc(tail[k..].into()),
            r(next),
            w(next_answer),
        ]);
        assert_eq!(
            summary(&answered_early.ex),
            want,
            "answered early, tail cut at {k}"
        );
    }
    // The client's side of the same.
    let got = run(&[w(tail), w(next), r(upload_answer), r(next_answer)]);
    assert_eq!(summary(&got.ex), want);
    assert_eq!(got.p.role(), Some(Role::Client));
}

/// Joined in the middle of a download, the next request is paired with its
/// own response; the download's tail, head-shaped text in it included, is
/// skipped.
#[test]
fn joined_mid_download_the_next_exchange_is_paired() {
    let tail = "0123456789\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n0123456789";
    let next = "GET /leak HTTP/1.1\r\nX-Api-Key: kn\r\n\r\n";
    let next_answer = "HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\nkn";
    for k in 1..tail.len() {
        // The download's tail as the rest of a call, then another call.
        let evs = [
            w(&tail[..k]),
            Ev::Wc(tail[k..].into()),
            w("more of the body"),
            r(next),
            w(next_answer),
            r(next),
            w(next_answer),
        ];
        let got = run(&evs);
        assert_eq!(
            summary(&got.ex),
            vec![s("GET", "/leak", b"", 400, b"kn"); 2],
            "cut at {k}"
        );
        assert!(got.errors.is_empty(), "{:?}", got.errors);
        assert_eq!(got.resyncs.joined_midway, 1);
    }
}

/// A direction waits for a message start at most MAX_WAIT_FOR_START_BYTES:
/// then its connection is given up (to be muted) — `not_http` when no head
/// was ever seen, `no_message_start` when the other side spoke HTTP.  Up to
/// the bound it waits, holding nothing.
#[test]
fn waiting_for_a_start_is_bounded() {
    use super::limits::MAX_WAIT_FOR_START_BYTES as MAX;
    let block = Bytes::from(vec![b'z'; 16 << 20]);
    for other_side_http in [false, true] {
        let mut p = ConnectionParser::new(HttpLimits::default());
        let mut out = ParserOutput::default();
        if other_side_http {
            p.feed(
                Read,
                &Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n"),
                1,
                &mut out,
            );
        }
        let mut fed = 0u64;
        while fed + block.len() as u64 <= MAX {
            p.feed(Write, &block, 2, &mut out);
            fed += block.len() as u64;
            assert!(p.buffered_bytes() <= 1024, "{}", p.buffered_bytes());
        }
        assert_eq!(fed, MAX);
        assert!(!p.is_ignored() && out.errors.is_empty());
        p.feed(Write, &Bytes::from_static(b"z"), 3, &mut out);
        assert!(p.is_ignored());
        let want = if other_side_http {
            E::NoMessageStart
        } else {
            E::NotHttp
        };
        assert_eq!(out.errors, [want]);
    }
}

// ---- interim (1xx) responses ----

/// Findings of each exchange (the leak stage on the pairs as the pipeline
/// makes them), and each pair's `--pairs` line.
fn leak_findings(ex: &[Exchange]) -> (Vec<crate::finding::Finding>, Vec<String>) {
    use crate::http::types::{ConnInfo, HttpPair, ProcessInfo};
    use crate::leak::{config::LeakConfig, fingerprint::Fingerprinter, Detector};
    let detector = Detector::new(LeakConfig::default(), Fingerprinter::new([3; 32]));
    let mut findings = Vec::new();
    let mut lines = Vec::new();
    for (i, e) in ex.iter().enumerate() {
        let pair = HttpPair {
            exchange: e.clone(),
            process: std::sync::Arc::new(ProcessInfo::default()),
            conn: ConnInfo::default(),
            seq: i as u64 + 1,
            ts: chrono::DateTime::from_timestamp_nanos(0),
        };
        let got = detector.inspect(&pair).findings;
        let record = crate::outputs::pairs::pair_record(&pair, &detector, &got);
        lines.push(serde_json::to_string(&record).unwrap());
        findings.extend(got);
    }
    (findings, lines)
}

const INTERIM_KEY: &str = "ak_live_7Qm2Zp9Lx4Rt8Vw3Ny6B";

/// A key echoed only in an interim response's headers (a 103 Early Hints'
/// Link URL, a 100 Continue's header) reaches the leak stage with the
/// final response, at every split of the response stream; its finding is a
/// header sink whose `response.status` is the interim's; the pairs line
/// never has it.
#[test]
fn interim_heads_reach_the_leak_stage_at_every_split() {
    let req = format!(
        "POST /upload HTTP/1.1\r\nX-Api-Key: {INTERIM_KEY}\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    );
    let resp = format!(
        "HTTP/1.1 100 Continue\r\nX-Seen-Key: {INTERIM_KEY}\r\n\r\n\
         HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\nLink: </app.js?api_key={INTERIM_KEY}>; rel=preload\r\n\r\n\
         HTTP/1.1 200 OK\r\nContent-Length: 2\r\nLink: </s.css>; rel=preload\r\n\r\nok"
    );
    for k in 0..=resp.len() {
        let got = run(&[r(&req), w(&resp[..k]), w(&resp[k..]), r("hi")]);
        assert_eq!(
            summary(&got.ex),
            [s("POST", "/upload", b"hi", 200, b"ok")],
            "cut at {k}"
        );
        let interim = got.ex[0].response.interim();
        let statuses: Vec<u16> = interim.iter().map(|h| h.status).collect();
        assert_eq!(statuses, [100, 103], "cut at {k}");
        assert_eq!(interim[1].headers.get_all("link").count(), 2);
        assert_eq!(got.ex[0].response.headers.len(), 2, "the final head's own");
        let (findings, lines) = leak_findings(&got.ex);
        let mut sinks: Vec<(u16, Option<String>)> = findings
            .iter()
            .map(|f| (f.response.status, f.sink.name.clone()))
            .collect();
        sinks.sort();
        assert_eq!(
            sinks,
            [(100, Some("x-seen-key".into())), (103, Some("link".into()))],
            "cut at {k}"
        );
        for f in &findings {
            assert_eq!(f.sink.location, crate::finding::SinkLocation::Header);
        }
        let json = serde_json::to_string(&findings).unwrap() + &lines.concat();
        assert!(!json.contains(INTERIM_KEY), "{json}");
    }
}

/// Interim heads kept per response are bounded in count and bytes; those
/// past the bounds are counted, not kept; one without headers is neither.
#[test]
fn interim_heads_are_bounded() {
    use super::limits::{MAX_INTERIM_BYTES, MAX_INTERIM_HEADS};
    let hint = "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n";
    let plain = "HTTP/1.1 100 Continue\r\n\r\n";
    let final_ = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    let many = plain.to_string() + &hint.repeat(MAX_INTERIM_HEADS + 2) + final_;
    let got = run(&[r(GET), w(&many)]);
    assert_eq!(got.ex[0].response.interim().len(), MAX_INTERIM_HEADS);
    assert_eq!(got.interim_not_kept, 2);
    // One large hint fits; the next that would pass the bytes is not kept.
    let link = format!("Link: </{}>\r\n", "x".repeat(100));
    let large = |n: usize| format!("HTTP/1.1 103 Early Hints\r\n{}\r\n", link.repeat(n));
    let per_hint = MAX_INTERIM_BYTES / link.len() * 2 / 3;
    let got = run(&[r(GET), w(large(per_hint) + &large(per_hint) + final_)]);
    assert_eq!(got.ex[0].response.interim().len(), 1);
    assert_eq!(got.interim_not_kept, 1);
    assert!(got.ex[0].response.headers.held() <= 2 * MAX_INTERIM_BYTES);
}

/// HTTP/2: an interim HEADERS (:status 103) before the response's reaches
/// the leak stage with it, as in HTTP/1.x.
#[test]
fn http2_interim_heads_reach_the_leak_stage() {
    use super::h2::tests::Conn;
    let mut c = Conn::new();
    c.request(
        1,
        "GET",
        "/v1/page",
        &[("x-api-key", INTERIM_KEY.as_bytes())],
        None,
    );
    let link = format!("</app.js?api_key={INTERIM_KEY}>; rel=preload");
    c.interim(1, 103, &[("link", link.as_bytes())]);
    c.response(1, 200, &[("content-type", b"text/html")], b"<html></html>");
    let got = run(&[r(&c.client), w(&c.server)]);
    assert_eq!(got.ex.len(), 1);
    let interim = got.ex[0].response.interim();
    assert_eq!(interim.len(), 1);
    assert_eq!(interim[0].status, 103);
    let (findings, lines) = leak_findings(&got.ex);
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].response.status, 103);
    assert_eq!(findings[0].sink.name.as_deref(), Some("link"));
    let json = serde_json::to_string(&findings).unwrap() + &lines.concat();
    assert!(!json.contains(INTERIM_KEY));
}

/// A leak in a request pipelined past the pending limit is found: the
/// requests it pushed out are dropped, its own answer is its own.
#[test]
fn a_leak_in_a_request_after_the_pending_overflow_is_found() {
    let n = 100;
    let key = |i: usize| format!("ak_pipe_{i:03}_Zq8Lm3Xv7Rt2Wn5");
    let reqs: String = (0..n)
        .map(|i| format!("GET /{i} HTTP/1.1\r\nX-Api-Key: {}\r\n\r\n", key(i)))
        .collect();
    // Each answer echoes its own request's key.
    let resps: String = (0..n)
        .map(|i| {
            let body = format!("{{\"bad key\":\"{}\"}}", key(i));
            format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        })
        .collect();
    let got = run(&[r(&reqs), w(&resps)]);
    let kept = super::limits::MAX_PENDING_REQUESTS;
    assert_eq!(got.ex.len(), kept);
    assert_eq!(got.errors, vec![E::TooManyPending; n - kept]);
    let (findings, _) = leak_findings(&got.ex);
    assert_eq!(findings.len(), kept);
    // Each finding's request is the one whose key came back.
    for (f, e) in findings.iter().zip(&got.ex) {
        let i: usize = e.request.target[1..].parse().unwrap();
        assert!(i >= n - kept);
        assert_eq!(f.request.path, e.request.target);
        assert_eq!(f.credential.length, key(i).len());
    }
}

/// A role guessed from a direction's first bytes that may be a body's (a
/// connection joined midway) is not told before a head settles it:
/// `--role` acts on it (mutes the connection).  Bytes shaped strictly like
/// a start (a known method and a target) tell it at once, as before.
#[test]
fn a_role_guessed_from_body_like_first_bytes_is_not_told() {
    let got = run(&[w("hello world, some text of a body without a line end")]);
    assert_eq!(got.p.role(), None);
    let got = run(&[
        w("hello world, some text of a body without a line end"),
        r(GET),
        w(OK5),
    ]);
    assert_eq!(got.p.role(), Some(Role::Server));
    assert_eq!(
        summary(&got.ex),
        [s("GET", "/a?token=x", b"", 200, b"hello")]
    );
    assert_eq!(run(&[r("GET /x HT")]).p.role(), Some(Role::Server));
    assert_eq!(run(&[r("HTTP/1.1 200")]).p.role(), Some(Role::Client));
}
