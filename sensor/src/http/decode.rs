//! Body framing after the head (RFC 9112 §6–7), modelled on hyper's h1 `Decoder`:
//! content-length, chunked (extensions skipped; the trailer section kept, to
//! be parsed as fields), or until close.
//! Body bytes are handed out as zero-copy slices of the fed `Bytes`, or
//! copies of borrowed input ([`FeedData`]).

use bytes::Bytes;

use super::error::ParseErrorReason;
use super::types::Body;

/// Longest chunk-extension section (after the `;`) of one chunk-size line; past it the stream is
/// taken for garbage rather than skipped forever (hyper bounds it likewise).
pub const MAX_CHUNK_EXT_BYTES: usize = 16 * 1024;
/// Longest trailer section after the last chunk (kept whole up to this, then
/// the stream is taken for garbage).
pub const MAX_TRAILER_BYTES: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    Size,
    SizeLws,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    EndLf,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Chunked {
    state: ChunkState,
    /// Chunk size being read, then bytes of the current chunk still to come.
    size: u64,
    digits: u32,
    ext_bytes: usize,
    trailer_bytes: usize,
    /// The trailer section's lines as they came (`name: value` + line end):
    /// fields a server adds after the body (`res.addTrailers`, gRPC-Web)
    /// are searched like headers, as HTTP/2 trailers are.
    trailer: Vec<u8>,
}

impl Chunked {
    pub(crate) fn new() -> Self {
        Chunked {
            state: ChunkState::Size,
            size: 0,
            digits: 0,
            ext_bytes: 0,
            trailer_bytes: 0,
            trailer: Vec::new(),
        }
    }
}

/// How a body is delimited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decoder {
    /// Content-Length: bytes still to come.
    Length(u64),
    Chunked(Chunked),
    /// Until the connection closes (responses only).
    Eof,
}

/// What a capture hole did to the body being decoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum GapOutcome {
    /// The lost bytes were inside the body; decoding goes on after them.
    Skipped,
    /// The lost bytes ended exactly at the end of the body.
    SkippedToEnd,
    /// The framing cannot say where the body ends any more.
    Lost,
}

/// Memory a held `Bytes` chunk costs besides its bytes: the `Bytes` itself in
/// its `Vec`, the shared allocation's header, the event header in front of a
/// slice of an event, and allocator rounding.
pub const CHUNK_OVERHEAD: usize = 128;
/// Small body pieces are copied into blocks of up to this size instead of
/// each pinning the event it came in (an event is its own allocation).
pub const GATHER_BLOCK: usize = 8 * 1024;
/// The first gather block of a body is this small (or the piece's size), and
/// each next one as large as what the body kept so far, up to
/// [`GATHER_BLOCK`]: a small body holds about its size, not a whole block.
pub const MIN_GATHER_BLOCK: usize = 256;
/// A piece is kept as a zero-copy slice of its event only when it is at least
/// this long and at least half the event; otherwise it is copied.
pub const SLICE_MIN: usize = 4 * 1024;

/// Bytes fed to the parser: a shared buffer it may keep slices of (a
/// recording, tests), or memory it may only borrow (an event read in place in
/// the capture ring buffer), of which it copies the part it keeps.
#[derive(Clone, Copy, Debug)]
pub enum FeedData<'a> {
    Shared(&'a Bytes),
    Borrowed(&'a [u8]),
}

impl FeedData<'_> {
    /// `range` as a `Bytes` to keep, and the memory that holds: a slice pins
    /// its whole buffer, a copy only itself.
    fn keep(self, range: std::ops::Range<usize>) -> (Bytes, usize) {
        match self {
            FeedData::Shared(b) => (b.slice(range), b.len()),
            FeedData::Borrowed(s) => (Bytes::copy_from_slice(&s[range.clone()]), range.len()),
        }
    }
}

impl std::ops::Deref for FeedData<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FeedData::Shared(b) => b,
            FeedData::Borrowed(s) => s,
        }
    }
}

impl<'a> From<&'a Bytes> for FeedData<'a> {
    fn from(b: &'a Bytes) -> Self {
        FeedData::Shared(b)
    }
}

