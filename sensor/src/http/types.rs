//! What the HTTP stage hands on: request/response pairs.
//!
//! These values hold raw request data (credentials included) and live only while
//! the pair is being inspected; everything emitted from them goes through
//! redaction (`outputs::pairs`) or fingerprinting (`leak`).

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Which side of the connection the probed process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The process read the request: it serves the API.
    Server,
    /// The process wrote the request: it called an API.
    Client,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Client => "client",
        }
    }
}

/// The header lines of one head, as spans of the head's bytes: no allocation
/// or reference count per header.  Names are lower-case (lower-cased in the
/// head's own copy when it was parsed); values are the raw bytes.
///
/// A `Vec<(HeaderName, Bytes)>` built per head (a lower-cased name and a
/// counted slice per header, each dropped again after the pair) was ~20 % of
/// the live pipeline's instructions.
#[derive(Clone, Default)]
pub struct Headers {
    /// The bytes the spans point into (the whole head, names lower-cased).
    buf: Bytes,
    spans: Vec<HeaderSpan>,
    /// Bytes `buf`'s allocation holds (a built head's buffer may be larger
    /// than what was written into it).
    buf_held: usize,
    /// A final response's: the interim (1xx) responses that came before it,
    /// in order ([`Response::interim`]).  Kept here, with the head they
    /// preceded, so that every holder of a response carries them.
    interim: Vec<InterimHead>,
}

/// An interim (1xx) response's head: a 100 Continue, a 103 Early Hints
/// (whose `Link` headers may name URLs with a request's key in them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterimHead {
    pub status: u16,
    pub headers: Headers,
}

/// Where one header's name and value are in [`Headers::buf`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HeaderSpan {
    pub name_at: u32,
    pub name_len: u32,
    pub value_at: u32,
    pub value_len: u32,
}

/// One header: `name` lower-case, `value` the raw bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    pub name: &'a str,
    pub value: &'a [u8],
}

impl Headers {
    /// `buf` with the headers at `spans`.  Every name span must be ASCII
    /// lower-case (what [`lower_case_names`] makes of httparse's names).
    pub(crate) fn from_spans(buf: Bytes, spans: Vec<HeaderSpan>) -> Headers {
        debug_assert!(spans.iter().all(|s| {
            let n = &buf[s.name_at as usize..][..s.name_len as usize];
            !n.iter().any(|b| !b.is_ascii() || b.is_ascii_uppercase())
        }));
        Headers {
            buf_held: buf.len(),
            buf,
            spans,
            interim: Vec::new(),
        }
    }

    /// Headers written by hand (tests, synthetic pairs); names are lower-cased.
    pub fn from_pairs<N: AsRef<str>, V: AsRef<[u8]>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Headers {
        let mut b = HeadersBuilder::default();
        for (n, v) in pairs {
            b.push(n.as_ref(), v.as_ref());
        }
        b.finish()
    }

    fn name_of(&self, s: &HeaderSpan) -> &[u8] {
        &self.buf[s.name_at as usize..][..s.name_len as usize]
    }

    fn value_of(&self, s: &HeaderSpan) -> &[u8] {
        &self.buf[s.value_at as usize..][..s.value_len as usize]
    }

