//! `sensor watch`: the operators' live terminal view.
//!
//! `app` holds the state and its pure `update`; `ui` draws it; `client` talks to
//! the live API; this module is the thin loop that joins them (terminal, keys,
//! network task) plus the `--once` and `--json` modes.  Logs go to a file only:
//! the TUI owns the screen.

pub mod app;
pub mod client;
#[doc(hidden)]
pub mod fixtures;
pub mod remedy;
pub mod ui;

#[cfg(test)]
mod snapshots_test;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;

use app::{Action, App, AppEvent, GroupKey};
use client::{ApiClient, ClientError};

use crate::outputs::live::StreamItem;

pub const DEFAULT_API: &str = "http://127.0.0.1:9478";
/// Reconnect backoff: doubles from the first value up to the last.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(16);
/// Findings shown by `--once`.
pub const ONCE_MAX_ROWS: usize = 50;
/// Events queued between the network task and the UI loop.
const EVENT_QUEUE: usize = 4096;

#[derive(clap::Args, Debug, Clone)]
pub struct WatchArgs {
    /// Base URL of the sensor's live API (`sensor run --api-addr`).
    #[arg(long, default_value = DEFAULT_API)]
    pub api: String,
    /// File holding a bearer token for the API.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Print a plain-text snapshot (stats and recent findings) and exit.
    #[arg(long, conflicts_with = "json")]
    pub once: bool,
    /// Stream findings as JSON lines to stdout (no TUI).
    #[arg(long)]
    pub json: bool,
    /// Log file (default: $XDG_STATE_HOME/sensor/watch.log or /tmp/sensor-watch.log).
    #[arg(long)]
    pub log_file: Option<PathBuf>,
}

/// What `sensor watch` says, with exit code [`NO_TERMINAL_EXIT`], when the
/// TUI has no terminal to draw on.
pub const NO_TERMINAL: &str = "sensor watch needs a terminal (stdin and stdout a TTY); \
    use `sensor watch --json` for a stream of JSON lines, `sensor watch --once` for a \
    snapshot, or `kubectl exec -it`";
/// The exit code of a usage error (as clap's).
pub const NO_TERMINAL_EXIT: i32 = 2;

/// Whether this mode needs a terminal: the TUI does (stdin and stdout);
/// `--once` and `--json` write plain text and need none.
fn needs_terminal(args: &WatchArgs) -> bool {
    !args.once && !args.json
}

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    // Before anything else (logging, connecting): without a terminal the TUI
    // cannot start (ratatui::init panics), and piping its escape codes into a
    // file is no use either.  A usage error: one line, exit code 2 (`main`
    // gives every error 1, so the exit is here).
    if needs_terminal(&args) {
        use std::io::IsTerminal as _;
        if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
            eprintln!("{NO_TERMINAL}");
            std::process::exit(NO_TERMINAL_EXIT);
        }
    }
    init_logging(args.log_file.clone());
    let token = match &args.token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read token file {}", p.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let client = ApiClient::new(&args.api, token);
    if args.once {
        let text = once(&client).await?;
        std::io::stdout().write_all(text.as_bytes())?;
        Ok(())
    } else if args.json {
        json(&client, &mut std::io::stdout()).await
    } else {
        tui(client).await
    }
}

fn default_log_path() -> PathBuf {
    match std::env::var_os("XDG_STATE_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("sensor").join("watch.log"),
        _ => PathBuf::from("/tmp/sensor-watch.log"),
    }
}

