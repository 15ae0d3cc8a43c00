"""The synchronous API: construction, bad input, the word, blocking waits,
the library loader and the helpers."""

from __future__ import annotations

import errno
import mmap
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import WATCHDOG, address_of, await_kernel_waiters, kernel_waiters

import asyncfutex
from asyncfutex import WAKE_ALL, Futex, InvalidAddressError, SharedWord


def test_installed_package_is_tested() -> None:
    # run-tests.sh pip-installs the package: the tests must not pick up the
    # source tree by accident.
    assert "site-packages" in asyncfutex.__file__, asyncfutex.__file__
    pkg = Path(asyncfutex.__file__).parent
    assert (pkg / "py.typed").exists()


def test_version_and_backend(backend_name: str) -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", asyncfutex.version())
    assert asyncfutex.version() == asyncfutex.__version__
    assert backend_name in ("io_uring", "thread")
    assert asyncfutex.backend() == backend_name
    # Choosing the running backend again is fine; another one is EBUSY.
    assert asyncfutex.select_backend(backend_name) == backend_name
    other = "thread" if backend_name == "io_uring" else "io_uring"
    with pytest.raises(OSError) as e:
        asyncfutex.select_backend(other)
    assert e.value.errno == errno.EBUSY
    with pytest.raises(ValueError, match="unknown backend"):
        asyncfutex.select_backend("epoll")
    assert asyncfutex.strerror(-errno.EBUSY)
    assert asyncfutex.strerror(123456) == "unknown error"


def test_value_store_wake_zero(shared_mem: mmap.mmap) -> None:
    with Futex(shared_mem, 8) as f:
        assert f.value == 0
        f.store(0xDEADBEEF)
        assert f.value == 0xDEADBEEF
        assert int.from_bytes(shared_mem[8:12], sys.byteorder) == 0xDEADBEEF
        assert f.address == address_of(shared_mem, 8)
        assert f.wake(0) == 0
        assert f.wake() == 0  # nobody waits
        assert f.wake(WAKE_ALL) == 0
        assert f.fileno() >= 0
        assert "eventfd=" in repr(f)
    assert f.closed
    assert repr(f) == "<asyncfutex.Futex closed>"


def test_buffers_of_every_kind(shared_mem: mmap.mmap) -> None:
    ba = bytearray(16)
    with Futex(ba, 4, private=True) as f:
        f.store(7)
        assert ba[4] == 7 or ba[7] == 7
    with Futex(memoryview(shared_mem)[64:128], 4) as f:
        f.store(9)
        assert f.address == address_of(shared_mem, 68)
    import ctypes

    raw = ctypes.c_uint32(5)
    with Futex(ctypes.addressof(raw), private=True) as f:  # a raw address
        assert f.value == 5
        assert f.wait(4, timeout=WATCHDOG) is True


def test_keeps_its_buffer_alive() -> None:
    ba = bytearray(8)
    f = Futex(ba, 4, private=True)
    del ba  # the handle keeps the bytearray alive
    f.store(3)
    assert f.value == 3
    assert f.wait(2, timeout=WATCHDOG)
    mem = mmap.mmap(-1, 4096)
    g = Futex(mem)
    with pytest.raises(BufferError):
        mem.close()  # exported while the handle holds the word
    g.close()
    mem.close()  # released by close()
    f.close()


