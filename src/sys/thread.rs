//! Library threads: every thread the crate starts goes through [`spawn`],
//! so it starts with every signal blocked.
//!
//! Why: the kernel delivers a process-directed signal (`kill(pid, …)`,
//! a terminal's `SIGINT`, a supervisor's `SIGTERM`) to any thread that does
//! not block it. An application that blocks a signal in its own threads
//! to read it with `signalfd(2)` or `sigwait(3)` would otherwise see it
//! land in a library thread that inherited the mask of the thread that
//! happened to start it — and, with the default disposition, die of it.
//! A thread that owns a signal of its own (the per-wait helpers' cancel
//! signal) unblocks exactly that one itself ([`signal::only_unblocked`]).
//!
//! The mask is set before the thread exists (blocked in the spawning
//! thread around `pthread_create`, which the new thread inherits), not by
//! the new thread's first step: a signal sent in between would otherwise
//! still find it unblocked. A signal that arrives for the spawning thread
//! during that moment stays pending and is delivered when its mask is
//! restored, a few microseconds later.

use std::io;
use std::thread::{Builder, JoinHandle};

use super::signal::{self, BlockAll};

/// Spawns `f` on a thread made by `builder` (name, stack size) that
/// starts with every signal blocked.
pub(crate) fn spawn<F, T>(builder: Builder, f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let _blocked = BlockAll::new();
    builder.spawn(f)
}

/// Like [`spawn`], then unblocks `own` in the new thread before running
/// `f`: for a thread that handles a signal of its own.
pub(crate) fn spawn_owning<F, T>(
    builder: Builder,
    own: Option<libc::c_int>,
    f: F,
) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    spawn(builder, move || {
        signal::only_unblocked(own);
        f()
    })
}
