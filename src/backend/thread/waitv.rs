//! The thread backend's vector mode: helper threads blocking in
//! `futex_waitv(2)`, each serving up to 127 waits plus its own control
//! word.
//!
//! Threads: one per 127 pending waits at the peak, created on demand and
//! kept for reuse.
//!
//! `futex_waitv` has two properties that shape this module:
//! - It returns the index of the *last* woken entry. Entries after it were
//!   not woken; entries before it may have been, by a wake that landed
//!   between the one that woke the helper and the helper's return from the
//!   kernel, and nothing tells which. So every entry up to the reported
//!   one finishes as [`Outcome::Woken`] — spuriously, for the ones nobody
//!   woke (S4) — and only the entries after it whose word did not change
//!   are queued again. Re-queueing an earlier entry because its word did
//!   not change would drop a pure wake (a `FUTEX_WAKE` that changed no
//!   word) that it consumed: the waker was told it woke someone (S3).
//!   The price: a wake of the entry at position `k` of a helper's vector
//!   completes the `k - 1` waits before it too. With waits spread evenly
//!   over full helpers that is about 60 spurious completions per wake
//!   (measured on distinct words, `examples/pure_wake_cost.rs`,
//!   BENCHMARKS.md: 54–59 per wake at 10,000 pending waits, 47–50 at
//!   1,000, 18 at 100, pure or store+wake alike).
//! - Any return takes *every* entry of the vector out of the kernel until
//!   the helper calls it again. So a wake passed on by one of its own waits
//!   ([`WaitvPool::forward`]) is handed straight to a sibling on the same
//!   word when there is one, and only otherwise sent with `FUTEX_WAKE`.
//!
//! The re-queue window: whenever a wait of a helper completes, or one is
//! armed on it or cancelled (each makes `futex_waitv` return), the helper's
//! other waits are out of the kernel queue until it calls `futex_waitv`
//! again. A pure wake that lands then finds nobody (`FUTEX_WAKE` returns
//! 0), as with a plain `futex(2)` waiter between two `FUTEX_WAIT` calls.
//! Measured on a 2-vCPU VM under load (BENCHMARKS.md): after a sibling's
//! wake, a probe saw the other wait out of the queue for a median
//! 5.6–8.2 µs (p99 8.5–37 µs, worst 124–830 µs), queued again a median
//! 8–15 µs after the wake returned. In a stream of wakes, each sent as soon
//! as the previous one's wait completed (so while its spurious siblings
//! re-arm), 0–1.2 % found their target out of the queue at first.
//! Protocols that change the word before waking (all the usual ones) are
//! unaffected: the re-queued wait sees the new value and completes at once.
//!
//! What arming costs. Arming pushes the wait on a helper and *kicks* it: a
//! read-modify-write of its control word, and a `FUTEX_WAKE` only if the
//! helper is asleep in the kernel ([`SLEEPING`] set). A helper that is
//! awake (finishing completions, taking its snapshot) needs no syscall: it
//! notices the kick when it compares the control word before sleeping, so
//! a burst of arms costs the arming thread about one wake per helper
//! snapshot, not one per arm (1,000 back-to-back arms: 0.35 → 0.09 µs
//! each, `examples/thread_arm_cost.rs`). And a helper left with no wait
//! after finishing one yields the CPU once before it looks again: the
//! woken thread, on the same CPU, usually arms its next wait right away,
//! which then costs no wake-up of the helper and no preemption of the
//! arming thread. On one CPU that makes the C API + epoll round trip three
//! context switches per side in either order of arming (arm then notify
//! the peer, or notify then arm), where the arm-first order took four.
//! A fresh arm is queued in the kernel only once its helper has run (as
//! before); the yield lets other runnable threads of that CPU go first, so
//! under CPU contention that can take up to a scheduler slice longer. Only
//! a pure wake (one that does not change the word) sent in that gap misses
//! the new wait, as with a plain `futex(2)` waiter that has not yet called
//! `FUTEX_WAIT`.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use crate::sys::futex::{self, WaitvEntry, WAITV_MAX};
use crate::sys::thread;
use crate::waiter::{Outcome, Waiter};

