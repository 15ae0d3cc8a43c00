//! The io_uring backend: every wait is an `IORING_OP_FUTEX_WAIT`.
//!
//! Two ways to submit it:
//! - **From the arming thread** ([`caller`]), for waits announced on an
//!   eventfd (the C API): the thread submits on a ring of its own, linked
//!   to a kernel write of the eventfd, so a wake reaches the event loop
//!   with no library thread in between. The default; see [`caller`] for
//!   what it costs (an `EINTR` in the arming thread's `epoll_wait`).
//! - **From the ring thread** (this module), for every other wait (Rust
//!   futures), for every wait when `AFX_URING_SUBMIT=thread`, and when a
//!   thread cannot get a ring of its own. A completion runs as task_work on
//!   the thread that *submitted* it; the ring thread is the only submitter
//!   to its ring, sleeps in `io_uring_enter(GETEVENTS)` and never exits, so
//!   no completion interrupts, waits for or is cancelled with a user
//!   thread. Arming and cancelling from any thread push an [`Op`] on a
//!   queue and ring a *doorbell*: a private futex word on which the ring
//!   thread always keeps a `FUTEX_WAIT` queued.

mod caller;
// With the `tokio` feature, tasks' waits are reaped by their runtime's
// reactor; without it, by the ring thread (as outside a runtime).
#[cfg(feature = "tokio")]
mod reaper;
#[cfg(not(feature = "tokio"))]
#[path = "no_reaper.rs"]
mod reaper;

pub(crate) use self::caller::CallerRing;

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{leak, outcome_of, Backend};
use crate::fault::{self, Site};
use crate::sys::uring::Ring;
use crate::sys::{cvt_neg, futex, thread};
use crate::waiter::{Outcome, Waiter};

/// `user_data` of the doorbell wait.
const DOORBELL: u64 = 1;
/// `user_data` of cancel requests (their completions carry no news).
const CANCEL: u64 = 2;
/// Submission queue size; the completion queue is four times larger and the
/// kernel never drops completions (`IORING_FEAT_NODROP`).
const RING_ENTRIES: u32 = 256;

enum Op {
    Arm(Arc<Waiter>),
    Cancel(Arc<Waiter>),
}

pub(crate) struct UringBackend {
    queue: Mutex<Vec<Op>>,
    doorbell: AtomicU32,
    /// Eventfd waits are submitted by the arming thread ([`caller`]).
    caller_submits: bool,
}

/// Whether `AFX_URING_SUBMIT` lets arming threads submit their own eventfd
/// waits (`caller`, the default) or sends every wait through the ring
/// thread (`thread`).
fn caller_submits() -> io::Result<bool> {
    match std::env::var("AFX_URING_SUBMIT") {
        Err(_) => Ok(true),
        Ok(value) => match value.trim().to_ascii_lowercase().as_str() {
            "" | "caller" => Ok(true),
            "thread" => Ok(false),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("AFX_URING_SUBMIT={value:?}: expected \"caller\" or \"thread\""),
            )),
        },
    }
}

