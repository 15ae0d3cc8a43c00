//! Runs every example, each as its own `#[test]`: the Rust examples
//! (`examples/*.rs` and the `async_futex_example` binary) and the C examples
//! (`examples-c/`, built with its own Makefile against the freshly built
//! `libasyncfutex.so` and `include/asyncfutex.h`, with AddressSanitizer,
//! LeakSanitizer and UBSan).
//!
//! Every example checks what it demonstrates and exits non-zero when the
//! behaviour is wrong; a test passes when its example exits 0, printed its
//! final line, and names the backend `AFX_BACKEND` asked for. Each run has a
//! watchdog: an example still running after [`TIMEOUT`] is killed with its
//! whole process group and fails. The environment passes through, so the
//! suite runs once per backend:
//! `AFX_BACKEND=io_uring cargo test --test examples` and
//! `AFX_BACKEND=thread cargo test --test examples`. A backend that cannot
//! run on this machine gives counted SKIP lines, never a silent pass; so
//! does a vector-wait example (`wait_any_queues`, `multi_queue`) where
//! vector waits cannot work (the thread backend's per-wait mode), and only
//! there: a skip anywhere else fails.
//!
//! Needs `make`, a C compiler and libuv (`pkg-config libuv`); a missing one
//! is a failure with an install hint, not a skip.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

mod support;
use support::{describe, Outcome};

fn run_with_watchdog(cmd: Command) -> Outcome {
    support::run_with_watchdog(cmd, TIMEOUT)
}

/// Watchdog for one example (each also has its own 20–30 s alarm).
const TIMEOUT: Duration = Duration::from_secs(60);

static SKIPS: AtomicUsize = AtomicUsize::new(0);

/// Writes straight to stderr, past the harness's output capture.
fn announce(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn requested_backend() -> String {
    std::env::var("AFX_BACKEND").unwrap_or_default()
}

/// `None` when the examples can run with the requested backend, or the
/// reason they cannot (a forced backend this machine cannot run).
fn backend_unavailable() -> Option<String> {
    static PROBE: OnceLock<Option<String>> = OnceLock::new();
    PROBE
        .get_or_init(|| match asyncfutex::backend() {
            Ok(_) => None,
            Err(e) => {
                let wanted = requested_backend();
                if wanted.is_empty() || wanted == "auto" {
                    panic!("no wait backend can run here: {e}");
                }
                Some(format!("AFX_BACKEND={wanted} cannot run here: {e}"))
            }
        })
        .clone()
}

/// Counted skip when the requested backend cannot run; returns whether to
/// skip.
fn skip_if_unavailable(label: &str) -> bool {
    let Some(reason) = backend_unavailable() else {
        return false;
    };
    let n = SKIPS.fetch_add(1, Ordering::SeqCst) + 1;
    announce(&format!("SKIP {label}: {reason} [skip #{n} of this run]"));
    true
}

/// Builds the cdylib, the binaries and the examples with this test's
/// profile (`cargo test` builds none of them where the C side and this
/// driver look) and returns `target/<profile>`.
fn cargo_build() -> Result<PathBuf, String> {
    let dir = support::cargo_build(&["--lib", "--bins", "--examples"])?;
    if !dir.join("libasyncfutex.so").exists() {
        return Err(format!("no libasyncfutex.so in {}", dir.display()));
    }
    Ok(dir)
}

fn cargo_built() -> &'static PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BUILT.get_or_init(cargo_build) {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    }
}

/// A fresh build directory for this process's C binaries (two test runs
/// may share the target dir); removes those of processes that are gone.
fn c_build_dir() -> Result<PathBuf, String> {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("examples-c");
    std::fs::create_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
    for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let pid = name.to_str().and_then(|n| n.strip_prefix("run-"));
        if let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = base.join(format!("run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(dir)
}

/// The C examples' build: its directory and the output of `make` (which
/// keeps going past a failed program, so one missing library fails one
/// test).
struct CBuild {
    dir: PathBuf,
    log: String,
}

fn c_built() -> &'static CBuild {
    static BUILT: OnceLock<Result<CBuild, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let lib_dir = cargo_built();
        let dir = c_build_dir()?;
        let mut cmd = Command::new("make");
        cmd.arg("-C")
            .arg(manifest_dir().join("examples-c"))
            .args(["-k", "-j4"])
            .arg(format!("BUILD={}", dir.display()))
            .arg(format!("LIBDIR={}", lib_dir.display()))
            .arg(format!(
                "INCDIR={}",
                manifest_dir().join("include").display()
            ))
            // Through the environment, so the Makefile's `+=` flags stay.
            .env(
                "CFLAGS",
                format!("-O1 -g {}", support::SANITIZE_FLAGS.join(" ")),
            )
            .env("LDFLAGS", support::SANITIZE_FLAGS.join(" "));
        let log = match cmd.output() {
            Ok(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => {
                return Err(format!(
                    "cannot run make ({e}): install make and a C compiler \
                     (apt-get install make gcc)"
                ))
            }
        };
        Ok(CBuild { dir, log })
    });
    match built {
        Ok(build) => build,
        Err(e) => panic!("{e}"),
    }
}

