//! One consumer serving eight producer processes with a single vector wait:
//! [`asyncfutex::wait_any`] over the eight rings' counters.
//!
//! `cargo run --example wait_any_queues -- [items per producer]`
//! (default 20000)
//!
//! Eight producer processes (forked) each own a small ring of `CAP` slots
//! in one `MAP_SHARED` region, with two counters, each a futex word:
//! `head` (items published, written only by the producer) and `tail`
//! (items taken, written only by the consumer). A producer writes the slot,
//! stores `head + 1` and then wakes `head` (store first, then wake). When
//! its ring is full it sleeps on `tail` (a blocking wait with the value it
//! saw), which the consumer wakes after each drain: nobody spins.
//!
//! The consumer (this process, a tokio current-thread runtime) loops:
//! 1. re-check all eight `head` words and drain every ring up to the value
//!    read, storing and waking `tail`;
//! 2. await **one** `wait_any` over the eight `(head, value read)` pairs:
//!    it sleeps only while every word still holds the value read, so an
//!    item published between the read and the wait is never missed.
//!
//! A completion reports an index, but several rings may have advanced (and
//! a completion can be spurious): step 1 always looks at all eight words,
//! the index is only a hint.
//!
//! Checks: every item of every producer arrives exactly once, in its
//! producer's order, with the right value; every producer exits 0. Exits
//! non-zero otherwise, and after at most 30 s (a wait with no progress for
//! 10 s fails). Where vector waits are unavailable (the thread backend's
//! per-wait mode, `AFX_THREAD_WAITV=0` or a kernel without `futex_waitv`)
//! it prints `SKIP: <why>` as its last line and exits with status 77.

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use asyncfutex::{wait_any, AsyncFutex, BackendKind, SharedMemory, WaitStatus};

/// Producer processes (and words in the vector wait).
const PRODUCERS: usize = 8;
/// Slots per ring (a power of two): small, so producers often find their
/// ring full and sleep.
const CAP: u32 = 16;
/// Bytes per producer block: `head` and `tail` on cache lines of their
/// own, then the slots.
const BLOCK: usize = 256;
const HEAD: usize = 0;
const TAIL: usize = 64;
const SLOTS: usize = 128;
/// After the blocks: per producer, how often it found its ring full.
const STATS: usize = PRODUCERS * BLOCK;
const MEM_LEN: usize = STATS + 64 * PRODUCERS;

/// A wait that must end, ends within this, or the example fails.
const WATCHDOG: Duration = Duration::from_secs(10);
/// Exit status of a skipped run (the automake convention).
const SKIP_STATUS: u8 = 77;

/// Item `i` of producer `p`: producer in the top byte, sequence below.
fn item(p: usize, i: u32) -> u32 {
    ((p as u32) << 24) | i
}

fn fail(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

fn word(mem: &SharedMemory, offset: usize) -> &AtomicU32 {
    mem.word(offset / 4).expect("in bounds")
}

fn head_index(p: usize) -> usize {
    (p * BLOCK + HEAD) / 4
}

fn tail_index(p: usize) -> usize {
    (p * BLOCK + TAIL) / 4
}

fn slot(mem: &SharedMemory, p: usize, i: u32) -> &AtomicU32 {
    word(mem, p * BLOCK + SLOTS + 4 * (i % CAP) as usize)
}

/// One producer process: `items` items into ring `p`, sleeping on `tail`
/// while the ring is full.
fn produce(mem: &Arc<SharedMemory>, p: usize, items: u32) -> io::Result<()> {
    let head = mem.futex(head_index(p))?;
    let tail = mem.futex(tail_index(p))?;
    let mut full = 0u32;
    for i in 0..items {
        loop {
            let taken = tail.word().load(Ordering::Acquire);
            if i.wrapping_sub(taken) < CAP {
                break;
            }
            // Full: sleep while `tail` still holds what we saw. The
            // consumer stores a new tail and then wakes it.
            full += 1;
            if tail.wait(taken, Some(WATCHDOG))? == WaitStatus::TimedOut {
                return Err(fail(format!(
                    "producer {p}: ring full for {WATCHDOG:?} (tail stuck at {taken}): \
                     a wake was lost or the consumer is gone"
                )));
            }
        }
        slot(mem, p, i).store(item(p, i), Ordering::Relaxed);
        head.word().store(i + 1, Ordering::Release); // publish first,
        head.wake(1)?; // then wake
    }
    word(mem, STATS + 64 * p).store(full, Ordering::Relaxed);
    Ok(())
}

/// What the consumer saw.
#[derive(Default)]
struct Tally {
    /// `wait_any` completions, and those that found no word changed.
    completions: u64,
    spurious: u64,
    /// Completions per reported index.
    by_index: [u64; PRODUCERS],
    /// Completions after which more than one ring had advanced.
    several: u64,
}

enum Consumed {
    Done(Tally),
    /// Vector waits are unavailable here: the reason.
    Skip(String),
}

/// Whether `e` from a vector wait means "unavailable here" rather than a
/// failure: `ENOSYS`/`EPERM` in the thread backend (its per-wait mode).
fn unavailable(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM))
        && asyncfutex::backend().ok() == Some(BackendKind::Thread)
}

