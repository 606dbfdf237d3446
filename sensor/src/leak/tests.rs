//! Table-driven tests of the detector: sources × sinks × encodings, benign
//! look-alikes, compression, and a check that no raw secret leaves in a finding.

use std::io::Write;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;

use super::config::LeakConfig;
use super::*;
use crate::finding::*;
use crate::http::types::*;

const STRIPE: &str = "sk_live_4eC39HqLyjWDarjtT1zdp7dc";
const SPECIAL: &str = "Zx9/kQ+v3L=mP7&wR2<tY8\"nB5'q";
const JWT: &str =
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
const OPAQUE: &str = "tok_9fK2mQ7xLp4Rz8Wv1Nb6";
const PASSWORD: &str = "Tr0ub4dor&3-horse";
const COOKIE: &str = "s%3A7hQk2Lx9PmV4nR8tZ1wY6bC3dF5";
const GHP: &str = "ghp_R4nd0mT0k3nV4lu3Xy9Zq2Wm7Kp5Lj8Hn1";
/// Every raw secret used in these tests: none may appear in any finding.
const ALL_SECRETS: &[&str] = &[
    STRIPE,
    SPECIAL,
    JWT,
    OPAQUE,
    PASSWORD,
    COOKIE,
    GHP,
    "Tr0ub4dor",
];

pub(super) fn detector() -> Detector {
    Detector::new(LeakConfig::default(), Fingerprinter::new([7; 32]))
}

pub(super) fn pair(
    req_headers: &[(&str, &[u8])],
    target: &str,
    resp_headers: &[(&str, &[u8])],
    body: &[u8],
) -> HttpPair {
    pair_full(
        req_headers,
        target,
        Body::default(),
        resp_headers,
        vec![Bytes::copy_from_slice(body)],
    )
}

pub(super) fn hdrs(h: &[(&str, &[u8])]) -> Headers {
    Headers::from_pairs(h.iter().copied())
}

pub(super) fn pair_full(
    req_headers: &[(&str, &[u8])],
    target: &str,
    req_body: Body,
    resp_headers: &[(&str, &[u8])],
    chunks: Vec<Bytes>,
) -> HttpPair {
    let len = chunks.iter().map(|c| c.len() as u64).sum();
    HttpPair {
        exchange: Exchange {
            request: Request {
                method: "GET".into(),
                target: target.into(),
                version: "HTTP/1.1",
                headers: hdrs(req_headers),
                body: req_body,
            },
            response: Response {
                status: 400,
                version: "HTTP/1.1",
                headers: hdrs(resp_headers),
                body: Body {
                    chunks,
                    len,
                    truncated: false,
                    discarded: false,
                },
            },
            timing: Timing::default(),
            role: Role::Server,
        },
        process: std::sync::Arc::new(ProcessInfo {
            pid: 4242,
            comm: "uvicorn".into(),
            ..Default::default()
        }),
        conn: ConnInfo {
            id: "4242:7:1".into(),
            peer: None,
        },
        seq: 1,
        ts: chrono::DateTime::from_timestamp(1_795_000_000, 123_456_789).unwrap(),
    }
}

/// Inspects and checks that nothing emitted carries a raw secret.
///
/// Inspects three times with the same detector: with a matcher built for
/// one use, one built for the cache, and the cached one; all must agree.
pub(super) fn inspect(p: &HttpPair) -> Inspection {
    let det = detector();
    let insp = det.inspect(p);
    for round in 0..2 {
        let again = det.inspect(p);
        assert_eq!(
            format!("{:?}", insp.findings),
            format!("{:?}", again.findings),
            "round {round}"
        );
        assert_eq!(insp.masked_echoes, again.masked_echoes);
        assert_eq!(insp.decompress_cap_hit, again.decompress_cap_hit);
        assert_eq!(insp.decode_errors, again.decode_errors);
    }
    let st = det.matcher_cache_stats();
    if st.misses > 0 {
        assert_eq!((st.first_seen, st.misses, st.hits), (1, 2, 1));
    }
    assert_no_raw(&insp, ALL_SECRETS);
    for f in &insp.findings {
        assert_eq!(f.schema, "sensor.finding.v1");
        assert_eq!(f.ts, "2026-11-18T11:06:40.123456Z");
        assert_eq!(f.credential.fingerprint.len(), 16);
    }
    insp
}

/// None of `secrets` in any finding's JSON or Debug.
fn assert_no_raw(insp: &Inspection, secrets: &[&str]) {
    for f in &insp.findings {
        let json = serde_json::to_string(f).unwrap();
        let dbg = format!("{f:?}");
        for s in secrets {
            assert!(!json.contains(s), "secret in finding JSON: {json}");
            assert!(!dbg.contains(s), "secret in finding Debug");
        }
    }
}

/// [`inspect`], and none of `secrets` (another test module's) in any finding.
pub(super) fn inspect_checked(p: &HttpPair, secrets: &[&str]) -> Inspection {
    let insp = inspect(p);
    assert_no_raw(&insp, secrets);
    insp
}

/// The one finding of `p` ([`inspect_checked`]).
pub(super) fn one_checked(p: &HttpPair, secrets: &[&str]) -> Finding {
    let insp = inspect_checked(p, secrets);
    assert_eq!(insp.findings.len(), 1, "findings: {:#?}", insp.findings);
    insp.findings.into_iter().next().unwrap()
}

/// No finding of `p` ([`inspect_checked`]).
pub(super) fn none_checked(p: &HttpPair, secrets: &[&str]) {
    let insp = inspect_checked(p, secrets);
    assert!(insp.findings.is_empty(), "unexpected: {:#?}", insp.findings);
}

pub(super) fn one(p: &HttpPair) -> Finding {
    let insp = inspect(p);
    assert_eq!(insp.findings.len(), 1, "findings: {:#?}", insp.findings);
    insp.findings.into_iter().next().unwrap()
}

pub(super) fn none(p: &HttpPair) -> Inspection {
    let insp = inspect(p);
    assert!(
        insp.findings.is_empty(),
        "unexpected findings: {:#?}",
        insp.findings
    );
    insp
}

pub(super) fn bearer(v: &str) -> Vec<u8> {
    format!("Bearer {v}").into_bytes()
}

// ---------- sources ----------

