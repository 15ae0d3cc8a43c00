//! Producer and consumer processes over an SPSC channel in shared memory:
//! [`asyncfutex::sync::channel`].
//!
//! `cargo run --example producer_consumer -- [items]` (default 100000)
//!
//! The channel is a ring of `CAP` fixed-size frames after a 192-byte
//! header holding two free-running counters, each a futex word: `head`
//! (frames sent, written only by the sender) and `tail` (frames received,
//! written only by the receiver). `recv().await` sleeps on `head` when the
//! ring is empty, `send().await` on `tail` when it is full, and a side
//! wakes the other only when that one is asleep: a sleeper flag in the
//! futex word (see the `sync::channel` docs for why that never loses one).
//!
//! Checks: every item arrives, in order, with the right value; the
//! producer's and consumer's checksums agree. Exits non-zero otherwise.

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use asyncfutex::sync::{self, channel, ChannelHeader, Receiver, Sender};
use asyncfutex::SharedMemory;

/// Frames in the ring (a power of two).
const CAP: u32 = 1024;
/// Each frame is one item: 4 bytes.
const FRAME: u32 = 4;
/// Byte offsets: statistics the producer leaves for the parent, then the
/// channel (64-aligned).
const P_CHECKSUM: usize = 0;
const P_CALLS: usize = 4;
const CHANNEL: usize = 64;

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

fn word(mem: &SharedMemory, offset: usize) -> &AtomicU32 {
    mem.word(offset / 4).expect("in bounds")
}

async fn produce(mem: &Arc<SharedMemory>, items: u32) -> io::Result<()> {
    let mut tx = Sender::open(mem, CHANNEL)?;
    let before = sync::futex_calls();
    let mut sum = 0u64;
    for i in 0..items {
        let value = item(i);
        tokio::time::timeout(WATCHDOG, tx.send(&value.to_le_bytes()))
            .await
            .map_err(|_| fail("producer: ring full for 10 s"))??;
        sum = fold(sum, value);
    }
    word(mem, P_CHECKSUM).store(sum as u32, Ordering::Relaxed);
    word(mem, P_CALLS).store((sync::futex_calls() - before) as u32, Ordering::Relaxed);
    Ok(())
}

async fn consume(rx: &mut Receiver, items: u32) -> io::Result<u64> {
    let mut sum = 0u64;
    let mut buf = [0u8; FRAME as usize];
    for i in 0..items {
        let n = tokio::time::timeout(WATCHDOG, rx.recv(&mut buf))
            .await
            .map_err(|_| fail("consumer: ring empty for 10 s"))??;
        let value = u32::from_le_bytes(buf);
        if n != 4 || value != item(i) {
            return Err(fail(format!(
                "item {i}: got {value:#010x} ({n} bytes), expected {:#010x} (lost or reordered)",
                item(i)
            )));
        }
        sum = fold(sum, value);
    }
    Ok(sum)
}

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn run(items: u32) -> io::Result<()> {
    let size = ChannelHeader::size_for(FRAME, CAP).expect("valid channel parameters");
    let mem = Arc::new(SharedMemory::anonymous(CHANNEL + size)?);
    channel::create(&mem, CHANNEL, FRAME, CAP)?;
    println!(
        "producer_consumer: {items} items through a {CAP}-frame sync::channel in shared memory \
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
        let code = match runtime().and_then(|rt| rt.block_on(produce(&mem, items))) {
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
    let mut rx = Receiver::open(&mem, CHANNEL)?;
    let before = sync::futex_calls();
    let consumed = runtime()?.block_on(consume(&mut rx, items));
    let consumer_calls = sync::futex_calls() - before;
    let elapsed = start.elapsed();
    let mut status = 0;
    // SAFETY: reaps our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let sum = consumed?;
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(fail(format!("producer exited with status {status:#x}")));
    }
    let produced_sum = word(&mem, P_CHECKSUM).load(Ordering::Relaxed);
    println!(
        "  consumer: {items} items in order, checksum {:#010x} (producer's {produced_sum:#010x})",
        sum as u32
    );
    println!(
        "  {:.2} s, {:.0} items/s",
        elapsed.as_secs_f64(),
        f64::from(items) / elapsed.as_secs_f64()
    );
    println!(
        "  futex calls (waits + wakes, only when a side sleeps): \
         producer {}, consumer {consumer_calls}, for {items} items",
        word(&mem, P_CALLS).load(Ordering::Relaxed)
    );
    if sum as u32 != produced_sum {
        return Err(fail("checksums differ"));
    }
    if !rx.header().is_empty() {
        return Err(fail("items left in the ring"));
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
