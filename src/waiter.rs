//! [`Waiter`]: one armed wait and the state machine that guarantees every
//! wake it consumed reaches somebody (DESIGN S3).
//!
//! Two parties touch a waiter: the *backend*, which queued the kernel wait
//! and calls [`Waiter::finish`] exactly once when the kernel reports it
//! done, and the *consumer* (a future or an [`EventFdFutex`]), which either
//! observes that outcome or gives up with [`Waiter::cancel`]. One atomic
//! `fetch_or` on each side decides who saw whom:
//!
//! - backend first (`DONE` set, then the consumer's `CANCEL`): the consumer
//!   sees `DONE`; if the outcome may have consumed a kernel wake it passes
//!   the wake on with `wake(1)`;
//! - consumer first (`CANCEL`, then `DONE`): the backend sees `CANCEL` and
//!   forwards a consumed wake itself instead of delivering it.
//!
//! So exactly one side forwards, and a cancelled wait's completion is never
//! delivered to a sink (no stale eventfd readiness).
//!
//! [`EventFdFutex`]: crate::EventFdFutex
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

use crate::backend::{self, Backend};
use crate::sys::{eventfd, futex};
use crate::word::Word;

const CANCEL: u32 = 1;
const DONE: u32 = 2;
const DELIVERED: u32 = 4;
/// A wake this wait consumed has been passed on (thread backend forwards).
const FORWARDED: u32 = 16;
const OUTCOME_SHIFT: u32 = 8;

/// How a kernel wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The kernel reported a wake for this wait (or, in the thread backend,
    /// may have: see `backend::thread`).
    Woken = 1,
    /// The word did not hold `expected` when the kernel looked.
    Mismatch = 2,
    /// Removed on the consumer's request before any wake reached it.
    Cancelled = 3,
    /// Ended without a wake (e.g. `-ECANCELED` after the submitter exited).
    Spurious = 4,
    /// The kernel refused the wait (`errno` holds why).
    Failed = 5,
}

impl Outcome {
    fn from_bits(bits: u32) -> Outcome {
        match bits >> OUTCOME_SHIFT {
            1 => Outcome::Woken,
            2 => Outcome::Mismatch,
            3 => Outcome::Cancelled,
            4 => Outcome::Spurious,
            _ => Outcome::Failed,
        }
    }

    /// Whether a kernel wake may have been used up by this wait.
    fn consumed_wake(self) -> bool {
        self == Outcome::Woken
    }
}

/// Where a completed wait is announced.
pub(crate) enum Sink {
    /// A task's waker (Rust futures).
    Task(Mutex<Option<Waker>>),
    /// An eventfd that becomes readable (C handles, foreign loops). It is
    /// owned by the [`EventFdFutex`](crate::EventFdFutex) that armed the
    /// wait, which closes it only after this waiter is `DELIVERED` (ack and
    /// cancel wait for that); the waiter never touches it afterwards. So
    /// the fd is closed exactly when the handle goes, not when a backend
    /// thread happens to drop its last reference to the waiter.
    EventFd(RawFd),
}

/// One armed wait.
pub(crate) struct Waiter {
    word: Arc<Word>,
    expected: u32,
    state: AtomicU32,
    errno: AtomicI32,
    sink: Sink,
    backend: &'static Backend,
    /// Free for the backend's routing (the thread backend's helper index).
    pub(crate) route: AtomicUsize,
}

impl Waiter {
    /// Queues a kernel wait for `*word == expected` on `backend`.
    pub(crate) fn arm(
        word: &Arc<Word>,
        expected: u32,
        sink: Sink,
        backend: &'static Backend,
    ) -> Arc<Waiter> {
        let waiter = Arc::new(Waiter {
            word: Arc::clone(word),
            expected,
            state: AtomicU32::new(0),
            errno: AtomicI32::new(0),
            sink,
            backend,
            route: AtomicUsize::new(0),
        });
        word.wait_started();
        backend.submit(Arc::clone(&waiter));
        waiter
    }

    pub(crate) fn word(&self) -> &Word {
        &self.word
    }

    pub(crate) fn expected(&self) -> u32 {
        self.expected
    }

    /// Whether the consumer has given up on this wait.
    pub(crate) fn cancel_requested(&self) -> bool {
        self.state.load(Ordering::Acquire) & CANCEL != 0
    }

    /// Whether the backend has finished this wait.
    pub(crate) fn is_done(&self) -> bool {
        self.state.load(Ordering::Acquire) & DONE != 0
    }

    /// The outcome, once the backend has finished, as the consumer sees it.
    pub(crate) fn result(&self) -> Option<io::Result<()>> {
        let state = self.state.load(Ordering::Acquire);
        if state & DONE == 0 {
            return None;
        }
        Some(match Outcome::from_bits(state) {
            Outcome::Failed => Err(io::Error::from_raw_os_error(
                self.errno.load(Ordering::Acquire),
            )),
            _ => Ok(()),
        })
    }

