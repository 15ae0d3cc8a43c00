//! The example program (the seed note's three demos), done across real
//! processes and self-checking: it exits non-zero if any demo does not see
//! what it should.
//!
//! Run: `cargo run --bin async_futex_example` (add `AFX_BACKEND=thread` or
//! `AFX_BACKEND=io_uring` to pick the wait backend).
//!
//! - Demo 1, the basic API: a word in shared memory, one handle per process,
//!   `wait_async(seen)` in one process, store + `wake(1)` in another.
//! - Demo 2, a state machine driven in one process and watched in another:
//!   every transition is seen, in order.
//! - Demo 3, wake strategies: `wake(1)`, `wake(2)`, `wake(u32::MAX)` against
//!   six sleepers (three Tokio tasks here, three other processes), each
//!   call's count checked.

use std::io;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use asyncfutex::{AsyncFutex, SharedMemory};

/// Word indices in the shared page (each demo has its own words).
const BASIC: usize = 0;
const STATE: usize = 1;
const ACK: usize = 2;
const STRATEGY: usize = 3;
const RESUMED: usize = 4;
/// Demo 3: who resumed, in order (`RESUMED` counts the entries).
const RESUME_LOG: usize = 16;

const STATES: [&str; 6] = ["Init", "Loading", "Ready", "Running", "Stopping", "Stopped"];

/// Any wait that must end, ends within this (else the demo fails).
const WATCHDOG: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    // A last resort if something blocks outside the async watchdogs: the
    // default action of SIGALRM ends the process with a failure status.
    // SAFETY: alarm(2) has no memory-safety preconditions.
    unsafe { libc::alarm(30) };
    let start = Instant::now();
    match run() {
        Ok(()) => {
            println!(
                "\nall demos passed ({:.0} ms)",
                start.elapsed().as_secs_f64() * 1e3
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\nFAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> io::Result<()> {
    // One page of MAP_SHARED memory: fork() children see the same words.
    let mem = Arc::new(SharedMemory::anonymous(4096)?);
    println!(
        "asyncfutex {} — backend: {}",
        env!("CARGO_PKG_VERSION"),
        asyncfutex::backend()?
    );
    demo_basic(&mem)?;
    demo_state_machine(&mem)?;
    demo_wake_strategies(&mem)?;
    Ok(())
}

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn fail(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// The one correct waiting pattern: read the word, and if it still holds
/// the value you already handled, wait *with that value*. The kernel only
/// sleeps if the word still holds it, so a store + wake that lands between
/// the load and the wait is never lost. A completion means "re-check".
async fn changed_from(futex: &AsyncFutex, seen: u32) -> io::Result<u32> {
    loop {
        let now = futex.word().load(Ordering::Acquire);
        if now != seen {
            return Ok(now);
        }
        tokio::time::timeout(WATCHDOG, futex.wait_async(seen))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no wake within 10 s"))??;
    }
}

/// How many kernel futex waiters (of any process) sleep on `word` right
/// now, without waking any: `FUTEX_CMP_REQUEUE` of all of them onto the
/// same word moves nobody and returns their number. The demos use it to
/// know that a peer is really asleep, so that a wake has someone to wake.
fn sleepers(word: &AtomicU32) -> io::Result<u32> {
    loop {
        let current = word.load(Ordering::SeqCst);
        // SAFETY: a futex(2) call on a live, aligned, shared word; it wakes
        // nobody (nr_wake = 0) and requeues waiters onto the same word.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_CMP_REQUEUE,
                0u32,
                i32::MAX as libc::c_ulong,
                word.as_ptr(),
                current,
            )
        };
        if r >= 0 {
            return Ok(r as u32);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EAGAIN) {
            return Err(e);
        }
        // The word moved between the load and the call: try again.
    }
}

/// Waits (polling, with the watchdog) until `done()` holds.
fn until(what: &str, mut done: impl FnMut() -> io::Result<bool>) -> io::Result<()> {
    let deadline = Instant::now() + WATCHDOG;
    while !done()? {
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("timed out waiting until {what}"),
            ));
        }
        std::thread::yield_now();
    }
    Ok(())
}

