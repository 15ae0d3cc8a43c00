//! Scale: N concurrent async waits in one process (tokio current-thread
//! runtime, one task per wait), on one word or on N words, woken by another
//! process.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use asyncfutex::{AsyncFutex, SharedMemory};
use serde::{Deserialize, Serialize};

use crate::sys;
use crate::via::Via;

/// One scale run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleResult {
    pub backend: String,
    /// io_uring submit mode (`AFX_URING_SUBMIT`); `None` otherwise.
    #[serde(default)]
    pub submit: Option<String>,
    /// `"one_word"` or `"n_words"`.
    pub mode: String,
    pub n: u32,
    /// From the first spawn until the kernel holds all N waiters (counted
    /// with FUTEX_CMP_REQUEUE, which wakes nobody).
    pub arm_ms: f64,
    /// From the waker process's first store+FUTEX_WAKE until the last task
    /// resumed.
    pub resume_ms: f64,
    /// How long the waker process spent in its stores + FUTEX_WAKE calls
    /// (one call for one word, N calls for N words).
    pub wake_calls_ms: f64,
    /// Kernel waiters counted once armed.
    pub kernel_waiters: u32,
    pub resumed: u32,
    /// User memory delta per wait (tokio task + future + waiter), bytes:
    /// private pages of the process (`/proc/self/smaps_rollup`).
    pub rss_per_wait: f64,
    /// System-wide /proc/meminfo Slab + KernelStack delta per wait, bytes
    /// (noisy when other processes allocate meanwhile).
    pub kernel_per_wait: f64,
    /// Threads of the process (`/proc/self/task`) once the N waits are
    /// armed (1 is the runtime's own thread).
    pub threads: usize,
    /// The same before the first wait was armed (backend started): the
    /// difference is what arming N waits added.
    #[serde(default)]
    pub threads_before: usize,
    /// How many runs the figures are the median of.
    pub repeats: usize,
}

/// Combines repeated runs of one configuration: the median of every
/// figure, the worst of the counts.
pub fn median_of(runs: Vec<ScaleResult>) -> ScaleResult {
    let med = |f: fn(&ScaleResult) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    ScaleResult {
        backend: runs[0].backend.clone(),
        submit: runs[0].submit.clone(),
        mode: runs[0].mode.clone(),
        n: runs[0].n,
        arm_ms: med(|r| r.arm_ms),
        resume_ms: med(|r| r.resume_ms),
        wake_calls_ms: med(|r| r.wake_calls_ms),
        kernel_waiters: runs.iter().map(|r| r.kernel_waiters).min().unwrap_or(0),
        resumed: runs.iter().map(|r| r.resumed).min().unwrap_or(0),
        rss_per_wait: med(|r| r.rss_per_wait),
        kernel_per_wait: med(|r| r.kernel_per_wait),
        threads: runs.iter().map(|r| r.threads).max().unwrap_or(0),
        threads_before: runs.iter().map(|r| r.threads_before).max().unwrap_or(0),
        repeats: runs.len(),
    }
}

const GO: usize = 0;
const T0_LO: usize = 2;
const T0_HI: usize = 3;
const T1_LO: usize = 4;
const T1_HI: usize = 5;
const DATA: usize = 1024;

fn put_u64(mem: &SharedMemory, lo: usize, hi: usize, v: u64) {
    mem.word(lo)
        .expect("in bounds")
        .store(v as u32, Ordering::Relaxed);
    mem.word(hi)
        .expect("in bounds")
        .store((v >> 32) as u32, Ordering::Release);
}

fn get_u64(mem: &SharedMemory, lo: usize, hi: usize) -> u64 {
    let hi = mem.word(hi).expect("in bounds").load(Ordering::Acquire);
    let lo = mem.word(lo).expect("in bounds").load(Ordering::Relaxed);
    u64::from(hi) << 32 | u64::from(lo)
}

