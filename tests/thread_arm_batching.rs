//! The thread backend's cheap arming (`src/backend/thread/waitv.rs`): an
//! arm kicks its helper with a `FUTEX_WAKE` only when the helper sleeps;
//! an awake helper must still notice every arm before it sleeps. A kick
//! lost in the helper's window between its snapshot and its sleep leaves
//! the new wait out of the kernel for good: a later wake finds nobody and
//! the wait never completes. These tests run that window many times and
//! fail (watchdog) on a lost kick.
//!
//! With the io_uring backend they run too (they hold for any backend), but
//! they are aimed at `AFX_BACKEND=thread` (vector and per-wait mode).

#[macro_use]
mod common;

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use asyncfutex::{EventFdFutex, SharedMemory};
use common::*;

/// Poll timeout for one expected completion. A lost kick never completes;
/// a sound one takes microseconds. Generous for a loaded 2-CPU machine,
/// and below the 5 s after which an idle per-wait helper wakes by itself
/// (a lost wake of it would otherwise heal before the watchdog).
const COMPLETION_MS: i32 = 2_000;

/// Busy-polls the handle's eventfd (so the consumer reacts within about a
/// microsecond, while the helper that delivered is still on its way back
/// to sleep), up to [`COMPLETION_MS`].
fn ready_soon(handle: &EventFdFutex) -> bool {
    let deadline = Instant::now() + std::time::Duration::from_millis(COMPLETION_MS as u64);
    while Instant::now() < deadline {
        if fd_readable(handle.as_fd(), 0) {
            return true;
        }
        std::hint::spin_loop();
    }
    false
}

/// The consumer re-arms soon after each completion (after a varying
/// pause), while the helper that delivered it is on its way back to sleep
/// (finishing, yielding, snapshotting); a peer thread then changes the word
/// and wakes. Every round must complete.
#[test]
fn rearm_while_helper_is_awake_never_loses_the_arm() {
    let _serial = serial();
    if start("rearm_while_helper_is_awake_never_loses_the_arm").is_none() {
        return;
    }
    const ROUNDS: u32 = 50_000;
    let mem = Arc::new(SharedMemory::anonymous(4096).expect("shared memory"));
    let handle = EventFdFutex::new(mem.futex(0).expect("futex")).expect("handle");
    let word: &AtomicU32 = mem.word(0).expect("word");
    // The peer's go signal: the round it may complete.
    let go = Arc::new(AtomicU32::new(0));
    let peer = {
        let go = Arc::clone(&go);
        let mem = Arc::clone(&mem);
        std::thread::spawn(move || {
            let word = mem.word(0).expect("word");
            for round in 1..=ROUNDS {
                loop {
                    let seen = go.load(Ordering::Acquire);
                    if seen >= round {
                        break;
                    }
                    let _ = raw_wait(&go, seen, Some(WATCHDOG));
                }
                word.store(round, Ordering::Release);
                raw_wake(word, 1);
            }
        })
    };
    let started = Instant::now();
    let mut rng = 0x9E37_79B9_7F4A_7C15_u64;
    for round in 1..=ROUNDS {
        let expected = round - 1;
        assert_eq!(word.load(Ordering::Acquire), expected);
        // A varying pause, so the arm lands at every point of the helper's
        // way back to sleep (finishing, yielding, snapshot, sleep).
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        for _ in 0..rng % 512 {
            std::hint::spin_loop();
        }
        handle.arm(expected).expect("arm");
        go.store(round, Ordering::Release);
        raw_wake(&go, 1);
        let ready = ready_soon(&handle);
        assert!(
            ready,
            "round {round}: the armed wait did not complete {COMPLETION_MS} ms after the word \
             changed and was woken (word = {}): a lost arm",
            word.load(Ordering::Acquire)
        );
        // Completions may be spurious (S4): re-arm until the word moved.
        assert!(
            handle.ack().expect("ack"),
            "round {round}: readable but not done"
        );
        while word.load(Ordering::Acquire) == expected {
            handle.arm(expected).expect("re-arm");
            assert!(
                fd_readable(handle.as_fd(), COMPLETION_MS),
                "round {round}: re-armed wait stalled"
            );
            assert!(handle.ack().expect("ack"));
        }
    }
    peer.join().expect("peer");
    eprintln!(
        "{ROUNDS} rounds in {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
}

/// Bursts of arms land on a helper while it is busy with the previous
/// burst (coalesced kicks: one wake, or none, for many arms). Every wait
/// of every burst must then be woken by a change of its word.
#[test]
fn burst_of_arms_all_complete() {
    let _serial = serial();
    if start("burst_of_arms_all_complete").is_none() {
        return;
    }
    const WAITS: usize = 200;
    const BURSTS: u32 = 100;
    let mem = Arc::new(SharedMemory::anonymous(WAITS * 64).expect("shared memory"));
    let handles: Vec<EventFdFutex> = (0..WAITS)
        .map(|i| EventFdFutex::new(mem.futex(i * 16).expect("futex")).expect("handle"))
        .collect();
    for burst in 0..BURSTS {
        for h in &handles {
            h.arm(burst).expect("arm");
        }
        for (i, h) in handles.iter().enumerate() {
            let word = mem.word(i * 16).expect("word");
            word.store(burst + 1, Ordering::Release);
            h.futex().wake(1).expect("wake");
        }
        for (i, h) in handles.iter().enumerate() {
            assert!(
                fd_readable(h.as_fd(), COMPLETION_MS),
                "burst {burst}, wait {i}: not completed after its word changed"
            );
            assert!(h.ack().expect("ack"));
        }
    }
}
