//! `futex(2)` and `futex_waitv(2)`.
//!
//! Classic `futex(2)` operations take `FUTEX_PRIVATE_FLAG` for process-local
//! words; the futex2 calls (`futex_waitv`, io_uring's `FUTEX_WAIT`) take
//! `FUTEX2_PRIVATE` and need the size flag `FUTEX2_SIZE_U32`. Both map to the
//! same kernel hash, so waiters and wakers of either family meet.
//!
//! # References
//! - futex(2), `kernel/futex/waitwake.c`

use std::io;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use super::cvt;

/// futex2 flag: the word is 32 bits (required by futex2 calls).
pub(crate) const FUTEX2_SIZE_U32: u32 = 0x02;
/// futex2 flag: the word is private to this process.
pub(crate) const FUTEX2_PRIVATE: u32 = 128;
/// The bitset that matches every waiter.
pub(crate) const BITSET_MATCH_ANY: u32 = u32::MAX;
/// `futex_waitv` accepts at most this many entries.
pub(crate) const WAITV_MAX: usize = 128;

/// futex2 flags for a 32-bit word with the given scope.
pub(crate) fn futex2_flags(private: bool) -> u32 {
    FUTEX2_SIZE_U32 | if private { FUTEX2_PRIVATE } else { 0 }
}

fn op(base: libc::c_int, private: bool) -> libc::c_int {
    if private {
        base | libc::FUTEX_PRIVATE_FLAG
    } else {
        base
    }
}

/// `FUTEX_WAKE`: wakes at most `n` waiters (`n` is clamped to `i32::MAX`,
/// which means all). Returns how many were woken.
///
/// `n == 0` returns 0 without a syscall: the kernel would wake one.
pub(crate) fn wake(word: *const AtomicU32, n: u32, private: bool) -> io::Result<u32> {
    if n == 0 {
        return Ok(0);
    }
    let n = n.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: FUTEX_WAKE only uses the address as a key; the kernel validates
    // it (EFAULT / EINVAL) and never writes through it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word,
            op(libc::FUTEX_WAKE, private),
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    cvt(ret).map(|woken| woken as u32)
}

/// Result of a blocking [`wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitResult {
    /// Woken by a `FUTEX_WAKE` (or a spurious kernel wake-up).
    Woken,
    /// The word did not hold `expected` when the kernel looked (`EAGAIN`).
    Mismatch,
    /// The deadline passed.
    TimedOut,
}

/// Reads `CLOCK_MONOTONIC`.
pub(crate) fn monotonic_now() -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts
}

/// The `CLOCK_MONOTONIC` instant `timeout` from now, saturating.
pub(crate) fn deadline_after(timeout: Duration) -> libc::timespec {
    let now = monotonic_now();
    let nanos = now.tv_nsec as u64 + u64::from(timeout.subsec_nanos());
    let secs = (now.tv_sec as u64)
        .saturating_add(timeout.as_secs())
        .saturating_add(nanos / 1_000_000_000);
    libc::timespec {
        tv_sec: secs.min(i64::MAX as u64) as libc::time_t,
        tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
    }
}

/// `FUTEX_WAIT_BITSET` with an absolute `CLOCK_MONOTONIC` deadline (`None`
/// waits forever). Sleeps only if `*word == expected` when the kernel queues
/// the waiter. `EINTR` is returned to the caller, not retried.
///
/// # Safety
/// `word` must point to a mapped, readable `u32` for the whole call.
pub(crate) unsafe fn wait(
    word: *const AtomicU32,
    expected: u32,
    private: bool,
    deadline: Option<&libc::timespec>,
) -> io::Result<WaitResult> {
    let timeout = deadline.map_or(std::ptr::null(), |d| d as *const libc::timespec);
    // SAFETY: the caller guarantees `word` is mapped; `timeout` is null or a
    // valid timespec that outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word,
            op(libc::FUTEX_WAIT_BITSET, private),
            expected,
            timeout,
            std::ptr::null::<u32>(),
            BITSET_MATCH_ANY,
        )
    };
    match cvt(ret) {
        Ok(_) => Ok(WaitResult::Woken),
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Ok(WaitResult::Mismatch),
        Err(e) if e.raw_os_error() == Some(libc::ETIMEDOUT) => Ok(WaitResult::TimedOut),
        Err(e) => Err(e),
    }
}

/// Asks the kernel to read the word without waiting or waking anyone:
/// `FUTEX_CMP_REQUEUE` with zero wakes and zero requeues. `Ok` means the word
/// is mapped and readable; `EFAULT` means it is not.
pub(crate) fn check_readable(word: *const AtomicU32, private: bool) -> io::Result<()> {
    holds(word, 0, private).map(drop)
}

/// Whether the word holds `expected`, read by the kernel with a fault-safe
/// user access (`FUTEX_CMP_REQUEUE` with no wakes and no requeues, and
/// `expected` as the value to compare): for words nobody vouched are
/// mapped. `EFAULT` for an unmapped or unreadable word.
pub(crate) fn holds(word: *const AtomicU32, expected: u32, private: bool) -> io::Result<bool> {
    // SAFETY: as in `check_readable`: the kernel reads the word safely, and
    // with nr_wake = 0 and nr_requeue = 0 no waiter is touched.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word,
            op(libc::FUTEX_CMP_REQUEUE, private),
            0 as libc::c_int,
            0 as libc::c_long,
            word,
            expected,
        )
    };
    match cvt(ret) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Ok(false),
        Err(e) => Err(e),
    }
}

/// One entry of a `futex_waitv(2)` vector (`struct futex_waitv`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct WaitvEntry {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

// `struct futex_waitv` as the kernel (and io_uring's FUTEX_WAITV) reads it.
const _: () = assert!(std::mem::size_of::<WaitvEntry>() == 24);

impl WaitvEntry {
    pub(crate) fn new(word: *const AtomicU32, expected: u32, private: bool) -> Self {
        WaitvEntry {
            val: u64::from(expected),
            uaddr: word as usize as u64,
            flags: futex2_flags(private),
            reserved: 0,
        }
    }
}

/// `futex_waitv(2)` without a timeout: sleeps until one of the words is
/// woken. Returns the index of the *last* woken entry (entries after it were
/// not woken; entries before it may have been). `EAGAIN` means some word did
/// not hold its value and no entry was woken.
///
/// # Safety
/// Every entry's address must stay mapped for the whole call.
pub(crate) unsafe fn waitv(entries: &[WaitvEntry]) -> io::Result<usize> {
    // SAFETY: forwarded contract.
    unsafe { waitv_until(entries, None) }
}

/// [`waitv`] with an absolute `CLOCK_MONOTONIC` deadline (`None`: none):
/// `ETIMEDOUT` when it passes. `EINTR` is returned, not retried.
///
/// # Safety
/// As for [`waitv`].
pub(crate) unsafe fn waitv_until(
    entries: &[WaitvEntry],
    deadline: Option<&libc::timespec>,
) -> io::Result<usize> {
    let timeout = deadline.map_or(std::ptr::null(), |d| d as *const libc::timespec);
    // SAFETY: `entries` is a valid array of `struct futex_waitv` of the given
    // length; the caller guarantees the addresses in it stay mapped;
    // `timeout` is null or a timespec that outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            entries.as_ptr(),
            entries.len() as libc::c_uint,
            0u32,
            timeout,
            libc::CLOCK_MONOTONIC,
        )
    };
    cvt(ret).map(|i| i as usize)
}