impl UringBackend {
    /// Starts the ring thread and waits for it to prove that futex waits
    /// work here. The backend is allocated (and leaked, like every backend)
    /// only once that proof is in, so a failed start leaves nothing behind.
    pub(super) fn start() -> io::Result<&'static Backend> {
        let caller_submits = caller_submits()?;
        let (ready_tx, ready_rx) = mpsc::channel();
        let (backend_tx, backend_rx) = mpsc::channel::<&'static UringBackend>();
        let thread = thread::spawn(
            std::thread::Builder::new().name("afx-io_uring".into()),
            move || {
                let Some(ring) = Self::open(ready_tx) else {
                    return;
                };
                if let Ok(this) = backend_rx.recv() {
                    this.run(ring);
                }
            },
        )?;
        let ready = ready_rx
            .recv()
            .map_err(|_| io::Error::from_raw_os_error(libc::EIO))
            .and_then(|r| r);
        if let Err(e) = ready {
            // The thread has returned or is about to: join it, so a failed
            // start leaves no thread behind either.
            let _ = thread.join();
            return Err(e);
        }
        let backend = leak(Backend::IoUring(UringBackend {
            queue: Mutex::new(Vec::new()),
            doorbell: AtomicU32::new(0),
            caller_submits,
        }));
        let Backend::IoUring(this) = backend else {
            unreachable!()
        };
        // The thread waits for exactly this message; it cannot have gone.
        let _ = backend_tx.send(this);
        Ok(backend)
    }

    pub(super) fn submit(&self, waiter: Arc<Waiter>) {
        let waiter = if !self.caller_submits {
            waiter
        } else {
            let submitted = match waiter.eventfd() {
                Some(fd) => CallerRing::arm(waiter, fd),
                None => CallerRing::arm_task(waiter),
            };
            match submitted {
                Ok(()) => return,
                Err(waiter) => waiter,
            }
        };
        self.push(Op::Arm(waiter));
    }

    pub(super) fn cancel(&self, waiter: &Arc<Waiter>) {
        match waiter.ring.get() {
            Some(ring) => ring.cancel(waiter),
            None => self.push(Op::Cancel(Arc::clone(waiter))),
        }
    }

    fn push(&self, op: Op) {
        let was_empty = {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.push(op);
            queue.len() == 1
        };
        if was_empty {
            self.doorbell.fetch_add(1, Ordering::Release);
            let _ = futex::wake(&self.doorbell, 1, true);
        }
    }

    /// Proves `IORING_OP_FUTEX_WAIT` works: a wait on a word that does not
    /// hold the expected value must complete at once with `-EAGAIN`.
    fn probe(ring: &mut Ring) -> io::Result<()> {
        let word = AtomicU32::new(1);
        // SAFETY: `word` outlives the call: we reap its completion below.
        unsafe { ring.push_futex_wait(&word, 0, true, 0)? };
        ring.submit_and_wait(1)?;
        let mut result = None;
        ring.reap(|_, res| result = Some(res));
        match result.map(cvt_neg) {
            Some(Err(e)) if e.raw_os_error() == Some(libc::EAGAIN) => Ok(()),
            Some(Err(e)) => Err(e),
            _ => Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP)),
        }
    }

    /// Ring thread, first step: creates the ring (which only this thread
    /// may submit to) and proves it, reporting the result to `start`.
    fn open(ready: mpsc::Sender<io::Result<()>>) -> Option<Ring> {
        let opened = Ring::new(RING_ENTRIES).and_then(|mut ring| {
            Self::probe(&mut ring)?;
            Ok(ring)
        });
        match opened {
            Ok(ring) => {
                let _ = ready.send(Ok(()));
                Some(ring)
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                None
            }
        }
    }

    /// Ring thread, for the life of the process: applies queued arms and
    /// cancels, reaps completions.
    ///
    /// Failures are retried, never dropped, and never spun on:
    /// - a doorbell wait or a cancel that cannot be queued (submission
    ///   queue full and not flushable, a push error) is retried every turn;
    ///   while one is outstanding the thread sleeps in the ring with a
    ///   timeout that backs off from [`BACKOFF_MIN`] to [`BACKOFF_MAX`]
    ///   instead of indefinitely, so without a doorbell it still sees new
    ///   arms and cancels, and a synchronous cancel always gets through;
    /// - a failing `io_uring_enter` (other than `EINTR`/`EBUSY`) is retried
    ///   after a pause that backs off the same way; while it fails, new
    ///   arms fail at once with its errno (the caller sees a clear error,
    ///   not a wait that never starts). Waits already handed to the ring
    ///   complete, and their cancels go through, once it works again.
    fn run(&'static self, mut ring: Ring) {
        let mut doorbell_armed = false;
        let mut ops = Vec::new();
        // Cancels not queued yet: a synchronous cancel waits for them.
        let mut cancels: Vec<Arc<Waiter>> = Vec::new();
        // The errno of `io_uring_enter` while it keeps failing (0: works).
        let mut enter_errno = 0;
        let mut stuck_wait = Backoff::default();
        let mut enter_pause = Backoff::default();
        loop {
            if !doorbell_armed {
                let seen = self.doorbell.load(Ordering::Acquire);
                doorbell_armed = Self::push_doorbell(&mut ring, &self.doorbell, seen).is_ok();
            }
            // Taken after the doorbell wait was queued with the value seen
            // before: any later push changes the doorbell and completes it.
            std::mem::swap(
                &mut ops,
                &mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()),
            );
            for op in ops.drain(..) {
                match op {
                    Op::Arm(waiter) => Self::arm(&mut ring, waiter, enter_errno),
                    Op::Cancel(waiter) => cancels.push(waiter),
                }
            }
            // A cancel is due while its wait is in flight (not finished);
            // the in-flight Arc keeps the pointer unique, so the cancel
            // cannot hit another wait. One that cannot be queued stays.
            cancels.retain(|waiter| {
                !waiter.is_done() && Self::push_cancel(&mut ring, waiter).is_err()
            });
            let stuck = !doorbell_armed || !cancels.is_empty();
            let entered = match fault::fail(Site::UringEnter) {
                Some(e) => Err(e),
                None if stuck => ring.submit_and_wait_timeout(1, stuck_wait.next()),
                None => {
                    stuck_wait.reset();
                    ring.submit_and_wait(1)
                }
            };
            match entered {
                Ok(_) => {
                    enter_errno = 0;
                    enter_pause.reset();
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                Err(e) => {
                    enter_errno = e.raw_os_error().unwrap_or(libc::EIO);
                    std::thread::sleep(enter_pause.next());
                }
            }
            ring.reap(|user_data, result| match user_data {
                DOORBELL => doorbell_armed = false,
                CANCEL => {}
                ptr => {
                    // SAFETY: every other user_data is an `Arc<Waiter>`
                    // leaked by `arm` for exactly this completion.
                    let waiter = unsafe { Arc::from_raw(ptr as *const Waiter) };
                    let (outcome, errno) = outcome_of(result, &waiter);
                    waiter.finish(outcome, errno);
                }
            });
        }
    }

    fn push_doorbell(ring: &mut Ring, doorbell: &'static AtomicU32, seen: u32) -> io::Result<()> {
        if let Some(e) = fault::fail(Site::UringDoorbellPush) {
            return Err(e);
        }
        // SAFETY: the doorbell lives in the leaked backend: forever.
        unsafe { ring.push_futex_wait(doorbell, seen, true, DOORBELL) }
    }

    fn push_cancel(ring: &mut Ring, waiter: &Arc<Waiter>) -> io::Result<()> {
        if let Some(e) = fault::fail(Site::UringCancelPush) {
            return Err(e);
        }
        ring.push_cancel(Arc::as_ptr(waiter) as u64, CANCEL)
    }

    /// Queues the kernel wait of `waiter`, or finishes it: cancelled before
    /// it started, or failed (`enter_errno` set: the ring is not taking
    /// submissions; or its SQE could not be queued).
    fn arm(ring: &mut Ring, waiter: Arc<Waiter>, enter_errno: i32) {
        if waiter.cancel_requested() {
            waiter.finish(Outcome::Cancelled, 0);
            return;
        }
        if enter_errno != 0 {
            waiter.finish(Outcome::Failed, enter_errno);
            return;
        }
        let ptr = Arc::into_raw(waiter);
        let pushed = match fault::fail(Site::UringWaitPush) {
            Some(e) => Err(e),
            // SAFETY: the waiter (and through it the words' mappings and its
            // vector) is kept alive by the leaked Arc until its completion
            // is reaped.
            None => unsafe { push_wait(ring, &*ptr, ptr as u64, None) },
        };
        if let Err(e) = pushed {
            // SAFETY: not submitted, so we still own that Arc.
            let waiter = unsafe { Arc::from_raw(ptr) };
            waiter.finish(Outcome::Failed, e.raw_os_error().unwrap_or(libc::EIO));
        }
    }
}

