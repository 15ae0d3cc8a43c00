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
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use io_uring::squeue::{self, Flags};
use io_uring::{opcode, types, IoUring, Probe};

use super::futex::{futex2_flags, WaitvEntry, BITSET_MATCH_ANY};

/// One io_uring instance: owned by one thread ([`Ring::new`]), or shared
/// under a lock and submitted to by its creator ([`Ring::new_shared`]).
pub(crate) struct Ring {
    ring: IoUring,
}

/// What a linked eventfd write adds to the counter.
static ONE: u64 = 1;

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
        Self::checked(ring, &[opcode::FutexWait::CODE, opcode::AsyncCancel::CODE])
    }

    /// A ring for a submitter that is *not* a dedicated thread: any thread
    /// may submit to it and reap it (callers serialise those with a lock),
    /// and completions run as ordinary task_work on the thread that
    /// submitted the request, which the kernel interrupts to run it (so a
    /// completion interrupts that thread's `epoll_wait` with `EINTR`).
    /// Checks `IORING_OP_FUTEX_WAIT`, `IORING_OP_ASYNC_CANCEL` and
    /// `IORING_OP_WRITE` too.
    ///
    /// # Errors
    /// As for [`new`](Self::new).
    pub(crate) fn new_shared(entries: u32) -> io::Result<Ring> {
        let ring = IoUring::builder()
            .setup_cqsize(entries.saturating_mul(4))
            .build(entries)?;
        Self::checked(
            ring,
            &[
                opcode::FutexWait::CODE,
                opcode::AsyncCancel::CODE,
                opcode::Write::CODE,
            ],
        )
    }

    fn checked(ring: IoUring, opcodes: &[u8]) -> io::Result<Ring> {
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        if opcodes.iter().any(|&code| !probe.is_supported(code)) {
            return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
        }
        Ok(Ring { ring })
    }

    /// The ring's file descriptor (for [`wait_for_completion`]).
    pub(crate) fn fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }

    fn push(&mut self, entry: io_uring::squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every entry pushed here is either a cancel (no memory)
            // or a futex wait (one word, or a vector of them) that the
            // caller of `push_futex_wait`/`push_futex_waitv` keeps mapped
            // until its completion is reaped.
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
        self.push(futex_wait_entry(word, expected, private).user_data(user_data))
    }

    /// Queues a futex wait on `word` (as [`push_futex_wait`]) hard-linked
    /// to a write of 1 to the non-blocking eventfd `eventfd`, tagged
    /// `write_data`: the kernel makes the eventfd readable as soon as the
    /// wait completes, however it completes (woken, `-EAGAIN`, cancelled),
    /// with no thread of ours in between. A *hard* link, because a plain
    /// link is severed by a failed wait and the write would never happen.
    /// Both entries are queued or neither is.
    ///
    /// # Safety
    /// `word` must stay mapped, and `eventfd` open, until the completion
    /// for `write_data` has been reaped (it always comes, after the
    /// wait's).
    ///
    /// [`push_futex_wait`]: Self::push_futex_wait
    pub(crate) unsafe fn push_futex_wait_signalling(
        &mut self,
        word: *const AtomicU32,
        expected: u32,
        private: bool,
        wait_data: u64,
        eventfd: RawFd,
        write_data: u64,
    ) -> io::Result<()> {
        let wait = futex_wait_entry(word, expected, private).user_data(wait_data);
        // SAFETY: forwarded contract.
        unsafe { self.push_signalling(wait, eventfd, write_data) }
    }

    /// Queues an `IORING_OP_FUTEX_WAITV` on the `n` entries at `vector`
    /// (Linux 6.7+): completes with the index of the entry that was woken,
    /// `-EAGAIN` if a word did not hold its value when the kernel looked,
    /// `-ECANCELED` when cancelled.
    ///
    /// # Safety
    /// `vector` must point to `n` valid entries, and the entries and every
    /// word they name must stay mapped, until the completion for
    /// `user_data` has been reaped.
    pub(crate) unsafe fn push_futex_waitv(
        &mut self,
        vector: *const WaitvEntry,
        n: u32,
        user_data: u64,
    ) -> io::Result<()> {
        self.push(futex_waitv_entry(vector, n).user_data(user_data))
    }

    /// [`push_futex_waitv`](Self::push_futex_waitv) hard-linked to a write
    /// of 1 to `eventfd`, as for
    /// [`push_futex_wait_signalling`](Self::push_futex_wait_signalling).
    ///
    /// # Safety
    /// As for both: the vector and its words stay mapped, and `eventfd`
    /// open, until the completion for `write_data` has been reaped.
    pub(crate) unsafe fn push_futex_waitv_signalling(
        &mut self,
        vector: *const WaitvEntry,
        n: u32,
        wait_data: u64,
        eventfd: RawFd,
        write_data: u64,
    ) -> io::Result<()> {
        let wait = futex_waitv_entry(vector, n).user_data(wait_data);
        // SAFETY: forwarded contract.
        unsafe { self.push_signalling(wait, eventfd, write_data) }
    }

    /// Queues `wait` hard-linked to a write of 1 to `eventfd` tagged
    /// `write_data`; both or neither.
    ///
    /// # Safety
    /// What `wait` refers to stays mapped, and `eventfd` open, until the
    /// completion for `write_data` has been reaped.
    unsafe fn push_signalling(
        &mut self,
        wait: squeue::Entry,
        eventfd: RawFd,
        write_data: u64,
    ) -> io::Result<()> {
        let wait = wait.flags(Flags::IO_HARDLINK);
        let write = opcode::Write::new(types::Fd(eventfd), (&ONE as *const u64).cast(), 8)
            .build()
            .user_data(write_data);
        loop {
            // SAFETY: the caller keeps what the wait refers to mapped and the
            // eventfd open until the write's completion; `ONE` is static.
            if unsafe {
                self.ring
                    .submission()
                    .push_multiple(&[wait.clone(), write.clone()])
            }
            .is_ok()
            {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    /// Queues a cancellation of the request tagged `target`.
    pub(crate) fn push_cancel(&mut self, target: u64, user_data: u64) -> io::Result<()> {
        let entry = opcode::AsyncCancel::new(target)
            .build()
            .user_data(user_data);
        self.push(entry)
    }

    /// Queues a cancellation of every request in flight on this ring
    /// (`IORING_ASYNC_CANCEL_ANY`, Linux 5.19+).
    pub(crate) fn push_cancel_all(&mut self, user_data: u64) -> io::Result<()> {
        let entry = opcode::AsyncCancel2::new(types::CancelBuilder::any())
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

    /// Hands every ready completion to `f` as `(user_data, result)`,
    /// including those the kernel kept aside when the completion queue was
    /// full (it keeps them until an enter flushes them).
    pub(crate) fn reap(&mut self, mut f: impl FnMut(u64, i32)) {
        loop {
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
            drop(cq);
            if !self.ring.submission().cq_overflow() || self.ring.submit().is_err() {
                return;
            }
        }
    }

    /// Hands what is queued to the kernel, retrying `EINTR`. Entries the
    /// kernel does not take now (it is short of memory, or its completion
    /// backlog is full) stay queued for the next enter of this ring.
    pub(crate) fn submit_queued(&mut self) {
        loop {
            match self.ring.submit() {
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                _ => return,
            }
        }
    }
}

/// An `IORING_OP_FUTEX_WAIT` on `word` for `expected` (any bit), 32-bit.
fn futex_wait_entry(word: *const AtomicU32, expected: u32, private: bool) -> squeue::Entry {
    opcode::FutexWait::new(
        word.cast(),
        u64::from(expected),
        u64::from(BITSET_MATCH_ANY),
        futex2_flags(private),
    )
    .build()
}

/// An `IORING_OP_FUTEX_WAITV` on `n` entries at `vector`.
fn futex_waitv_entry(vector: *const WaitvEntry, n: u32) -> squeue::Entry {
    // `WaitvEntry` is `struct futex_waitv`, as is the crate's `FutexWaitV`.
    opcode::FutexWaitV::new(vector.cast::<types::FutexWaitV>(), n).build()
}

/// Sleeps until the ring `fd` has a completion to reap, or `timeout`
/// passes, or a signal arrives; runs the calling thread's pending io_uring
/// task_work on the way. Submits nothing, so it needs no lock on the
/// ring's queues: one thread may sleep here while another pushes.
pub(crate) fn wait_for_completion(fd: RawFd, timeout: Duration) {
    const IORING_ENTER_GETEVENTS: libc::c_uint = 1;
    const IORING_ENTER_EXT_ARG: libc::c_uint = 8;
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // struct io_uring_getevents_arg: no signal mask, this timeout.
    let arg: [u64; 3] = [0, 0, &ts as *const libc::timespec as u64];
    // SAFETY: `arg` and `ts` outlive the call; the kernel only reads them.
    // A failure (ETIME, EINTR, …) just ends the sleep: callers re-check.
    unsafe {
        libc::syscall(
            libc::SYS_io_uring_enter,
            fd,
            0u32,
            1u32,
            IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG,
            arg.as_ptr(),
            std::mem::size_of_val(&arg),
        );
    }
}
