//! Cross-process behaviour: real processes (`fork`) over real shared memory
//! (`SharedMemory::anonymous`, `MAP_SHARED`).
//!
//! Every child makes its own handles (and its own runtime when it awaits),
//! runs under `catch_unwind` and leaves with `_exit`; the parent waits for
//! it under a watchdog (see `common::fork_child`). Ordering comes from value
//! handshakes on shared words and from counting the kernel's futex waiters
//! (`common::kernel_waiters`), never from sleeps.

#[macro_use]
mod common;

use std::future::Future;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;

use asyncfutex::{EventFdFutex, WaitStatus};
use common::*;

const PINGPONG_ROUNDS: u32 = 3000;

fn io<T>(what: &str, r: std::io::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

// ---------------------------------------------------------------------------
// Ping-pong

/// Parent awaits with `wait_async`; the child awaits with `wait_async` on its
/// own runtime. Every value seen in order.
#[test]
fn ping_pong_parent_async_child_async() {
    let test = "ping_pong_parent_async_child_async";
    let _serial = serial();
    let Some(kind) = start(test) else { return };
    let mem = shared_page();
    let child = fork_child(test, || {
        child_backend_is(kind)?;
        let f = io("futex(0)", mem.futex(0))?;
        pingpong_child_async(&f, PINGPONG_ROUNDS)
    });
    let f = mem.futex(0).unwrap();
    let spurious = rt_current().block_on(pingpong_parent_async(&f, PINGPONG_ROUNDS));
    child.expect_ok();
    assert_eq!(word(&mem, 0).load(Ordering::SeqCst), 2 * PINGPONG_ROUNDS);
    eprintln!("[{test}] {PINGPONG_ROUNDS} round trips, {spurious} spurious parent completions");
}

/// Parent awaits with `wait_async` (multi-thread runtime); the child blocks
/// in `wait`.
#[test]
fn ping_pong_parent_async_child_blocking() {
    let test = "ping_pong_parent_async_child_blocking";
    let _serial = serial();
    let Some(kind) = start(test) else { return };
    let mem = shared_page();
    let child = fork_child(test, || {
        child_backend_is(kind)?;
        let f = io("futex(0)", mem.futex(0))?;
        pingpong_child_blocking(&f, PINGPONG_ROUNDS)
    });
    let f = Arc::new(mem.futex(0).unwrap());
    let rt = rt_multi(2);
    let spurious = rt.block_on(async {
        let f = Arc::clone(&f);
        within(
            "parent ping-pong task",
            tokio::spawn(async move { pingpong_parent_async(&f, PINGPONG_ROUNDS).await }),
        )
        .await
        .expect("ping-pong task")
    });
    child.expect_ok();
    assert_eq!(word(&mem, 0).load(Ordering::SeqCst), 2 * PINGPONG_ROUNDS);
    eprintln!("[{test}] {PINGPONG_ROUNDS} round trips, {spurious} spurious parent completions");
}

// ---------------------------------------------------------------------------
// wake(1) and wake-all across processes

/// One waiter in each of two other processes (one async, one blocking), both
/// queued in the kernel: `wake(1)` returns 1 and exactly one of them
/// reports; the second `wake(1)` wakes the other. The word never changes,
/// so a report can only come from a wake.
#[test]
fn wake_one_wakes_exactly_one_of_two_processes() {
    let test = "wake_one_wakes_exactly_one_of_two_processes";
    let _serial = serial();
    let Some(kind) = start(test) else { return };
    const W: usize = 0;
    const READY: usize = 1;
    const WOKEN: usize = 2;
    const WHO: usize = 3;
    let mem = shared_page();
    let mem_ref = &mem;
    let spawn = |k: u32| {
        fork_child(&format!("{test} waiter {k}"), move || {
            let mem = mem_ref;
            child_backend_is(kind)?;
            let f = io("futex", mem.futex(W))?;
            add_wake(word(mem, READY), 1);
            if k == 0 {
                let r = rt_current().block_on(async {
                    tokio::time::timeout(CHILD_WATCHDOG, f.wait_async(0)).await
                });
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return fail(format!("wait_async: {e}")),
                    Err(_) => return fail("async waiter never woken"),
                }
            } else {
                match f.wait(0, Some(CHILD_WATCHDOG)) {
                    Ok(WaitStatus::Completed) => {}
                    Ok(WaitStatus::TimedOut) => return fail("blocking waiter never woken"),
                    Err(e) => return fail(format!("wait: {e}")),
                }
            }
            ensure!(
                word(mem, W).load(Ordering::SeqCst) == 0,
                "the word changed under the test"
            );
            word(mem, WHO).fetch_or(1 << k, Ordering::SeqCst);
            add_wake(word(mem, WOKEN), 1);
            Ok(())
        })
    };
    let c0 = spawn(0);
    let c1 = spawn(1);
    wait_value(word(&mem, READY), "both children ready", |v| v == 2);
    let f = mem.futex(W).unwrap();
    let w = word(&mem, W);
    wait_for_waiters(w, 2, "both children queued");

    assert_eq!(f.wake(1).unwrap(), 1, "wake(1) with two waiters");
    wait_value(word(&mem, WOKEN), "first child reports", |v| v >= 1);
    assert_eq!(kernel_waiters(w), 1, "the other child must still be queued");
    assert_eq!(
        word(&mem, WOKEN).load(Ordering::SeqCst),
        1,
        "wake(1) woke both processes"
    );
    let first = word(&mem, WHO).load(Ordering::SeqCst);
    assert!(first == 1 || first == 2, "WHO = {first:#b}");

    assert_eq!(f.wake(1).unwrap(), 1, "second wake(1)");
    wait_value(word(&mem, WOKEN), "second child reports", |v| v >= 2);
    assert_eq!(word(&mem, WHO).load(Ordering::SeqCst), 0b11);
    c0.expect_ok();
    c1.expect_ok();
    assert_eq!(f.wake(u32::MAX).unwrap(), 0, "no waiter left");
    eprintln!(
        "[{test}] first wake went to the {} child",
        if first == 1 { "async" } else { "blocking" }
    );
}