/// Runs `child` in a forked process that exits with its result. The child
/// makes its own handles on its own mapping (inherited by the fork).
fn fork_child(child: impl FnOnce() -> io::Result<()>) -> io::Result<libc::pid_t> {
    use std::io::Write;
    // Do not let the child print the parent's buffered output again.
    let _ = io::stdout().flush();
    // SAFETY: the child only runs `child` and then `_exit`s.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            // SAFETY: alarm(2) has no memory-safety preconditions.
            unsafe { libc::alarm(30) };
            let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)) {
                Ok(Ok(())) => 0,
                Ok(Err(e)) => {
                    eprintln!("child: {e}");
                    1
                }
                Err(_) => 2,
            };
            let _ = io::stdout().flush();
            // SAFETY: leave the child without running the parent's atexit state.
            unsafe { libc::_exit(code) }
        }
        pid => Ok(pid),
    }
}

fn reap(pid: libc::pid_t) -> io::Result<()> {
    let mut status = 0;
    // SAFETY: waits for our own child.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return Err(io::Error::last_os_error());
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(fail(format!("child {pid} exited with status {status:#x}")))
    }
}

/// Demo 1: another process changes the value and wakes; we resume.
fn demo_basic(mem: &Arc<SharedMemory>) -> io::Result<()> {
    println!("\n== Demo 1: basic API across processes ==");
    let futex = mem.futex(BASIC)?;
    let child = fork_child(|| {
        // The child's own handle on the same word.
        let futex = mem.futex(BASIC)?;
        // Wait until the parent is asleep in the kernel, so that this
        // demo shows a real wake (not the parent finding 42 on its own).
        until("the parent sleeps on the word", || {
            Ok(sleepers(futex.word())? == 1)
        })?;
        futex.word().store(42, Ordering::Release); // publish first,
        let woken = futex.wake(1)?; // then wake
        println!("  child  : stored 42, wake(1) woke {woken} waiter");
        if woken != 1 {
            return Err(fail(format!("wake(1) woke {woken}, expected 1")));
        }
        Ok(())
    })?;
    let rt = runtime()?;
    println!("  parent : word = 0, awaiting wait_async(0) ...");
    let value = rt.block_on(changed_from(&futex, 0))?;
    println!("  parent : resumed, word = {value}");
    reap(child)?;
    if value != 42 {
        return Err(fail(format!("expected 42, saw {value}")));
    }
    // A stale `expected` never sleeps: the word already differs.
    let t = Instant::now();
    rt.block_on(futex.wait_async(0))?;
    println!(
        "  parent : wait_async(0) with word = 42 returns at once ({} µs): \
         it only sleeps while the word holds the value you pass",
        t.elapsed().as_micros()
    );
    Ok(())
}

/// Demo 2: a state machine driven in a child, watched asynchronously here;
/// each transition is acknowledged so none can be skipped.
fn demo_state_machine(mem: &Arc<SharedMemory>) -> io::Result<()> {
    println!("\n== Demo 2: state machine driven in one process, watched from another ==");
    let state = mem.futex(STATE)?;
    let ack = mem.futex(ACK)?;
    let child = fork_child(|| {
        let state = mem.futex(STATE)?;
        let ack = mem.futex(ACK)?;
        runtime()?.block_on(async {
            for next in 1..STATES.len() as u32 {
                state.word().store(next, Ordering::Release);
                state.wake(u32::MAX)?;
                // A futex word holds a level, not a queue: without waiting
                // for the watcher's acknowledgement, a fast driver could
                // move on before the watcher looked (examples/broadcast.rs
                // shows that coalescing).
                let mut seen = ack.word().load(Ordering::Acquire);
                while seen < next {
                    seen = changed_from(&ack, seen).await?;
                }
            }
            Ok(())
        })
    })?;
    let observed = runtime()?.block_on(async {
        let mut observed = vec![0u32];
        println!("  watcher: {}", STATES[0]);
        let mut seen = 0;
        while (seen as usize) < STATES.len() - 1 {
            seen = changed_from(&state, seen).await?;
            let from = *observed.last().expect("starts non-empty") as usize;
            println!(
                "  watcher: {} -> {}",
                STATES[from],
                STATES.get(seen as usize).unwrap_or(&"?")
            );
            observed.push(seen);
            ack.word().store(seen, Ordering::Release);
            ack.wake(1)?;
        }
        Ok::<_, io::Error>(observed)
    })?;
    reap(child)?;
    let expected: Vec<u32> = (0..STATES.len() as u32).collect();
    if observed != expected {
        return Err(fail(format!(
            "transitions {observed:?}, expected {expected:?}"
        )));
    }
    println!("  all {} transitions seen, in order", STATES.len() - 1);
    Ok(())
}

