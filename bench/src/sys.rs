//! Small Linux helpers: pinning, raw futex calls, clocks, `/proc` readers,
//! and running a measurement in a fresh forked process.

use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Pins the calling thread (and every thread it creates later) to `cpu`.
pub fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; one bit set; applies to this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The CPU the calling thread runs on now.
pub fn current_cpu() -> i32 {
    // SAFETY: no arguments.
    unsafe { libc::sched_getcpu() }
}

/// CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// CLOCK_MONOTONIC in nanoseconds (comparable across processes).
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Plain shared-key `FUTEX_WAIT` (no timeout).
pub fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: a live, aligned word.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word as *const AtomicU32,
            libc::FUTEX_WAIT,
            expected,
            0usize,
            0usize,
            0u32,
        );
    }
}

/// Plain shared-key `FUTEX_WAKE`; returns how many were woken.
pub fn futex_wake(word: &AtomicU32, n: i32) -> i64 {
    // SAFETY: a live, aligned word.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word as *const AtomicU32,
            libc::FUTEX_WAKE,
            n,
            0usize,
            0usize,
            0u32,
        )
    }
}

/// `FUTEX2_SIZE_U32`: the size flag every futex2 entry needs.
const FUTEX2_SIZE_U32: u32 = 0x02;

/// One entry of a `futex_waitv(2)` vector (`struct futex_waitv`).
#[repr(C)]
pub struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

impl FutexWaitv {
    /// A shared-key entry: sleep while `word` holds `expected`.
    pub fn new(word: &AtomicU32, expected: u32) -> FutexWaitv {
        FutexWaitv {
            val: u64::from(expected),
            uaddr: word.as_ptr() as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        }
    }
}

/// Plain `futex_waitv(2)` without a timeout: the index woken (or whose
/// word differed), or the error (`EAGAIN`, `EINTR`, `ENOSYS`, …).
pub fn futex_waitv(entries: &[FutexWaitv]) -> io::Result<usize> {
    // SAFETY: `entries` is a valid array of `struct futex_waitv` on live,
    // aligned words; no timeout.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            entries.as_ptr(),
            entries.len() as u32,
            0u32,
            std::ptr::null::<libc::timespec>(),
            libc::CLOCK_MONOTONIC,
        )
    };
    cvt(r as isize)
}

/// Kernel futex waiters (shared key) queued on `word`, counted without
/// waking any: `FUTEX_CMP_REQUEUE` from the word to itself, 0 wakes.
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
        if io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN) {
            return 0;
        }
    }
}

/// Dies with the parent (for peers forked by a measurement process).
pub fn die_with_parent() {
    // SAFETY: plain prctl.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
}

/// `/proc/loadavg`, the three load averages.
pub fn loadavg() -> [f64; 3] {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = s.split_whitespace().map(|x| x.parse().unwrap_or(f64::NAN));
    [
        it.next().unwrap_or(f64::NAN),
        it.next().unwrap_or(f64::NAN),
        it.next().unwrap_or(f64::NAN),
    ]
}

