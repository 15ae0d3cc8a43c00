//! Bad input at every C entry point, as one table.
//!
//! Each row calls one `asyncfutex::ffi::afx_*` function with hostile input
//! — NULL handles; NULL, misaligned, unmapped, `PROT_NONE` and read-only
//! word addresses; unknown flags, backend kinds and roles; out-of-range
//! values; double arm, ack and cancel without arm, operations after cancel;
//! misuse of the primitives — and records the result next to the exact
//! value the C API documents (`-errno`, or `-errno` for a NULL + `errno`
//! return). The test fails on any mismatch, if `afx_strerror` has no real
//! message for an errno the table saw, or if `include/asyncfutex.h`
//! declares an `afx_` function that no row calls.
//!
//! Runs once per backend: `AFX_BACKEND=io_uring cargo test --test
//! hostile_input` and `AFX_BACKEND=thread cargo test --test hostile_input`.

use std::collections::BTreeSet;
use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicU32, Ordering};

use asyncfutex::ffi::*;

const PAGE: usize = 4096;
const EINVAL: c_int = -libc::EINVAL;

/// One row: which function, what input, what it gave, what it must give.
struct Row {
    func: &'static str,
    case: String,
    got: i64,
    want: i64,
}

#[derive(Default)]
struct Table {
    rows: Vec<Row>,
}

impl Table {
    fn row(
        &mut self,
        func: &'static str,
        case: impl Into<String>,
        got: impl Into<i64>,
        want: impl Into<i64>,
    ) {
        self.rows.push(Row {
            func,
            case: case.into(),
            got: got.into(),
            want: want.into(),
        });
    }
}

/// `-errno` of a NULL-returning constructor, or 0 (the handle is passed to
/// `free`).
fn ctor<T>(h: *mut T, free: impl FnOnce(*mut T)) -> c_int {
    if h.is_null() {
        -std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    } else {
        free(h);
        0
    }
}

fn set_errno(e: c_int) {
    // SAFETY: this thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}

fn text(p: *const c_char) -> String {
    assert!(!p.is_null());
    // SAFETY: the library returns static NUL-terminated strings.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// A fresh anonymous shared page with protection `prot`.
fn page(prot: c_int) -> *mut u8 {
    // SAFETY: a new mapping.
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
    assert_ne!(p, libc::MAP_FAILED);
    p.cast()
}

fn readable(fd: c_int) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd.
    unsafe { libc::poll(&mut p, 1, 0) == 1 && p.revents & libc::POLLIN != 0 }
}

/// Addresses no process can map: below `mmap_min_addr`, non-canonical,
/// the kernel half.
const NEVER_MAPPED: [usize; 4] = [0x1000, 0x10, 0x0000_8000_0000_0000, !0xfff];

/// The `afx_` functions `include/asyncfutex.h` declares.
fn header_functions() -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/include/asyncfutex.h");
    let header = std::fs::read_to_string(path).expect("read include/asyncfutex.h");
    let mut names = BTreeSet::new();
    for line in header.lines() {
        let line = line.trim_start();
        if line.starts_with("//") || line.starts_with('#') || line.starts_with('*') {
            continue;
        }
        // A declaration: `type name(args);` with the name starting `afx_`.
        if let Some(open) = line.find('(') {
            let before = &line[..open];
            let name = before
                .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .next()
                .unwrap_or("");
            if name.starts_with("afx_") && line.trim_end().ends_with(';') {
                names.insert(name.to_string());
            }
        }
    }
    assert!(
        names.len() > 40,
        "found only {} functions in the header",
        names.len()
    );
    names
}

/// Waits up to 10 s for `fd` to be readable.
fn readable_soon(fd: c_int) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one pollfd.
        let n = unsafe { libc::poll(&mut p, 1, 10_000) };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return n == 1 && p.revents & libc::POLLIN != 0;
    }
}

fn entry(addr: *mut u32, expected: u32, flags: u32) -> afx_wait_entry {
    afx_wait_entry {
        addr,
        expected,
        flags,
    }
}

