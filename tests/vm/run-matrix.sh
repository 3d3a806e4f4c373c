#!/usr/bin/env bash
# Run the conformance suite on Debian's own kernels, booted in qemu, and the
# NUMA suite on a guest with two NUMA nodes.
#
#   run-matrix.sh BUILD_DIR KERNEL...      KERNEL: see kernel_spec below: x86-64 5.10
#                                          (bullseye), 6.1 (bookworm), 6.12
#                                          (bookworm-backports), 7.x (trixie-backports),
#                                          6.12-legacy, 6.12-dkms (see below); arm64 arm64-6.1,
#                                          arm64-6.12, arm64-6.12-16k (16 KiB pages)
#
# arm64 kernels boot under qemu-system-aarch64 (TCG, the virt machine, -cpu max
# for its 16 KiB granule), with the test binaries cross-built from the same
# source by gcc-aarch64-linux-gnu (tests/vm/cross-aarch64.ini) against a
# sysroot of Debian's arm64 -dev packages, and a guest root made of Debian's
# arm64 packages (busybox-static, python3 for the attach cell): see section 1c.
#
# The host kernel (6.18, no soft-dirty) cannot show how libdirty behaves on the
# kernels users run: 6.1 has userfaultfd write-protect but neither WP_ASYNC nor
# PAGEMAP_SCAN (so uffd-async must be refused there, with the reason), and both
# Debian kernels have CONFIG_MEM_SOFT_DIRTY.  The host also has a single NUMA
# node, so every guest has two (one vCPU and 1 GiB each; both Debian kernels have
# CONFIG_NUMA): there test-numa checks exact per-node counts of dirty pages.
# For each KERNEL this script
#   1. fetches Debian's linux-image package with apt-get download, using a private
#      apt configuration so that this machine's apt state is not changed, and
#      caches the .deb and its unpacked tree;
#   1b. for 6.12: fetches Debian's linux-headers (and -common, linux-kbuild) the
#      same way and builds kernel/dirtymap.ko against them on the host, with
#      kernel/tests/dirtymap-test and dirtymap-race (see kernel/build-module.sh);
#   2. builds an initramfs: static busybox, BUILD_DIR's test-conformance,
#      test-api, test-numa and dirtyctl with the shared libraries they load
#      (libnuma among them), the modules that give the guest an ext4 disk, and
#      an /init that runs the cells: api, numa (test-numa with
#      DIRTY_TEST_NUMA_NODES=2, so that it fails rather than skips if the
#      guest does not have the two nodes), module (6.12: dirtymap-test on
#      /dev/dirtymap, with its reclaim stress on a swap file), race (6.12:
#      dirtymap-race, collects racing move_pages() between the two nodes and
#      compaction, the kernel log checked), syncd
#      (test-syncd --mode mapping, when BUILD_DIR has tools/dirty-syncd and
#      tests/test-syncd) and every backend x suite; the backend "mapping"
#      (the dirtymap device) is usable on 6.12, where the module is loaded,
#      and must be refused on 6.1 ("not loaded");
#   3. boots it with qemu (TCG by default; 2 vCPUs, 2 GiB, as two NUMA nodes),
#      serial console to BUILD_DIR/tests/vm/log-KERNEL.txt;
#   4. reads the marker lines "@@LIBDIRTY ..." of the log, prints one line per
#      cell and checks the expected matrix (see check_matrix).
# 6.12-legacy is the negative control of the race cell: the same guest with
# version 1 of the module (kernel/tests/legacy/dirtymap-v1.c, which runs
# Linux 6.12's unpatched page walk over migration entries) runs the race cell
# only, and the matrix requires it to FAIL (a kernel error logged, a collect
# or the writer failing): a race test that passes there would prove nothing.
# 6.12-dkms proves the Debian package dirtymap-dkms: the module is built by DKMS
# (dkms add and dkms build, in a private DKMS tree, against Debian's 6.12
# headers) from the source the installed package put in /usr/src, or from
# LIBDIRTY_VM_DKMS_SOURCE; the guest loads that module and runs the module
# cells only: module, race, the mapping backend's suites and syncd.
# Exit status: 0 every expected cell passed, 1 otherwise, 77 the host lacks qemu
# or another tool and it cannot be installed (not root), or (6.12-dkms) the
# package is not installed.
#
# Environment (all optional):
#   LIBDIRTY_VM_CACHE      cache of package lists, .debs, unpacked kernels
#                          (default /var/cache/libdirty-vm, or ~/.cache/libdirty-vm
#                          when that is not writable); LIBDIRTY_VM_REFRESH=1 drops
#                          the cached kernel and resolves the newest one again
#   LIBDIRTY_VM_ACCEL      qemu accelerator, default tcg; kvm where nested KVM works
#                          (this CI machine has /dev/kvm, but guests fail with "KVM
#                          internal error")
#   LIBDIRTY_VM_TIMEOUT    seconds the whole guest may run (default 1500)
#   LIBDIRTY_VM_CELL_TIMEOUT  seconds one backend x suite run may take (default 600)
#   LIBDIRTY_VM_STRESS_WRITES, LIBDIRTY_VM_STRESS_ROUNDS  the stress suite's
#                          minimum writes and collect rounds (default 200000 / 200,
#                          a sixth and a tenth of the host's: under TCG a cell runs
#                          5-10x slower than on the host and takes 25-65 s so; still
#                          three writer threads racing a collector on two vCPUs)
#   LIBDIRTY_VM_BACKENDS, LIBDIRTY_VM_SUITES  run a subset (debugging)
#   LIBDIRTY_VM_CELLS      run only these of the other cells: api image module
#                          race numa sparse syncd (debugging; the matrix then fails)
#   LIBDIRTY_VM_DIRTYMAP_RECLAIM  the module cell's reclaim stress: "MEMFD_MIB
#                          CGROUP_MIB ROUNDS" (default "192 48 10": a 192 MiB memfd
#                          written by a process limited to 48 MiB, swap file 256 MiB)
#   LIBDIRTY_VM_RACE_SECONDS  how long the race cell collects (default 20)
#   LIBDIRTY_VM_APPEND     more kernel command line (debugging, e.g. loglevel=7)
#   LIBDIRTY_VM_EXEC       a host program (dynamically linked) to run in the
#                          guest before the cells, its output in the log (debugging)
#   LIBDIRTY_VM_DKMS_SOURCE  for 6.12-dkms: a directory holding dirtymap-VERSION/
#                          with its dkms.conf (an unpacked dirtymap-dkms .deb's
#                          usr/src) instead of the installed package's /usr/src
set -eu
set -o pipefail -o errtrace
trap 'echo "vm: failed (status $?): line $LINENO: $BASH_COMMAND" >&2' ERR

usage() { echo "usage: $0 BUILD_DIR KERNEL...   (KERNEL: 5.10, 6.1, 6.12, 6.12-legacy, 6.12-dkms, 7.x, arm64-6.1, arm64-6.12, arm64-6.12-16k)" >&2; exit 2; }

# ---- the kernels ----------------------------------------------------------
# kernel_spec KERNEL sets arch (Debian's name of it), meta (the package that
# depends on the current ABI's image), want (the upstream version the image
# must have, a shell pattern) and base (the cache and apt name: 6.12-legacy
# boots 6.12; run_kernel takes -dkms off after telling legacy).
kernel_spec() {
	base=${1%-legacy}
	case $1 in
	5.10)           arch=amd64 meta=linux-image-amd64     want='5.10.*' ;;
	6.1)            arch=amd64 meta=linux-image-amd64     want='6.1.*' ;;
	6.12|6.12-legacy|6.12-dkms) arch=amd64 meta=linux-image-amd64 want='6.12.*' ;;
	7.x)            arch=amd64 meta=linux-image-amd64     want='7.*' ;;
	arm64-6.1)      arch=arm64 meta=linux-image-arm64     want='6.1.*' ;;
	arm64-6.12)     arch=arm64 meta=linux-image-arm64     want='6.12.*' ;;
	arm64-6.12-16k) arch=arm64 meta=linux-image-arm64-16k want='6.12.*' ;;
	*) return 1 ;;
	esac
}
[ $# -ge 2 ] || usage
build_dir=$(realpath "$1"); shift
source_dir=$(realpath "$(dirname "$0")/../..")
out_dir=$build_dir/tests/vm
backends=${LIBDIRTY_VM_BACKENDS:-uffd-async uffd-sync soft-dirty mprotect mapping}
# every suite on every guest, but for two arm64 guests (see guest_suites)
suites_all=${LIBDIRTY_VM_SUITES:-core thp hugetlb stress}
accel=${LIBDIRTY_VM_ACCEL:-tcg}
guest_timeout=${LIBDIRTY_VM_TIMEOUT:-1500}
cell_timeout=${LIBDIRTY_VM_CELL_TIMEOUT:-600}
stress_writes=${LIBDIRTY_VM_STRESS_WRITES:-200000}
stress_rounds=${LIBDIRTY_VM_STRESS_ROUNDS:-200}
dirtymap_reclaim=${LIBDIRTY_VM_DIRTYMAP_RECLAIM:-192 48 10}
race_seconds=${LIBDIRTY_VM_RACE_SECONDS:-20}
for k in "$@"; do
	kernel_spec "$k" || usage
done
for f in tests/test-conformance tests/test-api tests/test-numa tests/test-image tests/test-exact tools/dirtyctl; do
	[ -x "$build_dir/$f" ] || { echo "vm: $build_dir/$f is not built" >&2; exit 1; }
done

# ---- host requirements ------------------------------------------------------
# command -> Debian package; scripts/deps.sh installs the same list.
declare -A tool_package=(
	[qemu-system-x86_64]=qemu-system-x86 [cpio]=cpio [mkfs.ext4]=e2fsprogs
	[xz]=xz-utils [depmod]=kmod [modprobe]=kmod [dpkg-deb]=dpkg [apt-get]=apt
	[python3]=python3 [flock]=util-linux [timeout]=coreutils [gzip]=gzip)
# arm64 guests: the emulator, the cross compiler, its C library
case " $* " in *" arm64-"*)
	tool_package+=([qemu-system-aarch64]=qemu-system-arm [aarch64-linux-gnu-gcc]=gcc-aarch64-linux-gnu
		[aarch64-linux-gnu-readelf]=binutils-aarch64-linux-gnu) ;;
