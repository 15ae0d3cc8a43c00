# Sourced by scripts/setup-debian.sh, scripts/cargo and scripts/test-all.sh:
# finds a Rust toolchain new enough for this crate (the `rust-version` of
# Cargo.toml) and puts it first on PATH.
#
# Candidates, in order: the `cargo` and `rustc` on PATH (a distro package,
# or rustup's already on PATH), then rustup's `${CARGO_HOME:-~/.cargo}/bin`
# (where rustup installs, which the shell that ran the installer does not
# have on PATH yet). A candidate counts only if both its `cargo` and its
# `rustc` report a version >= rust-version: Debian 12's apt `rustc` (1.63)
# does not.
#
#   afx_use_rust  -> 0: PATH now finds a suitable cargo/rustc first;
#                        AFX_RUST_FROM says which ("PATH" or the directory)
#                    1: none; AFX_RUST_WHY says why, per candidate
#                    2: cannot read rust-version from Cargo.toml
# Needs bash; uses sed and head.

AFX_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# The crate's minimum Rust version (`rust-version = "1.80"` in Cargo.toml).
afx_required_rust() {
    local toml="$AFX_ROOT/Cargo.toml" v
    v=$(sed -n 's/^[[:space:]]*rust-version[[:space:]]*=[[:space:]]*"\([0-9][0-9.]*\)".*/\1/p' \
        "$toml" 2>/dev/null | head -n 1)
    if [ -z "$v" ]; then
        echo "cannot read rust-version from $toml" >&2
        return 1
    fi
    echo "$v"
}

# afx_version_ge A B: dotted version A >= B (missing parts count as 0).
afx_version_ge() {
    local IFS=. i x y
    local -a a b
    read -r -a a <<<"$1"
    read -r -a b <<<"$2"
    for i in 0 1 2; do
        x=${a[i]:-0}
        y=${b[i]:-0}
        if ((10#$x > 10#$y)); then return 0; fi
        if ((10#$x < 10#$y)); then return 1; fi
    done
    return 0
}

# The version a tool reports: `rustc 1.63.0 (…)` -> 1.63.0; empty if none.
afx_tool_version() {
    "$1" --version 2>/dev/null |
        sed -n 's/^[a-z-]* \([0-9][0-9]*\.[0-9][0-9]*\(\.[0-9][0-9]*\)\{0,1\}\).*/\1/p' |
        head -n 1
}

# afx_rust_ok CARGO RUSTC REQUIRED: both present and new enough; else
# prints why on stdout and returns 1.
afx_rust_ok() {
    local cargo=$1 rustc=$2 req=$3 cv rv
    if [ -z "$cargo" ] || [ ! -x "$cargo" ]; then echo "no cargo"; return 1; fi
    if [ -z "$rustc" ] || [ ! -x "$rustc" ]; then echo "cargo but no rustc"; return 1; fi
    cv=$(afx_tool_version "$cargo")
    rv=$(afx_tool_version "$rustc")
    if [ -z "$cv" ]; then echo "$cargo --version fails"; return 1; fi
    if [ -z "$rv" ]; then echo "$rustc --version fails"; return 1; fi
    if ! afx_version_ge "$cv" "$req"; then echo "$cargo is $cv < $req"; return 1; fi
    if ! afx_version_ge "$rv" "$req"; then echo "$rustc is $rv < $req"; return 1; fi
    return 0
}

afx_use_rust() {
    local req why dir
    AFX_RUST_FROM=""
    AFX_RUST_WHY=""
    req=$(afx_required_rust) || return 2
    AFX_RUST_REQUIRED=$req
    if why=$(afx_rust_ok "$(command -v cargo || true)" "${RUSTC:-$(command -v rustc || true)}" "$req"); then
        AFX_RUST_FROM="PATH"
        return 0
    fi
    AFX_RUST_WHY="on PATH: $why"
    dir="${CARGO_HOME:-$HOME/.cargo}/bin"
    if why=$(afx_rust_ok "$dir/cargo" "$dir/rustc" "$req"); then
        export PATH="$dir:$PATH"
        AFX_RUST_FROM="$dir"
        return 0
    fi
    AFX_RUST_WHY="$AFX_RUST_WHY; in $dir: $why"
    return 1
}
