//! The thread backend, for systems where io_uring is missing or denied:
//! helper threads blocking in the kernel on behalf of async waits. It runs
//! in one of two modes, chosen when it starts:
//!
//! - **vector mode** ([`waitv`]), the normal one: helpers blocking in
//!   `futex_waitv(2)` (Linux 5.16+), each serving up to 127 waited-on words (a wait on `n` words takes `n`);
//! - **per-wait mode** ([`per_wait`]), where `futex_waitv` is refused
//!   (`ENOSYS` on kernels before 5.16 and under valgrind, `ENOSYS` or
//!   `EPERM` from a seccomp profile that predates it): every pending wait
//!   has a pooled helper of its own blocking in `FUTEX_WAIT_BITSET`, and a
//!   cancel interrupts that helper with a thread-directed signal.
//!
//! The mode is an implementation detail: both report the backend as
//! `"thread"` and keep DESIGN S1–S5. Environment variables (read once, when
//! the backend starts):
//!
//! - `AFX_THREAD_WAITV=0` (or `off`, `no`, `false`) skips the probe and
//!   forces per-wait mode (for testing it where `futex_waitv` works);
//! - `AFX_THREAD_SIGNAL` chooses the signal of per-wait mode: unset or
//!   `auto` takes the highest real-time signal with the default
//!   disposition; a number, `SIGRTMIN+n` or `SIGRTMAX-n` names one (it
//!   must be unhandled, else the backend fails to start with `EBUSY`);
//!   `none` uses no signal (a cancel then wakes every waiter of the word:
//!   spurious completions for the others).

mod per_wait;
mod waitv;

use std::io;
use std::sync::Arc;

use self::per_wait::PerWaitPool;
use self::waitv::WaitvPool;
use super::{leak, Backend};
use crate::waiter::{Outcome, Waiter};

enum Mode {
    Waitv(WaitvPool),
    PerWait(PerWaitPool),
}

pub(crate) struct ThreadBackend {
    mode: Mode,
}

/// Whether `AFX_THREAD_WAITV` forbids the vector mode.
fn waitv_disabled() -> bool {
    match std::env::var("AFX_THREAD_WAITV") {
        Ok(v) => matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "0" | "off" | "no" | "false"
        ),
        Err(_) => false,
    }
}

impl ThreadBackend {
    /// Starts in vector mode if `futex_waitv` works here, else in per-wait
    /// mode. Fails only if per-wait mode cannot run either (a bad
    /// `AFX_THREAD_SIGNAL`: `EINVAL`, or its signal is taken: `EBUSY`).
    pub(super) fn start() -> io::Result<&'static Backend> {
        let mode = if !waitv_disabled() && WaitvPool::probe().is_ok() {
            Mode::Waitv(WaitvPool::new())
        } else {
            Mode::PerWait(PerWaitPool::new()?)
        };
        Ok(leak(Backend::Thread(ThreadBackend { mode })))
    }

    /// Per-wait mode cannot serve a vector wait: it exists because
    /// `futex_waitv` is refused here, and one `FUTEX_WAIT` per word would
    /// not sleep "while every word holds its value" atomically. Such a wait
    /// fails with `ENOSYS`.
    pub(super) fn submit(&'static self, waiter: Arc<Waiter>) {
        match &self.mode {
            Mode::Waitv(pool) => pool.submit(waiter),
            Mode::PerWait(_) if waiter.vector().is_some() => {
                waiter.finish(Outcome::Failed, libc::ENOSYS);
            }
            Mode::PerWait(pool) => pool.submit(waiter),
        }
    }

    pub(super) fn cancel(&'static self, waiter: &Arc<Waiter>) {
        match &self.mode {
            Mode::Waitv(pool) => pool.cancel(waiter),
            Mode::PerWait(pool) => pool.cancel(waiter),
        }
    }

    pub(super) fn forward(&'static self, waiter: &Arc<Waiter>) {
        match &self.mode {
            Mode::Waitv(pool) => pool.forward(waiter),
            Mode::PerWait(pool) => pool.forward(waiter),
        }
    }
}
