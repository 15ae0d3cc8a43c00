//! The io_uring backend's caller-submitted waits (`backend::uring::caller`,
//! `backend::uring::reaper`): a wait armed by a thread is submitted on that
//! thread's own ring; a Rust future polled inside a tokio runtime is
//! announced by a reaper task of that runtime. These tests cover the edges:
//! futures moved out of their runtime, runtimes without I/O, threads that
//! exit with waits on their ring, one runtime after another on a thread,
//! tasks migrating between workers, and the `AFX_URING_SUBMIT` switch.
//!
//! Every test runs on both backends. Where an expectation only holds for
//! caller-submitted io_uring waits (`AFX_BACKEND=io_uring` without
//! `AFX_URING_SUBMIT=thread`), the test says which mode it checks; the
//! other modes must still complete every wait and leak no kernel waiter.
//! "A waiter is queued" is established by counting the kernel's waiters
//! on the word (`common::kernel_waiters`), never by sleeping.

#[macro_use]
mod common;

use std::future::Future;
use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use asyncfutex::{AsyncFutex, BackendKind, EventFdFutex};
use common::*;

/// Bound for one event inside a many-round loop (normally microseconds).
const ROUND_WATCHDOG: Duration = Duration::from_secs(5);

/// Whether a tokio task's wait is submitted on its thread's own ring and
/// reaped by its runtime here: the io_uring backend in its default
/// `AFX_URING_SUBMIT=caller` mode, built with the `tokio` feature (without
/// it, the ring thread serves tasks' waits, as in `thread` mode).
fn caller_mode(kind: BackendKind) -> bool {
    cfg!(feature = "tokio")
        && kind == BackendKind::IoUring
        && !matches!(
            std::env::var("AFX_URING_SUBMIT").map(|v| v.trim().to_ascii_lowercase()),
            Ok(v) if v == "thread"
        )
}

fn mode_name(kind: BackendKind) -> &'static str {
    match (kind, caller_mode(kind)) {
        (BackendKind::IoUring, true) => "io_uring, caller-submitted",
        (BackendKind::IoUring, false) if !cfg!(feature = "tokio") => {
            "io_uring, built without the tokio feature (tasks on the ring thread)"
        }
        (BackendKind::IoUring, false) => "io_uring, AFX_URING_SUBMIT=thread",
        (BackendKind::Thread, _) => "thread backend",
        _ => "another backend",
    }
}

/// How many io_uring instances this process has open.
fn uring_fds() -> usize {
    open_fds()
        .values()
        .filter(|t| t.contains("[io_uring]"))
        .count()
}

/// Polls `fut` once in the current task's context.
async fn poll_here<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *fut).poll(cx))).await
}

/// A handle that is leaked, not dropped, when its test panics: a handle's
/// drop waits for its outstanding waits, so after a failed check (a leaked
/// kernel wait) it would hang instead of letting the failure show.
struct Handle(Option<AsyncFutex>);

impl std::ops::Deref for Handle {
    type Target = AsyncFutex;
    fn deref(&self) -> &AsyncFutex {
        self.0.as_ref().expect("handle taken")
    }
}

impl Handle {
    /// Drops the handle under [`WATCHDOG`].
    fn drop_bounded(mut self) {
        let f = self.0.take().expect("handle taken");
        bounded("dropping the handle", move || drop(f));
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            if std::thread::panicking() {
                std::mem::forget(f);
            }
        }
    }
}

/// A short busy pause that varies with `round`, so racing steps meet at
/// many different distances.
fn jitter(round: u32) {
    for _ in 0..(round.wrapping_mul(2_654_435_761) >> 22) {
        std::hint::spin_loop();
    }
}

/// Runs `f` on a helper thread and fails if it does not return within
/// [`WATCHDOG`] (an `AsyncFutex` drop that would hang waiting for waits).
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(WATCHDOG).unwrap_or_else(|_| {
        dump_threads();
        panic!("watchdog: {what} did not return")
    })
}

// ---------------------------------------------------------------------------
// 1. A future moved out of the runtime that armed it

