//! Helpers shared by the integration tests: backend banner and skips, raw
//! `futex(2)` calls (independent of the library under test), a kernel waiter
//! counter, value handshakes on shared words, `fork` with a watchdog, a
//! counting waker, cross-process ping-pong, and seccomp filters that deny
//! system calls (io_uring, `futex_waitv`) as container profiles do.
//!
//! Ordering is always by value handshakes on shared words or by observing
//! kernel state; time only appears as a watchdog.
#![allow(dead_code)]

use std::future::Future;
use std::io::Write as _;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use asyncfutex::{AsyncFutex, BackendKind, SharedMemory, WaitStatus};

/// Bound for any single expected event (a wake arriving, a peer answering).
pub const WATCHDOG: Duration = Duration::from_secs(20);
/// Bound for a child process to finish once the parent waits for it.
pub const CHILD_WATCHDOG: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Banner, skips, serialisation

/// Serialises the tests of one binary. The thread backend serves the waits
/// of the whole process from shared helper threads, and a wake on any word
/// of a helper may complete the helper's other waits spuriously ("fallback
/// coalescing", DESIGN S4). Tests that account for every kernel waiter
/// exactly therefore must not run next to other tests of the same process.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Prints the test name and the backend in use. Returns `None` (after
/// printing `SKIP: <reason>`) when no backend can run here, e.g.
/// `AFX_BACKEND=io_uring` on a kernel or sandbox without io_uring futex ops.
pub fn start(test: &str) -> Option<BackendKind> {
    match asyncfutex::backend() {
        Ok(kind) => {
            eprintln!("[{test}] backend: {kind}");
            Some(kind)
        }
        Err(e) => {
            eprintln!(
                "SKIP: [{test}] no async futex backend (AFX_BACKEND={:?}): {e}",
                std::env::var("AFX_BACKEND").ok()
            );
            None
        }
    }
}

/// Writes a line to fd 2 without taking any std lock (safe in a forked
/// child, where a lock held by another parent thread at fork time would
/// never be released).
pub fn raw_eprint(msg: &str) {
    let mut line = msg.to_owned();
    line.push('\n');
    let mut bytes = line.as_bytes();
    while !bytes.is_empty() {
        // SAFETY: writing a valid buffer to fd 2.
        let n = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// `eprintln!` for forked children.
#[macro_export]
macro_rules! clog {
    ($($arg:tt)*) => {
        $crate::common::raw_eprint(&format!("[child {}] {}", std::process::id(), format!($($arg)*)))
    };
}

/// A child's verdict: `Err(message)` becomes a non-zero exit code.
pub type ChildResult = Result<(), String>;

/// Fails a child with a message (use with `?` or `return`).
pub fn fail<T>(msg: impl Into<String>) -> Result<T, String> {
    Err(msg.into())
}

/// `ensure!(cond, "fmt", ...)` for child bodies returning `ChildResult`.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err(format!("{} ({}:{})", format!($($arg)*), file!(), line!()));
        }
    };
}

/// Checks in a child that it runs the same backend kind as its parent.
pub fn child_backend_is(expected: BackendKind) -> ChildResult {
    match asyncfutex::backend() {
        Ok(kind) if kind == expected => Ok(()),
        Ok(kind) => fail(format!("child backend {kind}, parent {expected}")),
        Err(e) => fail(format!("child backend failed to start: {e}")),
    }
}

// ---------------------------------------------------------------------------
// Raw futex(2): the harness never relies on the library it tests.

