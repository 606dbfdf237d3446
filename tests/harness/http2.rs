//! The HTTP/2 leak scenarios: every leak and benign request of
//! [`Server::nginx_h2`] and [`Server::node_h2`] with fresh random
//! credentials, sent over ONE HTTP/2 connection by curl (`--http2`) or httpx
//! (`http2=True`), the raw responses checked (the credential really is where
//! the finding must say), and the exact findings the sensor must report —
//! the same a leak over HTTP/1.1 gives.
//!
//! nginx (`tests/apps/nginx_h2.conf.template`), source → sink (encoding):
//!
//! | request | credential | sink |
//! | --- | --- | --- |
//! | GET /v1/items → 401 | header x-api-key | body (plain) |
//! | GET /v1/debug | authorization bearer | header x-debug-authorization |
//! | GET /oauth/authorize?access_token= → 302 | query access_token | header location (fragment) |
//! | GET /v1/remember | cookie session | header set-cookie (remember_token=) |
//! | GET /v1/trace | header x-auth-token | trailer x-debug-token (sink header x-debug-token) |
//! | POST /oauth/token (JSON) → 401 | json client_secret | body (plain) |
//! | GET /gz/export | header x-api-key | body, content_encoding gzip |
//! | GET /v1/export | header x-api-key | body past 64 KiB (70,043+ bytes, several DATA frames) |
//!
//! Benign (credentials sent): GET /v1/status, GET /big.bin (300,000 bytes).
//!
//! node (`tests/apps/leaky_node_h2.js`):
//!
//! | request | credential | sink |
//! | --- | --- | --- |
//! | GET /v1/items → 401 | header x-api-key | body (plain) |
//! | GET /oauth/authorize → 302 | authorization bearer | header location (query) |
//! |  | header x-id-token | header location (fragment) |
//! | POST /oauth/token (JSON, `/` `+` in the secret) → 401 | json client_secret | body, `/` → `\/` (json_escaped) |
//! | GET /v1/session | header x-auth-token | header x-debug-token |
//! | GET /v1/remember | cookie session | header set-cookie |
//! | GET /v1/trace | authorization bearer | trailer x-debug-authorization |
//! | GET /v1/stream | header x-api-key | body past 64 KiB (several DATA frames) |
//! | GET /gz/export | header x-api-key | body, content_encoding gzip |
//! | GET /v1/links | header x-api-key (`+ / =`) | body (percent) |
//! | GET /search?api_key= | query api_key (holds `&`) | body (html_entity) |
//! | GET /v1/debug/blob | authorization bearer | body (base64) |
//!
//! Benign: GET /v1/masked (masked echo), GET /v1/status, GET /v1/large
//! (1 MiB), POST /v1/upload (1 MiB request body).

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};

use crate::cert::TestCert;
use crate::client::{curl_h2, PyClient};
use crate::expect::ExpectedFinding;
use crate::secrets::{base64_encode, random_alphanum, Secret};
use crate::server::{
    deterministic_bytes, nginx_h2_export_body, Server, NGINX_H2_BIG_FILE, NGINX_H2_EXPORT_FILLER,
};

/// The HTTP/2 servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum H2App {
    /// [`Server::nginx_h2`].
    Nginx,
    /// [`Server::node_h2`].
    Node,
}

impl H2App {
    pub fn start(self, cert: &TestCert) -> Result<Server> {
        match self {
            H2App::Nginx => Server::nginx_h2(cert),
            H2App::Node => Server::node_h2(cert),
        }
    }

    /// The `comm` of the server's processes (findings with role server).
    pub fn comm(self) -> &'static str {
        match self {
            H2App::Nginx => "nginx",
            H2App::Node => "node",
        }
    }

    /// A large benign response (several DATA frames): path and length.
    pub fn large_path(self) -> (&'static str, u64) {
        match self {
            H2App::Nginx => (NGINX_H2_BIG_FILE.0, NGINX_H2_BIG_FILE.1 as u64),
            H2App::Node => ("/v1/large", 1 << 20),
        }
    }
}

/// The HTTP/2 clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum H2Client {
    /// curl 7.88 (nghttp2) `--http2`, every request on one connection.
    Curl,
    /// `client.py plan --lib httpx --http2` (httpx + h2), one connection.
    Httpx,
}