/// Waits per helper: the vector's first entry is the control word.
const PER_HELPER: usize = WAITV_MAX - 1;

/// The [`Helper::control`] bit that says the helper is (about to be) asleep
/// in the kernel on its control word, so a kick must wake it.
const SLEEPING: u32 = 1;
/// What a kick adds to [`Helper::control`] (the bits above [`SLEEPING`]
/// count kicks).
const KICK: u32 = 2;

struct Helper {
    /// Bumped by every kick (whenever the helper's state changes under it),
    /// plus the [`SLEEPING`] bit. The helper sets that bit just before it
    /// sleeps (it is part of the value it hands the kernel) and clears it
    /// when it wakes; the kick that finds it set clears it and is the only
    /// one to issue a `FUTEX_WAKE`. So arming on a helper that is awake
    /// (finishing a completion, taking its snapshot) costs no syscall, and
    /// a burst of kicks to a sleeping helper costs one wake.
    control: AtomicU32,
    state: Mutex<HelperState>,
}

#[derive(Default)]
struct HelperState {
    /// The waits this helper serves (at most [`PER_HELPER`]).
    waiters: Vec<Arc<Waiter>>,
    /// Waits of this helper whose consumed wake must be passed on.
    forwards: Vec<Arc<Waiter>>,
}

