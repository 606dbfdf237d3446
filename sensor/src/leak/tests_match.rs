//! Detector tests, how responses give credentials back: escapers, encodings and look-alikes of real frameworks.
//! Helpers (`pair`, `inspect`, `one`, `none`, …) are the table tests' own.

#[allow(unused_imports)]
use super::tests::*;

use std::io::Write;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;

use crate::finding::*;
use crate::http::types::Body;

/// A password with the bytes HTML-safe JSON encoders escape (`&<>`).
const PW_HTML_SAFE: &str = "Gl4ss&Str0ng<Pa55>w0rd";
/// A base64 token (`+`, `/`, `=`): .NET escapes `+` only, `quote()` leaves `/` raw.
const TOKEN_B64: &str = "Qm9+Ye7/Hk3+Wp5/Ls1+Dn8=";
/// Non-ASCII, one character outside the BMP (a surrogate pair in `\u` escapes).
const PW_UNICODE: &str = "Grüße-Maßstab-2025-\u{1F511}!";
/// Quotes and ampersands, as HTML escapers treat them differently.
const PW_QUOTES: &str = "O'Br1en\"Qu0te&Amp<Lt>9x";
/// What `encodeURIComponent` leaves raw and `quote()` encodes, and the reverse.
const TOKEN_URL: &str = "aB3/cD4+eF5=gH6!i*J(k)L'm~N";
const JWT_OLD: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImlzcyI6Imh0dHBzOi8vaWQuZXhhbXBsZSIsImV4cCI6MTc5NTAwMDAwMH0.q3Xv8Rk2LmN9pT4wZ7yB1cD5eF6gH0jK2lM3nO4pQ5s";
const JWT_NEW: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImlzcyI6Imh0dHBzOi8vaWQuZXhhbXBsZSIsImV4cCI6MTc5NTAwMzYwMH0.Zt7Yq1Wn4Ek8Ra2Uo6Ip3As9Df5Gh1Jk7Lz0Xc4Vb2";
const PAT: &str = "github_pat_11AbCdEfG0hIjKlMnOpQrS_tUvWxYz0123456789aBcDeFgHiJkLmNoPq";
const LABELLED: &str = "acme_live_key_7Hx2Qp9Lm4Rt8Wz1Kc6Vb3Nd";
/// Every raw secret of these tests: none may appear in any finding.
const MY_SECRETS: &[&str] = &[
    PW_HTML_SAFE,
    TOKEN_B64,
    PW_UNICODE,
    PW_QUOTES,
    TOKEN_URL,
    JWT_OLD,
    JWT_NEW,
    PAT,
    LABELLED,
    "q3Xv8Rk2LmN9pT4wZ7yB1cD5eF6gH0jK2lM3nO4pQ5s",
];

fn one_mine(p: &crate::http::types::HttpPair) -> Finding {
    one_checked(p, MY_SECRETS)
}

fn none_mine(p: &crate::http::types::HttpPair) {
    none_checked(p, MY_SECRETS)
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

// ---------- escapers, written the way each framework escapes ----------

fn push_u(out: &mut String, unit: u32, upper: bool) {
    if upper {
        out.push_str(&format!("\\u{unit:04X}"));
    } else {
        out.push_str(&format!("\\u{unit:04x}"));
    }
}

/// JSON string escaping: `\"`, `\\`, short control escapes, then `esc(c)`
/// decides which other characters become `\uXXXX` (UTF-16, surrogate pairs).
fn json_with(s: &str, upper: bool, esc: impl Fn(char) -> bool) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '"' if !esc(c) => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || esc(c) => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    push_u(&mut out, u32::from(*u), upper);
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Go `encoding/json` (and Rails' `to_json`): `<`, `>`, `&`, U+2028/9 as `\u00xx`.
pub(super) fn go_json(s: &str) -> String {
    json_with(s, false, |c| {
        matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}')
    })
}

/// .NET `System.Text.Json` default encoder: `"&'+<>` and backtick and every
/// non-ASCII character as upper-case `\u00XX`; `/` and `=` raw.
pub(super) fn dotnet_json(s: &str) -> String {
    json_with(s, true, |c| {
        matches!(c, '"' | '&' | '\'' | '+' | '<' | '>' | '`') || !c.is_ascii()
    })
}

/// Python `json.dumps` (`ensure_ascii=True`): non-ASCII as lower-case
/// `\u00fc`, astral characters as surrogate pairs.
pub(super) fn ensure_ascii(s: &str) -> String {
    json_with(s, false, |c| !c.is_ascii())
}

/// Jinja2 / MarkupSafe `escape`: `&#34;` and `&#39;` for the quotes.
pub(super) fn markupsafe(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// PHP `htmlspecialchars($s, ENT_QUOTES)` / Blade `{{ }}`: `&#039;`.
pub(super) fn htmlspecialchars(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#039;"),
            c => out.push(c),
        }
    }
    out
}

