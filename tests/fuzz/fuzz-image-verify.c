/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer: dirty_image_verify() and dirty_image_read() (libdirty/image.c)
 * on arbitrary bytes, read from a memfd as a file of images one after the
 * other.  Whatever the input: no crash, no leak (ASan), no undefined
 * behaviour (UBSan), both calls give the same answer, and what the reader
 * hands over is consistent with the tables it was given.
 *
 * A mutation almost always breaks a checksum, and then nothing past the
 * checksum is reached.  So each input is tried three ways: as it is; with
 * its checksums made right (the header's, then the trailer's where the
 * header says the trailer is); and as the counts of a header laid out
 * soundly (its first 32 bytes: flags, regions, runs, pages) followed by the
 * rest as its tables and data, checksums made right, so that the fuzzer
 * reaches the checks of the tables and the data, and tries huge claims on
 * small files.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "libdirty-int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct seen {
	struct dirty_image_header h;
	const struct dirty_image_run *runs; /* valid during tables() and pages() */
	uint64_t run, done;                 /* the run under way, its bytes handed over */
	uint64_t pages_bytes, tables_calls;
};

static int on_tables(const struct dirty_image_header *h, const struct dirty_image_region *regions,
		     const struct dirty_image_run *runs, void *userdata)
{
	struct seen *s = userdata;

	(void)regions;
	s->tables_calls++;
	s->h = *h;
	s->runs = runs;
	return 0;
}

/* Pieces come in run order, each inside its run, each run whole. */
static int on_pages(uint64_t address, const void *data, size_t len, void *userdata)
{
	struct seen *s = userdata;
	const struct dirty_image_run *r;

	if (!s->tables_calls || !len || len % 4096 || !data || s->run >= s->h.nruns)
		abort();
	r = &s->runs[s->run];
	if (address != r->start + s->done || len > r->npages * s->h.page_size - s->done)
		abort();
	s->done += len;
	if (s->done == r->npages * s->h.page_size) {
		s->run++;
		s->done = 0;
	}
	s->pages_bytes += len;
	return 0;
}

/* Make the checksums of the images in buf right, as far as their headers allow. */
static void repair(uint8_t *buf, size_t size)
{
	size_t at = 0;

	while (size - at >= DIRTY_IMAGE_ALIGN) {
		struct dirty_image_header h;
		uint8_t block[DIRTY_IMAGE_ALIGN];
		uint32_t crc;

		memcpy(&h, buf + at, sizeof(h));
		if (h.header_size < sizeof(h) || h.header_size > DIRTY_IMAGE_ALIGN)
			return;
		memcpy(block, buf + at, h.header_size);
		memset(block + offsetof(struct dirty_image_header, crc), 0, sizeof(h.crc));
		crc = dirty_crc32c(0, block, h.header_size);
		memcpy(buf + at + offsetof(struct dirty_image_header, crc), &crc, sizeof(crc));
		if (h.trailer_offset < DIRTY_IMAGE_ALIGN ||
		    h.trailer_offset > size - at - sizeof(struct dirty_image_trailer))
			return;
		crc = dirty_crc32c(0, buf + at, h.trailer_offset);
		memcpy(buf + at + h.trailer_offset + offsetof(struct dirty_image_trailer, crc), &crc,
		       sizeof(crc));
		if (h.trailer_offset > size - at - DIRTY_IMAGE_ALIGN)
			return;
		at += h.trailer_offset + DIRTY_IMAGE_ALIGN;
	}
}

/* The file of images in data, checked both ways, image by image. */
static void check_file(int fd, const uint8_t *data, size_t size)
{
	struct dirty_image_header h, h2;
	struct seen seen;
	struct dirty_image_reader reader = { .sz = sizeof(reader), .tables = on_tables,
					     .pages = on_pages, .userdata = &seen };

	if (ftruncate(fd, 0) || pwrite(fd, data, size, 0) != (ssize_t)size)
		abort();
	for (off_t at = 0; at < (off_t)size;) {
		int a, b;

		if (lseek(fd, at, SEEK_SET) != at)
			abort();
		a = dirty_image_verify(fd, &h);
		if (lseek(fd, at, SEEK_SET) != at)
			abort();
		memset(&seen, 0, sizeof(seen));
		b = dirty_image_read(fd, &reader, &h2);
		if (a != b)
			abort(); /* the two must agree */
		if (a)
			break;
		if (memcmp(&h, &h2, sizeof(h)) || seen.tables_calls != 1 || seen.run != h.nruns ||
		    seen.pages_bytes != h.npages * h.page_size ||
		    lseek(fd, 0, SEEK_CUR) != at + (off_t)(h.trailer_offset + DIRTY_IMAGE_ALIGN))
			abort();
		at += (off_t)(h.trailer_offset + DIRTY_IMAGE_ALIGN);
	}
}

/* Input as counts, laid out by the writer's own rules; the rest follows the header. */
static size_t laid_out(const uint8_t *data, size_t size, uint8_t **ret)
{
	struct dirty_image_header h;
	uint64_t counts[3];
	uint32_t flags;
	size_t len;
	uint8_t *buf;

	if (size < 4 + sizeof(counts))
		return 0;
	memcpy(&flags, data, 4);
	memcpy(counts, data + 4, sizeof(counts));
	if (dirty_image_layout(&h, 4096, counts[0], counts[1], counts[2]))
		return 0;
	h.flags = flags & DIRTY_IMAGE_BASE;
	data += 4 + sizeof(counts);
	size -= 4 + sizeof(counts);
	/* the file holds what the input has, up to the image's size */
	len = DIRTY_IMAGE_ALIGN + size;
	if (len > h.trailer_offset + DIRTY_IMAGE_ALIGN)
		len = (size_t)(h.trailer_offset + DIRTY_IMAGE_ALIGN);
	buf = calloc(1, len);
	if (!buf)
		abort();
	memcpy(buf, &h, sizeof(h));
	memcpy(buf + DIRTY_IMAGE_ALIGN, data, len - DIRTY_IMAGE_ALIGN);
	if (len == h.trailer_offset + DIRTY_IMAGE_ALIGN) {
		struct dirty_image_trailer t = { .magic = DIRTY_IMAGE_TRAILER_MAGIC,
						 .total_size = len };

		memset(buf + h.trailer_offset, 0, DIRTY_IMAGE_ALIGN);
		memcpy(buf + h.trailer_offset, &t, sizeof(t));
	}
	*ret = buf;
	return len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int fd = -1;
	uint8_t *copy;
	size_t len;

	if (fd < 0)
		fd = memfd_create("fuzz-image", MFD_CLOEXEC);
	if (fd < 0)
		abort();
	check_file(fd, data, size);
	copy = malloc(size ? size : 1);
	if (!copy)
		abort();
	memcpy(copy, data, size);
	repair(copy, size);
	check_file(fd, copy, size);
	free(copy);
	len = laid_out(data, size, &copy);
	if (len) {
		repair(copy, len);
		check_file(fd, copy, len);
		free(copy);
	}
	return 0;
}
