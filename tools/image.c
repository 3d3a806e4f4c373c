/* SPDX-License-Identifier: MIT */
/*
 * dirtyctl image info | verify | apply: read the image chains that dump
 * writes (the format is in libdirty.h).  Every image is checked with
 * dirty_image_verify() before anything is read from it, and apply checks
 * the whole chain before it writes a byte.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "libdirty.h"
#include "watch.h"

/* One image of a file: where it starts, its header. */
struct image {
	const char *file;
	off_t offset;
	struct dirty_image_header header;
};

struct chain {
	struct image *images;
	size_t n, cap;
};

static const char image_usage[] =
	"usage: dirtyctl image info FILE...\n"
	"       dirtyctl image verify FILE...\n"
	"       dirtyctl image apply --out DIR [--upto K] FILE...\n"
	"Show, check, or rebuild the memory an image chain holds (dirtyctl dump's\n"
	"DIR/*.img, in order): apply writes one sparse file per region, as it was at\n"
	"image K (default: the last), into DIR, which must not exist.\n";

static int read_at(int fd, void *buf, size_t len, off_t off)
{
	for (size_t done = 0; done < len;) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, off + (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -ENODATA;
		done += (size_t)n;
	}
	return 0;
}

/* Verify every image of path into chain; prints and returns -errno on the first bad one. */
static int load_file(const char *path, struct chain *c, bool quiet)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC), err = 0;
	unsigned k = 0;

	if (fd < 0 || fstat(fd, &st) < 0) {
		err = -errno;
		fprintf(stderr, "dirtyctl: %s: %s\n", path, strerror(errno));
		goto out;
	}
	for (;;) {
		off_t offset = lseek(fd, 0, SEEK_CUR);
		struct dirty_image_header h;

		if (offset == st.st_size && k)
			break;
		err = dirty_image_verify(fd, &h);
		if (err) {
			fprintf(stderr, "dirtyctl: %s: image %u at byte %lld: %s\n", path, k,
				(long long)offset,
				err == -EBADMSG ? "corrupt (a checksum or a table does not match)"
				: err == -EPROTO ? "unknown format version"
				: err == -ENODATA ? "truncated"
				: strerror(-err));
			goto out;
		}
		if (!quiet)
			printf("%s: image %u: ok\n", path, k);
		if (c->n == c->cap) {
			size_t cap = c->cap ? 2 * c->cap : 16;
			struct image *grown = realloc(c->images, cap * sizeof(*grown));

			if (!grown) {
				err = -ENOMEM;
				goto out;
			}
			c->images = grown;
			c->cap = cap;
		}
		c->images[c->n++] = (struct image){ .file = path, .offset = offset, .header = h };
		k++;
	}
out:
	if (fd >= 0)
		close(fd);
	return err;
}

static int load_chain(int argc, char **argv, struct chain *c, bool quiet)
{
	int err = 0;

	for (int i = 0; i < argc; i++) {
		int e = load_file(argv[i], c, quiet);

		if (e && !err)
			err = e;
	}
	return err;
}

static void print_header(const struct image *img)
{
	const struct dirty_image_header *h = &img->header;
	time_t secs = (time_t)(h->time_ns / 1000000000u);
	char when[64];

	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", gmtime(&secs));
	printf("%s @%lld: sequence %" PRIu64 ", %s, pid %" PRIu64 ", %s UTC, %" PRIu64
	       " regions, %" PRIu64 " runs, %" PRIu64 " pages (%.2f MiB of %" PRIu32
	       "-byte pages)\n", img->file, (long long)img->offset, h->sequence,
	       h->flags & DIRTY_IMAGE_NEW_PROGRAM ? "base of a new program (exec), every page"
	       : h->flags & DIRTY_IMAGE_BASE	  ? "base (every page)"
						  : "incremental",
	       h->pid, when,
	       h->nregions, h->nruns, h->npages, h->npages * (double)h->page_size / (1 << 20),
	       h->page_size);
}

static int read_tables(int fd, const struct image *img, struct dirty_image_region **regions,
		       struct dirty_image_run **runs)
{
	const struct dirty_image_header *h = &img->header;
	int err;

