//! In-process semantics (DESIGN §1, S1–S5), still on shared-memory words:
//! stale values, `wake(0)`, many waiters, `select!`/`timeout`, dropping
//! futures at every await point, cancel-vs-wake races with every wake
//! accounted for, blocking waits, `SharedMemory` and bad addresses.
//!
//! "The peer is now waiting" is established by counting the kernel's
//! waiters on the word (`common::kernel_waiters`), never by sleeping.

#[macro_use]
mod common;

use std::future::Future as _;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use asyncfutex::{AsyncFutex, EventFdFutex, Scope, SharedMemory, WaitStatus};
use common::*;

/// Bound for one event inside a many-round loop (normally microseconds).
const ROUND_WATCHDOG: Duration = Duration::from_secs(5);

fn errno_of<T: std::fmt::Debug>(r: io::Result<T>) -> i32 {
    r.expect_err("expected an error")
        .raw_os_error()
        .expect("an OS error")
}

// ---------------------------------------------------------------------------
// Stale value, wake(0)

/// A wait whose expected value is already stale completes on its first
/// poll, queues no kernel waiter; `EventFdFutex::arm` makes the eventfd
/// readable at once.
#[test]
fn stale_expected_value_completes_at_once() {
    let test = "stale_expected_value_completes_at_once";
    let _serial = serial();
    if start(test).is_none() {
        return;
    }
    let mem = shared_page();
    let f = mem.futex(0).unwrap();
    f.word().store(7, Ordering::SeqCst);
    let (count, waker) = counting_waker();
    for stale in [0, 6, 8, u32::MAX] {
        let mut fut = f.wait_async(stale);
        match poll_once(&mut fut, &waker) {
            Poll::Ready(r) => r.unwrap(),
            Poll::Pending => panic!("wait_async({stale}) with the word at 7 is pending"),
        }
    }
    assert_eq!(count.count(), 0);
    assert_eq!(
        kernel_waiters(f.word()),
        0,
        "a stale wait queued a kernel waiter"
    );

    let e = EventFdFutex::new(mem.futex(0).unwrap()).unwrap();
    e.arm(3).unwrap();
    assert!(
        fd_readable(e.as_fd(), 0),
        "eventfd not readable at once for a stale value"
    );
    assert!(e.ack().unwrap());
    assert!(!e.is_armed());
    assert!(!fd_readable(e.as_fd(), 0), "ack must drain the eventfd");
    assert_eq!(kernel_waiters(f.word()), 0);
}

/// `wake(0)` returns 0 with waiters present, and they keep waiting.
#[test]
fn wake_zero_wakes_nobody() {
    let test = "wake_zero_wakes_nobody";
    let _serial = serial();
    if start(test).is_none() {
        return;
    }
    let mem = shared_page();
    let f = mem.futex(0).unwrap();
    let e = EventFdFutex::new(mem.futex(0).unwrap()).unwrap();
    let (count, waker) = counting_waker();
    let mut a = f.wait_async(0);
    let mut b = f.wait_async(0);
    assert!(poll_once(&mut a, &waker).is_pending());
    assert!(poll_once(&mut b, &waker).is_pending());
    e.arm(0).unwrap();
    wait_for_waiters(f.word(), 3, "three waits queued");
    for _ in 0..100 {
        assert_eq!(f.wake(0).unwrap(), 0);
    }
    assert_eq!(kernel_waiters(f.word()), 3, "wake(0) removed a waiter");
    assert_eq!(count.count(), 0, "wake(0) woke a future");
    assert!(!fd_readable(e.as_fd(), 0), "wake(0) signalled the eventfd");
    assert!(!e.ack().unwrap());
    f.word().store(1, Ordering::SeqCst);
    assert_eq!(f.wake(u32::MAX).unwrap(), 3);
    wait_until("both futures woken", || count.count() >= 2);
    assert!(poll_once(&mut a, &waker).is_ready());
    assert!(poll_once(&mut b, &waker).is_ready());
    assert!(fd_readable(e.as_fd(), WATCHDOG.as_millis() as i32));
    assert!(e.ack().unwrap());
}

// ---------------------------------------------------------------------------
// Many waiters on one handle

fn many_tasks_on_one_handle(test: &str, rt: tokio::runtime::Runtime) {
    const TASKS: u32 = 1000;
    let mem = shared_page();
    let f = Arc::new(mem.futex(0).unwrap());
    let woken = rt.block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let f = Arc::clone(&f);
                tokio::spawn(async move {
                    let mut completions = 0u32;
                    while f.word().load(Ordering::SeqCst) == 0 {
                        within("task woken", f.wait_async(0)).await.unwrap();
                        completions += 1;
                    }
                    completions
                })
            })
            .collect();
        wait_for_waiters_async(f.word(), TASKS, "every task queued").await;
        f.word().store(1, Ordering::SeqCst);
        let woken = f.wake(u32::MAX).unwrap();
        let mut spurious = 0;
        for t in tasks {
            spurious += within("task resumes", t).await.unwrap() - 1;
        }
        eprintln!("[{test}] {TASKS} tasks resumed; {spurious} spurious completions while arming");
        woken
    });
    assert_eq!(woken, TASKS, "wake(u32::MAX) must report every waiter");
    assert_eq!(f.wake(u32::MAX).unwrap(), 0);
}

#[test]
fn many_tasks_on_one_handle_multi_thread() {
    let test = "many_tasks_on_one_handle_multi_thread";
    let _serial = serial();
    if start(test).is_none() {
        return;
    }
    many_tasks_on_one_handle(test, rt_multi(2));
}

#[test]
fn many_tasks_on_one_handle_current_thread() {
    let test = "many_tasks_on_one_handle_current_thread";
    let _serial = serial();
    if start(test).is_none() {
        return;
    }
    many_tasks_on_one_handle(test, rt_current());
}

// ---------------------------------------------------------------------------
// S1 on the async path: a store + wake racing the arm is never lost

/// The word is stored and woken right after the future is armed (first
/// polled), while the backend is still queueing the kernel wait: the
/// kernel either sees the new value or is woken; the future always
/// completes.
#[test]
fn store_and_wake_racing_the_arm_is_never_lost() {
    let test = "store_and_wake_racing_the_arm_is_never_lost";
    let _serial = serial();
    if start(test).is_none() {
        return;
    }
    const ROUNDS: u32 = 10_000;
    let mem = shared_page();
    let f = mem.futex(0).unwrap();
    for (flavour, rt) in [
        ("current-thread", rt_current()),
        ("multi-thread", rt_multi(2)),
    ] {
        let woken_by_wake = rt.block_on(async {
            let mut found = 0u32;
            for k in 0..ROUNDS {
                f.word().store(k, Ordering::SeqCst);
                let mut fut = f.wait_async(k);
                std::future::poll_fn(|cx| {
                    assert!(std::pin::Pin::new(&mut fut).poll(cx).is_pending());
                    Poll::Ready(())
                })
                .await;
                f.word().store(k + 1, Ordering::SeqCst);
                found += f.wake(1).unwrap();
                tokio::time::timeout(ROUND_WATCHDOG, fut)
                    .await
                    .unwrap_or_else(|_| panic!("round {k}: store + wake after arm lost"))
                    .unwrap();
            }
            found
        });
        eprintln!("[{test}] {flavour}: {ROUNDS} rounds, {woken_by_wake} wakes found the kernel wait queued");
    }
}

