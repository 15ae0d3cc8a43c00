"""A Python process and a C process (tests/peers/sync_peer.c, compiled here
against include/asyncfutex.h and the library this package loaded) share a
memfd holding one of each primitive: the mutex guards a plain counter both
increment, permits relay through two semaphores, event counts ping-pong,
frames cross two channels exactly once and in order, and a C process that
dies holding the mutex leaves it to Python with owner_died. Every phase is
ordered by handshakes on the event counts, never by sleeps."""

from __future__ import annotations

import asyncio
import ctypes
import mmap
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import WATCHDOG

import asyncfutex
from asyncfutex import EventCount, Mutex, Receiver, Semaphore, Sender, channel_init

# The layout of sync_peer.c.
MEM_SIZE = 8192
OFF_MUTEX = 0
OFF_COUNTER = 16
OFF_SEM_TO_C = 64
OFF_SEM_TO_PY = 80
OFF_EV_PY = 96
OFF_EV_C = 104
OFF_CHAN_TO_C = 1024
OFF_CHAN_TO_PY = 4096

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent.parent


@pytest.fixture(scope="session")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sync_peer.c built against the library this process uses."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler (cc/gcc) to build the C peer")
    header_dir = REPO / "include"
    if not (header_dir / "asyncfutex.h").is_file():
        pytest.skip(f"include/asyncfutex.h not found at {header_dir} (tests run outside the repository)")
    lib = Path(asyncfutex.library_path())
    if not lib.is_absolute() or not lib.is_file():
        pytest.skip(f"the library was loaded by name ({lib}), not from a file the peer can link")
    out_dir = tmp_path_factory.mktemp("peer")
    out = out_dir / "sync_peer"
    # The library's SONAME is libasyncfutex.so.0: give the peer that name for
    # the very file Python loaded (the bundled copy), found through its rpath.
    (out_dir / "libasyncfutex.so.0").symlink_to(lib)
    cmd = [
        cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-O1",
        f"-I{header_dir}", str(HERE / "peers" / "sync_peer.c"),
        str(out_dir / "libasyncfutex.so.0"), f"-Wl,-rpath,{out_dir}", "-o", str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}"
    return out


def _behind(seq: int, target: int) -> bool:
    """Whether the 31-bit wrapping ``seq`` has not reached ``target`` yet."""
    return 0 < ((target - seq) & 0x7FFF_FFFF) < (1 << 30)


class Shared:
    """The memfd, its mapping, the initialised states and the event-count
    handshakes with the peer."""

    def __init__(self, peer: Path) -> None:
        self.peer = peer
        self.fd = os.memfd_create("afx-cross-language")
        os.ftruncate(self.fd, MEM_SIZE)
        self.mem = mmap.mmap(self.fd, MEM_SIZE)
        self.ev_py = EventCount(self.mem, OFF_EV_PY, create=True)
        self.ev_c = EventCount(self.mem, OFF_EV_C, create=True)
        self.seen = self.ev_c.seq
        self.target = self.seen  # the peer's publishes so far (it starts at 0)
        self.proc: Any = None
        self.handles: list = [self.ev_py, self.ev_c]

    def keep(self, handle: Any) -> Any:
        self.handles.append(handle)
        return handle

    def spawn(self, scenario: str, n: int) -> None:
        self.proc = subprocess.Popen([str(self.peer), str(self.fd), scenario, str(n)], pass_fds=(self.fd,))

    async def from_c(self) -> None:
        """Awaits the peer's next publish on ev_c (a step done); fails at
        once if the peer exits instead (its pidfd becomes readable)."""
        loop = asyncio.get_running_loop()
        pidfd = os.pidfd_open(self.proc.pid)
        exited: asyncio.Future[None] = loop.create_future()
        loop.add_reader(pidfd, lambda: exited.done() or exited.set_result(None))
        # Publishes coalesce (a waiter sees the latest seq): count them.
        self.target += 1

        async def reach_target() -> int:
            seq = self.seen
            while _behind(seq, self.target):
                seq = await self.ev_c.wait_async(seq)
            return seq

        step = asyncio.ensure_future(reach_target())
        try:
            done, _ = await asyncio.wait({step, exited}, timeout=WATCHDOG, return_when=asyncio.FIRST_COMPLETED)
            if step not in done:
                step.cancel()
                await asyncio.gather(step, return_exceptions=True)
                seq = self.ev_c.seq
                if not _behind(seq, self.target):  # it published, then exited at once
                    self.seen = seq
                    return
                status = self.proc.poll()
                pytest.fail(
                    f"the C peer {'exited with ' + str(status) if done else 'did not answer'} "
                    f"(publishes seen: {self.ev_c.seq}, expected {self.target}; see its stderr)"
                )
            self.seen = step.result()
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)

    def from_c_blocking(self) -> None:
        self.target += 1
        seq = self.seen
        while _behind(seq, self.target):
            got = self.ev_c.wait(seq, timeout=WATCHDOG)
            assert got is not None, "the C peer did not answer"
            seq = got
        self.seen = seq

    def reap(self) -> None:
        assert self.proc.wait(timeout=WATCHDOG) == 0, "the C peer failed (see its stderr)"

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for h in reversed(self.handles):
            h.close()
        self.mem.close()
        os.close(self.fd)


