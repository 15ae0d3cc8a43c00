//! io_uring denied (as by the Docker/containerd/Podman seccomp profiles):
//! a forked child installs a seccomp filter that makes `io_uring_setup`,
//! `io_uring_enter` and `io_uring_register` fail with `EPERM`, then checks
//! that the probe falls back to the thread backend (which then works across
//! processes), and that an explicit request for io_uring is a clear error.
//!
//! Also the thread backend's own limits: per-wait mode (forced, or with
//! `futex_waitv` denied) and a helper thread that cannot be started.
//!
//! The filter is x86_64-specific (syscall numbers, `AUDIT_ARCH_X86_64`);
//! other architectures print a SKIP.

#[macro_use]
mod common;

use std::sync::atomic::Ordering;
use std::time::Instant;

use std::os::fd::AsFd;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;

use asyncfutex::{select_backend, BackendKind, EventFdFutex, SharedMemory};
use common::*;

fn io<T>(what: &str, r: std::io::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// With io_uring denied, `select_backend(None)` probes, falls back silently
/// to the thread backend, and a cross-process ping-pong with the parent
/// (whatever backend the parent runs) works: async and blocking.
#[test]
fn io_uring_denied_falls_back_to_threads() {
    let test = "io_uring_denied_falls_back_to_threads";
    let _serial = serial();
    let Some(parent_kind) = start(test) else {
        return;
    };
    if !supported(test) {
        return;
    }
    const ROUNDS: u32 = 1000;
    let mem = shared_page();
    let child = fork_child(test, || {
        deny_io_uring()?;
        let started = Instant::now();
        let kind = io("select_backend(None)", select_backend(None))?;
        ensure!(
            kind == BackendKind::Thread,
            "probe chose {kind} with io_uring denied"
        );
        ensure!(
            matches!(asyncfutex::backend(), Ok(BackendKind::Thread)),
            "backend() disagrees: {:?}",
            asyncfutex::backend()
        );
        clog!(
            "io_uring denied: fell back to {kind} in {:?}",
            started.elapsed()
        );
        let fa = io("futex(0)", mem.futex(0))?;
        ensure!(
            fa.backend().ok() == Some(BackendKind::Thread),
            "handle reports {:?}",
            fa.backend()
        );
        pingpong_child_async(&fa, ROUNDS)?;
        let fb = io("futex(1)", mem.futex(1))?;
        pingpong_child_blocking(&fb, ROUNDS)
    });
    let rt = rt_current();
    let fa = mem.futex(0).unwrap();
    let fb = mem.futex(1).unwrap();
    rt.block_on(pingpong_parent_async(&fa, ROUNDS));
    rt.block_on(pingpong_parent_async(&fb, ROUNDS));
    child.expect_ok();
    assert_eq!(word(&mem, 0).load(Ordering::SeqCst), 2 * ROUNDS);
    eprintln!("[{test}] parent ({parent_kind}) <-> child (thread, io_uring denied): {ROUNDS} async + {ROUNDS} blocking round trips");
}

/// With io_uring denied, an explicit `select_backend(Some(IoUring))` fails
/// promptly with `EPERM` (no hang, no silent fallback); the process can
/// still choose the thread backend afterwards.
#[test]
fn io_uring_denied_explicit_request_is_a_clear_error() {
    let test = "io_uring_denied_explicit_request_is_a_clear_error";
    let _serial = serial();
    if start(test).is_none() || !supported(test) {
        return;
    }
    let mem = shared_page();
    let child = fork_child(test, || {
        deny_io_uring()?;
        let started = Instant::now();
        let r = select_backend(Some(BackendKind::IoUring));
        let took = started.elapsed();
        match r {
            Err(e) => {
                clog!("select_backend(Some(IoUring)) with io_uring denied: {e} (after {took:?})");
                ensure!(
                    e.raw_os_error() == Some(libc::EPERM),
                    "want EPERM, got {e:?}"
                );
            }
            Ok(kind) => return fail(format!("explicit io_uring request succeeded: {kind}")),
        }
        // Still refused on a second try (cached), and handles cannot start
        // it either... until the thread backend is chosen.
        let again = select_backend(Some(BackendKind::IoUring));
        ensure!(
            again.as_ref().err().and_then(|e| e.raw_os_error()) == Some(libc::EPERM),
            "second explicit request: {again:?}"
        );
        let kind = io(
            "select_backend(Some(Thread)) after the failure",
            select_backend(Some(BackendKind::Thread)),
        )?;
        ensure!(kind == BackendKind::Thread, "got {kind}");
        let f = io("futex(0)", mem.futex(0))?;
        pingpong_child_async(&f, 100)
    });
    let f = mem.futex(0).unwrap();
    rt_current().block_on(pingpong_parent_async(&f, 100));
    child.expect_ok();
}

/// With io_uring denied and no `select_backend` call, `AFX_BACKEND` rules:
/// `io_uring` → a clear `EPERM` error; `thread`, `auto` or unset → threads.
#[test]
fn io_uring_denied_respects_afx_backend() {
    let test = "io_uring_denied_respects_afx_backend";
    let _serial = serial();
    if start(test).is_none() || !supported(test) {
        return;
    }
    let env = std::env::var("AFX_BACKEND").ok();
    let child = fork_child(test, || {
        deny_io_uring()?;
        let r = asyncfutex::backend();
        match env.as_deref().map(str::trim) {
            Some("io_uring") => ensure!(
                r.as_ref().err().and_then(|e| e.raw_os_error()) == Some(libc::EPERM),
                "AFX_BACKEND=io_uring with io_uring denied: want EPERM, got {r:?}"
            ),
            _ => ensure!(
                matches!(r, Ok(BackendKind::Thread)),
                "AFX_BACKEND={env:?} with io_uring denied: want thread, got {r:?}"
            ),
        }
        clog!("AFX_BACKEND={env:?}, io_uring denied: backend() = {r:?}");
        Ok(())
    });
    child.expect_ok();
}

fn threads_now() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// DESIGN §1 checks for the thread backend's per-wait mode, in a child
/// whose backend is already chosen: wake before / during / after the arm
/// (S1), a cancel-vs-wake race with every wake accounted for (S3), cancel
/// latency, and 1000 concurrent waits (one helper thread each, reused).
fn per_wait_semantics(mem: &Arc<SharedMemory>) -> ChildResult {
    let kind = io("backend()", asyncfutex::backend())?;
    ensure!(kind == BackendKind::Thread, "backend is {kind}");
    let rt = rt_current();
    let f = Arc::new(io("futex(0)", mem.futex(0))?);
    let w = word(mem, 0);
    rt.block_on(async {
        // Wake before the arm: the armed value is stale, completes at once.
        w.store(0, Ordering::SeqCst);
        store_wake(w, 1);
        io("stale wait", within("stale wait", f.wait_async(0)).await)?;
        ensure!(
            kernel_waiters(w) == 0,
            "a stale wait queued a kernel waiter"
        );
        // Wake after the arm.
        let task = tokio::spawn({
            let f = Arc::clone(&f);
            async move { f.wait_async(1).await }
        });
        wait_for_waiters_async(w, 1, "wait after arm").await;
        ensure!(
            io("wake", f.wake(1))? == 1,
            "wake(1) did not find the waiter"
        );
        io("woken wait", within("woken wait", task).await.unwrap())?;
        // Store and wake racing the helper's arm (S1: the helper hands the
        // kernel the armed value, never a re-read one).
        let (_counter, waker) = counting_waker();
        for round in 0..1000u32 {
            let v = w.load(Ordering::SeqCst);
            let mut fut = Box::pin(f.wait_async(v));
            let first = poll_once(&mut fut, &waker);
            w.store(v.wrapping_add(1), Ordering::SeqCst);
            io("wake", f.wake(1))?;
            if first.is_pending() {
                let r = tokio::time::timeout(Duration::from_secs(10), fut).await;
                ensure!(r.is_ok(), "round {round}: store+wake during the arm lost");
            }
        }
        Ok::<(), String>(())
    })?;

    // Cancel racing a wake, every wake accounted for (as in
    // async_semantics::cancel_vs_wake_race_accounts_for_every_wake).
    const ROUNDS: u32 = 2000;
    let a = io("a", EventFdFutex::new(io("futex", mem.futex(0))?))?;
    let b = io("b", EventFdFutex::new(io("futex", mem.futex(0))?))?;
    let SteppedWaker {
        go,
        done,
        result,
        thread: waker,
    } = stepped_waker(&f, ROUNDS);
    let v = w.load(Ordering::SeqCst);
    let (mut wakes, mut a_observed_n, mut b_completed, mut spurious) = (0, 0, 0, 0);
    let mut cancel_max = Duration::ZERO;
    for round in 0..ROUNDS {
        io("arm a", a.arm(v))?;
        io("arm b", b.arm(v))?;
        try_wait_for_waiters(w, 2, "A and B queued")?;
        let mode = round % 3;
        let mut a_observed = false;
        if mode == 2 {
            let t0 = Instant::now();
            a.cancel(); // cancel first: the kernel wait is gone on return
            cancel_max = cancel_max.max(t0.elapsed());
            ensure!(
                kernel_waiters(w) == 1,
                "round {round}: A's kernel wait outlived cancel"
            );
        }
        go.wait();
        if mode == 0 {
            a_observed = io("ack a", a.ack())?;
            if !a_observed {
                a.cancel(); // concurrent with the wake
            }
        }
        done.wait();
        if mode == 1 {
            a.cancel(); // after the wake: A consumed it (FIFO), forward
        }
        ensure!(
            !a.is_armed() && !fd_readable(a.as_fd(), 0),
            "round {round}: A left armed"
        );
        let r = result.load(Ordering::SeqCst);
        wakes += r;
        if r == 1 && !a_observed {
            ensure!(
                fd_readable(b.as_fd(), 10_000),
                "round {round} (mode {mode}): LOST WAKE ({} kernel waiters)",
                kernel_waiters(w)
            );
            ensure!(
                io("ack b", b.ack())?,
                "round {round}: B readable but not done"
            );
            b_completed += 1;
        } else {
            if r == 1 {
                a_observed_n += 1;
            }
            if io("ack b", b.ack())? {
                spurious += 1;
            } else {
                b.cancel();
            }
        }
        ensure!(
            !b.is_armed() && !fd_readable(b.as_fd(), 0),
            "round {round}: B left armed"
        );
    }
    waker.join().unwrap();
    ensure!(kernel_waiters(w) == 0, "kernel waiters left after the race");
    ensure!(
        wakes == a_observed_n + b_completed,
        "{wakes} wakes counted, {a_observed_n} observed by A + {b_completed} completed B"
    );
    clog!(
        "per-wait mode: {ROUNDS} cancel/wake rounds: {wakes} wakes = {a_observed_n} A + \
         {b_completed} B, {spurious} spurious; slowest cancel-first {cancel_max:?}"
    );

    // 1000 concurrent waits: one helper each, kept for reuse.
    const N: usize = 1000;
    let f1 = Arc::new(io("futex(1)", mem.futex(1))?);
    let w1 = word(mem, 1);
    let before = threads_now();
    let mut peak = 0;
    for pass in 0..2 {
        let started = Instant::now();
        let (armed, resumed) = rt.block_on(async {
            let v = w1.load(Ordering::SeqCst);
            let tasks: Vec<_> = (0..N)
                .map(|_| {
                    let f1 = Arc::clone(&f1);
                    tokio::spawn(async move { f1.wait_async(v).await })
                })
                .collect();
            wait_for_waiters_async(w1, N as u32, "1000 waits queued").await;
            let armed = started.elapsed();
            peak = peak.max(threads_now());
            let t0 = Instant::now();
            let woken = f1.wake(u32::MAX).map_err(|e| format!("wake all: {e}"))?;
            ensure!(woken == N as u32, "wake(all) woke {woken} of {N}");
            for t in tasks {
                io("wait", within("1000 waits", t).await.unwrap())?;
            }
            Ok::<_, String>((armed, t0.elapsed()))
        })?;
        clog!(
            "per-wait mode, pass {pass}: {N} waits armed in {armed:?}, wake-all to every task \
             resumed {resumed:?}, threads {before} -> {}",
            threads_now()
        );
    }
    ensure!(
        // Helpers left idle by the race above serve some of them.
        peak >= N,
        "{N} pending waits on {peak} threads ({before} before): not one helper per wait?"
    );
    ensure!(
        threads_now() <= peak,
        "the second {N} waits created threads: helpers not reused"
    );
    Ok(())
}

/// `futex_waitv` refused with `ENOSYS` (kernels before 5.16, old seccomp
/// profiles) and io_uring denied: the probe falls back to the thread
/// backend, which runs in per-wait mode and keeps the §1 semantics.
#[test]
fn futex_waitv_denied_per_wait_mode_keeps_the_semantics() {
    let test = "futex_waitv_denied_per_wait_mode_keeps_the_semantics";
    let _serial = serial();
    if start(test).is_none() || !supported(test) {
        return;
    }
    let mem = shared_page();
    let child = fork_child(test, || {
        deny_syscalls(
            &[
                FUTEX_WAITV,
                IO_URING_SETUP,
                IO_URING_ENTER,
                IO_URING_REGISTER,
            ],
            libc::ENOSYS,
        )?;
        let kind = io("select_backend(None)", select_backend(None))?;
        ensure!(kind == BackendKind::Thread, "probe chose {kind}");
        per_wait_semantics(&mem)
    });
    child.expect_ok();
}

/// `AFX_THREAD_WAITV=0` forces the per-wait mode where `futex_waitv`
/// works (no seccomp needed: every architecture).
#[test]
fn afx_thread_waitv_0_forces_per_wait_mode() {
    let test = "afx_thread_waitv_0_forces_per_wait_mode";
    let _serial = serial();
    if start(test).is_none() {
        return;
    }
    let mem = shared_page();
    let child = fork_child(test, || {
        std::env::set_var("AFX_THREAD_WAITV", "0");
        let kind = io(
            "select_backend(Thread)",
            select_backend(Some(BackendKind::Thread)),
        )?;
        ensure!(kind == BackendKind::Thread, "got {kind}");
        per_wait_semantics(&mem)
    });
    child.expect_ok();
}

static APP_HANDLER_RUNS: AtomicU32 = AtomicU32::new(0);

extern "C" fn app_handler(_: libc::c_int) {
    APP_HANDLER_RUNS.fetch_add(1, Ordering::SeqCst);
}

fn handler_of(signal: libc::c_int) -> libc::sighandler_t {
    // SAFETY: queries the disposition into a zeroed sigaction.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut old);
        old.sa_sigaction
    }
}