/// Exit status of an example that cannot run here; its last line is then
/// `SKIP: <why>`. Only the vector-wait examples use it, and only where
/// vector waits are unavailable (see [`vector_waits_unavailable`]).
const SKIP_STATUS: i32 = 77;

/// `Some(why)` where vector waits (`wait_any`, `afx_waitv_async`) cannot
/// work: the thread backend's per-wait mode, forced by `AFX_THREAD_WAITV`
/// or taken because the kernel refuses `futex_waitv(2)`. `None` means they
/// must work, so an example that skips fails.
fn vector_waits_unavailable() -> Option<String> {
    if let Ok(v) = std::env::var("AFX_THREAD_WAITV") {
        if matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "0" | "off" | "no" | "false"
        ) {
            return Some(format!("AFX_THREAD_WAITV={v} forces the per-wait mode"));
        }
    }
    // futex_waitv(2) with one entry whose word does not hold the expected
    // value: EAGAIN at once where the call exists.
    #[repr(C)]
    struct FutexWaitv {
        val: u64,
        uaddr: u64,
        flags: u32,
        reserved: u32,
    }
    let word = std::sync::atomic::AtomicU32::new(0);
    let entry = FutexWaitv {
        val: 1,
        uaddr: word.as_ptr() as u64,
        flags: 0x02 | 128, // FUTEX2_SIZE_U32 | FUTEX2_PRIVATE
        reserved: 0,
    };
    // SAFETY: one valid entry on a live word, no timeout; it cannot sleep
    // (the word does not hold `val`).
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            &entry as *const FutexWaitv,
            1u32,
            0u32,
            std::ptr::null::<libc::timespec>(),
            libc::CLOCK_MONOTONIC,
        )
    };
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENOSYS) | Some(libc::EPERM) if r < 0 => {
            Some(format!("this kernel refuses futex_waitv(2): {err}"))
        }
        _ => None,
    }
}

/// Passes when the program exited 0, printed `last_line_prefix` as its
/// final line, and names the requested backend; panics with its output
/// otherwise. A program that exits [`SKIP_STATUS`] with a final
/// `SKIP: <why>` line is a counted skip when `skip_allowed` says why it may
/// skip here, and a failure otherwise.
fn judge_or_skip(
    label: &str,
    outcome: &Outcome,
    last_line_prefix: &str,
    skip_allowed: impl Fn() -> Option<String>,
) {
    let shown = || {
        format!(
            "--- stdout ---\n{}--- stderr ---\n{}",
            outcome.stdout, outcome.stderr
        )
    };
    let backend = requested_backend();
    if outcome.timed_out {
        panic!(
            "{label}: watchdog expired after {:?}: killed (AFX_BACKEND={backend})\n{}",
            outcome.elapsed,
            shown()
        );
    }
    if outcome.status.and_then(|s| s.code()) == Some(SKIP_STATUS) {
        let last = outcome.stdout.lines().last().unwrap_or("");
        match (last.strip_prefix("SKIP: "), skip_allowed()) {
            (Some(why), Some(allowed)) => {
                let n = SKIPS.fetch_add(1, Ordering::SeqCst) + 1;
                announce(&format!(
                    "SKIP {label}: {why} ({allowed}) [skip #{n} of this run]"
                ));
                return;
            }
            (_, None) => panic!(
                "{label}: skipped, but nothing here should make it skip \
                 (AFX_BACKEND={backend})\n{}",
                shown()
            ),
            (None, Some(_)) => panic!(
                "{label}: exit status {SKIP_STATUS} without a final \"SKIP: <why>\" line\n{}",
                shown()
            ),
        }
    }
    if outcome.status.and_then(|s| s.code()) != Some(0) {
        panic!(
            "{label}: {} after {:.2} s (AFX_BACKEND={backend})\n{}",
            describe(outcome.status),
            outcome.elapsed.as_secs_f64(),
            shown()
        );
    }
    let last = outcome.stdout.lines().last().unwrap_or("");
    if !last.starts_with(last_line_prefix) {
        panic!(
            "{label}: exit status 0 but the last line is not \"{last_line_prefix}...\"\n{}",
            shown()
        );
    }
    if !backend.is_empty() && backend != "auto" {
        let named = outcome.stdout.contains(&format!("backend {backend}"))
            || outcome.stdout.contains(&format!("backend: {backend}"));
        if !named {
            panic!(
                "{label}: AFX_BACKEND={backend} but the output does not name that backend\n{}",
                shown()
            );
        }
    }
    announce(&format!(
        "examples: {label}: {last} ({:.2} s, AFX_BACKEND={backend})",
        outcome.elapsed.as_secs_f64()
    ));
}

