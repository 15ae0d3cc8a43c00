//! Event broadcast: one publisher process, several subscriber processes,
//! over [`asyncfutex::sync::EventCount`].
//!
//! `cargo run --example broadcast -- [subscribers] [events]`
//! (default 4 subscribers, 2000 events)
//!
//! The publisher calls `publish()`, which bumps a sequence number and wakes
//! every waiter — making a `FUTEX_WAKE` only when a subscriber has flagged
//! that it sleeps. Each subscriber awaits `wait_for_change(last_seen)`: it
//! sleeps only while the sequence still equals `last_seen`, so an event
//! published between its read and its wait is never missed. Subscribers
//! announce they listen through a [`Semaphore`](asyncfutex::sync::Semaphore)
//! (each releases one permit; the publisher acquires one per subscriber).
//!
//! An event count is a level, not a queue: a subscriber that wakes up reads
//! the *newest* sequence, so several events published while it was busy or
//! waking up are seen as one step (they coalesce). That is the right model
//! for "something changed, look at the state"; a subscriber that needs
//! every event needs a queue (see producer_consumer.rs).
//!
//! Checks: every subscriber sees the final value, and values only go up.

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use asyncfutex::sync::{self, EventCount, Semaphore};
use asyncfutex::SharedMemory;

/// Byte offsets: the event state, the readiness semaphore, and per
/// subscriber k: values observed (`RESULTS + 8k`), last value seen
/// (`RESULTS + 8k + 4`).
const EVENT: usize = 0;
const READY: usize = 64;
const RESULTS: usize = 128;
const MAX_SUBSCRIBERS: u32 = 64;
/// Events are published in bursts of this many, with a short pause between.
const BURST: u32 = 100;

/// A subscriber that hears nothing for this long has missed an event.
const WATCHDOG: Duration = Duration::from_secs(10);

fn fail(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn word(mem: &SharedMemory, offset: usize) -> &AtomicU32 {
    mem.word(offset / 4).expect("in bounds")
}

/// One subscriber process: follows the sequence until it reaches `events`.
async fn subscribe(mem: &Arc<SharedMemory>, k: usize, events: u32) -> io::Result<()> {
    let event = EventCount::open(mem, EVENT)?;
    let ready = Semaphore::open(mem, READY)?;
    let mut last_seen = event.seq();
    let mut observed = 0u32;
    ready.release(1)?; // tell the publisher we are listening
    while last_seen != events {
        let now = tokio::time::timeout(WATCHDOG, event.wait_for_change(last_seen))
            .await
            .map_err(|_| fail(format!("subscriber: nothing within {WATCHDOG:?}")))??;
        if now < last_seen {
            return Err(fail(format!("sequence went back: {last_seen} -> {now}")));
        }
        observed += 1; // `now - last_seen` events arrived as one step
        last_seen = now;
        word(mem, RESULTS + 8 * k).store(observed, Ordering::Relaxed);
        word(mem, RESULTS + 8 * k + 4).store(last_seen, Ordering::Release);
    }
    Ok(())
}

fn run(subscribers: u32, events: u32) -> io::Result<()> {
    let mem = Arc::new(SharedMemory::anonymous(4096)?);
    let event = EventCount::create(&mem, EVENT)?;
    let ready = Semaphore::create(&mem, READY, 0)?;
    println!(
        "broadcast: 1 publisher, {subscribers} subscriber processes, {events} events \
         in bursts of {BURST} over a sync::EventCount (backend {})",
        asyncfutex::backend()?
    );
    let mut children = Vec::new();
    for k in 0..subscribers as usize {
        let _ = io::stdout().flush();
        // SAFETY: the child runs its subscriber and then `_exit`s.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: alarm(2) has no memory-safety preconditions.
            unsafe { libc::alarm(30) };
            let code = match runtime().and_then(|rt| rt.block_on(subscribe(&mem, k, events))) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("subscriber {k}: {e}");
                    1
                }
            };
            // SAFETY: leave the child without running the parent's exit path.
            unsafe { libc::_exit(code) };
        }
        children.push(pid);
    }

    // The publisher (this process).
    let start = Instant::now();
    let published = runtime()?.block_on(async {
        // Publish only once everyone listens, so the run shows coalescing
        // rather than late starters.
        for _ in 0..subscribers {
            tokio::time::timeout(WATCHDOG, ready.acquire())
                .await
                .map_err(|_| fail("publisher: subscribers did not start"))??;
        }
        let before = sync::futex_calls();
        for i in 1..=events {
            event.publish()?;
            if i % BURST == 0 || i + 1 == events {
                // A pause between bursts: the subscribers catch up and fall
                // asleep again. The final event comes alone after a pause:
                // it must wake them.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        Ok::<_, io::Error>(sync::futex_calls() - before)
    });
    let elapsed = start.elapsed();
    let mut failed = Vec::new();
    for (k, pid) in children.into_iter().enumerate() {
        let mut status = 0;
        // SAFETY: reaps our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            failed.push(k);
        }
    }
    let wakes = published?;
    println!(
        "  publisher: {events} events in {:.1} ms; only {wakes} of them found a subscriber \
         asleep and made a FUTEX_WAKE",
        elapsed.as_secs_f64() * 1e3
    );
    let mut missed = 0;
    for k in 0..subscribers as usize {
        let observed = word(&mem, RESULTS + 8 * k).load(Ordering::Relaxed);
        let last = word(&mem, RESULTS + 8 * k + 4).load(Ordering::Acquire);
        let verdict = if failed.contains(&k) {
            missed += 1;
            "FAILED (its error is above)"
        } else if last != events {
            missed += 1;
            "MISSED the final event"
        } else {
            "ok"
        };
        println!(
            "  subscriber {k}: final value {last}, saw {observed} distinct values \
             (the other {} coalesced) — {verdict}",
            events.saturating_sub(observed)
        );
    }
    if missed > 0 {
        return Err(fail(format!(
            "{missed} subscriber(s) did not see the final event"
        )));
    }
    println!("OK: every subscriber saw the final event");
    Ok(())
}

fn main() -> ExitCode {
    // A last resort against a hang outside the async watchdogs.
    // SAFETY: alarm(2) has no memory-safety preconditions.
    unsafe { libc::alarm(30) };
    let arg = |n: usize, default: u32| match std::env::args().nth(n) {
        None => Some(default),
        Some(a) => a.parse::<u32>().ok().filter(|v| *v > 0),
    };
    let (Some(subscribers), Some(events)) = (arg(1, 4), arg(2, 2000)) else {
        eprintln!("usage: broadcast [subscribers 1..={MAX_SUBSCRIBERS}] [events > 0]");
        return ExitCode::from(2);
    };
    if subscribers > MAX_SUBSCRIBERS {
        eprintln!("usage: broadcast [subscribers 1..={MAX_SUBSCRIBERS}] [events > 0]");
        return ExitCode::from(2);
    }
    match run(subscribers, events) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
