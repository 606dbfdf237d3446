//! eBPF side of the sensor: uprobes on OpenSSL's read/write functions.
//!
//! Small and dumb on purpose: the entry probe remembers where the plaintext is,
//! the return probe copies the bytes actually transferred into the ring buffer
//! (in chunks of `CHUNK_SIZE`, at most `MAX_BYTES_PER_CALL` per call) and counts
//! everything it could not copy.  No HTTP parsing here.
//!
//! Two families of entry probes share one return probe:
//! - exported: `SSL_write`/`SSL_read` (3 args) and `SSL_write_ex`/`SSL_read_ex` (4 args);
//! - internal: `ssl_write_internal`/`ssl_read_internal` `(SSL *s, void *buf, size_t num,
//!   size_t *out)`, reached from all four exported functions and much cheaper to probe
//!   (their first instruction is emulated instead of single-stepped).
//!
//! Userspace attaches one family per library, never both.
#![no_std]
#![no_main]

use core::hint::black_box;

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    cty::c_void,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user,
        generated,
    },
    macros::{map, raw_tracepoint, uprobe, uretprobe},
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::{ProbeContext, RawTracePointContext, RetProbeContext},
};
use sensor_common::{
    ConnKey, ConnState, EventHeader, InflightCall, ProcEvent, CHUNK_SIZE, CTR_CALLS, CTR_EVENTS,
    CTR_INFLIGHT_FULL, CTR_LOST_BYTES, CTR_ORPHAN_RETURNS, CTR_READ_FAILURES, CTR_RINGBUF_FULL,
    CTR_TRUNCATED_BYTES, DEFAULT_RING_BUFFER_BYTES, DIR_READ, DIR_WRITE, EVENT_HEADER_LEN,
    FLAG_CALL_TRUNCATED, FLAG_LOST_BEFORE, FLAG_READ_FAILED, KIND_CLOSE, KIND_DATA,
    MAX_BYTES_PER_CALL, MAX_CHUNKS_PER_CALL, MAX_INFLIGHT_CALLS, MAX_TRACKED_CONNECTIONS,
    NUM_COUNTERS, PROC_EVENTS_BYTES, PROC_EXEC, PROC_EXIT, SITE_EXPORTED, SITE_INTERNAL,
    WAKEUP_THRESHOLD_BYTES,
};

/// Set to 1 by the loader (`EbpfLoader::set_global`) for count-only probes.
#[no_mangle]
static COUNT_ONLY: u8 = 0;

#[map]
static RINGBUF: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BUFFER_BYTES, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

/// The call each thread is in (between entry and return), by `pid_tgid`.
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

/// Per-connection sequence numbers and bytes lost since the last delivered event.
#[map]
static CONNS: LruHashMap<ConnKey, ConnState> =
    LruHashMap::with_max_entries(MAX_TRACKED_CONNECTIONS, 0);

/// One event being assembled: the header followed by room for one chunk.  It is
/// handed to `bpf_ringbuf_output` with its exact length, so a 60-byte call costs
/// 60 bytes of ring (plus the header), not a whole chunk.
#[repr(C)]
struct Scratch {
    hdr: EventHeader,
    data: [u8; CHUNK_SIZE],
}

#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

