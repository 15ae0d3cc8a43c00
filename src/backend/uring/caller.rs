//! Caller-submitted waits: the io_uring backend's hot path for waits that
//! report through an eventfd (the C API, [`EventFdFutex`]).
//!
//! The thread that arms the wait submits it itself, on a ring of its own
//! ([`CallerRing`], one per thread, made on its first arm): a
//! `FUTEX_WAIT` hard-linked to a write of 1 to the handle's eventfd. When
//! the wait completes, the kernel writes the eventfd at once — no library
//! thread between the wake and the event loop, one context switch per
//! round trip instead of three.
//!
//! What that costs, and how each cost is contained:
//! - A completion runs as task_work on the *submitting* thread. If that
//!   thread sleeps in `epoll_wait` (as an event loop's thread does), the
//!   kernel interrupts it with `EINTR` to run it. Every mainstream loop
//!   retries; programs that cannot take it set `AFX_URING_SUBMIT=thread`
//!   (the ring thread submits every wait, as before).
//! - Completions land in the submitter's ring, but *anyone* may reap them:
//!   the ring sits behind a lock, and [`ack`](crate::EventFdFutex::ack),
//!   `cancel` and the next arm on the ring reap what is there. The wait's
//!   completion records the kernel's result in the waiter; the write's
//!   completion (always after it) finishes the waiter, so by then the
//!   eventfd has been written and a drain cannot race the kernel's write.
//! - A cancel is queued on the waiter's own ring and reaped until the
//!   waiter is finished, from whatever thread cancels.
//! - The submitting thread must not exit with waits in flight: on this
//!   kernel (6.18) they stay queued, and when one completes after the exit
//!   the kernel cancels its linked write, so nobody would hear of it. So
//!   the thread-local ring's destructor cancels them all and reaps them
//!   while the thread still runs their completions: each completes, woken
//!   if a wake reached it first, else spuriously (the caller re-checks the
//!   word), and its eventfd is written. The ring lives on while a waiter
//!   refers to it.
//! - In a `fork` child, the thread's ring is the parent's: it is left
//!   untouched (leaked) and the child's first arm makes a new one.
//!
//! [`EventFdFutex`]: crate::EventFdFutex

use std::cell::RefCell;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::reaper::Reapers;
use super::{outcome_of, push_wait};
use crate::backend::is_transient;
use crate::process::fork_generation;
use crate::sys::uring::{self, Ring};
use crate::waiter::{Outcome, Waiter};

/// Waiters whose completions were reaped, to finish once the ring's lock
/// is released (finishing may call a task's waker, which may arm again).
type Finished = Vec<(Arc<Waiter>, Outcome, i32)>;

/// Submission slots per thread ring: each arm takes two and submits them
/// at once, so a few are plenty; completions have four times as many, and
/// the kernel never drops one (`IORING_FEAT_NODROP`).
const ENTRIES: u32 = 16;
/// `user_data` of cancel requests.
const CANCEL: u64 = 2;
/// Set in the `user_data` of a wait's linked write (waiters are aligned,
/// so their addresses have the low bits clear).
const WRITE_TAG: u64 = 1;
/// Set in the `user_data` of a wait with no linked write (a task's: its
/// completion makes the ring's fd readable for the reaper).
const SOLO_TAG: u64 = 2;
/// Set in [`Waiter::route`] once the wait's own completion has been reaped;
/// the low 32 bits hold its result.
const RESULT_SEEN: usize = 1 << 32;
/// How long a canceller sleeps on the ring between two looks at its
/// waiter (only when another thread reaped the completion it waited for).
const CANCEL_NAP: Duration = Duration::from_millis(1);

/// One thread's ring for the waits it arms.
pub(crate) struct CallerRing {
    /// Dropped only in the process that made it (see `Drop`).
    ring: ManuallyDrop<Mutex<Ring>>,
    fd: RawFd,
    /// The fork generation the ring was made in.
    generation: u32,
    /// Waits submitted here whose last completion has not been reaped.
    in_flight: AtomicUsize,
    /// The tokio runtimes reaping this ring for their tasks.
    reapers: Reapers,
}

enum Local {
    Unset,
    Ready(Arc<CallerRing>),
    /// The thread cannot make a ring (refused: `EPERM`, `ENOSYS`, …): its
    /// waits go through the ring thread. Not for a shortage of descriptors
    /// or memory, which the next arm retries.
    Unavailable(u32),
}

impl Drop for Local {
    /// The thread is exiting: its waits could not complete properly once
    /// it is gone (their completions, and the linked writes that announce
    /// them, run on the submitting thread; after its exit the kernel
    /// cancels the writes). So they are all cancelled now, while the
    /// thread still runs their completions: each completes, woken if a
    /// wake reached it first, else spuriously (the owner re-checks the
    /// word and arms again), and its eventfd is written as usual.
    /// (In a `fork` child the ring is the parent's and is left alone.)
    fn drop(&mut self) {
        if let Local::Ready(ring) = self {
            if ring.generation == fork_generation() {
                ring.cancel_everything();
            }
        }
    }
}