/// N children (async and blocking) and M tasks of the parent wait on one
/// word; one `wake(u32::MAX)` returns N + M and everybody resumes.
#[test]
fn wake_all_wakes_every_process_and_task() {
    let test = "wake_all_wakes_every_process_and_task";
    let _serial = serial();
    let Some(kind) = start(test) else { return };
    const N: u32 = 4;
    const M: u32 = 16;
    const W: usize = 0;
    const READY: usize = 1;
    const DONE: usize = 2;
    let mem = shared_page();
    let mem_ref = &mem;
    let children: Vec<Child> = (0..N)
        .map(|k| {
            fork_child(&format!("{test} child {k}"), move || {
                let mem = mem_ref;
                child_backend_is(kind)?;
                let f = io("futex", mem.futex(W))?;
                add_wake(word(mem, READY), 1);
                if k % 2 == 0 {
                    rt_current().block_on(async {
                        loop {
                            let v = f.word().load(Ordering::SeqCst);
                            if v != 0 {
                                return Ok(());
                            }
                            match tokio::time::timeout(CHILD_WATCHDOG, f.wait_async(v)).await {
                                Ok(Ok(())) => {}
                                Ok(Err(e)) => return fail(format!("wait_async: {e}")),
                                Err(_) => return fail("never woken"),
                            }
                        }
                    })?;
                } else {
                    while f.word().load(Ordering::SeqCst) == 0 {
                        match f.wait(0, Some(CHILD_WATCHDOG)) {
                            Ok(WaitStatus::Completed) => {}
                            Ok(WaitStatus::TimedOut) => return fail("never woken"),
                            Err(e) => return fail(format!("wait: {e}")),
                        }
                    }
                }
                add_wake(word(mem, DONE), 1);
                Ok(())
            })
        })
        .collect();
    wait_value(word(&mem, READY), "children ready", |v| v == N);
    let f = Arc::new(mem.futex(W).unwrap());
    let rt = rt_multi(2);
    let woken = rt.block_on(async {
        let tasks: Vec<_> = (0..M)
            .map(|_| {
                let f = Arc::clone(&f);
                tokio::spawn(async move {
                    loop {
                        let v = f.word().load(Ordering::SeqCst);
                        if v != 0 {
                            return;
                        }
                        within("parent task woken", f.wait_async(v))
                            .await
                            .expect("wait_async");
                    }
                })
            })
            .collect();
        wait_for_waiters_async(word(&mem, W), N + M, "all waiters queued").await;
        f.word().store(1, Ordering::SeqCst);
        let woken = f.wake(u32::MAX).unwrap();
        for t in tasks {
            within("parent task resumes", t).await.expect("task");
        }
        woken
    });
    assert_eq!(
        woken,
        N + M,
        "wake(u32::MAX) must count every kernel waiter"
    );
    wait_value(word(&mem, DONE), "children resumed", |v| v == N);
    for c in children {
        c.expect_ok();
    }
    assert_eq!(f.wake(u32::MAX).unwrap(), 0);
    eprintln!("[{test}] wake(u32::MAX) woke {woken} = {N} processes + {M} tasks");
}

// ---------------------------------------------------------------------------
// A plain futex(2) peer that does not use the library

