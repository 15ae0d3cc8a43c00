//! Cross-process ping-pong round trips over a shared page, one mechanism at
//! a time, both processes pinned.
//!
//! Process A (the measuring one) publishes `2k+1` and waits for `2k+2`;
//! process B waits for `2k+1` and publishes `2k+2`. Both processes use the
//! same mechanism. A round trip is timed in A with `Instant`.
//!
//! The word-based mechanisms use two words: each side waits on its own
//! word and publishes into its peer's. The asyncfutex mechanisms run in
//! two orders ([`Order`]): *arm first* (load own word, arm a wait with the
//! value seen, then store + wake the peer, then wait) and *natural* (store +
//! wake the peer, then load own word, arm with the value seen, wait) — the
//! order of ordinary user code. The other mechanisms have no arming step:
//! one order, one figure, the baseline for both.

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use asyncfutex::{AsyncFutex, EventFdFutex, SharedMemory};
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;

use crate::sys::{self, cvt};
use crate::via::{self, Via};

/// When a side arms its next wait, relative to notifying its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Load own word, arm with the value seen, store + wake the peer, wait.
    ArmFirst,
    /// Store + wake the peer, load own word, arm with the value seen, wait.
    Natural,
}

impl Order {
    pub const ALL: [Order; 2] = [Order::ArmFirst, Order::Natural];

    /// JSON `order` value and identifier suffix.
    pub fn name(self) -> &'static str {
        match self {
            Order::ArmFirst => "arm_first",
            Order::Natural => "natural",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Order::ArmFirst => "arm first",
            Order::Natural => "natural",
        }
    }
}

/// Which tokio runtime drives a tokio variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rt {
    CurrentThread,
    MultiThread,
}

/// One notification mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mech {
    RawFutex,
    EventfdBlocking,
    EventfdEpoll,
    Pipe,
    UnixStream,
    PthreadCond,
    Spin,
    /// asyncfutex `EventFdFutex` + epoll (the C API's pattern).
    AfxEpoll(Via, Order),
    AfxTokio(Rt, Via, Order),
    TokioEventfd(Rt),
}

impl Mech {
    /// Every mechanism, baseline first; the two orders of one asyncfutex
    /// configuration next to each other.
    pub fn all() -> Vec<Mech> {
        let mut v = vec![
            Mech::RawFutex,
            Mech::Spin,
            Mech::EventfdBlocking,
            Mech::EventfdEpoll,
            Mech::Pipe,
            Mech::UnixStream,
            Mech::PthreadCond,
        ];
        for via in via::ALL {
            for order in Order::ALL {
                v.push(Mech::AfxEpoll(via, order));
            }
        }
        for rt in [Rt::CurrentThread, Rt::MultiThread] {
            v.push(Mech::TokioEventfd(rt));
            for via in via::ALL {
                for order in Order::ALL {
                    v.push(Mech::AfxTokio(rt, via, order));
                }
            }
        }
        v
    }

    /// The arming order, for the mechanisms that arm.
    pub fn order(self) -> Option<Order> {
        match self {
            Mech::AfxEpoll(_, o) | Mech::AfxTokio(_, _, o) => Some(o),
            _ => None,
        }
    }

    /// The asyncfutex backend configuration, if this is an asyncfutex row.
    pub fn via(self) -> Option<Via> {
        match self {
            Mech::AfxEpoll(v, _) | Mech::AfxTokio(_, v, _) => Some(v),
            _ => None,
        }
    }

    /// The same mechanism in the other order (itself when it has one).
    pub fn with_order(self, order: Order) -> Mech {
        match self {
            Mech::AfxEpoll(v, _) => Mech::AfxEpoll(v, order),
            Mech::AfxTokio(r, v, _) => Mech::AfxTokio(r, v, order),
            m => m,
        }
    }

