/* SPDX-License-Identifier: MIT */
/*
 * What a garbage collector needs from the library, backend by backend
 * ($DIRTY_TEST_BACKEND): a collect that allocates nothing, since it runs with
 * the collector's other threads stopped, one of them perhaps inside malloc(),
 * and perhaps with malloc() being the collector itself; and a say in the
 * signals the library takes (libdirty.h, "Signals"): none at all
 * (DIRTY_TRACKER_NO_SIGNALS), soft-dirty's stop signal, and the signals its
 * handlers hold off.
 *
 * This program replaces malloc() and its relatives (calling glibc's own
 * __libc_*), so that every allocation of the process, the library's and
 * libc's on its behalf (opendir(), fopen()...), is counted while a call
 * under test runs.  Sanitizers own malloc(): under them that case skips.
 *
 * Every region may change way under the cost model (libdirty.h): with
 * $LIBDIRTY_FORCE_WAYS=1 (a build with probe_injection) the region changes
 * way at each whole-region collect-and-clean, so that the collects that
 * switch, and those of a compared region, are counted too.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <check.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <syslog.h>
#include <unistd.h>

#include "config.h"
#include "common.h"
#include "tap.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define COUNTS_ALLOCATIONS 0
#else
#define COUNTS_ALLOCATIONS 1
#endif

#if COUNTS_ALLOCATIONS
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void *__libc_memalign(size_t align, size_t size);

static _Atomic bool counting;
static _Atomic unsigned long allocations;

static void count(void)
{
	if (atomic_load_explicit(&counting, memory_order_relaxed))
		atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
}

void *malloc(size_t size)
{
	count();
	return __libc_malloc(size);
}

void *calloc(size_t n, size_t size)
{
	count();
	return __libc_calloc(n, size);
}

void *realloc(void *p, size_t size)
{
	count();
	return __libc_realloc(p, size);
}

void *reallocarray(void *p, size_t n, size_t size)
{
	if (size && n > SIZE_MAX / size) {
		errno = ENOMEM;
		return NULL;
	}
	return realloc(p, n * size);
}

void *memalign(size_t align, size_t size)
{
	count();
	return __libc_memalign(align, size);
}

void *aligned_alloc(size_t align, size_t size)
{
	return memalign(align, size);
}

int posix_memalign(void **ret, size_t align, size_t size)
{
	void *p = memalign(align, size);

	if (!p)
		return ENOMEM;
	*ret = p;
	return 0;
}

void *valloc(size_t size)
{
	return memalign((size_t)sysconf(_SC_PAGESIZE), size);
}

void *pvalloc(size_t size)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	return memalign(page, (size + page - 1) / page * page);
}
#endif

#define NPAGES 256

#if COUNTS_ALLOCATIONS /* what the test that counts them uses */
/* Pages written in each round; each round's set differs from the last. */
static const size_t round_pages[][5] = {
	{ 0, 1, 2, 100, 255 },
	{ 3, 63, 64, 65, 200 },
	{ 1, 127, 128, 129, 254 },
};
#define NROUNDS (sizeof(round_pages) / sizeof(round_pages[0]))

static void write_round(char *mem, size_t round)
{
	for (size_t i = 0; i < 5; i++)
		mem[round_pages[round][i] * page_size] = (char)(round + 1);
}

static void expect_bitmap(const uint64_t *bitmap, size_t round)
{
	uint64_t expect[NPAGES / 64] = { 0 };

	for (size_t i = 0; i < 5; i++)
		expect[round_pages[round][i] / 64] |= UINT64_C(1) << (round_pages[round][i] % 64);
	for (size_t w = 0; w < NPAGES / 64; w++)
		ck_assert_msg(bitmap[w] == expect[w], "round %zu word %zu: %#llx, expected %#llx",
			      round, w, (unsigned long long)bitmap[w],
			      (unsigned long long)expect[w]);
}

struct each_ctx {
	uint64_t bitmap[NPAGES / 64];
	char *base;
};

static int each_run(void *start, size_t len, void *userdata)
{
	struct each_ctx *c = userdata;

	for (size_t i = (size_t)((char *)start - c->base) / page_size;
	     i < (size_t)((char *)start + len - c->base) / page_size; i++)
		c->bitmap[i / 64] |= UINT64_C(1) << (i % 64);
	return 0;
}

