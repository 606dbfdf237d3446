//! Credentials a request carried (sources of contract.md), filtered to values
//! that can be secrets, typed, and deduplicated.

use std::borrow::Cow;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use zeroize::Zeroizing;

use super::config::LeakConfig;
use super::decode::{decode_stream, parse_content_encoding};
use crate::finding::{ContentEncoding, CredentialSource, CredentialType};
use crate::http::types::{Body, Request};

/// Most JSON nesting walked for body fields (serde_json stops at 128 anyway).
pub const MAX_JSON_DEPTH: usize = 64;
/// Most credentials taken from one request (bounds matcher size).
pub const MAX_CREDENTIALS: usize = 64;
/// Longest value taken as a credential; longer ones are blobs, not keys.
/// JWTs with many claims (Keycloak roles, Azure AD groups) pass 4 KiB.
pub const MAX_CREDENTIAL_LEN: usize = 16 * 1024;
/// A cookie not configured as a session cookie counts when at least this long…
pub const RANDOM_COOKIE_MIN_LEN: usize = 16;
/// …and at least this random (bits per byte).
pub const RANDOM_COOKIE_MIN_ENTROPY: f64 = 3.5;
/// Query names so generic (`?key=` an object path, `?code=` a promo code)
/// that their value counts only when it looks machine-made
/// ([`looks_machine_made`]): Google's `?key=AIza…`, an OAuth `?code=`.
pub const GENERIC_CREDENTIAL_NAMES: &[&str] = &["key", "code"];
/// Shortest run of letters taken for a word (`SALE`, `final`).
pub const WORD_MIN_LEN: usize = 4;
/// Most consonants in a row in a word (`BLACKFRIDAY`, `thanksgiving`).
pub const MAX_WORD_CONSONANTS: usize = 4;
/// Most vowels in a row in a word.
pub const MAX_WORD_VOWELS: usize = 2;
/// Least share of vowels (a, e, i, o, u) in a word: one in four (random
/// letters have one in five).
pub const MIN_WORD_VOWELS_PER: usize = 4;
/// A value with at least this share of its letters in words was made by a
/// person (two thirds: a random key has a word-like run now and then).
pub const WORDY_NUMERATOR: usize = 2;
pub const WORDY_DENOMINATOR: usize = 3;
/// Longest file-name extension (`.pdf`, `.jpeg`, `.xlsx`).
pub const MAX_EXTENSION_LEN: usize = 5;
/// Values sent in password fields that are no one's password: what broken
/// clients and placeholders send (compared case-insensitively).
pub const PLACEHOLDER_PASSWORDS: &[&str] = &["password", "undefined", "[object object]"];
/// Words in a cookie name (normalised) that make it likely a session
/// cookie: kept first when a request carries more than [`MAX_CREDENTIALS`].
pub const SESSION_COOKIE_WORDS: &[&str] = &["sess", "sid", "auth", "token", "jwt", "login"];
/// Header names that carry credentials when they end in one of these once
/// normalised (lower-case letters and digits only), whatever separators they
/// have or lack: Binance's `X-MBX-APIKEY`, `X_Api_Key` (the `-key` of
/// `header_suffixes` needs a `-` before it).
pub const NORMALIZED_HEADER_SUFFIXES: &[&str] = &["apikey"];
/// Query parameters that are credentials besides `query_params` and the
/// normalised `credential_name_suffixes`: names that in a body more often
/// name an identifier (3scale's `?user_key=`).
pub const QUERY_CREDENTIAL_NAMES: &[&str] = &["user_key"];
/// Body fields (form, JSON at the top level, multipart) that carry a
/// credential only when their value looks machine-made
/// ([`looks_machine_made`]), as the generic query names: an OAuth
/// authorization `code` sent to the token endpoint, not a promo code.
pub const GENERIC_BODY_FIELDS: &[&str] = &["code"];
/// Names (normalised) longer than this are normalised on the heap.
const NAME_STACK_BYTES: usize = 64;
/// Largest JSON object read out of one query or form parameter
/// (`?variables={…}`): as much as a request body is kept
/// (`http::limits::MAX_REQUEST_BODY_KEPT`).
pub const MAX_EMBEDDED_JSON_BYTES: usize = 64 * 1024;
/// Largest request body decoded from its Content-Encoding (gzip, deflate,
/// br, zstd) for extraction: 16 times the 64 KiB of a body kept, more than
/// JSON or a form compresses by, and a zip bomb stops here (counted as
/// [`REQUEST_DECOMPRESS_CAP`]) having allocated no more.
pub const MAX_DECODED_REQUEST_BODY: usize = 1024 * 1024;
/// `sensor_http_parse_errors_total` reason: a request body's decoding
/// stopped at [`MAX_DECODED_REQUEST_BODY`] (what came before is read).
pub const REQUEST_DECOMPRESS_CAP: &str = "request_body_decompress_cap";
/// `sensor_http_parse_errors_total` reason: a request body's
/// Content-Encoding is unknown or stacked, or its data does not decode
/// (what decoded before the error is read).
pub const BAD_REQUEST_ENCODING: &str = "bad_request_content_encoding";

/// A credential a protocol hands back, by its specification, to the client
/// that sent it, in an answer with `status`: in `format` (JSON: as the
/// string member `field` at the top level of an object holding every member
/// of `requires`; S3's XML error: as the text of element `field` of an
/// `<Error>` whose `<Code>` is `requires[0]`).  There (and only there) the
/// value is no leak.
#[derive(Debug, PartialEq, Eq)]
pub struct ProtocolEcho {
    pub field: &'static str,
    pub requires: &'static [&'static str],
    pub status: u16,
    pub format: EchoFormat,
}

/// The body format of a [`ProtocolEcho`]'s answer.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum EchoFormat {
    Json,
    /// Amazon S3's REST error response (`application/xml`), which S3-
    /// compatible stores (MinIO, Ceph RGW, R2, GCS's XML API) copy.
    S3ErrorXml,
}

/// Amazon S3's `SignatureDoesNotMatch` error (403) gives back the SigV4
/// signature the client sent, as `<SignatureProvided>`, beside the string
/// the server signed: a client debugging a wrong secret or a skewed clock
/// compares them.  The signature is an HMAC of that one request, and one
/// the server just found wrong: handing it back to its sender is no leak.
pub static S3_SIGNATURE_ECHO: ProtocolEcho = ProtocolEcho {
    field: "SignatureProvided",
    requires: &["SignatureDoesNotMatch"],
    status: 403,
    format: EchoFormat::S3ErrorXml,
};

/// RFC 6749 6 (refresh grant): "The authorization server MAY issue a new
/// refresh token, in which case the client MUST discard the old refresh
/// token": when it does not, the token response (5.1: 200, JSON, with
/// `access_token`) carries the refresh token the client sent.
pub static REFRESH_GRANT_ECHO: ProtocolEcho = ProtocolEcho {
    field: "refresh_token",
    requires: &["access_token"],
    status: 200,
    format: EchoFormat::Json,
};

