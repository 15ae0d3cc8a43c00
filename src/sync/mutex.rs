//! [`Mutex`]: a lock shared by processes, with owner-death recovery.
//!
//! # Shared layout ([`MutexState`], 16 bytes, align 8, version 1)
//! | offset | type  | field     | meaning |
//! |-------:|-------|-----------|---------|
//! | 0      | `u32` | `state`   | the futex word, see below |
//! | 4      | `u32` | `version` | [`MUTEX_VERSION`] (`0x4d58_0001`) |
//! | 8      | `u64` | `owner`   | holder identity `pid << 32 \| start-time stamp`, 0 when unlocked or not yet published |
//!
//! `state` is the classic three-state futex lock (Drepper, "Futexes Are
//! Tricky", mutex 3) with the holder's pid in place of the 1:
//! - `0`: unlocked;
//! - `pid` (bits 0–29): locked by process `pid`, nobody waits;
//! - `pid | WAITERS` (bit 31): locked, someone may be waiting — unlock
//!   must `FUTEX_WAKE` one;
//! - bit 30 (`OWNER_DIED`) set with a pid: the holder took the lock over
//!   from a dead process and has not yet marked it consistent;
//! - `OWNER_DIED` without a pid: not recoverable (a holder that took it over
//!   unlocked it without marking it consistent): every lock fails with
//!   `ENOTRECOVERABLE` until it is created again.
//!
//! Lock: `compare_exchange(0, pid)` — no system call when uncontended.
//! Contended: set `WAITERS`, `FUTEX_WAIT` on the value seen, retry with
//! `compare_exchange(0, pid | WAITERS)`. Unlock: clear `owner`,
//! `swap(0)`, and `FUTEX_WAKE(1)` only if `WAITERS` was set.
//!
//! # Owner death
//! Keeping the pid *in* the lock word makes taking the lock and recording
//! the holder one atomic step: there is no instant where the lock is held
//! by nobody known. A waiter that has waited [`OWNER_CHECK_INTERVAL`]
//! (10 ms) checks the holder: gone from `/proc`, a zombie, or a pid now
//! belonging to a process with another start time than the `owner` stamp
//! (pid reuse) means dead. It then takes the lock over with one
//! `compare_exchange(seen, pid | OWNER_DIED | WAITERS)` — so of several
//! waiters exactly one wins — and gets a guard whose
//! [`owner_died`](MutexGuard::owner_died) is true (`EOWNERDEAD` in
//! pthread terms). It repairs the protected data and calls
//! [`mark_consistent`](MutexGuard::mark_consistent); unlocking without
//! doing so makes the mutex not recoverable, as with pthread robust
//! mutexes. So a dead holder is detected within about 10–20 ms of
//! waiting; `try_lock` checks at once.
//!
//! Why not the kernel's robust-futex list: it is per *thread*
//! (`set_robust_list(2)` registers one list head per thread, which glibc
//! owns for its robust pthread mutexes — a second user would clobber it),
//! it fires when a *thread* exits, and it needs the holder's tid in the
//! word. Our holders are processes: an async guard is taken by a task
//! that may resume on another runtime thread and be dropped there, and
//! the library's own helper threads come and go. Liveness checked by pid
//! is process-granular, needs nothing registered, and works for C, C++
//! and Python peers alike.
//!
//! Limits: every process sharing the mutex must be in the same pid
//! namespace (pids are compared); without `/proc` the check falls back to
//! `kill(pid, 0)`, which cannot see zombies or pid reuse. Mutual
//! exclusion is per process *and* per task: two tasks or threads of one
//! process exclude each other too (the pid only names the process to
//! check for death).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::{owner, ticker, Place};
use crate::{AsyncFutex, SharedMemory, WaitFuture};

/// `version` of a [`MutexState`]: `'M' 'X'` and layout version 1.
///
/// (The C header has it as `AFX_*_VERSION`.)
pub const MUTEX_VERSION: u32 = 0x4d58_0001;
/// How long a waiter waits before checking whether the holder died.
pub const OWNER_CHECK_INTERVAL: Duration = Duration::from_millis(10);

const WAITERS: u32 = 1 << 31;
const OWNER_DIED: u32 = 1 << 30;
const PID_MASK: u32 = OWNER_DIED - 1;
const NOT_RECOVERABLE: u32 = OWNER_DIED;

/// The shared state of a [`Mutex`] (see the [module docs](self) for the
/// layout and protocol). Put it in shared memory, [`init`](Self::init) it
/// once, and open a [`Mutex`] on it in every process.
#[repr(C, align(8))]
#[derive(Debug)]
pub struct MutexState {
    state: AtomicU32,
    version: AtomicU32,
    owner: AtomicU64,
}

