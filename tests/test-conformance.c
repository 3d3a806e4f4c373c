/* SPDX-License-Identifier: MIT */
/*
 * The conformance suite: the contract of include/libdirty.h, asserted the same
 * way for every backend.  $DIRTY_TEST_BACKEND names the backend and
 * $DIRTY_TEST_SUITE one of: core, thp, hugetlb, stress.  A backend or a kind
 * of memory this machine lacks skips the whole program, a case that cannot
 * run here skips that case, each with the reason (tests/tap.h).
 */
#include <assert.h>
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <linux/magic.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "config.h"
#include "common.h"
#include "linux-compat.h"

static const char *backend;

/* userfaultfd write-protects shared memory and hugetlb from 5.19 (WP_HUGETLBFS_SHMEM) */
static bool uffd_wp_shmem(void)
{
	char list[512];

	return dirty_kernel_uffd_features(list, sizeof(list)) > 0 &&
	       strstr(list, "WP_HUGETLBFS_SHMEM");
}

/*
 * Memory a backend refuses by design, because the kernel mechanism cannot
 * track it: synchronous userfaultfd write-protection does not take regular
 * files (nor shared memory and hugetlb before 5.19), soft-dirty does not
 * work on hugetlb.  Documented at dirty_track() in libdirty.h.
 */
static bool kind_refused(enum test_mem_kind kind)
{
	/* the file kind's file is made in the working directory */
	struct statfs sf;
	bool file_is_shmem = !statfs(".", &sf) && sf.f_type == TMPFS_MAGIC;

	return (!strcmp(backend, "uffd-sync") && kind == MEM_FILE) ||
	       (!strcmp(backend, "uffd-sync") && kind != MEM_ANON && !uffd_wp_shmem()) ||
	       (!strcmp(backend, "soft-dirty") && kind == MEM_HUGETLB) ||
	       (!strcmp(backend, "mapping") && kind != MEM_SHARED_ANON && kind != MEM_MEMFD &&
		!(kind == MEM_FILE && file_is_shmem));
}

/*
 * The memory the kind-independent tests use: private anonymous, except under
 * mapping, which tracks shared memory only (files in every process): there
 * MAP_SHARED | MAP_ANONYMOUS (mem_map_shared makes map_isolated() so too).
 */
static enum test_mem_kind base_kind = MEM_ANON;
static int base_flags = MAP_PRIVATE | MAP_ANONYMOUS;

static bool is(const char *name)
{
	return !strcmp(backend, name);
}

/*
 * The mapping backend on the module, which reads page tables: it does not
 * see writes whose entries are gone, and it reports a page that a read fault
 * mapped, once (documented in libdirty.h).
 */
static bool mapping_reads_page_tables(struct dirty_tracker *t)
{
	return is("mapping") && !(dirty_tracker_sees(t) & DIRTY_SEES_GONE_MAPPINGS);
}

/* The refusal is exact: -EOPNOTSUPP, and nothing tracked. */
START_TEST(test_refused_kind)
{
	struct dirty_tracker *t = tracker_new();
	struct test_mem m;
	char why[256];

	ck_assert_msg(mem_map(&m, (enum test_mem_kind)_i, _i == MEM_HUGETLB ? 1 : 8,
			      why, sizeof(why)), "%s", why);
	ck_assert_int_eq(dirty_track(t, m.addr, m.len), -EOPNOTSUPP);
	ck_assert_int_eq(dirty_clean(t, m.addr, m.len), -ENOENT);
	dirty_tracker_free(t);
	mem_unmap(&m);
}
END_TEST

/* Track fresh memory of a kind; fails the test if the kind cannot be mapped. */
static struct dirty_tracker *setup(struct test_mem *m, enum test_mem_kind kind, size_t npages)
{
	struct dirty_tracker *t = tracker_new();
	char why[256];
	int err;

	ck_assert_msg(mem_map(m, kind, npages, why, sizeof(why)), "%s", why);
	err = dirty_track(t, m->addr, m->len);
	ck_assert_msg(err == 0, "dirty_track(%s): %s", mem_kind_name(kind), strerror(-err));
	return t;
}

static void teardown(struct dirty_tracker *t, struct test_mem *m)
{
	ck_assert_int_eq(dirty_untrack(t, m->addr, m->len), 0);
	dirty_tracker_free(t);
	mem_unmap(m);
}

static void write_pages(struct test_mem *m, const size_t *pages, size_t n)
{
	for (size_t i = 0; i < n; i++)
		m->addr[pages[i] * m->page + 17] ^= 0x5a;
}

/* Assert that runs are exactly the expected [first, last) page runs. */
static void assert_runs(const struct test_mem *m, const struct dirty_range *runs, size_t n,
			const size_t (*want)[2], size_t nwant)
{
	ck_assert_msg(n == nwant, "%s: %zu runs, expected %zu", mem_kind_name(m->kind), n, nwant);
	for (size_t i = 0; i < n; i++) {
		ck_assert_ptr_eq(runs[i].start, m->addr + want[i][0] * m->page);
		ck_assert_uint_eq(runs[i].len, (want[i][1] - want[i][0]) * m->page);
	}
}

static size_t collect(struct dirty_tracker *t, struct test_mem *m, unsigned flags,
		      struct dirty_range *out, size_t max)
{
	return collect_all(t, m->addr, m->len, flags, out, max);
}

/* ---- exact answers ---- */

START_TEST(test_exact_runs)
{
	static const size_t written[] = { 0, 1, 2, 7, 61, 62, 63 };
	static const size_t want[][2] = { { 0, 3 }, { 7, 8 }, { 61, 64 } };
	struct dirty_range runs[64];
	struct test_mem m;
	struct dirty_tracker *t = setup(&m, (enum test_mem_kind)_i, 64);

	ck_assert_uint_eq(collect(t, &m, 0, runs, 64), 0);
	write_pages(&m, written, 7);
	/* without clean: the same answer twice */
	assert_runs(&m, runs, collect(t, &m, 0, runs, 64), want, 3);
	assert_runs(&m, runs, collect(t, &m, 0, runs, 64), want, 3);
	/* with clean: the answer once, then nothing */
	assert_runs(&m, runs, collect(t, &m, DIRTY_COLLECT_CLEAN, runs, 64), want, 3);
	ck_assert_uint_eq(collect(t, &m, 0, runs, 64), 0);
	/* and tracking goes on: a write after the clean is seen */
	write_pages(&m, written + 3, 1);
	assert_runs(&m, runs, collect(t, &m, DIRTY_COLLECT_CLEAN, runs, 64), want + 1, 1);
	teardown(t, &m);
}
END_TEST

START_TEST(test_bitmap_equals_runs)
{
	static const size_t written[] = { 3, 4, 5, 64, 65, 127, 128, 199 };
	struct dirty_range runs[200];
	uint64_t bitmap[4], expect[4] = { 0 };
	struct test_mem m;
	struct dirty_tracker *t = setup(&m, (enum test_mem_kind)_i, 200);
	size_t n, i, b, base_per_page = m.page / page_size;

	write_pages(&m, written, 8);
	n = collect(t, &m, 0, runs, 200);
	for (i = 0; i < n; i++)
		for (b = (size_t)((char *)runs[i].start - m.addr) / page_size;
		     b < (size_t)((char *)runs[i].start - m.addr + runs[i].len) / page_size; b++)
			expect[b / 64] |= UINT64_C(1) << (b % 64);
	ck_assert_uint_eq(base_per_page, 1);
	memset(bitmap, 0xa5, sizeof(bitmap));
	ck_assert_int_eq(dirty_collect_bitmap(t, m.addr, m.len, DIRTY_COLLECT_CLEAN, bitmap), 0);
	ck_assert_mem_eq(bitmap, expect, sizeof(bitmap));
	ck_assert_uint_eq(expect[0], UINT64_C(7) << 3);
	/* cleaned: every bit (including the unused tail of the last word) is zero */
	ck_assert_int_eq(dirty_collect_bitmap(t, m.addr, m.len, 0, bitmap), 0);
	for (i = 0; i < 4; i++)
		ck_assert_uint_eq(bitmap[i], 0);
	teardown(t, &m);
}
END_TEST

START_TEST(test_clean_without_writes)
{
	struct dirty_range runs[8];
	struct test_mem m;
	struct dirty_tracker *t = setup(&m, (enum test_mem_kind)_i, 32);
	volatile char sum = 0;

	write_pages(&m, (const size_t[]){ 5 }, 1);
	ck_assert_int_eq(dirty_clean(t, m.addr, m.len), 0);
	ck_assert_uint_eq(collect(t, &m, 0, runs, 8), 0);
	/* reading is not writing */
	for (size_t i = 0; i < m.len; i += page_size)
		sum += m.addr[i];
	ck_assert_uint_eq(collect(t, &m, 0, runs, 8), 0);
	teardown(t, &m);
}
END_TEST

START_TEST(test_resume_with_tiny_buffer)
{
	struct dirty_range full[256], one[1], joined[256];
	struct test_mem m;
	struct dirty_tracker *t = setup(&m, (enum test_mem_kind)_i, 512);
	size_t nfull, njoined = 0, i;
	char *cur = m.addr, *end = m.addr + m.len;
	void *next;

	/* every third page, plus a few longer runs */
	for (i = 0; i < 512; i += 3)
		write_pages(&m, &i, 1);
	write_pages(&m, (const size_t[]){ 100, 101, 102, 103, 104 }, 5);
	nfull = collect(t, &m, 0, full, 256);
	ck_assert_uint_gt(nfull, 100);
	while (cur < end) {
		ssize_t n = dirty_collect(t, cur, (size_t)(end - cur), DIRTY_COLLECT_CLEAN, one, 1,
					  &next);

		ck_assert_int_ge(n, 0);
		ck_assert((char *)next > cur);
		if (n) {
			/* a run split by the buffer boundary comes back in pieces: join them */
			if (njoined && (char *)joined[njoined - 1].start + joined[njoined - 1].len ==
					       (char *)one[0].start)
				joined[njoined - 1].len += one[0].len;
			else
				joined[njoined++] = one[0];
		}
		cur = next;
	}
	ck_assert_uint_eq(njoined, nfull);
	ck_assert_mem_eq(joined, full, nfull * sizeof(full[0]));
	/* the resumed collect-and-clean cleaned everything it reported */
	ck_assert_uint_eq(collect(t, &m, 0, full, 256), 0);
	teardown(t, &m);
}
END_TEST

START_TEST(test_clean_part_of_a_region)
{
	static const size_t want[][2] = { { 40, 41 } };
	struct dirty_range runs[8];
	struct test_mem m;
	struct dirty_tracker *t = setup(&m, (enum test_mem_kind)_i, 64);

	write_pages(&m, (const size_t[]){ 10, 40 }, 2);
	ck_assert_int_eq(dirty_clean(t, m.addr, 32 * m.page), 0);
	assert_runs(&m, runs, collect(t, &m, 0, runs, 8), want, 1);
	/* a collect of part of the region reports only that part */
	ck_assert_int_eq(dirty_collect(t, m.addr, 32 * m.page, 0, runs, 8, NULL), 0);
	teardown(t, &m);
}
END_TEST

struct each_state {
	struct dirty_range seen[16];
	size_t n, stop_after;
};

static int each_run(void *start, size_t len, void *userdata)
{
	struct each_state *s = userdata;

	s->seen[s->n].start = start;
	s->seen[s->n++].len = len;
	return s->n == s->stop_after ? 42 : 0;
}

START_TEST(test_callback_runs_and_early_stop)
{
	static const size_t want[][2] = { { 1, 2 }, { 5, 7 }, { 9, 10 }, { 20, 21 } };
	struct each_state s = { .stop_after = 0 };
	struct dirty_range runs[8];
	struct test_mem m;
	struct dirty_tracker *t = setup(&m, (enum test_mem_kind)_i, 32);

	write_pages(&m, (const size_t[]){ 1, 5, 6, 9, 20 }, 5);
	ck_assert_int_eq(dirty_collect_each(t, m.addr, m.len, 0, each_run, &s), 0);
	assert_runs(&m, s.seen, s.n, want, 4);
	/* stopping after two runs: the other two stay dirty, though cleaned in the batch */
	s = (struct each_state){ .stop_after = 2 };
	ck_assert_int_eq(dirty_collect_each(t, m.addr, m.len, DIRTY_COLLECT_CLEAN, each_run, &s),
			 42);
	assert_runs(&m, s.seen, s.n, want, 2);
	assert_runs(&m, runs, collect(t, &m, 0, runs, 8), want + 2, 2);
	teardown(t, &m);
}
END_TEST

