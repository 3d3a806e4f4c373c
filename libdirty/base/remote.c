/* SPDX-License-Identifier: MIT */
/*
 * A userfaultfd created inside another process, for uffd-async's pid option.
 *
 * A userfaultfd acts on the mm of the process that created it, whoever
 * calls its ioctls afterwards.  So the target is made to call userfaultfd(2)
 * itself, once, and the descriptor is copied out with pidfd_getfd(2).  The
 * contract (DESIGN.md, "Harmless") is that the target cannot tell: same
 * registers, descriptors, signal mask, pending signals and their siginfo,
 * same state (running, stopped), same seccomp outcome.  Where that cannot be
 * guaranteed, nothing is done and the reason is given.
 *
 *  0. The plan (remote_plan(), from /proc only: nothing touches the target):
 *     a thread to borrow (the main one, else one that is not suspended in
 *     vfork() nor waiting in a call that a stop makes fail with EINTR, such
 *     as epoll_wait()), who traces it already, whether it shares its memory
 *     with a vfork() parent, ptrace permission (which rule refuses it),
 *     strict seccomp, a `syscall` instruction of its vDSO, its userfaultfds.
 *  1. A helper process does the ptrace work (run_in_helper()): if the
 *     caller is killed, even by SIGKILL, the helper finishes and puts the
 *     target back as it was.  A tracer that died between setting the
 *     target's registers and restoring them would leave it running someone
 *     else's system call.
 *  2. PTRACE_SEIZE (no SIGSTOP, invisible to the target's parent) and
 *     PTRACE_INTERRUPT the thread.  A signal it takes on the way is given
 *     back to it with the same number, so that its siginfo stays the
 *     kernel's; a process already stopped (SIGSTOP) shows its group-stop.
 *  3. Save its registers and signal mask; block every signal in it while it
 *     is borrowed, so that signals that arrive stay pending, siginfo and
 *     all, and are delivered once it is back (unless the thread sleeps in
 *     sigsuspend()-like calls, whose temporary mask PTRACE_SETSIGMASK would
 *     lose: then a signal met on the way is delivered at once, from the
 *     thread's own registers, and the call is tried again).
 *  4. Before each system call: syscall user dispatch and every seccomp
 *     filter of the thread are evaluated for that call (seccomp.c runs the
 *     filters' classic BPF); anything but "allow" refuses, before any call.
 *  5. The call: registers pointed at the `syscall` instruction, stepped with
 *     syscall-entry and syscall-exit stops (PTRACE_SYSCALL), never with
 *     single-step traps, which leave a SIGTRAP pending if the tracer dies.
 *  6. pidfd_getfd(2) copies the new descriptor out; the target's copy is
 *     closed by the same means, only once /proc/PID/task/TID/fd has shown
 *     that the number is a userfaultfd that did not exist before.
 *  7. Registers back at a trap stop (so that an interrupted system call is
 *     restarted by the kernel as after any ptrace stop), the mask back,
 *     PTRACE_DETACH with no signal.  A group-stop in effect resumes.
 * No code of the target runs meanwhile but signal handlers it would have run
 * anyway; its errno, mask and memory are untouched.
 *
 * What remains: a thread waiting in a call that fails with EINTR after any
 * stop (epoll_wait, sigtimedwait, semop: signal(7)) sees that EINTR when no
 * other thread can be borrowed, as after SIGSTOP and SIGCONT; a seccomp
 * filter that another thread installs with SECCOMP_FILTER_FLAG_TSYNC (or a
 * syscall user dispatch selector it flips) between the evaluation and the
 * call is not seen; a SIGKILL of the helper itself, or of the caller on the
 * inline path, between setting the registers and putting them back leaves
 * the target running our call.
 *
 * The architecture-specific part is the block of arch_* below (registers,
 * the instruction, the audit arch); x86-64 only for now.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/kcmp.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "libdirty-int.h"
#include "linux-compat.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif
#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG
#define PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG 0x4211 /* 6.4 */
struct ptrace_sud_config {
	uint64_t mode, selector, offset, len;
};
#endif
#ifndef SYS_SECCOMP
#define SYS_SECCOMP 1
#endif
#ifndef SYS_USER_DISPATCH
#define SYS_USER_DISPATCH 2
#endif
#ifndef PR_SYS_DISPATCH_ON
#define PR_SYS_DISPATCH_ON 1
#endif

#define CAP_SYS_PTRACE_BIT 19

/* ---- the architecture ---- */

#if defined(__x86_64__)
#define REMOTE_SUPPORTED 1
#define ARCH_AUDIT AUDIT_ARCH_X86_64
#define ARCH_INSN_LEN 2
static const unsigned char arch_insn[ARCH_INSN_LEN] = { 0x0f, 0x05 }; /* syscall */
typedef struct user_regs_struct arch_regs;

static int arch_get_regs(pid_t tid, arch_regs *regs)
{
	return ptrace(PTRACE_GETREGS, tid, NULL, regs) < 0 ? -errno : 0;
}

static int arch_set_regs(pid_t tid, const arch_regs *regs)
{
	return ptrace(PTRACE_SETREGS, tid, NULL, regs) < 0 ? -errno : 0;
}

/* 64-bit code (__USER_CS); an ia32 process would not run `syscall` as we mean it. */
static bool arch_native(const arch_regs *regs)
{
	return regs->cs == 0x33;
}

/* Stopped inside a system call: its `syscall` instruction ends at the ip. */
static bool arch_in_syscall(const arch_regs *regs)
{
	return (long long)regs->orig_rax >= 0;
}

static uintptr_t arch_ip(const arch_regs *regs)
{
	return (uintptr_t)regs->rip;
}

/*
 * What the kernel does to restart an interrupted system call when no
 * handler runs (arch_do_signal_or_restart()): back to the instruction, the
 * call's number (or restart_syscall's) in rax.
 */
static void arch_restart_syscall(arch_regs *regs)
{
	if ((long long)regs->orig_rax < 0)
		return;
	switch ((long long)regs->rax) {
	case -512: /* ERESTARTSYS */
	case -513: /* ERESTARTNOINTR */
	case -514: /* ERESTARTNOHAND */
		regs->rax = regs->orig_rax;
		regs->rip -= 2;
		break;
	case -516: /* ERESTART_RESTARTBLOCK */
		regs->rax = 219; /* __NR_restart_syscall */
		regs->rip -= 2;
		break;
	}
}

/* At a syscall-entry stop: make the call about to run system call nr instead. */
static void arch_set_nr(arch_regs *regs, long nr)
{
	regs->orig_rax = (unsigned long long)nr;
}

/* Point regs at the instruction at insn to make system call nr. */
static void arch_set_call(arch_regs *regs, uintptr_t insn, long nr, const uint64_t args[6])
{
	regs->rip = insn;
	regs->rax = (unsigned long long)nr;
	/* not in a system call: the kernel must not restart one in our place */
	regs->orig_rax = (unsigned long long)-1;
	regs->rdi = args[0];
	regs->rsi = args[1];
	regs->rdx = args[2];
	regs->r10 = args[3];
	regs->r8 = args[4];
	regs->r9 = args[5];
}
#elif defined(__aarch64__)
/*
 * arm64: `svc #0`, the number in x8, arguments in x0-x5, the result in x0.
 * The registers come as a regset (PTRACE_GETREGSET, NT_PRSTATUS); the
 * number of the call under way is not among them but is its own regset
 * (NT_ARM_SYSTEM_CALL): it is what a syscall-entry stop changes, and -1
 * (NO_SYSCALL) says that no call is to be restarted.
 *
 * Restarting differs from x86-64.  arm64's do_signal() decides on a restart
 * before it looks for a signal (arch/arm64/kernel/signal.c): it moves pc back
 * to the `svc`, puts the first argument back in x0 and forgets the call
 * (syscallno = -1), so that a tracer sees the registers the call restarts
 * from; only after get_signal() returns, and only when pc is still at that
 * `svc`, does it put restart_syscall's number in x8 for an
 * -ERESTART_RESTARTBLOCK.  A tracer that moves pc to run its own call skips
 * that step, and a nanosleep() would start its whole time again; another
 * trap stop does not help (get_signal() takes it in the same loop).  So
 * settle_restart() lets the thread go on, its signals blocked, from a stop
 * with pc at an `svc` to that call's syscall-entry stop, where the call is
 * the one it would really make (restart_syscall or the original); it makes
 * that one getpid(2), and saves the registers as they were just before the
 * `svc`, with syscallno -1, so that the kernel restarts nothing in our place
 * when they are put back.
 */
