//! errno mapping and `afx_strerror`.

use std::io;
use std::os::raw::{c_char, c_int};

/// The errno that stands for `e` at the C boundary.
pub(crate) fn errno_of(e: &io::Error) -> c_int {
    if let Some(errno) = e.raw_os_error() {
        return errno;
    }
    match e.kind() {
        io::ErrorKind::InvalidInput => libc::EINVAL,
        io::ErrorKind::OutOfMemory => libc::ENOMEM,
        io::ErrorKind::Unsupported => libc::EOPNOTSUPP,
        _ => libc::EIO,
    }
}

/// A static, thread-safe description of an error code as returned by the
/// `afx_*` functions (`-errno`; a positive errno is accepted too). Never
/// NULL; unknown codes give `"unknown error"`.
#[no_mangle]
pub extern "C" fn afx_strerror(err: c_int) -> *const c_char {
    let text: &'static str = match err.unsigned_abs() as c_int {
        0 => "success\0",
        libc::EINVAL => {
            "invalid argument (NULL handle, NULL or misaligned address, unknown flag)\0"
        }
        libc::EFAULT => "the futex word is not mapped or not readable\0",
        libc::EBUSY => "a wait is already armed on this handle, or another backend already runs\0",
        libc::ETIMEDOUT => "timed out\0",
        libc::EINTR => "interrupted by a signal\0",
        libc::EAGAIN => {
            "try again: the operation would block (an _async call: a wait is armed, poll its eventfd)\0"
        }
        libc::ENOMEM => {
            "out of memory, or a library thread could not be started (RLIMIT_NPROC, kernel.threads-max)\0"
        }
        libc::EMFILE => "too many open files in this process\0",
        libc::ENFILE => "too many open files in the system\0",
        libc::ENOSYS => "the kernel lacks a needed system call\0",
        libc::EPERM => {
            "operation not permitted (the mutex is not held by this process; or io_uring / futex_waitv denied)\0"
        }
        libc::EOPNOTSUPP => "not supported by this kernel (io_uring futex ops need Linux 6.7)\0",
        libc::ECANCELED => "operation cancelled\0",
        libc::ENOTRECOVERABLE => {
            "state not recoverable (a mutex unlocked after its owner died without afx_mutex_consistent), or an internal error in asyncfutex\0"
        }
        libc::EPROTO => "the shared state is not initialised, has another layout version, or is corrupt\0",
        libc::EMSGSIZE => "the frame does not fit (longer than the channel's frame size, or the buffer is too small)\0",
        libc::EOVERFLOW => "the semaphore count would pass UINT32_MAX\0",
        libc::EIO => "input/output error\0",
        _ => "unknown error\0",
    };
    text.as_ptr().cast()
}
