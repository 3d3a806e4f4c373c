/* SPDX-License-Identifier: MIT */
/*
 * Images: dirty_image_write() and dirty_image_verify().  The tracker is the
 * automatic one (uffd-async or mprotect, whichever this kernel has); images
 * are read back byte by byte with a parser and a bitwise CRC-32C of this
 * file's own, so that the library's format and checksum are checked against
 * an independent reading of include/libdirty.h, not against themselves.
 * (The library's CRC-32C itself, on both of its code paths, is
 * tests/test-crc32c.c's.)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/io_uring.h>
#include <linux/seccomp.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include "config.h"
#include <libdirty.h>
#include "tap.h"

#include "native-arch.h"

#define ALIGN DIRTY_IMAGE_ALIGN

static size_t page_size;

/* ---- an independent reading of the format ---- */

#include "ref-crc32c.h"

static uint64_t align_up(uint64_t n)
{
	return (n + ALIGN - 1) / ALIGN * ALIGN;
}

static uint32_t ref_header_crc(const struct dirty_image_header *h)
{
	struct dirty_image_header copy = *h;

	copy.crc = 0;
	return ref_crc32c(0, &copy, sizeof(copy));
}

/* An image in memory, its parts located and every rule of the format asserted. */
struct view {
	struct dirty_image_header *h;
	struct dirty_image_region *regions;
	struct dirty_image_run *runs;
	unsigned char *data;
	struct dirty_image_trailer *trailer;
	size_t size;
};

static struct view view_image(unsigned char *buf, size_t len)
{
	struct view v = { .h = (void *)buf };
	const struct dirty_image_header *h = v.h;
	uint64_t pages = 0;

	ck_assert_uint_ge(len, ALIGN);
	ck_assert_mem_eq(h->magic, DIRTY_IMAGE_MAGIC, 8);
	ck_assert_uint_eq(h->version, DIRTY_IMAGE_VERSION);
	ck_assert_uint_eq(h->header_size, sizeof(*h));
	ck_assert_uint_eq(h->page_size, page_size);
	ck_assert_uint_eq(h->crc, ref_header_crc(h));
	ck_assert_uint_eq(h->regions_offset, ALIGN);
	ck_assert_uint_eq(h->runs_offset, ALIGN + align_up(h->nregions * 128));
	ck_assert_uint_eq(h->data_offset, h->runs_offset + align_up(h->nruns * 16));
	ck_assert_uint_eq(h->trailer_offset, h->data_offset + h->npages * page_size);
	v.size = h->trailer_offset + ALIGN;
	ck_assert_uint_le(v.size, len);
	/* the padding is zeroes */
	for (size_t i = sizeof(*h); i < ALIGN; i++)
		ck_assert_uint_eq(buf[i], 0);
	for (size_t i = h->regions_offset + h->nregions * 128; i < h->runs_offset; i++)
		ck_assert_uint_eq(buf[i], 0);
	for (size_t i = h->runs_offset + h->nruns * 16; i < h->data_offset; i++)
		ck_assert_uint_eq(buf[i], 0);
	v.regions = (void *)(buf + h->regions_offset);
	v.runs = (void *)(buf + h->runs_offset);
	v.data = buf + h->data_offset;
	v.trailer = (void *)(buf + h->trailer_offset);
	for (uint64_t i = 0; i < h->nruns; i++)
		pages += v.runs[i].npages;
	ck_assert_uint_eq(pages, h->npages);
	ck_assert_mem_eq(v.trailer->magic, DIRTY_IMAGE_TRAILER_MAGIC, 8);
	ck_assert_uint_eq(v.trailer->total_size, v.size);
	ck_assert_uint_eq(v.trailer->crc, ref_crc32c(0, buf, h->trailer_offset));
	for (size_t i = sizeof(*v.trailer); i < ALIGN; i++)
		ck_assert_uint_eq(buf[h->trailer_offset + i], 0);
	return v;
}

/* Recompute the checksums after a test changed an image on purpose. */
static void fix_header_crc(unsigned char *buf)
{
	struct dirty_image_header *h = (void *)buf;

	h->crc = ref_header_crc(h);
}

static void fix_trailer_crc(unsigned char *buf, size_t len)
{
	struct dirty_image_header *h = (void *)buf;
	struct dirty_image_trailer *tr = (void *)(buf + h->trailer_offset);

	ck_assert_uint_le(h->trailer_offset + sizeof(*tr), len);
	tr->crc = ref_crc32c(0, buf, h->trailer_offset);
}

/*
 * Zero what differs between two writes of the same pages: the time and
 * the two checksums that cover it.  (Each image was verified first, so its
 * checksums are known right; what is compared is every other byte.)
 */
static void zero_variable(unsigned char *buf, size_t len)
{
	for (size_t off = 0; off < len;) {
		struct dirty_image_header *h = (void *)(buf + off);
		struct dirty_image_trailer *tr = (void *)(buf + off + h->trailer_offset);

		h->time_ns = 0;
		h->crc = 0;
		tr->crc = 0;
		off += h->trailer_offset + ALIGN;
	}
}

/* ---- helpers ---- */