/// Raw shared `FUTEX_WAIT`; `Ok(())` when woken, `Err(errno)` otherwise
/// (`EAGAIN` value mismatch, `ETIMEDOUT`, `EINTR`).
pub fn raw_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> Result<(), i32> {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs() as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a live, aligned u32; `tsp` is null or valid.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word as *const AtomicU32,
            libc::FUTEX_WAIT,
            expected,
            tsp,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

/// Raw shared `FUTEX_WAKE`; returns how many were woken (panics on error).
pub fn raw_wake(word: &AtomicU32, n: i32) -> u32 {
    // SAFETY: FUTEX_WAKE only uses the address as a key.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word as *const AtomicU32,
            libc::FUTEX_WAKE,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    assert!(
        ret >= 0,
        "raw FUTEX_WAKE: {}",
        std::io::Error::last_os_error()
    );
    ret as u32
}

/// How many kernel futex waiters (shared key) are queued on `word`, in any
/// process and of any kind (plain `FUTEX_WAIT`, `futex_waitv`, io_uring
/// `FUTEX_WAIT`), without waking any: `FUTEX_CMP_REQUEUE` from the word to
/// itself with 0 wakes returns the number of waiters it (re)queued. The
/// requeue keeps their FIFO order.
pub fn kernel_waiters(word: &AtomicU32) -> u32 {
    loop {
        let val = word.load(Ordering::SeqCst);
        // SAFETY: both addresses are the same live word; nothing is woken.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word as *const AtomicU32,
                libc::FUTEX_CMP_REQUEUE,
                0 as libc::c_int,
                i32::MAX as libc::c_long,
                word as *const AtomicU32,
                val,
            )
        };
        if ret >= 0 {
            return ret as u32;
        }
        let err = std::io::Error::last_os_error();
        assert_eq!(
            err.raw_os_error(),
            Some(libc::EAGAIN),
            "FUTEX_CMP_REQUEUE: {err}"
        );
    }
}