// ---------------------------------------------------------------------------
// select! and timeout

/// A wait under `tokio::time::timeout` that expires, and one that loses a
/// `tokio::select!`, are dropped cleanly: their kernel waits go away and
/// later wakes reach the remaining waiter; a wait that wins a `select!`
/// completes normally.
#[test]
fn works_under_select_and_timeout() {
    let test = "works_under_select_and_timeout";
    let _serial = serial();
    if start(test).is_none() {
        return;
    }
    let mem = shared_page();
    let f = Arc::new(mem.futex(0).unwrap());
    for (flavour, rt) in [
        ("current-thread", rt_current()),
        ("multi-thread", rt_multi(2)),
    ] {
        f.word().store(0, Ordering::SeqCst);
        rt.block_on(async {
            // B waits once; the word never changes, so only a wake ends it.
            let b = {
                let f = Arc::clone(&f);
                tokio::spawn(async move { f.wait_async(0).await })
            };
            wait_for_waiters_async(f.word(), 1, "B queued").await;

            // A times out (nobody wakes it).
            let r = tokio::time::timeout(Duration::from_millis(20), f.wait_async(0)).await;
            assert!(r.is_err(), "{flavour}: a wait nobody woke completed: {r:?}");

            // C loses a select! to a signal sent once C is queued.
            let (tx, rx) = tokio::sync::oneshot::channel();
            let signal = {
                let f = Arc::clone(&f);
                tokio::spawn(async move {
                    wait_for_waiters_async(f.word(), 2, "B and C queued").await;
                    tx.send(()).unwrap();
                })
            };
            tokio::select! {
                r = f.wait_async(0) => panic!("{flavour}: C completed without a wake: {r:?}"),
                _ = rx => {}
            }
            within("signal task", signal).await.unwrap();

            // A's and C's kernel waits are gone; B's alone remains and gets
            // the next wake.
            wait_for_waiters_async(f.word(), 1, "only B left").await;
            assert!(!b.is_finished(), "{flavour}: B completed without a wake");
            // In the thread backend's vector mode, C's cancel made B's
            // helper take B out of the kernel queue and queue it again: the
            // count passes through 1 on its way down, so B may be out for a
            // few microseconds still. A wake that finds nobody wakes nobody;
            // the first that finds somebody must find exactly B.
            let deadline = Instant::now() + WATCHDOG;
            let woken = loop {
                match f.wake(1).unwrap() {
                    0 if Instant::now() < deadline => tokio::task::yield_now().await,
                    n => break n,
                }
            };
            assert_eq!(woken, 1, "{flavour}: the wake must find B");
            within("B woken", b).await.unwrap().unwrap();

            // D wins a select! against a timer.
            let waker = {
                let f = Arc::clone(&f);
                tokio::spawn(async move {
                    wait_for_waiters_async(f.word(), 1, "D queued").await;
                    f.word().store(1, Ordering::SeqCst);
                    f.wake(1).unwrap()
                })
            };
            tokio::select! {
                r = f.wait_async(0) => r.unwrap(),
                _ = tokio::time::sleep(WATCHDOG) => panic!("watchdog: D never woken"),
            }
            assert_eq!(within("waker task", waker).await.unwrap(), 1);
        });
        assert_eq!(
            f.wake(u32::MAX).unwrap(),
            0,
            "{flavour}: stale kernel waiter left"
        );
        eprintln!("[{test}] {flavour}: ok");
    }
}

// ---------------------------------------------------------------------------
// Dropping futures at every await point

/// Dropped before its first poll: nothing was armed. Dropped while pending
/// (armed): its kernel wait goes away and no later wake is spent on it.
#[test]
fn dropping_before_first_poll_and_while_pending() {
    let test = "dropping_before_first_poll_and_while_pending";
    let _serial = serial();
    if start(test).is_none() {
        return;
    }
    let mem = shared_page();
    let f = mem.futex(0).unwrap();
    let w = f.word();
    // Before the first poll.
    for _ in 0..100 {
        drop(f.wait_async(0));
    }
    assert_eq!(kernel_waiters(w), 0, "an unpolled future queued a wait");
    assert_eq!(f.wake(u32::MAX).unwrap(), 0);

    // While pending, 200 times; the kernel wait must go away each time.
    let (count, waker) = counting_waker();
    for round in 0..200 {
        let mut fut = f.wait_async(0);
        assert!(poll_once(&mut fut, &waker).is_pending());
        if round % 2 == 0 {
            // Sometimes before the backend has queued it, sometimes after.
            wait_for_waiters(w, 1, "armed wait queued");
        }
        drop(fut);
        wait_for_waiters(w, 0, "dropped wait removed from the kernel");
    }
    assert_eq!(count.count(), 0, "a dropped future's waker fired");
    assert_eq!(f.wake(u32::MAX).unwrap(), 0);
    // The handle still works.
    let mut fut = f.wait_async(0);
    assert!(poll_once(&mut fut, &waker).is_pending());
    wait_for_waiters(w, 1, "wait queued");
    assert_eq!(f.wake(1).unwrap(), 1);
    wait_until("woken", || count.count() == 1);
    assert!(poll_once(&mut fut, &waker).is_ready());
}

/// Two futures A and B on one word, both queued. `wake(1)` (the word does
/// not change) reaches one of them — its waker fires — and that future is
/// dropped without being polled again: the wake it consumed must be passed
/// on, so the other one's waker fires. Looped; prints the counts.
#[test]
fn dropping_a_woken_future_forwards_its_wake() {
    let test = "dropping_a_woken_future_forwards_its_wake";
    let _serial = serial();
    if start(test).is_none() {
        return;
    }
    const ROUNDS: u32 = 300;
    let mem = shared_page();
    let f = mem.futex(0).unwrap();
    let w = f.word();
    let (mut forwarded, mut both, mut first_was_a) = (0u32, 0u32, 0u32);
    for round in 0..ROUNDS {
        let (ca, wa) = counting_waker();
        let (cb, wb) = counting_waker();
        let mut a = Some(f.wait_async(0));
        let mut b = Some(f.wait_async(0));
        assert!(poll_once(a.as_mut().unwrap(), &wa).is_pending());
        assert!(poll_once(b.as_mut().unwrap(), &wb).is_pending());
        wait_for_waiters(w, 2, "A and B queued");
        assert_eq!(
            f.wake(1).unwrap(),
            1,
            "round {round}: wake(1) with two queued waiters"
        );
        wait_until("one waker fires", || ca.count() + cb.count() > 0);
        if ca.count() > 0 && cb.count() > 0 {
            both += 1; // a spurious completion (S4); nothing to forward
            continue;
        }
        let (winner, loser, loser_count, loser_waker) = if ca.count() > 0 {
            first_was_a += 1;
            (&mut a, &mut b, &cb, &wb)
        } else {
            (&mut b, &mut a, &ca, &wa)
        };
        drop(winner.take()); // completed, never polled again
        let deadline = Instant::now() + ROUND_WATCHDOG;
        while loser_count.count() == 0 {
            assert!(
                Instant::now() < deadline,
                "round {round}: LOST WAKE: the dropped future had consumed a wake and the other \
                 waiter was never woken ({} kernel waiters on the word)",
                kernel_waiters(w)
            );
            std::thread::yield_now();
        }
        assert!(poll_once(loser.as_mut().unwrap(), loser_waker).is_ready());
        forwarded += 1;
        assert_eq!(kernel_waiters(w), 0);
    }
    eprintln!(
        "[{test}] {ROUNDS} rounds: {forwarded} forwarded wakes observed ({first_was_a} times A was woken first), {both} rounds both completed"
    );
    assert!(forwarded > 0);
}