static char *map_pages(size_t npages)
{
	char *mem = mmap(NULL, npages * page_size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ck_assert_ptr_ne(mem, MAP_FAILED);
	/* base pages, so that tests of exact runs do not meet THP effects */
	madvise(mem, npages * page_size, MADV_NOHUGEPAGE);
	return mem;
}

static struct dirty_tracker *tracker_auto(void)
{
	struct dirty_tracker *t = NULL;

	ck_assert_int_eq(dirty_tracker_new(NULL, &t), 0);
	return t;
}

/* Give page i of mem a content that says which page and which round it is. */
static void write_page(char *mem, size_t i, unsigned round)
{
	unsigned char *p = (unsigned char *)mem + i * page_size;

	for (size_t k = 0; k < page_size; k += 64)
		p[k] = (unsigned char)(i * 31 + round * 7 + k / 64);
	p[page_size - 1] = (unsigned char)round;
}

static void write_pages(char *mem, const size_t *pages, size_t n, unsigned round)
{
	for (size_t i = 0; i < n; i++)
		write_page(mem, pages[i], round);
}

/* A file in the working directory (the build tree: a disk file system), unlinked. */
static int temp_file(void)
{
	char path[] = "test-image-XXXXXX";
	int fd = mkstemp(path);

	ck_assert_int_ge(fd, 0);
	unlink(path);
	return fd;
}

static unsigned char *read_all(int fd, size_t *len)
{
	struct stat st;
	unsigned char *buf;

	ck_assert_int_eq(fstat(fd, &st), 0);
	buf = malloc((size_t)st.st_size + 1);
	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(pread(fd, buf, (size_t)st.st_size, 0), st.st_size);
	*len = (size_t)st.st_size;
	return buf;
}

/* A file holding exactly these bytes, its offset at 0. */
static int file_with(const void *buf, size_t len)
{
	int fd = temp_file();

	ck_assert_int_eq(write(fd, buf, len), (ssize_t)len);
	ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
	return fd;
}

static size_t collect_n(struct dirty_tracker *t, void *addr, size_t len, unsigned flags,
			struct dirty_range *out, size_t max)
{
	void *next;
	ssize_t n = dirty_collect(t, addr, len, flags, out, max, &next);

	ck_assert_int_ge(n, 0);
	ck_assert_ptr_eq(next, (char *)addr + len);
	return (size_t)n;
}

static void assert_run(const struct dirty_range *r, const char *mem, size_t first, size_t npages)
{
	ck_assert_ptr_eq(r->start, mem + first * page_size);
	ck_assert_uint_eq(r->len, npages * page_size);
}

static int fd_count(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	ck_assert_ptr_nonnull(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static size_t heap_in_use(void)
{
	return mallinfo2().uordblks;
}

/* Did this build get io_uring, and does this kernel let us have it? */
static bool uring_usable(void)
{
#if HAVE_LIBURING
	static int usable = -1;

	if (usable < 0) {
		struct io_uring_params p;
		long fd;

		memset(&p, 0, sizeof(p));
		fd = syscall(__NR_io_uring_setup, 4, &p);
		usable = fd >= 0;
		if (fd >= 0)
			close((int)fd);
	}
	return usable;
#else
	return false;
#endif
}

/* The method a default write (seekable file, io_uring allowed) must name. */
static void assert_default_method(const char *method)
{
	ck_assert_ptr_nonnull(method);
#if HAVE_LIBURING
	if (uring_usable())
		ck_assert_str_eq(method, "io_uring");
	else
		ck_assert_msg(!strncmp(method, "pwritev (io_uring refused", 25), "%s", method);
#else
	ck_assert_str_eq(method, "pwritev (built without liburing)");
#endif
}

static struct dirty_image_options options(unsigned flags, uint64_t sequence)
{
	return (struct dirty_image_options){ .sz = sizeof(struct dirty_image_options),
					     .flags = flags, .sequence = sequence };
}

/* Write one image of [mem, mem + npages) and return 0 or the error; stats into *st. */
static int image_of(struct dirty_tracker *t, char *mem, size_t npages, unsigned flags, int fd,
		    struct dirty_image_stats *st)
{
	struct dirty_image_options o = options(flags, 0);
	struct dirty_range r = { mem, npages * page_size };

	*st = (struct dirty_image_stats){ .sz = sizeof(*st) };
	return dirty_image_write(t, &r, NULL, 1, &o, fd, st);
}

/* The same, with *st as the caller set it (to see it untouched on failure). */
static int image_of_keep(struct dirty_tracker *t, char *mem, size_t npages, unsigned flags,
			 int fd, struct dirty_image_stats *st)
{
	struct dirty_image_options o = options(flags, 0);
	struct dirty_range r = { mem, npages * page_size };

	return dirty_image_write(t, &r, NULL, 1, &o, fd, st);
}

/* ---- this process ---- */

/*
 * Known dirty pages of this process: the image holds exactly them, with
 * their contents, and the collect-and-clean left nothing dirty.
 */
START_TEST(test_self_image)
{
	static const size_t dirty[] = { 1, 2, 3, 7, 20, 31 };
	const char *names[] = { "the buffer" };
	struct dirty_image_options o = options(DIRTY_IMAGE_CLEAN, 5);
	struct dirty_image_stats st = { .sz = sizeof(st) };
	struct dirty_image_header h;
	struct dirty_range r, runs[8];
	struct dirty_tracker *t = tracker_auto();
	char *mem = map_pages(32);
	unsigned char *buf;
	struct view v;
	size_t len;
	int fd = temp_file();

	memset(mem, 0x11, 32 * page_size);
	ck_assert_int_eq(dirty_track(t, mem, 32 * page_size), 0);
	write_pages(mem, dirty, 6, 1);
	r = (struct dirty_range){ mem, 32 * page_size };
	ck_assert_int_eq(dirty_image_write(t, &r, names, 1, &o, fd, &st), 0);
	ck_assert_uint_eq(st.sz, sizeof(st));
	ck_assert_uint_eq(st.runs, 4);
	ck_assert_uint_eq(st.pages, 6);
	ck_assert_uint_eq(st.bytes, 3 * ALIGN + 6 * page_size + ALIGN);
	assert_default_method(st.method);
	/* the offset is advanced past the image */
	ck_assert_int_eq(lseek(fd, 0, SEEK_CUR), (off_t)st.bytes);
	/* DIRTY_IMAGE_CLEAN: nothing is dirty now */
	ck_assert_uint_eq(collect_n(t, mem, 32 * page_size, 0, runs, 8), 0);

	ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
	ck_assert_int_eq(dirty_image_verify(fd, &h), 0);
	ck_assert_int_eq(lseek(fd, 0, SEEK_CUR), (off_t)st.bytes);

	buf = read_all(fd, &len);
	ck_assert_uint_eq(len, st.bytes);
	v = view_image(buf, len);
	ck_assert_mem_eq(&h, v.h, sizeof(h));
	ck_assert_uint_eq(v.h->flags, 0);
	ck_assert_uint_eq(v.h->sequence, 5);
	ck_assert_uint_eq(v.h->pid, (uint64_t)getpid());
	ck_assert_uint_ne(v.h->time_ns, 0);
	ck_assert_uint_eq(v.h->nregions, 1);
	ck_assert_uint_eq(v.h->nruns, 4);
	ck_assert_uint_eq(v.h->npages, 6);
	ck_assert_uint_eq(v.regions[0].start, (uintptr_t)mem);
	ck_assert_uint_eq(v.regions[0].end, (uintptr_t)mem + 32 * page_size);
	ck_assert_str_eq(v.regions[0].name, "the buffer");
	for (size_t i = strlen("the buffer"); i < sizeof(v.regions[0].name); i++)
		ck_assert_uint_eq(v.regions[0].name[i], 0);
	ck_assert_uint_eq(v.runs[0].start, (uintptr_t)(mem + 1 * page_size));
	ck_assert_uint_eq(v.runs[0].npages, 3);
	ck_assert_uint_eq(v.runs[1].start, (uintptr_t)(mem + 7 * page_size));
	ck_assert_uint_eq(v.runs[1].npages, 1);
	ck_assert_uint_eq(v.runs[2].start, (uintptr_t)(mem + 20 * page_size));
	ck_assert_uint_eq(v.runs[3].start, (uintptr_t)(mem + 31 * page_size));
	for (size_t i = 0; i < 6; i++)
		ck_assert_mem_eq(v.data + i * page_size, mem + dirty[i] * page_size, page_size);
	free(buf);
	close(fd);
	dirty_tracker_free(t);
	munmap(mem, 32 * page_size);
}
END_TEST

/* Several regions, given out of order, unnamed and with a long name: sorted in the image. */
START_TEST(test_regions_sorted_and_named)
{
	struct dirty_image_options o = options(0, 0);
	struct dirty_image_stats st = { .sz = sizeof(st) };
	struct dirty_tracker *t = tracker_auto();
	char *mem = map_pages(24), long_name[200];
	struct dirty_range r[3] = {
		{ mem + 16 * page_size, 8 * page_size },
		{ mem, 4 * page_size },
		{ mem + 8 * page_size, 4 * page_size },
	};
	const char *names[3] = { long_name, NULL, "middle" };
	unsigned char *buf;
	struct view v;
	size_t len;
	int fd = temp_file();

	memset(long_name, 'n', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = 0;
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(dirty_track(t, r[i].start, r[i].len), 0);
	write_pages(mem, (const size_t[]){ 1, 9, 17, 23 }, 4, 1);
	ck_assert_int_eq(dirty_image_write(t, r, names, 3, &o, fd, &st), 0);
	ck_assert_uint_eq(st.runs, 4);
	buf = read_all(fd, &len);
	v = view_image(buf, len);
	ck_assert_uint_eq(v.h->nregions, 3);
	ck_assert_uint_eq(v.regions[0].start, (uintptr_t)mem);
	ck_assert_uint_eq(v.regions[0].name[0], 0);
	ck_assert_uint_eq(v.regions[1].start, (uintptr_t)(mem + 8 * page_size));
	ck_assert_str_eq(v.regions[1].name, "middle");
	ck_assert_uint_eq(v.regions[2].start, (uintptr_t)(mem + 16 * page_size));
	ck_assert_uint_eq(v.regions[2].end, (uintptr_t)(mem + 24 * page_size));
	ck_assert_uint_eq(strlen(v.regions[2].name), sizeof(v.regions[2].name) - 1);
	ck_assert_mem_eq(v.regions[2].name, long_name, sizeof(v.regions[2].name) - 1);
	for (int i = 0; i < 4; i++)
		ck_assert_uint_eq(v.runs[i].start,
				  (uintptr_t)(mem + (size_t[]){ 1, 9, 17, 23 }[i] * page_size));
	/* without DIRTY_IMAGE_CLEAN nothing was cleaned */
	{
		struct dirty_range runs[8];

		ck_assert_uint_eq(collect_n(t, mem + 16 * page_size, 8 * page_size, 0, runs, 8), 2);
	}
	free(buf);
	close(fd);
	dirty_tracker_free(t);
	munmap(mem, 24 * page_size);
}
END_TEST

/*
 * io_uring and pwritev write the same bytes (but the time and the CRCs that
 * cover it), whether the pages go straight from memory (DIRTY_IMAGE_CLEAN)
 * or through staging copies (without it), over many chunks: 1024 pages of
 * which two in three are dirty make more runs than an io_uring submission
 * or a pwritev call takes, and a queue depth of 3 keeps the ring full.
 */
START_TEST(test_uring_equals_pwritev)
{
	enum { N = 1024 };
	static const unsigned modes[][2] = {
		{ DIRTY_IMAGE_CLEAN, 0 }, { DIRTY_IMAGE_CLEAN, 3 }, { 0, 0 }, { 0, 1 },
	};
	struct dirty_tracker *t = tracker_auto();
	char *mem = map_pages(N);
	unsigned char *ref = NULL;
	size_t ref_len = 0;

	ck_assert_int_eq(dirty_track(t, mem, N * page_size), 0);
	for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
		for (int engine = 0; engine < 2; engine++) {
			struct dirty_image_options o = options(modes[m][0] |
							       (engine ? DIRTY_IMAGE_PWRITEV : 0), 0);
			struct dirty_range r = { mem, N * page_size };
			struct dirty_image_stats st = { .sz = sizeof(st) };
			unsigned char *buf;
			size_t len;
			int fd = temp_file();

			o.queue_depth = modes[m][1];
			/* the same pages, the same bytes, every time */
			for (size_t i = 0; i < N; i++)
				if (i % 3)
					write_page(mem, i, 1);
			ck_assert_int_eq(dirty_image_write(t, &r, NULL, 1, &o, fd, &st), 0);
			/* pages 3k+1 and 3k+2: 2 * 341 of them in 341 runs */
			ck_assert_uint_eq(st.pages, 682);
			ck_assert_uint_eq(st.runs, 341);
			if (engine)
				ck_assert_str_eq(st.method, "pwritev");
			else
				assert_default_method(st.method);
			ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
			ck_assert_int_eq(dirty_image_verify(fd, NULL), 0);
			buf = read_all(fd, &len);
			view_image(buf, len);
			zero_variable(buf, len);
			if (!ref) {
				ref = buf;
				ref_len = len;
			} else {
				ck_assert_uint_eq(len, ref_len);
				ck_assert_msg(!memcmp(buf, ref, len),
					      "mode %zu engine %d differs from the first image", m,
					      engine);
				free(buf);
			}
			close(fd);
		}
		if (!(modes[m][0] & DIRTY_IMAGE_CLEAN))
			ck_assert_int_eq(dirty_clean(t, mem, N * page_size), 0);
	}
	free(ref);
	dirty_tracker_free(t);
	munmap(mem, N * page_size);
}
END_TEST

/* DIRTY_IMAGE_ALL: every page, flagged a base image; with CLEAN, all clean after. */
START_TEST(test_all)
{
	struct dirty_tracker *t = tracker_auto();
	struct dirty_image_stats st;
	struct dirty_range runs[8];
	char *mem = map_pages(16);
	unsigned char *buf;
	struct view v;
	size_t len;

	for (size_t i = 0; i < 16; i++)
		write_page(mem, i, 1);
	ck_assert_int_eq(dirty_track(t, mem, 16 * page_size), 0);
	write_pages(mem, (const size_t[]){ 4, 5 }, 2, 2);
	for (int clean = 0; clean < 2; clean++) {
		int fd = temp_file();

		ck_assert_int_eq(image_of(t, mem, 16, DIRTY_IMAGE_ALL | (clean ? DIRTY_IMAGE_CLEAN : 0),
					  fd, &st), 0);
		ck_assert_uint_eq(st.runs, 1);
		ck_assert_uint_eq(st.pages, 16);
		ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
		ck_assert_int_eq(dirty_image_verify(fd, NULL), 0);
		buf = read_all(fd, &len);
		v = view_image(buf, len);
		ck_assert_uint_eq(v.h->flags, DIRTY_IMAGE_BASE);
		ck_assert_uint_eq(v.runs[0].start, (uintptr_t)mem);
		ck_assert_uint_eq(v.runs[0].npages, 16);
		ck_assert_mem_eq(v.data, mem, 16 * page_size);
		free(buf);
		close(fd);
		if (!clean) {
			/* not cleaned: the two written pages are still dirty */
			ck_assert_uint_eq(collect_n(t, mem, 16 * page_size, 0, runs, 8), 1);
			assert_run(&runs[0], mem, 4, 2);
		} else {
			ck_assert_uint_eq(collect_n(t, mem, 16 * page_size, 0, runs, 8), 0);
		}
	}
	dirty_tracker_free(t);
	munmap(mem, 16 * page_size);
}
END_TEST

/*
 * The first image of a program that replaced another (execve): a base
 * image whose header says so; the flag is refused on an incremental image.
 */
START_TEST(test_new_program)
{
	struct dirty_tracker *t = tracker_auto();
	struct dirty_image_stats st = { .sz = sizeof(st) };
	char *mem = map_pages(8);
	unsigned char *buf;
	struct view v;
	size_t len;
	int fd = temp_file();

	for (size_t i = 0; i < 8; i++)
		write_page(mem, i, 1);
	ck_assert_int_eq(dirty_track(t, mem, 8 * page_size), 0);
	ck_assert_int_eq(image_of(t, mem, 8, DIRTY_IMAGE_EXEC | DIRTY_IMAGE_CLEAN, fd, &st), -EINVAL);
	ck_assert_int_eq(lseek(fd, 0, SEEK_END), 0);
	ck_assert_int_eq(image_of(t, mem, 8, DIRTY_IMAGE_EXEC | DIRTY_IMAGE_ALL | DIRTY_IMAGE_CLEAN,
				  fd, &st), 0);
	ck_assert_uint_eq(st.pages, 8);
	ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
	ck_assert_int_eq(dirty_image_verify(fd, NULL), 0);
	buf = read_all(fd, &len);
	v = view_image(buf, len);
	ck_assert_uint_eq(v.h->flags, DIRTY_IMAGE_BASE | DIRTY_IMAGE_NEW_PROGRAM);
	ck_assert_mem_eq(v.data, mem, 8 * page_size);
	free(buf);
	close(fd);
	dirty_tracker_free(t);
	munmap(mem, 8 * page_size);
}
END_TEST

/*
 * A chain in one file after 100 bytes of something else: a base image and
 * two incremental ones, verified in turn, then applied to rebuild the memory.
 */
START_TEST(test_chain)
{
	struct dirty_tracker *t = tracker_auto();
	struct dirty_image_stats st[3];
	struct dirty_image_header h;
	char *mem = map_pages(16), *copy = calloc(16, page_size), prefix[100] = "not an image";
	unsigned char *buf;
	off_t off = sizeof(prefix);
	size_t len;
	int fd = temp_file();

	ck_assert_int_eq(write(fd, prefix, sizeof(prefix)), (ssize_t)sizeof(prefix));
	for (size_t i = 0; i < 16; i++)
		write_page(mem, i, 1);
	ck_assert_int_eq(dirty_track(t, mem, 16 * page_size), 0);
	for (unsigned seq = 0; seq < 3; seq++) {
		struct dirty_image_options o =
			options(DIRTY_IMAGE_CLEAN | (seq ? 0 : DIRTY_IMAGE_ALL), seq);
		struct dirty_range r = { mem, 16 * page_size };

		if (seq == 1)
			write_pages(mem, (const size_t[]){ 2, 3 }, 2, 2);
		if (seq == 2)
			write_pages(mem, (const size_t[]){ 2, 9, 15 }, 3, 3);
		st[seq] = (struct dirty_image_stats){ .sz = sizeof(st[seq]) };
		ck_assert_int_eq(dirty_image_write(t, &r, NULL, 1, &o, fd, &st[seq]), 0);
	}
	ck_assert_uint_eq(st[0].pages, 16);
	ck_assert_uint_eq(st[1].pages, 2);
	ck_assert_uint_eq(st[2].pages, 3);

	ck_assert_int_eq(lseek(fd, off, SEEK_SET), off);
	for (unsigned seq = 0; seq < 3; seq++) {
		ck_assert_int_eq(dirty_image_verify(fd, &h), 0);
		ck_assert_uint_eq(h.sequence, seq);
		ck_assert_uint_eq(h.flags, seq ? 0 : DIRTY_IMAGE_BASE);
		off += (off_t)st[seq].bytes;
		ck_assert_int_eq(lseek(fd, 0, SEEK_CUR), off);
	}
	/* the end of the file: nothing more */
	ck_assert_int_eq(dirty_image_verify(fd, &h), -ENODATA);

	/* apply the chain in order: the result is the memory now */
	buf = read_all(fd, &len);
	for (size_t at = sizeof(prefix); at < len;) {
		/* the images are 100 bytes off alignment in the file: an aligned copy to read */
		unsigned char *image = malloc(len - at);
		const unsigned char *data;
		struct view v;

		ck_assert_ptr_nonnull(image);
		memcpy(image, buf + at, len - at);
		v = view_image(image, len - at);
		data = v.data;

		for (uint64_t i = 0; i < v.h->nruns; i++) {
			size_t bytes = v.runs[i].npages * page_size;

			memcpy(copy + (v.runs[i].start - (uintptr_t)mem), data, bytes);
			data += bytes;
		}
		at += v.size;
		free(image);
	}
	ck_assert_mem_eq(copy, mem, 16 * page_size);
	free(buf);
	free(copy);
	close(fd);
	dirty_tracker_free(t);
	munmap(mem, 16 * page_size);
}
END_TEST

/*
 * Pages written by another thread while the image is written from memory:
 * the image must still verify (the writer notices and writes the pages
 * again from copies; its log says so), and the pages written are dirty
 * for the next image.
 */
struct hammer {
	volatile char *page;
	atomic_bool stop;
	atomic_ulong writes;
};

static void *hammer_main(void *p)
{
	struct hammer *hm = p;

	while (!atomic_load(&hm->stop)) {
		hm->page[100]++;
		atomic_fetch_add(&hm->writes, 1);
	}
	return NULL;
}

static void count_staging(int priority, const char *msg, void *userdata)
{
	(void)priority;
	if (strstr(msg, "staging them"))
		(*(int *)userdata)++;
}

START_TEST(test_written_during_write)
{
	/* tries before giving up: one needs the hammer to run while the
	 * image is written, which a loaded machine may not schedule */
	enum { N = 4096, TRIES = 50 };
	int staged = 0, tries;
	struct dirty_options to = { .sz = sizeof(to), .log = count_staging, .log_userdata = &staged };
	struct dirty_tracker *t = NULL;
	struct dirty_image_stats st;
	struct dirty_range runs[8];
	char *mem = map_pages(N);
	int fd = temp_file();

	ck_assert_int_eq(dirty_tracker_new(&to, &t), 0);
	ck_assert_int_eq(dirty_track(t, mem, N * page_size), 0);
	for (tries = 0; staged == 0 && tries < TRIES; tries++) {
		struct hammer hm = { .page = mem + 1000 * page_size };
		pthread_t thread;

		for (size_t i = 0; i < N; i++)
			write_page(mem, i, (unsigned)tries + 1);
		ck_assert_int_eq(ftruncate(fd, 0), 0);
		ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
		ck_assert_int_eq(pthread_create(&thread, NULL, hammer_main, &hm), 0);
		while (atomic_load(&hm.writes) < 1000)
			;
		ck_assert_int_eq(image_of(t, mem, N, DIRTY_IMAGE_CLEAN, fd, &st), 0);
		atomic_store(&hm.stop, true);
		pthread_join(thread, NULL);
		/* staged or not, every image verifies */
		ck_assert_uint_eq(st.pages, N);
		ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
		ck_assert_int_eq(dirty_image_verify(fd, NULL), 0);
	}
	ck_assert_msg(staged == 1, "the writer staged %d times in %d images (never raced?)",
		      staged, tries);
	/* the hammered page is dirty again, for the next image */
	ck_assert_uint_eq(collect_n(t, mem, N * page_size, 0, runs, 8), 1);
	assert_run(&runs[0], mem, 1000, 1);
	close(fd);
	dirty_tracker_free(t);
	munmap(mem, N * page_size);
}
END_TEST

/* ---- streams ---- */

struct reader {
	int fd;
	int results[3];
	struct dirty_image_header h[3];
};

static void *reader_main(void *p)
{
	struct reader *rd = p;

	for (int i = 0; i < 3; i++)
		rd->results[i] = dirty_image_verify(rd->fd, &rd->h[i]);
	return NULL;
}

/*
 * Images through a pipe and a socket, larger than the pipe's buffer, read
 * and verified as they arrive by another thread, one after the other; at
 * end of stream verify says -ENODATA.
 */
START_TEST(test_stream)
{
	struct dirty_tracker *t = tracker_auto();
	char *mem = map_pages(64);

	ck_assert_int_eq(dirty_track(t, mem, 64 * page_size), 0);
	for (int kind = 0; kind < 2; kind++) {
		struct reader rd = { 0 };
		struct dirty_image_stats st;
		pthread_t thread;
		int fds[2];

		if (kind == 0)
			ck_assert_int_eq(pipe(fds), 0);
		else
			ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
		rd.fd = fds[0];
		ck_assert_int_eq(pthread_create(&thread, NULL, reader_main, &rd), 0);
		for (size_t i = 0; i < 64; i++)
			write_page(mem, i, 1);
		ck_assert_int_eq(image_of(t, mem, 64, DIRTY_IMAGE_CLEAN | DIRTY_IMAGE_ALL, fds[1], &st),
				 0);
		ck_assert_str_eq(st.method, "pwritev (not seekable or O_APPEND: writev, in order)");
		write_pages(mem, (const size_t[]){ 3, 60 }, 2, 2);
		ck_assert_int_eq(image_of(t, mem, 64, DIRTY_IMAGE_CLEAN, fds[1], &st), 0);
		ck_assert_uint_eq(st.pages, 2);
		close(fds[1]);
		pthread_join(thread, NULL);
		ck_assert_int_eq(rd.results[0], 0);
		ck_assert_uint_eq(rd.h[0].npages, 64);
		ck_assert_int_eq(rd.results[1], 0);
		ck_assert_uint_eq(rd.h[1].npages, 2);
		ck_assert_int_eq(rd.results[2], -ENODATA);
		close(fds[0]);
	}
	dirty_tracker_free(t);
	munmap(mem, 64 * page_size);
}
END_TEST

/* An O_APPEND file: written in order, at its end, whatever the offset says. */
START_TEST(test_append)
{
	char path[] = "test-image-append-XXXXXX";
	struct dirty_tracker *t = tracker_auto();
	struct dirty_image_stats st;
	char *mem = map_pages(8);
	int fd = mkstemp(path), afd;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "x", 1), 1);
	afd = open(path, O_WRONLY | O_APPEND);
	unlink(path);
	ck_assert_int_ge(afd, 0);
	ck_assert_int_eq(dirty_track(t, mem, 8 * page_size), 0);
	write_pages(mem, (const size_t[]){ 1, 6 }, 2, 1);
	ck_assert_int_eq(image_of(t, mem, 8, DIRTY_IMAGE_CLEAN, afd, &st), 0);
	ck_assert_str_eq(st.method, "pwritev (not seekable or O_APPEND: writev, in order)");
	ck_assert_int_eq(lseek(fd, 1, SEEK_SET), 1);
	ck_assert_int_eq(dirty_image_verify(fd, NULL), 0);
	close(afd);
	close(fd);
	dirty_tracker_free(t);
	munmap(mem, 8 * page_size);
}
END_TEST

/* ---- corrupt images ---- */

/* A sample image with 3 runs: pages 1, 4-5, 9 of 12. */
static unsigned char *sample_image(size_t *len)
{
	struct dirty_tracker *t = tracker_auto();
	struct dirty_image_stats st;
	char *mem = map_pages(12);
	unsigned char *buf;
	int fd = temp_file();

	ck_assert_int_eq(dirty_track(t, mem, 12 * page_size), 0);
	write_pages(mem, (const size_t[]){ 1, 4, 5, 9 }, 4, 1);
	ck_assert_int_eq(image_of(t, mem, 12, DIRTY_IMAGE_CLEAN, fd, &st), 0);
	ck_assert_uint_eq(st.runs, 3);
	buf = read_all(fd, len);
	close(fd);
	dirty_tracker_free(t);
	munmap(mem, 12 * page_size);
	view_image(buf, *len);
	return buf;
}

/*
 * Verify these bytes from a file: the result, with no descriptor or memory
 * leaked.  mallinfo2() counts chunks parked in the thread cache as in use,
 * so one call's balance says nothing; 64 calls that each leaked one of
 * verify's buffers (every one at least 4 KiB) would grow the heap by 256
 * KiB, which the cache cannot hide.
 */
static int verify_bytes(const unsigned char *buf, size_t len)
{
	struct dirty_image_header h, before;
	int fd = file_with(buf, len), fds, err;
	size_t heap;

	memset(&h, 0x5a, sizeof(h));
	before = h;
	fds = fd_count();
	err = dirty_image_verify(fd, &h);
	if (err)
		ck_assert_mem_eq(&h, &before, sizeof(h)); /* untouched on failure */
	heap = heap_in_use();
	for (int i = 0; i < 64; i++) {
		ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
		ck_assert_int_eq(dirty_image_verify(fd, NULL), err);
	}
	ck_assert_uint_lt(heap_in_use(), heap + 64 * 1024);
	ck_assert_int_eq(fd_count(), fds);
	close(fd);
	return err;
}

START_TEST(test_corrupt)
{
	size_t len;
	unsigned char *good = sample_image(&len), *bad = malloc(len);
	struct dirty_image_header *h = (void *)bad;
	struct dirty_image_run *runs;
	const size_t truncations[] = {
		0, 1, 100, ALIGN - 1, ALIGN, 2 * ALIGN + 10, 3 * ALIGN, 3 * ALIGN + page_size + 1,
		len - ALIGN, len - 1,
	};

	ck_assert_int_eq(verify_bytes(good, len), 0);
	/* truncated anywhere: -ENODATA */
	for (size_t i = 0; i < sizeof(truncations) / sizeof(truncations[0]); i++)
		ck_assert_msg(verify_bytes(good, truncations[i]) == -ENODATA, "truncated to %zu",
			      truncations[i]);

#define FLIPPED(offset, want)                                                            \
	do {                                                                             \
		memcpy(bad, good, len);                                                  \
		bad[offset] ^= 0x01;                                                     \
		ck_assert_msg(verify_bytes(bad, len) == (want), "byte %zu flipped",      \
			      (size_t)(offset));                                         \
	} while (0)
	FLIPPED(0, -EBADMSG);                                  /* magic */
	FLIPPED(offsetof(struct dirty_image_header, pid), -EBADMSG);   /* header crc */
	FLIPPED(offsetof(struct dirty_image_header, nruns), -EBADMSG);
	FLIPPED(offsetof(struct dirty_image_header, crc), -EBADMSG);
	FLIPPED(200, -EBADMSG);                                /* header padding: trailer crc */
	FLIPPED(ALIGN + 20, -EBADMSG);                         /* region table */
	FLIPPED(2 * ALIGN + 3, -EBADMSG);                      /* run table */
	FLIPPED(3 * ALIGN + page_size + 17, -EBADMSG);         /* data */
	FLIPPED(len - ALIGN, -EBADMSG);                        /* trailer magic */
	FLIPPED(len - ALIGN + offsetof(struct dirty_image_trailer, total_size), -EBADMSG);
	FLIPPED(len - ALIGN + offsetof(struct dirty_image_trailer, crc), -EBADMSG);
	/* the trailer's padding is covered by no checksum, and means nothing */
	FLIPPED(len - 1, 0);
	/*
	 * The version field is read before the checksum (where a later version
	 * keeps its checksum is unknown), so a changed version is -EPROTO with or
	 * without a matching crc.
	 */
	FLIPPED(offsetof(struct dirty_image_header, version), -EPROTO);
#undef FLIPPED

	/* a wrong version with a matching header crc: -EPROTO */
	memcpy(bad, good, len);
	h->version = 2;
	fix_header_crc(bad);
	ck_assert_int_eq(verify_bytes(bad, len), -EPROTO);

	/* checksums recomputed on an unchanged image: accepted (the helpers are right) */
	memcpy(bad, good, len);
	fix_header_crc(bad);
	fix_trailer_crc(bad, len);
	ck_assert_int_eq(verify_bytes(bad, len), 0);
	ck_assert_mem_eq(bad, good, len);

	/* the tables made wrong, every checksum made right: -EBADMSG for the tables */
	runs = (void *)(bad + 2 * ALIGN);
#define TABLE_WRONG(what, change)                                                        \
	do {                                                                             \
		memcpy(bad, good, len);                                                  \
		change;                                                                  \
		fix_header_crc(bad);                                                     \
		fix_trailer_crc(bad, len);                                                    \
		ck_assert_msg(verify_bytes(bad, len) == -EBADMSG, "%s", what);           \
	} while (0)
	TABLE_WRONG("runs out of order", {
		struct dirty_image_run r = runs[0];

		runs[0] = runs[1];
		runs[1] = r;
	});
	TABLE_WRONG("runs overlapping", runs[1].start = runs[0].start);
	TABLE_WRONG("a run outside the region", runs[2].start = ((uint64_t *)(bad + ALIGN))[1]);
	TABLE_WRONG("a run of no pages", { runs[0].npages = 0; runs[1].npages++; });
	TABLE_WRONG("an unaligned run", runs[0].start += 8);
	TABLE_WRONG("pages not adding up", runs[0].npages++);
	TABLE_WRONG("npages not matching the layout", h->npages++);
	TABLE_WRONG("a region ending before it starts",
		    ((uint64_t *)(bad + ALIGN))[1] = ((uint64_t *)(bad + ALIGN))[0]);
	TABLE_WRONG("a name without its NUL", memset(bad + ALIGN + 16, 'x', 112));
	TABLE_WRONG("an unknown flag", h->flags |= 0x80);
	TABLE_WRONG("a base image with pages missing", h->flags |= DIRTY_IMAGE_BASE);
	TABLE_WRONG("a new program's image that is not a base",
		    h->flags |= DIRTY_IMAGE_NEW_PROGRAM);
	TABLE_WRONG("a page size that is not one", h->page_size = 5000);
#undef TABLE_WRONG
	/* (its trailer crc cannot be fixed where the header now says the trailer is) */
	memcpy(bad, good, len);
	h->trailer_offset += ALIGN;
	fix_header_crc(bad);
	ck_assert_int_eq(verify_bytes(bad, len), -EBADMSG);
	memcpy(bad, good, len);
	h->data_offset -= ALIGN;
	fix_header_crc(bad);
	ck_assert_int_eq(verify_bytes(bad, len), -EBADMSG);

	/* a header longer than the struct (a compatible addition) is accepted, its bytes checked */
	memcpy(bad, good, len);
	h->header_size = sizeof(*h) + 5;
	bad[sizeof(*h) + 2] = 7;
	h->crc = 0;
	h->crc = ref_crc32c(0, bad, sizeof(*h) + 5);
	fix_trailer_crc(bad, len);
	ck_assert_int_eq(verify_bytes(bad, len), 0);
	bad[sizeof(*h) + 2] = 8;
	fix_trailer_crc(bad, len);
	ck_assert_int_eq(verify_bytes(bad, len), -EBADMSG);

	free(bad);
	free(good);
}
END_TEST

/*
 * A header that claims a region table of 16 TiB, in a file of two blocks:
 * truncated (-ENODATA), found without allocating the table it claims (it
 * once allocated first: -ENOMEM, or gigabytes for a smaller claim; the
 * fuzzer's malloc limit caught it).
 */
START_TEST(test_verify_huge_claim)
{
	unsigned char *buf = calloc(2, ALIGN);
	struct dirty_image_header *h = (void *)buf;
	uint64_t nregions = (uint64_t)1 << 37;
	size_t heap = heap_in_use();
	int fd;

	memcpy(h->magic, DIRTY_IMAGE_MAGIC, 8);
	h->version = DIRTY_IMAGE_VERSION;
	h->header_size = sizeof(*h);
	h->page_size = (uint32_t)page_size;
	h->nregions = nregions;
	h->regions_offset = ALIGN;
	h->runs_offset = ALIGN + nregions * 128;
	h->data_offset = h->runs_offset;
	h->trailer_offset = h->data_offset;
	fix_header_crc(buf);
	fd = file_with(buf, 2 * ALIGN);
	ck_assert_int_eq(dirty_image_verify(fd, NULL), -ENODATA);
	ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
	ck_assert_int_eq(dirty_image_read(fd, NULL, NULL), -ENODATA);
	ck_assert_uint_lt(heap_in_use(), heap + 64 * 1024);
	close(fd);
	free(buf);
}
END_TEST

START_TEST(test_verify_bad_fd)
{
	ck_assert_int_eq(dirty_image_verify(-1, NULL), -EBADF);
	/* a descriptor that cannot be read */
	{
		int fds[2];

		ck_assert_int_eq(pipe(fds), 0);
		ck_assert_int_eq(dirty_image_verify(fds[1], NULL), -EBADF);
		close(fds[0]);
		close(fds[1]);
	}
}
END_TEST

/* ---- another process ---- */

static void child_main(char *mem, int cmd, int ack)
{
	size_t index;

	while (read(cmd, &index, sizeof(index)) == sizeof(index)) {
		write_page(mem, index, 9);
		if (write(ack, "", 1) != 1)
			break;
	}
	_exit(0);
}

static void child_write(int cmd, int ack, size_t index)
{
	char c;

	ck_assert_int_eq(write(cmd, &index, sizeof(index)), sizeof(index));
	ck_assert_int_eq(read(ack, &c, 1), 1);
}

/*
 * A forked child's copy of a mapping, at the same address, tracked from here
 * (uffd-async): the image holds the child's pages, read with
 * process_vm_readv, not ours.
 */
START_TEST(test_other_process)
{
	struct dirty_options to = { .sz = sizeof(to), .backend = "uffd-async" };
	struct dirty_image_stats st;
	struct dirty_tracker *t = NULL;
	struct dirty_range runs[8];
	char *mem = map_pages(16), why[256], *theirs = malloc(16 * page_size);
	int cmd[2], ack[2], status, err;
	unsigned char *buf;
	size_t len;
	pid_t pid;

	for (size_t i = 0; i < 16; i++)
		write_page(mem, i, 1);
	ck_assert_int_eq(pipe(cmd), 0);
	ck_assert_int_eq(pipe(ack), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(cmd[1]);
		close(ack[0]);
		child_main(mem, cmd[0], ack[1]);
	}
	close(cmd[0]);
	close(ack[1]);
	err = dirty_backend_probe("uffd-async", pid, why, sizeof(why));
	if (err) {
		close(cmd[1]);
		ck_assert_int_eq(waitpid(pid, &status, 0), pid);
		close(ack[0]);
		free(theirs);
		munmap(mem, 16 * page_size);
		test_skip("uffd-async cannot track another process here: %s", why);
	}
	to.pid = pid;
	ck_assert_int_eq(dirty_tracker_new(&to, &t), 0);
	ck_assert_int_eq(dirty_track(t, mem, 16 * page_size), 0);
	child_write(cmd[1], ack[0], 3);
	child_write(cmd[1], ack[0], 4);
	child_write(cmd[1], ack[0], 10);
	write_page(mem, 5, 2); /* ours, not the child's: not in the image */

	for (int pass = 0; pass < 2; pass++) {
		struct iovec local = { theirs, 16 * page_size }, remote = { mem, 16 * page_size };
		int fd = temp_file();
		struct view v;

		ck_assert_int_eq(image_of(t, mem, 16, pass ? DIRTY_IMAGE_ALL : DIRTY_IMAGE_CLEAN, fd,
					  &st), 0);
		ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
		ck_assert_int_eq(dirty_image_verify(fd, NULL), 0);
		buf = read_all(fd, &len);
		v = view_image(buf, len);
		ck_assert_uint_eq(v.h->pid, (uint64_t)pid);
		ck_assert_int_eq(process_vm_readv(pid, &local, 1, &remote, 1, 0),
				 (ssize_t)(16 * page_size));
		if (!pass) {
			ck_assert_uint_eq(v.h->nruns, 2);
			ck_assert_uint_eq(v.runs[0].start, (uintptr_t)(mem + 3 * page_size));
			ck_assert_uint_eq(v.runs[0].npages, 2);
			ck_assert_uint_eq(v.runs[1].start, (uintptr_t)(mem + 10 * page_size));
			ck_assert_uint_eq(v.runs[1].npages, 1);
			ck_assert_mem_eq(v.data, theirs + 3 * page_size, 2 * page_size);
			ck_assert_mem_eq(v.data + 2 * page_size, theirs + 10 * page_size, page_size);
			/* and not ours */
			ck_assert(memcmp(v.data, mem + 3 * page_size, page_size));
			ck_assert_uint_eq(collect_n(t, mem, 16 * page_size, 0, runs, 8), 0);
		} else {
			ck_assert_uint_eq(v.h->npages, 16);
			ck_assert_mem_eq(v.data, theirs, 16 * page_size);
		}
		free(buf);
		close(fd);
	}
	close(cmd[1]);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	{
		/* the target is gone: an image of it fails as a collect does, and changes nothing */
		int fd = temp_file();

		ck_assert_int_eq(image_of(t, mem, 16, DIRTY_IMAGE_CLEAN, fd, &st), -ESRCH);
		ck_assert_int_eq(lseek(fd, 0, SEEK_END), 0);
		close(fd);
		dirty_tracker_free(t);
	}
	close(ack[0]);
	free(theirs);
	munmap(mem, 16 * page_size);
}
END_TEST

/* ---- O_DIRECT ---- */

/* A file opened with O_DIRECT on a file system that takes it, or -1 and why. */
static int direct_file(char *why, size_t why_len)
{
	static const char *const dirs[] = { ".", "/var/tmp", "/tmp" };

	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		char path[4096];
		int fd;

		snprintf(path, sizeof(path), "%s/test-image-direct-XXXXXX", dirs[i]);
		fd = mkstemp(path);
		if (fd < 0)
			continue;
		close(fd);
		fd = open(path, O_RDWR | O_DIRECT);
		unlink(path);
		if (fd >= 0) {
			if (i)
				printf("O_DIRECT: the working directory refuses it; testing in %s\n",
				       dirs[i]);
			return fd;
		}
		snprintf(why, why_len, "%s refuses O_DIRECT: %s", dirs[i], strerror(errno));
		printf("O_DIRECT: %s\n", why);
	}
	return -1;
}

