/* SPDX-License-Identifier: MIT */
/*
 * attach-target: a process for tests/test-attach.py to attach to, that
 * watches for what an attach must never do to it.  libc only, no libdirty.
 *
 *   attach-target [--mode M] [--threads N] [--seccomp ACTION]
 *                 [--seccomp-close ACTION] [--seccomp-flags-only]
 *                 [--sigsys-handler] [--fd323] [--block SIG,...]
 *                 [--undumpable]
 *
 * --seccomp ACTION installs a filter whose action for userfaultfd(2) is
 * ACTION (kill-process, kill-thread, trap, errno, trace, user-notif, log,
 * allow), --seccomp-close another for close(2); --seccomp-flags-only makes
 * the first act only when the flags lack UFFD_USER_MODE_ONLY.
 * --sigsys-handler counts SIGSYS in a handler; --fd323 holds a file at
 * descriptor 323, the number SECCOMP_RET_TRAP leaves in rax for
 * userfaultfd(2); --block keeps signals pending; --undumpable calls
 * prctl(PR_SET_DUMPABLE, 0).  At most 32768 signals are queued to it
 * (RLIMIT_SIGPENDING), so that a storm aimed at it leaves room for others.
 *
 * It sets itself up, prints "ready PID" on stdout (once every thread has
 * its mask) and then its main thread does what --mode says:
 *   read        reads commands from stdin (the default: a blocking read)
 *   busy        spins in user code
 *   sigsuspend  waits in sigsuspend() with a temporary mask: SIGUSR1
 *               unblocked, SIGUSR2 blocked (its normal mask is the reverse)
 *   nanosleep   sleeps an hour at a time (a restart_syscall restart)
 *   epoll       waits in epoll_wait() on nothing (which a stop makes fail with
 *               EINTR: signal(7))
 *   vfork       vfork()s a child that waits for "release", then reads commands
 *   leader-exit exits (the main thread only) while the others run on
 * In every mode but read (and vfork without threads) a control thread reads
 * the commands; it and the --threads idle threads block every signal, so
 * that signals sent to the process reach the main thread.
 *
 * Commands, one per line on stdin, each answered by one line on stdout:
 *   report   {"signals": {"SIGNO": {"count", "queued", "other_code", "tkill",
 *             "user", "in_order", "first", "last", "pids"}}, "sigsys": N,
 *             "anomalies": [...]}: what the handlers saw (SIGUSR1, SIGUSR2,
 *             SIGRTMIN..SIGRTMIN+3; "queued" counts SI_QUEUE, "tkill" SI_TKILL,
 *             "user" SI_USER, "in_order"
 *             says that each sender's SI_QUEUE values came 0, 1, 2, ...,
 *             "pids" lists the senders), the
 *             SIGSYS count, and what went wrong (a system call that returned
 *             when nothing should have made it, a descriptor that changed)
 *   drain    the signals blocked by --block that are pending, taken with
 *             sigtimedwait(): [{"signo", "code", "pid", "value"}, ...]
 *   release  vfork mode: the child exits, the parent goes on
 *   exit     exit 0
 *
 *   attach-target sigqueue PID SIGNO COUNT
 * sends COUNT signals SIGNO to PID with sigqueue(), values 0, 1, ...
 * (retrying while the queue is full), then prints "sent COUNT".  COUNT 0
 * sends until stdin reaches its end, then prints how many.
 *
 *   attach-target trace PID
 * PTRACE_ATTACHes PID (it stops), prints "tracing PID", and detaches when
 * stdin ends.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_RECORDS (1u << 20)
#define NHANDLED 6
#define MAX_SENDERS 64

struct record {
	int signo, code, pid, value;
};

static struct record records[MAX_RECORDS];
static atomic_uint nrecords;
static atomic_uint sigsys_count;
static atomic_uint handler_runs; /* any handler: a waiting call may return after one */
static atomic_uint runs_of[65];   /* per signal number */
static int handled[NHANDLED];
static char anomalies[8192];
static pthread_mutex_t anomalies_lock = PTHREAD_MUTEX_INITIALIZER;
static int release_pipe[2] = { -1, -1 };
static struct stat fd323_stat;
static bool fd323;

