//! Fast paths: ns per operation over many iterations, with the syscalls the
//! code path makes (read from the library's source, stated, not counted).

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use asyncfutex::{BackendKind, EventFdFutex, SharedMemory};
use serde::{Deserialize, Serialize};

use crate::sys;
use crate::via::{Submit, Via};

/// One fast-path figure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FastPath {
    pub id: String,
    pub label: String,
    /// `None` for backend-independent baselines.
    pub backend: Option<String>,
    /// io_uring submit mode (`AFX_URING_SUBMIT`); `None` otherwise.
    #[serde(default)]
    pub submit: Option<String>,
    pub iterations: u64,
    pub ns_per_op: f64,
    /// Syscalls on the calling thread per operation, from the code path.
    pub syscalls: String,
}

fn time(iterations: u64, mut op: impl FnMut()) -> f64 {
    for _ in 0..iterations.min(1000) {
        op();
    }
    let t = Instant::now();
    for _ in 0..iterations {
        op();
    }
    t.elapsed().as_nanos() as f64 / iterations as f64
}

/// Baselines that do not depend on a backend.
pub fn baselines(cheap: u64) -> Result<Vec<FastPath>, String> {
    sys::pin(0);
    let mem = SharedMemory::anonymous(4096).map_err(|e| e.to_string())?;
    let word = mem.word(0).expect("in bounds");
    word.store(1, Ordering::SeqCst);
    let mut out = Vec::new();
    let mut push = |id: &str, label: &str, ns: f64, syscalls: &str| {
        out.push(FastPath {
            id: id.into(),
            label: label.into(),
            backend: None,
            submit: None,
            iterations: cheap,
            ns_per_op: ns,
            syscalls: syscalls.into(),
        })
    };
    let ns = time(cheap, || {
        black_box(black_box(word).load(Ordering::SeqCst) != black_box(0));
    });
    push(
        "atomic_load_compare",
        "atomic load + compare (no syscall)",
        ns,
        "0",
    );
    let ns = time(cheap, || {
        // SAFETY: a trivial syscall.
        black_box(unsafe { libc::syscall(libc::SYS_getppid) });
    });
    push(
        "syscall_getppid",
        "getppid(2): the cheapest syscall (floor)",
        ns,
        "1",
    );
    let ns = time(cheap, || {
        black_box(sys::futex_wake(word, 1));
    });
    push(
        "raw_futex_wake_nowaiter",
        "raw FUTEX_WAKE, no waiter",
        ns,
        "1",
    );

    // Uncontended lock + unlock: process-shared pthread mutex against the
    // library's cross-process Mutex (both in MAP_SHARED memory).
    let pm = mem
        .as_ptr()
        .wrapping_add(64)
        .cast::<libc::pthread_mutex_t>();
    // SAFETY: `pm` is 64 bytes into a private 4 KiB mapping, aligned and
    // large enough for a pthread_mutex_t, initialised here before use.
    unsafe {
        let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
        libc::pthread_mutexattr_init(&mut attr);
        libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED);
        libc::pthread_mutex_init(pm, &attr);
        libc::pthread_mutexattr_destroy(&mut attr);
    }
    let ns = time(cheap, || {
        // SAFETY: an initialised mutex locked and unlocked by this thread.
        unsafe {
            libc::pthread_mutex_lock(pm);
            libc::pthread_mutex_unlock(pm);
        }
    });
    push(
        "pthread_mutex_pshared_uncontended",
        "pthread_mutex (PROCESS_SHARED) lock + unlock, uncontended",
        ns,
        "0",
    );
    let shared = Arc::new(SharedMemory::anonymous(4096).map_err(|e| e.to_string())?);
    let mutex = asyncfutex::sync::Mutex::create(&shared, 0).map_err(|e| e.to_string())?;
    let ns = time(cheap, || {
        drop(black_box(mutex.blocking_lock(None)));
    });
    push(
        "sync_mutex_uncontended",
        "asyncfutex::sync::Mutex blocking_lock + unlock, uncontended",
        ns,
        "0",
    );
    let ns = time(cheap, || {
        drop(black_box(mutex.try_lock()));
    });
    push(
        "sync_mutex_try_lock_uncontended",
        "asyncfutex::sync::Mutex try_lock + unlock, uncontended",
        ns,
        "0",
    );
    Ok(out)
}

