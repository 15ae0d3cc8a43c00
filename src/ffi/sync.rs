//! The C API of the cross-process primitives (`afx_mutex_*`, `afx_sem_*`,
//! `afx_event_*`, `afx_chan_*`) over [`crate::sync`].
//!
//! Each primitive has a shared state struct the caller places in shared
//! memory (`afx_mutex_state`, …: layouts identical to the Rust ones,
//! checked at compile time), an `_init` that initialises it once, and a
//! per-process opaque handle from `_open` (NULL + `errno` on error), freed
//! with `_close`. Conventions as for `afx_t`: `int` results are `>= 0` on
//! success and `-errno` on failure, NULL handles give `-EINVAL`.
//!
//! Every blocking call takes `timeout_ns` (`< 0`: forever). The async forms
//! follow one pattern: `afx_X_async(h, …)` either completes now (`>= 0`) or
//! returns `-EAGAIN` with a wait armed on the handle's eventfd
//! (`afx_X_eventfd`); when that fd is readable, call `afx_X_async` again.
//! `afx_X_cancel` disarms (passing on a consumed wake). One async
//! operation per handle at a time, as for `afx_t`.
#![allow(unsafe_code)]
#![allow(non_camel_case_types)]

use std::io;
use std::os::fd::AsRawFd;
use std::os::raw::{c_int, c_void};
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use super::errors::errno_of;
use super::{boundary, boundary_new, set_errno};
use crate::sync::{
    self, ChannelHeader, EventCount, EventState, Mutex, MutexState, Receiver, Semaphore,
    SemaphoreState, Sender,
};
use crate::sys::futex as sys_futex;
use crate::{AsyncFutex, EventFdFutex};

/// `afx_mutex_lock*` result: the lock is held, but its previous holder died
/// holding it (pthread's `EOWNERDEAD`, as a success): repair the data, then
/// `afx_mutex_consistent`.
pub const AFX_OWNER_DIED: c_int = 1;
/// Layout version word of `afx_mutex_state` (`'M' 'X'`, version 1).
pub const AFX_MUTEX_VERSION: u32 = 0x4d58_0001;
/// Layout version word of `afx_sem_state` (`'S' 'M'`, version 1).
pub const AFX_SEM_VERSION: u32 = 0x534d_0001;
/// Layout version word of `afx_event_state` (`'E' 'V'`, version 1).
pub const AFX_EVENT_VERSION: u32 = 0x4556_0001;
/// Layout version word of `afx_chan_header` (`'C' 'H'`, version 2: the
/// counters carry the sleeper flags).
pub const AFX_CHAN_VERSION: u32 = 0x4348_0002;
/// Milliseconds after which a waiting locker checks whether the holder
/// died; poll a mutex's eventfd with at most this timeout.
pub const AFX_MUTEX_CHECK_MS: c_int = 10;
/// `afx_chan_open` role: the one sender.
pub const AFX_CHAN_SENDER: c_int = 0;
/// `afx_chan_open` role: the one receiver.
pub const AFX_CHAN_RECEIVER: c_int = 1;

/// Shared state of a mutex (16 bytes, 8-aligned). Treat as opaque; the
/// fields are documented for other languages: `state` is 0 (unlocked) or
/// the holder's pid (bits 0-29) | `OWNER_DIED` (bit 30) | `WAITERS` (bit
/// 31); `owner` is `pid << 32 | start-time stamp` of the holder.
#[repr(C)]
pub struct afx_mutex_state {
    /// The futex word.
    pub state: u32,
    /// `AFX_MUTEX_VERSION` once initialised.
    pub version: u32,
    /// The holder's identity, 0 when unlocked.
    pub owner: u64,
}

/// Shared state of a counting semaphore (12 bytes, 4-aligned): `count` is
/// the futex word (permits available), `waiters` the registered sleepers.
#[repr(C)]
pub struct afx_sem_state {
    /// Permits available (the futex word).
    pub count: u32,
    /// Registered sleepers.
    pub waiters: u32,
    /// `AFX_SEM_VERSION` once initialised.
    pub version: u32,
}

/// Shared state of an event count (8 bytes, 4-aligned): `word` is `seq <<
/// 1 | WAITERS`.
#[repr(C)]
pub struct afx_event_state {
    /// The futex word.
    pub word: u32,
    /// `AFX_EVENT_VERSION` once initialised.
    pub version: u32,
}

/// Header of an SPSC channel (192 bytes; place it 64-aligned, followed by
/// the ring: `afx_chan_size` bytes in all).
#[repr(C)]
pub struct afx_chan_header {
    /// `AFX_CHAN_VERSION` once initialised.
    pub version: u32,
    /// Largest frame in bytes.
    pub frame_size: u32,
    /// Frames in the ring (a power of two).
    pub capacity: u32,
    /// Bytes per slot: 4 + frame_size rounded up to 8.
    pub slot_size: u32,
    /// Reserved.
    pub reserved0: [u32; 12],
    /// `sent << 1 | RX_SLEEPING` (bit 0: the receiver is, or is about to
    /// be, asleep on this futex word). `sent` (31 bits, wrapping) is
    /// changed only by the sender, which clears the bit as it adds a frame
    /// and wakes the receiver only if it was set.
    pub head: u32,
    /// Reserved.
    pub reserved1: [u32; 15],
    /// `received << 1 | TX_SLEEPING`: the same for the receiver, and a
    /// sender asleep on a full ring.
    pub tail: u32,
    /// Reserved.
    pub reserved2: [u32; 15],
}

