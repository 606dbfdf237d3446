//! Credentials a request carried (sources of contract.md), filtered to values
//! that can be secrets, typed, and deduplicated.

use std::borrow::Cow;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use zeroize::Zeroizing;

use super::config::LeakConfig;
use crate::finding::{CredentialSource, CredentialType};
use crate::http::types::{Body, Request};

/// Most JSON nesting walked for body fields (serde_json stops at 128 anyway).
pub const MAX_JSON_DEPTH: usize = 64;
/// Most credentials taken from one request (bounds matcher size).
pub const MAX_CREDENTIALS: usize = 64;
/// Longest value taken as a credential; longer ones are blobs, not keys.
pub const MAX_CREDENTIAL_LEN: usize = 4096;
/// A cookie not configured as a session cookie counts when at least this long…
pub const RANDOM_COOKIE_MIN_LEN: usize = 16;
/// …and at least this random (bits per byte).
pub const RANDOM_COOKIE_MIN_ENTROPY: f64 = 3.5;

/// One credential; the value is zeroized when dropped.
pub struct Credential {
    pub source: CredentialSource,
    pub name: String,
    pub kind: CredentialType,
    pub value: Zeroizing<Vec<u8>>,
    /// Length of a known vendor prefix (`sk_live_`) that is not secret.
    pub vendor_prefix_len: usize,
    /// A JWT's signature segment (matched alone as a partial exposure).
    pub jwt_signature: Option<(usize, usize)>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("source", &self.source)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("length", &self.value.len())
            .finish_non_exhaustive()
    }
}

/// Shannon entropy in bits per byte.
pub fn entropy(v: &[u8]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    // Counts of a short value fit a byte: a quarter of the table to clear,
    // and the byte values that occur are found eight at a time (a key has a
    // few dozen of the 256).  Keeping a bitmap of them while counting was a
    // read-modify-write per byte: 125 -> 80 ns for a 37-byte key.
    if v.len() < 256 {
        let mut counts = [0u8; 256];
        for &b in v {
            counts[b as usize] += 1;
        }
        entropy_sum(
            v.len(),
            counts.chunks_exact(8).map(|c| {
                let word = u64::from_le_bytes(c.try_into().expect("chunks of 8"));
                (word != 0, c.iter().map(|&n| u32::from(n)))
            }),
        )
    } else {
        let mut counts = [0u32; 256];
        for &b in v {
            counts[b as usize] += 1;
        }
        entropy_sum(
            v.len(),
            counts
                .chunks_exact(8)
                .map(|c| (c.iter().any(|&n| n != 0), c.iter().copied())),
        )
    }
}

/// Σ −p·log2 p over the byte values that occur (counts of `n`, given in
/// groups of eight with whether any of the group is non-zero), in ascending
/// byte order.
fn entropy_sum<G: Iterator<Item = u32>>(n: usize, groups: impl Iterator<Item = (bool, G)>) -> f64 {
    let n = n as f64;
    let term = |c: u32| {
        let p = c as f64 / n;
        -p * p.log2()
    };
    // Most bytes of a key occur once or twice: each small count's term is
    // computed once (the same arithmetic, so the same bits) instead of once
    // per byte value; the sum runs in the same order as ever (ascending
    // byte values), from the start `Sum` for f64 uses.
    let mut memo = [None; 8];
    let mut sum: f64 = std::iter::empty::<f64>().sum();
    for (any, counts) in groups {
        if !any {
            continue;
        }
        for c in counts.filter(|&c| c != 0) {
            sum += match memo.get_mut(c as usize) {
                Some(slot) => *slot.get_or_insert_with(|| term(c)),
                None => term(c),
            };
        }
    }
    sum
}

#[cfg(test)]
#[test]
fn entropy_is_the_plain_sum() {
    let plain = |v: &[u8]| -> f64 {
        let mut counts = [0u32; 256];
        for &b in v {
            counts[b as usize] += 1;
        }
        let n = v.len() as f64;
        counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / n;
                -p * p.log2()
            })
            .sum()
    };
    let mut rng = crate::test_rng::XorShift::new(0x9e37_79b9_7f4a_7c15);
    for len in 1..300usize {
        let v: Vec<u8> = (0..len)
            .map(|_| b"aabbcdef0123XYZ_-"[rng.below(17)])
            .collect();
        assert_eq!(entropy(&v).to_bits(), plain(&v).to_bits(), "len {len}");
    }
    // Every byte value, across both count widths (below and from 256 bytes).
    for len in (1..1200usize).step_by(7) {
        let v: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        assert_eq!(entropy(&v).to_bits(), plain(&v).to_bits(), "len {len}");
    }
    assert_eq!(entropy(&[0xff; 300]), 0.0);
    assert_eq!(entropy(b"aabbcdef"), 2.5);
}

