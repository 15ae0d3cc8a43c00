//! Reliability soak and peer-death stress (issue 6).
//!
//! Two modes of one program:
//!
//! **Lost-wakeup soak** (default): `soak [--seconds N | --minutes N]
//! [--procs P] [--words W] [--ring L] [--decoys D] [--stall-secs S]
//! [--seed X]`. `P` forked processes pass tokens through rings of futex
//! words in shared memory. Every word has exactly one *real receiver*
//! (a tokio task in `wait_async`, a thread in blocking `wait`, a thread
//! polling a C `afx_wait_async` eventfd, or one polling an
//! [`EventFdFutex`](asyncfutex::EventFdFutex)) that waits **without a
//! timeout**, and exactly one sender (the receiver of the previous word),
//! which hands a token over with "store the new value + `wake(1)`". Each
//! ring carries exactly one token, so a handoff is the only event on its
//! word until the token comes round again: a lost wake stalls the ring for
//! good instead of being hidden by later traffic. *Decoy* waiters in every
//! process compete for the same words and are cancelled at random
//! (`tokio::select!` against short timers, futures dropped without being
//! looked at, C `afx_cancel`, `afx_free` of an armed handle, `EventFdFutex`
//! cancel and drop, timed blocking waits). A wake consumed by a decoy that
//! is then cancelled must be forwarded by the library (DESIGN S3), or the
//! ring stalls. A decoy whose wait *completes* behaves like any polite
//! condvar user: it passes the wake on if the real receiver has not
//! consumed the token yet.
//!
//! The parent is the watchdog: a word holding a token its receiver has not
//! taken for `--stall-secs` (default 20) fails the run: it prints every
//! word's value, the expected state, the kernel waiters queued on it, kills
//! the children and exits non-zero. At the end the tokens are retired, the
//! counts checked for conservation and one line printed:
//! `SOAK OK backend=... seconds=... procs=... handoffs=... wakes=...
//! cancels=... (select=... drop=... afx_cancel=... afx_free=... efd=...
//! timeout=...) stalls=0`.
//!
//! **Peer death** (`soak kill [--rounds N] [--seed X]`), after glibc's
//! tst-robust8: every round forks waiters, wakers and cancellers (looping
//! arm/cancel) on one word, SIGKILLs one of them at a random moment, checks
//! that the survivors keep working, then checks exact wake counts (`wake(1)`
//! returns 1 and wakes exactly one waiter) and that once every waiter is
//! gone `wake` returns 0 and no kernel waiter is left. Prints
//! `KILL OK rounds=... kills=... (waiter=... waker=... canceller=...)
//! stale=0`.
//!
//! `--sabotage` is the soak's own self-test: decoys swallow the wakes they
//! consume (as a library without S3 would), and the run must fail with a
//! STALL.
//!
//! The backend is the library's choice (`AFX_BACKEND=io_uring|thread`).
//! CI runs the bounded modes through `tests/reliability_soak.rs`; release
//! testing: `cargo run --release --example soak -- --minutes 15`.

use std::io::{self, Write};
use std::os::fd::RawFd;
use std::process::ExitCode;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use asyncfutex::ffi::{self, afx_t};
use asyncfutex::SharedMemory;

#[path = "soak/kill.rs"]
mod kill;
#[path = "soak/ring.rs"]
mod ring;

const USAGE: &str = "\
usage: soak [--seconds N | --minutes N] [--procs P] [--words W] [--ring L]
            [--decoys D] [--lone N] [--stall-secs S] [--seed X] [--quiet] [--sabotage]
       soak kill [--rounds N] [--stall-secs S] [--seed X] [--quiet]";

