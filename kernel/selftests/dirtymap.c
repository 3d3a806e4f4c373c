// SPDX-License-Identifier: GPL-2.0
/*
 * dirtymap: trackers of every write to a shared-memory file
 * (drivers/misc/dirtymap.c, mm/mapping_dirty_helpers.c).
 *
 * Each test makes the content of some pages of a memfd change in a way that
 * leaves no dirty page-table entry behind, and checks that a collect of a
 * tracker reports them, in both collect methods.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/dirtymap.h>

#include "../kselftest_harness.h"

#define NPAGES 64

FIXTURE(dirtymap)
{
	int dev, fd, tracker;
	long psz;
	char *map;
};

FIXTURE_VARIANT(dirtymap)
{
	unsigned int method;
};

FIXTURE_VARIANT_ADD(dirtymap, mkwrite)
{
	.method = DIRTYMAP_COLLECT_MKWRITE,
};

FIXTURE_VARIANT_ADD(dirtymap, pagetable)
{
	.method = DIRTYMAP_COLLECT_PAGETABLE,
};

static int collect(int tracker, long psz, uint64_t *bitmap, unsigned int flags)
{
	struct dirtymap_collect c = {
		.length = NPAGES * psz,
		.bitmap = (uintptr_t)bitmap,
		.flags = DIRTYMAP_COLLECT_CLEAN | flags,
	};

	return ioctl(tracker, DIRTYMAP_IOC_COLLECT, &c) ? -errno : 0;
}

FIXTURE_SETUP(dirtymap)
{
	struct dirtymap_track t = { 0 };

	self->psz = sysconf(_SC_PAGESIZE);
	self->dev = open("/dev/dirtymap", O_RDWR);
	if (self->dev < 0)
		SKIP(return, "/dev/dirtymap: %s", strerror(errno));
	self->fd = memfd_create("dirtymap", 0);
	ASSERT_GE(self->fd, 0);
	ASSERT_EQ(ftruncate(self->fd, NPAGES * self->psz), 0);
	self->map = mmap(NULL, NPAGES * self->psz, PROT_READ | PROT_WRITE,
			 MAP_SHARED, self->fd, 0);
	ASSERT_NE(self->map, MAP_FAILED);
	memset(self->map, 1, NPAGES * self->psz);
	t.fd = self->fd;
	t.length = NPAGES * self->psz;
	self->tracker = ioctl(self->dev, DIRTYMAP_IOC_TRACK, &t);
	ASSERT_GE(self->tracker, 0);
	if (!(t.semantics & DIRTYMAP_RECORDS_EVERY_WRITE))
		SKIP(return, "this dirtymap records page-table entries only");
	ASSERT_EQ(collect(self->tracker, self->psz, NULL, variant->method), 0);
}

FIXTURE_TEARDOWN(dirtymap)
{
	if (self->dev < 0)
		return;
	close(self->tracker);
	munmap(self->map, NPAGES * self->psz);
	close(self->fd);
	close(self->dev);
}

TEST_F(dirtymap, mapped_write)
{
	uint64_t bm = ~0ull;

	self->map[3 * self->psz] = 2;
	ASSERT_EQ(collect(self->tracker, self->psz, &bm, 0), 0);
	ASSERT_EQ(bm, 1ull << 3);
	ASSERT_EQ(collect(self->tracker, self->psz, &bm, 0), 0);
	ASSERT_EQ(bm, 0);
}

TEST_F(dirtymap, write_then_munmap)
{
	char *m = mmap(NULL, NPAGES * self->psz, PROT_READ | PROT_WRITE,
		       MAP_SHARED, self->fd, 0);
	uint64_t bm = 0;

	ASSERT_NE(m, MAP_FAILED);
	m[5 * self->psz] = 2;
	ASSERT_EQ(munmap(m, NPAGES * self->psz), 0);
	ASSERT_EQ(collect(self->tracker, self->psz, &bm, 0), 0);
	ASSERT_EQ(bm, 1ull << 5);
}

TEST_F(dirtymap, write_then_exit)
{
	uint64_t bm = 0;
	int status;
	pid_t pid = fork();

	ASSERT_GE(pid, 0);
	if (!pid) {
		char *m = mmap(NULL, NPAGES * self->psz, PROT_READ | PROT_WRITE,
			       MAP_SHARED, self->fd, 0);

		if (m == MAP_FAILED)
			_exit(1);
		m[7 * self->psz] = 2;
		_exit(0);
	}
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_EQ(status, 0);
	ASSERT_EQ(collect(self->tracker, self->psz, &bm, 0), 0);
	ASSERT_EQ(bm, 1ull << 7);
}

TEST_F(dirtymap, write_then_dontneed)
{
	uint64_t bm = 0;

	self->map[9 * self->psz] = 2;
	ASSERT_EQ(madvise(self->map, NPAGES * self->psz, MADV_DONTNEED), 0);
	ASSERT_EQ(collect(self->tracker, self->psz, &bm, 0), 0);
	ASSERT_EQ(bm, 1ull << 9);
}

TEST_F(dirtymap, pwrite)
{
	uint64_t bm = 0;

	ASSERT_EQ(pwrite(self->fd, "x", 1, 11 * self->psz + 5), 1);
	ASSERT_EQ(collect(self->tracker, self->psz, &bm, 0), 0);
	ASSERT_EQ(bm, 1ull << 11);
}

TEST_F(dirtymap, punch_hole)
{
	uint64_t bm = 0;

	ASSERT_EQ(fallocate(self->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			    12 * self->psz, 2 * self->psz), 0);
	ASSERT_EQ(collect(self->tracker, self->psz, &bm, 0), 0);
	ASSERT_EQ(bm, 3ull << 12);
}

TEST_F(dirtymap, two_trackers)
{
	struct dirtymap_track t = {
		.fd = self->fd, .length = NPAGES * self->psz,
	};
	uint64_t a = 0, b = 0;
	int other = ioctl(self->dev, DIRTYMAP_IOC_TRACK, &t);

	ASSERT_GE(other, 0);
	self->map[20 * self->psz] = 2;
	ASSERT_EQ(collect(self->tracker, self->psz, &a, 0), 0);
	ASSERT_EQ(collect(other, self->psz, &b, 0), 0);
	ASSERT_EQ(a, 1ull << 20);
	ASSERT_EQ(b, 1ull << 20);
	close(other);
}

TEST_HARNESS_MAIN
