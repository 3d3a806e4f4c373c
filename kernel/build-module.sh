#!/bin/sh
# Build dirtymap.ko out of tree against a kernel's headers (a built tree or an
# unpacked Debian linux-headers package).
#
#   build-module.sh HEADERS_DIR OUTDIR [SOURCE]
#
# HEADERS_DIR: e.g. /usr/src/linux-headers-6.12.95+deb12-amd64 or
# /lib/modules/$(uname -r)/build.  OUTDIR receives dirtymap.ko (the build runs
# in a copy of kernel/ under OUTDIR/build, so the source tree stays clean).
# SOURCE (default kernel/dirtymap.c) is the driver to build as dirtymap.ko;
# kernel/tests/legacy/dirtymap-v1.c is the old, unsafe one the race test must
# catch.  Debian's headers name their compiler x86_64-linux-gnu-gcc-12; CC=...
# in the environment overrides it (default: the compiler the headers name,
# else gcc-12, else gcc).
set -eu
[ $# -eq 2 ] || [ $# -eq 3 ] || { echo "usage: $0 HEADERS_DIR OUTDIR [SOURCE]" >&2; exit 2; }
hdr=$(cd "$1" && pwd)
mkdir -p "$2"
out=$(cd "$2" && pwd)
src=$(cd "$(dirname "$0")" && pwd)
source=${3:-$src/dirtymap.c}

if [ -z "${CC:-}" ]; then
	want=$(sed -n 's/^CONFIG_CC_VERSION_TEXT="\(x86_64-linux-gnu-gcc-[0-9]*\) .*/\1/p' "$hdr/.config" 2>/dev/null || true)
	for cc in $want gcc-12 gcc; do
		if command -v "$cc" >/dev/null 2>&1; then CC=$cc; break; fi
	done
fi
rm -rf "$out/build"
mkdir -p "$out/build/include/uapi/linux"
cp "$source" "$out/build/dirtymap.c"
cp "$src/Kbuild" "$out/build/"
cp "$src/include/uapi/linux/dirtymap.h" "$out/build/include/uapi/linux/"
for h in "$(dirname "$source")"/*.h; do
	[ -f "$h" ] && cp "$h" "$out/build/"
done
# BTF for the module needs pahole (and the headers' vmlinux): without pahole
# the module is built without BTF, which only bpf tracing of it would need
btf=
command -v pahole >/dev/null 2>&1 || btf=CONFIG_DEBUG_INFO_BTF_MODULES=
make -s -C "$hdr" M="$out/build" CC="$CC" $btf ${JOBS:+-j"$JOBS"} modules
cp "$out/build/dirtymap.ko" "$out/dirtymap.ko"
echo "build-module: $out/dirtymap.ko from ${source#$src/} ($(sed -n 's/^CONFIG_CC_VERSION_TEXT="\(.*\)"/\1/p' "$hdr/.config" 2>/dev/null | head -c 40); CC=$CC)"