/// Most memory a body kept under `cap` can hold ([`BodyAcc::held`]): slices
/// pin at most twice what they keep, every gather block but the last is full
/// and the last is no larger than the room left when it was made (so slices
/// and blocks together stay under 3 × `cap`), and every chunk costs
/// [`CHUNK_OVERHEAD`]: a chunk per slice and one before it, one per
/// [`GATHER_BLOCK`] block, and the growing blocks before those (each at
/// least doubles what was kept).
pub(crate) fn max_body_held(cap: usize) -> usize {
    let growing = (GATHER_BLOCK / MIN_GATHER_BLOCK).ilog2() as usize + 1;
    let chunks = (cap / SLICE_MIN)
        .saturating_mul(2)
        .saturating_add(cap / GATHER_BLOCK)
        .saturating_add(growing + 2);
    cap.saturating_mul(3)
        .saturating_add(chunks.saturating_mul(CHUNK_OVERHEAD))
}

/// Collects a body up to a cap; counts the rest.  Knows what it holds in
/// O(1): the kept bytes, and the memory they pin ([`BodyAcc::held`]).
#[derive(Debug, Default)]
pub(crate) struct BodyAcc {
    body: Body,
    /// Keep no bytes at all (a response nobody asked for).
    pub discard: bool,
    /// Only a prefix is kept, by design (request bodies): bytes past the cap
    /// are seen and counted, so they do not make the body `truncated` (it is
    /// [`Body::is_partial`]).
    prefix_only: bool,
    /// Bytes in `body.chunks` and `tail`.
    kept: usize,
    /// Memory pinned: event slices (whole event), gather blocks (capacity),
    /// plus [`CHUNK_OVERHEAD`] per chunk.
    held: usize,
    /// The gather block being filled (its filled part is not in `body.chunks` yet).
    tail: bytes::BytesMut,
}

impl BodyAcc {
    pub(crate) fn new(discard: bool, prefix_only: bool) -> Self {
        BodyAcc {
            discard,
            prefix_only,
            ..Default::default()
        }
    }

    pub(crate) fn kept(&self) -> usize {
        self.kept
    }

    /// Decoded length so far, kept or not.
    pub(crate) fn len(&self) -> u64 {
        self.body.len
    }

    /// Memory this body holds now (see [`max_body_held`] for its bound).
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// The body, its last gather block included.
    pub(crate) fn finish(mut self) -> Body {
        self.flush_tail();
        self.body.discarded = self.discard;
        self.body
    }

    fn flush_tail(&mut self) {
        if !self.tail.is_empty() {
            // The rest of the block stays in `tail` for later pieces.
            self.body.chunks.push(self.tail.split().freeze());
            self.held += CHUNK_OVERHEAD;
        }
    }

    /// Copies `piece` into gather blocks; a new block is as large as the piece
    /// or what was kept so far (at least [`MIN_GATHER_BLOCK`], at most
    /// [`GATHER_BLOCK`]), and never larger than the body may still grow.
    fn gather(&mut self, mut piece: &[u8], cap: usize) {
        while !piece.is_empty() {
            let room = self.tail.capacity() - self.tail.len();
            if room == 0 {
                self.flush_tail();
                // `piece` fits under `cap`, so this is at least 1.
                let block = piece
                    .len()
                    .max(self.kept)
                    .clamp(MIN_GATHER_BLOCK, GATHER_BLOCK)
                    .min(cap.saturating_sub(self.kept))
                    .max(1);
                self.tail = bytes::BytesMut::with_capacity(block);
                // What the allocator handed out (it may round up).
                self.held += self.tail.capacity();
                continue;
            }
            let n = room.min(piece.len());
            self.tail.extend_from_slice(&piece[..n]);
            self.kept += n;
            piece = &piece[n..];
        }
    }

    pub(crate) fn push(
        &mut self,
        data: FeedData<'_>,
        start: usize,
        end: usize,
        cap: usize,
        over_cap: &mut u64,
    ) {
        let n = end - start;
        self.body.len += n as u64;
        if self.discard {
            return;
        }
        let room = cap.saturating_sub(self.kept);
        let keep = room.min(n);
        if keep >= SLICE_MIN && keep.saturating_mul(2) >= data.len() {
            self.flush_tail();
            let (piece, pinned) = data.keep(start..start + keep);
            self.body.chunks.push(piece);
            self.kept += keep;
            self.held += pinned + CHUNK_OVERHEAD;
        } else if keep > 0 {
            self.gather(&data[start..start + keep], cap);
        }
        if keep < n {
            self.body.truncated |= !self.prefix_only;
            *over_cap += (n - keep) as u64;
        }
    }

