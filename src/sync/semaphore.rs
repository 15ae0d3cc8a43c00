//! [`Semaphore`]: a counting semaphore shared by processes.
//!
//! # Shared layout ([`SemaphoreState`], 12 bytes, align 4, version 1)
//! | offset | type  | field     | meaning |
//! |-------:|-------|-----------|---------|
//! | 0      | `u32` | `count`   | permits available: the futex word |
//! | 4      | `u32` | `waiters` | acquirers registered to sleep |
//! | 8      | `u32` | `version` | [`SEMAPHORE_VERSION`] (`0x534d_0001`) |
//!
//! - acquire: `compare_exchange(c, c - 1)` while `c > 0`. Otherwise
//!   `waiters += 1`, re-read `count`, and `FUTEX_WAIT(count, 0)` while it is
//!   0; `waiters -= 1` when done (or when the future is dropped).
//! - release(n): `count += n`, then `FUTEX_WAKE(min(n, waiters))` only if
//!   `waiters > 0`. Both sides use sequentially consistent operations
//!   (store one word, then load the other), so either the releaser sees the
//!   registered waiter, or the waiter sees the permit and does not sleep.
//!   No system call when nobody waits.
//!
//! Permits are conserved under cancellation: an acquire future holds no
//! permit until it returns one (there is no await point between taking the
//! permit and returning), and a dropped one passes on a wake it consumed.
//! A process that dies while registered leaves `waiters` too high: later
//! releases then make a (harmless) wake call.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::Place;
use crate::{AsyncFutex, SharedMemory};

/// `version` of a [`SemaphoreState`]: `'S' 'M'` and layout version 1.
///
/// (The C header has it as `AFX_*_VERSION`.)
pub const SEMAPHORE_VERSION: u32 = 0x534d_0001;

/// The shared state of a [`Semaphore`] (layout in the
/// [module docs](self)).
#[repr(C)]
#[derive(Debug)]
pub struct SemaphoreState {
    count: AtomicU32,
    waiters: AtomicU32,
    version: AtomicU32,
}

impl SemaphoreState {
    /// An initialised state with `permits` permits.
    pub const fn new(permits: u32) -> SemaphoreState {
        SemaphoreState {
            count: AtomicU32::new(permits),
            waiters: AtomicU32::new(0),
            version: AtomicU32::new(SEMAPHORE_VERSION),
        }
    }

    /// (Re)initialises the state with `permits` permits. Only while nobody
    /// uses it.
    pub fn init(&self, permits: u32) {
        self.count.store(permits, Ordering::Relaxed);
        self.waiters.store(0, Ordering::Relaxed);
        self.version.store(SEMAPHORE_VERSION, Ordering::Release);
    }

    /// The permit count word (the futex word).
    pub fn word(&self) -> &AtomicU32 {
        &self.count
    }

    /// The number of registered sleepers.
    pub fn waiters(&self) -> u32 {
        self.waiters.load(Ordering::SeqCst)
    }
}

/// Unregisters a waiter when an acquire ends, however it ends.
struct Registered<'a>(&'a AtomicU32);

impl<'a> Registered<'a> {
    fn new(waiters: &'a AtomicU32) -> Self {
        waiters.fetch_add(1, Ordering::SeqCst);
        Registered(waiters)
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One process's handle on a shared [`SemaphoreState`]. `Send + Sync`.
///
/// # Example
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use asyncfutex::sync::Semaphore;
/// use asyncfutex::SharedMemory;
///
/// # fn main() -> std::io::Result<()> {
/// let mem = Arc::new(SharedMemory::anonymous(4096)?);
/// let sem = Semaphore::create(&mem, 0, 2)?; // two permits
/// assert!(sem.try_acquire());
/// sem.blocking_acquire(Some(Duration::from_secs(5)))?;
/// assert!(!sem.try_acquire(), "both permits taken");
/// sem.release(2)?;
/// assert_eq!(sem.available(), 2);
/// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// # rt.block_on(async {
/// sem.acquire().await?; // the async form, in any executor
/// # Ok::<(), std::io::Error>(())
/// # })?;
/// # Ok(())
/// # }
/// ```
pub struct Semaphore {
    futex: AsyncFutex,
    place: Place<SemaphoreState>,
}

impl std::fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Semaphore")
            .field("available", &self.available())
            .finish()
    }
}

