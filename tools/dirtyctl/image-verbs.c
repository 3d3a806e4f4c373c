/* SPDX-License-Identifier: MIT */
/*
 * dirtyctl image info | verify | apply: read the image chains that dump
 * writes (the format is in libdirty.h).  Every image is checked with
 * dirty_image_read() before anything is taken from it; apply then checks
 * the chain as a whole (image-chain.c) before it writes a byte, and reads
 * every image once more as it applies it, checksums included, so that what
 * it writes is what was checked.  A file changed in between makes it stop
 * and remove what it wrote.
 */
#include <dirent.h>
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
#include "image-chain.h"
#include "watch.h"

/* The images of the files given, in order, and the files' descriptors. */
struct chain {
	struct chain_image *images;
	int *fds; /* per image: its file's descriptor (shared by its images) */
	size_t n, cap;
	int *files; /* the descriptors, one per file, to close */
	size_t nfiles;
};

static const char image_usage[] =
	"usage: dirtyctl image info FILE...\n"
	"       dirtyctl image verify FILE...\n"
	"       dirtyctl image apply --out DIR [--upto K] FILE...\n"
	"Show, check, or rebuild the memory an image chain holds (dirtyctl dump's\n"
	"DIR/*.img): apply checks the chain as a whole (one process, sequences 0, 1, ...\n"
	"without a gap, each image continuing the regions of the one before), then\n"
	"writes one sparse file per region live at image K (default: the last), as it\n"
	"was then, into DIR, which must not exist.\n";

static const char *image_error(int err)
{
	return err == -EBADMSG ? "corrupt (a checksum or a table does not match)"
	       : err == -EPROTO ? "unknown format version"
	       : err == -ENODATA ? "truncated"
	       : strerror(-err);
}

/* dirty_image_read()'s tables callback at load: keep the header and the regions. */
static int keep_tables(const struct dirty_image_header *h, const struct dirty_image_region *regions,
		       const struct dirty_image_run *runs, void *userdata)
{
	struct chain_image *img = userdata;

	(void)runs;
	img->regions = calloc(h->nregions + 1, sizeof(*regions));
	if (!img->regions)
		return -ENOMEM;
	if (h->nregions)
		memcpy(img->regions, regions, h->nregions * sizeof(*regions));
	return 0;
}

static int chain_grow(struct chain *c)
{
	size_t cap = c->cap ? 2 * c->cap : 16;
	struct chain_image *images;
	int *fds;

	if (c->n < c->cap)
		return 0;
	images = realloc(c->images, cap * sizeof(*images));
	if (!images)
		return -ENOMEM;
	c->images = images;
	fds = realloc(c->fds, cap * sizeof(*fds));
	if (!fds)
		return -ENOMEM;
	c->fds = fds;
	c->cap = cap;
	return 0;
}

