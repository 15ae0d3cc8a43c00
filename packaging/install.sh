#!/usr/bin/env bash
# Builds asyncfutex in release mode and installs the C library:
#
#   $LIBDIR/libasyncfutex.so.X.Y.Z        the shared library (SONAME libasyncfutex.so.X),
#                                         stripped of debug info and local symbols
#   $LIBDIR/libasyncfutex.so.X            -> libasyncfutex.so.X.Y.Z
#   $LIBDIR/libasyncfutex.so              -> libasyncfutex.so.X
#   $LIBDIR/.debug/libasyncfutex.so.X.Y.Z.debug   its debug info (objcopy
#                                         --only-keep-debug; the library's
#                                         .gnu_debuglink names it, and gdb
#                                         looks in .debug/ next to a library)
#   $LIBDIR/libasyncfutex.a               the static library (strip -g)
#   $INCLUDEDIR/asyncfutex.h              the C header
#   $INCLUDEDIR/asyncfutex.hpp            the C++17 header(s): every *.hpp
#                                         under bindings/cpp/include
#   $LIBDIR/pkgconfig/asyncfutex.pc       pkg-config (--static works, also -static)
#   $LIBDIR/cmake/asyncfutex/asyncfutexConfig{,Version}.cmake   CMake package:
#                                         asyncfutex::asyncfutex{,_static,_cpp,_cpp_static}
#   $MANDIR/man3/afx_*.3, $MANDIR/man7/asyncfutex.7   manual pages (man/)
#   $LIBDIR/asyncfutex/install-manifest.txt   what was installed, for --uninstall
#
# Usage:
#   packaging/install.sh                 build and install
#   packaging/install.sh --no-build      install target/release as it is
#   packaging/install.sh --no-strip      install the libraries as built (with
#                                        their debug info, no .debug file), e.g.
#                                        for a packager whose tools strip
#   packaging/install.sh --uninstall     remove exactly what the manifest lists
#
# Installing over a previous install (same PREFIX/LIBDIR/DESTDIR) first
# uninstalls it.
#
# Environment: PREFIX (default /usr/local), LIBDIR (default $PREFIX/lib),
# INCLUDEDIR (default $PREFIX/include), MANDIR (default $PREFIX/share/man),
# DESTDIR (staging root, default empty), CARGO (default cargo), STRIP
# (default strip), OBJCOPY (default objcopy). --uninstall needs the same
# PREFIX, LIBDIR and DESTDIR as the install. Without DESTDIR, as root,
# ldconfig is run afterwards.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "install.sh: $*" >&2; exit 1; }

mode=install
build=1
strip_libs=1
for arg in "$@"; do
    case "$arg" in
        --uninstall) mode=uninstall ;;
        --no-build) build=0 ;;
        --no-strip) strip_libs=0 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument '$arg' (see --help)" ;;
    esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/usr/local}
