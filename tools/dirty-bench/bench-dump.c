/* SPDX-License-Identifier: MIT */
/*
 * dirty-bench --dump: how fast are dirty pages written out?  A region of
 * memory (1 GiB by default) has 1 %, 10 % or 100 % of its pages dirty,
 * scattered at random; each method writes them to a fresh file, on tmpfs
 * (/dev/shm) and on a disk file system (--dir, default the working
 * directory):
 *   libdirty:io_uring  dirty_image_write(): collect-and-clean, then io_uring
 *   libdirty:pwritev   the same with DIRTY_IMAGE_PWRITEV
 *   raw:pwrite-loop    one pwrite(2) per dirty page, the pages known already
 *   raw:pwritev        pwritev(2) over the coalesced runs, IOV_MAX at a time
 * The raw methods do not collect: they are given the page list, so the
 * library pays for its collect on top.  Writes are buffered (no fsync):
 * this is the cost of getting the pages to the page cache, which is what a
 * dumper pays per cycle.  The median of --reps runs is reported; every
 * library image is verified (a wrong one aborts).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "libdirty.h"
#include "bench-dump.h"
#include "json.h"

/* the kernel's base page (4 KiB on x86-64; 4, 16 or 64 KiB on arm64) */
#define PAGE ((size_t)sysconf(_SC_PAGESIZE))
#define MAX_REPS 15

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

enum method { LIB_URING, LIB_PWRITEV, RAW_LOOP, RAW_PWRITEV, NMETHODS };
static const char *const method_names[] = { "libdirty:io_uring", "libdirty:pwritev",
					    "raw:pwrite-loop", "raw:pwritev" };

struct dump_bench {
	char *mem;
	size_t len, npages;
	size_t *dirty; /* page indexes, sorted */
	size_t ndirty;
	struct dirty_tracker *t;
	const char *io_uring_method; /* what the library said it used */
};

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* Choose fraction of the pages at random (sorted), and write to each. */
static void choose_and_dirty(struct dump_bench *b, double fraction)
{
	size_t want = (size_t)(b->npages * fraction), n = 0;

	if (fraction >= 1.0) {
		for (size_t i = 0; i < b->npages; i++)
			b->dirty[n++] = i;
	} else {
		/* a random subset in order: each page with the probability left */
		for (size_t i = 0; i < b->npages && n < want; i++)
			if (rng() % (b->npages - i) < want - n)
				b->dirty[n++] = i;
	}
	b->ndirty = n;
}

static void dirty_pages(struct dump_bench *b, unsigned round)
{
	for (size_t i = 0; i < b->ndirty; i++)
		b->mem[b->dirty[i] * PAGE + 8] = (char)round;
}

static int fresh_file(const char *dir)
{
	char path[4200];
	int fd;

	snprintf(path, sizeof(path), "%s/dirty-bench-dump-XXXXXX", dir);
	fd = mkstemp(path);
	if (fd >= 0)
		unlink(path);
	return fd;
}

static int raw_loop(struct dump_bench *b, int fd)
{
	for (size_t i = 0; i < b->ndirty; i++)
		if (pwrite(fd, b->mem + b->dirty[i] * PAGE, PAGE, (off_t)(i * PAGE)) != (ssize_t)PAGE)
			return -1;
	return 0;
}

static int raw_pwritev(struct dump_bench *b, int fd)
{
	struct iovec iov[IOV_MAX];
	off_t off = 0;
	size_t i = 0;

	while (i < b->ndirty) {
		int n = 0;
		ssize_t want = 0, done;

		while (i < b->ndirty && n < IOV_MAX) {
			size_t j = i + 1;

			while (j < b->ndirty && b->dirty[j] == b->dirty[j - 1] + 1)
				j++;
			iov[n].iov_base = b->mem + b->dirty[i] * PAGE;
			iov[n++].iov_len = (j - i) * PAGE;
			want += (ssize_t)((j - i) * PAGE);
			i = j;
		}
		done = pwritev(fd, iov, n, off);
		if (done != want)
			return -1; /* a short write to a local file means the disk is full */
		off += done;
	}
	return 0;
}

static int lib_write(struct dump_bench *b, int fd, bool pwritev_only)
{
	struct dirty_range region = { b->mem, b->len };
	struct dirty_image_options opts = {
		.sz = sizeof(opts),
		.flags = DIRTY_IMAGE_CLEAN | (pwritev_only ? DIRTY_IMAGE_PWRITEV : 0),
	};
	struct dirty_image_stats st = { .sz = sizeof(st) };
	int err = dirty_image_write(b->t, &region, NULL, 1, &opts, fd, &st);

	if (err)
		return err;
	if (st.pages != b->ndirty) {
		fprintf(stderr, "dirty-bench: the image holds %llu pages, %zu were written\n",
			(unsigned long long)st.pages, b->ndirty);
		exit(1);
	}
	if (!pwritev_only)
		b->io_uring_method = st.method;
	return 0;
}

/* The benchmark is no good if the images are not: check each one, untimed. */
static void lib_verify(int fd)
{
	int err;

	lseek(fd, 0, SEEK_SET);
	err = dirty_image_verify(fd, NULL);
	if (err) {
		fprintf(stderr, "dirty-bench: the image does not verify: %s\n", strerror(-err));
		exit(1);
	}
}

