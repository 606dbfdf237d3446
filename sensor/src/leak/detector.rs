//! The detector: a pair in, findings out.  Credentials come from the request
//! (`extract`), their forms (`forms`) become the needles of one matcher
//! (`matcher`), which runs over every response header and the decoded body.

use zeroize::Zeroizing;

use std::sync::Mutex;

use super::cache::{CacheStats, Lookup, MatcherCache, MATCHER_CACHE_ENTRIES, MATCHER_CACHE_IDLE};
use super::config::LeakConfig;
use super::decode::{decode_stream, parse_content_encoding, DecodeOutcome};
use super::extract::{self, entropy, url_decode, Credential, EchoFormat, ProtocolEcho};
use super::fingerprint::Fingerprinter;
use super::matcher::{Build, Matcher, MatcherParts, StreamState, LARGE_HAYSTACK};
use super::views::{views_needed, View};
use crate::finding::{
    ContentEncoding, CredentialRef, CredentialType, Encoding, Exposure, Finding, RequestSummary,
    ResponseSummary, Severity, Sink, SinkLocation, FINDING_SCHEMA,
};
use crate::http::types::{HttpPair, Request, Response};

/// Longest content-type / host kept in a finding (they are request/response data).
pub const MAX_SUMMARY_FIELD: usize = 256;
/// High-entropy characters a partial run must hold beyond a vendor prefix.
pub const PARTIAL_MIN_SECRET_CHARS: usize = 8;
/// Entropy (bits/byte) the secret part of a partial run must have.
pub const PARTIAL_MIN_ENTROPY: f64 = 2.5;
/// Largest decoded response body read as a protocol's answer (a token
/// response, a client information response: a few KiB) to tell whether a
/// credential in it is that protocol handing it back
/// ([`extract::ProtocolEcho`]); a larger one is searched as any other.
pub const MAX_PROTOCOL_ECHO_BODY: usize = 64 * 1024;
/// Least time between two log lines about request bodies whose decoding
/// stopped at its cap (each is counted).
const REQUEST_DECODE_LOG_EVERY_SECS: u64 = 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NeedleKind {
    Full(Encoding),
    Partial(RunAt),
    Masked,
}

/// Where a partial run lies in its credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunAt {
    /// `value[..end]`.
    Head { end: usize },
    /// `value[start..]`.
    Tail { start: usize },
    /// Elsewhere (a JWT's signature).
    Inner,
}

struct Needle {
    cred: usize,
    kind: NeedleKind,
    /// Bytes long.
    len: usize,
    /// A base64 needle with none of `+/-_`: the standard and the URL-safe
    /// alphabet give the same one, so the run around a match decides the
    /// label ([`run_votes`]).
    either_alphabet: bool,
}

#[derive(Debug, Default)]
pub struct Inspection {
    pub findings: Vec<Finding>,
    pub masked_echoes: Vec<SinkLocation>,
    pub decompress_cap_hit: Option<ContentEncoding>,
    pub decode_errors: Vec<&'static str>,
    /// Credentials the request carried beyond `extract::MAX_CREDENTIALS`,
    /// not searched for.
    pub credentials_dropped: usize,
}

pub struct Detector {
    config: LeakConfig,
    fingerprinter: Fingerprinter,
    /// Matchers built for recent credential sets (see `cache`).
    matchers: MatcherCache<Built>,
    /// Buffers for one pair at a time, reused (one per concurrent caller).
    scratch: Mutex<Vec<Scratch>>,
}

/// What inspecting a pair needs besides a matcher, kept between pairs so a
/// pair whose matcher is built for it alone allocates next to nothing.
/// Emptied (needle bytes and the stream carry zeroized) after every pair.
#[derive(Default)]
struct Scratch {
    set: NeedleSet,
    parts: MatcherParts,
    stream: StreamState,
    per: Vec<SinkHits>,
}

/// Needles one after another in one buffer (zeroized when cleared or
/// dropped, never left behind by growing: `forms::reserve_zeroizing`),
/// distinct, each with what it means; needle i is `index.spans[i]`.
#[derive(Default)]
struct NeedleSet {
    bytes: Zeroizing<Vec<u8>>,
    index: NeedleIndex,
}

#[derive(Default)]
struct NeedleIndex {
    spans: Vec<(usize, usize)>,
    /// Each needle's first eight bytes mixed with its length: most
    /// duplicate checks end here without comparing bytes.  Zeroized with
    /// the bytes.
    keys: Vec<u64>,
    meta: Vec<Needle>,
}

impl NeedleIndex {
    /// The bytes from `start` to the end of `bytes` are a needle: kept
    /// unless empty or already there (the first meaning wins), else cut away.
    fn commit(&mut self, bytes: &mut Vec<u8>, start: usize, cred: usize, kind: NeedleKind) {
        let n = bytes.len() - start;
        let b = &bytes[start..];
        let key = prefix_key(b) ^ (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let dup = if n == 0 {
            Some(usize::MAX)
        } else {
            self.keys.iter().enumerate().position(|(i, &k)| {
                k == key && {
                    let (s, len) = self.spans[i];
                    bytes[s..s + len] == *b
                }
            })
        };
        if let Some(i) = dup {
            // The URL-safe alphabet's needle is the standard one's (the
            // standard ones come first): neither has `+/-_`, so the run
            // around a match decides the label.  Told here, where the
            // duplicate is found anyway, instead of scanning every base64
            // needle for those bytes (~9 % of needle building).
            if kind == NeedleKind::Full(Encoding::Base64url) {
                if let Some(m) = self.meta.get_mut(i) {
                    m.either_alphabet |= m.kind == NeedleKind::Full(Encoding::Base64);
                }
            }
            bytes.truncate(start);
            return;
        }
        self.spans.push((start, n));
        self.keys.push(key);
        self.meta.push(Needle {
            cred,
            kind,
            len: n,
            either_alphabet: false,
        });
    }
}

impl Drop for NeedleIndex {
    fn drop(&mut self) {
        // The keys are needle bytes too.
        self.keys.fill(0);
    }
}

impl NeedleSet {
    fn needle(&self, i: usize) -> &[u8] {
        let (s, n) = self.index.spans[i];
        &self.bytes[s..s + n]
    }