    /// The non-asyncfutex mechanism an asyncfutex row is best compared
    /// with: eventfd + epoll for the epoll pattern, tokio's `AsyncFd` on an
    /// eventfd (same runtime flavour) for `wait_async`.
    pub fn base(self) -> Option<Mech> {
        match self {
            Mech::AfxEpoll(..) => Some(Mech::EventfdEpoll),
            Mech::AfxTokio(r, ..) => Some(Mech::TokioEventfd(r)),
            _ => None,
        }
    }

    /// A stable identifier (JSON key).
    pub fn id(self) -> String {
        let rt = |r: Rt| match r {
            Rt::CurrentThread => "ct",
            Rt::MultiThread => "mt",
        };
        match self {
            Mech::RawFutex => "raw_futex".into(),
            Mech::EventfdBlocking => "eventfd_blocking".into(),
            Mech::EventfdEpoll => "eventfd_epoll".into(),
            Mech::Pipe => "pipe".into(),
            Mech::UnixStream => "unix_stream".into(),
            Mech::PthreadCond => "pthread_cond".into(),
            Mech::Spin => "spin".into(),
            Mech::AfxEpoll(v, o) => format!("afx_epoll_{}_{}", v.id(), o.name()),
            Mech::AfxTokio(r, v, o) => format!("afx_tokio_{}_{}_{}", rt(r), v.id(), o.name()),
            Mech::TokioEventfd(r) => format!("tokio_eventfd_{}", rt(r)),
        }
    }

    /// A human label.
    pub fn label(self) -> String {
        match self.order() {
            Some(o) => format!("{}, {}", self.label_without_order(), o.label()),
            None => self.label_without_order(),
        }
    }

    /// A short label of an asyncfutex row, without the order (for the
    /// targets): `C API + epoll, io_uring (caller)`, `tokio ct wait_async,
    /// thread`; the full label otherwise.
    pub fn short_label(self) -> String {
        match self {
            Mech::AfxEpoll(v, _) => format!("C API + epoll, {}", v.label()),
            Mech::AfxTokio(r, v, _) => {
                let rt = if r == Rt::CurrentThread { "ct" } else { "mt" };
                format!("tokio {rt} wait_async, {}", v.label())
            }
            m => m.label_without_order(),
        }
    }

    /// The label without the arming order.
    pub fn label_without_order(self) -> String {
        let rt = |r: Rt| match r {
            Rt::CurrentThread => "current-thread",
            Rt::MultiThread => "multi-thread",
        };
        match self {
            Mech::RawFutex => "raw FUTEX_WAIT/FUTEX_WAKE (baseline)".into(),
            Mech::EventfdBlocking => "eventfd, blocking read".into(),
            Mech::EventfdEpoll => "eventfd + epoll".into(),
            Mech::Pipe => "pipe".into(),
            Mech::UnixStream => "AF_UNIX socketpair (stream)".into(),
            Mech::PthreadCond => "pthread_cond (process-shared)".into(),
            Mech::Spin => "spin on the word (sched_yield every 100 spins)".into(),
            Mech::AfxEpoll(v, _) => format!("asyncfutex EventFdFutex + epoll, {}", v.label()),
            Mech::AfxTokio(r, v, _) => {
                format!("asyncfutex wait_async, tokio {}, {}", rt(r), v.label())
            }
            Mech::TokioEventfd(r) => format!("tokio AsyncFd<eventfd>, {}", rt(r)),
        }
    }
}

/// What one ping-pong run returns.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunResult {
    /// Round trips in ns, warm-up removed.
    pub samples_ns: Vec<u32>,
    /// CPUs A and B ran on at the end (sched_getcpu).
    pub cpus: (i32, i32),
    /// Context switches (voluntary + involuntary) of all of A's threads
    /// per round trip (getrusage; includes runtime start-up and warm-up).
    pub ctx_switches_a: f64,
}

/// Byte offsets in the shared page: the word A waits on, the word B waits
/// on (each on its own cache line), B's CPU.
const WORD_A: usize = 0;
const WORD_B: usize = 128;
const PEER_CPU: usize = 256;
const COND_OFFSET: usize = 512;

#[repr(C)]
struct CondBlock {
    mutex: libc::pthread_mutex_t,
    cond: libc::pthread_cond_t,
    value: u32,
}

