//! A single-producer, single-consumer channel of fixed-size byte frames in
//! shared memory: [`Sender`] in one process (or task), [`Receiver`] in
//! another.
//!
//! # Shared layout ([`ChannelHeader`] + ring, version 1)
//! The header is 192 bytes, align 64; the ring follows it at offset 192.
//! | offset | type  | field        | meaning |
//! |-------:|-------|--------------|---------|
//! | 0      | `u32` | `version`    | [`CHANNEL_VERSION`] (`0x4348_0001`) |
//! | 4      | `u32` | `frame_size` | largest frame, in bytes |
//! | 8      | `u32` | `capacity`   | frames in the ring (a power of two) |
//! | 12     | `u32` | `slot_size`  | bytes per slot: `4 + frame_size` rounded up to 8 |
//! | 64     | `u32` | `head`       | frames sent (written by the sender only); futex word |
//! | 128    | `u32` | `tail`       | frames received (written by the receiver only); futex word |
//! | 192    | slots | ring         | slot `i % capacity` at `192 + (i % capacity) * slot_size`: a `u32` length, then the bytes |
//!
//! `head` and `tail` run freely (wrapping); the ring holds `head - tail`
//! frames. Send: full if `head - tail == capacity`; write the slot, store
//! `head + 1`, then — only if the ring was empty before (`tail == head`) —
//! `FUTEX_WAKE(head, 1)`. Receive: empty if `head == tail`; read the slot,
//! store `tail + 1`, then — only if the ring was full before —
//! `FUTEX_WAKE(tail, 1)`. A receiver sleeps with `FUTEX_WAIT(head, tail)`,
//! a sender with `FUTEX_WAIT(tail, seen tail)`: exact values, so the kernel
//! refuses to sleep on a stale view. Each side stores its counter and then
//! loads the other's, sequentially consistent, so one of them always sees
//! the other's move. So a futex call happens only on the empty→non-empty
//! and full→non-full transitions, never in between.
//!
//! One sender and one receiver at a time (the handles take `&mut self`;
//! across processes that is the user's contract).

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::Place;
use crate::{AsyncFutex, SharedMemory};

/// `version` of a [`ChannelHeader`]: `'C' 'H'` and layout version 1.
///
/// (The C header has it as `AFX_*_VERSION`.)
///
/// cbindgen:ignore
pub const CHANNEL_VERSION: u32 = 0x4348_0001;

/// The shared header of a channel (layout in the [module docs](self)).
#[repr(C, align(64))]
#[derive(Debug)]
pub struct ChannelHeader {
    version: AtomicU32,
    frame_size: AtomicU32,
    capacity: AtomicU32,
    slot_size: AtomicU32,
    _reserved0: [u32; 12],
    head: AtomicU32,
    _reserved1: [u32; 15],
    tail: AtomicU32,
    _reserved2: [u32; 15],
}

const HEADER: usize = std::mem::size_of::<ChannelHeader>();
const _: () = assert!(HEADER == 192);

fn slot_size_of(frame_size: u32) -> Option<u32> {
    frame_size.checked_add(4 + 7).map(|n| n & !7)
}

impl ChannelHeader {
    /// Bytes a channel of `capacity` frames of up to `frame_size` bytes
    /// needs (header and ring), or `None` for invalid parameters
    /// (`capacity` not a power of two, zero sizes, overflow).
    pub fn size_for(frame_size: u32, capacity: u32) -> Option<usize> {
        if frame_size == 0 || !capacity.is_power_of_two() || capacity > 1 << 30 {
            return None;
        }
        let slot = slot_size_of(frame_size)? as usize;
        slot.checked_mul(capacity as usize)?.checked_add(HEADER)
    }

    /// The total size of this initialised channel in bytes.
    pub fn total_size(&self) -> usize {
        Self::size_for(
            self.frame_size.load(Ordering::Relaxed),
            self.capacity.load(Ordering::Relaxed),
        )
        .unwrap_or(0)
    }

    /// Frames queued now (`head - tail`).
    pub fn len(&self) -> u32 {
        let tail = self.tail.load(Ordering::SeqCst);
        self.head.load(Ordering::SeqCst).wrapping_sub(tail)
    }