impl Helper {
    /// Tells the helper that its state changed: it takes a new snapshot
    /// before it next sleeps, or is woken if it sleeps already. Called
    /// after the change, outside the state lock.
    fn kick(&self) {
        // One read-modify-write on the word the helper hands the kernel:
        // if it already stored SLEEPING (about to call, or in, the kernel),
        // the count changed under it, so the kernel either refuses to
        // queue it (EAGAIN) or queued it before now and the wake below
        // reaches it. If it had not stored SLEEPING yet, its `fetch_or`
        // sees the count changed and it looks at its state again. Every
        // modification of `control` is a read-modify-write, so the
        // helper's acquire on it sees the state change made before.
        let previous = self
            .control
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |c| {
                Some(c.wrapping_add(KICK) & !SLEEPING)
            })
            .unwrap_or_else(|c| c);
        if previous & SLEEPING != 0 {
            let _ = futex::wake(&self.control, 1, true);
        }
    }

    /// The helper, before it sleeps on a snapshot taken after reading
    /// `control`: sets [`SLEEPING`]. Returns the value to hand the kernel,
    /// or `None` if a kick came since `control` was read (the snapshot may
    /// be stale: take another).
    fn prepare_sleep(&self, control: u32) -> Option<u32> {
        let now = self.control.fetch_or(SLEEPING, Ordering::AcqRel);
        (now & !SLEEPING == control & !SLEEPING).then_some(now | SLEEPING)
    }

    /// The helper, back from the kernel (or not going there): kicks need
    /// not wake it until it sleeps again.
    fn awake(&self) {
        self.control.fetch_and(!SLEEPING, Ordering::AcqRel);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HelperState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn same_word(a: &Waiter, b: &Waiter) -> bool {
    a.word().addr() == b.word().addr() && a.word().is_private() == b.word().is_private()
}

pub(super) struct WaitvPool {
    helpers: Mutex<Vec<&'static Helper>>,
    /// A helper whose thread could not be started, emptied for the next
    /// try (helpers are leaked, so failures must not make new ones).
    spare: Mutex<Option<&'static Helper>>,
}

impl WaitvPool {
    pub(super) fn new() -> WaitvPool {
        WaitvPool {
            helpers: Mutex::new(Vec::new()),
            spare: Mutex::new(None),
        }
    }

    /// Checks that `futex_waitv` is available (Linux 5.16+, not denied by
    /// seccomp): `Err` with the kernel's reason (`ENOSYS`, `EPERM`) if not.
    pub(super) fn probe() -> io::Result<()> {
        let word = AtomicU32::new(1);
        let probe = [WaitvEntry::new(&word, 0, true)];
        // SAFETY: `word` is live for the call; its value differs, so the
        // call returns at once with EAGAIN.
        match unsafe { futex::waitv(&probe) } {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Ok(()),
            Err(e) => Err(e),
            Ok(_) => Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP)),
        }
    }

    pub(super) fn submit(&self, waiter: Arc<Waiter>) {
        let mut helpers = self.helpers.lock().unwrap_or_else(|e| e.into_inner());
        let mut slot = None;
        for (index, helper) in helpers.iter().enumerate() {
            let mut state = helper.lock();
            if state.waiters.len() < PER_HELPER {
                waiter.route.store(index, Ordering::Relaxed);
                state.waiters.push(Arc::clone(&waiter));
                slot = Some(*helper);
                break;
            }
        }
        let helper = match slot {
            Some(helper) => helper,
            None => {
                let spare = self.spare.lock().unwrap_or_else(|e| e.into_inner()).take();
                let helper: &'static Helper = spare.unwrap_or_else(|| {
                    Box::leak(Box::new(Helper {
                        control: AtomicU32::new(0),
                        state: Mutex::new(HelperState::default()),
                    }))
                });
                helper.lock().waiters.push(Arc::clone(&waiter));
                waiter.route.store(helpers.len(), Ordering::Relaxed);
                let spawned = thread::spawn(
                    std::thread::Builder::new().name("afx-waitv".into()),
                    move || run(helper),
                );
                if let Err(e) = spawned {
                    // Nobody else knows this helper: empty it (its hold on
                    // the waiter would keep the word mapped for ever) and
                    // keep it for the next try.
                    helper.lock().waiters.clear();
                    *self.spare.lock().unwrap_or_else(|e| e.into_inner()) = Some(helper);
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

    fn helper_of(&self, waiter: &Waiter) -> Option<&'static Helper> {
        let index = waiter.route.load(Ordering::Relaxed);
        self.helpers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(index)
            .copied()
    }

    pub(super) fn cancel(&self, waiter: &Arc<Waiter>) {
        if let Some(helper) = self.helper_of(waiter) {
            helper.kick();
        }
    }

    /// Queues the forward on the waiter's helper, which hands it to a
    /// sibling on the same word or sends a `FUTEX_WAKE` before it queues
    /// its waits again.
    pub(super) fn forward(&self, waiter: &Arc<Waiter>) {
        match self.helper_of(waiter) {
            Some(helper) => {
                // Keeps the word mapped until the helper has forwarded.
                waiter.word().wait_started();
                helper.lock().forwards.push(Arc::clone(waiter));
                helper.kick();
            }
            None => {
                let _ = waiter.word().wake(1);
                waiter.forwarded();
            }
        }
    }
}

