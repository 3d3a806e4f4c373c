// SPDX-License-Identifier: GPL-2.0
/*
 * dirtymap-test: tests of /dev/dirtymap, run as root in a qemu guest (the
 * module on Debian's 6.12 kernel, or the patched kernel).
 *
 *   dirtymap-test [--reclaim MiB] [--cgroup MiB] [--rounds N]
 *
 * Prints "ok N - ..." / "not ok N - ..." lines and "# ..." notes; exits 0
 * when every case passed, 1 when one failed, 77 when /dev/dirtymap is absent.
 * --reclaim MiB adds the reclaim stress: a memfd of that size (bigger than
 * the memory the writer may use: the guest's RAM, or the memory cgroup
 * limit --cgroup MiB) is written and collected --rounds times with swap on;
 * every write must be recorded and the file must end up exactly as written.
 *
 * Build: cc -O2 -Wall -I kernel/include/uapi -o dirtymap-test dirtymap-test.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/dirtymap.h>

#define EXT4_MAGIC 0xEF53
#define HUGE_NR 512		/* pages of a PMD (x86-64) */

static int dm = -1;
static long psz;
static int ntest, nfail;
static struct dirtymap_info info;

static void ok(int cond, const char *fmt, ...)
{
	va_list ap;

	printf("%sok %d - ", cond ? "" : "not ", ++ntest);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	if (!cond)
		nfail++;
}

static void skip(const char *what, const char *why)
{
	printf("ok %d - %s # SKIP %s\n", ++ntest, what, why);
	fflush(stdout);
}

static void note(const char *fmt, ...)
{
	va_list ap;

	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

static void die(const char *what)
{
	printf("not ok %d - %s: %s\nBail out!\n", ++ntest, what, strerror(errno));
	exit(1);
}

/* ioctl on the device; returns 0 or -errno */
static int dm_call(unsigned long cmd, int fd, uint64_t off, uint64_t len,
		   uint64_t *bitmap, struct dirtymap_range *out)
{
	struct dirtymap_range r = {
		.fd = fd, .offset = off, .length = len,
		.bitmap = (uintptr_t)bitmap,
	};
	int rc = ioctl(dm, cmd, &r);

	if (out)
		*out = r;
	return rc < 0 ? -errno : 0;
}

static int collect(int fd, uint64_t pgoff, uint64_t npages, uint64_t *bm,
		   struct dirtymap_range *out)
{
	return dm_call(DIRTYMAP_IOC_CLEAN_RECORD, fd, pgoff * psz, npages * psz,
		       bm, out);
}

static int wprotect(int fd, uint64_t pgoff, uint64_t npages,
		    struct dirtymap_range *out)
{
	return dm_call(DIRTYMAP_IOC_WRITE_PROTECT, fd, pgoff * psz,
		       npages * psz, NULL, out);
}

static size_t words(uint64_t npages)
{
	return (npages + 63) / 64;
}

static int test_bit(const uint64_t *bm, uint64_t i)
{
	return (bm[i / 64] >> (i % 64)) & 1;
}

static void set_bit(uint64_t *bm, uint64_t i)
{
	bm[i / 64] |= 1ull << (i % 64);
}

/* compares, and describes the first differences */
static int same_bits(const uint64_t *got, const uint64_t *want, uint64_t n,
		     const char *what)
{
	int shown = 0, ok = 1;
	uint64_t i;

	for (i = 0; i < n; i++) {
		if (test_bit(got, i) == test_bit(want, i))
			continue;
		ok = 0;
		if (shown++ < 8)
			note("%s: page %" PRIu64 " %s", what, i,
			     test_bit(got, i) ? "reported but not written" :
			     "written but not reported");
	}
	return ok;
}

static uint64_t count_bits(const uint64_t *bm, uint64_t n)
{
	uint64_t i, c = 0;

	for (i = 0; i < n; i++)
		c += test_bit(bm, i);
	return c;
}

static int new_memfd(const char *name, uint64_t npages)
{
	int fd = memfd_create(name, 0);

	if (fd < 0 || ftruncate(fd, npages * psz))
		die("memfd");
	return fd;
}

static char *map(int fd, uint64_t pgoff, uint64_t npages, int flags)
{
	char *p = mmap(NULL, npages * psz, PROT_READ | PROT_WRITE, flags, fd,
		       pgoff * psz);

	if (p == MAP_FAILED)
		die("mmap");
	return p;
}

/* a 2 MiB-aligned shared mapping of @npages pages of @fd from 0 */
static char *map_aligned(int fd, uint64_t npages)
{
	size_t huge = HUGE_NR * psz, len = npages * psz;
	char *p = mmap(NULL, len + huge, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *a;

	if (p == MAP_FAILED)
		die("mmap");
	a = (char *)(((uintptr_t)p + huge - 1) & ~(uintptr_t)(huge - 1));
	if (mmap(a, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd,
		 0) == MAP_FAILED)
		die("mmap fixed");
	return a;
}

/* kB of "field:" summed over the mappings in /proc/self/smaps */
static long smaps_kb(const char *field)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[256];
	size_t n = strlen(field);
	long kb = 0, v;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, field, n) && sscanf(line + n, "%ld", &v) == 1)
			kb += v;
	fclose(f);
	return kb;
}

