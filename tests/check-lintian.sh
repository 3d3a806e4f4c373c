#!/bin/bash
# SPDX-License-Identifier: MIT
#
# lintian on the packages scripts/build-debs.sh built: every tag is printed,
# and the check fails on an error.
#
# usage: check-lintian.sh [DEBDIR]     (default: $LIBDIRTY_DEB_DIR)
# Exit 0 no error, 1 errors, 77 (skip) no packages built or no lintian.
set -eu
debdir=${1:-${LIBDIRTY_DEB_DIR:-}}
changes=$(ls "${debdir:-/nonexistent}"/*.changes 2>/dev/null | head -n1)
if [ -z "$changes" ]; then
	echo "SKIP: no .changes in '${debdir}' (LIBDIRTY_DEB_DIR: the packages scripts/build-debs.sh built)"
	exit 77
fi
if ! command -v lintian >/dev/null; then
	echo "SKIP: lintian is not installed (scripts/deps.sh installs it)"
	exit 77
fi
echo "lintian $(lintian --version | awk '{print $2}') on $changes:"
sed -n '/^Files:/,$p' "$changes" | awk 'NF == 5 { print "  " $5 }'
status=0
lintian --fail-on error --display-info --color never "$changes" >"$debdir/lintian.txt" 2>&1 || status=$?
cat "$debdir/lintian.txt"
errors=$(grep -c '^E: ' "$debdir/lintian.txt" || true)
warnings=$(grep -c '^W: ' "$debdir/lintian.txt" || true)
echo "lintian: $errors errors, $warnings warnings (exit $status)"
[ "$status" = 0 ] && [ "$errors" = 0 ]
