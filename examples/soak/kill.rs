//! Peer-death stress, after glibc's tst-robust8: waiters, wakers and
//! cancellers in separate processes on one futex word; one of them is
//! SIGKILLed at a random moment; the survivors must keep working, wake
//! counts must stay exact, and no kernel waiter may outlive its process.
//!
//! One round:
//! 1. fork 2–3 waiters (async `wait_async`, blocking `wait`, C
//!    `afx_wait_async` + poll, `EventFdFutex`), 1–2 wakers (`wake(1)`,
//!    `afx_wake`, raw `FUTEX_WAKE`) and 1–3 cancellers looping arm → blind
//!    pause → cancel (dropped future, `select!`, `afx_cancel`, `afx_free`,
//!    `EventFdFutex::cancel`). The word stays 0, so every completion is a
//!    wake (or a spurious completion);
//! 2. after a random delay (0–8 ms), SIGKILL one child;
//! 3. every survivor must make progress: each waiter is woken again, each
//!    waker and canceller completes another cycle;
//! 4. stop the wakers, then the cancellers (each finishes its cancel,
//!    forwarding a consumed wake); the kernel waiters on the word must come
//!    down to exactly the live waiters (the dead one's wait is gone);
//! 5. `wake(1)` returns 1 and wakes exactly one waiter (which leaves), once
//!    per live waiter; then `wake(all)` returns 0 and no kernel waiter is
//!    left.

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use asyncfutex::{AsyncFutex, BackendKind, EventFdFutex, SharedMemory, WaitStatus};

use crate::{
    fork_child, kernel_waiters, kill9, poll_in, raw_wake, reap, reap_within, word, Afx, Exit,
    Options, Rng,
};

// Layout, in 32-bit word indices.
const F: usize = 0; // the futex word, alone on its cache line
const STOP_WAKERS: usize = 16;
const STOP_CANCEL: usize = 17;
const SETTLE: usize = 18; // waiters leave after their next completion
const READY: usize = 19;
const FAILED: usize = 20;
const COUNT: usize = 32; // + child slot: completions / wakes / cycles
const MAX_CHILDREN: usize = 16;

type Res<T = ()> = Result<T, String>;

fn io_err<T>(what: &str, r: io::Result<T>) -> Res<T> {
    r.map_err(|e| format!("{what}: {e}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Waiter(u8),
    Waker(u8),
    Canceller(u8),
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Waiter(0) => "waiter/async",
            Role::Waiter(1) => "waiter/blocking",
            Role::Waiter(2) => "waiter/afx",
            Role::Waiter(_) => "waiter/eventfd",
            Role::Waker(0) => "waker/rust",
            Role::Waker(1) => "waker/afx",
            Role::Waker(_) => "waker/raw",
            Role::Canceller(0) => "canceller/drop",
            Role::Canceller(1) => "canceller/select",
            Role::Canceller(2) => "canceller/afx_cancel",
            Role::Canceller(3) => "canceller/afx_free",
            Role::Canceller(_) => "canceller/efd",
        }
    }
}

struct Child {
    slot: usize,
    role: Role,
    pid: libc::pid_t,
    alive: bool,
}

fn ctl(mem: &SharedMemory, i: usize) -> &AtomicU32 {
    word(mem, i)
}

fn current_rt() -> Res<tokio::runtime::Runtime> {
    io_err(
        "tokio runtime",
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    )
}

// ---------------------------------------------------------------------------
// Children.

