"""The :class:`Futex` handle and the module-level helpers."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import math
import time
from typing import Any, Callable, Iterable, List, Optional, Tuple, Union

from ._lib import WaitEntry, library
from ._mem import Buffer, address_error, pin

#: ``wake(WAKE_ALL)`` wakes every waiter.
WAKE_ALL = 0xFFFF_FFFF
#: The most entries one :func:`wait_any` / :func:`wait_any_async` takes
#: (``AFX_WAITV_MAX``); more, or none, is ``OSError(EINVAL)``.
WAIT_ANY_MAX = 128
_AFX_PRIVATE = 1
_U32_MAX = 0xFFFF_FFFF
_I64_MAX = (1 << 63) - 1

_BACKENDS = {"auto": 0, "io_uring": 1, "thread": 2}

def strerror(err: int) -> str:
    """The library's description of an error code (``-errno`` or ``errno``)."""
    text: bytes = library().afx_strerror(int(err))
    return text.decode()


def _os_error(err: int) -> OSError:
    """``OSError(errno, afx_strerror(errno))`` for a ``-errno`` or errno."""
    err = abs(err)
    return OSError(err, strerror(err))


def _check(rc: int) -> int:
    if rc < 0:
        raise _os_error(rc)
    return rc


def _u32(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not 0 <= value <= _U32_MAX:
        raise ValueError(f"{what} must be in 0..0xFFFFFFFF, got {value}")
    return value


def version() -> str:
    """The library version, e.g. ``"0.1.0"``."""
    text: bytes = library().afx_version()
    return text.decode()


def backend() -> str:
    """The backend serving async waits in this process (``"io_uring"`` or
    ``"thread"``), started if needed. Raises OSError if the requested one
    (``AFX_BACKEND``) cannot run."""
    lib = library()
    name: bytes = lib.afx_backend_name(_check(lib.afx_backend()))
    return name.decode()


def select_backend(name: str) -> str:
    """Chooses this process's backend before first use (``"auto"``,
    ``"io_uring"``, ``"thread"``; overrides ``AFX_BACKEND``). Returns the
    backend now in use; OSError(EBUSY) if another one already runs."""
    if name not in _BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {sorted(_BACKENDS)}")
    lib = library()
    chosen: bytes = lib.afx_backend_name(_check(lib.afx_select_backend(_BACKENDS[name])))
    return chosen.decode()


def _seconds(timeout: float) -> float:
    seconds = float(timeout)
    if math.isnan(seconds):
        raise ValueError("timeout is NaN")
    return seconds


def _deadline(timeout: Optional[float]) -> Optional[float]:
    """The monotonic deadline of a timeout in seconds; None (or negative,
    as in C, or beyond int64 nanoseconds) is forever (None)."""
    if timeout is None:
        return None
    seconds = _seconds(timeout)
    if seconds < 0 or seconds * 1e9 >= _I64_MAX:  # beyond ~292 years: forever
        return None
    return time.monotonic() + seconds


#: The longest single blocking call of the sync primitives: between two,
#: Python runs its signal handlers (Ctrl-C), as those C calls retry EINTR.
_SLICE = 0.5


def _blocking(call: Callable[[int], int], timeout: Optional[float], slice_: Optional[float] = _SLICE) -> Optional[int]:
    """Runs ``call(timeout_ns)`` (a blocking C call returning ``>= 0`` or
    ``-errno``) until it returns something other than ``-EINTR`` or
    ``-ETIMEDOUT`` within the timeout: the result (``>= 0``; a negative one
    raises OSError), or None when the timeout expired. ``timeout`` None or
    negative: forever, as in C; 0 only checks. ``-EINTR`` (a signal handler
    ran; Python runs its own at the loop's back edge, and one that raises
    ends the wait) is retried for the rest of the timeout; with ``slice_``,
    each call blocks at most that long, so handlers run even while calls
    that retry EINTR themselves block."""
    deadline = _deadline(timeout)
    while True:
        final = True
        if deadline is None:
            ns = -1
        else:
            ns = max(0, math.ceil((deadline - time.monotonic()) * 1e9))
            if ns >= _I64_MAX:
                ns = -1
        if slice_ is not None and (ns < 0 or ns > slice_ * 1e9):
            ns = math.ceil(slice_ * 1e9)
            final = False
        rc = call(ns)
        if rc == -errno.EINTR:
            continue
        if rc == -errno.ETIMEDOUT:
            if final:
                return None
            continue
        return _check(rc)


def _timeout_ns(seconds: float) -> int:
    """A relative timeout for the C API in nanoseconds, rounded up; ``<= 0``
    only checks (0); beyond int64 nanoseconds (about 292 years) is forever
    (-1)."""
    if seconds <= 0:
        return 0
    if seconds * 1e9 >= _I64_MAX:
        return -1
    return math.ceil(seconds * 1e9)


def _wake_future(fut: "asyncio.Future[None]") -> None:
    if not fut.done():
        fut.set_result(None)


def _abort_pending(pending: Optional[tuple], fd: int, message: str) -> None:
    """On close: stops watching ``fd`` for a pending async wait (``(loop,
    future)`` or None) and fails that wait with ValueError(message)."""
    if pending is None:
        return
    loop, fut = pending
    loop.remove_reader(fd)
    if not fut.done():
        fut.set_exception(ValueError(message))


class Futex:
    """A handle on one naturally aligned 32-bit futex word.

    ``Futex(buffer, offset=0, private=False)`` uses the word at ``offset`` of
    a writable buffer (``mmap.mmap``, ``SharedMemory.buf``, ``bytearray``…)
    and keeps the buffer alive (exported) until :meth:`close`.
    ``Futex(address)`` takes a raw address instead: then you keep the memory
    mapped. Words in memory shared between processes use the default shared
    key; ``private=True`` is for process-local words.

    Semantics are futex semantics: a completed wait means "re-check the
    word" (spurious completions are allowed), and the check-then-sleep is
    atomic: a wait with ``expected`` sleeps only while the word holds it.
    Errors from the library are ``OSError(errno, afx_strerror(errno))``; a
    bad address (0, misaligned, outside the buffer, unmapped) is
    :class:`InvalidAddressError` (an OSError with the C errno, EINVAL or
    EFAULT, and a ValueError).
    """

    def __init__(self, buffer_or_address: Union[Buffer, int], offset: int = 0, private: bool = False) -> None:
        self._handle: Optional[int] = None  # first, so __del__ is always safe
        self._word: Optional[ctypes.c_uint32] = None
        self._owner: Any = None
        self._fd = -1
        self._pending: Optional[Tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]] = None
        self._private = bool(private)
        lib = library()
        address, keep = pin(buffer_or_address, offset, 4, 4, "futex word")
        # Keeps the buffer exported while the word is in use (from_buffer on
        # the pinned bytes holds them).
        word = ctypes.c_uint32.from_buffer(keep) if keep is not None else ctypes.c_uint32.from_address(address)
        handle = lib.afx_new(address, 1 if private else 0)
        if not handle:
            err = ctypes.get_errno() or errno.EINVAL
            if err == errno.EFAULT:
                raise address_error(err, f"the futex word at {address:#x} is not mapped")
            raise _os_error(err)
        self._handle = handle
        self._word = word
        self._owner = keep
        self._fd = _check(lib.afx_eventfd(handle))

    # ---- lifetime ------------------------------------------------------

    def _live(self) -> int:
        handle = self._handle
        if handle is None:
            raise ValueError("operation on a closed Futex")
        return handle

    @property
    def closed(self) -> bool:
        return self._handle is None

    def close(self) -> None:
        """Frees the handle: an armed wait is cancelled (a wake it consumed is
        passed on), the eventfd closed, and the buffer released. A pending
        :meth:`wait_async` (call close from its loop's thread) raises
        ValueError. Idempotent."""
        handle = self._handle
        if handle is None:
            return
        _abort_pending(self._pending, self._fd, "the Futex was closed during wait_async")
        self._pending = None
        self._handle = None
        self._fd = -1
        library().afx_free(handle)
        self._word = None
        self._owner = None

    def __enter__(self) -> "Futex":
        self._live()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def __repr__(self) -> str:
        if self._handle is None:
            return "<asyncfutex.Futex closed>"
        assert self._word is not None
        return (
            f"<asyncfutex.Futex word={ctypes.addressof(self._word):#x} value={self._word.value} "
            f"eventfd={self._fd}{' private' if self._private else ''}>"
        )

    # ---- the word ------------------------------------------------------

    @property
    def address(self) -> int:
        """The word's address."""
        self._live()
        assert self._word is not None
        return ctypes.addressof(self._word)

    @property
    def value(self) -> int:
        """The word, read with one aligned 32-bit load."""
        self._live()
        assert self._word is not None
        return self._word.value

    def store(self, value: int) -> None:
        """Stores ``value`` (one aligned 32-bit store). Then :meth:`wake`."""
        _u32(value, "value")
        self._live()
        assert self._word is not None
        self._word.value = value

    def fileno(self) -> int:
        """The handle's eventfd (readable when the armed wait completed).
        It belongs to the handle: never read or close it."""
        self._live()
        return self._fd

    # ---- waking and waiting -------------------------------------------

    def wake(self, n: int = 1) -> int:
        """Wakes at most ``n`` waiters (any process, any kind;
        ``WAKE_ALL``: all). Returns how many were woken."""
        _u32(n, "n")
        return _check(library().afx_wake(self._live(), n))

    def wait(self, expected: int, timeout: Optional[float] = None) -> bool:
        """Blocks (without the GIL) while the word holds ``expected``, for at
        most ``timeout`` seconds (None or negative: forever, as ``afx_wait``
        with ``timeout_ns < 0``; 0 only checks the word). Returns False on
        timeout; True when woken or when the word did not hold ``expected``:
        re-check the word. A signal handler that runs meanwhile is run, then
        the wait goes on for the rest of the timeout (one that raises ends
        it)."""
        _u32(expected, "expected")
        handle = self._live()
        lib = library()
        rc = _blocking(lambda ns: lib.afx_wait(handle, expected, ns), timeout, None)
        return rc is not None

    async def wait_async(self, expected: int) -> None:
        """Awaits a wake while the word holds ``expected`` (returns at once if
        it does not): re-check the word afterwards. Uses ``loop.add_reader``
        on the eventfd, so any asyncio loop works (default, uvloop).

        One async wait per handle at a time (OSError EBUSY otherwise; use one
        handle per concurrent waiter). Cancel-safe: if the task is cancelled
        (``asyncio.wait_for`` timeout, ``task.cancel()``), the wait is
        disarmed and a wake it had consumed is passed on to another waiter.
        """
        _u32(expected, "expected")
        handle = self._live()
        loop = asyncio.get_running_loop()
        lib = library()
        _check(lib.afx_wait_async(handle, expected))
        await self._armed_wait(loop, handle, None)

    async def _armed_wait(self, loop: asyncio.AbstractEventLoop, handle: int, index: Optional[ctypes.c_uint32]) -> None:
        """Awaits the completion of the wait armed on this handle (readiness
        of its eventfd through ``loop.add_reader``) and acknowledges it
        (``afx_ack``, or ``afx_ack_index`` into ``index``). On any exception
        — cancellation, an error, close() — the wait is cancelled, which
        passes a wake it had consumed on."""
        lib = library()
        fd = self._fd
        try:
            while True:
                fut: asyncio.Future[None] = loop.create_future()
                self._pending = (loop, fut)
                loop.add_reader(fd, _wake_future, fut)
                try:
                    await fut
                finally:
                    # Unless close() already did it (the fd may be gone).
                    if self._pending is not None and self._pending[1] is fut:
                        self._pending = None
                        loop.remove_reader(fd)
                if self._handle is None:
                    raise ValueError("the Futex was closed during wait_async")
                if index is None:
                    rc = lib.afx_ack(handle)
                else:
                    rc = lib.afx_ack_index(handle, ctypes.byref(index))
                if rc == 1:
                    return
                _check(rc)  # 0: readiness without a completion; wait again
        except BaseException:
            if self._handle == handle:
                lib.afx_cancel(handle)  # forwards a wake the wait consumed
            raise


