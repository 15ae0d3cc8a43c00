//! The thread backend's vector mode: helper threads blocking in
//! `futex_waitv(2)`, each serving up to 127 words of pending waits plus
//! its own control word.
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
//!
//! Vector waits (`wait_any`). A helper's vector holds *entries*, not waits:
//! a wait on `n` words takes `n` of its 127 places, as one *chunk*. A wait
//! on 128 words (the kernel's limit, one more than a helper has room for
//! beside its control word) is served by two helpers: its first 127 words
//! by one, the last by another. Either may see it complete, so finishing
//! it takes a *claim* ([`Waiter::claim`]); a helper that loses the claim
//! passes on what its part consumed, and the winner kicks the other
//! helper so it lets go of the part at once. A vector wait that completes
//! spuriously (its entries lie before the reported one, see above)
//! reports its first changed word, else its last entry in that helper.
//! A forward from a vector wait passes one wake on to each of its words,
//! through the helper holding that entry.

use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use crate::sys::futex::{self, WaitvEntry, WAITV_MAX};
use crate::sys::thread;
use crate::waiter::{Outcome, Waiter};
use crate::word::Word;

/// Places per helper: the vector's first entry is the control word.
const PER_HELPER: usize = WAITV_MAX - 1;

/// The [`Helper::control`] bit that says the helper is (about to be) asleep
/// in the kernel on its control word, so a kick must wake it.
const SLEEPING: u32 = 1;
/// What a kick adds to [`Helper::control`] (the bits above [`SLEEPING`]
/// count kicks).
const KICK: u32 = 2;

/// The entries of one wait that one helper serves: all of them, or one of
/// the two parts of a wait on more words than a helper has room for.
#[derive(Clone)]
struct Chunk {
    waiter: Arc<Waiter>,
    entries: Range<usize>,
}

impl Chunk {
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether this chunk is one part of a wait served by two helpers.
    fn is_part(&self) -> bool {
        self.len() < self.waiter.len()
    }

    /// The first entry whose word does not hold its value, with what
    /// reading it gave: `Ok(k)` it differs, `Err((k, errno))` it cannot be
    /// read (a C vector's raw word, see `Word::holds`).
    fn first_changed(&self) -> Option<Result<usize, (usize, i32)>> {
        self.entries.clone().find_map(|k| {
            match self.waiter.word_at(k).holds(self.waiter.expected_at(k)) {
                Ok(true) => None,
                Ok(false) => Some(Ok(k)),
                Err(e) => Some(Err((k, e.raw_os_error().unwrap_or(libc::EFAULT)))),
            }
        })
    }

    /// Whether the words can be compared without a syscall each (no raw
    /// C vector words among them).
    fn cheap_to_check(&self) -> bool {
        self.entries
            .clone()
            .all(|k| self.waiter.word_at(k).is_checked())
    }

    /// Finishes the wait if a word of this chunk does not hold its value
    /// (`Mismatch`) or cannot be read (`Failed`). Returns whether it did.
    fn settle_changed(&self, pool: &WaitvPool) -> bool {
        match self.first_changed() {
            None => false,
            Some(Ok(k)) => finish(pool, self, Outcome::Mismatch, 0, k),
            Some(Err((k, errno))) => finish(pool, self, Outcome::Failed, errno, k),
        }
    }

    /// The entry of this chunk on `word`, if any.
    fn entry_on(&self, word: &Word) -> Option<usize> {
        self.entries
            .clone()
            .find(|&k| same_word(self.waiter.word_at(k), word))
    }
}

/// How a wait is split over helpers: one chunk, or two when it has more
/// words than a helper has room for.
fn parts(n: usize) -> impl Iterator<Item = Range<usize>> {
    let first = n.min(PER_HELPER);
    std::iter::once(0..first).chain((n > first).then_some(first..n))
}

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
    /// The chunks this helper serves (at most [`PER_HELPER`] entries).
    chunks: Vec<Chunk>,
    /// How many entries `chunks` holds.
    used: usize,
    /// Entries of this helper's waits whose consumed wake must be passed
    /// on: (wait, entry).
    forwards: Vec<(Arc<Waiter>, usize)>,
}

