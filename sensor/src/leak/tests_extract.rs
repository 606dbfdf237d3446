//! Detector tests, what requests carry: credentials taken out of real-world request shapes, and what is not a credential.
//! Helpers (`pair`, `inspect`, `one`, `none`, …) are the table tests' own.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;

use super::extract::{self, looks_machine_made, MAX_CREDENTIALS};
#[allow(unused_imports)]
use super::tests::*;
use super::Inspection;
use crate::finding::*;
use crate::http::types::*;

const TOKEN: &str = "ct_Q9w8E7r6T5y4U3i2O1pAsDfGh";
const XSRF: &str = "xsrf_Lk3Jh6Gf9Ds2Aq5Wz8Xc1Vb4N";
const UUID: &str = "6f1c9a2e-3b7d-4e58-9c0a-d2f4b8e61a37";
const STRIPE_USER: &str = "sk_live_51Hq8ZtKp3Vw9Xy2Bc4Nd7Mf";
const FRESHDESK_KEY: &str = "Zq8Lw3Xv7Kp2Mn5Rt9Yb";
const API_KEY: &str = "amp_7Fh2Kq9Lw4Xz6Vb3Nm8Pc1Rt";
const SESSION: &str = "s3ss_h8Jk2Lm9Qp4Rt7Vw1Xz6Cb";
const SIGNED_SID: &str = "s%3AhQk2Lx9PmV4nR8tZ1wY6bC3dF5.Gq7%2Bw2Zr9Tb4Lm8Kd3Nf";
const SIGNED_SID_DECODED: &str = "s:hQk2Lx9PmV4nR8tZ1wY6bC3dF5.Gq7+w2Zr9Tb4Lm8Kd3Nf";
const GOOGLE_KEY: &str = "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY";
const OAUTH_CODE: &str = "4/0AX4XfWhGq7pLm2Vz9Rt5Kc8Nw3Yb6Dj1";
const GITHUB_CODE: &str = "e72e16c7e42f292c6912";
const SECRET: &str = "cs_camel_Zq8Xw3Ev5Rb7Tn2Ym9";
const PASSPHRASE: &str = "sunflowerpurple";
const GLPAT: &str = "glpat-Xq7Vw2Zr9Tb4Lm8Kd3Nf";
const QUOTED_PASSWORD: &str = "Zx\"9kQ7vL3mP2";
const DIGEST_RESPONSE: &str = "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1";
const DIGEST_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
const DIGEST_OPAQUE: &str = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS";
const DIGEST_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
const SIGV4_SIGNATURE: &str = "fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024";
const RAILS_TOKEN: &str = "y_NbAkKc66ryYTWUXYEu9Qp3Lm";
const OAUTH1_CONSUMER_KEY: &str = "dpf43f3p2l4k3l03Zq8Xw";
const OAUTH1_TOKEN: &str = "nnch734d00sl2jdkQ7vL3mP2";
/// `tR3+Ty81lMeYAr/Fid0kMTYa/WM=`, as OAuth 1.0a sends it.
const OAUTH1_SIGNATURE_SENT: &str = "tR3%2BTy81lMeYAr%2FFid0kMTYa%2FWM%3D";
const OAUTH1_SIGNATURE: &str = "tR3+Ty81lMeYAr/Fid0kMTYa/WM=";
const AWS_CLIENT_TOKEN: &str = "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111";
const AUTH_CODE: &str = "SplxlOBeZQQYbYS6WxSbIA8kQ";
const CODE_VERIFIER: &str = "dBjftJeZ4CVP-mJ92K9mN9ccOB3WTcSUsKZLW7dGcUU";
const ID_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImF1ZCI6ImFwcCJ9.Qk2Lx9PmV4nR8tZ1wY6bC3dF5hJ7kL0mN2pQ4rS6tU8";
const USER_KEY: &str = "3f9a0c1b2d4e5f60a1b2c3d4e5f6a7b8";
const MBX_KEY: &str = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A";
/// 13 bytes: `alice:` and it take two `=` of padding in base64, one with a byte more.
const BASIC_PASSWORD: &str = "Vq7Lm2Xp9Rt4w";

/// Every raw secret of this file: none may appear in a finding.
const MY_SECRETS: &[&str] = &[
    TOKEN,
    XSRF,
    UUID,
    STRIPE_USER,
    FRESHDESK_KEY,
    API_KEY,
    SESSION,
    SIGNED_SID,
    SIGNED_SID_DECODED,
    GOOGLE_KEY,
    OAUTH_CODE,
    GITHUB_CODE,
    SECRET,
    PASSPHRASE,
    GLPAT,
    QUOTED_PASSWORD,
    DIGEST_RESPONSE,
    DIGEST_NONCE,
    DIGEST_OPAQUE,
    DIGEST_CNONCE,
    SIGV4_SIGNATURE,
    RAILS_TOKEN,
    OAUTH1_CONSUMER_KEY,
    OAUTH1_TOKEN,
    OAUTH1_SIGNATURE_SENT,
    OAUTH1_SIGNATURE,
    AWS_CLIENT_TOKEN,
    AUTH_CODE,
    CODE_VERIFIER,
    ID_TOKEN,
    USER_KEY,
    MBX_KEY,
    BASIC_PASSWORD,
];

/// [`inspect`], and none of [`MY_SECRETS`] in any finding's JSON or Debug.
fn inspect_mine(p: &HttpPair) -> Inspection {
    inspect_checked(p, MY_SECRETS)
}

fn one_mine(p: &HttpPair) -> Finding {
    one_checked(p, MY_SECRETS)
}

fn none_mine(p: &HttpPair) {
    none_checked(p, MY_SECRETS)
}

/// A request with `body` of content type `ct` (all of it kept).
fn with_body(ct: &str, target: &str, body: &[u8], echo: &[u8]) -> HttpPair {
    with_kept_body(ct, target, body, body.len(), echo)
}

/// A request whose body was `len` bytes, of which `kept` were kept.
fn with_kept_body(ct: &str, target: &str, kept: &[u8], len: usize, echo: &[u8]) -> HttpPair {
    let req_body = Body {
        len: len as u64,
        chunks: vec![Bytes::copy_from_slice(kept)],
        truncated: kept.len() < len,
        discarded: false,
    };
    pair_full(
        &[("content-type", ct.as_bytes())],
        target,
        req_body,
        &[],
        vec![Bytes::copy_from_slice(echo)],
    )
}

// ---------- 1. a cookie re-set to the value it was sent with ----------

#[test]
fn cookie_refresh_is_no_leak_whatever_else_carried_the_value() {
    let cookie = format!("token={TOKEN}");
    let refresh = format!("token={TOKEN}; Path=/; Max-Age=3600; HttpOnly");
    // Sent as a Bearer token and as cookie `token`, re-set (sliding expiry).
    none_mine(&pair(
        &[
            ("authorization", &bearer(TOKEN)),
            ("cookie", cookie.as_bytes()),
        ],
        "/",
        &[("set-cookie", refresh.as_bytes())],
        b"",
    ));
    // The same in another order, and with a credential header (a
    // double-submit pattern under a header that is a credential).
    let auth_cookie = format!("auth={TOKEN}");
    none_mine(&pair(
        &[
            ("cookie", auth_cookie.as_bytes()),
            ("x-auth-token", TOKEN.as_bytes()),
        ],
        "/",
        &[("set-cookie", format!("auth={TOKEN}; Secure").as_bytes())],
        b"",
    ));
    // Double-submit CSRF: header and cookie carry the same value.
    none_mine(&pair(
        &[
            ("x-xsrf-token", XSRF.as_bytes()),
            ("cookie", format!("XSRF-TOKEN={XSRF}").as_bytes()),
        ],
        "/",
        &[(
            "set-cookie",
            format!("XSRF-TOKEN={XSRF}; Path=/").as_bytes(),
        )],
        b"",
    ));
    // A percent-encoded cookie re-set as sent, or decoded.
    let sid = format!("connect.sid={SIGNED_SID}");
    for set in [SIGNED_SID, SIGNED_SID_DECODED] {
        none_mine(&pair(
            &[("cookie", sid.as_bytes())],
            "/",
            &[(
                "set-cookie",
                format!("connect.sid={set}; Path=/").as_bytes(),
            )],
            b"",
        ));
    }
}