/// The child only issues `futex(2)` syscalls: its `FUTEX_WAKE` wakes the
/// parent's `wait_async` (the word unchanged: only a wake can complete it),
/// and the parent's `wake` wakes its `FUTEX_WAIT` (returns 1).
#[test]
fn plain_futex_peer_both_directions() {
    let test = "plain_futex_peer_both_directions";
    let _serial = serial();
    if start(test).is_none() {
        return;
    }
    const W1: usize = 0; // parent waits async, child FUTEX_WAKEs
    const W2: usize = 1; // child FUTEX_WAITs, parent wakes
    const GO: usize = 2;
    const READY2: usize = 3;
    const RESULT: usize = 4;
    let mem = shared_page();
    // Handles first: the child below must not touch the library at all.
    let f1 = mem.futex(W1).unwrap();
    let f2 = mem.futex(W2).unwrap();
    let child = fork_child(test, || {
        // Phase 1: wake the parent's async waiter with a plain FUTEX_WAKE.
        try_wait_value(word(&mem, GO), "parent armed", |v| v == 1)?;
        let n = raw_wake(word(&mem, W1), 1);
        ensure!(
            n == 1,
            "plain FUTEX_WAKE found {n} waiters, want the parent's async wait"
        );
        // Phase 2: a plain FUTEX_WAIT, for the parent's wake().
        store_wake(word(&mem, READY2), 1);
        loop {
            match raw_wait(word(&mem, W2), 0, Some(CHILD_WATCHDOG)) {
                Ok(()) => break,
                Err(libc::EINTR) => continue,
                Err(e) => {
                    return fail(format!(
                        "plain FUTEX_WAIT: {}",
                        std::io::Error::from_raw_os_error(e)
                    ))
                }
            }
        }
        store_wake(word(&mem, RESULT), 1);
        Ok(())
    });

    rt_current().block_on(async {
        let waiter = async {
            within("wait_async woken by a plain FUTEX_WAKE", f1.wait_async(0))
                .await
                .expect("wait_async");
        };
        let driver = async {
            wait_for_waiters_async(word(&mem, W1), 1, "parent's async wait queued").await;
            store_wake(word(&mem, GO), 1);
        };
        tokio::join!(waiter, driver);
    });
    assert_eq!(word(&mem, W1).load(Ordering::SeqCst), 0);

    wait_value(word(&mem, READY2), "child about to FUTEX_WAIT", |v| v == 1);
    wait_for_waiters(word(&mem, W2), 1, "child's FUTEX_WAIT queued");
    assert_eq!(
        f2.wake(1).unwrap(),
        1,
        "wake must find the plain FUTEX_WAIT sleeper"
    );
    wait_value(word(&mem, RESULT), "child woken", |v| v == 1);
    child.expect_ok();
}

// ---------------------------------------------------------------------------
// fork

/// A child makes new handles and uses them both async (its own runtime) and
/// blocking, in two threads, while the parent keeps using its own handles:
/// two ping-pongs with the child plus an in-process ping-pong between two of
/// its tasks that runs across the fork.
#[test]
fn forked_child_uses_new_handles_while_parent_keeps_going() {
    let test = "forked_child_uses_new_handles_while_parent_keeps_going";
    let _serial = serial();
    let Some(kind) = start(test) else { return };
    const ROUNDS: u32 = 1000;
    const A: usize = 0; // child async
    const B: usize = 1; // child blocking
    const L: usize = 2; // parent-local ping-pong
    const STOP: u32 = u32::MAX;
    let mem = shared_page();
    let rt = rt_multi(2);
    let local = Arc::new(mem.futex(L).unwrap());

    // Parent-local ping-pong between two tasks, running across the fork.
    let pinger = {
        let f = Arc::clone(&local);
        rt.spawn(async move {
            let mut i = 0u32;
            loop {
                if f.word().load(Ordering::SeqCst) == STOP {
                    return i;
                }
                let mine = 2 * i + 1;
                if f.word()
                    .compare_exchange(2 * i, mine, Ordering::SeqCst, Ordering::SeqCst)
                    .is_err()
                {
                    return i; // STOP was stored
                }
                f.wake(1).unwrap();
                wait_value_async(&f, "local pong", |v| v == mine + 1 || v == STOP).await;
                i += 1;
            }
        })
    };
    let ponger = {
        let f = Arc::clone(&local);
        rt.spawn(async move {
            loop {
                let v = wait_value_async(&f, "local ping", |v| v % 2 == 1).await;
                if v == STOP {
                    return;
                }
                f.word().store(v + 1, Ordering::SeqCst);
                f.wake(1).unwrap();
            }
        })
    };
    wait_until("local ping-pong running", || {
        local.word().load(Ordering::SeqCst) > 20
    });

    let child = fork_child(test, || {
        child_backend_is(kind)?;
        std::thread::scope(|s| {
            let t = s.spawn(|| {
                let f = io("futex(B)", mem.futex(B))?;
                pingpong_child_blocking(&f, ROUNDS)
            });
            let f = io("futex(A)", mem.futex(A))?;
            let r = pingpong_child_async(&f, ROUNDS);
            let t = t
                .join()
                .map_err(|_| "blocking thread panicked".to_string())?;
            r.and(t)
        })
    });

    let fa = Arc::new(mem.futex(A).unwrap());
    let fb = Arc::new(mem.futex(B).unwrap());
    rt.block_on(async {
        let ta = tokio::spawn(async move { pingpong_parent_async(&fa, ROUNDS).await });
        let tb = tokio::spawn(async move { pingpong_parent_async(&fb, ROUNDS).await });
        within("ping-pong with the async child", ta).await.unwrap();
        within("ping-pong with the blocking child", tb)
            .await
            .unwrap();
    });
    child.expect_ok();

    local.word().store(STOP, Ordering::SeqCst);
    local.wake(u32::MAX).unwrap();
    let local_rounds = rt.block_on(async {
        within("local ponger stops", ponger).await.unwrap();
        within("local pinger stops", pinger).await.unwrap()
    });
    eprintln!("[{test}] child: {ROUNDS} async + {ROUNDS} blocking round trips; parent-local: {local_rounds} round trips");
}

