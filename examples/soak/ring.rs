//! The lost-wakeup soak: one token per ring of futex words, real receivers
//! that wait without timeouts, decoys that are cancelled at random, and the
//! parent as watchdog. See the top of `soak.rs`.

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use asyncfutex::{AsyncFutex, BackendKind, EventFdFutex, SharedMemory, WaitStatus};

use crate::{
    counter, fork_child, kernel_waiters, kill9, poll_in, raw_wake, reap, word, Afx, Exit, Options,
    Rng,
};

/// Most (general) worker processes.
pub const MAX_PROCS: usize = 32;
/// Most lone receivers (and lone decoy processes).
pub const MAX_LONE: usize = 8;
/// Slots for per-process statistics.
const STAT_PROCS: usize = MAX_PROCS + 2 * MAX_LONE;
/// Most futex words.
pub const MAX_WORDS: usize = 1024;

// Layout of the shared memory, in 32-bit word indices.
const CTRL_STOP: usize = 0; // 1: retire tokens instead of passing them on
const CTRL_SHUTDOWN: usize = 1; // 1: everybody leaves
const CTRL_RETIRED: usize = 2; // tokens retired so far
const CTRL_READY: usize = 3; // worker processes that started every agent
const CTRL_FAILED: usize = 4; // 1: an agent failed (its error is on stderr)
const CTRL_SABOTAGE: usize = 5; // 1: decoys swallow wakes (self-test)
const WORDS: usize = 64; // the futex words of the rings
const CONSUMED: usize = WORDS + MAX_WORDS; // last value each receiver took
const WAIT_ON: usize = CONSUMED + MAX_WORDS; // expected value of its wait
const RSTATE: usize = WAIT_ON + MAX_WORDS; // receiver state, see `RS_*`
const RETIRED: usize = RSTATE + MAX_WORDS; // 1: the token retired here
const U32_END: usize = RETIRED + MAX_WORDS;
/// First 8-byte slot of the per-process statistics.
const STATS_SLOT: usize = (U32_END * 4).div_ceil(8);
const NSTATS: usize = 24;
const SHM_LEN: usize = ((STATS_SLOT + STAT_PROCS * NSTATS) * 8).next_multiple_of(4096);

const RS_RUNNING: u32 = 0;
const RS_WAITING: u32 = 1;
const RS_EXITED: u32 = 2;

/// Per-process counters (64-bit, in shared memory).
#[derive(Debug, Clone, Copy)]
enum Stat {
    /// Tokens taken by real receivers.
    Handoffs,
    /// `wake(1)` calls handing a token over (library and raw).
    WakeCalls,
    /// What those wakes returned (waiters woken).
    Woken,
    /// Handoff wakes made with a raw `futex(FUTEX_WAKE)`.
    RawWakes,
    /// Real receivers' waits that completed.
    RecvCompletions,
    /// ... of which found no token (woken by a decoy's or the library's
    /// forward, a stale expected value, or spurious).
    RecvEmpty,
    /// Decoy waits armed.
    DecoyArms,
    /// Decoy waits that completed (woken or changed word).
    DecoyCompletions,
    /// Decoy completions that passed the wake on (the receiver had not yet
    /// taken its token).
    DecoyForwards,
    /// Decoys cancelled by `tokio::select!` against a timer or yields.
    Select,
    /// Decoy futures dropped without being looked at.
    Drop,
    /// C `afx_cancel` of an armed wait.
    AfxCancel,
    /// C `afx_free` of a handle with an armed wait.
    AfxFree,
    /// `EventFdFutex::cancel` of an armed wait.
    EfdCancel,
    /// Drop of an `EventFdFutex` with an armed wait.
    EfdDrop,
    /// Timed blocking decoy waits that timed out.
    Timeout,
    /// Cancelled decoys during whose wait a token reached their word (the
    /// wake may have been theirs: the library had to forward it).
    Contended,
}

/// Which API a real receiver uses (and sends its handoffs with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A tokio task awaiting `AsyncFutex::wait_async`.
    Async,
    /// A thread in blocking `AsyncFutex::wait(v, None)`; sends every fourth
    /// handoff with a raw `futex(FUTEX_WAKE)`.
    Blocking,
    /// A thread with a C handle: `afx_wait_async`, `poll` on `afx_eventfd`,
    /// `afx_ack`; sends with `afx_wake`.
    CApi,
    /// A thread polling an `EventFdFutex`.
    EventFd,
}

const KINDS: [Kind; 4] = [Kind::Async, Kind::Blocking, Kind::CApi, Kind::EventFd];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Async => "async",
            Kind::Blocking => "blocking",
            Kind::CApi => "c-afx",
            Kind::EventFd => "eventfd",
        }
    }
}

type Res<T = ()> = Result<T, String>;

fn ctx_err<T>(what: &str, r: io::Result<T>) -> Res<T> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// Everything an agent needs: the shared memory and the geometry.
///
/// Processes `0..procs` are general workers (receivers of most words and
/// many decoys). With `lone > 0`, word 1 of rings `0..lone` is received in a
/// process of its own (`procs + r`), and processes `procs + lone + k` each
/// run one blind canceller and one timed blocking decoy on those words
/// only. A thread-backend helper re-checks every wait it serves whenever it
/// cycles, which would heal a lost wake as soon as any other wait of the
/// process changes; a lone receiver has no such neighbour, and the lone
/// decoys' waits stay queued (and ahead of the receiver in the kernel's
/// FIFO) for their whole life, so they win wakes and must forward them.
struct Soak {
    mem: Arc<SharedMemory>,
    words: usize,
    ring: usize,
    procs: usize,
    lone: usize,
    proc_id: usize,
    /// The words this process's decoys pick from.
    targets: Vec<usize>,
    /// Decoys never look at their waits (lone decoys).
    blind: bool,
}

