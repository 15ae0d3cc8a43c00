#!/usr/bin/env bash
# Runs the whole test suite: every Rust, C and doc test once per wait
# backend (io_uring and thread), then the example program on each backend,
# then io_uring's ring-thread mode, the crate without its tokio feature,
# the thread backend's per-wait mode, the packaging paths from a fresh
# clone, the loom model check of the waiter state machine and a bounded fuzz run
# of the C API.
# Exits non-zero if anything fails.
set -uo pipefail
cd "$(dirname "$0")/.."
# A Rust toolchain new enough for the crate first on PATH (rustup's in
# ~/.cargo/bin when the one on PATH is missing or too old).
. scripts/rust-toolchain.sh
afx_use_rust || { echo "test-all: no Rust >= ${AFX_RUST_REQUIRED:-?} (${AFX_RUST_WHY:-}); run ./scripts/setup-debian.sh" >&2; exit 1; }

failures=()
skips=()

step() { echo; echo "==== $* ===="; }

# At the repository root, cargo builds the workspace's default members
# together: the crate (with its `capi` and `tokio` features, which capi/ and
# demo/ enable), the C library (capi/) and the example program (demo/).
step "build (library, C library, tests, examples)"
cargo build --all-targets || exit 1
cargo build --lib || exit 1

for backend in io_uring thread; do
    # A backend this kernel cannot run is a counted, loud skip, not a pass.
    if ! probe=$(AFX_BACKEND=$backend cargo run -q --example probe 2>&1); then
        echo "SKIP backend $backend: $probe"
        skips+=("backend $backend: $probe")
        continue
    fi
    step "tests, AFX_BACKEND=$backend ($probe)"
    if ! AFX_BACKEND=$backend cargo test; then
        failures+=("cargo test (AFX_BACKEND=$backend)")
    fi
    step "example, AFX_BACKEND=$backend"
    if ! AFX_BACKEND=$backend timeout 120 cargo run -q --bin async_futex_example; then
        failures+=("async_futex_example (AFX_BACKEND=$backend)")
    fi
done

# The io_uring backend's ring thread (AFX_URING_SUBMIT=thread): by default
# the thread that arms a wait submits it, so the ring thread only serves
# futures outside tokio; here it serves every wait.
if AFX_BACKEND=io_uring cargo run -q --example probe >/dev/null 2>&1; then
    step "ring-thread mode: AFX_BACKEND=io_uring AFX_URING_SUBMIT=thread"
    if ! AFX_BACKEND=io_uring AFX_URING_SUBMIT=thread cargo test --test async_semantics \
        --test cross_process --test c_api --test sync_primitives --test wait_any; then
        failures+=("cargo test, ring-thread mode (AFX_URING_SUBMIT=thread)")
    fi
fi

# The crate as a Rust user gets it by default: without the `tokio` feature
# (tasks' waits go through the ring thread, not the runtime's reactor) and
# without the C ABI. `-p asyncfutex` alone builds it so.
if AFX_BACKEND=io_uring cargo run -q --example probe >/dev/null 2>&1; then
    step "without the tokio feature: cargo test -p asyncfutex, AFX_BACKEND=io_uring"
    if ! AFX_BACKEND=io_uring cargo test -p asyncfutex --test async_semantics \
        --test caller_submit --test cross_process --test sync_primitives --test wait_any; then
        failures+=("cargo test -p asyncfutex (no tokio feature)")
    fi
fi

# The thread backend's per-wait mode (what kernels before 5.16, valgrind and
# seccomp profiles without futex_waitv get): the semantics tests and the
# soak again, with the mode forced; and the vector-wait tests (Rust and the
# bindings), which check that async vector waits are ENOSYS there.
if AFX_BACKEND=thread cargo run -q --example probe >/dev/null 2>&1; then
    step "per-wait mode: AFX_BACKEND=thread AFX_THREAD_WAITV=0"
    if ! AFX_BACKEND=thread AFX_THREAD_WAITV=0 cargo test --test async_semantics \
        --test cross_process --test reliability_soak --test wait_any --test bindings; then
        failures+=("cargo test, per-wait mode (AFX_THREAD_WAITV=0)")
    fi
    if ! AFX_BACKEND=thread AFX_THREAD_WAITV=0 cargo test --test c_api -- fork_inherited waitv; then
        failures+=("C fork and vector-wait tests, per-wait mode (AFX_THREAD_WAITV=0)")
    fi
fi

# Every packaging path from a fresh clone, as the README tells a new user:
# a Rust project by path, the C library installed with pkg-config (shared
# and static) and CMake, the C++ header, the man pages, the Python wheel
# under asyncio and uvloop (scripts/test-packaging.sh).
step "packaging: fresh clone into a temporary prefix, project and venv"
if ! scripts/test-packaging.sh; then
    failures+=("packaging (scripts/test-packaging.sh)")
fi

# The waiter state machine under loom: every interleaving of arm / finish /
# cancel / forward up to the preemption bound (src/waiter/loom_tests.rs).
step "model check: waiter state machine under loom"
if ! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release --lib loom; then
    failures+=("loom model check")
fi

# libFuzzer on the C API, 60 s split between the backends (stable toolchain).
step "fuzz: C API, 60 s"
if ! scripts/fuzz.sh 60; then
    failures+=("fuzz (scripts/fuzz.sh)")
fi

echo
echo "==== summary ===="
for s in "${skips[@]+"${skips[@]}"}"; do echo "SKIPPED: $s"; done
if [ ${#failures[@]} -gt 0 ]; then
    for f in "${failures[@]}"; do echo "FAILED: $f"; done
    exit 1
fi
if [ ${#skips[@]} -ge 2 ]; then
    echo "FAILED: no backend could run on this machine"
    exit 1
fi
echo "all test stages passed"
