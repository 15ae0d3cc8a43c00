//! Reliability (issue 6): runs `examples/soak.rs` in its bounded modes.
//!
//! - `soak_rings`: the lost-wakeup soak (token rings over futex words,
//!   real receivers without timeouts, decoy waiters cancelled at random;
//!   a stalled ring fails it) for [`SOAK_SECONDS`];
//! - `soak_peer_death`: [`KILL_ROUNDS`] rounds of the SIGKILL stress;
//! - `soak_detects_lost_wakes`: the soak's own self-test: with decoys that
//!   swallow the wakes they consume it must fail with a STALL (proof that a
//!   lost wake cannot pass unnoticed).
//!
//! The environment passes through, so the suite runs once per backend:
//! `AFX_BACKEND=io_uring cargo test --test reliability_soak` and
//! `AFX_BACKEND=thread cargo test --test reliability_soak`. A backend this
//! machine cannot run gives a counted SKIP line, never a silent pass.
//! `AFX_SOAK_SECONDS` and `AFX_KILL_ROUNDS` override the bounds. The tests
//! run one at a time (each keeps both CPUs of a CI runner busy); every run
//! has the watchdog of `tests/support` on top of the soak's own. The long
//! release run: `cargo run --release --example soak -- --minutes 15`.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

mod support;
use support::{cargo_build, describe, run_with_watchdog, Outcome};

/// Default soak duration (seconds).
const SOAK_SECONDS: u64 = 25;
/// Default peer-death rounds.
const KILL_ROUNDS: u64 = 1000;
/// The soak's own stall bound (seconds).
const STALL_SECS: u64 = 20;

/// Writes straight to stderr, past the harness's output capture.
fn announce(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&v| v > 0)
        .unwrap_or(default)
}

fn requested_backend() -> String {
    std::env::var("AFX_BACKEND").unwrap_or_default()
}

/// Counted skip when the requested backend cannot run here.
fn skip_if_unavailable(label: &str) -> bool {
    static SKIPS: Mutex<usize> = Mutex::new(0);
    match asyncfutex::backend() {
        Ok(_) => false,
        Err(e) => {
            let wanted = requested_backend();
            if wanted.is_empty() || wanted == "auto" {
                panic!("no wait backend can run here: {e}");
            }
            let mut n = SKIPS.lock().unwrap_or_else(|e| e.into_inner());
            *n += 1;
            announce(&format!(
                "SKIP {label}: AFX_BACKEND={wanted} cannot run here: {e} [skip #{n} of this run]"
            ));
            true
        }
    }
}

/// Builds the `soak` example with this test's profile (as `cargo build
/// --all-targets` would; `cargo test` does not build examples where this
/// driver looks) and returns its path.
fn soak_binary() -> &'static PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let dir = cargo_build(&["--example", "soak"])?;
        let path = dir.join("examples").join("soak");
        if path.exists() {
            Ok(path)
        } else {
            Err(format!("{} was not built", path.display()))
        }
    });
    match built {
        Ok(path) => path,
        Err(e) => panic!("{e}"),
    }
}

fn shown(outcome: &Outcome) -> String {
    format!(
        "--- stdout ---\n{}--- stderr ---\n{}",
        outcome.stdout, outcome.stderr
    )
}

/// Runs the soak with `args`; returns its outcome and the summary line
/// (the last line starting with `summary`).
fn run_soak(args: &[String], timeout: Duration) -> Outcome {
    let mut cmd = Command::new(soak_binary());
    cmd.args(args);
    run_with_watchdog(cmd, timeout)
}

fn summary<'a>(outcome: &'a Outcome, prefix: &str) -> Option<&'a str> {
    outcome.stdout.lines().rev().find(|l| l.starts_with(prefix))
}