/// Queues `waiter`'s kernel wait (`FUTEX_WAIT` on its word, or
/// `FUTEX_WAITV` on its vector) tagged `data`; with `signal = Some((fd,
/// write_data))`, hard-linked to a write of 1 to the eventfd `fd` tagged
/// `write_data`.
///
/// # Safety
/// The waiter (its words' mappings, its vector) must stay alive, and the
/// eventfd open, until the last completion of what is queued here has
/// been reaped.
unsafe fn push_wait(
    ring: &mut Ring,
    waiter: &Waiter,
    data: u64,
    signal: Option<(RawFd, u64)>,
) -> io::Result<()> {
    let word = waiter.word();
    // SAFETY (all four): forwarded contract.
    match (waiter.vector(), signal) {
        (None, None) => unsafe {
            ring.push_futex_wait(word.addr(), waiter.expected(), word.is_private(), data)
        },
        (None, Some((fd, write_data))) => unsafe {
            ring.push_futex_wait_signalling(
                word.addr(),
                waiter.expected(),
                word.is_private(),
                data,
                fd,
                write_data,
            )
        },
        (Some(v), None) => unsafe {
            ring.push_futex_waitv(v.kernel().as_ptr(), v.len() as u32, data)
        },
        (Some(v), Some((fd, write_data))) => unsafe {
            ring.push_futex_waitv_signalling(
                v.kernel().as_ptr(),
                v.len() as u32,
                data,
                fd,
                write_data,
            )
        },
    }
}

/// First pause of the ring thread before retrying a failed step.
const BACKOFF_MIN: Duration = Duration::from_micros(100);
/// Longest pause between two retries: bounds the CPU a persistent failure
/// costs (at most 50 retries a second) and the extra latency of an arm or
/// cancel made while the doorbell cannot be queued.
const BACKOFF_MAX: Duration = Duration::from_millis(20);

/// Pauses that double from [`BACKOFF_MIN`] to [`BACKOFF_MAX`] while a
/// failure persists.
#[derive(Default)]
struct Backoff(Option<Duration>);

impl Backoff {
    fn next(&mut self) -> Duration {
        let pause = self.0.map_or(BACKOFF_MIN, |d| (d * 2).min(BACKOFF_MAX));
        self.0 = Some(pause);
        pause
    }

    fn reset(&mut self) {
        self.0 = None;
    }
}