#include <elf.h>
#ifndef NT_ARM_SYSTEM_CALL
#define NT_ARM_SYSTEM_CALL 0x404
#endif
#define REMOTE_SUPPORTED 1
#define ARCH_AUDIT AUDIT_ARCH_AARCH64
#define ARCH_INSN_LEN 4
#define ARCH_INSN_ALIGN 4
#define ARCH_SETTLE 1
static const unsigned char arch_insn[ARCH_INSN_LEN] = { 0x01, 0x00, 0x00, 0xd4 }; /* svc #0 */
#define PSR_MODE32 0x10u /* pstate: an AArch32 (compat) thread */
typedef struct {
	struct user_regs_struct gp; /* x0-x30, sp, pc, pstate */
	size_t gp_len;              /* what NT_PRSTATUS gave: shorter for an AArch32 thread */
	int syscallno;              /* NT_ARM_SYSTEM_CALL */
} arch_regs;

static int arch_get_regs(pid_t tid, arch_regs *regs)
{
	struct iovec gp = { &regs->gp, sizeof(regs->gp) }, nr = { &regs->syscallno, sizeof(int) };

	if (ptrace(PTRACE_GETREGSET, tid, (void *)NT_PRSTATUS, &gp) < 0 ||
	    ptrace(PTRACE_GETREGSET, tid, (void *)NT_ARM_SYSTEM_CALL, &nr) < 0)
		return -errno;
	regs->gp_len = gp.iov_len;
	return 0;
}

static int arch_set_regs(pid_t tid, const arch_regs *regs)
{
	struct iovec gp = { (void *)&regs->gp, sizeof(regs->gp) };
	struct iovec nr = { (void *)&regs->syscallno, sizeof(int) };

	if (ptrace(PTRACE_SETREGSET, tid, (void *)NT_PRSTATUS, &gp) < 0 ||
	    ptrace(PTRACE_SETREGSET, tid, (void *)NT_ARM_SYSTEM_CALL, &nr) < 0)
		return -errno;
	return 0;
}

static bool arch_native(const arch_regs *regs)
{
	return regs->gp_len == sizeof(regs->gp) && !(regs->gp.pstate & PSR_MODE32);
}

/*
 * After arch_settle() no call is under way (do_signal() forgot it), so the
 * fallback of find_insn() (the `svc` the thread stopped in) is not used:
 * the vDSO's __kernel_rt_sigreturn always has one.
 */
static bool arch_in_syscall(const arch_regs *regs)
{
	return regs->syscallno >= 0;
}

static uintptr_t arch_ip(const arch_regs *regs)
{
	return (uintptr_t)regs->gp.pc;
}

/* The kernel did it before the stop, and arch_settle() let it finish. */
static void arch_restart_syscall(arch_regs *regs)
{
	(void)regs;
}

static void arch_set_nr(arch_regs *regs, long nr)
{
	regs->syscallno = (int)nr;
}

static void arch_set_call(arch_regs *regs, uintptr_t insn, long nr, const uint64_t args[6])
{
	regs->gp.pc = insn;
	regs->gp.regs[8] = (unsigned long long)nr;
	for (int i = 0; i < 6; i++)
		regs->gp.regs[i] = args[i];
	/* not in a system call: the kernel must not restart one in our place */
	regs->syscallno = -1;
}
#else
#define REMOTE_SUPPORTED 0
#endif
#ifndef ARCH_INSN_ALIGN
#define ARCH_INSN_ALIGN 1
#endif
#ifndef ARCH_SETTLE
#define ARCH_SETTLE 0
#endif

#if REMOTE_SUPPORTED

/* Where the work stopped, for the reason the caller is given. */
enum remote_step {
	STEP_NONE,
	STEP_SEIZE,     /* PTRACE_SEIZE */
	STEP_STOP,      /* waiting for the thread to stop */
	STEP_REGS,      /* its registers or mask */
	STEP_ARCH,      /* not a 64-bit thread */
	STEP_INSN,      /* no `syscall` instruction */
	STEP_DISPATCH,  /* syscall user dispatch would trap the call */
	STEP_SECCOMP_READ, /* its filters cannot be read or run */
	STEP_SECCOMP,   /* a filter would not allow the call */
	STEP_CALL,      /* running a system call */
	STEP_CREATE,    /* userfaultfd() failed in the target */
	STEP_PROVE,     /* the result is not a new userfaultfd */
	STEP_GETFD,     /* pidfd_getfd */
	STEP_CLOSE,     /* closing the target's copy */
	STEP_RESTORE,   /* putting the registers back */
};

/* Signals given back on the way to a stop before giving up (a storm with SA_NODEFER). */
#define MAX_DELIVERIES 4096
/*
 * How long the helper waits for the thread to stop: one in vfork() stops
 * only once its child has exec'ed (a shell's does at once), one in an
 * uninterruptible sleep once that ends.
 */
#define STOP_TIMEOUT_S 5

struct remote {
	/* the plan: made before anything touches the target */
	pid_t pid, tid;        /* the process, the thread borrowed */
	int pidfd;
	int uffd_flags;
	uintptr_t vdso_insn;   /* a `syscall` in its vDSO, or 0 */
	int seccomp_mode;
	unsigned seccomp_filters;
	int guess_fd;          /* its lowest free descriptor: what userfaultfd() returns */
	ino_t *uffd_inodes;    /* its userfaultfds before (their inodes) */
	size_t nuffd_inodes;
	struct sock_filter *filter; /* BPF_MAXINSNS instructions */
	char task_dir[64];     /* /proc/PID/task/TID/ */
	bool inline_only;      /* tests: no helper process */
	bool in_vfork;         /* the thread waits in vfork() for its child to exec */
	char pause_step[16];   /* tests: wait at this step (see pause_at()) */
	char pause_dir[192];

	/* the work: in the helper, or inline */
	bool in_helper;        /* may give up waiting for the thread to stop */
	arch_regs saved;       /* the thread's own registers */
	uint64_t saved_mask;   /* its signal mask, as PTRACE_GETSIGMASK gives it */
	bool mask_blocked;     /* every signal blocked while we hold it */
	bool regs_changed;     /* a call was set up: registers to put back */
	bool at_entry;         /* left at the entry of a call that is not ours */
	int stop_sig;          /* stopped to take this signal: it goes with the detach */
	uintptr_t insn;
	unsigned deliveries;

	/* the outcome */
	int err;
	enum remote_step step;
	long nr;               /* the system call concerned */
	uint32_t seccomp_ret;
	unsigned filter_index;
	long created;          /* what userfaultfd() returned in the target */
	int fd;                /* our copy, or -1 */
	bool closed;           /* the target's copy is closed */
};

/* ---- small helpers the helper process may use: no allocation, no stdio ---- */

