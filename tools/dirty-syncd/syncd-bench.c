/* SPDX-License-Identifier: MIT */
/*
 * dirty-syncd-bench: what a flush of dirty-syncd costs on a sink, against
 * uploading the whole buffer, at 0.1, 1, 10 and 100 % of its pages dirty.
 *
 * A memfd buffer (--size MiB, default 256) is tracked by libdirty in this
 * process (the automatic backend: uffd-async on shared memory where the
 * kernel has it), as the daemon tracks a producer.  Each cycle writes a word
 * to each page of a random set (scattered pages, or runs of 64 pages), then
 *   dirty flush: collect-and-clean (dirty_collect_bitmap), the region plan
 *                (--align, --max-regions), the sink's upload, which returns
 *                once the device has the data;
 *   whole upload: the sink's upload of one region, the whole buffer.
 * Each is timed; the medians of --cycles cycles (after one to warm up) are
 * reported with the dirty flush's MiB/s (of dirty data per second of flush)
 * and its time as a fraction of the whole upload's.  The sink's copy is read
 * back and compared with the buffer after the first and the last dirty flush
 * of each fraction (untimed): a wrong answer ends the run with status 1.
 *
 * Exit 0, 1 (a failure or a wrong copy), 2 (usage), 3 (the sink cannot run
 * here: the reason is printed), 77 with --quick where the sink cannot run
 * (a skip for the test suite).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "libdirty.h"
#include "syncd-regions.h"
#include "syncd-sink.h"

#define RUN_PAGES 64

static const double fractions[] = { 0.001, 0.01, 0.1, 1.0 };
#define NFRACTIONS (sizeof(fractions) / sizeof(fractions[0]))

struct options {
	const char *sink_type, *sink, *json, *pattern;
	uint64_t size, align, max_regions;
	unsigned cycles;
	bool quick;
};

/* One fraction's medians and counts. */
struct result {
	double fraction;
	uint64_t pages, runs, regions, dirty_bytes, bytes;
	double collect_ms, upload_ms, flush_ms, whole_ms;
};

struct bench {
	struct options o;
	int fd;
	unsigned char *buf;
	uint64_t npages;
	size_t page;
	struct syncd_source source;
	struct syncd_sink sink;
	struct dirty_tracker *tracker;
	uint64_t *marked, *pages;
	struct syncd_region *regions;
	unsigned char *readback;
	int readback_fd;
	uint64_t random, stamp;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000 + (uint64_t)ts.tv_nsec;
}

