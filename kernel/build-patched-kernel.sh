#!/usr/bin/env bash
# Build a small x86-64 kernel from Debian's linux-source-6.12 with
# kernel/patches/*.patch applied (the dirtymap driver built in), for qemu.
#
#   build-patched-kernel.sh [CACHE_DIR]     prints the path of the bzImage
#
# CACHE_DIR (default $LIBDIRTY_VM_CACHE or /var/cache/libdirty-vm) keeps the
# linux-source .deb (downloaded with apt-get download and a private apt
# configuration: this machine's apt state is not changed), the unpacked and
# patched tree, and the result: CACHE_DIR/patched/KEY/bzImage, where KEY
# hashes the source package, the patches, the config and this script.  A
# rerun with nothing changed is instant; the build tree (CACHE_DIR/patched/
# tree, about 1.5 GiB) is kept, so a change of the patches rebuilds only what
# they touch.  Needs make, gcc, flex, bison, bc,
# and libelf-dev (tinyconfig needs no libssl): the first build takes
# 5-10 minutes on 2 idle cores.
set -eu
set -o pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${1:-${LIBDIRTY_VM_CACHE:-/var/cache/libdirty-vm}}
dir=$cache/patched
mkdir -p "$dir"
exec 8>"$dir/lock"
flock 8

# tinyconfig plus what the guest needs: serial console, initramfs, devtmpfs,
# tmpfs/shmem/memfd, THP, swap and an O_DIRECT source on virtio disks, the
# dirtymap driver; two (emulated) NUMA nodes, migration and compaction for
# the race test; io_uring, memory cgroups and soft-dirty for the write
# oracle; DEBUG_VM and PAGE_TABLE_CHECK so that the kernel complains about
# any page table it finds wrong.
config_options=(64BIT SMP PRINTK TTY SERIAL_8250 SERIAL_8250_CONSOLE
	BLK_DEV_INITRD RD_GZIP DEVTMPFS PROC_FS PROC_SYSCTL SYSFS TMPFS SHMEM
	MEMFD_CREATE TRANSPARENT_HUGEPAGE SWAP BLOCK BLK_DEV PCI VIRTIO_MENU
	VIRTIO VIRTIO_PCI VIRTIO_BLK USERFAULTFD BINFMT_ELF BINFMT_SCRIPT FUTEX
	EPOLL SIGNALFD TIMERFD EVENTFD MULTIUSER POSIX_TIMERS PROC_PAGE_MONITOR
	FILE_LOCKING ADVISE_SYSCALLS DIRTYMAP NUMA NUMA_EMU MIGRATION COMPACTION
	IO_URING CGROUPS MEMCG CHECKPOINT_RESTORE MEM_SOFT_DIRTY NET UNIX DEBUG_KERNEL
	DEBUG_VM PAGE_TABLE_CHECK PAGE_TABLE_CHECK_ENFORCED CROSS_MEMORY_ATTACH)

# ---- the source package (bookworm-backports) ----------------------------------
src_deb=$(ls "$dir"/linux-source-6.12_*.deb 2>/dev/null | tail -n1 || true)
if [ -z "$src_deb" ]; then
	mkdir -p "$dir/apt/lists/partial" "$dir/apt/cache/archives/partial"
	echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main" \
		> "$dir/apt/sources.list"
	apt_opts=(-o "Dir::Etc::SourceList=$dir/apt/sources.list"
		-o Dir::Etc::SourceParts=/dev/null
		-o "Dir::State::Lists=$dir/apt/lists"
		-o "Dir::Cache=$dir/apt/cache")
	[ "$(id -u)" = 0 ] && apt_opts+=(-o APT::Sandbox::User=root)
	echo "patched: downloading linux-source-6.12" >&2
	apt-get "${apt_opts[@]}" -qq update
	(cd "$dir" && apt-get "${apt_opts[@]}" -qq download linux-source-6.12)
	src_deb=$(ls "$dir"/linux-source-6.12_*.deb | tail -n1)
fi

