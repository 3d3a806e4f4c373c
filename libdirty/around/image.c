/* SPDX-License-Identifier: MIT */
/*
 * The image format (include/libdirty.h): its layout, CRC-32C, and
 * dirty_image_verify().  The writer is writer.c.
 *
 * The structs are written and read as they are in memory: the format is
 * little-endian with natural alignment and no implicit padding, which is
 * what x86-64 (and every little-endian LP64 ABI) lays out.  The asserts
 * below hold the layout to that; a big-endian port would need byte swaps
 * here and in writer.c.
 *
 * dirty_image_verify() reads sequentially with read(2) and never seeks, so
 * an image can be checked as it arrives on a pipe or socket, and a file of
 * images one after the other is checked one image per call.  Every read is
 * of whole 4096-byte blocks into 4096-aligned memory, so a descriptor opened
 * with O_DIRECT works too.
 */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "libdirty-int.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the image format is little-endian and image.c writes its structs as they are"
#endif

static_assert(sizeof(struct dirty_image_header) == 112, "header layout");
static_assert(offsetof(struct dirty_image_header, version) == 8, "header layout");
static_assert(offsetof(struct dirty_image_header, sequence) == 24, "header layout");
static_assert(offsetof(struct dirty_image_header, nregions) == 48, "header layout");
static_assert(offsetof(struct dirty_image_header, regions_offset) == 72, "header layout");
static_assert(offsetof(struct dirty_image_header, trailer_offset) == 96, "header layout");
static_assert(offsetof(struct dirty_image_header, crc) == 104, "header layout");
static_assert(sizeof(struct dirty_image_region) == 128, "region layout");
static_assert(offsetof(struct dirty_image_region, name) == 16, "region layout");
static_assert(sizeof(struct dirty_image_run) == 16, "run layout");
static_assert(sizeof(struct dirty_image_trailer) == 24, "trailer layout");
static_assert(offsetof(struct dirty_image_trailer, crc) == 16, "trailer layout");
static_assert(sizeof(DIRTY_IMAGE_MAGIC) - 1 == 8 && sizeof(DIRTY_IMAGE_TRAILER_MAGIC) - 1 == 8,
	      "magic length");
static_assert(sizeof(struct dirty_image_header) <= DIRTY_IMAGE_ALIGN, "header fits its block");

/* ---- CRC-32C (Castagnoli), reflected polynomial 0x82F63B78 ---- */

/*
 * Slicing-by-8: table[k][b] is the CRC of byte b followed by k zero bytes,
 * so that eight bytes are folded per step.  Every data byte of an image
 * goes through here, so the plain one-table loop (about 8x slower) would
 * dominate the cost of writing from page cache.
 */
static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_table_init(void)
{
	for (uint32_t b = 0; b < 256; b++) {
		uint32_t c = b;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		crc_table[0][b] = c;
	}
	for (uint32_t b = 0; b < 256; b++)
		for (int k = 1; k < 8; k++)
			crc_table[k][b] = (crc_table[k - 1][b] >> 8) ^
					  crc_table[0][crc_table[k - 1][b] & 0xff];
}

/*
 * Not instrumented by ThreadSanitizer: the writer checksums tracked memory
 * in place while the program's threads may write to it.  Those reads race
 * by design; writer.c detects the pages that changed (image_raced()) and
 * writes them again from copies.
 */
#if defined(__x86_64__)
/*
 * The SSE4.2 crc32 instruction computes CRC-32C itself: 8 bytes a cycle or
 * so, against about 2 GB/s for the tables, which made the checksum the
 * bottleneck of writing an image.  Chosen at run time (qemu's TCG CPU, for
 * one, has no SSE4.2).
 */
__attribute__((target("sse4.2"), no_sanitize_thread))
static uint32_t crc32c_sse42(uint32_t crc, const unsigned char *p, size_t len)
{
	uint64_t c = ~crc;

	for (; len && ((uintptr_t)p & 7); len--)
		c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
	for (; len >= 8; len -= 8, p += 8) {
		uint64_t w;

		memcpy(&w, p, 8);
		c = __builtin_ia32_crc32di(c, w);
	}
	for (; len; len--)
		c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
	return ~(uint32_t)c;
}
#endif

__attribute__((no_sanitize_thread))
uint32_t dirty_crc32c(uint32_t crc, const void *buf, size_t len)
{
	const unsigned char *p = buf;

#if defined(__x86_64__)
	if (__builtin_cpu_supports("sse4.2"))
		return crc32c_sse42(crc, p, len);
#endif
	pthread_once(&crc_once, crc_table_init);
	crc = ~crc;
	for (; len && ((uintptr_t)p & 7); len--)
		crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
	for (; len >= 8; len -= 8, p += 8) {
		uint64_t w;

		memcpy(&w, p, 8);
		w ^= crc;
		crc = crc_table[7][w & 0xff] ^ crc_table[6][(w >> 8) & 0xff] ^
		      crc_table[5][(w >> 16) & 0xff] ^ crc_table[4][(w >> 24) & 0xff] ^
		      crc_table[3][(w >> 32) & 0xff] ^ crc_table[2][(w >> 40) & 0xff] ^
		      crc_table[1][(w >> 48) & 0xff] ^ crc_table[0][w >> 56];
	}
	for (; len; len--)
		crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
	return ~crc;
}