static uint64_t next_random(struct bench *b)
{
	uint64_t z = (b->random += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static int compare_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, unsigned n)
{
	qsort(v, n, sizeof(*v), compare_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/*
 * Write a word to each of count pages, chosen at random: scattered pages, or
 * runs of RUN_PAGES pages at RUN_PAGES-aligned places (a partial
 * Fisher-Yates shuffle of the pages' or the runs' numbers: no page twice).
 * Each word is new, so that a copy that misses a page is seen.
 */
static void write_pages(struct bench *b, uint64_t count)
{
	uint64_t unit = strcmp(b->o.pattern, "runs") ? 1 : RUN_PAGES;
	uint64_t units = (b->npages + unit - 1) / unit, done = 0;

	for (uint64_t i = 0; done < count && i < units; i++) {
		uint64_t j = i + next_random(b) % (units - i), u = b->pages[j];

		b->pages[j] = b->pages[i];
		b->pages[i] = u;
		for (uint64_t p = u * unit; p < (u + 1) * unit && p < b->npages && done < count;
		     p++, done++)
			memcpy(b->buf + p * b->page + (b->stamp % (b->page / 8)) * 8, &b->stamp, 8);
	}
	b->stamp++;
}

/* The sink holds what the buffer holds (read back, compared page by page). */
static int check_copy(struct bench *b, const char *when)
{
	int err = b->sink.ops->read_back(&b->sink, b->readback_fd);

	if (err) {
		fprintf(stderr, "dirty-syncd-bench: read back %s: %s\n", when, strerror(-err));
		return -1;
	}
	for (uint64_t p = 0; p < b->npages; p++)
		if (memcmp(b->buf + p * b->page, b->readback + p * b->page, b->page)) {
			fprintf(stderr, "dirty-syncd-bench: %s: page %" PRIu64 " of the sink differs "
				"from the buffer\n", when, p);
			return -1;
		}
	return 0;
}

/* Collect-and-clean, plan, upload: times in ms; the plan's numbers in *st. */
static int dirty_flush(struct bench *b, struct syncd_flush_stats *st, double *collect_ms,
		       double *upload_ms)
{
	uint64_t t0 = now_ns(), t1, t2;
	ssize_t n;
	int err;

	memset(b->marked, 0, (b->npages + 63) / 64 * sizeof(*b->marked));
	err = dirty_collect_bitmap(b->tracker, b->buf, b->npages * b->page, DIRTY_COLLECT_CLEAN,
				   b->marked);
	if (err) {
		fprintf(stderr, "dirty-syncd-bench: collect: %s\n", strerror(-err));
		return -1;
	}
	t1 = now_ns();
	n = syncd_plan(b->marked, b->npages, b->page, b->npages * b->page, b->sink.align,
		       b->sink.max_regions, b->regions, st);
	err = n < 0 ? (int)n : n ? b->sink.ops->upload(&b->sink, b->regions, (size_t)n) : 0;
	t2 = now_ns();
	if (err) {
		fprintf(stderr, "dirty-syncd-bench: upload: %s\n", strerror(-err));
		return -1;
	}
	*collect_ms = (double)(t1 - t0) / 1e6;
	*upload_ms = (double)(t2 - t1) / 1e6;
	return 0;
}

static int whole_upload(struct bench *b, double *ms)
{
	struct syncd_region all = { 0, b->npages * b->page };
	uint64_t t0 = now_ns();
	int err = b->sink.ops->upload(&b->sink, &all, 1);

	*ms = (double)(now_ns() - t0) / 1e6;
	if (err)
		fprintf(stderr, "dirty-syncd-bench: whole upload: %s\n", strerror(-err));
	return err ? -1 : 0;
}

static int run_fraction(struct bench *b, double fraction, struct result *r)
{
	unsigned n = b->o.cycles;
	double *collect = calloc(n, sizeof(double)), *upload = calloc(n, sizeof(double));
	double *flush = calloc(n, sizeof(double)), *whole = calloc(n, sizeof(double));
	uint64_t count = (uint64_t)((double)b->npages * fraction + 0.5);
	struct syncd_flush_stats st = { 0 };
	int err = collect && upload && flush && whole ? 0 : -1;

	if (!count)
		count = 1;
	/*
	 * One cycle to warm up (not counted), then n.  Every other cycle the
	 * whole upload goes first, so that neither gains from coming second;
	 * not in the first and the last, whose dirty flush is checked.
	 */
	for (unsigned c = 0; !err && c <= n; c++) {
		bool whole_first = c % 2 && c != n;
		double collect_ms, upload_ms, whole_ms;

		write_pages(b, count);
		if (whole_first)
			err = whole_upload(b, &whole_ms);
		if (!err)
			err = dirty_flush(b, &st, &collect_ms, &upload_ms);
		if (!err && st.dirty_bytes < count * b->page) {
			fprintf(stderr, "dirty-syncd-bench: %" PRIu64 " pages written, %" PRIu64
				" collected\n", count, st.dirty_bytes / b->page);
			err = -1;
		}
		if (!err && (c == 0 || c == n))
			err = check_copy(b, c ? "after the last dirty flush" :
					 "after the first dirty flush");
		if (!err && !whole_first)
			err = whole_upload(b, &whole_ms);
		if (err || !c)
			continue;
		collect[c - 1] = collect_ms;
		upload[c - 1] = upload_ms;
		flush[c - 1] = collect_ms + upload_ms;
		whole[c - 1] = whole_ms;
	}
	if (!err) {
		*r = (struct result){
			.fraction = fraction, .pages = count, .runs = st.runs, .regions = st.regions,
			.dirty_bytes = st.dirty_bytes, .bytes = st.bytes,
			.collect_ms = median(collect, n), .upload_ms = median(upload, n),
			.flush_ms = median(flush, n), .whole_ms = median(whole, n),
		};
	}
	free(collect);
	free(upload);
	free(flush);
	free(whole);
	return err;
}

static double mib_per_s(uint64_t bytes, double ms)
{
	return ms > 0 ? (double)bytes / (1 << 20) / (ms / 1000) : 0;
}

static void print_table(const struct bench *b, const struct result *r, size_t n)
{
	printf("%-8s %9s %8s %8s %9s %10s %10s %10s %10s %10s %10s %8s\n", "dirty", "pages",
	       "runs", "regions", "MiB", "collect", "upload", "flush", "MiB/s", "whole",
	       "whole MiB/s", "ratio");
	for (size_t i = 0; i < n; i++)
		printf("%7.1f%% %9" PRIu64 " %8" PRIu64 " %8" PRIu64 " %9.2f %8.3fms %8.3fms %8.3fms "
		       "%10.0f %8.3fms %11.0f %8.4f\n", r[i].fraction * 100, r[i].pages, r[i].runs,
		       r[i].regions, (double)r[i].bytes / (1 << 20), r[i].collect_ms, r[i].upload_ms,
		       r[i].flush_ms, mib_per_s(r[i].dirty_bytes, r[i].flush_ms), r[i].whole_ms,
		       mib_per_s(b->npages * b->page, r[i].whole_ms), r[i].flush_ms / r[i].whole_ms);
	printf("(collect: libdirty's collect-and-clean; upload: the region plan and the sink's "
	       "upload, to the fence; flush = collect + upload; MiB/s: dirty data per second of "
	       "flush; whole: the whole buffer uploaded as one region; ratio = flush / whole, "
	       "medians of %u cycles)\n", b->o.cycles);
}

static int write_json(const struct bench *b, const struct result *r, size_t n)
{
	FILE *f = fopen(b->o.json, "w");
	struct utsname u;
	char cpu[256] = "unknown", line[512];
	FILE *info = fopen("/proc/cpuinfo", "r");

	if (!f) {
		fprintf(stderr, "dirty-syncd-bench: %s: %s\n", b->o.json, strerror(errno));
		return -1;
	}
	while (info && fgets(line, sizeof(line), info))
		if (sscanf(line, "model name : %255[^\n]", cpu) == 1)
			break;
	if (info)
		fclose(info);
	uname(&u);
	fputs("{\"machine\": {\"kernel\": ", f);
	json_string(f, u.release);
	fprintf(f, ", \"cpus\": %ld, \"cpu\": ", sysconf(_SC_NPROCESSORS_ONLN));
	json_string(f, cpu);
	fprintf(f, ", \"page_size\": %zu}, \"sink\": ", b->page);
	json_string(f, b->sink.ops->name);
	fputs(", \"sink_description\": ", f);
	json_string(f, b->sink.description);
	fputs(", \"backend\": ", f);
	json_string(f, dirty_tracker_backend(b->tracker));
	fputs(", \"pattern\": ", f);
	json_string(f, b->o.pattern);
	fprintf(f, ", \"size\": %" PRIu64 ", \"align\": %" PRIu64 ", \"max_regions\": %" PRIu64
		", \"cycles\": %u, \"results\": [", b->npages * b->page, b->sink.align,
		b->sink.max_regions, b->o.cycles);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%s\n  {\"fraction\": %g, \"pages\": %" PRIu64 ", \"runs\": %" PRIu64
			", \"regions\": %" PRIu64 ", \"dirty_bytes\": %" PRIu64 ", \"bytes\": %" PRIu64
			", \"collect_ms\": %.4f, \"upload_ms\": %.4f, \"flush_ms\": %.4f, "
			"\"whole_ms\": %.4f, \"flush_mib_s\": %.1f, \"whole_mib_s\": %.1f, "
			"\"ratio\": %.5f}", i ? "," : "", r[i].fraction, r[i].pages, r[i].runs,
			r[i].regions, r[i].dirty_bytes, r[i].bytes, r[i].collect_ms, r[i].upload_ms,
			r[i].flush_ms, r[i].whole_ms, mib_per_s(r[i].dirty_bytes, r[i].flush_ms),
			mib_per_s(b->npages * b->page, r[i].whole_ms), r[i].flush_ms / r[i].whole_ms);
	fputs("\n]}\n", f);
	return fclose(f) ? -1 : 0;
}

/* The buffer, its tracker and the sink; an exit status on failure (3: the sink cannot run). */
static int set_up(struct bench *b)
{
	char why[512] = "";
	int err;

	b->page = (size_t)sysconf(_SC_PAGESIZE);
	b->npages = b->o.size / b->page;
	b->fd = memfd_create("dirty-syncd-bench", MFD_CLOEXEC);
	b->readback_fd = memfd_create("dirty-syncd-bench-readback", MFD_CLOEXEC);
	if (b->fd < 0 || b->readback_fd < 0 || ftruncate(b->fd, (off_t)b->o.size) ||
	    ftruncate(b->readback_fd, (off_t)b->o.size)) {
		perror("dirty-syncd-bench: memfd");
		return 1;
	}
	b->buf = mmap(NULL, b->o.size, PROT_READ | PROT_WRITE, MAP_SHARED, b->fd, 0);
	b->readback = mmap(NULL, b->o.size, PROT_READ, MAP_SHARED, b->readback_fd, 0);
	if (b->buf == MAP_FAILED || b->readback == MAP_FAILED) {
		perror("dirty-syncd-bench: mmap");
		return 1;
	}
	b->marked = calloc((b->npages + 63) / 64, sizeof(*b->marked));
	b->pages = calloc(b->npages, sizeof(*b->pages));
	b->regions = calloc(syncd_max_runs(b->npages), sizeof(*b->regions));
	if (!b->marked || !b->pages || !b->regions)
		return 1;
	/* the numbers of the pages, or of the runs, that write_pages() shuffles */
	for (uint64_t p = 0; p < b->npages; p++)
		b->pages[p] = p;
	b->source = (struct syncd_source){ .fd = b->fd, .map = b->buf, .size = b->o.size,
					   .page_size = b->page };
	b->sink = (struct syncd_sink){ .ops = syncd_sink_find(b->o.sink_type), .src = &b->source,
				       .size = b->o.size, .align = b->o.align,
				       .max_regions = b->o.max_regions, .fd = -1 };
	err = b->sink.ops->open(&b->sink, b->o.sink, why, sizeof(why));
	if (err) {
		fprintf(stderr, "dirty-syncd-bench: %s sink%s: %s\n", b->o.sink_type,
			err == -ENODEV ? " cannot run here" : "", why[0] ? why : strerror(-err));
		b->sink.ops = NULL; /* a failed open leaves nothing to close */
		return err == -ENODEV ? 3 : 1;
	}
	err = dirty_tracker_new(NULL, &b->tracker);
	if (!err)
		err = dirty_track(b->tracker, b->buf, b->o.size);
	if (err) {
		fprintf(stderr, "dirty-syncd-bench: tracking the buffer: %s\n", strerror(-err));
		return 1;
	}
	/* the sink starts equal to the buffer */
	return whole_upload(b, &(double){ 0 }) ? 1 : 0;
}

/* What set_up() made, undone (what it did not make is NULL, -1 or MAP_FAILED). */
static void tear_down(struct bench *b)
{
	if (b->sink.ops && b->sink.ops->close)
		b->sink.ops->close(&b->sink);
	dirty_tracker_free(b->tracker);
	free(b->marked);
	free(b->pages);
	free(b->regions);
	if (b->buf && b->buf != MAP_FAILED)
		munmap(b->buf, b->o.size);
	if (b->readback && b->readback != MAP_FAILED)
		munmap(b->readback, b->o.size);
	if (b->fd >= 0)
		close(b->fd);
	if (b->readback_fd >= 0)
		close(b->readback_fd);
}

static const char usage[] =
	"usage: dirty-syncd-bench [--sink-type file|vulkan] [--sink SPEC] [--size MiB]\n"
	"                         [--pattern scattered|runs] [--align BYTES] [--max-regions N]\n"
	"                         [--cycles N] [--json FILE] [--quick]\n"
	"A flush of dirty-syncd on a sink against a whole-buffer upload, at 0.1, 1, 10 and\n"
	"100 % of the pages dirty.  The file sink's SPEC is a path (default: a memfd).\n";

static int parse_options(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{ "sink-type", required_argument, NULL, 't' },
		{ "sink", required_argument, NULL, 's' },
		{ "size", required_argument, NULL, 'S' },
		{ "pattern", required_argument, NULL, 'p' },
		{ "align", required_argument, NULL, 'a' },
		{ "max-regions", required_argument, NULL, 'r' },
		{ "cycles", required_argument, NULL, 'c' },
		{ "json", required_argument, NULL, 'j' },
		{ "quick", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int opt;

	while ((opt = getopt_long(argc, argv, "t:s:S:p:a:r:c:j:qh", longopts, NULL)) != -1) {
		switch (opt) {
		case 't': o->sink_type = optarg; break;
		case 's': o->sink = optarg; break;
		case 'S':
			o->size = strtoull(optarg, NULL, 0) << 20;
			if (!o->size)
				return -1;
			break;
		case 'p': o->pattern = optarg; break;
		case 'a': o->align = strtoull(optarg, NULL, 0); break;
		case 'r': o->max_regions = strtoull(optarg, NULL, 0); break;
		case 'c': o->cycles = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'j': o->json = optarg; break;
		case 'q': o->quick = true; break;
		case 'h': fputs(usage, stdout); exit(0);
		default: return -1;
		}
	}
	if (o->quick) {
		o->size = o->size ? o->size : 16 << 20;
		o->cycles = o->cycles ? o->cycles : 3;
	}
	o->size = o->size ? o->size : 256 << 20;
	o->cycles = o->cycles ? o->cycles : 15;
	if (optind != argc || !syncd_sink_find(o->sink_type) || !o->size ||
	    (o->size & ((uint64_t)sysconf(_SC_PAGESIZE) - 1)) || !o->align ||
	    (o->align & (o->align - 1)) || o->max_regions > UINT32_MAX || !o->cycles ||
	    o->cycles > 1000 || (strcmp(o->pattern, "scattered") && strcmp(o->pattern, "runs")))
		return -1;
	return 0;
}

int main(int argc, char **argv)
{
	struct bench b = { .o = { .sink_type = "file", .pattern = "scattered", .align = 1 },
			   .fd = -1, .readback_fd = -1, .random = 0x5eed, .stamp = 1 };
	struct result results[NFRACTIONS];
	char sink_path[64];
	int rc;

	if (parse_options(argc, argv, &b.o)) {
		fputs(usage, stderr);
		return 2;
	}
	if (!b.o.sink) {
		/* the file sink's default: a memfd of its own */
		int fd = memfd_create("dirty-syncd-bench-sink", 0);

		snprintf(sink_path, sizeof(sink_path), "fd:%d", fd);
		b.o.sink = strcmp(b.o.sink_type, "file") ? "" : sink_path;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	rc = set_up(&b);
	if (rc) {
		tear_down(&b);
		return rc == 3 && b.o.quick ? 77 : rc;
	}
	printf("dirty-syncd-bench: %" PRIu64 " MiB buffer, %s pages, tracked by %s; %s sink: %s; "
	       "regions aligned to %" PRIu64 ", at most %" PRIu64 "\n", b.o.size >> 20, b.o.pattern,
	       dirty_tracker_backend(b.tracker), b.sink.ops->name, b.sink.description,
	       b.sink.align, b.sink.max_regions);
	for (size_t i = 0; i < NFRACTIONS; i++)
		if (run_fraction(&b, fractions[i], &results[i])) {
			tear_down(&b);
			return 1;
		}
	print_table(&b, results, NFRACTIONS);
	if (b.o.json && write_json(&b, results, NFRACTIONS))
		rc = 1;
	tear_down(&b);
	return rc;
}
