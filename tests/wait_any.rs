//! Waits on several words at once (`wait_any`, `wait_any_blocking`,
//! `EventFdFutex::arm_any`), on whichever backend `AFX_BACKEND` selects:
//! each index can complete the wait, stale values complete it at once, a
//! wake is counted exactly, a consumed wake is passed on when the wait is
//! dropped, 128 words work and 129 are `EINVAL`, and a raw `FUTEX_WAKE`
//! from another process reaches it.
//!
//! In the thread backend's per-wait mode (`AFX_THREAD_WAITV=0`) vector
//! waits are refused with `ENOSYS`; the tests check that and skip the rest
//! (saying so).
//!
//! "The wait is queued" is established by counting the kernel's waiters on
//! a word (`common::kernel_waiters`), never by sleeping.

#[macro_use]
mod common;

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use asyncfutex::{
    wait_any, wait_any_blocking, AsyncFutex, BackendKind, EventFdFutex, SharedMemory, WAIT_ANY_MAX,
};
use common::*;

/// Bound for one event (normally microseconds).
const WATCHDOG: Duration = Duration::from_secs(10);

/// Whether vector waits are refused here (the thread backend's per-wait
/// mode, forced by `AFX_THREAD_WAITV=0`).
fn per_wait_mode(kind: BackendKind) -> bool {
    kind == BackendKind::Thread
        && matches!(
            std::env::var("AFX_THREAD_WAITV").as_deref().map(str::trim),
            Ok("0" | "off" | "no" | "false")
        )
}

/// Starts a test: `None` (after saying why) if it cannot run here.
fn begin(test: &str) -> Option<BackendKind> {
    let kind = start(test)?;
    if per_wait_mode(kind) {
        eprintln!(
            "SKIP: [{test}] the thread backend's per-wait mode refuses vector waits \
             (checked by per_wait_mode_refuses_vector_waits)"
        );
        return None;
    }
    Some(kind)
}

/// `n` handles on consecutive words of one shared page, all 0.
fn handles(mem: &Arc<SharedMemory>, n: usize) -> Vec<AsyncFutex> {
    (0..n).map(|i| mem.futex(i).unwrap()).collect()
}

fn entries(futexes: &[AsyncFutex], expected: u32) -> Vec<(&AsyncFutex, u32)> {
    futexes.iter().map(|f| (f, expected)).collect()
}

/// Polls `fut` until it completes; panics after [`WATCHDOG`].
fn complete<F>(fut: &mut F, what: &str) -> F::Output
where
    F: std::future::Future + Unpin,
{
    let (_, waker) = counting_waker();
    let deadline = Instant::now() + WATCHDOG;
    loop {
        if let Poll::Ready(r) = poll_once(fut, &waker) {
            return r;
        }
        assert!(Instant::now() < deadline, "{what}: never completed");
        std::thread::yield_now();
    }
}

/// Waits until no kernel waiter is left on any of `futexes`' words.
fn wait_all_left(futexes: &[AsyncFutex], what: &str) {
    for (k, f) in futexes.iter().enumerate() {
        wait_for_waiters_to_leave(f.word(), 0, &format!("{what}: word {k}"));
    }
}

/// In per-wait mode every vector wait fails with `ENOSYS`: async, through
/// an eventfd, and (where the kernel has it) not the blocking form, which
/// needs no backend.
#[test]
fn per_wait_mode_refuses_vector_waits() {
    let test = "per_wait_mode_refuses_vector_waits";
    let _serial = serial();
    let Some(kind) = start(test) else { return };
    if !per_wait_mode(kind) {
        eprintln!("SKIP: [{test}] only meaningful with AFX_BACKEND=thread AFX_THREAD_WAITV=0");
        return;
    }
    let mem = shared_page();
    let fs = handles(&mem, 2);
    let mut fut = wait_any(&entries(&fs, 0));
    let err = complete(&mut fut, "per-wait vector wait").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSYS), "{err}");
    let efd = EventFdFutex::new(mem.futex(8).unwrap()).unwrap();
    efd.arm_any(&entries(&fs, 0)).unwrap();
    assert!(fd_readable(efd.as_fd(), 10_000), "eventfd never readable");
    let err = efd.ack_index().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSYS), "{err}");
    assert_eq!(
        wait_any_blocking(&entries(&fs, 0), Some(Duration::ZERO)).unwrap(),
        None
    );
}

