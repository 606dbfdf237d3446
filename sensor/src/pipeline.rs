//! The userspace path shared by `sensor run` and `sensor replay`:
//! raw capture events → connection table → HTTP reassembly → leak detection →
//! outputs (findings, pairs, metrics, live API).
//!
//! Everything here is bounded: the connection table is an LRU of
//! `max_connections` entries and the memory all connections hold together
//! (parser buffers by capacity, kept chunks by what they pin, plus each
//! connection's own state) is kept under `max_buffered_bytes` by evicting the
//! least recently used connections; every eviction is counted, the first one
//! said in the log.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use lru::LruCache;

use crate::capture::event::{
    parse_header, CaptureEvent, Comm, ConnId, Direction, EventError, EventKind,
};
use crate::capture::record::Recorder;
pub use crate::config::RoleFilter;
use crate::finding::{Exposure, Finding, SinkLocation};
use crate::http::limits::HttpLimits;
use crate::http::types::{ConnInfo, HttpPair, ProcessInfo, Role, Timing};
use crate::http::{ConnectionParser, FeedData, LookAt, ParseErrorReason, ParserOutput};
use crate::leak::{Detector, Inspection};
use crate::outputs::jsonl::JsonLinesWriter;
use crate::outputs::metrics::Metrics;
use crate::outputs::pairs::pair_record;

/// Default bound on tracked TLS connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16 * 1024;
/// Default bound on the bytes all connection parsers buffer together.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 512 * 1024 * 1024;
/// Memory of a tracked connection besides what its parser buffers: its state
/// (boxed), its id string and the LRU entry.
const CONNECTION_BYTES: usize = std::mem::size_of::<Connection>() + 128;
/// Entries in the per-process identity cache before it is cleared.
const MAX_CACHED_PROCESSES: usize = 64 * 1024;
/// A response still being read this long after it started is searched as
/// far as it got ([`Pipeline::inspect_streaming`]), again as it grows: the
/// leaks of a server-sent event stream or a long download are reported
/// while it lasts, not hours later when it ends.
pub const STREAM_INSPECT_AFTER_NS: u64 = 1_000_000_000;
/// Bytes before the end of the previous look that the next one searches
/// again, so that an echo cut by that end is whole in one of them: the
/// longest credential in its longest encoding (`&#x2F;`, `\u002f`: 6 bytes
/// per byte).
pub const STREAM_OVERLAP_BYTES: usize = 6 * crate::leak::extract::MAX_CREDENTIAL_LEN;

#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub http: HttpLimits,
    pub max_connections: usize,
    pub max_buffered_bytes: usize,
    pub role: RoleFilter,
    /// CLOCK_REALTIME − CLOCK_MONOTONIC in ns: turns event timestamps into wall time.
    pub clock_offset_ns: i64,
    /// Count the lost bytes events announce (`lost_before`) into
    /// `sensor_capture_truncated_bytes_total` here.  Live, `capture` counts them
    /// where they are lost (the kernel's counters),
    /// so counting the announcement too would count each byte twice; replay has
    /// only the announcements.  Events themselves are always counted here, once.
    pub count_announced_losses: bool,
    /// Collect the connections this pipeline has no more use for (outside
    /// `--role`, or traffic it stopped parsing), and those of them that
    /// leave its table, for [`Pipeline::take_mute_updates`]: the capture
    /// stops copying them.  Live only: replay has no kernel to tell.
    pub mute_in_kernel: bool,
}

/// Connections for the kernel to stop copying, or to forget: see
/// [`Pipeline::take_mute_updates`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MuteUpdates {
    /// Of no more use here: their later calls need not be copied.  A
    /// connection whose first bytes show a side `--role` leaves out, or
    /// whose traffic the parser gave up on (not HTTP, a WebSocket after
    /// its upgrade, HTTP/2 joined midway): it would be dropped unread.
    /// With the time of each one's first event: a connection freed after it
    /// began is gone, and its `SSL*` may already be a new connection's.
    pub muted: Vec<(ConnId, u64)>,
    /// Muted ones that left the table: closed, their process gone, evicted,
    /// or back in scope after a SIGHUP.
    pub unmuted: Vec<ConnId>,
}

/// At most this many updates of each kind wait for
/// [`Pipeline::take_mute_updates`]: past it a connection is not muted (the
/// kernel keeps copying it, and it is dropped here), or its kernel entry is
/// left to age out of the LRU map.
pub const MAX_PENDING_MUTE_UPDATES: usize = 64 * 1024;

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            http: HttpLimits::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
            role: RoleFilter::Any,
            clock_offset_ns: clock_offset_ns(),
            count_announced_losses: false,
            mute_in_kernel: false,
        }
    }
}