/// Can this value be a secret?  Long enough, random enough, and not a plain
/// word or number: values made only of lower-case letters and separators
/// (`application/json`, `password`, `keep-alive`) shorter than 24 bytes, and
/// all-digit values shorter than 16, are ordinary request data.
pub fn is_candidate(v: &[u8], cfg: &LeakConfig) -> bool {
    if v.len() < cfg.min_length.max(1) || v.len() > MAX_CREDENTIAL_LEN {
        return false;
    }
    if entropy(v) < cfg.min_entropy_bits {
        return false;
    }
    let wordy = v
        .iter()
        .all(|b| b.is_ascii_lowercase() || matches!(b, b'-' | b'_' | b'/' | b'.' | b' ' | b'+'));
    if wordy && v.len() < 24 {
        return false;
    }
    if v.iter().all(|b| b.is_ascii_digit()) && v.len() < 16 {
        return false;
    }
    true
}

/// Known vendor prefixes: (prefix, type, looks live).  `ghp_`/`github_pat_`
/// are long-lived personal tokens used like API keys → `api_key`; `gho_` is an
/// OAuth access token → `access_token`.
pub const VENDOR_PREFIXES: &[(&str, CredentialType, bool)] = &[
    ("sk_live_", CredentialType::ApiKey, true),
    ("rk_live_", CredentialType::ApiKey, true),
    ("sk_test_", CredentialType::ApiKey, false),
    ("rk_test_", CredentialType::ApiKey, false),
    ("github_pat_", CredentialType::ApiKey, false),
    ("ghp_", CredentialType::ApiKey, false),
    ("gho_", CredentialType::AccessToken, false),
    ("xoxb-", CredentialType::AccessToken, false),
    ("xoxp-", CredentialType::AccessToken, false),
    ("glpat-", CredentialType::AccessToken, false),
    ("AKIA", CredentialType::ApiKey, true),
];

pub fn vendor_prefix(v: &[u8]) -> Option<(usize, CredentialType, bool)> {
    VENDOR_PREFIXES
        .iter()
        .find(|(p, _, _)| v.starts_with(p.as_bytes()))
        .map(|(p, t, live)| (p.len(), *t, *live))
}

/// `eyJ…` three dot-separated base64url parts: returns the signature's range.
pub fn jwt_signature(v: &[u8]) -> Option<(usize, usize)> {
    if !v.starts_with(b"eyJ") {
        return None;
    }
    let b64url = |s: &[u8]| {
        !s.is_empty()
            && s.iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'='))
    };
    let parts: Vec<&[u8]> = v.split(|&b| b == b'.').collect();
    if parts.len() != 3 || !parts.iter().all(|p| b64url(p)) {
        return None;
    }
    let start = parts[0].len() + parts[1].len() + 2;
    Some((start, v.len()))
}

struct Extractor<'c> {
    cfg: &'c LeakConfig,
    out: Vec<Credential>,
}

impl Extractor<'_> {
    fn add(&mut self, source: CredentialSource, name: &str, kind: CredentialType, v: &[u8]) {
        if !is_candidate(v, self.cfg) || self.out.len() >= MAX_CREDENTIALS {
            return;
        }
        let mut kind = kind;
        let mut vendor_prefix_len = 0;
        let jwt = jwt_signature(v);
        if kind != CredentialType::BasicCredentials && kind != CredentialType::Password {
            if let Some((len, t, _)) = vendor_prefix(v) {
                kind = t;
                vendor_prefix_len = len;
            } else if jwt.is_some() {
                kind = CredentialType::Jwt;
            }
        }
        let rank = |c: &Credential| {
            (
                c.kind == CredentialType::Secret,
                match c.source {
                    CredentialSource::Authorization => 0,
                    CredentialSource::Header => 1,
                    CredentialSource::Cookie => 2,
                    CredentialSource::Query => 3,
                    CredentialSource::Json => 4,
                    CredentialSource::Form => 5,
                },
            )
        };
        let new = Credential {
            source,
            name: name.to_string(),
            kind,
            value: Zeroizing::new(v.to_vec()),
            vendor_prefix_len,
            jwt_signature: jwt,
        };
        if let Some(old) = self.out.iter_mut().find(|c| c.value[..] == v[..]) {
            if rank(&new) < rank(old) {
                *old = new;
            }
            return;
        }
        self.out.push(new);
    }
}