impl HelperState {
    /// Drops the chunks `drop` selects, keeping `used` right.
    fn remove(&mut self, mut drop: impl FnMut(&Chunk) -> bool) {
        let mut freed = 0;
        self.chunks.retain(|c| {
            let gone = drop(c);
            if gone {
                freed += c.len();
            }
            !gone
        });
        self.used -= freed;
    }
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

fn same_word(a: &Word, b: &Word) -> bool {
    a.addr() == b.addr() && a.is_private() == b.is_private()
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

    pub(super) fn submit(&'static self, waiter: Arc<Waiter>) {
        let mut helpers = self.helpers.lock().unwrap_or_else(|e| e.into_inner());
        let mut placed: Vec<&'static Helper> = Vec::with_capacity(2);
        for (part, entries) in parts(waiter.len()).enumerate() {
            let chunk = Chunk {
                waiter: Arc::clone(&waiter),
                entries,
            };
            match self.place(&mut helpers, chunk) {
                Ok(index) => {
                    set_route(&waiter, part, index);
                    placed.push(helpers[index]);
                }
                Err(errno) => {
                    drop(helpers);
                    // A part already placed is dropped by its helper once
                    // it sees the wait claimed.
                    if waiter.claim() {
                        waiter.finish(Outcome::Failed, errno);
                    }
                    placed.iter().for_each(|h| h.kick());
                    return;
                }
            }
        }
        drop(helpers);
        placed.iter().for_each(|h| h.kick());
    }

    /// Puts `chunk` on a helper with room for it, starting one if none
    /// has. Returns the helper's index, or the errno of a thread that
    /// could not be started.
    fn place(
        &'static self,
        helpers: &mut Vec<&'static Helper>,
        chunk: Chunk,
    ) -> Result<usize, i32> {
        for (index, helper) in helpers.iter().enumerate() {
            let mut state = helper.lock();
            if state.used + chunk.len() <= PER_HELPER {
                state.used += chunk.len();
                state.chunks.push(chunk);
                return Ok(index);
            }
        }
        let spare = self.spare.lock().unwrap_or_else(|e| e.into_inner()).take();
        let helper: &'static Helper = spare.unwrap_or_else(|| {
            Box::leak(Box::new(Helper {
                control: AtomicU32::new(0),
                state: Mutex::new(HelperState::default()),
            }))
        });
        {
            let mut state = helper.lock();
            state.used = chunk.len();
            state.chunks.push(chunk);
        }
        let spawned = thread::spawn(
            std::thread::Builder::new().name("afx-waitv".into()),
            move || run(helper, self),
        );
        if let Err(e) = spawned {
            // Nobody else knows this helper: empty it (its hold on the
            // waiter would keep the word mapped for ever) and keep it for
            // the next try.
            *helper.lock() = HelperState::default();
            *self.spare.lock().unwrap_or_else(|e| e.into_inner()) = Some(helper);
            return Err(e.raw_os_error().unwrap_or(libc::EAGAIN));
        }
        helpers.push(helper);
        Ok(helpers.len() - 1)
    }

    fn helper_at(&self, index: usize) -> Option<&'static Helper> {
        self.helpers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(index)
            .copied()
    }

    /// The helpers serving `waiter` (one, or two for a split vector).
    fn helpers_of(&self, waiter: &Waiter) -> Vec<&'static Helper> {
        (0..parts(waiter.len()).count())
            .filter_map(|part| self.helper_at(route(waiter, part)))
            .collect()
    }

    /// The helper serving entry `k` of `waiter`.
    fn helper_of_entry(&self, waiter: &Waiter, k: usize) -> Option<&'static Helper> {
        self.helper_at(route(waiter, usize::from(k >= PER_HELPER)))
    }

    /// Kicks every helper serving `waiter`: one that still holds a part of
    /// a wait finished elsewhere lets go of it.
    fn kick_helpers_of(&self, waiter: &Waiter) {
        self.helpers_of(waiter).iter().for_each(|h| h.kick());
    }

    pub(super) fn cancel(&self, waiter: &Arc<Waiter>) {
        self.kick_helpers_of(waiter);
    }

    /// Queues the forward of each of the wait's entries on the helper
    /// serving it, which hands it to a sibling on the same word or sends a
    /// `FUTEX_WAKE` before it queues its waits again.
    pub(super) fn forward(&self, waiter: &Arc<Waiter>) {
        let n = waiter.len();
        if let Some(vector) = waiter.vector() {
            vector.forwards_queued(n);
        }
        for k in 0..n {
            let word = waiter.word_at(k);
            match self.helper_of_entry(waiter, k) {
                Some(helper) => {
                    // Keeps the word mapped until the helper has forwarded.
                    word.wait_started();
                    helper.lock().forwards.push((Arc::clone(waiter), k));
                    helper.kick();
                }
                None => {
                    let _ = word.wake(1);
                    waiter.entry_forwarded();
                }
            }
        }
    }
}

