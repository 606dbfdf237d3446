//! Property tests: any split of a valid stream gives the same exchanges as the
//! whole stream (and as the model that generated it); replays of fixed samples
//! split at every byte offset; random and mutated input never panics and stays
//! within the memory bound.

use bytes::Bytes;
use proptest::prelude::*;

use super::{run_with, Ev};
use crate::capture::event::Direction::{Read, Write};
use crate::http::limits::HttpLimits;
use crate::http::types::Exchange;
use crate::http::{ConnectionParser, ParserOutput};

#[derive(Clone, Debug)]
enum Framing {
    Length,
    /// Chunk sizes the body is cut into (a 0 ends the list).
    Chunked(Vec<usize>),
}

#[derive(Clone, Debug)]
struct Msg {
    method: &'static str,
    target: String,
    req_body: Vec<u8>,
    req_framing: Framing,
    status: u16,
    resp_body: Vec<u8>,
    resp_framing: Framing,
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        Just(Framing::Length),
        prop::collection::vec(1usize..40, 0..6).prop_map(Framing::Chunked),
    ]
}

fn msg() -> impl Strategy<Value = Msg> {
    (
        prop::sample::select(vec![
            "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS",
        ]),
        "/[a-z0-9/]{0,12}(\\?[a-z]{1,5}=[A-Za-z0-9%]{0,10})?",
        prop::collection::vec(any::<u8>(), 0..120),
        framing(),
        prop::sample::select(vec![200u16, 201, 204, 301, 304, 400, 401, 404, 500]),
        prop::collection::vec(any::<u8>(), 0..200),
        framing(),
    )
        .prop_map(
            |(method, target, req_body, req_framing, status, resp_body, resp_framing)| {
                let mut m = Msg {
                    method,
                    target,
                    req_body,
                    req_framing,
                    status,
                    resp_body,
                    resp_framing,
                };
                if m.method == "HEAD" || m.status == 204 || m.status == 304 {
                    m.resp_body.clear();
                }
                m
            },
        )
}

fn encode_body(out: &mut Vec<u8>, body: &[u8], framing: &Framing, extra_headers: &str) {
    match framing {
        Framing::Length => {
            out.extend_from_slice(
                format!("Content-Length: {}\r\n{extra_headers}\r\n", body.len()).as_bytes(),
            );
            out.extend_from_slice(body);
        }
        Framing::Chunked(sizes) => {
            out.extend_from_slice(
                format!("Transfer-Encoding: chunked\r\n{extra_headers}\r\n").as_bytes(),
            );
            let mut rest = body;
            let mut sizes = sizes.iter().cycle();
            let mut n = 0;
            while !rest.is_empty() {
                let take = (*sizes.next().unwrap_or(&7)).min(rest.len());
                // Alternate extension styles and hex case to cover the grammar.
                let ext = if n % 3 == 1 { ";name=\"v\"" } else { "" };
                let size = if n % 2 == 0 {
                    format!("{take:x}")
                } else {
                    format!("{take:X}")
                };
                out.extend_from_slice(format!("{size}{ext}\r\n").as_bytes());
                out.extend_from_slice(&rest[..take]);
                out.extend_from_slice(b"\r\n");
                rest = &rest[take..];
                n += 1;
            }
            out.extend_from_slice(if body.len().is_multiple_of(2) {
                b"0\r\n\r\n"
            } else {
                b"0\r\nX-Trailer: t\r\n\r\n"
            });
        }
    }
}

fn encode_req(m: &Msg) -> Vec<u8> {
    let mut v = format!(
        "{} {} HTTP/1.1\r\nHost: api.example\r\nX-Api-Key: k-{}\r\n",
        m.method,
        m.target,
        m.target.len()
    )
    .into_bytes();
    encode_body(&mut v, &m.req_body, &m.req_framing, "");
    v
}

fn encode_resp(m: &Msg) -> Vec<u8> {
    let mut v = format!(
        "HTTP/1.1 {} X\r\nContent-Type: application/json\r\n",
        m.status
    )
    .into_bytes();
    let no_body = m.method == "HEAD" || m.status == 204 || m.status == 304;
    if no_body {
        // Such responses may announce a length they do not carry.
        v.extend_from_slice(format!("Content-Length: {}\r\n\r\n", 10 + m.target.len()).as_bytes());
    } else {
        encode_body(&mut v, &m.resp_body, &m.resp_framing, "");
    }
    v
}

type Summary = (
    String,
    String,
    Vec<u8>,
    u64,
    bool,
    u16,
    Vec<u8>,
    u64,
    bool,
    usize,
    usize,
);

fn summary(ex: &[Exchange]) -> Vec<Summary> {
    ex.iter()
        .map(|e| {
            (
                e.request.method.clone(),
                e.request.target.clone(),
                e.request.body.to_vec(),
                e.request.body.len,
                e.request.body.truncated,
                e.response.status,
                e.response.body.to_vec(),
                e.response.body.len,
                e.response.body.truncated,
                e.request.headers.len(),
                e.response.headers.len(),
            )
        })
        .collect()
}