/*
 * With O_DIRECT every write is aligned (or the kernel says EINVAL): the
 * images, by io_uring and by pwritev, verify (read with O_DIRECT too) and
 * equal a buffered image of the same pages.
 */
START_TEST(test_direct)
{
	struct dirty_tracker *t = tracker_auto();
	struct dirty_image_stats st;
	struct dirty_range runs[8];
	char *mem = map_pages(64), why[256] = "";
	unsigned char *direct, *buffered;
	size_t direct_len, buffered_len;
	int fd = direct_file(why, sizeof(why)), bfd = temp_file();

	if (fd < 0) {
		close(bfd);
		dirty_tracker_free(t);
		munmap(mem, 64 * page_size);
		test_skip("no file system here takes O_DIRECT (%s)", why);
	}
	ck_assert_int_eq(dirty_track(t, mem, 64 * page_size), 0);
	for (int pass = 0; pass < 3; pass++) {
		static const unsigned flags[] = {
			DIRTY_IMAGE_CLEAN | DIRTY_IMAGE_DIRECT,
			DIRTY_IMAGE_CLEAN | DIRTY_IMAGE_DIRECT | DIRTY_IMAGE_PWRITEV,
			DIRTY_IMAGE_DIRECT, /* staged copies */
		};

		for (size_t i = 0; i < 64; i += 2)
			write_page(mem, i, 1);
		ck_assert_int_eq(image_of(t, mem, 64, flags[pass], fd, &st), 0);
		ck_assert_uint_eq(st.pages, 32);
		if (pass == 2)
			ck_assert_int_eq(dirty_clean(t, mem, 64 * page_size), 0);
	}
	for (size_t i = 0; i < 64; i += 2)
		write_page(mem, i, 1);
	ck_assert_int_eq(image_of(t, mem, 64, DIRTY_IMAGE_CLEAN, bfd, &st), 0);

	ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(dirty_image_verify(fd, NULL), 0);
	ck_assert_int_eq(dirty_image_verify(fd, NULL), -ENODATA);
	{
		char path[64];
		int rfd;

		/* a new open of the same file, without O_DIRECT, for plain reads */
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		rfd = open(path, O_RDONLY);
		ck_assert_int_ge(rfd, 0);
		direct = read_all(rfd, &direct_len);
		close(rfd);
	}
	buffered = read_all(bfd, &buffered_len);
	ck_assert_uint_eq(direct_len, 3 * buffered_len);
	view_image(buffered, buffered_len);
	zero_variable(direct, direct_len);
	zero_variable(buffered, buffered_len);
	for (int i = 0; i < 3; i++)
		ck_assert_msg(!memcmp(direct + i * buffered_len, buffered, buffered_len),
			      "O_DIRECT image %d differs from the buffered one", i);

	/* an offset that is not aligned: refused, nothing changed */
	write_page(mem, 7, 2);
	ck_assert_int_eq(lseek(fd, 512, SEEK_SET), 512);
	ck_assert_int_eq(image_of(t, mem, 64, DIRTY_IMAGE_CLEAN | DIRTY_IMAGE_DIRECT, fd, &st),
			 -EINVAL);
	ck_assert_int_eq(lseek(fd, 0, SEEK_CUR), 512);
	ck_assert_uint_eq(collect_n(t, mem, 64 * page_size, 0, runs, 8), 1);
	assert_run(&runs[0], mem, 7, 1);
	free(direct);
	free(buffered);
	close(fd);
	close(bfd);
	dirty_tracker_free(t);
	munmap(mem, 64 * page_size);
}
END_TEST

