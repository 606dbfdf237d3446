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

/// Request headers whose values are shown.  Every other request header is
/// redacted: a custom header (`x-partner-credential`, `x-signature`, …) may
/// carry a secret no list names, and the pairs output must not become the
/// leak.  Referer/Origin are shown with their query values redacted.
const SHOWN_REQUEST_HEADERS: &[&str] = &[
    "host",
    "user-agent",
    "accept",
    "accept-encoding",
    "accept-language",
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "expect",
    "upgrade",
    "cache-control",
    "pragma",
    "if-none-match",
    "if-modified-since",
    "range",
    "x-request-id",
    "x-forwarded-proto",
    "traceparent",
];

/// Response headers that can carry credentials by their nature; shown redacted
/// (Location keeps its path and parameter names).  Besides these, every
/// response header the leak rules call a credential header on a request
/// ([`Detector::is_credential_header`]: `x-auth-token`, `x-subject-token`,
/// `api-key`, `x-amz-security-token`, `x-client-secret`, those `[leak]`
/// lists) is redacted: servers issue tokens in them.
const SECRET_BEARING_RESPONSE_HEADERS: &[&str] =
    &["set-cookie", "www-authenticate", "authorization"];

fn value_string(h: &Header) -> String {
    String::from_utf8_lossy(h.value).into_owned()
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
            let v = if h.name == "referer" || h.name == "origin" {
                redact_target(&value_string(&h))
            } else if SHOWN_REQUEST_HEADERS.contains(&h.name)
                && !detector.is_credential_header(h.name)
            {
                value_string(&h)
            } else {
                REDACTED.to_string()
            };
            (h.name.to_string(), v)
        })
        .collect()
}