fn waiter(mem: &Arc<SharedMemory>, slot: usize, kind: u8) -> Res {
    let count = word(mem, COUNT + slot);
    let settle = ctl(mem, SETTLE);
    let done = || {
        count.fetch_add(1, SeqCst);
        settle.load(SeqCst) != 0
    };
    match kind {
        0 => {
            let f = io_err("futex", mem.futex(F))?;
            let rt = current_rt()?;
            ctl(mem, READY).fetch_add(1, SeqCst);
            rt.block_on(async {
                loop {
                    io_err("wait_async", f.wait_async(0).await)?;
                    if done() {
                        return Ok(());
                    }
                }
            })
        }
        1 => {
            let f = io_err("futex", mem.futex(F))?;
            ctl(mem, READY).fetch_add(1, SeqCst);
            loop {
                if io_err("wait", f.wait(0, None))? == WaitStatus::TimedOut {
                    return Err("wait(None) timed out".to_owned());
                }
                if done() {
                    return Ok(());
                }
            }
        }
        2 => {
            let h = io_err("afx_new", Afx::new(mem, F))?;
            ctl(mem, READY).fetch_add(1, SeqCst);
            loop {
                io_err("afx_wait_async", h.arm(0))?;
                loop {
                    io_err("poll", poll_in(h.eventfd(), None))?;
                    if io_err("afx_ack", h.ack())? {
                        break;
                    }
                }
                if done() {
                    return Ok(());
                }
            }
        }
        _ => {
            let e = io_err("EventFdFutex", mem.futex(F).and_then(EventFdFutex::new))?;
            ctl(mem, READY).fetch_add(1, SeqCst);
            loop {
                io_err("EventFdFutex::arm", e.arm(0))?;
                loop {
                    io_err("poll", poll_in(e.as_raw_fd(), None))?;
                    if io_err("EventFdFutex::ack", e.ack())? {
                        break;
                    }
                }
                if done() {
                    return Ok(());
                }
            }
        }
    }
}

fn waker(mem: &Arc<SharedMemory>, slot: usize, kind: u8, mut rng: Rng) -> Res {
    let f = io_err("futex", mem.futex(F))?;
    let h = io_err("afx_new", Afx::new(mem, F))?;
    ctl(mem, READY).fetch_add(1, SeqCst);
    while ctl(mem, STOP_WAKERS).load(SeqCst) == 0 {
        match kind {
            0 => io_err("wake", f.wake(1))?,
            1 => io_err("afx_wake", h.wake(1))?,
            _ => io_err("FUTEX_WAKE", raw_wake(f.word(), 1))?,
        };
        word(mem, COUNT + slot).fetch_add(1, SeqCst);
        std::thread::sleep(Duration::from_micros(rng.below(300)));
    }
    Ok(())
}

