//! Shared by the test drivers that build and run programs (`c_api`,
//! `examples`, `bindings`, `reliability_soak`): building the library and
//! examples next to the test binary, and running a program under a
//! watchdog.
#![allow(dead_code)]

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How a program ended.
pub struct Outcome {
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// "exit status N" or "killed by signal N".
pub fn describe(status: Option<ExitStatus>) -> String {
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => format!("{s}"),
        },
        None => "unknown status".to_owned(),
    }
}

/// Runs `cmd` in a process group of its own, killing the whole group when
/// `timeout` expires (the programs fork) and once it has exited (strays).
pub fn run_with_watchdog(mut cmd: Command, timeout: Duration) -> Outcome {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let start = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => panic!("cannot start {:?}: {e}", cmd.get_program()),
    };
    let pgid = child.id() as libc::pid_t;
    let mut out_pipe = child.stdout.take().expect("piped");
    let mut err_pipe = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let kill_group = || {
        // SAFETY: plain kill(2) of the process group we created.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    };
    let (status, timed_out) = match rx.recv_timeout(timeout) {
        Ok(status) => (status.ok(), false),
        Err(_) => {
            kill_group();
            (rx.recv().ok().and_then(Result::ok), true)
        }
    };
    let elapsed = start.elapsed();
    kill_group();
    let _ = waiter.join();
    let stdout = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    Outcome {
        status,
        timed_out,
        stdout,
        stderr,
        elapsed,
    }
}

/// `target[/<triple>]/<profile>` of this test binary, and its cargo profile
/// name (`dev` and `test` build into `debug`; other profiles into a
/// directory of their own name).
pub fn profile_dir() -> Result<(PathBuf, String), String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    // <target-dir>[/<triple>]/<profile>/deps/<test-binary>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("unexpected test binary path {}", exe.display()))?
        .to_path_buf();
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("unexpected profile dir {}", dir.display()))?;
    let profile = match name {
        "debug" => "dev",
        other => other,
    }
    .to_owned();
    Ok((dir, profile))
}

/// Runs `cargo build <what>` with this test binary's profile, target
/// directory and target triple, so that what it builds (the cdylib, the
/// examples: `cargo test` refreshes neither there) lands next to the test.
/// Returns that profile directory.
pub fn cargo_build(what: &[&str]) -> Result<PathBuf, String> {
    let (dir, profile) = profile_dir()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from(env!("CARGO")));
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .args(what)
        .args(["--profile", &profile])
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
    if std::env::var_os("CARGO_TARGET_DIR").is_none() {
        if let Some(above) = dir.parent() {
            // `target/<triple>/<profile>` when built with `--target`.
            let is_target_dir = above.join("CACHEDIR.TAG").exists();
            match above.parent() {
                Some(root) if !is_target_dir && root.join("CACHEDIR.TAG").exists() => {
                    cmd.arg("--target-dir").arg(root);
                    if let Some(triple) = above.file_name() {
                        cmd.arg("--target").arg(triple);
                    }
                }
                _ => {
                    cmd.arg("--target-dir").arg(above);
                }
            }
        }
    }
    let what = format!("cargo build {}", what.join(" "));
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(dir)
}

/// Sets `var` to `ours`, followed by whatever the user set (theirs win).
pub fn sanitizer_env(cmd: &mut Command, var: &str, ours: &str) {
    let value = match std::env::var(var) {
        Ok(theirs) if !theirs.is_empty() => format!("{ours}:{theirs}"),
        _ => ours.to_owned(),
    };
    cmd.env(var, value);
}

/// The compiler flags of a sanitized C or C++ build.
pub const SANITIZE_FLAGS: &[&str] = &["-fsanitize=address,undefined", "-fno-omit-frame-pointer"];

/// Runtime options for a program built with [`SANITIZE_FLAGS`]: stop at the
/// first error, leak checking on, stack traces for UBSan.
pub fn sanitizer_options(cmd: &mut Command) {
    sanitizer_env(
        cmd,
        "ASAN_OPTIONS",
        "detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=1",
    );
    sanitizer_env(cmd, "UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1");
    sanitizer_env(cmd, "LSAN_OPTIONS", "report_objects=1");
}