thread_local! {
    static LOCAL: RefCell<Local> = const { RefCell::new(Local::Unset) };
}

impl Drop for CallerRing {
    /// In a `fork` child, a ring of the parent's is never touched, not even
    /// unmapped: its mappings may not exist in the child, and their
    /// addresses may hold something else by now. It is leaked.
    fn drop(&mut self) {
        if self.generation == fork_generation() {
            // SAFETY: dropped once, here, and never used again.
            unsafe { ManuallyDrop::drop(&mut self.ring) };
        }
    }
}

impl CallerRing {
    /// This thread's ring, made on first use (and again in a `fork` child).
    /// `None` if the thread has none and cannot make one, or is exiting.
    fn of_this_thread() -> Option<Arc<CallerRing>> {
        let generation = fork_generation();
        LOCAL
            .try_with(|local| {
                let mut local = local.borrow_mut();
                match &*local {
                    Local::Ready(ring) if ring.generation == generation => {
                        return Some(Arc::clone(ring));
                    }
                    Local::Unavailable(g) if *g == generation => return None,
                    _ => {}
                }
                // A ring of the parent's, copied by fork, is left alone
                // (see `CallerRing`'s `Drop`).
                *local = Local::Unset;
                match Ring::new_shared(ENTRIES) {
                    Ok(ring) => {
                        let ring = Arc::new(CallerRing {
                            fd: ring.fd(),
                            ring: ManuallyDrop::new(Mutex::new(ring)),
                            generation,
                            in_flight: AtomicUsize::new(0),
                            reapers: Reapers::default(),
                        });
                        *local = Local::Ready(Arc::clone(&ring));
                        Some(ring)
                    }
                    // Out of descriptors or memory is "not now": the next
                    // arm tries again (meanwhile the ring thread serves).
                    Err(e) if is_transient(&e) => None,
                    Err(_) => {
                        *local = Local::Unavailable(generation);
                        None
                    }
                }
            })
            .ok()
            .flatten()
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Submits `waiter`'s wait, linked to a write to `eventfd`, from this
    /// thread. Gives the waiter back if this thread cannot submit (no ring,
    /// or the submission failed), for the ring thread to serve.
    pub(crate) fn arm(waiter: Arc<Waiter>, eventfd: RawFd) -> Result<(), Arc<Waiter>> {
        let Some(this) = Self::of_this_thread() else {
            return Err(waiter);
        };
        this.submit(waiter, |ring, waiter, data| {
            // SAFETY: the Arc leaked by `submit` keeps the waiter, its
            // words' mappings and (through its handle, which keeps its
            // eventfd open until the waiter is finished) the eventfd alive
            // until the write's completion is reaped, which gives it back.
            unsafe { push_wait(ring, waiter, data, Some((eventfd, data | WRITE_TAG))) }
        })
    }

    /// Submits a task's wait from this thread, for the current tokio
    /// runtime's reactor to announce (see [`reaper`](super::reaper)).
    /// Gives the waiter back outside a tokio runtime (or one without I/O),
    /// or if this thread cannot submit, for the ring thread to serve.
    pub(crate) fn arm_task(waiter: Arc<Waiter>) -> Result<(), Arc<Waiter>> {
        let Some(this) = Self::of_this_thread() else {
            return Err(waiter);
        };
        if !this.reapers.ensure_here(&this) {
            return Err(waiter);
        }
        this.submit(waiter, |ring, waiter, data| {
            // SAFETY: the Arc leaked by `submit` keeps the waiter and its
            // words' mappings alive until the wait's completion is reaped,
            // which gives it back.
            unsafe { push_wait(ring, waiter, data, None) }
        })
    }

    /// Queues `waiter`'s wait with `push` (given the waiter and its wait's
    /// `user_data`, see `wait_data`), leaking an `Arc` of the waiter for its
    /// completions, and hands it to the kernel. Gives the waiter back if it
    /// could not be queued.
    fn submit(
        self: &Arc<Self>,
        waiter: Arc<Waiter>,
        push: impl FnOnce(&mut Ring, &Waiter, u64) -> io::Result<()>,
    ) -> Result<(), Arc<Waiter>> {
        let data = Self::wait_data(&waiter);
        let ptr = Arc::into_raw(waiter);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let mut ring = self.lock();
        // SAFETY: the leaked Arc is alive until its completion is reaped.
        if push(&mut ring, unsafe { &*ptr }, data).is_err() {
            drop(ring);
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            // SAFETY: not queued, so the Arc leaked above is still ours.
            return Err(unsafe { Arc::from_raw(ptr) });
        }
        // SAFETY: the leaked Arc is alive; nobody can reap its completions
        // before we release the lock.
        let _ = unsafe { &*ptr }.ring.set(Arc::clone(self));
        // Queued: from here the kernel will see it at the latest on the
        // next enter of this ring, so the wait is armed either way.
        ring.submit_queued();
        let finished = Self::reap_locked(&mut ring);
        drop(ring);
        self.finish(finished);
        Ok(())
    }

    /// Whether a task's wait on this ring will be announced in the tokio
    /// runtime polling it now (starting a reaper there if needed).
    pub(crate) fn serves_here(self: &Arc<Self>) -> bool {
        self.reapers.ensure_here(self)
    }

    /// The ring's file descriptor.
    #[cfg(feature = "tokio")] // used by the reaper only
    pub(crate) fn fd(&self) -> RawFd {
        self.fd
    }

    /// Finishes every waiter whose completions are in the ring.
    pub(crate) fn reap(&self) {
        let finished = Self::reap_locked(&mut self.lock());
        self.finish(finished);
    }

    fn finish(&self, finished: Finished) {
        for (waiter, outcome, errno) in finished {
            waiter.finish(outcome, errno);
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn reap_locked(ring: &mut Ring) -> Finished {
        let mut finished = Vec::new();
        ring.reap(|user_data, result| {
            if user_data == CANCEL {
                return;
            }
            let ptr = (user_data & !(WRITE_TAG | SOLO_TAG)) as *const Waiter;
            if user_data & SOLO_TAG != 0 {
                // SAFETY: a task's wait has one completion: take back the
                // Arc `arm_task` leaked.
                let waiter = unsafe { Arc::from_raw(ptr) };
                let (outcome, errno) = outcome_of(result, &waiter);
                finished.push((waiter, outcome, errno));
                return;
            }
            if user_data & WRITE_TAG == 0 {
                // The wait's own completion: note the kernel's verdict;
                // the write's completion follows and finishes the waiter.
                // SAFETY: the Arc leaked by `arm` is alive until the
                // write's completion, which comes after this one.
                let waiter = unsafe { &*ptr };
                waiter
                    .route
                    .store(RESULT_SEEN | result as u32 as usize, Ordering::Relaxed);
                return;
            }
            // SAFETY: the write's completion is the last one for this
            // waiter: take back the Arc `arm` leaked.
            let waiter = unsafe { Arc::from_raw(ptr) };
            let seen = waiter.route.load(Ordering::Relaxed);
            let wait_result = if seen & RESULT_SEEN != 0 {
                seen as u32 as i32
            } else {
                // Cannot happen (the wait's completion comes first); be
                // conservative: a possibly consumed wake.
                0
            };
            if result >= 0 {
                waiter.set_kernel_signalled();
            }
            let (outcome, errno) = outcome_of(wait_result, &waiter);
            finished.push((waiter, outcome, errno));
        });
        finished
    }

    /// Removes `waiter`'s kernel wait and returns once the waiter is
    /// finished (cancelled, or woken if the wake won the race).
    pub(crate) fn cancel(&self, waiter: &Arc<Waiter>) {
        {
            let mut ring = self.lock();
            let finished = Self::reap_locked(&mut ring);
            if !finished.is_empty() {
                drop(ring);
                self.finish(finished);
                ring = self.lock();
            }
            if waiter.is_done() {
                return;
            }
            while ring.push_cancel(Self::wait_data(waiter), CANCEL).is_err() {
                // Submission queue full and not flushable right now.
                drop(ring);
                std::thread::yield_now();
                ring = self.lock();
            }
            ring.submit_queued();
        }
        self.reap_until_finished(waiter);
    }

    /// The `user_data` of `waiter`'s wait (its linked write's adds
    /// [`WRITE_TAG`]).
    fn wait_data(waiter: &Waiter) -> u64 {
        let ptr = waiter as *const Waiter as u64;
        if waiter.eventfd().is_some() {
            ptr
        } else {
            ptr | SOLO_TAG
        }
    }

    /// Cancels every wait of this ring and reaps until all are finished
    /// (the exiting submitter's last duty, see `Local`'s `Drop`).
    fn cancel_everything(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            return;
        }
        {
            let mut ring = self.lock();
            while ring.push_cancel_all(CANCEL).is_err() {
                drop(ring);
                std::thread::yield_now();
                ring = self.lock();
            }
            ring.submit_queued();
        }
        loop {
            self.reap();
            if self.in_flight.load(Ordering::Relaxed) == 0 {
                return;
            }
            uring::wait_for_completion(self.fd, CANCEL_NAP);
        }
    }

    /// Reaps until `waiter` is finished. The completion runs on the thread
    /// that submitted the wait (at once if that is us, when we enter the
    /// ring; otherwise the kernel interrupts that thread to run it).
    pub(crate) fn reap_until_finished(&self, waiter: &Waiter) {
        loop {
            self.reap();
            if waiter.is_done() {
                return;
            }
            uring::wait_for_completion(self.fd, CANCEL_NAP);
        }
    }
}
