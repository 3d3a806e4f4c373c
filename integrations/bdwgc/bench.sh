#!/usr/bin/env bash
# gctest in incremental mode: bdwgc's own virtual dirty bits against libdirty's.
#
#   bench.sh LIBDIRTY_BUILD_DIR [RUNS] [WORK_DIR]
#   bench.sh --guest LIBDIRTY_BUILD_DIR [RUNS] [WORK_DIR]
#
# Builds bdwgc 8.2.2 unpatched and with libdirty-vdb.patch (see run-check.sh,
# lib.sh) in WORK_DIR (default LIBDIRTY_BUILD_DIR/integrations/bdwgc-bench),
# then runs gctest RUNS times (default 10) per configuration, interleaved
# (run 1 of each, then run 2 of each...): bdwgc's own VDB (unpatched:
# SOFT_VDB where the kernel has soft-dirty, else MPROTECT_VDB), and the
# patched bdwgc with LIBDIRTY_BACKEND set to each usable backend.  Every run
# has GC_ENABLE_INCREMENTAL=1 and GC_PRINT_STATS=1, its log in a file
# (GC_LOG_FILE); its world-stopped pauses are bdwgc's own
# "World-stopped marking took N ms M ns" lines.
#
# Prints one line per run (raw numbers) and a summary per configuration:
# wall and CPU time (median, min, max), collections, pauses per run, mean
# pause (over all pauses of all runs), the largest pause, and the ratios of
# the mean wall time and mean pause to those of bdwgc's own VDB.
# Environment: LIBDIRTY_BDWGC_BACKENDS (default: every usable one of
# uffd-async uffd-sync soft-dirty mprotect), LIBDIRTY_BDWGC_NO_BUILD=1
# (reuse WORK_DIR's builds).
#
# --guest: the same in the qemu guest of Debian's 6.12 kernel (soft-dirty,
# uffd-async), through tests/vm/run-matrix.sh's LIBDIRTY_VM_EXEC hook, which
# takes one program: guest-runner (which unpacks an archive appended to it)
# with both gctests, linked statically with their libgc, guest-run.sh and
# tests/test-collector (run there first, on every backend: soft-dirty's
# stop signal can be tested only where soft-dirty works).
# Configurations: bdwgc's own (SOFT_VDB there), libdirty soft-dirty and
# uffd-async (LIBDIRTY_BDWGC_BACKENDS), RUNS (default 2) times each.  The
# guest runs nothing else of the matrix (whose verdict is then a failure, and
# is ignored), under TCG: compare ratios only.  Its log is
# LIBDIRTY_BUILD_DIR/tests/vm/log-6.12.txt.  LIBDIRTY_BDWGC_GUEST_LOCAL=1 runs
# the same program here instead (a test of the packaging).
set -u
set -o pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

guest=0
if [ "${1:-}" = --guest ]; then
	guest=1
	shift
