//! One connection's two plaintext streams → request/response exchanges.
//!
//! Each direction is a small state machine (head → body → head ...; or resync
//! after a capture hole).  Requests wait in a bounded queue for their responses,
//! which arrive in the same order (HTTP/1.x has no ids), so pipelining works.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::decode::{BodyAcc, Decoder, FeedData, GapOutcome, CHUNK_OVERHEAD};
use super::error::ParseErrorReason;
use super::h2::{self, H2Connection};
use super::head::{self, Sniff, SNIFF_LEN};
use super::limits::HttpLimits;
use super::types::{Body, Exchange, Headers, Request, Response, Role, Timing};
use crate::capture::event::Direction;

/// What one call to the parser produced.
#[derive(Debug, Default)]
pub struct ParserOutput {
    /// Complete request/response pairs, in order.
    pub exchanges: Vec<Exchange>,
    /// Each one counted by the caller in `sensor_http_parse_errors_total{reason}`.
    pub errors: Vec<ParseErrorReason>,
    /// Body bytes seen but not kept (past `max_body_bytes`).
    pub body_bytes_over_cap: u64,
    /// Request body bytes seen but not kept (past `max_request_body_kept`).
    pub request_body_bytes_not_kept: u64,
}

impl ParserOutput {
    pub fn clear(&mut self) {
        self.exchanges.clear();
        self.errors.clear();
        self.body_bytes_over_cap = 0;
        self.request_body_bytes_not_kept = 0;
    }
}

/// Whether the body of a response to this (complete) request is kept.
pub type BodyWanted<'a> = &'a dyn Fn(&Request) -> bool;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Request,
    Response,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum State {
    #[default]
    Head,
    Body,
    /// Looking for the next message start after a hole.
    Resync,
}

enum InKind {
    Request {
        id: u64,
    },
    Response {
        response: Response,
        /// Memory its head holds.
        head_held: usize,
        /// The pending request it answers; None: nobody asked, dropped at the end.
        answers: Option<u64>,
        /// A successful CONNECT: after this response the connection is a tunnel.
        tunnel: bool,
    },
}

/// The message whose body is being read.
struct InMsg {
    decoder: Decoder,
    acc: BodyAcc,
    start_ns: u64,
    kind: InKind,
    /// Body bytes kept at the last look at it while in progress
    /// ([`ConnectionParser::streaming_snapshots`]; 0: never).
    looked_upto: usize,
}

#[derive(Default)]
struct Side {
    state: State,
    head_buf: BytesMut,
    head_start_ns: u64,
    /// The head being read began at a resync candidate: if it does not parse it
    /// was body text after all, and the scan goes on.
    from_resync: bool,
    /// What that candidate looked like (the role is only settled once it parses).
    resync_kind: Option<Kind>,
    /// The start line of the head being read was checked (garbage is caught at
    /// its first line, not after buffering a whole head's worth of it).
    start_line_ok: bool,
    /// Start of the current line while resynchronising (≤ SNIFF_LEN bytes).
    resync_carry: Vec<u8>,
    resync_line_start: bool,
    msg: Option<InMsg>,
}

impl Side {
    /// Memory held: buffer capacities, and what the open message's body pins.
    fn buffered(&self) -> usize {
        self.head_buf.capacity()
            + self.resync_carry.capacity()
            + self.msg.as_ref().map_or(0, |m| {
                m.acc.held()
                    + m.decoder.trailer_held()
                    + match &m.kind {
                        InKind::Response { head_held, .. } => *head_held,
                        InKind::Request { .. } => 0,
                    }
            })
    }
}

struct Pending {
    id: u64,
    request: Request,
    /// Memory the request holds: its head, and its body once complete (while
    /// it is being read the body is counted by its side).
    held: usize,
    start_ns: u64,
    end_ns: u64,
    complete: bool,
    /// The response, the memory it holds, its start and end times.
    response: Option<(Response, usize, u64, u64)>,
}

impl Pending {
    fn buffered(&self) -> usize {
        self.held + self.response.as_ref().map_or(0, |(_, held, _, _)| *held)
    }
}

/// Per-connection HTTP/1.x reassembly.
pub struct ConnectionParser {
    limits: HttpLimits,
    role: Option<Role>,
    ignored: bool,
    closed: bool,
    sides: [Side; 2],
    pending: VecDeque<Pending>,
    next_id: u64,
    /// The response stream lost bytes: its next response answers the newest request.
    resp_resynced: bool,
    /// A response head was parsed (with `next_id`, tells a stream that never was
    /// HTTP from one that went bad).
    any_response: bool,
    /// The connection turned out to be HTTP/2: everything goes there.
    h2: Option<Box<H2Connection>>,
    /// A direction that opened with a server's HTTP/2 SETTINGS, held until
    /// the other one shows the client preface.
    h2_early: Option<(Direction, BytesMut)>,
}

