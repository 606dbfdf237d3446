//! Rendering: pure functions of `&App` into a `Frame`.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;

use super::app::{process_label, sink_label, App, ConnState, Group, Rates};
use super::remedy::remediation;
use crate::finding::{Finding, Severity};

const SPARK: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

pub fn render(app: &App, frame: &mut Frame) {
    let area = frame.area();
    let [header, status, rates, table, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(1),
        Constraint::Length(6),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);
    render_header(app, frame, header);
    render_status(app, frame, status);
    render_rates(app, frame, rates);
    render_table(app, frame, table);
    render_footer(app, frame, footer);
    if app.detail_open {
        if let Some(g) = app.selected_group() {
            render_detail(g, frame, area);
        }
    }
    if app.help_open {
        render_help(frame, area);
    }
}

fn uptime(s: u64) -> String {
    let (d, h, m) = (s / 86_400, (s / 3600) % 24, (s / 60) % 60);
    if d > 0 {
        format!("{d}d{h:02}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else {
        format!("{m}m{:02}s", s % 60)
    }
}

fn render_header(app: &App, frame: &mut Frame, area: Rect) {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let lines = match &app.stats {
        None => vec![
            Line::from(vec![
                Span::styled("sensor watch", bold),
                Span::raw(format!("  {}", app.api)),
            ]),
            Line::from("waiting for stats…"),
        ],
        Some(s) => {
            let libs: Vec<String> = s
                .attached_libraries
                .iter()
                .map(|l| format!("{}×{}", l.library, l.processes))
                .collect();
            let libs = if libs.is_empty() {
                "none".to_string()
            } else {
                libs.join(",")
            };
            let loss = s.lost_events > 0 || s.truncated_bytes > 0;
            let capture_style = if loss {
                Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
            } else {
                Style::default()
            };
            let blind_style = if s.blind_processes.is_empty() {
                Style::default()
            } else {
                Style::default().fg(Color::Yellow)
            };
            vec![
                Line::from(vec![
                    Span::styled(format!("sensor {}", s.version), bold),
                    Span::raw(format!(
                        " · {} · up {} · TLS {} · {} procs · {} conns",
                        s.node,
                        uptime(s.uptime_s),
                        libs,
                        s.attached_processes,
                        s.connections_active
                    )),
                ]),
                Line::from(vec![
                    Span::styled(
                        format!(
                            "{:.0} ev/s · lost {} · truncated {} B · parse errors {}",
                            s.events_per_s, s.lost_events, s.truncated_bytes, s.parse_errors
                        ),
                        capture_style,
                    ),
                    Span::raw(" · "),
                    Span::styled(format!("blind {}", s.blind_processes.len()), blind_style),
                    Span::raw(format!(" · findings {}", s.findings_total)),
                ]),
            ]
        }
    };
    frame.render_widget(Paragraph::new(lines), area);
}

fn render_status(app: &App, frame: &mut Frame, area: Rect) {
    let mut spans = Vec::new();
    match &app.conn {
        ConnState::Connecting => spans.push(Span::styled(
            format!("connecting to {}…", app.api),
            Style::default().fg(Color::Yellow),
        )),
        ConnState::Connected => spans.push(Span::styled(
            format!("● live {}", app.api),
            Style::default().fg(Color::Green),
        )),
        ConnState::Unreachable { error, retry_in_s } => spans.push(Span::styled(
            format!(
                "sensor at {} unreachable: {} — retrying in {}s",
                app.api, error, retry_in_s
            ),
            Style::default()
                .fg(Color::White)
                .bg(Color::Red)
                .add_modifier(Modifier::BOLD),
        )),
    }
    if app.paused {
        spans.push(Span::raw(" "));
        spans.push(Span::styled(
            format!(" PAUSED ({} buffered) ", app.paused_buffer.len()),
            Style::default()
                .fg(Color::Black)
                .bg(Color::Yellow)
                .add_modifier(Modifier::BOLD),
        ));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn sparkline<I: Iterator<Item = f64> + Clone>(values: I, width: usize) -> String {
    let vals: Vec<f64> = values.collect();
    let vals = &vals[vals.len().saturating_sub(width)..];
    let max = vals.iter().cloned().fold(0.0_f64, f64::max);
    vals.iter()
        .map(|v| {
            if max <= 0.0 {
                SPARK[0]
            } else {
                SPARK[((v / max) * 7.0).round().clamp(0.0, 7.0) as usize]
            }
        })
        .collect()
}

fn render_rates(app: &App, frame: &mut Frame, area: Rect) {
    let [left, mid, right] = Layout::horizontal([
        Constraint::Percentage(40),
        Constraint::Percentage(30),
        Constraint::Percentage(30),
    ])
    .areas(area);
    let r = &app.rates;
    let spark_w = left.width.saturating_sub(2 + 19) as usize;
    let last = |q: &std::collections::VecDeque<f64>| q.back().copied().unwrap_or(0.0);
    let lines = vec![
        Line::from(format!(
            "req/s  srv {:>6.1} {}",
            last(&r.req_per_s_server),
            sparkline(r.req_per_s_server.iter().copied(), spark_w)
        )),
        Line::from(format!(
            "req/s  cli {:>6.1} {}",
            last(&r.req_per_s_client),
            sparkline(r.req_per_s_client.iter().copied(), spark_w)
        )),
        Line::from(format!(
            "leak/m srv {:>6} {}",
            Rates::leaks_per_min(&r.leaks_server),
            sparkline(r.leaks_server.iter().map(|&v| v as f64), spark_w)
        )),
        Line::from(format!(
            "leak/m cli {:>6} {}",
            Rates::leaks_per_min(&r.leaks_client),
            sparkline(r.leaks_client.iter().map(|&v| v as f64), spark_w)
        )),
    ];
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title("rates")),
        left,
    );
    let top = |label: fn(&Group) -> String| -> Vec<Line<'static>> {
        let mut counts: Vec<(String, u64)> = Vec::new();
        for g in &app.groups {
            let l = label(g);
            match counts.iter_mut().find(|(k, _)| *k == l) {
                Some((_, c)) => *c += g.count,
                None => counts.push((l, g.count)),
            }
        }
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        counts
            .into_iter()
            .take(4)
            .map(|(k, c)| Line::from(format!("{c:>5} {k}")))
            .collect()
    };
    frame.render_widget(
        Paragraph::new(top(|g| format!("{} {}", g.key.method, g.key.path)))
            .block(Block::default().borders(Borders::ALL).title("top routes")),
        mid,
    );
    frame.render_widget(
        Paragraph::new(top(|g| process_label(&g.latest))).block(
            Block::default()
                .borders(Borders::ALL)
                .title("top processes"),
        ),
        right,
    );
}

