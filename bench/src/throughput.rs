//! Throughput: messages/s from a producer process to a consumer process,
//! through a shared-memory SPSC ring (futex notification only on
//! empty→non-empty and full→non-full), through the library's own
//! `asyncfutex::sync::channel` (4-byte frames, wakes only a sleeping side),
//! or through an AF_UNIX stream socket (one 4-byte write per message, reads
//! of up to 4 KiB).

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use asyncfutex::sync::{self as afx_sync, channel, ChannelHeader, Receiver, Sender};
use asyncfutex::{AsyncFutex, SharedMemory};
use serde::{Deserialize, Serialize};

use crate::sys::{self, cvt};
use crate::via::{self, Via};

/// Slots in the ring (a power of two).
const CAP: u32 = 1024;
const HEAD: usize = 0;
const TAIL: usize = 16;
const P_WAKES: usize = 32;
const C_WAKES: usize = 33;
const PEER_CPU: usize = 48;
const RING: usize = 64;
/// Byte offset of the `sync::channel` (past the ring and the counters).
const CHANNEL_AT: usize = 8192;

/// One transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Ring + blocking FUTEX_WAIT/FUTEX_WAKE.
    RingRawFutex,
    /// Ring + asyncfutex `wait_async` (tokio current-thread) on both sides.
    RingAfx(Via),
    /// `asyncfutex::sync::channel`, `send().await` / `recv().await`.
    SyncChannel(Via),
    /// AF_UNIX SOCK_STREAM socketpair.
    UnixStream,
}

impl Transport {
    pub fn all() -> Vec<Transport> {
        let mut v = vec![Transport::RingRawFutex];
        v.extend(via::ALL.map(Transport::RingAfx));
        v.extend(via::ALL.map(Transport::SyncChannel));
        v.push(Transport::UnixStream);
        v
    }

    pub fn id(self) -> String {
        match self {
            Transport::RingRawFutex => "ring_raw_futex".into(),
            Transport::RingAfx(v) => format!("ring_afx_{}", v.id()),
            Transport::SyncChannel(v) => format!("sync_channel_{}", v.id()),
            Transport::UnixStream => "unix_stream".into(),
        }
    }

    pub fn label(self) -> String {
        match self {
            Transport::RingRawFutex => "SPSC ring + raw futex".into(),
            Transport::RingAfx(v) => {
                format!("SPSC ring + asyncfutex wait_async (tokio), {}", v.label())
            }
            Transport::SyncChannel(v) => {
                format!("asyncfutex::sync::channel (tokio), {}", v.label())
            }
            Transport::UnixStream => "AF_UNIX stream, one write per message".into(),
        }
    }
}

/// One throughput run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TpResult {
    pub messages: u32,
    pub seconds: f64,
    pub msgs_per_sec: f64,
    /// Wake calls made by the producer and the consumer (rings), or all
    /// futex calls of each side (`sync::channel`, from `futex_calls()`).
    pub producer_wakes: u32,
    pub consumer_wakes: u32,
    pub cpus: (i32, i32),
}

fn item(i: u32) -> u32 {
    i.wrapping_mul(2_654_435_761) ^ 0x5bd1_e995
}

/// How a ring side sleeps and wakes.
enum Notifier {
    Raw,
    Afx { head: AsyncFutex, tail: AsyncFutex },
}

impl Notifier {
    async fn wait(&self, mem: &SharedMemory, index: usize, expected: u32) -> io::Result<()> {
        match self {
            Notifier::Raw => {
                sys::futex_wait(mem.word(index).expect("in bounds"), expected);
                Ok(())
            }
            Notifier::Afx { head, tail } => {
                let f = if index == HEAD { head } else { tail };
                f.wait_async(expected).await
            }
        }
    }

    fn wake(&self, mem: &SharedMemory, index: usize) -> io::Result<()> {
        match self {
            Notifier::Raw => {
                sys::futex_wake(mem.word(index).expect("in bounds"), 1);
            }
            Notifier::Afx { head, tail } => {
                let f = if index == HEAD { head } else { tail };
                f.wake(1)?;
            }
        }
        Ok(())
    }
}

