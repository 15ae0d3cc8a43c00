use asyncfutex::*;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke() {
    eprintln!("backend {:?}", backend());
    let mem = Arc::new(SharedMemory::anonymous(4096).unwrap());
    let f = Arc::new(mem.futex(0).unwrap());
    let f2 = f.clone();
    let t = tokio::spawn(async move {
        let mut n = 0;
        loop {
            let v = f2.word().load(Ordering::Acquire);
            if v >= 1000 {
                break;
            }
            f2.wait_async(v).await.unwrap();
            n += 1;
        }
        n
    });
    for i in 1..=1000u32 {
        f.word().store(i, Ordering::Release);
        f.wake(1).unwrap();
        tokio::task::yield_now().await;
    }
    let n = t.await.unwrap();
    eprintln!("completions {n}");
    // eventfd
    let e = EventFdFutex::new(mem.futex(1).unwrap()).unwrap();
    e.arm(0).unwrap();
    assert!(!e.ack().unwrap());
    assert_eq!(e.arm(0).unwrap_err().raw_os_error(), Some(libc::EBUSY));
    let w = mem.word(1).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    w.store(1, Ordering::SeqCst);
    assert_eq!(e.futex().wake(1).unwrap(), 1);
    let mut pfd = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&e),
        events: libc::POLLIN,
        revents: 0,
    };
    unsafe { libc::poll(&mut pfd, 1, 5000) };
    assert!(e.ack().unwrap());
}