const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    assert!(size_of::<afx_mutex_state>() == size_of::<MutexState>());
    assert!(align_of::<afx_mutex_state>() == align_of::<MutexState>());
    assert!(offset_of!(afx_mutex_state, owner) == 8);
    assert!(size_of::<afx_sem_state>() == size_of::<SemaphoreState>());
    assert!(size_of::<afx_event_state>() == size_of::<EventState>());
    assert!(size_of::<afx_chan_header>() == size_of::<ChannelHeader>());
    assert!(offset_of!(afx_chan_header, head) == 64);
    assert!(offset_of!(afx_chan_header, tail) == 128);
    assert!(AFX_MUTEX_VERSION == sync::MUTEX_VERSION);
    assert!(AFX_SEM_VERSION == sync::SEMAPHORE_VERSION);
    assert!(AFX_EVENT_VERSION == sync::EVENT_VERSION);
    assert!(AFX_CHAN_VERSION == sync::CHANNEL_VERSION);
};

fn neg(e: &io::Error) -> c_int {
    -errno_of(e)
}

fn deadline(timeout_ns: i64) -> Option<Duration> {
    (timeout_ns >= 0).then(|| Duration::from_nanos(timeout_ns as u64))
}

/// One eventfd-announced wait on a word, re-armed only when the value to
/// wait on changes; plus when the current streak of waiting began.
struct Armer {
    efd: EventFdFutex,
    state: std::sync::Mutex<ArmState>,
}

#[derive(Default)]
struct ArmState {
    armed: Option<u32>,
    since: Option<Instant>,
}