/// A hand-rolled template mixing named, decimal and hex references (and
/// `htmlentities()`' Latin-1 names).
pub(super) fn html_mixed(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        match (c, i % 3) {
            ('ü', _) => out.push_str("&uuml;"),
            ('ß', _) => out.push_str("&szlig;"),
            ('&' | '<' | '>' | '"' | '\'' | '/' | '=' | '+', 0) => {
                out.push_str(&format!("&#{};", c as u32))
            }
            ('&' | '<' | '>' | '"' | '\'' | '/' | '=' | '+', 1) => {
                out.push_str(&format!("&#x{:X};", c as u32))
            }
            ('&', _) => out.push_str("&amp;"),
            ('<', _) => out.push_str("&lt;"),
            ('"', _) => out.push_str("&quot;"),
            ('\'', _) => out.push_str("&apos;"),
            (c, _) if !c.is_ascii() => out.push_str(&format!("&#x{:x};", c as u32)),
            (c, _) => out.push(c),
        }
    }
    out
}

/// Percent-encoding of every UTF-8 byte outside `A-Za-z0-9` and `raw`.
fn percent_with(s: &str, raw: &str, upper: bool) -> String {
    let mut out = String::new();
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || raw.as_bytes().contains(&b) {
            out.push(b as char);
        } else if upper {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// Python `urllib.parse.quote(s)`: `/` left raw (`safe='/'`), `~` too.
pub(super) fn py_quote(s: &str) -> String {
    percent_with(s, "-._~/", true)
}

/// JavaScript `encodeURIComponent`: `!*()'~` left raw.
pub(super) fn encode_uri_component(s: &str) -> String {
    percent_with(s, "-._~!*()'", true)
}

/// An encoder writing lower-case hex (`%2b`) and leaving `/` raw.
pub(super) fn percent_lower(s: &str) -> String {
    percent_with(s, "-._~/", false)
}

// ---------- helpers ----------

fn json_request(field: &str, secret: &str) -> (Vec<(&'static str, &'static [u8])>, Body) {
    let body = serde_json::json!({ "username": "alice", field: secret }).to_string();
    (
        vec![("content-type", b"application/json")],
        Body {
            len: body.len() as u64,
            chunks: vec![Bytes::from(body.into_bytes())],
            truncated: false,
            discarded: false,
        },
    )
}

/// A response body with `text` at several places, each with the body and
/// the offset `text` starts at.
fn placements(text: &str) -> Vec<(Vec<u8>, u64)> {
    let lead = "{\"error\":\"invalid credentials\",\"detail\":\"the value ";
    vec![
        (text.as_bytes().to_vec(), 0),
        (
            format!("{lead}{text} was rejected\"}}").into_bytes(),
            lead.len() as u64,
        ),
        (format!("{}{text}", "x".repeat(3000)).into_bytes(), 3000),
    ]
}

/// The pair of a JSON request carrying `secret` in `password` and a
/// response whose body is `chunks`.
fn echo_pair(
    secret: &str,
    resp_headers: &[(&str, &[u8])],
    chunks: Vec<Bytes>,
) -> crate::http::types::HttpPair {
    let (req_headers, req_body) = json_request("password", secret);
    pair_full(&req_headers, "/login", req_body, resp_headers, chunks)
}

/// `secret` escaped by `escaper` is found, full, with `encoding`, at every
/// placement, in one chunk and split in chunks at every few bytes, and
/// gzip-compressed once.
fn found_as(secret: &str, escaper: fn(&str) -> String, encoding: Encoding) {
    let text = escaper(secret);
    assert_ne!(text, secret, "the escaper changes the value");
    for (body, at) in placements(&text) {
        let whole = vec![Bytes::from(body.clone())];
        let split: Vec<Bytes> = body.chunks(7).map(Bytes::copy_from_slice).collect();
        for chunks in [whole, split] {
            let f = one_mine(&echo_pair(secret, &[], chunks));
            assert_eq!(f.sink.encoding, encoding, "{text}");
            assert_eq!(f.exposure, Exposure::Full, "{text}");
            assert_eq!(f.sink.offset, at, "{text}");
            assert_eq!(f.sink.location, SinkLocation::Body);
        }
    }
    let (body, at) = placements(&text).remove(1);
    let f = one_mine(&echo_pair(
        secret,
        &[("content-encoding", b"gzip")],
        vec![Bytes::from(gzip(&body))],
    ));
    assert_eq!(
        (f.sink.encoding, f.sink.content_encoding, f.sink.offset),
        (encoding, ContentEncoding::Gzip, at),
        "{text}"
    );
}

/// A value that differs from `secret` in its first and last character
/// (so no partial run of it either), escaped by `escaper`, and a masked
/// echo of it: nothing.
fn look_alikes_silent(secret: &str, escaper: fn(&str) -> String) {
    let mut other: Vec<char> = secret.chars().collect();
    let flip = |c: char| if c == 'Q' { 'R' } else { 'Q' };
    let last = other.len() - 1;
    other[0] = flip(other[0]);
    other[last] = flip(other[last]);
    let last4: String = secret.chars().skip(secret.chars().count() - 4).collect();
    let other: String = other.into_iter().collect();
    let masked = format!("****{last4}");
    for text in [escaper(&other), escaper(&masked)] {
        none_mine(&echo_pair(
            secret,
            &[],
            vec![Bytes::from(text.into_bytes())],
        ));
    }
}

// ---------- 1: JSON escapers that escape only some characters ----------

#[test]
fn json_partial_escapers_are_found() {
    let escapers: [fn(&str) -> String; 3] = [go_json, dotnet_json, ensure_ascii];
    for secret in [PW_HTML_SAFE, TOKEN_B64, PW_UNICODE, PW_QUOTES] {
        for esc in escapers {
            if esc(secret) == secret {
                continue;
            }
            found_as(secret, esc, Encoding::JsonEscaped);
            look_alikes_silent(secret, esc);
        }
    }
}

// ---------- 2: HTML escapers ----------

#[test]
fn html_escapers_are_found() {
    let escapers: [fn(&str) -> String; 3] = [markupsafe, htmlspecialchars, html_mixed];
    for secret in [PW_QUOTES, PW_HTML_SAFE, PW_UNICODE, TOKEN_B64] {
        for esc in escapers {
            if esc(secret) == secret {
                continue;
            }
            found_as(secret, esc, Encoding::HtmlEntity);
            look_alikes_silent(secret, esc);
        }
    }
}

// ---------- 3: percent-encoders with other reserved sets ----------

#[test]
fn percent_encoders_with_other_reserved_sets_are_found() {
    let escapers: [fn(&str) -> String; 3] = [py_quote, encode_uri_component, percent_lower];
    for secret in [TOKEN_URL, TOKEN_B64, PW_UNICODE, PW_QUOTES] {
        for esc in escapers {
            found_as(secret, esc, Encoding::Percent);
            look_alikes_silent(secret, esc);
        }
    }
}

/// A body with the escape characters but the value raw stays `plain`; an
/// escaped look-alike of an unescapable key costs no finding.
#[test]
fn escape_characters_elsewhere_keep_plain() {
    let body = format!("{{\"a\":\"x\\u0026y %2F &amp;\",\"k\":\"{TOKEN_B64}\"}}");
    let f = one_mine(&echo_pair(TOKEN_B64, &[], vec![Bytes::from(body.clone())]));
    assert_eq!(f.sink.encoding, Encoding::Plain);
    assert_eq!(f.sink.offset, body.find(TOKEN_B64).unwrap() as u64);
}

// ---------- 4: base64 label from the surrounding run ----------

/// A value whose base64 inner forms at all three alignments have none of
/// `+/-_` (both alphabets give the same needles).
fn alphabet_neutral_value() -> String {
    let mut rng = crate::test_rng::XorShift::new(0x05ee_db64);
    let alnum = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    loop {
        let v: String = (0..24)
            .map(|_| alnum[rng.below(alnum.len())] as char)
            .collect();
        let neutral = super::forms::base64_inner(v.as_bytes(), false)
            .iter()
            .all(|n| !n.iter().any(|b| matches!(b, b'+' | b'/')));
        if neutral {
            return v;
        }
    }
}

#[test]
fn base64_label_follows_the_surrounding_run() {
    let key = alphabet_neutral_value();
    let req: &[(&str, &[u8])] = &[("x-api-key", key.as_bytes())];
    for pre in 0..3 {
        // Bytes 0xfb/0xff far from the key give `-`/`_` (or `+`/`/`).
        let mut blob = vec![0xfbu8, 0xff, 0xfe, 0xfb, 0xef, 0xbe];
        blob.extend_from_slice(&b"{\"user\":\"alice\",\"tok\":\""[pre..]);
        blob.extend_from_slice(key.as_bytes());
        blob.extend_from_slice(b"\",\"n\":1}");
        blob.extend_from_slice(&[0xff, 0xfb, 0xef]);
        let url = URL_SAFE_NO_PAD.encode(&blob);
        let std = STANDARD.encode(&blob);
        assert!(url.contains(['-', '_']) && std.contains(['+', '/']));
        for (text, want) in [(&url, Encoding::Base64url), (&std, Encoding::Base64)] {
            let body = format!("{{\"state\":\"{text}\"}}");
            let f = one_mine(&pair(req, "/", &[], body.as_bytes()));
            assert_eq!(f.sink.encoding, want, "pre {pre}: {text}");
            // Split so the run's telling bytes are in other blocks.
            let chunks: Vec<Bytes> = body
                .as_bytes()
                .chunks(5)
                .map(Bytes::copy_from_slice)
                .collect();
            let p = pair_full(req, "/", Body::default(), &[], chunks);
            assert_eq!(one_mine(&p).sink.encoding, want, "pre {pre}, split");
        }
        // A Flask-style session cookie (base64url) set in a header.
        let cookie = format!("session={url}.Zk1x; HttpOnly");
        let f = one_mine(&pair(req, "/", &[("set-cookie", cookie.as_bytes())], b""));
        assert_eq!(
            (f.sink.location, f.sink.encoding),
            (SinkLocation::Header, Encoding::Base64url)
        );
    }
    // Neither alphabet's own bytes in the run: the default, `base64`...
    let mut plain_blob = format!("{{\"tok\":\"{key}\"}}");
    while plain_blob.len() % 3 != 0 {
        plain_blob.push(' ');
    }
    let text = URL_SAFE_NO_PAD.encode(plain_blob.as_bytes());
    if !text.contains(['-', '_']) {
        let f = one_mine(&pair(req, "/", &[], text.as_bytes()));
        assert_eq!(f.sink.encoding, Encoding::Base64);
        // ...unless its length shows the padding was left out.
        let short = URL_SAFE_NO_PAD.encode(&plain_blob.as_bytes()[..plain_blob.len() - 1]);
        let f = one_mine(&pair(req, "/", &[], format!("[{short}]").as_bytes()));
        assert_eq!(f.sink.encoding, Encoding::Base64url, "{short}");
        let padded = STANDARD.encode(&plain_blob.as_bytes()[..plain_blob.len() - 1]);
        let f = one_mine(&pair(req, "/", &[], format!("[{padded}]").as_bytes()));
        assert_eq!(f.sink.encoding, Encoding::Base64, "{padded}");
        // ...but an unpadded segment between dots (a JWT's payload, a
        // signed cookie's) is base64url by its specification; padded, not.
        for (around, want) in [
            (
                format!("eyJhbGciOiJIUzI1NiJ9.{text}.c2ln"),
                Encoding::Base64url,
            ),
            (
                format!("session={text}.Zk1x.c2ln; Path=/"),
                Encoding::Base64url,
            ),
            (format!("x {text}== y"), Encoding::Base64),
            (format!("a.{text}=="), Encoding::Base64),
        ] {
            let f = one_mine(&pair(req, "/", &[], around.as_bytes()));
            assert_eq!(f.sink.encoding, want, "{around}");
        }
    }
}

// ---------- 5: partial exposure of JWTs and prefixed keys ----------

#[test]
fn a_new_jwt_of_the_same_issuer_is_not_a_partial_leak() {
    let req: &[(&str, &[u8])] = &[("authorization", &bearer(JWT_OLD))];
    let refresh =
        format!("{{\"access_token\":\"{JWT_NEW}\",\"token_type\":\"Bearer\",\"expires_in\":3600}}");
    none_mine(&pair(req, "/oauth/token", &[], refresh.as_bytes()));
    let userinfo = format!("{{\"sub\":\"alice\",\"id_token\":\"{JWT_NEW}\"}}");
    none_mine(&pair(req, "/userinfo", &[], userinfo.as_bytes()));
    // The old token's header and payload without its signature: nothing either.
    let unsigned = &JWT_OLD[..JWT_OLD.rfind('.').unwrap()];
    none_mine(&pair(
        req,
        "/",
        &[],
        format!("{{\"t\":\"{unsigned}.\"}}").as_bytes(),
    ));
    // Its signature, alone or cut, is a partial leak; the whole token a full one.
    let sig = &JWT_OLD[JWT_OLD.rfind('.').unwrap() + 1..];
    let f = one_mine(&pair(req, "/", &[], format!("sig={sig}").as_bytes()));
    assert_eq!(f.exposure, Exposure::Partial);
    // Cut short, but with some of the signature: partial.
    let cut = &JWT_OLD[..JWT_OLD.len() - 2];
    let f = one_mine(&pair(req, "/", &[], format!("{cut}…").as_bytes()));
    assert_eq!(f.exposure, Exposure::Partial);
    let tail = &JWT_OLD[JWT_OLD.len() - 20..];
    let f = one_mine(&pair(req, "/", &[], format!("..{tail}").as_bytes()));
    assert_eq!(f.exposure, Exposure::Partial);
    let f = one_mine(&pair(req, "/", &[], JWT_OLD.as_bytes()));
    assert_eq!(f.exposure, Exposure::Full);
}

#[test]
fn a_partial_run_is_not_mostly_a_shared_prefix() {
    for key in [PAT, LABELLED] {
        let req: &[(&str, &[u8])] = &[("x-api-key", key.as_bytes())];
        let prefix = if key == PAT { 11 } else { 14 };
        // Another key of the issuer sharing the prefix and the next 8 chars.
        let other = format!("{}{}", &key[..prefix + 8], "Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2");
        none_mine(&pair(req, "/", &[], format!("key={other}").as_bytes()));
        // As many secret characters as prefix ones: a partial leak.
        let run = &key[..2 * prefix];
        let f = one_mine(&pair(req, "/", &[], format!("key={run}#").as_bytes()));
        assert_eq!(f.exposure, Exposure::Partial, "{prefix}");
    }
}

/// A base64url token of `len` characters (random-looking, deterministic).
fn long_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % 64) as usize] as char
        })
        .collect()
}