impl MutexState {
    /// An unlocked, initialised state (for a `static` or a process-local
    /// mutex).
    pub const fn new() -> MutexState {
        MutexState {
            state: AtomicU32::new(0),
            version: AtomicU32::new(MUTEX_VERSION),
            owner: AtomicU64::new(0),
        }
    }

    /// (Re)initialises the state: unlocked, consistent, current version.
    /// Only while no process uses it.
    pub fn init(&self) {
        self.state.store(0, Ordering::Relaxed);
        self.owner.store(0, Ordering::Relaxed);
        self.version.store(MUTEX_VERSION, Ordering::Release);
    }

    /// The raw lock word (for inspection and tests).
    pub fn word(&self) -> &AtomicU32 {
        &self.state
    }

    /// The raw holder identity word, `pid << 32 | start-time stamp` (for
    /// inspection and tests).
    pub fn owner_word(&self) -> &AtomicU64 {
        &self.owner
    }
}

impl Default for MutexState {
    fn default() -> Self {
        Self::new()
    }
}

/// How a lock attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Acquired {
    /// Locked; the previous holder unlocked normally.
    Clean,
    /// Locked, taken over from a dead holder: the data may be inconsistent.
    OwnerDied,
}

enum Step {
    Done(Acquired),
    /// Must wait while the word holds this value.
    Wait(u32),
}

/// One process's handle on a shared [`MutexState`].
///
/// `Send + Sync`: any number of threads and tasks of the process may lock
/// through one handle (they exclude each other as well as other
/// processes).
///
/// # Example
/// ```
/// use std::sync::Arc;
/// use asyncfutex::sync::Mutex;
/// use asyncfutex::SharedMemory;
///
/// # fn main() -> std::io::Result<()> {
/// let mem = Arc::new(SharedMemory::anonymous(4096)?);
/// let mutex = Mutex::create(&mem, 0)?; // once; other processes `open`
/// let other = Mutex::open(&mem, 0)?;
/// {
///     let guard = mutex.blocking_lock(None)?;
///     assert!(!guard.owner_died());
///     assert!(other.try_lock()?.is_none(), "held");
/// } // unlocked here
/// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// # rt.block_on(async {
/// let guard = other.lock().await?; // the async form, in any executor
/// drop(guard);
/// # Ok::<(), std::io::Error>(())
/// # })?;
/// # Ok(())
/// # }
/// ```
pub struct Mutex {
    futex: AsyncFutex,
    place: Place<MutexState>,
}

impl std::fmt::Debug for Mutex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mutex")
            .field("state", &self.state().state.load(Ordering::Relaxed))
            .finish()
    }
}

impl Mutex {
    /// Initialises a [`MutexState`] at byte `offset` of `mem` (overwriting
    /// what is there) and opens it.
    ///
    /// # Errors
    /// `EINVAL` if the state does not fit or `offset` is not 8-aligned;
    /// backend start-up errors.
    pub fn create(mem: &Arc<SharedMemory>, offset: usize) -> io::Result<Mutex> {
        let place = Place::<MutexState>::in_memory(mem, offset, std::mem::size_of::<MutexState>())?;
        place.get().init();
        Self::with_place(place)
    }

    /// Opens the initialised [`MutexState`] at byte `offset` of `mem`.
    ///
    /// # Errors
    /// As for [`create`](Self::create); `EPROTO` if the version word is not
    /// [`MUTEX_VERSION`].
    pub fn open(mem: &Arc<SharedMemory>, offset: usize) -> io::Result<Mutex> {
        let place = Place::<MutexState>::in_memory(mem, offset, std::mem::size_of::<MutexState>())?;
        super::check_version(&place.get().version, MUTEX_VERSION)?;
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
    pub unsafe fn from_ptr(state: *const MutexState) -> io::Result<Mutex> {
        // SAFETY: forwarded contract.
        let place = unsafe { Place::raw(state)? };
        super::check_version(&place.get().version, MUTEX_VERSION)?;
        Self::with_place(place)
    }

    fn with_place(place: Place<MutexState>) -> io::Result<Mutex> {
        Ok(Mutex {
            futex: place.futex(&place.get().state)?,
            place,
        })
    }

    /// The shared state.
    pub fn state(&self) -> &MutexState {
        self.place.get()
    }

    #[cfg(feature = "capi")] // used by the C ABI only
    pub(crate) fn futex(&self) -> &AsyncFutex {
        &self.futex
    }

    fn word(&self) -> &AtomicU32 {
        &self.state().state
    }

    /// Takes the lock if it is free, without waiting. A dead holder is
    /// detected at once (the lock is then taken over: check
    /// [`owner_died`](MutexGuard::owner_died)). `Ok(None)` if it is held.
    ///
    /// # Errors
    /// `ENOTRECOVERABLE`.
    pub fn try_lock(&self) -> io::Result<Option<MutexGuard<'_>>> {
        Ok(self.try_lock_raw()?.map(|a| self.guard(a)))
    }