fi
[ $# -ge 1 ] || { echo "usage: $0 [--guest] LIBDIRTY_BUILD_DIR [RUNS] [WORK_DIR]" >&2; exit 2; }
libdirty_build=$(realpath "$1")
runs=${2:-$([ $guest = 1 ] && echo 2 || echo 10)}
work=$(realpath -m "${3:-$libdirty_build/integrations/bdwgc-bench}")
backends=${LIBDIRTY_BDWGC_BACKENDS:-uffd-async uffd-sync soft-dirty mprotect}

bdwgc_check_build_dir "$libdirty_build"

if [ $guest = 1 ]; then
	backends=${LIBDIRTY_BDWGC_BACKENDS:-soft-dirty uffd-async}
	bdwgc_need_tools
	bdwgc_fetch
	mkdir -p "$work"
	# static libgc: one program per configuration, no libgc.so to tell apart
	bdwgc_configure_flags=("${bdwgc_configure_flags[@]/--disable-static/--enable-static}"
		--disable-shared)
	for kind in ref patched; do
		bdwgc_unpack "$kind" "$work/src-$kind" &&
			bdwgc_build "$kind" "$work/src-$kind" "$work/build-static-$kind" "$libdirty_build" ||
			{ echo "bench: building the static $kind bdwgc failed" >&2; exit 1; }
	done
	payload=$work/guest-payload
	rm -rf "$payload"
	mkdir -p "$payload"
	cp "$work/build-static-ref/gctest" "$payload/gctest-ref"
	cp "$work/build-static-patched/gctest" "$payload/gctest-patched"
	cp "$here/guest-run.sh" "$payload/run.sh"
	# and libdirty's tests of what a collector needs (its libraries are the
	# guest's already: test-conformance's)
	cp "$libdirty_build/tests/test-collector" "$payload/" 2>/dev/null || true
	printf 'runs=%s\nbackends="%s"\nrun_timeout=%s\n' "$runs" "$backends" \
		"${LIBDIRTY_BDWGC_GUEST_RUN_TIMEOUT:-900}" > "$payload/guest.conf"
	runner=$work/bdwgc-guest
	cc -O2 -Wall -Wextra -Werror -o "$runner" "$here/guest-runner.c" || exit 1
	(cd "$payload" && tar -cf "$work/guest-payload.tar" .) || exit 1
	cat "$work/guest-payload.tar" >> "$runner"
	python3 -c 'import os, struct, sys; sys.stdout.buffer.write(struct.pack("<Q", os.path.getsize(sys.argv[1])))' \
		"$work/guest-payload.tar" >> "$runner"
	if [ "${LIBDIRTY_BDWGC_GUEST_LOCAL:-0}" = 1 ]; then
		# a test of the packaging: the same program, on this machine
		log=$work/guest-local.txt
		LD_LIBRARY_PATH=$libdirty_build "$runner" >"$log" 2>&1
	else
		echo "bench: booting the 6.12 guest (TCG; several minutes)"
		LIBDIRTY_VM_EXEC=$runner LIBDIRTY_VM_CELLS=bdwgc LIBDIRTY_VM_BACKENDS=none \
			LIBDIRTY_VM_SUITES=none LIBDIRTY_VM_RACE_SECONDS=1 \
			LIBDIRTY_VM_TIMEOUT=${LIBDIRTY_VM_TIMEOUT:-3600} \
			"$bdwgc_source_dir/tests/vm/run-matrix.sh" "$libdirty_build" 6.12 \
			>"$work/guest-matrix.txt" 2>&1
		log=$libdirty_build/tests/vm/log-6.12.txt
	fi
	python3 - "$log" <<'PY'
import re, statistics, sys
runs, header = {}, ""
for line in open(sys.argv[1], errors="replace"):
    line = line.strip().replace("\r", "")
    if "@@BDWGC begin" in line:
        header = line.split("@@BDWGC begin", 1)[1]
    if "@@BDWGC collector" in line:
        print(line[line.index("@@BDWGC"):])
        continue
    m = re.search(r"@@BDWGC (config=.*)$", line)
    if not m:
        continue
    print(line[line.index("@@BDWGC"):])
    r = dict(kv.split("=", 1) for kv in m.group(1).split())
    runs.setdefault(r["config"], []).append(r)
if not runs:
    sys.exit("bench: the guest printed no @@BDWGC line (see %s)" % sys.argv[1])
print("\nguest:%s (under TCG: ratios only)" % header)
base = None
for c, rs in runs.items():
    good = [r for r in rs if r["rc"] == "0" and r["ok"] == "1"]
    if not good:
        print("%-12s every run failed" % c)
        continue
    wall = statistics.mean(int(r["wall_ms"]) for r in good)
    n = sum(int(r["pauses"]) for r in good)
    pause = sum(float(r["mean_ms"]) * int(r["pauses"]) for r in good) / n
    pmax = max(float(r["max_ms"]) for r in good)
    if base is None:
        base = (wall, pause)
    print("%-12s way %-20s runs %d/%d  wall x%.2f  mean pause x%.2f  max pause %.1f ms (raw: wall %.1f s, mean pause %.2f ms)" % (
        c, good[0]["way"], len(good), len(rs), base[0] / wall, base[1] / pause, pmax, wall / 1000, pause))
print("x: the first configuration's mean divided by this one's (above 1: faster)")
PY
	exit $?
fi
if [ "${LIBDIRTY_BDWGC_NO_BUILD:-0}" != 1 ]; then
	bdwgc_need_tools
	bdwgc_fetch
	mkdir -p "$work"
	for kind in ref patched; do
		bdwgc_unpack "$kind" "$work/src-$kind" &&
			bdwgc_build "$kind" "$work/src-$kind" "$work/build-$kind" "$libdirty_build" ||
			{ echo "bench: building the $kind bdwgc failed" >&2; exit 1; }
	done
fi

configs=("bdwgc-own $work/build-ref")
for backend in $backends; do
	if "$libdirty_build/tools/dirtyctl" probe | awk -v b="$backend" '$1 == b && $2 == "usable" { ok = 1 } END { exit !ok }'; then
		configs+=("libdirty-$backend $work/build-patched LIBDIRTY_BACKEND=$backend")
	fi
done

logdir=/dev/shm
[ -d "$logdir" ] && [ -w "$logdir" ] || logdir=$work
python3 - "$runs" "$logdir" "${configs[@]}" <<'PY'
import os, re, statistics, subprocess, sys, time

runs, logdir, configs = int(sys.argv[1]), sys.argv[2], [c.split() for c in sys.argv[3:]]
pause_re = re.compile(r"World-stopped marking took (\d+) ms (\d+) ns")
gc_re = re.compile(r"Completed (\d+) collections in (\d+) ms")

def own_way(text):
    if "Using soft-dirty bit feature" in text:
        return "SOFT_VDB"
    if "Emulating dirty bits with mprotect/signals" in text:
        return "MPROTECT_VDB"
    return "?"

def run(name, build, envs):
    log = os.path.join(logdir, "libdirty-bdwgc-bench-%d.log" % os.getpid())
    if os.path.exists(log):
        os.unlink(log)
    env = dict(os.environ)
    env.pop("LIBDIRTY_BACKEND", None)
    env.pop("GC_USE_LIBDIRTY", None)
    env.update(GC_ENABLE_INCREMENTAL="1", GC_PRINT_STATS="1", GC_LOG_FILE=log)
    env.update(e.split("=", 1) for e in envs)
    t0 = time.monotonic()
    p = subprocess.Popen([os.path.join(build, "gctest")], env=env, cwd=build,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         start_new_session=True)
    _, err = p.communicate()
    wall = time.monotonic() - t0
    try:
        os.killpg(p.pid, 9)  # what a failed run may leave behind
    except ProcessLookupError:
        pass
    text = open(log, errors="replace").read()
    os.unlink(log)
    pauses = [int(ms) + int(ns) / 1e6 for ms, ns in pause_re.findall(text)]
    gc = gc_re.search(text)
    if p.returncode != 0 or "Collector appears to work" not in text:
        sys.exit("bench: %s: gctest failed (status %d): %s" % (name, p.returncode,
                                                               err.decode()[-500:]))
    if name.startswith("libdirty-") and \
            "Using libdirty (%s backend)" % name[len("libdirty-"):] not in text:
        sys.exit("bench: %s: gctest did not use that backend" % name)
    return dict(wall=wall, pauses=pauses, collections=int(gc.group(1)),
                gc_ms=int(gc.group(2)), way=own_way(text) if name == "bdwgc-own" else name)

def cpu_of_children():
    r = os.times()
    return r.children_user + r.children_system

print("kernel %s, %d CPUs, load average at start %s" % (
    os.uname().release, os.cpu_count(), " ".join(open("/proc/loadavg").read().split()[:3])))
results = {c[0]: [] for c in configs}
print("%-20s %3s %9s %8s %6s %7s %10s %10s" % ("configuration", "run", "wall s", "cpu s",
                                                 "colls", "pauses", "mean ms", "max ms"))
for i in range(runs):
    for c in configs:
        before = cpu_of_children()
        r = run(c[0], c[1], c[2:])
        r["cpu"] = cpu_of_children() - before
        results[c[0]].append(r)
        print("%-20s %3d %9.3f %8.3f %6d %7d %10.3f %10.3f" % (
            c[0], i + 1, r["wall"], r["cpu"], r["collections"], len(r["pauses"]),
            statistics.mean(r["pauses"]), max(r["pauses"])), flush=True)
print("load average at end %s" % " ".join(open("/proc/loadavg").read().split()[:3]))

def summary(rs):
    allp = [p for r in rs for p in r["pauses"]]
    return dict(wall=statistics.median(r["wall"] for r in rs),
                wall_mean=statistics.mean(r["wall"] for r in rs),
                wall_min=min(r["wall"] for r in rs), wall_max=max(r["wall"] for r in rs),
                cpu=statistics.median(r["cpu"] for r in rs),
                cpu_mean=statistics.mean(r["cpu"] for r in rs),
                pause_median=statistics.median(allp),
                colls=statistics.median(r["collections"] for r in rs),
                npauses=statistics.median(len(r["pauses"]) for r in rs),
                pause_mean=statistics.mean(allp), pause_max=max(allp),
                pause_p99=sorted(allp)[int(0.99 * (len(allp) - 1))])

base = summary(results[configs[0][0]])
print()
print("%d runs each; wall and CPU time per run: median [min-max], median; "
      "pauses: every pause of every run" % runs)
print("%-22s %-22s %7s %6s %7s %8s %8s %8s %8s %7s %7s %7s" % (
    "configuration", "wall s", "cpu s", "colls", "pauses", "mean ms", "med ms", "p99 ms",
    "max ms", "wall x", "cpu x", "pause x"))
for c in configs:
    s = summary(results[c[0]])
    label = c[0] if c[0] != "bdwgc-own" else "bdwgc " + results[c[0]][0]["way"]
    print("%-22s %6.2f [%5.2f-%6.2f] %7.2f %6d %7d %8.3f %8.3f %8.3f %8.2f %6.2fx %6.2fx %6.2fx" % (
        label, s["wall"], s["wall_min"], s["wall_max"], s["cpu"], s["colls"], s["npauses"],
        s["pause_mean"], s["pause_median"], s["pause_p99"], s["pause_max"],
        base["wall_mean"] / s["wall_mean"], base["cpu_mean"] / s["cpu_mean"],
        base["pause_mean"] / s["pause_mean"]))
print("x: bdwgc's own VDB's mean (wall time, CPU time, pause) divided by this one's: "
      "above 1 is better")
PY