/// Tokens past 4 KiB (JWTs with many roles or groups) are credentials up to
/// `MAX_CREDENTIAL_LEN`, at the limit and not one byte past it; sets that
/// large are matched but never cached.
#[test]
fn long_tokens_up_to_the_limit_are_credentials_and_never_cached() {
    use crate::leak::extract::MAX_CREDENTIAL_LEN;
    let det = detector();
    for len in [4097, 6000, MAX_CREDENTIAL_LEN] {
        let t = long_token(len);
        let p = pair(
            &[("authorization", &bearer(&t))],
            "/",
            &[],
            format!("{{\"auth\":\"Bearer {t}\"}}").as_bytes(),
        );
        for _ in 0..3 {
            let insp = det.inspect(&p);
            assert_eq!(insp.findings.len(), 1, "len {len}");
            assert_eq!(insp.findings[0].exposure, Exposure::Full);
            assert_eq!(insp.findings[0].credential.length, len);
            assert!(!format!("{insp:?}").contains(&t));
        }
    }
    // Seen, kept, then hit: the two under MAX_CACHED_SET_BYTES once each;
    // the one over it is built for every use.
    const _: () = assert!(6000 < crate::leak::cache::MAX_CACHED_SET_BYTES);
    const _: () = assert!(MAX_CREDENTIAL_LEN > crate::leak::cache::MAX_CACHED_SET_BYTES);
    assert_eq!(det.matcher_cache_stats().hits, 2);
    let t = long_token(MAX_CREDENTIAL_LEN + 1);
    let p = pair(&[("authorization", &bearer(&t))], "/", &[], t.as_bytes());
    assert!(
        det.inspect(&p).findings.is_empty(),
        "one byte past the limit"
    );
}

