//! Multi-needle streaming search: one pass over a response for every form of
//! every credential.  Chunks are searched in place; only a carry of
//! (longest needle − 1) bytes is copied to find matches across chunk boundaries.
//!
//! Why anchors: an overlapping Aho-Corasick scan cannot use a SIMD prefilter,
//! and credential forms share prefixes (`sk_live_`, `ghp_`, `eyJhbGciOi`,
//! `Bearer `) that API bodies are full of.  Each needle is instead represented
//! by a short *anchor*, the rarest-looking window of its bytes (usually inside
//! the random part), all anchors one length; a leftmost-first search over the
//! anchors runs on aho-corasick's packed (Teddy) searcher for up to 64 of them,
//! and every anchor hit is verified against the needles that own it.  Restarting
//! one byte after each hit keeps every overlapping occurrence of every needle.

use aho_corasick::{
    packed, AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, Input, MatchKind, Span,
};

use memchr::memmem;
use zeroize::Zeroizing;

/// Anchors are this long (or the shortest needle, if shorter).
pub const ANCHOR_LEN: usize = 8;
/// Below this the anchors would hit too often: plain overlapping automaton.
pub const MIN_ANCHOR_LEN: usize = 4;
/// Anchors per searcher: aho-corasick's Teddy takes up to 64, and gets slower
/// well before that; more anchors mean more passes over the same bytes.
pub const ANCHOR_GROUP: usize = 64;
/// Input size from which the matcher builds an automaton for the anchors.
pub const LARGE_HAYSTACK: u64 = 256 * 1024;
/// A matcher built for one search of less than this uses a window filter
/// for its anchors: nearly free to build, slower to scan than Teddy (whose
/// build and teardown cost more than scanning a few KiB).
pub const ONCE_SMALL_HAYSTACK: u64 = 16 * 1024;
/// Bits of the window filter (a power of two).
const WINDOW_FILTER_BITS: usize = 4096;

enum Engine {
    None,
    Single(Box<memmem::Finder<'static>>),
    Anchored(Anchored),
    Multi(AhoCorasick),
}

struct Anchored {
    /// Leftmost-first searchers over the distinct anchors (all the same
    /// length), at most `ANCHOR_GROUP` each so each stays on Teddy; group g
    /// holds anchors `g * ANCHOR_GROUP ..`.
    groups: Vec<AnchorSearcher>,
    /// The owners of anchor a are `owners[owner_start[a]..owner_start[a + 1]]`:
    /// (engine needle index, offset of the anchor in it).
    owner_start: Vec<u32>,
    owners: Vec<(u32, u32)>,
    /// Every needle's bytes, one after the other; needle i is `spans[i]`.
    bytes: Vec<u8>,
    spans: Vec<(u32, u32)>,
}

/// The anchors' searcher.  A matcher is built for a pair's credentials the
/// first time they are seen (used once) and again when they come back (then
/// cached, `leak::cache`), so its build cost counts as much as its speed: a
/// window filter for one use over a small response, Teddy alone (no
/// automaton) for small haystacks when the CPU has it, else a contiguous NFA
/// (never a DFA: its build dominated replay of small pairs, 3.4× fewer pairs/s).
enum AnchorSearcher {
    Teddy(packed::Searcher),
    Automaton(AhoCorasick),
    Windows(WindowFilter),
}

/// How a matcher will be used, which decides what it is worth building.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    /// Searched many times (kept in a cache), on inputs of about `hint` bytes.
    Reused { hint: u64 },
    /// Searched once, over about `hint` bytes.
    Once { hint: u64 },
}

impl Build {
    fn large(self) -> bool {
        match self {
            Build::Reused { hint } | Build::Once { hint } => hint >= LARGE_HAYSTACK,
        }
    }

    fn window_filter(self) -> bool {
        matches!(self, Build::Once { hint } if hint < ONCE_SMALL_HAYSTACK)
    }
}

/// Anchors (all `len` bytes, 4 to 8) found by their four-byte windows.
/// Every window of every anchor (`len − 3` of them) goes into a 4096-bit
/// filter and a sorted table; the haystack is probed only every `len − 3`
/// bytes, since each occurrence of an anchor has exactly one of its windows
/// at such a position.  A probe that passes the filter looks the window up
/// and checks the anchors it may belong to.  Building it is a few stores and
/// a small sort.
struct WindowFilter {
    len: usize,
    /// Probe every `stride` bytes (`len − 3`).
    stride: usize,
    filter: Box<[u64; WINDOW_FILTER_BITS / 64]>,
    /// (window bytes little-endian, anchor, offset of the window in it),
    /// grouped by the filter word their hash falls in: word j's windows are
    /// `windows[word_start[j]..word_start[j + 1]]`.
    windows: Windows,
    word_start: Box<[u32; WINDOW_FILTER_BITS / 64 + 1]>,
    /// Every anchor's bytes as one integer (`anchor_key`).
    keys: Zeroizing<Vec<u64>>,
}

