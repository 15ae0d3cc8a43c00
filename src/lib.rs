//! # asyncfutex
//!
//! Turns a 32-bit futex word — usually in memory shared between processes —
//! into something you can `await` from any executor and poll from any event
//! loop, while staying a genuine `futex(2)` word: plain `FUTEX_WAKE` callers
//! wake our waiters, and our [`AsyncFutex::wake`] wakes plain `FUTEX_WAIT`
//! sleepers.
//!
//! The one correct pattern is *check, then wait with the value you checked*:
//! the kernel sleeps only if the word still holds that value, so a store +
//! wake that lands in between is never lost.
//!
//! ```
//! use std::sync::atomic::Ordering;
//! use std::sync::Arc;
//! use asyncfutex::SharedMemory;
//!
//! # fn main() -> std::io::Result<()> {
//! let mem = Arc::new(SharedMemory::anonymous(4096)?); // inherited by fork()
//! let futex = mem.futex(0)?;
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! # rt.block_on(async {
//! // Consumer: wait until the word leaves 0.
//! let consumer = async {
//!     loop {
//!         let seen = futex.word().load(Ordering::Acquire);
//!         if seen != 0 {
//!             return Ok::<u32, std::io::Error>(seen);
//!         }
//!         futex.wait_async(seen).await?; // completes on a wake or a change
//!     }
//! };
//! // Producer (normally another process): store, then wake.
//! let producer = async {
//!     futex.word().store(42, Ordering::Release);
//!     futex.wake(1)
//! };
//! let (got, _) = tokio::join!(consumer, producer);
//! assert_eq!(got?, 42);
//! # Ok::<(), std::io::Error>(())
//! # })?;
//! # Ok(())
//! # }
//! ```
//!
//! The pieces:
//! - [`AsyncFutex`]: `wake`, blocking `wait`, `wait_async` (many tasks at
//!   once, cancel-safe);
//! - [`EventFdFutex`]: one armed wait reported through an eventfd, for
//!   epoll, libuv, Asio, asyncio, mio — the model of the C API (`afx_*`);
//! - [`wait_any`] / [`wait_any_blocking`]: one wait on up to 128 words at
//!   once (`futex_waitv`), reporting which one completed it;
//! - [`SharedMemory`]: anonymous, memfd or `shm_open` memory that handles
//!   keep alive;
//! - backends ([`backend`], [`select_backend`]): io_uring
//!   `IORING_OP_FUTEX_WAIT` (Linux 6.7+) or helper threads in
//!   `futex_waitv(2)` (Linux 5.16+), probed at run time, overridable with
//!   `AFX_BACKEND=io_uring|thread`.
//!
//! ## Features
//! - `tokio` (off by default): a [`wait_async`](AsyncFutex::wait_async)
//!   future polled in a tokio runtime is completed by that runtime's own
//!   reactor (an `AsyncFd` on the io_uring backend's ring), with no library
//!   thread in between. Without it the backend's ring thread completes it;
//!   the futures work under any executor either way.
//! - `capi`: the C ABI (`afx_*`) and its header. The repository's `capi/`
//!   crate enables it to build `libasyncfutex.so` and `libasyncfutex.a`; a
//!   Rust program never needs it.
//!
//! ## Semantics
//! - A completion means "re-check the word": it may (rarely) be spurious.
//! - No wake is lost: a wake consumed by a wait that is then dropped or
//!   cancelled is passed on with `wake(1)`.
//! - After `fork()`, the child gets a fresh backend on first use. Handles
//!   made before the fork may be used in the child for `wake`, blocking
//!   `wait` and new async waits; waits that were pending in the parent stay
//!   the parent's.
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!("asyncfutex supports Linux only: it is built on futex(2), eventfd(2) and io_uring");

mod backend;
mod eventfd_futex;
mod fault;
/// The C ABI (`afx_*`): the functions of `libasyncfutex.so`, built by the
/// `capi/` crate with the `capi` feature. Not Rust API: use the types above.
#[cfg(feature = "capi")]
#[doc(hidden)]
pub mod ffi;
mod fork_safe;
mod futex;
mod process;
mod shm;
pub mod sync;
mod sys;
mod wait_any;
mod waiter;
mod word;

pub use backend::{backend, select_backend, BackendKind};
pub use eventfd_futex::EventFdFutex;
pub use futex::{AsyncFutex, Scope, WaitFuture, WaitStatus};
pub use shm::SharedMemory;
pub use wait_any::{wait_any, wait_any_blocking, WaitAnyFuture, WAIT_ANY_MAX};

/// Fault injection switches for this crate's own tests (see `src/fault.rs`);
/// not API, inert in release builds.
#[doc(hidden)]
pub mod __fault {
    pub use crate::fault::{clear, failures, inject, Site, ENABLED, FOREVER};
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_and_sync() {
        assert_send_sync::<AsyncFutex>();
        assert_send_sync::<EventFdFutex>();
        assert_send_sync::<SharedMemory>();
        assert_send_sync::<WaitFuture<'static>>();
        assert_send_sync::<WaitAnyFuture<'static>>();
    }
}

/// The README's Rust example, compiled and run as a doc test.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
