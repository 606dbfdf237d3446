//! The state of `sensor watch` and its one pure transition, [`App::update`].
//!
//! No I/O and no clock reads here: everything (findings, stats, connection
//! changes, keys) arrives as an [`AppEvent`], so every behaviour is unit-testable
//! and every frame is reproducible.

use std::collections::{HashMap, HashSet, VecDeque};

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::finding::{Finding, Severity};
use crate::http::types::Role;
use crate::outputs::live::StatsSnapshot;

/// Distinct groups kept; the least recently seen is dropped beyond this.
pub const MAX_GROUPS: usize = 5_000;
/// Findings remembered for de-duplication of backfills after a reconnect.
pub const MAX_SEEN_KEYS: usize = 50_000;
/// Findings held while paused; older ones are dropped (and counted) beyond this.
pub const MAX_PAUSED_BUFFER: usize = 10_000;
/// Rate history points (one per stats item, about one a second).
pub const RATE_HISTORY: usize = 120;
/// Length of the filter text an operator can type.
pub const MAX_FILTER_LEN: usize = 256;

/// Everything that can change the view.
#[derive(Clone, Debug, PartialEq)]
pub enum AppEvent {
    /// A finding from the stream.
    Finding(Box<Finding>),
    /// Recent findings fetched on (re)connect; already-seen ones are skipped.
    Backfill(Vec<Finding>),
    /// A stats item from the stream (or `/api/v1/stats`).
    Stats(Box<StatsSnapshot>),
    /// The stream is open.
    Connected,
    /// The sensor could not be reached or went away.
    Unreachable {
        error: String,
        retry_in_s: u64,
    },
    Key(KeyEvent),
}

/// What the event loop should do after an update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    None,
    Quit,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnState {
    Connecting,
    Connected,
    Unreachable { error: String, retry_in_s: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    Time,
    Count,
    Severity,
}

impl SortKey {
    pub fn next(self) -> Self {
        match self {
            SortKey::Time => SortKey::Count,
            SortKey::Count => SortKey::Severity,
            SortKey::Severity => SortKey::Time,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            SortKey::Time => "time",
            SortKey::Count => "count",
            SortKey::Severity => "severity",
        }
    }
}

/// Findings with the same fingerprint, route, sink and role: one row.  The
/// role stays apart: the server that leaks and the client that received the
/// leak are two facts an operator acts on differently.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GroupKey {
    pub role: String,
    pub fingerprint: String,
    pub method: String,
    pub path: String,
    pub sink: String,
}

