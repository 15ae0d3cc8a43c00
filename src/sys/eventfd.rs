//! `eventfd(2)`: the readiness signal a foreign event loop polls.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::cvt;

/// Creates a non-blocking, close-on-exec eventfd with a zero counter.
pub(crate) fn create() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) }.into())?;
    // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Puts a fresh eventfd (zero counter, `EFD_NONBLOCK | EFD_CLOEXEC`) in
/// place of `fd`, under the same number. The old file stays open wherever
/// else it is open: in the parent, when called in a `fork` child.
pub(crate) fn renew(fd: BorrowedFd<'_>) -> io::Result<()> {
    let fresh = create()?;
    // SAFETY: plain integer arguments; `fd` stays owned by its owner and
    // now refers to the fresh file, whose temporary number `fresh` closes.
    cvt(unsafe { libc::dup3(fresh.as_raw_fd(), fd.as_raw_fd(), libc::O_CLOEXEC) }.into())?;
    Ok(())
}

/// Adds one to the counter, making the fd readable. Never blocks.
pub(crate) fn signal(fd: BorrowedFd<'_>) -> io::Result<()> {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid u64.
    let ret = unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    match cvt(ret as libc::c_long) {
        Ok(_) => Ok(()),
        // The counter is saturated: the fd is readable, which is all we want.
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Resets the counter to zero (the fd stops being readable). Never blocks.
pub(crate) fn drain(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut value: u64 = 0;
    // SAFETY: reads 8 bytes into a valid u64.
    let ret = unsafe { libc::read(fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
    match cvt(ret as libc::c_long) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether the counter is non-zero (the fd polls readable). Never blocks.
pub(crate) fn is_readable(fd: BorrowedFd<'_>) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let ret = unsafe { libc::poll(&mut pfd, 1, 0) };
    ret == 1 && pfd.revents & libc::POLLIN != 0
}
