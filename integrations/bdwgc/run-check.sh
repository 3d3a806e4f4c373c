#!/usr/bin/env bash
# bdwgc's own test suite on libdirty: the Boehm-Demers-Weiser collector 8.2.2
# (Debian 12's libgc source package) with libdirty-vdb.patch, whose whole
# `make check` runs in incremental mode (GC_ENABLE_INCREMENTAL=1) once per
# libdirty backend usable here (of uffd-async, uffd-sync, soft-dirty,
# mprotect), and once unpatched, as the reference (bdwgc's own SOFT_VDB or
# MPROTECT_VDB).
#
#   run-check.sh LIBDIRTY_BUILD_DIR [WORK_DIR]
#
# LIBDIRTY_BUILD_DIR is a meson build tree of libdirty (plain, not sanitized):
# the patched bdwgc links its libdirty.so; dirtyctl says which backends are
# usable.  WORK_DIR (default LIBDIRTY_BUILD_DIR/integrations/bdwgc) receives
# the source trees, the builds and the logs, rebuilt from scratch each run.
#
# Each run must really use its backend: every test program logs (GC_LOG_FILE,
# GC_PRINT_STATS) "Using libdirty (BACKEND backend)" when it initializes the
# collector, and the log must hold as many of those as programs that
# initialized threads support ("Number of processors"), and no other VDB.
# Then gctest once more with no backend named: libdirty's uffd-async where
# usable, bdwgc's own way elsewhere.  Last, a negative control: the patched
# bdwgc made to report no dirty page (one line of the patch replaced) must
# fail gctest, or these runs prove nothing.
#
# Exit: 0 all passed, 1 a failure, 77 skipped with the reason (the source
# cannot be fetched, build tools are missing and cannot be installed, a
# sanitized libdirty).
set -u
set -o pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

[ $# -ge 1 ] || { echo "usage: $0 LIBDIRTY_BUILD_DIR [WORK_DIR]" >&2; exit 2; }
libdirty_build=$(realpath "$1")
work=$(realpath -m "${2:-$libdirty_build/integrations/bdwgc}")
backends=${LIBDIRTY_BDWGC_BACKENDS:-uffd-async uffd-sync soft-dirty mprotect}

bdwgc_check_build_dir "$libdirty_build"
bdwgc_need_tools
bdwgc_fetch
mkdir -p "$work"
start=$SECONDS
failed=0

echo "bdwgc: building $bdwgc_debian_version, unpatched (cached) and patched, in $work"
bdwgc_build_ref_cached "$work/build-ref" || { echo "bdwgc: building the unpatched bdwgc failed"; exit 1; }
bdwgc_unpack patched "$work/src-patched" &&
	bdwgc_build patched "$work/src-patched" "$work/build-patched" "$libdirty_build" ||
	{ echo "bdwgc: building the patched bdwgc failed"; exit 1; }
echo "bdwgc: built in $((SECONDS - start)) s"

# run_check NAME BUILD_DIR ENV...: make check with ENV; sets log to the GC log.
run_check() {
	local name=$1 build=$2 t0=$SECONDS status
	shift 2
	log=$work/$name.gclog
	rm -f "$log"
	(cd "$build" && bdwgc_run_isolated env -u LIBDIRTY_BACKEND -u GC_USE_LIBDIRTY "$@" \
		GC_ENABLE_INCREMENTAL=1 GC_PRINT_STATS=1 GC_LOG_FILE="$log" \
		make -j2 check >"$work/$name.check.log" 2>&1)
	status=$?
	echo "bdwgc: $name: $(grep -E '^# (TOTAL|PASS|FAIL|ERROR):' "$work/$name.check.log" |
		tr -s ' \n' ' ')($((SECONDS - t0)) s)"
	if [ $status -ne 0 ] || ! grep -q '^# FAIL: *0$' "$work/$name.check.log" ||
	   ! grep -q '^# ERROR: *0$' "$work/$name.check.log"; then
		grep -E '^(FAIL|ERROR):' "$work/$name.check.log"
		echo "bdwgc: $name: make check FAILED (logs: $build/test-suite.log, $log)"
		return 1
	fi
	# gctest ran in incremental mode (its output goes to the GC log)
	if ! grep -q '^Switched to incremental mode$' "$log"; then
		echo "bdwgc: $name: gctest did not switch to incremental mode"
		return 1
	fi
	return 0
}

