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
use super::limits::{HttpLimits, MAX_INTERIM_BYTES, MAX_INTERIM_HEADS, MAX_WAIT_FOR_START_BYTES};
use super::types::{Body, Exchange, Headers, InterimHead, Request, Response, Role, Timing};
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
    /// Directions that found a message start again after waiting for one,
    /// by why they waited: `sensor_http_resyncs_total{after}`.
    pub resyncs: Resyncs,
    /// Interim (1xx) response heads not kept past [`MAX_INTERIM_HEADS`] or
    /// [`MAX_INTERIM_BYTES`]: `sensor_http_interim_heads_not_kept_total`.
    pub interim_heads_not_kept: u64,
}

/// Resynchronisations, by why the direction was waiting for a message start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resyncs {
    /// After a capture hole (`after="gap"`).
    pub after_gap: u64,
    /// The sensor joined the connection in the middle of a message: its
    /// first bytes were no message start (`after="joined_midway"`).
    pub joined_midway: u64,
}

impl ParserOutput {
    pub fn clear(&mut self) {
        self.exchanges.clear();
        self.errors.clear();
        self.body_bytes_over_cap = 0;
        self.request_body_bytes_not_kept = 0;
        self.resyncs = Resyncs::default();
        self.interim_heads_not_kept = 0;
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
    /// Bytes of this direction were lost (a capture hole) or never seen (the
    /// sensor joined it in the middle of a message), and no head parsed
    /// since: it waits for a message start (`State::Resync`, or a candidate
    /// head being read).
    lost: Option<Lost>,
    /// Bytes fed while `lost` (bounded by [`MAX_WAIT_FOR_START_BYTES`]).
    wait_bytes: u64,
    /// A head was parsed on this direction.
    parsed_any: bool,
    /// The next feed continues an SSL call already fed: its first byte is
    /// no message start ([`ConnectionParser::next_feed_continues_call`]).
    mid_call: bool,
    /// The feed being read starts an SSL call.
    feed_starts_call: bool,
}

/// Why a direction waits for a message start, and what it lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Lost {
    /// Its first bytes were no message start (the sensor joined it midway),
    /// rather than a capture hole.  Then only the start of an SSL call is
    /// taken for a message start: a whole message, or its start, is what one
    /// write usually carries, and a body that holds text like a request line
    /// holds it at an SSL call's start far less often than at a line's.
    joined: bool,
    /// A head was lost (not only the rest of a body whose head was seen):
    /// on the request side of a joined connection, a request nobody will
    /// pair may still be answered ([`ConnectionParser::orphans`]).
    head_lost: bool,
    /// [`ConnectionParser::orphans`] when the bytes were lost.
    orphans_at: u64,
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
    /// A request lost in a hole (or before the sensor joined) whose response
    /// is still to come: it takes that response, which is dropped, so the
    /// next one goes to the request after it.  Its `request` is empty.
    lost: bool,
    /// Interim (1xx) heads answering it, until its final response takes them.
    interim: InterimAcc,
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
        self.held + self.interim.held + self.response.as_ref().map_or(0, |(_, held, _, _)| *held)
    }

    /// A request lost in a hole, standing for its response (see `lost`).
    fn lost(id: u64) -> Pending {
        Pending {
            id,
            lost: true,
            interim: InterimAcc::default(),
            request: Request {
                method: String::new(),
                target: String::new(),
                version: "HTTP/1.1",
                headers: Headers::default(),
                body: Body::default(),
            },
            held: 0,
            start_ns: 0,
            end_ns: 0,
            complete: true,
            response: None,
        }
    }
}

/// Responses owed to requests dropped unanswered (past
/// `max_pending_requests`), in order: `count` of them to requests of
/// `method` (what frames the response: `HEAD`, `CONNECT`, or any other).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Owed {
    method: Option<&'static str>,
    count: u64,
}