/// A future armed (polled once, pending) in a current-thread runtime R1,
/// which is then dropped, and polled again:
/// - in a runtime R2 on the same thread, and in one on another thread: it
///   stays pending (R2 starts a reaper for the arming thread's ring, see
///   `Waiter::is_served_here`) and a wake from another thread completes it;
/// - outside any runtime (a counting waker): with caller-submitted waits
///   nothing would announce its completion there, so it gives its wait up
///   and completes at once, leaving no kernel waiter; elsewhere (the ring
///   thread or the thread backend serves it) it stays pending and a wake
///   completes it.
///
/// In every case the wait ends with no kernel waiter left on the word.
#[test]
fn future_armed_in_a_dropped_runtime() {
    let test = "future_armed_in_a_dropped_runtime";
    let _serial = serial();
    let Some(kind) = start(test) else {
        return;
    };
    let caller = caller_mode(kind);
    eprintln!("[{test}] mode: {}", mode_name(kind));
    let mem = shared_page();
    let f = Handle(Some(mem.futex(0).unwrap()));
    let w = word(&mem, 0);

    let arm_in_dropped_runtime = |fut: &mut asyncfutex::WaitFuture<'_>| {
        let r1 = rt_current();
        let first = r1.block_on(poll_here(fut));
        assert!(
            first.is_pending(),
            "armed wait on an unchanged word is ready"
        );
        wait_for_waiters(w, 1, "the future's wait queued");
        drop(r1);
        assert_eq!(kernel_waiters(w), 1, "dropping R1 removed the wait");
    };

    // (a) R2 on the same thread.
    let mut fut = f.wait_async(0);
    arm_in_dropped_runtime(&mut fut);
    let r2 = rt_current();
    std::thread::scope(|s| {
        r2.block_on(async {
            assert!(
                poll_here(&mut fut).await.is_pending(),
                "polled in R2 (same thread) with no wake: ready"
            );
            assert_eq!(kernel_waiters(w), 1, "R2's poll removed the wait");
            // The wake lands while R2's thread is parked in its reactor:
            // only R2's reaper can get the future polled again.
            s.spawn(|| assert_eq!(f.wake(1).unwrap(), 1));
            within("R2 (same thread) completes the moved future", &mut fut)
                .await
                .unwrap();
        })
    });
    drop(fut);
    drop(r2);
    assert_eq!(kernel_waiters(w), 0, "(a) left a kernel waiter");
    eprintln!("[{test}] (a) runtime R2 on the arming thread: pending, then woken");

    // (b) R2 on another thread (the wait stays on the arming thread's ring).
    let mut fut = f.wait_async(0);
    arm_in_dropped_runtime(&mut fut);
    std::thread::scope(|s| {
        s.spawn(|| {
            rt_current().block_on(async {
                assert!(
                    poll_here(&mut fut).await.is_pending(),
                    "polled in R2 (other thread) with no wake: ready"
                );
                s.spawn(|| assert_eq!(f.wake(1).unwrap(), 1));
                within("R2 (other thread) completes the moved future", &mut fut)
                    .await
                    .unwrap();
            })
        })
        .join()
        .unwrap();
    });
    drop(fut);
    assert_eq!(kernel_waiters(w), 0, "(b) left a kernel waiter");
    eprintln!("[{test}] (b) runtime R2 on another thread: pending, then woken");

    // (c) Outside any runtime.
    let mut fut = f.wait_async(0);
    arm_in_dropped_runtime(&mut fut);
    let (count, waker) = counting_waker();
    match poll_once(&mut fut, &waker) {
        Poll::Ready(r) => {
            r.expect("a given-up wait completes with Ok");
            assert!(
                caller,
                "{}: a future polled outside a runtime completed with no wake",
                mode_name(kind)
            );
            assert_eq!(
                kernel_waiters(w),
                0,
                "the given-up wait is still queued in the kernel"
            );
            assert_eq!(f.wake(1).unwrap(), 0, "a wake still found a waiter");
            eprintln!("[{test}] (c) outside any runtime: completed at once (wait given up)");
        }
        Poll::Pending => {
            assert!(
                !caller,
                "caller-submitted wait polled outside any runtime stayed pending: nothing \
                 would ever announce its completion"
            );
            assert_eq!(kernel_waiters(w), 1);
            assert_eq!(f.wake(1).unwrap(), 1);
            wait_until("the served future's waker is called", || count.count() > 0);
            assert!(poll_once(&mut fut, &waker).is_ready());
            assert_eq!(kernel_waiters(w), 0);
            eprintln!("[{test}] (c) outside any runtime: pending, then woken");
        }
    }
    drop(fut);
    f.drop_bounded();
}

