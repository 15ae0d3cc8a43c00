//! Which wait backend a library measurement uses, and for io_uring which
//! submit mode (`AFX_URING_SUBMIT`): `caller` (the arming thread submits to
//! its own ring) or `thread` (one library ring thread submits and reaps).
//!
//! The mode is passed through the environment of the measurement's forked
//! process, set before any asyncfutex call there, so that the library reads
//! it when its backend starts. A library that does not know the variable
//! ignores it (both io_uring rows then measure the same thing).

use asyncfutex::BackendKind;

/// The environment variable the io_uring backend reads at start-up.
pub const SUBMIT_ENV: &str = "AFX_URING_SUBMIT";

/// io_uring submit mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Submit {
    /// The arming thread submits to its own ring (the default).
    Caller,
    /// One library ring thread (the behaviour without EINTR).
    Thread,
}

impl Submit {
    /// The value of [`SUBMIT_ENV`] (also the JSON `submit` field).
    pub fn name(self) -> &'static str {
        match self {
            Submit::Caller => "caller",
            Submit::Thread => "thread",
        }
    }
}

/// A backend, and for io_uring its submit mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via {
    pub kind: BackendKind,
    /// `Some` exactly for io_uring.
    pub submit: Option<Submit>,
}

/// Every backend configuration, io_uring first.
pub const ALL: [Via; 3] = [
    Via {
        kind: BackendKind::IoUring,
        submit: Some(Submit::Caller),
    },
    Via {
        kind: BackendKind::IoUring,
        submit: Some(Submit::Thread),
    },
    Via {
        kind: BackendKind::Thread,
        submit: None,
    },
];

impl Via {
    /// The backend's name (`"io_uring"`, `"thread"`; JSON `backend`).
    pub fn backend(self) -> &'static str {
        self.kind.name()
    }

    /// The submit mode's name, if any (JSON `submit`).
    pub fn submit_name(self) -> Option<&'static str> {
        self.submit.map(Submit::name)
    }

    /// An identifier fragment: `io_uring_caller`, `io_uring_thread`, `thread`.
    pub fn id(self) -> String {
        match self.submit {
            Some(s) => format!("{}_{}", self.kind.name(), s.name()),
            None => self.kind.name().into(),
        }
    }

    /// A human label: `io_uring (caller)`, `io_uring (thread)`, `thread`.
    pub fn label(self) -> String {
        match self.submit {
            Some(s) => format!("{} ({})", self.kind.name(), s.name()),
            None => self.kind.name().into(),
        }
    }

    /// Sets (io_uring) or clears (thread backend) [`SUBMIT_ENV`]. Call in a
    /// measurement's forked process while it is single-threaded, before any
    /// asyncfutex call; peers it forks afterwards inherit it.
    pub fn set_env(self) {
        // Edition 2021: `set_var` is safe to call; it is sound here because
        // the measurement process has one thread at this point.
        match self.submit {
            Some(s) => std::env::set_var(SUBMIT_ENV, s.name()),
            None => std::env::remove_var(SUBMIT_ENV),
        }
    }

    /// Sets the environment ([`set_env`](Self::set_env)) and starts this
    /// backend in the calling process.
    pub fn select(self) -> std::io::Result<()> {
        self.set_env();
        asyncfutex::select_backend(Some(self.kind)).map(drop)
    }
}

/// A label from the JSON fields (`backend`, `submit`).
pub fn label_of(backend: &str, submit: Option<&str>) -> String {
    match submit {
        Some(s) => format!("{backend} ({s})"),
        None => backend.into(),
    }
}
