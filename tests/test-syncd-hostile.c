/* SPDX-License-Identifier: MIT */
/*
 * dirty-syncd next to hostile clients:
 *   test-syncd-hostile --case never-reads|idle|flood --mode cooperative|mapping
 *                      [--daemon PATH]
 *
 * Three honest producers (forked children) map their own MiB of a 4 MiB
 * buffer, register, and in each round write pages and ask for a flush; after
 * every round the sink must equal the buffer.  Next to them, a hostile child:
 *   never-reads  sends FLUSH requests and never reads the replies.  It goes
 *                on until the daemon says it queues its replies (its socket
 *                is full: the old daemon blocked here, and every producer
 *                with it), stops while the producers run rounds, then goes
 *                on until the daemon drops it (and logs the drop).
 *   idle         opens connections and says nothing (some after HELLO); the
 *                daemon (--idle-timeout 3) drops each, logged, while a
 *                registered producer that says nothing either is kept.
 *   flood        opens 1000 connections and keeps them, as another uid when
 *                run as root: the daemon keeps 64 of them (--max-per-uid) and
 *                refuses the rest at once, the producers' rounds go on, and
 *                a new connection of the producers' uid is still served.
 * Every wait is for an event (a line of the daemon's --json output, a reply);
 * a stall fails the test by its alarm, whatever the machine's speed.
 *
 * Exit 0 pass, 1 fail, 77 skip (the mode cannot run here, or the flood
 * cannot have its descriptors: the reason is printed).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libdirty.h"
#include "syncd-proto.h"

#define EXIT_SKIP 77
#define BUFFER_SIZE (4u << 20)
#define WINDOW (1u << 20)
#define NHONEST 3
#define PAGES_PER_ROUND 16
#define FLOOD 1000
#define PER_UID 64
#define IDLE_CONNECTIONS 10
#define NOBODY 65534

static pid_t daemon_pid = -1, hostile_pid = -1, honest_pid[NHONEST + 1];
static int honest_ctl[NHONEST + 1] = { -1, -1, -1, -1 }, hostile_ctl = -1;
static size_t page_size;
static bool cooperative;
static char socket_path[64];
static const char *waiting_for = "the start";

static void kill_all(void)
{
	for (int i = 0; i <= NHONEST; i++)
		if (honest_pid[i] > 0)
			kill(honest_pid[i], SIGKILL);
	if (hostile_pid > 0)
		kill(hostile_pid, SIGKILL);
	if (daemon_pid > 0)
		kill(daemon_pid, SIGKILL);
}

/* A stall fails: the bound is generous, far above what a pass takes. */
static void on_alarm(int sig)
{
	char msg[256];
	int n = snprintf(msg, sizeof(msg), "FAIL: stalled waiting for %s\n", waiting_for);

	(void)sig;
	(void)!write(STDOUT_FILENO, msg, (size_t)n);
	kill_all();
	_exit(1);
}

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
	va_list ap;

	fputs("FAIL: ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	kill_all();
	exit(1);
}

/* ---- the daemon's events: its --json lines, kept by a reader thread ---- */

static struct {
	pthread_mutex_t lock;
	pthread_cond_t more;
	char **lines;
	size_t n, cap;
	bool ended;
} events = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0, 0, false };

static void *reader_main(void *p)
{
	FILE *f = fdopen(*(int *)p, "r");
	char line[1024];

	while (f && fgets(line, sizeof(line), f)) {
		char *copy = strdup(line);

		pthread_mutex_lock(&events.lock);
		if (events.n == events.cap) {
			events.cap = events.cap ? 2 * events.cap : 1024;
			events.lines = realloc(events.lines, events.cap * sizeof(*events.lines));
		}
		if (!events.lines || !copy)
			abort();
		events.lines[events.n++] = copy;
		pthread_cond_broadcast(&events.more);
		pthread_mutex_unlock(&events.lock);
	}
	pthread_mutex_lock(&events.lock);
	events.ended = true;
	pthread_cond_broadcast(&events.more);
	pthread_mutex_unlock(&events.lock);
	return NULL;
}