/// Vector waits: malformed vectors, bad words (reported by the ack for
/// async waits: nothing reads raw vector words at arm), double arm.
unsafe fn waitv_rows(t: &mut Table, rw: *mut u8, ro: *mut u8, none: *mut u8) {
    // A page of zero words of its own (the other rows use `rw`).
    let own = page(libc::PROT_READ | libc::PROT_WRITE);
    let w = own.cast::<u32>();
    let good: Vec<afx_wait_entry> = (0..129).map(|i| entry(unsafe { w.add(i) }, 0, 0)).collect();
    let g = good.as_ptr();
    let forever = -1;
    t.row(
        "afx_waitv",
        "NULL",
        unsafe { afx_waitv(std::ptr::null(), 1, 0) },
        EINVAL,
    );
    t.row(
        "afx_waitv",
        "n = 0",
        unsafe { afx_waitv(g, 0, forever) },
        EINVAL,
    );
    t.row(
        "afx_waitv",
        "n = 129",
        unsafe { afx_waitv(g, 129, forever) },
        EINVAL,
    );
    t.row(
        "afx_waitv",
        "128, timeout 0",
        unsafe { afx_waitv(g, 128, 0) },
        -libc::ETIMEDOUT,
    );
    let cases: [(&str, afx_wait_entry); 6] = [
        ("NULL word", entry(null_mut(), 0, 0)),
        ("misaligned word", entry(unsafe { rw.add(1) }.cast(), 0, 0)),
        ("unknown flags", entry(w, 0, 2)),
        (
            "never-mapped word",
            entry(NEVER_MAPPED[0] as *mut u32, 0, 0),
        ),
        ("PROT_NONE word", entry(none.cast(), 0, 0)),
        ("read-only word, matching", entry(ro.cast(), 0, 0)),
    ];
    let wants = [
        EINVAL,
        EINVAL,
        EINVAL,
        -libc::EFAULT,
        -libc::EFAULT,
        -libc::ETIMEDOUT,
    ];
    for ((case, bad), want) in cases.iter().zip(wants) {
        let mut v = good[..4].to_vec();
        v[2] = *bad;
        t.row(
            "afx_waitv",
            *case,
            unsafe { afx_waitv(v.as_ptr(), 4, 0) },
            want,
        );
    }
    let mut stale = good[..4].to_vec();
    stale[3].expected = 9;
    t.row(
        "afx_waitv",
        "stale 4th word",
        unsafe { afx_waitv(stale.as_ptr(), 4, forever) },
        3,
    );

    t.row(
        "afx_waitv_async",
        "NULL handle",
        unsafe { afx_waitv_async(null_mut(), g, 1) },
        EINVAL,
    );
    let f = unsafe { afx_new(rw.add(1024).cast(), 0) };
    assert!(!f.is_null());
    let fd = unsafe { afx_eventfd(f) };
    t.row(
        "afx_waitv_async",
        "NULL vector",
        unsafe { afx_waitv_async(f, std::ptr::null(), 1) },
        EINVAL,
    );
    t.row(
        "afx_waitv_async",
        "n = 0",
        unsafe { afx_waitv_async(f, g, 0) },
        EINVAL,
    );
    t.row(
        "afx_waitv_async",
        "n = 129",
        unsafe { afx_waitv_async(f, g, 129) },
        EINVAL,
    );
    for (case, bad) in cases.iter().take(3) {
        let mut v = good[..4].to_vec();
        v[1] = *bad;
        t.row(
            "afx_waitv_async",
            *case,
            unsafe { afx_waitv_async(f, v.as_ptr(), 4) },
            EINVAL,
        );
    }
    t.row(
        "afx_ack_index",
        "NULL handle",
        unsafe { afx_ack_index(null_mut(), null_mut()) },
        EINVAL,
    );
    t.row(
        "afx_ack_index",
        "nothing armed",
        unsafe { afx_ack_index(f, null_mut()) },
        0,
    );
    // Per-wait mode refuses vector waits: the ack reports it.
    let per_wait = afx_backend() == AFX_BACKEND_THREAD
        && std::env::var("AFX_THREAD_WAITV").as_deref() == Ok("0");
    let refused = |want: c_int| if per_wait { -libc::ENOSYS } else { want };
    for (case, bad) in &cases[3..5] {
        let mut v = good[..4].to_vec();
        v[1] = *bad;
        t.row(
            "afx_waitv_async",
            *case,
            unsafe { afx_waitv_async(f, v.as_ptr(), 4) },
            0,
        );
        t.row(
            "afx_ack_index",
            format!("{case}: ready"),
            i64::from(readable_soon(fd)),
            1,
        );
        t.row(
            "afx_ack_index",
            format!("{case}: failed wait"),
            unsafe { afx_ack_index(f, null_mut()) },
            refused(-libc::EFAULT),
        );
    }
    t.row(
        "afx_waitv_async",
        "128 words",
        unsafe { afx_waitv_async(f, g, 128) },
        0,
    );
    t.row(
        "afx_waitv_async",
        "double arm",
        unsafe { afx_waitv_async(f, g, 4) },
        -libc::EBUSY,
    );
    t.row(
        "afx_wait_async",
        "after a vector arm",
        unsafe { afx_wait_async(f, 0) },
        -libc::EBUSY,
    );
    if !per_wait {
        t.row(
            "afx_ack_index",
            "pending",
            unsafe { afx_ack_index(f, null_mut()) },
            0,
        );
    }
    t.row("afx_cancel", "vector wait", unsafe { afx_cancel(f) }, 0);
    t.row(
        "afx_ack_index",
        "after cancel",
        unsafe { afx_ack_index(f, null_mut()) },
        0,
    );
    t.row(
        "afx_waitv_async",
        "stale",
        unsafe { afx_waitv_async(f, stale.as_ptr(), 4) },
        0,
    );
    t.row(
        "afx_ack_index",
        "stale: ready",
        i64::from(readable_soon(fd)),
        1,
    );
    let mut index = 77u32;
    let acked = unsafe { afx_ack_index(f, &mut index) };
    t.row(
        "afx_ack_index",
        "stale: completed",
        acked,
        if per_wait { -libc::ENOSYS } else { 1 },
    );
    t.row(
        "afx_ack_index",
        "stale: index",
        index,
        if per_wait { 77 } else { 3 },
    );
    t.row(
        "afx_wait_async",
        "single arm after",
        unsafe { afx_wait_async(f, 0) },
        0,
    );
    t.row(
        "afx_waitv_async",
        "vector arm over a single",
        unsafe { afx_waitv_async(f, g, 2) },
        -libc::EBUSY,
    );
    t.row("afx_cancel", "single wait", unsafe { afx_cancel(f) }, 0);
    unsafe { afx_free(f) };
    unsafe { libc::munmap(own.cast(), PAGE) };
}

// SAFETY (whole file): every call passes NULL, an address the function
// documents it checks (NULL, misaligned, or — for `afx_new` — unmapped /
// unreadable), or a live handle / mapped state that outlives its use.
#[test]
fn every_entry_point_refuses_bad_input() {
    let mut t = Table::default();
    let backend = afx_backend();
    assert!(
        backend == AFX_BACKEND_IO_URING || backend == AFX_BACKEND_THREAD,
        "afx_backend() = {backend}"
    );
    eprintln!("backend: {}", text(afx_backend_name(backend)));
    let rw = page(libc::PROT_READ | libc::PROT_WRITE);
    let ro = page(libc::PROT_READ);
    let none = page(libc::PROT_NONE);
    let word = rw.cast::<u32>();
    // SAFETY: inside the page.
    let word2 = unsafe { rw.add(64) }.cast::<u32>();

    unsafe {
        afx_t_rows(&mut t, rw, ro, none, word, word2);
        backend_rows(&mut t, backend);
        mutex_rows(&mut t, rw);
        sem_rows(&mut t, rw);
        event_rows(&mut t, rw);
        chan_rows(&mut t);
        waitv_rows(&mut t, rw, ro, none);
        unmapped_open_rows(&mut t, none);
        libc::munmap(rw.cast(), PAGE);
        libc::munmap(ro.cast(), PAGE);
        libc::munmap(none.cast(), PAGE);
    }

    // afx_strerror: a real message for every errno a row returned.
    let mut errnos: BTreeSet<i64> = t
        .rows
        .iter()
        .filter(|r| r.got < 0)
        .map(|r| -r.got)
        .collect();
    errnos.extend(t.rows.iter().filter(|r| r.want < 0).map(|r| -r.want));
    let unknown = text(afx_strerror(12345));
    for &e in &errnos {
        let e = e as c_int;
        let neg = text(afx_strerror(-e));
        let pos = text(afx_strerror(e));
        t.row(
            "afx_strerror",
            format!("-{e}: {neg:?}"),
            i64::from(neg.is_empty() || neg == unknown),
            0,
        );
        t.row(
            "afx_strerror",
            format!("+{e} same as -{e}"),
            i64::from(pos != neg),
            0,
        );
    }
    t.row(
        "afx_strerror",
        "unknown code",
        i64::from(unknown != "unknown error"),
        0,
    );
    t.row(
        "afx_strerror",
        "INT_MIN",
        i64::from(text(afx_strerror(c_int::MIN)).is_empty()),
        0,
    );

    // Report.
    let mut failures = Vec::new();
    for r in &t.rows {
        if r.got != r.want {
            failures.push(format!(
                "  {}: {}: got {} ({}), want {} ({})",
                r.func,
                r.case,
                r.got,
                text(afx_strerror(r.got.clamp(-4095, 0) as c_int)),
                r.want,
                text(afx_strerror(r.want.clamp(-4095, 0) as c_int)),
            ));
        }
    }
    let covered: BTreeSet<&str> = t.rows.iter().map(|r| r.func).collect();
    let declared = header_functions();
    let missing: Vec<&String> = declared
        .iter()
        .filter(|f| !covered.contains(f.as_str()))
        .collect();
    let stale: Vec<&&str> = covered.iter().filter(|f| !declared.contains(**f)).collect();
    eprintln!(
        "hostile input table: {} rows over {} functions ({} declared in the header), {} errnos seen {:?}",
        t.rows.len(),
        covered.len(),
        declared.len(),
        errnos.len(),
        errnos
    );
    assert!(
        missing.is_empty(),
        "header functions without a row in the table: {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "rows for functions not in the header: {stale:?}"
    );
    assert!(
        failures.is_empty(),
        "{} of {} rows differ from the documented result:\n{}",
        failures.len(),
        t.rows.len(),
        failures.join("\n")
    );
}