/// Fork while the parent has async waits pending (queued in the kernel).
/// The child sees them as kernel waiters and wakes them all with a new
/// handle; the parent's waits complete; then the child and the parent
/// ping-pong (async and blocking in the child) with new child handles.
#[test]
fn fork_with_async_waits_pending_in_parent() {
    let test = "fork_with_async_waits_pending_in_parent";
    let _serial = serial();
    let Some(kind) = start(test) else { return };
    const K: u32 = 8;
    const ROUNDS: u32 = 500;
    const W: usize = 0;
    const A: usize = 1;
    const B: usize = 2;
    const REPORT: usize = 3;
    let mem = shared_page();
    let f = Arc::new(mem.futex(W).unwrap());
    let rt = rt_multi(2);
    let tasks: Vec<_> = (0..K)
        .map(|_| {
            let f = Arc::clone(&f);
            rt.spawn(async move {
                loop {
                    let v = f.word().load(Ordering::SeqCst);
                    if v != 0 {
                        return;
                    }
                    within("pending parent wait", f.wait_async(v))
                        .await
                        .expect("wait_async");
                }
            })
        })
        .collect();
    wait_for_waiters(word(&mem, W), K, "parent waits queued");

    let child = fork_child(test, || {
        child_backend_is(kind)?;
        let g = io("futex(W)", mem.futex(W))?;
        try_wait_for_waiters(word(&mem, W), K, "parent's waits seen from the child")?;
        g.word().store(1, Ordering::SeqCst);
        let n = io("wake", g.wake(u32::MAX))?;
        store_wake(word(&mem, REPORT), n + 1);
        std::thread::scope(|s| {
            let t = s.spawn(|| {
                let f = io("futex(B)", mem.futex(B))?;
                pingpong_child_blocking(&f, ROUNDS)
            });
            let f = io("futex(A)", mem.futex(A))?;
            let r = pingpong_child_async(&f, ROUNDS);
            let t = t
                .join()
                .map_err(|_| "blocking thread panicked".to_string())?;
            r.and(t)
        })
    });

    let fa = Arc::new(mem.futex(A).unwrap());
    let fb = Arc::new(mem.futex(B).unwrap());
    rt.block_on(async {
        for t in tasks {
            within("parent's pending waits complete after the fork", t)
                .await
                .unwrap();
        }
        let ta = tokio::spawn(async move { pingpong_parent_async(&fa, ROUNDS).await });
        let tb = tokio::spawn(async move { pingpong_parent_async(&fb, ROUNDS).await });
        within("ping-pong with the child's async handle", ta)
            .await
            .unwrap();
        within("ping-pong with the child's blocking handle", tb)
            .await
            .unwrap();
    });
    let woken = wait_value(word(&mem, REPORT), "child report", |v| v != 0) - 1;
    child.expect_ok();
    assert_eq!(
        woken, K,
        "the child's wake(u32::MAX) must count the parent's {K} waits"
    );
    assert_eq!(f.wake(u32::MAX).unwrap(), 0);
    eprintln!(
        "[{test}] child woke {woken} pending parent waits, then {ROUNDS}+{ROUNDS} round trips"
    );
}

// ---------------------------------------------------------------------------
// SIGKILL of a peer mid-wait