/// Bytes held of a direction that opened like an HTTP/2 server while the
/// client preface has not been seen; more and the connection is not followed.
pub const MAX_EARLY_H2_BYTES: usize = 16 * 1024;

/// What the first bytes of a direction say about HTTP/2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum H2Sniff {
    /// The client preface.
    Preface,
    /// A server's opening SETTINGS frame.
    ServerSettings,
    /// Too few bytes to tell a server's SETTINGS from anything else.
    NeedMore,
    /// An HTTP/2 frame: a connection whose start was not seen.
    LateFrames,
    No,
}

/// Whether `p`, a direction's first bytes, could still be a server's opening
/// SETTINGS frame (see [`h2::is_server_preface`]).
fn h2_sniff(p: &[u8]) -> H2Sniff {
    match head::sniff(p) {
        Sniff::Http2 => return H2Sniff::Preface,
        // A start of the preface (`sniff` waits for the same bytes).
        Sniff::NeedMore if p.first() == Some(&b'P') => return H2Sniff::NeedMore,
        _ => {}
    }
    if p.len() >= h2::FRAME_HEAD_LEN {
        return if h2::is_server_preface(p) {
            H2Sniff::ServerSettings
        } else if h2::is_frame_head(p) {
            H2Sniff::LateFrames
        } else {
            H2Sniff::No
        };
    }
    if h2::may_start_server_preface(p) {
        H2Sniff::NeedMore
    } else {
        H2Sniff::No
    }
}

fn idx(dir: Direction) -> usize {
    match dir {
        Direction::Read => 0,
        Direction::Write => 1,
    }
}

fn role_for(dir: Direction, kind: Kind) -> Role {
    match (dir, kind) {
        (Direction::Read, Kind::Request) | (Direction::Write, Kind::Response) => Role::Server,
        (Direction::Write, Kind::Request) | (Direction::Read, Kind::Response) => Role::Client,
    }
}

impl ConnectionParser {
    pub fn new(limits: HttpLimits) -> Self {
        ConnectionParser {
            limits,
            role: None,
            ignored: false,
            closed: false,
            sides: Default::default(),
            pending: VecDeque::new(),
            next_id: 0,
            resp_resynced: false,
            any_response: false,
            h2: None,
            h2_early: None,
        }
    }

    /// True once the connection was judged not HTTP/1.x: further feeds are ignored.
    pub fn is_ignored(&self) -> bool {
        self.ignored
    }

    /// The role, once known.
    pub fn role(&self) -> Option<Role> {
        self.role
    }

    /// Memory currently held: heads in progress (buffer capacity), heads and
    /// kept bodies of open messages (what their chunks pin, see
    /// `CHUNK_OVERHEAD`).  Bounded by
    /// [`HttpLimits::max_buffered_bytes`].
    pub fn buffered_bytes(&self) -> usize {
        self.sides.iter().map(Side::buffered).sum::<usize>()
            + self.pending.iter().map(Pending::buffered).sum::<usize>()
            + self.h2.as_ref().map_or(0, |h| h.buffered_bytes())
            + self.h2_early.as_ref().map_or(0, |(_, b)| b.capacity())
    }

    /// The connection is HTTP/2.
    pub fn is_http2(&self) -> bool {
        self.h2.is_some()
    }

    fn kind_of(&self, dir: Direction) -> Option<Kind> {
        self.role.map(|role| match (role, dir) {
            (Role::Server, Direction::Read) | (Role::Client, Direction::Write) => Kind::Request,
            _ => Kind::Response,
        })
    }

    fn fail(&mut self, reason: ParseErrorReason, out: &mut ParserOutput) {
        out.errors.push(reason);
        tracing::debug!(
            reason = reason.as_str(),
            role = self.role.map(Role::as_str),
            "http: connection no longer parsed"
        );
        self.ignored = true;
        self.drop_state();
    }

    /// Stops parsing for good, without an error: the caller has no more use
    /// for this connection (its role is out of scope).  Its buffers go.
    pub fn stop(&mut self) {
        self.ignored = true;
        self.drop_state();
    }

    fn drop_state(&mut self) {
        self.sides = Default::default();
        self.pending = VecDeque::new();
        self.h2 = None;
        self.h2_early = None;
    }

    /// Bytes the process read or wrote on this connection, in order.
    pub fn feed(&mut self, dir: Direction, data: &Bytes, ts_ns: u64, out: &mut ParserOutput) {
        self.feed_with(dir, data.into(), ts_ns, out, &|_| true);
    }

