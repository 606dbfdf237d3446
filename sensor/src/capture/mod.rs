//! Kernel-facing capture: loading the eBPF programs, attaching them to TLS
//! libraries, reading the ring buffer.  `event` (parsing) needs no root.
//!
//! ```text
//! Capture::start ─ load object ─ scan /proc/*/maps ─ attach per (dev, ino)
//!      │                                   ▲ every rescan_interval (new libraries,
//!      │                                   │ exited processes → ProcessExited)
//!      └─ feed: ring buffer read in place (AsyncFd + 5 ms timer) → EventSource,
//!               exited processes → CaptureFeed::exits
//!      └─ counters: per-CPU kernel counters → metrics, once a second
//!      └─ muter: connections the pipeline has no use for, muted in the kernel
//! ```

pub mod check;
pub mod config;
pub mod error;
pub mod event;
pub mod library;
pub mod loader;
pub mod muter;
pub mod procfs;
mod procwatch;
pub mod reader;
pub mod record;
mod release;
pub mod scope;
pub mod x86;

use std::collections::{BTreeMap, HashSet};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::Ebpf;
use bytes::Bytes;
use sensor_common::{
    CTR_CALLS, CTR_EVENTS, CTR_INFLIGHT_FULL, CTR_LOST_BYTES, CTR_MUTED_CALLS, CTR_ORPHAN_RETURNS,
    CTR_READ_FAILURES, CTR_RINGBUF_FULL, CTR_SLOT_BUSY, CTR_TRUNCATED_BYTES, NUM_COUNTERS,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use check::{check_host, CheckLine};
pub use config::{CaptureConfig, ProbeMode};
pub use error::CaptureError;

use crate::outputs::live::AttachedLibrary;
use crate::outputs::metrics::Metrics;
use loader::{attach_library, attach_sites, take_links, Attachment, Detacher, Links, Target};
pub use reader::EventSource;
use reader::SeenTgids;
use scope::Scope;

/// What capture hands the pipeline: the events, read in place in the ring
/// buffer, and the processes that are gone.
pub struct CaptureFeed {
    pub events: EventSource,
    /// A process that produced events or mapped a TLS library is gone (its
    /// tgid).  Handle the events waiting in the ring first: they may be its last.
    pub exits: mpsc::Receiver<u32>,
}

/// [`CaptureFeed::recv`]'s messages.
#[derive(Debug)]
pub enum CaptureMsg {
    /// Raw events (`EventHeader` + data, exactly as the kernel wrote them),
    /// copied out of the ring buffer.
    Events(Vec<Bytes>),
    /// A process that produced events or mapped a TLS library is gone.
    ProcessExited(u32),
}

impl CaptureFeed {
    /// The next events (copied out) or exit, for tests and tools; the sensor
    /// itself handles events in place with `events.ready()` and
    /// `events.drain()`.  None once the capture is shut down.
    pub async fn recv(&mut self) -> Option<CaptureMsg> {
        loop {
            tokio::select! {
                biased;
                _ = self.events.ready() => {
                    let mut events = Vec::new();
                    self.events.drain(|raw| events.push(Bytes::copy_from_slice(raw)));
                    if !events.is_empty() {
                        return Some(CaptureMsg::Events(events));
                    }
                }
                pid = self.exits.recv() => return pid.map(CaptureMsg::ProcessExited),
            }
        }
    }
}

/// How long a scope change (SIGHUP) waits for the old probes to be
/// detached before attaching the new ones.
pub const SCOPE_DETACH_WAIT: Duration = Duration::from_secs(10);

/// What [`Capture::detach_within`] did.
#[derive(Clone, Copy, Debug)]
pub struct Detached {
    /// Uprobe links there were.
    pub links: usize,
    /// Links still being detached when it stopped waiting.
    pub left: usize,
    /// Every link was detached (or handed to the kernel) in time.
    pub all: bool,
    /// The links were handed to the kernel to detach after the process exits.
    pub released_to_kernel: bool,
    pub took: Duration,
}

/// Exit notifications queued to the pipeline at most (more are dropped, and
/// the processes' connections age out instead).
pub const EXIT_CHANNEL_CAPACITY: usize = 4096;
/// How often the kernel counters are folded into the metrics.
pub const COUNTERS_INTERVAL: Duration = Duration::from_secs(1);

const LIBRARY_LABEL: &str = "openssl";

/// Totals of the kernel's per-CPU counters (`CTR_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    pub calls: u64,
    pub events: u64,
    pub ringbuf_full: u64,
    pub lost_bytes: u64,
    pub truncated_bytes: u64,
    pub orphan_returns: u64,
    pub read_failures: u64,
    pub inflight_full: u64,
    /// Calls that found their thread's in-flight slot busy (fallback map).
    pub slot_busy: u64,
    /// Calls of connections put out of scope ([`Muter`]), not copied.
    pub muted_calls: u64,
}

