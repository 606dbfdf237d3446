//! Loading the embedded eBPF object and attaching its programs to libraries.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use aya::programs::uprobe::{UProbeAttachLocation, UProbeLink, UProbeLinkId, UProbeScope};
use aya::programs::{ProgramError, RawTracePoint, UProbe};
use aya::{Ebpf, EbpfError, EbpfLoader};
use sensor_common::{GLOBAL_COUNT_ONLY, GLOBAL_SLOT_MASK};

use super::config::{CaptureConfig, ProbeMode};
use super::error::{is_permission_error, verifier_tail, CaptureError};
use super::library::{open_library, plan, Program, SiteMode};

/// The eBPF object embedded by build.rs (empty when it was not built).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sensor-ebpf.o"));

pub fn ebpf_object_embedded() -> bool {
    !EBPF_OBJECT.is_empty()
}

const PAGE_SIZE: u32 = 4096;

fn check_ring_size(bytes: u32) -> Result<(), CaptureError> {
    if bytes < PAGE_SIZE || !bytes.is_power_of_two() {
        return Err(CaptureError::BadRingBufferSize(bytes));
    }
    Ok(())
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        // Wrappers often repeat their source's text.
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

fn load_error(e: EbpfError) -> CaptureError {
    let text = chain(&e);
    if is_permission_error(&text) {
        return CaptureError::Privileges(text);
    }
    CaptureError::Load(text)
}

fn program_error(name: &str, e: ProgramError) -> CaptureError {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            // For whoever works on the eBPF side: the whole log, not its tail.
            if let Some(path) = std::env::var_os("SENSOR_VERIFIER_LOG") {
                let _ = std::fs::write(path, format!("{name}: {io_error}\n{verifier_log}"));
            }
            let text = io_error.to_string();
            let log = verifier_log.to_string();
            // EACCES with a log is the verifier refusing the program (as
            // root too); without a log it is the missing capability.
            if is_permission_error(&text) && log.trim().is_empty() {
                return CaptureError::Privileges(text);
            }
            CaptureError::Verifier {
                program: name.to_string(),
                tail: verifier_tail(&log),
            }
        }
        other => CaptureError::Load(format!("{name}: {}", chain(&other))),
    }
}

/// Loads the object (ring size, in-flight slots and count-only patched in) and
/// every program.
pub fn load(cfg: &CaptureConfig) -> Result<Ebpf, CaptureError> {
    if !ebpf_object_embedded() {
        return Err(CaptureError::NotBuilt);
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(CaptureError::NoBtf);
    }
    check_ring_size(cfg.ring_buffer_bytes)?;
    let count_only: u8 = cfg.count_only.into();
    if !cfg.inflight_slots.is_power_of_two() {
        return Err(CaptureError::Load(format!(
            "inflight_slots is {}, it must be a power of two",
            cfg.inflight_slots
        )));
    }
    let slot_mask = cfg.inflight_slots - 1;
    let mut ebpf = EbpfLoader::new()
        .map_max_entries("RINGBUF", cfg.ring_buffer_bytes)
        .map_max_entries("SLOTS", cfg.inflight_slots)
        .override_global(GLOBAL_COUNT_ONLY, &count_only, true)
        .override_global(GLOBAL_SLOT_MASK, &slot_mask, true)
        .load(EBPF_OBJECT)
        .map_err(load_error)?;
    for p in Program::ALL {
        let prog: &mut UProbe = ebpf
            .program_mut(p.name())
            .ok_or_else(|| CaptureError::MissingObject(format!("program {}", p.name())))?
            .try_into()
            .map_err(|e: ProgramError| CaptureError::Load(chain(&e)))?;
        prog.load().map_err(|e| program_error(p.name(), e))?;
    }
    Ok(ebpf)
}

/// The raw tracepoints that report exec/exit.  Failure is not fatal (the
/// periodic rescan does the same job, only later): it is logged.
pub fn attach_process_tracepoints(ebpf: &mut Ebpf) {
    for (prog, tp) in [
        ("proc_exec", "sched_process_exec"),
        ("proc_exit", "sched_process_exit"),
    ] {
        let res = (|| -> Result<(), String> {
            let p: &mut RawTracePoint = ebpf
                .program_mut(prog)
                .ok_or_else(|| format!("program {prog} missing"))?
                .try_into()
                .map_err(|e: ProgramError| e.to_string())?;
            p.load().map_err(|e| chain(&e))?;
            // The link lives as long as the program (inside `ebpf`).
            p.attach(tp).map_err(|e| chain(&e))?;
            Ok(())
        })();
        if let Err(e) = res {
            tracing::warn!("no {tp} notifications ({e}); new processes are found by rescans");
        }
    }
}

