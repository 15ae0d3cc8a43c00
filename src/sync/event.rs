//! [`EventCount`]: a broadcast sequence number that waiters can await.
//!
//! # Shared layout ([`EventState`], 8 bytes, align 4, version 1)
//! | offset | type  | field     | meaning |
//! |-------:|-------|-----------|---------|
//! | 0      | `u32` | `word`    | `seq << 1 \| WAITERS`: the futex word |
//! | 4      | `u32` | `version` | [`EVENT_VERSION`] (`0x4556_0001`) |
//!
//! `seq` (31 bits, wrapping) counts publications; bit 0 (`WAITERS`) says
//! someone may be asleep.
//! - publish: `compare_exchange(w, (w & !1) + 2)` — bump and clear
//!   `WAITERS` in one step — then `FUTEX_WAKE(all)` only if `WAITERS` was
//!   set. No system call when nobody waits.
//! - wait for a change from `last_seen`: load `w`; if `w >> 1 !=
//!   last_seen`, done; else set `WAITERS` (`compare_exchange(w, w | 1)`) and
//!   `FUTEX_WAIT(w | 1)`. The kernel sleeps only while the word still holds
//!   exactly that value, and every publication changes it, so a publication
//!   is never missed: a waiter that set the flag before a publish is woken by
//!   it; one that comes after sees the new `seq` (or fails its
//!   `compare_exchange`) and does not sleep.
//!
//! Any number of publishers and waiters, in any processes. Publications
//! coalesce: a waiter learns the newest `seq`, not each step (use a queue —
//! [`channel`](super::channel) — when every item matters).

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::Place;
use crate::{AsyncFutex, SharedMemory};

/// `version` of an [`EventState`]: `'E' 'V'` and layout version 1.
///
/// (The C header has it as `AFX_*_VERSION`.)
pub const EVENT_VERSION: u32 = 0x4556_0001;

const WAITERS: u32 = 1;

/// The shared state of an [`EventCount`] (layout in the
/// [module docs](self)).
#[repr(C)]
#[derive(Debug)]
pub struct EventState {
    word: AtomicU32,
    version: AtomicU32,
}

impl EventState {
    /// An initialised state with `seq == 0`.
    pub const fn new() -> EventState {
        EventState {
            word: AtomicU32::new(0),
            version: AtomicU32::new(EVENT_VERSION),
        }
    }

    /// (Re)initialises the state (`seq == 0`). Only while nobody uses it.
    pub fn init(&self) {
        self.word.store(0, Ordering::Relaxed);
        self.version.store(EVENT_VERSION, Ordering::Release);
    }

    /// The raw futex word (`seq << 1 | WAITERS`).
    pub fn word(&self) -> &AtomicU32 {
        &self.word
    }
}

impl Default for EventState {
    fn default() -> Self {
        Self::new()
    }
}

/// One process's handle on a shared [`EventState`]. `Send + Sync`.
///
/// # Example
/// Waiters remember the sequence number they saw and wait for it to move;
/// `publish` wakes all of them (broadcast).
///
/// ```
/// use std::sync::Arc;
/// use asyncfutex::sync::EventCount;
/// use asyncfutex::SharedMemory;
///
/// # fn main() -> std::io::Result<()> {
/// let mem = Arc::new(SharedMemory::anonymous(4096)?);
/// let events = EventCount::create(&mem, 0)?;
/// let seen = events.seq();
/// let listener = {
///     let events = EventCount::open(&mem, 0)?;
///     std::thread::spawn(move || events.blocking_wait_for_change(seen, None))
/// };
/// events.publish()?;
/// let now = listener.join().unwrap()?;
/// assert_ne!(now, seen);
/// # Ok(())
/// # }
/// ```
pub struct EventCount {
    futex: AsyncFutex,
    place: Place<EventState>,
}

impl std::fmt::Debug for EventCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventCount")
            .field("seq", &self.seq())
            .finish()
    }
}

impl EventCount {
    /// Initialises an [`EventState`] at byte `offset` of `mem` and opens it.
    ///
    /// # Errors
    /// `EINVAL` if it does not fit or `offset` is not 4-aligned; backend
    /// start-up errors.
    pub fn create(mem: &Arc<SharedMemory>, offset: usize) -> io::Result<EventCount> {
        let place = Place::<EventState>::in_memory(mem, offset, std::mem::size_of::<EventState>())?;
        place.get().init();
        Self::with_place(place)
    }