/// A window filter's table; the windows (anchor bytes) zeroized when dropped.
#[derive(Default)]
struct Windows(Vec<(u32, u32, u32)>);

impl Drop for Windows {
    fn drop(&mut self) {
        self.0.fill((0, 0, 0));
    }
}

fn window_hash(w: u32) -> usize {
    (w.wrapping_mul(0x9E37_79B1) >> (32 - WINDOW_FILTER_BITS.trailing_zeros())) as usize
}

fn window_at(hay: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(hay[i..i + 4].try_into().expect("four bytes"))
}

/// A window filter's buffers, kept for the next one (emptied and zeroized).
struct WindowParts {
    filter: Box<[u64; WINDOW_FILTER_BITS / 64]>,
    windows: Windows,
    word_start: Box<[u32; WINDOW_FILTER_BITS / 64 + 1]>,
    keys: Zeroizing<Vec<u64>>,
}

impl WindowParts {
    fn new() -> Self {
        WindowParts {
            filter: Box::new([0; WINDOW_FILTER_BITS / 64]),
            windows: Windows::default(),
            word_start: Box::new([0; WINDOW_FILTER_BITS / 64 + 1]),
            keys: Zeroizing::new(Vec::new()),
        }
    }
}

impl WindowFilter {
    /// Over the anchors `keys` (each `len` bytes as an integer, 4 ≤ len ≤ 8).
    fn new(keys: &[u64], len: usize, parts: Option<WindowParts>) -> Self {
        debug_assert!((4..=8).contains(&len));
        let stride = len - 3;
        let WindowParts {
            mut filter,
            mut windows,
            mut word_start,
            keys: mut own_keys,
        } = parts.unwrap_or_else(WindowParts::new);
        filter.fill(0);
        word_start.fill(0);
        let window = |key: u64, k: usize| (key >> (8 * k)) as u32;
        for &key in keys {
            for k in 0..stride {
                let h = window_hash(window(key, k));
                filter[h / 64] |= 1 << (h % 64);
                word_start[h / 64 + 1] += 1;
            }
        }
        // Counting sort by filter word.
        let mut sum = 0;
        for x in word_start.iter_mut() {
            sum += *x;
            *x = sum;
        }
        let mut fill = *word_start;
        windows.0.clear();
        windows.0.resize(keys.len() * stride, (0, 0, 0));
        for (a, &key) in keys.iter().enumerate() {
            for k in 0..stride {
                let w = window(key, k);
                let j = window_hash(w) / 64;
                windows.0[fill[j] as usize] = (w, a as u32, k as u32);
                fill[j] += 1;
            }
        }
        own_keys.clear();
        own_keys.extend_from_slice(keys);
        WindowFilter {
            len,
            stride,
            filter,
            windows,
            word_start,
            keys: own_keys,
        }
    }

    /// Its buffers, zeroized, for the next filter.
    fn into_parts(self) -> WindowParts {
        let WindowFilter {
            filter,
            mut windows,
            word_start,
            mut keys,
            ..
        } = self;
        zeroize::Zeroize::zeroize(&mut *keys);
        windows.0.fill((0, 0, 0));
        windows.0.clear();
        WindowParts {
            filter,
            windows,
            word_start,
            keys,
        }
    }

    /// Leftmost anchor starting at or after `at` (anchors are distinct and
    /// of one length, so at most one matches at a position).
    fn find(&self, hay: &[u8], at: usize) -> Option<(usize, usize)> {
        let (len, stride) = (self.len, self.stride);
        if hay.len() < len {
            return None;
        }
        // The probe at i sees the anchors starting in (i − stride, i].
        let mut i = at.div_ceil(stride) * stride;
        while let Some(next) = self.next_probe_hit(hay, i) {
            i = next;
            let w = window_at(hay, i);
            let h = window_hash(w);
            let word = &self.windows.0
                [self.word_start[h / 64] as usize..self.word_start[h / 64 + 1] as usize];
            let mut best: Option<(usize, usize)> = None;
            for &(ew, a, k) in word {
                if ew != w {
                    continue;
                }
                let Some(p) = i.checked_sub(k as usize) else {
                    continue;
                };
                let a = a as usize;
                if p >= at
                    && p + len <= hay.len()
                    && best.is_none_or(|(b, _)| p < b)
                    && anchor_key(&hay[p..p + len]) == self.keys[a]
                {
                    best = Some((p, a));
                }
            }
            if best.is_some() {
                return best;
            }
            i += stride;
        }
        None
    }