    fn at(&self, s: &HeaderSpan) -> Header<'_> {
        let name = self.name_of(s);
        debug_assert!(std::str::from_utf8(name).is_ok());
        Header {
            // SAFETY: name spans are UTF-8: httparse's names are `str`s of
            // token bytes (ASCII), `from_pairs` takes `str`s, and ASCII
            // lower-casing keeps UTF-8 valid.  Checking it on every access was
            // a tenth of the pipeline's instructions.
            name: unsafe { std::str::from_utf8_unchecked(name) },
            value: self.value_of(s),
        }
    }

    pub fn iter(&self) -> HeadersIter<'_> {
        HeadersIter {
            headers: self,
            spans: self.spans.iter(),
        }
    }

    /// The first header of that (lower-case) name.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.spans
            .iter()
            .find(|s| self.name_of(s) == name.as_bytes())
            .map(|s| self.value_of(s))
    }

    /// Every value of headers of that (lower-case) name, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.spans
            .iter()
            .filter(move |s| self.name_of(s) == name.as_bytes())
            .map(|s| self.value_of(s))
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Memory these headers hold: their bytes' allocation and spans (and
    /// the interim heads they carry).
    pub(crate) fn held(&self) -> usize {
        self.buf_held
            + self.spans.capacity() * std::mem::size_of::<HeaderSpan>()
            + self.interim.iter().map(|h| h.headers.held()).sum::<usize>()
    }

    /// The interim (1xx) heads that came before this final response's head.
    pub fn interim(&self) -> &[InterimHead] {
        &self.interim
    }

    /// These headers, carrying `interim` (see [`Headers::interim`]).
    pub(crate) fn with_interim(mut self, interim: Vec<InterimHead>) -> Headers {
        self.interim = interim;
        self
    }

    /// The same headers in a buffer of their size (a head parsed from a
    /// gathered buffer may pin more).
    pub(crate) fn compacted(&self) -> Headers {
        let bytes = self.iter().map(|h| h.name.len() + h.value.len() + 4).sum();
        let mut b = HeadersBuilder {
            buf: Vec::with_capacity(bytes),
            spans: Vec::with_capacity(self.len()),
        };
        b.extend(self);
        b.finish().with_interim(self.interim.clone())
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// These headers followed by `more` (trailers join their message's
    /// headers, in HTTP/1.1 as in HTTP/2).
    pub fn appended(&self, more: &Headers) -> Headers {
        let mut all = HeadersBuilder::with_capacity(self.buf.len() + more.buf.len());
        all.extend(self);
        all.extend(more);
        all.finish().with_interim(self.interim.clone())
    }
}

/// Builds [`Headers`] one header at a time into one buffer (HTTP/2 heads,
/// decoded field by field).
#[derive(Default)]
pub struct HeadersBuilder {
    buf: Vec<u8>,
    spans: Vec<HeaderSpan>,
}

impl HeadersBuilder {
    /// Room for `bytes` of headers, and (a guess that saves the first
    /// regrowths) 16 of them.
    pub fn with_capacity(bytes: usize) -> HeadersBuilder {
        HeadersBuilder {
            buf: Vec::with_capacity(bytes),
            spans: Vec::with_capacity(16),
        }
    }

    /// Adds a header; its name is lower-cased.
    pub fn push(&mut self, name: &str, value: &[u8]) {
        self.push_name_bytes(name.as_bytes(), value);
    }

    /// [`Self::push`] of a name off the wire: false, and nothing added, when
    /// it is not UTF-8 (what [`Headers`] needs of a name).  An ASCII name,
    /// the usual, is not validated as UTF-8 besides.
    pub(crate) fn push_bytes(&mut self, name: &[u8], value: &[u8]) -> bool {
        if !name.is_ascii() && std::str::from_utf8(name).is_err() {
            return false;
        }
        self.push_name_bytes(name, value);
        true
    }

    /// `name` must be UTF-8.
    fn push_name_bytes(&mut self, name: &[u8], value: &[u8]) {
        let name_at = self.buf.len() as u32;
        self.buf.extend_from_slice(name);
        lower_case_ascii(&mut self.buf[name_at as usize..]);
        self.buf.extend_from_slice(b": ");
        let value_at = self.buf.len() as u32;
        self.buf.extend_from_slice(value);
        self.buf.extend_from_slice(b"\r\n");
        self.spans.push(HeaderSpan {
            name_at,
            name_len: name.len() as u32,
            value_at,
            value_len: value.len() as u32,
        });
    }

    /// Adds every header of `h`, in order.
    pub fn extend(&mut self, h: &Headers) {
        for header in h {
            self.push(header.name, header.value);
        }
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn finish(self) -> Headers {
        Headers {
            buf_held: self.buf.capacity(),
            buf: Bytes::from(self.buf),
            spans: self.spans,
            interim: Vec::new(),
        }
    }
}

/// The headers of a [`Headers`], in order.
#[derive(Clone)]
pub struct HeadersIter<'a> {
    headers: &'a Headers,
    spans: std::slice::Iter<'a, HeaderSpan>,
}

