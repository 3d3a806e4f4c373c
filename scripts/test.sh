#!/usr/bin/env bash
# The whole test suite: install, build with -Werror, run every suite, then again
# under ASan+UBSan, under TSan, and without liburing and libnuma.  Ends with one line "N passed, N failed,
# N skipped" counting meson tests over the three builds; exits non-zero if any
# test failed.
set -u
cd "$(dirname "$0")/.."
bash scripts/deps.sh || exit 1

# hugetlb tests need reserved huge pages; without them they skip, saying so
if [ -w /proc/sys/vm/nr_hugepages ] && [ "$(cat /proc/sys/vm/nr_hugepages)" -lt 16 ]; then
	echo 16 > /proc/sys/vm/nr_hugepages || true
fi
echo "huge pages reserved: $(cat /proc/sys/vm/nr_hugepages 2>/dev/null || echo none)"

status=0
# name, meson options, meson test options, environment
run_build() {
	local name=$1 options=$2 test_options=$3 envs=$4
	echo
	echo "== $name build ($options)"
	if ! meson setup --wipe "build-ci-$name" -Dwerror=true $options >"build-ci-$name.log" 2>&1 &&
	   ! meson setup "build-ci-$name" -Dwerror=true $options >"build-ci-$name.log" 2>&1; then
		cat "build-ci-$name.log"; status=1; return
	fi
	if ! ninja -C "build-ci-$name" >>"build-ci-$name.log" 2>&1; then
		cat "build-ci-$name.log"; status=1; return
	fi
	env $envs meson test -C "build-ci-$name" --no-rebuild --print-errorlogs $test_options || status=1
}

run_build plain "" "" ""
# the asan build also runs the fuzz suite (tests/fuzz: a minute per harness)
run_build asan "-Db_sanitize=address,undefined -Db_lundef=false" "--setup fuzz --no-suite install --no-suite vm --no-suite vm-arm64" \
	"UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1"
run_build tsan "-Db_sanitize=thread -Db_lundef=false" "--no-suite install --no-suite bench --no-suite vm --no-suite vm-arm64" \
	"TSAN_OPTIONS=halt_on_error=1 DIRTY_TEST_STRESS_WRITES=200000 DIRTY_TEST_STRESS_ROUNDS=200"
# without liburing and libnuma: images through pwritev only, NUMA an explicit no-op
run_build minimal "-Dliburing=disabled -Dnuma=disabled" \
	"--no-suite install --no-suite bench --no-suite vm --no-suite vm-arm64 --no-suite stress" ""

python3 - "$status" <<'PY'
import json, sys, glob
passed = failed = skipped = 0
# testlog-SETUP.json for a run with --setup (the asan build's)
for log in sorted(glob.glob("build-ci-*/meson-logs/testlog*.json")):
    p = f = s = 0
    for line in open(log):
        r = json.loads(line)["result"]
        if r in ("OK", "EXPECTEDFAIL"): p += 1
        elif r == "SKIP": s += 1
        else: f += 1
    print(f"{log.split('/')[0]}: {p} passed, {f} failed, {s} skipped")
    passed += p; failed += f; skipped += s
if passed + failed == 0:
    failed = 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed or sys.argv[1] != "0" else 0)
PY