#[test]
fn cookie_refresh_look_alikes_still_leak() {
    let cookie = format!("token={TOKEN}");
    // The value set in another cookie than the one that carried it.
    let f = one_mine(&pair(
        &[
            ("authorization", &bearer(TOKEN)),
            ("cookie", cookie.as_bytes()),
        ],
        "/",
        &[("set-cookie", format!("other={TOKEN}; Path=/").as_bytes())],
        b"",
    ));
    assert_eq!(f.sink.name.as_deref(), Some("set-cookie"));
    assert_eq!(f.credential.source, CredentialSource::Authorization);
    // A Bearer token set as a cookie it was never sent in.
    one_mine(&pair(
        &[("authorization", &bearer(TOKEN))],
        "/",
        &[("set-cookie", format!("token={TOKEN}").as_bytes())],
        b"",
    ));
    // A refresh does not hide an echo elsewhere.
    let f = one_mine(&pair(
        &[
            ("authorization", &bearer(TOKEN)),
            ("cookie", cookie.as_bytes()),
        ],
        "/",
        &[("set-cookie", format!("token={TOKEN}").as_bytes())],
        format!("{{\"debug\":\"{TOKEN}\"}}").as_bytes(),
    ));
    assert_eq!(f.sink.location, SinkLocation::Body);
}

// ---------- 2. well-known non-secret *-key / *-token headers ----------

#[test]
fn request_identity_and_anti_forgery_headers_are_not_credentials() {
    for h in [
        "idempotency-key",
        "x-idempotency-key",
        "sec-websocket-key",
        "x-csrf-token",
        "x-xsrf-token",
        "x-csrftoken",
        "x-page-token",
        "x-recaptcha-token",
    ] {
        none_mine(&pair(
            &[(h, UUID.as_bytes())],
            "/v1/charges",
            &[(h, UUID.as_bytes())],
            UUID.as_bytes(),
        ));
        assert!(!detector().is_credential_header(h), "{h}");
    }
    // Credential headers with the same suffixes still are.
    for h in [
        "x-api-key",
        "x-goog-api-key",
        "stripe-key",
        "x-service-token",
    ] {
        let f = one_mine(&pair(
            &[(h, API_KEY.as_bytes())],
            "/",
            &[],
            API_KEY.as_bytes(),
        ));
        assert_eq!(f.credential.name, h);
    }
}

// ---------- 3. generic query names need machine-made values ----------

#[test]
fn generic_query_names_take_only_machine_made_values() {
    for (target, value) in [
        ("/promo?code=SUMMER2024SALE", "SUMMER2024SALE"),
        (
            "/objects?key=uploads%2F2024%2FQ3-report_final.pdf",
            "uploads/2024/Q3-report_final.pdf",
        ),
        (
            "/objects?key=invoices/2024/march/total",
            "invoices/2024/march/total",
        ),
        (
            "/lookup?key=Quarterly+Planning+Notes",
            "Quarterly Planning Notes",
        ),
        (
            "/lookup?key=alice.smith%40example.com",
            "alice.smith@example.com",
        ),
        ("/promo?code=WelcomeBackFriend", "WelcomeBackFriend"),
    ] {
        let echo = format!("{{\"detail\":\"Promo code or object {value} not found\"}}");
        none_mine(&pair(&[], target, &[], echo.as_bytes()));
    }
    for (target, value) in [
        (format!("/maps?key={GOOGLE_KEY}"), GOOGLE_KEY),
        (
            format!("/cb?code={}", OAUTH_CODE.replace('/', "%2F")),
            OAUTH_CODE,
        ),
        (format!("/cb?code={GITHUB_CODE}&state=xyz"), GITHUB_CODE),
    ] {
        let f = one_mine(&pair(&[], &target, &[], format!("bad: {value}").as_bytes()));
        assert_eq!(f.credential.source, CredentialSource::Query);
    }
}

#[test]
fn random_tokens_look_machine_made() {
    let mut rng = crate::test_rng::XorShift::new(0x5eed_1234_abcd_0001);
    const BASE64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    // (alphabet, shortest value, most of 1000 judged made by a person)
    for (alphabet, min_len, most) in [
        (BASE64URL, 16, 5),
        (&b"0123456789abcdef"[..], 20, 15),
        // Letters outnumber digits: their runs make word-like pieces more often.
        (&b"abcdefghijklmnopqrstuvwxyz0123456789"[..], 24, 60),
    ] {
        let mut human = 0;
        for i in 0..1000 {
            let v: Vec<u8> = (0..min_len + i % 24)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            human += usize::from(!looks_machine_made(&v));
        }
        assert!(
            human <= most,
            "{human} of 1000 random values judged made by a person"
        );
    }
    // Values people make, under `?code=` / `?key=`.
    for v in [
        "SUMMER2024SALE",
        "BLACKFRIDAY50",
        "thanksgiving-deal",
        "WelcomeBackFriend",
        "reports/monthly/summary",
        "images/products/red-shoes-large",
        "StudentDiscount15",
    ] {
        assert!(!looks_machine_made(v.as_bytes()), "{v}");
    }
}

// ---------- 4. analytics and tracking cookies ----------

#[test]
fn analytics_cookies_are_not_session_cookies() {
    let cookies = [
        format!("ajs_anonymous_id={UUID}"),
        "_ga=GA1.1.1234567890.1700000000".to_string(),
        "_ga_Q9W8E7R6T5=GS1.1.1700000000.3.1.1700000123.0.0.0".to_string(),
        "_gid=GA1.2.987654321.1700000000".to_string(),
        "_fbp=fb.1.1700000000123.1234567890123456789".to_string(),
        "mp_3f9a0c1b2d4e5f60a1b2c3d4_mixpanel=%7B%22distinct_id%22%3A%20%2218c2f%22%7D".to_string(),
        "AMP_3f9a0c1b2d=JTdCJTIyZGV2aWNlSWQlMjIlM0ElMjJhYmMlMjIlN0Q=".to_string(),
        "_hjSessionUser_3412345=eyJpZCI6IjVmM2YtOTFhYi00Y2Q3In0=".to_string(),
        "_pk_id.1.1fff=9f86d081884c7d65.1700000000.".to_string(),
        "__utmz=111872281.1700000000.1.1.utmcsr=(direct)|utmccn=(direct)".to_string(),
        "hubspotutk=8e4f2a9b1c7d3e5f6a0b9c8d7e6f5a4b".to_string(),
        "__hstc=1792.8e4f2a9b1c7d3e5f6a0b9c8d7e6f5a4b.1700000000000.1700000000000".to_string(),
        "_uetsid=0b9c8d70f5a411eea1b2c3d4e5f6a7b8".to_string(),
        "AWSALB=Zq8Lw3Xv7Kp2Mn5Rt9Yb4Hd6Jf1Gs0Ac+Ue/Io=".to_string(),
        format!("XSRF-TOKEN={XSRF}"),
        format!("csrftoken={TOKEN}"),
    ];
    for c in &cookies {
        let p = pair(&[("cookie", c.as_bytes())], "/t", &[], c.as_bytes());
        none_mine(&p);
        assert!(!detector().wants_response_body(&p.exchange.request), "{c}");
    }
    // All of them in one header, echoed.
    let all = cookies.join("; ");
    none_mine(&pair(
        &[("cookie", all.as_bytes())],
        "/t",
        &[],
        all.as_bytes(),
    ));
    // Session cookies with names of their own still count, beside them.
    for name in [
        "app_sess",
        "__Host-auth",
        "remember_web_59ba36addc2b2f94",
        "sid2",
    ] {
        let c = format!("{all}; {name}={SESSION}");
        let f = one_mine(&pair(
            &[("cookie", c.as_bytes())],
            "/",
            &[],
            SESSION.as_bytes(),
        ));
        assert_eq!(
            (f.credential.source, f.credential.name.as_str()),
            (CredentialSource::Cookie, name)
        );
    }
}

// ---------- 5. Basic with the key as username ----------

#[test]
fn basic_username_is_the_key_when_there_is_no_password() {
    for (user, password) in [(STRIPE_USER, ""), (FRESHDESK_KEY, "X")] {
        let auth = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
        let body = format!("{{\"error\":\"Invalid API Key provided: {user}\"}}");
        let f = one_mine(&pair(
            &[("authorization", auth.as_bytes())],
            "/v1/charges",
            &[],
            body.as_bytes(),
        ));
        assert_eq!(
            (
                f.credential.source,
                f.credential.name.as_str(),
                f.credential.kind
            ),
            (
                CredentialSource::Authorization,
                "basic",
                CredentialType::ApiKey
            ),
        );
        assert_eq!(f.credential.length, user.len());
    }
    // People's names and addresses as usernames are not keys.
    for user in [
        "alice",
        "svc-reporting",
        "alice.smith@example.com",
        "AliceWonderland",
    ] {
        let auth = format!("Basic {}", STANDARD.encode(format!("{user}:")));
        none_mine(&pair(
            &[("authorization", auth.as_bytes())],
            "/",
            &[],
            format!("Unknown user {user}").as_bytes(),
        ));
    }
}

