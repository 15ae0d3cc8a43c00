//! Shared by the test drivers that build and run programs (`c_api`,
//! `examples`, `bindings`): running a program under a watchdog.
#![allow(dead_code)]

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
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
