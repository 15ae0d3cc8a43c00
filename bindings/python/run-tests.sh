#!/usr/bin/env bash
# Runs the Python binding's tests: builds libasyncfutex.so (cargo build
# --lib), makes or reuses a venv, installs the pinned test tools and this
# package (pip install ./bindings/python), and runs pytest against the built
# library (ASYNCFUTEX_LIB). Every test runs on the default asyncio loop and
# on uvloop. Exits with pytest's status; "no tests collected" (5) counts as
# a failure. Works from any directory.
#
# Environment:
#   AFX_PY_VENV     the venv (default: <repo>/target/py-venv; reused)
#   PYTHON          the interpreter that creates it (default: python3)
#   AFX_PY_PROFILE  cargo profile of the library (default: dev -> target/debug)
#   ASYNCFUTEX_LIB  use this library instead of building one
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

# 1. The library.
if [ -z "${ASYNCFUTEX_LIB:-}" ]; then
    log "cargo build --lib --profile $profile"
    cargo build --quiet --lib --profile "$profile" --manifest-path "$repo/Cargo.toml"
    case "$profile" in dev | test) dir=debug ;; bench) dir=release ;; *) dir="$profile" ;; esac
    ASYNCFUTEX_LIB="$target_dir/$dir/libasyncfutex.so"
fi
[ -f "$ASYNCFUTEX_LIB" ] || { log "no library at $ASYNCFUTEX_LIB"; exit 1; }
export ASYNCFUTEX_LIB

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
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip 'setuptools>=61'
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    cp "$req" "$stamp"
fi
# 3. The package, from a copy of its sources (the build leaves nothing in
# the tree), reinstalled every run so it is never stale.
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
cp -r "$here/pyproject.toml" "$here/README.md" "$here/src" "$build/"
rm -rf "$build"/src/*.egg-info "$build"/src/asyncfutex/*.so
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-build-isolation \
    --no-deps --force-reinstall "$build" >&2
flock -u 9

# 4. The tests (cwd: the binding, so its pyproject configures pytest).
cd "$here"
log "pytest (ASYNCFUTEX_LIB=$ASYNCFUTEX_LIB, AFX_BACKEND=${AFX_BACKEND:-})"
set +e
"$venv/bin/python" -m pytest -p no:cacheprovider "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    log "pytest collected no tests: failing"
    exit 1
fi
exit "$status"