/// Logs to a file only (never the terminal the TUI owns); silent if it cannot open.
fn init_logging(path: Option<PathBuf>) {
    let path = path.unwrap_or_else(default_log_path);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    else {
        return;
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
}

fn unreachable_line(client: &ApiClient, e: &ClientError) -> String {
    match e {
        ClientError::Unreachable(why) => format!("sensor at {} unreachable: {why}", client.base()),
        other => format!("sensor at {}: {other}", client.base()),
    }
}

/// `--once`: stats and recent findings, grouped, as plain text.
pub async fn once(client: &ApiClient) -> anyhow::Result<String> {
    let stats = client
        .stats()
        .await
        .map_err(|e| anyhow::anyhow!(unreachable_line(client, &e)))?;
    let page = client
        .findings(0)
        .await
        .map_err(|e| anyhow::anyhow!(unreachable_line(client, &e)))?;
    let mut app = App::new(client.base());
    app.update(AppEvent::Stats(Box::new(stats.clone())));
    app.update(AppEvent::Backfill(page.findings));
    let mut out = String::new();
    use std::fmt::Write as _;
    let libs: Vec<String> = stats
        .attached_libraries
        .iter()
        .map(|l| format!("{}×{}", l.library, l.processes))
        .collect();
    let _ = writeln!(
        out,
        "sensor {} on {} · up {}s · TLS {} · {} processes · {} blind",
        stats.version,
        stats.node,
        stats.uptime_s,
        if libs.is_empty() {
            "none".into()
        } else {
            libs.join(",")
        },
        stats.attached_processes,
        stats.blind_processes.len()
    );
    let _ = writeln!(
        out,
        "capture: {:.0} events/s · lost {} · truncated {} B · parse errors {}{}",
        stats.events_per_s,
        stats.lost_events,
        stats.truncated_bytes,
        stats.parse_errors,
        if stats.lost_events > 0 {
            "  (CAPTURE LOSS)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "pairs: server {} ({:.1}/s) · client {} ({:.1}/s) · findings {} · masked echoes {}",
        stats.pairs_server,
        stats.pairs_per_s_server,
        stats.pairs_client,
        stats.pairs_per_s_client,
        stats.findings_total,
        stats.masked_echoes
    );
    for b in &stats.blind_processes {
        let _ = writeln!(out, "blind: {}/{} ({})", b.comm, b.pid, b.reason);
    }
    let rows = app.visible();
    let _ = writeln!(out, "findings: {} groups", rows.len());
    for g in rows.iter().take(ONCE_MAX_ROWS) {
        let f = &g.latest;
        let GroupKey {
            fingerprint,
            method,
            path,
            sink,
            ..
        } = &g.key;
        let _ = writeln!(
            out,
            "{}  {:<8} {} {:<20} {} {} {}  {} {}:{}  {} {}  x{}  fp {}  first {}",
            g.last_ts,
            g.max_severity.as_str(),
            f.role.as_str(),
            app::process_label(f),
            method,
            path,
            f.response.status,
            f.credential.kind.as_str(),
            f.credential.source.as_str(),
            f.credential.name,
            sink,
            f.sink.encoding.as_str(),
            g.count,
            fingerprint,
            g.first_ts
        );
    }
    if rows.len() > ONCE_MAX_ROWS {
        let _ = writeln!(out, "… {} more groups", rows.len() - ONCE_MAX_ROWS);
    }
    Ok(out)
}

/// `--json`: recent findings, then the stream's findings, one JSON object a line.
/// Unreachable at start is an error; later drops reconnect with backoff.
pub async fn json<W: Write>(client: &ApiClient, out: &mut W) -> anyhow::Result<()> {
    let first = client
        .findings(0)
        .await
        .map_err(|e| anyhow::anyhow!(unreachable_line(client, &e)))?;
    for f in &first.findings {
        writeln!(out, "{}", serde_json::to_string(f)?)?;
    }
    out.flush()?;
    let mut next = first.next;
    let mut backoff = BACKOFF_MIN;
    let mut first_round = true;
    loop {
        if !first_round {
            match client.findings(next).await {
                Ok(page) => {
                    for f in &page.findings {
                        writeln!(out, "{}", serde_json::to_string(f)?)?;
                    }
                    out.flush()?;
                    next = page.next;
                }
                Err(e) => {
                    tracing::warn!("{}", unreachable_line(client, &e));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            }
        }
        first_round = false;
        match client.stream().await {
            Ok(mut s) => {
                backoff = BACKOFF_MIN;
                loop {
                    match s.next_item().await {
                        Ok(Some(StreamItem::Finding(f))) => {
                            writeln!(out, "{}", serde_json::to_string(&f)?)?;
                            out.flush()?;
                        }
                        Ok(Some(StreamItem::Stats(_))) => {}
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!("{}", unreachable_line(client, &e));
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!("{}", unreachable_line(client, &e)),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Feeds the UI: backfill, stats, stream; on failure says so and retries with backoff.
pub async fn network_task(client: ApiClient, tx: mpsc::Sender<AppEvent>) {
    let mut backoff = BACKOFF_MIN;
    let mut since = 0u64;
    loop {
        let result: Result<(), ClientError> = async {
            let page = client.findings(since).await?;
            since = page.next;
            let stats = client.stats().await?;
            let mut stream = client.stream().await?;
            let _ = tx.send(AppEvent::Connected).await;
            let _ = tx.send(AppEvent::Backfill(page.findings)).await;
            let _ = tx.send(AppEvent::Stats(Box::new(stats))).await;
            backoff = BACKOFF_MIN;
            while let Some(item) = stream.next_item().await? {
                let ev = match item {
                    StreamItem::Finding(f) => AppEvent::Finding(f),
                    StreamItem::Stats(s) => AppEvent::Stats(s),
                };
                if tx.send(ev).await.is_err() {
                    return Ok(());
                }
            }
            Err(ClientError::Unreachable(
                "stream closed by the sensor".into(),
            ))
        }
        .await;
        if tx.is_closed() {
            return;
        }
        let error = match result {
            Ok(()) => return,
            Err(ClientError::Unreachable(why)) => why,
            Err(other) => other.to_string(),
        };
        tracing::warn!(api = client.base(), %error, retry_in_s = backoff.as_secs(), "sensor unreachable");
        let _ = tx
            .send(AppEvent::Unreachable {
                error,
                retry_in_s: backoff.as_secs(),
            })
            .await;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn tui(client: ApiClient) -> anyhow::Result<()> {
    use crossterm::event::{self, Event};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let mut app = App::new(client.base());
    let (tx, mut rx) = mpsc::channel::<AppEvent>(EVENT_QUEUE);
    let net = tokio::spawn(network_task(client, tx.clone()));

    // ratatui::init: raw mode + alternate screen + a panic hook that restores both.
    let mut terminal = ratatui::init();
    let stop = Arc::new(AtomicBool::new(false));
    let keys = {
        let stop = stop.clone();
        let tx = tx.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match event::poll(Duration::from_millis(100)) {
                    Ok(true) => match event::read() {
                        Ok(Event::Key(k)) => {
                            if tx.blocking_send(AppEvent::Key(k)).is_err() {
                                break;
                            }
                        }
                        // A resize only needs a redraw; an empty backfill triggers one.
                        Ok(Event::Resize(..)) => {
                            let _ = tx.blocking_send(AppEvent::Backfill(Vec::new()));
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    },
                    Ok(false) => {}
                    Err(_) => break,
                }
            }
        })
    };
    drop(tx);

    let result: anyhow::Result<()> = async {
        terminal.draw(|f| ui::render(&app, f))?;
        let mut sigterm =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                ev = rx.recv() => {
                    let Some(ev) = ev else { break };
                    if app.update(ev) == Action::Quit { break; }
                    // Drain what is already queued before drawing once.
                    let mut quit = false;
                    while let Ok(ev) = rx.try_recv() {
                        if app.update(ev) == Action::Quit { quit = true; break; }
                    }
                    if quit { break; }
                    terminal.draw(|f| ui::render(&app, f))?;
                }
                _ = tokio::signal::ctrl_c() => break,
                _ = sigterm.recv() => break,
            }
        }
        Ok(())
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    ratatui::restore();
    net.abort();
    let _ = keys.join();
    result
}
