//! io_uring: `IORING_OP_FUTEX_WAIT` (Linux 6.7+) and `IORING_OP_ASYNC_CANCEL`,
//! through the tokio-rs `io-uring` crate.
//!
//! A futex wait submitted here is a genuine kernel futex waiter, exactly like
//! `FUTEX_WAIT_BITSET`: plain `futex(2)` wakers wake it. Its completion runs as
//! task_work on the *submitting thread*, so a [`Ring`] must only be used from
//! the one thread that created it (the ring is set up `SINGLE_ISSUER`).
//!
//! # References
//! - io_uring_prep_futex_wait(3), `io_uring/futex.c`

use std::io;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use io_uring::{opcode, types, IoUring, Probe};

use super::futex::{futex2_flags, BITSET_MATCH_ANY};

/// One io_uring instance, owned by one thread.
pub(crate) struct Ring {
    ring: IoUring,
}

impl Ring {
    /// Sets up a ring with `entries` submission slots and room for four times
    /// as many completions, and checks that the kernel knows
    /// `IORING_OP_FUTEX_WAIT`.
    ///
    /// # Errors
    /// Whatever `io_uring_setup(2)` says (`ENOSYS`, `EPERM` under seccomp or
    /// `kernel.io_uring_disabled`, `ENOMEM`), or `EOPNOTSUPP` when the kernel
    /// lacks futex operations.
    pub(crate) fn new(entries: u32) -> io::Result<Ring> {
        let ring = IoUring::builder()
            .setup_cqsize(entries.saturating_mul(4))
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(entries)?;
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        if !probe.is_supported(opcode::FutexWait::CODE)
            || !probe.is_supported(opcode::AsyncCancel::CODE)
        {
            return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
        }
        Ok(Ring { ring })
    }

    fn push(&mut self, entry: io_uring::squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every entry pushed here is either a cancel (no memory)
            // or a futex wait whose word the caller of `push_futex_wait`
            // keeps mapped until its completion is reaped.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return Ok(());
            }
            // The submission queue is full: hand it to the kernel and retry.
            self.ring.submit()?;
        }
    }

    /// Queues a futex wait on `word` that completes with 0 when woken,
    /// `-EAGAIN` if `*word != expected` when the kernel looks, `-ECANCELED`
    /// when cancelled (or when the submitting thread exits).
    ///
    /// # Safety
    /// `word` must stay mapped until the completion for `user_data` has
    /// been reaped.
    pub(crate) unsafe fn push_futex_wait(
        &mut self,
        word: *const AtomicU32,
        expected: u32,
        private: bool,
        user_data: u64,
    ) -> io::Result<()> {
        let entry = opcode::FutexWait::new(
            word.cast(),
            u64::from(expected),
            u64::from(BITSET_MATCH_ANY),
            futex2_flags(private),
        )
        .build()
        .user_data(user_data);
        self.push(entry)
    }

    /// Queues a cancellation of the request tagged `target`.
    pub(crate) fn push_cancel(&mut self, target: u64, user_data: u64) -> io::Result<()> {
        let entry = opcode::AsyncCancel::new(target)
            .build()
            .user_data(user_data);
        self.push(entry)
    }

    /// Submits what is queued and sleeps until at least `want` completions
    /// are ready. Returns at once with `EINTR` when a signal arrives.
    pub(crate) fn submit_and_wait(&mut self, want: usize) -> io::Result<usize> {
        self.ring.submit_and_wait(want)
    }

    /// Like [`submit_and_wait`](Self::submit_and_wait), but sleeps at most
    /// `timeout`: returns `Ok(0)` when it expires first
    /// (`IORING_ENTER_EXT_ARG`, Linux 5.11+; futex ops need 6.7 anyway).
    pub(crate) fn submit_and_wait_timeout(
        &mut self,
        want: usize,
        timeout: Duration,
    ) -> io::Result<usize> {
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(want, &args) {
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => Ok(0),
            other => other,
        }
    }

    /// Hands every ready completion to `f` as `(user_data, result)`.
    pub(crate) fn reap(&mut self, mut f: impl FnMut(u64, i32)) {
        let mut cq = self.ring.completion();
        loop {
            cq.sync();
            let mut any = false;
            for cqe in &mut cq {
                any = true;
                f(cqe.user_data(), cqe.result());
            }
            if !any {
                break;
            }
        }
    }
}