impl Armer {
    fn on(futex: &AsyncFutex) -> io::Result<Armer> {
        let word: *const AtomicU32 = futex.word();
        // SAFETY: the word lives as long as the primitive's handle, which
        // owns this armer and drops it first (field order).
        let second = unsafe { AsyncFutex::new(word)? };
        Ok(Armer {
            efd: EventFdFutex::new(second)?,
            state: std::sync::Mutex::new(ArmState::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ArmState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The operation must wait while the word holds `seen`.
    fn arm(&self, seen: u32) -> io::Result<()> {
        let mut st = self.lock();
        if let Some(value) = st.armed {
            let completed = self.efd.ack()?;
            if !completed && value == seen {
                return Ok(());
            }
            if !completed {
                self.efd.cancel();
            }
            st.armed = None;
        }
        self.efd.arm(seen)?;
        st.armed = Some(seen);
        st.since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// The operation completed (or was abandoned): disarm.
    fn disarm(&self) {
        let mut st = self.lock();
        if st.armed.take().is_some() && !self.efd.ack().unwrap_or(false) {
            self.efd.cancel();
        }
        st.since = None;
    }

    /// The operation was abandoned (`afx_X_cancel`, `afx_sem_close`):
    /// disarm, and pass on one wake if the wait had completed unseen — it
    /// may have consumed a wake meant for another waiter (e.g. a
    /// semaphore's `release(1)`), which must not be lost. (A wait still
    /// pending is cancelled by `EventFdFutex::cancel`, which forwards a
    /// wake it consumed.) At worst another waiter wakes spuriously.
    fn abandon(&self) {
        let mut st = self.lock();
        if st.armed.take().is_some() {
            if self.efd.ack().unwrap_or(false) {
                let _ = self.efd.futex().wake(1);
            } else {
                self.efd.cancel();
            }
        }
        st.since = None;
    }

    /// Whether a waiting streak has lasted `interval` (then restarts it).
    fn due(&self, interval: Duration) -> bool {
        let mut st = self.lock();
        match st.since {
            Some(t) if t.elapsed() >= interval => {
                st.since = Some(Instant::now());
                true
            }
            _ => false,
        }
    }

    fn fd(&self) -> c_int {
        self.efd.as_raw_fd()
    }
}

/// Checks, before anything reads it, that the `T` at `p` is mapped and
/// readable (`EFAULT` if not), as `afx_new` does for its word: the kernel
/// reads the 32-bit words at both ends (a state may straddle a page
/// boundary) with a fault-safe access. NULL and misaligned pointers pass:
/// `from_ptr` rejects them with `EINVAL`.
fn check_mapped<T>(p: *const T) -> io::Result<()> {
    if p.is_null() || (p as usize) % std::mem::align_of::<T>() != 0 {
        return Ok(());
    }
    let first = p.cast::<AtomicU32>();
    let last =
        (p as usize + std::mem::size_of::<T>() - std::mem::size_of::<u32>()) as *const AtomicU32;
    sys_futex::check_readable(first, true)?;
    sys_futex::check_readable(last, true)
}

/// Boxes a new handle, or NULL with errno.
fn boxed<T>(made: io::Result<T>) -> *mut T {
    match made {
        Ok(h) => Box::into_raw(Box::new(h)),
        Err(e) => {
            set_errno(errno_of(&e));
            std::ptr::null_mut()
        }
    }
}

/// Frees a handle from `boxed`.
///
/// # Safety
/// `h` is NULL or from `boxed`, not used afterwards.
unsafe fn unbox<T>(h: *mut T) {
    if !h.is_null() {
        // SAFETY: guaranteed by the caller.
        drop(unsafe { Box::from_raw(h) });
    }
}

// ---------------------------------------------------------------------------
// Mutex

/// A process's handle on a shared mutex.
pub struct afx_mutex_t {
    armer: Armer,
    inner: Mutex,
}

fn acquired_code(owner_died: bool) -> c_int {
    if owner_died {
        AFX_OWNER_DIED
    } else {
        0
    }
}

/// Initialises (unlocks, marks consistent) a mutex state. Only while no
/// process uses it. Returns 0, or `-EINVAL` for NULL/misaligned `s`.
///
/// # Safety
/// `s` is NULL or points to a writable `afx_mutex_state`.
#[no_mangle]
pub unsafe extern "C" fn afx_mutex_init(s: *mut afx_mutex_state) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        if s.is_null() || (s as usize) % std::mem::align_of::<MutexState>() != 0 {
            return -libc::EINVAL;
        }
        // SAFETY: same layout (checked above at compile time), aligned.
        unsafe { &*s.cast::<MutexState>() }.init();
        0
    })
}

/// Opens a handle on an initialised mutex state. NULL + errno: `EINVAL`
/// (NULL or misaligned `s`), `EFAULT` (`s` not mapped or not readable),
/// `EPROTO` (not initialised / other version), `EMFILE`/`ENFILE`, why the
/// backend cannot start (as for `afx_new`), `ENOTRECOVERABLE` (internal
/// error).
///
/// # Safety
/// `s` is NULL or an `afx_mutex_state` that stays mapped until
/// `afx_mutex_close`.
#[no_mangle]
pub unsafe extern "C" fn afx_mutex_open(s: *mut afx_mutex_state) -> *mut afx_mutex_t {
    boundary_new(|| {
        boxed(
            check_mapped(s.cast::<MutexState>())
                // SAFETY: the caller's contract; readable (checked just
                // now); from_ptr checks NULL and alignment.
                .and_then(|()| unsafe { Mutex::from_ptr(s.cast::<MutexState>()) })
                .and_then(|inner| {
                    Ok(afx_mutex_t {
                        armer: Armer::on(inner.futex())?,
                        inner,
                    })
                }),
        )
    })
}

/// Closes a handle (NULL: no-op). A lock held by this process stays held.
///
/// # Safety
/// `m` is NULL or a live handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn afx_mutex_close(m: *mut afx_mutex_t) {
    // SAFETY: the caller's contract.
    boundary((), || unsafe { unbox(m) })
}

/// Locks, blocking up to `timeout_ns` (`< 0`: forever). Returns 0,
/// `AFX_OWNER_DIED` (held; the previous holder died), `-ETIMEDOUT`,
/// `-ENOTRECOVERABLE`, `-EINVAL`.
///
/// # Safety
/// `m` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn afx_mutex_lock(m: *mut afx_mutex_t, timeout_ns: i64) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        // SAFETY: the caller's contract.
        let Some(m) = (unsafe { m.as_ref() }) else {
            return -libc::EINVAL;
        };
        match m.inner.blocking_lock(deadline(timeout_ns)) {
            Ok(g) => {
                let code = acquired_code(g.owner_died());
                std::mem::forget(g);
                code
            }
            Err(e) => neg(&e),
        }
    })
}

/// Locks if free (or if its holder died). Returns 0, `AFX_OWNER_DIED`,
/// `-EBUSY` (held), `-ENOTRECOVERABLE`, `-EINVAL`.
///
/// # Safety
/// `m` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn afx_mutex_trylock(m: *mut afx_mutex_t) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        // SAFETY: the caller's contract.
        let Some(m) = (unsafe { m.as_ref() }) else {
            return -libc::EINVAL;
        };
        match m.inner.try_lock() {
            Ok(Some(g)) => {
                let code = acquired_code(g.owner_died());
                std::mem::forget(g);
                code
            }
            Ok(None) => -libc::EBUSY,
            Err(e) => neg(&e),
        }
    })
}

/// Async lock: returns 0 or `AFX_OWNER_DIED` when locked now; `-EAGAIN`
/// when a wait is armed: poll `afx_mutex_eventfd` for `EPOLLIN` with a
/// timeout of at most `AFX_MUTEX_CHECK_MS` (so a dead holder is noticed)
/// and call again on readiness or timeout. `-ENOTRECOVERABLE`, `-EINVAL`.
///
/// # Safety
/// `m` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn afx_mutex_lock_async(m: *mut afx_mutex_t) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        // SAFETY: the caller's contract.
        let Some(m) = (unsafe { m.as_ref() }) else {
            return -libc::EINVAL;
        };
        let check = m.armer.due(sync::OWNER_CHECK_INTERVAL);
        match m.inner.lock_step(check) {
            Ok(Ok(owner_died)) => {
                m.armer.disarm();
                acquired_code(owner_died)
            }
            Ok(Err(seen)) => match m.armer.arm(seen) {
                Ok(()) => -libc::EAGAIN,
                Err(e) => neg(&e),
            },
            Err(e) => {
                m.armer.disarm();
                neg(&e)
            }
        }
    })
}

