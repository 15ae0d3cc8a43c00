//! What the thread backend's vector mode costs around wakes (issue 12 §3),
//! for the backend in use (`AFX_BACKEND`; `AFX_THREAD_WAITV=0` for the
//! per-wait mode). Prints:
//!
//! 1. **The re-queue window.** Two async waits A and B served by one helper
//!    (A first in its vector). A peer wakes A with a raw `FUTEX_WAKE(1)`;
//!    the helper's `futex_waitv` returns, which takes B out of the kernel
//!    queue too, until the helper queues it again. A probe spinning on B's
//!    kernel waiter count (`FUTEX_CMP_REQUEUE` of the word onto itself,
//!    which wakes nobody) from the moment the wake returns times how long
//!    B is out of the queue; a `wake(1)` on B's word in that window
//!    returns 0. The woken task's re-arm (a second helper round trip)
//!    opens a second window, timed the same way.
//! 2. **Spurious completions per wake at N pending waits.** N tasks (tokio
//!    current-thread runtime on its own thread), one async wait each on N
//!    distinct words; each task counts its completions and re-arms with the
//!    word's current value. The peer wakes one word at a time (stride
//!    through the N words, so every helper and every position in its
//!    vector is hit), pure (`FUTEX_WAKE(1)` only) or store+wake (the word
//!    is incremented first), retrying a wake that finds nobody (counted:
//!    the target was out of the queue), and waits for the target's
//!    completion before the next. Every completion that is not the
//!    target's is spurious.
//!
//! `cargo run --release --example pure_wake_cost -- [N] [WAKES] [ROUNDS]`
//! (defaults 10000, 2000, 2000).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use asyncfutex::SharedMemory;

fn raw_wake(word: &AtomicU32, n: i32) -> i64 {
    // SAFETY: FUTEX_WAKE only uses the address as a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word as *const AtomicU32,
            libc::FUTEX_WAKE,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    }
}

/// Kernel waiters queued on `word`, waking none (see tests/common).
fn kernel_waiters(word: &AtomicU32) -> u32 {
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
    }
}

/// Waits until `cond` holds; panics after 20 s (a stuck measurement).
fn await_cond(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "stuck: {what}");
        std::thread::yield_now();
    }
}

/// Wakes one waiter of `word`, retrying while none is queued; returns how
/// many tries found none.
fn wake_retrying(word: &AtomicU32) -> u64 {
    let mut missed = 0;
    await_cond("a wake finds the waiter", || {
        let r = raw_wake(word, 1);
        assert!(r >= 0, "FUTEX_WAKE: {}", std::io::Error::last_os_error());
        if r == 0 {
            missed += 1;
        }
        r == 1
    });
    missed
}

/// N tasks on N words, each counting its completions.
struct Tasks {
    mem: Arc<SharedMemory>,
    completions: Vec<AtomicU64>,
    total: AtomicU64,
    stop: AtomicBool,
}

impl Tasks {
    fn word(&self, i: usize) -> &AtomicU32 {
        self.mem.word(i).expect("in bounds")
    }
}

/// Starts `n` tasks awaiting words `first..first + n` on a runtime thread.
fn start_tasks(mem: &Arc<SharedMemory>, first: usize, n: usize) -> Arc<Tasks> {
    let tasks = Arc::new(Tasks {
        mem: Arc::clone(mem),
        completions: (0..n).map(|_| AtomicU64::new(0)).collect(),
        total: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let t = Arc::clone(&tasks);
    std::thread::Builder::new()
        .name("tasks".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let mut handles = Vec::new();
                for i in 0..n {
                    let t = Arc::clone(&t);
                    let futex = t.mem.futex(first + i).expect("handle");
                    handles.push(tokio::spawn(async move {
                        while !t.stop.load(Ordering::Acquire) {
                            let v = futex.word().load(Ordering::Acquire);
                            futex.wait_async(v).await.expect("wait_async");
                            t.completions[i].fetch_add(1, Ordering::AcqRel);
                            t.total.fetch_add(1, Ordering::AcqRel);
                        }
                    }));
                }
                for h in handles {
                    let _ = h.await;
                }
            });
        })
        .expect("spawn");
    for i in 0..n {
        let w = tasks.word(first + i);
        await_cond("every task armed", || kernel_waiters(w) == 1);
    }
    tasks
}

