#!/usr/bin/env bash
# End-to-end packaging test: what a new user of each ecosystem does, from a
# fresh clone of this repository (its committed HEAD), into a temporary
# prefix, project and venv, following the README:
#
#   Rust    a new cargo project depending on the clone by path with
#           `cargo add` (the README's line), running the README's Rust
#           example; its target/ must hold no C library (cdylib/staticlib).
#   C       `PREFIX=... packaging/install.sh`, then the README's C example
#           built with pkg-config (shared, and fully static with
#           `-static $(pkg-config --static ...)`) and with CMake
#           (find_package), and run; the man pages are installed.
#   C++     a program using the installed <asyncfutex.hpp> through CMake.
#   Python  `pip install ./bindings/python` into a fresh venv (no
#           ASYNCFUTEX_LIB), then the README's Python example and an await
#           under asyncio and under uvloop, loading the wheel's own library.
#
# Needs git, cargo, cc, c++, cmake, pkg-config, python3 with venv, and
# PyPI access for uvloop (scripts/setup-debian.sh installs the rest).
# Exits non-zero on the first failure. Keeps its directory on failure
# (printed) and removes it on success. Usage: scripts/test-packaging.sh
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
# The user's environment, not ours: no override of the library, no shared
# target directory.
unset ASYNCFUTEX_LIB CARGO_TARGET_DIR AFX_PY_VENV

work=$(mktemp -d "${TMPDIR:-/tmp}/afx-packaging.XXXXXX")
ok=0
cleanup() {
    if [ "$ok" -eq 1 ]; then rm -rf -- "$work"; else echo "test-packaging: FAILED; files kept in $work" >&2; fi
}
trap cleanup EXIT

step() { echo; echo "---- packaging: $* ----"; }
fail() { echo "test-packaging: FAIL: $*" >&2; exit 1; }