// ---------- 6. JSON bodies cut by the kept prefix ----------

#[test]
fn truncated_json_body_keeps_its_complete_members() {
    let events: Vec<String> = (0..1400)
        .map(|i| format!("{{\"event_type\":\"page_view\",\"user_id\":\"u{i}\",\"props\":{{\"path\":\"/p/{i}\"}}}}"))
        .collect();
    let body = format!(
        "{{\"client\":{{\"secret_hint\":\"none\",\"api_key\" : \"{API_KEY}\"}},\"events\":[{}]}}",
        events.join(",")
    );
    assert!(body.len() > 64 * 1024);
    let kept = &body.as_bytes()[..64 * 1024];
    let echo = format!("{{\"code\":400,\"error\":\"invalid api_key {API_KEY}\"}}");
    let f = one_mine(&with_kept_body(
        "application/json",
        "/2/httpapi",
        kept,
        body.len(),
        echo.as_bytes(),
    ));
    assert_eq!(
        (f.credential.source, f.credential.name.as_str()),
        (CredentialSource::Json, "api_key")
    );
    // An escaped quote inside a value, in a cut document.
    let body = format!(
        "{{\"password\":\"Zx\\\"9kQ7vL3mP2\",\"blob\":\"{}",
        "A".repeat(100)
    );
    let f = one_mine(&with_kept_body(
        "application/json",
        "/",
        body.as_bytes(),
        body.len() + 10,
        format!("password {QUOTED_PASSWORD} rejected").as_bytes(),
    ));
    assert_eq!(f.credential.name, "password");
    // A value cut by the end is not taken, nor is a credential name that is a value.
    for body in [
        format!("{{\"a\":[1,2],\"api_key\":\"{}", &API_KEY[..20]),
        format!("{{\"field\":\"password\",\"value\":\"{API_KEY}\",\"more\":\"x"),
    ] {
        none_mine(&with_kept_body(
            "application/json",
            "/",
            body.as_bytes(),
            body.len() + 10,
            API_KEY.as_bytes(),
        ));
    }
}

// ---------- 7. more credentials than are searched for ----------

#[test]
fn many_cookies_do_not_crowd_out_session_or_authorization() {
    let mut rng = crate::test_rng::XorShift::new(11);
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let junk: Vec<String> = (0..70)
        .map(|i| {
            let v: String = (0..22)
                .map(|_| ALNUM[rng.below(ALNUM.len())] as char)
                .collect();
            format!("_trk{i}={v}")
        })
        .collect();
    let cookie = format!("{}; session={SESSION}", junk.join("; "));
    let body = format!("{{\"cookies\":\"{SESSION}\",\"auth\":\"Bearer {TOKEN}\"}}");
    let p = pair(
        &[
            ("cookie", cookie.as_bytes()),
            ("authorization", &bearer(TOKEN)),
        ],
        "/",
        &[],
        body.as_bytes(),
    );
    let insp = inspect_mine(&p);
    let mut names: Vec<_> = insp
        .findings
        .iter()
        .map(|f| f.credential.name.as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["bearer", "session"]);
    // 72 distinct credentials, 64 searched for, the rest counted.
    assert_eq!(insp.credentials_dropped, 72 - MAX_CREDENTIALS);
    let taken = extract::extract_counted(&p.exchange.request, detector().config());
    assert_eq!((taken.creds.len(), taken.dropped), (MAX_CREDENTIALS, 8));
    // Kept in the order the request carried them.
    assert_eq!(taken.creds.last().unwrap().name, "bearer");
    // Nothing dropped, nothing counted.
    let p = pair(&[("authorization", &bearer(TOKEN))], "/", &[], b"");
    assert_eq!(detector().inspect(&p).credentials_dropped, 0);
}

// ---------- 8. a percent-encoded cookie echoed decoded ----------

#[test]
fn percent_encoded_cookie_is_found_decoded_in_full() {
    let cookie = format!("theme=dark; connect.sid={SIGNED_SID}");
    for echo in [SIGNED_SID_DECODED, SIGNED_SID] {
        let body = format!("{{\"cookies\":{{\"connect.sid\":\"{echo}\"}}}}");
        let f = one_mine(&pair(
            &[("cookie", cookie.as_bytes())],
            "/",
            &[],
            body.as_bytes(),
        ));
        assert_eq!(
            (f.credential.name.as_str(), f.exposure, f.credential.length),
            ("connect.sid", Exposure::Full, SIGNED_SID.len())
        );
    }
}

// ---------- 9. credential field names beyond the exact list ----------

#[test]
fn credential_names_are_matched_normalised() {
    let cases = [
        ("new_password", CredentialType::Password),
        ("current_password", CredentialType::Password),
        ("old_password", CredentialType::Password),
        ("clientSecret", CredentialType::ClientSecret),
        ("refreshToken", CredentialType::RefreshToken),
        ("accessToken", CredentialType::AccessToken),
        ("apiKey", CredentialType::ApiKey),
        ("SecretAccessKey", CredentialType::ApiKey),
        ("user[password]", CredentialType::Password),
    ];
    for (name, kind) in cases {
        let json = format!("{{\"outer\":{{\"{name}\":\"{SECRET}\"}}}}");
        let f = one_mine(&with_body(
            "application/json",
            "/",
            json.as_bytes(),
            SECRET.as_bytes(),
        ));
        assert_eq!(
            (f.credential.name.as_str(), f.credential.kind),
            (name, kind),
            "json"
        );
        let form = format!(
            "a=1&{}={SECRET}",
            name.replace('[', "%5B").replace(']', "%5D")
        );
        let f = one_mine(&with_body(
            "application/x-www-form-urlencoded",
            "/",
            form.as_bytes(),
            SECRET.as_bytes(),
        ));
        assert_eq!(
            (f.credential.source, f.credential.name.as_str()),
            (CredentialSource::Form, name)
        );
    }
    let f = one_mine(&pair(
        &[],
        &format!("/api/v4/projects?private_token={GLPAT}"),
        &[],
        GLPAT.as_bytes(),
    ));
    assert_eq!(
        (f.credential.source, f.credential.name.as_str()),
        (CredentialSource::Query, "private_token")
    );
    // Non-secrets with credential-ish names.
    for name in [
        "password_reset_required",
        "token_type",
        "expires_in",
        "csrf_token",
        "csrfmiddlewaretoken",
        "authenticity_token",
        "pageToken",
        "NextToken",
        "idempotency_key",
        "recaptcha_token",
        "tokenized",
    ] {
        let json = format!("{{\"{name}\":\"{SECRET}\"}}");
        none_mine(&with_body(
            "application/json",
            &format!("/?{name}={SECRET}"),
            json.as_bytes(),
            SECRET.as_bytes(),
        ));
    }
}

// ---------- 10. JSON under other media types ----------

#[test]
fn json_media_types() {
    let body = format!(
        "{{\"AuthFlow\":\"USER_PASSWORD_AUTH\",\"AuthParameters\":{{\"USERNAME\":\"alice\",\"PASSWORD\":\"{SECRET}\"}}}}"
    );
    for ct in [
        "application/x-amz-json-1.1",
        "application/x-amz-json-1.0",
        "application/vnd.api+json",
        "application/merge-patch+json; charset=utf-8",
        "text/json",
        "Application/JSON",
    ] {
        let f = one_mine(&with_body(ct, "/", body.as_bytes(), SECRET.as_bytes()));
        assert_eq!(
            (f.credential.source, f.credential.name.as_str()),
            (CredentialSource::Json, "PASSWORD"),
            "{ct}"
        );
    }
    for ct in [
        "application/jsonp",
        "text/javascript",
        "application/octet-stream",
    ] {
        none_mine(&with_body(ct, "/", body.as_bytes(), SECRET.as_bytes()));
    }
}

// ---------- 11. passphrases in password fields ----------