    /// The first probe position from `i` on (`i`, `i + stride`, …) whose
    /// window passes the filter.  Not inlined: alone, its loop keeps
    /// everything in registers.
    #[inline(never)]
    fn next_probe_hit(&self, hay: &[u8], mut i: usize) -> Option<usize> {
        let filter = &*self.filter;
        let stride = self.stride;
        while i + 4 <= hay.len() {
            let h = window_hash(window_at(hay, i));
            if filter[h / 64] & (1 << (h % 64)) != 0 {
                return Some(i);
            }
            i += stride;
        }
        None
    }
}

impl AnchorSearcher {
    /// `large`: the haystack is big enough to repay building an automaton,
    /// whose own prefilter choice (rare bytes, Teddy) scans large bodies
    /// faster than bare Teddy (measured: 1.7× on 1 MiB bodies in replay).
    fn new(anchors: &[&[u8]], build: Build) -> Self {
        debug_assert!(!build.window_filter());
        let large = build.large();
        let teddy = packed::Config::new()
            .match_kind(packed::MatchKind::LeftmostFirst)
            .builder()
            .extend(anchors)
            .build();
        match teddy.filter(|_| !large) {
            Some(t) => AnchorSearcher::Teddy(t),
            None => AnchorSearcher::Automaton(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::LeftmostFirst)
                    .kind(Some(AhoCorasickKind::ContiguousNFA))
                    .build(anchors)
                    .expect("aho-corasick over a bounded anchor set builds"),
            ),
        }
    }

    /// (start, anchor index) of the leftmost anchor at or after `at`.
    fn find(&self, hay: &[u8], at: usize) -> Option<(usize, usize)> {
        match self {
            AnchorSearcher::Teddy(t) => t
                .find_in(hay, Span::from(at..hay.len()))
                .map(|m| (m.start(), m.pattern().as_usize())),
            AnchorSearcher::Automaton(ac) => ac
                .find(Input::new(hay).span(at..hay.len()))
                .map(|m| (m.start(), m.pattern().as_usize())),
            AnchorSearcher::Windows(w) => w.find(hay, at),
        }
    }
}

impl Drop for Anchored {
    fn drop(&mut self) {
        // Credential forms: do not leave them in freed memory.
        zeroize::Zeroize::zeroize(&mut self.bytes);
    }
}

/// How common a byte is in HTTP/JSON/HTML text (higher = more common); a
/// coarse version of the byte-frequency tables of memchr and regex.  A table:
/// it is looked up for every byte of every needle of every pair.
fn commonness(b: u8) -> u32 {
    COMMONNESS[b as usize] as u32
}

static COMMONNESS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = commonness_of(i as u8);
        i += 1;
    }
    t
};

const fn commonness_of(b: u8) -> u8 {
    match b {
        b' ' | b'"' | b'e' | b't' | b'a' | b'o' | b'i' | b'n' | b's' | b'r' => 10,
        b'h' | b'l' | b'd' | b'c' | b'u' | b'm' | b':' | b',' | b'/' | b'<' | b'>' | b'='
        | b'\n' | b'.' | b'-' | b'_' | b'{' | b'}' => 8,
        b'0'..=b'9' => 6,
        b'a'..=b'z' => 5,
        b'%' | b'&' | b'\\' | b'+' | b'[' | b']' | b'(' | b')' | b';' | b'\'' | b'\r' | b'\t'
        | b'#' | b'?' | b'!' | b'*' | b'@' => 5,
        b'A'..=b'Z' | 0x80..=0xff => 3,
        _ => 1,
    }
}

/// Offset of the `len`-byte window of `needle` least likely to occur by chance:
/// rare bytes, no repeats, away from the (shared, public) vendor prefix; the
/// rightmost on ties, where the random part of a token usually is.
fn anchor_offset(needle: &[u8], len: usize) -> usize {
    let n = needle.len();
    let prefix_zone = (n / 3).min(12);
    let rep = |w: &[u8]| 4 * u32::from(w[0] == w[1]);
    // Rolling window sums: O(needle) per needle, built once per matcher.
    // Moving the window from start − 1 to start drops byte start − 1 and the
    // pair (start − 1, start), and takes byte start + len − 1 and the pair
    // (start + len − 2, start + len − 1); zipped slices, no index checks.
    let mut common: u32 = needle[..len].iter().map(|&b| commonness(b)).sum();
    let mut repeats: u32 = needle[..len].windows(2).map(rep).sum();
    let mut best = (common + repeats + if prefix_zone > 0 { 8 } else { 0 }, 0);
    let moves = needle[..n - len]
        .iter()
        .zip(&needle[len..])
        .zip(needle[..=n - len].windows(2))
        .zip(needle[len - 1..].windows(2));
    for (i, (((&out, &inc), out_pair), in_pair)) in moves.enumerate() {
        let start = i + 1;
        common = common + commonness(inc) - commonness(out);
        repeats = repeats + rep(in_pair) - rep(out_pair);
        let score = common + repeats + if start < prefix_zone { 8 } else { 0 };
        if score <= best.0 {
            best = (score, start);
        }
    }
    best.1
}