fn w(mem: &SharedMemory, i: usize) -> &AtomicU32 {
    mem.word(i).expect("in bounds")
}

async fn produce(mem: &SharedMemory, nt: &Notifier, messages: u32) -> io::Result<()> {
    let mut head = 0u32;
    let mut wakes = 0;
    for i in 0..messages {
        loop {
            let tail = w(mem, TAIL).load(Ordering::SeqCst);
            if head.wrapping_sub(tail) < CAP {
                break;
            }
            nt.wait(mem, TAIL, tail).await?;
        }
        w(mem, RING + (head % CAP) as usize).store(item(i), Ordering::Relaxed);
        w(mem, HEAD).store(head.wrapping_add(1), Ordering::SeqCst);
        if w(mem, TAIL).load(Ordering::SeqCst) == head {
            wakes += 1;
            nt.wake(mem, HEAD)?;
        }
        head = head.wrapping_add(1);
    }
    w(mem, P_WAKES).store(wakes, Ordering::Release);
    Ok(())
}

/// Returns the time from the first item to the last.
async fn consume(mem: &SharedMemory, nt: &Notifier, messages: u32) -> io::Result<f64> {
    let mut tail = 0u32;
    let mut wakes = 0;
    let mut start = None;
    for i in 0..messages {
        loop {
            if w(mem, HEAD).load(Ordering::SeqCst) != tail {
                break;
            }
            nt.wait(mem, HEAD, tail).await?;
        }
        start.get_or_insert_with(Instant::now);
        let v = w(mem, RING + (tail % CAP) as usize).load(Ordering::Relaxed);
        if v != item(i) {
            return Err(io::Error::other(format!("item {i}: got {v:#x}")));
        }
        w(mem, TAIL).store(tail.wrapping_add(1), Ordering::SeqCst);
        if w(mem, HEAD).load(Ordering::SeqCst) == tail.wrapping_add(CAP) {
            wakes += 1;
            nt.wake(mem, TAIL)?;
        }
        tail = tail.wrapping_add(1);
    }
    w(mem, C_WAKES).store(wakes, Ordering::Release);
    Ok(start.map_or(0.0, |s| s.elapsed().as_secs_f64()))
}

/// The `sync::channel` producer: `try_send` first, `send().await` when full.
async fn produce_channel(mem: &Arc<SharedMemory>, messages: u32) -> io::Result<()> {
    let mut tx = Sender::open(mem, CHANNEL_AT)?;
    let before = afx_sync::futex_calls();
    for i in 0..messages {
        let frame = item(i).to_ne_bytes();
        if !tx.try_send(&frame)? {
            tx.send(&frame).await?;
        }
    }
    let calls = afx_sync::futex_calls() - before;
    w(mem, P_WAKES).store(calls as u32, Ordering::Release);
    Ok(())
}

/// The `sync::channel` consumer; returns the time from the first item to
/// the last.
async fn consume_channel(mem: &Arc<SharedMemory>, messages: u32) -> io::Result<f64> {
    let mut rx = Receiver::open(mem, CHANNEL_AT)?;
    let before = afx_sync::futex_calls();
    let mut buf = [0u8; 4];
    let mut start = None;
    for i in 0..messages {
        let n = match rx.try_recv(&mut buf)? {
            Some(n) => n,
            None => rx.recv(&mut buf).await?,
        };
        start.get_or_insert_with(Instant::now);
        let v = u32::from_ne_bytes(buf);
        if n != 4 || v != item(i) {
            return Err(io::Error::other(format!(
                "item {i}: got {v:#x} ({n} bytes)"
            )));
        }
    }
    let calls = afx_sync::futex_calls() - before;
    w(mem, C_WAKES).store(calls as u32, Ordering::Release);
    Ok(start.map_or(0.0, |s| s.elapsed().as_secs_f64()))
}

fn notifier(t: Transport, mem: &Arc<SharedMemory>) -> io::Result<Notifier> {
    Ok(match t {
        Transport::RingAfx(via) | Transport::SyncChannel(via) => {
            via.select()?;
            Notifier::Afx {
                head: mem.futex(HEAD)?,
                tail: mem.futex(TAIL)?,
            }
        }
        _ => Notifier::Raw,
    })
}