# the driver of the series is kernel/dirtymap.c without its module-only parts
if command -v unifdef >/dev/null; then
	drv=$(mktemp)
	unifdef -DMAPPING_WRITE_TRACKERS -o "$drv" "$here/dirtymap.c" || true
	if ! cat "$here"/patches/*.patch | awk '
		/^\+\+\+ b\/drivers\/misc\/dirtymap.c/ { on = 1; next }
		on && /^(diff --git|-- $)/ { on = 0 }
		on && /^\+/ { print substr($0, 2) }' | cmp -s - "$drv"; then
		echo "patched: kernel/patches' drivers/misc/dirtymap.c is not kernel/dirtymap.c" \
			"(unifdef -DMAPPING_WRITE_TRACKERS): regenerate the series" >&2
		rm -f "$drv"
		exit 1
	fi
	rm -f "$drv"
fi

key=$( { basename "$src_deb"; cat "$here"/patches/*.patch "$0";
	 printf '%s\n' "${config_options[@]}"; } | sha256sum | cut -c1-16)
out=$dir/$key
if [ -f "$out/bzImage" ]; then
	echo "$out/bzImage"
	exit 0
fi

# ---- unpack, patch, configure, build ---------------------------------------------
# The tree stays in the cache: when only the patches change, the old ones are
# reverted and the new ones applied, and files whose content is unchanged get
# their old modification time back, so that make rebuilds only what changed.
tree=$dir/tree
rm -rf "$out"
mkdir -p "$out"
if [ "$(cat "$tree/.libdirty-src" 2>/dev/null)" != "$(basename "$src_deb")" ]; then
	rm -rf "$tree"
	mkdir -p "$tree"
	echo "patched: unpacking $(basename "$src_deb")" >&2
	dpkg-deb --fsys-tarfile "$src_deb" | tar -xO --wildcards './usr/src/linux-source-6.12.tar.xz' |
		xz -dc | tar -x -C "$tree" --strip-components=1
	mkdir -p "$tree/.libdirty-patches"
	basename "$src_deb" > "$tree/.libdirty-src"
fi
if ! diff -qr "$tree/.libdirty-patches" "$here/patches" >/dev/null 2>&1; then
	files=$( { cat "$tree"/.libdirty-patches/*.patch 2>/dev/null || true
		   cat "$here"/patches/*.patch; } |
		sed -n 's|^+++ b/||p; s|^--- a/||p' | sort -u)
	declare -A sum=() mtime=()
	for f in $files; do
		[ -f "$tree/$f" ] || continue
		sum[$f]=$(sha256sum < "$tree/$f")
		mtime[$f]=$(stat -c %Y "$tree/$f")
	done
	for p in $(ls -r "$tree"/.libdirty-patches/*.patch 2>/dev/null); do
		echo "patched: reverting $(basename "$p")" >&2
		patch -s -R -p1 -d "$tree" < "$p"
	done
	rm -rf "$tree/.libdirty-patches"
	mkdir -p "$tree/.libdirty-patches"
	for p in "$here"/patches/*.patch; do
		echo "patched: applying $(basename "$p")" >&2
		patch -s -p1 -d "$tree" < "$p"
		cp "$p" "$tree/.libdirty-patches/"
	done
	for f in "${!sum[@]}"; do
		[ -f "$tree/$f" ] && [ "$(sha256sum < "$tree/$f")" = "${sum[$f]}" ] &&
			touch -m -d "@${mtime[$f]}" "$tree/$f"
	done
fi
jobs=${JOBS:-$(nproc)}
[ "$jobs" -gt 2 ] && jobs=2
make -s -C "$tree" tinyconfig >&2
args=()
for o in "${config_options[@]}"; do args+=(--enable "$o"); done
"$tree/scripts/config" --file "$tree/.config" "${args[@]}"
make -s -C "$tree" olddefconfig >&2
for o in "${config_options[@]}"; do
	grep -q "^CONFIG_$o=y" "$tree/.config" ||
		echo "patched: warning: CONFIG_$o is not set after olddefconfig" >&2
done
grep -q '^CONFIG_DIRTYMAP=y' "$tree/.config" || { echo "patched: CONFIG_DIRTYMAP missing" >&2; exit 1; }
echo "patched: building bzImage (make -j$jobs)" >&2
start=$(date +%s)
nice -n 10 make -s -C "$tree" -j"$jobs" bzImage >&2
cp "$tree/arch/x86/boot/bzImage" "$tree/.config" "$out/"
echo "patched: built in $(( $(date +%s) - start )) s" >&2
# earlier results (other patches or config) are not needed any more
find "$dir" -mindepth 1 -maxdepth 1 -type d -regextype posix-extended \
	-regex '.*/[0-9a-f]{16}' ! -path "$out" -exec rm -rf {} +
echo "$out/bzImage"
