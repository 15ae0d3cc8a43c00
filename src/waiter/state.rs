//! The armed-wait protocol on one state word: the decisions of
//! [`Waiter`](super::Waiter), free of its sink, word and backend so the loom
//! model checks (`loom_tests`) run this very code.
//!
//! Bits of the state word: [`CANCEL`] (the consumer gave up), [`DONE`] (the
//! backend finished; the [`Outcome`] is in the bits above
//! [`OUTCOME_SHIFT`]), [`DELIVERED`] (the backend is done with the waiter:
//! delivered, or decided not to) and [`FORWARDED`] (a forward queued on the
//! backend has been passed on). What the protocol does to the world goes
//! through [`Effects`].

use std::sync::atomic::Ordering;

use super::shim::{self, AtomicI32, AtomicU32, Parking};

pub(crate) const CANCEL: u32 = 1;
pub(crate) const DONE: u32 = 2;
pub(crate) const DELIVERED: u32 = 4;
/// A wake this wait consumed has been passed on (thread backend forwards).
pub(crate) const FORWARDED: u32 = 16;
pub(crate) const OUTCOME_SHIFT: u32 = 8;

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

/// How [`Effects::forward`] passed a wake on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forward {
    /// Handed to the backend, which calls [`State::forwarded`] once the
    /// wake is passed on (perhaps before `forward` returns).
    Queued,
    /// Passed on already; [`State::forwarded`] will not be called.
    Done,
}

/// What the protocol does outside its state word.
pub(crate) trait Effects {
    /// Passes on a wake this wait consumed but nobody will observe.
    fn forward(&self) -> Forward;
    /// The backend's last touch of the futex word for this wait.
    fn wait_finished(&self);
    /// Announces the completion to the sink (wakes the task, signals the
    /// eventfd).
    fn deliver(&self);
    /// Leaves the sink without stale readiness (drains an eventfd).
    fn drain(&self);
    /// The completion will not be delivered (the consumer gave up first):
    /// undoes what the kernel announced by itself, if anything (drains an
    /// eventfd the kernel wrote through a linked write).
    fn discard(&self);
    /// Asks the backend to remove the kernel wait, which it then finishes.
    /// `false` if no backend of this process serves it (armed before a
    /// `fork`): nothing will finish it here.
    fn request_cancel(&self) -> bool;
}

/// The state word of one armed wait (see the module docs).
pub(crate) struct State {
    bits: AtomicU32,
    errno: AtomicI32,
    parking: Parking,
}

impl State {
    pub(crate) fn new() -> State {
        State {
            bits: AtomicU32::new(0),
            errno: AtomicI32::new(0),
            parking: Parking::new(),
        }
    }

    /// Whether the consumer has given up on this wait.
    pub(crate) fn cancel_requested(&self) -> bool {
        self.bits.load(Ordering::Acquire) & CANCEL != 0
    }

    /// Whether the backend has finished this wait.
    pub(crate) fn is_done(&self) -> bool {
        self.bits.load(Ordering::Acquire) & DONE != 0
    }

    /// The outcome, once the backend has finished, as the consumer sees it:
    /// `Err(errno)` if the kernel refused the wait.
    pub(crate) fn result(&self) -> Option<Result<(), i32>> {
        let bits = self.bits.load(Ordering::Acquire);
        if bits & DONE == 0 {
            return None;
        }
        Some(match Outcome::from_bits(bits) {
            Outcome::Failed => Err(self.errno.load(Ordering::Acquire)),
            _ => Ok(()),
        })
    }

    /// Backend side: the kernel wait is over. Called exactly once.
    pub(crate) fn finish(&self, fx: &impl Effects, outcome: Outcome, errno: i32) {
        if outcome == Outcome::Failed {
            self.errno.store(errno, Ordering::Release);
        }
        let prev = self
            .bits
            .fetch_or(DONE | (outcome as u32) << OUTCOME_SHIFT, Ordering::AcqRel);
        debug_assert_eq!(prev & DONE, 0, "a wait finished twice");
        if prev & CANCEL != 0 && outcome.consumed_wake() {
            self.forward(fx, false);
        }
        // The last touch of the word. Delivery below only needs the waiter
        // itself, so a task woken here may drop its handle without waiting
        // on us (even if its executor polls it inside `wake`).
        fx.wait_finished();
        if prev & CANCEL == 0 {
            fx.deliver();
        } else {
            fx.discard();
        }
        self.bits.fetch_or(DELIVERED, Ordering::Release);
        if prev & CANCEL != 0 {
            // A synchronous canceller may be sleeping on the state word.
            self.parking.wake_all(&self.bits);
        }
    }

    /// Passes on a wake this wait consumed but nobody will observe. The
    /// backend chooses how: its own sibling waits may be briefly out of the
    /// kernel (see `backend::thread`), so a bare `wake(1)` could miss them.
    /// With `wait`, returns once the wake has been passed on.
    fn forward(&self, fx: &impl Effects, wait: bool) {
        if fx.forward() == Forward::Queued && wait {
            self.wait_for_bit(FORWARDED);
        }
    }

    /// Backend side: the forward queued by [`Effects::forward`] is done.
    pub(crate) fn forwarded(&self) {
        self.bits.fetch_or(FORWARDED, Ordering::Release);
        self.parking.wake_all(&self.bits);
    }

    /// Consumer side: gives up on a wait whose outcome it has not observed.
    /// A wake the wait consumed is forwarded; the sink is left drained.
    /// With `sync`, returns only once the backend is done with the waiter
    /// (so the kernel wait is gone and a following `wake` cannot count it).
    pub(crate) fn cancel(&self, fx: &impl Effects, sync: bool) {
        let prev = self.bits.fetch_or(CANCEL, Ordering::AcqRel);
        if prev & CANCEL != 0 {
            return;
        }
        if prev & DONE != 0 {
            // The backend finished first and delivered; we never looked.
            self.wait_delivered_spin();
            if Outcome::from_bits(prev).consumed_wake() {
                // Before the consumer goes on (and perhaps arms again), so
                // the wake reaches another waiter, not its next wait.
                self.forward(fx, true);
            }
            fx.drain();
            return;
        }
        if !fx.request_cancel() {
            return;
        }
        if sync {
            self.wait_for_bit(DELIVERED);
        }
    }

    /// Consumer side, after it saw the result: waits until the delivery has
    /// happened, then drains the sink, so no stale readiness is left.
    pub(crate) fn settle(&self, fx: &impl Effects) {
        self.wait_delivered_spin();
        fx.drain();
    }

    /// The backend is between `DONE` and `DELIVERED`: a few instructions
    /// and at most one syscall away.
    fn wait_delivered_spin(&self) {
        while self.bits.load(Ordering::Acquire) & DELIVERED == 0 {
            shim::spin();
        }
    }

    fn wait_for_bit(&self, bit: u32) {
        loop {
            let bits = self.bits.load(Ordering::Acquire);
            if bits & bit != 0 {
                return;
            }
            self.parking.sleep(&self.bits, bits);
        }
    }

    /// The raw state word, for the model checks' assertions.
    #[cfg(all(test, loom))]
    pub(crate) fn bits(&self) -> u32 {
        self.bits.load(Ordering::Acquire)
    }
}