/// A wake on word `k` of eight completes the wait with index `k`: with the
/// word changed first and with a pure wake (word unchanged); `wake` counts
/// exactly one waiter, and afterwards no entry is left in the kernel.
#[test]
fn each_index_completes_the_wait() {
    let test = "each_index_completes_the_wait";
    let _serial = serial();
    if begin(test).is_none() {
        return;
    }
    let mem = shared_page();
    let fs = handles(&mem, 8);
    for pure in [false, true] {
        for k in 0..fs.len() {
            fs.iter().for_each(|f| f.word().store(0, Ordering::SeqCst));
            let list = entries(&fs, 0);
            let mut fut = wait_any(&list);
            let (_, waker) = counting_waker();
            assert!(poll_once(&mut fut, &waker).is_pending());
            for f in &fs {
                wait_for_waiters(f.word(), 1, &format!("entry queued (k={k})"));
            }
            if !pure {
                fs[k].word().store(1, Ordering::SeqCst);
            }
            assert_eq!(
                fs[k].wake(u32::MAX).unwrap(),
                1,
                "wake(all) on word {k} (pure={pure}) must count exactly the one vector wait"
            );
            let index = complete(&mut fut, "vector wait").unwrap();
            assert_eq!(index, k, "pure={pure}: completed by the wrong index");
            drop(fut);
            wait_all_left(&fs, "after completion");
            for (j, f) in fs.iter().enumerate() {
                assert_eq!(f.wake(u32::MAX).unwrap(), 0, "word {j} still had a waiter");
            }
        }
    }
}

/// A stale expected value on any word completes the wait at once with
/// that word's index: the future (first poll, no kernel wait), the blocking
/// form, and `EventFdFutex::arm_any` (eventfd readable, `ack_index`).
#[test]
fn stale_expected_on_any_word_completes_at_once() {
    let test = "stale_expected_on_any_word_completes_at_once";
    let _serial = serial();
    if begin(test).is_none() {
        return;
    }
    let mem = shared_page();
    let fs = handles(&mem, 8);
    let efd = EventFdFutex::new(mem.futex(64).unwrap()).unwrap();
    for k in 0..fs.len() {
        fs.iter().for_each(|f| f.word().store(0, Ordering::SeqCst));
        fs[k].word().store(5, Ordering::SeqCst);
        let list = entries(&fs, 0);
        let (_, waker) = counting_waker();
        let mut fut = wait_any(&list);
        match poll_once(&mut fut, &waker) {
            Poll::Ready(r) => assert_eq!(r.unwrap(), k),
            Poll::Pending => panic!("stale word {k}: the future did not complete at once"),
        }
        assert_eq!(
            kernel_waiters(fs[0].word()),
            0,
            "a stale wait queued a waiter"
        );
        let blocking = wait_any_blocking(&list, None).unwrap();
        assert_eq!(blocking, Some(k));
        efd.arm_any(&list).unwrap();
        assert!(fd_readable(efd.as_fd(), 0), "eventfd not readable at once");
        assert_eq!(efd.ack_index().unwrap(), Some(k));
        assert!(
            !fd_readable(efd.as_fd(), 0),
            "eventfd not drained by the ack"
        );
    }
}

/// `EventFdFutex::arm_any`: a wake on one word makes the eventfd readable
/// and `ack_index` reports the word; `ack` (without the index) works too;
/// arming twice is `EBUSY`; `cancel` disarms.
#[test]
fn eventfd_vector_protocol() {
    let test = "eventfd_vector_protocol";
    let _serial = serial();
    if begin(test).is_none() {
        return;
    }
    let mem = shared_page();
    let fs = handles(&mem, 4);
    let efd = EventFdFutex::new(mem.futex(64).unwrap()).unwrap();
    let list = entries(&fs, 0);
    for k in [3, 0, 2] {
        efd.arm_any(&list).unwrap();
        let busy = efd.arm_any(&list).unwrap_err();
        assert_eq!(busy.raw_os_error(), Some(libc::EBUSY));
        wait_for_waiters(fs[k].word(), 1, "armed");
        assert_eq!(efd.ack_index().unwrap(), None, "pending before any wake");
        assert_eq!(fs[k].wake(1).unwrap(), 1);
        assert!(fd_readable(efd.as_fd(), 10_000), "eventfd never readable");
        assert_eq!(efd.ack_index().unwrap(), Some(k));
        wait_all_left(&fs, "after the ack");
    }
    efd.arm_any(&list).unwrap();
    wait_for_waiters(fs[1].word(), 1, "armed");
    fs[1].word().store(9, Ordering::SeqCst);
    fs[1].wake(1).unwrap();
    assert!(fd_readable(efd.as_fd(), 10_000), "eventfd never readable");
    assert!(efd.ack().unwrap(), "ack() of a completed vector wait");
    fs[1].word().store(0, Ordering::SeqCst);
    efd.arm_any(&list).unwrap();
    wait_for_waiters(fs[3].word(), 1, "armed");
    efd.cancel();
    wait_all_left(&fs, "after cancel");
    assert!(!efd.is_armed());
}