    /// Opens the initialised [`EventState`] at byte `offset` of `mem`.
    ///
    /// # Errors
    /// As for [`create`](Self::create); `EPROTO` for a wrong version word.
    pub fn open(mem: &Arc<SharedMemory>, offset: usize) -> io::Result<EventCount> {
        let place = Place::<EventState>::in_memory(mem, offset, std::mem::size_of::<EventState>())?;
        super::check_version(&place.get().version, EVENT_VERSION)?;
        Self::with_place(place)
    }

    /// Opens the initialised state at `state`.
    ///
    /// # Safety
    /// `state` must stay mapped until the handle is dropped, and be
    /// accessed only atomically.
    ///
    /// # Errors
    /// `EINVAL` (NULL or misaligned), `EPROTO` (version), backend errors.
    pub unsafe fn from_ptr(state: *const EventState) -> io::Result<EventCount> {
        // SAFETY: forwarded contract.
        let place = unsafe { Place::raw(state)? };
        super::check_version(&place.get().version, EVENT_VERSION)?;
        Self::with_place(place)
    }

    fn with_place(place: Place<EventState>) -> io::Result<EventCount> {
        Ok(EventCount {
            futex: place.futex(&place.get().word)?,
            place,
        })
    }

    fn word(&self) -> &AtomicU32 {
        &self.place.get().word
    }

    #[cfg(feature = "capi")] // used by the C ABI only
    pub(crate) fn futex(&self) -> &AsyncFutex {
        &self.futex
    }

    /// The shared state.
    pub fn state(&self) -> &EventState {
        self.place.get()
    }

    /// The current sequence number (31 bits, wrapping; compare with `!=`).
    pub fn seq(&self) -> u32 {
        self.word().load(Ordering::SeqCst) >> 1
    }

    /// Publishes: bumps `seq` and wakes every waiter — with a system call
    /// only if someone waits. Returns the new `seq`.
    ///
    /// # Errors
    /// `EFAULT` if the word is no longer mapped.
    pub fn publish(&self) -> io::Result<u32> {
        let word = self.word();
        let mut w = word.load(Ordering::Relaxed);
        loop {
            let new = (w & !WAITERS).wrapping_add(2);
            match word.compare_exchange_weak(w, new, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => {
                    if w & WAITERS != 0 {
                        super::wake(&self.futex, u32::MAX)?;
                    }
                    return Ok(new >> 1);
                }
                Err(now) => w = now,
            }
        }
    }

    /// One look: `Ok(seq)` if it moved from `last_seen`, else `Err(value)`
    /// to wait on (with `WAITERS` set).
    pub(crate) fn prepare_wait(&self, last_seen: u32) -> Result<u32, u32> {
        let word = self.word();
        let last_seen = last_seen & (u32::MAX >> 1);
        let mut w = word.load(Ordering::SeqCst);
        loop {
            if w >> 1 != last_seen {
                return Ok(w >> 1);
            }
            if w & WAITERS != 0 {
                return Err(w);
            }
            match word.compare_exchange_weak(w, w | WAITERS, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return Err(w | WAITERS),
                Err(now) => w = now,
            }
        }
    }

    /// Waits until `seq` differs from `last_seen` and returns the new
    /// `seq`; at once if it already differs. Never misses a publication
    /// made after `last_seen` was read. Cancel-safe.
    ///
    /// # Errors
    /// `EFAULT`, backend errors.
    pub async fn wait_for_change(&self, last_seen: u32) -> io::Result<u32> {
        loop {
            match self.prepare_wait(last_seen) {
                Ok(seq) => return Ok(seq),
                Err(w) => super::wait_async(&self.futex, w).await?,
            }
        }
    }

    /// Blocking [`wait_for_change`](Self::wait_for_change); `timeout`
    /// (`None`: forever) bounds the wait.
    ///
    /// # Errors
    /// `ETIMEDOUT`, `EFAULT`.
    pub fn blocking_wait_for_change(
        &self,
        last_seen: u32,
        timeout: Option<Duration>,
    ) -> io::Result<u32> {
        let deadline = super::deadline_of(timeout);
        loop {
            match self.prepare_wait(last_seen) {
                Ok(seq) => return Ok(seq),
                Err(w) => {
                    if !super::wait_until(&self.futex, w, deadline)? {
                        return Err(super::timed_out());
                    }
                }
            }
        }
    }
}