/// Resources made before the fork and inherited by both processes.
struct Shared {
    mem: Arc<SharedMemory>,
    /// (read, write) of the A→B and B→A channels (eventfd: the same fd twice).
    a2b: (i32, i32),
    b2a: (i32, i32),
    /// socketpair ends: A's and B's.
    sock: (i32, i32),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    A,
    B,
}

impl Shared {
    fn new(mech: Mech) -> io::Result<Shared> {
        let mem = Arc::new(SharedMemory::anonymous(4096)?);
        let mut s = Shared {
            mem,
            a2b: (-1, -1),
            b2a: (-1, -1),
            sock: (-1, -1),
        };
        match mech {
            Mech::EventfdBlocking | Mech::EventfdEpoll | Mech::TokioEventfd(_) => {
                let flags = if mech == Mech::EventfdBlocking {
                    libc::EFD_CLOEXEC
                } else {
                    libc::EFD_CLOEXEC | libc::EFD_NONBLOCK
                };
                // SAFETY: plain eventfd creation.
                let e1 = cvt(unsafe { libc::eventfd(0, flags) } as isize)? as i32;
                // SAFETY: as above.
                let e2 = cvt(unsafe { libc::eventfd(0, flags) } as isize)? as i32;
                s.a2b = (e1, e1);
                s.b2a = (e2, e2);
            }
            Mech::Pipe => {
                let mut p1 = [0; 2];
                let mut p2 = [0; 2];
                // SAFETY: two pipes.
                unsafe {
                    cvt(libc::pipe2(p1.as_mut_ptr(), libc::O_CLOEXEC) as isize)?;
                    cvt(libc::pipe2(p2.as_mut_ptr(), libc::O_CLOEXEC) as isize)?;
                }
                s.a2b = (p1[0], p1[1]);
                s.b2a = (p2[0], p2[1]);
            }
            Mech::UnixStream => {
                let mut sv = [0; 2];
                // SAFETY: one socketpair.
                cvt(unsafe {
                    libc::socketpair(
                        libc::AF_UNIX,
                        libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                        0,
                        sv.as_mut_ptr(),
                    )
                } as isize)?;
                s.sock = (sv[0], sv[1]);
            }
            Mech::PthreadCond => {
                let block = s.cond_block();
                // SAFETY: initialising process-shared objects in our fresh
                // shared page before any other process sees it.
                unsafe {
                    let mut ma: libc::pthread_mutexattr_t = std::mem::zeroed();
                    libc::pthread_mutexattr_init(&mut ma);
                    libc::pthread_mutexattr_setpshared(&mut ma, libc::PTHREAD_PROCESS_SHARED);
                    libc::pthread_mutex_init(&mut (*block).mutex, &ma);
                    let mut ca: libc::pthread_condattr_t = std::mem::zeroed();
                    libc::pthread_condattr_init(&mut ca);
                    libc::pthread_condattr_setpshared(&mut ca, libc::PTHREAD_PROCESS_SHARED);
                    libc::pthread_cond_init(&mut (*block).cond, &ca);
                }
            }
            _ => {}
        }
        Ok(s)
    }

    /// The word `role` waits on, and the word its peer waits on.
    fn words(&self, role: Role) -> (&AtomicU32, &AtomicU32) {
        let (own, peer) = Self::word_indices(role);
        (
            self.mem.word(own).expect("in bounds"),
            self.mem.word(peer).expect("in bounds"),
        )
    }

    /// Word indices (own, peer) of `role`.
    fn word_indices(role: Role) -> (usize, usize) {
        match role {
            Role::A => (WORD_A / 4, WORD_B / 4),
            Role::B => (WORD_B / 4, WORD_A / 4),
        }
    }

    fn cond_block(&self) -> *mut CondBlock {
        // SAFETY: the block fits in the page at this offset.
        unsafe { self.mem.as_ptr().add(COND_OFFSET).cast() }
    }

