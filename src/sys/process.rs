//! Process identity and liveness, for owner-death detection in
//! [`crate::sync::Mutex`]: `getpid(2)`, `kill(2)` with signal 0, and
//! `/proc/<pid>/stat` (state and start time).
//!
//! # References
//! - proc_pid_stat(5): field 3 `state`, field 22 `starttime` (clock ticks
//!   since boot); kill(2): signal 0 checks existence only.

use std::io;

/// `getpid(2)`: this process's id (glibc does not cache it).
pub(crate) fn getpid() -> u32 {
    // SAFETY: getpid has no preconditions and cannot fail.
    unsafe { libc::getpid() as u32 }
}

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProcState {
    /// Running or sleeping, started at `start` (clock ticks since boot).
    Alive { start: u64 },
    /// Exited: a zombie not yet reaped, or no such process.
    Gone,
}

/// Reads the state and start time of `pid` from `/proc/<pid>/stat`.
///
/// # Errors
/// When `/proc` cannot be read at all (not mounted, denied): the caller
/// falls back to [`exists`].
pub(crate) fn proc_state(pid: u32) -> io::Result<ProcState> {
    let text = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => text,
        Err(e)
            if e.raw_os_error() == Some(libc::ENOENT) || e.raw_os_error() == Some(libc::ESRCH) =>
        {
            // No such process, unless /proc itself is missing.
            return if std::path::Path::new("/proc/self/stat").exists() {
                Ok(ProcState::Gone)
            } else {
                Err(e)
            };
        }
        Err(e) => return Err(e),
    };
    // "pid (comm) S ppid ...": comm may contain spaces and parentheses, so
    // parse from the last ')'.
    let rest = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EIO))?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next().unwrap_or("?");
    // After the state (field 3) come fields 4..; starttime is field 22.
    let start = fields
        .nth(22 - 4)
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EIO))?;
    Ok(match state {
        "Z" | "X" | "x" => ProcState::Gone,
        _ => ProcState::Alive { start },
    })
}

/// `kill(pid, 0)`: whether a process with this id exists (zombies count as
/// existing; `EPERM` means it exists but belongs to someone else).
pub(crate) fn exists(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: signal 0 sends nothing; it only checks the target.
    let ret = unsafe { libc::kill(pid as libc::pid_t, 0) };
    ret == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}
