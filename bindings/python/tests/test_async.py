"""wait_async in one process: completion, cancellation (which forwards a
consumed wake), timeouts, one-wait-per-handle, close while waiting — on the
default asyncio loop and on uvloop."""

from __future__ import annotations

import asyncio
import errno
import mmap
import select

import pytest
import uvloop
from conftest import WATCHDOG, await_kernel_waiters, kernel_waiters, waiters_queued

from asyncfutex import WAKE_ALL, Futex


async def test_runs_on_the_parametrized_loop(loop_kind: str) -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, uvloop.Loop) == (loop_kind == "uvloop"), type(loop)


async def test_stale_value_completes_at_once(shared_mem: mmap.mmap) -> None:
    with Futex(shared_mem) as f:
        f.store(3)
        await asyncio.wait_for(f.wait_async(2), WATCHDOG)
        # Re-armable after a completion, many times.
        for _ in range(100):
            await asyncio.wait_for(f.wait_async(2), WATCHDOG)


async def test_woken_by_another_handle(shared_mem: mmap.mmap) -> None:
    with Futex(shared_mem) as f, Futex(shared_mem) as g:
        task = asyncio.ensure_future(f.wait_async(0))
        await waiters_queued(f.address, 1)  # a real kernel waiter
        assert not task.done()
        g.store(1)
        assert g.wake(1) == 1
        await asyncio.wait_for(task, WATCHDOG)
        assert f.value == 1


async def test_private_word_woken_by_a_thread() -> None:
    ba = bytearray(4)
    with Futex(ba, private=True) as f:
        task = asyncio.ensure_future(f.wait_async(0))
        loop = asyncio.get_running_loop()

        def waker() -> int:
            await_kernel_waiters(f.address, 1, private=True)
            f.store(1)
            return f.wake(WAKE_ALL)

        assert await loop.run_in_executor(None, waker) == 1
        await asyncio.wait_for(task, WATCHDOG)


async def test_many_tasks_many_handles(shared_mem: mmap.mmap) -> None:
    # One handle per concurrent waiter; wake-all completes every one.
    n = 20
    handles = [Futex(shared_mem) for _ in range(n)]
    waker = Futex(shared_mem)
    try:
        tasks = [asyncio.ensure_future(h.wait_async(0)) for h in handles]
        await waiters_queued(waker.address, n)
        waker.store(1)
        assert waker.wake(WAKE_ALL) == n
        await asyncio.wait_for(asyncio.gather(*tasks), WATCHDOG)
    finally:
        for h in handles:
            h.close()
        waker.close()


async def test_double_arm_is_ebusy(shared_mem: mmap.mmap) -> None:
    with Futex(shared_mem) as f:
        first = asyncio.ensure_future(f.wait_async(0))
        await asyncio.sleep(0)
        with pytest.raises(OSError) as e:
            await f.wait_async(0)
        assert e.value.errno == errno.EBUSY
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        # Cancelled: armable again, and the kernel wait is gone.
        assert kernel_waiters(f.address) == 0
        f.store(1)
        await asyncio.wait_for(f.wait_async(0), WATCHDOG)


async def test_wait_for_timeout_disarms(shared_mem: mmap.mmap) -> None:
    with Futex(shared_mem) as f:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(f.wait_async(0), 0.05)
        assert kernel_waiters(f.address) == 0  # no stray kernel waiter
        # The handle is usable again, and a real wake reaches the next wait.
        task = asyncio.ensure_future(f.wait_async(0))
        await waiters_queued(f.address, 1)
        f.store(1)
        assert f.wake(1) == 1
        await asyncio.wait_for(task, WATCHDOG)


async def test_blocking_wait_timeout_in_executor(shared_mem: mmap.mmap) -> None:
    with Futex(shared_mem) as f:
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, f.wait, 0, 0.05) is False


async def test_cancelled_task_forwards_a_consumed_wake(shared_mem: mmap.mmap) -> None:
    # A is queued before B; wake(1) goes to A (FIFO); A is cancelled after
    # its wait consumed the wake but before it saw it: B must complete.
    a, b, w = Futex(shared_mem), Futex(shared_mem), Futex(shared_mem)
    try:
        task_a = asyncio.ensure_future(a.wait_async(0))
        await waiters_queued(w.address, 1)
        task_b = asyncio.ensure_future(b.wait_async(0))
        await waiters_queued(w.address, 2)
        assert w.wake(1) == 1
        # A's wait completed (its eventfd is readable) — the loop has not run
        # A's reader callback yet: cancel it now.
        readable, _, _ = select.select([a.fileno()], [], [], WATCHDOG)
        assert readable, "A's wait did not take the wake"
        task_a.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task_a
        await asyncio.wait_for(task_b, WATCHDOG)  # the forwarded wake
        assert kernel_waiters(w.address) == 0
    finally:
        for h in (a, b, w):
            h.close()


async def test_cancel_at_every_point_loses_no_wake(shared_mem: mmap.mmap) -> None:
    # Cancel vs wake, looped: every wake is accounted for — either the
    # cancelled task's wait forwarded it to the backstop waiter, or it never
    # consumed it (then wake() reports who it did wake).
    w = Futex(shared_mem)
    victim = Futex(shared_mem)
    delivered = 0
    rounds = 60
    try:
        for i in range(rounds):
            task = asyncio.ensure_future(victim.wait_async(0))
            await waiters_queued(w.address, 1)
            back = Futex(shared_mem)
            back_task = asyncio.ensure_future(back.wait_async(0))
            await waiters_queued(w.address, 2)
            woken = w.wake(1)
            assert woken == 1
            for _ in range(i % 3):  # cancel at different points
                await asyncio.sleep(0)
            task.cancel()
            try:
                await task
                victim_got_it = True
            except asyncio.CancelledError:
                victim_got_it = False
            if victim_got_it:
                # It completed before the cancel landed: wake the backstop.
                assert w.wake(1) == 1
            await asyncio.wait_for(back_task, WATCHDOG)
            delivered += 1
            back.close()
            assert kernel_waiters(w.address) == 0
    finally:
        for h in (w, victim):
            h.close()
    assert delivered == rounds


async def test_close_while_waiting(shared_mem: mmap.mmap) -> None:
    f = Futex(shared_mem)
    address = f.address
    task = asyncio.ensure_future(f.wait_async(0))
    await waiters_queued(address, 1)
    f.close()
    assert kernel_waiters(address) == 0  # afx_free returns once it is gone
    with pytest.raises(ValueError, match="closed"):
        await asyncio.wait_for(task, WATCHDOG)
    with pytest.raises(ValueError, match="closed"):
        await f.wait_async(0)