static void anomaly(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void anomaly(const char *fmt, ...)
{
	char one[256];
	va_list ap;
	size_t len;

	va_start(ap, fmt);
	vsnprintf(one, sizeof(one), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&anomalies_lock);
	len = strlen(anomalies);
	snprintf(anomalies + len, sizeof(anomalies) - len, "%s\"%s\"", len ? ", " : "", one);
	pthread_mutex_unlock(&anomalies_lock);
}

static void on_signal(int sig, siginfo_t *si, void *ctx)
{
	unsigned i = atomic_fetch_add(&nrecords, 1);

	(void)ctx;
	if (i < MAX_RECORDS)
		records[i] = (struct record){ sig, si->si_code, si->si_pid, si->si_value.sival_int };
	atomic_fetch_add(&runs_of[sig], 1);
	atomic_fetch_add(&handler_runs, 1);
}

static void on_sigsys(int sig, siginfo_t *si, void *ctx)
{
	(void)sig;
	(void)si;
	(void)ctx;
	atomic_fetch_add(&sigsys_count, 1);
	atomic_fetch_add(&handler_runs, 1);
}

static int parse_action(const char *name, uint32_t *ret)
{
	static const struct {
		const char *name;
		uint32_t action;
	} actions[] = {
		{ "kill-process", SECCOMP_RET_KILL_PROCESS },
		{ "kill-thread", SECCOMP_RET_KILL_THREAD },
		{ "trap", SECCOMP_RET_TRAP },
		{ "errno", SECCOMP_RET_ERRNO | EPERM },
		{ "trace", SECCOMP_RET_TRACE },
		{ "user-notif", SECCOMP_RET_USER_NOTIF },
		{ "log", SECCOMP_RET_LOG },
		{ "allow", SECCOMP_RET_ALLOW },
	};

	for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++)
		if (!strcmp(name, actions[i].name)) {
			*ret = actions[i].action;
			return 0;
		}
	return -1;
}

#include "native-arch.h"

/* A filter: on this architecture, system call nr gets action; everything else is allowed. */
static void install_filter(int nr, uint32_t action, bool flags_only)
{
	struct sock_filter prog[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_AUDIT_ARCH, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nr, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		/* --seccomp-flags-only: allowed when the flags hold UFFD_USER_MODE_ONLY (1) */
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
		BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, flags_only ? 1 : 0, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_RET | BPF_K, action),
	};
	struct sock_fprog fprog = { .len = sizeof(prog) / sizeof(prog[0]), .filter = prog };
	unsigned flags = (action & SECCOMP_RET_ACTION_FULL) == SECCOMP_RET_USER_NOTIF
				 ? SECCOMP_FILTER_FLAG_NEW_LISTENER : 0;
	long ret;

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		perror("attach-target: PR_SET_NO_NEW_PRIVS");
		exit(1);
	}
	/* a user-notif listener is kept open, and never answers */
	ret = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &fprog);
	if (ret < 0) {
		perror("attach-target: seccomp");
		exit(1);
	}
}

static int parse_signal(const char *s)
{
	if (!strcmp(s, "USR1"))
		return SIGUSR1;
	if (!strcmp(s, "USR2"))
		return SIGUSR2;
	if (!strncmp(s, "RTMIN+", 6))
		return SIGRTMIN + atoi(s + 6);
	return atoi(s);
}

static void report(char *out, size_t cap)
{
	unsigned n = atomic_load(&nrecords);
	size_t len = 0;

	if (n > MAX_RECORDS)
		n = MAX_RECORDS;
	len += (size_t)snprintf(out + len, cap - len, "{\"signals\": {");
	for (int h = 0; h < NHANDLED; h++) {
		unsigned count = 0, queued = 0, other = 0, tkill = 0, user = 0;
		int first = -1, last = -1, pids[MAX_SENDERS], lasts[MAX_SENDERS], npids = 0;
		bool in_order = true;

		for (unsigned i = 0; i < n; i++) {
			const struct record *r = &records[i];
			int k;

			if (r->signo != handled[h])
				continue;
			count++;
			for (k = 0; k < npids && pids[k] != r->pid; k++)
				;
			if (k == npids && npids < MAX_SENDERS) {
				pids[npids] = r->pid;
				lasts[npids++] = -1;
			}
			if (r->code != SI_QUEUE) {
				other++;
				tkill += r->code == SI_TKILL;
				user += r->code == SI_USER;
				continue;
			}
			/* each sender's values come 0, 1, 2, ... */
			if (k < npids) {
				if (r->value != lasts[k] + 1)
					in_order = false;
				lasts[k] = r->value;
			}
			if (!queued)
				first = r->value;
			last = r->value;
			queued++;
		}
		len += (size_t)snprintf(out + len, cap - len,
					"%s\"%d\": {\"count\": %u, \"queued\": %u, \"other_code\": %u, "
					"\"tkill\": %u, \"user\": %u, "
					"\"in_order\": %s, \"first\": %d, \"last\": %d, \"pids\": [",
					h ? ", " : "", handled[h], count, queued, other, tkill, user,
					in_order ? "true" : "false", first, last);
		for (int k = 0; k < npids; k++)
			len += (size_t)snprintf(out + len, cap - len, "%s%d", k ? ", " : "",
						pids[k]);
		len += (size_t)snprintf(out + len, cap - len, "]}");
	}
	if (fd323) {
		struct stat st;

		if (fstat(323, &st) < 0 || st.st_ino != fd323_stat.st_ino ||
		    st.st_dev != fd323_stat.st_dev)
			anomaly("descriptor 323 is not the file it was");
	}
	pthread_mutex_lock(&anomalies_lock);
	len += (size_t)snprintf(out + len, cap - len,
				"}, \"sigsys\": %u, \"anomalies\": [%s]}\n", atomic_load(&sigsys_count),
				anomalies);
	pthread_mutex_unlock(&anomalies_lock);
}