# ---- waiting for any of many words -----------------------------------------

Entries = Iterable[Tuple[Futex, int]]


def _vector(entries: Entries) -> Tuple["ctypes.Array[WaitEntry]", List[Any]]:
    """The ``afx_wait_entry`` vector for ``(Futex, expected)`` pairs, and the
    words' ctypes objects: while the caller holds them, the buffers they
    export stay mapped (even if a Futex is closed meanwhile), as the C API
    requires until the wait ends. The count is left to the library
    (``EINVAL`` for none or more than ``WAIT_ANY_MAX``)."""
    if isinstance(entries, (str, bytes)):
        raise TypeError("entries must be an iterable of (Futex, expected) pairs")
    try:
        items = list(entries)
    except TypeError:
        raise TypeError(
            f"entries must be an iterable of (Futex, expected) pairs, not {type(entries).__name__}"
        ) from None
    vector = (WaitEntry * len(items))()
    words: List[Any] = []
    for i, item in enumerate(items):
        try:
            futex, expected = item
        except (TypeError, ValueError):
            raise TypeError(f"entry {i} must be a (Futex, expected) pair, not {item!r}") from None
        if not isinstance(futex, Futex):
            raise TypeError(f"entry {i}: expected a Futex, not {type(futex).__name__}")
        _u32(expected, f"expected (entry {i})")
        futex._live()
        word = futex._word
        assert word is not None
        words.append(word)
        vector[i].addr = ctypes.addressof(word)
        vector[i].expected = expected
        vector[i].flags = _AFX_PRIVATE if futex._private else 0
    return vector, words


