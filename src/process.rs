//! This process's place in a line of `fork`s: the *fork generation*.
//!
//! Per-process state copied into a fork child (a word's count of our kernel
//! waits, a handle's eventfd and armed wait, a thread's io_uring ring)
//! records the generation it belongs to; the child bumps the generation
//! (from the backend's `pthread_atfork` child handler) and so tells such
//! state apart from its own. The lowest layer above `sys/`: it knows
//! nothing of words, waiters or backends.

use std::sync::atomic::{AtomicU32, Ordering};

/// Bumped in every `fork` child.
static FORK_GENERATION: AtomicU32 = AtomicU32::new(0);

/// This process's fork generation.
pub(crate) fn fork_generation() -> u32 {
    FORK_GENERATION.load(Ordering::Acquire)
}

/// Called in a `fork` child, before anything else runs there: state
/// recorded with an older generation is the parent's.
pub(crate) fn forked() {
    FORK_GENERATION.fetch_add(1, Ordering::SeqCst);
}