enum Take {
    /// Nothing new on the word.
    Nothing,
    /// A token taken and passed on (the caller wakes the next word).
    Pass,
    /// A token taken and retired (the run is stopping).
    Retired,
    /// Shutdown: leave.
    Exit,
}

impl Soak {
    fn w(&self, g: usize) -> &AtomicU32 {
        word(&self.mem, WORDS + g)
    }
    fn consumed(&self, g: usize) -> &AtomicU32 {
        word(&self.mem, CONSUMED + g)
    }
    fn ctrl(&self, i: usize) -> &AtomicU32 {
        word(&self.mem, i)
    }
    fn shutting_down(&self) -> bool {
        self.ctrl(CTRL_SHUTDOWN).load(SeqCst) != 0
    }
    fn next(&self, g: usize) -> usize {
        let r = g / self.ring;
        r * self.ring + (g % self.ring + 1) % self.ring
    }
    fn is_lone(&self, g: usize) -> bool {
        g % self.ring == 1 && g / self.ring < self.lone
    }
    fn lone_words(&self) -> Vec<usize> {
        (0..self.lone).map(|r| r * self.ring + 1).collect()
    }
    fn proc_of(&self, g: usize) -> usize {
        if self.is_lone(g) {
            self.procs + g / self.ring
        } else {
            g % self.procs
        }
    }
    fn kind_of(&self, g: usize) -> Kind {
        if self.is_lone(g) {
            KINDS[(g / self.ring) % KINDS.len()]
        } else {
            KINDS[(g / self.procs) % KINDS.len()]
        }
    }
    fn all_procs(&self) -> usize {
        self.procs + 2 * self.lone
    }
    fn stat_of(&self, proc_id: usize, s: Stat) -> &std::sync::atomic::AtomicU64 {
        counter(&self.mem, STATS_SLOT + proc_id * NSTATS + s as usize)
    }
    fn add(&self, s: Stat, n: u64) {
        self.stat_of(self.proc_id, s).fetch_add(n, SeqCst);
    }
    fn total(&self, s: Stat) -> u64 {
        (0..self.all_procs())
            .map(|p| self.stat_of(p, s).load(SeqCst))
            .sum()
    }

    /// The receiver of `g` read `v`: takes a token if there is one.
    fn take(&self, g: usize, v: u32) -> Res<Take> {
        let c = self.consumed(g).load(SeqCst);
        if v == c {
            return Ok(Take::Nothing);
        }
        if self.shutting_down() {
            return Ok(Take::Exit);
        }
        if v.wrapping_sub(c) != 1 {
            return Err(format!(
                "word {g}: value {v} but its receiver took {c}: more than one token on a ring"
            ));
        }
        self.consumed(g).store(v, SeqCst);
        self.add(Stat::Handoffs, 1);
        if self.ctrl(CTRL_STOP).load(SeqCst) != 0 {
            word(&self.mem, RETIRED + g).store(1, SeqCst);
            self.ctrl(CTRL_RETIRED).fetch_add(1, SeqCst);
            return Ok(Take::Retired);
        }
        // Hand over: the sole writer of the next word stores its new value;
        // the caller then wakes one waiter of it.
        let n = self.next(g);
        self.w(n).fetch_add(1, SeqCst);
        Ok(Take::Pass)
    }

    fn woke(&self, woken: u32) {
        self.add(Stat::WakeCalls, 1);
        self.add(Stat::Woken, u64::from(woken));
    }

    fn waiting(&self, g: usize, v: u32) {
        word(&self.mem, WAIT_ON + g).store(v, SeqCst);
        word(&self.mem, RSTATE + g).store(RS_WAITING, SeqCst);
    }

    fn woken(&self, g: usize, v: u32) {
        word(&self.mem, RSTATE + g).store(RS_RUNNING, SeqCst);
        self.add(Stat::RecvCompletions, 1);
        if self.w(g).load(SeqCst) == v {
            self.add(Stat::RecvEmpty, 1);
        }
    }

    fn exited(&self, g: usize) {
        word(&self.mem, RSTATE + g).store(RS_EXITED, SeqCst);
    }

    /// A decoy's wait on `g` completed: like a polite condvar user it passes
    /// the wake on while the real receiver has not taken its token.
    fn decoy_completed(&self, g: usize, wake: impl FnOnce() -> io::Result<u32>) -> Res {
        self.add(Stat::DecoyCompletions, 1);
        if self.ctrl(CTRL_SABOTAGE).load(SeqCst) != 0 {
            // Self-test: a decoy that swallows the wake it consumed, as a
            // library that forgot S3 would. The ring must stall.
            return Ok(());
        }
        if !self.shutting_down() && self.w(g).load(SeqCst) != self.consumed(g).load(SeqCst) {
            ctx_err("decoy forward", wake())?;
            self.add(Stat::DecoyForwards, 1);
        }
        Ok(())
    }

    /// A decoy armed with `v` on `g` was cancelled (`s` says how).
    fn decoy_cancelled(&self, s: Stat, g: usize, v: u32) {
        self.add(s, 1);
        if self.w(g).load(SeqCst) != v {
            self.add(Stat::Contended, 1);
        }
    }
}