static ssize_t read_small(const char *path, char *buf, size_t len)
{
	ssize_t n, got = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	while ((size_t)got < len - 1) {
		n = read(fd, buf + got, len - 1 - (size_t)got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += n;
	}
	close(fd);
	buf[got] = '\0';
	return got;
}

/* The value of "Name:" in a /proc status text, or NULL. */
static const char *status_field(const char *text, const char *name)
{
	size_t len = strlen(name);

	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (!strncmp(p, name, len) && p[len] == ':')
			return p + len + 1;
	return NULL;
}

/* dst = prefix followed by n in decimal. */
static void path_number(char *dst, size_t cap, const char *prefix, long n)
{
	char digits[24];
	size_t len = strlen(prefix), d = 0;

	do
		digits[d++] = (char)('0' + n % 10);
	while ((n /= 10) && d < sizeof(digits));
	if (len + d + 1 > cap) {
		dst[0] = '\0';
		return;
	}
	memcpy(dst, prefix, len);
	while (d)
		dst[len++] = digits[--d];
	dst[len] = '\0';
}

static int read_target(pid_t pid, uintptr_t addr, void *buf, size_t len)
{
	struct iovec local = { buf, len }, remote = { (void *)addr, len };

	return process_vm_readv(pid, &local, 1, &remote, 1, 0) == (ssize_t)len ? 0 : -EFAULT;
}

/*
 * Tests: with LIBDIRTY_TEST_REMOTE_PAUSE=STEP:DIR, wait at STEP.  DIR holds
 * two FIFOs: "paused" gets a line when the step is reached, then the work
 * goes on once a writer of "resume" has closed it.  So a test can kill or
 * signal the caller, or signal the target, at a known point, and no sleep
 * is needed to find it.
 */
static void pause_at(const struct remote *r, const char *step)
{
#if LIBDIRTY_PROBE_INJECTION
	char path[sizeof(r->pause_dir) + 16], buf[64];
	size_t len;
	int fd;

	if (!r->pause_step[0] || strcmp(r->pause_step, step))
		return;
	len = strlen(r->pause_dir);
	memcpy(path, r->pause_dir, len);
	memcpy(path + len, "/paused", sizeof("/paused"));
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd >= 0) {
		len = strlen(step);
		memcpy(buf, step, len);
		buf[len++] = '\n';
		if (write(fd, buf, len) < 0)
			buf[0] = '\0';
		close(fd);
	}
	len = strlen(r->pause_dir);
	memcpy(path + len, "/resume", sizeof("/resume"));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	for (ssize_t n = 1; fd >= 0 && n;)
		if ((n = read(fd, buf, sizeof(buf))) < 0 && errno != EINTR)
			break;
	if (fd >= 0)
		close(fd);
#else
	(void)r;
	(void)step;
#endif
}

/* ---- the work on the borrowed thread ---- */

static int fail(struct remote *r, enum remote_step step, int err)
{
	if (!r->err) {
		r->err = err;
		r->step = step;
	}
	return err;
}

/*
 * The next stop of the thread, or -ESRCH once it is gone; -ETIMEDOUT past
 * deadline (NULL: wait as long as it takes).  SIGCHLD, which the kernel
 * sends the tracer at each stop, wakes the wait: the helper blocks it.
 */
static int wait_tracee_until(const struct remote *r, int *status, const struct timespec *deadline)
{
	for (;;) {
		pid_t got = waitpid(r->tid, status, __WALL | (deadline ? WNOHANG : 0));

		if (got < 0) {
			if (errno == EINTR)
				continue;
			return errno == ECHILD ? -ESRCH : -errno;
		}
		if (got == 0) {
			struct timespec now, left;
			sigset_t chld;

			clock_gettime(CLOCK_MONOTONIC, &now);
			left.tv_sec = deadline->tv_sec - now.tv_sec;
			left.tv_nsec = deadline->tv_nsec - now.tv_nsec;
			if (left.tv_nsec < 0)
				left.tv_sec--, left.tv_nsec += 1000000000L;
			if (left.tv_sec < 0)
				return -ETIMEDOUT;
			sigemptyset(&chld);
			sigaddset(&chld, SIGCHLD);
			sigtimedwait(&chld, NULL, &left);
			continue;
		}
		if (WIFEXITED(*status) || WIFSIGNALED(*status))
			return -ESRCH;
		if (WIFSTOPPED(*status))
			return 0;
	}
}

static int wait_tracee(const struct remote *r, int *status)
{
	return wait_tracee_until(r, status, NULL);
}

/* A SIGSYS that seccomp or syscall user dispatch raised for our own call: not the target's. */
static bool our_sigsys(const struct remote *r)
{
	siginfo_t si;

	if (ptrace(PTRACE_GETSIGINFO, r->tid, NULL, &si) < 0)
		return false;
	return si.si_signo == SIGSYS &&
	       (si.si_code == SYS_SECCOMP || si.si_code == SYS_USER_DISPATCH) &&
	       (uintptr_t)si.si_call_addr == r->insn + ARCH_INSN_LEN;
}

/*
 * The thread's registers are its own: resume it until it stops in a trap
 * (PTRACE_EVENT_STOP: our interrupt, or a group-stop).  A signal it is about
 * to take on the way is given back to it with the same number, so that the
 * kernel keeps its siginfo.
 */
static int reach_trap_until(struct remote *r, const struct timespec *deadline)
{
	int status, err, sig;

	for (;;) {
		err = wait_tracee_until(r, &status, deadline);
		if (err)
			return err;
		sig = WSTOPSIG(status);
		if (status >> 16 == PTRACE_EVENT_STOP)
			return 0;
		if (status >> 16 || sig == (SIGTRAP | 0x80) || (sig == SIGSYS && our_sigsys(r)))
			sig = 0; /* no signal of the target's */
		if (sig && ++r->deliveries > MAX_DELIVERIES) {
			/* cannot happen (the trap comes before the next signal): left stopped */
			r->stop_sig = sig;
			return -EAGAIN;
		}
		/* every stop clears a pending interrupt: ask again */
		if (ptrace(PTRACE_INTERRUPT, r->tid, NULL, NULL) < 0 ||
		    ptrace(PTRACE_CONT, r->tid, NULL, (void *)(uintptr_t)sig) < 0)
			return errno == ESRCH ? -ESRCH : -errno;
	}
}

static int reach_trap(struct remote *r)
{
	return reach_trap_until(r, NULL);
}

/*
 * Run system call nr in the thread, stopped in a trap or at the exit of our
 * previous call; leave it at this one's exit stop, its result in *result.
 */
static int run_call(struct remote *r, long nr, const uint64_t args[6], long *result)
{
	struct __ptrace_syscall_info info;
	bool entered = false;
	int status, err, sig;
	arch_regs regs;

	r->nr = nr;
setup:
	regs = r->saved;
	arch_set_call(&regs, r->insn, nr, args);
	err = arch_set_regs(r->tid, &regs);
	if (err)
		return err;
	r->regs_changed = true;
	if (ptrace(PTRACE_SYSCALL, r->tid, NULL, NULL) < 0)
		return -errno;
	for (;;) {
		err = wait_tracee(r, &status);
		if (err)
			return err;
		sig = WSTOPSIG(status);
		if (status >> 16 == PTRACE_EVENT_STOP) {
			/* a group-stop, or an interrupt left over: nothing ran yet */
		} else if (sig == (SIGTRAP | 0x80)) {
			long n = ptrace(PTRACE_GET_SYSCALL_INFO, r->tid, (void *)sizeof(info), &info);

			if (n <= 0)
				return n < 0 ? -errno : -EIO;
			if (info.op == PTRACE_SYSCALL_INFO_ENTRY) {
				if ((long)info.entry.nr != nr ||
				    info.instruction_pointer != r->insn + ARCH_INSN_LEN) {
					r->at_entry = true; /* not our call: cannot happen */
					return -EIO;
				}
				entered = true;
			} else if (info.op == PTRACE_SYSCALL_INFO_EXIT && entered) {
				*result = (long)info.exit.rval;
				return 0;
			}
		} else if (!(status >> 16)) {
			/* a signal-delivery stop: nothing of ours has run */
			if (entered)
				return -EIO;
			if (sig == SIGSYS && our_sigsys(r)) {
				sig = 0;
			} else {
				/*
				 * The thread was not made to block it: give it
				 * back from the thread's own registers, then
				 * take the thread again at its next stop.
				 */
				err = arch_set_regs(r->tid, &r->saved);
				if (err)
					return err;
				r->regs_changed = false;
				if (ptrace(PTRACE_INTERRUPT, r->tid, NULL, NULL) < 0 ||
				    ptrace(PTRACE_CONT, r->tid, NULL, (void *)(uintptr_t)sig) < 0)
					return -errno;
				err = reach_trap(r);
				if (!err)
					err = arch_get_regs(r->tid, &r->saved);
				if (err)
					return err;
				goto setup;
			}
		}
		if (ptrace(PTRACE_SYSCALL, r->tid, NULL, (void *)(uintptr_t)0) < 0)
			return -errno;
	}
}

/*
 * What the thread's seccomp filters decide for system call nr with args,
 * made at r->insn: 0 if every filter allows it, else -EACCES (the verdict
 * and the deciding filter in r) or -errno if the filters cannot be read.
 */
