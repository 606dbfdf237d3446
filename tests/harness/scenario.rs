//! The leak scenario of the leaky apps: every leak endpoint and every benign
//! endpoint requested with fresh random credentials (one curl per request),
//! and the exact findings the sensor must report for them.
//!
//! Endpoint table (source -> sink, encoding), FastAPI and Flask alike unless noted:
//!
//! | request | credential | sink | encoding |
//! | --- | --- | --- | --- |
//! | GET /v1/items → 401 | header x-api-key | body (HTTPException / abort JSON) | plain |
//! | GET /v1/me → 200 | authorization bearer | body (debug field) | plain |
//! | GET /oauth/authorize → 302 | authorization bearer | header location (query) | plain |
//! |  | header x-id-token | header location (fragment) | plain |
//! |  | (Flask only) both | body (Werkzeug's redirect page) | plain |
//! | GET /search?api_key= → 200 HTML | query api_key (holds `&`) | body | html_entity |
//! | GET /v1/account → 401 | authorization basic_password | body | plain |
//! | POST /oauth/token → 401 | FastAPI: form client_secret (`/`,`+`) | body, `/` → `\/` | json_escaped |
//! |  | Flask: json client_secret (sent as `\/`) | body | plain |
//! | GET /v1/session → 200 | header x-auth-token | header x-debug-token | plain |
//! | GET /gz/export → 200 gzip | header x-api-key | body | plain, content_encoding gzip |
//! | GET /v1/stream → 200 chunked | header x-api-key | body past 64 KiB | plain |
//! | GET /v1/debug/blob → 200 | authorization bearer | body (base64 JSON blob) | base64 |
//! | GET /v1/links → 200 | header x-api-key (`+`,`/`,`=`) | body (URL) | percent |
//! | GET /v1/remember → 200 | cookie session | header set-cookie (other cookie) | plain |
//! | GET /v1/admin → 401 | authorization bearer | header www-authenticate | plain |
//!
//! Benign (credentials sent, no finding): /v1/masked (masked echo), /v1/whoami
//! (Basic username only), /v1/status GET+HEAD, /v1/large (1 MiB), POST
//! /v1/upload (1 MiB), /v1/stream/plain (chunked), DELETE /v1/items/7 (204),
//! /v1/etag (304), /v1/profile (same session cookie re-set), /gz/report (gzip).

use anyhow::{ensure, Result};

use crate::cert::TestCert;
use crate::client::curl;
use crate::expect::ExpectedFinding;
use crate::secrets::{base64_encode, random_alphanum, register, Secret};
use crate::server::Server;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum App {
    FastApi,
    Flask,
    /// `leaky_node.js`: the FastAPI app's behaviour, on node's https.
    Node,
}

/// One request of the scenario as curl saw it (what its pair must say).
#[derive(Clone, Debug)]
pub struct MadeRequest {
    pub method: &'static str,
    /// Path without query.
    pub path: String,
    pub status: u16,
    /// Request body bytes sent, when the scenario knows it exactly.
    pub request_body_len: Option<u64>,
    /// Response body bytes as received (transfer-decoded, not content-decoded).
    pub response_body_len: u64,
}

pub struct LeakScenario {
    pub expected: Vec<ExpectedFinding>,
    /// Every request made, in order.
    pub made: Vec<MadeRequest>,
    /// Pids of the curl processes (client-side findings come from them).
    pub client_pids: Vec<u32>,
    pub secrets: Vec<Secret>,
    /// Number of HTTP requests made (= pairs per side).
    pub requests: usize,
}