// ---------------------------------------------------------------------------
// Real receivers: no timeouts anywhere.

async fn recv_async(
    s: Arc<Soak>,
    g: usize,
    f: Arc<AsyncFutex>,
    next: Arc<AsyncFutex>,
    mut rng: Rng,
) -> Res {
    loop {
        let v = f.word().load(SeqCst);
        match s.take(g, v)? {
            Take::Exit => break,
            Take::Pass => {
                s.woke(ctx_err("wake", next.wake(1))?);
                continue;
            }
            Take::Retired => continue,
            Take::Nothing => {}
        }
        if rng.one_in(32) {
            // Arm late, with the value read before: S1 must still hold.
            tokio::task::yield_now().await;
        }
        s.waiting(g, v);
        ctx_err("wait_async", f.wait_async(v).await)?;
        s.woken(g, v);
    }
    s.exited(g);
    Ok(())
}

fn recv_blocking(s: Arc<Soak>, g: usize, f: AsyncFutex, next: AsyncFutex, mut rng: Rng) -> Res {
    loop {
        let v = f.word().load(SeqCst);
        match s.take(g, v)? {
            Take::Exit => break,
            Take::Pass => {
                let woken = if rng.one_in(4) {
                    // A peer that does not link the library (S2).
                    s.add(Stat::RawWakes, 1);
                    ctx_err("raw FUTEX_WAKE", raw_wake(next.word(), 1))?
                } else {
                    ctx_err("wake", next.wake(1))?
                };
                s.woke(woken);
                continue;
            }
            Take::Retired => continue,
            Take::Nothing => {}
        }
        if rng.one_in(32) {
            std::thread::sleep(Duration::from_micros(rng.below(200)));
        }
        s.waiting(g, v);
        match ctx_err("wait", f.wait(v, None))? {
            WaitStatus::Completed => {}
            WaitStatus::TimedOut => return Err("wait(None) timed out".to_owned()),
        }
        s.woken(g, v);
    }
    s.exited(g);
    Ok(())
}

fn recv_capi(s: Arc<Soak>, g: usize, mut rng: Rng) -> Res {
    let h = ctx_err("afx_new", Afx::new(&s.mem, WORDS + g))?;
    let next = ctx_err("afx_new", Afx::new(&s.mem, WORDS + s.next(g)))?;
    let fd = h.eventfd();
    loop {
        let v = s.w(g).load(SeqCst);
        match s.take(g, v)? {
            Take::Exit => break,
            Take::Pass => {
                s.woke(ctx_err("afx_wake", next.wake(1))?);
                continue;
            }
            Take::Retired => continue,
            Take::Nothing => {}
        }
        if rng.one_in(32) {
            std::thread::sleep(Duration::from_micros(rng.below(200)));
        }
        s.waiting(g, v);
        ctx_err("afx_wait_async", h.arm(v))?;
        loop {
            ctx_err("poll", poll_in(fd, None))?;
            if ctx_err("afx_ack", h.ack())? {
                break;
            }
        }
        s.woken(g, v);
    }
    s.exited(g);
    Ok(())
}

fn recv_eventfd(s: Arc<Soak>, g: usize, mut rng: Rng) -> Res {
    let e = ctx_err(
        "EventFdFutex",
        s.mem.futex(WORDS + g).and_then(EventFdFutex::new),
    )?;
    let next = ctx_err("futex", s.mem.futex(WORDS + s.next(g)))?;
    loop {
        let v = e.futex().word().load(SeqCst);
        match s.take(g, v)? {
            Take::Exit => break,
            Take::Pass => {
                s.woke(ctx_err("wake", next.wake(1))?);
                continue;
            }
            Take::Retired => continue,
            Take::Nothing => {}
        }
        if rng.one_in(32) {
            std::thread::sleep(Duration::from_micros(rng.below(200)));
        }
        s.waiting(g, v);
        ctx_err("EventFdFutex::arm", e.arm(v))?;
        loop {
            ctx_err("poll", poll_in(e.as_raw_fd(), None))?;
            if ctx_err("EventFdFutex::ack", e.ack())? {
                break;
            }
        }
        s.woken(g, v);
    }
    s.exited(g);
    Ok(())
}

// ---------------------------------------------------------------------------
// Decoys: compete for the same words, cancelled at random.

/// A short wait of an async decoy: a timer (≥ 1 ms in tokio) or a few
/// yields (microseconds).
async fn short_wait(d: Duration, yields: Option<u64>) {
    match yields {
        Some(n) => {
            for _ in 0..n {
                tokio::task::yield_now().await;
            }
        }
        None => tokio::time::sleep(d).await,
    }
}

fn pick(rng: &mut Rng) -> Option<u64> {
    (!rng.one_in(3)).then(|| rng.below(24))
}

/// `tokio::select!` of the wait against a timer or yields.
async fn decoy_select(s: Arc<Soak>, handles: Arc<Vec<Arc<AsyncFutex>>>, mut rng: Rng) -> Res {
    while !s.shutting_down() {
        let g = s.targets[rng.below(s.targets.len() as u64) as usize];
        let f = &handles[g];
        let v = f.word().load(SeqCst);
        s.add(Stat::DecoyArms, 1);
        let (d, yields) = (rng.pause(), pick(&mut rng));
        let completed = tokio::select! {
            r = f.wait_async(v) => { ctx_err("wait_async", r)?; true }
            () = short_wait(d, yields) => false,
        };
        if completed {
            s.decoy_completed(g, || f.wake(1))?;
        } else {
            s.decoy_cancelled(Stat::Select, g, v);
        }
    }
    Ok(())
}

