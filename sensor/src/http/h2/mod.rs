//! HTTP/2 (RFC 9113) reassembly: a connection's two frame streams → one
//! request/response pair per stream.
//!
//! A connection is taken as HTTP/2 when the direction that carries requests
//! opens with the client preface; the server's first SETTINGS may come before
//! it (see `ConnectionParser`).  Header blocks are decoded with HPACK (one
//! decoder per direction, fed every block in order, so its dynamic table
//! follows the peer's encoder); DATA payloads go into the same body
//! accumulators as HTTP/1.x bodies, under the same caps.  A pair is handed on
//! when its response ends (END_STREAM), or when its stream is cut after the
//! response started (RST_STREAM, connection closed: complete if the body
//! reached its content-length, else truncated); a stream cut before its
//! response started gives no pair.
//!
//! What cannot be followed ends the connection's parsing, counted: a
//! connection whose start was not seen (its HPACK state is unknown), frames
//! or header blocks that do not decode, bytes lost anywhere but inside a DATA
//! frame.
//!
//! Memory: per direction a header block being gathered (< `max_head_bytes`)
//! and an HPACK table (what the peer allowed, < [`MAX_HPACK_TABLE_BYTES`]); at most
//! `max_pending_requests` open streams, each with its decoded heads
//! (< `max_head_bytes` each) and request body prefix; response bodies kept by
//! all open streams together at most [`RESPONSE_BODY_BUDGET_FACTOR`] ×
//! `max_body_bytes`.

pub(crate) mod frame;
pub mod hpack;
mod huffman_cache;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::HashMap;

use super::connection::{BodyWanted, InProgress, InterimAcc, LookAt, ParserOutput, StreamLook};
use super::decode::{BodyAcc, FeedData, CHUNK_OVERHEAD};
use super::error::ParseErrorReason;
use super::limits::HttpLimits;
use super::types::{Exchange, Headers, HeadersBuilder, Request, Response, Role, Timing};
use crate::capture::event::Direction;

pub use frame::MAX_SETTINGS_BYTES;
pub(crate) use frame::{
    is_frame_head, is_server_preface, may_start_server_preface, FRAME_HEAD_LEN,
};
use frame::{Event, FrameReader};

/// Largest HPACK dynamic table followed per direction (RFC 7541 §4.2: the
/// decoder's peer sets it; 4,096 bytes is the default and what nginx, node,
/// curl and Python's h2 use).  A decoder follows what its peer's SETTINGS
/// allowed, up to this; a size update beyond that ends the connection's
/// parsing (`http2`).
pub const MAX_HPACK_TABLE_BYTES: usize = 64 * 1024;
/// The HPACK table size a connection starts with (RFC 9113 §6.5.2).
const DEFAULT_HPACK_TABLE_BYTES: usize = 4096;
/// Response bodies kept by a connection's open streams together, in units of
/// `max_body_bytes` (HTTP/1.x holds at most two responses at a time too); a
/// body that finds the budget spent keeps what it has and is truncated.
pub const RESPONSE_BODY_BUDGET_FACTOR: usize = 2;

/// The version both heads of an HTTP/2 pair carry.
pub const HTTP2: &str = "HTTP/2";

/// A stream's request, its response once it started, and their bodies.
struct Stream {
    request: Request,
    request_body: Option<BodyAcc>,
    request_held: usize,
    response: Option<(Response, BodyAcc, usize)>,
    /// Interim (1xx) heads before the response, until it takes them.
    interim: InterimAcc,
    timing: Timing,
    /// Response body bytes kept at the last look at it while in progress.
    looked_upto: usize,
}

impl Stream {
    fn held(&self) -> usize {
        self.request_held
            + self.interim.held()
            + self.request_body.as_ref().map_or(0, BodyAcc::held)
            + self
                .response
                .as_ref()
                .map_or(0, |(_, acc, head)| acc.held() + head)
    }
}

/// Bytes a decoded head's buffer starts with (a typical head fits).
const MIN_HEAD_CAPACITY: usize = 256;

/// Headers of one decoded block.
#[derive(Default)]
struct Block {
    method: Option<String>,
    path: Option<String>,
    /// `:authority` was sent (its value is the `host` header).
    authority: bool,
    status: Option<u16>,
    /// The regular headers (and `host` from `:authority`), built as they decode.
    fields: HeadersBuilder,
    /// `host` was taken from `:authority`.
    has_host: bool,
    /// Decoded size (names, values, 4 bytes each as in HTTP/1.x).
    size: usize,
    /// A field that HTTP/2 forbids or that does not decode as text.
    malformed: bool,
    /// Over `max_head_bytes` or `max_headers`: decoded (the table must
    /// follow) but not kept.
    too_large: Option<ParseErrorReason>,
}

