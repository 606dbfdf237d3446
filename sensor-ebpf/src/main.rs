//! eBPF side of the sensor: uprobes on OpenSSL's read/write functions.
//!
//! Small and dumb on purpose: the entry probe remembers where the plaintext is,
//! the return probe copies the bytes actually transferred into the ring buffer
//! (in chunks of `CHUNK_SIZE`, at most `MAX_BYTES_PER_CALL` per call) and counts
//! everything it could not copy.  No HTTP parsing here.
//!
//! Every helper call costs here (tens of ns with this kernel's mitigations),
//! so the return probe makes as few as it can: the bytes are read straight
//! into a reserved ring-buffer record (one copy), the thread's comm and call
//! number live in its in-flight entry, and the per-connection map is looked
//! up only while some connection has a hole to announce.
//!
//! Two families of entry probes share one return probe:
//! - exported: `SSL_write`/`SSL_read` (3 args) and `SSL_write_ex`/`SSL_read_ex` (4 args);
//! - internal: `ssl_write_internal`/`ssl_read_internal` `(SSL *s, void *buf, size_t num,
//!   size_t *out)`, reached from all four exported functions and much cheaper to probe
//!   (their first instruction is emulated instead of single-stepped); since OpenSSL 3.3
//!   `ssl_write_internal` takes `uint64_t flags` before `out`.
//!
//! Userspace attaches one family per library, never both.
#![no_std]
#![no_main]
// `atomic_xadd`, `atomic_cxchg`: core's AtomicU64 has no fetch_add nor
// compare_exchange on the BPF target.
#![allow(internal_features)]
#![feature(core_intrinsics, adt_const_params, asm_experimental_arch)]

use core::hint::black_box;
use core::intrinsics::{atomic_cxchg, atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    cty::c_void,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user, generated},
    macros::{map, raw_tracepoint, uprobe, uretprobe},
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
    programs::{ProbeContext, RawTracePointContext, RetProbeContext},
};
use sensor_common::{
    ConnKey, ConnState, EventHeader, InflightCall, InflightSlot, ProcEvent, CHUNK_SIZE,
    COMM_REFRESH_CALLS, CTR_CALLS, CTR_EVENTS, CTR_INFLIGHT_FULL, CTR_LOST_BYTES, CTR_MUTED_CALLS,
    CTR_ORPHAN_RETURNS, CTR_READ_FAILURES, CTR_RINGBUF_FULL, CTR_SLOT_BUSY, CTR_TRUNCATED_BYTES,
    DEFAULT_RING_BUFFER_BYTES, DIR_READ, DIR_WRITE, EVENT_HEADER_LEN, FLAG_CALL_TRUNCATED,
    FLAG_LOST_BEFORE, FLAG_READ_FAILED, INFLIGHT_SLOTS, KIND_CLOSE, KIND_DATA, MAX_BYTES_PER_CALL,
    MAX_CHUNKS_PER_CALL, MAX_INFLIGHT_CALLS, MAX_TRACKED_CONNECTIONS, NUM_COUNTERS,
    PROC_EVENTS_BYTES, PROC_EXEC, PROC_EXIT, PROC_WAKEUP_THRESHOLD_BYTES, SITE_EXPORTED,
    SITE_INTERNAL, SLOT_BUSY, WAKEUP_THRESHOLD_BYTES,
};

/// Set to 1 by the loader (`EbpfLoader::set_global`) for count-only probes.
#[no_mangle]
static COUNT_ONLY: u8 = 0;

/// Entries of `SLOTS` minus one (a power of two minus one), set by the loader.
#[no_mangle]
static SLOT_MASK: u32 = INFLIGHT_SLOTS - 1;

/// Top bit of `call_seq` in `INFLIGHT` entries: slots count in the low 31
/// bits and map entries with this bit set, so a thread whose calls go through
/// both never gets the same number twice.
const CALL_SEQ_MAP: u32 = 1 << 31;

/// Index of the thread's slot in `SLOTS`.
#[inline(always)]
fn slot_index(tid: u32) -> u32 {
    // Volatile so the compiler keeps the load (the loader patches the value).
    tid & unsafe { core::ptr::read_volatile(&SLOT_MASK) }
}

#[map]
static RINGBUF: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BUFFER_BYTES, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