    /// (read fd, write fd) for `role`.
    fn ends(&self, role: Role) -> (i32, i32) {
        match role {
            Role::A => (self.b2a.0, self.a2b.1),
            Role::B => (self.a2b.0, self.b2a.1),
        }
    }
}

/// A synchronous side: `send` publishes `v`, `recv` returns once `v` arrived.
trait Side {
    fn send(&mut self, v: u32) -> io::Result<()>;
    fn recv(&mut self, v: u32) -> io::Result<()>;
    /// Publishes `out`, then returns once `want` arrived, arming in `order`
    /// (mechanisms without an arming step have one order).
    fn exchange(&mut self, out: u32, want: u32, order: Order) -> io::Result<()> {
        let _ = order;
        self.send(out)?;
        self.recv(want)
    }
}

fn check(got: u64, want: u32) -> io::Result<()> {
    if got == u64::from(want) {
        Ok(())
    } else {
        Err(io::Error::other(format!("got {got}, want {want}")))
    }
}

/// (own word, peer's word).
struct RawSide<'a>(&'a AtomicU32, &'a AtomicU32);
impl Side for RawSide<'_> {
    fn send(&mut self, v: u32) -> io::Result<()> {
        self.1.store(v, Ordering::Release);
        sys::futex_wake(self.1, 1);
        Ok(())
    }
    fn recv(&mut self, v: u32) -> io::Result<()> {
        loop {
            let seen = self.0.load(Ordering::Acquire);
            if seen == v {
                return Ok(());
            }
            // EINTR and EAGAIN alike: re-check the word.
            sys::futex_wait(self.0, seen);
        }
    }
}

/// (own word, peer's word).
struct SpinSide<'a>(&'a AtomicU32, &'a AtomicU32);
impl Side for SpinSide<'_> {
    fn send(&mut self, v: u32) -> io::Result<()> {
        self.1.store(v, Ordering::Release);
        Ok(())
    }
    fn recv(&mut self, v: u32) -> io::Result<()> {
        let mut n = 0;
        while self.0.load(Ordering::Acquire) != v {
            std::hint::spin_loop();
            n += 1;
            if n == 100 {
                n = 0;
                // SAFETY: plain syscall.
                unsafe { libc::sched_yield() };
            }
        }
        Ok(())
    }
}

/// Message-carrying fds: eventfd (8-byte counter) or pipe/socket (4 bytes).
struct FdSide {
    rd: i32,
    wr: i32,
    len: usize,
    epoll: Option<i32>,
}
impl Side for FdSide {
    fn send(&mut self, v: u32) -> io::Result<()> {
        sys::write_u64(self.wr, u64::from(v), self.len)
    }
    fn recv(&mut self, v: u32) -> io::Result<()> {
        if let Some(ep) = self.epoll {
            epoll_wait_one(ep)?;
        }
        check(sys::read_u64(self.rd, self.len)?, v)
    }
}

struct CondSide(*mut CondBlock);
impl Side for CondSide {
    fn send(&mut self, v: u32) -> io::Result<()> {
        // SAFETY: the block was initialised before the fork and stays mapped.
        unsafe {
            let b = self.0;
            libc::pthread_mutex_lock(&mut (*b).mutex);
            std::ptr::write_volatile(&mut (*b).value, v);
            libc::pthread_cond_signal(&mut (*b).cond);
            libc::pthread_mutex_unlock(&mut (*b).mutex);
        }
        Ok(())
    }
    fn recv(&mut self, v: u32) -> io::Result<()> {
        // SAFETY: as above.
        unsafe {
            let b = self.0;
            libc::pthread_mutex_lock(&mut (*b).mutex);
            while std::ptr::read_volatile(&(*b).value) != v {
                libc::pthread_cond_wait(&mut (*b).cond, &mut (*b).mutex);
            }
            libc::pthread_mutex_unlock(&mut (*b).mutex);
        }
        Ok(())
    }
}

