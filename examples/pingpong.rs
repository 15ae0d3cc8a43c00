//! Quick cross-process ping-pong: raw `FUTEX_WAIT`/`FUTEX_WAKE` against
//! asyncfutex through epoll on the eventfd, per backend, in one run.
//!
//! `cargo run --release --example pingpong -- [rounds]`
//!
//! Both processes are pinned to CPU 0 (software cost), then to CPUs 0 and 1.
//! This is a quick check; the full benchmark suite is a separate tool.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use asyncfutex::{BackendKind, EventFdFutex, SharedMemory};

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; we set one bit and apply it to
    // this thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn raw_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: plain FUTEX_WAIT on a live shared word.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word,
            libc::FUTEX_WAIT,
            expected,
            0usize,
            0usize,
            0u32,
        );
    }
}

fn raw_wake(word: &AtomicU32) {
    // SAFETY: plain FUTEX_WAKE on a live shared word.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word,
            libc::FUTEX_WAKE,
            1,
            0usize,
            0usize,
            0u32,
        );
    }
}

/// How one side waits for the word to reach `target` and publishes.
enum Side {
    Raw,
    Afx(EventFdFutex, i32),
}

impl Side {
    fn new(mem: &Arc<SharedMemory>, backend: Option<BackendKind>) -> io::Result<Side> {
        let Some(kind) = backend else {
            return Ok(Side::Raw);
        };
        asyncfutex::select_backend(Some(kind))?;
        let handle = EventFdFutex::new(mem.futex(0)?)?;
        // SAFETY: plain epoll set-up on our own fds.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 0,
        };
        // SAFETY: as above.
        unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, handle.as_raw_fd(), &mut ev) };
        Ok(Side::Afx(handle, epfd))
    }

    fn await_value(&self, word: &AtomicU32, target: u32) -> io::Result<()> {
        loop {
            let seen = word.load(Ordering::Acquire);
            if seen == target {
                return Ok(());
            }
            match self {
                Side::Raw => raw_wait(word, seen),
                Side::Afx(handle, epfd) => {
                    handle.arm(seen)?;
                    let mut ev = libc::epoll_event { events: 0, u64: 0 };
                    // A completion run on this thread (io_uring) may
                    // interrupt the wait: retry EINTR.
                    // SAFETY: one event into a valid buffer.
                    while unsafe { libc::epoll_wait(*epfd, &mut ev, 1, 10_000) } < 0
                        && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
                    {
                    }
                    if !handle.ack()? {
                        handle.cancel();
                    }
                }
            }
        }
    }

    fn publish(&self, word: &AtomicU32, value: u32) -> io::Result<()> {
        word.store(value, Ordering::Release);
        match self {
            Side::Raw => raw_wake(word),
            Side::Afx(handle, _) => {
                handle.futex().wake(1)?;
            }
        }
        Ok(())
    }
}

/// Returns the median round trip in microseconds.
fn measure(backend: Option<BackendKind>, cpus: (usize, usize), rounds: u32) -> io::Result<f64> {
    let mem = Arc::new(SharedMemory::anonymous(4096)?);
    let word = mem.word(0).expect("in bounds");
    // SAFETY: the child only runs the ping-pong and `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        pin(cpus.1);
        let ok = Side::new(&mem, backend).and_then(|side| {
            for k in 0..rounds {
                side.await_value(word, 2 * k + 1)?;
                side.publish(word, 2 * k + 2)?;
            }
            Ok(())
        });
        // SAFETY: leave the child at once.
        unsafe { libc::_exit(i32::from(ok.is_err())) };
    }
    pin(cpus.0);
    let side = Side::new(&mem, backend)?;
    let mut samples = Vec::with_capacity(rounds as usize);
    for k in 0..rounds {
        let start = Instant::now();
        side.publish(word, 2 * k + 1)?;
        side.await_value(word, 2 * k + 2)?;
        samples.push(start.elapsed().as_nanos() as f64 / 1000.0);
    }
    let mut status = 0;
    // SAFETY: our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    samples.drain(..(rounds as usize / 10)); // warm-up
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

/// Runs `measure` in a fresh process so each backend gets its own.
fn isolated(backend: Option<BackendKind>, cpus: (usize, usize), rounds: u32) -> io::Result<f64> {
    let mut fds = [0; 2];
    // SAFETY: a pipe for the result.
    unsafe { libc::pipe(fds.as_mut_ptr()) };
    // SAFETY: the child measures, writes 8 bytes and `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let value = measure(backend, cpus, rounds).unwrap_or(f64::NAN);
        // SAFETY: write 8 bytes to the pipe and leave.
        unsafe {
            libc::write(fds[1], (&value as *const f64).cast(), 8);
            libc::_exit(0);
        }
    }
    let mut value = f64::NAN;
    // SAFETY: read 8 bytes from the pipe; reap the child.
    unsafe {
        libc::read(fds[0], (&mut value as *mut f64).cast(), 8);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    Ok(value)
}

fn main() -> io::Result<()> {
    let rounds: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut placements = vec![("same CPU (0,0)", (0, 0))];
    if ncpu > 1 {
        placements.push(("across CPUs (0,1)", (0, 1)));
    }
    println!("round trip, median of {rounds} rounds (µs)");
    for (label, cpus) in placements {
        let raw = isolated(None, cpus, rounds)?;
        println!("{label}");
        println!("  raw FUTEX_WAIT/FUTEX_WAKE           {raw:7.2}   1.00x");
        for kind in [BackendKind::IoUring, BackendKind::Thread] {
            let t = isolated(Some(kind), cpus, rounds)?;
            println!(
                "  afx epoll on eventfd, {:<9}     {t:7.2}   {:.2}x",
                kind.name(),
                t / raw
            );
        }
    }
    Ok(())
}
