# SPDX-License-Identifier: MIT
"""dirtyctl misses no page: the exactness cases of issue 13, end to end.

    pytest-3 --build-dir=BUILD tests/test-exact.py[::test_NAME]

Against BUILD/tests/exact-target, which does to its memory exactly what
it is told (tests/exact-target.c), talking through two named pipes so that
its answers never mix with dirtyctl's report:
  - pages written, collected and cleaned, then dropped (MADV_DONTNEED, or
    MADV_FREE and freed by the kernel) are reported by the next collect, under
    attach and run, and a dump's chain rebuilds them as zeroes;
  - 64 MiB mapped and written within one interval are reported in that
    interval, under run and attach;
  - a program that execs (exact-target, as a shim, execs exact-target) is
    followed by run and dump, and the dump's chain rebuilds the last
    program's memory.
Every wait is for an event (an answer, a report line, a process state);
dirtyctl is stopped (SIGSTOP) where the test needs writes to fall within one
interval.  Under pytest (tests/conftest.py, tests/harness.py: the process
handling), each test with its own timeout and its own skip.
"""
import os
import signal
import subprocess

import pytest

import harness
from harness import PAGE, Dirtyctl, Failure, check

pytestmark = pytest.mark.timeout(90)

INTERVAL = 0.2
DIRTYCTL = harness.DIRTYCTL
TARGET = os.path.join(harness.BUILD, "tests", "exact-target")


class Target:
    """exact-target, started directly or by dirtyctl run/dump, spoken to through
    two named pipes in a temporary directory."""

    def __init__(self, tmp, under=None):
        """under: dirtyctl arguments to start it with (run, dump), else it is
        started here.  Sets .pid, and .dirtyctl when under dirtyctl."""
        self.cmd_path, self.out_path = os.path.join(tmp, "in"), os.path.join(tmp, "out")
        os.mkfifo(self.cmd_path)
        os.mkfifo(self.out_path)
        argv = [harness.built("tests", "exact-target"), self.cmd_path, self.out_path]
        self.dirtyctl = self.proc = None
        if under is None:
            self.proc = harness.spawn(argv, stdin=subprocess.DEVNULL)
        else:
            self.dirtyctl = Dirtyctl(under + ["--"] + argv)
        # opened in the order the target opens them; each open waits for the other side
        self.cmd = os.open(self.cmd_path, os.O_WRONLY)
        self.out = os.open(self.out_path, os.O_RDONLY)
        self.pid = self.ready()

    def ready(self):
        words = harness.read_line(self.out, 20, "exact-target's ready line").split()
        check(len(words) == 2 and words[0] == "ready", "exact-target said %r" % words)
        return int(words[1])

    def do(self, command, timeout=30):
        """Send one command; its answer's words after "ok"."""
        os.write(self.cmd, (command + "\n").encode())
        words = harness.read_line(self.out, timeout, "the answer to %r" % command).split()
        check(words and words[0] == "ok", "exact-target, to %r: %r" % (command, words))
        return words[1:]

    def map(self, name, pages, fill=None):
        if fill is None:
            words = self.do("map %s %d" % (name, pages))
        else:
            words = self.do("mapfill %s %d %d" % (name, pages, fill))
        return int(words[0], 16)

    def exec_self(self):
        """exec exact-target again (it keeps its pipes); waits for it to be ready."""
        os.write(self.cmd, ("exec %s\n" % TARGET).encode())
        pid = self.ready()
        check(pid == self.pid, "the exec'ed program says pid %d, not %d" % (pid, self.pid))

    def quit(self):
        """quit: it exits 0, with no answer."""
        os.write(self.cmd, b"quit\n")

    def close(self):
        for fd in (self.cmd, self.out):
            try:
                os.close(fd)
            except OSError:
                pass


def pages_in(interval, start, npages):
    return harness.reported_pages(interval, start, npages * PAGE)


def is_interval(obj):
    return obj.get("type") == "interval"


def is_image(obj):
    return obj.get("type") == "image"


def wait_reported(d, index, start, npages, want, what, intervals=15):
    """Intervals from line index on, until the pages want of [start, +npages)
    have all been reported; returns (next index, everything reported meanwhile)."""
    seen, count = set(), 0
    while not want <= seen:
        check(count < intervals, "%s: after %d intervals, pages %s of the %d were never reported"
              % (what, count, harness.describe(want - seen), len(want)))
        index, obj = d.after(index, is_interval, 20, what)
        seen |= pages_in(obj, start, npages)
        index, count = index + 1, count + 1
    return index, seen