static void runs_to_bitmap(const struct dirty_range *runs, size_t n, char *base,
			   uint64_t *bitmap)
{
	struct each_ctx c = { .base = base };

	for (size_t i = 0; i < n; i++)
		each_run(runs[i].start, runs[i].len, &c);
	memcpy(bitmap, c.bitmap, sizeof(c.bitmap));
}
#endif

/*
 * Each collect form, with and without clean, and dirty_clean(), on every
 * backend: exact answers, and not one allocation in the process meanwhile.
 */
START_TEST(test_collect_allocates_nothing)
{
#if !COUNTS_ALLOCATIONS
	test_skip("a sanitizer replaces malloc(): allocations cannot be counted");
#else
	struct dirty_tracker *t = tracker_new();
	struct dirty_stats st = { .sz = sizeof(st) };
	const char *ways[NROUNDS];
	struct dirty_range runs[NPAGES];
	struct test_mem m;
	uint64_t bitmap[NPAGES / 64];
	char why[256];
	void *next;

	ck_assert_msg(mem_map(&m, MEM_ANON, NPAGES, why, sizeof(why)), "%s", why);
	ck_assert_int_eq(dirty_track(t, m.addr, m.len), 0);
	memset(bitmap, 0xa5, sizeof(bitmap)); /* every word must be written */
	for (size_t round = 0; round < NROUNDS; round++) {
		struct each_ctx each = { .base = m.addr };
		uint64_t peek[NPAGES / 64];
		ssize_t peeked = 0, n = 0;
		int err = 0;

		write_round(m.addr, round);
		/* nothing between the two stores may allocate: Check's asserts do */
		atomic_store(&allocations, 0);
		atomic_store(&counting, true);
		switch (round) {
		case 0: /* the bitmap form, looked at first, then taken */
			err = dirty_collect_bitmap(t, m.addr, m.len, 0, peek);
			if (!err)
				err = dirty_collect_bitmap(t, m.addr, m.len, DIRTY_COLLECT_CLEAN,
							   bitmap);
			break;
		case 1: /* runs */
			peeked = dirty_collect(t, m.addr, m.len, 0, runs, NPAGES, &next);
			n = dirty_collect(t, m.addr, m.len, DIRTY_COLLECT_CLEAN, runs + NPAGES / 2,
					  NPAGES / 2, &next);
			break;
		default: /* a callback per run */
			err = dirty_collect_each(t, m.addr, m.len, DIRTY_COLLECT_CLEAN, each_run,
						 &each);
			break;
		}
		atomic_store(&counting, false);
		ways[round] = dirty_tracker_region_way(t, m.addr);
		ck_assert_msg(atomic_load(&allocations) == 0, "round %zu (%s): %lu allocations",
			      round, ways[round], atomic_load(&allocations));
		ck_assert_int_eq(err, 0);
		switch (round) {
		case 0:
			expect_bitmap(peek, round);
			break;
		case 1:
			ck_assert_int_gt(peeked, 0);
			ck_assert_int_gt(n, 0);
			ck_assert_ptr_eq(next, m.addr + m.len);
			runs_to_bitmap(runs, (size_t)peeked, m.addr, peek);
			expect_bitmap(peek, round);
			runs_to_bitmap(runs + NPAGES / 2, (size_t)n, m.addr, bitmap);
			break;
		default:
			memcpy(bitmap, each.bitmap, sizeof(bitmap));
			break;
		}
		expect_bitmap(bitmap, round);
	}

	/* dirty_clean() too; then everything is clean, and found so */
	write_round(m.addr, 0);
	{
		int cleaned, collected;

		atomic_store(&allocations, 0);
		atomic_store(&counting, true);
		cleaned = dirty_clean(t, m.addr, m.len);
		collected = dirty_collect_bitmap(t, m.addr, m.len, DIRTY_COLLECT_CLEAN, bitmap);
		atomic_store(&counting, false);
		ck_assert_uint_eq(atomic_load(&allocations), 0);
		ck_assert_int_eq(cleaned, 0);
		ck_assert_int_eq(collected, 0);
	}
	for (size_t w = 0; w < NPAGES / 64; w++)
		ck_assert_uint_eq(bitmap[w], 0);
	ck_assert_int_eq(dirty_tracker_stats(t, &st), 0);
	if (getenv("LIBDIRTY_FORCE_WAYS") && strtoul(getenv("LIBDIRTY_FORCE_WAYS"), NULL, 10)) {
#if LIBDIRTY_PROBE_INJECTION
		/* the point of the run: collects that switched, and one of a compared region */
		ck_assert_msg(st.way_switches >= 2 && (!strcmp(ways[1], "compare") ||
						       !strcmp(ways[2], "compare")),
			      "%lu changes of way; ways after each round: %s %s %s",
			      (unsigned long)st.way_switches, ways[0], ways[1], ways[2]);
#else
		test_skip("built with -Dprobe_injection=false: $LIBDIRTY_FORCE_WAYS forces nothing");
#endif
	}
	dirty_tracker_free(t);
	mem_unmap(&m);
#endif
}
END_TEST