fn severity_style(s: Severity) -> Style {
    match s {
        Severity::Critical => Style::default()
            .fg(Color::Magenta)
            .add_modifier(Modifier::BOLD),
        Severity::High => Style::default().fg(Color::Red),
        Severity::Medium => Style::default().fg(Color::Yellow),
        Severity::Low => Style::default(),
    }
}

/// `HH:MM:SS` of an RFC 3339 timestamp (the finding's own clock, not ours).
fn hms(ts: &str) -> &str {
    ts.get(11..19).unwrap_or(ts)
}

/// Below this width the table drops role, credential source and fingerprint.
const NARROW_WIDTH: u16 = 120;

fn sev_short(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "crit",
        Severity::High => "high",
        Severity::Medium => "med",
        Severity::Low => "low",
    }
}

/// Width of the `n` (count) column: [`count_label`] never passes it.
const COUNT_WIDTH: u16 = 4;

/// A group's count in at most [`COUNT_WIDTH`] characters: exact below
/// 10 000, then rounded down with a unit (`13k` for 13 340, `1.2M`), never
/// more than was seen and never cut by the column (the detail view has the
/// exact count).
pub fn count_label(n: u64) -> String {
    if n < 10_000 {
        return n.to_string();
    }
    let mut unit = 1_000u64;
    for suffix in ["k", "M", "G", "T", "P", "E"] {
        let whole = n / unit;
        if whole < 10 {
            return format!("{whole}.{}{suffix}", n % unit / (unit / 10));
        }
        if whole < 1_000 || suffix == "E" {
            return format!("{whole}{suffix}");
        }
        unit *= 1_000;
    }
    unreachable!("u64::MAX is 18E")
}

