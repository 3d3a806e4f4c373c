/* SPDX-License-Identifier: MIT */
/*
 * dirty-syncd end to end: test-syncd --mode cooperative|mapping [--daemon PATH]
 *
 * Starts the daemon with a 16 MiB memfd buffer and a memfd sink (or
 * another: --sink TYPE, --sink-options SPEC), forks four
 * producers that map overlapping windows of the buffer at different offsets,
 * register, and write pseudo-random pages (a fixed seed) round after round;
 * after each round a flush.  Checks, after every flush, that the sink equals
 * the buffer byte for byte, and that the bytes copied lie between the pages
 * written that round (each must be copied) and a quarter of the buffer (fewer
 * than 5% of its pages are written per round), and exactly those pages where
 * the kernel cannot report more (no timed flushes, no shmem huge pages).
 * Producers come and go: one is killed with SIGKILL in the middle of a
 * round, one drops its connection without a word, one (cooperative mode)
 * unmaps its window without a word, one moves its window (UNREGISTER, map
 * anew, REGISTER), two leave with BYE; the killed and the dropped one go
 * while the daemon is stopped, so that it finds the hang-up and the next
 * flush request at once.  The daemon must keep running, copy the whole
 * window of a producer that went without a word, and keep the sink exact.
 *
 * Each round's flush is asked with FLUSHED (at once, or with --interval the
 * next timed flush): once it replies the sink must hold the round.  The sink
 * is checked twice: the file sink's memfd, and what READBACK reads back from
 * any sink (--sink vulkan: from the device buffer).  With --align and
 * --max-regions, each steady round must copy exactly the bytes, runs and
 * regions that a model of the region plan gives (syncd-model.h).
 *
 * Exit 0 pass, 1 fail, 77 skip (the mode or the sink cannot run here: the
 * reason is printed).  No Python, no timing: it also runs in the busybox qemu
 * guests.
 */
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libdirty.h"
#include "syncd-model.h"
#include "syncd-proto.h"

#define EXIT_SKIP 77
#define BUFFER_SIZE (16u << 20)
#define NPRODUCERS 4
#define WINDOW_STEP (3u << 20)   /* producer i maps [i * 3 MiB, i * 3 MiB + 6 MiB) */
#define WINDOW_LEN (6u << 20)
#define PAGES_PER_ROUND 40       /* each producer's own pages, per round */
#define SHARED_PER_ROUND 4       /* pages every producer whose window holds them writes */
#define NROUNDS 10
#define KILL_ROUND 3             /* producer 3 is killed during it */
#define DROP_ROUND 5             /* producer 2 closes its socket after writing */
#define REMAP_ROUND 4            /* producer 0 moves its window (UNREGISTER, REGISTER) */
#define STALE_ROUND 6            /* cooperative: producer 1 unmaps without a word */
#define BYE_ROUND 7              /* producer 1 leaves with BYE */
#define SEED 0x5eed5eedull

static pid_t daemon_pid = -1;
static pid_t producers[NPRODUCERS];
static int control[NPRODUCERS] = { -1, -1, -1, -1 }; /* the parent's ends */
static size_t page_size;
static const char *interval = "0"; /* the daemon's --interval */
static const char *sink_type = "file"; /* --sink: the daemon's --sink-type */
static const char *sink_options = "";  /* --sink-options: its --sink, but for the file sink */
static uint64_t align = 1, max_regions; /* the daemon's --align and --max-regions */
static bool validate; /* --validate: the Vulkan sink under the Khronos validation layer */

static void cleanup(void)
{
	for (int i = 0; i < NPRODUCERS; i++)
		if (producers[i] > 0) {
			kill(producers[i], SIGKILL);
			waitpid(producers[i], NULL, 0);
			producers[i] = 0;
		}
	if (daemon_pid > 0) {
		kill(daemon_pid, SIGKILL);
		waitpid(daemon_pid, NULL, 0);
		daemon_pid = -1;
	}
}

/* A hang fails, whoever runs the test (the guests have no meson). */
static void on_alarm(int sig)
{
	static const char msg[] = "FAIL: timed out (hung)\n";

	(void)sig;
	(void)!write(STDOUT_FILENO, msg, sizeof(msg) - 1);
	for (int i = 0; i < NPRODUCERS; i++)
		if (producers[i] > 0)
			kill(producers[i], SIGKILL);
	if (daemon_pid > 0)
		kill(daemon_pid, SIGKILL);
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
	cleanup();
	exit(1);
}

static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t window_offset(int producer)
{
	return (uint64_t)producer * WINDOW_STEP;
}

/*
 * The buffer pages (indices) producer writes in round, into pages; returns
 * how many.  Its own pages are distinct and in its window; the shared pages
 * of the round lie where two windows overlap, so two producers write them.
 */
static size_t round_pages(int producer, int round, uint64_t *pages)
{
	uint64_t first = window_offset(producer) / page_size, count = WINDOW_LEN / page_size;
	uint64_t state = SEED ^ ((uint64_t)producer << 32) ^ (uint64_t)round;
	size_t n = 0;

	while (n < PAGES_PER_ROUND) {
		uint64_t p = first + splitmix64(&state) % count;
		bool dup = false;

		for (size_t i = 0; i < n; i++)
			dup |= pages[i] == p;
		if (!dup)
			pages[n++] = p;
	}
	state = SEED ^ 0xabcdefull ^ (uint64_t)round;
	for (int s = 0; s < SHARED_PER_ROUND; s++) {
		/* [3 MiB, 15 MiB) is mapped by two producers everywhere */
		uint64_t lo = WINDOW_STEP / page_size, hi = (3 * WINDOW_STEP + WINDOW_LEN) / page_size;
		uint64_t p = lo + splitmix64(&state) % (hi - lo);
		bool dup = false;

		if (p < first || p >= first + count)
			continue;
		for (size_t i = 0; i < n; i++)
			dup |= pages[i] == p;
		if (!dup)
			pages[n++] = p;
	}
	return n;
}

