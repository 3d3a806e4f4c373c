/* SPDX-License-Identifier: MIT */
/*
 * The heatmap of `dirtyctl heatmap` (tools/dirtyctl/heatmap.c): the API's errors, and
 * SVGs built from known adds for tests/check-heatmap.py to parse.
 *
 *   test-heatmap OUT.svg [MANY.svg]
 *
 * OUT.svg: a few mappings (one page, 4 GiB, a name full of XML specials, one
 * that grows, one never written), a dozen intervals.  MANY.svg: 300 mappings
 * and one of 64 TiB over 1000 intervals, past both budgets.  For each file written it prints a
 * line "PATH TOTAL", then "PATH START PAGES" for each mapping written, where
 * TOTAL and PAGES are the sums of what was added.  Exits 1 on a failed check.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "heatmap.h"

#define GiB (UINT64_C(1) << 30)
#define PAGE HEATMAP_PAGE_SIZE

static int failures;

#define CHECK_EQUAL(got, want) check_equal((long long)(got), (long long)(want), #got, __LINE__)

static void check_equal(long long got, long long want, const char *what, int line)
{
	if (got == want)
		return;
	fprintf(stderr, "test-heatmap.c:%d: %s is %lld, expected %lld\n", line, what, got, want);
	failures++;
}

/* What was added, to print for the checker. */
struct expected {
	uint64_t start[512];
	uint64_t pages[512];
	uint64_t total;
};

static void add(struct heatmap *h, struct expected *e, int id, uint64_t page, uint64_t npages)
{
	int err = heatmap_add(h, id, page, npages);

	CHECK_EQUAL(err, 0);
	if (err)
		return;
	e->pages[id] += npages;
	e->total += npages;
}

static int declare(struct heatmap *h, struct expected *e, const char *name, uint64_t start,
		   uint64_t len)
{
	int id = heatmap_mapping(h, name, start, len);

	if (id < 0 || id >= 512) {
		fprintf(stderr, "heatmap_mapping(%s): %d\n", name ? name : "NULL", id);
		exit(1);
	}
	e->start[id] = start;
	return id;
}

static int write_svg(const struct heatmap *h, const struct expected *e, size_t mappings,
		     const char *path)
{
	FILE *f = fopen(path, "w");
	int err;

	if (!f) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	err = heatmap_write_svg(h, f);
	CHECK_EQUAL(err, 0);
	if (fclose(f) || err)
		return -1;
	printf("%s %" PRIu64 "\n", path, e->total);
	for (size_t i = 0; i < mappings; i++)
		if (e->pages[i])
			printf("%s 0x%" PRIx64 " %" PRIu64 "\n", path, e->start[i], e->pages[i]);
	return 0;
}

/* Every refusal leaves the heatmap as it was; checked by the totals later. */
static void test_errors(struct heatmap *h, int tiny)
{
	CHECK_EQUAL(heatmap_mapping(NULL, "x", 0x1000, PAGE), -EINVAL);
	CHECK_EQUAL(heatmap_mapping(h, "x", 0x1000, 0), -EINVAL);
	CHECK_EQUAL(heatmap_mapping(h, "x", UINT64_MAX - PAGE + 2, PAGE), -ERANGE);
	CHECK_EQUAL(heatmap_add(h, tiny, 0, 1), -EINVAL);	/* no interval yet */
	CHECK_EQUAL(heatmap_interval(NULL, 0, 1), -EINVAL);
	CHECK_EQUAL(heatmap_interval(h, 1, 1), -EINVAL);
	CHECK_EQUAL(heatmap_interval(h, -1, 1), -EINVAL);
	CHECK_EQUAL(heatmap_interval(h, 0, INFINITY), -EINVAL);
	CHECK_EQUAL(heatmap_write_svg(NULL, stdout), -EINVAL);
	CHECK_EQUAL(heatmap_write_svg(h, NULL), -EINVAL);
}

/* The SVG of @h in memory (NULL on failure), and the result of writing it. */
static char *svg_text(const struct heatmap *h, int *ret_err)
{
	char *text = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&text, &size);

	if (!f) {
		*ret_err = -errno;
		return NULL;
	}
	*ret_err = heatmap_write_svg(h, f);
	fclose(f);
	return text;
}