# ---------------------------------------------------------------------------
# Dropped pages (issue 13, DIRTY_TRACKER_SPARSE)

def drops_under(d, t, start, what, free):
    """With dirtyctl d watching t (--json --runs), and t's map a of 64 pages at
    start: written pages are reported and cleaned, then dropped ones are
    reported again, and nothing else."""
    index = d.line_count()
    t.do("fill a 0 64 34")
    index, _ = wait_reported(d, index, start, 64, set(range(64)), "%s: the written pages" % what)
    dropped = set(range(10, 15))
    t.do("dontneed a 10 5")
    if free:
        freed = int(t.do("free a 30 5")[0])
        if freed < 5:
            pytest.skip("MADV_PAGEOUT left %d of 5 MADV_FREE pages in memory: the kernel does "
                        "not free them on request" % (5 - freed))
        dropped |= set(range(30, 35))
    index, seen = wait_reported(d, index, start, 64, dropped, "%s: the dropped pages" % what)
    check(seen == dropped, "%s: pages reported that nobody changed: %s"
          % (what, harness.describe(seen - dropped)))


def test_attach_reports_dropped_pages(workdir):
    """attach: MADV_DONTNEED and MADV_FREE (freed) after a collect are reported."""
    harness.require_attach()
    t = Target(workdir)
    start = t.map("a", 64, fill=0x11)  # there at the attach
    d = Dirtyctl(["attach", str(t.pid), "--interval", str(INTERVAL), "--json", "--runs"])
    d.wait_type("attached")
    drops_under(d, t, start, "attach", free=True)
    t.close()


def test_run_reports_dropped_pages(workdir):
    """run: the same, MADV_DONTNEED."""
    harness.require_attach()
    t = Target(workdir, under=["run", "--interval", str(INTERVAL), "--json", "--runs"])
    t.dirtyctl.wait_type("attached")
    drops_under(t.dirtyctl, t, t.map("a", 64, fill=0x11), "run", free=False)
    t.quit()
    check(t.dirtyctl.finish() == 0, "run: exit status, stderr %r" % t.dirtyctl.stderr())
    t.close()


def images_after(d, index, count, what):
    """Wait for count more image lines from index on; returns the next index."""
    for _ in range(count):
        index, obj = d.after(index, is_image, 20, what)
        check(obj["error"] == 0, "%s: image %d failed: %r" % (what, obj["sequence"], obj))
        index += 1
    return index


def apply_chain(d, out):
    """verify and apply the images dirtyctl d has reported so far (a file it
    may be writing now is not one of them)."""
    objs = [o for _, o in d.timed_objects() if o.get("type") == "image"]
    check(all(o["error"] == 0 for o in objs), "an image failed: %r" % objs)
    files = [o["file"] for o in objs]
    rc, out_text, err_text = harness.run([DIRTYCTL, "image", "verify"] + files)
    check(rc == 0, "verify: %r" % err_text)
    rc, out_text, err_text = harness.run([DIRTYCTL, "image", "apply", "--out", out] + files)
    check(rc == 0, "apply: %r %r" % (out_text, err_text))
    return files, objs


def rebuilt_ranges(out):
    return [tuple(int(x, 16) for x in name.split("-")[:2]) + (name,) for name in os.listdir(out)]


def holds(out, address):
    return any(lo <= address < hi for lo, hi, _ in rebuilt_ranges(out))


def compare_rebuilt(out, pid, must):
    """Every rebuilt region equals /proc/PID/mem (the target stopped), and
    the addresses must lie in rebuilt regions."""
    for lo, hi, name in rebuilt_ranges(out):
        try:
            live = harness.read_memory(pid, lo, hi - lo)
        except OSError as e:
            raise Failure("%s was rebuilt, but the process has no such memory: %s" % (name, e))
        with open(os.path.join(out, name), "rb") as f:
            wrong = harness.changed_pages(f.read(), live)
        check(not wrong, "%s differs from /proc/PID/mem: %s" % (name, harness.describe(wrong)))
    for address in must:
        check(holds(out, address), "no rebuilt region holds %#x: %r"
              % (address, sorted(os.listdir(out))))


