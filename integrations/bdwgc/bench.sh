#!/usr/bin/env bash
# gctest in incremental mode: bdwgc's own virtual dirty bits against libdirty's.
#
#   bench.sh LIBDIRTY_BUILD_DIR [RUNS] [WORK_DIR]
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
set -u
set -o pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

[ $# -ge 1 ] || { echo "usage: $0 LIBDIRTY_BUILD_DIR [RUNS] [WORK_DIR]" >&2; exit 2; }
libdirty_build=$(realpath "$1")
runs=${2:-10}
work=$(realpath -m "${3:-$libdirty_build/integrations/bdwgc-bench}")
backends=${LIBDIRTY_BDWGC_BACKENDS:-uffd-async uffd-sync soft-dirty mprotect}

bdwgc_check_build_dir "$libdirty_build"
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
                colls=statistics.median(r["collections"] for r in rs),
                npauses=statistics.median(len(r["pauses"]) for r in rs),
                pause_mean=statistics.mean(allp), pause_max=max(allp),
                pause_p99=sorted(allp)[int(0.99 * (len(allp) - 1))])

base = summary(results[configs[0][0]])
print()
print("%d runs each; wall and CPU: median [min-max]; pauses: all runs together" % runs)
print("%-22s %-24s %8s %7s %8s %9s %9s %9s %10s %10s" % (
    "configuration", "wall s", "cpu s", "colls", "pauses", "mean ms", "p99 ms", "max ms",
    "wall x", "pause x"))
for c in configs:
    s = summary(results[c[0]])
    label = c[0] if c[0] != "bdwgc-own" else "bdwgc " + results[c[0]][0]["way"]
    print("%-22s %6.2f [%5.2f-%6.2f] %8.2f %7d %8d %9.3f %9.3f %9.2f %9.2fx %9.2fx" % (
        label, s["wall"], s["wall_min"], s["wall_max"], s["cpu"], s["colls"], s["npauses"],
        s["pause_mean"], s["pause_p99"], s["pause_max"],
        base["wall_mean"] / s["wall_mean"], base["pause_mean"] / s["pause_mean"]))
print("x: bdwgc's own VDB's mean wall time (mean pause) divided by this one's: "
      "above 1 is faster")
PY
