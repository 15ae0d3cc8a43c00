//! Fuzz target: the input is a program of C API calls.
//!
//! Each input is decoded into a sequence of `afx_*` calls on a small set of
//! handles and shared-memory states: `afx_new` on valid words, on
//! misaligned, NULL, unmapped, `PROT_NONE` and read-only addresses, with
//! valid and invalid flags; `afx_wait` (short timeouts only), `afx_wake`,
//! the async trio, `afx_eventfd`, `afx_free`; the vector waits
//! (`afx_waitv`, `afx_waitv_async`, `afx_ack_index`) on vectors of 0 to
//! `AFX_WAITV_MAX + 2` entries naming the same kinds of addresses, with
//! valid and unknown flags and random expected values; the mutex,
//! semaphore, event and channel functions; plain stores and raw `futex(2)`
//! wakes by a simulated peer, including a peer that scribbles over the
//! shared state words. Every call's result is checked against what the C
//! API documents (and, where the outcome is determined, against a model of
//! the handle); an undocumented result aborts, which libFuzzer reports as
//! a crash.
//!
//! A handle's armed wait is modelled as `afx_wait_async`'s or a vector's;
//! `afx_waitv_async` arms a handle exactly as `afx_wait_async` does (EBUSY
//! while armed), and ack, cancel and free disarm it. For a vector wait the
//! model also knows which entries name unreadable words (only then may
//! its ack say EFAULT) and which have differed from their expected value
//! at every moment since the arm: such a wait must complete (its eventfd
//! becomes readable within 5 s), as must one naming an unreadable word.
//!
//! Handles are never used after they were freed (C cannot promise anything
//! there); NULL handles are. Nothing blocks for long: blocking calls get
//! timeouts of at most 200 µs, or wait forever only when a word is known
//! to differ from its `expected` (the kernel checks every word of a vector
//! before it sleeps). Every word a vector names stays mapped for the life
//! of the process (the fixture's pages are never unmapped), or was never
//! mappable. At the end of each input everything is freed and the
//! process's open descriptors must be back to their baseline.
#![no_main]

use std::os::raw::{c_char, c_int, c_void};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use asyncfutex::ffi::*;
use libfuzzer_sys::fuzz_target;

const PAGE: usize = 4096;
/// Futex words at the start of the read-write page.
const WORDS: usize = 8;
/// Offsets in the read-write page of the primitives' states.
const MUTEX_OFF: usize = 256;
const SEM_OFF: usize = 512;
const EVENT_OFF: usize = 768;
/// The channel has a page of its own (page 1).
const CHAN_BYTES: usize = PAGE;
const STATES: usize = 2;
const HANDLES: usize = 6;

/// Errors any call that may start the backend or make an eventfd can give.
const BACKEND_ERRS: &[c_int] = &[
    libc::EMFILE,
    libc::ENFILE,
    libc::ENOMEM,
    libc::ENOSYS,
    libc::EPERM,
    libc::EOPNOTSUPP,
];

/// The process-wide fixture: the mapped pages and the baseline fd count.
struct Mem {
    /// Read-write shared page with futex words and primitive states.
    rw: *mut u8,
    /// Read-write shared page for the channel.
    chan: *mut u8,
    /// Read-only page (a valid futex word: waits only read).
    ro: *mut u8,
    /// A `PROT_NONE` page.
    none: *mut u8,
    /// The backend running in this process.
    backend: c_int,
    /// `AFX_FUZZ_LAST_INPUT`'s file, open for writing, or -1.
    last_input: c_int,
    /// Open descriptors once the backend runs.
    fds: Vec<String>,
}

// SAFETY: plain addresses of mappings that live for the whole process.
unsafe impl Send for Mem {}
// SAFETY: as above.
unsafe impl Sync for Mem {}

fn map(prot: c_int) -> *mut u8 {
    // SAFETY: a fresh anonymous mapping.
    let p = unsafe {
        libc::mmap(
            null_mut(),
            PAGE,
            prot,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert!(p != libc::MAP_FAILED, "mmap failed");
    p.cast()
}

/// Open descriptors and what they are. Pipes are left out: under
/// AddressSanitizer, libFuzzer's symbolizer (for its NEW_FUNC lines) talks
/// to `llvm-symbolizer` through pipes it opens at any time; the library
/// opens no pipes (its descriptors are eventfds and io_uring rings).
fn open_fds() -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .flatten()
        .filter_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            if target.to_string_lossy().starts_with("pipe:") {
                return None;
            }
            Some(format!(
                "{}->{}",
                e.file_name().to_string_lossy(),
                target.display()
            ))
        })
        .collect();
    fds.sort();
    fds
}

/// Opens the file named by `AFX_FUZZ_LAST_INPUT` (scripts/fuzz.sh sets
/// it), or returns -1. Each input is written there before it runs: a
/// library thread starts with every signal blocked, so a fault in one kills
/// the process outright (the kernel forces the default action), without
/// libFuzzer's handler writing the input to an artifact; the script then
/// copies this file instead.
fn open_last_input() -> c_int {
    use std::os::unix::ffi::OsStrExt;
    let Some(path) = std::env::var_os("AFX_FUZZ_LAST_INPUT") else {
        return -1;
    };
    let path = std::ffi::CString::new(path.as_bytes()).expect("a path without NUL");
    // SAFETY: a NUL-terminated path.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o644,
        )
    };
    assert!(fd >= 0, "open AFX_FUZZ_LAST_INPUT: errno {}", errno());
    fd
}

/// Writes `data` to the `AFX_FUZZ_LAST_INPUT` file, if any.
fn record_input(m: &Mem, data: &[u8]) {
    if m.last_input < 0 {
        return;
    }
    // SAFETY: an fd the fixture owns; `data` is readable.
    unsafe {
        let n = libc::pwrite(m.last_input, data.as_ptr().cast(), data.len(), 0);
        assert!(n == data.len() as isize, "pwrite of the input: {n}");
        assert_eq!(libc::ftruncate(m.last_input, data.len() as libc::off_t), 0);
    }
}

fn mem() -> &'static Mem {
    static MEM: OnceLock<Mem> = OnceLock::new();
    MEM.get_or_init(|| {
        let backend = afx_backend();
        assert!(
            backend == AFX_BACKEND_IO_URING || backend == AFX_BACKEND_THREAD,
            "afx_backend() = {backend}"
        );
        // Warm up whatever the backend creates lazily (the io_uring ring
        // thread, a helper thread): one handle with a kernel wait.
        let rw = map(libc::PROT_READ | libc::PROT_WRITE);
        // SAFETY: rw is a fresh read-write page.
        unsafe {
            let f = afx_new(rw.cast(), 0);
            assert!(!f.is_null());
            assert_eq!(afx_wait_async(f, 0), 0);
            afx_free(f);
        }
        Mem {
            rw,
            chan: map(libc::PROT_READ | libc::PROT_WRITE),
            ro: map(libc::PROT_READ),
            none: map(libc::PROT_NONE),
            backend,
            last_input: open_last_input(),
            fds: open_fds(),
        }
    })
}

/// Reads the input a byte at a time; zeros once it runs out.
struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn below(&mut self, n: usize) -> usize {
        self.u8() as usize % n
    }
    fn done(&self) -> bool {
        self.data.is_empty()
    }
}

/// Aborts with a description unless `ok`.
macro_rules! check {
    ($ok:expr, $($fmt:tt)*) => {
        if !$ok {
            panic!("undocumented result: {}", format!($($fmt)*));
        }
    };
}

/// Whether `AFX_FUZZ_TRACE` is set: the vector-wait ops then print each
/// call and its result to stderr (for replaying an input by hand).
fn tracing() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("AFX_FUZZ_TRACE").is_some())
}

macro_rules! trace {
    ($($fmt:tt)*) => {
        if tracing() {
            eprintln!($($fmt)*);
        }
    };
}