static int seccomp_check(struct remote *r, long nr, const uint64_t args[6])
{
	struct seccomp_data sd = { .nr = (int)nr, .arch = ARCH_AUDIT,
				   .instruction_pointer = r->insn + ARCH_INSN_LEN };
	uint32_t verdict = SECCOMP_RET_ALLOW;

	if (r->seccomp_mode != 2)
		return 0;
	memcpy(sd.args, args, sizeof(sd.args));
	for (unsigned i = 0;; i++) {
		long len = ptrace(PTRACE_SECCOMP_GET_FILTER, r->tid, (void *)(uintptr_t)i, r->filter);
		uint32_t ret;
		int err;

		if (len < 0 && errno == ENOENT && i > 0)
			break; /* past the oldest */
		if (len < 0) {
			r->filter_index = i;
			return fail(r, STEP_SECCOMP_READ, -errno);
		}
		err = dirty_seccomp_run(r->filter, (size_t)len, &sd, &ret);
		if (err) {
			r->filter_index = i;
			return fail(r, STEP_SECCOMP_READ, -ENOEXEC);
		}
		/* PTRACE_SECCOMP_GET_FILTER counts from the oldest filter */
		if (dirty_seccomp_combine(verdict, ret) == ret) {
			verdict = ret;
			r->filter_index = i;
		}
	}
	if (dirty_seccomp_allows(verdict))
		return 0;
	r->nr = nr;
	r->seccomp_ret = verdict;
	return fail(r, STEP_SECCOMP, -EACCES);
}

/*
 * Syscall user dispatch (prctl(PR_SET_SYSCALL_USER_DISPATCH), Wine): a
 * system call from outside the allowed range while the selector says
 * "block" is turned into a SIGSYS, and forcing that SIGSYS on a thread that
 * blocks it resets its handler.  Refuse unless the call would go through.
 */
static int dispatch_check(struct remote *r)
{
	struct ptrace_sud_config sud;
	unsigned char selector;

	if (ptrace((enum __ptrace_request)PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG, r->tid,
		   (void *)sizeof(sud), &sud) < 0)
		return 0; /* before 6.4 (EIO), or no such configuration */
	if (sud.mode != PR_SYS_DISPATCH_ON ||
	    r->insn + ARCH_INSN_LEN - sud.offset < sud.len)
		return 0;
	if (sud.selector && read_target(r->pid, sud.selector, &selector, 1) == 0 &&
	    selector == 0 /* SYSCALL_DISPATCH_FILTER_ALLOW */)
		return 0;
	return fail(r, STEP_DISPATCH, -EACCES);
}

/*
 * A `syscall` instruction to run the calls at: the vDSO's, which no one
 * rewrites, else the one the thread is stopped in (code that a JIT could
 * rewrite under us: then it would not be a system call that runs).
 */
static int find_insn(struct remote *r)
{
	unsigned char insn[ARCH_INSN_LEN];
	uintptr_t ip = arch_ip(&r->saved);

	r->insn = r->vdso_insn;
	if (!r->insn && arch_in_syscall(&r->saved) && ip >= ARCH_INSN_LEN &&
	    read_target(r->pid, ip - ARCH_INSN_LEN, insn, sizeof(insn)) == 0 &&
	    !memcmp(insn, arch_insn, sizeof(insn)))
		r->insn = ip - ARCH_INSN_LEN;
	return r->insn ? 0 : fail(r, STEP_INSN, -ENOEXEC);
}

/*
 * Descriptor fd of the thread is a userfaultfd that was not there when the
 * plan was made: only such a descriptor is ever closed in the target.
 */
static int prove_new_userfaultfd(const struct remote *r, long fd, ino_t *ret_ino)
{
	char path[96], prefix[80], link[64];
	struct stat st;
	ssize_t n;

	if (fd < 0)
		return -EBADF;
	memcpy(prefix, r->task_dir, sizeof(r->task_dir));
	strncat(prefix, "fd/", sizeof(prefix) - strlen(prefix) - 1);
	path_number(path, sizeof(path), prefix, fd);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return -errno;
	link[n] = '\0';
	if (strcmp(link, "anon_inode:[userfaultfd]") || stat(path, &st) < 0)
		return -EBADF;
	for (size_t i = 0; i < r->nuffd_inodes; i++)
		if (r->uffd_inodes[i] == st.st_ino)
			return -EEXIST; /* one of its own */
	*ret_ino = st.st_ino;
	return 0;
}

/* The thread's signal mask, as /proc shows it now (the temporary one inside sigsuspend()). */
static int current_blocked(const struct remote *r, uint64_t *ret)
{
	char path[96], text[4096];
	const char *value;

	memcpy(path, r->task_dir, sizeof(r->task_dir));
	strncat(path, "status", sizeof(path) - strlen(path) - 1);
	if (read_small(path, text, sizeof(text)) <= 0 || !(value = status_field(text, "SigBlk")))
		return -EIO;
	*ret = strtoull(value, NULL, 16);
	return 0;
}

/* Make the userfaultfd, copy it out, close the target's copy. */
static void make_userfaultfd(struct remote *r)
{
	uint64_t args[6] = { (uint64_t)r->uffd_flags }, close_args[6] = { (uint64_t)r->guess_fd };
	long created = -1, closed = -1;
	ino_t ino = 0;
	int err;

	if (dispatch_check(r))
		return;
	/* the close too, before anything is made: a descriptor we could not close would stay */
	if (seccomp_check(r, SYS_userfaultfd, args) || seccomp_check(r, SYS_close, close_args))
		return;
	err = run_call(r, SYS_userfaultfd, args, &created);
	if (!err && created == -EINVAL && (r->uffd_flags & UFFD_USER_MODE_ONLY)) {
		args[0] &= ~(uint64_t)UFFD_USER_MODE_ONLY; /* before 5.11 */
		if (seccomp_check(r, SYS_userfaultfd, args))
			return;
		err = run_call(r, SYS_userfaultfd, args, &created);
	}
	if (err) {
		fail(r, STEP_CALL, err);
		return;
	}
	r->created = created;
	if (created < 0) {
		fail(r, STEP_CREATE, (int)created);
		return;
	}
	pause_at(r, "created");
	err = prove_new_userfaultfd(r, created, &ino);
	if (err) {
		fail(r, STEP_PROVE, err);
		return;
	}
	r->fd = (int)syscall(SYS_pidfd_getfd, r->pidfd, (int)created, 0);
	if (r->fd < 0) {
		fail(r, STEP_GETFD, -errno);
	} else {
		struct stat st;

		if (fstat(r->fd, &st) < 0 || st.st_ino != ino) {
			/* the number changed hands meanwhile: what it holds now is not ours */
			close(r->fd);
			r->fd = -1;
			fail(r, STEP_PROVE, -EBADF);
			return;
		}
	}
	/* the target keeps nothing of ours; our copy holds the userfaultfd alive */
	close_args[0] = (uint64_t)created;
	if (seccomp_check(r, SYS_close, close_args))
		return;
	err = run_call(r, SYS_close, close_args, &closed);
	if (err || closed) {
		fail(r, STEP_CLOSE, err ? err : (int)closed);
		return;
	}
	r->closed = true;
}

/* Put the thread back: registers at a trap stop, then the mask, then let go. */
static void give_back(struct remote *r)
{
	int err = 0;

	if (r->at_entry) {
		/* a call we did not mean is about to run: make it getpid(2), then go on */
		arch_regs regs;
		int status;

		err = arch_get_regs(r->tid, &regs);
		if (!err) {
			arch_set_nr(&regs, SYS_getpid);
			err = arch_set_regs(r->tid, &regs);
		}
		if (!err && ptrace(PTRACE_SYSCALL, r->tid, NULL, NULL) < 0)
			err = -errno;
		while (!err && !(err = wait_tracee(r, &status)) && WSTOPSIG(status) != (SIGTRAP | 0x80))
			if (ptrace(PTRACE_SYSCALL, r->tid, NULL, NULL) < 0)
				err = -errno;
		r->at_entry = false;
	}
	if (r->regs_changed && !err) {
		/*
		 * Back to a trap in the signal code, as when it was taken, so
		 * that the kernel restarts an interrupted system call from
		 * the registers put back.  A signal met on the way is
		 * delivered from them.
		 */
		err = arch_set_regs(r->tid, &r->saved);
		if (!err) {
			r->regs_changed = false;
			if (ptrace(PTRACE_INTERRUPT, r->tid, NULL, NULL) < 0 ||
			    ptrace(PTRACE_CONT, r->tid, NULL, NULL) < 0)
				err = -errno;
		}
		if (!err)
			err = reach_trap(r);
	}
	if (err == -ESRCH)
		return;
	if (r->mask_blocked &&
	    ptrace(PTRACE_SETSIGMASK, r->tid, (void *)sizeof(r->saved_mask), &r->saved_mask) < 0 &&
	    !err)
		err = -errno;
	if (err && err != -EAGAIN)
		fail(r, STEP_RESTORE, err);
	ptrace(PTRACE_DETACH, r->tid, NULL, (void *)(uintptr_t)r->stop_sig);
}

