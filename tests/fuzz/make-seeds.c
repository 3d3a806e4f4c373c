/* SPDX-License-Identifier: MIT */
/*
 * Writes the seed corpus of the fuzzers (tests/fuzz/corpus/NAME/) into DIR:
 *   fuzz-make-seeds DIR
 * The seeds in the tree were made with it; run it again when a format
 * changes.  Images are real ones, written by dirty_image_write() from memory
 * of this process; the chain and message seeds follow the input formats at
 * the top of fuzz-image-chain.c and fuzz-syncd-message.c.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "libdirty.h"
#include "syncd-proto.h"

static const char *dir;
static size_t page;

static void die(const char *what, int err)
{
	fprintf(stderr, "fuzz-make-seeds: %s: %s\n", what, strerror(err));
	exit(1);
}

static int create(const char *sub, const char *name)
{
	char path[4096];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, sub);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/%s/%s", dir, sub, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		die(path, errno);
	return fd;
}

static void put(const char *sub, const char *name, const void *buf, size_t len)
{
	int fd = create(sub, name);

	if (write(fd, buf, len) != (ssize_t)len)
		die(name, errno);
	close(fd);
}

/* Images of two adjacent regions of 2 pages and one of 1, apart. */
static void images(void)
{
	struct dirty_tracker *t;
	char *mem = mmap(NULL, 8 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct dirty_range r[3] = { { mem, 2 * page }, { mem + 2 * page, 2 * page },
				    { mem + 6 * page, page } };
	const char *names[3] = { "[heap]", "/usr/lib/libc.so.6", "" };
	struct dirty_image_options base = { .sz = sizeof(base), .flags = DIRTY_IMAGE_CLEAN | DIRTY_IMAGE_ALL };
	struct dirty_image_options inc = { .sz = sizeof(inc), .sequence = 1, .flags = DIRTY_IMAGE_CLEAN };
	int fd, err;

	if (mem == MAP_FAILED)
		die("mmap", errno);
	for (size_t i = 0; i < 8; i++)
		memset(mem + i * page, 'a' + (int)i, 64);
	err = dirty_tracker_new(NULL, &t);
	for (int i = 0; !err && i < 3; i++)
		err = dirty_track(t, r[i].start, r[i].len);
	if (err)
		die("tracker", -err);
	fd = create("image-verify", "base");
	err = dirty_image_write(t, r, names, 3, &base, fd, NULL);
	close(fd);
	/* the last page of one region and the first of the next: adjacent runs */
	mem[page + 5] = 1;
	mem[2 * page + 5] = 2;
	mem[6 * page + 5] = 3;
	fd = create("image-verify", "incremental");
	if (!err)
		err = dirty_image_write(t, r, names, 3, &inc, fd, NULL);
	close(fd);
	/* nothing written since: no run; then a file of two images */
	fd = create("image-verify", "empty-then-one");
	inc.sequence = 2;
	if (!err)
		err = dirty_image_write(t, r, names, 3, &inc, fd, NULL);
	mem[4] = 4;
	inc.sequence = 3;
	if (!err)
		err = dirty_image_write(t, r, names, 1, &inc, fd, NULL);
	close(fd);
	if (err)
		die("dirty_image_write", -err);
	dirty_tracker_free(t);
	munmap(mem, 8 * page);
}

/* CRC-32C, bit by bit: the library keeps its own to itself. */
static uint32_t crc32c(const void *buf, size_t len)
{
	const unsigned char *p = buf;
	uint32_t crc = ~0u;

	while (len--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = crc & 1 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
	}
	return ~crc;
}

/*
 * A sound header that claims a region table of 16 TiB, in two blocks: the
 * library once allocated what such a header claims (the fuzzer's malloc
 * limit found it; test-image's test_verify_huge_claim is its test).
 */
static void huge_claim(void)
{
	unsigned char buf[2 * DIRTY_IMAGE_ALIGN] = { 0 };
	struct dirty_image_header h = {
		.magic = DIRTY_IMAGE_MAGIC, .version = DIRTY_IMAGE_VERSION,
		.header_size = sizeof(h), .page_size = 4096, .nregions = (uint64_t)1 << 37,
		.regions_offset = DIRTY_IMAGE_ALIGN,
	};

	h.runs_offset = h.data_offset = h.trailer_offset = DIRTY_IMAGE_ALIGN + h.nregions * 128;
	h.crc = crc32c(&h, sizeof(h));
	memcpy(buf, &h, sizeof(h));
	put("image-verify", "huge-table-claim", buf, sizeof(buf));
}

/* Chains, in the input format of fuzz-image-chain.c. */
static void chains(void)
{
	/* base 0 of [0,8) and [12,16); incremental 1 of both; 2: [12,16) ends, [20,24) begins */
	static const unsigned char sound[] = {
		255,
		0, 1, 2, 0, 8, 4, 4,
		1, 0, 2, 0, 8, 4, 4,
		2, 1, 1, 20, 4,
		2, 0, 1, 0, 8,
	};
	static const unsigned char gap[] = { 255, 0, 1, 1, 0, 8, 2, 0, 1, 0, 8 };
	static const unsigned char two_processes[] = { 255, 0, 1, 1, 0, 8, 1, 2, 1, 0, 8 };
	static const unsigned char changed_range[] = { 255, 0, 1, 1, 0, 8, 1, 0, 1, 0, 12 };
	static const unsigned char upto[] = { 1, 0, 1, 2, 0, 8, 4, 4, 1, 0, 2, 0, 8, 4, 4,
					      2, 0, 1, 0, 8 };
	static const unsigned char unordered[] = { 255, 0, 9, 2, 8, 4, 0, 4 };

	put("image-chain", "sound", sound, sizeof(sound));
	put("image-chain", "gap", gap, sizeof(gap));
	put("image-chain", "two-processes", two_processes, sizeof(two_processes));
	put("image-chain", "changed-range", changed_range, sizeof(changed_range));
	put("image-chain", "upto", upto, sizeof(upto));
	put("image-chain", "unordered", unordered, sizeof(unordered));
}

/* Messages, in the input format of fuzz-syncd-message.c: a control byte, then the datagram. */
static void message(const char *name, unsigned char control, uint16_t type, uint64_t a, uint64_t b,
		    uint64_t c, uint64_t d)
{
	unsigned char buf[1 + sizeof(struct syncd_msg)];
	struct syncd_msg w = {
		.magic = htole32(SYNCD_MAGIC), .version = htole16(SYNCD_VERSION),
		.type = htole16(type), .a = htole64(a), .b = htole64(b), .c = htole64(c),
		.d = htole64(d),
	};

	buf[0] = control;
	memcpy(buf + 1, &w, sizeof(w));
	put("syncd-message", name, buf, sizeof(buf));
}

static void messages(void)
{
	/* 16 pages of buffer (control bits 2-7), 0 or 1 descriptor (bits 0-1) */
	message("hello", 16 << 2, SYNCD_HELLO, SYNCD_VERSION, 0, 0, 0);
	message("register", 16 << 2 | 1, SYNCD_REGISTER, 1234, 0x7f0000000000, 8 * 4096, 4 * 4096);
	message("register-outside", 16 << 2, SYNCD_REGISTER, 1234, 0x7f0000000000, 8 * 4096,
		12 * 4096);
	message("flush", 16 << 2, SYNCD_FLUSH, 0, 0, 0, 0);
	message("unregister", 16 << 2, SYNCD_UNREGISTER, 0x7f0000000000, 8 * 4096, 0, 0);
	message("bye-with-descriptors", 16 << 2 | 3, SYNCD_BYE, 0, 0, 0, 0);
	message("flushed", 16 << 2, SYNCD_FLUSHED, SYNCD_FLUSHED_NOW, 0, 0, 0);
	message("readback", 16 << 2 | 1, SYNCD_READBACK, 0, 0, 0, 0);
	put("syncd-message", "short", "\x40" "DSYN", 5);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: fuzz-make-seeds DIR\n");
		return 2;
	}
	dir = argv[1];
	page = (size_t)sysconf(_SC_PAGESIZE);
	mkdir(dir, 0755);
	images();
	huge_claim();
	chains();
	messages();
	return 0;
}