impl Semaphore {
    /// Initialises a [`SemaphoreState`] with `permits` at byte `offset` of
    /// `mem` and opens it.
    ///
    /// # Errors
    /// `EINVAL` if it does not fit or `offset` is not 4-aligned; backend
    /// start-up errors.
    pub fn create(mem: &Arc<SharedMemory>, offset: usize, permits: u32) -> io::Result<Semaphore> {
        let place =
            Place::<SemaphoreState>::in_memory(mem, offset, std::mem::size_of::<SemaphoreState>())?;
        place.get().init(permits);
        Self::with_place(place)
    }

    /// Opens the initialised [`SemaphoreState`] at byte `offset` of `mem`.
    ///
    /// # Errors
    /// As for [`create`](Self::create); `EPROTO` for a wrong version word.
    pub fn open(mem: &Arc<SharedMemory>, offset: usize) -> io::Result<Semaphore> {
        let place =
            Place::<SemaphoreState>::in_memory(mem, offset, std::mem::size_of::<SemaphoreState>())?;
        super::check_version(&place.get().version, SEMAPHORE_VERSION)?;
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
    pub unsafe fn from_ptr(state: *const SemaphoreState) -> io::Result<Semaphore> {
        // SAFETY: forwarded contract.
        let place = unsafe { Place::raw(state)? };
        super::check_version(&place.get().version, SEMAPHORE_VERSION)?;
        Self::with_place(place)
    }

    fn with_place(place: Place<SemaphoreState>) -> io::Result<Semaphore> {
        Ok(Semaphore {
            futex: place.futex(&place.get().count)?,
            place,
        })
    }

    /// The shared state.
    pub fn state(&self) -> &SemaphoreState {
        self.place.get()
    }

    #[cfg(feature = "capi")] // used by the C ABI only
    pub(crate) fn futex(&self) -> &AsyncFutex {
        &self.futex
    }

    /// Permits available now.
    pub fn available(&self) -> u32 {
        self.state().count.load(Ordering::SeqCst)
    }

    /// Takes a permit if one is available, without waiting.
    pub fn try_acquire(&self) -> bool {
        let count = &self.state().count;
        let mut c = count.load(Ordering::SeqCst);
        while c > 0 {
            match count.compare_exchange_weak(c, c - 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return true,
                Err(now) => c = now,
            }
        }
        false
    }

    /// Takes a permit, waiting asynchronously. Cancel-safe: a dropped
    /// future holds no permit and loses no wake.
    ///
    /// # Errors
    /// `EFAULT`, backend errors.
    pub async fn acquire(&self) -> io::Result<()> {
        if self.try_acquire() {
            return Ok(());
        }
        let _registered = Registered::new(&self.state().waiters);
        loop {
            if self.try_acquire() {
                return Ok(());
            }
            super::wait_async(&self.futex, 0).await?;
        }
    }

    /// Takes a permit, blocking the thread; `timeout` (`None`: forever)
    /// bounds the wait.
    ///
    /// # Errors
    /// `ETIMEDOUT`, `EFAULT`.
    pub fn blocking_acquire(&self, timeout: Option<Duration>) -> io::Result<()> {
        if self.try_acquire() {
            return Ok(());
        }
        let deadline = super::deadline_of(timeout);
        let _registered = Registered::new(&self.state().waiters);
        loop {
            if self.try_acquire() {
                return Ok(());
            }
            if !super::wait_until(&self.futex, 0, deadline)? {
                return Err(super::timed_out());
            }
        }
    }

    /// Registers (`+1`) or unregisters (`-1`) a waiter, for the C API's
    /// async form, which stays registered while its wait is armed.
    #[cfg(feature = "capi")] // used by the C ABI only
    pub(crate) fn register_waiter(&self, register: bool) {
        if register {
            self.state().waiters.fetch_add(1, Ordering::SeqCst);
        } else {
            self.state().waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Adds `n` permits, waking up to `n` waiters — with a system call only
    /// if someone waits.
    ///
    /// # Errors
    /// `EOVERFLOW` if the count would pass `u32::MAX` (nothing is added);
    /// `EFAULT`.
    pub fn release(&self, n: u32) -> io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        let state = self.state();
        let mut c = state.count.load(Ordering::SeqCst);
        loop {
            let new = c
                .checked_add(n)
                .ok_or_else(|| super::errno(libc::EOVERFLOW))?;
            match state
                .count
                .compare_exchange_weak(c, new, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break,
                Err(now) => c = now,
            }
        }
        let waiters = state.waiters.load(Ordering::SeqCst);
        if waiters > 0 {
            super::wake(&self.futex, n.min(waiters))?;
        }
        Ok(())
    }
}