    /// [`Self::feed`], keeping a response's body only when `body_wanted` says
    /// so of the complete request it answers (otherwise only its length is
    /// counted).  The leak stage needs no body of a response whose request
    /// carried no credential; copying and freeing those bodies was ~5 % of the
    /// pipeline on credential-less traffic.  A response to a request not yet
    /// complete keeps its body.
    pub fn feed_with(
        &mut self,
        dir: Direction,
        data: FeedData<'_>,
        ts_ns: u64,
        out: &mut ParserOutput,
        body_wanted: BodyWanted<'_>,
    ) {
        if self.ignored || self.closed {
            return;
        }
        if let Some(h2) = self.h2.as_mut() {
            h2.feed(dir, data, ts_ns, out, body_wanted);
            return self.drop_failed_h2();
        }
        if let Some((early_dir, held)) = self.h2_early.as_mut() {
            if *early_dir == dir {
                if held.len() + data.len() > MAX_EARLY_H2_BYTES {
                    return self.fail(ParseErrorReason::Http2, out);
                }
                held.extend_from_slice(&data);
                return;
            }
        }
        let side = &mut self.sides[idx(dir)];
        if side.state == State::Resync && side.resync_carry.is_empty() {
            // One SSL call usually carries one message or its start: a feed
            // start is as good a candidate as a line start.
            side.resync_line_start = true;
        }
        let mut pos = 0;
        while pos < data.len() && !self.ignored && !self.closed {
            match self.sides[idx(dir)].state {
                State::Resync => self.resync_scan(dir, data, &mut pos, ts_ns),
                State::Head => self.read_head(dir, data, &mut pos, ts_ns, out, body_wanted),
                State::Body => self.read_body(dir, data, &mut pos, ts_ns, out),
            }
        }
    }

    /// `lost` bytes of `dir` are missing before the next feed (0 = unknown amount).
    pub fn gap(&mut self, dir: Direction, lost: u64, ts_ns: u64, out: &mut ParserOutput) {
        if self.ignored || self.closed {
            return;
        }
        if let Some(h2) = self.h2.as_mut() {
            h2.gap(dir, lost, out);
            return self.drop_failed_h2();
        }
        if self.h2_early.as_ref().is_some_and(|(d, _)| *d == dir) {
            return self.fail(ParseErrorReason::GapInHead, out);
        }
        let i = idx(dir);
        match self.sides[i].state {
            State::Resync => {
                let side = &mut self.sides[i];
                side.resync_carry.clear();
                side.resync_line_start = true;
            }
            State::Head => {
                out.errors.push(ParseErrorReason::GapInHead);
                self.enter_resync(dir);
            }
            State::Body => {
                let Some(msg) = self.sides[i].msg.as_mut() else {
                    self.enter_resync(dir);
                    return;
                };
                let body_lost = match msg.decoder {
                    Decoder::Length(r) if lost == 0 || lost > r => r,
                    _ => lost,
                };
                match msg.decoder.skip(lost) {
                    GapOutcome::Skipped => msg.acc.lost(body_lost),
                    GapOutcome::SkippedToEnd => {
                        msg.acc.lost(body_lost);
                        self.finish_msg(dir, ts_ns, out);
                    }
                    GapOutcome::Lost => {
                        msg.acc.lost(body_lost);
                        out.errors.push(ParseErrorReason::GapInBody);
                        self.finish_msg(dir, ts_ns, out);
                        if !self.ignored {
                            self.enter_resync(dir);
                        }
                    }
                }
            }
        }
    }

    /// The connection ended: finish close-delimited bodies, drop the rest.
    pub fn close(&mut self, ts_ns: u64, out: &mut ParserOutput) {
        if self.ignored || self.closed {
            return;
        }
        if let Some(h2) = self.h2.as_mut() {
            h2.close(out);
        }
        for dir in [Direction::Read, Direction::Write] {
            let side = &mut self.sides[idx(dir)];
            if side.state != State::Body {
                continue;
            }
            let Some(msg) = side.msg.as_mut() else {
                continue;
            };
            // A close-delimited body ends here by definition; any other is
            // cut, and kept as far as it got: the bytes a client received
            // before hanging up were sent all the same.
            if !matches!(msg.decoder, Decoder::Eof) {
                msg.acc.cut();
                out.errors.push(ParseErrorReason::ClosedMidMessage);
            }
            self.finish_msg(dir, ts_ns, out);
        }
        self.closed = true;
        self.drop_state();
    }

