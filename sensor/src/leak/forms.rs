//! The forms a credential can take in a response (contract: `sink.encoding`):
//! each function returns the byte strings to search for, deduplicated by the
//! caller.  A form identical to the plain value is not produced.

use zeroize::Zeroizing;

use crate::finding::Encoding;

/// Shortest base64 inner run worth searching (shorter runs match random blobs).
pub const MIN_BASE64_NEEDLE: usize = 8;

fn is_unreserved(b: u8) -> bool {
    UNRESERVED[usize::from(b)]
}

/// Bytes percent-encoding leaves as they are (RFC 3986 unreserved).
static UNRESERVED: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        i += 1;
    }
    t
};

/// Makes room for `extra` more bytes in `buf` without leaving its contents
/// in freed memory: a buffer that must grow is copied into a larger one and
/// the old one zeroized before it is freed.  (Credential forms are written
/// into such buffers.)
pub fn reserve_zeroizing(buf: &mut Vec<u8>, extra: usize) {
    if buf.capacity() - buf.len() >= extra {
        return;
    }
    let mut bigger = Vec::with_capacity((buf.len() + extra).max(2 * buf.capacity()));
    bigger.extend_from_slice(buf);
    zeroize::Zeroize::zeroize(buf);
    *buf = bigger;
}

/// Most bytes one byte of a value takes in any form (`&#x27;`, `\u005f`).
const MAX_EXPANSION: usize = 6;

/// Writes every full-value form of `v` other than the plain value into
/// `out`, one after the other, in the order of preference when two forms
/// coincide: after each, `done(out, start, encoding)` with the form at
/// `out[start..]` (it may keep it or truncate it away).  No form is written
/// for an encoding that cannot change `v`.  Forms may repeat (the caller
/// deduplicates); growing `out` never leaves a copy behind
/// ([`reserve_zeroizing`]).
pub fn write_forms(
    v: &[u8],
    out: &mut Vec<u8>,
    mut done: impl FnMut(&mut Vec<u8>, usize, Encoding),
) {
    percent_into(v, out, &mut done);
    json_escaped_into(v, out, &mut done);
    html_entity_into(v, out, &mut done);
    base64_inner_into(v, out, &mut done);
}

type Done<'a> = &'a mut dyn FnMut(&mut Vec<u8>, usize, Encoding);

fn percent_into(v: &[u8], out: &mut Vec<u8>, done: Done) {
    if v.iter().fold(true, |all, &b| all & is_unreserved(b)) {
        return; // every form is the value itself
    }
    for (upper, plus) in [(true, false), (false, false), (true, true), (false, true)] {
        reserve_zeroizing(out, 3 * v.len());
        let start = out.len();
        for &b in v {
            if is_unreserved(b) {
                out.push(b);
            } else if plus && b == b' ' {
                out.push(b'+');
            } else {
                out.push(b'%');
                push_hex(out, b, upper);
            }
        }
        done(out, start, Encoding::Percent);
    }
}

/// Bytes some JSON-escaping variant changes: control bytes and ASCII punctuation.
/// Bit 0: a byte some JSON-escaping variant changes (control bytes and
/// ASCII punctuation); bit 1: one the minimal escaping changes (control
/// bytes, `"`, `\\`, `/`).
static JSON_ESCAPABLE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        if b <= 0x1f || b.is_ascii_punctuation() {
            t[i] |= 1;
        }
        if b <= 0x1f || matches!(b, b'"' | b'\\' | b'/') {
            t[i] |= 2;
        }
        i += 1;
    }
    t
};