/// A child blocked in `wait_async` is SIGKILLed: its kernel waiter goes
/// away (on io_uring asynchronously, as the kernel tears the dead ring
/// down after `waitpid` has returned, so the test waits for the count to
/// come down rather than expecting it gone at once), nothing stale is left
/// (`wake(u32::MAX)` then returns 0), and the parent keeps working
/// (in-process and with a new child).
#[test]
fn sigkill_of_a_peer_mid_wait_leaves_no_stale_waiter() {
    let test = "sigkill_of_a_peer_mid_wait_leaves_no_stale_waiter";
    let _serial = serial();
    let Some(kind) = start(test) else { return };
    const W: usize = 0;
    const READY: usize = 1;
    const P: usize = 2;
    let mem = shared_page();
    let mut victim = fork_child(&format!("{test} victim"), || {
        child_backend_is(kind)?;
        let f = io("futex", mem.futex(W))?;
        store_wake(word(&mem, READY), 1);
        rt_current().block_on(async {
            // Waits until killed; re-arms after a (documented) spurious
            // completion; gives up after a while so it can never linger.
            let _ = tokio::time::timeout(4 * CHILD_WATCHDOG, async {
                loop {
                    let _ = f.wait_async(0).await;
                }
            })
            .await;
        });
        fail("not killed")
    });
    wait_value(word(&mem, READY), "victim ready", |v| v == 1);
    let w = word(&mem, W);
    wait_for_waiters(w, 1, "victim's async wait queued");
    let exit = victim.kill();
    assert_eq!(exit, Exit::Signal(libc::SIGKILL));
    wait_for_waiters_to_leave(w, 0, "the killed victim's wait");

    let f = mem.futex(W).unwrap();
    let stale = f.wake(u32::MAX).unwrap();
    assert_eq!(
        stale, 0,
        "a killed and reaped process left a kernel waiter behind"
    );
    assert_eq!(kernel_waiters(w), 0);

    // The parent keeps working: an in-process async wait...
    rt_current().block_on(async {
        let waiter = async {
            wait_value_async(&f, "in-process wait after the kill", |v| v == 1).await;
        };
        let waker = async {
            wait_for_waiters_async(w, 1, "parent's wait queued").await;
            f.word().store(1, Ordering::SeqCst);
            assert_eq!(f.wake(1).unwrap(), 1);
        };
        tokio::join!(waiter, waker);
    });
    // ...and a ping-pong with a new child.
    let child = fork_child(&format!("{test} successor"), || {
        child_backend_is(kind)?;
        let f = io("futex", mem.futex(P))?;
        pingpong_child_async(&f, 200)
    });
    let fp = mem.futex(P).unwrap();
    rt_current().block_on(pingpong_parent_async(&fp, 200));
    child.expect_ok();
}

// ---------------------------------------------------------------------------
// Submitting-thread exit

