"""Finding and loading ``libasyncfutex.so`` and declaring its C API."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from pathlib import Path
from typing import List, Optional

ENV_VAR = "ASYNCFUTEX_LIB"
LIBRARY_FILE = "libasyncfutex.so"

_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None
_path: Optional[str] = None


class LibraryNotFoundError(ImportError):
    """``libasyncfutex.so`` could not be found or loaded."""


class WaitEntry(ctypes.Structure):
    """``afx_wait_entry``: one entry of a vector wait (``afx_waitv``,
    ``afx_waitv_async``)."""

    _fields_ = [
        ("addr", ctypes.c_void_p),  # uint32_t *: the word, 4-byte aligned
        ("expected", ctypes.c_uint32),  # sleep only while *addr == expected
        ("flags", ctypes.c_uint32),  # 0 (shared key) or AFX_PRIVATE
    ]


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Declares the prototypes; fails if a symbol is missing."""
    vp, u32, i32, i64, cstr = (
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_int64,
        ctypes.c_char_p,
    )
    entries = ctypes.POINTER(WaitEntry)
    protos = {
        "afx_new": (vp, [vp, u32]),
        "afx_free": (None, [vp]),
        "afx_wake": (i32, [vp, u32]),
        "afx_wait": (i32, [vp, u32, i64]),
        "afx_eventfd": (i32, [vp]),
        "afx_wait_async": (i32, [vp, u32]),
        "afx_ack": (i32, [vp]),
        "afx_cancel": (i32, [vp]),
        "afx_waitv": (i32, [entries, u32, i64]),
        "afx_waitv_async": (i32, [vp, entries, u32]),
        "afx_ack_index": (i32, [vp, ctypes.POINTER(u32)]),
        "afx_version": (cstr, []),
        "afx_backend": (i32, []),
        "afx_select_backend": (i32, [i32]),
        "afx_backend_name": (cstr, [i32]),
        "afx_strerror": (cstr, [i32]),
        # Cross-process primitives (src/ffi/sync.rs).
        "afx_mutex_init": (i32, [vp]),
        "afx_mutex_open": (vp, [vp]),
        "afx_mutex_close": (None, [vp]),
        "afx_mutex_lock": (i32, [vp, i64]),
        "afx_mutex_trylock": (i32, [vp]),
        "afx_mutex_lock_async": (i32, [vp]),
        "afx_mutex_unlock": (i32, [vp]),
        "afx_mutex_consistent": (i32, [vp]),
        "afx_mutex_eventfd": (i32, [vp]),
        "afx_mutex_cancel": (i32, [vp]),
        "afx_sem_init": (i32, [vp, u32]),
        "afx_sem_open": (vp, [vp]),
        "afx_sem_close": (None, [vp]),
        "afx_sem_acquire": (i32, [vp, i64]),
        "afx_sem_tryacquire": (i32, [vp]),
        "afx_sem_acquire_async": (i32, [vp]),
        "afx_sem_release": (i32, [vp, u32]),
        "afx_sem_value": (i32, [vp]),
        "afx_sem_eventfd": (i32, [vp]),
        "afx_sem_cancel": (i32, [vp]),
        "afx_event_init": (i32, [vp]),
        "afx_event_open": (vp, [vp]),
        "afx_event_close": (None, [vp]),
        "afx_event_publish": (i32, [vp]),
        "afx_event_seq": (i32, [vp]),
        "afx_event_wait": (i32, [vp, u32, i64]),
        "afx_event_wait_async": (i32, [vp, u32]),
        "afx_event_eventfd": (i32, [vp]),
        "afx_event_cancel": (i32, [vp]),
        "afx_chan_size": (ctypes.c_uint64, [u32, u32]),
        "afx_chan_init": (i32, [vp, u32, u32]),
        "afx_chan_open": (vp, [vp, i32]),
        "afx_chan_close": (None, [vp]),
        "afx_chan_send": (i32, [vp, vp, u32, i64]),
        "afx_chan_try_send": (i32, [vp, vp, u32]),
        "afx_chan_send_async": (i32, [vp, vp, u32]),
        "afx_chan_recv": (i32, [vp, vp, u32, i64]),
        "afx_chan_try_recv": (i32, [vp, vp, u32]),
        "afx_chan_recv_async": (i32, [vp, vp, u32]),
        "afx_chan_eventfd": (i32, [vp]),
        "afx_chan_cancel": (i32, [vp]),
    }
    for name, (restype, argtypes) in protos.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


def _try_load(candidate: str, errors: List[str]) -> Optional[ctypes.CDLL]:
    try:
        lib = ctypes.CDLL(candidate, use_errno=True)
    except OSError as e:
        errors.append(f"{candidate}: {e}")
        return None
    try:
        return _declare(lib)
    except AttributeError as e:
        errors.append(f"{candidate}: not libasyncfutex ({e})")
        return None


def _load() -> tuple[ctypes.CDLL, str]:
    errors: List[str] = []
    env = os.environ.get(ENV_VAR)
    if env:
        lib = _try_load(env, errors)
        if lib is None:
            raise LibraryNotFoundError(
                f"{ENV_VAR}={env!r} cannot be loaded ({errors[-1]}). Set {ENV_VAR} to the full "
                f"path of {LIBRARY_FILE} (cargo build --release --lib puts it in target/release/), "
                f"or unset it to use the copy bundled with the package."
            )
        return lib, env
    beside = Path(__file__).resolve().with_name(LIBRARY_FILE)
    candidates = [str(beside)] if beside.exists() else []
    found = ctypes.util.find_library("asyncfutex")
    if found:
        candidates.append(found)
    candidates.append(LIBRARY_FILE)
    for candidate in candidates:
        lib = _try_load(candidate, errors)
        if lib is not None:
            return lib, candidate
    raise LibraryNotFoundError(
        f"{LIBRARY_FILE} not found: this package normally carries its own copy ({beside}), "
        f"bundled by `pip install ./bindings/python`; reinstall it that way, or set "
        f"{ENV_VAR}=/full/path/to/{LIBRARY_FILE} (cargo build --release --lib puts it in "
        f"target/release/), or install the library where the dynamic loader finds it "
        f"(LD_LIBRARY_PATH, ldconfig). Tried: " + "; ".join(errors)
    )


def library() -> ctypes.CDLL:
    """The loaded library (loaded on first use)."""
    global _lib, _path
    lib = _lib
    if lib is not None:
        return lib
    with _lock:
        if _lib is None:
            _lib, _path = _load()
        return _lib


def library_path() -> str:
    """Where the library was loaded from (loading it if needed)."""
    library()
    assert _path is not None
    return _path
