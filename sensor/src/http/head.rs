//! Heads: finding where one ends, parsing it with httparse, and what it says
//! about the body that follows (RFC 9112 §6.3).

use std::mem::MaybeUninit;

use bytes::BytesMut;

use super::decode::{Chunked, Decoder};
use super::error::ParseErrorReason;
use super::types::{lower_case_names, HeaderSpan, Headers, Request, Response};

/// httparse needs its header slots up front; `max_headers` is clamped to this.
pub const HARD_MAX_HEADERS: usize = 512;

/// What the first bytes of a stream (or of a line, when resynchronising) look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sniff {
    Request,
    Response,
    Http2,
    NotHttp,
    NeedMore,
}

const PREFACE: &[u8] = b"PRI * HTTP/2";
/// Bytes of a stream's start enough to tell what it is.
pub(crate) const SNIFF_LEN: usize = 16;

fn is_tchar(b: u8) -> bool {
    matches!(b, b'!' | b'#'..=b'\'' | b'*' | b'+' | b'-' | b'.' | b'^'..=b'`' | b'|' | b'~')
        || b.is_ascii_alphanumeric()
}

fn prefix_of(have: &[u8], of: &[u8]) -> bool {
    let n = have.len().min(of.len());
    have[..n] == of[..n]
}

/// Loose look at the start of a message: a token then a space (request) or `HTTP/`.
pub(crate) fn sniff(p: &[u8]) -> Sniff {
    if p.is_empty() {
        return Sniff::NeedMore;
    }
    if prefix_of(p, PREFACE) {
        return if p.len() >= PREFACE.len() {
            Sniff::Http2
        } else {
            Sniff::NeedMore
        };
    }
    if prefix_of(p, b"HTTP/") {
        return if p.len() >= 5 {
            Sniff::Response
        } else {
            Sniff::NeedMore
        };
    }
    for (i, &b) in p.iter().enumerate() {
        if b == b' ' {
            return if i > 0 {
                Sniff::Request
            } else {
                Sniff::NotHttp
            };
        }
        if !is_tchar(b) {
            return Sniff::NotHttp;
        }
    }
    if p.len() >= SNIFF_LEN {
        Sniff::NotHttp
    } else {
        Sniff::NeedMore
    }
}

const RESYNC_METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"PATCH ",
    b"HEAD ",
    b"OPTIONS ",
    b"CONNECT ",
    b"TRACE ",
];

/// Strict look at a line start after a capture hole: only well-known methods
/// followed by a plausible target, or `HTTP/1.x NNN`.  Being strict keeps body
/// text from being taken for a message start.
pub(crate) fn resync_candidate(p: &[u8], want_request: bool, want_response: bool) -> Sniff {
    let mut need_more = false;
    if want_request {
        for m in RESYNC_METHODS {
            if p.len() > m.len() {
                if p.starts_with(m) {
                    let t = p[m.len()];
                    let ok = t == b'/' || t == b'*' || t.is_ascii_alphanumeric();
                    if ok {
                        return Sniff::Request;
                    }
                }
            } else if prefix_of(p, m) {
                need_more = true;
            }
        }
    }
    if want_response {
        const PAT_LEN: usize = 12; // "HTTP/1.1 200"
        let shape = |i: usize, b: u8| match i {
            0..=6 => b == b"HTTP/1."[i],
            7 => b == b'0' || b == b'1',
            8 => b == b' ',
            _ => b.is_ascii_digit(),
        };
        let n = p.len().min(PAT_LEN);
        if p[..n].iter().enumerate().all(|(i, &b)| shape(i, b)) {
            if n == PAT_LEN {
                return Sniff::Response;
            }
            need_more = true;
        }
    }
    if need_more {
        Sniff::NeedMore
    } else {
        Sniff::NotHttp
    }
}