/// The call each thread is in (between entry and return), by tid: the fast
/// path.  A thread whose slot is busy with another thread's call (tids that
/// share a slot) uses `INFLIGHT` for that call; see `InflightSlot`.
#[map]
static SLOTS: Array<InflightSlot> = Array::with_max_entries(INFLIGHT_SLOTS, 0);

/// The call each thread is in (between entry and return), by `pid_tgid`, for
/// the calls that did not get their thread's slot in `SLOTS`.
///
/// A thread's entry is created by its first probed call and then rewritten in
/// place on every later call (entry) and marked consumed (`ssl = 0`, return):
/// two lookups per call instead of an insert and a delete.  Map updates and
/// deletes take a bucket lock with interrupts off, and were ~290 ns of the
/// ~1,000 ns that full capture added per call (perf of `evcost`).  Entries go
/// when their thread exits (`proc_exit`); LRU so that, should more threads
/// than `MAX_INFLIGHT_CALLS` use TLS at once, the oldest idle ones make room
/// instead of new threads going uncaptured.
#[map]
static INFLIGHT: LruHashMap<u64, InflightCall> =
    LruHashMap::with_max_entries(MAX_INFLIGHT_CALLS, 0);

/// Bytes lost and not yet announced, per connection.  Only connections with
/// such a hole have an entry, so the common path looks nothing up here (see
/// `HOLES`).
#[map]
static CONNS: LruHashMap<ConnKey, ConnState> =
    LruHashMap::with_max_entries(MAX_TRACKED_CONNECTIONS, 0);

/// Connections userspace put out of scope (`--role`): their calls are
/// counted and not copied.  Userspace adds a connection once its first bytes
/// show its role; `SSL_free` takes it out.  LRU: a process that exits
/// without freeing leaves entries that age out.
#[map]
static MUTED: LruHashMap<ConnKey, u8> = LruHashMap::with_max_entries(MAX_TRACKED_CONNECTIONS, 0);

/// When each connection was last freed (`SSL_free`, `bpf_ktime_get_ns`):
/// userspace mutes a connection some time after its first bytes, and by
/// then it may be gone and its `SSL*` reused by a new connection, which
/// must not inherit the mute.  After putting an entry in `MUTED`, userspace
/// looks here and takes it back if the connection was freed after it began
/// (the map operations order the two sides).  Written once per connection.
#[map]
static FREED: LruHashMap<ConnKey, u64> = LruHashMap::with_max_entries(MAX_TRACKED_CONNECTIONS, 0);

/// `MUTING[0]`: 1 while userspace may have entries in `MUTED` (a `--role`
/// other than `any`), so that without one no call pays the lookup.
#[map]
static MUTING: Array<u64> = Array::with_max_entries(1, 0);

#[inline(always)]
fn muting() -> bool {
    match MUTING.get_ptr(0) {
        Some(n) => unsafe { core::ptr::read_volatile(n) != 0 },
        None => false,
    }
}

#[inline(always)]
fn is_muted(key: &ConnKey) -> bool {
    muting() && unsafe { MUTED.get(key) }.is_some()
}

/// `HOLES[0]`: entries put into `CONNS` minus entries taken out.  While it
/// is 0 no connection has a hole, and an event needs no `CONNS` lookup (one
/// hash lookup per call, ~40 ns of the return probe).  It is a hint that errs
/// on the safe side: an entry the LRU evicts is never subtracted, which only
/// brings back the lookup.
#[map]
static HOLES: Array<u64> = Array::with_max_entries(1, 0);

// Ring-buffer records have constant sizes (the verifier wants a constant
// `bpf_ringbuf_reserve` size); the data is read straight into the record, so
// it is copied once.  A chunk shorter than CHUNK_SIZE goes into the smallest
// power-of-two size class that holds it: up to half of a record is padding,
// which is never written nor read (the header's data_len is the length).
const _: () = assert!(CHUNK_SIZE.is_power_of_two());
const _: () = assert!(EVENT_HEADER_LEN % 8 == 0);
const _: () = assert!(CHUNK_SIZE == 16 * 1024, "size classes below assume 16 KiB");
const _: () = assert!(COMM_REFRESH_CALLS.is_power_of_two());
const _: () = assert!(MAX_CHUNKS_PER_CALL.is_power_of_two());