static sigset_t blocked_by_option;

static void drain(void)
{
	struct timespec zero = { 0, 0 };
	siginfo_t si;
	bool first = true;

	printf("[");
	while (sigtimedwait(&blocked_by_option, &si, &zero) > 0) {
		printf("%s{\"signo\": %d, \"code\": %d, \"pid\": %d, \"value\": %d}", first ? "" : ", ",
		       si.si_signo, si.si_code, si.si_pid, si.si_value.sival_int);
		first = false;
	}
	printf("]\n");
	fflush(stdout);
}

/* One command; false at "exit" or the end of stdin. */
static bool command(FILE *in)
{
	char line[256];

	for (;;) {
		errno = 0;
		if (fgets(line, sizeof(line), in))
			break;
		if (errno == EINTR) {
			/* SA_RESTART handlers: a read never returns EINTR unless disturbed */
			anomaly("reading stdin returned EINTR");
			clearerr(in);
			continue;
		}
		return false;
	}
	line[strcspn(line, "\n")] = '\0';
	if (!strcmp(line, "report")) {
		sigset_t handled_set, old;

		/* under a storm of signals, the answer still comes */
		sigemptyset(&handled_set);
		for (int h = 0; h < NHANDLED; h++)
			sigaddset(&handled_set, handled[h]);
		static char out[65536];

		pthread_sigmask(SIG_BLOCK, &handled_set, &old);
		report(out, sizeof(out));
		pthread_sigmask(SIG_SETMASK, &old, NULL); /* before the answer: the mask is as it was */
		fputs(out, stdout);
		fflush(stdout);
	} else if (!strcmp(line, "drain")) {
		drain();
	} else if (!strcmp(line, "release")) {
		if (release_pipe[1] >= 0) {
			close(release_pipe[1]);
			release_pipe[1] = -1;
		}
		printf("released\n");
		fflush(stdout);
	} else if (!strcmp(line, "exit")) {
		return false;
	} else {
		printf("unknown command\n");
		fflush(stdout);
	}
	return true;
}

static atomic_int threads_ready;

static void block_all(void)
{
	sigset_t all;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, NULL);
	atomic_fetch_add(&threads_ready, 1); /* "ready" waits for every thread's mask */
}

static void *control_main(void *arg)
{
	(void)arg;
	block_all();
	while (command(stdin))
		;
	exit(0);
}

static void *idle_main(void *arg)
{
	(void)arg;
	block_all();
	for (;;)
		pause();
	return NULL;
}

static char vfork_stack[64 * 1024] __attribute__((aligned(16)));

static int vfork_child(void *arg)
{
	char c;

	(void)arg;
	/* its descriptor table is a copy: the parent's closing the pipe must end it */
	if (release_pipe[1] >= 0)
		close(release_pipe[1]);
	/* until "release": the parent is suspended meanwhile */
	if (release_pipe[0] >= 0) {
		for (ssize_t n = 1; n;)
			if ((n = read(release_pipe[0], &c, 1)) < 0 && errno != EINTR)
				break;
	} else {
		char line[64];
		ssize_t n;

		/* no control thread: "release" comes on stdin, read byte by byte */
		for (size_t len = 0; len < sizeof(line) - 1;) {
			n = read(0, line + len, 1);
			if (n <= 0)
				break;
			if (line[len] == '\n')
				break;
			len++;
		}
	}
	_exit(0);
}

