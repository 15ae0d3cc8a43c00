//! Error paths driven by fault injection (`asyncfutex::__fault`, compiled
//! into debug builds only; see `src/fault.rs`).
//!
//! The io_uring backend: each case makes one internal step of the ring
//! thread fail and checks that nothing hangs or spins.
//!
//! - a cancel whose SQE cannot be queued is retried until it is: a
//!   synchronous cancel (`EventFdFutex::cancel`, `afx_cancel`) and a drop
//!   (`afx_free`) return, and the kernel wait is gone;
//! - a doorbell wait that cannot be queued is retried: the ring thread
//!   never sleeps without one, so a later arm still reaches the kernel;
//! - a persistently failing `io_uring_enter` is retried with a bounded
//!   backoff (no 100 % CPU spin), new arms fail at once with its errno,
//!   and the backend recovers once it works again.
//!
//! The C ABI: a panic caught in a constructor (`afx_new`, `afx_*_open`)
//! returns NULL with `errno` `ENOTRECOVERABLE`, as the `int` functions
//! return `-ENOTRECOVERABLE`.
//!
//! Each case runs in a fork child (fault switches are process-wide; the
//! child starts its own ring) under the child watchdog, with
//! `AFX_URING_SUBMIT=thread` so that every wait goes through the ring
//! thread (by default the thread that arms an eventfd wait submits it). The io_uring
//! backend is used whatever `AFX_BACKEND` says; where it cannot run, or in
//! a release build (no fault injection), the tests print a SKIP.

#[macro_use]
mod common;

use std::os::fd::AsFd;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use asyncfutex::__fault::{self as fault, Site};
use asyncfutex::{select_backend, BackendKind, EventFdFutex};
use common::*;

/// The ring thread's longest retry pause (`BACKOFF_MAX` in
/// `src/backend/uring.rs`).
const BACKOFF_MAX: Duration = Duration::from_millis(20);

fn io<T>(what: &str, r: std::io::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// `None` (after a SKIP line) when these tests cannot run here.
fn usable(test: &str) -> Option<()> {
    if !fault::ENABLED {
        eprintln!("SKIP: [{test}] fault injection is compiled into debug builds only");
        return None;
    }
    match select_backend(Some(BackendKind::IoUring)) {
        Ok(_) => {
            eprintln!("[{test}] backend: io_uring (fault injection)");
            Some(())
        }
        Err(e) => {
            eprintln!("SKIP: [{test}] the io_uring backend cannot run here: {e}");
            None
        }
    }
}

/// Runs `body` in a fork child (fault switches are process-wide).
fn in_plain_child(test: &str, body: impl FnOnce() -> ChildResult + Send) {
    let _serial = serial();
    if !fault::ENABLED {
        eprintln!("SKIP: [{test}] fault injection is compiled into debug builds only");
        return;
    }
    fork_child(test, body).expect_ok();
}

/// Runs `body` in a fork child with a fresh io_uring backend.
fn in_child(test: &str, body: impl FnOnce() -> ChildResult + Send) {
    let _serial = serial();
    if usable(test).is_none() {
        return;
    }
    fork_child(test, || {
        // The child is single-threaded and its backend not started yet.
        std::env::set_var("AFX_URING_SUBMIT", "thread");
        io(
            "select_backend(io_uring) in the child",
            select_backend(Some(BackendKind::IoUring)),
        )?;
        body()
    })
    .expect_ok();
}

fn ready(f: &EventFdFutex, what: &str) -> ChildResult {
    ensure!(
        fd_readable(f.as_fd(), WATCHDOG.as_millis() as i32),
        "watchdog: {what}: eventfd never readable"
    );
    Ok(())
}

/// Wakes `n` and checks that each of `handles` completed.
fn wake_all(w: &AtomicU32, handles: &[&EventFdFutex]) -> ChildResult {
    let n = handles.len() as u32;
    ensure!(
        raw_wake(w, n as i32) == n,
        "wake({n}) did not find {n} waiters"
    );
    for (i, f) in handles.iter().enumerate() {
        ready(f, &format!("handle {i} after the wake"))?;
        ensure!(
            io("ack", f.ack())?,
            "handle {i}: ack after the wake is not true"
        );
    }
    Ok(())
}

/// A cancel SQE that cannot be queued three times in a row: `cancel` and
/// drop still return, with the kernel wait gone. Before the fix the failed
/// push was dropped and both hung until a real wake (watchdog).
#[test]
fn cancel_push_failure_is_retried() {
    in_child("cancel_push_failure_is_retried", || {
        let mem = shared_page();
        let w = word(&mem, 0);
        let f = io("handle", EventFdFutex::new(io("futex", mem.futex(0))?))?;

        io("arm", f.arm(0))?;
        try_wait_for_waiters(w, 1, "armed")?;
        fault::inject(Site::UringCancelPush, 0, 3, libc::EBUSY);
        f.cancel();
        ensure!(
            fault::failures(Site::UringCancelPush) == 3,
            "{} cancel pushes failed, want 3",
            fault::failures(Site::UringCancelPush)
        );
        ensure!(kernel_waiters(w) == 0, "a kernel wait outlived cancel");
        ensure!(!f.is_armed(), "still armed after cancel");

        // Drop (afx_free) takes the same path.
        io("arm again", f.arm(0))?;
        try_wait_for_waiters(w, 1, "armed again")?;
        fault::inject(Site::UringCancelPush, 0, 3, libc::EBUSY);
        drop(f);
        ensure!(
            fault::failures(Site::UringCancelPush) == 3,
            "drop: {} cancel pushes failed, want 3",
            fault::failures(Site::UringCancelPush)
        );
        ensure!(kernel_waiters(w) == 0, "a kernel wait outlived drop");

        // The backend still serves waits.
        let g = io("handle", EventFdFutex::new(io("futex", mem.futex(0))?))?;
        io("arm", g.arm(0))?;
        try_wait_for_waiters(w, 1, "armed after the failures")?;
        wake_all(w, &[&g])
    });
}

/// The doorbell wait cannot be queued (twice) after the doorbell rang for
/// arm A: the ring thread must not sleep without a doorbell, so arm B,
/// made once A is in the kernel, still gets there. Before the fix the
/// thread slept in `io_uring_enter` for A's completion and B never reached
/// the kernel (watchdog).
#[test]
fn doorbell_push_failure_is_retried() {
    in_child("doorbell_push_failure_is_retried", || {
        let mem = shared_page();
        let w = word(&mem, 0);
        let a = io("handle a", EventFdFutex::new(io("futex", mem.futex(0))?))?;
        let b = io("handle b", EventFdFutex::new(io("futex", mem.futex(0))?))?;

        fault::inject(Site::UringDoorbellPush, 0, 2, libc::ENOMEM);
        io("arm a", a.arm(0))?;
        // A's wait is queued in the turn that tried the doorbell first.
        try_wait_for_waiters(w, 1, "a armed")?;
        ensure!(
            fault::failures(Site::UringDoorbellPush) >= 1,
            "the doorbell push was not attempted before a's wait"
        );
        io("arm b", b.arm(0))?;
        try_wait_for_waiters(w, 2, "b armed while the doorbell could not be queued")?;
        ensure!(
            fault::failures(Site::UringDoorbellPush) == 2,
            "{} doorbell pushes failed, want 2",
            fault::failures(Site::UringDoorbellPush)
        );
        wake_all(w, &[&a, &b])?;

        // The doorbell works again: a later arm gets through.
        io("arm a again", a.arm(0))?;
        try_wait_for_waiters(w, 1, "a armed again")?;
        wake_all(w, &[&a])
    });
}

/// Disarms a fault site when dropped.
struct ClearOnDrop(Site);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        fault::clear(self.0);
    }
}