    /// Whether no frame is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The largest frame, in bytes.
    pub fn frame_size(&self) -> u32 {
        self.frame_size.load(Ordering::Relaxed)
    }

    /// Ring capacity, in frames.
    pub fn capacity(&self) -> u32 {
        self.capacity.load(Ordering::Relaxed)
    }
}

/// Initialises a channel at byte `offset` of `mem` (overwriting it).
///
/// # Errors
/// `EINVAL` for invalid parameters (see [`ChannelHeader::size_for`]), or if
/// it does not fit or `offset` is not 64-aligned.
pub fn create(
    mem: &Arc<SharedMemory>,
    offset: usize,
    frame_size: u32,
    capacity: u32,
) -> io::Result<()> {
    let size =
        ChannelHeader::size_for(frame_size, capacity).ok_or_else(|| super::errno(libc::EINVAL))?;
    let place = Place::<ChannelHeader>::in_memory(mem, offset, size)?;
    init(place.get(), frame_size, capacity);
    Ok(())
}

/// Initialises the header (the caller checked the parameters).
pub(crate) fn init(h: &ChannelHeader, frame_size: u32, capacity: u32) {
    h.frame_size.store(frame_size, Ordering::Relaxed);
    h.capacity.store(capacity, Ordering::Relaxed);
    h.slot_size
        .store(slot_size_of(frame_size).unwrap_or(0), Ordering::Relaxed);
    h.head.store(0, Ordering::Relaxed);
    h.tail.store(0, Ordering::Relaxed);
    h.version.store(CHANNEL_VERSION, Ordering::Release);
}

/// What both ends share: the place, the two futexes and the geometry.
struct Ring {
    head: AsyncFutex,
    tail: AsyncFutex,
    frame_size: u32,
    mask: u32,
    slot_size: usize,
    place: Place<ChannelHeader>,
}

impl Ring {
    fn open_in(mem: &Arc<SharedMemory>, offset: usize) -> io::Result<Ring> {
        let place = Place::<ChannelHeader>::in_memory(mem, offset, HEADER)?;
        super::check_version(&place.get().version, CHANNEL_VERSION)?;
        let size = ChannelHeader::size_for(place.get().frame_size(), place.get().capacity())
            .ok_or_else(|| super::errno(libc::EPROTO))?;
        // Check the whole ring fits.
        Place::<ChannelHeader>::in_memory(mem, offset, size)?;
        Self::with_place(place)
    }

    /// # Safety
    /// The whole channel (`total_size` bytes) stays mapped.
    unsafe fn open_raw(header: *const ChannelHeader) -> io::Result<Ring> {
        // SAFETY: forwarded contract.
        let place = unsafe { Place::raw(header)? };
        super::check_version(&place.get().version, CHANNEL_VERSION)?;
        Self::with_place(place)
    }

    fn with_place(place: Place<ChannelHeader>) -> io::Result<Ring> {
        let h = place.get();
        let (frame_size, capacity) = (h.frame_size(), h.capacity());
        if ChannelHeader::size_for(frame_size, capacity).is_none()
            || h.slot_size.load(Ordering::Relaxed) != slot_size_of(frame_size).unwrap_or(0)
        {
            return Err(super::errno(libc::EPROTO));
        }
        Ok(Ring {
            head: place.futex(&h.head)?,
            tail: place.futex(&h.tail)?,
            frame_size,
            mask: capacity - 1,
            slot_size: slot_size_of(frame_size).unwrap_or(0) as usize,
            place,
        })
    }

    fn header(&self) -> &ChannelHeader {
        self.place.get()
    }

    fn capacity(&self) -> u32 {
        self.mask + 1
    }

    /// The slot of counter value `i`.
    fn slot(&self, i: u32) -> *mut u8 {
        let offset = HEADER + (i & self.mask) as usize * self.slot_size;
        // SAFETY: in bounds: the whole ring is mapped (checked at open, or
        // the `from_ptr` contract).
        unsafe { self.place.ptr.cast::<u8>().cast_mut().add(offset) }
    }
}

/// The sending end of a channel.
pub struct Sender {
    ring: Ring,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("queued", &self.ring.header().len())
            .finish()
    }
}

/// Why a `try_send` did not send.
enum Full {
    /// The ring is full; the receiver's `tail` was this.
    Tail(u32),
}