/// The type a header/param/field name implies.
fn kind_for_name(name: &str) -> CredentialType {
    // Lower-cased on the stack when short (every usual name): no allocation.
    let mut buf = [0u8; 64];
    let owned;
    let n: &str = if name.len() <= buf.len() {
        let b = &mut buf[..name.len()];
        b.copy_from_slice(name.as_bytes());
        b.make_ascii_lowercase();
        std::str::from_utf8(b).expect("ASCII lower-casing keeps UTF-8 valid")
    } else {
        owned = name.to_ascii_lowercase();
        &owned
    };
    if n.contains("client_secret") || n.contains("client-secret") {
        CredentialType::ClientSecret
    } else if n.contains("refresh") {
        CredentialType::RefreshToken
    } else if n.contains("password") || n == "passwd" || n == "pwd" {
        CredentialType::Password
    } else if n.contains("key") {
        CredentialType::ApiKey
    } else if n.contains("access") || n.contains("token") {
        CredentialType::AccessToken
    } else {
        CredentialType::Secret
    }
}

fn percent_decode(s: &[u8], plus_space: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' if i + 2 < s.len() => {
                let h = std::str::from_utf8(&s[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match h {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' if plus_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// Percent-decodes (`%XX`; `+` as space when `plus_space`).
pub fn url_decode(s: &[u8], plus_space: bool) -> Vec<u8> {
    percent_decode(s, plus_space)
}

fn urlencoded_pairs(s: &[u8]) -> Vec<(Vec<u8>, Zeroizing<Vec<u8>>)> {
    s.split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.iter().position(|&b| b == b'=') {
            Some(i) => (
                percent_decode(&p[..i], true),
                Zeroizing::new(percent_decode(&p[i + 1..], true)),
            ),
            None => (percent_decode(p, true), Zeroizing::new(Vec::new())),
        })
        .collect()
}

fn field_match(cfg: &LeakConfig, name: &[u8]) -> bool {
    cfg.body_fields
        .iter()
        .any(|f| f.as_bytes().eq_ignore_ascii_case(name))
}

/// Every credential in `req`.
pub fn extract(req: &Request, cfg: &LeakConfig) -> Vec<Credential> {
    let mut ex = Extractor {
        cfg,
        out: Vec::new(),
    };
    for h in &req.headers {
        let v = trim(h.value);
        match h.name {
            "authorization" | "proxy-authorization" => authorization(&mut ex, v),
            "cookie" => cookies(&mut ex, v),
            name if is_credential_header_name(cfg, name) => {
                ex.add(CredentialSource::Header, name, kind_for_name(name), v)
            }
            _ => {}
        }
    }
    credential_params(req, cfg, |k, raw_v| {
        let v = Zeroizing::new(raw_v.map_or_else(Vec::new, |v| percent_decode(v, true)));
        ex.add(CredentialSource::Query, k, kind_for_name(k), &v);
    });
    body(&mut ex, req);
    ex.out
}

/// Hands `found` each query parameter of `req` named in `query_params`: its
/// decoded name and its raw (still percent-encoded) value, if any.
fn credential_params(req: &Request, cfg: &LeakConfig, mut found: impl FnMut(&str, Option<&[u8]>)) {
    let Some(q) = req.target.split_once('?').map(|(_, q)| q) else {
        return;
    };
    let q = q.split('#').next().unwrap_or("");
    // As `urlencoded_pairs`, but a key is decoded (and its value at all)
    // only when that can change it or it names a credential.
    for p in q.as_bytes().split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (raw_k, raw_v) = match p.iter().position(|&b| b == b'=') {
            Some(i) => (&p[..i], Some(&p[i + 1..])),
            None => (p, None),
        };
        let k: Cow<[u8]> = if raw_k.iter().any(|&b| b == b'%' || b == b'+') {
            Cow::Owned(percent_decode(raw_k, true))
        } else {
            Cow::Borrowed(raw_k)
        };
        let k = String::from_utf8_lossy(&k);
        if cfg.query_params.iter().any(|p| p.eq_ignore_ascii_case(&k)) {
            found(&k, raw_v);
        }
    }
}

/// Whether `req` may carry a credential, decided without taking any out
/// (no entropy, no decoding of values): a body, an Authorization or
/// credential-named header, or a credential-named query parameter says yes
/// at once; a Cookie header only if one of its cookies is a credential.
/// It never says no where [`extract`] finds one; it says yes for a header
/// or parameter whose value is no credential (empty, short, a plain word).
pub fn may_carry_credential(req: &Request, cfg: &LeakConfig) -> bool {
    if req.body.len > 0 {
        return true;
    }
    let mut cookie = false;
    for h in &req.headers {
        match h.name {
            "authorization" | "proxy-authorization" => return true,
            "cookie" => cookie = true,
            name if is_credential_header_name(cfg, name) => return true,
            _ => {}
        }
    }
    let mut param = false;
    credential_params(req, cfg, |_, _| param = true);
    if param {
        return true;
    }
    // Cookies need the look extraction takes (configured names, random
    // values): every request of a browser carries some.  HTTP/2 may split
    // them over several Cookie headers.
    cookie
        && req.headers.iter().filter(|h| h.name == "cookie").any(|h| {
            let mut ex = Extractor {
                cfg,
                out: Vec::new(),
            };
            cookies(&mut ex, trim(h.value));
            !ex.out.is_empty()
        })
}

/// Header names (lower-case) that carry credentials, besides Authorization/Cookie.
pub fn is_credential_header_name(cfg: &LeakConfig, lower: &str) -> bool {
    cfg.headers.iter().any(|h| h == lower)
        || cfg
            .header_suffixes
            .iter()
            .any(|s| lower.len() > s.len() && lower.ends_with(s.as_str()))
}

fn trim(v: &[u8]) -> &[u8] {
    let s = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let e = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(s, |e| e + 1);
    &v[s..e]
}

fn authorization(ex: &mut Extractor, v: &[u8]) {
    let (scheme, rest) = match v.iter().position(|&b| b == b' ') {
        Some(i) => (&v[..i], trim(&v[i + 1..])),
        None => (&b""[..], v),
    };
    // The usual schemes without allocating; any other as before.
    let scheme_l = if scheme.eq_ignore_ascii_case(b"bearer") {
        Cow::Borrowed("bearer")
    } else if scheme.eq_ignore_ascii_case(b"basic") {
        Cow::Borrowed("basic")
    } else {
        Cow::Owned(String::from_utf8_lossy(scheme).to_ascii_lowercase())
    };
    match &*scheme_l {
        "bearer" => ex.add(
            CredentialSource::Authorization,
            "bearer",
            CredentialType::BearerToken,
            rest,
        ),
        "basic" => {
            if let Ok(dec) = STANDARD.decode(rest) {
                let dec = Zeroizing::new(dec);
                ex.add(
                    CredentialSource::Authorization,
                    "basic",
                    CredentialType::BasicCredentials,
                    &dec,
                );
                if let Some(i) = dec.iter().position(|&b| b == b':') {
                    ex.add(
                        CredentialSource::Authorization,
                        "basic_password",
                        CredentialType::Password,
                        &dec[i + 1..],
                    );
                }
            }
        }
        "" => ex.add(
            CredentialSource::Authorization,
            "token",
            CredentialType::Secret,
            rest,
        ),
        s => {
            // Names are emitted and become metric-adjacent: keep them tame.
            let name: String = s
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .take(32)
                .collect();
            ex.add(
                CredentialSource::Authorization,
                &name,
                CredentialType::Secret,
                rest,
            )
        }
    }
}

fn cookies(ex: &mut Extractor, v: &[u8]) {
    for part in v.split(|&b| b == b';') {
        let part = trim(part);
        let Some(i) = part.iter().position(|&b| b == b'=') else {
            continue;
        };
        let name = String::from_utf8_lossy(trim(&part[..i])).into_owned();
        let mut val = trim(&part[i + 1..]);
        if val.len() >= 2 && val[0] == b'"' && val[val.len() - 1] == b'"' {
            val = &val[1..val.len() - 1];
        }
        let configured = ex.cfg.cookies.iter().any(|c| c.eq_ignore_ascii_case(&name));
        if configured
            || (val.len() >= RANDOM_COOKIE_MIN_LEN && entropy(val) >= RANDOM_COOKIE_MIN_ENTROPY)
        {
            ex.add(
                CredentialSource::Cookie,
                &name,
                CredentialType::SessionCookie,
                val,
            );
        }
    }
}

fn body(ex: &mut Extractor, req: &Request) {
    let Some(ct) = req.header("content-type") else {
        return;
    };
    let ct = String::from_utf8_lossy(ct).to_ascii_lowercase();
    let b: &Body = &req.body;
    if b.chunks.is_empty() {
        return;
    }
    let data = Zeroizing::new(b.to_vec());
    let partial = b.is_partial();
    if ct.starts_with("application/x-www-form-urlencoded") {
        let mut pairs = urlencoded_pairs(&data);
        if partial && !data.ends_with(b"&") {
            pairs.pop(); // the last value may be cut short
        }
        for (k, v) in pairs {
            if field_match(ex.cfg, &k) {
                let k = String::from_utf8_lossy(&k).into_owned();
                ex.add(CredentialSource::Form, &k, kind_for_name(&k), &v);
            }
        }
    } else if ct.starts_with("application/json") || ct.contains("+json") {
        // A cut JSON document does not parse: its fields are not trusted.
        // (Checked, not assumed: a cut that happens to leave a complete
        // document, such as `{"a":1}` of `{"a":1} `, still yields only whole values.)
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&data) {
            json_fields(ex, &v, 0);
        }
    } else if ct.starts_with("multipart/form-data") {
        if let Some(boundary) = ct_param(
            &String::from_utf8_lossy(req.header("content-type").unwrap()),
            "boundary",
        ) {
            multipart(ex, &data, boundary.as_bytes());
        }
    }
}

fn json_fields(ex: &mut Extractor, v: &serde_json::Value, depth: usize) {
    if depth > MAX_JSON_DEPTH {
        return;
    }
    match v {
        serde_json::Value::Object(m) => {
            for (k, val) in m {
                match val {
                    serde_json::Value::String(s) if field_match(ex.cfg, k.as_bytes()) => {
                        ex.add(CredentialSource::Json, k, kind_for_name(k), s.as_bytes())
                    }
                    _ => json_fields(ex, val, depth + 1),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| json_fields(ex, x, depth + 1)),
        _ => {}
    }
}

fn ct_param(ct: &str, name: &str) -> Option<String> {
    ct.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

fn multipart(ex: &mut Extractor, data: &[u8], boundary: &[u8]) {
    if boundary.is_empty() || boundary.len() > 200 {
        return;
    }
    let mut delim = b"--".to_vec();
    delim.extend_from_slice(boundary);
    let finder = memchr::memmem::Finder::new(&delim);
    let starts: Vec<usize> = finder.find_iter(data).collect();
    for w in starts.windows(2) {
        let part = &data[w[0] + delim.len()..w[1]];
        multipart_part(ex, part);
    }
    // Only parts followed by a delimiter are taken, so a part cut by body
    // truncation (no closing delimiter) never yields a shortened value.
}

fn multipart_part(ex: &mut Extractor, part: &[u8]) {
    let Some(hdr_end) = memchr::memmem::find(part, b"\r\n\r\n") else {
        return;
    };
    let headers = String::from_utf8_lossy(&part[..hdr_end]).to_string();
    let mut body = &part[hdr_end + 4..];
    if body.ends_with(b"\r\n") {
        body = &body[..body.len() - 2];
    }
    let name = headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if !k.trim().eq_ignore_ascii_case("content-disposition") {
            return None;
        }
        ct_param(
            &format!("x;{}", v.trim().split_once(';').map_or("", |x| x.1)),
            "name",
        )
    });
    if let Some(name) = name {
        if field_match(ex.cfg, name.as_bytes()) {
            ex.add(CredentialSource::Form, &name, kind_for_name(&name), body);
        }
    }
}
