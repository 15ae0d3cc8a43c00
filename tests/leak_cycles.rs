//! No fd or memory leak over many create/free cycles (DESIGN §5).
//!
//! One test (so nothing else runs in the process while it counts): cycles
//! of `afx_new` + `afx_wait_async` + `afx_cancel` / `afx_ack` + `afx_free`
//! through the C API, and of `AsyncFutex` / `EventFdFutex` creation, arming
//! and drop in Rust, each ending in a different state (never armed,
//! pending, completed and not acknowledged, acknowledged, cancelled,
//! private word, a dropped pending future).
//!
//! "Flat" means: the open descriptors (`/proc/self/fd`) are exactly the
//! baseline at every checkpoint and at the end; resident memory
//! (`/proc/self/statm`) grows by less than [`RSS_BOUND`] from the end of a
//! warm-up (the first [`WARMUP`] of the cycles, which lets the allocator
//! and the backend reach their steady state) to the end.
//!
//! Under a sanitizer, RSS says nothing (ASan quarantines freed blocks,
//! TSan keeps shadow and history): `AFX_LEAK_RSS_BOUND=off` (as
//! `scripts/sanitize.sh` and `scripts/tsan.sh` set) reports the figures
//! without the bound; LeakSanitizer checks the heap instead.
//!
//! Cycles: `AFX_LEAK_CYCLES` if set, otherwise 100,000 (6-8 s per backend
//! in a debug build on 2 vCPUs). Runs once
//! per backend: `AFX_BACKEND=io_uring|thread`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::task::{Context, Wake, Waker};
use std::time::Instant;

use asyncfutex::ffi::*;
use asyncfutex::{AsyncFutex, EventFdFutex};

/// Largest allowed RSS growth after the warm-up.
const RSS_BOUND: u64 = 1 << 20;
/// Fraction of the cycles that warm up before the RSS baseline.
const WARMUP: u64 = 10;
/// Checkpoints (fd count and RSS sample) per run.
const CHECKPOINTS: u64 = 10;

fn cycles() -> u64 {
    if let Ok(v) = std::env::var("AFX_LEAK_CYCLES") {
        return v.parse().expect("AFX_LEAK_CYCLES is a number");
    }
    100_000
}

fn fds() -> usize {
    // Less the descriptor reading the directory.
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .count()
        - 1
}

fn fd_list() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            format!("{}->{}", e.file_name().to_string_lossy(), target.display())
        })
        .collect();
    v.sort();
    v
}

fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("statm resident field");
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("read /proc/self/task")
        .count()
}

struct NoopWaker;
impl Wake for NoopWaker {
    fn wake(self: Arc<Self>) {}
}

/// One kind of cycle per index; every kind leaves nothing behind.
///
/// # Safety
/// `word` and `local` are valid, aligned words that outlive the call.
unsafe fn cycle(i: u64, word: *mut u32, local: *mut u32, cx: &mut Context<'_>) {
    // SAFETY (C calls): live handles on mapped words, freed once.
    unsafe {
        match i % 10 {
            0..=6 => {
                let private = i % 10 == 6;
                let f = afx_new(if private { local } else { word }, u32::from(private));
                assert!(
                    !f.is_null(),
                    "cycle {i}: afx_new: {}",
                    std::io::Error::last_os_error()
                );
                match i % 10 {
                    0 => {}
                    1 => {
                        assert_eq!(afx_wait_async(f, 1), 0);
                        assert_eq!(afx_cancel(f), 0);
                    }
                    2 | 6 => assert_eq!(afx_wait_async(f, 1), 0), // freed pending
                    3 => {
                        assert_eq!(afx_wait_async(f, 0), 0); // stale: completes now
                        assert_eq!(afx_ack(f), 1);
                    }
                    4 => assert_eq!(afx_wait_async(f, 0), 0), // completed, not acked
                    _ => {
                        assert_eq!(afx_wait_async(f, 1), 0);
                        assert_eq!(afx_cancel(f), 0);
                        assert_eq!(afx_wait_async(f, 0), 0);
                        assert_eq!(afx_ack(f), 1);
                        assert_eq!(afx_wait_async(f, 1), 0);
                        assert_eq!(afx_ack(f), 0);
                    }
                }
                afx_free(f);
            }
            7 => {
                let a = AsyncFutex::new(word.cast::<AtomicU32>()).expect("AsyncFutex::new");
                drop(a);
            }
            8 => {
                let a = AsyncFutex::new(word.cast::<AtomicU32>()).expect("AsyncFutex::new");
                {
                    let mut fut = a.wait_async(1);
                    let pending = Pin::new(&mut fut).poll(cx);
                    assert!(
                        pending.is_pending(),
                        "cycle {i}: wait_async(current) completed"
                    );
                } // dropped while pending
                drop(a);
            }
            _ => {
                let a = AsyncFutex::new(word.cast::<AtomicU32>()).expect("AsyncFutex::new");
                let e = EventFdFutex::new(a).expect("EventFdFutex::new");
                e.arm(1).expect("arm");
                drop(e); // freed pending
            }
        }
    }
}