/// Demo 3: wake(1), wake(2) and wake(u32::MAX) against six known sleepers:
/// three tasks in this process and three other processes.
fn demo_wake_strategies(mem: &Arc<SharedMemory>) -> io::Result<()> {
    println!("\n== Demo 3: wake strategies against 3 tasks + 3 processes ==");
    const TASKS: u32 = 3;
    const PROCESSES: u32 = 3;
    const WAITERS: u32 = TASKS + PROCESSES;
    // Every waiter waits once on the value 0, and nobody changes the word:
    // these are pure wakes, so each resume is accounted to one wake. When a
    // waiter resumes it appends its name to a log in shared memory.
    fn log_resume(mem: &SharedMemory, who: u32) -> io::Result<()> {
        let slot = mem
            .word(RESUMED)
            .expect("in bounds")
            .fetch_add(1, Ordering::AcqRel);
        mem.word(RESUME_LOG + slot as usize)
            .ok_or_else(|| fail("resume log full"))?
            .store(who, Ordering::Release);
        Ok(())
    }
    fn name(who: u32) -> String {
        if who >= 100 {
            format!("process {}", who - 100)
        } else {
            format!("task {who}")
        }
    }

    // The waiter processes first (fork before starting a multi-threaded
    // runtime here).
    let mut children = Vec::new();
    for p in 0..PROCESSES {
        children.push(fork_child(|| {
            let futex = mem.futex(STRATEGY)?;
            runtime()?.block_on(async {
                tokio::time::timeout(WATCHDOG, futex.wait_async(0))
                    .await
                    .map_err(|_| fail("process waiter never woken"))?
            })?;
            log_resume(mem, 100 + p)
        })?);
    }

    let futex = Arc::new(mem.futex(STRATEGY)?);
    let rt = runtime()?;
    let result = rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let futex = Arc::clone(&futex);
            let mem = Arc::clone(mem);
            tasks.push(tokio::spawn(async move {
                tokio::time::timeout(WATCHDOG, futex.wait_async(0))
                    .await
                    .map_err(|_| fail("task waiter never woken"))??;
                log_resume(&mem, t)
            }));
        }
        let resumed = mem.word(RESUMED).expect("in bounds");
        let mut asleep = WAITERS;
        let mut total = 0;
        for (label, n, want) in [
            ("wake(1)", 1, 1),
            ("wake(2)", 2, 2),
            ("wake(u32::MAX)", u32::MAX, 3),
        ] {
            // Let the tasks run, then wait until exactly the waiters not
            // yet woken are asleep in the kernel (async waits are queued
            // asynchronously).
            let deadline = Instant::now() + WATCHDOG;
            while sleepers(futex.word())? != asleep {
                if Instant::now() > deadline {
                    return Err(fail(format!(
                        "{} sleepers, expected {asleep}",
                        sleepers(futex.word())?
                    )));
                }
                tokio::task::yield_now().await;
            }
            let before = resumed.load(Ordering::Acquire);
            let woken = futex.wake(n)?;
            if woken != want {
                return Err(fail(format!("{label} woke {woken}, expected {want}")));
            }
            asleep -= woken;
            total += woken;
            // Wait for exactly those to record that they resumed.
            let deadline = Instant::now() + WATCHDOG;
            while resumed.load(Ordering::Acquire) < before + woken {
                if Instant::now() > deadline {
                    return Err(fail(format!("{label}: the woken waiters never resumed")));
                }
                tokio::task::yield_now().await;
            }
            let who: Vec<String> = (before..before + woken)
                .map(|slot| {
                    name(
                        mem.word(RESUME_LOG + slot as usize)
                            .expect("in bounds")
                            .load(Ordering::Acquire),
                    )
                })
                .collect();
            println!(
                "  {label:<15} with {} asleep woke {woken}: {}",
                asleep + woken,
                who.join(", ")
            );
        }
        for task in tasks {
            task.await.map_err(io::Error::other)??;
        }
        Ok::<_, io::Error>(total)
    });
    let mut reaped = Ok(());
    for child in children {
        reaped = reaped.and(reap(child));
    }
    let total = result?;
    reaped?;
    let resumed = mem
        .word(RESUMED)
        .expect("in bounds")
        .load(Ordering::Acquire);
    let mut who: Vec<u32> = (0..resumed as usize)
        .map(|slot| {
            mem.word(RESUME_LOG + slot)
                .map_or(u32::MAX, |w| w.load(Ordering::Acquire))
        })
        .collect();
    who.sort_unstable();
    who.dedup();
    println!(
        "  {total} wakes delivered, {resumed} of {WAITERS} waiters resumed, {} distinct",
        who.len()
    );
    if resumed != WAITERS || total != WAITERS || who.len() != WAITERS as usize {
        return Err(fail("wake counts do not add up"));
    }
    Ok(())
}
