//! Event broadcast: one publisher process, several subscriber processes.
//!
//! `cargo run --example broadcast -- [subscribers] [events]`
//! (default 4 subscribers, 2000 events)
//!
//! The publisher bumps an event counter (`fetch_add(1)`) and wakes every
//! waiter (`wake(u32::MAX)`). Each subscriber remembers the last value it
//! handled and awaits `wait_async(last_seen)`: it sleeps only while the
//! counter still equals `last_seen`, so an event published between its
//! read and its wait is never missed.
//!
//! A futex word is a level, not a queue: a subscriber that wakes up reads
//! the *newest* counter, so several events published while it was busy or
//! waking up are seen as one step (they coalesce). That is the right model
//! for "something changed, look at the state"; a subscriber that needs every
//! event needs a queue (see producer_consumer.rs).
//!
//! Checks: every subscriber sees the final value, and values only go up.

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use asyncfutex::{AsyncFutex, SharedMemory};

/// Word indices: the event counter, the number of subscribers ready, and
/// per subscriber k: values observed (`RESULTS + 2k`), last value seen
/// (`RESULTS + 2k + 1`).
const COUNTER: usize = 0;
const READY: usize = 16;
const RESULTS: usize = 32;
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

/// Awaits a wake or a change from `expected`, with the watchdog.
async fn wait(futex: &AsyncFutex, expected: u32, what: &str) -> io::Result<()> {
    tokio::time::timeout(WATCHDOG, futex.wait_async(expected))
        .await
        .map_err(|_| fail(format!("{what}: nothing within {WATCHDOG:?}")))?
}

/// One subscriber process: follows the counter until it reaches `events`.
async fn subscribe(mem: &Arc<SharedMemory>, k: usize, events: u32) -> io::Result<()> {
    let counter = mem.futex(COUNTER)?;
    let ready = mem.futex(READY)?;
    let mut last_seen = counter.word().load(Ordering::Acquire);
    let mut observed = 0u32;
    let slot = |i| mem.word(RESULTS + 2 * k + i).expect("in bounds");
    // Tell the publisher we are listening.
    ready.word().fetch_add(1, Ordering::Release);
    ready.wake(1)?;
    while last_seen != events {
        wait(&counter, last_seen, "subscriber").await?;
        let now = counter.word().load(Ordering::Acquire);
        if now == last_seen {
            continue; // a spurious completion: nothing new
        }
        if now < last_seen {
            return Err(fail(format!("counter went back: {last_seen} -> {now}")));
        }
        observed += 1; // `now - last_seen` events arrived as one step
        last_seen = now;
        // Leave the progress where the publisher can report it.
        slot(0).store(observed, Ordering::Relaxed);
        slot(1).store(last_seen, Ordering::Release);
    }
    Ok(())
}

fn run(subscribers: u32, events: u32) -> io::Result<()> {
    let mem = Arc::new(SharedMemory::anonymous(4096)?);
    println!(
        "broadcast: 1 publisher, {subscribers} subscriber processes, {events} events \
         in bursts of {BURST} (backend {})",
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
    let counter = mem.futex(COUNTER)?;
    let ready = mem.futex(READY)?;
    let start = Instant::now();
    let published = runtime()?.block_on(async {
        // Publish only once everyone listens, so the run shows coalescing
        // rather than late starters.
        loop {
            let n = ready.word().load(Ordering::Acquire);
            if n == subscribers {
                break;
            }
            wait(&ready, n, "publisher waiting for subscribers").await?;
        }
        let mut woken = 0u64;
        for i in 1..=events {
            counter.word().fetch_add(1, Ordering::Release); // publish,
            woken += u64::from(counter.wake(u32::MAX)?); // then wake everyone
            if i % BURST == 0 || i + 1 == events {
                // A pause between bursts: the subscribers catch up and fall
                // asleep again, as between real-world bursts of events. The
                // final event comes alone after a pause: it must wake them.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        Ok::<_, io::Error>(woken)
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
    let woken = published?;
    println!(
        "  publisher: {events} events in {:.1} ms; its wake(u32::MAX) calls woke {woken} \
         sleeping subscribers in all",
        elapsed.as_secs_f64() * 1e3
    );
    let mut missed = 0;
    for k in 0..subscribers as usize {
        let word = |i| mem.word(RESULTS + 2 * k + i).expect("in bounds");
        let (observed, last) = (
            word(0).load(Ordering::Relaxed),
            word(1).load(Ordering::Acquire),
        );
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
    println!(
        "  (coalescing is expected: a subscriber reads the newest counter when it wakes, \
         so events published while it was waking up count as one step)"
    );
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