/// An anchor (at most 8 bytes) as one integer, to compare and deduplicate cheaply.
fn anchor_key(a: &[u8]) -> u64 {
    let n = a.len();
    match (a.first_chunk::<4>(), a.last_chunk::<4>()) {
        // Two (overlapping) four-byte reads: no byte-wise copy through
        // memory, which the eight-byte read after it would have to wait for.
        (Some(lo), Some(hi)) if n <= 8 => {
            u64::from(u32::from_le_bytes(*lo)) | u64::from(u32::from_le_bytes(*hi)) << (8 * (n - 4))
        }
        _ => {
            let mut k = [0u8; 8];
            k[..n].copy_from_slice(a);
            u64::from_le_bytes(k)
        }
    }
}

/// The buffers of a matcher, emptied (and zeroized where they held needle
/// bytes) for the next one: a matcher built for one use gives them back
/// ([`Matcher::recycle`]) so the next one-use matcher allocates nothing.
#[derive(Default)]
pub struct MatcherParts {
    ids: Vec<usize>,
    /// Build temporaries: distinct anchors as integers, where each first
    /// occurs (needle, offset), each needle's (anchor, offset).
    keys: Zeroizing<Vec<u64>>,
    anchor_at: Vec<(u32, u32)>,
    of_needle: Vec<(u32, u32)>,
    fill: Vec<u32>,
    owner_start: Vec<u32>,
    owners: Vec<(u32, u32)>,
    bytes: Zeroizing<Vec<u8>>,
    spans: Vec<(u32, u32)>,
    groups: Vec<AnchorSearcher>,
    window: Option<WindowParts>,
}

impl MatcherParts {
    /// Holds no needle bytes, anchors or windows (only capacity).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
            && self.bytes.is_empty()
            && self.ids.is_empty()
            && self.spans.is_empty()
            && self.groups.is_empty()
            && self
                .window
                .as_ref()
                .is_none_or(|w| w.keys.is_empty() && w.windows.0.is_empty())
    }
}

/// Kept buffers larger than this (bytes) are freed instead.
const KEEP_PART_BYTES: usize = 64 * 1024;

fn kept<T>(mut v: Vec<T>) -> Vec<T> {
    v.clear();
    if v.capacity() * std::mem::size_of::<T>() > KEEP_PART_BYTES {
        Vec::new()
    } else {
        v
    }
}