#[test]
fn password_fields_keep_word_like_passphrases() {
    let json = format!("{{\"username\":\"bob\",\"password\":\"{PASSPHRASE}\"}}");
    let f = one_mine(&with_body(
        "application/json",
        "/login",
        json.as_bytes(),
        format!("{{\"input\":\"{PASSPHRASE}\"}}").as_bytes(),
    ));
    assert_eq!(
        (f.credential.name.as_str(), f.credential.kind),
        ("password", CredentialType::Password)
    );
    // Trivial or placeholder values, and word-like values of other fields.
    for v in [
        "aaaaaaaa",
        "12345678",
        "abcdefgh",
        "87654321",
        "undefined",
        "password",
        "abcabcab",
    ] {
        let json = format!("{{\"password\":\"{v}\"}}");
        none_mine(&with_body(
            "application/json",
            "/",
            json.as_bytes(),
            format!("echo {v}").as_bytes(),
        ));
    }
    let json = format!("{{\"api_key\":\"{PASSPHRASE}\"}}");
    none_mine(&with_body(
        "application/json",
        "/",
        json.as_bytes(),
        PASSPHRASE.as_bytes(),
    ));
}

// ---------- framework anti-forgery form fields ----------

/// A form page rendered again after a POST carries the framework's
/// anti-forgery token in a hidden field: Laravel's `_token`, ASP.NET's
/// `__RequestVerificationToken`.  Echoed by design, not a leak; the
/// password of the same form still is, and a field named `token` too.
#[test]
fn framework_anti_forgery_fields_are_not_credentials() {
    let csrf = "Xq7Lm2Vp9Rt4Wz8Kc3Nb6Hy1Jd5Fg0Qs2Ae7Uo9Ti";
    for field in ["_token", "__RequestVerificationToken"] {
        let form = format!("{field}={csrf}&email=a%40b.example");
        let page =
            format!("<form><input type=\"hidden\" name=\"{field}\" value=\"{csrf}\"></form>");
        none_mine(&with_body(
            "application/x-www-form-urlencoded",
            "/login",
            form.as_bytes(),
            page.as_bytes(),
        ));
    }
    let form = format!("token={csrf}");
    let f = one_mine(&with_body(
        "application/x-www-form-urlencoded",
        "/login",
        form.as_bytes(),
        format!("bad token {csrf}").as_bytes(),
    ));
    assert_eq!(f.credential.name, "token");
}

// ---------- Authorization schemes with auth-params (RFC 7235) ----------

/// `p`, answered with `status`.
fn with_status(mut p: HttpPair, status: u16) -> HttpPair {
    p.exchange.response.status = status;
    p
}

/// Digest's params are the server's own (realm, nonce, opaque) or
/// identifiers (username, uri): a 401 handing them out again leaks
/// nothing.  Only `response`, the hash derived from the password, is a
/// credential.
#[test]
fn digest_authorization_takes_only_its_response() {
    let auth = format!(
        "Digest username=\"alice\", realm=\"api@example\", uri=\"/x\", algorithm=SHA-256, \
         nonce=\"{DIGEST_NONCE}\", nc=00000001, cnonce=\"{DIGEST_CNONCE}\", qop=auth, \
         response=\"{DIGEST_RESPONSE}\", opaque=\"{DIGEST_OPAQUE}\""
    );
    let challenge = format!(
        "Digest realm=\"api@example\", qop=\"auth\", nonce=\"{DIGEST_NONCE}\", \
         opaque=\"{DIGEST_OPAQUE}\", algorithm=SHA-256"
    );
    none_mine(&with_status(
        pair(
            &[("authorization", auth.as_bytes())],
            "/x",
            &[("www-authenticate", challenge.as_bytes())],
            b"",
        ),
        401,
    ));
    // Nor the client's own cnonce, nor the parameters echoed in a body.
    none_mine(&pair(
        &[("authorization", auth.as_bytes())],
        "/x",
        &[],
        format!(
            "{{\"cnonce\":\"{DIGEST_CNONCE}\",\"opaque\":\"{DIGEST_OPAQUE}\",\"user\":\"alice\"}}"
        )
        .as_bytes(),
    ));
    // The response hash echoed is the whole credential.
    let f = one_mine(&pair(
        &[("authorization", auth.as_bytes())],
        "/x",
        &[],
        format!("{{\"debug\":{{\"response\":\"{DIGEST_RESPONSE}\"}}}}").as_bytes(),
    ));
    assert_eq!(
        (
            f.credential.source,
            f.credential.name.as_str(),
            f.exposure,
            f.credential.length
        ),
        (
            CredentialSource::Authorization,
            "digest",
            Exposure::Full,
            DIGEST_RESPONSE.len()
        )
    );
}

/// SigV4's `Credential` is the access key id and the scope (identifiers,
/// in every S3 error); the `Signature` is the credential.
#[test]
fn sigv4_authorization_takes_only_its_signature() {
    let scope = "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request";
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={scope}, \
         SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature={SIGV4_SIGNATURE}"
    );
    let error = format!(
        "<Error><Code>AccessDenied</Code><AWSAccessKeyId>AKIAIOSFODNN7EXAMPLE</AWSAccessKeyId>\
         <CredentialScope>{scope}</CredentialScope>\
         <SignedHeaders>host;range;x-amz-content-sha256;x-amz-date</SignedHeaders></Error>"
    );
    none_mine(&with_status(
        pair(
            &[("authorization", auth.as_bytes())],
            "/bucket/key",
            &[("content-type", b"application/xml")],
            error.as_bytes(),
        ),
        403,
    ));
    // An error quoting the Credential param as sent.
    none_mine(&with_status(
        pair(
            &[("authorization", auth.as_bytes())],
            "/bucket/key",
            &[],
            format!("{{\"message\":\"Credential={scope} is not scoped to region us-west-2\"}}")
                .as_bytes(),
        ),
        400,
    ));
    let f = one_mine(&pair(
        &[("authorization", auth.as_bytes())],
        "/bucket/key",
        &[],
        format!("<SignatureProvided>{SIGV4_SIGNATURE}</SignatureProvided>").as_bytes(),
    ));
    assert_eq!(
        (
            f.credential.source,
            f.credential.name.as_str(),
            f.exposure,
            f.credential.length
        ),
        (
            CredentialSource::Authorization,
            "aws4-hmac-sha256",
            Exposure::Full,
            SIGV4_SIGNATURE.len()
        )
    );
}

/// S3's `SignatureDoesNotMatch` (403) gives the request's SigV4 signature
/// back as `<SignatureProvided>`: the protocol, not a leak.  The same
/// signature in any other place, code, status or format still is.  A
/// presigned URL's `X-Amz-Credential` (the access key id and scope, as the
/// header's `Credential`) is no credential: quoted in every S3 error, it
/// was a partial leak.
#[test]
fn s3_signature_does_not_match_hands_back_the_signature() {
    let scope = "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request";
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={scope}, \
         SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={SIGV4_SIGNATURE}"
    );
    let s3_error = |code: &str, provided: &str, message: &str| {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
             <Message>{message}</Message><AWSAccessKeyId>AKIAIOSFODNN7EXAMPLE</AWSAccessKeyId>\
             <StringToSign>AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n\
             7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972</StringToSign>\
             <SignatureProvided>{provided}</SignatureProvided>\
             <StringToSignBytes>41 57 53 34</StringToSignBytes>\
             <CanonicalRequest>GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\n</CanonicalRequest>\
             <RequestId>4442587FB7D0A2F9</RequestId><HostId>abc</HostId></Error>"
        )
    };
    let mismatch = s3_error(
        "SignatureDoesNotMatch",
        SIGV4_SIGNATURE,
        "The request signature we calculated does not match the signature you provided.",
    );
    let presigned = format!(
        "/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2F\
         us-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400\
         &X-Amz-SignedHeaders=host&X-Amz-Signature={SIGV4_SIGNATURE}"
    );
    let by_header = |path: &str, ct: &[u8], body: &str, status: u16| {
        with_status(
            pair(
                &[("authorization", auth.as_bytes())],
                path,
                &[("content-type", ct)],
                body.as_bytes(),
            ),
            status,
        )
    };
    let by_url = |ct: &[u8], body: &str, status: u16| {
        with_status(
            pair(&[], &presigned, &[("content-type", ct)], body.as_bytes()),
            status,
        )
    };
    let other_code = s3_error("AccessDenied", SIGV4_SIGNATURE, "Access Denied");
    for ct in [&b"application/xml"[..], b"text/xml; charset=utf-8"] {
        none_mine(&by_header("/test.txt", ct, &mismatch, 403));
        none_mine(&by_url(ct, &mismatch, 403));
        none_mine(&by_url(ct, &other_code, 403));
    }
    // Still leaks: another code, another status, another format, the value
    // also in the message, a signature other than the one sent there.
    let twice = s3_error(
        "SignatureDoesNotMatch",
        SIGV4_SIGNATURE,
        &format!("signature {SIGV4_SIGNATURE} does not match"),
    );
    let json = format!(
        "{{\"Code\":\"SignatureDoesNotMatch\",\"SignatureProvided\":\"{SIGV4_SIGNATURE}\"}}"
    );
    let leaks = [
        by_header("/test.txt", b"application/xml", &other_code, 403),
        by_header("/test.txt", b"application/xml", &mismatch, 200),
        by_header("/test.txt", b"application/json", &json, 403),
        by_header("/test.txt", b"text/html", &mismatch, 403),
        by_header("/test.txt", b"application/xml", &twice, 403),
    ];
    for p in &leaks {
        let f = one_mine(p);
        assert_eq!(f.exposure, Exposure::Full);
    }
    // Another request's signature in the element: not this one's echo.
    let mut other = SIGV4_SIGNATURE.to_string();
    other.replace_range(0..1, "0");
    none_mine(&by_header(
        "/test.txt",
        b"application/xml",
        &s3_error("SignatureDoesNotMatch", &other, "x"),
        403,
    ));
    // A Bearer token is no SigV4 signature: the element protects nothing.
    let bearer = format!("Bearer {SIGV4_SIGNATURE}");
    one_mine(&with_status(
        pair(
            &[("authorization", bearer.as_bytes())],
            "/test.txt",
            &[("content-type", b"application/xml")],
            mismatch.as_bytes(),
        ),
        403,
    ));
}