/// Freeing an `EventFdFutex` whose armed wait has completed (eventfd
/// readable, not acknowledged) passes the consumed wake on.
#[test]
fn freeing_an_eventfd_handle_with_a_completion_in_flight_forwards() {
    let test = "freeing_an_eventfd_handle_with_a_completion_in_flight_forwards";
    let _serial = serial();
    if start(test).is_none() {
        return;
    }
    const ROUNDS: u32 = 300;
    let mem = shared_page();
    let f = mem.futex(0).unwrap();
    let w = f.word();
    let mut forwarded = 0;
    for round in 0..ROUNDS {
        let a = EventFdFutex::new(mem.futex(0).unwrap()).unwrap();
        let b = EventFdFutex::new(mem.futex(0).unwrap()).unwrap();
        a.arm(0).unwrap();
        wait_for_waiters(w, 1, "A queued");
        b.arm(0).unwrap();
        wait_for_waiters(w, 2, "B queued");
        // FIFO: the wake goes to A, queued first.
        assert_eq!(f.wake(1).unwrap(), 1);
        let (winner, loser) = if fd_readable(a.as_fd(), ROUND_WATCHDOG.as_millis() as i32) {
            (a, b)
        } else {
            assert!(
                fd_readable(b.as_fd(), 0),
                "round {round}: the wake reached neither handle"
            );
            (b, a)
        };
        drop(winner); // completion in flight, never acknowledged
        assert!(
            fd_readable(loser.as_fd(), ROUND_WATCHDOG.as_millis() as i32),
            "round {round}: LOST WAKE: freed handle had consumed a wake, the other handle was never woken ({} kernel waiters)",
            kernel_waiters(w)
        );
        assert!(loser.ack().unwrap());
        forwarded += 1;
    }
    assert_eq!(kernel_waiters(w), 0);
    eprintln!("[{test}] {ROUNDS} rounds, {forwarded} forwarded wakes observed");
}

// ---------------------------------------------------------------------------
// Cancel vs wake

/// `EventFdFutex` handles A and B armed on one word, both queued in the
/// kernel (A first). One thread calls `wake(1)` while this thread
/// acknowledges-or-cancels A, in three orders (concurrent, wake first,
/// cancel first), 100,000 rounds. The word never changes, so a completion
/// can only come from a wake. Every wake that returned 1 must show up as
/// A's observed completion or as B's completion (directly, or forwarded by
/// A's cancel); none lost, B never stuck, A never left readable.
#[test]
fn cancel_vs_wake_race_accounts_for_every_wake() {
    let test = "cancel_vs_wake_race_accounts_for_every_wake";
    let _serial = serial();
    if start(test).is_none() {
        return;
    }
    const ROUNDS: u32 = 100_000;
    let mem = shared_page();
    let f = Arc::new(mem.futex(0).unwrap());
    let w = word(&mem, 0);
    let a = EventFdFutex::new(mem.futex(0).unwrap()).unwrap();
    let b = EventFdFutex::new(mem.futex(0).unwrap()).unwrap();
    let SteppedWaker {
        go,
        done,
        result,
        thread: waker,
    } = stepped_waker(&f, ROUNDS);
    #[derive(Default, Debug)]
    struct Counts {
        wakes: u32,
        a_observed: u32,
        b_completed: u32,
        forwarded_wake_first: u32,
        no_waiter: u32,
        spurious: u32,
    }
    let mut c = Counts::default();
    let started = Instant::now();
    for round in 0..ROUNDS {
        a.arm(0).unwrap();
        b.arm(0).unwrap();
        wait_for_waiters(w, 2, "A and B queued");
        let mode = round % 3;
        let mut a_observed = false;
        if mode == 2 {
            a.cancel(); // cancel first
        }
        go.wait();
        if mode == 0 {
            a_observed = a.ack().unwrap();
            if !a_observed {
                a.cancel(); // concurrent with the wake
            }
        }
        done.wait();
        if mode == 1 {
            a.cancel(); // after the wake: it consumed it (FIFO), forward
        }
        assert!(!a.is_armed());
        assert!(
            !fd_readable(a.as_fd(), 0),
            "round {round}: A left readable after ack/cancel"
        );
        let r = result.load(Ordering::SeqCst);
        c.wakes += r;
        if r == 1 && !a_observed {
            assert!(
                fd_readable(b.as_fd(), ROUND_WATCHDOG.as_millis() as i32),
                "round {round} (mode {mode}): LOST WAKE: wake(1) returned 1, A did not observe it \
                 and B was never woken ({} kernel waiters); counts so far {c:?}",
                kernel_waiters(w)
            );
            assert!(b.ack().unwrap());
            c.b_completed += 1;
            if mode == 1 {
                c.forwarded_wake_first += 1;
            }
        } else {
            if r == 1 {
                c.a_observed += 1;
            } else {
                c.no_waiter += 1;
            }
            if b.ack().unwrap() {
                c.spurious += 1;
            } else {
                b.cancel();
            }
        }
        assert!(!b.is_armed());
        assert!(!fd_readable(b.as_fd(), 0));
    }
    waker.join().unwrap();
    assert_eq!(kernel_waiters(w), 0);
    eprintln!(
        "[{test}] {ROUNDS} rounds in {:.1?}: {} wakes counted = {} observed by A + {} completed B \
         (of which {} forwarded by cancelling A after it consumed the wake); {} wakes found no waiter; \
         {} spurious B completions",
        started.elapsed(),
        c.wakes,
        c.a_observed,
        c.b_completed,
        c.forwarded_wake_first,
        c.no_waiter,
        c.spurious
    );
    assert_eq!(c.wakes, c.a_observed + c.b_completed);
}