def wait_any(entries: Entries, timeout: Optional[float] = None) -> Optional[int]:
    """Blocks (without the GIL) while *every* ``(futex, expected)`` entry's
    word holds its ``expected`` value (``futex_waitv(2)``: the check is
    atomic with going to sleep), until one is woken or for at most
    ``timeout`` seconds.

    Returns the index of an entry that was woken or whose word did not hold
    its value — then re-check *all* the words: completions may be spurious —
    or None when the timeout expired. ``timeout`` None or negative waits
    forever (as ``afx_waitv`` with ``timeout_ns < 0``, and as
    :meth:`Futex.wait`); 0 only checks the words. A signal handler that runs meanwhile is run, then the wait
    goes on for the rest of the timeout.

    Up to ``WAIT_ANY_MAX`` (128) entries, from any handles, shared and
    private keys mixed, the same word more than once if you like; none or
    more is ``OSError(EINVAL)``. No async wait is armed: no handle's
    one-wait slot is used. ``OSError(ENOSYS)`` or ``EPERM`` where
    ``futex_waitv`` is not available (Linux < 5.16, some seccomp profiles).
    """
    vector, words = _vector(entries)
    deadline: Optional[float] = None
    if timeout is None:
        ns = -1
    else:
        seconds = _seconds(timeout)
        if seconds < 0:
            ns = -1
        else:
            ns = _timeout_ns(seconds)
            if ns > 0:
                deadline = time.monotonic() + seconds
    lib = library()
    while True:
        rc = lib.afx_waitv(vector, len(vector), ns)
        if rc >= 0:
            break
        if rc == -errno.ETIMEDOUT:
            rc = -1
            break
        if rc != -errno.EINTR:
            raise _os_error(rc)
        # A signal handler ran (Python runs its own here, at the loop's
        # back edge; one that raises ends the wait). Wait out the rest; once
        # the time is up, one last check of the words.
        if deadline is not None:
            ns = max(0, math.ceil((deadline - time.monotonic()) * 1e9))
    del words  # the words had to stay mapped until here
    return None if rc < 0 else rc