static int write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = write(fd, s, strlen(s));
	close(fd);
	return n < 0 ? -errno : 0;
}

static int read_file(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = 0;
	return 0;
}

/* ---- the cases ----------------------------------------------------------- */

static void test_info(void)
{
	struct dirtymap_info i2;

	memset(&info, 0xaa, sizeof(info));
	ok(ioctl(dm, DIRTYMAP_IOC_INFO, &info) == 0, "INFO");
	ok(info.version >> 16 == DIRTYMAP_VERSION_MAJOR,
	   "INFO version %u.%u", info.version >> 16, info.version & 0xffff);
	ok(info.page_size == (uint64_t)psz && info.max_pages >= 1 &&
	   !info.reserved[0] && !info.reserved[1] && !info.reserved[2] &&
	   !info.reserved[3], "INFO page_size %" PRIu64 ", max_pages %" PRIu64
	   ", reserved zero", info.page_size, info.max_pages);
	note("INFO flags 0x%x:%s%s (%s)", info.flags,
	     info.flags & DIRTYMAP_INFO_HUGE_PMD ? " HUGE_PMD" : "",
	     info.flags & DIRTYMAP_INFO_FOLIO_DIRTY ? " FOLIO_DIRTY" : "",
	     info.flags & DIRTYMAP_INFO_HUGE_PMD ? "patched helpers" :
	     "module on unpatched helpers");
	ok(ioctl(dm, DIRTYMAP_IOC_INFO, (void *)8) < 0 && errno == EFAULT,
	   "INFO with a bad pointer: EFAULT");
	ok(ioctl(dm, _IOR(DIRTYMAP_IOC_MAGIC, 9, struct dirtymap_info), &i2) < 0 &&
	   errno == ENOTTY, "unknown ioctl: ENOTTY");
}

/*
 * Three children map the same memfd at different file offsets and addresses
 * (one of them twice) and write chosen pages; the parent, which maps it too
 * and only reads, collects: exactly the written pages, then nothing.
 */
#define MP_PAGES 96

struct child {
	pid_t pid;
	int go[2], done[2];
};

static void child_write(char *base, uint64_t base_pgoff, const int *pages,
			uint8_t val)
{
	for (; *pages >= 0; pages++)
		base[(*pages - base_pgoff) * psz + 7] = val;
}