/// A vector wait that consumed a wake on word `k` and is then dropped
/// without being looked at passes the wake on: a plain waiter queued on
/// word `k` behind it is woken (no lost wake). Which of the two a
/// `wake(1)` reaches first is the kernel's choice, so rounds in which the
/// plain waiter got it directly prove nothing and are counted apart.
#[test]
fn dropped_vector_wait_forwards_a_consumed_wake() {
    let test = "dropped_vector_wait_forwards_a_consumed_wake";
    let _serial = serial();
    if begin(test).is_none() {
        return;
    }
    let mem = shared_page();
    let fs = handles(&mem, 3);
    let (mut forwarded, mut direct) = (0, 0);
    for round in 0..60 {
        let k = round % fs.len();
        let list = entries(&fs, 0);
        let (counter, waker) = counting_waker();
        let mut fut = Some(wait_any(&list));
        assert!(poll_once(fut.as_mut().unwrap(), &waker).is_pending());
        wait_for_waiters(fs[k].word(), 1, "vector wait queued");
        let word = fs[k].word();
        std::thread::scope(|s| {
            let plain = s.spawn(|| raw_wait(word, 0, Some(WATCHDOG)));
            wait_for_waiters(word, 2, "plain waiter queued behind it");
            assert_eq!(raw_wake(word, 1), 1);
            let deadline = Instant::now() + WATCHDOG;
            while counter.count() == 0 && !plain.is_finished() {
                assert!(
                    Instant::now() < deadline,
                    "round {round}: the wake reached nobody"
                );
                std::thread::yield_now();
            }
            if counter.count() > 0 {
                // The vector wait consumed it: drop it unobserved.
                drop(fut.take());
                let woke = plain.join().unwrap();
                assert_eq!(
                    woke,
                    Ok(()),
                    "round {round}: LOST WAKE on word {k}: the dropped vector wait had \
                     consumed it and the plain waiter timed out"
                );
                forwarded += 1;
            } else {
                direct += 1;
                assert_eq!(plain.join().unwrap(), Ok(()));
                drop(fut.take());
            }
        });
        wait_all_left(&fs, "end of round");
    }
    eprintln!("[{test}] 60 rounds: {forwarded} forwarded by a dropped wait, {direct} direct");
    assert!(forwarded > 0, "the vector wait never got the wake first");
}

/// 128 words (the kernel's limit; the thread backend serves them with two
/// helpers) work, each end can complete the wait; 129 words and none are
/// `EINVAL` for every form.
#[test]
fn one_hundred_twenty_eight_words_and_no_more() {
    let test = "one_hundred_twenty_eight_words_and_no_more";
    let _serial = serial();
    if begin(test).is_none() {
        return;
    }
    assert_eq!(WAIT_ANY_MAX, 128);
    let mem = shared_page();
    let fs = handles(&mem, 129);
    let max = &fs[..128];
    for k in [0, 1, 64, 126, 127] {
        let list = entries(max, 0);
        let mut fut = wait_any(&list);
        let (_, waker) = counting_waker();
        assert!(poll_once(&mut fut, &waker).is_pending());
        wait_for_waiters(max[k].word(), 1, "128-word wait queued");
        assert_eq!(max[k].wake(u32::MAX).unwrap(), 1, "wake on word {k}");
        assert_eq!(complete(&mut fut, "128-word wait").unwrap(), k);
        drop(fut);
        wait_all_left(max, "after a 128-word wait");
    }
    let efd = EventFdFutex::new(mem.futex(200).unwrap()).unwrap();
    let list = entries(max, 0);
    efd.arm_any(&list).unwrap();
    wait_for_waiters(max[127].word(), 1, "armed on 128 words");
    max[127].wake(1).unwrap();
    assert!(fd_readable(efd.as_fd(), 10_000));
    assert_eq!(efd.ack_index().unwrap(), Some(127));

    let too_many = entries(&fs, 0);
    let einval = |r: io::Result<()>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{what}: {e}");
    };
    let mut fut = wait_any(&too_many);
    einval(complete(&mut fut, "129").map(drop), "wait_any on 129 words");
    einval(
        wait_any_blocking(&too_many, None).map(drop),
        "blocking on 129",
    );
    einval(efd.arm_any(&too_many), "arm_any on 129");
    let mut fut = wait_any(&[]);
    einval(complete(&mut fut, "0").map(drop), "wait_any on no words");
    einval(wait_any_blocking(&[], None).map(drop), "blocking on none");
    einval(efd.arm_any(&[]), "arm_any on none");
    assert!(!efd.is_armed());
}

