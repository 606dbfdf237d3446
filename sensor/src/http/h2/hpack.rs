//! HPACK (RFC 7541) decoding of one direction's header blocks.
//!
//! Written here rather than taken from a crate: the maintained decoders are
//! either internal to an HTTP/2 stack (`h2`) or decode Huffman strings by
//! building hash maps per string and walking them bit by bit (`hpack`,
//! `loona-hpack`), which took ~120 µs per request on live curl/nginx traffic.
//! Huffman strings here go through an 11-bit table that gives the one or
//! two symbols it holds whole (the common characters), and canonical
//! decoding for longer codes and a string's last bits.

use std::collections::VecDeque;
use std::sync::OnceLock;

use super::huffman_cache;

/// Why a header block does not decode (the connection is then not followed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HpackError {
    /// An integer or string runs past the end of the block.
    Truncated,
    /// An integer longer than [`MAX_INTEGER_OCTETS`] continuation bytes.
    IntegerOverflow,
    /// Index 0, or past the static and dynamic tables.
    BadIndex,
    /// A table size update above what the peer allowed.
    TableSizeTooLarge,
    /// A Huffman string with EOS in it, or padding that is not EOS's prefix.
    BadHuffman,
}

/// Continuation bytes of an integer accepted: 4 carry 28 bits, enough for
/// any length or index a block can hold.
pub const MAX_INTEGER_OCTETS: usize = 4;
/// What RFC 7541 §4.1 adds to a name and value for an entry's size.
pub const ENTRY_OVERHEAD: usize = 32;

/// RFC 7541 Appendix A.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// RFC 7541 Appendix B: the code length of each symbol (256 is EOS).  The
/// code is canonical (codes assigned in order of length, then symbol), so
/// the lengths define it.
pub(crate) const HUFFMAN_CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

const MAX_CODE_LEN: usize = 30;
/// Bits looked up at once for up to two symbols (a 2,048-entry table).
const PAIR_BITS: u32 = 11;
const EOS: u16 = 256;

/// Decoding tables derived once from the code lengths.
struct Huffman {
    /// By the next [`PAIR_BITS`] bits: the one or two symbols whose codes
    /// they hold whole (common characters have 5–8 bit codes, so two often
    /// fit), packed: first symbol, second, bits used << 16, count << 24
    /// (0: the first code is longer).
    pairs: Box<[u32]>,
    /// Per length: the first code, how many codes, where its symbols start in `sorted`.
    first: [u32; MAX_CODE_LEN + 1],
    count: [u32; MAX_CODE_LEN + 1],
    start: [u32; MAX_CODE_LEN + 1],
    /// Symbols in code order.
    sorted: [u16; 257],
}

/// (code, length) of each symbol, assigned canonically.
pub(crate) fn huffman_codes() -> [(u32, u8); 257] {
    let mut order: Vec<u16> = (0..=EOS).collect();
    order.sort_by_key(|&s| (HUFFMAN_CODE_LENGTHS[s as usize], s));
    let mut codes = [(0u32, 0u8); 257];
    let mut code = 0u32;
    let mut prev_len = HUFFMAN_CODE_LENGTHS[order[0] as usize];
    for (k, &s) in order.iter().enumerate() {
        let len = HUFFMAN_CODE_LENGTHS[s as usize];
        if k > 0 {
            code = (code + 1) << (len - prev_len);
        }
        prev_len = len;
        codes[s as usize] = (code, len);
    }
    codes
}

fn huffman() -> &'static Huffman {
    static TABLES: OnceLock<Huffman> = OnceLock::new();
    TABLES.get_or_init(|| {
        let codes = huffman_codes();
        let mut h = Huffman {
            pairs: Box::new([]),
            first: [0; MAX_CODE_LEN + 1],
            count: [0; MAX_CODE_LEN + 1],
            start: [0; MAX_CODE_LEN + 1],
            sorted: [0; 257],
        };
        let mut order: Vec<u16> = (0..=EOS).collect();
        order.sort_by_key(|&s| codes[s as usize]);
        for (k, &s) in order.iter().enumerate() {
            let (code, len) = codes[s as usize];
            let len = len as usize;
            if h.count[len] == 0 {
                h.first[len] = code;
                h.start[len] = k as u32;
            }
            h.count[len] += 1;
            h.sorted[k] = s;
        }
        h.pairs = (0..1u32 << PAIR_BITS)
            .map(|bits| {
                let Some((first, l1)) = h.prefix(bits, PAIR_BITS) else {
                    return 0;
                };
                let rest = bits & ((1 << (PAIR_BITS - l1)) - 1);
                match h.prefix(rest, PAIR_BITS - l1) {
                    Some((second, l2)) => {
                        u32::from(first) | u32::from(second) << 8 | (l1 + l2) << 16 | 2 << 24
                    }
                    None => u32::from(first) | l1 << 16 | 1 << 24,
                }
            })
            .collect();
        h
    })
}

