//! [`EventFdFutex`]: one armed wait at a time, reported through an eventfd
//! that any event loop can poll. The C API is a thin layer over it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use crate::backend;
use crate::futex::AsyncFutex;
use crate::sys::eventfd;
use crate::waiter::{Sink, Waiter};

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
pub struct EventFdFutex {
    futex: AsyncFutex,
    fd: OwnedFd,
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

    /// Arms a wait for the word to stop holding `expected` (or a wake). The
    /// eventfd becomes readable when it completes — at once if the word
    /// already differs.
    ///
    /// # Errors
    /// `EBUSY` if a wait is armed and not yet acknowledged or cancelled;
    /// why the backend cannot run.
    pub fn arm(&self, expected: u32) -> io::Result<()> {
        let mut slot = self.slot();
        if slot.is_some() {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        if self.futex.word().load(std::sync::atomic::Ordering::SeqCst) != expected {
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
    pub fn ack(&self) -> io::Result<bool> {
        let mut slot = self.slot();
        match &*slot {
            None => Ok(false),
            Some(Armed::Immediate) => {
                *slot = None;
                eventfd::drain(self.fd.as_fd())?;
                Ok(true)
            }
            Some(Armed::Kernel(waiter)) => match waiter.result() {
                None => Ok(false),
                Some(result) => {
                    waiter.settle_eventfd();
                    *slot = None;
                    result.map(|()| true)
                }
            },
        }
    }

    /// Disarms. A wake the armed wait had consumed but nobody acknowledged
    /// is passed on with `wake(1)`. Returns once the kernel wait is gone.
    /// Cancelling with nothing armed does nothing.
    pub fn cancel(&self) {
        let armed = self.slot().take();
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
        self.fd.as_fd()
    }
}

impl AsRawFd for EventFdFutex {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