unsafe fn afx_t_rows(
    t: &mut Table,
    rw: *mut u8,
    ro: *mut u8,
    none: *mut u8,
    word: *mut u32,
    word2: *mut u32,
) {
    let free = |f| unsafe { afx_free(f) };
    // afx_new: addresses and flags.
    for flags in [0, AFX_PRIVATE] {
        set_errno(0);
        t.row(
            "afx_new",
            format!("NULL, flags {flags}"),
            ctor(unsafe { afx_new(null_mut(), flags) }, free),
            EINVAL,
        );
        for off in 1..4 {
            let p = unsafe { rw.add(off) }.cast();
            t.row(
                "afx_new",
                format!("misaligned +{off}, flags {flags}"),
                ctor(unsafe { afx_new(p, flags) }, free),
                EINVAL,
            );
            let p = unsafe { ro.add(off) }.cast();
            t.row(
                "afx_new",
                format!("read-only misaligned +{off}"),
                ctor(unsafe { afx_new(p, flags) }, free),
                EINVAL,
            );
        }
        for a in NEVER_MAPPED {
            t.row(
                "afx_new",
                format!("unmapped {a:#x}, flags {flags}"),
                ctor(unsafe { afx_new(a as *mut u32, flags) }, free),
                -libc::EFAULT,
            );
        }
        t.row(
            "afx_new",
            format!("PROT_NONE, flags {flags}"),
            ctor(unsafe { afx_new(none.cast(), flags) }, free),
            -libc::EFAULT,
        );
        t.row(
            "afx_new",
            format!("read-only word, flags {flags}"),
            ctor(unsafe { afx_new(ro.cast(), flags) }, free),
            0,
        );
        t.row(
            "afx_new",
            format!("valid word, flags {flags}"),
            ctor(unsafe { afx_new(word, flags) }, free),
            0,
        );
    }
    for flags in [2u32, 3, 0x80, 0x8000_0000, u32::MAX] {
        t.row(
            "afx_new",
            format!("valid word, unknown flags {flags:#x}"),
            ctor(unsafe { afx_new(word, flags) }, free),
            EINVAL,
        );
        t.row(
            "afx_new",
            format!("NULL, unknown flags {flags:#x}"),
            ctor(unsafe { afx_new(null_mut(), flags) }, free),
            EINVAL,
        );
        t.row(
            "afx_new",
            format!("PROT_NONE, unknown flags {flags:#x}"),
            ctor(unsafe { afx_new(none.cast(), flags) }, free),
            EINVAL,
        );
    }
    unsafe { afx_free(null_mut()) };
    t.row("afx_free", "NULL is a no-op", 0, 0);

    // NULL handles.
    for n in [0, 1, u32::MAX] {
        t.row(
            "afx_wake",
            format!("NULL, n {n}"),
            unsafe { afx_wake(null_mut(), n) },
            EINVAL,
        );
    }
    for to in [0, -1, 1_000, i64::MAX, i64::MIN] {
        t.row(
            "afx_wait",
            format!("NULL, timeout {to}"),
            unsafe { afx_wait(null_mut(), 0, to) },
            EINVAL,
        );
    }
    t.row(
        "afx_eventfd",
        "NULL",
        unsafe { afx_eventfd(null_mut()) },
        EINVAL,
    );
    t.row(
        "afx_wait_async",
        "NULL",
        unsafe { afx_wait_async(null_mut(), 0) },
        EINVAL,
    );
    t.row("afx_ack", "NULL", unsafe { afx_ack(null_mut()) }, EINVAL);
    t.row(
        "afx_cancel",
        "NULL",
        unsafe { afx_cancel(null_mut()) },
        EINVAL,
    );

    // A live handle: out-of-range values and state misuse.
    unsafe { *word = 7 };
    let f = unsafe { afx_new(word, AFX_PRIVATE) };
    assert!(!f.is_null());
    let fd = unsafe { afx_eventfd(f) };
    t.row("afx_eventfd", "live handle (>= 0)", i64::from(fd < 0), 0);
    t.row("afx_wake", "n 0", unsafe { afx_wake(f, 0) }, 0);
    t.row(
        "afx_wake",
        "n UINT32_MAX, no waiter",
        unsafe { afx_wake(f, u32::MAX) },
        0,
    );
    t.row(
        "afx_wake",
        "n 0x80000000, no waiter",
        unsafe { afx_wake(f, 0x8000_0000) },
        0,
    );
    t.row(
        "afx_wait",
        "current, timeout 0",
        unsafe { afx_wait(f, 7, 0) },
        -libc::ETIMEDOUT,
    );
    t.row(
        "afx_wait",
        "current, timeout 1 ns",
        unsafe { afx_wait(f, 7, 1) },
        -libc::ETIMEDOUT,
    );
    t.row(
        "afx_wait",
        "current, timeout 1 ms",
        unsafe { afx_wait(f, 7, 1_000_000) },
        -libc::ETIMEDOUT,
    );
    for to in [0, 1, -1, i64::MIN, i64::MAX] {
        t.row(
            "afx_wait",
            format!("stale, timeout {to}"),
            unsafe { afx_wait(f, 8, to) },
            0,
        );
    }
    t.row("afx_ack", "nothing armed", unsafe { afx_ack(f) }, 0);
    t.row("afx_cancel", "nothing armed", unsafe { afx_cancel(f) }, 0);
    t.row(
        "afx_cancel",
        "nothing armed, twice",
        unsafe { afx_cancel(f) },
        0,
    );
    // Pending arm, double arm.
    t.row(
        "afx_wait_async",
        "arm (current)",
        unsafe { afx_wait_async(f, 7) },
        0,
    );
    t.row(
        "afx_wait_async",
        "double arm",
        unsafe { afx_wait_async(f, 7) },
        -libc::EBUSY,
    );
    t.row(
        "afx_wait_async",
        "double arm, other value",
        unsafe { afx_wait_async(f, 8) },
        -libc::EBUSY,
    );
    t.row("afx_ack", "pending", unsafe { afx_ack(f) }, 0);
    t.row("afx_cancel", "pending", unsafe { afx_cancel(f) }, 0);
    t.row(
        "afx_eventfd",
        "same fd after cancel",
        unsafe { afx_eventfd(f) },
        fd,
    );
    t.row("afx_ack", "after cancel", unsafe { afx_ack(f) }, 0);
    t.row("afx_cancel", "after cancel", unsafe { afx_cancel(f) }, 0);
    t.row(
        "afx_wake",
        "after cancel, nobody waits",
        unsafe { afx_wake(f, 1) },
        0,
    );
    // Stale arm: completes at once; not acknowledged -> still busy.
    t.row(
        "afx_wait_async",
        "stale arm after cancel",
        unsafe { afx_wait_async(f, 1) },
        0,
    );
    t.row(
        "afx_eventfd",
        "readable after stale arm",
        i64::from(readable(fd)),
        1,
    );
    t.row(
        "afx_wait_async",
        "arm again before ack",
        unsafe { afx_wait_async(f, 7) },
        -libc::EBUSY,
    );
    t.row("afx_ack", "completed", unsafe { afx_ack(f) }, 1);
    t.row(
        "afx_eventfd",
        "drained after ack",
        i64::from(readable(fd)),
        0,
    );
    t.row("afx_ack", "second ack", unsafe { afx_ack(f) }, 0);
    t.row(
        "afx_wait_async",
        "stale arm, then cancel",
        unsafe { afx_wait_async(f, 1) },
        0,
    );
    t.row(
        "afx_cancel",
        "completed, unacknowledged",
        unsafe { afx_cancel(f) },
        0,
    );
    t.row(
        "afx_eventfd",
        "drained after cancel",
        i64::from(readable(fd)),
        0,
    );
    t.row(
        "afx_ack",
        "after cancelling a completion",
        unsafe { afx_ack(f) },
        0,
    );
    t.row(
        "afx_wait_async",
        "re-arm after cancel",
        unsafe { afx_wait_async(f, 7) },
        0,
    );
    unsafe { afx_free(f) };
    t.row("afx_free", "armed, pending", 0, 0);

    // A read-only word works (futex waits only read it).
    let f = unsafe { afx_new(ro.cast(), 0) };
    assert!(!f.is_null());
    t.row(
        "afx_wait",
        "read-only word, current, timeout 0",
        unsafe { afx_wait(f, 0, 0) },
        -libc::ETIMEDOUT,
    );
    t.row(
        "afx_wait",
        "read-only word, stale",
        unsafe { afx_wait(f, 1, -1) },
        0,
    );
    t.row("afx_wake", "read-only word", unsafe { afx_wake(f, 1) }, 0);
    t.row(
        "afx_wait_async",
        "read-only word",
        unsafe { afx_wait_async(f, 0) },
        0,
    );
    t.row(
        "afx_ack",
        "read-only word, pending",
        unsafe { afx_ack(f) },
        0,
    );
    unsafe { afx_free(f) };

    // Private and shared keys never match: a shared handle's wake does
    // not reach a private waiter on the same word.
    unsafe { *word2 = 0 };
    let p = unsafe { afx_new(word2, AFX_PRIVATE) };
    let s = unsafe { afx_new(word2, 0) };
    assert!(!p.is_null() && !s.is_null());
    t.row(
        "afx_wait_async",
        "private, for a shared wake",
        unsafe { afx_wait_async(p, 0) },
        0,
    );
    // Whether or not the private wait is queued yet, no shared waiter
    // exists, so a shared wake-all finds nobody.
    let woke = unsafe { afx_wake(s, u32::MAX) };
    t.row("afx_wake", "shared wake, only a private waiter", woke, 0);
    unsafe {
        afx_free(p);
        afx_free(s);
    }
}

