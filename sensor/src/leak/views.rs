//! Decoded views of a response body: JSON string escapes, HTML character
//! references or percent-escapes undone, so that the plain needle of a
//! credential is found whichever subset of its bytes an escaper chose to
//! escape (Go's `\u0026`, .NET's upper-case `\u002B`, Python's
//! `ensure_ascii` and its surrogate pairs, MarkupSafe's `&#34;`, PHP's
//! `&#039;`, `quote()` leaving `/` raw, `encodeURIComponent` leaving `!*()'`
//! raw …).  The needles of `forms` cover the common uniform escapers
//! cheaply; a view covers every mix, at the price of a second pass over the
//! body, so one is kept only when it can matter: some credential of the
//! request has a byte such an escaper changes (see [`views_needed`]) and
//! the body holds the escape character.  A view hit's offset is mapped back
//! to the body (the offset of the escaped form's first byte).

use std::collections::VecDeque;

use zeroize::Zeroizing;

use super::matcher::{Matcher, StreamState};
use crate::finding::Encoding;

/// One kind of decoded view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewKind {
    Json,
    Html,
    Percent,
}

impl ViewKind {
    pub const ALL: [ViewKind; 3] = [ViewKind::Json, ViewKind::Html, ViewKind::Percent];

    /// The byte every escape of this kind starts with.
    fn escape_byte(self) -> u8 {
        match self {
            ViewKind::Json => b'\\',
            ViewKind::Html => b'&',
            ViewKind::Percent => b'%',
        }
    }

    /// The `sink.encoding` of a credential found in this view.
    pub fn encoding(self) -> Encoding {
        match self {
            ViewKind::Json => Encoding::JsonEscaped,
            ViewKind::Html => Encoding::HtmlEntity,
            ViewKind::Percent => Encoding::Percent,
        }
    }

    fn bit(self) -> u8 {
        match self {
            ViewKind::Json => 1,
            ViewKind::Html => 2,
            ViewKind::Percent => 4,
        }
    }

    /// Longest escape this kind decodes (a UTF-16 surrogate pair
    /// `\uD83D\uDE00`, `&#x0010FFFF;` with a few leading zeros, `%41`).
    fn max_escape_len(self) -> usize {
        match self {
            ViewKind::Json => 12,
            ViewKind::Html => MAX_ENTITY_LEN,
            ViewKind::Percent => 3,
        }
    }
}

/// Longest character reference decoded (`&` … `;`, both included).
const MAX_ENTITY_LEN: usize = 16;

/// Most layers of JSON escaping undone, one view inside the other: a JSON
/// string holding JSON-escaped JSON (an error message quoting a serialized
/// request: `\\\"` for `"`, `\\/` for `/`) is two; a request quoted in
/// a log line inside such a message three.  Each layer is one more pass
/// over what the layer before produced, and starts only once that holds a
/// `\`; past four, a `"` takes 31 backslashes, which nothing writes.
pub const MAX_JSON_LAYERS: u8 = 4;

/// Per byte value, the views (bits of [`ViewKind::bit`]) whose escapers some
/// real framework applies to that byte while leaving others raw.  Bytes
/// that every escaper of a kind escapes or none does are enumerated by the
/// needles of `forms` already; these are the ones that make mixes.
static ESCAPED_BY: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut bits = 0u8;
        // JSON: control bytes, the minimal `"` `\`, PHP's `\/`, the HTML-safe
        // `<>&'` (Go, Rails, Gson), .NET's `+` and backtick, Gson's `=`,
        // non-ASCII (`ensure_ascii`, .NET, PHP without UNESCAPED_UNICODE).
        if b <= 0x1f || b >= 0x80 || matches!(b, b'"' | b'\\' | b'/' | b'<' | b'>' | b'&') {
            bits |= 1;
        }
        if matches!(b, b'\'' | b'+' | b'`' | b'=') {
            bits |= 1;
        }
        // HTML: the five every escaper names, the extra ones some encode
        // (OWASP, Rails' `=`/`/`/backtick), non-ASCII (htmlentities()).
        if b >= 0x80
            || matches!(
                b,
                b'&' | b'<' | b'>' | b'"' | b'\'' | b'/' | b'=' | b'+' | b'`'
            )
        {
            bits |= 2;
        }
        // Percent: anything outside RFC 3986's unreserved set; encoders
        // differ on the reserved ones they leave raw.
        if !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')) {
            bits |= 4;
        }
        t[i] = bits;
        i += 1;
    }
    t
};