/// Polls `cond` until true; panics with `what` after [`WATCHDOG`]. The poll
/// interval is a watchdog granularity, not an ordering device.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WATCHDOG;
    let mut spins = 0u32;
    while !cond() {
        if Instant::now() >= deadline {
            dump_threads();
            panic!("watchdog: {what}");
        }
        spins += 1;
        if spins < 2000 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// Like [`wait_until`], but a `Result` for child bodies.
pub fn try_wait_until(what: &str, mut cond: impl FnMut() -> bool) -> ChildResult {
    let deadline = Instant::now() + WATCHDOG;
    let mut spins = 0u32;
    while !cond() {
        if Instant::now() >= deadline {
            return fail(format!("watchdog: {what}"));
        }
        spins += 1;
        if spins < 2000 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    Ok(())
}

/// Async [`wait_until`]: yields to the runtime between polls.
pub async fn wait_until_async(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WATCHDOG;
    let mut spins = 0u32;
    while !cond() {
        assert!(Instant::now() < deadline, "watchdog: {what}");
        spins += 1;
        if spins < 2000 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
}

/// Waits until exactly `n` kernel waiters are queued on `word`.
pub fn wait_for_waiters(word: &AtomicU32, n: u32, what: &str) {
    wait_until(&format!("{what}: want {n} kernel waiters"), || {
        kernel_waiters(word) == n
    });
}

/// Waits until the kernel waiters on `word` come *down* to `n`: waiters
/// that leave asynchronously, such as the io_uring waits of a SIGKILLed
/// process, which the kernel drops from a workqueue after `waitpid` has
/// returned. Every value above `n` is expected on the way; the count going
/// up (a new waiter while only departures were due) or below `n` fails.
pub fn wait_for_waiters_to_leave(word: &AtomicU32, n: u32, what: &str) {
    let mut prev = kernel_waiters(word);
    wait_until(
        &format!("{what}: want the kernel waiters down to {n}"),
        || {
            let now = kernel_waiters(word);
            assert!(
                now <= prev && now >= n,
                "{what}: kernel waiters went from {prev} to {now} while coming down to {n}"
            );
            prev = now;
            now == n
        },
    );
}

/// Child-side [`wait_for_waiters`].
pub fn try_wait_for_waiters(word: &AtomicU32, n: u32, what: &str) -> ChildResult {
    try_wait_until(&format!("{what}: want {n} kernel waiters"), || {
        kernel_waiters(word) == n
    })
}

/// Async [`wait_for_waiters`] (lets the runtime arm the waits meanwhile).
pub async fn wait_for_waiters_async(word: &AtomicU32, n: u32, what: &str) {
    let deadline = Instant::now() + WATCHDOG;
    let mut spins = 0u32;
    loop {
        let now = kernel_waiters(word);
        if now == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "watchdog: {what}: {now} kernel waiters, want {n}"
        );
        spins += 1;
        if spins < 2000 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
}

// ---------------------------------------------------------------------------
// Value handshakes on shared words (raw futex, blocking)

/// Blocks until `pred(word)`; returns the value. `Err` after [`WATCHDOG`].
pub fn try_wait_value(
    word: &AtomicU32,
    what: &str,
    pred: impl Fn(u32) -> bool,
) -> Result<u32, String> {
    let deadline = Instant::now() + WATCHDOG;
    loop {
        let v = word.load(Ordering::SeqCst);
        if pred(v) {
            return Ok(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return fail(format!("watchdog: {what} (word is {v})"));
        }
        let _ = raw_wait(word, v, Some(deadline - now));
    }
}

/// Panicking [`try_wait_value`] for the parent.
pub fn wait_value(word: &AtomicU32, what: &str, pred: impl Fn(u32) -> bool) -> u32 {
    try_wait_value(word, what, pred).unwrap_or_else(|e| {
        dump_threads();
        panic!("{e}")
    })
}

/// Prints every thread of this process with where it sleeps (for watchdog
/// failures).
pub fn dump_threads() {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    let mut out = String::from("threads of this process (tid comm wchan syscall):\n");
    for t in tasks.flatten() {
        let p = t.path();
        let read = |f: &str| {
            std::fs::read_to_string(p.join(f))
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        out.push_str(&format!(
            "  {} {} {} {}\n",
            t.file_name().to_string_lossy(),
            read("comm"),
            read("wchan"),
            read("syscall")
        ));
    }
    raw_eprint(&out);
}

/// Stores `v` and wakes every raw waiter of the word.
pub fn store_wake(word: &AtomicU32, v: u32) {
    word.store(v, Ordering::SeqCst);
    raw_wake(word, i32::MAX);
}

/// Adds `d` and wakes every raw waiter; returns the new value.
pub fn add_wake(word: &AtomicU32, d: u32) -> u32 {
    let v = word.fetch_add(d, Ordering::SeqCst) + d;
    raw_wake(word, i32::MAX);
    v
}

/// Async wait for `pred(word)` through the library's own handle on it.
pub async fn wait_value_async(futex: &AsyncFutex, what: &str, pred: impl Fn(u32) -> bool) -> u32 {
    loop {
        let v = futex.word().load(Ordering::SeqCst);
        if pred(v) {
            return v;
        }
        tokio::time::timeout(WATCHDOG, futex.wait_async(v))
            .await
            .unwrap_or_else(|_| panic!("watchdog: {what} (word is {v})"))
            .unwrap_or_else(|e| panic!("{what}: wait_async: {e}"));
    }
}

/// A reusable barrier for two threads that spins briefly before sleeping
/// on a futex (cheaper than `std::sync::Barrier` in tight race loops).
#[derive(Default)]
pub struct PairBarrier {
    arrived: AtomicU32,
    generation: AtomicU32,
}

impl PairBarrier {
    pub fn wait(&self) {
        let generation = self.generation.load(Ordering::SeqCst);
        if self.arrived.fetch_add(1, Ordering::SeqCst) == 1 {
            self.arrived.store(0, Ordering::SeqCst);
            self.generation.fetch_add(1, Ordering::SeqCst);
            raw_wake(&self.generation, i32::MAX);
            return;
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::SeqCst) == generation {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else if spins < 128 {
                std::thread::yield_now();
            } else {
                let _ = raw_wait(&self.generation, generation, None);
            }
        }
    }
}

/// A thread that, `rounds` times, waits at `go`, calls `wake(1)` on the
/// futex, stores how many waiters it woke in `result` and waits at `done`:
/// one wake in lockstep with each round of a race test.
pub struct SteppedWaker {
    pub go: Arc<PairBarrier>,
    pub done: Arc<PairBarrier>,
    pub result: Arc<AtomicU32>,
    pub thread: std::thread::JoinHandle<()>,
}

pub fn stepped_waker(f: &Arc<AsyncFutex>, rounds: u32) -> SteppedWaker {
    let go = Arc::new(PairBarrier::default());
    let done = Arc::new(PairBarrier::default());
    let result = Arc::new(AtomicU32::new(0));
    let thread = {
        let (f, go, done, result) = (
            Arc::clone(f),
            Arc::clone(&go),
            Arc::clone(&done),
            Arc::clone(&result),
        );
        std::thread::spawn(move || {
            for _ in 0..rounds {
                go.wait();
                result.store(f.wake(1).unwrap(), Ordering::SeqCst);
                done.wait();
            }
        })
    };
    SteppedWaker {
        go,
        done,
        result,
        thread,
    }
}

// ---------------------------------------------------------------------------
// Runtimes

/// A current-thread runtime with timers.
pub fn rt_current() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A multi-thread runtime with `workers` workers.
pub fn rt_multi(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Awaits `fut` under [`WATCHDOG`], panicking with `what` on expiry.
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(WATCHDOG, fut)
        .await
        .unwrap_or_else(|_| panic!("watchdog: {what}"))
}

// ---------------------------------------------------------------------------
// Manual polling

/// A waker that counts its wake-ups.
#[derive(Default)]
pub struct CountingWaker {
    count: AtomicUsize,
}

impl CountingWaker {
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }
}

/// A fresh counting waker and its `Waker`.
pub fn counting_waker() -> (Arc<CountingWaker>, Waker) {
    let counter = Arc::new(CountingWaker::default());
    let waker = Waker::from(Arc::clone(&counter));
    (counter, waker)
}

/// Polls `fut` once with `waker`.
pub fn poll_once<F: Future + Unpin>(fut: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(fut).poll(&mut Context::from_waker(waker))
}

/// Whether `fd` is readable within `timeout_ms` (0: right now).
pub fn fd_readable(fd: BorrowedFd<'_>, timeout_ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if n >= 0 {
            return n == 1 && pfd.revents & libc::POLLIN != 0;
        }
        let err = std::io::Error::last_os_error();
        assert_eq!(err.raw_os_error(), Some(libc::EINTR), "poll: {err}");
    }
}

// ---------------------------------------------------------------------------
// fork with a watchdog

/// A forked child process. Dropping it unreaped kills it (so a failing
/// parent never leaves a child behind).
pub struct Child {
    pid: libc::pid_t,
    pidfd: Option<OwnedFd>,
    name: String,
    reaped: bool,
}

/// Runs `body` in the freshly forked child: on a new thread (so no tokio
/// context or thread-local state of the forking thread leaks in), under
/// `catch_unwind`, and always leaves with `_exit` (never returns into the
/// test harness). Exit codes: 0 ok, 1 `Err(message)`, 101 panic.
fn run_child<F: FnOnce() -> ChildResult + Send>(name: &str, body: F) -> ! {
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("test-child".into())
                .spawn_scoped(s, body)
                .map(|h| h.join())
        })
    }));
    let code = match outcome {
        Ok(Ok(Ok(Ok(())))) => 0,
        Ok(Ok(Ok(Err(msg)))) => {
            clog!("{name}: FAILED: {msg}");
            1
        }
        Ok(Ok(Err(_))) | Err(_) => {
            clog!("{name}: panicked");
            101
        }
        Ok(Err(e)) => {
            clog!("{name}: cannot spawn the child thread: {e}");
            102
        }
    };
    // SAFETY: leaving the child without running the parent's atexit state.
    unsafe { libc::_exit(code) }
}