// A chunk length `n` in 1..=CHUNK_SIZE is bounded for the verifier as
// `((n - 1) & CHUNK_MASK) + 1`, which needs a power of two.
const CHUNK_MASK: u64 = CHUNK_SIZE as u64 - 1;
const _: () = assert!(CHUNK_SIZE.is_power_of_two());
const _: () = assert!(EVENT_HEADER_LEN % 8 == 0);

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
fn on_entry(ctx: &ProbeContext, direction: u8, site: u8, has_out: bool) -> u32 {
    count(CTR_CALLS, 1);
    if count_only() {
        return 0;
    }
    let ssl: u64 = ctx.arg(0).unwrap_or(0);
    let buf: u64 = ctx.arg(1).unwrap_or(0);
    let out_len_ptr: u64 = if has_out { ctx.arg(3).unwrap_or(0) } else { 0 };
    if ssl == 0 || buf == 0 || (has_out && out_len_ptr == 0) {
        return 0;
    }
    let call = InflightCall {
        ssl,
        buf,
        out_len_ptr,
        direction,
        site,
        _pad: [0; 6],
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    match INFLIGHT.get_ptr_mut(&pid_tgid) {
        // Only this thread ever touches its entry: a plain store is enough.
        Some(slot) => unsafe { *slot = call },
        None => {
            if INFLIGHT.insert(&pid_tgid, &call, 0).is_err() {
                count(CTR_INFLIGHT_FULL, 1);
            }
        }
    }
    0
}

#[uprobe]
pub fn ssl_write_entry(ctx: ProbeContext) -> u32 {
    on_entry(&ctx, DIR_WRITE, SITE_EXPORTED, false)
}

#[uprobe]
pub fn ssl_read_entry(ctx: ProbeContext) -> u32 {
    on_entry(&ctx, DIR_READ, SITE_EXPORTED, false)
}

#[uprobe]
pub fn ssl_write_ex_entry(ctx: ProbeContext) -> u32 {
    on_entry(&ctx, DIR_WRITE, SITE_EXPORTED, true)
}

#[uprobe]
pub fn ssl_read_ex_entry(ctx: ProbeContext) -> u32 {
    on_entry(&ctx, DIR_READ, SITE_EXPORTED, true)
}

#[uprobe]
pub fn ssl_write_internal_entry(ctx: ProbeContext) -> u32 {
    on_entry(&ctx, DIR_WRITE, SITE_INTERNAL, true)
}

#[uprobe]
pub fn ssl_read_internal_entry(ctx: ProbeContext) -> u32 {
    on_entry(&ctx, DIR_READ, SITE_INTERNAL, true)
}

/// Return of any of the probed functions.
#[uretprobe]
pub fn ssl_return(ctx: RetProbeContext) -> u32 {
    if count_only() {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(slot) = INFLIGHT.get_ptr_mut(&pid_tgid) else {
        count(CTR_ORPHAN_RETURNS, 1);
        return 0;
    };
    // SAFETY: map values stay valid for the whole program run; only this
    // thread writes its entry.
    let call = unsafe { *slot };
    if call.ssl == 0 {
        // Consumed already: the entry probe skipped this call (bad arguments).
        count(CTR_ORPHAN_RETURNS, 1);
        return 0;
    }
    unsafe { (*slot).ssl = 0 };
    // All four functions return int: > 0 means success.
    let ret: i64 = ctx.ret::<u64>() as i32 as i64;
    if ret <= 0 {
        return 0;
    }
    let total: u64 = if call.out_len_ptr != 0 {
        match unsafe { bpf_probe_read_user(call.out_len_ptr as *const u64) } {
            Ok(n) => n,
            Err(_) => {
                count(CTR_READ_FAILURES, 1);
                return 0;
            }
        }
    } else {
        ret as u64
    };
    if total == 0 {
        return 0;
    }
    emit_call(&call, pid_tgid, total);
    0
}

#[inline(always)]
fn conn_state(key: &ConnKey) -> Option<*mut ConnState> {
    if let Some(s) = CONNS.get_ptr_mut(key) {
        return Some(s);
    }
    let _ = CONNS.insert(key, &ConnState::default(), 0);
    CONNS.get_ptr_mut(key)
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
///
/// The chunk loop must stay branch-free: every branch inside it doubles the
/// paths the verifier walks per iteration, and with 256 iterations that passes
/// the 1M-instruction limit.
#[inline(always)]
fn is_negative(x: i64) -> u64 {
    (x as u64) >> 63
}

/// `BPF_RB_FORCE_WAKEUP` once the unread data passes the threshold, else
/// `BPF_RB_NO_WAKEUP` (branch-free: 1 + [avail >= threshold]).
#[inline(always)]
fn ring_flags() -> u64 {
    let avail = RINGBUF.query(BPF_RB_AVAIL_DATA as u64);
    let below = is_negative(black_box(avail as i64 - WAKEUP_THRESHOLD_BYTES as i64));
    below * BPF_RB_NO_WAKEUP as u64 + (1 - below) * BPF_RB_FORCE_WAKEUP as u64
}

/// Copies one call's plaintext into the ring buffer, chunk by chunk.
#[inline(always)]
fn emit_call(call: &InflightCall, pid_tgid: u64, total: u64) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let Some(ctr) = ctrs() else {
        return;
    };
    let key = ConnKey {
        tgid: (pid_tgid >> 32) as u32,
        _pad: 0,
        ssl: call.ssl,
    };
    let Some(state) = conn_state(&key) else {
        return;
    };
    // SAFETY: map values stay valid for the whole program run.
    let (scratch, state) = unsafe { (&mut *scratch, &mut *state) };
    state.call_seq = state.call_seq.wrapping_add(1);
    let call_seq = state.call_seq;
    // Holes are tracked per direction: a hole in the responses must not be
    // announced on the next request (that stream is intact).
    let pending = if call.direction == DIR_WRITE {
        &mut state.lost_write
    } else {
        &mut state.lost_read
    };

    let mut flags = 0u8;
    let copied_total = if total > MAX_BYTES_PER_CALL as u64 {
        let over = total - MAX_BYTES_PER_CALL as u64;
        count(CTR_TRUNCATED_BYTES, over);
        flags |= FLAG_CALL_TRUNCATED;
        MAX_BYTES_PER_CALL as u64
    } else {
        total
    };

    let h = &mut scratch.hdr;
    h.ssl = call.ssl;
    h.pid_tgid = pid_tgid;
    h.ts_ns = unsafe { bpf_ktime_get_ns() };
    h.call_seq = call_seq;
    h.call_len = if total > u32::MAX as u64 {
        u32::MAX
    } else {
        total as u32
    };
    h.kind = KIND_DATA;
    h.direction = call.direction;
    h.site = call.site;
    h.comm = bpf_get_current_comm().unwrap_or([0; 16]);

    // Full chunks have the constant length CHUNK_SIZE; the last one is shorter.
    let full_chunks = copied_total / CHUNK_SIZE as u64;
    let mut offset: u64 = 0;
    for i in 0..MAX_CHUNKS_PER_CALL as u64 {
        if i >= full_chunks {
            break;
        }
        emit_chunk(
            scratch,
            pending,
            &ctr,
            call.buf,
            offset,
            CHUNK_SIZE as u64,
            flags,
        );
        offset += CHUNK_SIZE as u64;
    }
    let tail = copied_total & CHUNK_MASK;
    if tail != 0 {
        // Bounded for the verifier: 1..=CHUNK_SIZE (black_box keeps the mask).
        let len = ((black_box(tail) - 1) & CHUNK_MASK) + 1;
        emit_chunk(scratch, pending, &ctr, call.buf, offset, len, flags);
    }
    if copied_total < total {
        // Bytes past the cap are a hole before the connection's next event.
        let over = total - copied_total;
        let over = if over > u32::MAX as u64 {
            u32::MAX
        } else {
            over as u32
        };
        *pending = pending.saturating_add(over);
    }
}

/// One event: `len` (1..=CHUNK_SIZE) bytes at `buf + offset`.  Branch-free.
#[inline(always)]
fn emit_chunk(
    scratch: &mut Scratch,
    lost_pending: &mut u32,
    ctr: &Ctrs,
    buf: u64,
    offset: u64,
    len: u64,
    flags: u8,
) {
    let rc = unsafe {
        generated::bpf_probe_read_user(
            scratch.data.as_mut_ptr() as *mut c_void,
            len as u32,
            (buf + offset) as *const c_void,
        )
    };
    let read_failed = is_negative(rc);
    // A failed read carries no data (data_len 0) and FLAG_READ_FAILED.
    let data_len = len & read_failed.wrapping_sub(1);
    let pending = *lost_pending as u64;
    // 1 when pending > 0 (pending < 2^32).
    let has_pending = (pending + 0xffff_ffff) >> 32;
    let h = &mut scratch.hdr;
    h.offset = offset as u32;
    h.data_len = data_len as u32;
    h.lost_before = pending as u32;
    h.flags =
        flags | (has_pending as u8 * FLAG_LOST_BEFORE) | (read_failed as u8 * FLAG_READ_FAILED);
    let rc = unsafe {
        generated::bpf_ringbuf_output(
            core::ptr::addr_of!(RINGBUF) as *mut c_void,
            scratch as *mut Scratch as *mut c_void,
            EVENT_HEADER_LEN as u64 + data_len,
            ring_flags(),
        )
    };
    let lost = is_negative(rc);
    // Per-CPU slots: no other writer while this program runs on this CPU.
    unsafe {
        *ctr.events += 1 - lost;
        *ctr.ringbuf_full += lost;
        *ctr.lost_bytes += lost * len;
        *ctr.read_failures += read_failed;
    }
    // Delivered: nothing pending any more.  Lost: the hole grows by `len`.
    *lost_pending = (lost * (pending + len)) as u32;
}

/// Puts the header alone (a close event) into the ring buffer.
#[inline(always)]
fn output_header(scratch: &Scratch) -> bool {
    // SAFETY: Scratch starts with the header and is plain data.
    let bytes = unsafe {
        core::slice::from_raw_parts(scratch as *const Scratch as *const u8, EVENT_HEADER_LEN)
    };
    RINGBUF.output::<[u8]>(bytes, ring_flags()).is_ok()
}

/// `SSL_free(SSL *s)`: the connection is over.  Only connections that produced
/// data get a close event, so idle handshakes cost nothing downstream.
#[uprobe]
pub fn ssl_free_entry(ctx: ProbeContext) -> u32 {
    if count_only() {
        return 0;
    }
    let ssl: u64 = ctx.arg(0).unwrap_or(0);
    let pid_tgid = bpf_get_current_pid_tgid();
    let key = ConnKey {
        tgid: (pid_tgid >> 32) as u32,
        _pad: 0,
        ssl,
    };
    let Some(state) = CONNS.get_ptr_mut(&key) else {
        return 0;
    };
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let (scratch, state) = unsafe { (&mut *scratch, &*state) };
    let pending = state.lost_read.saturating_add(state.lost_write);
    let h = &mut scratch.hdr;
    h.ssl = ssl;
    h.pid_tgid = pid_tgid;
    h.ts_ns = unsafe { bpf_ktime_get_ns() };
    h.call_seq = state.call_seq;
    h.call_len = 0;
    h.offset = 0;
    h.data_len = 0;
    h.lost_before = pending;
    h.kind = KIND_CLOSE;
    h.direction = DIR_READ;
    h.flags = if pending != 0 { FLAG_LOST_BEFORE } else { 0 };
    h.site = 0;
    h.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    if output_header(scratch) {
        count(CTR_EVENTS, 1);
    } else {
        count(CTR_RINGBUF_FULL, 1);
    }
    let _ = CONNS.remove(&key);
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
    // Wake userspace: these are rare and it wants them promptly.
    let _ = PROC_EVENTS.output::<ProcEvent>(&ev, 0);
}

/// `sched_process_exec`: the current task just exec'd a new program.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn proc_exec(_ctx: RawTracePointContext) -> i32 {
    proc_event(PROC_EXEC);
    0
}

/// `sched_process_exit`: a task exits.  Its in-flight call (if it died inside
/// one) is forgotten; only thread-group leaders are reported to userspace.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn proc_exit(_ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let _ = INFLIGHT.remove(&pid_tgid);
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
