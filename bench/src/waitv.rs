//! Round trips through a wait on *any of 8 words*: one vector wait
//! (`EventFdFutex::arm_any`, the pattern of the C API's `afx_waitv_async` +
//! `afx_ack_index`, one eventfd in epoll) against what a program does
//! without it: 8 handles, each with its own single wait and eventfd, all 8
//! in one epoll set. Kernel baselines: raw `futex_waitv(2)` over the same
//! 8 words, and the raw single-word FUTEX_WAIT/FUTEX_WAKE round trip of
//! the ping-pong section (the ratio's denominator).
//!
//! Each process owns 8 words (each on its own cache line) and waits on all
//! of them. In round `k` the word used is `j = k % 8`: A stores `2k+1` into
//! B's word `j` and wakes it, B sees it and stores `2k+2` into A's word `j`
//! and wakes it. Both sides use the same mechanism, in the natural order
//! (store + wake the peer, then arm the own wait), and after every
//! completion look at all 8 of their words, as a real server would.
//!
//! The 8-handle side keeps its handles armed across rounds, as an event
//! loop does: only the handle that completed is re-armed (after the reply
//! is sent), so it pays for one arm per round while the vector wait
//! re-arms all 8 words every round. That is the comparison a user faces.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use asyncfutex::{AsyncFutex, EventFdFutex, SharedMemory};

use crate::pingpong::{self, Mech, RunResult};
use crate::sys::{self, cvt, FutexWaitv};
use crate::via::{self, Via};

/// Words per side (and entries per vector wait).
pub const WORDS: usize = 8;

/// Byte offsets in the shared page: A's 8 words, B's 8 words (64 bytes
/// apart), B's CPU.
const WORDS_A: usize = 0;
const WORDS_B: usize = 64 * WORDS;
const STRIDE: usize = 64;
const PEER_CPU: usize = 2 * 64 * WORDS;

/// One measured mechanism of this section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WMech {
    /// The single-word raw futex ping-pong ([`pingpong`]'s baseline).
    RawFutex,
    /// Blocking `futex_waitv(2)` over the 8 words, plain `FUTEX_WAKE`.
    RawWaitv,
    /// One vector wait over the 8 words on one `EventFdFutex`, its eventfd
    /// in epoll.
    Vector(Via),
    /// 8 `EventFdFutex` handles, 8 eventfds in one epoll set.
    Singles(Via),
}

impl WMech {
    /// Every mechanism, baselines first.
    pub fn all() -> Vec<WMech> {
        let mut v = vec![WMech::RawFutex, WMech::RawWaitv];
        for via in via::ALL {
            v.push(WMech::Vector(via));
            v.push(WMech::Singles(via));
        }
        v
    }

    /// The asyncfutex backend configuration, if this is an asyncfutex row.
    pub fn via(self) -> Option<Via> {
        match self {
            WMech::Vector(v) | WMech::Singles(v) => Some(v),
            _ => None,
        }
    }

    /// The arming order: the natural one for the asyncfutex rows.
    pub fn order(self) -> Option<pingpong::Order> {
        self.via().map(|_| pingpong::Order::Natural)
    }

    /// What a vector row is compared with: 8 single waits on the same
    /// backend.
    pub fn base(self) -> Option<WMech> {
        match self {
            WMech::Vector(v) => Some(WMech::Singles(v)),
            _ => None,
        }
    }

    /// A stable identifier (JSON key).
    pub fn id(self) -> String {
        match self {
            WMech::RawFutex => "raw_futex".into(),
            WMech::RawWaitv => "raw_futex_waitv_8".into(),
            WMech::Vector(v) => format!("afx_waitv_8_{}_natural", v.id()),
            WMech::Singles(v) => format!("afx_8_singles_epoll_{}_natural", v.id()),
        }
    }

    /// A human label.
    pub fn label(self) -> String {
        match self {
            WMech::RawFutex => "raw FUTEX_WAIT/FUTEX_WAKE, 1 word (baseline)".into(),
            WMech::RawWaitv => "raw futex_waitv over 8 words, blocking".into(),
            WMech::Vector(v) => format!(
                "asyncfutex 1 vector wait on 8 words, 1 eventfd + epoll, {}",
                v.label()
            ),
            WMech::Singles(v) => format!(
                "asyncfutex 8 single waits, 8 eventfds in 1 epoll, {}",
                v.label()
            ),
        }
    }
}

