//! The forms a credential can take in a response (contract: `sink.encoding`):
//! each function returns the byte strings to search for, deduplicated by the
//! caller.  A form identical to the plain value is not produced.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use zeroize::Zeroizing;

use crate::finding::Encoding;

/// Shortest base64 inner run worth searching (shorter runs match random blobs).
pub const MIN_BASE64_NEEDLE: usize = 8;

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Percent-encodings: upper- and lower-case hex, and `+` for space.
pub fn percent(v: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if v.iter().all(|&b| is_unreserved(b)) {
        return out; // every form is the value itself
    }
    for (upper, plus) in [(true, false), (false, false), (true, true), (false, true)] {
        let mut s = Vec::with_capacity(v.len() * 3);
        for &b in v {
            if is_unreserved(b) {
                s.push(b);
            } else if plus && b == b' ' {
                s.push(b'+');
            } else {
                s.push(b'%');
                push_hex(&mut s, b, upper);
            }
        }
        push_distinct(&mut out, v, s);
    }
    out
}

/// JSON string escapes: the minimal escaping (`\"`, `\\`), with `\/`, and the
/// `\u00XX` style some encoders use for every non-alphanumeric ASCII byte
/// (Go's HTML-safe `<>&`, `+`, `=` …), lower- and upper-case hex.
pub fn json_escaped(v: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if !v.iter().any(|&b| b <= 0x1f || b.is_ascii_punctuation()) {
        return out; // `"`, `\\`, `/` are punctuation: every form is the value itself
    }
    // Variants 0 and 1 escape only these (and control bytes).
    let minimal = v
        .iter()
        .any(|&b| b <= 0x1f || matches!(b, b'"' | b'\\' | b'/'));
    for variant in 0..4 {
        if variant < 2 && !minimal {
            continue; // the value itself
        }
        let mut s = Vec::with_capacity(v.len() * 2);
        let mut rest = v;
        while let Some(i) = rest
            .iter()
            .position(|&b| b <= 0x1f || b.is_ascii_punctuation())
        {
            // Bytes before the next one any variant may escape are kept as is.
            s.extend_from_slice(&rest[..i]);
            let b = rest[i];
            rest = &rest[i + 1..];
            let u = |s: &mut Vec<u8>, upper: bool| {
                s.extend_from_slice(b"\\u00");
                push_hex(s, b, upper);
            };
            match b {
                b'"' if variant < 2 => s.extend_from_slice(b"\\\""),
                b'\\' if variant < 2 => s.extend_from_slice(b"\\\\"),
                b'/' if variant == 1 => s.extend_from_slice(b"\\/"),
                0..=0x1f => u(&mut s, variant == 3),
                _ if variant >= 2 && b.is_ascii_punctuation() => u(&mut s, variant == 3),
                _ => s.push(b),
            }
        }
        s.extend_from_slice(rest);
        push_distinct(&mut out, v, s);
    }
    out
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

/// HTML entity escapes of the special characters: named, decimal and hex.
pub fn html_entity(v: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if !v.iter().any(|&b| HTML_SPECIAL[usize::from(b)]) {
        return out; // nothing any variant escapes: every form is the value itself
    }
    for variant in 0..5 {
        let mut s = Vec::with_capacity(v.len() * 2);
        for &b in v {
            let named: Option<&[u8]> = match b {
                b'&' => Some(b"&amp;"),
                b'<' => Some(b"&lt;"),
                b'>' => Some(b"&gt;"),
                b'"' => Some(b"&quot;"),
                b'\'' => Some(b"&#39;"),
                _ => None,
            };
            let special = named.is_some() || matches!(b, b'=' | b'/' | b'+' | b'`');
            match variant {
                // Named for the five (Python html.escape, Jinja), others raw.
                0 => s.extend_from_slice(named.unwrap_or(std::slice::from_ref(&b))),
                // Python's html.escape writes the apostrophe as &#x27;.
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
    out
}

/// The stable inner part of the base64 (or base64url) encoding of `v` at each
/// of the three byte alignments it can have inside a larger encoded blob: the
/// characters whose six bits all come from `v`.
pub fn base64_inner(v: &[u8], url: bool) -> Vec<Vec<u8>> {
    let [std, url_safe] = base64_inner_both(v);
    if url {
        url_safe
    } else {
        std
    }
}

/// [`base64_inner`] for both alphabets from one encoding per alignment
/// (base64url is base64 with `-` for `+` and `_` for `/`).
pub fn base64_inner_both(v: &[u8]) -> [Vec<Vec<u8>>; 2] {
    let mut std = Vec::new();
    let mut url = Vec::new();
    let mut x = Zeroizing::new(Vec::with_capacity(v.len() + 2));
    let mut enc = Zeroizing::new(Vec::with_capacity((v.len() + 2) * 4 / 3 + 4));
    for align in 0..3usize {
        x.clear();
        x.resize(align, 0);
        x.extend_from_slice(v);
        enc.clear();
        enc.resize((x.len() * 4).div_ceil(3), 0);
        let n = STANDARD_NO_PAD
            .encode_slice(&x[..], &mut enc[..])
            .expect("the buffer fits the encoding");
        let first = (8 * align).div_ceil(6);
        let last = ((8 * (align + v.len())) / 6).min(n); // exclusive: chars fully inside v
        if last > first && last - first >= MIN_BASE64_NEEDLE {
            let inner = &enc[first..last];
            if !std.iter().any(|s: &Vec<u8>| s[..] == inner[..]) {
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
    [std, url]
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

fn push_distinct(out: &mut Vec<Vec<u8>>, plain: &[u8], s: Vec<u8>) {
    if s != plain && !out.contains(&s) {
        out.push(s);
    }
}

/// Every full-value form, in the order of preference when two forms coincide.
pub fn all_forms(v: &[u8]) -> Vec<(Encoding, Vec<u8>)> {
    let mut out = Vec::with_capacity(16);
    out.push((Encoding::Plain, v.to_vec()));
    out.extend(percent(v).into_iter().map(|s| (Encoding::Percent, s)));
    out.extend(
        json_escaped(v)
            .into_iter()
            .map(|s| (Encoding::JsonEscaped, s)),
    );
    out.extend(
        html_entity(v)
            .into_iter()
            .map(|s| (Encoding::HtmlEntity, s)),
    );
    let [std, url] = base64_inner_both(v);
    out.extend(std.into_iter().map(|s| (Encoding::Base64, s)));
    out.extend(url.into_iter().map(|s| (Encoding::Base64url, s)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