/// The views a request's credentials need (a bit set of [`ViewKind`]s):
/// those whose escapers change some byte of some credential.  A typical API
/// key, JWT or session id (`[A-Za-z0-9._-]`) needs none.
pub fn views_needed<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> u8 {
    values.into_iter().fold(0u8, |bits, v| {
        v.iter()
            .fold(bits, |bits, &b| bits | ESCAPED_BY[usize::from(b)])
    })
}

/// Where an escape sits: view bytes `view..view_end` come from body bytes
/// `body..body_end`.
#[derive(Clone, Copy, Debug)]
struct Mark {
    view: u64,
    view_end: u64,
    body: u64,
    body_end: u64,
}

/// One decoded view of a body, fed block by block as the body is decoded,
/// searched with the pair's matcher in a stream of its own.  Nothing is kept
/// beyond what the next block needs: the last bytes before it first sees
/// its escape byte, an incomplete escape at a block's end, and the marks of
/// the escapes a match ending in the next block could start at.
pub struct View {
    kind: ViewKind,
    /// Whether the body has shown its escape byte yet.
    active: bool,
    /// Before that: the last bytes of the body (the view equals the body
    /// there), to start the view with when it becomes active.
    tail: Zeroizing<Vec<u8>>,
    /// An escape cut by the end of the last block, decoded with the next.
    pending: Zeroizing<Vec<u8>>,
    /// Pending bytes then the block: what is decoded.
    work: Zeroizing<Vec<u8>>,
    /// The view of the current block.
    out: Zeroizing<Vec<u8>>,
    /// Body bytes seen so far (the body offset of the next block).
    body_pos: u64,
    /// View bytes produced before `out`.
    view_pos: u64,
    /// View offset 0 is this body offset (where the seeding tail began).
    origin: u64,
    /// Escapes still within reach of a match, oldest first.
    marks: VecDeque<Mark>,
    stream: StreamState,
    /// Layers of escaping this view undoes, itself included (1: the body's own).
    layer: u8,
    /// The next layer (JSON only, up to [`MAX_JSON_LAYERS`]): this view's
    /// output decoded once more, its offsets mapped back through this one's.
    /// Made when this view becomes active.
    inner: Option<Box<View>>,
}

impl View {
    pub fn new(kind: ViewKind) -> Self {
        View::layer(kind, 1)
    }

    fn layer(kind: ViewKind, layer: u8) -> Self {
        View {
            kind,
            active: false,
            tail: Zeroizing::new(Vec::new()),
            pending: Zeroizing::new(Vec::new()),
            work: Zeroizing::new(Vec::new()),
            out: Zeroizing::new(Vec::new()),
            body_pos: 0,
            view_pos: 0,
            origin: 0,
            marks: VecDeque::new(),
            stream: StreamState::new(),
            layer,
            inner: None,
        }
    }

    /// The views `bits` asks for.
    pub fn for_bits(bits: u8) -> Vec<View> {
        ViewKind::ALL
            .into_iter()
            .filter(|k| bits & k.bit() != 0)
            .map(View::new)
            .collect()
    }

    pub fn kind(&self) -> ViewKind {
        self.kind
    }

    /// Feeds the next body block; `on(needle, body_offset)` for each match
    /// of `m` in the view.
    pub fn feed(&mut self, m: &Matcher, block: &[u8], on: &mut dyn FnMut(usize, u64)) {
        self.feed_block(m, block, false, on);
    }

    /// Ends the body: an escape cut by its end is decoded as literal bytes.
    pub fn finish(&mut self, m: &Matcher, on: &mut dyn FnMut(usize, u64)) {
        if self.active && !self.pending.is_empty() {
            self.feed_block(m, &[], true, on);
        }
        let View {
            inner,
            marks,
            origin,
            ..
        } = self;
        if let Some(inner) = inner.as_deref_mut() {
            inner.finish(m, &mut |i, off| on(i, body_offset(marks, *origin, off)));
        }
    }