/// The same race with futures: A and B are `wait_async` futures polled by
/// hand; one thread calls `wake(1)` while this one polls A once (observing
/// its completion if it is there) or drops it. A wake that returned 1 and
/// that A did not observe must reach B (B's waker fires).
#[test]
fn drop_vs_wake_race_with_futures_accounts_for_every_wake() {
    let test = "drop_vs_wake_race_with_futures_accounts_for_every_wake";
    let _serial = serial();
    if start(test).is_none() {
        return;
    }
    const ROUNDS: u32 = 20_000;
    let mem = shared_page();
    let f = Arc::new(mem.futex(0).unwrap());
    let w = word(&mem, 0);
    let SteppedWaker {
        go,
        done,
        result,
        thread: waker_thread,
    } = stepped_waker(&f, ROUNDS);
    let (mut wakes, mut a_observed, mut b_completed, mut no_waiter, mut spurious) = (0, 0, 0, 0, 0);
    let started = Instant::now();
    let mut carried = 0;
    for round in 0..ROUNDS {
        // A wake forwarded by the previous round's dropped B may still be
        // on its way (the thread backend's helper passes it on after the
        // drop returns) and land on this round's A or B: a legitimate
        // completion (S3 passes a consumed wake to *a* waiter of the
        // word). Arm them again until both are queued with nothing
        // pending for them.
        let deadline = Instant::now() + ROUND_WATCHDOG;
        let (cb, wb, mut a, mut b, wa) = loop {
            let (ca, wa) = counting_waker();
            let (cb, wb) = counting_waker();
            let mut a = f.wait_async(0);
            let mut b = f.wait_async(0);
            let a_pending = poll_once(&mut a, &wa).is_pending();
            let b_pending = poll_once(&mut b, &wb).is_pending();
            let queued = loop {
                if ca.count() > 0 || cb.count() > 0 || !a_pending || !b_pending {
                    break false;
                }
                if kernel_waiters(w) == 2 {
                    break true;
                }
                assert!(
                    Instant::now() < deadline,
                    "round {round}: A and B never both queued ({} kernel waiters)",
                    kernel_waiters(w)
                );
                std::thread::yield_now();
            };
            if queued {
                break (cb, wb, a, b, wa);
            }
            carried += 1;
        };
        let mode = round % 2;
        go.wait();
        let mut observed = false;
        if mode == 0 {
            // Concurrent with the wake: look at A once, then drop it.
            observed = poll_once(&mut a, &wa).is_ready();
            drop(a);
            done.wait();
        } else {
            // After the wake: A consumed it (FIFO) and is dropped unpolled.
            done.wait();
            drop(a);
        }
        let r = result.load(Ordering::SeqCst);
        wakes += r;
        if r == 1 && !observed {
            let deadline = Instant::now() + ROUND_WATCHDOG;
            while cb.count() == 0 {
                assert!(
                    Instant::now() < deadline,
                    "round {round} (mode {mode}): LOST WAKE: wake(1) returned 1, A was dropped \
                     without observing it and B was never woken ({} kernel waiters)",
                    kernel_waiters(w)
                );
                std::thread::yield_now();
            }
            assert!(poll_once(&mut b, &wb).is_ready());
            b_completed += 1;
        } else {
            if r == 1 {
                a_observed += 1;
            } else {
                no_waiter += 1;
            }
            if poll_once(&mut b, &wb).is_ready() {
                spurious += 1;
            }
        }
        drop(b);
    }
    waker_thread.join().unwrap();
    wait_for_waiters(w, 0, "no wait left");
    eprintln!(
        "[{test}] {ROUNDS} rounds in {:.1?}: {wakes} wakes counted = {a_observed} observed by A + \
         {b_completed} completed B; {no_waiter} wakes found no waiter; {spurious} spurious B \
         completions; {carried} forwards that reached the next round's waits",
        started.elapsed()
    );
    assert_eq!(wakes, a_observed + b_completed);
}

/// No descriptor leak over many handle / eventfd / wait cycles.
#[test]
fn no_fd_leak_over_many_handle_cycles() {
    let test = "no_fd_leak_over_many_handle_cycles";
    let _serial = serial();
    if start(test).is_none() {
        return;
    }
    let mem = shared_page();
    // Warm up (backend threads, lazily opened fds).
    {
        let e = EventFdFutex::new(mem.futex(0).unwrap()).unwrap();
        e.arm(0).unwrap();
        e.cancel();
    }
    let before = open_fds();
    let (_, waker) = counting_waker();
    for i in 0..5_000u32 {
        let f = mem.futex((i % 1024) as usize).unwrap();
        let mut fut = f.wait_async(0);
        assert!(poll_once(&mut fut, &waker).is_pending());
        drop(fut);
        let e = EventFdFutex::new(f).unwrap();
        e.arm(0).unwrap();
        if i % 2 == 0 {
            e.cancel();
        }
        drop(e);
        let named = SharedMemory::memfd("afx-leak", 4096).unwrap();
        drop(named);
    }
    let after = open_fds();
    let new: Vec<_> = after
        .iter()
        .filter(|(fd, _)| !before.contains_key(*fd))
        .collect();
    eprintln!(
        "[{test}] open fds: {} before, {} after 5000 cycles; new: {new:?}",
        before.len(),
        after.len()
    );
    // A leak per cycle would show thousands; allow the odd descriptor some
    // runtime or test harness thread opens meanwhile.
    assert!(new.len() <= 2, "fd leak over 5000 cycles: {new:?}");
}

// ---------------------------------------------------------------------------
// Spurious completions stay rare

/// Whether this process's async waits are served by the thread backend's
/// vector mode (its helpers are named `afx-waitv`; call with waits armed).
fn vector_mode_helpers_running() -> bool {
    std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            std::fs::read_to_string(e.path().join("comm"))
                .is_ok_and(|comm| comm.trim_end() == "afx-waitv")
        })
}

/// 64 tasks each wait on their own word, armed in a known order; the words
/// are then changed and woken one at a time (`last_armed_first` or the
/// other way round), each after every remaining task is queued again.
/// Returns the completions that saw their word unchanged (spurious), and
/// whether vector-mode helpers served the waits.
fn spurious_completions(test: &str, last_armed_first: bool) -> (usize, bool) {
    const N: usize = 64;
    let mem = shared_page();
    let rt = rt_multi(2);
    let handles: Vec<Arc<AsyncFutex>> = (0..N).map(|i| Arc::new(mem.futex(i).unwrap())).collect();
    let (spurious, vector) = rt.block_on(async {
        let mut tasks = Vec::new();
        for (i, f) in handles.iter().enumerate() {
            let f = Arc::clone(f);
            tasks.push(tokio::spawn(async move {
                let mut spurious = 0usize;
                while f.word().load(Ordering::SeqCst) == 0 {
                    within("task woken", f.wait_async(0)).await.unwrap();
                    if f.word().load(Ordering::SeqCst) == 0 {
                        spurious += 1;
                    }
                }
                spurious
            }));
            // Arm in a known order.
            wait_for_waiters_async(handles[i].word(), 1, "task queued").await;
        }
        let vector = vector_mode_helpers_running();
        let order: Vec<usize> = if last_armed_first {
            (0..N).rev().collect()
        } else {
            (0..N).collect()
        };
        for (k, &i) in order.iter().enumerate() {
            // Every remaining task queued: a steady state before each wake.
            for &j in &order[k..] {
                wait_for_waiters_async(handles[j].word(), 1, "task queued before the wake").await;
            }
            handles[i].word().store(1, Ordering::SeqCst);
            // Its return is not checked: the thread backend may be between
            // two futex_waitv calls (then the changed word completes it).
            handles[i].wake(1).unwrap();
            wait_until_async("woken task done", || tasks[i].is_finished()).await;
        }
        let mut total = 0;
        for t in tasks {
            total += within("task done", t).await.unwrap();
        }
        (total, vector)
    });
    eprintln!(
        "[{test}] {N} wakes on {N} words, {}: {spurious} spurious completions{}",
        if last_armed_first {
            "last-armed first"
        } else {
            "first-armed first"
        },
        if vector {
            " (thread backend, vector mode)"
        } else {
            ""
        }
    );
    (spurious, vector)
}

