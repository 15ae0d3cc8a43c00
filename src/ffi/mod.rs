//! The C ABI: `afx_*` functions over [`EventFdFutex`], exported from
//! `libasyncfutex.so` and described by the generated `include/asyncfutex.h`.
//!
//! Conventions (liburing style): every `int` function returns `>= 0` on
//! success and `-errno` on failure; `afx_new` returns NULL and sets `errno`.
//! NULL handles, NULL or misaligned addresses and unknown flags give
//! `-EINVAL`. No panic crosses the boundary: each body runs inside
//! one catch_unwind boundary, which turns one into `-ENOTRECOVERABLE`
//! (constructors: NULL with `errno` `ENOTRECOVERABLE`).
#![allow(unsafe_code)]
#![allow(non_camel_case_types)]

mod errors;
mod sync;
mod waitv;
pub use self::sync::*;
pub use self::waitv::*;

use std::os::fd::AsRawFd;
use std::os::raw::{c_char, c_int};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::backend::{self, BackendKind};
use crate::futex::{AsyncFutex, Scope};
use crate::sys::futex as sys_futex;
use crate::EventFdFutex;

pub use self::errors::afx_strerror;
use self::errors::errno_of;

/// Flag for `afx_new`: the word is process-local (private futex key).
pub const AFX_PRIVATE: u32 = 1;
/// Library version, major part (matches `afx_version()`).
pub const AFX_VERSION_MAJOR: u32 = 0;
/// Library version, minor part.
pub const AFX_VERSION_MINOR: u32 = 1;
/// Library version, patch part.
pub const AFX_VERSION_PATCH: u32 = 0;
/// Library version as one number, `major * 10000 + minor * 100 + patch`
/// (0.1.0 is 100), for `#if AFX_VERSION_NUMBER >= ...` checks.
pub const AFX_VERSION_NUMBER: u32 =
    AFX_VERSION_MAJOR * 10000 + AFX_VERSION_MINOR * 100 + AFX_VERSION_PATCH;
/// `afx_select_backend`: probe, io_uring first, threads as fallback.
pub const AFX_BACKEND_AUTO: c_int = 0;
/// Backend: `IORING_OP_FUTEX_WAIT` on one ring served by one library thread.
pub const AFX_BACKEND_IO_URING: c_int = 1;
/// Backend: helper threads in `futex_waitv(2)`, up to 127 waited-on words each; where
/// `futex_waitv` is refused, one `FUTEX_WAIT_BITSET` helper per pending wait.
pub const AFX_BACKEND_THREAD: c_int = 2;

/// An opaque futex handle: a word, its eventfd and at most one armed wait.
pub struct afx_t {
    inner: EventFdFutex,
}

/// Runs `body`, turning a panic into `on_panic`.
fn boundary<T>(on_panic: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(on_panic)
}

/// Runs a constructor's `body`, turning a panic into NULL with `errno` set
/// to `ENOTRECOVERABLE` (as the `int` functions return it).
fn boundary_new<T>(body: impl FnOnce() -> *mut T) -> *mut T {
    catch_unwind(AssertUnwindSafe(|| {
        if crate::fault::fail(crate::fault::Site::FfiConstructorPanic).is_some() {
            panic!("asyncfutex: injected panic in a C constructor (fault injection)");
        }
        body()
    }))
    .unwrap_or_else(|_| {
        set_errno(libc::ENOTRECOVERABLE);
        std::ptr::null_mut()
    })
}

/// Borrows a handle, or `None` for NULL.
///
/// # Safety
/// `f` is NULL or a live handle from `afx_new`.
unsafe fn handle<'a>(f: *const afx_t) -> Option<&'a afx_t> {
    // SAFETY: guaranteed by the caller.
    unsafe { f.as_ref() }
}

fn set_errno(errno: c_int) {
    // SAFETY: `__errno_location` returns this thread's errno slot.
    unsafe { *libc::__errno_location() = errno };
}

fn kind_code(kind: BackendKind) -> c_int {
    match kind {
        BackendKind::IoUring => AFX_BACKEND_IO_URING,
        BackendKind::Thread => AFX_BACKEND_THREAD,
    }
}