impl Huffman {
    /// The symbol whose code starts `bits` (`n` bits wide), when that
    /// whole code is in them.
    fn prefix(&self, bits: u32, n: u32) -> Option<(u16, u32)> {
        (5..=n.min(MAX_CODE_LEN as u32)).find_map(|len| {
            let code = bits >> (n - len);
            let i = code.wrapping_sub(self.first[len as usize]);
            (i < self.count[len as usize])
                .then(|| (self.sorted[(self.start[len as usize] + i) as usize], len))
        })
    }
}

/// Decodes a Huffman-coded string (RFC 7541 §5.2) onto `out`.
pub(crate) fn huffman_decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
    let h = huffman();
    // Bits not yet decoded, left-aligned in `acc`.
    let mut acc = 0u64;
    let mut nbits = 0u32;
    let mut at = 0;
    loop {
        while nbits <= 56 && at < src.len() {
            acc |= u64::from(src[at]) << (56 - nbits);
            nbits += 8;
            at += 1;
        }
        if nbits == 0 {
            return Ok(());
        }
        if nbits >= PAIR_BITS {
            let e = h.pairs[(acc >> (64 - PAIR_BITS)) as usize];
            let n = e >> 24;
            if n > 0 {
                out.push(e as u8);
                if n == 2 {
                    out.push((e >> 8) as u8);
                }
                let used = (e >> 16) & 0xff;
                acc <<= used;
                nbits -= used;
                continue;
            }
        }
        // A code longer than the table's bits, or the string's last bits.
        let n = nbits.min(MAX_CODE_LEN as u32);
        match h.prefix((acc >> (64 - n)) as u32, n) {
            Some((EOS, _)) => return Err(HpackError::BadHuffman),
            Some((sym, len)) => {
                out.push(sym as u8);
                acc <<= len;
                nbits -= len;
            }
            // What is left is padding: fewer than 8 bits, all ones (EOS's prefix).
            None => {
                let ones = !(u64::MAX >> nbits);
                return if nbits < 8 && acc & ones == ones {
                    Ok(())
                } else {
                    Err(HpackError::BadHuffman)
                };
            }
        }
    }
}

/// A dynamic table entry: name and value in one allocation.
struct Entry {
    bytes: Box<[u8]>,
    name_len: usize,
}

impl Entry {
    fn size(&self) -> usize {
        self.bytes.len() + ENTRY_OVERHEAD
    }
}

/// One direction's decoder: its dynamic table follows the peer's encoder.
pub(crate) struct Decoder {
    /// Newest first (index 62).
    table: VecDeque<Entry>,
    /// RFC 7541 size of the entries.
    size: usize,
    /// The table's maximum size now (the encoder's last size update).
    max_size: usize,
    /// Largest size update accepted (what the peer's SETTINGS allowed).
    allowed: usize,
    /// Huffman output and literal names, reused.
    scratch: Vec<u8>,
}

/// Where a decoded string is: in the block, or in `scratch`.
#[derive(Clone, Copy)]
enum Str {
    Block(usize, usize),
    Scratch(usize, usize),
}