    /// As [`View::feed`]; `last` for the end of the body (an incomplete
    /// escape is then taken as literal bytes).
    fn feed_block(
        &mut self,
        m: &Matcher,
        block: &[u8],
        last: bool,
        on: &mut dyn FnMut(usize, u64),
    ) {
        let reach = m.longest_needle().saturating_sub(1);
        if !self.active && !self.activate(block, reach) {
            self.body_pos += block.len() as u64;
            return;
        }
        self.decode_block(block, last);
        let View {
            out,
            stream,
            marks,
            origin,
            inner,
            ..
        } = self;
        m.feed(stream, out, &mut |i, view_off| {
            on(i, body_offset(marks, *origin, view_off))
        });
        if let Some(inner) = inner.as_deref_mut() {
            inner.feed_block(m, out, last, &mut |i, view_off| {
                on(i, body_offset(marks, *origin, view_off))
            });
        }
        self.view_pos += self.out.len() as u64;
        // What the next block's matches (this view's and the inner
        // layers') may start at: the marks before it are not needed.
        let mut need = self.view_pos.saturating_sub(reach as u64);
        if let Some(inner) = &self.inner {
            need = need.min(inner.input_needed(reach));
        }
        self.forget_marks_before(need);
    }

    /// The earliest offset of this view's input (the body, or the outer
    /// layer's view) a match found from the next block on may start at.
    fn input_needed(&self, reach: usize) -> u64 {
        if !self.active {
            return self.body_pos - self.tail.len() as u64;
        }
        let mut need = self.view_pos.saturating_sub(reach as u64);
        if let Some(inner) = &self.inner {
            need = need.min(inner.input_needed(reach));
        }
        body_offset(&self.marks, self.origin, need)
    }

    /// Becomes active when `block` holds the escape byte, starting the view
    /// with the last `reach` body bytes before it (a match may start
    /// there); else keeps those bytes.  Whether it is active.
    fn activate(&mut self, block: &[u8], reach: usize) -> bool {
        if memchr::memchr(self.kind.escape_byte(), block).is_none() {
            keep_last(&mut self.tail, block, reach);
            return false;
        }
        self.active = true;
        self.origin = self.body_pos - self.tail.len() as u64;
        // The tail holds no escape: it is its own view, fed as the first
        // bytes of the view's stream.
        std::mem::swap(&mut self.pending, &mut self.tail);
        self.tail = Zeroizing::new(Vec::new());
        self.view_pos = 0;
        if self.kind == ViewKind::Json && self.layer < MAX_JSON_LAYERS {
            self.inner = Some(Box::new(View::layer(self.kind, self.layer + 1)));
        }
        true
    }

    /// Decodes pending bytes and `block` into `out`, recording a mark per
    /// escape; an escape cut by the block's end waits in `pending`.
    fn decode_block(&mut self, block: &[u8], last: bool) {
        let View {
            kind,
            pending,
            work,
            out,
            marks,
            body_pos,
            view_pos,
            ..
        } = self;
        work.clear();
        work.extend_from_slice(pending);
        work.extend_from_slice(block);
        zeroize::Zeroize::zeroize(&mut **pending);
        pending.clear();
        out.clear();
        // Body offset of work[0]: pending bytes came before this block
        // (or, just activated, they are the seeding tail).
        let work_body = *body_pos + block.len() as u64 - work.len() as u64;
        let esc = kind.escape_byte();
        let mut i = 0;
        while i < work.len() {
            let Some(rel) = memchr::memchr(esc, &work[i..]) else {
                out.extend_from_slice(&work[i..]);
                break;
            };
            out.extend_from_slice(&work[i..i + rel]);
            i += rel;
            let rest = &work[i..];
            match decode_escape(*kind, rest) {
                Escape::Char(bytes, n) => {
                    let view = *view_pos + out.len() as u64;
                    marks.push_back(Mark {
                        view,
                        view_end: view + bytes.len() as u64,
                        body: work_body + i as u64,
                        body_end: work_body + (i + n) as u64,
                    });
                    out.extend_from_slice(&bytes);
                    i += n;
                }
                Escape::Cut if !last && rest.len() < kind.max_escape_len() => {
                    pending.extend_from_slice(rest);
                    break;
                }
                Escape::Cut | Escape::NotOne => {
                    out.push(esc);
                    i += 1;
                }
            }
        }
        *body_pos += block.len() as u64;
    }

    /// Drops the marks of escapes that end before view offset `from`,
    /// keeping the last of them (it maps the bytes after it).
    fn forget_marks_before(&mut self, from: u64) {
        while self.marks.len() >= 2 && self.marks[1].view_end <= from {
            self.marks.pop_front();
        }
    }
}

