//! [`Word`]: the futex word a handle and its pending waits refer to.
#![allow(unsafe_code)]

use std::any::Any;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::fork_safe::ForkSafeMutex;
use crate::process::fork_generation;
use crate::sys::futex;

/// Set in [`Word::outstanding`] once the owning handle is being dropped and
/// waits for the kernel waits still queued on the word.
const CLOSING: u32 = 1 << 31;

/// A futex word plus what keeps it valid.
///
/// Shared (`Arc`) between the handle and every wait armed through it, so a
/// backend may still read the word while finishing a wait that its handle
/// has already given up on. The handle's `Drop` waits for
/// [`outstanding`](Self::outstanding) to reach zero: after that the library
/// never touches the word again.
pub(crate) struct Word {
    addr: *const AtomicU32,
    private: bool,
    /// Whether the word is known to be mapped and readable while the
    /// `Word` lives (a handle's word). A C vector's raw words are not:
    /// they are only ever read through the kernel ([`holds`](Self::holds)).
    checked: bool,
    /// Kernel waits queued on this word by this process (low 31 bits), plus
    /// [`CLOSING`].
    outstanding: AtomicU32,
    /// The fork generation `outstanding` belongs to: after a `fork`, the
    /// child's copy counts the parent's waits, which the child must ignore.
    generation: AtomicU32,
    /// Serialises the reset of an inherited count (first arm after a fork);
    /// a reset interrupted by a further fork is taken over in that child.
    resetting: ForkSafeMutex<()>,
    /// Keeps the mapping alive for safe constructors.
    _keepalive: Option<Arc<dyn Any + Send + Sync>>,
}

// SAFETY: the word is only accessed atomically, through `&AtomicU32`; the
// creator guarantees it stays mapped while the `Word` exists (see
// `AsyncFutex::new`), and `_keepalive` is `Send + Sync`.
unsafe impl Send for Word {}
// SAFETY: as above; every access is atomic.
unsafe impl Sync for Word {}

impl Word {
    /// # Safety
    /// `addr` must point to a naturally aligned `u32` that stays mapped (and
    /// is only accessed atomically) for as long as the `Word` lives.
    pub(crate) unsafe fn new(
        addr: *const AtomicU32,
        private: bool,
        keepalive: Option<Arc<dyn Any + Send + Sync>>,
    ) -> Word {
        Word {
            addr,
            private,
            checked: true,
            outstanding: AtomicU32::new(0),
            generation: AtomicU32::new(fork_generation()),
            resetting: ForkSafeMutex::new(()),
            _keepalive: keepalive,
        }
    }

    /// A word of a C vector wait: aligned, but nobody vouches that it is
    /// mapped. It is never read in user space ([`holds`](Self::holds)
    /// asks the kernel), so an unmapped one fails the wait with `EFAULT`
    /// instead of crashing the process.
    ///
    /// # Safety
    /// `addr` must be non-NULL and aligned.
    #[cfg(feature = "capi")] // used by the C ABI only
    pub(crate) unsafe fn unchecked(addr: *const AtomicU32, private: bool) -> Word {
        // SAFETY: aligned and non-NULL; `checked: false` keeps the library
        // from dereferencing it (`atomic`, `load` are not used on it).
        let mut word = unsafe { Word::new(addr, private, None) };
        word.checked = false;
        word
    }

    /// Whether the word holds `expected` now: a plain load for a word a
    /// handle vouches for, else asked of the kernel.
    ///
    /// # Errors
    /// `EFAULT` for an unchecked word that is not mapped or not readable.
    pub(crate) fn holds(&self, expected: u32) -> std::io::Result<bool> {
        if self.checked {
            Ok(self.load() == expected)
        } else {
            futex::holds(self.addr, expected, self.private)
        }
    }

    /// Whether reading the word in user space is safe ([`holds`] is then
    /// a plain load, no syscall).
    ///
    /// [`holds`]: Self::holds
    pub(crate) fn is_checked(&self) -> bool {
        self.checked
    }

    pub(crate) fn atomic(&self) -> &AtomicU32 {
        debug_assert!(self.checked, "a C vector's raw word read in user space");
        // SAFETY: guaranteed valid and aligned by `Word::new`'s contract.
        unsafe { &*self.addr }
    }

    pub(crate) fn addr(&self) -> *const AtomicU32 {
        self.addr
    }

    pub(crate) fn is_private(&self) -> bool {
        self.private
    }

    pub(crate) fn load(&self) -> u32 {
        self.atomic().load(Ordering::SeqCst)
    }

    /// `FUTEX_WAKE` on this word.
    pub(crate) fn wake(&self, n: u32) -> std::io::Result<u32> {
        futex::wake(self.addr, n, self.private)
    }

    /// Counts a kernel wait about to be queued.
    pub(crate) fn wait_started(&self) {
        let current = fork_generation();
        if self.generation.load(Ordering::Acquire) != current {
            self.adopt_after_fork(current);
        }
        self.outstanding.fetch_add(1, Ordering::AcqRel);
    }

    /// First arm in a `fork` child: drop the count inherited from the
    /// parent (its waits live on in the parent only), then publish the new
    /// generation so other threads count from zero too.
    #[cold]
    fn adopt_after_fork(&self, current: u32) {
        let _resetting = self.resetting.lock();
        if self.generation.load(Ordering::Acquire) != current {
            self.outstanding.store(0, Ordering::Release);
            self.generation.store(current, Ordering::Release);
        }
    }

    /// Counts a kernel wait that is gone; the last touch of the word by it.
    pub(crate) fn wait_finished(&self) {
        let prev = self.outstanding.fetch_sub(1, Ordering::AcqRel);
        if prev == CLOSING | 1 {
            let _ = futex::wake(&self.outstanding, u32::MAX, true);
        }
    }

    /// Blocks until no kernel wait of this process is queued on the word.
    pub(crate) fn wait_idle(&self) {
        if self.generation.load(Ordering::Acquire) != fork_generation() {
            // Only the parent's waits were ever counted: none are ours.
            return;
        }
        let mut cur = self.outstanding.fetch_or(CLOSING, Ordering::AcqRel) | CLOSING;
        while cur != CLOSING {
            // SAFETY: `outstanding` is a live, aligned word of ours.
            let _ = unsafe { futex::wait(&self.outstanding, cur, true, None) };
            cur = self.outstanding.load(Ordering::Acquire);
        }
    }
}