#if ARCH_SETTLE
/*
 * arm64 (see the top of the arch_* block): at a stop with pc at an `svc`,
 * run the thread, signals blocked, to that call's syscall-entry stop, make
 * the call getpid(2) and take it to its exit stop; the registers saved are
 * those just before the `svc`, the call's number in x8 as the kernel left
 * it (restart_syscall's for a sleep).  Nothing else of the thread runs.
 */
static int settle_restart(struct remote *r)
{
	static const uint64_t no_args[6];
	struct __ptrace_syscall_info info;
	unsigned char insn[ARCH_INSN_LEN];
	uintptr_t pc = arch_ip(&r->saved), insn_was = r->insn;
	bool entered = false;
	int status, err, sig;
	arch_regs regs;

	if (read_target(r->pid, pc, insn, sizeof(insn)) || memcmp(insn, arch_insn, sizeof(insn)))
		return 0; /* no call to restart: nothing for the kernel to finish */
	/* the call that runs in its place, at that `svc` */
	r->insn = pc;
	err = seccomp_check(r, SYS_getpid, no_args);
	r->insn = insn_was;
	if (err)
		return err;
	if (ptrace(PTRACE_SYSCALL, r->tid, NULL, NULL) < 0)
		return fail(r, STEP_CALL, -errno);
	for (;;) {
		err = wait_tracee(r, &status);
		if (err)
			return fail(r, STEP_CALL, err);
		sig = WSTOPSIG(status);
		if (sig == (SIGTRAP | 0x80)) {
			long n = ptrace(PTRACE_GET_SYSCALL_INFO, r->tid, (void *)sizeof(info), &info);

			if (n <= 0)
				return fail(r, STEP_CALL, n < 0 ? -errno : -EIO);
			if (info.op == PTRACE_SYSCALL_INFO_ENTRY && !entered) {
				if (info.instruction_pointer != pc + ARCH_INSN_LEN) {
					r->at_entry = true; /* not the `svc` at pc: cannot happen */
					return fail(r, STEP_CALL, -EIO);
				}
				err = arch_get_regs(r->tid, &regs);
				if (err)
					return fail(r, STEP_REGS, err);
				r->saved = regs;
				r->saved.gp.pc = pc;
				r->saved.syscallno = -1;
				arch_set_nr(&regs, SYS_getpid);
				err = arch_set_regs(r->tid, &regs);
				if (err) {
					r->at_entry = true;
					return fail(r, STEP_CALL, err);
				}
				r->regs_changed = true;
				entered = true;
			} else if (info.op == PTRACE_SYSCALL_INFO_EXIT && entered) {
				return 0;
			}
			sig = 0;
		} else if (status >> 16) {
			sig = 0; /* a group-stop or an interrupt: nothing ran */
		}
		/* else a signal that cannot be blocked (SIGSTOP): it goes as it came */
		if (ptrace(PTRACE_SYSCALL, r->tid, NULL, (void *)(uintptr_t)sig) < 0)
			return fail(r, STEP_CALL, -errno);
	}
}
#else
static int settle_restart(struct remote *r)
{
	(void)r;
	return 0;
}
#endif

static void remote_inject(struct remote *r)
{
	uint64_t all = ~UINT64_C(0), now;
	int err;

	r->err = 0;
	r->step = STEP_NONE;
	r->fd = -1;
	r->created = -1;
	r->regs_changed = r->mask_blocked = r->closed = r->at_entry = false;
	r->deliveries = 0;
	r->stop_sig = 0;
	if (ptrace(PTRACE_SEIZE, r->tid, NULL, (void *)(uintptr_t)PTRACE_O_TRACESYSGOOD) < 0) {
		fail(r, STEP_SEIZE, -errno);
		return;
	}
	pause_at(r, "seized");
	if (ptrace(PTRACE_INTERRUPT, r->tid, NULL, NULL) < 0) {
		fail(r, STEP_STOP, -errno);
		/* it died: take its exit, so that its parent can reap it */
		if (errno == ESRCH)
			waitpid(r->tid, &(int){ 0 }, __WALL);
		return;
	}
	pause_at(r, "interrupted");
	if (r->in_helper) {
		/* a thread that does not stop is let go by the helper's exit */
		struct timespec deadline;

		clock_gettime(CLOCK_MONOTONIC, &deadline);
		deadline.tv_sec += STOP_TIMEOUT_S;
		err = reach_trap_until(r, &deadline);
	} else {
		err = reach_trap(r);
	}
	if (err == -ETIMEDOUT) {
		fail(r, STEP_STOP, err);
		return; /* not stopped: no detach, the helper's exit lets it go */
	}
	if (err) {
		fail(r, STEP_STOP, err);
		goto out;
	}
	err = arch_get_regs(r->tid, &r->saved);
	if (!err && ptrace(PTRACE_GETSIGMASK, r->tid, (void *)sizeof(r->saved_mask),
			   &r->saved_mask) < 0)
		err = -errno;
	if (err) {
		fail(r, STEP_REGS, err);
		goto out;
	}
	if (!arch_native(&r->saved)) {
		fail(r, STEP_ARCH, -EOPNOTSUPP);
		goto out;
	}
	if (find_insn(r))
		goto out;
	/*
	 * A thread asleep with a temporary mask (sigsuspend, ppoll, pselect,
	 * epoll_pwait): PTRACE_GETSIGMASK gave the mask it goes back to, /proc
	 * shows the one in force.  Back from this stop, the kernel would
	 * restart the call and put that mask back before delivering what it
	 * unblocks.  So restart the call now in the registers to put back: with
	 * the mask put back at the detach, a signal then goes to the
	 * restarted call, as it would have.
	 */
	if (current_blocked(r, &now) == 0 && now != r->saved_mask)
		arch_restart_syscall(&r->saved);
	/* signals that come while the thread is ours wait, siginfo and all */
	if (ptrace(PTRACE_SETSIGMASK, r->tid, (void *)sizeof(all), &all) == 0)
		r->mask_blocked = true;
	if (ARCH_SETTLE && r->mask_blocked && settle_restart(r))
		goto out;
	pause_at(r, "stopped");
	make_userfaultfd(r);
	pause_at(r, "closed");
out:
	give_back(r);
}

/* ---- the helper process ---- */

static int helper_main(void *arg)
{
	struct remote *r = arg;

	/* out of the caller's session: a signal to its terminal's process group misses us */
	setsid();
	r->in_helper = true;
	remote_inject(r);
	return 0;
}

/*
 * Run remote_inject() in a helper: a process that shares our memory and
 * descriptor table (CLONE_VM, CLONE_FILES: the result and the copied
 * descriptor land here), that we wait for as for vfork() (CLONE_VFORK), that
 * blocks every signal and sends none when it ends (exit signal 0, so that a
 * SIGCHLD handler or a waitpid(-1) of the caller is not disturbed).  The
 * caller may be killed meanwhile: the helper finishes alone and is reaped by
 * init.  It allocates nothing and uses no stdio.
 */