fn model(msgs: &[Msg]) -> Vec<Summary> {
    msgs.iter()
        .map(|m| {
            (
                m.method.to_string(),
                m.target.clone(),
                m.req_body.clone(),
                m.req_body.len() as u64,
                false,
                m.status,
                m.resp_body.clone(),
                m.resp_body.len() as u64,
                false,
                3 + trailer_fields(&m.req_body, &m.req_framing),
                2 + trailer_fields(&m.resp_body, &m.resp_framing),
            )
        })
        .collect()
}

/// Fields `encode_body` puts in the trailer section (they join the headers).
fn trailer_fields(body: &[u8], framing: &Framing) -> usize {
    usize::from(matches!(framing, Framing::Chunked(_)) && !body.len().is_multiple_of(2))
}

fn limits() -> HttpLimits {
    HttpLimits {
        max_pending_requests: 64,
        ..HttpLimits::default()
    }
}

/// Cuts `data` at the given (sorted, deduplicated) offsets.
fn cut(data: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut pts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    pts.push(0);
    pts.push(data.len());
    pts.sort_unstable();
    pts.dedup();
    pts.windows(2).map(|w| data[w[0]..w[1]].to_vec()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Keep-alive (request, response, request...) and pipelined (all requests,
    /// then all responses), each stream cut anywhere: always the model's exchanges.
    #[test]
    fn any_split_gives_the_model(msgs in prop::collection::vec(msg(), 1..6),
                                 cuts in prop::collection::vec(any::<usize>(), 0..12),
                                 pipelined: bool, client: bool) {
        let (req_dir, resp_dir) = if client { (Write, Read) } else { (Read, Write) };
        let ev = |dir, d: Vec<u8>| if dir == Read { Ev::R(d) } else { Ev::W(d) };
        let mut whole = Vec::new();
        let mut split = Vec::new();
        if pipelined {
            let reqs: Vec<u8> = msgs.iter().flat_map(encode_req).collect();
            let resps: Vec<u8> = msgs.iter().flat_map(encode_resp).collect();
            whole.push(ev(req_dir, reqs.clone()));
            whole.push(ev(resp_dir, resps.clone()));
            split.extend(cut(&reqs, &cuts).into_iter().map(|c| ev(req_dir, c)));
            split.extend(cut(&resps, &cuts).into_iter().map(|c| ev(resp_dir, c)));
        } else {
            for m in &msgs {
                let (q, s) = (encode_req(m), encode_resp(m));
                whole.push(ev(req_dir, q.clone()));
                whole.push(ev(resp_dir, s.clone()));
                split.extend(cut(&q, &cuts).into_iter().map(|c| ev(req_dir, c)));
                split.extend(cut(&s, &cuts).into_iter().map(|c| ev(resp_dir, c)));
            }
        }
        let a = run_with(limits(), &whole);
        let b = run_with(limits(), &split);
        prop_assert!(a.errors.is_empty(), "{:?}", a.errors);
        prop_assert!(b.errors.is_empty(), "{:?}", b.errors);
        prop_assert_eq!(summary(&a.ex), model(&msgs));
        prop_assert_eq!(summary(&b.ex), model(&msgs));
        prop_assert_eq!(b.p.buffered_bytes(), 0);
    }

    /// Whatever arrives — random bytes on either side, holes, close — no panic and
    /// memory within the limits' bound (checked after every event by `run_with`).
    #[test]
    fn random_input_is_harmless(evs in prop::collection::vec(random_ev(), 0..40)) {
        let lim = HttpLimits { max_body_bytes: 64, max_request_body_kept: 32, max_head_bytes: 256, max_headers: 8, max_pending_requests: 4 };
        let got = run_with(lim, &evs);
        prop_assert!(got.ex.len() <= evs.len());
    }

    /// Valid streams with a few bytes flipped, inserted or removed.
    #[test]
    fn mutated_streams_are_harmless(msgs in prop::collection::vec(msg(), 1..5),
                                    muts in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..6),
                                    cuts in prop::collection::vec(any::<usize>(), 0..8)) {
        let lim = HttpLimits { max_body_bytes: 100, max_request_body_kept: 40, max_head_bytes: 200, max_headers: 6, max_pending_requests: 3 };
        let mut reqs: Vec<u8> = msgs.iter().flat_map(encode_req).collect();
        let mut resps: Vec<u8> = msgs.iter().flat_map(encode_resp).collect();
        for (i, (at, b, op)) in muts.iter().enumerate() {
            let s = if i % 2 == 0 { &mut reqs } else { &mut resps };
            if s.is_empty() { continue; }
            let at = at % s.len();
            match op { 0 => s[at] = *b, 1 => s.insert(at, *b), _ => { s.remove(at); } }
        }
        let mut evs: Vec<Ev> = Vec::new();
        let rq = cut(&reqs, &cuts);
        let rs = cut(&resps, &cuts);
        for i in 0..rq.len().max(rs.len()) {
            if let Some(c) = rq.get(i) { evs.push(Ev::R(c.clone())); }
            if let Some(c) = rs.get(i) { evs.push(Ev::W(c.clone())); }
        }
        evs.push(Ev::Close);
        run_with(lim, &evs);
    }
}

fn random_ev() -> impl Strategy<Value = Ev> {
    let bytes = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        // HTTP-ish fragments so the random walk gets past the first bytes.
        prop::collection::vec(
            prop::sample::select(vec![
                &b"GET / HTTP/1.1\r\n"[..],
                b"HTTP/1.1 200 OK\r\n",
                b"HTTP/1.1 100 Continue\r\n",
                b"Content-Length: 3\r\n",
                b"Transfer-Encoding: chunked\r\n",
                b"\r\n",
                b"5\r\nabcde\r\n",
                b"0\r\n\r\n",
                b"abc",
                b"POST /x HTTP/1.0\r\n",
                b"HEAD / HTTP/1.1\r\n",
                b"X: y\r\n",
                b"Content-Length: 99999999999\r\n",
                b"ffffffff;x\r\n",
                b"HTTP/1.1 204 No\r\n",
            ]),
            0..12
        )
        .prop_map(|parts| parts.concat()),
    ];
    prop_oneof![
        4 => bytes.clone().prop_map(Ev::R),
        4 => bytes.prop_map(Ev::W),
        1 => (any::<bool>(), 0u64..100).prop_map(|(r, n)| Ev::Gap(if r { Read } else { Write }, n)),
        1 => Just(Ev::Close),
    ]
}

