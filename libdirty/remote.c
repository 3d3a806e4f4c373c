/* SPDX-License-Identifier: MIT */
/*
 * A userfaultfd created inside another process, for uffd-async's pid option.
 *
 * A userfaultfd acts on the mm of the process that created it, whoever
 * calls its ioctls afterwards.  So the target is made to call userfaultfd(2)
 * itself, once, and the descriptor is copied out with pidfd_getfd(2):
 *   1. PTRACE_SEIZE and PTRACE_INTERRUPT one thread (the thread-group
 *      leader); the others run on.  Seizing does not stop the process and
 *      is invisible to its parent, unlike PTRACE_ATTACH's SIGSTOP.
 *   2. Save its registers.  Find a `syscall` instruction (0f 05) in its
 *      memory: just before the instruction pointer when it was stopped in a
 *      system call, else in its vDSO.
 *   3. Point the registers at that instruction with the system call's
 *      number and arguments, orig_rax = -1 (so that the kernel does not
 *      restart the interrupted call in our place), single-step, read rax.
 *   4. pidfd_getfd(2) the new descriptor, then close the target's copy the
 *      same way: the target is left with no descriptor of ours.
 *   5. Restore every register as it was and detach.  A system call that was
 *      interrupted is then restarted by the kernel as after any ptrace stop
 *      (its saved rax is the -ERESTART* code, orig_rax its number); a signal
 *      that arrived meanwhile is delivered at the detach.
 * No code of the target runs: its errno, signal mask and memory are
 * untouched.  x86-64 only.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libdirty-int.h"
#include "linux-compat.h"

#if defined(__x86_64__)

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

struct remote {
	pid_t pid;
	struct user_regs_struct saved;
	uintptr_t syscall_insn;
	/* signals that arrived while we held it, delivered again at the detach */
	int signals[16];
	size_t nsignals;
};

/* Wait for the tracee to stop; a signal it was about to take is kept for later. */
static int wait_stop(struct remote *r, bool want_trap)
{
	int status;

	for (;;) {
		if (waitpid(r->pid, &status, __WALL) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (WIFEXITED(status) || WIFSIGNALED(status))
			return -ESRCH;
		if (!WIFSTOPPED(status))
			continue;
		if (status >> 16) /* PTRACE_EVENT_STOP: the interrupt (or group stop) */
			return 0;
		if (WSTOPSIG(status) == SIGTRAP && want_trap)
			return 0;
		/* a signal-delivery stop: hold the signal, go on to our stop */
		if (r->nsignals < sizeof(r->signals) / sizeof(r->signals[0]))
			r->signals[r->nsignals++] = WSTOPSIG(status);
		if (ptrace(want_trap ? PTRACE_SINGLESTEP : PTRACE_CONT, r->pid, NULL, NULL) < 0)
			return -errno;
		if (!want_trap && ptrace(PTRACE_INTERRUPT, r->pid, NULL, NULL) < 0)
			return -errno;
	}
}

static int read_target(pid_t pid, uintptr_t addr, void *buf, size_t len)
{
	struct iovec local = { buf, len }, remote = { (void *)addr, len };

	return process_vm_readv(pid, &local, 1, &remote, 1, 0) == (ssize_t)len ? 0 : -EFAULT;
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
			for (size_t i = 0; i + 1 < hi - lo && !found; i++)
				if (code[i] == 0x0f && code[i + 1] == 0x05)
					found = lo + i;
		}
		free(code);
	}
	free(text);
	return found;
}

static int find_syscall_insn(struct remote *r)
{
	unsigned char insn[2];

	if ((long long)r->saved.orig_rax >= 0 && r->saved.rip >= 2 &&
	    read_target(r->pid, r->saved.rip - 2, insn, 2) == 0 && insn[0] == 0x0f &&
	    insn[1] == 0x05) {
		r->syscall_insn = r->saved.rip - 2;
		return 0;
	}
	r->syscall_insn = find_vdso_syscall(r->pid);
	return r->syscall_insn ? 0 : -ENOEXEC;
}

/* Run one system call in the stopped target; its result (or -errno) in *ret. */
static int remote_syscall(struct remote *r, long nr, long a0, long a1, long *ret)
{
	struct user_regs_struct regs = r->saved;
	int err;

	regs.rax = (unsigned long long)nr;
	regs.orig_rax = (unsigned long long)-1;
	regs.rdi = (unsigned long long)a0;
	regs.rsi = (unsigned long long)a1;
	regs.rip = r->syscall_insn;
	if (ptrace(PTRACE_SETREGS, r->pid, NULL, &regs) < 0 ||
	    ptrace(PTRACE_SINGLESTEP, r->pid, NULL, NULL) < 0)
		return -errno;
	err = wait_stop(r, true);
	if (err)
		return err;
	if (ptrace(PTRACE_GETREGS, r->pid, NULL, &regs) < 0)
		return -errno;
	if (regs.rip != r->syscall_insn + 2)
		return -EIO; /* it did not execute our instruction */
	*ret = (long)regs.rax;
	return 0;
}

