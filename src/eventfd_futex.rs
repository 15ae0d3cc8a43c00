//! [`EventFdFutex`]: one armed wait at a time, reported through an eventfd
//! that any event loop can poll. The C API is a thin layer over it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use crate::backend::{self, Backend};
use crate::futex::AsyncFutex;
use crate::process;
use crate::sys::eventfd;
use crate::wait_any::first_changed;
use crate::waiter::{check_len, Sink, Waiter};
#[cfg(feature = "capi")]
use crate::word::Word;

/// The armed wait of an [`EventFdFutex`].
enum Armed {
    /// A word already differed when armed (its entry: 0 for a wait on the
    /// handle's word): complete, eventfd signalled.
    Immediate(usize),
    /// A kernel wait.
    Kernel(Arc<Waiter>),
}

/// An [`AsyncFutex`] whose one armed wait is announced by an eventfd.
///
/// The protocol for an event loop (epoll, libuv, Asio, asyncio, mio):
/// 1. [`arm`](Self::arm) with the value you last saw;
/// 2. poll [`as_fd`](AsFd::as_fd) for readability;
/// 3. when readable, [`ack`](Self::ack): `true` means the wait completed
///    (the eventfd is drained); re-read the word, act, and arm again.
///
/// The eventfd is a hint, the word is the truth: a completion can be
/// spurious. [`cancel`](Self::cancel) disarms, passing on a wake the wait had
/// consumed. The eventfd is owned by the handle: poll it, never read or
/// close it.
///
/// `wake` and blocking waits (through [`futex`](Self::futex)) may be used
/// from any thread; `arm`/`ack`/`cancel` are meant for one owner at a time
/// (they are thread-safe, but concurrent use makes no sense).
///
/// # After `fork`
/// In a `fork` child, a handle made before the fork is *detached* from the
/// parent: its first use in the child (`as_fd`, `arm`, `ack`, `cancel`,
/// drop) gives it a fresh eventfd under the same fd number (the eventfd
/// object itself is shared with the parent), and a wait the parent had
/// armed is reported to the child as completed: `ack` returns `true` once
/// (a spurious completion: re-check the word). Nothing the child does
/// reaches the parent's wait, eventfd or wake counts. The handle then works
/// in the child as any other; poll the fd from an epoll set made in the
/// child (one inherited from the parent is shared with it).
///
/// # Example
/// Arm a wait, let an event loop wait for the eventfd (here `poll(2)`),
/// then acknowledge and re-check the word.
///
/// ```
/// use std::os::fd::AsRawFd;
/// use std::sync::atomic::Ordering;
/// use std::sync::Arc;
/// use asyncfutex::{EventFdFutex, SharedMemory};
///
/// # fn main() -> std::io::Result<()> {
/// let mem = Arc::new(SharedMemory::anonymous(4096)?);
/// let waiter = EventFdFutex::new(mem.futex(0)?)?;
/// waiter.arm(0)?; // complete when the word is woken or differs from 0
///
/// let peer = mem.futex(0)?; // normally another process
/// peer.word().store(7, Ordering::Release);
/// peer.wake(1)?;
///
/// let mut fds = [libc::pollfd { fd: waiter.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
/// loop {
///     // SAFETY: one valid pollfd.
///     let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, 10_000) };
///     if n > 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
///         break; // ready (or timed out: ack below says whether it completed)
///     }
/// }
/// assert!(waiter.ack()?, "the armed wait completed");
/// assert_eq!(waiter.futex().word().load(Ordering::Acquire), 7);
/// # Ok(())
/// # }
/// ```
pub struct EventFdFutex {
    futex: AsyncFutex,
    fd: OwnedFd,
    /// The fork generation (`process::fork_generation`) that `fd` and the
    /// armed wait belong to; another one means this is a fork child's
    /// inherited copy, not yet detached.
    generation: AtomicU32,
    armed: Mutex<Option<Armed>>,
}

impl std::fmt::Debug for EventFdFutex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventFdFutex")
            .field("futex", &self.futex)
            .field("eventfd", &self.fd.as_raw_fd())
            .finish()
    }
}

