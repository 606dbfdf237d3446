//! What the HTTP stage hands on: request/response pairs.
//!
//! These values hold raw request data (credentials included) and live only while
//! the pair is being inspected; everything emitted from them goes through
//! redaction (`outputs::pairs`) or fingerprinting (`leak`).

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
    pub name: String,
    pub value: Bytes,
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
    /// Bytes were lost (capture hole) or not kept (past the body cap).
    pub truncated: bool,
}

impl Body {
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
    pub process: ProcessInfo,
    pub conn: ConnInfo,
    /// Number of this pair on its connection, from 1.
    pub seq: u64,
    /// Wall-clock time of the response's last byte.
    pub ts: chrono::DateTime<chrono::Utc>,
}
