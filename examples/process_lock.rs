//! A lock shared between processes, on one futex word.
//!
//! `cargo run --example process_lock -- [processes] [increments]`
//! (default 4 processes × 5000 increments)
//!
//! The protocol is the classic one (Ulrich Drepper, "Futexes Are Tricky",
//! mutex 3). The word holds 0 (unlocked), 1 (locked) or 2 (locked, and
//! someone may be waiting):
//!
//! - lock: `compare_exchange(0, 1)`; if that fails, `swap(2)` and, while the
//!   old value was not 0, wait while the word is 2 and `swap(2)` again;
//! - unlock: `swap(0)`; only if the old value was 2, `wake(1)`.
//!
//! So an uncontended lock/unlock pair costs two atomic instructions and no
//! system call. Half the processes lock with `wait_async` in Tokio (two
//! tasks each), the other half with the blocking `wait`.
//!
//! The lock protects a counter that is updated with a plain load and a plain
//! store (not an atomic add): without mutual exclusion increments are lost.
//! Checks: the final count is exactly processes × increments.

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use asyncfutex::{AsyncFutex, SharedMemory, WaitStatus};

/// Word indices, each on its own cache line.
const LOCK: usize = 0;
const COUNTER: usize = 16;
/// Statistics: lock operations, those that took the slow path, unlocks
/// that had to call `wake(1)`, and how many of those wakes found a sleeper.
const LOCKS: usize = 32;
const CONTENDED: usize = 48;
const UNLOCK_WAKES: usize = 64;
const WOKE: usize = 80;

/// No critical section lasts anywhere near this: waiting longer is a bug.
const WATCHDOG: Duration = Duration::from_secs(10);

