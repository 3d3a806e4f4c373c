/* SPDX-License-Identifier: MIT */
/*
 * Exactness where the kernel keeps no trace: pages dropped after a collect
 * under DIRTY_TRACKER_SPARSE (uffd-async), whose contents changed to zeroes
 * though nobody wrote them.  $DIRTY_TEST_SUITE picks:
 *   drops    MADV_DONTNEED on every kind of memory, resumed and given-back
 *            collects, a mirror kept equal to memory under racing drops;
 *   free     MADV_FREE pages that the kernel then frees (MADV_PAGEOUT);
 *            skipped where the kernel does not free them so;
 *   hugetlb  hugetlb pages dropped; skipped without reserved huge pages.
 * Skipped as a whole, with the reason, when uffd-async cannot run here
 * (tests/tap.h).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif

#define PAGEMAP_PRESENT (UINT64_C(1) << 63)

/* A sparse tracker of the memory. */
static struct dirty_tracker *sparse_tracker(void)
{
	return tracker_new_flags(DIRTY_TRACKER_SPARSE);
}

static void drop(char *mem, size_t first, size_t count)
{
	ck_assert_int_eq(madvise(mem + first * page_size, count * page_size, MADV_DONTNEED), 0);
}

/* Is the page of this process at addr present in memory? */
static bool present(const void *addr)
{
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	uint64_t entry = 0;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &entry, sizeof(entry),
			       (off_t)((uintptr_t)addr / page_size * sizeof(entry))),
			 (ssize_t)sizeof(entry));
	close(fd);
	return entry & PAGEMAP_PRESENT;
}

/* The same outside a test (no ck_assert): false if pagemap cannot say. */
static bool present_no_check(const void *addr)
{
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	uint64_t entry = 0;
	ssize_t n = -1;

	if (fd >= 0) {
		n = pread(fd, &entry, sizeof(entry),
			  (off_t)((uintptr_t)addr / page_size * sizeof(entry)));
		close(fd);
	}
	return n == (ssize_t)sizeof(entry) && (entry & PAGEMAP_PRESENT);
}

static bool page_is_zero(const char *page)
{
	for (size_t i = 0; i < page_size; i++)
		if (page[i])
			return false;
	return true;
}

/* Collect with clean, max runs at a time, until the whole range is done. */
static size_t collect_in_steps(struct dirty_tracker *t, char *mem, size_t len, size_t max,
			       struct dirty_range *out, size_t out_max)
{
	char *cur = mem;
	size_t total = 0;

	while (cur < mem + len) {
		void *next;
		ssize_t n = dirty_collect(t, cur, (size_t)(mem + len - cur), DIRTY_COLLECT_CLEAN,
					  out + total, max, &next);

		ck_assert_msg(n >= 0, "dirty_collect: %s", strerror((int)-n));
		ck_assert((char *)next > cur || n > 0);
		/* a run cut by a full array goes on in the next call: one run again */
		for (ssize_t i = 0; i < n; i++) {
			if (total && (char *)out[total - 1].start + out[total - 1].len ==
					     (char *)out[total].start) {
				out[total - 1].len += out[total].len;
				memmove(out + total, out + total + 1, (size_t)(n - i - 1) * sizeof(*out));
				n--, i--;
				continue;
			}
			total++;
		}
		ck_assert_uint_lt(total + max, out_max);
		cur = next;
	}
	return total;
}

static void assert_runs(const char *mem, const struct dirty_range *runs, size_t n,
			const size_t (*want)[2], size_t nwant)
{
	ck_assert_msg(n == nwant, "%zu runs, expected %zu", n, nwant);
	for (size_t i = 0; i < n; i++) {
		ck_assert_msg((char *)runs[i].start == mem + want[i][0] * page_size &&
				      runs[i].len == (want[i][1] - want[i][0]) * page_size,
			      "run %zu: pages %zu-%zu, expected %zu-%zu", i,
			      (size_t)((char *)runs[i].start - mem) / page_size,
			      (size_t)((char *)runs[i].start - mem + runs[i].len) / page_size,
			      want[i][0], want[i][1]);
	}
}