/*
 * The bitmap is written in place: a range refused as a whole, a region
 * found gone included, leaves it alone, and the tracker as it was.
 */
START_TEST(test_bitmap_failure)
{
	struct dirty_tracker *t = tracker_new();
	struct test_mem m;
	uint64_t bitmap[NPAGES / 64];
	char why[256];
	char *second;

	ck_assert_msg(mem_map(&m, MEM_ANON, NPAGES, why, sizeof(why)), "%s", why);
	/* two regions; the second is unmapped behind the tracker's back */
	second = m.addr + m.len / 2;
	ck_assert_int_eq(dirty_track(t, m.addr, m.len / 2), 0);
	ck_assert_int_eq(dirty_track(t, second, m.len / 2), 0);
	m.addr[0] = 1;
	m.addr[5 * page_size] = 1;

	memset(bitmap, 0xa5, sizeof(bitmap));
	ck_assert_int_eq(dirty_collect_bitmap(t, m.addr - page_size, m.len, 0, bitmap), -ENOENT);
	ck_assert_int_eq(dirty_collect_bitmap(t, m.addr + 1, page_size, 0, bitmap), -EINVAL);
	ck_assert_int_eq(dirty_collect_bitmap(t, m.addr, m.len, 2, bitmap), -EINVAL);
	for (size_t w = 0; w < NPAGES / 64; w++)
		ck_assert_uint_eq(bitmap[w], UINT64_C(0xa5a5a5a5a5a5a5a5));

	ck_assert_int_eq(munmap(second, m.len / 2), 0);
	ck_assert_int_eq(dirty_collect_bitmap(t, m.addr, m.len, DIRTY_COLLECT_CLEAN, bitmap),
			 -ESTALE);
	for (size_t w = 0; w < NPAGES / 64; w++)
		ck_assert_uint_eq(bitmap[w], UINT64_C(0xa5a5a5a5a5a5a5a5));
	/* the first region kept its pages */
	ck_assert_int_eq(dirty_collect_bitmap(t, m.addr, m.len / 2, DIRTY_COLLECT_CLEAN, bitmap),
			 0);
	ck_assert_uint_eq(bitmap[0], UINT64_C(1) | UINT64_C(1) << 5);
	ck_assert_uint_eq(bitmap[1], 0);
	ck_assert_int_eq(dirty_untrack(t, second, m.len / 2), 0);
	dirty_tracker_free(t);
	munmap(m.addr, m.len / 2);
}
END_TEST

static Suite *collect_suite(void)
{
	Suite *s = suite_create("collect");
	TCase *tc = tcase_create("collect");

	tcase_add_test(tc, test_collect_allocates_nothing);
	tcase_add_test(tc, test_bitmap_failure);
	suite_add_tcase(s, tc);
	return s;
}

/* ---- signals ---- */

static bool backend_has_handler(const char *backend)
{
	return !strcmp(backend, "mprotect") || !strcmp(backend, "soft-dirty");
}

static bool handler_is_default(int sig)
{
	struct sigaction sa;

	ck_assert_int_eq(sigaction(sig, NULL, &sa), 0);
	return !(sa.sa_flags & SA_SIGINFO) && sa.sa_handler == SIG_DFL;
}

/*
 * The handler of sig, to tell whether it changed: SIGSEGV may have one
 * before the library does (a sanitizer's runtime installs its own).
 */
static void *handler_of(int sig)
{
	struct sigaction sa;

	ck_assert_int_eq(sigaction(sig, NULL, &sa), 0);
	return (sa.sa_flags & SA_SIGINFO) ? (void *)sa.sa_sigaction : (void *)sa.sa_handler;
}

static uint64_t signal_bit(int sig)
{
	return UINT64_C(1) << (sig - 1);
}

static struct dirty_options options(unsigned flags)
{
	struct dirty_options opts;

	memset(&opts, 0, sizeof(opts));
	opts.sz = sizeof(opts);
	opts.backend = test_backend();
	opts.flags = flags;
	return opts;
}