/// Probes attached to one library file.
pub struct Attachment {
    pub dev: u64,
    pub ino: u64,
    /// Path as first seen inside its process.
    pub path: String,
    /// Path used to attach ([`super::procfs::open_path_for`] of a process
    /// that maps the file; each scan refreshes it).
    pub open_path: PathBuf,
    pub mode: SiteMode,
    /// Where the probes go in the file (kept to probe more processes).
    pub sites: Vec<(Program, u64)>,
    pub links: Links,
    pub pids: BTreeSet<u32>,
}

/// An attachment's uprobe links.
pub enum Links {
    /// One set for every process that maps the file (no `--pid` scope).
    AllProcesses(Vec<(Program, UProbeLinkId)>),
    /// One set per process in a `--pid` scope: the kernel puts the
    /// breakpoints in those processes' memory only, so every other process
    /// mapping the file runs its SSL calls untouched (no trap, no copy).
    PerProcess(BTreeMap<u32, Vec<(Program, UProbeLinkId)>>),
}

impl Links {
    /// Every link, for detaching.
    pub fn into_all(self) -> Vec<(Program, UProbeLinkId)> {
        match self {
            Links::AllProcesses(links) => links,
            Links::PerProcess(by_pid) => by_pid.into_values().flatten().collect(),
        }
    }
}

/// Which processes a set of probes fires for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    AllProcesses,
    /// This process (all its threads: the kernel filters by address space).
    Process(NonZeroU32),
}

/// Why attaching to a library failed; the label of `sensor_attach_errors_total{reason}`.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("cannot read the file: {0}")]
    Read(std::io::Error),
    #[error("not a usable OpenSSL library: {0}")]
    Library(#[from] super::library::LibraryError),
    #[error("attaching {program} at {offset:#x} failed: {error}")]
    Attach {
        program: &'static str,
        offset: u64,
        error: String,
    },
}

impl AttachError {
    pub fn reason(&self) -> &'static str {
        match self {
            AttachError::Read(_) => "read_failed",
            AttachError::Library(super::library::LibraryError::MissingSymbol(_)) => {
                "missing_symbol"
            }
            AttachError::Library(_) => "bad_elf",
            AttachError::Attach { .. } => "attach_failed",
        }
    }
}

/// What `attach_library` did: the site mode, the links, and why internal sites
/// were not used (when they were not).
pub struct Attached {
    pub mode: SiteMode,
    pub sites: Vec<(Program, u64)>,
    pub links: Vec<(Program, UProbeLinkId)>,
    pub fallback_reason: Option<String>,
    /// See [`super::library::ProbePlan::single_stepped`].
    pub single_stepped: usize,
}

/// Attaches the probes of `mode` to the library at `open_path`, for
/// `target`.  On failure nothing stays attached (no half-probed library).
pub fn attach_library(
    ebpf: &mut Ebpf,
    open_path: &Path,
    mode: ProbeMode,
    target: Target,
) -> Result<Attached, AttachError> {
    let file = open_library(open_path).map_err(AttachError::Read)?;
    let plan = plan(&file, mode)?;
    drop(file);
    let links = attach_sites(ebpf, open_path, &plan.sites, target)?;
    Ok(Attached {
        mode: plan.mode,
        sites: plan.sites,
        links,
        fallback_reason: plan.fallback_reason,
        single_stepped: plan.single_stepped,
    })
}

/// Attaches a planned library's `sites` for `target`; all or nothing.
pub fn attach_sites(
    ebpf: &mut Ebpf,
    open_path: &Path,
    sites: &[(Program, u64)],
    target: Target,
) -> Result<Vec<(Program, UProbeLinkId)>, AttachError> {
    let scope = || match target {
        Target::AllProcesses => UProbeScope::AllProcesses,
        Target::Process(pid) => UProbeScope::OneProcess(pid),
    };
    let mut links = Vec::with_capacity(sites.len());
    for &(program, offset) in sites {
        let res = uprobe(ebpf, program).and_then(|p| {
            p.attach(
                UProbeAttachLocation::AbsoluteOffset(offset),
                open_path,
                scope(),
            )
            .map_err(|e| chain(&e))
        });
        match res {
            Ok(id) => links.push((program, id)),
            Err(error) => {
                detach_links(ebpf, links);
                return Err(AttachError::Attach {
                    program: program.name(),
                    offset,
                    error,
                });
            }
        }
    }
    Ok(links)
}