fn clock_now_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// CLOCK_MONOTONIC now, in ns: the clock of capture event times.
pub fn monotonic_now_ns() -> u64 {
    clock_now_ns(libc::CLOCK_MONOTONIC) as u64
}

/// CLOCK_REALTIME − CLOCK_MONOTONIC now, in ns.
pub fn clock_offset_ns() -> i64 {
    clock_now_ns(libc::CLOCK_REALTIME) - clock_now_ns(libc::CLOCK_MONOTONIC)
}

/// Looks up who a process is (exe, container, pod).  Live runs read /proc;
/// replay knows only what the events carry.
pub type ProcessResolver = Box<dyn FnMut(u32, &str) -> ProcessInfo + Send>;

/// Called with every finding (the live API's hub).
pub type FindingListener = Box<dyn FnMut(&Finding) + Send>;

struct Connection {
    parser: ConnectionParser,
    id: Arc<str>,
    /// Who the connection's process is, once a pair needed it.
    process: Option<Arc<ProcessInfo>>,
    pairs: u64,
    /// Memory it held after the last feed: [`CONNECTION_BYTES`] +
    /// `parser.buffered_bytes()` (for the global budget).
    buffered: usize,
    /// The parser gave up on this connection (already counted).
    ignored: bool,
    /// Newest event time seen (ends close-delimited bodies at process exit).
    last_ts_ns: u64,
    /// Its first event's time.
    first_ts_ns: u64,
    /// What was reported of the responses in progress while they lasted
    /// (HTTP/1.x: at most one; HTTP/2: one per stream looked at).
    streamed: Vec<Streamed>,
    /// The process name its first event carried (names the process when a
    /// look at a response in progress comes before any pair).
    comm: Comm,
    /// Its role is out of the `--role` scope: not parsed (`ignored` too).
    out_of_scope: bool,
    /// The kernel was asked to stop copying it ([`MuteUpdates::muted`]).
    muted: bool,
}

/// Findings already reported of a response still being read, by
/// [`finding_key`]: its final inspection reports only the others.
struct Streamed {
    /// Which response: its request's and its own start times.  (Two HTTP/2
    /// streams started by the same events share them; then a finding the
    /// one gave is not given again by the other, which gave the same.)
    id: (u64, u64),
    reported: HashSet<u64>,
}

/// Responses in progress a connection remembers findings of; past it the
/// oldest is forgotten (its end may then repeat what it gave).
const MAX_STREAMED_PER_CONNECTION: usize = 128;

fn streamed_id(t: &Timing) -> (u64, u64) {
    (t.request_start_ns, t.response_start_ns)
}

impl Connection {
    fn new(limits: HttpLimits, id: Arc<str>, ts_ns: u64, comm: Comm) -> Box<Connection> {
        Box::new(Connection {
            parser: ConnectionParser::new(limits),
            id,
            process: None,
            pairs: 0,
            buffered: 0,
            ignored: false,
            last_ts_ns: ts_ns,
            first_ts_ns: ts_ns,
            streamed: Vec::new(),
            comm,
            out_of_scope: false,
            muted: false,
        })
    }

    /// Stands in for a connection in its table slot while that one is worked on.
    fn placeholder() -> Box<Connection> {
        let mut c = Connection::new(HttpLimits::default(), Arc::from(""), 0, Comm::from(""));
        c.ignored = true;
        c
    }
}

/// Where the results go.
#[derive(Default)]
pub struct Outputs {
    pub findings: Option<JsonLinesWriter>,
    pub pairs: Option<JsonLinesWriter>,
    pub recorder: Option<Recorder>,
    pub on_finding: Option<FindingListener>,
}

pub struct Pipeline {
    cfg: PipelineConfig,
    /// Boxed: a connection is taken out and put back on every event, and its
    /// parser state is large (moving it twice per event showed in the profile).
    conns: LruCache<ConnId, Box<Connection>>,
    buffered_total: usize,
    /// Connection generations, so a reused `SSL*` gets a new connection id.
    next_generation: u64,
    detector: Arc<Detector>,
    metrics: Metrics,
    outputs: Outputs,
    resolver: ProcessResolver,
    processes: HashMap<u32, Arc<ProcessInfo>>,
    logged_reasons: HashSet<&'static str>,
    /// The first memory-budget eviction was logged.
    budget_eviction_logged: bool,
    scratch: ParserOutput,
    /// The placeholder a connection's slot holds while the connection is
    /// worked on (see `data_event`).
    spare: Option<Box<Connection>>,
    /// Connections put out of the role scope, and those gone, not taken yet.
    mute_updates: MuteUpdates,
    /// Which findings' log lines were said when (one a minute per key).
    leak_log: LeakLogLimiter,
    /// When the requests-dropped line was said (one a minute).
    pending_log: LeakLogLimiter,
}

