//! The thread backend's per-wait mode, for kernels or sandboxes without
//! `futex_waitv(2)`: every pending wait is served by a helper thread of its
//! own, blocking in `FUTEX_WAIT_BITSET` (bitset `MATCH_ANY`, so plain
//! `FUTEX_WAKE` users wake it: DESIGN S2) with exactly the armed
//! `expected` (S1).
//!
//! Threads: one per pending wait at the peak, with 128 KiB stacks, created
//! on demand and kept in a pool for reuse (never more than the peak number
//! of concurrent waits). A helper idle for [`IDLE_TIMEOUT`] (5 s) exits,
//! unless only [`IDLE_FLOOR`] (4) idle helpers are left: after a burst of
//! 10,000 waits the process does not keep 10,000 threads. Submitters take
//! the most recently idle helper, so the ones that time out are those a
//! steady load does not need. They start with every signal blocked but the
//! one described below, so the application's process-directed signals
//! never land on them.
//!
//! **Cancel.** A helper blocked on the user's word cannot also wait on a
//! control word (that needs `futex_waitv`), and waking the word would wake
//! other waiters. So a cancel interrupts the helper with `tgkill(2)` and a
//! signal whose handler does nothing; the helper waits with a far deadline,
//! for which the kernel returns `EINTR` after any handler (see
//! `sys::signal`). The signal may land just before the helper enters the
//! kernel, so the canceller sends it again (after 50 µs, then doubling up
//! to 10 ms) until the helper has let go of the wait; a `cancel` returns
//! only then, so the kernel wait is gone and a later `wake(n)` cannot count
//! it. Signals are only ever sent to a helper that is still serving the
//! cancelled wait, and one still pending when the helper lets go is
//! delivered (to the no-op handler) before it takes its next wait.
//! A wake that won the race (the wait returned 0) is forwarded with
//! `FUTEX_WAKE(1)`: no sibling is ever out of the kernel here, unlike in
//! vector mode.
//!
//! **Arming** hands the job to the most recently idle helper and bumps its
//! sequence word; the `FUTEX_WAKE` is issued only if a thread sleeps on
//! that word. A helper that has just finished a wait yields the CPU once
//! before it sleeps, so the thread it woke, when it shares the CPU and arms
//! again at once, finds it awake: no wake-up, no preemption of the arming
//! thread. A fresh arm is queued in the kernel once its helper runs; after
//! a yield, under CPU contention, that can take up to a scheduler slice
//! longer (only a pure wake sent in that gap misses it, as with a plain
//! `futex(2)` waiter that has not yet called `FUTEX_WAIT`).
//!
//! The signal: the highest real-time signal whose disposition is the
//! default one when the mode starts (`AFX_THREAD_SIGNAL` chooses another,
//! or `none`); its handler is installed only when this mode is in use, and
//! an application's handler is never replaced. If the application takes
//! the signal over later (its own handler, `SIG_IGN`, `SIG_DFL`), a cancel
//! stops signalling and wakes every waiter of the word instead: spurious
//! completions (S4), never a lost or stuck wait.

use std::io;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::sys::futex::{self, WaitResult};
use crate::sys::signal::{self, Disposition};
use crate::sys::thread;
use crate::waiter::{Outcome, Waiter};

/// Stack of a helper: it only runs `Waiter::finish` (a waker, an eventfd
/// write, a forward) besides its futex call.
const STACK_SIZE: usize = 128 * 1024;
/// First re-send delay of a cancel's signal; doubles up to the maximum.
const RESEND_FIRST: Duration = Duration::from_micros(50);
const RESEND_MAX: Duration = Duration::from_millis(10);
/// The helpers' wait deadline: never reached in practice, it is there so
/// that the kernel reports an interrupted wait as `EINTR` (never restarts).
const FAR: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a helper waits for a job before it considers exiting.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle helpers kept however long they have been idle.
const IDLE_FLOOR: usize = 4;

/// How a cancel gets a helper out of its wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interrupt {
    /// `tgkill` with this signal (our no-op handler).
    Signal(libc::c_int),
    /// `FUTEX_WAKE(all)` on the word (no signal available or wanted).
    WakeAll,
}