fn json_escaped_into(v: &[u8], out: &mut Vec<u8>, done: Done) {
    let escapable = |b: u8| JSON_ESCAPABLE[usize::from(b)] & 1 != 0;
    // Both questions in one pass without a branch per byte.
    let kinds = v
        .iter()
        .fold(0u8, |k, &b| k | JSON_ESCAPABLE[usize::from(b)]);
    if kinds & 1 == 0 {
        return; // `"`, `\\`, `/` are punctuation: every form is the value itself
    }
    // Variants 0 and 1 escape only these (and control bytes).
    let minimal = kinds & 2 != 0;
    for variant in 0..4 {
        if variant < 2 && !minimal {
            continue; // the value itself
        }
        reserve_zeroizing(out, MAX_EXPANSION * v.len());
        let start = out.len();
        for &b in v {
            if !escapable(b) {
                out.push(b);
                continue;
            }
            let u = |s: &mut Vec<u8>, upper: bool| {
                s.extend_from_slice(b"\\u00");
                push_hex(s, b, upper);
            };
            match b {
                b'"' if variant < 2 => out.extend_from_slice(b"\\\""),
                b'\\' if variant < 2 => out.extend_from_slice(b"\\\\"),
                b'/' if variant == 1 => out.extend_from_slice(b"\\/"),
                0..=0x1f => u(out, variant == 3),
                _ if variant >= 2 => u(out, variant == 3),
                _ => out.push(b),
            }
        }
        done(out, start, Encoding::JsonEscaped);
    }
}

/// The named entity of the five characters every HTML escaper names
/// (Python `html.escape`, Jinja; `&#39;` for the apostrophe), if `b` is one.
fn html_named(b: u8) -> Option<&'static [u8]> {
    match b {
        b'&' => Some(b"&amp;"),
        b'<' => Some(b"&lt;"),
        b'>' => Some(b"&gt;"),
        b'"' => Some(b"&quot;"),
        b'\'' => Some(b"&#39;"),
        _ => None,
    }
}

/// Bytes some HTML-escaping variant changes.
static HTML_SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let specials = b"&<>\"'=/+`";
    let mut i = 0;
    while i < specials.len() {
        t[specials[i] as usize] = true;
        i += 1;
    }
    t
};

fn html_entity_into(v: &[u8], out: &mut Vec<u8>, done: Done) {
    if !v
        .iter()
        .fold(false, |any, &b| any | HTML_SPECIAL[usize::from(b)])
    {
        return; // nothing any variant escapes: every form is the value itself
    }
    for variant in 0..5 {
        reserve_zeroizing(out, MAX_EXPANSION * v.len());
        let start = out.len();
        for &b in v {
            let named = html_named(b);
            let special = named.is_some() || matches!(b, b'=' | b'/' | b'+' | b'`');
            match variant {
                // Named for the five (Python html.escape, Jinja), others raw.
                0 => out.extend_from_slice(named.unwrap_or(std::slice::from_ref(&b))),
                // Python's html.escape writes the apostrophe as &#x27;.
                4 if b == b'\'' => out.extend_from_slice(b"&#x27;"),
                4 => out.extend_from_slice(named.unwrap_or(std::slice::from_ref(&b))),
                1 if special => {
                    // `&#{b};`: the specials are ASCII, two or three digits.
                    out.extend_from_slice(b"&#");
                    if b >= 100 {
                        out.push(b'0' + b / 100);
                    }
                    out.push(b'0' + b / 10 % 10);
                    out.push(b'0' + b % 10);
                    out.push(b';');
                }
                2 | 3 if special => {
                    // `&#x{b:X};` / `&#x{b:x};`: no leading zero.
                    out.extend_from_slice(b"&#x");
                    let digits: &[u8; 16] = if variant == 2 {
                        b"0123456789ABCDEF"
                    } else {
                        b"0123456789abcdef"
                    };
                    if b >= 16 {
                        out.push(digits[usize::from(b >> 4)]);
                    }
                    out.push(digits[usize::from(b & 0xf)]);
                    out.push(b';');
                }
                _ => out.push(b),
            }
        }
        done(out, start, Encoding::HtmlEntity);
    }
}