/// Fixed samples replayed with each stream split at every byte offset (as hyper's
/// tests do), and fed one byte at a time.
#[test]
fn samples_split_at_every_offset() {
    let samples: Vec<(Vec<u8>, Vec<u8>, usize)> = vec![
        (
            b"POST /v1/items?api_key=abc HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nabcd\r\n0\r\nT: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n".to_vec(),
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 400 Bad\r\nContent-Length: 4\r\n\r\noopsHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n".to_vec(),
            2,
        ),
        (
            b"HEAD /h HTTP/1.1\r\n\r\nGET /n HTTP/1.0\r\nContent-Length: 2\r\n\r\nxy".to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nHTTP/1.0 200 OK\r\n\r\nclose-delimited".to_vec(),
            2,
        ),
    ];
    // And with a request body limit the samples' bodies cross (4 > 3 ≥ 2):
    // the same kept prefix whatever the split.
    let cut = HttpLimits {
        max_request_body_kept: 3,
        ..limits()
    };
    for (lim, (reqs, resps, n)) in samples
        .iter()
        .cloned()
        .map(|s| (limits(), s))
        .chain(samples.iter().cloned().map(|s| (cut.clone(), s)))
    {
        let base = run_with(
            lim.clone(),
            &[Ev::R(reqs.clone()), Ev::W(resps.clone()), Ev::Close],
        );
        assert_eq!(base.ex.len(), n);
        assert!(base.errors.is_empty(), "{:?}", base.errors);
        let want = summary(&base.ex);
        for k in 0..=reqs.len() {
            let got = run_with(
                lim.clone(),
                &[
                    Ev::R(reqs[..k].to_vec()),
                    Ev::R(reqs[k..].to_vec()),
                    Ev::W(resps.clone()),
                    Ev::Close,
                ],
            );
            assert_eq!(summary(&got.ex), want, "request split at {k}");
        }
        for k in 0..=resps.len() {
            let got = run_with(
                lim.clone(),
                &[
                    Ev::R(reqs.clone()),
                    Ev::W(resps[..k].to_vec()),
                    Ev::W(resps[k..].to_vec()),
                    Ev::Close,
                ],
            );
            assert_eq!(summary(&got.ex), want, "response split at {k}");
        }
        let mut p = ConnectionParser::new(lim.clone());
        let mut out = ParserOutput::default();
        for b in &reqs {
            p.feed(Read, &Bytes::copy_from_slice(&[*b]), 1, &mut out);
        }
        for b in &resps {
            p.feed(Write, &Bytes::copy_from_slice(&[*b]), 2, &mut out);
        }
        p.close(3, &mut out);
        assert_eq!(summary(&out.exchanges), want, "byte at a time");
        if lim.max_request_body_kept == 3 {
            for e in &base.ex {
                let b = &e.request.body;
                assert_eq!(b.kept_len() as u64, b.len.min(3));
                assert_eq!(b.is_partial(), b.len > 3);
            }
        }
    }
}