/* Nothing to draw still makes a picture; a write error is -EIO. */
static void test_edges(void)
{
	struct heatmap *h = heatmap_new(NULL);
	FILE *full = fopen("/dev/full", "w");
	char *text;
	int err, id;

	if (!h) {
		failures++;
		return;
	}
	text = svg_text(h, &err);	/* no mapping, no interval */
	CHECK_EQUAL(err, 0);
	CHECK_EQUAL(text && strstr(text, "data-total-pages=\"0\""), 1);
	CHECK_EQUAL(text && strstr(text, "no intervals recorded") != NULL, 1);
	free(text);

	id = heatmap_mapping(h, "[heap]", 0x1000, 3 * PAGE);
	CHECK_EQUAL(id, 0);
	CHECK_EQUAL(heatmap_interval(h, 0, 0.5), 0);
	CHECK_EQUAL(heatmap_interval(h, 0.5, 1), 0);
	text = svg_text(h, &err);	/* intervals, nothing written */
	CHECK_EQUAL(err, 0);
	CHECK_EQUAL(text && strstr(text, "data-pages=") == NULL, 1);
	CHECK_EQUAL(text && strstr(text, "other: 1 mapping never written") != NULL, 1);
	free(text);

	if (full) {
		CHECK_EQUAL(heatmap_add(h, id, 2, 1), 0);
		/* setvbuf: a buffer smaller than the SVG, so the error shows before fflush */
		setvbuf(full, NULL, _IOFBF, 512);
		CHECK_EQUAL(heatmap_write_svg(h, full), -EIO);
		fclose(full);
	}
	heatmap_free(h);
	heatmap_free(NULL);
}

static int build_small(const char *path)
{
	static struct expected e;
	char title[512] = "./workload --name='<&>\"' $'\xff\n'";
	struct heatmap *h;
	int tiny, big, heap, odd, grows, stack, never, bad_utf8, err;

	/* XML specials, a byte that is not UTF-8, a newline; too long for one line */
	for (int i = 1; i <= 30; i++)
		snprintf(title + strlen(title), sizeof(title) - strlen(title), " arg%d", i);
	strcat(title, " (pid 1234), uffd-async, every 1 s");
	h = heatmap_new(title);
	if (!h)
		return -1;
	/* declared out of address order: the drawing sorts them */
	big = declare(h, &e, "/memfd:big (deleted)", 0x7f0000000000, 4 * GiB);
	tiny = declare(h, &e, "/usr/lib/x86_64-linux-gnu/libc.so.6", 0x7fff00000000, PAGE);
	heap = declare(h, &e, "[heap]", 0x555555559000, 33 * PAGE);
	odd = declare(h, &e, "/tmp/a <b> & \"c\" 'd'.dat", 0x7e0000000000, 64 * PAGE);
	grows = declare(h, &e, NULL, 0x7d0000000000, 16 * PAGE);
	stack = declare(h, &e, "[stack]", 0x7ffffffde000, 132 * 1024);
	never = declare(h, &e, "/usr/lib/locale/C.utf8/LC_CTYPE", 0x7c0000000000, 1024 * PAGE);
	bad_utf8 = declare(h, &e, "/tmp/caf\xc3\xa9-\xff\xfe-\x01.bin", 0x7b0000000000, 8 * PAGE);
	(void)never;

	test_errors(h, tiny);
	/* the same start again: the same id, the name and length updated */
	CHECK_EQUAL(heatmap_mapping(h, "[heap]", 0x555555559000, 66 * PAGE), heap);

	for (int k = 0; k < 12; k++) {
		err = heatmap_interval(h, k, k + 1);
		CHECK_EQUAL(err, 0);
		if (k == 0) {
			CHECK_EQUAL(heatmap_add(h, -1, 0, 1), -EINVAL);
			CHECK_EQUAL(heatmap_add(h, 99, 0, 1), -EINVAL);
			CHECK_EQUAL(heatmap_add(h, tiny, 1, 1), -ERANGE);
			CHECK_EQUAL(heatmap_add(h, tiny, 0, 2), -ERANGE);
			CHECK_EQUAL(heatmap_add(h, big, UINT64_MAX, 2), -ERANGE);
			CHECK_EQUAL(heatmap_add(h, big, 4 * GiB / PAGE, 1), -ERANGE);
			CHECK_EQUAL(heatmap_add(h, tiny, 0, 0), 0);
			/* intervals in order only */
			CHECK_EQUAL(heatmap_interval(h, -0.5, 0.5), -EINVAL);
		}
		/* the one page, every other interval */
		if (k % 2 == 0)
			add(h, &e, tiny, 0, 1);
		/* 1 GiB in one call, spanning many buckets, then the last page */
		if (k == 3)
			add(h, &e, big, 3 * GiB / PAGE / 4, GiB / PAGE);
		if (k >= 5)
			add(h, &e, big, 4 * GiB / PAGE - 1, 1);
		/* a sweep through a 4 MiB window of the big mapping */
		add(h, &e, big, (uint64_t)k * 1024, 1024);
		/* the heap: its first and last pages, more of it as it goes */
		add(h, &e, heap, 0, 1 + (uint64_t)k);
		add(h, &e, heap, 65, 1);
		if (k == 6)
			add(h, &e, odd, 10, 40);
		add(h, &e, stack, 32, 1);
		if (k == 8)
			add(h, &e, bad_utf8, 7, 1);
		/* a mapping that grows while written: its buckets coarsen */
		if (k < 11) {
			uint64_t pages = UINT64_C(16) << k;

			add(h, &e, grows, pages - 1, 1);
			CHECK_EQUAL(heatmap_mapping(h, NULL, 0x7d0000000000, 2 * pages * PAGE), grows);
			add(h, &e, grows, 0, pages);
		}
	}
	/* write_svg is const: the unfinished last interval is drawn too */
	err = write_svg(h, &e, 512, path);
	heatmap_free(h);
	return err;
}