const BASE64_STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BASE64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Writes the inner base64 characters of `v` at the three byte alignments,
/// standard alphabet first, then base64url (see [`base64_inner`]).
fn base64_inner_into(v: &[u8], out: &mut Vec<u8>, done: Done) {
    for (alphabet, enc) in [
        (BASE64_STD, Encoding::Base64),
        (BASE64_URL, Encoding::Base64url),
    ] {
        for align in 0..3usize {
            // The characters whose six bits all come from `v`, after `align`
            // bytes of a larger blob: `first..last` of that blob's encoding.
            let first = (8 * align).div_ceil(6);
            let last = (8 * (align + v.len())) / 6;
            if last <= first || last - first < MIN_BASE64_NEEDLE {
                continue;
            }
            reserve_zeroizing(out, last - first);
            let start = out.len();
            push_base64_inner(v, align, alphabet, out);
            debug_assert_eq!(out.len() - start, last - first);
            done(out, start, enc);
        }
    }
}

/// The base64 characters of `v` after `align` (0–2) bytes of a larger blob
/// whose six bits all come from `v` (`v` is at least three bytes long).
fn push_base64_inner(v: &[u8], align: usize, alphabet: &[u8; 64], out: &mut Vec<u8>) {
    let quad = |a: u8, b: u8, c: u8| {
        let x = u32::from(a) << 16 | u32::from(b) << 8 | u32::from(c);
        [
            alphabet[(x >> 18) as usize & 63],
            alphabet[(x >> 12) as usize & 63],
            alphabet[(x >> 6) as usize & 63],
            alphabet[x as usize & 63],
        ]
    };
    // The first group holds `align` bytes of the blob: its first
    // `ceil(8 * align / 6)` characters are not all `v`'s.
    let (skip, rest) = match align {
        0 => (0, v),
        _ => ((8 * align).div_ceil(6), &v[3 - align..]),
    };
    let groups = rest.chunks_exact(3);
    let tail = groups.remainder();
    // A last byte gives one whole character, two bytes give two.
    let n = (4 - skip) % 4 + 4 * groups.len() + tail.len();
    let start = out.len();
    out.resize(start + n, 0);
    let dst = &mut out[start..];
    let (head, dst) = dst.split_at_mut((4 - skip) % 4);
    if align > 0 {
        let mut g = [0u8; 3];
        g[align..].copy_from_slice(&v[..3 - align]);
        head.copy_from_slice(&quad(g[0], g[1], g[2])[skip..]);
    }
    let (body, end) = dst.split_at_mut(4 * groups.len());
    for (g, d) in groups.zip(body.chunks_exact_mut(4)) {
        d.copy_from_slice(&quad(g[0], g[1], g[2]));
    }
    match *tail {
        [a] => end[0] = alphabet[usize::from(a >> 2)],
        [a, b] => {
            let x = usize::from(a) << 8 | usize::from(b);
            end[0] = alphabet[x >> 10];
            end[1] = alphabet[(x >> 4) & 63];
        }
        _ => {}
    }
}

/// The forms one writer gives, distinct and other than the plain value.
fn collect(
    v: &[u8],
    plain_excluded: bool,
    write: impl FnOnce(&[u8], &mut Vec<u8>, Done),
    only: Option<Encoding>,
) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut buf = Zeroizing::new(Vec::new());
    write(
        v,
        &mut buf,
        &mut |buf: &mut Vec<u8>, start: usize, enc: Encoding| {
            let s = &buf[start..];
            if only.is_none_or(|o| o == enc)
                && !(plain_excluded && s == v)
                && !out.iter().any(|x| x[..] == s[..])
            {
                out.push(s.to_vec());
            }
            buf.truncate(start);
        },
    );
    out
}

/// Percent-encodings: upper- and lower-case hex, and `+` for space.
pub fn percent(v: &[u8]) -> Vec<Vec<u8>> {
    collect(v, true, percent_into, None)
}

/// JSON string escapes: the minimal escaping (`\"`, `\\`), with `\/`, and the
/// `\u00XX` style some encoders use for every non-alphanumeric ASCII byte
/// (Go's HTML-safe `<>&`, `+`, `=` …), lower- and upper-case hex.
pub fn json_escaped(v: &[u8]) -> Vec<Vec<u8>> {
    collect(v, true, json_escaped_into, None)
}

