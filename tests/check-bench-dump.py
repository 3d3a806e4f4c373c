#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""dirty-bench --dump --json writes its --dir as a JSON string, escaped.

    check-bench-dump.py DIRTY_BENCH

Runs DIRTY_BENCH --dump --quick with --dir a fresh directory (made in the
working directory: a disk file system, as --dir is meant for) whose name holds
a quote, a backslash and a tab, and checks that the --json file parses and
names that directory exactly, and /dev/shm for tmpfs.  Exits 0 or 1.
"""
import json
import os
import subprocess
import sys
import tempfile

METHODS = 4      # libdirty:io_uring, libdirty:pwritev, raw:pwrite-loop, raw:pwritev
FRACTIONS = 3    # 1 %, 10 %, 100 %


def main(bench):
    with tempfile.TemporaryDirectory(dir=os.getcwd()) as tmp:
        disk = os.path.join(tmp, 'a "quoted" \\ dir\twith a tab')
        os.mkdir(disk)
        report = os.path.join(tmp, "dump.json")
        proc = subprocess.run([bench, "--dump", "--quick", "--dir", disk, "--json", report],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=240)
        if proc.returncode != 0:
            print("dirty-bench --dump: exit status %d; stderr %r"
                  % (proc.returncode, proc.stderr.decode(errors="replace")))
            return 1
        with open(report, "rb") as f:
            text = f.read()
    try:
        dump = json.loads(text)
    except ValueError as e:
        print("the --json file does not parse: %s\n%r" % (e, text[:2000]))
        return 1
    dirs = [r["dir"] for r in dump["results"]]
    want = ["/dev/shm"] * (METHODS * FRACTIONS) + [disk] * (METHODS * FRACTIONS)
    if dirs != want:
        print("the results name the directories %r, not %r" % (sorted(set(dirs)), [disk]))
        return 1
    print("ok: %d results, --dir %r written back exactly" % (len(dirs), disk))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