def test_dump_rebuilds_dropped_pages(workdir):
    """dump: pages written, imaged, then dropped are rebuilt as zeroes."""
    harness.require_attach()
    t = Target(workdir)
    start = t.map("a", 64, fill=0x11)
    images, out = os.path.join(workdir, "images"), os.path.join(workdir, "rebuilt")
    d = Dirtyctl(["dump", str(t.pid), "--dir", images, "--interval", str(INTERVAL),
                       "--json"])
    index = images_after(d, 0, 1, "the base image")
    t.do("fill a 0 64 34")
    # the second image from here began after the writes: they are imaged, and clean
    index = images_after(d, d.line_count(), 2, "images of the writes")
    t.do("dontneed a 10 5")
    freed = int(t.do("free a 30 5")[0])
    index = images_after(d, d.line_count(), 2, "images after the drops")
    harness.stop(t.pid)
    images_after(d, d.line_count(), 2, "images after the stop")
    final = harness.read_memory(t.pid, start, 64 * PAGE)
    check(final[10 * PAGE:15 * PAGE] == bytes(5 * PAGE), "the dropped pages are not zeroes")
    apply_chain(d, out)
    compare_rebuilt(out, t.pid, [start])
    os.kill(d.pid, signal.SIGINT)
    check(d.finish() == 0, "dump: exit status, stderr %r" % d.stderr())
    harness.cont(t.pid)
    t.close()
    if freed < 5:
        pytest.skip("MADV_DONTNEED checked; MADV_PAGEOUT left %d of 5 MADV_FREE pages in "
                    "memory: the kernel does not free them on request" % (5 - freed))


def test_dump_survives_unmap(workdir):
    """dump: memory unmapped between two images is left out of the next one;
    the chain goes on (it stopped with "Stale file handle")."""
    harness.require_attach()
    t = Target(workdir)
    a = t.map("a", 32, fill=0x11)
    b = t.map("b", 32, fill=0x22)
    t.map("c", 1)  # keeps a and b apart: the kernel would merge them
    images, out = os.path.join(workdir, "images"), os.path.join(workdir, "rebuilt")
    d = Dirtyctl(["dump", str(t.pid), "--dir", images, "--interval", str(INTERVAL),
                       "--json"])
    images_after(d, 0, 1, "the base image")
    t.do("fill a 0 4 51")
    t.do("unmap b")
    images_after(d, d.line_count(), 3, "images after the unmap")
    harness.stop(t.pid)
    images_after(d, d.line_count(), 2, "images after the stop")
    files, objs = apply_chain(d, out)
    # b's file holds b as it was when it went away: apply does not forget regions
    live = [(lo, hi, name) for lo, hi, name in rebuilt_ranges(out) if not lo <= b < hi]
    for lo, hi, name in live:
        with open(os.path.join(out, name), "rb") as f:
            wrong = harness.changed_pages(f.read(), harness.read_memory(t.pid, lo, hi - lo))
        check(not wrong, "%s differs from /proc/PID/mem: %s" % (name, harness.describe(wrong)))
    check(holds(out, a), "a was not rebuilt")
    os.kill(d.pid, signal.SIGINT)
    check(d.finish() == 0, "dump: exit status, stderr %r" % d.stderr())
    harness.cont(t.pid)
    t.close()


# ---------------------------------------------------------------------------
# Memory mapped and written within one interval

def new_mapping_under(d, t, what):
    """64 MiB mapped and written while dirtyctl is stopped (so, between two of
    its collects): the first interval that reports the mapping reports all of it."""
    npages = 16384
    d.wait_type("attached")
    d.after(0, is_interval, 20, "%s: a first interval" % what)
    os.kill(d.pid, signal.SIGSTOP)
    try:
        start = t.map("b", npages, fill=0x33)
        index = d.line_count()
    finally:
        os.kill(d.pid, signal.SIGCONT)
    for _ in range(10):
        index, obj = d.after(index, is_interval, 20, "%s: the interval of the writes" % what)
        seen = pages_in(obj, start, npages)
        if seen:
            check(len(seen) == npages, "%s: 64 MiB mapped and written within one interval: "
                  "%d of its %d pages reported in that interval" % (what, len(seen), npages))
            return
        index += 1
    raise Failure("%s: the 64 MiB mapped and written were never reported" % what)


