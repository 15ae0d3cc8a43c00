//! What arming costs in the thread backend, and the same-CPU ping-pong it
//! shapes: a measurement tool for `src/backend/thread/`.
//!
//! `AFX_BACKEND=thread cargo run --release --example thread_arm_cost -- [pingpong|arm|all] [rounds] [passes]`
//!
//! - `pingpong`: two processes pinned to CPU 0 pass a value back and forth
//!   through two shared words, with raw `FUTEX_WAIT`/`FUTEX_WAKE` and with
//!   the C API + epoll (`afx_wait_async` / `epoll_wait` / `afx_ack`), in two
//!   orders: *natural* (`store; afx_wake(peer); load; afx_wait_async(me);
//!   epoll_wait; afx_ack`) and *arm-first* (`load; afx_wait_async(me);
//!   store; afx_wake(peer); epoll_wait; afx_ack`). The runs are interleaved
//!   `passes` times; the medians of each pass are printed, then the median
//!   of the pass medians.
//! - `arm`: arms 1,000 `EventFdFutex` handles on distinct words, back to
//!   back, then cancels them; prints the time per arm and per cancel and
//!   how often the helper threads went to sleep (voluntary context
//!   switches), which counts the kicks that reached a sleeping helper.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use asyncfutex::ffi::{afx_ack, afx_eventfd, afx_new, afx_t, afx_wait_async, afx_wake};
use asyncfutex::{EventFdFutex, SharedMemory};

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; we set one bit and apply it to
    // this thread only (threads it starts later inherit it).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn raw_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: plain FUTEX_WAIT on a live shared word.
    unsafe {
        libc::syscall(libc::SYS_futex, word, libc::FUTEX_WAIT, expected, 0usize);
    }
}

fn raw_wake(word: &AtomicU32) {
    // SAFETY: plain FUTEX_WAKE on a live shared word.
    unsafe {
        libc::syscall(libc::SYS_futex, word, libc::FUTEX_WAKE, 1);
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Raw,
    Natural,
    ArmFirst,
}

struct Side {
    mode: Mode,
    me: &'static AtomicU32,
    peer: &'static AtomicU32,
    me_h: *mut afx_t,
    peer_h: *mut afx_t,
    epfd: i32,
}

impl Side {
    fn new(mode: Mode, me: &'static AtomicU32, peer: &'static AtomicU32) -> Side {
        let mut side = Side {
            mode,
            me,
            peer,
            me_h: std::ptr::null_mut(),
            peer_h: std::ptr::null_mut(),
            epfd: -1,
        };
        if mode != Mode::Raw {
            // SAFETY: both words live in a shared mapping kept for the
            // process's life; epoll set-up on our own fds.
            unsafe {
                side.me_h = afx_new(me.as_ptr(), 0);
                side.peer_h = afx_new(peer.as_ptr(), 0);
                assert!(!side.me_h.is_null() && !side.peer_h.is_null());
                side.epfd = libc::epoll_create1(libc::EPOLL_CLOEXEC);
                let mut ev = libc::epoll_event {
                    events: libc::EPOLLIN as u32,
                    u64: 0,
                };
                libc::epoll_ctl(
                    side.epfd,
                    libc::EPOLL_CTL_ADD,
                    afx_eventfd(side.me_h),
                    &mut ev,
                );
            }
        }
        side
    }

    fn publish(&self, v: u32) {
        self.peer.store(v, Ordering::Release);
        if self.mode == Mode::Raw {
            raw_wake(self.peer);
        } else {
            // SAFETY: a live handle.
            unsafe { afx_wake(self.peer_h, 1) };
        }
    }

    fn epoll_ack(&self) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: one event into a valid buffer; a live handle.
        unsafe {
            while libc::epoll_wait(self.epfd, &mut ev, 1, 10_000) < 0 {}
            afx_ack(self.me_h);
        }
    }

    /// One exchange: publish `send` to the peer, then wait for our word to
    /// reach `target`. `send` of `None` only waits.
    fn step(&self, send: Option<u32>, target: u32) {
        match self.mode {
            Mode::Raw => {
                if let Some(v) = send {
                    self.publish(v);
                }
                loop {
                    let seen = self.me.load(Ordering::Acquire);
                    if seen == target {
                        return;
                    }
                    raw_wait(self.me, seen);
                }
            }
            Mode::Natural => {
                if let Some(v) = send {
                    self.publish(v);
                }
                loop {
                    let seen = self.me.load(Ordering::Acquire);
                    if seen == target {
                        return;
                    }
                    // SAFETY: a live handle.
                    assert_eq!(unsafe { afx_wait_async(self.me_h, seen) }, 0);
                    self.epoll_ack();
                }
            }
            Mode::ArmFirst => {
                let mut send = send;
                loop {
                    let seen = self.me.load(Ordering::Acquire);
                    if seen == target {
                        if let Some(v) = send {
                            self.publish(v);
                        }
                        return;
                    }
                    // SAFETY: a live handle.
                    assert_eq!(unsafe { afx_wait_async(self.me_h, seen) }, 0);
                    if let Some(v) = send.take() {
                        self.publish(v);
                    }
                    self.epoll_ack();
                }
            }
        }
    }
}

