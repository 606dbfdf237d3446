//! The sensor's outputs as the contract (design/contract.md) defines them,
//! parsed independently of the sensor's own types: these tests check the
//! contract, not the implementation.  Enum-like fields stay strings so an
//! unexpected value shows up in an assertion message instead of a parse error.

use serde::Deserialize;

pub const FINDING_SCHEMA: &str = "sensor.finding.v1";
pub const PAIR_SCHEMA: &str = "sensor.pair.v1";

#[derive(Clone, Debug, Deserialize)]
pub struct Finding {
    pub schema: String,
    pub ts: String,
    pub kind: String,
    pub severity: String,
    pub exposure: String,
    pub credential: Credential,
    pub sink: Sink,
    pub request: FindingRequest,
    pub response: FindingResponse,
    pub role: String,
    pub process: Process,
    pub connection: Connection,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Credential {
    pub source: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub fingerprint: String,
    pub length: usize,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Sink {
    pub location: String,
    pub name: Option<String>,
    pub encoding: String,
    pub content_encoding: String,
    pub offset: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct FindingRequest {
    pub method: String,
    pub path: String,
    pub host: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct FindingResponse {
    pub status: u16,
    pub content_type: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Process {
    pub pid: u32,
    pub comm: String,
    #[serde(default)]
    pub container_id: Option<String>,
    #[serde(default)]
    pub pod: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Connection {
    pub id: String,
    pub peer: Option<String>,
    /// Pairs only: number of the pair on its connection, from 1.
    #[serde(default)]
    pub seq: Option<u64>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Pair {
    pub schema: String,
    pub ts: String,
    pub role: String,
    pub process: Process,
    pub connection: Connection,
    pub request: PairRequest,
    pub response: PairResponse,
    pub latency_us: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct PairRequest {
    pub method: String,
    pub path: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    pub body_truncated: bool,
}

#[derive(Clone, Debug, Deserialize)]
pub struct PairResponse {
    pub status: u16,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    pub body_truncated: bool,
}

impl Pair {
    /// The request path without its query.
    pub fn path_only(&self) -> &str {
        strip_query(&self.request.path)
    }

    pub fn request_header(&self, name: &str) -> Option<&str> {
        header(&self.request.headers, name)
    }

    pub fn response_header(&self, name: &str) -> Option<&str> {
        header(&self.response.headers, name)
    }
}

impl Finding {
    pub fn path_only(&self) -> &str {
        strip_query(&self.request.path)
    }

    /// One line for assertion messages (no secret in a finding to begin with).
    pub fn summary(&self) -> String {
        format!(
            "{} {} {} -> {} | {}/{} ({}) -> {}{} enc={} ce={} off={} | {} pid={} conn={}",
            self.request.method,
            self.request.path,
            self.response.status,
            self.exposure,
            self.credential.source,
            self.credential.name,
            self.credential.kind,
            self.sink.location,
            self.sink
                .name
                .as_deref()
                .map(|n| format!(":{n}"))
                .unwrap_or_default(),
            self.sink.encoding,
            self.sink.content_encoding,
            self.sink.offset,
            self.role,
            self.process.pid,
            self.connection.id
        )
    }
}

pub fn strip_query(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Parses complete JSON lines (a trailing line without '\n' may still be
/// being written and is left for the next read).
pub fn parse_lines<T: for<'de> Deserialize<'de>>(text: &str) -> anyhow::Result<Vec<T>> {
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| {
                // The line itself is not shown: it could hold a leaked secret.
                anyhow::anyhow!("line {} is not a valid contract object: {e}", i + 1)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples of design/contract.md, verbatim.
    const FINDING_EXAMPLE: &str = r#"{
  "schema": "sensor.finding.v1",
  "ts": "2026-11-22T21:00:00.123456Z",
  "kind": "credential_leak",
  "severity": "high",
  "exposure": "full",
  "credential": {
    "source": "header", "name": "x-api-key",
    "type": "api_key", "fingerprint": "3f9a0c1b2d4e5f60", "length": 40
  },
  "sink": { "location": "body", "name": null, "encoding": "json_escaped",
            "content_encoding": "gzip", "offset": 1234 },
  "request":  { "method": "GET", "path": "/v1/items", "host": "api.example" },
  "response": { "status": 400, "content_type": "application/json" },
  "role": "server",
  "process": { "pid": 4242, "comm": "uvicorn", "container_id": null, "pod": null },
  "connection": { "id": "4242:7:1", "peer": null }
}"#;

    const PAIR_EXAMPLE: &str = r#"{
  "schema": "sensor.pair.v1",
  "ts": "2026-11-22T21:00:00.120000Z",
  "role": "server",
  "process": { "pid": 4242, "comm": "uvicorn" },
  "connection": { "id": "4242:7:1", "peer": null, "seq": 3 },
  "request":  { "method": "POST", "path": "/v1/items", "version": "HTTP/1.1",
                "headers": [["host", "api.example"], ["x-api-key", "<redacted>"]],
                "body_len": 1048576, "body_truncated": false },
  "response": { "status": 200, "version": "HTTP/1.1",
                "headers": [["content-type", "application/json"]],
                "body_len": 17, "body_truncated": false },
  "latency_us": 1830
}"#;

    fn one_line(json: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        format!("{v}\n")
    }

    #[test]
    fn contract_examples_parse() {
        let f: Vec<Finding> = parse_lines(&one_line(FINDING_EXAMPLE)).unwrap();
        assert_eq!(f[0].credential.kind, "api_key");
        assert_eq!(f[0].sink.name, None);
        assert_eq!(f[0].response.status, 400);
        let p: Vec<Pair> = parse_lines(&one_line(PAIR_EXAMPLE)).unwrap();
        assert_eq!(p[0].connection.seq, Some(3));
        assert_eq!(p[0].request.body_len, 1 << 20);
        assert_eq!(p[0].request_header("X-Api-Key"), Some("<redacted>"));
    }

    #[test]
    fn partial_last_line_waits_and_bad_lines_fail_without_echo() {
        let text = format!("{}{{\"schema\": \"sensor.pair", one_line(PAIR_EXAMPLE));
        assert_eq!(parse_lines::<Pair>(&text).unwrap().len(), 1);
        let err = parse_lines::<Pair>("{\"secret-looking\": 1}\n")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret-looking"), "{err}");
    }

    #[test]
    fn paths_lose_their_query() {
        assert_eq!(strip_query("/search?api_key=<redacted>&q=x"), "/search");
        assert_eq!(strip_query("/v1/items"), "/v1/items");
    }
}