/// Creates a handle on the 32-bit futex word at `addr`.
///
/// `flags` is 0 (shared key: the word may be in memory shared between
/// processes) or `AFX_PRIVATE` (process-local word). Each process makes its
/// own handle on its own mapping of the word. The handle owns an eventfd
/// (`EFD_NONBLOCK | EFD_CLOEXEC`) and starts the process's wait backend on
/// first use.
///
/// Returns the handle, or NULL with `errno` set: `EINVAL` (NULL or
/// misaligned `addr`, unknown flags, bad `AFX_BACKEND`), `EFAULT` (`addr`
/// not readable), `EMFILE`/`ENFILE`, `ENOMEM` (no memory, or the backend's
/// thread could not be started: `RLIMIT_NPROC`, `kernel.threads-max`), why
/// the requested backend cannot run (`ENOSYS`, `EPERM`, `EOPNOTSUPP`), or
/// `ENOTRECOVERABLE` (an internal error: a caught panic).
///
/// Memory: free with `afx_free`. The word must stay mapped until then.
/// Thread safety: may be called from any thread.
///
/// # Safety
/// `addr` must be NULL or point to a `uint32_t` that stays mapped until the
/// handle is freed and is accessed only atomically by this process.
#[no_mangle]
pub unsafe extern "C" fn afx_new(addr: *mut u32, flags: u32) -> *mut afx_t {
    boundary_new(|| {
        if flags & !AFX_PRIVATE != 0 {
            set_errno(libc::EINVAL);
            return std::ptr::null_mut();
        }
        let scope = if flags & AFX_PRIVATE != 0 {
            Scope::Private
        } else {
            Scope::Shared
        };
        // SAFETY: the caller's contract; `with_scope` checks NULL, alignment
        // and readability itself.
        let made = unsafe { AsyncFutex::with_scope(addr.cast::<AtomicU32>(), scope) }
            .and_then(EventFdFutex::new);
        match made {
            Ok(inner) => Box::into_raw(Box::new(afx_t { inner })),
            Err(e) => {
                set_errno(errno_of(&e));
                std::ptr::null_mut()
            }
        }
    })
}

/// Frees a handle. NULL is a no-op.
///
/// An armed wait is cancelled first; a wake it had consumed but that was
/// not acknowledged is passed on with a `wake(1)`. Returns once no kernel
/// wait of the handle remains: after that the library never touches the
/// word again, and its eventfd is closed. (The cancel is retried as for
/// `afx_cancel`.)
///
/// # Safety
/// `f` is NULL or a live handle; it must not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn afx_free(f: *mut afx_t) {
    boundary((), || {
        if !f.is_null() {
            // SAFETY: a live handle from `afx_new`, now given back.
            drop(unsafe { Box::from_raw(f) });
        }
    })
}

/// Wakes at most `n` waiters on the word (`UINT32_MAX`: all), in any process
/// and of any kind (async, blocking, plain `futex(2)` users).
///
/// Returns how many were woken (`n == 0` wakes nobody, without a syscall),
/// or `-EINVAL` (NULL handle), `-EFAULT`.
///
/// Store the new value before waking. Thread safety: any thread, any time.
///
/// # Safety
/// `f` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn afx_wake(f: *mut afx_t, n: u32) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        // SAFETY: the caller's contract.
        let Some(f) = (unsafe { handle(f) }) else {
            return -libc::EINVAL;
        };
        match f.inner.futex().wake(n) {
            Ok(woken) => woken.min(i32::MAX as u32) as c_int,
            Err(e) => -errno_of(&e),
        }
    })
}

