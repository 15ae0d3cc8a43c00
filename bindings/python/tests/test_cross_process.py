"""Real separate processes (multiprocessing, fork context) over real shared
memory: ping-pong, wake counts, a cancelled task forwarding a wake to
another process, a SharedWord shared by name."""

from __future__ import annotations

import asyncio
import mmap
import select
import time
from multiprocessing.process import BaseProcess

import pytest
from conftest import (
    WATCHDOG,
    await_kernel_waiters,
    join_ok,
    kernel_waiters,
    run_loop,
    start_child,
    waiters_queued,
)

from asyncfutex import WAKE_ALL, Futex, SharedWord

ROUNDS = 200


async def _await_value(f: Futex, target: int) -> None:
    while True:
        seen = f.value
        if seen == target:
            return
        await f.wait_async(seen)


def _ponger(mem: mmap.mmap, rounds: int, kind: str) -> None:
    """Child: awaits 1, 3, 5, ... and answers 2, 4, 6, ... on its own loop."""

    async def main() -> None:
        with Futex(mem) as f:
            for i in range(rounds):
                await _await_value(f, 2 * i + 1)
                f.store(2 * i + 2)
                f.wake(WAKE_ALL)

    run_loop(kind, main())


async def test_ping_pong_between_processes(shared_mem: mmap.mmap, loop_kind: str) -> None:
    child = start_child(_ponger, shared_mem, ROUNDS, loop_kind)
    try:
        with Futex(shared_mem) as f:
            start = time.monotonic()
            for i in range(ROUNDS):
                f.store(2 * i + 1)
                f.wake(WAKE_ALL)
                await asyncio.wait_for(_await_value(f, 2 * i + 2), WATCHDOG)
            elapsed = time.monotonic() - start
            assert f.value == 2 * ROUNDS
    finally:
        join_ok(child)
    print(f"{ROUNDS} cross-process round trips, {elapsed / ROUNDS * 1e6:.0f} us each ({loop_kind})")


def _blocking_waiter(mem: mmap.mmap, slot: int) -> None:
    """Child: one blocking wait on word 0; records "woken" in word `slot`."""
    with Futex(mem) as f, Futex(mem, 4 * slot) as flag:
        woken = f.wait(0, timeout=WATCHDOG)
        flag.store(1 if woken else 2)
        flag.wake(WAKE_ALL)


def test_wake_one_of_two_waiter_processes(shared_mem: mmap.mmap) -> None:
    with Futex(shared_mem) as w:
        children = [start_child(_blocking_waiter, shared_mem, slot) for slot in (1, 2)]
        try:
            await_kernel_waiters(w.address, 2)
            assert w.wake(1) == 1  # exactly one of the two
            done = _first_exit(children)
            join_ok(done)
            assert kernel_waiters(w.address) == 1  # the other still sleeps
            other = children[1 - children.index(done)]
            assert other.is_alive()
            assert w.wake(WAKE_ALL) == 1
        finally:
            for c in children:
                join_ok(c)
        assert shared_mem[4] == 1 and shared_mem[8] == 1  # both were woken, not timed out


def _first_exit(children: "list[BaseProcess]") -> "BaseProcess":
    from multiprocessing.connection import wait

    ready = wait([c.sentinel for c in children], WATCHDOG)
    assert ready, "no child exited"
    return next(c for c in children if c.sentinel in ready)


async def test_async_waiters_in_two_processes(shared_mem: mmap.mmap, loop_kind: str) -> None:
    """An async waiter here and one in a child: wake(1) wakes exactly one."""

    async def wait_here(f: Futex) -> None:
        await f.wait_async(0)

    def child_wait(mem: mmap.mmap, kind: str) -> None:
        async def main() -> None:
            with Futex(mem) as f:
                await f.wait_async(0)

        run_loop(kind, main())

    with Futex(shared_mem) as mine, Futex(shared_mem) as w:
        task = asyncio.ensure_future(wait_here(mine))
        await waiters_queued(w.address, 1)
        child = start_child(child_wait, shared_mem, loop_kind)
        try:
            await_kernel_waiters(w.address, 2)
            assert w.wake(1) == 1  # FIFO: ours, queued first
            await asyncio.wait_for(task, WATCHDOG)
            assert child.is_alive() and kernel_waiters(w.address) == 1
            assert w.wake(1) == 1
        finally:
            join_ok(child)


async def test_cancelled_task_forwards_wake_to_another_process(shared_mem: mmap.mmap) -> None:
    # A (an async task here) is queued before B (a blocking waiter in a
    # child). wake(1) goes to A; A is cancelled before it saw the wake; the
    # wake must be forwarded to B.
    with Futex(shared_mem) as a, Futex(shared_mem) as w:
        task = asyncio.ensure_future(a.wait_async(0))
        await waiters_queued(w.address, 1)
        child = start_child(_blocking_waiter, shared_mem, 1)
        try:
            await_kernel_waiters(w.address, 2)
            assert w.wake(1) == 1
            readable, _, _ = select.select([a.fileno()], [], [], WATCHDOG)
            assert readable, "A's wait did not take the wake"
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            join_ok(child)
        assert shared_mem[4] == 1, "B timed out: the consumed wake was lost"
        assert kernel_waiters(w.address) == 0


def _shared_word_child(sw: SharedWord, kind: str) -> None:
    async def main() -> None:
        f = sw.futex(0)
        await _await_value(f, 1)
        sw.store(2, 1)
        sw.futex(1).wake(WAKE_ALL)

    run_loop(kind, main())
    sw.close()


async def test_shared_word_between_processes(loop_kind: str) -> None:
    with SharedWord(count=2) as sw:
        child = start_child(_shared_word_child, sw, loop_kind)
        try:
            f0, f1 = sw.futex(0), sw.futex(1)
            await_kernel_waiters(f0.address, 1)
            f0.store(1)
            # Not `== 1`: on the thread backend's futex_waitv mode a wake may
            # find no waiter while a helper re-queues its waits (see the
            # header); the store makes the child's wait complete anyway.
            f0.wake(WAKE_ALL)
            await asyncio.wait_for(_await_value(f1, 2), WATCHDOG)
        finally:
            join_ok(child)
