//! The writers of `--findings` and `--pairs` (JSON lines; `-` is stdout)
//! and of `--record` (length-prefixed binary records, [`Framing::Records`]).
//!
//! The caller (the pipeline's event loop) never waits on the output: lines
//! are serialized into a buffer and handed over in chunks, through a bounded
//! queue ([`MAX_QUEUED_BYTES`], [`MAX_QUEUED_CHUNKS`]), to a thread of the
//! writer's own that does the (blocking) writes.  A reader that does not read
//! or a slow disk fills the queue; what does not fit, and what a write fails
//! on (disk full), is dropped and counted (`sensor_output_dropped_total`),
//! and said in the log at once, then at most every [`DROP_LOG_EVERY`] with
//! the count since.
//!
//! A file output can be reopened ([`ReopenHandle::reopen`], SIGHUP): the
//! writer thread opens the path again before its next write (logrotate
//! renamed the file: a new one is created), so the caller never waits on
//! it; when that fails it says so in one log line, counts it, and keeps
//! writing to the file it had.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use serde::Serialize;

/// Bytes handed to the writer thread and not written yet, at most.
pub const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;
/// Chunks handed to the writer thread and not written yet, at most (a
/// chunk is what was written between two flushes, or [`CHUNK_BYTES`]).
pub const MAX_QUEUED_CHUNKS: usize = 16 * 1024;
/// Lines are handed over once this many bytes are buffered (or at a flush).
const CHUNK_BYTES: usize = 64 * 1024;
/// Lines dropped are said in the log at once, then at most this often.
pub const DROP_LOG_EVERY: Duration = Duration::from_secs(10);
/// How long dropping a writer that drops lines waits for its thread to
/// write what is queued ([`JsonLinesWriter::finish`] takes its own bound).
pub const FINISH_WAIT: Duration = Duration::from_secs(2);

/// What [`JsonLinesWriter::write`] does when the queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// Drop the lines and count them (`sensor run`: the event loop never waits).
    Drop,
    /// Wait for room (`sensor replay`: its output is complete or it waits).
    Wait,
}

/// How a writer hands its lines over and where it counts those it drops.
pub struct Delivery {
    pub when_full: WhenFull,
    pub dropped: IntCounter,
    pub max_queued_bytes: usize,
    /// Counts reopens that failed (the old file is kept).
    pub reopen_failed: IntCounter,
}

impl Delivery {
    /// Never waits; drops are counted in `dropped`.
    pub fn dropping(dropped: IntCounter) -> Delivery {
        Delivery {
            when_full: WhenFull::Drop,
            dropped,
            max_queued_bytes: MAX_QUEUED_BYTES,
            reopen_failed: unregistered_counter(),
        }
    }

    /// Never waits; drops are counted in a counter of its own.
    pub fn dropping_unregistered() -> Delivery {
        Delivery::dropping(unregistered_counter())
    }

    /// Waits for room; failed writes are counted in a counter of its own.
    pub fn waiting() -> Delivery {
        Delivery {
            when_full: WhenFull::Wait,
            ..Delivery::dropping(unregistered_counter())
        }
    }
}

/// How units are cut in the output: whole lines (a write cut mid-line is
/// followed by a `\n`), or binary records (after a failed write the rest
/// would be misread: nothing more is written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Lines,
    Records,
}

impl Framing {
    fn unit(self) -> &'static str {
        match self {
            Framing::Lines => "lines",
            Framing::Records => "records",
        }
    }
}

/// Opens the output's file again (SIGHUP).
type Reopener = Box<dyn FnMut() -> io::Result<Box<dyn Write + Send>> + Send>;

fn unregistered_counter() -> IntCounter {
    IntCounter::new("sensor_output_dropped_lines", "Lines not written.").expect("valid metric")
}

/// Writes one JSON object per line.  The pipeline flushes after each batch
/// of events, so a finding reaches its reader within the batch latency (and
/// the writer thread's).
pub struct JsonLinesWriter {
    what: &'static str,
    /// Whole lines not handed over yet, and how many.
    buf: Vec<u8>,
    lines: u64,
    /// Shared with [`ReopenHandle`]s as a weak reference, so that dropping
    /// this closes the queue.
    tx: Option<Arc<SyncSender<Chunk>>>,
    /// Told when the writer thread has written everything and ended.
    done: Option<Receiver<()>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    when_full: WhenFull,
    max_queued_bytes: usize,
}