    /// The kept bytes from offset `from` on (slices of the kept chunks, and
    /// a copy of the gather block being filled), for a look at a body still
    /// being read.
    pub(crate) fn kept_from(&self, from: usize) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut at = 0;
        for c in &self.body.chunks {
            let end = at + c.len();
            if end > from {
                out.push(c.slice(from.saturating_sub(at)..));
            }
            at = end;
        }
        if !self.tail.is_empty() && at + self.tail.len() > from {
            out.push(Bytes::copy_from_slice(
                &self.tail[from.saturating_sub(at)..],
            ));
        }
        out
    }

    /// The stream ended before the body did: what was kept is all there is.
    pub(crate) fn cut(&mut self) {
        self.body.truncated = true;
    }

    pub(crate) fn lost(&mut self, lost: u64) {
        self.body.len += lost;
        self.body.truncated = true;
    }
}

impl Decoder {
    /// Decodes from `data[*pos..]`, adding body bytes to `acc`; returns true once the
    /// body is complete (`*pos` then points just past it).
    pub(crate) fn decode(
        &mut self,
        data: FeedData<'_>,
        pos: &mut usize,
        acc: &mut BodyAcc,
        cap: usize,
        over_cap: &mut u64,
    ) -> Result<bool, ParseErrorReason> {
        match self {
            Decoder::Length(remaining) => {
                let avail = (data.len() - *pos) as u64;
                let take = (*remaining).min(avail) as usize;
                if take > 0 {
                    acc.push(data, *pos, *pos + take, cap, over_cap);
                    *pos += take;
                    *remaining -= take as u64;
                }
                Ok(*remaining == 0)
            }
            Decoder::Eof => {
                if *pos < data.len() {
                    acc.push(data, *pos, data.len(), cap, over_cap);
                    *pos = data.len();
                }
                Ok(false)
            }
            Decoder::Chunked(c) => decode_chunked(c, data, pos, acc, cap, over_cap),
        }
    }

    /// The trailer section of a chunked body (its field lines, each with its
    /// line end), taken out; empty for other framings or without trailers.
    pub(crate) fn take_trailer(&mut self) -> Vec<u8> {
        match self {
            Decoder::Chunked(c) => std::mem::take(&mut c.trailer),
            _ => Vec::new(),
        }
    }

    /// Memory the trailer section being read holds.
    pub(crate) fn trailer_held(&self) -> usize {
        match self {
            Decoder::Chunked(c) => c.trailer.capacity(),
            _ => 0,
        }
    }

    /// `lost` bytes (0 = unknown) of the body stream are missing.
    pub(crate) fn skip(&mut self, lost: u64) -> GapOutcome {
        match self {
            Decoder::Length(remaining) if lost > 0 && lost <= *remaining => {
                *remaining -= lost;
                if *remaining == 0 {
                    GapOutcome::SkippedToEnd
                } else {
                    GapOutcome::Skipped
                }
            }
            Decoder::Chunked(c) if c.state == ChunkState::Data && lost > 0 && lost <= c.size => {
                c.size -= lost;
                if c.size == 0 {
                    c.state = ChunkState::DataCr;
                }
                GapOutcome::Skipped
            }
            Decoder::Eof => GapOutcome::Skipped,
            _ => GapOutcome::Lost,
        }
    }
}

fn hex_val(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some((b - b'0') as u64),
        b'a'..=b'f' => Some((b - b'a' + 10) as u64),
        b'A'..=b'F' => Some((b - b'A' + 10) as u64),
        _ => None,
    }
}