struct State {
    ebpf: Ebpf,
    cfg: CaptureConfig,
    metrics: Metrics,
    proc_root: PathBuf,
    attached: BTreeMap<(u64, u64), Attachment>,
    /// Libraries that failed once: not retried (logged once, counted once).
    failed: HashSet<(u64, u64)>,
    /// Processes mapping an attached library at the last scan.
    known_pids: HashSet<u32>,
    scope: Arc<Mutex<Scope>>,
    seen: SeenTgids,
    /// Which mapped programs have OpenSSL linked in; kept between scans.
    embedded: Arc<Mutex<procfs::EmbeddedOpenssl>>,
    /// Detaches probes in the background, many at once (see [`Detacher`]).
    detacher: Detacher,
    /// Attached libraries no process maps, since when ([`release`]).
    unused: release::Unused,
}

/// One rescan: read /proc without holding the state lock (so `attached()`
/// stays cheap), then attach to new libraries and report exited processes.
fn rescan(state: &Mutex<State>, tx: &mpsc::Sender<u32>) {
    let (proc_root, scope, embedded) = {
        let s = lock(state);
        (s.proc_root.clone(), s.scope.clone(), s.embedded.clone())
    };
    let mut index = procfs::scan(
        &proc_root,
        |pid| {
            scope
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .includes(pid)
        },
        &mut embedded.lock().unwrap_or_else(|e| e.into_inner()),
    );
    // With --pid only, the probes go in those processes alone: only what
    // they map is attached.  Otherwise (all, or --comm: probes for every
    // process, events filtered by name) the host's libssl is attached before
    // anyone maps it, or a short-lived process in scope (a 50 ms curl) is
    // over before any look finds its mapping.
    if !scope
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_pids_only()
    {
        index.add_host_libraries(&proc_root);
    }
    lock(state).apply_scan(index, tx);
}

impl State {
    /// Applies one scan: attach to new libraries, report exited processes.
    fn apply_scan(&mut self, index: procfs::LibraryIndex, tx: &mpsc::Sender<u32>) {
        let mut now_pids = HashSet::new();
        for (key, lib) in &index.libraries {
            now_pids.extend(lib.pids.iter().copied());
            if let Some(a) = self.attached.get_mut(key) {
                a.pids = lib.pids.clone();
                a.open_path = lib.open_path.clone();
                sync_processes(&mut self.ebpf, &self.detacher, a);
                continue;
            }
            self.attach_new(*key, lib);
        }
        // Libraries nobody maps any more are released after a grace period
        // (the same file is often mapped again by the next process); the
        // host's libssl files are in the index, mapped or not, and kept.
        for a in self.attached.values_mut() {
            if !index.libraries.contains_key(&(a.dev, a.ino)) {
                a.pids.clear();
                sync_processes(&mut self.ebpf, &self.detacher, a);
            }
        }
        let in_use: Vec<((u64, u64), bool)> = self
            .attached
            .keys()
            .map(|k| (*k, index.libraries.contains_key(k)))
            .collect();
        for key in self.unused.after_scan(in_use, Instant::now()) {
            if let Some(a) = self.attached.get(&key) {
                tracing::info!(
                    "released {} (dev {} inode {}): no process has mapped it for {} s",
                    a.path,
                    a.dev,
                    a.ino,
                    release::RELEASE_AFTER.as_secs()
                );
            }
            self.metrics.tls_released.inc();
            self.detach_library(key);
        }
        let seen: Vec<u32> = {
            let mut s = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            s.drain().collect()
        };
        let mut candidates: HashSet<u32> = self.known_pids.drain().collect();
        candidates.extend(seen);
        for pid in candidates {
            if now_pids.contains(&pid) {
                continue;
            }
            if self.proc_root.join(pid.to_string()).exists() {
                // Alive but no longer (or not yet seen) mapping the library: keep watching.
                now_pids.insert(pid);
                continue;
            }
            self.report_exit(pid, tx);
        }
        self.known_pids = now_pids;
    }