/// The pid of the test process itself (set with the panic hook).
static TEST_PID: AtomicI32 = AtomicI32::new(0);

/// Installs, once and in the test process, a panic hook that writes a fork
/// child's panics without std's locks (`raw_eprint`) and leaves the test
/// process's own panics to the previous hook. Set before any fork rather
/// than in the child: `set_hook` takes the hook's write lock, which a
/// parent thread running the hook at fork time (a library thread catching
/// a panicking waker, say) would hold for ever in the child.
fn install_fork_aware_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: getpid has no preconditions.
        TEST_PID.store(unsafe { libc::getpid() }, Ordering::SeqCst);
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // SAFETY: getpid has no preconditions.
            if unsafe { libc::getpid() } == TEST_PID.load(Ordering::SeqCst) {
                previous(info);
            } else {
                raw_eprint(&format!("child panic: {info}"));
            }
        }));
    });
}

/// Forks; the child runs `body` (see [`run_child`]), the parent gets a
/// [`Child`].
pub fn fork_child<F: FnOnce() -> ChildResult + Send>(name: &str, body: F) -> Child {
    install_fork_aware_panic_hook();
    std::io::stderr().flush().ok();
    // SAFETY: fork; the child only runs `run_child`, which ends in `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        run_child(name, body);
    }
    // SAFETY: pidfd_open on our own child.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let pidfd = (fd >= 0).then(|| {
        // SAFETY: a fresh fd we own.
        unsafe { OwnedFd::from_raw_fd(fd as i32) }
    });
    Child {
        pid,
        pidfd,
        name: name.to_owned(),
        reaped: false,
    }
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