@pytest.fixture
def shared(peer: Path) -> Iterator[Shared]:
    sh = Shared(peer)
    try:
        yield sh
    finally:
        sh.close()


async def test_mutex_guards_a_counter_with_c(shared: Shared) -> None:
    n = 1000
    m = shared.keep(Mutex(shared.mem, OFF_MUTEX, create=True))
    counter = ctypes.c_uint64.from_buffer(shared.mem, OFF_COUNTER)
    try:
        shared.spawn("mutex", n)
        await shared.from_c()  # the peer's handle is open
        for i in range(n):
            if i % 2:
                async with m:
                    v = counter.value
                    await asyncio.sleep(0)  # let a lost update happen, if it could
                    counter.value = v + 1
            else:
                with m:
                    v = counter.value
                    os.sched_yield()
                    counter.value = v + 1
        await shared.from_c()  # the peer is done
        shared.reap()
        assert counter.value == 2 * n
        assert m.try_acquire() and not m.owner_died
        m.release()
    finally:
        del counter


async def test_semaphore_permits_relay_through_c(shared: Shared) -> None:
    n = 400
    to_c = shared.keep(Semaphore(shared.mem, OFF_SEM_TO_C, create=True))
    to_py = shared.keep(Semaphore(shared.mem, OFF_SEM_TO_PY, create=True))
    shared.spawn("semaphore", n)
    await shared.from_c()
    for i in range(n):
        to_c.release(1)
        if i % 2:
            await asyncio.wait_for(to_py.acquire_async(), WATCHDOG)
        else:
            assert to_py.acquire(timeout=WATCHDOG), f"permit {i} did not come back from C"
    await shared.from_c()
    shared.reap()
    # Exactly n went each way: none left over, none missing.
    assert to_c.value == 0 and to_py.value == 0
    assert not to_py.try_acquire() and not to_c.try_acquire()


async def test_event_count_broadcast_and_pingpong_with_c(shared: Shared) -> None:
    rounds = 200
    listener = shared.keep(EventCount(shared.mem, OFF_EV_PY))  # a second Python waiter
    shared.spawn("event", rounds)
    await shared.from_c()
    for i in range(rounds):
        before = shared.ev_py.seq
        heard = asyncio.ensure_future(listener.wait_async(before))
        seq = shared.ev_py.publish()
        assert seq == (before + 1) & 0x7FFF_FFFF
        # Both the C process and the Python task see the publish.
        assert await asyncio.wait_for(heard, WATCHDOG) == seq
        if i % 2:
            await shared.from_c()
        else:
            shared.from_c_blocking()
    await shared.from_c()
    shared.reap()


def _frame(i: int) -> bytes:
    return f"frame {i} {'.' * (i % 40)}".encode()


@pytest.mark.parametrize("mode", ["async", "threads"])
async def test_channel_frames_exactly_once_in_order_through_c(shared: Shared, mode: str) -> None:
    n = 600
    channel_init(shared.mem, 64, 4, offset=OFF_CHAN_TO_C)  # small rings: full and empty waits
    channel_init(shared.mem, 64, 4, offset=OFF_CHAN_TO_PY)
    tx = shared.keep(Sender(shared.mem, OFF_CHAN_TO_C))
    rx = shared.keep(Receiver(shared.mem, OFF_CHAN_TO_PY))
    assert (tx.frame_size, tx.capacity) == (64, 4)
    shared.spawn("channel", n)
    await shared.from_c()

    async def send_async() -> None:
        for i in range(n):
            if i % 3 == 0 and tx.try_send(_frame(i)):
                continue
            await tx.send_async(_frame(i))

    async def recv_async() -> None:
        for i in range(n):
            got = await rx.recv_async() if i % 2 else (rx.try_recv() or await rx.recv_async())
            assert got == _frame(i), f"frame {i}: {got!r}"

    def send_blocking() -> None:
        for i in range(n):
            assert tx.send(_frame(i), timeout=WATCHDOG), f"send {i} timed out"

    def recv_blocking() -> None:
        for i in range(n):
            got = rx.recv(timeout=WATCHDOG)
            assert got == _frame(i), f"frame {i}: {got!r}"

    if mode == "async":
        await asyncio.wait_for(asyncio.gather(send_async(), recv_async()), WATCHDOG)
    else:
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(
            asyncio.gather(loop.run_in_executor(None, send_blocking), loop.run_in_executor(None, recv_blocking)),
            WATCHDOG,
        )
    await shared.from_c()
    shared.reap()
    assert rx.try_recv() is None


async def test_c_process_dying_with_the_mutex_leaves_it_owner_died(shared: Shared) -> None:
    m = shared.keep(Mutex(shared.mem, OFF_MUTEX, create=True))
    shared.spawn("die-holding", 0)
    await shared.from_c()  # it holds the mutex (and exits at once)
    shared.reap()  # gone
    await asyncio.wait_for(m.acquire_async(), WATCHDOG)  # notices the dead holder
    assert m.owner_died
    m.mark_consistent()
    m.release()
    assert m.acquire(timeout=WATCHDOG) and not m.owner_died
    m.release()