/// Unlocks. Returns 0; `-EPERM` if this process does not hold it;
/// `-EINVAL`. Unlocking after `AFX_OWNER_DIED` without
/// `afx_mutex_consistent` makes the mutex not recoverable.
///
/// # Safety
/// `m` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn afx_mutex_unlock(m: *mut afx_mutex_t) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        // SAFETY: the caller's contract.
        let Some(m) = (unsafe { m.as_ref() }) else {
            return -libc::EINVAL;
        };
        if !m.inner.held_by_this_process() {
            return -libc::EPERM;
        }
        match m.inner.unlock_raw() {
            Ok(()) => 0,
            Err(e) => neg(&e),
        }
    })
}

/// Marks the state protected by a mutex taken with `AFX_OWNER_DIED`
/// consistent again. Returns 0; `-EPERM` if this process does not hold it;
/// `-EINVAL` if it was not inconsistent (or NULL).
///
/// # Safety
/// `m` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn afx_mutex_consistent(m: *mut afx_mutex_t) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        // SAFETY: the caller's contract.
        let Some(m) = (unsafe { m.as_ref() }) else {
            return -libc::EINVAL;
        };
        if !m.inner.held_by_this_process() {
            return -libc::EPERM;
        }
        if !m.inner.is_inconsistent() {
            return -libc::EINVAL;
        }
        m.inner.mark_consistent_raw();
        0
    })
}

/// The eventfd of the handle's async lock (poll for `EPOLLIN`; never read
/// or close it), or `-EINVAL`.
///
/// # Safety
/// `m` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn afx_mutex_eventfd(m: *const afx_mutex_t) -> c_int {
    // SAFETY: the caller's contract.
    boundary(-libc::ENOTRECOVERABLE, || match unsafe { m.as_ref() } {
        Some(m) => m.armer.fd(),
        None => -libc::EINVAL,
    })
}

/// Abandons a pending `afx_mutex_lock_async` (disarms; a consumed wake is
/// passed on). Returns 0 or `-EINVAL`.
///
/// # Safety
/// `m` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn afx_mutex_cancel(m: *mut afx_mutex_t) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        // SAFETY: the caller's contract.
        let Some(m) = (unsafe { m.as_ref() }) else {
            return -libc::EINVAL;
        };
        m.armer.abandon();
        0
    })
}

// ---------------------------------------------------------------------------
// Semaphore

/// A process's handle on a shared semaphore.
pub struct afx_sem_t {
    armer: Armer,
    registered: std::sync::atomic::AtomicBool,
    inner: Semaphore,
}

impl afx_sem_t {
    fn unregister(&self) {
        if self
            .registered
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            self.inner.register_waiter(false);
        }
    }
}

/// Initialises a semaphore state with `permits`. Only while no process
/// uses it. Returns 0 or `-EINVAL`.
///
/// # Safety
/// `s` is NULL or points to a writable `afx_sem_state`.
#[no_mangle]
pub unsafe extern "C" fn afx_sem_init(s: *mut afx_sem_state, permits: u32) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        if s.is_null() || (s as usize) % 4 != 0 {
            return -libc::EINVAL;
        }
        // SAFETY: same layout, aligned.
        unsafe { &*s.cast::<SemaphoreState>() }.init(permits);
        0
    })
}

/// Opens a handle on an initialised semaphore state. NULL + errno:
/// `EINVAL` (NULL or misaligned `s`), `EFAULT` (`s` not mapped or not
/// readable), `EPROTO`, `EMFILE`/`ENFILE`, why the backend cannot start
/// (as for `afx_new`), `ENOTRECOVERABLE` (internal error).
///
/// # Safety
/// `s` is NULL or an `afx_sem_state` that stays mapped until
/// `afx_sem_close`.
#[no_mangle]
pub unsafe extern "C" fn afx_sem_open(s: *mut afx_sem_state) -> *mut afx_sem_t {
    boundary_new(|| {
        boxed(
            check_mapped(s.cast::<SemaphoreState>())
                // SAFETY: the caller's contract; readable (checked just
                // now); from_ptr checks NULL and alignment.
                .and_then(|()| unsafe { Semaphore::from_ptr(s.cast::<SemaphoreState>()) })
                .and_then(|inner| {
                    Ok(afx_sem_t {
                        armer: Armer::on(inner.futex())?,
                        registered: std::sync::atomic::AtomicBool::new(false),
                        inner,
                    })
                }),
        )
    })
}

/// Closes a handle (NULL: no-op), cancelling a pending async acquire.
///
/// # Safety
/// `s` is NULL or a live handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn afx_sem_close(s: *mut afx_sem_t) {
    boundary((), || {
        // SAFETY: the caller's contract.
        if let Some(h) = unsafe { s.as_ref() } {
            h.armer.abandon();
            h.unregister();
        }
        // SAFETY: the caller's contract.
        unsafe { unbox(s) }
    })
}