fn decode_chunked(
    c: &mut Chunked,
    data: FeedData<'_>,
    pos: &mut usize,
    acc: &mut BodyAcc,
    cap: usize,
    over_cap: &mut u64,
) -> Result<bool, ParseErrorReason> {
    use ChunkState::*;
    let bad = ParseErrorReason::InvalidChunk;
    while *pos < data.len() {
        let b = data[*pos];
        match c.state {
            Size => {
                if let Some(v) = hex_val(b) {
                    // 16 hex digits fill a u64; more (even leading zeros) is not a real chunk size.
                    if c.digits >= 16 {
                        return Err(bad);
                    }
                    c.size = c.size * 16 + v;
                    c.digits += 1;
                    *pos += 1;
                    continue;
                }
                if c.digits == 0 {
                    return Err(bad);
                }
                match b {
                    b' ' | b'\t' => c.state = SizeLws,
                    b';' => c.state = Ext,
                    b'\r' => c.state = SizeLf,
                    b'\n' => after_size(c),
                    _ => return Err(bad),
                }
                *pos += 1;
            }
            SizeLws => {
                match b {
                    b' ' | b'\t' => {}
                    b';' => c.state = Ext,
                    b'\r' => c.state = SizeLf,
                    b'\n' => after_size(c),
                    _ => return Err(bad),
                }
                *pos += 1;
            }
            Ext => {
                let rest = &data[*pos..];
                match memchr::memchr2(b'\r', b'\n', rest) {
                    Some(i) => {
                        c.ext_bytes += i;
                        if c.ext_bytes > MAX_CHUNK_EXT_BYTES {
                            return Err(bad);
                        }
                        if rest[i] == b'\r' {
                            c.state = SizeLf;
                        } else {
                            after_size(c);
                        }
                        *pos += i + 1;
                    }
                    None => {
                        c.ext_bytes += rest.len();
                        if c.ext_bytes > MAX_CHUNK_EXT_BYTES {
                            return Err(bad);
                        }
                        *pos = data.len();
                    }
                }
            }
            SizeLf => {
                if b != b'\n' {
                    return Err(bad);
                }
                after_size(c);
                *pos += 1;
            }
            Data => {
                let avail = (data.len() - *pos) as u64;
                let take = c.size.min(avail) as usize;
                acc.push(data, *pos, *pos + take, cap, over_cap);
                *pos += take;
                c.size -= take as u64;
                if c.size == 0 {
                    c.state = DataCr;
                }
            }
            DataCr => {
                match b {
                    b'\r' => c.state = DataLf,
                    b'\n' => reset_size(c),
                    _ => return Err(bad),
                }
                *pos += 1;
            }
            DataLf => {
                if b != b'\n' {
                    return Err(bad);
                }
                reset_size(c);
                *pos += 1;
            }
            TrailerStart => {
                *pos += 1;
                match b {
                    b'\r' => c.state = EndLf,
                    b'\n' => return Ok(true),
                    _ => {
                        c.trailer_bytes += 1;
                        c.trailer.push(b);
                        c.state = Trailer;
                    }
                }
            }
            Trailer => {
                let rest = &data[*pos..];
                let (n, line_end) = match memchr::memchr(b'\n', rest) {
                    Some(i) => (i + 1, true),
                    None => (rest.len(), false),
                };
                c.trailer_bytes += n;
                if c.trailer_bytes > MAX_TRAILER_BYTES {
                    return Err(bad);
                }
                c.trailer.extend_from_slice(&rest[..n]);
                *pos += n;
                if line_end {
                    c.state = TrailerStart;
                }
            }
            EndLf => {
                if b != b'\n' {
                    return Err(bad);
                }
                *pos += 1;
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn after_size(c: &mut Chunked) {
    c.ext_bytes = 0;
    c.state = if c.size == 0 {
        ChunkState::TrailerStart
    } else {
        ChunkState::Data
    };
}

fn reset_size(c: &mut Chunked) {
    c.size = 0;
    c.digits = 0;
    c.state = ChunkState::Size;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8], splits: &[usize]) -> Result<(Vec<u8>, bool, usize), ParseErrorReason> {
        let mut d = Decoder::Chunked(Chunked::new());
        let mut acc = BodyAcc::default();
        let mut over = 0;
        let mut start = 0;
        let mut bounds: Vec<usize> = splits.to_vec();
        bounds.push(input.len());
        for end in bounds {
            let data = Bytes::copy_from_slice(&input[start..end]);
            let mut pos = 0;
            if d.decode((&data).into(), &mut pos, &mut acc, usize::MAX, &mut over)? {
                return Ok((acc.finish().to_vec(), true, start + pos));
            }
            assert_eq!(pos, data.len());
            start = end;
        }
        Ok((acc.finish().to_vec(), false, input.len()))
    }

    #[test]
    fn chunked_table() {
        type Want = Result<(&'static [u8], bool), ParseErrorReason>;
        let cases: &[(&[u8], Want)] = &[
            (b"5\r\nhello\r\n0\r\n\r\n", Ok((b"hello", true))),
            (
                b"5;ext=1;x=\"y\"\r\nhello\r\n0;last\r\n\r\n",
                Ok((b"hello", true)),
            ),
            (
                b"5  \r\nhello\r\n0\r\nTrailer: x\r\nOther: y\r\n\r\n",
                Ok((b"hello", true)),
            ),
            (b"A\r\n0123456789\r\n0\r\n\r\n", Ok((b"0123456789", true))),
            (b"a\nhelloworld\n0\n\n", Ok((b"helloworld", true))),
            (b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n", Ok((b"abcdef", true))),
            (b"3\r\nabc\r\n", Ok((b"abc", false))),
            (b"\r\n", Err(ParseErrorReason::InvalidChunk)),
            (b"x\r\n", Err(ParseErrorReason::InvalidChunk)),
            (b"3\r\nabcd\r\n", Err(ParseErrorReason::InvalidChunk)),
            (b"3\rx", Err(ParseErrorReason::InvalidChunk)),
            (b"3 x\r\n", Err(ParseErrorReason::InvalidChunk)),
            (b"ffffffffffffffff\r\n", Ok((b"", false))),
            (
                b"10000000000000000\r\n",
                Err(ParseErrorReason::InvalidChunk),
            ),
            (b"0\r\n\rx", Err(ParseErrorReason::InvalidChunk)),
        ];
        for (input, want) in cases {
            for split in 0..=input.len() {
                let got = run(input, &[split]).map(|(b, done, _)| (b, done));
                let want = want.map(|(b, d)| (b.to_vec(), d));
                assert_eq!(
                    got,
                    want,
                    "input {:?} split {split}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn chunked_stops_at_end() {
        let (body, done, end) = run(b"2\r\nhi\r\n0\r\n\r\nGET /", &[]).unwrap();
        assert_eq!((body.as_slice(), done, end), (&b"hi"[..], true, 12));
    }

    #[test]
    fn chunk_extension_limit_exact() {
        let mut at = b"1;".to_vec();
        at.extend(std::iter::repeat_n(b'x', MAX_CHUNK_EXT_BYTES));
        at.extend_from_slice(b"\r\na\r\n0\r\n\r\n");
        assert_eq!(run(&at, &[]).unwrap().0, b"a");
        let mut over = b"1;".to_vec();
        over.extend(std::iter::repeat_n(b'x', MAX_CHUNK_EXT_BYTES + 1));
        over.extend_from_slice(b"\r\na\r\n0\r\n\r\n");
        assert_eq!(run(&over, &[]), Err(ParseErrorReason::InvalidChunk));
    }

    #[test]
    fn trailer_limit_exact() {
        // The trailer section counts every byte of its lines, CRLF included.
        let line = |n: usize| {
            let mut v = b"0\r\nx: ".to_vec();
            v.extend(std::iter::repeat_n(b'v', n - 5));
            v.extend_from_slice(b"\r\n\r\n");
            v
        };
        assert!(run(&line(MAX_TRAILER_BYTES), &[]).unwrap().1);
        assert_eq!(
            run(&line(MAX_TRAILER_BYTES + 1), &[]),
            Err(ParseErrorReason::InvalidChunk)
        );
    }

    #[test]
    fn body_cap_exact() {
        for (cap, kept, truncated, over) in [(5, 5, false, 0), (4, 4, true, 1)] {
            let mut d = Decoder::Length(5);
            let mut acc = BodyAcc::default();
            let mut over_cap = 0;
            let data = Bytes::from_static(b"hello");
            let mut pos = 0;
            assert!(d
                .decode((&data).into(), &mut pos, &mut acc, cap, &mut over_cap)
                .unwrap());
            assert_eq!(acc.kept(), kept);
            let body = acc.finish();
            assert_eq!(body.len, 5);
            assert_eq!(body.truncated, truncated);
            assert_eq!(over_cap, over);
        }
    }

    #[test]
    fn gaps() {
        let mut d = Decoder::Length(10);
        assert_eq!(d.skip(4), GapOutcome::Skipped);
        assert_eq!(d.skip(6), GapOutcome::SkippedToEnd);
        let mut d = Decoder::Length(10);
        assert_eq!(d.skip(11), GapOutcome::Lost);
        assert_eq!(Decoder::Length(10).skip(0), GapOutcome::Lost);
        assert_eq!(Decoder::Eof.skip(0), GapOutcome::Skipped);
        let mut c = Decoder::Chunked(Chunked::new());
        assert_eq!(c.skip(1), GapOutcome::Lost);
        let mut acc = BodyAcc::default();
        let mut over = 0;
        let data = Bytes::from_static(b"8\r\nab");
        let mut pos = 0;
        assert!(!c
            .decode((&data).into(), &mut pos, &mut acc, 100, &mut over)
            .unwrap());
        assert_eq!(c.skip(7), GapOutcome::Lost);
        assert_eq!(c.skip(6), GapOutcome::Skipped);
        let data = Bytes::from_static(b"\r\n0\r\n\r\n");
        let mut pos = 0;
        assert!(c
            .decode((&data).into(), &mut pos, &mut acc, 100, &mut over)
            .unwrap());
    }
}