/// The race of case (c): a future A armed in a runtime R1 (alive, or
/// dropped right after the arm) is polled outside any runtime while a
/// `wake(1)` lands; a second waiter B (armed outside tokio) is queued
/// behind it. Every wake must reach exactly one of them: A observes it
/// (its completion is delivered to its waker and its poll is ready), or B
/// is woken (directly, or by A's forward when A gave up or was dropped
/// after consuming it). No kernel waiter may be left after a round.
#[test]
fn orphaned_future_vs_wake_race_accounts_for_every_wake() {
    let test = "orphaned_future_vs_wake_race_accounts_for_every_wake";
    let _serial = serial();
    let Some(kind) = start(test) else {
        return;
    };
    let caller = caller_mode(kind);
    const ROUNDS: u32 = 4_000;
    let mem = shared_page();
    let f = Arc::new(mem.futex(0).unwrap());
    let w = word(&mem, 0);
    let SteppedWaker {
        go,
        done,
        result,
        thread: waker_thread,
    } = stepped_waker(&f, ROUNDS);
    let kept = rt_current();
    let (mut wakes, mut a_observed, mut a_gave_up, mut b_completed, mut spurious) = (0, 0, 0, 0, 0);
    let started = Instant::now();
    for round in 0..ROUNDS {
        let mode = round % 2;
        // Rounds 0, 1 mod 4: R1 stays alive (never driven); 2, 3: a fresh
        // R1, dropped before A is polled outside it.
        let fresh = (round % 4 >= 2).then(rt_current);
        let (ca, wa) = counting_waker();
        let (cb, wb) = counting_waker();
        let mut a = f.wait_async(0);
        {
            let _in_r1 = fresh.as_ref().unwrap_or(&kept).enter();
            assert!(poll_once(&mut a, &wa).is_pending());
        }
        drop(fresh);
        wait_for_waiters(w, 1, "A queued");
        let mut b = f.wait_async(0);
        assert!(poll_once(&mut b, &wb).is_pending());
        wait_for_waiters(w, 2, "A and B queued");
        go.wait();
        let a_ready = if mode == 0 {
            // Concurrent with the wake, from a varying distance.
            jitter(round);
            let ready = poll_once(&mut a, &wa).is_ready();
            done.wait();
            ready
        } else {
            // After the wake: A consumed it (FIFO).
            done.wait();
            poll_once(&mut a, &wa).is_ready()
        };
        if caller {
            assert!(
                a_ready,
                "round {round}: caller-submitted future polled outside its runtime is pending"
            );
            assert!(
                kernel_waiters(w) <= 1,
                "round {round}: A completed but its kernel wait is still queued"
            );
        }
        // Pending (served here): dropping it is a cancel that forwards.
        drop(a);
        let r = result.load(Ordering::SeqCst);
        wakes += r;
        if r == 1 {
            let deadline = Instant::now() + ROUND_WATCHDOG;
            while cb.count() == 0 && !(a_ready && ca.count() > 0) {
                assert!(
                    Instant::now() < deadline,
                    "round {round} (mode {mode}): LOST WAKE: wake(1) returned 1, A \
                     (ready: {a_ready}) did not observe it and B was never woken \
                     ({} kernel waiters)",
                    kernel_waiters(w)
                );
                std::thread::yield_now();
            }
            if cb.count() > 0 {
                assert!(poll_once(&mut b, &wb).is_ready());
                b_completed += 1;
            } else {
                a_observed += 1;
                if poll_once(&mut b, &wb).is_ready() {
                    spurious += 1;
                }
            }
        } else if poll_once(&mut b, &wb).is_ready() {
            spurious += 1;
        }
        if a_ready && ca.count() == 0 {
            a_gave_up += 1;
        }
        drop(b);
        wait_for_waiters(w, 0, "no wait left after the round");
    }
    waker_thread.join().unwrap();
    eprintln!(
        "[{test}] {} — {ROUNDS} rounds in {:.1?}: {wakes} wakes = {a_observed} observed by A + \
         {b_completed} reached B; A gave its wait up {a_gave_up} times; {spurious} spurious B",
        mode_name(kind),
        started.elapsed()
    );
    assert_eq!(wakes, a_observed + b_completed);
    if caller {
        assert!(
            a_gave_up > 0,
            "A never gave its wait up outside its runtime"
        );
    }
}

// ---------------------------------------------------------------------------
// 2. A runtime without I/O

/// A runtime built without `enable_io` cannot register a reaper (tokio
/// panics when asked; the library catches that and serves the runtime's
/// tasks through the ring thread). Waits in it complete on a wake from
/// another thread, every time; a future armed in an I/O runtime and polled
/// in it gives its wait up (caller mode) or stays served.
#[test]
fn runtime_without_io() {
    let test = "runtime_without_io";
    let _serial = serial();
    let Some(kind) = start(test) else {
        return;
    };
    let caller = caller_mode(kind);
    let mem = shared_page();
    let f = Handle(Some(mem.futex(0).unwrap()));
    let w = word(&mem, 0);

    // Count panics raised on this thread (tokio's refusal) while the
    // previous hook (which prints them) still runs.
    let panics = Arc::new(Mutex::new(Vec::<String>::new()));
    let previous = Arc::new(std::panic::take_hook());
    {
        let (panics, previous) = (Arc::clone(&panics), Arc::clone(&previous));
        let me = std::thread::current().id();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().id() == me {
                panics.lock().unwrap().push(info.to_string());
            }
            previous(info);
        }));
    }

    let no_io = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    };
    let mut rounds = 0;
    for rt in [no_io(), no_io()] {
        for _ in 0..3 {
            let v = w.load(Ordering::SeqCst);
            std::thread::scope(|s| {
                rt.block_on(async {
                    let mut fut = f.wait_async(v);
                    assert!(poll_here(&mut fut).await.is_pending());
                    s.spawn(|| {
                        wait_for_waiters(w, 1, "wait in a runtime without I/O queued");
                        w.store(v + 1, Ordering::SeqCst);
                        assert_eq!(f.wake(1).unwrap(), 1);
                    });
                    within("wait in a runtime without I/O completes", fut)
                        .await
                        .unwrap();
                    while w.load(Ordering::SeqCst) == v {
                        within("wait again after a spurious completion", f.wait_async(v))
                            .await
                            .unwrap();
                    }
                })
            });
            rounds += 1;
        }
        assert_eq!(kernel_waiters(w), 0);
    }

    // Armed in an I/O runtime, polled in one without.
    let mut fut = f.wait_async(w.load(Ordering::SeqCst));
    let r1 = rt_current();
    assert!(r1.block_on(poll_here(&mut fut)).is_pending());
    wait_for_waiters(w, 1, "armed in R1");
    let moved = no_io().block_on(poll_here(&mut fut));
    match moved {
        Poll::Ready(r) => {
            r.unwrap();
            assert!(caller, "{}: completed with no wake", mode_name(kind));
            assert_eq!(kernel_waiters(w), 0, "the given-up wait is still queued");
        }
        Poll::Pending => {
            assert!(
                !caller,
                "caller-submitted wait polled in a runtime without I/O stayed pending"
            );
            assert_eq!(f.wake(1).unwrap(), 1);
            r1.block_on(within("moved future woken", &mut fut)).unwrap();
        }
    }
    drop(fut);
    drop(r1);

    let _ = std::panic::take_hook();
    {
        let previous = Arc::clone(&previous);
        std::panic::set_hook(Box::new(move |info| previous(info)));
    }
    let panics = panics.lock().unwrap();
    eprintln!(
        "[{test}] {} — {rounds} waits in runtimes without I/O completed; panics caught \
         inside the library on this thread: {}{}",
        mode_name(kind),
        panics.len(),
        panics
            .first()
            .map(|p| format!(" (first: {p:?}; printed to stderr by the default hook)"))
            .unwrap_or_default()
    );
    assert_eq!(kernel_waiters(w), 0);
    f.drop_bounded();
}