# Prints the body of the first fenced block of language $2 after the
# heading line $1 in README.md (the examples are tested as written).
readme_block() {
    awk -v heading="$1" -v lang="$2" '
        $0 == heading { in_section = 1; next }
        in_section && /^## / { exit }
        in_section && !in_block && $0 == "```" lang { in_block = 1; next }
        in_block && /^```/ { exit }
        in_block { print }
    ' "$src/README.md"
}

step "fresh clone of $(git -C "$repo" rev-parse --short HEAD)"
src=$work/asyncfutex
git clone -q --no-hardlinks "$repo" "$src"
prefix=$work/prefix

# ---- Rust ------------------------------------------------------------------
step "Rust: cargo project with a path dependency"
rust_block=$(readme_block "## Rust" rust)
[ -n "$rust_block" ] || fail "no Rust example in README.md"
# The README's `cargo add` lines, with the checkout's path.
grep -q '^cargo add asyncfutex --path ../asyncfutex --features tokio' "$src/README.md" \
    || fail "README.md lost its 'cargo add asyncfutex' line"
grep -q '^cargo add tokio --features rt,macros' "$src/README.md" \
    || fail "README.md lost its 'cargo add tokio' line"
(
    cd "$work"
    cargo new -q --vcs none app
    cd app
    cargo add -q asyncfutex --path ../asyncfutex --features tokio
    cargo add -q tokio --features rt,macros
    printf '%s\n' "$rust_block" > src/main.rs
    out=$(timeout 300 cargo run -q)
    echo "$out"
    case "$out" in *"got 42 from process"*) ;; *) fail "the README's Rust example printed: $out" ;; esac
    libs=$(find target -name 'libasyncfutex*' \( -name '*.so*' -o -name '*.a' \) -print)
    [ -z "$libs" ] || fail "a Rust user's target/ holds the C library: $libs"
    deps=$(cargo tree -q -e normal,build -p asyncfutex --prefix none | sort -u | tr '\n' ' ')
    case "$deps" in *cbindgen*) fail "cbindgen is built for a Rust user: $deps" ;; esac
    echo "asyncfutex builds with: $deps"
)

# ---- C and C++ -------------------------------------------------------------
step "C: PREFIX=$prefix packaging/install.sh"
PREFIX=$prefix "$src/packaging/install.sh" >"$work/install.log" 2>&1 \
    || { cat "$work/install.log"; fail "packaging/install.sh"; }
tail -n 3 "$work/install.log"
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
capp=$work/capp
mkdir -p "$capp"
# The README's C example (a function), called by a two-process program.
readme_block "## C" c > "$capp/wait_for_change.c"
[ -s "$capp/wait_for_change.c" ] || fail "no C example in README.md"
cat > "$capp/main.c" <<'EOF'
#include <asyncfutex.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

int wait_for_change(uint32_t *word);

int main(void) {
    uint32_t *word = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (word == MAP_FAILED) { perror("mmap"); return 1; }
    pid_t child = fork();
    if (child < 0) { perror("fork"); return 1; }
    if (child == 0) {
        /* The other process: store, then wake. wait_for_change waits for the
         * word to differ from what it first saw, so keep changing it until
         * the parent says (word[1]) it saw a change. */
        afx_t *g = afx_new(word, 0), *done = afx_new(word + 1, 0);
        if (!g || !done) _exit(2);
        for (uint32_t v = 1; atomic_load((_Atomic uint32_t *)(word + 1)) == 0; v++) {
            atomic_store((_Atomic uint32_t *)word, v);
            if (afx_wake(g, 1) < 0) _exit(3);
            int rc = afx_wait(done, 0, 10 * 1000 * 1000); /* paces the loop */
            if (rc < 0 && rc != -ETIMEDOUT && rc != -EAGAIN && rc != -EINTR) _exit(4);
        }
        afx_free(g);
        afx_free(done);
        _exit(0);
    }
    if (wait_for_change(word) != 0) { fprintf(stderr, "wait_for_change failed\n"); return 1; }
    afx_t *done = afx_new(word + 1, 0);
    if (!done) { perror("afx_new"); return 1; }
    atomic_store((_Atomic uint32_t *)(word + 1), 1);
    afx_wake(done, 1);
    afx_free(done);
    int status;
    while (waitpid(child, &status, 0) < 0)
        if (errno != EINTR) { perror("waitpid"); return 1; }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) { fprintf(stderr, "child failed\n"); return 1; }
    printf("C: the word changed (asyncfutex %s)\n", afx_version());
    return 0;
}
EOF
cc="${CC:-cc}"
# shellcheck disable=SC2046 # pkg-config output is a list of words
"$cc" -Wall -Werror -o "$capp/shared" "$capp/main.c" "$capp/wait_for_change.c" \
    $(pkg-config --cflags --libs asyncfutex)
LD_LIBRARY_PATH=$prefix/lib timeout 60 "$capp/shared" || fail "the pkg-config (shared) build"
LD_LIBRARY_PATH=$prefix/lib ldd "$capp/shared" | grep -q "$prefix/lib/libasyncfutex.so.0" \
    || fail "the shared build did not load the installed library"
step "C: fully static link with pkg-config --static"
# shellcheck disable=SC2046
"$cc" -o "$capp/static" "$capp/main.c" "$capp/wait_for_change.c" -static \
    $(pkg-config --static --cflags --libs asyncfutex) 2>"$capp/static.log" \
    || { cat "$capp/static.log"; fail "cc -static \$(pkg-config --static ...)"; }
if readelf -d "$capp/static" | grep -q NEEDED; then
    fail "the -static build needs shared libraries: $(readelf -d "$capp/static" | grep NEEDED)"
fi
timeout 60 "$capp/static" || fail "the static build"

step "man pages"
missing=()
for fn in $(grep -o 'afx_[a-z0-9_]*(' "$prefix/include/asyncfutex.h" | tr -d '(' | sort -u); do
    [ -e "$prefix/share/man/man3/$fn.3" ] || missing+=("$fn")
done
[ ${#missing[@]} -eq 0 ] || fail "no installed man page for: ${missing[*]}"
echo "every afx_* function of the installed header has a page in $prefix/share/man/man3"

step "C and C++ with CMake (find_package, the installed C++ header)"
cmakeapp=$work/cmakeapp
mkdir -p "$cmakeapp"
cp "$capp/main.c" "$capp/wait_for_change.c" "$cmakeapp/"
cat > "$cmakeapp/app.cpp" <<'EOF'
#include <asyncfutex.hpp>
#include <asyncfutex_sync.hpp> // installed beside it: the cross-process primitives
#include <atomic>
#include <cstdio>
#include <thread>

int main() {
    alignas(4) static std::uint32_t word = 0;
    asyncfutex::Futex futex(&word, /*private_word=*/true);
    std::thread waker([&] {
        __atomic_store_n(&word, 1, __ATOMIC_RELEASE);
        futex.wake(1);
    });
    while (__atomic_load_n(&word, __ATOMIC_ACQUIRE) == 0)
        futex.wait(0);
    waker.join();
    std::printf("C++: word is %u\n", __atomic_load_n(&word, __ATOMIC_ACQUIRE));
    return 0;
}
EOF
cat > "$cmakeapp/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.16)
project(afx_user C CXX)
find_package(asyncfutex 0.1 REQUIRED)
add_executable(app_c main.c wait_for_change.c)
target_link_libraries(app_c PRIVATE asyncfutex::asyncfutex)
add_executable(app_cpp app.cpp)
target_link_libraries(app_cpp PRIVATE asyncfutex::asyncfutex_cpp)
EOF
cmake -S "$cmakeapp" -B "$cmakeapp/build" -DCMAKE_PREFIX_PATH="$prefix" >"$cmakeapp/cmake.log" 2>&1 \
    || { cat "$cmakeapp/cmake.log"; fail "cmake configure"; }
cmake --build "$cmakeapp/build" >>"$cmakeapp/cmake.log" 2>&1 \
    || { cat "$cmakeapp/cmake.log"; fail "cmake build"; }
timeout 60 "$cmakeapp/build/app_c" || fail "the CMake C build"
timeout 60 "$cmakeapp/build/app_cpp" || fail "the CMake C++ build"

# ---- Python ----------------------------------------------------------------
step "Python: pip install ./bindings/python into a fresh venv"
python3 -m venv "$work/venv"
py=$work/venv/bin/python
(cd "$src" && "$py" -m pip install -q ./bindings/python uvloop) >"$work/pip.log" 2>&1 \
    || { cat "$work/pip.log"; fail "pip install ./bindings/python"; }
python_block=$(readme_block "## C++ and Python" python)
[ -n "$python_block" ] || fail "no Python example in README.md"
(cd "$work" && printf '%s\n' "$python_block" > readme_example.py && timeout 120 "$py" readme_example.py) \
    || fail "the README's Python example"
cat > "$work/loops.py" <<'EOF'
import asyncio, mmap, sys
import asyncfutex

lib = asyncfutex.library_path()
assert lib.startswith(sys.prefix), f"loaded {lib}, not the wheel's own copy in {sys.prefix}"

async def roundtrip():
    mem = mmap.mmap(-1, 4096)
    with asyncfutex.Futex(mem) as futex:
        async def waker():
            futex.store(1)
            futex.wake(1)
        task = asyncio.ensure_future(waker())
        while (seen := futex.value) == 0:
            await futex.wait_async(seen)
        await task
        return futex.value

assert asyncio.run(roundtrip()) == 1
import uvloop
uvloop.install()
assert asyncio.run(roundtrip()) == 1
print(f"python: asyncio and uvloop ok, library {lib}")
EOF
(cd "$work" && timeout 120 "$py" loops.py) || fail "asyncio/uvloop with the wheel's library"

ok=1
echo
echo "test-packaging: all paths passed (Rust, C shared/static/CMake, C++, man pages, Python)"
