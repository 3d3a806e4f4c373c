/* SPDX-License-Identifier: MIT */
/*
 * dirty_seccomp_run() (libdirty/base/seccomp.c) against the kernel.
 *
 * remote.c refuses to run a system call in another process unless every
 * seccomp filter of that process, run by dirty_seccomp_run(), allows it: so
 * the evaluator must decide exactly as the kernel does.  Each case below
 * installs its filters in a child, which then calls getppid(2) with chosen
 * arguments; what the kernel did is what the child sees (success, an errno
 * for SECCOMP_RET_ERRNO, ENOSYS for SECCOMP_RET_TRACE with no tracer, death
 * by SIGSYS for TRAP and KILL), and it must be what the evaluator predicts
 * for the same struct seccomp_data.  The filters compute their answer from
 * the data with every instruction a seccomp filter may hold and return it as
 * an errno, so that an arithmetic or a jump taken differently shows.
 * Programs the kernel refuses must be refused by the evaluator too.
 *
 * Prints "ok N name" or "not ok N name: why" per case; exits 1 if any
 * failed, 77 if this kernel or this process cannot install filters.
 */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libdirty-int.h"

#include "native-arch.h"

#define MAX_FILTERS 3
#define MAX_INSNS 64

#define LD_NR BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr))
#define LD_ARG(i, hi)                                                                    \
	BPF_STMT(BPF_LD | BPF_W | BPF_ABS,                                               \
		 offsetof(struct seccomp_data, args[i]) + ((hi) ? 4 : 0))
/* every other system call is allowed: the child must be able to exit */
#define ONLY_GETPPID                                                                     \
	LD_NR, BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 1, 0),                   \
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)
/* return A as an errno: what the program computed, for the child to see */
#define RET_A_AS_ERRNO                                                                   \
	BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0xfff),                                      \
		BPF_STMT(BPF_ALU | BPF_OR | BPF_K, SECCOMP_RET_ERRNO),                   \
		BPF_STMT(BPF_RET | BPF_A, 0)

struct filter {
	struct sock_filter insns[MAX_INSNS];
	unsigned short len;
};

struct test_case {
	const char *name;
	uint64_t args[6];
	struct filter filters[MAX_FILTERS]; /* installed in this order */
	bool refused;                       /* the kernel must refuse the (last) filter */
};

#define PROG(...)                                                                        \
	{ .insns = { __VA_ARGS__ },                                                      \
	  .len = sizeof((struct sock_filter[]){ __VA_ARGS__ }) / sizeof(struct sock_filter) }

