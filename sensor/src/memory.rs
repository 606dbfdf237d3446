//! Giving freed heap memory back to the system.
//!
//! Kept bodies arrive as many small chunks (an event is at most 16 KiB), so
//! they live in glibc's arenas, not in their own mappings; when connections
//! end or are evicted, the freed chunks stay in the arenas and the
//! process's RSS stays at its peak (measured: 537 MiB an idle sensor held
//! after 300 authenticated 100 MiB downloads, with every connection gone and
//! a 320 MiB budget).  `malloc_trim` hands free pages inside the arenas
//! back (`MADV_DONTNEED`).
//!
//! And one arena for every thread: the pipeline's task moves between the
//! runtime's worker threads, and with an arena per thread each one grew to
//! hold what the pipeline once allocated there, so the heap was the sum of
//! several peaks: 526–633 MiB at the same load's peak with the budget at
//! 320 MiB, 406 MiB with one arena (bound: ~80 idle + 32 ring + 320).  The
//! sensor allocates from one task at a time, so the shared arena's lock is
//! hardly ever contended.  Without glibc (musl) there is nothing to do.

use std::time::Duration;

/// One malloc arena for the whole process; call before any thread starts.
pub fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt before other threads exist only sets glibc's tunable.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// How often freed memory is given back.
pub const TRIM_EVERY: Duration = Duration::from_secs(2);

/// Gives free heap pages back to the system; returns whether any were.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks glibc's own arenas.
        unsafe { libc::malloc_trim(0) != 0 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Trims every [`TRIM_EVERY`] until `stop` says so.
pub async fn trim_loop(mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut every = tokio::time::interval(TRIM_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {
                // Off the runtime's workers: a trim of a large heap takes ms.
                let _ = tokio::task::spawn_blocking(trim).await;
            }
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    /// Freed small chunks stay in the arena until trimmed: a trim after
    /// 64 MiB of 16 KiB chunks were freed gives pages back.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_chunks_go_back_when_trimmed() {
        let chunks: Vec<Vec<u8>> = (0..4096).map(|i| vec![i as u8; 16 * 1024]).collect();
        // Keep every 64th so the heap's top cannot simply shrink.
        let kept: Vec<Vec<u8>> = chunks.into_iter().step_by(64).collect();
        assert!(super::trim(), "nothing given back");
        assert_eq!(kept.len(), 64);
    }
}