/// RFC 7592 2.1/2.2 (client read and update, GET/PUT with the registration
/// access token as a Bearer token): the client information response (3:
/// 200, JSON, with `client_id` and `registration_client_uri`) carries
/// `registration_access_token`, the same one unless the server rotates it.
pub static CLIENT_CONFIGURATION_ECHO: ProtocolEcho = ProtocolEcho {
    field: "registration_access_token",
    requires: &["client_id", "registration_client_uri"],
    status: 200,
    format: EchoFormat::Json,
};

/// RFC 7592 2.2 (client update, a PUT of the client's JSON metadata that
/// may include its `client_secret`, which "MUST match the currently issued
/// client secret"): the client information response carries it back.
pub static CLIENT_UPDATE_SECRET_ECHO: ProtocolEcho = ProtocolEcho {
    field: "client_secret",
    requires: &["client_id", "registration_client_uri"],
    status: 200,
    format: EchoFormat::Json,
};

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
    /// The value percent-decoded, when it was sent percent-encoded in a
    /// cookie (`s%3A…`, Express's signed cookies): applications read and
    /// echo it decoded (`s:…`), which is the whole value too.
    pub percent_decoded: Option<Zeroizing<Vec<u8>>>,
    /// The request's cookies that carried this value (as sent or
    /// percent-decoded), whatever source it is reported under: a response
    /// setting one of them to this value again refreshes it, leaks nothing.
    pub sent_as_cookies: Vec<String>,
    /// Where the protocol this value was sent by hands it back (a refresh
    /// grant's `refresh_token`): no leak there.
    pub protocol_echo: Option<&'static ProtocolEcho>,
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

/// Can this value of a field named as a password be one?  As
/// [`is_candidate`], but a word-like value counts (people use passphrases:
/// `sunflowerpurple`), unless it is trivially guessable: too little entropy
/// (`aaaaaaaa`), a run of consecutive characters (`abcdefgh`), all digits
/// (`12345678`, as in [`is_candidate`]) or a placeholder (`undefined`).
pub fn is_password_candidate(v: &[u8], cfg: &LeakConfig) -> bool {
    if v.len() < cfg.min_length.max(1) || v.len() > MAX_CREDENTIAL_LEN {
        return false;
    }
    if entropy(v) < cfg.min_entropy_bits || is_sequence(v) {
        return false;
    }
    if v.iter().all(|b| b.is_ascii_digit()) && v.len() < 16 {
        return false;
    }
    !PLACEHOLDER_PASSWORDS
        .iter()
        .any(|p| p.as_bytes().eq_ignore_ascii_case(v))
}

/// Each byte one more (or each one less) than the one before: `abcdefgh`, `98765432`.
fn is_sequence(v: &[u8]) -> bool {
    let steps = |d: i16| v.windows(2).all(|w| i16::from(w[1]) - i16::from(w[0]) == d);
    v.len() > 1 && (steps(1) || steps(-1))
}

/// Does this value look made by a program (a key, a code) rather than by
/// a person or for a path?  Vendor-prefixed keys and JWTs do.  Otherwise:
/// no whitespace or `@` (sentences, e-mail addresses), no file extension
/// (`uploads/2024/report.pdf`), and less than
/// [`WORDY_NUMERATOR`]/[`WORDY_DENOMINATOR`] of its letters in
/// pronounceable words (`SUMMER2024SALE`, `Q3-report_final`).  Random
/// letters make a word now and then, seldom most of a value: their
/// consonants (and vowels) cluster.  (Entropy is [`is_candidate`]'s to check.)
pub fn looks_machine_made(v: &[u8]) -> bool {
    if vendor_prefix(v).is_some() || jwt_signature(v).is_some() {
        return true;
    }
    if v.iter().any(|&b| b.is_ascii_whitespace() || b == b'@') || has_file_extension(v) {
        return false;
    }
    let letters = v.iter().filter(|b| b.is_ascii_alphabetic()).count();
    word_letters(v) * WORDY_DENOMINATOR < letters * WORDY_NUMERATOR
}

/// Ends in `.` and one to [`MAX_EXTENSION_LEN`] letters or digits, at
/// least one a letter (`.pdf`, `.mp4`), after something.
fn has_file_extension(v: &[u8]) -> bool {
    let Some(dot) = v.iter().rposition(|&b| b == b'.') else {
        return false;
    };
    let ext = &v[dot + 1..];
    dot > 0
        && (1..=MAX_EXTENSION_LEN).contains(&ext.len())
        && ext.iter().all(u8::is_ascii_alphanumeric)
        && ext.iter().any(u8::is_ascii_alphabetic)
}

/// Letters of `v` in words: runs of one case (`SALE`, `report`; a capital
/// and the lower-case run after it, `Final`) of [`WORD_MIN_LEN`] or more
/// letters with vowels enough and not too many consonants or vowels in a
/// row, as in written words (`SUMMER`, `Final`; not `xkcdq`, `qoeuz`).
fn word_letters(v: &[u8]) -> usize {
    let mut count = 0;
    let mut i = 0;
    while i < v.len() {
        let upper = v[i].is_ascii_uppercase();
        if !v[i].is_ascii_alphabetic() {
            i += 1;
            continue;
        }
        let same_case = |b: u8| b.is_ascii_alphabetic() && b.is_ascii_uppercase() == upper;
        let mut end = i + 1;
        while end < v.len() && same_case(v[end]) {
            end += 1;
        }
        if upper && end == i + 1 && end < v.len() && v[end].is_ascii_lowercase() {
            end += 1;
            while end < v.len() && v[end].is_ascii_lowercase() {
                end += 1;
            }
        }
        if is_word(&v[i..end]) {
            count += end - i;
        }
        i = end;
    }
    count
}

fn is_word(letters: &[u8]) -> bool {
    let vowel = |b: &u8| b"aeiouAEIOU".contains(b);
    let consonant = |b: &u8| !vowel(b);
    let vowels = letters.iter().filter(|b| vowel(b)).count();
    letters.len() >= WORD_MIN_LEN
        && vowels * MIN_WORD_VOWELS_PER >= letters.len()
        && letters
            .split(vowel)
            .all(|run| run.len() <= MAX_WORD_CONSONANTS)
        && letters
            .split(consonant)
            .all(|run| run.len() <= MAX_WORD_VOWELS)
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

/// A credential found, before the request's best [`MAX_CREDENTIALS`] are kept.
struct Candidate {
    cred: Credential,
    /// Which are kept first: lower is better ([`keep_tier`]).
    tier: u8,
}

/// What [`extract_counted`] found in a request.
#[derive(Debug, Default)]
pub struct Extracted {
    /// The credentials kept, in the order the request carried them.
    pub creds: Vec<Credential>,
    /// Distinct credentials found beyond [`MAX_CREDENTIALS`] and not searched for.
    pub dropped: usize,
    /// How decoding the request body's Content-Encoding went wrong, if it
    /// did ([`REQUEST_DECOMPRESS_CAP`], [`BAD_REQUEST_ENCODING`]).
    pub request_decode: Option<&'static str>,
}

struct Extractor<'c> {
    cfg: &'c LeakConfig,
    found: Vec<Candidate>,
    /// The body is a refresh grant (`grant_type=refresh_token`).
    refresh_grant: bool,
    /// The request is a PUT (an RFC 7592 client update, maybe).
    put: bool,
}