/// The helper serving part `part` of `waiter` (see [`parts`]).
fn route(waiter: &Waiter, part: usize) -> usize {
    match (part, waiter.vector()) {
        (0, _) | (_, None) => waiter.route.load(Ordering::Relaxed),
        (_, Some(v)) => v.second_route.load(Ordering::Relaxed),
    }
}

fn set_route(waiter: &Waiter, part: usize, index: usize) {
    match (part, waiter.vector()) {
        (0, _) | (_, None) => waiter.route.store(index, Ordering::Relaxed),
        (_, Some(v)) => v.second_route.store(index, Ordering::Relaxed),
    }
}

/// Finishes the wait of `chunk` with `outcome`, reporting entry `index`,
/// if the wait is not claimed by its other helper. A wait served by two
/// helpers has the other one kicked, so it lets go of its part at once.
fn finish(pool: &WaitvPool, chunk: &Chunk, outcome: Outcome, errno: i32, index: usize) -> bool {
    if !chunk.waiter.claim() {
        return false;
    }
    chunk.waiter.set_index(index);
    chunk.waiter.finish(outcome, errno);
    if chunk.is_part() {
        pool.kick_helpers_of(&chunk.waiter);
    }
    true
}

/// A helper thread: passes on forwarded wakes, drops cancelled waits,
/// waits on its control word and its waiters, finishes what completed, and
/// starts over with the current set.
fn run(helper: &'static Helper, pool: &'static WaitvPool) {
    let mut snapshot: Vec<Chunk> = Vec::with_capacity(PER_HELPER);
    let mut vector: Vec<WaitvEntry> = Vec::with_capacity(WAITV_MAX);
    let mut forwards = Vec::new();
    let mut cancelled = Vec::new();
    // Wakes consumed by a part of a wait that its other helper finished.
    let mut orphans: Vec<(Arc<Waiter>, usize)> = Vec::new();
    loop {
        // Read before the snapshot: a kick after this read makes
        // `prepare_sleep` fail, or reaches us in the kernel.
        let control = helper.control.load(Ordering::Acquire) & !SLEEPING;
        snapshot.clear();
        {
            let mut state = helper.lock();
            forwards.append(&mut state.forwards);
            state.remove(|c| {
                if c.waiter.cancel_requested() {
                    cancelled.push(c.clone());
                    true
                } else {
                    // A part of a wait finished by its other helper.
                    c.waiter.is_claimed()
                }
            });
            snapshot.extend(state.chunks.iter().cloned());
        }
        for c in cancelled.drain(..) {
            finish(pool, &c, Outcome::Cancelled, 0, c.entries.start);
        }
        if !forwards.is_empty() || !orphans.is_empty() {
            for (from, k) in forwards.drain(..) {
                pass_on(pool, from.word_at(k), &snapshot);
                from.word_at(k).wait_finished();
                from.entry_forwarded();
            }
            for (from, k) in orphans.drain(..) {
                pass_on(pool, from.word_at(k), &snapshot);
            }
            let mut state = helper.lock();
            state.remove(|c| c.waiter.is_claimed());
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
        for c in &snapshot {
            vector.extend(c.entries.clone().map(|k| {
                let word = c.waiter.word_at(k);
                WaitvEntry::new(word.addr(), c.waiter.expected_at(k), word.is_private())
            }));
        }
        // SAFETY: every word stays mapped while its waiter is unfinished
        // (the handle's drop waits for that), and we hold the waiters.
        let result = unsafe { futex::waitv(&vector) };
        let kicked = helper.control.load(Ordering::Acquire) & !SLEEPING != sleeping & !SLEEPING;
        helper.awake();
        if settle(pool, result, kicked, &snapshot, &mut orphans) {
            let idle = {
                let mut state = helper.lock();
                state.remove(|c| c.waiter.is_claimed());
                state.chunks.is_empty() && state.forwards.is_empty() && orphans.is_empty()
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

/// Hands a wake consumed on `word` to a live sibling on that word (out of
/// the kernel right now, so a `FUTEX_WAKE` would miss it), or else wakes
/// one kernel waiter of the word.
fn pass_on(pool: &WaitvPool, word: &Word, snapshot: &[Chunk]) {
    for to in snapshot {
        if to.waiter.is_claimed() || to.waiter.cancel_requested() {
            continue;
        }
        if let Some(k) = to.entry_on(word) {
            if finish(pool, to, Outcome::Woken, 0, k) {
                return;
            }
        }
    }
    let _ = word.wake(1);
}

/// Finishes the waits that a `futex_waitv` return settles (`kicked`: the
/// control word no longer holds the value the helper slept on). Returns
/// whether any was finished. Wakes consumed by a part of a wait that its
/// other helper finished go to `orphans`, to be passed on. Words are
/// compared with `Word::holds`: a C vector's raw word may be unmapped, and
/// is never read in user space.
fn settle(
    pool: &WaitvPool,
    result: std::io::Result<usize>,
    kicked: bool,
    snapshot: &[Chunk],
    orphans: &mut Vec<(Arc<Waiter>, usize)>,
) -> bool {
    let mut finished = false;
    match result {
        // The control word: no waiter was woken.
        Ok(0) => {}
        Ok(last_woken) => {
            // Vector positions: the control word is 0.
            let mut first = 1;
            for c in snapshot {
                let end = first + c.len();
                if first <= last_woken {
                    // The reported entry is in this chunk, or the chunk lies
                    // before it and a wake may have taken an entry off the
                    // queue in the same instant: nothing tells which, and a
                    // consumed wake must not be dropped.
                    let (index, woken) = if last_woken < end {
                        let k = c.entries.start + last_woken - first;
                        (k, c.entries.start..k + 1)
                    } else {
                        let changed = match c.first_changed() {
                            Some(Ok(k)) => Some(k),
                            _ => None,
                        };
                        (changed.unwrap_or(c.entries.end - 1), c.entries.clone())
                    };
                    if finish(pool, c, Outcome::Woken, 0, index) {
                        finished = true;
                    } else {
                        orphans.extend(woken.map(|k| (Arc::clone(&c.waiter), k)));
                    }
                } else if c.cheap_to_check() {
                    // Not woken (the kernel reports the last woken index);
                    // a word that changed completes it now rather than on
                    // the helper's next call (raw C words are left to that
                    // call: a syscall each).
                    finished |= c.settle_changed(pool);
                }
                first = end;
            }
        }
        Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
        // The control word changed (a kick): the kernel looked no
        // further (it is the vector's first entry). The next call checks
        // the other words again.
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && kicked => {}
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
            for c in snapshot {
                finished |= c.settle_changed(pool);
            }
        }
        Err(e) => {
            // EFAULT or EINVAL: find the offending words one by one.
            let errno = e.raw_os_error().unwrap_or(libc::EINVAL);
            let unreadable = |c: &Chunk| {
                c.entries.clone().find_map(|k| {
                    let word = c.waiter.word_at(k);
                    futex::check_readable(word.addr(), word.is_private())
                        .err()
                        .map(|e| (k, e.raw_os_error().unwrap_or(errno)))
                })
            };
            let mut any = false;
            for c in snapshot {
                if let Some((k, errno)) = unreadable(c) {
                    finish(pool, c, Outcome::Failed, errno, k);
                    any = true;
                }
            }
            if !any {
                for c in snapshot {
                    finish(pool, c, Outcome::Failed, errno, c.entries.start);
                }
            }
            finished = true;
        }
    }
    finished
}