impl Anchored {
    /// Over needles `0..n` (`needle(i)`, none empty, none shorter than `len`);
    /// `flat`, when given, is all of them one after the other.
    fn new<'a>(
        n: usize,
        needle: impl Fn(usize) -> &'a [u8],
        flat: Option<&[u8]>,
        len: usize,
        build: Build,
        parts: &mut MatcherParts,
    ) -> Self {
        debug_assert!(len <= 8);
        // Distinct anchors, and each needle's (anchor, offset).
        let keys = &mut parts.keys;
        let anchor_at = &mut parts.anchor_at;
        let of_needle = &mut parts.of_needle;
        keys.clear();
        anchor_at.clear();
        of_needle.clear();
        of_needle.reserve(n);
        let mut spans = std::mem::take(&mut parts.spans);
        spans.clear();
        spans.reserve(n);
        let mut total = 0;
        for i in 0..n {
            let nd = needle(i);
            spans.push((total as u32, nd.len() as u32));
            total += nd.len();
            // A one-use window filter over a few KiB gains little from the
            // rarest window; the last one (the random end of a key, in nearly
            // every form) is taken without scoring every window.
            let off = if build.window_filter() {
                nd.len() - len
            } else {
                anchor_offset(nd, len)
            };
            let k = anchor_key(&nd[off..off + len]);
            let id = match keys.iter().position(|&x| x == k) {
                Some(id) => id,
                None => {
                    keys.push(k);
                    anchor_at.push((i as u32, off as u32));
                    keys.len() - 1
                }
            };
            of_needle.push((id as u32, off as u32));
        }
        let anchors = keys.len();
        // Owners grouped by anchor (counting sort, needle order kept).
        let mut owner_start = std::mem::take(&mut parts.owner_start);
        owner_start.clear();
        owner_start.resize(anchors + 1, 0);
        for &(a, _) in of_needle.iter() {
            owner_start[a as usize + 1] += 1;
        }
        let mut sum = 0;
        for x in owner_start.iter_mut() {
            sum += *x;
            *x = sum;
        }
        let fill = &mut parts.fill;
        fill.clear();
        fill.extend_from_slice(&owner_start);
        let mut owners = std::mem::take(&mut parts.owners);
        owners.clear();
        owners.resize(n, (0, 0));
        for (i, &(a, off)) in of_needle.iter().enumerate() {
            owners[fill[a as usize] as usize] = (i as u32, off);
            fill[a as usize] += 1;
        }
        let mut groups = std::mem::take(&mut parts.groups);
        groups.clear();
        if build.window_filter() {
            for g in keys.chunks(ANCHOR_GROUP) {
                groups.push(AnchorSearcher::Windows(WindowFilter::new(
                    g,
                    len,
                    parts.window.take(),
                )));
            }
        } else {
            let slices: Vec<&[u8]> = anchor_at
                .iter()
                .map(|&(i, off)| &needle(i as usize)[off as usize..off as usize + len])
                .collect();
            groups.extend(
                slices
                    .chunks(ANCHOR_GROUP)
                    .map(|g| AnchorSearcher::new(g, build)),
            );
        }
        // The anchors are needle bytes.
        zeroize::Zeroize::zeroize(&mut **keys);
        let mut bytes = std::mem::take(&mut *parts.bytes);
        bytes.clear();
        if bytes.capacity() < total {
            zeroize::Zeroize::zeroize(&mut bytes);
            bytes = Vec::with_capacity(total);
        }
        match flat {
            Some(all) if all.len() == total => bytes.extend_from_slice(all),
            _ => (0..n).for_each(|i| bytes.extend_from_slice(needle(i))),
        }
        Anchored {
            groups,
            owner_start,
            owners,
            bytes,
            spans,
        }
    }

    /// Gives its buffers back to `parts`, needle bytes zeroized.
    fn recycle(mut self, parts: &mut MatcherParts) {
        zeroize::Zeroize::zeroize(&mut self.bytes);
        for g in self.groups.drain(..) {
            if let AnchorSearcher::Windows(w) = g {
                if parts.window.is_none() {
                    parts.window = Some(w.into_parts());
                }
            }
        }
        *parts.bytes = kept(std::mem::take(&mut self.bytes));
        parts.groups = kept(std::mem::take(&mut self.groups));
        parts.owner_start = kept(std::mem::take(&mut self.owner_start));
        parts.owners = kept(std::mem::take(&mut self.owners));
        parts.spans = kept(std::mem::take(&mut self.spans));
        parts.anchor_at = kept(std::mem::take(&mut parts.anchor_at));
        parts.of_needle = kept(std::mem::take(&mut parts.of_needle));
        parts.fill = kept(std::mem::take(&mut parts.fill));
        *parts.keys = kept(std::mem::take(&mut *parts.keys));
        if let Some(w) = &mut parts.window {
            if w.windows.0.capacity() * 12 > KEEP_PART_BYTES {
                w.windows = Windows::default();
            }
            if w.keys.capacity() * 8 > KEEP_PART_BYTES {
                w.keys = Zeroizing::new(Vec::new());
            }
        }
    }

    fn needle(&self, id: usize) -> &[u8] {
        let (start, len) = self.spans[id];
        &self.bytes[start as usize..(start + len) as usize]
    }

    /// Every occurrence of every needle in `hay`, ending after `min_end`.
    fn search(&self, hay: &[u8], min_end: usize, mut on: impl FnMut(usize, usize)) {
        for (g, searcher) in self.groups.iter().enumerate() {
            let base = g * ANCHOR_GROUP;
            let mut at = 0;
            while at < hay.len() {
                let Some((p, anchor)) = searcher.find(hay, at) else {
                    break;
                };
                let a = base + anchor;
                let owners =
                    &self.owners[self.owner_start[a] as usize..self.owner_start[a + 1] as usize];
                for &(id, off) in owners {
                    let n = self.needle(id as usize);
                    let Some(s) = p.checked_sub(off as usize) else {
                        continue;
                    };
                    let e = s + n.len();
                    if e > min_end && e <= hay.len() && hay[s..e] == n[..] {
                        on(id as usize, s);
                    }
                }
                // Not m.end(): another anchor (or this one) may start inside this hit.
                at = p + 1;
            }
        }
    }
}

/// Finds every (overlapping) occurrence of every needle; needles are reported by index.
pub struct Matcher {
    engine: Engine,
    max_len: usize,
    /// Engine pattern index → caller's needle index (empty needles dropped).
    ids: Vec<usize>,
}