/// Parses `AFX_THREAD_SIGNAL`: `Ok(None)` for auto, `Ok(Some(None))` for
/// `none`, `Ok(Some(Some(n)))` for a signal.
fn configured_signal() -> io::Result<Option<Option<libc::c_int>>> {
    let value = match std::env::var("AFX_THREAD_SIGNAL") {
        Ok(v) => v,
        Err(_) => return Ok(None),
    };
    let v = value.trim().to_ascii_uppercase();
    let (min, max) = signal::rt_range();
    let parsed = match v.as_str() {
        "" | "AUTO" => return Ok(None),
        "NONE" | "OFF" => return Ok(Some(None)),
        _ => {
            let v = v.strip_prefix("SIG").unwrap_or(&v);
            if let Some(n) = v.strip_prefix("RTMIN") {
                offset(n).map(|k| min + k)
            } else if let Some(n) = v.strip_prefix("RTMAX") {
                offset(n).map(|k| max + k)
            } else {
                v.parse::<libc::c_int>().ok()
            }
        }
    };
    match parsed {
        Some(n) if n > 0 && n <= max => Ok(Some(Some(n))),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "AFX_THREAD_SIGNAL={value:?}: expected \"auto\", \"none\", a signal number, \
                 SIGRTMIN+n or SIGRTMAX-n"
            ),
        )),
    }
}

