//! Deterministic findings and stats for tests of `sensor watch` (unit, snapshot,
//! fake-API and tmux tests all use the same ones).

use crate::finding::{
    ContentEncoding, CredentialRef, CredentialSource, CredentialType, Encoding, Exposure, Finding,
    RequestSummary, ResponseSummary, Severity, Sink, SinkLocation, FINDING_SCHEMA,
};
use crate::http::types::{ConnInfo, ProcessInfo, Role};
use crate::outputs::live::{AttachedLibrary, BlindProcess, StatsSnapshot};

/// A finding number `i` on `path`, with sink `body` or `header:<name>`.
/// Its time is 2026-11-22T21:00:00Z + i seconds.
pub fn finding(i: u32, path: &str, sink: &str) -> Finding {
    let secs = 21 * 3600 + i as u64;
    let ts = format!(
        "2026-11-22T{:02}:{:02}:{:02}.{:06}Z",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60,
        (i as u64 * 1000) % 1_000_000
    );
    let (location, name, status) = match sink.split_once(':') {
        Some((_, name)) => (SinkLocation::Header, Some(name.to_string()), 302),
        None => (SinkLocation::Body, None, 400),
    };
    Finding {
        schema: FINDING_SCHEMA.to_string(),
        ts,
        kind: "credential_leak".to_string(),
        severity: Severity::High,
        exposure: Exposure::Full,
        credential: CredentialRef {
            source: CredentialSource::Header,
            name: "x-api-key".to_string(),
            kind: CredentialType::ApiKey,
            fingerprint: "3f9a0c1b2d4e5f60".to_string(),
            length: 40,
        },
        sink: Sink {
            location,
            name,
            encoding: Encoding::JsonEscaped,
            content_encoding: ContentEncoding::Identity,
            offset: 17,
        },
        request: RequestSummary {
            method: "GET".to_string(),
            path: path.to_string(),
            host: Some("api.example".to_string()),
        },
        response: ResponseSummary {
            status,
            content_type: Some("application/json".to_string()),
        },
        role: Role::Server,
        process: ProcessInfo {
            pid: 4242,
            comm: "uvicorn".to_string(),
            ..Default::default()
        },
        connection: ConnInfo {
            id: "4242:7:1".into(),
            peer: None,
        },
    }
}

/// A varied set: redirect, error echo, debug header, Set-Cookie, client role.
pub fn varied_findings() -> Vec<Finding> {
    let mut out = Vec::new();
    let mut redirect = finding(1, "/oauth/authorize", "header:location");
    redirect.credential.source = CredentialSource::Query;
    redirect.credential.name = "access_token".into();
    redirect.credential.kind = CredentialType::AccessToken;
    redirect.credential.fingerprint = "a1b2c3d4e5f60718".into();
    redirect.sink.encoding = Encoding::Percent;
    out.push(redirect);
    for i in 2..5 {
        out.push(finding(i, "/v1/items", "body"));
    }
    let mut debug = finding(5, "/v1/debug", "header:x-debug-token");
    debug.severity = Severity::Medium;
    debug.response.status = 200;
    debug.credential.source = CredentialSource::Authorization;
    debug.credential.name = "bearer".into();
    debug.credential.kind = CredentialType::Jwt;
    debug.credential.fingerprint = "0badc0ffee112233".into();
    debug.sink.encoding = Encoding::Plain;
    debug.process.pid = 777;
    debug.process.comm = "gunicorn".into();
    debug.process.pod = Some("billing-7d9f".into());
    out.push(debug);
    let mut cookie = finding(6, "/login", "header:set-cookie");
    cookie.credential.source = CredentialSource::Cookie;
    cookie.credential.name = "session".into();
    cookie.credential.kind = CredentialType::SessionCookie;
    cookie.credential.fingerprint = "feedfacecafe0001".into();
    cookie.response.status = 200;
    cookie.sink.encoding = Encoding::Plain;
    out.push(cookie);
    let mut client = finding(7, "/v2/charges", "body");
    client.role = Role::Client;
    client.severity = Severity::Critical;
    client.credential.source = CredentialSource::Authorization;
    client.credential.name = "bearer".into();
    client.credential.kind = CredentialType::BearerToken;
    client.credential.fingerprint = "5555aaaa5555aaaa".into();
    client.request.method = "POST".into();
    client.response.status = 500;
    client.process.pid = 31337;
    client.process.comm = "node".into();
    out.push(client);
    out
}

pub fn stats() -> StatsSnapshot {
    StatsSnapshot {
        version: "0.1.0".into(),
        node: "node-a".into(),
        uptime_s: 3725,
        attached_libraries: vec![AttachedLibrary {
            path: "/usr/lib/x86_64-linux-gnu/libssl.so.3".into(),
            library: "openssl".into(),
            mode: "internal".into(),
            processes: 3,
        }],
        attached_processes: 3,
        blind_processes: vec![BlindProcess {
            pid: 900,
            comm: "caddy".into(),
            reason: "go_tls".into(),
            expected: false,
        }],
        events_total: 123_456,
        events_per_s: 812.5,
        lost_events: 0,
        truncated_bytes: 0,
        parse_errors: 2,
        connections_active: 14,
        pairs_server: 9_876,
        pairs_client: 321,
        pairs_per_s_server: 42.0,
        pairs_per_s_client: 3.5,
        findings_total: 7,
        masked_echoes: 1,
    }
}