/* ---- failures ---- */

/*
 * A write that fails, with DIRTY_IMAGE_CLEAN: the error is returned and the
 * pages collected are dirty again, for both engines: a descriptor open
 * read-only (EBADF), a pipe with no reader (EPIPE), and a file size limit
 * met in the middle of the data (EFBIG, after short writes).
 */
START_TEST(test_write_failure)
{
	struct dirty_tracker *t = tracker_auto();
	struct dirty_range runs[8];
	char *mem = map_pages(16);
	char path[] = "test-image-ro-XXXXXX";
	int rw = mkstemp(path), ro = open(path, O_RDONLY), fds[2];
	struct rlimit old;

	ck_assert_int_ge(rw, 0);
	ck_assert_int_ge(ro, 0);
	unlink(path);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGXFSZ, SIG_IGN);
	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
	ck_assert_int_eq(dirty_track(t, mem, 16 * page_size), 0);
	for (int engine = 0; engine < 2; engine++) {
		unsigned flags = DIRTY_IMAGE_CLEAN | (engine ? DIRTY_IMAGE_PWRITEV : 0);
		struct dirty_image_stats st = { .sz = sizeof(st), .runs = 0xdead }, before = st;
		struct rlimit lim = old;
		int fds_before;

		write_pages(mem, (const size_t[]){ 2, 5, 6, 12 }, 4, 1);
		fds_before = fd_count();

		ck_assert_int_eq(image_of_keep(t, mem, 16, flags, ro, &st), -EBADF);
		ck_assert_mem_eq(&st, &before, sizeof(st));
		ck_assert_uint_eq(collect_n(t, mem, 16 * page_size, 0, runs, 8), 3);
		assert_run(&runs[0], mem, 2, 1);
		assert_run(&runs[1], mem, 5, 2);
		assert_run(&runs[2], mem, 12, 1);

		ck_assert_int_eq(pipe(fds), 0);
		close(fds[0]);
		ck_assert_int_eq(image_of_keep(t, mem, 16, flags, fds[1], &st), -EPIPE);
		close(fds[1]);
		ck_assert_uint_eq(collect_n(t, mem, 16 * page_size, 0, runs, 8), 3);

		/* the header, the tables and two and a half pages fit */
		ck_assert_int_eq(ftruncate(rw, 0), 0);
		ck_assert_int_eq(lseek(rw, 0, SEEK_SET), 0);
		lim.rlim_cur = 3 * ALIGN + 2 * page_size + page_size / 2;
		ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
		ck_assert_int_eq(image_of_keep(t, mem, 16, flags, rw, &st), -EFBIG);
		ck_assert_mem_eq(&st, &before, sizeof(st));
		ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
		ck_assert_uint_eq(collect_n(t, mem, 16 * page_size, 0, runs, 8), 3);
		/* what was written is not an image: its trailer is missing */
		ck_assert_int_eq(lseek(rw, 0, SEEK_CUR), 0);
		ck_assert_int_eq(dirty_image_verify(rw, NULL), -ENODATA);

		ck_assert_int_eq(fd_count(), fds_before);
		/* and a write that works gets all of them */
		ck_assert_int_eq(lseek(rw, 0, SEEK_SET), 0);
		st = (struct dirty_image_stats){ .sz = sizeof(st) };
		ck_assert_int_eq(image_of(t, mem, 16, flags, rw, &st), 0);
		ck_assert_uint_eq(st.runs, 3);
		ck_assert_uint_eq(st.pages, 4);
		ck_assert_uint_eq(collect_n(t, mem, 16 * page_size, 0, runs, 8), 0);
	}
	close(ro);
	close(rw);
	dirty_tracker_free(t);
	munmap(mem, 16 * page_size);
}
END_TEST