/// A process that knows nothing of this library — a forked child using
/// raw `FUTEX_WAKE` — wakes a vector wait (async, eventfd and blocking)
/// on a word of shared memory; and a vector wait's words stay ordinary
/// futex words: our `wake` counts a raw `FUTEX_WAIT` sleeper on them.
#[test]
fn raw_futex_wake_peer_interop() {
    let test = "raw_futex_wake_peer_interop";
    let _serial = serial();
    if begin(test).is_none() {
        return;
    }
    let mem = shared_page();
    let fs = handles(&mem, 4);
    let go = word(&mem, 100);
    let list = entries(&fs, 0);
    let rt = rt_current();
    for k in [2, 0] {
        let child = fork_child("raw waker", || {
            wait_value(go, "go", |v| v == 1);
            let target = word(&mem, k);
            wait_for_waiters(target, 1, "parent's vector wait queued");
            target.store(7, Ordering::SeqCst);
            if raw_wake(target, 1) != 1 {
                return fail("raw FUTEX_WAKE found no waiter");
            }
            Ok(())
        });
        store_wake(go, 1);
        let index = rt.block_on(wait_any(&list)).unwrap();
        child.expect_ok();
        assert_eq!(index, k);
        fs[k].word().store(0, Ordering::SeqCst);
        go.store(0, Ordering::SeqCst);
    }
    // Blocking form, woken by a raw FUTEX_WAKE from another process.
    let child = fork_child("raw waker, blocking", || {
        wait_for_waiters(word(&mem, 3), 1, "parent's blocking vector wait queued");
        store_wake(word(&mem, 3), 3);
        Ok(())
    });
    assert_eq!(wait_any_blocking(&list, Some(WATCHDOG)).unwrap(), Some(3));
    child.expect_ok();
    fs[3].word().store(0, Ordering::SeqCst);
    // And the other way: our wake counts a raw sleeper on a word a vector
    // wait also names.
    let efd = EventFdFutex::new(mem.futex(64).unwrap()).unwrap();
    efd.arm_any(&list).unwrap();
    std::thread::scope(|s| {
        let w = fs[1].word();
        let plain = s.spawn(|| raw_wait(w, 0, Some(WATCHDOG)));
        wait_for_waiters(w, 2, "vector wait and raw sleeper");
        w.store(1, Ordering::SeqCst);
        assert_eq!(fs[1].wake(u32::MAX).unwrap(), 2);
        assert_eq!(plain.join().unwrap(), Ok(()));
    });
    assert!(fd_readable(efd.as_fd(), 10_000));
    assert_eq!(efd.ack_index().unwrap(), Some(1));
}

/// The blocking form: a timeout with nothing woken is `None` and leaves no
/// waiter; a wake from another thread completes it with the index.
#[test]
fn blocking_wait_any_timeout_and_wake() {
    let test = "blocking_wait_any_timeout_and_wake";
    let _serial = serial();
    if begin(test).is_none() {
        return;
    }
    let mem = shared_page();
    let fs = handles(&mem, 3);
    let list = entries(&fs, 0);
    let t = Instant::now();
    assert_eq!(
        wait_any_blocking(&list, Some(Duration::from_millis(20))).unwrap(),
        None
    );
    assert!(t.elapsed() >= Duration::from_millis(20));
    assert_eq!(
        wait_any_blocking(&list, Some(Duration::ZERO)).unwrap(),
        None
    );
    wait_all_left(&fs, "after timeouts");
    std::thread::scope(|s| {
        let w = fs[2].word();
        s.spawn(|| {
            wait_for_waiters(w, 1, "blocking vector wait queued");
            store_wake(w, 4);
        });
        assert_eq!(wait_any_blocking(&list, Some(WATCHDOG)).unwrap(), Some(2));
    });
}