/// Takes a permit, blocking up to `timeout_ns` (`< 0`: forever). Returns
/// 0, `-ETIMEDOUT`, `-EINVAL`.
///
/// # Safety
/// `s` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn afx_sem_acquire(s: *mut afx_sem_t, timeout_ns: i64) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        // SAFETY: the caller's contract.
        let Some(s) = (unsafe { s.as_ref() }) else {
            return -libc::EINVAL;
        };
        match s.inner.blocking_acquire(deadline(timeout_ns)) {
            Ok(()) => 0,
            Err(e) => neg(&e),
        }
    })
}

/// Takes a permit if one is available: 0, or `-EAGAIN`; `-EINVAL`.
///
/// # Safety
/// `s` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn afx_sem_tryacquire(s: *mut afx_sem_t) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        // SAFETY: the caller's contract.
        match unsafe { s.as_ref() } {
            None => -libc::EINVAL,
            Some(s) if s.inner.try_acquire() => 0,
            Some(_) => -libc::EAGAIN,
        }
    })
}

/// Async acquire: 0 when a permit was taken now; `-EAGAIN` when a wait is
/// armed (the handle counts as a waiter until it completes or is
/// cancelled): poll `afx_sem_eventfd` and call again. `-EINVAL`.
///
/// # Safety
/// `s` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn afx_sem_acquire_async(s: *mut afx_sem_t) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        // SAFETY: the caller's contract.
        let Some(s) = (unsafe { s.as_ref() }) else {
            return -libc::EINVAL;
        };
        if s.inner.try_acquire() {
            s.armer.disarm();
            s.unregister();
            return 0;
        }
        if !s.registered.swap(true, std::sync::atomic::Ordering::SeqCst) {
            s.inner.register_waiter(true);
        }
        // Registered: now a release either sees us or leaves a permit.
        if s.inner.try_acquire() {
            s.armer.disarm();
            s.unregister();
            return 0;
        }
        match s.armer.arm(0) {
            Ok(()) => -libc::EAGAIN,
            Err(e) => {
                s.unregister();
                neg(&e)
            }
        }
    })
}

/// Adds `n` permits, waking up to `n` waiters (a system call only if
/// someone waits). Returns 0, `-EOVERFLOW`, `-EINVAL`.
///
/// # Safety
/// `s` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn afx_sem_release(s: *mut afx_sem_t, n: u32) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        // SAFETY: the caller's contract.
        let Some(s) = (unsafe { s.as_ref() }) else {
            return -libc::EINVAL;
        };
        match s.inner.release(n) {
            Ok(()) => 0,
            Err(e) => neg(&e),
        }
    })
}

/// Permits available now (clamped to `INT_MAX`), or `-EINVAL`.
///
/// # Safety
/// `s` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn afx_sem_value(s: *const afx_sem_t) -> c_int {
    // SAFETY: the caller's contract.
    boundary(-libc::ENOTRECOVERABLE, || match unsafe { s.as_ref() } {
        Some(s) => s.inner.available().min(i32::MAX as u32) as c_int,
        None => -libc::EINVAL,
    })
}

/// The eventfd of the handle's async acquire, or `-EINVAL`.
///
/// # Safety
/// `s` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn afx_sem_eventfd(s: *const afx_sem_t) -> c_int {
    // SAFETY: the caller's contract.
    boundary(-libc::ENOTRECOVERABLE, || match unsafe { s.as_ref() } {
        Some(s) => s.armer.fd(),
        None => -libc::EINVAL,
    })
}

/// Abandons a pending `afx_sem_acquire_async`. Returns 0 or `-EINVAL`.
///
/// # Safety
/// `s` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn afx_sem_cancel(s: *mut afx_sem_t) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        // SAFETY: the caller's contract.
        let Some(s) = (unsafe { s.as_ref() }) else {
            return -libc::EINVAL;
        };
        s.armer.abandon();
        s.unregister();
        0
    })
}

// ---------------------------------------------------------------------------
// Event count

/// A process's handle on a shared event count.
pub struct afx_event_t {
    armer: Armer,
    inner: EventCount,
}

/// Initialises an event state (`seq` 0). Returns 0 or `-EINVAL`.
///
/// # Safety
/// `s` is NULL or points to a writable `afx_event_state`.
#[no_mangle]
pub unsafe extern "C" fn afx_event_init(s: *mut afx_event_state) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        if s.is_null() || (s as usize) % 4 != 0 {
            return -libc::EINVAL;
        }
        // SAFETY: same layout, aligned.
        unsafe { &*s.cast::<EventState>() }.init();
        0
    })
}

