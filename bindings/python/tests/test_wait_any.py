"""wait_any / wait_any_async: one wait on up to 128 words (futex_waitv).

Each index completes the wait (woken, or its word does not hold its value);
wake counts are exact; a cancelled async wait passes a consumed wake on;
128 words work and 129 are EINVAL; a plain FUTEX_WAKE from a process that
does not use the library wakes it. Async tests run on the default asyncio
loop and on uvloop.

In the thread backend's per-wait mode (``AFX_THREAD_WAITV=0``, or a kernel
without futex_waitv) async vector waits are ENOSYS:
test_per_wait_mode_is_enosys checks that, and the async tests skip with that
reason. Blocking ones need only the kernel's futex_waitv (else they skip).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import functools
import mmap
import os
import select
import signal
import sys
import threading
import time
from typing import Any, Callable, Iterator, List, Optional, Tuple

import pytest
from conftest import (
    WATCHDOG,
    await_kernel_waiters,
    futex_waitv_missing,
    join_ok,
    kernel_waiters,
    raw_futex_wake,
    start_child,
    waiters_queued,
)

from asyncfutex import WAIT_ANY_MAX, WAKE_ALL, Futex, wait_any, wait_any_async

N = 4  # words in most tests


# ---- where vector waits work ---------------------------------------------


@pytest.fixture
def async_waits(per_wait_mode: Optional[str]) -> None:
    """Skips (saying why) where async vector waits are ENOSYS by design."""
    if per_wait_mode:
        pytest.skip(f"{per_wait_mode}: async vector waits are ENOSYS there (test_per_wait_mode_is_enosys checks it)")


@pytest.fixture
def blocking_waits() -> None:
    """Skips (saying why) where the kernel has no futex_waitv."""
    missing = futex_waitv_missing()
    if missing:
        pytest.skip(f"{missing}: blocking vector waits are ENOSYS/EPERM (test_per_wait_mode_is_enosys checks it)")


@pytest.fixture
def words(shared_mem: mmap.mmap) -> Iterator[List[Futex]]:
    """N handles on N distinct words of shared memory, all 0."""
    fs = [Futex(shared_mem, 4 * i) for i in range(N)]
    yield fs
    for f in fs:
        f.close()


def expect_all(fs: List[Futex], value: int = 0) -> List[Tuple[Futex, int]]:
    return [(f, value) for f in fs]


def in_thread(fn: Callable[[], Any]) -> Tuple[threading.Thread, List[Any]]:
    """Runs ``fn`` in a thread; the list gets its result (or exception)."""
    out: List[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as e:  # reported by the test
            out.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def joined(t: threading.Thread, out: List[Any]) -> Any:
    t.join(WATCHDOG)
    assert not t.is_alive(), f"the waiting thread is still blocked after {WATCHDOG} s"
    assert len(out) == 1
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


async def settled(fs: List[Futex], n: int) -> None:
    """Waits until exactly ``n`` kernel waiters are queued on every word,
    allowing more for a moment: a 128-word wait is split over two of the
    thread backend's helpers, and the one that did not complete it lets go
    of its part just after the completion."""
    deadline = time.monotonic() + WATCHDOG
    for i, f in enumerate(fs):
        while (seen := kernel_waiters(f.address)) != n:
            assert time.monotonic() < deadline, f"{seen} kernel waiters on word {i} after {WATCHDOG} s, expected {n}"
            await asyncio.sleep(0.0005)


def no_waiters(fs: List[Futex]) -> None:
    for i, f in enumerate(fs):
        assert kernel_waiters(f.address) == 0, f"a kernel waiter is left on word {i}"


# ---- blocking ------------------------------------------------------------


def test_blocking_stale_entry_completes_at_once(words: List[Futex], blocking_waits: None) -> None:
    for i in range(N):
        entries = expect_all(words)
        entries[i] = (words[i], 1)  # word i holds 0, not 1
        assert wait_any(entries, timeout=WATCHDOG) == i
        assert wait_any(entries) == i
        assert wait_any(entries, timeout=0) == i  # 0 only checks
    words[2].store(7)
    assert wait_any(expect_all(words), timeout=WATCHDOG) == 2


def test_blocking_each_index_is_woken(words: List[Futex], blocking_waits: None) -> None:
    # A pure wake (the word does not change) on word i reports index i, and
    # wake(1) counts exactly the one waiter.
    for i in range(N):
        t, out = in_thread(lambda: wait_any(expect_all(words), timeout=WATCHDOG))
        for f in words:
            await_kernel_waiters(f.address, 1)  # queued on every word
        assert words[i].wake(1) == 1
        assert joined(t, out) == i
        no_waiters(words)


def test_blocking_timeouts(words: List[Futex], blocking_waits: None) -> None:
    entries = expect_all(words)
    start = time.monotonic()
    assert wait_any(entries, timeout=0.05) is None
    assert time.monotonic() - start >= 0.05
    assert wait_any(entries, timeout=0) is None
    with pytest.raises(ValueError, match="NaN"):
        wait_any(entries, timeout=float("nan"))
    # Negative and infinite timeouts wait for a wake, as in afx_waitv.
    for timeout in (-1.0, float("inf")):
        t, out = in_thread(functools.partial(wait_any, entries, timeout=timeout))
        await_kernel_waiters(words[3].address, 1)
        assert not out, f"timeout={timeout} returned {out} instead of waiting"
        words[3].store(1)
        assert words[3].wake(1) == 1
        assert joined(t, out) == 3
        words[3].store(0)


def test_blocking_retries_eintr(words: List[Futex], blocking_waits: None) -> None:
    # A signal handler runs while the thread sleeps in wait_any: the wait
    # goes on (not EINTR, not a timeout) and then takes the wake.
    handled: List[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: handled.append(signum))
    try:
        t, out = in_thread(lambda: wait_any(expect_all(words), timeout=WATCHDOG))
        await_kernel_waiters(words[1].address, 1)
        assert t.ident is not None
        signal.pthread_kill(t.ident, signal.SIGUSR1)
        deadline = time.monotonic() + WATCHDOG
        while not handled:  # Python runs the handler in this thread
            assert time.monotonic() < deadline, "the signal handler never ran"
            time.sleep(0.0005)
        # The C handler ran in the waiting thread, so it had left the
        # kernel: queued again means it retried.
        await_kernel_waiters(words[1].address, 1)
        assert not out, f"wait_any returned {out} after a signal"
        assert words[1].wake(1) == 1
        assert joined(t, out) == 1
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_blocking_mixed_keys_and_duplicates(shared_mem: mmap.mmap, blocking_waits: None) -> None:
    local = bytearray(8)
    with Futex(shared_mem) as shared, Futex(local, private=True) as private:
        entries = [(shared, 0), (private, 0), (shared, 0)]
        t, out = in_thread(lambda: wait_any(entries, timeout=WATCHDOG))
        await_kernel_waiters(private.address, 1, private=True)
        await_kernel_waiters(shared.address, 2)  # the duplicate is queued twice
        assert private.wake(WAKE_ALL) == 1
        assert joined(t, out) == 1
        assert kernel_waiters(shared.address) == 0
        # A wake on the duplicated word reports one of its two entries.
        t, out = in_thread(lambda: wait_any(entries, timeout=WATCHDOG))
        await_kernel_waiters(shared.address, 2)
        assert shared.wake(1) == 1
        assert joined(t, out) in (0, 2)
        assert kernel_waiters(shared.address) == 0


def test_128_words_blocking(shared_mem: mmap.mmap, blocking_waits: None) -> None:
    fs = [Futex(shared_mem, 4 * i) for i in range(WAIT_ANY_MAX)]
    try:
        entries = expect_all(fs)
        for i in (0, 1, 64, WAIT_ANY_MAX - 1):
            t, out = in_thread(lambda: wait_any(entries, timeout=WATCHDOG))
            await_kernel_waiters(fs[i].address, 1)
            await_kernel_waiters(fs[0].address, 1)
            assert fs[i].wake(1) == 1
            assert joined(t, out) == i
        fs[WAIT_ANY_MAX - 1].store(1)
        assert wait_any(entries, timeout=WATCHDOG) == WAIT_ANY_MAX - 1
        fs[WAIT_ANY_MAX - 1].store(0)
        # One more is EINVAL, as is none.
        with pytest.raises(OSError) as e:
            wait_any(entries + [(fs[0], 0)], timeout=WATCHDOG)
        assert e.value.errno == errno.EINVAL
    finally:
        for f in fs:
            f.close()


def test_bad_vectors(shared_mem: mmap.mmap) -> None:
    # Checked before any wait: the same in every mode.
    with Futex(shared_mem) as f:
        for bad in ([], [(f, 0)] * (WAIT_ANY_MAX + 1)):
            with pytest.raises(OSError) as e:
                wait_any(bad, timeout=0)
            assert e.value.errno == errno.EINVAL, e.value
        with pytest.raises(TypeError, match="pair"):
            wait_any([f], timeout=0)  # type: ignore[list-item]
        with pytest.raises(TypeError, match="Futex"):
            wait_any([(f.address, 0)], timeout=0)  # type: ignore[list-item]
        with pytest.raises(TypeError, match="iterable"):
            wait_any(f, timeout=0)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            wait_any([(f, -1)], timeout=0)
        with pytest.raises(ValueError):
            wait_any([(f, 1 << 32)], timeout=0)
        closed = Futex(shared_mem)
        closed.close()
        with pytest.raises(ValueError, match="closed"):
            wait_any([(f, 0), (closed, 0)], timeout=0)
        # Any iterable of pairs will do.
        f.store(5)
        assert wait_any(((g, 0) for g in (f,)), timeout=0) == 0


def test_a_closed_entry_keeps_its_memory_mapped(blocking_waits: None) -> None:
    # Closing an entry's Futex while a wait uses its word must not unmap the
    # word under the kernel: the wait holds the buffer until it ends.
    mem = mmap.mmap(-1, 4096)
    f, g = Futex(mem, 0), Futex(mem, 4)
    address = g.address
    t, out = in_thread(lambda: wait_any([(f, 0), (g, 0)], timeout=WATCHDOG))
    await_kernel_waiters(address, 1)
    f.close()
    g.close()
    with pytest.raises(BufferError):
        mem.close()  # still exported by the pending wait
    assert raw_futex_wake(address, 1) == 1
    assert joined(t, out) == 1
    del t, out
    mem.close()


# ---- async -----------------------------------------------------------------


async def test_async_stale_entry_completes_at_once(words: List[Futex], async_waits: None) -> None:
    for i in range(N):
        entries = expect_all(words)
        entries[i] = (words[i], 1)
        for _ in range(3):
            assert await asyncio.wait_for(wait_any_async(entries), WATCHDOG) == i
            assert await asyncio.wait_for(wait_any_async(entries, owner=words[0]), WATCHDOG) == i
    no_waiters(words)


async def test_async_each_index_is_woken(words: List[Futex], async_waits: None) -> None:
    # A pure wake on word i reaches the waiter, reports i, and wake(1)
    # counts exactly one waiter; nothing is left queued on the others.
    for i in range(N):
        task = asyncio.ensure_future(wait_any_async(expect_all(words)))
        for f in words:
            await waiters_queued(f.address, 1)
        assert not task.done()
        assert words[i].wake(1) == 1
        assert await asyncio.wait_for(task, WATCHDOG) == i
        no_waiters(words)


async def test_async_wake_one_of_two_vector_waiters(words: List[Futex], async_waits: None) -> None:
    # Two vector waits on the same words: wake(1) completes exactly one
    # (the first queued), the other stays queued until the next wake.
    first = asyncio.ensure_future(wait_any_async(expect_all(words)))
    await waiters_queued(words[2].address, 1)
    second = asyncio.ensure_future(wait_any_async(expect_all(words)))
    await waiters_queued(words[2].address, 2)
    assert words[2].wake(1) == 1
    assert await asyncio.wait_for(first, WATCHDOG) == 2
    for f in words:  # the second wait is (again) queued on every word
        await waiters_queued(f.address, 1)
    assert not second.done()
    words[0].store(1)
    assert words[0].wake(WAKE_ALL) == 1
    assert await asyncio.wait_for(second, WATCHDOG) == 0
    no_waiters(words)


async def test_async_owner_handle(words: List[Futex], shared_mem: mmap.mmap, async_waits: None) -> None:
    owner = words[0]  # one of the entries' handles owns the wait
    task = asyncio.ensure_future(wait_any_async(expect_all(words), owner=owner))
    await waiters_queued(words[1].address, 1)
    # Its one async wait is taken: both kinds of arm are EBUSY.
    with pytest.raises(OSError) as e:
        await owner.wait_async(0)
    assert e.value.errno == errno.EBUSY
    with pytest.raises(OSError) as e:
        await wait_any_async(expect_all(words), owner=owner)
    assert e.value.errno == errno.EBUSY
    assert words[1].wake(1) == 1
    # The completion shows on the owner's eventfd (before the loop acks it).
    readable, _, _ = select.select([owner.fileno()], [], [], WATCHDOG)
    assert readable
    assert await asyncio.wait_for(task, WATCHDOG) == 1
    # Free again for a plain async wait.
    owner.store(1)
    await asyncio.wait_for(owner.wait_async(0), WATCHDOG)
    owner.store(0)
    with pytest.raises(TypeError, match="owner"):
        await wait_any_async(expect_all(words), owner=object())  # type: ignore[arg-type]
    # Closing the owner during the wait ends it with ValueError, dequeued.
    spare = Futex(shared_mem, 64)
    task = asyncio.ensure_future(wait_any_async(expect_all(words), owner=spare))
    await waiters_queued(words[3].address, 1)
    spare.close()
    with pytest.raises(ValueError, match="closed"):
        await asyncio.wait_for(task, WATCHDOG)
    no_waiters(words)


async def test_async_wait_for_timeout_disarms(words: List[Futex], async_waits: None) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(wait_any_async(expect_all(words)), 0.05)
    no_waiters(words)  # no stray kernel waiter on any word
    task = asyncio.ensure_future(wait_any_async(expect_all(words)))
    await waiters_queued(words[3].address, 1)
    assert words[3].wake(1) == 1
    assert await asyncio.wait_for(task, WATCHDOG) == 3


async def test_async_cancel_forwards_a_consumed_wake(
    words: List[Futex], shared_mem: mmap.mmap, async_waits: None
) -> None:
    # A (a vector wait on words 0 and 1) is queued on word 1 before B (a
    # plain async wait on word 1). wake(1) goes to A (FIFO); A is cancelled
    # after its wait consumed the wake but before the loop saw it: the wake
    # must reach B.
    owner = Futex(shared_mem, 64)
    b = Futex(shared_mem, 4)
    try:
        task_a = asyncio.ensure_future(wait_any_async(expect_all(words[:2]), owner=owner))
        await waiters_queued(words[1].address, 1)
        task_b = asyncio.ensure_future(b.wait_async(0))
        await waiters_queued(words[1].address, 2)
        assert words[1].wake(1) == 1
        readable, _, _ = select.select([owner.fileno()], [], [], WATCHDOG)
        assert readable, "A's wait did not take the wake"
        task_a.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task_a
        await asyncio.wait_for(task_b, WATCHDOG)  # the forwarded wake
        no_waiters(words)
    finally:
        owner.close()
        b.close()


async def test_async_cancel_at_every_point_loses_no_wake(
    words: List[Futex], shared_mem: mmap.mmap, async_waits: None
) -> None:
    # Cancel vs wake, looped, with the default owner (made per call): every
    # wake(1) reaches either the vector waiter or, forwarded, the backstop.
    rounds = 40
    delivered = 0
    for i in range(rounds):
        victim = asyncio.ensure_future(wait_any_async(expect_all(words)))
        await waiters_queued(words[1].address, 1)
        with Futex(shared_mem, 4) as back:
            backstop = asyncio.ensure_future(back.wait_async(0))
            await waiters_queued(words[1].address, 2)
            assert words[1].wake(1) == 1
            for _ in range(i % 3):  # cancel at different points
                await asyncio.sleep(0)
            victim.cancel()
            try:
                assert await victim == 1
                victim_got_it = True
            except asyncio.CancelledError:
                victim_got_it = False
            if victim_got_it:  # it completed before the cancel landed
                assert words[1].wake(1) == 1
            await asyncio.wait_for(backstop, WATCHDOG)
            delivered += 1
        no_waiters(words)
    assert delivered == rounds


async def test_async_128_words(shared_mem: mmap.mmap, async_waits: None) -> None:
    fs = [Futex(shared_mem, 4 * i) for i in range(WAIT_ANY_MAX)]
    try:
        entries = expect_all(fs)
        for i in (0, 77, WAIT_ANY_MAX - 1):
            task = asyncio.ensure_future(wait_any_async(entries))
            await settled(fs, 1)
            assert fs[i].wake(1) == 1
            assert await asyncio.wait_for(task, WATCHDOG) == i
            await settled(fs, 0)
        fs[WAIT_ANY_MAX - 1].store(1)
        assert await asyncio.wait_for(wait_any_async(entries), WATCHDOG) == WAIT_ANY_MAX - 1
        await settled(fs, 0)
    finally:
        for f in fs:
            f.close()


async def test_async_bad_vectors(shared_mem: mmap.mmap) -> None:
    # Checked when arming, in every mode; the owner stays usable.
    with Futex(shared_mem) as f:
        for owner in (None, f):
            for bad in ([], [(f, 0)] * (WAIT_ANY_MAX + 1)):
                with pytest.raises(OSError) as e:
                    await wait_any_async(bad, owner=owner)
                assert e.value.errno == errno.EINVAL, e.value
        with pytest.raises(TypeError, match="pair"):
            await wait_any_async([f])  # type: ignore[list-item]
        with pytest.raises(ValueError):
            await wait_any_async([(f, 1 << 32)])
        f.store(1)
        await asyncio.wait_for(f.wait_async(0), WATCHDOG)


# ---- other processes -------------------------------------------------------


def _raw_waker(address: int) -> None:
    """Child: stores 1 to the word and wakes it with a plain FUTEX_WAKE, as
    a program that does not link the library would; it must wake one."""
    ctypes.c_uint32.from_address(address).value = 1
    woken = raw_futex_wake(address, 1)
    if woken != 1:
        raise AssertionError(f"FUTEX_WAKE woke {woken}, expected 1")


async def test_async_woken_by_raw_futex_wake_in_another_process(words: List[Futex], async_waits: None) -> None:
    for i in (0, N - 1):
        task = asyncio.ensure_future(wait_any_async(expect_all(words)))
        for f in words:
            await waiters_queued(f.address, 1)
        child = start_child(_raw_waker, words[i].address)
        join_ok(child)
        assert await asyncio.wait_for(task, WATCHDOG) == i
        assert words[i].value == 1
        words[i].store(0)
        no_waiters(words)


def test_blocking_woken_by_raw_futex_wake_in_another_process(words: List[Futex], blocking_waits: None) -> None:
    t, out = in_thread(lambda: wait_any(expect_all(words), timeout=WATCHDOG))
    await_kernel_waiters(words[2].address, 1)
    child = start_child(_raw_waker, words[2].address)
    join_ok(child)
    assert joined(t, out) == 2


def _blocking_vector_waiter(mem: mmap.mmap, result_offset: int) -> None:
    """Child: a blocking wait_any on words 0..N-1; stores index + 1 in the
    result word."""
    fs = [Futex(mem, 4 * i) for i in range(N)]
    index = wait_any(expect_all(fs), timeout=WATCHDOG)
    if index is None:
        raise AssertionError("wait_any timed out in the child")
    with Futex(mem, result_offset) as result:
        result.store(index + 1)


def test_blocking_waiter_in_another_process(words: List[Futex], shared_mem: mmap.mmap, blocking_waits: None) -> None:
    child = start_child(_blocking_vector_waiter, shared_mem, 256)
    try:
        for f in words:
            await_kernel_waiters(f.address, 1)
        assert words[1].wake(1) == 1  # the one waiter, in the other process
    finally:
        join_ok(child)
    assert int.from_bytes(shared_mem[256:260], sys.byteorder) == 2
    no_waiters(words)


# ---- per-wait mode ---------------------------------------------------------


async def test_per_wait_mode_is_enosys(shared_mem: mmap.mmap, per_wait_mode: Optional[str], backend_name: str) -> None:
    # Async vector waits fail with ENOSYS (from the completion); blocking
    # ones work wherever the kernel has futex_waitv, whatever the backend.
    if not per_wait_mode:
        pytest.skip(f"vector waits are served here (backend {backend_name}, not in per-wait mode)")
    with Futex(shared_mem) as f, Futex(shared_mem, 4) as g:
        f.store(1)  # stale: even an immediate completion is refused
        for owner in (None, g):
            with pytest.raises(OSError) as e:
                await asyncio.wait_for(wait_any_async([(f, 0), (g, 0)], owner=owner), WATCHDOG)
            assert e.value.errno == errno.ENOSYS, e.value
        missing = futex_waitv_missing()
        if missing:
            with pytest.raises(OSError) as e:
                wait_any([(f, 0), (g, 0)], timeout=WATCHDOG)
            assert e.value.errno in (errno.ENOSYS, errno.EPERM), e.value
        else:
            assert wait_any([(g, 0), (f, 0)], timeout=WATCHDOG) == 1
        # The owner is left usable for plain async waits.
        g.store(1)
        await asyncio.wait_for(g.wait_async(0), WATCHDOG)
