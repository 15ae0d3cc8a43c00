//! Wait backends: what turns a kernel futex wake into a task wake-up or
//! eventfd readiness.
//!
//! Every backend must
//! - queue a *genuine kernel futex waiter* per armed wait, handing the kernel
//!   exactly the `expected` value the wait was armed with (S1, S2);
//! - call [`Waiter::finish`] exactly once per submitted waiter, with
//!   [`Outcome::Woken`] whenever the kernel may have spent a wake on it (S3);
//! - serve many waits per thread: no thread per wait.
//!
//! One backend runs per process, chosen on first use: `select_backend`, else
//! the `AFX_BACKEND` environment variable (`io_uring` or `thread`), else a
//! probe that prefers io_uring and falls back silently to threads. A `fork`
//! child starts over with a backend of its own (see [`is_live`]).
#![allow(unsafe_code)]

mod thread;
mod uring;

use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU8, Ordering};
use std::sync::Arc;

use crate::fork_safe::ForkSafeMutex;
use crate::sys;
use crate::waiter::{Outcome, Waiter};

pub(crate) use self::thread::ThreadBackend;
pub(crate) use self::uring::{CallerRing, UringBackend};

/// Which mechanism serves async waits in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendKind {
    /// `IORING_OP_FUTEX_WAIT` on one ring served by one library thread.
    IoUring,
    /// Helper threads blocking in `futex_waitv(2)`, up to 127 waited-on words each.
    ///
    /// Where `futex_waitv` is refused (kernels before 5.16, valgrind, or a
    /// seccomp profile that predates it: `ENOSYS`/`EPERM`), the same backend
    /// runs in *per-wait mode*: one pooled helper thread per pending wait,
    /// blocking in `FUTEX_WAIT_BITSET`, cancelled with a thread-directed
    /// real-time signal whose no-op handler is installed only then (the
    /// highest one nobody handles; `AFX_THREAD_SIGNAL` chooses another or
    /// `none`). `AFX_THREAD_WAITV=0` forces this mode. It is still reported
    /// as `"thread"`.
    Thread,
}

impl BackendKind {
    /// The name used by `AFX_BACKEND` and reported to C (`"io_uring"`,
    /// `"thread"`).
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::IoUring => "io_uring",
            BackendKind::Thread => "thread",
        }
    }

    fn parse(s: &str) -> Option<Option<BackendKind>> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Some(None),
            "io_uring" | "iouring" | "uring" => Some(Some(BackendKind::IoUring)),
            "thread" | "threads" => Some(Some(BackendKind::Thread)),
            _ => None,
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The running backend of this process.
pub(crate) enum Backend {
    IoUring(UringBackend),
    Thread(ThreadBackend),
}

impl Backend {
    pub(crate) fn kind(&self) -> BackendKind {
        match self {
            Backend::IoUring(_) => BackendKind::IoUring,
            Backend::Thread(_) => BackendKind::Thread,
        }
    }

    /// Queues the kernel wait of a freshly armed waiter.
    pub(crate) fn submit(&'static self, waiter: Arc<Waiter>) {
        match self {
            Backend::IoUring(b) => b.submit(waiter),
            Backend::Thread(b) => b.submit(waiter),
        }
    }

    /// Passes on a wake consumed by `waiter` (cancelled, or dropped without
    /// looking) to another waiter on its word. The word stays mapped until
    /// the forward is done.
    pub(crate) fn forward(&'static self, waiter: &Arc<Waiter>) {
        match self {
            Backend::IoUring(_) => {
                // Every io_uring wait stays queued in the kernel until it
                // completes, so a plain FUTEX_WAKE reaches the next one.
                waiter.each_word(|word| {
                    let _ = word.wake(1);
                });
                waiter.forwarded();
            }
            Backend::Thread(b) => b.forward(waiter),
        }
    }

    /// Asks for the removal of a waiter whose consumer set `CANCEL`; the
    /// backend then finishes it (as cancelled, or as woken if the wake won).
    pub(crate) fn cancel(&'static self, waiter: &Arc<Waiter>) {
        match self {
            Backend::IoUring(b) => b.cancel(waiter),
            Backend::Thread(b) => b.cancel(waiter),
        }
    }
}