/// Polls the wait once (arming it), then drops it without looking again.
async fn decoy_drop(s: Arc<Soak>, handles: Arc<Vec<Arc<AsyncFutex>>>, mut rng: Rng) -> Res {
    while !s.shutting_down() {
        let g = s.targets[rng.below(s.targets.len() as u64) as usize];
        let f = &handles[g];
        let v = f.word().load(SeqCst);
        s.add(Stat::DecoyArms, 1);
        let mut fut = Box::pin(f.wait_async(v));
        let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
        match first {
            Poll::Ready(r) => {
                ctx_err("wait_async", r)?;
                s.decoy_completed(g, || f.wake(1))?;
            }
            Poll::Pending => {
                let (d, yields) = (rng.pause(), pick(&mut rng));
                short_wait(d, yields).await;
                drop(fut);
                s.decoy_cancelled(Stat::Drop, g, v);
            }
        }
    }
    Ok(())
}

/// C handles on every word: `afx_wait_async`, then either `poll` with a
/// timeout + `afx_ack`, or a blind pause; `afx_cancel` if not acknowledged.
fn decoy_afx_cancel(s: Arc<Soak>, mut rng: Rng) -> Res {
    let handles = (0..s.words)
        .map(|g| Afx::new(&s.mem, WORDS + g))
        .collect::<io::Result<Vec<_>>>();
    let handles = ctx_err("afx_new", handles)?;
    while !s.shutting_down() {
        let g = s.targets[rng.below(s.targets.len() as u64) as usize];
        let h = &handles[g];
        let v = s.w(g).load(SeqCst);
        ctx_err("afx_wait_async", h.arm(v))?;
        s.add(Stat::DecoyArms, 1);
        let d = rng.pause();
        let completed = if !s.blind && rng.one_in(2) {
            ctx_err("poll", poll_in(h.eventfd(), Some(d)))? && ctx_err("afx_ack", h.ack())?
        } else {
            std::thread::sleep(d);
            false
        };
        if completed {
            s.decoy_completed(g, || h.wake(1))?;
        } else {
            ctx_err("afx_cancel", h.cancel())?;
            s.decoy_cancelled(Stat::AfxCancel, g, v);
        }
    }
    Ok(())
}

/// A fresh C handle per wait, freed while its wait is armed.
fn decoy_afx_free(s: Arc<Soak>, mut rng: Rng) -> Res {
    while !s.shutting_down() {
        let g = s.targets[rng.below(s.targets.len() as u64) as usize];
        let h = ctx_err("afx_new", Afx::new(&s.mem, WORDS + g))?;
        let v = s.w(g).load(SeqCst);
        ctx_err("afx_wait_async", h.arm(v))?;
        s.add(Stat::DecoyArms, 1);
        let d = rng.pause();
        if !s.blind && rng.one_in(3) {
            if ctx_err("poll", poll_in(h.eventfd(), Some(d)))? && ctx_err("afx_ack", h.ack())? {
                s.decoy_completed(g, || h.wake(1))?;
                continue;
            }
        } else {
            std::thread::sleep(d);
        }
        drop(h); // afx_free with the wait armed
        s.decoy_cancelled(Stat::AfxFree, g, v);
    }
    Ok(())
}

/// `EventFdFutex` on every word: arm, poll or pause, ack or cancel; now and
/// then a fresh one dropped while armed.
fn decoy_eventfd(s: Arc<Soak>, mut rng: Rng) -> Res {
    let handles = (0..s.words)
        .map(|g| s.mem.futex(WORDS + g).and_then(EventFdFutex::new))
        .collect::<io::Result<Vec<_>>>();
    let handles = ctx_err("EventFdFutex", handles)?;
    while !s.shutting_down() {
        let g = s.targets[rng.below(s.targets.len() as u64) as usize];
        let d = rng.pause();
        if rng.one_in(4) {
            let e = ctx_err(
                "EventFdFutex",
                s.mem.futex(WORDS + g).and_then(EventFdFutex::new),
            )?;
            let v = s.w(g).load(SeqCst);
            ctx_err("EventFdFutex::arm", e.arm(v))?;
            s.add(Stat::DecoyArms, 1);
            std::thread::sleep(d);
            drop(e);
            s.decoy_cancelled(Stat::EfdDrop, g, v);
            continue;
        }
        let e = &handles[g];
        let v = s.w(g).load(SeqCst);
        ctx_err("EventFdFutex::arm", e.arm(v))?;
        s.add(Stat::DecoyArms, 1);
        let completed = if !s.blind && rng.one_in(2) {
            ctx_err("poll", poll_in(e.as_raw_fd(), Some(d)))?
                && ctx_err("EventFdFutex::ack", e.ack())?
        } else {
            std::thread::sleep(d);
            false
        };
        if completed {
            s.decoy_completed(g, || e.futex().wake(1))?;
        } else {
            e.cancel();
            s.decoy_cancelled(Stat::EfdCancel, g, v);
        }
    }
    Ok(())
}

