//! Types shared by the eBPF programs (`sensor-ebpf`) and the userspace agent (`sensor`).
//!
//! Everything here is `#[repr(C)]` plain data: the kernel side writes it into the
//! ring buffer, userspace reads it back (and `--record` stores it verbatim).
//! With the `user` feature the types implement `aya::Pod` so they can be used
//! as map keys/values from userspace.
#![no_std]

/// Bytes of TLS plaintext carried by one ring-buffer event.  A larger SSL call is
/// split into several events of at most this many bytes each.
pub const CHUNK_SIZE: usize = 16 * 1024;

/// Bytes of one SSL call copied at most; the rest is counted as truncated and the
/// next event of that connection carries [`FLAG_LOST_BEFORE`].
pub const MAX_BYTES_PER_CALL: usize = 4 * 1024 * 1024;

/// Maximum number of chunks per call (the bounded loop in the eBPF program).
pub const MAX_CHUNKS_PER_CALL: usize = MAX_BYTES_PER_CALL / CHUNK_SIZE;

/// Default ring buffer size (bytes, power of two, multiple of the page size).
/// Overridable at load time (`sensor run --ring-buffer-bytes`).
pub const DEFAULT_RING_BUFFER_BYTES: u32 = 32 * 1024 * 1024;

/// Ring buffer fill level at which the eBPF side wakes userspace: the event
/// that brings the unread data past it forces a wake-up, every other event is
/// submitted without one and userspace polls on a short timer.  Waking the
/// reader this early (rather than at an eighth of the default ring) keeps its
/// batches short: nginx p99 ~540 against ~620 us (server only, 1 KiB).
pub const WAKEUP_THRESHOLD_BYTES: u64 = 256 * 1024;

/// Entries in the per-thread "call in flight" map and the per-connection state map.
pub const MAX_INFLIGHT_CALLS: u32 = 16 * 1024;
/// Slots of the in-flight array `SLOTS` by default (power of two): a thread
/// uses slot `tid % slots` when it is free, else the `INFLIGHT` map.
pub const INFLIGHT_SLOTS: u32 = 16 * 1024;
/// [`InflightSlot::state`] bit set while the owner is inside a call.
pub const SLOT_BUSY: u64 = 1 << 32;
pub const MAX_TRACKED_CONNECTIONS: u32 = 64 * 1024;

/// Direction of an SSL call, as seen by the probed process.
pub const DIR_READ: u8 = 0;
pub const DIR_WRITE: u8 = 1;

/// Event kinds.
/// Plaintext bytes of one SSL_read/SSL_write call (one chunk of it).
pub const KIND_DATA: u8 = 0;
/// The SSL object was freed (SSL_free): the connection is over.
pub const KIND_CLOSE: u8 = 1;

/// Event flags (bit set).
/// Bytes of this connection were lost before this event (ring buffer full or
/// per-call cap hit earlier): the stream has a hole before `data`.
pub const FLAG_LOST_BEFORE: u8 = 1 << 0;
/// This call transferred more than [`MAX_BYTES_PER_CALL`]; bytes past the cap were not copied.
pub const FLAG_CALL_TRUNCATED: u8 = 1 << 1;
/// Reading the user buffer failed (bpf_probe_read_user error); data is missing.
pub const FLAG_READ_FAILED: u8 = 1 << 2;

/// Indexes of the per-CPU counters array (`COUNTERS` map) the eBPF side keeps.
pub const CTR_EVENTS: u32 = 0;
/// Events that could not be reserved in the ring buffer (it was full).
pub const CTR_RINGBUF_FULL: u32 = 1;
/// Bytes not copied because of the ring buffer being full.
pub const CTR_LOST_BYTES: u32 = 2;
/// Bytes past [`MAX_BYTES_PER_CALL`].
pub const CTR_TRUNCATED_BYTES: u32 = 3;
/// Returns without a matching entry (probe attached mid-call, or map full).
pub const CTR_ORPHAN_RETURNS: u32 = 4;
/// Failed `bpf_probe_read_user`.
pub const CTR_READ_FAILURES: u32 = 5;
/// Entries dropped because the in-flight map was full.
pub const CTR_INFLIGHT_FULL: u32 = 6;
/// SSL calls seen at their entry (every mode, including count-only).
pub const CTR_CALLS: u32 = 7;
/// Calls whose thread's in-flight slot was busy with another thread's call
/// (they went through the `INFLIGHT` map).
pub const CTR_SLOT_BUSY: u32 = 8;
/// Calls of connections userspace put out of scope (`MUTED`): counted, not
/// copied.
pub const CTR_MUTED_CALLS: u32 = 9;
pub const NUM_COUNTERS: u32 = 10;

/// Name of the eBPF global the loader sets to 1 for count-only probes
/// (they count calls and copy nothing: the benchmark floor).
pub const GLOBAL_COUNT_ONLY: &str = "COUNT_ONLY";

/// Name of the eBPF global the loader sets to the number of in-flight slots
/// minus one (`SLOTS` gets that many entries; a power of two).
pub const GLOBAL_SLOT_MASK: &str = "SLOT_MASK";

