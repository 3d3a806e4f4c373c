# Shared by run-check.sh and bench.sh (sourced): fetch Debian 12's bdwgc
# source once, unpack it, patch it, build it against a libdirty build tree.
#
# Environment:
#   LIBDIRTY_BDWGC_CACHE  where the source package is kept (default
#                         /var/cache/libdirty-bdwgc, or ~/.cache/libdirty-bdwgc
#                         where that is not writable), one directory per
#                         Debian version; fetched with apt-get source through
#                         a private apt configuration: this machine's apt
#                         sources, lists and caches are never written.
#   LIBDIRTY_BDWGC_MIRROR the Debian archive (default http://deb.debian.org/debian)

bdwgc_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bdwgc_source_dir=$(cd "$bdwgc_here/../.." && pwd)
# The version the patch is written against: bdwgc 8.2.2, Debian 12's libgc.
bdwgc_debian_version=1:8.2.2-3
bdwgc_patch=$bdwgc_here/libdirty-vdb.patch
# Debian's configuration of its libgc1 build (debian/rules, build-dynamic).
bdwgc_configure_flags=(--enable-cplusplus --with-libatomic-ops=none --disable-static
	--disable-docs --disable-dependency-tracking)

bdwgc_skip() {
	echo "SKIP: $*"
	exit 77
}

# Tools the build needs, as command -> Debian package (scripts/deps.sh has them).
bdwgc_need_tools() {
	local -A package=([autoreconf]=autoconf [automake]=automake [libtoolize]=libtool
		[make]=make [gcc]=gcc [g++]=g++ [dpkg-source]=dpkg-dev [apt-get]=apt
		[flock]=util-linux [python3]=python3 [setsid]=util-linux)
	local t missing=()
	for t in "${!package[@]}"; do
		command -v "$t" >/dev/null || missing+=("$t")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" = 0 ]; then
		echo "bdwgc: missing ${missing[*]}; running scripts/deps.sh"
		bash "$bdwgc_source_dir/scripts/deps.sh" || return 1
		for t in "${missing[@]}"; do
			command -v "$t" >/dev/null || bdwgc_skip "cannot install $t (${package[$t]})"
		done
		return 0
	fi
	bdwgc_skip "missing tools: ${missing[*]} (run scripts/deps.sh as root)"
}

# The libdirty build tree must be a plain one: a sanitized libdirty cannot be
# loaded into the uninstrumented bdwgc test programs.
bdwgc_check_build_dir() {
	local build=$1 sanitize
	[ -e "$build/libdirty.so" ] || { echo "bdwgc: $build/libdirty.so is not built" >&2; exit 1; }
	[ -x "$build/tools/dirtyctl" ] || { echo "bdwgc: $build/tools/dirtyctl is not built" >&2; exit 1; }
	sanitize=$(python3 - "$build/meson-info/intro-buildoptions.json" <<'PY' 2>/dev/null || echo none
import json, sys
print(next(o["value"] for o in json.load(open(sys.argv[1])) if o["name"] == "b_sanitize"))
PY
)
	[ "$sanitize" = none ] || bdwgc_skip "libdirty is built with -fsanitize=$sanitize;" \
		"bdwgc's test programs cannot load it"
}