/// Blocks while the word holds `expected`, until woken or for at most
/// `timeout_ns` nanoseconds (`< 0`: forever; `0`: only checks the word).
///
/// Returns 0 when woken *or* when the word did not hold `expected`
/// (re-check the word); `-ETIMEDOUT`; `-EINTR` when a signal handler ran;
/// `-EINVAL` (NULL handle), `-EFAULT`.
///
/// Thread safety: any thread, any number at once; independent of the armed
/// async wait.
///
/// # Safety
/// `f` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn afx_wait(f: *mut afx_t, expected: u32, timeout_ns: i64) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        // SAFETY: the caller's contract.
        let Some(f) = (unsafe { handle(f) }) else {
            return -libc::EINVAL;
        };
        let futex = f.inner.futex();
        if timeout_ns == 0 {
            return if futex.word().load(Ordering::SeqCst) != expected {
                0
            } else {
                -libc::ETIMEDOUT
            };
        }
        let deadline = (timeout_ns > 0)
            .then(|| sys_futex::deadline_after(Duration::from_nanos(timeout_ns as u64)));
        // SAFETY: the word is mapped while the handle lives.
        let result = unsafe {
            sys_futex::wait(
                futex.word(),
                expected,
                futex.scope() == Scope::Private,
                deadline.as_ref(),
            )
        };
        match result {
            Ok(sys_futex::WaitResult::TimedOut) => -libc::ETIMEDOUT,
            Ok(_) => 0,
            Err(e) => -errno_of(&e),
        }
    })
}

/// The handle's eventfd, to poll for `EPOLLIN` (level- or edge-triggered):
/// it becomes readable when the armed wait completes.
///
/// Returns the fd, or `-EINVAL` for a NULL handle. The fd belongs to the
/// handle: never read, write or close it; its number stays the same for
/// the handle's life. In a fork child, the first call on a handle made
/// before the fork puts a fresh eventfd of the child's own under that
/// number (see "After fork" at the top of this header).
///
/// # Safety
/// `f` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn afx_eventfd(f: *const afx_t) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        // SAFETY: the caller's contract.
        match unsafe { handle(f) } {
            Some(f) => f.inner.as_raw_fd(),
            None => -libc::EINVAL,
        }
    })
}

/// Arms an async wait: the eventfd becomes readable when the word is woken,
/// or at once if it does not hold `expected`. The kernel is handed exactly
/// `expected`, so a store + wake between your read and this call is never
/// lost.
///
/// Returns 0 when armed, or:
/// - `-EBUSY`: a wait is already armed and not yet acknowledged
///   (`afx_ack`) or cancelled;
/// - `-EINVAL`: NULL handle; or, when this call starts the backend (the
///   first arm in a `fork` child), a bad `AFX_BACKEND` or
///   `AFX_THREAD_SIGNAL`;
/// - when this call starts the backend: why the requested one cannot run
///   (`-ENOSYS`, `-EPERM`, `-EOPNOTSUPP`), `-EMFILE`/`-ENFILE` (no fd for
///   the ring), `-ENOMEM` (no memory, or its thread could not be started:
///   `RLIMIT_NPROC`, `kernel.threads-max`), `-EIO` (its thread ended
///   before reporting); all but the first kind are transient, a later
///   call may succeed;
/// - `-ENOTRECOVERABLE`: an internal error (a caught panic).
///
/// A wait the kernel refuses (bad word, no helper thread, a failing ring)
/// is not reported here: it completes at once and `afx_ack` returns why.
/// The function never returns `-EAGAIN`: a word that does not hold
/// `expected` arms an immediate completion.
///
/// Thread safety: the async trio (`afx_wait_async`, `afx_ack`,
/// `afx_cancel`) of one handle belongs to one owner at a time.
///
/// io_uring backend: the calling thread submits the wait on a ring of its
/// own, and its completion runs on this thread: if the thread then sleeps
/// in `epoll_wait`, the completion interrupts it with `EINTR` (retry it;
/// `AFX_URING_SUBMIT=thread` avoids this, see "EINTR" at the top of this
/// header). If the thread exits first, the wait completes (spuriously if
/// no wake reached it).
///
/// # Safety
/// `f` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn afx_wait_async(f: *mut afx_t, expected: u32) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        // SAFETY: the caller's contract.
        let Some(f) = (unsafe { handle(f) }) else {
            return -libc::EINVAL;
        };
        match f.inner.arm(expected) {
            Ok(()) => 0,
            Err(e) => -errno_of(&e),
        }
    })
}

