//! The thread backend: helper threads blocking in `futex_waitv(2)`, each
//! serving up to 127 waits plus its own control word, for systems where
//! io_uring is missing or denied.
//!
//! Threads: one per 127 pending waits at the peak, created on demand and
//! kept for reuse.
//!
//! The one subtlety is how `futex_waitv` reports wakes: it returns the index
//! of the *last* entry that was woken. Entries after it were certainly not
//! woken; entries before it may have been (two wakes landing in the same
//! instant). So on a return `i`, every entry up to `i` is finished as
//! [`Outcome::Woken`]: a few spurious completions ("fallback coalescing",
//! DESIGN S4) instead of a lost wake. Entries after `i` whose word changed
//! finish as [`Outcome::Mismatch`]; the rest are queued again.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use super::{leak, Backend};
use crate::sys::futex::{self, WaitvEntry, WAITV_MAX};
use crate::waiter::{Outcome, Waiter};

/// Waits per helper: the vector's first entry is the control word.
const PER_HELPER: usize = WAITV_MAX - 1;

struct Helper {
    /// Bumped and woken whenever `waiters` changes under the helper.
    control: AtomicU32,
    waiters: Mutex<Vec<Arc<Waiter>>>,
}

impl Helper {
    fn kick(&self) {
        self.control.fetch_add(1, Ordering::Release);
        let _ = futex::wake(&self.control, 1, true);
    }
}

pub(crate) struct ThreadBackend {
    helpers: Mutex<Vec<&'static Helper>>,
}

impl ThreadBackend {
    /// Checks that `futex_waitv` is available (Linux 5.16+, not denied).
    pub(super) fn start() -> io::Result<&'static Backend> {
        let word = AtomicU32::new(1);
        let probe = [WaitvEntry::new(&word, 0, true)];
        // SAFETY: `word` is live for the call; its value differs, so the
        // call returns at once with EAGAIN.
        match unsafe { futex::waitv(&probe) } {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
            Err(e) => return Err(e),
            Ok(_) => return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP)),
        }
        Ok(leak(Backend::Thread(ThreadBackend {
            helpers: Mutex::new(Vec::new()),
        })))
    }

    pub(super) fn submit(&self, waiter: Arc<Waiter>) {
        let mut helpers = self.helpers.lock().unwrap_or_else(|e| e.into_inner());
        let mut slot = None;
        for (index, helper) in helpers.iter().enumerate() {
            let mut waiters = helper.waiters.lock().unwrap_or_else(|e| e.into_inner());
            if waiters.len() < PER_HELPER {
                waiter.route.store(index, Ordering::Relaxed);
                waiters.push(Arc::clone(&waiter));
                slot = Some(*helper);
                break;
            }
        }
        let helper = match slot {
            Some(helper) => helper,
            None => {
                let helper: &'static Helper = Box::leak(Box::new(Helper {
                    control: AtomicU32::new(0),
                    waiters: Mutex::new(vec![Arc::clone(&waiter)]),
                }));
                waiter.route.store(helpers.len(), Ordering::Relaxed);
                let spawned = std::thread::Builder::new()
                    .name("afx-waitv".into())
                    .spawn(move || run(helper));
                if let Err(e) = spawned {
                    drop(helpers);
                    waiter.finish(Outcome::Failed, e.raw_os_error().unwrap_or(libc::EAGAIN));
                    return;
                }
                helpers.push(helper);
                helper
            }
        };
        drop(helpers);
        helper.kick();
    }

    pub(super) fn cancel(&self, waiter: &Arc<Waiter>) {
        let index = waiter.route.load(Ordering::Relaxed);
        let helper = self
            .helpers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(index)
            .copied();
        if let Some(helper) = helper {
            helper.kick();
        }
    }
}

/// A helper thread: waits on its control word and its waiters, finishes
/// what completed, and starts over with the current set.
fn run(helper: &'static Helper) {
    let mut snapshot: Vec<Arc<Waiter>> = Vec::with_capacity(PER_HELPER);
    let mut vector: Vec<WaitvEntry> = Vec::with_capacity(WAITV_MAX);
    loop {
        let control = helper.control.load(Ordering::Acquire);
        snapshot.clear();
        {
            let mut waiters = helper.waiters.lock().unwrap_or_else(|e| e.into_inner());
            waiters.retain(|w| {
                if w.cancel_requested() {
                    w.finish(Outcome::Cancelled, 0);
                    false
                } else {
                    true
                }
            });
            snapshot.extend(waiters.iter().cloned());
        }
        if snapshot.is_empty() {
            // SAFETY: the control word lives in the leaked helper.
            let _ = unsafe { futex::wait(&helper.control, control, true, None) };
            continue;
        }
        vector.clear();
        vector.push(WaitvEntry::new(&helper.control, control, true));
        vector.extend(
            snapshot
                .iter()
                .map(|w| WaitvEntry::new(w.word().addr(), w.expected(), w.word().is_private())),
        );
        // SAFETY: every word stays mapped while its waiter is unfinished
        // (the handle's drop waits for that), and we hold the waiters.
        let result = unsafe { futex::waitv(&vector) };
        let mut finished = false;
        match result {
            Ok(0) => {}
            Ok(last_woken) => {
                for (index, w) in snapshot.iter().enumerate() {
                    if index < last_woken {
                        w.finish(Outcome::Woken, 0);
                        finished = true;
                    } else if w.word().load() != w.expected() {
                        w.finish(Outcome::Mismatch, 0);
                        finished = true;
                    }
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                for w in &snapshot {
                    if w.word().load() != w.expected() {
                        w.finish(Outcome::Mismatch, 0);
                        finished = true;
                    }
                }
            }
            Err(e) => {
                // EFAULT or EINVAL: find the offending words one by one.
                let errno = e.raw_os_error().unwrap_or(libc::EINVAL);
                for w in &snapshot {
                    if let Err(e) = futex::check_readable(w.word().addr(), w.word().is_private()) {
                        w.finish(Outcome::Failed, e.raw_os_error().unwrap_or(errno));
                        finished = true;
                    }
                }
                if !finished {
                    for w in &snapshot {
                        w.finish(Outcome::Failed, errno);
                    }
                    finished = true;
                }
            }
        }
        if finished {
            let mut waiters = helper.waiters.lock().unwrap_or_else(|e| e.into_inner());
            waiters.retain(|w| !w.is_done());
        }
    }
}