    /// Attaches to a library not attached yet (unless it failed before).
    fn attach_new(&mut self, key: (u64, u64), lib: &procfs::LibraryInstance) {
        // Still being detached (its probes and new ones would both fire):
        // the next look attaches it.
        if self.failed.contains(&key) || self.detacher.is_detaching(key) {
            return;
        }
        // A `--pid` scope: probes for each of those processes only (the
        // first here, the others in `sync_processes`).
        let pids_only = self
            .scope
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_pids_only();
        let target = if pids_only {
            match lib.pids.iter().find_map(|&p| NonZeroU32::new(p)) {
                Some(pid) => Target::Process(pid),
                None => return,
            }
        } else {
            Target::AllProcesses
        };
        match attach_library(&mut self.ebpf, &lib.open_path, self.cfg.probe_mode, target) {
            Ok(loader::Attached {
                mode,
                sites,
                links,
                fallback_reason: fallback,
                single_stepped,
            }) => {
                if let Some(reason) = fallback {
                    tracing::info!(
                        "{}: internal probe sites not recognised ({reason}); using exported SSL_* entries",
                        lib.path
                    );
                }
                if single_stepped > 0 {
                    tracing::warn!(
                        "{}: {single_stepped} probed SSL_* entries begin with an instruction the kernel \
                         single-steps: each SSL call there costs the calling process several µs more \
                         (~6× the internal sites); its traffic is captured all the same",
                        lib.path
                    );
                }
                tracing::info!(
                    "attached to {} (dev {} inode {}, {} mode, {} processes)",
                    lib.path,
                    lib.dev,
                    lib.ino,
                    mode.as_str(),
                    lib.pids.len()
                );
                self.metrics
                    .tls_attachments
                    .with_label_values(&[LIBRARY_LABEL, mode.as_str()])
                    .inc();
                let links = match target {
                    Target::AllProcesses => Links::AllProcesses(links),
                    Target::Process(pid) => Links::PerProcess(BTreeMap::from([(pid.get(), links)])),
                };
                let mut a = Attachment {
                    dev: lib.dev,
                    ino: lib.ino,
                    path: lib.path.clone(),
                    open_path: lib.open_path.clone(),
                    mode,
                    sites,
                    links,
                    pids: lib.pids.clone(),
                };
                sync_processes(&mut self.ebpf, &self.detacher, &mut a);
                self.attached.insert(key, a);
            }
            Err(loader::AttachError::Read(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                // The process went away between the scan and the open: not an
                // error; another process mapping the file gets it next scan.
                tracing::debug!("{} vanished before attach", lib.open_path.display());
            }
            Err(e) if !lib.open_path.exists() => {
                // The process (and with it /proc/PID/root) went away while the
                // probes were being attached: transient, like the case above.
                tracing::debug!(
                    "{} vanished during attach ({e}); retried through another process",
                    lib.open_path.display()
                );
            }
            Err(e) => {
                tracing::warn!("skipping TLS library {}: {e}", lib.open_path.display());
                self.metrics
                    .attach_errors
                    .with_label_values(&[e.reason()])
                    .inc();
                self.failed.insert(key);
            }
        }
    }

    /// A process just exec'd: attach to the libraries it maps (if in scope).
    /// Cheaper than a rescan; the periodic rescan catches what this misses.
    fn check_pid(&mut self, pid: u32) {
        if !self
            .scope
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .includes(pid)
        {
            return;
        }
        let Ok(maps) = procfs::read_maps(&self.proc_root, pid) else {
            return;
        };
        let mut index = procfs::LibraryIndex::default();
        index.add_process(
            &self.proc_root,
            pid,
            &maps,
            &mut self.embedded.lock().unwrap_or_else(|e| e.into_inner()),
        );
        for (key, lib) in &index.libraries {
            self.known_pids.insert(pid);
            if let Some(a) = self.attached.get_mut(key) {
                a.pids.insert(pid);
                a.open_path = lib.open_path.clone();
                sync_processes(&mut self.ebpf, &self.detacher, a);
                continue;
            }
            self.attach_new(*key, lib);
        }
    }

    /// A thread-group leader exited: report it if we knew it.
    fn process_exited(&mut self, pid: u32, tx: &mpsc::Sender<u32>) {
        let seen = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pid);
        if !(self.known_pids.remove(&pid) || seen) {
            return;
        }
        for a in self.attached.values_mut() {
            a.pids.remove(&pid);
            sync_processes(&mut self.ebpf, &self.detacher, a);
        }
        self.report_exit(pid, tx);
    }