/* The selected word of a sysfs setting ("always [never] ..."), or "" if absent. */
static bool setting_is(const char *path, const char *const *words)
{
	char line[256], *open, *close;
	FILE *f = fopen(path, "re");
	bool ok = false;

	if (!f)
		return true; /* no such setting: no huge pages of that kind */
	if (fgets(line, sizeof(line), f) && (open = strchr(line, '[')) && (close = strchr(open, ']'))) {
		*close = 0;
		for (int i = 0; words[i]; i++)
			ok |= !strcmp(open + 1, words[i]);
	}
	fclose(f);
	return ok;
}

/*
 * May the kernel map the shared buffer with huge pages (shmem THP)?  Then a
 * write may be reported a whole huge page at a time (libdirty.h, contract 3),
 * and only the bounds hold, not the exact count.
 */
static bool shmem_may_be_huge(void)
{
	static const char *const off[] = { "never", "deny", NULL };
	static const char *const off_or_inherit[] = { "never", "inherit", NULL };
	const char *dir = "/sys/kernel/mm/transparent_hugepage";
	char path[512];
	struct dirent *e;
	bool huge = false;
	DIR *dp;

	snprintf(path, sizeof(path), "%s/shmem_enabled", dir);
	if (!setting_is(path, off))
		return true;
	dp = opendir(dir);
	while (dp && (e = readdir(dp))) {
		if (strncmp(e->d_name, "hugepages-", 10))
			continue;
		snprintf(path, sizeof(path), "%s/%s/shmem_enabled", dir, e->d_name);
		huge |= !setting_is(path, off_or_inherit);
	}
	if (dp)
		closedir(dp);
	return huge;
}

/* ---- a producer (a forked child) ---- */

static void child_reply(int ctl, char what)
{
	if (write(ctl, &what, 1) != 1)
		_exit(3);
}

static void __attribute__((noreturn)) producer_main(int id, int ctl, const char *socket_path,
						    bool cooperative)
{
	struct syncd_msg reply;
	uint64_t offset = window_offset(id), pages[PAGES_PER_ROUND + SHARED_PER_ROUND];
	int sock, buffer_fd = -1, uffd = -1, err;
	unsigned char *win;
	char cmd[5];

	sock = syncd_connect(socket_path);
	if (sock < 0)
		_exit(10);
	err = syncd_call(sock, SYNCD_HELLO, SYNCD_VERSION, 0, 0, 0, -1, &reply, &buffer_fd);
	if (err || buffer_fd < 0 || reply.a != BUFFER_SIZE)
		_exit(11);
	win = mmap(NULL, WINDOW_LEN, PROT_READ | PROT_WRITE, MAP_SHARED, buffer_fd, (off_t)offset);
	if (win == MAP_FAILED)
		_exit(12);
	if (cooperative) {
		uffd = dirty_userfaultfd_share();
		if (uffd < 0)
			_exit(13);
	}
	/* the reply means tracked: only then may this process write */
	err = syncd_call(sock, SYNCD_REGISTER, (uint64_t)getpid(), (uint64_t)(uintptr_t)win,
			 WINDOW_LEN, offset, uffd, &reply, NULL);
	if (uffd >= 0)
		close(uffd);
	if (err) {
		fprintf(stderr, "producer %d: register: %s\n", id, strerror(-err));
		_exit(14);
	}
	child_reply(ctl, 'R');

	for (;;) {
		uint32_t round;

		if (read(ctl, cmd, sizeof(cmd)) != (ssize_t)sizeof(cmd))
			_exit(0); /* the parent is gone */
		memcpy(&round, cmd + 1, sizeof(round));
		switch (cmd[0]) {
		case 'w': {
			size_t n = round_pages(id, (int)round, pages);
			uint64_t state = SEED ^ ((uint64_t)getpid() << 20) ^ round;

			for (size_t i = 0; i < n; i++) {
				unsigned char *page = win + (pages[i] * page_size - offset);
				uint64_t at = (splitmix64(&state) % (page_size / 8 - 8)) * 8;

				for (int w = 0; w < 8; w++) {
					uint64_t v = splitmix64(&state);

					memcpy(page + at + (size_t)w * 8, &v, 8);
				}
			}
			child_reply(ctl, 'd');
			break;
		}
		case 'u': { /* move the window: map it anew, then let the old one go */
			uint64_t copied_total;
			unsigned char *moved = mmap(NULL, WINDOW_LEN, PROT_READ | PROT_WRITE,
						    MAP_SHARED, buffer_fd, (off_t)offset);

			if (moved == MAP_FAILED)
				_exit(15);
			err = syncd_call(sock, SYNCD_UNREGISTER, (uint64_t)(uintptr_t)win,
					 WINDOW_LEN, 0, 0, -1, &reply, NULL);
			if (err)
				_exit(16);
			copied_total = reply.d;
			munmap(win, WINDOW_LEN);
			win = moved;
			/* the tracker of this connection is still there: no new uffd */
			if (syncd_call(sock, SYNCD_REGISTER, (uint64_t)getpid(),
				       (uint64_t)(uintptr_t)win, WINDOW_LEN, offset, -1, &reply, NULL))
				_exit(17);
			child_reply(ctl, 'd');
			if (write(ctl, &copied_total, sizeof(copied_total)) != sizeof(copied_total))
				_exit(3);
			break;
		}
		case 's': /* unmap without a word, stay connected */
			munmap(win, WINDOW_LEN);
			win = NULL;
			child_reply(ctl, 'd');
			break;
		case 'c': /* drop the connection without a word, stay alive and mapped */
			close(sock);
			sock = -1;
			child_reply(ctl, 'd');
			break;
		case 'b':
			err = syncd_call(sock, SYNCD_BYE, 0, 0, 0, 0, -1, &reply, NULL);
			child_reply(ctl, err ? 'E' : 'd');
			if (!err && (write(ctl, &reply.d, sizeof(reply.d)) != sizeof(reply.d)))
				_exit(3);
			break;
		default:
			_exit(0);
		}
	}
}