impl<'a> Iterator for HeadersIter<'a> {
    type Item = Header<'a>;
    fn next(&mut self) -> Option<Header<'a>> {
        self.spans.next().map(|s| self.headers.at(s))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.spans.size_hint()
    }
}

impl ExactSizeIterator for HeadersIter<'_> {}

impl<'a> IntoIterator for &'a Headers {
    type Item = Header<'a>;
    type IntoIter = HeadersIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl PartialEq for Headers {
    fn eq(&self, other: &Headers) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter()) && self.interim == other.interim
    }
}

impl Eq for Headers {}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Lower-cases the names at `spans` in `head` (httparse's names, validated
/// token bytes, so ASCII).
pub(crate) fn lower_case_names(head: &mut [u8], spans: &[HeaderSpan]) {
    for s in spans {
        lower_case_ascii(&mut head[s.name_at as usize..][..s.name_len as usize]);
    }
}

/// `make_ascii_lowercase` eight bytes at a time (it goes byte by byte, which
/// showed at ~4 % of the pipeline).  Bytes ≥ 0x80 are left as they are.  A
/// name of 8 bytes or more ends with one more word overlapping the last one
/// (lower-casing is idempotent), so only names under 8 bytes go byte by byte.
fn lower_case_ascii(b: &mut [u8]) {
    fn word(w: &mut [u8]) {
        const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        const ONES: u64 = 0x0101_0101_0101_0101;
        let x = u64::from_le_bytes(w[..8].try_into().expect("8 bytes"));
        let low = x & LOW7;
        // Per byte, bit 7 set when the low 7 bits are >= 'A' / > 'Z' (no carry
        // crosses bytes: each sum stays below 0x100).
        let ge_a = low + ONES * (0x80 - b'A' as u64);
        let gt_z = low + ONES * (0x7f - b'Z' as u64);
        let upper = ge_a & !gt_z & !x & HIGH;
        w[..8].copy_from_slice(&(x | (upper >> 2)).to_le_bytes());
    }
    let n = b.len();
    if n < 8 {
        b.make_ascii_lowercase();
        return;
    }
    let mut at = 0;
    while at + 8 <= n {
        word(&mut b[at..at + 8]);
        at += 8;
    }
    if at < n {
        word(&mut b[n - 8..]);
    }
}

/// A message body after transfer decoding (chunked framing removed), not yet
/// content-decoded (gzip etc. is the leak stage's business).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Body {
    /// The kept bytes, as the chunks they arrived in (not concatenated, so large
    /// bodies are never copied just to be joined).
    pub chunks: Vec<Bytes>,
    /// Decoded length of the whole body, including bytes past the cap or lost.
    pub len: u64,
    /// Bytes were lost (capture hole) or not kept (past the body cap,
    /// `max_body_bytes`).  A request body cut at `max_request_body_kept` was
    /// seen whole and is not truncated, but it is [`Body::is_partial`].
    pub truncated: bool,
    /// No byte was kept because the caller said the body was not wanted
    /// (the `body_wanted` predicate of `ConnectionParser::feed_with`).
    pub discarded: bool,
}

impl Body {
    /// Not every byte of the body is here: bytes were lost in a capture hole
    /// or not kept (past the body cap, or past `max_request_body_kept`: requests
    /// keep only their first bytes).  A parser of the kept bytes must not take
    /// a value that runs into the end as whole.
    pub fn is_partial(&self) -> bool {
        self.truncated || (self.kept_len() as u64) < self.len
    }

    pub fn kept_len(&self) -> usize {
        self.chunks.iter().map(|c| c.len()).sum()
    }
    /// The kept bytes joined (copies; for tests and small bodies).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.kept_len());
        for c in &self.chunks {
            v.extend_from_slice(c);
        }
        v
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Request target as sent (may hold query credentials: never emit it raw).
    pub target: String,
    /// "HTTP/1.0" or "HTTP/1.1".
    pub version: &'static str,
    pub headers: Headers,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub version: &'static str,
    pub headers: Headers,
    pub body: Body,
}

