/* SPDX-License-Identifier: MIT */
/*
 * What a garbage collector needs from the library, backend by backend
 * ($DIRTY_TEST_BACKEND): a collect that allocates nothing, since it runs with
 * the collector's other threads stopped, one of them perhaps inside malloc(),
 * and perhaps with malloc() being the collector itself.
 *
 * This program replaces malloc() and its relatives (calling glibc's own
 * __libc_*), so that every allocation of the process, the library's and
 * libc's on its behalf (opendir(), fopen()...), is counted while a call
 * under test runs.  Sanitizers own malloc(): under them it skips.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <check.h>
#include <errno.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"

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

/*
 * Each collect form, with and without clean, and dirty_clean(), on every
 * backend: exact answers, and not one allocation in the process meanwhile.
 */
START_TEST(test_collect_allocates_nothing)
{
#if COUNTS_ALLOCATIONS
	struct dirty_tracker *t = tracker_new();
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
		ck_assert_msg(atomic_load(&allocations) == 0, "round %zu: %lu allocations", round,
			      atomic_load(&allocations));
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

int main(void)
{
	SRunner *sr;
	int failed;

	test_backend(); /* exits 77 with the reason if it cannot run here */
	if (!COUNTS_ALLOCATIONS) {
		printf("SKIP: a sanitizer replaces malloc(); allocations cannot be counted\n");
		return EXIT_SKIP;
	}
	mem_map_no_thp = true;
	sr = srunner_create(collect_suite());
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