/// Runs every leak and benign request of the scenario against `server`.
pub fn run_leak_scenario(server: &Server, cert: &TestCert, app: App) -> Result<LeakScenario> {
    let key = Secret::random("ak_", 30);
    let bearer = Secret::random("tk", 34);
    let id_token = Secret::random("idt", 28);
    // Values with characters an encoding changes are built so that no raw run
    // of 16+ characters survives the encoding: the only possible match is
    // the full, encoded one (no competing "partial" exposure).
    let html_key = Secret::from_parts(&["hk_", &random_alphanum(12), "&", &random_alphanum(12)]);
    let password = Secret::random("pw-", 22);
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
    let auth_token = Secret::random("xat_", 26);
    let pct_key =
        Secret::from_parts(&["pk+", &random_alphanum(12), "/", &random_alphanum(12), "="]);
    let session = Secret::random("sess_", 26);
    let masked_key = Secret::random("sk_live_", 24);
    let basic_header = base64_encode(format!("alice.wonderland:{}", password.expose()).as_bytes());
    register(&basic_header);
    let basic_secret = Secret::from_parts(&[&basic_header]);

    let h_key = format!("x-api-key: {}", key.expose());
    let h_bearer = format!("Authorization: Bearer {}", bearer.expose());
    let h_basic = format!("Authorization: Basic {basic_header}");
    let cookie = format!("session={}", session.expose());

    let mut pids = Vec::new();
    let mut made = Vec::new();
    let mut get = |path: &str, args: &[&str], status: u16| -> Result<()> {
        let r = curl(cert, &server.url(path), args)?;
        ensure!(
            r.status == status,
            "{path}: status {} != {status}",
            r.status
        );
        pids.push(r.pid);
        let method = if args.contains(&"-I") {
            "HEAD"
        } else if args.contains(&"DELETE") {
            "DELETE"
        } else if args
            .iter()
            .any(|a| a.starts_with("-d") || a.starts_with("--data"))
        {
            "POST"
        } else {
            "GET"
        };
        let request_body_len = match method {
            "POST" if path == "/v1/upload" => Some(1 << 20),
            "POST" => None,
            _ => Some(0),
        };
        made.push(MadeRequest {
            method,
            path: path.split('?').next().unwrap_or(path).to_string(),
            status,
            request_body_len,
            // curl -I writes the headers to the output file; a HEAD response has no body.
            response_body_len: if method == "HEAD" {
                0
            } else {
                r.body.len() as u64
            },
        });
        Ok(())
    };

    // --- leaks ---
    get("/v1/items", &["-H", &h_key], 401)?;
    get("/v1/me", &["-H", &h_bearer], 200)?;
    get(
        "/oauth/authorize?response_type=token&client_id=demo&state=s1",
        &[
            "-H",
            &h_bearer,
            "-H",
            &format!("x-id-token: {}", id_token.expose()),
        ],
        302,
    )?;
    get(
        &format!(
            "/search?q=shoes&api_key={}",
            html_key.expose().replace('&', "%26")
        ),
        &[],
        200,
    )?;
    get("/v1/account", &["-H", &h_basic], 401)?;
    match app {
        App::FastApi | App::Node => get(
            "/oauth/token",
            &[
                "-d",
                "grant_type=client_credentials",
                "-d",
                "client_id=demo",
                "--data-urlencode",
                &format!("client_secret={}", client_secret.expose()),
            ],
            401,
        )?,
        App::Flask => {
            let body = format!(
                r#"{{"grant_type":"client_credentials","client_id":"demo","client_secret":"{}"}}"#,
                client_secret.expose().replace('/', "\\/")
            );
            get(
                "/oauth/token",
                &[
                    "-H",
                    "content-type: application/json",
                    "--data-binary",
                    &body,
                ],
                401,
            )?
        }
    }
    get(
        "/v1/session",
        &["-H", &format!("x-auth-token: {}", auth_token.expose())],
        200,
    )?;
    get(
        "/gz/export",
        &["-H", &h_key, "-H", "accept-encoding: gzip"],
        200,
    )?;
    get("/v1/stream", &["-H", &h_key], 200)?;
    get("/v1/debug/blob", &["-H", &h_bearer], 200)?;
    get(
        "/v1/links",
        &["-H", &format!("x-api-key: {}", pct_key.expose())],
        200,
    )?;
    get("/v1/remember", &["-b", &cookie], 200)?;
    get("/v1/admin", &["-H", &h_bearer], 401)?;

    // --- benign ---
    get(
        "/v1/masked",
        &["-H", &format!("x-api-key: {}", masked_key.expose())],
        200,
    )?;
    get("/v1/whoami", &["-H", &h_basic], 200)?;
    get("/v1/status", &["-H", &h_key], 200)?;
    get("/v1/status", &["-H", &h_key, "-I"], 200)?;
    get("/v1/large", &["-H", &h_key], 200)?;
    let upload = tempfile::NamedTempFile::new()?;
    std::fs::write(upload.path(), crate::server::deterministic_bytes(1 << 20))?;
    get(
        "/v1/upload",
        &[
            "-H",
            &h_key,
            "-H",
            "content-type: application/octet-stream",
            "--data-binary",
            &format!("@{}", upload.path().display()),
        ],
        200,
    )?;
    get("/v1/stream/plain", &["-H", &h_key], 200)?;
    get("/v1/items/7", &["-H", &h_key, "-X", "DELETE"], 204)?;
    get(
        "/v1/etag",
        &["-H", &h_key, "-H", "If-None-Match: \"v1\""],
        304,
    )?;
    get("/v1/profile", &["-b", &cookie], 200)?;
    get(
        "/gz/report",
        &["-H", &h_key, "-H", "accept-encoding: gzip"],
        200,
    )?;

    let e = ExpectedFinding::new;
    let mut expected = vec![
        e(&key, "header", "x-api-key")
            .kind("api_key")
            .request("GET", "/v1/items", 401),
        e(&bearer, "authorization", "bearer")
            .kind("bearer_token")
            .request("GET", "/v1/me", 200),
        e(&bearer, "authorization", "bearer")
            .kind("bearer_token")
            .request("GET", "/oauth/authorize", 302)
            .in_header("location"),
        e(&id_token, "header", "x-id-token")
            .request("GET", "/oauth/authorize", 302)
            .in_header("location"),
        e(&html_key, "query", "api_key")
            .kind("api_key")
            .request("GET", "/search", 200)
            .encoding("html_entity"),
        e(&password, "authorization", "basic_password")
            .kind("password")
            .request("GET", "/v1/account", 401),
        e(&auth_token, "header", "x-auth-token")
            .request("GET", "/v1/session", 200)
            .in_header("x-debug-token"),
        e(&key, "header", "x-api-key")
            .kind("api_key")
            .request("GET", "/gz/export", 200)
            .content_encoding("gzip"),
        e(&key, "header", "x-api-key")
            .kind("api_key")
            .request("GET", "/v1/stream", 200)
            .min_offset(65536),
        e(&bearer, "authorization", "bearer")
            .kind("bearer_token")
            .request("GET", "/v1/debug/blob", 200)
            .encoding("base64"),
        e(&pct_key, "header", "x-api-key")
            .kind("api_key")
            .request("GET", "/v1/links", 200)
            .encoding("percent"),
        e(&session, "cookie", "session")
            .kind("session_cookie")
            .request("GET", "/v1/remember", 200)
            .in_header("set-cookie"),
        e(&bearer, "authorization", "bearer")
            .kind("bearer_token")
            .request("GET", "/v1/admin", 401)
            .in_header("www-authenticate"),
    ];
    match app {
        App::FastApi | App::Node => expected.push(
            e(&client_secret, "form", "client_secret")
                .kind("client_secret")
                .request("POST", "/oauth/token", 401)
                .encoding("json_escaped"),
        ),
        App::Flask => {
            expected.push(
                e(&client_secret, "json", "client_secret")
                    .kind("client_secret")
                    .request("POST", "/oauth/token", 401),
            );
            // Werkzeug's redirect() also writes the target URL into an HTML body.
            expected.push(
                e(&bearer, "authorization", "bearer")
                    .kind("bearer_token")
                    .request("GET", "/oauth/authorize", 302),
            );
            expected.push(e(&id_token, "header", "x-id-token").request(
                "GET",
                "/oauth/authorize",
                302,
            ));
        }
    }

    let requests = made.len();
    Ok(LeakScenario {
        expected,
        made,
        client_pids: pids,
        secrets: vec![
            key,
            bearer,
            id_token,
            html_key,
            password,
            client_secret,
            auth_token,
            pct_key,
            session,
            masked_key,
            basic_secret,
        ],
        requests,
    })
}
