//! HTTP/2 framing (RFC 9113 §3.4, §4, §6) of one direction, read
//! incrementally: bytes in any split → frame events.
//!
//! Only what pairing needs is kept: header blocks (HEADERS, PUSH_PROMISE and
//! their CONTINUATIONs, gathered whole because HPACK decodes a block at once),
//! DATA payloads (handed on as ranges of the fed bytes, never buffered),
//! RST_STREAM and the SETTINGS that size the peer's HPACK table.  PING,
//! PRIORITY, WINDOW_UPDATE, GOAWAY and unknown types are skipped.

use crate::http::error::ParseErrorReason;

/// What a client sends first (RFC 9113 §3.4).
pub(crate) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Length of a frame header.
pub(crate) const FRAME_HEAD_LEN: usize = 9;
/// SETTINGS payload bytes read; the rest of a longer frame (64 settings is
/// ten times what any peer sends) is skipped.
pub const MAX_SETTINGS_BYTES: usize = 6 * 64;

pub(crate) const DATA: u8 = 0x0;
pub(crate) const HEADERS: u8 = 0x1;
pub(crate) const RST_STREAM: u8 = 0x3;
pub(crate) const SETTINGS: u8 = 0x4;
pub(crate) const PUSH_PROMISE: u8 = 0x5;
pub(crate) const CONTINUATION: u8 = 0x9;

pub(crate) const FLAG_END_STREAM: u8 = 0x1;
pub(crate) const FLAG_ACK: u8 = 0x1;
pub(crate) const FLAG_END_HEADERS: u8 = 0x4;
pub(crate) const FLAG_PADDED: u8 = 0x8;
pub(crate) const FLAG_PRIORITY: u8 = 0x20;

/// SETTINGS_HEADER_TABLE_SIZE.
const SETTING_HEADER_TABLE_SIZE: u16 = 0x1;

/// A frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameHead {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl FrameHead {
    pub(crate) fn parse(b: &[u8; FRAME_HEAD_LEN]) -> FrameHead {
        FrameHead {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }
}

/// One frame's bytes (the inverse of [`FrameHead::parse`] and its payload):
/// for tests and the throughput baseline, not used on captured traffic.
pub(crate) fn encode(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Whether `p` (at least a frame header long) starts with the SETTINGS frame
/// a server opens its side of a connection with (RFC 9113 §3.4): stream 0,
/// no flags, whole settings.  Servers (nginx, node) may write it before they
/// read the client's preface, so it can be the first thing seen.
pub(crate) fn is_server_preface(p: &[u8]) -> bool {
    let Some(head) = p.first_chunk::<FRAME_HEAD_LEN>() else {
        return false;
    };
    let h = FrameHead::parse(head);
    h.kind == SETTINGS
        && h.flags == 0
        && h.stream == 0
        && h.len.is_multiple_of(6)
        && h.len as usize <= MAX_SETTINGS_BYTES
        && head[5] & 0x80 == 0
}

/// Whether `p`, shorter than a frame header, can still start the server's
/// opening SETTINGS ([`is_server_preface`]): the bytes it has are the fixed
/// ones (a length under 64 KiB, type SETTINGS, no flags, stream 0).
pub(crate) fn may_start_server_preface(p: &[u8]) -> bool {
    p.iter().enumerate().all(|(i, &b)| match i {
        1 | 2 => true,
        3 => b == SETTINGS,
        _ => b == 0,
    })
}

/// Whether `p` starts with what is most likely an HTTP/2 frame header: a
/// known type, a payload under 64 KiB, the reserved bit clear, and stream 0
/// exactly for the connection-level types.  Used to tell a connection that
/// was already open when capture started (not followed: its HPACK state is
/// unknown) from one that is not HTTP at all.
pub(crate) fn is_frame_head(p: &[u8]) -> bool {
    let Some(head) = p.first_chunk::<FRAME_HEAD_LEN>() else {
        return false;
    };
    let h = FrameHead::parse(head);
    let connection_level = matches!(h.kind, SETTINGS | 0x6 | 0x7);
    h.kind <= CONTINUATION
        && h.len < 1 << 16
        && head[5] & 0x80 == 0
        && (h.kind == 0x8 || connection_level == (h.stream == 0))
}

/// What a direction carried.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// A whole header block (a HEADERS or PUSH_PROMISE frame and its
    /// CONTINUATIONs), padding and priority fields removed.
    Headers {
        stream: u32,
        block: Vec<u8>,
        end_stream: bool,
        /// A PUSH_PROMISE's block: decoded (it changes the HPACK table) and dropped.
        promise: bool,
    },
    /// Payload bytes of a DATA frame: `data[start..end]` of the bytes fed.
    Data {
        stream: u32,
        start: usize,
        end: usize,
    },
    /// A DATA frame ended.
    DataEnd { stream: u32, end_stream: bool },
    /// RST_STREAM: the stream is abandoned.
    Reset { stream: u32 },
    /// A SETTINGS frame (not an ACK) with SETTINGS_HEADER_TABLE_SIZE.
    HeaderTableSize(u32),
}