impl Sender {
    /// Opens the sending end of the channel at byte `offset` of `mem`.
    ///
    /// # Errors
    /// `EINVAL` (does not fit, misaligned), `EPROTO` (not an initialised
    /// channel), backend errors.
    pub fn open(mem: &Arc<SharedMemory>, offset: usize) -> io::Result<Sender> {
        Ok(Sender {
            ring: Ring::open_in(mem, offset)?,
        })
    }

    /// Opens the sending end of the initialised channel at `header`.
    ///
    /// # Safety
    /// The whole channel ([`ChannelHeader::total_size`] bytes) must stay
    /// mapped until the handle is dropped.
    ///
    /// # Errors
    /// `EINVAL` (NULL or misaligned), `EPROTO`, backend errors.
    pub unsafe fn from_ptr(header: *const ChannelHeader) -> io::Result<Sender> {
        Ok(Sender {
            // SAFETY: forwarded contract.
            ring: unsafe { Ring::open_raw(header)? },
        })
    }

    /// The shared header.
    pub fn header(&self) -> &ChannelHeader {
        self.ring.header()
    }

    pub(crate) fn tail_futex(&self) -> &AsyncFutex {
        &self.ring.tail
    }

    fn push(&mut self, frame: &[u8]) -> io::Result<Result<(), Full>> {
        let ring = &self.ring;
        if frame.len() > ring.frame_size as usize {
            return Err(super::errno(libc::EMSGSIZE));
        }
        let h = ring.header();
        let head = h.head.load(Ordering::Relaxed);
        let tail = h.tail.load(Ordering::SeqCst);
        if head.wrapping_sub(tail) >= ring.capacity() {
            return Ok(Err(Full::Tail(tail)));
        }
        let slot = ring.slot(head);
        // SAFETY: the slot is ours until `head` moves past it: the receiver
        // reads it only after the SeqCst store below; it holds 4 + frame_size
        // bytes, 8-aligned.
        unsafe {
            slot.cast::<u32>().write(frame.len() as u32);
            std::ptr::copy_nonoverlapping(frame.as_ptr(), slot.add(4), frame.len());
        }
        h.head.store(head.wrapping_add(1), Ordering::SeqCst);
        if h.tail.load(Ordering::SeqCst) == head {
            // Empty -> non-empty: the receiver may be asleep on `head`.
            super::wake(&ring.head, 1)?;
        }
        Ok(Ok(()))
    }

    /// Sends `frame` if there is room: `Ok(false)` when the ring is full.
    ///
    /// # Errors
    /// `EMSGSIZE` if `frame` is longer than the frame size.
    pub fn try_send(&mut self, frame: &[u8]) -> io::Result<bool> {
        Ok(self.push(frame)?.is_ok())
    }

    /// Sends `frame`, waiting asynchronously while the ring is full.
    /// Cancel-safe: a dropped future has sent nothing.
    ///
    /// # Errors
    /// `EMSGSIZE`, `EFAULT`, backend errors.
    pub async fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        loop {
            match self.push(frame)? {
                Ok(()) => return Ok(()),
                Err(Full::Tail(tail)) => super::wait_async(&self.ring.tail, tail).await?,
            }
        }
    }

    /// Sends `frame`, blocking while the ring is full; `timeout` (`None`:
    /// forever) bounds the wait.
    ///
    /// # Errors
    /// `ETIMEDOUT`, `EMSGSIZE`, `EFAULT`.
    pub fn blocking_send(&mut self, frame: &[u8], timeout: Option<Duration>) -> io::Result<()> {
        let deadline = super::deadline_of(timeout);
        loop {
            match self.push(frame)? {
                Ok(()) => return Ok(()),
                Err(Full::Tail(tail)) => {
                    if !super::wait_until(&self.ring.tail, tail, deadline)? {
                        return Err(super::timed_out());
                    }
                }
            }
        }
    }

    /// The C API's async step: sends, or returns the `tail` to wait on.
    pub(crate) fn send_step(&mut self, frame: &[u8]) -> io::Result<Result<(), u32>> {
        Ok(self.push(frame)?.map_err(|Full::Tail(t)| t))
    }
}