/// Opens a handle on an initialised event state. NULL + errno: `EINVAL`
/// (NULL or misaligned `s`), `EFAULT` (`s` not mapped or not readable),
/// `EPROTO`, `EMFILE`/`ENFILE`, why the backend cannot start (as for
/// `afx_new`), `ENOTRECOVERABLE` (internal error).
///
/// # Safety
/// `s` is NULL or an `afx_event_state` that stays mapped until
/// `afx_event_close`.
#[no_mangle]
pub unsafe extern "C" fn afx_event_open(s: *mut afx_event_state) -> *mut afx_event_t {
    boundary_new(|| {
        boxed(
            check_mapped(s.cast::<EventState>())
                // SAFETY: the caller's contract; readable (checked just
                // now); from_ptr checks NULL and alignment.
                .and_then(|()| unsafe { EventCount::from_ptr(s.cast::<EventState>()) })
                .and_then(|inner| {
                    Ok(afx_event_t {
                        armer: Armer::on(inner.futex())?,
                        inner,
                    })
                }),
        )
    })
}

/// Closes a handle (NULL: no-op).
///
/// # Safety
/// `e` is NULL or a live handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn afx_event_close(e: *mut afx_event_t) {
    // SAFETY: the caller's contract.
    boundary((), || unsafe { unbox(e) })
}

/// Publishes: bumps `seq`, waking every waiter (a system call only if
/// someone waits). Returns the new `seq` (31 bits), or `-EINVAL`.
///
/// # Safety
/// `e` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn afx_event_publish(e: *mut afx_event_t) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        // SAFETY: the caller's contract.
        let Some(e) = (unsafe { e.as_ref() }) else {
            return -libc::EINVAL;
        };
        match e.inner.publish() {
            Ok(seq) => seq as c_int,
            Err(err) => neg(&err),
        }
    })
}

/// The current `seq` (31 bits), or `-EINVAL`.
///
/// # Safety
/// `e` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn afx_event_seq(e: *const afx_event_t) -> c_int {
    // SAFETY: the caller's contract.
    boundary(-libc::ENOTRECOVERABLE, || match unsafe { e.as_ref() } {
        Some(e) => e.inner.seq() as c_int,
        None => -libc::EINVAL,
    })
}

/// Blocks until `seq` differs from `last_seen` (up to `timeout_ns`, `< 0`:
/// forever). Returns the new `seq`, `-ETIMEDOUT`, `-EINVAL`.
///
/// # Safety
/// `e` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn afx_event_wait(
    e: *mut afx_event_t,
    last_seen: u32,
    timeout_ns: i64,
) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        // SAFETY: the caller's contract.
        let Some(e) = (unsafe { e.as_ref() }) else {
            return -libc::EINVAL;
        };
        match e
            .inner
            .blocking_wait_for_change(last_seen, deadline(timeout_ns))
        {
            Ok(seq) => seq as c_int,
            Err(err) => neg(&err),
        }
    })
}

/// Async wait for a change from `last_seen`: the new `seq` (`>= 0`) if it
/// changed; `-EAGAIN` when a wait is armed: poll `afx_event_eventfd` and
/// call again. `-EINVAL`.
///
/// # Safety
/// `e` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn afx_event_wait_async(e: *mut afx_event_t, last_seen: u32) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        // SAFETY: the caller's contract.
        let Some(e) = (unsafe { e.as_ref() }) else {
            return -libc::EINVAL;
        };
        match e.inner.prepare_wait(last_seen) {
            Ok(seq) => {
                e.armer.disarm();
                seq as c_int
            }
            Err(w) => match e.armer.arm(w) {
                Ok(()) => -libc::EAGAIN,
                Err(err) => neg(&err),
            },
        }
    })
}

/// The eventfd of the handle's async wait, or `-EINVAL`.
///
/// # Safety
/// `e` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn afx_event_eventfd(e: *const afx_event_t) -> c_int {
    // SAFETY: the caller's contract.
    boundary(-libc::ENOTRECOVERABLE, || match unsafe { e.as_ref() } {
        Some(e) => e.armer.fd(),
        None => -libc::EINVAL,
    })
}

/// Abandons a pending `afx_event_wait_async`. Returns 0 or `-EINVAL`.
///
/// # Safety
/// `e` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn afx_event_cancel(e: *mut afx_event_t) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        // SAFETY: the caller's contract.
        let Some(e) = (unsafe { e.as_ref() }) else {
            return -libc::EINVAL;
        };
        e.armer.abandon();
        0
    })
}

// ---------------------------------------------------------------------------
// Channel

enum End {
    Send(Sender),
    Recv(Receiver),
}

/// A process's handle on one end of a shared SPSC channel.
pub struct afx_chan_t {
    armer: Armer,
    end: std::sync::Mutex<End>,
}

impl afx_chan_t {
    fn end(&self) -> std::sync::MutexGuard<'_, End> {
        self.end.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Bytes a channel of `capacity` frames (a power of two) of up to
/// `frame_size` bytes needs, header included; 0 for invalid parameters.
#[no_mangle]
pub extern "C" fn afx_chan_size(frame_size: u32, capacity: u32) -> u64 {
    ChannelHeader::size_for(frame_size, capacity).map_or(0, |n| n as u64)
}

/// Initialises a channel at `h` (which must have `afx_chan_size` bytes,
/// 64-aligned). Returns 0 or `-EINVAL`.
///
/// # Safety
/// `h` is NULL or points to `afx_chan_size(frame_size, capacity)` writable
/// bytes.
#[no_mangle]
pub unsafe extern "C" fn afx_chan_init(
    h: *mut afx_chan_header,
    frame_size: u32,
    capacity: u32,
) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        if h.is_null()
            || (h as usize) % std::mem::align_of::<ChannelHeader>() != 0
            || ChannelHeader::size_for(frame_size, capacity).is_none()
        {
            return -libc::EINVAL;
        }
        // SAFETY: same layout, aligned, the caller vouches for the size.
        sync::channel::init(unsafe { &*h.cast::<ChannelHeader>() }, frame_size, capacity);
        0
    })
}