#[derive(Clone, Copy, Debug)]
enum State {
    /// The client's preface: this many bytes of it matched so far.
    Preface(usize),
    /// A frame header: this many bytes of it are in `head_buf`.
    Head(usize),
    /// A DATA frame's pad length byte.
    DataPadLength(FrameHead),
    /// A DATA frame's data, then its padding.
    Data {
        stream: u32,
        data_left: u32,
        pad_left: u32,
        end_stream: bool,
    },
    /// A HEADERS / PUSH_PROMISE / CONTINUATION payload, gathered in `frame_buf`.
    Block { head: FrameHead, left: u32 },
    /// A SETTINGS payload, gathered in `frame_buf` up to `MAX_SETTINGS_BYTES`.
    Settings { ack: bool, left: u32 },
    /// A payload skipped whole; a RST_STREAM reports its stream at the end.
    Skip { left: u32, reset: Option<u32> },
}

/// A header block waiting for its CONTINUATION frames.
#[derive(Clone, Copy, Debug)]
struct OpenBlock {
    stream: u32,
    end_stream: bool,
    promise: bool,
}

/// One direction's frame reader.
pub(crate) struct FrameReader {
    state: State,
    head_buf: [u8; FRAME_HEAD_LEN],
    /// The payload being gathered (header block fragment frames, SETTINGS).
    frame_buf: Vec<u8>,
    /// The header block being gathered across CONTINUATION frames.
    block: Vec<u8>,
    open_block: Option<OpenBlock>,
    /// Largest header block accepted (bytes as sent, compressed).
    max_block: usize,
}

impl FrameReader {
    /// A reader of the client's side (`preface`: it opens with the preface)
    /// or the server's.
    pub(crate) fn new(preface: bool, max_block: usize) -> FrameReader {
        FrameReader {
            state: if preface {
                State::Preface(0)
            } else {
                State::Head(0)
            },
            head_buf: [0; FRAME_HEAD_LEN],
            frame_buf: Vec::new(),
            block: Vec::new(),
            open_block: None,
            max_block,
        }
    }

    /// Memory held: the gathering buffers' capacities.
    pub(crate) fn held(&self) -> usize {
        self.frame_buf.capacity() + self.block.capacity()
    }

    /// Hands back a block's buffer once it is decoded, for the next one.
    pub(crate) fn recycle(&mut self, mut block: Vec<u8>) {
        if self.block.capacity() == 0 && block.capacity() <= self.max_block {
            block.clear();
            self.block = block;
        }
    }

    /// `lost` bytes of this direction are missing.  Inside a DATA frame's data
    /// that many bytes are skipped and the stream is returned (its body lost
    /// them); anywhere else the framing is lost for good (`None`).
    pub(crate) fn skip_lost(&mut self, lost: u64) -> Option<u32> {
        match &mut self.state {
            State::Data {
                stream, data_left, ..
            } if lost > 0 && lost <= u64::from(*data_left) => {
                *data_left -= lost as u32;
                Some(*stream)
            }
            _ => None,
        }
    }