/// Most memory one HTTP/2 connection can hold under `limits`, whatever it is
/// fed (as [`H2Connection::buffered_bytes`] counts it).
pub(crate) fn max_buffered_bytes(limits: &HttpLimits) -> usize {
    use super::decode::{max_body_held, GATHER_BLOCK, MIN_GATHER_BLOCK};
    let span = std::mem::size_of::<super::types::HeaderSpan>();
    // Frame and block buffers (grown by doubling) and a SETTINGS payload.
    let reader = limits
        .max_head_bytes
        .saturating_mul(4)
        .saturating_add(2 * MAX_SETTINGS_BYTES);
    // A table's entries, and the scratch a block's Huffman strings decode
    // into (at most 8/5 of the block).
    let table = MAX_HPACK_TABLE_BYTES + limits.max_head_bytes.saturating_mul(4);
    // A head and its trailers, each at most `max_head_bytes` decoded.
    let head = limits
        .max_head_bytes
        .saturating_mul(2)
        .saturating_add(limits.max_headers.saturating_mul(4 * span))
        .saturating_add(CHUNK_OVERHEAD);
    let growing = (GATHER_BLOCK / MIN_GATHER_BLOCK).ilog2() as usize + 3;
    let stream = head
        .saturating_mul(2)
        .saturating_add(super::limits::MAX_INTERIM_BYTES)
        .saturating_add(max_body_held(limits.request_body_cap()))
        // Each response body's gather block and chunk overheads beyond the budget.
        .saturating_add(GATHER_BLOCK + growing * CHUNK_OVERHEAD);
    let responses = max_body_held(
        limits
            .max_body_bytes
            .saturating_mul(RESPONSE_BODY_BUDGET_FACTOR),
    );
    (2 * (reader + table))
        .saturating_add(limits.max_pending_requests.saturating_mul(stream))
        .saturating_add(responses)
}

/// Per-connection HTTP/2 reassembly.
pub(crate) struct H2Connection {
    role: Role,
    limits: HttpLimits,
    readers: [FrameReader; 2],
    decoders: [hpack::Decoder; 2],
    streams: HashMap<u32, Stream>,
    /// Response body bytes kept by open streams.
    response_kept: usize,
    failed: bool,
}

fn idx(dir: Direction) -> usize {
    match dir {
        Direction::Read => 0,
        Direction::Write => 1,
    }
}

impl H2Connection {
    /// `role`: the probed process's side (it reads the preface: server).
    pub(crate) fn new(role: Role, limits: HttpLimits) -> H2Connection {
        let request_dir = match role {
            Role::Server => Direction::Read,
            Role::Client => Direction::Write,
        };
        let reader = |dir: Direction| FrameReader::new(dir == request_dir, limits.max_head_bytes);
        // Until the decoding side's SETTINGS say otherwise (RFC 9113 §6.5.2).
        let decoder = || hpack::Decoder::new(DEFAULT_HPACK_TABLE_BYTES);
        H2Connection {
            role,
            readers: [reader(Direction::Read), reader(Direction::Write)],
            decoders: [decoder(), decoder()],
            streams: HashMap::new(),
            response_kept: 0,
            failed: false,
            limits,
        }
    }

    pub(crate) fn is_failed(&self) -> bool {
        self.failed
    }

    fn request_dir(&self) -> Direction {
        match self.role {
            Role::Server => Direction::Read,
            Role::Client => Direction::Write,
        }
    }

    /// Memory held (as `ConnectionParser::buffered_bytes` counts it).
    pub(crate) fn buffered_bytes(&self) -> usize {
        let tables: usize = self.decoders.iter().map(hpack::Decoder::held).sum();
        self.readers.iter().map(FrameReader::held).sum::<usize>()
            + tables
            + self.streams.values().map(Stream::held).sum::<usize>()
    }

    fn fail(&mut self, reason: ParseErrorReason, out: &mut ParserOutput) {
        out.errors.push(reason);
        tracing::debug!(
            reason = reason.as_str(),
            role = self.role.as_str(),
            "http2: connection no longer parsed"
        );
        self.failed = true;
        self.streams = HashMap::new();
        self.response_kept = 0;
    }