/// Runs of owed responses kept at most; a client that pipelines past the
/// limit alternating HEAD and other methods this many times is not followed.
const MAX_OWED_RUNS: usize = 64;

/// The method that frames a response to `m` (`head::parse_response`).
fn framing_method(m: &str) -> Option<&'static str> {
    match m {
        "HEAD" => Some("HEAD"),
        "CONNECT" => Some("CONNECT"),
        _ => None,
    }
}

/// Interim (1xx) heads kept for one response, bounded by
/// [`MAX_INTERIM_HEADS`] and [`MAX_INTERIM_BYTES`] (what they hold).
#[derive(Default)]
pub(crate) struct InterimAcc {
    heads: Vec<InterimHead>,
    held: usize,
}

impl InterimAcc {
    /// Keeps an interim head with headers (one without says nothing);
    /// false when it is not kept, past the bounds (the caller counts it).
    pub(crate) fn push(&mut self, status: u16, headers: &Headers) -> bool {
        if headers.is_empty() {
            return true;
        }
        if self.heads.len() >= MAX_INTERIM_HEADS {
            return false;
        }
        // Copied at their size: a head may pin a larger buffer.
        let headers = headers.compacted();
        let held = headers.held();
        if self.held + held > MAX_INTERIM_BYTES {
            return false;
        }
        self.held += held;
        self.heads.push(InterimHead { status, headers });
        true
    }

    pub(crate) fn held(&self) -> usize {
        self.held
    }

    pub(crate) fn take(&mut self) -> Vec<InterimHead> {
        self.held = 0;
        std::mem::take(&mut self.heads)
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
    /// Final responses that answered no request seen (none was waiting, or
    /// a lost one was): tells whether a request lost in a hole was answered
    /// before the next request came ([`Lost::orphans_at`]).
    orphans: u64,
    /// Responses owed to requests dropped past `max_pending_requests`: the
    /// next ones to come (after the one being read), taken and dropped.
    owed: VecDeque<Owed>,
    /// The direction whose first bytes' look set `role` (before any head
    /// parsed): if they turn out to be no head, the role is not known.
    role_guessed_by: Option<Direction>,
    /// Those first bytes pass `head::resync_candidate` (see [`Self::role`]).
    guess_looks_strict: bool,
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
            orphans: 0,
            owed: VecDeque::new(),
            role_guessed_by: None,
            guess_looks_strict: false,
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
        // Guessed from a first head still in progress, it is told only if
        // those bytes look like a message start as strictly as a
        // resynchronisation wants (a known method and a target, or
        // `HTTP/1.x NNN`): others may be the middle of a body (a connection
        // joined midway), and a caller may act on the role (`--role` mutes
        // the other side's connections).
        if self.role_guessed_by.is_some()
            && !self.guess_looks_strict
            && !self.sides.iter().any(|s| s.parsed_any)
        {
            return None;
        }
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
        self.owed = VecDeque::new();
        self.h2 = None;
        self.h2_early = None;
    }