struct Chunk {
    bytes: Vec<u8>,
    lines: u64,
}

/// What the caller and the writer thread both see.
struct Shared {
    /// Bytes handed over and not written yet (the queue's bound).
    queued_bytes: AtomicUsize,
    queue: Mutex<Queue>,
    dropped: IntCounter,
    report: Mutex<DropReport>,
    /// A reopen was asked for and not done yet.
    reopen: AtomicBool,
    /// A reopen that failed, to be said by the caller's next flush (in the
    /// log of the sensor's main task, as drops are).
    reopen_error: Mutex<Option<String>>,
}

/// Lines handed over and not taken by the writer thread yet, and whether
/// the writer was given up on (they were counted as dropped then, and the
/// thread writes no more): each line is written or counted, once.
#[derive(Default)]
struct Queue {
    lines: u64,
    abandoned: bool,
}

impl Shared {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn drop_lines(&self, lines: u64, cause: String) {
        self.dropped.inc_by(lines);
        self.report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .note(lines, cause);
    }
}

/// Lines dropped since the last log line, said at once, then at most every
/// [`DROP_LOG_EVERY`] (as the capture's lost events are).
#[derive(Default)]
pub(crate) struct DropReport {
    lines: u64,
    cause: String,
    last_line: Option<Instant>,
    /// What is counted ("lines" when not said).
    unit: &'static str,
}

impl DropReport {
    /// `lines` were dropped because of `cause`.
    pub(crate) fn note(&mut self, lines: u64, cause: String) {
        self.lines += lines;
        self.cause = cause;
    }

    /// A line to log when one is due.
    pub(crate) fn due(&mut self, what: &str, at: Instant) -> Option<String> {
        if self.lines == 0 || self.last_line.is_some_and(|t| at - t < DROP_LOG_EVERY) {
            return None;
        }
        let since = match self.last_line {
            Some(t) => format!("in the last {} s", (at - t).as_secs()),
            None => "so far".to_string(),
        };
        let unit = if self.unit.is_empty() {
            "lines"
        } else {
            self.unit
        };
        let line = format!(
            "cannot write {what}: {}; {} {unit} dropped {since}, counted in \
             sensor_output_dropped_total{{output=\"{what}\"}} (said at most every {} s)",
            self.cause,
            self.lines,
            DROP_LOG_EVERY.as_secs()
        );
        self.lines = 0;
        self.last_line = Some(at);
        Some(line)
    }
}

impl JsonLinesWriter {
    /// `-` means stdout; anything else is a file, appended to (created mode 0600,
    /// as pairs and findings describe the host's traffic).  Waits when its
    /// queue is full (`sensor replay`); `sensor run` uses [`Self::open_with`].
    pub fn open(target: &str, what: &'static str) -> io::Result<Self> {
        Self::open_with(target, what, Delivery::waiting())
    }

    /// As [`Self::open`].  A file whose last line was cut (the sensor was
    /// killed mid-write) gets a `\n` first, so that the cut line stays alone
    /// and the lines after it are whole JSON lines.
    pub fn open_with(target: &str, what: &'static str, delivery: Delivery) -> io::Result<Self> {
        if target == "-" {
            return Self::start(Box::new(io::stdout()), what, delivery, Framing::Lines, None);
        }
        let path = Path::new(target).to_path_buf();
        let file = open_lines_file(&path, what)?;
        let reopener: Reopener = Box::new(move || {
            open_lines_file(&path, what).map(|f| Box::new(f) as Box<dyn Write + Send>)
        });
        Self::start(
            Box::new(file),
            what,
            delivery,
            Framing::Lines,
            Some((target.to_string(), reopener)),
        )
    }

    /// A writer of binary records ([`Framing::Records`]) into `w` (the
    /// recording: a file it does not reopen).
    pub fn records_with(
        w: Box<dyn Write + Send>,
        what: &'static str,
        delivery: Delivery,
    ) -> io::Result<Self> {
        Self::start(w, what, delivery, Framing::Records, None)
    }