static void test_multiprocess(void)
{
	/* file pages written in rounds 1 and 2, per child (-1 ends) */
	static const int a1[] = { 1, 7, 40, -1 }, a2[] = { 2, -1 };
	static const int b1[] = { 33, 64, 95, -1 }, b2[] = { 94, 40, -1 };
	static const int c1[] = { 16, -1 }, c1b[] = { 20, -1 };
	static const int c2[] = { -1 }, c2b[] = { 47, -1 };
	uint64_t bm[words(MP_PAGES)], want[words(MP_PAGES)];
	struct dirtymap_range r;
	struct child ch[3];
	int fd, i, rc;
	char *p, c;

	fd = new_memfd("dm-multi", MP_PAGES);
	p = map(fd, 0, MP_PAGES, MAP_SHARED);
	(void)*(volatile char *)(p + 5 * psz);	/* a read fault: not a write */

	for (i = 0; i < 3; i++) {
		if (pipe(ch[i].go) || pipe(ch[i].done))
			die("pipe");
		ch[i].pid = fork();
		if (ch[i].pid < 0)
			die("fork");
		if (ch[i].pid)
			continue;
		/* child i: its own mappings, at other offsets and addresses */
		char *m1, *m2 = NULL;

		if (i == 0) {
			m1 = map(fd, 0, 48, MAP_SHARED);
			child_write(m1, 0, a1, 0xa1);
		} else if (i == 1) {
			m1 = map(fd, 32, 64, MAP_SHARED);
			child_write(m1, 32, b1, 0xb1);
		} else {
			m1 = map(fd, 16, 32, MAP_SHARED);
			m2 = map(fd, 16, 32, MAP_SHARED);
			child_write(m1, 16, c1, 0xc1);
			child_write(m2, 16, c1b, 0xc2);
		}
		if (write(ch[i].done[1], "1", 1) != 1 ||
		    read(ch[i].go[0], &c, 1) != 1)
			_exit(2);
		if (i == 0)
			child_write(m1, 0, a2, 0xa2);
		else if (i == 1)
			child_write(m1, 32, b2, 0xb2);
		else {
			child_write(m1, 16, c2, 0xc3);
			child_write(m2, 16, c2b, 0xc4);
		}
		if (write(ch[i].done[1], "2", 1) != 1 ||
		    read(ch[i].go[0], &c, 1) != 1)
			_exit(2);
		_exit(0);	/* the mappings lived through the collects */
	}
	for (i = 0; i < 3; i++)
		if (read(ch[i].done[0], &c, 1) != 1)
			die("child");

	memset(want, 0, sizeof(want));
	for (const int *const *s = (const int *const[]){ a1, b1, c1, c1b, NULL };
	     *s; s++)
		for (const int *q = *s; *q >= 0; q++)
			set_bit(want, *q);
	memset(bm, 0xff, sizeof(bm));
	rc = collect(fd, 0, MP_PAGES, bm, &r);
	ok(rc == 0 && same_bits(bm, want, MP_PAGES, "round 1") &&
	   r.dirty == 8, "3 processes, 4 mappings at other offsets: exactly the "
	   "8 pages written are recorded (rc %d, dirty %" PRIu64 ", changed %"
	   PRIu64 ")", rc, r.dirty, r.changed);
	ok(p[40 * psz + 7] == (char)0xa1 && p[20 * psz + 7] == (char)0xc2 &&
	   p[95 * psz + 7] == (char)0xb1, "the writes are in the file");
	memset(bm, 0xff, sizeof(bm));
	rc = collect(fd, 0, MP_PAGES, bm, &r);
	ok(rc == 0 && count_bits(bm, MP_PAGES) == 0 && r.dirty == 0,
	   "a second collect records nothing (dirty %" PRIu64 ")", r.dirty);

	for (i = 0; i < 3; i++)
		if (write(ch[i].go[1], "w", 1) != 1 || read(ch[i].done[0], &c, 1) != 1)
			die("child");
	memset(want, 0, sizeof(want));
	set_bit(want, 2);
	set_bit(want, 94);
	set_bit(want, 40);
	set_bit(want, 47);
	/* first a sub-range [32, 48): pages 40 and 47 only, bit 0 = page 32 */
	uint64_t sub[1] = { ~0ull }, subwant[1] = { (1ull << 8) | (1ull << 15) };

	rc = collect(fd, 32, 16, sub, &r);
	ok(rc == 0 && same_bits(sub, subwant, 16, "sub-range") && r.dirty == 2,
	   "a sub-range at file page 32 records its 2 pages at bits 8 and 15");
	want[40 / 64] &= ~(1ull << (40 % 64));
	want[47 / 64] &= ~(1ull << (47 % 64));
	memset(bm, 0xff, sizeof(bm));
	rc = collect(fd, 0, MP_PAGES, bm, &r);
	ok(rc == 0 && same_bits(bm, want, MP_PAGES, "round 2") && r.dirty == 2,
	   "round 2: a page written before by another process (40) and the rest "
	   "recorded exactly");
	for (i = 0; i < 3; i++) {
		int st;

		if (write(ch[i].go[1], "q", 1) != 1 || waitpid(ch[i].pid, &st, 0) < 0)
			die("child");
		close(ch[i].go[0]);
		close(ch[i].go[1]);
		close(ch[i].done[0]);
		close(ch[i].done[1]);
	}
	munmap(p, MP_PAGES * psz);
	close(fd);
}