#[test]
fn create_free_cycles_leak_nothing() {
    let backend = afx_backend();
    assert!(backend > 0, "no backend: {backend}");
    // SAFETY: a static NUL-terminated string.
    let name = unsafe { std::ffi::CStr::from_ptr(afx_backend_name(backend)) };
    let n = cycles();
    let word: *mut u32 = Box::into_raw(Box::new(1u32));
    let local: *mut u32 = Box::into_raw(Box::new(1u32));
    let waker = Waker::from(Arc::new(NoopWaker));
    let mut cx = Context::from_waker(&waker);

    // The backend runs (afx_backend started it); one throwaway cycle of
    // each kind creates whatever else is made lazily.
    for i in 0..10 {
        // SAFETY: both words live until the end of the test.
        unsafe { cycle(i, word, local, &mut cx) };
    }
    let fd_base = fds();
    let fd_names = fd_list();
    let threads_base = threads();
    let rss_start = rss();
    let warmup = n / WARMUP;
    let mut rss_base = rss_start;
    let mut max_threads = threads_base;
    let mut samples = Vec::new();
    let t0 = Instant::now();
    for i in 0..n {
        // SAFETY: as above.
        unsafe { cycle(i, word, local, &mut cx) };
        if i + 1 == warmup {
            rss_base = rss();
        }
        if (i + 1) % (n / CHECKPOINTS).max(1) == 0 {
            let now = fds();
            assert_eq!(
                now,
                fd_base,
                "after {} cycles: {now} fds open, baseline {fd_base}\nbefore: {fd_names:?}\nnow: {:?}",
                i + 1,
                fd_list()
            );
            max_threads = max_threads.max(threads());
            samples.push(rss() / 1024);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let fd_end = fds();
    let rss_end = rss();
    let growth = rss_end as i64 - rss_base as i64;
    eprintln!(
        "leak cycles ({}): {n} cycles in {secs:.2} s ({:.0}/s); fds {fd_base} -> {fd_end}; \
         threads {threads_base} -> max {max_threads}; RSS {} KiB at start, {} KiB after \
         warm-up ({warmup} cycles), {} KiB at end: growth {} KiB (bound {} KiB); \
         RSS KiB per checkpoint {samples:?}",
        name.to_string_lossy(),
        n as f64 / secs,
        rss_start / 1024,
        rss_base / 1024,
        rss_end / 1024,
        growth / 1024,
        RSS_BOUND / 1024,
    );
    // SAFETY: from Box::into_raw above, no handle uses them any more.
    unsafe {
        drop(Box::from_raw(word));
        drop(Box::from_raw(local));
    }
    assert_eq!(fd_end, fd_base, "fds not back to baseline");
    if std::env::var("AFX_LEAK_RSS_BOUND").as_deref() == Ok("off") {
        eprintln!("RSS bound off (AFX_LEAK_RSS_BOUND=off)");
    } else {
        assert!(
            growth < RSS_BOUND as i64,
            "RSS grew by {growth} bytes after the warm-up (bound {RSS_BOUND})"
        );
    }
}