	*regions = calloc(h->nregions + 1, sizeof(**regions));
	*runs = calloc(h->nruns + 1, sizeof(**runs));
	if (!*regions || !*runs)
		return -ENOMEM;
	err = read_at(fd, *regions, h->nregions * sizeof(**regions),
		      img->offset + (off_t)h->regions_offset);
	if (!err)
		err = read_at(fd, *runs, h->nruns * sizeof(**runs),
			      img->offset + (off_t)h->runs_offset);
	return err;
}

static int image_info(int argc, char **argv)
{
	struct chain c = { 0 };
	int err = load_chain(argc, argv, &c, true);

	for (size_t i = 0; i < c.n; i++) {
		struct dirty_image_region *regions = NULL;
		struct dirty_image_run *runs = NULL;
		int fd = open(c.images[i].file, O_RDONLY | O_CLOEXEC);

		print_header(&c.images[i]);
		if (fd >= 0 && !read_tables(fd, &c.images[i], &regions, &runs)) {
			for (uint64_t r = 0; r < c.images[i].header.nregions; r++)
				printf("    region %#" PRIx64 "-%#" PRIx64 " %.*s\n", regions[r].start,
				       regions[r].end, (int)sizeof(regions[r].name), regions[r].name);
		}
		if (fd >= 0)
			close(fd);
		free(regions);
		free(runs);
	}
	free(c.images);
	return err ? 1 : 0;
}

static int image_verify(int argc, char **argv)
{
	struct chain c = { 0 };
	int err = load_chain(argc, argv, &c, false);

	free(c.images);
	return err ? 1 : 0;
}

