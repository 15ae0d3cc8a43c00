//! Waiting for any of several words at once: [`wait_any`] (async) and
//! [`wait_any_blocking`], over `futex_waitv(2)` and io_uring's
//! `IORING_OP_FUTEX_WAITV`.
#![allow(unsafe_code)]

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::backend;
use crate::futex::{poll_armed, AsyncFutex};
use crate::sys::futex::{self, WaitvEntry};
use crate::waiter::{check_len, Sink, Waiter};

/// The most words one [`wait_any`] can wait on (the kernel's limit for
/// `futex_waitv(2)`).
pub const WAIT_ANY_MAX: usize = futex::WAITV_MAX;

/// The first entry whose word does not hold its expected value now.
pub(crate) fn first_changed(entries: &[(&AsyncFutex, u32)]) -> Option<usize> {
    entries
        .iter()
        .position(|(futex, expected)| futex.shared_word().load() != *expected)
}

/// Waits asynchronously while *every* word of `entries` holds its expected
/// value; completes with the index of an entry whose word was woken or no
/// longer held its value.
///
/// One kernel wait covers every word: the kernel checks all of them
/// atomically before it sleeps, so a store + wake on any word between your
/// reads and the wait is never lost. The index says which word completed
/// the wait, but more may have changed and a completion may be spurious:
/// re-check *every* word, then wait again with the values you saw.
///
/// Up to [`WAIT_ANY_MAX`] (128) entries, on words in any mix of mappings
/// and scopes; a word may appear more than once. Like
/// [`AsyncFutex::wait_async`], the future is executor-agnostic and
/// cancel-safe: dropping it never loses a wake. (Dropped after it consumed
/// a wake, or cancelled while the io_uring backend serves it, it passes one
/// wake on to *each* of its words: the kernel does not always say which
/// word a wake came from. Other waiters may see a spurious wake-up, never
/// a lost one.)
///
/// ```
/// use std::sync::atomic::Ordering;
/// use std::sync::Arc;
/// use asyncfutex::{wait_any, SharedMemory};
///
/// # fn main() -> std::io::Result<()> {
/// let mem = Arc::new(SharedMemory::anonymous(4096)?);
/// let (a, b) = (mem.futex(0)?, mem.futex(1)?); // words 0 and 1
/// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// # rt.block_on(async {
/// b.word().store(7, Ordering::Release); // a producer, normally elsewhere
/// b.wake(1)?;
/// let index = wait_any(&[(&a, 0), (&b, 0)]).await?;
/// assert_eq!(index, 1);
/// # Ok::<(), std::io::Error>(())
/// # })?;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// `EINVAL` for no entries or more than [`WAIT_ANY_MAX`]; `ENOSYS` from the
/// thread backend's per-wait mode (no `futex_waitv` here); the kernel
/// refused the wait (`EFAULT`, …).
pub fn wait_any<'a>(entries: &[(&'a AsyncFutex, u32)]) -> WaitAnyFuture<'a> {
    WaitAnyFuture {
        entries: entries.to_vec(),
        state: State::Idle,
    }
}

/// Blocks the calling thread while every word of `entries` holds its
/// expected value, until a wake or the timeout (`None`: forever). Signals
/// do not end the wait.
///
/// Returns `Some(index)` of an entry whose word was woken or did not hold
/// its value (re-check every word), `None` on timeout.
///
/// # Errors
/// `EINVAL` for no entries or more than [`WAIT_ANY_MAX`]; `ENOSYS` or
/// `EPERM` where `futex_waitv(2)` is not available (Linux before 5.16, a
/// seccomp profile that predates it); `EFAULT` if a word is no longer
/// mapped.
pub fn wait_any_blocking(
    entries: &[(&AsyncFutex, u32)],
    timeout: Option<Duration>,
) -> io::Result<Option<usize>> {
    check_len(entries.len())?;
    if let Some(k) = first_changed(entries) {
        return Ok(Some(k));
    }
    let vector: Vec<WaitvEntry> = entries
        .iter()
        .map(|(futex, expected)| {
            let word = futex.shared_word();
            WaitvEntry::new(word.addr(), *expected, word.is_private())
        })
        .collect();
    let deadline = timeout.map(futex::deadline_after);
    loop {
        // SAFETY: every word is mapped while its handle lives, and the
        // handles are borrowed for the call.
        match unsafe { futex::waitv_until(&vector, deadline.as_ref()) } {
            Ok(k) => return Ok(Some(k)),
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ETIMEDOUT) => return Ok(None),
                Some(libc::EAGAIN) => return Ok(Some(first_changed(entries).unwrap_or(0))),
                _ => return Err(e),
            },
        }
    }
}

enum State {
    Idle,
    Armed(Arc<Waiter>),
    Done,
}

/// The future of [`wait_any`]: the index of the entry that completed it.
#[must_use = "futures do nothing unless awaited"]
pub struct WaitAnyFuture<'a> {
    entries: Vec<(&'a AsyncFutex, u32)>,
    state: State,
}

impl std::fmt::Debug for WaitAnyFuture<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitAnyFuture")
            .field("words", &self.entries.len())
            .field("armed", &matches!(self.state, State::Armed(_)))
            .finish()
    }
}

impl Future for WaitAnyFuture<'_> {
    type Output = io::Result<usize>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match &this.state {
            State::Done => Poll::Ready(Ok(0)),
            State::Idle => {
                let armed = check_len(this.entries.len()).and_then(|()| {
                    if let Some(k) = first_changed(&this.entries) {
                        return Ok(Err(k));
                    }
                    let backend = backend::current()?;
                    let words = this
                        .entries
                        .iter()
                        .map(|(futex, expected)| (Arc::clone(futex.shared_word()), *expected))
                        .collect();
                    let sink = Sink::Task(std::sync::Mutex::new(Some(cx.waker().clone())));
                    Ok(Ok(Waiter::arm_vector(words, sink, backend)))
                });
                match armed {
                    Err(e) => {
                        this.state = State::Done;
                        Poll::Ready(Err(e))
                    }
                    Ok(Err(k)) => {
                        this.state = State::Done;
                        Poll::Ready(Ok(k))
                    }
                    Ok(Ok(waiter)) => {
                        this.state = State::Armed(waiter);
                        Pin::new(this).poll(cx)
                    }
                }
            }
            State::Armed(waiter) => match poll_armed(waiter, cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(result) => {
                    let index = waiter.index();
                    this.state = State::Done;
                    Poll::Ready(result.map(|()| index))
                }
            },
        }
    }
}

impl Drop for WaitAnyFuture<'_> {
    fn drop(&mut self) {
        if let State::Armed(waiter) = &self.state {
            waiter.cancel(false);
        }
    }
}