impl H2Client {
    /// Whether a `comm` is this client's (findings with role client).
    pub fn is_comm(self, comm: &str) -> bool {
        match self {
            H2Client::Curl => comm == "curl",
            H2Client::Httpx => comm.starts_with("python"),
        }
    }
}

/// Where a response must carry the request's credential (what the raw
/// response is checked for before the sensor's findings are).
#[derive(Clone, Debug)]
pub enum RawLeak {
    /// The body holds this (the credential as encoded).
    Body(String),
    /// The body holds this at or after this offset.
    BodyAfter(String, usize),
    /// This response header holds this.
    Header(&'static str, String),
    /// `content-encoding: gzip`, and the body on the wire holds no credential.
    Gzip,
    /// This trailer repeats this request header (checked with `client.py
    /// raw-h2`: curl 7.88 does not show HTTP/2 trailers).
    Trailer(&'static str, &'static str),
}

/// One request of a scenario.
#[derive(Clone, Debug)]
pub struct H2Request {
    pub method: &'static str,
    /// Path and query, as sent.
    pub target: String,
    /// Request headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Request body (sent from a file: `--data-binary @file`, `body_file`).
    pub body: Option<Vec<u8>>,
    pub status: u16,
    /// Where the response must show a credential; empty: nowhere (benign).
    pub leaks: Vec<RawLeak>,
    /// The response body's length when the scenario knows it in advance.
    pub response_body_len: Option<u64>,
    /// The findings this request must give, on each side.
    pub findings: Vec<ExpectedFinding>,
}

impl H2Request {
    fn new(method: &'static str, target: &str, status: u16) -> H2Request {
        H2Request {
            method,
            target: target.to_string(),
            headers: Vec::new(),
            body: None,
            status,
            leaks: Vec::new(),
            response_body_len: None,
            findings: Vec::new(),
        }
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    fn body(mut self, content_type: &str, body: Vec<u8>) -> Self {
        self.body = Some(body);
        self.header("content-type", content_type)
    }

    fn leaks(mut self, leak: RawLeak) -> Self {
        self.leaks.push(leak);
        self
    }

    fn response_len(mut self, len: u64) -> Self {
        self.response_body_len = Some(len);
        self
    }

    fn finds(mut self, finding: ExpectedFinding) -> Self {
        self.findings.push(finding);
        self
    }

    /// The path without its query (what pairs and findings are matched by).
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or(&self.target)
    }

    pub fn request_body_len(&self) -> u64 {
        self.body.as_ref().map_or(0, |b| b.len() as u64)
    }
}

/// What a client run saw.
#[derive(Debug)]
pub struct H2ClientRun {
    pub client: H2Client,
    /// The client process (client-side findings and pairs come from it).
    pub pid: u32,
    /// Per request, in order: the response body length on the wire (not
    /// content-decoded), what the pair's `response.body_len` must be.
    pub response_body_lens: Vec<u64>,
}

/// Every request of one server's scenario and the findings they give.
pub struct H2Scenario {
    pub app: H2App,
    pub requests: Vec<H2Request>,
    pub secrets: Vec<Secret>,
    // Request bodies as files, for both clients.
    files: tempfile::TempDir,
}

impl H2Scenario {
    /// The scenario of `app` with fresh random credentials.
    pub fn new(app: H2App) -> Result<H2Scenario> {
        let files = tempfile::Builder::new()
            .prefix("sensor-e2e-h2-bodies")
            .tempdir()?;
        let (requests, secrets) = match app {
            H2App::Nginx => nginx_requests(),
            H2App::Node => node_requests(),
        };
        Ok(H2Scenario {
            app,
            requests,
            secrets,
            files,
        })
    }

    /// Every finding of the scenario (the same on the server and the client side).
    pub fn expected(&self) -> Vec<ExpectedFinding> {
        self.requests
            .iter()
            .flat_map(|r| r.findings.iter().cloned())
            .collect()
    }

    pub fn secret_refs(&self) -> Vec<&Secret> {
        self.secrets.iter().collect()
    }

    fn body_file(&self, i: usize) -> Result<Option<PathBuf>> {
        let Some(body) = &self.requests[i].body else {
            return Ok(None);
        };
        let path = self.files.path().join(format!("body{i}"));
        std::fs::write(&path, body)?;
        Ok(Some(path))
    }

