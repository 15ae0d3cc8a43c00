//! The only place where the crate talks to the kernel.
//!
//! One file per kernel mechanism, each wrapper a thin, documented call of one
//! syscall. Every raw result is turned into `io::Result` by [`cvt`] (classic
//! `-1` + `errno` calls) or [`cvt_neg`] (io_uring-style `-errno` results), so
//! the two conventions never mix.
#![allow(unsafe_code)]

pub(crate) mod eventfd;
pub(crate) mod fork;
pub(crate) mod futex;
pub(crate) mod process;
pub(crate) mod shm;
pub(crate) mod signal;
pub(crate) mod thread;
pub(crate) mod uring;

use std::io;

/// Converts a classic syscall return (`-1` and `errno` on failure).
pub(crate) fn cvt(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Converts an io_uring-style result (`-errno` on failure).
pub(crate) fn cvt_neg(ret: i32) -> io::Result<i32> {
    if ret < 0 {
        Err(io::Error::from_raw_os_error(-ret))
    } else {
        Ok(ret)
    }
}