impl GroupKey {
    pub fn of(f: &Finding) -> Self {
        GroupKey {
            role: f.role.as_str().to_string(),
            fingerprint: f.credential.fingerprint.clone(),
            method: f.request.method.clone(),
            path: f.request.path.clone(),
            sink: sink_label(f),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub key: GroupKey,
    pub count: u64,
    pub first_ts: String,
    pub last_ts: String,
    /// Arrival order of the latest member: "newest first" without a clock.
    pub last_seq: u64,
    pub max_severity: Severity,
    pub latest: Finding,
}

/// `body`, or `header:<name>`.
pub fn sink_label(f: &Finding) -> String {
    match &f.sink.name {
        Some(name) => format!("{}:{}", f.sink.location.as_str(), name),
        None => f.sink.location.as_str().to_string(),
    }
}

/// `comm/pid`, or the pod when known.
pub fn process_label(f: &Finding) -> String {
    match &f.process.pod {
        Some(pod) => format!("{pod}/{}", f.process.comm),
        None => format!("{}/{}", f.process.comm, f.process.pid),
    }
}

fn dedup_key(f: &Finding) -> String {
    format!(
        "{}|{}|{}|{}|{}",
        f.ts,
        f.connection.id,
        f.credential.fingerprint,
        sink_label(f),
        f.sink.offset
    )
}

/// Per-role history for the sparklines.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rates {
    pub req_per_s_server: VecDeque<f64>,
    pub req_per_s_client: VecDeque<f64>,
    /// Findings per stats tick (≈ per second), per role.
    pub leaks_server: VecDeque<u64>,
    pub leaks_client: VecDeque<u64>,
    pending_server: u64,
    pending_client: u64,
}

impl Rates {
    fn push<T>(q: &mut VecDeque<T>, v: T) {
        if q.len() == RATE_HISTORY {
            q.pop_front();
        }
        q.push_back(v);
    }
    fn on_stats(&mut self, s: &StatsSnapshot) {
        Self::push(&mut self.req_per_s_server, s.pairs_per_s_server);
        Self::push(&mut self.req_per_s_client, s.pairs_per_s_client);
        let (srv, cli) = (self.pending_server, self.pending_client);
        Self::push(&mut self.leaks_server, srv);
        Self::push(&mut self.leaks_client, cli);
        self.pending_server = 0;
        self.pending_client = 0;
    }
    fn on_finding(&mut self, role: Role) {
        match role {
            Role::Server => self.pending_server += 1,
            Role::Client => self.pending_client += 1,
        }
    }
    /// Findings over the last 60 ticks (≈ one minute).
    pub fn leaks_per_min(q: &VecDeque<u64>) -> u64 {
        q.iter().rev().take(60).sum()
    }
}

#[derive(Clone, Debug)]
pub struct App {
    pub api: String,
    pub conn: ConnState,
    pub stats: Option<StatsSnapshot>,
    pub groups: Vec<Group>,
    index: HashMap<GroupKey, usize>,
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
    next_seq: u64,
    pub findings_received: u64,
    pub rates: Rates,
    pub paused: bool,
    /// Events held while paused, applied on resume.
    pub paused_buffer: VecDeque<AppEvent>,
    pub paused_dropped: u64,
    pub selected: usize,
    pub detail_open: bool,
    pub help_open: bool,
    pub filter: String,
    pub filter_editing: bool,
    pub sort: SortKey,
}

impl App {
    pub fn new(api: impl Into<String>) -> Self {
        App {
            api: api.into(),
            conn: ConnState::Connecting,
            stats: None,
            groups: Vec::new(),
            index: HashMap::new(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            next_seq: 0,
            findings_received: 0,
            rates: Rates::default(),
            paused: false,
            paused_buffer: VecDeque::new(),
            paused_dropped: 0,
            selected: 0,
            detail_open: false,
            help_open: false,
            filter: String::new(),
            filter_editing: false,
            sort: SortKey::Time,
        }
    }

    pub fn update(&mut self, event: AppEvent) -> Action {
        match event {
            AppEvent::Key(key) => return self.on_key(key),
            AppEvent::Connected => self.conn = ConnState::Connected,
            AppEvent::Unreachable { error, retry_in_s } => {
                self.conn = ConnState::Unreachable { error, retry_in_s }
            }
            data if self.paused => {
                if self.paused_buffer.len() == MAX_PAUSED_BUFFER {
                    self.paused_buffer.pop_front();
                    self.paused_dropped += 1;
                }
                self.paused_buffer.push_back(data);
            }
            data => self.apply_data(data),
        }
        Action::None
    }

    fn apply_data(&mut self, event: AppEvent) {
        match event {
            AppEvent::Finding(f) => self.add_finding(*f),
            AppEvent::Backfill(list) => {
                for f in list {
                    self.add_finding(f);
                }
            }
            AppEvent::Stats(s) => {
                self.rates.on_stats(&s);
                self.stats = Some(*s);
            }
            _ => {}
        }
    }

    fn add_finding(&mut self, f: Finding) {
        let dk = dedup_key(&f);
        if !self.seen.insert(dk.clone()) {
            return;
        }
        self.seen_order.push_back(dk);
        if self.seen_order.len() > MAX_SEEN_KEYS {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.findings_received += 1;
        self.rates.on_finding(f.role);
        self.next_seq += 1;
        let key = GroupKey::of(&f);
        if let Some(&i) = self.index.get(&key) {
            let g = &mut self.groups[i];
            g.count += 1;
            if f.ts < g.first_ts {
                g.first_ts = f.ts.clone();
            }
            if f.ts >= g.last_ts {
                g.last_ts = f.ts.clone();
            }
            g.max_severity = g.max_severity.max(f.severity);
            g.last_seq = self.next_seq;
            g.latest = f;
            return;
        }
        if self.groups.len() >= MAX_GROUPS {
            self.evict_oldest_group();
        }
        self.index.insert(key.clone(), self.groups.len());
        self.groups.push(Group {
            key,
            count: 1,
            first_ts: f.ts.clone(),
            last_ts: f.ts.clone(),
            last_seq: self.next_seq,
            max_severity: f.severity,
            latest: f,
        });
    }

    fn evict_oldest_group(&mut self) {
        let Some((oldest, _)) = self
            .groups
            .iter()
            .enumerate()
            .min_by_key(|(_, g)| g.last_seq)
        else {
            return;
        };
        self.groups.swap_remove(oldest);
        self.index = self
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.key.clone(), i))
            .collect();
    }