    /// Reads from `data[*pos..]` up to the next event (or to the end of
    /// `data`: `Ok(None)`).
    pub(crate) fn next(
        &mut self,
        data: &[u8],
        pos: &mut usize,
    ) -> Result<Option<Event>, ParseErrorReason> {
        loop {
            if let State::Data {
                stream,
                data_left: 0,
                pad_left: 0,
                end_stream,
            } = self.state
            {
                self.state = State::Head(0);
                return Ok(Some(Event::DataEnd { stream, end_stream }));
            }
            if *pos >= data.len() {
                return Ok(None);
            }
            let rest = &data[*pos..];
            match &mut self.state {
                State::Preface(matched) => {
                    let n = (PREFACE.len() - *matched).min(rest.len());
                    if rest[..n] != PREFACE[*matched..*matched + n] {
                        return Err(ParseErrorReason::Http2);
                    }
                    *matched += n;
                    *pos += n;
                    if *matched == PREFACE.len() {
                        self.state = State::Head(0);
                    }
                }
                State::Head(have) => {
                    let n = (FRAME_HEAD_LEN - *have).min(rest.len());
                    self.head_buf[*have..*have + n].copy_from_slice(&rest[..n]);
                    *have += n;
                    *pos += n;
                    if *have == FRAME_HEAD_LEN {
                        let head = FrameHead::parse(&self.head_buf);
                        if let Some(ev) = self.start_frame(head)? {
                            return Ok(Some(ev));
                        }
                    }
                }
                State::DataPadLength(head) => {
                    let head = *head;
                    let pad = u32::from(rest[0]);
                    *pos += 1;
                    // The pad length byte and the padding are in the payload.
                    if pad >= head.len {
                        return Err(ParseErrorReason::Http2);
                    }
                    self.state = State::Data {
                        stream: head.stream,
                        data_left: head.len - 1 - pad,
                        pad_left: pad,
                        end_stream: head.flags & FLAG_END_STREAM != 0,
                    };
                }
                State::Data {
                    stream,
                    data_left,
                    pad_left,
                    ..
                } => {
                    if *data_left > 0 {
                        let n = (*data_left as usize).min(rest.len());
                        *data_left -= n as u32;
                        let start = *pos;
                        *pos += n;
                        return Ok(Some(Event::Data {
                            stream: *stream,
                            start,
                            end: start + n,
                        }));
                    }
                    let n = (*pad_left as usize).min(rest.len());
                    *pad_left -= n as u32;
                    *pos += n;
                }
                State::Block { head, left } => {
                    let n = (*left as usize).min(rest.len());
                    self.frame_buf.extend_from_slice(&rest[..n]);
                    *left -= n as u32;
                    *pos += n;
                    if *left == 0 {
                        let head = *head;
                        self.state = State::Head(0);
                        if let Some(ev) = self.end_block_frame(head)? {
                            return Ok(Some(ev));
                        }
                    }
                }
                State::Settings { ack, left } => {
                    let n = (*left as usize).min(rest.len());
                    let room = MAX_SETTINGS_BYTES.saturating_sub(self.frame_buf.len());
                    let keep = n.min(room);
                    self.frame_buf.extend_from_slice(&rest[..keep]);
                    *left -= n as u32;
                    *pos += n;
                    if *left == 0 {
                        let ack = *ack;
                        self.state = State::Head(0);
                        let size = (!ack).then(|| header_table_size(&self.frame_buf));
                        self.frame_buf.clear();
                        if let Some(Some(size)) = size {
                            return Ok(Some(Event::HeaderTableSize(size)));
                        }
                    }
                }
                State::Skip { left, reset } => {
                    let n = (*left as usize).min(rest.len());
                    *left -= n as u32;
                    *pos += n;
                    if *left == 0 {
                        let reset = *reset;
                        self.state = State::Head(0);
                        if let Some(stream) = reset {
                            return Ok(Some(Event::Reset { stream }));
                        }
                    }
                }
            }
        }
    }