/// Async waits armed (first polled) on threads that then exit — plain std
/// threads, a tokio runtime on a thread that is shut down — and an
/// `EventFdFutex` armed from a thread that exits. A child process then wakes
/// them one by one: each wake finds a kernel waiter and every wait
/// completes (a spurious completion is tolerated and counted; a lost wait is
/// not).
#[test]
fn waits_survive_the_exit_of_their_submitting_thread() {
    let test = "waits_survive_the_exit_of_their_submitting_thread";
    let _serial = serial();
    let Some(kind) = start(test) else { return };
    const W: usize = 0;
    const WOKEN: usize = 2;
    const STD_THREADS: usize = 4;
    const RT_WAITS: usize = 4;
    let mem = shared_page();
    let f = mem.futex(W).unwrap();
    let efd = EventFdFutex::new(mem.futex(W).unwrap()).unwrap();

    // (a) armed on std threads that exit.
    let mut futures: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..STD_THREADS)
            .map(|_| {
                s.spawn(|| {
                    let mut fut = f.wait_async(0);
                    let (_, waker) = counting_waker();
                    assert!(poll_once(&mut fut, &waker).is_pending());
                    fut
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // (b) armed by a current-thread runtime on a thread; runtime and thread
    // are gone before any wake.
    let from_rt: Vec<_> = std::thread::scope(|s| {
        s.spawn(|| {
            let rt = rt_current();
            let futs = rt.block_on(async {
                let mut futs = Vec::new();
                for _ in 0..RT_WAITS {
                    let mut fut = f.wait_async(0);
                    std::future::poll_fn(|cx| {
                        assert!(Pin::new(&mut fut).poll(cx).is_pending());
                        Poll::Ready(())
                    })
                    .await;
                    futs.push(fut);
                }
                futs
            });
            drop(rt);
            futs
        })
        .join()
        .unwrap()
    });
    futures.extend(from_rt);
    // (c) an EventFdFutex armed from a thread that exits.
    std::thread::scope(|s| s.spawn(|| efd.arm(0).unwrap()).join().unwrap());

    // Re-register every future with a counting waker of this thread.
    let mut spurious = 0u32;
    let mut pending = Vec::new();
    for mut fut in futures {
        let (count, waker) = counting_waker();
        match poll_once(&mut fut, &waker) {
            Poll::Ready(r) => {
                r.expect("wait_async");
                spurious += 1;
            }
            Poll::Pending => pending.push((fut, count, waker)),
        }
    }
    let efd_pending = !fd_readable(efd.as_fd(), 0);
    if !efd_pending {
        spurious += 1;
    }
    let p = pending.len() as u32 + u32::from(efd_pending);
    wait_for_waiters(
        word(&mem, W),
        p,
        "every pending wait is still a kernel waiter after its thread exited",
    );

    // A child wakes them one wake(1) at a time until the parent has seen
    // every one complete. Each wake that returns 1 was consumed by one of
    // them; none may be lost.
    const STOP: usize = 1;
    let child = fork_child(&format!("{test} waker"), || {
        child_backend_is(kind)?;
        let g = io("futex", mem.futex(W))?;
        let stop = word(&mem, STOP);
        let mut woken = 0;
        let mut idle = 0u32;
        while stop.load(Ordering::SeqCst) == 0 {
            let n = io("wake", g.wake(1))?;
            woken += n;
            if n == 0 {
                idle += 1;
                if idle < 1000 {
                    std::thread::yield_now();
                } else {
                    let _ = raw_wait(stop, 0, Some(std::time::Duration::from_micros(100)));
                }
            } else {
                idle = 0;
            }
        }
        store_wake(word(&mem, WOKEN), woken + 1);
        Ok(())
    });
    for (i, (fut, count, waker)) in pending.iter_mut().enumerate() {
        wait_until(&format!("future {i} woken"), || count.count() > 0);
        match poll_once(fut, waker) {
            Poll::Ready(r) => r.expect("wait_async"),
            Poll::Pending => panic!("future {i}: waker fired but still pending"),
        }
    }
    if efd_pending {
        assert!(
            fd_readable(efd.as_fd(), WATCHDOG.as_millis() as i32),
            "EventFdFutex armed on an exited thread never became readable"
        );
    }
    assert!(efd.ack().unwrap(), "ack after completion");
    store_wake(word(&mem, STOP), 1);
    let woken = wait_value(word(&mem, WOKEN), "waker child done", |v| v != 0) - 1;
    child.expect_ok();
    assert_eq!(f.wake(u32::MAX).unwrap(), 0);
    assert!(woken <= p, "{woken} wakes consumed by {p} waits");
    eprintln!(
        "[{test}] {p} waits pending after their threads exited: all completed, {woken} by a consumed wake; {spurious} completed spuriously before"
    );
}

/// Handles made before a fork, used in the child (the crate documents that
/// the child may use them for `wake`, blocking `wait` and new async waits):
/// the child ping-pongs with the parent through inherited handles, then
/// drops an inherited handle whose word had an async wait pending in the
/// parent (and that wait's future). Dropping must not hang. The parent's
/// wait completes afterwards.
#[test]
fn inherited_handles_work_in_child_and_drop_without_hanging() {
    let test = "inherited_handles_work_in_child_and_drop_without_hanging";
    let _serial = serial();
    let Some(kind) = start(test) else { return };
    const W: usize = 0;
    const X: usize = 1;
    const Y: usize = 2;
    let mem = shared_page();
    let f = Arc::new(mem.futex(W).unwrap());
    let fx = mem.futex(X).unwrap();
    let fy = mem.futex(Y).unwrap();
    // A wait of the parent, pending (queued in the kernel) across the fork.
    let mut pending: Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> = {
        let f = Arc::clone(&f);
        Box::pin(async move { f.wait_async(0).await })
    };
    let (count, waker) = counting_waker();
    assert!(poll_once(&mut pending, &waker).is_pending());
    wait_for_waiters(word(&mem, W), 1, "parent's wait queued");

    // The child takes them out of these slots (in its own copy of memory);
    // the parent keeps its own.
    let pending = std::sync::Mutex::new(Some(pending));
    let f = std::sync::Mutex::new(Some(f));
    let child = fork_child(test, || {
        child_backend_is(kind)?;
        // New async and blocking waits through inherited handles.
        pingpong_child_async(&fx, 300)?;
        pingpong_child_blocking(&fy, 300)?;
        // The parent's future and handle, inherited: drop both here.
        drop(pending.lock().unwrap().take());
        let started = std::time::Instant::now();
        drop(f.lock().unwrap().take()); // the last reference here: AsyncFutex::drop
        clog!("inherited handle dropped in {:?}", started.elapsed());
        Ok(())
    });
    let rt = rt_current();
    rt.block_on(pingpong_parent_async(&mem.futex(X).unwrap(), 300));
    rt.block_on(pingpong_parent_async(&mem.futex(Y).unwrap(), 300));
    let exit = child.wait();
    // The parent's wait is untouched by whatever the child did: still
    // queued, or (thread backend: the parent's own ping-pong wakes on other
    // words of the same helper) completed spuriously.
    let mut pending = pending.into_inner().unwrap().unwrap();
    // On the thread backend the wait leaves the kernel queue for a moment
    // whenever a sibling on its helper completes (the ping-pong's waits
    // just did): wait until it is back or completed, not one reading.
    wait_until("parent's wait queued again or completed", || {
        count.count() > 0 || kernel_waiters(word(&mem, W)) == 1
    });
    if count.count() == 0 {
        let g = mem.futex(W).unwrap();
        g.word().store(1, Ordering::SeqCst);
        assert_eq!(g.wake(1).unwrap(), 1);
        wait_until("parent's pending wait woken", || count.count() > 0);
    } else {
        eprintln!("[{test}] the parent's pending wait completed spuriously (S4)");
    }
    assert!(poll_once(&mut pending, &waker).is_ready());
    assert_eq!(
        exit,
        Exit::Code(0),
        "child failed or hung dropping an inherited handle"
    );
}

/// 10,000 concurrent async waits (tasks of a multi-thread runtime) on one
/// word; another process sees them all as kernel waiters and one
/// `wake(u32::MAX)` there resumes every task.
#[test]
fn ten_thousand_waits_woken_by_another_process() {
    let test = "ten_thousand_waits_woken_by_another_process";
    let _serial = serial();
    let Some(kind) = start(test) else { return };
    const TASKS: u32 = 10_000;
    const W: usize = 0;
    const GO: usize = 1;
    const REPORT: usize = 2;
    let mem = shared_page();
    let child = fork_child(test, || {
        child_backend_is(kind)?;
        let g = io("futex", mem.futex(W))?;
        try_wait_value(word(&mem, GO), "parent armed", |v| v == 1)?;
        try_wait_for_waiters(word(&mem, W), TASKS, "parent's waits")?;
        g.word().store(1, Ordering::SeqCst);
        let n = io("wake", g.wake(u32::MAX))?;
        store_wake(word(&mem, REPORT), n + 1);
        Ok(())
    });
    let f = Arc::new(mem.futex(W).unwrap());
    let rt = rt_multi(2);
    let started = std::time::Instant::now();
    let (armed_in, resumed_in) = rt.block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let f = Arc::clone(&f);
                tokio::spawn(async move {
                    while f.word().load(Ordering::SeqCst) == 0 {
                        within("task woken", f.wait_async(0)).await.unwrap();
                    }
                })
            })
            .collect();
        wait_for_waiters_async(f.word(), TASKS, "every task queued").await;
        let armed_in = started.elapsed();
        // DESIGN §3: no thread per wait.
        let (uring, waitv) = library_threads();
        eprintln!(
            "[{test}] library threads with {TASKS} waits pending: {uring} io_uring, {waitv} waitv"
        );
        match kind {
            asyncfutex::BackendKind::IoUring => assert!(uring == 1 && waitv == 0),
            _ => assert!(
                waitv as u32 <= TASKS.div_ceil(127) + 1 && uring == 0,
                "{waitv} helper threads for {TASKS} waits"
            ),
        }
        store_wake(word(&mem, GO), 1);
        for t in tasks {
            within("task resumes", t).await.unwrap();
        }
        (armed_in, started.elapsed() - armed_in)
    });
    let woken = wait_value(word(&mem, REPORT), "child report", |v| v != 0) - 1;
    child.expect_ok();
    assert_eq!(woken, TASKS, "one wake(u32::MAX) must reach every waiter");
    eprintln!(
        "[{test}] {TASKS} waits armed in {armed_in:.1?} (debug build, incl. polling), all resumed {resumed_in:.1?} later"
    );
}