    /// Starts detaching every probe (shutdown, or a new scope) and returns
    /// at once; [`Detacher::wait_idle`] waits for the kernel to be done.
    /// Returns how many links there were.
    fn detach_all(&mut self) -> usize {
        let keys: Vec<(u64, u64)> = self.attached.keys().copied().collect();
        let mut links = 0;
        for key in keys {
            links += self.detach_library(key);
        }
        links
    }

    /// Stops probing the library `key` (e.g. the last process mapping it is
    /// gone): it leaves the attached set and its probes are detached in the
    /// background (this returns at once, the state lock is not held through
    /// the kernel's waits); until they are, it is not attached again.
    /// Returns how many links it had (0: it was not attached).
    pub(crate) fn detach_library(&mut self, key: (u64, u64)) -> usize {
        let Some(a) = self.attached.remove(&key) else {
            return 0;
        };
        self.metrics
            .tls_attachments
            .with_label_values(&[LIBRARY_LABEL, a.mode.as_str()])
            .dec();
        let links = match &a.links {
            Links::AllProcesses(l) => l.len(),
            Links::PerProcess(by_pid) => by_pid.values().map(Vec::len).sum(),
        };
        loader::detach_library(&mut self.ebpf, &self.detacher, a);
        links
    }

    /// `pid` is gone: its scope decision is dropped (the pid may be reused)
    /// and the pipeline is told.
    fn report_exit(&self, pid: u32, tx: &mpsc::Sender<u32>) {
        self.scope
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget(pid);
        if tx.try_send(pid).is_err() {
            tracing::debug!("exit of {pid} not delivered: channel full");
        }
    }
}

/// Makes a per-process attachment's probes match its processes: probes for
/// each pid in `a.pids` that has none, none left for a pid that is gone.
/// Attachments for every process have nothing to do.  Every pid's probes are
/// attached through `a.open_path`, which the scans keep on a process that
/// maps the file now ([`procfs::open_path_for`]: the uprobe goes on the file,
/// whichever path reaches it; the pid only filters).
fn sync_processes(ebpf: &mut Ebpf, detacher: &Detacher, a: &mut Attachment) {
    let Links::PerProcess(by_pid) = &mut a.links else {
        return;
    };
    let gone: Vec<u32> = by_pid
        .keys()
        .copied()
        .filter(|p| !a.pids.contains(p))
        .collect();
    for pid in gone {
        if let Some(links) = by_pid.remove(&pid) {
            detacher.detach(None, take_links(ebpf, links));
        }
    }
    for &pid in &a.pids {
        let Some(target) = NonZeroU32::new(pid) else {
            continue;
        };
        if by_pid.contains_key(&pid) {
            continue;
        }
        match attach_sites(ebpf, &a.open_path, &a.sites, Target::Process(target)) {
            Ok(links) => {
                by_pid.insert(pid, links);
            }
            // Most often a process exited meanwhile; the next scan retries.
            Err(e) => tracing::debug!("probing {} for pid {pid}: {e}", a.path),
        }
    }
}