impl Decoder {
    pub(crate) fn new(size: usize) -> Decoder {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            max_size: size,
            allowed: size,
            scratch: Vec::new(),
        }
    }

    /// The peer may now use a table of up to `size` bytes.  A larger table
    /// than the encoder uses decodes the same (it only evicts later), so the
    /// table grows at once; a smaller one is the encoder's to announce.
    pub(crate) fn allow(&mut self, size: usize) {
        if size > self.allowed {
            self.allowed = size;
            self.max_size = size;
        }
    }

    /// Memory held: entries (their RFC size covers their allocation and
    /// deque slot) and the scratch buffer.
    pub(crate) fn held(&self) -> usize {
        self.size + self.scratch.capacity()
    }

    /// Decodes `block`, handing each field to `field(name, value)` in order.
    pub(crate) fn decode(
        &mut self,
        block: &[u8],
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), HpackError> {
        let mut at = 0;
        while at < block.len() {
            self.scratch.clear();
            let b = block[at];
            if b & 0x80 != 0 {
                let index = integer(block, &mut at, 7)?;
                let (name, value) = self.get(index)?;
                field(name, value);
            } else if b & 0xe0 == 0x20 {
                let size = integer(block, &mut at, 5)?;
                if size > self.allowed {
                    return Err(HpackError::TableSizeTooLarge);
                }
                self.max_size = size;
                self.evict(0);
            } else {
                // Literal: with incremental indexing (01), without (0000),
                // never indexed (0001).
                let (prefix, index_it) = if b & 0xc0 == 0x40 {
                    (6, true)
                } else {
                    (4, false)
                };
                // Not a never-indexed literal (see huffman_cache).
                let cached = b & 0xf0 != 0x10;
                let name_index = integer(block, &mut at, prefix)?;
                let name = if name_index == 0 {
                    Some(self.string(block, &mut at, cached)?)
                } else {
                    None
                };
                let value = self.string(block, &mut at, cached)?;
                let value_bytes: &[u8] = match value {
                    Str::Block(a, e) => &block[a..e],
                    Str::Scratch(a, e) => &self.scratch[a..e],
                };
                let entry = match name {
                    Some(n) => {
                        let name_bytes: &[u8] = match n {
                            Str::Block(a, e) => &block[a..e],
                            Str::Scratch(a, e) => &self.scratch[a..e],
                        };
                        field(name_bytes, value_bytes);
                        index_it.then(|| join(name_bytes, value_bytes))
                    }
                    None => {
                        let (name_bytes, _) = self.get(name_index)?;
                        field(name_bytes, value_bytes);
                        index_it.then(|| join(name_bytes, value_bytes))
                    }
                };
                if let Some(entry) = entry {
                    self.insert(entry);
                }
            }
        }
        Ok(())
    }

    /// Field `index` (1-based: static table, then dynamic, newest first).
    fn get(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        match index {
            0 => Err(HpackError::BadIndex),
            1..=61 => {
                let (n, v) = STATIC_TABLE[index - 1];
                Ok((n.as_bytes(), v.as_bytes()))
            }
            _ => self
                .table
                .get(index - 62)
                .map(|e| e.bytes.split_at(e.name_len))
                .ok_or(HpackError::BadIndex),
        }
    }

    /// A string literal (§5.2): raw bytes stay in the block, Huffman ones
    /// are decoded onto `scratch`.
    /// `cached`: a Huffman string is looked up in (and offered to) the
    /// thread's cache of recent decodings.
    fn string(&mut self, block: &[u8], at: &mut usize, cached: bool) -> Result<Str, HpackError> {
        let huffman_coded = block.get(*at).ok_or(HpackError::Truncated)? & 0x80 != 0;
        let len = integer(block, at, 7)?;
        let end = at.checked_add(len).filter(|&e| e <= block.len());
        let end = end.ok_or(HpackError::Truncated)?;
        let raw = *at..end;
        *at = end;
        if !huffman_coded {
            return Ok(Str::Block(raw.start, raw.end));
        }
        let start = self.scratch.len();
        // Codes are at least 5 bits: at most 8/5 bytes out per byte in.
        self.scratch.reserve(raw.len() * 8 / 5 + 1);
        if cached {
            huffman_cache::decode(&block[raw], &mut self.scratch)?;
        } else {
            huffman_decode(&block[raw], &mut self.scratch)?;
        }
        Ok(Str::Scratch(start, self.scratch.len()))
    }

    fn insert(&mut self, entry: Entry) {
        let size = entry.size();
        if size > self.max_size {
            // RFC 7541 §4.4: an entry larger than the table empties it.
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict(size);
        self.size += size;
        self.table.push_front(entry);
    }

    /// Evicts the oldest entries until `room` more bytes fit.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max_size {
            match self.table.pop_back() {
                Some(e) => self.size -= e.size(),
                None => break,
            }
        }
    }
}