/* ---- layout ---- */

static bool add_overflows(uint64_t a, uint64_t b, uint64_t *sum)
{
	return __builtin_add_overflow(a, b, sum);
}

/* n bytes rounded up to the alignment, false on overflow. */
static bool align_up(uint64_t n, uint64_t *ret)
{
	if (add_overflows(n, DIRTY_IMAGE_ALIGN - 1, ret))
		return false;
	*ret &= ~(uint64_t)(DIRTY_IMAGE_ALIGN - 1);
	return true;
}

int dirty_image_layout(struct dirty_image_header *h, uint32_t page_size, uint64_t nregions,
		       uint64_t nruns, uint64_t npages)
{
	uint64_t regions_len, runs_len, data_len, runs_offset, data_offset, trailer_offset, end;

	if (__builtin_mul_overflow(nregions, sizeof(struct dirty_image_region), &regions_len) ||
	    __builtin_mul_overflow(nruns, sizeof(struct dirty_image_run), &runs_len) ||
	    __builtin_mul_overflow(npages, (uint64_t)page_size, &data_len) ||
	    !align_up(regions_len, &regions_len) || !align_up(runs_len, &runs_len) ||
	    add_overflows(DIRTY_IMAGE_ALIGN, regions_len, &runs_offset) ||
	    add_overflows(runs_offset, runs_len, &data_offset) ||
	    add_overflows(data_offset, data_len, &trailer_offset) ||
	    add_overflows(trailer_offset, DIRTY_IMAGE_ALIGN, &end) || end > INT64_MAX)
		return -EOVERFLOW;
	memset(h, 0, sizeof(*h));
	memcpy(h->magic, DIRTY_IMAGE_MAGIC, sizeof(h->magic));
	h->version = DIRTY_IMAGE_VERSION;
	h->header_size = sizeof(*h);
	h->page_size = page_size;
	h->nregions = nregions;
	h->nruns = nruns;
	h->npages = npages;
	h->regions_offset = DIRTY_IMAGE_ALIGN;
	h->runs_offset = runs_offset;
	h->data_offset = data_offset;
	h->trailer_offset = trailer_offset;
	return 0;
}

/* The header's first header_size bytes (at least the struct) with crc = 0. */
static uint32_t header_crc(const void *block, uint32_t header_size)
{
	struct dirty_image_header h;
	uint32_t crc;

	memcpy(&h, block, sizeof(h));
	h.crc = 0;
	crc = dirty_crc32c(0, &h, sizeof(h));
	return dirty_crc32c(crc, (const unsigned char *)block + sizeof(h),
			    header_size - sizeof(h));
}

uint32_t dirty_image_header_crc(const struct dirty_image_header *h)
{
	return header_crc(h, sizeof(*h));
}

/* ---- verify ---- */

/* Chunks of data are read and checksummed this many bytes at a time. */
#define VERIFY_CHUNK (256 * 1024)