/* Memory unmapped behind the tracker's back: an error, not a crash, and the rest redirtied. */
START_TEST(test_memory_gone)
{
	struct dirty_tracker *t = tracker_auto();
	struct dirty_image_stats st;
	char *mem = map_pages(16);
	int fd = temp_file();

	ck_assert_int_eq(dirty_track(t, mem, 16 * page_size), 0);
	write_pages(mem, (const size_t[]){ 1, 2 }, 2, 1);
	munmap(mem, 16 * page_size);
	ck_assert_int_eq(image_of(t, mem, 16, DIRTY_IMAGE_CLEAN, fd, &st), -ESTALE);
	ck_assert_int_eq(lseek(fd, 0, SEEK_END), 0);
	ck_assert_int_eq(dirty_untrack(t, mem, 16 * page_size), 0);
	close(fd);
	dirty_tracker_free(t);
}
END_TEST

/* Bad arguments: -EINVAL (or -EBADF, -ENOENT), and nothing changed: no byte, no clean. */
START_TEST(test_bad_arguments)
{
	struct dirty_tracker *t = tracker_auto();
	struct dirty_image_stats st = { .sz = sizeof(st), .runs = 77 }, before = st;
	struct dirty_range runs[8], r;
	char *mem = map_pages(16), *other = map_pages(4);
	struct {
		struct dirty_image_options o;
		char extra[8];
	} big;
	struct dirty_image_options o;
	int fd = temp_file(), fds[2];

	ck_assert_int_eq(dirty_track(t, mem, 16 * page_size), 0);
	write_pages(mem, (const size_t[]){ 3 }, 1, 1);
	r = (struct dirty_range){ mem, 16 * page_size };
	o = options(DIRTY_IMAGE_CLEAN, 0);

	ck_assert_int_eq(dirty_image_write(NULL, &r, NULL, 1, &o, fd, &st), -EINVAL);
	ck_assert_int_eq(dirty_image_write(t, NULL, NULL, 1, &o, fd, &st), -EINVAL);
	o.sz = offsetof(struct dirty_image_options, queue_depth);
	ck_assert_int_eq(dirty_image_write(t, &r, NULL, 1, &o, fd, &st), -EINVAL);
	o = options(DIRTY_IMAGE_CLEAN | 0x100, 0);
	ck_assert_int_eq(dirty_image_write(t, &r, NULL, 1, &o, fd, &st), -EINVAL);
	o = options(DIRTY_IMAGE_CLEAN, 0);
	o.queue_depth = 100000;
	ck_assert_int_eq(dirty_image_write(t, &r, NULL, 1, &o, fd, &st), -EINVAL);
	/* a newer caller's larger struct: its extra bytes must be zero */
	memset(&big, 0, sizeof(big));
	big.o = options(DIRTY_IMAGE_CLEAN, 0);
	big.o.sz = sizeof(big);
	big.extra[3] = 1;
	ck_assert_int_eq(dirty_image_write(t, &r, NULL, 1, &big.o, fd, &st), -EINVAL);
	o = options(DIRTY_IMAGE_CLEAN, 0);
	ck_assert_int_eq(dirty_image_write(t, &r, NULL, 1, &o, -1, &st), -EBADF);
	ck_assert_int_eq(dirty_image_write(t, &r, NULL, 1, &o, 100000, &st), -EBADF);
	st.sz = 4;
	ck_assert_int_eq(dirty_image_write(t, &r, NULL, 1, &o, fd, &st), -EINVAL);
	st.sz = sizeof(st);
	/* not tracked, partly tracked, unaligned, overlapping */
	r = (struct dirty_range){ other, 4 * page_size };
	ck_assert_int_eq(dirty_image_write(t, &r, NULL, 1, &o, fd, &st), -ENOENT);
	{
		struct dirty_range two[2] = { { mem, 4 * page_size }, { other, 4 * page_size } };

		ck_assert_int_eq(dirty_image_write(t, two, NULL, 2, &o, fd, &st), -ENOENT);
		two[1] = (struct dirty_range){ mem + 2 * page_size, 4 * page_size };
		ck_assert_int_eq(dirty_image_write(t, two, NULL, 2, &o, fd, &st), -EINVAL);
	}
	r = (struct dirty_range){ mem + 1, page_size };
	ck_assert_int_eq(dirty_image_write(t, &r, NULL, 1, &o, fd, &st), -EINVAL);
	r = (struct dirty_range){ mem, 0 };
	ck_assert_int_eq(dirty_image_write(t, &r, NULL, 1, &o, fd, &st), -EINVAL);
	/* O_DIRECT needs positioned writes */
	ck_assert_int_eq(pipe(fds), 0);
	r = (struct dirty_range){ mem, 16 * page_size };
	o = options(DIRTY_IMAGE_CLEAN | DIRTY_IMAGE_DIRECT, 0);
	ck_assert_int_eq(dirty_image_write(t, &r, NULL, 1, &o, fds[1], &st), -EINVAL);
	close(fds[0]);
	close(fds[1]);

	ck_assert_mem_eq(&st, &before, sizeof(st));
	ck_assert_int_eq(lseek(fd, 0, SEEK_END), 0);
	ck_assert_uint_eq(collect_n(t, mem, 16 * page_size, 0, runs, 8), 1);
	assert_run(&runs[0], mem, 3, 1);

	/* the defaults (opts NULL, ret NULL) and no regions at all are fine */
	ck_assert_int_eq(dirty_image_write(t, &r, NULL, 1, NULL, fd, NULL), 0);
	ck_assert_int_eq(dirty_image_write(t, NULL, NULL, 0, NULL, fd, NULL), 0);
	ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
	ck_assert_int_eq(dirty_image_verify(fd, NULL), 0);
	ck_assert_int_eq(dirty_image_verify(fd, NULL), 0);
	close(fd);
	dirty_tracker_free(t);
	munmap(mem, 16 * page_size);
	munmap(other, 4 * page_size);
}
END_TEST

