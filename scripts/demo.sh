#!/usr/bin/env bash
# The main job: install, build, and watch dirtyctl track a program's page writes live.
set -eu
cd "$(dirname "$0")/.."
bash scripts/deps.sh
[ -d build ] || meson setup build >/dev/null
ninja -C build >/dev/null
dirtyctl=./build/tools/dirtyctl
out=build/demo
mkdir -p "$out"

# A Python program with a known write pattern: a 64 MiB buffer, of which it
# rewrites a sliding 8 MiB window every 100 ms, and a dict that keeps growing.
workload='
import time
buf = bytearray(64 << 20)
table = {}
for step in range(40):
    lo = (step % 8) * (8 << 20)
    for off in range(lo, lo + (8 << 20), 4096):
        buf[off] = step & 255
    for k in range(step * 2000, step * 2000 + 2000):
        table[k] = str(k)
    time.sleep(0.1)
print("workload done:", len(table), "keys")
'

echo "== dirtyctl probe: what this kernel offers"
$dirtyctl probe
echo
echo "== dirtyctl run: start a program and watch its page writes, every half second"
$dirtyctl run --interval 0.5 --top 4 -- python3 -c "$workload"
echo
echo "== dirtyctl attach: the same program, already running, watched for 2 s and left alone"
python3 -c "$workload" &
target=$!
sleep 0.5
$dirtyctl attach "$target" --interval 0.5 --duration 2 --top 3
wait "$target"
echo
echo "== dirtyctl heatmap: where it writes, over time"
$dirtyctl heatmap --svg "$out/heatmap.svg" --interval 0.25 --output "$out/heatmap.txt" \
	-- python3 -c "$workload"
echo "heatmap written to $out/heatmap.svg (open it in a browser)"