impl<'c> Extractor<'c> {
    fn new(cfg: &'c LeakConfig) -> Self {
        Extractor {
            cfg,
            found: Vec::new(),
            refresh_grant: false,
            put: false,
        }
    }

    /// The protocol echo of the top-level body field `name`, if any (see
    /// [`ProtocolEcho`]).
    fn body_echo(&self, name: &str) -> Option<&'static ProtocolEcho> {
        if self.refresh_grant && name == REFRESH_GRANT_ECHO.field {
            Some(&REFRESH_GRANT_ECHO)
        } else if self.put && name == CLIENT_UPDATE_SECRET_ECHO.field {
            Some(&CLIENT_UPDATE_SECRET_ECHO)
        } else {
            None
        }
    }

    /// Takes body field `name`'s value `v` if it can be a credential,
    /// noting its protocol echo when at the top level.
    fn add_field(&mut self, source: CredentialSource, name: &str, v: &[u8], top_level: bool) {
        let echo = if top_level {
            self.body_echo(name)
        } else {
            None
        };
        if let Some(c) = self.take(source, name, kind_for_name(name), v) {
            c.protocol_echo = echo;
        }
    }

    /// Takes `v` if it can be a credential.
    fn add(&mut self, source: CredentialSource, name: &str, kind: CredentialType, v: &[u8]) {
        self.take(source, name, kind, v);
    }

    /// As [`Extractor::add`], and returns the credential as taken.
    fn take(
        &mut self,
        source: CredentialSource,
        name: &str,
        kind: CredentialType,
        v: &[u8],
    ) -> Option<&mut Credential> {
        let candidate = if kind == CredentialType::Password {
            is_password_candidate(v, self.cfg)
        } else {
            is_candidate(v, self.cfg)
        };
        if !candidate {
            return None;
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
        self.found.push(Candidate {
            tier: keep_tier(self.cfg, source, name),
            cred: Credential {
                source,
                name: name.to_string(),
                kind,
                value: Zeroizing::new(v.to_vec()),
                vendor_prefix_len,
                jwt_signature: jwt,
                percent_decoded: None,
                sent_as_cookies: Vec::new(),
                protocol_echo: None,
            },
        });
        self.found.last_mut().map(|c| &mut c.cred)
    }

    /// One credential per distinct value (the best-named one: see
    /// [`report_rank`]), the best [`MAX_CREDENTIALS`] of them by
    /// [`keep_tier`] (so no number of cookies crowds out an Authorization
    /// header), in the order the request carried them.
    fn finish(self, req: &Request) -> Extracted {
        let found = self.found;
        // Groups of equal values, each in request order: sorting, not a
        // search per value, since a request may carry thousands of cookies.
        let mut by_value: Vec<usize> = (0..found.len()).collect();
        by_value.sort_by(|&a, &b| {
            found[a].cred.value[..]
                .cmp(&found[b].cred.value[..])
                .then(a.cmp(&b))
        });
        // (position of the value's first occurrence, the candidate
        // reported, the protocol echo of any of them)
        type Distinct = (usize, usize, Option<&'static ProtocolEcho>);
        let mut distinct: Vec<Distinct> = by_value
            .chunk_by(|&a, &b| found[a].cred.value[..] == found[b].cred.value[..])
            .map(|group| {
                let best = group
                    .iter()
                    .copied()
                    .min_by_key(|&i| (report_rank(&found[i].cred), i))
                    .expect("groups are not empty");
                let echo = group.iter().find_map(|&i| found[i].cred.protocol_echo);
                (group[0], best, echo)
            })
            .collect();
        distinct.sort_by_key(|&(first, best, _)| (found[best].tier, first));
        let dropped = distinct.len().saturating_sub(MAX_CREDENTIALS);
        distinct.truncate(MAX_CREDENTIALS);
        distinct.sort_by_key(|&(first, _, _)| first);
        let mut found: Vec<Option<Candidate>> = found.into_iter().map(Some).collect();
        let mut creds: Vec<Credential> = distinct
            .iter()
            .map(|&(_, best, echo)| {
                let mut c = found[best].take().expect("each kept once").cred;
                c.protocol_echo = echo;
                c
            })
            .collect();
        note_cookies_sent(req, &mut creds);
        Extracted {
            creds,
            dropped,
            request_decode: None,
        }
    }
}

/// Of credentials with the same value, which one a finding names: a
/// specific type before `secret`, then by source.
fn report_rank(c: &Credential) -> (bool, u8) {
    let source = match c.source {
        CredentialSource::Authorization => 0,
        CredentialSource::Header => 1,
        CredentialSource::Cookie => 2,
        CredentialSource::Query => 3,
        CredentialSource::Json => 4,
        CredentialSource::Form => 5,
    };
    (c.kind == CredentialType::Secret, source)
}

/// Which credentials are kept first when a request carries too many:
/// Authorization, then named credential headers, then query and body
/// fields, then session-like cookies, then other random-looking cookies
/// (a browser sends dozens of those).
fn keep_tier(cfg: &LeakConfig, source: CredentialSource, name: &str) -> u8 {
    match source {
        CredentialSource::Authorization => 0,
        CredentialSource::Header => 1,
        CredentialSource::Query | CredentialSource::Json | CredentialSource::Form => 2,
        CredentialSource::Cookie if is_session_like_cookie(cfg, name) => 3,
        CredentialSource::Cookie => 4,
    }
}

fn is_session_like_cookie(cfg: &LeakConfig, name: &str) -> bool {
    cfg.cookies.iter().any(|c| c.eq_ignore_ascii_case(name))
        || with_normalized(name, |n| SESSION_COOKIE_WORDS.iter().any(|w| n.contains(w)))
}

/// Records, on each credential, the request's cookies that carried its
/// value, as sent or percent-decoded (see [`Credential::sent_as_cookies`]).
fn note_cookies_sent(req: &Request, creds: &mut [Credential]) {
    if creds.is_empty() {
        return;
    }
    for h in req.headers.iter().filter(|h| h.name == "cookie") {
        for (name, val) in cookie_pairs(trim(h.value)) {
            let decoded = val
                .contains(&b'%')
                .then(|| Zeroizing::new(percent_decode(val, false)));
            let name = String::from_utf8_lossy(name);
            for c in creds.iter_mut() {
                let sent =
                    c.value[..] == *val || decoded.as_ref().is_some_and(|d| c.value[..] == d[..]);
                if sent && !c.sent_as_cookies.iter().any(|n| *n == name) {
                    c.sent_as_cookies.push(name.to_string());
                }
            }
        }
    }
}

/// `name` lower-cased with only its ASCII letters and digits kept
/// (`new_password`, `newPassword`, `user[new-password]` → `newpassword`),
/// handed to `f`; on the stack for every usual name.
fn with_normalized<R>(name: &str, f: impl FnOnce(&str) -> R) -> R {
    let mut buf = [0u8; NAME_STACK_BYTES];
    let mut heap = Vec::new();
    let mut n = 0;
    for b in name.bytes().filter(u8::is_ascii_alphanumeric) {
        let b = b.to_ascii_lowercase();
        if n < buf.len() {
            buf[n] = b;
        } else {
            if heap.is_empty() {
                heap.extend_from_slice(&buf);
            }
            heap.push(b);
        }
        n += 1;
    }
    let bytes = if heap.is_empty() {
        &buf[..n]
    } else {
        &heap[..]
    };
    f(std::str::from_utf8(bytes).expect("ASCII letters and digits"))
}

/// The type a header/param/field name implies.
fn kind_for_name(name: &str) -> CredentialType {
    with_normalized(name, |n| {
        if n.contains("clientsecret") {
            CredentialType::ClientSecret
        } else if n.contains("refresh") {
            CredentialType::RefreshToken
        } else if n.contains("password")
            || n.contains("passwd")
            || n.contains("passphrase")
            || n.ends_with("pwd")
        {
            CredentialType::Password
        } else if n.contains("key") {
            CredentialType::ApiKey
        } else if n.contains("access") || n.contains("token") {
            CredentialType::AccessToken
        } else {
            CredentialType::Secret
        }
    })
}

/// Form fields frameworks fill with their anti-forgery token, in every form
/// they render (so echoed by design), whose names the normalised rules
/// cannot tell from a credential: Laravel's `_token` is `token` once
/// normalised.  (Rails' `authenticity_token`, Django's
/// `csrfmiddlewaretoken`, Symfony's `_csrf_token` and ASP.NET's
/// `__RequestVerificationToken` are caught by `not_credential_words`.)
pub const FRAMEWORK_CSRF_FIELDS: &[&str] = &["_token"];

/// Whether a name (normalised) says its value is no credential
/// (`not_credential_words`: `x-csrf-token`, `Idempotency-Key`, `pageToken`).
fn is_not_credential_name(cfg: &LeakConfig, normalized: &str) -> bool {
    cfg.not_credential_words
        .iter()
        .any(|w| !w.is_empty() && normalized.contains(w.as_str()))
}

/// Whether a query parameter or body field named `name` carries a
/// credential: listed in `configured` (as sent, any case), or its
/// normalised name ends in one of `credential_name_suffixes` and has none
/// of `not_credential_words`.
fn is_credential_name(cfg: &LeakConfig, configured: &[String], name: &[u8]) -> bool {
    if FRAMEWORK_CSRF_FIELDS.iter().any(|f| f.as_bytes() == name) {
        return false;
    }
    if configured
        .iter()
        .any(|f| f.as_bytes().eq_ignore_ascii_case(name))
    {
        return true;
    }
    with_normalized(&String::from_utf8_lossy(name), |n| {
        cfg.credential_name_suffixes
            .iter()
            .any(|s| !s.is_empty() && n.ends_with(s.as_str()))
            && !is_not_credential_name(cfg, n)
    })
}

/// Whether the value of query parameter `name` is a credential: any
/// candidate, but under a generic name ([`GENERIC_CREDENTIAL_NAMES`]) only
/// a machine-made one.
fn query_value_counts(name: &str, v: &[u8]) -> bool {
    !GENERIC_CREDENTIAL_NAMES
        .iter()
        .any(|g| g.eq_ignore_ascii_case(name))
        || looks_machine_made(v)
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
    is_credential_name(cfg, &cfg.body_fields, name)
}

/// A generic body field name ([`GENERIC_BODY_FIELDS`], any case) that
/// `not_credential_words` do not rule out.
fn is_generic_body_field(cfg: &LeakConfig, name: &[u8]) -> bool {
    GENERIC_BODY_FIELDS
        .iter()
        .any(|g| g.as_bytes().eq_ignore_ascii_case(name))
        && !with_normalized(&String::from_utf8_lossy(name), |n| {
            is_not_credential_name(cfg, n)
        })
}

/// Whether body field `name` with value `v` is a credential: a credential
/// name ([`field_match`]); a generic one ([`is_generic_body_field`]) only
/// at the body's top level (`top_level`: a form's fields are) and with a
/// machine-made value (an OAuth `code`, not a nested product or promo code).
fn body_field_counts(cfg: &LeakConfig, name: &[u8], v: &[u8], top_level: bool) -> bool {
    if is_generic_body_field(cfg, name) {
        top_level && looks_machine_made(v)
    } else {
        field_match(cfg, name)
    }
}

/// Every credential in `req` (at most [`MAX_CREDENTIALS`]).
pub fn extract(req: &Request, cfg: &LeakConfig) -> Vec<Credential> {
    extract_counted(req, cfg).creds
}

/// Every credential in `req`, the best [`MAX_CREDENTIALS`] kept, and how
/// many more there were.
pub fn extract_counted(req: &Request, cfg: &LeakConfig) -> Extracted {
    let mut ex = Extractor::new(cfg);
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
    // RFC 7592: a client read (GET) or update (PUT) is authorized by the
    // registration access token as a Bearer token, which the answer holds.
    if matches!(req.method.as_str(), "GET" | "PUT") {
        for c in ex.found.iter_mut() {
            if c.cred.source == CredentialSource::Authorization && c.cred.name == "bearer" {
                c.cred.protocol_echo = Some(&CLIENT_CONFIGURATION_ECHO);
            }
        }
    }
    url_params(req, cfg, |p| match p {
        UrlParam::Query(k, raw_v) => {
            let v = Zeroizing::new(raw_v.map_or_else(Vec::new, |v| percent_decode(v, true)));
            if query_value_counts(k, &v) {
                ex.add(CredentialSource::Query, k, kind_for_name(k), &v);
            }
        }
        UrlParam::Matrix(k, raw_v, session) => {
            let v = Zeroizing::new(percent_decode(raw_v, false));
            if query_value_counts(k, &v) {
                let kind = if session {
                    CredentialType::SessionCookie
                } else {
                    kind_for_name(k)
                };
                ex.add(CredentialSource::Query, k, kind, &v);
            }
        }
        UrlParam::JsonObject(raw_v) => {
            // Percent-encoding at most triples it.
            if raw_v.len() <= 3 * MAX_EMBEDDED_JSON_BYTES {
                let v = Zeroizing::new(percent_decode(raw_v, true));
                embedded_json(&mut ex, &v, CredentialSource::Query);
            }
        }
    });
    let request_decode = body(&mut ex, req);
    let mut out = ex.finish(req);
    out.request_decode = request_decode;
    out
}

/// A parameter of the request's URL that extraction takes.
enum UrlParam<'a> {
    /// A query parameter named as a credential (`query_params`,
    /// `credential_name_suffixes`, [`QUERY_CREDENTIAL_NAMES`]): its decoded
    /// name and its raw (still percent-encoded) value, if any.
    Query(&'a str, Option<&'a [u8]>),
    /// A path (matrix) parameter, `/shop;jsessionid=…` (servlet URL
    /// rewriting), named as a credential by the query rules or as a
    /// session cookie (`cookies`): decoded name, raw value, and whether
    /// the name is a session cookie's.
    Matrix(&'a str, &'a [u8], bool),
    /// A query parameter whose value is a JSON object ([`raw_json_object`]),
    /// raw.
    JsonObject(&'a [u8]),
}

/// Hands `found` each parameter of `req`'s URL that extraction takes (see
/// [`UrlParam`]).  A target without `;` in its path and without `?` costs
/// a byte search; names are decoded only when that can change them.
fn url_params(req: &Request, cfg: &LeakConfig, mut found: impl FnMut(UrlParam)) {
    let (path, query) = match req.target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (req.target.as_str(), None),
    };
    let path = path.split('#').next().unwrap_or("");
    if memchr::memchr(b';', path.as_bytes()).is_some() {
        matrix_params(path, cfg, &mut found);
    }
    let Some(q) = query else {
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
        if is_credential_name(cfg, &cfg.query_params, &k) || is_query_credential_name(cfg, &k) {
            found(UrlParam::Query(&String::from_utf8_lossy(&k), raw_v));
        }
        if let Some(v) = raw_v.filter(|v| raw_json_object(v)) {
            found(UrlParam::JsonObject(v));
        }
    }
}

