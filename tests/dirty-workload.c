/* SPDX-License-Identifier: MIT */
/*
 * dirty-workload: a process with a known write pattern, for the end-to-end
 * tests of dirtyctl (tests/test-dirtyctl.py).  libc only, no libdirty.
 *
 *   dirty-workload [--pages N] [--seed S] [--rounds R] [--period-ms P]
 *                  [--threads T] [--hold]
 *
 * It maps N pages of private anonymous memory (no THP), writes every page once
 * so that all are populated, prints exactly one line to stdout,
 *
 *   region 0x<start address in hex> <length in bytes, decimal>
 *
 * and then runs rounds.  In each round each of the T threads writes a
 * pseudo-random set of pages chosen among the EVEN page indexes only, then
 * reads as many pages chosen among the ODD indexes, then sleeps P ms.  So after
 * the line is printed an odd page is never written again (and is read), and
 * every write changes the content of its page: thread t stores a counter that
 * only grows into word t of the page, where nothing else is ever stored.
 *
 * The choice is a pure function of the seed, the thread and the round (see
 * next_random() and run_rounds(); the tests recompute it), never of timing, so
 * the program behaves the same whether it is traced or not.
 *
 * --rounds 0 (the default) runs rounds until SIGTERM.  After R rounds the
 * program exits 0, or with --hold waits for SIGTERM and then exits 0.  SIGTERM
 * during the rounds also ends them and exits 0.  Nothing else is printed on
 * stdout; errors go to stderr with exit status 2 (usage) or 1.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

enum { EXIT_USAGE = 2, MAX_THREADS = 64 };

/* The value every byte of the region holds after the fill; a counter never reaches it. */
#define FILL_BYTE 0xa5

/* At most this long between two looks at the stop flag while sleeping. */
#define SLEEP_SLICE_NS (50 * 1000 * 1000L)

struct workload {
	unsigned char *region;
	size_t page_size;
	uint64_t pages;
	uint64_t seed;
	uint64_t rounds;     /* 0: until SIGTERM */
	long period_ms;
};

struct worker {
	const struct workload *work;
	unsigned int index;
	pthread_t thread;
};

static atomic_bool stop_requested;

static void on_sigterm(int sig)
{
	(void)sig;
	atomic_store(&stop_requested, true);
}

/*
 * splitmix64 (Steele, Lea, Flood 2014): the whole generator is one 64-bit state,
 * which tests/test-dirtyctl.py recomputes to know which pages a run writes.
 */
static uint64_t next_random(uint64_t *state)
{
	uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

/* Each thread has its own sequence; thread 0's starts at the seed itself. */
static uint64_t thread_state(uint64_t seed, unsigned int index)
{
	return seed + (uint64_t)index * UINT64_C(0xd1b54a32d192ed03);
}

/* Sleep ms milliseconds, or less if SIGTERM came; signals and stops do not shorten it. */
static void sleep_ms(long ms)
{
	struct timespec deadline, now;

	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += ms / 1000;
	deadline.tv_nsec += (ms % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	while (!atomic_load(&stop_requested)) {
		struct timespec wake;

		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec > deadline.tv_sec ||
		    (now.tv_sec == deadline.tv_sec && now.tv_nsec >= deadline.tv_nsec))
			return;
		wake = now;
		wake.tv_nsec += SLEEP_SLICE_NS;
		if (wake.tv_nsec >= 1000000000L) {
			wake.tv_sec++;
			wake.tv_nsec -= 1000000000L;
		}
		if (wake.tv_sec > deadline.tv_sec ||
		    (wake.tv_sec == deadline.tv_sec && wake.tv_nsec > deadline.tv_nsec))
			wake = deadline;
		/* EINTR (SIGTERM, or a tracer's interruption) just loops */
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &wake, NULL);
	}
}

/*
 * The rounds of one thread.  Per round: count = 1 + r % max(1, even / 32) where
 * r is the next random number; count writes to page 2 * (next % even); count
 * reads of page 2 * (next % odd) + 1 (when there are odd pages).
 */