/// A side: publishes into the peer's word `j`, waits for its own word `j`.
trait Side {
    /// Stores `v` into the peer's word `j`, then wakes it.
    fn send(&mut self, j: usize, v: u32) -> io::Result<()>;
    /// Returns once the own word `j` holds `v`.
    fn recv(&mut self, j: usize, v: u32) -> io::Result<()>;
}

struct Words {
    own: Vec<AsyncFutex>,
    peer: Vec<AsyncFutex>,
}

impl Words {
    fn send(&self, j: usize, v: u32) -> io::Result<()> {
        self.peer[j].word().store(v, Ordering::Release);
        self.peer[j].wake(1)?;
        Ok(())
    }

    /// All 8 own words, as a server re-checks them after a completion.
    fn load(&self) -> [u32; WORDS] {
        std::array::from_fn(|i| self.own[i].word().load(Ordering::Acquire))
    }
}

/// Blocking `futex_waitv(2)`, no library.
struct RawWaitvSide(Words);
impl Side for RawWaitvSide {
    fn send(&mut self, j: usize, v: u32) -> io::Result<()> {
        self.0.send(j, v)
    }
    fn recv(&mut self, j: usize, v: u32) -> io::Result<()> {
        loop {
            let seen = self.0.load();
            if seen[j] == v {
                return Ok(());
            }
            let entries: [FutexWaitv; WORDS] =
                std::array::from_fn(|i| FutexWaitv::new(self.0.own[i].word(), seen[i]));
            match sys::futex_waitv(&entries) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// One vector wait on one handle's eventfd: arm all 8, epoll, ack.
struct VectorSide {
    words: Words,
    handle: EventFdFutex,
    epoll: i32,
}
impl Side for VectorSide {
    fn send(&mut self, j: usize, v: u32) -> io::Result<()> {
        self.words.send(j, v)
    }
    fn recv(&mut self, j: usize, v: u32) -> io::Result<()> {
        loop {
            let seen = self.words.load();
            if seen[j] == v {
                return Ok(());
            }
            let entries: [(&AsyncFutex, u32); WORDS] =
                std::array::from_fn(|i| (&self.words.own[i], seen[i]));
            self.handle.arm_any(&entries)?;
            epoll_wait(self.epoll, &mut [libc::epoll_event { events: 0, u64: 0 }])?;
            if self.handle.ack_index()?.is_none() {
                // Readable without a completion: disarm; the loop re-checks
                // the words and arms again.
                self.handle.cancel();
            }
        }
    }
}

/// 8 handles, each armed on its own word, 8 eventfds in one epoll set. A
/// handle stays armed until it completes; it is armed again when the side
/// next waits, i.e. after its reply, with the value read when it completed
/// (the value handled: a change since then completes it at once).
struct SinglesSide {
    words: Words,
    handles: Vec<EventFdFutex>,
    armed: [bool; WORDS],
    /// Each word's value when its handle last completed.
    seen: [u32; WORDS],
    epoll: i32,
}
impl Side for SinglesSide {
    fn send(&mut self, j: usize, v: u32) -> io::Result<()> {
        self.words.send(j, v)
    }
    fn recv(&mut self, j: usize, v: u32) -> io::Result<()> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; WORDS];
        loop {
            for (i, h) in self.handles.iter().enumerate() {
                if !self.armed[i] {
                    h.arm(self.seen[i])?;
                    self.armed[i] = true;
                }
            }
            let n = epoll_wait(self.epoll, &mut events)?;
            for ev in &events[..n] {
                let i = ev.u64 as usize;
                if self.handles[i].ack()? {
                    self.armed[i] = false;
                    self.seen[i] = self.handles[i].futex().word().load(Ordering::Acquire);
                }
            }
            if self.seen[j] == v {
                return Ok(());
            }
        }
    }
}

/// epoll_wait into `events` (EINTR retried: io_uring completions run as
/// task_work and interrupt it); how many are ready.
fn epoll_wait(ep: i32, events: &mut [libc::epoll_event]) -> io::Result<usize> {
    loop {
        // SAFETY: a valid buffer of `events.len()` events.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 10_000) };
        match cvt(n as isize) {
            Ok(0) => return Err(io::Error::other("epoll_wait: 10 s without an event")),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn epoll_add(ep: i32, fd: i32, data: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: data,
    };
    // SAFETY: plain epoll_ctl on our own fds.
    cvt(unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) } as isize)?;
    Ok(())
}

fn epoll_new() -> io::Result<i32> {
    // SAFETY: plain epoll creation.
    Ok(cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) } as isize)? as i32)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    A,
    B,
}

