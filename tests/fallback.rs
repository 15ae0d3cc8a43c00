//! io_uring denied (as by the Docker/containerd/Podman seccomp profiles):
//! a forked child installs a seccomp filter that makes `io_uring_setup`,
//! `io_uring_enter` and `io_uring_register` fail with `EPERM`, then checks
//! that the probe falls back to the thread backend (which then works across
//! processes), and that an explicit request for io_uring is a clear error.
//!
//! The filter is x86_64-specific (syscall numbers, `AUDIT_ARCH_X86_64`);
//! other architectures print a SKIP.

#[macro_use]
mod common;

use std::sync::atomic::Ordering;
use std::time::Instant;

use asyncfutex::{select_backend, BackendKind};
use common::*;

fn io<T>(what: &str, r: std::io::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// Installs, in the calling process (all its threads), a seccomp filter that
/// fails the io_uring syscalls with `EPERM`, then proves it works with a raw
/// `io_uring_setup`.
#[cfg(target_arch = "x86_64")]
fn deny_io_uring() -> ChildResult {
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    const IO_URING_SETUP: u32 = 425;
    const IO_URING_ENTER: u32 = 426;
    const IO_URING_REGISTER: u32 = 427;
    /// offsetof(struct seccomp_data, nr) and (…, arch).
    const NR: u32 = 0;
    const ARCH: u32 = 4;
    fn stmt(code: u32, k: u32) -> libc::sock_filter {
        libc::sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        }
    }
    fn jeq(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt,
            jf,
            k,
        }
    }
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    let mut filter = [
        stmt(load, ARCH),
        jeq(AUDIT_ARCH_X86_64, 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW), // another ABI: leave it alone
        stmt(load, NR),
        jeq(IO_URING_SETUP, 3, 0),
        jeq(IO_URING_ENTER, 2, 0),
        jeq(IO_URING_REGISTER, 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
        stmt(ret, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: plain prctl/seccomp calls with a valid, live filter program.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return fail(format!(
                "PR_SET_NO_NEW_PRIVS: {}",
                std::io::Error::last_os_error()
            ));
        }
        if libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_TSYNC,
            &prog as *const libc::sock_fprog,
        ) != 0
        {
            return fail(format!(
                "seccomp(SET_MODE_FILTER): {}",
                std::io::Error::last_os_error()
            ));
        }
        // io_uring_params is 120 bytes; the filter refuses before reading.
        let mut params = [0u64; 16];
        let r = libc::syscall(IO_URING_SETUP as libc::c_long, 4u32, params.as_mut_ptr());
        let err = std::io::Error::last_os_error();
        ensure!(
            r == -1 && err.raw_os_error() == Some(libc::EPERM),
            "io_uring_setup under the filter: ret {r}, {err}"
        );
    }
    Ok(())
}

#[cfg(not(target_arch = "x86_64"))]
fn deny_io_uring() -> ChildResult {
    unreachable!("guarded by supported()")
}

fn supported(test: &str) -> bool {
    if cfg!(target_arch = "x86_64") {
        true
    } else {
        eprintln!(
            "SKIP: [{test}] the seccomp filter is written for x86_64 (AUDIT_ARCH_X86_64, syscall 425)"
        );
        false
    }
}