static int run_in_helper(struct remote *r)
{
	const size_t stack_len = 256 * 1024;
	sigset_t all, old;
	int status, err = 0;
	pid_t child;
	void *stack;

	stack = mmap(NULL, stack_len, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	if (stack == MAP_FAILED)
		return -ENOMEM;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	child = clone(helper_main, (char *)stack + stack_len, CLONE_VM | CLONE_VFORK | CLONE_FILES,
		      r);
	if (child < 0)
		err = -errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	while (child > 0 && waitpid(child, &status, __WALL) < 0 && errno == EINTR)
		;
	munmap(stack, stack_len);
	return err;
}

static int yama_scope(void)
{
	char text[16];

	return read_small("/proc/sys/kernel/yama/ptrace_scope", text, sizeof(text)) > 0
		       ? atoi(text) : -1;
}

/* ---- the plan: /proc only ---- */

/* A thread's state letter from /proc/PID/task/TID/stat ('?' if unknown). */
static char thread_state(pid_t pid, pid_t tid)
{
	char path[64], text[512], *p, state = '?';

	snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", (int)pid, (int)tid);
	if (read_small(path, text, sizeof(text)) > 0 && (p = strrchr(text, ')')))
		sscanf(p + 1, " %c", &state);
	return state;
}

/* How well a thread lends itself to being borrowed, best first. */
enum thread_fit {
	FIT_GOOD,
	FIT_EINTR, /* waits in a call that fails with EINTR after a stop */
	FIT_VFORK, /* suspended in vfork() until its child execs: stops only then */
};

/*
 * A thread waiting in one of these sees it fail with EINTR once stopped and
 * resumed, as after SIGSTOP and SIGCONT (signal(7), "Interruption of system
 * calls and library functions by stop signals"): borrow another if there is.
 */
static bool fails_after_stop(long nr)
{
	switch (nr) {
#ifdef SYS_epoll_wait
	case SYS_epoll_wait:
#endif
#ifdef SYS_epoll_pwait2
	case SYS_epoll_pwait2:
#endif
#ifdef SYS_semop
	case SYS_semop:
#endif
#ifdef SYS_io_pgetevents
	case SYS_io_pgetevents:
#endif
	case SYS_epoll_pwait:
	case SYS_semtimedop:
	case SYS_rt_sigtimedwait:
	case SYS_io_getevents:
		return true;
	default:
		return false;
	}
}

/* What the thread waits in, from /proc/PID/task/TID/syscall. */
static enum thread_fit thread_fit(pid_t pid, pid_t tid)
{
	unsigned long long arg0 = 0, flags = 0;
	char path[64], text[256];
	long nr;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/syscall", (int)pid, (int)tid);
	if (read_small(path, text, sizeof(text)) <= 0 || sscanf(text, "%ld %llx", &nr, &arg0) < 1)
		return FIT_GOOD; /* running, or not in a call */
#ifdef SYS_vfork
	if (nr == SYS_vfork)
		return FIT_VFORK;
#endif
	if ((nr == SYS_clone && (arg0 & CLONE_VFORK)) ||
	    (nr == SYS_clone3 && read_target(pid, (uintptr_t)arg0, &flags, sizeof(flags)) == 0 &&
	     (flags & CLONE_VFORK)))
		return FIT_VFORK;
	return fails_after_stop(nr) ? FIT_EINTR : FIT_GOOD;
}

static void process_name(pid_t pid, char *buf, size_t len)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	if (read_small(path, buf, len) <= 0)
		snprintf(buf, len, "?");
	buf[strcspn(buf, "\n")] = '\0';
}

static bool have_cap_sys_ptrace(void)
{
	char text[4096];
	const char *value;

	if (read_small("/proc/self/status", text, sizeof(text)) <= 0 ||
	    !(value = status_field(text, "CapEff")))
		return false;
	return strtoull(value, NULL, 16) >> CAP_SYS_PTRACE_BIT & 1;
}

static bool is_ancestor_of(pid_t pid)
{
	pid_t me = getpid();
	char path[64], text[4096];
	const char *value;

	for (int depth = 0; pid > 1 && depth < 4096; depth++) {
		snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
		if (read_small(path, text, sizeof(text)) <= 0 || !(value = status_field(text, "PPid")))
			return false;
		pid = (pid_t)atoi(value);
		if (pid == me)
			return true;
	}
	return false;
}

/*
 * ptrace access to pid was refused (err): say which rule refused it, in the
 * order the kernel applies them (__ptrace_may_access(), then Yama, then the
 * other security modules), and what to do.
 */
static int explain_refusal(pid_t pid, int err, char *why, size_t why_len)
{
	unsigned target_uid[4] = { 0 }, uid = (unsigned)getuid();
	bool cap = have_cap_sys_ptrace();
	int scope = yama_scope();
	char path[64], text[4096];
	const char *value;
	struct stat st;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if (read_small(path, text, sizeof(text)) > 0 && (value = status_field(text, "Uid")))
		sscanf(value, "%u %u %u %u", &target_uid[0], &target_uid[1], &target_uid[2],
		       &target_uid[3]);
	if (scope == 3)
		return dirty_reason(why, why_len, err,
				    "ptrace of process %d refused: kernel.yama.ptrace_scope is 3, "
				    "which forbids every ptrace attach until the next reboot",
				    (int)pid);
	if (!cap && (target_uid[0] != uid || target_uid[1] != uid || target_uid[2] != uid))
		return dirty_reason(why, why_len, err,
				    "ptrace of process %d refused: it runs as uid %u, you as uid "
				    "%u, and you lack CAP_SYS_PTRACE: run dirtyctl as that user "
				    "or as root", (int)pid, target_uid[1], uid);
	/* a non-dumpable process's /proc files (not its directory) belong to root */
	snprintf(path, sizeof(path), "/proc/%d/mem", (int)pid);
	if (!cap && stat(path, &st) == 0 && st.st_uid != target_uid[1])
		return dirty_reason(why, why_len, err,
				    "ptrace of process %d refused: it is not dumpable (a "
				    "set-user-ID program, one with file capabilities, or one that "
				    "called prctl(PR_SET_DUMPABLE, 0)), and only CAP_SYS_PTRACE "
				    "may attach to such a process: run dirtyctl as root", (int)pid);
	if (!cap && scope == 2)
		return dirty_reason(why, why_len, err,
				    "ptrace of process %d refused: kernel.yama.ptrace_scope is 2, "
				    "so only CAP_SYS_PTRACE may attach: run dirtyctl as root, or "
				    "set the sysctl to 1 or 0", (int)pid);
	if (!cap && scope == 1 && !is_ancestor_of(pid))
		return dirty_reason(why, why_len, err,
				    "ptrace of process %d refused: kernel.yama.ptrace_scope is 1, "
				    "so a process may attach only to its own descendants: start "
				    "the program under `dirtyctl run`, run dirtyctl as root "
				    "(CAP_SYS_PTRACE), or set kernel.yama.ptrace_scope to 0",
				    (int)pid);
	return dirty_reason(why, why_len, err,
			    "ptrace of process %d refused (%s) although its user, dumpability and "
			    "Yama allow it: a security module (AppArmor, SELinux, Landlock) or a "
			    "user namespace boundary refused it; see the kernel's audit log "
			    "(journalctl -k)", (int)pid, strerror(-err));
}

/*
 * The thread to borrow: the main one if it fits, else the live one that
 * fits best (thread_fit()).
 */
static int choose_thread(struct remote *r, char *why, size_t why_len)
{
	char path[64], leader = thread_state(r->pid, r->pid);
	enum thread_fit best = FIT_VFORK;
	unsigned live = 0;
	struct dirent *d;
	DIR *dir;

	r->tid = 0;
	snprintf(path, sizeof(path), "/proc/%d/task", (int)r->pid);
	dir = opendir(path);
	if (!dir)
		return dirty_reason(why, why_len, -ESRCH, "process %d has exited", (int)r->pid);
	/* the main thread first, then the others */
	for (int pass = 0; pass < 2; pass++) {
		rewinddir(dir);
		while ((d = readdir(dir))) {
			pid_t tid = (pid_t)atoi(d->d_name);
			enum thread_fit fit;
			char state;

			if (tid <= 0 || (tid == r->pid) != !pass)
				continue;
			state = thread_state(r->pid, tid);
			if (state == 'Z' || state == 'X' || state == '?')
				continue;
			live++;
			fit = thread_fit(r->pid, tid);
			if (!r->tid || fit < best) {
				r->tid = tid;
				best = fit;
			}
		}
	}
	closedir(dir);
	if (!live)
		return dirty_reason(why, why_len, -ESRCH,
				    "process %d has exited: it is a zombie until its parent "
				    "reaps it, and its memory is gone", (int)r->pid);
	if (leader == 'Z' || leader == 'X')
		return dirty_reason(why, why_len, -ESRCH,
				    "the main thread of process %d has exited while %u other "
				    "thread%s run%s on: for such a process the kernel refuses "
				    "/proc/%d/mem and /proc/%d/pagemap (ESRCH), which tracking "
				    "reads, so it cannot be attached to; track the program from "
				    "its start (dirtyctl run), before its main thread exits",
				    (int)r->pid, live, live > 1 ? "s" : "", live > 1 ? "" : "s",
				    (int)r->pid, (int)r->pid);
	r->in_vfork = best == FIT_VFORK;
	return 0;
}