fn in_set(r: c_int, errs: &[c_int]) -> bool {
    r < 0 && errs.contains(&-r)
}

fn errno() -> c_int {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn strerror_ok(code: c_int) {
    let p = afx_strerror(code);
    check!(!p.is_null(), "afx_strerror({code}) is NULL");
    // SAFETY: a static NUL-terminated string.
    let s = unsafe { std::ffi::CStr::from_ptr(p) };
    check!(!s.to_bytes().is_empty(), "afx_strerror({code}) is empty");
}

fn static_str_ok(p: *const c_char, what: &str) {
    check!(!p.is_null(), "{what} is NULL");
    // SAFETY: the library returns static NUL-terminated strings.
    let s = unsafe { std::ffi::CStr::from_ptr(p) };
    check!(!s.to_bytes().is_empty(), "{what} is empty");
}

fn readable(fd: c_int) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // libFuzzer's SIGALRM (its -timeout watchdog) can interrupt even a
    // zero-timeout poll: retry on EINTR.
    let n = loop {
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        if n >= 0 || errno() != libc::EINTR {
            break n;
        }
    };
    check!(n >= 0, "poll on eventfd {fd} failed: errno {}", errno());
    check!(
        p.revents & libc::POLLNVAL == 0,
        "eventfd {fd} of a live handle is not open"
    );
    n == 1 && p.revents & libc::POLLIN != 0
}

/// Whether `fd` becomes readable within `ms` milliseconds.
fn readable_within(fd: c_int, ms: u64) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(ms);
    loop {
        if readable(fd) {
            return true;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd. EINTR (libFuzzer's SIGALRM) and
        // readiness are both looked at again by the loop.
        unsafe { libc::poll(&mut p, 1, left.as_millis().max(1) as c_int) };
    }
}

/// A live `afx_t` and what the model knows about it.
struct Handle {
    f: *mut afx_t,
    word: *const AtomicU32,
    fd: c_int,
    /// The wait armed and not yet acknowledged or cancelled, if any.
    armed: Option<Armed>,
}

/// What a handle's armed wait is.
enum Armed {
    /// `afx_wait_async` on the handle's word (acknowledged as entry 0).
    Word,
    /// `afx_waitv_async`.
    Vector(ArmedVector),
}

/// What the model knows about an armed vector wait.
struct ArmedVector {
    /// Entries (1..=AFX_WAITV_MAX).
    kinds: Vec<Kind>,
    /// Some entry names an unreadable word: the wait may fail with EFAULT
    /// (and must complete).
    unreadable: bool,
    /// (word, expected) of entries whose word has differed from `expected`
    /// at every moment since the arm: the wait must complete, whenever the
    /// backend gets to read the words.
    stale: Vec<(Kind, u32)>,
}

impl ArmedVector {
    /// The wait completes without anybody waking a word.
    fn must_complete(&self) -> bool {
        self.unreadable || !self.stale.is_empty()
    }
}

/// What an entry of a fuzzed vector names.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Word `i` of the read-write page (only `store` changes it).
    Rw(usize),
    /// A word of the read-only page (always 0).
    Ro,
    /// Aligned but unreadable: `PROT_NONE`, or never mappable. The kernel
    /// says EFAULT.
    Unreadable,
    /// NULL or misaligned: the vector is malformed (EINVAL).
    Invalid,
}

impl Kind {
    fn readable(self) -> bool {
        matches!(self, Kind::Rw(_) | Kind::Ro)
    }
}

/// A vector built from the input, and what the model knows about it.
struct Vector {
    entries: Vec<afx_wait_entry>,
    kinds: Vec<Kind>,
    /// Pass NULL instead of `entries` (with `n = entries.len()`).
    null: bool,
}

impl Vector {
    fn n(&self) -> u32 {
        self.entries.len() as u32
    }
    fn ptr(&self) -> *const afx_wait_entry {
        if self.null {
            std::ptr::null()
        } else {
            self.entries.as_ptr()
        }
    }
    /// `-EINVAL` is documented exactly for these: NULL entries, n == 0,
    /// n > AFX_WAITV_MAX, a NULL or misaligned address, unknown flags.
    fn malformed(&self) -> bool {
        self.null
            || self.entries.is_empty()
            || self.entries.len() > AFX_WAITV_MAX as usize
            || self.kinds.contains(&Kind::Invalid)
            || self.entries.iter().any(|e| e.flags & !AFX_PRIVATE != 0)
    }
    fn unreadable(&self) -> bool {
        self.kinds.contains(&Kind::Unreadable)
    }
    /// The value of entry `k`'s word now (readable entries only).
    fn current(&self, k: usize) -> u32 {
        // SAFETY: a readable word of the fixture.
        unsafe { (*self.entries[k].addr.cast::<AtomicU32>()).load(Ordering::SeqCst) }
    }
    /// Readable entries whose word does not hold its expected value now.
    fn differing(&self) -> Vec<usize> {
        (0..self.entries.len())
            .filter(|&k| self.kinds[k].readable() && self.current(k) != self.entries[k].expected)
            .collect()
    }
    /// The index `r` (>= 0) names an entry of the vector that the kernel
    /// could have reported: in range and a readable word.
    fn index_ok(&self, r: i64) -> bool {
        r >= 0 && (r as usize) < self.entries.len() && self.kinds[r as usize].readable()
    }
}

/// Which acknowledgement call to make.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AckHow {
    Ack,
    IndexNull,
    Index,
}

/// A live primitive handle on state `state`.
struct Prim<T> {
    h: *mut T,
    state: usize,
}

struct Chan {
    tx: Option<*mut afx_chan_t>,
    rx: Option<*mut afx_chan_t>,
    /// Initialised with these parameters (open handles need this).
    init: Option<(u32, u32)>,
}

struct World<'m> {
    m: &'m Mem,
    afx: Vec<Option<Handle>>,
    mutexes: Vec<Option<Prim<afx_mutex_t>>>,
    sems: Vec<Option<Prim<afx_sem_t>>>,
    events: Vec<Option<Prim<afx_event_t>>>,
    chan: Chan,
    /// The peer scribbled over shared state: more errors become possible.
    corrupt: bool,
    buf: [u8; 256],
}