#[test]
fn sources_each_found_in_body() {
    let basic = format!("Basic {}", STANDARD.encode(format!("alice:{PASSWORD}")));
    // (request headers, target, secret, expected source, expected name, expected type)
    type Case<'a> = (
        Vec<(&'a str, Vec<u8>)>,
        &'a str,
        &'a str,
        CredentialSource,
        &'a str,
        CredentialType,
    );
    let cases: Vec<Case> = vec![
        (
            vec![("authorization", bearer(OPAQUE))],
            "/",
            OPAQUE,
            CredentialSource::Authorization,
            "bearer",
            CredentialType::BearerToken,
        ),
        (
            vec![("authorization", bearer(JWT))],
            "/",
            JWT,
            CredentialSource::Authorization,
            "bearer",
            CredentialType::Jwt,
        ),
        (
            vec![("authorization", bearer(STRIPE))],
            "/",
            STRIPE,
            CredentialSource::Authorization,
            "bearer",
            CredentialType::ApiKey,
        ),
        (
            vec![("authorization", basic.clone().into_bytes())],
            "/",
            PASSWORD,
            CredentialSource::Authorization,
            "basic_password",
            CredentialType::Password,
        ),
        (
            vec![("authorization", format!("Token {OPAQUE}").into_bytes())],
            "/",
            OPAQUE,
            CredentialSource::Authorization,
            "token",
            CredentialType::Secret,
        ),
        (
            vec![("authorization", format!("token {GHP}").into_bytes())],
            "/",
            GHP,
            CredentialSource::Authorization,
            "token",
            CredentialType::ApiKey,
        ),
        (
            vec![("x-api-key", OPAQUE.into())],
            "/",
            OPAQUE,
            CredentialSource::Header,
            "x-api-key",
            CredentialType::ApiKey,
        ),
        (
            vec![("x-custom-token", OPAQUE.into())],
            "/",
            OPAQUE,
            CredentialSource::Header,
            "x-custom-token",
            CredentialType::AccessToken,
        ),
        (
            vec![("x-client-secret", OPAQUE.into())],
            "/",
            OPAQUE,
            CredentialSource::Header,
            "x-client-secret",
            CredentialType::ClientSecret,
        ),
        (
            vec![],
            "/v1?api_key=tok_9fK2mQ7xLp4Rz8Wv1Nb6&page=2",
            OPAQUE,
            CredentialSource::Query,
            "api_key",
            CredentialType::ApiKey,
        ),
        (
            vec![],
            "/cb?access_token=Zx9%2FkQ%2Bv3L%3DmP7%26wR2%3CtY8%22nB5%27q",
            SPECIAL,
            CredentialSource::Query,
            "access_token",
            CredentialType::AccessToken,
        ),
        (
            vec![(
                "cookie",
                format!("theme=dark; sessionid={COOKIE}").into_bytes(),
            )],
            "/",
            COOKIE,
            CredentialSource::Cookie,
            "sessionid",
            CredentialType::SessionCookie,
        ),
        (
            vec![("cookie", format!("theme=dark; xyz={OPAQUE}").into_bytes())],
            "/",
            OPAQUE,
            CredentialSource::Cookie,
            "xyz",
            CredentialType::SessionCookie,
        ),
        (
            vec![
                ("x-api-key", STRIPE.into()),
                ("cookie", format!("sid={STRIPE}").into_bytes()),
            ],
            "/",
            STRIPE,
            CredentialSource::Header,
            "x-api-key",
            CredentialType::ApiKey,
        ),
    ];
    for (i, (req, target, secret, source, name, kind)) in cases.into_iter().enumerate() {
        let req: Vec<(&str, &[u8])> = req.iter().map(|(n, v)| (*n, &v[..])).collect();
        let body = format!(
            "{{\"error\":\"bad request\",\"echo\":\"{}\"}}",
            secret.replace('"', "\\\"")
        );
        let p = pair(
            &req,
            target,
            &[("content-type", b"application/json")],
            body.as_bytes(),
        );
        let insp = inspect(&p);
        let f = insp
            .findings
            .iter()
            .find(|f| f.credential.name == name)
            .unwrap_or_else(|| panic!("case {i}: no finding named {name}: {:#?}", insp.findings));
        assert_eq!(f.credential.source, source, "case {i}");
        assert_eq!(f.credential.kind, kind, "case {i}");
        assert_eq!(f.credential.length, secret.len(), "case {i}");
        assert_eq!(f.exposure, Exposure::Full, "case {i}");
        assert_eq!(f.sink.location, SinkLocation::Body, "case {i}");
        assert_eq!(f.request.path, redact_target(target));
        assert!(!f.request.path.contains("tok_"), "case {i}");
    }
}

#[test]
fn basic_pair_and_password_are_separate_credentials() {
    let pair_s = format!("alice:{PASSWORD}");
    let auth = format!("Basic {}", STANDARD.encode(&pair_s));
    let body = format!("{{\"creds\":\"{pair_s}\"}}");
    let insp = inspect(&pair(
        &[("authorization", auth.as_bytes())],
        "/",
        &[],
        body.as_bytes(),
    ));
    let names: Vec<_> = insp
        .findings
        .iter()
        .map(|f| f.credential.name.as_str())
        .collect();
    assert!(names.contains(&"basic"), "{names:?}");
    // The password inside the echoed pair is the same sink: reported too.
    assert!(names.contains(&"basic_password"), "{names:?}");
    // Password alone echoed.
    let f = one(&pair(
        &[("authorization", auth.as_bytes())],
        "/",
        &[],
        format!("pw={PASSWORD}").as_bytes(),
    ));
    assert_eq!(f.credential.name, "basic_password");
    assert_eq!(f.credential.kind, CredentialType::Password);
    // The whole base64 header echoed: found as the base64 form of the pair.
    let insp = inspect(&pair(
        &[("authorization", auth.as_bytes())],
        "/",
        &[],
        format!("you sent {auth}").as_bytes(),
    ));
    let f = insp
        .findings
        .iter()
        .find(|f| f.credential.name == "basic")
        .unwrap();
    assert_eq!(f.sink.encoding, Encoding::Base64);
}

