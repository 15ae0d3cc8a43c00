//! The vector waits of the C ABI: `afx_waitv` (blocking) and
//! `afx_waitv_async` / `afx_ack_index` (through a handle's eventfd).

use std::os::raw::c_int;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;

use super::errors::errno_of;
use super::{afx_t, boundary, handle, AFX_PRIVATE};
use crate::sys::futex::{self as sys_futex, WaitvEntry};
use crate::word::Word;

/// The most entries one vector wait takes (the kernel's `futex_waitv`
/// limit).
pub const AFX_WAITV_MAX: u32 = 128;

/// One entry of a vector wait (`afx_waitv`, `afx_waitv_async`): a futex
/// word and the value it is expected to hold.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct afx_wait_entry {
    /// The word: 4-byte aligned, mapped until the wait ends.
    pub addr: *mut u32,
    /// The wait sleeps only while `*addr == expected`.
    pub expected: u32,
    /// 0 (shared key: the word may be in memory shared between processes)
    /// or `AFX_PRIVATE` (process-local word).
    pub flags: u32,
}

/// Checks a C vector: 1 to `AFX_WAITV_MAX` entries, each with a non-NULL,
/// aligned address and known flags.
///
/// # Safety
/// `entries` is NULL or points to `n` readable entries.
unsafe fn checked<'a>(
    entries: *const afx_wait_entry,
    n: u32,
) -> Result<&'a [afx_wait_entry], c_int> {
    if entries.is_null() || n == 0 || n > AFX_WAITV_MAX {
        return Err(libc::EINVAL);
    }
    // SAFETY: non-NULL, and the caller's contract says `n` entries.
    let entries = unsafe { std::slice::from_raw_parts(entries, n as usize) };
    let bad = |e: &afx_wait_entry| {
        e.addr.is_null()
            || (e.addr as usize) % std::mem::align_of::<u32>() != 0
            || e.flags & !AFX_PRIVATE != 0
    };
    if entries.iter().any(bad) {
        return Err(libc::EINVAL);
    }
    Ok(entries)
}

fn is_private(e: &afx_wait_entry) -> bool {
    e.flags & AFX_PRIVATE != 0
}

/// Blocks while *every* word of the vector holds its expected value, until
/// one is woken, or for at most `timeout_ns` nanoseconds (`< 0`: forever;
/// `0`: only checks the words). One kernel wait (`futex_waitv(2)`) covers
/// every word; no handle is needed.
///
/// Returns the index (`>= 0`) of an entry whose word was woken or did not
/// hold its value (more may have changed, and a completion may be
/// spurious: re-check every word); `-ETIMEDOUT`; `-EINTR` when a signal
/// handler ran; `-EINVAL` (NULL `entries`, `n == 0`, `n >
/// AFX_WAITV_MAX`, a NULL or misaligned address, unknown flags);
/// `-EFAULT` (a word not mapped); `-ENOSYS` or `-EPERM` where
/// `futex_waitv(2)` is not available (Linux before 5.16, a seccomp profile
/// that predates it).
///
/// The library never reads the words itself (only the kernel does, with
/// fault-safe accesses): an unmapped or unreadable word gives `-EFAULT`,
/// never a crash.
///
/// Thread safety: any thread, any number at once.
///
/// # Safety
/// `entries` is NULL or points to `n` entries.
#[no_mangle]
pub unsafe extern "C" fn afx_waitv(
    entries: *const afx_wait_entry,
    n: u32,
    timeout_ns: i64,
) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        // SAFETY: the caller's contract.
        let entries = match unsafe { checked(entries, n) } {
            Ok(entries) => entries,
            Err(errno) => return -errno,
        };
        let vector: Vec<WaitvEntry> = entries
            .iter()
            .map(|e| WaitvEntry::new(e.addr.cast::<AtomicU32>(), e.expected, is_private(e)))
            .collect();
        let deadline = match timeout_ns {
            // Already passed: the kernel only checks the words.
            0 => Some(sys_futex::monotonic_now()),
            t if t > 0 => Some(sys_futex::deadline_after(Duration::from_nanos(t as u64))),
            _ => None,
        };
        // SAFETY: `vector` is a live array; the kernel reads the words with
        // fault-safe accesses (an unmapped one is EFAULT).
        match unsafe { sys_futex::waitv_until(&vector, deadline.as_ref()) } {
            Ok(k) => k as c_int,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                // Look for the word that differed, in the kernel's order,
                // through the kernel (a word may be unmapped by now: never
                // read in user space).
                let changed = entries.iter().position(|e| {
                    !matches!(
                        sys_futex::holds(e.addr.cast::<AtomicU32>(), e.expected, is_private(e)),
                        Ok(true)
                    )
                });
                changed.unwrap_or(0) as c_int
            }
            Err(e) => -errno_of(&e),
        }
    })
}