/// A new token of the same issuer shares the old one's first characters
/// (an STS session token's `IQoJb3JpZ2luX2Vj…`, a Discord bot's id, a
/// session cookie's base64 JSON re-issued with new contents, a presigned
/// URL's `Credential=ASIA…`): past the shared run the bytes go on as a
/// token, so it is another value, not a partial leak.  An echo cut short
/// (at a quote, a space, a mask, the end) is one, however far it matched.
#[test]
fn a_run_that_goes_on_as_another_token_is_not_a_partial_leak() {
    const STS_OLD: &str = "IQoJb3JpZ2luX2VjEKr8Zq2Lw9Xm4Tn7Bv1Hc5Jd3Fg6Ks8Pa0Rt2Yu4Wi";
    const STS_NEW: &str = "IQoJb3JpZ2luX2VjEMt1Nw6Qe3Ry8Ui5Op2As7Df4Gh9Jk0Lz3Xc6Vb1Nm";
    const BOT_OLD: &str = "MTk4NjIyNDgzNDcxOTI1MjQ4.GxY7qL.Zq2Lw9Xm4Tn7Bv1Hc5Jd3Fg6Ks8Pa0Rt2";
    const BOT_NEW: &str = "MTk4NjIyNDgzNDcxOTI1MjQ4.Gh2kPw.Nw6Qe3Ry8Ui5Op2As7Df4Gh9Jk0Lz3Xc";
    const SESS_OLD: &str = "eyJ1c2VyIjoiYWxpY2UiLCJ0aGVtZSI6ImRhcmsiLCJsYW5nIjoiZW4ifQ==";
    const SESS_NEW: &str =
        "eyJ1c2VyIjoiYWxpY2UiLCJ0aGVtZSI6ImRhcmsiLCJsYW5nIjoiZW4iLCJ2aWV3cyI6MX0=";
    let secrets = [STS_OLD, STS_NEW, BOT_OLD, BOT_NEW, SESS_OLD, SESS_NEW];
    let sts: &[(&str, &[u8])] = &[("x-amz-security-token", STS_OLD.as_bytes())];
    none_checked(
        &pair(
            sts,
            "/",
            &[],
            format!("<SessionToken>{STS_NEW}</SessionToken>").as_bytes(),
        ),
        &secrets,
    );
    let bot = format!("Bot {BOT_OLD}");
    let bot: &[(&str, &[u8])] = &[("authorization", bot.as_bytes())];
    none_checked(
        &pair(
            bot,
            "/",
            &[],
            format!("{{\"token\":\"{BOT_NEW}\"}}").as_bytes(),
        ),
        &secrets,
    );
    let cookie = format!("session={SESS_OLD}");
    let set = format!("session={SESS_NEW}; path=/; httponly");
    none_checked(
        &pair(
            &[("cookie", cookie.as_bytes())],
            "/",
            &[("set-cookie", set.as_bytes())],
            b"{}",
        ),
        &secrets,
    );
    // Cut short: a partial leak, wherever it stops matching.
    for body in [
        format!("{{\"token\":\"{}\"}}", &STS_OLD[..24]),
        format!("token {} expired", &STS_OLD[..40]),
        format!("token {}****", &STS_OLD[..20]),
        STS_OLD[..30].to_string(),
        format!("…{}\"", &STS_OLD[STS_OLD.len() - 20..]),
    ] {
        let f = one_checked(&pair(sts, "/", &[], body.as_bytes()), &secrets);
        assert_eq!(f.exposure, Exposure::Partial, "{}", body.len());
    }
    // The trailing run preceded by other token bytes: another value.
    let body = format!("Zz{}", &STS_OLD[STS_OLD.len() - 20..]);
    none_checked(&pair(sts, "/", &[], body.as_bytes()), &secrets);
}