    /// Stores the waker to call on completion. Returns `true` if the wait
    /// is already done (the caller should not sleep).
    pub(crate) fn register(&self, waker: &Waker) -> bool {
        if let Sink::Task(slot) = &self.sink {
            let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
            match &*slot {
                Some(old) if old.will_wake(waker) => {}
                _ => *slot = Some(waker.clone()),
            }
        }
        self.is_done()
    }

    /// Backend side: the kernel wait is over. Called exactly once.
    pub(crate) fn finish(self: &Arc<Self>, outcome: Outcome, errno: i32) {
        if outcome == Outcome::Failed {
            self.errno.store(errno, Ordering::Release);
        }
        let prev = self
            .state
            .fetch_or(DONE | (outcome as u32) << OUTCOME_SHIFT, Ordering::AcqRel);
        debug_assert_eq!(prev & DONE, 0, "a wait finished twice");
        if prev & CANCEL != 0 && outcome.consumed_wake() {
            self.forward(false);
        }
        // The last touch of the word. Delivery below only needs the waiter
        // itself, so a task woken here may drop its handle without waiting
        // on us (even if its executor polls it inside `wake`).
        self.word.wait_finished();
        if prev & CANCEL == 0 {
            self.deliver();
        }
        self.state.fetch_or(DELIVERED, Ordering::Release);
        if prev & CANCEL != 0 {
            // A synchronous canceller may be sleeping on the state word.
            let _ = futex::wake(&self.state, u32::MAX, true);
        }
    }

    /// Passes on a wake this wait consumed but nobody will observe. The
    /// backend chooses how: its own sibling waits may be briefly out of the
    /// kernel (see `backend::thread`), so a bare `wake(1)` could miss them.
    /// With `wait`, returns once the wake has been passed on.
    fn forward(self: &Arc<Self>, wait: bool) {
        if backend::is_live(self.backend) {
            self.backend.forward(self);
            if wait {
                self.wait_for_bit(FORWARDED);
            }
        } else {
            let _ = self.word.wake(1);
        }
    }

    /// Backend side: the forward of [`forward`](Self::forward) is done.
    pub(crate) fn forwarded(&self) {
        self.state.fetch_or(FORWARDED, Ordering::Release);
        let _ = futex::wake(&self.state, u32::MAX, true);
    }

    fn borrow<'a>(fd: RawFd) -> BorrowedFd<'a> {
        // SAFETY: see `Sink::EventFd`: the owning handle keeps the fd open
        // until this waiter is DELIVERED, and it is used only before that
        // (delivery) or by that handle itself (draining).
        unsafe { BorrowedFd::borrow_raw(fd) }
    }

    fn deliver(&self) {
        match &self.sink {
            Sink::Task(slot) => {
                let waker = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(waker) = waker {
                    waker.wake();
                }
            }
            Sink::EventFd(fd) => {
                let _ = eventfd::signal(Self::borrow(*fd));
            }
        }
    }

    /// Consumer side: gives up on a wait whose outcome it has not observed.
    /// A wake the wait consumed is forwarded with `wake(1)`; an eventfd sink
    /// is left drained. With `sync`, returns only once the kernel wait is
    /// gone (so a following `wake` cannot count it).
    pub(crate) fn cancel(self: &Arc<Self>, sync: bool) {
        let prev = self.state.fetch_or(CANCEL, Ordering::AcqRel);
        if prev & CANCEL != 0 {
            return;
        }
        if prev & DONE != 0 {
            // The backend finished first and delivered; we never looked.
            self.wait_delivered_spin();
            if Outcome::from_bits(prev).consumed_wake() {
                // Before the consumer goes on (and perhaps arms again), so
                // the wake reaches another waiter, not its next wait.
                self.forward(true);
            }
            if let Sink::EventFd(fd) = &self.sink {
                let _ = eventfd::drain(Self::borrow(*fd));
            }
            return;
        }
        if !backend::is_live(self.backend) {
            // Armed before a fork by a backend this process does not run.
            return;
        }
        self.backend.cancel(self);
        if sync {
            self.wait_delivered();
        }
    }

    /// Consumer side, eventfd sink: if done, waits until the eventfd write
    /// has happened and drains it, so no stale readiness is left behind.
    pub(crate) fn settle_eventfd(&self) {
        self.wait_delivered_spin();
        if let Sink::EventFd(fd) = &self.sink {
            let _ = eventfd::drain(Self::borrow(*fd));
        }
    }

    /// The backend is between `DONE` and `DELIVERED`: a few instructions
    /// and at most one syscall away.
    fn wait_delivered_spin(&self) {
        while self.state.load(Ordering::Acquire) & DELIVERED == 0 {
            std::thread::yield_now();
        }
    }

    fn wait_delivered(&self) {
        self.wait_for_bit(DELIVERED);
    }

    fn wait_for_bit(&self, bit: u32) {
        loop {
            let state = self.state.load(Ordering::Acquire);
            if state & bit != 0 {
                return;
            }
            // SAFETY: `state` is a live, aligned word owned by this waiter.
            let _ = unsafe { futex::wait(&self.state, state, true, None) };
        }
    }
}