esac
missing_tools() {
	local t
	for t in "${!tool_package[@]}"; do
		PATH=$PATH:/usr/sbin:/sbin command -v "$t" >/dev/null || echo "$t"
	done
	# a dynamically linked busybox would need its libraries in the guest
	[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || echo busybox-static
}
if [ -n "$(missing_tools)" ]; then
	if [ "$(id -u)" = 0 ]; then
		echo "vm: missing $(missing_tools | tr '\n' ' '); running scripts/deps.sh"
		bash "$source_dir/scripts/deps.sh"
	fi
	if [ -n "$(missing_tools)" ]; then
		echo "SKIP: missing host tools: $(missing_tools | tr '\n' ' ')(run scripts/deps.sh as root)"
		exit 77
	fi
fi
export PATH=$PATH:/usr/sbin:/sbin    # depmod, mkfs.ext4 for a non-root user

cache=${LIBDIRTY_VM_CACHE:-/var/cache/libdirty-vm}
if [ -z "${LIBDIRTY_VM_CACHE:-}" ] && ! mkdir -p "$cache" 2>/dev/null; then
	cache=${XDG_CACHE_HOME:-$HOME/.cache}/libdirty-vm
fi
mkdir -p "$cache" "$out_dir"

# The suites a guest runs, trimmed where TCG's time buys nothing new (CI's
# budget, tests/vm/meson.build): arm64-6.12-16k runs no stress (the races
# it checks do not depend on the page size, and arm64-6.12 runs them on
# the same kernel), arm64-6.1 neither (only mprotect is usable there, and
# arm64-6.12 stresses mprotect on arm64).  LIBDIRTY_VM_SUITES overrides.
guest_suites() {
	if [ -n "${LIBDIRTY_VM_SUITES:-}" ]; then
		echo "$suites_all"
		return
	fi
	case $1 in
	arm64-6.12-16k|arm64-6.1) echo "core thp hugetlb" ;;
	*) echo "$suites_all" ;;
	esac
}

# ---- 1. the kernel package ---------------------------------------------------
# Each kernel has its own apt configuration under $cache/KERNEL/apt: only its
# suites are in the source list, lists and package caches are private, and the
# system's sources, lists and dpkg database are never written.
apt_suites() {
	local deb="deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org"
	case $1 in
	5.10) printf '%s\n' "$deb/debian bullseye main" "$deb/debian bullseye-updates main" \
	              "$deb/debian-security bullseye-security main" ;;
	6.1|arm64-6.1|arm64-root|amd64-root)
	      printf '%s\n' "$deb/debian bookworm main" "$deb/debian bookworm-updates main" \
	              "$deb/debian-security bookworm-security main" ;;
	6.12|arm64-6.12|arm64-6.12-16k) printf '%s\n' "$deb/debian bookworm-backports main" ;;
	# the newest 7.x Debian builds for a released suite (sid has 7.2)
	7.x)  printf '%s\n' "$deb/debian trixie-backports main" ;;
	esac
}

# Sets apt_opts (declare it local) to KERNEL's private apt configuration
# (arm64-root: the arm64 guests' packages), for its architecture only.
apt_options() {
	local k=$1 dir=$cache/$1 arch
	case $k in arm64-*) arch=arm64 ;; *) arch=amd64 ;; esac
	mkdir -p "$dir/apt/lists/partial" "$dir/apt/cache/archives/partial"
	apt_suites "$k" > "$dir/apt/sources.list"
	apt_opts=(-o "Dir::Etc::SourceList=$dir/apt/sources.list"
		-o Dir::Etc::SourceParts=/dev/null
		-o "Dir::State::Lists=$dir/apt/lists"
		-o "Dir::Cache=$dir/apt/cache"
		-o "APT::Architecture=$arch" -o "APT::Architectures::=$arch")
	# as root apt drops to _apt for downloads, which cannot write here
	[ "$(id -u)" = 0 ] && apt_opts+=(-o APT::Sandbox::User=root)
	return 0
}