fn block_on<T>(f: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// Consumer on `cpus.0`, producer on `cpus.1` (call inside
/// [`sys::isolated`]).
/// Measures `messages` messages of `t`. Call inside [`sys::isolated`],
/// first thing: the backend's environment is set here, before any
/// asyncfutex call, and the peer inherits it.
pub fn measure(t: Transport, cpus: (usize, usize), messages: u32) -> Result<TpResult, String> {
    if let Transport::RingAfx(via) | Transport::SyncChannel(via) = t {
        via.set_env();
    }
    let run = || -> io::Result<TpResult> {
        sys::pin(cpus.0);
        let channel_size = ChannelHeader::size_for(4, CAP).expect("valid channel");
        let mem = Arc::new(SharedMemory::anonymous(CHANNEL_AT + channel_size)?);
        if let Transport::SyncChannel(_) = t {
            channel::create(&mem, CHANNEL_AT, 4, CAP)?;
        }
        let mut sv = [-1; 2];
        if t == Transport::UnixStream {
            // SAFETY: one socketpair.
            cvt(unsafe {
                libc::socketpair(
                    libc::AF_UNIX,
                    libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                    0,
                    sv.as_mut_ptr(),
                )
            } as isize)?;
        }
        let pmem = Arc::clone(&mem);
        let pid = sys::fork_peer(move || {
            sys::pin(cpus.1);
            if t == Transport::UnixStream {
                sys::close(sv[0]);
                for i in 0..messages {
                    sys::write_u64(sv[1], u64::from(item(i)), 4)?;
                }
            } else if let Transport::SyncChannel(_) = t {
                notifier(t, &pmem)?;
                block_on(produce_channel(&pmem, messages))?;
            } else {
                let nt = notifier(t, &pmem)?;
                block_on(produce(&pmem, &nt, messages))?;
            }
            w(&pmem, PEER_CPU).store(sys::current_cpu() as u32, Ordering::Release);
            Ok(())
        })?;
        let seconds = if t == Transport::UnixStream {
            sys::close(sv[1]);
            consume_socket(sv[0], messages)
        } else if let Transport::SyncChannel(_) = t {
            notifier(t, &mem).and_then(|_| block_on(consume_channel(&mem, messages)))
        } else {
            notifier(t, &mem).and_then(|nt| block_on(consume(&mem, &nt, messages)))
        };
        let seconds = match seconds {
            Ok(s) => s,
            Err(e) => {
                sys::kill_peer(pid);
                return Err(e);
            }
        };
        let my_cpu = sys::current_cpu();
        sys::reap(pid)?;
        Ok(TpResult {
            messages,
            seconds,
            msgs_per_sec: f64::from(messages - 1) / seconds,
            producer_wakes: w(&mem, P_WAKES).load(Ordering::Acquire),
            consumer_wakes: w(&mem, C_WAKES).load(Ordering::Acquire),
            cpus: (my_cpu, w(&mem, PEER_CPU).load(Ordering::Acquire) as i32),
        })
    };
    run().map_err(|e| e.to_string())
}

fn consume_socket(fd: i32, messages: u32) -> io::Result<f64> {
    let mut buf = vec![0u8; 4096];
    let mut pending: Vec<u8> = Vec::new();
    let mut next = 0u32;
    let mut start = None;
    while next < messages {
        // SAFETY: reading into our buffer.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        let n = match cvt(r) {
            Ok(0) => return Err(io::Error::other("socket closed early")),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        start.get_or_insert_with(Instant::now);
        pending.extend_from_slice(&buf[..n]);
        let whole = pending.len() / 4 * 4;
        for chunk in pending[..whole].chunks_exact(4) {
            let v = u32::from_ne_bytes(chunk.try_into().expect("4 bytes"));
            if v != item(next) {
                return Err(io::Error::other(format!("item {next}: got {v:#x}")));
            }
            next += 1;
        }
        pending.drain(..whole);
    }
    Ok(start.map_or(0.0, |s| s.elapsed().as_secs_f64()))
}