fn uprobe(ebpf: &mut Ebpf, program: Program) -> Result<&mut UProbe, String> {
    ebpf.program_mut(program.name())
        .ok_or_else(|| format!("program {} missing", program.name()))?
        .try_into()
        .map_err(|e: ProgramError| e.to_string())
}

/// Detaches links now, on this thread, in parallel (attach roll-backs);
/// errors are logged (the program may already be gone).
pub fn detach_links(ebpf: &mut Ebpf, links: Vec<(Program, UProbeLinkId)>) {
    let taken = take_links(ebpf, links);
    if taken.len() > 1 {
        let detacher = Detacher::default();
        detacher.detach(None, taken);
        detacher.wait_idle(Duration::MAX);
    } else {
        drop(taken);
    }
}

/// Takes links out of their programs without detaching them (no kernel
/// wait): each is detached when the returned value is dropped.  Hand them to
/// a [`Detacher`] so that happens off the caller's thread and lock.
pub fn take_links(ebpf: &mut Ebpf, links: Vec<(Program, UProbeLinkId)>) -> Vec<UProbeLink> {
    let mut taken = Vec::with_capacity(links.len());
    for (program, id) in links {
        match uprobe(ebpf, program).and_then(|p| p.take_link(id).map_err(|e| e.to_string())) {
            Ok(link) => taken.push(link),
            Err(e) => tracing::debug!("detaching {}: {e}", program.name()),
        }
    }
    taken
}

/// Detaches every probe of one library, `a`, taken out of the attached set
/// by the caller (e.g. when the last process mapping it is gone): the links
/// are taken out of their programs at once (cheap) and detached by
/// `detacher` in the background, so the caller's lock is not held through
/// the kernel's waits.  Until that is done, [`Detacher::is_detaching`] is
/// true for the library's `(dev, ino)`: attach it again only after (the old
/// and the new probes would both fire meanwhile).
pub fn detach_library(ebpf: &mut Ebpf, detacher: &Detacher, a: Attachment) {
    let links = take_links(ebpf, a.links.into_all());
    detacher.detach(Some((a.dev, a.ino)), links);
}

/// Where [`release_to_kernel`] mounts its private bpffs, first that works
/// (mounting over a directory in a mount namespace of its own thread: no
/// one else sees it, nothing is written to the directory).
const RELEASE_MOUNT_POINTS: [&str; 4] = ["/sys/fs/bpf", "/tmp", "/run", "/dev"];

/// Hands `links` over for the kernel to detach after this process is gone,
/// without waiting for it: each link is pinned in a bpffs mounted for the
/// purpose in this thread's own mount namespace, its fd closed (the pin
/// keeps it: no kernel wait), and the bpffs unmounted, which drops the pins.
/// A link released that way, not by its fd, is freed by a kernel worker
/// (`bpf_link_put` defers to a workqueue, and the perf event's last `fput`
/// from a kernel thread is deferred too): the programs are off the probes
/// within a few grace periods, all links at once, and the uprobes go one
/// after the other (~0.1 s each under the kernel's event_mutex) while the
/// sensor has already exited.  Nothing stays attached: no pin survives the
/// unmount, no fd survives the process.
///
/// When it cannot mount (no CAP_SYS_ADMIN in this mount namespace, a
/// security profile that forbids it), it returns the links with the
/// reason: detach those as usual.  Runs on a thread of its own (the mount
/// namespace is that thread's).
pub fn release_to_kernel(links: Vec<UProbeLink>) -> Result<(), (String, Vec<UProbeLink>)> {
    if links.is_empty() {
        return Ok(());
    }
    let handle = std::thread::Builder::new()
        .name("release".into())
        .spawn(move || release_on_this_thread(links));
    match handle {
        Ok(h) => h
            .join()
            .unwrap_or_else(|_| Err(("the release thread panicked".into(), Vec::new()))),
        Err(e) => Err((format!("no thread: {e}"), Vec::new())),
    }
}

