"""Futex words in ``multiprocessing.shared_memory`` segments."""

from __future__ import annotations

import ctypes
import weakref
from multiprocessing import shared_memory
from typing import Any, Optional, Tuple

from ._futex import Futex, _u32


class SharedWord:
    """``count`` 32-bit futex words (zeroed) in a POSIX shared-memory segment
    (``multiprocessing.shared_memory.SharedMemory``), for processes to share.

    The creator (``SharedWord()`` or ``SharedWord(name)``) owns the segment
    and unlinks it on :meth:`unlink` or when leaving a ``with`` block; other
    processes attach with ``SharedWord(name, create=False)``. Fork children
    simply inherit the object; a ``SharedWord`` passed to a *spawned* process
    is pickled by name and attaches there.

    Each process makes its own handle(s) with :meth:`futex`; they are closed
    by :meth:`close`.
    """

    def __init__(self, name: Optional[str] = None, *, create: bool = True, count: int = 1) -> None:
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be a positive int, got {count!r}")
        self._futexes: "weakref.WeakSet[Futex]" = weakref.WeakSet()
        self._words: Any = None
        if create:
            self._shm = shared_memory.SharedMemory(name=name, create=True, size=4 * count)
        else:
            if name is None:
                raise ValueError("attaching (create=False) needs the segment's name")
            self._shm = shared_memory.SharedMemory(name=name, create=False)
            if self._shm.size < 4 * count:
                size = self._shm.size
                self._shm.close()
                raise ValueError(f"shared memory {name!r} has {size} bytes, fewer than {count} words")
        self._owner = create
        self._count = count
        buf = self._shm.buf
        assert buf is not None
        self._words = (ctypes.c_uint32 * count).from_buffer(buf)

    # Pickling (a spawned process): attach by name.
    def __reduce__(self) -> Tuple[Any, ...]:
        return (_attach, (self.name, self._count))

    @property
    def name(self) -> str:
        """The segment's name (for ``SharedWord(name, create=False)``)."""
        return self._shm.name

    @property
    def count(self) -> int:
        return self._count

    def _index(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < self._count:
            raise IndexError(f"word index {index!r} out of range 0..{self._count - 1}")
        if self._words is None:
            raise ValueError("operation on a closed SharedWord")
        return index

    def futex(self, index: int = 0, private: bool = False) -> Futex:
        """A new handle on word ``index`` (closed with this object)."""
        self._index(index)
        f = Futex(self._shm.buf, 4 * index, private=private)
        self._futexes.add(f)
        return f

    def load(self, index: int = 0) -> int:
        """Reads word ``index`` (one aligned 32-bit load)."""
        return int(self._words[self._index(index)])

    def store(self, value: int, index: int = 0) -> None:
        """Writes word ``index`` (one aligned 32-bit store); wake afterwards."""
        _u32(value, "value")
        self._words[self._index(index)] = value

    @property
    def value(self) -> int:
        """Word 0."""
        return self.load(0)

    def close(self) -> None:
        """Closes every handle made by :meth:`futex` and this process's
        mapping. Idempotent."""
        for f in list(self._futexes):
            f.close()
        self._futexes = weakref.WeakSet()
        if self._words is not None:
            self._words = None
            self._shm.close()

    def unlink(self) -> None:
        """Removes the segment's name (the memory lives until unmapped)."""
        self._shm.unlink()

    def __enter__(self) -> "SharedWord":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        if self._owner:
            try:
                self.unlink()
            except FileNotFoundError:
                pass

    def __repr__(self) -> str:
        state = "closed" if self._words is None else f"values={list(self._words)}"
        return f"<asyncfutex.SharedWord name={self.name!r} count={self._count} {state}>"


def _attach(name: str, count: int) -> SharedWord:
    return SharedWord(name, create=False, count=count)