/// `""`, `"+n"` or `"-n"`.
fn offset(s: &str) -> Option<libc::c_int> {
    if s.is_empty() {
        return Some(0);
    }
    let (sign, digits) = match s.as_bytes()[0] {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    digits.trim().parse::<libc::c_int>().ok().map(|n| sign * n)
}

fn choose_interrupt() -> io::Result<Interrupt> {
    match configured_signal()? {
        Some(None) => Ok(Interrupt::WakeAll),
        Some(Some(n)) => signal::claim(n).map(|()| Interrupt::Signal(n)),
        None => {
            let (min, max) = signal::rt_range();
            // From the top: applications and libraries count up from
            // SIGRTMIN. One the runtime refuses (valgrind keeps one) or
            // someone handles is skipped.
            Ok((min..=max)
                .rev()
                .find(|&n| signal::claim(n).is_ok())
                .map_or(Interrupt::WakeAll, Interrupt::Signal))
        }
    }
}

/// One helper thread and the wait it serves.
struct Slot {
    /// Index in [`PerWaitPool::slots`] (the waiter's `route`).
    index: usize,
    /// The helper's thread id, once it runs (0 before).
    tid: AtomicI32,
    /// Bumped (and woken) when a job is handed to the helper and when the
    /// helper lets go of one: the idle helper and cancellers sleep on it.
    seq: AtomicU32,
    /// How many threads sleep on `seq` or are about to ([`Slot::sleep`]):
    /// a bump with none issues no `FUTEX_WAKE` (a job handed to a helper
    /// that is still awake, a helper letting go with no canceller
    /// waiting).
    sleepers: AtomicU32,
    job: Mutex<Job>,
}

#[derive(Default)]
struct Job {
    waiter: Option<Arc<Waiter>>,
    /// A cancel signalled the helper during this job.
    signalled: bool,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Job> {
        self.job.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        // Dekker with `sleep`: either this load sees its increment, or its
        // kernel wait (after the increment) sees our new `seq` and does
        // not sleep.
        if self.sleepers.load(Ordering::SeqCst) != 0 {
            let _ = futex::wake(&self.seq, u32::MAX, true);
        }
    }

    /// Sleeps on `seq` while it still holds `seen` (until `deadline`).
    fn sleep(&self, seen: u32, deadline: &libc::timespec) -> io::Result<WaitResult> {
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        // SAFETY: `seq` lives in this slot, which the caller holds.
        let result = unsafe { futex::wait(&self.seq, seen, true, Some(deadline)) };
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

pub(super) struct PerWaitPool {
    /// The helpers by index (a waiter's `route`). The slot at an index
    /// whose helper exited stays until a new helper takes the index over
    /// (a late `cancel` finds no job of its waiter there and returns).
    slots: Mutex<Vec<Arc<Slot>>>,
    /// Helpers without a job, most recently idle last. A helper leaves it
    /// only under its lock: popped by a submitter, or retiring.
    idle: Mutex<Vec<Arc<Slot>>>,
    /// Indexes of helpers that exited, for new helpers.
    free: Mutex<Vec<usize>>,
    interrupt: Interrupt,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PerWaitPool {
    /// Chooses (and installs the handler of) the cancel signal.
    pub(super) fn new() -> io::Result<PerWaitPool> {
        Ok(PerWaitPool {
            slots: Mutex::new(Vec::new()),
            idle: Mutex::new(Vec::new()),
            free: Mutex::new(Vec::new()),
            interrupt: choose_interrupt()?,
        })
    }

    fn signal(&self) -> Option<libc::c_int> {
        match self.interrupt {
            Interrupt::Signal(n) => Some(n),
            Interrupt::WakeAll => None,
        }
    }

    pub(super) fn submit(&'static self, waiter: Arc<Waiter>) {
        let reused = lock(&self.idle).pop();
        if let Some(slot) = reused {
            waiter.route.store(slot.index, Ordering::Relaxed);
            slot.lock().waiter = Some(waiter);
            slot.bump();
            return;
        }
        let mut slots = lock(&self.slots);
        let index = lock(&self.free).pop().unwrap_or(slots.len());
        let slot = Arc::new(Slot {
            index,
            tid: AtomicI32::new(0),
            seq: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
            job: Mutex::new(Job {
                waiter: Some(Arc::clone(&waiter)),
                signalled: false,
            }),
        });
        waiter.route.store(slot.index, Ordering::Relaxed);
        let spawned = {
            // Every signal blocked but our own cancel signal.
            let slot = Arc::clone(&slot);
            thread::spawn_owning(
                std::thread::Builder::new()
                    .name("afx-wait".into())
                    .stack_size(STACK_SIZE),
                self.signal(),
                move || self.serve(slot),
            )
        };
        match spawned {
            Ok(_) if index == slots.len() => slots.push(slot),
            Ok(_) => slots[index] = slot,
            Err(e) => {
                if index < slots.len() {
                    lock(&self.free).push(index);
                }
                drop(slots);
                slot.lock().waiter = None;
                waiter.finish(Outcome::Failed, e.raw_os_error().unwrap_or(libc::EAGAIN));
            }
        }
    }

    fn slot_of(&self, waiter: &Waiter) -> Option<Arc<Slot>> {
        lock(&self.slots)
            .get(waiter.route.load(Ordering::Relaxed))
            .cloned()
    }

    /// Interrupts the helper serving `waiter` until it lets go of it. The
    /// consumer has set `CANCEL`, so the helper finishes it as cancelled,
    /// or as woken if a wake got there first (then it is forwarded).
    pub(super) fn cancel(&self, waiter: &Arc<Waiter>) {
        let Some(slot) = self.slot_of(waiter) else {
            return;
        };
        let mut delay = RESEND_FIRST;
        loop {
            let seen = {
                let mut job = slot.lock();
                match &job.waiter {
                    Some(w) if Arc::ptr_eq(w, waiter) && !waiter.is_done() => {}
                    // Let go of, or finishing (the consumer waits for the
                    // delivery itself).
                    _ => return,
                }
                let seen = slot.seq.load(Ordering::Acquire);
                let tid = slot.tid.load(Ordering::Acquire);
                // tid 0: the helper has not started yet; it checks CANCEL
                // before it waits, and we look again shortly.
                if tid != 0 {
                    match self.interrupt {
                        Interrupt::Signal(n)
                            if matches!(signal::disposition(n), Ok(Disposition::Ours)) =>
                        {
                            if signal::tgkill(tid, n).is_ok() {
                                job.signalled = true;
                            }
                        }
                        _ => {
                            let _ = waiter.word().wake(u32::MAX);
                        }
                    }
                }
                seen
            };
            let deadline = futex::deadline_after(delay);
            let _ = slot.sleep(seen, &deadline);
            delay = (delay * 2).min(RESEND_MAX);
        }
    }

    /// Passes on a wake consumed by a cancelled wait: every other wait of
    /// this process on the word is in the kernel (one helper each), so a
    /// plain `FUTEX_WAKE(1)` reaches the next one.
    pub(super) fn forward(&self, waiter: &Arc<Waiter>) {
        let _ = waiter.word().wake(1);
        waiter.forwarded();
    }

    /// A helper: takes a job, waits, finishes it, lets go, goes idle.
    fn serve(&'static self, slot: Arc<Slot>) {
        slot.tid.store(signal::gettid(), Ordering::Release);
        let deadline = futex::deadline_after(FAR);
        loop {
            let waiter = loop {
                let seen = slot.seq.load(Ordering::Acquire);
                if let Some(w) = slot.lock().waiter.clone() {
                    break w;
                }
                let idle_until = futex::deadline_after(IDLE_TIMEOUT);
                let waited = slot.sleep(seen, &idle_until);
                if matches!(waited, Ok(WaitResult::TimedOut)) && self.retire(&slot) {
                    return;
                }
            };
            let (outcome, errno) = wait_one(&waiter, &deadline);
            waiter.finish(outcome, errno);
            let signalled = {
                let mut job = slot.lock();
                job.waiter = None;
                std::mem::take(&mut job.signalled)
            };
            drop(waiter);
            if signalled {
                // Every signal of that job was sent under the lock we just
                // took: run the handler of any still pending now, so it
                // cannot interrupt the next job.
                signal::deliver_pending();
            }
            lock(&self.idle).push(Arc::clone(&slot));
            slot.bump();
            // The task or event loop just woken is likely to arm again at
            // once, and submitters take the most recently idle helper: us.
            // Give it the CPU first (when it shares ours), so its job finds
            // us awake: no FUTEX_WAKE, no sleep and wake-up, no preemption
            // of the arming thread. Returns at once if nothing else is
            // runnable here.
            std::thread::yield_now();
        }
    }
}

impl PerWaitPool {
    /// Decides whether the idle helper of `slot`, whose wait for a job
    /// timed out, exits: not if a submitter has just popped it from `idle`
    /// (its job is on the way), nor if only [`IDLE_FLOOR`] idle helpers are
    /// left. Decided under the `idle` lock, which submitters hold to pop a
    /// helper: one that is leaving is out of `idle` before anyone could
    /// take it. Its index goes to `free` for a new helper.
    fn retire(&self, slot: &Arc<Slot>) -> bool {
        let mut idle = lock(&self.idle);
        if idle.len() <= IDLE_FLOOR {
            return false;
        }
        let Some(position) = idle.iter().position(|s| Arc::ptr_eq(s, slot)) else {
            return false;
        };
        // `remove`, not `swap_remove`: the order says who was idle longest.
        idle.remove(position);
        lock(&self.free).push(slot.index);
        true
    }
}

/// The kernel wait of one waiter, with exactly its armed `expected`.
fn wait_one(waiter: &Waiter, deadline: &libc::timespec) -> (Outcome, i32) {
    if waiter.cancel_requested() {
        return (Outcome::Cancelled, 0);
    }
    let word = waiter.word();
    // SAFETY: the word stays mapped while its waiter is unfinished (the
    // handle's drop waits for that), and we hold the waiter.
    let result = unsafe {
        futex::wait(
            word.addr(),
            waiter.expected(),
            word.is_private(),
            Some(deadline),
        )
    };
    match result {
        // A return of 0 means the kernel took us off the queue for a wake:
        // it may have consumed one, even if a signal is pending too.
        Ok(WaitResult::Woken) => (Outcome::Woken, 0),
        Ok(WaitResult::Mismatch) => (Outcome::Mismatch, 0),
        Ok(WaitResult::TimedOut) => (Outcome::Spurious, 0),
        Err(e) if e.raw_os_error() == Some(libc::EINTR) => {
            if waiter.cancel_requested() {
                (Outcome::Cancelled, 0)
            } else {
                (Outcome::Spurious, 0)
            }
        }
        Err(e) => (Outcome::Failed, e.raw_os_error().unwrap_or(libc::EINVAL)),
    }
}