/// The body offset of view offset `x`: inside an escape's decoded bytes,
/// the escape's first byte; after it, as many bytes past its end.
fn body_offset(marks: &VecDeque<Mark>, origin: u64, x: u64) -> u64 {
    // Marks are few (one block's escapes at most); the last one at or
    // before `x` decides.
    let at = marks.partition_point(|m| m.view <= x);
    match at.checked_sub(1).map(|j| marks[j]) {
        Some(m) if x < m.view_end => m.body,
        Some(m) => m.body_end + (x - m.view_end),
        None => origin + x,
    }
}

/// `buf` becomes the last `n` bytes of `buf` followed by `block`.
fn keep_last(buf: &mut Vec<u8>, block: &[u8], n: usize) {
    if block.len() >= n {
        zeroize::Zeroize::zeroize(&mut *buf);
        buf.clear();
        buf.extend_from_slice(&block[block.len() - n..]);
    } else {
        buf.extend_from_slice(block);
        let excess = buf.len().saturating_sub(n);
        if excess > 0 {
            buf.copy_within(excess.., 0);
            let keep = buf.len() - excess;
            buf[keep..].fill(0);
            buf.truncate(keep);
        }
    }
}

/// What the bytes at an escape byte are.
enum Escape {
    /// A character (UTF-8, up to four bytes) from this many bytes.
    Char(Utf8, usize),
    /// Possibly an escape, cut by the end of the input.
    Cut,
    /// Not an escape this view decodes: the escape byte is literal.
    NotOne,
}

/// Up to four UTF-8 bytes.
struct Utf8 {
    bytes: [u8; 4],
    len: usize,
}

impl std::ops::Deref for Utf8 {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Utf8 {
    fn byte(b: u8) -> Self {
        Utf8 {
            bytes: [b, 0, 0, 0],
            len: 1,
        }
    }

    fn char(c: char) -> Self {
        let mut bytes = [0u8; 4];
        let len = c.encode_utf8(&mut bytes).len();
        Utf8 { bytes, len }
    }
}

fn decode_escape(kind: ViewKind, s: &[u8]) -> Escape {
    match kind {
        ViewKind::Json => json_escape(s),
        ViewKind::Html => html_reference(s),
        ViewKind::Percent => percent_escape(s),
    }
}

fn hex_value(b: u8) -> Option<u32> {
    (b as char).to_digit(16)
}

/// `%HH`, either case.
fn percent_escape(s: &[u8]) -> Escape {
    if s.len() < 3 {
        return if s[1..].iter().all(|&b| hex_value(b).is_some()) {
            Escape::Cut
        } else {
            Escape::NotOne
        };
    }
    match (hex_value(s[1]), hex_value(s[2])) {
        (Some(h), Some(l)) => Escape::Char(Utf8::byte((h << 4 | l) as u8), 3),
        _ => Escape::NotOne,
    }
}

/// Four hex digits at `s[at..]`: Some(Some(unit)), Some(None) when cut
/// short by the end of `s`, None when not hex.
fn hex4(s: &[u8], at: usize) -> Option<Option<u32>> {
    let mut v = 0;
    for k in 0..4 {
        match s.get(at + k) {
            None => return Some(None),
            Some(&b) => v = v << 4 | hex_value(b)?,
        }
    }
    Some(Some(v))
}

/// A JSON string escape: `\"` `\\` `\/` `\b` `\f` `\n` `\r` `\t`, `\uXXXX`
/// (either case) and a surrogate pair `\uD8xx\uDCxx`.  A lone surrogate is
/// left as it is (no credential holds one).
fn json_escape(s: &[u8]) -> Escape {
    let Some(&c) = s.get(1) else {
        return Escape::Cut;
    };
    let simple = match c {
        b'"' | b'\\' | b'/' => c,
        b'b' => 0x08,
        b'f' => 0x0c,
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'u' => 0,
        _ => return Escape::NotOne,
    };
    if c != b'u' {
        return Escape::Char(Utf8::byte(simple), 2);
    }
    let unit = match hex4(s, 2) {
        None => return Escape::NotOne,
        Some(None) => return Escape::Cut,
        Some(Some(u)) => u,
    };
    if !(0xD800..0xDC00).contains(&unit) {
        return match char::from_u32(unit) {
            Some(ch) => Escape::Char(Utf8::char(ch), 6),
            None => Escape::NotOne, // a lone low surrogate
        };
    }
    // A high surrogate: the low one must follow.
    match (s.get(6), s.get(7)) {
        (None, _) | (Some(b'\\'), None) => return Escape::Cut,
        (Some(b'\\'), Some(b'u')) => {}
        _ => return Escape::NotOne,
    }
    match hex4(s, 8) {
        None => Escape::NotOne,
        Some(None) => Escape::Cut,
        Some(Some(low)) if (0xDC00..0xE000).contains(&low) => {
            let cp = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
            char::from_u32(cp).map_or(Escape::NotOne, |ch| Escape::Char(Utf8::char(ch), 12))
        }
        Some(Some(_)) => Escape::NotOne,
    }
}

/// An HTML character reference: `&#NNN;`, `&#xHH;` (any case, leading
/// zeros) or a named one from [`NAMED_ENTITIES`] / [`LATIN1_ENTITIES`].
/// Escapers always write the `;`; a reference without one is not decoded.
fn html_reference(s: &[u8]) -> Escape {
    let body_end = s.len().min(MAX_ENTITY_LEN);
    let Some(semi) = s[1..body_end]
        .iter()
        .position(|&b| b == b';')
        .map(|p| p + 1)
    else {
        // No `;` yet: cut if everything so far could still be a reference.
        let plausible = s[1..]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'#');
        return if s.len() < MAX_ENTITY_LEN && plausible {
            Escape::Cut
        } else {
            Escape::NotOne
        };
    };
    let name = &s[1..semi];
    let ch = match name {
        [b'#', b'x' | b'X', hex @ ..] => parse_digits(hex, 16),
        [b'#', dec @ ..] => parse_digits(dec, 10),
        _ => named_entity(name),
    };
    match ch {
        Some(c) if c != '\0' => Escape::Char(Utf8::char(c), semi + 1),
        _ => Escape::NotOne,
    }
}