/// Rails' `authenticate_with_http_token` and PagerDuty send
/// `Token token="…"`: the credential is the token, not `token="…` with it.
#[test]
fn token_scheme_with_a_token_param_takes_the_token() {
    for auth in [
        format!("Token token=\"{RAILS_TOKEN}\""),
        format!("Token token={RAILS_TOKEN}"),
        format!("Token token=\"{RAILS_TOKEN}\", app=\"mobile\""),
    ] {
        let f = one_mine(&pair(
            &[("authorization", auth.as_bytes())],
            "/incidents",
            &[],
            format!("{{\"error\":\"token {RAILS_TOKEN} is revoked\"}}").as_bytes(),
        ));
        assert_eq!(
            (
                f.credential.source,
                f.credential.name.as_str(),
                f.exposure,
                f.credential.length
            ),
            (
                CredentialSource::Authorization,
                "token",
                Exposure::Full,
                RAILS_TOKEN.len()
            ),
            "{auth}"
        );
    }
    // A bare value is the credential, as ever.
    let auth = format!("Token {RAILS_TOKEN}");
    let f = one_mine(&pair(
        &[("authorization", auth.as_bytes())],
        "/",
        &[],
        RAILS_TOKEN.as_bytes(),
    ));
    assert_eq!(
        (f.exposure, f.credential.length),
        (Exposure::Full, RAILS_TOKEN.len())
    );
}

/// OAuth 1.0a: the token and the signature (percent-decoded) are the
/// credentials; the consumer key, nonce and timestamp are not.
#[test]
fn oauth1_authorization_takes_token_and_signature() {
    let params = format!(
        "oauth_consumer_key=\"{OAUTH1_CONSUMER_KEY}\", \
         oauth_token=\"{OAUTH1_TOKEN}\", oauth_signature_method=\"HMAC-SHA1\", \
         oauth_timestamp=\"137131201\", oauth_nonce=\"7d8f3e4a\", \
         oauth_signature=\"{OAUTH1_SIGNATURE_SENT}\", oauth_version=\"1.0\""
    );
    // Without a realm (most clients) and with one (RFC 5849's example).
    for auth in [
        format!("OAuth {params}"),
        format!("OAuth realm=\"Example\", {params}"),
    ] {
        let rejected =
            format!("{{\"error\":\"unknown oauth_consumer_key=\\\"{OAUTH1_CONSUMER_KEY}\\\"\"}}");
        none_mine(&pair(
            &[("authorization", auth.as_bytes())],
            "/photos",
            &[],
            rejected.as_bytes(),
        ));
        // The challenge of a 401 repeats the realm.
        none_mine(&with_status(
            pair(
                &[("authorization", auth.as_bytes())],
                "/photos",
                &[(
                    "www-authenticate",
                    b"OAuth realm=\"Example\", oauth_problem=\"token_rejected\"",
                )],
                b"",
            ),
            401,
        ));
        for (echo, len) in [
            (OAUTH1_TOKEN, OAUTH1_TOKEN.len()),
            (OAUTH1_SIGNATURE, OAUTH1_SIGNATURE.len()),
            (OAUTH1_SIGNATURE_SENT, OAUTH1_SIGNATURE.len()),
        ] {
            let f = one_mine(&pair(
                &[("authorization", auth.as_bytes())],
                "/photos",
                &[],
                format!("invalid: {echo}").as_bytes(),
            ));
            assert_eq!(
                (
                    f.credential.source,
                    f.credential.name.as_str(),
                    f.exposure,
                    f.credential.length
                ),
                (
                    CredentialSource::Authorization,
                    "oauth",
                    Exposure::Full,
                    len
                ),
                "{echo}"
            );
        }
    }
}

// ---------- AWS idempotency tokens ----------

/// `ClientRequestToken`, `ClientToken` and `CreationToken` make a call
/// idempotent; the API echoes them by design (Secrets Manager returns the
/// `ClientRequestToken` as the `VersionId`).
#[test]
fn aws_idempotency_tokens_are_not_credentials() {
    for name in ["ClientRequestToken", "ClientToken", "CreationToken"] {
        let json = format!("{{\"Name\":\"prod/db\",\"{name}\":\"{AWS_CLIENT_TOKEN}\"}}");
        let echo = format!("{{\"Name\":\"prod/db\",\"VersionId\":\"{AWS_CLIENT_TOKEN}\"}}");
        none_mine(&with_body(
            "application/x-amz-json-1.1",
            "/",
            json.as_bytes(),
            echo.as_bytes(),
        ));
        let form = format!("Action=RunInstances&{name}={AWS_CLIENT_TOKEN}");
        none_mine(&with_body(
            "application/x-www-form-urlencoded",
            "/",
            form.as_bytes(),
            echo.as_bytes(),
        ));
    }
    // A token named as a credential beside them still is one.
    let json =
        format!("{{\"ClientRequestToken\":\"{AWS_CLIENT_TOKEN}\",\"SessionToken\":\"{TOKEN}\"}}");
    let f = one_mine(&with_body(
        "application/x-amz-json-1.1",
        "/",
        json.as_bytes(),
        format!("{AWS_CLIENT_TOKEN} {TOKEN}").as_bytes(),
    ));
    assert_eq!(f.credential.name, "SessionToken");
}

// ---------- OAuth code and PKCE verifier in token requests ----------

#[test]
fn oauth_code_and_code_verifier_in_bodies() {
    let form = format!(
        "grant_type=authorization_code&code={AUTH_CODE}\
         &redirect_uri=https%3A%2F%2Fapp.example%2Fcb&code_verifier={CODE_VERIFIER}"
    );
    let json = format!(
        "{{\"grant_type\":\"authorization_code\",\"code\":\"{AUTH_CODE}\",\
         \"redirect_uri\":\"https://app.example/cb\",\"code_verifier\":\"{CODE_VERIFIER}\"}}"
    );
    for (ct, body, source) in [
        (
            "application/x-www-form-urlencoded",
            &form,
            CredentialSource::Form,
        ),
        ("application/json", &json, CredentialSource::Json),
    ] {
        for (echo, name) in [(AUTH_CODE, "code"), (CODE_VERIFIER, "code_verifier")] {
            let err = format!("{{\"error\":\"invalid_grant\",\"detail\":\"{echo}\"}}");
            let f = one_mine(&with_body(ct, "/token", body.as_bytes(), err.as_bytes()));
            assert_eq!(
                (f.credential.source, f.credential.name.as_str(), f.exposure),
                (source, name, Exposure::Full),
                "{ct}"
            );
        }
    }
    // A code made by a person (a promo code) is none, as in the query; nor
    // a machine-made one nested in a document (a product's code).
    for (ct, body, echo) in [
        (
            "application/x-www-form-urlencoded",
            "code=SUMMER2024SALE&cart=7".to_string(),
            "SUMMER2024SALE",
        ),
        (
            "application/json",
            "{\"code\":\"WelcomeBackFriend\"}".to_string(),
            "WelcomeBackFriend",
        ),
        (
            "application/json",
            format!("{{\"items\":[{{\"code\":\"{AUTH_CODE}\",\"qty\":1}}]}}"),
            AUTH_CODE,
        ),
    ] {
        none_mine(&with_body(
            ct,
            "/cart",
            body.as_bytes(),
            format!("{{\"applied\":\"{echo}\"}}").as_bytes(),
        ));
    }
    // Nested, in a document cut by the body cap, likewise.
    let body = format!("{{\"items\":[{{\"code\":\"{AUTH_CODE}\"}}],\"blob\":\"AAAA");
    none_mine(&with_kept_body(
        "application/json",
        "/cart",
        body.as_bytes(),
        body.len() + 100,
        AUTH_CODE.as_bytes(),
    ));
    let body = format!("{{\"code\":\"{AUTH_CODE}\",\"blob\":\"AAAA");
    one_mine(&with_kept_body(
        "application/json",
        "/token",
        body.as_bytes(),
        body.len() + 100,
        AUTH_CODE.as_bytes(),
    ));
}

