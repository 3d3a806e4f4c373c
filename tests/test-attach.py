# SPDX-License-Identifier: MIT
"""Attaching never harms the target: tests of libdirty/base/remote.c through
dirtyctl attach (and dirty_tracker_new() through ctypes).

    pytest-3 --build-dir=BUILD --probe-injection=true|false tests/test-attach.py[::test_NAME]

BUILD holds tools/dirtyctl, tests/attach-target and libdirty.so;
--probe-injection=true says that the build honours the test hooks
(LIBDIRTY_TEST_REMOTE_PAUSE, LIBDIRTY_PROBE_FAIL), else the tests that need
them are skipped.  (meson test --suite dirtyctl runs each test as a meson
test of its own: tests/meson.build.)

Every test attaches to a real attach-target process and checks it
afterwards against a snapshot taken before: alive, no tracer, the same
descriptors, per thread the same signal mask, pending signals, dispositions,
state and system call, the same shared pending signals; and what its own
handlers saw (no SIGSYS, no system call that returned when nothing should
have made it, siginfo of every signal: code, sender, value).

Each test has its own timeout and its own skip (pytest, tests/conftest.py;
the process handling is tests/harness.py's).  Nothing here waits for a time
to pass to order events: it waits for a line, a FIFO, or a state in /proc,
each with a generous deadline that only a hang reaches.
"""
import ctypes
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import pytest

import harness
from harness import (check, open_fds, poll_until, read_line, require_uffd_async, run, spawn,
                     status_of, tracer_pid)

pytestmark = pytest.mark.timeout(60)

NOBODY = 65534
SI_USER, SI_QUEUE = 0, -1
SIGRTMIN = signal.SIGRTMIN
# the numbers /proc/PID/task/TID/syscall shows, per architecture
SYS_read, SYS_rt_sigsuspend, SYS_restart_syscall = {
    "x86_64": (0, 130, 219), "aarch64": (63, 133, 128)}[os.uname().machine]

DIRTYCTL = harness.DIRTYCTL
TARGET = os.path.join(harness.BUILD, "tests", "attach-target")
LIBDIRTY = harness.LIBDIRTY
PROBE_INJECTION = harness.PROBE_INJECTION


# ---------------------------------------------------------------------------
# Processes

def as_user(argv, uid=NOBODY):
    return ["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups"] + argv


def environment(**extra):
    env = dict(os.environ)
    env.pop("LIBDIRTY_BACKEND", None)
    env.update(extra)
    return env


# ---------------------------------------------------------------------------
# /proc

def thread_syscall(pid, tid):
    try:
        with open("/proc/%d/task/%d/syscall" % (pid, tid)) as f:
            first = f.read().split()
    except OSError:
        return None
    return int(first[0]) if first and first[0].lstrip("-").isdigit() else None


def snapshot(pid):
    """What an attach could change, per thread and for the process."""
    threads = {}
    for name in os.listdir("/proc/%d/task" % pid):
        tid = int(name)
        try:
            st = status_of("/proc/%d/task/%d/status" % (pid, tid))
        except FileNotFoundError:
            continue
        threads[tid] = {
            "state": st["State"][0],
            "signals": {k: st[k] for k in ("SigPnd", "SigBlk", "SigIgn", "SigCgt")},
            "tracer": int(st["TracerPid"]),
            "syscall": thread_syscall(pid, tid),
        }
    return {"fds": open_fds(pid), "shared": status_of("/proc/%d/status" % pid)["ShdPnd"],
            "threads": threads}


def same_state(a, b):
    running = "RS"  # a thread that runs or sleeps in a call may show either
    return a == b or (a in running and b in running)


def unharmed(pid, before, what, report=None):
    """The target as it was: see the module's docstring."""
    poll_until(lambda: all(tracer_pid_of(pid, t) == 0 for t in before["threads"]), 20,
               "%s: the tracer letting go of process %d" % (what, pid))
    after = snapshot(pid)
    check(after["fds"] == before["fds"], "%s: descriptors are %r, were %r"
          % (what, after["fds"], before["fds"]))
    check(after["shared"] == before["shared"], "%s: shared pending signals %s, were %s"
          % (what, after["shared"], before["shared"]))
    check(set(after["threads"]) == set(before["threads"]), "%s: threads %r, were %r"
          % (what, sorted(after["threads"]), sorted(before["threads"])))
    for tid, was in before["threads"].items():
        now = after["threads"][tid]
        check(now["signals"] == was["signals"], "%s: thread %d signals %r, were %r"
              % (what, tid, now["signals"], was["signals"]))
        check(same_state(was["state"], now["state"]), "%s: thread %d in state %s, was %s"
              % (what, tid, now["state"], was["state"]))
        if was["syscall"] is not None and now["syscall"] is not None:
            # a sleep restarts as restart_syscall(2) after any stop
            check(now["syscall"] in (was["syscall"], SYS_restart_syscall),
                  "%s: thread %d in system call %d, was %d"
                  % (what, tid, now["syscall"], was["syscall"]))
    if report is not None:
        check(report["sigsys"] == 0, "%s: the target got %d SIGSYS" % (what, report["sigsys"]))
        check(not report["anomalies"], "%s: the target saw %r" % (what, report["anomalies"]))


def tracer_pid_of(pid, tid):
    try:
        return int(status_of("/proc/%d/task/%d/status" % (pid, tid))["TracerPid"])
    except FileNotFoundError:
        return 0