    /// The rows on screen: filtered, then sorted.
    pub fn visible(&self) -> Vec<&Group> {
        let filter = Filter::parse(&self.filter);
        let mut rows: Vec<&Group> = self.groups.iter().filter(|g| filter.matches(g)).collect();
        match self.sort {
            SortKey::Time => rows.sort_by_key(|g| std::cmp::Reverse(g.last_seq)),
            SortKey::Count => {
                rows.sort_by(|a, b| b.count.cmp(&a.count).then(b.last_seq.cmp(&a.last_seq)))
            }
            SortKey::Severity => rows.sort_by(|a, b| {
                b.max_severity
                    .cmp(&a.max_severity)
                    .then(b.last_seq.cmp(&a.last_seq))
            }),
        }
        rows
    }

    pub fn selected_group(&self) -> Option<&Group> {
        self.visible().get(self.selected).copied()
    }

    fn clamp_selection(&mut self) {
        let n = self.visible().len();
        if n == 0 {
            self.selected = 0;
        } else if self.selected >= n {
            self.selected = n - 1;
        }
    }

    fn on_key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::None;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if self.filter_editing {
            match key.code {
                KeyCode::Enter => self.filter_editing = false,
                KeyCode::Esc => {
                    self.filter.clear();
                    self.filter_editing = false;
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) if self.filter.len() < MAX_FILTER_LEN && !c.is_control() => {
                    self.filter.push(c)
                }
                _ => {}
            }
            self.selected = 0;
            return Action::None;
        }
        if self.help_open {
            // Any key closes the help; q still quits.
            self.help_open = false;
            return if key.code == KeyCode::Char('q') {
                Action::Quit
            } else {
                Action::None
            };
        }
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Esc if self.detail_open => self.detail_open = false,
            KeyCode::Esc if !self.filter.is_empty() => {
                self.filter.clear();
                self.selected = 0;
            }
            KeyCode::Esc => return Action::Quit,
            KeyCode::Enter => self.detail_open = self.selected_group().is_some(),
            KeyCode::Down | KeyCode::Char('j') => {
                self.selected = self.selected.saturating_add(1);
                self.clamp_selection();
            }
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::Home | KeyCode::Char('g') => self.selected = 0,
            KeyCode::End | KeyCode::Char('G') => {
                self.selected = usize::MAX;
                self.clamp_selection();
            }
            KeyCode::PageDown => {
                self.selected = self.selected.saturating_add(10);
                self.clamp_selection();
            }
            KeyCode::PageUp => self.selected = self.selected.saturating_sub(10),
            KeyCode::Char('/') => {
                self.filter_editing = true;
                self.detail_open = false;
            }
            KeyCode::Char('p') => self.toggle_pause(),
            KeyCode::Char('s') => {
                self.sort = self.sort.next();
                self.selected = 0;
            }
            KeyCode::Char('?') => self.help_open = true,
            _ => {}
        }
        Action::None
    }

    fn toggle_pause(&mut self) {
        self.paused = !self.paused;
        if !self.paused {
            let held: Vec<AppEvent> = self.paused_buffer.drain(..).collect();
            for e in held {
                self.apply_data(e);
            }
            self.paused_dropped = 0;
            self.clamp_selection();
        }
    }
}