/* Exactly len bytes, or -ENODATA at end of file, or -errno. */
static int read_full(int fd, void *buf, size_t len)
{
	for (size_t done = 0; done < len;) {
		ssize_t n = read(fd, (char *)buf + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ENODATA;
		done += (size_t)n;
	}
	return 0;
}

/*
 * A table of len bytes (a multiple of the alignment) into a new aligned
 * buffer, which grows as the bytes arrive: an image that claims a table of
 * terabytes costs the memory of what it holds, and is truncated (-ENODATA)
 * when it holds less, rather than a huge allocation up front.
 */
#define TABLE_CHUNK ((size_t)1 << 20)

static int read_table(int fd, uint64_t len, void **ret)
{
	unsigned char *buf = NULL, *grown;
	size_t have = 0, cap = 0;

	while (have < len) {
		size_t want = len - have < TABLE_CHUNK ? (size_t)(len - have) : TABLE_CHUNK;
		int err;

		if (want > cap - have) {
			/* doubling: at most twice what arrived, plus a chunk */
			size_t next = cap ? 2 * cap : TABLE_CHUNK;

			if (next < have + want)
				next = have + want;
			if (next > len)
				next = (size_t)len;
			grown = aligned_alloc(DIRTY_IMAGE_ALIGN, next);
			if (!grown) {
				free(buf);
				return -ENOMEM;
			}
			if (have)
				memcpy(grown, buf, have);
			free(buf);
			buf = grown;
			cap = next;
		}
		err = read_full(fd, buf + have, want);
		if (err) {
			free(buf);
			return err;
		}
		have += want;
	}
	*ret = buf;
	return 0;
}

/* Read len bytes (a multiple of the alignment) into the CRC, through buf. */
static int read_crc(int fd, void *buf, size_t buf_len, uint64_t len, uint32_t *crc)
{
	while (len) {
		size_t n = len < buf_len ? (size_t)len : buf_len;
		int err = read_full(fd, buf, n);

		if (err)
			return err;
		*crc = dirty_crc32c(*crc, buf, n);
		len -= n;
	}
	return 0;
}

/* The header fields that the counts and the layout fix. */
static int header_check(const struct dirty_image_header *h)
{
	struct dirty_image_header want;

	if (h->page_size < DIRTY_IMAGE_ALIGN || (h->page_size & (h->page_size - 1)))
		return -EBADMSG;
	if (h->flags & ~(DIRTY_IMAGE_BASE | DIRTY_IMAGE_NEW_PROGRAM))
		return -EBADMSG;
	/* a new program's memory starts with all of it */
	if ((h->flags & DIRTY_IMAGE_NEW_PROGRAM) && !(h->flags & DIRTY_IMAGE_BASE))
		return -EBADMSG;
	/* each run is at least a page: this bounds what is read below */
	if (h->nruns > h->npages)
		return -EBADMSG;
	if (dirty_image_layout(&want, h->page_size, h->nregions, h->nruns, h->npages))
		return -EBADMSG;
	if (h->regions_offset != want.regions_offset || h->runs_offset != want.runs_offset ||
	    h->data_offset != want.data_offset || h->trailer_offset != want.trailer_offset)
		return -EBADMSG;
	return 0;
}

/* Regions in address order, page aligned, not overlapping, names NUL-terminated. */
static int regions_check(const struct dirty_image_header *h,
			 const struct dirty_image_region *regions, uint64_t *ret_pages)
{
	uint64_t mask = h->page_size - 1, prev_end = 0, pages = 0;

	for (uint64_t i = 0; i < h->nregions; i++) {
		const struct dirty_image_region *r = &regions[i];

		if (r->start >= r->end || (r->start & mask) || (r->end & mask) ||
		    r->start < prev_end || r->name[sizeof(r->name) - 1])
			return -EBADMSG;
		prev_end = r->end;
		pages += (r->end - r->start) / h->page_size;
	}
	*ret_pages = pages;
	return 0;
}

/* Runs in address order, not overlapping, each inside one region; pages add up. */
static int runs_check(const struct dirty_image_header *h, const struct dirty_image_region *regions,
		      const struct dirty_image_run *runs)
{
	uint64_t mask = h->page_size - 1, prev_end = 0, pages = 0, r = 0;

	for (uint64_t i = 0; i < h->nruns; i++) {
		uint64_t start = runs[i].start, len, end;

		if (!runs[i].npages || (start & mask) || start < prev_end ||
		    __builtin_mul_overflow(runs[i].npages, (uint64_t)h->page_size, &len) ||
		    add_overflows(start, len, &end))
			return -EBADMSG;
		while (r < h->nregions && regions[r].end <= start)
			r++;
		if (r == h->nregions || start < regions[r].start || end > regions[r].end)
			return -EBADMSG;
		if (add_overflows(pages, runs[i].npages, &pages))
			return -EBADMSG;
		prev_end = end;
	}
	return pages == h->npages ? 0 : -EBADMSG;
}

/* A reader's field, NULL without a reader. */
#define READER_GET(r, field) ((r) ? (r)->field : NULL)

/*
 * The data section, run by run, through buf: into the CRC, and to the
 * reader's pages() in pieces of at most buf_len bytes.
 */
static int read_data(int fd, const struct dirty_image_header *h, const struct dirty_image_run *runs,
		     const struct dirty_image_reader *reader, unsigned char *buf, size_t buf_len,
		     uint32_t *crc)
{
	int (*pages)(uint64_t, const void *, size_t, void *) = READER_GET(reader, pages);
	void *userdata = READER_GET(reader, userdata);

	if (!pages) /* no one to hand pages to: as fast as the buffer allows */
		return read_crc(fd, buf, buf_len, h->trailer_offset - h->data_offset, crc);
	for (uint64_t i = 0; i < h->nruns; i++) {
		/* runs_check() bounded these: npages * page_size fits, and the sum is npages */
		uint64_t address = runs[i].start, left = runs[i].npages * h->page_size;

		while (left) {
			size_t n = left < buf_len ? (size_t)left : buf_len;
			int err = read_full(fd, buf, n);

			if (err)
				return err;
			*crc = dirty_crc32c(*crc, buf, n);
			err = pages(address, buf, n, userdata);
			if (err)
				return err;
			address += n;
			left -= n;
		}
	}
	return 0;
}

DIRTY_EXPORT int dirty_image_read(int fd, const struct dirty_image_reader *reader,
				  struct dirty_image_header *ret)
{
	int (*tables)(const struct dirty_image_header *, const struct dirty_image_region *,
		      const struct dirty_image_run *, void *) = READER_GET(reader, tables);
	struct dirty_image_header h;
	struct dirty_image_trailer trailer;
	struct dirty_image_region *regions = NULL;
	struct dirty_image_run *runs = NULL;
	unsigned char *block, *buf = NULL;
	uint64_t regions_len, runs_len, region_pages;
	uint32_t crc;
	int err;

	if (fd < 0)
		return -EBADF;
	if (reader) {
		/* a newer caller's extra fields must be zero: we would ignore them */
		const unsigned char *p = (const unsigned char *)reader;

		if (reader->sz < sizeof(*reader))
			return -EINVAL;
		for (size_t i = sizeof(*reader); i < reader->sz; i++)
			if (p[i])
				return -EINVAL;
	}
	block = aligned_alloc(DIRTY_IMAGE_ALIGN, DIRTY_IMAGE_ALIGN);
	if (!block)
		return -ENOMEM;
	err = read_full(fd, block, DIRTY_IMAGE_ALIGN);
	if (err)
		goto out;
	memcpy(&h, block, sizeof(h));
	err = -EBADMSG;
	if (memcmp(h.magic, DIRTY_IMAGE_MAGIC, sizeof(h.magic)))
		goto out;
	/*
	 * The version before the checksum: where a newer version keeps its
	 * checksum is not ours to know.  (A corrupted version field is then
	 * reported as -EPROTO, not -EBADMSG: refused either way.)
	 */
	if (h.version != DIRTY_IMAGE_VERSION) {
		err = -EPROTO;
		goto out;
	}
	if (h.header_size < sizeof(h) || h.header_size > DIRTY_IMAGE_ALIGN)
		goto out;
	if (header_crc(block, h.header_size) != h.crc)
		goto out;
	err = header_check(&h);
	if (err)
		goto out;
	crc = dirty_crc32c(0, block, DIRTY_IMAGE_ALIGN);

	/* the header is sound: the sizes below are what the image claims, overflow-checked */
	regions_len = h.runs_offset - h.regions_offset;
	runs_len = h.data_offset - h.runs_offset;
	if (regions_len > SIZE_MAX || runs_len > SIZE_MAX) {
		err = -ENOMEM;
		goto out;
	}
	if (regions_len) {
		err = read_table(fd, regions_len, (void **)&regions);
		if (err)
			goto out;
		crc = dirty_crc32c(crc, regions, (size_t)regions_len);
	}
	err = regions_check(&h, regions, &region_pages);
	if (err)
		goto out;
	if ((h.flags & DIRTY_IMAGE_BASE) && region_pages != h.npages) {
		err = -EBADMSG;
		goto out;
	}
	if (runs_len) {
		err = read_table(fd, runs_len, (void **)&runs);
		if (err)
			goto out;
		crc = dirty_crc32c(crc, runs, (size_t)runs_len);
	}
	err = runs_check(&h, regions, runs);
	if (err)
		goto out;
	if (tables) {
		/* never NULL, even for an empty table: memcpy(dst, NULL, 0) is undefined */
		static const struct dirty_image_region no_regions[1];
		static const struct dirty_image_run no_runs[1];

		err = tables(&h, regions ? regions : no_regions, runs ? runs : no_runs,
			     READER_GET(reader, userdata));
		if (err)
			goto out;
	}

	buf = aligned_alloc(DIRTY_IMAGE_ALIGN, VERIFY_CHUNK);
	if (!buf) {
		err = -ENOMEM;
		goto out;
	}
	err = read_data(fd, &h, runs, reader, buf, VERIFY_CHUNK, &crc);
	if (err)
		goto out;
	err = read_full(fd, buf, DIRTY_IMAGE_ALIGN);
	if (err)
		goto out;
	memcpy(&trailer, buf, sizeof(trailer));
	if (memcmp(trailer.magic, DIRTY_IMAGE_TRAILER_MAGIC, sizeof(trailer.magic)) ||
	    trailer.total_size != h.trailer_offset + DIRTY_IMAGE_ALIGN || trailer.crc != crc) {
		err = -EBADMSG;
		goto out;
	}
	if (ret)
		*ret = h;
	err = 0;
out:
	free(buf);
	free(runs);
	free(regions);
	free(block);
	return err;
}

DIRTY_EXPORT int dirty_image_verify(int fd, struct dirty_image_header *ret)
{
	return dirty_image_read(fd, NULL, ret);
}