/// Passes when the soak exited 0 with its `OK` line naming the requested
/// backend; panics with its output otherwise.
fn judge(label: &str, outcome: &Outcome, ok_prefix: &str) {
    let backend = requested_backend();
    if outcome.timed_out {
        panic!(
            "{label}: the test watchdog expired after {:.0} s (AFX_BACKEND={backend}): killed\n{}",
            outcome.elapsed.as_secs_f64(),
            shown(outcome)
        );
    }
    if outcome.status.and_then(|s| s.code()) != Some(0) {
        panic!(
            "{label}: {} after {:.1} s (AFX_BACKEND={backend})\n{}",
            describe(outcome.status),
            outcome.elapsed.as_secs_f64(),
            shown(outcome)
        );
    }
    let Some(line) = summary(outcome, ok_prefix) else {
        panic!(
            "{label}: exit status 0 but no \"{ok_prefix}\" line\n{}",
            shown(outcome)
        );
    };
    if !backend.is_empty() && backend != "auto" && !line.contains(&format!("backend={backend} ")) {
        panic!("{label}: AFX_BACKEND={backend} but the summary names another backend: {line}");
    }
    if !line.contains(" stalls=0") && !line.contains(" stale=0") {
        panic!("{label}: the summary reports a problem: {line}");
    }
    announce(&format!(
        "reliability: {line} ({:.1} s, AFX_BACKEND={backend})",
        outcome.elapsed.as_secs_f64()
    ));
}

#[test]
fn soak_rings() {
    let _serial = serial();
    if skip_if_unavailable("soak_rings") {
        return;
    }
    let secs = env_u64("AFX_SOAK_SECONDS", SOAK_SECONDS);
    let args: Vec<String> = [
        "--seconds".to_owned(),
        secs.to_string(),
        "--stall-secs".to_owned(),
        STALL_SECS.to_string(),
        "--quiet".to_owned(),
    ]
    .into();
    // Run time, the token retirement and shutdown (each bounded by the
    // soak's stall bound), and start-up.
    let outcome = run_soak(&args, Duration::from_secs(secs + 3 * STALL_SECS + 30));
    judge("soak", &outcome, "SOAK OK");
}

#[test]
fn soak_peer_death() {
    let _serial = serial();
    if skip_if_unavailable("soak_peer_death") {
        return;
    }
    let rounds = env_u64("AFX_KILL_ROUNDS", KILL_ROUNDS);
    let args: Vec<String> = [
        "kill".to_owned(),
        "--rounds".to_owned(),
        rounds.to_string(),
        "--stall-secs".to_owned(),
        STALL_SECS.to_string(),
        "--quiet".to_owned(),
    ]
    .into();
    let outcome = run_soak(&args, Duration::from_secs(120 + rounds / 4));
    judge("soak kill", &outcome, "KILL OK");
}

/// The detector itself: decoys that swallow the wakes they consume (as a
/// library without DESIGN S3 would) must make the soak fail with a STALL.
#[test]
fn soak_detects_lost_wakes() {
    let _serial = serial();
    if skip_if_unavailable("soak_detects_lost_wakes") {
        return;
    }
    let args: Vec<String> = [
        "--seconds",
        "15",
        "--stall-secs",
        "3",
        "--sabotage",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let outcome = run_soak(&args, Duration::from_secs(90));
    let backend = requested_backend();
    if outcome.timed_out {
        panic!(
            "sabotaged soak: the test watchdog expired (AFX_BACKEND={backend})\n{}",
            shown(&outcome)
        );
    }
    let code = outcome.status.and_then(|s| s.code());
    let failed = summary(&outcome, "SOAK FAILED");
    match (code, failed) {
        (Some(1), Some(line)) if line.contains("STALL") && outcome.stdout.contains("PENDING") => {
            announce(&format!(
                "reliability: sabotaged soak caught in {:.1} s: {line} (AFX_BACKEND={backend})",
                outcome.elapsed.as_secs_f64()
            ));
        }
        _ => panic!(
            "sabotaged soak: want exit status 1 with a STALL and the word dump, got {} \
             (AFX_BACKEND={backend})\n{}",
            describe(outcome.status),
            shown(&outcome)
        ),
    }
}