/* The number after "key": in a JSON line, or -1. */
static long long json_int(const char *line, const char *key)
{
	char pattern[64];
	const char *p;

	snprintf(pattern, sizeof(pattern), "\"%s\":", key);
	p = strstr(line, pattern);
	return p ? strtoll(p + strlen(pattern), NULL, 10) : -1;
}

static bool json_is(const char *line, const char *key, const char *value)
{
	char pattern[128];

	snprintf(pattern, sizeof(pattern), "\"%s\":\"%s\"", key, value);
	return strstr(line, pattern);
}

/*
 * The index of the first event from *cursor on that is of this kind and,
 * unless pid is 0, of this pid; *cursor moves past it.  Waits for it.
 */
static size_t next_event(size_t *cursor, const char *kind, pid_t pid, const char *what)
{
	size_t i;

	waiting_for = what;
	pthread_mutex_lock(&events.lock);
	for (i = *cursor;; i++) {
		while (i >= events.n && !events.ended)
			pthread_cond_wait(&events.more, &events.lock);
		if (i >= events.n) {
			pthread_mutex_unlock(&events.lock);
			fail("the daemon's output ended waiting for %s", what);
		}
		if (json_is(events.lines[i], "event", kind) &&
		    (!pid || json_int(events.lines[i], "pid") == pid))
			break;
	}
	pthread_mutex_unlock(&events.lock);
	*cursor = i + 1;
	return i;
}

static const char *event_line(size_t i)
{
	const char *line;

	pthread_mutex_lock(&events.lock);
	line = events.lines[i];
	pthread_mutex_unlock(&events.lock);
	return line;
}

/* How many events so far are of this kind (and pid, unless 0). */
static size_t count_events(const char *kind, pid_t pid)
{
	size_t n = 0;

	pthread_mutex_lock(&events.lock);
	for (size_t i = 0; i < events.n; i++)
		n += json_is(events.lines[i], "event", kind) &&
		     (!pid || json_int(events.lines[i], "pid") == pid);
	pthread_mutex_unlock(&events.lock);
	return n;
}

/* ---- the daemon ---- */

static const char *default_daemon(void)
{
	static char path[PATH_MAX];
	char self[PATH_MAX - 32];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n <= 0)
		return "dirty-syncd";
	self[n] = 0;
	*strrchr(self, '/') = 0;
	snprintf(path, sizeof(path), "%s/../tools/dirty-syncd", self);
	if (access(path, X_OK))
		snprintf(path, sizeof(path), "%s/dirty-syncd", self);
	return path;
}