/* Private anonymous memory, populated with a pattern (no page is zeroes). */
static char *map_populated(size_t npages)
{
	char *mem = mmap(NULL, npages * page_size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	ck_assert_ptr_ne(mem, MAP_FAILED);
	madvise(mem, npages * page_size, MADV_NOHUGEPAGE);
	for (size_t i = 0; i < npages; i++)
		memset(mem + i * page_size, (int)(i % 255) + 1, page_size);
	return mem;
}

/* ---- drops ---- */

/*
 * The case of issue 13: written, collected and cleaned, then dropped.  The
 * drop is reported by every collect until one cleans, then by none.
 */
START_TEST(test_dropped_after_clean)
{
	static const size_t want[][2] = { { 3, 4 }, { 10, 13 }, { 40, 41 } };
	struct dirty_range runs[16];
	char *mem = map_populated(64);
	struct dirty_tracker *t = sparse_tracker();

	ck_assert_int_eq(dirty_track(t, mem, 64 * page_size), 0);
	ck_assert_int_eq(dirty_collect(t, mem, 64 * page_size, 0, runs, 16, NULL), 0);
	drop(mem, 3, 1);
	drop(mem, 10, 3);
	drop(mem, 40, 1);
	ck_assert(page_is_zero(mem + 10 * page_size)); /* changed: read as zeroes */
	assert_runs(mem, runs, (size_t)dirty_collect(t, mem, 64 * page_size, 0, runs, 16, NULL),
		    want, 3);
	assert_runs(mem, runs, (size_t)dirty_collect(t, mem, 64 * page_size, 0, runs, 16, NULL),
		    want, 3);
	assert_runs(mem, runs,
		    (size_t)dirty_collect(t, mem, 64 * page_size, DIRTY_COLLECT_CLEAN, runs, 16, NULL),
		    want, 3);
	ck_assert_int_eq(dirty_collect(t, mem, 64 * page_size, 0, runs, 16, NULL), 0);
	/* still holes, still zeroes: no change since */
	ck_assert_int_eq(dirty_collect(t, mem, 64 * page_size, DIRTY_COLLECT_CLEAN, runs, 16, NULL), 0);
	ck_assert_int_eq(dirty_untrack(t, mem, 64 * page_size), 0);
	dirty_tracker_free(t);
	munmap(mem, 64 * page_size);
}
END_TEST

/* Written after the last clean, then dropped: reported once, with the other writes. */
START_TEST(test_dropped_after_collect)
{
	static const size_t want[][2] = { { 5, 8 } };
	struct dirty_range runs[16];
	char *mem = map_populated(32);
	struct dirty_tracker *t = sparse_tracker();
	volatile char c;

	ck_assert_int_eq(dirty_track(t, mem, 32 * page_size), 0);
	mem[5 * page_size] = 9;
	ck_assert_int_eq(dirty_collect(t, mem, 32 * page_size, DIRTY_COLLECT_CLEAN, runs, 16, NULL),
			 1);
	/* dropped, then read (the shared zero page), written, or left a hole */
	drop(mem, 5, 3);
	c = mem[5 * page_size];
	(void)c;
	mem[6 * page_size + 1] = 1;
	assert_runs(mem, runs,
		    (size_t)dirty_collect(t, mem, 32 * page_size, DIRTY_COLLECT_CLEAN, runs, 16, NULL),
		    want, 1);
	ck_assert_int_eq(dirty_collect(t, mem, 32 * page_size, DIRTY_COLLECT_CLEAN, runs, 16, NULL), 0);
	/* the written one held data at that clean: dropped again, reported again */
	drop(mem, 6, 1);
	assert_runs(mem, runs,
		    (size_t)dirty_collect(t, mem, 32 * page_size, DIRTY_COLLECT_CLEAN, runs, 16, NULL),
		    (const size_t[][2]){ { 6, 7 } }, 1);
	dirty_tracker_free(t);
	munmap(mem, 32 * page_size);
}
END_TEST

/*
 * A page reported dropped is read by the caller after the collect, which may
 * see what a write put there meanwhile: that write, and the page dropped
 * again, must be reported by the next collect, though the page was a hole
 * when the first one cleaned it.  (Dropped and read in between: the zero
 * page; left alone: no more reports.)
 */
START_TEST(test_reported_drop_written_again)
{
	struct dirty_range runs[8];
	char *mem = map_populated(16), copy;
	struct dirty_tracker *t = sparse_tracker();
	volatile char c;

	ck_assert_int_eq(dirty_track(t, mem, 16 * page_size), 0);
	drop(mem, 3, 1);
	drop(mem, 7, 1);
	c = mem[7 * page_size]; /* the zero page */
	(void)c;
	assert_runs(mem, runs,
		    (size_t)dirty_collect(t, mem, 16 * page_size, DIRTY_COLLECT_CLEAN, runs, 8, NULL),
		    (const size_t[][2]){ { 3, 4 }, { 7, 8 } }, 2);
	/* after the collect: written, the caller copies it, dropped again */
	mem[3 * page_size] = 5;
	mem[7 * page_size] = 5;
	copy = mem[3 * page_size];
	ck_assert_int_eq(copy, 5);
	drop(mem, 3, 1);
	drop(mem, 7, 1);
	assert_runs(mem, runs,
		    (size_t)dirty_collect(t, mem, 16 * page_size, DIRTY_COLLECT_CLEAN, runs, 8, NULL),
		    (const size_t[][2]){ { 3, 4 }, { 7, 8 } }, 2);
	/* holes now, left alone, or only read: nothing more */
	c = mem[7 * page_size];
	ck_assert_int_eq(dirty_collect(t, mem, 16 * page_size, DIRTY_COLLECT_CLEAN, runs, 8, NULL), 0);
	ck_assert_int_eq(dirty_collect(t, mem, 16 * page_size, DIRTY_COLLECT_CLEAN, runs, 8, NULL), 0);
	/* and written again, reported again */
	mem[3 * page_size] = 6;
	assert_runs(mem, runs,
		    (size_t)dirty_collect(t, mem, 16 * page_size, DIRTY_COLLECT_CLEAN, runs, 8, NULL),
		    (const size_t[][2]){ { 3, 4 } }, 1);
	dirty_tracker_free(t);
	munmap(mem, 16 * page_size);
}
END_TEST

/*
 * Drops and writes interleaved, collected one run at a time and as a bitmap:
 * every form gives the same runs, in order, each once.
 */
static const size_t resumed_written[] = { 1, 50, 51, 100, 200 };
static const size_t resumed_dropped[] = { 2, 3, 60, 101, 150, 255 };

/* Every page clean and holding data; then the writes and the drops. */
static void resumed_prepare(struct dirty_tracker *t, char *mem, size_t len)
{
	for (size_t i = 0; i < 6; i++)
		mem[resumed_dropped[i] * page_size] = 1;
	ck_assert_int_eq(dirty_clean(t, mem, len), 0);
	for (size_t i = 0; i < 5; i++)
		mem[resumed_written[i] * page_size] ^= 0x40;
	for (size_t i = 0; i < 6; i++)
		drop(mem, resumed_dropped[i], 1);
}

START_TEST(test_dropped_resumed)
{
	static const size_t want[][2] = { { 1, 4 },     { 50, 52 },   { 60, 61 }, { 100, 102 },
					  { 150, 151 }, { 200, 201 }, { 255, 256 } };
	size_t len = 256 * page_size;
	struct dirty_range runs[64];
	uint64_t bitmap[4], want_bitmap[4] = { 0 };
	char *mem = map_populated(256);
	struct dirty_tracker *t = sparse_tracker();

	for (size_t i = 0; i < 7; i++)
		for (size_t p = want[i][0]; p < want[i][1]; p++)
			want_bitmap[p / 64] |= UINT64_C(1) << (p % 64);
	ck_assert_int_eq(dirty_track(t, mem, len), 0);
	for (size_t max = 1; max <= 4; max++) {
		resumed_prepare(t, mem, len);
		/* without clean: the same answer twice */
		ck_assert_int_eq(dirty_collect_bitmap(t, mem, len, 0, bitmap), 0);
		ck_assert_mem_eq(bitmap, want_bitmap, sizeof(bitmap));
		ck_assert_int_eq(dirty_collect_bitmap(t, mem, len, 0, bitmap), 0);
		ck_assert_mem_eq(bitmap, want_bitmap, sizeof(bitmap));
		if (max == 4) {
			ck_assert_int_eq(dirty_collect_bitmap(t, mem, len, DIRTY_COLLECT_CLEAN, bitmap), 0);
			ck_assert_mem_eq(bitmap, want_bitmap, sizeof(bitmap));
		} else {
			assert_runs(mem, runs, collect_in_steps(t, mem, len, max, runs, 64), want, 7);
		}
		ck_assert_int_eq(dirty_collect(t, mem, len, 0, runs, 64, NULL), 0);
	}
	dirty_tracker_free(t);
	munmap(mem, len);
}
END_TEST

static int stop_at_first(void *start, size_t len, void *userdata)
{
	(void)start;
	(void)len;
	++*(int *)userdata;
	return 1;
}

/* Dropped pages that a collect took and could not deliver are reported again. */
START_TEST(test_dropped_given_back)
{
	struct dirty_range runs[8];
	char *mem = map_populated(16);
	struct dirty_tracker *t = sparse_tracker();
	int calls = 0;

	ck_assert_int_eq(dirty_track(t, mem, 16 * page_size), 0);
	drop(mem, 5, 1);
	drop(mem, 9, 2);
	ck_assert_int_eq(dirty_collect_each(t, mem, 16 * page_size, DIRTY_COLLECT_CLEAN,
					    stop_at_first, &calls), 1);
	ck_assert_int_eq(calls, 1);
	assert_runs(mem, runs,
		    (size_t)dirty_collect(t, mem, 16 * page_size, DIRTY_COLLECT_CLEAN, runs, 8, NULL),
		    (const size_t[][2]){ { 9, 11 } }, 1);
	ck_assert_int_eq(dirty_collect(t, mem, 16 * page_size, 0, runs, 8, NULL), 0);
	dirty_tracker_free(t);
	munmap(mem, 16 * page_size);
}
END_TEST

/* A clean forgets drops as it forgets writes; a part of a region, the rest keeps them. */
START_TEST(test_clean_forgets_drops)
{
	struct dirty_range runs[8];
	char *mem = map_populated(16);
	struct dirty_tracker *t = sparse_tracker();

	ck_assert_int_eq(dirty_track(t, mem, 16 * page_size), 0);
	drop(mem, 2, 1);
	drop(mem, 12, 1);
	ck_assert_int_eq(dirty_clean(t, mem, 8 * page_size), 0);
	assert_runs(mem, runs, (size_t)dirty_collect(t, mem, 16 * page_size, 0, runs, 8, NULL),
		    (const size_t[][2]){ { 12, 13 } }, 1);
	ck_assert_int_eq(dirty_clean(t, mem, 16 * page_size), 0);
	ck_assert_int_eq(dirty_collect(t, mem, 16 * page_size, 0, runs, 8, NULL), 0);
	dirty_tracker_free(t);
	munmap(mem, 16 * page_size);
}
END_TEST

/*
 * Shared memory keeps its pages when a mapping drops them: no change, not
 * reported; a page written and then dropped is (the write).
 */
START_TEST(test_shared_drop_keeps_contents)
{
	struct dirty_range runs[8];
	struct test_mem m;
	struct dirty_tracker *t = sparse_tracker();
	char why[256];

	ck_assert_msg(mem_map(&m, (enum test_mem_kind)_i, 16, why, sizeof(why)), "%s", why);
	ck_assert_int_eq(dirty_track(t, m.addr, m.len), 0);
	drop(m.addr, 4, 2);
	ck_assert_int_eq(m.addr[4 * page_size], 4); /* mem_map's pattern */
	ck_assert_int_eq(dirty_collect(t, m.addr, m.len, 0, runs, 8, NULL), 0);
	m.addr[9 * page_size] = 1;
	drop(m.addr, 9, 1);
	assert_runs(m.addr, runs,
		    (size_t)dirty_collect(t, m.addr, m.len, DIRTY_COLLECT_CLEAN, runs, 8, NULL),
		    (const size_t[][2]){ { 9, 10 } }, 1);
	ck_assert_int_eq(dirty_collect(t, m.addr, m.len, 0, runs, 8, NULL), 0);
	dirty_tracker_free(t);
	mem_unmap(&m);
}
END_TEST

/*
 * A private file mapping: a written page is a private copy, and dropping it
 * gives the file's contents back (reported); dropping a page only read
 * changes nothing (not reported).
 */
START_TEST(test_private_file_drop)
{
	char path[] = "libdirty-exact-XXXXXX", block[4096];
	struct dirty_range runs[8];
	struct dirty_tracker *t = sparse_tracker();
	int fd = mkstemp(path);
	size_t len = 16 * page_size;
	char *mem;
	volatile char c;

	ck_assert_int_ge(fd, 0);
	unlink(path);
	memset(block, 7, sizeof(block));
	for (size_t off = 0; off < len; off += sizeof(block))
		ck_assert_int_eq(pwrite(fd, block, sizeof(block), (off_t)off), (ssize_t)sizeof(block));
	mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	ck_assert_ptr_ne(mem, MAP_FAILED);
	for (size_t i = 0; i < 16; i++)
		c = mem[i * page_size];
	(void)c;
	mem[2 * page_size] = 1;
	mem[3 * page_size] = 1;
	ck_assert_int_eq(dirty_track(t, mem, len), 0);
	drop(mem, 2, 1); /* a private copy: the file's bytes again */
	drop(mem, 5, 1); /* the file's page: the same bytes */
	ck_assert_int_eq(mem[2 * page_size], 7);
	assert_runs(mem, runs, (size_t)dirty_collect(t, mem, len, DIRTY_COLLECT_CLEAN, runs, 8, NULL),
		    (const size_t[][2]){ { 2, 3 } }, 1);
	ck_assert_int_eq(dirty_collect(t, mem, len, 0, runs, 8, NULL), 0);
	dirty_tracker_free(t);
	munmap(mem, len);
	close(fd);
}
END_TEST

/* A transparent huge page partly dropped: exactly the dropped base pages. */
START_TEST(test_thp_partly_dropped)
{
	size_t huge = thp_page_size(), len = 2 * huge;
	char *raw, *mem, why[128];
	struct dirty_range runs[8];
	struct dirty_tracker *t;

	if (!thp_enabled(why, sizeof(why)))
		test_skip("%s", why);
	t = sparse_tracker();
	raw = mmap(NULL, len + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(raw, MAP_FAILED);
	mem = (char *)(((uintptr_t)raw + huge - 1) & ~(uintptr_t)(huge - 1));
	ck_assert_int_eq(madvise(mem, len, MADV_HUGEPAGE), 0);
	memset(mem, 3, len);
	/* THP is on (checked), but a huge page is the kernel's to give */
	if (!thp_backed(mem, len)) {
		dirty_tracker_free(t);
		munmap(raw, len + huge);
		test_skip("the kernel gave no huge pages for these %zu MiB (memory fragmented?)",
			  len >> 20);
	}
	ck_assert_int_eq(dirty_track(t, mem, len), 0);
	drop(mem, 100, 3);
	drop(mem, 600, 1);
	assert_runs(mem, runs, (size_t)dirty_collect(t, mem, len, DIRTY_COLLECT_CLEAN, runs, 8, NULL),
		    (const size_t[][2]){ { 100, 103 }, { 600, 601 } }, 2);
	ck_assert_int_eq(dirty_collect(t, mem, len, 0, runs, 8, NULL), 0);
	dirty_tracker_free(t);
	munmap(raw, len + huge);
}
END_TEST

/*
 * The no-lost-change check: threads write, drop and read pages at random
 * while the main thread collects-and-cleans and copies what is reported
 * into a mirror; once they stop, one more collect, and the mirror must
 * equal the memory.
 */
#define MIRROR_PAGES 64

struct churn {
	char *mem;
	atomic_bool stop;
	unsigned seed;
	atomic_ulong drops, ops;
};

static void *churn_main(void *p)
{
	struct churn *c = p;
	unsigned x = c->seed;

	while (!atomic_load(&c->stop)) {
		size_t page;
		volatile char v;

		x = x * 1103515245u + 12345u;
		/* half of it on a few pages: drops and writes of one page meet */
		page = (x >> 8) % (x & 1 ? MIRROR_PAGES : 8);
		switch ((x >> 24) % 8) {
		case 0:
		case 1:
		case 2:
			madvise(c->mem + page * page_size, page_size, MADV_DONTNEED);
			atomic_fetch_add(&c->drops, 1);
			break;
		case 3:
			madvise(c->mem + page * page_size, page_size, MADV_FREE);
			break;
		case 4:
			v = atomic_load_explicit((_Atomic char *)&c->mem[page * page_size],
						 memory_order_relaxed);
			(void)v;
			break;
		default:
			atomic_store_explicit((_Atomic char *)&c->mem[page * page_size +
								     (x >> 4) % page_size],
					      (char)(x >> 16), memory_order_relaxed);
			break;
		}
		atomic_fetch_add(&c->ops, 1);
	}
	return NULL;
}

/*
 * Copy pages that the threads may be writing: racing by design (a write
 * after the collect is the next collect's), so relaxed atomic loads, a
 * word at a time, which ThreadSanitizer does not take for a race.
 */
static void copy_racing(char *dst, const char *src, size_t len)
{
	for (size_t i = 0; i < len; i += sizeof(uint64_t)) {
		uint64_t w = atomic_load_explicit((_Atomic uint64_t *)(src + i),
						  memory_order_relaxed);

		memcpy(dst + i, &w, sizeof(w));
	}
}

static void mirror_collect(struct dirty_tracker *t, char *mem, char *mirror, bool yield)
{
	struct dirty_range runs[64];
	char *cur = mem;

	while (cur < mem + MIRROR_PAGES * page_size) {
		void *next;
		ssize_t n = dirty_collect(t, cur, (size_t)(mem + MIRROR_PAGES * page_size - cur),
					  DIRTY_COLLECT_CLEAN, runs, 64, &next);

		ck_assert_int_ge(n, 0);
		/*
		 * The caller reads the pages some time after the call: let the
		 * threads write and drop meanwhile (a wider window, not an order)
		 */
		if (yield)
			sched_yield();
		for (volatile int spin = 0; spin < 20000; spin++)
			;
		for (ssize_t i = 0; i < n; i++)
			copy_racing(mirror + ((char *)runs[i].start - mem), runs[i].start,
				    runs[i].len);
		cur = next;
	}
}

START_TEST(test_mirror_under_drops)
{
	struct churn c[2];
	pthread_t threads[2];
	char *mem = map_populated(MIRROR_PAGES), *mirror = malloc(MIRROR_PAGES * page_size);
	struct dirty_tracker *t = sparse_tracker();

	ck_assert_ptr_nonnull(mirror);
	ck_assert_int_eq(dirty_track(t, mem, MIRROR_PAGES * page_size), 0);
	memcpy(mirror, mem, MIRROR_PAGES * page_size);
	for (int i = 0; i < 2; i++) {
		c[i] = (struct churn){ .mem = mem, .seed = 17u + (unsigned)i };
		ck_assert_int_eq(pthread_create(&threads[i], NULL, churn_main, &c[i]), 0);
	}
	/* at least so many rounds, and so many drops racing with them */
	for (int round = 0; round < 4000 || atomic_load(&c[0].drops) < 5000 ||
			       atomic_load(&c[1].drops) < 5000; round++) {
		mirror_collect(t, mem, mirror, round % 16 == 0);
		/* reclaim what MADV_FREE left, now and then: freed pages read as zeroes */
		if (round % 64 == 0)
			madvise(mem, MIRROR_PAGES * page_size, MADV_PAGEOUT);
	}
	for (int i = 0; i < 2; i++) {
		atomic_store(&c[i].stop, true);
		pthread_join(threads[i], NULL);
	}
	/* freed meanwhile or not, what MADV_FREE left is settled by the last reclaim */
	madvise(mem, MIRROR_PAGES * page_size, MADV_PAGEOUT);
	mirror_collect(t, mem, mirror, false);
	printf("mirror: %lu and %lu operations, %lu and %lu drops\n", atomic_load(&c[0].ops),
	       atomic_load(&c[1].ops), atomic_load(&c[0].drops), atomic_load(&c[1].drops));
	for (size_t i = 0; i < MIRROR_PAGES; i++)
		ck_assert_msg(!memcmp(mirror + i * page_size, mem + i * page_size, page_size),
			      "page %zu: the mirror missed a change", i);
	dirty_tracker_free(t);
	munmap(mem, MIRROR_PAGES * page_size);
	free(mirror);
}
END_TEST

/* ---- free: MADV_FREE, then the kernel frees the pages ---- */

/*
 * MADV_FREE and MADV_PAGEOUT drain only this CPU's batches of new and of
 * lazy-free pages (lru_add_drain()): a page faulted in, or marked, on the
 * other CPU may not be on the LRU yet, and stays as it was.  So the test
 * runs on one CPU from writing the pages to reclaiming them.  Best effort:
 * where the affinity cannot change, the kernel's answer is the test's.
 */
static bool on_one_cpu(cpu_set_t *before)
{
	int cpu = sched_getcpu();
	cpu_set_t one;

	if (cpu < 0 || sched_getaffinity(0, sizeof(*before), before))
		return false;
	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	return sched_setaffinity(0, sizeof(one), &one) == 0;
}

static void on_cpus(const cpu_set_t *before, bool changed)
{
	if (changed)
		(void)sched_setaffinity(0, sizeof(*before), before);
}

/*
 * MADV_FREE leaves the page, and its contents, until the kernel needs the
 * memory: no change yet, not reported.  MADV_PAGEOUT makes the kernel free
 * such pages at once (shrink_folio_list() frees a clean lazy-free anonymous
 * folio without swap): now they read as zeroes and are reported.
 */
START_TEST(test_free_then_reclaimed)
{
	struct dirty_range runs[8];
	cpu_set_t cpus;
	bool pinned = on_one_cpu(&cpus);
	char *mem = map_populated(32);
	struct dirty_tracker *t = sparse_tracker();

	ck_assert_int_eq(dirty_track(t, mem, 32 * page_size), 0);
	ck_assert_int_eq(madvise(mem + 8 * page_size, 8 * page_size, MADV_FREE), 0);
	ck_assert_int_eq(dirty_collect(t, mem, 32 * page_size, 0, runs, 8, NULL), 0);
	ck_assert_int_eq(madvise(mem + 8 * page_size, 8 * page_size, MADV_PAGEOUT), 0);
	on_cpus(&cpus, pinned);
	for (size_t i = 8; i < 16; i++)
		ck_assert_msg(!present(mem + i * page_size), "page %zu was not freed", i);
	ck_assert(page_is_zero(mem + 8 * page_size));
	assert_runs(mem, runs,
		    (size_t)dirty_collect(t, mem, 32 * page_size, DIRTY_COLLECT_CLEAN, runs, 8, NULL),
		    (const size_t[][2]){ { 8, 16 } }, 1);
	ck_assert_int_eq(dirty_collect(t, mem, 32 * page_size, 0, runs, 8, NULL), 0);
	dirty_tracker_free(t);
	munmap(mem, 32 * page_size);
}
END_TEST

/* Does MADV_FREE then MADV_PAGEOUT free pages here?  NULL if so, else why not. */
static const char *pageout_frees(void)
{
	static char why[128];
	char *mem = mmap(NULL, 4 * page_size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	const char *answer = NULL;
	cpu_set_t cpus;
	bool pinned;

	if (mem == MAP_FAILED)
		return "cannot map memory";
	pinned = on_one_cpu(&cpus);
	memset(mem, 1, 4 * page_size);
	if (madvise(mem, 4 * page_size, MADV_FREE) || madvise(mem, 4 * page_size, MADV_PAGEOUT))
		snprintf(why, sizeof(why), "MADV_FREE/MADV_PAGEOUT: %s", strerror(errno));
	else if (present_no_check(mem))
		snprintf(why, sizeof(why), "MADV_PAGEOUT left a MADV_FREE page in memory");
	on_cpus(&cpus, pinned);
	answer = why[0] ? why : NULL;
	munmap(mem, 4 * page_size);
	return answer;
}

/* ---- hugetlb ---- */

/* A huge page dropped after a clean: the whole huge page is reported. */
START_TEST(test_hugetlb_dropped)
{
	struct dirty_range runs[8];
	struct test_mem m;
	struct dirty_tracker *t = sparse_tracker();
	char why[256];

	ck_assert_msg(mem_map(&m, MEM_HUGETLB, 4, why, sizeof(why)), "%s", why);
	ck_assert_int_eq(dirty_track(t, m.addr, m.len), 0);
	ck_assert_int_eq(madvise(m.addr + m.page, m.page, MADV_DONTNEED), 0);
	ck_assert_int_eq(dirty_collect(t, m.addr, m.len, DIRTY_COLLECT_CLEAN, runs, 8, NULL), 1);
	ck_assert_ptr_eq(runs[0].start, m.addr + m.page);
	ck_assert_uint_eq(runs[0].len, m.page);
	ck_assert_int_eq(dirty_collect(t, m.addr, m.len, 0, runs, 8, NULL), 0);
	dirty_tracker_free(t);
	mem_unmap(&m);
}
END_TEST

int main(void)
{
	const char *suite = getenv("DIRTY_TEST_SUITE");
	Suite *s;
	TCase *tc;
	char why[256];

	tap_begin();
	setenv("DIRTY_TEST_BACKEND", "uffd-async", 1);
	test_backend(); /* skips it all, with the reason, if uffd-async is not usable */
	if (!suite)
		suite = "drops";
	s = suite_create(suite);
	tc = tcase_create(suite);
	tcase_set_timeout(tc, 120);
	if (!strcmp(suite, "drops")) {
		tcase_add_test(tc, test_dropped_after_clean);
		tcase_add_test(tc, test_dropped_after_collect);
		tcase_add_test(tc, test_reported_drop_written_again);
		tcase_add_test(tc, test_dropped_resumed);
		tcase_add_test(tc, test_dropped_given_back);
		tcase_add_test(tc, test_clean_forgets_drops);
		tcase_add_loop_test(tc, test_shared_drop_keeps_contents, MEM_SHARED_ANON, MEM_FILE + 1);
		tcase_add_test(tc, test_private_file_drop);
		tcase_add_test(tc, test_thp_partly_dropped);
		tcase_add_test(tc, test_mirror_under_drops);
	} else if (!strcmp(suite, "free")) {
		const char *not = pageout_frees();

		if (not)
			tap_skip_all("%s: this kernel does not free MADV_FREE pages on request", not);
		tcase_add_test(tc, test_free_then_reclaimed);
	} else if (!strcmp(suite, "hugetlb")) {
		struct test_mem m;

		if (!mem_map(&m, MEM_HUGETLB, 4, why, sizeof(why)))
			tap_skip_all("%s", why);
		mem_unmap(&m);
		tcase_add_test(tc, test_hugetlb_dropped);
	} else {
		fprintf(stderr, "unknown DIRTY_TEST_SUITE %s\n", suite);
		return 1;
	}
	suite_add_tcase(s, tc);
	return tap_run(srunner_create(s));
}