/// Command-line options of both modes.
#[derive(Debug, Clone)]
pub struct Options {
    /// Soak duration.
    pub duration: Duration,
    /// Worker processes of the soak.
    pub procs: usize,
    /// Futex words in all rings.
    pub words: usize,
    /// Words per ring (one token per ring).
    pub ring: usize,
    /// Decoy multiplier (decoys of each kind per process).
    pub decoys: usize,
    /// Lone receivers (and lone decoy processes); see `ring.rs`.
    pub lone: usize,
    /// No progress for this long is a stall.
    pub stall: Duration,
    /// Base seed of every random choice.
    pub seed: u64,
    /// Rounds of the peer-death stress.
    pub rounds: u32,
    /// Fewer progress lines.
    pub quiet: bool,
    /// Self-test of the soak's detector: decoys swallow wakes (must stall).
    pub sabotage: bool,
}

impl Default for Options {
    fn default() -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ (u64::from(std::process::id()) << 32);
        Options {
            duration: Duration::from_secs(30),
            procs: 4,
            words: 48,
            ring: 6,
            decoys: 2,
            lone: 4,
            stall: Duration::from_secs(20),
            seed,
            rounds: 100,
            quiet: false,
            sabotage: false,
        }
    }
}

fn parse_args() -> Result<(bool, Options), String> {
    let mut opts = Options::default();
    let mut kill_mode = false;
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("kill") {
        kill_mode = true;
        args.next();
    } else if args.peek().map(String::as_str) == Some("soak") {
        args.next();
    }
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let v = args.next().ok_or_else(|| format!("{name} needs a value"))?;
            v.parse::<u64>()
                .map_err(|_| format!("{name}: not a number: {v}"))
        };
        match arg.as_str() {
            "--seconds" => opts.duration = Duration::from_secs(value("--seconds")?),
            "--minutes" => opts.duration = Duration::from_secs(60 * value("--minutes")?),
            "--procs" => opts.procs = value("--procs")? as usize,
            "--words" => opts.words = value("--words")? as usize,
            "--ring" => opts.ring = value("--ring")? as usize,
            "--decoys" => opts.decoys = value("--decoys")? as usize,
            "--lone" => opts.lone = value("--lone")? as usize,
            "--stall-secs" => opts.stall = Duration::from_secs(value("--stall-secs")?),
            "--seed" => opts.seed = value("--seed")?,
            "--rounds" => opts.rounds = value("--rounds")? as u32,
            "--quiet" => opts.quiet = true,
            "--sabotage" => opts.sabotage = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !(1..=ring::MAX_PROCS).contains(&opts.procs) {
        return Err(format!("--procs must be 1..={}", ring::MAX_PROCS));
    }
    if !(2..=64).contains(&opts.ring) {
        return Err("--ring must be 2..=64".to_owned());
    }
    if opts.words < opts.ring || opts.words > ring::MAX_WORDS {
        return Err(format!(
            "--words must be between --ring and {}",
            ring::MAX_WORDS
        ));
    }
    if opts.lone > ring::MAX_LONE {
        return Err(format!("--lone must be 0..={}", ring::MAX_LONE));
    }
    if opts.decoys > 16 {
        return Err("--decoys must be 0..=16".to_owned());
    }
    if opts.stall.is_zero() || opts.duration.is_zero() || opts.rounds == 0 {
        return Err("durations and --rounds must be > 0".to_owned());
    }
    Ok((kill_mode, opts))
}

