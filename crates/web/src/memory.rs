//! Giving freed memory back to the system after a crowd has left.
//!
//! glibc keeps what a thread freed in that thread's arena and returns only
//! the top of each heap, so a crowd of output followers (each connection's
//! buffers allocated and freed on whichever worker thread served it) leaves
//! the process resident at its peak long after the memory is free: measured
//! at 1.30× a server that had no crowd (docs/benchmarks.md, "Following run
//! output"). `malloc_trim(0)` walks every arena and returns their free pages.
//! It is called when the last follower leaves, and once the start has loaded
//! every job (reading 100,000 jobs peaks well above what they then keep), on
//! a blocking thread (it locks each arena in turn); trims asked for while one
//! runs are folded into it.

use std::sync::atomic::{AtomicBool, Ordering};

static TRIMMING: AtomicBool = AtomicBool::new(false);

/// Asks the allocator to return the memory it holds free to the system.
pub fn release_freed_memory() {
    if TRIMMING.swap(true, Ordering::AcqRel) {
        return;
    }
    let run = || {
        trim();
        TRIMMING.store(false, Ordering::Release);
    };
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn_blocking(run)),
        Err(_) => run(),
    }
}

/// The one `unsafe` in Steward: a foreign call with no arguments to check.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim takes no pointers and works on glibc's own free
    // lists under glibc's own arena locks; it never touches live allocations.
    let released = unsafe { libc::malloc_trim(0) } == 1;
    tracing::debug!(released, "returned freed memory to the system");
}

/// Other allocators (musl's, say) return large blocks by themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