// ---------- JSON escaped more than once ----------

/// `s` as the contents of a JSON string (serde_json: `\"`, `\\`, controls),
/// or with `/` written `\/` as well (PHP's json_encode).
fn json_layer(s: &str, slash: bool) -> String {
    let quoted = serde_json::to_string(s).unwrap();
    let inner = &quoted[1..quoted.len() - 1];
    if slash {
        inner.replace('/', "\\/")
    } else {
        inner.to_string()
    }
}

/// An error message quoting a serialized request (API Gateway's event
/// `body`, a log line in a JSON envelope): the credential's `"` `\` `/`
/// are escaped once per layer (`\\\"`, `\\\\`, `\\/`).  Found in full
/// (it was a partial leak: one layer was undone), at every block size,
/// through up to `views::MAX_JSON_LAYERS` (4) layers.
#[test]
fn json_escaped_twice_or_more_is_a_full_leak() {
    for pw in [PW_QUOTES, "Pa\"ss\\word9X_Kq2/Zr8"] {
        // (layers, `/` sent as `\/` by the client: PHP's json_encode)
        for (layers, slash) in [(2, false), (2, true), (3, false), (4, true)] {
            let request = format!(
                "{{\"username\":\"alice\",\"password\":\"{}\"}}",
                json_layer(pw, slash)
            );
            let mut s = request.clone();
            for _ in 2..layers {
                s = json_layer(&s, false);
            }
            let s = json_layer(&s, false);
            let body =
                format!("{{\"message\":\"Internal server error\",\"event\":{{\"body\":\"{s}\"}}}}");
            assert!(!body.contains(pw), "the case needs the escapes");
            for block in [1usize, 7, 64, body.len()] {
                let chunks: Vec<Bytes> = body
                    .as_bytes()
                    .chunks(block)
                    .map(Bytes::copy_from_slice)
                    .collect();
                let req_body = Body {
                    len: request.len() as u64,
                    chunks: vec![Bytes::from(request.clone())],
                    truncated: false,
                    discarded: false,
                };
                let p = pair_full(
                    &[("content-type", b"application/json")],
                    "/login",
                    req_body,
                    &[],
                    chunks,
                );
                let insp = inspect_checked(&p, &[pw]);
                assert_eq!(
                    insp.findings.len(),
                    1,
                    "{layers} {slash} {block}: {:#?}",
                    insp.findings
                );
                let f = &insp.findings[0];
                assert_eq!(
                    (f.credential.name.as_str(), f.exposure, f.sink.encoding),
                    ("password", Exposure::Full, Encoding::JsonEscaped),
                    "{layers} layers, slash {slash}, block {block}"
                );
                let at = body.find("Pa").or_else(|| body.find("O'")).unwrap() as u64;
                assert_eq!(f.sink.offset, at, "{layers} {slash} {block}");
            }
        }
    }
    // A gzipped body likewise.
    let pw = PW_QUOTES;
    let request = format!("{{\"password\":\"{}\"}}", json_layer(pw, false));
    let body = format!(
        "{{\"event\":{{\"body\":\"{}\"}}}}",
        json_layer(&request, false)
    );
    let p = pair_full(
        &[("content-type", b"application/json")],
        "/login",
        Body {
            len: request.len() as u64,
            chunks: vec![Bytes::from(request.clone())],
            truncated: false,
            discarded: false,
        },
        &[("content-encoding", b"gzip")],
        vec![Bytes::from(gzip(body.as_bytes()))],
    );
    let f = one_mine(&p);
    assert_eq!(
        (f.exposure, f.sink.encoding),
        (Exposure::Full, Encoding::JsonEscaped)
    );
}