    /// Takes the lock, blocking the thread; `timeout` (`None`: forever)
    /// bounds the wait.
    ///
    /// # Errors
    /// `ETIMEDOUT`, `ENOTRECOVERABLE`, `EFAULT`.
    pub fn blocking_lock(&self, timeout: Option<Duration>) -> io::Result<MutexGuard<'_>> {
        let acquired = self.lock_raw_until(super::deadline_of(timeout))?;
        Ok(self.guard(acquired))
    }

    /// Takes the lock, waiting asynchronously. Cancel-safe: dropping the
    /// future leaves the lock untouched (and passes on a wake it consumed).
    ///
    /// # Errors
    /// `ENOTRECOVERABLE`, `EFAULT`.
    pub async fn lock(&self) -> io::Result<MutexGuard<'_>> {
        if let Some(a) = self.fast_lock() {
            return Ok(self.guard(a));
        }
        let me = owner::me();
        let mut check = false;
        loop {
            match self.step(me, check, true)? {
                Step::Done(a) => return Ok(self.guard(a)),
                Step::Wait(seen) => {
                    super::count_call();
                    check = WatchOwner {
                        mutex: self,
                        seen,
                        wait: self.futex.wait_async(seen),
                        next_check: Instant::now() + OWNER_CHECK_INTERVAL,
                    }
                    .await?;
                }
            }
        }
    }

    fn guard(&self, acquired: Acquired) -> MutexGuard<'_> {
        MutexGuard {
            mutex: self,
            owner_died: acquired == Acquired::OwnerDied,
        }
    }

    fn fast_lock(&self) -> Option<Acquired> {
        let me = owner::me();
        self.word()
            .compare_exchange(0, owner::pid_of(me), Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        self.publish(me);
        Some(Acquired::Clean)
    }

    fn publish(&self, me: u64) {
        self.state().owner.store(me, Ordering::Release);
    }

    /// Whether the holder recorded in `seen` is dead.
    fn holder_dead(&self, seen: u32) -> bool {
        let pid = seen & PID_MASK;
        if pid == 0 {
            return false;
        }
        let id = self.state().owner.load(Ordering::Acquire);
        let stamp = if owner::pid_of(id) == pid {
            id as u32
        } else {
            0
        };
        owner::is_dead(pid, stamp)
    }

    /// One pass of the slow path: take the lock if free (or if its holder
    /// is dead and `check` is set), else make sure `WAITERS` is set (when
    /// `will_wait`) and return the value to wait on.
    fn step(&self, me: u64, check: bool, will_wait: bool) -> io::Result<Step> {
        let word = self.word();
        let pid = owner::pid_of(me);
        let mut c = word.load(Ordering::Relaxed);
        let mut checked = !check;
        loop {
            if c & !WAITERS == NOT_RECOVERABLE {
                return Err(super::errno(libc::ENOTRECOVERABLE));
            }
            if c == 0 {
                let new = if will_wait { pid | WAITERS } else { pid };
                match word.compare_exchange(0, new, Ordering::Acquire, Ordering::Relaxed) {
                    Ok(_) => {
                        self.publish(me);
                        return Ok(Step::Done(Acquired::Clean));
                    }
                    Err(now) => {
                        c = now;
                        continue;
                    }
                }
            }
            if !checked {
                checked = true;
                if self.holder_dead(c) {
                    let new = pid | OWNER_DIED | WAITERS;
                    match word.compare_exchange(c, new, Ordering::Acquire, Ordering::Relaxed) {
                        Ok(_) => {
                            self.publish(me);
                            return Ok(Step::Done(Acquired::OwnerDied));
                        }
                        Err(now) => {
                            // Someone else moved first: look again.
                            c = now;
                            checked = false;
                            continue;
                        }
                    }
                }
            }
            if will_wait && c & WAITERS == 0 {
                match word.compare_exchange(c, c | WAITERS, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => c |= WAITERS,
                    Err(now) => {
                        c = now;
                        continue;
                    }
                }
            }
            return Ok(Step::Wait(c));
        }
    }

    fn try_lock_raw(&self) -> io::Result<Option<Acquired>> {
        if let Some(a) = self.fast_lock() {
            return Ok(Some(a));
        }
        match self.step(owner::me(), true, false)? {
            Step::Done(a) => Ok(Some(a)),
            Step::Wait(_) => Ok(None),
        }
    }

    fn lock_raw_until(&self, deadline: Option<Instant>) -> io::Result<Acquired> {
        if let Some(a) = self.fast_lock() {
            return Ok(a);
        }
        let me = owner::me();
        let mut check = false;
        loop {
            let seen = match self.step(me, check, true)? {
                Step::Done(a) => return Ok(a),
                Step::Wait(seen) => seen,
            };
            let slice_end = Instant::now() + OWNER_CHECK_INTERVAL;
            let until = match deadline {
                Some(d) if Instant::now() >= d => return Err(super::timed_out()),
                Some(d) => slice_end.min(d),
                None => slice_end,
            };
            // A wait that ran out its slice without a wake: check the holder.
            check = !super::wait_until(&self.futex, seen, Some(until))?;
        }
    }

    /// The C API's async step: takes the lock (`Ok(owner_died)`) or says
    /// what to wait on.
    #[cfg(feature = "capi")] // used by the C ABI only
    pub(crate) fn lock_step(&self, check: bool) -> io::Result<Result<bool, u32>> {
        if self.fast_lock().is_some() {
            return Ok(Ok(false));
        }
        Ok(match self.step(owner::me(), check, true)? {
            Step::Done(a) => Ok(a == Acquired::OwnerDied),
            Step::Wait(seen) => Err(seen),
        })
    }

    /// Unlocks (the caller holds the lock).
    pub(crate) fn unlock_raw(&self) -> io::Result<()> {
        let word = self.word();
        self.state().owner.store(0, Ordering::Release);
        // Only the holder changes OWNER_DIED: this read is stable.
        let inconsistent = word.load(Ordering::Relaxed) & OWNER_DIED != 0;
        let new = if inconsistent { NOT_RECOVERABLE } else { 0 };
        let prev = word.swap(new, Ordering::Release);
        if inconsistent {
            super::wake(&self.futex, u32::MAX)?;
        } else if prev & WAITERS != 0 {
            super::wake(&self.futex, 1)?;
        }
        Ok(())
    }

    /// Clears `OWNER_DIED` (the caller holds the lock).
    pub(crate) fn mark_consistent_raw(&self) {
        self.word().fetch_and(!OWNER_DIED, Ordering::Release);
    }

    /// Whether this process holds the lock (by the pid in the word).
    #[cfg(feature = "capi")] // used by the C ABI only
    pub(crate) fn held_by_this_process(&self) -> bool {
        let c = self.word().load(Ordering::Relaxed);
        c & PID_MASK != 0 && c & PID_MASK == owner::pid_of(owner::me())
    }

    /// Whether the held lock is marked inconsistent.
    #[cfg(feature = "capi")] // used by the C ABI only
    pub(crate) fn is_inconsistent(&self) -> bool {
        let c = self.word().load(Ordering::Relaxed);
        c & OWNER_DIED != 0 && c & PID_MASK != 0
    }
}