/* The median time of one method writing the current dirty set to dir. */
static double measure(struct dump_bench *b, enum method m, const char *dir, int reps)
{
	double times[MAX_REPS];

	for (int r = 0; r < reps; r++) {
		int fd = fresh_file(dir), err;
		double t0;

		if (fd < 0) {
			fprintf(stderr, "dirty-bench: cannot create a file in %s: %s\n", dir,
				strerror(errno));
			exit(1);
		}
		/* the same pages are dirty for every method and every run */
		dirty_pages(b, (unsigned)r);
		t0 = now_ms();
		switch (m) {
		case LIB_URING:
		case LIB_PWRITEV:
			err = lib_write(b, fd, m == LIB_PWRITEV);
			break;
		case RAW_LOOP:
			err = raw_loop(b, fd);
			break;
		default:
			err = raw_pwritev(b, fd);
			break;
		}
		times[r] = now_ms() - t0;
		if (!err && (m == LIB_URING || m == LIB_PWRITEV))
			lib_verify(fd);
		close(fd);
		if (err) {
			fprintf(stderr, "dirty-bench: %s failed: %s\n", method_names[m],
				strerror(err < 0 ? -err : errno));
			exit(1);
		}
	}
	qsort(times, (size_t)reps, sizeof(times[0]), cmp_double);
	return times[reps / 2];
}

/* One result of --json; the directory is the user's --dir: any bytes. */
static void write_result_json(FILE *json, bool first, const char *fs, const char *dir,
			      double fraction, size_t pages, const char *method, double ms,
			      double mib_per_s, double speedup)
{
	fprintf(json, "%s{\"fs\": ", first ? "" : ", ");
	json_string(json, fs);
	fputs(", \"dir\": ", json);
	json_string(json, dir);
	fprintf(json, ", \"fraction\": %g, \"pages\": %zu, \"method\": ", fraction, pages);
	json_string(json, method);
	fprintf(json, ", \"ms\": %.3f, \"mib_per_s\": %.1f, \"speedup_vs_pwrite_loop\": %.3f}",
		ms, mib_per_s, speedup);
}

int bench_dump_main(size_t size, const char *disk_dir, int reps, FILE *json)
{
	static const double fractions[] = { 0.01, 0.10, 1.0 };
	const char *dirs[2] = { "/dev/shm", disk_dir }, *dir_names[2] = { "tmpfs", "disk" };
	struct dump_bench b = { .len = size, .npages = size / PAGE };
	struct dirty_options opts = { .sz = sizeof(opts) };
	bool first = true;
	int err;

	if (reps < 1 || reps > MAX_REPS || size < (1u << 20) || size % PAGE) {
		fprintf(stderr, "dirty-bench: bad --dump options\n");
		return 2;
	}
	b.mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	b.dirty = calloc(b.npages, sizeof(*b.dirty));
	if (b.mem == MAP_FAILED || !b.dirty) {
		fprintf(stderr, "dirty-bench: out of memory\n");
		return 1;
	}
	madvise(b.mem, size, MADV_NOHUGEPAGE);
	memset(b.mem, 1, size);
	err = dirty_tracker_new(&opts, &b.t);
	if (!err)
		err = dirty_track(b.t, b.mem, size);
	if (err) {
		fprintf(stderr, "dirty-bench: cannot track: %s\n", strerror(-err));
		return 1;
	}
	printf("dump: %zu MiB of memory, scattered dirty pages written to a fresh file, buffered; "
	       "median of %d; backend %s\n\n", size >> 20, reps, dirty_tracker_backend(b.t));
	printf("%-6s %6s %8s  %-18s %9s %10s %14s\n", "fs", "dirty", "pages", "method", "ms",
	       "MiB/s", "x pwrite-loop");
	if (json) {
		fprintf(json, "{\"size\": %zu, \"reps\": %d, \"backend\": ", size, reps);
		json_string(json, dirty_tracker_backend(b.t));
		fputs(", \"results\": [", json);
	}
	for (int d = 0; d < 2; d++) {
		for (size_t f = 0; f < sizeof(fractions) / sizeof(fractions[0]); f++) {
			double ms[NMETHODS];

			choose_and_dirty(&b, fractions[f]);
			/* the tracker's state: clean, then exactly this set dirty */
			dirty_clean(b.t, b.mem, size);
			for (int m = 0; m < NMETHODS; m++)
				ms[m] = measure(&b, (enum method)m, dirs[d], reps);
			for (int m = 0; m < NMETHODS; m++) {
				double mib = b.ndirty * (double)PAGE / (1 << 20);

				printf("%-6s %5.0f%% %8zu  %-18s %9.2f %10.1f %13.2fx\n", dir_names[d],
				       fractions[f] * 100, b.ndirty, method_names[m], ms[m],
				       mib / (ms[m] / 1e3), ms[RAW_LOOP] / ms[m]);
				if (json)
					write_result_json(json, first, dir_names[d], dirs[d],
							  fractions[f], b.ndirty, method_names[m],
							  ms[m], mib / (ms[m] / 1e3),
							  ms[RAW_LOOP] / ms[m]);
				first = false;
			}
			printf("\n");
		}
	}
	printf("libdirty:io_uring wrote with: %s\n", b.io_uring_method ? b.io_uring_method : "?");
	if (json) {
		fputs("], \"io_uring_method\": ", json);
		json_string(json, b.io_uring_method ? b.io_uring_method : "");
		fputs("}\n", json);
	}
	dirty_tracker_free(b.t);
	munmap(b.mem, size);
	free(b.dirty);
	return 0;
}