unsafe fn backend_rows(t: &mut Table, running: c_int) {
    t.row(
        "afx_version",
        "matches the header",
        i64::from(
            text(afx_version())
                != format!("{AFX_VERSION_MAJOR}.{AFX_VERSION_MINOR}.{AFX_VERSION_PATCH}"),
        ),
        0,
    );
    t.row("afx_backend", "stable", afx_backend(), running);
    if let Ok(env) = std::env::var("AFX_BACKEND") {
        t.row(
            "afx_backend",
            format!("honours AFX_BACKEND={env}"),
            i64::from(text(afx_backend_name(running)) != env),
            0,
        );
    }
    for k in [3, 12345, -1, c_int::MIN, c_int::MAX] {
        t.row(
            "afx_select_backend",
            format!("unknown kind {k}"),
            afx_select_backend(k),
            EINVAL,
        );
        t.row(
            "afx_backend_name",
            format!("unknown kind {k}"),
            i64::from(text(afx_backend_name(k)) != "unknown"),
            0,
        );
    }
    t.row(
        "afx_select_backend",
        "AUTO once running",
        afx_select_backend(AFX_BACKEND_AUTO),
        running,
    );
    t.row(
        "afx_select_backend",
        "the running one",
        afx_select_backend(running),
        running,
    );
    let other = if running == AFX_BACKEND_IO_URING {
        AFX_BACKEND_THREAD
    } else {
        AFX_BACKEND_IO_URING
    };
    t.row(
        "afx_select_backend",
        "the other one once running",
        afx_select_backend(other),
        -libc::EBUSY,
    );
    t.row(
        "afx_backend",
        "unchanged after a refused select",
        afx_backend(),
        running,
    );
    for (k, name) in [
        (AFX_BACKEND_AUTO, "auto"),
        (AFX_BACKEND_IO_URING, "io_uring"),
        (AFX_BACKEND_THREAD, "thread"),
    ] {
        t.row(
            "afx_backend_name",
            name,
            i64::from(text(afx_backend_name(k)) != name),
            0,
        );
    }
}

/// A pid that is certainly dead: a reaped child's.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let pid = child.id();
    child.wait().expect("wait");
    pid
}