/// Maps an io_uring / futex completion result to an [`Outcome`], and for a
/// vector wait records which entry completed it.
///
/// A cancelled vector wait counts as one that may have consumed a wake (so
/// one is passed on to each of its words): a `FUTEX_WAITV` request is
/// claimed by its cancel (or by its first wake) before its words leave the
/// futex queues, and a `FUTEX_WAKE` that finds one of them in that window
/// is counted as having woken a waiter while the request reports nothing
/// (`io_uring/futex.c`: `io_futex_wakev_fn` returns early when the claim
/// fails, and `futex_wake` counts it anyway). A completion the consumer
/// observes needs nothing more: it re-checks every word.
pub(crate) fn outcome_of(result: i32, waiter: &Waiter) -> (Outcome, i32) {
    if let Some(vector) = waiter.vector() {
        if result >= 0 {
            waiter.set_index(result as usize);
            return (Outcome::Woken, 0);
        }
        match -result {
            libc::EAGAIN => {
                waiter.set_index(vector.first_changed(0..vector.len()).unwrap_or(0));
                return (Outcome::Mismatch, 0);
            }
            libc::ECANCELED if waiter.cancel_requested() => return (Outcome::Woken, 0),
            _ => {}
        }
    }
    match -result {
        0 => (Outcome::Woken, 0),
        libc::EAGAIN => (Outcome::Mismatch, 0),
        libc::ECANCELED if waiter.cancel_requested() => (Outcome::Cancelled, 0),
        libc::ECANCELED | libc::EINTR => (Outcome::Spurious, 0),
        errno => (Outcome::Failed, errno),
    }
}

/// The backend of this process, once started.
static CURRENT: AtomicPtr<Backend> = AtomicPtr::new(std::ptr::null_mut());
/// Serialises start-up; a spin lock so a `fork` child can simply reset it.
static STARTING: AtomicBool = AtomicBool::new(false);
/// The errno of a failed start-up, so later calls fail fast (0: none).
/// Transient failures (`EMFILE`, `ENOMEM`, …) are not remembered.
static START_ERRNO: AtomicI32 = AtomicI32::new(0);
/// What `select_backend` asked for: 0 unset, 1 auto, 2 io_uring, 3 thread.
static REQUESTED: AtomicU8 = AtomicU8::new(0);
/// Whether the `fork` child handler is registered. Not a `std::sync::Once`:
/// a fork while another thread registers would leave a child's `Once`
/// running for ever.
static ATFORK: ForkSafeMutex<bool> = ForkSafeMutex::new(false);
/// The backends inherited from parents through `fork`, newest first: never
/// used again, but kept reachable so leak checkers in the child do not
/// report them.
static INHERITED: [AtomicPtr<Backend>; 4] = [const { AtomicPtr::new(std::ptr::null_mut()) }; 4];

unsafe extern "C" fn forget_after_fork() {
    // The child has none of the parent's helper threads: start over. The
    // parent's backend stays allocated (leaked) so stale pointers stay valid.
    let parent = CURRENT.swap(std::ptr::null_mut(), Ordering::SeqCst);
    if !parent.is_null() {
        for i in (1..INHERITED.len()).rev() {
            INHERITED[i].store(INHERITED[i - 1].load(Ordering::Relaxed), Ordering::Relaxed);
        }
        INHERITED[0].store(parent, Ordering::SeqCst);
    }
    STARTING.store(false, Ordering::SeqCst);
    START_ERRNO.store(0, Ordering::SeqCst);
    crate::process::forked();
}

/// Whether `backend` is the one running in this process (false for a
/// backend inherited through `fork`, whose threads stayed in the parent).
pub(crate) fn is_live(backend: &'static Backend) -> bool {
    std::ptr::eq(CURRENT.load(Ordering::Acquire), backend)
}

fn encode(kind: Option<BackendKind>) -> u8 {
    match kind {
        None => 1,
        Some(BackendKind::IoUring) => 2,
        Some(BackendKind::Thread) => 3,
    }
}

fn requested() -> io::Result<Option<BackendKind>> {
    match REQUESTED.load(Ordering::Acquire) {
        2 => return Ok(Some(BackendKind::IoUring)),
        3 => return Ok(Some(BackendKind::Thread)),
        1 => return Ok(None),
        _ => {}
    }
    match std::env::var("AFX_BACKEND") {
        Err(_) => Ok(None),
        Ok(value) => BackendKind::parse(&value).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("AFX_BACKEND={value:?}: expected \"io_uring\", \"thread\" or \"auto\""),
            )
        }),
    }
}

/// Errors that say "not now" (out of file descriptors, memory, threads)
/// rather than "not here": neither a reason to fall back to another backend
/// for the life of the process, nor to remember the failure.
pub(crate) fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN)
    )
}