/// DESIGN S4: spurious completions are allowed but "must be rare". Woken
/// first-armed first, each wake completes exactly its own task on every
/// backend and mode (allowing the odd one, N/8).
#[test]
fn spurious_completions_stay_rare_across_many_words() {
    let test = "spurious_completions_stay_rare_across_many_words";
    let _serial = serial();
    if start(test).is_none() {
        return;
    }
    let (spurious, _) = spurious_completions(test, false);
    assert!(
        spurious <= 64 / 8,
        "{spurious} spurious completions for 64 wakes: not rare (S4)"
    );
}

/// Woken last-armed first: io_uring and per-wait mode still complete only
/// the woken task. In vector mode `futex_waitv` reports the last woken
/// entry only, and every entry before it may have consumed a pure wake in
/// the same instant, so each wake of the entry at position k of the
/// helper's vector completes the k - 1 before it too (the documented cost,
/// `src/backend/thread/waitv.rs`): here 63 + 62 + ... = 2016 at most, and
/// never a wait queued after the woken one.
#[test]
fn spurious_completions_are_bounded_by_vector_position() {
    let test = "spurious_completions_are_bounded_by_vector_position";
    let _serial = serial();
    if start(test).is_none() {
        return;
    }
    let (spurious, vector) = spurious_completions(test, true);
    let bound = if vector { 64 * 63 / 2 } else { 64 / 8 };
    assert!(
        spurious <= bound,
        "{spurious} spurious completions for 64 wakes, last-armed first: more than {bound}"
    );
}

// ---------------------------------------------------------------------------
// Blocking wait

#[test]
fn blocking_wait_timeout_stale_and_woken() {
    let test = "blocking_wait_timeout_stale_and_woken";
    let _serial = serial();
    if start(test).is_none() {
        return;
    }
    let mem = shared_page();
    let f = Arc::new(mem.futex(0).unwrap());
    // Times out.
    let t0 = Instant::now();
    assert_eq!(
        f.wait(0, Some(Duration::from_millis(30))).unwrap(),
        WaitStatus::TimedOut
    );
    assert!(t0.elapsed() >= Duration::from_millis(30), "returned early");
    assert_eq!(
        f.wait(0, Some(Duration::ZERO)).unwrap(),
        WaitStatus::TimedOut
    );
    // Stale value: completes at once, without queueing.
    f.word().store(5, Ordering::SeqCst);
    assert_eq!(f.wait(4, Some(WATCHDOG)).unwrap(), WaitStatus::Completed);
    assert_eq!(f.wait(4, None).unwrap(), WaitStatus::Completed);
    // Woken by another thread, without a value change (timeout and forever).
    for timeout in [Some(WATCHDOG), None] {
        let waiter = {
            let f = Arc::clone(&f);
            std::thread::spawn(move || f.wait(5, timeout))
        };
        wait_for_waiters(f.word(), 1, "blocking waiter queued");
        assert_eq!(f.wake(1).unwrap(), 1);
        assert_eq!(waiter.join().unwrap().unwrap(), WaitStatus::Completed);
    }
    // Woken by a store + wake from an async waiter's point of view too:
    // a blocking waiter and an async waiter on one word, one wake-all.
    let (count, waker) = counting_waker();
    let mut fut = f.wait_async(5);
    assert!(poll_once(&mut fut, &waker).is_pending());
    let waiter = {
        let f = Arc::clone(&f);
        std::thread::spawn(move || f.wait(5, Some(WATCHDOG)))
    };
    wait_for_waiters(f.word(), 2, "blocking and async waiter queued");
    f.word().store(6, Ordering::SeqCst);
    assert_eq!(f.wake(u32::MAX).unwrap(), 2);
    assert_eq!(waiter.join().unwrap().unwrap(), WaitStatus::Completed);
    wait_until("async waiter woken", || count.count() > 0);
    assert!(poll_once(&mut fut, &waker).is_ready());
}

/// "Signals do not end the wait": a blocking `wait` interrupted by signals
/// (handler installed without `SA_RESTART`) goes back to sleep and returns
/// only on the wake. Run in a forked child so the handler stays there.
#[test]
fn blocking_wait_survives_signals() {
    let test = "blocking_wait_survives_signals";
    let _serial = serial();
    let Some(kind) = start(test) else { return };
    static HANDLED: AtomicU32 = AtomicU32::new(0);
    extern "C" fn on_usr1(_: libc::c_int) {
        HANDLED.fetch_add(1, Ordering::SeqCst);
    }
    let mem = shared_page();
    let child = fork_child(test, || {
        use std::os::unix::thread::JoinHandleExt;
        child_backend_is(kind)?;
        // SAFETY: installing a handler that only bumps an atomic.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_usr1 as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = 0; // no SA_RESTART: the futex call sees EINTR
            libc::sigemptyset(&mut sa.sa_mask);
            ensure!(
                libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()) == 0,
                "sigaction"
            );
        }
        let f = Arc::new(io_ok(mem.futex(0))?);
        let returned = Arc::new(AtomicU32::new(0));
        let waiter = {
            let (f, returned) = (Arc::clone(&f), Arc::clone(&returned));
            std::thread::spawn(move || {
                let r = f.wait(0, Some(WATCHDOG));
                returned.store(1, Ordering::SeqCst);
                r
            })
        };
        for k in 1..=20 {
            try_wait_for_waiters(f.word(), 1, "blocking waiter queued")?;
            // SAFETY: signalling a live thread of this process.
            unsafe { libc::pthread_kill(waiter.as_pthread_t(), libc::SIGUSR1) };
            try_wait_until("signal handled", || HANDLED.load(Ordering::SeqCst) >= k)?;
            ensure!(
                returned.load(Ordering::SeqCst) == 0,
                "signal {k} ended the wait"
            );
        }
        try_wait_for_waiters(f.word(), 1, "blocking waiter queued again")?;
        ensure!(
            returned.load(Ordering::SeqCst) == 0,
            "a signal ended the wait"
        );
        ensure!(io_ok(f.wake(1))? == 1, "wake found no waiter");
        let r = waiter.join().map_err(|_| "waiter panicked".to_string())?;
        ensure!(
            matches!(r, Ok(WaitStatus::Completed)),
            "wait after signals + wake: {r:?}"
        );
        Ok(())
    });
    child.expect_ok();
}