#if HAVE_LIBURING
static void note_refusal(int priority, const char *msg, void *userdata)
{
	(void)priority;
	if (strstr(msg, "io_uring refused"))
		*(bool *)userdata = true;
}

/* In a child: io_uring_setup is refused by seccomp; the image is written with pwritev. */
static int refused_child(void)
{
	struct sock_filter filter[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_AUDIT_ARCH, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(filter) / sizeof(filter[0]), .filter = filter };
	bool logged = false;
	struct dirty_options to = { .sz = sizeof(to), .log = note_refusal, .log_userdata = &logged };
	struct dirty_image_options o = options(DIRTY_IMAGE_CLEAN, 0);
	struct dirty_image_stats st = { .sz = sizeof(st) };
	struct dirty_tracker *t;
	struct dirty_range r;
	char *mem;
	int fd;

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
		return 10;
	if (syscall(__NR_io_uring_setup, 4, &(struct io_uring_params){ 0 }) != -1 || errno != EPERM)
		return 11;
	mem = mmap(NULL, 8 * page_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED || dirty_tracker_new(&to, &t) || dirty_track(t, mem, 8 * page_size))
		return 12;
	mem[3 * page_size] = 1;
	r = (struct dirty_range){ mem, 8 * page_size };
	fd = open(".", O_TMPFILE | O_RDWR, 0600);
	if (fd < 0)
		return 13;
	if (dirty_image_write(t, &r, NULL, 1, &o, fd, &st) || st.pages != 1)
		return 14;
	if (strcmp(st.method, "pwritev (io_uring refused: EPERM, kernel.io_uring_disabled or seccomp)"))
		return 15;
	if (!logged)
		return 16;
	if (lseek(fd, 0, SEEK_SET) || dirty_image_verify(fd, NULL))
		return 17;
	return 0;
}