static const struct test_case cases[] = {
	{ "allow", { 0 }, { PROG(ONLY_GETPPID, BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)) } },
	{ "log", { 0 }, { PROG(ONLY_GETPPID, BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_LOG)) } },
	{ "errno constant", { 0 },
	  { PROG(ONLY_GETPPID, BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 77)) } },
	{ "errno capped at 4095", { 0 },
	  { PROG(ONLY_GETPPID, BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 0xffff)) } },
	{ "trap", { 0 }, { PROG(ONLY_GETPPID, BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP)) } },
	{ "kill thread", { 0 },
	  { PROG(ONLY_GETPPID, BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_THREAD)) } },
	{ "kill process", { 0 },
	  { PROG(ONLY_GETPPID, BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS)) } },
	{ "trace, no tracer", { 0 },
	  { PROG(ONLY_GETPPID, BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE)) } },
	{ "unknown action kills", { 0 },
	  { PROG(ONLY_GETPPID, BPF_STMT(BPF_RET | BPF_K, 0x00010000)) } },
	{ "arch", { 0 },
	  { PROG(ONLY_GETPPID,
		 BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		 BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_AUDIT_ARCH, 0, 1),
		 BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 11),
		 BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 12)) } },
	{ "arguments, low and high words", { 0x123456789abcdef0ull, 0x0fedcba987654321ull },
	  { PROG(ONLY_GETPPID, LD_ARG(0, 0), BPF_STMT(BPF_MISC | BPF_TAX, 0), LD_ARG(1, 1),
		 BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0), RET_A_AS_ERRNO) } },
	{ "add sub mul with K", { 1000 },
	  { PROG(ONLY_GETPPID, LD_ARG(0, 0), BPF_STMT(BPF_ALU | BPF_ADD | BPF_K, 7),
		 BPF_STMT(BPF_ALU | BPF_MUL | BPF_K, 3), BPF_STMT(BPF_ALU | BPF_SUB | BPF_K, 4000),
		 RET_A_AS_ERRNO) } },
	{ "32-bit wrap", { 0xfffffff0u, 0x20 },
	  { PROG(ONLY_GETPPID, LD_ARG(1, 0), BPF_STMT(BPF_MISC | BPF_TAX, 0), LD_ARG(0, 0),
		 BPF_STMT(BPF_ALU | BPF_ADD | BPF_X, 0), BPF_STMT(BPF_ALU | BPF_MUL | BPF_X, 0),
		 RET_A_AS_ERRNO) } },
	{ "div and neg", { 1000, 7 },
	  { PROG(ONLY_GETPPID, LD_ARG(1, 0), BPF_STMT(BPF_MISC | BPF_TAX, 0), LD_ARG(0, 0),
		 BPF_STMT(BPF_ALU | BPF_DIV | BPF_X, 0), BPF_STMT(BPF_ALU | BPF_DIV | BPF_K, 2),
		 BPF_STMT(BPF_ALU | BPF_NEG, 0), RET_A_AS_ERRNO) } },
	{ "division by a zero register ends with 0 (kill thread)", { 1000, 0 },
	  { PROG(ONLY_GETPPID, LD_ARG(1, 0), BPF_STMT(BPF_MISC | BPF_TAX, 0), LD_ARG(0, 0),
		 BPF_STMT(BPF_ALU | BPF_DIV | BPF_X, 0), RET_A_AS_ERRNO) } },
	{ "and or xor", { 0xf0f0, 0x0ff0 },
	  { PROG(ONLY_GETPPID, LD_ARG(1, 0), BPF_STMT(BPF_MISC | BPF_TAX, 0), LD_ARG(0, 0),
		 BPF_STMT(BPF_ALU | BPF_AND | BPF_X, 0), BPF_STMT(BPF_ALU | BPF_OR | BPF_K, 0x3),
		 BPF_STMT(BPF_ALU | BPF_XOR | BPF_K, 0x101), BPF_STMT(BPF_ALU | BPF_OR | BPF_X, 0),
		 RET_A_AS_ERRNO) } },
	{ "shifts", { 0x12345, 3 },
	  { PROG(ONLY_GETPPID, LD_ARG(1, 0), BPF_STMT(BPF_MISC | BPF_TAX, 0), LD_ARG(0, 0),
		 BPF_STMT(BPF_ALU | BPF_LSH | BPF_X, 0), BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 5),
		 BPF_STMT(BPF_ALU | BPF_LSH | BPF_K, 1), BPF_STMT(BPF_ALU | BPF_RSH | BPF_X, 0),
		 RET_A_AS_ERRNO) } },
	{ "shift by a register of 33", { 0x12345, 33 },
	  { PROG(ONLY_GETPPID, LD_ARG(1, 0), BPF_STMT(BPF_MISC | BPF_TAX, 0), LD_ARG(0, 0),
		 BPF_STMT(BPF_ALU | BPF_LSH | BPF_X, 0), RET_A_AS_ERRNO) } },
	{ "scratch memory, txa", { 5, 9 },
	  { PROG(ONLY_GETPPID, LD_ARG(0, 0), BPF_STMT(BPF_ST, 3), LD_ARG(1, 0),
		 BPF_STMT(BPF_MISC | BPF_TAX, 0), BPF_STMT(BPF_STX, 15),
		 BPF_STMT(BPF_LD | BPF_MEM, 3), BPF_STMT(BPF_LDX | BPF_MEM, 15),
		 BPF_STMT(BPF_ALU | BPF_MUL | BPF_X, 0), BPF_STMT(BPF_MISC | BPF_TAX, 0),
		 BPF_STMT(BPF_LD | BPF_IMM, 100), BPF_STMT(BPF_ALU | BPF_ADD | BPF_X, 0),
		 BPF_STMT(BPF_LDX | BPF_IMM, 1), BPF_STMT(BPF_MISC | BPF_TXA, 0),
		 BPF_STMT(BPF_ALU | BPF_ADD | BPF_K, 40), RET_A_AS_ERRNO) } },
	{ "length of the data", { 0 },
	  { PROG(ONLY_GETPPID, BPF_STMT(BPF_LD | BPF_W | BPF_LEN, 0),
		 BPF_STMT(BPF_LDX | BPF_W | BPF_LEN, 0), BPF_STMT(BPF_ALU | BPF_ADD | BPF_X, 0),
		 RET_A_AS_ERRNO) } },
	{ "jumps taken", { 10, 20 },
	  { PROG(ONLY_GETPPID, LD_ARG(1, 0), BPF_STMT(BPF_MISC | BPF_TAX, 0), LD_ARG(0, 0),
		 BPF_JUMP(BPF_JMP | BPF_JGT | BPF_X, 0, 0, 1), BPF_STMT(BPF_RET | BPF_K,
									 SECCOMP_RET_ERRNO | 1),
		 BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 10, 0, 1), BPF_STMT(BPF_JMP | BPF_JA, 1),
		 BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 2),
		 BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 2, 1, 0), BPF_STMT(BPF_RET | BPF_K,
									 SECCOMP_RET_ERRNO | 3),
		 BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_X, 0, 1, 0), BPF_STMT(BPF_RET | BPF_K,
									SECCOMP_RET_ERRNO | 4),
		 BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 5)) } },
	{ "jumps not taken", { 30, 20 },
	  { PROG(ONLY_GETPPID, LD_ARG(1, 0), BPF_STMT(BPF_MISC | BPF_TAX, 0), LD_ARG(0, 0),
		 BPF_JUMP(BPF_JMP | BPF_JGE | BPF_X, 0, 1, 0), BPF_STMT(BPF_RET | BPF_K,
									 SECCOMP_RET_ERRNO | 1),
		 BPF_JUMP(BPF_JMP | BPF_JSET | BPF_X, 0, 0, 1), BPF_STMT(BPF_RET | BPF_K,
									 SECCOMP_RET_ERRNO | 2),
		 BPF_JUMP(BPF_JMP | BPF_JGT | BPF_K, 30, 0, 1), BPF_STMT(BPF_RET | BPF_K,
									 SECCOMP_RET_ERRNO | 3),
		 BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 6)) } },
	/* several filters: the lowest action wins; between equals, the newest */
	{ "kill beats errno", { 0 },
	  { PROG(ONLY_GETPPID, BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS)),
	    PROG(ONLY_GETPPID, BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 5)) } },
	{ "errno beats trace and allow", { 0 },
	  { PROG(ONLY_GETPPID, BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)),
	    PROG(ONLY_GETPPID, BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 9)),
	    PROG(ONLY_GETPPID, BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE)) } },
	{ "the newest of two errnos", { 0 },
	  { PROG(ONLY_GETPPID, BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 21)),
	    PROG(ONLY_GETPPID, BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 22)) } },
	{ "trap beats errno", { 0 },
	  { PROG(ONLY_GETPPID, BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 1)),
	    PROG(ONLY_GETPPID, BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP)) } },
	/* programs the kernel refuses */
	{ "unaligned load", { 0 },
	  { PROG(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 2), BPF_STMT(BPF_RET | BPF_A, 0)) }, true },
	{ "load past the data", { 0 },
	  { PROG(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 64), BPF_STMT(BPF_RET | BPF_A, 0)) }, true },
	{ "byte load", { 0 },
	  { PROG(BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 0), BPF_STMT(BPF_RET | BPF_A, 0)) }, true },
	{ "division by a zero constant", { 0 },
	  { PROG(BPF_STMT(BPF_ALU | BPF_DIV | BPF_K, 0), BPF_STMT(BPF_RET | BPF_A, 0)) }, true },
	{ "shift by 32", { 0 },
	  { PROG(BPF_STMT(BPF_ALU | BPF_LSH | BPF_K, 32), BPF_STMT(BPF_RET | BPF_A, 0)) }, true },
	{ "jump past the end", { 0 },
	  { PROG(BPF_STMT(BPF_JMP | BPF_JA, 5), BPF_STMT(BPF_RET | BPF_A, 0)) }, true },
	{ "no return at the end", { 0 },
	  { PROG(BPF_STMT(BPF_LD | BPF_IMM, 1)) }, true },
	{ "modulo", { 0 },
	  { PROG(BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, 3), BPF_STMT(BPF_RET | BPF_A, 0)) }, true },
};