    /// Every request with one curl `--http2` process on one connection, in
    /// order; every status, HTTP/2 and every raw leak checked.
    pub fn run_curl(&self, server: &Server, cert: &TestCert) -> Result<H2ClientRun> {
        let mut requests = Vec::new();
        for (i, r) in self.requests.iter().enumerate() {
            let mut args = Vec::new();
            for (n, v) in &r.headers {
                args.push("-H".to_string());
                args.push(format!("{n}: {v}"));
            }
            if let Some(file) = self.body_file(i)? {
                args.push("--data-binary".to_string());
                args.push(format!("@{}", file.display()));
            }
            if r.method != "GET" && r.method != "POST" {
                args.push("-X".to_string());
                args.push(r.method.to_string());
            }
            requests.push((server.url(&r.target), args));
        }
        let run = curl_h2(cert, &requests, false)?;
        let mut lens = Vec::new();
        for (r, t) in self.requests.iter().zip(&run.transfers) {
            let what = format!("{} {}", r.method, r.path());
            ensure!(
                t.status == r.status,
                "{what}: status {} != {}",
                t.status,
                r.status
            );
            if let Some(len) = r.response_body_len {
                ensure!(
                    t.body.len() as u64 == len,
                    "{what}: body {} bytes, expected {len}",
                    t.body.len()
                );
            }
            self.check_raw(r, &t.headers, &t.body)
                .with_context(|| what.clone())?;
            lens.push(t.body.len() as u64);
        }
        Ok(H2ClientRun {
            client: H2Client::Curl,
            pid: run.pid,
            response_body_lens: lens,
        })
    }

    /// Every request with httpx (`http2=True`, HTTP/2 only) on one
    /// connection, in order; statuses, HTTP/2 and one connection checked
    /// (client.py shows no body or header: the raw leaks are checked by
    /// [`H2Scenario::run_curl`] and [`H2Scenario::check_trailers`]).
    pub fn run_httpx(&self, server: &Server, cert: &TestCert) -> Result<H2ClientRun> {
        let mut plan = Vec::new();
        for (i, r) in self.requests.iter().enumerate() {
            plan.push(serde_json::json!({
                "method": r.method,
                "path": r.target,
                "headers": r.headers,
                "body_file": self.body_file(i)?,
            }));
        }
        // The plan holds the credentials: private to this process (0600), removed after.
        let plan_file = tempfile::NamedTempFile::new_in(self.files.path())?;
        std::fs::write(plan_file.path(), serde_json::to_vec(&plan)?)?;
        let plan_arg = plan_file.path().display().to_string();
        let (pid, results) = PyClient::run(
            cert,
            server.port(),
            "httpx",
            &["plan", "--http2", "--plan-file", &plan_arg],
        )?;
        ensure!(
            results.len() == self.requests.len(),
            "httpx: {} results for {} requests",
            results.len(),
            self.requests.len()
        );
        let mut lens = Vec::new();
        for (r, res) in self.requests.iter().zip(&results) {
            let what = format!("httpx {} {}", r.method, r.path());
            ensure!(
                res.status == r.status,
                "{what}: status {} != {}",
                res.status,
                r.status
            );
            ensure!(
                res.http_version.as_deref() == Some("HTTP/2"),
                "{what}: {:?}, not HTTP/2",
                res.http_version
            );
            ensure!(
                res.local_port.is_some() && res.local_port == results[0].local_port,
                "{what}: not on the first request's connection"
            );
            let raw = res.raw_len.context("client.py reported no raw_len")?;
            if let Some(len) = r.response_body_len {
                ensure!(raw == len, "{what}: body {raw} bytes, expected {len}");
            }
            lens.push(raw);
        }
        Ok(H2ClientRun {
            client: H2Client::Httpx,
            pid,
            response_body_lens: lens,
        })
    }