pub struct Capture {
    state: Arc<Mutex<State>>,
    counters: Arc<PerCpuArray<MapData, u64>>,
    tx: mpsc::Sender<u32>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    muter: Arc<muter::Muter>,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl Capture {
    /// Loads the eBPF programs, attaches to every TLS library in scope, and
    /// starts reading events.  Needs root (or CAP_BPF + CAP_PERFMON).
    pub async fn start(
        cfg: CaptureConfig,
        metrics: Metrics,
    ) -> Result<(Capture, CaptureFeed), CaptureError> {
        Self::start_with_proc_root(cfg, metrics, Path::new("/proc")).await
    }

    async fn start_with_proc_root(
        cfg: CaptureConfig,
        metrics: Metrics,
        proc_root: &Path,
    ) -> Result<(Capture, CaptureFeed), CaptureError> {
        let mut ebpf = loader::load(&cfg)?;
        // Loading needs CAP_BPF; uprobes may need more (CAP_SYS_ADMIN on
        // recent kernels): say so now rather than run attached to nothing.
        if let Err(e) = check::uprobes_permitted() {
            if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) {
                return Err(CaptureError::UprobesDenied(e));
            }
        }
        let ring = ebpf
            .take_map("RINGBUF")
            .ok_or_else(|| CaptureError::MissingObject("map RINGBUF".into()))?;
        let ring = RingBuf::try_from(ring).map_err(|e| CaptureError::Load(e.to_string()))?;
        let counters = ebpf
            .take_map("COUNTERS")
            .ok_or_else(|| CaptureError::MissingObject("map COUNTERS".into()))?;
        let proc_ring = ebpf
            .take_map("PROC_EVENTS")
            .ok_or_else(|| CaptureError::MissingObject("map PROC_EVENTS".into()))?;
        let proc_ring =
            RingBuf::try_from(proc_ring).map_err(|e| CaptureError::Load(e.to_string()))?;
        loader::attach_process_tracepoints(&mut ebpf);
        let counters: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(counters).map_err(|e| CaptureError::Load(e.to_string()))?;
        let counters = Arc::new(counters);
        let muter = Arc::new(muter::Muter::take(&mut ebpf)?);

        let (tx, exits) = mpsc::channel(EXIT_CHANNEL_CAPACITY);
        let (stop, stop_rx) = watch::channel(false);
        let scope = Arc::new(Mutex::new(Scope::new(
            cfg.pids.clone(),
            cfg.comms.clone(),
            proc_root,
        )));
        let seen: SeenTgids = Arc::default();
        let rescan_interval = cfg.rescan_interval.max(Duration::from_millis(50));
        let loss = LossReport::new(cfg.ring_buffer_bytes);
        let state = Arc::new(Mutex::new(State {
            ebpf,
            cfg,
            metrics: metrics.clone(),
            proc_root: proc_root.to_path_buf(),
            attached: BTreeMap::new(),
            failed: HashSet::new(),
            known_pids: HashSet::new(),
            scope: scope.clone(),
            seen: seen.clone(),
            embedded: Arc::default(),
            detacher: Detacher::default(),
            unused: release::Unused::default(),
        }));

        let events = EventSource::new(ring, metrics.clone(), scope, seen)
            .map_err(|e| CaptureError::Load(format!("cannot poll the capture ring buffer: {e}")))?;

        // First scan before returning, so the caller knows what is attached.
        {
            let state = state.clone();
            let tx = tx.clone();
            tokio::task::spawn_blocking(move || rescan(&state, &tx))
                .await
                .map_err(|e| CaptureError::Load(format!("initial scan: {e}")))?;
        }

        let tasks = vec![
            tokio::spawn(rescan_loop(
                state.clone(),
                tx.clone(),
                rescan_interval,
                stop_rx.clone(),
            )),
            tokio::spawn(procwatch::run(
                proc_ring,
                state.clone(),
                tx.clone(),
                stop_rx.clone(),
            )),
            tokio::spawn(counters_loop(
                counters.clone(),
                metrics,
                loss,
                stop_rx.clone(),
            )),
            // The sensor's memory comes and goes with the traffic it holds:
            // what it frees goes back to the system (`memory`).
            tokio::spawn(crate::memory::trim_loop(stop_rx)),
        ];
        Ok((
            Capture {
                state,
                counters,
                tx,
                stop,
                tasks,
                muter,
            },
            CaptureFeed { events, exits },
        ))
    }

    /// Replaces the process scope (SIGHUP).  Every probe is detached and the
    /// libraries of the processes in the new scope attached again at once
    /// (per process for a `--pid` scope, for every process otherwise): calls
    /// made in between (a few ms) are missed.
    pub fn set_scope(&self, pids: Vec<u32>, comms: Vec<String>) {
        let detacher = {
            let mut s = lock(&self.state);
            s.scope
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .set(pids, comms);
            s.detach_all();
            s.detacher.clone()
        };
        // The old probes go first (all at once, without the state lock):
        // with both attached, a call would be seen twice.
        if !detacher.wait_idle(SCOPE_DETACH_WAIT) {
            tracing::warn!(
                "old probes not all detached within {SCOPE_DETACH_WAIT:?} of the scope change; \
                 their libraries are attached again at the next scan once they are"
            );
        }
        rescan(&self.state, &self.tx);
    }

    /// The kernel's list of connections the pipeline has no use for.
    pub fn muter(&self) -> Arc<muter::Muter> {
        self.muter.clone()
    }

    /// The libraries probed right now.
    pub fn attached(&self) -> Vec<AttachedLibrary> {
        lock(&self.state)
            .attached
            .values()
            .map(|a| AttachedLibrary {
                path: a.path.clone(),
                library: LIBRARY_LABEL.to_string(),
                mode: a.mode.as_str().to_string(),
                processes: a.pids.len() as u32,
            })
            .collect()
    }

