//! Quick scale check: N tasks awaiting one word in this process, woken all
//! at once from another process. Prints arm time, wake-to-all-resumed time
//! and the thread count, for the backend in use (`AFX_BACKEND`).
//!
//! `cargo run --release --example scale -- [N]`

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use asyncfutex::SharedMemory;

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

fn main() -> std::io::Result<()> {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let threads_before = threads();
    let mem = Arc::new(SharedMemory::anonymous(4096)?);
    let futex = Arc::new(mem.futex(0)?);
    let ready = mem.word(1).expect("in bounds");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let resumed = Arc::new(AtomicU32::new(0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..n {
            let futex = Arc::clone(&futex);
            let resumed = Arc::clone(&resumed);
            tasks.push(tokio::spawn(async move {
                while futex.word().load(Ordering::Acquire) == 0 {
                    futex.wait_async(0).await?;
                }
                resumed.fetch_add(1, Ordering::AcqRel);
                Ok::<_, std::io::Error>(())
            }));
        }
        // Let every task poll once (arming its wait).
        tokio::task::yield_now().await;
        let armed = start.elapsed();
        // Another process wakes everyone.
        // SAFETY: the child stores, wakes and `_exit`s.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let futex = mem.futex(0).expect("child handle");
            while ready.load(Ordering::Acquire) == 0 {
                std::hint::spin_loop();
            }
            futex.word().store(1, Ordering::Release);
            let woken = futex.wake(u32::MAX).unwrap_or(0);
            println!("  child: wake(u32::MAX) woke {woken}");
            // SAFETY: leave the child at once.
            unsafe { libc::_exit(0) };
        }
        tokio::time::sleep(Duration::from_millis(200)).await; // let the kernel queue all waits
        let woke_at = Instant::now();
        ready.store(1, Ordering::Release);
        for t in tasks {
            t.await.map_err(std::io::Error::other)??;
        }
        let all = woke_at.elapsed();
        // SAFETY: reap our child.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        println!(
            "backend {}: {n} waits armed (polled) in {:.2} ms, all resumed {:.2} ms after the wake was released, {} resumed, library threads: {}",
            asyncfutex::backend()?,
            armed.as_secs_f64() * 1e3,
            all.as_secs_f64() * 1e3,
            resumed.load(Ordering::Acquire),
            threads() - threads_before,
        );
        Ok(())
    })
}
