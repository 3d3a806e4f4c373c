#!/usr/bin/env bash
# The whole test suite: install, build with -Werror, run every suite, then again
# under ASan+UBSan, under TSan, and without liburing and libnuma; then build the
# Debian packages, check them with lintian, install them, run the packages suite
# against them (the installed-library test, the DKMS-built module in the 6.12
# guest) and remove them.  Ends with one line "N passed, N failed, N skipped"
# counting test cases over the builds (a meson test is one case, a TAP test one
# per subtest: a case skipped inside it counts as skipped); exits non-zero if
# any test failed.
set -u
cd "$(dirname "$0")/.."
bash scripts/deps.sh || exit 1

# hugetlb tests need reserved huge pages; without them they skip, saying so
if [ -w /proc/sys/vm/nr_hugepages ] && [ "$(cat /proc/sys/vm/nr_hugepages)" -lt 16 ]; then
	echo 16 > /proc/sys/vm/nr_hugepages || true
fi
echo "huge pages reserved: $(cat /proc/sys/vm/nr_hugepages 2>/dev/null || echo none)"

status=0
# name, meson options, meson test options, environment, what is left out and why
run_build() {
	local name=$1 options=$2 test_options=$3 envs=$4 left_out=${5:-}
	echo
	echo "== $name build ($options)"
	[ -z "$left_out" ] || echo "not run in this build: $left_out"
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
# integration (bdwgc's make check) runs in the plain build only
no_bdwgc_sanitized="integration (bdwgc's make check: its uninstrumented test programs cannot load a sanitized libdirty; run-check.sh would skip)"
# the asan build also runs the fuzz suite (tests/fuzz: a minute per harness)
run_build asan "-Db_sanitize=address,undefined -Db_lundef=false" \
	"--setup fuzz --no-suite install --no-suite vm --no-suite vm-arm64 --no-suite integration" \
	"UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1" \
	"$no_bdwgc_sanitized"
run_build tsan "-Db_sanitize=thread -Db_lundef=false" \
	"--no-suite install --no-suite bench --no-suite vm --no-suite vm-arm64 --no-suite integration" \
	"TSAN_OPTIONS=halt_on_error=1 DIRTY_TEST_STRESS_WRITES=200000 DIRTY_TEST_STRESS_ROUNDS=200" \
	"$no_bdwgc_sanitized"
# without liburing and libnuma: images through pwritev only, NUMA an explicit no-op
run_build minimal "-Dliburing=disabled -Dnuma=disabled" \
	"--no-suite install --no-suite bench --no-suite vm --no-suite vm-arm64 --no-suite stress --no-suite integration" "" \
	"integration (bdwgc's make check: bdwgc uses only tracking, which this build shares with the plain one, where it runs)"

# The Debian packages (debian/), built from this tree: lintian, then installed
# on this machine for the packages suite of the plain build (meson test
# --setup packages: its log is build-ci-plain/meson-logs/testlog-packages.json),
# then removed again.
run_packages() {
	local debs=build-ci-deb arch left start=$SECONDS
	arch=$(dpkg --print-architecture)
	echo
	echo "== packages (scripts/build-debs.sh $debs)"
	if ! bash scripts/build-debs.sh "$debs"; then
		status=1
		return
	fi
	# what an interrupted run left installed goes first: apt-get does not
	# reinstall a package of the same version
	left=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' libdirty0 libdirty-dev dirtyctl \
		dirty-syncd dirtymap-dkms 2>/dev/null | awk '$1 ~ /^.i/ { print $2 }')
	[ -z "$left" ] || DEBIAN_FRONTEND=noninteractive apt-get purge -y -q $left >"$debs/purge.log" 2>&1
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		"./$debs/libdirty0_"*"_$arch.deb" "./$debs/libdirty-dev_"*"_$arch.deb" \
		"./$debs/dirtyctl_"*"_$arch.deb" "./$debs/dirty-syncd_"*"_$arch.deb" \
		"./$debs/dirtymap-dkms_"*_all.deb >"$debs/install.log" 2>&1; then
		cat "$debs/install.log"
		echo "packages: apt-get install of the packages failed"
		status=1
		return
	fi
	grep -E '^(Setting up|Unpacking) ' "$debs/install.log" | sed 's/^/  /'
	LIBDIRTY_DEB_DIR=$PWD/$debs meson test -C build-ci-plain --no-rebuild --print-errorlogs \
		--setup packages --suite packages || status=1
	DEBIAN_FRONTEND=noninteractive apt-get purge -y -q libdirty0 libdirty-dev dirtyctl \
		dirty-syncd dirtymap-dkms >>"$debs/install.log" 2>&1 ||
		echo "packages: apt-get purge failed (see $debs/install.log)"
	echo "packages: $((SECONDS - start)) s (build, install, suite, purge)"
}
run_packages

python3 - "$status" <<'PY'
import json, sys, glob, re
import xml.etree.ElementTree as ET
GOOD = ("OK", "EXPECTEDFAIL")
# meson copies tests' output into the JUnit log as it is: the vm suite's
# serial console brings escape characters, which XML 1.0 does not allow
NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
passed = failed = skipped = 0
# the failed tests are named again here, next to the totals, where a log that
# keeps only its tail still shows them
failed_names = []
# testlog-SETUP.json for a run with --setup (the asan build's)
for log in sorted(glob.glob("build-ci-*/meson-logs/testlog*.json")):
    # meson calls a TAP test OK when some of its subtests were skipped; its
    # JUnit log (a testsuite "PROJECT.NAME" per TAP test) has each subtest
    subtests = {}
    try:
        junit = open(log[:-len(".json")] + ".junit.xml", encoding="utf-8", errors="replace").read()
        for suite in ET.fromstring(NOT_XML.sub("", junit)).iter("testsuite"):
            cases = [c for c in suite.findall("testcase") if c.get("classname") == suite.get("name")]
            subtests[suite.get("name")] = [
                "SKIP" if c.find("skipped") is not None else
                "FAIL" if c.find("failure") is not None or c.find("error") is not None else "OK"
                for c in cases]
    except (OSError, ET.ParseError) as e:
        print(f"{log}: no JUnit log to count subtests in ({e}): each TAP test counts once")
    p = f = s = 0
    tests = {"OK": 0, "FAIL": 0, "SKIP": 0}
    for line in open(log):
        r = json.loads(line)
        result = r["result"]
        tests["OK" if result in GOOD else "SKIP" if result == "SKIP" else "FAIL"] += 1
        if result not in GOOD + ("SKIP",):
            failed_names.append(f"{log.split('/')[0]}: {r['name']} ({result})")
        sub = next((v for k, v in subtests.items() if k.endswith("." + r["name"])), None)
        if not sub:
            # an exit-status test, or a TAP test with no subtest (skipped as a whole)
            if result in GOOD: p += 1
            elif result == "SKIP": s += 1
            else: f += 1
            continue
        p += sub.count("OK")
        s += sub.count("SKIP")
        # a TAP test that failed with no failed subtest (timeout, crash, exit status)
        f += max(sub.count("FAIL"), 0 if result in GOOD + ("SKIP",) else 1)
    setup = log.rsplit("/", 1)[1][len("testlog"):-len(".json")].lstrip("-")
    print(f"{log.split('/')[0]}{f' --setup {setup}' if setup else ''}: {p} passed, {f} failed, {s} skipped "
          f"({tests['OK']} meson tests ok, {tests['FAIL']} failed, {tests['SKIP']} skipped)")
    passed += p; failed += f; skipped += s
for name in failed_names:
    print(f"failed: {name}")
if passed + failed == 0:
    failed = 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed or sys.argv[1] != "0" else 0)
PY
