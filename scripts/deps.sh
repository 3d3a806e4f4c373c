#!/usr/bin/env bash
# Install what building and testing libdirty needs on Debian 12 (as root).
# Only missing packages are installed; an up-to-date machine is left alone.
set -eu
packages=(gcc g++ meson ninja-build pkg-config check liburing-dev libnuma-dev python3)
# tests/test-dirtyctl.py, test-exact.py, test-attach.py: pytest, a timeout per test
packages+=(python3-pytest python3-pytest-timeout)
# dirty-syncd's Vulkan sink: the loader and its headers; its tests run on Mesa's
# software device (lavapipe) under the Khronos validation layer; vulkaninfo
packages+=(libvulkan-dev mesa-vulkan-drivers vulkan-validationlayers vulkan-tools)
# tests/fuzz: clang with libFuzzer's runtime
packages+=(clang libclang-rt-14-dev)
# tests/vm: boot Debian's kernels in qemu from an initramfs with an ext4 disk
packages+=(qemu-system-x86 busybox-static cpio e2fsprogs xz-utils kmod)
# tests/vm, arm64 guests: the emulator and a cross compiler for the test binaries
packages+=(qemu-system-arm gcc-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu)
# kernel/: the dirtymap module against Debian's 6.12 headers, and the patched
# 6.12 kernel (kernel/build-patched-kernel.sh)
packages+=(make gcc-12 flex bison bc libelf-dev unifdef)
# debian/: the packages (scripts/build-debs.sh), lintian, DKMS for the
# dirtymap-dkms cell of tests/vm (pahole: Debian's linux-kbuild needs it for BTF);
# groff and man for the pages' tests
packages+=(dpkg-dev debhelper dh-dkms dkms pahole fakeroot lintian groff-base man-db binutils)
# integrations/bdwgc: Debian's libgc source (apt-get source, dpkg-source) built
# with the patch, which changes configure.ac and Makefile.am
packages+=(dpkg-dev autoconf automake libtool)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "deps: installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
