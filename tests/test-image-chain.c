/* SPDX-License-Identifier: MIT */
/*
 * Image chains checked as a whole: test-image-chain DIRTYCTL SHIM
 *
 * "checks": the chain checks of tools/image-chain.c on tables made up here
 * (gaps, two processes, changed ranges, regions that end, --upto).
 * "apply": dirtyctl image apply on chains that this process writes of its
 * own memory with dirty_image_write(): a sound chain rebuilds exactly the
 * regions live at the last image, and a gap, a mixed-process chain, a
 * changed range, an image altered after `verify`, and an image altered
 * while apply runs (between its check and its writing: SHIM, preloaded,
 * changes the file when apply creates DIR.partial) are each refused with
 * nothing written.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libdirty.h"
#include "image-chain.h"
#include "tap.h"

static const char *dirtyctl, *shim;
static size_t page_size;

/* ---- the checks, on made-up tables ---- */

#define MAX_IMAGES 8
#define MAX_REGIONS 4

struct made_up {
	struct chain_image images[MAX_IMAGES];
	struct dirty_image_region regions[MAX_IMAGES][MAX_REGIONS];
	size_t n;
};

/* Add an image: sequence, base or not, pid, and regions as page ranges [a, b). */
static struct chain_image *add(struct made_up *m, uint64_t sequence, bool base, uint64_t pid,
			       const uint64_t (*ranges)[2], size_t nranges)
{
	struct chain_image *img = &m->images[m->n];

	ck_assert_uint_lt(m->n, MAX_IMAGES);
	ck_assert_uint_le(nranges, MAX_REGIONS);
	memset(img, 0, sizeof(*img));
	img->file = "made-up";
	img->offset = (off_t)m->n * 4096;
	img->header.sequence = sequence;
	img->header.flags = base ? DIRTY_IMAGE_BASE : 0;
	img->header.pid = pid;
	img->header.page_size = 4096;
	img->header.nregions = nranges;
	img->regions = m->regions[m->n];
	for (size_t i = 0; i < nranges; i++) {
		img->regions[i] = (struct dirty_image_region){ ranges[i][0] * 4096,
							       ranges[i][1] * 4096 };
		snprintf(img->regions[i].name, sizeof(img->regions[i].name), "r%zu.%zu", m->n, i);
	}
	m->n++;
	return img;
}

/* chain_check() refuses, with words in the reason. */
static void refused(struct made_up *m, uint64_t upto, const char *words)
{
	struct chain_plan plan;
	char why[1024] = "";

	ck_assert_int_eq(chain_check(m->images, m->n, upto, &plan, why, sizeof(why)), -EINVAL);
	ck_assert_msg(strstr(why, words), "reason \"%s\" lacks \"%s\"", why, words);
	ck_assert_ptr_null(plan.order);
	for (size_t i = 0; i < m->n; i++)
		ck_assert_ptr_null(m->images[i].target);
}