fn response_headers(
    pair: &HttpPair,
    detector: &Detector,
    findings: &[Finding],
) -> Vec<(String, String)> {
    pair.exchange
        .response
        .headers
        .iter()
        .map(|h| {
            let leaked = findings.iter().any(|f| {
                f.sink.location == SinkLocation::Header && f.sink.name.as_deref() == Some(h.name)
            });
            let v = if h.name == "set-cookie" {
                redact_cookie_like(&value_string(&h))
            } else if h.name == "location" || h.name == "content-location" || h.name == "refresh" {
                redact_target(&value_string(&h))
            } else if leaked
                || SECRET_BEARING_RESPONSE_HEADERS.contains(&h.name)
                || detector.is_credential_header(h.name)
            {
                REDACTED.to_string()
            } else {
                value_string(&h)
            };
            (h.name.to_string(), v)
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
            headers: response_headers(pair, detector, findings),
            body_len: ex.response.body.len,
            body_truncated: ex.response.body.truncated,
        },
        latency_us: ex.timing.latency_us(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::types::{Body, ConnInfo, Exchange, Headers, Request, Response, Role};
    use crate::leak::{Fingerprinter, LeakConfig};

    fn h(name: &str, value: &str) -> (String, String) {
        (name.to_string(), value.to_string())
    }

    #[test]
    fn request_headers_are_shown_only_when_known_benign() {
        let secret = "pc_Zq8Xv2Lr9Tn4Wm7Yb1Kd6Hs3Jf0Gc5A";
        let pair = HttpPair {
            exchange: Exchange {
                request: Request {
                    method: "GET".into(),
                    target: format!("/cb?token={secret}&page=2"),
                    version: "HTTP/1.1",
                    headers: Headers::from_pairs([
                        h("host", "api.example"),
                        h("user-agent", "curl/8"),
                        h("x-partner-credential", secret),
                        h("x-api-key", secret),
                        h("authorization", &format!("Bearer {secret}")),
                        h("referer", &format!("https://a.example/?key={secret}")),
                    ]),
                    body: Body::default(),
                },
                response: Response {
                    status: 200,
                    version: "HTTP/1.1",
                    headers: Headers::from_pairs([h("content-type", "application/json")]),
                    body: Body::default(),
                },
                timing: Default::default(),
                role: Role::Server,
            },
            process: Default::default(),
            conn: ConnInfo {
                id: "1:1:1".into(),
                peer: None,
            },
            seq: 1,
            ts: chrono::DateTime::from_timestamp(1_795_000_000, 0).unwrap(),
        };
        let det = Detector::new(LeakConfig::default(), Fingerprinter::new([1; 32]));
        let rec = pair_record(&pair, &det, &[]);
        let json = serde_json::to_string(&rec).unwrap();
        assert!(!json.contains(secret), "raw credential in the pair record");
        let shown: Vec<(&str, &str)> = rec
            .request
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(shown[0], ("host", "api.example"));
        assert_eq!(shown[1], ("user-agent", "curl/8"));
        // A header no list names is redacted too: default deny.
        assert_eq!(shown[2], ("x-partner-credential", REDACTED));
        assert_eq!(shown[3], ("x-api-key", REDACTED));
        assert_eq!(shown[4], ("authorization", REDACTED));
        assert!(shown[5].1.starts_with("https://a.example/?key="));
        assert!(rec.request.path.contains("page="));
    }

    /// A random token of `n` base62 characters (varied per header, the same
    /// on every run).
    fn random_secret(rng: &mut crate::test_rng::XorShift, n: usize) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..n)
            .map(|_| ALPHABET[rng.below(ALPHABET.len())] as char)
            .collect()
    }

    #[test]
    fn response_credential_headers_are_redacted() {
        // Servers issue tokens in response headers named as request
        // credential headers are (OpenStack's X-Subject-Token, a login's
        // X-Auth-Token): the same rule redacts them.
        let mut rng = crate::test_rng::XorShift::new(0x5eed_f5ec_7e70);
        let names = [
            "x-auth-token",
            "x-access-token",
            "x-subject-token",
            "api-key",
            "x-amz-security-token",
            "x-client-secret",
            "authorization",
            // Listed in the `[leak]` headers of the config below only.
            "x-partner-grant",
        ];
        let secrets: Vec<String> = names.iter().map(|_| random_secret(&mut rng, 40)).collect();
        let cookie_secret = random_secret(&mut rng, 40);
        let mut response_headers: Vec<(String, String)> =
            vec![h("content-type", "application/json")];
        response_headers.extend(names.iter().zip(&secrets).map(|(n, s)| h(n, s)));
        response_headers.push(h(
            "set-cookie",
            &format!("sid={cookie_secret}; Path=/; HttpOnly"),
        ));
        response_headers.push(h("x-request-id", "req-42"));
        let pair = HttpPair {
            exchange: Exchange {
                request: Request {
                    method: "POST".into(),
                    target: "/v3/auth/tokens".into(),
                    version: "HTTP/1.1",
                    headers: Headers::from_pairs([h("host", "keystone.example")]),
                    body: Body::default(),
                },
                response: Response {
                    status: 201,
                    version: "HTTP/1.1",
                    headers: Headers::from_pairs(response_headers),
                    body: Body::default(),
                },
                timing: Default::default(),
                role: Role::Client,
            },
            process: Default::default(),
            conn: ConnInfo {
                id: "1:1:1".into(),
                peer: None,
            },
            seq: 1,
            ts: chrono::DateTime::from_timestamp(1_795_000_000, 0).unwrap(),
        };
        let mut cfg = LeakConfig::default();
        cfg.headers.push("x-partner-grant".into());
        let det = Detector::new(cfg, Fingerprinter::new([1; 32]));
        let rec = pair_record(&pair, &det, &[]);
        let json = serde_json::to_string(&rec).unwrap();
        for (name, secret) in names.iter().zip(&secrets) {
            assert!(
                !json.contains(secret.as_str()),
                "the value of response header {name} is in the pair record: {json}"
            );
        }
        assert!(
            !json.contains(&cookie_secret),
            "a Set-Cookie value in the pair record"
        );
        let shown: Vec<(&str, &str)> = rec
            .response
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(shown[0], ("content-type", "application/json"));
        for (i, name) in names.iter().enumerate() {
            assert_eq!(shown[i + 1], (*name, REDACTED));
        }
        assert_eq!(shown[names.len() + 1], ("set-cookie", "sid=<redacted>"));
        // Headers that carry no credential are still shown.
        assert_eq!(shown[names.len() + 2], ("x-request-id", "req-42"));
    }
}