/// Builds (once) and runs one Rust example, or the `bin` binary.
fn run_rust(name: &str, bin: bool, last_line_prefix: &str) {
    run_rust_or_skip(name, bin, last_line_prefix, || None);
}

/// [`run_rust`] for an example that may skip where `skip_allowed` says.
fn run_rust_or_skip(
    name: &str,
    bin: bool,
    last_line_prefix: &str,
    skip_allowed: impl Fn() -> Option<String>,
) {
    if skip_if_unavailable(name) {
        return;
    }
    let dir = cargo_built();
    let path = if bin {
        dir.join(name)
    } else {
        dir.join("examples").join(name)
    };
    assert!(path.exists(), "{} was not built", path.display());
    let outcome = run_with_watchdog(Command::new(&path));
    judge_or_skip(name, &outcome, last_line_prefix, skip_allowed);
}

/// Builds (once) and runs one C example from `examples-c/`.
fn run_c(name: &str) {
    run_c_or_skip(name, || None);
}

/// [`run_c`] for an example that may skip where `skip_allowed` says.
fn run_c_or_skip(name: &str, skip_allowed: impl Fn() -> Option<String>) {
    let label = format!("examples-c/{name}");
    if skip_if_unavailable(&label) {
        return;
    }
    let build = c_built();
    let path = build.dir.join(name);
    if !path.exists() {
        let mut hint = String::new();
        if name == "libuv_loop" {
            let has_libuv = Command::new("pkg-config")
                .args(["--exists", "libuv"])
                .status()
                .is_ok_and(|s| s.success());
            if !has_libuv {
                hint = "\nlibuv is missing: install libuv1-dev and pkg-config \
                        (Debian/Ubuntu: scripts/setup-debian.sh does it)"
                    .to_owned();
            }
        }
        panic!(
            "{label}: not built by make{hint}\n--- make output ---\n{}",
            build.log
        );
    }
    let mut cmd = Command::new(&path);
    support::sanitizer_options(&mut cmd);
    let outcome = run_with_watchdog(cmd);
    judge_or_skip(&label, &outcome, "OK", skip_allowed);
}

#[test]
fn rust_async_futex_example() {
    run_rust("async_futex_example", true, "all demos passed");
}

#[test]
fn rust_producer_consumer() {
    run_rust("producer_consumer", false, "OK");
}

#[test]
fn rust_process_lock() {
    run_rust("process_lock", false, "OK");
}

#[test]
fn rust_broadcast() {
    run_rust("broadcast", false, "OK");
}

/// One consumer, eight producer processes, one `wait_any` over eight words.
#[test]
fn rust_wait_any_queues() {
    run_rust_or_skip("wait_any_queues", false, "OK", vector_waits_unavailable);
}

#[test]
fn c_epoll_loop() {
    run_c("epoll_loop");
}

#[test]
fn c_libuv_loop() {
    run_c("libuv_loop");
}

#[test]
fn c_producer_consumer() {
    run_c("producer_consumer");
}

#[test]
fn c_process_lock() {
    run_c("process_lock");
}

#[test]
fn c_broadcast() {
    run_c("broadcast");
}

/// The same with `afx_waitv_async` + epoll on one eventfd.
#[test]
fn c_multi_queue() {
    run_c_or_skip("multi_queue", vector_waits_unavailable);
}
