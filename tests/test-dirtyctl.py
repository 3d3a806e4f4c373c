# SPDX-License-Identifier: MIT
"""End-to-end tests of dirtyctl run / attach / heatmap / dump, under pytest.

    pytest-3 --build-dir=BUILD tests/test-dirtyctl.py[::test_NAME]

(meson test --suite dirtyctl runs each test as a meson test of its own:
tests/meson.build.)  Uses BUILD/tools/dirtyctl and BUILD/tests/dirty-workload,
whose write pattern is a pure function of its seed: see tests/dirty-workload.c,
recomputed by predict_writes() here.  A test that needs what this machine
lacks (a backend that tracks another process, ptrace of a non-child, strace,
sort, gzip) is skipped with the reason.

Every process a test starts is in its own session and is killed when the
test ends (tests/conftest.py); every wait is for an event (a line of output,
a state in /proc, a file's first line) with a deadline that only a hang
reaches, and each test has its own timeout (pytest-timeout).  Nothing waits
for time to pass to order events, so a faster or a busier machine changes
nothing.
"""
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ElementTree

import pytest

from harness import (PAGE, Dirtyctl, Failure, changed_pages, check, cont, describe,
                     mappings, open_fds, poll_until, process_state, read_line, read_memory,
                     reported_pages, require_attach, require_backend, run, signal_state, spawn,
                     stop, task_states, tracer_pid, usable, wait_exit)
import harness

pytestmark = pytest.mark.timeout(90)

INTERVAL = 0.2
FILL_BYTE = 0xA5         # what dirty-workload writes to every page first
PF_KTHREAD = 0x00200000  # /proc/PID/stat flags of a kernel thread
MASK64 = (1 << 64) - 1

DIRTYCTL = harness.DIRTYCTL
WORKLOAD = os.path.join(harness.BUILD, "tests", "dirty-workload")


# ---------------------------------------------------------------------------
# The workload

