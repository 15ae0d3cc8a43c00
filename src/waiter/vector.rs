//! [`Vector`]: the words of a wait on several words at once (`wait_any`,
//! `afx_waitv_async`), beyond what a wait on one word has.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::sys::futex::{WaitvEntry, WAITV_MAX};
use crate::word::Word;

/// The entries of a vector wait, in the caller's order.
pub(crate) struct Vector {
    entries: Box<[(Arc<Word>, u32)]>,
    /// The same entries as the kernel reads them (`struct futex_waitv`):
    /// io_uring's `FUTEX_WAITV` reads this array, so it lives as long as
    /// the wait.
    kernel: Box<[WaitvEntry]>,
    /// Thread backend: whether some helper has taken the right to finish
    /// the wait (a wait on more words than a helper holds is served by
    /// two helpers; see `backend::thread::waitv`).
    claimed: AtomicBool,
    /// Thread backend: the helper serving the entries from
    /// `SPLIT_AT` on, when there are that many.
    pub(crate) second_route: AtomicUsize,
    /// Forwards queued on helpers and not yet passed on (one per entry).
    forwards_pending: AtomicUsize,
}

/// Checks the size of a vector: 1 to [`WAITV_MAX`] entries.
///
/// # Errors
/// `EINVAL` (as a raw OS error, like every error of this crate that C
/// reports as an errno) for an empty vector or one longer than
/// [`WAITV_MAX`].
pub(crate) fn check_len(n: usize) -> io::Result<()> {
    if n == 0 || n > WAITV_MAX {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(())
}

impl Vector {
    /// # Panics
    /// If `entries` is empty (callers check with [`check_len`]).
    pub(crate) fn new(entries: Vec<(Arc<Word>, u32)>) -> Vector {
        assert!(!entries.is_empty(), "a vector wait needs a word");
        let kernel = entries
            .iter()
            .map(|(word, expected)| WaitvEntry::new(word.addr(), *expected, word.is_private()))
            .collect();
        Vector {
            entries: entries.into_boxed_slice(),
            kernel,
            claimed: AtomicBool::new(false),
            second_route: AtomicUsize::new(usize::MAX),
            forwards_pending: AtomicUsize::new(0),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn word(&self, k: usize) -> &Word {
        &self.entries[k].0
    }

    pub(crate) fn expected(&self, k: usize) -> u32 {
        self.entries[k].1
    }

    pub(crate) fn words(&self) -> impl Iterator<Item = &Word> {
        self.entries.iter().map(|(word, _)| &**word)
    }

    /// The entries in the kernel's format, for io_uring.
    pub(crate) fn kernel(&self) -> &[WaitvEntry] {
        &self.kernel
    }

    /// The first entry in `range` whose word does not hold its expected
    /// value now, or cannot be read (see [`Word::holds`]).
    pub(crate) fn first_changed(&self, range: std::ops::Range<usize>) -> Option<usize> {
        range
            .into_iter()
            .find(|&k| !matches!(self.word(k).holds(self.expected(k)), Ok(true)))
    }

    /// Takes the right to finish the wait; `false` if taken already.
    pub(crate) fn claim(&self) -> bool {
        !self.claimed.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn is_claimed(&self) -> bool {
        self.claimed.load(Ordering::Acquire)
    }

    /// Counts `n` forwards about to be queued.
    pub(crate) fn forwards_queued(&self, n: usize) {
        self.forwards_pending.store(n, Ordering::Release);
    }

    /// One queued forward is done; `true` for the last one.
    pub(crate) fn forward_done(&self) -> bool {
        self.forwards_pending.fetch_sub(1, Ordering::AcqRel) == 1
    }
}