fn row_cells(g: &Group, narrow: bool) -> Vec<Cell<'static>> {
    let f = &g.latest;
    if narrow {
        return vec![
            Cell::from(hms(&g.last_ts).to_string()),
            Cell::from(sev_short(g.max_severity)).style(severity_style(g.max_severity)),
            Cell::from(process_label(f)),
            Cell::from(format!("{} {}", f.request.method, f.request.path)),
            Cell::from(f.response.status.to_string()),
            Cell::from(f.credential.kind.as_str().to_string()),
            Cell::from(format!("{} {}", sink_label(f), f.sink.encoding.as_str())),
            Cell::from(count_label(g.count)),
        ];
    }
    vec![
        Cell::from(hms(&g.last_ts).to_string()),
        Cell::from(sev_short(g.max_severity)).style(severity_style(g.max_severity)),
        Cell::from(match f.role {
            crate::http::types::Role::Server => "srv",
            crate::http::types::Role::Client => "cli",
        }),
        Cell::from(process_label(f)),
        Cell::from(format!("{} {}", f.request.method, f.request.path)),
        Cell::from(f.response.status.to_string()),
        Cell::from(format!(
            "{} {}:{}",
            f.credential.kind.as_str(),
            f.credential.source.as_str(),
            f.credential.name
        )),
        Cell::from(format!("{} {}", sink_label(f), f.sink.encoding.as_str())),
        Cell::from(count_label(g.count)),
        Cell::from(f.credential.fingerprint.chars().take(8).collect::<String>()),
    ]
}

fn render_table(app: &App, frame: &mut Frame, area: Rect) {
    let rows_data = app.visible();
    let title = format!(
        " findings {}/{} · sort {}{} ",
        rows_data.len(),
        app.groups.len(),
        app.sort.as_str(),
        if app.filter.is_empty() {
            String::new()
        } else {
            format!(" · filter \"{}\"", app.filter)
        }
    );
    let block = Block::default().borders(Borders::ALL).title(title);
    if rows_data.is_empty() {
        let msg = if app.groups.is_empty() {
            "no findings yet — leaks show up here as soon as the sensor reports them"
        } else {
            "no finding matches the filter (Esc clears it)"
        };
        frame.render_widget(Paragraph::new(msg).block(block), area);
        return;
    }
    let narrow = area.width < NARROW_WIDTH;
    let header: Vec<&str> = if narrow {
        vec![
            "time",
            "sev",
            "process",
            "route",
            "st",
            "credential",
            "sink",
            "n",
        ]
    } else {
        vec![
            "time",
            "sev",
            "role",
            "process",
            "route",
            "st",
            "credential",
            "sink",
            "n",
            "fp",
        ]
    };
    let header = Row::new(header)
        .style(Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let rows: Vec<Row> = rows_data
        .iter()
        .map(|g| Row::new(row_cells(g, narrow)))
        .collect();
    let narrow_widths = [
        Constraint::Length(8),
        Constraint::Length(4),
        Constraint::Length(12),
        Constraint::Min(12),
        Constraint::Length(3),
        Constraint::Length(13),
        Constraint::Length(18),
        Constraint::Length(COUNT_WIDTH),
    ];
    // Fixed columns stay whole; the four text columns share the rest in these
    // proportions (exactly 14/16/26/22 at NARROW_WIDTH).  Wider fixed columns
    // made ratatui squeeze the time column to "10:5" at 120 columns.
    let wide_widths = [
        Constraint::Length(8),
        Constraint::Length(4),
        Constraint::Length(4),
        Constraint::Fill(14),
        Constraint::Fill(16),
        Constraint::Length(3),
        Constraint::Fill(26),
        Constraint::Fill(22),
        Constraint::Length(COUNT_WIDTH),
        Constraint::Length(8),
    ];
    let table = if narrow {
        Table::new(rows, narrow_widths)
    } else {
        Table::new(rows, wide_widths)
    };
    let table = table
        .header(header)
        .block(block)
        .column_spacing(1)
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .highlight_symbol("›");
    let mut state = TableState::default().with_selected(Some(app.selected));
    frame.render_stateful_widget(table, area, &mut state);
}

fn render_footer(app: &App, frame: &mut Frame, area: Rect) {
    let line = if app.filter_editing {
        Line::from(vec![
            Span::styled("filter: ", Style::default().add_modifier(Modifier::BOLD)),
            Span::raw(app.filter.clone()),
            Span::styled("█", Style::default().add_modifier(Modifier::SLOW_BLINK)),
            Span::raw("  (Enter apply · Esc clear · field:value e.g. sink:location)"),
        ])
    } else {
        Line::from("↑↓/jk move · Enter details · / filter · p pause · s sort · ? help · q quit")
            .style(Style::default().fg(Color::DarkGray))
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn centered(area: Rect, pct_x: u16, pct_y: u16) -> Rect {
    let w = (area.width as u32 * pct_x as u32 / 100) as u16;
    let h = (area.height as u32 * pct_y as u32 / 100) as u16;
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

/// Every field of the finding JSON as `a.b: value` lines.
pub fn finding_fields(f: &Finding) -> Vec<(String, String)> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&p, v, out);
                }
            }
            serde_json::Value::String(s) => out.push((prefix.to_string(), s.clone())),
            other => out.push((prefix.to_string(), other.to_string())),
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::to_value(f) {
        walk("", &v, &mut out);
    }
    out
}