/// A helper thread: passes on forwarded wakes, drops cancelled waits,
/// waits on its control word and its waiters, finishes what completed, and
/// starts over with the current set.
fn run(helper: &'static Helper) {
    let mut snapshot: Vec<Arc<Waiter>> = Vec::with_capacity(PER_HELPER);
    let mut vector: Vec<WaitvEntry> = Vec::with_capacity(WAITV_MAX);
    let mut forwards = Vec::new();
    let mut cancelled = Vec::new();
    loop {
        // Read before the snapshot: a kick after this read makes
        // `prepare_sleep` fail, or reaches us in the kernel.
        let control = helper.control.load(Ordering::Acquire) & !SLEEPING;
        snapshot.clear();
        {
            let mut state = helper.lock();
            forwards.append(&mut state.forwards);
            state.waiters.retain(|w| {
                if w.cancel_requested() {
                    cancelled.push(Arc::clone(w));
                    false
                } else {
                    true
                }
            });
            snapshot.extend(state.waiters.iter().cloned());
        }
        for w in cancelled.drain(..) {
            w.finish(Outcome::Cancelled, 0);
        }
        if !forwards.is_empty() {
            pass_on(&forwards, &snapshot);
            forwards.clear();
            snapshot.retain(|w| !w.is_done());
            helper.lock().waiters.retain(|w| !w.is_done());
            // Finishing may have queued more forwards: look again.
            continue;
        }
        let Some(sleeping) = helper.prepare_sleep(control) else {
            // Kicked while taking the snapshot: no need to sleep to see it.
            helper.awake();
            continue;
        };
        if snapshot.is_empty() {
            // SAFETY: the control word lives in the leaked helper.
            let _ = unsafe { futex::wait(&helper.control, sleeping, true, None) };
            helper.awake();
            continue;
        }
        vector.clear();
        vector.push(WaitvEntry::new(&helper.control, sleeping, true));
        vector.extend(
            snapshot
                .iter()
                .map(|w| WaitvEntry::new(w.word().addr(), w.expected(), w.word().is_private())),
        );
        // SAFETY: every word stays mapped while its waiter is unfinished
        // (the handle's drop waits for that), and we hold the waiters.
        let result = unsafe { futex::waitv(&vector) };
        helper.awake();
        if settle(result, &snapshot) {
            let idle = {
                let mut state = helper.lock();
                state.waiters.retain(|w| !w.is_done());
                state.waiters.is_empty() && state.forwards.is_empty()
            };
            if idle {
                // Nothing of ours is out of the kernel queue now and no
                // forward is pending (a forward goes out first, before the
                // consumer it came from can arm again and receive it), and
                // the task or event loop we just woke is likely to arm
                // again at once: give it the CPU first, so the arm finds us
                // awake (no FUTEX_WAKE, no extra sleep and wake-up, no
                // preemption of the arming thread) and we queue it in the
                // snapshot we take next. With nothing else runnable here
                // (the woken thread is on another CPU) this returns at
                // once.
                std::thread::yield_now();
            }
        }
    }
}

/// Hands each forwarded wake to a live sibling on the same word (out of the
/// kernel right now, so a `FUTEX_WAKE` would miss it), or else wakes one
/// kernel waiter of the word.
fn pass_on(forwards: &[Arc<Waiter>], snapshot: &[Arc<Waiter>]) {
    for from in forwards {
        let sibling = snapshot
            .iter()
            .find(|w| same_word(w, from) && !w.is_done() && !w.cancel_requested());
        match sibling {
            Some(to) => to.finish(Outcome::Woken, 0),
            None => {
                let _ = from.word().wake(1);
            }
        }
        from.word().wait_finished();
        from.forwarded();
    }
}

/// Finishes the waits that a `futex_waitv` return settles. Returns whether
/// any was finished.
fn settle(result: std::io::Result<usize>, snapshot: &[Arc<Waiter>]) -> bool {
    let changed = |w: &Waiter| w.word().load() != w.expected();
    let mut finished = false;
    let mut finish = |w: &Arc<Waiter>, outcome| {
        w.finish(outcome, 0);
        finished = true;
    };
    match result {
        // The control word: no waiter was woken.
        Ok(0) => {}
        Ok(last_woken) => {
            for (k, w) in snapshot.iter().enumerate() {
                let index = k + 1;
                if index <= last_woken {
                    // The reported entry, or one before it that a wake may
                    // have taken off the queue in the same instant: nothing
                    // tells which, and a consumed wake must not be dropped.
                    finish(w, Outcome::Woken);
                } else if changed(w) {
                    // Not woken (the kernel reports the last woken index).
                    finish(w, Outcome::Mismatch);
                }
            }
        }
        Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
            for w in snapshot {
                if changed(w) {
                    finish(w, Outcome::Mismatch);
                }
            }
        }
        Err(e) => {
            // EFAULT or EINVAL: find the offending words one by one.
            let errno = e.raw_os_error().unwrap_or(libc::EINVAL);
            let mut any = false;
            for w in snapshot {
                if let Err(e) = futex::check_readable(w.word().addr(), w.word().is_private()) {
                    w.finish(Outcome::Failed, e.raw_os_error().unwrap_or(errno));
                    any = true;
                }
            }
            if !any {
                for w in snapshot {
                    w.finish(Outcome::Failed, errno);
                }
            }
            finished = true;
        }
    }
    finished
}