/// Timed blocking waits (the kernel decides timeout vs wake).
fn decoy_blocking(s: Arc<Soak>, handles: Arc<Vec<Arc<AsyncFutex>>>, mut rng: Rng) -> Res {
    while !s.shutting_down() {
        let g = s.targets[rng.below(s.targets.len() as u64) as usize];
        let f = &handles[g];
        let v = f.word().load(SeqCst);
        s.add(Stat::DecoyArms, 1);
        let d = rng.pause().max(Duration::from_micros(1));
        match ctx_err("wait", f.wait(v, Some(d)))? {
            WaitStatus::Completed => s.decoy_completed(g, || f.wake(1))?,
            WaitStatus::TimedOut => s.add(Stat::Timeout, 1),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// A worker process.

fn worker(s: Arc<Soak>, decoys: usize, seed: u64) -> Res {
    let p = s.proc_id;
    let stream = move |k: u64| seed ^ ((p as u64 + 1) << 40) ^ k;
    let rt = ctx_err(
        "tokio runtime",
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
    )?;
    let handles = (0..s.words)
        .map(|g| s.mem.futex(WORDS + g).map(Arc::new))
        .collect::<io::Result<Vec<_>>>();
    let handles = Arc::new(ctx_err("futex", handles)?);
    let plain = |g: usize| ctx_err("futex", s.mem.futex(WORDS + g));

    let mut tasks = Vec::new();
    let mut threads = Vec::new();
    let mut thread = |name: String, body: Box<dyn FnOnce() -> Res + Send>| {
        std::thread::Builder::new()
            .name(name.clone())
            .spawn(body)
            .map_err(|e| format!("spawn {name}: {e}"))
            .map(|t| threads.push((name, t)))
    };
    for g in (0..s.words).filter(|&g| s.proc_of(g) == p) {
        let rng = Rng::new(stream(g as u64), 1);
        let sc = Arc::clone(&s);
        match s.kind_of(g) {
            Kind::Async => {
                let (f, next) = (Arc::clone(&handles[g]), Arc::clone(&handles[s.next(g)]));
                tasks.push((
                    format!("receiver {g} (async)"),
                    rt.spawn(recv_async(sc, g, f, next, rng)),
                ));
            }
            Kind::Blocking => {
                let (f, next) = (plain(g)?, plain(s.next(g))?);
                thread(
                    format!("recv-blk-{g}"),
                    Box::new(move || recv_blocking(sc, g, f, next, rng)),
                )?;
            }
            Kind::CApi => thread(
                format!("recv-afx-{g}"),
                Box::new(move || recv_capi(sc, g, rng)),
            )?,
            Kind::EventFd => thread(
                format!("recv-efd-{g}"),
                Box::new(move || recv_eventfd(sc, g, rng)),
            )?,
        }
    }
    for i in 0..decoys as u64 {
        for j in 0..2 {
            let k = 1000 + 10 * i + j;
            tasks.push((
                "decoy select".to_owned(),
                rt.spawn(decoy_select(
                    Arc::clone(&s),
                    Arc::clone(&handles),
                    Rng::new(stream(k), 2),
                )),
            ));
            tasks.push((
                "decoy drop".to_owned(),
                rt.spawn(decoy_drop(
                    Arc::clone(&s),
                    Arc::clone(&handles),
                    Rng::new(stream(k), 3),
                )),
            ));
        }
        let k = 2000 + i;
        let sc = Arc::clone(&s);
        thread(
            format!("decoy-afx-cancel-{i}"),
            Box::new(move || decoy_afx_cancel(sc, Rng::new(stream(k), 4))),
        )?;
        let sc = Arc::clone(&s);
        thread(
            format!("decoy-afx-free-{i}"),
            Box::new(move || decoy_afx_free(sc, Rng::new(stream(k), 5))),
        )?;
        let sc = Arc::clone(&s);
        thread(
            format!("decoy-efd-{i}"),
            Box::new(move || decoy_eventfd(sc, Rng::new(stream(k), 6))),
        )?;
        let (sc, hc) = (Arc::clone(&s), Arc::clone(&handles));
        thread(
            format!("decoy-blk-{i}"),
            Box::new(move || decoy_blocking(sc, hc, Rng::new(stream(k), 7))),
        )?;
    }
    s.ctrl(CTRL_READY).fetch_add(1, SeqCst);

    let mut errors = Vec::new();
    let mut note = |name: &str, r: Res| {
        if let Err(e) = r {
            eprintln!("soak worker {p}: {name}: {e}");
            s.ctrl(CTRL_FAILED).store(1, SeqCst);
            errors.push(format!("{name}: {e}"));
        }
    };
    for (name, task) in tasks {
        let r = rt
            .block_on(task)
            .unwrap_or_else(|e| Err(format!("task: {e}")));
        note(&name, r);
    }
    for (name, t) in threads {
        let r = t.join().unwrap_or_else(|_| Err("panicked".to_owned()));
        note(&name, r);
    }
    drop(handles);
    drop(rt);
    match errors.into_iter().next() {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// A lone decoy process: one blind canceller of kind `k % 4` and one timed
/// blocking decoy, both on the lone words only (under `--sabotage`: four
/// swallowing blocking decoys and no canceller).
fn lone_decoy_worker(s: Arc<Soak>, k: usize, seed: u64) -> Res {
    let rng = |i: u64| Rng::new(seed ^ ((s.proc_id as u64 + 1) << 40), 100 + i);
    let handles = (0..s.words)
        .map(|g| s.mem.futex(WORDS + g).map(Arc::new))
        .collect::<io::Result<Vec<_>>>();
    let handles = Arc::new(ctx_err("futex", handles)?);
    // Under --sabotage, more (swallowing) blocking decoys: the self-test
    // should stall fast on every backend.
    let nblocking = if s.ctrl(CTRL_SABOTAGE).load(SeqCst) != 0 {
        4
    } else {
        1
    };
    let mut blocking = Vec::new();
    for i in 0..nblocking {
        let (sc, hc, r) = (Arc::clone(&s), Arc::clone(&handles), rng(10 + i));
        let t = std::thread::Builder::new()
            .name("lone-decoy-blk".to_owned())
            .spawn(move || decoy_blocking(sc, hc, r))
            .map_err(|e| format!("spawn: {e}"))?;
        blocking.push(t);
    }
    s.ctrl(CTRL_READY).fetch_add(1, SeqCst);
    let sc = Arc::clone(&s);
    let sabotage = s.ctrl(CTRL_SABOTAGE).load(SeqCst) != 0;
    let r = match k % 4 {
        // Under --sabotage, no blind canceller: a wait it cancels after a
        // (possibly spurious) completion has its wake forwarded by the
        // library (S3), which would heal the wakes the decoys swallow (on
        // the thread backend often enough to hide them for the whole run).
        _ if sabotage => Ok(()),
        0 => {
            let rt = ctx_err(
                "tokio runtime",
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build(),
            )?;
            rt.block_on(decoy_drop(sc, Arc::clone(&handles), rng(2)))
        }
        1 => decoy_afx_cancel(sc, rng(2)),
        2 => decoy_afx_free(sc, rng(2)),
        _ => decoy_eventfd(sc, rng(2)),
    };
    let mut results = vec![("lone canceller", r)];
    for t in blocking {
        let rb = t.join().unwrap_or_else(|_| Err("panicked".to_owned()));
        results.push(("lone blocking decoy", rb));
    }
    for (name, r) in results {
        if let Err(e) = r {
            s.ctrl(CTRL_FAILED).store(1, SeqCst);
            return Err(format!("{name}: {e}"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The parent: watchdog, shutdown, checks, report.

struct Watch {
    /// Per word: last (value, consumed) and since when.
    last: Vec<((u32, u32), Instant)>,
    /// Per ring: last sum of consumed values and since when.
    rings: Vec<(u64, Instant)>,
}

impl Watch {
    fn new(words: usize, rings: usize) -> Watch {
        let now = Instant::now();
        Watch {
            last: vec![((u32::MAX, u32::MAX), now); words],
            rings: vec![(u64::MAX, now); rings],
        }
    }

    /// The first stall found, if any.
    fn check(&mut self, s: &Soak, stall: Duration) -> Option<String> {
        let now = Instant::now();
        for g in 0..s.words {
            let vc = (s.w(g).load(SeqCst), s.consumed(g).load(SeqCst));
            if vc != self.last[g].0 {
                self.last[g] = (vc, now);
            } else if vc.0 != vc.1 && now - self.last[g].1 > stall {
                return Some(format!(
                    "word {g} holds value {} but its receiver (worker {}, {}) took only {} \
                     {:.1} s ago and nothing since: a lost wake",
                    vc.0,
                    s.proc_of(g),
                    s.kind_of(g).name(),
                    vc.1,
                    (now - self.last[g].1).as_secs_f64()
                ));
            }
        }
        for r in 0..self.rings.len() {
            let ring_words = r * s.ring..(r + 1) * s.ring;
            if ring_words
                .clone()
                .any(|g| word(&s.mem, RETIRED + g).load(SeqCst) != 0)
            {
                continue;
            }
            let sum: u64 = ring_words
                .map(|g| u64::from(s.consumed(g).load(SeqCst)))
                .sum();
            if sum != self.rings[r].0 {
                self.rings[r] = (sum, now);
            } else if now - self.rings[r].1 > stall {
                return Some(format!(
                    "ring {r} made no handoff for {:.1} s",
                    (now - self.rings[r].1).as_secs_f64()
                ));
            }
        }
        None
    }
}

fn dump(s: &Soak) {
    println!("--- state of every word (a token is pending where value != consumed) ---");
    println!(
        "{:>5} {:>4} {:>3} {:>6} {:>8} {:>10} {:>10} {:>8}  {:<22} expected",
        "word", "ring", "pos", "worker", "kind", "value", "consumed", "kwaiters", "receiver"
    );
    for g in 0..s.words {
        let v = s.w(g).load(SeqCst);
        let c = s.consumed(g).load(SeqCst);
        let state = match word(&s.mem, RSTATE + g).load(SeqCst) {
            RS_WAITING => format!(
                "waiting(expected {})",
                word(&s.mem, WAIT_ON + g).load(SeqCst)
            ),
            RS_EXITED => "exited".to_owned(),
            _ => "running".to_owned(),
        };
        let expected = if v != c {
            format!("TOKEN PENDING: receiver must take value {v}")
        } else if word(&s.mem, RETIRED + g).load(SeqCst) != 0 {
            "idle (token retired here)".to_owned()
        } else {
            format!("idle (value {v} taken)")
        };
        println!(
            "{g:>5} {:>4} {:>3} {:>6} {:>8} {v:>10} {c:>10} {:>8}  {state:<22} {expected}",
            g / s.ring,
            g % s.ring,
            s.proc_of(g),
            s.kind_of(g).name(),
            kernel_waiters(s.w(g)),
        );
    }
    println!(
        "control: stop={} shutdown={} retired={} ready={} failed={}",
        s.ctrl(CTRL_STOP).load(SeqCst),
        s.ctrl(CTRL_SHUTDOWN).load(SeqCst),
        s.ctrl(CTRL_RETIRED).load(SeqCst),
        s.ctrl(CTRL_READY).load(SeqCst),
        s.ctrl(CTRL_FAILED).load(SeqCst),
    );
}

struct Totals {
    handoffs: u64,
    wake_calls: u64,
    woken: u64,
    cancels: u64,
}

fn totals(s: &Soak) -> Totals {
    let cancels = [
        Stat::Select,
        Stat::Drop,
        Stat::AfxCancel,
        Stat::AfxFree,
        Stat::EfdCancel,
        Stat::EfdDrop,
    ]
    .iter()
    .map(|&k| s.total(k))
    .sum();
    Totals {
        handoffs: s.total(Stat::Handoffs),
        wake_calls: s.total(Stat::WakeCalls),
        woken: s.total(Stat::Woken),
        cancels,
    }
}

/// Kills and reaps every child still running.
fn kill_all(children: &mut Vec<(usize, libc::pid_t)>) {
    for &(_, pid) in children.iter() {
        kill9(pid);
    }
    for &(_, pid) in children.iter() {
        let _ = reap(pid, true);
    }
    children.clear();
}

/// Runs the soak in this (parent) process.
pub fn run(opts: &Options, backend: BackendKind) -> Res {
    let rings = opts.words / opts.ring;
    let words = rings * opts.ring;
    let mem = Arc::new(ctx_err("shared memory", SharedMemory::anonymous(SHM_LEN))?);
    let lone = opts.lone.min(rings);
    let soak = Soak {
        mem: Arc::clone(&mem),
        words,
        ring: opts.ring,
        procs: opts.procs,
        lone,
        proc_id: usize::MAX,
        targets: Vec::new(),
        blind: false,
    };
    if opts.sabotage {
        soak.ctrl(CTRL_SABOTAGE).store(1, SeqCst);
        println!("soak: SELF-TEST: decoys swallow the wakes they consume; this run must stall");
    }
    // One token per ring, at position 0: value 1, not yet taken.
    for r in 0..rings {
        soak.w(r * opts.ring).store(1, SeqCst);
    }
    let secs = opts.duration.as_secs();
    println!(
        "soak: backend {backend}, {} worker processes, {rings} rings x {} words = {words} \
         futex words (one token per ring), decoys x{}, {lone} lone receivers + {lone} lone \
         decoy processes, {secs} s, stall bound {} s, seed {}",
        opts.procs,
        opts.ring,
        opts.decoys,
        opts.stall.as_secs(),
        opts.seed
    );
    for p in 0..opts.procs + lone {
        let mine: Vec<String> = (0..words)
            .filter(|&g| soak.proc_of(g) == p)
            .map(|g| format!("{g}:{}", soak.kind_of(g).name()))
            .collect();
        if !opts.quiet {
            println!("  worker {p}: receivers {}", mine.join(" "));
        }
    }

    let mut children = Vec::new();
    for p in 0..soak.all_procs() {
        let lone_decoy = p >= opts.procs + lone;
        let s = Arc::new(Soak {
            mem: Arc::clone(&mem),
            words,
            ring: opts.ring,
            procs: opts.procs,
            lone,
            proc_id: p,
            targets: if lone_decoy {
                soak.lone_words()
            } else if opts.sabotage {
                // The self-test leaves the lone words to the swallowing lone
                // decoys: a cancelled general decoy's wait forwards the wake
                // it consumed (S3) and would heal what they swallow.
                let lone_words = soak.lone_words();
                (0..words).filter(|g| !lone_words.contains(g)).collect()
            } else {
                (0..words).collect()
            },
            blind: lone_decoy,
        });
        // Lone receiver processes run no decoys.
        let decoys = if p < opts.procs { opts.decoys } else { 0 };
        let seed = opts.seed;
        let k = p.saturating_sub(opts.procs + lone);
        let pid = fork_child(move || {
            let r = if lone_decoy {
                lone_decoy_worker(s, k, seed)
            } else {
                worker(s, decoys, seed)
            };
            match r {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("soak worker {p}: FAILED: {e}");
                    1
                }
            }
        });
        match pid {
            Ok(pid) => children.push((p, pid)),
            Err(e) => {
                kill_all(&mut children);
                return Err(format!("fork: {e}"));
            }
        }
    }

    let result = supervise(&soak, opts, rings, &mut children);
    if let Err(e) = &result {
        dump(&soak);
        kill_all(&mut children);
        let t = totals(&soak);
        println!(
            "SOAK FAILED backend={backend} procs={} handoffs={} wakes={} cancels={} stalls=1: {e}",
            opts.procs, t.handoffs, t.wake_calls, t.cancels
        );
        return result;
    }
    report(&soak, opts, backend)
}

fn supervise(
    s: &Soak,
    opts: &Options,
    rings: usize,
    children: &mut Vec<(usize, libc::pid_t)>,
) -> Res {
    let start = Instant::now();
    let mut watch = Watch::new(s.words, rings);
    let every = if opts.duration > Duration::from_secs(120) {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(5)
    };
    let mut next_report = start + every;
    let mut last_handoffs = 0;
    let tick = Duration::from_millis(100);

    // Run.
    let mut phase = 0; // 0 running, 1 retiring, 2 shutting down
    let mut shutdown_at = start;
    loop {
        std::thread::sleep(tick);
        let now = Instant::now();
        if s.ctrl(CTRL_FAILED).load(SeqCst) != 0 {
            return Err("a worker agent failed (see its error above)".to_owned());
        }
        // A worker that ends before shutdown, or badly, fails the run.
        let mut i = 0;
        while i < children.len() {
            let (p, pid) = children[i];
            match reap(pid, false).map_err(|e| format!("waitpid: {e}"))? {
                None => i += 1,
                Some(Exit::Code(0)) if phase == 2 => {
                    children.remove(i);
                }
                Some(exit) => {
                    children.remove(i);
                    return Err(format!("worker {p} (pid {pid}) ended early: {exit}"));
                }
            }
        }
        if phase == 2 {
            if children.is_empty() {
                return Ok(());
            }
            if now - shutdown_at > opts.stall {
                let left: Vec<String> = children.iter().map(|c| c.0.to_string()).collect();
                return Err(format!(
                    "workers {} did not leave within {} s of shutdown",
                    left.join(","),
                    opts.stall.as_secs()
                ));
            }
            continue;
        }
        if let Some(stall) = watch.check(s, opts.stall) {
            return Err(format!("STALL: {stall}"));
        }
        if !opts.quiet && now >= next_report {
            let t = totals(s);
            let el = (now - start).as_secs_f64();
            println!(
                "[{el:>6.0} s] handoffs {} ({:.0}/s now), wakes {} (woke {}), cancels {}, \
                 decoy forwards {}, contended {}",
                t.handoffs,
                (t.handoffs - last_handoffs) as f64 / every.as_secs_f64(),
                t.wake_calls,
                t.woken,
                t.cancels,
                s.total(Stat::DecoyForwards),
                s.total(Stat::Contended),
            );
            last_handoffs = t.handoffs;
            next_report += every;
        }
        if phase == 0 && now - start >= opts.duration {
            // Retire the tokens: every one must still arrive.
            s.ctrl(CTRL_STOP).store(1, SeqCst);
            phase = 1;
        }
        if phase == 1 && s.ctrl(CTRL_RETIRED).load(SeqCst) as usize == rings {
            conservation(s, rings)?;
            // Shutdown: change every word and wake all (a raw FUTEX_WAKE,
            // as a peer without the library would).
            s.ctrl(CTRL_SHUTDOWN).store(1, SeqCst);
            for g in 0..s.words {
                s.w(g).fetch_add(1, SeqCst);
                raw_wake(s.w(g), i32::MAX).map_err(|e| format!("FUTEX_WAKE: {e}"))?;
            }
            shutdown_at = now;
            phase = 2;
        }
    }
}

/// Every token taken was passed on exactly once (or retired): the value of
/// each word is its initial value plus what its sender passed.
fn conservation(s: &Soak, rings: usize) -> Res {
    let mut retired = 0;
    for g in 0..s.words {
        let n = s.next(g);
        let init = u32::from(n % s.ring == 0);
        let ret = word(&s.mem, RETIRED + g).load(SeqCst);
        retired += ret;
        let passed = s.consumed(g).load(SeqCst).wrapping_sub(ret);
        let want = init.wrapping_add(passed);
        let v = s.w(n).load(SeqCst);
        if v != want {
            return Err(format!(
                "conservation: word {n} holds {v}, but its sender (receiver of word {g}) \
                 passed {passed} tokens onto initial {init}"
            ));
        }
        if v != s.consumed(n).load(SeqCst) {
            return Err(format!("conservation: word {n} still holds a token"));
        }
    }
    if retired as usize != rings {
        return Err(format!("{retired} tokens retired, want {rings}"));
    }
    Ok(())
}

fn report(s: &Soak, opts: &Options, backend: BackendKind) -> Res {
    let t = totals(s);
    let g = |k: Stat| s.total(k);
    let lone_contended: u64 = (s.procs + s.lone..s.all_procs())
        .map(|p| s.stat_of(p, Stat::Contended).load(SeqCst))
        .sum();
    if !opts.quiet {
        println!(
            "  receivers: {} completions ({} found no token), {} raw FUTEX_WAKE handoffs",
            g(Stat::RecvCompletions),
            g(Stat::RecvEmpty),
            g(Stat::RawWakes)
        );
        println!(
            "  decoys: {} waits armed, {} completed ({} passed the wake on), {} cancelled \
             while a token reached their word",
            g(Stat::DecoyArms),
            g(Stat::DecoyCompletions),
            g(Stat::DecoyForwards),
            g(Stat::Contended)
        );
    }
    println!(
        "SOAK OK backend={backend} seconds={} procs={} words={} rings={} handoffs={} \
         wakes={} woken={} cancels={} (select={} drop={} afx_cancel={} afx_free={} \
         efd_cancel={} efd_drop={}) timeouts={} decoy_forwards={} contended={} \
         lone_contended={lone_contended} stalls=0",
        opts.duration.as_secs(),
        opts.procs,
        s.words,
        s.words / s.ring,
        t.handoffs,
        t.wake_calls,
        t.woken,
        t.cancels,
        g(Stat::Select),
        g(Stat::Drop),
        g(Stat::AfxCancel),
        g(Stat::AfxFree),
        g(Stat::EfdCancel),
        g(Stat::EfdDrop),
        g(Stat::Timeout),
        g(Stat::DecoyForwards),
        g(Stat::Contended),
    );
    Ok(())
}