    /// A writer into any sink (tests, benchmarks) that drops what does not
    /// fit in its queue, as `sensor run`'s (counted in [`Self::dropped`]).
    pub fn from_writer(w: Box<dyn Write + Send>, what: &'static str) -> Self {
        Self::from_writer_with(w, what, Delivery::dropping(unregistered_counter()))
            .expect("cannot start a writer thread")
    }

    pub fn from_writer_with(
        w: Box<dyn Write + Send>,
        what: &'static str,
        delivery: Delivery,
    ) -> io::Result<Self> {
        Self::start(w, what, delivery, Framing::Lines, None)
    }

    /// As [`Self::from_writer_with`], reopening with `reopen` (shown as
    /// its path) when asked.
    pub fn reopenable(
        w: Box<dyn Write + Send>,
        what: &'static str,
        delivery: Delivery,
        path: &str,
        reopen: impl FnMut() -> io::Result<Box<dyn Write + Send>> + Send + 'static,
    ) -> io::Result<Self> {
        Self::start(
            w,
            what,
            delivery,
            Framing::Lines,
            Some((path.to_string(), Box::new(reopen))),
        )
    }

    fn start(
        w: Box<dyn Write + Send>,
        what: &'static str,
        delivery: Delivery,
        framing: Framing,
        reopener: Option<(String, Reopener)>,
    ) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            queued_bytes: AtomicUsize::new(0),
            queue: Mutex::new(Queue::default()),
            dropped: delivery.dropped,
            report: Mutex::new(DropReport {
                unit: framing.unit(),
                ..DropReport::default()
            }),
            reopen: AtomicBool::new(false),
            reopen_error: Mutex::new(None),
        });
        let reopen_failed = delivery.reopen_failed;
        let (tx, rx) = sync_channel::<Chunk>(MAX_QUEUED_CHUNKS);
        let (done_tx, done) = sync_channel::<()>(1);
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("{what}-writer"))
                .spawn(move || {
                    let mut out = Output {
                        w,
                        what,
                        framing,
                        reopener,
                        reopen_failed,
                    };
                    out.write_chunks(&rx, &shared);
                    let _ = done_tx.send(());
                })?
        };
        Ok(JsonLinesWriter {
            what,
            buf: Vec::with_capacity(CHUNK_BYTES),
            lines: 0,
            tx: Some(Arc::new(tx)),
            done: Some(done),
            thread: Some(thread),
            shared,
            when_full: delivery.when_full,
            max_queued_bytes: delivery.max_queued_bytes,
        })
    }

    /// Adds one line; hands the buffered lines over when they are a chunk.
    pub fn write<T: Serialize>(&mut self, value: &T) {
        let start = self.buf.len();
        match serde_json::to_writer(&mut self.buf, value) {
            Ok(()) => {
                self.buf.push(b'\n');
                self.lines += 1;
            }
            Err(e) => {
                self.buf.truncate(start);
                self.shared.drop_lines(1, format!("cannot serialize: {e}"));
            }
        }
        if self.buf.len() >= CHUNK_BYTES {
            self.hand_over();
            self.log_drops(Instant::now());
        }
    }

    /// Adds one binary record made of `parts` ([`Framing::Records`]);
    /// hands the buffered records over when they are a chunk.
    pub fn write_record(&mut self, parts: &[&[u8]]) {
        for p in parts {
            self.buf.extend_from_slice(p);
        }
        self.lines += 1;
        if self.buf.len() >= CHUNK_BYTES {
            self.hand_over();
            self.log_drops(Instant::now());
        }
    }

    /// A handle that asks the writer thread to reopen the output's file
    /// (nothing for stdout or a writer made from any sink).
    pub fn reopen_handle(&self) -> ReopenHandle {
        ReopenHandle {
            shared: self.shared.clone(),
            tx: self.tx.as_ref().map_or_else(Weak::new, Arc::downgrade),
        }
    }

    /// Hands the buffered lines to the writer thread; never waits (unless
    /// [`WhenFull::Wait`]).  Logs the drops when a line is due.
    pub fn flush(&mut self) {
        self.hand_over();
        self.log_drops(Instant::now());
    }

    /// Lines dropped so far (queue full, write failed).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.get()
    }

    fn hand_over(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let chunk = Chunk {
            bytes: std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES)),
            lines: std::mem::take(&mut self.lines),
        };
        let (n, lines) = (chunk.bytes.len(), chunk.lines);
        let Some(tx) = self.tx.as_ref() else {
            self.shared
                .drop_lines(lines, "the writer was closed".to_string());
            return;
        };
        let queued = self.shared.queued_bytes.load(Ordering::Relaxed);
        if self.when_full == WhenFull::Drop && queued + n > self.max_queued_bytes {
            self.shared.drop_lines(lines, queue_full(queued));
            return;
        }
        // Counted before the thread can take it off (only this thread adds).
        self.shared.queued_bytes.fetch_add(n, Ordering::Relaxed);
        self.shared.queue().lines += lines;
        let refused = match self.when_full {
            WhenFull::Drop => match tx.try_send(chunk) {
                Ok(()) => None,
                Err(TrySendError::Full(_)) => Some(queue_full(queued)),
                Err(TrySendError::Disconnected(_)) => Some("the writer thread ended".to_string()),
            },
            WhenFull::Wait => tx
                .send(chunk)
                .err()
                .map(|_| "the writer thread ended".to_string()),
        };
        if let Some(cause) = refused {
            self.shared.queued_bytes.fetch_sub(n, Ordering::Relaxed);
            self.shared.queue().lines -= lines;
            self.shared.drop_lines(lines, cause);
        }
    }

    fn log_drops(&self, at: Instant) {
        let reopen_error = self
            .shared
            .reopen_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(line) = reopen_error {
            tracing::error!(output = self.what, "{line}");
        }
        let line = self
            .shared
            .report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .due(self.what, at);
        if let Some(line) = line {
            tracing::error!(output = self.what, "{line}");
        }
    }

    /// Hands over what is buffered, closes the queue and waits at most
    /// `wait` for the writer thread to write it all (shutdown: a reader that
    /// does not read must not keep the sensor from exiting).  What is left
    /// is counted as dropped.  Returns whether everything was written.
    pub fn finish(&mut self, wait: Duration) -> bool {
        self.hand_over();
        self.tx = None;
        let Some(done) = self.done.take() else {
            return true;
        };
        let ended = done.recv_timeout(wait).is_ok();
        if ended {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        } else {
            // The thread stays blocked in its write (until the process
            // exits, or the write ends: then it writes no more).
            self.thread = None;
            let lines = {
                let mut q = self.shared.queue();
                q.abandoned = true;
                std::mem::take(&mut q.lines)
            };
            let bytes = self.shared.queued_bytes.load(Ordering::Relaxed);
            self.shared.drop_lines(
                lines,
                format!(
                    "the output did not take {} KiB within {} ms of shutting down",
                    bytes / 1024,
                    wait.as_millis()
                ),
            );
        }
        self.log_drops(Instant::now());
        ended
    }
}