START_TEST(test_uring_refused)
{
	int status;
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(refused_child());
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d",
		      WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}
END_TEST
#else
START_TEST(test_uring_refused)
{
	test_skip("built without liburing: no io_uring to refuse");
}
END_TEST
#endif

/* ---- dirty_image_read(): the tables, then the pages, in one pass ---- */

struct read_log {
	unsigned tables_calls;
	struct dirty_image_header h;
	struct dirty_image_run runs[8];
	uint64_t nruns;
	unsigned char *pages; /* what was handed over, in order */
	size_t len, cap;
	uint64_t next_address; /* the next piece continues a run, or starts the next */
	size_t run;
	int stop_tables, stop_pages;
};

static int log_tables(const struct dirty_image_header *h, const struct dirty_image_region *regions,
		      const struct dirty_image_run *runs, void *userdata)
{
	struct read_log *l = userdata;

	/* never NULL, even for empty tables (tools memcpy them) */
	ck_assert_ptr_nonnull(regions);
	ck_assert_ptr_nonnull(runs);
	ck_assert_uint_le(h->nruns, 8);
	l->tables_calls++;
	l->h = *h;
	l->nruns = h->nruns;
	memcpy(l->runs, runs, h->nruns * sizeof(*runs));
	l->next_address = h->nruns ? runs[0].start : 0;
	return l->stop_tables;
}