/// Word indices (own, peer) of `role`'s word `i`.
fn indices(role: Role, i: usize) -> (usize, usize) {
    let a = (WORDS_A + i * STRIDE) / 4;
    let b = (WORDS_B + i * STRIDE) / 4;
    match role {
        Role::A => (a, b),
        Role::B => (b, a),
    }
}

fn make_side(mech: WMech, mem: &Arc<SharedMemory>, role: Role) -> io::Result<Box<dyn Side>> {
    if let Some(via) = mech.via() {
        via.select()?;
    }
    let mut own = Vec::with_capacity(WORDS);
    let mut peer = Vec::with_capacity(WORDS);
    for i in 0..WORDS {
        let (o, p) = indices(role, i);
        own.push(mem.futex(o)?);
        peer.push(mem.futex(p)?);
    }
    let words = Words { own, peer };
    Ok(match mech {
        WMech::RawFutex => unreachable!("measured by pingpong"),
        WMech::RawWaitv => Box::new(RawWaitvSide(words)),
        WMech::Vector(_) => {
            // Any handle owns the vector wait: one on the own word 0.
            let handle = EventFdFutex::new(mem.futex(indices(role, 0).0)?)?;
            let epoll = epoll_new()?;
            epoll_add(epoll, handle.as_raw_fd(), 0)?;
            Box::new(VectorSide {
                words,
                handle,
                epoll,
            })
        }
        WMech::Singles(_) => {
            let epoll = epoll_new()?;
            let mut handles = Vec::with_capacity(WORDS);
            for i in 0..WORDS {
                let h = EventFdFutex::new(mem.futex(indices(role, i).0)?)?;
                epoll_add(epoll, h.as_raw_fd(), i as u64)?;
                handles.push(h);
            }
            Box::new(SinglesSide {
                words,
                handles,
                armed: [false; WORDS],
                seen: [0; WORDS],
                epoll,
            })
        }
    })
}

/// A: per round `k`, send `2k+1` on word `k % 8` and wait for `2k+2`
/// there, timed. B: the mirror, replying before it arms its next wait.
fn drive(side: &mut dyn Side, role: Role, rounds: u32) -> io::Result<Vec<u32>> {
    let word = |k: u32| (k as usize) % WORDS;
    let mut samples = Vec::with_capacity(if role == Role::A { rounds as usize } else { 0 });
    if role == Role::A {
        for k in 0..rounds {
            let t = Instant::now();
            side.send(word(k), 2 * k + 1)?;
            side.recv(word(k), 2 * k + 2)?;
            samples.push(t.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
        }
    } else {
        for k in 0..rounds {
            side.recv(word(k), 2 * k + 1)?;
            side.send(word(k), 2 * k + 2)?;
        }
    }
    Ok(samples)
}

/// Measures `rounds` round trips of `mech` with A on `cpus.0` and B on
/// `cpus.1`. Call inside [`sys::isolated`], first thing (see
/// [`pingpong::measure`]).
pub fn measure(mech: WMech, cpus: (usize, usize), rounds: u32) -> Result<RunResult, String> {
    if mech == WMech::RawFutex {
        return pingpong::measure(Mech::RawFutex, cpus, rounds);
    }
    if let Some(via) = mech.via() {
        via.set_env();
    }
    let run = || -> io::Result<RunResult> {
        sys::pin(cpus.0);
        let mem = Arc::new(SharedMemory::anonymous(4096)?);
        let peer_cpu: &AtomicI32 = {
            let w = mem.word(PEER_CPU / 4).expect("in bounds");
            // SAFETY: AtomicU32 and AtomicI32 have the same layout.
            unsafe { &*(w as *const AtomicU32).cast::<AtomicI32>() }
        };
        let pid = sys::fork_peer(|| {
            sys::pin(cpus.1);
            let mut side = make_side(mech, &mem, Role::B)?;
            drive(&mut *side, Role::B, rounds)?;
            peer_cpu.store(sys::current_cpu(), Ordering::Release);
            Ok(())
        })?;
        let measured = make_side(mech, &mem, Role::A).and_then(|mut side| {
            let cs0 = sys::ctx_switches();
            let samples = drive(&mut *side, Role::A, rounds)?;
            Ok((samples, sys::ctx_switches().saturating_sub(cs0)))
        });
        let (samples, cs) = match measured {
            Ok(m) => m,
            Err(e) => {
                sys::kill_peer(pid);
                return Err(e);
            }
        };
        pingpong::finish_run(pid, &samples, cs, peer_cpu, rounds)
    };
    run().map_err(|e| e.to_string())
}