# Sets kernel_root (the unpacked package), kernel_release (uname -r),
# kernel_package and kernel_version.  Downloads only what is not cached.
fetch_kernel() {
	local k=$1 dir=$cache/$1 pkg p deb arch meta want base
	local -a apt_opts
	kernel_spec "$k"
	mkdir -p "$dir"
	exec 9>"$dir/lock"
	flock 9                        # two runs share the cache safely
	[ "${LIBDIRTY_VM_REFRESH:-0}" = 1 ] && rm -rf "$dir/kernel.env" "$dir/root" "$dir"/*.deb
	if [ ! -f "$dir/kernel.env" ]; then
		apt_options "$k"
		echo "vm $k: refreshing the package lists of: $(apt_suites "$k" | cut -d' ' -f4 | tr '\n' ' ')"
		apt-get "${apt_opts[@]}" -qq update
		# linux-image-amd64 depends on the current ABI's signed image,
		# e.g. linux-image-6.1.0-57-amd64 or linux-image-6.12.95+deb12-arm64-16k
		pkg=$(apt-cache "${apt_opts[@]}" depends "$meta" |
			awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
		# shellcheck disable=SC2254
		case $pkg in
		linux-image-$want) ;;
		*) echo "vm $k: $meta resolves to '$pkg', not a $k kernel" >&2; return 1 ;;
		esac
		# the signed image carries the modules too; -unsigned is the same build
		rm -f "$dir"/*.deb
		for p in "$pkg" "$pkg-unsigned"; do
			kernel_version=$(apt-cache "${apt_opts[@]}" policy "$p" |
				awk '$1 == "Candidate:" { print $2 }')
			case $kernel_version in ''|'(none)') continue ;; esac
			echo "vm $k: downloading $p $kernel_version"
			if (cd "$dir" && apt-get "${apt_opts[@]}" -qq download "$p=$kernel_version"); then
				kernel_package=$p
				break
			fi
		done
		deb=$(find "$dir" -maxdepth 1 -name '*.deb' | head -n1)
		[ -n "$deb" ] || { echo "vm $k: cannot download $pkg" >&2; return 1; }
		# Debian's 7.x packages split the image: linux-image-R depends on
		# linux-binary-R (the kernel), linux-modules-R and linux-base-R
		# (config, modules.builtin) of the same version
		for p in $(apt-cache "${apt_opts[@]}" depends "$kernel_package=$kernel_version" |
			   awk '$1 == "Depends:" && $2 ~ /^linux-(binary|modules|base)-[0-9]/ { print $2 }'); do
			echo "vm $k: downloading $p $kernel_version"
			(cd "$dir" && apt-get "${apt_opts[@]}" -qq download "$p=$kernel_version") || return 1
		done
		rm -rf "$dir/root" "$dir/root.new"
		for deb in "$dir"/*.deb; do
			dpkg-deb -x "$deb" "$dir/root.new"
		done
		# merged /usr (7.x): the modules and the image live under usr/
		[ -d "$dir/root.new/lib/modules" ] || [ ! -d "$dir/root.new/usr/lib/modules" ] ||
			ln -s usr/lib "$dir/root.new/lib"
		[ -d "$dir/root.new/boot" ] || [ ! -d "$dir/root.new/usr/boot" ] ||
			ln -s usr/boot "$dir/root.new/boot"
		kernel_release=$(ls "$dir/root.new/lib/modules")
		[ -n "$kernel_release" ] || { echo "vm $k: no modules in $kernel_package" >&2; return 1; }
		mkdir -p "$dir/root.new/boot"
		[ -e "$dir/root.new/boot/vmlinuz-$kernel_release" ] ||
			ln -s "../lib/modules/$kernel_release/vmlinuz" "$dir/root.new/boot/vmlinuz-$kernel_release"
		# the .deb has no modules.dep (the postinst makes it): make it here,
		# so that modprobe --show-depends can order the guest's insmods
		depmod -b "$dir/root.new" "$kernel_release"
		mv "$dir/root.new" "$dir/root"
		printf 'kernel_package=%s\nkernel_version=%s\nkernel_release=%s\n' \
			"$kernel_package" "$kernel_version" "$kernel_release" > "$dir/kernel.env.new"
		mv "$dir/kernel.env.new" "$dir/kernel.env"
	fi
	# shellcheck disable=SC1091
	. "$dir/kernel.env"
	kernel_root=$dir/root
	exec 9>&-
	[ -f "$kernel_root/boot/vmlinuz-$kernel_release" ] ||
		{ echo "vm $k: no vmlinuz in the cache; rerun with LIBDIRTY_VM_REFRESH=1" >&2; return 1; }
}

# ---- 1b. the dirtymap module (6.12) -------------------------------------------
# Debian's linux-headers-RELEASE, linux-headers-VER-common and linux-kbuild-VER
# of the kernel fetch_kernel chose, downloaded and unpacked like it (never
# installed) under $cache/KERNEL/hdr.  Sets headers_dir.
fetch_headers() {
	local k=$1 dir=$cache/$1 hdr=$cache/$1/hdr p deb kver=${kernel_release%-amd64}
	local -a apt_opts
	apt_options "$k"
	exec 9>"$dir/lock"
	flock 9
	headers_dir=$hdr/root/usr/src/linux-headers-$kernel_release
	if [ "$(cat "$hdr/headers.env" 2>/dev/null)" != "$kernel_release $kernel_version" ]; then
		rm -rf "$hdr"
		mkdir -p "$hdr"
		for p in "linux-headers-$kernel_release" "linux-headers-$kver-common" "linux-kbuild-$kver"; do
			echo "vm $k: downloading $p $kernel_version"
			if ! (cd "$hdr" && apt-get "${apt_opts[@]}" -qq download "$p=$kernel_version"); then
				# lists older than the cached kernel: refresh once
				apt-get "${apt_opts[@]}" -qq update
				(cd "$hdr" && apt-get "${apt_opts[@]}" -qq download "$p=$kernel_version")
			fi
		done
		for deb in "$hdr"/*.deb; do
			dpkg-deb -x "$deb" "$hdr/root"
		done
		[ -f "$headers_dir/Makefile" ] && [ -d "$hdr/root/usr/lib/linux-kbuild-$kver" ] ||
			{ echo "vm $k: the headers packages did not download" >&2; exec 9>&-; return 1; }
		# the headers' Makefile includes the common tree by its installed
		# path, /usr/src/...: point it at the unpacked one
		printf 'include $(dir $(realpath $(lastword $(MAKEFILE_LIST))))../linux-headers-%s-common/Makefile\n' \
			"$kver" > "$headers_dir/Makefile"
		echo "$kernel_release $kernel_version" > "$hdr/headers.env"
	fi
	exec 9>&-
}

# Builds dirtymap.ko against the headers and dirtymap-test into
# $out_dir/dirtymap-KERNEL; returns 1 (and says why) when it cannot.
build_dirtymap() {
	local k=$1 out=$out_dir/dirtymap-$1 source=${2:-} t
	for t in make gcc-12; do
		command -v $t >/dev/null ||
			{ echo "vm $k: $t is missing: cannot build the dirtymap module (apt-get install $t)" >&2; return 1; }
	done
	fetch_headers "${k%-legacy}" || return 1
	echo "vm $k: building dirtymap.ko against ${headers_dir##*/}"
	if ! JOBS=2 nice -n 10 "$source_dir/kernel/build-module.sh" "$headers_dir" "$out" $source > "$out.log" 2>&1; then
		echo "vm $k: kernel/build-module.sh failed ($out.log):" >&2
		tail -n 20 "$out.log" >&2
		return 1
	fi
	# the version 1 module (a SOURCE given) speaks only to the race test
	local tests="dirtymap-test dirtymap-race"
	[ -n "$source" ] && tests=dirtymap-race
	for t in $tests; do
		"${CC:-cc}" -O2 -Wall -I "$source_dir/kernel/include/uapi" -o "$out/$t" \
			"$source_dir/kernel/tests/$t.c" || return 1
	done
}

# ---- 1d. the dirtymap module through DKMS (6.12-dkms) ------------------------
# What the dirtymap-dkms package installed (/usr/src/dirtymap-VERSION and its
# dkms.conf, found with dpkg-query -L), or LIBDIRTY_VM_DKMS_SOURCE: DKMS adds
# and builds it in a private tree ($out_dir/dkms-KERNEL; the system's
# /var/lib/dkms is not touched) for the 6.12 kernel, against its headers
# unpacked as for 6.12 (dkms --kernelsourcedir): the make line of the
# package's dkms.conf, its BUILD_EXCLUSIVE rules, DKMS's own steps.  Returns
# 77 (saying why) when there is no package to build, 1 when DKMS fails.
build_dirtymap_dkms() {
	local k=$1 out=$out_dir/dirtymap-$1 tree=$out_dir/dkms-$1 conf srcroot name version ko t
	if ! command -v dkms >/dev/null; then
		echo "SKIP: dkms is not installed (scripts/deps.sh installs it)"
		return 77
	fi
	if [ -n "${LIBDIRTY_VM_DKMS_SOURCE:-}" ]; then
		conf=$(ls "$LIBDIRTY_VM_DKMS_SOURCE"/dirtymap-*/dkms.conf 2>/dev/null | head -n1)
		[ -n "$conf" ] || { echo "vm $k: no dirtymap-*/dkms.conf in $LIBDIRTY_VM_DKMS_SOURCE" >&2; return 1; }
	else
		conf=$(dpkg-query -L dirtymap-dkms 2>/dev/null | grep -E '^/usr/src/dirtymap-[^/]+/dkms.conf$' | head -n1)
		if [ -z "$conf" ]; then
			echo "SKIP: the dirtymap-dkms package is not installed (build and install the packages:" \
				"scripts/build-debs.sh, then apt-get install ./build-deb/*.deb; scripts/test.sh does)"
			return 77
		fi
		echo "vm $k: dirtymap-dkms $(dpkg-query -W -f='${Version}' dirtymap-dkms) is installed: $conf"
	fi
	srcroot=$(dirname "$(dirname "$conf")")
	name=$(sed -n 's/^PACKAGE_NAME="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$conf")
	version=$(sed -n 's/^PACKAGE_VERSION="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$conf")
	[ "$srcroot/$name-$version/dkms.conf" = "$conf" ] ||
		{ echo "vm $k: $conf does not name its own directory ($name-$version)" >&2; return 1; }
	fetch_headers "${k%-dkms}" || return 1
	rm -rf "$tree" "$out"
	mkdir -p "$tree" "$out"
	echo "vm $k: dkms add and build $name $version for $kernel_release (headers ${headers_dir##*/})"
	if ! { dkms add -m "$name" -v "$version" --sourcetree "$srcroot" --dkmstree "$tree" &&
	       nice -n 10 dkms build -m "$name" -v "$version" -k "$kernel_release" -a x86_64 \
			--sourcetree "$srcroot" --dkmstree "$tree" --kernelsourcedir "$headers_dir"; } \
		> "$out.log" 2>&1; then
		echo "vm $k: DKMS failed ($out.log):" >&2
		tail -n 20 "$out.log" >&2
		find "$tree" -name make.log -exec tail -n 20 {} + >&2
		return 1
	fi
	ko=$(find "$tree/$name/$version/$kernel_release" -path '*/module/dirtymap.ko*' | head -n1)
	case $ko in
	'') echo "vm $k: DKMS built no dirtymap.ko ($out.log)" >&2; return 1 ;;
	*.xz) xz -dc "$ko" > "$out/dirtymap.ko" ;;
	*.gz) gzip -dc "$ko" > "$out/dirtymap.ko" ;;
	*.zst) zstd -qdc "$ko" > "$out/dirtymap.ko" ;;
	*) cp "$ko" "$out/dirtymap.ko" ;;
	esac
	echo "vm $k: ${ko#"$tree"/} ($(modinfo -F vermagic "$out/dirtymap.ko" 2>/dev/null | cut -d' ' -f1))"
	for t in dirtymap-test dirtymap-race; do
		"${CC:-cc}" -O2 -Wall -I "$source_dir/kernel/include/uapi" -o "$out/$t" \
			"$source_dir/kernel/tests/$t.c" || return 1
	done
}

# ---- 1c. guest roots and the arm64 build ---------------------------------------
# ARCH-root (amd64-root, arm64-root): Debian 12 packages of the guest's
# architecture, downloaded like the kernels and unpacked (never installed)
# under $cache/ARCH-root/root: python3 for the attach cell (tests/test-attach.py
# runs in the guest as on the host) and, for arm64, the C library, busybox and
# the libraries the tests link (their -dev packages make the sysroot that
# the cross build links against).  Sets root_dir.
root_packages() {
	# python3.11 and what its modules load for test-attach.py (ctypes, json,
	# subprocess, select, tempfile)
	echo python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libffi8 zlib1g \
		libexpat1 libbz2-1.0 liblzma5 libuuid1 libncursesw6 libtinfo6 libreadline8 \
		libsqlite3-0 libdb5.3 libgdbm6 libssl3 libcrypt1 libc6 libgcc-s1 mime-support media-types
	# pytest (test-attach.py runs under it, tests/conftest.py) and what it imports
	echo python3-pytest python3-pytest-timeout python3-pluggy python3-iniconfig \
		python3-packaging python3-py python3-attr python3-more-itertools python3-pkg-resources
	# setpriv (util-linux's: busybox's cannot change uid), for the tests as nobody
	echo util-linux libcap-ng0
	[ "$1" = arm64 ] && echo busybox-static check libsubunit0 libsubunit-dev liburing2 \
		liburing-dev libnuma1 libnuma-dev libc6-dev
	return 0
}