unsafe fn mutex_rows(t: &mut Table, rw: *mut u8) {
    let s = unsafe { rw.add(256) }.cast::<afx_mutex_state>();
    let mis = unsafe { rw.add(256 + 4) }.cast::<afx_mutex_state>();
    let close = |m| unsafe { afx_mutex_close(m) };
    t.row(
        "afx_mutex_init",
        "NULL",
        unsafe { afx_mutex_init(null_mut()) },
        EINVAL,
    );
    t.row(
        "afx_mutex_init",
        "misaligned",
        unsafe { afx_mutex_init(mis) },
        EINVAL,
    );
    t.row(
        "afx_mutex_open",
        "NULL",
        ctor(unsafe { afx_mutex_open(null_mut()) }, close),
        EINVAL,
    );
    t.row(
        "afx_mutex_open",
        "misaligned",
        ctor(unsafe { afx_mutex_open(mis) }, close),
        EINVAL,
    );
    t.row(
        "afx_mutex_open",
        "not initialised",
        ctor(unsafe { afx_mutex_open(s) }, close),
        -libc::EPROTO,
    );
    unsafe { (*s).version = AFX_MUTEX_VERSION + 1 };
    t.row(
        "afx_mutex_open",
        "other layout version",
        ctor(unsafe { afx_mutex_open(s) }, close),
        -libc::EPROTO,
    );
    unsafe { afx_mutex_close(null_mut()) };
    t.row("afx_mutex_close", "NULL is a no-op", 0, 0);
    let n = null_mut();
    t.row(
        "afx_mutex_lock",
        "NULL",
        unsafe { afx_mutex_lock(n, 0) },
        EINVAL,
    );
    t.row(
        "afx_mutex_lock",
        "NULL, forever",
        unsafe { afx_mutex_lock(n, -1) },
        EINVAL,
    );
    t.row(
        "afx_mutex_trylock",
        "NULL",
        unsafe { afx_mutex_trylock(n) },
        EINVAL,
    );
    t.row(
        "afx_mutex_lock_async",
        "NULL",
        unsafe { afx_mutex_lock_async(n) },
        EINVAL,
    );
    t.row(
        "afx_mutex_unlock",
        "NULL",
        unsafe { afx_mutex_unlock(n) },
        EINVAL,
    );
    t.row(
        "afx_mutex_consistent",
        "NULL",
        unsafe { afx_mutex_consistent(n) },
        EINVAL,
    );
    t.row(
        "afx_mutex_eventfd",
        "NULL",
        unsafe { afx_mutex_eventfd(n) },
        EINVAL,
    );
    t.row(
        "afx_mutex_cancel",
        "NULL",
        unsafe { afx_mutex_cancel(n) },
        EINVAL,
    );

    t.row("afx_mutex_init", "valid", unsafe { afx_mutex_init(s) }, 0);
    let a = unsafe { afx_mutex_open(s) };
    let b = unsafe { afx_mutex_open(s) };
    assert!(!a.is_null() && !b.is_null());
    t.row(
        "afx_mutex_unlock",
        "not held",
        unsafe { afx_mutex_unlock(a) },
        -libc::EPERM,
    );
    t.row(
        "afx_mutex_consistent",
        "not held",
        unsafe { afx_mutex_consistent(a) },
        -libc::EPERM,
    );
    t.row(
        "afx_mutex_cancel",
        "nothing pending",
        unsafe { afx_mutex_cancel(a) },
        0,
    );
    t.row(
        "afx_mutex_eventfd",
        "live (>= 0)",
        i64::from(unsafe { afx_mutex_eventfd(a) } < 0),
        0,
    );
    t.row(
        "afx_mutex_trylock",
        "free",
        unsafe { afx_mutex_trylock(a) },
        0,
    );
    t.row(
        "afx_mutex_consistent",
        "held, consistent",
        unsafe { afx_mutex_consistent(a) },
        EINVAL,
    );
    t.row(
        "afx_mutex_trylock",
        "held (other handle)",
        unsafe { afx_mutex_trylock(b) },
        -libc::EBUSY,
    );
    t.row(
        "afx_mutex_lock",
        "held, timeout 0",
        unsafe { afx_mutex_lock(b, 0) },
        -libc::ETIMEDOUT,
    );
    t.row(
        "afx_mutex_lock",
        "held, timeout 1 ms",
        unsafe { afx_mutex_lock(b, 1_000_000) },
        -libc::ETIMEDOUT,
    );
    t.row(
        "afx_mutex_lock_async",
        "held",
        unsafe { afx_mutex_lock_async(b) },
        -libc::EAGAIN,
    );
    t.row(
        "afx_mutex_lock_async",
        "held, again",
        unsafe { afx_mutex_lock_async(b) },
        -libc::EAGAIN,
    );
    t.row(
        "afx_mutex_cancel",
        "pending",
        unsafe { afx_mutex_cancel(b) },
        0,
    );
    t.row(
        "afx_mutex_cancel",
        "after cancel",
        unsafe { afx_mutex_cancel(b) },
        0,
    );
    t.row(
        "afx_mutex_unlock",
        "held",
        unsafe { afx_mutex_unlock(a) },
        0,
    );
    t.row(
        "afx_mutex_unlock",
        "twice",
        unsafe { afx_mutex_unlock(a) },
        -libc::EPERM,
    );
    t.row(
        "afx_mutex_lock_async",
        "free after cancel",
        unsafe { afx_mutex_lock_async(b) },
        0,
    );
    t.row(
        "afx_mutex_unlock",
        "async-locked",
        unsafe { afx_mutex_unlock(b) },
        0,
    );

    // The holder died: taken over with AFX_OWNER_DIED; unlocking without
    // afx_mutex_consistent makes it not recoverable.
    let dead = dead_pid();
    unsafe { (*s).state = dead };
    t.row(
        "afx_mutex_trylock",
        "holder died",
        unsafe { afx_mutex_trylock(a) },
        AFX_OWNER_DIED,
    );
    t.row(
        "afx_mutex_unlock",
        "owner died, not made consistent",
        unsafe { afx_mutex_unlock(a) },
        0,
    );
    t.row(
        "afx_mutex_trylock",
        "not recoverable",
        unsafe { afx_mutex_trylock(a) },
        -libc::ENOTRECOVERABLE,
    );
    t.row(
        "afx_mutex_lock",
        "not recoverable",
        unsafe { afx_mutex_lock(b, 1_000_000) },
        -libc::ENOTRECOVERABLE,
    );
    t.row(
        "afx_mutex_lock_async",
        "not recoverable",
        unsafe { afx_mutex_lock_async(b) },
        -libc::ENOTRECOVERABLE,
    );
    t.row(
        "afx_mutex_init",
        "re-init when unused",
        unsafe { afx_mutex_init(s) },
        0,
    );
    unsafe { (*s).state = dead };
    t.row(
        "afx_mutex_lock",
        "holder died",
        unsafe { afx_mutex_lock(b, 1_000_000) },
        AFX_OWNER_DIED,
    );
    t.row(
        "afx_mutex_consistent",
        "after owner died",
        unsafe { afx_mutex_consistent(b) },
        0,
    );
    t.row(
        "afx_mutex_consistent",
        "twice",
        unsafe { afx_mutex_consistent(b) },
        EINVAL,
    );
    t.row(
        "afx_mutex_unlock",
        "made consistent",
        unsafe { afx_mutex_unlock(b) },
        0,
    );
    t.row(
        "afx_mutex_trylock",
        "recovered",
        unsafe { afx_mutex_trylock(a) },
        0,
    );
    t.row(
        "afx_mutex_unlock",
        "recovered",
        unsafe { afx_mutex_unlock(a) },
        0,
    );
    unsafe {
        afx_mutex_close(a);
        afx_mutex_close(b);
    }
}