/// The library's fast paths on `via`, in a fresh process pinned to CPU 0
/// (call inside [`sys::isolated`]).
pub fn library(via: Via, cheap: u64, arms: u64) -> Result<Vec<FastPath>, String> {
    via.set_env();
    let run = || -> std::io::Result<Vec<FastPath>> {
        sys::pin(0);
        via.select()?;
        let mem = Arc::new(SharedMemory::anonymous(4096)?);
        let futex = mem.futex(0)?;
        futex.word().store(1, Ordering::SeqCst);
        let mut out = Vec::new();
        let mut push = |id: &str, label: &str, iterations: u64, ns: f64, syscalls: &str| {
            out.push(FastPath {
                id: id.into(),
                label: label.into(),
                backend: Some(via.backend().into()),
                submit: via.submit_name().map(String::from),
                iterations,
                ns_per_op: ns,
                syscalls: syscalls.into(),
            })
        };

        let mut cx = Context::from_waker(Waker::noop());
        let mut bad = 0u64;
        let ns = time(cheap, || {
            let fut = pin!(futex.wait_async(black_box(0)));
            if !matches!(fut.poll(&mut cx), Poll::Ready(Ok(()))) {
                bad += 1;
            }
        });
        if bad != 0 {
            return Err(std::io::Error::other(
                "stale wait_async did not complete at once",
            ));
        }
        push(
            "wait_async_stale",
            "wait_async(stale) first poll",
            cheap,
            ns,
            "0 (word != expected is checked before the backend is touched)",
        );

        let ns = time(cheap, || {
            black_box(futex.wake(1).ok());
        });
        push(
            "wake_nowaiter",
            "wake(1), no waiter",
            cheap,
            ns,
            "1 (FUTEX_WAKE)",
        );

        let efd = EventFdFutex::new(mem.futex(0)?)?;
        let mut err = None;
        let ns = time(arms, || {
            if let Err(e) = efd.arm(1) {
                err = Some(e);
            }
            efd.cancel();
        });
        if let Some(e) = err {
            return Err(e);
        }
        let hops = match (via.kind, via.submit) {
            (BackendKind::IoUring, Some(Submit::Caller)) => {
                "caller: io_uring_enter on arm (FUTEX_WAIT + linked eventfd WRITE, own \
                 ring); cancel: io_uring_enter (ASYNC_CANCEL), io_uring_enter(GETEVENTS) \
                 running the completion here, eventfd read draining the kernel's write"
            }
            (BackendKind::IoUring, _) => {
                "caller: FUTEX_WAKE doorbell on arm and on cancel, FUTEX_WAIT until the \
                 ring thread delivers; ring thread: io_uring_enter for submit and cancel"
            }
            _ => {
                "caller: FUTEX_WAKE helper kick on arm and on cancel (only if the helper \
                 sleeps), FUTEX_WAIT until the helper delivers; helper: futex_waitv re-issued"
            }
        };
        push(
            "arm_cancel",
            "EventFdFutex arm(current value) + cancel",
            arms,
            ns,
            hops,
        );

        let mut err = None;
        let ns = time(cheap, || {
            if let Err(e) = efd.arm(0).and_then(|()| efd.ack().map(drop)) {
                err = Some(e);
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
        push(
            "arm_stale_ack",
            "EventFdFutex arm(stale) + ack",
            cheap,
            ns,
            "2 (eventfd write on arm, eventfd read on ack)",
        );
        Ok(out)
    };
    run().map_err(|e| e.to_string())
}