fn join(name: &[u8], value: &[u8]) -> Entry {
    let mut bytes = Vec::with_capacity(name.len() + value.len());
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(value);
    Entry {
        bytes: bytes.into_boxed_slice(),
        name_len: name.len(),
    }
}

/// An integer with an `n`-bit prefix (§5.1) at `block[*at]`.
fn integer(block: &[u8], at: &mut usize, n: u32) -> Result<usize, HpackError> {
    let mask = (1usize << n) - 1;
    let first = *block.get(*at).ok_or(HpackError::Truncated)? as usize & mask;
    *at += 1;
    if first < mask {
        return Ok(first);
    }
    let mut value = mask;
    for k in 0..=MAX_INTEGER_OCTETS {
        if k == MAX_INTEGER_OCTETS {
            return Err(HpackError::IntegerOverflow);
        }
        let b = *block.get(*at).ok_or(HpackError::Truncated)?;
        *at += 1;
        value += ((b & 0x7f) as usize) << (7 * k);
        if b & 0x80 == 0 {
            break;
        }
    }
    Ok(value)
}

/// Huffman-codes `src` onto `out` (RFC 7541 §5.2; padding with EOS's prefix).
pub fn huffman_encode(src: &[u8], out: &mut Vec<u8>) {
    static CODES: OnceLock<[(u32, u8); 257]> = OnceLock::new();
    let codes = CODES.get_or_init(huffman_codes);
    let mut acc = 0u64;
    let mut nbits = 0u32;
    for &b in src {
        let (code, len) = codes[b as usize];
        acc = (acc << len) | u64::from(code);
        nbits += u32::from(len);
        while nbits >= 8 {
            nbits -= 8;
            out.push((acc >> nbits) as u8);
        }
    }
    if nbits > 0 {
        let pad = 8 - nbits;
        out.push(((acc << pad) | ((1 << pad) - 1)) as u8);
    }
}

/// A small HPACK encoder, as clients and servers encode (static and
/// dynamic table references, literals indexed and Huffman-coded), for tests
/// and benchmarks: not used on captured traffic.
#[doc(hidden)]
pub struct Encoder {
    /// Newest first, as the peer's decoder holds them.
    table: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max_size: usize,
    /// Announce this size at the start of the next block.
    pending_update: Option<usize>,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder {
            table: VecDeque::new(),
            size: 0,
            max_size: 4096,
            pending_update: None,
        }
    }
}

impl Encoder {
    pub fn new() -> Encoder {
        Encoder::default()
    }

    /// Uses a table of `size` bytes from the next block on.
    pub fn set_max_table_size(&mut self, size: usize) {
        self.max_size = size;
        self.pending_update = Some(size);
        self.evict(0);
    }

    fn evict(&mut self, room: usize) {
        while self.size + room > self.max_size {
            match self.table.pop_back() {
                Some((n, v)) => self.size -= n.len() + v.len() + ENTRY_OVERHEAD,
                None => break,
            }
        }
    }

    /// One header block for `fields`.
    pub fn encode<'a>(
        &mut self,
        fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(size) = self.pending_update.take() {
            put_integer(&mut out, 0x20, 5, size);
        }
        for (name, value) in fields {
            let statics = STATIC_TABLE
                .iter()
                .map(|(n, v)| (n.as_bytes(), v.as_bytes()));
            let dynamics = self.table.iter().map(|(n, v)| (&n[..], &v[..]));
            let all: Vec<(&[u8], &[u8])> = statics.chain(dynamics).collect();
            if let Some(i) = all.iter().position(|&(n, v)| n == name && v == value) {
                put_integer(&mut out, 0x80, 7, i + 1);
                continue;
            }
            match all.iter().position(|&(n, _)| n == name) {
                Some(i) => put_integer(&mut out, 0x40, 6, i + 1),
                None => {
                    out.push(0x40);
                    put_string(&mut out, name);
                }
            }
            put_string(&mut out, value);
            let size = name.len() + value.len() + ENTRY_OVERHEAD;
            if size > self.max_size {
                self.table.clear();
                self.size = 0;
            } else {
                self.evict(size);
                self.size += size;
                self.table.push_front((name.to_vec(), value.to_vec()));
            }
        }
        out
    }
}