/// Opens one end (`AFX_CHAN_SENDER` or `AFX_CHAN_RECEIVER`) of an
/// initialised channel. One sender and one receiver at a time. NULL +
/// errno: `EINVAL` (NULL or misaligned `h`, unknown role), `EFAULT` (the
/// header not mapped or not readable; the frames after it are not
/// checked), `EPROTO`, `EMFILE`/`ENFILE`, why the backend cannot start (as
/// for `afx_new`), `ENOTRECOVERABLE` (internal error).
///
/// # Safety
/// `h` is NULL or an initialised channel that stays mapped (all of it)
/// until `afx_chan_close`.
#[no_mangle]
pub unsafe extern "C" fn afx_chan_open(h: *mut afx_chan_header, role: c_int) -> *mut afx_chan_t {
    boundary_new(|| {
        let header = h.cast::<ChannelHeader>();
        if let Err(e) = check_mapped(header) {
            set_errno(errno_of(&e));
            return std::ptr::null_mut();
        }
        let made = match role {
            // SAFETY: the caller's contract; from_ptr checks NULL/alignment.
            AFX_CHAN_SENDER => unsafe { Sender::from_ptr(header) }.and_then(|tx| {
                Ok(afx_chan_t {
                    armer: Armer::on(tx.tail_futex())?,
                    end: std::sync::Mutex::new(End::Send(tx)),
                })
            }),
            // SAFETY: as above.
            AFX_CHAN_RECEIVER => unsafe { Receiver::from_ptr(header) }.and_then(|rx| {
                Ok(afx_chan_t {
                    armer: Armer::on(rx.head_futex())?,
                    end: std::sync::Mutex::new(End::Recv(rx)),
                })
            }),
            _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        };
        boxed(made)
    })
}

/// Closes a handle (NULL: no-op).
///
/// # Safety
/// `c` is NULL or a live handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn afx_chan_close(c: *mut afx_chan_t) {
    // SAFETY: the caller's contract.
    boundary((), || unsafe { unbox(c) })
}

/// Borrows `len` bytes at `buf` (NULL allowed for 0).
///
/// # Safety
/// `buf` points to `len` readable bytes.
unsafe fn frame<'a>(buf: *const c_void, len: u32) -> Option<&'a [u8]> {
    if len == 0 {
        return Some(&[]);
    }
    // SAFETY: the caller's contract.
    (!buf.is_null()).then(|| unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len as usize) })
}

/// Borrows `cap` writable bytes at `buf`.
///
/// # Safety
/// `buf` points to `cap` writable bytes.
unsafe fn frame_mut<'a>(buf: *mut c_void, cap: u32) -> Option<&'a mut [u8]> {
    if cap == 0 {
        return Some(&mut []);
    }
    // SAFETY: the caller's contract.
    (!buf.is_null())
        .then(|| unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), cap as usize) })
}

/// Sends a frame of `len` bytes, blocking up to `timeout_ns` (`< 0`:
/// forever) while the ring is full. Returns 0, `-ETIMEDOUT`, `-EMSGSIZE`
/// (longer than the frame size), `-EINVAL` (NULL, or not the sender).
///
/// # Safety
/// `c` is NULL or a live handle; `buf` points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn afx_chan_send(
    c: *mut afx_chan_t,
    buf: *const c_void,
    len: u32,
    timeout_ns: i64,
) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        // SAFETY: the caller's contract.
        let (Some(c), Some(data)) = (unsafe { c.as_ref() }, unsafe { frame(buf, len) }) else {
            return -libc::EINVAL;
        };
        match &mut *c.end() {
            End::Send(tx) => match tx.blocking_send(data, deadline(timeout_ns)) {
                Ok(()) => 0,
                Err(e) => neg(&e),
            },
            End::Recv(_) => -libc::EINVAL,
        }
    })
}

/// Sends a frame if there is room: 0, or `-EAGAIN` when full; otherwise as
/// `afx_chan_send`.
///
/// # Safety
/// As for `afx_chan_send`.
#[no_mangle]
pub unsafe extern "C" fn afx_chan_try_send(
    c: *mut afx_chan_t,
    buf: *const c_void,
    len: u32,
) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        // SAFETY: the caller's contract.
        let (Some(c), Some(data)) = (unsafe { c.as_ref() }, unsafe { frame(buf, len) }) else {
            return -libc::EINVAL;
        };
        match &mut *c.end() {
            End::Send(tx) => match tx.try_send(data) {
                Ok(true) => 0,
                Ok(false) => -libc::EAGAIN,
                Err(e) => neg(&e),
            },
            End::Recv(_) => -libc::EINVAL,
        }
    })
}