START_TEST(test_span_over_adjacent_regions)
{
	static const size_t want[][2] = { { 14, 18 } };
	struct dirty_range runs[8];
	struct test_mem m;
	struct dirty_tracker *t = tracker_new();
	char why[256];

	ck_assert_msg(mem_map(&m, (enum test_mem_kind)_i, 32, why, sizeof(why)), "%s", why);
	ck_assert_int_eq(dirty_track(t, m.addr, 16 * m.page), 0);
	ck_assert_int_eq(dirty_track(t, m.addr + 16 * m.page, 16 * m.page), 0);
	write_pages(&m, (const size_t[]){ 14, 15, 16, 17 }, 4);
	/* one run across the region boundary, coalesced */
	assert_runs(&m, runs, collect(t, &m, DIRTY_COLLECT_CLEAN, runs, 8), want, 1);
	ck_assert_uint_eq(collect(t, &m, 0, runs, 8), 0);
	/* untrack must take whole regions, but may take several */
	ck_assert_int_eq(dirty_untrack(t, m.addr, 8 * m.page), -EINVAL);
	ck_assert_int_eq(dirty_untrack(t, m.addr, m.len), 0);
	ck_assert_int_eq(dirty_collect(t, m.addr, m.len, 0, runs, 8, NULL), -ENOENT);
	dirty_tracker_free(t);
	mem_unmap(&m);
}
END_TEST

START_TEST(test_untrack_leaves_memory_alone)
{
	struct test_mem m;
	struct dirty_tracker *t = setup(&m, (enum test_mem_kind)_i, 16);
	struct dirty_stats before = { .sz = sizeof(before) }, after = { .sz = sizeof(after) };
	char *copy = malloc(m.len);

	write_pages(&m, (const size_t[]){ 3 }, 1);
	memcpy(copy, m.addr, m.len);
	ck_assert_int_eq(dirty_untrack(t, m.addr, m.len), 0);
	ck_assert_mem_eq(m.addr, copy, m.len);
	/* writes after untrack go through without the tracker seeing them */
	ck_assert_int_eq(dirty_tracker_stats(t, &before), 0);
	memset(m.addr, 0x77, m.len);
	ck_assert_int_eq(dirty_tracker_stats(t, &after), 0);
	ck_assert_uint_eq(after.faults, before.faults);
	ck_assert_uint_eq(after.regions, 0);
	ck_assert_int_eq(dirty_clean(t, m.addr, m.len), -ENOENT);
	/* and the range can be tracked again, clean */
	ck_assert_int_eq(dirty_track(t, m.addr, m.len), 0);
	ck_assert_int_eq(dirty_collect(t, m.addr, m.len, 0, (struct dirty_range[1]){ 0 }, 1, NULL),
			 0);
	free(copy);
	teardown(t, &m);
}
END_TEST

START_TEST(test_unpopulated_memory)
{
	static const size_t want[][2] = { { 700, 701 } };
	struct dirty_range runs[8];
	struct dirty_tracker *t = tracker_new();
	size_t len = 1024 * page_size;
	volatile char *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, base_flags, -1, 0);
	struct test_mem m = { .kind = base_kind, .addr = (char *)mem, .len = len, .page = page_size };

	ck_assert((void *)mem != MAP_FAILED);
	madvise((void *)mem, len, MADV_NOHUGEPAGE);
	ck_assert_int_eq(dirty_track(t, (void *)mem, len), 0);
	(void)mem[10 * page_size];
	(void)mem[600 * page_size];
	if (mapping_reads_page_tables(t)) {
		/* documented: the module reports pages a read fault mapped, once */
		static const size_t read[][2] = { { 10, 11 }, { 600, 601 } };

		assert_runs(&m, runs, collect(t, &m, DIRTY_COLLECT_CLEAN, runs, 8), read, 2);
	}
	ck_assert_uint_eq(collect(t, &m, 0, runs, 8), 0);
	mem[700 * page_size] = 1;
	assert_runs(&m, runs, collect(t, &m, 0, runs, 8), want, 1);
	ck_assert_int_eq(dirty_untrack(t, (void *)mem, len), 0);
	dirty_tracker_free(t);
	munmap((void *)mem, len);
}
END_TEST

/*
 * MADV_DONTNEED is not a write, but it changes private anonymous memory (to
 * zeroes).  uffd-async reports a dropped page, because the kernel drops its
 * protection with it (an allowed false positive); mprotect cannot see a drop
 * and does not (documented in libdirty.h).  A page written and then dropped
 * stays dirty on both; under soft-dirty it is not reported (documented).
 */
START_TEST(test_dontneed)
{
	static const size_t want[][2] = { { 4, 5 }, { 8, 9 } };
	struct dirty_range runs[8];
	struct test_mem m;
	struct dirty_tracker *t = setup(&m, base_kind, 16);

	ck_assert_int_eq(madvise(m.addr + 4 * m.page, m.page, MADV_DONTNEED), 0);
	if (is("uffd-async"))
		assert_runs(&m, runs, collect(t, &m, DIRTY_COLLECT_CLEAN, runs, 8), want, 1);
	else
		ck_assert_uint_eq(collect(t, &m, 0, runs, 8), 0);
	write_pages(&m, (const size_t[]){ 8 }, 1);
	ck_assert_int_eq(madvise(m.addr + 8 * m.page, m.page, MADV_DONTNEED), 0);
	/*
	 * soft-dirty, mapping on the module: the bit lived in the page table
	 * entry that the drop removed (the page keeps its contents: shared
	 * memory); a kernel that records every write reports it
	 */
	if (is("soft-dirty") || mapping_reads_page_tables(t))
		ck_assert_uint_eq(collect(t, &m, DIRTY_COLLECT_CLEAN, runs, 8), 0);
	else
		assert_runs(&m, runs, collect(t, &m, DIRTY_COLLECT_CLEAN, runs, 8), want + 1, 1);
	ck_assert_uint_eq(collect(t, &m, 0, runs, 8), 0);
	teardown(t, &m);
}
END_TEST

/*
 * Can this process tell the shared zero page from a page that holds data
 * in its own /proc/self/pagemap?  PAGEMAP_SCAN (6.7) says PAGE_IS_PFNZERO;
 * before it, only frame numbers tell, and only CAP_SYS_ADMIN sees them.
 */
static bool zero_page_visible(void)
{
	struct page_region run;
	char *mem = mmap(NULL, page_size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	struct pm_scan_arg arg = {
		.size = sizeof(arg),
		.start = (uintptr_t)mem,
		.end = (uintptr_t)mem + page_size,
		.vec = (uintptr_t)&run,
		.vec_len = 1,
		.category_anyof_mask = PAGE_IS_PRESENT,
		.return_mask = PAGE_IS_PRESENT,
	};
	uint64_t entry = 0;
	bool visible;

	ck_assert_ptr_ne(mem, MAP_FAILED);
	ck_assert_int_ge(fd, 0);
	(void)*(volatile char *)mem;
	visible = ioctl(fd, PAGEMAP_SCAN, &arg) >= 0;
	if (!visible && pread(fd, &entry, sizeof(entry),
			      (off_t)((uintptr_t)mem / page_size * sizeof(entry))) == sizeof(entry))
		visible = (entry & ((UINT64_C(1) << 55) - 1)) != 0;
	close(fd);
	munmap(mem, page_size);
	return visible;
}

/* The start and end of the mapping (VMA) that holds an address. */
static bool vma_of(const void *addr, uintptr_t *start, uintptr_t *end)
{
	FILE *f = fopen("/proc/self/maps", "r");
	unsigned long s, e;
	char line[512];
	bool found = false;

	ck_assert_ptr_nonnull(f);
	while (!found && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx", &s, &e) == 2 && (uintptr_t)addr >= s &&
		    (uintptr_t)addr < e) {
			*start = s;
			*end = e;
			found = true;
		}
	}
	fclose(f);
	return found;
}

/*
 * DIRTY_TRACK_POPULATED_DIRTY: memory that appeared since the last collect
 * starts with the pages that hold data dirty; holes, and the zero page
 * (private memory), do not.  Then tracking goes on as usual.
 */
START_TEST(test_track_populated_dirty)
{
	static const size_t want_private[][2] = { { 0, 4 }, { 8, 16 } };
	static const size_t want_zero_unseen[][2] = { { 0, 4 }, { 5, 6 }, { 8, 16 } };
	enum test_mem_kind kind = (enum test_mem_kind)_i;
	struct dirty_tracker *t = tracker_new();
	struct dirty_range runs[16];
	struct test_mem m;
	char why[256];
	volatile char c;
	bool shared = kind != MEM_ANON, module;

	ck_assert_msg(mem_map(&m, kind, 16, why, sizeof(why)), "%s", why);
	/*
	 * Pages 4-7 dropped: private memory loses them, shared memory only
	 * unmaps them.  Private: page 5 read is the zero page.  (Shared: a
	 * read would map the file's pages around it again, fault-around.)
	 */
	ck_assert_int_eq(madvise(m.addr + 4 * m.page, 4 * m.page, MADV_DONTNEED), 0);
	if (!shared) {
		c = m.addr[5 * m.page];
		(void)c;
	}
	ck_assert_int_eq(dirty_track_flags(t, m.addr, m.len, 0x80), -EINVAL);
	ck_assert_int_eq(dirty_clean(t, m.addr, m.len), -ENOENT);
	ck_assert_int_eq(dirty_track_flags(t, m.addr, m.len, DIRTY_TRACK_POPULATED_DIRTY), 0);
	if (!shared && !zero_page_visible())
		assert_runs(&m, runs, collect(t, &m, 0, runs, 16), want_zero_unseen, 3);
	else
		assert_runs(&m, runs, collect(t, &m, 0, runs, 16), want_private, 2);
	ck_assert_uint_ge(collect(t, &m, DIRTY_COLLECT_CLEAN, runs, 16), 2);
	ck_assert_uint_eq(collect(t, &m, 0, runs, 16), 0);
	/*
	 * Under the module the write is a read first, made explicit: the
	 * read-modify-write of write_pages() faults as a read under qemu's
	 * TCG but as a write on the hardware (no fault-around then).
	 */
	module = mapping_reads_page_tables(t);
	if (module) {
		c = m.addr[6 * m.page];
		(void)c;
	}
	write_pages(&m, (const size_t[]){ 6 }, 1);
	if (module) {
		/*
		 * The read's fault maps the dropped pages 4-7 around it
		 * (fault-around), which the module reports (documented).
		 * do_fault_around() maps fault_around_bytes (64 KiB) from the
		 * fault's aligned 64 KiB or from the start of the VMA or of
		 * the page table, whichever is last, and not past the end of
		 * the VMA or the table: where the kernel placed the region,
		 * some of pages 4-7 may stay unmapped.
		 */
		uintptr_t vma_start, vma_end, base = (uintptr_t)m.addr / m.page, at = base + 6;
		uintptr_t around = m.page < 65536 ? 65536 / m.page : 1;
		uintptr_t table = m.page / sizeof(void *), table_start = at / table * table;
		uintptr_t from = at / around * around, to;
		size_t first = 4, end = 8;

		ck_assert(vma_of(m.addr + 6 * m.page, &vma_start, &vma_end));
		vma_start /= m.page;
		vma_end /= m.page;
		if (table_start > from)
			from = table_start;
		if (vma_start > from)
			from = vma_start;
		to = from + around;
		if (table_start + table < to)
			to = table_start + table;
		if (vma_end < to)
			to = vma_end;
		if (from > base + first)
			first = (size_t)(from - base);
		if (to < base + end)
			end = (size_t)(to - base);
		assert_runs(&m, runs, collect(t, &m, DIRTY_COLLECT_CLEAN, runs, 16),
			    (const size_t[][2]){ { first, end } }, 1);
	} else {
		assert_runs(&m, runs, collect(t, &m, DIRTY_COLLECT_CLEAN, runs, 16),
			    (const size_t[][2]){ { 6, 7 } }, 1);
	}
	teardown(t, &m);
}
END_TEST

