#!/usr/bin/env bash
# The dirtymap tests on a kernel built from Debian's linux-source-6.12 with
# kernel/patches applied (kernel/build-patched-kernel.sh, cached), booted in
# qemu: the patched helpers (huge PMDs cleaned and recorded, the dirty bit
# moved to the folio, every mapping walked), and a reclaim stress in a guest
# with less memory than the memfd it writes, swapping to a virtio disk.
#
#   kernel/run-patched.sh [OUT_DIR]       (default: a temporary directory)
#
# Exit status 0 when dirtymap-test passed, 1 otherwise, 77 when qemu or a
# build tool is missing.  The meson test vm-patched runs it: on a fresh
# machine it first builds the kernel (4m41s measured here on 2 cores, from
# the download to the bzImage), then every run takes under a minute (a
# change of kernel/patches rebuilds in seconds).
# Environment: LIBDIRTY_VM_CACHE (see build-patched-kernel.sh),
# LIBDIRTY_VM_ACCEL (default tcg), DIRTYMAP_RECLAIM "MEMFD_MIB ROUNDS"
# (default "384 10"; the guest has 256 MiB of RAM and 512 MiB of swap).
set -eu
set -o pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$(mktemp -d /tmp/dirtymap-patched.XXXXXX)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
accel=${LIBDIRTY_VM_ACCEL:-tcg}
read -r reclaim_mib reclaim_rounds <<< "${DIRTYMAP_RECLAIM:-384 10}"
# the kernel build needs make, flex, bison, bc and libelf (objtool)
for t in qemu-system-x86_64 cpio gzip xz cc make flex bison bc; do
	command -v "$t" >/dev/null ||
		{ echo "SKIP: $t is missing (packages: qemu-system-x86 make flex bison bc libelf-dev)"; exit 77; }
done
[ -f /usr/include/libelf.h ] || [ -f /usr/include/elfutils/libelf.h ] ||
	{ echo "SKIP: libelf.h is missing (libelf-dev)"; exit 77; }
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 ||
	{ echo "SKIP: a static /bin/busybox is missing (busybox-static)"; exit 77; }

bzimage=$("$here/build-patched-kernel.sh")
echo "patched: kernel $bzimage"

stage=$out/initramfs
rm -rf "$stage"
mkdir -p "$stage"/{bin,dev,proc,sys,tmp}
cp /bin/busybox "$stage/bin/"
# static: the guest has no C library
cc -static -O2 -Wall -I "$here/include/uapi" -o "$stage/bin/dirtymap-test" \
	"$here/tests/dirtymap-test.c"
cat > "$stage/init" <<EOI
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
echo "@@LIBDIRTY boot kernel=\$(uname -r) mem=\$(awk '/MemTotal/ { print \$2 \$3 }' /proc/meminfo)"
i=0
while [ ! -b /dev/vda ] && [ \$i -lt 20 ]; do sleep 1; i=\$((i + 1)); done
mkswap /dev/vda >/dev/null && swapon /dev/vda && echo "@@LIBDIRTY swap=/dev/vda"
cd /tmp
dirtymap-test --reclaim $reclaim_mib --rounds $reclaim_rounds
echo "@@LIBDIRTY cell=patched rc=\$?"
dmesg | grep -iE -A12 "warning|bug|oops" | head -40
# no ACPI in this kernel: poweroff would only halt; qemu -no-reboot exits on reboot
reboot -f
EOI
chmod 755 "$stage/init"
(cd "$stage" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 > "$out/initrd.gz"
rm -rf "$stage"
rm -f "$out/swap.img"
truncate -s 512M "$out/swap.img"
log=$out/log-patched.txt
echo "patched: booting ($accel, 2 vCPUs, 256 MiB, 512 MiB swap); serial log: $log"
start=$(date +%s)
timeout -k 10 900 qemu-system-x86_64 -accel "$accel" -smp 2 -m 256 -nographic -no-reboot \
	-kernel "$bzimage" -initrd "$out/initrd.gz" \
	-drive "file=$out/swap.img,format=raw,if=virtio,cache=unsafe" -nic none \
	-append "console=ttyS0 panic=-1 loglevel=4" </dev/null > "$log" 2>&1 || true
rm -f "$out/swap.img"
echo "patched: guest ran $(( $(date +%s) - start )) s"
tr -d '\r' < "$log" | grep -E '^(ok|not ok|#|1\.\.)|@@LIBDIRTY|WARNING|BUG' || true
rc=$(tr -d '\r' < "$log" | sed -n 's/.*@@LIBDIRTY cell=patched rc=\([0-9]*\).*/\1/p')
if [ "$rc" = 0 ] && ! grep -qE 'WARNING:|BUG:|Oops' "$log"; then
	echo "patched: PASS"
	exit 0
fi
echo "patched: FAIL (rc ${rc:-none}; see $log)"
exit 1
