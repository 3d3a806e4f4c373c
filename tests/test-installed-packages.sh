#!/bin/bash
# SPDX-License-Identifier: MIT
#
# What a user gets from the Debian packages works, as installed on this
# machine (apt-get install ./build-deb/*.deb; scripts/test.sh does it):
#   - the five packages are installed, at this tree's version (and, given
#     DEBDIR, are the very .debs built there);
#   - a program builds against libdirty with the system's pkg-config alone,
#     runs with /usr/lib's libdirty.so.0 (no LD_LIBRARY_PATH), finds its
#     dirty pages, and dirty_version() is the package's version; the same
#     program links the static library;
#   - the installed libraries export only libdirty.sym's names
#     (tests/abi/check-abi.py);
#   - "man 3 NAME" shows a page for every name of libdirty.sym, without a
#     warning; libdirty(7), dirtyctl(1), dirty-syncd(1) are there;
#   - dirtyctl and dirty-syncd run; dirty-syncd's socket and service units,
#     its group and its defaults are installed; dirtymap-dkms's source is in
#     /usr/src with its dkms.conf, and DKMS knows it.
#
# usage: test-installed-packages.sh VERSION SOURCEDIR [DEBDIR]
# Exit 0 on success, 77 (skip) when the packages are not installed, 1 otherwise.
set -eu

if [ $# -lt 2 ]; then
	echo "usage: $0 VERSION SOURCEDIR [DEBDIR]" >&2
	exit 1
fi
version=$1 src=$2 debdir=${3:-${LIBDIRTY_DEB_DIR:-}}
packages=(libdirty0 libdirty-dev dirtyctl dirty-syncd dirtymap-dkms)
failures=0
fail() {
	echo "not ok - $*"
	failures=$((failures + 1))
}
ok() {
	echo "ok - $*"
}

for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed'; then
		echo "SKIP: $p is not installed (scripts/build-debs.sh, then apt-get install ./build-deb/*.deb)"
		exit 77
	fi
done
for p in "${packages[@]}"; do
	v=$(dpkg-query -W -f='${Version}' "$p")
	[ "$v" = "$version" ] && ok "$p $v is installed" || fail "$p $v is installed, not $version"
done
# the .debs of DEBDIR are what is installed
if [ -n "$debdir" ]; then
	for p in "${packages[@]}"; do
		deb=$(ls "$debdir/${p}_${version}_"*.deb 2>/dev/null | head -n1)
		if [ -z "$deb" ]; then
			fail "no $p .deb of $version in $debdir"
			continue
		fi
		# every regular file of the .deb is on disk with the same md5sum
		if (cd / && dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./md5sums | md5sum --quiet -c -); then
			ok "$p: the files of $(basename "$deb") are the installed ones"
		else
			fail "$p: the installed files differ from $(basename "$deb")"
		fi
	done
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/libdirty-packages.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
libdir=/usr/lib/$multiarch

# ---- the library, through pkg-config alone -----------------------------------
unset PKG_CONFIG_PATH PKG_CONFIG_LIBDIR PKG_CONFIG_SYSROOT_DIR LD_LIBRARY_PATH
pc_version=$(pkg-config --modversion libdirty) || pc_version=
[ "$pc_version" = "$version" ] && ok "pkg-config --modversion libdirty: $pc_version" ||
	fail "pkg-config --modversion libdirty: '$pc_version', not $version"
cflags=$(pkg-config --cflags libdirty)
libs=$(pkg-config --libs libdirty)
[ "$(pkg-config --variable=libdir libdirty)" = "$libdir" ] && ok "libdir is $libdir" ||
	fail "pkg-config's libdir is $(pkg-config --variable=libdir libdirty), not $libdir"

cp "$src/tests/installed-client.c" "$tmp/prog.c"
# shellcheck disable=SC2086 # the flags are words
if cc $cflags "$tmp/prog.c" $libs -o "$tmp/prog" 2>"$tmp/cc.log"; then
	ok "cc \$(pkg-config --cflags --libs libdirty) builds a program"
	# /lib is /usr/lib on a merged-/usr system: compare where the paths lead
	loaded=$(ldd "$tmp/prog" | awk '$1 == "libdirty.so.0" { print $3 }')
	if [ -n "$loaded" ] && [ "$(readlink -f "$loaded")" = "$(readlink -f "$libdir/libdirty.so.0")" ]; then
		ok "it loads $libdir/libdirty.so.0 ($loaded)"
	else
		fail "it does not load $libdir/libdirty.so.0: $(ldd "$tmp/prog" | grep libdirty)"
	fi
	out=$("$tmp/prog" "$version" 2>&1) && ok "it runs: $out" || fail "the program failed: $out"
else
	fail "the program does not build: $(cat "$tmp/cc.log")"
fi
# statically: libdirty.a and what Libs.private names (liburing, libnuma)
static_libs=""
for word in $(pkg-config --static --libs-only-l libdirty); do
	case $word in
	-lpthread) ;;
	*) static_libs="$static_libs $word" ;;
	esac