/* ---- bad input: exact errno, nothing changed ---- */

START_TEST(test_bad_input)
{
	static const size_t want[][2] = { { 2, 3 }, { 9, 10 } };
	struct dirty_range runs[8];
	uint64_t bitmap[1];
	struct test_mem m;
	struct dirty_tracker *t = setup(&m, base_kind, 16);
	char *a = m.addr, *outside;
	void *next = (void *)1;

	write_pages(&m, (const size_t[]){ 2, 9 }, 2);

	/* unaligned, empty, wrapping */
	ck_assert_int_eq(dirty_clean(t, a + 1, page_size), -EINVAL);
	ck_assert_int_eq(dirty_clean(t, a, page_size + 1), -EINVAL);
	ck_assert_int_eq(dirty_clean(t, a, 0), -EINVAL);
	ck_assert_int_eq(dirty_collect(t, (void *)(UINTPTR_MAX & ~(page_size - 1)), 2 * page_size,
				       0, runs, 8, NULL),
			 -EINVAL);
	ck_assert_int_eq(dirty_track(t, a + 1, page_size), -EINVAL);
	ck_assert_int_eq(dirty_untrack(t, a, page_size - 1), -EINVAL);
	/* bad flags and buffers */
	ck_assert_int_eq(dirty_collect(t, a, m.len, 0x80, runs, 8, NULL), -EINVAL);
	ck_assert_int_eq(dirty_collect(t, a, m.len, DIRTY_COLLECT_CLEAN, NULL, 8, NULL), -EINVAL);
	ck_assert_int_eq(dirty_collect(t, a, m.len, DIRTY_COLLECT_CLEAN, runs, 0, NULL), -EINVAL);
	ck_assert_int_eq(dirty_collect(t, a, m.len, DIRTY_COLLECT_CLEAN, NULL, 0, &next), 0);
	ck_assert_ptr_eq(next, a);
	ck_assert_int_eq(dirty_collect_bitmap(t, a, m.len, DIRTY_COLLECT_CLEAN, NULL), -EINVAL);
	ck_assert_int_eq(dirty_collect_bitmap(t, a, m.len, 2, bitmap), -EINVAL);
	ck_assert_int_eq(dirty_collect_each(t, a, m.len, DIRTY_COLLECT_CLEAN, NULL, NULL), -EINVAL);
	/* NULL tracker */
	ck_assert_int_eq(dirty_clean(NULL, a, m.len), -EINVAL);
	ck_assert_int_eq(dirty_collect(NULL, a, m.len, 0, runs, 8, NULL), -EINVAL);
	/* ranges not (entirely) tracked */
	ck_assert_int_eq(dirty_clean(t, a + m.len, page_size), -ENOENT);
	ck_assert_int_eq(dirty_clean(t, a - page_size, 2 * page_size), -ENOENT);
	ck_assert_int_eq(dirty_collect(t, a, m.len + page_size, DIRTY_COLLECT_CLEAN, runs, 8, NULL),
			 -ENOENT);
	ck_assert_int_eq(dirty_untrack(t, a + m.len, page_size), -ENOENT);
	/* overlapping registration, partial untrack */
	ck_assert_int_eq(dirty_track(t, a + page_size, page_size), -EEXIST);
	ck_assert_int_eq(dirty_track(t, a - page_size, 2 * page_size), -EEXIST);
	ck_assert_int_eq(dirty_untrack(t, a, page_size), -EINVAL);
	/* memory that is not mapped, or not writable */
	outside = map_isolated(3 * page_size);
	munmap(outside + page_size, page_size);
	ck_assert_int_eq(dirty_track(t, outside, 3 * page_size), -ENOMEM);
	ck_assert_int_eq(dirty_track(t, outside + page_size, page_size), -ENOMEM);
	mprotect(outside, page_size, PROT_READ);
	ck_assert_int_eq(dirty_track(t, outside, page_size), -EACCES);
	unmap_isolated(outside, 3 * page_size);

	/* and nothing changed */
	assert_runs(&m, runs, collect(t, &m, 0, runs, 8), want, 2);
	teardown(t, &m);
}
END_TEST

/*
 * A second tracker of the same memory in this process: refused (-EEXIST)
 * where the kernel mechanism has one registration per page; under mapping
 * every kernel tracker sees every write, so both report it.
 */
START_TEST(test_second_tracker_cannot_overlap)
{
	struct dirty_range runs[8];
	struct dirty_tracker *t2;
	struct test_mem m;
	struct dirty_tracker *t = setup(&m, base_kind, 8);

	t2 = tracker_new();
	if (is("mapping")) {
		ck_assert_int_eq(dirty_track(t2, m.addr + page_size, page_size), 0);
		write_pages(&m, (const size_t[]){ 1, 5 }, 2);
		ck_assert_int_eq(collect(t, &m, DIRTY_COLLECT_CLEAN, runs, 8), 2);
		ck_assert_int_eq(dirty_collect(t2, m.addr + page_size, page_size,
					       DIRTY_COLLECT_CLEAN, runs, 8, NULL), 1);
		ck_assert_ptr_eq(runs[0].start, m.addr + page_size);
		ck_assert_int_eq(dirty_untrack(t2, m.addr + page_size, page_size), 0);
	} else {
		ck_assert_int_eq(dirty_track(t2, m.addr, m.len), -EEXIST);
		ck_assert_int_eq(dirty_track(t2, m.addr + page_size, page_size), -EEXIST);
	}
	dirty_tracker_free(t2);
	teardown(t, &m);
}
END_TEST

/* ---- lifetime ---- */

START_TEST(test_munmap_then_use)
{
	struct dirty_range runs[8];
	struct test_mem m, other;
	struct dirty_tracker *t = setup(&m, base_kind, 16);
	char why[256];

	ck_assert(mem_map(&other, base_kind, 4, why, sizeof(why)));
	ck_assert_int_eq(dirty_track(t, other.addr, other.len), 0);
	write_pages(&m, (const size_t[]){ 1 }, 1);
	munmap(m.addr, m.len);
	ck_assert_int_eq(dirty_collect(t, m.addr, m.len, DIRTY_COLLECT_CLEAN, runs, 8, NULL),
			 -ESTALE);
	ck_assert_int_eq(dirty_clean(t, m.addr, m.len), -ESTALE);
	ck_assert_int_eq(dirty_collect_bitmap(t, m.addr, m.len, 0, (uint64_t[1]){ 0 }), -ESTALE);
	/* the other region is unaffected */
	write_pages(&other, (const size_t[]){ 2 }, 1);
	ck_assert_uint_eq(collect(t, &other, DIRTY_COLLECT_CLEAN, runs, 8), 1);
	/* untrack forgets the gone region */
	ck_assert_int_eq(dirty_untrack(t, m.addr, m.len), 0);
	ck_assert_int_eq(dirty_clean(t, m.addr, m.len), -ENOENT);
	m.addr = NULL;
	mem_unmap(&m);
	teardown(t, &other);
}
END_TEST

/*
 * Memory unmapped without untracking, and new memory at the same address:
 * another tracker cannot take it until the stale region is untracked (else
 * the stale region's scans would take that tracker's dirty pages).
 */
START_TEST(test_stale_region_keeps_its_range)
{
	struct dirty_range runs[8];
	struct test_mem m;
	struct dirty_tracker *t = setup(&m, base_kind, 16), *t2 = tracker_new();
	char *again;

	/* only the first half goes: the rest stays mapped, and tracked */
	munmap(m.addr, 8 * page_size);
	again = mmap(m.addr, 8 * page_size, PROT_READ | PROT_WRITE,
		     base_flags | MAP_FIXED_NOREPLACE, -1, 0);
	ck_assert_ptr_eq(again, m.addr);
	/* mapping: trackers never take each other's pages, nothing to keep */
	if (is("mapping")) {
		ck_assert_int_eq(dirty_track(t2, again, 8 * page_size), 0);
		ck_assert_int_eq(dirty_untrack(t2, again, 8 * page_size), 0);
	} else {
		ck_assert_int_eq(dirty_track(t2, again, 8 * page_size), -EEXIST);
	}
	/*
	 * uffd-async sees the foreign vma, mapping another file behind the
	 * addresses; mprotect cannot tell (documented);
	 * soft-dirty reports new memory dirty (the kernel marks a new vma so)
	 */
	if (is("soft-dirty")) {
		ck_assert_int_eq(dirty_collect(t, m.addr, m.len, 0, runs, 8, NULL), 1);
		ck_assert_ptr_eq(runs[0].start, m.addr);
		ck_assert_uint_ge(runs[0].len, 8 * page_size);
	} else {
		ck_assert_int_eq(dirty_collect(t, m.addr, m.len, 0, runs, 8, NULL),
				 is("mprotect") ? 0 : -ESTALE);
	}
	ck_assert_int_eq(dirty_untrack(t, m.addr, m.len), 0);
	if (is("mapping")) {
		/* the two halves are two files now: one region cannot span them */
		ck_assert_int_eq(dirty_track(t2, m.addr, m.len), -EOPNOTSUPP);
		ck_assert_int_eq(dirty_track(t2, m.addr, 8 * page_size), 0);
		ck_assert_int_eq(dirty_track(t2, m.addr + 8 * page_size, 8 * page_size), 0);
	} else {
		ck_assert_int_eq(dirty_track(t2, m.addr, m.len), 0);
	}
	/* now both halves are free to track, by anyone */
	write_pages(&m, (const size_t[]){ 2, 12 }, 2);
	ck_assert_int_eq(dirty_collect(t2, m.addr, m.len, 0, runs, 8, NULL), 2);
	ck_assert_int_eq(dirty_untrack(t2, m.addr, m.len), 0);
	dirty_tracker_free(t2);
	dirty_tracker_free(t);
	mem_unmap(&m);
}
END_TEST

struct hammer {
	char *mem;
	size_t len;
	atomic_bool stop;
};

static void *hammer_main(void *p)
{
	struct hammer *h = p;
	uint64_t x = 12345;

	while (!atomic_load_explicit(&h->stop, memory_order_relaxed)) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		atomic_fetch_add_explicit((_Atomic char *)&h->mem[x % (h->len / page_size) * page_size],
					  1, memory_order_relaxed);
	}
	return NULL;
}

/* Untrack while other threads write: nothing crashes, no write fails. */
START_TEST(test_untrack_under_writers)
{
	struct hammer h = { 0 };
	pthread_t threads[2];
	struct test_mem m;
	struct dirty_tracker *t = tracker_new();
	char why[256];

	ck_assert(mem_map(&m, base_kind, 64, why, sizeof(why)));
	h.mem = m.addr;
	h.len = m.len;
	for (int i = 0; i < 2; i++)
		pthread_create(&threads[i], NULL, hammer_main, &h);
	for (int round = 0; round < 300; round++) {
		ck_assert_int_eq(dirty_track(t, m.addr, m.len), 0);
		ck_assert_int_ge(dirty_collect(t, m.addr, m.len, DIRTY_COLLECT_CLEAN,
					       (struct dirty_range[64]){ 0 }, 64, NULL), 0);
		ck_assert_int_eq(dirty_untrack(t, m.addr, m.len), 0);
	}
	atomic_store(&h.stop, true);
	for (int i = 0; i < 2; i++)
		pthread_join(threads[i], NULL);
	dirty_tracker_free(t);
	mem_unmap(&m);
}
END_TEST