/// The C API's pattern: an `EventFdFutex` on the own word polled by epoll;
/// `wake` on the peer's word.
struct AfxEpollSide {
    handle: EventFdFutex,
    peer: AsyncFutex,
    epoll: i32,
}
impl AfxEpollSide {
    /// epoll_wait (EINTR retried) + ack; a readiness without a completion
    /// disarms (the caller re-checks the word and re-arms).
    fn wait_armed(&mut self) -> io::Result<()> {
        epoll_wait_one(self.epoll)?;
        if !self.handle.ack()? {
            self.handle.cancel();
        }
        Ok(())
    }
}
impl Side for AfxEpollSide {
    fn send(&mut self, v: u32) -> io::Result<()> {
        self.peer.word().store(v, Ordering::Release);
        self.peer.wake(1)?;
        Ok(())
    }
    fn recv(&mut self, v: u32) -> io::Result<()> {
        loop {
            let seen = self.handle.futex().word().load(Ordering::Acquire);
            if seen == v {
                return Ok(());
            }
            self.handle.arm(seen)?;
            self.wait_armed()?;
        }
    }
    fn exchange(&mut self, out: u32, want: u32, order: Order) -> io::Result<()> {
        if order == Order::ArmFirst {
            let seen = self.handle.futex().word().load(Ordering::Acquire);
            if seen != want {
                self.handle.arm(seen)?;
                self.send(out)?;
                self.wait_armed()?;
                return self.recv(want);
            }
        }
        self.send(out)?;
        self.recv(want)
    }
}

fn epoll_with(fd: i32) -> io::Result<i32> {
    // SAFETY: plain epoll set-up on our own fds.
    let ep = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) } as isize)? as i32;
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: 0,
    };
    // SAFETY: as above.
    cvt(unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) } as isize)?;
    Ok(ep)
}

fn epoll_wait_one(ep: i32) -> io::Result<()> {
    let mut ev = libc::epoll_event { events: 0, u64: 0 };
    loop {
        // SAFETY: one event into a valid buffer.
        let n = unsafe { libc::epoll_wait(ep, &mut ev, 1, 10_000) };
        match cvt(n as isize) {
            Ok(1) => return Ok(()),
            Ok(_) => return Err(io::Error::other("epoll_wait: 10 s without an event")),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn make_side(mech: Mech, sh: &Shared, role: Role) -> io::Result<Box<dyn Side + '_>> {
    let (rd, wr) = sh.ends(role);
    Ok(match mech {
        Mech::RawFutex => {
            let (own, peer) = sh.words(role);
            Box::new(RawSide(own, peer))
        }
        Mech::Spin => {
            let (own, peer) = sh.words(role);
            Box::new(SpinSide(own, peer))
        }
        Mech::EventfdBlocking => Box::new(FdSide {
            rd,
            wr,
            len: 8,
            epoll: None,
        }),
        Mech::EventfdEpoll => Box::new(FdSide {
            rd,
            wr,
            len: 8,
            epoll: Some(epoll_with(rd)?),
        }),
        Mech::Pipe => Box::new(FdSide {
            rd,
            wr,
            len: 4,
            epoll: None,
        }),
        Mech::UnixStream => {
            let s = if role == Role::A {
                sh.sock.0
            } else {
                sh.sock.1
            };
            Box::new(FdSide {
                rd: s,
                wr: s,
                len: 4,
                epoll: None,
            })
        }
        Mech::PthreadCond => Box::new(CondSide(sh.cond_block())),
        Mech::AfxEpoll(via, _) => {
            via.select()?;
            let (own, peer) = Shared::word_indices(role);
            let handle = EventFdFutex::new(sh.mem.futex(own)?)?;
            let peer = sh.mem.futex(peer)?;
            let epoll = epoll_with(handle.as_raw_fd())?;
            Box::new(AfxEpollSide {
                handle,
                peer,
                epoll,
            })
        }
        Mech::AfxTokio(..) | Mech::TokioEventfd(_) => unreachable!("async"),
    })
}

/// Runs one side's rounds; A returns its samples.
///
/// A: `exchange(2k+1, 2k+2)` per round, timed. B: waits for 1, then
/// `exchange(2k+2, 2k+3)` (its next wait armed before or after its reply,
/// per `order`), and a final plain reply.
fn drive_sync(side: &mut dyn Side, role: Role, rounds: u32, order: Order) -> io::Result<Vec<u32>> {
    let mut samples = Vec::with_capacity(if role == Role::A { rounds as usize } else { 0 });
    if role == Role::A {
        for k in 0..rounds {
            let t = Instant::now();
            side.exchange(2 * k + 1, 2 * k + 2, order)?;
            samples.push(elapsed_ns(t));
        }
    } else if rounds > 0 {
        side.recv(1)?;
        for k in 0..rounds - 1 {
            side.exchange(2 * k + 2, 2 * k + 3, order)?;
        }
        side.send(2 * rounds)?;
    }
    Ok(samples)
}

fn elapsed_ns(t: Instant) -> u32 {
    t.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32
}

/// `wait_async` on the own word, `wake` on the peer's.
struct TokioSide {
    own: AsyncFutex,
    peer: AsyncFutex,
}

impl TokioSide {
    fn send(&self, v: u32) -> io::Result<()> {
        self.peer.word().store(v, Ordering::Release);
        self.peer.wake(1).map(drop)
    }

    async fn recv(&self, v: u32) -> io::Result<()> {
        loop {
            let seen = self.own.word().load(Ordering::Acquire);
            if seen == v {
                return Ok(());
            }
            self.own.wait_async(seen).await?;
        }
    }

    /// Publishes `out`, then waits for `want`. Arm first: the wait future
    /// is polled once (which arms it) before the peer is notified, and
    /// awaited after.
    async fn exchange(&self, out: u32, want: u32, order: Order) -> io::Result<()> {
        if order == Order::ArmFirst {
            let seen = self.own.word().load(Ordering::Acquire);
            if seen != want {
                let mut wait = pin!(self.own.wait_async(seen));
                let first = poll_once(wait.as_mut()).await;
                self.send(out)?;
                match first {
                    Some(r) => r?,
                    None => wait.await?,
                }
                return self.recv(want).await;
            }
        }
        self.send(out)?;
        self.recv(want).await
    }
}

/// Polls `fut` once with the task's context: `Some` if it completed.
async fn poll_once<F: Future>(mut fut: Pin<&mut F>) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        Poll::Ready(match fut.as_mut().poll(cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        })
    })
    .await
}

