//! Producer and consumer processes over a ring buffer in shared memory.
//!
//! `cargo run --example producer_consumer -- [items]` (default 100000)
//!
//! The ring has `CAP` slots and two free-running counters, each on its own
//! futex word: `head` (items produced, written only by the producer) and
//! `tail` (items consumed, written only by the consumer). The consumer
//! awaits `head.wait_async(tail)` when the ring is empty; the producer
//! awaits `tail.wait_async(tail)` when it is full.
//!
//! Wakes are sent only when they can matter: the producer wakes the
//! consumer only if the ring was empty before its push (only then can the
//! consumer be asleep), and the consumer wakes the producer only if the ring
//! was full before its pop. That is safe because each side sleeps with the
//! exact value it checked (the kernel re-checks it), and because both sides
//! publish their counter and then read the other's with `SeqCst`, so at
//! least one of them sees the other's update.
//!
//! Checks: every item arrives, in order, with the right value; the
//! producer's and consumer's checksums agree. Exits non-zero otherwise.

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use asyncfutex::{AsyncFutex, SharedMemory};

/// Slots in the ring (a power of two, so `counter % CAP` survives wrap-around).
const CAP: u32 = 1024;
/// Word indices; `head` and `tail` sit on different cache lines.
const HEAD: usize = 0;
const TAIL: usize = 16;
/// Statistics the producer leaves for the parent to print.
const P_CHECKSUM: usize = 32;
const P_SLEEPS: usize = 33;
const P_WAKES: usize = 34;
const P_WOKE: usize = 35;
const RING: usize = 64;

/// A wait that must end, ends within this, or the example fails.
const WATCHDOG: Duration = Duration::from_secs(10);

/// Item `i`: a scrambled value, so a lost, repeated or reordered item shows.
fn item(i: u32) -> u32 {
    i.wrapping_mul(2_654_435_761) ^ 0x5bd1_e995
}

/// Folds an item into an order-sensitive checksum.
fn fold(sum: u64, value: u32) -> u64 {
    sum.rotate_left(5) ^ u64::from(value)
}