fn stop_tasks(tasks: &Tasks, first: usize, n: usize) {
    tasks.stop.store(true, Ordering::Release);
    for i in 0..n {
        let w = tasks.word(first + i);
        w.fetch_add(1, Ordering::AcqRel);
        raw_wake(w, i32::MAX);
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Part 1: the re-queue window of a sibling.
fn window(mem: &Arc<SharedMemory>, rounds: usize) {
    let tasks = start_tasks(mem, 0, 2);
    // Which of the two is first in the helper's vector: the one armed
    // first (0); after each round the woken one is re-armed last.
    let mut first = 0usize;
    let (mut out, mut out2, mut from_wake) = (Vec::new(), Vec::new(), Vec::new());
    let mut missed = 0u64;
    for _ in 0..rounds {
        let (woken, sibling) = (tasks.word(first), tasks.word(1 - first));
        let before = tasks.completions[first].load(Ordering::Acquire);
        missed += wake_retrying(woken);
        let t0 = Instant::now();
        // Out of the queue from the return of futex_waitv until the helper
        // queues the vector again: time until the probe sees it back.
        let mut seen_out = None;
        await_cond("sibling back in the queue", || {
            if kernel_waiters(sibling) == 0 {
                seen_out.get_or_insert_with(Instant::now);
                false
            } else {
                seen_out.is_some() || t0.elapsed() > Duration::from_millis(2)
            }
        });
        if let Some(since) = seen_out {
            out.push(since.elapsed().as_secs_f64() * 1e6);
            from_wake.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        // The woken task completes and re-arms: a second helper round
        // (kick, return, re-queue) takes the sibling out again.
        await_cond("woken task completed", || {
            tasks.completions[first].load(Ordering::Acquire) > before
        });
        let mut seen_out2: Option<Instant> = None;
        let mut back2 = None;
        await_cond("both queued again", || {
            let s = kernel_waiters(sibling);
            if s == 0 {
                seen_out2.get_or_insert_with(Instant::now);
            } else if seen_out2.is_some() && back2.is_none() {
                back2 = Some(Instant::now());
            }
            s == 1 && kernel_waiters(woken) == 1
        });
        if let (Some(a), Some(b)) = (seen_out2, back2) {
            out2.push((b - a).as_secs_f64() * 1e6);
        }

        first = 1 - first;
    }
    let spurious = tasks.total.load(Ordering::Acquire) - rounds as u64;
    stop_tasks(&tasks, 0, 2);
    for v in [&mut out, &mut out2, &mut from_wake] {
        v.sort_by(|a, b| a.total_cmp(b));
    }
    println!(
        "window: {rounds} pure wakes of the first of two waits on one helper; {missed} wakes of \
         the woken wait found it out of the queue and were repeated; spurious completions {spurious}"
    );
    println!(
        "  sibling seen out of the kernel queue after the wake in {} of {rounds} rounds; \
         seen out for (first probe at 0 -> first probe at 1): median {:.1} us, p90 {:.1} us, \
         p99 {:.1} us, max {:.1} us; wake return -> queued again: median {:.1} us, p99 {:.1} us",
        out.len(),
        percentile(&out, 0.5),
        percentile(&out, 0.9),
        percentile(&out, 0.99),
        out.last().copied().unwrap_or(0.0),
        percentile(&from_wake, 0.5),
        percentile(&from_wake, 0.99),
    );
    println!(
        "  during the woken task's re-arm: sibling seen out in {} of {rounds} rounds, for \
         median {:.1} us, p99 {:.1} us",
        out2.len(),
        percentile(&out2, 0.5),
        percentile(&out2, 0.99)
    );
}

/// Part 2: spurious completions per wake at `n` pending waits.
fn spurious(mem: &Arc<SharedMemory>, first: usize, n: usize, wakes: usize) {
    let t_arm = Instant::now();
    let tasks = start_tasks(mem, first, n);
    println!(
        "spurious: {n} waits on {n} distinct words armed in {:.1} ms; {} threads in the process",
        t_arm.elapsed().as_secs_f64() * 1e3,
        std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
    );
    // A stride coprime with n visits words all over the helpers' vectors.
    let stride = (0..)
        .map(|k| 7919 + k)
        .find(|s| gcd(*s, n) == 1)
        .expect("a coprime stride");
    for store in [false, true] {
        let total_before = tasks.total.load(Ordering::Acquire);
        let mut missed = 0u64;
        let mut missed_wakes = 0u64;
        let t0 = Instant::now();
        for k in 0..wakes {
            let t = (k * stride + usize::from(store)) % n;
            let w = tasks.word(first + t);
            let before = tasks.completions[t].load(Ordering::Acquire);
            if store {
                w.fetch_add(1, Ordering::AcqRel);
            }
            let m = wake_retrying(w);
            missed += m;
            missed_wakes += u64::from(m > 0);
            await_cond("target completed", || {
                tasks.completions[t].load(Ordering::Acquire) > before
            });
        }
        let elapsed = t0.elapsed();
        // Let every spurious completion be counted and re-armed.
        for i in 0..n {
            let w = tasks.word(first + i);
            await_cond("all queued again", || kernel_waiters(w) == 1);
        }
        let completions = tasks.total.load(Ordering::Acquire) - total_before;
        let extra = completions.saturating_sub(wakes as u64);
        println!(
            "  {}: {wakes} wakes, {completions} completions: {:.2} spurious completions per wake; \
             {missed_wakes} wakes ({:.2} %) found the target out of the queue at first \
             ({missed} repeats); {:.1} us per wake",
            if store { "store+wake" } else { "pure wake" },
            extra as f64 / wakes as f64,
            100.0 * missed_wakes as f64 / wakes as f64,
            elapsed.as_secs_f64() * 1e6 / wakes as f64
        );
    }
    stop_tasks(&tasks, first, n);
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1).map(|s| s.parse::<usize>().ok());
    let n = args.next().flatten().unwrap_or(10_000);
    let wakes = args.next().flatten().unwrap_or(2_000).min(n);
    let rounds = args.next().flatten().unwrap_or(2_000);
    println!(
        "backend {} (AFX_THREAD_WAITV={})",
        asyncfutex::backend()?,
        std::env::var("AFX_THREAD_WAITV").unwrap_or_default()
    );
    let mem = Arc::new(SharedMemory::anonymous((n + 2) * 4 + 4096)?);
    window(&mem, rounds);
    spurious(&mem, 2, n, wakes);
    Ok(())
}