    pub(crate) fn feed(
        &mut self,
        dir: Direction,
        data: FeedData<'_>,
        ts_ns: u64,
        out: &mut ParserOutput,
        body_wanted: BodyWanted<'_>,
    ) {
        let mut pos = 0;
        while !self.failed {
            let ev = match self.readers[idx(dir)].next(&data, &mut pos) {
                Ok(Some(ev)) => ev,
                Ok(None) => return,
                Err(reason) => return self.fail(reason, out),
            };
            self.on_event(dir, ev, data, ts_ns, out, body_wanted);
        }
    }

    /// `lost` bytes of `dir` are missing before the next feed.
    pub(crate) fn gap(&mut self, dir: Direction, lost: u64, out: &mut ParserOutput) {
        if self.failed {
            return;
        }
        match self.readers[idx(dir)].skip_lost(lost) {
            Some(stream) => {
                let request = dir == self.request_dir();
                if let Some(s) = self.streams.get_mut(&stream) {
                    let acc = if request {
                        s.request_body.as_mut()
                    } else {
                        s.response.as_mut().map(|(_, acc, _)| acc)
                    };
                    if let Some(acc) = acc {
                        acc.lost(lost);
                    }
                }
            }
            None => self.fail(ParseErrorReason::GapInHead, out),
        }
    }

