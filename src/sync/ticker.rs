//! A process-wide ticker that wakes registered tasks every
//! [`TICK`](super::OWNER_CHECK_INTERVAL), so async lockers can check the
//! holder's liveness without depending on an executor's timer.
//!
//! One thread, started on demand and gone after a tick with nobody
//! registered; a `fork` child starts its own.

use std::task::Waker;

use crate::fork_safe::{ForkSafeGuard, ForkSafeMutex};
use crate::sys::{process, thread};

struct Ticker {
    /// The process the state belongs to (a `fork` child starts afresh).
    pid: u32,
    running: bool,
    wakers: Vec<Waker>,
}

/// Fork-safe: the ticker thread may hold it when the process forks.
static TICKER: ForkSafeMutex<Ticker> = ForkSafeMutex::new(Ticker {
    pid: 0,
    running: false,
    wakers: Vec::new(),
});

fn lock() -> ForkSafeGuard<'static, Ticker> {
    TICKER.lock()
}

/// Wakes `waker` once, one tick from now (at most two ticks).
pub(crate) fn wake_after_tick(waker: &Waker) {
    let pid = process::getpid();
    let mut t = lock();
    if t.pid != pid {
        // Inherited through fork: the ticker thread stayed in the parent.
        t.pid = pid;
        t.running = false;
        t.wakers.clear();
    }
    if !t.wakers.iter().any(|w| w.will_wake(waker)) {
        t.wakers.push(waker.clone());
    }
    if !t.running {
        let spawned = thread::spawn(
            std::thread::Builder::new().name("afx-sync-tick".into()),
            run,
        );
        // Without a thread, the waker is woken at once: the caller polls
        // again and checks again (busier, never stuck).
        if spawned.is_err() {
            for w in t.wakers.drain(..) {
                w.wake();
            }
            return;
        }
        t.running = true;
    }
}

fn run() {
    loop {
        std::thread::sleep(super::OWNER_CHECK_INTERVAL);
        let due = {
            let mut t = lock();
            if t.wakers.is_empty() {
                t.running = false;
                return;
            }
            std::mem::take(&mut t.wakers)
        };
        for w in due {
            w.wake();
        }
    }
}