/* write-protect, write, collect: the snapshot order */
static void test_write_protect(void)
{
	uint64_t bm[1], want[1] = { (1ull << 3) | (1ull << 9) };
	struct dirtymap_range r;
	int fd = new_memfd("dm-wp", 16), rc, i;
	char *p = map(fd, 0, 16, MAP_SHARED);

	for (i = 0; i < 16; i++)
		p[i * psz] = 1;
	rc = collect(fd, 0, 16, bm, &r);
	ok(rc == 0 && r.dirty == 16, "16 pages written: 16 recorded");
	rc = wprotect(fd, 0, 16, &r);
	ok(rc == 0 && r.changed == 16 && r.dirty == 0,
	   "WRITE_PROTECT: 16 entries protected (changed %" PRIu64 ")", r.changed);
	rc = wprotect(fd, 0, 16, &r);
	ok(rc == 0 && r.changed == 0, "again: none left to protect");
	p[3 * psz] = 2;
	p[9 * psz + 100] = 2;
	bm[0] = ~0ull;
	rc = collect(fd, 0, 16, bm, &r);
	ok(rc == 0 && same_bits(bm, want, 16, "after wp"),
	   "written after WRITE_PROTECT: exactly pages 3 and 9 recorded");
	rc = wprotect(fd, 0, 16, &r);
	ok(rc == 0 && r.changed == 2,
	   "WRITE_PROTECT: only the 2 written pages were writable again "
	   "(changed %" PRIu64 ")", r.changed);
	bm[0] = ~0ull;
	rc = collect(fd, 0, 16, bm, &r);
	ok(rc == 0 && bm[0] == 0, "nothing written since: nothing recorded");
	ok(p[3 * psz] == 2 && p[9 * psz + 100] == 2, "contents kept");
	munmap(p, 16 * psz);
	close(fd);
}

/* ranges over several kernel chunks, past the end of the file */
static void test_big_range(void)
{
	const uint64_t n = 100000, len = n + 1000;
	static const uint64_t pages[] = { 0, 5, 32767, 32768, 40000, 65535,
					  65536, 99999 };
	uint64_t *bm = calloc(words(len) + 1, 8), *want = calloc(words(len), 8);
	struct dirtymap_range r;
	int fd = new_memfd("dm-big", n), rc;
	char *p = map(fd, 0, n, MAP_SHARED);
	unsigned int i;

	for (i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
		p[pages[i] * psz + 1] = 1;
		set_bit(want, pages[i]);
	}
	memset(bm, 0xff, (words(len) + 1) * 8);
	rc = collect(fd, 0, len, bm, &r);
	ok(rc == 0 && same_bits(bm, want, len, "big") && r.dirty == 8 &&
	   !memcmp(bm + words(len) - 1, want + words(len) - 1, 8) &&
	   bm[words(len)] == ~0ull,
	   "%" PRIu64 " pages (past EOF, 4 chunks): the 8 written recorded, "
	   "every bitmap word written, none beyond", len);
	munmap(p, n * psz);
	close(fd);
	free(bm);
	free(want);
}