fn io_ok<T>(r: io::Result<T>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------
// EventFdFutex protocol and private scope

#[test]
fn eventfd_futex_protocol() {
    let test = "eventfd_futex_protocol";
    let _serial = serial();
    if start(test).is_none() {
        return;
    }
    let mem = shared_page();
    let e = EventFdFutex::new(mem.futex(1).unwrap()).unwrap();
    let fd = e.as_raw_fd();
    // SAFETY: fcntl queries on a live fd.
    let (fl, fdfl) = unsafe {
        (
            libc::fcntl(fd, libc::F_GETFL),
            libc::fcntl(fd, libc::F_GETFD),
        )
    };
    assert!(fl & libc::O_NONBLOCK != 0, "eventfd must be EFD_NONBLOCK");
    assert!(fdfl & libc::FD_CLOEXEC != 0, "eventfd must be EFD_CLOEXEC");
    assert!(!e.is_armed());
    assert!(!e.ack().unwrap(), "ack with nothing armed");
    e.cancel(); // nothing armed: no-op

    e.arm(0).unwrap();
    assert!(e.is_armed());
    assert!(!e.ack().unwrap(), "ack while pending");
    assert_eq!(errno_of(e.arm(0)), libc::EBUSY);
    wait_for_waiters(word(&mem, 1), 1, "armed wait queued");
    assert!(!fd_readable(e.as_fd(), 0));
    word(&mem, 1).store(1, Ordering::SeqCst);
    assert_eq!(e.futex().wake(1).unwrap(), 1);
    assert!(fd_readable(e.as_fd(), WATCHDOG.as_millis() as i32));
    assert!(e.ack().unwrap());
    assert!(!e.is_armed());
    assert!(!fd_readable(e.as_fd(), 0), "ack must drain");

    // Cancel a queued wait: synchronous, nothing left behind.
    e.arm(1).unwrap();
    wait_for_waiters(word(&mem, 1), 1, "armed wait queued");
    e.cancel();
    assert!(!e.is_armed());
    assert_eq!(
        kernel_waiters(word(&mem, 1)),
        0,
        "cancel returned with the wait queued"
    );
    assert!(!fd_readable(e.as_fd(), 0));
    // Cancel right after arm (probably before the backend queued it).
    for _ in 0..100 {
        e.arm(1).unwrap();
        e.cancel();
        assert_eq!(kernel_waiters(word(&mem, 1)), 0);
        assert!(!fd_readable(e.as_fd(), 0));
    }
    assert_eq!(e.futex().wake(u32::MAX).unwrap(), 0);
}

/// A private-scope handle on a process-local word: private waits are woken
/// by private wakes, and never match a shared wake on the same address.
#[test]
fn private_scope_waits_and_wakes() {
    let test = "private_scope_waits_and_wakes";
    let _serial = serial();
    if start(test).is_none() {
        return;
    }
    let cell = Arc::new(AtomicU32::new(0));
    let private = AsyncFutex::with_owner(Arc::clone(&cell), Scope::Private, |c| c).unwrap();
    let shared = AsyncFutex::with_owner(Arc::clone(&cell), Scope::Shared, |c| c).unwrap();
    assert_eq!(private.scope(), Scope::Private);
    assert_eq!(shared.scope(), Scope::Shared);
    let (count, waker) = counting_waker();
    let mut fut = private.wait_async(0);
    assert!(poll_once(&mut fut, &waker).is_pending());
    wait_until("private wait queued", || private_waiters(&cell) == 1);
    assert_eq!(
        shared.wake(u32::MAX).unwrap(),
        0,
        "a shared wake matched a private waiter"
    );
    assert_eq!(private.wake(1).unwrap(), 1);
    wait_until("private wait woken", || count.count() > 0);
    assert!(poll_once(&mut fut, &waker).is_ready());
    // Blocking, private.
    let waiter = {
        let cell = Arc::clone(&cell);
        std::thread::spawn(move || {
            let p = AsyncFutex::with_owner(cell, Scope::Private, |c| c).unwrap();
            p.wait(0, Some(WATCHDOG))
        })
    };
    wait_until("private blocking wait queued", || {
        private_waiters(&cell) == 1
    });
    assert_eq!(private.wake(1).unwrap(), 1);
    assert_eq!(waiter.join().unwrap().unwrap(), WaitStatus::Completed);
}

/// `kernel_waiters` for a private key.
fn private_waiters(word: &AtomicU32) -> u32 {
    loop {
        let val = word.load(Ordering::SeqCst);
        // SAFETY: both addresses are the same live word; nothing is woken.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word as *const AtomicU32,
                libc::FUTEX_CMP_REQUEUE | libc::FUTEX_PRIVATE_FLAG,
                0 as libc::c_int,
                i32::MAX as libc::c_long,
                word as *const AtomicU32,
                val,
            )
        };
        if ret >= 0 {
            return ret as u32;
        }
    }
}

// ---------------------------------------------------------------------------
// SharedMemory

fn unique_name(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("/afx-test-{tag}-{}-{nanos}", std::process::id())
}

fn fstat(fd: std::os::fd::BorrowedFd<'_>) -> libc::stat {
    // SAFETY: fstat into a zeroed stat on a live fd.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        assert_eq!(libc::fstat(fd.as_raw_fd(), &mut st), 0);
        st
    }
}

/// Named objects: `create` is exclusive (EEXIST) and owner-only (0600),
/// `open` maps the same memory (a futex wakes across the two mappings),
/// `unlink` removes the name but not the mappings.
#[test]
fn shared_memory_named_objects() {
    let test = "shared_memory_named_objects";
    let _serial = serial();
    if start(test).is_none() {
        return;
    }
    let name = unique_name("named");
    let a = Arc::new(SharedMemory::create(&name, 8192).unwrap());
    struct Unlink<'a>(&'a str);
    impl Drop for Unlink<'_> {
        fn drop(&mut self) {
            let _ = SharedMemory::unlink(self.0);
        }
    }
    let guard = Unlink(&name);
    assert_eq!(errno_of(SharedMemory::create(&name, 8192)), libc::EEXIST);
    assert_eq!(a.len(), 8192);
    let st = fstat(a.fd().expect("named object has an fd"));
    assert_eq!(st.st_mode & 0o777, 0o600, "mode {:o}", st.st_mode & 0o777);
    assert_eq!(st.st_size, 8192);

    let b = Arc::new(SharedMemory::open(&name).unwrap());
    assert_eq!(b.len(), 8192);
    assert_ne!(a.as_ptr(), b.as_ptr());
    word(&a, 2047).store(0xfeed, Ordering::SeqCst);
    assert_eq!(word(&b, 2047).load(Ordering::SeqCst), 0xfeed);
    same_futex_across_mappings(&a, &b, 100);

    SharedMemory::unlink(&name).unwrap();
    std::mem::forget(guard);
    assert_eq!(errno_of(SharedMemory::open(&name)), libc::ENOENT);
    assert_eq!(errno_of(SharedMemory::unlink(&name)), libc::ENOENT);
    // The mappings outlive the name.
    word(&b, 3).store(9, Ordering::SeqCst);
    assert_eq!(word(&a, 3).load(Ordering::SeqCst), 9);
    same_futex_across_mappings(&b, &a, 101);
}

