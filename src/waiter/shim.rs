//! What the waiter state machine ([`super::state`]) needs from the platform:
//! its atomics, a short spin, and futex-style parking on its state word.
//!
//! Normally these are std atomics and `futex(2)` on the state word. In the
//! loom model checks (`RUSTFLAGS="--cfg loom"`, unit tests only) they are
//! loom's atomics, `loom::thread::yield_now`, and a mutex + condition
//! variable that behaves like a futex (check-then-sleep is atomic, a wake
//! reaches every sleeper queued before it), so loom explores the same
//! protocol code and reports a lost wake-up as a deadlock.

#[cfg(not(all(test, loom)))]
pub(crate) use self::os::*;

#[cfg(all(test, loom))]
pub(crate) use self::model::*;

#[cfg(not(all(test, loom)))]
mod os {
    pub(crate) use std::sync::atomic::{AtomicI32, AtomicU32};

    use crate::sys::futex;

    /// One round of a short busy wait.
    pub(crate) fn spin() {
        std::thread::yield_now();
    }

    /// Futex parking on a state word: nothing to keep, the kernel queues.
    pub(crate) struct Parking;

    impl Parking {
        pub(crate) fn new() -> Parking {
            Parking
        }

        /// Sleeps unless `word` no longer holds `seen` (checked atomically
        /// with going to sleep); may return spuriously.
        pub(crate) fn sleep(&self, word: &AtomicU32, seen: u32) {
            // SAFETY: `word` is a live, aligned word (a reference), owned by
            // the waiter that also owns this parking spot.
            let _ = unsafe { futex::wait(word, seen, true, None) };
        }

        /// Wakes every thread asleep in [`sleep`](Self::sleep) on `word`.
        pub(crate) fn wake_all(&self, word: &AtomicU32) {
            let _ = futex::wake(word, u32::MAX, true);
        }
    }
}

#[cfg(all(test, loom))]
mod model {
    pub(crate) use loom::sync::atomic::{AtomicI32, AtomicU32};

    use loom::sync::{Condvar, Mutex};
    use std::sync::atomic::Ordering;

    pub(crate) fn spin() {
        loom::thread::yield_now();
    }

    /// A futex on one word, modelled: the value check and going to sleep
    /// happen under the lock that a wake takes before notifying.
    pub(crate) struct Parking {
        lock: Mutex<()>,
        cond: Condvar,
    }

    impl Parking {
        pub(crate) fn new() -> Parking {
            Parking {
                lock: Mutex::new(()),
                cond: Condvar::new(),
            }
        }

        pub(crate) fn sleep(&self, word: &AtomicU32, seen: u32) {
            let guard = self.lock.lock().unwrap();
            // Relaxed: the futex compare gives no ordering either; callers
            // re-load with Acquire after waking.
            if word.load(Ordering::Relaxed) == seen {
                drop(self.cond.wait(guard).unwrap());
            }
        }

        pub(crate) fn wake_all(&self, _word: &AtomicU32) {
            let _guard = self.lock.lock().unwrap();
            self.cond.notify_all();
        }
    }
}