START_TEST(test_check_sound_chain)
{
	struct made_up m = { 0 };
	struct chain_plan plan;
	char why[1024] = "";
	/* given out of order: the check sorts by sequence */
	struct chain_image *s2b = add(&m, 2, true, 7, (const uint64_t[][2]){ { 40, 44 } }, 1);
	struct chain_image *s0 = add(&m, 0, true, 7, (const uint64_t[][2]){ { 0, 8 }, { 16, 20 } }, 2);
	struct chain_image *s1 = add(&m, 1, false, 7, (const uint64_t[][2]){ { 0, 8 }, { 16, 20 } }, 2);
	struct chain_image *s2i = add(&m, 2, false, 7, (const uint64_t[][2]){ { 0, 8 } }, 1);
	struct chain_image *s3 = add(&m, 3, false, 7, (const uint64_t[][2]){ { 0, 8 }, { 40, 44 } }, 2);

	ck_assert_int_eq(chain_check(m.images, m.n, UINT64_MAX, &plan, why, sizeof(why)), 0);
	ck_assert_uint_eq(plan.napply, 5);
	ck_assert_uint_eq(plan.last, 3);
	ck_assert_ptr_eq(&m.images[plan.order[0]], s0);
	ck_assert_ptr_eq(&m.images[plan.order[1]], s1);
	ck_assert_ptr_eq(&m.images[plan.order[2]], s2b); /* given first among sequence 2 */
	ck_assert_ptr_eq(&m.images[plan.order[3]], s2i);
	ck_assert_ptr_eq(&m.images[plan.order[4]], s3);
	/* live at 3: [0, 8) since 0, [40, 44) since 2; [16, 20) ended at 2 */
	ck_assert_uint_eq(plan.nlive, 2);
	ck_assert_uint_eq(plan.live[0].start, 0);
	ck_assert_uint_eq(plan.live[0].end, 8 * 4096);
	ck_assert_uint_eq(plan.live[0].since, 0);
	ck_assert_str_eq(plan.live[0].name, "r1.0");
	ck_assert_uint_eq(plan.live[1].start, 40 * 4096);
	ck_assert_uint_eq(plan.live[1].since, 2);
	ck_assert_uint_eq(plan.ended, 1);
	ck_assert_int_eq(s0->target[0], 0);
	ck_assert_int_eq(s0->target[1], -1);
	ck_assert_int_eq(s1->target[1], -1);
	ck_assert_int_eq(s2b->target[0], 1);
	ck_assert_int_eq(s3->target[1], 1);
	chain_plan_free(m.images, m.n, &plan);

	/* --upto 1: both first regions live, from their base */
	ck_assert_int_eq(chain_check(m.images, m.n, 1, &plan, why, sizeof(why)), 0);
	ck_assert_uint_eq(plan.napply, 2);
	ck_assert_uint_eq(plan.last, 1);
	ck_assert_uint_eq(plan.nlive, 2);
	ck_assert_uint_eq(plan.live[1].start, 16 * 4096);
	ck_assert_uint_eq(plan.ended, 0);
	ck_assert_int_eq(s1->target[1], 1);
	ck_assert_ptr_null(s3->target); /* not applied */
	chain_plan_free(m.images, m.n, &plan);
}
END_TEST

START_TEST(test_check_gap)
{
	struct made_up m = { 0 };

	add(&m, 0, true, 7, (const uint64_t[][2]){ { 0, 8 } }, 1);
	add(&m, 2, false, 7, (const uint64_t[][2]){ { 0, 8 } }, 1);
	refused(&m, UINT64_MAX, "no image with sequence 1");
	/* a gap after the image asked for is refused too: the chain is checked whole */
	refused(&m, 0, "gap");
}
END_TEST

START_TEST(test_check_two_processes)
{
	struct made_up m = { 0 };

	add(&m, 0, true, 7, (const uint64_t[][2]){ { 0, 8 } }, 1);
	add(&m, 1, false, 8, (const uint64_t[][2]){ { 0, 8 } }, 1);
	refused(&m, UINT64_MAX, "images of two processes");
}
END_TEST

START_TEST(test_check_no_base)
{
	struct made_up m = { 0 };

	add(&m, 0, false, 7, (const uint64_t[][2]){ { 0, 8 } }, 1);
	refused(&m, UINT64_MAX, "does not start with a base image");
	m.n = 0;
	add(&m, 1, true, 7, (const uint64_t[][2]){ { 0, 8 } }, 1);
	refused(&m, UINT64_MAX, "does not start with a base image");
	m.n = 0;
	refused(&m, UINT64_MAX, "no image");
}
END_TEST

START_TEST(test_check_twice)
{
	struct made_up m = { 0 };

	add(&m, 0, true, 7, (const uint64_t[][2]){ { 0, 8 } }, 1);
	add(&m, 1, false, 7, (const uint64_t[][2]){ { 0, 8 } }, 1);
	add(&m, 1, false, 7, (const uint64_t[][2]){ { 0, 8 } }, 1);
	refused(&m, UINT64_MAX, "two incremental images with sequence 1");
	m.n = 0;
	add(&m, 0, true, 7, (const uint64_t[][2]){ { 0, 8 } }, 1);
	add(&m, 0, true, 7, (const uint64_t[][2]){ { 0, 8 } }, 1);
	refused(&m, UINT64_MAX, "two base images with sequence 0");
}
END_TEST

