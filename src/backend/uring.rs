//! The io_uring backend: every wait is an `IORING_OP_FUTEX_WAIT` on one
//! process-wide ring, served by one library thread.
//!
//! Why one thread: a futex wait's completion runs as task_work on the thread
//! that *submitted* it. If user threads submitted, a completion would
//! interrupt their `epoll_wait` (`EINTR`), be delayed while they compute, and
//! turn into `-ECANCELED` when they exit. The ring thread is the only
//! submitter, sleeps in `io_uring_enter(GETEVENTS)`, and never exits, so none
//! of that reaches the user. Arming and cancelling from any thread push an
//! [`Op`] on a queue and ring a *doorbell*: a private futex word on which the
//! ring thread always keeps a `FUTEX_WAIT` queued.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::{leak, outcome_of, Backend};
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
}

impl UringBackend {
    /// Starts the ring thread and waits for it to prove that futex waits
    /// work here. The backend is allocated (and leaked, like every backend)
    /// only once that proof is in, so a failed start leaves nothing behind.
    pub(super) fn start() -> io::Result<&'static Backend> {
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
        }));
        let Backend::IoUring(this) = backend else {
            unreachable!()
        };
        // The thread waits for exactly this message; it cannot have gone.
        let _ = backend_tx.send(this);
        Ok(backend)
    }

    pub(super) fn submit(&self, waiter: Arc<Waiter>) {
        self.push(Op::Arm(waiter));
    }

    pub(super) fn cancel(&self, waiter: &Arc<Waiter>) {
        self.push(Op::Cancel(Arc::clone(waiter)));
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
    fn run(&'static self, mut ring: Ring) {
        let mut doorbell_armed = false;
        let mut ops = Vec::new();
        loop {
            if !doorbell_armed {
                let seen = self.doorbell.load(Ordering::Acquire);
                // SAFETY: the doorbell lives in the leaked backend: forever.
                if unsafe { ring.push_futex_wait(&self.doorbell, seen, true, DOORBELL) }.is_ok() {
                    doorbell_armed = true;
                }
            }
            // Taken after the doorbell wait was queued with the value seen
            // before: any later push changes the doorbell and completes it.
            std::mem::swap(
                &mut ops,
                &mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()),
            );
            for op in ops.drain(..) {
                self.apply(&mut ring, op);
            }
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                Err(_) => std::thread::yield_now(),
            }
            ring.reap(|user_data, result| match user_data {
                DOORBELL => doorbell_armed = false,
                CANCEL => {}
                ptr => {
                    // SAFETY: every other user_data is an `Arc<Waiter>`
                    // leaked by `apply` for exactly this completion.
                    let waiter = unsafe { Arc::from_raw(ptr as *const Waiter) };
                    let (outcome, errno) = outcome_of(result, &waiter);
                    waiter.finish(outcome, errno);
                }
            });
        }
    }

    fn apply(&self, ring: &mut Ring, op: Op) {
        match op {
            Op::Arm(waiter) => {
                if waiter.cancel_requested() {
                    waiter.finish(Outcome::Cancelled, 0);
                    return;
                }
                let word = waiter.word().addr();
                let private = waiter.word().is_private();
                let expected = waiter.expected();
                let ptr = Arc::into_raw(waiter);
                // SAFETY: the waiter (and through it the word's mapping) is
                // kept alive by the leaked Arc until its completion is reaped.
                if let Err(e) = unsafe { ring.push_futex_wait(word, expected, private, ptr as u64) }
                {
                    // SAFETY: not submitted, so we still own that Arc.
                    let waiter = unsafe { Arc::from_raw(ptr) };
                    waiter.finish(Outcome::Failed, e.raw_os_error().unwrap_or(libc::EIO));
                }
            }
            Op::Cancel(waiter) => {
                // In flight unless already finished; the in-flight Arc keeps
                // the pointer unique, so the cancel cannot hit another wait.
                if !waiter.is_done() {
                    let _ = ring.push_cancel(Arc::as_ptr(&waiter) as u64, CANCEL);
                }
            }
        }
    }
}