def test_bad_input_raises_clear_exceptions(shared_mem: mmap.mmap) -> None:
    with pytest.raises(InvalidAddressError, match="not 4-byte aligned") as e:
        Futex(shared_mem, 2)
    assert e.value.errno == errno.EINVAL
    for offset in (4096, -4):
        with pytest.raises(InvalidAddressError, match="out of range") as e:
            Futex(shared_mem, offset)
        assert e.value.errno == errno.EFAULT
    with pytest.raises(InvalidAddressError, match="out of range"):
        Futex(bytearray(3))
    with pytest.raises(TypeError, match="read-only"):
        Futex(b"\0\0\0\0")
    with pytest.raises(TypeError, match="read-only"):
        Futex(memoryview(bytearray(8)).toreadonly())
    ro = mmap.mmap(-1, 4096, access=mmap.ACCESS_READ)
    with pytest.raises(TypeError, match="read-only"):
        Futex(ro)
    ro.close()
    with pytest.raises(TypeError, match="writable buffer"):
        Futex("not a buffer")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="offset"):
        Futex(shared_mem, 1.0)  # type: ignore[arg-type]
    # Raw addresses: NULL and misaligned are the same error, with C's errno
    # (afx_new gives EINVAL for both); unmapped is EFAULT. The class is both
    # an OSError and a ValueError.
    for address in (0, 3, address_of(shared_mem) + 2):
        with pytest.raises(InvalidAddressError) as e:
            Futex(address)
        assert e.value.errno == errno.EINVAL
        assert isinstance(e.value, OSError) and isinstance(e.value, ValueError)
    with pytest.raises(InvalidAddressError) as e:
        Futex(4096)  # the first page is never mapped
    assert e.value.errno == errno.EFAULT
    # Values out of the u32 range.
    with Futex(shared_mem) as f:
        for bad in (-1, 1 << 32):
            with pytest.raises(ValueError):
                f.wake(bad)
            with pytest.raises(ValueError):
                f.wait(bad, timeout=0)
            with pytest.raises(ValueError):
                f.store(bad)
        with pytest.raises(TypeError):
            f.wait("0", timeout=0)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="NaN"):
            f.wait(0, timeout=float("nan"))


def test_closed_handle_raises_value_error(shared_mem: mmap.mmap) -> None:
    f = Futex(shared_mem)
    f.close()
    f.close()  # idempotent
    for call in (
        lambda: f.value,
        lambda: f.store(1),
        lambda: f.wake(1),
        lambda: f.wait(0, timeout=0),
        lambda: f.fileno(),
        lambda: f.address,
        lambda: f.__enter__(),
    ):
        with pytest.raises(ValueError, match="closed"):
            call()


def test_wait_timeout_and_stale_value(shared_mem: mmap.mmap) -> None:
    with Futex(shared_mem) as f:
        start = time.monotonic()
        assert f.wait(0, timeout=0.05) is False
        assert time.monotonic() - start >= 0.05
        assert f.wait(0, timeout=0) is False
        # Negative: forever, as in C (afx_wait with timeout_ns < 0).
        waker = threading.Thread(target=lambda: (await_kernel_waiters(f.address, 1), f.wake(1)))
        waker.start()
        assert f.wait(0, timeout=-1) is True
        waker.join()
        # The word does not hold `expected`: True at once, any timeout.
        assert f.wait(1, timeout=WATCHDOG) is True
        assert f.wait(1) is True
        assert f.wait(1, timeout=float("inf")) is True
        assert f.wait(1, timeout=1e300) is True


def test_blocking_wait_releases_the_gil(shared_mem: mmap.mmap) -> None:
    # A thread blocks in wait(); this thread must keep running to wake it.
    with Futex(shared_mem) as f, Futex(shared_mem) as g:
        result = []
        t = threading.Thread(target=lambda: result.append(f.wait(0, timeout=WATCHDOG)))
        t.start()
        await_kernel_waiters(f.address, 1)
        g.store(1)
        assert g.wake(1) == 1
        t.join(WATCHDOG)
        assert result == [True]
        assert kernel_waiters(f.address) == 0


def test_private_word_between_threads() -> None:
    ba = bytearray(4)
    with Futex(ba, private=True) as f:
        t = threading.Thread(target=lambda: f.wait(0, timeout=WATCHDOG))
        t.start()
        await_kernel_waiters(f.address, 1, private=True)
        assert kernel_waiters(f.address, private=False) == 0  # keys never match
        f.store(1)
        assert f.wake(WAKE_ALL) == 1
        t.join(WATCHDOG)
        assert not t.is_alive()


