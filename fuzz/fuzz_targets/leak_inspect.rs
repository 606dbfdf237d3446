//! `Detector::inspect` on a request/response pair whose credential values,
//! request body, `Location`, content coding and response body (in chunks) all
//! come from the input: extraction, needle forms, the streaming matcher across
//! chunk boundaries and every decompressor (bombs, truncation, garbage).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sensor_http::http::types::{
    Body, ConnInfo, Exchange, Headers, HttpPair, ProcessInfo, Request, Response, Role, Timing,
};
use sensor_http::leak::{Detector, Fingerprinter, LeakConfig};

fn header(name: &'static str, value: &[u8]) -> (&'static str, Vec<u8>) {
    (name, value.to_vec())
}

fn body(chunks: Vec<Bytes>) -> Body {
    Body {
        len: chunks.iter().map(|c| c.len() as u64).sum(),
        chunks,
        truncated: false,
        discarded: false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cfg, rest)) = data.split_first() else {
        return;
    };
    // Fields separated by 0xFF: bearer, api key, query token, cookie, request
    // body, Location, response body.
    let mut f = rest.splitn(7, |&b| b == 0xFF);
    let mut next = || f.next().unwrap_or(&[]);
    let (bearer, api_key, query, cookie, req_body, location, resp_body) =
        (next(), next(), next(), next(), next(), next(), next());

    let mut req_headers = vec![
        header("authorization", &[b"Bearer ".as_slice(), bearer].concat()),
        header("x-api-key", api_key),
        header("cookie", &[b"session=".as_slice(), cookie].concat()),
    ];
    req_headers.push(header(
        "content-type",
        match cfg & 3 {
            0 => b"application/json".as_slice(),
            1 => b"application/x-www-form-urlencoded",
            2 => b"multipart/form-data; boundary=xyz",
            _ => b"text/plain",
        },
    ));
    let target = format!("/cb?token={}", String::from_utf8_lossy(query));
    let coding: &[u8] = match (cfg >> 2) & 7 {
        0 => b"gzip",
        1 => b"deflate",
        2 => b"br",
        3 => b"zstd",
        4 => b"gzip, br",
        5 => b"x-unknown",
        _ => b"identity",
    };
    // Response body in chunks of 1..=64 bytes (or whole).
    let step = ((cfg >> 5) as usize * 9).max(1);
    let resp_chunks: Vec<Bytes> = resp_body.chunks(step).map(Bytes::copy_from_slice).collect();
    let pair = HttpPair {
        exchange: Exchange {
            request: Request {
                method: "POST".into(),
                target,
                version: "HTTP/1.1",
                headers: Headers::from_pairs(req_headers),
                body: body(vec![Bytes::copy_from_slice(req_body)]),
            },
            response: Response {
                status: 400,
                version: "HTTP/1.1",
                headers: Headers::from_pairs([
                    header("content-encoding", coding),
                    header("location", location),
                    header("set-cookie", &[b"session=".as_slice(), cookie].concat()),
                ]),
                body: body(resp_chunks),
            },
            timing: Timing::default(),
            role: Role::Server,
        },
        process: ProcessInfo::default().into(),
        conn: ConnInfo {
            id: "1:1:1".into(),
            peer: None,
        },
        seq: 1,
        ts: chrono::DateTime::from_timestamp(1_795_000_000, 0).unwrap(),
    };
    let detector = Detector::new(LeakConfig::default(), Fingerprinter::new([7; 32]));
    let insp = detector.inspect(&pair);
    // At most one finding per (credential, sink): 3 headers + body, and a
    // bounded number of credentials from this request.
    assert!(
        insp.findings.len() <= 64,
        "{} findings",
        insp.findings.len()
    );
    for finding in &insp.findings {
        assert_eq!(finding.credential.fingerprint.len(), 16);
    }
});
