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

/// One header; `name` is lower-case, `value` the raw bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: HeaderName,
    pub value: Bytes,
}

/// A lower-case header name.  The common ones are static strings: allocating
/// and freeing a `String` per header of every message was a tenth of the live
/// pipeline's time.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HeaderName(std::borrow::Cow<'static, str>);

/// Names sent on nearly every message (requests and responses of common
/// servers and clients), kept without allocating.
const COMMON_HEADER_NAMES: &[&str] = &[
    "accept",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "access-control-allow-origin",
    "authorization",
    "cache-control",
    "connection",
    "content-encoding",
    "content-length",
    "content-location",
    "content-type",
    "cookie",
    "date",
    "etag",
    "expires",
    "host",
    "keep-alive",
    "last-modified",
    "location",
    "origin",
    "pragma",
    "referer",
    "server",
    "set-cookie",
    "strict-transport-security",
    "transfer-encoding",
    "user-agent",
    "vary",
    "x-api-key",
    "x-content-type-options",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-frame-options",
    "x-request-id",
];

/// Longest name looked up in the common table (longer ones are allocated).
const COMMON_NAME_MAX: usize = 32;

/// Slots of the open-addressing table over [`COMMON_HEADER_NAMES`] (a power
/// of two, under half full so a miss ends after a probe or two).
const COMMON_SLOTS: usize = 128;

fn name_slot(lower: &[u8]) -> usize {
    let (first, last) = match lower {
        [] => (0, 0),
        [f, .., l] => (*f, *l),
        [f] => (*f, *f),
    };
    let mid = lower.get(lower.len() / 2).copied().unwrap_or(0);
    (lower.len() * 131 + first as usize * 31 + mid as usize * 7 + last as usize) % COMMON_SLOTS
}

/// The static name equal to `lower`, if it is a common one: one hash and
/// usually one comparison, instead of a scan of the list.
fn common_name(lower: &[u8]) -> Option<&'static str> {
    static TABLE: std::sync::OnceLock<[Option<&'static str>; COMMON_SLOTS]> =
        std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [None; COMMON_SLOTS];
        for name in COMMON_HEADER_NAMES {
            let mut i = name_slot(name.as_bytes());
            while t[i].is_some() {
                i = (i + 1) % COMMON_SLOTS;
            }
            t[i] = Some(*name);
        }
        t
    });
    let mut i = name_slot(lower);
    while let Some(name) = table[i] {
        if name.as_bytes() == lower {
            return Some(name);
        }
        i = (i + 1) % COMMON_SLOTS;
    }
    None
}

impl HeaderName {
    /// The lower-case form of a name as it came on the wire.
    pub fn from_wire(raw: &str) -> HeaderName {
        if raw.len() <= COMMON_NAME_MAX {
            let mut buf = [0u8; COMMON_NAME_MAX];
            let lower = &mut buf[..raw.len()];
            lower.copy_from_slice(raw.as_bytes());
            lower.make_ascii_lowercase();
            if let Some(s) = common_name(lower) {
                return HeaderName(std::borrow::Cow::Borrowed(s));
            }
        }
        HeaderName(std::borrow::Cow::Owned(raw.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for HeaderName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for HeaderName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for HeaderName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for HeaderName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for HeaderName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for HeaderName {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

/// For names written by hand (tests, configuration): lower-cased like wire names.
impl From<&str> for HeaderName {
    fn from(s: &str) -> HeaderName {
        HeaderName::from_wire(s)
    }
}

impl From<HeaderName> for String {
    fn from(n: HeaderName) -> String {
        n.0.into_owned()
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
    pub headers: Vec<Header>,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub version: &'static str,
    pub headers: Vec<Header>,
    pub body: Body,
}

/// Looks up the first header of that (lower-case) name.
pub fn header<'a>(headers: &'a [Header], name: &str) -> Option<&'a Bytes> {
    headers.iter().find(|h| h.name == name).map(|h| &h.value)
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        header(&self.headers, name)
    }
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        header(&self.headers, name)
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
    /// "tgid:ssl-hex:generation", stable for the connection's life.
    pub id: String,
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
mod header_name_tests {
    use super::*;

    #[test]
    fn wire_names_are_lower_cased_whether_common_or_not() {
        for (wire, want) in [
            ("Content-Length", "content-length"),
            ("X-API-KEY", "x-api-key"),
            ("host", "host"),
            ("X-Partner-Credential", "x-partner-credential"),
            // Longer than the common-name table's limit.
            (
                "X-A-Very-Long-Custom-Header-Name-Past-The-Table",
                "x-a-very-long-custom-header-name-past-the-table",
            ),
            ("", ""),
        ] {
            let n = HeaderName::from_wire(wire);
            assert_eq!(n.as_str(), want);
            assert_eq!(n, want);
        }
    }

    #[test]
    fn every_common_name_is_already_lower_case_and_fits_the_table() {
        for n in COMMON_HEADER_NAMES {
            assert_eq!(n.to_ascii_lowercase(), *n);
            assert!(n.len() <= COMMON_NAME_MAX, "{n}");
            assert!(matches!(
                HeaderName::from_wire(&n.to_ascii_uppercase()).0,
                std::borrow::Cow::Borrowed(_)
            ));
        }
    }
}