fn parse_digits(d: &[u8], radix: u32) -> Option<char> {
    if d.is_empty() {
        return None;
    }
    let v = d.iter().try_fold(0u32, |v, &b| {
        let digit = (b as char).to_digit(radix)?;
        v.checked_mul(radix)?.checked_add(digit)
    })?;
    char::from_u32(v)
}

/// Named references for ASCII punctuation (HTML 4 and the HTML5 names some
/// encoders write) and a few common typographic ones.
const NAMED_ENTITIES: &[(&[u8], char)] = &[
    (b"amp", '&'),
    (b"lt", '<'),
    (b"gt", '>'),
    (b"quot", '"'),
    (b"apos", '\''),
    (b"sol", '/'),
    (b"equals", '='),
    (b"plus", '+'),
    (b"grave", '`'),
    (b"excl", '!'),
    (b"num", '#'),
    (b"dollar", '$'),
    (b"percnt", '%'),
    (b"lpar", '('),
    (b"rpar", ')'),
    (b"ast", '*'),
    (b"comma", ','),
    (b"period", '.'),
    (b"colon", ':'),
    (b"semi", ';'),
    (b"quest", '?'),
    (b"commat", '@'),
    (b"lsqb", '['),
    (b"bsol", '\\'),
    (b"rsqb", ']'),
    (b"Hat", '^'),
    (b"lowbar", '_'),
    (b"lcub", '{'),
    (b"verbar", '|'),
    (b"rcub", '}'),
    (b"euro", '\u{20AC}'),
    (b"ndash", '\u{2013}'),
    (b"mdash", '\u{2014}'),
    (b"lsquo", '\u{2018}'),
    (b"rsquo", '\u{2019}'),
    (b"ldquo", '\u{201C}'),
    (b"rdquo", '\u{201D}'),
    (b"hellip", '\u{2026}'),
    (b"bull", '\u{2022}'),
    (b"trade", '\u{2122}'),
];