done
# shellcheck disable=SC2086
if cc $cflags "$tmp/prog.c" -o "$tmp/prog-static" -Wl,-Bstatic $static_libs -Wl,-Bdynamic \
	-lpthread 2>"$tmp/cc.log"; then
	if ldd "$tmp/prog-static" | grep -q libdirty; then
		fail "the static link still loads libdirty.so"
	elif out=$("$tmp/prog-static" "$version" 2>&1); then
		ok "linked with libdirty.a ($static_libs), it runs: $out"
	else
		fail "the statically linked program failed: $out"
	fi
else
	fail "the program does not link statically: $(cat "$tmp/cc.log")"
fi
if out=$(python3 "$src/tests/abi/check-abi.py" "$src/libdirty/libdirty.sym" \
	"$(readlink -f "$libdir/libdirty.so.0")" "$libdir/libdirty.a" 2>&1); then
	ok "the installed libraries export only libdirty.sym's names"
else
	fail "check-abi.py on the installed libraries: $out"
fi

# ---- the pages -----------------------------------------------------------------
names=$(sed -n 's/^\t\(dirty_[a-z_0-9]*\);$/\1/p' "$src/libdirty/libdirty.sym")
[ -n "$names" ] || fail "no names in $src/libdirty/libdirty.sym"
missing=0
for name in $names; do
	path=$(man -w 3 "$name" 2>/dev/null) || path=
	case $path in
	/usr/share/man/man3/*) ;;
	*) fail "man -w 3 $name: '$path'"; missing=$((missing + 1)); continue ;;
	esac
	# the page man found, formatted afresh: man-db's cache of formatted pages
	# (/var/cache/man) may hold an older one, newer than the packaged file's
	# date (SOURCE_DATE_EPOCH, the changelog's)
	warnings=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$path" 2>&1 >"$tmp/page.txt") || warnings="$warnings (man failed)"
	if [ -n "$warnings" ]; then
		fail "man 3 $name: $warnings"
		missing=$((missing + 1))
	elif ! grep -q "$name" "$tmp/page.txt"; then
		fail "man 3 $name does not show $name"
		missing=$((missing + 1))
	fi
done
[ $missing = 0 ] && ok "man 3 NAME shows a page for each of the $(echo "$names" | wc -w) names of libdirty.sym"
for page in "7 libdirty" "1 dirtyctl" "1 dirty-syncd"; do
	# shellcheck disable=SC2086
	man -w $page >/dev/null 2>&1 && ok "man $page: $(man -w $page)" || fail "no page: man $page"
done

# ---- the programs ----------------------------------------------------------------
out=$(/usr/bin/dirtyctl probe 2>&1) && ok "dirtyctl probe runs ($(echo "$out" | grep -c usable) backends usable)" ||
	fail "dirtyctl probe: $out"
/usr/bin/dirty-syncd --help >/dev/null && ok "dirty-syncd --help" || fail "dirty-syncd --help"
unit_dir=/usr/lib/systemd/system
[ -d "$unit_dir" ] || unit_dir=/lib/systemd/system
if grep -qx 'ListenSequentialPacket=/run/dirty-syncd.sock' "$unit_dir/dirty-syncd.socket" 2>/dev/null &&
   grep -q '^ExecStart=/usr/bin/dirty-syncd ' "$unit_dir/dirty-syncd.service" 2>/dev/null; then
	ok "dirty-syncd.socket and dirty-syncd.service are in $unit_dir"
else
	fail "dirty-syncd's units are not installed in $unit_dir"
fi
if command -v systemd-analyze >/dev/null; then
	out=$(systemd-analyze verify "$unit_dir/dirty-syncd.socket" "$unit_dir/dirty-syncd.service" 2>&1) &&
		ok "systemd-analyze verify: the units are sound" || fail "systemd-analyze verify: $out"
else
	echo "# systemd-analyze is not installed: the units are not verified by systemd"
fi
getent group dirty-syncd >/dev/null && ok "the group dirty-syncd exists" || fail "no group dirty-syncd"
[ -f /etc/default/dirty-syncd ] && ok "/etc/default/dirty-syncd" || fail "no /etc/default/dirty-syncd"
conf=/usr/src/dirtymap-$version/dkms.conf
if [ -f "$conf" ] && [ -f "/usr/src/dirtymap-$version/dirtymap.c" ] &&
   grep -qx "PACKAGE_VERSION=\"$version\"" "$conf"; then
	ok "dirtymap-dkms: $conf and the module's source"
else
	fail "dirtymap-dkms: no $conf with PACKAGE_VERSION=\"$version\""
fi
if command -v dkms >/dev/null && dkms status -m dirtymap -v "$version" | grep -q "dirtymap/$version"; then
	ok "dkms status: $(dkms status -m dirtymap -v "$version" | head -n1)"
else
	fail "DKMS does not know dirtymap $version"
fi

if [ $failures -gt 0 ]; then
	echo "$failures failed"
	exit 1
fi
echo "PASS"
