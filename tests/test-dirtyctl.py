#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""End-to-end tests of dirtyctl run / attach / heatmap.

    test-dirtyctl.py BUILD_DIR [TEST...]

Uses BUILD_DIR/tools/dirtyctl and BUILD_DIR/tests/dirty-workload (whose write
pattern is a pure function of its seed: see tests/dirty-workload.c, recomputed
by predict_writes() here).  Prints "ok NAME", "FAIL NAME: reason" or
"skip NAME: reason" per test; exits 1 if any failed, 77 if every test that runs
dirtyctl was skipped (no backend here can track another process), else 0.

Every process a test starts is in its own process group and is killed when the
test ends; every wait has a timeout, a test that runs longer than TEST_TIMEOUT
fails, and the whole run is stopped at SUITE_TIMEOUT, so that a hung dirtyctl
fails the suite instead of hanging it.
"""
import hashlib
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import xml.etree.ElementTree as ElementTree

PAGE = os.sysconf("SC_PAGE_SIZE")
INTERVAL = 0.2
TEST_TIMEOUT = 90        # seconds, one test
SUITE_TIMEOUT = 280      # seconds, the whole run (meson's timeout is 300)
FILL_BYTE = 0xA5         # what dirty-workload writes to every page first
PF_KTHREAD = 0x00200000  # /proc/PID/stat flags of a kernel thread
MASK64 = (1 << 64) - 1

DIRTYCTL = None
WORKLOAD = None


class Failure(Exception):
    pass


class Skip(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


# ---------------------------------------------------------------------------
# Processes: every one is registered, in its own process group, and killed at
# the end of the test that started it (or by the watchdog).

_lock = threading.Lock()
_procs = []
_timed_out = set()
_stopping = False        # the watchdog ends the suite: nothing new starts


def spawn(argv, **kwargs):
    with _lock:
        if _stopping:
            raise Failure("the suite is being stopped")
        proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
        _procs.append(proc)
    return proc


def kill_group(proc):
    """Kill proc's whole process group (run's child too), and reap proc."""
    for sig in (signal.SIGCONT, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def kill_all():
    with _lock:
        procs = list(_procs)
        _procs.clear()
    for proc in procs:
        kill_group(proc)


def wait_exit(proc, timeout, what):
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Failure("%s did not exit within %g s" % (what, timeout)) from None


def run(argv, timeout=30, **kwargs):
    """Run argv to its end; returns (exit status, stdout, stderr) as text."""
    proc = spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        raise Failure("%s did not exit within %g s" % (" ".join(argv), timeout)) from None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def poll_until(predicate, timeout, what, step=0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Failure("%s: not within %g s" % (what, timeout))
        time.sleep(step)


# ---------------------------------------------------------------------------
# /proc

def proc_status(pid):
    fields = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def tracer_pid(pid):
    return int(proc_status(pid)["TracerPid"])


def task_states(pid):
    states = []
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                states.append(f.read().rpartition(")")[2].split()[0])
        except FileNotFoundError:
            pass
    return states


def process_state(pid):
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rpartition(")")[2].split()[0]


def stop(pid):
    """SIGSTOP pid and wait until every thread of it is stopped."""
    os.kill(pid, signal.SIGSTOP)
    poll_until(lambda: all(s in "Tt" for s in task_states(pid)), 10,
               "process %d stopping" % pid)


def cont(pid):
    os.kill(pid, signal.SIGCONT)


def open_fds(pid):
    """{fd: what it refers to}"""
    fds = {}
    path = "/proc/%d/fd" % pid
    for name in os.listdir(path):
        try:
            fds[int(name)] = os.readlink(os.path.join(path, name))
        except FileNotFoundError:
            pass
    return fds


def mappings(pid):
    """/proc/PID/maps as (start, end, perms, path), adjacent pieces merged: a
    tracker that leaves a mapping split is not a change of the address space."""
    merged = []
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            parts = line.split(None, 5)
            start, end = (int(x, 16) for x in parts[0].split("-"))
            perms, path = parts[1], parts[5].strip() if len(parts) > 5 else ""
            if merged and merged[-1][1] == start and merged[-1][2:] == (perms, path):
                merged[-1] = (merged[-1][0], end, perms, path)
            else:
                merged.append((start, end, perms, path))
    return merged


def signal_state(pid):
    """What an injection could leave behind: masks, dispositions, pending signals."""
    status = proc_status(pid)
    return {k: status[k] for k in ("SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt")}


def read_memory(pid, start, length):
    fd = os.open("/proc/%d/mem" % pid, os.O_RDONLY)
    try:
        data = os.pread(fd, length, start)
    finally:
        os.close(fd)
    check(len(data) == length, "short read of /proc/%d/mem: %d of %d bytes"
          % (pid, len(data), length))
    return data


def changed_pages(before, after):
    return {i for i in range(len(before) // PAGE)
            if before[i * PAGE:(i + 1) * PAGE] != after[i * PAGE:(i + 1) * PAGE]}


def describe(pages, limit=8):
    pages = sorted(pages)
    text = ", ".join(str(p) for p in pages[:limit])
    return "%d page(s) (index %s%s)" % (len(pages), text, ", ..." if len(pages) > limit else "")


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


def read_line(fd, timeout, what):
    """One line from a pipe, without reading past it."""
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        check(left > 0, "%s: no line within %g s (got %r)" % (what, timeout, data))
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            byte = os.read(fd, 1)
            check(byte, "%s: end of file after %r" % (what, data))
            data += byte
    return data.decode()


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

    def keeps_writing(self, what):
        """The next rounds still write even pages, and never odd ones."""
        first = self.snapshot()
        deadline = time.monotonic() + 5
        while True:
            second = self.snapshot()
            if second != first:
                break
            check(time.monotonic() < deadline, "%s: the workload's region does not change" % what)
            time.sleep(0.02)
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
# dirtyctl

class Dirtyctl:
    """dirtyctl in its own process group; stdout read line by line as it comes
    (with the time each line arrived), stderr kept in a file."""

    def __init__(self, args, stdin=subprocess.DEVNULL):
        self.args = args
        self.err = tempfile.TemporaryFile()
        self.proc = spawn([DIRTYCTL] + args, stdin=stdin, stdout=subprocess.PIPE,
                          stderr=self.err)
        self.pid = self.proc.pid
        self.lines = []          # (time.monotonic() when read, text)
        self.cond = threading.Condition()
        self.eof = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            with self.cond:
                self.lines.append((time.monotonic(), raw.decode(errors="replace")))
                self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def stderr(self):
        self.err.seek(0)
        return self.err.read().decode(errors="replace")

    def _context(self):
        status = self.proc.poll()
        return "(dirtyctl %s; %s; stderr: %r)" % (
            " ".join(self.args), "running" if status is None else "exit status %d" % status,
            self.stderr()[-500:])

    def wait_json(self, predicate, timeout, what):
        """The first line of stdout that is a JSON object satisfying predicate."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self.cond:
            while True:
                for _, text in self.lines[seen:]:
                    try:
                        obj = json.loads(text)
                    except ValueError:
                        raise Failure("not JSON on stdout: %r %s" % (text, self._context()))
                    if isinstance(obj, dict) and predicate(obj):
                        return obj
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if self.eof or left <= 0:
                    raise Failure("%s: not seen %s" % (what, self._context()))
                self.cond.wait(left)

    def wait_type(self, kind, timeout=20):
        return self.wait_json(lambda o: o.get("type") == kind, timeout,
                              'a "%s" line' % kind)

    def finish(self, timeout=20):
        """Wait for the exit; returns the exit status."""
        status = wait_exit(self.proc, timeout, "dirtyctl %s" % " ".join(self.args))
        self.reader.join(5)
        return status

    def output(self):
        with self.cond:
            return [text for _, text in self.lines]

    def timed_objects(self):
        """[(arrival time, object)] of everything on stdout, which must be JSON."""
        result = []
        with self.cond:
            lines = list(self.lines)
        for when, text in lines:
            try:
                result.append((when, json.loads(text)))
            except ValueError:
                raise Failure("not JSON on stdout: %r" % text) from None
        return result


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


