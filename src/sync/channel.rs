//! A single-producer, single-consumer channel of fixed-size byte frames in
//! shared memory: [`Sender`] in one process (or task), [`Receiver`] in
//! another.
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use asyncfutex::sync::channel::{self, ChannelHeader, Receiver, Sender};
//! use asyncfutex::SharedMemory;
//!
//! # fn main() -> std::io::Result<()> {
//! // 16 frames of up to 64 bytes, at offset 0.
//! let size = ChannelHeader::size_for(64, 16).expect("valid parameters");
//! let mem = Arc::new(SharedMemory::anonymous(size)?);
//! channel::create(&mem, 0, 64, 16)?;
//! let mut tx = Sender::open(&mem, 0)?; // normally in one process,
//! let mut rx = Receiver::open(&mem, 0)?; // and this in another
//! tx.blocking_send(b"hello", None)?;
//! let mut buf = [0u8; 64];
//! let n = rx.blocking_recv(&mut buf, None)?;
//! assert_eq!(&buf[..n], b"hello");
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! # rt.block_on(async {
//! tx.send(b"async").await?; // the async forms, in any executor
//! let n = rx.recv(&mut buf).await?;
//! assert_eq!(&buf[..n], b"async");
//! # Ok::<(), std::io::Error>(())
//! # })?;
//! # Ok(())
//! # }
//! ```
//!
//! # Shared layout ([`ChannelHeader`] + ring, version 2)
//! The header is 192 bytes, align 64; the ring follows it at offset 192.
//! | offset | type  | field        | meaning |
//! |-------:|-------|--------------|---------|
//! | 0      | `u32` | `version`    | [`CHANNEL_VERSION`] (`0x4348_0002`) |
//! | 4      | `u32` | `frame_size` | largest frame, in bytes |
//! | 8      | `u32` | `capacity`   | frames in the ring (a power of two, at most 2^30) |
//! | 12     | `u32` | `slot_size`  | bytes per slot: `4 + frame_size` rounded up to 8 |
//! | 64     | `u32` | `head`       | `sent << 1 \| RX_SLEEPING`; futex word |
//! | 128    | `u32` | `tail`       | `received << 1 \| TX_SLEEPING`; futex word |
//! | 192    | slots | ring         | slot `i % capacity` at `192 + (i % capacity) * slot_size`: a `u32` length, then the bytes |
//!
//! `sent` (frames sent) and `received` (frames received) are 31-bit
//! counters that run freely (wrapping); the ring holds `(sent - received)
//! mod 2^31` frames. Only the sender changes `sent`, only the receiver
//! `received`. Bit 0 of each word is the *sleeper flag* of the other side:
//! set (by compare-exchange) by a side that is about to sleep on that word,
//! cleared by the side that moves the counter on.
//!
//! - send: full if `sent - received == capacity`; else write the slot, then
//!   `old = swap(head, (sent + 1) << 1)` — publish the frame and clear
//!   `RX_SLEEPING` in one step — and `FUTEX_WAKE(head, 1)` only if `old` had
//!   `RX_SLEEPING`.
//! - receive: empty if `sent == received`; else read the slot, then `old =
//!   swap(tail, (received + 1) << 1)` and `FUTEX_WAKE(tail, 1)` only if
//!   `old` had `TX_SLEEPING`.
//! - sleep (receiver on an empty ring; the sender on a full one, with
//!   `tail` and `TX_SLEEPING`): load `w = head`; if the ring is not empty
//!   by `w`, don't; else `compare_exchange(w, w | RX_SLEEPING)` (retry from
//!   the top if it fails) and `FUTEX_WAIT(head, w | RX_SLEEPING)`.
//!
//! No wake is lost: the flag is published in the futex word itself, on
//! exactly the value the sleeper checked, so the kernel sleeps only while
//! the word still says "empty, and I sleep". A send after the
//! compare-exchange changes the word (so the wait returns at once) and
//! sees the flag (so it wakes); a send before it makes the
//! compare-exchange fail. All of it sequentially consistent. A side that
//! keeps up (awake, polling, or busy with the previous frame) never gets a
//! wake: the futex calls happen only when the other side really sleeps. A
//! flag left by an abandoned wait (a dropped future, `afx_chan_cancel`)
//! costs at most one spurious wake.
//!
//! One sender and one receiver at a time (the handles take `&mut self`;
//! across processes that is the user's contract).

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::Place;
use crate::{AsyncFutex, SharedMemory};

/// `version` of a [`ChannelHeader`]: `'C' 'H'` and layout version 2
/// (version 1 had plain counters and no sleeper flags).
///
/// (The C header has it as `AFX_*_VERSION`.)
pub const CHANNEL_VERSION: u32 = 0x4348_0002;