fn ctx_switches() -> u64 {
    // SAFETY: getrusage fills a zeroed struct.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        (ru.ru_nvcsw + ru.ru_nivcsw) as u64
    }
}

/// Median round trip (µs) of one same-CPU run in fresh processes, and the
/// context switches per round trip of the measuring process (all threads).
fn run(mode: Mode, rounds: u32) -> (f64, f64) {
    let mut fds = [0; 2];
    // SAFETY: a pipe for the result.
    unsafe { libc::pipe(fds.as_mut_ptr()) };
    // SAFETY: the child measures, writes 8 bytes and `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let value = measure(mode, rounds);
        // SAFETY: write 16 bytes to the pipe and leave.
        unsafe {
            libc::write(fds[1], (&value as *const (f64, f64)).cast(), 16);
            libc::_exit(0);
        }
    }
    let mut value = (f64::NAN, f64::NAN);
    // SAFETY: read 16 bytes from the pipe; reap the child.
    unsafe {
        libc::read(fds[0], (&mut value as *mut (f64, f64)).cast(), 16);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    value
}

fn measure(mode: Mode, rounds: u32) -> (f64, f64) {
    let mem: &'static SharedMemory =
        Box::leak(Box::new(SharedMemory::anonymous(4096).expect("memory")));
    let a = mem.word(0).expect("in bounds");
    let b = mem.word(16).expect("in bounds");
    // SAFETY: the child only runs the ping-pong and `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        pin(0);
        let side = Side::new(mode, b, a);
        for k in 0..rounds {
            side.step(if k == 0 { None } else { Some(k) }, k + 1);
        }
        side.publish(rounds);
        // SAFETY: leave the child at once.
        unsafe { libc::_exit(0) };
    }
    pin(0);
    let side = Side::new(mode, a, b);
    let mut samples = Vec::with_capacity(rounds as usize);
    let switches = ctx_switches();
    for k in 0..rounds {
        let start = Instant::now();
        side.step(Some(k + 1), k + 1);
        samples.push(start.elapsed().as_nanos() as f64 / 1000.0);
    }
    let switches = (ctx_switches() - switches) as f64 / f64::from(rounds);
    // SAFETY: our own child.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    samples.drain(..(rounds as usize / 10));
    samples.sort_by(f64::total_cmp);
    (samples[samples.len() / 2], switches)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn pingpong(rounds: u32, passes: u32) {
    let modes = [Mode::Raw, Mode::Natural, Mode::ArmFirst];
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    let mut switches: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    println!("same CPU round trip, median of {rounds} rounds per pass (µs)");
    for pass in 0..passes {
        let line: Vec<String> = modes
            .iter()
            .enumerate()
            .map(|(i, &m)| {
                let (t, cs) = run(m, rounds);
                results[i].push(t);
                switches[i].push(cs);
                format!("{m:?} {t:.2} ({cs:.2} cs)")
            })
            .collect();
        println!("  pass {pass}: {}", line.join("  "));
    }
    let raw = median(&mut results[0]);
    for (i, m) in modes.iter().enumerate() {
        let t = median(&mut results[i]);
        let cs = median(&mut switches[i]);
        println!(
            "  {:<9} {t:7.2} µs  {:.2}x raw  {cs:.2} context switches per round trip (one side)",
            format!("{m:?}"),
            t / raw
        );
    }
}

/// Voluntary context switches of this process's `afx-*` helper threads.
fn helper_sleeps() -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let dir = entry.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !name.starts_with("afx-") {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        for line in status.lines() {
            if let Some(n) = line.strip_prefix("voluntary_ctxt_switches:") {
                total += n.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    total
}

fn arm_cost() -> io::Result<()> {
    const N: usize = 1000;
    let mem = Arc::new(SharedMemory::anonymous(N * 4)?);
    let handles: Vec<EventFdFutex> = (0..N)
        .map(|i| EventFdFutex::new(mem.futex(i)?))
        .collect::<io::Result<_>>()?;
    // Warm up: start the backend and its helpers.
    for h in &handles {
        h.arm(0)?;
    }
    for h in &handles {
        h.cancel();
    }
    for round in 0..3 {
        let sleeps = helper_sleeps();
        let start = Instant::now();
        for h in &handles {
            h.arm(0)?;
        }
        let armed = start.elapsed();
        let sleeps_arm = helper_sleeps() - sleeps;
        let start = Instant::now();
        for h in &handles {
            h.cancel();
        }
        let cancelled = start.elapsed();
        let sleeps_cancel = helper_sleeps() - sleeps - sleeps_arm;
        println!(
            "round {round}: {N} arms {:7.1} µs ({:.2} µs each, helper sleeps {sleeps_arm}); \
             {N} cancels {:7.1} µs ({:.2} µs each, helper sleeps {sleeps_cancel})",
            armed.as_secs_f64() * 1e6,
            armed.as_secs_f64() * 1e6 / N as f64,
            cancelled.as_secs_f64() * 1e6,
            cancelled.as_secs_f64() * 1e6 / N as f64,
        );
    }
    let _ = handles[0].as_raw_fd();
    Ok(())
}

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_else(|| "all".into());
    let rounds: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let passes: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3);
    if what == "arm" || what == "all" {
        arm_cost()?;
    }
    if what == "pingpong" || what == "all" {
        pingpong(rounds, passes);
    }
    Ok(())
}