# The reference: bdwgc as Debian ships it, with its own way.
if run_check reference "$work/build-ref"; then
	if grep -q '^Using soft-dirty bit feature$' "$log"; then way=SOFT_VDB; else way=MPROTECT_VDB; fi
	grep -q '^Emulating dirty bits with mprotect/signals$' "$log" && way=MPROTECT_VDB
	echo "bdwgc: reference: bdwgc's own $way"
else
	failed=1
fi

ran=0
for backend in $backends; do
	state=$("$libdirty_build/tools/dirtyctl" probe | awk -v b="$backend" '$1 == b { print $2 }')
	if [ "$state" != usable ]; then
		echo "bdwgc: libdirty $backend: not usable here, not run:" \
			"$("$libdirty_build/tools/dirtyctl" probe | awk -v b="$backend" \
				'$1 == b { $1 = ""; $2 = ""; sub(/^ +/, ""); print }')"
		continue
	fi
	ran=$((ran + 1))
	run_check "libdirty-$backend" "$work/build-patched" LIBDIRTY_BACKEND="$backend" ||
		{ failed=1; continue; }
	# the proof that this backend, and only it, did the work
	used=$(grep -c "^Using libdirty ($backend backend)$" "$log")
	programs=$(grep -c '^Number of processors' "$log")
	others=$(grep -E '^Using libdirty \(|^GC Warning: libdirty|^libdirty (is unusable|offers only)' "$log" |
		grep -vc "^Using libdirty ($backend backend)$")
	if [ "$used" -eq 0 ] || [ "$used" -ne "$programs" ] || [ "$others" -ne 0 ]; then
		echo "bdwgc: libdirty-$backend: $used programs used it, of $programs;" \
			"$others other VDB messages: FAILED"
		failed=1
	else
		echo "bdwgc: libdirty-$backend: all $used test programs that start the collector used it"
	fi
done
[ "$ran" -gt 0 ] || { echo "bdwgc: no libdirty backend is usable here"; failed=1; }

# The automatic choice: libdirty when it offers uffd-async, else bdwgc's own.
if "$libdirty_build/tools/dirtyctl" probe | awk '$1 == "uffd-async" && $2 == "usable" { ok = 1 } END { exit !ok }'; then
	expect='^Using libdirty \(uffd-async backend\)$'
else
	expect='^libdirty offers .* here: not used$|^libdirty is unusable here'
fi
rm -f "$work/auto.gclog"
if (cd "$work/build-patched" && bdwgc_run_isolated env -u LIBDIRTY_BACKEND -u GC_USE_LIBDIRTY \
	GC_ENABLE_INCREMENTAL=1 GC_PRINT_STATS=1 GC_LOG_FILE="$work/auto.gclog" \
	./gctest >/dev/null 2>&1) && grep -qE "$expect" "$work/auto.gclog"; then
	echo "bdwgc: automatic choice: $(grep -m1 -E "$expect" "$work/auto.gclog")"
else
	echo "bdwgc: automatic choice: gctest failed or did not log /$expect/: FAILED"
	failed=1
fi

# Negative control: with the dirty bits dropped, gctest must fail.
echo "bdwgc: negative control: the patched bdwgc reporting no dirty page must fail gctest"
if bdwgc_unpack control "$work/src-control" &&
   bdwgc_build control "$work/src-control" "$work/build-control" "$libdirty_build"; then
	control_backend=$(for b in $backends; do
		"$libdirty_build/tools/dirtyctl" probe | awk -v b="$b" '$1 == b && $2 == "usable" { print b }'
	done | head -n 1)
	caught=0
	for attempt in 1 2 3; do
		if ! (cd "$work/build-control" && bdwgc_run_isolated env GC_ENABLE_INCREMENTAL=1 \
			LIBDIRTY_BACKEND="$control_backend" ./gctest >"$work/control.log" 2>&1); then
			caught=$attempt
			break
		fi
	done
	if [ "$caught" -gt 0 ]; then
		echo "bdwgc: negative control: gctest failed as it must (run $caught," \
			"libdirty $control_backend): $(grep -m1 -iE 'fail|abort|error' "$work/control.log")"
	else
		echo "bdwgc: negative control: gctest passed 3 times without dirty bits: FAILED"
		failed=1
	fi
else
	echo "bdwgc: building the negative control failed"
	failed=1
fi

echo "bdwgc: $([ $failed -eq 0 ] && echo passed || echo FAILED) in $((SECONDS - start)) s"
exit $failed
