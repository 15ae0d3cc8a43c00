"""Mutex, Semaphore, EventCount and the channel in one process and across
fork children: blocking, try, timeouts (negative: forever), async on both
loops, cancel safety (no lost wake, permit or frame), owner death, bad
input."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import mmap
import os
import threading

import pytest
from conftest import WATCHDOG, join_ok, kernel_waiters, start_child, waiters_queued

import asyncfutex
from asyncfutex import (
    EventCount,
    InvalidAddressError,
    Mutex,
    Receiver,
    Semaphore,
    Sender,
    channel_init,
    channel_size,
)


def _sem_waiters(mem: mmap.mmap, offset: int) -> int:
    """The ``waiters`` field of an afx_sem_state (registered sleepers)."""
    return int(ctypes.c_uint32.from_buffer(mem, offset + 4).value)


def test_mutex_blocking_try_timeout_and_context(shared_mem: mmap.mmap) -> None:
    with pytest.raises(OSError) as e:
        Mutex(shared_mem)  # not initialised
    assert e.value.errno == errno.EPROTO
    m = Mutex(shared_mem, create=True)
    other = Mutex(shared_mem)  # a second handle: ownership is per process
    assert m.try_acquire() and not m.owner_died
    assert not other.try_acquire()
    assert not other.acquire(timeout=0.01)
    assert not other.acquire(timeout=0)
    m.release()
    with pytest.raises(PermissionError):
        m.release()
    with m:
        assert not other.try_acquire()
    assert other.acquire(timeout=-1)  # negative: forever (free now)
    other.release()
    with pytest.raises(OSError) as e:
        with m:
            m.mark_consistent()  # not inconsistent
    assert e.value.errno == errno.EINVAL
    other.close()
    m.close()
    m.close()
    with pytest.raises(ValueError, match="closed"):
        m.try_acquire()


async def test_mutex_async_tasks_take_turns(shared_mem: mmap.mmap) -> None:
    m = Mutex(shared_mem, create=True)
    inside = 0
    order = []

    async def worker(k: int) -> None:
        nonlocal inside
        for _ in range(20):
            async with m:
                inside += 1
                assert inside == 1
                order.append(k)
                await asyncio.sleep(0)
                inside -= 1

    await asyncio.wait_for(asyncio.gather(*(worker(k) for k in range(3))), WATCHDOG)
    assert sorted(order) == sorted([0, 1, 2] * 20)
    m.close()


async def test_mutex_async_cancel_leaves_it_usable(shared_mem: mmap.mmap) -> None:
    m = Mutex(shared_mem, create=True)
    m.acquire()
    waiter = asyncio.ensure_future(m.acquire_async())
    await waiters_queued(ctypes.addressof(ctypes.c_uint32.from_buffer(shared_mem)), 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    m.release()
    await asyncio.wait_for(m.acquire_async(), WATCHDOG)
    m.release()
    m.close()


def _die_holding(mem: mmap.mmap) -> None:
    m = Mutex(mem)
    assert m.acquire(timeout=WATCHDOG)
    os._exit(0)  # dies holding it


def test_mutex_owner_died_in_a_fork_child(shared_mem: mmap.mmap) -> None:
    m = Mutex(shared_mem, create=True)
    join_ok(start_child(_die_holding, shared_mem))
    assert m.acquire(timeout=WATCHDOG) and m.owner_died
    m.release()  # without mark_consistent: not recoverable any more
    with pytest.raises(OSError) as e:
        m.acquire(timeout=WATCHDOG)
    assert e.value.errno == errno.ENOTRECOVERABLE
    m.close()
    m = Mutex(shared_mem, create=True)
    join_ok(start_child(_die_holding, shared_mem))
    with m:
        assert m.owner_died
        m.mark_consistent()
        assert not m.owner_died
    assert m.try_acquire() and not m.owner_died
    m.release()
    m.close()


def test_semaphore_blocking_try_value(shared_mem: mmap.mmap) -> None:
    with pytest.raises(ValueError, match="create=True"):
        Semaphore(shared_mem, permits=2)
    s = Semaphore(shared_mem, create=True, permits=2)
    assert s.value == 2
    assert s.acquire(timeout=0) and s.try_acquire()
    assert not s.try_acquire() and not s.acquire(timeout=0.01)
    with pytest.raises(ValueError):
        s.release(-1)
    s.release(1)
    with s:
        assert s.value == 0
    assert s.value == 1
    s.acquire()
    # Negative timeout: forever, until a thread releases once we sleep.
    t = threading.Thread(target=lambda: (_wait_registered(shared_mem), s.release(1)))
    t.start()
    assert s.acquire(timeout=-5)
    t.join()
    s.close()


def _wait_registered(mem: mmap.mmap) -> None:
    import time

    deadline = time.monotonic() + WATCHDOG
    while _sem_waiters(mem, 0) == 0 or kernel_waiters(ctypes.addressof(ctypes.c_uint32.from_buffer(mem))) == 0:
        assert time.monotonic() < deadline, "the blocked acquire never went to sleep"
        time.sleep(0.0005)


async def test_semaphore_cancelled_waiter_passes_the_wake_on(shared_mem: mmap.mmap) -> None:
    """Two handles wait; release(1) wakes one; it is cancelled before it
    runs: the permit is still there and the other waiter gets it."""
    count_addr = ctypes.addressof(ctypes.c_uint32.from_buffer(shared_mem))
    a = Semaphore(shared_mem, create=True)
    b = Semaphore(shared_mem)
    ta = asyncio.ensure_future(a.acquire_async())
    await waiters_queued(count_addr, 1)
    tb = asyncio.ensure_future(b.acquire_async())
    await waiters_queued(count_addr, 2)
    a.release(1)  # FIFO: wakes a's wait...
    ta.cancel()  # ...which is cancelled before its task runs
    with pytest.raises(asyncio.CancelledError):
        await ta
    await asyncio.wait_for(tb, WATCHDOG)  # the wake and the permit went on to b
    assert a.value == 0
    a.release(1)
    assert a.value == 1  # no permit taken by the cancelled wait
    a.close()
    b.close()


async def test_semaphore_async_between_processes(shared_mem: mmap.mmap, loop_kind: str) -> None:
    n = 100
    s = Semaphore(shared_mem, create=True)

    def child(mem: mmap.mmap) -> None:
        t = Semaphore(mem)
        for _ in range(n):
            t.release(1)

    p = start_child(child, shared_mem)
    try:
        for _ in range(n):
            await asyncio.wait_for(s.acquire_async(), WATCHDOG)
    finally:
        join_ok(p)
    assert s.value == 0
    s.close()


async def test_event_count_blocking_and_async(shared_mem: mmap.mmap) -> None:
    e = EventCount(shared_mem, create=True)
    assert e.seq == 0
    assert e.wait(0, timeout=0) is None and e.wait(0, timeout=0.01) is None
    assert e.publish() == 1
    assert e.wait(0) == 1  # already different
    listeners = [EventCount(shared_mem) for _ in range(3)]
    tasks = [asyncio.ensure_future(x.wait_async(1)) for x in listeners]
    await waiters_queued(ctypes.addressof(ctypes.c_uint32.from_buffer(shared_mem)), 3)
    assert e.publish() == 2
    assert await asyncio.wait_for(asyncio.gather(*tasks), WATCHDOG) == [2, 2, 2]  # a broadcast
    # Cancel, then wait again on the same handle.
    t = asyncio.ensure_future(listeners[0].wait_async(2))
    await asyncio.sleep(0)
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
    t = asyncio.ensure_future(listeners[0].wait_async(2))
    e.publish()
    assert await asyncio.wait_for(t, WATCHDOG) == 3
    for x in listeners + [e]:
        x.close()


async def test_channel_in_order_full_and_cancel_safe(shared_mem: mmap.mmap) -> None:
    size = channel_init(shared_mem, 32, 2)
    assert size == channel_size(32, 2)
    tx, rx = Sender(shared_mem), Receiver(shared_mem)
    assert rx.try_recv() is None and rx.recv(timeout=0.01) is None
    assert tx.try_send(b"a") and tx.try_send(bytearray(b"bb"))
    assert not tx.try_send(b"c") and not tx.send(b"c", timeout=0.01)  # full
    with pytest.raises(OSError) as e:
        tx.try_send(b"x" * 33)
    assert e.value.errno == errno.EMSGSIZE
    assert rx.recv() == b"a" and rx.try_recv() == b"bb"
    # A cancelled receive takes no frame.
    t = asyncio.ensure_future(rx.recv_async())
    await asyncio.sleep(0)
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
    tx.send(b"kept")
    assert await asyncio.wait_for(rx.recv_async(), WATCHDOG) == b"kept"
    # Many frames through a 2-slot ring, both sides async.
    n = 300

    async def send() -> None:
        for i in range(n):
            await tx.send_async(i.to_bytes(4, "little") * (i % 8))

    async def recv() -> None:
        for i in range(n):
            assert await rx.recv_async() == i.to_bytes(4, "little") * (i % 8)

    await asyncio.wait_for(asyncio.gather(send(), recv()), WATCHDOG)
    tx.close()
    rx.close()


def test_bad_addresses_and_arguments(shared_mem: mmap.mmap) -> None:
    """0 and a misaligned address are the same error (as in C: -EINVAL),
    for every primitive and for Futex; unmapped is EFAULT."""
    for make in (
        lambda a: asyncfutex.Futex(a),
        lambda a: Mutex(a),
        lambda a: Semaphore(a),
        lambda a: EventCount(a),
        lambda a: Sender(a),
        lambda a: Receiver(a),
    ):
        for address in (0, 3):
            with pytest.raises(InvalidAddressError) as e:
                make(address)
            assert e.value.errno == errno.EINVAL
            assert isinstance(e.value, OSError) and isinstance(e.value, ValueError)
        with pytest.raises(InvalidAddressError) as e:
            make(4096)  # the first page is never mapped
        assert e.value.errno == errno.EFAULT
    with pytest.raises(InvalidAddressError, match="aligned"):
        Mutex(shared_mem, 4)
    with pytest.raises(InvalidAddressError, match="out of range"):
        EventCount(shared_mem, 4092)
    with pytest.raises(ValueError, match="power of two"):
        channel_size(16, 3)
    with pytest.raises(ValueError):
        channel_init(shared_mem, 16, 3)
    with pytest.raises(InvalidAddressError, match="out of range"):
        channel_init(shared_mem, 1024, 4)  # larger than the page
    with pytest.raises(TypeError, match="writable buffer"):
        Mutex("nope")  # type: ignore[arg-type]
