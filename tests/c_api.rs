//! The C test suite: builds every `tests/c/*.c` program against the freshly
//! built `libasyncfutex.so` and the committed `include/asyncfutex.h`, under
//! AddressSanitizer + UndefinedBehaviorSanitizer (LeakSanitizer on), and
//! runs each one as its own `#[test]`.
//!
//! Exit status of a program: 0 pass, 77 skip (its `SKIP: reason` line is
//! printed and counted, never a silent pass), anything else fail (its
//! stdout and stderr are shown). Every run has a watchdog: a program still
//! running after [`TIMEOUT`] is killed with its whole process group and
//! fails. The environment passes through, so the suite runs once per
//! backend: `AFX_BACKEND=io_uring cargo test --test c_api` and
//! `AFX_BACKEND=thread cargo test --test c_api`.
//!
//! A few programs also run without sanitizers under valgrind (memcheck,
//! definite leaks are errors) when it is installed; otherwise those tests
//! print a counted SKIP.
//!
//! Needs a C compiler: `cc`, or `$CC`. Its absence is a failure, not a skip.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

mod support;
use support::{describe, run_with_watchdog, Outcome};

/// Watchdog for one sanitized program (each also has its own 30 s alarm).
const TIMEOUT: Duration = Duration::from_secs(60);
/// Watchdog for one program under valgrind.
const VALGRIND_TIMEOUT: Duration = Duration::from_secs(180);
/// Exit status of a program that skips.
const EXIT_SKIP: i32 = 77;

/// Programs also run under valgrind: those that never fork (valgrind
/// leak-checks a fork child at `_exit`, where the parent's threads are
/// gone) and never hand the kernel a bad address on purpose. Valgrind 3.19
/// knows neither io_uring's futex ops nor `futex_waitv` (it returns
/// `ENOSYS`), so these runs exercise the thread backend's per-wait mode,
/// signal-interrupted cancels included (cancel_race).
const VALGRIND_PROGRAMS: &[&str] = &[
    "cancel_race",
    "double_arm",
    "fd_leak",
    "private_flag",
    "thread_exit",
];

static SKIPS: AtomicUsize = AtomicUsize::new(0);

/// Writes straight to the process's stderr, bypassing the test harness's
/// output capture, so SKIP and PASS lines show in a plain `cargo test`.
fn announce(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// What the build step produced.
struct Build {
    /// Sanitized binary per program, or why it did not compile.
    programs: BTreeMap<String, Result<PathBuf, String>>,
    /// Non-sanitized binary per valgrind program.
    plain: BTreeMap<String, Result<PathBuf, String>>,
    /// `Some(path)` when valgrind is installed.
    valgrind: Option<PathBuf>,
}

static BUILD: OnceLock<Result<Build, String>> = OnceLock::new();

fn build() -> &'static Build {
    match BUILD.get_or_init(build_all) {
        Ok(build) => build,
        Err(e) => panic!("building the C tests failed:\n{e}"),
    }
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn c_dir() -> PathBuf {
    manifest_dir().join("tests").join("c")
}

/// Names (file stems) of every `tests/c/*.c`, sorted.
fn c_programs() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(c_dir())
        .expect("tests/c exists")
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            if path.extension()? != "c" {
                return None;
            }
            Some(path.file_stem()?.to_str()?.to_owned())
        })
        .collect();
    names.sort();
    names
}

/// Rebuilds the cdylib with the test binary's profile (`cargo test` does not
/// refresh `target/<profile>/libasyncfutex.so`) and returns its directory.
fn build_cdylib() -> Result<PathBuf, String> {
    let profile_dir = support::cargo_build(&["--lib"])?;
    let lib = profile_dir.join("libasyncfutex.so");
    if !lib.exists() {
        return Err(format!("{} missing after cargo build --lib", lib.display()));
    }
    Ok(profile_dir)
}

fn c_compiler() -> OsString {
    std::env::var_os("CC")
        .filter(|cc| !cc.is_empty())
        .unwrap_or_else(|| OsString::from("cc"))
}