/* Start it with --json (read by a thread) and stderr into log_fd. */
static void start_daemon(const char *daemon, const char *const *extra, int sink_fd, int log_fd)
{
	char sink_arg[32], ready_arg[16], size_arg[32], ready[8] = "";
	const char *argv[32];
	int ready_pipe[2], out_pipe[2], n = 0;
	static int out_fd;
	pthread_t reader;

	if (pipe(ready_pipe) || pipe2(out_pipe, O_CLOEXEC))
		fail("pipe: %s", strerror(errno));
	snprintf(sink_arg, sizeof(sink_arg), "fd:%d", sink_fd);
	snprintf(ready_arg, sizeof(ready_arg), "%d", ready_pipe[1]);
	snprintf(size_arg, sizeof(size_arg), "%u", BUFFER_SIZE);
	argv[n++] = daemon;
	argv[n++] = "--socket";
	argv[n++] = socket_path;
	argv[n++] = "--size";
	argv[n++] = size_arg;
	argv[n++] = "--sink";
	argv[n++] = sink_arg;
	argv[n++] = "--mode";
	argv[n++] = cooperative ? "cooperative" : "mapping";
	argv[n++] = "--interval";
	argv[n++] = "0";
	argv[n++] = "--json";
	argv[n++] = "--ready-fd";
	argv[n++] = ready_arg;
	for (int i = 0; extra[i]; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	daemon_pid = fork();
	if (daemon_pid < 0)
		fail("fork: %s", strerror(errno));
	if (daemon_pid == 0) {
		close(ready_pipe[0]);
		if (dup2(out_pipe[1], STDOUT_FILENO) < 0 || dup2(log_fd, STDERR_FILENO) < 0)
			_exit(126);
		execv(daemon, (char *const *)argv);
		_exit(127);
	}
	close(ready_pipe[1]);
	close(out_pipe[1]);
	out_fd = out_pipe[0];
	if (pthread_create(&reader, NULL, reader_main, &out_fd))
		fail("pthread_create");
	pthread_detach(reader);
	waiting_for = "the daemon to start";
	if (read(ready_pipe[0], ready, sizeof(ready) - 1) != 6)
		fail("%s did not start", daemon);
	close(ready_pipe[0]);
}

/* ---- honest producers: write, flush, answer ---- */

static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Producer id owns [id MiB, id MiB + 1 MiB); id NHONEST is the silent one, at 3 MiB. */
static void __attribute__((noreturn)) honest_main(int id, int ctl)
{
	struct syncd_msg reply;
	int sock = syncd_connect(socket_path), buffer_fd = -1, uffd = -1;
	unsigned char *win;
	char cmd[5];

	if (sock < 0 || syncd_call(sock, SYNCD_HELLO, SYNCD_VERSION, 0, 0, 0, -1, &reply, &buffer_fd) ||
	    buffer_fd < 0)
		_exit(10);
	win = mmap(NULL, WINDOW, PROT_READ | PROT_WRITE, MAP_SHARED, buffer_fd,
		   (off_t)id * WINDOW);
	if (win == MAP_FAILED)
		_exit(11);
	if (cooperative && (uffd = dirty_userfaultfd_share()) < 0)
		_exit(12);
	if (syncd_call(sock, SYNCD_REGISTER, (uint64_t)getpid(), (uint64_t)(uintptr_t)win, WINDOW,
		       (uint64_t)id * WINDOW, uffd, &reply, NULL))
		_exit(13);
	if (uffd >= 0)
		close(uffd);
	if (write(ctl, "R", 1) != 1)
		_exit(3);
	for (;;) {
		uint32_t round;
		uint64_t state, copied;

		if (read(ctl, cmd, sizeof(cmd)) != (ssize_t)sizeof(cmd))
			_exit(0);
		memcpy(&round, cmd + 1, sizeof(round));
		switch (cmd[0]) {
		case 'f':
			state = ((uint64_t)id << 32) ^ round;
			for (int i = 0; i < PAGES_PER_ROUND; i++) {
				uint64_t page = splitmix64(&state) % (WINDOW / page_size), v = splitmix64(&state);

				memcpy(win + page * page_size + (v % (page_size / 8)) * 8, &v, 8);
			}
			if (syncd_call(sock, SYNCD_FLUSH, 0, 0, 0, 0, -1, &reply, NULL))
				_exit(14);
			copied = reply.a;
			if (write(ctl, "d", 1) != 1 || write(ctl, &copied, 8) != 8)
				_exit(3);
			break;
		case 'b':
			if (syncd_call(sock, SYNCD_BYE, 0, 0, 0, 0, -1, &reply, NULL))
				_exit(15);
			if (write(ctl, "d", 1) != 1)
				_exit(3);
			break;
		default:
			_exit(0);
		}
	}
}

static void command(int ctl, char what, uint32_t arg)
{
	char cmd[5] = { what };

	memcpy(cmd + 1, &arg, sizeof(arg));
	if (write(ctl, cmd, sizeof(cmd)) != (ssize_t)sizeof(cmd))
		fail("cannot send command %c: %s", what, strerror(errno));
}

static char answer(int ctl, const char *what)
{
	char got = 0;

	waiting_for = what;
	if (read(ctl, &got, 1) != 1)
		fail("no answer: %s", what);
	return got;
}

static pid_t start_child(int *ctl, void (*main_fn)(int, int), int id)
{
	int pair[2];
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair))
		fail("socketpair: %s", strerror(errno));
	pid = fork();
	if (pid < 0)
		fail("fork: %s", strerror(errno));
	if (pid == 0) {
		close(pair[0]);
		main_fn(id, pair[1]);
		_exit(0);
	}
	close(pair[1]);
	*ctl = pair[0];
	return pid;
}