# The word of the handles that own wait_any_async's waits when the caller
# names none (never woken: only its handle's eventfd and wait slot are used).
_OWNER_WORD = ctypes.c_uint32(0)


async def wait_any_async(entries: Entries, *, owner: Optional[Futex] = None) -> int:
    """Awaits a wake while *every* ``(futex, expected)`` entry's word holds
    its ``expected`` value (completes at once if one does not). Returns the
    index of an entry that was woken or whose word did not hold its value:
    re-check *all* the words, completions may be spurious.

    One armed vector wait (``afx_waitv_async``) announced on the eventfd of
    ``owner`` and awaited with ``loop.add_reader``, like
    :meth:`Futex.wait_async` (any asyncio loop, uvloop too). The owner is
    the handle whose one async wait this is:

    - ``owner=None`` (default): a handle of this call's own, made and freed
      here (one eventfd while it waits). Any number of these may run at
      once, on the same words or not.
    - ``owner=futex``: that handle (one of the entries' or any other);
      ``OSError(EBUSY)`` if it already has a wait armed (``wait_async`` or
      another vector wait). Saves making an eventfd per call, and lets you
      poll ``owner.fileno()``. Closing it during the wait raises ValueError.

    Cancel-safe: if the task is cancelled (``task.cancel()``,
    ``asyncio.wait_for`` timeout) the wait is cancelled, and a wake it had
    consumed is passed on (``wake(1)`` on its words: another waiter of
    those words may see a spurious wake-up, never a lost one).

    Errors: ``OSError(EINVAL)`` for no entries or more than
    ``WAIT_ANY_MAX``, ``OSError(ENOSYS)`` where the backend cannot serve
    vector waits (the thread backend in per-wait mode: Linux < 5.16, or
    ``AFX_THREAD_WAITV=0``), and those of :meth:`Futex.wait_async`.
    """
    vector, words = _vector(entries)
    if owner is not None and not isinstance(owner, Futex):
        raise TypeError(f"owner must be a Futex or None, not {type(owner).__name__}")
    loop = asyncio.get_running_loop()
    own = owner if owner is not None else Futex(ctypes.addressof(_OWNER_WORD), private=True)
    try:
        handle = own._live()
        _check(library().afx_waitv_async(handle, vector, len(vector)))
        del vector  # copied by the library; the words must stay mapped
        index = ctypes.c_uint32()
        await own._armed_wait(loop, handle, index)
        return index.value
    finally:
        if owner is None:
            own.close()
        del words  # mapped until the wait is acknowledged or cancelled