/// Counts this process's library threads by name: (`afx-io_uring`,
/// `afx-waitv`).
fn library_threads() -> (usize, usize) {
    let (mut uring, mut waitv) = (0, 0);
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        match comm.trim() {
            "afx-io_uring" => uring += 1,
            "afx-waitv" => waitv += 1,
            _ => {}
        }
    }
    (uring, waitv)
}

const FUTEX_WAIT_BITSET: i32 = 9;
const FUTEX_WAKE_BITSET: i32 = 10;

/// Raw `FUTEX_WAIT_BITSET` / `FUTEX_WAKE_BITSET` (shared key) on `word`
/// with `val` and `bitset`, retrying `EINTR`: `Ok(result)` or `Err(errno)`.
/// A wait with a bitset is woken by a plain `FUTEX_WAKE` (the library's
/// forward) but not by a `FUTEX_WAKE_BITSET` whose bits it does not share.
fn futex_bitset(
    word: &std::sync::atomic::AtomicU32,
    op: i32,
    val: u32,
    bitset: u32,
) -> Result<i64, i32> {
    loop {
        // SAFETY: a live word; no timeout, no second address.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word as *const _,
                op,
                val,
                std::ptr::null::<libc::timespec>(),
                std::ptr::null::<u32>(),
                bitset,
            )
        };
        if r >= 0 {
            return Ok(r);
        }
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        if errno != libc::EINTR {
            return Err(errno);
        }
    }
}

/// Spins a varying while after a wake, so the fork that follows lands
/// before, during or after the backend's delivery.
fn land_fork(iteration: u32) {
    let spins = iteration.wrapping_mul(7919) % 40_000;
    for i in 0..spins {
        std::hint::black_box(i);
    }
}