    fn len(&self) -> usize {
        self.index.spans.len()
    }

    /// Adds the needle made of `parts` one after another.
    fn push(&mut self, parts: &[&[u8]], cred: usize, kind: NeedleKind) {
        let n = parts.iter().map(|p| p.len()).sum();
        super::forms::reserve_zeroizing(&mut self.bytes, n);
        let start = self.bytes.len();
        for p in parts {
            self.bytes.extend_from_slice(p);
        }
        self.index.commit(&mut self.bytes, start, cred, kind);
    }

    /// Empties the set, zeroizing what it held; keeps the buffers unless
    /// they grew beyond what a usual request needs.
    fn clear(&mut self) {
        zeroize::Zeroize::zeroize(&mut *self.bytes);
        let ix = &mut self.index;
        ix.keys.fill(0);
        ix.keys.clear();
        ix.spans.clear();
        ix.meta.clear();
        if self.bytes.capacity() > KEEP_SCRATCH_BYTES {
            *self = NeedleSet::default();
        }
    }
}

/// The first (up to) eight bytes of `b` as one integer.
fn prefix_key(b: &[u8]) -> u64 {
    match b.first_chunk::<8>() {
        Some(head) => u64::from_le_bytes(*head),
        None => {
            let mut k = [0u8; 8];
            k[..b.len()].copy_from_slice(b);
            u64::from_le_bytes(k)
        }
    }
}

/// Scratch buffers larger than this are freed after use rather than kept.
const KEEP_SCRATCH_BYTES: usize = 64 * 1024;

/// A matcher over every needle of a credential set, and what each needle means.
struct Built {
    matcher: Matcher,
    needles: Vec<Needle>,
}

/// What matched in one sink, per credential: earliest full, partial, masked hit.
#[derive(Default, Clone, Copy)]
struct SinkHits {
    full: Option<(u64, Encoding)>,
    partial: Option<u64>,
    masked: bool,
}

impl SinkHits {
    fn is_empty(&self) -> bool {
        self.full.is_none() && self.partial.is_none() && !self.masked
    }
}

type SinkKey = (SinkLocation, Option<String>);

impl Detector {
    pub fn new(config: LeakConfig, fingerprinter: Fingerprinter) -> Self {
        Detector {
            config,
            fingerprinter,
            matchers: MatcherCache::new(MATCHER_CACHE_ENTRIES, MATCHER_CACHE_IDLE),
            scratch: Mutex::new(Vec::new()),
        }
    }

    /// Lookups of built matchers so far.
    pub fn matcher_cache_stats(&self) -> CacheStats {
        self.matchers.stats()
    }

    /// Matchers cached now.
    pub fn matcher_cache_entries(&self) -> usize {
        self.matchers.len()
    }

    pub fn config(&self) -> &LeakConfig {
        &self.config
    }

    /// Whether a response to `req` needs its body kept: only when `req` may
    /// carry a credential ([`Detector::inspect`] looks at nothing else).
    /// Decided by names, not values ([`extract::may_carry_credential`]):
    /// taking the credentials out here as well as in `inspect` did the
    /// work twice for every request that carries one (~8 % of the sensor's
    /// CPU in `entropy` alone, nginx 1 KiB with an API key on each request).
    /// A request with a body is taken to carry one without looking.
    pub fn wants_response_body(&self, req: &Request) -> bool {
        extract::may_carry_credential(req, &self.config)
    }

    pub fn is_credential_header(&self, lower_name: &str) -> bool {
        matches!(
            lower_name,
            "authorization" | "proxy-authorization" | "cookie"
        ) || extract::is_credential_header_name(&self.config, lower_name)
    }

    pub fn inspect(&self, pair: &HttpPair) -> Inspection {
        let extract::Extracted {
            creds,
            dropped: credentials_dropped,
            request_decode,
        } = extract::extract_counted(&pair.exchange.request, &self.config);
        if let Some(reason) = request_decode {
            log_request_decode(reason);
        }
        if creds.is_empty() {
            return Inspection {
                decode_errors: request_decode.into_iter().collect(),
                ..Inspection::default()
            };
        }
        let mut scratch = self
            .scratch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        // Small and large responses get differently tuned matchers.
        let large = pair.exchange.response.body.len >= LARGE_HAYSTACK;
        let variant = u64::from(large);
        let Scratch {
            set,
            parts,
            stream,
            per,
        } = &mut scratch;
        let mut insp = match self.matchers.lookup(&creds, variant) {
            Lookup::Hit(built) => {
                self.scan(pair, &creds, &built.matcher, &built.needles, stream, per)
            }
            Lookup::Keep(ticket) => {
                // Size classes, not the size: the matcher serves later pairs too.
                let how = Build::Reused {
                    hint: if large { LARGE_HAYSTACK } else { 0 },
                };
                let built = self.build(&creds, how);
                let built = self.matchers.insert(ticket, &creds, variant, built);
                self.scan(pair, &creds, &built.matcher, &built.needles, stream, per)
            }
            Lookup::Once => {
                // Built in scratch buffers kept between pairs, given back
                // (emptied, needle bytes zeroized) right after.
                self.needles(&creds, set);
                let how = Build::Once {
                    hint: pair.exchange.response.body.len,
                };
                let matcher =
                    Matcher::build_in(set.len(), |i| set.needle(i), Some(&set.bytes), how, parts);
                let insp = self.scan(pair, &creds, &matcher, &set.index.meta, stream, per);
                matcher.recycle(parts);
                set.clear();
                insp
            }
        };
        insp.credentials_dropped = credentials_dropped;
        insp.decode_errors.extend(request_decode);
        stream.reset();
        per.clear();
        self.scratch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(scratch);
        insp
    }