#[inline(always)]
fn count(idx: u32, n: u64) {
    if let Some(c) = COUNTERS.get_ptr_mut(idx) {
        // Per-CPU slot: no other writer while this program runs on this CPU.
        unsafe { *c += n };
    }
}

#[inline(always)]
fn count_only() -> bool {
    // Volatile so the compiler keeps the load (the loader patches the value).
    unsafe { core::ptr::read_volatile(&COUNT_ONLY) != 0 }
}

#[inline(always)]
fn take_comm(comm: &mut [u8; 16]) {
    // Written in place: going through `bpf_get_current_comm()`'s returned
    // array cost a byte-by-byte copy and three memset calls.
    unsafe { generated::bpf_get_current_comm(comm.as_mut_ptr() as *mut c_void, 16) };
}

#[inline(always)]
fn on_entry(ctx: &ProbeContext, direction: u8, site: u8, out_arg: Option<usize>) -> u32 {
    count(CTR_CALLS, 1);
    if count_only() {
        return 0;
    }
    let ssl: u64 = ctx.arg(0).unwrap_or(0);
    let buf: u64 = ctx.arg(1).unwrap_or(0);
    let out_len_ptr: u64 = out_arg.map_or(0, |n| ctx.arg(n).unwrap_or(0));
    if ssl == 0 || buf == 0 || (out_arg.is_some() && out_len_ptr == 0) {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let slot = claim_slot(pid_tgid);
    if !slot.is_null() {
        // SAFETY: a busy slot is written by its owner only, this thread.
        let call = unsafe { &mut (*slot).call };
        (call.ssl, call.buf, call.out_len_ptr) = (ssl, buf, out_len_ptr);
        (call.direction, call.site) = (direction, site);
        return 0;
    }
    count(CTR_SLOT_BUSY, 1);
    match INFLIGHT.get_ptr_mut(&pid_tgid) {
        // Only this thread ever touches its entry: plain stores are enough
        // (and keep its call_seq and comm).
        Some(slot) => unsafe {
            (*slot).ssl = ssl;
            (*slot).buf = buf;
            (*slot).out_len_ptr = out_len_ptr;
            (*slot).direction = direction;
            (*slot).site = site;
        },
        None => {
            let mut call = InflightCall {
                ssl,
                buf,
                out_len_ptr,
                direction,
                site,
                _pad: [0; 2],
                call_seq: CALL_SEQ_MAP,
                comm: [0; 16],
            };
            take_comm(&mut call.comm);
            if INFLIGHT.insert(&pid_tgid, &call, 0).is_err() {
                count(CTR_INFLIGHT_FULL, 1);
            }
        }
    }
    0
}

#[uprobe]
pub fn ssl_write_entry(ctx: ProbeContext) -> u32 {
    on_entry(&ctx, DIR_WRITE, SITE_EXPORTED, None)
}

#[uprobe]
pub fn ssl_read_entry(ctx: ProbeContext) -> u32 {
    on_entry(&ctx, DIR_READ, SITE_EXPORTED, None)
}

#[uprobe]
pub fn ssl_write_ex_entry(ctx: ProbeContext) -> u32 {
    on_entry(&ctx, DIR_WRITE, SITE_EXPORTED, Some(3))
}

#[uprobe]
pub fn ssl_read_ex_entry(ctx: ProbeContext) -> u32 {
    on_entry(&ctx, DIR_READ, SITE_EXPORTED, Some(3))
}

#[uprobe]
pub fn ssl_write_internal_entry(ctx: ProbeContext) -> u32 {
    on_entry(&ctx, DIR_WRITE, SITE_INTERNAL, Some(3))
}

/// OpenSSL 3.3 and later: `ssl_write_internal(s, buf, num, flags, written)`.
#[uprobe]
pub fn ssl_write_internal_flags_entry(ctx: ProbeContext) -> u32 {
    on_entry(&ctx, DIR_WRITE, SITE_INTERNAL, Some(4))
}

#[uprobe]
pub fn ssl_read_internal_entry(ctx: ProbeContext) -> u32 {
    on_entry(&ctx, DIR_READ, SITE_INTERNAL, Some(3))
}

/// This thread's slot, claimed for a call (made busy), or null when another
/// thread holds it busy or won the race for it.
#[inline(always)]
fn claim_slot(pid_tgid: u64) -> *mut InflightSlot {
    let tid = pid_tgid as u32;
    let Some(slot) = SLOTS.get_ptr_mut(slot_index(tid)) else {
        return core::ptr::null_mut();
    };
    let state = unsafe { &raw mut (*slot).state };
    let seen = unsafe { core::ptr::read_volatile(state) };
    let mine = tid as u64;
    if seen == mine | SLOT_BUSY {
        // Its previous call never returned (a return probe can be skipped,
        // e.g. by longjmp): the new call replaces it, as in `INFLIGHT`.
        return slot;
    }
    if seen & SLOT_BUSY != 0 || !cas(state, seen, mine | SLOT_BUSY) {
        return core::ptr::null_mut();
    }
    if seen != mine {
        // Taken over: this thread's comm.  call_seq goes on from the previous
        // owner's, so it never repeats for a thread that comes back to it.
        unsafe {
            (*slot).pid_tgid = pid_tgid;
            take_comm(&mut (*slot).call.comm);
        }
    }
    slot
}

/// Compare-and-swap of a slot state; true when it was `old` and is now `new`.
#[inline(always)]
fn cas(state: *mut u64, old: u64, new: u64) -> bool {
    unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::AcqRel }, { AtomicOrdering::Relaxed }>(
            state, old, new,
        )
        .1
    }
}