START_TEST(test_check_changed_range)
{
	struct made_up m = { 0 };

	/* grown in place, without a base image of the new range */
	add(&m, 0, true, 7, (const uint64_t[][2]){ { 0, 8 } }, 1);
	add(&m, 1, false, 7, (const uint64_t[][2]){ { 0, 12 } }, 1);
	refused(&m, UINT64_MAX, "its range changed without a base image");
	/* a region no image began */
	m.n = 0;
	add(&m, 0, true, 7, (const uint64_t[][2]){ { 0, 8 } }, 1);
	add(&m, 1, false, 7, (const uint64_t[][2]){ { 0, 8 }, { 20, 24 } }, 2);
	refused(&m, UINT64_MAX, "does not have at the sequence before");
	/* a region that ended cannot come back without a base image */
	m.n = 0;
	add(&m, 0, true, 7, (const uint64_t[][2]){ { 0, 8 }, { 20, 24 } }, 2);
	add(&m, 1, false, 7, (const uint64_t[][2]){ { 0, 8 } }, 1);
	add(&m, 2, false, 7, (const uint64_t[][2]){ { 0, 8 }, { 20, 24 } }, 2);
	refused(&m, UINT64_MAX, "does not have at the sequence before");
	/* a base and an incremental image of one sequence that overlap */
	m.n = 0;
	add(&m, 0, true, 7, (const uint64_t[][2]){ { 0, 8 } }, 1);
	add(&m, 1, true, 7, (const uint64_t[][2]){ { 4, 12 } }, 1);
	add(&m, 1, false, 7, (const uint64_t[][2]){ { 0, 8 } }, 1);
	refused(&m, UINT64_MAX, "overlap");
	/* tables out of order: not what dirty_image_read() lets through */
	m.n = 0;
	add(&m, 0, true, 7, (const uint64_t[][2]){ { 8, 12 }, { 0, 4 } }, 2);
	refused(&m, UINT64_MAX, "not in address order");
}
END_TEST

/* A range that changed with a base image is a new region: the old one's pages do not apply. */
START_TEST(test_check_rebased_range)
{
	struct made_up m = { 0 };
	struct chain_plan plan;
	char why[1024];
	struct chain_image *s0, *s1, *s2;

	s0 = add(&m, 0, true, 7, (const uint64_t[][2]){ { 0, 8 } }, 1);
	s1 = add(&m, 1, true, 7, (const uint64_t[][2]){ { 0, 12 } }, 1);
	s2 = add(&m, 2, false, 7, (const uint64_t[][2]){ { 0, 12 } }, 1);
	ck_assert_int_eq(chain_check(m.images, m.n, UINT64_MAX, &plan, why, sizeof(why)), 0);
	ck_assert_uint_eq(plan.nlive, 1);
	ck_assert_uint_eq(plan.live[0].end, 12 * 4096);
	ck_assert_uint_eq(plan.live[0].since, 1);
	ck_assert_int_eq(s0->target[0], -1);
	ck_assert_int_eq(s1->target[0], 0);
	ck_assert_int_eq(s2->target[0], 0);
	ck_assert_uint_eq(plan.ended, 1);
	chain_plan_free(m.images, m.n, &plan);
	/* an exec: a sequence of a base image only ends every region before it */
	m.n = 0;
	add(&m, 0, true, 7, (const uint64_t[][2]){ { 0, 8 }, { 20, 24 } }, 2);
	add(&m, 1, true, 7, (const uint64_t[][2]){ { 4, 6 } }, 1);
	add(&m, 2, false, 7, (const uint64_t[][2]){ { 4, 6 } }, 1);
	ck_assert_int_eq(chain_check(m.images, m.n, UINT64_MAX, &plan, why, sizeof(why)), 0);
	ck_assert_uint_eq(plan.nlive, 1);
	ck_assert_uint_eq(plan.ended, 2);
	chain_plan_free(m.images, m.n, &plan);
}
END_TEST

/* ---- apply, end to end ---- */

