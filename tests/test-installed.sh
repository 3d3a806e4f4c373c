#!/bin/bash
# SPDX-License-Identifier: MIT
#
# What a user gets from "meson install" works: stage an install, find the
# library through its pkg-config file alone, build a small program against it
# and run it.
#
# usage: test-installed.sh BUILDDIR [SOURCEDIR]
# Exit 0 on success, 77 (skip) when a tool it needs is missing, 1 otherwise.
set -eu

if [ $# -lt 1 ] || [ ! -d "$1" ]; then
	echo "usage: $0 BUILDDIR [SOURCEDIR]" >&2
	exit 1
fi
builddir=$1
# the client program's source (tests/installed-client.c): SOURCEDIR, or this script's
srcdir=${2:-$(dirname "$0")/..}

for tool in meson pkg-config cc; do
	if ! command -v "$tool" >/dev/null; then
		echo "SKIP: $tool is not installed"
		exit 77
	fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/libdirty-installed.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
tmp=$(realpath "$tmp") # the paths pkg-config gives back are compared as strings

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

stage=$tmp/stage
echo "installing $builddir into $stage"
# --no-rebuild: meson test has built everything, and a ninja inside "ninja test"
# would run on the same build directory as its parent
if ! meson install -C "$builddir" --no-rebuild --destdir "$stage" >"$tmp/install.log" 2>&1; then
	cat "$tmp/install.log" >&2
	fail "meson install failed"
fi

pcfiles=$(find "$stage" -name libdirty.pc)
[ -n "$pcfiles" ] || fail "no libdirty.pc was installed"
[ "$(printf '%s\n' "$pcfiles" | wc -l)" -eq 1 ] || fail "several libdirty.pc installed: $pcfiles"
pcdir=$(dirname "$pcfiles")
libdir=$(dirname "$pcdir")
[ -e "$libdir/libdirty.so" ] || fail "libdirty.so is not next to pkgconfig/ in $libdir"
echo "found $pcfiles"

# Only the staged .pc file; -I and -L get the staging directory in front.
export PKG_CONFIG_PATH=$pcdir
export PKG_CONFIG_LIBDIR=$pcdir
export PKG_CONFIG_SYSROOT_DIR=$stage
# with prefix=/usr, keep -I/usr/include and -L/usr/lib: they point into $stage
export PKG_CONFIG_ALLOW_SYSTEM_CFLAGS=1 PKG_CONFIG_ALLOW_SYSTEM_LIBS=1
cflags=$(pkg-config --cflags libdirty) || fail "pkg-config --cflags libdirty failed"
libs=$(pkg-config --libs libdirty) || fail "pkg-config --libs libdirty failed"
echo "pkg-config --cflags: $cflags"
echo "pkg-config --libs:   $libs"
incdir='' libpath=''
for word in $cflags $libs; do
	case $word in
	-I*) incdir=${word#-I} ;;
	-L*) libpath=${word#-L} ;;
	esac
done
case $incdir in
"$stage"/*) ;;
*) fail "the include path is not in the staging tree: $cflags" ;;
esac
[ -f "$incdir/libdirty.h" ] || fail "libdirty.h is not in $incdir"
[ "$libpath" = "$libdir" ] || fail "the library path is not $libdir: $libs"

cp "$srcdir/tests/installed-client.c" "$tmp/prog.c"

echo "cc $cflags prog.c $libs"
# shellcheck disable=SC2086 # the flags are words
cc $cflags "$tmp/prog.c" $libs -o "$tmp/prog" || fail "the program does not build"
echo "running it with LD_LIBRARY_PATH=$libdir"
LD_LIBRARY_PATH=$libdir ldd "$tmp/prog" | grep -qF "=> $libdir/libdirty.so" ||
	fail "the program does not load libdirty from $libdir"
LD_LIBRARY_PATH=$libdir "$tmp/prog" || fail "the program failed"
echo "PASS"