/// The `;name=value` parameters of each segment of `path` named as a
/// credential (the query's rules) or a session cookie (`cookies`:
/// `jsessionid`, `phpsessid`, `sid`).
fn matrix_params(path: &str, cfg: &LeakConfig, found: &mut impl FnMut(UrlParam)) {
    for segment in path.as_bytes().split(|&b| b == b'/') {
        for p in segment.split(|&b| b == b';').skip(1) {
            let Some(i) = p.iter().position(|&b| b == b'=') else {
                continue;
            };
            let (raw_k, raw_v) = (&p[..i], &p[i + 1..]);
            let k: Cow<[u8]> = if raw_k.contains(&b'%') {
                Cow::Owned(percent_decode(raw_k, false))
            } else {
                Cow::Borrowed(raw_k)
            };
            let session = cfg
                .cookies
                .iter()
                .any(|c| c.as_bytes().eq_ignore_ascii_case(&k));
            if session
                || is_credential_name(cfg, &cfg.query_params, &k)
                || is_query_credential_name(cfg, &k)
            {
                found(UrlParam::Matrix(
                    &String::from_utf8_lossy(&k),
                    raw_v,
                    session,
                ));
            }
        }
    }
}

/// One of [`QUERY_CREDENTIAL_NAMES`] (any case) that `not_credential_words`
/// do not rule out.
fn is_query_credential_name(cfg: &LeakConfig, name: &[u8]) -> bool {
    QUERY_CREDENTIAL_NAMES
        .iter()
        .any(|q| q.as_bytes().eq_ignore_ascii_case(name))
        && !with_normalized(&String::from_utf8_lossy(name), |n| {
            is_not_credential_name(cfg, n)
        })
}