fn decode(status: libc::c_int) -> Exit {
    if libc::WIFEXITED(status) {
        Exit::Code(libc::WEXITSTATUS(status))
    } else {
        Exit::Signal(libc::WTERMSIG(status))
    }
}

impl Child {
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    fn reap(&mut self) -> Exit {
        let mut status = 0;
        loop {
            // SAFETY: waiting for our own child.
            let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if r == self.pid {
                break;
            }
            let err = std::io::Error::last_os_error();
            assert_eq!(err.raw_os_error(), Some(libc::EINTR), "waitpid: {err}");
        }
        self.reaped = true;
        decode(status)
    }

    fn exited_within(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        match &self.pidfd {
            Some(pidfd) => loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if fd_readable(
                    pidfd_borrow(pidfd),
                    left.as_millis().min(i32::MAX as u128) as i32,
                ) {
                    return true;
                }
                if Instant::now() >= deadline {
                    return false;
                }
            },
            None => loop {
                // SAFETY: peeking at our own child without reaping it.
                let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
                // SAFETY: as above.
                let r = unsafe {
                    libc::waitid(
                        libc::P_PID,
                        self.pid as libc::id_t,
                        &mut info,
                        libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
                    )
                };
                // SAFETY: reading the pid field of a filled siginfo.
                if r == 0 && unsafe { info.si_pid() } == self.pid {
                    return true;
                }
                if Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(1));
            },
        }
    }

    /// Waits for the child under [`CHILD_WATCHDOG`]; on expiry kills it and
    /// panics.
    pub fn wait(mut self) -> Exit {
        if !self.exited_within(CHILD_WATCHDOG) {
            let _ = self.kill();
            panic!(
                "watchdog: child '{}' (pid {}) still running after {:?}; killed",
                self.name, self.pid, CHILD_WATCHDOG
            );
        }
        self.reap()
    }

    /// Waits and asserts a clean exit (code 0).
    pub fn expect_ok(self) {
        let name = self.name.clone();
        let exit = self.wait();
        assert_eq!(
            exit,
            Exit::Code(0),
            "child '{name}' failed (1: error, 101: panic; see its stderr above)"
        );
    }

    /// `SIGKILL` and reap.
    pub fn kill(&mut self) -> Exit {
        // SAFETY: signalling our own unreaped child.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        self.reap()
    }
}