#[test]
fn body_sources_form_json_multipart() {
    let form = format!(
        "grant_type=client_credentials&client_secret={}&scope=a",
        "Zx9%2FkQ%2Bv3L%3DmP7%26wR2%3CtY8%22nB5%27q"
    );
    let json = format!(
        "{{\"outer\":{{\"list\":[{{\"refresh_token\":\"{OPAQUE}\"}}]}},\"password\":\"short\"}}"
    );
    let mp = format!(
        "--XyZ\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\nalice\r\n--XyZ\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\n{PASSWORD}\r\n--XyZ--\r\n"
    );
    let cases: Vec<(&str, String, &str, CredentialSource, &str, CredentialType)> = vec![
        (
            "application/x-www-form-urlencoded",
            form,
            SPECIAL,
            CredentialSource::Form,
            "client_secret",
            CredentialType::ClientSecret,
        ),
        (
            "application/json; charset=utf-8",
            json,
            OPAQUE,
            CredentialSource::Json,
            "refresh_token",
            CredentialType::RefreshToken,
        ),
        (
            "multipart/form-data; boundary=XyZ",
            mp,
            PASSWORD,
            CredentialSource::Form,
            "password",
            CredentialType::Password,
        ),
    ];
    for (ct, body, secret, source, name, kind) in cases {
        let req_body = Body {
            len: body.len() as u64,
            chunks: vec![Bytes::from(body.clone().into_bytes())],
            truncated: false,
            discarded: false,
        };
        let p = pair_full(
            &[("content-type", ct.as_bytes())],
            "/token",
            req_body,
            &[],
            vec![Bytes::from(format!("echo: {secret}"))],
        );
        let f = one(&p);
        assert_eq!(
            (
                f.credential.source,
                f.credential.name.as_str(),
                f.credential.kind
            ),
            (source, name, kind),
            "{ct}"
        );
    }
}

#[test]
fn partial_request_bodies_keep_only_whole_form_values() {
    // Kept bytes short of the body's length (past the request body limit)
    // make it partial even without the truncated flag: the last value may be
    // cut, earlier ones are whole.
    let body = format!("password={OPAQUE}&client_secret={}", &OPAQUE[..15]);
    let req_body = Body {
        len: body.len() as u64 + 1,
        chunks: vec![Bytes::from(body)],
        truncated: false,
        discarded: false,
    };
    assert!(req_body.is_partial());
    let p = pair_full(
        &[("content-type", b"application/x-www-form-urlencoded")],
        "/",
        req_body,
        &[],
        vec![Bytes::from(format!("{OPAQUE} {}", &OPAQUE[..15]))],
    );
    let f = one(&p);
    assert_eq!(f.credential.name, "password");
    // Cut right after a separator: every value is whole.
    let body = format!("client_secret={OPAQUE}&");
    let req_body = Body {
        len: body.len() as u64 + 100,
        chunks: vec![Bytes::from(body)],
        truncated: true,
        discarded: false,
    };
    let p = pair_full(
        &[("content-type", b"application/x-www-form-urlencoded")],
        "/",
        req_body,
        &[],
        vec![Bytes::from(OPAQUE)],
    );
    assert_eq!(one(&p).credential.name, "client_secret");
}

#[test]
fn truncated_request_bodies_do_not_yield_cut_values() {
    // The form value is cut by the body cap: it is not taken (it would be a
    // shorter, different value).
    let body = format!("a=b&client_secret={}", &OPAQUE[..15]);
    let req_body = Body {
        len: 10_000,
        chunks: vec![Bytes::from(body)],
        truncated: true,
        discarded: false,
    };
    let p = pair_full(
        &[("content-type", b"application/x-www-form-urlencoded")],
        "/",
        req_body,
        &[],
        vec![Bytes::from(&OPAQUE[..15])],
    );
    none(&p);
    let body = format!("{{\"client_secret\":\"{}", &OPAQUE[..15]);
    let req_body = Body {
        len: 10_000,
        chunks: vec![Bytes::from(body)],
        truncated: true,
        discarded: false,
    };
    let p = pair_full(
        &[("content-type", b"application/json")],
        "/",
        req_body,
        &[],
        vec![Bytes::from(&OPAQUE[..15])],
    );
    none(&p);
}

// ---------- sinks ----------

/// Findings come in the order their sinks first appear in the response, a
/// header name's first occurrence counting even when only a later one matches;
/// repeated headers are one sink.
#[test]
fn findings_follow_the_first_appearance_of_their_sink() {
    let req: &[(&str, &[u8])] = &[("x-api-key", OPAQUE.as_bytes())];
    let p = pair(
        req,
        "/",
        &[
            ("x-debug", b"nothing here"),
            ("server", b"bench"),
            (
                "location",
                format!("https://a.example/#t={OPAQUE}").as_bytes(),
            ),
            ("x-debug", OPAQUE.as_bytes()),
            ("x-debug", format!("again {OPAQUE}").as_bytes()),
        ],
        format!("{{\"k\":\"{OPAQUE}\"}}").as_bytes(),
    );
    let insp = inspect(&p);
    let sinks: Vec<(SinkLocation, Option<&str>, u64)> = insp
        .findings
        .iter()
        .map(|f| (f.sink.location, f.sink.name.as_deref(), f.sink.offset))
        .collect();
    assert_eq!(
        sinks,
        vec![
            (SinkLocation::Header, Some("x-debug"), 0),
            (SinkLocation::Header, Some("location"), 21),
            (SinkLocation::Body, None, 6),
        ]
    );
}

#[test]
fn header_sinks() {
    let req: &[(&str, &[u8])] = &[("x-api-key", OPAQUE.as_bytes())];
    let cases: Vec<(&str, String, Encoding)> = vec![
        ("x-debug-api-key", OPAQUE.to_string(), Encoding::Plain),
        (
            "www-authenticate",
            format!("Bearer error=\"invalid_token\", key=\"{OPAQUE}\""),
            Encoding::Plain,
        ),
        (
            "location",
            format!("https://app.example/cb?next=1&api_key={OPAQUE}"),
            Encoding::Plain,
        ),
        (
            "location",
            format!("https://app.example/cb#access_token={OPAQUE}&state=x"),
            Encoding::Plain,
        ),
        (
            "set-cookie",
            format!("other={OPAQUE}; Path=/"),
            Encoding::Plain,
        ),
        ("x-echo", STANDARD_NO_PAD.encode(OPAQUE), Encoding::Base64),
    ];
    for (name, value, enc) in cases {
        let p = pair(req, "/", &[(name, value.as_bytes())], b"");
        let f = one(&p);
        assert_eq!(f.sink.location, SinkLocation::Header);
        assert_eq!(f.sink.name.as_deref(), Some(name));
        assert_eq!(f.sink.encoding, enc, "{name}");
        assert_eq!(f.sink.content_encoding, ContentEncoding::Identity);
    }
}

#[test]
fn location_percent_decoded_any_style() {
    // Mixed-case and partial percent-encoding that no single needle form matches.
    let req: &[(&str, &[u8])] = &[("x-api-key", SPECIAL.as_bytes())];
    let loc = "https://a.example/cb#k=Zx9%2fkQ%2Bv3L%3dmP7%26wR2%3CtY8%22nB5'q";
    let f = one(&pair(req, "/", &[("location", loc.as_bytes())], b""));
    assert_eq!(f.sink.name.as_deref(), Some("location"));
    assert_eq!(f.sink.encoding, Encoding::Percent);
}