// ---------------------------------------------------------------------------
// 3. The arming thread exits

/// A thread arms K futures inside its runtime, hands them out, and exits
/// (its runtime dropped there, or handed out too and dropped later). With
/// caller-submitted waits the exiting thread cancels its ring's waits: by
/// the time it is joined every future's waker has been called, no kernel
/// waiter is left, and each future completes (spuriously) when polled.
/// Elsewhere the waits stay queued and one wake completes them all. The
/// handle's drop then returns (it waits for outstanding waits).
#[test]
fn thread_exit_completes_futures_held_elsewhere() {
    let test = "thread_exit_completes_futures_held_elsewhere";
    let _serial = serial();
    let Some(kind) = start(test) else {
        return;
    };
    let caller = caller_mode(kind);
    const ROUNDS: usize = 40;
    const K: usize = 8;
    let mem = shared_page();
    for round in 0..ROUNDS {
        let f = Handle(Some(mem.futex(round).unwrap()));
        let w = word(&mem, round);
        let keep_runtime = round % 2 == 1;
        let (mut futs, rt) = std::thread::scope(|s| {
            s.spawn(|| {
                let rt = rt_current();
                let futs: Vec<_> = {
                    let _enter = rt.enter();
                    (0..K)
                        .map(|_| {
                            let (count, waker) = counting_waker();
                            let mut fut = f.wait_async(0);
                            assert!(poll_once(&mut fut, &waker).is_pending());
                            (fut, count, waker)
                        })
                        .collect()
                };
                wait_for_waiters(w, K as u32, "K futures queued");
                (futs, keep_runtime.then_some(rt))
            })
            .join()
            .unwrap()
        });
        if caller {
            assert_eq!(
                kernel_waiters(w),
                0,
                "round {round}: the arming thread exited and left kernel waiters"
            );
            for (i, (_, count, _)) in futs.iter().enumerate() {
                assert!(
                    count.count() > 0,
                    "round {round}: future {i}'s waker was not called when its arming thread \
                     exited"
                );
            }
        } else {
            assert_eq!(kernel_waiters(w), K as u32);
            w.store(1, Ordering::SeqCst);
            assert_eq!(f.wake(u32::MAX).unwrap(), K as u32);
            wait_until("every waker called", || {
                futs.iter().all(|(_, count, _)| count.count() > 0)
            });
        }
        for (i, (fut, _, waker)) in futs.iter_mut().enumerate() {
            match poll_once(fut, waker) {
                Poll::Ready(r) => r.unwrap(),
                Poll::Pending => panic!("round {round}: future {i} still pending"),
            }
        }
        drop(futs);
        drop(rt);
        assert_eq!(kernel_waiters(w), 0);
        f.drop_bounded();
    }
    eprintln!(
        "[{test}] {} — {ROUNDS} threads exited with {K} futures each",
        mode_name(kind)
    );
}