    /// (device, inode) of every probed library, device as `makedev(major, minor)`
    /// of `/proc/PID/maps` (for blind-spot detection).
    pub fn attached_inodes(&self) -> Vec<(u64, u64)> {
        lock(&self.state).attached.keys().copied().collect()
    }

    /// In-flight call entries of `tgid`'s threads in the kernel (one per
    /// thread that made a probed call and is still alive, in its slot or in
    /// the fallback map): shows that entries are reused per thread and go
    /// away when their thread exits.
    pub fn inflight_entries(&self, tgid: u32) -> InflightEntries {
        let s = lock(&self.state);
        let in_map = kernel_map_keys::<u64, sensor_common::InflightCall>(&s.ebpf, "INFLIGHT")
            .into_iter()
            .filter(|k| (k >> 32) as u32 == tgid)
            .count();
        let in_slots = s
            .ebpf
            .map("SLOTS")
            .and_then(|m| aya::maps::Array::<_, sensor_common::InflightSlot>::try_from(m).ok())
            .map(|slots| {
                slots
                    .iter()
                    .filter_map(Result::ok)
                    .filter(|slot| slot.state != 0 && (slot.pid_tgid >> 32) as u32 == tgid)
                    .count()
            })
            .unwrap_or(0);
        InflightEntries { in_slots, in_map }
    }

    /// The kernel's bookkeeping of unannounced holes: its hint (`HOLES`) and
    /// the connections that have one (`CONNS` entries).  The two are equal
    /// unless the LRU evicted entries (then the hint is higher, which costs
    /// speed, not correctness); both go back to 0 once every hole is announced.
    pub fn kernel_holes(&self) -> (u64, usize) {
        let s = lock(&self.state);
        let hint = s
            .ebpf
            .map("HOLES")
            .and_then(|m| aya::maps::Array::<_, u64>::try_from(m).ok())
            .and_then(|a| a.get(&0, 0).ok())
            .unwrap_or(0);
        let entries =
            kernel_map_keys::<sensor_common::ConnKey, sensor_common::ConnState>(&s.ebpf, "CONNS")
                .len();
        (hint, entries)
    }

    /// Current totals of the kernel counters.
    pub fn kernel_counters(&self) -> KernelCounters {
        read_counters(&self.counters)
    }

    /// Rescans /proc now instead of waiting for the next interval (tests, or
    /// after a process start the caller knows about).
    pub async fn rescan_now(&self) {
        let state = self.state.clone();
        let tx = self.tx.clone();
        let _ = tokio::task::spawn_blocking(move || rescan(&state, &tx)).await;
    }

    /// Stops the rescans, exec/exit notifications and counter updates
    /// (the kernel counters are folded in a last time); the probes stay
    /// attached and events keep coming into the ring buffer until
    /// [`Capture::detach_within`].
    pub async fn stop(&mut self) {
        let _ = self.stop.send(true);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }

    /// Takes every probe off, and returns within `wait`: the links are
    /// handed to the kernel to detach after this process is gone
    /// ([`loader::release_to_kernel`]: no wait at all), or, where that is
    /// not allowed, detached all at once here, waiting at most `wait` (what
    /// is left then is finished by the kernel as the process exits).  Either
    /// way nothing stays attached once the process is gone.
    pub async fn detach_within(mut self, wait: Duration) -> Detached {
        self.stop().await;
        let started = Instant::now();
        let state = self.state.clone();
        let (links, all, released) = tokio::task::spawn_blocking(move || {
            let mut s = lock(&state);
            let keys: Vec<(u64, u64)> = s.attached.keys().copied().collect();
            let mut taken = Vec::new();
            for key in keys {
                if let Some(a) = s.attached.remove(&key) {
                    s.metrics
                        .tls_attachments
                        .with_label_values(&[LIBRARY_LABEL, a.mode.as_str()])
                        .dec();
                    taken.extend(take_links(&mut s.ebpf, a.links.into_all()));
                }
            }
            let detacher = s.detacher.clone();
            drop(s);
            let links = taken.len();
            let released = match loader::release_to_kernel(taken) {
                Ok(()) => true,
                Err((why, taken)) => {
                    tracing::info!(
                        "detaching {} probes here ({why}; the kernel takes ~0.1 s each)",
                        taken.len()
                    );
                    detacher.detach(None, taken);
                    false
                }
            };
            // Probes detached earlier in the background (and those above).
            let all = detacher.wait_idle(wait.saturating_sub(started.elapsed()));
            (links, all, released)
        })
        .await
        .unwrap_or((0, false, false));
        let left = lock(&self.state).detacher.pending();
        Detached {
            links,
            left,
            all,
            released_to_kernel: released,
            took: started.elapsed(),
        }
    }