fn release_on_this_thread(links: Vec<UProbeLink>) -> Result<(), (String, Vec<UProbeLink>)> {
    use aya::programs::links::FdLink;
    let errno = || std::io::Error::last_os_error().to_string();
    // SAFETY: unshare and mount take no pointers but the C strings below,
    // which live across the calls; they change this thread's mount
    // namespace only (CLONE_NEWNS unshares CLONE_FS for this thread).
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err((format!("unshare(CLONE_NEWNS): {}", errno()), links));
    }
    let root = c"/";
    // Nothing mounted here propagates to the namespace we came from.
    if unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    } != 0
    {
        return Err((format!("making mounts private: {}", errno()), links));
    }
    let fstype = c"bpf";
    let mut mounted = None;
    let mut last_error = String::new();
    for dir in RELEASE_MOUNT_POINTS {
        if !Path::new(dir).is_dir() {
            continue;
        }
        let c_dir = std::ffi::CString::new(dir).expect("no NUL in the constants");
        let rc = unsafe {
            libc::mount(
                fstype.as_ptr(),
                c_dir.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc == 0 {
            mounted = Some((dir, c_dir));
            break;
        }
        last_error = format!("mounting a bpffs on {dir}: {}", errno());
    }
    let Some((dir, c_dir)) = mounted else {
        return Err((last_error, links));
    };
    for (i, link) in links.into_iter().enumerate() {
        // A link without BPF link support (kernels before 5.15) is detached
        // as it is converted (dropped): waited for, as before.
        match FdLink::try_from(link) {
            // Pinned, then its fd closed: the pin holds the link.
            Ok(fd_link) => match fd_link.pin(format!("{dir}/l{i}")) {
                Ok(pinned) => drop(pinned),
                // The link was closed as usual (and waited for).
                Err(e) => tracing::debug!("pinning a link to release it: {e}"),
            },
            Err(e) => tracing::debug!("a link without BPF link support: {e}"),
        }
    }
    // Unmounting drops every pin: the kernel takes it from here.
    if unsafe { libc::umount2(c_dir.as_ptr(), libc::MNT_DETACH) } != 0 {
        // This thread's namespace goes with the thread: the pins then.
        tracing::debug!("unmounting the release bpffs on {dir}: {}", errno());
    }
    Ok(())
}

/// Threads a [`Detacher`] runs at most at once.
pub const MAX_DETACH_THREADS: usize = 32;

/// Detaches uprobe links off the caller's thread, many at once.
///
/// Detaching one link is closing its fd, and the kernel's release of a
/// uprobe's BPF link and perf event waits for ~5 RCU grace periods
/// (synchronize_rcu_tasks_trace in perf_event_detach_bpf_prog, then in
/// perf_uprobe_destroy, under the global event_mutex: uprobe_apply's
/// synchronize_rcu, uprobe_unregister_sync's tasks-trace and SRCU waits,
/// tracepoint_synchronize_unregister): ~0.1 s per link on a busy host, 6 links
/// a library.  One after the other that was 0.6 s per library, 21 s for 34.
/// Released from many threads at once, the waits outside event_mutex are
/// shared and the ones inside it are queued back to back; the caller only
/// waits as long as it chooses ([`Detacher::wait_idle`]).
pub type Detacher = DropPool<UProbeLink>;

/// Drops values on up to [`MAX_DETACH_THREADS`] threads at once (the
/// [`Detacher`], with any value whose drop blocks).
pub struct DropPool<T: Send + 'static> {
    shared: Arc<DetachShared<T>>,
}

impl<T: Send + 'static> Clone for DropPool<T> {
    fn clone(&self) -> Self {
        DropPool {
            shared: self.shared.clone(),
        }
    }
}

impl<T: Send + 'static> Default for DropPool<T> {
    fn default() -> Self {
        DropPool {
            shared: Arc::new(DetachShared {
                state: Mutex::new(DetachState {
                    queue: Vec::new(),
                    pending: 0,
                    threads: 0,
                    by_library: HashMap::new(),
                }),
                idle: Condvar::new(),
            }),
        }
    }
}

struct DetachShared<T> {
    state: Mutex<DetachState<T>>,
    idle: Condvar,
}

struct DetachState<T> {
    /// Values waiting for a thread, with their library's key.
    queue: Vec<(Option<(u64, u64)>, T)>,
    /// Links queued or being detached.
    pending: usize,
    threads: usize,
    /// Links queued or being detached, per library.
    by_library: HashMap<(u64, u64), usize>,
}