/*
 * DIRTY_TRACKER_NO_SIGNALS: a backend that needs a handler is refused;
 * any other tracks as ever, and no disposition changes.
 */
START_TEST(test_no_signals)
{
	struct dirty_options opts = options(DIRTY_TRACKER_NO_SIGNALS);
	struct dirty_tracker *t = NULL;
	struct dirty_range runs[4];
	struct test_mem m;
	char why[256];
	void *next, *segv = handler_of(SIGSEGV);

	ck_assert(handler_is_default(SIGRTMAX - 4));
	if (backend_has_handler(opts.backend)) {
		int sig = !strcmp(opts.backend, "mprotect") ? SIGSEGV : SIGRTMAX - 4;
		void *before = handler_of(sig);

		ck_assert_int_eq(dirty_tracker_new(&opts, &t), -EOPNOTSUPP);
		ck_assert_ptr_null(t);
		ck_assert_ptr_eq(handler_of(sig), before);
		/* the control: without the flag, the same backend installs one */
		opts.flags = 0;
		ck_assert_int_eq(dirty_tracker_new(&opts, &t), 0);
		ck_assert_ptr_ne(handler_of(sig), before);
		dirty_tracker_free(t);
		return;
	}
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), 0);
	ck_assert_str_eq(dirty_tracker_backend(t), opts.backend);
	ck_assert_msg(mem_map(&m, MEM_ANON, 16, why, sizeof(why)), "%s", why);
	ck_assert_int_eq(dirty_track(t, m.addr, m.len), 0);
	m.addr[3 * page_size] = 1;
	ck_assert_int_eq(dirty_collect(t, m.addr, m.len, DIRTY_COLLECT_CLEAN, runs, 4, &next), 1);
	ck_assert_ptr_eq(runs[0].start, m.addr + 3 * page_size);
	ck_assert_uint_eq(runs[0].len, page_size);
	ck_assert_ptr_eq(handler_of(SIGSEGV), segv);
	ck_assert(handler_is_default(SIGRTMAX - 4));
	dirty_tracker_free(t);
	mem_unmap(&m);
}
END_TEST

/* What the program's own SIGSEGV handler found blocked when the library passed it a fault. */
static sigset_t chained_mask;
static _Atomic int chained_faults;

static void on_foreign_fault(int sig, siginfo_t *info, void *context)
{
	uintptr_t page = (uintptr_t)info->si_addr & ~(uintptr_t)(page_size - 1);

	(void)sig;
	(void)context;
	pthread_sigmask(SIG_BLOCK, NULL, &chained_mask);
	atomic_fetch_add(&chained_faults, 1);
	mprotect((void *)page, page_size, PROT_READ | PROT_WRITE); /* the write runs again */
}

/* A write to a read-only page of no tracker's: the library's handler passes it on. */
static void foreign_fault(char *page)
{
	int before = atomic_load(&chained_faults);

	ck_assert_int_eq(mprotect(page, page_size, PROT_READ), 0);
	page[0] = 1;
	ck_assert_int_eq(atomic_load(&chained_faults), before + 1);
}

/*
 * dirty_options.handler_mask under mprotect: the handler blocks the union of
 * the trackers' masks while it runs.  Seen from the program's own handler,
 * to which the library's passes a fault that is not its own, so runs inside
 * it, with its mask.
 */