    /// Every kept scratch is empty (nothing of the last pair left in it).
    #[cfg(test)]
    pub(super) fn scratch_is_empty(&self) -> bool {
        let pool = self.scratch.lock().unwrap();
        pool.iter().all(|s| {
            s.set.len() == 0
                && s.set.bytes.is_empty()
                && s.set.index.keys.is_empty()
                && s.parts.is_empty()
                && s.stream.is_empty()
                && s.per.is_empty()
        })
    }

    /// A matcher to keep for `creds`.
    fn build(&self, creds: &[Credential], how: Build) -> Built {
        let mut set = NeedleSet::default();
        self.needles(creds, &mut set);
        Built {
            matcher: Matcher::build_in(
                set.len(),
                |i| set.needle(i),
                Some(&set.bytes),
                how,
                &mut MatcherParts::default(),
            ),
            needles: std::mem::take(&mut set.index.meta),
        }
    }

    /// The findings of `pair`, whose request carried `creds`, searched with
    /// `matcher` (whose needle i means `needles[i]`).
    fn scan(
        &self,
        pair: &HttpPair,
        creds: &[Credential],
        matcher: &Matcher,
        needles: &[Needle],
        st: &mut StreamState,
        per: &mut Vec<SinkHits>,
    ) -> Inspection {
        let mut insp = Inspection::default();
        let resp = &pair.exchange.response;
        // Sinks with a match, what matched in each, and where each sink first
        // appears (headers by their first header of that name, then the body):
        // findings come in that order.  Sinks without a match cost nothing.
        let mut sinks: Vec<(usize, SinkKey, Vec<SinkHits>)> = Vec::new();
        let record = |sinks: &mut Vec<(usize, SinkKey, Vec<SinkHits>)>,
                      first: usize,
                      key: SinkKey,
                      per: &[SinkHits]| {
            if per.iter().all(SinkHits::is_empty) {
                return;
            }
            let slot = match sinks.iter().position(|(_, k, _)| *k == key) {
                Some(i) => &mut sinks[i].2,
                None => {
                    sinks.push((first, key, vec![SinkHits::default(); creds.len()]));
                    &mut sinks.last_mut().expect("just pushed").2
                }
            };
            for (s, p) in slot.iter_mut().zip(per) {
                if s.full.is_none() {
                    s.full = p.full;
                }
                if s.partial.is_none() {
                    s.partial = p.partial;
                }
                s.masked |= p.masked;
            }
        };

        per.clear();
        per.resize(creds.len(), SinkHits::default());
        let per = &mut per[..];
        for h in &resp.headers {
            per.fill(SinkHits::default());
            scan_one(matcher, needles, creds, h.value, per, false);
            if h.name == "location" {
                // Credentials percent-encoded in any style: search the decoded URL too.
                let dec = Zeroizing::new(url_decode(h.value, false));
                if dec[..] != h.value[..] {
                    scan_one(matcher, needles, creds, &dec, per, true);
                }
            }
            if h.name == "set-cookie" {
                same_cookie_refresh(creds, h.value, per);
            }
            if per.iter().any(|p| !p.is_empty()) {
                let first = resp
                    .headers
                    .iter()
                    .position(|x| x.name == h.name)
                    .expect("h is one of them");
                record(
                    &mut sinks,
                    first,
                    (SinkLocation::Header, Some(h.name.to_string())),
                    per,
                );
            }
        }
        // Interim (1xx) responses' headers (a 103 Early Hints' Link URLs,
        // searched percent-decoded too): header sinks whose finding's
        // `response.status` is the interim status; they come first.
        let mut interim: Vec<(u16, &str, Vec<SinkHits>)> = Vec::new();
        for im in resp.interim() {
            for h in &im.headers {
                per.fill(SinkHits::default());
                scan_one(matcher, needles, creds, h.value, per, false);
                let dec = Zeroizing::new(url_decode(h.value, false));
                if dec[..] != h.value[..] {
                    scan_one(matcher, needles, creds, &dec, per, true);
                }
                if per.iter().all(SinkHits::is_empty) {
                    continue;
                }
                match interim
                    .iter_mut()
                    .find(|(s, n, _)| *s == im.status && *n == h.name)
                {
                    Some((_, _, hits)) => {
                        for (s, p) in hits.iter_mut().zip(per.iter()) {
                            s.full = s.full.or(p.full);
                            s.partial = s.partial.or(p.partial);
                            s.masked |= p.masked;
                        }
                    }
                    None => interim.push((im.status, h.name, per.to_vec())),
                }
            }
        }
        for (status, name, hits) in interim {
            for (ci, h) in hits.iter().enumerate() {
                let (exposure, offset, encoding) = match (h.full, h.partial) {
                    (Some((off, enc)), _) => (Exposure::Full, off, enc),
                    (None, Some(off)) => (Exposure::Partial, off, Encoding::Plain),
                    (None, None) => {
                        if h.masked {
                            insp.masked_echoes.push(SinkLocation::Header);
                        }
                        continue;
                    }
                };
                let sink = Sink {
                    location: SinkLocation::Header,
                    name: Some(name.to_string()),
                    encoding,
                    content_encoding: ContentEncoding::Identity,
                    offset,
                };
                let mut f = self.finding(pair, &creds[ci], exposure, sink);
                f.response = ResponseSummary {
                    status,
                    content_type: None,
                };
                insp.findings.push(f);
            }
        }

        let ce = match parse_content_encoding(resp.header("content-encoding")) {
            Ok(ce) => ce,
            Err(e) => {
                insp.decode_errors.push(e);
                ContentEncoding::Identity
            }
        };
        let outcome = scan_body(
            resp,
            ce,
            &self.config,
            creds,
            matcher,
            needles,
            st,
            per,
            &[],
        );
        // A credential its protocol hands back (a refresh token not
        // rotated): searched again with that one place left out.
        let protect = protocol_echoes(resp, ce, creds, per);
        if !protect.is_empty() {
            scan_body(
                resp,
                ce,
                &self.config,
                creds,
                matcher,
                needles,
                st,
                per,
                &protect,
            );
        }
        if outcome.cap_hit {
            insp.decompress_cap_hit = Some(ce);
        }
        if let Some(e) = outcome.error {
            insp.decode_errors.push(if resp.body.truncated {
                "truncated_compressed_body"
            } else {
                e
            });
        }
        record(
            &mut sinks,
            resp.headers.len(),
            (SinkLocation::Body, None),
            per,
        );
        sinks.sort_by_key(|(first, _, _)| *first);

        for (_, key, per) in &sinks {
            for (ci, h) in per.iter().enumerate() {
                let (exposure, offset, encoding) = match (h.full, h.partial) {
                    (Some((off, enc)), _) => (Exposure::Full, off, enc),
                    (None, Some(off)) => (Exposure::Partial, off, Encoding::Plain),
                    (None, None) => {
                        if h.masked {
                            insp.masked_echoes.push(key.0);
                        }
                        continue;
                    }
                };
                let content_encoding = match key.0 {
                    SinkLocation::Body => ce,
                    SinkLocation::Header => ContentEncoding::Identity,
                };
                insp.findings.push(self.finding(
                    pair,
                    &creds[ci],
                    exposure,
                    Sink {
                        location: key.0,
                        name: key.1.clone(),
                        encoding,
                        content_encoding,
                        offset,
                    },
                ));
            }
        }
        insp
    }