/// Tasks of a current-thread runtime wait on a word; the runtime is shut
/// down (`shutdown_background`, or dropped) and its thread exits while
/// `wake(1)`s race with it. B, a future armed outside tokio, is queued
/// behind the tasks: a wake consumed by a task that never ran again must
/// be forwarded and, at the end of the chain, reach B. No kernel waiter is
/// left and the handle's drop returns.
#[test]
fn runtime_shutdown_and_thread_exit_vs_wakes() {
    let test = "runtime_shutdown_and_thread_exit_vs_wakes";
    let _serial = serial();
    let Some(kind) = start(test) else {
        return;
    };
    const ROUNDS: usize = 300;
    const K: u32 = 4;
    const WAKES: u32 = 2;
    let mem = shared_page();
    let (mut total_wakes, mut observed_by_tasks, mut b_woken) = (0, 0, 0);
    for round in 0..ROUNDS {
        let f = Arc::new(mem.futex(round % 1024).unwrap());
        let w = word(&mem, round % 1024);
        w.store(0, Ordering::SeqCst);
        let observed = Arc::new(AtomicU32::new(0));
        let step = Arc::new(AtomicU32::new(0));
        let (cb, wb) = counting_waker();
        let mut b = None;
        let wakes = std::thread::scope(|s| {
            let runner = s.spawn(|| {
                let rt = rt_current();
                rt.block_on(async {
                    for _ in 0..K {
                        let (f, observed) = (Arc::clone(&f), Arc::clone(&observed));
                        tokio::spawn(async move {
                            f.wait_async(0).await.unwrap();
                            observed.fetch_add(1, Ordering::SeqCst);
                        });
                    }
                    wait_for_waiters_async(w, K, "tasks queued").await;
                });
                add_wake(&step, 1);
                if round % 3 == 0 {
                    // Driven while the wakes land: tasks may observe them.
                    rt.block_on(async {
                        while step.load(Ordering::SeqCst) < 3 {
                            tokio::task::yield_now().await;
                        }
                        for _ in 0..round % 64 {
                            tokio::task::yield_now().await;
                        }
                    });
                } else {
                    wait_value(&step, "go", |v| v >= 3);
                }
                if round % 2 == 0 {
                    rt.shutdown_background();
                } else {
                    drop(rt);
                }
            });
            wait_value(&step, "tasks armed", |v| v >= 1);
            let fut = b.insert(f.wait_async(0));
            assert!(poll_once(fut, &wb).is_pending());
            wait_for_waiters(w, K + 1, "tasks and B queued");
            let mut wakes = 0;
            for _ in 0..WAKES {
                wakes += f.wake(1).unwrap();
            }
            add_wake(&step, 2);
            runner.join().unwrap();
            wakes
        });
        let observed = observed.load(Ordering::SeqCst);
        total_wakes += wakes;
        observed_by_tasks += observed;
        if wakes > observed {
            let deadline = Instant::now() + ROUND_WATCHDOG;
            while cb.count() == 0 {
                assert!(
                    Instant::now() < deadline,
                    "round {round}: LOST WAKE: {wakes} wakes, {observed} observed by tasks, \
                     B never woken ({} kernel waiters)",
                    kernel_waiters(w)
                );
                std::thread::yield_now();
            }
        }
        if cb.count() > 0 {
            b_woken += 1;
        }
        drop(b);
        wait_for_waiters(w, 0, "every wait gone after the round");
        let f = Arc::into_inner(f).expect("the handle is not shared any more");
        bounded("dropping the handle", move || drop(f));
    }
    eprintln!(
        "[{test}] {} — {ROUNDS} rounds: {total_wakes} wakes, {observed_by_tasks} observed by \
         tasks, B woken in {b_woken} rounds",
        mode_name(kind)
    );
}

// ---------------------------------------------------------------------------
// 4. Many runtimes one after another on one thread

/// 50 current-thread runtimes in turn on one thread, each with a wait
/// woken from another thread while the runtime is parked: every wait
/// completes, and no descriptor is left behind (the thread's ring is one
/// descriptor, kept for the thread: made by the warm-up). Counted in a
/// fork child: in the test process, a runtime another test shut down in
/// the background closes (and frees numbers for) its descriptors whenever
/// its workers get round to it.
#[test]
fn many_runtimes_one_after_another_on_one_thread() {
    let test = "many_runtimes_one_after_another_on_one_thread";
    let _serial = serial();
    let Some(kind) = start(test) else {
        return;
    };
    fork_child(test, move || {
        many_runtimes_in_child(test, kind);
        Ok(())
    })
    .expect_ok();
}