def test_attach_counts_new_mapping(workdir):
    harness.require_attach()
    t = Target(workdir)
    d = Dirtyctl(["attach", str(t.pid), "--interval", "0.3", "--json", "--runs"])
    new_mapping_under(d, t, "attach")
    t.close()


def test_run_counts_new_mapping(workdir):
    harness.require_attach()
    t = Target(workdir, under=["run", "--interval", "0.3", "--json", "--runs"])
    new_mapping_under(t.dirtyctl, t, "run")
    t.quit()
    check(t.dirtyctl.finish() == 0, "run: exit status, stderr %r" % t.dirtyctl.stderr())
    t.close()


# ---------------------------------------------------------------------------
# A program that execs

def test_dump_follows_exec(workdir):
    """dump -- SHIM: the chain goes on through the exec with the new program's
    base image; verify accepts it, apply rebuilds the last program's memory."""
    harness.require_attach()
    images, out = os.path.join(workdir, "images"), os.path.join(workdir, "rebuilt")
    t = Target(workdir, under=["dump", "--dir", images, "--interval", str(INTERVAL), "--json"])
    d = t.dirtyctl
    old = t.map("a", 64, fill=0x11)
    images_after(d, 0, 2, "images of the shim")
    t.exec_self()
    index = d.line_count()
    b = t.map("b", 32, fill=0x44)
    c = t.map("c", 16, fill=0x55)
    index, obj = d.after(index, lambda o: is_image(o) and o.get("new_program"), 20,
                       "the new program's base image")
    check(obj["error"] == 0, "the new program's base image failed: %r" % obj)
    index = images_after(d, index + 1, 2, "images of the new program")
    t.do("fill b 3 2 102")
    t.do("dontneed c 0 4")
    images_after(d, d.line_count(), 2, "images of its writes")
    harness.stop(t.pid)
    images_after(d, d.line_count(), 2, "images after the stop")
    files, objs = apply_chain(d, out)
    seqs = [o["sequence"] for o in objs]
    check(seqs == list(range(len(seqs))), "the sequence does not go on: %r" % seqs)
    check(sum(1 for o in objs if o.get("new_program")) == 1,
          "not one new program's base: %r" % objs)
    compare_rebuilt(out, t.pid, [b, c])
    check(not holds(out, old), "the shim's memory was rebuilt with the last program's")
    rc, out_text, err_text = harness.run([DIRTYCTL, "image", "info"] + files)
    check(rc == 0 and "base of a new program" in out_text, "info: %r" % out_text)
    # the chain up to the shim's last image rebuilds the shim's memory
    upto = [o["sequence"] for o in objs if o.get("new_program")][0] - 1
    rc, out_text, err_text = harness.run([DIRTYCTL, "image", "apply", "--upto", str(upto),
                                       "--out", out + "-shim"] + files)
    check(rc == 0, "apply --upto %d: %r" % (upto, err_text))
    check(holds(out + "-shim", old), "the shim's memory was not rebuilt")
    check("failed" not in d.stderr() and "error" not in d.stderr(),
          "dump: stderr %r" % d.stderr())
    t.close()


def follows_exec(tmp, verb):
    """verb -- SHIM: what the new program writes at once is reported."""
    t = Target(tmp, under=verb + ["--interval", str(INTERVAL), "--json", "--runs"])
    d = t.dirtyctl
    d.wait_type("attached")
    t.exec_self()
    index = d.line_count()
    b = t.map("b", 256, fill=0x44)
    wait_reported(d, index, b, 256, set(range(256)), "%s: the new program's writes" % verb[0])
    t.quit()
    check(d.finish() == 0, "%s: exit status, stderr %r" % (verb[0], d.stderr()))
    t.close()


def test_run_follows_exec(workdir):
    harness.require_attach()
    follows_exec(workdir, ["run"])


def test_heatmap_follows_exec(workdir):
    harness.require_attach()
    svg = os.path.join(workdir, "heat.svg")
    follows_exec(workdir, ["heatmap", "--svg", svg])
    with open(svg) as f:
        check("<svg" in f.read(), "heatmap: %s is not an SVG" % svg)