    /// Every needle of `creds` into `set` (empty), with what each one means.
    /// Identical byte strings are kept once, the first (most specific)
    /// meaning winning: full forms of every credential, then partial runs,
    /// then masked echoes.
    fn needles(&self, creds: &[Credential], set: &mut NeedleSet) {
        debug_assert_eq!(set.len(), 0);
        // About 20 needles per credential (forms, runs, masks): sized up front.
        let total: usize = creds.iter().map(|c| c.value.len()).sum();
        super::forms::reserve_zeroizing(&mut set.bytes, 16 * total + 128 * creds.len());
        set.index.spans.reserve(24 * creds.len());
        set.index.keys.reserve(24 * creds.len());
        set.index.meta.reserve(24 * creds.len());
        for (ci, c) in creds.iter().enumerate() {
            set.push(&[&c.value], ci, NeedleKind::Full(Encoding::Plain));
            let NeedleSet { bytes, index } = set;
            super::forms::write_forms(&c.value, bytes, |bytes, start, enc| {
                index.commit(bytes, start, ci, NeedleKind::Full(enc))
            });
            if let Some(decoded) = &c.percent_decoded {
                set.push(&[decoded], ci, NeedleKind::Full(Encoding::Plain));
            }
        }
        for (ci, c) in creds.iter().enumerate() {
            partial_runs(c, &self.config, |run, at| {
                set.push(&[run], ci, NeedleKind::Partial(at))
            });
        }
        for (ci, c) in creds.iter().enumerate() {
            masked_forms(c, |a, b| {
                set.push(&[a, b], ci, NeedleKind::Masked);
            });
        }
    }