/// Whether `req` may carry a credential, decided without taking any out
/// (no entropy, no decoding of values): a body, an Authorization or
/// credential-named header, a credential- or session-named query or path
/// parameter, or a query value that starts a JSON object says yes at once;
/// a Cookie header only if one of its cookies is a credential.
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
    url_params(req, cfg, |_| param = true);
    if param {
        return true;
    }
    // Cookies need the look extraction takes (configured names, random
    // values): every request of a browser carries some.  HTTP/2 may split
    // them over several Cookie headers.
    cookie
        && req.headers.iter().filter(|h| h.name == "cookie").any(|h| {
            let mut ex = Extractor::new(cfg);
            cookies(&mut ex, trim(h.value));
            !ex.found.is_empty()
        })
}

/// Header names (lower-case) that carry credentials, besides
/// Authorization/Cookie: those listed, and those with a credential suffix
/// (`-key`, `-token`; or, normalised, [`NORMALIZED_HEADER_SUFFIXES`]:
/// `X-MBX-APIKEY`) unless their name says they are none
/// (`Idempotency-Key`, `Sec-WebSocket-Key`, `X-CSRF-Token`: see
/// `not_credential_words`).
pub fn is_credential_header_name(cfg: &LeakConfig, lower: &str) -> bool {
    cfg.headers.iter().any(|h| h == lower)
        || ((cfg
            .header_suffixes
            .iter()
            .any(|s| lower.len() > s.len() && lower.ends_with(s.as_str()))
            || has_normalized_header_suffix(lower))
            && !with_normalized(lower, |n| is_not_credential_name(cfg, n)))
}

/// Whether `lower`, normalised, ends in one of [`NORMALIZED_HEADER_SUFFIXES`].
fn has_normalized_header_suffix(lower: &str) -> bool {
    // A name ending in a letter or digit ends in it normalised too: most
    // header names are ruled out without normalising them.
    let Some(&last) = lower.as_bytes().last() else {
        return false;
    };
    if last.is_ascii_alphanumeric()
        && !NORMALIZED_HEADER_SUFFIXES
            .iter()
            .any(|s| s.as_bytes().last() == Some(&last))
    {
        return false;
    }
    with_normalized(lower, |n| {
        NORMALIZED_HEADER_SUFFIXES.iter().any(|s| n.ends_with(s))
    })
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
            if let Ok(dec) = BASE64_ANY_PADDING.decode(rest) {
                let dec = Zeroizing::new(dec);
                ex.add(
                    CredentialSource::Authorization,
                    "basic",
                    CredentialType::BasicCredentials,
                    &dec,
                );
                if let Some(i) = dec.iter().position(|&b| b == b':') {
                    basic_parts(ex, &dec[..i], &dec[i + 1..]);
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
            match secret_params(s) {
                Some(secret) => {
                    // Of schemes whose credentials are auth-params, only the
                    // secret-bearing ones: the rest (Digest's nonce, realm,
                    // opaque and username, SigV4's access key id and scope,
                    // OAuth's consumer key) are identifiers or what the
                    // server itself handed out, echoed by design.
                    let params = auth_params(rest).unwrap_or_default();
                    let named = |k: &[u8]| {
                        secret
                            .names
                            .iter()
                            .any(|n| k.eq_ignore_ascii_case(n.as_bytes()))
                    };
                    for (_, val) in params.iter().filter(|(k, _)| named(k)) {
                        let decoded;
                        let val: &[u8] = if secret.percent_encoded {
                            decoded = Zeroizing::new(percent_decode(val, false));
                            &decoded
                        } else {
                            val
                        };
                        let taken = ex.take(
                            CredentialSource::Authorization,
                            &name,
                            CredentialType::Secret,
                            val,
                        );
                        if let (Some(c), true) = (taken, s.starts_with("aws4-")) {
                            c.protocol_echo = Some(&S3_SIGNATURE_ECHO);
                        }
                    }
                    if secret.bare_value_too && !params.iter().any(|(k, _)| named(k)) {
                        ex.add(
                            CredentialSource::Authorization,
                            &name,
                            CredentialType::Secret,
                            rest,
                        );
                    }
                }
                None => ex.add(
                    CredentialSource::Authorization,
                    &name,
                    CredentialType::Secret,
                    rest,
                ),
            }
        }
    }
}

