//! HTTP/2 behaviour: frames built here, header blocks from an HPACK encoder
//! (dynamic table in use) or the RFC 7541 examples (Huffman), fed through
//! `ConnectionParser` exactly as capture feeds it.

use super::frame::{self, FrameHead, PREFACE};
use super::*;
use bytes::Bytes;

use crate::capture::event::Direction::{Read, Write};
use crate::http::tests::{run_with, Ev, Run};
use crate::http::ParseErrorReason as E;

/// One frame's bytes.
pub(crate) use super::frame::encode as frame;

pub(crate) fn settings(pairs: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    for (id, v) in pairs {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    frame(frame::SETTINGS, 0, 0, &p)
}

/// Both ends of a connection: the client's and the server's encoders.
pub(crate) struct Conn {
    pub client: Vec<u8>,
    pub server: Vec<u8>,
    enc_client: crate::http::h2::hpack::Encoder,
    enc_server: crate::http::h2::hpack::Encoder,
}

impl Conn {
    pub(crate) fn new() -> Conn {
        let mut client = PREFACE.to_vec();
        client.extend(settings(&[(2, 0), (4, 65535)]));
        let mut server = settings(&[(3, 128)]);
        server.extend(frame(frame::SETTINGS, frame::FLAG_ACK, 0, &[]));
        client.extend(frame(frame::SETTINGS, frame::FLAG_ACK, 0, &[]));
        Conn {
            client,
            server,
            enc_client: crate::http::h2::hpack::Encoder::new(),
            enc_server: crate::http::h2::hpack::Encoder::new(),
        }
    }

    pub(crate) fn request(
        &mut self,
        stream: u32,
        method: &str,
        path: &str,
        headers: &[(&str, &[u8])],
        body: Option<&[u8]>,
    ) -> &mut Self {
        let mut fields: Vec<(&[u8], &[u8])> = vec![
            (b":method", method.as_bytes()),
            (b":scheme", b"https"),
            (b":authority", b"api.example"),
            (b":path", path.as_bytes()),
        ];
        fields.extend(headers.iter().map(|(n, v)| (n.as_bytes(), *v)));
        let block = self.enc_client.encode(fields);
        let flags = frame::FLAG_END_HEADERS
            | if body.is_none() {
                frame::FLAG_END_STREAM
            } else {
                0
            };
        self.client
            .extend(frame(frame::HEADERS, flags, stream, &block));
        if let Some(body) = body {
            self.client
                .extend(frame(frame::DATA, frame::FLAG_END_STREAM, stream, body));
        }
        self
    }

    /// A request of exactly `fields` (pseudo-headers included, as given)
    /// that ends its stream: requests `request` would not write.
    pub(crate) fn request_of_fields(
        &mut self,
        stream: u32,
        fields: &[(&[u8], &[u8])],
    ) -> &mut Self {
        let block = self.enc_client.encode(fields.iter().copied());
        self.client.extend(frame(
            frame::HEADERS,
            frame::FLAG_END_HEADERS | frame::FLAG_END_STREAM,
            stream,
            &block,
        ));
        self
    }

    /// An interim (1xx) response head on `stream`: HEADERS without END_STREAM.
    pub(crate) fn interim(
        &mut self,
        stream: u32,
        status: u16,
        headers: &[(&str, &[u8])],
    ) -> &mut Self {
        let status = status.to_string();
        let mut fields: Vec<(&[u8], &[u8])> = vec![(b":status", status.as_bytes())];
        fields.extend(headers.iter().map(|(n, v)| (n.as_bytes(), *v)));
        let block = self.enc_server.encode(fields);
        self.server.extend(frame(
            frame::HEADERS,
            frame::FLAG_END_HEADERS,
            stream,
            &block,
        ));
        self
    }

    pub(crate) fn response(
        &mut self,
        stream: u32,
        status: u16,
        headers: &[(&str, &[u8])],
        body: &[u8],
    ) -> &mut Self {
        let status = status.to_string();
        let mut fields: Vec<(&[u8], &[u8])> = vec![(b":status", status.as_bytes())];
        fields.extend(headers.iter().map(|(n, v)| (n.as_bytes(), *v)));
        let block = self.enc_server.encode(fields);
        let end = if body.is_empty() {
            frame::FLAG_END_STREAM
        } else {
            0
        };
        self.server.extend(frame(
            frame::HEADERS,
            frame::FLAG_END_HEADERS | end,
            stream,
            &block,
        ));
        // DATA frames of at most 16 KiB, as servers send them.
        let chunks: Vec<&[u8]> = body.chunks(16 * 1024).collect();
        for (i, c) in chunks.iter().enumerate() {
            let end = if i + 1 == chunks.len() {
                frame::FLAG_END_STREAM
            } else {
                0
            };
            self.server.extend(frame(frame::DATA, end, stream, c));
        }
        self
    }
}

/// Wraps bytes as an event of one direction.
type Feed = fn(Vec<u8>) -> Ev;

fn limits() -> HttpLimits {
    HttpLimits::default()
}

/// (method, target, version, request body, status, response body); bodies
/// as text when short, else as their length and a hash (a failure prints it).
type Summary = (String, String, &'static str, String, u16, String);

fn body(b: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    if b.len() <= 64 {
        return String::from_utf8_lossy(b).into_owned();
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    b.hash(&mut h);
    format!("{} bytes #{:016x}", b.len(), h.finish())
}

fn summary(run: &Run) -> Vec<Summary> {
    run.ex
        .iter()
        .map(|e| {
            (
                e.request.method.clone(),
                e.request.target.clone(),
                e.response.version,
                body(&e.request.body.to_vec()),
                e.response.status,
                body(&e.response.body.to_vec()),
            )
        })
        .collect()
}

fn s(m: &str, t: &str, rb: &[u8], st: u16, sb: &[u8]) -> Summary {
    (m.into(), t.into(), HTTP2, body(rb), st, body(sb))
}

fn big(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// A conversation with what HTTP/2 adds over HTTP/1.x: two streams at once
/// answered out of order, a padded request body, a response over several
/// DATA frames, a request header block in CONTINUATION frames.
fn conversation() -> (Conn, Vec<Summary>) {
    let mut c = Conn::new();
    let large = big(40_000);
    c.request(
        1,
        "GET",
        "/v1/items?api_key=k",
        &[("x-api-key", b"sk_test_1")],
        None,
    );
    c.request(
        3,
        "POST",
        "/v1/token",
        &[("content-type", b"application/json")],
        Some(b"{\"client_secret\":\"s3cr3t-value\"}"),
    );
    // Stream 5: HEADERS without END_HEADERS, then a CONTINUATION.
    let block = c.enc_client.encode(vec![
        (&b":method"[..], &b"GET"[..]),
        (b":scheme", b"https"),
        (b":authority", b"api.example"),
        (b":path", b"/v1/large"),
        (b"authorization", b"Bearer abcdefgh12345678"),
    ]);
    let (a, b) = block.split_at(block.len() / 2);
    c.client
        .extend(frame(frame::HEADERS, frame::FLAG_END_STREAM, 5, a));
    c.client
        .extend(frame(frame::CONTINUATION, frame::FLAG_END_HEADERS, 5, b));
    // Answers: 3 first, then 5 (large), then 1; stream 3's body padded.
    let body3 = b"{\"error\":\"bad secret s3cr3t-value\"}";
    let block = c.enc_server.encode(vec![(&b":status"[..], &b"401"[..])]);
    c.server
        .extend(frame(frame::HEADERS, frame::FLAG_END_HEADERS, 3, &block));
    let mut padded = vec![7u8];
    padded.extend_from_slice(body3);
    padded.extend_from_slice(&[0; 7]);
    c.server.extend(frame(
        frame::DATA,
        frame::FLAG_PADDED | frame::FLAG_END_STREAM,
        3,
        &padded,
    ));
    c.response(
        5,
        200,
        &[("content-type", b"application/octet-stream")],
        &large,
    );
    c.response(1, 200, &[("x-debug", b"1")], b"ok");
    let want = vec![
        s(
            "POST",
            "/v1/token",
            b"{\"client_secret\":\"s3cr3t-value\"}",
            401,
            body3,
        ),
        s("GET", "/v1/large", b"", 200, &large),
        s("GET", "/v1/items?api_key=k", b"", 200, b"ok"),
    ];
    (c, want)
}

fn feed(client: &[u8], server: &[u8], role: Role) -> Vec<Ev> {
    let (c, s) = match role {
        Role::Server => (Ev::R(client.to_vec()), Ev::W(server.to_vec())),
        Role::Client => (Ev::W(client.to_vec()), Ev::R(server.to_vec())),
    };
    vec![c, s]
}

#[test]
fn streams_are_paired_as_they_end() {
    let (c, want) = conversation();
    for role in [Role::Server, Role::Client] {
        let run = run_with(limits(), &feed(&c.client, &c.server, role));
        assert_eq!(run.errors, vec![], "{role:?}");
        assert_eq!(summary(&run), want, "{role:?}");
        assert!(run
            .ex
            .iter()
            .all(|e| e.role == role && e.request.version == HTTP2));
        assert!(run.p.is_http2() && !run.p.is_ignored());
        // Pseudo-headers became method/path/status; :authority is the host.
        let first = &run.ex[2];
        assert_eq!(first.request.header("host"), Some(&b"api.example"[..]));
        assert_eq!(first.request.header("x-api-key"), Some(&b"sk_test_1"[..]));
        assert!(first
            .request
            .headers
            .iter()
            .all(|h| !h.name.starts_with(':')));
        assert_eq!(first.response.header("x-debug"), Some(&b"1"[..]));
        assert_eq!(
            run.ex[1].request.header("authorization"),
            Some(&b"Bearer abcdefgh12345678"[..]),
            "the block split over CONTINUATION decodes whole"
        );
    }
}

/// Every split of each direction into two feeds gives the same pairs.
#[test]
fn every_split_gives_the_same_pairs() {
    let (c, want) = conversation();
    for at in 0..=c.client.len() {
        let (a, b) = c.client.split_at(at);
        let run = run_with(
            limits(),
            &[
                Ev::R(a.to_vec()),
                Ev::R(b.to_vec()),
                Ev::W(c.server.clone()),
            ],
        );
        assert_eq!(summary(&run), want, "client split at {at}");
    }
    for at in 0..=c.server.len() {
        let (a, b) = c.server.split_at(at);
        let run = run_with(
            limits(),
            &[
                Ev::R(c.client.clone()),
                Ev::W(a.to_vec()),
                Ev::W(b.to_vec()),
            ],
        );
        assert_eq!(summary(&run), want, "server split at {at}");
    }
}

/// Byte by byte, both directions alternating (each request before its answer).
#[test]
fn byte_at_a_time() {
    let (c, want) = conversation();
    let mut evs: Vec<Ev> = c.client.iter().map(|b| Ev::R(vec![*b])).collect();
    evs.extend(c.server.iter().map(|b| Ev::W(vec![*b])));
    assert_eq!(summary(&run_with(limits(), &evs)), want);
}

/// nginx and node write their SETTINGS before reading the client's preface.
#[test]
fn server_settings_before_the_preface() {
    let (c, want) = conversation();
    let settings_len = 9 + 6;
    for role in [Role::Server, Role::Client] {
        for first in [3, 9, settings_len] {
            let (server_first, server_rest) = c.server.split_at(first);
            let (srv, cli): (Feed, Feed) = match role {
                Role::Server => (Ev::W, Ev::R),
                Role::Client => (Ev::R, Ev::W),
            };
            let evs = [
                srv(server_first.to_vec()),
                cli(c.client.clone()),
                srv(server_rest.to_vec()),
            ];
            let run = run_with(limits(), &evs);
            assert_eq!(run.errors, vec![], "{role:?} {first}");
            assert_eq!(summary(&run), want, "{role:?} {first}");
        }
    }
}

/// RFC 7541 C.4: three requests with Huffman-coded strings and the dynamic
/// table in use, as curl (nghttp2) and browsers send them.
#[test]
fn rfc7541_huffman_requests_with_the_dynamic_table() {
    let blocks = [
        "828684418cf1e3c2e5f23a6ba0ab90f4ff",
        "828684be5886a8eb10649cbf",
        "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf",
    ];
    let mut client = PREFACE.to_vec();
    let mut server = Vec::new();
    let mut enc = crate::http::h2::hpack::Encoder::new();
    for (i, hexblock) in blocks.iter().enumerate() {
        let stream = 1 + 2 * i as u32;
        let block = hex::decode(hexblock).unwrap();
        client.extend(frame(
            frame::HEADERS,
            frame::FLAG_END_HEADERS | frame::FLAG_END_STREAM,
            stream,
            &block,
        ));
        let resp = enc.encode(vec![(&b":status"[..], &b"204"[..])]);
        server.extend(frame(
            frame::HEADERS,
            frame::FLAG_END_HEADERS | frame::FLAG_END_STREAM,
            stream,
            &resp,
        ));
    }
    let run = run_with(limits(), &[Ev::R(client), Ev::W(server)]);
    assert_eq!(run.errors, vec![]);
    type Row<'a> = (&'a str, &'a str, Option<&'a [u8]>, Option<&'a [u8]>);
    let got: Vec<Row> = run
        .ex
        .iter()
        .map(|e| {
            (
                e.request.method.as_str(),
                e.request.target.as_str(),
                e.request.header("host"),
                e.request.header("custom-key"),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("GET", "/", Some(&b"www.example.com"[..]), None),
            ("GET", "/", Some(&b"www.example.com"[..]), None),
            (
                "GET",
                "/index.html",
                Some(&b"www.example.com"[..]),
                Some(&b"custom-value"[..])
            ),
        ]
    );
    assert_eq!(
        run.ex[1].request.header("cache-control"),
        Some(&b"no-cache"[..])
    );
}

#[test]
fn trailers_join_the_headers_and_interim_responses_are_skipped() {
    let mut c = Conn::new();
    c.request(
        1,
        "POST",
        "/grpc.Svc/Call",
        &[("te", b"trailers")],
        Some(b"\0\0\0\0\x01x"),
    );
    let block = c
        .enc_server
        .encode(vec![(&b":status"[..], &b"103"[..]), (b"link", b"</a.css>")]);
    c.server
        .extend(frame(frame::HEADERS, frame::FLAG_END_HEADERS, 1, &block));
    let block = c.enc_server.encode(vec![(&b":status"[..], &b"200"[..])]);
    c.server
        .extend(frame(frame::HEADERS, frame::FLAG_END_HEADERS, 1, &block));
    c.server.extend(frame(frame::DATA, 0, 1, b"\0\0\0\0\0"));
    let block = c.enc_server.encode(vec![
        (&b"grpc-status"[..], &b"16"[..]),
        (b"grpc-message", b"invalid token tok_abcdefghijkl"),
    ]);
    c.server.extend(frame(
        frame::HEADERS,
        frame::FLAG_END_HEADERS | frame::FLAG_END_STREAM,
        1,
        &block,
    ));
    let run = run_with(
        limits(),
        &[Ev::R(c.client.clone()), Ev::W(c.server.clone())],
    );
    assert_eq!(run.errors, vec![]);
    assert_eq!(run.ex.len(), 1);
    let resp = &run.ex[0].response;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.to_vec(), b"\0\0\0\0\0");
    assert_eq!(
        resp.header("grpc-message"),
        Some(&b"invalid token tok_abcdefghijkl"[..])
    );
    assert_eq!(
        resp.header("link"),
        None,
        "the 103's headers are not the answer's"
    );

    // Trailers that do not end the stream are not HTTP/2: the stream is dropped.
    let mut c = Conn::new();
    c.request(1, "GET", "/a", &[], None);
    c.response(1, 200, &[], b"");
    c.request(3, "GET", "/b", &[], None);
    let block = c.enc_server.encode(vec![(&b":status"[..], &b"200"[..])]);
    c.server
        .extend(frame(frame::HEADERS, frame::FLAG_END_HEADERS, 3, &block));
    c.server.extend(frame(
        frame::HEADERS,
        frame::FLAG_END_HEADERS,
        3,
        &c.enc_server.encode(vec![(&b"x"[..], &b"y"[..])]),
    ));
    let run = run_with(
        limits(),
        &[Ev::R(c.client.clone()), Ev::W(c.server.clone())],
    );
    assert_eq!(run.errors, vec![E::InvalidResponse]);
    assert_eq!(run.ex.len(), 1);
}

#[test]
fn reset_streams_are_dropped_and_the_rest_go_on() {
    let mut c = Conn::new();
    c.request(1, "GET", "/gone", &[], None);
    c.request(3, "GET", "/kept", &[], None);
    c.client
        .extend(frame(frame::RST_STREAM, 0, 1, &8u32.to_be_bytes()));
    c.response(3, 200, &[], b"fine");
    // A late answer to the reset stream is no pair.
    c.response(1, 200, &[], b"late");
    let run = run_with(
        limits(),
        &[Ev::R(c.client.clone()), Ev::W(c.server.clone())],
    );
    assert_eq!(summary(&run), vec![s("GET", "/kept", b"", 200, b"fine")]);
    assert_eq!(run.errors, vec![E::ResponseWithoutRequest]);
}

#[test]
fn skipped_frames_and_server_push_keep_the_stream_in_step() {
    let mut c = Conn::new();
    c.request(1, "GET", "/", &[], None);
    c.client.extend(frame(0x6, 0, 0, &[0; 8])); // PING
    c.client.extend(frame(0x8, 0, 0, &1000u32.to_be_bytes())); // WINDOW_UPDATE
    c.client.extend(frame(0x2, 0, 1, &[0, 0, 0, 0, 16])); // PRIORITY
    c.client.extend(frame(0xfa, 0, 1, b"an extension frame")); // unknown type
                                                               // PUSH_PROMISE: its block uses the server's table; the pushed stream is no pair.
    let mut promise = 2u32.to_be_bytes().to_vec();
    promise.extend(c.enc_server.encode(vec![
        (&b":method"[..], &b"GET"[..]),
        (b":path", b"/pushed.css"),
        (b"x-pushed", b"yes"),
    ]));
    c.server.extend(frame(
        frame::PUSH_PROMISE,
        frame::FLAG_END_HEADERS,
        1,
        &promise,
    ));
    c.response(2, 200, &[("x-pushed", b"yes")], b"css");
    c.response(1, 200, &[("x-pushed", b"yes")], b"page");
    c.server.extend(frame(0x7, 0, 0, &[0; 8])); // GOAWAY
    let run = run_with(
        limits(),
        &[Ev::R(c.client.clone()), Ev::W(c.server.clone())],
    );
    assert_eq!(run.errors, vec![]);
    assert_eq!(summary(&run), vec![s("GET", "/", b"", 200, b"page")]);
    assert_eq!(run.ex[0].response.header("x-pushed"), Some(&b"yes"[..]));
}

#[test]
fn lost_bytes_inside_data_truncate_the_body_elsewhere_end_the_connection() {
    let mut conn = Conn::new();
    conn.request(1, "GET", "/large", &[], None);
    let body = big(20_000);
    conn.response(1, 200, &[], &body);
    // The body went in two DATA frames (16 KiB and the rest); lose 100 bytes
    // 1,000 bytes into the first one's data.
    let first_data = conn.server.len() - (9 + 16_384) - (9 + body.len() - 16_384);
    let cut = first_data + 9 + 1000;
    let run = run_with(
        limits(),
        &[
            Ev::R(conn.client.clone()),
            Ev::W(conn.server[..cut].to_vec()),
            Ev::Gap(Write, 100),
            Ev::W(conn.server[cut + 100..].to_vec()),
        ],
    );
    assert_eq!(run.errors, vec![]);
    assert_eq!(run.ex.len(), 1);
    let got = &run.ex[0].response.body;
    assert!(got.truncated);
    assert_eq!(got.len, body.len() as u64);
    let mut want = body[..1000].to_vec();
    want.extend_from_slice(&body[1100..]);
    assert_eq!(got.to_vec(), want);

    // More lost than the frame has left, or in a frame header: the framing
    // is gone and the connection is dropped.
    for (at, lost) in [(cut, 16_000), (20, 5), (cut, 0)] {
        let run = run_with(
            limits(),
            &[
                Ev::R(conn.client.clone()),
                Ev::W(conn.server[..at].to_vec()),
                Ev::Gap(Write, lost),
                Ev::W(conn.server[at + lost as usize..].to_vec()),
            ],
        );
        assert_eq!(run.errors, vec![E::GapInHead], "{at} {lost}");
        assert!(run.p.is_ignored() && run.ex.is_empty());
    }
}

/// A connection whose start was not seen (its HPACK state is unknown) is
/// not followed, and garbage after the preface never panics.
#[test]
fn connections_joined_late_or_broken_are_counted() {
    let (c, _) = conversation();
    // Joined after the preface and the SETTINGS: either side seen first.
    let late_client = c.client[PREFACE.len() + 2 * 9 + 12..].to_vec();
    let late_server = c.server[15 + 9..].to_vec();
    for evs in [
        [Ev::R(late_client.clone()), Ev::W(late_server.clone())],
        [Ev::W(late_server.clone()), Ev::R(late_client.clone())],
    ] {
        let run = run_with(limits(), &evs);
        assert!(run.ex.is_empty() && run.p.is_ignored());
        assert_eq!(run.errors, vec![E::Http2]);
    }
    // Not HTTP/2 frames (a TLS record, as in TLS inside TLS), both ways: not
    // HTTP.  (One way only may be an HTTP/1.x connection joined midway: it
    // waits for a message start, `http::tests`.)
    let run = run_with(
        limits(),
        &[
            Ev::R(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec()),
            Ev::W(b"\x16\x03\x03\x00\x7a\x02\x00\x00\x76\x03\x03".to_vec()),
        ],
    );
    assert_eq!(run.errors, vec![E::NotHttp]);

    for bad in [
        // CONTINUATION without HEADERS.
        frame(frame::CONTINUATION, frame::FLAG_END_HEADERS, 1, b"x"),
        // DATA on stream 0.
        frame(frame::DATA, 0, 0, b"x"),
        // Padding longer than the frame.
        frame(frame::DATA, frame::FLAG_PADDED, 1, &[9, 1, 2]),
        // An HPACK index past both tables.
        frame(frame::HEADERS, frame::FLAG_END_HEADERS, 1, &[0xff, 0x7f]),
        // A table size update above what the server's SETTINGS allowed.
        frame(
            frame::HEADERS,
            frame::FLAG_END_HEADERS,
            1,
            &[0x3f, 0xe2, 0x1f, 0x82],
        ),
    ] {
        let mut client = PREFACE.to_vec();
        client.extend(bad);
        let run = run_with(limits(), &[Ev::R(client)]);
        assert_eq!(run.errors, vec![E::Http2]);
        assert!(run.p.is_ignored());
    }

    // The preface itself, wrong after its first 16 bytes.
    let mut client = PREFACE[..16].to_vec();
    client.extend(b"XXXXXXXX");
    let run = run_with(limits(), &[Ev::R(client)]);
    assert_eq!(run.errors, vec![E::Http2]);
}

#[test]
fn hpack_table_follows_the_settings_that_sized_it() {
    // The server allows an 8 KiB table; the client's encoder uses it.
    let mut client = PREFACE.to_vec();
    let mut server = settings(&[(1, 8192)]);
    let mut enc = crate::http::h2::hpack::Encoder::new();
    enc.set_max_table_size(8192);
    let mut update = vec![0x3f, 0xe1, 0x3f]; // size update to 8192
    let filler = "v".repeat(1000);
    let mut blocks = Vec::new();
    for i in 0..6u32 {
        let name = format!("x-filler-{i}");
        let block = enc.encode(vec![
            (&b":method"[..], &b"GET"[..]),
            (b":path", b"/"),
            (name.as_bytes(), filler.as_bytes()),
        ]);
        blocks.push(block);
    }
    // The first block opens with the size update.
    update.extend(&blocks[0]);
    blocks[0] = update;
    // Then the first filler again (index 62 + 5): still in an 8 KiB table, not in 4 KiB.
    let mut last = enc.encode(vec![
        (&b":method"[..], &b"GET"[..]),
        (b":path", b"/again"),
        (b"x-filler-0", filler.as_bytes()),
    ]);
    blocks.push(std::mem::take(&mut last));
    for (i, b) in blocks.iter().enumerate() {
        let stream = 1 + 2 * i as u32;
        client.extend(frame(
            frame::HEADERS,
            frame::FLAG_END_HEADERS | frame::FLAG_END_STREAM,
            stream,
            b,
        ));
        server.extend(frame(
            frame::HEADERS,
            frame::FLAG_END_HEADERS | frame::FLAG_END_STREAM,
            stream,
            &[0x88],
        ));
    }
    let run = run_with(
        limits(),
        &[
            Ev::W(server[..15].to_vec()),
            Ev::R(client),
            Ev::W(server[15..].to_vec()),
        ],
    );
    assert_eq!(run.errors, vec![]);
    assert_eq!(run.ex.len(), 7);
    assert_eq!(
        run.ex[6].request.header("x-filler-0"),
        Some(filler.as_bytes())
    );
}

fn small() -> HttpLimits {
    HttpLimits {
        max_body_bytes: 64,
        max_request_body_kept: 16,
        max_head_bytes: 256,
        max_headers: 8,
        max_pending_requests: 3,
    }
}

#[test]
fn open_streams_at_and_past_the_limit() {
    for open in [3u32, 4] {
        let mut c = Conn::new();
        for i in 0..open {
            c.request(1 + 2 * i, "GET", "/", &[], None);
        }
        for i in 0..open {
            c.response(1 + 2 * i, 200, &[], b"x");
        }
        let run = run_with(small(), &[Ev::R(c.client.clone()), Ev::W(c.server.clone())]);
        assert_eq!(run.ex.len(), 3, "{open} open");
        let want: Vec<E> = if open > 3 {
            vec![E::TooManyPending, E::ResponseWithoutRequest]
        } else {
            vec![]
        };
        assert_eq!(run.errors, want, "{open} open");
    }
}

#[test]
fn header_block_size_at_and_past_the_limit() {
    let lim = small();
    for len in [lim.max_head_bytes, lim.max_head_bytes + 1] {
        // GET / and a literal `x-a` header (not indexed) filling the block.
        let mut block = vec![0x82, 0x84, 0x00, 0x03];
        block.extend(b"x-a");
        let value_len = len - block.len() - 3;
        block.push(0x7f);
        block.push((value_len - 127) as u8 | 0x80);
        block.push(((value_len - 127) >> 7) as u8);
        block.extend(std::iter::repeat_n(b'v', value_len));
        assert_eq!(block.len(), len);
        let mut client = PREFACE.to_vec();
        client.extend(frame(
            frame::HEADERS,
            frame::FLAG_END_HEADERS | frame::FLAG_END_STREAM,
            1,
            &block,
        ));
        let run = run_with(lim.clone(), &[Ev::R(client)]);
        assert_eq!(run.errors, vec![E::HeadTooLarge], "block of {len}");
        // At the limit the block is read and decoded (its head is larger
        // still: only that stream is dropped); past it the framing is given up.
        assert_eq!(
            run.p.is_ignored(),
            len > lim.max_head_bytes,
            "block of {len}"
        );
    }
}

#[test]
fn decoded_head_size_at_and_past_the_limit() {
    let lim = small();
    // :method GET (3 + 7 + 4 = 14) + :path / (5 + 1 + 4 = 10) + x: v…
    for (extra, ok) in [(0usize, true), (1, false)] {
        let value_len = lim.max_head_bytes - 14 - 10 - 4 - 1 + extra;
        let mut c = Conn::new();
        let v = vec![b'v'; value_len];
        let mut enc = crate::http::h2::hpack::Encoder::new();
        let block = enc.encode(vec![
            (&b":method"[..], &b"GET"[..]),
            (b":path", b"/"),
            (b"x", &v[..]),
        ]);
        c.client.extend(frame(
            frame::HEADERS,
            frame::FLAG_END_HEADERS | frame::FLAG_END_STREAM,
            1,
            &block,
        ));
        c.response(1, 200, &[], b"");
        let run = run_with(small(), &[Ev::R(c.client.clone()), Ev::W(c.server.clone())]);
        if ok {
            assert_eq!(run.errors, vec![], "value {value_len}");
            assert_eq!(run.ex.len(), 1);
        } else {
            assert_eq!(run.errors[0], E::HeadTooLarge, "value {value_len}");
            assert!(run.ex.is_empty());
        }
    }
}

#[test]
fn bodies_at_and_past_their_caps_and_the_shared_budget() {
    let lim = small();
    let mut c = Conn::new();
    c.request(1, "POST", "/up", &[], Some(&big(16)));
    c.request(3, "POST", "/up", &[], Some(&big(17)));
    c.response(1, 200, &[], &big(64));
    c.response(3, 200, &[], &big(65));
    let run = run_with(
        lim.clone(),
        &[Ev::R(c.client.clone()), Ev::W(c.server.clone())],
    );
    assert_eq!(run.errors, vec![]);
    let b: Vec<(usize, u64, bool, bool)> = run
        .ex
        .iter()
        .flat_map(|e| [&e.request.body, &e.response.body])
        .map(|b| (b.kept_len(), b.len, b.truncated, b.is_partial()))
        .collect();
    assert_eq!(
        b,
        vec![
            (16, 16, false, false),
            (64, 64, false, false),
            (16, 17, false, true),
            (64, 65, true, true),
        ]
    );
    assert_eq!((run.over_cap, run.not_kept), (1, 1));

    // Three responses open at once share two bodies' worth.
    let mut c = Conn::new();
    for i in 0..3 {
        c.request(1 + 2 * i, "GET", "/", &[], None);
    }
    for i in 0..3 {
        let block = c.enc_server.encode(vec![(&b":status"[..], &b"200"[..])]);
        c.server.extend(frame(
            frame::HEADERS,
            frame::FLAG_END_HEADERS,
            1 + 2 * i,
            &block,
        ));
    }
    for i in 0..3 {
        c.server.extend(frame(frame::DATA, 0, 1 + 2 * i, &big(60)));
    }
    for i in 0..3 {
        c.server.extend(frame(
            frame::DATA,
            frame::FLAG_END_STREAM,
            1 + 2 * i,
            &big(4),
        ));
    }
    let run = run_with(
        lim.clone(),
        &[Ev::R(c.client.clone()), Ev::W(c.server.clone())],
    );
    // 60 + 60 + 8 fill the two bodies' worth; then the first one finds no
    // room, the second room for its last 4, the third too, once those ended.
    let kept: Vec<(usize, bool)> = run
        .ex
        .iter()
        .map(|e| (e.response.body.kept_len(), e.response.body.truncated))
        .collect();
    assert_eq!(kept, vec![(60, true), (64, false), (12, true)]);
    assert!(run.ex.iter().all(|e| e.response.body.len == 64));
    assert_eq!(run.over_cap, 4 + 52);
}

#[test]
fn a_server_preface_held_at_and_past_its_limit() {
    use crate::http::connection::MAX_EARLY_H2_BYTES;
    let (c, want) = conversation();
    // The server's SETTINGS, then a frame that makes exactly the limit,
    // all before the client speaks.
    let mut early = settings(&[(3, 100)]);
    let fill = MAX_EARLY_H2_BYTES - early.len() - 9;
    early.extend(frame(0xfa, 0, 0, &vec![0; fill]));
    assert_eq!(early.len(), MAX_EARLY_H2_BYTES);
    let (a, b) = early.split_at(100);
    let run = run_with(
        limits(),
        &[
            Ev::W(a.to_vec()),
            Ev::W(b.to_vec()),
            Ev::R(c.client.clone()),
            Ev::W(c.server.clone()),
        ],
    );
    assert_eq!(run.errors, vec![]);
    assert_eq!(summary(&run), want);

    let run = run_with(
        limits(),
        &[
            Ev::W(early.clone()),
            Ev::W(vec![0]),
            Ev::R(c.client.clone()),
        ],
    );
    assert_eq!(run.errors, vec![E::Http2]);
    assert!(run.p.is_ignored());

    // What opened like a server is not held for an HTTP/1.x request.
    let run = run_with(
        limits(),
        &[
            Ev::W(settings(&[])),
            Ev::R(b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ],
    );
    assert_eq!(run.errors, vec![E::NotHttp]);
}

#[test]
fn frame_head_fields() {
    let h = FrameHead::parse(&[0x01, 0x02, 0x03, 0x01, 0x25, 0x80, 0, 0, 5]);
    assert_eq!(
        h,
        FrameHead {
            len: 0x010203,
            kind: 1,
            flags: 0x25,
            stream: 5
        },
        "the reserved bit is not part of the stream id"
    );
    assert!(frame::is_server_preface(&settings(&[(3, 100), (4, 65535)])));
    assert!(!frame::is_server_preface(&frame(
        frame::SETTINGS,
        frame::FLAG_ACK,
        0,
        &[]
    )));
    assert!(!frame::is_server_preface(b"HTTP/1.1 200 OK\r\n"));
}

mod proptests {
    //! Random conversations (streams answered in any order, DATA frames of
    //! several streams interleaved, either role) cut anywhere give their
    //! model's pairs; mutated or random frames never panic and stay within
    //! the memory bound (`run_with` checks it after every event).

    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    struct Exch {
        method: &'static str,
        path: String,
        key: String,
        req_body: Option<Vec<u8>>,
        status: u16,
        resp_body: Vec<u8>,
    }

    fn exch() -> impl Strategy<Value = Exch> {
        (
            prop::sample::select(vec!["GET", "POST", "PUT", "DELETE"]),
            "/[a-z0-9/]{0,12}(\\?[a-z_]{1,8}=[A-Za-z0-9%]{0,12})?",
            "[A-Za-z0-9_]{8,40}",
            prop::option::of(prop::collection::vec(any::<u8>(), 0..300)),
            prop::sample::select(vec![200u16, 201, 204, 302, 400, 401, 500]),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..300),
                (0usize..40_000).prop_map(big),
            ],
        )
            .prop_map(|(method, path, key, req_body, status, resp_body)| Exch {
                method,
                path,
                key,
                req_body,
                status,
                resp_body,
            })
    }

    /// The client's and the server's bytes, and the pairs in the order they end.
    fn encode(xs: &[Exch], order: &[usize], frame_len: usize) -> (Conn, Vec<Summary>) {
        let mut c = Conn::new();
        for (i, x) in xs.iter().enumerate() {
            let stream = 1 + 2 * i as u32;
            c.request(
                stream,
                x.method,
                &x.path,
                &[("x-api-key", x.key.as_bytes())],
                x.req_body.as_deref(),
            );
        }
        // Every response head first (in `order`), then DATA round robin.
        let mut left: Vec<(u32, &[u8])> = Vec::new();
        let mut ended = Vec::new();
        for &i in order {
            let x = &xs[i];
            let stream = 1 + 2 * i as u32;
            let status = x.status.to_string();
            let block = c.enc_server.encode(vec![
                (&b":status"[..], status.as_bytes()),
                (b"x-trace", x.key.as_bytes()),
            ]);
            let end = if x.resp_body.is_empty() {
                frame::FLAG_END_STREAM
            } else {
                0
            };
            c.server.extend(frame(
                frame::HEADERS,
                frame::FLAG_END_HEADERS | end,
                stream,
                &block,
            ));
            if x.resp_body.is_empty() {
                ended.push(i);
            } else {
                left.push((stream, &x.resp_body));
            }
        }
        while !left.is_empty() {
            for (stream, rest) in left.iter_mut() {
                let n = rest.len().min(frame_len);
                let end = if n == rest.len() {
                    frame::FLAG_END_STREAM
                } else {
                    0
                };
                c.server
                    .extend(frame(frame::DATA, end, *stream, &rest[..n]));
                *rest = &rest[n..];
                if rest.is_empty() {
                    ended.push((*stream as usize - 1) / 2);
                }
            }
            left.retain(|(_, r)| !r.is_empty());
        }
        let want = ended
            .iter()
            .map(|&i| {
                let x = &xs[i];
                s(
                    x.method,
                    &x.path,
                    x.req_body.as_deref().unwrap_or_default(),
                    x.status,
                    &x.resp_body,
                )
            })
            .collect();
        (c, want)
    }

    fn cut(data: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut pts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        pts.extend([0, data.len()]);
        pts.sort_unstable();
        pts.dedup();
        pts.windows(2).map(|w| data[w[0]..w[1]].to_vec()).collect()
    }

    fn events(
        client: &[u8],
        server: &[u8],
        cuts: &[usize],
        role: Role,
        server_first: usize,
    ) -> Vec<Ev> {
        let (to_server, to_client): (Feed, Feed) = match role {
            Role::Server => (Ev::R, Ev::W),
            Role::Client => (Ev::W, Ev::R),
        };
        let first = server_first.min(server.len());
        let mut evs = vec![to_client(server[..first].to_vec())];
        evs.extend(cut(client, cuts).into_iter().map(to_server));
        evs.extend(cut(&server[first..], cuts).into_iter().map(to_client));
        evs
    }

    fn small() -> HttpLimits {
        HttpLimits {
            max_body_bytes: 64,
            max_request_body_kept: 32,
            max_head_bytes: 256,
            max_headers: 8,
            max_pending_requests: 4,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn any_split_gives_the_model(
            xs in prop::collection::vec(exch(), 1..8),
            shuffle in any::<prop::sample::Index>(),
            frame_len in 1usize..20_000,
            cuts in prop::collection::vec(any::<usize>(), 0..12),
            client: bool,
            server_first in prop::sample::select(vec![0usize, 5, 15, 24]),
        ) {
            // A rotation of the streams is the order their answers start in.
            let k = shuffle.index(xs.len());
            let order: Vec<usize> = (0..xs.len()).map(|i| (i + k) % xs.len()).collect();
            let (c, want) = encode(&xs, &order, frame_len);
            let role = if client { Role::Client } else { Role::Server };
            let run = run_with(limits(), &events(&c.client, &c.server, &cuts, role, server_first));
            prop_assert_eq!(&run.errors, &vec![]);
            prop_assert_eq!(summary(&run), want);
            for e in &run.ex {
                prop_assert_eq!(e.role, role);
                prop_assert!(e.request.header("x-api-key").is_some());
                prop_assert_eq!(e.request.header("x-api-key"), e.response.header("x-trace"));
            }
        }

        /// A conversation with bytes flipped, inserted, removed or lost, under
        /// small limits: no panic, memory within the bound after every event.
        #[test]
        fn mutated_conversations_are_harmless(
            xs in prop::collection::vec(exch(), 1..6),
            muts in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..4), 1..8),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let order: Vec<usize> = (0..xs.len()).collect();
            let (c, _) = encode(&xs, &order, 4000);
            let mut client = c.client.clone();
            let mut server = c.server.clone();
            let mut gaps = Vec::new();
            for (i, (at, b, op)) in muts.iter().enumerate() {
                let data = if i % 2 == 0 { &mut client } else { &mut server };
                let at = PREFACE.len().min(data.len()) + at % (data.len().saturating_sub(PREFACE.len()) + 1);
                match op {
                    0 if at < data.len() => data[at] ^= b | 1,
                    1 => data.insert(at, *b),
                    2 if at < data.len() => { data.remove(at); }
                    _ => gaps.push((i % 2 == 0, at, u64::from(*b))),
                }
            }
            let mut evs = events(&client, &server, &cuts, Role::Server, 0);
            for (to_server, at, lost) in gaps {
                let dir = if to_server { crate::capture::event::Direction::Read } else { Write };
                evs.insert(at % (evs.len() + 1), Ev::Gap(dir, lost));
            }
            let run = run_with(small(), &evs);
            prop_assert!(run.ex.len() <= xs.len());
        }

        /// After the preface, frames of random types, flags and payloads.
        #[test]
        fn random_frames_are_harmless(
            frames in prop::collection::vec(
                (0u8..12, any::<u8>(), 0u32..8, prop::collection::vec(any::<u8>(), 0..80)),
                0..30,
            ),
            server_side: bool,
        ) {
            let mut data = if server_side { settings(&[]) } else { PREFACE.to_vec() };
            for (kind, flags, stream, payload) in frames {
                data.extend(frame(kind, flags, stream, &payload));
            }
            let ev = if server_side { Ev::W(data) } else { Ev::R(data) };
            let run = run_with(small(), &[ev, Ev::Close]);
            prop_assert!(run.ex.is_empty());
        }
    }
}

/// What an HTTP/2 connection holds between requests: its HPACK tables as
/// far as they filled, its gathering buffers; no stream.
#[test]
fn an_idle_connection_holds_its_tables_only() {
    let mut c = Conn::new();
    c.request(1, "GET", "/a", &[("x-api-key", b"k1")], None);
    c.response(1, 200, &[], b"ok");
    let run = run_with(
        limits(),
        &[Ev::R(c.client.clone()), Ev::W(c.server.clone())],
    );
    assert_eq!(run.ex.len(), 1);
    let small = run.p.buffered_bytes();
    eprintln!("held after one small exchange: {small}");
    assert!(small < 2048, "{small}");
    // Many distinct headers fill the tables to their size, no further.
    let mut c = Conn::new();
    let mut evs = Vec::new();
    for i in 0..200u32 {
        let v = format!("value-{i:04}-{}", "x".repeat(100));
        // The first exchange carries the prefaces.
        let (q, r) = if i == 0 {
            (0, 0)
        } else {
            (c.client.len(), c.server.len())
        };
        c.request(
            1 + 2 * i,
            "GET",
            &format!("/{i}"),
            &[("x-request-id", v.as_bytes())],
            None,
        );
        c.response(1 + 2 * i, 200, &[("x-trace-id", v.as_bytes())], b"ok");
        evs.push(Ev::R(c.client[q..].to_vec()));
        evs.push(Ev::W(c.server[r..].to_vec()));
    }
    let run = run_with(limits(), &evs);
    assert_eq!(run.ex.len(), 200);
    let full = run.p.buffered_bytes();
    eprintln!("held after 200 distinct exchanges: {full}");
    assert!(full >= 2 * (DEFAULT_HPACK_TABLE_BYTES - 200));
    assert!(full < 2 * DEFAULT_HPACK_TABLE_BYTES + 2048);
}

/// A 100 MiB response over HTTP/2 (and a 100 MiB upload on another stream
/// at the same time): what is kept stays at the caps, the lengths are exact.
#[test]
fn hundred_mib_bodies_are_bounded() {
    const TOTAL: usize = 100 * 1024 * 1024;
    const FRAME: usize = 16 * 1024;
    let lim = limits();
    let mut c = Conn::new();
    c.request(1, "GET", "/download", &[("x-api-key", b"k")], None);
    let block = c.enc_client.encode(vec![
        (&b":method"[..], &b"POST"[..]),
        (b":path", b"/upload"),
    ]);
    c.client
        .extend(frame(frame::HEADERS, frame::FLAG_END_HEADERS, 3, &block));
    let block = c.enc_server.encode(vec![(&b":status"[..], &b"200"[..])]);
    c.server
        .extend(frame(frame::HEADERS, frame::FLAG_END_HEADERS, 1, &block));
    let mut p = crate::http::ConnectionParser::new(lim.clone());
    let mut out = crate::http::ParserOutput::default();
    p.feed(Read, &Bytes::from(c.client.clone()), 1, &mut out);
    p.feed(Write, &Bytes::from(c.server.clone()), 2, &mut out);
    let payload = vec![b'x'; FRAME];
    let mut max_held = 0;
    for i in 0..TOTAL / FRAME {
        let end = if i + 1 == TOTAL / FRAME {
            frame::FLAG_END_STREAM
        } else {
            0
        };
        let up = Bytes::from(frame(frame::DATA, end, 3, &payload));
        let down = Bytes::from(frame(frame::DATA, end, 1, &payload));
        p.feed(Read, &up, 3 + i as u64, &mut out);
        p.feed(Write, &down, 3 + i as u64, &mut out);
        max_held = max_held.max(p.buffered_bytes());
    }
    let block = c.enc_server.encode(vec![(&b":status"[..], &b"201"[..])]);
    p.feed(
        Write,
        &Bytes::from(frame(
            frame::HEADERS,
            frame::FLAG_END_HEADERS | frame::FLAG_END_STREAM,
            3,
            &block,
        )),
        u64::MAX,
        &mut out,
    );
    assert_eq!(out.errors, vec![]);
    assert_eq!(out.exchanges.len(), 2);
    let down = &out.exchanges[0].response.body;
    assert_eq!(
        (down.len, down.kept_len(), down.truncated),
        (TOTAL as u64, lim.max_body_bytes, true)
    );
    let up = &out.exchanges[1].request.body;
    assert_eq!(
        (up.len, up.kept_len(), up.truncated),
        (TOTAL as u64, lim.request_body_cap(), false)
    );
    eprintln!("held at most {max_held}");
    // The kept bytes and the 16 KiB slices' overhead (each pins its frame).
    let kept = lim.max_body_bytes + lim.request_body_cap();
    assert!(max_held < kept + kept / 50 + 64 * 1024, "held {max_held}");
    assert_eq!(out.body_bytes_over_cap, (TOTAL - lim.max_body_bytes) as u64);
    assert_eq!(
        out.request_body_bytes_not_kept,
        (TOTAL - lim.request_body_cap()) as u64
    );
}

/// Clients reset a stream, or close the connection, once a body reached its
/// content-length, before the server's empty END_STREAM frame (curl does,
/// with node): the pair is handed on, complete; a body cut short is handed
/// on truncated; a stream without a response head gives nothing.
#[test]
fn streams_cut_after_their_response_started_are_handed_on() {
    let mut c = Conn::new();
    for i in 0..4 {
        c.request(1 + 2 * i, "GET", &format!("/{i}"), &[], None);
    }
    let head = |c: &mut Conn, stream: u32, len: &str| {
        let block = c.enc_server.encode(vec![
            (&b":status"[..], &b"200"[..]),
            (b"content-length", len.as_bytes()),
        ]);
        c.server.extend(frame(
            frame::HEADERS,
            frame::FLAG_END_HEADERS,
            stream,
            &block,
        ));
    };
    // 1: whole body, then the client resets it.
    head(&mut c, 1, "5");
    c.server.extend(frame(frame::DATA, 0, 1, b"hello"));
    let mut evs = feed(&c.client, &c.server, Role::Server);
    let reset = frame(frame::RST_STREAM, 0, 1, &8u32.to_be_bytes());
    evs.push(Ev::R(reset));
    // 3: half its body, then reset by the server.
    let at = c.server.len();
    head(&mut c, 3, "10");
    c.server.extend(frame(frame::DATA, 0, 3, b"hello"));
    c.server
        .extend(frame(frame::RST_STREAM, 0, 3, &2u32.to_be_bytes()));
    // 5: whole body, then the connection closes.  7: no response at all.
    head(&mut c, 5, "3");
    c.server.extend(frame(frame::DATA, 0, 5, b"bye"));
    evs.push(Ev::W(c.server[at..].to_vec()));
    evs.push(Ev::Close);
    let run = run_with(limits(), &evs);
    assert_eq!(run.errors, vec![]);
    let got: Vec<(String, Vec<u8>, bool)> = run
        .ex
        .iter()
        .map(|e| {
            (
                e.request.target.clone(),
                e.response.body.to_vec(),
                e.response.body.truncated,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("/0".to_string(), b"hello".to_vec(), false),
            ("/1".to_string(), b"hello".to_vec(), true),
            ("/2".to_string(), b"bye".to_vec(), false),
        ]
    );
    assert_eq!(run.p.buffered_bytes(), 0);
}

/// CONNECT names an authority, not a path (RFC 9113 §8.5); a request with
/// neither is not paired.
#[test]
fn connect_targets_its_authority() {
    let mut c = Conn::new();
    c.request_of_fields(
        1,
        &[
            (b":method", b"CONNECT"),
            (b":authority", b"db.internal:5432"),
        ],
    )
    .request_of_fields(3, &[(b":method", b"GET")])
    .response(1, 200, &[], b"");
    let run = run_with(
        limits(),
        &[Ev::R(c.client.clone()), Ev::W(c.server.clone())],
    );
    assert_eq!(run.errors, vec![E::InvalidRequest]);
    assert_eq!(
        summary(&run),
        vec![s("CONNECT", "db.internal:5432", b"", 200, b"")]
    );
    assert_eq!(
        run.ex[0].request.header("host"),
        Some(&b"db.internal:5432"[..])
    );
}

/// Field names: ASCII ones (the usual, taken without a UTF-8 check) are
/// lower-cased, other UTF-8 is kept as it is, and a name that is not UTF-8
/// makes its request malformed (not paired).
#[test]
fn header_names_ascii_utf8_and_invalid() {
    let mut c = Conn::new();
    c.request(
        1,
        "GET",
        "/a",
        &[("X-Api-Key", b"k1"), ("x-caf\u{e9}", b"v")],
        None,
    );
    c.request_of_fields(
        3,
        &[
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":path", b"/b"),
            (b"x-\xff", b"v"),
        ],
    )
    .response(1, 200, &[], b"ok")
    .response(3, 200, &[], b"ok");
    let run = run_with(
        limits(),
        &[Ev::R(c.client.clone()), Ev::W(c.server.clone())],
    );
    // Stream 3's response then answers no request.
    assert_eq!(
        run.errors,
        vec![E::InvalidRequest, E::ResponseWithoutRequest]
    );
    assert_eq!(summary(&run), vec![s("GET", "/a", b"", 200, b"ok")]);
    let names: Vec<&str> = run.ex[0].request.headers.iter().map(|h| h.name).collect();
    assert_eq!(names, ["host", "x-api-key", "x-caf\u{e9}"]);
}