/* The child: install, call, and write what it saw (0 success, an errno, or REFUSED) to fd. */
#define REFUSED 100000
#define BROKEN 100001

static void run_child(const struct test_case *c, size_t nfilters, int fd)
{
	struct rlimit no_core = { 0, 0 };
	int seen = BROKEN;
	long ret;

	setrlimit(RLIMIT_CORE, &no_core);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		goto out;
	for (size_t i = 0; i < nfilters; i++) {
		struct sock_fprog prog = { .len = c->filters[i].len,
					   .filter = (struct sock_filter *)c->filters[i].insns };

		if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0) {
			seen = errno == EINVAL ? REFUSED : BROKEN;
			goto out;
		}
	}
	ret = syscall(SYS_getppid, c->args[0], c->args[1], c->args[2], c->args[3], c->args[4],
		      c->args[5]);
	seen = ret > 0 ? 0 : ret == 0 ? 0 : errno;
out:
	if (write(fd, &seen, sizeof(seen)) != sizeof(seen))
		_exit(2);
	_exit(0);
}

/* What the child saw, or -SIG if it died of a signal. */
static int outcome(const struct test_case *c, size_t nfilters)
{
	int fds[2], seen = BROKEN, status;
	pid_t child;

	if (pipe(fds) < 0)
		return BROKEN;
	child = fork();
	if (child == 0) {
		close(fds[0]);
		run_child(c, nfilters, fds[1]);
	}
	close(fds[1]);
	if (read(fds[0], &seen, sizeof(seen)) != sizeof(seen))
		seen = BROKEN;
	close(fds[0]);
	if (child < 0 || waitpid(child, &status, 0) < 0)
		return BROKEN;
	return WIFSIGNALED(status) ? -WTERMSIG(status) : seen;
}