static void start_honest(void)
{
	for (int i = 0; i <= NHONEST; i++) {
		honest_pid[i] = start_child(&honest_ctl[i], honest_main, i);
		if (answer(honest_ctl[i], "a producer to register") != 'R')
			fail("producer %d could not register", i);
	}
}

static unsigned char *buffer, *sink;

/* Every producer writes and flushes; then the sink equals the buffer. */
static void honest_round(uint32_t round, const char *when)
{
	char what[128];

	for (int i = 0; i < NHONEST; i++)
		command(honest_ctl[i], 'f', round);
	for (int i = 0; i < NHONEST; i++) {
		uint64_t copied;

		snprintf(what, sizeof(what), "producer %d's flush, round %u (%s)", i, round, when);
		if (answer(honest_ctl[i], what) != 'd' || read(honest_ctl[i], &copied, 8) != 8)
			fail("%s failed", what);
	}
	for (size_t p = 0; p < BUFFER_SIZE / page_size; p++)
		if (memcmp(buffer + p * page_size, sink + p * page_size, page_size))
			fail("round %u (%s): page %zu of the sink differs from the buffer", round,
			     when, p);
	printf("round %u (%s): %d producers flushed, sink exact\n", round, when, NHONEST);
}

static void honest_bye(void)
{
	for (int i = 0; i <= NHONEST; i++) {
		int status;

		command(honest_ctl[i], 'b', 0);
		if (answer(honest_ctl[i], "a producer's BYE") != 'd')
			fail("producer %d: BYE failed", i);
		command(honest_ctl[i], 'x', 0);
		waitpid(honest_pid[i], &status, 0);
		honest_pid[i] = 0;
		if (!WIFEXITED(status) || WEXITSTATUS(status))
			fail("producer %d ended with status %#x", i, status);
	}
}

/* ---- the hostile child ---- */

static int *hostile_socks;
static unsigned hostile_n;

static void hostile_answer(int ctl, char what, uint32_t value)
{
	if (write(ctl, &what, 1) != 1 || write(ctl, &value, 4) != 4)
		_exit(3);
}

/* Are all of its sockets, or how many of them, at end of file? */
static unsigned hostile_closed(bool wait)
{
	unsigned closed = 0;

	for (unsigned i = 0; i < hostile_n; i++) {
		struct pollfd p = { .fd = hostile_socks[i], .events = POLLIN };
		char buf[64];

		if (hostile_socks[i] < 0) {
			closed++;
			continue;
		}
		/* a refused or dropped connection: its replies, if any, then end of file */
		while (poll(&p, 1, wait ? -1 : 0) > 0) {
			ssize_t n = recv(hostile_socks[i], buf, sizeof(buf), MSG_DONTWAIT);

			if (n > 0)
				continue;
			if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
				close(hostile_socks[i]);
				hostile_socks[i] = -1;
				closed++;
			}
			break;
		}
	}
	return closed;
}

static void __attribute__((noreturn)) hostile_main(int unused, int ctl)
{
	struct syncd_msg flush = { .magic = SYNCD_MAGIC, .version = SYNCD_VERSION,
				   .type = SYNCD_FLUSH };
	char cmd[5];

	(void)unused;
	for (;;) {
		uint32_t arg;

		if (read(ctl, cmd, sizeof(cmd)) != (ssize_t)sizeof(cmd))
			_exit(0);
		memcpy(&arg, cmd + 1, sizeof(arg));
		switch (cmd[0]) {
		case 'u': { /* raise RLIMIT_NOFILE for arg sockets, then become nobody if arg2 */
			struct rlimit rl = { arg + 64, arg + 64 };

			if (setrlimit(RLIMIT_NOFILE, &rl) && (getrlimit(RLIMIT_NOFILE, &rl) ||
							     rl.rlim_max < arg + 64)) {
				hostile_answer(ctl, 's', (uint32_t)rl.rlim_max);
				break;
			}
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_NOFILE, &rl);
			hostile_answer(ctl, 'k', 0);
			break;
		}
		case 'n': /* another uid: 1 if it worked */
			hostile_answer(ctl, 'k', setgid(NOBODY) == 0 && setuid(NOBODY) == 0);
			break;
		case 'o': /* open arg connections; every other one says HELLO */
		case 'O': /* the same, all silent */
			hostile_socks = calloc(arg, sizeof(int));
			for (hostile_n = 0; hostile_socks && hostile_n < arg; hostile_n++) {
				struct syncd_msg hello = flush;

				hostile_socks[hostile_n] = syncd_connect(socket_path);
				if (hostile_socks[hostile_n] < 0)
					break;
				hello.type = SYNCD_HELLO;
				hello.a = SYNCD_VERSION;
				if (cmd[0] == 'o' && hostile_n % 2)
					(void)syncd_send(hostile_socks[hostile_n], &hello, -1);
			}
			hostile_answer(ctl, hostile_n == arg ? 'k' : 'e', hostile_n);
			break;
		case 's': /* one more request, never reading a reply */
			hostile_answer(ctl, syncd_send(hostile_socks[0], &flush, -1) ? 'x' : 'k', 0);
			break;
		case 'q': /* how many are closed now */
			hostile_answer(ctl, 'k', hostile_closed(false));
			break;
		case 'w': /* wait until all are closed */
			hostile_answer(ctl, 'k', hostile_closed(true));
			break;
		default:
			_exit(0);
		}
	}
}