/// CPU time (ns) the ring thread has used, from its schedstat.
fn ring_thread_cpu_ns() -> Result<u64, String> {
    for t in std::fs::read_dir("/proc/self/task")
        .map_err(|e| format!("/proc/self/task: {e}"))?
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() == "afx-io_uring" {
            let stat = std::fs::read_to_string(t.path().join("schedstat"))
                .map_err(|e| format!("schedstat: {e}"))?;
            return stat
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("schedstat: {stat:?}"));
        }
    }
    fail("no afx-io_uring thread")
}

/// `io_uring_enter` fails with `EIO` until cleared. The ring thread must
/// retry with a bounded backoff — consecutive attempts at least
/// `BACKOFF_MAX` apart once it has backed off, little CPU — fail an arm
/// made meanwhile at once with `EIO`, and serve every wait again once the
/// enter works. Before the fix it spun on `yield_now` (five attempts took
/// microseconds) and the new arm never completed.
#[test]
fn failing_enter_backs_off_and_fails_new_arms() {
    in_child("failing_enter_backs_off_and_fails_new_arms", || {
        let mem = shared_page();
        let w = word(&mem, 0);
        let a = io("handle a", EventFdFutex::new(io("futex", mem.futex(0))?))?;
        let b = io("handle b", EventFdFutex::new(io("futex", mem.futex(0))?))?;
        let c = io("handle c", EventFdFutex::new(io("futex", mem.futex(0))?))?;

        io("arm a", a.arm(0))?;
        try_wait_for_waiters(w, 1, "a armed")?;
        // Declared after the handles, so dropped before them: an early
        // return lets the ring work again before their drops cancel.
        let _clear = ClearOnDrop(Site::UringEnter);
        fault::inject(Site::UringEnter, 0, fault::FOREVER, libc::EIO);
        // B's arm rings the doorbell; the ring thread queues B's wait and
        // then cannot submit it.
        io("arm b", b.arm(0))?;
        try_wait_until("ten failed enters", || {
            fault::failures(Site::UringEnter) >= 10
        })?;
        // Backed off to the maximum by now (0.1 ms doubling, capped).
        let n0 = fault::failures(Site::UringEnter);
        let cpu0 = ring_thread_cpu_ns()?;
        let t0 = Instant::now();
        try_wait_until("five more failed enters", || {
            fault::failures(Site::UringEnter) >= n0 + 5
        })?;
        let elapsed = t0.elapsed();
        let cpu = Duration::from_nanos(ring_thread_cpu_ns()?.saturating_sub(cpu0));
        clog!("5 failed enters in {elapsed:?} wall, {cpu:?} CPU of the ring thread");
        ensure!(
            elapsed >= BACKOFF_MAX * 4,
            "5 failing enters retried within {elapsed:?}: not backing off"
        );
        ensure!(
            cpu < elapsed / 2,
            "ring thread used {cpu:?} CPU in {elapsed:?} while enter failed"
        );

        // A new arm fails at once, with the enter's errno.
        io("arm c", c.arm(0))?;
        ready(&c, "arm while enter fails")?;
        match c.ack() {
            Err(e) if e.raw_os_error() == Some(libc::EIO) => {}
            other => return fail(format!("ack of c: {other:?}, want EIO")),
        }
        ensure!(!c.is_armed(), "c still armed after its failure");

        // Recovery: B's wait is submitted; A, B and a new C all work.
        fault::clear(Site::UringEnter);
        try_wait_for_waiters(w, 2, "a and b after the enter works again")?;
        wake_all(w, &[&a, &b])?;
        io("arm c again", c.arm(0))?;
        try_wait_for_waiters(w, 1, "c armed after recovery")?;
        wake_all(w, &[&c])
    });
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A panic inside each C constructor's boundary gives NULL and `errno`
/// `ENOTRECOVERABLE`. Before the fix they returned NULL with `errno`
/// untouched (0 here).
#[test]
fn constructor_panic_sets_errno() {
    use asyncfutex::ffi::*;

    in_plain_child("constructor_panic_sets_errno", || {
        let mem = shared_page();
        let base = mem.as_ptr();
        let word = std::cell::UnsafeCell::new(0u32);
        type Ctor<'a> = (&'static str, Box<dyn Fn() -> bool + 'a>);
        // Each returns whether the result was NULL (a non-NULL handle is
        // closed again).
        let ctors: Vec<Ctor> = vec![
            (
                "afx_new",
                Box::new(|| {
                    // SAFETY: a live local word.
                    let h = unsafe { afx_new(word.get(), AFX_PRIVATE) };
                    // SAFETY: our handle.
                    unsafe { afx_free(h) };
                    h.is_null()
                }),
            ),
            (
                "afx_mutex_open",
                Box::new(|| {
                    let s = base.cast::<afx_mutex_state>();
                    // SAFETY: the shared page is mapped and 4096-aligned.
                    let h = unsafe { afx_mutex_open(s) };
                    // SAFETY: our handle (or NULL).
                    unsafe { afx_mutex_close(h) };
                    h.is_null()
                }),
            ),
            (
                "afx_sem_open",
                Box::new(|| {
                    // SAFETY: as above.
                    let h = unsafe { afx_sem_open(base.cast::<afx_sem_state>()) };
                    // SAFETY: our handle (or NULL).
                    unsafe { afx_sem_close(h) };
                    h.is_null()
                }),
            ),
            (
                "afx_event_open",
                Box::new(|| {
                    // SAFETY: as above.
                    let h = unsafe { afx_event_open(base.cast::<afx_event_state>()) };
                    // SAFETY: our handle (or NULL).
                    unsafe { afx_event_close(h) };
                    h.is_null()
                }),
            ),
            (
                "afx_chan_open",
                Box::new(|| {
                    // SAFETY: as above.
                    let h =
                        unsafe { afx_chan_open(base.cast::<afx_chan_header>(), AFX_CHAN_SENDER) };
                    // SAFETY: our handle (or NULL).
                    unsafe { afx_chan_close(h) };
                    h.is_null()
                }),
            ),
        ];
        for (name, ctor) in &ctors {
            fault::inject(Site::FfiConstructorPanic, 0, 1, 0);
            // SAFETY: this thread's errno slot.
            unsafe { *libc::__errno_location() = 0 };
            let null = ctor();
            let e = errno();
            ensure!(
                fault::failures(Site::FfiConstructorPanic) == 1,
                "{name}: the injected panic did not fire"
            );
            ensure!(null, "{name}: a handle despite the panic");
            ensure!(
                e == libc::ENOTRECOVERABLE,
                "{name}: NULL after a panic with errno {e}, want ENOTRECOVERABLE"
            );
        }
        fault::clear(Site::FfiConstructorPanic);
        Ok(())
    });
}