/// Per-stream state: bytes seen so far and the carry across the last boundary.
#[derive(Default)]
pub struct StreamState {
    carry: Vec<u8>,
    pos: u64,
}

impl Drop for StreamState {
    fn drop(&mut self) {
        // The carry may hold credential bytes echoed by the response.
        zeroize::Zeroize::zeroize(&mut self.carry);
    }
}

impl StreamState {
    pub fn new() -> Self {
        Self::default()
    }
    /// Bytes fed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// At the start of a stream, nothing carried.
    pub fn is_empty(&self) -> bool {
        self.pos == 0 && self.carry.is_empty()
    }

    /// Back to the start of a stream, the carry zeroized (its buffer kept
    /// unless large).
    pub fn reset(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.carry);
        if self.carry.capacity() > KEEP_PART_BYTES {
            self.carry = Vec::new();
        }
        self.pos = 0;
    }
}

impl Matcher {
    /// Empty needles are never reported (they would match everywhere).
    pub fn new<P: AsRef<[u8]>>(needles: &[P]) -> Self {
        Self::for_haystack(needles, 0)
    }

    /// As [`Matcher::new`], tuned for about `haystack_hint` bytes of input
    /// (cheap to build for small responses, fast to scan for large ones).
    pub fn for_haystack<P: AsRef<[u8]>>(needles: &[P], haystack_hint: u64) -> Self {
        Self::build(
            needles,
            Build::Reused {
                hint: haystack_hint,
            },
        )
    }

    /// As [`Matcher::new`], built for `how` it will be used.
    pub fn build<P: AsRef<[u8]>>(needles: &[P], how: Build) -> Self {
        Self::build_in(
            needles.len(),
            |i| needles[i].as_ref(),
            None,
            how,
            &mut MatcherParts::default(),
        )
    }

