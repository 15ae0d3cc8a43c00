//! Fault injection for the test suite: makes chosen internal operations
//! fail on purpose, so that error paths a healthy kernel almost never takes
//! (a full io_uring submission queue, a failing `io_uring_enter`, a panic
//! inside a C constructor) can be exercised and proved.
//!
//! Compiled in only with `debug_assertions` (what `cargo test` builds). In a
//! release build [`fail`] is an inlined `None` and every hook folds away:
//! nothing is read, counted or branched on in the hot paths. Integration
//! tests reach the switches as `asyncfutex::__fault` (hidden, not API).
//!
//! A site is armed with [`inject`]`(site, skip, count, errno)`: its next
//! `skip` hits pass, the `count` hits after those fail with `errno`
//! ([`FOREVER`]: every hit until [`clear`]). [`failures`] counts the
//! failures injected at a site, so a test can tell that a path was taken.
//! The switches are process-wide: a test that uses them must run alone in
//! its process (e.g. in a fork child).

use std::io;

/// A place where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Site {
    /// io_uring backend, ring thread: queueing the SQE of an armed wait.
    UringWaitPush,
    /// io_uring backend, ring thread: queueing the SQE of a cancel.
    UringCancelPush,
    /// io_uring backend, ring thread: queueing the doorbell's futex wait.
    UringDoorbellPush,
    /// io_uring backend, ring thread: `io_uring_enter` (submit and wait).
    UringEnter,
    /// C ABI: a panic inside a constructor's catch_unwind boundary
    /// (`afx_new`, `afx_*_open`); the errno is ignored.
    FfiConstructorPanic,
}

/// `count` for [`inject`]: fail every hit until [`clear`].
pub const FOREVER: u32 = u32::MAX;

#[cfg(debug_assertions)]
mod imp {
    use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

    use super::{Site, FOREVER};

    pub(super) struct State {
        skip: AtomicU32,
        fail: AtomicU32,
        errno: AtomicI32,
        failures: AtomicU32,
    }

    const SITES: usize = Site::FfiConstructorPanic as usize + 1;

    #[allow(clippy::declare_interior_mutable_const)]
    const IDLE: State = State {
        skip: AtomicU32::new(0),
        fail: AtomicU32::new(0),
        errno: AtomicI32::new(0),
        failures: AtomicU32::new(0),
    };

    static STATE: [State; SITES] = [IDLE; SITES];

    pub(super) fn inject(site: Site, skip: u32, count: u32, errno: i32) {
        let s = &STATE[site as usize];
        s.fail.store(0, Ordering::SeqCst);
        s.failures.store(0, Ordering::SeqCst);
        s.errno.store(errno, Ordering::SeqCst);
        s.skip.store(skip, Ordering::SeqCst);
        s.fail.store(count, Ordering::SeqCst);
    }

    pub(super) fn disarm(site: Site) {
        let s = &STATE[site as usize];
        s.fail.store(0, Ordering::SeqCst);
        s.skip.store(0, Ordering::SeqCst);
    }

    pub(super) fn failures(site: Site) -> u32 {
        STATE[site as usize].failures.load(Ordering::SeqCst)
    }

    /// The errno to fail this hit with, if it is to fail.
    pub(super) fn hit(site: Site) -> Option<i32> {
        let s = &STATE[site as usize];
        if s.fail.load(Ordering::SeqCst) == 0 {
            return None;
        }
        if s.skip
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return None;
        }
        let taken = s
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
                0 => None,
                FOREVER => Some(FOREVER),
                n => Some(n - 1),
            });
        taken.ok()?;
        s.failures.fetch_add(1, Ordering::SeqCst);
        Some(s.errno.load(Ordering::SeqCst))
    }
}

/// Whether this hit of `site` is to fail, and with which error.
#[inline(always)]
pub(crate) fn fail(site: Site) -> Option<io::Error> {
    #[cfg(debug_assertions)]
    {
        imp::hit(site).map(io::Error::from_raw_os_error)
    }
    #[cfg(not(debug_assertions))]
    {
        let _ = site;
        None
    }
}

/// Arms `site`: the next `skip` hits pass, the `count` after them fail
/// with `errno` ([`FOREVER`]: all of them until [`clear`]). Resets the
/// site's [`failures`] count. Does nothing in release builds.
pub fn inject(site: Site, skip: u32, count: u32, errno: i32) {
    #[cfg(debug_assertions)]
    imp::inject(site, skip, count, errno);
    #[cfg(not(debug_assertions))]
    let _ = (site, skip, count, errno);
}

/// Disarms `site` (its [`failures`] count is kept).
pub fn clear(site: Site) {
    #[cfg(debug_assertions)]
    imp::disarm(site);
    #[cfg(not(debug_assertions))]
    let _ = site;
}

/// How many failures were injected at `site` since it was last armed
/// (always 0 in release builds).
pub fn failures(site: Site) -> u32 {
    #[cfg(debug_assertions)]
    {
        imp::failures(site)
    }
    #[cfg(not(debug_assertions))]
    {
        let _ = site;
        0
    }
}

/// Whether fault injection is compiled in (debug builds).
pub const ENABLED: bool = cfg!(debug_assertions);