fn install_app_handler(signal: libc::c_int) {
    // SAFETY: installs a plain async-signal-safe handler.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = app_handler as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(signal, &sa, std::ptr::null_mut()), 0);
    }
}

/// Arms one wait, cancels it, and checks the kernel wait is gone on return.
fn cancel_once(mem: &Arc<SharedMemory>, i: usize) -> ChildResult {
    let w = word(mem, i);
    let h = io("handle", EventFdFutex::new(io("futex", mem.futex(i))?))?;
    io("arm", h.arm(w.load(Ordering::SeqCst)))?;
    try_wait_for_waiters(w, 1, "armed")?;
    h.cancel();
    ensure!(kernel_waiters(w) == 0, "the kernel wait outlived cancel");
    ensure!(!fd_readable(h.as_fd(), 0), "cancelled handle readable");
    Ok(())
}

/// Per-wait mode's cancel signal: an application's handler on the default
/// choice (`SIGRTMAX`) is left alone and never run (the library takes the
/// next free signal); naming that signal in `AFX_THREAD_SIGNAL` is a clear
/// `EBUSY`; `AFX_THREAD_SIGNAL=none` cancels without signals.
#[test]
fn per_wait_signal_choice_respects_the_application() {
    let test = "per_wait_signal_choice_respects_the_application";
    let _serial = serial();
    if start(test).is_none() {
        return;
    }
    let mem = shared_page();
    let taken = fork_child(test, || {
        let max = libc::SIGRTMAX();
        install_app_handler(max);
        let ours = handler_of(max);
        std::env::set_var("AFX_THREAD_WAITV", "0");
        io("select", select_backend(Some(BackendKind::Thread)))?;
        for _ in 0..100 {
            cancel_once(&mem, 0)?;
        }
        ensure!(
            handler_of(max) == ours,
            "the application's handler was replaced"
        );
        ensure!(
            APP_HANDLER_RUNS.load(Ordering::SeqCst) == 0,
            "the application's handler ran"
        );
        ensure!(
            handler_of(max - 1) != libc::SIG_DFL,
            "SIGRTMAX-1 not taken by the library"
        );
        Ok(())
    });
    taken.expect_ok();
    let explicit = fork_child(test, || {
        install_app_handler(libc::SIGRTMAX());
        std::env::set_var("AFX_THREAD_WAITV", "0");
        std::env::set_var("AFX_THREAD_SIGNAL", "SIGRTMAX");
        let r = select_backend(Some(BackendKind::Thread));
        ensure!(
            r.as_ref().err().and_then(|e| e.raw_os_error()) == Some(libc::EBUSY),
            "AFX_THREAD_SIGNAL naming a handled signal: {r:?}, want EBUSY"
        );
        Ok(())
    });
    explicit.expect_ok();
    let none = fork_child(test, || {
        std::env::set_var("AFX_THREAD_WAITV", "0");
        std::env::set_var("AFX_THREAD_SIGNAL", "none");
        // (A parent in per-wait mode passed its handler on through fork.)
        let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
        let before: Vec<_> = (min..=max).map(handler_of).collect();
        io("select", select_backend(Some(BackendKind::Thread)))?;
        for _ in 0..100 {
            cancel_once(&mem, 0)?;
        }
        let after: Vec<_> = (min..=max).map(handler_of).collect();
        ensure!(
            before == after,
            "a handler was installed with AFX_THREAD_SIGNAL=none"
        );
        Ok(())
    });
    none.expect_ok();
}