static char *map_pages(size_t npages)
{
	char *mem = mmap(NULL, npages * page_size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ck_assert_ptr_ne(mem, MAP_FAILED);
	return mem;
}

static void scribble(char *mem, size_t page, unsigned round)
{
	memset(mem + page * page_size + 100, (int)(round * 16 + page % 16), 200);
}

/* Write one image of regions (base: every page) into path. */
static void write_image(struct dirty_tracker *t, const struct dirty_range *regions,
			const char *const *names, size_t n, uint64_t sequence, bool base,
			const char *path)
{
	struct dirty_image_options opts = {
		.sz = sizeof(opts), .sequence = sequence,
		.flags = DIRTY_IMAGE_CLEAN | (base ? DIRTY_IMAGE_ALL : 0),
	};
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644), err;

	ck_assert_int_ge(fd, 0);
	err = dirty_image_write(t, regions, names, n, &opts, fd, NULL);
	ck_assert_msg(err == 0, "dirty_image_write(%s): %s", path, strerror(-err));
	close(fd);
}

static char workdir[64];

/* A path in the test's directory; each call's string lives until the test ends. */
static const char *file_in(const char *name)
{
	static char paths[64][128];
	static unsigned which;
	char *p = paths[which++ % 64];

	snprintf(p, sizeof(paths[0]), "%s/%s", workdir, name);
	return p;
}

/* Run dirtyctl with args (NULL-terminated); its status, its stdout and stderr in out/err. */
static int run(const char *const *args, const char *preload, char *out, size_t out_len,
	       char *err, size_t err_len)
{
	const char *argv[16] = { dirtyctl };
	char out_path[128], err_path[128];
	int status;
	size_t i;
	FILE *f;
	pid_t pid;

	for (i = 0; args[i]; i++)
		argv[i + 1] = args[i];
	argv[i + 1] = NULL;
	snprintf(out_path, sizeof(out_path), "%s/stdout", workdir);
	snprintf(err_path, sizeof(err_path), "%s/stderr", workdir);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		if (!freopen(out_path, "w", stdout) || !freopen(err_path, "w", stderr))
			_exit(126);
		if (preload) {
			setenv("LD_PRELOAD", preload, 1);
			/* an ASan build of dirtyctl: the shim comes before the runtime */
			setenv("ASAN_OPTIONS", "verify_asan_link_order=0", 1);
		}
		execv(dirtyctl, (char *const *)argv);
		_exit(127);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status), "dirtyctl died of signal %d", WTERMSIG(status));
	f = fopen(out_path, "r");
	out[fread(out, 1, out_len - 1, f)] = '\0';
	fclose(f);
	f = fopen(err_path, "r");
	err[fread(err, 1, err_len - 1, f)] = '\0';
	fclose(f);
	return WEXITSTATUS(status);
}

/* apply refuses with words in its message, and leaves neither OUT nor OUT.partial. */
static void apply_refused(const char *const *files, const char *preload, const char *words)
{
	const char *args[12] = { "image", "apply", "--out", file_in("out") };
	char out[4096], err[4096], partial[160];
	size_t i;

	for (i = 0; files[i]; i++)
		args[4 + i] = files[i];
	args[4 + i] = NULL;
	ck_assert_int_eq(run(args, preload, out, sizeof(out), err, sizeof(err)), 1);
	ck_assert_msg(strstr(err, words) && strstr(err, "nothing applied"),
		      "stderr \"%s\" lacks \"%s\"", err, words);
	ck_assert_int_eq(access(file_in("out"), F_OK), -1);
	snprintf(partial, sizeof(partial), "%s.partial", file_in("out"));
	ck_assert_msg(access(partial, F_OK) == -1, "%s is there", partial);
}

/*
 * The chain of the tests: regions A (8 pages), B (4 pages) in a base
 * image 0; writes, image 1 (both); B ends, C (4 pages) begins: a base
 * image 2 of C, and an incremental image 2 of A, in one file as dump
 * writes them.  Snapshots of A, B and C as images 1 and 2 hold them.
 */
struct chain_fixture {
	struct dirty_tracker *t;
	char *a, *b, *c;
	char *a1, *b1, *a2, *c2; /* snapshots */
};