async fn consume(mem: &Arc<SharedMemory>, items: u32) -> io::Result<Consumed> {
    let heads = (0..PRODUCERS)
        .map(|p| mem.futex(head_index(p)))
        .collect::<io::Result<Vec<AsyncFutex>>>()?;
    let tails = (0..PRODUCERS)
        .map(|p| mem.futex(tail_index(p)))
        .collect::<io::Result<Vec<AsyncFutex>>>()?;
    let mut next = [0u32; PRODUCERS]; // items received from each producer
    let mut tally = Tally::default();
    let mut before: Option<[u32; PRODUCERS]> = None;
    loop {
        // 1. Re-check every word, drain every ring.
        let mut seen = [0u32; PRODUCERS];
        for p in 0..PRODUCERS {
            let head = heads[p].word().load(Ordering::Acquire);
            seen[p] = head;
            let ahead = head.wrapping_sub(next[p]);
            if ahead > CAP || head > items {
                return Err(fail(format!(
                    "producer {p}: head {head} with {} taken (ring of {CAP}, {items} items): \
                     corrupt counter",
                    next[p]
                )));
            }
            if ahead == 0 {
                continue;
            }
            while next[p] != head {
                let got = slot(mem, p, next[p]).load(Ordering::Relaxed);
                let want = item(p, next[p]);
                if got != want {
                    return Err(fail(format!(
                        "producer {p}, item {}: got {got:#010x}, expected {want:#010x} \
                         (lost, repeated or reordered)",
                        next[p]
                    )));
                }
                next[p] += 1;
            }
            tails[p].word().store(next[p], Ordering::Release); // store first,
            tails[p].wake(1)?; // then wake a producer waiting for room
        }
        if let Some(before) = before {
            let advanced = (0..PRODUCERS).filter(|&p| seen[p] != before[p]).count();
            if advanced == 0 {
                tally.spurious += 1;
            } else if advanced > 1 {
                tally.several += 1;
            }
        }
        if next.iter().all(|&n| n == items) {
            return Ok(Consumed::Done(tally));
        }
        // 2. One wait over all eight words, each with the value just read.
        let entries: Vec<(&AsyncFutex, u32)> = heads.iter().zip(seen).collect();
        let index = match tokio::time::timeout(WATCHDOG, wait_any(&entries)).await {
            Err(_) => {
                return Err(fail(format!(
                    "no ring advanced for {WATCHDOG:?}: received {next:?} of {items} each \
                     (a wake was lost or a producer died)"
                )))
            }
            Ok(Err(e)) if unavailable(&e) => {
                return Ok(Consumed::Skip(format!(
                    "vector waits are unavailable with the thread backend here ({e}): its \
                     per-wait mode (AFX_THREAD_WAITV={:?}, or a kernel/seccomp profile \
                     without futex_waitv)",
                    std::env::var("AFX_THREAD_WAITV").unwrap_or_default()
                )))
            }
            Ok(Err(e)) => return Err(fail(format!("wait_any: {e}"))),
            Ok(Ok(index)) => index,
        };
        if index >= PRODUCERS {
            return Err(fail(format!(
                "wait_any reported index {index} of {PRODUCERS}"
            )));
        }
        tally.completions += 1;
        tally.by_index[index] += 1;
        before = Some(seen);
    }
}

