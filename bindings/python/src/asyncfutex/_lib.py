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
                f"path of {LIBRARY_FILE} (cargo build --lib puts it in target/<profile>/), "
                f"or unset it to search next to the package and on the loader path."
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
        f"{LIBRARY_FILE} not found. Build it with `cargo build --lib` (it lands in "
        f"target/<profile>/{LIBRARY_FILE}) and either set {ENV_VAR}=/full/path/to/{LIBRARY_FILE}, "
        f"copy it next to the package ({beside}), or install it where the dynamic loader "
        f"finds it (LD_LIBRARY_PATH, ldconfig). Tried: " + "; ".join(errors)
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
