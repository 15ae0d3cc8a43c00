//! Who holds a [`Mutex`](super::Mutex): this process's identity, and
//! whether a recorded holder is still alive.
//!
//! An identity is `pid << 32 | stamp`, where `stamp` is the low 32 bits of
//! the process's start time (`/proc/<pid>/stat` field 22, clock ticks since
//! boot; 0 when unknown). The stamp tells a reused pid from the original
//! holder. Computed once per process and forgotten in a `fork` child.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

use crate::sys::fork::on_fork_child;
use crate::sys::process::{self, ProcState};

static ME: AtomicU64 = AtomicU64::new(0);
static ATFORK: Once = Once::new();

unsafe extern "C" fn forget_after_fork() {
    ME.store(0, Ordering::Relaxed);
}

/// This process's identity (`pid << 32 | stamp`).
pub(crate) fn me() -> u64 {
    let cached = ME.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    compute()
}

#[cold]
fn compute() -> u64 {
    ATFORK.call_once(|| {
        let _ = on_fork_child(forget_after_fork);
    });
    let pid = process::getpid();
    let stamp = match process::proc_state(pid) {
        Ok(ProcState::Alive { start }) => start as u32,
        _ => 0,
    };
    let id = u64::from(pid) << 32 | u64::from(stamp);
    ME.store(id, Ordering::Relaxed);
    id
}

/// The pid of an identity.
pub(crate) fn pid_of(id: u64) -> u32 {
    (id >> 32) as u32
}

/// Whether process `pid` is gone (exited — a zombie counts as gone — or its
/// pid now belongs to a process started at another time than `stamp`;
/// `stamp == 0` skips that comparison). Without `/proc`, falls back to
/// `kill(pid, 0)`, which cannot see zombies or pid reuse.
pub(crate) fn is_dead(pid: u32, stamp: u32) -> bool {
    if pid == 0 {
        return false;
    }
    match process::proc_state(pid) {
        Ok(ProcState::Gone) => true,
        Ok(ProcState::Alive { start }) => stamp != 0 && start as u32 != stamp,
        Err(_) => !process::exists(pid),
    }
}
