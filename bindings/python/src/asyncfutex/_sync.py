"""Cross-process synchronization primitives over the C API (``afx_mutex_*``,
``afx_sem_*``, ``afx_event_*``, ``afx_chan_*``): :class:`Mutex`,
:class:`Semaphore`, :class:`EventCount` and an SPSC channel
(:func:`channel_init`, :class:`Sender`, :class:`Receiver`).

Each keeps its state in memory you share between processes (an ``mmap``,
``SharedMemory.buf``, a raw address), laid out as the C structs so C, C++,
Rust and Python processes can share one. One process initialises the state
(``create=True`` / :func:`channel_init`) before the others open it; every
process then opens its own handle on its own mapping.

Blocking calls release the GIL and take ``timeout`` in seconds (None or
negative: forever; 0: only try). Async forms (``*_async``) are awaited on any
asyncio loop (default, uvloop): the C call either completes at once or arms
a wait on the handle's eventfd, which is awaited with ``loop.add_reader``.
They are cancel-safe: cancelling the awaiting task disarms the C wait
(``afx_*_cancel``), which passes on a wake it had consumed, and a lock,
permit or message is only ever taken by the C call whose result is
returned. Several tasks may await one handle: they take turns (FIFO).
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import errno
from typing import Any, Callable, Deque, Optional, Union

from ._futex import _abort_pending, _blocking, _check, _os_error, _u32, _wake_future
from ._lib import library
from ._mem import Buffer, address_error, pin

#: ``afx_mutex_lock*`` result: locked, but the previous holder died.
_OWNER_DIED = 1
#: Poll a mutex's eventfd at most this long (``AFX_MUTEX_CHECK_MS``), so a
#: holder that died is noticed.
MUTEX_CHECK_INTERVAL = 0.010
_CHAN_SENDER = 0
_CHAN_RECEIVER = 1
#: Size of an ``afx_chan_header`` (the ring follows it).
CHANNEL_HEADER_SIZE = 192
#: Alignment of a channel (its header's cache lines).
CHANNEL_ALIGN = 64


def _open(opener: Callable[[int], Any], address: int, what: str) -> int:
    handle = opener(address)
    if not handle:
        err = ctypes.get_errno() or errno.EINVAL
        if err == errno.EFAULT:
            raise address_error(err, f"the {what} at {address:#x} is not mapped")
        raise _os_error(err)
    return int(handle)


class _Primitive:
    """A handle on shared state: lifetime, the eventfd, one async operation
    at a time (tasks queue for it)."""

    _what = "primitive"
    _close_fn = ""
    _eventfd_fn = ""
    _cancel_fn = ""

    def __init__(self) -> None:
        self._h: Optional[int] = None  # first, so __del__ is always safe
        self._keep: Any = None
        self._fd = -1
        self._pending: Optional[tuple] = None
        self._busy = False
        self._queue: Deque["asyncio.Future[None]"] = collections.deque()

    def _adopt(self, handle: int, keep: Any) -> None:
        self._h = handle
        self._keep = keep
        self._fd = _check(getattr(library(), self._eventfd_fn)(handle))

    def _live(self) -> int:
        h = self._h
        if h is None:
            raise ValueError(f"operation on a closed {type(self).__name__}")
        return h

    @property
    def closed(self) -> bool:
        return self._h is None

    def fileno(self) -> int:
        """The handle's eventfd (readable when its armed async wait
        completed); it belongs to the handle: never read or close it."""
        self._live()
        return self._fd

    def close(self) -> None:
        """Closes the handle (a pending async operation raises ValueError;
        call from its loop's thread). Idempotent."""
        h = self._h
        if h is None:
            return
        _abort_pending(self._pending, self._fd, f"the {type(self).__name__} was closed during an async operation")
        self._pending = None
        self._h = None
        self._fd = -1
        getattr(library(), self._close_fn)(h)
        self._keep = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    # ---- the async protocol ----------------------------------------------

    async def _take_turn(self) -> None:
        if not self._busy:
            self._busy = True
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(fut)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self._pass_turn()  # it was handed to us: hand it on
            raise

    def _pass_turn(self) -> None:
        while self._queue:
            fut = self._queue.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self._busy = False

    async def _drive(self, step: Callable[[int], int], interval: Optional[float] = None) -> int:
        """Calls ``step(handle)`` until it returns something but ``-EAGAIN``
        (the result, ``>= 0``, or an OSError), awaiting the eventfd (or
        ``interval`` seconds) between calls. On any exception (cancellation
        too) the C wait is cancelled."""
        await self._take_turn()
        try:
            handle = self._live()
            loop = asyncio.get_running_loop()
            lib = library()
            try:
                while True:
                    rc = step(handle)
                    if rc != -errno.EAGAIN:
                        return _check(rc)
                    await self._readable(loop, interval)
            except BaseException:
                if self._h == handle:
                    # Passes on a wake the wait consumed, pending or
                    # already completed (C: afx_*_cancel).
                    getattr(lib, self._cancel_fn)(handle)
                raise
        finally:
            self._pass_turn()

    async def _readable(self, loop: asyncio.AbstractEventLoop, interval: Optional[float]) -> None:
        fd = self._fd
        fut: asyncio.Future[None] = loop.create_future()
        self._pending = (loop, fut)
        loop.add_reader(fd, _wake_future, fut)
        timer = loop.call_later(interval, _wake_future, fut) if interval is not None else None
        try:
            await fut
        finally:
            if timer is not None:
                timer.cancel()
            if self._pending is not None and self._pending[1] is fut:
                self._pending = None
                loop.remove_reader(fd)
        if self._h is None:
            raise ValueError(f"the {type(self).__name__} was closed during an async operation")

    def __repr__(self) -> str:
        state = "closed" if self._h is None else f"eventfd={self._fd}"
        return f"<asyncfutex.{type(self).__name__} {state}>"


class Mutex(_Primitive):
    """A robust mutex shared between processes (``afx_mutex_*``).

    ``Mutex(buffer, offset=0, *, create=False)``: the ``afx_mutex_state``
    (:attr:`SIZE` bytes, :attr:`ALIGN`-aligned) at ``offset`` of a writable
    buffer, or at a raw int address. ``create=True`` initialises it
    (unlocked) first: do that in one process, before any other opens it.

    Ownership is per process (the holder's pid is in the state): if the
    holding process dies, the next locker gets the lock with
    :attr:`owner_died` set; repair the protected data and call
    :meth:`mark_consistent` before :meth:`release`, or the mutex becomes
    unusable (``OSError`` ENOTRECOVERABLE).

    ``with mutex:`` and ``async with mutex:`` hold it for a block.
    """

    SIZE = 16
    ALIGN = 8
    _what = "mutex state"
    _close_fn = "afx_mutex_close"
    _eventfd_fn = "afx_mutex_eventfd"
    _cancel_fn = "afx_mutex_cancel"

    def __init__(self, buffer_or_address: Union[Buffer, int], offset: int = 0, *, create: bool = False) -> None:
        super().__init__()
        #: True after an acquire that found the previous holder dead.
        self.owner_died = False
        lib = library()
        address, keep = pin(buffer_or_address, offset, self.SIZE, self.ALIGN, self._what)
        if create:
            _check(lib.afx_mutex_init(address))
        self._adopt(_open(lib.afx_mutex_open, address, self._what), keep)

    def _locked(self, rc: int) -> bool:
        self.owner_died = rc == _OWNER_DIED
        return True

    def acquire(self, timeout: Optional[float] = None) -> bool:
        """Locks, blocking (without the GIL) for at most ``timeout`` seconds
        (None or negative: forever). True when locked (check
        :attr:`owner_died`), False on timeout."""
        h = self._live()
        lib = library()
        rc = _blocking(lambda ns: lib.afx_mutex_lock(h, ns), timeout)
        return False if rc is None else self._locked(rc)

    def try_acquire(self) -> bool:
        """Locks if free (or if its holder died): True, else False."""
        rc = library().afx_mutex_trylock(self._live())
        if rc == -errno.EBUSY:
            return False
        return self._locked(_check(rc))

    async def acquire_async(self) -> None:
        """Awaits the lock (check :attr:`owner_died` afterwards). Cancel-safe:
        a cancelled wait leaves the mutex as it was and passes on a wake it
        had consumed."""
        lib = library()
        rc = await self._drive(lib.afx_mutex_lock_async, MUTEX_CHECK_INTERVAL)
        self._locked(rc)

    def release(self) -> None:
        """Unlocks. ``PermissionError`` (EPERM) if this process does not
        hold it."""
        _check(library().afx_mutex_unlock(self._live()))
        self.owner_died = False

    def mark_consistent(self) -> None:
        """After an acquire with :attr:`owner_died`: the protected state is
        repaired. ``PermissionError`` if not held, ``OSError`` EINVAL if it
        was not inconsistent."""
        _check(library().afx_mutex_consistent(self._live()))
        self.owner_died = False

    def __enter__(self) -> "Mutex":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    async def __aenter__(self) -> "Mutex":
        await self.acquire_async()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class Semaphore(_Primitive):
    """A counting semaphore shared between processes (``afx_sem_*``).

    ``Semaphore(buffer, offset=0, *, create=False, permits=0)``: the
    ``afx_sem_state`` (:attr:`SIZE` bytes, :attr:`ALIGN`-aligned) at
    ``offset``; ``create=True`` initialises it with ``permits`` first (in
    one process, before any other opens it).

    ``with sem:`` / ``async with sem:`` take a permit for a block and give
    it back.
    """

    SIZE = 12
    ALIGN = 4
    _what = "semaphore state"
    _close_fn = "afx_sem_close"
    _eventfd_fn = "afx_sem_eventfd"
    _cancel_fn = "afx_sem_cancel"

    def __init__(
        self, buffer_or_address: Union[Buffer, int], offset: int = 0, *, create: bool = False, permits: int = 0
    ) -> None:
        super().__init__()
        _u32(permits, "permits")
        if permits and not create:
            raise ValueError("permits is only used with create=True")
        lib = library()
        address, keep = pin(buffer_or_address, offset, self.SIZE, self.ALIGN, self._what)
        if create:
            _check(lib.afx_sem_init(address, permits))
        self._adopt(_open(lib.afx_sem_open, address, self._what), keep)

    def acquire(self, timeout: Optional[float] = None) -> bool:
        """Takes a permit, blocking (without the GIL) for at most ``timeout``
        seconds (None or negative: forever). False on timeout."""
        h = self._live()
        lib = library()
        return _blocking(lambda ns: lib.afx_sem_acquire(h, ns), timeout) is not None

    def try_acquire(self) -> bool:
        """Takes a permit if one is available."""
        rc = library().afx_sem_tryacquire(self._live())
        if rc == -errno.EAGAIN:
            return False
        _check(rc)
        return True

    async def acquire_async(self) -> None:
        """Awaits a permit and takes it. Cancel-safe: a cancelled wait takes
        no permit (and passes on a wake it had consumed)."""
        await self._drive(library().afx_sem_acquire_async)

    def release(self, n: int = 1) -> None:
        """Adds ``n`` permits, waking up to ``n`` waiters in any process.
        ``OSError`` EOVERFLOW past 2**32-1 permits."""
        _u32(n, "n")
        _check(library().afx_sem_release(self._live(), n))

    @property
    def value(self) -> int:
        """Permits available now (a snapshot)."""
        return _check(library().afx_sem_value(self._live()))

    def __enter__(self) -> "Semaphore":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    async def __aenter__(self) -> "Semaphore":
        await self.acquire_async()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class EventCount(_Primitive):
    """An event count shared between processes (``afx_event_*``): a 31-bit
    sequence number that :meth:`publish` bumps, waking every waiter (a
    broadcast); waiters wait for it to differ from the value they last saw,
    so no publish between reading and waiting is missed.

    ``EventCount(buffer, offset=0, *, create=False)``: the
    ``afx_event_state`` (:attr:`SIZE` bytes, :attr:`ALIGN`-aligned);
    ``create=True`` initialises it (``seq`` 0) first.
    """

    SIZE = 8
    ALIGN = 4
    _what = "event state"
    _close_fn = "afx_event_close"
    _eventfd_fn = "afx_event_eventfd"
    _cancel_fn = "afx_event_cancel"

    def __init__(self, buffer_or_address: Union[Buffer, int], offset: int = 0, *, create: bool = False) -> None:
        super().__init__()
        lib = library()
        address, keep = pin(buffer_or_address, offset, self.SIZE, self.ALIGN, self._what)
        if create:
            _check(lib.afx_event_init(address))
        self._adopt(_open(lib.afx_event_open, address, self._what), keep)

    def publish(self) -> int:
        """Bumps the sequence number and wakes every waiter; returns the new
        ``seq``."""
        return _check(library().afx_event_publish(self._live()))

    @property
    def seq(self) -> int:
        """The current sequence number (31 bits, wrapping)."""
        return _check(library().afx_event_seq(self._live()))

    def wait(self, last_seen: int, timeout: Optional[float] = None) -> Optional[int]:
        """Blocks (without the GIL) until ``seq`` differs from ``last_seen``,
        for at most ``timeout`` seconds (None or negative: forever). Returns
        the new ``seq``, or None on timeout."""
        _u32(last_seen, "last_seen")
        h = self._live()
        lib = library()
        return _blocking(lambda ns: lib.afx_event_wait(h, last_seen, ns), timeout)

    async def wait_async(self, last_seen: int) -> int:
        """Awaits a ``seq`` different from ``last_seen`` and returns it."""
        _u32(last_seen, "last_seen")
        lib = library()
        return await self._drive(lambda h: lib.afx_event_wait_async(h, last_seen))


def channel_size(frame_size: int, capacity: int) -> int:
    """Bytes a channel of ``capacity`` frames (a power of two) of up to
    ``frame_size`` bytes needs, header included. ValueError if invalid."""
    _u32(frame_size, "frame_size")
    _u32(capacity, "capacity")
    size = int(library().afx_chan_size(frame_size, capacity))
    if size == 0:
        raise ValueError(
            f"invalid channel: frame_size={frame_size}, capacity={capacity} "
            "(capacity must be a power of two; both non-zero and within the library's limits)"
        )
    return size


def channel_init(buffer_or_address: Union[Buffer, int], frame_size: int, capacity: int, offset: int = 0) -> int:
    """Initialises an SPSC channel at ``offset`` (64-aligned, with
    :func:`channel_size` bytes) for one :class:`Sender` and one
    :class:`Receiver`, in any processes. Do it once, before either end
    opens it. Returns the channel's size in bytes."""
    size = channel_size(frame_size, capacity)
    address, keep = pin(buffer_or_address, offset, size, CHANNEL_ALIGN, "channel")
    _check(library().afx_chan_init(address, frame_size, capacity))
    del keep
    return size


class _ChannelEnd(_Primitive):
    _role = -1
    _what = "channel"
    _close_fn = "afx_chan_close"
    _eventfd_fn = "afx_chan_eventfd"
    _cancel_fn = "afx_chan_cancel"

    def __init__(self, buffer_or_address: Union[Buffer, int], offset: int = 0) -> None:
        super().__init__()
        lib = library()
        # The header says how large the whole channel is; pin all of it.
        address, keep = pin(buffer_or_address, offset, CHANNEL_HEADER_SIZE, CHANNEL_ALIGN, self._what)
        handle = _open(lambda a: lib.afx_chan_open(a, self._role), address, self._what)
        try:
            header = (ctypes.c_uint32 * 4).from_address(address)
            self.frame_size: int = int(header[1])
            self.capacity: int = int(header[2])
            if keep is not None:
                size = channel_size(self.frame_size, self.capacity)
                _, keep = pin(buffer_or_address, offset, size, CHANNEL_ALIGN, self._what)
        except BaseException:
            lib.afx_chan_close(handle)
            raise
        self._adopt(handle, keep)


def _frame(data: Any) -> bytes:
    if isinstance(data, bytes):
        return data
    try:
        return bytes(memoryview(data))
    except TypeError:
        raise TypeError(f"a frame must be bytes-like, not {type(data).__name__}") from None


class Sender(_ChannelEnd):
    """The sending end of a channel made by :func:`channel_init` (one sender
    at a time). Frames (bytes-like, up to :attr:`frame_size` bytes; longer
    is ``OSError`` EMSGSIZE) arrive exactly once, in order."""

    _role = _CHAN_SENDER

    def send(self, data: Any, timeout: Optional[float] = None) -> bool:
        """Sends a frame, blocking (without the GIL) while the ring is full,
        for at most ``timeout`` seconds (None or negative: forever). False
        on timeout (nothing was sent)."""
        frame = _frame(data)
        h = self._live()
        lib = library()
        return _blocking(lambda ns: lib.afx_chan_send(h, frame, len(frame), ns), timeout) is not None

    def try_send(self, data: Any) -> bool:
        """Sends a frame if there is room: True, else False."""
        frame = _frame(data)
        rc = library().afx_chan_try_send(self._live(), frame, len(frame))
        if rc == -errno.EAGAIN:
            return False
        _check(rc)
        return True

    async def send_async(self, data: Any) -> None:
        """Awaits room and sends the frame. Cancel-safe: a cancelled send
        sent nothing."""
        frame = _frame(data)
        lib = library()
        await self._drive(lambda h: lib.afx_chan_send_async(h, frame, len(frame)))


class Receiver(_ChannelEnd):
    """The receiving end of a channel made by :func:`channel_init` (one
    receiver at a time): frames arrive exactly once, in order."""

    _role = _CHAN_RECEIVER

    def __init__(self, buffer_or_address: Union[Buffer, int], offset: int = 0) -> None:
        super().__init__(buffer_or_address, offset)
        self._buf = ctypes.create_string_buffer(max(1, self.frame_size))

    def _take(self, n: int) -> bytes:
        return self._buf.raw[:n]

    def recv(self, timeout: Optional[float] = None) -> Optional[bytes]:
        """Receives a frame, blocking (without the GIL) while the ring is
        empty, for at most ``timeout`` seconds (None or negative: forever).
        None on timeout."""
        h = self._live()
        lib, buf = library(), self._buf
        n = _blocking(lambda ns: lib.afx_chan_recv(h, buf, len(buf), ns), timeout)
        return None if n is None else self._take(n)

    def try_recv(self) -> Optional[bytes]:
        """Receives a frame if one is queued, else None."""
        buf = self._buf
        n = library().afx_chan_try_recv(self._live(), buf, len(buf))
        if n == -errno.EAGAIN:
            return None
        return self._take(_check(n))

    async def recv_async(self) -> bytes:
        """Awaits a frame and returns it. Cancel-safe: a cancelled receive
        took no frame (it stays queued for the next receive)."""
        lib, buf = library(), self._buf
        n = await self._drive(lambda h: lib.afx_chan_recv_async(h, buf, len(buf)))
        return self._take(n)