/* 301 mappings, 1000 intervals: both budgets, rows and columns, are hit. */
static int build_many(const char *path)
{
	static struct expected e;
	struct heatmap *h = heatmap_new("many mappings, many intervals");
	uint64_t x = 88172645463325252ull;
	int ids[300], huge, err;

	if (!h)
		return -1;
	for (int i = 0; i < 300; i++) {
		char name[64];

		snprintf(name, sizeof(name), "/usr/lib/lib%03d.so", i);
		ids[i] = declare(h, &e, name, 0x7f0000000000 + (uint64_t)i * GiB,
				 (uint64_t)(1 + i % 17) * (i % 50 ? 16 : 65536) * PAGE);
	}
	/* 64 TiB: 2^27 pages a bucket */
	huge = declare(h, &e, "[anon:huge reservation]", 0x600000000000, UINT64_C(1) << 46);
	for (int k = 0; k < 1000; k++) {
		err = heatmap_interval(h, k * 0.1, (k + 1) * 0.1);
		CHECK_EQUAL(err, 0);
		/* 40 times over in one interval: over UINT32_MAX pages a bucket */
		for (int j = 0; k == 500 && j < 40; j++)
			add(h, &e, huge, 0, (UINT64_C(1) << 46) / PAGE);
		if (k == 501)
			add(h, &e, huge, (UINT64_C(1) << 34) - 1, 1);
		for (int j = 0; j < 20; j++) {
			int i = (int)((x >> 7) % 280);	/* the last 20 are never written */
			uint64_t pages = (uint64_t)(1 + i % 17) * (i % 50 ? 16 : 65536);
			uint64_t first = (x >> 20) % pages;

			add(h, &e, ids[i], first, 1 + (x >> 40) % (pages - first));
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		}
	}
	err = write_svg(h, &e, 301, path);
	heatmap_free(h);
	return err;
}

int main(int argc, char **argv)
{
	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: test-heatmap OUT.svg [MANY.svg]\n");
		return 2;
	}
	test_edges();
	if (build_small(argv[1]) || (argc == 3 && build_many(argv[2])) || failures) {
		fprintf(stderr, "test-heatmap: FAILED (%d failed checks)\n", failures);
		return 1;
	}
	return 0;
}