/// The receiving end of a channel.
pub struct Receiver {
    ring: Ring,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("queued", &self.ring.header().len())
            .finish()
    }
}

impl Receiver {
    /// Opens the receiving end of the channel at byte `offset` of `mem`.
    ///
    /// # Errors
    /// As for [`Sender::open`].
    pub fn open(mem: &Arc<SharedMemory>, offset: usize) -> io::Result<Receiver> {
        Ok(Receiver {
            ring: Ring::open_in(mem, offset)?,
        })
    }

    /// Opens the receiving end of the initialised channel at `header`.
    ///
    /// # Safety
    /// As for [`Sender::from_ptr`].
    ///
    /// # Errors
    /// As for [`Sender::from_ptr`].
    pub unsafe fn from_ptr(header: *const ChannelHeader) -> io::Result<Receiver> {
        Ok(Receiver {
            // SAFETY: forwarded contract.
            ring: unsafe { Ring::open_raw(header)? },
        })
    }

    /// The shared header.
    pub fn header(&self) -> &ChannelHeader {
        self.ring.header()
    }

    pub(crate) fn head_futex(&self) -> &AsyncFutex {
        &self.ring.head
    }

    /// Pops a frame into `buf`: `Ok(Ok(len))`, or `Ok(Err(tail))` when empty.
    fn pop(&mut self, buf: &mut [u8]) -> io::Result<Result<usize, u32>> {
        let ring = &self.ring;
        let h = ring.header();
        let tail = h.tail.load(Ordering::Relaxed);
        let head = h.head.load(Ordering::SeqCst);
        if head == tail {
            return Ok(Err(tail));
        }
        let slot = ring.slot(tail);
        // SAFETY: the sender wrote this slot before its SeqCst store of
        // `head`, which we loaded; it does not touch it again until `tail`
        // moves past it.
        let len = unsafe { slot.cast::<u32>().read() } as usize;
        if len > ring.frame_size as usize {
            return Err(super::errno(libc::EPROTO));
        }
        if len > buf.len() {
            return Err(super::errno(libc::EMSGSIZE));
        }
        // SAFETY: as above; `len` bytes fit in both.
        unsafe { std::ptr::copy_nonoverlapping(slot.add(4), buf.as_mut_ptr(), len) };
        h.tail.store(tail.wrapping_add(1), Ordering::SeqCst);
        if h.head.load(Ordering::SeqCst).wrapping_sub(tail) == ring.capacity() {
            // Full -> non-full: the sender may be asleep on `tail`.
            super::wake(&ring.tail, 1)?;
        }
        Ok(Ok(len))
    }

    /// Receives a frame into `buf` if one is queued: `Ok(Some(len))`, or
    /// `Ok(None)` when the ring is empty.
    ///
    /// # Errors
    /// `EMSGSIZE` if `buf` is shorter than the frame (it stays queued);
    /// `EPROTO` for a corrupt length.
    pub fn try_recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        Ok(self.pop(buf)?.ok())
    }

    /// Receives a frame into `buf`, waiting asynchronously while the ring
    /// is empty; returns its length. Cancel-safe: a dropped future has
    /// taken nothing.
    ///
    /// # Errors
    /// As for [`try_recv`](Self::try_recv); `EFAULT`, backend errors.
    pub async fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.pop(buf)? {
                Ok(len) => return Ok(len),
                Err(tail) => super::wait_async(&self.ring.head, tail).await?,
            }
        }
    }

    /// Receives a frame, blocking while the ring is empty; `timeout`
    /// (`None`: forever) bounds the wait.
    ///
    /// # Errors
    /// `ETIMEDOUT`, and as for [`try_recv`](Self::try_recv).
    pub fn blocking_recv(
        &mut self,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        let deadline = super::deadline_of(timeout);
        loop {
            match self.pop(buf)? {
                Ok(len) => return Ok(len),
                Err(tail) => {
                    if !super::wait_until(&self.ring.head, tail, deadline)? {
                        return Err(super::timed_out());
                    }
                }
            }
        }
    }

    /// The C API's async step: receives, or returns the `head` value
    /// (== tail) to wait on.
    pub(crate) fn recv_step(&mut self, buf: &mut [u8]) -> io::Result<Result<usize, u32>> {
        self.pop(buf)
    }
}