    /// The responses this connection is in the middle of (a server-sent
    /// event stream, a long download), as far as they got, so that their
    /// leaks are reported while they last instead of when they end: see
    /// [`LookAt`] for which, and [`StreamLook`] for what each is.  HTTP/1.x
    /// has at most one; HTTP/2 one per open stream.
    pub fn streaming_snapshots(&mut self, look: LookAt, out: &mut Vec<StreamLook>) {
        if self.ignored || self.closed {
            return;
        }
        if let Some(h2) = self.h2.as_mut() {
            return h2.streaming_snapshots(look, out);
        }
        let Some(role) = self.role else { return };
        let Some(msg) = self.sides.iter_mut().find_map(|s| {
            s.msg
                .as_mut()
                .filter(|m| matches!(m.kind, InKind::Response { .. }))
        }) else {
            return;
        };
        let InKind::Response {
            response,
            answers: Some(id),
            ..
        } = &msg.kind
        else {
            return;
        };
        let Some(p) = self.pending.iter().find(|p| p.id == *id && p.complete) else {
            return;
        };
        let timing = Timing {
            request_start_ns: p.start_ns,
            request_end_ns: p.end_ns,
            response_start_ns: msg.start_ns,
            response_end_ns: look.now_ns,
        };
        let so_far = InProgress {
            request: &p.request,
            response,
            acc: &msg.acc,
            timing,
            role,
        };
        out.extend(so_far.look(look, &mut msg.looked_upto));
    }

    fn enter_resync(&mut self, dir: Direction) {
        let side = &mut self.sides[idx(dir)];
        side.state = State::Resync;
        side.head_buf = BytesMut::new();
        side.start_line_ok = false;
        side.msg = None;
        side.from_resync = false;
        side.resync_carry.clear();
        side.resync_line_start = true;
        if self.kind_of(dir) != Some(Kind::Request) {
            self.resp_resynced = true;
        }
    }

    /// A resync candidate turned out not to be a message: keep scanning after it.
    fn resume_resync(&mut self, dir: Direction, at_line_start: bool) {
        let side = &mut self.sides[idx(dir)];
        side.state = State::Resync;
        side.head_buf = BytesMut::new();
        side.start_line_ok = false;
        side.from_resync = false;
        side.resync_kind = None;
        side.resync_carry.clear();
        side.resync_line_start = at_line_start;
    }

    fn resync_scan(&mut self, dir: Direction, data: FeedData<'_>, pos: &mut usize, ts_ns: u64) {
        let (want_req, want_resp) = match self.kind_of(dir) {
            Some(Kind::Request) => (true, false),
            Some(Kind::Response) => (false, true),
            None => (true, true),
        };
        loop {
            let side = &mut self.sides[idx(dir)];
            if side.resync_line_start {
                let have = side.resync_carry.len();
                let take = (SNIFF_LEN - have).min(data.len() - *pos);
                let mut probe = [0u8; SNIFF_LEN];
                probe[..have].copy_from_slice(&side.resync_carry);
                probe[have..have + take].copy_from_slice(&data[*pos..*pos + take]);
                let probe = &probe[..have + take];
                match head::resync_candidate(probe, want_req, want_resp) {
                    found @ (Sniff::Request | Sniff::Response) => {
                        let kind = if found == Sniff::Request {
                            Kind::Request
                        } else {
                            Kind::Response
                        };
                        side.head_buf = BytesMut::from(&side.resync_carry[..]);
                        side.resync_carry.clear();
                        side.resync_line_start = false;
                        side.start_line_ok = false;
                        side.from_resync = true;
                        side.resync_kind = Some(kind);
                        side.head_start_ns = ts_ns;
                        side.state = State::Head;
                        return;
                    }
                    Sniff::NeedMore if take > 0 => {
                        side.resync_carry.clear();
                        side.resync_carry.extend_from_slice(probe);
                        *pos += take;
                        if *pos == data.len() {
                            return;
                        }
                        continue;
                    }
                    _ => {
                        side.resync_carry.clear();
                        side.resync_line_start = false;
                    }
                }
            }
            match memchr::memchr(b'\n', &data[*pos..]) {
                Some(i) => {
                    *pos += i + 1;
                    side.resync_line_start = true;
                    if *pos == data.len() {
                        return;
                    }
                }
                None => {
                    *pos = data.len();
                    return;
                }
            }
        }
    }

    /// Decides what a direction carries from the first bytes of its first head.
    fn check_kind(&mut self, dir: Direction, probe: &[u8]) -> Result<bool, ParseErrorReason> {
        let expected = self.kind_of(dir);
        let bad_for_expected = match expected {
            Some(Kind::Request) => ParseErrorReason::InvalidRequest,
            Some(Kind::Response) => ParseErrorReason::InvalidResponse,
            None => ParseErrorReason::NotHttp,
        };
        let kind = match head::sniff(probe) {
            Sniff::NeedMore => return Ok(false),
            Sniff::Http2 => return Err(ParseErrorReason::Http2),
            Sniff::NotHttp => return Err(bad_for_expected),
            Sniff::Request => Kind::Request,
            Sniff::Response => Kind::Response,
        };
        match expected {
            None => {
                self.role = Some(role_for(dir, kind));
                Ok(true)
            }
            Some(k) if k == kind => Ok(true),
            Some(_) => Err(bad_for_expected),
        }
    }

