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
//! That protocol lives in [`state`], apart from the sink, word and backend it
//! acts on (through [`Effects`]), so that the loom model checks in
//! `loom_tests` explore the production code itself:
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release --lib loom`.
//!
//! [`EventFdFutex`]: crate::EventFdFutex
#![allow(unsafe_code)]

mod shim;
mod state;
mod vector;

#[cfg(all(test, loom))]
mod loom_tests;

use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Waker;

use self::state::{Effects, Forward, State};
use crate::backend::{self, Backend, CallerRing};
use crate::sys::eventfd;
use crate::word::Word;

pub(crate) use self::state::Outcome;
pub(crate) use self::vector::{check_len, Vector};

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

/// One armed wait: on one word, or on several at once (a [`Vector`]).
pub(crate) struct Waiter {
    /// The word (a vector wait's first entry).
    word: Arc<Word>,
    expected: u32,
    /// A vector wait's entries (the first one is `word`).
    vector: Option<Box<Vector>>,
    /// The entry that completed the wait (set by the backend before
    /// `finish`; 0 for a wait on one word).
    index: AtomicUsize,
    state: State,
    sink: Sink,
    backend: &'static Backend,
    /// Free for the backend's routing (the thread backend's helper index,
    /// the io_uring wait's result until its linked write completes).
    pub(crate) route: AtomicUsize,
    /// The ring the arming thread submitted the wait to, if it did
    /// (io_uring, caller-submitted waits): where to reap and cancel it.
    pub(crate) ring: OnceLock<Arc<CallerRing>>,
    /// The kernel wrote the eventfd sink itself (a linked write), so
    /// delivery has nothing left to do, and a cancelled wait's write must
    /// be drained.
    kernel_signalled: AtomicBool,
}

impl Waiter {
    /// Queues a kernel wait for `*word == expected` on `backend`.
    pub(crate) fn arm(
        word: &Arc<Word>,
        expected: u32,
        sink: Sink,
        backend: &'static Backend,
    ) -> Arc<Waiter> {
        Self::start(Arc::clone(word), expected, None, sink, backend)
    }

    /// Queues one kernel wait on every `(word, expected)` of `entries` (1
    /// to `WAITV_MAX` of them, see [`check_len`]): it completes when any
    /// word is woken or does not hold its value.
    pub(crate) fn arm_vector(
        entries: Vec<(Arc<Word>, u32)>,
        sink: Sink,
        backend: &'static Backend,
    ) -> Arc<Waiter> {
        let (word, expected) = (Arc::clone(&entries[0].0), entries[0].1);
        let vector = Box::new(Vector::new(entries));
        Self::start(word, expected, Some(vector), sink, backend)
    }

    fn start(
        word: Arc<Word>,
        expected: u32,
        vector: Option<Box<Vector>>,
        sink: Sink,
        backend: &'static Backend,
    ) -> Arc<Waiter> {
        let waiter = Arc::new(Waiter {
            word,
            expected,
            vector,
            index: AtomicUsize::new(0),
            state: State::new(),
            sink,
            backend,
            route: AtomicUsize::new(0),
            ring: OnceLock::new(),
            kernel_signalled: AtomicBool::new(false),
        });
        waiter.each_word(Word::wait_started);
        backend.submit(Arc::clone(&waiter));
        waiter
    }

    /// The word (a vector wait's first).
    pub(crate) fn word(&self) -> &Word {
        &self.word
    }

    pub(crate) fn expected(&self) -> u32 {
        self.expected
    }

    /// A vector wait's entries; `None` for a wait on one word.
    pub(crate) fn vector(&self) -> Option<&Vector> {
        self.vector.as_deref()
    }

    /// How many words the wait is on.
    pub(crate) fn len(&self) -> usize {
        self.vector().map_or(1, Vector::len)
    }

    /// Entry `k`'s word (`k < len()`).
    pub(crate) fn word_at(&self, k: usize) -> &Word {
        self.vector().map_or(&self.word, |v| v.word(k))
    }

    /// Entry `k`'s expected value (`k < len()`).
    pub(crate) fn expected_at(&self, k: usize) -> u32 {
        self.vector().map_or(self.expected, |v| v.expected(k))
    }

    /// Calls `f` on the word of every entry.
    pub(crate) fn each_word(&self, f: impl Fn(&Word)) {
        match self.vector() {
            Some(v) => v.words().for_each(f),
            None => f(&self.word),
        }
    }

    /// Backend side, before [`finish`](Self::finish): the entry that
    /// completed the wait.
    pub(crate) fn set_index(&self, k: usize) {
        self.index.store(k, Ordering::Relaxed);
    }

    /// The entry that completed the wait, once [`result`](Self::result) is
    /// `Some`.
    pub(crate) fn index(&self) -> usize {
        // Ordered by the state word: set before `finish`, read after DONE.
        self.index.load(Ordering::Relaxed)
    }

    /// Thread backend: takes the right to finish a wait that more than one
    /// helper may see complete (a vector split over two helpers). A wait
    /// with one helper needs no claim (`true`).
    pub(crate) fn claim(&self) -> bool {
        self.vector().map_or(true, Vector::claim)
    }

    /// Thread backend: whether the wait is finished or about to be (see
    /// [`claim`](Self::claim)).
    pub(crate) fn is_claimed(&self) -> bool {
        match self.vector() {
            Some(v) => v.is_claimed(),
            None => self.is_done(),
        }
    }

    /// Thread backend: one of the forwards queued for this wait (one per
    /// entry of a vector) has been passed on.
    pub(crate) fn entry_forwarded(&self) {
        if self.vector().map_or(true, Vector::forward_done) {
            self.forwarded();
        }
    }

    /// The eventfd this wait announces its completion on, if any.
    pub(crate) fn eventfd(&self) -> Option<RawFd> {
        match self.sink {
            Sink::EventFd(fd) => Some(fd),
            Sink::Task(_) => None,
        }
    }

    /// Backend side, before [`finish`](Self::finish): the kernel has
    /// written the eventfd sink already.
    pub(crate) fn set_kernel_signalled(&self) {
        self.kernel_signalled.store(true, Ordering::Relaxed);
    }

    fn kernel_signalled(&self) -> bool {
        self.kernel_signalled.load(Ordering::Relaxed)
    }

    /// Consumer side, task sink: whether a completion will be announced to
    /// the task polling now. A task's wait submitted by a tokio runtime's
    /// thread is announced by that runtime's reactor (see
    /// `backend::uring::reaper`); polled in another runtime, one is started
    /// there; polled outside any runtime, `false`.
    pub(crate) fn is_served_here(&self) -> bool {
        match self.ring.get() {
            Some(ring) if self.eventfd().is_none() => ring.serves_here(),
            _ => true,
        }
    }

    /// Consumer side: collects a completion that may be waiting to be
    /// reaped (caller-submitted io_uring waits are finished by whoever
    /// reaps their ring). Cheap when there is none.
    pub(crate) fn progress(&self) {
        if let Some(ring) = self.ring.get() {
            if !self.is_inherited() {
                ring.reap();
            }
        }
    }

    /// Whether this wait belongs to a parent process: armed before a
    /// `fork`, by a backend whose threads stayed in the parent. A fork
    /// child must leave it alone: its state may be frozen half-way through
    /// a delivery that only the parent will finish, its eventfd is the
    /// parent's too, and a wake it consumed is the parent's to pass on.
    pub(crate) fn is_inherited(&self) -> bool {
        !backend::is_live(self.backend)
    }

    /// Whether the consumer has given up on this wait.
    pub(crate) fn cancel_requested(&self) -> bool {
        self.state.cancel_requested()
    }

    /// Whether the backend has finished this wait.
    pub(crate) fn is_done(&self) -> bool {
        self.state.is_done()
    }

    /// The outcome, once the backend has finished, as the consumer sees it
    /// (a failure's errno as [`backend::reported_errno`] maps it: a helper
    /// thread that could not be started is `ENOMEM`, never `EAGAIN`).
    pub(crate) fn result(&self) -> Option<io::Result<()>> {
        self.state.result().map(|r| {
            r.map_err(|errno| io::Error::from_raw_os_error(backend::reported_errno(errno)))
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
        self.state.finish(self, outcome, errno);
    }

    /// Backend side: the forward asked of [`Backend::forward`] is done.
    pub(crate) fn forwarded(&self) {
        self.state.forwarded();
    }

    fn borrow<'a>(fd: RawFd) -> BorrowedFd<'a> {
        // SAFETY: see `Sink::EventFd`: the owning handle keeps the fd open
        // until this waiter is DELIVERED, and it is used only before that
        // (delivery) or by that handle itself (draining).
        unsafe { BorrowedFd::borrow_raw(fd) }
    }

    /// Consumer side: gives up on a wait whose outcome it has not observed.
    /// A wake the wait consumed is forwarded with `wake(1)`; an eventfd sink
    /// is left drained. With `sync`, returns only once the kernel wait is
    /// gone (so a following `wake` cannot count it).
    /// An inherited wait (see [`is_inherited`](Self::is_inherited)) is
    /// left untouched.
    pub(crate) fn cancel(self: &Arc<Self>, sync: bool) {
        if self.is_inherited() {
            return;
        }
        self.state.cancel(self, sync);
    }

    /// Consumer side, eventfd sink: if done, waits until the eventfd write
    /// has happened and drains it, so no stale readiness is left behind.
    /// An inherited wait is left untouched.
    pub(crate) fn settle_eventfd(self: &Arc<Self>) {
        if self.is_inherited() {
            return;
        }
        self.state.settle(self);
    }
}

/// What the state machine does to the world, for a real waiter.
impl Effects for Arc<Waiter> {
    /// Through the backend when it runs in this process; its own sibling
    /// waits may be briefly out of the kernel (see `backend::thread`), so a
    /// bare `wake(1)` could miss them.
    /// A vector wait passes one wake on to each of its words: which of
    /// them the consumed wake came from is not always known (see
    /// `backend::outcome_of`).
    fn forward(&self) -> Forward {
        if backend::is_live(self.backend) {
            self.backend.forward(self);
            Forward::Queued
        } else {
            self.each_word(|word| {
                let _ = word.wake(1);
            });
            Forward::Done
        }
    }

    fn wait_finished(&self) {
        self.each_word(Word::wait_finished);
    }

    fn deliver(&self) {
        match &self.sink {
            Sink::Task(slot) => {
                let waker = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(waker) = waker {
                    // A panicking waker is its executor's bug; it must not
                    // take down the backend thread, and with it every
                    // later wait of the process.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| waker.wake()));
                }
            }
            Sink::EventFd(fd) => {
                if !self.kernel_signalled() {
                    let _ = eventfd::signal(Waiter::borrow(*fd));
                }
            }
        }
    }

    fn discard(&self) {
        if self.kernel_signalled() {
            self.drain();
        }
    }

    fn drain(&self) {
        if let Sink::EventFd(fd) = &self.sink {
            let _ = eventfd::drain(Waiter::borrow(*fd));
        }
    }

    fn request_cancel(&self) -> bool {
        if !backend::is_live(self.backend) {
            // Armed before a fork by a backend this process does not run.
            return false;
        }
        self.backend.cancel(self);
        true
    }
}
