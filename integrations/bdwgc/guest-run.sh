#!/bin/sh
# In a qemu guest of tests/vm/run-matrix.sh (busybox sh), unpacked by
# guest-runner: gctest in incremental mode, RUNS times per configuration,
# interleaved: bdwgc's own way (unpatched: SOFT_VDB where the kernel has
# soft-dirty), then the patched bdwgc with each libdirty backend of
# BACKENDS.  One line per run on the console: "@@BDWGC key=value...".
cd /tmp/bdwgc-guest || exit 1
. ./guest.conf
now_ms() { awk '{ printf "%d", $1 * 1000 }' /proc/uptime; }
echo "@@BDWGC begin runs=$runs backends=$backends kernel=$(uname -r) cpus=$(grep -c ^processor /proc/cpuinfo)"
# libdirty's own tests of what a collector needs, on this kernel's backends
# (soft-dirty's stop signal cannot be tested on a host without soft-dirty)
if [ -x ./test-collector ]; then
	for b in soft-dirty uffd-async uffd-sync mprotect; do
		DIRTY_TEST_BACKEND=$b CK_DEFAULT_TIMEOUT=60 CK_TIMEOUT_MULTIPLIER=5 \
			timeout -s KILL 600 ./test-collector
		echo "@@BDWGC collector backend=$b rc=$?"
	done
fi
i=1
while [ "$i" -le "$runs" ]; do
	for c in own $backends; do
		if [ "$c" = own ]; then
			set -- ./gctest-ref
		else
			set -- env LIBDIRTY_BACKEND="$c" ./gctest-patched
		fi
		rm -f /tmp/gc.log
		t0=$(now_ms)
		GC_ENABLE_INCREMENTAL=1 GC_PRINT_STATS=1 GC_LOG_FILE=/tmp/gc.log \
			timeout -s KILL "$run_timeout" "$@" >/dev/null 2>&1
		rc=$?
		t1=$(now_ms)
		awk -v c="$c" -v i="$i" -v rc="$rc" -v wall=$((t1 - t0)) '
			/World-stopped marking took/ { ms = $4 + $6 / 1e6; n++; sum += ms; if (ms > max) max = ms }
			/Completed .* collections in/ { colls = $2 }
			/Using soft-dirty bit feature/ { way = "SOFT_VDB" }
			/Emulating dirty bits with mprotect/ { way = "MPROTECT_VDB" }
			/^Using libdirty \(/ { way = "libdirty-" substr($3, 2) }
			/Collector appears to work/ { ok = 1 }
			END { printf "@@BDWGC config=%s run=%d rc=%d ok=%d wall_ms=%d colls=%s pauses=%d mean_ms=%.3f max_ms=%.3f way=%s\n",
				c, i, rc, ok, wall, colls, n, n ? sum / n : 0, max, way }' /tmp/gc.log
	done
	i=$((i + 1))
done
echo "@@BDWGC end"