static void main_vfork(bool control)
{
	int status;
	pid_t child;

	if (control && pipe2(release_pipe, O_CLOEXEC) < 0) {
		perror("attach-target: pipe");
		exit(1);
	}
	child = clone(vfork_child, vfork_stack + sizeof(vfork_stack),
		      CLONE_VM | CLONE_VFORK | SIGCHLD, NULL);
	if (child < 0) {
		perror("attach-target: clone");
		exit(1);
	}
	/* back here once the child has exited */
	if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status))
		anomaly("the vfork child did not exit 0");
	if (!control) {
		printf("released\n");
		fflush(stdout);
		while (command(stdin))
			;
		exit(0);
	}
	for (;;)
		pause();
}

static int sender(int argc, char **argv)
{
	pid_t pid;
	int sig;
	long count, sent = 0;
	bool until_eof;

	if (argc != 5)
		return 2;
	pid = (pid_t)atoi(argv[2]);
	sig = parse_signal(argv[3]);
	count = atol(argv[4]);
	until_eof = count == 0;
	if (until_eof)
		fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
	while (until_eof || sent < count) {
		union sigval v = { .sival_int = (int)sent };

		if (until_eof && (sent & 63) == 0) {
			char buf[64];
			ssize_t n = read(0, buf, sizeof(buf));

			if (n == 0)
				break;
		}
		if (sigqueue(pid, sig, v) == 0) {
			sent++;
		} else if (errno == EAGAIN) {
			sched_yield(); /* the queue is full: the target takes them in its time */
		} else {
			perror("attach-target sigqueue");
			return 1;
		}
	}
	printf("sent %ld\n", sent);
	return 0;
}