// ---------- id_token_hint, user_key ----------

#[test]
fn id_token_hint_in_query_and_form() {
    let f = one_mine(&pair(
        &[],
        &format!("/logout?id_token_hint={ID_TOKEN}&post_logout_redirect_uri=https%3A%2F%2Fapp"),
        &[],
        format!("<input type=hidden name=id_token_hint value=\"{ID_TOKEN}\">").as_bytes(),
    ));
    assert_eq!(
        (
            f.credential.source,
            f.credential.name.as_str(),
            f.credential.kind
        ),
        (
            CredentialSource::Query,
            "id_token_hint",
            CredentialType::Jwt
        )
    );
    let form = format!("id_token_hint={ID_TOKEN}&state=af0ifjsldkj");
    let f = one_mine(&with_body(
        "application/x-www-form-urlencoded",
        "/logout",
        form.as_bytes(),
        ID_TOKEN.as_bytes(),
    ));
    assert_eq!(
        (f.credential.source, f.credential.name.as_str()),
        (CredentialSource::Form, "id_token_hint")
    );
}

#[test]
fn user_key_in_the_query() {
    let p = pair(
        &[],
        &format!("/v1/items?user_key={USER_KEY}"),
        &[],
        format!("{{\"error\":\"user_key {USER_KEY} is not valid\"}}").as_bytes(),
    );
    assert!(detector().wants_response_body(&p.exchange.request));
    let f = one_mine(&p);
    assert_eq!(
        (f.credential.source, f.credential.name.as_str()),
        (CredentialSource::Query, "user_key")
    );
}

// ---------- header names ending in `apikey` ----------

#[test]
fn header_names_ending_in_apikey_without_a_separator() {
    for h in [
        "x-mbx-apikey",
        "x_api_key",
        "x-api_key",
        "apikey",
        "partner-apikey",
    ] {
        let p = pair(
            &[(h, MBX_KEY.as_bytes())],
            "/api/v3/order",
            &[],
            MBX_KEY.as_bytes(),
        );
        assert!(detector().is_credential_header(h), "{h}");
        assert!(detector().wants_response_body(&p.exchange.request), "{h}");
        let f = one_mine(&p);
        assert_eq!(
            (f.credential.source, f.credential.name.as_str()),
            (CredentialSource::Header, h)
        );
    }
    // Not every name ending in `key`.
    for h in ["x-monkey", "x-turkey", "x-idempotencykey"] {
        none_mine(&pair(
            &[(h, MBX_KEY.as_bytes())],
            "/",
            &[],
            MBX_KEY.as_bytes(),
        ));
        assert!(!detector().is_credential_header(h), "{h}");
    }
}

// ---------- Basic without base64 padding ----------

#[test]
fn basic_without_base64_padding() {
    // Two `=` and one `=` of padding stripped (`BASIC_PASSWORD` is in
    // the secrets checked, so is the longer one).
    for password in [BASIC_PASSWORD.to_string(), format!("{BASIC_PASSWORD}Z")] {
        let padded = STANDARD.encode(format!("alice:{password}"));
        assert!(padded.ends_with('='), "the case needs padding");
        let auth = format!("Basic {}", padded.trim_end_matches('='));
        let f = one_mine(&pair(
            &[("authorization", auth.as_bytes())],
            "/",
            &[],
            format!("bad password {password}").as_bytes(),
        ));
        assert_eq!(
            (f.credential.name.as_str(), f.credential.kind),
            ("basic_password", CredentialType::Password)
        );
    }
}

// ---------- JSON bodies without a JSON content type ----------

/// A request with `body` and the given request headers.
fn with_headers_body(headers: &[(&str, &[u8])], body: &[u8], echo: &[u8]) -> HttpPair {
    let req_body = Body {
        len: body.len() as u64,
        chunks: vec![Bytes::copy_from_slice(body)],
        truncated: false,
        discarded: false,
    };
    pair_full(
        headers,
        "/",
        req_body,
        &[],
        vec![Bytes::copy_from_slice(echo)],
    )
}

/// JSON sent without a JSON type: no Content-Type, curl's `-d '{…}'`
/// (form-urlencoded), `navigator.sendBeacon` (text/plain).
#[test]
fn json_body_without_a_json_content_type() {
    let body = format!("\n  {{\"client\":{{\"api_key\":\"{API_KEY}\"}},\"n\":1}}");
    let echo = format!("{{\"error\":\"invalid api_key {API_KEY}\"}}");
    for headers in [
        &[][..],
        &[("content-type", &b"application/x-www-form-urlencoded"[..])][..],
        &[("content-type", &b"text/plain;charset=UTF-8"[..])][..],
    ] {
        let f = one_mine(&with_headers_body(
            headers,
            body.as_bytes(),
            echo.as_bytes(),
        ));
        assert_eq!(
            (f.credential.source, f.credential.name.as_str()),
            (CredentialSource::Json, "api_key"),
            "{headers:?}"
        );
    }
    // Not JSON: nothing taken without a type, a form still a form.
    let text = format!("api_key: {API_KEY}");
    for headers in [&[][..], &[("content-type", &b"text/plain"[..])][..]] {
        none_mine(&with_headers_body(
            headers,
            text.as_bytes(),
            echo.as_bytes(),
        ));
    }
    let form = format!("api_key={API_KEY}&q=%7B");
    let f = one_mine(&with_headers_body(
        &[("content-type", b"application/x-www-form-urlencoded")],
        form.as_bytes(),
        echo.as_bytes(),
    ));
    assert_eq!(f.credential.source, CredentialSource::Form);
}

// ---------- credentials a protocol hands back ----------

const REFRESH_TOKEN: &str = "rt_Lq3Zx8Wk2Vm7Np4Hs9Tb6Yc1";
const REGISTRATION_TOKEN: &str = "reg-23410913-abewfq.123483";
const CLIENT_SECRET: &str = "cf136dc3c1fc93f31185e5885805d";

/// `p` answered 200 with JSON `body` and these response headers.
fn answered_200(mut p: HttpPair, headers: &[(&str, &[u8])], body: &str) -> HttpPair {
    let mut h: Vec<(&str, &[u8])> = vec![("content-type", b"application/json")];
    h.extend_from_slice(headers);
    p.exchange.response.headers = hdrs(&h);
    p.exchange.response.body = Body {
        len: body.len() as u64,
        chunks: vec![Bytes::copy_from_slice(body.as_bytes())],
        truncated: false,
        discarded: false,
    };
    with_status(p, 200)
}