/* ---- the parent ---- */

static void command(int producer, char what, uint32_t round)
{
	char cmd[5] = { what };

	memcpy(cmd + 1, &round, sizeof(round));
	if (write(control[producer], cmd, sizeof(cmd)) != (ssize_t)sizeof(cmd))
		fail("producer %d: cannot send a command: %s", producer, strerror(errno));
}

static void await(int producer, char expect)
{
	char got = 0;

	if (read(control[producer], &got, 1) != 1 || got != expect) {
		int status = 0;

		waitpid(producers[producer], &status, 0);
		producers[producer] = 0;
		fail("producer %d answered %c, not %c (its exit status %d)", producer, got ? got : '-',
		     expect, WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
	}
}

static void daemon_alive(void)
{
	int status;

	if (waitpid(daemon_pid, &status, WNOHANG) == daemon_pid) {
		daemon_pid = -1;
		fail("the daemon died: %s %d", WIFEXITED(status) ? "exit status" : "signal",
		     WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	}
}

static struct syncd_msg flush(int sock, const char *when)
{
	struct syncd_msg reply;
	int err = syncd_call(sock, SYNCD_FLUSH, 0, 0, 0, 0, -1, &reply, NULL);

	if (err)
		fail("flush %s: %s", when, strerror(-err));
	return reply;
}

static void check_equal(const unsigned char *buffer, const unsigned char *sink, const char *when)
{
	for (size_t p = 0; p < BUFFER_SIZE / page_size; p++)
		if (memcmp(buffer + p * page_size, sink + p * page_size, page_size))
			fail("%s: page %zu of the sink differs from the buffer", when, p);
}

static const char *default_daemon(void)
{
	static char path[PATH_MAX];
	char self[PATH_MAX - 32];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *slash;

	if (getenv("DIRTY_SYNCD"))
		return getenv("DIRTY_SYNCD");
	if (n <= 0)
		return "dirty-syncd";
	self[n] = 0;
	slash = strrchr(self, '/');
	*slash = 0;
	/* the build tree's layout, else side by side (as installed in a guest) */
	snprintf(path, sizeof(path), "%s/../tools/dirty-syncd", self);
	if (access(path, X_OK))
		snprintf(path, sizeof(path), "%s/dirty-syncd", self);
	return path;
}

/*
 * The daemon, with its sink: sink_fd for the file sink, the options for
 * another.  false: the sink cannot run here (the daemon exited 3 and said
 * why on standard error): a skip.
 */
static bool start_daemon(const char *daemon, const char *mode, const char *socket_path,
			 int sink_fd)
{
	char ready[8] = "", sink_arg[32], ready_arg[16], size_arg[32], align_arg[32], max_arg[32];
	const char *argv[32];
	int pipefd[2], argc = 0, status;
	ssize_t n;

	if (pipe(pipefd))
		fail("pipe: %s", strerror(errno));
	snprintf(sink_arg, sizeof(sink_arg), "fd:%d", sink_fd);
	snprintf(ready_arg, sizeof(ready_arg), "%d", pipefd[1]);
	snprintf(size_arg, sizeof(size_arg), "%u", BUFFER_SIZE);
	snprintf(align_arg, sizeof(align_arg), "%" PRIu64, align);
	snprintf(max_arg, sizeof(max_arg), "%" PRIu64, max_regions);
	argv[argc++] = daemon;
	argv[argc++] = "--socket";
	argv[argc++] = socket_path;
	argv[argc++] = "--size";
	argv[argc++] = size_arg;
	argv[argc++] = "--sink-type";
	argv[argc++] = sink_type;
	argv[argc++] = "--sink";
	argv[argc++] = strcmp(sink_type, "file") ? sink_options : sink_arg;
	argv[argc++] = "--align";
	argv[argc++] = align_arg;
	argv[argc++] = "--max-regions";
	argv[argc++] = max_arg;
	argv[argc++] = "--readback";
	argv[argc++] = "--mode";
	argv[argc++] = mode;
	argv[argc++] = "--interval";
	argv[argc++] = interval;
	argv[argc++] = "--ready-fd";
	argv[argc++] = ready_arg;
	argv[argc] = NULL;
	daemon_pid = fork();
	if (daemon_pid < 0)
		fail("fork: %s", strerror(errno));
	if (daemon_pid == 0) {
		close(pipefd[0]);
		execv(daemon, (char *const *)argv);
		fprintf(stderr, "cannot run %s: %s\n", daemon, strerror(errno));
		_exit(127);
	}
	close(pipefd[1]);
	n = read(pipefd[0], ready, sizeof(ready) - 1);
	close(pipefd[0]);
	if (n == 6 && !strcmp(ready, "ready\n"))
		return true;
	waitpid(daemon_pid, &status, 0);
	daemon_pid = -1;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 3 && strcmp(sink_type, "file"))
		return false;
	fail("%s did not start: %s %d", daemon, WIFEXITED(status) ? "exit status" : "signal",
	     WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}

static void start_producer(int id, const char *socket_path, bool cooperative, int controller)
{
	int pair[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair))
		fail("socketpair: %s", strerror(errno));
	producers[id] = fork();
	if (producers[id] < 0)
		fail("fork: %s", strerror(errno));
	if (producers[id] == 0) {
		close(pair[0]);
		close(controller);
		for (int i = 0; i < id; i++)
			close(control[i]);
		producer_main(id, pair[1], socket_path, cooperative);
	}
	close(pair[1]);
	control[id] = pair[0];
	await(id, 'R');
}

/*
 * A producer's BYE or UNREGISTER made a flush: it copied at least the pages
 * written since the last flush (must_pages), and few more.  *total: the
 * daemon's count of bytes copied before it, then after.
 */
static void producer_flushed(int id, const char *what, uint64_t must_pages, uint64_t *total)
{
	uint64_t after, copied;

	if (read(control[id], &after, sizeof(after)) != sizeof(after))
		fail("producer %d: no %s count", id, what);
	copied = after - *total;
	*total = after;
	printf("producer %d: %s copied %" PRIu64 " bytes\n", id, what, copied);
	if (copied < must_pages * page_size)
		fail("%s copied %" PRIu64 " bytes, fewer than the %" PRIu64 " pages written", what,
		     copied, must_pages);
	if (align <= page_size && !max_regions && copied > BUFFER_SIZE / 4)
		fail("%s copied %" PRIu64 " bytes, more than a quarter of the buffer", what, copied);
}

/* A producer's child is reaped: 0 when it exited 0 (or died of signal expected). */
static void reap(int id, int signal_expected)
{
	int status;

	if (waitpid(producers[id], &status, 0) != producers[id])
		fail("waitpid %d: %s", id, strerror(errno));
	producers[id] = 0;
	close(control[id]);
	control[id] = -1;
	if (signal_expected ? !(WIFSIGNALED(status) && WTERMSIG(status) == signal_expected)
			    : !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
		fail("producer %d ended with status %#x", id, status);
}

/* What a run keeps from its start to its end. */
struct run {
	const char *mode;
	bool cooperative;
	bool exact;       /* a round's flush copies exactly its pages */
	bool gone_whole;  /* a producer that goes costs its whole window */
	int sock;         /* the test's own connection */
	unsigned char *buffer;
	unsigned char *sink;     /* the file sink's memfd, mapped; NULL for another sink */
	unsigned char *readback; /* what READBACK wrote, mapped */
	int readback_fd;
	uint64_t total;   /* the daemon's count of bytes copied, at the last flush */
	bool alive[NPRODUCERS], mapped[NPRODUCERS];
	int steady_rounds;
	uint64_t steady_bytes, steady_written;
};

/* --mode, --daemon, --interval; false (usage printed) for a bad command line. */
static bool parse_arguments(int argc, char **argv, const char **mode, const char **daemon)
{
	static const struct option longopts[] = {
		{ "mode", required_argument, NULL, 'm' },
		{ "daemon", required_argument, NULL, 'd' },
		{ "interval", required_argument, NULL, 'i' },
		{ "sink", required_argument, NULL, 's' },
		{ "sink-options", required_argument, NULL, 'o' },
		{ "align", required_argument, NULL, 'a' },
		{ "max-regions", required_argument, NULL, 'r' },
		{ "validate", no_argument, NULL, 'v' },
		{ 0 },
	};
	int opt;

	while ((opt = getopt_long(argc, argv, "m:d:i:s:o:a:r:v", longopts, NULL)) != -1) {
		if (opt == 'm')
			*mode = optarg;
		else if (opt == 'd')
			*daemon = optarg;
		else if (opt == 'i')
			interval = optarg;
		else if (opt == 's')
			sink_type = optarg;
		else if (opt == 'o')
			sink_options = optarg;
		else if (opt == 'a')
			align = strtoull(optarg, NULL, 0);
		else if (opt == 'r')
			max_regions = strtoull(optarg, NULL, 0);
		else if (opt == 'v')
			validate = true;
		else
			return false;
	}
	if (!*mode || (strcmp(*mode, "cooperative") && strcmp(*mode, "mapping")) || !align ||
	    (align & (align - 1))) {
		fprintf(stderr, "usage: test-syncd --mode cooperative|mapping [--daemon PATH] "
			"[--interval MS] [--sink file|vulkan] [--sink-options SPEC] "
			"[--align BYTES] [--max-regions N] [--validate]\n");
		return false;
	}
	if (!*daemon)
		*daemon = default_daemon();
	return true;
}

/*
 * --validate: the sink's option validate where the Khronos validation layer
 * is installed (where the loader looks for it on Debian), so that every
 * error it reports fails the flush; where it is not, the test runs without
 * it and says so.
 */
static void add_validation(void)
{
	static const char *const manifests[] = {
		"/usr/share/vulkan/explicit_layer.d/VkLayer_khronos_validation.json",
		"/usr/local/share/vulkan/explicit_layer.d/VkLayer_khronos_validation.json",
		"/etc/vulkan/explicit_layer.d/VkLayer_khronos_validation.json",
	};
	static char options[256];

	for (size_t i = 0; i < sizeof(manifests) / sizeof(manifests[0]); i++) {
		if (access(manifests[i], R_OK))
			continue;
		snprintf(options, sizeof(options), "%s%svalidate", sink_options,
			 sink_options[0] ? "," : "");
		sink_options = options;
		printf("the Vulkan sink runs under the validation layer (%s)\n", manifests[i]);
		return;
	}
	printf("no Vulkan validation layer installed (Debian: vulkan-validationlayers): "
	       "the sink runs without it\n");
}

/*
 * Whether the mode can run here (false: the reason printed, a skip); for
 * mapping, whether a producer that goes costs its whole window.
 */
static bool mode_can_run(struct run *r)
{
	char why[256] = "";
	int err = dirty_backend_probe(r->cooperative ? "uffd-async" : "mapping", 0, why,
				      sizeof(why));

	if (err) {
		printf("SKIP: %s mode needs the %s backend: %s\n", r->mode,
		       r->cooperative ? "uffd-async" : "mapping", why);
		return false;
	}
	if (!r->cooperative) {
		/*
		 * A kernel that records every write keeps a departed producer's
		 * writes: the daemon then copies what it wrote, not its whole
		 * window (dirty_tracker_sees()).
		 */
		struct dirty_options o = { .sz = sizeof(o), .backend = "mapping" };
		struct dirty_tracker *probe;

		if (dirty_tracker_new(&o, &probe) == 0) {
			r->gone_whole = !(dirty_tracker_sees(probe) & DIRTY_SEES_GONE_MAPPINGS);
			dirty_tracker_free(probe);
		}
		printf("mapping mode: %s\n", r->gone_whole ? "a producer that goes costs its window "
		       "(page-table entries only)" : "the kernel records every write");
	}
	if (r->cooperative) {
		int uffd = dirty_userfaultfd_share();

		if (uffd < 0) {
			printf("SKIP: dirty_userfaultfd_share: %s\n", strerror(-uffd));
			return false;
		}
		close(uffd);
	}
	return true;
}

/*
 * The daemon started on a memfd sink, the test connected (HELLO) with the
 * buffer and the sink mapped; they are equal, and a first flush copies
 * nothing.  Returns the socket's path in socket_path.
 */
/*
 * READBACK: what the sink holds, read back into the test's memfd (for the
 * Vulkan sink, copied from the device buffer), equals the buffer.
 */
static void check_read_back(const struct run *r, const char *when)
{
	struct syncd_msg reply;
	char what[96];
	int err = syncd_call(r->sock, SYNCD_READBACK, 0, 0, 0, 0, r->readback_fd, &reply, NULL);

	if (err)
		fail("%s: read back: %s", when, strerror(-err));
	if (reply.a != BUFFER_SIZE)
		fail("%s: read back %" PRIu64 " bytes, not the buffer's %u", when, reply.a,
		     BUFFER_SIZE);
	snprintf(what, sizeof(what), "%s (read back from the %s sink)", when, sink_type);
	check_equal(r->buffer, r->readback, what);
}

/* The sink equals the buffer: the file sink's memfd, and what READBACK reads. */
static void check_sink(const struct run *r, const char *when)
{
	if (r->sink)
		check_equal(r->buffer, r->sink, when);
	check_read_back(r, when);
}

/*
 * The daemon started on a memfd sink (or another sink), the test connected
 * (HELLO) with the buffer and the sink mapped; they are equal, and a first
 * flush copies nothing.  Returns the socket's path in socket_path; false:
 * the sink cannot run here (a skip).
 */
static bool start(struct run *r, const char *daemon, char *socket_path, size_t path_size)
{
	struct syncd_msg reply;
	int sink_fd = -1, buffer_fd = -1, err;

	/* abstract: the busybox guests may have no writable directory */
	snprintf(socket_path, path_size, "@test-syncd-%d", (int)getpid());
	if (!strcmp(sink_type, "file")) {
		sink_fd = memfd_create("test-syncd-sink", 0);
		if (sink_fd < 0 || ftruncate(sink_fd, BUFFER_SIZE))
			fail("sink memfd: %s", strerror(errno));
		r->sink = mmap(NULL, BUFFER_SIZE, PROT_READ, MAP_SHARED, sink_fd, 0);
		if (r->sink == MAP_FAILED)
			fail("mmap sink: %s", strerror(errno));
	}
	r->readback_fd = memfd_create("test-syncd-readback", MFD_CLOEXEC);
	if (r->readback_fd < 0 || ftruncate(r->readback_fd, BUFFER_SIZE))
		fail("read-back memfd: %s", strerror(errno));
	r->readback = mmap(NULL, BUFFER_SIZE, PROT_READ, MAP_SHARED, r->readback_fd, 0);
	if (r->readback == MAP_FAILED)
		fail("mmap read-back memfd: %s", strerror(errno));

	if (!start_daemon(daemon, r->mode, socket_path, sink_fd))
		return false;
	if (sink_fd >= 0)
		close(sink_fd);
	r->sock = syncd_connect(socket_path);
	if (r->sock < 0)
		fail("connect %s: %s", socket_path, strerror(-r->sock));
	err = syncd_call(r->sock, SYNCD_HELLO, SYNCD_VERSION, 0, 0, 0, -1, &reply, &buffer_fd);
	if (err || buffer_fd < 0)
		fail("hello: %s", err ? strerror(-err) : "no buffer descriptor");
	if (reply.a != BUFFER_SIZE || reply.b != page_size ||
	    reply.c != (r->cooperative ? SYNCD_MODE_COOPERATIVE : SYNCD_MODE_MAPPING))
		fail("hello: size %" PRIu64 ", page %" PRIu64 ", mode %" PRIu64, reply.a, reply.b,
		     reply.c);
	r->buffer = mmap(NULL, BUFFER_SIZE, PROT_READ, MAP_SHARED, buffer_fd, 0);
	if (r->buffer == MAP_FAILED)
		fail("mmap buffer: %s", strerror(errno));
	close(buffer_fd);
	check_sink(r, "at start");
	/* nothing was written: nothing to copy */
	reply = flush(r->sock, "at start");
	if (reply.a || reply.b)
		fail("a flush before any write copied %" PRIu64 " bytes", reply.a);
	r->total = reply.d;
	return true;
}

/* A register that lies is refused; a client that speaks nonsense is dropped. */
static void check_refusals(const struct run *r, const char *socket_path)
{
	struct syncd_msg reply;
	int err;

	/* a register that lies is refused: wrong pid, and a range not mapped there */
	err = syncd_call(r->sock, SYNCD_REGISTER, (uint64_t)getpid() + 1,
			 (uint64_t)(uintptr_t)r->buffer, BUFFER_SIZE, 0, -1, &reply, NULL);
	if (err != -EPERM)
		fail("register with another pid: %d, not -EPERM", err);
	err = syncd_call(r->sock, SYNCD_REGISTER, (uint64_t)getpid(), (uint64_t)(uintptr_t)r->sink,
			 BUFFER_SIZE, 0, -1, &reply, NULL);
	if (err != -EINVAL)
		fail("register of memory that is not the buffer: %d, not -EINVAL", err);
	if (r->cooperative) {
		/* cooperative mode needs the producer's uffd, and writable memory */
		int uffd = dirty_userfaultfd_share();

		err = syncd_call(r->sock, SYNCD_REGISTER, (uint64_t)getpid(),
				 (uint64_t)(uintptr_t)r->buffer, BUFFER_SIZE, 0, -1, &reply, NULL);
		if (err != -EBADF)
			fail("register without a uffd: %d, not -EBADF", err);
		if (uffd < 0)
			fail("dirty_userfaultfd_share: %s", strerror(-uffd));
		err = syncd_call(r->sock, SYNCD_REGISTER, (uint64_t)getpid(),
				 (uint64_t)(uintptr_t)r->buffer, BUFFER_SIZE, 0, uffd, &reply, NULL);
		close(uffd);
		if (err != -EACCES)
			fail("register of a read-only mapping: %d, not -EACCES", err);
	}
	{
		/* a client that speaks nonsense is dropped, and the daemon goes on */
		int bad = syncd_connect(socket_path);
		char junk[48] = "not the protocol";

		if (bad < 0 || send(bad, junk, 10, 0) != 10 || recv(bad, junk, sizeof(junk), 0) != 0)
			fail("a client that sent junk was not disconnected");
		close(bad);
		reply = flush(r->sock, "after junk");
		daemon_alive();
	}
}

/*
 * The daemon sleeps through a producer's departure and wakes to find it
 * and the flush request at once: the flush must still include the departed
 * producer's window.
 */
static void stop_daemon(void)
{
	int status;

	kill(daemon_pid, SIGSTOP);
	if (waitpid(daemon_pid, &status, WUNTRACED) != daemon_pid || !WIFSTOPPED(status))
		fail("the daemon did not stop (status %#x)", status);
}

/*
 * A producer went without a word: its window must be copied whole, unless
 * the kernel records every write (then what it wrote is marked already).
 */
static void mark_window(const struct run *r, uint64_t *must, int id)
{
	for (uint64_t k = 0; r->gone_whole && k < WINDOW_LEN / page_size; k++) {
		uint64_t p = window_offset(id) / page_size + k;

		must[p / 64] |= 1ull << (p % 64);
	}
}

/*
 * Every producer alive and mapped writes its pages of the round, marked in
 * must (*written counts them); in KILL_ROUND, producer 3 is killed in the
 * middle of its writes.  Returns false when the round is not steady.
 */
static bool write_round(struct run *r, int round, uint64_t *must, uint64_t *written)
{
	uint64_t pages[PAGES_PER_ROUND + SHARED_PER_ROUND];
	bool steady = true;

	for (int i = 0; i < NPRODUCERS; i++)
		if (r->alive[i] && r->mapped[i])
			command(i, 'w', (uint32_t)round);
	if (round == KILL_ROUND) {
		/* in the middle of its round: it may have written any part of it */
		kill(producers[3], SIGKILL);
		reap(3, SIGKILL);
		r->alive[3] = false;
		mark_window(r, must, 3);
		steady = false;
	}
	for (int i = 0; i < NPRODUCERS; i++) {
		size_t n;

		if (!r->alive[i] || !r->mapped[i])
			continue;
		await(i, 'd');
		n = round_pages(i, round, pages);
		*written += n;
		for (size_t k = 0; k < n; k++)
			must[pages[k] / 64] |= 1ull << (pages[k] % 64);
	}
	return steady;
}

/* DROP_ROUND: 2 drops its connection; STALE_ROUND (cooperative): 1 unmaps its window. */
static void leave_without_a_word(struct run *r, int round, uint64_t *must)
{
	int id = round == DROP_ROUND ? 2 : 1;

	command(id, round == DROP_ROUND ? 'c' : 's', 0);
	await(id, 'd');
	/* (a kernel that records every write: what it wrote, counted already) */
	mark_window(r, must, id);
	r->mapped[id] = round == DROP_ROUND;
}

/*
 * BYE_ROUND: 1 leaves with BYE; REMAP_ROUND: 0 moves its window.  BYE and
 * UNREGISTER are flushes: they copy the round's pages (must_pages).
 */
static void leave_with_a_flush(struct run *r, int round, uint64_t must_pages)
{
	int id = round == BYE_ROUND ? 1 : 0;

	command(id, round == BYE_ROUND ? 'b' : 'u', 0);
	await(id, 'd');
	producer_flushed(id, round == BYE_ROUND ? "BYE" : "UNREGISTER", must_pages, &r->total);
	if (round == BYE_ROUND) {
		command(1, 'x', 0);
		reap(1, 0);
		r->alive[1] = false;
	}
}

/*
 * The round's flush, asked with FLUSHED: at once with --interval 0, else the
 * reply waits for the next timed flush.  With the daemon stopped, the
 * request goes before it wakes.
 */
static struct syncd_msg flush_round(const struct run *r, bool stopped, const char *when)
{
	struct syncd_msg m = { .magic = SYNCD_MAGIC, .version = SYNCD_VERSION,
			       .type = SYNCD_FLUSHED,
			       .a = strcmp(interval, "0") ? 0 : SYNCD_FLUSHED_NOW };
	struct syncd_msg reply = { 0 };
	int err = syncd_send(r->sock, &m, -1);

	if (stopped)
		kill(daemon_pid, SIGCONT);
	if (!err)
		err = syncd_recv(r->sock, &reply, NULL);
	if (err != 1 || reply.type != (SYNCD_FLUSHED | SYNCD_REPLY) || reply.status)
		fail("flushed %s: %d, status %d", when, err, reply.status);
	return reply;
}

/* No --align above a page, no --max-regions: regions are the dirty runs. */
static bool plain_regions(void)
{
	return align <= page_size && !max_regions;
}

/*
 * After the round's flush (FLUSHED), the sink equals the buffer, and a
 * FLUSH after it copies nothing more.  What was copied lies between the
 * pages that had to be (must_pages) and, in a steady round, a quarter of the
 * buffer; where the kernel reports exactly what was written, it is exactly
 * what the model of the region plan (want) says for those pages: bytes,
 * runs, regions, within --align and --max-regions.
 */
static void check_round(struct run *r, int round, const struct syncd_msg *flushed,
			const struct syncd_model *want, uint64_t written, uint64_t must_pages,
			bool steady, const char *when)
{
	uint64_t bytes = flushed->b, dirty = flushed->c, runs = syncd_flushed_runs(flushed);
	uint64_t regions = syncd_flushed_regions(flushed), copied;
	struct syncd_msg reply;

	daemon_alive();
	/* the promise of the FLUSHED reply: the sink holds the round's writes */
	check_sink(r, when);
	/* with --interval, the timed flushes since the last one count too */
	reply = flush(r->sock, when);
	copied = reply.d - r->total;
	r->total = reply.d;
	printf("round %d: %" PRIu64 " pages written, %" PRIu64 " pages to copy; flush %" PRIu64
	       " copied %" PRIu64 " bytes in %" PRIu64 " regions for %" PRIu64 " dirty bytes in %"
	       PRIu64 " runs (%" PRIu64 " bytes since the last)\n", round, written, must_pages,
	       flushed->a, bytes, regions, dirty, runs, copied);
	/* fewer than 5% of the pages per round: the premise of the bound below */
	if (written * 20 >= BUFFER_SIZE / page_size)
		fail("the test writes too much per round for its bound");
	if (copied < must_pages * page_size)
		fail("%s: %" PRIu64 " bytes copied, fewer than the %" PRIu64 " pages written "
		     "or of producers that went away", when, copied, must_pages);
	if (bytes % page_size || dirty % page_size || runs > dirty / page_size ||
	    regions > runs || bytes < dirty || (bytes && !regions) || (dirty && !runs))
		fail("%s: %" PRIu64 " bytes in %" PRIu64 " regions for %" PRIu64 " bytes in %" PRIu64
		     " runs", when, bytes, regions, dirty, runs);
	if (max_regions && regions > max_regions)
		fail("%s: %" PRIu64 " regions, more than --max-regions %" PRIu64, when, regions,
		     max_regions);
	if (r->exact && reply.a)
		fail("%s: a flush right after the round's copied %" PRIu64 " bytes more", when,
		     reply.a);
	if (steady) {
		if (plain_regions() && copied > BUFFER_SIZE / 4)
			fail("%s: %" PRIu64 " bytes copied, more than a quarter of the buffer "
			     "for %" PRIu64 " pages written", when, copied, written);
		if (r->exact && (copied != want->bytes || bytes != want->bytes ||
				 dirty != must_pages * page_size || runs != want->runs ||
				 regions != want->regions))
			fail("%s: %" PRIu64 " bytes in %" PRIu64 " regions for %" PRIu64 " bytes in %"
			     PRIu64 " runs, not the %" PRIu64 " bytes in %" PRIu64 " regions for %"
			     PRIu64 " pages in %" PRIu64 " runs written", when, bytes, regions, dirty,
			     runs, want->bytes, want->regions, must_pages, want->runs);
		r->steady_bytes += copied;
		r->steady_written += must_pages * page_size;
		r->steady_rounds++;
	}
}

/* One round: the producers write, some come and go, a flush, its checks. */
static void run_round(struct run *r, int round)
{
	/* the pages the flush must copy: those written, and gone producers' windows */
	uint64_t *must = calloc(BUFFER_SIZE / page_size / 64, sizeof(uint64_t));
	uint64_t must_pages = 0, written = 0;
	bool steady, stopped = round == KILL_ROUND || round == DROP_ROUND;
	struct syncd_model want;
	struct syncd_msg reply;
	char when[64];

	if (!must)
		fail("out of memory");
	if (stopped)
		stop_daemon();
	steady = write_round(r, round, must, &written);
	if (round == DROP_ROUND || (round == STALE_ROUND && r->cooperative)) {
		leave_without_a_word(r, round, must);
		steady = false;
	}
	for (size_t w = 0; w < BUFFER_SIZE / page_size / 64; w++)
		must_pages += (uint64_t)__builtin_popcountll(must[w]);
	if (!syncd_model(must, BUFFER_SIZE / page_size, page_size, align, max_regions, &want))
		fail("out of memory");
	free(must);
	if (round == BYE_ROUND || round == REMAP_ROUND) {
		leave_with_a_flush(r, round, must_pages);
		must_pages = 0; /* copied already */
		steady = false;
	}
	snprintf(when, sizeof(when), "after round %d", round);
	reply = flush_round(r, stopped, when);
	check_round(r, round, &reply, &want, written, must_pages, steady, when);
	if (round == DROP_ROUND) {
		/* it wrote nothing since; now it may go */
		command(2, 'x', 0);
		reap(2, 0);
		r->alive[2] = false;
	}
}

/* The last producer leaves with BYE, then a final flush copies nothing more. */
static void last_producer_leaves(struct run *r)
{
	uint64_t pages[PAGES_PER_ROUND + SHARED_PER_ROUND];
	struct syncd_msg reply;

	command(0, 'w', NROUNDS); /* written, not flushed: the BYE must collect them */
	await(0, 'd');
	command(0, 'b', 0);
	await(0, 'd');
	producer_flushed(0, "BYE", round_pages(0, NROUNDS, pages), &r->total);
	command(0, 'x', 0);
	reap(0, 0);
	reply = flush(r->sock, "at the end");
	check_sink(r, "at the end");
	if (reply.a != 0)
		fail("a flush with no writer copied %" PRIu64 " bytes", reply.a);
	if (reply.d != r->total)
		fail("%" PRIu64 " bytes copied after the last producer's BYE", reply.d - r->total);
}

static void report_steady_rounds(const struct run *r)
{
	printf("steady rounds: %d, %" PRIu64 " bytes copied for %" PRIu64 " bytes written "
	       "(%.2f%% of %d buffers' worth)\n", r->steady_rounds, r->steady_bytes,
	       r->steady_written,
	       100.0 * (double)r->steady_bytes / ((double)BUFFER_SIZE * r->steady_rounds),
	       r->steady_rounds);
	if (!r->exact)
		printf("(copies checked against bounds only: %s)\n",
		       strcmp(interval, "0") ? "timed flushes" : "shared memory may use huge pages");
	if (r->steady_rounds < 5)
		fail("only %d steady rounds", r->steady_rounds);
}

/* BYE, then SIGTERM: the daemon exits 0. */
static void stop_daemon_cleanly(const struct run *r)
{
	struct syncd_msg reply;
	int err, status;

	err = syncd_call(r->sock, SYNCD_BYE, 0, 0, 0, 0, -1, &reply, NULL);
	if (err)
		fail("bye: %s", strerror(-err));
	close(r->sock);
	daemon_alive();
	kill(daemon_pid, SIGTERM);
	if (waitpid(daemon_pid, &status, 0) != daemon_pid)
		fail("waitpid daemon: %s", strerror(errno));
	daemon_pid = -1;
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		fail("the daemon ended with status %#x after SIGTERM", status);
}

int main(int argc, char **argv)
{
	struct run r = { .gone_whole = true };
	const char *daemon = NULL;
	char socket_path[64];

	if (!parse_arguments(argc, argv, &r.mode, &daemon))
		return 1;
	r.cooperative = !strcmp(r.mode, "cooperative");
	page_size = (size_t)sysconf(_SC_PAGESIZE);
	/* without timed flushes or huge pages, a round copies exactly its pages */
	r.exact = !strcmp(interval, "0") && !shmem_may_be_huge();
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGALRM, on_alarm);
	alarm(240); /* a hang guard, not a measure: a pass takes well under a second */
	if (!mode_can_run(&r))
		return EXIT_SKIP;
	if (validate)
		add_validation();

	if (!start(&r, daemon, socket_path, sizeof(socket_path))) {
		printf("SKIP: the %s sink cannot run here (the daemon's reason is above)\n",
		       sink_type);
		return EXIT_SKIP;
	}
	check_refusals(&r, socket_path);
	for (int i = 0; i < NPRODUCERS; i++) {
		start_producer(i, socket_path, r.cooperative, r.sock);
		r.alive[i] = r.mapped[i] = true;
	}
	for (int round = 0; round < NROUNDS; round++)
		run_round(&r, round);
	last_producer_leaves(&r);
	report_steady_rounds(&r);
	stop_daemon_cleanly(&r);
	printf("PASS: %s mode, %s sink, %d producers, %d rounds, killed, dropped, %smoved and BYE "
	       "producers, sink exact after every flush\n", r.mode, sink_type, NPRODUCERS, NROUNDS,
	       r.cooperative ? "unmapped, " : "");
	return 0;
}