static void test_refused(void)
{
	int fd = new_memfd("dm-bad", 8), ro, pfd[2], ext, rc;
	char *p = map(fd, 0, 8, MAP_SHARED), path[64];
	uint64_t bm[1];
	struct dirtymap_range r;
	struct statfs sf;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ro = open(path, O_RDONLY);
	if (ro < 0)
		die("reopen read-only");
	ok(collect(ro, 0, 8, bm, NULL) == -EBADF &&
	   wprotect(ro, 0, 8, NULL) == -EBADF, "fd open read-only: EBADF");
	ok(collect(-1, 0, 8, bm, NULL) == -EBADF, "fd -1: EBADF");
	if (pipe(pfd))
		die("pipe");
	ok(collect(pfd[1], 0, 8, bm, NULL) == -EOPNOTSUPP, "a pipe: EOPNOTSUPP");
	ext = open("dirtymap-test.file", O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (ext < 0 || ftruncate(ext, 8 * psz) || fstatfs(ext, &sf))
		die("regular file");
	if (sf.f_type == EXT4_MAGIC)
		ok(collect(ext, 0, 8, bm, NULL) == -EOPNOTSUPP &&
		   wprotect(ext, 0, 8, NULL) == -EOPNOTSUPP,
		   "a regular ext4 file: EOPNOTSUPP");
	else
		skip("a regular ext4 file: EOPNOTSUPP",
		     "the working directory is not ext4");
	close(ext);
	unlink("dirtymap-test.file");

	p[2 * psz] = 1;		/* must survive every refused call */
	ok(dm_call(DIRTYMAP_IOC_CLEAN_RECORD, fd, 100, psz, bm, NULL) == -EINVAL,
	   "unaligned offset: EINVAL");
	ok(dm_call(DIRTYMAP_IOC_CLEAN_RECORD, fd, 0, psz + 1, bm, NULL) == -EINVAL,
	   "unaligned length: EINVAL");
	ok(dm_call(DIRTYMAP_IOC_CLEAN_RECORD, fd, 0, 0, bm, NULL) == -EINVAL &&
	   dm_call(DIRTYMAP_IOC_WRITE_PROTECT, fd, 0, 0, NULL, NULL) == -EINVAL,
	   "length 0: EINVAL");
	ok(dm_call(DIRTYMAP_IOC_WRITE_PROTECT, fd, 0,
		   (info.max_pages + 1) * psz, NULL, NULL) == -EINVAL,
	   "max_pages + 1 pages: EINVAL");
	ok(dm_call(DIRTYMAP_IOC_WRITE_PROTECT, fd, ~0ull & ~(uint64_t)(psz - 1),
		   psz, NULL, NULL) == -EINVAL, "a range past the largest "
	   "file offset: EINVAL");
	memset(&r, 0, sizeof(r));
	r.fd = fd;
	r.length = 8 * psz;
	r.bitmap = (uintptr_t)bm;
	r.flags = 1;
	ok(ioctl(dm, DIRTYMAP_IOC_CLEAN_RECORD, &r) < 0 && errno == EINVAL,
	   "flags 1: EINVAL");
	r.flags = 0;
	r.reserved[1] = 1;
	ok(ioctl(dm, DIRTYMAP_IOC_CLEAN_RECORD, &r) < 0 && errno == EINVAL,
	   "reserved not 0: EINVAL");
	ok(ioctl(dm, DIRTYMAP_IOC_CLEAN_RECORD, (void *)8) < 0 && errno == EFAULT,
	   "a bad argument pointer: EFAULT");
	ok(collect(fd, 0, 8, (uint64_t *)8, NULL) == -EFAULT,
	   "a bad bitmap pointer: EFAULT");
	bm[0] = 0;
	rc = collect(fd, 0, 8, bm, &r);
	ok(rc == 0 && bm[0] == 1ull << 2,
	   "the refused calls changed nothing: page 2 still recorded");
	p[3 * psz] = 1;
	rc = collect(fd, 0, 8, NULL, &r);
	ok(rc == 0 && r.dirty == 1, "bitmap 0: cleans and counts (dirty %"
	   PRIu64 ")", r.dirty);
	bm[0] = ~0ull;
	ok(collect(fd, 0, 8, bm, NULL) == 0 && bm[0] == 0, "and it cleaned");
	close(pfd[0]);
	close(pfd[1]);
	close(ro);
	munmap(p, 8 * psz);
	close(fd);
}

/*
 * A private mapping of the file (and a read-only shared one): the helpers'
 * walk stops at such a mapping (walk_page_mapping() breaks out of its loop
 * on the test_walk refusal).  No write through the shared mappings may be
 * lost; the patched kernel records exactly, the module reports the pages
 * under such a mapping conservatively.
 */
static void test_private_mapping(void)
{
	uint64_t bm[1], want[1] = { 1ull << 20 };
	struct dirtymap_range r;
	int fd = new_memfd("dm-priv", 64), rc;
	char *priv = map(fd, 0, 8, MAP_PRIVATE);
	char *shared = map(fd, 4, 60, MAP_SHARED);
	int exact = info.flags & DIRTYMAP_INFO_HUGE_PMD;

	priv[0] = 1;		/* a COW copy: not the file's */
	shared[(20 - 4) * psz] = 1;
	rc = collect(fd, 0, 64, bm, &r);
	if (exact)
		ok(rc == 0 && same_bits(bm, want, 64, "private"),
		   "a private mapping at file page 0 does not hide the write "
		   "through a shared one: exactly page 20");
	else
		ok(rc == 0 && test_bit(bm, 20) && (bm[0] & ~0xffull) == want[0],
		   "a private mapping at file page 0 does not hide the write "
		   "through a shared one: page 20 recorded, and pages 0-7 (under "
		   "the private mapping) at most as false positives (bitmap %#"
		   PRIx64 ")", bm[0]);
	rc = collect(fd, 0, 64, bm, &r);
	ok(rc == 0 && !(bm[0] & ~0xffull), "nothing else afterwards");
	munmap(priv, 8 * psz);
	munmap(shared, 60 * psz);
	close(fd);
}

/* ---- huge pages ---------------------------------------------------------- */

/* a write under a huge PMD: recorded as the whole huge page */
static void huge_write_case(int fd, const char *what, int conservative)
{
	uint64_t bm[words(2 * HUGE_NR)], want[words(2 * HUGE_NR)];
	long before = smaps_kb("ShmemPmdMapped:") + smaps_kb("FilePmdMapped:");
	struct dirtymap_range r;
	char *p = map_aligned(fd, 2 * HUGE_NR);
	long pmd;
	int rc;

	p[3 * psz] = 1;
	pmd = smaps_kb("ShmemPmdMapped:") + smaps_kb("FilePmdMapped:") - before;
	if (pmd < 2048) {
		skip(what, "the kernel did not map a huge PMD (no huge page free?)");
		goto out;
	}
	memset(want, 0, sizeof(want));
	memset(want, 0xff, HUGE_NR / 8);
	memset(bm, 0, sizeof(bm));
	rc = collect(fd, 0, 2 * HUGE_NR, bm, &r);
	ok(rc == 0 && same_bits(bm, want, 2 * HUGE_NR, what) &&
	   r.dirty == HUGE_NR, "%s: a write under a huge PMD is recorded as the "
	   "whole huge page (dirty %" PRIu64 ")", what, r.dirty);
	rc = collect(fd, 0, 2 * HUGE_NR, bm, &r);
	if (conservative)
		ok(rc == 0 && same_bits(bm, want, 2 * HUGE_NR, what),
		   "%s: no write since, reported whole again (documented: the "
		   "helpers cannot clean huge PMDs)", what);
	else
		ok(rc == 0 && count_bits(bm, 2 * HUGE_NR) == 0,
		   "%s: cleaned: nothing recorded next", what);
	p[100 * psz] = 2;
	rc = collect(fd, 0, 2 * HUGE_NR, bm, &r);
	ok(rc == 0 && same_bits(bm, want, 2 * HUGE_NR, what),
	   "%s: written again: whole huge page again", what);
	if (!conservative) {
		/*
		 * Write-protect the clean huge PMD, write: the fault splits
		 * it (or maps it again whole); the write is recorded, and
		 * nothing outside the huge page.
		 */
		rc = wprotect(fd, 0, 2 * HUGE_NR, &r);
		ok(rc == 0 && r.changed >= 1, "%s: WRITE_PROTECT of the clean "
		   "huge PMD (changed %" PRIu64 ")", what, r.changed);
		p[200 * psz] = 3;
		memset(bm, 0, sizeof(bm));
		rc = collect(fd, 0, 2 * HUGE_NR, bm, &r);
		ok(rc == 0 && test_bit(bm, 200) &&
		   count_bits(bm, 2 * HUGE_NR) == count_bits(bm, HUGE_NR),
		   "%s: written after WRITE_PROTECT: recorded (%" PRIu64
		   " pages of the huge page)", what, count_bits(bm, HUGE_NR));
		rc = collect(fd, 0, 2 * HUGE_NR, bm, &r);
		ok(rc == 0 && count_bits(bm, 2 * HUGE_NR) == 0,
		   "%s: then nothing", what);
	}
	ok(p[3 * psz] == 1 && p[100 * psz] == 2 &&
	   (conservative || p[200 * psz] == 3), "%s: contents kept", what);
out:
	munmap(p, 2 * HUGE_NR * psz);
}

static void test_huge(void)
{
	const char *dir = "/tmp/dirtymap-huge";
	const char *knob = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";
	const char *mthp = "/sys/kernel/mm/transparent_hugepage/hugepages-2048kB/shmem_enabled";
	int patched = info.flags & DIRTYMAP_INFO_HUGE_PMD;
	char old[128], *sel, *end;
	int fd, rc;

	/* 1. a tmpfs mounted with huge=always */
	mkdir(dir, 0700);
	if (mount("none", dir, "tmpfs", 0, "huge=always,size=16m")) {
		skip("tmpfs huge=always", strerror(errno));
	} else {
		fd = open("/tmp/dirtymap-huge/f", O_RDWR | O_CREAT, 0600);
		if (fd < 0 || ftruncate(fd, 2 * HUGE_NR * psz))
			die("huge tmpfs file");
		if (!patched) {
			rc = collect(fd, 0, 16, NULL, NULL);
			ok(rc == -EOPNOTSUPP && wprotect(fd, 0, 16, NULL) ==
			   -EOPNOTSUPP, "tmpfs huge=always: refused, EOPNOTSUPP "
			   "(rc %d)", rc);
		} else {
			huge_write_case(fd, "tmpfs huge=always", 0);
		}
		close(fd);
		umount(dir);
	}
	rmdir(dir);

	/* 2. memfds while shmem_enabled=always (the internal mount) */
	if (read_file(knob, old, sizeof(old))) {
		skip("shmem_enabled=always", "no THP shmem knob");
	} else if ((sel = strchr(old, '[')) && (end = strchr(sel, ']'))) {
		*end = 0;
		sel++;
		if (write_file(knob, "always")) {
			skip("shmem_enabled=always", "cannot set the knob");
		} else {
			fd = new_memfd("dm-huge", 2 * HUGE_NR);
			if (!patched) {
				rc = collect(fd, 0, 16, NULL, NULL);
				ok(rc == -EOPNOTSUPP, "memfd with shmem_enabled="
				   "always: refused, EOPNOTSUPP (rc %d)", rc);
			} else {
				huge_write_case(fd, "memfd, shmem_enabled=always", 0);
			}
			close(fd);
			write_file(knob, sel);
		}
	}

	/*
	 * 3. PMD-sized folios on a mount that says huge=never: the per-size
	 * knob for anonymous shmem (6.11+) gives memfds huge folios anyway.
	 */
	if (read_file(mthp, old, sizeof(old)) || !(sel = strchr(old, '[')) ||
	    !(end = strchr(sel, ']'))) {
		skip("hugepages-2048kB/shmem_enabled=always", "no per-size knob");
		return;
	}
	*end = 0;
	sel++;
	if (write_file(mthp, "always")) {
		skip("hugepages-2048kB/shmem_enabled=always", "cannot set the knob");
		return;
	}
	fd = new_memfd("dm-mthp", 2 * HUGE_NR);
	huge_write_case(fd, "memfd, hugepages-2048kB/shmem_enabled=always",
			!patched);
	close(fd);
	write_file(mthp, sel);
}

/* ---- reclaim stress -------------------------------------------------------- */

static uint64_t rng(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* pages written in round @round (deterministic: both processes compute it) */
static void round_pages(int round, uint64_t npages, uint64_t *bm)
{
	uint64_t s = 0x9e3779b97f4a7c15ull * (round + 1), i, k;

	memset(bm, 0, words(npages) * 8);
	if (round == 0) {
		for (i = 0; i < npages; i++)
			set_bit(bm, i);
		return;
	}
	for (k = 0; k < npages / 8; k++)
		set_bit(bm, rng(&s) % npages);
}

static uint64_t stamp(int round, uint64_t page)
{
	return ((uint64_t)(round + 1) << 40) ^ page ^ 0x5a5a000000000000ull;
}

static int cgroup_enter(long mib)
{
	char buf[64];
	int rc;

	mkdir("/sys/fs/cgroup", 0755);
	if (access("/sys/fs/cgroup/cgroup.controllers", F_OK) &&
	    mount("none", "/sys/fs/cgroup", "cgroup2", 0, NULL))
		return -errno;
	write_file("/sys/fs/cgroup/cgroup.subtree_control", "+memory");
	mkdir("/sys/fs/cgroup/dirtymap-test", 0755);
	snprintf(buf, sizeof(buf), "%ldM", mib);
	rc = write_file("/sys/fs/cgroup/dirtymap-test/memory.max", buf);
	if (rc)
		return rc;
	snprintf(buf, sizeof(buf), "%d", getpid());
	return write_file("/sys/fs/cgroup/dirtymap-test/cgroup.procs", buf);
}

static void test_reclaim(long mib, long cg_mib, int rounds)
{
	uint64_t npages = (uint64_t)mib * 1024 * 1024 / psz;
	uint64_t *bm = calloc(words(npages), 8), *wr = calloc(words(npages), 8);
	int *last = calloc(npages, sizeof(int));
	int fd, go[2], done[2], round, missing_total = 0, rc;
	uint64_t extra_total = 0, bad = 0, i, *page;
	char swaps[4096], c;
	pid_t pid;

	if (read_file("/proc/swaps", swaps, sizeof(swaps)) ||
	    !strchr(swaps, '\n') || !strchr(strchr(swaps, '\n') + 1, '/')) {
		skip("reclaim stress", "no swap is on");
		return;
	}
	fd = new_memfd("dm-reclaim", npages);
	if (pipe(go) || pipe(done))
		die("pipe");
	pid = fork();
	if (pid < 0)
		die("fork");
	if (!pid) {
		char *p;

		close(go[1]);
		close(done[0]);

		if (cg_mib && (rc = cgroup_enter(cg_mib))) {
			printf("# cannot enter a memory cgroup: %s\n", strerror(-rc));
			_exit(3);
		}
		p = map(fd, 0, npages, MAP_SHARED);
		while (read(go[0], &round, sizeof(round)) == sizeof(round)) {
			round_pages(round, npages, wr);
			for (i = 0; i < npages; i++) {
				if (!test_bit(wr, i))
					continue;
				page = (uint64_t *)(p + i * psz);
				/*
				 * Round 0 reads first: the read fault maps a
				 * new, clean folio writable, the write only
				 * sets the dirty bit of the entry, which the
				 * collect then clears.
				 */
				if (round == 0)
					(void)*(volatile uint64_t *)page;
				page[0] = stamp(round, i);
				page[psz / 8 - 1] = stamp(round, i);
			}
			if (write(done[1], "d", 1) != 1)
				_exit(2);
		}
		_exit(0);
	}
	close(go[0]);
	close(done[1]);
	for (round = 0; round < rounds; round++) {
		uint64_t missing = 0, extra = 0;

		if (write(go[1], &round, sizeof(round)) != sizeof(round) ||
		    read(done[0], &c, 1) != 1) {
			int st = 0;

			waitpid(pid, &st, 0);
			pid = -1;
			ok(0, "reclaim: the writer died in round %d (status %#x)",
			   round, st);
			goto out;
		}
		round_pages(round, npages, wr);
		rc = collect(fd, 0, npages, bm, NULL);
		if (rc) {
			ok(0, "reclaim: collect failed: %s", strerror(-rc));
			goto out;
		}
		for (i = 0; i < npages; i++) {
			if (test_bit(wr, i)) {
				last[i] = round;
				missing += !test_bit(bm, i);
			} else {
				extra += test_bit(bm, i);
			}
		}
		if (missing)
			note("round %d: %" PRIu64 " written pages not recorded",
			     round, missing);
		missing_total += missing;
		extra_total += extra;
	}
	/*
	 * Known limit of the helpers (module and patch alike): they read page
	 * tables, and reclaim unmaps a page before it swaps it out; a write
	 * whose page-table entry is gone before the collect is not recorded.
	 * A TAP TODO: reported, not counted as a failure.
	 */
	printf("%sok %d - reclaim: %d rounds over a %ld MiB memfd%s: every "
	       "written page recorded (%d missed, %" PRIu64 " false positives)"
	       "%s\n", missing_total ? "not " : "", ++ntest, rounds, mib,
	       cg_mib ? " (writer limited by a memory cgroup)" : "",
	       missing_total, extra_total, missing_total ? " # TODO a write "
	       "whose page-table entry reclaim removed before the collect is "
	       "not recorded (the helpers see page tables only)" : "");
	/* the file's content: read with pread, which maps nothing */
	for (i = 0; i < npages; i++) {
		uint64_t b[2];

		if (pread(fd, &b[0], 8, i * psz) != 8 ||
		    pread(fd, &b[1], 8, (i + 1) * psz - 8) != 8)
			die("pread");
		if (b[0] != stamp(last[i], i) || b[1] != stamp(last[i], i)) {
			if (bad++ < 8)
				note("page %" PRIu64 ": %#" PRIx64 " %#" PRIx64
				     ", written %#" PRIx64 " in round %d", i,
				     b[0], b[1], stamp(last[i], i), last[i]);
		}
	}
	if (!read_file("/proc/vmstat", swaps, sizeof(swaps)) &&
	    strstr(swaps, "pswpout "))
		note("reclaim: %s", strtok(strstr(swaps, "pswpout "), "\n"));
	if (!read_file("/proc/meminfo", swaps, sizeof(swaps)) &&
	    strstr(swaps, "SwapFree:")) {
		long total = 0, free = 0;
		char *t = strstr(swaps, "SwapTotal:");

		if (t)
			sscanf(t, "SwapTotal: %ld", &total);
		sscanf(strstr(swaps, "SwapFree:"), "SwapFree: %ld", &free);
		note("reclaim: swap in use at the end: %ld kB", total - free);
	}
	ok(!bad, "reclaim: no data loss: the file holds exactly what was "
	   "written (%" PRIu64 " pages differ)", bad);
out:
	close(go[1]);
	if (pid > 0)
		waitpid(pid, NULL, 0);
	close(done[0]);
	close(fd);
	free(bm);
	free(wr);
	free(last);
}

int main(int argc, char **argv)
{
	long reclaim = 0, cg = 0;
	int rounds = 20, i;

	setvbuf(stdout, NULL, _IOLBF, 0);
	psz = sysconf(_SC_PAGESIZE);
	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--reclaim") && i + 1 < argc)
			reclaim = atol(argv[++i]);
		else if (!strcmp(argv[i], "--cgroup") && i + 1 < argc)
			cg = atol(argv[++i]);
		else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
			rounds = atoi(argv[++i]);
		else {
			fprintf(stderr, "usage: %s [--reclaim MiB] [--cgroup MiB] "
				"[--rounds N]\n", argv[0]);
			return 2;
		}
	}
	dm = open("/dev/dirtymap", O_RDWR);
	if (dm < 0) {
		printf("1..0 # SKIP /dev/dirtymap: %s\n", strerror(errno));
		return 77;
	}
	test_info();
	test_multiprocess();
	test_write_protect();
	test_big_range();
	test_refused();
	test_private_mapping();
	test_huge();
	if (reclaim)
		test_reclaim(reclaim, cg, rounds);
	printf("1..%d\n# %d failed\n", ntest, nfail);
	return nfail ? 1 : 0;
}