impl EventFdFutex {
    /// Wraps `futex` and creates its eventfd (`EFD_NONBLOCK | EFD_CLOEXEC`).
    ///
    /// # Errors
    /// `EMFILE`/`ENFILE` when out of descriptors.
    pub fn new(futex: AsyncFutex) -> io::Result<EventFdFutex> {
        Ok(EventFdFutex {
            futex,
            fd: eventfd::create()?,
            generation: AtomicU32::new(process::fork_generation()),
            armed: Mutex::new(None),
        })
    }

    /// The underlying handle (for `wake` and blocking `wait`).
    pub fn futex(&self) -> &AsyncFutex {
        &self.futex
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Armed>> {
        self.armed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// In a fork child, detaches a handle made before the fork (see the
    /// type docs): a fresh eventfd under the same number, and an armed
    /// wait of the parent turned into a completed one here, without
    /// touching that wait or the parent's eventfd.
    fn adopt(&self, slot: &mut Option<Armed>) -> io::Result<()> {
        let current = process::fork_generation();
        if self.generation.load(Ordering::Acquire) == current {
            return Ok(());
        }
        eventfd::renew(self.fd.as_fd())?;
        if slot.is_some() {
            // Dropping an inherited waiter leaves its state alone.
            *slot = Some(Armed::Immediate(0));
            eventfd::signal(self.fd.as_fd())?;
        }
        self.generation.store(current, Ordering::Release);
        Ok(())
    }

    /// [`adopt`](Self::adopt) for the fd accessors, which cannot fail: on
    /// error the fd stays the inherited one and the next `arm`, `ack` or
    /// `cancel` tries again.
    fn adopt_for_fd(&self) {
        if self.generation.load(Ordering::Acquire) != process::fork_generation() {
            let _ = self.adopt(&mut self.slot());
        }
    }

    /// Arms a wait for the word to stop holding `expected` (or a wake). The
    /// eventfd becomes readable when it completes — at once if the word
    /// already differs.
    ///
    /// # Errors
    /// `EBUSY` if a wait is armed and not yet acknowledged or cancelled;
    /// why the backend cannot run.
    pub fn arm(&self, expected: u32) -> io::Result<()> {
        let word = self.futex.shared_word();
        self.arm_with(
            || (word.load() != expected).then_some(0),
            |sink, backend| Waiter::arm(word, expected, sink, backend),
        )
    }

    /// Arms one wait on several words: the eventfd becomes readable when
    /// any word of `entries` is woken or does not hold its expected value
    /// (at once if one already differs). [`ack_index`](Self::ack_index)
    /// tells which; [`ack`](Self::ack) and [`cancel`](Self::cancel) work as
    /// for [`arm`](Self::arm). See [`wait_any`](crate::wait_any) for the
    /// semantics. The handle's own word takes part only if it is in
    /// `entries`.
    ///
    /// The handles in `entries` must outlive the armed wait: dropping one
    /// waits until the wait is acknowledged or cancelled.
    ///
    /// # Errors
    /// `EINVAL` for no entries or more than
    /// [`WAIT_ANY_MAX`](crate::WAIT_ANY_MAX); as for [`arm`](Self::arm).
    pub fn arm_any(&self, entries: &[(&AsyncFutex, u32)]) -> io::Result<()> {
        check_len(entries.len())?;
        let words = entries
            .iter()
            .map(|(futex, expected)| (Arc::clone(futex.shared_word()), *expected))
            .collect();
        self.arm_with(
            || first_changed(entries),
            |sink, backend| Waiter::arm_vector(words, sink, backend),
        )
    }

    /// [`arm_any`](Self::arm_any) on words the caller vouches for (the C
    /// API's raw vectors): the words are not read here (one that is not
    /// mapped fails the wait with `EFAULT`, reported by the ack).
    #[cfg(feature = "capi")] // used by the C ABI only
    pub(crate) fn arm_words(&self, words: Vec<(Arc<Word>, u32)>) -> io::Result<()> {
        check_len(words.len())?;
        self.arm_with(
            || None,
            |sink, backend| Waiter::arm_vector(words, sink, backend),
        )
    }

    /// Arms the wait `make` queues, unless `changed` finds a word that
    /// already differs (its entry): then the wait is complete at once.
    fn arm_with(
        &self,
        changed: impl FnOnce() -> Option<usize>,
        make: impl FnOnce(Sink, &'static Backend) -> Arc<Waiter>,
    ) -> io::Result<()> {
        let mut slot = self.slot();
        self.adopt(&mut slot)?;
        if slot.is_some() {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        if let Some(k) = changed() {
            eventfd::signal(self.fd.as_fd())?;
            *slot = Some(Armed::Immediate(k));
            return Ok(());
        }
        let backend = backend::current()?;
        let waiter = make(Sink::EventFd(self.fd.as_raw_fd()), backend);
        *slot = Some(Armed::Kernel(waiter));
        Ok(())
    }

    /// Acknowledges a completion: `Ok(true)` if the armed wait completed
    /// (now disarmed, eventfd drained: re-check the word), `Ok(false)` if it
    /// is still pending or nothing is armed.
    ///
    /// # Errors
    /// The kernel refused the armed wait (e.g. `EFAULT`); it is disarmed.
    /// In a fork child, `EMFILE`/`ENFILE` if the handle's fresh eventfd
    /// cannot be made (see the type docs).
    pub fn ack(&self) -> io::Result<bool> {
        self.ack_index().map(|index| index.is_some())
    }

    /// [`ack`](Self::ack), telling which entry completed the wait:
    /// `Ok(Some(index))` (0 for a wait armed with [`arm`](Self::arm)),
    /// `Ok(None)` if it is still pending or nothing is armed. Re-check
    /// every word either way.
    ///
    /// # Errors
    /// As for [`ack`](Self::ack).
    pub fn ack_index(&self) -> io::Result<Option<usize>> {
        let mut slot = self.slot();
        self.adopt(&mut slot)?;
        match &*slot {
            None => Ok(None),
            Some(Armed::Immediate(k)) => {
                let k = *k;
                *slot = None;
                eventfd::drain(self.fd.as_fd())?;
                Ok(Some(k))
            }
            Some(Armed::Kernel(waiter)) => match Self::collect(waiter, self.fd.as_fd()) {
                None => Ok(None),
                Some(result) => {
                    waiter.settle_eventfd();
                    let index = waiter.index();
                    *slot = None;
                    result.map(|()| Some(index))
                }
            },
        }
    }

    /// The armed wait's result, reaping its completion if the kernel has
    /// posted it. If the eventfd is readable the kernel has written it, and
    /// the completion that finishes the waiter is a moment away (posted
    /// right after the write, perhaps on another CPU): wait for it rather
    /// than report "pending" for a readable eventfd, which an
    /// edge-triggered loop would never be told about again.
    fn collect(waiter: &Waiter, fd: BorrowedFd<'_>) -> Option<io::Result<()>> {
        waiter.progress();
        if let Some(result) = waiter.result() {
            return Some(result);
        }
        if waiter.ring.get().is_none() || !eventfd::is_readable(fd) {
            return None;
        }
        loop {
            std::thread::yield_now();
            waiter.progress();
            if let Some(result) = waiter.result() {
                return Some(result);
            }
        }
    }

    /// Disarms. A wake the armed wait had consumed but nobody acknowledged
    /// is passed on with `wake(1)`. Returns once the kernel wait is gone.
    /// Cancelling with nothing armed does nothing.
    pub fn cancel(&self) {
        let armed = {
            let mut slot = self.slot();
            if self.adopt(&mut slot).is_err() {
                // A fork child out of descriptors: forget the parent's
                // wait without touching it or its eventfd.
                slot.take();
                return;
            }
            slot.take()
        };
        match armed {
            None => {}
            Some(Armed::Immediate(_)) => {
                let _ = eventfd::drain(self.fd.as_fd());
            }
            Some(Armed::Kernel(waiter)) => waiter.cancel(true),
        }
    }

    /// Whether a wait is armed and not yet acknowledged.
    pub fn is_armed(&self) -> bool {
        self.slot().is_some()
    }
}

impl Drop for EventFdFutex {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl AsFd for EventFdFutex {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.adopt_for_fd();
        self.fd.as_fd()
    }
}

impl AsRawFd for EventFdFutex {
    fn as_raw_fd(&self) -> RawFd {
        self.adopt_for_fd();
        self.fd.as_raw_fd()
    }
}