fn main() -> ExitCode {
    let (kill_mode, opts) = match parse_args() {
        Ok(parsed) => parsed,
        Err(msg) => {
            if !msg.is_empty() {
                eprintln!("soak: {msg}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let backend = match asyncfutex::backend() {
        Ok(kind) => kind,
        Err(e) => {
            eprintln!("soak: no wait backend: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = if kill_mode {
        kill::run(&opts, backend)
    } else {
        ring::run(&opts, backend)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = io::stdout().flush();
            eprintln!("soak: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers shared by both modes.

/// xorshift64*: small, fast, good enough to pick delays and words.
pub struct Rng(u64);

impl Rng {
    /// A generator for one agent: `seed` mixed with `stream`.
    pub fn new(seed: u64, stream: u64) -> Rng {
        let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // splitmix64 finaliser, so nearby streams diverge at once.
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(z | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// A short random pause, mostly sub-millisecond, sometimes longer: the
    /// lifetime of a decoy wait or a kill delay.
    pub fn pause(&mut self) -> Duration {
        let us = match self.below(100) {
            0..=49 => self.below(400),
            50..=89 => self.below(3_000),
            _ => self.below(15_000),
        };
        Duration::from_micros(us)
    }
}

/// The 32-bit word at `index` of `mem`.
pub fn word(mem: &SharedMemory, index: usize) -> &AtomicU32 {
    mem.word(index).expect("word index in bounds")
}

/// The 64-bit counter at 8-byte slot `slot` of `mem`.
pub fn counter(mem: &SharedMemory, slot: usize) -> &AtomicU64 {
    let end = (slot + 1) * 8;
    assert!(end <= mem.len(), "counter slot out of bounds");
    // SAFETY: in bounds (checked above); the mapping is page-aligned so
    // every 8-byte slot is aligned for AtomicU64; the memory lives as long
    // as `mem` and is only ever accessed atomically by this program.
    unsafe { &*mem.as_ptr().add(slot * 8).cast::<AtomicU64>() }
}

/// How many kernel futex waiters are queued on `w` (any process, any kind):
/// `FUTEX_CMP_REQUEUE` of every waiter onto the same word, waking none.
/// Requeueing within one hash bucket keeps their order.
pub fn kernel_waiters(w: &AtomicU32) -> u32 {
    loop {
        let val = w.load(Ordering::SeqCst);
        // SAFETY: both addresses are the same live, aligned word; nothing is
        // woken (nr_wake 0).
        let ret = unsafe {
            libc::syscall(
                libc::SYS_futex,
                w as *const AtomicU32,
                libc::FUTEX_CMP_REQUEUE,
                0 as libc::c_int,
                i32::MAX as libc::c_long,
                w as *const AtomicU32,
                val,
            )
        };
        if ret >= 0 {
            return ret as u32;
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN) {
            return u32::MAX;
        }
    }
}

/// A plain `futex(FUTEX_WAKE)` on a shared key, as a peer that does not link
/// the library would make it. Returns the number woken.
pub fn raw_wake(w: &AtomicU32, n: i32) -> io::Result<u32> {
    // SAFETY: FUTEX_WAKE only reads the address to find the key; `w` is a
    // live aligned word.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_futex,
            w as *const AtomicU32,
            libc::FUTEX_WAKE,
            n as libc::c_int,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as u32)
    }
}

/// Waits until `fd` is readable or `timeout` (`None`: forever) passes.
pub fn poll_in(fd: RawFd, timeout: Option<Duration>) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    loop {
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: one valid pollfd, a valid or null timespec, no sigmask.
        let rc = unsafe { libc::ppoll(&mut pfd, 1, ts_ptr, std::ptr::null()) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(err);
        }
        return Ok(rc > 0);
    }
}

/// A C API handle (`afx_new` … `afx_free`) on a word of `mem`, which it
/// keeps mapped.
pub struct Afx {
    h: NonNull<afx_t>,
    _mem: Arc<SharedMemory>,
}

// SAFETY: the C API lets any thread use a handle (`afx_wake`/`afx_wait`
// from any thread; the async trio from one owner at a time): an `Afx` is
// owned by exactly one thread at a time.
unsafe impl Send for Afx {}

fn rc_result(what: &str, rc: i32) -> io::Result<i32> {
    if rc < 0 {
        let e = io::Error::from_raw_os_error(-rc);
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    } else {
        Ok(rc)
    }
}

impl Afx {
    /// `afx_new` on word `index` of `mem` (shared key).
    pub fn new(mem: &Arc<SharedMemory>, index: usize) -> io::Result<Afx> {
        let addr = word(mem, index) as *const AtomicU32 as *mut u32;
        // SAFETY: an aligned word of a mapping that the handle keeps alive
        // (`_mem`) until `afx_free`; this program accesses it atomically.
        let h = unsafe { ffi::afx_new(addr, 0) };
        match NonNull::new(h) {
            Some(h) => Ok(Afx {
                h,
                _mem: Arc::clone(mem),
            }),
            None => Err(io::Error::last_os_error()),
        }
    }

    /// `afx_wake(n)`.
    pub fn wake(&self, n: u32) -> io::Result<u32> {
        // SAFETY: a live handle.
        rc_result("afx_wake", unsafe { ffi::afx_wake(self.h.as_ptr(), n) }).map(|n| n as u32)
    }

    /// `afx_wait_async(expected)`.
    pub fn arm(&self, expected: u32) -> io::Result<()> {
        // SAFETY: a live handle.
        rc_result("afx_wait_async", unsafe {
            ffi::afx_wait_async(self.h.as_ptr(), expected)
        })
        .map(drop)
    }

    /// `afx_ack`: whether the armed wait completed.
    pub fn ack(&self) -> io::Result<bool> {
        // SAFETY: a live handle.
        rc_result("afx_ack", unsafe { ffi::afx_ack(self.h.as_ptr()) }).map(|r| r == 1)
    }

    /// `afx_cancel`.
    pub fn cancel(&self) -> io::Result<()> {
        // SAFETY: a live handle.
        rc_result("afx_cancel", unsafe { ffi::afx_cancel(self.h.as_ptr()) }).map(drop)
    }

    /// `afx_eventfd`.
    pub fn eventfd(&self) -> RawFd {
        // SAFETY: a live handle.
        unsafe { ffi::afx_eventfd(self.h.as_ptr()) }
    }
}

impl Drop for Afx {
    fn drop(&mut self) {
        // SAFETY: a live handle, never used again (`afx_free` cancels an
        // armed wait, forwarding a consumed wake).
        unsafe { ffi::afx_free(self.h.as_ptr()) };
    }
}

/// Forks a child that runs `body` and `_exit`s with its code; a panic is
/// exit 101. The child dies with the parent (`PR_SET_PDEATHSIG`).
pub fn fork_child(body: impl FnOnce() -> i32) -> io::Result<libc::pid_t> {
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: the child only runs `body` and leaves with `_exit`; glibc's
    // malloc is fork-safe and the library re-initialises its backend.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid > 0 {
        return Ok(pid);
    }
    // SAFETY: prctl(PR_SET_PDEATHSIG) has no memory-safety preconditions.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(101);
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: leave the child without running the parent's exit path.
    unsafe { libc::_exit(code) }
}

/// How a reaped child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `exit(code)`.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit status {c}"),
            Exit::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// `waitpid`, blocking or not: `None` while the child runs.
pub fn reap(pid: libc::pid_t, block: bool) -> io::Result<Option<Exit>> {
    let mut status = 0;
    loop {
        let flags = if block { 0 } else { libc::WNOHANG };
        // SAFETY: reaps our own child; `status` is a valid out-pointer.
        let ret = unsafe { libc::waitpid(pid, &mut status, flags) };
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(err);
        }
        if ret == 0 {
            return Ok(None);
        }
        return Ok(Some(if libc::WIFSIGNALED(status) {
            Exit::Signal(libc::WTERMSIG(status))
        } else {
            Exit::Code(libc::WEXITSTATUS(status))
        }));
    }
}

/// Waits for `pid` to end within `limit`.
pub fn reap_within(pid: libc::pid_t, limit: Duration) -> io::Result<Option<Exit>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(exit) = reap(pid, false)? {
            return Ok(Some(exit));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// SIGKILL, ignoring a child that is already gone.
pub fn kill9(pid: libc::pid_t) {
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}