/// Kills and reaps the producers (after the consumer gave up).
fn kill_all(children: &[libc::pid_t]) {
    for &pid in children {
        // SAFETY: our own children, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    for &pid in children {
        reap(pid);
    }
}

/// `waitpid`, retrying EINTR; the wait status.
fn reap(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: reaps our own child.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
    status
}

fn run(items: u32) -> io::Result<Option<String>> {
    let mem = Arc::new(SharedMemory::anonymous(MEM_LEN)?);
    println!(
        "wait_any_queues: 8 producer processes x {items} items, rings of {CAP} slots, \
         one consumer awaiting wait_any over the 8 head words (backend {})",
        asyncfutex::backend()?
    );
    let start = Instant::now();
    let mut children = Vec::new();
    for p in 0..PRODUCERS {
        let _ = io::stdout().flush();
        // SAFETY: the child runs its producer and then `_exit`s.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            let e = io::Error::last_os_error();
            kill_all(&children);
            return Err(e);
        }
        if pid == 0 {
            // A producer process: its own handles, blocking waits.
            // SAFETY: alarm(2) has no memory-safety preconditions.
            unsafe { libc::alarm(30) };
            let code = match produce(&mem, p, items) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("producer {p}: {e}");
                    1
                }
            };
            // SAFETY: leave the child without running the parent's exit path.
            unsafe { libc::_exit(code) };
        }
        children.push(pid);
    }

    // The consumer (this process).
    let consumed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .and_then(|rt| rt.block_on(consume(&mem, items)));
    let elapsed = start.elapsed();
    let tally = match consumed {
        Ok(Consumed::Done(tally)) => tally,
        Ok(Consumed::Skip(why)) => {
            kill_all(&children);
            return Ok(Some(why));
        }
        Err(e) => {
            kill_all(&children);
            return Err(e);
        }
    };
    let mut failed = Vec::new();
    for (p, &pid) in children.iter().enumerate() {
        let status = reap(pid);
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            failed.push(format!("producer {p}: wait status {status:#x}"));
        }
    }
    if !failed.is_empty() {
        return Err(fail(failed.join("; ")));
    }
    let total = PRODUCERS as u64 * u64::from(items);
    println!(
        "  consumer: {total} items, each producer's {items} exactly once and in order, \
         in {:.2} s ({:.0} items/s)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  wait_any completions: {} ({:.1} items per completion); {} found several rings \
         advanced, {} none (spurious: re-checked, waited again)",
        tally.completions,
        total as f64 / tally.completions.max(1) as f64,
        tally.several,
        tally.spurious
    );
    println!("  completions by reported index: {:?}", tally.by_index);
    let full: Vec<u32> = (0..PRODUCERS)
        .map(|p| word(&mem, STATS + 64 * p).load(Ordering::Relaxed))
        .collect();
    println!("  producers' sleeps on a full ring: {full:?}");
    println!("OK: every item of the 8 producers arrived exactly once, in order");
    Ok(None)
}

fn main() -> ExitCode {
    // A last resort against a hang outside the watchdogs.
    // SAFETY: alarm(2) has no memory-safety preconditions.
    unsafe { libc::alarm(30) };
    let items = match std::env::args().nth(1).map(|a| a.parse::<u32>()) {
        None => 20_000,
        Some(Ok(n)) if n > 0 && n < 1 << 24 => n,
        _ => {
            eprintln!("usage: wait_any_queues [items per producer, 1..2^24]");
            return ExitCode::from(2);
        }
    };
    match run(items) {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(why)) => {
            println!("SKIP: {why}");
            ExitCode::from(SKIP_STATUS)
        }
        Err(e) => {
            eprintln!("FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