    /// The raw response of `r` shows its leaks, and a benign one shows no
    /// credential of the scenario.
    fn check_raw(&self, r: &H2Request, headers: &str, body: &[u8]) -> Result<()> {
        let header = |name: &str| {
            headers.lines().find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
            })
        };
        for leak in &r.leaks {
            match leak {
                RawLeak::Body(text) => {
                    ensure!(
                        find(body, text).is_some(),
                        "body does not echo the credential"
                    )
                }
                RawLeak::BodyAfter(text, offset) => {
                    let at = find(body, text).context("body does not echo the credential")?;
                    ensure!(at >= *offset, "credential at {at}, expected past {offset}");
                }
                RawLeak::Header(name, text) => ensure!(
                    header(name).is_some_and(|v| v.contains(text.as_str())),
                    "response header {name} does not echo the credential"
                ),
                RawLeak::Gzip => {
                    ensure!(
                        header("content-encoding") == Some("gzip"),
                        "not gzip-encoded"
                    );
                    ensure!(
                        self.secrets
                            .iter()
                            .all(|s| find(body, s.expose()).is_none()),
                        "a raw credential in a gzip body"
                    );
                }
                RawLeak::Trailer(..) => {}
            }
        }
        if r.leaks.is_empty() {
            ensure!(
                self.secrets
                    .iter()
                    .all(|s| find(body, s.expose()).is_none() && !headers.contains(s.expose())),
                "a benign response shows a credential"
            );
        }
        Ok(())
    }

    /// Each trailer leak, requested alone with `client.py raw-h2` (the h2
    /// library): the response ends with a trailer HEADERS frame whose field
    /// repeats the request header.
    pub fn check_trailers(&self, server: &Server, cert: &TestCert) -> Result<()> {
        for r in &self.requests {
            for leak in &r.leaks {
                let RawLeak::Trailer(trailer, from) = leak else {
                    continue;
                };
                let mut args = vec!["raw-h2".to_string(), "--path".into(), r.target.clone()];
                for (n, v) in &r.headers {
                    args.push("-H".into());
                    args.push(format!("{n}: {v}"));
                }
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let (_, results) = PyClient::run(cert, server.port(), "httpx", &args)?;
                let res = results.first().context("raw-h2 reported nothing")?;
                ensure!(
                    res.status == r.status,
                    "{}: status {}",
                    r.path(),
                    res.status
                );
                let trailers = res.trailers.clone().unwrap_or_default();
                ensure!(
                    trailers
                        .get(*trailer)
                        .is_some_and(|v| v.iter().any(|h| h == from)),
                    "{}: trailer {trailer} does not repeat request header {from} (trailers: {:?})",
                    r.path(),
                    trailers
                );
            }
        }
        Ok(())
    }
}

fn find(hay: &[u8], needle: &str) -> Option<usize> {
    hay.windows(needle.len())
        .position(|w| w == needle.as_bytes())
}

/// Endpoints both HTTP/2 apps serve alike.
fn items_echo(key: &Secret) -> H2Request {
    H2Request::new("GET", "/v1/items", 401)
        .header("x-api-key", key.expose())
        .leaks(RawLeak::Body(key.expose().into()))
        .finds(
            ExpectedFinding::new(key, "header", "x-api-key")
                .kind("api_key")
                .request("GET", "/v1/items", 401),
        )
}

fn remember_cookie(cookie: &str, session: &Secret) -> H2Request {
    H2Request::new("GET", "/v1/remember", 200)
        .header("cookie", cookie)
        .leaks(RawLeak::Header(
            "set-cookie",
            format!("remember_token={}", session.expose()),
        ))
        .finds(
            ExpectedFinding::new(session, "cookie", "session")
                .kind("session_cookie")
                .request("GET", "/v1/remember", 200)
                .in_header("set-cookie"),
        )
}

fn gzip_export(key: &Secret) -> H2Request {
    H2Request::new("GET", "/gz/export", 200)
        .header("x-api-key", key.expose())
        .header("accept-encoding", "gzip")
        .leaks(RawLeak::Gzip)
        .finds(
            ExpectedFinding::new(key, "header", "x-api-key")
                .kind("api_key")
                .request("GET", "/gz/export", 200)
                .content_encoding("gzip"),
        )
}

/// Every credential sent, none echoed.
fn status_benign(key: &Secret, bearer_h: &str, cookie: &str) -> H2Request {
    H2Request::new("GET", "/v1/status", 200)
        .header("x-api-key", key.expose())
        .header("authorization", bearer_h)
        .header("cookie", cookie)
}