int dirty_remote_userfaultfd(pid_t pid, int flags, int *ret_fd, char *why, size_t why_len)
{
	struct remote r = { .pid = pid };
	int pidfd, fd = -1, err = 0;
	long target_fd = -1, closed;

	pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0)
		return dirty_reason(why, why_len, errno == ESRCH ? -ESRCH : -errno,
				    "pidfd_open(%d): %s", (int)pid, strerror(errno));
	if (ptrace(PTRACE_SEIZE, pid, NULL, NULL) < 0) {
		err = -errno;
		close(pidfd);
		return dirty_reason(why, why_len, err,
				    "cannot ptrace process %d: %s%s", (int)pid, strerror(-err),
				    err == -EPERM ? " (traced by another process, or Yama "
						    "ptrace_scope, or another user)" : "");
	}
	if (ptrace(PTRACE_INTERRUPT, pid, NULL, NULL) < 0 || (err = wait_stop(&r, false))) {
		err = err ? err : -errno;
		dirty_reason(why, why_len, err, "cannot stop process %d: %s", (int)pid,
			     strerror(-err));
		goto out_detach;
	}
	if (ptrace(PTRACE_GETREGS, pid, NULL, &r.saved) < 0) {
		err = dirty_reason(why, why_len, -errno, "PTRACE_GETREGS: %s", strerror(errno));
		goto out_detach;
	}
	err = find_syscall_insn(&r);
	if (err) {
		dirty_reason(why, why_len, err,
			     "no system call instruction found in process %d", (int)pid);
		goto out_restore;
	}
	err = remote_syscall(&r, SYS_userfaultfd, flags, 0, &target_fd);
	if (!err && target_fd < 0 && (flags & UFFD_USER_MODE_ONLY) && target_fd == -EINVAL)
		err = remote_syscall(&r, SYS_userfaultfd, flags & ~UFFD_USER_MODE_ONLY, 0,
				     &target_fd); /* before 5.11 */
	if (err) {
		dirty_reason(why, why_len, err, "cannot run a system call in process %d: %s",
			     (int)pid, strerror(-err));
		goto out_restore;
	}
	if (target_fd < 0) {
		err = (int)target_fd;
		dirty_reason(why, why_len, err, "userfaultfd() in process %d failed: %s%s", (int)pid,
			     strerror(-err),
			     err == -EPERM ? " (vm.unprivileged_userfaultfd=0 and the target "
					     "lacks CAP_SYS_PTRACE)" : "");
		goto out_restore;
	}
	fd = (int)syscall(SYS_pidfd_getfd, pidfd, (int)target_fd, 0);
	if (fd < 0)
		err = dirty_reason(why, why_len, -errno, "pidfd_getfd: %s", strerror(errno));
	/* the target keeps nothing of ours; our copy holds the userfaultfd alive */
	if (remote_syscall(&r, SYS_close, target_fd, 0, &closed) || closed) {
		if (!err)
			err = dirty_reason(why, why_len, -EIO,
					   "cannot close the descriptor made in process %d",
					   (int)pid);
	}
out_restore:
	if (ptrace(PTRACE_SETREGS, pid, NULL, &r.saved) < 0 && !err)
		err = dirty_reason(why, why_len, -errno, "cannot restore the registers: %s",
				   strerror(errno));
out_detach:
	/* the first held signal goes with the detach, any others are sent again */
	ptrace(PTRACE_DETACH, pid, NULL, (void *)(uintptr_t)(r.nsignals ? r.signals[0] : 0));
	for (size_t i = 1; i < r.nsignals; i++)
		syscall(SYS_tgkill, pid, pid, r.signals[i]);
	close(pidfd);
	if (err) {
		if (fd >= 0)
			close(fd);
		return err;
	}
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	*ret_fd = fd;
	return 0;
}

#else

int dirty_remote_userfaultfd(pid_t pid, int flags, int *ret_fd, char *why, size_t why_len)
{
	(void)pid;
	(void)flags;
	(void)ret_fd;
	return dirty_reason(why, why_len, -EOPNOTSUPP,
			    "making another process create a userfaultfd is implemented for "
			    "x86-64 only");
}

#endif