fn fail(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// One process's view of the lock and its statistics.
struct ProcessLock {
    futex: AsyncFutex,
    mem: Arc<SharedMemory>,
}

impl ProcessLock {
    fn open(mem: &Arc<SharedMemory>) -> io::Result<ProcessLock> {
        Ok(ProcessLock {
            futex: mem.futex(LOCK)?,
            mem: Arc::clone(mem),
        })
    }

    fn word(&self) -> &AtomicU32 {
        self.futex.word()
    }

    fn count(&self, stat: usize) {
        self.mem
            .word(stat)
            .expect("in bounds")
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The fast path: 0 -> 1. Returns the value seen on failure.
    fn try_lock(&self) -> Result<(), u32> {
        self.count(LOCKS);
        self.word()
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .map(|_| ())
    }

    /// Blocking lock.
    fn lock(&self) -> io::Result<()> {
        let Err(mut c) = self.try_lock() else {
            return Ok(());
        };
        self.count(CONTENDED);
        if c != 2 {
            c = self.word().swap(2, Ordering::Acquire);
        }
        while c != 0 {
            // Sleep only while the word is still 2 (the kernel checks).
            if self.futex.wait(2, Some(WATCHDOG))? == WaitStatus::TimedOut {
                return Err(fail("blocking lock: no unlock wake within 10 s"));
            }
            c = self.word().swap(2, Ordering::Acquire);
        }
        Ok(())
    }

    /// Async lock: the same protocol, awaiting instead of blocking.
    async fn lock_async(&self) -> io::Result<()> {
        let Err(mut c) = self.try_lock() else {
            return Ok(());
        };
        self.count(CONTENDED);
        if c != 2 {
            c = self.word().swap(2, Ordering::Acquire);
        }
        while c != 0 {
            tokio::time::timeout(WATCHDOG, self.futex.wait_async(2))
                .await
                .map_err(|_| fail("async lock: no unlock wake within 10 s"))??;
            c = self.word().swap(2, Ordering::Acquire);
        }
        Ok(())
    }

    fn unlock(&self) -> io::Result<()> {
        if self.word().swap(0, Ordering::Release) == 2 {
            // Someone may be asleep: pass the lock on to one of them.
            self.count(UNLOCK_WAKES);
            if self.futex.wake(1)? == 1 {
                self.count(WOKE);
            }
        }
        Ok(())
    }

    /// The critical section: a deliberately non-atomic read-modify-write.
    fn increment(&self) {
        let counter = self.mem.word(COUNTER).expect("in bounds");
        let value = counter.load(Ordering::Relaxed);
        // Widen the window a little, so that a broken lock shows at once.
        for _ in 0..20 {
            std::hint::spin_loop();
        }
        counter.store(value + 1, Ordering::Relaxed);
    }
}

fn async_worker(mem: &Arc<SharedMemory>, increments: u32) -> io::Result<()> {
    let lock = Arc::new(ProcessLock::open(mem)?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // Two tasks of this process contend too (one handle, shared).
        let half = increments / 2;
        let mut tasks = Vec::new();
        for n in [half, increments - half] {
            let lock = Arc::clone(&lock);
            tasks.push(tokio::spawn(async move {
                for i in 0..n {
                    lock.lock_async().await?;
                    lock.increment();
                    lock.unlock()?;
                    if i % 64 == 0 {
                        tokio::task::yield_now().await; // let the other task in
                    }
                }
                Ok::<(), io::Error>(())
            }));
        }
        for task in tasks {
            task.await.map_err(io::Error::other)??;
        }
        Ok(())
    })
}

fn blocking_worker(mem: &Arc<SharedMemory>, increments: u32) -> io::Result<()> {
    let lock = ProcessLock::open(mem)?;
    for _ in 0..increments {
        lock.lock()?;
        lock.increment();
        lock.unlock()?;
    }
    Ok(())
}

fn run(processes: u32, increments: u32) -> io::Result<()> {
    let mem = Arc::new(SharedMemory::anonymous(4096)?);
    println!(
        "process_lock: {processes} processes × {increments} increments under one futex lock \
         (backend {})",
        asyncfutex::backend()?
    );
    let start = Instant::now();
    let mut children = Vec::new();
    for p in 0..processes {
        let kind = if p % 2 == 0 { "async" } else { "blocking" };
        let _ = io::stdout().flush();
        // SAFETY: the child runs its worker and then `_exit`s.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: alarm(2) has no memory-safety preconditions.
            unsafe { libc::alarm(30) };
            let result = if kind == "async" {
                async_worker(&mem, increments)
            } else {
                blocking_worker(&mem, increments)
            };
            let code = match result {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("process {p} ({kind}): {e}");
                    1
                }
            };
            // SAFETY: leave the child without running the parent's exit path.
            unsafe { libc::_exit(code) };
        }
        children.push((pid, p, kind));
    }
    let mut failed = false;
    for (pid, p, kind) in children {
        let mut status = 0;
        // SAFETY: reaps our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        println!(
            "  process {p} ({kind:<8}): {}",
            if ok { "done" } else { "FAILED" }
        );
        failed |= !ok;
    }
    let elapsed = start.elapsed();
    if failed {
        return Err(fail("a worker process failed"));
    }

    let stat = |i: usize| mem.word(i).expect("in bounds").load(Ordering::Relaxed);
    let (locks, contended, unlock_wakes, woke) =
        (stat(LOCKS), stat(CONTENDED), stat(UNLOCK_WAKES), stat(WOKE));
    let expected = processes * increments;
    let counter = stat(COUNTER);
    println!(
        "  counter = {counter} (expected {expected}), {:.2} s",
        elapsed.as_secs_f64()
    );
    println!(
        "  {locks} lock operations: {contended} found the lock taken; {unlock_wakes} unlocks \
         had to call wake(1) ({:.1}% of locks), {woke} of those woke a sleeper",
        100.0 * f64::from(unlock_wakes) / f64::from(locks.max(1))
    );
    println!(
        "  (the other unlocks saw no waiter and made no system call; a lock taken after \
         waiting keeps the word at 2, so its unlock wakes even when nobody sleeps: \
         the protocol errs on the safe side)"
    );
    if counter != expected {
        return Err(fail(format!(
            "counter is {counter}, expected {expected}: mutual exclusion failed"
        )));
    }
    if locks != expected {
        return Err(fail(format!(
            "{locks} lock operations, expected {expected}"
        )));
    }
    if stat(LOCK) != 0 {
        return Err(fail("the lock is still held"));
    }
    println!("OK: no increment lost");
    Ok(())
}

fn main() -> ExitCode {
    // A last resort against a hang outside the watchdogs.
    // SAFETY: alarm(2) has no memory-safety preconditions.
    unsafe { libc::alarm(30) };
    let arg = |n: usize, default: u32| match std::env::args().nth(n) {
        None => Some(default),
        Some(a) => a.parse::<u32>().ok().filter(|v| *v > 0),
    };
    let (Some(processes), Some(increments)) = (arg(1, 4), arg(2, 5000)) else {
        eprintln!("usage: process_lock [processes > 0] [increments > 0]");
        return ExitCode::from(2);
    };
    match run(processes, increments) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