#[test]
fn one_finding_per_credential_and_sink_first_offset() {
    let body = format!("aa{OPAQUE}bb{OPAQUE}cc");
    let p = pair(
        &[("x-api-key", OPAQUE.as_bytes())],
        "/",
        &[("x-a", OPAQUE.as_bytes()), ("x-b", OPAQUE.as_bytes())],
        body.as_bytes(),
    );
    let insp = inspect(&p);
    assert_eq!(insp.findings.len(), 3);
    let b = insp
        .findings
        .iter()
        .find(|f| f.sink.location == SinkLocation::Body)
        .unwrap();
    assert_eq!(b.sink.offset, 2);
    assert_eq!(b.severity, Severity::High);
    assert_eq!(b.role, Role::Server);
    assert_eq!(b.process.pid, 4242);
    assert_eq!(&*b.connection.id, "4242:7:1");
    assert_eq!(b.response.status, 400);
}

/// One detector over many different pairs (matchers built for one use in
/// the same scratch buffers, one after the other) finds what a fresh
/// detector finds for each, and keeps nothing of a pair after it.
#[test]
fn reused_scratch_changes_nothing() {
    let json = |v: &str| format!("{{\"debug\":\"{v}\"}}").into_bytes();
    let pairs: Vec<HttpPair> = [STRIPE, SPECIAL, OPAQUE, GHP, JWT, PASSWORD]
        .iter()
        .flat_map(|v| {
            let b64 = STANDARD.encode(format!("pre{v}post"));
            [
                pair(&[("x-api-key", v.as_bytes())], "/", &[], &json(v)),
                pair(
                    &[("authorization", format!("Bearer {v}").as_bytes())],
                    "/a?x=1",
                    &[("x-echo", v.as_bytes())],
                    b64.as_bytes(),
                ),
                pair(&[("x-api-key", v.as_bytes())], "/", &[], b"nothing here"),
            ]
        })
        .collect();
    let shared = detector();
    let mut found = 0;
    for round in 0..2 {
        for (i, p) in pairs.iter().enumerate() {
            let got = shared.inspect(p);
            found += got.findings.len();
            let want = detector().inspect(p);
            assert_eq!(
                format!("{:?} {:?}", got.findings, got.masked_echoes),
                format!("{:?} {:?}", want.findings, want.masked_echoes),
                "round {round} pair {i}"
            );
            assert!(shared.scratch_is_empty(), "round {round} pair {i}");
        }
    }
    assert!(found >= 2 * 2 * 6, "{found} findings");
}

// ---------- encodings ----------

/// The label of a base64 run with neither alphabet's own bytes, standing
/// alone: `base64url` when its length shows padding was left out.
fn label_of_an_ambiguous_run(text: &[u8]) -> Encoding {
    if !text.len().is_multiple_of(4) && !text.ends_with(b"=") {
        Encoding::Base64url
    } else {
        Encoding::Base64
    }
}

#[test]
fn every_encoding_in_body() {
    let v = SPECIAL.as_bytes();
    let mut cases: Vec<(Vec<u8>, Encoding)> = vec![(v.to_vec(), Encoding::Plain)];
    for f in forms::percent(v) {
        cases.push((f, Encoding::Percent));
    }
    for f in forms::json_escaped(v) {
        cases.push((f, Encoding::JsonEscaped));
    }
    cases.push((
        serde_json::to_string(SPECIAL).unwrap().into_bytes(),
        Encoding::JsonEscaped,
    ));
    for f in forms::html_entity(v) {
        cases.push((f, Encoding::HtmlEntity));
    }
    for pre in ["", "x", "xy"] {
        let mut blob = pre.as_bytes().to_vec();
        blob.extend_from_slice(v);
        blob.extend_from_slice(b"\",\"more\":1}");
        cases.push((STANDARD.encode(&blob).into_bytes(), Encoding::Base64));
        cases.push((
            URL_SAFE_NO_PAD.encode(&blob).into_bytes(),
            Encoding::Base64url,
        ));
    }
    for (text, enc) in cases {
        let mut body = b"<html><body>debug: ".to_vec();
        let at = body.len() as u64;
        body.extend_from_slice(&text);
        body.extend_from_slice(b"</body></html>");
        let f = one(&pair(&[("x-api-key", v)], "/", &[], &body));
        // A base64url text whose inner part has no `-`/`_` is the base64 text
        // too: labelled by its run's length and padding.
        let std_hit = forms::base64_inner(v, false)
            .iter()
            .any(|n| memchr::memmem::find(&text, n).is_some());
        let enc = if enc == Encoding::Base64url && std_hit {
            label_of_an_ambiguous_run(&text)
        } else {
            enc
        };
        assert_eq!(f.sink.encoding, enc, "{}", String::from_utf8_lossy(&text));
        if enc != Encoding::Base64 && enc != Encoding::Base64url {
            assert_eq!(f.sink.offset, at + u64::from(text[0] == b'"'));
        }
    }
}

#[test]
fn html_named_entities_of_python_escape() {
    let v = "a<b&c>d\"e'fGh7Kq2Z";
    let esc = "a&lt;b&amp;c&gt;d&quot;e&#x27;fGh7Kq2Z"; // python html.escape
    let f = one(&pair(
        &[("x-api-key", v.as_bytes())],
        "/",
        &[],
        esc.as_bytes(),
    ));
    assert_eq!(f.sink.encoding, Encoding::HtmlEntity);
}

// ---------- content encodings ----------

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

#[test]
fn compressed_bodies() {
    let plain = format!("{{\"debug\":{{\"headers\":{{\"x-api-key\":\"{OPAQUE}\"}}}}}}").repeat(3);
    let plain = plain.as_bytes();
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    zlib.write_all(plain).unwrap();
    let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    raw.write_all(plain).unwrap();
    let mut br = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
        w.write_all(plain).unwrap();
    }
    let zst = zstd::encode_all(plain, 3).unwrap();
    let cases = [
        ("gzip", gzip(plain), ContentEncoding::Gzip),
        ("deflate", zlib.finish().unwrap(), ContentEncoding::Deflate),
        ("deflate", raw.finish().unwrap(), ContentEncoding::Deflate),
        ("br", br, ContentEncoding::Br),
        ("zstd", zst, ContentEncoding::Zstd),
    ];
    let at = memchr::memmem::find(plain, OPAQUE.as_bytes()).unwrap() as u64;
    for (name, data, ce) in cases {
        // Split the compressed body into small chunks, as reassembly delivers it.
        let chunks: Vec<Bytes> = data.chunks(7).map(Bytes::copy_from_slice).collect();
        let p = pair_full(
            &[("x-api-key", OPAQUE.as_bytes())],
            "/",
            Body::default(),
            &[("content-encoding", name.as_bytes())],
            chunks,
        );
        let insp = inspect(&p);
        assert!(
            insp.decode_errors.is_empty(),
            "{name}: {:?}",
            insp.decode_errors
        );
        assert_eq!(insp.findings.len(), 1, "{name}");
        let f = &insp.findings[0];
        assert_eq!(f.sink.content_encoding, ce);
        assert_eq!(f.sink.offset, at);
    }
}