START_TEST(test_handler_mask_mprotect)
{
	struct sigaction own = { .sa_sigaction = on_foreign_fault, .sa_flags = SA_SIGINFO };
	struct dirty_options opts = options(0);
	struct dirty_tracker *t[3] = { NULL };
	struct dirty_range runs[4];
	struct test_mem m;
	char why[256], *foreign;
	void *next;

#if defined(__SANITIZE_THREAD__)
	test_skip("TSan's runtime runs signal handlers with a mask of its own: what the "
		  "library's handler blocks cannot be seen from the program's");
#endif
	ck_assert_msg(mem_map(&m, MEM_ANON, 16, why, sizeof(why)), "%s", why);
	foreign = map_isolated(page_size);
	sigemptyset(&own.sa_mask);
	ck_assert_int_eq(sigaction(SIGSEGV, &own, NULL), 0);

	/* the control: no mask, nothing held off */
	ck_assert_int_eq(dirty_tracker_new(&opts, &t[0]), 0);
	foreign_fault(foreign);
	ck_assert(!sigismember(&chained_mask, SIGUSR1));
	ck_assert(!sigismember(&chained_mask, SIGRTMIN + 2));

	opts.handler_mask = signal_bit(SIGUSR1) | signal_bit(SIGRTMIN + 2);
	ck_assert_int_eq(dirty_tracker_new(&opts, &t[1]), 0);
	foreign_fault(foreign);
	ck_assert(sigismember(&chained_mask, SIGUSR1));
	ck_assert(sigismember(&chained_mask, SIGRTMIN + 2));
	ck_assert(!sigismember(&chained_mask, SIGUSR2));

	/* another tracker adds its own; the first ones' stay */
	opts.handler_mask = signal_bit(SIGUSR2);
	ck_assert_int_eq(dirty_tracker_new(&opts, &t[2]), 0);
	foreign_fault(foreign);
	ck_assert(sigismember(&chained_mask, SIGUSR1));
	ck_assert(sigismember(&chained_mask, SIGRTMIN + 2));
	ck_assert(sigismember(&chained_mask, SIGUSR2));

	/* and tracking works as ever */
	ck_assert_int_eq(dirty_track(t[2], m.addr, m.len), 0);
	m.addr[5 * page_size] = 1;
	ck_assert_int_eq(dirty_collect(t[2], m.addr, m.len, DIRTY_COLLECT_CLEAN, runs, 4, &next),
			 1);
	ck_assert_ptr_eq(runs[0].start, m.addr + 5 * page_size);
	ck_assert_int_eq(atomic_load(&chained_faults), 3);

	/* a program that replaced the library's handler: no more signals can be added */
	ck_assert_int_eq(sigaction(SIGSEGV, &own, NULL), 0);
	opts.handler_mask = signal_bit(SIGRTMIN + 5);
	ck_assert_int_eq(dirty_tracker_new(&opts, &t[0]), -EBUSY);
	opts.handler_mask = signal_bit(SIGUSR2); /* nothing to add: fine */
	dirty_tracker_free(t[0]);
	ck_assert_int_eq(dirty_tracker_new(&opts, &t[0]), 0);

	for (size_t i = 0; i < 3; i++)
		dirty_tracker_free(t[i]);
	unmap_isolated(foreign, page_size);
	mem_unmap(&m);
}
END_TEST

/* dirty_options.stop_signal: values outside the allowed ones, on any backend. */
START_TEST(test_stop_signal_invalid)
{
	static const int bad[] = { -1, SIGKILL, SIGSEGV, SIGSTOP, SIGCHLD, 65 };
	struct dirty_options opts = options(0);
	struct dirty_tracker *t = NULL;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		opts.stop_signal = bad[i];
		ck_assert_msg(dirty_tracker_new(&opts, &t) == -EINVAL, "stop_signal %d", bad[i]);
		ck_assert_ptr_null(t);
	}
	opts.stop_signal = SIGUSR2;
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), 0);
	/* only soft-dirty installs anything on it */
	ck_assert(handler_is_default(SIGUSR2) == (strcmp(opts.backend, "soft-dirty") != 0));
	dirty_tracker_free(t);
}
END_TEST

/*
 * Thread that blocks one signal and waits to be let go: it says "ready" on
 * one pipe and waits on another (one pipe both ways would let it read its
 * own word back).
 */
struct blocker {
	pthread_t thread;
	int sig;
	int ready[2], quit[2];
};

static void *blocker_main(void *arg)
{
	struct blocker *b = arg;
	sigset_t set;
	char c;

	sigemptyset(&set);
	sigaddset(&set, b->sig);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	if (write(b->ready[1], "r", 1) != 1)
		return NULL;
	while (read(b->quit[0], &c, 1) < 0)
		; /* a signal: wait on */
	return NULL;
}

static void blocker_start(struct blocker *b, int sig)
{
	char c;

	b->sig = sig;
	ck_assert_int_eq(pipe(b->ready), 0);
	ck_assert_int_eq(pipe(b->quit), 0);
	ck_assert_int_eq(pthread_create(&b->thread, NULL, blocker_main, b), 0);
	ck_assert_int_eq(read(b->ready[0], &c, 1), 1); /* it blocks the signal now */
}

static void blocker_stop(struct blocker *b)
{
	ck_assert_int_eq(write(b->quit[1], "q", 1), 1);
	pthread_join(b->thread, NULL);
	for (int i = 0; i < 2; i++) {
		close(b->ready[i]);
		close(b->quit[i]);
	}
}

static char last_warning[512];