/// Bit 0 of `head` (`RX_SLEEPING`) and of `tail` (`TX_SLEEPING`): the other
/// side is (about to be) asleep on this word.
const SLEEPING: u32 = 1;
/// The 31-bit counters wrap at 2^31.
const COUNT_MASK: u32 = u32::MAX >> 1;

/// The counter of a `head`/`tail` word.
fn count(word: u32) -> u32 {
    word >> 1
}

/// Frames queued, from the counters of `head` and `tail`.
fn queued(sent: u32, received: u32) -> u32 {
    sent.wrapping_sub(received) & COUNT_MASK
}

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

    /// Frames queued now (`sent - received`).
    pub fn len(&self) -> u32 {
        let received = count(self.tail.load(Ordering::SeqCst));
        queued(count(self.head.load(Ordering::SeqCst)), received)
    }

    /// The raw `head` word (`sent << 1 | RX_SLEEPING`).
    pub fn head_word(&self) -> &AtomicU32 {
        &self.head
    }

    /// The raw `tail` word (`received << 1 | TX_SLEEPING`).
    pub fn tail_word(&self) -> &AtomicU32 {
        &self.tail
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

    /// The sleeper's step: flags `word` (`head` for the receiver, `tail`
    /// for the sender) as slept on, if `blocked` by its current value.
    /// Returns the value to `FUTEX_WAIT` on (flag set), or `None` when the
    /// other side has moved on meanwhile (try again).
    fn flag_sleeper(word: &AtomicU32, blocked: impl Fn(u32) -> bool) -> Option<u32> {
        let mut w = word.load(Ordering::SeqCst);
        loop {
            if !blocked(w) {
                return None;
            }
            if w & SLEEPING != 0 {
                return Some(w);
            }
            match word.compare_exchange(w, w | SLEEPING, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return Some(w | SLEEPING),
                Err(now) => w = now,
            }
        }
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

    #[cfg(feature = "capi")] // used by the C ABI only
    pub(crate) fn tail_futex(&self) -> &AsyncFutex {
        &self.ring.tail
    }

    /// Our `sent` counter (only we change it; the receiver may flip the
    /// flag bit next to it).
    fn sent(&self) -> u32 {
        count(self.ring.header().head.load(Ordering::Relaxed))
    }

    /// Pushes `frame` if there is room (`Ok(false)`: full), waking the
    /// receiver only if it flagged itself asleep.
    fn push(&mut self, frame: &[u8]) -> io::Result<bool> {
        let ring = &self.ring;
        if frame.len() > ring.frame_size as usize {
            return Err(super::errno(libc::EMSGSIZE));
        }
        let h = ring.header();
        let sent = self.sent();
        if queued(sent, count(h.tail.load(Ordering::SeqCst))) >= ring.capacity() {
            return Ok(false);
        }
        let slot = ring.slot(sent);
        // SAFETY: the slot is ours until `sent` moves past it: the receiver
        // reads it only after the SeqCst swap below, and was done with its
        // previous frame before the `tail` we loaded; it holds 4 +
        // frame_size bytes, 8-aligned.
        unsafe {
            slot.cast::<u32>().write(frame.len() as u32);
            std::ptr::copy_nonoverlapping(frame.as_ptr(), slot.add(4), frame.len());
        }
        // Publish the frame and clear RX_SLEEPING in one step.
        let old = h
            .head
            .swap((sent.wrapping_add(1) & COUNT_MASK) << 1, Ordering::SeqCst);
        if old & SLEEPING != 0 {
            super::wake(&ring.head, 1)?;
        }
        Ok(true)
    }

    /// The ring was full: sets TX_SLEEPING and returns the `tail` value to
    /// sleep on, or `None` if there is room now.
    fn prepare_sleep(&self) -> Option<u32> {
        let (sent, capacity) = (self.sent(), self.ring.capacity());
        Ring::flag_sleeper(&self.ring.header().tail, |tail| {
            queued(sent, count(tail)) >= capacity
        })
    }

    /// Sends, or returns the `tail` value to sleep on (flag set).
    fn send_or_sleep_on(&mut self, frame: &[u8]) -> io::Result<Result<(), u32>> {
        loop {
            if self.push(frame)? {
                return Ok(Ok(()));
            }
            if let Some(tail) = self.prepare_sleep() {
                return Ok(Err(tail));
            }
        }
    }

    /// Sends `frame` if there is room: `Ok(false)` when the ring is full.
    ///
    /// # Errors
    /// `EMSGSIZE` if `frame` is longer than the frame size.
    pub fn try_send(&mut self, frame: &[u8]) -> io::Result<bool> {
        self.push(frame)
    }

    /// Sends `frame`, waiting asynchronously while the ring is full.
    /// Cancel-safe: a dropped future has sent nothing.
    ///
    /// # Errors
    /// `EMSGSIZE`, `EFAULT`, backend errors.
    pub async fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        loop {
            match self.send_or_sleep_on(frame)? {
                Ok(()) => return Ok(()),
                Err(tail) => super::wait_async(&self.ring.tail, tail).await?,
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
            match self.send_or_sleep_on(frame)? {
                Ok(()) => return Ok(()),
                Err(tail) => {
                    if !super::wait_until(&self.ring.tail, tail, deadline)? {
                        return Err(super::timed_out());
                    }
                }
            }
        }
    }

    /// The C API's async step: sends, or returns the `tail` value to wait
    /// on (with TX_SLEEPING set).
    #[cfg(feature = "capi")] // used by the C ABI only
    pub(crate) fn send_step(&mut self, frame: &[u8]) -> io::Result<Result<(), u32>> {
        self.send_or_sleep_on(frame)
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

    #[cfg(feature = "capi")] // used by the C ABI only
    pub(crate) fn head_futex(&self) -> &AsyncFutex {
        &self.ring.head
    }

    /// Our `received` counter (only we change it; the sender may flip the
    /// flag bit next to it).
    fn received(&self) -> u32 {
        count(self.ring.header().tail.load(Ordering::Relaxed))
    }

    /// Pops a frame into `buf` if one is queued (`Ok(None)`: empty), waking
    /// the sender only if it flagged itself asleep.
    fn pop(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let ring = &self.ring;
        let h = ring.header();
        let received = self.received();
        if count(h.head.load(Ordering::SeqCst)) == received {
            return Ok(None);
        }
        let slot = ring.slot(received);
        // SAFETY: the sender wrote this slot before its SeqCst swap of
        // `head`, which we loaded; it does not touch it again until
        // `received` moves past it.
        let len = unsafe { slot.cast::<u32>().read() } as usize;
        if len > ring.frame_size as usize {
            return Err(super::errno(libc::EPROTO));
        }
        if len > buf.len() {
            return Err(super::errno(libc::EMSGSIZE));
        }
        // SAFETY: as above; `len` bytes fit in both.
        unsafe { std::ptr::copy_nonoverlapping(slot.add(4), buf.as_mut_ptr(), len) };
        // Free the slot and clear TX_SLEEPING in one step.
        let old = h.tail.swap(
            (received.wrapping_add(1) & COUNT_MASK) << 1,
            Ordering::SeqCst,
        );
        if old & SLEEPING != 0 {
            super::wake(&ring.tail, 1)?;
        }
        Ok(Some(len))
    }

    /// The ring was empty: sets RX_SLEEPING and returns the `head` value to
    /// sleep on, or `None` if a frame arrived meanwhile.
    fn prepare_sleep(&self) -> Option<u32> {
        let received = self.received();
        Ring::flag_sleeper(&self.ring.header().head, |head| count(head) == received)
    }

    /// Receives, or returns the `head` value to sleep on (flag set).
    fn recv_or_sleep_on(&mut self, buf: &mut [u8]) -> io::Result<Result<usize, u32>> {
        loop {
            if let Some(len) = self.pop(buf)? {
                return Ok(Ok(len));
            }
            if let Some(head) = self.prepare_sleep() {
                return Ok(Err(head));
            }
        }
    }

    /// Receives a frame into `buf` if one is queued: `Ok(Some(len))`, or
    /// `Ok(None)` when the ring is empty.
    ///
    /// # Errors
    /// `EMSGSIZE` if `buf` is shorter than the frame (it stays queued);
    /// `EPROTO` for a corrupt length.
    pub fn try_recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        self.pop(buf)
    }

    /// Receives a frame into `buf`, waiting asynchronously while the ring
    /// is empty; returns its length. Cancel-safe: a dropped future has
    /// taken nothing.
    ///
    /// # Errors
    /// As for [`try_recv`](Self::try_recv); `EFAULT`, backend errors.
    pub async fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.recv_or_sleep_on(buf)? {
                Ok(len) => return Ok(len),
                Err(head) => super::wait_async(&self.ring.head, head).await?,
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
            match self.recv_or_sleep_on(buf)? {
                Ok(len) => return Ok(len),
                Err(head) => {
                    if !super::wait_until(&self.ring.head, head, deadline)? {
                        return Err(super::timed_out());
                    }
                }
            }
        }
    }

    /// The C API's async step: receives, or returns the `head` value to
    /// wait on (with RX_SLEEPING set).
    #[cfg(feature = "capi")] // used by the C ABI only
    pub(crate) fn recv_step(&mut self, buf: &mut [u8]) -> io::Result<Result<usize, u32>> {
        self.recv_or_sleep_on(buf)
    }
}