/// With io_uring denied, `select_backend(None)` probes, falls back silently
/// to the thread backend, and a cross-process ping-pong with the parent
/// (whatever backend the parent runs) works: async and blocking.
#[test]
fn io_uring_denied_falls_back_to_threads() {
    let test = "io_uring_denied_falls_back_to_threads";
    let _serial = serial();
    let Some(parent_kind) = start(test) else {
        return;
    };
    if !supported(test) {
        return;
    }
    const ROUNDS: u32 = 1000;
    let mem = shared_page();
    let child = fork_child(test, || {
        deny_io_uring()?;
        let started = Instant::now();
        let kind = io("select_backend(None)", select_backend(None))?;
        ensure!(
            kind == BackendKind::Thread,
            "probe chose {kind} with io_uring denied"
        );
        ensure!(
            matches!(asyncfutex::backend(), Ok(BackendKind::Thread)),
            "backend() disagrees: {:?}",
            asyncfutex::backend()
        );
        clog!(
            "io_uring denied: fell back to {kind} in {:?}",
            started.elapsed()
        );
        let fa = io("futex(0)", mem.futex(0))?;
        ensure!(
            fa.backend().ok() == Some(BackendKind::Thread),
            "handle reports {:?}",
            fa.backend()
        );
        pingpong_child_async(&fa, ROUNDS)?;
        let fb = io("futex(1)", mem.futex(1))?;
        pingpong_child_blocking(&fb, ROUNDS)
    });
    let rt = rt_current();
    let fa = mem.futex(0).unwrap();
    let fb = mem.futex(1).unwrap();
    rt.block_on(pingpong_parent_async(&fa, ROUNDS));
    rt.block_on(pingpong_parent_async(&fb, ROUNDS));
    child.expect_ok();
    assert_eq!(word(&mem, 0).load(Ordering::SeqCst), 2 * ROUNDS);
    eprintln!("[{test}] parent ({parent_kind}) <-> child (thread, io_uring denied): {ROUNDS} async + {ROUNDS} blocking round trips");
}

/// With io_uring denied, an explicit `select_backend(Some(IoUring))` fails
/// promptly with `EPERM` (no hang, no silent fallback); the process can
/// still choose the thread backend afterwards.
#[test]
fn io_uring_denied_explicit_request_is_a_clear_error() {
    let test = "io_uring_denied_explicit_request_is_a_clear_error";
    let _serial = serial();
    if start(test).is_none() || !supported(test) {
        return;
    }
    let mem = shared_page();
    let child = fork_child(test, || {
        deny_io_uring()?;
        let started = Instant::now();
        let r = select_backend(Some(BackendKind::IoUring));
        let took = started.elapsed();
        match r {
            Err(e) => {
                clog!("select_backend(Some(IoUring)) with io_uring denied: {e} (after {took:?})");
                ensure!(
                    e.raw_os_error() == Some(libc::EPERM),
                    "want EPERM, got {e:?}"
                );
            }
            Ok(kind) => return fail(format!("explicit io_uring request succeeded: {kind}")),
        }
        // Still refused on a second try (cached), and handles cannot start
        // it either... until the thread backend is chosen.
        let again = select_backend(Some(BackendKind::IoUring));
        ensure!(
            again.as_ref().err().and_then(|e| e.raw_os_error()) == Some(libc::EPERM),
            "second explicit request: {again:?}"
        );
        let kind = io(
            "select_backend(Some(Thread)) after the failure",
            select_backend(Some(BackendKind::Thread)),
        )?;
        ensure!(kind == BackendKind::Thread, "got {kind}");
        let f = io("futex(0)", mem.futex(0))?;
        pingpong_child_async(&f, 100)
    });
    let f = mem.futex(0).unwrap();
    rt_current().block_on(pingpong_parent_async(&f, 100));
    child.expect_ok();
}

/// With io_uring denied and no `select_backend` call, `AFX_BACKEND` rules:
/// `io_uring` → a clear `EPERM` error; `thread`, `auto` or unset → threads.
#[test]
fn io_uring_denied_respects_afx_backend() {
    let test = "io_uring_denied_respects_afx_backend";
    let _serial = serial();
    if start(test).is_none() || !supported(test) {
        return;
    }
    let env = std::env::var("AFX_BACKEND").ok();
    let child = fork_child(test, || {
        deny_io_uring()?;
        let r = asyncfutex::backend();
        match env.as_deref().map(str::trim) {
            Some("io_uring") => ensure!(
                r.as_ref().err().and_then(|e| e.raw_os_error()) == Some(libc::EPERM),
                "AFX_BACKEND=io_uring with io_uring denied: want EPERM, got {r:?}"
            ),
            _ => ensure!(
                matches!(r, Ok(BackendKind::Thread)),
                "AFX_BACKEND={env:?} with io_uring denied: want thread, got {r:?}"
            ),
        }
        clog!("AFX_BACKEND={env:?}, io_uring denied: backend() = {r:?}");
        Ok(())
    });
    child.expect_ok();
}