unsafe fn sem_rows(t: &mut Table, rw: *mut u8) {
    let s = unsafe { rw.add(512) }.cast::<afx_sem_state>();
    let mis = unsafe { rw.add(512 + 2) }.cast::<afx_sem_state>();
    let close = |m| unsafe { afx_sem_close(m) };
    t.row(
        "afx_sem_init",
        "NULL",
        unsafe { afx_sem_init(null_mut(), 1) },
        EINVAL,
    );
    t.row(
        "afx_sem_init",
        "misaligned",
        unsafe { afx_sem_init(mis, 1) },
        EINVAL,
    );
    t.row(
        "afx_sem_open",
        "NULL",
        ctor(unsafe { afx_sem_open(null_mut()) }, close),
        EINVAL,
    );
    t.row(
        "afx_sem_open",
        "misaligned",
        ctor(unsafe { afx_sem_open(mis) }, close),
        EINVAL,
    );
    t.row(
        "afx_sem_open",
        "not initialised",
        ctor(unsafe { afx_sem_open(s) }, close),
        -libc::EPROTO,
    );
    unsafe { afx_sem_close(null_mut()) };
    t.row("afx_sem_close", "NULL is a no-op", 0, 0);
    let n = null_mut();
    t.row(
        "afx_sem_acquire",
        "NULL",
        unsafe { afx_sem_acquire(n, 0) },
        EINVAL,
    );
    t.row(
        "afx_sem_tryacquire",
        "NULL",
        unsafe { afx_sem_tryacquire(n) },
        EINVAL,
    );
    t.row(
        "afx_sem_acquire_async",
        "NULL",
        unsafe { afx_sem_acquire_async(n) },
        EINVAL,
    );
    t.row(
        "afx_sem_release",
        "NULL",
        unsafe { afx_sem_release(n, 1) },
        EINVAL,
    );
    t.row("afx_sem_value", "NULL", unsafe { afx_sem_value(n) }, EINVAL);
    t.row(
        "afx_sem_eventfd",
        "NULL",
        unsafe { afx_sem_eventfd(n) },
        EINVAL,
    );
    t.row(
        "afx_sem_cancel",
        "NULL",
        unsafe { afx_sem_cancel(n) },
        EINVAL,
    );

    t.row(
        "afx_sem_init",
        "0 permits",
        unsafe { afx_sem_init(s, 0) },
        0,
    );
    let h = unsafe { afx_sem_open(s) };
    assert!(!h.is_null());
    t.row("afx_sem_value", "0", unsafe { afx_sem_value(h) }, 0);
    t.row(
        "afx_sem_tryacquire",
        "empty",
        unsafe { afx_sem_tryacquire(h) },
        -libc::EAGAIN,
    );
    t.row(
        "afx_sem_acquire",
        "empty, timeout 0",
        unsafe { afx_sem_acquire(h, 0) },
        -libc::ETIMEDOUT,
    );
    t.row(
        "afx_sem_acquire",
        "empty, timeout 1 ms",
        unsafe { afx_sem_acquire(h, 1_000_000) },
        -libc::ETIMEDOUT,
    );
    t.row(
        "afx_sem_cancel",
        "nothing pending",
        unsafe { afx_sem_cancel(h) },
        0,
    );
    t.row(
        "afx_sem_acquire_async",
        "empty",
        unsafe { afx_sem_acquire_async(h) },
        -libc::EAGAIN,
    );
    t.row(
        "afx_sem_acquire_async",
        "empty, again",
        unsafe { afx_sem_acquire_async(h) },
        -libc::EAGAIN,
    );
    t.row(
        "afx_sem_eventfd",
        "live (>= 0)",
        i64::from(unsafe { afx_sem_eventfd(h) } < 0),
        0,
    );
    t.row("afx_sem_cancel", "pending", unsafe { afx_sem_cancel(h) }, 0);
    t.row(
        "afx_sem_cancel",
        "after cancel",
        unsafe { afx_sem_cancel(h) },
        0,
    );
    t.row(
        "afx_sem_release",
        "0 permits",
        unsafe { afx_sem_release(h, 0) },
        0,
    );
    t.row("afx_sem_release", "1", unsafe { afx_sem_release(h, 1) }, 0);
    t.row(
        "afx_sem_release",
        "UINT32_MAX on top of 1",
        unsafe { afx_sem_release(h, u32::MAX) },
        -libc::EOVERFLOW,
    );
    t.row(
        "afx_sem_value",
        "unchanged by the refused release",
        unsafe { afx_sem_value(h) },
        1,
    );
    t.row(
        "afx_sem_acquire_async",
        "after cancel, a permit",
        unsafe { afx_sem_acquire_async(h) },
        0,
    );
    t.row(
        "afx_sem_init",
        "re-init with UINT32_MAX when unused",
        {
            unsafe { afx_sem_close(h) };
            unsafe { afx_sem_init(s, u32::MAX) }
        },
        0,
    );
    let h = unsafe { afx_sem_open(s) };
    assert!(!h.is_null());
    t.row(
        "afx_sem_value",
        "UINT32_MAX clamps to INT_MAX",
        unsafe { afx_sem_value(h) },
        c_int::MAX,
    );
    t.row(
        "afx_sem_release",
        "1 on top of UINT32_MAX",
        unsafe { afx_sem_release(h, 1) },
        -libc::EOVERFLOW,
    );
    unsafe { afx_sem_close(h) };
}

unsafe fn event_rows(t: &mut Table, rw: *mut u8) {
    let s = unsafe { rw.add(768) }.cast::<afx_event_state>();
    let mis = unsafe { rw.add(768 + 1) }.cast::<afx_event_state>();
    let close = |m| unsafe { afx_event_close(m) };
    t.row(
        "afx_event_init",
        "NULL",
        unsafe { afx_event_init(null_mut()) },
        EINVAL,
    );
    t.row(
        "afx_event_init",
        "misaligned",
        unsafe { afx_event_init(mis) },
        EINVAL,
    );
    t.row(
        "afx_event_open",
        "NULL",
        ctor(unsafe { afx_event_open(null_mut()) }, close),
        EINVAL,
    );
    t.row(
        "afx_event_open",
        "misaligned",
        ctor(unsafe { afx_event_open(mis) }, close),
        EINVAL,
    );
    t.row(
        "afx_event_open",
        "not initialised",
        ctor(unsafe { afx_event_open(s) }, close),
        -libc::EPROTO,
    );
    unsafe { afx_event_close(null_mut()) };
    t.row("afx_event_close", "NULL is a no-op", 0, 0);
    let n = null_mut();
    t.row(
        "afx_event_publish",
        "NULL",
        unsafe { afx_event_publish(n) },
        EINVAL,
    );
    t.row("afx_event_seq", "NULL", unsafe { afx_event_seq(n) }, EINVAL);
    t.row(
        "afx_event_wait",
        "NULL",
        unsafe { afx_event_wait(n, 0, 0) },
        EINVAL,
    );
    t.row(
        "afx_event_wait_async",
        "NULL",
        unsafe { afx_event_wait_async(n, 0) },
        EINVAL,
    );
    t.row(
        "afx_event_eventfd",
        "NULL",
        unsafe { afx_event_eventfd(n) },
        EINVAL,
    );
    t.row(
        "afx_event_cancel",
        "NULL",
        unsafe { afx_event_cancel(n) },
        EINVAL,
    );

    t.row("afx_event_init", "valid", unsafe { afx_event_init(s) }, 0);
    let h = unsafe { afx_event_open(s) };
    assert!(!h.is_null());
    t.row("afx_event_seq", "fresh", unsafe { afx_event_seq(h) }, 0);
    t.row(
        "afx_event_wait",
        "unchanged, timeout 0",
        unsafe { afx_event_wait(h, 0, 0) },
        -libc::ETIMEDOUT,
    );
    t.row(
        "afx_event_wait",
        "unchanged, timeout 1 ms",
        unsafe { afx_event_wait(h, 0, 1_000_000) },
        -libc::ETIMEDOUT,
    );
    t.row(
        "afx_event_cancel",
        "nothing pending",
        unsafe { afx_event_cancel(h) },
        0,
    );
    t.row(
        "afx_event_wait_async",
        "unchanged",
        unsafe { afx_event_wait_async(h, 0) },
        -libc::EAGAIN,
    );
    t.row(
        "afx_event_wait_async",
        "unchanged, again",
        unsafe { afx_event_wait_async(h, 0) },
        -libc::EAGAIN,
    );
    t.row(
        "afx_event_eventfd",
        "live (>= 0)",
        i64::from(unsafe { afx_event_eventfd(h) } < 0),
        0,
    );
    t.row(
        "afx_event_cancel",
        "pending",
        unsafe { afx_event_cancel(h) },
        0,
    );
    t.row(
        "afx_event_cancel",
        "after cancel",
        unsafe { afx_event_cancel(h) },
        0,
    );
    t.row(
        "afx_event_publish",
        "first",
        unsafe { afx_event_publish(h) },
        1,
    );
    t.row(
        "afx_event_wait",
        "changed",
        unsafe { afx_event_wait(h, 0, -1) },
        1,
    );
    t.row(
        "afx_event_wait",
        "last_seen out of range",
        unsafe { afx_event_wait(h, u32::MAX, -1) },
        1,
    );
    t.row(
        "afx_event_wait_async",
        "changed, after cancel",
        unsafe { afx_event_wait_async(h, 0) },
        1,
    );
    unsafe { afx_event_close(h) };
}

