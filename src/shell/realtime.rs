//! `realtime on`: lock memory and run the loop thread at a real-time priority.
//!
//! Layer: shell. So a CPU hog or memory pressure cannot delay heartbeats, as
//! Heartbeat does. Each refusal by the host becomes `Event::RealtimeDegraded` and
//! the daemon carries on. Call after everything is allocated and every thread is
//! spawned: `sched_setscheduler(0)` affects only the calling (loop) thread, so the
//! logger thread keeps normal priority.

use crate::core::Event;

/// SCHED_RR priority of the loop thread: above ordinary real-time helpers (1),
/// well below kernel threads and watchdogs (50, 99).
pub const RT_PRIORITY: i32 = 10;

/// Largest allocation served from the heap rather than its own mmap: above
/// the largest I/O payload (1 MiB) and its frame.
const MMAP_THRESHOLD: i32 = 4 << 20;
/// Free memory at the top of the heap kept rather than returned to the kernel.
const TRIM_THRESHOLD: i32 = 32 << 20;

/// Before any thread starts: one malloc arena for the whole process. Otherwise
/// glibc reserves 64 MiB of address space for the logger thread's arena, which
/// `mlockall` counts against RLIMIT_MEMLOCK (often 8 MiB) and then refuses.
///
/// And fixed heap thresholds. Why: under `mlockall(MCL_FUTURE)` every page
/// the heap gets back from the kernel is faulted in and zeroed at once; with
/// glibc's defaults the 1 MiB replication payloads went to mmap or made the
/// heap shrink and regrow, and a 1 MiB sequential-write run spent ~6 % of all
/// CPU zeroing and locking pages (`clear_page_erms`, `__mm_populate` under
/// `brk`). The heap now keeps up to `TRIM_THRESHOLD` of free memory.
pub fn prepare() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Applies the settings; returns the refusals as events (zero, one or two).
pub fn apply() -> heapless::Vec<Event, 2> {
    let mut refused = heapless::Vec::new();
    let flags =
        nix::sys::mman::MlockAllFlags::MCL_CURRENT | nix::sys::mman::MlockAllFlags::MCL_FUTURE;
    if let Err(e) = nix::sys::mman::mlockall(flags) {
        let _ = refused.push(Event::RealtimeDegraded {
            what: "mlockall",
            errno: e as i32,
        });
    }
    let param = libc::sched_param {
        sched_priority: RT_PRIORITY,
    };
    // SAFETY: plain syscall on the calling thread with a valid, owned parameter.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_RR, &param) };
    if rc != 0 {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        let _ = refused.push(Event::RealtimeDegraded {
            what: "sched_setscheduler",
            errno,
        });
    }
    log::debug!(
        "realtime: mlockall and SCHED_RR {} applied, {} refused",
        RT_PRIORITY,
        refused.len()
    );
    refused
}