    /// The next feed of `dir` continues an SSL call whose start was fed
    /// before (a later chunk of a large call): its first byte starts no
    /// message.  A direction waiting for a message start takes only a
    /// call's start for one ([`Lost::joined`]).
    pub fn next_feed_continues_call(&mut self, dir: Direction) {
        self.sides[idx(dir)].mid_call = true;
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
        let call_start = !std::mem::take(&mut side.mid_call);
        side.feed_starts_call = call_start;
        if side.state == State::Resync && side.resync_carry.is_empty() && call_start {
            // One SSL call usually carries one message or its start: a
            // call's start is as good a candidate as a line start.
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
        self.bound_wait(dir, data.len(), out);
    }

    /// A direction still waiting for a message start after `fed` more bytes
    /// is given up past [`MAX_WAIT_FOR_START_BYTES`].
    fn bound_wait(&mut self, dir: Direction, fed: usize, out: &mut ParserOutput) {
        if self.ignored || self.closed || self.h2.is_some() {
            return;
        }
        let side = &mut self.sides[idx(dir)];
        if side.lost.is_none() {
            return;
        }
        side.wait_bytes = side.wait_bytes.saturating_add(fed as u64);
        if side.wait_bytes > MAX_WAIT_FOR_START_BYTES {
            // Never a head on either side: nothing says it is HTTP at all.
            let reason = if self.sides.iter().any(|s| s.parsed_any) {
                ParseErrorReason::NoMessageStart
            } else {
                ParseErrorReason::NotHttp
            };
            self.fail(reason, out);
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
                // The next call's start is a candidate (`feed_with`); what
                // follows the hole in this call is not.
                side.resync_line_start = false;
            }
            State::Head => {
                out.errors.push(ParseErrorReason::GapInHead);
                self.enter_resync(dir, false, true);
            }
            State::Body => {
                let Some(msg) = self.sides[i].msg.as_mut() else {
                    self.enter_resync(dir, false, true);
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
                            // The message's head was seen: it is answered
                            // (or answers) as it is.
                            self.enter_resync(dir, false, false);
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

    /// `dir` lost bytes (`joined`: its first bytes were no message start):
    /// it looks for the next message start.  On the response side, the
    /// next response then answers the newest request waiting (the others'
    /// answers were lost); on the request side, a lost head may leave a
    /// response to take (see `on_head`).
    fn enter_resync(&mut self, dir: Direction, joined: bool, head_lost: bool) {
        let orphans = self.orphans;
        let side = &mut self.sides[idx(dir)];
        side.state = State::Resync;
        side.head_buf = BytesMut::new();
        side.start_line_ok = false;
        side.msg = None;
        side.from_resync = false;
        side.resync_kind = None;
        side.resync_carry.clear();
        // The next call's start is the first candidate (`feed_with`).
        side.resync_line_start = false;
        match side.lost.as_mut() {
            // Still waiting: what it waits since stays.
            Some(l) => l.head_lost |= head_lost,
            None => {
                side.lost = Some(Lost {
                    joined,
                    head_lost,
                    // Joined: since the connection was first seen (a
                    // response before this side's first bytes answered
                    // the request they are in the middle of).
                    orphans_at: if joined { 0 } else { orphans },
                });
                side.wait_bytes = 0;
            }
        }
    }

    /// The first bytes of `dir` (no head parsed on it yet) are no message
    /// start: the sensor joined it in the middle of one, or it is not HTTP.
    /// It waits for a start, unless the other direction does too without
    /// ever having had a head: then neither speaks HTTP/1.x (a database or
    /// mail protocol over TLS), and the connection is given up at once.
    fn wait_for_start(&mut self, dir: Direction, out: &mut ParserOutput) {
        let other = &self.sides[1 - idx(dir)];
        if other.lost.is_some_and(|l| l.joined) && !other.parsed_any {
            return self.fail(ParseErrorReason::NotHttp, out);
        }
        if self.role_guessed_by == Some(dir) && !self.sides.iter().any(|s| s.parsed_any) {
            // Guessed from bytes that were no head after all.
            self.role = None;
            self.role_guessed_by = None;
        }
        self.enter_resync(dir, true, true);
    }

    /// A resync candidate turned out not to be a message: keep scanning after it.
    fn resume_resync(&mut self, dir: Direction, at_line_start: bool) {
        let side = &mut self.sides[idx(dir)];
        let joined = side.lost.is_some_and(|l| l.joined);
        side.state = State::Resync;
        side.head_buf = BytesMut::new();
        side.start_line_ok = false;
        side.from_resync = false;
        side.resync_kind = None;
        side.resync_carry.clear();
        side.resync_line_start = at_line_start && !joined;
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
            if side.lost.is_some_and(|l| l.joined) {
                // Only a call's start is a candidate: the rest of this one is not.
                *pos = data.len();
                return;
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
        let strict = matches!(
            head::resync_candidate(probe, true, true),
            Sniff::Request | Sniff::Response
        );
        match expected {
            None => {
                self.role = Some(role_for(dir, kind));
                self.role_guessed_by = Some(dir);
                self.guess_looks_strict = strict;
                Ok(true)
            }
            Some(k) if k == kind => {
                if self.role_guessed_by == Some(dir) {
                    // More of the same bytes.
                    self.guess_looks_strict = strict;
                }
                Ok(true)
            }
            Some(_) => Err(bad_for_expected),
        }
    }

    /// The first bytes of `dir` (`probe`) are a message start of the kind
    /// the role, guessed from the other direction's first bytes, gives
    /// that one: no head parsed yet, one of them is the middle of something
    /// (a connection joined midway).  If these look like a message start
    /// (as strictly as a resynchronisation wants) and those do not, those
    /// wait for a start and these settle the role: true then; None while
    /// too few bytes to tell.
    fn retake_role(
        &mut self,
        dir: Direction,
        probe: &[u8],
        out: &mut ParserOutput,
    ) -> Option<bool> {
        let other = match dir {
            Direction::Read => Direction::Write,
            Direction::Write => Direction::Read,
        };
        if self.role_guessed_by != Some(other) || self.sides.iter().any(|s| s.parsed_any) {
            return Some(false);
        }
        let kind = match head::resync_candidate(probe, true, true) {
            Sniff::Request => Kind::Request,
            Sniff::Response => Kind::Response,
            Sniff::NeedMore if probe.len() < SNIFF_LEN => return None,
            _ => return Some(false),
        };
        let theirs = &self.sides[idx(other)].head_buf;
        let theirs = &theirs[..theirs.len().min(SNIFF_LEN)];
        if matches!(
            head::resync_candidate(theirs, true, true),
            Sniff::Request | Sniff::Response | Sniff::NeedMore
        ) {
            return Some(false);
        }
        self.wait_for_start(other, out);
        if self.ignored {
            return Some(false);
        }
        self.role = Some(role_for(dir, kind));
        self.role_guessed_by = Some(dir);
        Some(true)
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

    /// What starts a head (its first bytes, or its start line) is no
    /// message start.  On a direction no head was parsed on yet, that is a
    /// connection the sensor joined in the middle of a message (or no
    /// HTTP): it waits for a start.  A head whose start line is valid and
    /// that fails later fails as any other ([`Self::head_error`]).
    fn start_error(&mut self, dir: Direction, reason: ParseErrorReason, out: &mut ParserOutput) {
        let side = &self.sides[idx(dir)];
        if !side.from_resync && !side.parsed_any {
            self.wait_for_start(dir, out);
        } else {
            self.head_error(dir, reason, false, out);
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
            let at_call_start = *pos == 0 && side.feed_starts_call;
            if !side.parsed_any && !at_call_start {
                // A direction's first head starts its SSL call, as a
                // resynchronisation's does: these bytes are the middle of
                // something (a connection joined midway).
                return self.start_error(dir, ParseErrorReason::NotHttp, out);
            }
            // Empty lines between messages are allowed (RFC 9112 §2.2);
            // not before the first one, which may be a body's line ends.
            while side.parsed_any && *pos < data.len() && matches!(data[*pos], b'\r' | b'\n') {
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
                match self.retake_role(dir, probe, out) {
                    Some(true) => {}
                    // Judged again with more bytes.
                    None => {}
                    Some(false) => return self.start_error(dir, reason, out),
                }
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
                if side.head_buf.len() + end > max_head {
                    // Judged by its start line first, if that was not yet.
                    if judged_by_parse && !self.check_start_line(dir, data, *pos, out) {
                        return;
                    }
                    self.sides[i].start_line_ok = false;
                    self.head_error(dir, ParseErrorReason::HeadTooLarge, false, out);
                    return;
                }
                side.start_line_ok = false;
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
                    if side.start_line_ok {
                        self.head_error(dir, ParseErrorReason::HeadTooLarge, false, out);
                    } else {
                        // Not even a start line in that many bytes.
                        self.start_error(dir, ParseErrorReason::HeadTooLarge, out);
                    }
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
        self.role_guessed_by = None;
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
        self.start_error(dir, reason, out);
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
                let lost = self.head_parsed(dir, Kind::Request, out);
                // This side opened in the middle of a request (an upload
                // when the sensor started) and no response went unpaired
                // since: that request's answer is still to come, and must
                // not answer this one (a client that pipelines sent this one
                // before it).  Without pipelining the answer came before
                // this request and was dropped then.  (After a capture hole
                // the answers to what it held are taken to have come before:
                // true without pipelining, see the module's notes.)
                let owed_lost =
                    lost.is_some_and(|l| l.joined && l.head_lost && l.orphans_at == self.orphans);
                let needed = 1 + usize::from(owed_lost);
                while self.pending.len() + needed > self.limits.max_pending_requests.max(needed) {
                    if !self.drop_oldest_waiting(out) {
                        return Ok(());
                    }
                }
                if owed_lost {
                    self.pending.push_back(Pending::lost(self.next_id));
                    self.next_id += 1;
                }
                let id = self.next_id;
                self.next_id += 1;
                self.pending.push_back(Pending {
                    id,
                    lost: false,
                    interim: InterimAcc::default(),
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
            Kind::Response => self.on_response_head(dir, head, held, ts_ns, out, body_wanted)?,
        }
        Ok(())
    }

    /// A response head: what it answers, in order — after a hole on this
    /// side the newest request waiting (the answers to those before it were
    /// in the hole, the usual, non-pipelined case, and they are dropped);
    /// else first a response owed to a request dropped past the pending
    /// limit, else the oldest request waiting.
    fn on_response_head(
        &mut self,
        dir: Direction,
        head: BytesMut,
        held: usize,
        ts_ns: u64,
        out: &mut ParserOutput,
        body_wanted: BodyWanted<'_>,
    ) -> Result<(), ParseErrorReason> {
        let start_ns = self.sides[idx(dir)].head_start_ns;
        let resynced = self.sides[idx(dir)].lost.is_some();
        let owed = if resynced {
            None
        } else {
            self.owed.front().copied()
        };
        let (answers_id, method) = match owed {
            Some(o) => (None, o.method),
            None => {
                let mut waiting = self.pending.iter().filter(|p| p.response.is_none());
                let answers = if resynced {
                    waiting.last()
                } else {
                    waiting.next()
                };
                (
                    answers.map(|p| p.id),
                    answers.and_then(|p| framing_method(&p.request.method)),
                )
            }
        };
        let connect = method == Some("CONNECT");
        let (response, framing) = head::parse_response(head, self.limits.max_headers, method)?;
        if resynced {
            self.owed.clear();
            self.pending
                .retain(|p| p.response.is_some() || Some(p.id) == answers_id);
        }
        self.head_parsed(dir, Kind::Response, out);
        if response.status == 101 {
            self.fail(ParseErrorReason::Upgrade, out);
            return Ok(());
        }
        let answered = self.pending.iter_mut().find(|p| Some(p.id) == answers_id);
        if (100..200).contains(&response.status) {
            // Interim (100 Continue, 103 Early Hints...): not the answer,
            // but its headers are searched with the answer's (a 103's Link
            // may carry a request's key).  Kept only where the answer's
            // body would be.
            if let Some(p) = answered.filter(|p| !p.lost) {
                if (!p.complete || body_wanted(&p.request))
                    && !p.interim.push(response.status, &response.headers)
                {
                    out.interim_heads_not_kept += 1;
                }
            }
            return Ok(());
        }
        let tunnel = connect && (200..300).contains(&response.status);
        let (answers_id, keep_body, interim) = match answered {
            // Asked only of a final response that parsed (not of every
            // 100 Continue or a head that fails).
            Some(p) if !p.lost => (
                answers_id,
                !p.complete || body_wanted(&p.request),
                p.interim.take(),
            ),
            Some(_) => {
                // The answer to a request lost in a hole: dropped.
                self.pending.retain(|p| Some(p.id) != answers_id);
                self.orphaned(out);
                (None, false, Vec::new())
            }
            None if owed.is_some() => {
                // Owed to a request dropped past the pending limit (counted then).
                if let Some(o) = self.owed.front_mut() {
                    o.count -= 1;
                    if o.count == 0 {
                        self.owed.pop_front();
                    }
                }
                (None, false, Vec::new())
            }
            None => {
                self.orphaned(out);
                (None, false, Vec::new())
            }
        };
        let mut response = response;
        let mut head_held = held;
        if !interim.is_empty() {
            head_held += interim.iter().map(|h| h.headers.held()).sum::<usize>();
            response.headers = response.headers.with_interim(interim);
        }
        let kind = InKind::Response {
            response,
            head_held,
            answers: answers_id,
            tunnel,
        };
        self.start_body(dir, framing.decoder, !keep_body, start_ns, kind, ts_ns, out);
        Ok(())
    }

    /// A final response answered no request seen.
    fn orphaned(&mut self, out: &mut ParserOutput) {
        self.orphans += 1;
        out.errors.push(ParseErrorReason::ResponseWithoutRequest);
    }

    /// Makes room for a request past `max_pending_requests`: the oldest
    /// request waiting is dropped unanswered (counted), and its response,
    /// when it comes, is taken and dropped (`owed`): responses come in
    /// order, so the ones after it still find their requests, and the
    /// newest requests (where a client that pipelines this deep put its
    /// latest credentials) are kept.  The one a response being read answers
    /// is kept.  False when the connection was given up.
    fn drop_oldest_waiting(&mut self, out: &mut ParserOutput) -> bool {
        let being_answered = self.sides.iter().find_map(|s| match s.msg.as_ref()?.kind {
            InKind::Response { answers, .. } => answers,
            InKind::Request { .. } => None,
        });
        let at = self
            .pending
            .iter()
            .position(|p| p.response.is_none() && Some(p.id) != being_answered)
            .or_else(|| self.pending.iter().position(|p| p.response.is_none()));
        let Some(at) = at else {
            self.fail(ParseErrorReason::TooManyPending, out);
            return false;
        };
        let Some(p) = self.pending.remove(at) else {
            return false;
        };
        if !p.lost {
            out.errors.push(ParseErrorReason::TooManyPending);
        }
        if Some(p.id) == being_answered {
            // Its response is being read: it ends unpaired, nothing owed.
            return true;
        }
        let method = framing_method(&p.request.method);
        if let Some(o) = self.owed.back_mut().filter(|o| o.method == method) {
            o.count += 1;
        } else if self.owed.len() < MAX_OWED_RUNS {
            self.owed.push_back(Owed { method, count: 1 });
        } else {
            self.fail(ParseErrorReason::TooManyPending, out);
            return false;
        }
        true
    }

    /// A head of `kind` parsed on `dir`: the role is settled, and a
    /// direction that was waiting for a message start found one (counted);
    /// what it had lost is returned.
    fn head_parsed(&mut self, dir: Direction, kind: Kind, out: &mut ParserOutput) -> Option<Lost> {
        let side = &mut self.sides[idx(dir)];
        side.from_resync = false;
        side.resync_kind = None;
        side.parsed_any = true;
        side.wait_bytes = 0;
        let lost = side.lost.take();
        match lost {
            Some(l) if l.joined => out.resyncs.joined_midway += 1,
            Some(_) => out.resyncs.after_gap += 1,
            None => {}
        }
        if kind == Kind::Response {
            self.any_response = true;
        }
        if self.role.is_none() {
            self.role = Some(role_for(dir, kind));
        }
        lost
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
                let answered = answers.and_then(|id| self.pending.iter_mut().find(|p| p.id == id));
                if let Some(p) = answered {
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