fn nginx_requests() -> (Vec<H2Request>, Vec<Secret>) {
    let key = Secret::random("ak_", 30);
    let bearer = Secret::random("tk", 34);
    let access = Secret::random("at_", 30);
    let session = Secret::random("sess_", 26);
    let auth_token = Secret::random("xat_", 26);
    let client_secret = Secret::random("cs_", 32);
    let bearer_h = format!("Bearer {}", bearer.expose());
    let cookie = format!("session={}", session.expose());
    let token_body = format!(
        r#"{{"grant_type":"client_credentials","client_id":"demo","client_secret":"{}"}}"#,
        client_secret.expose()
    );
    let e = ExpectedFinding::new;
    let (big, big_len) = H2App::Nginx.large_path();
    let export_len = nginx_h2_export_body(key.expose()).len() as u64;
    let requests = vec![
        items_echo(&key),
        H2Request::new("GET", "/v1/debug", 200)
            .header("authorization", &bearer_h)
            .leaks(RawLeak::Header(
                "x-debug-authorization",
                bearer.expose().into(),
            ))
            .finds(
                e(&bearer, "authorization", "bearer")
                    .kind("bearer_token")
                    .request("GET", "/v1/debug", 200)
                    .in_header("x-debug-authorization"),
            ),
        H2Request::new(
            "GET",
            &format!(
                "/oauth/authorize?response_type=token&client_id=demo&access_token={}&state=s1",
                access.expose()
            ),
            302,
        )
        .leaks(RawLeak::Header(
            "location",
            format!("#access_token={}", access.expose()),
        ))
        .finds(
            e(&access, "query", "access_token")
                .kind("access_token")
                .request("GET", "/oauth/authorize", 302)
                .in_header("location"),
        ),
        remember_cookie(&cookie, &session),
        H2Request::new("GET", "/v1/trace", 200)
            .header("x-auth-token", auth_token.expose())
            .leaks(RawLeak::Trailer("x-debug-token", "x-auth-token"))
            .finds(
                e(&auth_token, "header", "x-auth-token")
                    .request("GET", "/v1/trace", 200)
                    .in_header("x-debug-token"),
            ),
        H2Request::new("POST", "/oauth/token", 401)
            .body("application/json", token_body.into_bytes())
            .leaks(RawLeak::Body(client_secret.expose().into()))
            .finds(
                e(&client_secret, "json", "client_secret")
                    .kind("client_secret")
                    .request("POST", "/oauth/token", 401),
            ),
        gzip_export(&key),
        H2Request::new("GET", "/v1/export", 200)
            .header("x-api-key", key.expose())
            .leaks(RawLeak::BodyAfter(
                key.expose().into(),
                NGINX_H2_EXPORT_FILLER,
            ))
            .response_len(export_len)
            .finds(
                e(&key, "header", "x-api-key")
                    .kind("api_key")
                    .request("GET", "/v1/export", 200)
                    .min_offset(65536),
            ),
        // --- benign ---
        status_benign(&key, &bearer_h, &cookie),
        H2Request::new("GET", big, 200)
            .header("x-api-key", key.expose())
            .response_len(big_len),
    ];
    let secrets = vec![key, bearer, access, session, auth_token, client_secret];
    (requests, secrets)
}