/* Read every image of path into the chain; prints and returns -errno on the first bad one. */
static int load_file(const char *path, struct chain *c, bool quiet)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC), err = 0, *files;
	unsigned k = 0;

	if (fd < 0 || fstat(fd, &st) < 0) {
		err = -errno;
		fprintf(stderr, "dirtyctl: %s: %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return err;
	}
	files = realloc(c->files, (c->nfiles + 1) * sizeof(*files));
	if (!files) {
		close(fd);
		return -ENOMEM;
	}
	c->files = files;
	c->files[c->nfiles++] = fd;
	for (;;) {
		off_t offset = lseek(fd, 0, SEEK_CUR);
		struct chain_image img = { .file = path, .offset = offset };
		struct dirty_image_reader reader = { .sz = sizeof(reader), .tables = keep_tables,
						     .userdata = &img };

		if (offset == st.st_size && k)
			break;
		err = chain_grow(c);
		if (!err)
			err = dirty_image_read(fd, &reader, &img.header);
		if (err) {
			free(img.regions);
			fprintf(stderr, "dirtyctl: %s: image %u at byte %lld: %s\n", path, k,
				(long long)offset, image_error(err));
			return err;
		}
		if (!quiet)
			printf("%s: image %u: ok\n", path, k);
		c->fds[c->n] = fd;
		c->images[c->n++] = img;
		k++;
	}
	return 0;
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

static void chain_free(struct chain *c)
{
	for (size_t i = 0; i < c->n; i++)
		free(c->images[i].regions);
	for (size_t i = 0; i < c->nfiles; i++)
		close(c->files[i]);
	free(c->images);
	free(c->fds);
	free(c->files);
	memset(c, 0, sizeof(*c));
}

static void print_header(const struct chain_image *img)
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

static int image_info(int argc, char **argv)
{
	struct chain c = { 0 };
	struct chain_plan plan;
	char why[1024];
	int err = load_chain(argc, argv, &c, true);

	for (size_t i = 0; i < c.n; i++) {
		print_header(&c.images[i]);
		for (uint64_t r = 0; r < c.images[i].header.nregions; r++)
			printf("    region %#" PRIx64 "-%#" PRIx64 " %.*s\n", c.images[i].regions[r].start,
			       c.images[i].regions[r].end, (int)sizeof(c.images[i].regions[r].name),
			       c.images[i].regions[r].name);
	}
	if (!err && c.n) {
		/* what apply would say of them as one chain (info itself does not fail on it) */
		if (chain_check(c.images, c.n, UINT64_MAX, &plan, why, sizeof(why)) == 0) {
			printf("chain: sequences 0 to %" PRIu64 ", %zu regions live at the last\n",
			       plan.last, plan.nlive);
			chain_plan_free(c.images, c.n, &plan);
		} else {
			printf("chain: not one whole chain: %s\n", why);
		}
	}
	chain_free(&c);
	return err ? 1 : 0;
}

static int image_verify(int argc, char **argv)
{
	struct chain c = { 0 };
	int err = load_chain(argc, argv, &c, false);

	chain_free(&c);
	return err ? 1 : 0;
}

/* ---- apply ---- */

/* The output file of a live region: its range, and its name made safe for a file name. */
static int region_file(const char *dir, const struct chain_region *r, char *path, size_t path_len)
{
	char name[sizeof(r->name)];
	int fd;

	snprintf(name, sizeof(name), "%s", r->name);
	for (char *p = name; *p; p++)
		if (*p == '/' || *p == ' ' || (unsigned char)*p < ' ')
			*p = '_';
	snprintf(path, path_len, "%s/%016" PRIx64 "-%016" PRIx64 "%s%s", dir, r->start, r->end,
		 name[0] ? "-" : "", name);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0 || ftruncate(fd, (off_t)(r->end - r->start)) < 0) {
		int err = -errno;

		fprintf(stderr, "dirtyctl: %s: %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return err;
	}
	return fd;
}

/* What the second read of an image writes where. */
struct applying {
	const struct chain_image *img;
	const struct chain_plan *plan;
	const int *out;        /* per live region */
	uint64_t region;       /* a cursor: pieces come in address order */
	bool changed;          /* the tables are not those that were checked */
	int write_err;
};

/* The tables must be those the chain was checked on. */
static int same_tables(const struct dirty_image_header *h, const struct dirty_image_region *regions,
		       const struct dirty_image_run *runs, void *userdata)
{
	struct applying *a = userdata;

	(void)runs;
	if (memcmp(h, &a->img->header, sizeof(*h)) ||
	    memcmp(regions, a->img->regions, h->nregions * sizeof(*regions))) {
		a->changed = true;
		return -ESTALE;
	}
	return 0;
}

static int write_pages(uint64_t address, const void *data, size_t len, void *userdata)
{
	struct applying *a = userdata;
	const struct dirty_image_region *regions = a->img->regions;
	const struct chain_region *live;
	long target;
	ssize_t n;

	/* dirty_image_read() checked that each run lies in a region, in order */
	while (a->region + 1 < a->img->header.nregions && address >= regions[a->region].end)
		a->region++;
	target = a->img->target[a->region];
	if (target < 0)
		return 0; /* a region that ended before the last image applied */
	live = &a->plan->live[target];
	n = pwrite(a->out[target], data, len, (off_t)(address - live->start));
	if (n == (ssize_t)len)
		return 0;
	a->write_err = n < 0 ? -errno : -EIO;
	return a->write_err;
}

/* Remove what was written into the partial directory, and it. */
static void remove_partial(const char *partial)
{
	DIR *dir = opendir(partial);
	struct dirent *e;

	while (dir && (e = readdir(dir))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (unlinkat(dirfd(dir), e->d_name, 0) < 0)
			fprintf(stderr, "dirtyctl: %s/%s: %s\n", partial, e->d_name, strerror(errno));
	}
	if (dir)
		closedir(dir);
	if (rmdir(partial) < 0)
		fprintf(stderr, "dirtyctl: %s: %s\n", partial, strerror(errno));
}

static int apply_chain(const struct chain *c, const struct chain_plan *plan, const char *partial)
{
	int *out = calloc(plan->nlive + 1, sizeof(int)), err = 0;
	char path[4400];
	size_t i;

	if (!out)
		return -ENOMEM;
	for (i = 0; i < plan->nlive; i++)
		out[i] = -1;
	for (i = 0; !err && i < plan->nlive; i++) {
		out[i] = region_file(partial, &plan->live[i], path, sizeof(path));
		if (out[i] < 0)
			err = out[i];
	}
	for (i = 0; !err && i < plan->napply; i++) {
		size_t k = plan->order[i];
		const struct chain_image *img = &c->images[k];
		struct applying a = { .img = img, .plan = plan, .out = out };
		struct dirty_image_reader reader = { .sz = sizeof(reader), .tables = same_tables,
						     .pages = write_pages, .userdata = &a };

		if (lseek(c->fds[k], img->offset, SEEK_SET) != img->offset) {
			err = -errno;
			fprintf(stderr, "dirtyctl: %s: %s\n", img->file, strerror(errno));
			break;
		}
		err = dirty_image_read(c->fds[k], &reader, NULL);
		if (err && a.write_err)
			fprintf(stderr, "dirtyctl: writing into %s: %s\n", partial, strerror(-err));
		else if (err && (a.changed || err == -EBADMSG || err == -ENODATA))
			fprintf(stderr, "dirtyctl: %s: the image at byte %lld changed since it was "
				"checked: %s\n", img->file, (long long)img->offset,
				a.changed ? "its header or regions differ" : image_error(err));
		else if (err)
			fprintf(stderr, "dirtyctl: %s: the image at byte %lld: %s\n", img->file,
				(long long)img->offset, image_error(err));
	}
	for (i = 0; i < plan->nlive; i++) {
		if (out[i] < 0)
			continue;
		if (!err && fsync(out[i]) < 0)
			err = -errno;
		close(out[i]);
	}
	free(out);
	return err;
}

static int image_apply(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "out", required_argument, NULL, 'o' },
		{ "upto", required_argument, NULL, 'u' },
		{ NULL, 0, NULL, 0 },
	};
	const char *dir = NULL;
	char partial[4200], why[1024];
	uint64_t upto = UINT64_MAX;
	struct chain c = { 0 };
	struct chain_plan plan;
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
	/* every image, then the chain as a whole: anything wrong applies nothing */
	err = load_chain(argc - optind, argv + optind, &c, true);
	if (err) {
		fprintf(stderr, "dirtyctl: nothing applied\n");
		chain_free(&c);
		return 1;
	}
	err = chain_check(c.images, c.n, upto, &plan, why, sizeof(why));
	if (err) {
		fprintf(stderr, "dirtyctl: %s; nothing applied\n", why);
		chain_free(&c);
		return 1;
	}
	/* built aside and renamed at the end: DIR is whole, or not there */
	snprintf(partial, sizeof(partial), "%s.partial", dir);
	if (access(dir, F_OK) == 0 || mkdir(partial, 0755) < 0) {
		fprintf(stderr, "dirtyctl: %s: %s; nothing applied\n",
			access(dir, F_OK) == 0 ? dir : partial,
			access(dir, F_OK) == 0 ? "exists already" : strerror(errno));
		chain_plan_free(c.images, c.n, &plan);
		chain_free(&c);
		return 1;
	}
	err = apply_chain(&c, &plan, partial);
	if (!err && rename(partial, dir) < 0) {
		err = -errno;
		fprintf(stderr, "dirtyctl: %s: %s\n", dir, strerror(errno));
	}
	if (err) {
		remove_partial(partial);
		fprintf(stderr, "dirtyctl: nothing applied\n");
	} else {
		printf("applied %zu images, sequences 0 to %" PRIu64 ", into %s: %zu regions live "
		       "at sequence %" PRIu64 "%s", plan.napply, plan.last, dir, plan.nlive, plan.last,
		       plan.ended ? "" : "\n");
		if (plan.ended)
			printf(" (%zu regions of earlier images ended before it: not written)\n",
			       plan.ended);
		for (size_t i = 0; i < plan.nlive; i++)
			printf("    %016" PRIx64 "-%016" PRIx64 " %s (from the base image of sequence %"
			       PRIu64 ")\n", plan.live[i].start, plan.live[i].end, plan.live[i].name,
			       plan.live[i].since);
	}
	chain_plan_free(c.images, c.n, &plan);
	chain_free(&c);
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