/// RFC 6749 6: a refresh grant's answer may hold the refresh token the
/// client sent (the server did not rotate it).  There, in the token
/// response's `refresh_token`, it is no leak; anywhere else it is.
#[test]
fn refresh_token_handed_back_by_a_refresh_grant_is_no_leak() {
    let form = format!("grant_type=refresh_token&refresh_token={REFRESH_TOKEN}&client_id=app-123");
    let json = format!(
        "{{\"grant_type\":\"refresh_token\",\"refresh_token\":\"{REFRESH_TOKEN}\",\"client_id\":\"app-123\"}}"
    );
    let token_response = format!(
        "{{\"access_token\":\"at_new_9f8e7d6c5b4a3928\",\"token_type\":\"Bearer\",\
         \"expires_in\":3600,\"refresh_token\":\"{REFRESH_TOKEN}\"}}"
    );
    let requests = [
        ("application/x-www-form-urlencoded", form.clone()),
        ("application/json", json.clone()),
    ];
    for (ct, body) in &requests {
        let req = || with_body(ct, "/oauth/token", body.as_bytes(), b"");
        none_mine(&answered_200(req(), &[], &token_response));
        // Gzipped, with the members in another order.
        let reordered = format!(
            "{{\"refresh_token\" : \"{REFRESH_TOKEN}\", \"scope\":\"a b\",\"access_token\":\"at_x1y2z3w4v5u6\"}}"
        );
        let mut p = answered_200(req(), &[("content-encoding", b"gzip")], "");
        let gz = {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(reordered.as_bytes()).unwrap();
            e.finish().unwrap()
        };
        p.exchange.response.body.len = gz.len() as u64;
        p.exchange.response.body.chunks = vec![Bytes::from(gz)];
        none_mine(&p);

        // The same value anywhere else is a leak: (response headers, body, status).
        let twice = format!(
            "{{\"access_token\":\"at_1\",\"refresh_token\":\"{REFRESH_TOKEN}\",\"debug\":\"{REFRESH_TOKEN}\"}}"
        );
        let another_field =
            format!("{{\"access_token\":\"{REFRESH_TOKEN}\",\"token_type\":\"Bearer\"}}");
        let nested = format!(
            "{{\"access_token\":\"at_1\",\"data\":{{\"refresh_token\":\"{REFRESH_TOKEN}\"}}}}"
        );
        let no_access_token = format!("{{\"refresh_token\":\"{REFRESH_TOKEN}\"}}");
        let error = format!(
            "{{\"error\":\"invalid_grant\",\"error_description\":\"{REFRESH_TOKEN} expired\"}}"
        );
        let location = format!("https://app.example/cb#refresh_token={REFRESH_TOKEN}");
        let header = [("x-debug-refresh", REFRESH_TOKEN.as_bytes())];
        type Case<'a> = (&'a [(&'a str, &'a [u8])], &'a str, u16, SinkLocation);
        let cases: [Case; 7] = [
            (&[], &twice, 200, SinkLocation::Body),
            (&[], &another_field, 200, SinkLocation::Body),
            (&[], &nested, 200, SinkLocation::Body),
            (&[], &no_access_token, 200, SinkLocation::Body),
            (&[], &token_response, 400, SinkLocation::Body),
            (
                &[("location", location.as_bytes())],
                "{}",
                200,
                SinkLocation::Header,
            ),
            (&header, &token_response, 200, SinkLocation::Header),
        ];
        for (headers, body, status, sink) in cases {
            let f = one_mine(&with_status(answered_200(req(), headers, body), status));
            assert_eq!(
                (f.credential.name.as_str(), f.sink.location, f.exposure),
                ("refresh_token", sink, Exposure::Full),
                "{ct} {status} {body}"
            );
        }
        let f = one_mine(&with_status(answered_200(req(), &[], &error), 400));
        assert_eq!(f.credential.kind, CredentialType::RefreshToken);
    }
    // Not a refresh grant: the same answer leaks the token.
    let not_refresh = form.replace("grant_type=refresh_token", "grant_type=password");
    one_mine(&answered_200(
        with_body(
            "application/x-www-form-urlencoded",
            "/oauth/token",
            not_refresh.as_bytes(),
            b"",
        ),
        &[],
        &token_response,
    ));
    // A text/html answer is no token response.
    let mut p = answered_200(
        with_body(
            "application/x-www-form-urlencoded",
            "/oauth/token",
            form.as_bytes(),
            b"",
        ),
        &[],
        &token_response,
    );
    p.exchange.response.headers = hdrs(&[("content-type", b"text/html")]);
    one_mine(&p);
}

/// RFC 7592: a client read (GET) or update (PUT) with the registration
/// access token as a Bearer token is answered with it (and an update with
/// the client secret it sent) in the client information response.
#[test]
fn client_configuration_response_hands_back_its_tokens() {
    let info = format!(
        "{{\"client_id\":\"s6BhdRkqt3\",\"client_secret\":\"{CLIENT_SECRET}\",\
         \"registration_access_token\":\"{REGISTRATION_TOKEN}\",\
         \"registration_client_uri\":\"https://server.example.com/register/s6BhdRkqt3\",\
         \"client_name\":\"My Example\"}}"
    );
    let auth = bearer(REGISTRATION_TOKEN);
    let request = |method: &str, body: &str| {
        let mut p = with_body(
            "application/json",
            "/register/s6BhdRkqt3",
            body.as_bytes(),
            b"",
        );
        p.exchange.request.method = method.into();
        p.exchange.request.headers = hdrs(&[
            ("authorization", &auth),
            ("content-type", b"application/json"),
        ]);
        if body.is_empty() {
            p.exchange.request.body = Body::default();
        }
        p
    };
    none_mine(&answered_200(request("GET", ""), &[], &info));
    let update = format!("{{\"client_id\":\"s6BhdRkqt3\",\"client_secret\":\"{CLIENT_SECRET}\",\"client_name\":\"My Example\"}}");
    none_mine(&answered_200(request("PUT", &update), &[], &info));
    // Another method, a response without `registration_client_uri`, the
    // value in another member: leaks.
    let f = one_mine(&answered_200(request("POST", ""), &[], &info));
    assert_eq!(f.credential.name, "bearer");
    let no_uri = info.replace("registration_client_uri", "client_uri");
    one_mine(&answered_200(request("GET", ""), &[], &no_uri));
    let elsewhere = info.replace("My Example", REGISTRATION_TOKEN);
    one_mine(&answered_200(request("GET", ""), &[], &elsewhere));
    let insp = inspect_mine(&answered_200(request("POST", &update), &[], &info));
    assert_eq!(insp.findings.len(), 2, "{:#?}", insp.findings);
}

// ---------- matrix (path) parameters ----------

const JSESSIONID: &str = "9A3F1C0E2B7D4A6C8E1F3A5B7C9D0E2F";

/// Servlet URL rewriting puts the session id in the path
/// (`/shop;jsessionid=…`) and into every link and redirect of the page.
/// Matrix parameters named as a session cookie or a credential are taken;
/// the finding's path does not hold the value.
#[test]
fn session_and_credential_matrix_parameters_in_the_path() {
    let cases = [
        (
            format!("/shop;jsessionid={JSESSIONID}"),
            "jsessionid",
            CredentialType::SessionCookie,
        ),
        (
            format!("/shop;JSESSIONID={JSESSIONID}?x=1"),
            "JSESSIONID",
            CredentialType::SessionCookie,
        ),
        (
            format!("/a;v=2/b;api_key={API_KEY};lang=en"),
            "api_key",
            CredentialType::ApiKey,
        ),
        (
            format!("/a;access%5Ftoken={TOKEN}/b"),
            "access_token",
            CredentialType::AccessToken,
        ),
    ];
    for (target, name, kind) in &cases {
        let value = if target.contains(JSESSIONID) {
            JSESSIONID
        } else if target.contains(API_KEY) {
            API_KEY
        } else {
            TOKEN
        };
        let html = format!("<a href=\"/cart;jsessionid={value}\">Cart</a>");
        let p = pair(&[], target, &[], html.as_bytes());
        assert!(
            detector().wants_response_body(&p.exchange.request),
            "{target}"
        );
        let f = inspect_checked(&p, &[JSESSIONID, API_KEY, TOKEN])
            .findings
            .remove(0);
        assert_eq!(
            (
                f.credential.source,
                f.credential.name.as_str(),
                f.credential.kind
            ),
            (CredentialSource::Query, *name, *kind),
            "{target}"
        );
        assert!(!f.request.path.contains(value), "{}", f.request.path);
        // The redirect that rewrites it into a Location.
        let location = format!("https://shop.example/login;jsessionid={value}");
        let f = one_checked(
            &pair(&[], target, &[("location", location.as_bytes())], b""),
            &[JSESSIONID, API_KEY, TOKEN],
        );
        assert_eq!(
            (f.sink.location, f.sink.name.as_deref()),
            (SinkLocation::Header, Some("location"))
        );
    }
    // Not credential names, a `;` in a query value, no value: nothing.
    for target in [
        format!("/a;v={JSESSIONID}"),
        format!("/a;lang=en?q=x;jsessionid={JSESSIONID}"),
        "/a;jsessionid".to_string(),
        format!("/a;jsessionid=;x={JSESSIONID}"),
    ] {
        let p = pair(&[], &target, &[], JSESSIONID.as_bytes());
        none_checked(&p, &[JSESSIONID]);
    }
}

#[test]
fn matrix_parameter_values_are_redacted_in_paths() {
    assert_eq!(
        super::redact_target(&format!("/shop;jsessionid={JSESSIONID}/x;a=1;b?k={TOKEN}")),
        "/shop;jsessionid=<redacted>/x;a=<redacted>;b?k=<redacted>"
    );
    assert_eq!(super::redact_target("/a;b/c"), "/a;b/c");
}

// ---------- JSON objects in query and form parameters ----------