/// The thread's in-flight state goes (exit, exec): its slot back to nobody
/// (another thread may take it, and this thread's next call takes its comm
/// again) and its fallback map entry.
#[inline(always)]
fn forget_thread(pid_tgid: u64) {
    release_slot(pid_tgid);
    let _ = INFLIGHT.remove(&pid_tgid);
}

#[inline(always)]
fn release_slot(pid_tgid: u64) {
    let tid = pid_tgid as u32;
    if let Some(slot) = SLOTS.get_ptr_mut(slot_index(tid)) {
        let state = unsafe { &raw mut (*slot).state };
        let seen = unsafe { core::ptr::read_volatile(state) };
        if seen & !SLOT_BUSY == tid as u64 {
            let _ = cas(state, seen, 0);
        }
    }
}

/// Return of any of the probed functions.
#[uretprobe]
pub fn ssl_return(ctx: RetProbeContext) -> u32 {
    if count_only() {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    // All four functions return int: > 0 means success.
    let ret: i64 = ctx.ret::<u64>() as i32 as i64;
    let tid = pid_tgid as u32;
    if let Some(slot) = SLOTS.get_ptr_mut(slot_index(tid)) {
        let state = unsafe { &raw mut (*slot).state };
        if unsafe { core::ptr::read_volatile(state) } == tid as u64 | SLOT_BUSY {
            // SAFETY: busy and ours: nobody else writes the slot until the
            // release below.
            complete_call(unsafe { &mut (*slot).call }, ret, pid_tgid);
            // Everything above is done before the slot is free.  The BPF
            // backend selects neither atomic stores nor fences: an empty asm
            // statement keeps the compiler from moving memory accesses past
            // it, and the CPU keeps stores in order (x86).
            unsafe { core::arch::asm!("", options(nostack, preserves_flags)) };
            unsafe { core::ptr::write_volatile(state, tid as u64) };
            return 0;
        }
    }
    let Some(entry) = INFLIGHT.get_ptr_mut(&pid_tgid) else {
        count(CTR_ORPHAN_RETURNS, 1);
        return 0;
    };
    // SAFETY: map values stay valid for the whole program run; only this
    // thread writes its entry.
    let entry = unsafe { &mut *entry };
    if entry.ssl == 0 {
        // Consumed already: the entry probe skipped this call (bad arguments).
        count(CTR_ORPHAN_RETURNS, 1);
        return 0;
    }
    complete_call(entry, ret, pid_tgid);
    entry.ssl = 0;
    0
}

/// The call in `entry` returned `ret`: the bytes it transferred, if any, go
/// to the ring buffer, under the call's number (and, now and then, a fresh
/// comm).
#[inline(always)]
fn complete_call(entry: &mut InflightCall, ret: i64, pid_tgid: u64) {
    if ret <= 0 {
        return;
    }
    let key = ConnKey {
        tgid: (pid_tgid >> 32) as u32,
        _pad: 0,
        ssl: entry.ssl,
    };
    if is_muted(&key) {
        count(CTR_MUTED_CALLS, 1);
        return;
    }
    let total: u64 = if entry.out_len_ptr != 0 {
        match unsafe { bpf_probe_read_user(entry.out_len_ptr as *const u64) } {
            Ok(n) => n,
            Err(_) => {
                count(CTR_READ_FAILURES, 1);
                return;
            }
        }
    } else {
        ret as u64
    };
    if total == 0 {
        return;
    }
    entry.call_seq =
        (entry.call_seq & CALL_SEQ_MAP) | (entry.call_seq.wrapping_add(1) & !CALL_SEQ_MAP);
    if entry.call_seq & (COMM_REFRESH_CALLS - 1) == 0 {
        take_comm(&mut entry.comm);
    }
    emit_call(entry, &key, pid_tgid, total);
}

/// Pointers to this CPU's counters, looked up once per call (not per chunk).
struct Ctrs {
    events: *mut u64,
    ringbuf_full: *mut u64,
    lost_bytes: *mut u64,
    read_failures: *mut u64,
}

#[inline(always)]
fn ctrs() -> Option<Ctrs> {
    Some(Ctrs {
        events: COUNTERS.get_ptr_mut(CTR_EVENTS)?,
        ringbuf_full: COUNTERS.get_ptr_mut(CTR_RINGBUF_FULL)?,
        lost_bytes: COUNTERS.get_ptr_mut(CTR_LOST_BYTES)?,
        read_failures: COUNTERS.get_ptr_mut(CTR_READ_FAILURES)?,
    })
}

/// 1 when `x` (a helper's return value) is negative, else 0 — without a branch.
#[inline(always)]
fn is_negative(x: i64) -> u64 {
    (x as u64) >> 63
}

/// `BPF_RB_FORCE_WAKEUP` for the record of `record_bytes` that brought the
/// unread data past the threshold, and above it at most once per
/// `REWAKE_NS`; else `BPF_RB_NO_WAKEUP`.  Forcing a wake-up on every record
/// above the threshold was a self-IPI per event until the reader caught up
/// (64 KiB nginx responses: return probe 1,250 -> 1,056 ns per call without
/// it).  The re-wake is for crossings missed in a race between CPUs (two
/// records reserved at once, each seeing the other's bytes): left to the
/// 5 ms poll, a 1 MiB ring overflowed at max load (26 % of events lost, 15 %
/// with a wake-up per event, 17 % with this re-wake).
#[inline(always)]
fn ring_flags(record_bytes: u64, now_ns: u64) -> u64 {
    let avail = RINGBUF.query(BPF_RB_AVAIL_DATA as u64);
    if avail < WAKEUP_THRESHOLD_BYTES {
        return BPF_RB_NO_WAKEUP as u64;
    }
    let Some(last) = LAST_WAKEUP.get_ptr_mut(0) else {
        return BPF_RB_FORCE_WAKEUP as u64;
    };
    // The ring counts an 8-byte header per record.
    let crossed = avail < WAKEUP_THRESHOLD_BYTES + record_bytes + 8;
    // SAFETY: map value, valid for the program run; racing stores between
    // CPUs only cost an extra (or a later) wake-up.
    unsafe {
        if crossed || now_ns.wrapping_sub(*last) >= REWAKE_NS {
            *last = now_ns;
            return BPF_RB_FORCE_WAKEUP as u64;
        }
    }
    BPF_RB_NO_WAKEUP as u64
}

/// Above the wake-up threshold, the reader is woken again after this long.
const REWAKE_NS: u64 = 500_000;

/// `bpf_ktime_get_ns()` of the last forced wake-up of the data reader.
#[map]
static LAST_WAKEUP: Array<u64> = Array::with_max_entries(1, 0);

/// The hint in `HOLES[0]`: some connection may have an entry in `CONNS`.
#[inline(always)]
fn holes_possible() -> bool {
    match HOLES.get_ptr(0) {
        Some(n) => unsafe { core::ptr::read_volatile(n) != 0 },
        None => true,
    }
}

#[inline(always)]
fn holes_add(delta: u64) {
    if let Some(n) = HOLES.get_ptr_mut(0) {
        // Shared by all CPUs: an atomic add (BPF_ATOMIC | BPF_ADD; the
        // result is unused, so no fetch variant is needed).
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(n, delta) };
    }
}