/// Header of every ring-buffer event; `data_len` bytes of plaintext follow it.
///
/// The layout is part of the recording format (`--record`), see
/// [`RECORDING_VERSION`]: change it only together with that version.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventHeader {
    /// `SSL*` of the connection in the process' address space.
    pub ssl: u64,
    /// `bpf_get_current_pid_tgid()`: tgid in the upper 32 bits, tid in the lower.
    pub pid_tgid: u64,
    /// `bpf_ktime_get_ns()` at the return of the call (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// Sequence number of the SSL call: all chunks of one call share it (and
    /// the thread: `pid_tgid`), and the thread's other calls have other ones
    /// (until it wraps).  Increasing, but not by 1 per call of the thread: a
    /// slot's counter goes on across the threads that own it in turn.  0 for
    /// a close.
    pub call_seq: u32,
    /// Bytes the call transferred in total (may exceed what was copied).
    pub call_len: u32,
    /// Offset of this chunk within the call.
    pub offset: u32,
    /// Plaintext bytes following this header.
    pub data_len: u32,
    /// Bytes of this event's direction lost on this connection just before this
    /// event (when `FLAG_LOST_BEFORE`): ring buffer full, or past the per-call cap.
    pub lost_before: u32,
    /// `KIND_*`.
    pub kind: u8,
    /// `DIR_*`.
    pub direction: u8,
    /// `FLAG_*`.
    pub flags: u8,
    /// Which probe site produced it (`SITE_*`), for diagnostics.
    pub site: u8,
    /// `bpf_get_current_comm()`.
    pub comm: [u8; 16],
}

/// Probe sites.
pub const SITE_EXPORTED: u8 = 0;
pub const SITE_INTERNAL: u8 = 1;

pub const EVENT_HEADER_LEN: usize = core::mem::size_of::<EventHeader>();

/// The largest event the kernel side emits.
pub const MAX_EVENT_LEN: usize = EVENT_HEADER_LEN + CHUNK_SIZE;

/// Magic and version at the start of a `--record` file.
pub const RECORDING_MAGIC: &[u8; 8] = b"SENSREC\0";
pub const RECORDING_VERSION: u16 = 2;

/// Per-thread state: the call the thread is in (saved at the entry of an SSL
/// call, read at its return), and what its events need that would otherwise
/// cost a helper call per event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct InflightCall {
    /// `SSL*` of the call in flight; 0 once its return was handled.
    pub ssl: u64,
    /// User buffer pointer.
    pub buf: u64,
    /// `size_t *` where `_ex` functions store the byte count (0 for non-`_ex`).
    pub out_len_ptr: u64,
    pub direction: u8,
    pub site: u8,
    pub _pad: [u8; 2],
    /// Number of the last call that produced data ([`EventHeader::call_seq`]).
    pub call_seq: u32,
    /// The thread's `comm`, taken when the entry is created and again every
    /// [`COMM_REFRESH_CALLS`] calls (`bpf_get_current_comm` per event was
    /// ~70 ns of ~590 in the return probe).
    pub comm: [u8; 16],
}

/// One slot of the in-flight array: an array lookup is ~40 ns cheaper than a
/// hash lookup, and the entry and return probes each make one per call.
///
/// `state` is the owner's tid, with [`SLOT_BUSY`] while it is inside a call;
/// 0 when nobody owns the slot.  A thread claims a slot only with a
/// compare-and-swap from an idle state (its own, another thread's, or 0), and
/// only the owner of a busy slot touches `call` or makes it idle again, so two
/// threads whose tids share a slot never write it at once: the loser of a race,
/// or a thread finding the slot busy, uses the `INFLIGHT` hash map instead.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct InflightSlot {
    pub state: u64,
    /// `pid_tgid` of the owner (which process the slot belongs to, for userspace).
    pub pid_tgid: u64,
    pub call: InflightCall,
}

/// A thread's `comm` is taken again after this many of its calls (power of two),
/// so a thread renamed after its first TLS call shows its new name soon.
pub const COMM_REFRESH_CALLS: u32 = 1024;

/// Key of per-connection state in the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnKey {
    pub tgid: u32,
    pub _pad: u32,
    pub ssl: u64,
}

/// Per-connection state in the kernel: only for connections with bytes lost
/// and not yet announced (`CONNS`), so the common path needs no lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnState {
    /// Bytes the process read that were not delivered since the last read event
    /// that got through.  Kept per direction: a hole belongs to one byte stream,
    /// and the next event of *that* stream announces it (`lost_before`).
    pub lost_read: u32,
    /// Likewise for bytes the process wrote.
    pub lost_write: u32,
}

impl ConnState {
    /// The unannounced bytes of one direction (`DIR_READ` or `DIR_WRITE`).
    #[inline(always)]
    pub fn lost_mut(&mut self, direction: u8) -> &mut u32 {
        if direction == DIR_WRITE {
            &mut self.lost_write
        } else {
            &mut self.lost_read
        }
    }
}

/// Process lifecycle notifications (separate small ring buffer `PROC_EVENTS`):
/// an exec makes userspace look at that process' libraries soon, an exit of a
/// thread-group leader makes it report the process gone.
pub const PROC_EXEC: u32 = 1;
pub const PROC_EXIT: u32 = 2;
/// Size of the `PROC_EVENTS` ring buffer (bytes).
pub const PROC_EVENTS_BYTES: u32 = 256 * 1024;
/// `PROC_EVENTS` fill level from which notifications wake userspace (below,
/// it polls).
pub const PROC_WAKEUP_THRESHOLD_BYTES: u64 = PROC_EVENTS_BYTES as u64 / 4;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcEvent {
    pub tgid: u32,
    /// `PROC_EXEC` or `PROC_EXIT`.
    pub kind: u32,
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::ProcEvent {}
    unsafe impl aya::Pod for super::InflightCall {}
    unsafe impl aya::Pod for super::InflightSlot {}
    unsafe impl aya::Pod for super::ConnKey {}
    unsafe impl aya::Pod for super::ConnState {}
    unsafe impl aya::Pod for super::EventHeader {}
}