/// Awaits a wake on the lock word, or a dead holder: checks the holder of
/// `seen` every [`OWNER_CHECK_INTERVAL`] while the wait is pending, woken
/// by the process's ticker (no executor timer needed).
struct WatchOwner<'a> {
    mutex: &'a Mutex,
    seen: u32,
    wait: WaitFuture<'a>,
    next_check: Instant,
}

impl Future for WatchOwner<'_> {
    /// `true`: the holder is dead; `false`: woken (re-check the word).
    type Output = io::Result<bool>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let this = self.get_mut();
        if let Poll::Ready(r) = Pin::new(&mut this.wait).poll(cx) {
            return Poll::Ready(r.map(|()| false));
        }
        let now = Instant::now();
        if now >= this.next_check {
            if this.mutex.holder_dead(this.seen) {
                // The caller's next step checks again and takes it over.
                return Poll::Ready(Ok(true));
            }
            this.next_check = now + OWNER_CHECK_INTERVAL;
        }
        ticker::wake_after_tick(cx.waker());
        Poll::Pending
    }
}

/// Proof of holding a [`Mutex`]; unlocks on drop.
#[must_use = "the lock is released when the guard is dropped"]
pub struct MutexGuard<'a> {
    mutex: &'a Mutex,
    owner_died: bool,
}

impl std::fmt::Debug for MutexGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MutexGuard")
            .field("owner_died", &self.owner_died)
            .finish()
    }
}

impl MutexGuard<'_> {
    /// True if the lock was taken over from a holder that died while
    /// holding it (`EOWNERDEAD`): the protected data may be half-updated.
    /// Repair it, then call [`mark_consistent`](Self::mark_consistent);
    /// dropping the guard without doing so makes the mutex not recoverable
    /// (every later lock fails with `ENOTRECOVERABLE`).
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }

    /// Marks the protected data consistent again after an owner death.
    pub fn mark_consistent(&mut self) {
        self.mutex.mark_consistent_raw();
        self.owner_died = false;
    }
}

impl Drop for MutexGuard<'_> {
    fn drop(&mut self) {
        // An unlock's only failure is EFAULT on an unmapped word, which the
        // handle's keepalive rules out.
        let _ = self.mutex.unlock_raw();
    }
}
