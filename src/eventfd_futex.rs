//! [`EventFdFutex`]: one armed wait at a time, reported through an eventfd
//! that any event loop can poll. The C API is a thin layer over it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use crate::futex::AsyncFutex;
use crate::sys::eventfd;
use crate::waiter::{Sink, Waiter};
use crate::{backend, process};

/// The armed wait of an [`EventFdFutex`].
enum Armed {
    /// The word already differed when armed: complete, eventfd signalled.
    Immediate,
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
            *slot = Some(Armed::Immediate);
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
        let mut slot = self.slot();
        self.adopt(&mut slot)?;
        if slot.is_some() {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        if self.futex.word().load(Ordering::SeqCst) != expected {
            eventfd::signal(self.fd.as_fd())?;
            *slot = Some(Armed::Immediate);
            return Ok(());
        }
        let backend = backend::current()?;
        let sink = Sink::EventFd(self.fd.as_raw_fd());
        let waiter = Waiter::arm(self.futex.shared_word(), expected, sink, backend);
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
        let mut slot = self.slot();
        self.adopt(&mut slot)?;
        match &*slot {
            None => Ok(false),
            Some(Armed::Immediate) => {
                *slot = None;
                eventfd::drain(self.fd.as_fd())?;
                Ok(true)
            }
            Some(Armed::Kernel(waiter)) => match Self::collect(waiter, self.fd.as_fd()) {
                None => Ok(false),
                Some(result) => {
                    waiter.settle_eventfd();
                    *slot = None;
                    result.map(|()| true)
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
            Some(Armed::Immediate) => {
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