impl Request {
    /// The first header of that (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name)
    }
}

impl Response {
    /// The first header of that (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name)
    }

    /// The interim (1xx) responses that came before this one (a 100
    /// Continue, 103 Early Hints), bounded by
    /// [`crate::http::limits::MAX_INTERIM_HEADS`] and
    /// [`crate::http::limits::MAX_INTERIM_BYTES`]; those with headers only.
    pub fn interim(&self) -> &[InterimHead] {
        self.headers.interim()
    }
}

/// Monotonic (CLOCK_MONOTONIC, ns) times of the first and last byte of each side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timing {
    pub request_start_ns: u64,
    pub request_end_ns: u64,
    pub response_start_ns: u64,
    pub response_end_ns: u64,
}

impl Timing {
    pub fn latency_us(&self) -> u64 {
        self.response_end_ns.saturating_sub(self.request_start_ns) / 1000
    }
}

/// A request and its response, as the HTTP stage produces them for one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub request: Request,
    pub response: Response,
    pub timing: Timing,
    pub role: Role,
}

/// The process a connection belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub comm: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    pub container_id: Option<String>,
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The connection a pair travelled on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnInfo {
    /// "tgid:ssl-hex:generation", stable for the connection's life (shared
    /// by every pair of the connection: cloned per pair, never copied).
    pub id: Arc<str>,
    /// Remote address when known.
    pub peer: Option<String>,
}

/// A complete pair with where it came from: what the leak stage and the outputs take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpPair {
    pub exchange: Exchange,
    /// Shared by every pair of the process (cloned per pair, never copied).
    pub process: Arc<ProcessInfo>,
    pub conn: ConnInfo,
    /// Number of this pair on its connection, from 1.
    pub seq: u64,
    /// Wall-clock time of the response's last byte.
    pub ts: chrono::DateTime<chrono::Utc>,
}

#[cfg(test)]
mod headers_tests {
    use super::*;

    #[test]
    fn hand_written_names_are_lower_cased_and_found() {
        let h = Headers::from_pairs([
            ("X-API-KEY", &b"k1"[..]),
            ("Host", b"h"),
            ("x-api-key", b"k2"),
        ]);
        assert_eq!(h.len(), 3);
        assert_eq!(h.get("x-api-key"), Some(&b"k1"[..]));
        assert_eq!(h.get("host"), Some(&b"h"[..]));
        assert_eq!(h.get("Host"), None, "lookups take lower-case names");
        let names: Vec<&str> = h.iter().map(|h| h.name).collect();
        assert_eq!(names, ["x-api-key", "host", "x-api-key"]);
        let values: Vec<&[u8]> = h.get_all("x-api-key").collect();
        assert_eq!(values, [&b"k1"[..], b"k2"]);
    }

    #[test]
    fn lower_casing_eight_at_a_time_is_make_ascii_lowercase() {
        let all: Vec<u8> = (0..=255u8).collect();
        for len in 0..all.len() {
            for start in [0, 1, 7, 60, 64, 90, 120, 200] {
                let src = &all[start.min(all.len())..(start + len).min(all.len())];
                let mut want = src.to_vec();
                want.make_ascii_lowercase();
                let mut got = src.to_vec();
                lower_case_ascii(&mut got);
                assert_eq!(got, want, "{src:?}");
            }
        }
        let mut name = *b"X-Partner-CREDENTIAL-Zz@[`{";
        lower_case_ascii(&mut name);
        assert_eq!(&name, b"x-partner-credential-zz@[`{");
    }

    #[test]
    fn equality_is_by_names_and_values() {
        let a = Headers::from_pairs([("A", "1"), ("b", "2")]);
        let b = Headers::from_pairs([("a", "1"), ("B", "2")]);
        assert_eq!(a, b);
        assert_ne!(a, Headers::from_pairs([("a", "1")]));
        assert_ne!(a, Headers::from_pairs([("a", "1"), ("b", "3")]));
        assert!(Headers::default().is_empty());
    }
}