/// Remembers `lost` unannounced bytes of one direction of a connection
/// (`lost_read`, `lost_write`) in `CONNS`, or forgets the entry when both are 0.
#[inline(always)]
fn store_hole(key: &ConnKey, entry: *mut ConnState, direction: u8, lost: u32) {
    match unsafe { entry.as_mut() } {
        // SAFETY: map values stay valid for the whole program run.
        Some(state) => {
            *state.lost_mut(direction) = lost;
            if state.lost_read == 0 && state.lost_write == 0 && CONNS.remove(key).is_ok() {
                holes_add(u64::MAX); // -1
            }
        }
        None if lost != 0 => {
            let mut state = ConnState::default();
            *state.lost_mut(direction) = lost;
            if CONNS.insert(key, &state, 0).is_ok() {
                holes_add(1);
            }
        }
        None => {}
    }
}

/// Copies one call's plaintext into the ring buffer, chunk by chunk (`call`
/// carries this call's number and the thread's comm).
#[inline(always)]
fn emit_call(call: &InflightCall, key: &ConnKey, pid_tgid: u64, total: u64) {
    let Some(ctr) = ctrs() else {
        return;
    };
    // A null pointer, not an Option: LLVM stores an Option's undefined
    // payload, and the verifier refuses to read an uninitialised register.
    let entry: *mut ConnState = if holes_possible() {
        CONNS.get_ptr_mut(key).unwrap_or(core::ptr::null_mut())
    } else {
        core::ptr::null_mut()
    };
    // Holes are tracked per direction: a hole in the responses must not be
    // announced on the next request (that stream is intact).
    let mut pending: u32 = if entry.is_null() {
        0
    } else {
        // SAFETY: map values stay valid for the whole program run.
        unsafe { *(*entry).lost_mut(call.direction) }
    };
    let pending_before = pending;

    let mut flags = 0u8;
    let copied_total = if total > MAX_BYTES_PER_CALL as u64 {
        let over = total - MAX_BYTES_PER_CALL as u64;
        count(CTR_TRUNCATED_BYTES, over);
        flags |= FLAG_CALL_TRUNCATED;
        MAX_BYTES_PER_CALL as u64
    } else {
        total
    };

    let hdr = EventHeader {
        ssl: call.ssl,
        pid_tgid,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        call_seq: call.call_seq,
        call_len: if total > u32::MAX as u64 {
            u32::MAX
        } else {
            total as u32
        },
        offset: 0,
        data_len: 0,
        lost_before: 0,
        kind: KIND_DATA,
        direction: call.direction,
        flags,
        site: call.site,
        comm: call.comm,
    };

    if copied_total <= CHUNK_SIZE as u64 {
        // The common case: one event, in the smallest record that holds it.
        let (buf, p, len) = (call.buf, &mut pending, copied_total);
        match copied_total {
            0..=128 => emit_chunk::<128>(&hdr, p, &ctr, buf, 0, len),
            129..=256 => emit_chunk::<256>(&hdr, p, &ctr, buf, 0, len),
            257..=512 => emit_chunk::<512>(&hdr, p, &ctr, buf, 0, len),
            513..=1024 => emit_chunk::<1024>(&hdr, p, &ctr, buf, 0, len),
            1025..=2048 => emit_chunk::<2048>(&hdr, p, &ctr, buf, 0, len),
            2049..=4096 => emit_chunk::<4096>(&hdr, p, &ctr, buf, 0, len),
            4097..=8192 => emit_chunk::<8192>(&hdr, p, &ctr, buf, 0, len),
            _ => emit_chunk::<CHUNK_SIZE>(&hdr, p, &ctr, buf, 0, len),
        }
    } else {
        // Chunks of CHUNK_SIZE, the last one shorter but in a full-size record.
        // `bpf_loop` has the verifier check one chunk once, instead of walking
        // every iteration of a bounded loop with every outcome of the ring
        // buffer's reservations (which passes its 1M-instruction limit).
        let mut job = ChunkJob {
            hdr,
            buf: call.buf,
            copied_total,
            pending,
        };
        unsafe {
            generated::bpf_loop(
                copied_total.div_ceil(CHUNK_SIZE as u64) as u32,
                emit_nth_chunk as *mut c_void,
                &mut job as *mut ChunkJob as *mut c_void,
                0,
            )
        };
        pending = job.pending;
    }
    if copied_total < total {
        // Bytes past the cap are a hole before the connection's next event.
        let over = total - copied_total;
        let over = if over > u32::MAX as u64 {
            u32::MAX
        } else {
            over as u32
        };
        pending = pending.saturating_add(over);
    }
    if pending != pending_before {
        store_hole(key, entry, call.direction, pending);
    }
}

