//! The seed's example, done across real processes and self-checking: exits
//! non-zero if any demo does not see what it should.
//!
//! Run: `cargo run --bin async_futex_example`

use std::io;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use asyncfutex::{AsyncFutex, SharedMemory};

/// Word indices in the shared page.
const BASIC: usize = 0;
const STATE: usize = 1;
const ACK: usize = 2;
const STRATEGY: usize = 3;

const STATES: [&str; 6] = ["Init", "Loading", "Ready", "Running", "Stopping", "Stopped"];

fn main() -> ExitCode {
    match run() {
        Ok(()) => {
            println!("\nall demos passed");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\nFAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> io::Result<()> {
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

/// Awaits until the word differs from `seen`, with a watchdog.
async fn changed_from(futex: &AsyncFutex, seen: u32) -> io::Result<u32> {
    let watchdog = Duration::from_secs(10);
    loop {
        let now = futex.word().load(Ordering::Acquire);
        if now != seen {
            return Ok(now);
        }
        tokio::time::timeout(watchdog, futex.wait_async(seen))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no wake within 10 s"))??;
    }
}

/// Runs `child` in a forked process that exits with its result.
fn fork_child(child: impl FnOnce() -> io::Result<()>) -> io::Result<libc::pid_t> {
    // SAFETY: the child only runs `child` and then `_exit`s.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)) {
                Ok(Ok(())) => 0,
                Ok(Err(e)) => {
                    eprintln!("child: {e}");
                    1
                }
                Err(_) => 2,
            };
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
        Err(io::Error::other(format!(
            "child exited with status {status:#x}"
        )))
    }
}

/// Demo 1: another process changes the value and wakes; we resume.
fn demo_basic(mem: &Arc<SharedMemory>) -> io::Result<()> {
    println!("\n== Demo 1: basic API across processes ==");
    let futex = mem.futex(BASIC)?;
    let child = fork_child(|| {
        let futex = mem.futex(BASIC)?;
        // Wait until the parent is parked (it sets 1), then publish 42.
        runtime()?.block_on(changed_from(&futex, 0))?;
        futex.word().store(42, Ordering::Release);
        let woken = futex.wake(1)?;
        println!("  child  : stored 42, wake(1) woke {woken}");
        Ok(())
    })?;
    let value = runtime()?.block_on(async {
        futex.word().store(1, Ordering::Release);
        futex.wake(1)?;
        changed_from(&futex, 1).await
    })?;
    println!("  parent : resumed, word = {value}");
    reap(child)?;
    if value != 42 {
        return Err(io::Error::other(format!("expected 42, saw {value}")));
    }
    Ok(())
}

/// Demo 2: a state machine driven in a child, watched asynchronously here;
/// each transition is acknowledged so none can be skipped.
fn demo_state_machine(mem: &Arc<SharedMemory>) -> io::Result<()> {
    println!("\n== Demo 2: state machine watched from another process ==");
    let state = mem.futex(STATE)?;
    let ack = mem.futex(ACK)?;
    let child = fork_child(|| {
        let state = mem.futex(STATE)?;
        let ack = mem.futex(ACK)?;
        runtime()?.block_on(async {
            for next in 1..STATES.len() as u32 {
                state.word().store(next, Ordering::Release);
                state.wake(u32::MAX)?;
                // Wait for the watcher to acknowledge this transition.
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
            println!(
                "  watcher: {} -> {}",
                STATES[*observed.last().unwrap() as usize],
                STATES[seen as usize]
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
        return Err(io::Error::other(format!(
            "transitions {observed:?}, expected {expected:?}"
        )));
    }
    Ok(())
}

/// Demo 3: wake(1), wake(n) and wake(u32::MAX) against known waiters.
fn demo_wake_strategies(mem: &Arc<SharedMemory>) -> io::Result<()> {
    println!("\n== Demo 3: wake strategies ==");
    const WAITERS: u32 = 6;
    let futex = Arc::new(mem.futex(STRATEGY)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let resumed = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for _ in 0..WAITERS {
            let futex = Arc::clone(&futex);
            let resumed = Arc::clone(&resumed);
            // Each task waits on the value 0 exactly once (a pure wake, no
            // value change), so every resume is accounted to one wake.
            tasks.push(tokio::spawn(async move {
                let r = futex.wait_async(0).await;
                resumed.fetch_add(1, Ordering::AcqRel);
                r
            }));
        }
        let mut total = 0;
        for (label, n, want) in [
            ("wake(1)", 1, 1),
            ("wake(2)", 2, 2),
            ("wake(u32::MAX)", u32::MAX, 3),
        ] {
            // Async waits reach the kernel asynchronously: retry until the
            // expected number of kernel waiters took this wake.
            let mut woken = 0;
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while woken < want {
                woken += futex.wake(if n == u32::MAX { n } else { n - woken })?;
                if std::time::Instant::now() > deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "waiters never queued",
                    ));
                }
                tokio::task::yield_now().await;
            }
            total += woken;
            println!("  {label:<15} woke {woken} waiter(s)");
        }
        for task in tasks {
            task.await.map_err(io::Error::other)??;
        }
        let resumed = resumed.load(Ordering::Acquire);
        println!("  {resumed} of {WAITERS} tasks resumed after {total} wakes");
        if resumed != WAITERS || total != WAITERS {
            return Err(io::Error::other("wake counts do not add up"));
        }
        Ok(())
    })
}