/// Memory private to this process in bytes: `Private_Clean + Private_Dirty`
/// of `/proc/self/smaps_rollup`. Unlike the RSS of `/proc/self/statm`, it
/// grows when a page inherited copy-on-write from the parent is written
/// (a forked measurement process reuses its parent's already resident heap
/// pages, which the RSS does not see).
pub fn private_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    s.lines()
        .filter(|l| l.starts_with("Private_Clean:") || l.starts_with("Private_Dirty:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum::<u64>()
        * 1024
}

/// A `/proc/meminfo` field in bytes (system-wide).
pub fn meminfo(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    for line in s.lines() {
        if let Some(rest) = line.strip_prefix(field) {
            if let Some(rest) = rest.strip_prefix(':') {
                let kb: u64 = rest
                    .split_whitespace()
                    .next()
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(0);
                return kb * 1024;
            }
        }
    }
    0
}

/// Threads of this process (`/proc/self/task`).
pub fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// Raises the soft RLIMIT_NOFILE to the hard limit.
pub fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointers.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Runs `f` in a fresh forked process (so every measurement gets its own
/// backend, runtime and CPU affinity) and returns its result, or an error
/// if it failed, crashed or overran `timeout` (then it is killed).
///
/// Must be called from a single-threaded process.
pub fn isolated<T: Serialize + DeserializeOwned>(
    timeout: Duration,
    f: impl FnOnce() -> Result<T, String>,
) -> Result<T, String> {
    let mut fds = [0; 2];
    // SAFETY: a pipe for the result.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", io::Error::last_os_error()));
    }
    // SAFETY: the orchestrator is single-threaded; the child runs `f`,
    // writes its JSON and `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: close the read end in the child.
        unsafe { libc::close(fds[0]) };
        die_with_parent();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
            .unwrap_or_else(|_| Err("panicked".into()));
        let bytes = serde_json::to_vec(&result).unwrap_or_default();
        let mut off = 0;
        while off < bytes.len() {
            // SAFETY: writing our own buffer to our pipe.
            let n = unsafe { libc::write(fds[1], bytes[off..].as_ptr().cast(), bytes.len() - off) };
            if n <= 0 {
                break;
            }
            off += n as usize;
        }
        // SAFETY: leave at once, without running the parent's atexit hooks.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: close the write end in the parent; own the read end.
    unsafe { libc::close(fds[1]) };
    // SAFETY: a fresh fd we own.
    let mut reader = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fds[0]) });
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            timed_out = true;
            break;
        }
        let mut pfd = libc::pollfd {
            fd: fds[0],
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(1000) as i32 + 1) };
        if r <= 0 {
            continue;
        }
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    if timed_out {
        // SAFETY: our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let status = wait_child(pid);
    if timed_out {
        return Err(format!("timed out after {timeout:?}"));
    }
    if out.is_empty() {
        return Err(format!("child died (wait status {status:#x})"));
    }
    serde_json::from_slice::<Result<T, String>>(&out).map_err(|e| format!("bad result: {e}"))?
}

/// Forks a peer that runs `f` and `_exit`s (status 0 on `Ok`). The peer
/// dies with its parent.
pub fn fork_peer(f: impl FnOnce() -> io::Result<()>) -> io::Result<libc::pid_t> {
    // SAFETY: the caller forks before starting threads; the child runs `f`
    // and `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        die_with_parent();
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
            .map(|r| {
                if let Err(e) = &r {
                    eprintln!("peer: {e}");
                }
                r.is_ok()
            })
            .unwrap_or(false);
        // SAFETY: leave at once.
        unsafe { libc::_exit(i32::from(!ok)) };
    }
    Ok(pid)
}

/// Reaps a peer; an error unless it exited with status 0.
pub fn reap(pid: libc::pid_t) -> io::Result<()> {
    let status = wait_child(pid);
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "peer failed (status {status:#x})"
        )))
    }
}

/// Kills and reaps a peer (after an error on our side).
pub fn kill_peer(pid: libc::pid_t) {
    // SAFETY: our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_child(pid);
}

/// `waitpid` on our own child, retrying EINTR (a process whose io_uring
/// completions run as task_work can see it); the wait status.
fn wait_child(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    loop {
        // SAFETY: our own child; valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return status;
        }
    }
}

/// Converts a `-1`/errno return into an `io::Result`.
pub fn cvt(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// A blocking `read` of exactly 4 bytes (or 8 for an eventfd) into a u64.
pub fn read_u64(fd: i32, len: usize) -> io::Result<u64> {
    let mut v = 0u64;
    loop {
        // SAFETY: reading at most 8 bytes into `v`.
        let r = unsafe { libc::read(fd, (&mut v as *mut u64).cast(), len) };
        match cvt(r) {
            Ok(n) if n == len => return Ok(v),
            Ok(n) => return Err(io::Error::other(format!("short read {n}"))),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A `write` of the first `len` bytes of `v`.
pub fn write_u64(fd: i32, v: u64, len: usize) -> io::Result<()> {
    loop {
        // SAFETY: writing at most 8 bytes from `v`.
        let r = unsafe { libc::write(fd, (&v as *const u64).cast(), len) };
        match cvt(r) {
            Ok(n) if n == len => return Ok(()),
            Ok(n) => return Err(io::Error::other(format!("short write {n}"))),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Closes an fd we own (ignoring errors).
pub fn close(fd: i32) {
    // SAFETY: the caller owns `fd`.
    unsafe { libc::close(fd) };
}

/// Context switches (voluntary + involuntary) of every thread this process
/// has had, including threads that already exited (`getrusage`).
pub fn ctx_switches() -> u64 {
    // SAFETY: a zeroed rusage is valid; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid out pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    (ru.ru_nvcsw + ru.ru_nivcsw) as u64
}