    fn finding(&self, pair: &HttpPair, c: &Credential, exposure: Exposure, sink: Sink) -> Finding {
        let req = &pair.exchange.request;
        let resp = &pair.exchange.response;
        let live = extract::vendor_prefix(&c.value).is_some_and(|(_, _, live)| live);
        let severity = match exposure {
            Exposure::Full if live => Severity::Critical,
            Exposure::Full => Severity::High,
            Exposure::Partial => Severity::Medium,
        };
        let text = |v: &[u8]| {
            let mut s = String::from_utf8_lossy(v).into_owned();
            if s.len() > MAX_SUMMARY_FIELD {
                let mut cut = MAX_SUMMARY_FIELD;
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                s.truncate(cut);
            }
            s
        };
        Finding {
            schema: FINDING_SCHEMA.to_string(),
            ts: pair.ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            kind: "credential_leak".to_string(),
            severity,
            exposure,
            credential: CredentialRef {
                source: c.source,
                name: c.name.clone(),
                kind: c.kind,
                fingerprint: self.fingerprinter.fingerprint(&c.value),
                length: c.value.len(),
            },
            sink,
            request: RequestSummary {
                method: text(req.method.as_bytes()),
                path: redact_target(&req.target),
                host: req.header("host").map(text),
            },
            response: ResponseSummary {
                status: resp.status,
                content_type: resp.header("content-type").map(text),
            },
            role: pair.exchange.role,
            process: (*pair.process).clone(),
            connection: pair.conn.clone(),
        }
    }
}

/// A place in the decoded body where one credential is no leak: (the
/// credential's index, first byte, end).
type Protected = (usize, u64, u64);

/// Searches the decoded body of `resp` (content coding `ce`), filling `per`
/// with each credential's hits, except those of a credential at a place
/// `protect` gives it.
#[allow(clippy::too_many_arguments)]
fn scan_body(
    resp: &Response,
    ce: ContentEncoding,
    cfg: &LeakConfig,
    creds: &[Credential],
    matcher: &Matcher,
    needles: &[Needle],
    st: &mut StreamState,
    per: &mut [SinkHits],
    protect: &[Protected],
) -> DecodeOutcome {
    let protected = |ci: usize, off: u64| {
        protect
            .iter()
            .any(|&(c, start, end)| c == ci && (start..end).contains(&off))
    };
    per.fill(SinkHits::default());
    st.reset();
    // Decoded views only when some credential has a byte an escaper
    // may change (a typical key or JWT has none: no cost then).
    let mut views = View::for_bits(views_needed(creds.iter().map(|c| &c.value[..])));
    let mut open_runs = Vec::new();
    let outcome = decode_stream(
        ce,
        &resp.body.chunks,
        cfg.max_decompressed_bytes,
        &mut |block| {
            continue_runs(&mut open_runs, block, per);
            let base = st.position();
            matcher.feed_seeing_carry(st, block, &mut |i, off, before| {
                if protected(needles[i].cred, off) {
                    return;
                }
                let at = Around {
                    hay: block,
                    base,
                    before,
                };
                hit(
                    &needles[i],
                    creds,
                    off,
                    per,
                    false,
                    at,
                    Some(&mut open_runs),
                )
            });
            for v in &mut views {
                let enc = v.kind().encoding();
                v.feed(matcher, block, &mut |i, off| {
                    if !protected(needles[i].cred, off) {
                        view_hit(&needles[i], enc, off, per)
                    }
                });
            }
        },
    );
    for v in &mut views {
        let enc = v.kind().encoding();
        v.finish(matcher, &mut |i, off| {
            if !protected(needles[i].cred, off) {
                view_hit(&needles[i], enc, off, per)
            }
        });
    }
    outcome
}

/// The places of `resp`'s body where a credential found in it is its
/// protocol handing it back ([`extract::ProtocolEcho`]: the refresh token of
/// a refresh grant in the token response's `refresh_token`).  Empty, at no
/// cost, unless such a credential was found in the body of a response with
/// the status its protocol answers with.
fn protocol_echoes(
    resp: &Response,
    ce: ContentEncoding,
    creds: &[Credential],
    per: &[SinkHits],
) -> Vec<Protected> {
    let echoed = |(ci, c): (usize, &Credential)| {
        c.protocol_echo
            .filter(|e| e.status == resp.status && !per[ci].is_empty())
            .map(|e| (ci, e))
    };
    if !creds.iter().enumerate().any(|x| echoed(x).is_some()) {
        return Vec::new();
    }
    let ct = resp
        .header("content-type")
        .map(|v| String::from_utf8_lossy(v).to_ascii_lowercase())
        .unwrap_or_default();
    let format_fits = |e: &ProtocolEcho| match e.format {
        EchoFormat::Json => extract::is_json_media_type(&ct),
        // S3 says application/xml; some compatible stores text/xml.
        EchoFormat::S3ErrorXml => ct.contains("xml"),
    };
    let echoed = |x: (usize, &Credential)| echoed(x).filter(|(_, e)| format_fits(e));
    if !creds.iter().enumerate().any(|x| echoed(x).is_some()) {
        return Vec::new();
    }
    let mut data = Zeroizing::new(Vec::new());
    let outcome = decode_stream(ce, &resp.body.chunks, MAX_PROTOCOL_ECHO_BODY, &mut |b| {
        super::forms::reserve_zeroizing(&mut data, b.len());
        data.extend_from_slice(b);
    });
    if outcome.cap_hit || outcome.error.is_some() || resp.body.is_partial() {
        return Vec::new();
    }
    creds
        .iter()
        .enumerate()
        .filter_map(echoed)
        .filter_map(|(ci, echo)| {
            let (start, end) = extract::protocol_echo_span(&data, echo, &creds[ci].value)?;
            Some((ci, start as u64, end as u64))
        })
        .collect()
}

/// One log line, at most once a minute, when request bodies' decoding
/// stopped at its cap (`extract::MAX_DECODED_REQUEST_BODY`: a zip bomb);
/// each is counted in `sensor_http_parse_errors_total`.
fn log_request_decode(reason: &'static str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    if reason != extract::REQUEST_DECOMPRESS_CAP {
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    if now >= last + REQUEST_DECODE_LOG_EVERY_SECS
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            cap_bytes = extract::MAX_DECODED_REQUEST_BODY,
            "a request body's Content-Encoding decoded past the cap: read up to the cap only \
             (counted in sensor_http_parse_errors_total{{reason=\"{reason}\"}})"
        );
    }
}