    /// As [`Matcher::build`] over needles `0..n` (`needle(i)`), taking its
    /// buffers from `parts` (see [`Matcher::recycle`]).  `flat`, when
    /// given, is every needle one after the other (saves copying them one
    /// by one).
    pub fn build_in<'a>(
        n: usize,
        needle: impl Fn(usize) -> &'a [u8],
        flat: Option<&[u8]>,
        how: Build,
        parts: &mut MatcherParts,
    ) -> Self {
        let mut ids = std::mem::take(&mut parts.ids);
        ids.clear();
        ids.reserve(n);
        let (mut max_len, mut min_len) = (0, usize::MAX);
        for i in 0..n {
            let len = needle(i).len();
            if len > 0 {
                ids.push(i);
                min_len = min_len.min(len);
            }
            max_len = max_len.max(len);
        }
        // Empty needles are not part of the engine's: no flat copy then.
        let flat = flat.filter(|_| ids.len() == n);
        let engine = match ids.len() {
            0 => Engine::None,
            1 => Engine::Single(Box::new(memmem::Finder::new(needle(ids[0])).into_owned())),
            _ if min_len >= MIN_ANCHOR_LEN => Engine::Anchored(Anchored::new(
                ids.len(),
                |j| needle(ids[j]),
                flat,
                min_len.min(ANCHOR_LEN),
                how,
                parts,
            )),
            _ => Engine::Multi(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::Standard)
                    .kind(Some(AhoCorasickKind::ContiguousNFA))
                    .build(ids.iter().map(|&i| needle(i)))
                    .expect("aho-corasick over a bounded needle set builds"),
            ),
        };
        Matcher {
            engine,
            max_len,
            ids,
        }
    }

    /// Gives the matcher's buffers back to `parts` for the next
    /// [`Matcher::build_in`], zeroizing the needle bytes they held.
    pub fn recycle(mut self, parts: &mut MatcherParts) {
        parts.ids = kept(std::mem::take(&mut self.ids));
        if let Engine::Anchored(a) = std::mem::replace(&mut self.engine, Engine::None) {
            a.recycle(parts);
        }
    }

    pub fn longest_needle(&self) -> usize {
        self.max_len
    }

    fn search(&self, hay: &[u8], base: u64, min_end: usize, on: &mut dyn FnMut(usize, u64)) {
        match &self.engine {
            Engine::None => {}
            Engine::Single(f) => {
                let n = f.needle().len();
                // First start whose end is past `min_end`.
                let from = min_end.saturating_sub(n - 1).min(hay.len());
                // Overlapping occurrences too (`aa` twice in `aaa`), like the automaton.
                let mut at = from;
                while let Some(s) = f.find(&hay[at..]) {
                    on(self.ids[0], base + (at + s) as u64);
                    at += s + 1;
                }
            }
            Engine::Anchored(a) => a.search(hay, min_end, |id, start| {
                on(self.ids[id], base + start as u64)
            }),
            Engine::Multi(ac) => {
                for m in ac.find_overlapping_iter(hay) {
                    if m.end() > min_end {
                        on(self.ids[m.pattern().as_usize()], base + m.start() as u64);
                    }
                }
            }
        }
    }

    /// Feeds the next chunk of a stream; `on(needle, absolute_offset)` for each match.
    pub fn feed(&self, st: &mut StreamState, chunk: &[u8], on: &mut dyn FnMut(usize, u64)) {
        self.feed_seeing_carry(st, chunk, &mut |i, off, _| on(i, off));
    }

    /// As [`Matcher::feed`], `on` also given the bytes of the stream just
    /// before `chunk` (the carry, up to the longest needle − 1 bytes): what
    /// precedes a match near the chunk's start.
    pub fn feed_seeing_carry(
        &self,
        st: &mut StreamState,
        chunk: &[u8],
        on: &mut dyn FnMut(usize, u64, &[u8]),
    ) {
        if chunk.is_empty() {
            return;
        }
        let keep = self.max_len.saturating_sub(1);
        if !matches!(self.engine, Engine::None) {
            // Matches straddling the boundary: start in the carry, end in this chunk.
            if !st.carry.is_empty() {
                let carry_len = st.carry.len();
                let head = &chunk[..keep.min(chunk.len())];
                let mut window = Vec::with_capacity(carry_len + head.len());
                window.extend_from_slice(&st.carry);
                window.extend_from_slice(head);
                let base = st.pos - carry_len as u64;
                let mut filtered = |i: usize, off: u64| {
                    if off < st.pos {
                        on(i, off, &st.carry)
                    }
                };
                self.search(&window, base, carry_len, &mut filtered);
                zeroize::Zeroize::zeroize(&mut window);
            }
            self.search(chunk, st.pos, 0, &mut |i, off| on(i, off, &st.carry));
        }
        st.pos += chunk.len() as u64;
        if keep > 0 {
            if chunk.len() >= keep {
                zeroize::Zeroize::zeroize(&mut st.carry);
                st.carry.clear();
                st.carry.reserve_exact(keep);
                st.carry.extend_from_slice(&chunk[chunk.len() - keep..]);
            } else {
                st.carry.extend_from_slice(chunk);
                let excess = st.carry.len().saturating_sub(keep);
                if excess > 0 {
                    st.carry.drain(..excess);
                }
            }
        }
    }

    /// Every match in `hay` (one whole input: [`Matcher::find_in_chunks`]
    /// over one chunk, without a carry).
    pub fn find_in(&self, hay: &[u8], mut on: impl FnMut(usize, u64)) {
        if !hay.is_empty() {
            self.search(hay, 0, 0, &mut on);
        }
    }

    /// Searches a whole chunked stream.
    pub fn find_in_chunks<'a, I>(&self, chunks: I, mut on: impl FnMut(usize, u64))
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let mut st = StreamState::new();
        for c in chunks {
            self.feed(&mut st, c, &mut on);
        }
    }
}