/// Base64 as Basic credentials are sent: with or without the `=` padding.
const BASE64_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Auth-params: names as sent, values unquoted.
type AuthParams<'a> = Vec<(&'a [u8], Zeroizing<Vec<u8>>)>;

/// Which auth-params of an Authorization scheme carry its secret.
struct SecretParams {
    /// Param names (any case).
    names: &'static [&'static str],
    /// The values are percent-encoded (OAuth 1.0a, RFC 5849 3.5.1).
    percent_encoded: bool,
    /// A value with none of these params (`Token <value>`) is the
    /// credential as a whole.
    bare_value_too: bool,
}

/// The schemes (lower-case) whose credentials are RFC 7235 auth-params
/// (`scheme name=value, name="quoted"`), and the params that carry the secret.
fn secret_params(scheme: &str) -> Option<SecretParams> {
    let (names, percent_encoded, bare_value_too): (&'static [&'static str], _, _) = match scheme {
        // RFC 7616: the hash derived from the password.
        "digest" => (&["response"], false, false),
        // AWS Signature Version 4 (and 4a): the request's HMAC.
        s if s.starts_with("aws4-") => (&["signature"], false, false),
        // Rails' `authenticate_with_http_token`, PagerDuty: `Token token="…"`.
        "token" => (&["token"], false, true),
        // OAuth 1.0a (RFC 5849 3.5.1).
        "oauth" => (&["oauth_token", "oauth_signature"], true, false),
        _ => return None,
    };
    Some(SecretParams {
        names,
        percent_encoded,
        bare_value_too,
    })
}

/// The `name=value` auth-params of an Authorization header after its scheme
/// (RFC 7235 2.1: comma-separated, optional whitespace around `=` and
/// commas, values tokens or quoted strings with `\` escapes), the values
/// unquoted; `None` when `v` is not such a list (a bare token, an unclosed
/// quote).  Values unquoted up to the next comma (SigV4's
/// `Credential=AKIA…/20240101/us-east-1/s3/aws4_request`), as servers read them.
fn auth_params(v: &[u8]) -> Option<AuthParams<'_>> {
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let is_space = |b: u8| b == b' ' || b == b'\t';
    let mut params = Vec::new();
    let mut i = 0;
    loop {
        while i < v.len() && (is_space(v[i]) || v[i] == b',') {
            i += 1;
        }
        if i == v.len() {
            break;
        }
        let name_start = i;
        while i < v.len() && is_tchar(v[i]) {
            i += 1;
        }
        let name = &v[name_start..i];
        while i < v.len() && is_space(v[i]) {
            i += 1;
        }
        if name.is_empty() || v.get(i) != Some(&b'=') {
            return None;
        }
        i += 1;
        while i < v.len() && is_space(v[i]) {
            i += 1;
        }
        let mut value = Zeroizing::new(Vec::new());
        if v.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match v.get(i) {
                    None => return None,
                    Some(b'"') => break,
                    Some(b'\\') => {
                        value.push(*v.get(i + 1)?);
                        i += 2;
                    }
                    Some(&b) => {
                        value.push(b);
                        i += 1;
                    }
                }
            }
            i += 1;
            while i < v.len() && is_space(v[i]) {
                i += 1;
            }
            if i < v.len() && v[i] != b',' {
                return None;
            }
        } else {
            let end = v[i..]
                .iter()
                .position(|&b| b == b',')
                .map_or(v.len(), |e| i + e);
            value.extend_from_slice(trim(&v[i..end]));
            i = end;
        }
        params.push((name, value));
    }
    (!params.is_empty()).then_some(params)
}

/// The password of a Basic pair; or, when there is no password worth the
/// name (empty: Stripe's `sk_live_…:`; one character: Freshdesk's `key:X`),
/// the username, if it looks like a key rather than a person's name.
fn basic_parts(ex: &mut Extractor, user: &[u8], password: &[u8]) {
    if is_password_candidate(password, ex.cfg) {
        ex.add(
            CredentialSource::Authorization,
            "basic_password",
            CredentialType::Password,
            password,
        );
    } else if is_candidate(user, ex.cfg) && looks_machine_made(user) {
        ex.add(
            CredentialSource::Authorization,
            "basic",
            CredentialType::ApiKey,
            user,
        );
    }
}

/// A Cookie header's `name=value` pairs (values unquoted).
fn cookie_pairs(v: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    v.split(|&b| b == b';').filter_map(|part| {
        let part = trim(part);
        let i = part.iter().position(|&b| b == b'=')?;
        let mut val = trim(&part[i + 1..]);
        if val.len() >= 2 && val[0] == b'"' && val[val.len() - 1] == b'"' {
            val = &val[1..val.len() - 1];
        }
        Some((trim(&part[..i]), val))
    })
}

fn cookies(ex: &mut Extractor, v: &[u8]) {
    for (name, val) in cookie_pairs(v) {
        let name = String::from_utf8_lossy(name);
        let configured = ex.cfg.cookies.iter().any(|c| c.eq_ignore_ascii_case(&name));
        let random = val.len() >= RANDOM_COOKIE_MIN_LEN
            && entropy(val) >= RANDOM_COOKIE_MIN_ENTROPY
            && !is_not_credential_cookie(ex.cfg, &name);
        if !(configured || random) {
            continue;
        }
        let Some(cred) = ex.take(
            CredentialSource::Cookie,
            &name,
            CredentialType::SessionCookie,
            val,
        ) else {
            continue;
        };
        if val.contains(&b'%') {
            let decoded = Zeroizing::new(percent_decode(val, false));
            if decoded[..] != *val {
                cred.percent_decoded = Some(decoded);
            }
        }
    }
}

/// Analytics, advertising, consent and affinity cookies
/// (`not_credential_cookies`), and cookies named as no credential
/// (`XSRF-TOKEN`: `not_credential_words`).
fn is_not_credential_cookie(cfg: &LeakConfig, name: &str) -> bool {
    cfg.not_credential_cookies
        .iter()
        .any(|pattern| glob_matches_ignore_case(pattern, name))
        || with_normalized(name, |n| is_not_credential_name(cfg, n))
}

/// `pattern` with at most one `*` (any run of characters) against `name`,
/// ASCII case-insensitively.
fn glob_matches_ignore_case(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    match pattern.split_once('*') {
        None => p.eq_ignore_ascii_case(n),
        Some((head, tail)) => {
            n.len() >= head.len() + tail.len()
                && n[..head.len()].eq_ignore_ascii_case(head.as_bytes())
                && n[n.len() - tail.len()..].eq_ignore_ascii_case(tail.as_bytes())
        }
    }
}