/* What the kernel will do, as dirty_seccomp_run() predicts it (as remote.c combines). */
static int predict(const struct test_case *c, size_t nfilters, uintptr_t ip, bool *invalid)
{
	struct seccomp_data sd = { .nr = SYS_getppid, .arch = NATIVE_AUDIT_ARCH,
				   .instruction_pointer = ip };
	uint32_t verdict = SECCOMP_RET_ALLOW, ret, data;

	memcpy(sd.args, c->args, sizeof(sd.args));
	*invalid = false;
	for (size_t i = 0; i < nfilters; i++) {
		if (dirty_seccomp_run(c->filters[i].insns, c->filters[i].len, &sd, &ret)) {
			*invalid = true;
			return 0;
		}
		verdict = dirty_seccomp_combine(verdict, ret);
	}
	data = verdict & SECCOMP_RET_DATA;
	switch (verdict & SECCOMP_RET_ACTION_FULL) {
	case SECCOMP_RET_ALLOW:
	case SECCOMP_RET_LOG:
		return 0;
	case SECCOMP_RET_ERRNO:
		return (int)(data > 4095 ? 4095 : data);
	case SECCOMP_RET_TRACE:
		return ENOSYS;
	default:
		if (dirty_seccomp_allows(verdict))
			return -1000; /* cannot be */
		return -SIGSYS;
	}
}

int main(void)
{
	int failed = 0, n = 0;

#if defined(__SANITIZE_THREAD__)
	/*
	 * The kernel's verdicts come from a child that installs each filter and
	 * calls getppid(2); TSan's runtime makes calls of its own in that child
	 * (getppid among them) and hangs when a filter answers them.
	 */
	printf("skip: under ThreadSanitizer the filters act on the sanitizer's own system calls "
	       "in the child that asks the kernel; the other builds run this test\n");
	return 77;
#endif
	/* can this process install filters at all? */
	if (outcome(&cases[0], 1) != 0) {
		printf("skip: seccomp filters cannot be installed here\n");
		return 77;
	}
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct test_case *c = &cases[i];
		size_t nfilters = 0;
		bool invalid;
		int got, want;

		while (nfilters < MAX_FILTERS && c->filters[nfilters].len)
			nfilters++;
		/* the instruction pointer is not read by these filters: any value */
		want = predict(c, nfilters, 0, &invalid);
		got = outcome(c, nfilters);
		n++;
		if (c->refused) {
			if (got == REFUSED && invalid) {
				printf("ok %d %s\n", n, c->name);
			} else {
				printf("not ok %d %s: kernel %s the filter, the evaluator %s it\n", n,
				       c->name, got == REFUSED ? "refused" : "took",
				       invalid ? "refused" : "ran");
				failed++;
			}
			continue;
		}
		if (invalid || got != want) {
			printf("not ok %d %s: the kernel gave %d, the evaluator predicts %d%s\n", n,
			       c->name, got, want, invalid ? " (it refused the program)" : "");
			failed++;
		} else {
			printf("ok %d %s (%d)\n", n, c->name, got);
		}
	}
	return failed ? 1 : 0;
}