/// A call of more than one chunk, for `emit_nth_chunk`.
#[repr(C)]
struct ChunkJob {
    hdr: EventHeader,
    buf: u64,
    copied_total: u64,
    pending: u32,
}

/// Always 0, but the verifier cannot know: read from a map nobody writes.
#[map]
static ZERO: Array<u64> = Array::with_max_entries(1, 0);

/// `x`, as a value the verifier knows nothing about.  The callback below is
/// verified again for as long as what it leaves in its `ChunkJob` changes; a
/// hole that grows by a known 16 KiB per lost chunk would change every time.
#[inline(always)]
fn opaque(x: u32) -> u32 {
    match ZERO.get_ptr(0) {
        Some(z) => x | unsafe { core::ptr::read_volatile(z) } as u32,
        None => x,
    }
}

/// `bpf_loop` callback: chunk `index` of a [`ChunkJob`].
extern "C" fn emit_nth_chunk(index: u64, job: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes the ChunkJob given to it, on the caller's stack.
    let job = unsafe { &mut *(job as *mut ChunkJob) };
    let Some(ctr) = ctrs() else {
        return 1;
    };
    let offset = (index & (MAX_CHUNKS_PER_CALL as u64 - 1)) * CHUNK_SIZE as u64;
    if offset >= job.copied_total {
        return 1;
    }
    let rest = job.copied_total - offset;
    let len = if rest < CHUNK_SIZE as u64 {
        rest
    } else {
        CHUNK_SIZE as u64
    };
    let mut pending = job.pending;
    emit_chunk::<CHUNK_SIZE>(&job.hdr, &mut pending, &ctr, job.buf, offset, len);
    job.pending = opaque(pending);
    0
}