fn many_runtimes_in_child(test: &str, kind: BackendKind) {
    const RUNTIMES: u32 = 50;
    let mem = shared_page();
    let f = mem.futex(0).unwrap();
    let w = word(&mem, 0);
    let cycle = |rt: &tokio::runtime::Runtime, i: u32| {
        std::thread::scope(|s| {
            s.spawn(|| {
                wait_for_waiters(w, 1, "the runtime's wait queued");
                w.store(i + 1, Ordering::SeqCst);
                f.wake(1).unwrap();
            });
            rt.block_on(async {
                while w.load(Ordering::SeqCst) == i {
                    within("runtime's wait completes", f.wait_async(i))
                        .await
                        .unwrap();
                }
            });
        });
    };
    // Warm-up: this thread's ring, the backend's threads.
    cycle(&rt_current(), 0);
    let before = open_fds();
    let rings_before = uring_fds();
    for i in 1..=RUNTIMES {
        let rt = rt_current();
        cycle(&rt, i);
        drop(rt);
        assert_eq!(kernel_waiters(w), 0);
    }
    // A runtime's descriptors close when the last reference to its driver
    // goes, which a backend thread may hold a moment longer (a task waker
    // it is about to drop): give that the watchdog, not a leak.
    let left_behind = || {
        open_fds()
            .into_iter()
            .filter(|(fd, target)| before.get(fd) != Some(target))
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + WATCHDOG;
    while !left_behind().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let after = open_fds();
    let new = left_behind();
    eprintln!(
        "[{test}] {} — {RUNTIMES} runtimes; {} fds before, {} after; io_uring instances \
         {rings_before} -> {}",
        mode_name(kind),
        before.len(),
        after.len(),
        uring_fds()
    );
    assert!(new.is_empty(), "descriptors left behind: {new:?}");
    assert_eq!(uring_fds(), rings_before, "io_uring instances changed");
    bounded("dropping the handle", move || drop(f));
}

// ---------------------------------------------------------------------------
// 5. Multi-thread runtime: tasks migrate

/// 200 tasks on a 4-worker runtime, each waiting on its own word: armed
/// (first poll) in one task, then moved into a freshly spawned task, so
/// the arm and the completion often run on different workers (and the
/// wait sits on the arming worker's ring). A thread stores and wakes each
/// word once its waiter is queued. Every task completes.
#[test]
fn tasks_migrate_between_workers() {
    let test = "tasks_migrate_between_workers";
    let _serial = serial();
    let Some(kind) = start(test) else {
        return;
    };
    const TASKS: usize = 200;
    let mem = shared_page();
    // 'static handles, so armed futures can move between tasks (leaked:
    // one page's worth, once).
    let handles: Vec<&'static AsyncFutex> = (0..TASKS)
        .map(|i| &*Box::leak(Box::new(mem.futex(i).unwrap())))
        .collect();
    let rt = rt_multi(4);
    let (moved, threads) = rt.block_on(async {
        let tasks: Vec<_> = handles
            .iter()
            .map(|&f| {
                tokio::spawn(async move {
                    let armed_on = std::thread::current().id();
                    let mut fut = f.wait_async(0);
                    // Ready on its first poll: the waker saw the wait queued
                    // and woke it before the poll returned (done), or a
                    // spurious completion (the thread backend's helpers
                    // share wakes: arm again).
                    while poll_here(&mut fut).await.is_ready() {
                        if f.word().load(Ordering::SeqCst) != 0 {
                            return (armed_on, armed_on);
                        }
                        fut = f.wait_async(0);
                    }
                    let second = tokio::spawn(async move {
                        tokio::task::yield_now().await;
                        within("migrated task completes", fut).await.unwrap();
                        // A spurious completion (the thread backend's
                        // helpers share wakes) re-checks and waits again.
                        while f.word().load(Ordering::SeqCst) == 0 {
                            within("task waits again", f.wait_async(0)).await.unwrap();
                        }
                        std::thread::current().id()
                    });
                    (armed_on, second.await.unwrap())
                })
            })
            .collect();
        let waker = std::thread::spawn({
            let handles = handles.clone();
            move || {
                // Interleaved order: far from the arming order.
                let order = (0..TASKS).step_by(2).chain((1..TASKS).step_by(2)).rev();
                for i in order {
                    wait_for_waiters(handles[i].word(), 1, "task's wait queued");
                    handles[i].word().store(1, Ordering::SeqCst);
                    handles[i].wake(1).unwrap();
                }
            }
        });
        let mut moved = 0;
        let mut threads = std::collections::HashSet::<ThreadId>::new();
        for t in tasks {
            let (armed_on, completed_on) = within("task resumes", t).await.unwrap();
            moved += usize::from(armed_on != completed_on);
            threads.insert(armed_on);
            threads.insert(completed_on);
        }
        waker.join().unwrap();
        (moved, threads.len())
    });
    drop(rt);
    for f in &handles {
        assert_eq!(kernel_waiters(f.word()), 0);
    }
    eprintln!(
        "[{test}] {} — {TASKS} tasks completed, {moved} on another worker than the one that \
         armed them ({threads} workers seen)",
        mode_name(kind)
    );
}

/// The cancel-vs-wake race of `async_semantics` on a multi-thread runtime:
/// task A is armed by a worker, then aborted (from outside the runtime)
/// while a `wake(1)` lands, so its future is dropped by whatever worker
/// runs the cancellation. B, a future armed outside tokio, is queued
/// behind A. Every wake reaches exactly one of them: A observed it (its
/// await returned) or B is woken.
#[test]
fn abort_vs_wake_race_on_multi_thread_runtime() {
    let test = "abort_vs_wake_race_on_multi_thread_runtime";
    let _serial = serial();
    let Some(kind) = start(test) else {
        return;
    };
    const ROUNDS: u32 = 3_000;
    let mem = shared_page();
    let f = Arc::new(mem.futex(0).unwrap());
    let w = word(&mem, 0);
    let rt = rt_multi(4);
    let SteppedWaker {
        go,
        done,
        result,
        thread: waker_thread,
    } = stepped_waker(&f, ROUNDS);

    /// Records the thread that drops the task's future.
    struct DropSite(Arc<Mutex<Option<ThreadId>>>);
    impl Drop for DropSite {
        fn drop(&mut self) {
            *self.0.lock().unwrap() = Some(std::thread::current().id());
        }
    }

    let (mut wakes, mut a_observed, mut b_completed, mut spurious, mut cross) = (0, 0, 0, 0, 0);
    let started = Instant::now();
    for round in 0..ROUNDS {
        let mode = round % 2;
        let observed = Arc::new(AtomicBool::new(false));
        let armed_on = Arc::new(Mutex::new(None));
        let dropped_on = Arc::new(Mutex::new(None));
        let task = rt.spawn({
            let (f, observed, armed_on) =
                (Arc::clone(&f), Arc::clone(&observed), Arc::clone(&armed_on));
            let site = DropSite(Arc::clone(&dropped_on));
            async move {
                let _site = site;
                *armed_on.lock().unwrap() = Some(std::thread::current().id());
                f.wait_async(0).await.unwrap();
                observed.store(true, Ordering::SeqCst);
            }
        });
        wait_for_waiters(w, 1, "A queued");
        let (cb, wb) = counting_waker();
        let mut b = f.wait_async(0);
        assert!(poll_once(&mut b, &wb).is_pending());
        wait_for_waiters(w, 2, "A and B queued");
        go.wait();
        if mode == 0 {
            jitter(round);
            task.abort();
            done.wait();
        } else {
            done.wait();
            task.abort();
        }
        let _ = rt.block_on(task);
        let armed = armed_on.lock().unwrap().expect("A ran");
        if dropped_on.lock().unwrap().is_some_and(|t| t != armed) {
            cross += 1;
        }
        let r = result.load(Ordering::SeqCst);
        wakes += r;
        if r == 1 && !observed.load(Ordering::SeqCst) {
            let deadline = Instant::now() + ROUND_WATCHDOG;
            while cb.count() == 0 {
                assert!(
                    Instant::now() < deadline,
                    "round {round} (mode {mode}): LOST WAKE: wake(1) returned 1, aborted A \
                     did not observe it and B was never woken ({} kernel waiters)",
                    kernel_waiters(w)
                );
                std::thread::yield_now();
            }
            assert!(poll_once(&mut b, &wb).is_ready());
            b_completed += 1;
        } else {
            if r == 1 {
                a_observed += 1;
            }
            if poll_once(&mut b, &wb).is_ready() {
                spurious += 1;
            }
        }
        drop(b);
        wait_for_waiters(w, 0, "no wait left");
    }
    waker_thread.join().unwrap();
    drop(rt);
    eprintln!(
        "[{test}] {} — {ROUNDS} rounds in {:.1?}: {wakes} wakes = {a_observed} observed by A + \
         {b_completed} reached B; {spurious} spurious B; A dropped on another thread than the \
         one that armed it in {cross} rounds",
        mode_name(kind),
        started.elapsed()
    );
    assert_eq!(wakes, a_observed + b_completed);
}

// ---------------------------------------------------------------------------
// 6. AFX_URING_SUBMIT in fork children (the backend starts afresh there)

/// A thread that cannot make its ring for lack of descriptors still arms
/// (through the ring thread), and makes its ring on a later arm once
/// descriptors are free again: the shortage is not remembered.
#[test]
fn ring_made_after_a_descriptor_shortage() {
    let test = "ring_made_after_a_descriptor_shortage";
    let _serial = serial();
    let Some(kind) = start(test) else {
        return;
    };
    if kind != BackendKind::IoUring {
        eprintln!("SKIP: [{test}] caller rings exist only on the io_uring backend ({kind})");
        return;
    }
    let mem = shared_page();
    fork_child(test, move || {
        child_backend_is(kind)?;
        std::env::remove_var("AFX_URING_SUBMIT");
        let f = EventFdFutex::new(mem.futex(0).map_err(|e| format!("futex: {e}"))?)
            .map_err(|e| format!("EventFdFutex::new: {e}"))?;
        // Fill the descriptor table up to the limit: no fd for a ring.
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a valid rlimit out-parameter.
        ensure!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0,
            "getrlimit"
        );
        let saved = limit;
        let rings = uring_fds();
        limit.rlim_cur = (open_fds().len() + 8) as libc::rlim_t;
        // SAFETY: a valid rlimit.
        ensure!(
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0,
            "setrlimit"
        );
        let mut fillers = Vec::new();
        loop {
            // SAFETY: eventfd takes no pointers.
            let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
            if fd < 0 {
                break;
            }
            fillers.push(fd);
        }
        let w = f.futex().word();
        for round in 0..2u32 {
            w.store(round, Ordering::SeqCst);
            f.arm(round)
                .map_err(|e| format!("arm while out of fds: {e}"))?;
            try_wait_for_waiters(w, 1, "the wait queued without a ring of this thread")?;
            w.store(round + 1, Ordering::SeqCst);
            f.futex().wake(1).map_err(|e| format!("wake: {e}"))?;
            ensure!(
                fd_readable(f.as_fd(), WATCHDOG.as_millis() as i32),
                "round {round}: eventfd not readable after the wake"
            );
            ensure!(
                f.ack().map_err(|e| format!("ack: {e}"))?,
                "round {round}: ack"
            );
        }
        for fd in fillers {
            // SAFETY: our own descriptors.
            unsafe { libc::close(fd) };
        }
        // (Counted once descriptors are free: reading /proc needs one.)
        ensure!(
            uring_fds() == rings,
            "a ring was made with no descriptor free"
        );
        // SAFETY: a valid rlimit.
        ensure!(
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &saved) } == 0,
            "setrlimit"
        );
        w.store(10, Ordering::SeqCst);
        f.arm(10)
            .map_err(|e| format!("arm after the shortage: {e}"))?;
        ensure!(
            uring_fds() == rings + 1,
            "no ring made once descriptors were free again ({} io_uring fds, {rings} before)",
            uring_fds()
        );
        w.store(11, Ordering::SeqCst);
        f.futex().wake(1).map_err(|e| format!("wake: {e}"))?;
        ensure!(
            fd_readable(f.as_fd(), WATCHDOG.as_millis() as i32),
            "eventfd not readable after the wake"
        );
        ensure!(
            f.ack().map_err(|e| format!("ack: {e}"))?,
            "ack after the shortage"
        );
        clog!("[{test}] armed twice with no fd for a ring (ring thread), then on a new ring");
        Ok(())
    })
    .expect_ok();
}

