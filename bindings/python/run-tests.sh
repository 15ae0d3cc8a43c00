#!/usr/bin/env bash
# Runs the Python binding's tests against the installed package, as a user
# gets it: makes or reuses a venv, installs the pinned test tools, then
# `pip install`s this directory, whose build hook (setup.py) builds
# libasyncfutex.so with cargo and bundles it in the wheel; the tests import
# that package and its bundled library. Every test runs on the default
# asyncio loop and on uvloop. Exits with pytest's status; "no tests
# collected" (5) counts as a failure. Works from any directory.
#
# Environment:
#   AFX_PY_VENV     the venv (default: <repo>/target/py-venv; reused)
#   PYTHON          the interpreter that creates it (default: python3)
#   AFX_PY_PROFILE  cargo profile the build hook builds (default: dev, which
#                   reuses target/debug; a user's pip install builds release)
#   ASYNCFUTEX_LIB  test against this library instead of the bundled copy
#                   (the package bundles it too, so no cargo build)
#   AFX_BACKEND     passed through: io_uring | thread | auto
# Extra arguments go to pytest.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

target_dir="${CARGO_TARGET_DIR:-$repo/target}"
case "$target_dir" in /*) ;; *) target_dir="$repo/$target_dir" ;; esac
venv="${AFX_PY_VENV:-$target_dir/py-venv}"
python="${PYTHON:-python3}"
profile="${AFX_PY_PROFILE:-dev}"

log() { echo "run-tests.sh: $*" >&2; }

# 1. The library: built by the package's build hook (step 3), unless
# ASYNCFUTEX_LIB names one, which the hook then bundles as it is.
if [ -n "${ASYNCFUTEX_LIB:-}" ]; then
    [ -f "$ASYNCFUTEX_LIB" ] || { log "ASYNCFUTEX_LIB=$ASYNCFUTEX_LIB: no such file"; exit 1; }
    export ASYNCFUTEX_LIB ASYNCFUTEX_PREBUILT_LIB="$ASYNCFUTEX_LIB"
else
    unset ASYNCFUTEX_LIB ASYNCFUTEX_PREBUILT_LIB
fi
export ASYNCFUTEX_CARGO_PROFILE="$profile"

# 2. The venv (created once; serialized so two runs can share it).
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
req="$here/requirements-test.txt"
stamp="$venv/.afx-requirements"
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$req" "$stamp"; then
    log "creating the venv $venv"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    cp "$req" "$stamp"
fi
# 3. The package, built in place as `pip install ./bindings/python` does
# (its build/ and *.egg-info are git-ignored) and reinstalled every run so it
# is never stale. No build isolation: the venv has the build requirement
# (setuptools, pinned in requirements-test.txt).
log "pip install $here (the build hook runs cargo build --lib --profile $profile)"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-build-isolation \
    --no-deps --force-reinstall "$here" >&2
flock -u 9

# 4. The tests (cwd: the binding, so its pyproject configures pytest).
cd "$here"
log "pytest (library: ${ASYNCFUTEX_LIB:-bundled}, AFX_BACKEND=${AFX_BACKEND:-})"
set +e
"$venv/bin/python" -m pytest -p no:cacheprovider "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    log "pytest collected no tests: failing"
    exit 1
fi
exit "$status"
