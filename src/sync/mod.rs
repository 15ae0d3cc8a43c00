//! Cross-process synchronisation primitives built on [`AsyncFutex`]: a
//! [`Mutex`] with owner-death recovery, a counting [`Semaphore`], an
//! [`EventCount`] (broadcast), and an SPSC byte [`channel`].
//!
//! Each primitive is a small `#[repr(C)]` *state* struct that lives in
//! memory shared between processes ([`MutexState`], [`SemaphoreState`],
//! [`EventState`], [`ChannelHeader`]), with a documented, versioned layout
//! so that C, C++, Python and Rust processes can share one, plus a
//! per-process *handle* ([`Mutex`], …) holding that process's futex
//! handles on the state's words. The C API (`afx_mutex_*`, `afx_sem_*`,
//! `afx_event_*`, `afx_chan_*`) has the same semantics.
//!
//! Layout rules common to all of them:
//! - every word is native-endian and accessed only atomically (C:
//!   `__atomic_*` / `<stdatomic.h>`, sequentially consistent);
//! - one `version` word holds `kind << 16 | layout version`
//!   ([`MUTEX_VERSION`], …): `create` writes it, `open` checks it and fails
//!   with `EPROTO` on a mismatch (uninitialised or foreign memory);
//! - all-zero memory is *not* an initialised state: `create` (or the
//!   `init` of the state struct) first, then `open` in every process.
//!
//! The fast paths make no system call: an uncontended lock/unlock, a
//! `release` or `publish` nobody waits for, a send or receive while the
//! other side is awake.
//! [`futex_calls`] counts the futex waits and wakes these primitives issued
//! in this process, so tests (and you) can check that.
//!
//! Blocking forms are named `blocking_*` and take an optional timeout
//! (`ETIMEDOUT` when it passes); async forms are the unsuffixed
//! `async fn`s, cancel-safe and executor-agnostic (they need no Tokio
//! timer).
#![allow(unsafe_code)]

pub mod channel;
pub mod event;
pub mod mutex;
mod owner;
pub mod semaphore;
mod ticker;

use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use channel::{ChannelHeader, Receiver, Sender, CHANNEL_VERSION};
pub use event::{EventCount, EventState, EVENT_VERSION};
pub use mutex::{Mutex, MutexGuard, MutexState, MUTEX_VERSION, OWNER_CHECK_INTERVAL};
pub use semaphore::{Semaphore, SemaphoreState, SEMAPHORE_VERSION};

use crate::{AsyncFutex, SharedMemory, WaitStatus};

/// Futex waits and wakes issued by the primitives of this module in this
/// process (a `fork` child inherits the parent's count).
static FUTEX_CALLS: AtomicU64 = AtomicU64::new(0);

/// How many futex system calls (waits — blocking or async — and wakes) the
/// primitives of [`sync`](self) have issued in this process so far.
///
/// Their uncontended paths issue none: compare the count before and after.
pub fn futex_calls() -> u64 {
    FUTEX_CALLS.load(Ordering::Relaxed)
}

fn count_call() {
    FUTEX_CALLS.fetch_add(1, Ordering::Relaxed);
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// `futex.wake(n)`, counted.
fn wake(futex: &AsyncFutex, n: u32) -> io::Result<u32> {
    count_call();
    futex.wake(n)
}

/// `futex.wait_async(expected)`, counted.
async fn wait_async(futex: &AsyncFutex, expected: u32) -> io::Result<()> {
    count_call();
    futex.wait_async(expected).await
}

/// A blocking wait until `deadline` (`None`: forever), counted. `Ok(false)`
/// when the deadline passed.
fn wait_until(futex: &AsyncFutex, expected: u32, deadline: Option<Instant>) -> io::Result<bool> {
    let timeout = match deadline {
        None => None,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            Some(left)
        }
    };
    count_call();
    Ok(futex.wait(expected, timeout)? == WaitStatus::Completed)
}

fn deadline_of(timeout: Option<Duration>) -> Option<Instant> {
    timeout.map(|t| Instant::now().checked_add(t).unwrap_or_else(far_future))
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 86_400)
}

fn timed_out() -> io::Error {
    errno(libc::ETIMEDOUT)
}

/// Where a state struct lives, and what keeps it mapped.
struct Place<T> {
    ptr: *const T,
    _mem: Option<Arc<SharedMemory>>,
}

// SAFETY: the state structs are made of atomics (plus, for the channel,
// frames whose access is ordered by the ring's atomics); the pointer stays
// valid while `_mem` (or the caller of `from_ptr`) keeps it mapped.
unsafe impl<T: Sync> Send for Place<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for Place<T> {}

impl<T> Place<T> {
    /// The struct at byte `offset` of `mem`, of `len` bytes.
    fn in_memory(mem: &Arc<SharedMemory>, offset: usize, len: usize) -> io::Result<Place<T>> {
        let end = offset.checked_add(len).ok_or_else(|| errno(libc::EINVAL))?;
        if end > mem.len() || offset % std::mem::align_of::<T>() != 0 {
            return Err(errno(libc::EINVAL));
        }
        Ok(Place {
            // SAFETY: in bounds (checked above).
            ptr: unsafe { mem.as_ptr().add(offset) }.cast::<T>(),
            _mem: Some(Arc::clone(mem)),
        })
    }

    /// # Safety
    /// `ptr` is aligned and stays mapped while the place lives.
    unsafe fn raw(ptr: *const T) -> io::Result<Place<T>> {
        if ptr.is_null() || (ptr as usize) % std::mem::align_of::<T>() != 0 {
            return Err(errno(libc::EINVAL));
        }
        Ok(Place { ptr, _mem: None })
    }

    fn get(&self) -> &T {
        // SAFETY: valid and aligned by construction.
        unsafe { &*self.ptr }
    }

    /// A futex handle on a word inside the struct.
    fn futex(&self, word: &AtomicU32) -> io::Result<AsyncFutex> {
        // SAFETY: the word is inside the struct, which outlives the handle:
        // every handle of this module declares its futexes before its place,
        // so they are dropped (and their waits gone) before the mapping.
        unsafe { AsyncFutex::new(word) }
    }
}

/// Checks a state's version word.
fn check_version(word: &AtomicU32, expected: u32) -> io::Result<()> {
    if word.load(Ordering::Acquire) == expected {
        Ok(())
    } else {
        Err(errno(libc::EPROTO))
    }
}