/// A record of `size` bytes (a constant once inlined, as the verifier wants)
/// that starts with an event header; null when the ring buffer is full.
#[inline(always)]
fn reserve_record(size: usize) -> *mut EventHeader {
    unsafe {
        generated::bpf_ringbuf_reserve(core::ptr::addr_of!(RINGBUF) as *mut c_void, size as u64, 0)
    }
    .cast()
}

/// One event of `len` (1..=N) bytes at `buf + offset`, in a record with room
/// for N.  Lost when the ring buffer is full: counted, and added to the hole
/// the connection's next event announces.
#[inline(always)]
fn emit_chunk<const N: usize>(
    hdr: &EventHeader,
    lost_pending: &mut u32,
    ctr: &Ctrs,
    buf: u64,
    offset: u64,
    len: u64,
) {
    // Bounded for the verifier: 1..=N (black_box keeps the mask).
    let len = ((black_box(len) - 1) & (N as u64 - 1)) + 1;
    let pending = *lost_pending as u64;
    let rec = reserve_record(EVENT_HEADER_LEN + N);
    let mut delivered: u64 = 0;
    if !rec.is_null() {
        let rc = unsafe {
            generated::bpf_probe_read_user(
                (rec as *mut u8).add(EVENT_HEADER_LEN) as *mut c_void,
                len as u32,
                (buf + offset) as *const c_void,
            )
        };
        let read_failed = is_negative(rc);
        // 1 when pending > 0 (pending < 2^32).
        let has_pending = (pending + 0xffff_ffff) >> 32;
        // SAFETY: the record has room for the header (8-byte aligned) and N bytes.
        unsafe {
            rec.write(EventHeader {
                offset: offset as u32,
                // A failed read carries no data (data_len 0) and FLAG_READ_FAILED.
                data_len: (len & read_failed.wrapping_sub(1)) as u32,
                lost_before: pending as u32,
                flags: hdr.flags
                    | (has_pending as u8 * FLAG_LOST_BEFORE)
                    | (read_failed as u8 * FLAG_READ_FAILED),
                ..*hdr
            });
            generated::bpf_ringbuf_submit(
                rec as *mut c_void,
                ring_flags((EVENT_HEADER_LEN + N) as u64, hdr.ts_ns),
            );
            *ctr.read_failures += read_failed;
        }
        delivered = 1;
    }
    let lost = 1 - black_box(delivered);
    // Per-CPU slots: no other writer while this program runs on this CPU.
    unsafe {
        *ctr.events += delivered;
        *ctr.ringbuf_full += lost;
        *ctr.lost_bytes += lost * len;
    }
    // Delivered: nothing pending any more.  Lost: the hole grows by `len`.
    *lost_pending = (lost * (pending + len)) as u32;
}