static void fixture_chain(struct chain_fixture *f)
{
	const char *names[] = { "A", "B" };
	struct dirty_range ab[2];

	ck_assert_int_eq(dirty_tracker_new(NULL, &f->t), 0);
	f->a = map_pages(8);
	f->b = map_pages(4);
	f->c = map_pages(4);
	for (size_t p = 0; p < 8; p++)
		scribble(f->a, p, 0);
	for (size_t p = 0; p < 4; p++)
		scribble(f->b, p, 0);
	ck_assert_int_eq(dirty_track(f->t, f->a, 8 * page_size), 0);
	ck_assert_int_eq(dirty_track(f->t, f->b, 4 * page_size), 0);
	ab[0] = (struct dirty_range){ f->a, 8 * page_size };
	ab[1] = (struct dirty_range){ f->b, 4 * page_size };
	if (f->b < f->a) {
		struct dirty_range swap = ab[0];

		ab[0] = ab[1];
		ab[1] = swap;
		names[0] = "B";
		names[1] = "A";
	}
	write_image(f->t, ab, names, 2, 0, true, file_in("000000.img"));
	scribble(f->a, 2, 1);
	scribble(f->a, 5, 1);
	scribble(f->b, 1, 1);
	write_image(f->t, ab, names, 2, 1, false, file_in("000001.img"));
	f->a1 = malloc(8 * page_size);
	f->b1 = malloc(4 * page_size);
	memcpy(f->a1, f->a, 8 * page_size);
	memcpy(f->b1, f->b, 4 * page_size);

	/* B ends, C begins: the base pass, then the incremental one, in one file */
	ck_assert_int_eq(dirty_untrack(f->t, f->b, 4 * page_size), 0);
	for (size_t p = 0; p < 4; p++)
		scribble(f->c, p, 2);
	ck_assert_int_eq(dirty_track(f->t, f->c, 4 * page_size), 0);
	scribble(f->a, 7, 2);
	{
		struct dirty_range c = { f->c, 4 * page_size }, a = { f->a, 8 * page_size };
		struct dirty_image_options base = { .sz = sizeof(base), .sequence = 2,
						    .flags = DIRTY_IMAGE_CLEAN | DIRTY_IMAGE_ALL };
		struct dirty_image_options inc = { .sz = sizeof(inc), .sequence = 2,
						   .flags = DIRTY_IMAGE_CLEAN };
		int fd = open(file_in("000002.img"), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

		ck_assert_int_ge(fd, 0);
		ck_assert_int_eq(dirty_image_write(f->t, &c, (const char *[]){ "C" }, 1, &base, fd,
						   NULL), 0);
		ck_assert_int_eq(dirty_image_write(f->t, &a, (const char *[]){ "A" }, 1, &inc, fd,
						   NULL), 0);
		close(fd);
	}
	f->a2 = malloc(8 * page_size);
	f->c2 = malloc(4 * page_size);
	memcpy(f->a2, f->a, 8 * page_size);
	memcpy(f->c2, f->c, 4 * page_size);
}

static void fixture_free(struct chain_fixture *f)
{
	dirty_tracker_free(f->t);
	munmap(f->a, 8 * page_size);
	munmap(f->b, 4 * page_size);
	munmap(f->c, 4 * page_size);
	free(f->a1);
	free(f->b1);
	free(f->a2);
	free(f->c2);
}

static void setup(void)
{
	snprintf(workdir, sizeof(workdir), "test-image-chain-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(workdir));
}

static void teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", workdir);
	ck_assert_int_eq(system(cmd), 0);
}

/* The rebuilt file of a region: exactly its content at the image applied. */
static void assert_rebuilt(const char *dir, const char *mem, size_t npages, const char *name,
			   const char *expect)
{
	char path[256], *got = malloc(npages * page_size + 1);
	int fd;

	snprintf(path, sizeof(path), "%s/%016" PRIx64 "-%016" PRIx64 "-%s", dir,
		 (uint64_t)(uintptr_t)mem, (uint64_t)(uintptr_t)(mem + npages * page_size), name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	ck_assert_msg(fd >= 0, "%s: %s", path, strerror(errno));
	ck_assert_int_eq(read(fd, got, npages * page_size + 1), (ssize_t)(npages * page_size));
	ck_assert_msg(!memcmp(got, expect, npages * page_size), "%s differs", path);
	close(fd);
	free(got);
}

static size_t count_files(const char *dir)
{
	char cmd[256], line[64] = "";
	FILE *p;

	snprintf(cmd, sizeof(cmd), "ls -A %s | wc -l", dir);
	p = popen(cmd, "r");
	ck_assert_ptr_nonnull(fgets(line, sizeof(line), p));
	pclose(p);
	return (size_t)strtoul(line, NULL, 10);
}

START_TEST(test_apply_sound_chain)
{
	struct chain_fixture f;
	char out[4096], err[4096], dir[160];

	fixture_chain(&f);
	snprintf(dir, sizeof(dir), "%s", file_in("out"));
	ck_assert_msg(run((const char *[]){ "image", "apply", "--out", dir, file_in("000000.img"),
					    file_in("000001.img"), file_in("000002.img"), NULL },
			  NULL, out, sizeof(out), err, sizeof(err)) == 0, "%s", err);
	/* A and C, live at image 2; B ended before it and is not written */
	ck_assert_uint_eq(count_files(dir), 2);
	assert_rebuilt(dir, f.a, 8, "A", f.a2);
	assert_rebuilt(dir, f.c, 4, "C", f.c2);
	ck_assert_msg(strstr(out, "2 regions live at sequence 2") && strstr(out, "1 regions of "
		      "earlier images ended"), "%s", out);
	/* as at image 1: A and B */
	snprintf(dir, sizeof(dir), "%s", file_in("out1"));
	ck_assert_msg(run((const char *[]){ "image", "apply", "--upto", "1", "--out", dir,
					    file_in("000000.img"), file_in("000001.img"),
					    file_in("000002.img"), NULL },
			  NULL, out, sizeof(out), err, sizeof(err)) == 0, "%s", err);
	ck_assert_uint_eq(count_files(dir), 2);
	assert_rebuilt(dir, f.a, 8, "A", f.a1);
	assert_rebuilt(dir, f.b, 4, "B", f.b1);
	fixture_free(&f);
}
END_TEST

/*
 * dump writes a base image at every sequence, with no region when none is
 * new: such a chain applies (an empty table once reached memcpy with NULL).
 */
START_TEST(test_apply_empty_base_images)
{
	struct dirty_tracker *t;
	char *mem = map_pages(4), out[4096], err[4096];
	struct dirty_range r = { mem, 4 * page_size };
	const struct dirty_range none = { 0 };
	struct dirty_image_options base = { .sz = sizeof(base), .sequence = 1,
					    .flags = DIRTY_IMAGE_CLEAN | DIRTY_IMAGE_ALL };
	struct dirty_image_options inc = { .sz = sizeof(inc), .sequence = 1,
					   .flags = DIRTY_IMAGE_CLEAN };
	int fd;

	ck_assert_int_eq(dirty_tracker_new(NULL, &t), 0);
	ck_assert_int_eq(dirty_track(t, mem, 4 * page_size), 0);
	scribble(mem, 0, 1);
	write_image(t, &r, (const char *[]){ "M" }, 1, 0, true, file_in("000000.img"));
	scribble(mem, 2, 2);
	fd = open(file_in("000001.img"), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(dirty_image_write(t, &none, NULL, 0, &base, fd, NULL), 0);
	ck_assert_int_eq(dirty_image_write(t, &r, (const char *[]){ "M" }, 1, &inc, fd, NULL), 0);
	close(fd);
	ck_assert_msg(run((const char *[]){ "image", "apply", "--out", file_in("out"),
					    file_in("000000.img"), file_in("000001.img"), NULL },
			  NULL, out, sizeof(out), err, sizeof(err)) == 0, "%s", err);
	assert_rebuilt(file_in("out"), mem, 4, "M", mem);
	ck_assert_msg(run((const char *[]){ "image", "info", file_in("000000.img"),
					    file_in("000001.img"), NULL },
			  NULL, out, sizeof(out), err, sizeof(err)) == 0, "%s", err);
	ck_assert_msg(strstr(out, "chain: sequences 0 to 1, 1 regions live"), "%s", out);
	dirty_tracker_free(t);
	munmap(mem, 4 * page_size);
}
END_TEST

START_TEST(test_apply_gap)
{
	struct chain_fixture f;

	fixture_chain(&f);
	apply_refused((const char *[]){ file_in("000000.img"), file_in("000002.img"), NULL }, NULL,
		      "no image with sequence 1: the chain has a gap");
	fixture_free(&f);
}
END_TEST

/* Images 0 and 1 of a child that forked from here: the same addresses, another process. */
START_TEST(test_apply_two_processes)
{
	struct chain_fixture f;
	const char *other0 = file_in("other-000000.img"), *other1 = file_in("other-000001.img");
	int status;
	pid_t child;

	fixture_chain(&f);
	child = fork();
	ck_assert_int_ge(child, 0);
	if (child == 0) {
		struct dirty_tracker *t;
		struct dirty_range a = { f.a, 8 * page_size };

		if (dirty_tracker_new(NULL, &t) || dirty_track(t, f.a, 8 * page_size))
			_exit(2);
		write_image(t, &a, (const char *[]){ "A" }, 1, 0, true, other0);
		scribble(f.a, 3, 9);
		write_image(t, &a, (const char *[]){ "A" }, 1, 1, false, other1);
		dirty_tracker_free(t);
		_exit(0);
	}
	ck_assert_int_eq(waitpid(child, &status, 0), child);
	ck_assert_int_eq(status, 0);
	/* each chain alone is sound */
	{
		char out[4096], err[4096];

		ck_assert_msg(run((const char *[]){ "image", "apply", "--out", file_in("alone"),
						    other0, other1, NULL },
				  NULL, out, sizeof(out), err, sizeof(err)) == 0, "%s", err);
	}
	apply_refused((const char *[]){ file_in("000000.img"), other1, NULL }, NULL,
		      "images of two processes");
	apply_refused((const char *[]){ other0, file_in("000001.img"), NULL }, NULL,
		      "images of two processes");
	fixture_free(&f);
}
END_TEST

/* A region that grew in place, written incrementally with its new range. */
START_TEST(test_apply_changed_range)
{
	struct dirty_tracker *t;
	char *mem = map_pages(12);
	struct dirty_range small = { mem, 8 * page_size }, grown = { mem, 12 * page_size };

	ck_assert_int_eq(dirty_tracker_new(NULL, &t), 0);
	ck_assert_int_eq(dirty_track(t, mem, 8 * page_size), 0);
	write_image(t, &small, (const char *[]){ "heap" }, 1, 0, true, file_in("000000.img"));
	ck_assert_int_eq(dirty_untrack(t, mem, 8 * page_size), 0);
	ck_assert_int_eq(dirty_track(t, mem, 12 * page_size), 0);
	scribble(mem, 10, 1);
	write_image(t, &grown, (const char *[]){ "heap" }, 1, 1, false, file_in("000001.img"));
	apply_refused((const char *[]){ file_in("000000.img"), file_in("000001.img"), NULL }, NULL,
		      "its range changed without a base image");
	dirty_tracker_free(t);
	munmap(mem, 12 * page_size);
}
END_TEST

/* dirtyctl image verify passes the chain, then a data byte changes: apply refuses. */
START_TEST(test_apply_altered_after_verify)
{
	struct chain_fixture f;
	const char *img1 = file_in("000001.img");
	char out[4096], err[4096];
	struct dirty_image_header h;
	unsigned char byte;
	int fd;

	fixture_chain(&f);
	ck_assert_msg(run((const char *[]){ "image", "verify", file_in("000000.img"), img1,
					    file_in("000002.img"), NULL },
			  NULL, out, sizeof(out), err, sizeof(err)) == 0, "%s", err);
	fd = open(img1, O_RDWR | O_CLOEXEC);
	ck_assert_int_eq(dirty_image_verify(fd, &h), 0);
	ck_assert_int_eq(pread(fd, &byte, 1, (off_t)h.data_offset + 10), 1);
	byte ^= 1;
	ck_assert_int_eq(pwrite(fd, &byte, 1, (off_t)h.data_offset + 10), 1);
	close(fd);
	apply_refused((const char *[]){ file_in("000000.img"), img1, file_in("000002.img"), NULL },
		      NULL, "corrupt");
	fixture_free(&f);
}
END_TEST

/*
 * The file changes after apply checked it and before it writes: the image
 * is read again as it is applied, so a changed checksum or table stops it,
 * and what it had written is removed.
 */
START_TEST(test_apply_altered_while_applying)
{
	struct chain_fixture f;
	const char *img1 = file_in("000001.img"), *mark = file_in("altered");
	const char *files[] = { file_in("000000.img"), img1, file_in("000002.img"), NULL };
	struct dirty_image_header h;
	char value[256];
	int fd;

	fixture_chain(&f);
	fd = open(img1, O_RDONLY | O_CLOEXEC);
	ck_assert_int_eq(dirty_image_verify(fd, &h), 0);
	close(fd);
	setenv("DIRTY_TEST_MARK", mark, 1);
	/* a data byte: the checksum no longer holds */
	snprintf(value, sizeof(value), "%s:%" PRIu64, img1, h.data_offset + page_size + 7);
	setenv("DIRTY_TEST_FLIP", value, 1);
	apply_refused(files, shim, "changed since it was checked");
	ck_assert_msg(access(mark, F_OK) == 0, "the shim did not change the file");
	unsetenv("DIRTY_TEST_FLIP");
	unlink(mark);
	/* put back, it applies again */
	fd = open(img1, O_RDWR | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	{
		unsigned char byte;

		ck_assert_int_eq(pread(fd, &byte, 1, (off_t)(h.data_offset + page_size + 7)), 1);
		byte ^= 0x10; /* the shim's bit */
		ck_assert_int_eq(pwrite(fd, &byte, 1, (off_t)(h.data_offset + page_size + 7)), 1);
	}
	close(fd);
	{
		char out[4096], err[4096];

		ck_assert_msg(run((const char *[]){ "image", "apply", "--out", file_in("out"),
						    files[0], files[1], files[2], NULL },
				  NULL, out, sizeof(out), err, sizeof(err)) == 0, "%s", err);
	}
	/* another sound image in its place: its tables are not the ones checked */
	unlink(mark);
	snprintf(value, sizeof(value), "%s:%s", img1, file_in("000000.img"));
	setenv("DIRTY_TEST_REPLACE", value, 1);
	{
		char dir[160];

		snprintf(dir, sizeof(dir), "rm -rf %s", file_in("out"));
		ck_assert_int_eq(system(dir), 0);
	}
	apply_refused(files, shim, "its header or regions differ");
	ck_assert_int_eq(access(mark, F_OK), 0);
	unsetenv("DIRTY_TEST_REPLACE");
	unsetenv("DIRTY_TEST_MARK");
	fixture_free(&f);
}
END_TEST

int main(int argc, char **argv)
{
	Suite *s = suite_create("image-chain");
	TCase *checks = tcase_create("checks"), *apply = tcase_create("apply");

	tap_begin();
	if (argc != 3) {
		fprintf(stderr, "usage: test-image-chain DIRTYCTL SHIM\n");
		return 2;
	}
	dirtyctl = argv[1];
	shim = argv[2];
	page_size = (size_t)sysconf(_SC_PAGESIZE);
	tcase_add_test(checks, test_check_sound_chain);
	tcase_add_test(checks, test_check_gap);
	tcase_add_test(checks, test_check_two_processes);
	tcase_add_test(checks, test_check_no_base);
	tcase_add_test(checks, test_check_twice);
	tcase_add_test(checks, test_check_changed_range);
	tcase_add_test(checks, test_check_rebased_range);
	suite_add_tcase(s, checks);
	tcase_add_checked_fixture(apply, setup, teardown);
	tcase_set_timeout(apply, 60);
	tcase_add_test(apply, test_apply_sound_chain);
	tcase_add_test(apply, test_apply_empty_base_images);
	tcase_add_test(apply, test_apply_gap);
	tcase_add_test(apply, test_apply_two_processes);
	tcase_add_test(apply, test_apply_changed_range);
	tcase_add_test(apply, test_apply_altered_after_verify);
	tcase_add_test(apply, test_apply_altered_while_applying);
	suite_add_tcase(s, apply);
	return tap_run(srunner_create(s));
}