/// HTML entity escapes of the special characters: named, decimal and hex.
pub fn html_entity(v: &[u8]) -> Vec<Vec<u8>> {
    collect(v, true, html_entity_into, None)
}

/// The stable inner part of the base64 (or base64url) encoding of `v` at each
/// of the three byte alignments it can have inside a larger encoded blob: the
/// characters whose six bits all come from `v`.
pub fn base64_inner(v: &[u8], url: bool) -> Vec<Vec<u8>> {
    let only = if url {
        Encoding::Base64url
    } else {
        Encoding::Base64
    };
    collect(v, false, base64_inner_into, Some(only))
}

/// Two hex digits of `b`.
fn push_hex(s: &mut Vec<u8>, b: u8, upper: bool) {
    let digits: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    s.push(digits[usize::from(b >> 4)]);
    s.push(digits[usize::from(b & 0xf)]);
}

/// Every full-value form, in the order of preference when two forms coincide.
pub fn all_forms(v: &[u8]) -> Vec<(Encoding, Vec<u8>)> {
    let mut out: Vec<(Encoding, Vec<u8>)> = vec![(Encoding::Plain, v.to_vec())];
    let mut buf = Zeroizing::new(Vec::new());
    write_forms(v, &mut buf, |buf, start, enc| {
        let s = &buf[start..];
        if !out.iter().any(|(_, x)| x[..] == s[..]) {
            out.push((enc, s.to_vec()));
        }
        buf.truncate(start);
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD_NO_PAD;
    use base64::Engine as _;

    /// The forms as they were computed before `write_forms` (one `Vec` per
    /// form, `format!` for entities, the base64 crate per alignment).
    fn reference_forms(v: &[u8]) -> Vec<(Encoding, Vec<u8>)> {
        fn push_distinct(out: &mut Vec<Vec<u8>>, plain: &[u8], s: Vec<u8>) {
            if s != plain && !out.contains(&s) {
                out.push(s);
            }
        }
        let mut all = vec![(Encoding::Plain, v.to_vec())];
        let mut out = Vec::new();
        if !v.iter().all(|&b| is_unreserved(b)) {
            for (upper, plus) in [(true, false), (false, false), (true, true), (false, true)] {
                let mut s = Vec::new();
                for &b in v {
                    if is_unreserved(b) {
                        s.push(b);
                    } else if plus && b == b' ' {
                        s.push(b'+');
                    } else if upper {
                        s.extend_from_slice(format!("%{b:02X}").as_bytes());
                    } else {
                        s.extend_from_slice(format!("%{b:02x}").as_bytes());
                    }
                }
                push_distinct(&mut out, v, s);
            }
        }
        all.extend(out.drain(..).map(|s| (Encoding::Percent, s)));
        if v.iter().any(|&b| b <= 0x1f || b.is_ascii_punctuation()) {
            let minimal = v
                .iter()
                .any(|&b| b <= 0x1f || matches!(b, b'"' | b'\\' | b'/'));
            for variant in 0..4 {
                if variant < 2 && !minimal {
                    continue;
                }
                let mut s = Vec::new();
                for &b in v {
                    let u = |upper: bool| {
                        if upper {
                            format!("\\u{b:04X}")
                        } else {
                            format!("\\u{b:04x}")
                        }
                    };
                    match b {
                        b'"' if variant < 2 => s.extend_from_slice(b"\\\""),
                        b'\\' if variant < 2 => s.extend_from_slice(b"\\\\"),
                        b'/' if variant == 1 => s.extend_from_slice(b"\\/"),
                        0..=0x1f => s.extend_from_slice(u(variant == 3).as_bytes()),
                        _ if variant >= 2 && b.is_ascii_punctuation() => {
                            s.extend_from_slice(u(variant == 3).as_bytes())
                        }
                        _ => s.push(b),
                    }
                }
                push_distinct(&mut out, v, s);
            }
        }
        all.extend(out.drain(..).map(|s| (Encoding::JsonEscaped, s)));
        if v.iter().any(|&b| HTML_SPECIAL[usize::from(b)]) {
            for variant in 0..5 {
                let mut s = Vec::new();
                for &b in v {
                    let named = html_named(b);
                    let special = named.is_some() || matches!(b, b'=' | b'/' | b'+' | b'`');
                    match variant {
                        0 => s.extend_from_slice(named.unwrap_or(std::slice::from_ref(&b))),
                        4 if b == b'\'' => s.extend_from_slice(b"&#x27;"),
                        4 => s.extend_from_slice(named.unwrap_or(std::slice::from_ref(&b))),
                        1 if special => s.extend_from_slice(format!("&#{b};").as_bytes()),
                        2 if special => s.extend_from_slice(format!("&#x{b:X};").as_bytes()),
                        3 if special => s.extend_from_slice(format!("&#x{b:x};").as_bytes()),
                        _ => s.push(b),
                    }
                }
                push_distinct(&mut out, v, s);
            }
        }
        all.extend(out.drain(..).map(|s| (Encoding::HtmlEntity, s)));
        let mut std: Vec<Vec<u8>> = Vec::new();
        let mut url: Vec<Vec<u8>> = Vec::new();
        for align in 0..3usize {
            let mut x = vec![0u8; align];
            x.extend_from_slice(v);
            let enc = STANDARD_NO_PAD.encode(&x).into_bytes();
            let first = (8 * align).div_ceil(6);
            let last = ((8 * (align + v.len())) / 6).min(enc.len());
            if last > first && last - first >= MIN_BASE64_NEEDLE {
                let inner = &enc[first..last];
                if !std.iter().any(|s| s[..] == inner[..]) {
                    std.push(inner.to_vec());
                    url.push(
                        inner
                            .iter()
                            .map(|&b| match b {
                                b'+' => b'-',
                                b'/' => b'_',
                                b => b,
                            })
                            .collect(),
                    );
                }
            }
        }
        all.extend(std.into_iter().map(|s| (Encoding::Base64, s)));
        all.extend(url.into_iter().map(|s| (Encoding::Base64url, s)));
        all
    }

    /// Keeps the first of equal byte strings, as the detector does.
    fn first_of_each(forms: Vec<(Encoding, Vec<u8>)>) -> Vec<(Encoding, Vec<u8>)> {
        let mut out: Vec<(Encoding, Vec<u8>)> = Vec::new();
        for (e, s) in forms {
            if !out.iter().any(|(_, x)| *x == s) {
                out.push((e, s));
            }
        }
        out
    }

    /// `write_forms` gives, after deduplication, exactly the forms (and
    /// their order) of the former per-form implementation.
    #[test]
    fn written_forms_are_the_reference_forms() {
        let mut rng = crate::test_rng::XorShift::new(0x0bad_cafe_f00d_d00d);
        let mut rnd = |n: usize| rng.below(n);
        let alphabets: [&[u8]; 4] = [
            b"abcXYZ019_-",
            b"a/b+c=d\"e<f&'>`\\ %~.",
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_",
            &[],
        ];
        for case in 0..3000 {
            let len = 1 + rnd(70);
            let v: Vec<u8> = match alphabets[case % 4] {
                [] => (0..len).map(|_| rnd(256) as u8).collect(),
                a => (0..len).map(|_| a[rnd(a.len())]).collect(),
            };
            let mut got = vec![(Encoding::Plain, v.clone())];
            let mut buf = Vec::new();
            write_forms(&v, &mut buf, |buf, start, enc| {
                got.push((enc, buf[start..].to_vec()));
                buf.truncate(start);
            });
            assert_eq!(
                first_of_each(got),
                first_of_each(reference_forms(&v)),
                "case {case} {v:?}"
            );
            assert_eq!(all_forms(&v), first_of_each(reference_forms(&v)));
        }
    }

    #[test]
    fn reserve_zeroizing_grows_and_keeps_the_bytes() {
        let mut v = Vec::with_capacity(4);
        v.extend_from_slice(b"abcd");
        reserve_zeroizing(&mut v, 10);
        assert_eq!(v, b"abcd");
        assert!(v.capacity() >= 14);
        let cap = v.capacity();
        reserve_zeroizing(&mut v, 1);
        assert_eq!(v.capacity(), cap);
    }

    #[test]
    fn forms_of_special_value() {
        let v = b"a/b+c=d\"e<f";
        assert!(percent(v).contains(&b"a%2Fb%2Bc%3Dd%22e%3Cf".to_vec()));
        assert!(percent(v).contains(&b"a%2fb%2bc%3dd%22e%3cf".to_vec()));
        assert!(json_escaped(v).contains(&b"a\\/b+c=d\\\"e<f".to_vec()));
        assert!(json_escaped(v).contains(&b"a\\u002fb\\u002bc\\u003dd\\u0022e\\u003cf".to_vec()));
        assert!(html_entity(v).contains(&b"a/b+c=d&quot;e&lt;f".to_vec()));
        assert!(html_entity(v).contains(&b"a&#47;b&#43;c&#61;d&#34;e&#60;f".to_vec()));
    }

    #[test]
    fn values_without_special_bytes_have_no_escaped_forms() {
        let v = b"sk_live_4eC39HqLyjWDarjtT1zdp7dc";
        assert!(percent(v).is_empty());
        assert!(html_entity(v).is_empty());
        // `_` is punctuation: the escape-everything JSON encoders change it.
        assert_eq!(
            json_escaped(v),
            vec![
                b"sk\\u005flive\\u005f4eC39HqLyjWDarjtT1zdp7dc".to_vec(),
                b"sk\\u005Flive\\u005F4eC39HqLyjWDarjtT1zdp7dc".to_vec(),
            ]
        );
        assert!(json_escaped(b"4eC39HqLyjWDarjtT1zdp7dc").is_empty());
        // Every byte value, alone and in a run: the hex escapes are right.
        for b in 0..=255u8 {
            let v = [b'a', b, b'z'];
            for f in percent(&v) {
                let dec = crate::leak::extract::url_decode(&f, true);
                assert!(dec == v || (b == b' ' && dec == b"a z"), "byte {b}");
            }
            for f in json_escaped(&v) {
                if f.windows(2).any(|w| w == b"\\u") {
                    let s = format!("\"{}\"", String::from_utf8_lossy(&f));
                    let back: String = serde_json::from_str(&s).unwrap();
                    assert_eq!(back.as_bytes(), &v[..], "byte {b}");
                }
            }
        }
    }

    /// The derived base64url needles are what the base64url encoder gives.
    #[test]
    fn base64url_from_standard_matches_the_encoder() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut v: Vec<u8> = (0..=255u8).collect();
        v.extend_from_slice(b"\xfb\xff\xfe>>>???");
        for n in [8, 9, 10, 11, 12, 40, v.len()] {
            let v = &v[v.len() - n..];
            let url = base64_inner(v, true);
            assert_eq!(url.len(), base64_inner(v, false).len());
            for align in 0..3usize {
                let mut x = vec![0u8; align];
                x.extend_from_slice(v);
                let enc = URL_SAFE_NO_PAD.encode(&x);
                let first = (8 * align).div_ceil(6);
                let last = (8 * (align + v.len())) / 6;
                let inner = enc.as_bytes()[first..last].to_vec();
                assert!(url.contains(&inner), "len {n} align {align}");
            }
        }
    }

    #[test]
    fn base64_inner_found_at_every_alignment() {
        let v = b"sk_live_4eC39HqLyjWDarjtT1zdp7dc";
        let needles = base64_inner(v, false);
        assert_eq!(needles.len(), 3);
        for pre in 0..6 {
            let mut blob = b"{\"debug\":\"".to_vec();
            blob.truncate(blob.len() - pre % 3);
            blob.extend_from_slice(v);
            blob.extend_from_slice(b"\"} trailing");
            let enc = STANDARD_NO_PAD.encode(&blob);
            assert!(
                needles
                    .iter()
                    .any(|n| memchr::memmem::find(enc.as_bytes(), n).is_some()),
                "prefix {pre}"
            );
        }
    }
}
