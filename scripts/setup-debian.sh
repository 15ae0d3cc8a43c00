#!/usr/bin/env bash
# Installs what asyncfutex needs on a fresh Debian/Ubuntu machine: a C
# toolchain (for the C tests and examples), valgrind, and Rust if missing.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    build-essential pkg-config valgrind ca-certificates curl \
    libuv1-dev libasio-dev python3 python3-venv python3-pip cmake groff-base >/dev/null

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: Rust not found; installing it with rustup (https://rustup.rs)" >&2
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile default
    echo "setup: run 'source \$HOME/.cargo/env' (or open a new shell) to put cargo on PATH" >&2
fi
echo "setup: ok ($(uname -sr); $(cargo --version 2>/dev/null || echo 'cargo in ~/.cargo/bin'))"