def thread_states(pid):
    return snapshot(pid)["threads"]


# ---------------------------------------------------------------------------
# The target and dirtyctl

class Target:
    """attach-target in its own session; commands on its stdin."""

    def __init__(self, *options, user=None):
        argv = [TARGET] + list(options)
        self.err = tempfile.TemporaryFile()
        self.proc = spawn(as_user(argv, user) if user is not None else argv,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err)
        line = read_line(self.proc.stdout.fileno(), 10, "attach-target's ready line")
        check(line.startswith("ready "), "attach-target said %r" % line)
        self.pid = int(line.split()[1])

    def send(self, text):
        self.proc.stdin.write((text + "\n").encode())
        self.proc.stdin.flush()

    def command(self, text, timeout=10):
        self.send(text)
        return read_line(self.proc.stdout.fileno(), timeout, "%r to the target" % text)

    def report(self):
        return json.loads(self.command("report"))

    def signals(self, signo):
        return self.report()["signals"][str(int(signo))]

    def alive(self):
        return self.proc.poll() is None

    def stderr(self):
        self.err.seek(0)
        return self.err.read().decode(errors="replace")


def sigqueue(pid, signo, count):
    """count signals with sigqueue(), values 0..count-1, from a process of their own."""
    status, out, err = run([TARGET, "sigqueue", str(pid), str(int(signo)), str(count)])
    check(status == 0 and out.strip() == "sent %d" % count,
          "sigqueue to %d: status %d, %r %r" % (pid, status, out, err))


def attach(pid, *extra, env=None, user=None, timeout=30):
    argv = [DIRTYCTL, "attach", str(pid), "--duration", "0.3", "--interval", "0.1"] + list(extra)
    return run(as_user(argv, user) if user is not None else argv, timeout=timeout,
               env=env or environment())


STRERRORS = {os.strerror(e) for e in range(1, 134)}