impl World<'_> {
    fn word(&self, i: usize) -> *const AtomicU32 {
        // SAFETY: inside the read-write page, 4-aligned.
        unsafe { self.m.rw.add(4 * (i % WORDS)).cast() }
    }
    fn mutex_state(&self, i: usize) -> *mut afx_mutex_state {
        // SAFETY: inside the page, 16 bytes each, 8-aligned.
        unsafe { self.m.rw.add(MUTEX_OFF + 16 * (i % STATES)).cast() }
    }
    fn sem_state(&self, i: usize) -> *mut afx_sem_state {
        // SAFETY: inside the page, 12 bytes each, 4-aligned.
        unsafe { self.m.rw.add(SEM_OFF + 16 * (i % STATES)).cast() }
    }
    fn event_state(&self, i: usize) -> *mut afx_event_state {
        // SAFETY: inside the page, 8 bytes each, 4-aligned.
        unsafe { self.m.rw.add(EVENT_OFF + 8 * (i % STATES)).cast() }
    }

    /// A handle pointer: a live one, or NULL.
    fn pick<'a, T>(slots: &'a [Option<T>], inp: &mut Input) -> (usize, Option<&'a T>) {
        let i = inp.below(slots.len() + 1);
        if i == slots.len() {
            (i, None)
        } else {
            (i, slots[i].as_ref())
        }
    }

    /// A word value: the current one, one off, or anything.
    fn value(inp: &mut Input, current: u32) -> u32 {
        match inp.below(4) {
            0 | 1 => current,
            2 => current.wrapping_add(1),
            _ => inp.u32(),
        }
    }

    /// A timeout: 0, up to 200 µs.
    fn timeout(inp: &mut Input) -> i64 {
        match inp.below(3) {
            0 => 0,
            1 => 1 + inp.u8() as i64,
            _ => (inp.u8() as i64 + 1) * 781,
        }
    }

    fn step(&mut self, inp: &mut Input) {
        let op = inp.u8();
        if op >= 240 {
            // The vector waits. Below 240, op % 40 decodes as it did before
            // they existed (the older seeds keep their meaning).
            match op - 240 {
                0..=3 => self.waitv(inp),
                4..=8 => self.waitv_async(inp),
                9..=11 => self.ack_index(inp),
                _ => self.settle(inp),
            }
            return;
        }
        match op % 40 {
            0..=2 => self.afx_new(inp),
            3 => self.free(inp),
            4 | 5 => self.wake(inp),
            6 => self.wait(inp),
            7..=9 => self.wait_async(inp),
            10 | 11 => self.ack(inp),
            12 => self.cancel(inp),
            13 => self.eventfd(inp),
            14 | 15 => self.store(inp),
            16 => self.raw_wake(inp),
            17 => self.misc(inp),
            18..=22 => self.mutex(inp),
            23..=27 => self.sem(inp),
            28..=31 => self.event(inp),
            32..=37 => self.channel(inp),
            38 => self.scribble(inp),
            _ => self.free_all_prims(inp),
        }
    }

    // -- afx_t ------------------------------------------------------------

    fn afx_new(&mut self, inp: &mut Input) {
        let slot = inp.below(HANDLES);
        let flags = match inp.below(5) {
            0 | 1 => 0,
            2 | 3 => AFX_PRIVATE,
            _ => inp.u32(),
        };
        let i = inp.below(WORDS);
        // What the address is, and the errno afx_new must give for it.
        let (addr, addr_err): (*mut u32, Option<c_int>) = match inp.below(9) {
            0..=2 => (self.word(i) as *mut u32, None),
            // SAFETY (all below): addresses are only computed, not used.
            3 => (
                unsafe { self.m.rw.add(4 * i + 1 + inp.below(3)) }.cast(),
                Some(libc::EINVAL),
            ),
            4 => (null_mut(), Some(libc::EINVAL)),
            5 => (unsafe { self.m.ro.add(4 * i) }.cast(), None),
            6 => (unsafe { self.m.none.add(4 * i) }.cast(), Some(libc::EFAULT)),
            7 => {
                // Never mappable: below mmap_min_addr, non-canonical,
                // kernel half.
                let addrs = [0x1000usize, 0x10, 0x0000_8000_0000_0000, !0xfff];
                (
                    addrs[inp.below(addrs.len())] as *mut u32,
                    Some(libc::EFAULT),
                )
            }
            _ => (
                unsafe { self.m.ro.add(4 * i + 2) }.cast(),
                Some(libc::EINVAL),
            ),
        };
        // Unknown flags are refused before the address is looked at; NULL
        // and misaligned addresses before it is touched.
        let want_err = if flags & !AFX_PRIVATE != 0 {
            Some(libc::EINVAL)
        } else {
            addr_err
        };
        if let Some(old) = self.afx[slot].take() {
            // SAFETY: a live handle, not used afterwards.
            unsafe { afx_free(old.f) };
        }
        // SAFETY: addr is NULL, or any address: afx_new checks it (the
        // valid ones stay mapped for the life of the process).
        let f = unsafe { afx_new(addr, flags) };
        match want_err {
            Some(e) => {
                check!(
                    f.is_null(),
                    "afx_new({addr:p}, {flags:#x}) succeeded, want errno {e}"
                );
                check!(
                    errno() == e,
                    "afx_new({addr:p}, {flags:#x}): errno {}, want {e}",
                    errno()
                );
            }
            None if f.is_null() => {
                let e = errno();
                check!(
                    BACKEND_ERRS.contains(&e),
                    "afx_new({addr:p}, {flags:#x}) failed with errno {e}"
                );
            }
            None => {
                // SAFETY: live handle.
                let fd = unsafe { afx_eventfd(f) };
                check!(fd >= 0, "afx_eventfd of a new handle = {fd}");
                check!(!readable(fd), "a new handle's eventfd is readable");
                self.afx[slot] = Some(Handle {
                    f,
                    word: addr.cast(),
                    fd,
                    armed: None,
                });
            }
        }
    }

    fn free(&mut self, inp: &mut Input) {
        let slot = inp.below(HANDLES + 1);
        if slot == HANDLES {
            // SAFETY: NULL is a no-op.
            unsafe { afx_free(null_mut()) };
        } else if let Some(h) = self.afx[slot].take() {
            // SAFETY: a live handle, not used afterwards.
            unsafe { afx_free(h.f) };
        }
    }

    fn wake(&mut self, inp: &mut Input) {
        let n = match inp.below(6) {
            0 => 0,
            1 | 2 => 1,
            3 => 2,
            4 => u32::MAX,
            _ => inp.u32(),
        };
        let (_, h) = Self::pick(&self.afx, inp);
        let f = h.map_or(null_mut(), |h| h.f);
        // SAFETY: NULL or live.
        let r = unsafe { afx_wake(f, n) };
        if f.is_null() {
            check!(r == -libc::EINVAL, "afx_wake(NULL, {n}) = {r}");
        } else {
            check!(
                r >= 0 && (r as u32) <= n,
                "afx_wake(f, {n}) = {r} (want 0..={n})"
            );
            check!(n != 0 || r == 0, "afx_wake(f, 0) = {r}");
        }
    }

    fn wait(&mut self, inp: &mut Input) {
        let (_, h) = Self::pick(&self.afx, inp);
        let Some(h) = h else {
            let t = Self::timeout(inp) - inp.below(2) as i64 * 1_000_000;
            // SAFETY: NULL.
            let r = unsafe { afx_wait(null_mut(), inp.u32(), t) };
            check!(r == -libc::EINVAL, "afx_wait(NULL, _, {t}) = {r}");
            return;
        };
        // SAFETY: the word of a live handle is mapped.
        let current = unsafe { (*h.word).load(Ordering::SeqCst) };
        let expected = Self::value(inp, current);
        let mut t = Self::timeout(inp);
        if expected != current && inp.below(2) == 0 {
            // Forever is safe: nobody else changes the word, so the
            // kernel's value check fails at once.
            t = -1 - inp.below(3) as i64;
        }
        // SAFETY: live handle.
        let r = unsafe { afx_wait(h.f, expected, t) };
        if expected != current {
            check!(
                r == 0,
                "afx_wait(stale {expected}, now {current}, {t}) = {r}"
            );
        } else if t == 0 {
            check!(r == -libc::ETIMEDOUT, "afx_wait(current, 0) = {r}");
        } else {
            // Only a wake (none: single-threaded) or a spurious return.
            check!(
                r == 0 || r == -libc::ETIMEDOUT || r == -libc::EINTR,
                "afx_wait(current, {t}) = {r}"
            );
        }
    }

    fn wait_async(&mut self, inp: &mut Input) {
        let (i, h) = Self::pick(&self.afx, inp);
        let Some(h) = h else {
            // SAFETY: NULL.
            let r = unsafe { afx_wait_async(null_mut(), inp.u32()) };
            check!(r == -libc::EINVAL, "afx_wait_async(NULL) = {r}");
            return;
        };
        // SAFETY: mapped word.
        let current = unsafe { (*h.word).load(Ordering::SeqCst) };
        let expected = Self::value(inp, current);
        let was_armed = h.armed.is_some();
        // SAFETY: live handle.
        let r = unsafe { afx_wait_async(h.f, expected) };
        if was_armed {
            check!(r == -libc::EBUSY, "afx_wait_async while armed = {r}");
            return;
        }
        check!(
            r == 0 || in_set(r, BACKEND_ERRS),
            "afx_wait_async(expected {expected}, now {current}) = {r}"
        );
        if r == 0 {
            let fd = h.fd;
            self.afx[i].as_mut().expect("live").armed = Some(Armed::Word);
            if expected != current {
                // Stale: the eventfd is readable at once, and ack says so.
                check!(readable(fd), "stale arm: eventfd not readable");
            }
        }
    }

    fn ack(&mut self, inp: &mut Input) {
        let (i, _) = Self::pick(&self.afx, inp);
        self.ack_checked(i, AckHow::Ack);
    }

    /// Acknowledges handle slot `i` (NULL if it is `HANDLES` or empty) with
    /// `afx_ack` or `afx_ack_index`, and checks the result against the
    /// model: 0 with nothing armed; 1, 0 (pending), EFAULT or a backend
    /// error when armed (EFAULT for a vector only if it names an unreadable
    /// word); 1 whenever the eventfd was readable; on 1, the index names an
    /// entry of the armed wait (0 after `afx_wait_async`, a readable word of
    /// the vector after `afx_waitv_async`); otherwise `*index` untouched.
    fn ack_checked(&mut self, i: usize, how: AckHow) {
        const UNTOUCHED: u32 = 0xdead_beef;
        let mut index = UNTOUCHED;
        let what = match how {
            AckHow::Ack => "afx_ack",
            AckHow::IndexNull => "afx_ack_index(f, NULL)",
            AckHow::Index => "afx_ack_index(f, &index)",
        };
        let call = |f: *mut afx_t, index: &mut u32| {
            // SAFETY: f is NULL or live; index is writable.
            unsafe {
                match how {
                    AckHow::Ack => afx_ack(f),
                    AckHow::IndexNull => afx_ack_index(f, null_mut()),
                    AckHow::Index => afx_ack_index(f, index),
                }
            }
        };
        let Some(h) = self.afx.get(i).and_then(Option::as_ref) else {
            let r = call(null_mut(), &mut index);
            check!(r == -libc::EINVAL, "{what} on NULL = {r}");
            check!(index == UNTOUCHED, "{what} on NULL wrote *index");
            return;
        };
        let ready = readable(h.fd);
        let r = call(h.f, &mut index);
        let fd = h.fd;
        trace!("{what} slot {i}: {r}, index {index:#x}, ready {ready}");
        let Some(armed) = &h.armed else {
            check!(r == 0, "{what} with nothing armed = {r}");
            check!(!ready, "eventfd readable with nothing armed");
            check!(index == UNTOUCHED, "{what} = 0 wrote *index");
            return;
        };
        match armed {
            Armed::Word => check!(
                r == 0 || r == 1 || r == -libc::EFAULT || in_set(r, BACKEND_ERRS),
                "{what} = {r}"
            ),
            Armed::Vector(v) => {
                check!(
                    r == 0
                        || r == 1
                        || (r == -libc::EFAULT && v.unreadable)
                        || in_set(r, BACKEND_ERRS),
                    "{what} of a vector wait = {r} (kinds {:?})",
                    v.kinds
                );
            }
        }
        if ready {
            // S5: readiness means the armed wait completed.
            check!(r != 0, "eventfd was readable but {what} = 0 (pending)");
        }
        if r == 1 && how == AckHow::Index {
            match armed {
                Armed::Word => check!(index == 0, "{what} after afx_wait_async: index {index}"),
                Armed::Vector(v) => check!(
                    (index as usize) < v.kinds.len() && v.kinds[index as usize].readable(),
                    "{what} = 1, index {index} of {} entries (kinds {:?})",
                    v.kinds.len(),
                    v.kinds
                ),
            }
        } else {
            check!(index == UNTOUCHED, "{what} = {r} wrote *index = {index}");
        }
        if r != 0 {
            self.afx[i].as_mut().expect("live").armed = None;
            check!(!readable(fd), "{what} = {r} left the eventfd readable");
        }
    }

    fn cancel(&mut self, inp: &mut Input) {
        let (i, h) = Self::pick(&self.afx, inp);
        let f = h.map_or(null_mut(), |h| h.f);
        // SAFETY: NULL or live.
        let r = unsafe { afx_cancel(f) };
        match h {
            None => check!(r == -libc::EINVAL, "afx_cancel(NULL) = {r}"),
            Some(h) => {
                check!(r == 0, "afx_cancel = {r}");
                check!(!readable(h.fd), "afx_cancel left the eventfd readable");
                self.afx[i].as_mut().expect("live").armed = None;
            }
        }
    }

    fn eventfd(&mut self, inp: &mut Input) {
        let (_, h) = Self::pick(&self.afx, inp);
        let f = h.map_or(null_mut(), |h| h.f);
        // SAFETY: NULL or live.
        let r = unsafe { afx_eventfd(f) };
        match h {
            None => check!(r == -libc::EINVAL, "afx_eventfd(NULL) = {r}"),
            Some(h) => check!(r == h.fd, "afx_eventfd changed: {} -> {r}", h.fd),
        }
    }

    /// A peer stores to a word.
    fn store(&mut self, inp: &mut Input) {
        let i = inp.below(WORDS);
        // SAFETY: mapped word.
        let w = unsafe { &*self.word(i) };
        let v = Self::value(inp, w.load(Ordering::SeqCst).wrapping_add(1));
        w.store(v, Ordering::SeqCst);
        trace!("store word {i} = {v}");
        // An armed vector wait may now read `v`: an entry on this word
        // expecting `v` no longer makes it complete.
        for h in self.afx.iter_mut().flatten() {
            if let Some(Armed::Vector(a)) = &mut h.armed {
                a.stale
                    .retain(|&(kind, e)| !(kind == Kind::Rw(i) && e == v));
            }
        }
    }

    /// A peer that does not link the library wakes a word with futex(2).
    fn raw_wake(&mut self, inp: &mut Input) {
        let i = inp.below(WORDS);
        let private = inp.below(2) == 0;
        let op = libc::FUTEX_WAKE | if private { libc::FUTEX_PRIVATE_FLAG } else { 0 };
        let n = inp.below(3) as c_int;
        // SAFETY: a mapped word.
        let r = unsafe { libc::syscall(libc::SYS_futex, self.word(i), op, n, 0, 0, 0) };
        // The kernel wakes one even for n = 0 (futex_wake's loop).
        check!(r >= 0 && r <= n.max(1) as i64, "raw FUTEX_WAKE({n}) = {r}");
    }

    fn misc(&mut self, inp: &mut Input) {
        match inp.below(6) {
            0 => {
                let code = match inp.below(3) {
                    0 => -(inp.u8() as c_int),
                    1 => inp.u8() as c_int,
                    _ => inp.u32() as c_int,
                };
                strerror_ok(code);
            }
            1 => static_str_ok(afx_backend_name(inp.u32() as c_int), "afx_backend_name"),
            2 => static_str_ok(afx_version(), "afx_version"),
            3 => {
                let r = afx_backend();
                check!(r == self.m.backend, "afx_backend() = {r}");
            }
            _ => {
                let kind = match inp.below(5) {
                    0 => AFX_BACKEND_AUTO,
                    1 => AFX_BACKEND_IO_URING,
                    2 => AFX_BACKEND_THREAD,
                    _ => inp.u32() as c_int,
                };
                let r = afx_select_backend(kind);
                let want = match kind {
                    AFX_BACKEND_AUTO => self.m.backend,
                    k if k == self.m.backend => self.m.backend,
                    AFX_BACKEND_IO_URING | AFX_BACKEND_THREAD => -libc::EBUSY,
                    _ => -libc::EINVAL,
                };
                check!(r == want, "afx_select_backend({kind}) = {r}, want {want}");
            }
        }
    }

    // -- vector waits -------------------------------------------------------

    /// One entry: a fixture word (read-write or read-only page), a
    /// misaligned, NULL, `PROT_NONE` or never-mappable address; valid or
    /// unknown flags; the word's value, one off, or anything.
    fn entry(&self, inp: &mut Input) -> (afx_wait_entry, Kind) {
        let i = inp.below(WORDS);
        // SAFETY (all): addresses are only computed here; the kernel (or
        // the library's checks) decide what happens to them.
        let (addr, kind): (*mut u32, Kind) = match inp.below(12) {
            0..=5 => (self.word(i) as *mut u32, Kind::Rw(i)),
            6 => (unsafe { self.m.ro.add(4 * i) }.cast(), Kind::Ro),
            7 => (
                unsafe { self.m.rw.add(4 * i + 1 + inp.below(3)) }.cast(),
                Kind::Invalid,
            ),
            8 => (null_mut(), Kind::Invalid),
            9 => (unsafe { self.m.none.add(4 * i) }.cast(), Kind::Unreadable),
            10 => {
                // Never mappable: below mmap_min_addr, non-canonical,
                // kernel half.
                let addrs = [0x1000usize, 0x10, 0x0000_8000_0000_0000, !0xfff];
                (addrs[inp.below(addrs.len())] as *mut u32, Kind::Unreadable)
            }
            _ => (unsafe { self.m.ro.add(4 * i + 2) }.cast(), Kind::Invalid),
        };
        let flags = match inp.below(8) {
            0..=3 => 0,
            4..=6 => AFX_PRIVATE,
            _ => inp.u32(),
        };
        let current = match kind {
            // SAFETY: readable words of the fixture.
            Kind::Rw(_) | Kind::Ro => unsafe { (*addr.cast::<AtomicU32>()).load(Ordering::SeqCst) },
            _ => 0,
        };
        let expected = Self::value(inp, current);
        (
            afx_wait_entry {
                addr,
                expected,
                flags,
            },
            kind,
        )
    }

    /// A vector of 0..=130 entries: each from the input, all quiet words
    /// (holding their values, shared or private keys) or one entry
    /// repeated, then a few entries replaced (often the last one: entry
    /// 127 is where the thread backend splits a 128-entry wait over two
    /// helpers).
    fn vector(&self, inp: &mut Input) -> Vector {
        let n = match inp.below(10) {
            0 => 0,
            1 | 2 => 1,
            3 | 4 => 2 + inp.below(7),
            5 => 127,
            6 => 128,
            7 => 129,
            8 => 130,
            _ => inp.below(AFX_WAITV_MAX as usize + 3),
        };
        let mut entries = Vec::with_capacity(n);
        let mut kinds = Vec::with_capacity(n);
        match inp.below(4) {
            0 => {
                for _ in 0..n {
                    let (e, k) = self.entry(inp);
                    entries.push(e);
                    kinds.push(k);
                }
            }
            fill @ (1 | 2) => {
                let start = inp.below(WORDS);
                for k in 0..n {
                    let i = (start + k) % WORDS;
                    let addr = self.word(i) as *mut u32;
                    // SAFETY: a fixture word.
                    let expected = unsafe { (*addr.cast::<AtomicU32>()).load(Ordering::SeqCst) };
                    let flags = if fill == 2 { AFX_PRIVATE } else { 0 };
                    entries.push(afx_wait_entry {
                        addr,
                        expected,
                        flags,
                    });
                    kinds.push(Kind::Rw(i));
                }
            }
            _ => {
                let (e, k) = self.entry(inp);
                entries.resize(n, e);
                kinds.resize(n, k);
            }
        }
        if n > 0 {
            for _ in 0..inp.below(4) {
                let at = match inp.below(3) {
                    0 => n - 1,
                    _ => inp.below(n),
                };
                let (e, k) = self.entry(inp);
                entries[at] = e;
                kinds[at] = k;
            }
        }
        Vector {
            entries,
            kinds,
            null: inp.below(16) == 0,
        }
    }

    /// `afx_waitv`: -EINVAL exactly for a malformed vector; else an index
    /// of a readable entry, -EFAULT only with an unreadable entry,
    /// -ETIMEDOUT / -EINTR only when the call may sleep (every readable
    /// word holds its value, none unreadable). Sleeps at most 200 µs, or
    /// forever only when a word is known to differ (the kernel checks
    /// every word before it sleeps).
    fn waitv(&mut self, inp: &mut Input) {
        let v = self.vector(inp);
        let differing = v.differing();
        let mut t = Self::timeout(inp);
        if !differing.is_empty() && inp.below(2) == 0 {
            t = -1 - inp.below(3) as i64;
        }
        let n = v.n();
        // SAFETY: NULL or n entries; every word named is a fixture word
        // (mapped for ever) or an address the kernel refuses with EFAULT.
        let r = unsafe { afx_waitv(v.ptr(), n, t) };
        trace!(
            "afx_waitv(n {n}, {t}) = {r} (null {}, kinds {:?}, differing {differing:?})",
            v.null,
            v.kinds
        );
        let what = || {
            format!(
                "afx_waitv(n {n}, {t}) = {r} (null {}, kinds {:?}, differing {differing:?})",
                v.null, v.kinds
            )
        };
        if v.malformed() {
            check!(r == -libc::EINVAL, "{}: want EINVAL", what());
            return;
        }
        let unavailable = in_set(r, &[libc::ENOSYS, libc::EPERM]);
        if v.unreadable() {
            check!(
                r == -libc::EFAULT || v.index_ok(r as i64) || unavailable,
                "{}",
                what()
            );
        } else if !differing.is_empty() {
            // No sleep: the kernel stops at the first differing word (or
            // reports a word woken before it got there).
            check!(
                v.index_ok(r as i64) && r as usize <= differing[0] || unavailable,
                "{}",
                what()
            );
        } else {
            check!(
                v.index_ok(r as i64) || in_set(r, &[libc::ETIMEDOUT, libc::EINTR]) || unavailable,
                "{}",
                what()
            );
        }
    }

    /// `afx_waitv_async` on a live handle or NULL: -EINVAL for NULL or a
    /// malformed vector (armed or not: "otherwise as afx_wait_async");
    /// -EBUSY when armed; else 0 or a backend error.
    fn waitv_async(&mut self, inp: &mut Input) {
        let (i, h) = Self::pick(&self.afx, inp);
        let f = h.map_or(null_mut(), |h| h.f);
        let was_armed = h.is_some_and(|h| h.armed.is_some());
        let v = self.vector(inp);
        let n = v.n();
        // SAFETY: f NULL or live; entries NULL or n entries, naming fixture
        // words (mapped for ever) or addresses the kernel refuses.
        let r = unsafe { afx_waitv_async(f, v.ptr(), n) };
        trace!(
            "afx_waitv_async(slot {i}, n {n}) = {r} (null {}, armed {was_armed}, kinds {:?}, differing {:?})",
            v.null,
            v.kinds,
            v.differing()
        );
        let what = || {
            format!(
                "afx_waitv_async(n {n}) = {r} (null {}, armed {was_armed}, kinds {:?})",
                v.null, v.kinds
            )
        };
        if f.is_null() {
            check!(r == -libc::EINVAL, "{} on NULL", what());
            return;
        }
        if v.malformed() {
            check!(r == -libc::EINVAL, "{}: want EINVAL", what());
            return;
        }
        if was_armed {
            check!(r == -libc::EBUSY, "{}: want EBUSY", what());
            return;
        }
        check!(r == 0 || in_set(r, BACKEND_ERRS), "{}", what());
        if r == 0 {
            // Copied: the harness's vector may go now.
            let stale = v
                .differing()
                .into_iter()
                .map(|k| (v.kinds[k], v.entries[k].expected))
                .collect();
            self.afx[i].as_mut().expect("live").armed = Some(Armed::Vector(ArmedVector {
                unreadable: v.unreadable(),
                kinds: v.kinds,
                stale,
            }));
        }
    }

    fn ack_index(&mut self, inp: &mut Input) {
        let (i, _) = Self::pick(&self.afx, inp);
        let how = match inp.below(4) {
            0 => AckHow::Ack,
            1 => AckHow::IndexNull,
            _ => AckHow::Index,
        };
        self.ack_checked(i, how);
    }

    /// Waits (up to 5 s) for an armed vector wait the model knows must
    /// complete (a word has differed since the arm, or one is unreadable):
    /// its eventfd must become readable. Then acknowledges it (any armed
    /// wait), which must then report completion.
    fn settle(&mut self, inp: &mut Input) {
        let (i, h) = Self::pick(&self.afx, inp);
        let how = match inp.below(3) {
            0 => AckHow::Ack,
            1 => AckHow::IndexNull,
            _ => AckHow::Index,
        };
        if let Some(h) = h {
            if let Some(Armed::Vector(a)) = &h.armed {
                if a.must_complete() {
                    check!(
                        readable_within(h.fd, 5000),
                        "armed vector wait did not complete in 5 s (unreadable {}, stale {:?}, kinds {:?})",
                        a.unreadable,
                        a.stale,
                        a.kinds
                    );
                }
            }
        }
        self.ack_checked(i, how);
    }

    // -- primitives ---------------------------------------------------------

    /// Errors any primitive operation may give once the peer scribbled.
    fn open_ok<T>(&self, h: *mut T, what: &str, bad_addr: bool) {
        let e = errno();
        if bad_addr {
            check!(
                h.is_null() && e == libc::EINVAL,
                "{what} on a bad address: {h:p}, errno {e}"
            );
        } else if h.is_null() {
            check!(
                e == libc::EPROTO || BACKEND_ERRS.contains(&e),
                "{what} failed with errno {e}"
            );
        }
    }

    fn mutex(&mut self, inp: &mut Input) {
        let op = inp.below(10);
        if op == 0 {
            // init: only states nobody has open (the documented rule).
            let s = inp.below(STATES + 2);
            let (p, ok) = match s {
                // SAFETY: computed only.
                x if x == STATES => (unsafe { self.mutex_state(0).byte_add(4) }, false),
                x if x == STATES + 1 => (null_mut(), false),
                _ if self.mutexes.iter().flatten().any(|m| m.state == s) => return,
                _ => (self.mutex_state(s), true),
            };
            // SAFETY: NULL, misaligned (refused) or a writable state.
            let r = unsafe { afx_mutex_init(p) };
            let want = if ok { 0 } else { -libc::EINVAL };
            check!(r == want, "afx_mutex_init = {r}, want {want}");
            return;
        }
        if op == 1 {
            let slot = inp.below(HANDLES);
            let s = inp.below(STATES + 2);
            let (p, bad) = match s {
                // SAFETY: computed only.
                x if x == STATES => (unsafe { self.mutex_state(1).byte_add(4) }, true),
                x if x == STATES + 1 => (null_mut(), true),
                _ => (self.mutex_state(s), false),
            };
            if let Some(old) = self.mutexes[slot].take() {
                // SAFETY: live, not used afterwards.
                unsafe { afx_mutex_close(old.h) };
            }
            // SAFETY: NULL, misaligned or a mapped state.
            let h = unsafe { afx_mutex_open(p) };
            self.open_ok(h, "afx_mutex_open", bad);
            if !h.is_null() {
                self.mutexes[slot] = Some(Prim { h, state: s });
            }
            return;
        }
        let (slot, m) = Self::pick(&self.mutexes, inp);
        let h = m.map_or(null_mut(), |m| m.h);
        let null = h.is_null();
        let einval = -libc::EINVAL;
        // SAFETY (each call): NULL or a live handle.
        match op {
            2 => {
                let t = Self::timeout(inp);
                let r = unsafe { afx_mutex_lock(h, t) };
                check!(
                    if null {
                        r == einval
                    } else {
                        r == 0
                            || r == AFX_OWNER_DIED
                            || in_set(r, &[libc::ETIMEDOUT, libc::ENOTRECOVERABLE, libc::EFAULT])
                    },
                    "afx_mutex_lock({t}) = {r}"
                );
            }
            3 => {
                let r = unsafe { afx_mutex_trylock(h) };
                check!(
                    if null {
                        r == einval
                    } else {
                        r == 0
                            || r == AFX_OWNER_DIED
                            || in_set(r, &[libc::EBUSY, libc::ENOTRECOVERABLE])
                    },
                    "afx_mutex_trylock = {r}"
                );
            }
            4 => {
                let r = unsafe { afx_mutex_lock_async(h) };
                let mut errs = vec![libc::EAGAIN, libc::ENOTRECOVERABLE, libc::EFAULT];
                errs.extend_from_slice(BACKEND_ERRS);
                check!(
                    if null {
                        r == einval
                    } else {
                        r == 0 || r == AFX_OWNER_DIED || in_set(r, &errs)
                    },
                    "afx_mutex_lock_async = {r}"
                );
            }
            5 | 6 => {
                let r = unsafe { afx_mutex_unlock(h) };
                check!(
                    if null {
                        r == einval
                    } else {
                        r == 0 || in_set(r, &[libc::EPERM, libc::EFAULT])
                    },
                    "afx_mutex_unlock = {r}"
                );
            }
            7 => {
                let r = unsafe { afx_mutex_consistent(h) };
                check!(
                    null && r == einval
                        || !null && (r == 0 || in_set(r, &[libc::EPERM, libc::EINVAL])),
                    "afx_mutex_consistent = {r}"
                );
            }
            8 => {
                let r = unsafe { afx_mutex_eventfd(h) };
                check!(
                    if null { r == einval } else { r >= 0 },
                    "afx_mutex_eventfd = {r}"
                );
            }
            _ => {
                let r = unsafe { afx_mutex_cancel(h) };
                check!(
                    if null { r == einval } else { r == 0 },
                    "afx_mutex_cancel = {r}"
                );
                let _ = slot;
            }
        }
    }

    fn sem(&mut self, inp: &mut Input) {
        let op = inp.below(10);
        if op == 0 {
            let s = inp.below(STATES + 2);
            let permits = match inp.below(4) {
                0 => 0,
                1 => 1,
                2 => u32::MAX - inp.u8() as u32,
                _ => inp.u32(),
            };
            let (p, ok) = match s {
                // SAFETY: computed only.
                x if x == STATES => (unsafe { self.sem_state(0).byte_add(2) }, false),
                x if x == STATES + 1 => (null_mut(), false),
                _ if self.sems.iter().flatten().any(|m| m.state == s) => return,
                _ => (self.sem_state(s), true),
            };
            // SAFETY: NULL, misaligned or writable.
            let r = unsafe { afx_sem_init(p, permits) };
            let want = if ok { 0 } else { -libc::EINVAL };
            check!(r == want, "afx_sem_init = {r}, want {want}");
            return;
        }
        if op == 1 {
            let slot = inp.below(HANDLES);
            let s = inp.below(STATES + 2);
            let (p, bad) = match s {
                // SAFETY: computed only.
                x if x == STATES => (unsafe { self.sem_state(1).byte_add(1) }, true),
                x if x == STATES + 1 => (null_mut(), true),
                _ => (self.sem_state(s), false),
            };
            if let Some(old) = self.sems[slot].take() {
                // SAFETY: live, not used afterwards.
                unsafe { afx_sem_close(old.h) };
            }
            // SAFETY: NULL, misaligned or mapped.
            let h = unsafe { afx_sem_open(p) };
            self.open_ok(h, "afx_sem_open", bad);
            if !h.is_null() {
                self.sems[slot] = Some(Prim { h, state: s });
            }
            return;
        }
        let (_, m) = Self::pick(&self.sems, inp);
        let h = m.map_or(null_mut(), |m| m.h);
        let null = h.is_null();
        let einval = -libc::EINVAL;
        // SAFETY (each call): NULL or a live handle.
        let (r, what, ok) = match op {
            2 => {
                let t = Self::timeout(inp);
                let r = unsafe { afx_sem_acquire(h, t) };
                (
                    r,
                    "afx_sem_acquire",
                    r == 0 || in_set(r, &[libc::ETIMEDOUT, libc::EFAULT]),
                )
            }
            3 => {
                let r = unsafe { afx_sem_tryacquire(h) };
                (r, "afx_sem_tryacquire", r == 0 || r == -libc::EAGAIN)
            }
            4 | 5 => {
                let r = unsafe { afx_sem_acquire_async(h) };
                let mut errs = vec![libc::EAGAIN, libc::EFAULT];
                errs.extend_from_slice(BACKEND_ERRS);
                (r, "afx_sem_acquire_async", r == 0 || in_set(r, &errs))
            }
            6 => {
                let n = match inp.below(4) {
                    0 => 0,
                    1 => 1,
                    2 => u32::MAX,
                    _ => inp.u32(),
                };
                let r = unsafe { afx_sem_release(h, n) };
                (
                    r,
                    "afx_sem_release",
                    r == 0 || in_set(r, &[libc::EOVERFLOW, libc::EFAULT]),
                )
            }
            7 => {
                let r = unsafe { afx_sem_value(h) };
                (r, "afx_sem_value", r >= 0)
            }
            8 => {
                let r = unsafe { afx_sem_eventfd(h) };
                (r, "afx_sem_eventfd", r >= 0)
            }
            _ => {
                let r = unsafe { afx_sem_cancel(h) };
                (r, "afx_sem_cancel", r == 0)
            }
        };
        check!(if null { r == einval } else { ok }, "{what} = {r}");
    }

    fn event(&mut self, inp: &mut Input) {
        let op = inp.below(8);
        if op == 0 {
            let s = inp.below(STATES + 2);
            let (p, ok) = match s {
                // SAFETY: computed only.
                x if x == STATES => (unsafe { self.event_state(0).byte_add(1) }, false),
                x if x == STATES + 1 => (null_mut(), false),
                _ if self.events.iter().flatten().any(|m| m.state == s) => return,
                _ => (self.event_state(s), true),
            };
            // SAFETY: NULL, misaligned or writable.
            let r = unsafe { afx_event_init(p) };
            let want = if ok { 0 } else { -libc::EINVAL };
            check!(r == want, "afx_event_init = {r}, want {want}");
            return;
        }
        if op == 1 {
            let slot = inp.below(HANDLES);
            let s = inp.below(STATES + 2);
            let (p, bad) = match s {
                // SAFETY: computed only.
                x if x == STATES => (unsafe { self.event_state(1).byte_add(3) }, true),
                x if x == STATES + 1 => (null_mut(), true),
                _ => (self.event_state(s), false),
            };
            if let Some(old) = self.events[slot].take() {
                // SAFETY: live, not used afterwards.
                unsafe { afx_event_close(old.h) };
            }
            // SAFETY: NULL, misaligned or mapped.
            let h = unsafe { afx_event_open(p) };
            self.open_ok(h, "afx_event_open", bad);
            if !h.is_null() {
                self.events[slot] = Some(Prim { h, state: s });
            }
            return;
        }
        let (_, m) = Self::pick(&self.events, inp);
        let h = m.map_or(null_mut(), |m| m.h);
        let null = h.is_null();
        let einval = -libc::EINVAL;
        // SAFETY (each call): NULL or a live handle.
        let (r, what, ok) = match op {
            2 => {
                let r = unsafe { afx_event_publish(h) };
                (r, "afx_event_publish", r >= 0 || r == -libc::EFAULT)
            }
            3 => {
                let r = unsafe { afx_event_seq(h) };
                (r, "afx_event_seq", r >= 0)
            }
            4 => {
                let last = if null {
                    inp.u32()
                } else {
                    // SAFETY: live.
                    let seq = unsafe { afx_event_seq(h) } as u32;
                    Self::value(inp, seq)
                };
                let t = Self::timeout(inp);
                let r = unsafe { afx_event_wait(h, last, t) };
                (
                    r,
                    "afx_event_wait",
                    r >= 0 || in_set(r, &[libc::ETIMEDOUT, libc::EFAULT]),
                )
            }
            5 => {
                let last = if null {
                    inp.u32()
                } else {
                    // SAFETY: live.
                    let seq = unsafe { afx_event_seq(h) } as u32;
                    Self::value(inp, seq)
                };
                let r = unsafe { afx_event_wait_async(h, last) };
                let mut errs = vec![libc::EAGAIN, libc::EFAULT];
                errs.extend_from_slice(BACKEND_ERRS);
                (r, "afx_event_wait_async", r >= 0 || in_set(r, &errs))
            }
            6 => {
                let r = unsafe { afx_event_eventfd(h) };
                (r, "afx_event_eventfd", r >= 0)
            }
            _ => {
                let r = unsafe { afx_event_cancel(h) };
                (r, "afx_event_cancel", r == 0)
            }
        };
        check!(if null { r == einval } else { ok }, "{what} = {r}");
    }

    fn channel(&mut self, inp: &mut Input) {
        let op = inp.below(12);
        let hdr: *mut afx_chan_header = self.m.chan.cast();
        if op == 0 {
            let frame = match inp.below(5) {
                0 => 0,
                1 => 1 + inp.below(16) as u32,
                2 => 64,
                3 => 200,
                _ => inp.u32(),
            };
            let cap = match inp.below(5) {
                0 => 0,
                1 => 1,
                2 => 1 << inp.below(5),
                3 => 3,
                _ => inp.u32(),
            };
            let size = afx_chan_size(frame, cap);
            let valid = frame != 0
                && frame.checked_add(11).is_some()
                && cap.is_power_of_two()
                && cap <= 1 << 30;
            check!(
                (size == 0) != valid,
                "afx_chan_size({frame}, {cap}) = {size}"
            );
            let where_ = inp.below(3);
            if self.chan.tx.is_some() || self.chan.rx.is_some() {
                return; // init only while nobody uses it
            }
            let p = match where_ {
                0 => null_mut(),
                // SAFETY: computed only; refused as misaligned.
                1 => unsafe { hdr.byte_add(8) },
                _ => hdr,
            };
            let fits = valid && size <= CHAN_BYTES as u64;
            if p == hdr && !fits && valid {
                return; // would write past the buffer: the caller's fault
            }
            // SAFETY: NULL, misaligned, invalid parameters (all refused
            // before any write) or a big enough buffer.
            let r = unsafe { afx_chan_init(p, frame, cap) };
            let want = if p == hdr && fits { 0 } else { -libc::EINVAL };
            check!(
                r == want,
                "afx_chan_init({frame}, {cap}) = {r}, want {want}"
            );
            if r == 0 {
                self.chan.init = Some((frame, cap));
            }
            return;
        }
        if op == 1 {
            let role = match inp.below(4) {
                0 | 1 => AFX_CHAN_SENDER,
                2 => AFX_CHAN_RECEIVER,
                _ => inp.u32() as c_int,
            };
            let role = if inp.below(2) == 0 && role == AFX_CHAN_SENDER {
                AFX_CHAN_RECEIVER
            } else {
                role
            };
            let where_ = inp.below(4);
            let p = match where_ {
                0 => null_mut(),
                // SAFETY: computed only.
                1 => unsafe { hdr.byte_add(4) },
                _ => hdr,
            };
            let bad = p != hdr || (role != AFX_CHAN_SENDER && role != AFX_CHAN_RECEIVER);
            // One sender and one receiver at a time (SPSC): close the old.
            let slot = if role == AFX_CHAN_RECEIVER {
                &mut self.chan.rx
            } else {
                &mut self.chan.tx
            };
            if !bad {
                if let Some(old) = slot.take() {
                    // SAFETY: live, not used afterwards.
                    unsafe { afx_chan_close(old) };
                }
            }
            // SAFETY: NULL, misaligned, or the (possibly uninitialised)
            // header of a buffer at least as big as the channel it claims
            // (only ever initialised with a size that fits).
            let h = unsafe { afx_chan_open(p, role) };
            self.open_ok(h, "afx_chan_open", bad);
            if !h.is_null() {
                let slot = if role == AFX_CHAN_RECEIVER {
                    &mut self.chan.rx
                } else {
                    &mut self.chan.tx
                };
                *slot = Some(h);
            }
            return;
        }
        if op == 2 {
            // SAFETY: NULL is a no-op; live handles are not used afterwards.
            unsafe {
                match inp.below(3) {
                    0 => afx_chan_close(null_mut()),
                    1 => afx_chan_close(self.chan.tx.take().unwrap_or(null_mut())),
                    _ => afx_chan_close(self.chan.rx.take().unwrap_or(null_mut())),
                }
            }
            return;
        }
        let h = match inp.below(5) {
            0 => null_mut(),
            1 | 2 => self.chan.tx.unwrap_or(null_mut()),
            _ => self.chan.rx.unwrap_or(null_mut()),
        };
        let null = h.is_null();
        let len = match inp.below(4) {
            0 => 0,
            1 => inp.below(17) as u32,
            2 => inp.u8() as u32,
            _ => 64,
        };
        let buf_null = inp.below(8) == 0;
        let bp = if buf_null {
            null_mut()
        } else {
            self.buf.as_mut_ptr().cast::<c_void>()
        };
        let bad_buf = buf_null && len > 0 && op < 11;
        let mut errs = vec![libc::EINVAL, libc::EMSGSIZE, libc::EFAULT];
        if self.corrupt {
            // Documented for a corrupt frame length in the Rust API.
            errs.push(libc::EPROTO);
        }
        // SAFETY (each call): NULL or live handle; buf NULL or 256 bytes,
        // len <= 255 or 64.
        let (r, what, ok) = match op {
            3 => {
                let t = Self::timeout(inp);
                let r = unsafe { afx_chan_send(h, bp, len, t) };
                errs.push(libc::ETIMEDOUT);
                (r, "afx_chan_send", r == 0 || in_set(r, &errs))
            }
            4 | 5 => {
                let r = unsafe { afx_chan_try_send(h, bp, len) };
                errs.push(libc::EAGAIN);
                (r, "afx_chan_try_send", r == 0 || in_set(r, &errs))
            }
            6 => {
                let r = unsafe { afx_chan_send_async(h, bp, len) };
                errs.push(libc::EAGAIN);
                errs.extend_from_slice(BACKEND_ERRS);
                (r, "afx_chan_send_async", r == 0 || in_set(r, &errs))
            }
            7 => {
                let t = Self::timeout(inp);
                let r = unsafe { afx_chan_recv(h, bp, len, t) };
                errs.push(libc::ETIMEDOUT);
                (
                    r,
                    "afx_chan_recv",
                    (r >= 0 && r as u32 <= len) || in_set(r, &errs),
                )
            }
            8 | 9 => {
                let r = unsafe { afx_chan_try_recv(h, bp, len) };
                errs.push(libc::EAGAIN);
                (
                    r,
                    "afx_chan_try_recv",
                    (r >= 0 && r as u32 <= len) || in_set(r, &errs),
                )
            }
            10 => {
                let r = unsafe { afx_chan_recv_async(h, bp, len) };
                errs.push(libc::EAGAIN);
                errs.extend_from_slice(BACKEND_ERRS);
                (
                    r,
                    "afx_chan_recv_async",
                    (r >= 0 && r as u32 <= len) || in_set(r, &errs),
                )
            }
            _ => {
                let r = if inp.below(2) == 0 {
                    unsafe { afx_chan_eventfd(h) }
                } else {
                    unsafe { afx_chan_cancel(h) }
                };
                (r, "afx_chan_eventfd/cancel", r >= 0)
            }
        };
        if null || bad_buf {
            check!(r == -libc::EINVAL, "{what} with NULL handle/buffer = {r}");
        } else {
            check!(ok, "{what}(len {len}) = {r}");
        }
    }

    /// A broken peer writes garbage over a shared state word (the futex
    /// words the primitives use; never the channel's geometry, which a
    /// peer only writes at init).
    fn scribble(&mut self, inp: &mut Input) {
        let v = inp.u32();
        // SAFETY: all inside the two read-write pages, 4-aligned.
        unsafe {
            let p: *mut u32 = match inp.below(6) {
                0 => self.mutex_state(inp.below(STATES)).cast(),
                1 => self.sem_state(inp.below(STATES)).cast(),
                2 => self.sem_state(inp.below(STATES)).cast::<u32>().add(1),
                3 => self.event_state(inp.below(STATES)).cast(),
                4 => self.m.chan.add(64 * (1 + inp.below(2))).cast(),
                // A frame length in the ring.
                _ => self.m.chan.add(192 + 8 * inp.below(64)).cast(),
            };
            (*p.cast::<AtomicU32>()).store(v, Ordering::SeqCst);
        }
        self.corrupt = true;
    }

    fn free_all_prims(&mut self, inp: &mut Input) {
        // SAFETY: live handles, not used afterwards.
        unsafe {
            match inp.below(4) {
                0 => self
                    .mutexes
                    .iter_mut()
                    .flat_map(Option::take)
                    .for_each(|m| afx_mutex_close(m.h)),
                1 => self
                    .sems
                    .iter_mut()
                    .flat_map(Option::take)
                    .for_each(|m| afx_sem_close(m.h)),
                2 => self
                    .events
                    .iter_mut()
                    .flat_map(Option::take)
                    .for_each(|m| afx_event_close(m.h)),
                _ => {
                    afx_mutex_close(null_mut());
                    afx_sem_close(null_mut());
                    afx_event_close(null_mut());
                }
            }
        }
    }

    /// Frees everything and resets the shared memory.
    fn finish(mut self) {
        // SAFETY: live handles, not used afterwards.
        unsafe {
            for h in self.afx.iter_mut().flat_map(Option::take) {
                afx_free(h.f);
            }
            for m in self.mutexes.iter_mut().flat_map(Option::take) {
                afx_mutex_close(m.h);
            }
            for m in self.sems.iter_mut().flat_map(Option::take) {
                afx_sem_close(m.h);
            }
            for m in self.events.iter_mut().flat_map(Option::take) {
                afx_event_close(m.h);
            }
            afx_chan_close(self.chan.tx.take().unwrap_or(null_mut()));
            afx_chan_close(self.chan.rx.take().unwrap_or(null_mut()));
            std::ptr::write_bytes(self.m.rw, 0, PAGE);
            std::ptr::write_bytes(self.m.chan, 0, PAGE);
        }
        let fds = open_fds();
        check!(
            fds.len() == self.m.fds.len(),
            "fds open before the input: {:?}; after everything was freed: {fds:?}",
            self.m.fds
        );
    }
}

/// Steps per input at most (keeps each run short).
const MAX_STEPS: usize = 512;

fuzz_target!(|data: &[u8]| {
    let m = mem();
    record_input(m, data);
    let mut w = World {
        m,
        afx: (0..HANDLES).map(|_| None).collect(),
        mutexes: (0..HANDLES).map(|_| None).collect(),
        sems: (0..HANDLES).map(|_| None).collect(),
        events: (0..HANDLES).map(|_| None).collect(),
        chan: Chan {
            tx: None,
            rx: None,
            init: None,
        },
        corrupt: false,
        buf: [0; 256],
    };
    let mut inp = Input { data };
    let mut steps = 0;
    while !inp.done() && steps < MAX_STEPS {
        w.step(&mut inp);
        steps += 1;
    }
    w.finish();
});