#[test]
fn bad_gzip_counts_error_and_searches_what_decoded() {
    let plain = format!("{OPAQUE}{}", "z".repeat(200_000));
    let mut data = gzip(plain.as_bytes());
    let n = data.len();
    data[n / 2..].iter_mut().for_each(|b| *b ^= 0x5a);
    let p = pair_full(
        &[("x-api-key", OPAQUE.as_bytes())],
        "/",
        Body::default(),
        &[("content-encoding", b"gzip")],
        vec![Bytes::from(data)],
    );
    let insp = inspect(&p);
    assert_eq!(insp.decode_errors, vec!["bad_gzip"]);
    assert_eq!(insp.findings.len(), 1);
    // Not gzip at all.
    let p = pair_full(
        &[("x-api-key", OPAQUE.as_bytes())],
        "/",
        Body::default(),
        &[("content-encoding", b"gzip")],
        vec![Bytes::from_static(b"not gzip")],
    );
    assert_eq!(none(&p).decode_errors, vec!["bad_gzip"]);
}

#[test]
fn gzip_bomb_stops_at_cap_quickly() {
    // 1 GiB of zeros: 1024 gzip members of 1 MiB each (a valid multi-member stream).
    let member = gzip(&vec![0u8; 1 << 20]);
    let chunks: Vec<Bytes> = (0..1024).map(|_| Bytes::from(member.clone())).collect();
    let p = pair_full(
        &[("x-api-key", OPAQUE.as_bytes())],
        "/",
        Body::default(),
        &[("content-encoding", b"gzip")],
        chunks,
    );
    let t = std::time::Instant::now();
    let insp = inspect(&p);
    assert_eq!(insp.decompress_cap_hit, Some(ContentEncoding::Gzip));
    assert!(insp.findings.is_empty());
    // 16 MiB decoded at debug-build speed; 1 GiB would take minutes.
    assert!(
        t.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn decode_cap_is_exact() {
    let data = gzip(&vec![b'a'; 1000]);
    for cap in [0usize, 1, 999, 1000, 1001] {
        let mut got = 0usize;
        let o = decode::decode_stream(
            ContentEncoding::Gzip,
            &[Bytes::from(data.clone())],
            cap,
            &mut |b| got += b.len(),
        );
        assert_eq!(got, cap.min(1000), "cap {cap}");
        assert_eq!(o.cap_hit, cap < 1000, "cap {cap}");
    }
}

// ---------- benign look-alikes: no finding ----------

#[test]
fn benign_look_alikes() {
    let key: &[(&str, &[u8])] = &[("x-api-key", STRIPE.as_bytes())];
    // Masked echoes are counted, not reported.
    for masked in [
        format!("sk_live_****{}", &STRIPE[STRIPE.len() - 4..]),
        format!("key ****{}", &STRIPE[STRIPE.len() - 4..]),
        format!("{}… ok", &STRIPE[..4]),
        format!("{}...", &STRIPE[..4]),
    ] {
        let insp = none(&pair(key, "/", &[], masked.as_bytes()));
        assert_eq!(insp.masked_echoes, vec![SinkLocation::Body], "{masked}");
    }
    let masked = format!("sk_live_****{}", &STRIPE[STRIPE.len() - 4..]);
    assert_eq!(
        none(&pair(key, "/", &[("x-key-hint", masked.as_bytes())], b"")).masked_echoes,
        vec![SinkLocation::Header]
    );
    // A different key of the same vendor.
    none(&pair(
        key,
        "/",
        &[],
        b"{\"key\":\"sk_live_51Mz8QpR2vKx7LwN4tYb9cJd\"}",
    ));
    // The vendor prefix alone, or with too little after it.
    none(&pair(
        key,
        "/",
        &[],
        b"keys look like sk_live_4eC3 and sk_live_",
    ));
    // Same session cookie re-set with the same value: a refresh.
    let ck = format!("sessionid={COOKIE}");
    let sc = format!("sessionid={COOKIE}; Path=/; HttpOnly; Secure");
    none(&pair(
        &[("cookie", ck.as_bytes())],
        "/",
        &[("set-cookie", sc.as_bytes())],
        b"",
    ));
    // …but the same value under another cookie name is a leak.
    let sc2 = format!("tracking={COOKIE}; Path=/");
    assert_eq!(
        one(&pair(
            &[("cookie", ck.as_bytes())],
            "/",
            &[("set-cookie", sc2.as_bytes())],
            b""
        ))
        .sink
        .name
        .as_deref(),
        Some("set-cookie")
    );
    // Username alone from Basic.
    let auth = format!(
        "Basic {}",
        STANDARD.encode(format!("alice.longname:{PASSWORD}"))
    );
    none(&pair(
        &[("authorization", auth.as_bytes())],
        "/",
        &[],
        b"hello alice.longname",
    ));
    // Short and low-entropy values never become credentials.
    for v in [
        "1",
        "true",
        "abc12",
        "application/json",
        "password",
        "aaaaaaaaaaaaaaaa",
        "12345678",
        "keep-alive",
    ] {
        let p = pair(
            &[("x-api-key", v.as_bytes()), ("x-auth-token", v.as_bytes())],
            &format!("/?token={v}"),
            &[],
            format!("echo {v} {v}").as_bytes(),
        );
        none(&p);
    }
    // Non-credential headers are not sources.
    none(&pair(
        &[
            ("user-agent", OPAQUE.as_bytes()),
            ("x-request-id", OPAQUE.as_bytes()),
        ],
        "/",
        &[],
        OPAQUE.as_bytes(),
    ));
    // No credentials, no work.
    none(&pair(&[], "/", &[], b"anything"));
}

#[test]
fn partial_exposure() {
    let key: &[(&str, &[u8])] = &[("x-api-key", STRIPE.as_bytes())];
    // First 16 characters, with a mask after them.
    let f = one(&pair(
        key,
        "/",
        &[],
        format!("key={}****", &STRIPE[..16]).as_bytes(),
    ));
    assert_eq!(f.exposure, Exposure::Partial);
    assert_eq!(f.severity, Severity::Medium);
    assert_eq!(f.sink.offset, 4);
    // Trailing run.
    let f = one(&pair(
        key,
        "/",
        &[],
        format!("…{}", &STRIPE[STRIPE.len() - 16..]).as_bytes(),
    ));
    assert_eq!(f.exposure, Exposure::Partial);
    // The full key is full (and critical: a live Stripe key), never also partial.
    let f = one(&pair(key, "/", &[], STRIPE.as_bytes()));
    assert_eq!(
        (f.exposure, f.severity),
        (Exposure::Full, Severity::Critical)
    );
    // JWT signature alone.
    let sig = JWT.rsplit('.').next().unwrap();
    let f = one(&pair(
        &[("authorization", &bearer(JWT))],
        "/",
        &[],
        format!("sig={sig}").as_bytes(),
    ));
    assert_eq!(
        (f.exposure, f.credential.kind, f.credential.length),
        (Exposure::Partial, CredentialType::Jwt, JWT.len())
    );
}

// ---------- interface helpers ----------

#[test]
fn redact_target_keeps_keys_only() {
    assert_eq!(
        redact_target("/v1/items?api_key=sk_live_x&page=2"),
        "/v1/items?api_key=<redacted>&page=<redacted>"
    );
    assert_eq!(redact_target("/plain"), "/plain");
    assert_eq!(redact_target("/a?tok_secret"), "/a?<redacted>");
    assert_eq!(redact_target("/a?"), "/a?");
    assert_eq!(redact_target("/a?x=1&&y="), "/a?x=<redacted>&&y=<redacted>");
}

#[test]
fn credential_header_names() {
    let d = detector();
    for h in [
        "authorization",
        "cookie",
        "x-api-key",
        "apikey",
        "x-amz-security-token",
        "x-client-secret",
        "stripe-key",
    ] {
        assert!(d.is_credential_header(h), "{h}");
    }
    for h in ["host", "content-type", "user-agent", "x-request-id", "-key"] {
        assert!(!d.is_credential_header(h), "{h}");
    }
}

/// Each hit is named by its own header, at its offset in that header's
/// value, whichever of many headers it is in (first, middle, last,
/// repeated), and a form split across two headers is no hit.
#[test]
fn header_hits_keep_their_header_and_offset() {
    let req: &[(&str, &[u8])] = &[("x-api-key", OPAQUE.as_bytes())];
    let filler: Vec<(String, String)> = (0..6)
        .map(|i| {
            (
                format!("x-filler-{i}"),
                format!("value number {i} ").repeat(i + 1),
            )
        })
        .collect();
    for at in 0..=filler.len() {
        let mut headers: Vec<(&str, &[u8])> = filler
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        let leak = format!("key={OPAQUE}");
        headers.insert(at, ("x-debug", leak.as_bytes()));
        let p = pair(req, "/", &headers, b"");
        let f = one(&p);
        assert_eq!(f.sink.location, SinkLocation::Header);
        assert_eq!(f.sink.name.as_deref(), Some("x-debug"), "at {at}");
        assert_eq!(f.sink.offset, 4, "at {at}");
    }
    // The same header twice: one finding, at its first header.
    let leak = OPAQUE.to_string();
    let p = pair(
        req,
        "/",
        &[
            ("x-a", b"1"),
            ("x-debug", b"nothing"),
            ("x-debug", leak.as_bytes()),
        ],
        b"",
    );
    let insp = inspect(&p);
    assert_eq!(insp.findings.len(), 1);
    assert_eq!(insp.findings[0].sink.name.as_deref(), Some("x-debug"));
    // Halves of the key in two neighbouring headers: each half may be a
    // partial exposure, never the whole key.
    let (a, b) = OPAQUE.split_at(OPAQUE.len() / 2);
    let p = pair(
        req,
        "/",
        &[("x-a", a.as_bytes()), ("x-b", b.as_bytes())],
        b"",
    );
    assert!(no_full_exposure(&p));
}

fn no_full_exposure(p: &HttpPair) -> bool {
    inspect(p)
        .findings
        .iter()
        .all(|f| f.exposure != Exposure::Full)
}

/// A credential holding a newline (a JSON body field may) is never found
/// across two header values (as it would be if they were searched joined
/// by newlines).
#[test]
fn credential_with_a_newline_is_not_found_across_headers() {
    // JSON's `\n` escape: the value taken out holds a real newline.
    let escaped = "Zq8LmX2vR7tK\\nw9P4nB6cYd3Hs";
    let body = format!("{{\"client_secret\":\"{escaped}\"}}");
    let req_body = Body {
        chunks: vec![Bytes::copy_from_slice(body.as_bytes())],
        len: body.len() as u64,
        ..Body::default()
    };
    let halves = ["Zq8LmX2vR7tK", "w9P4nB6cYd3Hs"];
    let p = pair_full(
        &[("content-type", b"application/json")],
        "/token",
        req_body,
        &[("x-a", halves[0].as_bytes()), ("x-b", halves[1].as_bytes())],
        vec![],
    );
    assert!(no_full_exposure(&p));
    // The same credential whole in one header value is found.
    let req_body = Body {
        chunks: vec![Bytes::copy_from_slice(body.as_bytes())],
        len: body.len() as u64,
        ..Body::default()
    };
    let p = pair_full(
        &[("content-type", b"application/json")],
        "/token",
        req_body,
        &[("x-echo", escaped.as_bytes())],
        vec![],
    );
    assert_eq!(one(&p).sink.name.as_deref(), Some("x-echo"));
}

/// Whether a response body is kept is decided by names, not values, except
/// for cookies (every browser request carries some).
#[test]
fn response_body_wanted_by_credential_names() {
    let d = detector();
    let wants = |h: &[(&str, &[u8])], target: &str| {
        d.wants_response_body(&pair(h, target, &[], b"").exchange.request)
    };
    assert!(!wants(&[], "/"));
    assert!(!wants(
        &[("host", b"a"), ("user-agent", b"curl/8")],
        "/x?page=2"
    ));
    assert!(wants(&[("x-api-key", STRIPE.as_bytes())], "/"));
    // By name: a value too short to be a credential still keeps the body.
    assert!(wants(&[("authorization", b"Bearer x")], "/"));
    assert!(wants(&[("x-auth-token", b"")], "/"));
    assert!(wants(&[], "/x?a=1&api_key=k"));
    assert!(wants(&[], "/x?API_KEY"));
    // Cookies by what extraction makes of them.
    assert!(!wants(&[("cookie", b"_ga=GA1.2.3; theme=dark")], "/"));
    assert!(wants(
        &[("cookie", format!("theme=dark; sid={OPAQUE}").as_bytes())],
        "/"
    ));
    // HTTP/2 splits cookies over several headers: the second one counts.
    assert!(wants(
        &[
            ("cookie", b"theme=dark"),
            ("cookie", b"prefs=Zq8LmX2vR7tK9wP4nB6c")
        ],
        "/"
    ));
    // A request body is taken to carry one without looking.
    let mut p = pair(&[], "/", &[], b"");
    p.exchange.request.body.len = 10;
    assert!(d.wants_response_body(&p.exchange.request));
}

// ---------- properties ----------

mod props {
    use super::*;
    use proptest::prelude::*;

    const ENCODINGS: [Encoding; 6] = [
        Encoding::Plain,
        Encoding::Percent,
        Encoding::JsonEscaped,
        Encoding::HtmlEntity,
        Encoding::Base64,
        Encoding::Base64url,
    ];

    /// `v` as encoded by escaper `escaper` (0–3) of encoding `enc`: the
    /// uniform ones of `forms` and real frameworks' escapers that escape
    /// only some characters (`tests_match`).
    fn encode(v: &[u8], enc: Encoding, escaper: usize) -> Vec<u8> {
        use super::tests_match as real;
        let s = std::str::from_utf8(v).unwrap();
        match enc {
            Encoding::Plain => v.to_vec(),
            Encoding::Percent => match escaper {
                1 => real::py_quote(s).into_bytes(),
                2 => real::encode_uri_component(s).into_bytes(),
                3 => real::percent_lower(s).into_bytes(),
                _ => forms::percent(v).remove(0),
            },
            Encoding::JsonEscaped => match escaper {
                1 => format!("\"{}\"", real::go_json(s)).into_bytes(),
                2 => format!("\"{}\"", real::dotnet_json(s)).into_bytes(),
                3 => format!("\"{}\"", real::ensure_ascii(s)).into_bytes(),
                _ => serde_json::to_string(s).unwrap().into_bytes(),
            },
            Encoding::HtmlEntity => match escaper {
                1 => real::markupsafe(s).into_bytes(),
                2 => real::htmlspecialchars(s).into_bytes(),
                3 => real::html_mixed(s).into_bytes(),
                _ => forms::html_entity(v).remove(0),
            },
            Encoding::Base64 => STANDARD.encode(v).into_bytes(),
            Encoding::Base64url => URL_SAFE_NO_PAD.encode(v).into_bytes(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn inserted_credential_found_once(
            filler in proptest::collection::vec(proptest::sample::select(&b" abcdefghij{}\":,"[..]), 0..600),
            at in 0usize..600,
            split in 0usize..2000,
            split2 in 0usize..2000,
            enc_i in 0usize..6,
            escaper in 0usize..4,
            body_secret in "[A-Za-z0-9]{6}",
        ) {
            // Contains '/', '+', '"', '<' so that every form differs from the plain one;
            // base64 at offset 0 of its own blob (the encodings stay distinguishable).
            let secret = format!("Q7/{body_secret}+w9\"Lm<3Xz>");
            let enc = ENCODINGS[enc_i];
            let text = encode(secret.as_bytes(), enc, escaper);
            // A base64url text matched by a needle both alphabets give is
            // labelled by its run: `base64url` if it has `-`/`_`, else by
            // its length and padding.
            let std_hit = forms::base64_inner(secret.as_bytes(), false).iter().any(|n| memchr::memmem::find(&text, n).is_some());
            let url_bytes = text.iter().any(|b| matches!(b, b'-' | b'_'));
            let enc = if enc == Encoding::Base64url && std_hit && !url_bytes { label_of_an_ambiguous_run(&text) } else { enc };
            let at = at.min(filler.len());
            let mut body = filler[..at].to_vec();
            // Separate base64 text from filler letters, as a real blob would be.
            body.push(b' ');
            let start = body.len();
            body.extend_from_slice(&text);
            body.push(b' ');
            body.extend_from_slice(&filler[at..]);
            let s1 = split.min(body.len());
            let s2 = split2.min(body.len()).max(s1);
            let chunks = vec![
                Bytes::copy_from_slice(&body[..s1]),
                Bytes::copy_from_slice(&body[s1..s2]),
                Bytes::copy_from_slice(&body[s2..]),
            ];
            let p = pair_full(&[("x-api-key", secret.as_bytes())], "/", Body::default(), &[], chunks);
            let insp = detector().inspect(&p);
            prop_assert_eq!(insp.findings.len(), 1);
            let f = &insp.findings[0];
            prop_assert_eq!(f.sink.encoding, enc);
            prop_assert_eq!(f.exposure, Exposure::Full);
            let json = serde_json::to_string(f).unwrap();
            prop_assert!(!json.contains(&secret));
            match enc {
                // The stable inner part starts at the first char fully from the value.
                Encoding::Base64 | Encoding::Base64url => prop_assert_eq!(f.sink.offset, start as u64),
                Encoding::JsonEscaped => prop_assert_eq!(f.sink.offset, start as u64 + 1),
                _ => prop_assert_eq!(f.sink.offset, start as u64),
            }
        }

        #[test]
        fn random_bodies_without_it_give_nothing(
            body in proptest::collection::vec(any::<u8>(), 0..4000),
            split in 0usize..4000,
        ) {
            let s = split.min(body.len());
            let chunks = vec![Bytes::copy_from_slice(&body[..s]), Bytes::copy_from_slice(&body[s..])];
            let p = pair_full(&[("x-api-key", STRIPE.as_bytes()), ("authorization", &bearer(JWT))], "/", Body::default(), &[], chunks);
            let insp = detector().inspect(&p);
            prop_assert!(insp.findings.is_empty());
        }

        /// The anchored engine (every needle ≥ MIN_ANCHOR_LEN): needles cut out
        /// of the haystack so they hit, over a tiny alphabet so anchors collide,
        /// overlap and repeat; the same chunks as any stream could deliver.
        #[test]
        fn anchored_matcher_equals_naive(
            hay in proptest::collection::vec(proptest::sample::select(&b"ab*Z"[..]), 0..400),
            spans in proptest::collection::vec((0usize..400, 4usize..24), 2..12),
            extra in proptest::collection::vec(proptest::collection::vec(proptest::sample::select(&b"ab*Z"[..]), 4..10), 0..4),
            cuts in proptest::collection::vec(0usize..400, 0..6),
        ) {
            let mut needles: Vec<Vec<u8>> = spans
                .iter()
                .filter(|(s, l)| s + l <= hay.len())
                .map(|&(s, l)| hay[s..s + l].to_vec())
                .collect();
            needles.extend(extra);
            prop_assume!(needles.len() >= 2);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(hay.len())).collect();
            cuts.sort();
            let mut chunks: Vec<&[u8]> = vec![];
            let mut last = 0;
            for c in cuts.into_iter().chain(std::iter::once(hay.len())) {
                chunks.push(&hay[last..c]);
                last = c;
            }
            let mut want = vec![];
            for (i, n) in needles.iter().enumerate() {
                for o in 0..hay.len() {
                    if hay[o..].starts_with(n) { want.push((i, o as u64)); }
                }
            }
            want.sort();
            // Both anchor searchers: Teddy (small input) and the automaton (large).
            for hint in [0, matcher::LARGE_HAYSTACK] {
                let m = matcher::Matcher::for_haystack(&needles, hint);
                let mut got = vec![];
                m.find_in_chunks(chunks.iter().copied(), |i, o| got.push((i, o)));
                got.sort();
                prop_assert_eq!(&got, &want);
            }
        }

        #[test]
        fn matcher_equals_naive(
            hay in proptest::collection::vec(proptest::sample::select(&b"abc"[..]), 0..300),
            needles in proptest::collection::vec(proptest::collection::vec(proptest::sample::select(&b"abc"[..]), 1..6), 1..8),
            cuts in proptest::collection::vec(0usize..300, 0..5),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(hay.len())).collect();
            cuts.sort();
            let mut chunks: Vec<&[u8]> = vec![];
            let mut last = 0;
            for c in cuts.into_iter().chain(std::iter::once(hay.len())) {
                chunks.push(&hay[last..c]);
                last = c;
            }
            let m = matcher::Matcher::new(&needles);
            let mut got = vec![];
            m.find_in_chunks(chunks.iter().copied(), |i, o| got.push((i, o)));
            got.sort();
            let mut want = vec![];
            for (i, n) in needles.iter().enumerate() {
                for o in 0..hay.len() {
                    if hay[o..].starts_with(n) { want.push((i, o as u64)); }
                }
            }
            want.sort();
            prop_assert_eq!(got, want);
        }

        /// A response body is never dropped when its request carries a
        /// credential: whatever `extract` finds, `wants_response_body`
        /// said yes to (it looks at names only, so it may say yes to more).
        #[test]
        fn body_wanted_whenever_a_credential_is_extracted(
            picks in proptest::collection::vec((0usize..10, 0usize..6), 0..5),
            query in 0usize..5,
        ) {
            let values: [&[u8]; 6] = [
                STRIPE.as_bytes(), b"", b"short", b"password", OPAQUE.as_bytes(),
                b"_ga=GA1.2.3; theme=dark",
            ];
            let names = [
                "host", "authorization", "cookie", "x-api-key", "user-agent",
                "x-auth-token", "proxy-authorization", "accept", "stripe-key", "cookie",
            ];
            let cookie_values: [&[u8]; 3] =
                [b"sid=abc", b"_ga=GA1.2.3; theme=dark", b"prefs=Zq8LmX2vR7tK9wP4nB6c"];
            let headers: Vec<(&str, Vec<u8>)> = picks
                .iter()
                .map(|&(n, v)| {
                    let name = names[n];
                    let value = match name {
                        "cookie" => cookie_values[v % 3].to_vec(),
                        "authorization" if v % 2 == 0 => [b"Bearer ", values[v]].concat(),
                        _ => values[v].to_vec(),
                    };
                    (name, value)
                })
                .collect();
            let target = [
                "/", "/x?page=2", "/x?api_key=sk_live_4eC39HqLyjWDarjtT1zdp7dc",
                "/x?token=", "/x?a=1&access_token=tok_9fK2mQ7xLp4Rz8Wv1Nb6#f",
            ][query];
            let borrowed: Vec<(&str, &[u8])> =
                headers.iter().map(|(n, v)| (*n, v.as_slice())).collect();
            let p = pair(&borrowed, target, &[], b"");
            let req = &p.exchange.request;
            let det = detector();
            if !super::super::extract::extract(req, det.config()).is_empty() {
                prop_assert!(det.wants_response_body(req), "{:?} {}", picks, target);
            }
        }
    }
}

/// One detector, many credential sets: each response is searched for the
/// credentials of its own request only, whether its matcher is built fresh
/// or comes from the cache.
#[test]
fn cached_matchers_are_never_shared_between_credential_sets() {
    let det = detector();
    // No two share a run long enough to be a partial exposure.
    const ALNUM: &[u8] = b"Qw8ErT5yU2iO9pA3sD6fG1hJkL4zX7cV0bNmWq";
    let keys: Vec<String> = (0..6)
        .map(|i| {
            let rot: String = (0..24)
                .map(|j| ALNUM[(j * (i + 1) + 5 * i) % ALNUM.len()] as char)
                .collect();
            format!("sk_live_{rot}")
        })
        .collect();
    let echo = |k: &str| format!("{{\"error\":\"invalid key\",\"key\":\"{k}\"}}");
    for round in 0..3 {
        for (i, k) in keys.iter().enumerate() {
            // Echoes its own key: one finding, for this key.
            let p = pair(&[("x-api-key", k.as_bytes())], "/", &[], echo(k).as_bytes());
            let insp = det.inspect(&p);
            assert_eq!(insp.findings.len(), 1, "round {round} key {i}");
            let fp = Fingerprinter::new([7; 32]).fingerprint(k.as_bytes());
            assert_eq!(insp.findings[0].credential.fingerprint, fp);
            // Echoes another request's key: not this request's leak.
            let other = &keys[(i + 1) % keys.len()];
            let p = pair(
                &[("x-api-key", k.as_bytes())],
                "/",
                &[],
                echo(other).as_bytes(),
            );
            assert!(det.inspect(&p).findings.is_empty(), "round {round} key {i}");
        }
    }
    let st = det.matcher_cache_stats();
    // Each key is seen first (built once), then cached (built again), then reused.
    assert_eq!(st.first_seen, keys.len() as u64);
    assert_eq!(st.misses, 2 * keys.len() as u64);
    assert_eq!(st.hits, (3 * 2 * keys.len() - 2 * keys.len()) as u64);
}