    /// Stops the tasks and detaches everything, waiting as long as the
    /// kernel takes.
    pub async fn shutdown(self) {
        self.detach_within(Duration::MAX).await;
    }
}

async fn rescan_loop(
    state: Arc<Mutex<State>>,
    tx: mpsc::Sender<u32>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first scan ran in start()
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let state = state.clone();
        let tx = tx.clone();
        if tokio::task::spawn_blocking(move || rescan(&state, &tx))
            .await
            .is_err()
        {
            tracing::error!("capture rescan panicked; rescans stop");
            return;
        }
    }
}

/// Where the kernel keeps a process' in-flight call entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InflightEntries {
    /// Threads that own their slot in `SLOTS`.
    pub in_slots: usize,
    /// Threads with an entry in the fallback map `INFLIGHT` (their slot was
    /// busy with another thread's call at some point).
    pub in_map: usize,
}

impl InflightEntries {
    pub fn total(self) -> usize {
        self.in_slots + self.in_map
    }
}

/// Keys of the kernel hash map `name` (none when it is missing or not a hash
/// map of `K` to `V`).
fn kernel_map_keys<K: aya::Pod, V: aya::Pod>(ebpf: &aya::Ebpf, name: &str) -> Vec<K> {
    ebpf.map(name)
        .and_then(|m| aya::maps::HashMap::<_, K, V>::try_from(m).ok())
        .map(|m| m.keys().filter_map(Result::ok).collect())
        .unwrap_or_default()
}

fn read_counters(map: &PerCpuArray<MapData, u64>) -> KernelCounters {
    let mut totals = [0u64; NUM_COUNTERS as usize];
    for (i, t) in totals.iter_mut().enumerate() {
        if let Ok(values) = map.get(&(i as u32), 0) {
            *t = values.iter().copied().fold(0u64, u64::wrapping_add);
        }
    }
    let at = |i: u32| totals[i as usize];
    KernelCounters {
        calls: at(CTR_CALLS),
        events: at(CTR_EVENTS),
        ringbuf_full: at(CTR_RINGBUF_FULL),
        lost_bytes: at(CTR_LOST_BYTES),
        truncated_bytes: at(CTR_TRUNCATED_BYTES),
        orphan_returns: at(CTR_ORPHAN_RETURNS),
        read_failures: at(CTR_READ_FAILURES),
        inflight_full: at(CTR_INFLIGHT_FULL),
        slot_busy: at(CTR_SLOT_BUSY),
        muted_calls: at(CTR_MUTED_CALLS),
    }
}

/// Folds counter increases into the metrics (Prometheus counters only go up).
fn apply_counter_deltas(metrics: &Metrics, prev: &KernelCounters, now: &KernelCounters) {
    let d = |a: u64, b: u64| b.saturating_sub(a);
    metrics
        .capture_lost_events
        .inc_by(d(prev.ringbuf_full, now.ringbuf_full));
    metrics
        .capture_truncated_bytes
        .inc_by(d(prev.truncated_bytes, now.truncated_bytes) + d(prev.lost_bytes, now.lost_bytes));
    metrics
        .capture_muted_calls
        .inc_by(d(prev.muted_calls, now.muted_calls));
    for (reason, a, b) in [
        ("read_failed", prev.read_failures, now.read_failures),
        ("orphan_return", prev.orphan_returns, now.orphan_returns),
        ("inflight_full", prev.inflight_full, now.inflight_full),
    ] {
        let n = d(a, b);
        if n > 0 {
            metrics
                .capture_bad_events
                .with_label_values(&[reason])
                .inc_by(n);
        }
    }
}

/// Lost events get one log line at once, then at most one per
/// [`LOSS_LOG_EVERY`] with what was lost since the last line.
pub const LOSS_LOG_EVERY: Duration = Duration::from_secs(10);

/// Says when events are lost because the ring buffer was full: the metric
/// counts them, this tells the operator why and what to change, without a
/// line per second while the overload lasts.
struct LossReport {
    ring_buffer_bytes: u32,
    /// Events and bytes lost since the last line.
    events: u64,
    bytes: u64,
    last_line: Option<Instant>,
}

