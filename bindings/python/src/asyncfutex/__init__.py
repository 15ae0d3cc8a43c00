"""asyncfutex — awaitable, pollable futex words shared between processes.

A pure-Python (ctypes) binding of ``libasyncfutex.so``. The library is found
through ``$ASYNCFUTEX_LIB`` (full path), then next to this package, then the
dynamic loader's search path.

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
from ._shared import SharedWord

__all__ = [
    "ENV_VAR",
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