fn runtime(rt: Rt) -> io::Result<tokio::runtime::Runtime> {
    match rt {
        Rt::CurrentThread => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Rt::MultiThread => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    }
}

/// The async variants: a task on a fresh runtime runs the rounds.
fn drive_async(mech: Mech, sh: &Shared, role: Role, rounds: u32) -> io::Result<Vec<u32>> {
    match mech {
        Mech::AfxTokio(rt, via, order) => {
            via.select()?;
            let (own, peer) = Shared::word_indices(role);
            let side = TokioSide {
                own: sh.mem.futex(own)?,
                peer: sh.mem.futex(peer)?,
            };
            let rt = runtime(rt)?;
            rt.block_on(async move {
                tokio::spawn(async move {
                    let mut samples = Vec::with_capacity(rounds as usize);
                    if role == Role::A {
                        for k in 0..rounds {
                            let t = Instant::now();
                            side.exchange(2 * k + 1, 2 * k + 2, order).await?;
                            samples.push(elapsed_ns(t));
                        }
                    } else if rounds > 0 {
                        side.recv(1).await?;
                        for k in 0..rounds - 1 {
                            side.exchange(2 * k + 2, 2 * k + 3, order).await?;
                        }
                        side.send(2 * rounds)?;
                    }
                    Ok(samples)
                })
                .await
                .map_err(io::Error::other)?
            })
        }
        Mech::TokioEventfd(rt) => {
            let (rd, wr) = sh.ends(role);
            let rt = runtime(rt)?;
            rt.block_on(async move {
                tokio::spawn(async move {
                    // SAFETY: this process owns its inherited copy of `rd`;
                    // the AsyncFd owns it from here on and nothing else
                    // closes or replaces it.
                    let afd = unsafe { AsyncFd::register(OwnedFd::from_raw_fd(rd))? };
                    let recv = |v: u32| {
                        let afd = &afd;
                        async move {
                            loop {
                                let mut guard = afd.readable().await?;
                                match guard.try_io(|fd| sys::read_u64(fd.as_raw_fd(), 8)) {
                                    Ok(got) => return check(got?, v),
                                    Err(_would_block) => continue,
                                }
                            }
                        }
                    };
                    let mut samples = Vec::with_capacity(rounds as usize);
                    for k in 0..rounds {
                        if role == Role::A {
                            let t = Instant::now();
                            sys::write_u64(wr, u64::from(2 * k + 1), 8)?;
                            recv(2 * k + 2).await?;
                            samples.push(elapsed_ns(t));
                        } else {
                            recv(2 * k + 1).await?;
                            sys::write_u64(wr, u64::from(2 * k + 2), 8)?;
                        }
                    }
                    Ok(samples)
                })
                .await
                .map_err(io::Error::other)?
            })
        }
        _ => unreachable!("sync"),
    }
}