fn canceller(mem: &Arc<SharedMemory>, slot: usize, kind: u8, mut rng: Rng) -> Res {
    let f = io_err("futex", mem.futex(F))?;
    let h = io_err("afx_new", Afx::new(mem, F))?;
    let e = io_err("EventFdFutex", mem.futex(F).and_then(EventFdFutex::new))?;
    let rt = current_rt()?;
    ctl(mem, READY).fetch_add(1, SeqCst);
    let count = word(mem, COUNT + slot);
    while ctl(mem, STOP_CANCEL).load(SeqCst) == 0 {
        let pause = Duration::from_micros(rng.below(300));
        match kind {
            0 => rt.block_on(async {
                // Arm, then drop without looking: a wake it consumed must be
                // forwarded by the library.
                let mut fut = Box::pin(f.wait_async(0));
                let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
                if let Poll::Ready(r) = first {
                    io_err("wait_async", r)?;
                    io_err("wake", f.wake(1))?; // polite: pass it on
                } else {
                    std::thread::sleep(pause);
                }
                Ok::<_, String>(())
            })?,
            1 => rt.block_on(async {
                let yields = rng.below(16);
                tokio::select! {
                    r = f.wait_async(0) => {
                        io_err("wait_async", r)?;
                        io_err("wake", f.wake(1))?; // polite: pass it on
                    }
                    () = async {
                        for _ in 0..yields {
                            tokio::task::yield_now().await;
                        }
                    } => {}
                }
                Ok::<_, String>(())
            })?,
            2 => {
                io_err("afx_wait_async", h.arm(0))?;
                std::thread::sleep(pause);
                io_err("afx_cancel", h.cancel())?;
            }
            3 => {
                let h2 = io_err("afx_new", Afx::new(mem, F))?;
                io_err("afx_wait_async", h2.arm(0))?;
                std::thread::sleep(pause);
                drop(h2); // afx_free with the wait armed
            }
            _ => {
                io_err("EventFdFutex::arm", e.arm(0))?;
                std::thread::sleep(pause);
                e.cancel();
            }
        }
        count.fetch_add(1, SeqCst);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The parent.

#[derive(Default)]
struct Tally {
    kills: [u64; 3],
    post_kill_wakes: u64,
    settle_wakes: u64,
    settle_max: Duration,
    settle_total: Duration,
}

fn dump(mem: &SharedMemory, children: &[Child]) {
    println!("--- peer-death round state ---");
    for c in children {
        println!(
            "  slot {} {:<22} pid {:>7} {} count {}",
            c.slot,
            c.role.name(),
            c.pid,
            if c.alive { "alive" } else { "gone " },
            word(mem, COUNT + c.slot).load(SeqCst)
        );
    }
    println!(
        "  word {} kernel waiters {}; stop_wakers={} stop_cancel={} settle={} ready={} failed={}",
        word(mem, F).load(SeqCst),
        kernel_waiters(word(mem, F)),
        ctl(mem, STOP_WAKERS).load(SeqCst),
        ctl(mem, STOP_CANCEL).load(SeqCst),
        ctl(mem, SETTLE).load(SeqCst),
        ctl(mem, READY).load(SeqCst),
        ctl(mem, FAILED).load(SeqCst),
    );
}

/// Polls `cond` every 100 µs until true, or fails after `limit`; a failed
/// child, or one that left early (when `children` are watched), fails at
/// once.
fn wait_for(
    what: &str,
    limit: Duration,
    mem: &SharedMemory,
    children: &mut [Child],
    watch: bool,
    mut cond: impl FnMut() -> bool,
) -> Res {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return Ok(());
        }
        if ctl(mem, FAILED).load(SeqCst) != 0 {
            return Err(format!("{what}: a child failed (its error is above)"));
        }
        for c in children.iter_mut().filter(|c| watch && c.alive) {
            if let Some(exit) = io_err("waitpid", reap(c.pid, false))? {
                c.alive = false;
                return Err(format!(
                    "{what}: {} (pid {}) left early: {exit}",
                    c.role.name(),
                    c.pid
                ));
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("{what}: not within {} s", limit.as_secs()));
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// Reaps the live children matching `pick`; each must exit 0 within `limit`.
fn reap_all(children: &mut [Child], limit: Duration, pick: impl Fn(Role) -> bool) -> Res {
    for c in children.iter_mut().filter(|c| c.alive && pick(c.role)) {
        let exit = io_err("waitpid", reap_within(c.pid, limit))?;
        c.alive = false;
        match exit {
            Some(Exit::Code(0)) => {}
            Some(other) => {
                return Err(format!(
                    "{} (pid {}) ended with {other}",
                    c.role.name(),
                    c.pid
                ))
            }
            None => {
                kill9(c.pid);
                let _ = reap(c.pid, true);
                return Err(format!(
                    "{} (pid {}) did not leave within {} s",
                    c.role.name(),
                    c.pid,
                    limit.as_secs()
                ));
            }
        }
    }
    Ok(())
}

fn round(
    mem: &Arc<SharedMemory>,
    parent: &AsyncFutex,
    n: u32,
    opts: &Options,
    rng: &mut Rng,
    tally: &mut Tally,
    children: &mut Vec<Child>,
) -> Res {
    let limit = opts.stall;
    let w = word(mem, F);
    for i in 0..64 {
        word(mem, i).store(0, SeqCst);
    }
    let left = kernel_waiters(w);
    if left != 0 {
        return Err(format!(
            "round {n}: {left} stale kernel waiters before the round"
        ));
    }
    let mut roles = Vec::new();
    for _ in 0..2 + rng.below(2) {
        roles.push(Role::Waiter(rng.below(4) as u8));
    }
    for _ in 0..1 + rng.below(2) {
        roles.push(Role::Waker(rng.below(3) as u8));
    }
    for _ in 0..1 + rng.below(3) {
        roles.push(Role::Canceller(rng.below(5) as u8));
    }
    assert!(roles.len() <= MAX_CHILDREN);
    for (slot, &role) in roles.iter().enumerate() {
        let m = Arc::clone(mem);
        let crng = Rng::new(opts.seed, u64::from(n) << 8 | slot as u64);
        let pid = fork_child(move || {
            let r = match role {
                Role::Waiter(k) => waiter(&m, slot, k),
                Role::Waker(k) => waker(&m, slot, k, crng),
                Role::Canceller(k) => canceller(&m, slot, k, crng),
            };
            match r {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("kill round {n}: {} (slot {slot}): {e}", role.name());
                    ctl(&m, FAILED).store(1, SeqCst);
                    1
                }
            }
        });
        let pid = io_err("fork", pid)?;
        children.push(Child {
            slot,
            role,
            pid,
            alive: true,
        });
    }
    let total = roles.len() as u32;
    wait_for("children start", limit, mem, children, true, || {
        ctl(mem, READY).load(SeqCst) == total
    })?;

    // The kill, at a random moment.
    std::thread::sleep(Duration::from_micros(rng.below(8_000)));
    let victim = rng.below(children.len() as u64) as usize;
    let v = &mut children[victim];
    kill9(v.pid);
    let exit = io_err("waitpid", reap(v.pid, true))?;
    v.alive = false;
    match exit {
        Some(Exit::Signal(libc::SIGKILL)) => {}
        other => {
            return Err(format!(
                "victim {} (pid {}) ended with {other:?} before the kill",
                v.role.name(),
                v.pid
            ))
        }
    }
    tally.kills[match v.role {
        Role::Waiter(_) => 0,
        Role::Waker(_) => 1,
        Role::Canceller(_) => 2,
    }] += 1;

    // Survivors keep working: each makes progress after the kill. The
    // parent wakes too, in case the victim was the only waker.
    let snap: Vec<u32> = children
        .iter()
        .map(|c| word(mem, COUNT + c.slot).load(SeqCst))
        .collect();
    let live: Vec<(usize, usize)> = children
        .iter()
        .enumerate()
        .filter(|(_, c)| c.alive)
        .map(|(i, c)| (i, c.slot))
        .collect();
    let mut post = 0;
    wait_for(
        "every survivor makes progress after the kill",
        limit,
        mem,
        children,
        true,
        || {
            if let Ok(k) = parent.wake(1) {
                post += u64::from(k);
            }
            live.iter()
                .all(|&(i, slot)| word(mem, COUNT + slot).load(SeqCst) != snap[i])
        },
    )?;
    tally.post_kill_wakes += post;

    // Quiesce: wakers, then cancellers (each forwards what it consumed).
    ctl(mem, STOP_WAKERS).store(1, SeqCst);
    reap_all(children, limit, |r| matches!(r, Role::Waker(_)))?;
    ctl(mem, STOP_CANCEL).store(1, SeqCst);
    reap_all(children, limit, |r| matches!(r, Role::Canceller(_)))?;

    // No stale waiter: exactly the live waiters stay queued.
    let waiters: Vec<usize> = children
        .iter()
        .filter(|c| c.alive && matches!(c.role, Role::Waiter(_)))
        .map(|c| c.slot)
        .collect();
    let t0 = Instant::now();
    let want = waiters.len() as u32;
    let mut seen = 0;
    let settled = wait_for("settle", limit, mem, children, true, || {
        seen = kernel_waiters(w);
        seen == want
    });
    if let Err(e) = settled {
        return Err(format!(
            "{e}: {seen} kernel waiters queued, {want} live waiters (stale waiter)"
        ));
    }
    let took = t0.elapsed();
    tally.settle_max = tally.settle_max.max(took);
    tally.settle_total += took;

    // Exact wake counts: each wake(1) wakes exactly one waiter, which leaves.
    ctl(mem, SETTLE).store(1, SeqCst);
    let sum = || -> u32 {
        waiters
            .iter()
            .map(|&s| word(mem, COUNT + s).load(SeqCst))
            .sum()
    };
    let base = sum();
    for k in 0..want {
        let now = sum();
        if now != base + k {
            return Err(format!(
                "after {k} wake(1) calls the waiters completed {} times: spurious completion",
                now - base
            ));
        }
        let woken = io_err("wake(1)", parent.wake(1))?;
        tally.settle_wakes += 1;
        if woken != 1 {
            return Err(format!(
                "wake(1) returned {woken} with {} waiters left (kernel sees {})",
                want - k,
                kernel_waiters(w)
            ));
        }
        wait_for(
            "the woken waiter reports",
            limit,
            mem,
            children,
            false,
            || sum() > base + k,
        )?;
    }
    reap_all(children, limit, |r| matches!(r, Role::Waiter(_)))?;
    if sum() != base + want {
        return Err(format!(
            "{want} wakes but {} completions: spurious completion",
            sum() - base
        ));
    }
    let stale = io_err("wake(all)", parent.wake(u32::MAX))?;
    let queued = kernel_waiters(w);
    if stale != 0 || queued != 0 {
        return Err(format!(
            "all waiters gone, but wake(all) woke {stale} and {queued} kernel waiters \
             remain: stale waiter"
        ));
    }
    children.clear();
    Ok(())
}

/// Runs the peer-death stress.
pub fn run(opts: &Options, backend: BackendKind) -> Res {
    let mem = Arc::new(io_err("shared memory", SharedMemory::anonymous(4096))?);
    let parent = io_err("futex", mem.futex(F))?;
    println!(
        "kill: backend {backend}, {} rounds of waiters + wakers + cancellers with one \
         SIGKILLed at random, stall bound {} s, seed {}",
        opts.rounds,
        opts.stall.as_secs(),
        opts.seed
    );
    let mut rng = Rng::new(opts.seed, 0x6b696c6c);
    let mut tally = Tally::default();
    let start = Instant::now();
    let mut children = Vec::new();
    for n in 0..opts.rounds {
        if let Err(e) = round(&mem, &parent, n, opts, &mut rng, &mut tally, &mut children) {
            dump(&mem, &children);
            for c in children.iter().filter(|c| c.alive) {
                kill9(c.pid);
                let _ = reap(c.pid, true);
            }
            println!(
                "KILL FAILED backend={backend} round={n} kills={} stale=?: {e}",
                tally.kills.iter().sum::<u64>()
            );
            return Err(format!("round {n}: {e}"));
        }
        if !opts.quiet && (n + 1) % 25 == 0 {
            println!(
                "  {} rounds in {:.1} s",
                n + 1,
                start.elapsed().as_secs_f64()
            );
        }
    }
    let [waiter, waker, canceller] = tally.kills;
    println!(
        "  survivors: {} wakes from the parent after the kills; {} exact wake(1) checks; \
         kernel waiters settled to the live ones in {:.2} ms on average, {:.2} ms at most",
        tally.post_kill_wakes,
        tally.settle_wakes,
        tally.settle_total.as_secs_f64() * 1e3 / f64::from(opts.rounds),
        tally.settle_max.as_secs_f64() * 1e3
    );
    println!(
        "KILL OK backend={backend} rounds={} seconds={:.1} kills={} (waiter={waiter} \
         waker={waker} canceller={canceller}) exact_wakes={} stale=0",
        opts.rounds,
        start.elapsed().as_secs_f64(),
        waiter + waker + canceller,
        tally.settle_wakes
    );
    Ok(())
}