def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def predict_writes(pages, seed, rounds, threads=1):
    """What dirty-workload has stored after `rounds` rounds of each thread:
    {page index: {thread: last counter value}} (run_rounds() in the C file)."""
    even, odd = (pages + 1) // 2, pages // 2
    per_round = max(1, even // 32)
    words = {}
    for thread in range(threads):
        state = (seed + thread * 0xD1B54A32D192ED03) & MASK64
        counter = 0
        for _ in range(rounds):
            state, r = splitmix64(state)
            count = 1 + r % per_round
            for _ in range(count):
                state, r = splitmix64(state)
                counter += 1
                words.setdefault(2 * (r % even), {})[thread] = counter
            if odd:
                for _ in range(count):
                    state, r = splitmix64(state)
    return words


def expected_region(pages, words):
    region = bytearray([FILL_BYTE]) * (pages * PAGE)
    for page, stores in words.items():
        for thread, value in stores.items():
            offset = page * PAGE + 8 * thread
            region[offset:offset + 8] = value.to_bytes(8, sys.byteorder)
    return bytes(region)


def parse_region(line, pages):
    parts = line.split()
    check(len(parts) == 3 and parts[0] == "region" and parts[1].startswith("0x"),
          "bad region line %r" % line)
    start, length = int(parts[1], 16), int(parts[2], 0)
    check(length == pages * PAGE and start % PAGE == 0, "bad region line %r" % line)
    return start, length


class Workload:
    """dirty-workload in its own process group; its region from its one line."""

    def __init__(self, pages=2048, seed=1, rounds=0, period_ms=20, threads=1, hold=True):
        self.pages, self.seed, self.threads = pages, seed, threads
        argv = [WORKLOAD, "--pages", str(pages), "--seed", str(seed), "--rounds",
                str(rounds), "--period-ms", str(period_ms), "--threads", str(threads)]
        if hold:
            argv.append("--hold")
        self.proc = spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        self.pid = self.proc.pid
        line = read_line(self.proc.stdout.fileno(), 10, "dirty-workload's region line")
        self.start, self.length = parse_region(line, pages)

    def snapshot(self):
        return read_memory(self.pid, self.start, self.length)

    def changed_since(self, before):
        """The region now if it differs from before, else None."""
        now = self.snapshot()
        return now if now != before else None

    def keeps_writing(self, what):
        """The next rounds still write even pages, and never odd ones."""
        first = self.snapshot()
        second = poll_until(lambda: self.changed_since(first), 5,
                            "%s: the workload's region changing" % what)
        changed = changed_pages(first, second)
        odd = {p for p in changed if p % 2}
        check(not odd, "%s: odd pages changed: %s" % (what, describe(odd)))

    def terminate(self, what="the workload"):
        """SIGTERM it; it must exit 0 and have printed nothing after its region line."""
        os.kill(self.pid, signal.SIGCONT)
        os.kill(self.pid, signal.SIGTERM)
        status = wait_exit(self.proc, 10, what)
        rest = self.proc.stdout.read()
        check(status == 0, "%s exited with status %d after SIGTERM" % (what, status))
        check(rest == b"", "%s printed more than its region line: %r" % (what, rest[:200]))


# ---------------------------------------------------------------------------
# dirtyctl's report

def parse_report(lines, what):
    objs = []
    for text in lines:
        try:
            objs.append(json.loads(text))
        except ValueError:
            raise Failure("%s: not a JSON line: %r" % (what, text)) from None
    return objs


def hex_int(value, what):
    check(isinstance(value, str) and value.startswith("0x"),
          "%s: %r is not a hex string" % (what, value))
    return int(value, 16)


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_report(objs, pid=None, runs=True):
    """The --json report: attached, intervals, summary, each well formed and
    adding up.  Returns (attached, intervals, summary)."""
    check(objs, "empty report")
    attached, intervals, summary = objs[0], objs[1:-1], objs[-1]
    check(attached.get("type") == "attached", "first line is not \"attached\": %r" % attached)
    check(isinstance(attached.get("pid"), int), "attached: no pid: %r" % attached)
    if pid is not None:
        check(attached["pid"] == pid, "attached: pid %r, expected %d" % (attached["pid"], pid))
    pid = attached["pid"]
    check(isinstance(attached.get("backend"), str), "attached: no backend: %r" % attached)
    check(summary.get("type") == "summary", "last line is not a summary: %r" % summary)
    total = 0
    for obj in intervals:
        check(obj.get("type") == "interval", "not an interval line: %r" % obj)
        for key in ("t", "interval", "mib_per_s"):
            check(is_number(obj.get(key)), "interval: bad %s: %r" % (key, obj))
        check(obj.get("pid") == pid, "interval: pid %r, expected %d" % (obj.get("pid"), pid))
        check(obj.get("backend") == attached["backend"], "interval: backend %r, attached %r"
              % (obj.get("backend"), attached["backend"]))
        check(isinstance(obj.get("pages"), int) and obj["pages"] >= 0, "interval: pages: %r" % obj)
        check(obj.get("bytes") == obj["pages"] * PAGE, "interval: bytes != pages * %d: %r"
              % (PAGE, {k: obj.get(k) for k in ("pages", "bytes")}))
        check(isinstance(obj.get("mappings"), list), "interval: no mappings list")
        in_mappings = 0
        for m in obj["mappings"]:
            what = "interval t=%s mapping %r" % (obj["t"], m.get("name"))
            check(isinstance(m.get("name"), str), "%s: no name" % what)
            check(m.get("kind") in ("heap", "stack", "anonymous", "file-private", "shared"),
                  "%s: kind %r" % (what, m.get("kind")))
            start, end = hex_int(m.get("start"), what), hex_int(m.get("end"), what)
            check(start < end and start % PAGE == 0 and end % PAGE == 0,
                  "%s: bad range %s-%s" % (what, m["start"], m["end"]))
            check(isinstance(m.get("pages"), int) and m["pages"] > 0,
                  "%s: pages %r (mappings with 0 pages are left out)" % (what, m.get("pages")))
            check(m["pages"] <= (end - start) // PAGE, "%s: more pages than it has" % what)
            check(is_number(m.get("mib_per_s")), "%s: no mib_per_s" % what)
            # how the library tracked it (null: the mapping is gone since)
            check("way" in m and m["way"] in ("protect", "compare", None),
                  "%s: way %r" % (what, m.get("way")))
            in_mappings += m["pages"]
            if not runs:
                check("runs" not in m, "%s: runs without --runs" % what)
                continue
            check(isinstance(m.get("runs"), list), "%s: no runs with --runs" % what)
            in_runs, last_end = 0, start
            for run_ in m["runs"]:
                check(isinstance(run_, list) and len(run_) == 2, "%s: bad run %r" % (what, run_))
                run_start, run_len = hex_int(run_[0], what), hex_int(run_[1], what)
                check(run_len > 0 and run_start % PAGE == 0 and run_len % PAGE == 0,
                      "%s: run %r not page aligned" % (what, run_))
                check(run_start >= last_end and run_start + run_len <= end,
                      "%s: run %r outside the mapping, overlapping or out of order" % (what, run_))
                last_end = run_start + run_len
                in_runs += run_len // PAGE
            check(in_runs == m["pages"], "%s: runs hold %d pages, pages says %d"
                  % (what, in_runs, m["pages"]))
        check(in_mappings == obj["pages"], "interval t=%s: mappings hold %d pages, pages says %d"
              % (obj["t"], in_mappings, obj["pages"]))
        total += obj["pages"]
    check(summary.get("pid") == pid, "summary: pid %r" % summary.get("pid"))
    check(is_number(summary.get("duration")) and summary["duration"] >= 0,
          "summary: duration %r" % summary.get("duration"))
    check(summary.get("intervals") == len(intervals), "summary: intervals %r, %d interval lines"
          % (summary.get("intervals"), len(intervals)))
    check(summary.get("pages") == total, "summary: pages %r, the intervals add up to %d"
          % (summary.get("pages"), total))
    check("exit_status" in summary, "summary: no exit_status")
    check(isinstance(summary.get("mappings"), list), "summary: no mappings list")
    for m in summary["mappings"]:
        check("runs" not in m and isinstance(m.get("pages"), int) and m["pages"] > 0,
              "summary mapping: %r" % m)
    check(sum(m["pages"] for m in summary["mappings"]) == total,
          "summary: its mappings hold %d pages, pages says %d"
          % (sum(m["pages"] for m in summary["mappings"]), total))
    return attached, intervals, summary


def check_error(status, stderr, expected, contains=None, one_line=True):
    """A failure: the exit status, and a message starting with "dirtyctl: "."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    check(status == expected, "exit status %d, expected %d; stderr: %r"
          % (status, expected, stderr[-500:]))
    check(lines, "no message on stderr")
    check(lines[0].startswith("dirtyctl: "), "message does not start with \"dirtyctl: \": %r"
          % lines[0])
    if one_line:
        check(len(lines) == 1, "more than one line on stderr: %r" % lines)
    if contains is not None:
        check(contains in lines[0], "message does not name %r: %r" % (contains, lines[0]))


class ReportFile:
    """The report dirtyctl writes to --output, read as it grows (standard
    output is then the command's)."""

    def __init__(self, path):
        self.path = path

    def objects(self):
        """The complete lines so far, as JSON."""
        try:
            with open(self.path) as f:
                lines = f.read().splitlines(keepends=True)
        except FileNotFoundError:
            return []
        return parse_report([line for line in lines if line.endswith("\n")], self.path)

    def count(self, kind):
        """How many lines of this type there are so far."""
        return sum(1 for o in self.objects() if o.get("type") == kind)

    def wait(self, kind, count=1, timeout=20):
        """Until count (at least 1) lines of this type are there; returns them."""
        def enough():
            found = [o for o in self.objects() if o.get("type") == kind]
            return found if len(found) >= count else None
        return poll_until(enough, timeout, "%d \"%s\" line(s) in %s" % (count, kind, self.path))

    def read(self):
        with open(self.path) as f:
            return parse_report(f.read().splitlines(), self.path)


def first_line(d, what):
    """The first line on dirtyctl d's standard output (the command's, under run)."""
    return poll_until(lambda: d.output(), 10, what)[0]


def workload_done(d, report, pages, seed, rounds, what):
    """dirtyctl d runs dirty-workload --hold, its report going to report: wait
    until the workload has done its rounds (its memory as the seed predicts)
    and dirtyctl has collected twice since, then end it with SIGTERM (it
    exits 0).  Returns its region (start, length)."""
    pid = report.wait("attached")[0]["pid"]
    start, length = parse_region(first_line(d, "%s: the workload's region line" % what), pages)
    want = expected_region(pages, predict_writes(pages, seed, rounds))
    poll_until(lambda: read_memory(pid, start, length) == want, 30,
               "%s: the workload's %d rounds" % (what, rounds))
    report.wait("interval", report.count("interval") + 2)
    os.kill(pid, signal.SIGTERM)
    return start, length


# ---------------------------------------------------------------------------
# The tests

def wait_for_prediction(w, rounds, timeout, what):
    """After its rounds (--hold), the region is exactly what the seed predicts."""
    want = expected_region(w.pages, predict_writes(w.pages, w.seed, rounds, w.threads))
    deadline = time.monotonic() + timeout
    while True:
        got = w.snapshot()
        if got == want:
            return
        if time.monotonic() > deadline:
            raise Failure("%s: %s differ from the prediction after %d rounds"
                          % (what, describe(changed_pages(got, want)), rounds))
        time.sleep(0.05)


def test_workload_alone():
    """The workload itself: one line, odd pages never written, the pattern
    exactly as predict_writes() says, exit 0 at the end and on SIGTERM."""
    for threads in (1, 3):
        w = Workload(pages=300, seed=99 + threads, rounds=12, period_ms=5, threads=threads,
                     hold=True)
        wait_for_prediction(w, 12, 10, "threads %d" % threads)
        w.terminate()

    w = Workload(pages=512, seed=5, period_ms=10, threads=2)
    fill = bytes([FILL_BYTE]) * PAGE
    before = w.snapshot()
    after = poll_until(lambda: w.changed_since(before), 10, "a page of the workload changing")
    odd = {p for p in range(1, 512, 2) if after[p * PAGE:(p + 1) * PAGE] != fill}
    check(not odd, "odd pages are not the fill pattern: %s" % describe(odd))
    w.terminate()

    w = Workload(pages=64, rounds=3, period_ms=1, hold=False)
    status = wait_exit(w.proc, 10, "dirty-workload --rounds 3")
    check(status == 0, "exit status %d after its rounds" % status)
    check(w.proc.stdout.read() == b"", "printed more than its region line")


def attach_exactness(threads):
    """Test (a): every page that changed between two snapshots taken while
    tracked is reported; no odd page is; nothing while the target is stopped."""
    require_attach()
    w = Workload(pages=2048, seed=1234 + threads, period_ms=20, threads=threads)
    # its threads exist: their stacks are in the "before" map
    tasks = 1 if threads == 1 else 1 + threads
    poll_until(lambda: len(os.listdir("/proc/%d/task" % w.pid)) == tasks, 10,
               "the workload's %d threads" % tasks)
    fds, maps = open_fds(w.pid), mappings(w.pid)
    d = Dirtyctl(["attach", str(w.pid), "--json", "--runs", "--interval", str(INTERVAL)])
    d.wait_type("attached")
    poll_until(lambda: tracer_pid(w.pid) == 0, 10, "TracerPid 0 while tracked")
    check(open_fds(w.pid) == fds, "while tracked, the target has other fds: %r, before %r"
          % (open_fds(w.pid), fds))

    stop(w.pid)
    first = w.snapshot()
    cont(w.pid)
    # it writes across several collects
    d.wait_intervals(3)
    poll_until(lambda: w.changed_since(first), 10, "the workload writing")
    stop(w.pid)
    stopped_at = time.monotonic()
    # until an interval whose previous collect began after the stop (below)
    poll_until(lambda: quiet_intervals(d, stopped_at, float("inf")), 10,
               "an interval whose previous collect began after the stop")
    second = w.snapshot()
    resumed_at = time.monotonic()
    cont(w.pid)

    os.kill(d.pid, signal.SIGINT)
    status = d.finish()
    timed = d.timed_objects()
    check(status == 0, "dirtyctl exit status %d after SIGINT; stderr %r" % (status, d.stderr()))
    attached, intervals, summary = validate_report([o for _, o in timed], w.pid, runs=True)
    if usable("uffd-async"):
        check(attached["backend"] == "uffd-async", "backend %r, uffd-async is usable"
              % attached["backend"])
    check(summary["exit_status"] is None, "summary exit_status %r of a live target"
          % summary["exit_status"])
    check(tracer_pid(w.pid) == 0, "TracerPid %d after detach" % tracer_pid(w.pid))
    check(open_fds(w.pid) == fds, "after detach the target has other fds: %r, before %r"
          % (open_fds(w.pid), fds))
    check(mappings(w.pid) == maps, "after detach the target's mappings differ")

    changed = changed_pages(first, second)
    check(changed, "the workload changed no page")
    check(not {p for p in changed if p % 2}, "the workload changed odd pages")
    reported = set()
    for obj in intervals:
        reported |= reported_pages(obj, w.start, w.length)
    missed = changed - reported
    check(not missed, "written but not reported: %s of %d written"
          % (describe(missed), len(changed)))
    odd = {p for p in reported if p % 2}
    check(not odd, "reported but never written (odd): %s" % describe(odd))

    # An interval whose previous collect began after the stop, and whose
    # own collect ended before the target went on, saw no write.
    check(is_number(attached.get("clock")), "attached: no clock: %r" % attached)
    quiet = quiet_intervals(d, stopped_at, resumed_at)
    check(quiet, "no interval line while the target was stopped")
    for obj in quiet:
        pages = reported_pages(obj, w.start, w.length)
        check(not pages, "interval t=%s, the target stopped: reported %s"
              % (obj["t"], describe(pages)))
    w.terminate()


def quiet_intervals(d, stopped_at, resumed_at):
    """The interval lines of d's --json report so far whose previous collect
    began after stopped_at (dirtyctl reads an interval's "t", on the
    CLOCK_MONOTONIC that time.monotonic() reads too, just before its collect)
    and whose own collect ended before resumed_at (its line had reached us).
    Not by arrivals alone: on a loaded machine a line can reach us late."""
    timed = [(when, o) for when, o in d.timed_objects()
             if o.get("type") in ("attached", "interval")]
    clock = timed[0][1].get("clock", float("inf")) if timed else float("inf")
    intervals = [(when, o) for when, o in timed if o["type"] == "interval"]
    return [o for i, (when, o) in enumerate(intervals)
            if i and clock + intervals[i - 1][1]["t"] >= stopped_at and when < resumed_at]


def test_attach_exactness():
    attach_exactness(threads=1)


def test_attach_exactness_threads():
    attach_exactness(threads=4)


def test_run_exactness(workdir):
    """Test (b): run passes the command's stdout through and reports only
    pages it wrote; its exit status is the command's."""
    require_backend()
    pages, seed, rounds = 1024, 7, 30
    report = ReportFile(os.path.join(workdir, "report.json"))
    d = Dirtyctl(["run", "--json", "--runs", "--interval", str(INTERVAL), "--output", report.path,
                  "--", WORKLOAD, "--pages", str(pages), "--rounds", str(rounds),
                  "--period-ms", "20", "--seed", str(seed), "--hold"])
    start, length = workload_done(d, report, pages, seed, rounds, "run")
    status = d.finish(timeout=30)
    out = d.output()
    check(status == 0, "exit status %d; stderr %r" % (status, d.stderr()))
    check(d.stderr() == "", "stderr not empty: %r" % d.stderr())
    check(len(out) == 1, "stdout is not just the workload's line: %r" % out[:5])
    check(parse_region(out[0], pages) == (start, length), "the region line changed: %r" % out)
    attached, intervals, summary = validate_report(report.read(), runs=True)
    check(summary["exit_status"] == 0, "summary exit_status %r" % summary["exit_status"])

    # The fill writes every page once, right after the mmap: if dirtyctl tracks
    # the region by then, that burst is reported in the first interval that
    # shows the region (or across the collect after it).  After it, only the
    # rounds' writes: even pages the seed predicts.
    written = set(predict_writes(pages, seed, rounds))
    per_interval = [reported_pages(obj, start, length) for obj in intervals]
    seen = [i for i, p in enumerate(per_interval) if p]
    check(seen, "no page of the region reported (%d intervals)" % len(intervals))
    after_fill = set()
    for i, pages_reported in enumerate(per_interval):
        if i in (seen[0], seen[0] + 1) and any(p % 2 for p in pages_reported):
            continue  # the fill
        after_fill |= pages_reported
    odd = {p for p in after_fill if p % 2}
    check(not odd, "odd pages reported after the fill: %s" % describe(odd))
    never = after_fill - written
    check(not never, "reported but never written: %s" % describe(never))
    check(any(p % 2 == 0 for p in set().union(*per_interval)), "no even page reported")


def test_run_stdio_and_status(workdir):
    """run: stdin, stdout and stderr are the command's; its status is dirtyctl's,
    128 + N when a signal N killed it.  Each command waits for its input,
    which comes once dirtyctl says it is attached."""
    require_backend()
    report = ReportFile(os.path.join(workdir, "report.json"))
    d = Dirtyctl(["run", "--json", "--interval", str(INTERVAL), "--output", report.path, "--",
                  "sh", "-c", "cat; echo to-stderr >&2; exit 3"], stdin=subprocess.PIPE)
    data = b"".join(b"line %d\n" % i for i in range(1000))
    report.wait("attached")
    d.proc.stdin.write(data)
    d.proc.stdin.close()
    status = d.finish()
    check(status == 3, "exit status %d, the command's was 3; stderr %r" % (status, d.stderr()))
    check("".join(d.output()).encode() == data, "stdout is not what cat was given")
    check(d.stderr() == "to-stderr\n", "stderr is not the command's: %r" % d.stderr())
    _, _, summary = validate_report(report.read(), runs=False)
    check(summary["exit_status"] == 3, "summary exit_status %r" % summary["exit_status"])

    os.unlink(report.path)
    d = Dirtyctl(["run", "--json", "--interval", str(INTERVAL), "--output", report.path, "--",
                  "sh", "-c", "read go; kill -TERM $$"], stdin=subprocess.PIPE)
    report.wait("attached")
    d.proc.stdin.write(b"go\n")
    d.proc.stdin.close()
    status = d.finish()
    check(status == 128 + signal.SIGTERM, "exit status %d of a command killed by SIGTERM; "
          "stderr %r" % (status, d.stderr()))
    _, _, summary = validate_report(report.read(), runs=False)
    check(summary["exit_status"] == 128 + signal.SIGTERM,
          "summary exit_status %r" % summary["exit_status"])



def test_run_command_done_before_attach():
    """run: a command that ends before it can be attached (true, exit 7, a
    signal) gives its status all the same, and dirtyctl says nothing of it
    was reported instead of a reason to refuse."""
    require_backend()
    for cmd, want in ((["true"], 0), (["sh", "-c", "exit 7"], 7),
                      (["sh", "-c", "kill -KILL $$"], 128 + signal.SIGKILL)):
        status, out, err = run([DIRTYCTL, "run", "--"] + cmd)
        check(status == want, "%r: exit status %d, the command's was %d; stderr %r"
              % (cmd, status, want, err))
        # a fast machine may attach in time: then it is an ordinary run
        check("ended before it could be attached" in err or "summary:" in out,
              "%r: neither a report nor why there is none: %r %r" % (cmd, out, err))
        check("cannot attach" not in err, "%r: a refusal for a command that ended: %r"
              % (cmd, err))

# Test (c): real programs give the same output when attached to and detached from.

def feed(proc, data):
    """Write data to proc's stdin and close it, from a thread (the program
    reads while it writes); returns the thread."""
    def write():
        try:
            proc.stdin.write(data)
            proc.stdin.close()
        except BrokenPipeError:
            pass  # it ended without reading it all: its exit status says why
    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    return writer


def real_program(argv, data, workdir, env=None):
    """argv, which reads data on its stdin, alone and then attached to: the
    same exit status 0, output and stderr.  The data is written once dirtyctl
    has attached and reported a first interval, so that the program does its
    work while tracked, however fast it is."""
    require_attach()
    results = []
    for attach in (False, True):
        out_path = os.path.join(workdir, "out%d" % attach)
        with open(out_path, "wb") as out, tempfile.TemporaryFile() as err:
            p = spawn(argv, stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=workdir,
                      env=env)
            if attach:
                d = Dirtyctl(["attach", str(p.pid), "--json", "--interval", str(INTERVAL)])
                d.wait_type("attached")
                d.wait_intervals(1)
            writer = feed(p, data)
            status = wait_exit(p, 60, argv[0])
            writer.join(10)
            err.seek(0)
            stderr = err.read()
        with open(out_path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        check(status == 0, "%s exited %d (%s); stderr %r"
              % (argv[0], status, "attached" if attach else "alone", stderr[-300:]))
        results.append((digest, stderr))
    dstatus = d.finish()
    check(dstatus == 0, "dirtyctl exit status %d; stderr %r" % (dstatus, d.stderr()))
    objs = [o for _, o in d.timed_objects()]
    _, intervals, _ = validate_report(objs, p.pid, runs=False)
    check(intervals, "dirtyctl reported no interval")
    check(results[0][0] == results[1][0], "output differs when attached to")
    check(results[0][1] == results[1][1], "stderr differs when attached to: %r vs %r"
          % (results[0][1][-200:], results[1][1][-200:]))


PYTHON_PROGRAM = """
import hashlib, sys
xs = [i * i % 1000003 for i in range(int(sys.stdin.read()))]
d = {}
for x in xs[::3]:
    d[x % 65521] = d.get(x % 65521, 0) + x
ys = sorted(xs, reverse=True)
print(sum(xs) % 1000003, len(d), hashlib.sha256(repr(ys[::997]).encode()).hexdigest())
"""


def test_real_python(workdir):
    real_program([sys.executable, "-c", PYTHON_PROGRAM], b"3000000", workdir)


def generated_data(name, size, make_chunk):
    rnd = random.Random(name)
    chunks, written = [], 0
    while written < size:
        chunks.append(make_chunk(rnd))
        written += len(chunks[-1])
    return b"".join(chunks)


def test_real_sort(workdir):
    if not shutil.which("sort"):
        pytest.skip("sort is not installed")
    require_attach()
    data = generated_data("sort", 20 << 20, lambda rnd: b"".join(
        b"%016x %d\n" % (rnd.getrandbits(64), rnd.getrandbits(40)) for _ in range(10000)))
    # -g and a small buffer: merges through temp files
    real_program(["sort", "-k2,2gr", "-S", "8M", "-T", "."], data, workdir,
                 env=dict(os.environ, LC_ALL="C"))


def test_real_gzip(workdir):
    if not shutil.which("gzip"):
        pytest.skip("gzip is not installed")
    require_attach()
    data = generated_data("gzip", 30 << 20, lambda rnd: rnd.randbytes(1 << 19).hex().encode())
    real_program(["gzip", "-c"], data, workdir)


def test_real_short_program(workdir):
    """A real program done in milliseconds once it has its input (it failed
    the old test, which needed 0.6 s to attach)."""
    if not shutil.which("gzip"):
        pytest.skip("gzip is not installed")
    require_attach()
    real_program(["gzip", "-c"], generated_data("short", 64 << 10, lambda rnd: rnd.randbytes(4096)),
                 workdir)


def leaves_no_trace(w, fds, maps, signals, what):
    check(tracer_pid(w.pid) == 0, "%s: TracerPid %d" % (what, tracer_pid(w.pid)))
    check(open_fds(w.pid) == fds, "%s: the target's fds are %r, were %r"
          % (what, open_fds(w.pid), fds))
    check(mappings(w.pid) == maps, "%s: the target's mappings differ" % what)
    check(signal_state(w.pid) == signals, "%s: the target's signal state is %r, was %r"
          % (what, signal_state(w.pid), signals))
    check(process_state(w.pid) in "RS", "%s: target in state %s" % (what, process_state(w.pid)))
    w.keeps_writing(what)


def test_attach_leaves_no_trace():
    """Test (c), second part: after attach --duration the target has the same
    fds, mappings and signal state, no tracer, still runs, and can be attached
    to again."""
    require_attach()
    w = Workload(pages=1024, seed=3)
    fds, maps, signals = open_fds(w.pid), mappings(w.pid), signal_state(w.pid)
    status, out, err = run([DIRTYCTL, "attach", str(w.pid), "--interval", str(INTERVAL),
                            "--duration", "1"], timeout=20)
    check(status == 0, "dirtyctl exit status %d; stderr %r" % (status, err))
    check(out.strip(), "nothing on stdout without --json")
    leaves_no_trace(w, fds, maps, signals, "after detach")
    status, out, err = run([DIRTYCTL, "attach", str(w.pid), "--json", "--interval",
                            str(INTERVAL), "--duration", "0.6"], timeout=20)
    check(status == 0, "second attach: exit status %d; stderr %r" % (status, err))
    _, intervals, _ = validate_report(parse_report(out.splitlines(), "stdout"), w.pid, runs=False)
    check(intervals, "second attach: no interval")
    leaves_no_trace(w, fds, maps, signals, "after the second detach")
    w.terminate()


def test_attach_keeps_pattern():
    """Tracked or not, the workload writes the same: attached to during its
    rounds, it ends with exactly the memory its seed predicts."""
    require_attach()
    w = Workload(pages=1024, seed=21, rounds=60, period_ms=20, threads=2, hold=True)
    status, out, err = run([DIRTYCTL, "attach", str(w.pid), "--json", "--interval",
                            str(INTERVAL), "--duration", "0.8"], timeout=20)
    check(status == 0, "dirtyctl exit status %d; stderr %r" % (status, err))
    _, intervals, _ = validate_report(parse_report(out.splitlines(), "stdout"), w.pid, runs=False)
    check(intervals, "no interval")
    wait_for_prediction(w, 60, 20, "attached to during its rounds")
    w.terminate()


# Test (d): failure paths.

def test_no_such_process():
    require_backend()
    with open("/proc/sys/kernel/pid_max") as f:
        pid = int(f.read()) - 1
    while os.path.exists("/proc/%d" % pid):
        pid -= 1
    status, _, err = run([DIRTYCTL, "attach", str(pid), "--duration", "1"])
    check_error(status, err, 4, contains=str(pid))


def test_zombie():
    require_backend()
    p = spawn(["true"])
    poll_until(lambda: process_state(p.pid) == "Z", 10, "true becoming a zombie")
    status, _, err = run([DIRTYCTL, "attach", str(p.pid), "--duration", "1"])
    check_error(status, err, 4, contains=str(p.pid))
    check(wait_exit(p, 5, "the zombie") == 0, "the zombie's status changed")


def test_kernel_thread():
    require_backend()
    kthread = None
    for name in ["2"] + sorted(os.listdir("/proc")):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                flags = int(f.read().rpartition(")")[2].split()[6])
        except (OSError, IndexError, ValueError):
            continue
        if flags & PF_KTHREAD:
            kthread = int(name)
            break
    if kthread is None:
        pytest.skip("no kernel thread visible in this pid namespace")
    status, _, err = run([DIRTYCTL, "attach", str(kthread), "--duration", "1"])
    check_error(status, err, 4, contains=str(kthread))


def test_already_traced():
    require_attach()
    if not shutil.which("strace"):
        pytest.skip("strace is not installed (and tests install nothing)")
    w = Workload(pages=512, seed=4)
    tracer = spawn(["strace", "-f", "-o", "/dev/null", "-p", str(w.pid)],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    poll_until(lambda: tracer_pid(w.pid) == tracer.pid, 10, "strace attaching")
    status, _, err = run([DIRTYCTL, "attach", str(w.pid), "--duration", "1"])
    check_error(status, err, 3, contains=str(w.pid))
    check(tracer_pid(w.pid) == tracer.pid, "strace is no longer the tracer")
    w.keeps_writing("traced by strace, after the refusal")
    tracer.terminate()
    wait_exit(tracer, 10, "strace")
    poll_until(lambda: tracer_pid(w.pid) == 0, 5, "strace detaching")
    w.keeps_writing("after strace")
    w.terminate()


def test_target_exits():
    """The target ends during tracking (and stays an unreaped zombie): dirtyctl
    ends too, 0, with a summary.  It ends (SIGTERM) once dirtyctl has
    reported an interval of it."""
    require_attach()
    w = Workload(pages=256, seed=8, period_ms=40, hold=False)
    d = Dirtyctl(["attach", str(w.pid), "--json", "--interval", str(INTERVAL),
                  "--duration", "60"])
    d.wait_type("attached")
    d.wait_intervals(1)
    os.kill(w.pid, signal.SIGTERM)
    poll_until(lambda: process_state(w.pid) == "Z", 20, "the workload ending")  # not reaped
    status = d.finish(timeout=10)
    check(status == 0, "dirtyctl exit status %d; stderr %r" % (status, d.stderr()))
    _, intervals, summary = validate_report([o for _, o in d.timed_objects()], w.pid, runs=False)
    check(summary["exit_status"] in (None, 0), "summary exit_status %r, the target exited 0"
          % summary["exit_status"])
    check(intervals, "no interval reported in the target's last second")
    check(wait_exit(w.proc, 5, "the workload") == 0, "the workload's exit status is not 0")


def test_dirtyctl_killed():
    """SIGKILL dirtyctl mid-interval: the target does not notice."""
    require_attach()
    w = Workload(pages=1024, seed=9)
    fds, maps, signals = open_fds(w.pid), mappings(w.pid), signal_state(w.pid)
    d = Dirtyctl(["attach", str(w.pid), "--json", "--interval", "0.5"])
    d.wait_type("attached")
    d.wait_type("interval", timeout=10)
    # mid-interval: asleep until its next collect
    poll_until(lambda: process_state(d.pid) == "S", 10, "dirtyctl waiting for its next collect")
    check(tracer_pid(w.pid) == 0, "TracerPid %d while tracked" % tracer_pid(w.pid))
    check(open_fds(w.pid) == fds, "while tracked the target's fds are %r, were %r"
          % (open_fds(w.pid), fds))
    os.kill(d.pid, signal.SIGKILL)
    d.finish(timeout=10)
    leaves_no_trace(w, fds, maps, signals, "after dirtyctl was killed")
    status, out, err = run([DIRTYCTL, "attach", str(w.pid), "--json", "--interval",
                            str(INTERVAL), "--duration", "0.6"], timeout=20)
    check(status == 0, "attach after the kill: exit status %d; stderr %r" % (status, err))
    w.terminate()


def test_detach_stopped_target():
    """SIGINT while the target is stopped: dirtyctl detaches and the target
    stays stopped, as it was; once continued it runs on."""
    require_attach()
    w = Workload(pages=1024, seed=10)
    fds = open_fds(w.pid)
    d = Dirtyctl(["attach", str(w.pid), "--json", "--interval", str(INTERVAL)])
    d.wait_type("attached")
    stop(w.pid)
    d.wait_intervals(2)
    os.kill(d.pid, signal.SIGINT)
    status = d.finish(timeout=10)
    check(status == 0, "exit status %d; stderr %r" % (status, d.stderr()))
    validate_report([o for _, o in d.timed_objects()], w.pid, runs=False)
    check(all(s in "T" for s in task_states(w.pid)), "the stopped target is now in state %r"
          % task_states(w.pid))
    check(tracer_pid(w.pid) == 0, "TracerPid %d" % tracer_pid(w.pid))
    check(open_fds(w.pid) == fds, "the target's fds are %r, were %r" % (open_fds(w.pid), fds))
    cont(w.pid)
    w.keeps_writing("continued after detach")
    w.terminate()


def test_usage_errors():
    require_backend()
    w = Workload(pages=64, seed=11)
    pid = str(w.pid)
    for args in (["attach"], ["attach", "--json"], ["attach", "not-a-pid"],
                 ["attach", pid, "--interval", "abc"], ["attach", pid, "--interval", "0"],
                 ["attach", pid, "--interval", "-1"], ["attach", pid, "--duration", "x"],
                 ["run"], ["run", "--json", "--"]):
        status, _, err = run([DIRTYCTL] + args)
        try:
            check_error(status, err, 2, one_line=False)
        except Failure as e:
            raise Failure("dirtyctl %s: %s" % (" ".join(args), e)) from None
    # an unknown option sends to the help of the verb that was given
    for verb in ("run", "attach", "heatmap", "dump"):
        status, _, err = run([DIRTYCTL, verb, "--bogus"])
        check(status == 2 and "see dirtyctl %s --help" % verb in err,
              "dirtyctl %s --bogus: status %d, %r" % (verb, status, err))
    check(tracer_pid(w.pid) == 0, "the workload is traced after the usage errors")
    w.terminate()


def test_unusable_backend():
    require_attach()
    if usable("soft-dirty"):
        pytest.skip("soft-dirty is usable here: no unusable backend that could track a pid")
    w = Workload(pages=64, seed=12)
    status, _, err = run([DIRTYCTL, "attach", str(w.pid), "--backend", "soft-dirty",
                          "--duration", "1"])
    check_error(status, err, 3)
    check(tracer_pid(w.pid) == 0, "the workload is traced after the refusal")
    w.keeps_writing("after the refusal")
    w.terminate()


def test_heatmap(workdir):
    """Test (e): the SVG parses and its cells add up to the report's pages."""
    require_backend()
    svg = os.path.join(workdir, "out.svg")
    report = ReportFile(os.path.join(workdir, "report.json"))
    d = Dirtyctl(["heatmap", "--svg", svg, "--interval", str(INTERVAL), "--json",
                  "--output", report.path, "--", WORKLOAD, "--pages", "1024", "--rounds", "30",
                  "--period-ms", "20", "--seed", "13", "--hold"])
    workload_done(d, report, 1024, 13, 30, "heatmap")
    status = d.finish(timeout=30)
    check(status == 0, "exit status %d; stderr %r" % (status, d.stderr()))
    check(len(d.output()) == 1, "stdout is not just the workload's line: %r" % d.output()[:5])
    _, _, summary = validate_report(report.read(), runs=False)
    try:
        root = ElementTree.parse(svg).getroot()
    except (ElementTree.ParseError, OSError) as e:
        raise Failure("%s does not parse as XML: %s" % (svg, e)) from None
    check(root.tag in ("svg", "{http://www.w3.org/2000/svg}svg"), "root is <%s>" % root.tag)
    check(root.get("data-total-pages") is not None, "no data-total-pages on the root")
    cells = [int(e.get("data-pages")) for e in root.iter()
             if e.tag.rpartition("}")[2] == "rect" and e.get("data-pages") is not None]
    check(any(cells), "no <rect> with data-pages > 0")
    total = int(root.get("data-total-pages"))
    check(sum(cells) == total, "the cells hold %d pages, data-total-pages is %d"
          % (sum(cells), total))
    check(total == summary["pages"], "data-total-pages %d, the summary says %d"
          % (total, summary["pages"]))


def dump_round_trip(extra, workdir):
    """dump an attached workload, stop it, take one more image, apply the
    chain: the rebuilt region equals the workload's memory byte for byte."""
    require_attach()
    w = Workload(pages=1024, seed=77, period_ms=10)
    images, out = os.path.join(workdir, "images"), os.path.join(workdir, "out")
    d = Dirtyctl(["dump", str(w.pid), "--dir", images, "--interval", str(INTERVAL),
                  "--json"] + extra)
    d.wait_json(lambda o: o.get("type") == "image" and o["sequence"] >= 3, 30,
                "three images")
    stop(w.pid)
    # two intervals more: one image has the last writes, one has none
    seen = len([o for _, o in d.timed_objects() if o.get("type") == "image"])
    d.wait_json(lambda o: o.get("type") == "image" and o["sequence"] >= seen + 1, 30,
                "images after the stop")
    final = w.snapshot()
    os.kill(d.pid, signal.SIGINT)
    status = d.finish()
    check(status == 0, "dump exit status %d; stderr %r" % (status, d.stderr()))
    objs = [o for _, o in d.timed_objects() if o.get("type") == "image"]
    check(all(o["error"] == 0 for o in objs), "an image failed: %r" % objs)
    # io_uring, or pwritev with the reason (a build without liburing, or refused)
    if "--pwritev" in extra:
        good = lambda m: m == "pwritev"
    else:
        good = lambda m: m == "io_uring" or m.startswith("pwritev (")
    check(all(good(o["method"]) for o in objs if o["pages"]),
          "not written as asked (%s): %r" % (extra, [o["method"] for o in objs]))
    files = sorted(os.path.join(images, f) for f in os.listdir(images))
    check(len(files) == len(objs), "%d files for %d images" % (len(files), len(objs)))
    rc, out_text, err_text = run([DIRTYCTL, "image", "verify"] + files)
    check(rc == 0, "verify: %r" % err_text)
    rc, out_text, err_text = run([DIRTYCTL, "image", "apply", "--out", out] + files)
    check(rc == 0, "apply: %r %r" % (out_text, err_text))
    name = [f for f in os.listdir(out) if f.startswith("%016x-%016x" % (w.start, w.start + w.length))]
    check(len(name) == 1, "no rebuilt file for the region %#x: %r" % (w.start, os.listdir(out)))
    with open(os.path.join(out, name[0]), "rb") as f:
        rebuilt = f.read()
    check(len(rebuilt) == len(final), "rebuilt %d bytes, region %d" % (len(rebuilt), len(final)))
    wrong = changed_pages(rebuilt, final)
    check(not wrong, "rebuilt pages differ from /proc/PID/mem: %s" % describe(wrong))
    # every other rebuilt region too: what the target's memory holds now
    for f_name in os.listdir(out):
        start, end = (int(x, 16) for x in f_name.split("-")[:2])
        try:
            live = read_memory(w.pid, start, end - start)
        except OSError:
            continue  # unmapped since, or not readable: nothing to compare
        with open(os.path.join(out, f_name), "rb") as f:
            wrong = changed_pages(f.read(), live)
        check(not wrong, "%s differs from /proc/PID/mem: %s" % (f_name, describe(wrong)))
    # an earlier state: the base image alone is the region as it was at the attach
    rc, out_text, err_text = run([DIRTYCTL, "image", "apply", "--upto", "0", "--out", out + "0"] + files)
    check(rc == 0, "apply --upto 0: %r" % err_text)
    w.terminate()


def test_dump_round_trip(workdir):
    dump_round_trip([], workdir)


def test_dump_round_trip_pwritev(workdir):
    dump_round_trip(["--pwritev"], workdir)


def test_dump_corrupt_chain(workdir):
    """A chain with a bad image anywhere applies nothing, and says which."""
    require_attach()
    images = os.path.join(workdir, "images")
    # the workload writes until its SIGTERM, which comes once dump has
    # taken its three images and waits for it
    report = ReportFile(os.path.join(workdir, "report.json"))
    d = Dirtyctl(["dump", "--dir", images, "--interval", str(INTERVAL), "--count", "3",
                  "--json", "--output", report.path, "--", WORKLOAD, "--pages", "256",
                  "--period-ms", "5", "--seed", "3"])
    pid = report.wait("attached")[0]["pid"]
    report.wait("image", 3)
    os.kill(pid, signal.SIGTERM)
    rc, err_text = d.finish(timeout=60), d.stderr()
    files = sorted(os.path.join(images, f) for f in os.listdir(images))
    check(rc == 0 and len(files) == 3, "dump: %d %r, files %r"
          % (rc, err_text, files))
    with open(files[1], "rb") as f:
        good = f.read()
    cases = {
        "truncated": (good[:len(good) - 4096], "truncated"),
        "flipped data byte": (good[:3 * 4096 + 17] + bytes([good[3 * 4096 + 17] ^ 1])
                              + good[3 * 4096 + 18:], "corrupt"),
        "flipped header byte": (good[:40] + bytes([good[40] ^ 0x80]) + good[41:], "corrupt"),
        "not an image": (b"hello" * 1000, "corrupt"),
    }
    for what, (data, message) in cases.items():
        with open(files[1], "wb") as f:
            f.write(data)
        out = os.path.join(workdir, "out")
        rc, out_text, err_text = run([DIRTYCTL, "image", "apply", "--out", out] + files)
        check(rc == 1, "%s: apply exit status %d" % (what, rc))
        check(message in err_text and "nothing applied" in err_text,
              "%s: stderr %r" % (what, err_text))
        check(not os.path.exists(out) and not os.path.exists(out + ".partial"),
              "%s: something was applied" % what)
        rc, out_text, err_text = run([DIRTYCTL, "image", "verify"] + files)
        check(rc == 1 and os.path.basename(files[1]) in err_text,
              "%s: verify %d %r" % (what, rc, err_text))
    with open(files[1], "wb") as f:
        f.write(good)
    rc, out_text, err_text = run([DIRTYCTL, "image", "apply", "--out", os.path.join(workdir, "out")] + files[1:])
    check(rc == 1 and "base image" in err_text,
          "a chain without its base: %d %r" % (rc, err_text))
    rc, out_text, err_text = run([DIRTYCTL, "image", "info"] + files)
    check(rc == 0 and "base (every page)" in out_text and "incremental" in out_text,
          "info: %r" % out_text)