static void run_rounds(const struct workload *work, unsigned int index)
{
	uint64_t even = (work->pages + 1) / 2, odd = work->pages / 2;
	uint64_t per_round = even / 32 ? even / 32 : 1;
	uint64_t state = thread_state(work->seed, index), counter = 0;

	for (uint64_t round = 0; work->rounds == 0 || round < work->rounds; round++) {
		uint64_t count = 1 + next_random(&state) % per_round;

		for (uint64_t i = 0; i < count && !atomic_load(&stop_requested); i++) {
			uint64_t page = 2 * (next_random(&state) % even);
			volatile uint64_t *word =
				(volatile uint64_t *)(work->region + page * work->page_size);

			word[index] = ++counter;
		}
		for (uint64_t i = 0; odd && i < count && !atomic_load(&stop_requested); i++) {
			uint64_t page = 2 * (next_random(&state) % odd) + 1;

			/* a volatile read is never dropped: these pages are read on purpose */
			(void)*(volatile uint64_t *)(work->region + page * work->page_size);
		}
		if (atomic_load(&stop_requested))
			return;
		sleep_ms(work->period_ms);
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	run_rounds(w->work, w->index);
	return NULL;
}

/* A whole decimal number in [min, max], or false. */
static bool parse_number(const char *s, uint64_t min, uint64_t max, uint64_t *ret)
{
	char *end;
	unsigned long long v;

	if (!*s || *s == '-' || *s == '+')
		return false;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || *end || v < min || v > max)
		return false;
	*ret = v;
	return true;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: dirty-workload [--pages N] [--seed S] [--rounds R] [--period-ms P]\n"
		   "                      [--threads T] [--hold]\n"
		   "Write a seeded pseudo-random set of even pages of an anonymous region each\n"
		   "round; odd pages are only read.  Prints \"region 0xADDR LEN\" once.\n"
		   "--rounds 0 (default): until SIGTERM.  --hold: after the rounds, wait for\n"
		   "SIGTERM.  Defaults: --pages 1024 --seed 1 --period-ms 20 --threads 1.\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "pages", required_argument, NULL, 'n' },
		{ "seed", required_argument, NULL, 's' },
		{ "rounds", required_argument, NULL, 'r' },
		{ "period-ms", required_argument, NULL, 'p' },
		{ "threads", required_argument, NULL, 't' },
		{ "hold", no_argument, NULL, 'H' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct workload work = { .pages = 1024, .seed = 1, .period_ms = 20 };
	struct worker workers[MAX_THREADS];
	struct sigaction sa = { .sa_handler = on_sigterm };
	sigset_t term, unblocked;
	uint64_t threads = 1, value;
	bool hold = false;
	size_t len;
	int opt;

	while ((opt = getopt_long(argc, argv, "n:s:r:p:t:Hh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'n':
			if (!parse_number(optarg, 2, UINT64_C(1) << 32, &work.pages))
				goto bad_value;
			break;
		case 's':
			if (!parse_number(optarg, 0, UINT64_MAX, &work.seed))
				goto bad_value;
			break;
		case 'r':
			if (!parse_number(optarg, 0, UINT64_MAX, &work.rounds))
				goto bad_value;
			break;
		case 'p':
			if (!parse_number(optarg, 0, 3600 * 1000, &value))
				goto bad_value;
			work.period_ms = (long)value;
			break;
		case 't':
			if (!parse_number(optarg, 1, MAX_THREADS, &threads))
				goto bad_value;
			break;
		case 'H':
			hold = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "dirty-workload: unexpected argument \"%s\"\n", argv[optind]);
		return EXIT_USAGE;
	}

	/* before any thread exists, so that every thread gets the handler's flag */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);

	work.page_size = (size_t)sysconf(_SC_PAGESIZE);
	if (work.pages > SIZE_MAX / work.page_size) {
		fprintf(stderr, "dirty-workload: --pages %" PRIu64 " is too large\n", work.pages);
		return EXIT_USAGE;
	}
	len = work.pages * work.page_size;
	work.region = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (work.region == MAP_FAILED) {
		fprintf(stderr, "dirty-workload: mmap of %zu bytes: %s\n", len, strerror(errno));
		return 1;
	}
	/* huge pages would make a tracker report 512 pages for one write */
	if (madvise(work.region, len, MADV_NOHUGEPAGE)) {
		fprintf(stderr, "dirty-workload: madvise(MADV_NOHUGEPAGE): %s\n", strerror(errno));
		return 1;
	}
	memset(work.region, FILL_BYTE, len);

	printf("region 0x%" PRIxPTR " %zu\n", (uintptr_t)work.region, len);
	if (fflush(stdout) == EOF) {
		fprintf(stderr, "dirty-workload: writing to stdout: %s\n", strerror(errno));
		return 1;
	}

	if (threads == 1) {
		run_rounds(&work, 0);
	} else {
		sigset_t old;
		uint64_t started;
		int err = 0;

		/* SIGTERM's handler runs in this thread; the workers see the flag */
		sigemptyset(&term);
		sigaddset(&term, SIGTERM);
		pthread_sigmask(SIG_BLOCK, &term, &old);
		for (started = 0; started < threads; started++) {
			workers[started] = (struct worker){ .work = &work, .index = (unsigned)started };
			err = pthread_create(&workers[started].thread, NULL, worker_main,
					     &workers[started]);
			if (err)
				break;
		}
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (err) {
			fprintf(stderr, "dirty-workload: pthread_create: %s\n", strerror(err));
			atomic_store(&stop_requested, true);
		}
		for (uint64_t i = 0; i < started; i++)
			pthread_join(workers[i].thread, NULL);
		if (err)
			return 1;
	}

	if (hold) {
		/* blocked while the flag is tested, so that no SIGTERM falls in between */
		sigemptyset(&term);
		sigaddset(&term, SIGTERM);
		sigprocmask(SIG_BLOCK, &term, &unblocked);
		sigdelset(&unblocked, SIGTERM);
		while (!atomic_load(&stop_requested))
			sigsuspend(&unblocked);
	}
	return 0;

bad_value:
	for (int i = 0; longopts[i].name; i++)
		if (longopts[i].val == opt)
			fprintf(stderr, "dirty-workload: bad value \"%s\" for --%s\n", optarg,
				longopts[i].name);
	return EXIT_USAGE;
}