LIBDIR=${LIBDIR:-$PREFIX/lib}
INCLUDEDIR=${INCLUDEDIR:-$PREFIX/include}
MANDIR=${MANDIR:-$PREFIX/share/man}
DESTDIR=${DESTDIR:-}
CARGO=${CARGO:-cargo}
STRIP=${STRIP:-strip}
OBJCOPY=${OBJCOPY:-objcopy}
for var in PREFIX LIBDIR INCLUDEDIR MANDIR; do
    case "${!var}" in
        /*) ;;
        *) die "$var must be an absolute path (got '${!var}')" ;;
    esac
done
# Drop trailing slashes (but keep "/").
strip_slashes() { local p=$1; while [ "${#p}" -gt 1 ] && [ "${p%/}" != "$p" ]; do p=${p%/}; done; echo "$p"; }
PREFIX=$(strip_slashes "$PREFIX"); LIBDIR=$(strip_slashes "$LIBDIR")
INCLUDEDIR=$(strip_slashes "$INCLUDEDIR"); MANDIR=$(strip_slashes "$MANDIR")
DESTDIR=${DESTDIR%/}

manifest=$LIBDIR/asyncfutex/install-manifest.txt

run_ldconfig() {
    if [ -z "$DESTDIR" ] && [ "$(id -u)" -eq 0 ] && command -v ldconfig >/dev/null 2>&1; then
        ldconfig || echo "install.sh: ldconfig failed (not fatal)" >&2
    fi
}

if [ "$mode" = uninstall ]; then
    [ -f "$DESTDIR$manifest" ] || die "nothing to uninstall: no $DESTDIR$manifest (same PREFIX/LIBDIR/DESTDIR as the install?)"
    # Files and links first, then the directories the install created
    # (deepest first, and only while empty).
    dirs=()
    while IFS=' ' read -r kind path; do
        case "$kind" in
            f|l) rm -f -- "$DESTDIR$path"; echo "removed $DESTDIR$path" ;;
            d) dirs+=("$path") ;;
            '') ;;
            *) die "bad manifest line: $kind $path" ;;
        esac
    done < "$DESTDIR$manifest"
    rm -f -- "$DESTDIR$manifest"
    rmdir -- "$DESTDIR$(dirname "$manifest")" 2>/dev/null || true
    for ((i = ${#dirs[@]} - 1; i >= 0; i--)); do
        rmdir -- "$DESTDIR${dirs[i]}" 2>/dev/null && echo "removed $DESTDIR${dirs[i]}/" || true
    done
    run_ldconfig
    echo "install.sh: asyncfutex uninstalled from $DESTDIR$PREFIX"
    exit 0
fi

# ---- build -----------------------------------------------------------------
version=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$root/Cargo.toml" | head -n 1)
[[ "$version" =~ ^([0-9]+)\.([0-9]+)\.([0-9]+)$ ]] || die "cannot read a plain X.Y.Z version from Cargo.toml (got '$version')"
major=${BASH_REMATCH[1]}
if [ "$build" -eq 1 ]; then
    command -v "$CARGO" >/dev/null 2>&1 || die "cargo not found (install Rust: https://rustup.rs, or set CARGO)"
    "$CARGO" build --release --lib --manifest-path "$root/Cargo.toml"
fi
# The target directory (CARGO_TARGET_DIR, .cargo/config.toml, or target/).
target_dir=$("$CARGO" metadata --no-deps --format-version 1 --manifest-path "$root/Cargo.toml" 2>/dev/null \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p') || true
target_dir=${target_dir:-${CARGO_TARGET_DIR:-$root/target}}
so=$target_dir/release/libasyncfutex.so
archive=$target_dir/release/libasyncfutex.a
[ -f "$so" ] && [ -f "$archive" ] || die "$so or $archive missing: run without --no-build"
soname=libasyncfutex.so.$major
if command -v readelf >/dev/null 2>&1; then
    got=$(readelf -d "$so" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
    [ "$got" = "$soname" ] || die "$so has SONAME '$got', expected '$soname' (stale build? run without --no-build)"
fi

# ---- install ---------------------------------------------------------------
if [ -f "$DESTDIR$manifest" ]; then
    echo "install.sh: removing the previous install first"
    "$0" --uninstall
fi

entries=()
if [ -n "$DESTDIR" ]; then mkdir -p -- "$DESTDIR"; fi
# Creates a directory (and its parents) under DESTDIR, recording those it
# made, outermost first.
make_dir() {
    local dir=$1 missing=()
    while [ "$dir" != / ] && [ ! -d "$DESTDIR$dir" ]; do
        missing=("$dir" "${missing[@]+"${missing[@]}"}")
        dir=$(dirname "$dir")
    done
    for dir in "${missing[@]+"${missing[@]}"}"; do
        mkdir -m 0755 -- "$DESTDIR$dir"
        entries+=("d $dir")
    done
}
put() { # mode source destination
    make_dir "$(dirname "$3")"
    install -m "$1" -- "$2" "$DESTDIR$3"
    entries+=("f $3")
    echo "installed $DESTDIR$3"
}
put_link() { # target link
    make_dir "$(dirname "$2")"
    ln -sfn -- "$1" "$DESTDIR$2"
    entries+=("l $2")
    echo "installed $DESTDIR$2 -> $1"
}
# A path relative to a directory, both absolute.
relative() { realpath -m --relative-to="$1" "$2"; }
# Writes @NAME@ substitutions of a template.
render() { # template destination
    local tmp
    tmp=$(mktemp)
    sed -e "s|@PREFIX@|$PREFIX|g" \
        -e "s|@LIBDIR@|$pc_libdir|g" \
        -e "s|@INCLUDEDIR@|$pc_includedir|g" \
        -e "s|@VERSION@|$version|g" \
        -e "s|@ABI_MAJOR@|$major|g" \
        -e "s|@NATIVE_STATIC_LIBS@|$native_static_libs|g" \
        -e "s|@SIZEOF_VOID_P@|8|g" \
        -e "s|@CMAKEDIR_TO_LIBDIR@|$(relative "$LIBDIR/cmake/asyncfutex" "$LIBDIR")|g" \
        -e "s|@CMAKEDIR_TO_INCLUDEDIR@|$(relative "$LIBDIR/cmake/asyncfutex" "$INCLUDEDIR")|g" \
        "$1" > "$tmp"
    put 0644 "$tmp" "$2"
    rm -f "$tmp"
}
# What the static library needs besides libc's start files, for
# Libs.private (pkg-config --static) and CMake's static target: rustc's
# native-static-libs for linux-gnu (-lgcc_s -lutil -lrt -lpthread -lm -ldl
# -lc) without -lgcc_s. Its unwinder is libgcc's, which the C/C++ compiler
# driver adds anyway (libgcc_s as needed when linking dynamically,
# libgcc_eh with -static); naming -lgcc_s here made a -static link fail
# (there is no libgcc_s.a), and naming -lgcc_eh would put a second copy of
# the unwinder into dynamically linked C++ programs.
native_static_libs="-lutil -lrt -lpthread -lm -ldl -lc"

# pkg-config paths relative to ${prefix} where possible (PKG_CONFIG_SYSROOT_DIR
# and --define-prefix then work).
pc_libdir=$LIBDIR; pc_includedir=$INCLUDEDIR
case "$LIBDIR" in "$PREFIX"/*) pc_libdir="\${prefix}${LIBDIR#"$PREFIX"}" ;; esac
case "$INCLUDEDIR" in "$PREFIX"/*) pc_includedir="\${prefix}${INCLUDEDIR#"$PREFIX"}" ;; esac

# Record what is installed even if a step fails halfway, so --uninstall
# can clean up.
write_manifest() {
    [ "${#entries[@]}" -gt 0 ] || return 0
    make_dir "$(dirname "$manifest")"
    printf '%s\n' "${entries[@]}" > "$DESTDIR$manifest"
}
scratch=$(mktemp -d)
trap 'write_manifest; rm -rf -- "$scratch"' EXIT

# The libraries, stripped: the shared one keeps its dynamic symbol table
# and SONAME (--strip-unneeded drops debug info and local symbols), its
# debug info goes to a separate file it names in .gnu_debuglink (checked
# by CRC, found by gdb in .debug/ next to the library); the archive keeps
# its symbols (it is linked from) and loses its debug info (strip -g).
so_name=libasyncfutex.so.$version
debug_name=$so_name.debug
if [ "$strip_libs" -eq 1 ]; then
    for tool in "$STRIP" "$OBJCOPY"; do
        command -v "$tool" >/dev/null 2>&1 \
            || die "'$tool' not found: install binutils (apt-get install binutils), or use --no-strip"
    done
    "$OBJCOPY" --only-keep-debug -- "$so" "$scratch/$debug_name" || die "$OBJCOPY --only-keep-debug $so failed"
    "$STRIP" --strip-unneeded -o "$scratch/$so_name" -- "$so" || die "$STRIP $so failed"
    # --add-gnu-debuglink records the file's base name and CRC; run it
    # where the debug file is.
    (cd "$scratch" && "$OBJCOPY" --add-gnu-debuglink="$debug_name" -- "$so_name") \
        || die "$OBJCOPY --add-gnu-debuglink failed"
    "$STRIP" --strip-debug -o "$scratch/libasyncfutex.a" -- "$archive" || die "$STRIP -g $archive failed"
    so=$scratch/$so_name
    archive=$scratch/libasyncfutex.a
fi

put 0755 "$so" "$LIBDIR/$so_name"
put_link "$so_name" "$LIBDIR/$soname"
put_link "$soname" "$LIBDIR/libasyncfutex.so"
if [ "$strip_libs" -eq 1 ]; then
    put 0644 "$scratch/$debug_name" "$LIBDIR/.debug/$debug_name"
fi
put 0644 "$archive" "$LIBDIR/libasyncfutex.a"
put 0644 "$root/include/asyncfutex.h" "$INCLUDEDIR/asyncfutex.h"
# The C++ header(s), keeping any subdirectory.
cpp_include=$root/bindings/cpp/include
[ -f "$cpp_include/asyncfutex.hpp" ] || die "$cpp_include/asyncfutex.hpp missing"
while IFS= read -r -d '' header; do
    put 0644 "$header" "$INCLUDEDIR/${header#"$cpp_include/"}"
done < <(find "$cpp_include" -type f -name '*.hpp' -print0 | sort -z)
# Manual pages: man/manN/*.N -> $MANDIR/manN/.
pages=0
while IFS= read -r -d '' page; do
    put 0644 "$page" "$MANDIR/${page#"$root/man/"}"
    pages=$((pages + 1))
done < <(find "$root/man" -path "$root/man/man[1-9]/*.[1-9]" -type f -print0 | sort -z)
[ "$pages" -gt 0 ] || die "no manual pages under $root/man (run packaging/gen-man.py)"
render "$root/packaging/asyncfutex.pc.in" "$LIBDIR/pkgconfig/asyncfutex.pc"
render "$root/packaging/asyncfutexConfig.cmake.in" "$LIBDIR/cmake/asyncfutex/asyncfutexConfig.cmake"
render "$root/packaging/asyncfutexConfigVersion.cmake.in" "$LIBDIR/cmake/asyncfutex/asyncfutexConfigVersion.cmake"
write_manifest
trap - EXIT
rm -rf -- "$scratch"
echo "installed $DESTDIR$manifest"
run_ldconfig
echo "install.sh: asyncfutex $version installed into $DESTDIR$PREFIX"
echo "  use: pkg-config --cflags --libs asyncfutex   or   find_package(asyncfutex) + asyncfutex::asyncfutex"
echo "  manual: man asyncfutex (MANPATH=$MANDIR if that is not searched)"