/// GraphQL over GET sends its variables as a JSON object in the query
/// (`?variables={"auth":{"token":…}}`, percent-encoded); forms may hold a
/// JSON document in a field.  Read like a JSON body's nested members.
#[test]
fn json_object_in_a_query_or_form_parameter() {
    let vars = format!("{{\"auth\":{{\"token\":\"{TOKEN}\",\"scope\":\"all\"}}}}");
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let echo = format!("{{\"errors\":[{{\"message\":\"Variable '$auth' got invalid value {{'token': '{TOKEN}'}}\"}}]}}");
    for target in [
        format!("/graphql?query=query%20Me%7Bme%7D&variables={}", enc(&vars)),
        format!("/graphql?variables={vars}"),
        format!("/graphql?variables=+%20{}", enc(&vars)),
    ] {
        let p = pair(&[], &target, &[], echo.as_bytes());
        assert!(
            detector().wants_response_body(&p.exchange.request),
            "{target}"
        );
        let f = one_mine(&p);
        assert_eq!(
            (
                f.credential.source,
                f.credential.name.as_str(),
                f.credential.kind
            ),
            (
                CredentialSource::Query,
                "token",
                CredentialType::AccessToken
            ),
            "{target}"
        );
    }
    let form = format!("operationName=Me&variables={}", enc(&vars));
    let f = one_mine(&with_body(
        "application/x-www-form-urlencoded",
        "/graphql",
        form.as_bytes(),
        echo.as_bytes(),
    ));
    assert_eq!(
        (f.credential.source, f.credential.name.as_str()),
        (CredentialSource::Form, "token")
    );
    // Not credential names, a generic name nested (`code`), not JSON:
    // nothing.
    for q in [
        format!("{{\"filter\":\"{TOKEN}\"}}"),
        format!("{{\"code\":\"{AUTH_CODE}\"}}"),
        format!("{{token:{TOKEN}"),
    ] {
        let p = pair(
            &[],
            &format!("/s?variables={}", enc(&q)),
            &[],
            format!("{TOKEN} {AUTH_CODE}").as_bytes(),
        );
        none_mine(&p);
    }
}

// ---------- compressed request bodies ----------

const GZ_PASSWORD: &str = "CurlD_Pw_5Mx9Wq2Zk";

fn compressed(coding: &str, b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    match coding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(b).unwrap();
            e.finish().unwrap()
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(b).unwrap();
            e.finish().unwrap()
        }
        "br" => {
            let mut out = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                w.write_all(b).unwrap();
            }
            out
        }
        "zstd" => zstd::encode_all(b, 3).unwrap(),
        _ => unreachable!(),
    }
}

/// A request body sent with `Content-Encoding` (body-parser, Rails and
/// others inflate it) is decoded before extraction, bounded.
#[test]
fn compressed_request_bodies_are_decoded() {
    let json = format!("{{\"username\":\"alice\",\"password\":\"{GZ_PASSWORD}\"}}");
    let form = format!("username=alice&password={GZ_PASSWORD}");
    let echo = format!("{{\"error\":\"invalid password {GZ_PASSWORD}\"}}");
    for coding in ["gzip", "deflate", "br", "zstd"] {
        for (ct, body, source) in [
            ("application/json", &json, CredentialSource::Json),
            (
                "application/x-www-form-urlencoded",
                &form,
                CredentialSource::Form,
            ),
            ("text/plain", &json, CredentialSource::Json),
        ] {
            let p = with_headers_body(
                &[
                    ("content-type", ct.as_bytes()),
                    ("content-encoding", coding.as_bytes()),
                ],
                &compressed(coding, body.as_bytes()),
                echo.as_bytes(),
            );
            let insp = inspect_checked(&p, &[GZ_PASSWORD]);
            assert!(insp.decode_errors.is_empty(), "{:?}", insp.decode_errors);
            assert_eq!(insp.findings.len(), 1, "{coding} {ct}");
            assert_eq!(
                (
                    insp.findings[0].credential.source,
                    insp.findings[0].credential.name.as_str()
                ),
                (source, "password"),
                "{coding} {ct}"
            );
        }
    }
    // Kept cut short (the request was larger than what is kept): what
    // decoded is read, and no error counted.
    let big = format!(
        "{{\"password\":\"{GZ_PASSWORD}\",\"pad\":\"{}\"}}",
        "xq7".repeat(200_000)
    );
    let gz = compressed("gzip", big.as_bytes());
    let kept = &gz[..gz.len() / 2];
    let mut p = with_headers_body(
        &[
            ("content-type", b"application/json"),
            ("content-encoding", b"gzip"),
        ],
        kept,
        echo.as_bytes(),
    );
    p.exchange.request.body.len = gz.len() as u64;
    let insp = inspect_checked(&p, &[GZ_PASSWORD]);
    assert_eq!((insp.findings.len(), insp.decode_errors.len()), (1, 0));
    // An unknown or stacked coding, or data that is not what it says:
    // counted, nothing taken but what decoded.
    for (coding, data) in [
        ("compress", json.as_bytes().to_vec()),
        ("gzip, br", json.as_bytes().to_vec()),
        ("gzip", json.as_bytes().to_vec()),
    ] {
        let p = with_headers_body(
            &[
                ("content-type", b"application/json"),
                ("content-encoding", coding.as_bytes()),
            ],
            &data,
            echo.as_bytes(),
        );
        let insp = inspect_checked(&p, &[GZ_PASSWORD]);
        assert_eq!(
            insp.decode_errors,
            vec![extract::BAD_REQUEST_ENCODING],
            "{coding}"
        );
        assert!(insp.findings.is_empty(), "{coding}");
    }
}

/// A zip bomb in a request body: decoding stops at
/// `extract::MAX_DECODED_REQUEST_BODY`, counted; the credential before the
/// cap is still taken.
#[test]
fn request_body_zip_bomb_stops_at_the_cap() {
    let mut doc = format!("{{\"password\":\"{GZ_PASSWORD}\",\"pad\":\"").into_bytes();
    doc.resize(64 << 20, b'0');
    let gz = compressed("gzip", &doc);
    assert!(gz.len() < 128 * 1024, "{}", gz.len());
    let p = with_headers_body(
        &[
            ("content-type", b"application/json"),
            ("content-encoding", b"gzip"),
        ],
        &gz,
        format!("bad {GZ_PASSWORD}").as_bytes(),
    );
    let t = std::time::Instant::now();
    let insp = inspect_checked(&p, &[GZ_PASSWORD]);
    assert_eq!(insp.decode_errors, vec![extract::REQUEST_DECOMPRESS_CAP]);
    assert_eq!(insp.findings.len(), 1);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        t.elapsed()
    );
}

// ---------- analytics write keys ----------

const WRITE_KEY: &str = "bcn_Hx4Qz8Lw2Vm7Kp3Nj";

/// Segment's analytics.js `sendBeacon`s `{"writeKey":…}` as text/plain;
/// RudderStack and Jitsu send `writeKey`/`write_key` too.  `writeKeyId`
/// names the key, it is not one.
#[test]
fn analytics_write_keys_are_credentials() {
    let echo = format!("{{\"error\":\"unknown write key {WRITE_KEY}\"}}");
    for (ct, body, name) in [
        (
            "text/plain;charset=UTF-8",
            format!("{{\"writeKey\":\"{WRITE_KEY}\",\"type\":\"track\"}}"),
            "writeKey",
        ),
        (
            "application/json",
            format!("{{\"batch\":[],\"write_key\":\"{WRITE_KEY}\"}}"),
            "write_key",
        ),
        (
            "application/x-www-form-urlencoded",
            format!("segmentWriteKey={WRITE_KEY}"),
            "segmentWriteKey",
        ),
    ] {
        let f = one_checked(
            &with_body(ct, "/v1/t", body.as_bytes(), echo.as_bytes()),
            &[WRITE_KEY],
        );
        assert_eq!(
            (f.credential.name.as_str(), f.credential.kind),
            (name, CredentialType::ApiKey),
            "{ct}"
        );
    }
    let f = one_checked(
        &pair(
            &[],
            &format!("/v1/p?writeKey={WRITE_KEY}"),
            &[],
            echo.as_bytes(),
        ),
        &[WRITE_KEY],
    );
    assert_eq!(f.credential.source, CredentialSource::Query);
    for body in [
        format!("{{\"writeKeyId\":\"{WRITE_KEY}\"}}"),
        format!("{{\"write_key_id\":\"{WRITE_KEY}\"}}"),
        format!("{{\"writer\":\"{WRITE_KEY}\"}}"),
    ] {
        none_checked(
            &with_body(
                "application/json",
                "/v1/t",
                body.as_bytes(),
                echo.as_bytes(),
            ),
            &[WRITE_KEY],
        );
    }
}