/* Does the process share its memory with its parent (a vfork() child before its exec)? */
static pid_t memory_owner(pid_t pid, const char *status)
{
	const char *value = status_field(status, "PPid");
	pid_t parent = value ? (pid_t)atoi(value) : 0;

	if (parent > 1 && syscall(SYS_kcmp, pid, parent, KCMP_VM, 0, 0) == 0)
		return parent;
	return 0;
}

static int list_userfaultfds(struct remote *r)
{
	char path[64], link[64], *dir_path;
	struct dirent *d;
	unsigned char used[1024] = { 0 };
	size_t cap = 0;
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)r->pid);
	dir = opendir(path);
	if (!dir)
		return -errno;
	dir_path = path;
	r->guess_fd = -1;
	while ((d = readdir(dir))) {
		char entry[336];
		struct stat st;
		int fd = atoi(d->d_name);
		ssize_t n;

		if (d->d_name[0] < '0' || d->d_name[0] > '9')
			continue;
		if (fd < (int)(sizeof(used) * 8))
			used[fd / 8] |= (unsigned char)(1u << fd % 8);
		snprintf(entry, sizeof(entry), "%s/%s", dir_path, d->d_name);
		n = readlink(entry, link, sizeof(link) - 1);
		if (n < 0)
			continue;
		link[n] = '\0';
		if (strcmp(link, "anon_inode:[userfaultfd]") || stat(entry, &st) < 0)
			continue;
		if (dirty_grow((void **)&r->uffd_inodes, &cap, r->nuffd_inodes + 1,
			       sizeof(*r->uffd_inodes))) {
			closedir(dir);
			return -ENOMEM;
		}
		r->uffd_inodes[r->nuffd_inodes++] = st.st_ino;
	}
	closedir(dir);
	for (int fd = 0; fd < (int)(sizeof(used) * 8) && r->guess_fd < 0; fd++)
		if (!(used[fd / 8] >> fd % 8 & 1))
			r->guess_fd = fd;
	if (r->guess_fd < 0)
		r->guess_fd = (int)(sizeof(used) * 8);
	return 0;
}

/* A `syscall` instruction in the target's [vdso], or 0. */
static uintptr_t find_vdso_syscall(pid_t pid)
{
	char path[64], *text, *line, *save = NULL;
	uintptr_t found = 0;

	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	if (dirty_read_file(path, &text, NULL))
		return 0;
	for (line = strtok_r(text, "\n", &save); line && !found; line = strtok_r(NULL, "\n", &save)) {
		unsigned long lo, hi;
		unsigned char *code;

		if (!strstr(line, "[vdso]") || sscanf(line, "%lx-%lx", &lo, &hi) != 2 ||
		    hi - lo > (1u << 20))
			continue;
		code = malloc(hi - lo);
		if (code && read_target(pid, lo, code, hi - lo) == 0) {
			for (size_t i = 0; i + ARCH_INSN_LEN <= hi - lo && !found; i += ARCH_INSN_ALIGN)
				if (!memcmp(code + i, arch_insn, ARCH_INSN_LEN))
					found = lo + i;
		}
		free(code);
	}
	free(text);
	return found;
}

static void remote_release(struct remote *r)
{
	if (r->pidfd >= 0)
		close(r->pidfd);
	free(r->uffd_inodes);
	free(r->filter);
	r->pidfd = -1;
	r->uffd_inodes = NULL;
	r->filter = NULL;
}

/*
 * Everything that can be known from /proc before the target is touched.
 * With inject, whether system calls may be run in it; with full, also what
 * the work needs (buffers, descriptors, the vDSO).
 */
static int remote_plan(pid_t pid, struct remote *r, bool inject, bool full, char *why,
		       size_t why_len)
{
	char path[96], *status = NULL, tracer_name[64];
	const char *value;
	pid_t tracer, owner;
	int err, fd;

	*r = (struct remote){ .pid = pid, .pidfd = -1, .fd = -1 };
	err = choose_thread(r, why, why_len);
	if (err)
		return err;
	snprintf(path, sizeof(path), "/proc/%d/task/%d/status", (int)pid, (int)r->tid);
	err = dirty_read_file(path, &status, NULL);
	if (err)
		return dirty_reason(why, why_len, -ESRCH, "process %d has exited", (int)pid);
	value = status_field(status, "TracerPid");
	tracer = value ? (pid_t)atoi(value) : 0;
	if (tracer) {
		process_name(tracer, tracer_name, sizeof(tracer_name));
		err = dirty_reason(why, why_len, -EBUSY,
				   "process %d is traced by process %d (%s), and a process has "
				   "one tracer at a time: detach that one first (quit the "
				   "debugger or strace)", (int)pid, (int)tracer, tracer_name);
		goto out;
	}
	owner = memory_owner(pid, status);
	if (owner) {
		err = dirty_reason(why, why_len, -EBUSY,
				   "process %d shares its memory with its parent, process %d (a "
				   "vfork() child that has not called execve() yet, or a "
				   "clone(CLONE_VM) process): attach to process %d, or to %d once "
				   "it has exec'ed", (int)pid, (int)owner, (int)owner, (int)pid);
		goto out;
	}
	/* ptrace access, as the kernel checks it for /proc/PID/mem */
	snprintf(path, sizeof(path), "/proc/%d/mem", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		err = errno == ENOENT || errno == ESRCH
			      ? dirty_reason(why, why_len, -ESRCH, "process %d has exited", (int)pid)
			      : explain_refusal(pid, -EPERM, why, why_len);
		goto out;
	}
	close(fd);
	value = status_field(status, "Seccomp");
	r->seccomp_mode = value ? atoi(value) : 0;
	value = status_field(status, "Seccomp_filters");
	r->seccomp_filters = value ? (unsigned)atoi(value) : 0;
	if (inject && r->seccomp_mode == 1) {
		err = dirty_reason(why, why_len, -EACCES,
				   "process %d runs in strict seccomp mode (read, write, _exit "
				   "and sigreturn only): userfaultfd(2) would kill it, so it "
				   "cannot be attached to", (int)pid);
		goto out;
	}
	if (!full)
		goto out;
	r->vdso_insn = find_vdso_syscall(pid);
	snprintf(r->task_dir, sizeof(r->task_dir), "/proc/%d/task/%d/", (int)pid, (int)r->tid);
	r->filter = calloc(BPF_MAXINSNS, sizeof(*r->filter));
	r->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (!r->filter || r->pidfd < 0) {
		err = dirty_reason(why, why_len, r->filter ? -errno : -ENOMEM,
				   "cannot open a pidfd of process %d: %s", (int)pid,
				   strerror(r->filter ? errno : ENOMEM));
		goto out;
	}
	err = list_userfaultfds(r);
	if (err)
		dirty_reason(why, why_len, err, "cannot list the descriptors of process %d: %s",
			     (int)pid, strerror(-err));
#if LIBDIRTY_PROBE_INJECTION
	{
		const char *pause = secure_getenv("LIBDIRTY_TEST_REMOTE_PAUSE"), *colon;

		colon = pause ? strchr(pause, ':') : NULL;
		if (colon && (size_t)(colon - pause) < sizeof(r->pause_step) &&
		    strlen(colon + 1) < sizeof(r->pause_dir)) {
			memcpy(r->pause_step, pause, (size_t)(colon - pause));
			snprintf(r->pause_dir, sizeof(r->pause_dir), "%s", colon + 1);
		}
		r->inline_only = secure_getenv("LIBDIRTY_TEST_REMOTE_INLINE") != NULL;
	}
#endif
out:
	free(status);
	if (err)
		remote_release(r);
	return err;
}

/* ---- the reason, from the outcome ---- */

static const char *syscall_name(long nr)
{
	return nr == SYS_userfaultfd ? "userfaultfd(2)" : nr == SYS_close ? "close(2)" : "a system call";
}

