"""Shared fixtures and helpers.

Every test runs once per event loop: the ``event_loop_policy`` fixture
(pytest-asyncio) is parametrized with the default asyncio loop (epoll
selector) and uvloop (libuv). The environment passes through, so the whole
suite also runs once per backend (``AFX_BACKEND=io_uring|thread``).

Ordering uses value handshakes and the kernel's futex waiter count, never
sleeps; time only bounds waits (a stall fails the test instead of hanging).
"""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import os
import platform
import signal
import sys
import time
import traceback
from typing import Any, Callable, Coroutine, Dict, Iterator, Optional

import pytest
import uvloop

import asyncfutex

# A generous bound for anything that should happen "at once".
WATCHDOG = 20.0

LOOPS: Dict[str, Callable[[], asyncio.AbstractEventLoopPolicy]] = {
    "asyncio": asyncio.DefaultEventLoopPolicy,
    "uvloop": uvloop.EventLoopPolicy,
}


@pytest.fixture(scope="session", params=sorted(LOOPS))
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    return LOOPS[request.param]()


@pytest.fixture
def loop_kind(event_loop_policy: asyncio.AbstractEventLoopPolicy) -> str:
    """"uvloop" or "asyncio": the loop this test runs on (children use it too)."""
    return "uvloop" if isinstance(event_loop_policy, uvloop.EventLoopPolicy) else "asyncio"


def pytest_report_header(config: pytest.Config) -> list:
    try:
        info = (
            f"asyncfutex {asyncfutex.version()} from {asyncfutex.library_path()}, "
            f"backend {asyncfutex.backend()} (AFX_BACKEND={os.environ.get('AFX_BACKEND', '')})"
        )
    except Exception as e:  # the tests report it properly
        info = f"asyncfutex: {e}"
    return [info, f"package: {asyncfutex.__file__}"]


@pytest.fixture(scope="session", autouse=True)
def backend_name() -> str:
    """The backend in use; a counted skip of everything when AFX_BACKEND asks
    for one this kernel cannot run (as the C tests do)."""
    wanted = os.environ.get("AFX_BACKEND", "")
    try:
        name = asyncfutex.backend()
    except OSError as e:
        if wanted and wanted != "auto":
            pytest.skip(f"AFX_BACKEND={wanted} cannot run here: {e}")
        raise
    if wanted and wanted != "auto":
        assert name == wanted, f"AFX_BACKEND={wanted} but the backend in use is {name}"
    return name


# ---- the kernel's view ---------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_SYS_FUTEX = {"x86_64": 202, "aarch64": 98, "riscv64": 98}.get(platform.machine())
_FUTEX_WAKE = 1
_FUTEX_CMP_REQUEUE = 4
_FUTEX_PRIVATE_FLAG = 128


def kernel_waiters(address: int, private: bool = False) -> int:
    """How many kernel futex waiters are queued on the word at ``address``,
    without waking any: FUTEX_CMP_REQUEUE of all of them onto the same word
    (the kernel re-keys them in place) returns how many it requeued."""
    if _SYS_FUTEX is None:
        pytest.skip(f"futex syscall number unknown on {platform.machine()}")
    word = ctypes.c_uint32.from_address(address)
    op = _FUTEX_CMP_REQUEUE | (_FUTEX_PRIVATE_FLAG if private else 0)
    while True:
        cur = word.value
        r = _libc.syscall(
            ctypes.c_long(_SYS_FUTEX),
            ctypes.c_void_p(address),
            ctypes.c_int(op),
            ctypes.c_uint32(0),
            ctypes.c_ulong(0x7FFFFFFF),
            ctypes.c_void_p(address),
            ctypes.c_uint32(cur),
        )
        if r >= 0:
            return int(r)
        err = ctypes.get_errno()
        if err != 11:  # EAGAIN: the word changed under us
            raise OSError(err, os.strerror(err))


def raw_futex_wake(address: int, n: int, private: bool = False) -> int:
    """Plain ``futex(FUTEX_WAKE)`` through libc, as a process that does not
    use the library would call it: how many waiters it woke."""
    if _SYS_FUTEX is None:
        pytest.skip(f"futex syscall number unknown on {platform.machine()}")
    op = _FUTEX_WAKE | (_FUTEX_PRIVATE_FLAG if private else 0)
    r = _libc.syscall(ctypes.c_long(_SYS_FUTEX), ctypes.c_void_p(address), ctypes.c_int(op), ctypes.c_uint32(n))
    if r < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(r)


_SYS_FUTEX_WAITV = 449  # the same number on every architecture