    /// The connection ended: streams whose response started are handed on
    /// (see [`Self::cut`]), in stream order.
    pub(crate) fn close(&mut self, out: &mut ParserOutput) {
        if self.failed {
            return;
        }
        let mut ids: Vec<u32> = self.streams.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.cut(id, out);
        }
        self.streams = HashMap::new();
        self.response_kept = 0;
    }

    fn on_event(
        &mut self,
        dir: Direction,
        ev: Event,
        data: FeedData<'_>,
        ts_ns: u64,
        out: &mut ParserOutput,
        body_wanted: BodyWanted<'_>,
    ) {
        let request = dir == self.request_dir();
        match ev {
            Event::Headers {
                stream,
                block,
                end_stream,
                promise,
            } => {
                let decoded = self.decode(dir, &block);
                self.readers[idx(dir)].recycle(block);
                let decoded = match decoded {
                    Ok(d) => d,
                    Err(reason) => return self.fail(reason, out),
                };
                if promise {
                    // Server push: its block kept the table in step; the
                    // pushed response is not an answer to any request seen.
                    return;
                }
                if let Some(reason) = decoded.too_large {
                    // The stream is not followed; the connection goes on.
                    self.drop_stream(stream);
                    return out.errors.push(reason);
                }
                if request {
                    self.on_request_headers(stream, decoded, end_stream, ts_ns, out);
                } else {
                    self.on_response_headers(stream, decoded, end_stream, ts_ns, out, body_wanted);
                }
            }
            Event::Data { stream, start, end } => {
                let Some(s) = self.streams.get_mut(&stream) else {
                    return;
                };
                let cap_request = self.limits.request_body_cap();
                if request {
                    if let Some(acc) = s.request_body.as_mut() {
                        acc.push(
                            data,
                            start,
                            end,
                            cap_request,
                            &mut out.request_body_bytes_not_kept,
                        );
                        s.timing.request_end_ns = ts_ns;
                    }
                } else if let Some((_, acc, _)) = s.response.as_mut() {
                    let budget = self
                        .limits
                        .max_body_bytes
                        .saturating_mul(RESPONSE_BODY_BUDGET_FACTOR);
                    let before = acc.kept();
                    let room = budget.saturating_sub(self.response_kept);
                    let cap = self.limits.max_body_bytes.min(before + room);
                    acc.push(data, start, end, cap, &mut out.body_bytes_over_cap);
                    self.response_kept += acc.kept() - before;
                    s.timing.response_end_ns = ts_ns;
                }
            }
            Event::DataEnd { stream, end_stream } => {
                if end_stream {
                    self.end_of(stream, request, ts_ns, out);
                }
            }
            Event::Reset { stream } => self.cut(stream, out),
            Event::HeaderTableSize(size) => {
                // The sender of these settings decodes what the other
                // direction carries: that decoder may now follow a larger
                // table.  A larger table than the encoder uses decodes the same
                // (it only evicts later), so it is raised at once.
                let other = 1 - idx(dir);
                self.decoders[other].allow((size as usize).min(MAX_HPACK_TABLE_BYTES));
            }
        }
    }

    fn decode(&mut self, dir: Direction, block: &[u8]) -> Result<Block, ParseErrorReason> {
        let mut b = Block {
            // Indexed fields decode to far more than their bytes: room for a
            // typical head up front, not regrown field by field.
            fields: HeadersBuilder::with_capacity((block.len() * 2).max(MIN_HEAD_CAPACITY)),
            ..Block::default()
        };
        let max_head = self.limits.max_head_bytes;
        let max_headers = self.limits.max_headers;
        let mut count = 0usize;
        self.decoders[idx(dir)]
            .decode(block, |name, value| {
                count += 1;
                b.size += name.len() + value.len() + 4;
                if b.too_large.is_none() && count > max_headers {
                    b.too_large = Some(ParseErrorReason::TooManyHeaders);
                } else if b.too_large.is_none() && b.size > max_head {
                    b.too_large = Some(ParseErrorReason::HeadTooLarge);
                }
                if b.too_large.is_none() {
                    take_field(&mut b, name, value);
                }
            })
            .map_err(|e| {
                tracing::debug!(error = ?e, "http2: header block does not decode");
                ParseErrorReason::Http2
            })?;
        if b.too_large.is_some() {
            b.fields = HeadersBuilder::default();
        }
        Ok(b)
    }

    fn on_request_headers(
        &mut self,
        stream: u32,
        block: Block,
        end_stream: bool,
        ts_ns: u64,
        out: &mut ParserOutput,
    ) {
        if let Some(s) = self.streams.get_mut(&stream) {
            // Trailers: they end the request (RFC 9113 §8.1).
            if s.request_body.is_none() || !end_stream || block.malformed {
                self.drop_stream(stream);
                return out.errors.push(ParseErrorReason::InvalidRequest);
            }
            s.request.headers = s.request.headers.appended(&block.fields.finish());
            s.request_held = headers_held(&s.request.headers);
            return self.end_of(stream, true, ts_ns, out);
        }
        if stream.is_multiple_of(2) || block.malformed {
            // Even streams are the server's; a request HTTP/2 forbids is not paired.
            return out.errors.push(ParseErrorReason::InvalidRequest);
        }
        let headers = block.fields.finish();
        let (Some(method), Some(path)) = (
            block.method,
            block.path.or_else(|| {
                // CONNECT names an authority (given as `host`), not a path.
                let authority = headers.get("host").filter(|_| block.authority)?;
                Some(String::from_utf8_lossy(authority).into_owned())
            }),
        ) else {
            return out.errors.push(ParseErrorReason::InvalidRequest);
        };
        if self.streams.len() >= self.limits.max_pending_requests {
            return out.errors.push(ParseErrorReason::TooManyPending);
        }
        let s = Stream {
            request_held: headers_held(&headers),
            request: Request {
                method,
                target: path,
                version: HTTP2,
                headers,
                body: Default::default(),
            },
            request_body: Some(BodyAcc::new(false, self.limits.request_body_is_prefix())),
            response: None,
            interim: InterimAcc::default(),
            timing: Timing {
                request_start_ns: ts_ns,
                request_end_ns: ts_ns,
                ..Default::default()
            },
            looked_upto: 0,
        };
        self.streams.insert(stream, s);
        if end_stream {
            self.end_of(stream, true, ts_ns, out);
        }
    }

    fn on_response_headers(
        &mut self,
        stream: u32,
        block: Block,
        end_stream: bool,
        ts_ns: u64,
        out: &mut ParserOutput,
        body_wanted: BodyWanted<'_>,
    ) {
        let Some(s) = self.streams.get_mut(&stream) else {
            if stream % 2 == 1 {
                out.errors.push(ParseErrorReason::ResponseWithoutRequest);
            }
            return;
        };
        if let Some((response, _, held)) = s.response.as_mut() {
            // Trailers (gRPC puts its status and message there); they end
            // the response (RFC 9113 §8.1).
            if !end_stream || block.malformed {
                self.drop_stream(stream);
                return out.errors.push(ParseErrorReason::InvalidResponse);
            }
            response.headers = response.headers.appended(&block.fields.finish());
            *held = headers_held(&response.headers);
            return self.end_of(stream, false, ts_ns, out);
        }
        let Some(status) = block.status.filter(|_| !block.malformed) else {
            self.drop_stream(stream);
            return out.errors.push(ParseErrorReason::InvalidResponse);
        };
        let request_done = s.request_body.is_none();
        let keep = !request_done || body_wanted(&s.request);
        let headers = block.fields.finish();
        if (100..200).contains(&status) && !end_stream {
            // Interim (100 Continue, 103 Early Hints): not the answer, but
            // its headers are searched with the answer's (a 103's Link may
            // carry a request's key), where the answer's body would be.
            if keep && !s.interim.push(status, &headers) {
                out.interim_heads_not_kept += 1;
            }
            return;
        }
        let headers = headers.with_interim(s.interim.take());
        let held = headers_held(&headers);
        s.response = Some((
            Response {
                status,
                version: HTTP2,
                headers,
                body: Default::default(),
            },
            BodyAcc::new(!keep, false),
            held,
        ));
        s.timing.response_start_ns = ts_ns;
        s.timing.response_end_ns = ts_ns;
        if end_stream {
            self.end_of(stream, false, ts_ns, out);
        }
    }

    /// Looks at the responses of open streams (see
    /// `ConnectionParser::streaming_snapshots`).
    pub(crate) fn streaming_snapshots(&mut self, look: LookAt, out: &mut Vec<StreamLook>) {
        for s in self.streams.values_mut() {
            let Some((response, acc, _)) = &s.response else {
                continue;
            };
            if s.request_body.is_some() {
                continue;
            }
            let so_far = InProgress {
                request: &s.request,
                response,
                acc,
                timing: Timing {
                    response_end_ns: look.now_ns,
                    ..s.timing
                },
                role: self.role,
            };
            out.extend(so_far.look(look, &mut s.looked_upto));
        }
    }

    /// One side of `stream` ended (END_STREAM): a request's body is complete;
    /// a response completes the pair.
    fn end_of(&mut self, stream: u32, request: bool, ts_ns: u64, out: &mut ParserOutput) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        if request {
            if let Some(acc) = s.request_body.take() {
                s.request_held += acc.held();
                s.request.body = acc.finish();
                s.timing.request_end_ns = ts_ns;
            }
            return;
        }
        let Some(mut s) = self.streams.remove(&stream) else {
            return;
        };
        let Some((mut response, acc, _)) = s.response.take() else {
            return;
        };
        self.response_kept -= acc.kept();
        response.body = acc.finish();
        if let Some(acc) = s.request_body.take() {
            // The server answered before the request ended (an early 4xx):
            // the rest of the request is not waited for.
            let mut body = acc.finish();
            body.truncated = true;
            s.request.body = body;
        }
        s.timing.response_end_ns = ts_ns;
        out.exchanges.push(Exchange {
            request: s.request,
            response,
            timing: s.timing,
            role: self.role,
        });
    }

    /// `stream` ended without its response's END_STREAM: reset (RST_STREAM)
    /// or its connection closed.  Clients do both once a body reached its
    /// content-length (curl resets the stream, or closes the connection after
    /// its last transfer, before the server's empty END_STREAM frame comes).
    /// A response whose head was seen is handed on — complete when its body
    /// reached its content-length, else truncated; without a response head
    /// there is no pair.
    fn cut(&mut self, stream: u32, out: &mut ParserOutput) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        let Some((response, acc, _)) = s.response.as_mut() else {
            return self.drop_stream(stream);
        };
        let declared = response
            .header("content-length")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared != Some(acc.len()) {
            acc.lost(0);
        }
        let last = s.timing.response_end_ns;
        self.end_of(stream, false, last, out);
    }

    fn drop_stream(&mut self, stream: u32) {
        if let Some(s) = self.streams.remove(&stream) {
            if let Some((_, acc, _)) = &s.response {
                self.response_kept -= acc.kept();
            }
        }
    }
}