fetch_root() {
	local arch=$1 k=$1-root dir=$cache/$1-root p deb want
	local -a apt_opts
	want=$(root_packages "$arch" | tr -s ' \n' ' ')
	root_dir=$dir/root
	mkdir -p "$dir"
	exec 9>"$dir/lock"
	flock 9
	if [ "$(cat "$dir/root.env" 2>/dev/null)" != "$want" ] || [ "${LIBDIRTY_VM_REFRESH:-0}" = 1 ]; then
		apt_options "$k"
		echo "vm: the $arch guest root: refreshing the package lists of: $(apt_suites "$k" | cut -d' ' -f4 | tr '\n' ' ')"
		apt-get "${apt_opts[@]}" -qq update
		rm -rf "$dir/debs" "$dir/root" "$dir/root.new"
		mkdir -p "$dir/debs"
		for p in $want; do
			(cd "$dir/debs" && apt-get "${apt_opts[@]}" -qq download "$p") ||
				{ echo "vm: cannot download $p ($arch)" >&2; exec 9>&-; return 1; }
		done
		for deb in "$dir"/debs/*.deb; do
			dpkg-deb -x "$deb" "$dir/root.new"
		done
		mv "$dir/root.new" "$dir/root"
		echo "$want" > "$dir/root.env"
	fi
	exec 9>&-
}

# The test binaries for arm64, cross-built from this source with
# gcc-aarch64-linux-gnu against the arm64 root (tests/vm/cross-aarch64.ini,
# and the sysroot's paths in a generated second cross file) in
# BUILD_DIR/tests/vm/cross-aarch64, and kept in $cache/arm64-bin/KEY, KEY
# a hash of what they are made of (the sources the build reads, the cross
# files, the root's packages, the compiler's version): a fresh clone of the
# same source finds them there and builds nothing.  Sets cross_dir.
cross_files=(tests/attach-target tests/test-conformance tests/test-api tests/test-image
	tests/test-exact tests/test-numa tools/dirtyctl)
cross_key() {
	{
		if git -C "$source_dir" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
			(cd "$source_dir" && git ls-files -z -- meson.build meson_options.txt include \
				libdirty tools tests ':!tests/vm' tests/vm/cross-aarch64.ini |
				xargs -0 sha256sum) || true
		else
			(cd "$source_dir" && find meson.build meson_options.txt include libdirty tools \
				tests -path tests/vm -prune -o -type f -print0 | sort -z |
				xargs -0 sha256sum; sha256sum tests/vm/cross-aarch64.ini) || true
		fi
		cat "$1" "$cache/arm64-root/root.env"
		aarch64-linux-gnu-gcc --version | head -n1
	} | sha256sum | cut -c1-16
}

build_cross() {
	local sysroot=$root_dir ini=$out_dir/cross-aarch64-sysroot.ini key bin_cache f
	cross_dir=$out_dir/cross-aarch64
	cat > "$ini.new" <<-INI
	[constants]
	sysroot = '$sysroot'
	[properties]
	sys_root = sysroot
	pkg_config_libdir = sysroot + '/usr/lib/aarch64-linux-gnu/pkgconfig'
	[built-in options]
	c_link_args = ['-Wl,-rpath-link,' + sysroot + '/usr/lib/aarch64-linux-gnu', '-Wl,-rpath-link,' + sysroot + '/lib/aarch64-linux-gnu']
	cpp_link_args = c_link_args
	INI
	key=$(cross_key "$ini.new")
	bin_cache=$cache/arm64-bin/$key
	mkdir -p "$cache/arm64-bin"
	exec 8>"$cache/arm64-bin/lock"
	flock 8
	if [ -f "$bin_cache/complete" ]; then
		echo "vm: the arm64 test binaries of this source are cached: $bin_cache"
		touch "$bin_cache"
		cross_dir=$bin_cache
		rm -f "$ini.new"
		exec 8>&-
		return 0
	fi
	if ! cmp -s "$ini" "$ini.new" || [ ! -f "$cross_dir/build.ninja" ]; then
		mv "$ini.new" "$ini"
		rm -rf "$cross_dir"
		echo "vm: configuring the arm64 cross build ($cross_dir)"
		meson setup "$cross_dir" "$source_dir" --cross-file "$source_dir/tests/vm/cross-aarch64.ini" \
			--cross-file "$ini" -Dwerror=true -Dtests=enabled -Dliburing=enabled -Dnuma=enabled \
			> "$cross_dir.log" 2>&1 || { cat "$cross_dir.log" >&2; exec 8>&-; return 1; }
	fi
	rm -f "$ini.new"
	echo "vm: building the arm64 test binaries (then cached in $bin_cache)"
	nice -n 10 ninja -C "$cross_dir" "${cross_files[@]}" libdirty.so.0.1.0 \
		>> "$cross_dir.log" 2>&1 || { tail -n 40 "$cross_dir.log" >&2; exec 8>&-; return 1; }
	rm -rf "$bin_cache.new"
	mkdir -p "$bin_cache.new/tests" "$bin_cache.new/tools"
	for f in "${cross_files[@]}"; do
		cp "$cross_dir/$f" "$bin_cache.new/$f"
	done
	cp -P "$cross_dir"/libdirty.so "$cross_dir"/libdirty.so.0 "$cross_dir"/libdirty.so.0.1.0 "$bin_cache.new/"
	touch "$bin_cache.new/complete"
	mv "$bin_cache.new" "$bin_cache"
	# the three newest sources' binaries stay
	ls -1dt "$cache"/arm64-bin/*/ | tail -n +4 | xargs -r rm -rf
	exec 8>&-
}

# The shared libraries an arm64 ELF file needs, recursively, as paths: the
# cross build's own, then the arm64 root's (ldd cannot run arm64 programs).
arm64_needs() {
	local f=$1 lib d
	aarch64-linux-gnu-readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' |
	while read -r lib; do
		for d in "$cross_dir" "$root_dir/lib/aarch64-linux-gnu" "$root_dir/usr/lib/aarch64-linux-gnu"; do
			if [ -e "$d/$lib" ]; then
				echo "$d/$lib"
				arm64_needs "$d/$lib"
				break
			fi
		done
	done | sort -u
}

# ---- 2. the initramfs -----------------------------------------------------
# The binaries are BUILD_DIR's own, dynamically linked, with the libraries ldd
# resolves for them: the guest runs exactly what the host's suite runs, and no
# second (static) configuration of the build, of check and of libsubunit is
# needed.  Debian's ld.so searches /lib/x86_64-linux-gnu without ld.so.cache.
guest_modules=(virtio_pci virtio_blk ext4)