/* The output file of a region: its range, and its name made safe for a file name. */
static int region_file(const char *dir, const struct dirty_image_region *r)
{
	char path[4400], name[sizeof(r->name) + 1];
	int fd;

	snprintf(name, sizeof(name), "%.*s", (int)sizeof(r->name), r->name);
	for (char *p = name; *p; p++)
		if (*p == '/' || *p == ' ' || (unsigned char)*p < ' ')
			*p = '_';
	snprintf(path, sizeof(path), "%s/%016" PRIx64 "-%016" PRIx64 "%s%s", dir, r->start, r->end,
		 name[0] ? "-" : "", name);
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0 || ftruncate(fd, (off_t)(r->end - r->start)) < 0) {
		fprintf(stderr, "dirtyctl: %s: %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/* Write the pages of one (verified) image into the region files of dir. */
static int apply_one(const struct image *img, const char *dir)
{
	const struct dirty_image_header *h = &img->header;
	struct dirty_image_region *regions = NULL;
	struct dirty_image_run *runs = NULL;
	int in = open(img->file, O_RDONLY | O_CLOEXEC), err = in < 0 ? -errno : 0;
	int *out = calloc(h->nregions + 1, sizeof(int));
	char *page = malloc(h->page_size);
	off_t data = img->offset + (off_t)h->data_offset;
	uint64_t r = 0;

	if (!err && (!out || !page))
		err = -ENOMEM;
	if (!err)
		err = read_tables(in, img, &regions, &runs);
	for (uint64_t i = 0; !err && i < h->nregions; i++) {
		out[i] = region_file(dir, &regions[i]);
		if (out[i] < 0)
			err = -EIO;
	}
	for (uint64_t i = 0; !err && i < h->nruns; i++) {
		/* verify() checked that each run lies in a region, in order */
		while (r + 1 < h->nregions && runs[i].start >= regions[r].end)
			r++;
		for (uint64_t p = 0; !err && p < runs[i].npages; p++) {
			off_t at = (off_t)(runs[i].start - regions[r].start + p * h->page_size);

			ssize_t written = 0;

			err = read_at(in, page, h->page_size, data);
			data += h->page_size;
			if (!err)
				written = pwrite(out[r], page, h->page_size, at);
			if (!err && written != (ssize_t)h->page_size)
				err = written < 0 ? -errno : -EIO;
		}
	}
	for (uint64_t i = 0; out && i < h->nregions; i++)
		if (out[i] > 0)
			close(out[i]);
	if (in >= 0)
		close(in);
	free(out);
	free(page);
	free(regions);
	free(runs);
	return err;
}

static int by_sequence(const void *a, const void *b)
{
	const struct image *x = a, *y = b;

	/* stable enough: images of one sequence keep their order in the files */
	if (x->header.sequence != y->header.sequence)
		return x->header.sequence < y->header.sequence ? -1 : 1;
	return x < y ? -1 : x > y;
}

/*
 * Where applying starts: the last image at or before --upto that begins a
 * program's memory (DIRTY_IMAGE_NEW_PROGRAM: the process exec'ed; what came
 * before it is gone), else the first.  The chain is sorted.
 */
static size_t chain_start(const struct chain *c, uint64_t upto)
{
	size_t start = 0;

	for (size_t i = 0; i < c->n && c->images[i].header.sequence <= upto; i++)
		if (c->images[i].header.flags & DIRTY_IMAGE_NEW_PROGRAM)
			start = i;
	return start;
}

static int image_apply(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "out", required_argument, NULL, 'o' },
		{ "upto", required_argument, NULL, 'u' },
		{ NULL, 0, NULL, 0 },
	};
	const char *dir = NULL;
	char partial[4200];
	uint64_t upto = UINT64_MAX;
	struct chain c = { 0 };
	size_t applied, first;
	int opt, err;

	while ((opt = getopt_long(argc, argv, "o:u:", longopts, NULL)) != -1) {
		char *end;

		switch (opt) {
		case 'o':
			dir = optarg;
			break;
		case 'u':
			upto = strtoull(optarg, &end, 10);
			if (*end || !*optarg) {
				fprintf(stderr, "dirtyctl: bad value for --upto: %s\n", optarg);
				return EXIT_USAGE;
			}
			break;
		default:
			fputs(image_usage, stderr);
			return EXIT_USAGE;
		}
	}
	if (!dir || optind == argc) {
		fprintf(stderr, "dirtyctl: image apply needs --out DIR and image files\n");
		return EXIT_USAGE;
	}
	/* the whole chain is checked first: a bad image anywhere applies nothing */
	err = load_chain(argc - optind, argv + optind, &c, true);
	if (err) {
		fprintf(stderr, "dirtyctl: nothing applied\n");
		free(c.images);
		return 1;
	}
	if (!c.n || !(c.images[0].header.flags & DIRTY_IMAGE_BASE) || c.images[0].header.sequence) {
		fprintf(stderr, "dirtyctl: the chain does not start with a base image (sequence 0); "
			"nothing applied\n");
		free(c.images);
		return 1;
	}
	qsort(c.images, c.n, sizeof(*c.images), by_sequence);
	/* built aside and renamed at the end: DIR is whole, or not there */
	snprintf(partial, sizeof(partial), "%s.partial", dir);
	if (access(dir, F_OK) == 0 || mkdir(partial, 0755) < 0) {
		fprintf(stderr, "dirtyctl: %s: %s\n", access(dir, F_OK) == 0 ? dir : partial,
			access(dir, F_OK) == 0 ? "exists already" : strerror(errno));
		free(c.images);
		return 1;
	}
	first = chain_start(&c, upto);
	for (applied = first;
	     !err && applied < c.n && c.images[applied].header.sequence <= upto; applied++)
		err = apply_one(&c.images[applied], partial);
	if (!err && rename(partial, dir) < 0)
		err = -errno;
	if (err)
		fprintf(stderr, "dirtyctl: applying failed: %s; the partial result is in %s\n",
			strerror(-err), partial);
	else
		printf("applied %zu images, up to sequence %" PRIu64 ", into %s%s\n",
		       applied - first, c.images[applied - 1].header.sequence, dir,
		       first ? " (from the last program's first image: it exec'ed)" : "");
	free(c.images);
	return err ? 1 : 0;
}

int verb_image(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "info") && argc > 2)
		return image_info(argc - 2, argv + 2);
	if (argc >= 2 && !strcmp(argv[1], "verify") && argc > 2)
		return image_verify(argc - 2, argv + 2);
	if (argc >= 2 && !strcmp(argv[1], "apply"))
		return image_apply(argc - 1, argv + 1);
	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		fputs(image_usage, stdout);
		return 0;
	}
	fprintf(stderr, "dirtyctl: image needs info, verify or apply, and image files\n");
	fputs(image_usage, stderr);
	return EXIT_USAGE;
}