/// The `afx_*_open` constructors on aligned but unmapped or unreadable
/// state: `EFAULT`, as for `afx_new` (before, they read it and died of
/// SIGSEGV). Also a state whose first word is readable but whose end lies
/// on a `PROT_NONE` page.
unsafe fn unmapped_open_rows(t: &mut Table, none: *mut u8) {
    /// `align`: what the function requires (the channel: 64).
    fn rows<T>(
        t: &mut Table,
        func: &'static str,
        align: usize,
        none: *mut u8,
        open: impl Fn(*mut T) -> c_int,
    ) {
        for a in NEVER_MAPPED.into_iter().filter(|a| a % align == 0) {
            t.row(
                func,
                format!("unmapped {a:#x}"),
                open(a as *mut T),
                -libc::EFAULT,
            );
        }
        t.row(func, "PROT_NONE", open(none.cast()), -libc::EFAULT);
        // Two pages, the second PROT_NONE; the state ends inside it.
        let size = std::mem::size_of::<T>();
        if size > align {
            // SAFETY: a new mapping, then its second page made inaccessible.
            let two = unsafe {
                libc::mmap(
                    null_mut(),
                    2 * PAGE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(two, libc::MAP_FAILED);
            let two = two.cast::<u8>();
            // SAFETY: the second page of our mapping.
            assert_eq!(
                unsafe { libc::mprotect(two.add(PAGE).cast(), PAGE, libc::PROT_NONE) },
                0
            );
            // SAFETY: inside the first page; aligned; ends past it.
            let p = unsafe { two.add(PAGE - align) }.cast::<T>();
            t.row(
                func,
                "first word readable, end on a PROT_NONE page",
                open(p),
                -libc::EFAULT,
            );
            // SAFETY: our mapping.
            unsafe { libc::munmap(two.cast(), 2 * PAGE) };
        }
    }
    let align = std::mem::align_of::<afx_mutex_state>();
    rows(
        t,
        "afx_mutex_open",
        align,
        none,
        |s: *mut afx_mutex_state| {
            ctor(unsafe { afx_mutex_open(s) }, |h| unsafe {
                afx_mutex_close(h)
            })
        },
    );
    let align = std::mem::align_of::<afx_sem_state>();
    rows(t, "afx_sem_open", align, none, |s: *mut afx_sem_state| {
        ctor(unsafe { afx_sem_open(s) }, |h| unsafe { afx_sem_close(h) })
    });
    let align = std::mem::align_of::<afx_event_state>();
    rows(
        t,
        "afx_event_open",
        align,
        none,
        |s: *mut afx_event_state| {
            ctor(unsafe { afx_event_open(s) }, |h| unsafe {
                afx_event_close(h)
            })
        },
    );
    for role in [AFX_CHAN_SENDER, AFX_CHAN_RECEIVER] {
        rows(t, "afx_chan_open", 64, none, |h: *mut afx_chan_header| {
            ctor(unsafe { afx_chan_open(h, role) }, |c| unsafe {
                afx_chan_close(c)
            })
        });
    }
}

unsafe fn chan_rows(t: &mut Table) {
    const BYTES: usize = 2 * PAGE;
    let mem = {
        // SAFETY: a new mapping.
        let p = unsafe {
            libc::mmap(
                null_mut(),
                BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        p.cast::<u8>()
    };
    let h = mem.cast::<afx_chan_header>();
    let mis = unsafe { mem.add(8) }.cast::<afx_chan_header>();
    for (frame, cap) in [
        (0, 4),
        (8, 0),
        (8, 3),
        (8, 6),
        (u32::MAX, 1),
        (u32::MAX - 10, 2),
        (8, 1 << 31),
        (8, u32::MAX),
    ] {
        t.row(
            "afx_chan_size",
            format!("frame {frame}, capacity {cap}"),
            afx_chan_size(frame, cap) as i64,
            0,
        );
        t.row(
            "afx_chan_init",
            format!("frame {frame}, capacity {cap}"),
            unsafe { afx_chan_init(h, frame, cap) },
            EINVAL,
        );
    }
    t.row(
        "afx_chan_size",
        "frame 8, capacity 2 (192 + 2 * 16)",
        afx_chan_size(8, 2) as i64,
        224,
    );
    t.row(
        "afx_chan_init",
        "NULL",
        unsafe { afx_chan_init(null_mut(), 8, 2) },
        EINVAL,
    );
    t.row(
        "afx_chan_init",
        "misaligned",
        unsafe { afx_chan_init(mis, 8, 2) },
        EINVAL,
    );
    let close = |c| unsafe { afx_chan_close(c) };
    for role in [AFX_CHAN_SENDER, AFX_CHAN_RECEIVER] {
        t.row(
            "afx_chan_open",
            format!("NULL, role {role}"),
            ctor(unsafe { afx_chan_open(null_mut(), role) }, close),
            EINVAL,
        );
        t.row(
            "afx_chan_open",
            format!("misaligned, role {role}"),
            ctor(unsafe { afx_chan_open(mis, role) }, close),
            EINVAL,
        );
        t.row(
            "afx_chan_open",
            format!("not initialised, role {role}"),
            ctor(unsafe { afx_chan_open(h, role) }, close),
            -libc::EPROTO,
        );
    }
    unsafe { afx_chan_close(null_mut()) };
    t.row("afx_chan_close", "NULL is a no-op", 0, 0);
    let mut buf = [0u8; 64];
    let b = buf.as_mut_ptr().cast::<c_void>();
    let n = null_mut();
    t.row(
        "afx_chan_send",
        "NULL",
        unsafe { afx_chan_send(n, b, 1, 0) },
        EINVAL,
    );
    t.row(
        "afx_chan_try_send",
        "NULL",
        unsafe { afx_chan_try_send(n, b, 1) },
        EINVAL,
    );
    t.row(
        "afx_chan_send_async",
        "NULL",
        unsafe { afx_chan_send_async(n, b, 1) },
        EINVAL,
    );
    t.row(
        "afx_chan_recv",
        "NULL",
        unsafe { afx_chan_recv(n, b, 64, 0) },
        EINVAL,
    );
    t.row(
        "afx_chan_try_recv",
        "NULL",
        unsafe { afx_chan_try_recv(n, b, 64) },
        EINVAL,
    );
    t.row(
        "afx_chan_recv_async",
        "NULL",
        unsafe { afx_chan_recv_async(n, b, 64) },
        EINVAL,
    );
    t.row(
        "afx_chan_eventfd",
        "NULL",
        unsafe { afx_chan_eventfd(n) },
        EINVAL,
    );
    t.row(
        "afx_chan_cancel",
        "NULL",
        unsafe { afx_chan_cancel(n) },
        EINVAL,
    );

    t.row(
        "afx_chan_init",
        "frame 8, capacity 2",
        unsafe { afx_chan_init(h, 8, 2) },
        0,
    );
    for role in [2, -1, c_int::MAX, c_int::MIN] {
        t.row(
            "afx_chan_open",
            format!("unknown role {role}"),
            ctor(unsafe { afx_chan_open(h, role) }, close),
            EINVAL,
        );
    }
    let tx = unsafe { afx_chan_open(h, AFX_CHAN_SENDER) };
    let rx = unsafe { afx_chan_open(h, AFX_CHAN_RECEIVER) };
    assert!(!tx.is_null() && !rx.is_null());
    let cb = b.cast_const();
    t.row(
        "afx_chan_send",
        "on the receiver",
        unsafe { afx_chan_send(rx, cb, 1, 0) },
        EINVAL,
    );
    t.row(
        "afx_chan_try_send",
        "on the receiver",
        unsafe { afx_chan_try_send(rx, cb, 1) },
        EINVAL,
    );
    t.row(
        "afx_chan_send_async",
        "on the receiver",
        unsafe { afx_chan_send_async(rx, cb, 1) },
        EINVAL,
    );
    t.row(
        "afx_chan_recv",
        "on the sender",
        unsafe { afx_chan_recv(tx, b, 64, 0) },
        EINVAL,
    );
    t.row(
        "afx_chan_try_recv",
        "on the sender",
        unsafe { afx_chan_try_recv(tx, b, 64) },
        EINVAL,
    );
    t.row(
        "afx_chan_recv_async",
        "on the sender",
        unsafe { afx_chan_recv_async(tx, b, 64) },
        EINVAL,
    );
    t.row(
        "afx_chan_send",
        "NULL buffer, len 1",
        unsafe { afx_chan_send(tx, std::ptr::null(), 1, 0) },
        EINVAL,
    );
    t.row(
        "afx_chan_recv",
        "NULL buffer, cap 1",
        unsafe { afx_chan_recv(rx, n.cast(), 1, 0) },
        EINVAL,
    );
    t.row(
        "afx_chan_send",
        "frame too long",
        unsafe { afx_chan_send(tx, cb, 9, 0) },
        -libc::EMSGSIZE,
    );
    t.row(
        "afx_chan_try_send",
        "frame too long",
        unsafe { afx_chan_try_send(tx, cb, 64) },
        -libc::EMSGSIZE,
    );
    t.row(
        "afx_chan_send_async",
        "frame too long",
        unsafe { afx_chan_send_async(tx, cb, u32::MAX) },
        -libc::EMSGSIZE,
    );
    t.row(
        "afx_chan_try_recv",
        "empty",
        unsafe { afx_chan_try_recv(rx, b, 64) },
        -libc::EAGAIN,
    );
    t.row(
        "afx_chan_recv",
        "empty, timeout 0",
        unsafe { afx_chan_recv(rx, b, 64, 0) },
        -libc::ETIMEDOUT,
    );
    t.row(
        "afx_chan_recv",
        "empty, timeout 1 ms",
        unsafe { afx_chan_recv(rx, b, 64, 1_000_000) },
        -libc::ETIMEDOUT,
    );
    t.row(
        "afx_chan_recv_async",
        "empty",
        unsafe { afx_chan_recv_async(rx, b, 64) },
        -libc::EAGAIN,
    );
    t.row(
        "afx_chan_recv_async",
        "empty, again",
        unsafe { afx_chan_recv_async(rx, b, 64) },
        -libc::EAGAIN,
    );
    t.row(
        "afx_chan_cancel",
        "pending receive",
        unsafe { afx_chan_cancel(rx) },
        0,
    );
    t.row(
        "afx_chan_cancel",
        "after cancel",
        unsafe { afx_chan_cancel(rx) },
        0,
    );
    t.row(
        "afx_chan_send",
        "NULL buffer, len 0",
        unsafe { afx_chan_send(tx, std::ptr::null(), 0, 0) },
        0,
    );
    t.row(
        "afx_chan_try_send",
        "8 bytes",
        unsafe { afx_chan_try_send(tx, cb, 8) },
        0,
    );
    t.row(
        "afx_chan_try_send",
        "full",
        unsafe { afx_chan_try_send(tx, cb, 1) },
        -libc::EAGAIN,
    );
    t.row(
        "afx_chan_send",
        "full, timeout 0",
        unsafe { afx_chan_send(tx, cb, 1, 0) },
        -libc::ETIMEDOUT,
    );
    t.row(
        "afx_chan_send",
        "full, timeout 1 ms",
        unsafe { afx_chan_send(tx, cb, 1, 1_000_000) },
        -libc::ETIMEDOUT,
    );
    t.row(
        "afx_chan_send_async",
        "full",
        unsafe { afx_chan_send_async(tx, cb, 1) },
        -libc::EAGAIN,
    );
    t.row(
        "afx_chan_cancel",
        "pending send",
        unsafe { afx_chan_cancel(tx) },
        0,
    );
    t.row(
        "afx_chan_eventfd",
        "live (>= 0)",
        i64::from(unsafe { afx_chan_eventfd(tx) } < 0),
        0,
    );
    t.row(
        "afx_chan_recv_async",
        "after cancel, the empty frame",
        unsafe { afx_chan_recv_async(rx, n.cast(), 0) },
        0,
    );
    t.row(
        "afx_chan_try_recv",
        "cap too small (frame stays queued)",
        unsafe { afx_chan_try_recv(rx, b, 4) },
        -libc::EMSGSIZE,
    );
    t.row(
        "afx_chan_recv",
        "cap 0 for an 8-byte frame",
        unsafe { afx_chan_recv(rx, n.cast(), 0, 0) },
        -libc::EMSGSIZE,
    );
    t.row(
        "afx_chan_recv",
        "the 8-byte frame",
        unsafe { afx_chan_recv(rx, b, 64, 0) },
        8,
    );
    // A corrupt frame length (a broken peer): refused, never read past.
    t.row(
        "afx_chan_try_send",
        "one more",
        unsafe { afx_chan_try_send(tx, cb, 4) },
        0,
    );
    let ring = unsafe { mem.add(192) }.cast::<AtomicU32>();
    for k in 0..2 {
        unsafe { &*ring.add(4 * k) }.store(u32::MAX, Ordering::SeqCst);
    }
    t.row(
        "afx_chan_try_recv",
        "corrupt frame length",
        unsafe { afx_chan_try_recv(rx, b, 64) },
        -libc::EPROTO,
    );
    unsafe {
        afx_chan_close(tx);
        afx_chan_close(rx);
        libc::munmap(mem.cast(), BYTES);
    }
}