/// Baseline for benchmarks: one memmem pass per needle over the same chunks
/// (with the same carry), reporting every match.
pub fn naive_find_in_chunks<P: AsRef<[u8]>>(
    needles: &[P],
    chunks: &[&[u8]],
    mut on: impl FnMut(usize, u64),
) {
    for (i, n) in needles.iter().enumerate() {
        if n.as_ref().is_empty() {
            continue;
        }
        let m = Matcher {
            engine: Engine::Single(Box::new(memmem::Finder::new(n.as_ref()).into_owned())),
            max_len: n.as_ref().len(),
            ids: vec![0],
        };
        m.find_in_chunks(chunks.iter().copied(), |_, off| on(i, off));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(m: &Matcher, chunks: &[&[u8]]) -> Vec<(usize, u64)> {
        let mut v = vec![];
        m.find_in_chunks(chunks.iter().copied(), |i, o| v.push((i, o)));
        v.sort();
        v
    }

    #[test]
    fn single_and_multi_across_boundaries() {
        let m1 = Matcher::new(&[b"abcdef"]);
        let hay = b"xxabcdefyyabcdef";
        for split in 0..=hay.len() {
            let (a, b) = hay.split_at(split);
            assert_eq!(all(&m1, &[a, b]), vec![(0, 2), (0, 10)], "split {split}");
        }
        let m2 = Matcher::new(&[&b"abcdef"[..], b"cde", b"defyya"]);
        for split in 0..=hay.len() {
            let (a, b) = hay.split_at(split);
            assert_eq!(
                all(&m2, &[a, b]),
                vec![(0, 2), (0, 10), (1, 4), (1, 12), (2, 5)],
                "split {split}"
            );
        }
        // Byte-by-byte chunks.
        let bytes: Vec<&[u8]> = hay.chunks(1).collect();
        assert_eq!(all(&m2, &bytes).len(), 5);
        let mut naive = vec![];
        naive_find_in_chunks(&[&b"abcdef"[..], b"cde", b"defyya"], &bytes, |i, o| {
            naive.push((i, o))
        });
        naive.sort();
        assert_eq!(naive, all(&m2, &[hay]));
    }

    /// Random needles over a small alphabet (so anchors repeat and overlap),
    /// planted in random haystacks split at a random point: every way of
    /// building finds exactly what one memmem pass per needle finds.
    #[test]
    fn every_build_finds_what_naive_finds() {
        let mut rng = crate::test_rng::XorShift::new(0x1234_5678_9abc_def1);
        let mut rnd = |n: usize| rng.below(n);
        let alpha = b"abcXY_%";
        let builds = [
            Build::Once { hint: 0 },
            Build::Once {
                hint: ONCE_SMALL_HAYSTACK,
            },
            Build::Reused { hint: 0 },
            Build::Reused {
                hint: LARGE_HAYSTACK,
            },
        ];
        for case in 0..400 {
            let needles: Vec<Vec<u8>> = (0..1 + rnd(12))
                .map(|_| (0..4 + rnd(10)).map(|_| alpha[rnd(alpha.len())]).collect())
                .collect();
            let mut hay: Vec<u8> = (0..rnd(300)).map(|_| alpha[rnd(alpha.len())]).collect();
            for _ in 0..rnd(6) {
                let n = &needles[rnd(needles.len())];
                let at = rnd(hay.len() + 1);
                hay.splice(at..at, n.iter().copied());
            }
            let split = rnd(hay.len() + 1);
            let chunks: [&[u8]; 2] = [&hay[..split], &hay[split..]];
            let mut want = vec![];
            naive_find_in_chunks(&needles, &chunks, |i, o| want.push((i, o)));
            want.sort();
            let flat: Vec<u8> = needles.concat();
            let mut parts = MatcherParts::default();
            for b in builds {
                let m = Matcher::build(&needles, b);
                assert_eq!(all(&m, &chunks), want, "case {case} {b:?}");
                // Flat, in reused buffers: the same.
                let m = Matcher::build_in(
                    needles.len(),
                    |i| &needles[i][..],
                    Some(&flat),
                    b,
                    &mut parts,
                );
                assert_eq!(all(&m, &chunks), want, "case {case} {b:?} flat");
                m.recycle(&mut parts);
                assert!(parts.is_empty());
            }
        }
    }

    /// The rolling anchor choice is the plain per-window one.
    #[test]
    fn anchor_offset_is_the_best_window() {
        let reference = |needle: &[u8], len: usize| {
            let prefix_zone = (needle.len() / 3).min(12);
            let mut best = (u32::MAX, 0);
            for start in 0..=needle.len() - len {
                let w = &needle[start..start + len];
                let common: u32 = w.iter().map(|&b| commonness(b)).sum();
                let repeats: u32 = w.windows(2).map(|p| 4 * u32::from(p[0] == p[1])).sum();
                let score = common + repeats + if start < prefix_zone { 8 } else { 0 };
                if score <= best.0 {
                    best = (score, start);
                }
            }
            best.1
        };
        let mut rng = crate::test_rng::XorShift::new(0x2545_f491_4f6c_dd1d);
        for case in 0..2000 {
            let x = rng.next_u64();
            let n = 1 + (x % 60) as usize;
            let needle: Vec<u8> = (0..n)
                .map(|i| b"aaXk_9 e\"Q"[((x >> (i % 50)) as usize + i * 7) % 10])
                .collect();
            for len in 1..=n.min(8) {
                assert_eq!(
                    anchor_offset(&needle, len),
                    reference(&needle, len),
                    "case {case} len {len}"
                );
            }
        }
    }

    #[test]
    fn anchor_key_is_the_bytes_little_endian() {
        let b = b"\x01\x82\x03\xf4\x05\x06\x77\x08\x09";
        for n in 0..=8 {
            let mut k = [0u8; 8];
            k[..n].copy_from_slice(&b[..n]);
            assert_eq!(anchor_key(&b[..n]), u64::from_le_bytes(k), "len {n}");
        }
    }

    #[test]
    fn no_needles_no_matches() {
        let m = Matcher::new::<&[u8]>(&[]);
        assert!(all(&m, &[b"anything"]).is_empty());
        let m = Matcher::new(&[&b""[..], b"x"]);
        assert_eq!(all(&m, &[b"axa"]), vec![(1, 1)]);
    }
}
