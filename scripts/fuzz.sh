#!/usr/bin/env bash
# Fuzzes the C API (fuzz/fuzz_targets/c_api.rs) with libFuzzer for a
# bounded time, on the stable toolchain, once per wait backend.
#
#   scripts/fuzz.sh [seconds] [io_uring|thread|both]     (default: 60 both)
#
# The time is split between the backends. Builds fuzz/ (its own workspace)
# with plain `cargo build` and the sanitizer-coverage flags cargo-fuzz
# would pass (no cargo-fuzz or nightly needed), into CARGO_TARGET_DIR
# fuzz/target. AFX_FUZZ_ASAN=1 adds AddressSanitizer (+ LeakSanitizer)
# through RUSTC_BOOTSTRAP=1 -Zsanitizer=address: the stable rust-std ships
# the ASan runtime; std itself is not instrumented (no -Zbuild-std), so it
# finds bugs in asyncfutex's code but not inside std. About 3x slower.
#
# Inputs: the committed seeds in fuzz/corpus/c_api (read only) and the
# corpus grown by earlier runs in fuzz/target/corpus/c_api. A crash, an
# undocumented return value, an fd leak or a hang (-timeout) writes the
# input to fuzz/artifacts/c_api/ and fails the script; replay it with
#   fuzz/target/x86_64-unknown-linux-gnu/release/c_api fuzz/artifacts/c_api/crash-...
# A fault in a library thread (they block every signal) kills the process
# before libFuzzer can write the input: the target records each input in
# $CARGO_TARGET_DIR/last-input-<backend> before running it, and the script
# copies that to fuzz/artifacts/c_api/signal-<n>-<sha1> (the input running
# when the process died; a timing-dependent fault may need -runs=1000 to
# show again on replay).
# Prints executions, exec/s and coverage from libFuzzer's final stats.
set -uo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

seconds=${1:-60}
which=${2:-both}
case "$which" in
    both) backends=(io_uring thread) ;;
    io_uring | thread) backends=("$which") ;;
    *) echo "usage: $0 [seconds] [io_uring|thread|both]" >&2; exit 2 ;;
esac

triple=x86_64-unknown-linux-gnu
export CARGO_TARGET_DIR="$PWD/fuzz/target"
flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters"
flags+=" -Cllvm-args=-sanitizer-coverage-pc-table"
flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares"
flags+=" --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
if [ "${AFX_FUZZ_ASAN:-0}" = 1 ]; then
    export RUSTC_BOOTSTRAP=1
    flags="-Zsanitizer=address $flags"
    export CARGO_TARGET_DIR="$PWD/fuzz/target/asan"
fi
export RUSTFLAGS="$flags"

echo "==== fuzz: building fuzz/ (c_api target${AFX_FUZZ_ASAN:+, ASan=$AFX_FUZZ_ASAN}) ===="
# --target keeps the instrumentation off build scripts and proc macros.
if ! (cd fuzz && cargo build --release --target "$triple" --bin c_api); then
    echo "FAILED: building the fuzz target" >&2
    exit 1
fi
bin="$CARGO_TARGET_DIR/$triple/release/c_api"

corpus=fuzz/target/corpus/c_api
artifacts=fuzz/artifacts/c_api
mkdir -p "$corpus" "$artifacts"
per=$(( seconds / ${#backends[@]} ))
[ "$per" -ge 1 ] || per=1

status=0
for backend in "${backends[@]}"; do
    log="fuzz/target/fuzz-$backend.log"
    # A backend this kernel cannot run is a loud skip, not a pass.
    empty=$(mktemp)
    if ! probe=$(AFX_BACKEND=$backend "$bin" "$empty" 2>&1); then
        rm -f "$empty"
        if grep -q 'afx_backend() = -' <<<"$probe"; then
            echo "SKIP fuzz, backend $backend: $(grep -o 'afx_backend() = -[0-9]*' <<<"$probe" | head -1)"
            continue
        fi
        echo "$probe" | tail -20
        echo "FAILED: the fuzz target does not start (backend $backend)" >&2
        status=1
        continue
    fi
    rm -f "$empty"
    echo "==== fuzz: $per s, AFX_BACKEND=$backend ===="
    last="$CARGO_TARGET_DIR/last-input-$backend"
    rm -f "$last"
    AFX_FUZZ_LAST_INPUT="$last" AFX_BACKEND=$backend "$bin" "$corpus" fuzz/corpus/c_api \
        -max_total_time="$per" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
        -print_final_stats=1 -print_funcs=0 -artifact_prefix="$artifacts/" \
        >"$log" 2>&1
    rc=$?
    if [ "$rc" -gt 128 ] && [ -e "$last" ]; then
        # Killed by a signal libFuzzer did not catch: keep the input.
        saved="$artifacts/signal-$((rc - 128))-$(sha1sum <"$last" | cut -c1-40)"
        cp "$last" "$saved"
        echo "killed by signal $((rc - 128)) (no libFuzzer report); input running: $saved"
    fi
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1)
    [ -n "$done_line" ] || done_line=$(grep -E '^#[0-9]+' "$log" | tail -1)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    # No final stats (killed by a signal): the last status line's count.
    [ -n "$execs" ] || execs=$(grep -oE '^#[0-9]+' <<<"$done_line" | tr -d '#')
    [ -n "$rate" ] || rate=$(grep -oE 'exec/s: [0-9]+' <<<"$done_line" | grep -oE '[0-9]+')
    cov=$(grep -oE 'cov: [0-9]+' <<<"$done_line" | grep -oE '[0-9]+')
    ft=$(grep -oE 'ft: [0-9]+' <<<"$done_line" | grep -oE '[0-9]+')
    units=$(grep -oE 'corp: [0-9]+' <<<"$done_line" | grep -oE '[0-9]+')
    if [ "$rc" -ne 0 ]; then
        grep -E 'panicked|undocumented|ERROR|SUMMARY|Test unit written|timeout' "$log" | head -20
        echo "FAILED: fuzz, backend $backend (exit $rc, log $log)" >&2
        status=1
    fi
    echo "fuzz $backend: ${execs:-?} execs in $per s (${rate:-?} exec/s), coverage ${cov:-?} edges, ${ft:-?} features, corpus ${units:-?} inputs, exit $rc"
done
exit $status