/// HTML 4's names of U+00A0..=U+00FF in order (PHP `htmlentities()`).
const LATIN1_ENTITIES: [&[u8]; 96] = [
    b"nbsp", b"iexcl", b"cent", b"pound", b"curren", b"yen", b"brvbar", b"sect", b"uml", b"copy",
    b"ordf", b"laquo", b"not", b"shy", b"reg", b"macr", b"deg", b"plusmn", b"sup2", b"sup3",
    b"acute", b"micro", b"para", b"middot", b"cedil", b"sup1", b"ordm", b"raquo", b"frac14",
    b"frac12", b"frac34", b"iquest", b"Agrave", b"Aacute", b"Acirc", b"Atilde", b"Auml", b"Aring",
    b"AElig", b"Ccedil", b"Egrave", b"Eacute", b"Ecirc", b"Euml", b"Igrave", b"Iacute", b"Icirc",
    b"Iuml", b"ETH", b"Ntilde", b"Ograve", b"Oacute", b"Ocirc", b"Otilde", b"Ouml", b"times",
    b"Oslash", b"Ugrave", b"Uacute", b"Ucirc", b"Uuml", b"Yacute", b"THORN", b"szlig", b"agrave",
    b"aacute", b"acirc", b"atilde", b"auml", b"aring", b"aelig", b"ccedil", b"egrave", b"eacute",
    b"ecirc", b"euml", b"igrave", b"iacute", b"icirc", b"iuml", b"eth", b"ntilde", b"ograve",
    b"oacute", b"ocirc", b"otilde", b"ouml", b"divide", b"oslash", b"ugrave", b"uacute", b"ucirc",
    b"uuml", b"yacute", b"thorn", b"yuml",
];

fn named_entity(name: &[u8]) -> Option<char> {
    if let Some(&(_, c)) = NAMED_ENTITIES.iter().find(|(n, _)| *n == name) {
        return Some(c);
    }
    let i = LATIN1_ENTITIES.iter().position(|n| *n == name)?;
    char::from_u32(0xA0 + i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole view of `body` fed in blocks of `block` bytes, and the
    /// body offset of `needle` found in it.
    fn view_of(kind: ViewKind, body: &[u8], block: usize, needle: &[u8]) -> Vec<u64> {
        let m = Matcher::new(&[needle]);
        let mut v = View::new(kind);
        let mut hits = vec![];
        for b in body.chunks(block.max(1)) {
            v.feed(&m, b, &mut |_, off| hits.push(off));
        }
        v.finish(&m, &mut |_, off| hits.push(off));
        // Text without escapes left is seen by every JSON layer.
        hits.sort_unstable();
        hits.dedup();
        hits
    }

    #[test]
    fn escapes_decode_and_map_back_at_any_block_size() {
        let cases: [(ViewKind, &[u8], &[u8], u64); 7] = [
            (
                ViewKind::Json,
                b"xx {\"p\":\"Tr0ub\\u0026dor\\u003c3\"}",
                b"Tr0ub&dor<3",
                9,
            ),
            (
                ViewKind::Json,
                b"\\n \"Z\\u00FCrich-\\ud83d\\ude00!\"",
                b"Z\xc3\xbcrich-\xf0\x9f\x98\x80!",
                4,
            ),
            (
                ViewKind::Html,
                b"<a>&amp;x &#34;Tr0&#039;ub&#x3C;&lt;&uuml;</a>",
                b"\"Tr0'ub<<\xc3\xbc",
                10,
            ),
            (
                ViewKind::Percent,
                b"a=%2 b=Kq8%2bLw3/Zx7%2BV",
                b"Kq8+Lw3/Zx7+V",
                7,
            ),
            (
                ViewKind::Percent,
                b"Kq8%2bLw3/Zx7%2BV%",
                b"Kq8+Lw3/Zx7+V",
                0,
            ),
            (ViewKind::Json, b"\\uD83D", b"\\uD83D", 0),
            (
                ViewKind::Html,
                b"&amp &notanentity; &#0; x&y",
                b"&notanentity; &#0; x&y",
                5,
            ),
        ];
        for (kind, body, needle, at) in cases {
            for block in 1..=body.len() {
                assert_eq!(
                    view_of(kind, body, block, needle),
                    vec![at],
                    "{kind:?} {block}"
                );
            }
        }
    }

    #[test]
    fn needed_views_follow_the_credential_bytes() {
        assert_eq!(views_needed([&b"sk_live_4eC39HqLyjWDarjtT1zdp7dc"[..]]), 0);
        assert_eq!(
            views_needed([&b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.dozjg-N_x"[..]]),
            0
        );
        assert_eq!(views_needed([&b"Kq8+Lw3/Zx7="[..]]), 7);
        assert_eq!(views_needed(["Zürich".as_bytes()]), 7);
        assert_eq!(views_needed([&b"a!b*c(d)"[..]]), 4);
    }
}