# Sets bdwgc_dsc to the cached .dsc of $bdwgc_debian_version, downloading it
# (with its tarballs) the first time, and bdwgc_cache to the cache directory.
# Exits 77 if the archive is unreachable.
bdwgc_fetch() {
	local cache=${LIBDIRTY_BDWGC_CACHE:-/var/cache/libdirty-bdwgc} dir apt_dir
	local -a apt_opts
	if [ -z "${LIBDIRTY_BDWGC_CACHE:-}" ] && ! mkdir -p "$cache" 2>/dev/null; then
		cache=${XDG_CACHE_HOME:-$HOME/.cache}/libdirty-bdwgc
	fi
	bdwgc_cache=$cache
	dir=$cache/libgc-${bdwgc_debian_version#*:}
	apt_dir=$cache/apt
	mkdir -p "$dir" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
	bdwgc_dsc=$dir/libgc_${bdwgc_debian_version#*:}.dsc
	(
		flock 9 # runs share the cache safely
		[ -f "$bdwgc_dsc" ] && exit 0
		echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]" \
			"${LIBDIRTY_BDWGC_MIRROR:-http://deb.debian.org/debian} bookworm main" \
			> "$apt_dir/sources.list"
		apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list"
			-o Dir::Etc::SourceParts=/dev/null
			-o "Dir::State::Lists=$apt_dir/lists"
			-o "Dir::Cache=$apt_dir/cache")
		# as root apt drops to _apt for downloads, which cannot write here
		[ "$(id -u)" = 0 ] && apt_opts+=(-o APT::Sandbox::User=root)
		echo "bdwgc: downloading the source of libgc $bdwgc_debian_version"
		# apt-get update exits 0 when it fetched nothing: source says so
		if ! apt-get "${apt_opts[@]}" -q update >"$cache/fetch.log" 2>&1 ||
		   ! (cd "$dir" && apt-get "${apt_opts[@]}" -q source --download-only \
				"libgc=$bdwgc_debian_version") >>"$cache/fetch.log" 2>&1 ||
		   [ ! -f "$bdwgc_dsc" ]; then
			rm -f "$dir"/*.dsc
			exit 77
		fi
	) 9>"$cache/lock"
	case $? in
	0) ;;
	77) bdwgc_skip "the source of Debian's libgc $bdwgc_debian_version cannot be fetched:" \
		"$(grep -E '^(E|W|Err):' "$cache/fetch.log" | head -n 2 | tr '\n' ' ')" \
		"(apt output: $cache/fetch.log)" ;;
	*) exit 1 ;;
	esac
}

# bdwgc_unpack KIND DIR: a fresh source tree in DIR.  KIND: ref (as Debian
# ships it), patched (with libdirty-vdb.patch), control (patched, then made
# to report no dirty page: a negative control that must fail).
bdwgc_unpack() {
	local kind=$1 dir=$2
	rm -rf "$dir"
	# checksums are checked; the signature needs debian-keyring (apt checked
	# the files against the signed archive index when it fetched them)
	dpkg-source -x "$bdwgc_dsc" "$dir" >"$dir.unpack.log" 2>&1 ||
		{ cat "$dir.unpack.log"; return 1; }
	[ "$kind" = ref ] && return 0
	(cd "$dir" && patch -p1 -s --no-backup-if-mismatch) < "$bdwgc_patch" || return 1
	if [ "$kind" = control ]; then
		sed -i 's/^\( *uint64_t bits = \)libdirty_bitmap\[w\];/\10; \/* control *\//' \
			"$dir/os_dep.c"
		grep -q "uint64_t bits = 0; /\* control \*/" "$dir/os_dep.c" ||
			{ echo "bdwgc: the negative control no longer applies to the patch" >&2; return 1; }
	fi
	(cd "$dir" && autoreconf -fi >autoreconf.log 2>&1) ||
		{ cat "$dir/autoreconf.log"; return 1; }
}

# bdwgc_build KIND SRC BUILD LIBDIRTY_BUILD: configure as Debian does and build
# the library and the test programs of make check.  The patched kinds link
# the libdirty of LIBDIRTY_BUILD (rpath), with its header from the source tree
# and the version header meson made in LIBDIRTY_BUILD/include.
bdwgc_build() {
	local kind=$1 src=$2 build=$3 libdirty=$4
	local -a extra=()
	rm -rf "$build"
	mkdir -p "$build"
	if [ "$kind" != ref ]; then
		extra=(--with-libdirty CPPFLAGS="-I$bdwgc_source_dir/include -I$libdirty/include"
			LDFLAGS="-pthread -L$libdirty -Wl,-rpath,$libdirty")
	else
		extra=(LDFLAGS=-pthread)
	fi
	(cd "$build" && "$src/configure" "${bdwgc_configure_flags[@]}" "${extra[@]}" \
		>configure.log 2>&1) || { tail -n 30 "$build/config.log"; return 1; }
	if [ "$kind" != ref ] && ! grep -q '^#define LIBDIRTY_VDB 1' "$build/confdefs.h" \
		"$build/config.log" 2>/dev/null; then
		echo "bdwgc: configure did not enable LIBDIRTY_VDB" >&2
		return 1
	fi
	(cd "$build" && make -j2 >make.log 2>&1 && make -j2 check TESTS= >>make.log 2>&1) ||
		{ tail -n 30 "$build/make.log"; return 1; }
}

# bdwgc_build_ref_cached BUILD: the unpatched bdwgc (which owes nothing to
# libdirty) built once per source, configuration and compiler in the cache,
# and copied to BUILD (timestamps kept: make finds it up to date), where make
# check may write its logs.  After bdwgc_fetch.
bdwgc_build_ref_cached() {
	local build=$1 key dir
	key=$({ sha256sum "$bdwgc_dsc" | cut -d' ' -f1; echo "${bdwgc_configure_flags[*]}"
		gcc --version | head -n 1; g++ --version | head -n 1; } | sha256sum | cut -c1-16)
	dir=$bdwgc_cache/ref-build-$key
	(
		flock 9
		[ -f "$dir/built" ] && exit 0
		rm -rf "$dir"
		mkdir -p "$dir"
		echo "bdwgc: building the unpatched bdwgc once, in $dir"
		bdwgc_unpack ref "$dir/src" && bdwgc_build ref "$dir/src" "$dir/build" "" || exit 1
		touch "$dir/built"
	) 9>"$bdwgc_cache/lock" || return 1
	rm -rf "$build"
	cp -a "$dir/build" "$build"
}

# bdwgc_run_isolated CMD...: run CMD in a session of its own and end whatever
# it leaves behind (a test program that crashes may leave forked children).
bdwgc_run_isolated() {
	local pid status
	setsid "$@" &
	pid=$!
	wait "$pid"
	status=$?
	kill -KILL -- -"$pid" 2>/dev/null
	return "$status"
}