static void keep_warning(int priority, const char *msg, void *userdata)
{
	(void)userdata;
	if (priority <= LOG_WARNING)
		snprintf(last_warning, sizeof(last_warning), "%s", msg);
}

/*
 * soft-dirty with a stop signal of the caller's choice: the handler is on
 * it, SIGRTMAX-4 is left alone, and a clean stops threads with it.  Seen
 * through a thread that blocks it: the clean passes that thread over and
 * says so, naming the signal; a thread that blocks only SIGRTMAX-4 is
 * stopped without a word.  The other backends take no signal and say
 * nothing of a thread that blocks it.
 */
START_TEST(test_stop_signal_soft_dirty)
{
	struct dirty_options opts = options(0);
	struct dirty_tracker *t = NULL, *other = NULL;
	int sig = SIGRTMIN + 3;
	struct blocker b;
	struct test_mem m;
	char why[256], expect[64];

	opts.stop_signal = sig;
	opts.log = keep_warning;
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), 0);
	ck_assert_msg(mem_map(&m, MEM_ANON, 16, why, sizeof(why)), "%s", why);
	ck_assert_int_eq(dirty_track(t, m.addr, m.len), 0);
	if (strcmp(opts.backend, "soft-dirty")) {
		/* the other backends stop no thread, and take no signal for it */
		ck_assert(handler_is_default(sig));
		blocker_start(&b, sig);
		last_warning[0] = '\0';
		ck_assert_int_eq(dirty_clean(t, m.addr, m.len), 0);
		ck_assert_str_eq(last_warning, "");
		blocker_stop(&b);
		dirty_tracker_free(t);
		mem_unmap(&m);
		return;
	}
	ck_assert(!handler_is_default(sig));
	ck_assert(handler_is_default(SIGRTMAX - 4));

	blocker_start(&b, SIGRTMAX - 4);
	last_warning[0] = '\0';
	ck_assert_int_eq(dirty_clean(t, m.addr, m.len), 0);
	ck_assert_str_eq(last_warning, "");
	blocker_stop(&b);

	blocker_start(&b, sig);
	ck_assert_int_eq(dirty_clean(t, m.addr, m.len), 0);
	snprintf(expect, sizeof(expect), "block signal %d ", sig);
	ck_assert_msg(strstr(last_warning, expect), "warning: \"%s\"", last_warning);
	blocker_stop(&b);

	/* one stop signal per process: 0 takes it, another is refused */
	opts.stop_signal = SIGRTMIN + 4;
	ck_assert_int_eq(dirty_tracker_new(&opts, &other), -EBUSY);
	opts.stop_signal = 0;
	ck_assert_int_eq(dirty_tracker_new(&opts, &other), 0);
	dirty_tracker_free(other);
	dirty_tracker_free(t);
	mem_unmap(&m);
}
END_TEST

/*
 * A stop signal the program handles already is refused, not taken over;
 * the other backends leave it to the program.
 */
static void ignore_signal(int sig)
{
	(void)sig;
}

START_TEST(test_stop_signal_taken)
{
	struct dirty_options opts = options(0);
	struct dirty_tracker *t = NULL;

	ck_assert_ptr_ne(signal(SIGUSR1, ignore_signal), SIG_ERR);
	opts.stop_signal = SIGUSR1;
	if (strcmp(opts.backend, "soft-dirty")) {
		/* the other backends take no stop signal: the program keeps its handler */
		ck_assert_int_eq(dirty_tracker_new(&opts, &t), 0);
		ck_assert_ptr_eq(signal(SIGUSR1, ignore_signal), ignore_signal);
		dirty_tracker_free(t);
		return;
	}
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), -EBUSY);
	opts.stop_signal = SIGUSR2;
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), 0);
	dirty_tracker_free(t);
}
END_TEST

static Suite *signals_suite(void)
{
	Suite *s = suite_create("signals");
	TCase *tc = tcase_create("signals");

	tcase_add_test(tc, test_no_signals);
	tcase_add_test(tc, test_stop_signal_invalid);
	tcase_add_test(tc, test_stop_signal_soft_dirty);
	tcase_add_test(tc, test_stop_signal_taken);
	if (!strcmp(test_backend(), "mprotect"))
		tcase_add_test(tc, test_handler_mask_mprotect);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr;

	tap_begin();
	test_backend(); /* a plan of no tests, with the reason, if it cannot run here */
	mem_map_no_thp = true;
	sr = srunner_create(signals_suite());
	srunner_add_suite(sr, collect_suite());
	return tap_run(sr);
}