def check_message(status, stderr, expected, words, what):
    """A refusal: the exit status, one line starting "dirtyctl: ", the words,
    and not ending in a bare strerror() text."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    check(status == expected, "%s: exit status %d, expected %d; stderr %r"
          % (what, status, expected, stderr[-600:]))
    check(len(lines) == 1 and lines[0].startswith("dirtyctl: "),
          "%s: not one line starting with \"dirtyctl: \": %r" % (what, lines))
    for word in words:
        check(word in lines[0], "%s: the message does not say %r: %r" % (what, word, lines[0]))
    tail = lines[0].rstrip(". )")
    check(not any(tail.endswith(e) for e in STRERRORS),
          "%s: the message ends in a bare error text: %r" % (what, lines[0]))


def require_injection_hooks():
    if not PROBE_INJECTION:
        pytest.skip("built with -Dprobe_injection=false: no LIBDIRTY_TEST_REMOTE_PAUSE")


def require_nobody():
    if os.geteuid() != 0:
        pytest.skip("needs root, to run processes as uid %d" % NOBODY)
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is not installed")
    if not os.access(DIRTYCTL, os.X_OK) or os.stat(DIRTYCTL).st_mode & 0o005 != 0o005:
        pytest.skip("the build directory is not readable by other users")


class Pause:
    """LIBDIRTY_TEST_REMOTE_PAUSE: the helper stops at a step until resumed."""

    def __init__(self, step):
        self.dir = tempfile.mkdtemp(prefix="dirty-pause-")
        os.chmod(self.dir, 0o755)
        self.paused = os.path.join(self.dir, "paused")
        self.resume_path = os.path.join(self.dir, "resume")
        os.mkfifo(self.paused, 0o666)
        os.mkfifo(self.resume_path, 0o666)
        self.reader = os.open(self.paused, os.O_RDONLY | os.O_NONBLOCK)
        self.env = {"LIBDIRTY_TEST_REMOTE_PAUSE": "%s:%s" % (step, self.dir)}
        self.resumed = False
        harness.at_end_of_test(self.release)

    def wait(self, proc, timeout=20):
        """The helper has reached the step (or proc ended: a failure)."""
        data = b""
        deadline = time.monotonic() + timeout
        while not data.endswith(b"\n"):
            check(proc.poll() is None, "dirtyctl exited (%s) before the pause"
                  % proc.returncode)
            left = deadline - time.monotonic()
            check(left > 0, "the helper did not reach the pause within %g s" % timeout)
            ready, _, _ = select.select([self.reader], [], [], min(left, 0.2))
            if ready:
                data += os.read(self.reader, 64)
        return data.decode().strip()

    def resume(self, timeout=20):
        done = threading.Event()

        def opener():
            fd = os.open(self.resume_path, os.O_WRONLY)
            os.close(fd)
            done.set()

        threading.Thread(target=opener, daemon=True).start()
        check(done.wait(timeout), "the helper did not take the resume within %g s" % timeout)
        self.resumed = True

    def release(self):
        """Cleanup: never leave a helper waiting (it holds the target)."""
        if not self.resumed:
            try:
                fd = os.open(self.resume_path, os.O_WRONLY | os.O_NONBLOCK)
                os.close(fd)
            except OSError:
                pass
        os.close(self.reader)
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------
# 1. Seccomp

SECCOMP_REFUSED = [
    # (attach-target options, words in the message)
    (["--seccomp", "kill-process"], ["seccomp", "kill the process", "userfaultfd(2)"]),
    (["--seccomp", "kill-thread"], ["seccomp", "kill the thread", "userfaultfd(2)"]),
    (["--seccomp", "trap", "--fd323"], ["seccomp", "SIGSYS", "userfaultfd(2)"]),
    (["--seccomp", "trap", "--sigsys-handler", "--fd323"], ["seccomp", "SIGSYS"]),
    (["--seccomp", "errno"], ["seccomp", "fail with errno %d" % 1, "userfaultfd(2)"]),
    (["--seccomp", "trace"], ["seccomp", "tracer", "userfaultfd(2)"]),
    (["--seccomp", "user-notif"], ["seccomp", "supervisor", "userfaultfd(2)"]),
    (["--seccomp-close", "kill-process"], ["seccomp", "kill the process", "close(2)"]),
    (["--mode", "busy", "--threads", "2", "--seccomp", "kill-process", "--fd323"],
     ["seccomp", "kill the process"]),
]


def test_seccomp_refused():
    """A filter that would act on the injected calls: refused before anything
    runs (exit 3, the action named), the target untouched, no SIGSYS, its
    descriptor 323 (the number a TRAP leaves in rax) still its own."""
    require_uffd_async()
    for options, words in SECCOMP_REFUSED:
        what = "seccomp %s" % " ".join(options)
        t = Target(*options)
        before = snapshot(t.pid)
        status, _, err = attach(t.pid)
        check_message(status, err, 3, words + ["nothing was run in it", "soft-dirty"], what)
        check(t.alive(), "%s: the target died: %r" % (what, t.stderr()))
        unharmed(t.pid, before, what, t.report())
        check(t.alive(), "%s: the target died" % what)


def test_seccomp_allowed():
    """Filters that let the calls through (allow, log, and one that kills
    userfaultfd(2) unless its flags hold UFFD_USER_MODE_ONLY, which the
    injection passes): attached, target unharmed.  So the filters are
    evaluated, not refused whole."""
    require_uffd_async()
    for options in (["--seccomp", "allow"], ["--seccomp", "log"],
                    ["--seccomp", "kill-process", "--seccomp-flags-only"],
                    ["--seccomp", "allow", "--seccomp-close", "allow"]):
        what = "seccomp %s" % " ".join(options)
        t = Target(*options)
        before = snapshot(t.pid)
        status, out, err = attach(t.pid, "--json")
        check(status == 0, "%s: exit status %d, stderr %r" % (what, status, err))
        check('"type": "attached"' in out, "%s: not attached: %r" % (what, out[:300]))
        unharmed(t.pid, before, what, t.report())


def test_seccomp_unreadable():
    """Without CAP_SYS_ADMIN the filters cannot be read: refused with the
    reason and what to do, nothing run."""
    require_uffd_async()
    require_nobody()
    t = Target("--seccomp", "allow", user=NOBODY)
    before = snapshot(t.pid)
    status, _, err = attach(t.pid, user=NOBODY)
    check_message(status, err, 3, ["seccomp filter", "CAP_SYS_ADMIN", "run dirtyctl as root",
                                   "nothing was run in it"], "filters unreadable")
    unharmed(t.pid, before, "filters unreadable", t.report())


# ---------------------------------------------------------------------------
# 2. Signals and their siginfo

def check_queued(entry, count, sender, what):
    check(entry["count"] == count and entry["queued"] == count and entry["other_code"] == 0,
          "%s: %r, expected %d signals, all SI_QUEUE" % (what, entry, count))
    check(entry["in_order"] and entry["first"] == 0 and entry["last"] == count - 1,
          "%s: values not 0..%d in order: %r" % (what, count - 1, entry))
    check(entry["pids"] == [sender], "%s: senders %r, expected [%d]" % (what, entry["pids"],
                                                                        sender))


def test_sigqueue_storm():
    """sigqueue() storms on two real-time signals and SIGUSR1 during twelve
    attaches, each attach started with a new storm: every signal arrives, as
    SI_QUEUE from its sender with its value, each sender's in order, none
    from dirtyctl.  (Each storm is bounded so that the target gets to answer
    between them; test_signals_during_injection holds the thread while
    signals come, which a storm can only make likely.)"""
    require_uffd_async()
    t = Target()  # which holds at most 32768 queued signals (RLIMIT_SIGPENDING)
    fds, before = open_fds(t.pid), snapshot(t.pid)["threads"][t.pid]["signals"]
    sent = {SIGRTMIN: 0, SIGRTMIN + 1: 0, signal.SIGUSR1: 0}
    pids = {signo: set() for signo in sent}
    for i in range(12):
        senders = {signo: spawn([TARGET, "sigqueue", str(t.pid), str(int(signo)), "5000"],
                                stdout=subprocess.PIPE) for signo in sent}
        status, _, err = attach(t.pid, "--duration", "0.05", "--interval", "0.05")
        check(status == 0, "attach %d: exit status %d, stderr %r" % (i, status, err))
        for signo, proc in senders.items():
            line = read_line(proc.stdout.fileno(), 30, "the sender of %d" % signo)
            check(line.strip() == "sent 5000", "sender of %d: %r" % (signo, line))
            proc.wait(timeout=10)
            sent[signo] += 5000
            pids[signo].add(proc.pid)
    for signo in (SIGRTMIN, SIGRTMIN + 1):
        poll_until(lambda: t.signals(signo)["count"] >= sent[signo], 30,
                   "the target taking all %d signals %d" % (sent[signo], signo))
    report = t.report()
    for signo in (SIGRTMIN, SIGRTMIN + 1):
        entry = report["signals"][str(int(signo))]
        check(entry["count"] == sent[signo] and entry["queued"] == sent[signo]
              and entry["other_code"] == 0 and entry["in_order"]
              and set(entry["pids"]) == pids[signo],
              "signal %d: %r; sent %d from %r" % (signo, entry, sent[signo], sorted(pids[signo])))
    # SIGUSR1 coalesces.  Where the queue of the target's user is full the
    # kernel sends it without its siginfo (SI_USER, pid 0: signal(7)); never
    # is it SI_TKILL, or from anyone but its senders.
    usr1 = report["signals"][str(int(signal.SIGUSR1))]
    check(snapshot(t.pid)["threads"][t.pid]["signals"] == before,
          "signal state now %r, was %r" % (snapshot(t.pid)["threads"][t.pid]["signals"], before))
    check(usr1["count"] >= 1 and usr1["tkill"] == 0
          and usr1["queued"] + usr1["user"] == usr1["count"]
          and set(usr1["pids"]) <= pids[signal.SIGUSR1] | ({0} if usr1["user"] else set()),
          "SIGUSR1: %r, senders %r" % (usr1, sorted(pids[signal.SIGUSR1])))
    check(not report["anomalies"] and report["sigsys"] == 0, "the target saw %r" % report)
    check(tracer_pid(t.pid) == 0, "still traced")
    check(open_fds(t.pid) == fds, "descriptors %r, were %r" % (open_fds(t.pid), fds))


def test_signals_during_injection():
    """Signals sent while the helper holds the thread (at each step): held
    pending, then delivered with their siginfo; a signal the process is sent
    with kill() arrives as SI_USER from its sender, not from dirtyctl."""
    require_uffd_async()
    require_injection_hooks()
    for step in ("stopped", "created", "closed"):
        t = Target()
        p = Pause(step)
        d = spawn([DIRTYCTL, "attach", str(t.pid), "--duration", "0.2", "--interval", "0.1"],
                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environment(**p.env))
        p.wait(d)
        check(tracer_pid(t.pid) != 0, "%s: the target is not held at the pause" % step)
        sigqueue(t.pid, SIGRTMIN, 5)
        sigqueue(t.pid, SIGRTMIN + 1, 3)
        os.kill(t.pid, signal.SIGUSR2)
        p.resume()
        check(d.wait(timeout=30) == 0, "%s: dirtyctl exit status %d: %r"
              % (step, d.returncode, d.stderr.read()))
        poll_until(lambda: t.signals(signal.SIGUSR2)["count"] == 1, 10,
                   "%s: the signals arriving" % step)
        report = t.report()
        for signo, count in ((SIGRTMIN, 5), (SIGRTMIN + 1, 3)):
            entry = report["signals"][str(int(signo))]
            check(entry["count"] == count and entry["queued"] == count and entry["in_order"]
                  and entry["first"] == 0 and entry["other_code"] == 0,
                  "%s: signal %d: %r" % (step, signo, entry))
        usr2 = report["signals"][str(int(signal.SIGUSR2))]
        check(usr2["other_code"] == 1 and usr2["pids"] == [os.getpid()],
              "%s: SIGUSR2 from kill(): %r, expected SI_USER from %d" % (step, usr2, os.getpid()))
        check(not report["anomalies"] and report["sigsys"] == 0, "%s: %r" % (step, report))


def test_pending_siginfo_kept():
    """Signals the target blocks and has pending before the attach stay
    pending with their siginfo: sigtimedwait() afterwards finds them as
    they were sent."""
    require_uffd_async()
    t = Target("--block", "RTMIN+2,USR2", "--threads", "1")
    sigqueue(t.pid, SIGRTMIN + 2, 3)
    sigqueue(t.pid, signal.SIGUSR2, 1)
    poll_until(lambda: int(snapshot(t.pid)["shared"], 16) != 0, 10, "signals pending")
    before = snapshot(t.pid)
    status, _, err = attach(t.pid)
    check(status == 0, "exit status %d, stderr %r" % (status, err))
    unharmed(t.pid, before, "pending signals", t.report())
    drained = json.loads(t.command("drain"))
    rt = [s for s in drained if s["signo"] == SIGRTMIN + 2]
    usr2 = [s for s in drained if s["signo"] == signal.SIGUSR2]
    check([s["value"] for s in rt] == [0, 1, 2] and all(s["code"] == SI_QUEUE for s in rt),
          "the pending real-time signals are now %r" % rt)
    check(len(usr2) == 1 and usr2[0]["code"] == SI_QUEUE and usr2[0]["value"] == 0,
          "the pending SIGUSR2 is now %r" % usr2)
    check(len({s["pid"] for s in drained}) == 2, "senders %r" % drained)


def test_sigsuspend_temporary_mask():
    """A thread in sigsuspend() with a temporary mask (SIGUSR1 unblocked,
    SIGUSR2 blocked only inside the call): SIGUSR2 pending through the attach
    is delivered to the restarted call, which goes on waiting, exactly as
    after SIGSTOP and SIGCONT (checked first, as the reference); a SIGUSR1
    sent while the thread is held ends the call with its siginfo; the thread
    is back in sigsuspend() with the same masks."""
    require_uffd_async()
    t = Target("--mode", "sigsuspend", "--threads", "1")

    def in_sigsuspend():
        return thread_syscall(t.pid, t.pid) == SYS_rt_sigsuspend

    poll_until(in_sigsuspend, 10, "the main thread in sigsuspend()")
    sigqueue(t.pid, signal.SIGUSR2, 1)
    poll_until(lambda: int(snapshot(t.pid)["shared"], 16) != 0, 10, "SIGUSR2 pending")
    os.kill(t.pid, signal.SIGSTOP)
    poll_until(lambda: thread_states(t.pid)[t.pid]["state"] == "T", 10, "stopping")
    os.kill(t.pid, signal.SIGCONT)
    poll_until(lambda: t.signals(signal.SIGUSR2)["count"] == 1, 10,
               "the reference: SIGUSR2 delivered after SIGCONT")
    check(not t.report()["anomalies"], "the reference: %r" % t.report()["anomalies"])
    poll_until(in_sigsuspend, 10, "the main thread back in sigsuspend()")

    sigqueue(t.pid, signal.SIGUSR2, 1)
    poll_until(lambda: int(snapshot(t.pid)["shared"], 16) != 0, 10, "SIGUSR2 pending")
    before = snapshot(t.pid)
    status, _, err = attach(t.pid)
    check(status == 0, "exit status %d, stderr %r" % (status, err))
    poll_until(lambda: t.signals(signal.SIGUSR2)["count"] == 2, 10,
               "SIGUSR2 delivered to the restarted sigsuspend()")
    poll_until(in_sigsuspend, 10, "the main thread back in sigsuspend()")
    before["shared"] = "0000000000000000"  # the one pending signal is delivered, as above
    unharmed(t.pid, before, "sigsuspend", t.report())
    usr2 = t.signals(signal.SIGUSR2)
    check(usr2["queued"] == 2 and usr2["other_code"] == 0, "SIGUSR2: %r" % usr2)
    if PROBE_INJECTION:
        p = Pause("stopped")
        d = spawn([DIRTYCTL, "attach", str(t.pid), "--duration", "0.2", "--interval", "0.1"],
                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environment(**p.env))
        p.wait(d)
        sigqueue(t.pid, signal.SIGUSR1, 1)
        p.resume()
        check(d.wait(timeout=30) == 0, "dirtyctl exit status %d: %r"
              % (d.returncode, d.stderr.read()))
        poll_until(lambda: t.signals(signal.SIGUSR1)["count"] == 1, 10, "SIGUSR1 arriving")
        poll_until(in_sigsuspend, 10, "the main thread back in sigsuspend()")
        usr1 = t.signals(signal.SIGUSR1)
        check(usr1["queued"] == 1 and usr1["first"] == 0, "SIGUSR1: %r" % usr1)
        unharmed(t.pid, before, "sigsuspend, SIGUSR1 while held", t.report())


# ---------------------------------------------------------------------------
# 3. dirtyctl killed inside the injection

def killed_inside(step, sig, inline=False):
    t = Target("--block", "RTMIN+2")
    sigqueue(t.pid, SIGRTMIN + 2, 2)
    poll_until(lambda: int(snapshot(t.pid)["shared"], 16) != 0, 10, "signals pending")
    before = snapshot(t.pid)
    p = Pause(step)
    env = environment(**p.env)
    if inline:
        env["LIBDIRTY_TEST_REMOTE_INLINE"] = "1"
    d = spawn([DIRTYCTL, "attach", str(t.pid), "--json", "--interval", "0.1"],
              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    what = "%s at %s%s" % (signal.Signals(sig).name, step, " (inline)" if inline else "")
    p.wait(d)
    check(tracer_pid(t.pid) != 0, "%s: the target is not held at the pause" % what)
    os.kill(d.pid, sig)
    if sig == signal.SIGKILL:
        check(d.wait(timeout=20) == -signal.SIGKILL, "%s: dirtyctl did not die" % what)
    p.resume()
    if sig != signal.SIGKILL:
        out, err = d.communicate(timeout=30)
        check(d.returncode == 0, "%s: dirtyctl exit status %d, stderr %r"
              % (what, d.returncode, err))
        check(b'"type": "attached"' in out and b'"type": "summary"' in out,
              "%s: dirtyctl did not attach, then stop: %r" % (what, out[-300:]))
    unharmed(t.pid, before, what, t.report())
    drained = json.loads(t.command("drain"))
    check([(s["code"], s["value"]) for s in drained] == [(SI_QUEUE, 0), (SI_QUEUE, 1)],
          "%s: the pending signals are now %r" % (what, drained))
    status, _, err = attach(t.pid)
    check(status == 0, "%s: attaching again: exit status %d, %r" % (what, status, err))


def test_dirtyctl_killed_inside():
    """SIGKILL of dirtyctl while its helper holds the target, at each step:
    the helper finishes and lets the target go as it was (no SIGTRAP, no
    descriptor, same mask and pending signals), and it can be attached
    to again."""
    require_uffd_async()
    require_injection_hooks()
    for step in ("seized", "stopped", "created", "closed"):
        killed_inside(step, signal.SIGKILL)


def test_dirtyctl_terminated_inside():
    """SIGTERM and SIGINT of dirtyctl inside the injection, also when this
    process does the work itself (as under Yama ptrace_scope 1): the signal
    waits until the target is let go, then ends the watch (exit 0)."""
    require_uffd_async()
    require_injection_hooks()
    for step in ("stopped", "created"):
        for inline in (False, True):
            killed_inside(step, signal.SIGTERM, inline)
    killed_inside("closed", signal.SIGINT, True)


# ---------------------------------------------------------------------------
# 4. Target states

def test_stopped_target():
    """SIGSTOPped (a checkpointer's or Ctrl-Z's): attach works, every thread
    is still stopped after, a signal pending while stopped stays pending, the
    parent sees no new stop or continue; after SIGCONT all goes on."""
    require_uffd_async()
    t = Target("--mode", "busy", "--threads", "2")
    os.kill(t.pid, signal.SIGSTOP)
    check(os.waitpid(t.pid, os.WUNTRACED)[1] >> 8 == signal.SIGSTOP, "no stop seen")
    poll_until(lambda: all(th["state"] == "T" for th in thread_states(t.pid).values()), 10,
               "every thread stopping")
    os.kill(t.pid, signal.SIGUSR1)
    sigqueue(t.pid, SIGRTMIN, 2)
    before = snapshot(t.pid)
    check(int(before["shared"], 16), "no signal pending while stopped")
    status, out, err = attach(t.pid, "--json")
    check(status == 0, "exit status %d, stderr %r" % (status, err))
    check('"type": "attached"' in out, "not attached: %r" % out[:300])
    unharmed(t.pid, before, "stopped")
    check(all(th["state"] == "T" for th in thread_states(t.pid).values()),
          "threads are now %r" % {k: v["state"] for k, v in thread_states(t.pid).items()})
    check(os.waitpid(t.pid, os.WNOHANG | os.WUNTRACED | os.WCONTINUED) == (0, 0),
          "the parent saw a change of state")
    if PROBE_INJECTION:
        # a signal sent while the helper holds a stopped target waits for SIGCONT too
        p = Pause("created")
        d = spawn([DIRTYCTL, "attach", str(t.pid), "--duration", "0.2", "--interval", "0.1"],
                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environment(**p.env))
        p.wait(d)
        sigqueue(t.pid, SIGRTMIN + 1, 1)
        p.resume()
        check(d.wait(timeout=30) == 0, "dirtyctl exit status %d" % d.returncode)
        poll_until(lambda: tracer_pid(t.pid) == 0, 10, "the helper letting go")
        check(all(th["state"] == "T" for th in thread_states(t.pid).values()),
              "threads after the second attach: %r"
              % {k: v["state"] for k, v in thread_states(t.pid).items()})
    os.kill(t.pid, signal.SIGCONT)
    poll_until(lambda: t.signals(signal.SIGUSR1)["count"] == 1, 10, "SIGUSR1 after SIGCONT")
    report = t.report()
    check(report["signals"][str(int(signal.SIGUSR1))]["other_code"] == 1, "%r" % report)
    check_queued(report["signals"][str(int(SIGRTMIN))], 2,
                 report["signals"][str(int(SIGRTMIN))]["pids"][0], "SIGRTMIN")
    check(not report["anomalies"] and report["sigsys"] == 0, "%r" % report)


def test_blocking_calls():
    """A main thread waiting in read(), nanosleep() (restart_syscall),
    sigsuspend(), or running user code: attached, and it is still in the
    same call afterwards, which never returned early.  One in epoll_wait(),
    which any stop makes fail with EINTR, is left alone: another thread is
    borrowed."""
    require_uffd_async()
    for mode, threads in (("read", "0"), ("nanosleep", "1"), ("sigsuspend", "1"),
                          ("busy", "1"), ("epoll", "1")):
        t = Target("--mode", mode, "--threads", threads)
        if mode != "busy":
            poll_until(lambda: thread_syscall(t.pid, t.pid) is not None, 10,
                       "%s: the main thread waiting" % mode)
        before = snapshot(t.pid)
        for _ in range(3):
            status, _, err = attach(t.pid)
            check(status == 0, "%s: exit status %d, stderr %r" % (mode, status, err))
        unharmed(t.pid, before, mode, t.report())
        if mode == "nanosleep":
            # interrupted by the stop, the sleep goes on with the time it had
            # left, as after any stop: restart_syscall(2), not nanosleep() anew
            poll_until(lambda: thread_syscall(t.pid, t.pid) == SYS_restart_syscall, 10,
                       "nanosleep: going on as restart_syscall(2)")


def test_vfork():
    """In vfork(): a process whose main thread waits for its vfork child is
    attached through another thread; the vfork child itself is refused (it
    shares its parent's memory); a single-threaded one is attached once the
    child has gone (released while the helper waits), and refused (exit 3,
    why and what to do) if the child does not go within 5 s.  All come out
    unharmed."""
    require_uffd_async()
    t = Target("--mode", "vfork", "--threads", "1")
    poll_until(lambda: thread_states(t.pid)[t.pid]["state"] == "D", 10,
               "the main thread suspended in vfork()")
    with open("/proc/%d/task/%d/children" % (t.pid, t.pid)) as f:
        child = int(f.read().split()[0])
    poll_until(lambda: thread_syscall(child, child) == SYS_read, 10,
               "the vfork child waiting in read()")
    before, child_before = snapshot(t.pid), snapshot(child)
    status, _, err = attach(t.pid)
    check(status == 0, "vfork parent with a second thread: exit status %d, %r" % (status, err))
    status, _, err = attach(child)
    check_message(status, err, 3, ["shares its memory with its parent", "process %d" % t.pid,
                                   "vfork()", "attach to process %d" % t.pid], "vfork child")
    unharmed(child, child_before, "the vfork child")
    unharmed(t.pid, before, "vfork parent")
    check(t.command("release").strip() == "released", "release")
    poll_until(lambda: thread_states(t.pid)[t.pid]["state"] != "D", 10, "vfork() returning")
    check(not t.report()["anomalies"], "the vfork parent saw %r" % t.report()["anomalies"])

    t = Target("--mode", "vfork")
    poll_until(lambda: thread_states(t.pid)[t.pid]["state"] == "D", 10,
               "the main thread suspended in vfork()")
    before = snapshot(t.pid)
    status, _, err = attach(t.pid)
    check_message(status, err, 3, ["suspended in vfork()", "within 5 s", "attach again"],
                  "vfork, one thread")
    unharmed(t.pid, before, "vfork, one thread")
    if PROBE_INJECTION:
        # the child goes while the helper waits for the thread to stop
        fds = open_fds(t.pid)
        p = Pause("interrupted")
        d = spawn([DIRTYCTL, "attach", str(t.pid), "--duration", "0.2", "--interval", "0.1"],
                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environment(**p.env))
        p.wait(d)
        t.send("release")  # the child reads it and exits; the parent then stops for us
        p.resume()
        check(d.wait(timeout=30) == 0, "attached once vfork() returned: exit status %d, %r"
              % (d.returncode, d.stderr.read()))
        check(read_line(t.proc.stdout.fileno(), 10, "the parent").strip() == "released",
              "the parent did not come back from vfork()")
        poll_until(lambda: tracer_pid(t.pid) == 0, 10, "the helper letting go")
        check(open_fds(t.pid) == fds, "descriptors %r, were %r" % (open_fds(t.pid), fds))
    else:
        check(t.command("release").strip() == "released", "release")
    report = t.report()
    check(not report["anomalies"] and report["sigsys"] == 0,
          "the vfork parent saw %r" % report)
    status, _, err = attach(t.pid)
    check(status == 0, "after vfork() returned: exit status %d, %r" % (status, err))


def test_traced_target():
    """Stopped by another tracer: refused (exit 3) naming the tracer and what
    to do; the tracer keeps it, and once it lets go the target runs on."""
    require_uffd_async()
    t = Target()
    tracer = spawn([TARGET, "trace", str(t.pid)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    check(read_line(tracer.stdout.fileno(), 10, "the tracer").strip() == "tracing %d" % t.pid,
          "the tracer did not attach")
    status, _, err = attach(t.pid)
    check_message(status, err, 3, ["traced by process %d (attach-target)" % tracer.pid,
                                   "one tracer", "detach"], "traced")
    check(tracer_pid(t.pid) == tracer.pid, "the tracer lost the target")
    check(snapshot(t.pid)["threads"][t.pid]["state"] == "t", "the target left its tracing stop")
    tracer.stdin.close()
    check(tracer.wait(timeout=10) == 0, "the tracer failed")
    poll_until(lambda: tracer_pid(t.pid) == 0, 10, "the tracer letting go")
    report = t.report()
    check(not report["anomalies"] and report["sigsys"] == 0, "%r" % report)


def test_main_thread_exited():
    """The main thread has exited, the others run: not a zombie, but the
    kernel hides /proc/PID/mem and pagemap; refused (exit 3) with that
    reason, the live threads untouched."""
    require_uffd_async()
    t = Target("--mode", "leader-exit", "--threads", "1")
    poll_until(lambda: thread_states(t.pid)[t.pid]["state"] == "Z", 10, "the main thread exiting")
    before = snapshot(t.pid)
    status, _, err = attach(t.pid)
    check_message(status, err, 3, ["main thread of process %d has exited" % t.pid,
                                   "other thread", "/proc/%d/pagemap" % t.pid,
                                   "dirtyctl run"], "main thread exited")
    unharmed(t.pid, before, "main thread exited", t.report())


# ---------------------------------------------------------------------------
# 5. dirty_tracker_new()'s errors, through ctypes

LOG_FN = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


class Options(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("backend", ctypes.c_char_p), ("pid", ctypes.c_int),
                ("flags", ctypes.c_uint), ("log", LOG_FN), ("log_userdata", ctypes.c_void_p),
                ("uffd", ctypes.c_int)]


def require_loadable_library():
    """ctypes loads libdirty.so into python3: not a build with a sanitizer,
    whose runtime must come first in a process (ASan aborts python3, TSan's
    dlopen fails for want of static TLS)."""
    # the runtime's name is in the library's dynamic string table (NEEDED);
    # read as bytes: the qemu guests have no readelf
    with open(LIBDIRTY, "rb") as f:
        image = f.read()
    runtime = [name for name in ("libasan.so", "libtsan.so") if name.encode() in image]
    if runtime:
        pytest.skip("libdirty.so needs %s, which python3 cannot load by ctypes; the builds "
                    "without a sanitizer run this test" % runtime[0])


def tracker_new(pid, backend=None):
    """dirty_tracker_new() for pid: (0 or -errno, what it logged)."""
    lib = ctypes.CDLL(LIBDIRTY)
    lib.dirty_tracker_new.argtypes = [ctypes.POINTER(Options), ctypes.POINTER(ctypes.c_void_p)]
    lib.dirty_tracker_free.argtypes = [ctypes.c_void_p]
    logged = []
    log = LOG_FN(lambda prio, msg, data: logged.append(msg.decode()))
    opts = Options(sz=ctypes.sizeof(Options), backend=backend.encode() if backend else None,
                   pid=pid, log=log)
    tracker = ctypes.c_void_p()
    err = lib.dirty_tracker_new(ctypes.byref(opts), ctypes.byref(tracker))
    if err == 0:
        lib.dirty_tracker_free(tracker)
    return err, " ".join(logged)


def tracker_new_as_nobody(pid):
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: /proc/self as ours
            os.write(write, json.dumps(tracker_new(pid)).encode())
        finally:
            os._exit(0)
    os.close(write)
    data = b""
    while True:
        chunk = os.read(read, 4096)
        if not chunk:
            break
        data += chunk
    os.close(read)
    os.waitpid(child, 0)
    return tuple(json.loads(data))


def test_tracker_new_errors():
    """dirty_tracker_new() on a target it cannot track returns the target's
    reason, not -EOPNOTSUPP, auto or named, and logs why."""
    import errno
    require_uffd_async()
    require_loadable_library()
    cases = []
    t = Target()
    tracer = spawn([TARGET, "trace", str(t.pid)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    read_line(tracer.stdout.fileno(), 10, "the tracer")
    cases.append(("traced", t.pid, -errno.EBUSY, "traced by process %d" % tracer.pid))
    leader = Target("--mode", "leader-exit", "--threads", "1")
    poll_until(lambda: thread_states(leader.pid)[leader.pid]["state"] == "Z", 10,
               "the main thread exiting")
    cases.append(("main thread exited", leader.pid, -errno.ESRCH, "main thread"))
    zombie = spawn(["true"])
    poll_until(lambda: snapshot(zombie.pid)["threads"][zombie.pid]["state"] == "Z", 10,
               "true exiting")
    cases.append(("zombie", zombie.pid, -errno.ESRCH, "zombie"))
    sandboxed = Target("--seccomp", "kill-process")
    cases.append(("seccomp", sandboxed.pid, -errno.EACCES, "seccomp"))
    vforked = Target("--mode", "vfork")
    poll_until(lambda: thread_states(vforked.pid)[vforked.pid]["state"] == "D", 10, "vfork()")
    cases.append(("vfork", vforked.pid, -errno.EBUSY, "vfork()"))
    for what, pid, expected, words in cases:
        for backend in (None, "uffd-async"):
            err, logged = tracker_new(pid, backend)
            check(err == expected, "%s (%s): %d, expected %d; log %r"
                  % (what, backend or "auto", err, expected, logged))
            check(words in logged, "%s (%s): the log does not say %r: %r"
                  % (what, backend or "auto", words, logged))
    if os.geteuid() == 0 and shutil.which("setpriv"):
        err, logged = tracker_new_as_nobody(t.pid)
        check(err == -errno.EBUSY, "traced, as another user: %d" % err)
        other = Target()
        err, logged = tracker_new_as_nobody(other.pid)
        check(err == -errno.EPERM and "uid 0" in logged, "another user's process: %d %r"
              % (err, logged))
    tracer.stdin.close()
    vforked.command("release")


# ---------------------------------------------------------------------------
# 6. Messages

def test_messages():
    """Each refusal says what happened and what to do, with the exit status
    of dirtyctl(1)."""
    require_uffd_async()
    # no such process
    with open("/proc/sys/kernel/pid_max") as f:
        pid = int(f.read()) - 1
    while os.path.exists("/proc/%d" % pid):
        pid -= 1
    status, _, err = attach(pid)
    check_message(status, err, 4, ["no process %d" % pid, "check the process id"], "no process")
    # a command that cannot run
    status, _, err = run([DIRTYCTL, "run", "--", "/nonexistent/program"])
    check_message(status, err, 127, ["cannot run /nonexistent/program", "PATH"], "run")
    if os.geteuid() == 0 and shutil.which("setpriv"):
        require_nobody()
        # ptrace refused: another user, no CAP_SYS_PTRACE (also what /proc/PID/mem needs)
        t = Target()
        status, _, err = attach(t.pid, user=NOBODY)
        check_message(status, err, 3, ["ptrace of process %d refused" % t.pid, "uid 0",
                                       "uid %d" % NOBODY, "CAP_SYS_PTRACE",
                                       "run dirtyctl as that user or as root"], "other user")
        # not dumpable
        t = Target("--undumpable", user=NOBODY)
        status, _, err = attach(t.pid, user=NOBODY)
        check_message(status, err, 3, ["not dumpable", "PR_SET_DUMPABLE",
                                       "run dirtyctl as root"], "not dumpable")
    # the target exits while being attached
    if PROBE_INJECTION:
        t = Target()
        p = Pause("seized")
        d = spawn([DIRTYCTL, "attach", str(t.pid), "--duration", "0.2"],
                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environment(**p.env))
        p.wait(d)
        os.kill(t.pid, signal.SIGKILL)  # reaped once its tracer has taken its exit
        p.resume()
        _, err = d.communicate(timeout=30)
        check_message(d.returncode, err.decode(), 4,
                      ["exited while libdirty was attaching to it"], "target exits")
        # a kernel without the features
        t = Target()
        status, _, err = attach(t.pid, env=environment(
            LIBDIRTY_PROBE_FAIL="uffd-async,soft-dirty"))
        check_message(status, err, 3, ["Linux 6.7", "CONFIG_MEM_SOFT_DIRTY", "dirtyctl probe"],
                      "no backend")
    # a backend that cannot track another process
    t = Target()
    status, _, err = attach(t.pid, "--backend", "mprotect")
    check_message(status, err, 3, ["calling process only", "only uffd-async and soft-dirty"],
                  "--backend mprotect")