/// Records a match of the plain needle `n` at body offset `off` in a
/// decoded view whose escapes are `enc` (other needles: nothing).  An
/// occurrence without escapes is found by the body's own search at the
/// same offset first, which keeps its label.
fn view_hit(n: &Needle, enc: Encoding, off: u64, per: &mut [SinkHits]) {
    if n.kind != NeedleKind::Full(Encoding::Plain) {
        return;
    }
    let h = &mut per[n.cred];
    if h.full.is_none_or(|(o, _)| off < o) {
        h.full = Some((off, enc));
    }
}

/// How far around a base64 match its run is examined, each way.
const BASE64_RUN_CONTEXT: usize = 4096;

/// Bytes of a base64 run that only one alphabet has, counted.
#[derive(Clone, Copy, Default)]
struct AlphabetVotes {
    /// `-` and `_`.
    url: usize,
    /// `+` and `/`.
    std: usize,
    /// The run ended at `=` after it (padding: the standard alphabet's
    /// habit; before a run, `=` is rather `name=`).
    padded: bool,
    /// The run ended at `.` on either side: a segment of a JWS/JWT or of a
    /// signed cookie (itsdangerous, Flask's session), base64url by their
    /// specifications.
    dotted: bool,
    /// Bytes of the run counted, and whether a walk stopped at its budget
    /// (the run's length is then unknown).
    len: usize,
    cut: bool,
}

impl AlphabetVotes {
    /// Counts the run's bytes in `bytes` (in the order the run is walked),
    /// at most `*left` of them; true when the run ended in `bytes` (a byte
    /// outside both alphabets, or the budget spent).
    fn count(&mut self, bytes: impl Iterator<Item = u8>, left: &mut usize, forward: bool) -> bool {
        for b in bytes {
            if *left == 0 {
                self.cut = true;
                return true;
            }
            if !(b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_')) {
                self.padded |= forward && b == b'=';
                self.dotted |= b == b'.';
                return true;
            }
            *left -= 1;
            self.len += 1;
            self.url += usize::from(matches!(b, b'-' | b'_'));
            self.std += usize::from(matches!(b, b'+' | b'/'));
        }
        false
    }

    /// `base64url` when the run has more bytes only it uses; when neither
    /// alphabet shows, `base64url` for an unpadded run between dots (a
    /// JWS/JWT segment, a signed cookie's payload) or one whose length
    /// shows padding was left out (base64url's habit, RFC 7515); else
    /// `base64`, the documented default (also for as many of each: such a
    /// run is rather a path or text than one blob).
    fn label(self) -> Encoding {
        let unpadded = !self.padded && !self.cut && !self.len.is_multiple_of(4);
        let tie_says_url = self.url == self.std && !self.padded && (self.dotted || unpadded);
        if self.url > self.std || tie_says_url {
            Encoding::Base64url
        } else {
            Encoding::Base64
        }
    }
}

/// Where a match was found, for the label of a base64 needle both
/// alphabets give: the searched bytes (the first at stream offset `base`)
/// and the bytes just before them (a stream's carry, else empty).
#[derive(Clone, Copy)]
struct Around<'a> {
    hay: &'a [u8],
    base: u64,
    before: &'a [u8],
}

/// A base64 run still open at the end of a body block: its label may
/// change with the bytes of the next.
struct OpenRun {
    cred: usize,
    off: u64,
    votes: AlphabetVotes,
    left: usize,
}

/// The label of a match of the `len`-byte needle at `off` from the base64
/// run around it (up to [`BASE64_RUN_CONTEXT`] bytes each way; before the
/// searched bytes, only as far as `before` goes), and whether the run goes
/// on past the end of the searched bytes.
fn run_votes(at: Around, off: u64, len: usize) -> (AlphabetVotes, bool) {
    // The needle is part of the run (its bytes are in both alphabets).
    let mut votes = AlphabetVotes {
        len,
        ..AlphabetVotes::default()
    };
    let mut left = BASE64_RUN_CONTEXT;
    // Before the match: in `hay`, then in `before`.
    let (in_hay, in_before) = match off.checked_sub(at.base) {
        Some(start) => (&at.hay[..start as usize], at.before),
        None => {
            let cut = at.before.len() - (at.base - off) as usize;
            (&at.hay[..0], &at.before[..cut])
        }
    };
    let back = in_hay.iter().rev().chain(in_before.iter().rev()).copied();
    votes.count(back, &mut left, false);
    let mut left = BASE64_RUN_CONTEXT;
    let end = ((off + len as u64 - at.base) as usize).min(at.hay.len());
    let ended = votes.count(at.hay[end..].iter().copied(), &mut left, true);
    (votes, !ended)
}

/// Records a match of `n` at `off` (see [`Around`]); a base64 run still
/// open at the end of `at.hay` goes to `open` when given.
fn hit(
    n: &Needle,
    creds: &[Credential],
    off: u64,
    per: &mut [SinkHits],
    decoded_view: bool,
    at: Around,
    open: Option<&mut Vec<OpenRun>>,
) {
    let h = &mut per[n.cred];
    match n.kind {
        NeedleKind::Full(enc) => {
            let enc = if n.either_alphabet {
                let (votes, still_open) = run_votes(at, off, n.len);
                if let (true, Some(open)) = (still_open, open) {
                    open.push(OpenRun {
                        cred: n.cred,
                        off,
                        votes,
                        left: BASE64_RUN_CONTEXT,
                    });
                }
                votes.label()
            } else {
                enc
            };
            let enc = if decoded_view && enc == Encoding::Plain {
                Encoding::Percent
            } else {
                enc
            };
            if h.full.is_none_or(|(o, _)| off < o) {
                h.full = Some((off, enc));
            }
        }
        NeedleKind::Partial(run_at) => {
            if diverges(creds[n.cred].value.as_slice(), run_at, at, off, n.len) {
                return;
            }
            if h.partial.is_none_or(|o| off < o) {
                h.partial = Some(off);
            }
        }
        NeedleKind::Masked => h.masked = true,
    }
}

