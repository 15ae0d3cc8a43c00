//! [`AsyncFutex`]: the handle, its blocking wait, its wake and its future.
#![allow(unsafe_code)]

use std::any::Any;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::backend::{self, BackendKind};
use crate::sys::futex;
use crate::waiter::{Sink, Waiter};
use crate::word::Word;

/// Whether a futex word is shared between processes or private to one.
///
/// The kernel keys the two differently: a private waiter is never woken by
/// a shared wake on the same address, and vice versa.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// Shared key (the default): works across processes that map the word.
    #[default]
    Shared,
    /// Private key (`FUTEX_PRIVATE_FLAG`): cheaper, for process-local words.
    Private,
}

/// How a blocking [`AsyncFutex::wait`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    /// Woken, or the word no longer held `expected`: re-check the word.
    Completed,
    /// The timeout passed first.
    TimedOut,
}

/// A handle on one 32-bit futex word, usually in memory shared between
/// processes, with blocking and async waits that are genuine kernel futex
/// waiters.
///
/// Each process makes its own handle on its own mapping of the word. The
/// handle is `Send + Sync`: any number of threads may [`wake`](Self::wake)
/// and any number of tasks may await [`wait_async`](Self::wait_async) on it
/// at once.
///
/// Dropping the handle waits until every async wait armed through it has
/// left the kernel (a few microseconds when futures were dropped just
/// before): after that the library never touches the word again.
///
/// # Example
/// A consumer thread waits (blocking) for the word to leave 0; another
/// thread publishes and wakes. Across processes it is the same code, with
/// the [`SharedMemory`](crate::SharedMemory) mapped in each.
///
/// ```
/// use std::sync::atomic::Ordering;
/// use std::sync::Arc;
/// use asyncfutex::{SharedMemory, WaitStatus};
///
/// # fn main() -> std::io::Result<()> {
/// let mem = Arc::new(SharedMemory::anonymous(4096)?);
/// let futex = mem.futex(0)?;
/// let producer = {
///     let futex = mem.futex(0)?; // a second handle on the same word
///     std::thread::spawn(move || {
///         futex.word().store(1, Ordering::Release); // publish, then wake
///         futex.wake(1)
///     })
/// };
/// while futex.word().load(Ordering::Acquire) == 0 {
///     // Sleeps only while the word still holds 0; returns at once if not.
///     let status = futex.wait(0, None)?;
///     assert_ne!(status, WaitStatus::TimedOut);
/// }
/// producer.join().unwrap()?;
/// # Ok(())
/// # }
/// ```
pub struct AsyncFutex {
    word: Arc<Word>,
}

impl std::fmt::Debug for AsyncFutex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncFutex")
            .field("addr", &self.word.addr())
            .field("private", &self.word.is_private())
            .finish()
    }
}

fn check_addr(addr: *const AtomicU32) -> io::Result<()> {
    if addr.is_null() || (addr as usize) % std::mem::align_of::<AtomicU32>() != 0 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(())
}

impl AsyncFutex {
    /// Makes a handle on the word at `addr` with a shared (cross-process)
    /// futex key, and starts this process's wait backend if needed.
    ///
    /// # Safety
    /// `addr` must point to a `u32` that stays mapped, and is accessed only
    /// atomically, until this handle has been dropped (its drop waits for
    /// pending async waits to leave the kernel).
    ///
    /// # Errors
    /// `EINVAL` for a null or misaligned address, `EFAULT` if the kernel
    /// cannot read the word, and why the backend cannot start (see
    /// [`select_backend`](crate::select_backend)).
    pub unsafe fn new(addr: *const AtomicU32) -> io::Result<AsyncFutex> {
        // SAFETY: forwarded contract.
        unsafe { Self::with_scope(addr, Scope::Shared) }
    }

    /// Like [`new`](Self::new), with an explicit key [`Scope`].
    ///
    /// # Safety
    /// As for [`new`](Self::new).
    ///
    /// # Errors
    /// As for [`new`](Self::new).
    pub unsafe fn with_scope(addr: *const AtomicU32, scope: Scope) -> io::Result<AsyncFutex> {
        // SAFETY: forwarded contract, no keepalive needed.
        unsafe { Self::build(addr, scope, None) }
    }

    /// A handle on a word that lives for the whole program, e.g. a `static`.
    ///
    /// # Errors
    /// As for [`new`](Self::new), minus the address errors.
    pub fn from_static(word: &'static AtomicU32, scope: Scope) -> io::Result<AsyncFutex> {
        // SAFETY: a 'static reference is aligned and always mapped.
        unsafe { Self::build(word, scope, None) }
    }

    /// A handle on a word kept alive by `owner` (an `Arc` of shared memory,
    /// or of the word itself). `locate` returns the word inside `owner`.
    ///
    /// # Errors
    /// As for [`new`](Self::new).
    pub fn with_owner<T: Any + Send + Sync>(
        owner: Arc<T>,
        scope: Scope,
        locate: impl FnOnce(&T) -> &AtomicU32,
    ) -> io::Result<AsyncFutex> {
        let addr: *const AtomicU32 = locate(&owner);
        // SAFETY: `addr` borrows from `owner`, which the handle keeps alive.
        unsafe { Self::build(addr, scope, Some(owner)) }
    }

    unsafe fn build(
        addr: *const AtomicU32,
        scope: Scope,
        keepalive: Option<Arc<dyn Any + Send + Sync>>,
    ) -> io::Result<AsyncFutex> {
        check_addr(addr)?;
        let private = scope == Scope::Private;
        futex::check_readable(addr, private)?;
        backend::current()?;
        // SAFETY: checked non-null, aligned and readable; the caller vouches
        // for the lifetime.
        let word = unsafe { Word::new(addr, private, keepalive) };
        Ok(AsyncFutex {
            word: Arc::new(word),
        })
    }

