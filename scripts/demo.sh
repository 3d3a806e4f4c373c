#!/usr/bin/env bash
# The main job: install, build, and show dirtyctl at work on this kernel.
set -eu
cd "$(dirname "$0")/.."
bash scripts/deps.sh
[ -d build ] || meson setup build >/dev/null
ninja -C build >/dev/null
echo "== dirtyctl probe: what this kernel offers"
./build/tools/dirtyctl probe
echo
echo "== dirtyctl demo: a buffer written by a thread, collected live by every usable backend"
./build/tools/dirtyctl demo --seconds 3 --interval 0.5