/// What a failed wait or start reports for `errno`. A backend only fails
/// with `EAGAIN` when it could not get a resource — in practice a thread it
/// had to start (`pthread_create`: `RLIMIT_NPROC`, `kernel.threads-max`, no
/// memory for a stack); a word that changed is never a failure. `EAGAIN`
/// means "the word changed" (and "armed, try again later") at the C
/// boundary, so such a failure is reported as `ENOMEM` ("could not
/// allocate what the wait needs"), which callers already treat as
/// transient. Every other errno passes unchanged.
pub(crate) fn reported_errno(errno: i32) -> i32 {
    if errno == libc::EAGAIN {
        libc::ENOMEM
    } else {
        errno
    }
}

fn start(kind: Option<BackendKind>) -> io::Result<&'static Backend> {
    start_kind(kind).map_err(|e| match e.raw_os_error() {
        Some(errno) if reported_errno(errno) != errno => {
            io::Error::from_raw_os_error(reported_errno(errno))
        }
        _ => e,
    })
}

fn start_kind(kind: Option<BackendKind>) -> io::Result<&'static Backend> {
    match kind {
        Some(BackendKind::IoUring) => UringBackend::start(),
        Some(BackendKind::Thread) => ThreadBackend::start(),
        None => match UringBackend::start() {
            // Not "io_uring cannot run here": a resource shortage, or a bad
            // setting (`AFX_URING_SUBMIT`), which the thread backend must
            // not hide.
            Err(e) if is_transient(&e) || e.kind() == io::ErrorKind::InvalidInput => Err(e),
            Err(_) => ThreadBackend::start(),
            ok => ok,
        },
    }
}

/// The running backend, starting it on first use.
///
/// # Errors
/// `EINVAL` for a bad `AFX_BACKEND`; for an explicitly requested backend
/// that cannot run, the reason (`ENOSYS`, `EPERM`, `EOPNOTSUPP`, …).
pub(crate) fn current() -> io::Result<&'static Backend> {
    let ptr = CURRENT.load(Ordering::Acquire);
    if !ptr.is_null() {
        // SAFETY: backends are leaked, never freed.
        return Ok(unsafe { &*ptr });
    }
    start_slow()
}

#[cold]
fn start_slow() -> io::Result<&'static Backend> {
    {
        let mut registered = ATFORK.lock();
        if !*registered {
            *registered = sys::fork::on_fork_child(forget_after_fork).is_ok();
        }
    }
    while STARTING
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        std::thread::yield_now();
    }
    let result = (|| {
        let ptr = CURRENT.load(Ordering::Acquire);
        if !ptr.is_null() {
            // SAFETY: backends are leaked, never freed.
            return Ok(unsafe { &*ptr });
        }
        let errno = START_ERRNO.load(Ordering::Acquire);
        if errno != 0 {
            return Err(io::Error::from_raw_os_error(errno));
        }
        match requested().and_then(start) {
            Ok(backend) => {
                CURRENT.store(backend as *const Backend as *mut Backend, Ordering::Release);
                Ok(backend)
            }
            Err(e) => {
                if !is_transient(&e) {
                    START_ERRNO.store(e.raw_os_error().unwrap_or(libc::EINVAL), Ordering::Release);
                }
                Err(e)
            }
        }
    })();
    STARTING.store(false, Ordering::Release);
    result
}

/// Chooses the backend for this process (`None`: probe, io_uring first),
/// starts it, and returns the kind in use. Takes precedence over
/// `AFX_BACKEND`.
///
/// # Errors
/// `EBUSY` (`ErrorKind::ResourceBusy`) if a different backend already runs
/// in this process; otherwise why the requested backend cannot run.
pub fn select_backend(kind: Option<BackendKind>) -> io::Result<BackendKind> {
    let running = CURRENT.load(Ordering::Acquire);
    if running.is_null() {
        REQUESTED.store(encode(kind), Ordering::Release);
        START_ERRNO.store(0, Ordering::Release);
    }
    let backend = current()?;
    match kind {
        Some(want) if want != backend.kind() => Err(io::Error::from_raw_os_error(libc::EBUSY)),
        _ => Ok(backend.kind()),
    }
}

/// The backend serving async waits in this process, starting it if needed.
///
/// # Errors
/// As for [`select_backend`].
pub fn backend() -> io::Result<BackendKind> {
    current().map(Backend::kind)
}

/// Leaks `backend` for the life of the process (fork children included).
fn leak(backend: Backend) -> &'static Backend {
    Box::leak(Box::new(backend))
}
