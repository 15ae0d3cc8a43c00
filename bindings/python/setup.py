"""Build hook of the ``asyncfutex`` wheel: compiles ``libasyncfutex.so`` with
cargo and bundles it inside the package, so ``pip install ./bindings/python``
gives a working package with no environment variable.

The metadata lives in ``pyproject.toml``; this file only adds:

- ``build_py``: after copying the Python sources, runs ``cargo build
  --release --lib --manifest-path <repo>/Cargo.toml`` (cargo from ``PATH`` or
  ``~/.cargo/bin``; the library lands in the repository's ``target/release``,
  or under ``CARGO_TARGET_DIR``) and copies the built ``libasyncfutex.so``
  (stripped of debug info when ``strip`` is available) next to the package's
  ``__init__.py``. pip (>= 21.3) builds a local directory in place, so the
  repository root is two levels up from this file.
- ``bdist_wheel``: the wheel carries a native library, so it is tagged for
  this platform (``py3-none-linux_<arch>``), not ``py3-none-any``.

Environment (both optional):

- ``ASYNCFUTEX_PREBUILT_LIB=/path/to/libasyncfutex.so`` bundles that library
  instead of running cargo: for building outside the repository (e.g. from
  an sdist, which carries no Rust sources) or with a library built
  elsewhere.
- ``ASYNCFUTEX_CARGO_PROFILE`` (default ``release``): the cargo profile to
  build (``dev`` reuses a debug build; the test scripts use it).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

try:  # setuptools >= 70.1
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # pragma: no cover - older setuptools with the wheel package
    from wheel.bdist_wheel import bdist_wheel  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent
LIB = "libasyncfutex.so"
PREBUILT_VAR = "ASYNCFUTEX_PREBUILT_LIB"
PROFILE_VAR = "ASYNCFUTEX_CARGO_PROFILE"


class BuildError(SystemExit):
    """A build failure with a message for the user (pip shows it)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"asyncfutex build: error: {message}")


def _log(message: str) -> None:
    print(f"asyncfutex build: {message}", file=sys.stderr, flush=True)


def _repo_root() -> Optional[Path]:
    """The asyncfutex repository this project sits in (``bindings/python``
    of it), or None (an sdist or a copy of the sources elsewhere)."""
    root = HERE.parent.parent
    manifest = root / "Cargo.toml"
    if not (manifest.is_file() and (root / "include" / "asyncfutex.h").is_file()):
        return None
    if 'name = "asyncfutex"' not in manifest.read_text(encoding="utf-8", errors="replace"):
        return None
    return root


def _cargo() -> str:
    found = shutil.which("cargo")
    if found:
        return found
    home = Path.home() / ".cargo" / "bin" / "cargo"
    if home.is_file() and os.access(home, os.X_OK):
        return str(home)
    raise BuildError(
        "cargo not found (neither on PATH nor in ~/.cargo/bin). The wheel bundles "
        f"{LIB}, built from this repository's Rust sources: install Rust (https://rustup.rs, "
        "or ./scripts/setup-debian.sh in the repository) and retry, or set "
        f"{PREBUILT_VAR}=/path/to/{LIB} to bundle a library built elsewhere."
    )


def _check_library(path: Path) -> None:
    """Fails unless ``path`` loads and exports the C API this package uses."""
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        raise BuildError(f"{path} cannot be loaded: {e}") from None
    for symbol in ("afx_new", "afx_mutex_open", "afx_sem_open", "afx_event_open", "afx_chan_open"):
        if not hasattr(lib, symbol):
            raise BuildError(f"{path} is not a current {LIB}: it has no {symbol}")


def _cargo_build(root: Path) -> Path:
    """Runs cargo and returns the path of the built ``libasyncfutex.so``."""
    profile = os.environ.get(PROFILE_VAR, "release") or "release"
    cmd: List[str] = [_cargo(), "build"]
    cmd += ["--release"] if profile == "release" else ["--profile", profile]
    cmd += [
        "--lib",
        "--manifest-path",
        str(root / "Cargo.toml"),
        "--message-format=json-render-diagnostics",
    ]
    _log(" ".join(cmd))
    try:
        # Diagnostics and progress go to stderr (pip shows them with -v or on
        # failure); stdout carries the JSON messages that name the artifacts.
        done = subprocess.run(cmd, cwd=root, stdout=subprocess.PIPE, check=False)
    except OSError as e:
        raise BuildError(f"cannot run {cmd[0]}: {e}") from None
    if done.returncode != 0:
        raise BuildError(f"`{' '.join(cmd)}` failed with status {done.returncode} (its output is above)")
    found: List[Path] = []
    for line in done.stdout.decode(errors="replace").splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") != "compiler-artifact":
            continue
        for name in msg.get("filenames") or []:
            if Path(name).name == LIB:
                found.append(Path(name))
    if not found:
        raise BuildError(f"`{' '.join(cmd)}` succeeded but reported no {LIB} artifact")
    return found[-1]


def _library_to_bundle() -> Path:
    prebuilt = os.environ.get(PREBUILT_VAR)
    if prebuilt:
        path = Path(prebuilt).expanduser().resolve()
        if not path.is_file():
            raise BuildError(f"{PREBUILT_VAR}={prebuilt!r}: no such file")
        _log(f"bundling {path} ({PREBUILT_VAR})")
        return path
    root = _repo_root()
    if root is None:
        raise BuildError(
            f"these sources ({HERE}) are not inside the asyncfutex repository, so there is "
            f"nothing to build {LIB} from (an sdist carries no Rust sources). Install from a "
            f"checkout (pip install <repo>/bindings/python), or set {PREBUILT_VAR}=/path/to/{LIB} "
            "(built with `cargo build --release --lib` in the repository)."
        )
    return _cargo_build(root)


def _bundle(dest_dir: Path) -> None:
    """Puts the library (stripped of debug info if possible) in ``dest_dir``."""
    source = _library_to_bundle()
    _check_library(source)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / LIB
    tmp = dest_dir / f".{LIB}.tmp"
    shutil.copyfile(source, tmp)
    strip = shutil.which("strip")
    if strip:
        done = subprocess.run([strip, "--strip-debug", str(tmp)], check=False)
        if done.returncode != 0:
            _log(f"strip --strip-debug failed ({done.returncode}): bundling the library unstripped")
            shutil.copyfile(source, tmp)
    else:
        _log("no `strip` on PATH: bundling the library with its debug info")
    os.chmod(tmp, 0o755)
    os.replace(tmp, dest)
    _log(f"bundled {source} as {dest} ({dest.stat().st_size} bytes)")


class BuildPyWithLibrary(build_py):
    """``build_py`` that also builds and bundles ``libasyncfutex.so``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            # pip install -e: the package is imported from src/.
            _bundle(HERE / "src" / "asyncfutex")
        else:
            _bundle(Path(self.build_lib) / "asyncfutex")


class PlatformWheel(bdist_wheel):
    """Tags the wheel ``py3-none-<platform>``: pure Python code (any
    Python 3), but a native library for this platform."""

    def finalize_options(self) -> None:
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self):  # type: ignore[no-untyped-def]
        _, _, platform = super().get_tag()
        return "py3", "none", platform


class BinaryDistribution(Distribution):
    """Installs into platlib: the package carries a native library."""

    def has_ext_modules(self) -> bool:
        return True


if not sys.platform.startswith("linux"):
    raise BuildError(f"asyncfutex is Linux-only (futex, eventfd, io_uring); this is {sys.platform}")

setup(
    distclass=BinaryDistribution,
    cmdclass={"build_py": BuildPyWithLibrary, "bdist_wheel": PlatformWheel},
)