impl Drop for JsonLinesWriter {
    fn drop(&mut self) {
        if self.done.is_some() {
            match self.when_full {
                WhenFull::Drop => {
                    self.finish(FINISH_WAIT);
                }
                // Complete output or none: waits as long as the writes take.
                WhenFull::Wait => {
                    self.finish(Duration::MAX);
                }
            }
        }
    }
}

fn queue_full(queued: usize) -> String {
    format!(
        "the output is not taking what is written (a reader that does not read, a slow disk): \
         {} KiB queued",
        queued / 1024
    )
}

/// Asks a writer thread to reopen its file before its next write (SIGHUP,
/// after logrotate renamed it); never waits.
#[derive(Clone)]
pub struct ReopenHandle {
    shared: Arc<Shared>,
    tx: Weak<SyncSender<Chunk>>,
}

impl ReopenHandle {
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Release);
        // Wakes an idle thread; a busy one sees the flag before its next
        // write.  An empty chunk writes nothing.
        if let Some(tx) = self.tx.upgrade() {
            let _ = tx.try_send(Chunk {
                bytes: Vec::new(),
                lines: 0,
            });
        }
    }
}

/// The writer thread's side of an output.
struct Output {
    w: Box<dyn Write + Send>,
    what: &'static str,
    framing: Framing,
    /// The file's path and how to open it again.
    reopener: Option<(String, Reopener)>,
    reopen_failed: IntCounter,
}