/// Makes thread creation fail in this (forked, single-threaded) process:
/// drops root to uid/gid 65534 (RLIMIT_NPROC does not bind root) and sets
/// RLIMIT_NPROC to 0. `Ok(Some(reason))` where it cannot be made to fail.
fn refuse_threads() -> Result<Option<String>, String> {
    // SAFETY: plain credential and rlimit calls in a single-threaded child.
    unsafe {
        if libc::geteuid() == 0
            && (libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(65534) != 0
                || libc::setuid(65534) != 0)
        {
            return Ok(Some(format!(
                "cannot drop root to uid 65534 ({}): RLIMIT_NPROC does not bind root",
                std::io::Error::last_os_error()
            )));
        }
        let mut rl: libc::rlimit = std::mem::zeroed();
        ensure!(
            libc::getrlimit(libc::RLIMIT_NPROC, &mut rl) == 0,
            "getrlimit"
        );
        rl.rlim_cur = 0;
        ensure!(libc::setrlimit(libc::RLIMIT_NPROC, &rl) == 0, "setrlimit");
    }
    if std::thread::Builder::new().spawn(|| ()).is_ok() {
        return Ok(Some(
            "threads still start with RLIMIT_NPROC 0 (CAP_SYS_RESOURCE kept?)".into(),
        ));
    }
    Ok(None)
}