/// Files one decoded field: a pseudo-header into its place, or a header.
/// `:authority` is given as a `host` header (pseudo-headers come first,
/// RFC 9113 §8.3, so it leads the headers), and a `host` field after it is
/// not repeated.
fn take_field(b: &mut Block, name: &[u8], value: &[u8]) {
    let text = |v: &[u8]| std::str::from_utf8(v).ok().map(str::to_string);
    match name {
        b":method" => b.method = text(value),
        b":path" => b.path = text(value),
        b":authority" => {
            b.authority = true;
            if !b.has_host {
                b.fields.push("host", value);
                b.has_host = true;
            }
        }
        b":status" => {
            b.status = std::str::from_utf8(value)
                .ok()
                .filter(|s| s.len() == 3)
                .and_then(|s| s.parse().ok())
        }
        b":scheme" | b":protocol" => {}
        _ if name.first() == Some(&b':') => b.malformed = true,
        b"host" if b.has_host => {}
        b"" => b.malformed = true,
        // RFC 9113 §8.2.1: names are lower case; the builder lower-cases anyway.
        _ => {
            if b.fields.push_bytes(name, value) {
                b.has_host |= name == b"host";
            } else {
                b.malformed = true;
            }
        }
    }
}

/// Memory a decoded head holds.
fn headers_held(h: &Headers) -> usize {
    h.held() + CHUNK_OVERHEAD
}