/// A wait through one mapping is woken through the other (same shared
/// futex key at two virtual addresses).
fn same_futex_across_mappings(a: &Arc<SharedMemory>, b: &Arc<SharedMemory>, index: usize) {
    let fa = a.futex(index).unwrap();
    let fb = b.futex(index).unwrap();
    let (count, waker) = counting_waker();
    let mut fut = fa.wait_async(0);
    assert!(poll_once(&mut fut, &waker).is_pending());
    wait_for_waiters(fb.word(), 1, "wait queued, seen through the other mapping");
    assert_eq!(fb.wake(1).unwrap(), 1);
    wait_until("woken across mappings", || count.count() > 0);
    assert!(poll_once(&mut fut, &waker).is_ready());
}

/// `memfd` + `from_fd` (a dup of the fd) map the same memory.
#[test]
fn shared_memory_memfd_and_from_fd() {
    let test = "shared_memory_memfd_and_from_fd";
    let _serial = serial();
    if start(test).is_none() {
        return;
    }
    let a = Arc::new(SharedMemory::memfd("afx-test", 4096).unwrap());
    let fd = a.fd().expect("memfd has an fd");
    // SAFETY: fcntl query on a live fd.
    assert!(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) } & libc::FD_CLOEXEC != 0);
    let b = Arc::new(SharedMemory::from_fd(fd.try_clone_to_owned().unwrap()).unwrap());
    assert_eq!(b.len(), 4096);
    assert_ne!(a.as_ptr(), b.as_ptr());
    word(&a, 1023).store(42, Ordering::SeqCst);
    assert_eq!(word(&b, 1023).load(Ordering::SeqCst), 42);
    same_futex_across_mappings(&a, &b, 5);
    assert_eq!(
        errno_of(SharedMemory::memfd("bad\0name", 4096)),
        libc::EINVAL
    );

    // Sealed against shrinking, through any fd of it: a peer cannot take
    // pages away under the futex words.
    for (what, raw) in [
        ("memfd", fd.as_raw_fd()),
        ("from_fd", b.fd().unwrap().as_raw_fd()),
    ] {
        // SAFETY: fcntl query on a live fd.
        let seals = unsafe { libc::fcntl(raw, libc::F_GET_SEALS) };
        assert!(
            seals >= 0 && seals & libc::F_SEAL_SHRINK != 0,
            "{what}: seals {seals:#x}"
        );
        for len in [0, 4092] {
            // SAFETY: ftruncate on a live fd (it must fail).
            let r = unsafe { libc::ftruncate(raw, len) };
            let e = std::io::Error::last_os_error().raw_os_error();
            assert_eq!(
                (r, e),
                (-1, Some(libc::EPERM)),
                "{what}: ftruncate to {len} must fail with EPERM"
            );
        }
    }
    assert_eq!(fstat(fd).st_size, 4096);
    word(&a, 1023).store(43, Ordering::SeqCst);
    assert_eq!(word(&b, 1023).load(Ordering::SeqCst), 43);
}

/// What the `SharedMemory::create` docs say a peer's `ftruncate` of a
/// `shm_open` object does to a word past the new end: reads raise SIGBUS,
/// `futex(2)` calls give EFAULT, a wait queued before stays queued and is
/// woken once the object grows back.
#[test]
fn shared_memory_named_truncated_by_peer() {
    let test = "shared_memory_named_truncated_by_peer";
    let _serial = serial();
    if start(test).is_none() {
        return;
    }
    let name = unique_name("trunc");
    let a = Arc::new(SharedMemory::create(&name, 8192).unwrap());
    let b = Arc::new(SharedMemory::open(&name).unwrap());
    SharedMemory::unlink(&name).unwrap();
    const PAST: usize = 1024 + 4; // a word in the second page
    let fa = a.futex(PAST).unwrap();
    let (count, waker) = counting_waker();
    let mut fut = fa.wait_async(0);
    assert!(poll_once(&mut fut, &waker).is_pending());
    wait_for_waiters(fa.word(), 1, "wait queued before the truncation");

    let peer_fd = b.fd().unwrap().as_raw_fd();
    // SAFETY: ftruncate on a live fd.
    assert_eq!(unsafe { libc::ftruncate(peer_fd, 4096) }, 0);
    assert_eq!(errno_of(fa.wake(1)), libc::EFAULT, "wake past the end");
    let w = fa.word();
    assert_eq!(
        raw_wait(w, 0, Some(Duration::from_millis(1))),
        Err(libc::EFAULT),
        "FUTEX_WAIT past the end"
    );
    let reader = fork_child("read past the end", || {
        let v = word(&a, PAST).load(Ordering::SeqCst);
        fail(format!("read {v} past the end of a truncated object"))
    });
    assert_eq!(reader.wait(), Exit::Signal(libc::SIGBUS));
    assert_eq!(count.count(), 0, "the queued wait completed");

    // Grown back: the queued wait is still there, and a wake finds it.
    // SAFETY: ftruncate on a live fd.
    assert_eq!(unsafe { libc::ftruncate(peer_fd, 8192) }, 0);
    assert_eq!(w.load(Ordering::SeqCst), 0, "a regrown page reads as zeros");
    assert_eq!(
        fa.wake(1).unwrap(),
        1,
        "the wait queued before the truncation"
    );
    wait_until("the queued wait completes", || count.count() > 0);
    assert!(poll_once(&mut fut, &waker).is_ready());
}

#[test]
fn shared_memory_word_bounds_and_bad_sizes() {
    let test = "shared_memory_word_bounds_and_bad_sizes";
    let _serial = serial();
    if start(test).is_none() {
        return;
    }
    let mem = Arc::new(SharedMemory::anonymous(4096).unwrap());
    assert_eq!(mem.len(), 4096);
    assert!(!mem.is_empty());
    assert!(mem.word(0).is_some());
    assert!(mem.word(1023).is_some());
    assert!(mem.word(1024).is_none());
    assert!(mem.word(usize::MAX).is_none());
    assert!(mem.word(usize::MAX / 4).is_none());
    assert_eq!(errno_of(mem.futex(1024)), libc::EINVAL);
    assert!(mem.futex(1023).is_ok());
    let odd = SharedMemory::anonymous(6).unwrap();
    assert!(odd.word(0).is_some());
    assert!(
        odd.word(1).is_none(),
        "a word past the end of a 6-byte mapping"
    );
    assert_eq!(errno_of(SharedMemory::anonymous(0)), libc::EINVAL);
}

// ---------------------------------------------------------------------------
// Bad addresses