START_TEST(test_mremap_then_use)
{
	struct dirty_range runs[8];
	struct test_mem m;
	struct dirty_tracker *t = setup(&m, base_kind, 16);
	char *moved;

	/* reserve a destination so the move cannot land on the old range */
	moved = mmap(NULL, m.len, PROT_NONE, base_flags, -1, 0);
	ck_assert_ptr_ne(moved, MAP_FAILED);
	moved = mremap(m.addr, m.len, m.len, MREMAP_MAYMOVE | MREMAP_FIXED, moved);
	ck_assert_ptr_ne(moved, MAP_FAILED);
	ck_assert_int_eq(dirty_collect(t, m.addr, m.len, 0, runs, 8, NULL), -ESTALE);
	/*
	 * The moved memory is untracked.  Under mprotect it keeps the
	 * read-only protection it had (documented: untrack before moving); the
	 * owner restores it.
	 */
	if (!strcmp(backend, "mprotect"))
		ck_assert_int_eq(mprotect(moved, m.len, PROT_READ | PROT_WRITE), 0);
	moved[5] = 1;
	ck_assert_int_eq(dirty_collect(t, moved, m.len, 0, runs, 8, NULL), -ENOENT);
	ck_assert_int_eq(dirty_untrack(t, m.addr, m.len), 0);
	munmap(moved, m.len);
	m.addr = NULL;
	mem_unmap(&m);
	dirty_tracker_free(t);
}
END_TEST

START_TEST(test_fork)
{
	static const size_t want[][2] = { { 3, 4 } };
	struct dirty_range runs[8];
	struct test_mem m;
	struct dirty_tracker *t = setup(&m, (enum test_mem_kind)_i, 16);
	int status;
	pid_t child;

	write_pages(&m, (const size_t[]){ 3 }, 1);
	child = fork();
	ck_assert_int_ge(child, 0);
	if (child == 0) {
		/* the child's copy refuses, and the child's writes do not crash it */
		int bad = 0;

		bad |= dirty_collect(t, m.addr, m.len, 0, runs, 8, NULL) != -ECHILD;
		bad |= dirty_clean(t, m.addr, m.len) != -ECHILD;
		bad |= dirty_track(t, m.addr, m.len) != -ECHILD;
		bad |= dirty_untrack(t, m.addr, m.len) != -ECHILD;
		memset(m.addr, 0x11, m.len);
		dirty_tracker_free(t);
		memset(m.addr, 0x22, m.len);
		_exit(bad);
	}
	ck_assert_int_eq(waitpid(child, &status, 0), child);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);
	/* the parent's view is untouched for private memory, and still exact */
	if (m.kind == MEM_ANON)
		assert_runs(&m, runs, collect(t, &m, DIRTY_COLLECT_CLEAN, runs, 8), want, 1);
	else
		collect(t, &m, DIRTY_COLLECT_CLEAN, runs, 8);
	write_pages(&m, (const size_t[]){ 3 }, 1);
	assert_runs(&m, runs, collect(t, &m, DIRTY_COLLECT_CLEAN, runs, 8), want, 1);
	teardown(t, &m);
}
END_TEST

/* ---- transparent huge pages ---- */

