//! The C++ and Python bindings (`bindings/`), run against the freshly built
//! `libasyncfutex.so`.
//!
//! - `cpp_bindings` compiles `bindings/cpp/tests/test_asio.cpp`,
//!   `bindings/cpp/tests/test_wait_any.cpp` (vector waits) and
//!   `bindings/cpp/tests/test_sync.cpp` (the cross-process mutex, semaphore,
//!   event count and channel wrappers, blocking and through Asio; all three
//!   with AddressSanitizer + UndefinedBehaviorSanitizer) and the Asio
//!   examples `bindings/cpp/examples/asio_wait.cpp` and
//!   `bindings/cpp/examples/asio_lock.cpp` with `g++ -std=c++17 -Wall
//!   -Wextra -Werror` against `include/asyncfutex.h`, the header-only
//!   wrappers and the built library, and runs them. Without `g++` or
//!   standalone Asio (`asio.hpp`, Debian's `libasio-dev`) it prints a counted
//!   SKIP; CI installs both.
//! - `python_bindings` runs `bindings/python/run-tests.sh` (a cached venv in
//!   `target/py-venv`; the package `pip install`ed with its bundled library;
//!   pytest on the default asyncio loop and on uvloop, a C peer included).
//!
//! The environment passes through, so each runs once per backend:
//! `AFX_BACKEND=io_uring cargo test --test bindings` and
//! `AFX_BACKEND=thread cargo test --test bindings` (and
//! `AFX_BACKEND=thread AFX_THREAD_WAITV=0` for the thread backend's
//! per-wait mode, where the vector-wait tests check ENOSYS). A program that
//! exits 77 (the backend cannot run here) or a pytest run that only skipped
//! is a counted SKIP, never a silent pass, and so is each case a passing
//! program reports with a `SKIP <case>: <reason>` line; any failure shows
//! the output.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

mod support;
use support::{run_with_watchdog, Outcome};

/// Watchdog for one C++ program (each also has its own alarm).
const CPP_TIMEOUT: Duration = Duration::from_secs(90);
/// Watchdog for the Python suite, venv creation (first run) included.
const PYTHON_TIMEOUT: Duration = Duration::from_secs(300);
/// Exit status of a program that skips.
const EXIT_SKIP: i32 = 77;

static SKIPS: AtomicUsize = AtomicUsize::new(0);