fn pidfd_borrow(fd: &OwnedFd) -> BorrowedFd<'_> {
    use std::os::fd::AsFd;
    fd.as_fd()
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: our own unreaped child.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let mut status = 0;
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(self.pid, &mut status, 0) };
            self.reaped = true;
        }
    }
}

// ---------------------------------------------------------------------------
// Cross-process ping-pong on one shared word
//
// The ball starts at 0. In round i (0-based) the parent stores 2i+1 and
// wakes, then waits for 2i+2; the child waits for 2i+1, then stores 2i+2 and
// wakes. Every value a side sees must be its own last write or the peer's
// next one: anything else is a reordering or a lost update.

/// Parent side, async (`wait_async`). Returns the number of completions
/// that saw no change (spurious, S4).
pub async fn pingpong_parent_async(futex: &AsyncFutex, rounds: u32) -> u32 {
    let word = futex.word();
    let mut spurious = 0;
    for i in 0..rounds {
        let mine = 2 * i + 1;
        word.store(mine, Ordering::SeqCst);
        futex.wake(1).expect("wake");
        loop {
            let seen = word.load(Ordering::SeqCst);
            if seen == mine + 1 {
                break;
            }
            assert_eq!(seen, mine, "round {i}: parent saw {seen} out of order");
            tokio::time::timeout(WATCHDOG, futex.wait_async(seen))
                .await
                .unwrap_or_else(|_| panic!("watchdog: round {i}: parent waiting for {}", mine + 1))
                .expect("wait_async");
            if word.load(Ordering::SeqCst) == seen {
                spurious += 1;
            }
        }
    }
    spurious
}

/// Child side, async on its own current-thread runtime.
pub fn pingpong_child_async(futex: &AsyncFutex, rounds: u32) -> ChildResult {
    let rt = rt_current();
    rt.block_on(async {
        let word = futex.word();
        for i in 0..rounds {
            let want = 2 * i + 1;
            loop {
                let seen = word.load(Ordering::SeqCst);
                if seen == want {
                    break;
                }
                ensure!(
                    seen == 2 * i,
                    "round {i}: child saw {seen}, want {want} or {}",
                    2 * i
                );
                match tokio::time::timeout(WATCHDOG, futex.wait_async(seen)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return fail(format!("round {i}: wait_async: {e}")),
                    Err(_) => {
                        return fail(format!("watchdog: round {i}: child waiting for {want}"))
                    }
                }
            }
            word.store(want + 1, Ordering::SeqCst);
            futex.wake(1).map_err(|e| format!("wake: {e}"))?;
        }
        Ok(())
    })
}

/// Child side, blocking `wait`.
pub fn pingpong_child_blocking(futex: &AsyncFutex, rounds: u32) -> ChildResult {
    let word = futex.word();
    for i in 0..rounds {
        let want = 2 * i + 1;
        loop {
            let seen = word.load(Ordering::SeqCst);
            if seen == want {
                break;
            }
            ensure!(
                seen == 2 * i,
                "round {i}: child saw {seen}, want {want} or {}",
                2 * i
            );
            match futex.wait(seen, Some(WATCHDOG)) {
                Ok(WaitStatus::Completed) => {}
                Ok(WaitStatus::TimedOut) => {
                    return fail(format!("watchdog: round {i}: child waiting for {want}"))
                }
                Err(e) => return fail(format!("round {i}: wait: {e}")),
            }
        }
        word.store(want + 1, Ordering::SeqCst);
        futex.wake(1).map_err(|e| format!("wake: {e}"))?;
    }
    Ok(())
}

