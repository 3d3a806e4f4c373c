# SPDX-License-Identifier: MIT
"""What the pytest suites of dirtyctl share (tests/test-dirtyctl.py,
tests/test-exact.py, tests/test-attach.py): the build's programs, processes
started in their own session and killed when the test ends, waits that end
on an event (a line, a state in /proc) or fail at a deadline that only a
hang reaches, readers of /proc, and dirtyctl with its report read line by
line as it comes.

tests/conftest.py calls configure() with the build directory before the
test modules are imported, and kill_all() after each test.
"""
import json
import os
import select
import signal
import subprocess
import tempfile
import threading
import time

import pytest

PAGE = os.sysconf("SC_PAGE_SIZE")

BUILD = DIRTYCTL = LIBDIRTY = None
PROBE_INJECTION = False


def configure(build_dir, probe_injection):
    """The programs of the build in build_dir; probe_injection: the build
    honours the test hooks (-Dprobe_injection=true)."""
    global BUILD, DIRTYCTL, LIBDIRTY, PROBE_INJECTION
    BUILD = os.path.abspath(build_dir)
    DIRTYCTL = os.path.join(BUILD, "tools", "dirtyctl")
    LIBDIRTY = os.path.join(BUILD, "libdirty.so")
    PROBE_INJECTION = probe_injection


def built(*path):
    """A program of the build: its path, which must be there."""
    full = os.path.join(BUILD, *path)
    check(os.access(full, os.X_OK), "%s is missing" % full)
    return full


class Failure(AssertionError):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


# ---------------------------------------------------------------------------
# Processes: every one in its own session, killed at the end of the test
# that started it (kill_all(), from tests/conftest.py).

_lock = threading.Lock()
_procs = []
_cleanups = []


def spawn(argv, **kwargs):
    proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
    with _lock:
        _procs.append(proc)
    return proc


def at_end_of_test(cleanup):
    """cleanup() runs when the test ends, before its processes are killed."""
    with _lock:
        _cleanups.append(cleanup)


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
        procs, _procs[:] = list(_procs), []
        cleanups, _cleanups[:] = list(_cleanups), []
    for cleanup in cleanups:
        try:
            cleanup()
        except Exception:
            pass
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


def poll_until(predicate, timeout, what, step=0.01):
    """Wait for a state (in /proc, mostly) that comes without a line to wait on."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Failure("%s: not within %g s" % (what, timeout))
        time.sleep(step)


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


# ---------------------------------------------------------------------------
# /proc

def status_of(path):
    """A /proc status file as {field: value}."""
    fields = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def proc_status(pid):
    return status_of("/proc/%d/status" % pid)


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


def where(pid):
    """What each thread of pid is doing: its state, and the kernel function it
    waits in (to tell a hang from a slow machine)."""
    threads = []
    try:
        for tid in sorted(os.listdir("/proc/%d/task" % pid)):
            try:
                with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                    state = f.read().rpartition(")")[2].split()[0]
                with open("/proc/%d/task/%s/wchan" % (pid, tid)) as f:
                    wchan = f.read().strip()
            except OSError:
                continue
            waits = " in " + wchan if wchan not in ("", "0") else ""
            threads.append("%s %s%s" % (tid, state, waits))
    except OSError as e:
        return "(%s)" % e
    return ", ".join(threads)


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
# dirtyctl

class Dirtyctl:
    """dirtyctl in its own session; stdout read line by line as it comes
    (with the time each line arrived), stderr kept in a file."""

    def __init__(self, args, stdin=subprocess.DEVNULL):
        self.args = args
        self.err = tempfile.TemporaryFile()
        self.proc = spawn([built("tools", "dirtyctl")] + args, stdin=stdin,
                          stdout=subprocess.PIPE, stderr=self.err)
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

    def context(self):
        status = self.proc.poll()
        return "(dirtyctl %s; %s; stderr: %r)" % (
            " ".join(self.args), "exit status %d" % status if status is not None
            else "running: %s" % where(self.pid), self.stderr()[-500:])

    def after(self, index, predicate, timeout, what):
        """The first line at or after line index that is a JSON object
        satisfying predicate, and its index."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(index, len(self.lines)):
                    text = self.lines[i][1]
                    try:
                        obj = json.loads(text)
                    except ValueError:
                        raise Failure("not JSON on stdout: %r %s" % (text, self.context()))
                    if isinstance(obj, dict) and predicate(obj):
                        return i, obj
                index = len(self.lines)
                left = deadline - time.monotonic()
                if self.eof or left <= 0:
                    raise Failure("%s: not seen %s" % (what, self.context()))
                self.cond.wait(left)

    def wait_json(self, predicate, timeout, what):
        """The first line of stdout that is a JSON object satisfying predicate."""
        return self.after(0, predicate, timeout, what)[1]

    def wait_type(self, kind, timeout=20):
        return self.wait_json(lambda o: o.get("type") == kind, timeout,
                              'a "%s" line' % kind)

    def line_count(self):
        with self.cond:
            return len(self.lines)

    def wait_intervals(self, count, timeout=20):
        """count more "interval" lines than there are now."""
        index = self.line_count()
        for n in range(count):
            index, _ = self.after(index, lambda o: o.get("type") == "interval", timeout,
                                  "interval line %d of %d more" % (n + 1, count))
            index += 1

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


def reported_pages(interval, start, length):
    """Page indexes of [start, start + length) in one interval's runs."""
    pages = set()
    for m in interval["mappings"]:
        for run_start, run_len in m.get("runs", []):
            lo, hi = int(run_start, 16), int(run_start, 16) + int(run_len, 16)
            lo, hi = max(lo, start), min(hi, start + length)
            pages.update(range((lo - start) // PAGE, (hi - start) // PAGE))
    return pages


# ---------------------------------------------------------------------------
# What this machine allows: a test that needs what it lacks is skipped, with
# the reason.

_probe = None


def probe():
    """dirtyctl probe --json, once; its backends by name."""
    global _probe
    if _probe is None:
        status, out, err = run([built("tools", "dirtyctl"), "probe", "--json"], timeout=60)
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
        pytest.skip("no backend here tracks another process (%s)" % reasons)


def require_attach():
    """attach ptraces a process that is not its child: Yama may forbid that."""
    require_backend()
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            scope = int(f.read())
    except OSError:
        return
    if scope >= 3 or (scope >= 1 and os.geteuid() != 0):
        pytest.skip("kernel.yama.ptrace_scope = %d forbids attaching to a non-child" % scope)


def require_uffd_async():
    entry = probe()["backends"].get("uffd-async", {})
    if not entry.get("usable"):
        pytest.skip("uffd-async is not usable here: %s" % entry.get("reason", "absent"))