    /// `at_line_start`: the bytes consumed so far end a line (a whole head was read).
    fn head_error(
        &mut self,
        dir: Direction,
        reason: ParseErrorReason,
        at_line_start: bool,
        out: &mut ParserOutput,
    ) {
        if self.sides[idx(dir)].from_resync {
            self.resume_resync(dir, at_line_start);
        } else {
            self.fail(reason, out);
        }
    }

    fn read_head(
        &mut self,
        dir: Direction,
        data: FeedData<'_>,
        pos: &mut usize,
        ts_ns: u64,
        out: &mut ParserOutput,
        body_wanted: BodyWanted<'_>,
    ) {
        let max_head = self.limits.max_head_bytes;
        let i = idx(dir);
        let side = &mut self.sides[i];
        if side.head_buf.is_empty() && !side.from_resync {
            // Empty lines between messages are allowed (RFC 9112 §2.2).
            while *pos < data.len() && matches!(data[*pos], b'\r' | b'\n') {
                *pos += 1;
            }
            if *pos == data.len() {
                return;
            }
            side.head_start_ns = ts_ns;
        }
        // Judge the stream from its first bytes, before buffering a whole head of garbage.
        if side.head_buf.len() < SNIFF_LEN && !side.from_resync {
            let have = side.head_buf.len();
            let take = (SNIFF_LEN - have).min(data.len() - *pos);
            let mut probe = [0u8; SNIFF_LEN];
            probe[..have].copy_from_slice(&side.head_buf);
            probe[have..have + take].copy_from_slice(&data[*pos..*pos + take]);
            let probe = &probe[..have + take];
            if self.next_id == 0 && !self.any_response {
                match h2_sniff(probe) {
                    H2Sniff::Preface => {
                        return self.start_h2(dir, data, pos, ts_ns, out, body_wanted)
                    }
                    H2Sniff::ServerSettings if self.h2_early.is_none() => {
                        let mut held = std::mem::take(&mut self.sides[i].head_buf);
                        held.extend_from_slice(&data[*pos..]);
                        *pos = data.len();
                        self.h2_early = Some((dir, held));
                        return;
                    }
                    H2Sniff::NeedMore => {
                        self.sides[i].head_buf.extend_from_slice(&data[*pos..]);
                        *pos = data.len();
                        return;
                    }
                    // Its HPACK state cannot be rebuilt: counted as HTTP/2 not followed.
                    H2Sniff::LateFrames => return self.fail(ParseErrorReason::Http2, out),
                    // The other direction opened like an HTTP/2 server.
                    _ if self.h2_early.is_some() => {
                        return self.fail(ParseErrorReason::NotHttp, out)
                    }
                    _ => {}
                }
            }
            if let Err(reason) = self.check_kind(dir, probe) {
                self.fail(reason, out);
                return;
            }
        }
        let side = &self.sides[i];
        let head_end = head::find_head_end(&side.head_buf, &data[*pos..]);
        // The start line is judged on its own (with a second parse) only
        // while its head is incomplete, to turn garbage away before buffering
        // it.  A head whole in this feed is judged by its parse; the start
        // line is looked at again only if that fails (see below).
        let judged_by_parse = !side.start_line_ok && side.head_buf.is_empty() && head_end.is_some();
        if !side.start_line_ok && !judged_by_parse && !self.check_start_line(dir, data, *pos, out) {
            return;
        }
        // Whether a start line could be judged now (on_head may learn the kind).
        let kind_known = self.kind_of(dir).or(self.sides[i].resync_kind).is_some();
        let side = &mut self.sides[i];
        match head_end {
            Some(end) => {
                side.start_line_ok = false;
                if side.head_buf.len() + end > max_head {
                    self.head_error(dir, ParseErrorReason::HeadTooLarge, false, out);
                    return;
                }
                // A head gets its own buffer (its header names are lower-cased
                // in it): the one it was gathered in, or a copy of its bytes.
                let head = if !side.head_buf.is_empty() {
                    side.head_buf.extend_from_slice(&data[*pos..*pos + end]);
                    std::mem::take(&mut side.head_buf)
                } else {
                    BytesMut::from(&data[*pos..*pos + end])
                };
                let held = head.capacity() + CHUNK_OVERHEAD;
                let start = *pos;
                *pos += end;
                if let Err(reason) = self.on_head(dir, head, held, ts_ns, out, body_wanted) {
                    // As if the start line had been judged first: its error,
                    // with the head's bytes not consumed.
                    // (A valid start line leaves `start_line_ok` set, which
                    // `head_error` clears or makes moot.)
                    if judged_by_parse
                        && kind_known
                        && !self.check_start_line(dir, data, start, out)
                    {
                        *pos = start;
                        return;
                    }
                    self.head_error(dir, reason, true, out);
                }
            }
            None => {
                let rest = data.len() - *pos;
                // Not complete yet, so the head is at least one byte longer than this.
                if side.head_buf.len() + rest >= max_head {
                    self.head_error(dir, ParseErrorReason::HeadTooLarge, false, out);
                    return;
                }
                side.head_buf.extend_from_slice(&data[*pos..]);
                *pos = data.len();
            }
        }
    }