/// The `/` filter: whitespace-separated terms, all must match.  A term is
/// `field:value` (field one of process, comm, pid, pod, path, method, route,
/// source, type, sink, encoding, severity, role, status, fp) or free text matched
/// against all of them.  Case-insensitive substring match.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    terms: Vec<(Option<String>, String)>,
}

impl Filter {
    pub fn parse(text: &str) -> Self {
        let terms = text
            .split_whitespace()
            .map(|t| {
                let t = t.to_lowercase();
                match t.split_once(':') {
                    Some((field, value)) if !field.is_empty() && is_field(field) => {
                        (Some(field.to_string()), value.to_string())
                    }
                    _ => (None, t),
                }
            })
            .collect();
        Filter { terms }
    }

    pub fn matches(&self, g: &Group) -> bool {
        self.terms.iter().all(|(field, value)| match field {
            Some(field) => field_values(&g.latest, field)
                .iter()
                .any(|v| v.to_lowercase().contains(value.as_str())),
            None => FIELDS.iter().any(|field| {
                field_values(&g.latest, field)
                    .iter()
                    .any(|v| v.to_lowercase().contains(value.as_str()))
            }),
        })
    }
}

const FIELDS: &[&str] = &[
    "process", "pid", "pod", "path", "method", "source", "type", "sink", "encoding", "severity",
    "role", "status", "fp",
];

fn is_field(f: &str) -> bool {
    FIELDS.contains(&f) || f == "comm" || f == "route"
}