fn fail(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// The ring as seen by one process (its own handles on its own mapping).
struct Ring {
    mem: Arc<SharedMemory>,
    head: AsyncFutex,
    tail: AsyncFutex,
}

impl Ring {
    fn open(mem: &Arc<SharedMemory>) -> io::Result<Ring> {
        Ok(Ring {
            mem: Arc::clone(mem),
            head: mem.futex(HEAD)?,
            tail: mem.futex(TAIL)?,
        })
    }

    fn slot(&self, counter: u32) -> &AtomicU32 {
        self.mem
            .word(RING + (counter % CAP) as usize)
            .expect("the ring fits in the mapping")
    }

    fn stat(&self, index: usize) -> &AtomicU32 {
        self.mem.word(index).expect("in bounds")
    }
}

/// Awaits a wake or a change of `futex` from `expected`, with the watchdog.
async fn wait(futex: &AsyncFutex, expected: u32, what: &str) -> io::Result<()> {
    tokio::time::timeout(WATCHDOG, futex.wait_async(expected))
        .await
        .map_err(|_| fail(format!("{what}: no wake within {WATCHDOG:?}")))?
}

async fn produce(ring: &Ring, items: u32) -> io::Result<()> {
    let (mut sum, mut sleeps, mut wakes, mut woke) = (0u64, 0u32, 0u32, 0u32);
    let mut head = 0u32;
    for i in 0..items {
        // Full? Sleep until the consumer moves `tail` on from what we saw.
        loop {
            let tail = ring.tail.word().load(Ordering::SeqCst);
            if head.wrapping_sub(tail) < CAP {
                break;
            }
            sleeps += 1;
            wait(&ring.tail, tail, "producer (ring full)").await?;
        }
        let value = item(i);
        ring.slot(head).store(value, Ordering::Relaxed);
        sum = fold(sum, value);
        // Publish the item, then look at `tail`: the consumer can only be
        // asleep if it had consumed everything, i.e. `tail == head`.
        ring.head
            .word()
            .store(head.wrapping_add(1), Ordering::SeqCst);
        if ring.tail.word().load(Ordering::SeqCst) == head {
            wakes += 1;
            woke += ring.head.wake(1)?;
        }
        head = head.wrapping_add(1);
    }
    ring.stat(P_CHECKSUM).store(sum as u32, Ordering::Relaxed);
    ring.stat(P_SLEEPS).store(sleeps, Ordering::Relaxed);
    ring.stat(P_WAKES).store(wakes, Ordering::Relaxed);
    ring.stat(P_WOKE).store(woke, Ordering::Relaxed);
    Ok(())
}

struct Consumed {
    sum: u64,
    sleeps: u32,
    wakes: u32,
    woke: u32,
}

async fn consume(ring: &Ring, items: u32) -> io::Result<Consumed> {
    let (mut sum, mut sleeps, mut wakes, mut woke) = (0u64, 0u32, 0u32, 0u32);
    let mut tail = 0u32;
    for i in 0..items {
        // Empty? Sleep until the producer moves `head` on from `tail`.
        let mut head;
        loop {
            head = ring.head.word().load(Ordering::SeqCst);
            if head != tail {
                break;
            }
            sleeps += 1;
            wait(&ring.head, tail, "consumer (ring empty)").await?;
        }
        let value = ring.slot(tail).load(Ordering::Relaxed);
        if value != item(i) {
            return Err(fail(format!(
                "item {i}: got {value:#010x}, expected {:#010x} (lost or reordered)",
                item(i)
            )));
        }
        sum = fold(sum, value);
        // Free the slot, then look at `head`: the producer can only be
        // asleep if the ring was full before this pop.
        ring.tail
            .word()
            .store(tail.wrapping_add(1), Ordering::SeqCst);
        if ring.head.word().load(Ordering::SeqCst).wrapping_sub(tail) == CAP {
            wakes += 1;
            woke += ring.tail.wake(1)?;
        }
        tail = tail.wrapping_add(1);
    }
    Ok(Consumed {
        sum,
        sleeps,
        wakes,
        woke,
    })
}

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn run(items: u32) -> io::Result<()> {
    let bytes = (RING + CAP as usize) * 4;
    let mem = Arc::new(SharedMemory::anonymous(bytes)?);
    println!(
        "producer_consumer: {items} items through a {CAP}-slot ring in shared memory \
         (backend {})",
        asyncfutex::backend()?
    );
    let start = Instant::now();
    let _ = io::stdout().flush();
    // SAFETY: the child runs the producer and then `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // The producer process: its own handles and its own runtime.
        // SAFETY: alarm(2) has no memory-safety preconditions.
        unsafe { libc::alarm(30) };
        let result = Ring::open(&mem).and_then(|ring| runtime()?.block_on(produce(&ring, items)));
        let code = match result {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("producer: {e}");
                1
            }
        };
        // SAFETY: leave the child without running the parent's exit path.
        unsafe { libc::_exit(code) };
    }

    // The consumer process (this one).
    let ring = Ring::open(&mem)?;
    let consumed = runtime()?.block_on(consume(&ring, items));
    let elapsed = start.elapsed();
    let mut status = 0;
    // SAFETY: reaps our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let consumed = consumed?;
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(fail(format!("producer exited with status {status:#x}")));
    }

    let produced_sum = ring.stat(P_CHECKSUM).load(Ordering::Relaxed);
    println!(
        "  consumer: {items} items in order, checksum {:#010x} (producer's {produced_sum:#010x})",
        consumed.sum as u32
    );
    println!(
        "  {:.2} s, {:.0} items/s",
        elapsed.as_secs_f64(),
        f64::from(items) / elapsed.as_secs_f64()
    );
    println!(
        "  consumer found the ring empty {} times and awaited; the producer sent {} wakes, \
         {} found it asleep",
        consumed.sleeps,
        ring.stat(P_WAKES).load(Ordering::Relaxed),
        ring.stat(P_WOKE).load(Ordering::Relaxed),
    );
    println!(
        "  producer found the ring full {} times and awaited; the consumer sent {} wakes, \
         {} found it asleep",
        ring.stat(P_SLEEPS).load(Ordering::Relaxed),
        consumed.wakes,
        consumed.woke,
    );
    println!(
        "  (a wake is sent only on empty->non-empty or full->non-full: {} wakes for {items} items)",
        consumed.wakes + ring.stat(P_WAKES).load(Ordering::Relaxed)
    );
    if consumed.sum as u32 != produced_sum {
        return Err(fail("checksums differ"));
    }
    let head = ring.head.word().load(Ordering::SeqCst);
    let tail = ring.tail.word().load(Ordering::SeqCst);
    if head != items || tail != items {
        return Err(fail(format!("head {head}, tail {tail}, expected {items}")));
    }
    println!("OK: every item arrived once, in order");
    Ok(())
}

fn main() -> ExitCode {
    // A last resort against a hang outside the async watchdogs.
    // SAFETY: alarm(2) has no memory-safety preconditions.
    unsafe { libc::alarm(30) };
    let items = match std::env::args().nth(1).map(|a| a.parse::<u32>()) {
        None => 100_000,
        Some(Ok(n)) if n > 0 => n,
        _ => {
            eprintln!("usage: producer_consumer [items > 0]");
            return ExitCode::from(2);
        }
    };
    match run(items) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