impl Output {
    /// Opens the file again when asked; on failure, says so once per
    /// request, counts it and keeps the file it has.
    fn reopen_if_asked(&mut self, shared: &Shared) -> bool {
        if !shared.reopen.swap(false, Ordering::AcqRel) {
            return false;
        }
        let Some((path, reopen)) = self.reopener.as_mut() else {
            return false;
        };
        let _ = self.w.flush();
        match reopen() {
            Ok(w) => {
                self.w = w;
                tracing::info!(output = self.what, "reopened {path}");
                true
            }
            Err(e) => {
                self.reopen_failed.inc();
                *shared
                    .reopen_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(format!(
                    "cannot reopen {path}: {e}; still writing to the file it had \
                     (counted in sensor_output_reopen_failures_total{{output=\"{}\"}})",
                    self.what
                ));
                false
            }
        }
    }

    /// Writes each chunk as it comes; a failed write drops its chunk.
    /// After a write that stopped mid-line, the next one starts with a
    /// `\n`, so the cut line stays alone; after a failed write of records,
    /// nothing more is written (the records after it would be misread).
    fn write_chunks(&mut self, rx: &Receiver<Chunk>, shared: &Shared) {
        let mut cut_line = false;
        let mut stopped: Option<String> = None;
        while let Ok(chunk) = rx.recv() {
            if self.reopen_if_asked(shared) {
                // A new file starts with whole units.
                cut_line = false;
            }
            let taken = {
                let mut q = shared.queue();
                if !q.abandoned {
                    q.lines -= chunk.lines;
                }
                !q.abandoned
            };
            if !taken {
                // Counted as dropped when the writer was given up on.
                shared
                    .queued_bytes
                    .fetch_sub(chunk.bytes.len(), Ordering::Relaxed);
                continue;
            }
            if chunk.bytes.is_empty() {
                continue;
            }
            if let Some(why) = &stopped {
                shared
                    .queued_bytes
                    .fetch_sub(chunk.bytes.len(), Ordering::Relaxed);
                shared.drop_lines(chunk.lines, why.clone());
                continue;
            }
            let w = &mut self.w;
            let lines = self.framing == Framing::Lines;
            let res = (|| {
                if cut_line {
                    w.write_all(b"\n")?;
                    cut_line = false;
                }
                let mut written = 0;
                let res = loop {
                    if written == chunk.bytes.len() {
                        break w.flush();
                    }
                    match w.write(&chunk.bytes[written..]) {
                        Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => written += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                if lines && written > 0 && chunk.bytes[written - 1] != b'\n' {
                    cut_line = true;
                }
                res
            })();
            shared
                .queued_bytes
                .fetch_sub(chunk.bytes.len(), Ordering::Relaxed);
            if let Err(e) = res {
                let cause = match self.framing {
                    Framing::Lines => e.to_string(),
                    Framing::Records => {
                        let why = format!(
                            "{e}; the output stopped (what follows a cut record would be misread)"
                        );
                        stopped = Some(why.clone());
                        why
                    }
                };
                shared.drop_lines(chunk.lines, cause);
            }
        }
    }
}

/// Opens (creates, mode 0600) a JSON-lines file for appending, with its
/// directory; a cut last line is ended first (see [`end_cut_line`]).
fn open_lines_file(path: &Path, what: &str) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    if let Err(e) = end_cut_line(&mut file, path) {
        tracing::warn!(
            output = what,
            "cannot check whether {} ends in a whole line: {e}",
            path.display()
        );
    }
    Ok(file)
}

/// Writes a `\n` at the end of `file` (opened for append at `path`) when it
/// is a regular file whose last byte is not one.
fn end_cut_line(file: &mut File, path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    File::open(path)?.read_exact_at(&mut last, meta.len() - 1)?;
    if last[0] != b'\n' {
        file.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "jsonl_tests.rs"]
mod tests;