/// Runs one scale measurement (call inside [`sys::isolated`], first
/// thing: the backend's environment is set here, before any asyncfutex
/// call).
pub fn measure(via: Via, n_words: bool, n: u32) -> Result<ScaleResult, String> {
    via.set_env();
    let run = || -> std::io::Result<ScaleResult> {
        sys::raise_nofile();
        let words = if n_words { n as usize } else { 1 };
        let mem = Arc::new(SharedMemory::anonymous(4 * (DATA + words))?);
        // The waker: forked before any thread exists; only atomics and
        // raw syscalls.
        let waker_mem = Arc::clone(&mem);
        let pid = sys::fork_peer(move || {
            let mem = waker_mem;
            let go = mem.word(GO).expect("in bounds");
            while go.load(Ordering::Acquire) == 0 {
                sys::futex_wait(go, 0);
            }
            let t0 = sys::mono_ns();
            for i in 0..words {
                let w = mem.word(DATA + i).expect("in bounds");
                w.store(1, Ordering::Release);
                sys::futex_wake(w, i32::MAX);
            }
            let t1 = sys::mono_ns();
            put_u64(&mem, T0_LO, T0_HI, t0);
            put_u64(&mem, T1_LO, T1_HI, t1);
            Ok(())
        })?;

        via.select()?;
        let handles: Vec<Arc<AsyncFutex>> = (0..words)
            .map(|i| mem.futex(DATA + i).map(Arc::new))
            .collect::<std::io::Result<_>>()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let result = rt.block_on(async {
            // Let the backend start before the memory snapshot.
            tokio::task::yield_now().await;
            let rss0 = sys::private_bytes();
            let k0 = sys::meminfo("Slab") + sys::meminfo("KernelStack");
            let threads0 = sys::threads();
            let resumed = Arc::new(AtomicU32::new(0));
            let polled = Arc::new(AtomicU32::new(0));
            let last = Arc::new(AtomicU64::new(0));
            let start = Instant::now();
            let mut tasks = Vec::with_capacity(n as usize);
            for i in 0..n as usize {
                let futex = Arc::clone(&handles[i % words]);
                let resumed = Arc::clone(&resumed);
                let last = Arc::clone(&last);
                let polled = Arc::clone(&polled);
                tasks.push(tokio::spawn(async move {
                    polled.fetch_add(1, Ordering::Relaxed);
                    while futex.word().load(Ordering::Acquire) == 0 {
                        futex.wait_async(0).await?;
                    }
                    if resumed.fetch_add(1, Ordering::AcqRel) + 1 == n {
                        last.store(sys::mono_ns(), Ordering::Release);
                    }
                    Ok::<_, std::io::Error>(())
                }));
            }
            // Until every task has been polled once (armed its wait); only
            // then count kernel waiters (each count on one word requeues
            // all of its waiters, so counting early would slow arming).
            while polled.load(Ordering::Relaxed) < n
                && Instant::now() < start + Duration::from_secs(20)
            {
                tokio::task::yield_now().await;
            }
            // Until the kernel holds every wait.
            let deadline = start + Duration::from_secs(20);
            let mut frontier = 0usize;
            let mut counted;
            loop {
                tokio::task::yield_now().await;
                if n_words {
                    while frontier < words
                        && sys::kernel_waiters(mem.word(DATA + frontier).expect("in bounds")) >= 1
                    {
                        frontier += 1;
                    }
                    counted = frontier as u32;
                } else {
                    counted = sys::kernel_waiters(mem.word(DATA).expect("in bounds"));
                }
                if counted >= n || Instant::now() > deadline {
                    break;
                }
            }
            let arm = start.elapsed();
            let rss1 = sys::private_bytes();
            let k1 = sys::meminfo("Slab") + sys::meminfo("KernelStack");
            let threads = sys::threads();
            // Release the waker process.
            let go = mem.word(GO).expect("in bounds");
            go.store(1, Ordering::Release);
            sys::futex_wake(go, 1);
            let joined = tokio::time::timeout(Duration::from_secs(30), async {
                for t in tasks {
                    t.await.map_err(std::io::Error::other)??;
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            match joined {
                Ok(r) => r?,
                Err(_) => return Err(std::io::Error::other("tasks not resumed within 30 s")),
            }
            Ok((
                arm,
                counted,
                rss0,
                rss1,
                k0,
                k1,
                (threads0, threads),
                resumed,
                last,
            ))
        });
        let (arm, counted, rss0, rss1, k0, k1, (threads0, threads), resumed, last) = match result {
            Ok(r) => r,
            Err(e) => {
                sys::kill_peer(pid);
                return Err(e);
            }
        };
        sys::reap(pid)?;
        let t0 = get_u64(&mem, T0_LO, T0_HI);
        let t1 = get_u64(&mem, T1_LO, T1_HI);
        let last = last.load(Ordering::Acquire);
        let per = |a: u64, b: u64| (b as f64 - a as f64) / f64::from(n);
        Ok(ScaleResult {
            backend: via.backend().into(),
            submit: via.submit_name().map(String::from),
            mode: if n_words { "n_words" } else { "one_word" }.into(),
            n,
            arm_ms: arm.as_secs_f64() * 1e3,
            resume_ms: last.saturating_sub(t0) as f64 / 1e6,
            wake_calls_ms: t1.saturating_sub(t0) as f64 / 1e6,
            kernel_waiters: counted,
            resumed: resumed.load(Ordering::Acquire),
            rss_per_wait: per(rss0, rss1),
            kernel_per_wait: per(k0, k1),
            threads,
            threads_before: threads0,
            repeats: 1,
        })
    };
    run().map_err(|e| e.to_string())
}

/// Control without the kernel: N tokio tasks awaiting one in-process
/// `tokio::sync::Notify`, released by `notify_waiters()` from the runtime
/// thread. Shows what spawning, polling and resuming N tasks costs by
/// itself (call inside [`sys::isolated`]).
pub fn control(n: u32) -> Result<ScaleResult, String> {
    let run = || -> std::io::Result<ScaleResult> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            tokio::task::yield_now().await;
            let rss0 = sys::private_bytes();
            let notify = Arc::new(tokio::sync::Notify::new());
            let polled = Arc::new(AtomicU32::new(0));
            let resumed = Arc::new(AtomicU32::new(0));
            let last = Arc::new(AtomicU64::new(0));
            let start = Instant::now();
            let mut tasks = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let (notify, polled, resumed, last) = (
                    Arc::clone(&notify),
                    Arc::clone(&polled),
                    Arc::clone(&resumed),
                    Arc::clone(&last),
                );
                tasks.push(tokio::spawn(async move {
                    let notified = notify.notified();
                    polled.fetch_add(1, Ordering::Relaxed);
                    notified.await;
                    if resumed.fetch_add(1, Ordering::AcqRel) + 1 == n {
                        last.store(sys::mono_ns(), Ordering::Release);
                    }
                }));
            }
            while polled.load(Ordering::Relaxed) < n {
                tokio::task::yield_now().await;
            }
            // One more round so every task is parked in `notified.await`.
            tokio::task::yield_now().await;
            let arm = start.elapsed();
            let rss1 = sys::private_bytes();
            let threads = sys::threads();
            let t0 = sys::mono_ns();
            notify.notify_waiters();
            for t in tasks {
                t.await.map_err(std::io::Error::other)?;
            }
            Ok(ScaleResult {
                backend: "tokio_notify".into(),
                submit: None,
                mode: "in_process".into(),
                n,
                arm_ms: arm.as_secs_f64() * 1e3,
                resume_ms: last.load(Ordering::Acquire).saturating_sub(t0) as f64 / 1e6,
                wake_calls_ms: 0.0,
                kernel_waiters: 0,
                resumed: resumed.load(Ordering::Acquire),
                rss_per_wait: (rss1 as f64 - rss0 as f64) / f64::from(n),
                kernel_per_wait: 0.0,
                threads,
                threads_before: threads,
                repeats: 1,
            })
        })
    };
    run().map_err(|e| e.to_string())
}