fn run_role(mech: Mech, sh: &Shared, role: Role, rounds: u32) -> io::Result<Vec<u32>> {
    match mech {
        Mech::AfxTokio(..) | Mech::TokioEventfd(_) => drive_async(mech, sh, role, rounds),
        _ => {
            let mut side = make_side(mech, sh, role)?;
            let order = mech.order().unwrap_or(Order::Natural);
            drive_sync(&mut *side, role, rounds, order)
        }
    }
}

/// Measures `rounds` round trips of `mech` with A on `cpus.0` and B on
/// `cpus.1`. Call inside [`sys::isolated`], first thing: an asyncfutex
/// mechanism sets its backend's environment (`AFX_URING_SUBMIT`) here,
/// before any asyncfutex call, and B inherits it.
pub fn measure(mech: Mech, cpus: (usize, usize), rounds: u32) -> Result<RunResult, String> {
    if let Some(via) = mech.via() {
        via.set_env();
    }
    let run = || -> io::Result<RunResult> {
        sys::pin(cpus.0);
        let sh = Shared::new(mech)?;
        let peer_cpu: &AtomicI32 = {
            let w = sh.mem.word(PEER_CPU / 4).expect("in bounds");
            // SAFETY: AtomicU32 and AtomicI32 have the same layout.
            unsafe { &*(w as *const AtomicU32).cast::<AtomicI32>() }
        };
        let pid = sys::fork_peer(|| {
            sys::pin(cpus.1);
            run_role(mech, &sh, Role::B, rounds)?;
            peer_cpu.store(sys::current_cpu(), Ordering::Release);
            Ok(())
        })?;
        let cs0 = sys::ctx_switches();
        let samples = match run_role(mech, &sh, Role::A, rounds) {
            Ok(s) => s,
            Err(e) => {
                sys::kill_peer(pid);
                return Err(e);
            }
        };
        let cs = sys::ctx_switches().saturating_sub(cs0);
        finish_run(pid, &samples, cs, peer_cpu, rounds)
    };
    run().map_err(|e| e.to_string())
}

/// A's end of a measured run: reaps B (`pid`) and makes the result from
/// A's samples (the first tenth dropped as warm-up), the context switches
/// A's threads made (`ctx_switches`) and the CPU B reported.
pub(crate) fn finish_run(
    pid: libc::pid_t,
    samples: &[u32],
    ctx_switches: u64,
    peer_cpu: &AtomicI32,
    rounds: u32,
) -> io::Result<RunResult> {
    let my_cpu = sys::current_cpu();
    sys::reap(pid)?;
    let warmup = samples.len() / 10;
    Ok(RunResult {
        samples_ns: samples[warmup..].to_vec(),
        cpus: (my_cpu, peer_cpu.load(Ordering::Acquire)),
        ctx_switches_a: ctx_switches as f64 / f64::from(rounds),
    })
}