#[test]
fn new_rejects_null_misaligned_and_unmapped() {
    let test = "new_rejects_null_misaligned_and_unmapped";
    let _serial = serial();
    if start(test).is_none() {
        return;
    }
    let mem = shared_page();
    // SAFETY (all calls below): the constructor must validate the address;
    // none of these handles is ever created.
    unsafe {
        assert_eq!(errno_of(AsyncFutex::new(std::ptr::null())), libc::EINVAL);
        for off in 1..4 {
            let p = mem.as_ptr().add(off) as *const AtomicU32;
            assert_eq!(errno_of(AsyncFutex::new(p)), libc::EINVAL, "offset {off}");
            assert_eq!(
                errno_of(AsyncFutex::with_scope(p, Scope::Private)),
                libc::EINVAL
            );
        }
        // A mapped but inaccessible page.
        let page = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(page, libc::MAP_FAILED);
        let p = page as *const AtomicU32;
        assert_eq!(errno_of(AsyncFutex::new(p)), libc::EFAULT, "PROT_NONE page");
        assert_eq!(
            errno_of(AsyncFutex::with_scope(p, Scope::Private)),
            libc::EFAULT
        );
        // An unmapped page (unless another thread mapped it meanwhile).
        assert_eq!(libc::munmap(page, 4096), 0);
        let r = AsyncFutex::new(p);
        let mut vec = 0u8;
        let still_unmapped = libc::mincore(page, 4096, &mut vec) == -1;
        if still_unmapped {
            assert_eq!(errno_of(r), libc::EFAULT, "unmapped page");
        } else {
            eprintln!(
                "[{test}] note: the unmapped page was reused meanwhile; EFAULT check skipped"
            );
        }
    }
    // A valid address works.
    // SAFETY: the word lives in `mem`, which outlives the handle.
    let f = unsafe { AsyncFutex::new(mem.word(3).unwrap()) }.unwrap();
    assert_eq!(f.wake(1).unwrap(), 0);
}

/// A task waker that panics when the library wakes it (an executor's bug)
/// must not take the backend thread down with it: the wait still counts as
/// completed, and every later wait of the process still completes.
#[test]
fn panicking_waker_does_not_stop_the_backend() {
    let test = "panicking_waker_does_not_stop_the_backend";
    let _serial = serial();
    let Some(_kind) = start(test) else { return };
    static PANICKED: AtomicU32 = AtomicU32::new(0);
    struct Panicky;
    impl std::task::Wake for Panicky {
        fn wake(self: Arc<Self>) {
            PANICKED.fetch_add(1, Ordering::SeqCst);
            panic!("this waker panics on purpose (test {})", "panicking_waker");
        }
    }
    let word: &'static AtomicU32 = Box::leak(Box::new(AtomicU32::new(0)));
    // Leaked: with a dead backend thread, dropping the handle would wait
    // for ever for its waits to leave the kernel, and hide the failure.
    let f: &'static AsyncFutex = Box::leak(Box::new(
        AsyncFutex::from_static(word, Scope::Shared).unwrap(),
    ));
    for round in 0..3 {
        let mut fut = Box::pin(f.wait_async(0));
        let panicky = std::task::Waker::from(Arc::new(Panicky));
        assert!(poll_once(&mut fut, &panicky).is_pending());
        wait_for_waiters(word, 1, "wait with a panicking waker queued");
        assert_eq!(f.wake(1).unwrap(), 1, "round {round}");
        // Poll again only once the backend has called (and lost) the
        // panicking waker: a poll before would replace it.
        wait_until("the backend calls the panicking waker", || {
            PANICKED.load(Ordering::SeqCst) > round
        });
        let (_count, waker) = counting_waker();
        wait_until("the woken wait completes", || {
            poll_once(&mut fut, &waker).is_ready()
        });
    }
    eprintln!("[{test}] three wakers panicked in the backend; every later wait still completed");
}

// ---------------------------------------------------------------------------
// Pure wakes (no change of the word)

/// Wakes one kernel waiter of `word`, retrying while it finds none (an
/// async wait leaves the kernel queue for a moment when a sibling on the
/// same thread-backend helper completes). Returns how many tries found
/// nobody.
fn wake_one_retrying(word: &AtomicU32) -> u32 {
    let deadline = Instant::now() + ROUND_WATCHDOG;
    let mut missed = 0;
    while raw_wake(word, 1) == 0 {
        missed += 1;
        assert!(Instant::now() < deadline, "no kernel waiter on the word");
        std::thread::yield_now();
    }
    missed
}

/// Polls `fut` until it completes; panics after [`ROUND_WATCHDOG`].
fn complete<F: std::future::Future<Output = io::Result<()>> + Unpin>(fut: &mut F, what: &str) {
    let (_, waker) = counting_waker();
    let deadline = Instant::now() + ROUND_WATCHDOG;
    loop {
        if let Poll::Ready(r) = poll_once(fut, &waker) {
            return r.unwrap();
        }
        assert!(Instant::now() < deadline, "{what}");
        std::thread::yield_now();
    }
}

/// Two async waits on words X and Y (on the thread backend: served by the
/// same helper, X first in its vector); a peer wakes X then Y with raw
/// `FUTEX_WAKE(1)`, back to back, changing neither word. Both wakes are
/// counted by the kernel (each returns 1), so both waits must complete
/// (S3) — even when `futex_waitv` reports only Y, the last woken entry,
/// because both wakes landed before the helper was back from the kernel.
/// Looped, since that order is a race.
#[test]
fn pure_wakes_on_two_words_back_to_back_both_complete() {
    let test = "pure_wakes_on_two_words_back_to_back_both_complete";
    let _serial = serial();
    if start(test).is_none() {
        return;
    }
    let mem = shared_page();
    let (fx, fy) = (mem.futex(0).unwrap(), mem.futex(1).unwrap());
    let (x, y) = (fx.word(), fy.word());
    x.store(1, Ordering::SeqCst);
    y.store(2, Ordering::SeqCst);
    let (_, waker) = counting_waker();
    // Before the fix, about 1 round in 700 lost X's wake.
    const ROUNDS: u32 = 10_000;
    let mut missed = 0;
    for round in 0..ROUNDS {
        let mut wx = fx.wait_async(1);
        assert!(poll_once(&mut wx, &waker).is_pending());
        wait_for_waiters(x, 1, "X queued");
        let mut wy = fy.wait_async(2);
        assert!(poll_once(&mut wy, &waker).is_pending());
        wait_for_waiters(y, 1, "Y queued");
        wait_for_waiters(x, 1, "X queued again");
        missed += wake_one_retrying(x);
        missed += wake_one_retrying(y);
        complete(
            &mut wx,
            &format!("round {round}: X's wait lost its counted wake"),
        );
        complete(
            &mut wy,
            &format!("round {round}: Y's wait lost its counted wake"),
        );
        assert_eq!(x.load(Ordering::SeqCst), 1);
        assert_eq!(y.load(Ordering::SeqCst), 2);
    }
    eprintln!(
        "[{test}] {ROUNDS} rounds of two back-to-back pure wakes: every wake reached its wait; \
         {missed} FUTEX_WAKE(1) calls found the wait out of the kernel queue and were repeated"
    );
}