/// Base64 runs open at the end of the last block, continued into `block`:
/// each match's label follows its run's votes; runs that end are dropped.
fn continue_runs(open: &mut Vec<OpenRun>, block: &[u8], per: &mut [SinkHits]) {
    open.retain_mut(|r| {
        let ended = r.votes.count(block.iter().copied(), &mut r.left, true);
        if let Some((off, enc)) = &mut per[r.cred].full {
            if *off == r.off && matches!(enc, Encoding::Base64 | Encoding::Base64url) {
                *enc = r.votes.label();
            }
        }
        !ended
    });
}

fn scan_one(
    m: &Matcher,
    needles: &[Needle],
    creds: &[Credential],
    hay: &[u8],
    per: &mut [SinkHits],
    decoded: bool,
) {
    let at = Around {
        hay,
        base: 0,
        before: &[],
    };
    m.find_in(hay, |i, off| {
        hit(&needles[i], creds, off, per, decoded, at, None)
    });
}

/// Bytes that may go on a token (letters, digits, `-_+/~`): a run of one
/// that goes on past where it stops matching is another value.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+' | b'/' | b'~')
}

impl Around<'_> {
    /// The byte at stream offset `pos`, if it is in view.
    fn byte_at(&self, pos: u64) -> Option<u8> {
        match pos.checked_sub(self.base) {
            Some(i) => self.hay.get(usize::try_from(i).ok()?).copied(),
            None => {
                let back = usize::try_from(self.base - pos).ok()?;
                let i = self.before.len().checked_sub(back)?;
                self.before.get(i).copied()
            }
        }
    }
}

/// Whether the leading (trailing) run of `value` matched at `off` is the
/// start (end) of *another* value: past the run, the bytes go on matching
/// `value` for a while, then differ at a byte that still belongs to a
/// token.  Tokens of one issuer share their first characters (AWS STS
/// session tokens, a Discord bot's id, a signed cookie's JSON re-issued
/// with new contents, a presigned URL's `Credential=ASIA…`), so a new one
/// matches a run of the old; an echo cut short ends at a quote, a space,
/// a mask or the end of the data.  Bytes out of view count as an end, and
/// so does a difference where the credential's own byte is not a token
/// byte (a newline or quote the echo may have escaped: `\n` ends in `n`).
fn diverges(value: &[u8], run_at: RunAt, at: Around, off: u64, len: usize) -> bool {
    match run_at {
        RunAt::Inner => false,
        RunAt::Head { end } => {
            let mut pos = off + len as u64;
            for &want in &value[end..] {
                match at.byte_at(pos) {
                    Some(b) if b == want => pos += 1,
                    Some(b) => return is_token_byte(b) && is_token_byte(want),
                    None => return false,
                }
            }
            false
        }
        RunAt::Tail { start } => {
            let mut pos = off;
            for &want in value[..start].iter().rev() {
                let Some(p) = pos.checked_sub(1) else {
                    return false;
                };
                match at.byte_at(p) {
                    Some(b) if b == want => pos = p,
                    Some(b) => return is_token_byte(b) && is_token_byte(want),
                    None => return false,
                }
            }
            false
        }
    }
}

/// `Set-Cookie` re-setting a cookie to the value the request sent in that
/// same cookie is a refresh, not a leak — whatever other source (a Bearer
/// token, a double-submit header) carried the value too, and whether the
/// value is set as sent or percent-decoded.
fn same_cookie_refresh(creds: &[Credential], set_cookie: &[u8], per: &mut [SinkHits]) {
    let first = set_cookie.split(|&b| b == b';').next().unwrap_or(b"");
    let Some(eq) = first.iter().position(|&b| b == b'=') else {
        return;
    };
    let name = String::from_utf8_lossy(&first[..eq]).trim().to_string();
    let mut value = first[eq + 1..].trim_ascii();
    if value.len() >= 2 && value[0] == b'"' && value[value.len() - 1] == b'"' {
        value = &value[1..value.len() - 1];
    }
    let decoded = value
        .contains(&b'%')
        .then(|| Zeroizing::new(url_decode(value, false)));
    for (ci, c) in creds.iter().enumerate() {
        // Every cookie that carried the value, a cookie credential's own
        // included (extraction notes them all).
        let sent_in_this_cookie = c
            .sent_as_cookies
            .iter()
            .any(|n| n.eq_ignore_ascii_case(&name));
        let is_set = |v: &[u8]| v == value || decoded.as_ref().is_some_and(|d| v == &d[..]);
        let same_value =
            is_set(&c.value) || c.percent_decoded.as_deref().is_some_and(|d| is_set(d));
        if sent_in_this_cookie && same_value {
            per[ci] = SinkHits::default();
        }
    }
}

