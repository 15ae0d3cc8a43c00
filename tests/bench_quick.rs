//! The benchmark harness works: `afx-bench --quick` builds, runs, exits 0,
//! writes a results.json that parses with every mechanism measured, and
//! draws its SVG plots. Timings are printed, never checked (DESIGN §6: tests
//! never time).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Generous: a first release build of the bench, then a run of about ten
/// seconds on a busy machine.
const WATCHDOG: Duration = Duration::from_secs(600);

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn wait_with_watchdog(mut child: Child, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + WATCHDOG;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {WATCHDOG:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn bench_binary() -> PathBuf {
    let status = wait_with_watchdog(
        Command::new(env!("CARGO"))
            .args(["build", "--release", "-q", "-p", "afx-bench"])
            .current_dir(workspace_root())
            .spawn()
            .expect("spawn cargo build"),
        "cargo build --release -p afx-bench",
    );
    assert!(status.success(), "building afx-bench failed: {status}");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let target = if target.is_absolute() {
        target
    } else {
        workspace_root().join(target)
    };
    target.join("release").join("afx-bench")
}

fn run(bin: &Path, args: &[&str], what: &str) -> std::process::ExitStatus {
    wait_with_watchdog(
        Command::new(bin)
            .args(args)
            .current_dir(workspace_root())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display())),
        what,
    )
}

#[test]
fn quick_bench_runs_and_reports_every_mechanism() {
    let bin = bench_binary();
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench_quick");
    let _ = std::fs::remove_dir_all(&out);
    let out_str = out.to_str().expect("utf-8 path");

    let status = run(&bin, &["--quick", "--out", out_str], "afx-bench --quick");
    assert!(status.success(), "afx-bench --quick failed: {status}");

    let json = out.join("results.json");
    let text = std::fs::read_to_string(&json).expect("results.json written");
    assert!(
        text.trim_start().starts_with('{'),
        "results.json is not a JSON object"
    );
    // The bench's own serde_json check: parses, and every mechanism,
    // fast path, scale point and transport has numbers.
    let status = run(
        &bin,
        &["--verify", json.to_str().expect("utf-8 path")],
        "afx-bench --verify",
    );
    assert!(status.success(), "results.json incomplete: {status}");

    for svg in [
        "latency_cdf_same_cpu.svg",
        "scale_arm.svg",
        "scale_resume.svg",
    ] {
        let body = std::fs::read_to_string(out.join(svg)).unwrap_or_else(|e| panic!("{svg}: {e}"));
        assert!(
            body.starts_with("<svg") && body.contains("<polyline"),
            "{svg} has no plot"
        );
    }
}