    /// `dir` opened with the HTTP/2 client preface: from here on the
    /// connection is HTTP/2, with what each direction held so far.
    fn start_h2(
        &mut self,
        dir: Direction,
        data: FeedData<'_>,
        pos: &mut usize,
        ts_ns: u64,
        out: &mut ParserOutput,
        body_wanted: BodyWanted<'_>,
    ) {
        let role = role_for(dir, Kind::Request);
        let mut h2 = H2Connection::new(role, self.limits.clone());
        let head = std::mem::take(&mut self.sides[idx(dir)].head_buf);
        // The server's side: its SETTINGS held whole, or its first bytes
        // while they were too few to judge.
        let other = match dir {
            Direction::Read => Direction::Write,
            Direction::Write => Direction::Read,
        };
        let early = match self.h2_early.take() {
            Some((_, early)) => early,
            None => std::mem::take(&mut self.sides[idx(other)].head_buf),
        };
        h2.feed(other, FeedData::Borrowed(&early), ts_ns, out, body_wanted);
        h2.feed(dir, FeedData::Borrowed(&head), ts_ns, out, body_wanted);
        match data {
            FeedData::Shared(b) => {
                let rest = b.slice(*pos..);
                h2.feed(dir, FeedData::Shared(&rest), ts_ns, out, body_wanted);
            }
            FeedData::Borrowed(b) => {
                h2.feed(dir, FeedData::Borrowed(&b[*pos..]), ts_ns, out, body_wanted)
            }
        }
        *pos = data.len();
        self.drop_state();
        self.role = Some(role);
        self.h2 = Some(Box::new(h2));
        self.drop_failed_h2();
    }

    /// An HTTP/2 connection that could not be followed (its error already
    /// counted) is ignored from then on, its state dropped.
    fn drop_failed_h2(&mut self) {
        if self.h2.as_ref().is_some_and(|h| h.is_failed()) {
            self.ignored = true;
            self.drop_state();
        }
    }

    /// Validates the start line once it is complete; false when the head failed.
    fn check_start_line(
        &mut self,
        dir: Direction,
        data: FeedData<'_>,
        pos: usize,
        out: &mut ParserOutput,
    ) -> bool {
        let Some(nl) = memchr::memchr(b'\n', &data[pos..]) else {
            return true;
        };
        let Some(kind) = self.kind_of(dir).or(self.sides[idx(dir)].resync_kind) else {
            return true;
        };
        let side = &mut self.sides[idx(dir)];
        let fresh = &data[pos..pos + nl + 1];
        let ok = if side.head_buf.is_empty() {
            head::start_line_valid(fresh, kind == Kind::Request)
        } else {
            let mut line = Vec::with_capacity(side.head_buf.len() + fresh.len());
            line.extend_from_slice(&side.head_buf);
            line.extend_from_slice(fresh);
            head::start_line_valid(&line, kind == Kind::Request)
        };
        if ok {
            side.start_line_ok = true;
            return true;
        }
        let reason = if self.next_id == 0 && !self.any_response {
            ParseErrorReason::NotHttp
        } else if kind == Kind::Request {
            ParseErrorReason::InvalidRequest
        } else {
            ParseErrorReason::InvalidResponse
        };
        self.head_error(dir, reason, false, out);
        false
    }