/// Where the head ends: the index in `data` just past the empty line, if it is
/// there.  `tail` is the head buffered so far (its last bytes may begin the
/// empty line).  The head's first line is never empty (leading CR/LF are skipped).
///
/// The empty line is the first `\n\n` or `\n\r\n`: found with two SIMD
/// substring searches rather than by stopping at every line's `\n` (which
/// cost ~7 % of the pipeline, a `memchr` restart per header line).
pub(crate) fn find_head_end(tail: &[u8], data: &[u8]) -> Option<usize> {
    static LF_CRLF: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\n\r\n"));
    static LF_LF: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\n\n"));
    // An empty line that begins in `tail`: its `\n` is data[0] or data[1].
    let before = |i: usize, k: usize| -> Option<u8> {
        // byte k positions before data[i], looking into `tail` if needed
        if i >= k {
            Some(data[i - k])
        } else {
            let back = k - i;
            tail.len().checked_sub(back).map(|j| tail[j])
        }
    };
    for i in memchr::memchr_iter(b'\n', &data[..data.len().min(2)]) {
        match before(i, 1) {
            Some(b'\n') => return Some(i + 1),
            Some(b'\r') if before(i, 2) == Some(b'\n') => return Some(i + 1),
            _ => {}
        }
    }
    // Wholly in `data`: the earlier of the two forms.
    let crlf_end = LF_CRLF.find(data).map(|p| p + 3);
    let lf_end = LF_LF
        .find(&data[..crlf_end.unwrap_or(data.len())])
        .map(|p| p + 2);
    match (lf_end, crlf_end) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether a complete start line (ending in `\n`, no headers yet) parses.
pub(crate) fn start_line_valid(line: &[u8], request: bool) -> bool {
    let mut none: [httparse::Header<'_>; 0] = [];
    if request {
        let mut req = httparse::Request::new(&mut none);
        httparse::ParserConfig::default()
            .allow_multiple_spaces_in_request_line_delimiters(true)
            .parse_request(&mut req, line)
            .is_ok()
    } else {
        let mut resp = httparse::Response::new(&mut none);
        httparse::ParserConfig::default()
            .allow_multiple_spaces_in_response_status_delimiters(true)
            .parse_response(&mut resp, line)
            .is_ok()
    }
}

/// Body framing a head announces.
#[derive(Debug)]
pub(crate) struct Framing {
    pub decoder: Decoder,
}

fn version_str(v: Option<u8>) -> &'static str {
    match v {
        Some(0) => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

fn map_err(e: httparse::Error, too_many: bool, kind: ParseErrorReason) -> ParseErrorReason {
    match e {
        httparse::Error::TooManyHeaders if too_many => ParseErrorReason::TooManyHeaders,
        _ => kind,
    }
}

/// Where httparse found each header, as offsets into `head` (which every
/// slice it returned points into).
fn spans_of(head: &[u8], parsed: &[httparse::Header<'_>]) -> Vec<HeaderSpan> {
    let base = head.as_ptr() as usize;
    let at = |p: *const u8| (p as usize - base) as u32;
    parsed
        .iter()
        .map(|h| HeaderSpan {
            name_at: at(h.name.as_ptr()),
            name_len: h.name.len() as u32,
            value_at: at(h.value.as_ptr()),
            value_len: h.value.len() as u32,
        })
        .collect()
}

/// The head's headers, names lower-cased in the head itself.
fn headers_of(mut head: BytesMut, spans: Vec<HeaderSpan>) -> Headers {
    lower_case_names(&mut head, &spans);
    Headers::from_spans(head.freeze(), spans)
}

fn trim(v: &[u8]) -> &[u8] {
    let s = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let e = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(s, |e| e + 1);
    &v[s..e.max(s)]
}

/// All Content-Length values (headers and comma lists) must be the same number.
fn content_length(headers: &Headers) -> Result<Option<u64>, ParseErrorReason> {
    let mut found: Option<u64> = None;
    for value in headers.get_all("content-length") {
        for part in value.split(|&b| b == b',') {
            let part = trim(part);
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Err(ParseErrorReason::InvalidContentLength);
            }
            let n = part.iter().fold(0u64, |n, &d| n * 10 + (d - b'0') as u64);
            if found.is_some_and(|f| f != n) {
                return Err(ParseErrorReason::InvalidContentLength);
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// Some(is the last coding chunked) when Transfer-Encoding is present.
fn transfer_chunked(headers: &Headers) -> Option<bool> {
    let mut last: Option<&[u8]> = None;
    for value in headers.get_all("transfer-encoding") {
        for part in value.split(|&b| b == b',') {
            let part = trim(part);
            if !part.is_empty() {
                last = Some(part);
            }
        }
        last.get_or_insert(b"");
    }
    last.map(|l| l.eq_ignore_ascii_case(b"chunked"))
}

/// Header slots for httparse, left uninitialised: zeroing 512 of them (16 KiB)
/// per head was the single largest cost of the live pipeline.
fn uninit_slots<'b>() -> [MaybeUninit<httparse::Header<'b>>; HARD_MAX_HEADERS] {
    [const { MaybeUninit::uninit() }; HARD_MAX_HEADERS]
}

/// Parses a complete request head (`head` ends with its empty line).
pub(crate) fn parse_request(
    head: BytesMut,
    max_headers: usize,
) -> Result<(Request, Framing), ParseErrorReason> {
    let mut slots = uninit_slots();
    let n = max_headers.min(HARD_MAX_HEADERS);
    let mut req = httparse::Request::new(&mut []);
    let bad = ParseErrorReason::InvalidRequest;
    match httparse::ParserConfig::default()
        .allow_multiple_spaces_in_request_line_delimiters(true)
        .parse_request_with_uninit_headers(&mut req, &head, &mut slots[..n])
    {
        Ok(httparse::Status::Complete(len)) if len == head.len() => {}
        Ok(_) => return Err(bad),
        Err(e) => return Err(map_err(e, true, bad)),
    }
    let spans = spans_of(&head, req.headers);
    let method = req.method.unwrap_or_default().to_owned();
    let target = req.path.unwrap_or_default().to_owned();
    let version = version_str(req.version);
    let headers = headers_of(head, spans);
    let decoder = match transfer_chunked(&headers) {
        Some(true) => Decoder::Chunked(Chunked::new()),
        // A request body cannot be delimited by close (RFC 9112 §6.3 rule 4).
        Some(false) => return Err(bad),
        None => Decoder::Length(content_length(&headers)?.unwrap_or(0)),
    };
    let request = Request {
        method,
        target,
        version,
        headers,
        body: Default::default(),
    };
    Ok((request, Framing { decoder }))
}

/// The fields of a chunked body's trailer section (`section`: its lines as
/// they came), kept as a head's are, or None when there are none or they do
/// not parse: the body is complete either way, and a trailer is no reason
/// to drop the exchange.
pub(crate) fn trailer_fields(section: &[u8], max_headers: usize) -> Option<Headers> {
    if section.is_empty() {
        return None;
    }
    let mut block = BytesMut::with_capacity(section.len() + 2);
    block.extend_from_slice(section);
    block.extend_from_slice(b"\r\n");
    let mut fields = vec![httparse::EMPTY_HEADER; max_headers.min(HARD_MAX_HEADERS)];
    let spans = match httparse::parse_headers(&block, &mut fields) {
        Ok(httparse::Status::Complete((_, parsed))) => spans_of(&block, parsed),
        _ => return None,
    };
    Some(headers_of(block, spans))
}

/// Parses a complete response head; `request_method` is the method of the
/// request it answers (None when there is none).
pub(crate) fn parse_response(
    head: BytesMut,
    max_headers: usize,
    request_method: Option<&str>,
) -> Result<(Response, Framing), ParseErrorReason> {
    let mut slots = uninit_slots();
    let n = max_headers.min(HARD_MAX_HEADERS);
    let mut resp = httparse::Response::new(&mut []);
    let bad = ParseErrorReason::InvalidResponse;
    match httparse::ParserConfig::default()
        .allow_spaces_after_header_name_in_responses(true)
        .allow_obsolete_multiline_headers_in_responses(true)
        .allow_multiple_spaces_in_response_status_delimiters(true)
        .parse_response_with_uninit_headers(&mut resp, &head, &mut slots[..n])
    {
        Ok(httparse::Status::Complete(len)) if len == head.len() => {}
        Ok(_) => return Err(bad),
        Err(e) => return Err(map_err(e, true, bad)),
    }
    let status = resp.code.unwrap_or(0);
    let version = resp.version;
    let spans = spans_of(&head, resp.headers);
    let headers = headers_of(head, spans);
    let no_body = (100..200).contains(&status)
        || status == 204
        || status == 304
        || request_method == Some("HEAD")
        || (request_method == Some("CONNECT") && (200..300).contains(&status));
    let decoder = if no_body {
        Decoder::Length(0)
    } else {
        match transfer_chunked(&headers) {
            Some(true) => Decoder::Chunked(Chunked::new()),
            Some(false) => Decoder::Eof,
            None => match content_length(&headers)? {
                Some(n) => Decoder::Length(n),
                None => Decoder::Eof,
            },
        }
    };
    let response = Response {
        status,
        version: version_str(version),
        headers,
        body: Default::default(),
    };
    Ok((response, Framing { decoder }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_table() {
        let cases: &[(&[u8], Sniff)] = &[
            (b"GET / HTTP/1.1", Sniff::Request),
            (b"G", Sniff::NeedMore),
            (b"HTTP/1.1 200 OK", Sniff::Response),
            (b"HTT", Sniff::NeedMore),
            (b"PRI * HTTP/2.0\r\n", Sniff::Http2),
            (b"PRI * HT", Sniff::NeedMore),
            (b"PRI /x HTTP/1.1", Sniff::Request),
            (b"\x16\x03\x01\x02", Sniff::NotHttp),
            (b" GET", Sniff::NotHttp),
            (b"ABCDEFGHIJKLMNOP", Sniff::NotHttp),
            (b"ABCDEFGHIJKLMNO", Sniff::NeedMore),
        ];
        for (p, want) in cases {
            assert_eq!(sniff(p), *want, "{:?}", String::from_utf8_lossy(p));
        }
    }

    #[test]
    fn resync_table() {
        let cases: &[(&[u8], bool, bool, Sniff)] = &[
            (b"GET /x HTTP/1.1", true, false, Sniff::Request),
            (b"GET /x HTTP/1.1", false, true, Sniff::NotHttp),
            (b"GE", true, false, Sniff::NeedMore),
            (b"GET", true, false, Sniff::NeedMore),
            (b"GET ", true, false, Sniff::NeedMore),
            (b"GET  ", true, false, Sniff::NotHttp),
            (b"FOO / HTTP/1.1", true, true, Sniff::NotHttp),
            (b"HTTP/1.1 200 OK", false, true, Sniff::Response),
            (b"HTTP/1.1 20", false, true, Sniff::NeedMore),
            (b"HTTP/2 200 OK", false, true, Sniff::NotHttp),
            (b"HTTP/1.1 2x0", false, true, Sniff::NotHttp),
        ];
        for (p, rq, rs, want) in cases {
            assert_eq!(
                resync_candidate(p, *rq, *rs),
                *want,
                "{:?}",
                String::from_utf8_lossy(p)
            );
        }
    }

    #[test]
    fn start_lines() {
        assert!(start_line_valid(b"GET /x HTTP/1.1\r\n", true));
        assert!(start_line_valid(b"GET /x HTTP/1.0\n", true));
        assert!(!start_line_valid(b"220 smtp.example ESMTP\r\n", true));
        assert!(!start_line_valid(b"GET /x HTTP/2.0\r\n", true));
        assert!(start_line_valid(b"HTTP/1.1 200 OK\r\n", false));
        assert!(start_line_valid(b"HTTP/1.1 200\r\n", false));
        assert!(!start_line_valid(b"HTTP/1.1 2000 OK\r\n", false));
    }

    /// The definition: the first `\n` that ends an empty line.
    fn head_end_by_definition(tail: &[u8], data: &[u8]) -> Option<usize> {
        let all: Vec<u8> = tail.iter().chain(data).copied().collect();
        (tail.len()..all.len()).find_map(|j| {
            let ends = all[j] == b'\n'
                && (j >= 1 && all[j - 1] == b'\n'
                    || j >= 2 && all[j - 1] == b'\r' && all[j - 2] == b'\n');
            ends.then_some(j + 1 - tail.len())
        })
    }

    #[test]
    fn head_end_is_the_definition_at_every_split() {
        let samples: [&[u8]; 6] = [
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody\n\nmore",
            b"HTTP/1.1 200 OK\nA: b\n\nrest\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: b\n\r\nx",
            b"POST / HTTP/1.1\r\nA: b\r\nB: \r\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: \n\n\r\n\r\n",
            b"GET / HTTP/1.1\r\nno end\r\n\r",
        ];
        for s in samples {
            for cut in 1..s.len() {
                let (tail, data) = s.split_at(cut);
                assert_eq!(
                    find_head_end(tail, data),
                    head_end_by_definition(tail, data),
                    "{:?} | {:?}",
                    String::from_utf8_lossy(tail),
                    String::from_utf8_lossy(data)
                );
            }
        }
        // Random bytes over a small alphabet full of CR and LF.
        let mut rng = crate::test_rng::XorShift::new(0x2545_f491_4f6c_dd1d);
        for _ in 0..20_000 {
            let mut buf = Vec::new();
            let x = rng.next_u64();
            let len = (x % 24) as usize;
            for k in 0..len {
                buf.push(b"\r\nab"[((x >> (2 * k % 60)) & 3) as usize]);
            }
            let cut = ((x >> 40) as usize % (len + 1)).max(1).min(len.max(1));
            let (tail, data) = buf.split_at(cut.min(buf.len()));
            // The first line is never empty: tails start with a byte of text.
            let tail: Vec<u8> = [&b"G"[..], tail].concat();
            assert_eq!(
                find_head_end(&tail, data),
                head_end_by_definition(&tail, data),
                "{tail:?} | {data:?}"
            );
        }
    }

    #[test]
    fn head_end() {
        assert_eq!(find_head_end(b"", b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(find_head_end(b"", b"GET / HTTP/1.1\n\nrest"), Some(16));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n", b"\r\nx"), Some(2));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r", b"\nx"), Some(1));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r", b"\n\r\n"), Some(3));
        assert_eq!(
            find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n", b"B: c\r\n"),
            None
        );
    }

    #[test]
    fn content_length_rules() {
        let h = |vals: &[&str]| Headers::from_pairs(vals.iter().map(|v| ("Content-Length", v)));
        assert_eq!(content_length(&h(&["5"])), Ok(Some(5)));
        assert_eq!(content_length(&h(&[" 5 , 5"])), Ok(Some(5)));
        assert_eq!(content_length(&h(&["5", "5"])), Ok(Some(5)));
        assert_eq!(content_length(&h(&[])), Ok(None));
        assert_eq!(
            content_length(&h(&["18446744073709551615"])),
            Err(ParseErrorReason::InvalidContentLength)
        );
        assert_eq!(
            content_length(&h(&["9999999999999999999"])),
            Ok(Some(9_999_999_999_999_999_999))
        );
        for bad in [&["5", "6"][..], &["-1"], &["5,6"], &[""], &["0x5"], &["+5"]] {
            assert_eq!(
                content_length(&h(bad)),
                Err(ParseErrorReason::InvalidContentLength),
                "{bad:?}"
            );
        }
    }
}
