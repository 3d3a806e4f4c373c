#!/bin/sh
# A short libFuzzer run for meson: run-fuzzer.sh FUZZER SEEDS WORKDIR
# $DIRTY_FUZZ_SECONDS (default 60) bounds it.  New inputs go to WORKDIR/corpus,
# never into the source tree; a crash leaves WORKDIR/crash-* and fails.
set -eu
fuzzer=$(cd "$(dirname "$1")" && pwd)/$(basename "$1") seeds=$2 work=$3
seconds=${DIRTY_FUZZ_SECONDS:-60}
mkdir -p "$work/corpus"
echo "fuzzing $(basename "$fuzzer") for $seconds s from $seeds"
echo "reproduce a crash: $fuzzer $work/crash-..."
# detect_leaks: libFuzzer reports leaks itself (-detect_leaks=1)
exec "$fuzzer" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 \
	-print_final_stats=1 -artifact_prefix="$work/" "$work/corpus" "$seeds"