/// Takes the credentials of the request body; says how decoding its
/// Content-Encoding went wrong, if it did.
fn body(ex: &mut Extractor, req: &Request) -> Option<&'static str> {
    let b: &Body = &req.body;
    if b.chunks.is_empty() {
        return None;
    }
    let raw_ct = req.header("content-type").unwrap_or(b"");
    let ct = String::from_utf8_lossy(raw_ct).to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim();
    let json_type = is_json_media_type(&ct);
    let is_multipart = essence == "multipart/form-data";
    let form = essence == "application/x-www-form-urlencoded";
    if !(json_type || is_multipart || form || matches!(essence, "" | "text/plain")) {
        return None; // a type not looked at: not copied, not decoded
    }
    let coding = match req.header("content-encoding") {
        None => ContentEncoding::Identity,
        Some(v) => match parse_content_encoding(Some(v)) {
            Ok(c) => c,
            Err(_) => return Some(BAD_REQUEST_ENCODING),
        },
    };
    // JSON sent without a JSON type: no Content-Type, curl's `-d '{…}'`
    // (form-urlencoded), `navigator.sendBeacon` of a string (text/plain).
    // An object is taken as JSON: a form parse of it has nonsense names.
    // An identity body of another type is not copied unless it is one.
    let maybe_json_object =
        json_type || is_multipart || form || coding != ContentEncoding::Identity;
    if !maybe_json_object && first_non_space(b.chunks.iter().flat_map(|c| c.iter())) != Some(b'{') {
        return None;
    }
    let (data, partial, event) = if coding == ContentEncoding::Identity {
        (Zeroizing::new(b.to_vec()), b.is_partial(), None)
    } else {
        decode_request_body(coding, b)
    };
    let json_object = first_non_space(data.iter()) == Some(b'{');
    if json_type || ((form || matches!(essence, "" | "text/plain")) && json_object) {
        // A document cut by the body cap (or malformed) does not parse: its
        // complete string members are still what the client sent.
        match serde_json::from_slice::<serde_json::Value>(&data) {
            Ok(v) => {
                json_body(ex, req, &v);
                return event;
            }
            Err(_) if json_type || partial => {
                json_prefix_fields(ex, &data);
                return event;
            }
            Err(_) => {}
        }
    }
    if is_multipart {
        if let Some(boundary) = ct_param(&String::from_utf8_lossy(raw_ct), "boundary") {
            multipart(ex, &data, boundary.as_bytes());
        }
    } else if form {
        form_fields(ex, &data, partial);
    }
    event
}

/// The request body decoded from its Content-Encoding, at most
/// [`MAX_DECODED_REQUEST_BODY`] bytes (decoded in blocks, never more
/// allocated); whether it is cut (by the body cap, the decode cap or an
/// error); and what went wrong, if something did.
fn decode_request_body(
    coding: ContentEncoding,
    b: &Body,
) -> (Zeroizing<Vec<u8>>, bool, Option<&'static str>) {
    let mut out = Zeroizing::new(Vec::new());
    let outcome = decode_stream(coding, &b.chunks, MAX_DECODED_REQUEST_BODY, &mut |block| {
        super::forms::reserve_zeroizing(&mut out, block.len());
        out.extend_from_slice(block);
    });
    let event = if outcome.cap_hit {
        Some(REQUEST_DECOMPRESS_CAP)
    } else if outcome.error.is_some() && !b.is_partial() {
        // A body cut by the keep cap ends its stream early: that is no
        // fault of the encoding.
        Some(BAD_REQUEST_ENCODING)
    } else {
        None
    };
    let cut = b.is_partial() || outcome.cap_hit || outcome.error.is_some();
    (out, cut, event)
}

/// The credentials of a JSON body that parsed: its members, a refresh
/// grant's `refresh_token` and an RFC 7592 update's `client_secret` noted as
/// what their protocol hands back ([`ProtocolEcho`]).
fn json_body(ex: &mut Extractor, req: &Request, v: &serde_json::Value) {
    ex.refresh_grant = v.get("grant_type").and_then(|g| g.as_str()) == Some("refresh_token");
    ex.put = req.method == "PUT";
    json_fields(ex, v, 0, CredentialSource::Json);
}

/// The first byte of `bytes` that is not JSON whitespace.
fn first_non_space<'a>(mut bytes: impl Iterator<Item = &'a u8>) -> Option<u8> {
    bytes
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .copied()
}

/// The fields of an `application/x-www-form-urlencoded` body.
fn form_fields(ex: &mut Extractor, data: &[u8], partial: bool) {
    let mut pairs = urlencoded_pairs(data);
    if partial && !data.ends_with(b"&") {
        pairs.pop(); // the last value may be cut short
    }
    ex.refresh_grant = pairs
        .iter()
        .any(|(k, v)| k == b"grant_type" && v[..] == *b"refresh_token");
    for (k, v) in pairs {
        if body_field_counts(ex.cfg, &k, &v, true) {
            let k = String::from_utf8_lossy(&k).into_owned();
            ex.add_field(CredentialSource::Form, &k, &v, true);
        }
        embedded_json(ex, &v, CredentialSource::Form);
    }
}

/// The credentials of a JSON object sent as the value of a query or form
/// parameter (a GraphQL GET's `?variables={…}`, a form field holding a
/// document), read as a JSON body's nested members are (a generic name
/// such as `code` does not count, nothing is a protocol's echo): only
/// when `v` (decoded) is an object of at most [`MAX_EMBEDDED_JSON_BYTES`],
/// walked to [`MAX_JSON_DEPTH`].
fn embedded_json(ex: &mut Extractor, v: &[u8], source: CredentialSource) {
    if v.len() > MAX_EMBEDDED_JSON_BYTES || first_non_space(v.iter()) != Some(b'{') {
        return;
    }
    if let Ok(doc) = serde_json::from_slice::<serde_json::Value>(v) {
        json_fields(ex, &doc, 1, source);
    }
}

/// Whether a raw (still percent-encoded) query value is a JSON object:
/// `{`, as sent or `%7B`, maybe after whitespace (`+`, `%20`, …).  Looks
/// at the first bytes only, allocates nothing.
fn raw_json_object(raw: &[u8]) -> bool {
    let mut i = 0;
    loop {
        match raw.get(i..) {
            Some([b'{', ..]) => return true,
            Some([b'+' | b' ' | b'\t', ..]) => i += 1,
            Some([b'%', h, l, ..]) => match (h, l.to_ascii_uppercase()) {
                (b'7', b'B') => return true,
                (b'2', b'0') | (b'0', b'9' | b'A' | b'D') => i += 3,
                _ => return false,
            },
            _ => return false,
        }
    }
}

