//! Shared memory: `memfd_create(2)`, `shm_open(3)`, `mmap(2)`.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use super::cvt;

/// `memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING)`.
pub(crate) fn memfd_create(name: &CStr) -> io::Result<OwnedFd> {
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: `name` is a valid NUL-terminated string.
    let fd = cvt(unsafe { libc::memfd_create(name.as_ptr(), flags) }.into())?;
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `shm_open(name, flags | O_CLOEXEC, mode)`.
pub(crate) fn shm_open(name: &CStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid NUL-terminated string.
    let fd = cvt(unsafe { libc::shm_open(name.as_ptr(), flags | libc::O_CLOEXEC, mode) }.into())?;
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `shm_unlink(name)`.
pub(crate) fn shm_unlink(name: &CStr) -> io::Result<()> {
    // SAFETY: `name` is a valid NUL-terminated string.
    cvt(unsafe { libc::shm_unlink(name.as_ptr()) }.into()).map(drop)
}

/// `ftruncate(fd, len)`.
pub(crate) fn set_len(fd: BorrowedFd<'_>, len: usize) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: plain syscall on a borrowed, open descriptor.
    cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), len) }.into()).map(drop)
}

/// `fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK)`: from now on nobody (holder of
/// any fd of the object, in any process) can make it smaller, so no mapping
/// of it can lose pages under a futex word.
///
/// # Errors
/// `EPERM` if the object does not allow sealing (not a memfd made with
/// `MFD_ALLOW_SEALING`, or `F_SEAL_SEAL` set); `EBUSY`/`EINVAL` per
/// fcntl(2).
pub(crate) fn seal_shrink(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain syscall on a borrowed, open descriptor.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) }.into())
        .map(drop)
}

/// The size of the object behind `fd` (`fstat(2)`).
pub(crate) fn len_of(fd: BorrowedFd<'_>) -> io::Result<usize> {
    // SAFETY: `st` is plain data that fstat fills in.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is valid and writable.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) }.into())?;
    Ok(st.st_size as usize)
}

/// `mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED [| MAP_ANONYMOUS], fd, 0)`.
/// `None` maps anonymous shared memory (inherited by `fork` children).
pub(crate) fn map_shared(fd: Option<BorrowedFd<'_>>, len: usize) -> io::Result<NonNull<u8>> {
    if len == 0 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let (flags, raw) = match fd {
        Some(fd) => (libc::MAP_SHARED, fd.as_raw_fd()),
        None => (libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1),
    };
    // SAFETY: a fresh mapping chosen by the kernel; nothing else is touched.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            raw,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(ptr.cast()).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))
}

/// `munmap(ptr, len)`.
///
/// # Safety
/// `ptr`/`len` must be a mapping made by [`map_shared`] that nothing uses
/// any more.
pub(crate) unsafe fn unmap(ptr: NonNull<u8>, len: usize) {
    // SAFETY: guaranteed by the caller.
    unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
}