impl LossReport {
    fn new(ring_buffer_bytes: u32) -> Self {
        LossReport {
            ring_buffer_bytes,
            events: 0,
            bytes: 0,
            last_line: None,
        }
    }

    /// Adds what the counters say was lost since the previous reading; a
    /// line to log when one is due.
    fn note(&mut self, prev: &KernelCounters, now: &KernelCounters, at: Instant) -> Option<String> {
        self.events += now.ringbuf_full.saturating_sub(prev.ringbuf_full);
        self.bytes += now.lost_bytes.saturating_sub(prev.lost_bytes);
        if self.events == 0 || self.last_line.is_some_and(|t| at - t < LOSS_LOG_EVERY) {
            return None;
        }
        let since = match self.last_line {
            Some(t) => format!("in the last {} s", (at - t).as_secs()),
            None => "so far".to_string(),
        };
        let line = format!(
            "capture ring buffer full: {} events ({} KiB of TLS data) lost {since}, the pipeline is behind the traffic; \
             give it more room (--ring-buffer-bytes, now {}) or capture fewer processes (--pid, --comm); \
             counted in sensor_capture_lost_events_total",
            self.events,
            self.bytes / 1024,
            self.ring_buffer_bytes
        );
        self.events = 0;
        self.bytes = 0;
        self.last_line = Some(at);
        Some(line)
    }
}

async fn counters_loop(
    counters: Arc<PerCpuArray<MapData, u64>>,
    metrics: Metrics,
    mut loss: LossReport,
    mut stop: watch::Receiver<bool>,
) {
    let mut prev = KernelCounters::default();
    let mut tick = tokio::time::interval(COUNTERS_INTERVAL);
    loop {
        let stopping = tokio::select! {
            _ = stop.changed() => true,
            _ = tick.tick() => false,
        };
        let now = read_counters(&counters);
        apply_counter_deltas(&metrics, &prev, &now);
        if let Some(line) = loss.note(&prev, &now, Instant::now()) {
            tracing::warn!("{line}");
        }
        prev = now;
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_events_are_said_at_once_then_summed_every_ten_seconds() {
        let mut r = LossReport::new(1 << 25);
        let t0 = Instant::now();
        let at = |n: u64, bytes: u64| KernelCounters {
            ringbuf_full: n,
            lost_bytes: bytes,
            ..KernelCounters::default()
        };
        assert_eq!(
            r.note(&at(0, 0), &at(0, 0), t0),
            None,
            "nothing lost, nothing said"
        );
        let first = r
            .note(&at(0, 0), &at(5, 4096), t0)
            .expect("the first loss is said at once");
        assert!(
            first.contains("5 events (4 KiB of TLS data) lost so far"),
            "{first}"
        );
        assert!(
            first.contains("--ring-buffer-bytes, now 33554432"),
            "{first}"
        );
        // Within ten seconds: summed, not said.
        let s = Duration::from_secs;
        assert_eq!(r.note(&at(5, 4096), &at(8, 4096), t0 + s(1)), None);
        assert_eq!(r.note(&at(8, 4096), &at(9, 6144), t0 + s(9)), None);
        let next = r
            .note(&at(9, 6144), &at(10, 6144), t0 + s(10))
            .expect("due after 10 s");
        assert!(
            next.contains("5 events (2 KiB of TLS data) lost in the last 10 s"),
            "{next}"
        );
        // A quiet period says nothing, even when a line would be due.
        assert_eq!(r.note(&at(10, 6144), &at(10, 6144), t0 + s(60)), None);
        assert!(r.note(&at(10, 6144), &at(11, 6144), t0 + s(61)).is_some());
    }

    #[test]
    fn counter_deltas_feed_metrics() {
        let m = Metrics::new();
        let a = KernelCounters::default();
        let b = KernelCounters {
            ringbuf_full: 3,
            lost_bytes: 100,
            truncated_bytes: 20,
            read_failures: 1,
            ..a
        };
        apply_counter_deltas(&m, &a, &b);
        apply_counter_deltas(&m, &b, &b); // no change, no increase
        assert_eq!(m.capture_lost_events.get(), 3);
        assert_eq!(m.capture_truncated_bytes.get(), 120);
        assert_eq!(
            m.capture_bad_events
                .with_label_values(&["read_failed"])
                .get(),
            1
        );
    }
}