/// Many tasks each waiting on all of eight words of a tokio multi-thread
/// runtime, with eight producer threads storing and waking: every task
/// sees every final value (no lost wake under contention), on a mix of
/// shared and private words.
#[test]
fn many_vector_waiters_and_producers() {
    let test = "many_vector_waiters_and_producers";
    let _serial = serial();
    if begin(test).is_none() {
        return;
    }
    const WORDS: usize = 8;
    const ROUNDS: u32 = 200;
    const TASKS: usize = 6;
    let mem = shared_page();
    let fs: Arc<Vec<AsyncFutex>> = Arc::new(handles(&mem, WORDS));
    let rt = rt_multi(2);
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let fs = Arc::clone(&fs);
            rt.spawn(async move {
                loop {
                    let seen: Vec<u32> =
                        fs.iter().map(|f| f.word().load(Ordering::SeqCst)).collect();
                    if seen.iter().all(|&v| v == ROUNDS) {
                        return Ok::<(), io::Error>(());
                    }
                    let list: Vec<(&AsyncFutex, u32)> = fs.iter().zip(seen).collect();
                    wait_any(&list).await?;
                }
            })
        })
        .collect();
    std::thread::scope(|s| {
        for f in fs.iter() {
            s.spawn(move || {
                for v in 1..=ROUNDS {
                    f.word().store(v, Ordering::SeqCst);
                    f.wake(u32::MAX).unwrap();
                    if v % 16 == 0 {
                        std::thread::yield_now();
                    }
                }
            });
        }
    });
    let deadline = Instant::now() + WATCHDOG;
    rt.block_on(async {
        for t in tasks {
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::timeout(left, t)
                .await
                .expect("LOST WAKE: a vector waiter never saw the final values")
                .unwrap()
                .unwrap();
        }
    });
    wait_all_left(&fs, "after the run");
}

/// A word may appear more than once, and words of private scope mix with
/// shared ones.
#[test]
fn duplicate_and_private_words() {
    let test = "duplicate_and_private_words";
    let _serial = serial();
    if begin(test).is_none() {
        return;
    }
    static PRIVATE: AtomicU32 = AtomicU32::new(0);
    let private = AsyncFutex::from_static(&PRIVATE, asyncfutex::Scope::Private).unwrap();
    let mem = shared_page();
    let shared = mem.futex(0).unwrap();
    let list = [(&shared, 0), (&private, 0), (&shared, 0)];
    let rt = rt_current();
    std::thread::scope(|s| {
        s.spawn(|| {
            let deadline = Instant::now() + WATCHDOG;
            while private.wake(1).unwrap() == 0 {
                assert!(Instant::now() < deadline, "the private entry never queued");
                std::thread::yield_now();
            }
        });
        assert_eq!(rt.block_on(wait_any(&list)).unwrap(), 1);
    });
    std::thread::scope(|s| {
        s.spawn(|| {
            wait_for_waiters(shared.word(), 2, "both shared entries queued");
            assert!(
                shared.wake(u32::MAX).unwrap() >= 1,
                "one wait, two entries on the word"
            );
        });
        let index = rt.block_on(wait_any(&list)).unwrap();
        assert!(index == 0 || index == 2, "index {index}");
    });
}

/// A vector wait pending in the parent at `fork`: the child's copy of the
/// future completes spuriously there without touching it (nothing in the
/// child serves it), the child's own vector waits work, and the parent's
/// wait still gets its wake.
#[test]
fn fork_with_a_vector_wait_pending() {
    let test = "fork_with_a_vector_wait_pending";
    let _serial = serial();
    if begin(test).is_none() {
        return;
    }
    let mem = shared_page();
    let fs = handles(&mem, 4);
    let list = entries(&fs, 0);
    let mut fut = wait_any(&list);
    let (_, waker) = counting_waker();
    assert!(poll_once(&mut fut, &waker).is_pending());
    wait_for_waiters(fs[3].word(), 1, "parent's vector wait queued");
    let inherited = &mut fut;
    let child = fork_child(test, move || {
        // The inherited future: spurious completion, the parent's kernel
        // wait untouched.
        let (_, waker) = counting_waker();
        match poll_once(inherited, &waker) {
            Poll::Ready(Ok(_)) => {}
            other => return fail(format!("inherited vector future: {other:?}")),
        }
        try_wait_for_waiters(word(&mem, 3), 1, "parent's wait still queued")?;
        // A vector wait of the child's own, on other words.
        let own: Vec<AsyncFutex> = (8..10).map(|i| mem.futex(i).unwrap()).collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        std::thread::scope(|s| {
            s.spawn(|| {
                wait_for_waiters(word(&mem, 9), 1, "child's vector wait queued");
                store_wake(word(&mem, 9), 1);
            });
            match rt.block_on(wait_any(&[(&own[0], 0), (&own[1], 0)])) {
                Ok(1) => Ok(()),
                other => fail(format!("child's own vector wait: {other:?}")),
            }
        })
    });
    child.expect_ok();
    assert_eq!(
        fs[3].wake(1).unwrap(),
        1,
        "the parent's wait left the kernel"
    );
    assert_eq!(complete(&mut fut, "parent's vector wait").unwrap(), 3);
}