/// `application/json`, `text/json`, any `+json` structured syntax
/// (`application/vnd.api+json`), and subtypes with a `json` word
/// (`application/x-amz-json-1.1`, `application/json-seq`).
pub fn is_json_media_type(lower_ct: &str) -> bool {
    let essence = lower_ct.split(';').next().unwrap_or("").trim();
    let Some((_, subtype)) = essence.split_once('/') else {
        return false;
    };
    subtype.ends_with("+json") || subtype.split(['-', '.']).any(|w| w == "json")
}

/// The `"name": "value"` members of a JSON text that does not parse (cut
/// by the body cap): a scan token by token, strings taken whole, so a
/// member counts only when its value's closing quote was kept; nesting is
/// not followed (a string followed by `:` is a member name at any depth),
/// only counted (brackets outside strings) to tell the top level's members,
/// where alone a generic name ([`GENERIC_BODY_FIELDS`]) counts.
fn json_prefix_fields(ex: &mut Extractor, data: &[u8]) {
    let mut i = 0;
    // Objects and arrays open around `i` (strings are skipped whole, so
    // their brackets do not count): a member of the top-level object is
    // at depth 1.
    let mut depth = 0usize;
    while i < data.len() {
        match data[i] {
            b'"' => {}
            b'{' | b'[' => {
                depth += 1;
                i += 1;
                continue;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                i += 1;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        }
        let name_start = i;
        let Some(name_end) = json_string_end(data, name_start) else {
            return;
        };
        i = name_end;
        let colon = skip_json_space(data, name_end);
        if data.get(colon) != Some(&b':') {
            continue;
        }
        let value_start = skip_json_space(data, colon + 1);
        if data.get(value_start) != Some(&b'"') {
            i = value_start;
            continue;
        }
        let Some(value_end) = json_string_end(data, value_start) else {
            return; // the value is cut: not taken
        };
        i = value_end;
        let Ok(name) = serde_json::from_slice::<String>(&data[name_start..name_end]) else {
            continue;
        };
        if !field_match(ex.cfg, name.as_bytes()) && !is_generic_body_field(ex.cfg, name.as_bytes())
        {
            continue;
        }
        if let Ok(value) = serde_json::from_slice::<String>(&data[value_start..value_end]) {
            let value = Zeroizing::new(value.into_bytes());
            if body_field_counts(ex.cfg, name.as_bytes(), &value, depth == 1) {
                ex.add(CredentialSource::Json, &name, kind_for_name(&name), &value);
            }
        }
    }
}

/// Just past the closing quote of the JSON string opening at `start`, or
/// `None` when the data ends first.
fn json_string_end(data: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < data.len() {
        match data[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

fn skip_json_space(data: &[u8], mut i: usize) -> usize {
    while i < data.len() && matches!(data[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// Just past the JSON value starting at `start` of a document known to
/// parse: a string, an object or array (brackets counted, strings skipped
/// whole), or a scalar (up to the next delimiter).
fn json_value_end(data: &[u8], start: usize) -> Option<usize> {
    match *data.get(start)? {
        b'"' => json_string_end(data, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = start;
            while i < data.len() {
                match data[i] {
                    b'"' => {
                        i = json_string_end(data, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => Some(
            data[start..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .map_or(data.len(), |e| start + e),
        ),
    }
}

/// Where the S3 error document `data` (`<Error><Code>…</Code>…</Error>`)
/// has the code `echo.requires[0]` and gives `value` back as the whole text
/// of its first `<echo.field>` element: that text's span.  S3 writes a
/// signature (hex) as it is; an element holding anything else (another
/// value, escapes, a value cut short) is not the echo.
fn s3_error_echo_span(data: &[u8], echo: &ProtocolEcho, value: &[u8]) -> Option<(usize, usize)> {
    let text = |name: &str| -> Option<(usize, usize)> {
        let open = format!("<{name}>");
        let start = memchr::memmem::find(data, open.as_bytes())? + open.len();
        let close = format!("</{name}>");
        let len = memchr::memmem::find(&data[start..], close.as_bytes())?;
        Some((start, start + len))
    };
    memchr::memmem::find(data, b"<Error>")?;
    let (cs, ce) = text("Code")?;
    if data[cs..ce].trim_ascii() != echo.requires.first()?.as_bytes() {
        return None;
    }
    let (start, end) = text(echo.field)?;
    (&data[start..end] == value).then_some((start, end))
}

/// Where the JSON document `data` is the answer `echo` describes, handing
/// `value` back: the span (quotes included) of the string member
/// `echo.field` of its top-level object, when that member (the first of
/// the name) holds `value` and the object has every member of
/// `echo.requires`.  `None` otherwise: not JSON, not an object, the member
/// missing, another value, a required member missing.
pub fn protocol_echo_span(
    data: &[u8],
    echo: &ProtocolEcho,
    value: &[u8],
) -> Option<(usize, usize)> {
    if echo.format == EchoFormat::S3ErrorXml {
        return s3_error_echo_span(data, echo, value);
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(data).ok()?;
    let mut i = skip_json_space(data, 0);
    if data.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    let mut span = None;
    let mut field_seen = false;
    let mut required = vec![false; echo.requires.len()];
    loop {
        i = skip_json_space(data, i);
        match data.get(i) {
            Some(b'}') => break,
            Some(b'"') => {}
            _ => return None,
        }
        let name_end = json_string_end(data, i)?;
        let name: String = serde_json::from_slice(&data[i..name_end]).ok()?;
        let colon = skip_json_space(data, name_end);
        if data.get(colon) != Some(&b':') {
            return None;
        }
        let start = skip_json_space(data, colon + 1);
        let end = json_value_end(data, start)?;
        if let Some(k) = echo.requires.iter().position(|r| *r == name) {
            required[k] = true;
        }
        if name == echo.field && !field_seen {
            field_seen = true;
            if data[start] == b'"' {
                let v = Zeroizing::new(serde_json::from_slice::<String>(&data[start..end]).ok()?);
                if v.as_bytes() == value {
                    span = Some((start, end));
                }
            }
        }
        i = skip_json_space(data, end);
        match data.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => break,
            _ => return None,
        }
    }
    span.filter(|_| required.iter().all(|&r| r))
}

/// The credential members of JSON value `v` at `depth` (0: the body's
/// own object, whose members alone count under a generic name or as a
/// protocol's echo), taken as from `source`.
fn json_fields(ex: &mut Extractor, v: &serde_json::Value, depth: usize, source: CredentialSource) {
    if depth > MAX_JSON_DEPTH {
        return;
    }
    match v {
        serde_json::Value::Object(m) => {
            for (k, val) in m {
                match val {
                    serde_json::Value::String(s)
                        if body_field_counts(ex.cfg, k.as_bytes(), s.as_bytes(), depth == 0) =>
                    {
                        ex.add_field(source, k, s.as_bytes(), depth == 0)
                    }
                    _ => json_fields(ex, val, depth + 1, source),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| json_fields(ex, x, depth + 1, source)),
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
        if body_field_counts(ex.cfg, name.as_bytes(), body, true) {
            ex.add(CredentialSource::Form, &name, kind_for_name(&name), body);
        }
        embedded_json(ex, body, CredentialSource::Form);
    }
}