impl Pipeline {
    pub fn new(
        cfg: PipelineConfig,
        detector: Arc<Detector>,
        metrics: Metrics,
        outputs: Outputs,
        resolver: ProcessResolver,
    ) -> Pipeline {
        let cap = NonZeroUsize::new(cfg.max_connections.max(1)).expect("non-zero");
        Pipeline {
            cfg,
            conns: LruCache::new(cap),
            buffered_total: 0,
            next_generation: 1,
            detector,
            metrics,
            outputs,
            resolver,
            processes: HashMap::new(),
            logged_reasons: HashSet::new(),
            budget_eviction_logged: false,
            scratch: ParserOutput::default(),
            spare: None,
            mute_updates: MuteUpdates::default(),
            leak_log: LeakLogLimiter::new(LEAK_LOG_KEYS),
            pending_log: LeakLogLimiter::new(1),
        }
    }

    /// The leak detector in use.
    pub fn detector(&self) -> &Arc<Detector> {
        &self.detector
    }

    /// Swaps the detector (SIGHUP reload of the leak lists); connections keep their state.
    pub fn set_detector(&mut self, detector: Arc<Detector>) {
        self.detector = detector;
    }

    /// Applies a new `--role` (SIGHUP).  The connections the old one left out
    /// are forgotten (and unmuted), so those the new one takes in are looked
    /// at again from their next bytes, as connections open before the start
    /// are.  Returns whether the role changed.
    pub fn set_role_filter(&mut self, role: RoleFilter) -> bool {
        if role == self.cfg.role {
            return false;
        }
        self.cfg.role = role;
        let left_out: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.out_of_scope)
            .map(|(k, _)| *k)
            .collect();
        for id in left_out {
            if let Some(conn) = self.conns.pop(&id) {
                self.left_table(id, &conn);
            }
        }
        self.metrics.connections_active.set(self.conns.len() as i64);
        true
    }

    /// The connections muted since the last call, and the muted ones that
    /// left the table since (collected only with
    /// [`PipelineConfig::mute_in_kernel`]).
    pub fn take_mute_updates(&mut self) -> MuteUpdates {
        std::mem::take(&mut self.mute_updates)
    }

    /// Its first bytes showed a side `--role` leaves out: it is not parsed
    /// from now on.
    fn put_out_of_scope(&mut self, conn: &mut Connection) {
        conn.parser.stop();
        conn.ignored = true;
        conn.out_of_scope = true;
        conn.streamed = Vec::new();
        self.buffered_total -= conn.buffered - CONNECTION_BYTES;
        conn.buffered = CONNECTION_BYTES;
    }

    /// The connection is of no more use here: have the kernel stop copying it.
    fn mute(&mut self, key: ConnId, conn: &mut Connection) {
        if self.cfg.mute_in_kernel
            && !conn.muted
            && self.mute_updates.muted.len() < MAX_PENDING_MUTE_UPDATES
        {
            conn.muted = true;
            self.mute_updates.muted.push((key, conn.first_ts_ns));
        }
    }

    /// The connection left the table: what it held is given back, and if it
    /// was muted its kernel entry can go.
    fn left_table(&mut self, key: ConnId, conn: &Connection) {
        self.buffered_total -= conn.buffered;
        if conn.muted && self.mute_updates.unmuted.len() < MAX_PENDING_MUTE_UPDATES {
            self.mute_updates.unmuted.push(key);
        }
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Memory all tracked connections hold, as the budget counts it.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered_total
    }

    /// One raw event from a recording or a test, in a buffer the HTTP stage
    /// may keep slices of.
    pub fn handle_raw(&mut self, raw: Bytes) {
        if self.outputs.recorder.is_some() {
            self.record_raw(&raw);
        }
        match CaptureEvent::parse_owned(raw) {
            Ok(ev) => self.handle_event(ev),
            Err(e) => self.bad_event(e),
        }
    }

    /// One raw event read in place in the capture ring buffer: only what the
    /// HTTP stage keeps of it is copied.
    pub fn handle_record(&mut self, raw: &[u8]) {
        if self.outputs.recorder.is_some() {
            self.record_raw(raw);
        }
        match CaptureEvent::parse_in_place(raw) {
            Ok((ev, data)) => self.handle_parsed(ev, FeedData::Borrowed(data)),
            Err(e) => self.bad_event(e),
        }
    }

    fn bad_event(&mut self, e: EventError) {
        self.metrics
            .capture_bad_events
            .with_label_values(&[e.reason()])
            .inc();
        if self.logged_reasons.insert(e.reason()) {
            tracing::warn!("malformed capture event ({e}); counted in sensor_capture_bad_events_total, further ones not logged");
        }
    }

    /// Writes one raw event to the recording; who its process is goes before
    /// the process' first event, so replay names it as this run does.
    fn record_raw(&mut self, raw: &[u8]) {
        if let Ok(h) = parse_header(raw) {
            let tgid = (h.pid_tgid >> 32) as u32;
            if !self.processes.contains_key(&tgid) {
                let info = self.process_info(tgid, &Comm::from_kernel(h.comm));
                self.record(|r| r.process(&info));
            }
        }
        self.record(|r| r.event(raw));
    }

    pub fn handle_event(&mut self, mut ev: CaptureEvent) {
        // The data is moved out, not cloned: a clone would make it shared.
        match std::mem::replace(&mut ev.kind, EventKind::Close) {
            EventKind::Close => self.handle_parsed(ev, FeedData::Borrowed(&[])),
            EventKind::Data(data) => {
                ev.kind = EventKind::Data(Bytes::new());
                self.handle_parsed(ev, FeedData::Shared(&data))
            }
        }
    }

    /// An event whose data (empty for a close) is `data`, not `ev.kind`'s.
    fn handle_parsed(&mut self, ev: CaptureEvent, data: FeedData<'_>) {
        let hot = &self.metrics.hot;
        match (&ev.kind, ev.direction) {
            (EventKind::Close, _) => hot.events_close.inc(),
            (_, Direction::Read) => hot.events_read.inc(),
            (_, Direction::Write) => hot.events_write.inc(),
        }
        if self.cfg.count_announced_losses && ev.gap_before && ev.lost_before > 0 {
            self.metrics
                .capture_truncated_bytes
                .inc_by(ev.lost_before as u64);
        }
        match ev.kind {
            EventKind::Close => self.close_connection(ev.conn, ev.ts_ns, &ev.comm),
            EventKind::Data(_) => self.data_event(&ev, data),
        }
    }

    fn data_event(&mut self, ev: &CaptureEvent, data: FeedData<'_>) {
        // A known connection is worked on in place: its box is swapped out of
        // the table for a placeholder and back (the lookup also makes it the
        // most recently used).  Taking it out with `pop` and putting it back
        // with `push` freed and allocated a table node per event (~7 % of the
        // pipeline's instructions).
        let known = match self.conns.get_mut(&ev.conn) {
            Some(slot) => {
                let placeholder = self.spare.take().unwrap_or_else(Connection::placeholder);
                Some(std::mem::replace(slot, placeholder))
            }
            None => None,
        };
        let is_new = known.is_none();
        let mut conn = known.unwrap_or_else(|| {
            let generation = self.next_generation;
            self.next_generation += 1;
            let id = format!("{}:{:x}:{}", ev.conn.tgid, ev.conn.ssl, generation);
            Connection::new(self.cfg.http.clone(), id.into(), ev.ts_ns, ev.comm)
        });
        conn.last_ts_ns = conn.last_ts_ns.max(ev.ts_ns);
        if !conn.ignored {
            let mut out = std::mem::take(&mut self.scratch);
            if ev.gap_before || ev.read_failed {
                conn.parser
                    .gap(ev.direction, ev.lost_before as u64, ev.ts_ns, &mut out);
            }
            if !data.is_empty() {
                if ev.offset > 0 {
                    // A later chunk of a large SSL call: no message starts there.
                    conn.parser.next_feed_continues_call(ev.direction);
                }
                let detector = &self.detector;
                conn.parser
                    .feed_with(ev.direction, data, ev.ts_ns, &mut out, &|req| {
                        detector.wants_response_body(req)
                    });
            }
            // Bytes past the per-call cap are announced by the kernel as
            // `lost_before` on the next event of this direction: nothing to do here.
            let now_buffered = if conn.parser.is_ignored() {
                // Its buffers are gone; the entry stays so later events are dropped cheaply.
                conn.ignored = true;
                CONNECTION_BYTES
            } else {
                CONNECTION_BYTES + conn.parser.buffered_bytes()
            };
            self.buffered_total = self.buffered_total + now_buffered - conn.buffered;
            conn.buffered = now_buffered;
            self.drain_output(ev.conn, &mut conn, &ev.comm, &mut out);
            self.scratch = out;
            if !conn.ignored && self.cfg.role != RoleFilter::Any {
                if let Some(role) = conn.parser.role() {
                    if !self.cfg.role.allows(role) {
                        self.put_out_of_scope(&mut conn);
                    }
                }
            }
            if conn.ignored {
                self.mute(ev.conn, &mut conn);
            }
        }
        if is_new {
            if let Some((old_key, old)) = self.conns.push(ev.conn, conn) {
                // The table was full: the least recently used connection is dropped.
                debug_assert!(old_key != ev.conn);
                self.left_table(old_key, &old);
                self.metrics
                    .connections_evicted
                    .with_label_values(&["lru"])
                    .inc();
            }
            self.metrics.connections_active.set(self.conns.len() as i64);
        } else if let Some(slot) = self.conns.peek_mut(&ev.conn) {
            // Nothing above touches the table, so the slot is still there.
            self.spare = Some(std::mem::replace(slot, conn));
        }
        self.enforce_memory_budget();
    }

    fn close_connection(&mut self, conn_key: ConnId, ts_ns: u64, comm: &Comm) {
        if let Some(mut conn) = self.conns.pop(&conn_key) {
            let mut out = std::mem::take(&mut self.scratch);
            conn.parser.close(ts_ns.max(conn.last_ts_ns), &mut out);
            self.left_table(conn_key, &conn);
            self.drain_output(conn_key, &mut conn, comm, &mut out);
            self.scratch = out;
            self.metrics.connections_active.set(self.conns.len() as i64);
        }
    }

    /// The process is gone: finish and forget all its connections.
    pub fn process_exited(&mut self, tgid: u32) {
        if let Some(rec) = self.outputs.recorder.as_mut() {
            let _ = rec.process_exited(tgid);
        }
        let ids: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(k, _)| k.tgid == tgid)
            .map(|(k, _)| *k)
            .collect();
        let comm = self
            .processes
            .get(&tgid)
            .map(|p| Comm::from(p.comm.as_str()))
            .unwrap_or(Comm::from(""));
        for id in ids {
            self.close_connection(id, 0, &comm);
        }
        self.processes.remove(&tgid);
    }

    fn enforce_memory_budget(&mut self) {
        while self.buffered_total > self.cfg.max_buffered_bytes {
            match self.conns.pop_lru() {
                Some((key, conn)) => {
                    if !self.budget_eviction_logged {
                        self.budget_eviction_logged = true;
                        tracing::warn!(
                            held_bytes = self.buffered_total,
                            max_buffered_bytes = self.cfg.max_buffered_bytes,
                            "memory budget reached: the least recently used connection was dropped \
                             with its unfinished requests and responses (their leaks go unseen). \
                             Raise max_buffered_bytes (--max-buffered-bytes) if this host can spare the memory. Counted in \
                             sensor_connections_evicted_total{{reason=\"memory\"}}; further ones are not logged"
                        );
                    }
                    self.left_table(key, &conn);
                    self.metrics
                        .connections_evicted
                        .with_label_values(&["memory"])
                        .inc();
                }
                None => {
                    self.buffered_total = 0;
                    break;
                }
            }
            self.metrics.connections_active.set(self.conns.len() as i64);
        }
    }

    /// Writes to the recording; a failed write stops recording (said once).
    fn record(&mut self, write: impl FnOnce(&mut Recorder) -> std::io::Result<()>) {
        if let Some(rec) = self.outputs.recorder.as_mut() {
            if let Err(e) = write(rec) {
                tracing::error!("cannot write the recording: {e}; recording stopped");
                self.outputs.recorder = None;
            }
        }
    }

    /// Caches who a process is: from the resolver, or as a recording said
    /// (replay), in which case its events use this instead of the resolver.
    pub fn remember_process(&mut self, info: ProcessInfo) {
        self.cache_process(info.pid, Arc::new(info));
    }

    fn cache_process(&mut self, tgid: u32, info: Arc<ProcessInfo>) {
        if self.processes.len() >= MAX_CACHED_PROCESSES {
            self.processes.clear();
        }
        self.processes.insert(tgid, info);
    }

    fn process_info(&mut self, tgid: u32, comm: &Comm) -> Arc<ProcessInfo> {
        if let Some(p) = self.processes.get(&tgid) {
            return p.clone();
        }
        let info = Arc::new((self.resolver)(tgid, &comm.to_string_lossy()));
        self.cache_process(tgid, info.clone());
        info
    }

    fn drain_output(
        &mut self,
        conn_key: ConnId,
        conn: &mut Connection,
        comm: &Comm,
        out: &mut ParserOutput,
    ) {
        for reason in out.errors.drain(..) {
            let r = reason.as_str();
            self.metrics.http_parse_errors.with_label_values(&[r]).inc();
            if reason == ParseErrorReason::TooManyPending {
                // Not a connection given up: one line a minute, with the count.
                if let Some(more) = self.pending_log.due(0, Instant::now()) {
                    tracing::warn!(
                        dropped_since_last_line = more,
                        max_pending_requests = self.cfg.http.max_pending_requests,
                        "a connection had more requests waiting for responses than max_pending_requests: \
                         the oldest are dropped unanswered and the connection stays followed \
                         (HTTP/2: the new stream is not followed). Counted in \
                         sensor_http_parse_errors_total{{reason=\"too_many_pending\"}}"
                    );
                }
            } else if self.logged_reasons.insert(r) {
                tracing::info!(
                    reason = r,
                    "HTTP the sensor could not follow ({r}): depending on the reason, one message or \
                     the whole connection is not followed (README, Requirements). Counted in \
                     sensor_http_parse_errors_total; further ones of this reason are not logged"
                );
            }
        }
        if out.body_bytes_over_cap > 0 {
            self.metrics
                .body_bytes_over_cap
                .inc_by(out.body_bytes_over_cap);
            out.body_bytes_over_cap = 0;
        }
        let resyncs = std::mem::take(&mut out.resyncs);
        for (after, n) in [
            ("gap", resyncs.after_gap),
            ("joined_midway", resyncs.joined_midway),
        ] {
            if n > 0 {
                self.metrics
                    .http_resyncs
                    .with_label_values(&[after])
                    .inc_by(n);
            }
        }
        if out.interim_heads_not_kept > 0 {
            self.metrics
                .http_interim_heads_not_kept
                .inc_by(std::mem::take(&mut out.interim_heads_not_kept));
        }
        if out.request_body_bytes_not_kept > 0 {
            self.metrics
                .request_body_bytes_not_kept
                .inc_by(out.request_body_bytes_not_kept);
            out.request_body_bytes_not_kept = 0;
        }
        if out.exchanges.is_empty() {
            return;
        }
        // Looked up once per connection (client and server events alternate,
        // so a one-entry cache missed on every pair).
        let process = match &conn.process {
            Some(p) => p.clone(),
            None => {
                let p = self.process_info(conn_key.tgid, comm);
                conn.process = Some(p.clone());
                p
            }
        };
        for exchange in out.exchanges.drain(..) {
            conn.pairs += 1;
            let seq = conn.pairs;
            let role = exchange.role;
            let id = streamed_id(&exchange.timing);
            let streamed = conn
                .streamed
                .iter()
                .position(|s| s.id == id)
                .map(|i| conn.streamed.swap_remove(i));
            if !self.cfg.role.allows(role) {
                continue;
            }
            let wall_ns = exchange.timing.response_end_ns as i64 + self.cfg.clock_offset_ns;
            let pair = HttpPair {
                exchange,
                process: process.clone(),
                conn: ConnInfo {
                    id: conn.id.clone(),
                    peer: None,
                },
                seq,
                ts: chrono::DateTime::from_timestamp_nanos(wall_ns),
            };
            self.emit_pair(&pair, streamed.as_ref().map(|s| &s.reported));
        }
    }

    /// Searches every response still being read that started at least
    /// [`STREAM_INSPECT_AFTER_NS`] before `now_ns` (CLOCK_MONOTONIC, as event
    /// times) and kept bytes since the last look, and reports what it finds
    /// that this response did not give already.  The pair itself is written
    /// (`--pairs`) once, when the response ends.  Called once a second.
    pub fn inspect_streaming(&mut self, now_ns: u64) {
        let look = LookAt {
            now_ns,
            min_age_ns: STREAM_INSPECT_AFTER_NS,
            overlap: STREAM_OVERLAP_BYTES,
        };
        let mut snapshots = Vec::new();
        let mut looks = Vec::new();
        for (key, conn) in self.conns.iter_mut() {
            if conn.ignored {
                continue;
            }
            conn.parser.streaming_snapshots(look, &mut looks);
            for l in looks.drain(..) {
                if self.cfg.role.allows(l.exchange.role) {
                    let who = (conn.process.clone(), conn.comm, conn.id.clone());
                    snapshots.push((*key, l, conn.pairs + 1, who));
                }
            }
        }
        for (key, l, seq, (process, comm, id)) in snapshots {
            // A connection's process is known once it gave a pair; before
            // that, as for a pair.
            let process = process.unwrap_or_else(|| self.process_info(key.tgid, &comm));
            let streamed = streamed_id(&l.exchange.timing);
            let wall_ns = now_ns as i64 + self.cfg.clock_offset_ns;
            let pair = HttpPair {
                exchange: l.exchange,
                process,
                conn: ConnInfo { id, peer: None },
                seq,
                ts: chrono::DateTime::from_timestamp_nanos(wall_ns),
            };
            let mut findings = self.detector.inspect(&pair).findings;
            // A partial echo near the end of what is there so far may be the
            // start of a whole one cut by that end: the next look (which
            // holds those bytes again) or the response's end decides.
            let settled = pair.exchange.response.body.len;
            let settled = settled.saturating_sub(STREAM_OVERLAP_BYTES as u64);
            findings.retain(|f| {
                f.sink.location != SinkLocation::Body
                    || f.exposure != Exposure::Partial
                    || f.sink.offset < settled
            });
            for f in &mut findings {
                if f.sink.location == SinkLocation::Body {
                    f.sink.offset += l.from;
                }
            }
            let Some(conn) = self.conns.peek_mut(&key) else {
                continue;
            };
            let i = match conn.streamed.iter().position(|s| s.id == streamed) {
                Some(i) => i,
                None => {
                    if conn.streamed.len() >= MAX_STREAMED_PER_CONNECTION {
                        conn.streamed.remove(0);
                    }
                    conn.streamed.push(Streamed {
                        id: streamed,
                        reported: HashSet::new(),
                    });
                    conn.streamed.len() - 1
                }
            };
            let reported = &mut conn.streamed[i].reported;
            findings.retain(|f| reported.insert(finding_key(f)));
            let role = pair.exchange.role.as_str();
            for f in &findings {
                self.emit_finding(role, f);
            }
        }
    }

    fn emit_pair(&mut self, pair: &HttpPair, reported_already: Option<&HashSet<u64>>) {
        let role = pair.exchange.role.as_str();
        match pair.exchange.role {
            Role::Server => self.metrics.hot.pairs_server.inc(),
            Role::Client => self.metrics.hot.pairs_client.inc(),
        }
        // A response body is discarded only when `wants_response_body`
        // (this pipeline's `body_wanted`) said its request carries no body
        // and no credential: inspecting would extract them again, to find
        // none.
        let inspection = if pair.exchange.response.body.discarded {
            Inspection::default()
        } else {
            self.detector.inspect(pair)
        };
        for sink in &inspection.masked_echoes {
            self.metrics
                .masked_echoes
                .with_label_values(&[role, sink.as_str()])
                .inc();
        }
        self.metrics
            .credentials_dropped
            .inc_by(inspection.credentials_dropped as u64);
        if let Some(ce) = inspection.decompress_cap_hit {
            self.metrics
                .decompress_cap_hits
                .with_label_values(&[ce.as_str()])
                .inc();
        }
        for reason in &inspection.decode_errors {
            self.metrics
                .http_parse_errors
                .with_label_values(&[reason])
                .inc();
        }
        if let Some(w) = self.outputs.pairs.as_mut() {
            w.write(&pair_record(pair, &self.detector, &inspection.findings));
        }
        for f in &inspection.findings {
            if reported_already.is_some_and(|r| r.contains(&finding_key(f))) {
                continue;
            }
            self.emit_finding(role, f);
        }
    }

    /// One finding out: counted, logged (without the value; the same leak
    /// at most once a minute, see [`LeakLogLimiter`]), written, told.
    fn emit_finding(&mut self, role: &str, f: &Finding) {
        self.metrics
            .credential_leaks
            .with_label_values(&[
                role,
                f.credential.source.as_str(),
                f.credential.kind.as_str(),
                f.sink.location.as_str(),
                f.exposure.as_str(),
            ])
            .inc();
        if let Some(repeats) = self.leak_log.due(leak_log_key(f), Instant::now()) {
            tracing::warn!(
                fingerprint = %f.credential.fingerprint,
                source = f.credential.source.as_str(),
                sink = f.sink.location.as_str(),
                path = %f.request.path,
                pid = f.process.pid,
                repeats_since_last_line = repeats,
                "credential leak"
            );
        }
        if let Some(w) = self.outputs.findings.as_mut() {
            w.write(f);
        }
        if let Some(l) = self.outputs.on_finding.as_mut() {
            l(f);
        }
    }

    /// Flush the writers (after each batch of events, and at shutdown): the
    /// findings and pairs are handed to their writer threads, never waited on.
    pub fn flush(&mut self) {
        if let Some(w) = self.outputs.findings.as_mut() {
            w.flush();
        }
        if let Some(w) = self.outputs.pairs.as_mut() {
            w.flush();
        }
        if let Some(r) = self.outputs.recorder.as_mut() {
            if let Err(e) = r.flush() {
                tracing::error!("cannot write the recording: {e}");
            }
        }
    }

    /// End of input (replay end, shutdown): finish every connection.
    pub fn finish(&mut self) {
        let ids: Vec<ConnId> = self.conns.iter().map(|(k, _)| *k).collect();
        for id in ids {
            self.close_connection(id, 0, &Comm::from(""));
        }
        self.flush();
    }

    /// Shutdown: waits at most `wait` in all for the findings, pairs and
    /// recording writers to write what they were handed; what is left is dropped and
    /// counted.  Returns whether everything was written.
    pub fn finish_outputs(&mut self, wait: std::time::Duration) -> bool {
        let deadline = Instant::now().checked_add(wait);
        let mut all = true;
        for w in [self.outputs.findings.as_mut(), self.outputs.pairs.as_mut()]
            .into_iter()
            .flatten()
        {
            all &= w.finish(deadline.map_or(wait, |d| d.saturating_duration_since(Instant::now())));
        }
        if let Some(r) = self.outputs.recorder.as_mut() {
            all &= r.finish(deadline.map_or(wait, |d| d.saturating_duration_since(Instant::now())));
        }
        all
    }
}