fn put_integer(out: &mut Vec<u8>, flags: u8, n: u32, mut value: usize) {
    let mask = (1usize << n) - 1;
    if value < mask {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | mask as u8);
    value -= mask;
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    let mut coded = Vec::new();
    huffman_encode(s, &mut coded);
    put_integer(out, 0x80, 7, coded.len());
    out.extend(coded);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Huffman literals are decoded through the thread's cache, except
    /// never-indexed ones: what the encoder marked sensitive stays out of it.
    #[test]
    fn never_indexed_literals_stay_out_of_the_huffman_cache() {
        let literal = |flags: u8, name: &[u8], value: &[u8]| {
            let mut block = vec![flags];
            put_string(&mut block, name);
            let mut coded = Vec::new();
            huffman_encode(value, &mut coded);
            put_integer(&mut block, 0x80, 7, coded.len());
            block.extend_from_slice(&coded);
            (block, coded)
        };
        for (flags, cached) in [(0x00, true), (0x40, true), (0x10, false)] {
            let value = format!("value-of-a-literal-{flags:#x}");
            let (block, coded) = literal(flags, b"x-field", value.as_bytes());
            for _ in 0..2 {
                let mut got = Vec::new();
                Decoder::new(4096)
                    .decode(&block, |n, v| got.push((n.to_vec(), v.to_vec())))
                    .unwrap();
                assert_eq!(got, vec![(b"x-field".to_vec(), value.clone().into_bytes())]);
            }
            assert_eq!(huffman_cache::holds(&coded), cached, "flags {flags:#x}");
        }
    }

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    fn decode_all(d: &mut Decoder, block: &[u8]) -> Result<Fields, HpackError> {
        let mut got = Vec::new();
        d.decode(block, |n, v| got.push((n.to_vec(), v.to_vec())))?;
        Ok(got)
    }

    #[test]
    fn huffman_codes_are_rfc_7541s() {
        // Checked against an independent decoder (loona-hpack's, built from
        // the RFC's table of codes): every symbol alone, then all of them.
        let mut theirs = loona_hpack::huffman::HuffmanDecoder::new();
        for b in 0..=255u8 {
            let mut coded = Vec::new();
            huffman_encode(&[b], &mut coded);
            assert_eq!(theirs.decode(&coded).unwrap(), vec![b], "symbol {b}");
            let mut ours = Vec::new();
            huffman_decode(&coded, &mut ours).unwrap();
            assert_eq!(ours, vec![b]);
        }
        // RFC 7541 C.4.1: "www.example.com".
        let mut out = Vec::new();
        huffman_decode(&hex::decode("f1e3c2e5f23a6ba0ab90f4ff").unwrap(), &mut out).unwrap();
        assert_eq!(out, b"www.example.com");
        assert_eq!(huffman_codes()[256], (0x3fff_ffff, 30), "EOS");
    }

    #[test]
    fn huffman_errors() {
        let codes = huffman_codes();
        // EOS inside a string (30 ones, then a byte's worth of padding).
        let mut out = Vec::new();
        assert_eq!(
            huffman_decode(&[0xff, 0xff, 0xff, 0xff], &mut out),
            Err(HpackError::BadHuffman)
        );
        // Padding of 8 bits or more.
        let mut coded = Vec::new();
        huffman_encode(b"a", &mut coded);
        coded.push(0xff);
        assert_eq!(
            huffman_decode(&coded, &mut out),
            Err(HpackError::BadHuffman)
        );
        // Padding that is not all ones: 'a' is 5 bits (00011), then 000.
        assert_eq!(codes[b'a' as usize], (0x3, 5));
        assert_eq!(
            huffman_decode(&[0x18], &mut out),
            Err(HpackError::BadHuffman)
        );
        out.clear();
        assert_eq!(huffman_decode(&[0x1f], &mut out), Ok(()));
        assert_eq!(out, b"a");
        assert_eq!(huffman_decode(&[], &mut out), Ok(()));
    }

    #[test]
    fn static_table_is_rfc_7541s() {
        let mut theirs = loona_hpack::Decoder::new();
        let mut ours = Decoder::new(4096);
        for i in 1..=61u8 {
            let block = [0x80 | i];
            let want = theirs.decode(&block).unwrap();
            assert_eq!(decode_all(&mut ours, &block).unwrap(), want, "index {i}");
        }
        assert_eq!(
            decode_all(&mut ours, &[0x80 | 62]),
            Err(HpackError::BadIndex)
        );
        assert_eq!(decode_all(&mut ours, &[0x80]), Err(HpackError::BadIndex));
    }

    #[test]
    fn table_sizes_at_the_limit() {
        // An entry of exactly the table's size fills it; one byte more empties it.
        let mut enc = Encoder::new();
        let mut d = Decoder::new(100);
        enc.set_max_table_size(100);
        let value = vec![b'v'; 100 - ENTRY_OVERHEAD - 1];
        let block = enc.encode([(&b"x"[..], &value[..])]);
        decode_all(&mut d, &block).unwrap();
        assert_eq!((d.table.len(), d.size), (1, 100));
        assert_eq!(
            decode_all(&mut d, &[0x80 | 62]).unwrap(),
            vec![(b"x".to_vec(), value.clone())]
        );
        let longer = [b'v'; 100 - ENTRY_OVERHEAD];
        let block = enc.encode([(&b"x"[..], &longer[..])]);
        decode_all(&mut d, &block).unwrap();
        assert_eq!((d.table.len(), d.size), (0, 0));
        // Size updates: up to what was allowed, not past it.
        assert_eq!(decode_all(&mut d, &[0x3f, 0x45]), Ok(vec![]), "100");
        assert_eq!(
            decode_all(&mut d, &[0x3f, 0x46]),
            Err(HpackError::TableSizeTooLarge)
        );
        d.allow(4096);
        assert_eq!(decode_all(&mut d, &[0x3f, 0xe1, 0x1f]), Ok(vec![]), "4096");
        assert_eq!(
            decode_all(&mut d, &[0x3f, 0xe2, 0x1f]),
            Err(HpackError::TableSizeTooLarge)
        );
    }

    /// RFC 7541 §4.4: a new entry may take its name from the entry that
    /// its own insertion evicts; the name must survive the eviction.
    #[test]
    fn a_new_entry_may_name_the_entry_it_evicts() {
        let name = b"x-long-header-name";
        for extra in [0usize, 1, 30] {
            let mut ours = Decoder::new(100);
            let mut theirs = loona_hpack::Decoder::new();
            theirs.set_max_table_size(100);
            let first_value = vec![b'a'; 100 - ENTRY_OVERHEAD - name.len() - extra];
            let mut block = vec![0x3f, 0x45]; // size update: 100
            block.extend([0x40, name.len() as u8]);
            block.extend(name);
            block.push(first_value.len() as u8);
            block.extend(&first_value);
            assert_eq!(
                decode_all(&mut ours, &block),
                Ok(theirs.decode(&block).unwrap())
            );
            assert_eq!(ours.table.len(), 1);
            // Literal with incremental indexing, name of entry 62, value "b":
            // adding it evicts entry 62 first.
            let block = [0x7e, 1, b'b'];
            let want = vec![(name.to_vec(), b"b".to_vec())];
            assert_eq!(decode_all(&mut ours, &block).unwrap(), want);
            assert_eq!(theirs.decode(&block).unwrap(), want);
            assert_eq!(
                decode_all(&mut ours, &[0x80 | 62]).unwrap(),
                want,
                "extra {extra}"
            );
            assert_eq!(
                (ours.table.len(), ours.size),
                (1, ENTRY_OVERHEAD + name.len() + 1)
            );
            // Many more through the same small table: the buffer stays bounded.
            for i in 0..500u32 {
                let v = format!("value-{i}");
                let mut block = vec![0x7e, v.len() as u8];
                block.extend(v.as_bytes());
                assert_eq!(decode_all(&mut ours, &block).unwrap()[0].0, name.to_vec());
            }
            assert!(ours.held() <= 100 + 64, "{}", ours.held());
        }
    }

    #[test]
    fn malformed_blocks() {
        let mut d = Decoder::new(4096);
        for (block, err) in [
            (&[0x40, 0x05, b'a'][..], HpackError::Truncated),
            (&[0x40][..], HpackError::Truncated),
            (&[0xff][..], HpackError::Truncated),
            (
                &[0xff, 0x80, 0x80, 0x80, 0x80, 0x01][..],
                HpackError::IntegerOverflow,
            ),
            (
                &[0x0f, 0x80, 0x80, 0x80, 0x80, 0x80][..],
                HpackError::IntegerOverflow,
            ),
            (&[0x40, 0x81, 0xff][..], HpackError::BadHuffman),
        ] {
            assert_eq!(decode_all(&mut d, block), Err(err), "{block:02x?}");
        }
        // The largest integer 4 continuation bytes carry still decodes.
        assert_eq!(
            decode_all(&mut d, &[0xff, 0xff, 0xff, 0xff, 0x7f]),
            Err(HpackError::BadIndex)
        );
    }

    fn field() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
        (
            prop_oneof![
                prop::sample::select(vec![
                    ":path",
                    "authorization",
                    "cookie",
                    "x-api-key",
                    "user-agent",
                    "accept"
                ])
                .prop_map(|s| s.as_bytes().to_vec()),
                "[a-z-]{1,20}".prop_map(String::into_bytes),
            ],
            prop_oneof![
                "[ -~]{0,40}".prop_map(String::into_bytes),
                prop::collection::vec(any::<u8>(), 0..60),
                prop::sample::select(vec!["/", "GET", "gzip, deflate"])
                    .prop_map(|s| s.as_bytes().to_vec()),
            ],
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Blocks from our encoder (Huffman, dynamic table, size updates)
        /// decode the same with an independent decoder and ours; blocks from
        /// the independent encoder (raw strings, its own indexing) decode
        /// back to their fields with ours.
        #[test]
        fn decodes_as_an_independent_decoder(
            blocks in prop::collection::vec(prop::collection::vec(field(), 0..12), 1..12),
            sizes in prop::collection::vec(prop::option::of(0usize..600), 12),
        ) {
            let mut enc = Encoder::new();
            let mut theirs = loona_hpack::Decoder::new();
            let mut ours = Decoder::new(4096);
            let mut their_enc = loona_hpack::Encoder::new();
            let mut ours2 = Decoder::new(4096);
            for (fields, size) in blocks.iter().zip(&sizes) {
                // (The independent decoder refuses a block that is only a size update.)
                if let Some(size) = size.filter(|_| !fields.is_empty()) {
                    enc.set_max_table_size(size);
                }
                let block = enc.encode(fields.iter().map(|(n, v)| (&n[..], &v[..])));
                let want = theirs.decode(&block).unwrap();
                prop_assert_eq!(&want, fields);
                prop_assert_eq!(decode_all(&mut ours, &block).unwrap(), want);
                let block = their_enc.encode(fields.iter().map(|(n, v)| (&n[..], &v[..])));
                prop_assert_eq!(&decode_all(&mut ours2, &block).unwrap(), fields);
            }
        }

        #[test]
        fn huffman_round_trips(s in prop::collection::vec(any::<u8>(), 0..200)) {
            let mut coded = Vec::new();
            huffman_encode(&s, &mut coded);
            let mut out = Vec::new();
            huffman_decode(&coded, &mut out).unwrap();
            prop_assert_eq!(out, s);
        }

        #[test]
        fn random_blocks_are_harmless(block in prop::collection::vec(any::<u8>(), 0..200)) {
            let mut d = Decoder::new(256);
            let _ = decode_all(&mut d, &block);
            prop_assert!(d.size <= 256);
        }
    }
}

#[cfg(test)]
mod speed {
    /// `cargo test --release -p sensor --lib hpack::speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn huffman_decoding_speed() {
        let text = b"Mon, 30 Nov 2026 20:00:00 GMT application/octet-stream W/\"6748-400\" nginx/1.22.1 bytes";
        let mut coded = Vec::new();
        super::huffman_encode(text, &mut coded);
        let mut out = Vec::with_capacity(256);
        let n = 2_000_000;
        let t = std::time::Instant::now();
        for _ in 0..n {
            out.clear();
            super::huffman_decode(std::hint::black_box(&coded), &mut out).unwrap();
        }
        let ns = t.elapsed().as_nanos() as f64 / (n as f64 * text.len() as f64);
        println!("huffman decode: {ns:.2} ns per symbol");
    }
}