def futex_waitv_missing() -> Optional[str]:
    """None if this kernel has ``futex_waitv(2)`` (Linux 5.16+) and lets us
    call it; otherwise why not. (An empty vector: EINVAL when it exists.)"""
    r = _libc.syscall(
        ctypes.c_long(_SYS_FUTEX_WAITV), None, ctypes.c_ulong(0), ctypes.c_ulong(0), None, ctypes.c_long(0)
    )
    err = ctypes.get_errno() if r < 0 else 0
    if err == 22:  # EINVAL
        return None
    return f"futex_waitv(2) is not available here ({os.strerror(err) if err else 'returned ' + str(r)})"


def await_kernel_waiters(address: int, n: int, private: bool = False, timeout: float = WATCHDOG) -> None:
    """Waits until exactly ``n`` kernel waiters are queued on the word."""
    deadline = time.monotonic() + timeout
    while True:
        seen = kernel_waiters(address, private)
        if seen == n:
            return
        assert seen < n, f"{seen} kernel waiters queued, expected at most {n}"
        assert time.monotonic() < deadline, f"{seen} kernel waiters after {timeout} s, expected {n}"
        time.sleep(0.0005)


async def waiters_queued(address: int, n: int, private: bool = False, timeout: float = WATCHDOG) -> None:
    """``await_kernel_waiters`` that lets the running loop work meanwhile (the
    tasks that arm the waits must run)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = kernel_waiters(address, private)
        if seen == n:
            return
        assert seen < n, f"{seen} kernel waiters queued, expected at most {n}"
        assert time.monotonic() < deadline, f"{seen} kernel waiters after {timeout} s, expected {n}"
        await asyncio.sleep(0.0005)


# ---- child processes -----------------------------------------------------

FORK = multiprocessing.get_context("fork")


def _child_main(target: Callable[..., Any], args: tuple) -> None:
    # Die with the parent, and never hang.
    _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    signal.alarm(int(WATCHDOG) + 10)
    # A child forked from inside a running loop must not think it runs one
    # (Python < 3.12 does not reset this at fork).
    asyncio.events._set_running_loop(None)
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:
        pass
    try:
        target(*args)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)


def start_child(target: Callable[..., Any], *args: Any) -> "multiprocessing.process.BaseProcess":
    """Forks a child running ``target(*args)``; an exception makes it exit 1
    (with its traceback on stderr)."""
    sys.stdout.flush()
    sys.stderr.flush()
    p = FORK.Process(target=_child_main, args=(target, args), daemon=True)
    p.start()
    return p


def join_ok(p: "multiprocessing.process.BaseProcess", timeout: float = WATCHDOG) -> None:
    """Reaps a child, failing unless it exited with 0 within ``timeout``."""
    p.join(timeout)
    if p.exitcode is None:
        p.kill()
        p.join()
        pytest.fail(f"child {p.pid} still running after {timeout} s: killed")
    assert p.exitcode == 0, f"child {p.pid} exited with {p.exitcode} (see its stderr above)"


def run_loop(kind: str, coro: Coroutine[Any, Any, Any]) -> Any:
    """Runs ``coro`` to completion on a fresh loop of ``kind`` (in a child)."""
    loop = uvloop.new_event_loop() if kind == "uvloop" else asyncio.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, WATCHDOG))
    finally:
        loop.close()


@pytest.fixture
def shared_mem() -> Iterator[Any]:
    """One page of MAP_SHARED anonymous memory (fork children share it)."""
    import mmap

    mem = mmap.mmap(-1, 4096)
    yield mem
    try:
        mem.close()
    except BufferError:
        pass  # a leaked Futex still exports it; the GC will release it


def address_of(mem: Any, offset: int = 0) -> int:
    """The address of the byte at ``offset`` of a writable buffer."""
    c = (ctypes.c_char * 1).from_buffer(mem, offset)
    try:
        return ctypes.addressof(c)
    finally:
        del c


@pytest.fixture(scope="session")
def per_wait_mode(backend_name: str) -> Optional[str]:
    """Why this process runs the thread backend in per-wait mode (where
    async vector waits are ENOSYS), or None when they are served."""
    if backend_name != "thread":
        return None
    forced = os.environ.get("AFX_THREAD_WAITV", "").strip().lower()
    if forced in ("0", "off", "no", "false"):
        return f"AFX_THREAD_WAITV={forced} forces the thread backend's per-wait mode"
    missing = futex_waitv_missing()
    if missing:
        return f"the thread backend runs in per-wait mode: {missing}"
    return None
