#!/usr/bin/env bash
# Build the Debian packages from this tree: libdirty0, libdirty-dev,
# dirtyctl, dirty-syncd, dirtymap-dkms.
#
#   bash scripts/build-debs.sh [OUTDIR]      (default: build-deb)
#
# dpkg-buildpackage -us -uc -b runs in a copy of the tree (OUTDIR/libdirty-
# VERSION: the tracked files and the new ones git does not ignore), so that
# the tree stays clean; the .debs, .buildinfo and .changes land in OUTDIR.
# Then: apt-get install ./OUTDIR/*.deb.  As root it first installs what the
# build needs (scripts/deps.sh); otherwise dpkg-checkbuilddeps says what is
# missing.
set -eu
cd "$(dirname "$0")/.."
out=${1:-build-deb}
[ "$(id -u)" = 0 ] && bash scripts/deps.sh
version=$(dpkg-parsechangelog -S Version)
meson_version=$(sed -n "s/^\s*version : '\([^']*\)',*$/\1/p" meson.build | head -n1)
if [ "$version" != "$meson_version" ]; then
	echo "build-debs: debian/changelog says $version, meson.build $meson_version" >&2
	exit 1
fi
mkdir -p "$out"
out=$(realpath "$out")
src=$out/libdirty-$version
rm -rf "$src" "$out"/*.deb "$out"/*.changes "$out"/*.buildinfo
mkdir -p "$src"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	# (a file deleted in the work tree but still in the index is left out)
	git ls-files -z --cached --others --exclude-standard |
		while IFS= read -r -d '' f; do
			[ -e "$f" ] && printf '%s\0' "$f"
		done | xargs -0 -r cp -a --parents -t "$src"
else
	tar -c --exclude='./build*' --exclude=./.git . | tar -x -C "$src"
fi
cd "$src"
dpkg-checkbuilddeps
echo "build-debs: dpkg-buildpackage -us -uc -b in $src"
DEB_BUILD_OPTIONS="parallel=$(nproc) ${DEB_BUILD_OPTIONS:-}" \
	dpkg-buildpackage -us -uc -b >"$out/build.log" 2>&1 || {
	tail -n 60 "$out/build.log" >&2
	echo "build-debs: dpkg-buildpackage failed; the whole log is $out/build.log" >&2
	exit 1
}
cd "$out"
rm -rf "$src"
ls -1 ./*.deb