fn field_values(f: &Finding, field: &str) -> Vec<String> {
    match field {
        "process" => vec![f.process.comm.clone(), f.process.pid.to_string()]
            .into_iter()
            .chain(f.process.pod.clone())
            .chain(f.process.container_id.clone())
            .collect(),
        "comm" => vec![f.process.comm.clone()],
        "pid" => vec![f.process.pid.to_string()],
        "pod" => f.process.pod.clone().into_iter().collect(),
        "path" => vec![f.request.path.clone()],
        "route" => vec![format!("{} {}", f.request.method, f.request.path)],
        "method" => vec![f.request.method.clone()],
        "source" => vec![
            f.credential.source.as_str().to_string(),
            f.credential.name.clone(),
        ],
        "type" => vec![f.credential.kind.as_str().to_string()],
        "sink" => vec![sink_label(f), f.sink.encoding.as_str().to_string()],
        "encoding" => vec![
            f.sink.encoding.as_str().to_string(),
            f.sink.content_encoding.as_str().to_string(),
        ],
        "severity" => vec![f.severity.as_str().to_string()],
        "role" => vec![f.role.as_str().to_string()],
        "status" => vec![f.response.status.to_string()],
        "fp" => vec![f.credential.fingerprint.clone()],
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::fixtures::{finding, stats};

    fn key(c: KeyCode) -> AppEvent {
        AppEvent::Key(KeyEvent::new(c, KeyModifiers::NONE))
    }

    #[test]
    fn same_fingerprint_route_sink_group_into_one_row() {
        let mut app = App::new("http://x");
        app.update(AppEvent::Finding(Box::new(finding(1, "/v1/a", "body"))));
        app.update(AppEvent::Finding(Box::new(finding(2, "/v1/a", "body"))));
        app.update(AppEvent::Finding(Box::new(finding(3, "/v1/b", "body"))));
        let rows = app.visible();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].key.path, "/v1/b", "newest first");
        assert_eq!(rows[1].count, 2);
        assert_eq!(rows[1].first_ts, finding(1, "/v1/a", "body").ts);
        assert_eq!(rows[1].last_ts, finding(2, "/v1/a", "body").ts);
    }

    #[test]
    fn server_and_client_sides_of_one_leak_are_separate_rows() {
        let mut app = App::new("http://x");
        let server = finding(1, "/v1/a", "body");
        let mut client = finding(2, "/v1/a", "body");
        client.role = if server.role == Role::Server {
            Role::Client
        } else {
            Role::Server
        };
        app.update(AppEvent::Finding(Box::new(server)));
        app.update(AppEvent::Finding(Box::new(client)));
        let rows = app.visible();
        assert_eq!(
            rows.len(),
            2,
            "the leaking server stays visible as its own row"
        );
        assert_ne!(rows[0].key.role, rows[1].key.role);
    }

    #[test]
    fn backfill_after_reconnect_does_not_double_count() {
        let mut app = App::new("http://x");
        let f = finding(1, "/v1/a", "body");
        app.update(AppEvent::Finding(Box::new(f.clone())));
        app.update(AppEvent::Backfill(vec![
            f.clone(),
            finding(2, "/v1/a", "body"),
        ]));
        assert_eq!(app.visible()[0].count, 2);
        assert_eq!(app.findings_received, 2);
    }

    #[test]
    fn pause_freezes_display_and_resume_applies_buffer() {
        let mut app = App::new("http://x");
        app.update(key(KeyCode::Char('p')));
        assert!(app.paused);
        app.update(AppEvent::Finding(Box::new(finding(1, "/v1/a", "body"))));
        app.update(AppEvent::Stats(Box::new(stats())));
        assert!(app.visible().is_empty());
        assert!(app.stats.is_none());
        assert_eq!(app.paused_buffer.len(), 2);
        app.update(key(KeyCode::Char('p')));
        assert_eq!(app.visible().len(), 1);
        assert!(app.stats.is_some());
        assert!(app.paused_buffer.is_empty());
    }

    #[test]
    fn paused_buffer_is_bounded() {
        let mut app = App::new("http://x");
        app.update(key(KeyCode::Char('p')));
        for i in 0..(MAX_PAUSED_BUFFER as u32 + 5) {
            app.update(AppEvent::Finding(Box::new(finding(i, "/v1/a", "body"))));
        }
        assert_eq!(app.paused_buffer.len(), MAX_PAUSED_BUFFER);
        assert_eq!(app.paused_dropped, 5);
    }

    #[test]
    fn groups_are_bounded_and_oldest_is_evicted() {
        let mut app = App::new("http://x");
        for i in 0..(MAX_GROUPS as u32 + 1) {
            app.update(AppEvent::Finding(Box::new(finding(
                i,
                &format!("/p{i}"),
                "body",
            ))));
        }
        assert_eq!(app.groups.len(), MAX_GROUPS);
        assert!(!app.groups.iter().any(|g| g.key.path == "/p0"));
        // The index still points at the right groups after eviction.
        app.update(AppEvent::Finding(Box::new(finding(
            9_999_999, "/p1", "body",
        ))));
        assert_eq!(app.groups.len(), MAX_GROUPS);
        assert_eq!(
            app.groups
                .iter()
                .find(|g| g.key.path == "/p1")
                .unwrap()
                .count,
            2
        );
    }

    #[test]
    fn filter_free_text_and_field_syntax() {
        let mut app = App::new("http://x");
        app.update(AppEvent::Finding(Box::new(finding(
            1,
            "/v1/login",
            "header:location",
        ))));
        app.update(AppEvent::Finding(Box::new(finding(2, "/v1/items", "body"))));
        for c in "/login".chars() {
            if c == '/' {
                app.update(key(KeyCode::Char('/')));
            }
            app.update(key(KeyCode::Char(c)));
        }
        // The first '/' opened the editor, the second was typed.
        assert_eq!(app.filter, "/login");
        assert_eq!(app.visible().len(), 1);
        app.update(key(KeyCode::Enter));
        assert!(!app.filter_editing);
        app.filter = "sink:location severity:high".into();
        assert_eq!(app.visible().len(), 1);
        app.filter = "sink:set-cookie".into();
        assert_eq!(app.visible().len(), 0);
        app.filter = "process:uvicorn path:items".into();
        assert_eq!(app.visible().len(), 1);
        // Esc clears the filter before it quits.
        assert_eq!(app.update(key(KeyCode::Esc)), Action::None);
        assert_eq!(app.visible().len(), 2);
        assert_eq!(app.update(key(KeyCode::Esc)), Action::Quit);
    }

    #[test]
    fn navigation_detail_sort_help_quit() {
        let mut app = App::new("http://x");
        assert_eq!(app.update(key(KeyCode::Enter)), Action::None);
        assert!(!app.detail_open, "nothing to show");
        for i in 0..3 {
            app.update(AppEvent::Finding(Box::new(finding(
                i,
                &format!("/p{i}"),
                "body",
            ))));
        }
        app.update(key(KeyCode::Down));
        app.update(key(KeyCode::Char('j')));
        app.update(key(KeyCode::Char('j')));
        assert_eq!(app.selected, 2, "clamped to the last row");
        app.update(key(KeyCode::Char('k')));
        assert_eq!(app.selected, 1);
        app.update(key(KeyCode::Enter));
        assert!(app.detail_open);
        assert_eq!(app.selected_group().unwrap().key.path, "/p1");
        assert_eq!(app.update(key(KeyCode::Esc)), Action::None);
        assert!(!app.detail_open);
        app.update(key(KeyCode::Char('s')));
        assert_eq!(app.sort, SortKey::Count);
        app.update(key(KeyCode::Char('s')));
        assert_eq!(app.sort, SortKey::Severity);
        app.update(key(KeyCode::Char('?')));
        assert!(app.help_open);
        assert_eq!(app.update(key(KeyCode::Char('x'))), Action::None);
        assert!(!app.help_open);
        assert_eq!(app.update(key(KeyCode::Char('q'))), Action::Quit);
        let ctrl_c = AppEvent::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
        assert_eq!(app.update(ctrl_c), Action::Quit);
    }

    #[test]
    fn filter_length_is_bounded() {
        let mut app = App::new("http://x");
        app.update(key(KeyCode::Char('/')));
        for _ in 0..(MAX_FILTER_LEN + 10) {
            app.update(key(KeyCode::Char('a')));
        }
        assert_eq!(app.filter.len(), MAX_FILTER_LEN);
    }

    #[test]
    fn leak_rates_follow_stats_ticks() {
        let mut app = App::new("http://x");
        app.update(AppEvent::Finding(Box::new(finding(1, "/a", "body"))));
        app.update(AppEvent::Finding(Box::new(finding(2, "/a", "body"))));
        app.update(AppEvent::Stats(Box::new(stats())));
        app.update(AppEvent::Stats(Box::new(stats())));
        assert_eq!(app.rates.leaks_server, VecDeque::from(vec![2, 0]));
        assert_eq!(Rates::leaks_per_min(&app.rates.leaks_server), 2);
        for _ in 0..(RATE_HISTORY + 3) {
            app.update(AppEvent::Stats(Box::new(stats())));
        }
        assert_eq!(app.rates.leaks_server.len(), RATE_HISTORY);
    }

    #[test]
    fn unreachable_then_connected() {
        let mut app = App::new("http://x");
        app.update(AppEvent::Unreachable {
            error: "connection refused".into(),
            retry_in_s: 2,
        });
        assert!(matches!(app.conn, ConnState::Unreachable { .. }));
        app.update(AppEvent::Connected);
        assert_eq!(app.conn, ConnState::Connected);
    }
}
