//! Cross-process ping-pong round trips over a shared page, one mechanism at
//! a time, both processes pinned.
//!
//! Process A (the measuring one) publishes `2k+1` and waits for `2k+2`;
//! process B waits for `2k+1` and publishes `2k+2`. Both processes use the
//! same mechanism. A round trip is timed in A with `Instant`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use asyncfutex::{BackendKind, EventFdFutex, SharedMemory};
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;

use crate::sys::{self, cvt};

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
    AfxEpoll(BackendKind),
    AfxTokio(Rt, BackendKind),
    TokioEventfd(Rt),
}

impl Mech {
    /// Every mechanism, baseline first.
    pub fn all() -> Vec<Mech> {
        use BackendKind::{IoUring, Thread};
        use Rt::{CurrentThread as Ct, MultiThread as Mt};
        vec![
            Mech::RawFutex,
            Mech::Spin,
            Mech::EventfdBlocking,
            Mech::EventfdEpoll,
            Mech::Pipe,
            Mech::UnixStream,
            Mech::PthreadCond,
            Mech::AfxEpoll(IoUring),
            Mech::AfxEpoll(Thread),
            Mech::TokioEventfd(Ct),
            Mech::AfxTokio(Ct, IoUring),
            Mech::AfxTokio(Ct, Thread),
            Mech::TokioEventfd(Mt),
            Mech::AfxTokio(Mt, IoUring),
            Mech::AfxTokio(Mt, Thread),
        ]
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
            Mech::AfxEpoll(k) => format!("afx_epoll_{}", k.name()),
            Mech::AfxTokio(r, k) => format!("afx_tokio_{}_{}", rt(r), k.name()),
            Mech::TokioEventfd(r) => format!("tokio_eventfd_{}", rt(r)),
        }
    }

    /// A human label.
    pub fn label(self) -> String {
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
            Mech::AfxEpoll(k) => format!("asyncfutex EventFdFutex + epoll, {}", k.name()),
            Mech::AfxTokio(r, k) => format!("asyncfutex wait_async, tokio {}, {}", rt(r), k.name()),
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

/// Byte offsets in the shared page.
const WORD: usize = 0;
const PEER_CPU: usize = 16;
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

    fn word(&self) -> &AtomicU32 {
        self.mem.word(WORD / 4).expect("in bounds")
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
}

fn check(got: u64, want: u32) -> io::Result<()> {
    if got == u64::from(want) {
        Ok(())
    } else {
        Err(io::Error::other(format!("got {got}, want {want}")))
    }
}

struct RawSide<'a>(&'a AtomicU32);
impl Side for RawSide<'_> {
    fn send(&mut self, v: u32) -> io::Result<()> {
        self.0.store(v, Ordering::Release);
        sys::futex_wake(self.0, 1);
        Ok(())
    }
    fn recv(&mut self, v: u32) -> io::Result<()> {
        loop {
            let seen = self.0.load(Ordering::Acquire);
            if seen == v {
                return Ok(());
            }
            sys::futex_wait(self.0, seen);
        }
    }
}

struct SpinSide<'a>(&'a AtomicU32);
impl Side for SpinSide<'_> {
    fn send(&mut self, v: u32) -> io::Result<()> {
        self.0.store(v, Ordering::Release);
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

struct AfxEpollSide {
    handle: EventFdFutex,
    epoll: i32,
}
impl Side for AfxEpollSide {
    fn send(&mut self, v: u32) -> io::Result<()> {
        self.handle.futex().word().store(v, Ordering::Release);
        self.handle.futex().wake(1)?;
        Ok(())
    }
    fn recv(&mut self, v: u32) -> io::Result<()> {
        loop {
            let seen = self.handle.futex().word().load(Ordering::Acquire);
            if seen == v {
                return Ok(());
            }
            self.handle.arm(seen)?;
            epoll_wait_one(self.epoll)?;
            if !self.handle.ack()? {
                self.handle.cancel();
            }
        }
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
        Mech::RawFutex => Box::new(RawSide(sh.word())),
        Mech::Spin => Box::new(SpinSide(sh.word())),
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
        Mech::AfxEpoll(kind) => {
            asyncfutex::select_backend(Some(kind))?;
            let handle = EventFdFutex::new(sh.mem.futex(WORD / 4)?)?;
            let epoll = epoll_with(handle.as_raw_fd())?;
            Box::new(AfxEpollSide { handle, epoll })
        }
        Mech::AfxTokio(..) | Mech::TokioEventfd(_) => unreachable!("async"),
    })
}

/// Runs one side's rounds; A returns its samples.
fn drive_sync(side: &mut dyn Side, role: Role, rounds: u32) -> io::Result<Vec<u32>> {
    let mut samples = Vec::with_capacity(if role == Role::A { rounds as usize } else { 0 });
    for k in 0..rounds {
        if role == Role::A {
            let t = Instant::now();
            side.send(2 * k + 1)?;
            side.recv(2 * k + 2)?;
            samples.push(t.elapsed().as_nanos().min(u32::MAX as u128) as u32);
        } else {
            side.recv(2 * k + 1)?;
            side.send(2 * k + 2)?;
        }
    }
    Ok(samples)
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
        Mech::AfxTokio(rt, kind) => {
            asyncfutex::select_backend(Some(kind))?;
            let futex = Arc::new(sh.mem.futex(WORD / 4)?);
            let rt = runtime(rt)?;
            rt.block_on(async move {
                tokio::spawn(async move {
                    let recv = |v: u32| {
                        let futex = Arc::clone(&futex);
                        async move {
                            loop {
                                let seen = futex.word().load(Ordering::Acquire);
                                if seen == v {
                                    return Ok::<(), io::Error>(());
                                }
                                futex.wait_async(seen).await?;
                            }
                        }
                    };
                    let send = |v: u32| {
                        futex.word().store(v, Ordering::Release);
                        futex.wake(1).map(drop)
                    };
                    let mut samples = Vec::with_capacity(rounds as usize);
                    for k in 0..rounds {
                        if role == Role::A {
                            let t = Instant::now();
                            send(2 * k + 1)?;
                            recv(2 * k + 2).await?;
                            samples.push(t.elapsed().as_nanos().min(u32::MAX as u128) as u32);
                        } else {
                            recv(2 * k + 1).await?;
                            send(2 * k + 2)?;
                        }
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
                            samples.push(t.elapsed().as_nanos().min(u32::MAX as u128) as u32);
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
            drive_sync(&mut *side, role, rounds)
        }
    }
}

/// Measures `rounds` round trips of `mech` with A on `cpus.0` and B on
/// `cpus.1`. Call inside [`sys::isolated`].
pub fn measure(mech: Mech, cpus: (usize, usize), rounds: u32) -> Result<RunResult, String> {
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
        let cs1 = sys::ctx_switches();
        let my_cpu = sys::current_cpu();
        sys::reap(pid)?;
        let warmup = samples.len() / 10;
        Ok(RunResult {
            samples_ns: samples[warmup..].to_vec(),
            cpus: (my_cpu, peer_cpu.load(Ordering::Acquire)),
            ctx_switches_a: cs1.saturating_sub(cs0) as f64 / f64::from(rounds),
        })
    };
    run().map_err(|e| e.to_string())
}
