"""asyncfutex — awaitable, pollable futex words shared between processes.

A pure-Python (ctypes) binding of ``libasyncfutex.so``: :class:`Futex`
words, the cross-process :class:`Mutex`, :class:`Semaphore`,
:class:`EventCount` and SPSC channel (:func:`channel_init`, :class:`Sender`,
:class:`Receiver`), blocking and awaitable (asyncio, uvloop). The library is
the copy bundled in this package (``pip install ./bindings/python`` builds
it), unless ``$ASYNCFUTEX_LIB`` names another (full path); without a bundled
copy, the dynamic loader's search path is tried.

>>> import mmap, asyncfutex
>>> mem = mmap.mmap(-1, 4096)            # MAP_SHARED: fork children share it
>>> with asyncfutex.Futex(mem) as f:
...     f.store(1); f.wake(1)
...     f.wait(0, timeout=0.01)          # the word is not 0: returns at once
0
True
"""

from ._futex import (
    WAIT_ANY_MAX,
    WAKE_ALL,
    Futex,
    backend,
    select_backend,
    strerror,
    version,
    wait_any,
    wait_any_async,
)
from ._lib import ENV_VAR, LibraryNotFoundError, library_path
from ._mem import InvalidAddressError
from ._shared import SharedWord
from ._sync import (
    CHANNEL_ALIGN,
    EventCount,
    Mutex,
    Receiver,
    Semaphore,
    Sender,
    channel_init,
    channel_size,
)

__all__ = [
    "CHANNEL_ALIGN",
    "ENV_VAR",
    "EventCount",
    "InvalidAddressError",
    "Mutex",
    "Receiver",
    "Semaphore",
    "Sender",
    "channel_init",
    "channel_size",
    "WAIT_ANY_MAX",
    "WAKE_ALL",
    "Futex",
    "LibraryNotFoundError",
    "SharedWord",
    "backend",
    "library_path",
    "select_backend",
    "strerror",
    "version",
    "wait_any",
    "wait_any_async",
]
__version__ = "0.1.0"