fn node_requests() -> (Vec<H2Request>, Vec<Secret>) {
    let key = Secret::random("ak_", 30);
    let bearer = Secret::random("tk", 34);
    let id_token = Secret::random("idt", 28);
    let session = Secret::random("sess_", 26);
    let auth_token = Secret::random("xat_", 26);
    // No raw run of 16+ characters survives `/` → `\/`: the only match is
    // the full, escaped one (as in the HTTP/1.1 scenario).
    let client_secret = Secret::from_parts(&[
        "cs_",
        &random_alphanum(5),
        "+",
        &random_alphanum(5),
        "/",
        &random_alphanum(12),
        "/",
        &random_alphanum(12),
    ]);
    let html_key = Secret::from_parts(&["hk_", &random_alphanum(12), "&", &random_alphanum(12)]);
    let pct_key =
        Secret::from_parts(&["pk+", &random_alphanum(12), "/", &random_alphanum(12), "="]);
    let masked_key = Secret::random("sk_live_", 24);
    let bearer_h = format!("Bearer {}", bearer.expose());
    let cookie = format!("session={}", session.expose());
    let token_body = format!(
        r#"{{"grant_type":"client_credentials","client_id":"demo","client_secret":"{}"}}"#,
        client_secret.expose()
    );
    let blob = base64_encode(
        format!(
            r#"{{"path": "/v1/debug/blob", "authorization": "Bearer {}"}}"#,
            bearer.expose()
        )
        .as_bytes(),
    );
    // {"rows":"<70,000 r>","request_key":"<key>"}
    let stream_len = (9 + 70_000 + 17 + key.len() + 2) as u64;
    let (large, large_len) = H2App::Node.large_path();
    let e = ExpectedFinding::new;
    let requests = vec![
        items_echo(&key),
        H2Request::new(
            "GET",
            "/oauth/authorize?response_type=token&client_id=demo&state=s1",
            302,
        )
        .header("authorization", &bearer_h)
        .header("x-id-token", id_token.expose())
        .leaks(RawLeak::Header(
            "location",
            format!("access_token={}", bearer.expose()),
        ))
        .leaks(RawLeak::Header(
            "location",
            format!("#id_token={}", id_token.expose()),
        ))
        .response_len(0)
        .finds(
            e(&bearer, "authorization", "bearer")
                .kind("bearer_token")
                .request("GET", "/oauth/authorize", 302)
                .in_header("location"),
        )
        .finds(
            e(&id_token, "header", "x-id-token")
                .request("GET", "/oauth/authorize", 302)
                .in_header("location"),
        ),
        H2Request::new("POST", "/oauth/token", 401)
            .body("application/json", token_body.into_bytes())
            .leaks(RawLeak::Body(client_secret.expose().replace('/', "\\/")))
            .finds(
                e(&client_secret, "json", "client_secret")
                    .kind("client_secret")
                    .request("POST", "/oauth/token", 401)
                    .encoding("json_escaped"),
            ),
        H2Request::new("GET", "/v1/session", 200)
            .header("x-auth-token", auth_token.expose())
            .leaks(RawLeak::Header("x-debug-token", auth_token.expose().into()))
            .finds(
                e(&auth_token, "header", "x-auth-token")
                    .request("GET", "/v1/session", 200)
                    .in_header("x-debug-token"),
            ),
        remember_cookie(&cookie, &session),
        H2Request::new("GET", "/v1/trace", 200)
            .header("authorization", &bearer_h)
            .leaks(RawLeak::Trailer("x-debug-authorization", "authorization"))
            .finds(
                e(&bearer, "authorization", "bearer")
                    .kind("bearer_token")
                    .request("GET", "/v1/trace", 200)
                    .in_header("x-debug-authorization"),
            ),
        H2Request::new("GET", "/v1/stream", 200)
            .header("x-api-key", key.expose())
            .leaks(RawLeak::BodyAfter(key.expose().into(), 65536))
            .response_len(stream_len)
            .finds(
                e(&key, "header", "x-api-key")
                    .kind("api_key")
                    .request("GET", "/v1/stream", 200)
                    .min_offset(65536),
            ),
        gzip_export(&key),
        H2Request::new("GET", "/v1/links", 200)
            .header("x-api-key", pct_key.expose())
            .leaks(RawLeak::Body(
                pct_key
                    .expose()
                    .replace('+', "%2B")
                    .replace('/', "%2F")
                    .replace('=', "%3D"),
            ))
            .finds(
                e(&pct_key, "header", "x-api-key")
                    .kind("api_key")
                    .request("GET", "/v1/links", 200)
                    .encoding("percent"),
            ),
        H2Request::new(
            "GET",
            &format!(
                "/search?q=shoes&api_key={}",
                html_key.expose().replace('&', "%26")
            ),
            200,
        )
        .leaks(RawLeak::Body(html_key.expose().replace('&', "&amp;")))
        .finds(
            e(&html_key, "query", "api_key")
                .kind("api_key")
                .request("GET", "/search", 200)
                .encoding("html_entity"),
        ),
        H2Request::new("GET", "/v1/debug/blob", 200)
            .header("authorization", &bearer_h)
            .leaks(RawLeak::Body(blob))
            .finds(
                e(&bearer, "authorization", "bearer")
                    .kind("bearer_token")
                    .request("GET", "/v1/debug/blob", 200)
                    .encoding("base64"),
            ),
        // --- benign ---
        H2Request::new("GET", "/v1/masked", 200).header("x-api-key", masked_key.expose()),
        status_benign(&key, &bearer_h, &cookie),
        H2Request::new("GET", large, 200)
            .header("x-api-key", key.expose())
            .response_len(large_len),
        H2Request::new("POST", "/v1/upload", 200)
            .header("x-api-key", key.expose())
            .body("application/octet-stream", deterministic_bytes(1 << 20)),
    ];
    let secrets = vec![
        key,
        bearer,
        id_token,
        session,
        auth_token,
        client_secret,
        html_key,
        pct_key,
        masked_key,
    ];
    (requests, secrets)
}