impl<T: Send + 'static> DropPool<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, DetachState<T>> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts detaching `links` (of the library `key`, if given) and returns
    /// at once.
    pub fn detach(&self, key: Option<(u64, u64)>, links: Vec<T>) {
        if links.is_empty() {
            return;
        }
        let spawn = {
            let mut s = self.lock();
            s.pending += links.len();
            if let Some(k) = key {
                *s.by_library.entry(k).or_default() += links.len();
            }
            s.queue.extend(links.into_iter().map(|l| (key, l)));
            let spawn = s
                .queue
                .len()
                .min(MAX_DETACH_THREADS.saturating_sub(s.threads));
            s.threads += spawn;
            spawn
        };
        for _ in 0..spawn {
            let me = self.clone();
            let started = std::thread::Builder::new()
                .name("detach".into())
                .spawn(move || me.work());
            if let Err(e) = started {
                tracing::debug!("no detach thread ({e}); the others take its share");
                let inline = {
                    let mut s = self.lock();
                    s.threads -= 1;
                    let none = s.threads == 0;
                    if none {
                        s.threads = 1;
                    }
                    none
                };
                if inline {
                    // Not a single thread: detach here (work() counts it as one).
                    self.work();
                    return;
                }
            }
        }
    }

    /// Detaches queued links until the queue is empty.
    fn work(&self) {
        loop {
            let next = {
                let mut s = self.lock();
                match s.queue.pop() {
                    Some(item) => item,
                    None => {
                        s.threads = s.threads.saturating_sub(1);
                        return;
                    }
                }
            };
            let (key, link) = next;
            // Closing the link's fd: the kernel's waits happen here.
            drop(link);
            let mut s = self.lock();
            s.pending -= 1;
            if let Some(k) = key {
                if let Some(n) = s.by_library.get_mut(&k) {
                    *n -= 1;
                    if *n == 0 {
                        s.by_library.remove(&k);
                    }
                }
            }
            if s.pending == 0 {
                self.shared.idle.notify_all();
            }
        }
    }

    /// Links not detached yet.
    pub fn pending(&self) -> usize {
        self.lock().pending
    }

    /// Whether probes of the library `key` are still being detached.
    pub fn is_detaching(&self, key: (u64, u64)) -> bool {
        self.lock().by_library.contains_key(&key)
    }

    /// Waits until every link handed over is detached, or `wait` passed;
    /// returns whether they all are.
    pub fn wait_idle(&self, wait: Duration) -> bool {
        let deadline = Instant::now().checked_add(wait);
        let mut s = self.lock();
        while s.pending > 0 {
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            if left.is_zero() {
                return false;
            }
            s = self
                .shared
                .idle
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_size_validation() {
        assert!(check_ring_size(4096).is_ok());
        assert!(check_ring_size(sensor_common::DEFAULT_RING_BUFFER_BYTES).is_ok());
        assert!(check_ring_size(0).is_err());
        assert!(check_ring_size(2048).is_err());
        assert!(check_ring_size(3 * 4096).is_err());
    }

    /// Stands for a link: its drop waits, as closing a uprobe link waits
    /// for the kernel.
    struct SlowDrop(Duration);

    impl Drop for SlowDrop {
        fn drop(&mut self) {
            std::thread::sleep(self.0);
        }
    }

    /// 40 detaches of 100 ms each: handed over at once, done in a fraction
    /// of the 4 s one after the other would take; the library is "being
    /// detached" until its last link is; a short wait says not done.
    #[test]
    fn a_drop_pool_detaches_many_at_once_and_says_when_it_is_done() {
        let pool: DropPool<SlowDrop> = DropPool::default();
        let key = (1, 2);
        let started = Instant::now();
        pool.detach(
            Some(key),
            (0..40)
                .map(|_| SlowDrop(Duration::from_millis(100)))
                .collect(),
        );
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "detach returns at once"
        );
        assert!(pool.is_detaching(key));
        assert!(!pool.is_detaching((1, 3)));
        assert!(!pool.wait_idle(Duration::from_millis(10)), "not done yet");
        assert!(pool.pending() > 0);
        assert!(pool.wait_idle(Duration::from_secs(5)));
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "took {took:?}");
        assert!(!pool.is_detaching(key));
        assert_eq!(pool.pending(), 0);
        // Idle threads are gone; a second batch starts new ones.
        pool.detach(None, vec![SlowDrop(Duration::ZERO)]);
        assert!(pool.wait_idle(Duration::from_secs(5)));
        assert!(pool.wait_idle(Duration::ZERO), "nothing pending");
    }
}