build_initramfs() {
	local k=$1 stage=$2 initrd=$3 bin lib m bins=$build_dir
	mkdir -p "$stage"/{bin,dev,proc,sys,tmp,mnt,etc,opt/libdirty,lib/x86_64-linux-gnu,lib64,lib/modules}
	# the guest root's packages first (python3; for arm64 also the C library
	# and busybox): what is copied from the build after them wins
	cp -a "$root_dir"/. "$stage"/
	rm -rf "$stage/usr/share/doc" "$stage/usr/share/man" "$stage/usr/include" "$stage/usr/share/locale"
	if [ "$arch" = arm64 ]; then
		bins=$cross_dir
		mkdir -p "$stage/lib/aarch64-linux-gnu"
		cp "$stage/usr/lib/aarch64-linux-gnu/libdirty.so.0" "$stage/lib/aarch64-linux-gnu/" 2>/dev/null || true
		cp -L "$cross_dir/libdirty.so.0" "$stage/lib/aarch64-linux-gnu/"
		mv "$stage/bin/busybox" "$stage/bin/busybox.real" 2>/dev/null || true
		cp "$root_dir/bin/busybox" "$stage/bin/busybox"
		rm -f "$stage/bin/busybox.real"
	else
		cp /bin/busybox "$stage/bin/busybox"
	fi
	# the attach cell: test-attach.py with dirtyctl, attach-target and
	# libdirty.so laid out as in a build directory
	mkdir -p "$stage/opt/libdirty/build/tools" "$stage/opt/libdirty/build/tests"
	cp "$source_dir/tests/test-attach.py" "$source_dir/tests/conftest.py" \
		"$source_dir/tests/harness.py" "$stage/opt/libdirty/"
	cp "$bins/tests/attach-target" "$stage/opt/libdirty/build/tests/"
	cp "$bins/tools/dirtyctl" "$stage/opt/libdirty/build/tools/"
	cp -L "$bins/libdirty.so" "$stage/opt/libdirty/build/libdirty.so"
	if [ "$arch" = arm64 ]; then
		for bin in "$cross_dir/tests/test-conformance" "$cross_dir/tests/test-api" \
			   "$cross_dir/tests/test-image" "$cross_dir/tests/test-exact" \
			   "$cross_dir/tests/test-numa" "$cross_dir/tools/dirtyctl" \
			   ${LIBDIRTY_VM_EXEC:+"$LIBDIRTY_VM_EXEC"}; do
			cp "$bin" "$stage/opt/libdirty/"
		done
		for lib in $(arm64_needs "$cross_dir/tests/test-conformance"; arm64_needs "$cross_dir/tests/test-numa";
			     arm64_needs "$cross_dir/tests/test-image"); do
			cp -L "$lib" "$stage/lib/aarch64-linux-gnu/"
		done
	fi
	[ "$arch" = arm64 ] ||
	for bin in "$build_dir/tests/test-conformance" "$build_dir/tests/test-api" \
		   "$build_dir/tests/test-image" "$build_dir/tests/test-exact" \
		   "$build_dir/tests/test-numa" "$build_dir/tools/dirtyctl" \
		   $(ls "${dirtymap_dir:-/nonexistent}"/dirtymap-test "${dirtymap_dir:-/nonexistent}"/dirtymap-race 2>/dev/null || true) \
		   ${syncd:+"$build_dir/tools/dirty-syncd" "$build_dir/tests/test-syncd" "$build_dir/tests/test-syncd-hostile"} \
		   ${LIBDIRTY_VM_EXEC:+"$LIBDIRTY_VM_EXEC"}; do
		cp "$bin" "$stage/opt/libdirty/"
		ldd "$bin" | awk '/=> \// { print $3 } /^\t\// { print $1 }' |
		while read -r lib; do
			case $lib in
			# rm: the guest root's libc6 has lib64/ld-linux-x86-64.so.2
			# as a symbolic link to the host's own path
			/lib64/*|/lib/*|/usr/lib/*) mkdir -p "$stage$(dirname "$lib")"
				rm -f "$stage$lib"
				cp -L "$lib" "$stage$lib" ;;
			*) cp -L "$lib" "$stage/lib/x86_64-linux-gnu/" ;;  # libdirty.so.0
			esac
		done
	done
	# virtio disk and ext4 for the working directory; modprobe resolves the
	# order, the hard dependencies and the softdeps (crc32c); builtins print
	# "builtin" and are left out.  6.12 ships .ko.xz: decompress here, busybox
	# insmod in the guest takes plain .ko only.
	modprobe -d "$kernel_root" -S "$kernel_release" --show-depends -a "${guest_modules[@]}" |
	awk '$1 == "insmod" && !seen[$2]++ { print $2 }' |
	while read -r m; do
		local name=${m##*/}
		name=${name%.xz}
		case $m in
		*.xz) xz -dc "$m" > "$stage/lib/modules/$name" ;;
		*) cp "$m" "$stage/lib/modules/$name" ;;
		esac
		echo "$name" >> "$stage/lib/modules/order"
	done
	[ -n "$dirtymap_dir" ] && cp "$dirtymap_dir/dirtymap.ko" "$stage/opt/libdirty/"
	cat > "$stage/etc/vm.conf" <<-EOF
	backends="$backends"
	suites="$suites"
	cell_timeout=$cell_timeout
	exec_debug="${LIBDIRTY_VM_EXEC:+/opt/libdirty/${LIBDIRTY_VM_EXEC##*/}}"
	stress_writes=$stress_writes
	stress_rounds=$stress_rounds
	dirtymap_reclaim="$dirtymap_reclaim"
	race_seconds=$race_seconds
	legacy=$legacy
	cells="$vm_cells"
	python=$(cd "$stage" && ls usr/bin/python3.11 2>/dev/null)
	EOF
	write_init > "$stage/init"
	chmod 755 "$stage/init"
	(cd "$stage" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 > "$initrd"
}