/// A future armed in the parent, woken, and dropped in a fork child at
/// every point of its delivery: the drop returns promptly (it used to spin
/// for ever on a delivery frozen half-way by the fork) and passes no wake
/// on (a raw sentinel waiter on the word stays queued).
/// The parent's own future completes as usual.
#[test]
fn inherited_future_dropped_in_child_mid_delivery() {
    let test = "inherited_future_dropped_in_child_mid_delivery";
    let _serial = serial();
    let Some(_kind) = start(test) else { return };
    const ROUNDS: u32 = 150;
    const W: usize = 0;
    let mem = shared_page();
    let f = Arc::new(mem.futex(W).unwrap());
    for round in 0..ROUNDS {
        let w = word(&mem, W);
        w.store(0, Ordering::SeqCst);
        let mut pending: Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> = {
            let f = Arc::clone(&f);
            Box::pin(async move { f.wait_async(0).await })
        };
        let (count, waker) = counting_waker();
        assert!(poll_once(&mut pending, &waker).is_pending());
        let sentinel = {
            let mem = Arc::clone(&mem);
            std::thread::spawn(move || futex_bitset(word(&mem, W), FUTEX_WAIT_BITSET, 0, 2))
        };
        wait_for_waiters(w, 2, "parent's wait and sentinel queued");
        // A pure wake of the parent's wait alone (the sentinel's bitset does
        // not match), repeated while the wait is momentarily re-queued by its
        // helper (thread backend, vector mode).
        let deadline = std::time::Instant::now() + WATCHDOG;
        while futex_bitset(w, FUTEX_WAKE_BITSET, 1, 1) != Ok(1) {
            assert!(
                std::time::Instant::now() < deadline,
                "parent's wait never queued"
            );
            std::thread::yield_now();
        }
        land_fork(round);
        let pending = std::sync::Mutex::new(Some(pending));
        let child = fork_child(test, || {
            drop(pending.lock().unwrap().take());
            Ok(())
        });
        child.expect_ok();
        let mut pending = pending.into_inner().unwrap().unwrap();
        wait_until("parent's future woken", || count.count() > 0);
        assert!(poll_once(&mut pending, &waker).is_ready());
        assert_eq!(
            kernel_waiters(w),
            1,
            "round {round}: the child passed a wake on (the sentinel was woken)"
        );
        assert_eq!(raw_wake(w, i32::MAX), 1);
        assert_eq!(sentinel.join().unwrap(), Ok(0));
    }
    eprintln!("[{test}] {ROUNDS} forks mid-delivery: inherited futures dropped promptly, nothing forwarded");
}

/// With the parent's backend threads busy (a thread arming and completing
/// waits all along) and a parent wait pending, fork children make a new
/// handle on another word, arm it and get woken: the fork never leaves a
/// lock of the library held in the child.
#[test]
fn child_waits_while_parent_backend_is_busy() {
    let test = "child_waits_while_parent_backend_is_busy";
    let _serial = serial();
    let Some(kind) = start(test) else { return };
    const ROUNDS: u32 = 100;
    const W: usize = 0;
    const OTHER: usize = 1;
    const BUSY: usize = 2;
    const STOP: usize = 3;
    const ARMED: usize = 4;
    let mem = shared_page();
    let busy = {
        let mem = Arc::clone(&mem);
        std::thread::spawn(move || {
            let b = EventFdFutex::new(mem.futex(BUSY).unwrap()).unwrap();
            let w = word(&mem, BUSY);
            while word(&mem, STOP).load(Ordering::SeqCst) == 0 {
                let v = w.load(Ordering::SeqCst);
                b.arm(v).unwrap();
                w.store(v + 1, Ordering::SeqCst);
                let _ = b.futex().wake(1).unwrap();
                assert!(fd_readable(b.as_fd(), 10_000), "busy thread's wait lost");
                assert!(b.ack().unwrap());
            }
        })
    };
    let f = EventFdFutex::new(mem.futex(W).unwrap()).unwrap();
    f.arm(0).unwrap();
    for round in 0..ROUNDS {
        word(&mem, OTHER).store(0, Ordering::SeqCst);
        word(&mem, ARMED).store(0, Ordering::SeqCst);
        land_fork(round);
        let child = fork_child(test, || {
            child_backend_is(kind)?;
            let g = io("new handle", mem.futex(OTHER).and_then(EventFdFutex::new))?;
            io("arm", g.arm(0))?;
            store_wake(word(&mem, ARMED), 1);
            ensure!(fd_readable(g.as_fd(), 10_000), "child's wait not completed");
            ensure!(io("ack", g.ack())?, "ack after completion");
            Ok(())
        });
        wait_value(word(&mem, ARMED), "child armed", |v| v == 1);
        wait_for_waiters(word(&mem, OTHER), 1, "child's new wait queued");
        word(&mem, OTHER).store(1, Ordering::SeqCst);
        assert_eq!(raw_wake(word(&mem, OTHER), 1), 1, "round {round}");
        child.expect_ok();
    }
    store_wake(word(&mem, STOP), 1);
    busy.join().unwrap();
    // The parent's own wait is still there (or, on the thread backend, was
    // completed spuriously by the busy thread's wakes on the same helper).
    word(&mem, W).store(1, Ordering::SeqCst);
    let _ = f.futex().wake(u32::MAX).unwrap();
    assert!(fd_readable(f.as_fd(), 10_000), "parent's wait lost");
    assert!(f.ack().unwrap());
    eprintln!(
        "[{test}] {ROUNDS} children armed and were woken while the parent's backend was busy"
    );
}