static int explain_outcome(struct remote *r, char *why, size_t why_len)
{
	int err = r->err, pid = (int)r->pid;

	if (err == -ESRCH)
		return dirty_reason(why, why_len, -ESRCH,
				    "process %d exited while libdirty was attaching to it", pid);
	switch (r->step) {
	case STEP_SEIZE:
		if (err == -EPERM)
			return explain_refusal(r->pid, err, why, why_len);
		return dirty_reason(why, why_len, err, "cannot ptrace process %d: %s", pid,
				    strerror(-err));
	case STEP_STOP:
		if (err == -ETIMEDOUT && r->in_vfork)
			return dirty_reason(why, why_len, -EBUSY,
					    "process %d is suspended in vfork() until its child calls "
					    "execve() or exits, which it did not do within %d s, and "
					    "the kernel does not stop it for a tracer before then: "
					    "attach again once the child has exec'ed", pid,
					    STOP_TIMEOUT_S);
		if (err == -ETIMEDOUT)
			return dirty_reason(why, why_len, -EBUSY,
					    "thread %d of process %d did not stop within %d s: it "
					    "sleeps in the kernel where no signal reaches it (state D "
					    "in /proc/%d/task/%d/stat); attach again later",
					    (int)r->tid, pid, STOP_TIMEOUT_S, pid, (int)r->tid);
		if (err == -EAGAIN)
			return dirty_reason(why, why_len, -EAGAIN,
					    "process %d took more than %d signals in a row while "
					    "libdirty waited for it to stop: try again", pid,
					    MAX_DELIVERIES);
		return dirty_reason(why, why_len, err, "cannot stop thread %d of process %d: %s",
				    (int)r->tid, pid, strerror(-err));
	case STEP_ARCH:
		return dirty_reason(why, why_len, -EOPNOTSUPP,
				    "process %d is a 32-bit program: libdirty makes only 64-bit "
				    "processes create a userfaultfd", pid);
	case STEP_INSN:
		return dirty_reason(why, why_len, -ENOEXEC,
				    "process %d has no vDSO and is not in a system call, so there "
				    "is no system call instruction to run userfaultfd(2) at: "
				    "attach while it waits in a system call", pid);
	case STEP_DISPATCH:
		return dirty_reason(why, why_len, -EACCES,
				    "process %d uses syscall user dispatch "
				    "(PR_SET_SYSCALL_USER_DISPATCH, as Wine does), which would "
				    "turn the injected userfaultfd(2) into a SIGSYS: refused, "
				    "nothing was run in it", pid);
	case STEP_SECCOMP_READ:
		if (err == -ENOEXEC)
			return dirty_reason(why, why_len, -EACCES,
					    "process %d has a seccomp filter (filter %u of %u) that "
					    "libdirty cannot evaluate, so it cannot prove that "
					    "userfaultfd(2) and close(2) are allowed: refused, nothing "
					    "was run in it", pid, r->filter_index + 1, r->seccomp_filters);
		return dirty_reason(why, why_len, -EACCES,
				    "process %d has %u seccomp filter%s that could kill it for the "
				    "injected userfaultfd(2), and libdirty cannot read %s to prove "
				    "otherwise (PTRACE_SECCOMP_GET_FILTER: %s%s): refused, nothing "
				    "was run in it; run dirtyctl as root", pid, r->seccomp_filters,
				    r->seccomp_filters == 1 ? "" : "s",
				    r->seccomp_filters == 1 ? "it" : "them", strerror(-err),
				    err == -EACCES ? ", which needs CAP_SYS_ADMIN and a caller without "
						     "seccomp filters of its own" : "");
	case STEP_SECCOMP:
		if ((r->seccomp_ret & SECCOMP_RET_ACTION_FULL) == SECCOMP_RET_ERRNO) {
			int e = (int)(r->seccomp_ret & SECCOMP_RET_DATA);

			return dirty_reason(why, why_len, -EACCES,
					    "the seccomp filter of process %d (filter %u of %u) would "
					    "make %s fail with errno %d (%s): refused, nothing was "
					    "run in it; its sandbox forbids what uffd-async needs "
					    "there, so only soft-dirty (a kernel with "
					    "CONFIG_MEM_SOFT_DIRTY) can track it", pid,
					    r->filter_index + 1, r->seccomp_filters, syscall_name(r->nr),
					    e, strerror(e));
		}
		return dirty_reason(why, why_len, -EACCES,
				    "the seccomp filter of process %d (filter %u of %u) would %s "
				    "for %s: refused, nothing was run in it; its sandbox forbids "
				    "what uffd-async needs there, so only soft-dirty (a kernel "
				    "with CONFIG_MEM_SOFT_DIRTY) can track it", pid,
				    r->filter_index + 1, r->seccomp_filters,
				    dirty_seccomp_action_name(r->seccomp_ret), syscall_name(r->nr));
	case STEP_CREATE:
		return dirty_reason(why, why_len, err,
				    "userfaultfd(2) in process %d failed: %s%s", pid, strerror(-err),
				    err == -EPERM ? " (vm.unprivileged_userfaultfd is 0 and the "
						    "process lacks CAP_SYS_PTRACE: set the sysctl to 1)"
				    : err == -EMFILE ? " (it has as many descriptors open as its "
						       "RLIMIT_NOFILE allows)" : "");
	case STEP_PROVE:
		return dirty_reason(why, why_len, -EIO,
				    "userfaultfd(2) in process %d returned %ld, which is not a "
				    "userfaultfd it just made; that descriptor was left alone",
				    pid, r->created);
	case STEP_GETFD:
		return dirty_reason(why, why_len, err,
				    "pidfd_getfd(2) of process %d refused its new userfaultfd: %s%s",
				    pid, strerror(-err), r->closed ? " (it was closed again in the "
							  "process)" : "");
	case STEP_CLOSE:
		return dirty_reason(why, why_len, -EIO,
				    "cannot close the userfaultfd made in process %d (descriptor "
				    "%ld): %s", pid, r->created, strerror(-err));
	case STEP_RESTORE:
		return dirty_reason(why, why_len, err,
				    "cannot put the registers of process %d back: %s", pid,
				    strerror(-err));
	case STEP_REGS:
	case STEP_CALL:
	default:
		return dirty_reason(why, why_len, err,
				    "cannot run a system call in process %d: %s", pid,
				    strerror(-err));
	}
}

int dirty_remote_userfaultfd(pid_t pid, int flags, int *ret_fd, char *why, size_t why_len)
{
	struct remote r;
	int err;

	err = remote_plan(pid, &r, true, true, why, why_len);
	if (err)
		return err;
	r.uffd_flags = flags;
	if (r.inline_only || run_in_helper(&r) ||
	    (r.step == STEP_SEIZE && r.err == -EPERM && yama_scope() == 1)) {
		/*
		 * No helper (it could not be made, or Yama lets only an
		 * ancestor of the target attach, which the helper is not):
		 * this thread does the work.  A SIGKILL of this process in the
		 * middle would then leave the target running our call.
		 */
		remote_inject(&r);
	}
	err = r.err ? explain_outcome(&r, why, why_len) : 0;
	if (err && r.fd >= 0)
		close(r.fd);
	else if (!err)
		*ret_fd = r.fd;
	remote_release(&r);
	return err;
}

int dirty_remote_check(pid_t pid, bool inject, char *why, size_t why_len)
{
	struct remote r;
	int err = remote_plan(pid, &r, inject, false, why, why_len);

	if (err)
		return err;
	remote_release(&r);
	if (!inject)
		return dirty_reason(why, why_len, 0, "process %d can be ptraced", (int)pid);
	return dirty_reason(why, why_len, 0,
			    "process %d can be made to create a userfaultfd (through thread %d%s%s)",
			    (int)pid, (int)r.tid,
			    r.seccomp_mode == 2 ? "; its seccomp filters are checked first" : "",
			    thread_state(pid, r.tid) == 'T' ? "; it is stopped and stays so" : "");
}

#else /* !REMOTE_SUPPORTED */

int dirty_remote_userfaultfd(pid_t pid, int flags, int *ret_fd, char *why, size_t why_len)
{
	(void)pid;
	(void)flags;
	(void)ret_fd;
	return dirty_reason(why, why_len, -EOPNOTSUPP,
			    "making another process create a userfaultfd is implemented for "
			    "x86-64 and arm64 only");
}

int dirty_remote_check(pid_t pid, bool inject, char *why, size_t why_len)
{
	(void)inject;
	return dirty_remote_userfaultfd(pid, 0, NULL, why, why_len);
}

#endif