def reported_pages(interval, start, length):
    """Page indexes of [start, start + length) in one interval's runs."""
    pages = set()
    for m in interval["mappings"]:
        for run_start, run_len in m.get("runs", []):
            lo, hi = int(run_start, 16), int(run_start, 16) + int(run_len, 16)
            lo, hi = max(lo, start), min(hi, start + length)
            pages.update(range((lo - start) // PAGE, (hi - start) // PAGE))
    return pages


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


# ---------------------------------------------------------------------------
# What this machine allows

_probe = None


def probe():
    global _probe
    if _probe is None:
        status, out, err = run([DIRTYCTL, "probe", "--json"], timeout=60)
        try:
            _probe = json.loads(out)
            _probe["backends"] = {b["name"]: b for b in _probe["backends"]}
        except (ValueError, KeyError, TypeError):
            _probe = {"error": "dirtyctl probe --json: status %d, stdout %r, stderr %r"
                      % (status, out[:300], err[:300])}
    if "error" in _probe:
        raise Failure(_probe["error"])
    return _probe


def usable(backend):
    entry = probe()["backends"].get(backend)
    return bool(entry and entry.get("usable"))


def require_backend():
    """Skip unless some backend can track another process (uffd-async, soft-dirty)."""
    if not (usable("uffd-async") or usable("soft-dirty")):
        reasons = "; ".join("%s: %s" % (n, probe()["backends"].get(n, {}).get("reason", "absent"))
                            for n in ("uffd-async", "soft-dirty"))
        raise Skip("no backend here tracks another process (%s)" % reasons)


def require_attach():
    """attach ptraces a process that is not its child: Yama may forbid that."""
    require_backend()
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            scope = int(f.read())
    except OSError:
        return
    if scope >= 3 or (scope >= 1 and os.geteuid() != 0):
        raise Skip("kernel.yama.ptrace_scope = %d forbids attaching to a non-child" % scope)


def uses_dirtyctl(func):
    func.uses_dirtyctl = True
    return func


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
    time.sleep(0.3)
    after = w.snapshot()
    changed = changed_pages(before, after)
    check(changed, "no page changed in 0.3 s")
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
    time.sleep(0.1)  # its threads exist: their stacks are in the "before" map
    fds, maps = open_fds(w.pid), mappings(w.pid)
    d = Dirtyctl(["attach", str(w.pid), "--json", "--runs", "--interval", str(INTERVAL)])
    d.wait_type("attached")
    poll_until(lambda: tracer_pid(w.pid) == 0, 2, "TracerPid 0 while tracked")
    check(open_fds(w.pid) == fds, "while tracked, the target has other fds: %r, before %r"
          % (open_fds(w.pid), fds))

    stop(w.pid)
    first = w.snapshot()
    cont(w.pid)
    time.sleep(1.5)
    stop(w.pid)
    stopped_at = time.monotonic()
    time.sleep(6 * INTERVAL)  # > 2 intervals: dirtyctl has collected everything
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
    check(changed, "the workload changed no page in 1.5 s")
    check(not {p for p in changed if p % 2}, "the workload changed odd pages")
    reported = set()
    for obj in intervals:
        reported |= reported_pages(obj, w.start, w.length)
    missed = changed - reported
    check(not missed, "written but not reported: %s of %d written"
          % (describe(missed), len(changed)))
    odd = {p for p in reported if p % 2}
    check(not odd, "reported but never written (odd): %s" % describe(odd))

    # An interval whose previous collect came after the stop saw no write.
    arrivals = [when for when, o in timed if o.get("type") == "interval"]
    before_stop = sum(1 for when in arrivals if when < stopped_at)
    before_resume = sum(1 for when in arrivals if when < resumed_at)
    quiet = intervals[before_stop + 2:before_resume]
    check(quiet, "no interval line while the target was stopped for %g s" % (6 * INTERVAL))
    for obj in quiet:
        pages = reported_pages(obj, w.start, w.length)
        check(not pages, "interval t=%s, the target stopped: reported %s"
              % (obj["t"], describe(pages)))
    w.terminate()


@uses_dirtyctl
def test_attach_exactness():
    attach_exactness(threads=1)


@uses_dirtyctl
def test_attach_exactness_threads():
    attach_exactness(threads=4)


@uses_dirtyctl
def test_run_exactness():
    """Test (b): run passes the command's stdout through and reports only
    pages it wrote; its exit status is the command's."""
    require_backend()
    pages, seed, rounds = 1024, 7, 30
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        d = Dirtyctl(["run", "--json", "--runs", "--interval", str(INTERVAL), "--output", report,
                      "--", WORKLOAD, "--pages", str(pages), "--rounds", str(rounds),
                      "--period-ms", "20", "--seed", str(seed)])
        status = d.finish(timeout=30)
        out = d.output()
        check(status == 0, "exit status %d; stderr %r" % (status, d.stderr()))
        check(d.stderr() == "", "stderr not empty: %r" % d.stderr())
        check(len(out) == 1, "stdout is not just the workload's line: %r" % out[:5])
        start, length = parse_region(out[0], pages)
        with open(report) as f:
            objs = parse_report(f.read().splitlines(), report)
    attached, intervals, summary = validate_report(objs, runs=True)
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


@uses_dirtyctl
def test_run_stdio_and_status():
    """run: stdin, stdout and stderr are the command's; its status is dirtyctl's,
    128 + N when a signal N killed it."""
    require_backend()
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        d = Dirtyctl(["run", "--json", "--interval", str(INTERVAL), "--output", report, "--",
                      "sh", "-c", "cat; echo to-stderr >&2; exit 3"], stdin=subprocess.PIPE)
        data = b"".join(b"line %d\n" % i for i in range(1000))
        time.sleep(0.5)
        d.proc.stdin.write(data)
        d.proc.stdin.close()
        status = d.finish()
        check(status == 3, "exit status %d, the command's was 3; stderr %r" % (status, d.stderr()))
        check("".join(d.output()).encode() == data, "stdout is not what cat was given")
        check(d.stderr() == "to-stderr\n", "stderr is not the command's: %r" % d.stderr())
        with open(report) as f:
            _, _, summary = validate_report(parse_report(f.read().splitlines(), report), runs=False)
        check(summary["exit_status"] == 3, "summary exit_status %r" % summary["exit_status"])

        d = Dirtyctl(["run", "--json", "--interval", str(INTERVAL), "--output", report, "--",
                      "sh", "-c", "sleep 0.5; kill -TERM $$"])
        status = d.finish()
        check(status == 128 + signal.SIGTERM, "exit status %d of a command killed by SIGTERM; "
              "stderr %r" % (status, d.stderr()))
        with open(report) as f:
            _, _, summary = validate_report(parse_report(f.read().splitlines(), report), runs=False)
        check(summary["exit_status"] == 128 + signal.SIGTERM,
              "summary exit_status %r" % summary["exit_status"])


# Test (c): real programs give the same output when attached to and detached from.

def real_program(argv, env=None):
    require_attach()
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for attach in (False, True):
            out_path = os.path.join(tmp, "out%d" % attach)
            with open(out_path, "wb") as out, tempfile.TemporaryFile() as err:
                began = time.monotonic()
                p = spawn(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=tmp,
                          env=env)
                if attach:
                    d = Dirtyctl(["attach", str(p.pid), "--json", "--interval", str(INTERVAL),
                                  "--duration", "1"])
                status = wait_exit(p, 60, argv[0])
                elapsed = time.monotonic() - began
                err.seek(0)
                stderr = err.read()
            with open(out_path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            check(status == 0, "%s exited %d (%s); stderr %r"
                  % (argv[0], status, "attached" if attach else "alone", stderr[-300:]))
            results.append((digest, stderr))
            if not attach:
                check(elapsed > 0.6, "%s ran only %.2f s alone: too short to attach to"
                      % (argv[0], elapsed))
        dstatus = d.finish()
        check(dstatus == 0, "dirtyctl exit status %d; stderr %r" % (dstatus, d.stderr()))
        objs = [o for _, o in d.timed_objects()]
        _, intervals, _ = validate_report(objs, p.pid, runs=False)
        check(intervals, "dirtyctl reported no interval")
        check(results[0][0] == results[1][0], "output differs when attached to")
        check(results[0][1] == results[1][1], "stderr differs when attached to: %r vs %r"
              % (results[0][1][-200:], results[1][1][-200:]))


PYTHON_PROGRAM = """
import hashlib
xs = [i * i % 1000003 for i in range(3000000)]
d = {}
for x in xs[::3]:
    d[x % 65521] = d.get(x % 65521, 0) + x
ys = sorted(xs, reverse=True)
print(sum(xs) % 1000003, len(d), hashlib.sha256(repr(ys[::997]).encode()).hexdigest())
"""


@uses_dirtyctl
def test_real_python():
    real_program([sys.executable, "-c", PYTHON_PROGRAM])


def generated_file(name, size, make_chunk):
    path = os.path.join(tempfile.gettempdir(), "test-dirtyctl-%d-%s" % (os.getpid(), name))
    rnd = random.Random(name)
    with open(path, "wb") as f:
        written = 0
        while written < size:
            chunk = make_chunk(rnd)
            f.write(chunk)
            written += len(chunk)
    return path


@uses_dirtyctl
def test_real_sort():
    if not shutil.which("sort"):
        raise Skip("sort is not installed")
    require_attach()
    path = generated_file("sort", 20 << 20, lambda rnd: b"".join(
        b"%016x %d\n" % (rnd.getrandbits(64), rnd.getrandbits(40)) for _ in range(10000)))
    try:
        # -g and a small buffer: slow enough to attach to, and merges through temp files
        real_program(["sort", "-k2,2gr", "-S", "8M", "-T", ".", path],
                     env=dict(os.environ, LC_ALL="C"))
    finally:
        os.unlink(path)


@uses_dirtyctl
def test_real_gzip():
    if not shutil.which("gzip"):
        raise Skip("gzip is not installed")
    require_attach()
    path = generated_file("gzip", 30 << 20, lambda rnd: rnd.randbytes(1 << 19).hex().encode())
    try:
        real_program(["gzip", "-c", path])
    finally:
        os.unlink(path)


def leaves_no_trace(w, fds, maps, signals, what):
    check(tracer_pid(w.pid) == 0, "%s: TracerPid %d" % (what, tracer_pid(w.pid)))
    check(open_fds(w.pid) == fds, "%s: the target's fds are %r, were %r"
          % (what, open_fds(w.pid), fds))
    check(mappings(w.pid) == maps, "%s: the target's mappings differ" % what)
    check(signal_state(w.pid) == signals, "%s: the target's signal state is %r, was %r"
          % (what, signal_state(w.pid), signals))
    check(process_state(w.pid) in "RS", "%s: target in state %s" % (what, process_state(w.pid)))
    w.keeps_writing(what)


@uses_dirtyctl
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


@uses_dirtyctl
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

@uses_dirtyctl
def test_no_such_process():
    require_backend()
    with open("/proc/sys/kernel/pid_max") as f:
        pid = int(f.read()) - 1
    while os.path.exists("/proc/%d" % pid):
        pid -= 1
    status, _, err = run([DIRTYCTL, "attach", str(pid), "--duration", "1"])
    check_error(status, err, 4, contains=str(pid))


@uses_dirtyctl
def test_zombie():
    require_backend()
    p = spawn(["true"])
    poll_until(lambda: process_state(p.pid) == "Z", 10, "true becoming a zombie")
    status, _, err = run([DIRTYCTL, "attach", str(p.pid), "--duration", "1"])
    check_error(status, err, 4, contains=str(p.pid))
    check(wait_exit(p, 5, "the zombie") == 0, "the zombie's status changed")


@uses_dirtyctl
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
        raise Skip("no kernel thread visible in this pid namespace")
    status, _, err = run([DIRTYCTL, "attach", str(kthread), "--duration", "1"])
    check_error(status, err, 4, contains=str(kthread))


@uses_dirtyctl
def test_already_traced():
    require_attach()
    if not shutil.which("strace"):
        raise Skip("strace is not installed (and tests install nothing)")
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


@uses_dirtyctl
def test_target_exits():
    """The target ends during tracking (and stays an unreaped zombie): dirtyctl
    ends too, 0, with a summary."""
    require_attach()
    w = Workload(pages=256, seed=8, rounds=50, period_ms=40, hold=False)
    d = Dirtyctl(["attach", str(w.pid), "--json", "--interval", str(INTERVAL),
                  "--duration", "60"])
    d.wait_type("attached")
    poll_until(lambda: process_state(w.pid) == "Z", 20, "the workload ending")  # not reaped
    status = d.finish(timeout=10)
    check(status == 0, "dirtyctl exit status %d; stderr %r" % (status, d.stderr()))
    _, intervals, summary = validate_report([o for _, o in d.timed_objects()], w.pid, runs=False)
    check(summary["exit_status"] in (None, 0), "summary exit_status %r, the target exited 0"
          % summary["exit_status"])
    check(intervals, "no interval reported in the target's last second")
    check(wait_exit(w.proc, 5, "the workload") == 0, "the workload's exit status is not 0")


@uses_dirtyctl
def test_dirtyctl_killed():
    """SIGKILL dirtyctl mid-interval: the target does not notice."""
    require_attach()
    w = Workload(pages=1024, seed=9)
    fds, maps, signals = open_fds(w.pid), mappings(w.pid), signal_state(w.pid)
    d = Dirtyctl(["attach", str(w.pid), "--json", "--interval", "0.5"])
    d.wait_type("attached")
    d.wait_type("interval", timeout=10)
    time.sleep(0.25)
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


@uses_dirtyctl
def test_detach_stopped_target():
    """SIGINT while the target is stopped: dirtyctl detaches and the target
    stays stopped, as it was; once continued it runs on."""
    require_attach()
    w = Workload(pages=1024, seed=10)
    fds = open_fds(w.pid)
    d = Dirtyctl(["attach", str(w.pid), "--json", "--interval", str(INTERVAL)])
    d.wait_type("attached")
    stop(w.pid)
    time.sleep(2 * INTERVAL)
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


@uses_dirtyctl
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
    check(tracer_pid(w.pid) == 0, "the workload is traced after the usage errors")
    w.terminate()


@uses_dirtyctl
def test_unusable_backend():
    require_attach()
    if usable("soft-dirty"):
        raise Skip("soft-dirty is usable here: no unusable backend that could track a pid")
    w = Workload(pages=64, seed=12)
    status, _, err = run([DIRTYCTL, "attach", str(w.pid), "--backend", "soft-dirty",
                          "--duration", "1"])
    check_error(status, err, 3)
    check(tracer_pid(w.pid) == 0, "the workload is traced after the refusal")
    w.keeps_writing("after the refusal")
    w.terminate()


@uses_dirtyctl
def test_heatmap():
    """Test (e): the SVG parses and its cells add up to the report's pages."""
    require_backend()
    with tempfile.TemporaryDirectory() as tmp:
        svg, report = os.path.join(tmp, "out.svg"), os.path.join(tmp, "report.json")
        d = Dirtyctl(["heatmap", "--svg", svg, "--interval", str(INTERVAL), "--json",
                      "--output", report, "--", WORKLOAD, "--pages", "1024", "--rounds", "30",
                      "--period-ms", "20", "--seed", "13"])
        status = d.finish(timeout=30)
        check(status == 0, "exit status %d; stderr %r" % (status, d.stderr()))
        check(len(d.output()) == 1, "stdout is not just the workload's line: %r" % d.output()[:5])
        with open(report) as f:
            _, _, summary = validate_report(parse_report(f.read().splitlines(), report),
                                            runs=False)
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


def dump_round_trip(extra):
    """dump an attached workload, stop it, take one more image, apply the
    chain: the rebuilt region equals the workload's memory byte for byte."""
    require_attach()
    w = Workload(pages=1024, seed=77, period_ms=10)
    with tempfile.TemporaryDirectory(dir=os.getcwd()) as tmp:
        images, out = os.path.join(tmp, "images"), os.path.join(tmp, "out")
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


@uses_dirtyctl
def test_dump_round_trip():
    dump_round_trip([])


@uses_dirtyctl
def test_dump_round_trip_pwritev():
    dump_round_trip(["--pwritev"])


@uses_dirtyctl
def test_dump_corrupt_chain():
    """A chain with a bad image anywhere applies nothing, and says which."""
    require_attach()
    with tempfile.TemporaryDirectory(dir=os.getcwd()) as tmp:
        images = os.path.join(tmp, "images")
        rc, out_text, err_text = run([DIRTYCTL, "dump", "--dir", images, "--interval", str(INTERVAL), "--count",
                 "3", "--", WORKLOAD, "--pages", "256", "--rounds", "400", "--period-ms",
                 "5", "--seed", "3"], timeout=60)
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
            out = os.path.join(tmp, "out")
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
        rc, out_text, err_text = run([DIRTYCTL, "image", "apply", "--out", os.path.join(tmp, "out")] + files[1:])
        check(rc == 1 and "base image" in err_text,
              "a chain without its base: %d %r" % (rc, err_text))
        rc, out_text, err_text = run([DIRTYCTL, "image", "info"] + files)
        check(rc == 0 and "base (every page)" in out_text and "incremental" in out_text,
              "info: %r" % out_text)


TESTS = [
    test_workload_alone,
    test_dump_round_trip,
    test_dump_round_trip_pwritev,
    test_dump_corrupt_chain,
    test_attach_exactness,
    test_attach_exactness_threads,
    test_run_exactness,
    test_run_stdio_and_status,
    test_real_python,
    test_real_sort,
    test_real_gzip,
    test_attach_leaves_no_trace,
    test_attach_keeps_pattern,
    test_no_such_process,
    test_zombie,
    test_kernel_thread,
    test_already_traced,
    test_target_exits,
    test_dirtyctl_killed,
    test_detach_stopped_target,
    test_usage_errors,
    test_unusable_backend,
    test_heatmap,
]


# ---------------------------------------------------------------------------
# The runner

_current = {"name": None, "since": 0.0}
_print_lock = threading.Lock()


def watchdog(suite_start):
    global _stopping
    while True:
        time.sleep(0.5)
        now = time.monotonic()
        with _lock:
            name, since = _current["name"], _current["since"]
        if now - suite_start > SUITE_TIMEOUT:
            with _lock:
                _stopping = True
            with _print_lock:  # the test's own FAIL line is not printed
                print("FAIL %s: the suite ran longer than %d s; stopped"
                      % (name, SUITE_TIMEOUT), flush=True)
                kill_all()
                os._exit(1)
        if name and name not in _timed_out and now - since > TEST_TIMEOUT:
            _timed_out.add(name)
            kill_all()  # whatever the test waits for ends, and it fails


def test_name(func):
    return func.__name__[len("test_"):].replace("_", "-")


def main(argv):
    global DIRTYCTL, WORKLOAD
    if len(argv) < 2:
        print("usage: test-dirtyctl.py BUILD_DIR [TEST...]", file=sys.stderr)
        return 2
    build = os.path.abspath(argv[1])
    DIRTYCTL = os.path.join(build, "tools", "dirtyctl")
    WORKLOAD = os.path.join(build, "tests", "dirty-workload")
    chosen = [t for t in TESTS if len(argv) == 2 or test_name(t) in argv[2:]]
    unknown = set(argv[2:]) - {test_name(t) for t in TESTS}
    if unknown:
        print("unknown test(s): %s" % ", ".join(sorted(unknown)), file=sys.stderr)
        return 2
    threading.Thread(target=watchdog, args=(time.monotonic(),), daemon=True).start()

    failed = skipped = ran_dirtyctl = 0
    for test in chosen:
        name = test_name(test)
        with _lock:
            _current.update(name=name, since=time.monotonic())
        try:
            for path in (WORKLOAD, DIRTYCTL):
                check(os.access(path, os.X_OK), "%s is missing" % path)
            test()
            result = "ok %s" % name
        except Skip as e:
            result, skipped = "skip %s: %s" % (name, e), skipped + 1
        except Failure as e:
            result, failed = "FAIL %s: %s" % (name, e), failed + 1
        except Exception:
            last = traceback.format_exc().strip().splitlines()
            result, failed = "FAIL %s: %s (%s)" % (name, last[-1], last[-3].strip()), failed + 1
        finally:
            kill_all()
            with _lock:
                _current.update(name=None)
        if name in _timed_out:
            if not result.startswith("FAIL"):
                failed += 1
            result = "FAIL %s: timed out after %d s" % (name, TEST_TIMEOUT)
        if getattr(test, "uses_dirtyctl", False) and not result.startswith("skip"):
            ran_dirtyctl += 1
        with _print_lock:
            print(result, flush=True)
    if failed:
        return 1
    if ran_dirtyctl == 0 and any(getattr(t, "uses_dirtyctl", False) for t in chosen):
        return 77
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