fn render_detail(g: &Group, frame: &mut Frame, area: Rect) {
    let popup = centered(area, 90, 85);
    frame.render_widget(Clear, popup);
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let mut lines = vec![Line::from(vec![
        Span::styled("seen ", bold),
        Span::raw(format!(
            "{}× · first {} · last {}",
            g.count, g.first_ts, g.last_ts
        )),
    ])];
    lines.push(Line::from(Span::styled("what to do", bold)));
    for r in remediation(&g.latest) {
        lines.push(Line::from(format!("• {r}")));
    }
    lines.push(Line::from(Span::styled("latest finding", bold)));
    for (k, v) in finding_fields(&g.latest) {
        lines.push(Line::from(vec![
            Span::styled(format!("{k}: "), Style::default().fg(Color::Cyan)),
            Span::raw(v),
        ]));
    }
    frame.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" finding detail (Esc closes) "),
        ),
        popup,
    );
}

fn render_help(frame: &mut Frame, area: Rect) {
    let popup = centered(area, 70, 80);
    frame.render_widget(Clear, popup);
    let lines: Vec<Line> = [
        "↑/↓ j/k      move (PgUp/PgDn, g/G: page, top, bottom)",
        "Enter        details and what to do; Esc closes",
        "/            filter: free text, or field:value terms",
        "             fields: process comm pid pod path route method",
        "             source type sink encoding severity role status fp",
        "p            pause display (stream keeps buffering)",
        "s            sort: time → count → severity",
        "?            this help (any key closes)",
        "q, Esc       quit (Esc clears the filter first)",
        "",
        "Rows group findings with the same fingerprint, route and sink.",
        "Lost events or truncated bytes in red mean the capture missed data.",
    ]
    .into_iter()
    .map(Line::from)
    .collect();
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::default().borders(Borders::ALL).title(" help ")),
        popup,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_label_fits_the_column_and_never_overstates() {
        for (n, want) in [
            (0, "0"),
            (9_999, "9999"),
            (10_000, "10k"),
            (13_340, "13k"),
            (999_999, "999k"),
            (1_000_000, "1.0M"),
            (1_250_000, "1.2M"),
            (9_999_999, "9.9M"),
            (10_000_000, "10M"),
            (999_999_999, "999M"),
            (1_000_000_000, "1.0G"),
            (u64::MAX, "18E"),
        ] {
            assert_eq!(count_label(n), want, "{n}");
        }
        let mut n = 1u64;
        while let Some(next) = n.checked_mul(3) {
            assert!(count_label(n).len() <= COUNT_WIDTH as usize, "{n}");
            n = next;
        }
    }
}
