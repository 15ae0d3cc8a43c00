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
//! A future polled in another runtime than the one it was armed in gets a
//! reaper there too; polled outside any runtime (or in one without I/O),
//! it gives its wait up and completes spuriously (see
//! `Waiter::is_served_here`).

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, Weak};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::runtime::{Handle, Id};

use super::caller::CallerRing;

/// The runtimes that have a reaper for one ring.
#[derive(Default)]
pub(crate) struct Reapers {
    /// Each reaper's runtime, and a token the reaper task holds: dead once
    /// the task is gone (its runtime shut down).
    live: Mutex<Vec<(Id, Weak<()>)>>,
    /// Runtimes that cannot take a reaper (built without I/O).
    refused: Mutex<Vec<Id>>,
}

/// Runtimes without I/O remembered per ring (oldest forgotten first; a
/// forgotten one only costs another refused registration).
const MAX_REFUSED: usize = 16;

/// The ring's fd as tokio sees it: registered, never closed by tokio.
struct RingFd(RawFd);

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

impl Reapers {
    /// Makes sure the current tokio runtime (if any) has a reaper for
    /// `ring`. `false` outside a runtime, or if the runtime cannot take
    /// one (built without I/O, shutting down).
    pub(crate) fn ensure_here(&self, ring: &Arc<CallerRing>) -> bool {
        let Ok(handle) = Handle::try_current() else {
            return false;
        };
        let id = handle.id();
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|(_, token)| token.strong_count() > 0);
        if live.iter().any(|(runtime, _)| *runtime == id) {
            return true;
        }
        let refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        if refused.contains(&id) {
            return false;
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
                if refused.len() == MAX_REFUSED {
                    refused.remove(0);
                }
                refused.push(id);
            }
            return false;
        };
        let token = Arc::new(());
        live.push((id, Arc::downgrade(&token)));
        drop(live);
        let ring = Arc::clone(ring);
        drop(handle.spawn(async move {
            let _token = token;
            reap_on_readiness(&ring, &fd).await;
        }));
        true
    }
}

/// The reaper task: reaps the ring each time its fd polls readable. Clears
/// the readiness *before* reaping, so a completion posted while it reaps
/// raises a new one.
async fn reap_on_readiness(ring: &CallerRing, fd: &AsyncFd<RingFd>) {
    loop {
        let Ok(mut ready) = fd.readable().await else {
            return;
        };
        ready.clear_ready();
        ring.reap();
    }
}