/// Arms one async wait on a vector of words, announced on `f`'s eventfd:
/// it becomes readable when any word is woken or does not hold its value.
/// `f` owns the wait exactly as after `afx_wait_async`: `afx_ack_index`
/// (or `afx_ack`) acknowledges it, `afx_cancel` and `afx_free` cancel it.
/// `f`'s own word takes part only if it is in the vector.
///
/// The vector is copied: reuse or free it on return. Keep the words mapped
/// until the wait is acknowledged, cancelled, or `f` is freed. The library
/// never reads them itself (only the kernel does, with fault-safe
/// accesses), so an unmapped or unreadable word makes the wait fail,
/// reported by the ack (`-EFAULT`), never a crash.
///
/// Returns 0 when armed; `-EINVAL` for a NULL handle or a bad vector (as
/// for `afx_waitv`); otherwise as `afx_wait_async` (`-EBUSY` if a wait is
/// armed, backend start-up errors). The thread backend's per-wait mode
/// (no `futex_waitv` here) fails the wait with `-ENOSYS`, reported by the
/// ack.
///
/// Cancelled (or freed) after it consumed a wake, or cancelled while the
/// io_uring backend serves it, the wait passes one wake on to *each* of
/// its words, as the kernel does not always say which word a wake came
/// from: other waiters may see a spurious wake-up, never a lost one.
///
/// # Safety
/// `f` is NULL or a live handle; `entries` is NULL or points to `n`
/// entries.
#[no_mangle]
pub unsafe extern "C" fn afx_waitv_async(
    f: *mut afx_t,
    entries: *const afx_wait_entry,
    n: u32,
) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        // SAFETY: the caller's contract.
        let Some(f) = (unsafe { handle(f) }) else {
            return -libc::EINVAL;
        };
        // SAFETY: the caller's contract.
        let entries = match unsafe { checked(entries, n) } {
            Ok(entries) => entries,
            Err(errno) => return -errno,
        };
        let words = entries
            .iter()
            .map(|e| {
                // SAFETY: non-NULL and aligned (checked); an unchecked word
                // is only ever read through the kernel.
                let word = unsafe { Word::unchecked(e.addr.cast::<AtomicU32>(), is_private(e)) };
                (Arc::new(word), e.expected)
            })
            .collect();
        match f.inner.arm_words(words) {
            Ok(()) => 0,
            Err(e) => -errno_of(&e),
        }
    })
}

/// Acknowledges the armed wait, as `afx_ack`, and tells which entry
/// completed it: when it returns 1, `*index` (if `index` is not NULL) is
/// the entry of the `afx_waitv_async` vector whose word was woken or did
/// not hold its value (0 after `afx_wait_async`). Re-check every word: more
/// may have changed, and a completion may be spurious.
///
/// Returns 1 (completed, disarmed, eventfd drained), 0 (pending, or
/// nothing armed; `*index` untouched), or the errors of `afx_ack`.
///
/// # Safety
/// `f` is NULL or a live handle; `index` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn afx_ack_index(f: *mut afx_t, index: *mut u32) -> c_int {
    boundary(-libc::ENOTRECOVERABLE, || {
        // SAFETY: the caller's contract.
        let Some(f) = (unsafe { handle(f) }) else {
            return -libc::EINVAL;
        };
        match f.inner.ack_index() {
            Ok(Some(k)) => {
                if !index.is_null() {
                    // SAFETY: the caller's contract.
                    unsafe { *index = k as u32 };
                }
                1
            }
            Ok(None) => 0,
            Err(e) => -errno_of(&e),
        }
    })
}