/// A fresh directory for this process's binaries (two `cargo test` runs
/// may share the target dir); removes those of processes that are gone.
fn bin_dir() -> Result<PathBuf, String> {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("c-tests");
    std::fs::create_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let pid = name.to_str().and_then(|n| n.strip_prefix("run-"));
            if let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }
    let dir = base.join(format!("run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// The compiler command for one program.
fn cc_command(source: &Path, output: &Path, lib_dir: &Path, sanitize: bool) -> Command {
    let mut cmd = Command::new(c_compiler());
    cmd.args(["-std=c11", "-Wall", "-Wextra", "-Werror"]);
    if sanitize {
        cmd.args(support::SANITIZE_FLAGS);
    } else {
        cmd.arg("-O1");
    }
    cmd.args(["-g", "-D_GNU_SOURCE"])
        .arg("-I")
        .arg(manifest_dir().join("include"))
        .arg(source)
        .arg("-o")
        .arg(output)
        .arg("-L")
        .arg(lib_dir)
        .arg("-lasyncfutex")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .arg("-lpthread");
    cmd
}

fn build_all() -> Result<Build, String> {
    // The compiler first: its absence is the likeliest problem.
    match Command::new(c_compiler())
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => {}
        Ok(status) => {
            return Err(format!(
                "C compiler {:?} --version failed ({status})",
                c_compiler()
            ))
        }
        Err(e) => {
            return Err(format!(
                "no C compiler: cannot run {:?} ({e}). The C tests need one: install gcc \
                 (apt-get install gcc) or set CC.",
                c_compiler()
            ))
        }
    }
    let lib_dir = build_cdylib()?;
    let out_dir = bin_dir()?;
    let valgrind = which("valgrind");

    // Start every compilation, then collect them.
    let mut jobs = Vec::new();
    for name in c_programs() {
        let source = c_dir().join(format!("{name}.c"));
        let plain = valgrind.is_some() && VALGRIND_PROGRAMS.contains(&name.as_str());
        for sanitize in [true, false] {
            if !sanitize && !plain {
                continue;
            }
            let output = out_dir.join(if sanitize {
                name.clone()
            } else {
                format!("{name}.plain")
            });
            let mut cmd = cc_command(&source, &output, &lib_dir, sanitize);
            let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
            jobs.push((name.clone(), sanitize, output, child));
        }
    }
    let mut programs = BTreeMap::new();
    let mut plain = BTreeMap::new();
    for (name, sanitize, output, child) in jobs {
        let result = match child.and_then(|c| c.wait_with_output()) {
            Ok(out) if out.status.success() => Ok(output),
            Ok(out) => Err(format!(
                "cc failed for tests/c/{name}.c ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )),
            Err(e) => Err(format!("cannot run the C compiler: {e}")),
        };
        if sanitize {
            programs.insert(name, result);
        } else {
            plain.insert(name, result);
        }
    }
    Ok(Build {
        programs,
        plain,
        valgrind,
    })
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn requested_backend() -> String {
    std::env::var("AFX_BACKEND").unwrap_or_default()
}

/// Judges an outcome: returns normally on pass or counted skip, panics on
/// anything else.
fn judge(label: &str, outcome: &Outcome) {
    let code = outcome.status.and_then(|s| s.code());
    let shown = || {
        format!(
            "--- stdout ---\n{}--- stderr ---\n{}",
            outcome.stdout, outcome.stderr
        )
    };
    if outcome.timed_out {
        panic!(
            "{label}: watchdog expired after {:?}: killed\n{}",
            outcome.elapsed,
            shown()
        );
    }
    match code {
        Some(0) => {
            let Some(summary) = outcome.stdout.lines().rev().find(|l| l.starts_with("PASS")) else {
                panic!("{label}: exit status 0 but no PASS line\n{}", shown());
            };
            announce(&format!(
                "c_api: {summary} ({:.2} s, AFX_BACKEND={})",
                outcome.elapsed.as_secs_f64(),
                requested_backend()
            ));
        }
        Some(EXIT_SKIP) => {
            let reason = outcome
                .stdout
                .lines()
                .find_map(|l| l.strip_prefix("SKIP: "))
                .unwrap_or("(the program printed no reason)");
            let n = SKIPS.fetch_add(1, Ordering::SeqCst) + 1;
            announce(&format!(
                "SKIP {label}: {reason} [skip #{n} of this run, AFX_BACKEND={}]",
                requested_backend()
            ));
        }
        _ => panic!(
            "{label}: {} after {:.2} s (AFX_BACKEND={})\n{}",
            describe(outcome.status),
            outcome.elapsed.as_secs_f64(),
            requested_backend(),
            shown()
        ),
    }
}

/// Builds (once), runs one sanitized program and judges it.
fn run_c_test(name: &str) {
    let build = build();
    let binary = match build.programs.get(name) {
        Some(Ok(binary)) => binary,
        Some(Err(e)) => panic!("{e}"),
        None => panic!("tests/c/{name}.c does not exist"),
    };
    let mut cmd = Command::new(binary);
    support::sanitizer_options(&mut cmd);
    let outcome = run_with_watchdog(cmd, TIMEOUT);
    judge(name, &outcome);
}

/// Runs one non-sanitized program under valgrind, or prints a counted SKIP.
fn run_valgrind_test(name: &str) {
    let label = format!("valgrind_{name}");
    let build = build();
    let Some(valgrind) = &build.valgrind else {
        let n = SKIPS.fetch_add(1, Ordering::SeqCst) + 1;
        announce(&format!(
            "SKIP {label}: valgrind is not installed [skip #{n} of this run]"
        ));
        return;
    };
    let backend = requested_backend();
    if backend == "io_uring" {
        // Valgrind serialises threads behind one lock and does not release
        // it around io_uring_enter(2), and 3.19 does not implement the
        // io_uring futex ops anyway: the runs always use the thread backend
        // (per-wait mode under valgrind), so they belong to the
        // AFX_BACKEND=thread (or unset) pass and are not repeated here.
        let n = SKIPS.fetch_add(1, Ordering::SeqCst) + 1;
        announce(&format!(
            "SKIP {label}: valgrind runs use the thread backend (valgrind 3.19 has no io_uring \
             futex ops and blocks in io_uring_enter holding its big lock); they run in the \
             AFX_BACKEND=thread pass [skip #{n} of this run, AFX_BACKEND={backend}]"
        ));
        return;
    }
    let binary = match build.plain.get(name) {
        Some(Ok(binary)) => binary,
        Some(Err(e)) => panic!("{e}"),
        None => panic!("tests/c/{name}.c is not built for valgrind"),
    };
    let mut cmd = Command::new(valgrind);
    cmd.args([
        "--error-exitcode=99",
        "--leak-check=full",
        "--errors-for-leak-kinds=definite",
        "--show-leak-kinds=definite",
    ])
    .arg(binary)
    .env("AFX_BACKEND", "thread")
    .env("AFX_TEST_QUICK", "1");
    let mut outcome = run_with_watchdog(cmd, VALGRIND_TIMEOUT);
    if outcome.status.and_then(|s| s.code()) == Some(EXIT_SKIP) {
        // Say where the reason comes from: valgrind's own syscall table.
        outcome.stdout = outcome.stdout.replace(
            "SKIP: ",
            "SKIP: under valgrind (does it know every syscall?): ",
        );
    }
    judge(&label, &outcome);
}

macro_rules! c_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_c_test(stringify!($name));
            }
        )*

        /// Every `tests/c/*.c` has its `#[test]` above.
        #[test]
        fn every_c_program_has_a_test() {
            let listed = [$(stringify!($name)),*];
            let missing: Vec<String> = c_programs()
                .into_iter()
                .filter(|p| !listed.contains(&p.as_str()))
                .collect();
            assert!(missing.is_empty(), "add to c_tests! in tests/c_api.rs: {missing:?}");
        }
    };
}

c_tests!(
    app_signals,
    bad_input,
    blocking_wait,
    cancel_forward,
    cancel_race,
    double_arm,
    eintr_loop,
    epoll_loop,
    fd_leak,
    fork_inherited,
    io_uring_denied,
    no_futex_waitv,
    peer_killed,
    private_flag,
    raw_peer,
    rlimit_nofile,
    sync_event_chan,
    sync_cancel,
    sync_mutex,
    thread_exit,
    thread_limit,
    waitv,
    wake_counts,
);

macro_rules! valgrind_tests {
    ($($test:ident => $name:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                run_valgrind_test(stringify!($name));
            }
        )*

        #[test]
        fn valgrind_list_is_consistent() {
            let listed = [$(stringify!($name)),*];
            assert_eq!(&listed[..], VALGRIND_PROGRAMS);
        }
    };
}

valgrind_tests!(
    valgrind_cancel_race => cancel_race,
    valgrind_double_arm => double_arm,
    valgrind_fd_leak => fd_leak,
    valgrind_private_flag => private_flag,
    valgrind_thread_exit => thread_exit,
);