def test_shared_word_helper() -> None:
    with SharedWord(count=3) as sw:
        assert sw.count == 3 and sw.value == 0
        a, b = sw.futex(0), sw.futex(2)
        b.store(5)
        assert sw.load(2) == 5
        sw.store(7, 1)
        assert sw.load(1) == 7
        with pytest.raises(IndexError):
            sw.futex(3)
        # Another attachment by name sees the same words.
        other = SharedWord(sw.name, create=False, count=3)
        assert other.load(1) == 7
        c = other.futex(1)
        assert c.value == 7
        other.close()
        assert c.closed
        # Pickling attaches by name (what a spawned process gets).
        import pickle

        copy = pickle.loads(pickle.dumps(sw))
        assert copy.name == sw.name and copy.load(2) == 5
        copy.close()
        assert a.wake(1) == 0
        assert "values=[0, 7, 5]" in repr(sw)
    assert a.closed and b.closed
    with pytest.raises(ValueError, match="closed"):
        sw.load(0)
    with pytest.raises(FileNotFoundError):
        SharedWord(sw.name, create=False)  # unlinked by the creator's with


def _python_with(env_changes: dict, code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    for k, v in env_changes.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=WATCHDOG
    )


def test_loader_error_says_what_to_set(tmp_path: Path) -> None:
    r = _python_with({"ASYNCFUTEX_LIB": str(tmp_path / "missing.so")}, "import asyncfutex; asyncfutex.version()")
    assert r.returncode != 0
    assert "LibraryNotFoundError" in r.stderr and "ASYNCFUTEX_LIB" in r.stderr, r.stderr
    # Not this library at all.
    r = _python_with({"ASYNCFUTEX_LIB": "libc.so.6"}, "import asyncfutex; asyncfutex.version()")
    assert r.returncode != 0 and "not libasyncfutex" in r.stderr, r.stderr
    # A copy of the package without its bundled library, nothing set: the
    # message says how to get one.
    bare = tmp_path / "bare"
    shutil.copytree(Path(asyncfutex.__file__).parent, bare / "asyncfutex", ignore=shutil.ignore_patterns("__pycache__"))
    (bare / "asyncfutex" / "libasyncfutex.so").unlink(missing_ok=True)
    r = _python_with(
        {"ASYNCFUTEX_LIB": None, "LD_LIBRARY_PATH": None, "PYTHONPATH": str(bare)},
        "import asyncfutex\n"
        "try:\n    asyncfutex.version()\n"
        "except asyncfutex.LibraryNotFoundError as e:\n    print('ERR', e)\n"
        "else:\n    print('LOADED', asyncfutex.library_path())\n",
    )
    assert r.returncode == 0, r.stderr
    if r.stdout.startswith("ERR"):
        assert "ASYNCFUTEX_LIB" in r.stdout and "pip install ./bindings/python" in r.stdout, r.stdout
    else:  # installed system-wide: fine too
        assert r.stdout.startswith("LOADED")


def test_installed_package_loads_its_bundled_library() -> None:
    """pip install bundled libasyncfutex.so in the package (setup.py's build
    hook) and, without ASYNCFUTEX_LIB, that copy is the one loaded; the
    wheel is tagged for this platform, not py3-none-any."""
    pkg = Path(asyncfutex.__file__).parent
    assert (pkg / "libasyncfutex.so").is_file(), f"no bundled library in {pkg}"
    r = _python_with({"ASYNCFUTEX_LIB": None}, "import asyncfutex; print(asyncfutex.library_path())")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(pkg / "libasyncfutex.so")
    if not os.environ.get("ASYNCFUTEX_LIB"):
        assert asyncfutex.library_path() == str(pkg / "libasyncfutex.so")
    from importlib.metadata import distribution

    wheel = distribution("asyncfutex").read_text("WHEEL") or ""
    assert "Root-Is-Purelib: false" in wheel, wheel
    tags = [line.split(":", 1)[1].strip() for line in wheel.splitlines() if line.startswith("Tag:")]
    assert tags and all(t.startswith("py3-none-linux_") for t in tags), wheel


def test_loader_override_wins_over_the_bundled_copy(tmp_path: Path) -> None:
    lib = tmp_path / "libasyncfutex.so"
    shutil.copy(Path(asyncfutex.__file__).parent / "libasyncfutex.so", lib)
    r = _python_with({"ASYNCFUTEX_LIB": str(lib)}, "import asyncfutex; print(asyncfutex.library_path())")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(lib)


def test_docstring_examples() -> None:
    import doctest

    result = doctest.testmod(asyncfutex)
    assert result.attempted > 0 and result.failed == 0