# The guest's PID 1.  Output goes to the serial console; every line the host
# reads starts with @@LIBDIRTY.  No set -e: one failing step must not stop the
# other cells.
write_init() {
	cat <<-'EOF'
	#!/bin/busybox sh
	/bin/busybox --install -s /bin
	export PATH=/bin
	. /etc/vm.conf
	mark() { echo "@@LIBDIRTY $*"; }
	want() { [ "$cells" = all ] || case " $cells " in *" $1 "*) ;; *) false ;; esac; }
	now() { cut -d' ' -f1 /proc/uptime; }
	mount -t proc proc /proc
	mount -t sysfs sysfs /sys
	mount -t devtmpfs devtmpfs /dev
	mount -t tmpfs tmpfs /tmp
	mkdir -p /dev/shm && mount -t tmpfs tmpfs /dev/shm
	mark "boot uptime=$(now) kernel=$(uname -r) machine=$(uname -m) page=$(awk '/^KernelPageSize/ { print $2 $3; exit }' /proc/self/smaps)"

	# the "file" memory kind needs a disk file system: ext4 on the virtio disk
	for m in $(cat /lib/modules/order); do
		insmod /lib/modules/$m 2>/dev/null && continue
		case $m in
		crc32c-intel.ko) ;;  # needs SSE4.2, which qemu's TCG CPU lacks: crc32c_generic serves
		*) echo "insmod $m failed" ;;
		esac
	done
	i=0
	while [ ! -b /dev/vda ] && [ $i -lt 20 ]; do sleep 1; i=$((i + 1)); done
	mkdir -p /mnt/disk
	if mount -t ext4 /dev/vda /mnt/disk && mkdir -p /mnt/disk/work; then
		cd /mnt/disk/work
		mark "workdir fs=ext4 dev=/dev/vda"
	else
		mkdir -p /tmp/work && cd /tmp/work
		mark "workdir fs=tmpfs"
		echo "WARNING: no ext4 disk: the file memory kind is shmem-backed (tmpfs) in this guest"
	fi

	echo 16 > /proc/sys/vm/nr_hugepages
	mark "hugepages=$(cat /proc/sys/vm/nr_hugepages)"
	mark "thp=$(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null)"
	mark "cpus=$(grep -c ^processor /proc/cpuinfo) mem=$(awk '/MemTotal/ { print $2 $3 }' /proc/meminfo)"
	mark "numa nodes=$(cat /sys/devices/system/node/online 2>/dev/null) $(for n in /sys/devices/system/node/node[0-9]*; do
		printf '%s:cpus=%s,%s ' ${n##*/} $(cat $n/cpulist) $(awk '/MemTotal/ { print $4 $5 }' $n/meminfo); done)"

	# the dirtymap device (6.12): before the probe, which must find it
	if [ -f /opt/libdirty/dirtymap.ko ]; then
		insmod /opt/libdirty/dirtymap.ko
		mark "dirtymap insmod rc=$? dev=$(ls /dev/dirtymap 2>/dev/null)"
	fi

	# collects racing page migration and compaction (dirtymap-race); the
	# kernel's log is part of the verdict
	race_cell() {
		mark "begin cell=race"
		t0=$(now)
		dmesg -c >/dev/null
		timeout -s KILL $cell_timeout /opt/libdirty/dirtymap-race --seconds $race_seconds
		rc=$?
		kill -KILL -1 2>/dev/null
		if dmesg | grep -qE 'Bad page|BUG:|WARNING:|Oops|general protection'; then
			echo "not ok - the kernel logged errors during dirtymap-race:"
			dmesg | grep -E -A8 'Bad page|BUG:|WARNING:|Oops|general protection' | head -n 40
			[ $rc = 0 ] && rc=1
		fi
		mark "cell=race rc=$rc secs=$(awk -v a=$t0 -v b=$(now) 'BEGIN { printf "%.1f", b - a }')"
	}
	# the negative control (6.12-legacy): version 1 of the module, the race only
	if [ "$legacy" = 1 ]; then
		[ -n "$exec_debug" ] && $exec_debug
		[ -x /opt/libdirty/dirtymap-race ] && want race && race_cell
		mark "done uptime=$(now)"
		poweroff -f
	fi

	/opt/libdirty/dirtyctl probe
	mark "probe-json $(/opt/libdirty/dirtyctl probe --json)"
	[ -n "$exec_debug" ] && $exec_debug

	# Check's per-test timeouts are set for the host; TCG is far slower.
	export CK_DEFAULT_TIMEOUT=60 CK_TIMEOUT_MULTIPLIER=5

	# the API suite: probing and the fallback paths, on this kernel
	if want api; then
		mark "begin cell=api"
		timeout -s KILL $cell_timeout /opt/libdirty/test-api
		mark "cell=api rc=$? secs=0"
	fi

	# images: the writer on this kernel (and CRC-32C from tables: TCG has no SSE4.2)
	if want image; then
		mark "begin cell=image"
		timeout -s KILL $cell_timeout /opt/libdirty/test-image
		mark "cell=image rc=$? secs=0"
	fi

	# dirtyctl attach on this kernel: tests/test-attach.py, as on the host
	# (the target unharmed: registers, mask, pending signals, state), with
	# the guest root's python3; dirtyctl attach once more by hand, for the log
	if [ -n "$python" ] && want attach; then
		mark "begin cell=attach"
		t0=$(now)
		ln -sf /usr/bin/python3.11 /bin/python3
		(cd /opt/libdirty && PATH=/usr/bin:/bin PYTHONDONTWRITEBYTECODE=1 \
			timeout -s KILL $cell_timeout /usr/bin/python3.11 -m pytest -p no:cacheprovider --color=no \
			-v -rs --build-dir=/opt/libdirty/build --probe-injection=true test-attach.py)
		rc=$?
		kill -KILL -1 2>/dev/null
		mark "cell=attach rc=$rc secs=$(awk -v a=$t0 -v b=$(now) 'BEGIN { printf "%.1f", b - a }')"
	fi

	# the dirtymap device: its own tests, and a reclaim stress with a swap
	# file on the ext4 disk (memfd, memory cgroup limit, rounds)
	if [ -x /opt/libdirty/dirtymap-test ] && want module; then
		mark "begin cell=module"
		t0=$(now)
		set -- $dirtymap_reclaim
		swap=
		if [ -d /mnt/disk/work ] && dd if=/dev/zero of=/mnt/disk/swapfile bs=1M count=256 2>/dev/null &&
		   chmod 600 /mnt/disk/swapfile && mkswap /mnt/disk/swapfile >/dev/null &&
		   swapon /mnt/disk/swapfile; then
			swap=/mnt/disk/swapfile
		else
			echo "no swap file: the reclaim stress is skipped"
		fi
		dmesg -c >/dev/null
		timeout -s KILL $cell_timeout /opt/libdirty/dirtymap-test --reclaim $1 --cgroup $2 --rounds $3
		rc=$?
		kill -KILL -1 2>/dev/null
		# the kernel must not have complained about page tables meanwhile
		if dmesg | grep -qE 'Bad page|BUG:|WARNING:|Oops'; then
			echo "not ok - the kernel logged errors during dirtymap-test:"
			dmesg | grep -E -A6 'Bad page|BUG:|WARNING:|Oops' | head -n 40
			[ $rc = 0 ] && rc=1
		fi
		[ -n "$swap" ] && swapoff $swap
		rm -f /mnt/disk/swapfile
		mark "cell=module rc=$rc secs=$(awk -v a=$t0 -v b=$(now) 'BEGIN { printf "%.1f", b - a }')"
	fi
	[ -x /opt/libdirty/dirtymap-race ] && race_cell

	# NUMA: exact per-node counts on this guest's two nodes
	if want numa; then
		mark "begin cell=numa"
		t0=$(now)
		DIRTY_TEST_NUMA_NODES=2 timeout -s KILL $cell_timeout /opt/libdirty/test-numa
		rc=$?
		kill -KILL -1 2>/dev/null
		mark "cell=numa rc=$rc secs=$(awk -v a=$t0 -v b=$(now) 'BEGIN { printf "%.1f", b - a }')"
	fi

	export DIRTY_TEST_STRESS_WRITES=$stress_writes DIRTY_TEST_STRESS_ROUNDS=$stress_rounds
	for b in $backends; do
		for s in $suites; do
			mark "begin cell=$b-$s"
			t0=$(now)
			DIRTY_TEST_BACKEND=$b DIRTY_TEST_SUITE=$s \
				timeout -s KILL $cell_timeout /opt/libdirty/test-conformance
			rc=$?
			# a killed run leaves its forked test process behind
			kill -KILL -1 2>/dev/null
			mark "cell=$b-$s rc=$rc secs=$(awk -v a=$t0 -v b=$(now) 'BEGIN { printf "%.1f", b - a }')"
		done
	done
	# uffd-async under DIRTY_TRACKER_SPARSE finds dropped pages on its own
	# (where the kernel has uffd-async), and test-exact's drops
	if echo " $backends " | grep -q " uffd-async " && want sparse; then
		mark "begin cell=uffd-async-sparse-core"
		t0=$(now)
		DIRTY_TEST_BACKEND=uffd-async DIRTY_TEST_SUITE=core DIRTY_TEST_SPARSE=1 \
			timeout -s KILL $cell_timeout /opt/libdirty/test-conformance
		rc=$?
		kill -KILL -1 2>/dev/null
		mark "cell=uffd-async-sparse-core rc=$rc secs=$(awk -v a=$t0 -v b=$(now) 'BEGIN { printf "%.1f", b - a }')"
		mark "begin cell=exact-drops"
		t0=$(now)
		DIRTY_TEST_SUITE=drops timeout -s KILL $cell_timeout /opt/libdirty/test-exact
		rc=$?
		kill -KILL -1 2>/dev/null
		mark "cell=exact-drops rc=$rc secs=$(awk -v a=$t0 -v b=$(now) 'BEGIN { printf "%.1f", b - a }')"
	fi
	# the buffer sync daemon on the dirtymap device
	if [ -x /opt/libdirty/test-syncd ] && want syncd; then
		mark "begin cell=syncd"
		t0=$(now)
		timeout -s KILL $cell_timeout /opt/libdirty/test-syncd --mode mapping --daemon /opt/libdirty/dirty-syncd
		rc=$?
		# next to hostile clients: one that never reads, idle ones, a flood
		for c in never-reads idle flood; do
			[ $rc = 0 ] || break
			echo "test-syncd-hostile --case $c --mode mapping"
			timeout -s KILL $cell_timeout /opt/libdirty/test-syncd-hostile --case $c --mode mapping \
				--daemon /opt/libdirty/dirty-syncd
			rc=$?
		done
		kill -KILL -1 2>/dev/null
		mark "cell=syncd rc=$rc secs=$(awk -v a=$t0 -v b=$(now) 'BEGIN { printf "%.1f", b - a }')"
	fi
	mark "done uptime=$(now)"
	cd /
	umount /mnt/disk 2>/dev/null
	poweroff -f
	EOF
}