/// Async send: 0 when sent now; `-EAGAIN` when the ring is full and a wait
/// is armed: poll `afx_chan_eventfd` and call again with the same frame.
///
/// # Safety
/// As for `afx_chan_send`.
#[no_mangle]
pub unsafe extern "C" fn afx_chan_send_async(
    c: *mut afx_chan_t,
    buf: *const c_void,
    len: u32,
) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        // SAFETY: the caller's contract.
        let (Some(c), Some(data)) = (unsafe { c.as_ref() }, unsafe { frame(buf, len) }) else {
            return -libc::EINVAL;
        };
        let step = match &mut *c.end() {
            End::Send(tx) => tx.send_step(data),
            End::Recv(_) => return -libc::EINVAL,
        };
        match step {
            Ok(Ok(())) => {
                c.armer.disarm();
                0
            }
            Ok(Err(tail)) => match c.armer.arm(tail) {
                Ok(()) => -libc::EAGAIN,
                Err(e) => neg(&e),
            },
            Err(e) => neg(&e),
        }
    })
}

/// Receives a frame into `buf` (`cap` bytes), blocking up to `timeout_ns`
/// while the ring is empty. Returns its length, `-ETIMEDOUT`, `-EMSGSIZE`
/// (`cap` too small: the frame stays queued), `-EINVAL` (NULL, or not the
/// receiver), `-EPROTO` (the queued frame's length is corrupt: the shared
/// ring was written by something other than a sender).
///
/// # Safety
/// `c` is NULL or a live handle; `buf` points to `cap` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn afx_chan_recv(
    c: *mut afx_chan_t,
    buf: *mut c_void,
    cap: u32,
    timeout_ns: i64,
) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        // SAFETY: the caller's contract.
        let (Some(c), Some(out)) = (unsafe { c.as_ref() }, unsafe { frame_mut(buf, cap) }) else {
            return -libc::EINVAL;
        };
        match &mut *c.end() {
            End::Recv(rx) => match rx.blocking_recv(out, deadline(timeout_ns)) {
                Ok(n) => n as c_int,
                Err(e) => neg(&e),
            },
            End::Send(_) => -libc::EINVAL,
        }
    })
}

/// Receives a frame if one is queued: its length, or `-EAGAIN` when
/// empty; otherwise as `afx_chan_recv`.
///
/// # Safety
/// As for `afx_chan_recv`.
#[no_mangle]
pub unsafe extern "C" fn afx_chan_try_recv(
    c: *mut afx_chan_t,
    buf: *mut c_void,
    cap: u32,
) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        // SAFETY: the caller's contract.
        let (Some(c), Some(out)) = (unsafe { c.as_ref() }, unsafe { frame_mut(buf, cap) }) else {
            return -libc::EINVAL;
        };
        match &mut *c.end() {
            End::Recv(rx) => match rx.try_recv(out) {
                Ok(Some(n)) => n as c_int,
                Ok(None) => -libc::EAGAIN,
                Err(e) => neg(&e),
            },
            End::Send(_) => -libc::EINVAL,
        }
    })
}

/// Async receive: the frame's length when one was received now; `-EAGAIN`
/// when the ring is empty and a wait is armed: poll `afx_chan_eventfd` and
/// call again; otherwise as `afx_chan_recv`, plus the backend's errors when
/// arming the wait (`afx_wait_async`).
///
/// # Safety
/// As for `afx_chan_recv`.
#[no_mangle]
pub unsafe extern "C" fn afx_chan_recv_async(
    c: *mut afx_chan_t,
    buf: *mut c_void,
    cap: u32,
) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        // SAFETY: the caller's contract.
        let (Some(c), Some(out)) = (unsafe { c.as_ref() }, unsafe { frame_mut(buf, cap) }) else {
            return -libc::EINVAL;
        };
        let step = match &mut *c.end() {
            End::Recv(rx) => rx.recv_step(out),
            End::Send(_) => return -libc::EINVAL,
        };
        match step {
            Ok(Ok(n)) => {
                c.armer.disarm();
                n as c_int
            }
            Ok(Err(tail)) => match c.armer.arm(tail) {
                Ok(()) => -libc::EAGAIN,
                Err(e) => neg(&e),
            },
            Err(e) => neg(&e),
        }
    })
}

/// The eventfd of the handle's async send/receive, or `-EINVAL`.
///
/// # Safety
/// `c` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn afx_chan_eventfd(c: *const afx_chan_t) -> c_int {
    // SAFETY: the caller's contract.
    boundary(-libc::ENOTRECOVERABLE, || match unsafe { c.as_ref() } {
        Some(c) => c.armer.fd(),
        None => -libc::EINVAL,
    })
}

/// Abandons a pending async send/receive. Returns 0 or `-EINVAL`.
///
/// # Safety
/// `c` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn afx_chan_cancel(c: *mut afx_chan_t) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        // SAFETY: the caller's contract.
        let Some(c) = (unsafe { c.as_ref() }) else {
            return -libc::EINVAL;
        };
        c.armer.abandon();
        0
    })
}