/// Writes to the real stderr, past the harness's capture, so SKIP and PASS
/// lines show in a plain `cargo test`.
fn announce(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn skip(label: &str, reason: &str) {
    let n = SKIPS.fetch_add(1, Ordering::SeqCst) + 1;
    announce(&format!(
        "SKIP {label}: {reason} [skip #{n} of this run, AFX_BACKEND={}]",
        requested_backend()
    ));
}

fn requested_backend() -> String {
    std::env::var("AFX_BACKEND").unwrap_or_default()
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

static CDYLIB: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The directory of a freshly built `libasyncfutex.so` (built once per test
/// binary: `cargo test` does not refresh the cdylib), with the test
/// binary's profile and target directory.
fn cdylib_dir() -> PathBuf {
    match CDYLIB.get_or_init(build_cdylib) {
        Ok(dir) => dir.clone(),
        Err(e) => panic!("building libasyncfutex.so failed:\n{e}"),
    }
}

fn build_cdylib() -> Result<PathBuf, String> {
    let profile_dir = support::cargo_build(&["--lib"])?;
    let lib = profile_dir.join("libasyncfutex.so");
    if !lib.exists() {
        return Err(format!("{} missing after cargo build --lib", lib.display()));
    }
    Ok(profile_dir)
}

/// A fresh directory for this process's binaries; removes those of
/// processes that are gone.
fn bin_dir() -> PathBuf {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bindings");
    std::fs::create_dir_all(&base).unwrap_or_else(|e| panic!("{}: {e}", base.display()));
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
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

impl Outcome {
    fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    fn describe(&self) -> String {
        if self.timed_out {
            return format!(
                "watchdog expired after {:.1} s: killed",
                self.elapsed.as_secs_f64()
            );
        }
        match self.status {
            Some(s) => match (s.code(), s.signal()) {
                (Some(code), _) => format!("exit status {code}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                _ => format!("{s}"),
            },
            None => "unknown status".to_owned(),
        }
    }

    fn shown(&self) -> String {
        format!(
            "--- stdout ---\n{}--- stderr ---\n{}",
            self.stdout, self.stderr
        )
    }
}

// ---- C++ -----------------------------------------------------------------

fn cxx_compiler() -> OsString {
    std::env::var_os("CXX")
        .filter(|cxx| !cxx.is_empty())
        .unwrap_or_else(|| OsString::from("g++"))
}

/// Why the C++ tests cannot build here (no compiler, no Asio), if so.
fn cpp_missing() -> Option<String> {
    let cxx = cxx_compiler();
    match Command::new(&cxx)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => {}
        _ => return Some(format!("no C++ compiler ({cxx:?}; install g++ or set CXX)")),
    }
    // Does `#include <asio.hpp>` resolve?
    let mut probe = Command::new(&cxx);
    probe
        .args(["-std=c++17", "-x", "c++", "-fsyntax-only", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let found = probe.spawn().and_then(|mut child| {
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(b"#include <asio.hpp>\nint main() {}\n")?;
        }
        child.wait()
    });
    match found {
        Ok(status) if status.success() => None,
        _ => {
            Some("standalone Asio (asio.hpp) is not installed (apt-get install libasio-dev)".into())
        }
    }
}

fn cxx_command(source: &Path, output: &Path, lib_dir: &Path, sanitize: bool) -> Command {
    let root = manifest_dir();
    let mut cmd = Command::new(cxx_compiler());
    cmd.args(["-std=c++17", "-Wall", "-Wextra", "-Werror", "-g"]);
    if sanitize {
        cmd.args(support::SANITIZE_FLAGS);
    } else {
        cmd.arg("-O2");
    }
    cmd.arg("-I")
        .arg(root.join("bindings/cpp/include"))
        .arg("-I")
        .arg(root.join("include"))
        .arg(source)
        .arg("-o")
        .arg(output)
        .arg("-L")
        .arg(lib_dir)
        .arg("-lasyncfutex")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .arg("-pthread");
    cmd
}

/// Judges a C++ program: PASS line(s) and exit 0 (each `SKIP <case>:` line
/// it printed is a counted skip), or a counted skip of it all (77); panics
/// otherwise, showing its output.
fn judge_cpp(label: &str, outcome: &Outcome) {
    match outcome.code() {
        Some(0) if !outcome.timed_out => {
            let passes: Vec<&str> = outcome
                .stdout
                .lines()
                .filter(|l| l.starts_with("PASS") || l.starts_with("NOTE"))
                .collect();
            assert!(
                !passes.is_empty(),
                "{label}: exit status 0 but no PASS line\n{}",
                outcome.shown()
            );
            for line in passes {
                announce(&format!("bindings/cpp: {line}"));
            }
            for case in outcome
                .stdout
                .lines()
                .filter_map(|l| l.strip_prefix("SKIP "))
            {
                skip(label, case);
            }
            announce(&format!(
                "bindings/cpp: {label} passed in {:.2} s (AFX_BACKEND={})",
                outcome.elapsed.as_secs_f64(),
                requested_backend()
            ));
        }
        Some(EXIT_SKIP) if !outcome.timed_out => {
            let reason = outcome
                .stdout
                .lines()
                .find_map(|l| l.strip_prefix("SKIP: "))
                .unwrap_or("(the program printed no reason)");
            skip(label, reason);
        }
        _ => panic!(
            "{label}: {} after {:.2} s (AFX_BACKEND={})\n{}",
            outcome.describe(),
            outcome.elapsed.as_secs_f64(),
            requested_backend(),
            outcome.shown()
        ),
    }
}

/// The C++ wrappers' tests (sanitized) and the Asio examples, built with
/// `-Wall -Wextra -Werror` against the header and the built library.
#[test]
fn cpp_bindings() {
    if let Some(reason) = cpp_missing() {
        skip("cpp_bindings", &reason);
        return;
    }
    let lib_dir = cdylib_dir();
    let out_dir = bin_dir();
    let root = manifest_dir();
    let programs = [
        (
            "test_asio",
            root.join("bindings/cpp/tests/test_asio.cpp"),
            true,
        ),
        (
            "test_wait_any",
            root.join("bindings/cpp/tests/test_wait_any.cpp"),
            true,
        ),
        (
            "test_sync",
            root.join("bindings/cpp/tests/test_sync.cpp"),
            true,
        ),
        (
            "asio_wait",
            root.join("bindings/cpp/examples/asio_wait.cpp"),
            false,
        ),
        (
            "asio_lock",
            root.join("bindings/cpp/examples/asio_lock.cpp"),
            false,
        ),
    ];
    // Compile them all at once, then run each.
    let jobs: Vec<_> = programs
        .iter()
        .map(|(name, source, sanitize)| {
            let output = out_dir.join(name);
            let child = cxx_command(source, &output, &lib_dir, *sanitize)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn();
            (*name, source, output, child)
        })
        .collect();
    let mut binaries = Vec::new();
    for (name, source, output, child) in jobs {
        match child.and_then(|c| c.wait_with_output()) {
            Ok(out) if out.status.success() => binaries.push((name, output)),
            Ok(out) => panic!(
                "{:?} failed for {} ({}):\n{}{}",
                cxx_compiler(),
                source.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => panic!("cannot run {:?}: {e}", cxx_compiler()),
        }
    }
    for (name, binary) in binaries {
        let mut cmd = Command::new(&binary);
        if name.starts_with("test_") {
            support::sanitizer_options(&mut cmd);
        } else {
            cmd.arg("300"); // rounds
        }
        let outcome = run_with_watchdog(cmd, CPP_TIMEOUT);
        judge_cpp(name, &outcome);
    }
}

// ---- Python --------------------------------------------------------------

/// The last line of pytest's summary, e.g. `58 passed in 1.70s`.
fn pytest_summary(stdout: &str) -> Option<&str> {
    stdout
        .lines()
        .rev()
        .map(|l| l.trim().trim_matches('='))
        .map(str::trim)
        .find(|l| {
            (l.contains(" passed") || l.contains(" skipped") || l.contains(" failed"))
                && l.contains(" in ")
        })
}

/// Counts `N <word>` in a pytest summary line.
fn pytest_count(summary: &str, word: &str) -> usize {
    let words: Vec<&str> = summary
        .split([' ', ','])
        .filter(|w| !w.is_empty())
        .collect();
    words
        .windows(2)
        .filter(|w| w[1].starts_with(word))
        .filter_map(|w| w[0].parse::<usize>().ok())
        .sum()
}

/// `bindings/python/run-tests.sh`: `pip install`s the package as a user
/// does (its build hook runs `cargo build --lib` with this test's profile
/// and bundles the library in the wheel) and runs pytest against the
/// bundled copy (no `ASYNCFUTEX_LIB`), on the default asyncio loop and on
/// uvloop (AFX_BACKEND passes through). The suite includes a C peer sharing
/// each primitive with Python, compiled against the bundled library.
#[test]
fn python_bindings() {
    cdylib_dir(); // a clear failure here if the library does not build
    let profile = match support::profile_dir() {
        Ok((_, profile)) => profile,
        Err(e) => panic!("{e}"),
    };
    let script = manifest_dir().join("bindings/python/run-tests.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script)
        .arg("-q")
        .arg("-rs")
        .env("AFX_PY_PROFILE", &profile)
        .env_remove("ASYNCFUTEX_LIB")
        .env_remove("ASYNCFUTEX_PREBUILT_LIB")
        .current_dir(std::env::temp_dir()); // the script works from any cwd
    let outcome = run_with_watchdog(cmd, PYTHON_TIMEOUT);
    let summary = pytest_summary(&outcome.stdout).map(str::to_owned);
    if outcome.code() != Some(0) || outcome.timed_out {
        panic!(
            "bindings/python/run-tests.sh: {} after {:.1} s (AFX_BACKEND={}){}\n{}",
            outcome.describe(),
            outcome.elapsed.as_secs_f64(),
            requested_backend(),
            summary.map(|s| format!(": {s}")).unwrap_or_default(),
            outcome.shown()
        );
    }
    let Some(summary) = summary else {
        panic!(
            "bindings/python/run-tests.sh exited 0 without a pytest summary\n{}",
            outcome.shown()
        );
    };
    let passed = pytest_count(&summary, "passed");
    let skipped = pytest_count(&summary, "skipped");
    if passed == 0 && skipped > 0 {
        let reason = outcome
            .stdout
            .lines()
            .find_map(|l| l.split_once("SKIPPED").map(|(_, r)| r.trim()))
            .unwrap_or("every test skipped");
        skip("python_bindings", reason);
        return;
    }
    assert!(
        passed > 0,
        "no Python test passed: {summary}\n{}",
        outcome.shown()
    );
    announce(&format!(
        "bindings/python: {summary} (run-tests.sh took {:.1} s, AFX_BACKEND={})",
        outcome.elapsed.as_secs_f64(),
        requested_backend()
    ));
    if skipped > 0 {
        for line in outcome.stdout.lines().filter(|l| l.starts_with("SKIPPED")) {
            let n = SKIPS.fetch_add(1, Ordering::SeqCst) + 1;
            announce(&format!(
                "SKIP bindings/python: {line} [skip #{n} of this run]"
            ));
        }
    }
}