fn allow_threads() -> ChildResult {
    // SAFETY: as in refuse_threads.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        ensure!(
            libc::getrlimit(libc::RLIMIT_NPROC, &mut rl) == 0,
            "getrlimit"
        );
        rl.rlim_cur = rl.rlim_max;
        ensure!(libc::setrlimit(libc::RLIMIT_NPROC, &rl) == 0, "setrlimit");
    }
    Ok(())
}

/// Polls `fut` until it completes (watchdog [`WATCHDOG`]).
fn poll_to_end<F: std::future::Future + Unpin>(fut: &mut F) -> Result<F::Output, String> {
    let (_, waker) = counting_waker();
    let deadline = Instant::now() + WATCHDOG;
    loop {
        if let std::task::Poll::Ready(r) = poll_once(fut, &waker) {
            return Ok(r);
        }
        ensure!(
            Instant::now() < deadline,
            "wait not completed within {WATCHDOG:?}"
        );
        std::thread::yield_now();
    }
}

/// Issue 12 §4: an async wait whose helper thread cannot be started
/// (RLIMIT_NPROC) fails with `ENOMEM` (never `EAGAIN`, which means "the word changed") and leaves nothing behind: the
/// library holds neither the waiter nor, through it, the word's mapping
/// (a `SharedMemory` is unmapped once the last handle is dropped). Then,
/// with the limit raised, waits work again. Thread backend, in the mode
/// `AFX_THREAD_WAITV` selects (vector mode by default).
#[test]
fn failed_helper_spawn_frees_the_waiter_and_the_mapping() {
    let test = "failed_helper_spawn_frees_the_waiter_and_the_mapping";
    let _serial = serial();
    if start(test).is_none() {
        return;
    }
    let flag = shared_page();
    let child = fork_child(test, || {
        io(
            "select_backend(Thread)",
            select_backend(Some(BackendKind::Thread)),
        )?;
        if let Some(reason) = refuse_threads()? {
            clog!("{reason}");
            word(&flag, 0).store(1, Ordering::SeqCst);
            return Ok(());
        }
        for attempt in 0..3 {
            let mem = Arc::new(io("SharedMemory", SharedMemory::anonymous(4096))?);
            let mapping = Arc::downgrade(&mem);
            let f = io("futex", mem.futex(0))?;
            drop(mem);
            let mut wait = f.wait_async(0);
            let r = poll_to_end(&mut wait)?;
            ensure!(
                r.as_ref().err().and_then(|e| e.raw_os_error()) == Some(libc::ENOMEM),
                "attempt {attempt}: a wait without a helper thread: {r:?}, want ENOMEM"
            );
            drop(wait);
            drop(f);
            ensure!(
                mapping.upgrade().is_none(),
                "attempt {attempt}: the word's mapping is still held after a failed helper spawn \
                 and the last handle dropped"
            );
        }
        allow_threads()?;
        let f = Arc::new(io("futex", shared_page().futex(0))?);
        let mut wait = f.wait_async(0);
        let (_, waker) = counting_waker();
        ensure!(
            poll_once(&mut wait, &waker).is_pending(),
            "limit raised: the wait did not arm"
        );
        try_wait_for_waiters(f.word(), 1, "limit raised: the wait queued")?;
        ensure!(
            io("wake", f.wake(1))? == 1,
            "limit raised: wake(1) found no waiter"
        );
        io("wait", poll_to_end(&mut wait)?)?;
        Ok(())
    });
    child.expect_ok();
    if word(&flag, 0).load(Ordering::SeqCst) == 1 {
        eprintln!("SKIP: [{test}] thread creation cannot be refused here (reason above)");
    }
}