/// Acknowledges the armed wait.
///
/// Returns 1 if it completed: it is disarmed and the eventfd drained;
/// re-check the word (a completion can be spurious) and arm again if
/// needed. Returns 0 if it is still pending or nothing is armed.
///
/// Errors (the failed wait is disarmed; arm again when it makes sense):
/// - `-EINVAL`: NULL handle; or the kernel rejected the futex operation;
/// - `-EFAULT`: the word was not mapped or not readable when the kernel
///   looked (e.g. unmapped, or its shared memory object truncated);
/// - `-ENOMEM`: the wait could not get what it needs: no memory, or (thread
///   backend) the helper thread it needed could not be started
///   (`RLIMIT_NPROC`, `kernel.threads-max`). Transient. Never `-EAGAIN`,
///   which would read as "the word changed";
/// - io_uring backend: the errno of `io_uring_enter` while it keeps
///   failing (e.g. `-EIO`), or of queueing the wait; transient;
/// - `-ENOTRECOVERABLE`: an internal error (a caught panic);
/// - `-EBADF` and other `read(2)` errors of the handle's eventfd: only if
///   the caller read or closed the eventfd, which it must not;
/// - `-EMFILE`/`-ENFILE`: in a fork child, the first use of a handle made
///   before the fork could not make its fresh eventfd.
///
/// In a fork child, a wait the parent had armed on this handle counts as
/// completed: the first `afx_ack` returns 1 (re-check the word) and leaves
/// the parent's wait and eventfd alone.
///
/// # Safety
/// `f` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn afx_ack(f: *mut afx_t) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        // SAFETY: the caller's contract.
        let Some(f) = (unsafe { handle(f) }) else {
            return -libc::EINVAL;
        };
        match f.inner.ack() {
            Ok(true) => 1,
            Ok(false) => 0,
            Err(e) => -errno_of(&e),
        }
    })
}

/// Disarms the armed wait, if any. A wake it had consumed but that was not
/// acknowledged is passed on with a `wake(1)`, so no wake is lost. Returns
/// once the kernel wait is gone and the eventfd is drained. (io_uring
/// backend: a cancel that cannot be queued at once is retried until it
/// is; only while `io_uring_enter` itself keeps failing — the kernel still
/// holds the wait — does this wait for it to work again.)
///
/// Returns 0 (also when nothing was armed), or `-EINVAL` (NULL handle).
///
/// # Safety
/// `f` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn afx_cancel(f: *mut afx_t) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        // SAFETY: the caller's contract.
        let Some(f) = (unsafe { handle(f) }) else {
            return -libc::EINVAL;
        };
        f.inner.cancel();
        0
    })
}

/// The library version as a static string, e.g. `"0.1.0"`.
#[no_mangle]
pub extern "C" fn afx_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The backend serving async waits in this process (`AFX_BACKEND_IO_URING`
/// or `AFX_BACKEND_THREAD`), starting it if needed; or `-errno` if the
/// requested one cannot run (`-EINVAL` for a bad `AFX_BACKEND`).
#[no_mangle]
pub extern "C" fn afx_backend() -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || match backend::backend() {
        Ok(kind) => kind_code(kind),
        Err(e) => -errno_of(&e),
    })
}

/// Chooses this process's backend before first use: `AFX_BACKEND_AUTO`,
/// `AFX_BACKEND_IO_URING` or `AFX_BACKEND_THREAD`; takes precedence over
/// the `AFX_BACKEND` environment variable.
///
/// Returns the backend now in use; `-EBUSY` if a different one already
/// runs; `-EINVAL` for an unknown kind; why the requested one cannot run.
#[no_mangle]
pub extern "C" fn afx_select_backend(kind: c_int) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        let want = match kind {
            AFX_BACKEND_AUTO => None,
            AFX_BACKEND_IO_URING => Some(BackendKind::IoUring),
            AFX_BACKEND_THREAD => Some(BackendKind::Thread),
            _ => return -libc::EINVAL,
        };
        match backend::select_backend(want) {
            Ok(kind) => kind_code(kind),
            Err(e) => -errno_of(&e),
        }
    })
}

/// The name of a backend code (`"io_uring"`, `"thread"`, `"auto"`), or
/// `"unknown"`. Never NULL.
#[no_mangle]
pub extern "C" fn afx_backend_name(kind: c_int) -> *const c_char {
    let name: &'static str = match kind {
        AFX_BACKEND_IO_URING => "io_uring\0",
        AFX_BACKEND_THREAD => "thread\0",
        AFX_BACKEND_AUTO => "auto\0",
        _ => "unknown\0",
    };
    name.as_ptr().cast()
}
