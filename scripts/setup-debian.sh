#!/usr/bin/env bash
# Installs what asyncfutex needs on a fresh Debian/Ubuntu machine: a C
# toolchain (for the C tests and examples), valgrind, and a Rust toolchain
# new enough for this crate (Cargo.toml's rust-version) if there is none:
# a distro cargo/rustc that is too old (Debian 12 has 1.63) does not count.
#
#   scripts/setup-debian.sh               install, then say which cargo to use
#   scripts/setup-debian.sh --check-only  install nothing: say which Rust
#                                         toolchain would be used, or what
#                                         would be installed (tests use it)
#
# Rust comes from rustup (https://rustup.rs) into ~/.cargo/bin, which the
# calling shell does not have on PATH yet: run cargo as ./scripts/cargo
# (it finds that toolchain), or open a new shell.
set -euo pipefail

check_only=0
for arg in "$@"; do
    case "$arg" in
        --check-only) check_only=1 ;;
        -h | --help)
            sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "setup: unknown argument '$arg' (expected --check-only or --help)" >&2
            exit 2
            ;;
    esac
done

# shellcheck source=scripts/rust-toolchain.sh
. "$(dirname "$0")/rust-toolchain.sh"

if [ "$check_only" = 0 ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends \
        build-essential pkg-config valgrind ca-certificates curl \
        libuv1-dev libasio-dev python3 python3-venv python3-pip cmake groff-base git >/dev/null
fi

rc=0
afx_use_rust || rc=$?
if [ "$rc" = 2 ]; then exit 1; fi
if [ "$rc" = 1 ]; then
    echo "setup: no Rust >= $AFX_RUST_REQUIRED ($AFX_RUST_WHY)" >&2
    rustup=""
    if [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/rustup" ]; then
        rustup="${CARGO_HOME:-$HOME/.cargo}/bin/rustup"
    elif command -v rustup >/dev/null 2>&1; then
        rustup=$(command -v rustup)
    fi
    if [ -n "$rustup" ]; then
        # rustup is there but its default toolchain is missing or too old.
        if [ "$check_only" = 1 ]; then
            echo "setup: check-only: would run '$rustup default stable'"
            exit 0
        fi
        echo "setup: making the stable toolchain rustup's default: $rustup default stable" >&2
        "$rustup" default stable
    else
        if [ "$check_only" = 1 ]; then
            echo "setup: check-only: would install Rust with rustup into ${CARGO_HOME:-$HOME/.cargo}/bin"
            exit 0
        fi
        echo "setup: installing Rust with rustup (https://rustup.rs) into ${CARGO_HOME:-$HOME/.cargo}/bin" >&2
        # RUSTUP_INIT_SKIP_PATH_CHECK: a too-old distro rustc may be on
        # PATH; rustup's toolchain goes first on PATH (~/.cargo/env).
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
            RUSTUP_INIT_SKIP_PATH_CHECK=yes sh -s -- -y --profile default
    fi
    rc=0
    afx_use_rust || rc=$?
    if [ "$rc" != 0 ]; then
        echo "setup: still no Rust >= $AFX_RUST_REQUIRED after installing ($AFX_RUST_WHY)" >&2
        exit 1
    fi
fi

echo "setup: ok ($(uname -sr); $(cargo --version) from $AFX_RUST_FROM, rustc $(afx_tool_version rustc); crate needs >= $AFX_RUST_REQUIRED)"
if [ "$AFX_RUST_FROM" != "PATH" ]; then
    echo "setup: plain 'cargo' in this shell is not that one: use ./scripts/cargo," \
        "or run '. \"${CARGO_HOME:-\$HOME/.cargo}/env\"' (new shells do)"
fi