static int log_pages(uint64_t address, const void *data, size_t len, void *userdata)
{
	struct read_log *l = userdata;
	const struct dirty_image_run *r = &l->runs[l->run];

	ck_assert_uint_eq(len % ALIGN, 0);
	ck_assert_uint_gt(len, 0);
	if (address != l->next_address) { /* the next run */
		ck_assert_uint_eq(l->next_address, r->start + r->npages * page_size);
		r = &l->runs[++l->run];
		ck_assert_uint_lt(l->run, l->nruns);
		ck_assert_uint_eq(address, r->start);
	}
	ck_assert_uint_le(address + len, r->start + r->npages * page_size);
	l->next_address = address + len;
	ck_assert_uint_le(l->len + len, l->cap);
	memcpy(l->pages + l->len, data, len);
	l->len += len;
	return l->stop_pages;
}

START_TEST(test_read)
{
	size_t len;
	unsigned char *good = sample_image(&len), *bad = malloc(len);
	struct view v = view_image(good, len);
	struct read_log l = { 0 };
	struct dirty_image_reader reader = { .sz = sizeof(reader), .tables = log_tables,
					     .pages = log_pages, .userdata = &l };
	struct dirty_image_header h;
	unsigned char bigger[sizeof(reader) + 8] = { 0 };
	int fd;

	l.cap = len;
	l.pages = malloc(len);
	fd = file_with(good, len);
	ck_assert_int_eq(dirty_image_read(fd, &reader, &h), 0);
	ck_assert_uint_eq(l.tables_calls, 1);
	ck_assert_mem_eq(&l.h, &h, sizeof(h));
	ck_assert_uint_eq(l.nruns, 3);
	ck_assert_mem_eq(l.runs, v.runs, 3 * sizeof(*v.runs));
	/* every page, in run order: the data section as it is */
	ck_assert_uint_eq(l.run, 2);
	ck_assert_uint_eq(l.len, v.h->npages * page_size);
	ck_assert_mem_eq(l.pages, v.data, l.len);
	ck_assert_int_eq(lseek(fd, 0, SEEK_CUR), (off_t)v.size);

	/* a callback's answer stops the read and is returned */
	free(l.pages);
	memset(&l, 0, sizeof(l));
	l.cap = len;
	l.pages = malloc(len);
	l.stop_tables = -ECANCELED;
	ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
	ck_assert_int_eq(dirty_image_read(fd, &reader, NULL), -ECANCELED);
	ck_assert_uint_eq(l.len, 0);
	l.stop_tables = 0;
	l.stop_pages = 7;
	ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
	ck_assert_int_eq(dirty_image_read(fd, &reader, NULL), 7);
	ck_assert_uint_eq(l.len, page_size); /* the first piece only: one page */
	close(fd);

	/* pages whose checksum fails were handed over, and the read fails */
	memcpy(bad, good, len);
	bad[v.h->data_offset + page_size + 5] ^= 1;
	free(l.pages);
	memset(&l, 0, sizeof(l));
	l.cap = len;
	l.pages = malloc(len);
	fd = file_with(bad, len);
	memset(&h, 0x5a, sizeof(h));
	ck_assert_int_eq(dirty_image_read(fd, &reader, &h), -EBADMSG);
	ck_assert_uint_eq(l.len, v.h->npages * page_size);
	ck_assert_uint_eq(h.magic[0], 0x5a); /* untouched */
	/* a corrupt table: no callback at all */
	memcpy(bad, good, len);
	((struct dirty_image_run *)(bad + v.h->runs_offset))[1].start += page_size / 2;
	fix_trailer_crc(bad, len);
	close(fd);
	free(l.pages);
	memset(&l, 0, sizeof(l));
	fd = file_with(bad, len);
	ck_assert_int_eq(dirty_image_read(fd, &reader, NULL), -EBADMSG);
	ck_assert_uint_eq(l.tables_calls, 0);
	close(fd);

	/* the size field: too small, or larger with non-zero extra bytes */
	fd = file_with(good, len);
	reader.sz = sizeof(reader) - 1;
	ck_assert_int_eq(dirty_image_read(fd, &reader, NULL), -EINVAL);
	memcpy(bigger, &reader, sizeof(reader));
	((struct dirty_image_reader *)bigger)->sz = sizeof(bigger);
	memset(&l, 0, sizeof(l));
	l.cap = len;
	l.pages = malloc(len);
	((struct dirty_image_reader *)bigger)->userdata = &l;
	ck_assert_int_eq(dirty_image_read(fd, (void *)bigger, NULL), 0);
	bigger[sizeof(reader) + 3] = 1;
	ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
	ck_assert_int_eq(dirty_image_read(fd, (void *)bigger, NULL), -EINVAL);
	/* no reader: verify */
	ck_assert_int_eq(dirty_image_read(fd, NULL, &h), 0);
	close(fd);
	/* an image of no region at all (what dump writes when no region is new) */
	{
		struct dirty_tracker *t = tracker_auto();
		const struct dirty_range none = { 0 };
		struct dirty_image_options o = options(DIRTY_IMAGE_ALL, 3);

		fd = temp_file();
		ck_assert_int_eq(dirty_image_write(t, &none, NULL, 0, &o, fd, NULL), 0);
		ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
		free(l.pages);
		memset(&l, 0, sizeof(l));
		l.cap = len;
		l.pages = malloc(len);
		((struct dirty_image_reader *)bigger)->userdata = &l;
		bigger[sizeof(reader) + 3] = 0;
		ck_assert_int_eq(dirty_image_read(fd, (void *)bigger, &h), 0);
		ck_assert_uint_eq(l.tables_calls, 1);
		ck_assert_uint_eq(h.nregions, 0);
		ck_assert_uint_eq(l.len, 0);
		dirty_tracker_free(t);
	}
	ck_assert_int_eq(dirty_image_read(-1, NULL, NULL), -EBADF);
	close(fd);
	free(l.pages);
	free(bad);
	free(good);
}
END_TEST

static Suite *image_suite(void)
{
	Suite *s = suite_create("image");
	TCase *tc = tcase_create("write");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_self_image);
	tcase_add_test(tc, test_regions_sorted_and_named);
	tcase_add_test(tc, test_uring_equals_pwritev);
	tcase_add_test(tc, test_all);
	tcase_add_test(tc, test_new_program);
	tcase_add_test(tc, test_chain);
	tcase_add_test(tc, test_written_during_write);
	tcase_add_test(tc, test_stream);
	tcase_add_test(tc, test_append);
	tcase_add_test(tc, test_other_process);
	tcase_add_test(tc, test_direct);
	tcase_add_test(tc, test_write_failure);
	tcase_add_test(tc, test_memory_gone);
	tcase_add_test(tc, test_bad_arguments);
	tcase_add_test(tc, test_uring_refused);
	suite_add_tcase(s, tc);

	tc = tcase_create("verify");
	tcase_add_test(tc, test_corrupt);
	tcase_add_test(tc, test_verify_bad_fd);
	tcase_add_test(tc, test_verify_huge_claim);
	tcase_add_test(tc, test_read);
	suite_add_tcase(s, tc);
	return s;
}

/* The backend an automatic tracker picks here, for the log. */
static const char *auto_backend(void)
{
	static char name[32];
	struct dirty_tracker *t = NULL;

	snprintf(name, sizeof(name), "%s",
		 dirty_tracker_new(NULL, &t) ? "none" : dirty_tracker_backend(t));
	dirty_tracker_free(t);
	return name;
}

int main(void)
{
	tap_begin();
	page_size = (size_t)sysconf(_SC_PAGESIZE);
	/* the reference that every image is checked against is CRC-32C itself */
	if (ref_crc32c(0, "123456789", 9) != 0xE3069283u ||
	    ref_crc32c(ref_crc32c(0, "1234", 4), "56789", 5) != 0xE3069283u) {
		fprintf(stderr, "test-image: ref_crc32c() is not CRC-32C\n");
		return EXIT_FAILURE;
	}
	printf("tracker backend: %s; io_uring: %s\n", auto_backend(),
	       HAVE_LIBURING ? (uring_usable() ? "usable" : "refused by the kernel") : "not built");
	return tap_run(srunner_create(image_suite()));
}