# ---- 4. the expected matrix ------------------------------------------------
# Reads the log; prints one line per cell; exits 1 if the matrix is not met.
check_matrix() {
	python3 - "$@" <<-'PY'
	import json, re, sys
	kernel, log, backends, suites = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
	qemu_rc = int(sys.argv[5])
	required = sys.argv[6].split()  # module (6.12), syncd (when built)
	# the kernel's own configuration, the ground truth for what it offers
	config = {}
	for l in open(sys.argv[7], errors="replace") if len(sys.argv) > 7 and sys.argv[7] else []:
	    if l.startswith("CONFIG_") and "=" in l:
	        key, _, value = l.strip().partition("=")
	        config[key] = value
	cells_run = sys.argv[8].split() if len(sys.argv) > 8 else ["all"]  # "all", or the other cells the guest ran
	if kernel.endswith("-legacy"):
	    # the negative control: the race cell must have failed, one way or another
	    lines = [l.rstrip("\r\n").replace("\r", "") for l in open(log, errors="replace")]
	    out, rc, begun = [], None, False
	    for l in lines:
	        if "@@LIBDIRTY begin cell=race" in l:
	            begun = True
	        elif (m := re.search(r"@@LIBDIRTY cell=race rc=(\d+)", l)):
	            rc = int(m.group(1))
	        elif begun and rc is None:
	            out.append(l)
	    why = [l for l in out if l.startswith("not ok") or "kernel:" in l or "BUG" in l or "Bad page" in l]
	    if not begun:
	        verdict, good = "not run (the module did not load, or the guest lacks two nodes)", False
	    elif rc is None:
	        verdict, good = "the guest died while it ran (a kernel crash)", True
	    elif rc == 0:
	        verdict, good = "PASSED: the race test does not catch the unsafe module", False
	    elif rc == 77:
	        verdict, good = "skipped", False
	    else:
	        verdict, good = f"failed (exit {rc})", True
	    print(f"{'race (version 1 module)':<26} {verdict}")
	    for l in why[:12]:
	        print(f"    | {l}")
	    print(f"vm {kernel}: negative control {'OK: the race test catches version 1' if good else 'FAILED'}")
	    sys.exit(0 if good else 1)
	# Every backend must be usable, except these: backend -> a pattern the probe's
	# reason must match, naming a feature the kernel lacks.  6.1 has none of the
	# userfaultfd features WP_UNPOPULATED (6.4), WP_ASYNC (6.7) and of PAGEMAP_SCAN (6.7).
	# mapping needs the dirtymap device, which only the 6.12 guest loads.
	# 5.10: userfaultfd write-protect of anonymous memory only (5.7), none of
	# WP_HUGETLBFS_SHMEM (5.19), WP_UNPOPULATED, WP_ASYNC, PAGEMAP_SCAN.
	# arm64 has no soft-dirty (no HAVE_ARCH_SOFT_DIRTY), and userfaultfd
	# write-protect only from 6.10 (HAVE_ARCH_USERFAULTFD_WP): on 6.1 the
	# kernel refuses UFFD_FEATURE_PAGEFAULT_FLAG_WP, so only mprotect is left.
	no_soft_dirty = r"does not implement soft-dirty|CONFIG_MEM_SOFT_DIRTY"
	not_loaded = r"not loaded"
	unusable = {
	    "5.10": {"uffd-async": r"WP_ASYNC|PAGEMAP_SCAN|WP_UNPOPULATED", "mapping": not_loaded},
	    "6.1": {"uffd-async": r"WP_ASYNC|PAGEMAP_SCAN|WP_UNPOPULATED", "mapping": not_loaded},
	    "6.12": {},
	    "7.x": {"mapping": not_loaded},
	    "arm64-6.1": {"uffd-async": r"PAGEFAULT_FLAG_WP", "uffd-sync": r"PAGEFAULT_FLAG_WP",
	                  "soft-dirty": no_soft_dirty, "mapping": not_loaded},
	    "arm64-6.12": {"soft-dirty": no_soft_dirty, "mapping": not_loaded},
	    "arm64-6.12-16k": {"soft-dirty": no_soft_dirty, "mapping": not_loaded},
	}[kernel.removesuffix("-dkms")]
	lines = [l.rstrip("\r\n").replace("\r", "") for l in open(log, errors="replace")]
	probe, probe_all, cells, output, current, info = None, {}, {}, {}, None, {}
	for l in lines:
	    m = re.search(r"@@LIBDIRTY (.*)$", l)
	    if not m:
	        if current:
	            output[current].append(l)
	        continue
	    word = m.group(1)
	    if word.startswith("probe-json "):
	        try:
	            probe_all = json.loads(word[len("probe-json "):])
	            probe = {b["name"]: b for b in probe_all["backends"]}
	        except (ValueError, KeyError) as e:
	            print(f"probe: cannot parse dirtyctl probe --json: {e}")
	    elif word.startswith("begin cell="):
	        current = word.split("=", 1)[1]
	        output[current] = []
	    elif (c := re.match(r"cell=(\S+) rc=(\d+) secs=(\S+)", word)):
	        cells[c.group(1)] = (int(c.group(2)), c.group(3))
	        current = None
	    else:
	        key, _, value = word.partition("=")
	        info[key.split()[0]] = word
	problems, notes = [], []
	if qemu_rc == 124:
	    problems.append("the guest did not power off in time (LIBDIRTY_VM_TIMEOUT)")
	elif qemu_rc:
	    problems.append(f"qemu exited with status {qemu_rc}")
	for k in ("boot", "workdir", "hugepages", "thp", "cpus", "numa", "dirtymap", "features", "done"):
	    if k == "features" and k not in info:
	        continue
	    if k == "dirtymap" and k not in info:
	        continue
	    print(f"  {info.get(k, k + ': (missing)')}")
	if "workdir" in info and "ext4" not in info["workdir"]:
	    notes.append("the working directory is tmpfs: the file memory kind was shmem-backed")
	if probe is None:
	    problems.append("no probe output from dirtyctl")
	elif config:
	    # what the probe found against what the kernel was built with
	    features = set(probe_all.get("userfaultfd_features", []))
	    print(f"  userfaultfd features: {', '.join(probe_all.get('userfaultfd_features', [])) or 'none'}")
	    print(f"  page size {probe_all.get('page_size')} on {probe_all.get('machine')}")
	    for option, feature in (("CONFIG_HAVE_ARCH_USERFAULTFD_WP", "PAGEFAULT_FLAG_WP"),
	                            ("CONFIG_USERFAULTFD_RWP", "RWP"),
	                            ("CONFIG_USERFAULTFD_RWP", "RWP_ASYNC")):
	        if (config.get(option) == "y") != (feature in features):
	            problems.append(f"probe: {option}={config.get(option, 'unset')} but userfaultfd "
	                            f"features {'lack' if feature not in features else 'have'} {feature}")
	    if "soft-dirty" in probe and (config.get("CONFIG_MEM_SOFT_DIRTY") == "y") != probe["soft-dirty"]["usable"]:
	        problems.append(f"probe: CONFIG_MEM_SOFT_DIRTY={config.get('CONFIG_MEM_SOFT_DIRTY', 'unset')} "
	                        f"but soft-dirty usable={probe['soft-dirty']['usable']}")
	# what automatic selection must pick where the best backends are missing:
	# on 5.10 shared memory and hugetlb go past uffd-sync (write-protect of
	# shmem and hugetlb is 5.19), on arm64 6.1 everything goes to mprotect
	auto_allowed = {
	    "5.10": {"anonymous": ("uffd-sync",), "shared-memory": ("soft-dirty", "mprotect"),
	             "file": ("soft-dirty", "mprotect"), "hugetlb": ("mprotect",)},
	    "arm64-6.1": {k: ("mprotect",) for k in ("anonymous", "shared-memory", "file", "hugetlb")},
	}.get(kernel, {})
	for kind, allowed in auto_allowed.items():
	    got = (probe_all.get("auto_per_kind", {}).get(kind) or {}).get("backend")
	    print(f"  auto {kind:<14} {got}")
	    if got not in allowed:
	        problems.append(f"auto: {kind} memory went to {got}, not {' or '.join(allowed)}")
	if probe is not None:
	    for b in backends:
	        p = probe.get(b)
	        if p is None:
	            problems.append(f"probe: {b} missing from dirtyctl probe --json")
	            continue
	        print(f"  probe {b:<11} {'usable' if p['usable'] else 'no':<7} {p['reason']}")
	        if b in unusable:
	            if p["usable"]:
	                problems.append(f"probe: {b} must not be usable on {kernel}")
	            elif not re.search(unusable[b], p["reason"]):
	                problems.append(f"probe: {b}'s reason does not name the missing feature ({unusable[b]}): {p['reason']}")
	        elif not p["usable"]:
	            problems.append(f"probe: {b} must be usable on {kernel}: {p['reason']}")
	for b in backends:
	    for s in suites:
	        cell = f"{b}-{s}"
	        if cell not in cells:
	            if cell in output:
	                print(f"{cell:<22} FAIL: did not finish (the guest stopped while it ran)")
	                for l in output[cell][-20:]:
	                    print(f"    | {l}")
	            else:
	                print(f"{cell:<22} FAIL: not run (the guest stopped before it)")
	            problems.append(f"{cell}: did not finish" if cell in output else f"{cell}: not run")
	            continue
	        rc, secs = cells[cell]
	        skip = next((l.split("SKIP: ", 1)[1] for l in output[cell] if "SKIP: " in l), "")
	        whole_backend = "is not usable here" in skip
	        if rc == 0:
	            verdict = "PASS"
	            if b in unusable:
	                problems.append(f"{cell}: ran, but {b} must be unusable on {kernel}")
	        elif rc == 77:
	            verdict = f"SKIP: {skip}"
	            if b in unusable and whole_backend:
	                verdict += " (expected)"
	            elif whole_backend:
	                problems.append(f"{cell}: {b} must be usable on {kernel}: {skip}")
	            else:
	                notes.append(f"{cell} skipped: {skip}")
	        else:
	            verdict = "FAIL" + (" (killed: cell timeout)" if rc == 137 else f" (exit {rc})")
	            problems.append(f"{cell}: {verdict}")
	        print(f"{cell:<22} {verdict}   [{secs} s]")
	        if rc not in (0, 77):
	            for l in output[cell]:
	                print(f"    | {l}")
	for name, what in (("api", "the API and fallback suite"), ("image", "the image writer")):
	    if cells_run != ["all"] and name not in cells_run:
	        continue
	    cell = cells.get(name)
	    print(f"{name:<22} {'PASS' if cell and cell[0] == 0 else 'FAIL'}")
	    if not cell or cell[0] != 0:
	        problems.append(f"{name}: {what} " + ("did not finish" if not cell else f"failed (exit {cell[0]})"))
	        for l in output.get(name, [])[-30:]:
	            print(f"    | {l}")
	# the guest has two NUMA nodes: test-numa must count on them, not skip
	numa = cells.get("numa") if cells_run == ["all"] or "numa" in cells_run else (0, "not asked")
	print(f"{'numa':<22} {'PASS' if numa and numa[0] == 0 else 'FAIL'}" + (f"   [{numa[1]} s]" if numa else ""))
	if not numa or numa[0] != 0:
	    problems.append("numa: per-node counts on two nodes " + ("did not finish" if not numa else f"failed (exit {numa[0]})"))
	    for l in output.get("numa", [])[-30:]:
	        print(f"    | {l}")
	# A cell that must pass where uffd-async is usable, and else skip (77):
	# prints its verdict, and the last lines of log (its output) if it failed
	def uffd_async_cell(name, log):
	    cell = cells.get(name)
	    if cell and cell[0] == 0:
	        verdict = "PASS"
	    elif cell and cell[0] == 77 and "uffd-async" in unusable:
	        verdict = "SKIP (expected: uffd-async is not usable here)"
	    else:
	        verdict = "FAIL" + ("" if cell else ": not run")
	        problems.append(f"{name}: " + ("did not run" if not cell else f"failed (exit {cell[0]})"))
	        for l in log[-30:]:
	            print(f"    | {l}")
	    print(f"{name:<22} {verdict}" + (f"   [{cell[1]} s]" if cell else ""))
	# uffd-async under DIRTY_TRACKER_SPARSE, and dropped pages
	for name in ("uffd-async-sparse-core", "exact-drops"):
	    if "uffd-async" in backends:
	        uffd_async_cell(name, output.get(name, []))
	# dirtyctl attach (tests/test-attach.py): where uffd-async is usable it
	# must pass; elsewhere its tests skip with the reason (exit 77)
	if cells_run == ["all"] or "attach" in cells_run:
	    out = output.get("attach", [])
	    # pytest -v: a line per test, "test-attach.py::test_NAME PASSED [ 6%]"
	    results = [l for l in out if l.startswith("test-attach.py::")]
	    for l in results:
	        print(f"    | {l}")
	    uffd_async_cell("attach", [l for l in out if l not in results])
	# the dirtymap module's own tests and the sync daemon: TAP-like output
	for name in required:
	    cell = cells.get(name)
	    out = output.get(name, [])
	    fails = [l for l in out if l.startswith("not ok") and "# TODO" not in l]
	    todos = [l for l in out if l.startswith("not ok") and "# TODO" in l]
	    verdict = "PASS" if cell and cell[0] == 0 else ("FAIL" if cell else "FAIL: not run")
	    print(f"{name:<22} {verdict}" + (f"   [{cell[1]} s]" if cell else ""))
	    for l in todos:
	        print(f"    | {l}")
	        notes.append(f"{name}: known limitation: {l}")
	    if not cell or cell[0] != 0:
	        problems.append(f"{name}: " + ("did not run" if not cell else f"failed (exit {cell[0]})"))
	        for l in (fails or out[-30:]):
	            print(f"    | {l}")
	for n in notes:
	    print(f"note: {n}")
	for p in problems:
	    print(f"MATRIX: {p}")
	print(f"vm {kernel}: matrix {'FAILED' if problems else 'OK'}")
	sys.exit(1 if problems else 0)
	PY
}