/// Unmasked runs that make a partial exposure: the leading and trailing run of
/// max(`partial_min_chars`, shared prefix + max(8, shared prefix)) chars — or
/// 50 % of the value when that is shorter — but never the whole value, and
/// only when the part beyond the prefix is random enough; plus a JWT's
/// signature alone.  A JWT's leading run goes on to the 8th character of its
/// signature: its header segment (and often the start of its payload) is
/// the same in every token of its issuer, so a new token (a refresh, an
/// id_token) would match a shorter one; only runs that reach into the
/// signature, the part unique to the token, count.
/// Each is handed to `out` (slices of the value, nothing copied).
fn partial_runs(c: &Credential, cfg: &LeakConfig, mut out: impl FnMut(&[u8], RunAt)) {
    let v = &c.value[..];
    if c.kind == CredentialType::BasicCredentials {
        // Its secret part is the `basic_password` credential; runs of the pair
        // would only repeat that finding or point at the (public) username.
        return;
    }
    let half = v.len().div_ceil(2);
    let base = cfg.partial_min_chars.min(half).max(1);
    // A run is never mostly a prefix every token of its kind shares.
    let prefix = c.vendor_prefix_len.max(label_prefix_len(v));
    let len = base.max(prefix + PARTIAL_MIN_SECRET_CHARS.max(prefix));
    if len < v.len() {
        let head = match c.jwt_signature {
            // Header and payload, then enough of the signature: a token
            // echoed cut short.
            Some((s, _)) => &v[..(s + PARTIAL_MIN_SECRET_CHARS).min(v.len())],
            None => &v[..len],
        };
        if head.len() < v.len() && entropy(&head[prefix.min(head.len())..]) >= PARTIAL_MIN_ENTROPY {
            out(head, RunAt::Head { end: head.len() });
        }
        // A JWT's tail ends in its signature.
        let tail = &v[v.len() - len..];
        if entropy(tail) >= PARTIAL_MIN_ENTROPY {
            out(
                tail,
                RunAt::Tail {
                    start: v.len() - len,
                },
            );
        }
    }
    if let Some((s, e)) = c.jwt_signature {
        if e - s >= cfg.min_length {
            out(&v[s..e], RunAt::Inner);
        }
    }
}

/// Most letter segments a label prefix has (`sk-proj-`, `myco_live_key_`).
const MAX_LABEL_SEGMENTS: usize = 3;
/// Longest label segment, separator excluded.
const MAX_LABEL_SEGMENT: usize = 10;

/// Length of a leading label like a vendor's (`sk-proj-`, `myco_live_`):
/// up to [`MAX_LABEL_SEGMENTS`] runs of letters each ended by `_` or `-`,
/// which tokens of one issuer share whether or not the prefix is known
/// ([`extract::VENDOR_PREFIXES`]).
fn label_prefix_len(v: &[u8]) -> usize {
    let mut len = 0;
    for _ in 0..MAX_LABEL_SEGMENTS {
        let rest = &v[len..];
        let letters = rest
            .iter()
            .take(MAX_LABEL_SEGMENT + 1)
            .take_while(|b| b.is_ascii_alphabetic())
            .count();
        if letters == 0 || letters > MAX_LABEL_SEGMENT {
            break;
        }
        match rest.get(letters) {
            Some(b'_' | b'-') if letters + 1 < rest.len() => len += letters + 1,
            _ => break,
        }
    }
    len
}

/// Masked echoes: `****`+last4 (any vendor prefix before it), first4+`…`/`...`/`***`,
/// each handed to `out` as its two halves.
fn masked_forms(c: &Credential, mut out: impl FnMut(&[u8], &[u8])) {
    let v = &c.value[..];
    if v.len() < 12 {
        return; // first/last 4 of a short value say too much to call it masked
    }
    let last4 = &v[v.len() - 4..];
    let first4 = &v[..4];
    for mask in [
        &b"***"[..],
        "\u{2022}\u{2022}\u{2022}".as_bytes(),
        b"xxxx",
        "\u{2026}".as_bytes(),
        b"...",
    ] {
        for (a, b) in [(mask, last4), (first4, mask)] {
            out(a, b);
        }
    }
}

/// Path with every query value redacted; keys kept, values (and bare entries,
/// which may themselves be secrets) never.  Path (matrix) parameters'
/// values too: `/shop;jsessionid=<redacted>`.
pub fn redact_target(target: &str) -> String {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let path = path.split('#').next().unwrap_or("");
    let mut out = String::with_capacity(target.len().min(2048));
    redact_matrix_params(path, &mut out);
    if let Some(q) = query {
        out.push('?');
        let q = q.split('#').next().unwrap_or("");
        for (i, part) in q.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match part.split_once('=') {
                Some((k, _)) => {
                    out.push_str(k);
                    out.push_str("=<redacted>");
                }
                None if part.is_empty() => {}
                None => out.push_str("<redacted>"),
            }
        }
    }
    out
}

/// `path` onto `out`, the value of each `;name=value` path parameter
/// replaced by `<redacted>` (a servlet's `;jsessionid=`).
fn redact_matrix_params(path: &str, out: &mut String) {
    let Some(first) = path.find(';') else {
        out.push_str(path);
        return;
    };
    out.push_str(&path[..first]);
    for (i, piece) in path[first..].split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        let mut params = piece.split(';');
        out.push_str(params.next().unwrap_or(""));
        for p in params {
            out.push(';');
            match p.split_once('=') {
                Some((k, _)) => {
                    out.push_str(k);
                    out.push_str("=<redacted>");
                }
                None => out.push_str(p),
            }
        }
    }
}