/// A fresh anonymous shared mapping of one page, inherited by `fork`.
pub fn shared_page() -> Arc<SharedMemory> {
    Arc::new(SharedMemory::anonymous(4096).expect("SharedMemory::anonymous"))
}

/// Word `i` of `mem` (panics when out of bounds).
pub fn word(mem: &SharedMemory, i: usize) -> &AtomicU32 {
    mem.word(i).expect("word index")
}

/// This process's open descriptors: number → what `/proc/self/fd` says
/// each refers to.
pub fn open_fds() -> std::collections::BTreeMap<String, String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path())
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), target)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Seccomp: deny system calls as container runtimes' default profiles do
// (used by `fallback` and `containers`)

/// Installs, in the calling process (all its threads), a seccomp filter
/// that fails the system calls `nrs` (x86_64 numbers) with `errno`.
#[cfg(target_arch = "x86_64")]
pub fn deny_syscalls(nrs: &[u32], errno: i32) -> ChildResult {
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    /// offsetof(struct seccomp_data, nr) and (…, arch).
    const NR: u32 = 0;
    const ARCH: u32 = 4;
    fn stmt(code: u32, k: u32) -> libc::sock_filter {
        libc::sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        }
    }
    fn jeq(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt,
            jf,
            k,
        }
    }
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    let mut filter = vec![
        stmt(load, ARCH),
        jeq(AUDIT_ARCH_X86_64, 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW), // another ABI: leave it alone
        stmt(load, NR),
    ];
    for &nr in nrs {
        filter.push(jeq(nr, 0, 1));
        filter.push(stmt(ret, libc::SECCOMP_RET_ERRNO | errno as u32));
    }
    filter.push(stmt(ret, libc::SECCOMP_RET_ALLOW));
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: plain prctl/seccomp calls with a valid, live filter program.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return fail(format!(
                "PR_SET_NO_NEW_PRIVS: {}",
                std::io::Error::last_os_error()
            ));
        }
        if libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_TSYNC,
            &prog as *const libc::sock_fprog,
        ) != 0
        {
            return fail(format!(
                "seccomp(SET_MODE_FILTER): {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

pub const IO_URING_SETUP: u32 = 425;
pub const IO_URING_ENTER: u32 = 426;
pub const IO_URING_REGISTER: u32 = 427;
pub const FUTEX_WAITV: u32 = 449;

/// Denies the io_uring syscalls with `EPERM` (as the container profiles
/// do), then proves it with a raw `io_uring_setup`.
#[cfg(target_arch = "x86_64")]
pub fn deny_io_uring() -> ChildResult {
    deny_syscalls(
        &[IO_URING_SETUP, IO_URING_ENTER, IO_URING_REGISTER],
        libc::EPERM,
    )?;
    // io_uring_params is 120 bytes; the filter refuses before reading.
    let mut params = [0u64; 16];
    // SAFETY: a raw io_uring_setup with a valid params buffer.
    let r = unsafe { libc::syscall(IO_URING_SETUP as libc::c_long, 4u32, params.as_mut_ptr()) };
    let err = std::io::Error::last_os_error();
    ensure!(
        r == -1 && err.raw_os_error() == Some(libc::EPERM),
        "io_uring_setup under the filter: ret {r}, {err}"
    );
    Ok(())
}

#[cfg(not(target_arch = "x86_64"))]
pub fn deny_syscalls(_nrs: &[u32], _errno: i32) -> ChildResult {
    unreachable!("guarded by supported()")
}

#[cfg(not(target_arch = "x86_64"))]
pub fn deny_io_uring() -> ChildResult {
    unreachable!("guarded by supported()")
}

pub fn supported(test: &str) -> bool {
    if cfg!(target_arch = "x86_64") {
        true
    } else {
        eprintln!(
            "SKIP: [{test}] the seccomp filter is written for x86_64 (AUDIT_ARCH_X86_64, syscall 425)"
        );
        false
    }
}