    /// The futex word.
    pub fn word(&self) -> &AtomicU32 {
        self.word.atomic()
    }

    /// The word's key scope.
    pub fn scope(&self) -> Scope {
        if self.word.is_private() {
            Scope::Private
        } else {
            Scope::Shared
        }
    }

    /// The backend serving this process's async waits (the same for every
    /// handle; see [`backend`](crate::backend)).
    ///
    /// # Errors
    /// Only in a `fork` child whose fresh backend cannot start.
    pub fn backend(&self) -> io::Result<BackendKind> {
        backend::backend()
    }

    pub(crate) fn shared_word(&self) -> &Arc<Word> {
        &self.word
    }

    /// Wakes at most `n` kernel waiters on the word, in any process and of
    /// any kind (async, blocking, or plain `futex(2)` users): `1` for one,
    /// `u32::MAX` for all. Returns how many were woken. `wake(0)` wakes
    /// nobody and makes no syscall.
    ///
    /// Store the new value *before* waking: a waiter that has not yet
    /// queued rechecks the word, and only a changed word stops it sleeping.
    ///
    /// # Errors
    /// `EFAULT` if the word is no longer mapped.
    pub fn wake(&self, n: u32) -> io::Result<u32> {
        self.word.wake(n)
    }

    /// Blocks the calling thread while the word holds `expected`, until a
    /// wake or the timeout (`None`: forever). Signals do not end the wait.
    ///
    /// Returns [`WaitStatus::Completed`] when woken *or* when the word did
    /// not hold `expected`: re-check the word either way.
    ///
    /// # Errors
    /// `EFAULT` if the word is no longer mapped.
    pub fn wait(&self, expected: u32, timeout: Option<Duration>) -> io::Result<WaitStatus> {
        let deadline = timeout.map(futex::deadline_after);
        loop {
            // SAFETY: the word is mapped while the handle lives.
            let result = unsafe {
                futex::wait(
                    self.word.addr(),
                    expected,
                    self.word.is_private(),
                    deadline.as_ref(),
                )
            };
            return match result {
                Ok(futex::WaitResult::TimedOut) => Ok(WaitStatus::TimedOut),
                Ok(_) => Ok(WaitStatus::Completed),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => Err(e),
            };
        }
    }

    /// Waits asynchronously while the word holds `expected`.
    ///
    /// The returned future completes when a wake arrives or when the word
    /// does not hold `expected` at the moment the kernel queues the wait
    /// (if it already differs on first poll, at once and without a
    /// syscall). Completion means "re-check the word": it may rarely be
    /// spurious. The future is executor-agnostic and cancel-safe: dropping
    /// it before completion never loses a wake (a wake it had consumed is
    /// passed on with `wake(1)`).
    ///
    /// # Errors
    /// The kernel refused the wait (`EFAULT`, …).
    pub fn wait_async(&self, expected: u32) -> WaitFuture<'_> {
        WaitFuture {
            futex: self,
            expected,
            state: FutureState::Idle,
        }
    }
}

impl Drop for AsyncFutex {
    fn drop(&mut self) {
        self.word.wait_idle();
    }
}

enum FutureState {
    Idle,
    Armed(Arc<Waiter>),
    Done,
}

/// The future of [`AsyncFutex::wait_async`].
#[must_use = "futures do nothing unless awaited"]
pub struct WaitFuture<'a> {
    futex: &'a AsyncFutex,
    expected: u32,
    state: FutureState,
}

impl std::fmt::Debug for WaitFuture<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitFuture")
            .field("expected", &self.expected)
            .field("armed", &matches!(self.state, FutureState::Armed(_)))
            .finish()
    }
}

impl Future for WaitFuture<'_> {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match &this.state {
            FutureState::Done => Poll::Ready(Ok(())),
            FutureState::Idle => {
                if this.futex.word.load() != this.expected {
                    this.state = FutureState::Done;
                    return Poll::Ready(Ok(()));
                }
                let backend = match backend::current() {
                    Ok(b) => b,
                    Err(e) => {
                        this.state = FutureState::Done;
                        return Poll::Ready(Err(e));
                    }
                };
                let sink = Sink::Task(std::sync::Mutex::new(Some(cx.waker().clone())));
                let waiter = Waiter::arm(&this.futex.word, this.expected, sink, backend);
                this.state = FutureState::Armed(waiter);
                Pin::new(this).poll(cx)
            }
            FutureState::Armed(waiter) => {
                let ready = poll_armed(waiter, cx);
                if ready.is_ready() {
                    this.state = FutureState::Done;
                }
                ready
            }
        }
    }
}

/// Polls an armed wait for a future: `Ready` once it completed (the
/// future is then done), spuriously too when nothing here could announce
/// its completion.
pub(crate) fn poll_armed(waiter: &Arc<Waiter>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    if waiter.is_inherited() {
        // Armed before a fork, polled in the child: nothing here will
        // complete that wait. Complete spuriously (re-check the word)
        // without touching it.
        return Poll::Ready(Ok(()));
    }
    waiter.progress();
    if !waiter.register(cx.waker()) {
        if waiter.is_served_here() {
            return Poll::Pending;
        }
        // Armed in a tokio runtime, polled outside it: nothing here would
        // announce the completion. Give the wait up (passing on a wake it
        // consumed) and complete spuriously: the caller re-checks the word.
        waiter.cancel(true);
        return Poll::Ready(Ok(()));
    }
    Poll::Ready(waiter.result().unwrap_or(Ok(())))
}

impl Drop for WaitFuture<'_> {
    fn drop(&mut self) {
        if let FutureState::Armed(waiter) = &self.state {
            waiter.cancel(false);
        }
    }
}
