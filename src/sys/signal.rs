//! Thread-directed signals: how the thread backend's per-wait mode pulls a
//! helper thread out of a `FUTEX_WAIT_BITSET` it can no longer leave by
//! itself (see `backend::thread`).
//!
//! The handler does nothing: its only effect is that the interrupted
//! `futex(2)` call returns `EINTR`. Two things make sure of that: the
//! handler is installed without `SA_RESTART`, and the helper always waits
//! with a (far) deadline, for which the kernel turns an interrupted wait
//! into `-ERESTART_RESTARTBLOCK`, which becomes `EINTR` whenever a handler
//! runs, whatever its flags.
//!
//! # References
//! - signal(7) "Interruption of system calls and library functions by
//!   signal handlers"; `kernel/futex/waitwake.c` (`futex_wait` sets a
//!   restart block only for timed waits); tgkill(2); sigaction(2).

use std::io;
use std::mem::MaybeUninit;

use super::cvt;

/// The handler: intentionally empty (async-signal-safe, keeps `errno`).
extern "C" fn interrupt(_signal: libc::c_int) {}

fn handler_address() -> libc::sighandler_t {
    interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t
}

/// `SIGRTMIN` and `SIGRTMAX` as this C library defines them (glibc keeps
/// the first few real-time signals for itself).
pub(crate) fn rt_range() -> (libc::c_int, libc::c_int) {
    (libc::SIGRTMIN(), libc::SIGRTMAX())
}

/// What a signal's disposition currently is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// `SIG_DFL`: nobody handles it.
    Default,
    /// Our no-op handler.
    Ours,
    /// `SIG_IGN`, or someone else's handler.
    Foreign,
}

/// Reads the disposition of `signal` without changing it.
pub(crate) fn disposition(signal: libc::c_int) -> io::Result<Disposition> {
    let mut old = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only queries; `old` is a writable sigaction.
    cvt(unsafe { libc::sigaction(signal, std::ptr::null(), old.as_mut_ptr()) }.into())?;
    // SAFETY: initialised by the successful call (and zeroed before).
    let old = unsafe { old.assume_init() };
    Ok(match old.sa_sigaction {
        libc::SIG_DFL => Disposition::Default,
        h if h == handler_address() && old.sa_flags & libc::SA_SIGINFO == 0 => Disposition::Ours,
        _ => Disposition::Foreign,
    })
}

/// Installs the no-op handler on `signal` (no `SA_RESTART`, nothing masked
/// beyond the signal itself) if its disposition is the default one or
/// already ours. Returns `EBUSY` if someone else handles or ignores it,
/// leaving their disposition in place.
pub(crate) fn claim(signal: libc::c_int) -> io::Result<()> {
    match disposition(signal)? {
        Disposition::Ours => return Ok(()),
        Disposition::Foreign => return Err(io::Error::from_raw_os_error(libc::EBUSY)),
        Disposition::Default => {}
    }
    let mut action = MaybeUninit::<libc::sigaction>::zeroed();
    let mut old = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: `action` is a zeroed sigaction we fill in; sigemptyset gets
    // a valid set; sigaction reads `action` and writes `old`.
    let old = unsafe {
        let a = action.as_mut_ptr();
        (*a).sa_sigaction = handler_address();
        (*a).sa_flags = 0;
        libc::sigemptyset(&mut (*a).sa_mask);
        cvt(libc::sigaction(signal, a, old.as_mut_ptr()).into())?;
        old.assume_init()
    };
    if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != handler_address() {
        // Someone installed a handler between our look and our claim: give
        // the signal back.
        // SAFETY: restores the action we just read.
        unsafe { libc::sigaction(signal, &old, std::ptr::null_mut()) };
        return Err(io::Error::from_raw_os_error(libc::EBUSY));
    }
    Ok(())
}

/// `gettid(2)`.
pub(crate) fn gettid() -> libc::pid_t {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as libc::pid_t }
}

/// `tgkill(2)`: sends `signal` to thread `tid` of this process.
pub(crate) fn tgkill(tid: libc::pid_t, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscall with integer arguments; the kernel checks that
    // `tid` belongs to our thread group.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_tgkill,
            libc::getpid() as libc::c_long,
            tid as libc::c_long,
            signal as libc::c_long,
        )
    };
    cvt(ret).map(drop)
}

fn full_set() -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::zeroed();
    // SAFETY: sigfillset initialises the set.
    unsafe {
        libc::sigfillset(set.as_mut_ptr());
        set.assume_init()
    }
}

/// Blocks every signal in the calling thread until the guard is dropped,
/// so threads spawned meanwhile start with every signal blocked (a
/// process-directed signal of the application never lands on them).
pub(crate) struct BlockAll {
    old: libc::sigset_t,
}

impl BlockAll {
    pub(crate) fn new() -> BlockAll {
        let all = full_set();
        let mut old = MaybeUninit::<libc::sigset_t>::zeroed();
        // SAFETY: valid sets; pthread_sigmask cannot fail with SIG_BLOCK.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &all, old.as_mut_ptr()) };
        // SAFETY: written by pthread_sigmask (and zeroed before).
        BlockAll {
            old: unsafe { old.assume_init() },
        }
    }
}

impl Drop for BlockAll {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `new`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

/// Sets the calling thread's mask to "everything blocked but `signal`"
/// (`None`: everything blocked).
pub(crate) fn only_unblocked(signal: Option<libc::c_int>) {
    let mut set = full_set();
    if let Some(signal) = signal {
        // SAFETY: `set` is a valid, initialised set.
        unsafe { libc::sigdelset(&mut set, signal) };
    }
    // SAFETY: a valid set; SIG_SETMASK with it cannot fail.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) };
}

/// Makes the kernel deliver any signal pending on the calling thread now:
/// a pending, unblocked signal runs its handler on the way back from any
/// system call, and `sigpending(2)` is a harmless one.
pub(crate) fn deliver_pending() {
    let mut set = MaybeUninit::<libc::sigset_t>::zeroed();
    // SAFETY: `set` is a writable sigset_t.
    unsafe { libc::sigpending(set.as_mut_ptr()) };
}