/// `SSL_free(SSL *s)`: the connection is over.  Every freed connection gets a
/// close event (knowing which ones carried data would take a lookup per
/// call); userspace ignores those it never saw.
#[uprobe]
pub fn ssl_free_entry(ctx: ProbeContext) -> u32 {
    if count_only() {
        return 0;
    }
    let ssl: u64 = ctx.arg(0).unwrap_or(0);
    if ssl == 0 {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let key = ConnKey {
        tgid: (pid_tgid >> 32) as u32,
        _pad: 0,
        ssl,
    };
    // Freed first, then unmuted: userspace inserts, then reads `FREED`.
    let _ = FREED.insert(&key, &unsafe { bpf_ktime_get_ns() }, 0);
    if muting() {
        let _ = MUTED.remove(&key);
    }
    let mut lost: u32 = 0;
    if holes_possible() {
        if let Some(state) = CONNS.get_ptr(&key) {
            // SAFETY: map values stay valid for the whole program run.
            let state = unsafe { &*state };
            lost = state.lost_read.saturating_add(state.lost_write);
            if CONNS.remove(&key).is_ok() {
                holes_add(u64::MAX); // -1
            }
        }
    }
    let rec = reserve_record(EVENT_HEADER_LEN);
    if rec.is_null() {
        count(CTR_RINGBUF_FULL, 1);
        return 0;
    }
    // SAFETY: the record has room for the header, 8-byte aligned.
    unsafe {
        rec.write(EventHeader {
            ssl,
            pid_tgid,
            ts_ns: bpf_ktime_get_ns(),
            call_seq: 0,
            call_len: 0,
            offset: 0,
            data_len: 0,
            lost_before: lost,
            kind: KIND_CLOSE,
            direction: DIR_READ,
            flags: if lost != 0 { FLAG_LOST_BEFORE } else { 0 },
            site: 0,
            comm: [0; 16],
        });
        take_comm(&mut (*rec).comm);
        generated::bpf_ringbuf_submit(
            rec as *mut c_void,
            ring_flags(EVENT_HEADER_LEN as u64, (*rec).ts_ns),
        );
    }
    count(CTR_EVENTS, 1);
    0
}

/// Process exec/exit notifications for userspace (attach to new libraries
/// promptly, report exits); lossy by design: the periodic rescan backs it up.
#[map]
static PROC_EVENTS: RingBuf = RingBuf::with_byte_size(PROC_EVENTS_BYTES, 0);

#[inline(always)]
fn proc_event(kind: u32) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let ev = ProcEvent { tgid, kind };
    // No wake-up (userspace polls every `PROC_POLL`): a wake-up from here
    // cost ~14 us per exec and per exit on this VM (bpf_stats), against
    // ~0.6 us without.  Past the threshold (an exec storm) it wakes anyway.
    let avail = PROC_EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let flags = if avail >= PROC_WAKEUP_THRESHOLD_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    let _ = PROC_EVENTS.output::<ProcEvent>(&ev, flags as u64);
}

/// `sched_process_exec`: the current task just exec'd a new program.  Its
/// in-flight entry goes, so its next call takes the new comm.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn proc_exec(_ctx: RawTracePointContext) -> i32 {
    forget_thread(bpf_get_current_pid_tgid());
    proc_event(PROC_EXEC);
    0
}

/// `sched_process_exit`: a task exits.  Its in-flight call (if it died inside
/// one) is forgotten; only thread-group leaders are reported to userspace.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn proc_exit(_ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    forget_thread(pid_tgid);
    if pid_tgid >> 32 == pid_tgid & 0xffff_ffff {
        proc_event(PROC_EXIT);
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
