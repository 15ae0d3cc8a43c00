//! Without the `tokio` feature there are no reapers: a task's wait armed on
//! a caller's ring is handed to the ring thread, exactly as for a future
//! polled outside any tokio runtime (see `reaper.rs` for the feature's
//! version).

use std::sync::Arc;

use super::caller::CallerRing;

/// No runtime can take a reaper.
#[derive(Default)]
pub(crate) struct Reapers(());

impl Reapers {
    /// Always `false`: the ring thread serves the wait.
    pub(crate) fn ensure_here(&self, _ring: &Arc<CallerRing>) -> bool {
        false
    }
}