/// One `EventFdFutex` arm / wake / ack round on `w`, from this thread.
fn eventfd_round(f: AsyncFutex) -> ChildResult {
    f.word().store(0, Ordering::SeqCst);
    let e = EventFdFutex::new(f).map_err(|e| format!("EventFdFutex::new: {e}"))?;
    e.arm(0).map_err(|e| format!("arm: {e}"))?;
    let w = e.futex().word();
    try_wait_for_waiters(w, 1, "the eventfd wait queued")?;
    w.store(1, Ordering::SeqCst);
    let woken = e.futex().wake(1).map_err(|e| format!("wake: {e}"))?;
    ensure!(woken == 1, "wake(1) woke {woken}");
    ensure!(
        fd_readable(e.as_fd(), WATCHDOG.as_millis() as i32),
        "eventfd not readable after the wake"
    );
    ensure!(e.ack().map_err(|e| format!("ack: {e}"))?, "ack: not done");
    ensure!(kernel_waiters(w) == 0, "a kernel waiter is left");
    Ok(())
}

/// `AFX_URING_SUBMIT=thread` (set in a fork child before the backend
/// starts there): an eventfd round works and makes no ring for the arming
/// thread; in the default mode the same round does make one (so the check
/// can tell the modes apart). `AFX_URING_SUBMIT=bogus`: starting io_uring
/// fails with `InvalidInput`; the thread backend ignores the variable.
#[test]
fn uring_submit_env_in_fork_children() {
    let test = "uring_submit_env_in_fork_children";
    let _serial = serial();
    let Some(kind) = start(test) else {
        return;
    };
    let mem = shared_page();

    for (setting, expect_new_ring) in [
        (Some("thread"), false),
        (None, kind == BackendKind::IoUring),
    ] {
        let mem = Arc::clone(&mem);
        fork_child(&format!("AFX_URING_SUBMIT={setting:?}"), move || {
            match setting {
                Some(v) => std::env::set_var("AFX_URING_SUBMIT", v),
                None => std::env::remove_var("AFX_URING_SUBMIT"),
            }
            child_backend_is(kind)?;
            let rings = uring_fds();
            eventfd_round(mem.futex(0).map_err(|e| format!("futex: {e}"))?)?;
            let made = uring_fds() - rings;
            clog!("AFX_URING_SUBMIT={setting:?} on {kind}: {made} new io_uring instance(s)");
            ensure!(
                made == usize::from(expect_new_ring),
                "arming made {made} rings, want {}",
                usize::from(expect_new_ring)
            );
            Ok(())
        })
        .expect_ok();
    }

    let mem = Arc::clone(&mem);
    fork_child("AFX_URING_SUBMIT=bogus", move || {
        std::env::set_var("AFX_URING_SUBMIT", "bogus");
        match kind {
            BackendKind::IoUring => {
                let r = asyncfutex::select_backend(Some(BackendKind::IoUring));
                match &r {
                    Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                        clog!("io_uring with AFX_URING_SUBMIT=bogus: {e}")
                    }
                    _ => {
                        return fail(format!(
                            "select_backend(io_uring): {r:?}, want InvalidInput"
                        ))
                    }
                }
                // Asked again: the same refusal, not a half-started backend.
                let again = asyncfutex::select_backend(Some(BackendKind::IoUring));
                ensure!(
                    again.is_err(),
                    "second select_backend(io_uring) succeeded: {again:?}"
                );
                // Automatic selection does not fall back to the thread
                // backend over a bad setting: the same clear error.
                let auto = asyncfutex::select_backend(None);
                ensure!(
                    matches!(&auto, Err(e) if e.kind() == io::ErrorKind::InvalidInput),
                    "select_backend(None) with AFX_URING_SUBMIT=bogus: {auto:?}, want InvalidInput"
                );
            }
            BackendKind::Thread => {
                let r = asyncfutex::select_backend(Some(BackendKind::Thread));
                ensure!(
                    matches!(r, Ok(BackendKind::Thread)),
                    "thread backend with AFX_URING_SUBMIT=bogus: {r:?}"
                );
                eventfd_round(mem.futex(0).map_err(|e| format!("futex: {e}"))?)?;
            }
            other => return fail(format!("unknown backend {other}")),
        }
        Ok(())
    })
    .expect_ok();
    eprintln!(
        "[{test}] {}: thread, default and bogus settings checked",
        mode_name(kind)
    );
}
