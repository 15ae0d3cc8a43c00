//! Times arming N `wait_async` futures on one word in a current-thread
//! tokio runtime: `cargo run --release --example arm_cost [N]`.
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use asyncfutex::AsyncFutex;

fn main() -> std::io::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    static WORD: AtomicU32 = AtomicU32::new(0);
    let f = Arc::new(AsyncFutex::from_static(&WORD, asyncfutex::Scope::Shared)?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        tokio::task::yield_now().await;
        for round in 0..3 {
            let polled = Arc::new(AtomicU32::new(0));
            let start = Instant::now();
            let mut tasks = Vec::with_capacity(n);
            for _ in 0..n {
                let f = Arc::clone(&f);
                let polled = Arc::clone(&polled);
                tasks.push(tokio::spawn(async move {
                    polled.fetch_add(1, Ordering::Relaxed);
                    while f.word().load(Ordering::Acquire) == round {
                        f.wait_async(round).await?;
                    }
                    Ok::<_, std::io::Error>(())
                }));
            }
            while polled.load(Ordering::Relaxed) < n as u32 {
                tokio::task::yield_now().await;
            }
            let armed = start.elapsed();
            WORD.store(round + 1, Ordering::Release);
            f.wake(u32::MAX)?;
            for t in tasks {
                t.await.unwrap()?;
            }
            println!(
                "round {round}: {n} arms in {:.2} ms, all resumed after {:.2} ms",
                armed.as_secs_f64() * 1e3,
                start.elapsed().as_secs_f64() * 1e3
            );
        }
        Ok(())
    })
}