static int tracer(int argc, char **argv)
{
	char buf[64];
	int status;
	pid_t pid;

	if (argc != 3)
		return 2;
	pid = (pid_t)atoi(argv[2]);
	if (ptrace(PTRACE_ATTACH, pid, NULL, NULL) < 0 || waitpid(pid, &status, __WALL) != pid) {
		perror("attach-target trace");
		return 1;
	}
	printf("tracing %d\n", (int)pid);
	fflush(stdout);
	while (read(0, buf, sizeof(buf)) > 0)
		;
	/* it stopped for our SIGSTOP: let it go without one */
	ptrace(PTRACE_DETACH, pid, NULL, NULL);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "mode", required_argument, NULL, 'm' },
		{ "threads", required_argument, NULL, 't' },
		{ "seccomp", required_argument, NULL, 's' },
		{ "seccomp-close", required_argument, NULL, 'c' },
		{ "seccomp-flags-only", no_argument, NULL, 'f' },
		{ "sigsys-handler", no_argument, NULL, 'S' },
		{ "fd323", no_argument, NULL, 'F' },
		{ "block", required_argument, NULL, 'b' },
		{ "undumpable", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	const char *mode = "read", *seccomp = NULL, *seccomp_close = NULL;
	bool sigsys_handler = false, flags_only = false, control;
	struct sigaction sa = { .sa_sigaction = on_signal, .sa_flags = SA_SIGINFO | SA_RESTART };
	sigset_t mask;
	int threads = 0, opt;
	pthread_t thread;

	if (argc > 1 && !strcmp(argv[1], "sigqueue"))
		return sender(argc, argv);
	/*
	 * Queued signals count against the receiver's user, for the whole
	 * system: a storm aimed at us must not take every one root may queue.
	 */
	struct rlimit pending;

	if (getrlimit(RLIMIT_SIGPENDING, &pending) == 0 && pending.rlim_cur > 32768) {
		pending.rlim_cur = 32768;
		setrlimit(RLIMIT_SIGPENDING, &pending);
	}
	if (argc > 1 && !strcmp(argv[1], "trace"))
		return tracer(argc, argv);
	sigemptyset(&blocked_by_option);
	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (opt) {
		case 'm':
			mode = optarg;
			break;
		case 't':
			threads = atoi(optarg);
			break;
		case 's':
			seccomp = optarg;
			break;
		case 'c':
			seccomp_close = optarg;
			break;
		case 'f':
			flags_only = true;
			break;
		case 'S':
			sigsys_handler = true;
			break;
		case 'F':
			fd323 = true;
			break;
		case 'b':
			for (char *s = strtok(optarg, ","); s; s = strtok(NULL, ","))
				sigaddset(&blocked_by_option, parse_signal(s));
			break;
		case 'U':
			prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
			break;
		default:
			return 2;
		}
	}
	handled[0] = SIGUSR1;
	handled[1] = SIGUSR2;
	for (int i = 0; i < 4; i++)
		handled[2 + i] = SIGRTMIN + i;
	sigemptyset(&sa.sa_mask);
	for (int i = 0; i < NHANDLED; i++)
		sigaction(handled[i], &sa, NULL);
	if (sigsys_handler) {
		struct sigaction sys = { .sa_sigaction = on_sigsys, .sa_flags = SA_SIGINFO };

		sigemptyset(&sys.sa_mask);
		sigaction(SIGSYS, &sys, NULL);
	}
	if (fd323) {
		int fd = open("/dev/null", O_RDONLY);

		if (fd < 0 || dup2(fd, 323) != 323 || fstat(323, &fd323_stat) < 0) {
			perror("attach-target: descriptor 323");
			return 1;
		}
		close(fd);
	}
	sigprocmask(SIG_BLOCK, &blocked_by_option, NULL);
	if (!strcmp(mode, "sigsuspend")) {
		/* normally SIGUSR1 is blocked, SIGUSR2 not; inside sigsuspend() the reverse */
		sigemptyset(&mask);
		sigaddset(&mask, SIGUSR1);
		sigprocmask(SIG_BLOCK, &mask, NULL);
	}
	/* filters before threads: they inherit them */
	if (seccomp) {
		uint32_t action;

		if (parse_action(seccomp, &action)) {
			fprintf(stderr, "attach-target: unknown action %s\n", seccomp);
			return 2;
		}
		install_filter(SYS_userfaultfd, action, flags_only);
	}
	if (seccomp_close) {
		uint32_t action;

		if (parse_action(seccomp_close, &action)) {
			fprintf(stderr, "attach-target: unknown action %s\n", seccomp_close);
			return 2;
		}
		install_filter(SYS_close, action, false);
	}
	control = strcmp(mode, "read") && !(!strcmp(mode, "vfork") && threads == 0);
	if (!strcmp(mode, "vfork") && threads > 0)
		threads--; /* the control thread is one */
	for (int i = 0; i < threads; i++)
		pthread_create(&thread, NULL, idle_main, NULL);
	if (control)
		pthread_create(&thread, NULL, control_main, NULL);
	while (atomic_load(&threads_ready) < threads + control)
		sched_yield();
	printf("ready %d\n", (int)getpid());
	fflush(stdout);

	if (!strcmp(mode, "read")) {
		while (command(stdin))
			;
		return 0;
	}
	if (!strcmp(mode, "busy")) {
		volatile uint64_t spin = 0;

		for (;;)
			spin++;
	}
	if (!strcmp(mode, "sigsuspend")) {
		sigset_t temp;

		pthread_sigmask(SIG_BLOCK, NULL, &temp);
		sigdelset(&temp, SIGUSR1);
		sigaddset(&temp, SIGUSR2);
		for (;;) {
			unsigned before = atomic_load(&handler_runs);
			unsigned usr2 = atomic_load(&runs_of[SIGUSR2]);

			sigsuspend(&temp);
			if (atomic_load(&handler_runs) == before)
				anomaly("sigsuspend() returned with no handler run");
			else if (atomic_load(&handler_runs) - before ==
				 atomic_load(&runs_of[SIGUSR2]) - usr2)
				anomaly("sigsuspend() returned for SIGUSR2, which it blocks");
		}
	}
	if (!strcmp(mode, "nanosleep")) {
		for (;;) {
			struct timespec hour = { 3600, 0 };
			unsigned before = atomic_load(&handler_runs);

			if (nanosleep(&hour, NULL) == 0 || atomic_load(&handler_runs) == before)
				anomaly("nanosleep() returned with no handler run");
		}
	}
	if (!strcmp(mode, "epoll")) {
		int ep = epoll_create1(EPOLL_CLOEXEC);

		for (;;) {
			struct epoll_event ev;
			unsigned before = atomic_load(&handler_runs);
			int n = epoll_wait(ep, &ev, 1, -1);

			if (atomic_load(&handler_runs) == before)
				anomaly("epoll_wait() returned %d (%s) with no handler run", n,
					n < 0 ? strerror(errno) : "an event");
		}
	}
	if (!strcmp(mode, "vfork"))
		main_vfork(control);
	if (!strcmp(mode, "leader-exit"))
		syscall(SYS_exit, 0);
	fprintf(stderr, "attach-target: unknown mode %s\n", mode);
	return 2;
}
