"""Pinning shared memory for the library: a writable buffer (kept exported)
or a raw address, checked for alignment and range the way the C API checks
it, with one exception class for every bad address."""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Any, Tuple, Union

#: Anything exposing a writable buffer: mmap.mmap, bytearray,
#: ``SharedMemory.buf``, a writable memoryview, a ctypes object...
Buffer = Any


class InvalidAddressError(OSError, ValueError):
    """A bad address for a futex word or a primitive's shared state.

    Raised for NULL (0) and misaligned addresses or offsets (``errno`` is
    ``EINVAL``, as the C API returns for both), and for memory outside the
    buffer or not mapped (``EFAULT``, as the C API returns for an unreadable
    address). It is both an :class:`OSError` (with the C ``errno``) and a
    :class:`ValueError` (a bad argument), like ``io.UnsupportedOperation``.
    """


def address_error(err: int, detail: str) -> InvalidAddressError:
    return InvalidAddressError(err, f"{os.strerror(err)}: {detail}")


def pin(buffer_or_address: Union[Buffer, int], offset: int, size: int, align: int, what: str) -> Tuple[int, Any]:
    """The address of ``size`` bytes at ``offset`` of a writable buffer (or
    from a raw int address), aligned to ``align``; and an object that keeps a
    buffer exported (so an mmap cannot be closed under the library) while it
    lives (None for a raw address: the caller keeps that memory mapped)."""
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise TypeError(f"offset must be an int, not {type(offset).__name__}")
    if isinstance(buffer_or_address, int) and not isinstance(buffer_or_address, bool):
        address = buffer_or_address + offset
        if address <= 0:
            raise address_error(errno.EINVAL, f"address {address:#x} of the {what} is NULL or negative")
        if address % align:
            raise address_error(
                errno.EINVAL, f"address {address:#x} of the {what} is not {align}-byte aligned (it must be)"
            )
        return address, None
    try:
        view = memoryview(buffer_or_address)
    except TypeError:
        raise TypeError(
            f"the {what} needs a writable buffer (mmap.mmap, SharedMemory.buf, bytearray, ...) "
            f"or an int address, not {type(buffer_or_address).__name__}"
        ) from None
    with view:
        if view.readonly:
            raise TypeError(
                f"the {type(buffer_or_address).__name__} buffer is read-only; the {what} needs "
                "writable memory (mmap with ACCESS_WRITE/PROT_WRITE, bytearray, SharedMemory.buf)"
            )
        nbytes = view.nbytes
    if offset < 0 or offset + size > nbytes:
        raise address_error(
            errno.EFAULT, f"offset {offset} is out of range for a {what} of {size} bytes in a buffer of {nbytes} bytes"
        )
    # Exports the buffer: it stays alive (an mmap cannot be closed) while
    # the returned object lives.
    keep = (ctypes.c_char * size).from_buffer(buffer_or_address, offset)
    address = ctypes.addressof(keep)
    if address % align:
        raise address_error(
            errno.EINVAL,
            f"the {what} at offset {offset} ({address:#x}) is not {align}-byte aligned "
            f"(offset must be a multiple of {align} in an aligned buffer such as an mmap)",
        )
    return address, keep
