//! A lock shared between processes: [`asyncfutex::sync::Mutex`].
//!
//! `cargo run --example process_lock -- [processes] [increments]`
//! (default 4 processes × 5000 increments)
//!
//! The mutex is a 16-byte `MutexState` in shared memory (the three-state
//! futex lock with the holder's pid in the word; see the `sync::mutex`
//! docs). Half the processes lock with `lock().await` in Tokio (two tasks
//! each), the other half with `blocking_lock`. The lock protects a counter
//! updated with a plain load and store (not an atomic add): without mutual
//! exclusion increments are lost. Each worker reports how many futex calls
//! its locking made (`sync::futex_calls`): uncontended lock/unlock pairs
//! make none.
//!
//! Then the owner-death path: a process exits while holding the lock; the
//! next locker gets it with `owner_died()`, repairs and marks it
//! consistent.
//!
//! Checks: the final count is exactly processes × increments, the lock is
//! free at the end, and the dead holder's lock is recovered.

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use asyncfutex::sync::{self, Mutex};
use asyncfutex::SharedMemory;

/// Byte offsets: the mutex state, the counter, the futex-call tally.
const LOCK: usize = 0;
const COUNTER: usize = 64;
const CALLS: usize = 128;

/// No critical section lasts anywhere near this: waiting longer is a bug.
const WATCHDOG: Duration = Duration::from_secs(10);

fn fail(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

fn word(mem: &SharedMemory, offset: usize) -> &AtomicU32 {
    mem.word(offset / 4).expect("in bounds")
}

/// The critical section: a deliberately non-atomic read-modify-write.
fn increment(mem: &SharedMemory) {
    let counter = word(mem, COUNTER);
    let value = counter.load(Ordering::Relaxed);
    for _ in 0..20 {
        std::hint::spin_loop(); // widen the window, so a broken lock shows
    }
    counter.store(value + 1, Ordering::Relaxed);
}

fn async_worker(mem: &Arc<SharedMemory>, increments: u32) -> io::Result<()> {
    let lock = Arc::new(Mutex::open(mem, LOCK)?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // Two tasks of this process contend too (one handle, shared).
        let half = increments / 2;
        let mut tasks = Vec::new();
        for n in [half, increments - half] {
            let (lock, mem) = (Arc::clone(&lock), Arc::clone(mem));
            tasks.push(tokio::spawn(async move {
                for i in 0..n {
                    let guard = tokio::time::timeout(WATCHDOG, lock.lock())
                        .await
                        .map_err(|_| fail("async lock: not acquired within 10 s"))??;
                    increment(&mem);
                    drop(guard);
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
    let lock = Mutex::open(mem, LOCK)?;
    for _ in 0..increments {
        let guard = lock.blocking_lock(Some(WATCHDOG))?;
        increment(mem);
        drop(guard);
    }
    Ok(())
}

/// Forks a child running `body`; returns its pid.
fn spawn(body: impl FnOnce() -> io::Result<()>) -> io::Result<libc::pid_t> {
    let _ = io::stdout().flush();
    // SAFETY: the child runs `body` and then `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: alarm(2) has no memory-safety preconditions.
        unsafe { libc::alarm(30) };
        let code = match body() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("child: {e}");
                1
            }
        };
        // SAFETY: leave the child without running the parent's exit path.
        unsafe { libc::_exit(code) };
    }
    Ok(pid)
}

fn reap(pid: libc::pid_t) -> bool {
    let mut status = 0;
    // SAFETY: reaps our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

fn run(processes: u32, increments: u32) -> io::Result<()> {
    let mem = Arc::new(SharedMemory::anonymous(4096)?);
    let lock = Mutex::create(&mem, LOCK)?;
    println!(
        "process_lock: {processes} processes × {increments} increments under one \
         sync::Mutex (backend {})",
        asyncfutex::backend()?
    );
    let start = Instant::now();
    let mut children = Vec::new();
    for p in 0..processes {
        let kind = if p % 2 == 0 { "async" } else { "blocking" };
        let mem = Arc::clone(&mem);
        let pid = spawn(move || {
            let before = sync::futex_calls();
            if kind == "async" {
                async_worker(&mem, increments)?;
            } else {
                blocking_worker(&mem, increments)?;
            }
            let calls = (sync::futex_calls() - before) as u32;
            word(&mem, CALLS).fetch_add(calls, Ordering::Relaxed);
            Ok(())
        })?;
        children.push((pid, p, kind));
    }
    let mut failed = false;
    for (pid, p, kind) in children {
        let ok = reap(pid);
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
    let expected = processes * increments;
    let counter = word(&mem, COUNTER).load(Ordering::SeqCst);
    let calls = word(&mem, CALLS).load(Ordering::Relaxed);
    println!(
        "  counter = {counter} (expected {expected}), {:.2} s; {expected} lock/unlock pairs made \
         {calls} futex calls (waits and wakes) — the uncontended ones made none",
        elapsed.as_secs_f64()
    );
    if counter != expected {
        return Err(fail(format!(
            "counter is {counter}, expected {expected}: mutual exclusion failed"
        )));
    }
    if lock.state().word().load(Ordering::SeqCst) != 0 {
        return Err(fail("the lock is still held"));
    }

    // Owner death: a process exits holding the lock.
    let child_mem = Arc::clone(&mem);
    let pid = spawn(move || {
        let lock = Mutex::open(&child_mem, LOCK)?;
        let guard = lock.blocking_lock(Some(WATCHDOG))?;
        word(&child_mem, COUNTER).store(u32::MAX, Ordering::SeqCst); // half an update
        std::mem::forget(guard); // and exit without unlocking
        Ok(())
    })?;
    if !reap(pid) {
        return Err(fail("the dying holder failed"));
    }
    let mut guard = lock.blocking_lock(Some(WATCHDOG))?;
    if !guard.owner_died() {
        return Err(fail("the holder died, but owner_died() is false"));
    }
    word(&mem, COUNTER).store(expected, Ordering::SeqCst); // repair
    guard.mark_consistent();
    drop(guard);
    let guard = lock.try_lock()?.ok_or_else(|| fail("lock not free"))?;
    if guard.owner_died() {
        return Err(fail("still inconsistent after mark_consistent"));
    }
    drop(guard);
    println!("  a process exited holding the lock: the next locker got it with owner_died(), repaired, marked it consistent");
    println!("OK: no increment lost, dead holder recovered");
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