    /// Takes a complete head.  `Err`: it did not parse (the caller counts
    /// it, as the start line may earn the error instead); every other
    /// failure is dealt with here.
    fn on_head(
        &mut self,
        dir: Direction,
        head: BytesMut,
        held: usize,
        ts_ns: u64,
        out: &mut ParserOutput,
        body_wanted: BodyWanted<'_>,
    ) -> Result<(), ParseErrorReason> {
        let kind = match self.kind_of(dir).or(self.sides[idx(dir)].resync_kind) {
            Some(k) => k,
            None => match self.check_kind(dir, &head[..head.len().min(SNIFF_LEN)]) {
                Ok(true) => self.kind_of(dir).unwrap_or(Kind::Request),
                Ok(false) | Err(_) => {
                    self.fail(ParseErrorReason::NotHttp, out);
                    return Ok(());
                }
            },
        };
        let i = idx(dir);
        let start_ns = self.sides[i].head_start_ns;
        match kind {
            Kind::Request => {
                let (request, framing) = head::parse_request(head, self.limits.max_headers)?;
                self.head_parsed(dir, Kind::Request);
                if self.pending.len() >= self.limits.max_pending_requests {
                    self.fail(ParseErrorReason::TooManyPending, out);
                    return Ok(());
                }
                let id = self.next_id;
                self.next_id += 1;
                self.pending.push_back(Pending {
                    id,
                    request,
                    held,
                    start_ns,
                    end_ns: ts_ns,
                    complete: false,
                    response: None,
                });
                self.start_body(
                    dir,
                    framing.decoder,
                    false,
                    start_ns,
                    InKind::Request { id },
                    ts_ns,
                    out,
                );
            }
            Kind::Response => {
                // After a hole, the answer is to the newest request waiting:
                // the responses to those before it were in the hole (the
                // usual, non-pipelined case), and they are dropped below.
                let mut waiting = self.pending.iter().filter(|p| p.response.is_none());
                let answers = if self.resp_resynced {
                    waiting.last()
                } else {
                    waiting.next()
                };
                let method = answers.map(|p| p.request.method.as_str());
                let answers_id = answers.map(|p| p.id);
                let connect = method == Some("CONNECT");
                let (response, framing) =
                    head::parse_response(head, self.limits.max_headers, method)?;
                if self.resp_resynced {
                    self.resp_resynced = false;
                    self.pending
                        .retain(|p| p.response.is_some() || Some(p.id) == answers_id);
                }
                self.head_parsed(dir, Kind::Response);
                if response.status == 101 {
                    self.fail(ParseErrorReason::Upgrade, out);
                    return Ok(());
                }
                if (100..200).contains(&response.status) {
                    // Interim (100 Continue, 103 Early Hints...): not the answer.
                    return Ok(());
                }
                let tunnel = connect && (200..300).contains(&response.status);
                if answers_id.is_none() {
                    out.errors.push(ParseErrorReason::ResponseWithoutRequest);
                }
                // Asked only of a final response that parsed (not of every
                // 100 Continue or a head that fails).
                let keep_body = self
                    .pending
                    .iter()
                    .find(|p| Some(p.id) == answers_id)
                    .is_some_and(|p| !p.complete || body_wanted(&p.request));
                let kind = InKind::Response {
                    response,
                    head_held: held,
                    answers: answers_id,
                    tunnel,
                };
                self.start_body(dir, framing.decoder, !keep_body, start_ns, kind, ts_ns, out);
            }
        }
        Ok(())
    }