/// Threads of this process named `name`.
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .count()
}

/// Two bursts of `n` concurrent waits on one word, each followed by the
/// wait for the helper threads (named `helper`) to come down to `kept`
/// once idle. In each burst every other wait is cancelled (its future
/// dropped), the rest are woken: every one accounted for. Returns `false`
/// if the burst ran on no `helper` thread (another mode).
fn burst_then_shrink(
    mem: &Arc<SharedMemory>,
    n: usize,
    helper: &str,
    kept: usize,
) -> Result<bool, String> {
    let rt = rt_current();
    let f = Arc::new(io("futex", mem.futex(0))?);
    let w = word(mem, 0);
    for burst in 0..2 {
        let v = w.load(Ordering::SeqCst);
        let peak = rt.block_on(async {
            let tasks: Vec<_> = (0..n)
                .map(|_| {
                    let f = Arc::clone(&f);
                    tokio::spawn(async move { f.wait_async(v).await })
                })
                .collect();
            wait_for_waiters_async(w, n as u32, "every wait queued").await;
            let peak = threads_named(helper);
            let mut kept = Vec::new();
            for (i, t) in tasks.into_iter().enumerate() {
                if i % 2 == 0 {
                    t.abort();
                    let _ = t.await;
                } else {
                    kept.push(t);
                }
            }
            wait_for_waiters_async(w, (n / 2) as u32, "cancelled waits gone").await;
            let woken = f.wake(u32::MAX).map_err(|e| format!("wake: {e}"))?;
            ensure!(
                woken == (n / 2) as u32,
                "wake(all) woke {woken}, want {}",
                n / 2
            );
            for t in kept {
                io("wait", within("woken wait", t).await.unwrap())?;
            }
            Ok::<_, String>(peak)
        })?;
        if peak == 0 {
            return Ok(false);
        }
        let t0 = Instant::now();
        try_wait_until("idle helpers exit", || threads_named(helper) <= kept)?;
        clog!(
            "burst {burst}: {n} waits on {peak} {helper} threads, half cancelled, half woken; \
             {} left {:?} later",
            threads_named(helper),
            t0.elapsed()
        );
    }
    Ok(true)
}

/// Issue 12 §4: the per-wait helper pool shrinks after a burst. 2000
/// concurrent waits start 2000 helpers; once they are idle, the helpers
/// above a floor of 4 exit after their idle timeout (5 s; watchdog 20 s).
/// A second burst then starts helpers again (taking over the indexes of
/// the ones that exited), and cancels and wakes reach them.
#[test]
fn per_wait_pool_shrinks_after_a_burst() {
    let test = "per_wait_pool_shrinks_after_a_burst";
    let _serial = serial();
    if start(test).is_none() {
        return;
    }
    let mem = shared_page();
    let child = fork_child(test, || {
        std::env::set_var("AFX_THREAD_WAITV", "0");
        io(
            "select_backend(Thread)",
            select_backend(Some(BackendKind::Thread)),
        )?;
        // The floor (per_wait.rs IDLE_FLOOR), plus one on its way out.
        let per_wait = burst_then_shrink(&mem, 2000, "afx-wait", 4 + 1)?;
        ensure!(
            per_wait,
            "2000 waits ran on no afx-wait thread: not per-wait mode?"
        );
        Ok(())
    });
    child.expect_ok();
}
