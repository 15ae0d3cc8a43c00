#!/usr/bin/env bash
# AddressSanitizer + LeakSanitizer over the Rust tests, on the stable
# toolchain, once per wait backend.
#
#   scripts/sanitize.sh [test-target ...]     (default: see TESTS below)
#
# Stable rustc ships the ASan runtime; RUSTC_BOOTSTRAP=1 unlocks
# -Zsanitizer=address. std stays uninstrumented (no -Zbuild-std on
# stable), so out-of-bounds accesses inside std go unseen, but every heap
# block is still tracked by the runtime's malloc: use-after-free and
# overflows in asyncfutex's own code, and leaks (LeakSanitizer, at exit of
# each test binary), are found. The C programs already run under
# ASan/UBSan in tests/c_api.rs; the tests here are the Rust-only ones.
#
# Build output goes to target/asan (its own CARGO_TARGET_DIR).
set -uo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

TESTS=("$@")
[ ${#TESTS[@]} -gt 0 ] || TESTS=(hostile_input leak_cycles async_semantics sync_primitives)
triple=x86_64-unknown-linux-gnu
export CARGO_TARGET_DIR="$PWD/target/asan"
export RUSTC_BOOTSTRAP=1
export RUSTFLAGS="-Zsanitizer=address -Cdebug-assertions"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1 detect_stack_use_after_return=0 abort_on_error=0}"
# RSS is meaningless under ASan (quarantine); LeakSanitizer checks the heap.
export AFX_LEAK_RSS_BOUND=off
args=()
for t in "${TESTS[@]}"; do args+=(--test "$t"); done

echo "==== asan: building ${TESTS[*]} (stable, RUSTC_BOOTSTRAP=1 -Zsanitizer=address) ===="
if ! cargo test --target "$triple" "${args[@]}" --no-run; then
    echo "FAILED: asan build" >&2
    exit 1
fi

failures=()
for backend in io_uring thread; do
    for t in "${TESTS[@]}"; do
        log="$CARGO_TARGET_DIR/asan-$t-$backend.log"
        AFX_BACKEND=$backend cargo test -q --target "$triple" --test "$t" >"$log" 2>&1
        rc=$?
        reports=$(grep -cE '^==[0-9]+==ERROR: (Address|Leak)Sanitizer' "$log")
        result=$(grep -E '^test result' "$log" | tail -1)
        echo "asan $t ($backend): $reports sanitizer reports, exit $rc; ${result:-no test result}"
        if [ "$reports" -gt 0 ] || [ "$rc" -ne 0 ]; then
            grep -E '^==[0-9]+==ERROR|^SUMMARY|^    #[0-9] .*asyncfutex' "$log" | head -30
            echo "  (full log: $log)"
            failures+=("$t ($backend)")
        fi
    done
done
if [ ${#failures[@]} -gt 0 ]; then
    printf 'FAILED: asan %s\n' "${failures[@]}"
    exit 1
fi
echo "asan: all clean"
