//! Locks that a `fork` child can take over.
//!
//! A lock held by another thread when the process forks stays held for
//! ever in the child, where that thread does not exist: a `std::sync::Mutex`
//! or `Once` touched by both a library thread and the application then
//! hangs the child. [`ForkSafeMutex`] records the holder's process id in
//! its lock word instead; a holder of another process can only be the
//! parent at fork time (the memory is this process's own copy), so the
//! child takes the lock over.
//!
//! For short critical sections on cold paths (backend start-up, the first
//! arm after a fork, the sync ticker): waiters spin with `yield_now`, and
//! every lock costs one `getpid(2)`.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::sys::process;

/// A mutual-exclusion lock whose holder is a process id (see the module
/// docs). Not reentrant.
pub(crate) struct ForkSafeMutex<T> {
    /// The holder's pid, 0 when free.
    holder: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: the lock gives one thread at a time access to `value`, as
// `std::sync::Mutex` does.
unsafe impl<T: Send> Send for ForkSafeMutex<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for ForkSafeMutex<T> {}

impl<T> ForkSafeMutex<T> {
    pub(crate) const fn new(value: T) -> Self {
        ForkSafeMutex {
            holder: AtomicU32::new(0),
            value: UnsafeCell::new(value),
        }
    }

    /// Takes the lock, taking it over from a holder that stayed in the
    /// parent process.
    pub(crate) fn lock(&self) -> ForkSafeGuard<'_, T> {
        let me = process::getpid();
        let mut expected = 0;
        loop {
            match self.holder.compare_exchange_weak(
                expected,
                me,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return ForkSafeGuard { lock: self },
                // Held by a thread of another process: the parent's, at
                // fork time. It will never release it here.
                Err(holder) if holder != 0 && holder != me => expected = holder,
                Err(0) => expected = 0,
                Err(_) => {
                    expected = 0;
                    std::thread::yield_now();
                }
            }
        }
    }
}

/// Access to the value of a locked [`ForkSafeMutex`]; unlocks on drop.
pub(crate) struct ForkSafeGuard<'a, T> {
    lock: &'a ForkSafeMutex<T>,
}

impl<T> Deref for ForkSafeGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock: no other access exists.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for ForkSafeGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock: no other access exists.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for ForkSafeGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.holder.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_threads_of_one_process() {
        static COUNTER: ForkSafeMutex<u64> = ForkSafeMutex::new(0);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..10_000 {
                        let mut c = COUNTER.lock();
                        let v = *c;
                        std::hint::black_box(&v);
                        *c = v + 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*COUNTER.lock(), 40_000);
    }

    #[test]
    fn a_holder_of_another_process_is_taken_over() {
        let lock = ForkSafeMutex::new(7);
        // As a fork child sees a lock its parent's thread held at fork time.
        lock.holder.store(process::getpid() + 1, Ordering::Relaxed);
        assert_eq!(*lock.lock(), 7);
        assert_eq!(lock.holder.load(Ordering::Relaxed), 0);
    }
}
