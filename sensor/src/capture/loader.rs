//! Loading the embedded eBPF object and attaching its programs to libraries.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use aya::programs::uprobe::{UProbeAttachLocation, UProbeLinkId, UProbeScope};
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

/// Detaches links; errors are logged (the program may already be gone).
pub fn detach_links(ebpf: &mut Ebpf, links: Vec<(Program, UProbeLinkId)>) {
    for (program, id) in links {
        match uprobe(ebpf, program) {
            Ok(p) => {
                if let Err(e) = p.detach(id) {
                    tracing::debug!("detaching {}: {e}", program.name());
                }
            }
            Err(e) => tracing::debug!("detaching: {e}"),
        }
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
}
