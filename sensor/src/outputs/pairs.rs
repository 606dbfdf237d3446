//! `--pairs`: every reassembled pair as one JSON line, schema `sensor.pair.v1`,
//! with credential values redacted.  A debugging aid that must never become a
//! way for secrets to leave the process.

use serde::Serialize;

use crate::finding::{Finding, SinkLocation};
use crate::http::types::{Header, HttpPair};
use crate::leak::{redact_target, Detector};

pub const PAIR_SCHEMA: &str = "sensor.pair.v1";
pub const REDACTED: &str = "<redacted>";

#[derive(Serialize)]
pub struct PairRecord<'a> {
    pub schema: &'static str,
    pub ts: String,
    pub role: &'static str,
    pub process: PairProcess<'a>,
    pub connection: PairConnection<'a>,
    pub request: PairRequest,
    pub response: PairResponse,
    pub latency_us: u64,
}

#[derive(Serialize)]
pub struct PairProcess<'a> {
    pub pid: u32,
    pub comm: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<&'a str>,
}

#[derive(Serialize)]
pub struct PairConnection<'a> {
    pub id: &'a str,
    pub peer: Option<&'a str>,
    pub seq: u64,
}

#[derive(Serialize)]
pub struct PairRequest {
    pub method: String,
    pub path: String,
    pub version: &'static str,
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    pub body_truncated: bool,
}

#[derive(Serialize)]
pub struct PairResponse {
    pub status: u16,
    pub version: &'static str,
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    pub body_truncated: bool,
}

/// Request headers whose values are always credentials, whatever the config says.
const ALWAYS_SECRET_REQUEST_HEADERS: &[&str] = &["authorization", "proxy-authorization", "cookie"];

/// Response headers that can carry credentials by their nature; shown redacted
/// (Location keeps its path and parameter names).
const SECRET_BEARING_RESPONSE_HEADERS: &[&str] =
    &["set-cookie", "www-authenticate", "authorization"];

fn value_string(h: &Header) -> String {
    String::from_utf8_lossy(&h.value).into_owned()
}

fn redact_cookie_like(v: &str) -> String {
    // Keep the cookie name, drop its value and attributes' values.
    match v.split_once('=') {
        Some((name, _)) => format!("{}={REDACTED}", name.trim()),
        None => REDACTED.to_string(),
    }
}

fn request_headers(pair: &HttpPair, detector: &Detector) -> Vec<(String, String)> {
    pair.exchange
        .request
        .headers
        .iter()
        .map(|h| {
            let secret = ALWAYS_SECRET_REQUEST_HEADERS.contains(&h.name.as_str())
                || detector.is_credential_header(&h.name);
            let v = if secret {
                REDACTED.to_string()
            } else if h.name == "referer" || h.name == "origin" {
                redact_target(&value_string(h))
            } else {
                value_string(h)
            };
            (h.name.clone(), v)
        })
        .collect()
}

fn response_headers(pair: &HttpPair, findings: &[Finding]) -> Vec<(String, String)> {
    pair.exchange
        .response
        .headers
        .iter()
        .map(|h| {
            let leaked = findings.iter().any(|f| {
                f.sink.location == SinkLocation::Header && f.sink.name.as_deref() == Some(&h.name)
            });
            let v = if h.name == "set-cookie" {
                redact_cookie_like(&value_string(h))
            } else if h.name == "location" || h.name == "content-location" || h.name == "refresh" {
                redact_target(&value_string(h))
            } else if leaked || SECRET_BEARING_RESPONSE_HEADERS.contains(&h.name.as_str()) {
                REDACTED.to_string()
            } else {
                value_string(h)
            };
            (h.name.clone(), v)
        })
        .collect()
}

/// The redacted JSON record of a pair.  `findings` are the pair's findings, so a
/// header that leaked is redacted even when it is not secret-bearing by name.
pub fn pair_record<'a>(
    pair: &'a HttpPair,
    detector: &Detector,
    findings: &[Finding],
) -> PairRecord<'a> {
    let ex = &pair.exchange;
    PairRecord {
        schema: PAIR_SCHEMA,
        ts: crate::outputs::rfc3339_micros(&pair.ts),
        role: ex.role.as_str(),
        process: PairProcess {
            pid: pair.process.pid,
            comm: &pair.process.comm,
            container_id: pair.process.container_id.as_deref(),
            pod: pair.process.pod.as_deref(),
        },
        connection: PairConnection {
            id: &pair.conn.id,
            peer: pair.conn.peer.as_deref(),
            seq: pair.seq,
        },
        request: PairRequest {
            method: ex.request.method.clone(),
            path: redact_target(&ex.request.target),
            version: ex.request.version,
            headers: request_headers(pair, detector),
            body_len: ex.request.body.len,
            body_truncated: ex.request.body.truncated,
        },
        response: PairResponse {
            status: ex.response.status,
            version: ex.response.version,
            headers: response_headers(pair, findings),
            body_len: ex.response.body.len,
            body_truncated: ex.response.body.truncated,
        },
        latency_us: ex.timing.latency_us(),
    }
}