# ---- 3. boot ---------------------------------------------------------------
# The sync daemon's cell, when this build has it (tools/dirty-syncd): run
# and required (sets syncd and required of run_kernel).
want_syncd() {
	if [ -x "$build_dir/tools/dirty-syncd" ] && [ -x "$build_dir/tests/test-syncd" ] &&
	   [ -x "$build_dir/tests/test-syncd-hostile" ]; then
		syncd=1
		required="$required syncd"
	fi
}

run_kernel() {
	local k=$1 stage initrd disk log start qemu_pid qemu_rc=0 matrix_rc=0
	local -a qemu_accel=(-accel "$accel")
	local dirtymap_dir='' syncd='' required='' legacy=0 base arch meta want root_dir cross_dir=''
	local vm_cells=${LIBDIRTY_VM_CELLS:-all}
	local suites s left_out=''
	suites=$(guest_suites "$k")
	kernel_spec "$k"
	for s in $suites_all; do
		case " $suites " in *" $s "*) ;; *) left_out="$left_out $s" ;; esac
	done
	[ -z "$left_out" ] ||
		echo "vm $k: suites $suites; left out on this guest for CI's time:$left_out (see guest_suites)"
	# the legacy module runs the race cell only; the DKMS one the module cells
	[ "$base" != "$k" ] && legacy=1
	base=${base%-dkms}
	fetch_kernel "$base"
	echo "vm $k: $kernel_package $kernel_version (uname -r $kernel_release)"
	fetch_root "$arch"
	if [ "$arch" = arm64 ]; then
		build_cross
	fi
	if [ "$k" = 6.12-legacy ]; then
		# the negative control: version 1 of the module, the race cell only
		required=race
		rm -rf "$out_dir/dirtymap-$k"
		mkdir -p "$out_dir/dirtymap-$k"
		if build_dirtymap "$k" "$source_dir/kernel/tests/legacy/dirtymap-v1.c"; then
			dirtymap_dir=$out_dir/dirtymap-$k
		else
			echo "vm $k: the version 1 module did not build" >&2
		fi
	elif [ "$k" = 6.12-dkms ]; then
		# the package's module, built by DKMS: the module cells only
		local backends=${LIBDIRTY_VM_BACKENDS:-mapping} rc=0
		vm_cells=${LIBDIRTY_VM_CELLS:-module race syncd}
		required="module race"
		rm -rf "$out_dir/dirtymap-$k"
		build_dirtymap_dkms "$k" || rc=$?
		[ $rc = 77 ] && exit 77   # run_kernel runs in a subshell of its own
		if [ $rc = 0 ]; then
			dirtymap_dir=$out_dir/dirtymap-$k
		else
			echo "vm $k: DKMS did not build the module: the module cells fail" >&2
		fi
		want_syncd
	elif [ "$k" = 6.12 ]; then
		required="module race"
		rm -rf "$out_dir/dirtymap-$k"
		mkdir -p "$out_dir/dirtymap-$k"
		if build_dirtymap "$k"; then
			dirtymap_dir=$out_dir/dirtymap-$k
		else
			echo "vm $k: no dirtymap module: the module cell and the mapping backend fail" >&2
		fi
		want_syncd
	fi
	rm -rf "$out_dir/initramfs-$k".*   # left by a run that failed
	stage=$(mktemp -d "$out_dir/initramfs-$k.XXXXXX")
	initrd=$out_dir/initrd-$k.gz
	disk=$out_dir/disk-$k.img
	log=$out_dir/log-$k.txt
	build_initramfs "$k" "$stage" "$initrd"
	rm -rf "$stage"
	# a fresh scratch file system each run; inode tables and journal are
	# written here, so that the guest's ext4 has no lazy-init work to do
	rm -f "$disk"
	truncate -s 512M "$disk"
	mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$disk"
	echo "vm $k: booting ($accel, 2 vCPUs, 2 GiB, 2 NUMA nodes; at most $guest_timeout s); serial log: $log"
	start=$(date +%s)
	: > "$log"
	# Debian's kernel defaults otherwise (mitigations=off measured no faster)
	# two NUMA nodes, each one vCPU and 1 GiB of the 2 GiB (test-numa)
	# arm64: the virt machine; -cpu max has the 16 KiB granule that the
	# -16k kernel needs (with pointer authentication's cheap variant, as
	# its standard algorithm costs much under TCG); console on the PL011
	local -a qemu_machine=(qemu-system-x86_64) console=ttyS0
	[ "$arch" = arm64 ] && qemu_machine=(qemu-system-aarch64 -M virt -cpu max,pauth-impdef=on) console=ttyAMA0
	# no lockup or workqueue watchdogs: a vCPU the loaded host does not run
	# for a while is not a kernel bug, but their "BUG: soft lockup" lines
	# would fail the cells that check the kernel log
	timeout -k 10 "$guest_timeout" "${qemu_machine[@]}" "${qemu_accel[@]}" -smp 2 -m 2048 \
		-object memory-backend-ram,id=m0,size=1G -object memory-backend-ram,id=m1,size=1G \
		-numa node,nodeid=0,cpus=0,memdev=m0 -numa node,nodeid=1,cpus=1,memdev=m1 \
		-nographic -no-reboot \
		-kernel "$kernel_root/boot/vmlinuz-$kernel_release" -initrd "$initrd" \
		-drive "file=$disk,format=raw,if=virtio,cache=unsafe" -nic none \
		-append "console=$console panic=-1 loglevel=4 nowatchdog workqueue.watchdog_thresh=0 ${LIBDIRTY_VM_APPEND:-}" \
		</dev/null >"$log" 2>&1 &
	qemu_pid=$!
	# progress: one line per finished cell, while the guest runs
	tail -n +1 -f --pid=$qemu_pid "$log" 2>/dev/null |
		sed -un 's/\r//; s/.*@@LIBDIRTY \(cell=.*\)/  \1/p' || true
	wait $qemu_pid || qemu_rc=$?
	echo "vm $k: guest ran $(( $(date +%s) - start )) s (qemu exit $qemu_rc$([ $qemu_rc = 124 ] && echo ', timed out'))"
	rm -f "$disk"
	local config=$kernel_root/boot/config-$kernel_release
	[ -f "$config" ] || config=$kernel_root/lib/modules/$kernel_release/config
	[ -f "$config" ] || config=
	check_matrix "$k" "$log" "$backends" "$suites" "$qemu_rc" "$required" "$config" "$vm_cells" || matrix_rc=1
	return $matrix_rc
}

status=0 ran=0 skipped=0
for k in "$@"; do
	t0=$(date +%s)
	# in a subshell of its own: set -e does not act inside a function called
	# from a || list, so "run_kernel || status=1" would carry on past errors
	( run_kernel "$k" ) &
	rc=0
	wait $! || rc=$?
	case $rc in
	0) ran=$((ran + 1)) ;;
	77) skipped=$((skipped + 1)) ;; # the reason is printed
	*) ran=$((ran + 1)); status=1 ;;
	esac
	echo "vm $k: total $(( $(date +%s) - t0 )) s"
done
[ $status = 0 ] && [ $ran = 0 ] && [ $skipped -gt 0 ] && exit 77
exit $status