static uint32_t hostile(char what, uint32_t arg, char expect, const char *when)
{
	uint32_t value = 0;
	char got;

	command(hostile_ctl, what, arg);
	got = answer(hostile_ctl, when);
	if (read(hostile_ctl, &value, 4) != 4)
		fail("the hostile child gave no value: %s", when);
	if (expect && got != expect)
		fail("the hostile child answered %c, not %c: %s (%u)", got, expect, when, value);
	return value;
}

/* ---- the cases ---- */

static void stop_daemon(int log_fd, const char *must_log)
{
	char log[65536];
	ssize_t n;
	int status;

	kill(daemon_pid, SIGTERM);
	waiting_for = "the daemon to stop";
	if (waitpid(daemon_pid, &status, 0) != daemon_pid)
		fail("waitpid daemon: %s", strerror(errno));
	daemon_pid = -1;
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		fail("the daemon ended with status %#x after SIGTERM", status);
	n = pread(log_fd, log, sizeof(log) - 1, 0);
	log[n > 0 ? n : 0] = '\0';
	if (must_log && !strstr(log, must_log))
		fail("the daemon's log lacks \"%s\":\n%s", must_log, log);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "case", required_argument, NULL, 'c' },
		{ "mode", required_argument, NULL, 'm' },
		{ "daemon", required_argument, NULL, 'd' },
		{ 0 },
	};
	const char *which = NULL, *mode = NULL, *daemon = NULL, *extra[8] = { NULL };
	char why[256];
	int opt, sink_fd, log_fd, sock, buffer_fd = -1;
	struct syncd_msg reply;

	while ((opt = getopt_long(argc, argv, "c:m:d:", longopts, NULL)) != -1) {
		if (opt == 'c')
			which = optarg;
		else if (opt == 'm')
			mode = optarg;
		else if (opt == 'd')
			daemon = optarg;
		else
			return 1;
	}
	if (!which || !mode || (strcmp(mode, "cooperative") && strcmp(mode, "mapping")) ||
	    (strcmp(which, "never-reads") && strcmp(which, "idle") && strcmp(which, "flood"))) {
		fprintf(stderr, "usage: test-syncd-hostile --case never-reads|idle|flood "
			"--mode cooperative|mapping [--daemon PATH]\n");
		return 1;
	}
	cooperative = !strcmp(mode, "cooperative");
	if (!daemon)
		daemon = default_daemon();
	page_size = (size_t)sysconf(_SC_PAGESIZE);
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGALRM, on_alarm);
	signal(SIGPIPE, SIG_IGN);
	alarm(240);

	if (dirty_backend_probe(cooperative ? "uffd-async" : "mapping", 0, why, sizeof(why))) {
		printf("SKIP: %s mode needs the %s backend: %s\n", mode,
		       cooperative ? "uffd-async" : "mapping", why);
		return EXIT_SKIP;
	}
	if (cooperative) {
		int uffd = dirty_userfaultfd_share();

		if (uffd < 0) {
			printf("SKIP: dirty_userfaultfd_share: %s\n", strerror(-uffd));
			return EXIT_SKIP;
		}
		close(uffd);
	}

	snprintf(socket_path, sizeof(socket_path), "@test-syncd-hostile-%d", (int)getpid());
	sink_fd = memfd_create("test-syncd-hostile-sink", 0);
	log_fd = memfd_create("test-syncd-hostile-log", 0);
	if (sink_fd < 0 || log_fd < 0 || ftruncate(sink_fd, BUFFER_SIZE))
		fail("memfd: %s", strerror(errno));
	sink = mmap(NULL, BUFFER_SIZE, PROT_READ, MAP_SHARED, sink_fd, 0);
	if (sink == MAP_FAILED)
		fail("mmap sink: %s", strerror(errno));
	if (!strcmp(which, "idle")) {
		/* not 1 s: a producer that a loaded machine does not run
		 * between its HELLO and its REGISTER would be dropped too */
		extra[0] = "--idle-timeout";
		extra[1] = "3";
	} else {
		extra[0] = "--idle-timeout";
		extra[1] = "0"; /* the flood's connections stay until the test ends */
		extra[2] = "--max-per-uid";
		extra[3] = "64";
	}
	start_daemon(daemon, extra, sink_fd, log_fd);
	close(sink_fd);

	/* the buffer, for the checks; this connection goes at once (it would idle) */
	sock = syncd_connect(socket_path);
	if (sock < 0 || syncd_call(sock, SYNCD_HELLO, SYNCD_VERSION, 0, 0, 0, -1, &reply, &buffer_fd) ||
	    buffer_fd < 0)
		fail("hello");
	buffer = mmap(NULL, BUFFER_SIZE, PROT_READ, MAP_SHARED, buffer_fd, 0);
	if (buffer == MAP_FAILED)
		fail("mmap buffer: %s", strerror(errno));
	close(buffer_fd);
	close(sock);

	start_honest();
	honest_round(0, "before the hostile client");
	hostile_pid = start_child(&hostile_ctl, hostile_main, 0);

	if (!strcmp(which, "never-reads")) {
		size_t cursor = 0, i;
		long long queued = 0;
		unsigned sent = 0;

		hostile('o', 1, 'k', "the hostile client to connect");
		/* requests until the daemon must queue its replies: its socket is full */
		while (queued < 1) {
			hostile('s', 0, 'k', "a hostile request to be sent");
			sent++;
			i = next_event(&cursor, "flush", hostile_pid, "the hostile request's flush");
			queued = json_int(event_line(i), "queued");
		}
		printf("the hostile client's socket is full after %u unread replies\n", sent);
		if (count_events("backlog", hostile_pid) != 1)
			fail("no backlog event for the hostile client");
		for (uint32_t r = 1; r <= 3; r++)
			honest_round(r, "next to a client that does not read");
		/* on, until the daemon drops it */
		for (;;) {
			size_t flush_at, drop_at;

			/* sent, or refused: the daemon closed the connection */
			hostile('s', 0, 0, "a hostile request to be sent");
			sent++;
			/* what the daemon did with it: flushed and queued the reply, or dropped */
			waiting_for = "the hostile request's flush, or its drop";
			pthread_mutex_lock(&events.lock);
			flush_at = drop_at = SIZE_MAX;
			for (;;) {
				for (i = cursor; i < events.n; i++) {
					if (json_int(events.lines[i], "pid") != hostile_pid)
						continue;
					if (json_is(events.lines[i], "event", "drop")) {
						drop_at = i;
						break;
					}
					if (json_is(events.lines[i], "event", "flush")) {
						flush_at = i;
						break;
					}
				}
				if (flush_at != SIZE_MAX || drop_at != SIZE_MAX || events.ended)
					break;
				pthread_cond_wait(&events.more, &events.lock);
			}
			pthread_mutex_unlock(&events.lock);
			if (drop_at != SIZE_MAX)
				break;
			if (flush_at == SIZE_MAX)
				fail("the daemon's output ended");
			cursor = flush_at + 1;
			if (sent > 100000)
				fail("the daemon never dropped a client that does not read");
		}
		i = 0;
		i = next_event(&i, "drop", hostile_pid, "the hostile client's drop");
		if (!json_is(event_line(i), "reason", "it does not read its replies") ||
		    json_int(event_line(i), "queued") != 64)
			fail("the drop: %s", event_line(i));
		printf("dropped after %u requests: %s", sent, event_line(i));
		if (hostile('w', 0, 'k', "the hostile connection to end") != 1)
			fail("the hostile connection is still open");
		for (uint32_t r = 4; r <= 5; r++)
			honest_round(r, "after the client that did not read was dropped");
		honest_bye();
		stop_daemon(log_fd, "does not read its replies");
	} else if (!strcmp(which, "idle")) {
		size_t cursor = 0;

		hostile('o', IDLE_CONNECTIONS, 'k', "the idle connections to open");
		honest_round(1, "next to idle connections");
		for (int k = 0; k < IDLE_CONNECTIONS; k++) {
			size_t i = next_event(&cursor, "drop", hostile_pid, "an idle connection's drop");

			if (!json_is(event_line(i), "reason", "idle"))
				fail("the drop: %s", event_line(i));
		}
		if (hostile('w', 0, 'k', "the idle connections to end") != IDLE_CONNECTIONS)
			fail("not all idle connections ended");
		/* the registered ones said nothing for as long, and are kept */
		for (int i = 0; i <= NHONEST; i++)
			if (count_events("drop", honest_pid[i]))
				fail("producer %d was dropped", i);
		printf("%d idle connections dropped; the silent registered producer kept\n",
		       IDLE_CONNECTIONS);
		honest_round(2, "after the idle connections were dropped");
		honest_bye();
		stop_daemon(log_fd, "): idle");
	} else {
		bool other_uid = false;
		uint32_t limit = hostile('u', FLOOD, 0, "RLIMIT_NOFILE for the flood");
		size_t cursor = 0, accepted, refused;
		uint32_t closed;

		if (limit) {
			printf("SKIP: cannot have %d descriptors (RLIMIT_NOFILE hard limit %u)\n",
			       FLOOD + 64, limit);
			kill_all();
			return EXIT_SKIP;
		}
		if (geteuid() == 0)
			other_uid = hostile('n', 0, 'k', "the hostile child to become nobody") == 1;
		/* as root, the flood is another uid's; else the producers' own share the limit */
		accepted = other_uid ? PER_UID : PER_UID - (NHONEST + 1);
		refused = FLOOD - accepted;
		hostile('O', FLOOD, 'k', "1000 connections to open");
		for (size_t k = 0; k < refused; k++)
			next_event(&cursor, "refuse", hostile_pid, "the refusals of the flood");
		closed = hostile('q', 0, 'k', "the count of refused connections");
		if (closed != refused)
			fail("%u of the flood's connections ended, not %zu", closed, refused);
		printf("flood: %d connections, %zu kept (per-uid limit), %zu refused\n", FLOOD,
		       accepted, refused);
		for (uint32_t r = 1; r <= 3; r++)
			honest_round(r, "next to 1000 idle connections");
		if (other_uid) {
			/* the flood's uid is at its limit; the producers' uid is not */
			sock = syncd_connect(socket_path);
			waiting_for = "a new connection's HELLO";
			if (sock < 0 || syncd_call(sock, SYNCD_HELLO, SYNCD_VERSION, 0, 0, 0, -1, &reply,
						  &buffer_fd))
				fail("a new connection of the producers' uid was not served");
			close(buffer_fd);
			close(sock);
		} else {
			printf("note: not root: the flood has the producers' uid, and no new "
			       "connection of it is tried\n");
		}
		if (hostile('q', 0, 'k', "the count of refused connections") != refused)
			fail("the kept connections were closed");
		honest_bye();
		stop_daemon(log_fd, "too many connections of its uid");
	}
	command(hostile_ctl, 'x', 0);
	waitpid(hostile_pid, NULL, 0);
	hostile_pid = -1;
	printf("PASS: %s, %s mode\n", which, mode);
	return 0;
}