/// Keys (leaks) whose last log line [`LeakLogLimiter`] remembers; past it
/// the least recently seen is forgotten (and logged again when seen again).
pub const LEAK_LOG_KEYS: usize = 4096;
/// The same leak is said in the log at most this often.
pub const LEAK_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Rate-limits the "credential leak" log line: a leaky endpoint under load
/// gives a finding per response, and a log line each was tens of MB a
/// minute.  Each leak (fingerprint, sink, request path) is logged the first
/// time, then at most every [`LEAK_LOG_EVERY`] with the number of repeats
/// since.  The findings output and the metrics still get every one.
pub struct LeakLogLimiter {
    /// Key → when its last line was logged, repeats since.
    seen: LruCache<u64, (Instant, u64)>,
}

impl LeakLogLimiter {
    pub fn new(keys: usize) -> Self {
        LeakLogLimiter {
            seen: LruCache::new(NonZeroUsize::new(keys.max(1)).expect("non-zero")),
        }
    }

    /// The leak `key` was seen `at`: the repeats since its last line when a
    /// line is due now.
    pub fn due(&mut self, key: u64, at: Instant) -> Option<u64> {
        match self.seen.get_mut(&key) {
            Some((last, repeats)) if at.saturating_duration_since(*last) < LEAK_LOG_EVERY => {
                *repeats += 1;
                None
            }
            Some((last, repeats)) => {
                *last = at;
                Some(std::mem::take(repeats))
            }
            None => {
                self.seen.put(key, (at, 0));
                Some(0)
            }
        }
    }
}

/// What the leak log line is rate-limited by: the credential, where it came
/// back (location and name), and the request path.
fn leak_log_key(f: &Finding) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    f.credential.fingerprint.hash(&mut h);
    f.sink.location.as_str().hash(&mut h);
    f.sink.name.hash(&mut h);
    f.request.path.hash(&mut h);
    h.finish()
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;

/// Names a finding within its response: which credential came back where and
/// how, but not at which offset (one finding per credential and sink, as a
/// whole response gives).
fn finding_key(f: &Finding) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    f.credential.fingerprint.hash(&mut h);
    f.credential.source.as_str().hash(&mut h);
    f.credential.name.hash(&mut h);
    f.sink.location.as_str().hash(&mut h);
    f.sink.name.hash(&mut h);
    f.sink.encoding.as_str().hash(&mut h);
    f.sink.content_encoding.as_str().hash(&mut h);
    f.exposure.as_str().hash(&mut h);
    h.finish()
}