    /// A frame header was read: decides how its payload is read.
    fn start_frame(&mut self, head: FrameHead) -> Result<Option<Event>, ParseErrorReason> {
        if let Some(open) = self.open_block {
            // RFC 9113 §6.10: nothing may come between a header block's frames.
            if head.kind != CONTINUATION || head.stream != open.stream {
                return Err(ParseErrorReason::Http2);
            }
        } else if head.kind == CONTINUATION {
            return Err(ParseErrorReason::Http2);
        }
        self.state = match head.kind {
            DATA if head.stream == 0 => return Err(ParseErrorReason::Http2),
            DATA if head.flags & FLAG_PADDED != 0 => {
                if head.len == 0 {
                    return Err(ParseErrorReason::Http2);
                }
                State::DataPadLength(head)
            }
            DATA => State::Data {
                stream: head.stream,
                data_left: head.len,
                pad_left: 0,
                end_stream: head.flags & FLAG_END_STREAM != 0,
            },
            HEADERS | PUSH_PROMISE | CONTINUATION => {
                if head.stream == 0 {
                    return Err(ParseErrorReason::Http2);
                }
                if self.block.len() + head.len as usize > self.max_block {
                    return Err(ParseErrorReason::HeadTooLarge);
                }
                self.frame_buf.clear();
                self.frame_buf.reserve(head.len as usize);
                State::Block {
                    head,
                    left: head.len,
                }
            }
            SETTINGS => {
                self.frame_buf.clear();
                State::Settings {
                    ack: head.flags & FLAG_ACK != 0,
                    left: head.len,
                }
            }
            RST_STREAM => State::Skip {
                left: head.len,
                reset: Some(head.stream),
            },
            _ => State::Skip {
                left: head.len,
                reset: None,
            },
        };
        // Frames with an empty payload end here.
        match self.state {
            State::Block { head, left: 0 } => {
                self.state = State::Head(0);
                self.end_block_frame(head)
            }
            State::Settings { left: 0, .. } => {
                self.state = State::Head(0);
                Ok(None)
            }
            State::Skip { left: 0, reset } => {
                self.state = State::Head(0);
                Ok(reset.map(|stream| Event::Reset { stream }))
            }
            _ => Ok(None),
        }
    }

    /// A header block fragment frame was gathered in `frame_buf`: adds its
    /// fragment to the block; the block is an event once it ends.
    fn end_block_frame(&mut self, head: FrameHead) -> Result<Option<Event>, ParseErrorReason> {
        let payload = &self.frame_buf[..];
        let mut start = 0usize;
        let mut pad = 0usize;
        if head.kind != CONTINUATION && head.flags & FLAG_PADDED != 0 {
            pad = usize::from(*payload.first().ok_or(ParseErrorReason::Http2)?);
            start = 1;
        }
        if head.kind == HEADERS && head.flags & FLAG_PRIORITY != 0 {
            start += 5;
        }
        if head.kind == PUSH_PROMISE {
            start += 4;
        }
        if start + pad > payload.len() {
            return Err(ParseErrorReason::Http2);
        }
        self.block
            .extend_from_slice(&payload[start..payload.len() - pad]);
        let open = match self.open_block {
            Some(open) => open,
            None => OpenBlock {
                stream: head.stream,
                end_stream: head.kind == HEADERS && head.flags & FLAG_END_STREAM != 0,
                promise: head.kind == PUSH_PROMISE,
            },
        };
        if head.flags & FLAG_END_HEADERS == 0 {
            self.open_block = Some(open);
            return Ok(None);
        }
        self.open_block = None;
        if self.frame_buf.capacity() > self.max_block.min(64 * 1024) {
            self.frame_buf = Vec::new();
        }
        Ok(Some(Event::Headers {
            stream: open.stream,
            block: std::mem::take(&mut self.block),
            end_stream: open.end_stream,
            promise: open.promise,
        }))
    }
}

/// The last SETTINGS_HEADER_TABLE_SIZE in a SETTINGS payload.
fn header_table_size(payload: &[u8]) -> Option<u32> {
    payload
        .chunks_exact(6)
        .rev()
        .find(|s| u16::from_be_bytes([s[0], s[1]]) == SETTING_HEADER_TABLE_SIZE)
        .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]))
}