    fn head_parsed(&mut self, dir: Direction, kind: Kind) {
        let side = &mut self.sides[idx(dir)];
        side.from_resync = false;
        side.resync_kind = None;
        if kind == Kind::Response {
            self.any_response = true;
        }
        if self.role.is_none() {
            self.role = Some(role_for(dir, kind));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn start_body(
        &mut self,
        dir: Direction,
        decoder: Decoder,
        discard: bool,
        start_ns: u64,
        kind: InKind,
        ts_ns: u64,
        out: &mut ParserOutput,
    ) {
        let empty = decoder == Decoder::Length(0);
        // A request keeps a prefix of its body by design (see `read_body`).
        let prefix_only =
            matches!(kind, InKind::Request { .. }) && self.limits.request_body_is_prefix();
        let side = &mut self.sides[idx(dir)];
        side.msg = Some(InMsg {
            decoder,
            acc: BodyAcc::new(discard, prefix_only),
            start_ns,
            kind,
            looked_upto: 0,
        });
        side.state = State::Body;
        if empty {
            self.finish_msg(dir, ts_ns, out);
        }
    }

    fn read_body(
        &mut self,
        dir: Direction,
        data: FeedData<'_>,
        pos: &mut usize,
        ts_ns: u64,
        out: &mut ParserOutput,
    ) {
        let Some(msg) = self.sides[idx(dir)].msg.as_mut() else {
            self.sides[idx(dir)].state = State::Head;
            return;
        };
        // Requests keep only their first bytes (credentials come first); what
        // is not kept past that is counted apart from the general body cap.
        let (cap, not_kept) = match msg.kind {
            InKind::Request { .. }
                if self.limits.max_request_body_kept < self.limits.max_body_bytes =>
            {
                (
                    self.limits.max_request_body_kept,
                    &mut out.request_body_bytes_not_kept,
                )
            }
            _ => (self.limits.max_body_bytes, &mut out.body_bytes_over_cap),
        };
        match msg.decoder.decode(data, pos, &mut msg.acc, cap, not_kept) {
            Ok(true) => self.finish_msg(dir, ts_ns, out),
            Ok(false) => {}
            Err(reason) => self.fail(reason, out),
        }
    }

    fn finish_msg(&mut self, dir: Direction, ts_ns: u64, out: &mut ParserOutput) {
        let side = &mut self.sides[idx(dir)];
        side.state = State::Head;
        let Some(mut msg) = side.msg.take() else {
            return;
        };
        let body_held = msg.acc.held();
        let body = msg.acc.finish();
        let trailer = head::trailer_fields(&msg.decoder.take_trailer(), self.limits.max_headers);
        let trailer_held = trailer.as_ref().map_or(0, Headers::held);
        match msg.kind {
            InKind::Request { id } => {
                if let Some(p) = self.pending.iter_mut().find(|p| p.id == id) {
                    if let Some(t) = &trailer {
                        p.request.headers = p.request.headers.appended(t);
                    }
                    p.request.body = body;
                    p.held += body_held + trailer_held;
                    p.end_ns = ts_ns;
                    p.complete = true;
                }
            }
            InKind::Response {
                mut response,
                head_held,
                answers,
                tunnel,
            } => {
                let Some(id) = answers else { return };
                if let Some(p) = self.pending.iter_mut().find(|p| p.id == id) {
                    if let Some(t) = &trailer {
                        response.headers = response.headers.appended(t);
                    }
                    response.body = body;
                    let held = head_held + body_held + trailer_held;
                    p.response = Some((response, held, msg.start_ns, ts_ns));
                }
                if tunnel {
                    self.flush(out);
                    return self.fail(ParseErrorReason::Upgrade, out);
                }
            }
        }
        self.flush(out);
    }

    /// Emits, in order, every exchange whose request and response are both complete.
    fn flush(&mut self, out: &mut ParserOutput) {
        let Some(role) = self.role else { return };
        while self
            .pending
            .front()
            .is_some_and(|p| p.complete && p.response.is_some())
        {
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            let Some((response, _, rs, re)) = p.response else {
                break;
            };
            out.exchanges.push(Exchange {
                request: p.request,
                response,
                timing: Timing {
                    request_start_ns: p.start_ns,
                    request_end_ns: p.end_ns,
                    response_start_ns: rs,
                    response_end_ns: re,
                },
                role,
            });
        }
    }
}

/// Which responses in progress [`ConnectionParser::streaming_snapshots`]
/// hands out: those that started at least `min_age_ns` before `now_ns`
/// (CLOCK_MONOTONIC, as event times), answer a complete request, keep their
/// body without a content-coding (a compressed stream cannot be decoded from
/// the middle: it is searched when it ends), and kept bytes since the last
/// look.
#[derive(Clone, Copy, Debug)]
pub struct LookAt {
    pub now_ns: u64,
    pub min_age_ns: u64,
    /// Bytes before the previous look's end that the next one holds again,
    /// so that a value cut by that end is whole in one of them.
    pub overlap: usize,
}

/// A look at a response in progress: the exchange so far (the response
/// body from `from` on, marked truncated) and where its body bytes start.
#[derive(Debug)]
pub struct StreamLook {
    pub exchange: Exchange,
    pub from: u64,
}

/// A response being read, with its request: what a look is made of.
pub(crate) struct InProgress<'a> {
    pub request: &'a Request,
    pub response: &'a Response,
    pub acc: &'a BodyAcc,
    pub timing: Timing,
    pub role: Role,
}

impl InProgress<'_> {
    /// The look `look` allows, if any; `upto` (kept bytes at the previous
    /// look) moves to now.
    pub(crate) fn look(&self, look: LookAt, upto: &mut usize) -> Option<StreamLook> {
        let kept = self.acc.kept();
        if self.acc.discard
            || kept <= *upto
            || look.now_ns.saturating_sub(self.timing.response_start_ns) < look.min_age_ns
            || self
                .response
                .headers
                .get("content-encoding")
                .is_some_and(|v| !v.eq_ignore_ascii_case(b"identity"))
        {
            return None;
        }
        let from = upto.saturating_sub(look.overlap);
        let chunks = self.acc.kept_from(from);
        *upto = kept;
        let response = Response {
            status: self.response.status,
            version: self.response.version,
            headers: self.response.headers.clone(),
            body: Body {
                len: (kept - from) as u64,
                chunks,
                truncated: true,
                discarded: false,
            },
        };
        Some(StreamLook {
            exchange: Exchange {
                request: self.request.clone(),
                response,
                timing: self.timing,
                role: self.role,
            },
            from: from as u64,
        })
    }
}
