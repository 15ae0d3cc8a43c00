//! Reapers: tokio tasks that reap a [`CallerRing`] when its fd polls
//! readable, so that Rust futures armed by a runtime's threads are woken by
//! that runtime's own reactor, with no library thread in between.
//!
//! A ring's fd polls readable while completions wait in it. One reaper per
//! ring and runtime: registered in that runtime's reactor (`AsyncFd`), it
//! reaps every completion of the ring (finishing waiters, which calls
//! their tasks' wakers) whenever the fd becomes readable. A ring used under
//! several runtimes in turn (one current-thread runtime after another on
//! the same thread) gets a reaper in each; a reaper ends with its runtime.
//! A future whose ring has no reaper in the runtime polling it (moved to
//! another runtime, or out of any) completes spuriously (see
//! `Waiter::is_served_here`).
//!
//! A reaper also *submits*: a task's wait is queued on the ring without a
//! syscall and the reaper is woken to hand the queue to the kernel, which
//! it does when it runs — right after the arming task yields, before the
//! thread can sleep. So a burst of arms (10,000 tasks polled in a row)
//! costs one `io_uring_enter`, not one each. (On a multi-thread runtime
//! the reaper may run on another worker, which then is the submitter.)

use std::future::poll_fn;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Poll, Waker};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::runtime::{Handle, Id};

use super::caller::CallerRing;

/// The runtimes that have a reaper for one ring.
#[derive(Default)]
pub(crate) struct Reapers {
    /// Each reaper's runtime, and its shared state, which the reaper task
    /// holds: dead once the task is gone (its runtime shut down).
    live: Mutex<Vec<(Id, Weak<Reaper>)>>,
    /// Runtimes that cannot take a reaper (built without I/O).
    refused: Mutex<Vec<Id>>,
}

/// What a reaper task shares with the threads that arm on its ring.
#[derive(Default)]
pub(crate) struct Reaper {
    /// The task's waker, once it has been polled.
    waker: Mutex<Option<Waker>>,
    /// Waits were queued on the ring and wait for the reaper to submit.
    flush: AtomicBool,
}

impl Reaper {
    /// Asks the reaper to hand the ring's queued waits to the kernel.
    pub(crate) fn request_flush(&self) {
        if !self.flush.swap(true, Ordering::AcqRel) {
            let waker = self.waker.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    fn register(&self, waker: &Waker) {
        let mut slot = self.waker.lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            Some(old) if old.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }
}

/// The ring's fd as tokio sees it: registered, never closed by tokio.
struct RingFd(RawFd);

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

impl Reapers {
    /// The current tokio runtime's reaper for `ring`, started if needed.
    /// `None` outside a runtime, or if the runtime cannot take one (built
    /// without I/O, shutting down).
    pub(crate) fn ensure_here(&self, ring: &Arc<CallerRing>) -> Option<Arc<Reaper>> {
        let handle = Handle::try_current().ok()?;
        let id = handle.id();
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|(_, reaper)| reaper.strong_count() > 0);
        if let Some(reaper) = live
            .iter()
            .find(|(runtime, _)| *runtime == id)
            .and_then(|(_, reaper)| reaper.upgrade())
        {
            return Some(reaper);
        }
        let refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        if refused.contains(&id) {
            return None;
        }
        drop(refused);
        // Registering needs the runtime's I/O driver, and tokio panics
        // without one (a runtime built without `enable_io`): remember the
        // refusal, so that runtime's tasks go through the ring thread.
        let registered = std::panic::catch_unwind(|| {
            // SAFETY: the ring's fd stays open while the ring lives, and
            // the reaper task holding this `AsyncFd` holds the ring.
            unsafe { AsyncFd::register_with_interest(RingFd(ring.fd()), Interest::READABLE) }
        });
        let Ok(Ok(fd)) = registered else {
            if registered.is_err() {
                let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
                refused.push(id);
            }
            return None;
        };
        let reaper = Arc::new(Reaper::default());
        live.push((id, Arc::downgrade(&reaper)));
        drop(live);
        let ring = Arc::clone(ring);
        let shared = Arc::clone(&reaper);
        drop(handle.spawn(async move { reap_on_readiness(&ring, &fd, &shared).await }));
        Some(reaper)
    }
}

/// The reaper task: submits what arming threads queued, and reaps the
/// ring each time its fd polls readable. Registers its waker before it
/// looks at the flush request, and clears the readiness *before* reaping,
/// so neither a request nor a completion that comes meanwhile is missed.
async fn reap_on_readiness(ring: &CallerRing, fd: &AsyncFd<RingFd>, shared: &Reaper) {
    poll_fn(|cx| {
        shared.register(cx.waker());
        if shared.flush.swap(false, Ordering::AcqRel) {
            ring.submit_queued();
        }
        loop {
            match fd.poll_read_ready(cx) {
                Poll::Ready(Ok(mut ready)) => {
                    ready.clear_ready();
                    ring.reap();
                }
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
}