START_TEST(test_thp_base_page_granularity)
{
	/* soft-dirty: the kernel marks the whole huge page (documented) */
	size_t huge = thp_page_size(), len = 2 * huge, per_huge = huge / page_size;
	/* a base page of the second huge page, 1000 with 4 KiB pages */
	size_t written = per_huge + per_huge * 61 / 64;
	const size_t want[][2] = { { written, written + 1 } },
		     want_huge[][2] = { { per_huge, 2 * per_huge } };
	struct dirty_range runs[8];
	struct dirty_tracker *t = tracker_new();
	char *raw, *mem;
	struct test_mem m;

	raw = mmap(NULL, len + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(raw, MAP_FAILED);
	mem = (char *)(((uintptr_t)raw + huge - 1) & ~(uintptr_t)(huge - 1));
	ck_assert_int_eq(madvise(mem, len, MADV_HUGEPAGE), 0);
	memset(mem, 1, len);
	/* THP is on (checked), but a huge page is the kernel's to give */
	if (!thp_backed(mem, len)) {
		dirty_tracker_free(t);
		munmap(raw, len + huge);
		test_skip("the kernel gave no huge pages for these %zu MiB (memory fragmented?)",
			  len >> 20);
	}
	m = (struct test_mem){ .kind = MEM_ANON, .addr = mem, .len = len, .page = page_size };
	ck_assert_int_eq(dirty_track(t, mem, len), 0);
	ck_assert_uint_eq(collect(t, &m, 0, runs, 8), 0);
	mem[written * page_size + 5] = 2;
	/* one base page, not the 512 (4 KiB pages) of its huge page */
	assert_runs(&m, runs, collect(t, &m, DIRTY_COLLECT_CLEAN, runs, 8),
		    is("soft-dirty") ? want_huge : want, 1);
	ck_assert_uint_eq(collect(t, &m, 0, runs, 8), 0);
	ck_assert_int_eq(dirty_untrack(t, mem, len), 0);
	dirty_tracker_free(t);
	munmap(raw, len + huge);
}
END_TEST

/* The first PMD-sized block of [mem, mem + len) that the kernel maps with one PMD. */
static char *first_pmd_mapped(char *mem, size_t len)
{
	struct page_region regions[64];
	struct pm_scan_arg arg = {
		.size = sizeof(arg),
		.start = (uintptr_t)mem,
		.end = (uintptr_t)mem + len,
		.vec = (uintptr_t)regions,
		.vec_len = 64,
		.category_mask = PAGE_IS_HUGE,
		.return_mask = PAGE_IS_HUGE,
	};
	int fd = open("/proc/self/pagemap", O_RDONLY), n;
	uintptr_t huge = thp_page_size();

	n = fd < 0 ? -1 : ioctl(fd, PAGEMAP_SCAN, &arg);
	if (fd >= 0)
		close(fd);
	for (int i = 0; i < n; i++) {
		uintptr_t start = (regions[i].start + huge - 1) & ~(huge - 1);

		if (start + huge <= regions[i].end)
			return (char *)start;
	}
	return NULL;
}

/*
 * A shared file mapping that the page cache maps with huge pages: exact.
 * (uffd-async: the clean's UFFDIO_WRITEPROTECT splits the huge mapping.  It
 * used to clean with a PAGEMAP_SCAN, which left it whole, and the kernel
 * then resolved a write to it a huge page at a time.)
 */
START_TEST(test_file_huge_mapping)
{
	/* 128 MiB with 2 MiB huge pages; 4 of arm64's 32 MiB ones (16 KiB pages) */
	size_t huge = thp_page_size(), len = (huge > (2u << 20) ? 4 : 64) * huge;
	struct dirty_range runs[8];
	struct dirty_tracker *t = tracker_new();
	char path[] = "libdirty-test-XXXXXX", *mem, *block;
	int fd = mkstemp(path);

	ck_assert_int_ge(fd, 0);
	unlink(path);
	ck_assert_int_eq(ftruncate(fd, (off_t)len), 0);
	mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ck_assert_ptr_ne(mem, MAP_FAILED);
	memset(mem, 1, len);
	block = first_pmd_mapped(mem, len);
	if (kind_refused(MEM_FILE)) {
		ck_assert_int_eq(dirty_track(t, mem, len), -EOPNOTSUPP);
	} else if (!block) {
		/* the file system maps it with base pages: the exact case, shown elsewhere */
		dirty_tracker_free(t);
		munmap(mem, len);
		close(fd);
		test_skip("no PMD-mapped page-cache folio here (the file system of the working "
			  "directory maps this file with base pages): nothing huge to track");
	} else {
		ck_assert_int_eq(dirty_track(t, mem, len), 0);
		/*
		 * exact at the first write after the clean, and after a
		 * collect-and-clean; soft-dirty: the kernel marks the whole huge
		 * page (documented; ext4 maps this file with huge folios on 7.3, not on 6.12)
		 */
		for (size_t page = 5; page < 7; page++) {
			block[page * page_size] = 2;
			ck_assert_int_eq(dirty_collect(t, mem, len, DIRTY_COLLECT_CLEAN, runs, 8,
						       NULL), 1);
			ck_assert_ptr_eq(runs[0].start, is("soft-dirty") ? block : block + page * page_size);
			ck_assert_uint_eq(runs[0].len, is("soft-dirty") ? huge : page_size);
		}
		ck_assert_int_eq(dirty_untrack(t, mem, len), 0);
	}
	dirty_tracker_free(t);
	munmap(mem, len);
	close(fd);
}
END_TEST

/* ---- hugetlb ---- */

START_TEST(test_hugetlb_huge_page_granularity)
{
	static const size_t want[][2] = { { 1, 2 }, { 3, 4 } };
	struct dirty_range runs[8];
	struct test_mem m;
	struct dirty_tracker *t = setup(&m, MEM_HUGETLB, 4);
	/* one bit per base page: 512 per huge page with 4 KiB pages, 2048 with 16 KiB */
	size_t words_per_huge = m.page / page_size / 64;
	uint64_t *bitmap = calloc(4 * words_per_huge, sizeof(*bitmap));

	/* unaligned to the huge page: refused */
	ck_assert_int_eq(dirty_clean(t, m.addr, page_size), -EINVAL);
	/* one byte in a huge page reports all of it */
	ck_assert_ptr_nonnull(bitmap);
	m.addr[m.page + page_size * 7] = 1;
	m.addr[3 * m.page + 5] = 1;
	assert_runs(&m, runs, collect(t, &m, 0, runs, 8), want, 2);
	ck_assert_int_eq(dirty_collect_bitmap(t, m.addr, m.len, DIRTY_COLLECT_CLEAN, bitmap), 0);
	for (size_t w = 0; w < 4 * words_per_huge; w++)
		ck_assert_uint_eq(bitmap[w], (w / words_per_huge == 1 || w / words_per_huge == 3)
					     ? UINT64_MAX : 0);
	ck_assert_uint_eq(collect(t, &m, 0, runs, 8), 0);
	free(bitmap);
	teardown(t, &m);
}
END_TEST

/* ---- backend-specific, documented behaviour ---- */

/* A write by the kernel (read(2) into the buffer). */
START_TEST(test_kernel_writes)
{
	static const size_t want[][2] = { { 2, 3 } };
	struct dirty_range runs[8];
	struct test_mem m;
	struct dirty_tracker *t = setup(&m, base_kind, 8);
	int fd = open("/proc/self/stat", O_RDONLY);
	ssize_t n;

	ck_assert_int_ge(fd, 0);
	n = read(fd, m.addr + 2 * page_size, 64);
	if (!strcmp(backend, "mprotect")) {
		/* the kernel does not take the user-space fault path: EFAULT */
		ck_assert_int_eq(n, -1);
		ck_assert_int_eq(errno, EFAULT);
		ck_assert_uint_eq(collect(t, &m, 0, runs, 8), 0);
	} else {
		ck_assert_int_gt(n, 0);
		assert_runs(&m, runs, collect(t, &m, 0, runs, 8), want, 1);
	}
	close(fd);
	teardown(t, &m);
}
END_TEST

/* ---- mprotect only: the SIGSEGV handler and vm.max_map_count ---- */

static sigjmp_buf chained_jump;
static volatile sig_atomic_t chained_calls;

static void chained_handler(int sig, siginfo_t *info, void *context)
{
	(void)sig, (void)info, (void)context;
	chained_calls++;
	siglongjmp(chained_jump, 1);
}

START_TEST(test_mprotect_chains_foreign_faults)
{
	struct sigaction sa = { .sa_sigaction = chained_handler, .sa_flags = SA_SIGINFO };
	struct dirty_range runs[8];
	struct test_mem m;
	struct dirty_tracker *t;
	char *guard;

	/* an application handler installed before the library's */
	sigemptyset(&sa.sa_mask);
	ck_assert_int_eq(sigaction(SIGSEGV, &sa, NULL), 0);
	t = setup(&m, MEM_ANON, 8);
	guard = mmap(NULL, page_size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (sigsetjmp(chained_jump, 1) == 0)
		guard[0] = 1; /* not ours: the application's handler gets it */
	ck_assert_int_eq(chained_calls, 1);
	/* and our own faults are still ours */
	write_pages(&m, (const size_t[]){ 4 }, 1);
	ck_assert_int_eq(chained_calls, 1);
	ck_assert_uint_eq(collect(t, &m, 0, runs, 8), 1);
	munmap(guard, page_size);
	teardown(t, &m);
}
END_TEST

START_TEST(test_mprotect_foreign_fault_still_kills)
{
	struct sigaction before;
	struct test_mem m;
	struct dirty_tracker *t;
	int status;
	pid_t child;

	/* what a foreign fault did before the library came (a sanitizer has a handler) */
	ck_assert_int_eq(sigaction(SIGSEGV, NULL, &before), 0);
	t = setup(&m, MEM_ANON, 8);
	child = fork();
	if (child == 0) {
		char *guard = mmap(NULL, page_size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		write_pages(&m, (const size_t[]){ 1 }, 1);
		*(volatile char *)guard = 1; /* must die of SIGSEGV as without the library */
		_exit(0);
	}
	ck_assert_int_eq(waitpid(child, &status, 0), child);
	if (!(before.sa_flags & SA_SIGINFO) && before.sa_handler == SIG_DFL)
		ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV, "status %#x",
			      status);
	else /* the previous handler got it, and the child did not go on */
		ck_assert_msg(!WIFEXITED(status) || WEXITSTATUS(status) != 0, "status %#x", status);
	teardown(t, &m);
}
END_TEST

static size_t count_maps(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	size_t n = 0;
	int c;

	while ((c = fgetc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

/*
 * Use up vm.max_map_count with read-only islands in a filler mapping, then
 * write every other page of a tracked region: the kernel refuses to split
 * further and the library must degrade, never crash or lose a write.
 */
/* Log messages that mention a text, counted, the last one kept. */
struct log_count {
	const char *text;
	unsigned n;
	char last[1024];
};

static void count_log(int priority, const char *msg, void *userdata)
{
	struct log_count *c = userdata;

	(void)priority;
	if (!strstr(msg, c->text))
		return;
	c->n++;
	snprintf(c->last, sizeof(c->last), "%s", msg);
}

START_TEST(test_mprotect_max_map_count)
{
	size_t npages = 2000, i, limit, filler_pages, dirty = 0;
	struct dirty_stats st = { .sz = sizeof(st) };
	struct log_count degraded = { .text = "degraded" };
	struct dirty_options opts = { .sz = sizeof(opts), .backend = backend,
				      .log = count_log, .log_userdata = &degraded };
	struct dirty_range runs[2000];
	struct test_mem m;
	struct dirty_tracker *t;
	char *filler, limit_text[64], region_text[64];
	size_t n;

	limit = read_ulong_file("/proc/sys/vm/max_map_count");
	/* Debian's default is 65530; a raised one would take minutes and GiBs of VMAs */
	if (limit > 262144)
		test_skip("vm.max_map_count is %zu: using it up takes too long here "
			  "(sysctl vm.max_map_count=65530 runs this case)", limit);
	ck_assert(mem_map(&m, MEM_ANON, npages, limit_text, sizeof(limit_text)));
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), 0);
	ck_assert_int_eq(dirty_track(t, m.addr, m.len), 0);
	/* every other filler page read-only: one more vma per filler page */
	filler_pages = limit - count_maps() - 200;
	filler = mmap(NULL, filler_pages * page_size, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	ck_assert_ptr_ne(filler, MAP_FAILED);
	for (i = 0; i + 1 < filler_pages; i += 2)
		if (mprotect(filler + i * page_size, page_size, PROT_READ) < 0)
			break;
	ck_assert_uint_ge(count_maps() + 210, limit);

	for (i = 0; i < npages; i += 2)
		m.addr[i * page_size] = 9;
	for (i = 0; i < npages; i += 2)
		ck_assert_int_eq(m.addr[i * page_size], 9);
	ck_assert_int_eq(dirty_tracker_stats(t, &st), 0);
	ck_assert_uint_gt(st.degraded_blocks, 0);
	/* the handler cannot log: nothing yet */
	ck_assert_uint_eq(degraded.n, 0);
	/* every written page is reported (the degraded blocks' neighbours too) */
	n = collect(t, &m, DIRTY_COLLECT_CLEAN, runs, 2000);
	for (i = 0; i < n; i++)
		dirty += runs[i].len / page_size;
	for (i = 0; i < npages; i += 2) {
		char *p = m.addr + i * page_size;
		bool found = false;

		for (size_t r = 0; r < n && !found; r++)
			found = (char *)runs[r].start <= p && p < (char *)runs[r].start + runs[r].len;
		ck_assert_msg(found, "page %zu written but not reported", i);
	}
	ck_assert_uint_ge(dirty, npages / 2);
	/* the collect said so, once, with the numbers: the limit and the region */
	ck_assert_uint_eq(degraded.n, 1);
	snprintf(limit_text, sizeof(limit_text), "vm.max_map_count %zu,", limit);
	snprintf(region_text, sizeof(region_text), "region %#lx-%#lx (%zu pages)",
		 (unsigned long)m.addr, (unsigned long)(m.addr + m.len), npages);
	ck_assert_msg(strstr(degraded.last, limit_text) && strstr(degraded.last, region_text) &&
		      strstr(degraded.last, "writes unprotected a block"), "%s", degraded.last);
	/* degrading again is counted, not logged again */
	for (i = 1; i < npages; i += 2)
		m.addr[i * page_size] = 7;
	n = collect(t, &m, DIRTY_COLLECT_CLEAN, runs, 2000);
	ck_assert_uint_ge(n, 1);
	ck_assert_uint_eq(degraded.n, 1);
	/* after re-protection the vmas merge: tracking goes on exactly */
	write_pages(&m, (const size_t[]){ 11 }, 1);
	ck_assert_uint_eq(collect(t, &m, 0, runs, 8), 1);
	ck_assert_ptr_eq(runs[0].start, m.addr + 11 * page_size);
	munmap(filler, filler_pages * page_size);
	teardown(t, &m);
}
END_TEST

/*
 * The SIGSEGV handler runs on the stack of the thread that faults: a
 * thread whose own stack is read-only dies of SIGSEGV at its next write.
 * Such ranges are refused with the reason logged.  Each refusal runs in a
 * child, so that a library that accepted one would kill the child, not
 * the suite.  Cases: 0 the page the main thread runs on; 1 the far end of
 * a thread's own stack; 2 a page of the main thread's stack, from another
 * thread; 3 the thread's alternate signal stack (signal frames are written
 * there); 4 a coroutine's stack, from the coroutine (not under TSan, which
 * does not follow swapcontext()).
 */
struct stack_case {
	char *main_frame;  /* a page of the main thread's stack */
	int err;           /* dirty_track()'s answer */
	unsigned refusals; /* log lines that say which stack */
	const char *which; /* the words they must have */
	char *alt;         /* case 3: the alternate stack */
	size_t alt_len;
};

static void stack_log(int priority, const char *msg, void *userdata)
{
	struct stack_case *c = userdata;

	if (priority == LOG_ERR && strstr(msg, c->which))
		c->refusals++;
}

/* Track [addr, addr + len) (page aligned down), then write to the stack: the answer in c. */
static void stack_try(struct stack_case *c, uintptr_t addr, size_t len)
{
	struct dirty_options opts = { .sz = sizeof(opts), .backend = "mprotect",
				      .log = stack_log, .log_userdata = c };
	struct dirty_tracker *t;
	volatile char here[256];

	if (dirty_tracker_new(&opts, &t))
		_exit(2);
	c->err = dirty_track(t, (void *)(addr & ~(uintptr_t)(page_size - 1)), len);
	memset((char *)here, 1, sizeof(here)); /* a write to this thread's stack */
	if (dirty_tracker_region_backend(t, (void *)addr))
		c->err = 1000; /* tracked after all */
	dirty_tracker_free(t);
}

static void *stack_thread(void *p)
{
	struct stack_case *c = p;
	pthread_attr_t attr;
	void *addr;
	size_t size;

	if (c->main_frame) {
		stack_try(c, (uintptr_t)c->main_frame, page_size);
		return NULL;
	}
	/* the far end of this thread's stack, away from where it runs */
	if (pthread_getattr_np(pthread_self(), &attr) || pthread_attr_getstack(&attr, &addr, &size))
		_exit(3);
	pthread_attr_destroy(&attr);
	stack_try(c, (uintptr_t)addr + page_size, page_size);
	return NULL;
}

static struct stack_case *coroutine_case;

static void coroutine_main(void)
{
	stack_try(coroutine_case, (uintptr_t)coroutine_case->alt, coroutine_case->alt_len);
}

#if defined(__SANITIZE_THREAD__)
#define STACK_CASES 4
#else
#define STACK_CASES 5
#endif

START_TEST(test_mprotect_refuses_stacks)
{
	static const char *const which[] = { "the calling thread's stack",
					     "the calling thread's stack",
					     "the main thread's stack",
					     "the calling thread's alternate signal stack",
					     "the stack the calling thread is running on" };
	int status;
	pid_t child = fork();

	ck_assert_int_ge(child, 0);
	if (child == 0) {
		struct stack_case c = { .which = which[_i] };
		pthread_t thread;

		if (_i == 0) {
			stack_try(&c, (uintptr_t)__builtin_frame_address(0), page_size);
		} else if (_i >= 3) {
			c.alt_len = 64 * page_size;
			c.alt = mmap(NULL, c.alt_len, PROT_READ | PROT_WRITE,
				     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (c.alt == MAP_FAILED)
				_exit(7);
			if (_i == 3) {
				stack_t ss = { .ss_sp = c.alt, .ss_size = c.alt_len };

				if (sigaltstack(&ss, NULL))
					_exit(7);
				stack_try(&c, (uintptr_t)c.alt, c.alt_len);
			} else {
				ucontext_t back, coroutine;

				coroutine_case = &c;
				if (getcontext(&coroutine))
					_exit(7);
				coroutine.uc_stack = (stack_t){ .ss_sp = c.alt, .ss_size = c.alt_len };
				coroutine.uc_link = &back;
				makecontext(&coroutine, coroutine_main, 0);
				if (swapcontext(&back, &coroutine))
					_exit(7);
			}
		} else {
			c.main_frame = _i == 2 ? __builtin_frame_address(0) : NULL;
			if (pthread_create(&thread, NULL, stack_thread, &c) ||
			    pthread_join(thread, NULL))
				_exit(4);
		}
		if (c.err != -EOPNOTSUPP)
			_exit(5);
		_exit(c.refusals == 1 ? 0 : 6);
	}
	ck_assert_int_eq(waitpid(child, &status, 0), child);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "case %d, %s: the child %s %d", _i, which[_i],
		      WIFEXITED(status) ? "exited with status" : "died of signal",
		      WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}
END_TEST

/* ---- tracker flags ---- */

static unsigned long page_table_kib(void)
{
	char line[256];
	unsigned long kib = 0;
	FILE *f = fopen("/proc/self/status", "r");

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmPTE: %lu kB", &kib) == 1)
			break;
	if (f)
		fclose(f);
	return kib;
}

/*
 * A 64 GiB reservation with 64 chunks of 64 KiB touched: tracking it costs
 * page tables for what is touched, and the answers stay exact.
 */
START_TEST(test_sparse_reservation)
{
	size_t len = (size_t)64 << 30, stride = len / 64, chunk = 16 * page_size;
	struct dirty_tracker *t = tracker_new_flags(DIRTY_TRACKER_SPARSE);
	struct dirty_range runs[8];
	unsigned long before;
	char *mem;
	volatile char c;

	mem = mmap(NULL, len, PROT_READ | PROT_WRITE, base_flags | MAP_NORESERVE, -1, 0);
	ck_assert_ptr_ne(mem, MAP_FAILED);
	madvise(mem, len, MADV_NOHUGEPAGE);
	for (size_t i = 0; i < 64; i++)
		memset(mem + i * stride, 1, chunk);
	before = page_table_kib();
	ck_assert_int_eq(dirty_track(t, mem, len), 0);
	ck_assert_int_eq(dirty_collect(t, mem, len, 0, runs, 8, NULL), 0);
	/* 64 GiB of markers would be 128 MiB of page tables */
	ck_assert_uint_lt(page_table_kib(), before + 4096);
	c = mem[len / 2 + 12345 * page_size]; /* read a hole */
	(void)c;
	mem[5 * stride + 3 * page_size] = 2;  /* a touched page */
	mem[7 * stride + 999 * page_size] = 2; /* a hole */
	/* documented: the module also reports the page the read mapped */
	ck_assert_int_eq(dirty_collect(t, mem, len, DIRTY_COLLECT_CLEAN, runs, 8, NULL),
			 mapping_reads_page_tables(t) ? 3 : 2);
	ck_assert_ptr_eq(runs[0].start, mem + 5 * stride + 3 * page_size);
	ck_assert_ptr_eq(runs[1].start, mem + 7 * stride + 999 * page_size);
	ck_assert_uint_eq(runs[0].len + runs[1].len, 2 * page_size);
	ck_assert_int_eq(dirty_collect(t, mem, len, 0, runs, 8, NULL), 0);
	ck_assert_uint_lt(page_table_kib(), before + 4096);
	/*
	 * A page that held data at the last clean, written and dropped: its
	 * contents changed, to zeroes (under soft-dirty the bit left with the
	 * page-table entry: documented).
	 */
	mem[9 * stride] = 3;
	ck_assert_int_eq(madvise(mem + 9 * stride, page_size, MADV_DONTNEED), 0);
	ck_assert_int_eq(dirty_collect(t, mem, len, DIRTY_COLLECT_CLEAN, runs, 8, NULL),
			 is("soft-dirty") || mapping_reads_page_tables(t) ? 0 : 1);
	if (!is("soft-dirty") && !mapping_reads_page_tables(t))
		ck_assert_ptr_eq(runs[0].start, mem + 9 * stride);
	/*
	 * A hole written and dropped between two collects is a hole again:
	 * no change, and uffd-async sparse does not report it (the backends
	 * that record writes do).
	 */
	mem[11 * stride + 777 * page_size] = 3;
	ck_assert_int_eq(madvise(mem + 11 * stride + 777 * page_size, page_size, MADV_DONTNEED), 0);
	/* (shared memory keeps the page's contents: mapping's kernel sees a write) */
	ck_assert_int_eq(dirty_collect(t, mem, len, 0, runs, 8, NULL),
			 is("uffd-async") || is("soft-dirty") || mapping_reads_page_tables(t) ? 0 : 1);
	ck_assert_int_eq(dirty_untrack(t, mem, len), 0);
	dirty_tracker_free(t);
	munmap(mem, len);
}
END_TEST

/* The way the tracker's only region is tracked, from the stats and the call, which agree. */
static const char *way_of(struct dirty_tracker *t, struct test_mem *m)
{
	struct dirty_stats st = { .sz = sizeof(st) };
	const char *way = dirty_tracker_region_way(t, m->addr);

	ck_assert_ptr_nonnull(way);
	ck_assert_int_eq(dirty_tracker_stats(t, &st), 0);
	ck_assert_uint_eq(st.compared_regions, !strcmp(way, "compare"));
	ck_assert_uint_eq(st.unprotected_regions, st.compared_regions);
	return way;
}

/* What the cost model measured when it tracked the region (its LOG_DEBUG line). */
struct measured_costs {
	unsigned long long fault_ns, read_ns;
	bool seen;
};

static void cost_log(int priority, const char *msg, void *userdata)
{
	struct measured_costs *c = userdata;
	const char *fault = strstr(msg, "a write fault costs "), *read = strstr(msg, "reading a page costs ");

	(void)priority;
	if (!strncmp(msg, "cost: under ", 12) && fault && read &&
	    sscanf(fault, "a write fault costs %llu", &c->fault_ns) == 1 &&
	    sscanf(read, "reading a page costs %llu", &c->read_ns) == 1)
		c->seen = true;
}

/*
 * The cost model: memory written all over at every cycle is compared (a
 * read of each page costs far less than a fault on each), memory written in
 * one page is protected again (far less than a read of every page), and the
 * answers are exact throughout.  Whether a way is cheaper is measured: on
 * hardware by a factor of ten or more here, whatever the machine's speed;
 * under emulation (the qemu guests of tests/vm, TCG) a fault the kernel
 * handles alone can cost less than reading a page, and the model, seeing
 * that, rightly keeps protecting: the case is skipped there, with the costs.
 */
static void cost_ways_on(enum test_mem_kind kind, unsigned flags)
{
	static const size_t two[][2] = { { 42, 43 }, { 100, 101 } }, one[][2] = { { 3, 4 } };
	struct measured_costs costs = { 0 };
	struct dirty_options opts = { .sz = sizeof(opts), .backend = backend, .flags = flags,
				      .log = cost_log, .log_userdata = &costs };
	struct dirty_tracker *t = NULL;
	bool may_compare = !is("mapping") && !(flags & DIRTY_TRACKER_NO_COMPARE) &&
			   kind != MEM_HUGETLB;
	struct dirty_range runs[8];
	struct test_mem m;
	char why[256];
	int cycle;

	ck_assert_int_eq(dirty_tracker_new(&opts, &t), 0);
	if (!mem_map(&m, kind, 1024, why, sizeof(why))) {
		dirty_tracker_free(t);
		return;
	}
	ck_assert_int_eq(dirty_track(t, m.addr, m.len), 0);
	ck_assert_str_eq(way_of(t, &m), "protect");
	/* written all over: compared after a few cycles */
	for (cycle = 0; cycle < 32 && strcmp(way_of(t, &m), "compare"); cycle++) {
		memset(m.addr, cycle + 1, m.len);
		ck_assert_uint_eq(collect(t, &m, DIRTY_COLLECT_CLEAN, runs, 8), 1);
		ck_assert_uint_eq(runs[0].len, m.len);
	}
	/* a collect costs at least a fault a page: the model compares where reading costs less */
	if (may_compare && strcmp(way_of(t, &m), "compare")) {
		ck_assert_msg(costs.seen, "%s %s: the cost model logged no costs", backend,
			      mem_kind_name(kind));
		if (costs.read_ns * 4 >= costs.fault_ns * 3)
			test_skip("%s %s: a write fault costs %llu ns here and reading a page %llu ns "
				  "(emulated?): comparing is not the cheaper, so it stays protected",
				  backend, mem_kind_name(kind), costs.fault_ns, costs.read_ns);
	}
	ck_assert_msg(!strcmp(way_of(t, &m), may_compare ? "compare" : "protect"),
		      "%s %s: %s after %d dense cycles", backend, mem_kind_name(kind), way_of(t, &m),
		      cycle);
	/* exact, compared or not */
	write_pages(&m, (const size_t[]){ 42, 100 }, 2);
	assert_runs(&m, runs, collect(t, &m, DIRTY_COLLECT_CLEAN, runs, 8), two, 2);
	if (may_compare) {
		/* a write that leaves the bytes as they were changes nothing to report */
		m.addr[5 * m.page] = m.addr[5 * m.page];
		ck_assert_uint_eq(collect(t, &m, DIRTY_COLLECT_CLEAN, runs, 8), 0);
	}
	/* one page written a cycle: protected again, exact all along (soft-dirty's
	   clean stops the world: comparing stays the cheaper there) */
	for (cycle = 0; cycle < 32 && strcmp(way_of(t, &m), "protect"); cycle++) {
		write_pages(&m, (const size_t[]){ 3 }, 1);
		assert_runs(&m, runs, collect(t, &m, DIRTY_COLLECT_CLEAN, runs, 8), one, 1);
	}
	if (!is("soft-dirty"))
		ck_assert_msg(!strcmp(way_of(t, &m), "protect"), "%s %s: %s after %d sparse cycles",
			      backend, mem_kind_name(kind), way_of(t, &m), cycle);
	write_pages(&m, (const size_t[]){ 3 }, 1);
	assert_runs(&m, runs, collect(t, &m, DIRTY_COLLECT_CLEAN, runs, 8), one, 1);
	teardown(t, &m);
}

START_TEST(test_cost_model_ways)
{
	for (int kind = MEM_ANON; kind < MEM_HUGETLB; kind++)
		if (!kind_refused((enum test_mem_kind)kind))
			cost_ways_on((enum test_mem_kind)kind, 0);
}
END_TEST

/* DIRTY_TRACKER_NO_COMPARE: protected whatever it costs; COMPARE_COPY: compared with a copy. */
START_TEST(test_cost_model_flags)
{
	cost_ways_on(base_kind, DIRTY_TRACKER_NO_COMPARE);
	cost_ways_on(base_kind, DIRTY_TRACKER_COMPARE_COPY);
	/* the flag the cost model replaced is still taken */
	cost_ways_on(base_kind, DIRTY_TRACKER_ADAPTIVE);
}
END_TEST

/* ---- another process ---- */

/* The child: writes the page named by each index it reads, then acknowledges. */
static void other_process_main(char *mem, int cmd, int ack)
{
	size_t index;

	/* ready: its descriptors are as they stay (the parent counts them now) */
	if (write(ack, "", 1) != 1)
		_exit(1);
	while (read(cmd, &index, sizeof(index)) == sizeof(index)) {
		mem[index * page_size + 9] ^= 0x3c;
		if (write(ack, "", 1) != 1)
			break;
	}
	_exit(0);
}

/* The number of descriptors process pid has open, and its tracer's pid. */
static int fd_count(pid_t pid)
{
	char path[64];
	int n = 0;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	d = opendir(path);
	ck_assert_ptr_nonnull(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static int tracer_pid(pid_t pid)
{
	char path[64], line[256];
	int tracer = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f))
		sscanf(line, "TracerPid: %d", &tracer);
	fclose(f);
	return tracer;
}

static void other_process_write(int cmd, int ack, size_t index)
{
	char c;

	ck_assert_int_eq(write(cmd, &index, sizeof(index)), sizeof(index));
	ck_assert_int_eq(read(ack, &c, 1), 1);
}

/*
 * The pid option: the child's copy of a mapping, at the same address,
 * tracked from here, while the child waits in read(2).  soft-dirty reads
 * the child's /proc files; uffd-async makes the child create a userfaultfd
 * (remote.c).  uffd-sync and mprotect act on the calling process only;
 * mapping tracks files in every process, never one process's view.
 */
START_TEST(test_other_process)
{
	static const size_t want[][2] = { { 3, 4 }, { 10, 12 } };
	struct dirty_options opts = { .sz = sizeof(opts), .backend = backend };
	struct dirty_range runs[8];
	struct dirty_tracker *t = NULL;
	int cmd[2], ack[2], status;
	struct test_mem m;
	char why[256];

	ck_assert_msg(mem_map(&m, base_kind, 16, why, sizeof(why)), "%s", why);
	ck_assert_int_eq(pipe(cmd), 0);
	ck_assert_int_eq(pipe(ack), 0);
	opts.pid = fork();
	ck_assert_int_ge(opts.pid, 0);
	if (opts.pid == 0) {
		close(cmd[1]);
		close(ack[0]);
		other_process_main(m.addr, cmd[0], ack[1]);
	}
	close(cmd[0]);
	close(ack[1]);
	ck_assert_int_eq(read(ack[0], &(char){ 0 }, 1), 1);
	if (!is("soft-dirty") && !is("uffd-async")) {
		ck_assert_int_eq(dirty_tracker_new(&opts, &t), -EOPNOTSUPP);
	} else {
		int fds = fd_count(opts.pid);

		ck_assert_int_eq(dirty_tracker_new(&opts, &t), 0);
		/* left as it was: no descriptor of ours, not traced */
		ck_assert_int_eq(fd_count(opts.pid), fds);
		ck_assert_int_eq(tracer_pid(opts.pid), 0);
		ck_assert_int_eq(dirty_track(t, m.addr, m.len), 0);
		ck_assert_uint_eq(collect(t, &m, 0, runs, 8), 0);
		/* our own writes are not the child's */
		write_pages(&m, (const size_t[]){ 5 }, 1);
		other_process_write(cmd[1], ack[0], 3);
		other_process_write(cmd[1], ack[0], 10);
		other_process_write(cmd[1], ack[0], 11);
		assert_runs(&m, runs, collect(t, &m, DIRTY_COLLECT_CLEAN, runs, 8), want, 2);
		ck_assert_uint_eq(collect(t, &m, 0, runs, 8), 0);
		other_process_write(cmd[1], ack[0], 3);
		assert_runs(&m, runs, collect(t, &m, 0, runs, 8), want, 1);
		ck_assert_int_eq(dirty_clean(t, m.addr, m.len), 0);
		ck_assert_uint_eq(collect(t, &m, 0, runs, 8), 0);
	}
	/* the child exits: the tracker says so, and forgets */
	close(cmd[1]);
	ck_assert_int_eq(waitpid(opts.pid, &status, 0), opts.pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	if (t) {
		ck_assert_int_eq(dirty_collect(t, m.addr, m.len, 0, runs, 8, NULL), -ESRCH);
		ck_assert_int_eq(dirty_untrack(t, m.addr, m.len), 0);
		dirty_tracker_free(t);
	}
	close(ack[0]);
	mem_unmap(&m);
}
END_TEST

/* ---- mapping: a file tracked in every process that maps it ---- */

/*
 * Children map the same memfd at file offsets of their own (and so at
 * addresses of their own) and write pages of it; the parent maps none of
 * it.  Each collect reports exactly the pages written, as file offsets.
 */
static void file_writer(int fd, size_t map_first, size_t map_pages, const size_t *pages,
			size_t n)
{
	char *mem = mmap(NULL, map_pages * page_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
			 (off_t)(map_first * page_size));

	if (mem == MAP_FAILED)
		_exit(2);
	for (size_t i = 0; i < n; i++)
		mem[(pages[i] - map_first) * page_size + 5] ^= 0x66;
	/*
	 * Written; stay mapped until killed: an exit would unmap, and the
	 * kernel would move the dirty bits from the page tables to the pages
	 * (documented: such writes are not seen).
	 */
	if (write(STDOUT_FILENO, "w", 1) != 1)
		_exit(3);
	for (;;)
		pause();
}

static pid_t spawn_file_writer(int fd, size_t map_first, size_t map_pages, const size_t *pages,
			       size_t n, int *ready)
{
	int p[2];
	pid_t pid;

	ck_assert_int_eq(pipe(p), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(p[0]);
		dup2(p[1], STDOUT_FILENO);
		file_writer(fd, map_first, map_pages, pages, n);
	}
	close(p[1]);
	*ready = p[0];
	return pid;
}

/* Wait until the writer has written its pages. */
static void wait_written(pid_t pid, int ready)
{
	char c;

	ck_assert_msg(read(ready, &c, 1) == 1, "writer %d failed", (int)pid);
	close(ready);
}

static void assert_file_runs(const struct dirty_file_range *runs, ssize_t n,
			     const size_t (*want)[2], size_t nwant)
{
	ck_assert_int_eq(n, (ssize_t)nwant);
	for (size_t i = 0; i < nwant; i++) {
		ck_assert_uint_eq(runs[i].offset, want[i][0] * page_size);
		ck_assert_uint_eq(runs[i].len, (want[i][1] - want[i][0]) * page_size);
	}
}

START_TEST(test_file_across_processes)
{
	static const size_t a_pages[] = { 3, 4, 40 }, b_pages[] = { 40, 41, 100 };
	static const size_t want[][2] = { { 3, 5 }, { 40, 42 }, { 100, 101 } };
	static const size_t want_again[][2] = { { 100, 101 } };
	const size_t npages = 128;
	struct dirty_tracker *t = tracker_new(), *t2;
	struct dirty_file_range runs[8];
	uint64_t bitmap[2], next = 0;
	int status;
	pid_t child;
	int fd = memfd_create("libdirty-file", MFD_CLOEXEC), ro, ready_a, ready_b;
	pid_t a, b;
	char path[64];

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, (off_t)(npages * page_size)), 0);
	/* a read-only descriptor is refused, nothing tracked */
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ro = open(path, O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(ro, 0);
	ck_assert_int_eq(dirty_track_file(t, ro, 0, npages * page_size), -EBADF);
	ck_assert_int_eq(dirty_track_file(t, fd, 0, npages * page_size), 0);
	ck_assert_int_eq(dirty_track_file(t, fd, 8 * page_size, page_size), -EEXIST);
	ck_assert_int_eq(dirty_collect_file(t, fd, 0, npages * page_size, 0, runs, 8, &next), 0);
	ck_assert_uint_eq(next, npages * page_size);

	/* A maps pages [0, 64), B pages [32, 128): different offsets and addresses */
	a = spawn_file_writer(fd, 0, 64, a_pages, 3, &ready_a);
	b = spawn_file_writer(fd, 32, 96, b_pages, 3, &ready_b);
	wait_written(a, ready_a);
	wait_written(b, ready_b);
	/* without clean: reported, and again */
	assert_file_runs(runs, dirty_collect_file(t, fd, 0, npages * page_size, 0, runs, 8, NULL),
			 want, 3);
	/* the read-only descriptor names the same file */
	assert_file_runs(runs, dirty_collect_file(t, ro, 0, npages * page_size, 0, runs, 8, NULL),
			 want, 3);
	/* resumable: one run at a time */
	ck_assert_int_eq(dirty_collect_file(t, fd, 0, npages * page_size, DIRTY_COLLECT_CLEAN, runs,
					    1, &next), 1);
	ck_assert_uint_eq(runs[0].offset, 3 * page_size);
	ck_assert_uint_eq(next, 40 * page_size); /* the first page not examined */
	ck_assert_int_eq(dirty_collect_file_bitmap(t, fd, 0, npages * page_size, 0, bitmap), 0);
	ck_assert_uint_eq(bitmap[0], UINT64_C(3) << 40);
	ck_assert_uint_eq(bitmap[1], UINT64_C(1) << (100 - 64));
	/* a part: the clean of [96, 128) leaves 40-41 dirty */
	ck_assert_int_eq(dirty_clean_file(t, fd, 96 * page_size, 32 * page_size), 0);
	assert_file_runs(runs, dirty_collect_file(t, fd, 0, npages * page_size, DIRTY_COLLECT_CLEAN,
						  runs, 8, NULL), want + 1, 1);
	ck_assert_int_eq(dirty_collect_file(t, fd, 0, npages * page_size, 0, runs, 8, NULL), 0);
	/* B writes again (a third child, at B's offsets) */
	kill(b, SIGKILL);
	waitpid(b, NULL, 0);
	b = spawn_file_writer(fd, 32, 96, want_again[0], 1, &ready_b);
	wait_written(b, ready_b);
	assert_file_runs(runs, dirty_collect_file(t, fd, 0, npages * page_size, DIRTY_COLLECT_CLEAN,
						  runs, 8, NULL), want_again, 1);
	/*
	 * A second tracker of the same pages, in this process and in a forked
	 * child: each kernel tracker sees every write, none takes another's.
	 */
	t2 = tracker_new();
	ck_assert_int_eq(dirty_track_file(t2, fd, 96 * page_size, 32 * page_size), 0);
	kill(b, SIGKILL);
	waitpid(b, NULL, 0);
	b = spawn_file_writer(fd, 32, 96, want_again[0], 1, &ready_b);
	wait_written(b, ready_b);
	child = fork();
	ck_assert_int_ge(child, 0);
	if (child == 0) {
		/* the child's own tracker, made after the write: starts clean */
		struct dirty_tracker *tc = tracker_new();
		struct dirty_file_range r[2];

		_exit(dirty_track_file(tc, fd, 0, npages * page_size) == 0 &&
		      dirty_collect_file(tc, fd, 0, npages * page_size, 0, r, 2, NULL) == 0 ? 0 : 1);
	}
	ck_assert_int_eq(waitpid(child, &status, 0), child);
	ck_assert_int_eq(status, 0);
	assert_file_runs(runs, dirty_collect_file(t2, fd, 96 * page_size, 32 * page_size,
						  DIRTY_COLLECT_CLEAN, runs, 8, NULL), want_again, 1);
	assert_file_runs(runs, dirty_collect_file(t, fd, 0, npages * page_size, DIRTY_COLLECT_CLEAN,
						  runs, 8, NULL), want_again, 1);
	dirty_tracker_free(t2);
	/* bad ranges; a failed bitmap collect leaves the bitmap alone */
	bitmap[0] = 0xdeadbeef;
	ck_assert_int_eq(dirty_collect_file_bitmap(t, fd, 0, (npages + 64) * page_size, 0, bitmap),
			 -ENOENT);
	ck_assert_uint_eq(bitmap[0], 0xdeadbeef);
	ck_assert_int_eq(dirty_collect_file(t, fd, 0, (npages + 1) * page_size, 0, runs, 8, NULL),
			 -ENOENT);
	ck_assert_int_eq(dirty_clean_file(t, fd, page_size / 2, page_size), -EINVAL);
	ck_assert_int_eq(dirty_untrack_file(t, fd, 0, 64 * page_size), -EINVAL);
	ck_assert_int_eq(dirty_untrack_file(t, ro, 0, npages * page_size), 0);
	ck_assert_int_eq(dirty_collect_file(t, fd, 0, page_size, 0, runs, 8, NULL), -ENOENT);
	kill(a, SIGKILL);
	kill(b, SIGKILL);
	waitpid(a, NULL, 0);
	waitpid(b, NULL, 0);
	dirty_tracker_free(t);
	close(ro);
	close(fd);
}
END_TEST

/* A regular file on a disk file system is refused: the kernel's writeback cleans it too. */
START_TEST(test_file_refused_kinds)
{
	struct dirty_tracker *t = tracker_new();
	char path[] = "libdirty-file-XXXXXX";
	int fd = mkstemp(path);
	struct statfs fs;

	ck_assert_int_ge(fd, 0);
	unlink(path);
	ck_assert_int_eq(ftruncate(fd, 16 * (off_t)page_size), 0);
	ck_assert_int_eq(fstatfs(fd, &fs), 0);
	if (fs.f_type == TMPFS_MAGIC) {
		close(fd);
		dirty_tracker_free(t);
		test_skip("the working directory is tmpfs, not a disk file system: no file here "
			  "that mapping refuses");
	}
	ck_assert_int_eq(dirty_track_file(t, fd, 0, 16 * page_size), -EOPNOTSUPP);
	ck_assert_int_eq(dirty_clean_file(t, fd, 0, 16 * page_size), -ENOENT);
	close(fd);
	dirty_tracker_free(t);
}
END_TEST

/* ---- one tracker, many threads ---- */

struct api_thread {
	struct dirty_tracker *t;
	struct test_mem *shared;
	_Atomic size_t *shared_reported;
	int failures;
};

/* Each thread tracks, writes, collects and untracks regions of its own, and
 * collects-and-cleans a shared region that the others do too. */
static void *api_thread_main(void *p)
{
	struct api_thread *a = p;
	struct dirty_range runs[8];

	for (int round = 0; round < 200; round++) {
		char *mem = map_isolated(8 * page_size);
		ssize_t n;

		a->failures += dirty_track(a->t, mem, 8 * page_size) != 0;
		mem[3 * page_size] = 1;
		n = dirty_collect(a->t, mem, 8 * page_size, DIRTY_COLLECT_CLEAN, runs, 8, NULL);
		a->failures += n != 1 || runs[0].start != mem + 3 * page_size;
		a->failures += dirty_untrack(a->t, mem, 8 * page_size) != 0;
		unmap_isolated(mem, 8 * page_size);

		atomic_fetch_add_explicit(
			(_Atomic char *)&a->shared->addr[(size_t)round % 16 * page_size], 1,
			memory_order_relaxed);
		n = dirty_collect(a->t, a->shared->addr, a->shared->len, DIRTY_COLLECT_CLEAN, runs, 8,
				  NULL);
		a->failures += n < 0;
		for (ssize_t i = 0; i < n; i++)
			atomic_fetch_add(a->shared_reported, runs[i].len / page_size);
	}
	return NULL;
}

START_TEST(test_threads_share_a_tracker)
{
	struct test_mem shared;
	struct dirty_tracker *t = setup(&shared, base_kind, 16);
	_Atomic size_t reported = 0;
	struct api_thread args[4];
	pthread_t threads[4];
	struct dirty_range runs[16];

	for (int i = 0; i < 4; i++) {
		args[i] = (struct api_thread){ .t = t, .shared = &shared, .shared_reported = &reported };
		ck_assert_int_eq(pthread_create(&threads[i], NULL, api_thread_main, &args[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(threads[i], NULL);
		ck_assert_int_eq(args[i].failures, 0);
	}
	/* at least one report per distinct page written, in all */
	reported += collect(t, &shared, DIRTY_COLLECT_CLEAN, runs, 16);
	ck_assert_uint_ge(atomic_load(&reported), 16);
	teardown(t, &shared);
}
END_TEST

/* ---- no lost write ---- */

#define STRESS_PAGES 4096
#define STRESS_WRITERS 3
/*
 * At least this many writes in all and collect-and-clean rounds during them.
 * $DIRTY_TEST_STRESS_WRITES and $DIRTY_TEST_STRESS_ROUNDS lower them for
 * sanitizer builds, where the point is race detection, not volume.
 */
#define STRESS_MIN_WRITES 1200000
#define STRESS_MIN_ROUNDS 2000

static unsigned long env_or(const char *name, unsigned long fallback)
{
	const char *v = getenv(name);

	return v && *v ? strtoul(v, NULL, 10) : fallback;
}

struct stress {
	_Atomic uint64_t *mem; /* STRESS_PAGES pages, as words */
	uint64_t *mirror;
	atomic_bool stop;
	_Atomic uint64_t writes;
};

struct writer_arg {
	struct stress *s;
	unsigned id;
};

/*
 * Writes sequence numbers into random pages until told to stop.  Each writer
 * owns its own words of every page, so every word's final value is exact.
 */
static void *writer_main(void *p)
{
	struct writer_arg *a = p;
	size_t words_per_page = page_size / sizeof(uint64_t);
	uint64_t x = 0x9e3779b97f4a7c15ull * (a->id + 1), seq = 0;

	while (!atomic_load_explicit(&a->s->stop, memory_order_relaxed)) {
		for (int burst = 0; burst < 256; burst++) {
			size_t page, word;

			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			page = (size_t)(x % STRESS_PAGES);
			word = (size_t)((x >> 32) % (words_per_page / STRESS_WRITERS)) *
				       STRESS_WRITERS + a->id;
			atomic_store_explicit(&a->s->mem[page * words_per_page + word],
					      (uint64_t)a->id << 56 | ++seq, memory_order_relaxed);
		}
		atomic_fetch_add_explicit(&a->s->writes, 256, memory_order_relaxed);
	}
	return NULL;
}

static void mirror_runs(struct stress *s, const struct dirty_range *runs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		size_t first = (size_t)((uintptr_t)runs[i].start - (uintptr_t)s->mem) / sizeof(uint64_t);

		for (size_t w = 0; w < runs[i].len / sizeof(uint64_t); w++)
			s->mirror[first + w] =
				atomic_load_explicit(&s->mem[first + w], memory_order_relaxed);
	}
}

START_TEST(test_no_lost_write)
{
	struct dirty_tracker *t = tracker_new();
	size_t len = STRESS_PAGES * page_size, rounds = 0, reported = 0;
	struct writer_arg args[STRESS_WRITERS];
	pthread_t threads[STRESS_WRITERS];
	struct dirty_range *runs = calloc(STRESS_PAGES, sizeof(*runs));
	unsigned long min_writes = env_or("DIRTY_TEST_STRESS_WRITES", STRESS_MIN_WRITES);
	unsigned long min_rounds = env_or("DIRTY_TEST_STRESS_ROUNDS", STRESS_MIN_ROUNDS);
	struct stress s = { 0 };
	ssize_t n;

	s.mem = mmap(NULL, len, PROT_READ | PROT_WRITE, base_flags, -1, 0);
	ck_assert_ptr_ne(s.mem, MAP_FAILED);
	s.mirror = calloc(1, len);
	/* memory and mirror start equal: all zero, populated */
	memset((void *)s.mem, 0, len);
	ck_assert_int_eq(dirty_track(t, (void *)s.mem, len), 0);
	for (unsigned i = 0; i < STRESS_WRITERS; i++) {
		args[i] = (struct writer_arg){ .s = &s, .id = i };
		ck_assert_int_eq(pthread_create(&threads[i], NULL, writer_main, &args[i]), 0);
	}
	while (atomic_load(&s.writes) < min_writes || rounds < min_rounds) {
		n = dirty_collect(t, (void *)s.mem, len, DIRTY_COLLECT_CLEAN, runs, STRESS_PAGES,
				  NULL);
		ck_assert_int_ge(n, 0);
		mirror_runs(&s, runs, (size_t)n);
		for (ssize_t i = 0; i < n; i++)
			reported += runs[i].len / page_size;
		rounds++;
	}
	atomic_store(&s.stop, true);
	for (unsigned i = 0; i < STRESS_WRITERS; i++)
		pthread_join(threads[i], NULL);
	n = dirty_collect(t, (void *)s.mem, len, DIRTY_COLLECT_CLEAN, runs, STRESS_PAGES, NULL);
	ck_assert_int_ge(n, 0);
	mirror_runs(&s, runs, (size_t)n);
	struct dirty_stats st = { .sz = sizeof(st) };

	ck_assert_int_eq(dirty_tracker_stats(t, &st), 0);
	printf("%s: %lu writes by %d threads, %zu collect rounds, %zu pages reported, "
	       "%lu changes of way\n", backend, (unsigned long)atomic_load(&s.writes),
	       STRESS_WRITERS, rounds, reported, (unsigned long)st.way_switches);
	ck_assert_uint_ge(atomic_load(&s.writes), min_writes);
	ck_assert_uint_ge(rounds, min_rounds);
	if (getenv("LIBDIRTY_FORCE_WAYS")) {
#if LIBDIRTY_PROBE_INJECTION
		/* the point of the run: the regions changed way under the writers */
		ck_assert_uint_gt(st.way_switches, 0);
#else
		test_skip("built with -Dprobe_injection=false: $LIBDIRTY_FORCE_WAYS forces nothing");
#endif
	}
	for (size_t w = 0; w < len / sizeof(uint64_t); w++)
		ck_assert_msg(s.mirror[w] == atomic_load(&s.mem[w]),
			      "lost write: page %zu word %zu: mirror %#lx memory %#lx",
			      w * sizeof(uint64_t) / page_size, w % (page_size / 8),
			      (unsigned long)s.mirror[w], (unsigned long)atomic_load(&s.mem[w]));
	ck_assert_int_eq(dirty_untrack(t, (void *)s.mem, len), 0);
	dirty_tracker_free(t);
	munmap((void *)s.mem, len);
	free(s.mirror);
	free(runs);
}
END_TEST

/* ---- suites ---- */

static Suite *core_suite(void)
{
	Suite *s = suite_create("conformance");
	TCase *kinds = tcase_create("every memory kind");
	TCase *one = tcase_create("contract");
	/* the kinds the backend takes: [first, end), those after end refused too */
	int first = kind_refused(MEM_ANON) ? MEM_SHARED_ANON : MEM_ANON, end = first;

	while (end < MEM_HUGETLB && !kind_refused((enum test_mem_kind)end))
		end++;
	for (int k = end; k < MEM_HUGETLB; k++)
		assert(kind_refused((enum test_mem_kind)k));

	tcase_add_loop_test(kinds, test_exact_runs, first, end);
	tcase_add_loop_test(kinds, test_bitmap_equals_runs, first, end);
	tcase_add_loop_test(kinds, test_clean_without_writes, first, end);
	tcase_add_loop_test(kinds, test_resume_with_tiny_buffer, first, end);
	tcase_add_loop_test(kinds, test_clean_part_of_a_region, first, end);
	tcase_add_loop_test(kinds, test_callback_runs_and_early_stop, first, end);
	tcase_add_loop_test(kinds, test_span_over_adjacent_regions, first, end);
	tcase_add_loop_test(kinds, test_untrack_leaves_memory_alone, first, end);
	tcase_add_loop_test(kinds, test_fork, first, end);
	tcase_add_loop_test(kinds, test_track_populated_dirty, first, end);
	for (int k = MEM_ANON; k < MEM_HUGETLB; k++)
		if (kind_refused((enum test_mem_kind)k))
			tcase_add_loop_test(kinds, test_refused_kind, k, k + 1);
	suite_add_tcase(s, kinds);

	tcase_add_test(one, test_unpopulated_memory);
	tcase_add_test(one, test_dontneed);
	tcase_add_test(one, test_bad_input);
	tcase_add_test(one, test_second_tracker_cannot_overlap);
	tcase_add_test(one, test_munmap_then_use);
	tcase_add_test(one, test_mremap_then_use);
	tcase_add_test(one, test_stale_region_keeps_its_range);
	tcase_add_test(one, test_untrack_under_writers);
	tcase_add_test(one, test_kernel_writes);
	tcase_add_test(one, test_threads_share_a_tracker);
	tcase_add_test(one, test_sparse_reservation);
	tcase_add_test(one, test_cost_model_ways);
	tcase_add_test(one, test_cost_model_flags);
	tcase_add_test(one, test_other_process);
	if (is("mapping")) {
		tcase_add_test(one, test_file_across_processes);
		tcase_add_test(one, test_file_refused_kinds);
	}
	if (!strcmp(backend, "mprotect")) {
		tcase_add_test(one, test_mprotect_chains_foreign_faults);
		tcase_add_test(one, test_mprotect_foreign_fault_still_kills);
		tcase_add_test(one, test_mprotect_max_map_count);
		tcase_add_loop_test(one, test_mprotect_refuses_stacks, 0, STACK_CASES);
		tcase_set_timeout(one, 60);
	}
	suite_add_tcase(s, one);
	return s;
}

static Suite *single_test_suite(const char *name, const TTest *test, int timeout)
{
	Suite *s = suite_create(name);
	TCase *tc = tcase_create(name);

	tcase_add_test(tc, test);
	tcase_set_timeout(tc, timeout);
	suite_add_tcase(s, tc);
	return s;
}

static Suite *thp_suite(void)
{
	Suite *s = suite_create("thp");
	TCase *tc = tcase_create("huge mappings");

	tcase_add_test(tc, test_thp_base_page_granularity);
	tcase_add_test(tc, test_file_huge_mapping);
	tcase_set_timeout(tc, 30);
	suite_add_tcase(s, tc);
	return s;
}

static Suite *refused_hugetlb_suite(void)
{
	Suite *s = suite_create("hugetlb");
	TCase *tc = tcase_create("hugetlb refused");

	tcase_add_loop_test(tc, test_refused_kind, MEM_HUGETLB, MEM_HUGETLB + 1);
	suite_add_tcase(s, tc);
	return s;
}

/* Skips the whole program if this machine cannot have what the suite needs. */
static void require(const char *suite)
{
	char why[256];
	struct test_mem m;

	if (!strcmp(suite, "hugetlb")) {
		if (!mem_map(&m, MEM_HUGETLB, 4, why, sizeof(why)))
			tap_skip_all("%s", why);
		mem_unmap(&m);
	} else if (!strcmp(suite, "thp") && !strcmp(backend, "mapping")) {
		tap_skip_all("mapping takes no private anonymous memory, and huge shared-memory "
			     "mappings are kernel/tests/dirtymap-test's (the module refuses "
			     "mounts that may allocate huge pages)");
	} else if (!strcmp(suite, "thp") && !thp_enabled(why, sizeof(why))) {
		tap_skip_all("%s", why);
	}
}

int main(void)
{
	const char *suite = getenv("DIRTY_TEST_SUITE");
	Suite *s;

	tap_begin();
	backend = test_backend();
	mem_map_no_thp = is("soft-dirty");
	if (is("mapping")) {
		base_kind = MEM_SHARED_ANON;
		base_flags = MAP_SHARED | MAP_ANONYMOUS;
		mem_map_shared = true;
	}
	if (!suite)
		suite = "core";
	require(suite);
	if (!strcmp(suite, "core"))
		s = core_suite();
	else if (!strcmp(suite, "thp"))
		s = thp_suite();
	else if (!strcmp(suite, "hugetlb") && kind_refused(MEM_HUGETLB))
		s = refused_hugetlb_suite();
	else if (!strcmp(suite, "hugetlb"))
		s = single_test_suite("hugetlb", test_hugetlb_huge_page_granularity, 30);
	else if (!strcmp(suite, "stress"))
		s = single_test_suite("stress", test_no_lost_write, 600);
	else {
		fprintf(stderr, "unknown DIRTY_TEST_SUITE %s\n", suite);
		return 1;
	}
	printf("backend %s, suite %s\n", backend, suite);
	return tap_run(srunner_create(s));
}
