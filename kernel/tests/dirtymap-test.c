// SPDX-License-Identifier: GPL-2.0
/*
 * dirtymap-test: tests of /dev/dirtymap's trackers, run as root in a qemu
 * guest (the module on Debian's 6.12 kernel, or the patched kernel).
 *
 *   dirtymap-test [--reclaim MiB] [--cgroup MiB] [--rounds N]
 *                 [--odirect PATH] [--bench]
 *
 * Prints "ok N - ..." / "not ok N - ..." lines and "# ..." notes; exits 0
 * when every case passed, 1 when one failed, 77 when /dev/dirtymap is absent.
 *
 * The write oracle: every case makes the content of some pages change (a
 * write through a mapping that then goes away, write(2), io_uring, splice,
 * hole punching, O_DIRECT, process_vm_writev...), and the next collect must
 * report at least those pages.  A kernel that records every write
 * (DIRTYMAP_RECORDS_EVERY_WRITE: the patch series) must pass every case, in
 * both of its methods (mkwrite and page-table); the module sees page-table
 * entries only, and a case it cannot see is printed as a TAP TODO ("not ok
 * ... # TODO"), its known limit, not a failure.
 *
 * --reclaim MiB adds the reclaim stress: a memfd of that size, bigger than
 * the memory its writer may use (the memory cgroup limit --cgroup MiB, or
 * the guest's RAM), written and collected --rounds times with swap on;
 * every write must be recorded and the file must end up exactly as written.
 * --odirect PATH: a file or block device that O_DIRECT can read 64 KiB
 * from (default: a file in the working directory, when its file system
 * takes O_DIRECT).  --bench measures what a write fault and a collect cost
 * in each method (ratios: the guest runs under TCG).
 *
 * Build: cc -O2 -Wall -I kernel/include/uapi -o dirtymap-test dirtymap-test.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/klog.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/dirtymap.h>
#include <linux/io_uring.h>

#define EXT4_MAGIC 0xEF53
#define HUGE_NR 512		/* pages of a PMD (x86-64, 4 KiB pages) */
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif
#ifndef MPOL_MF_MOVE_ALL
#define MPOL_MF_MOVE_ALL (1 << 2)
#endif

static int dm = -1;
static long psz;
static int ntest, nfail, ntodo;
static uint64_t semantics, max_pages;
static const char *odirect_path;

/* ---- output ---------------------------------------------------------------- */

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

/* a case the kernel is known not to pass: TAP TODO, not a failure */
static void ok_or_todo(int cond, int todo, const char *why, const char *fmt, ...)
{
	va_list ap;

	if (cond || !todo) {
		printf("%sok %d - ", cond ? "" : "not ", ++ntest);
		nfail += !cond;
	} else {
		printf("not ok %d - ", ++ntest);
		ntodo++;
	}
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	if (!cond && todo)
		printf(" # TODO %s", why);
	printf("\n");
	fflush(stdout);
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

/* ---- the interface ----------------------------------------------------------- */

/* a tracker of pages [pgoff, pgoff + npages) of fd: its descriptor or -errno */
static int track(int fd, uint64_t pgoff, uint64_t npages)
{
	struct dirtymap_track a = {
		.fd = fd, .offset = pgoff * psz, .length = npages * psz,
		.flags = DIRTYMAP_TRACK_CLOEXEC,
	};
	int t = ioctl(dm, DIRTYMAP_IOC_TRACK, &a);

	return t < 0 ? -errno : t;
}

static int track_or_die(int fd, uint64_t pgoff, uint64_t npages)
{
	int t = track(fd, pgoff, npages);

	if (t < 0) {
		errno = -t;
		die("DIRTYMAP_IOC_TRACK");
	}
	return t;
}

static int collect_flags(int t, uint64_t pgoff, uint64_t npages, uint64_t *bm,
			 unsigned flags, struct dirtymap_collect *out)
{
	struct dirtymap_collect c = {
		.offset = pgoff * psz, .length = npages * psz,
		.bitmap = (uintptr_t)bm, .flags = flags,
	};
	int rc = ioctl(t, DIRTYMAP_IOC_COLLECT, &c);

	if (out)
		*out = c;
	return rc < 0 ? -errno : 0;
}

/* collect and clean */
static int collect(int t, uint64_t pgoff, uint64_t npages, uint64_t *bm,
		   struct dirtymap_collect *out)
{
	return collect_flags(t, pgoff, npages, bm, DIRTYMAP_COLLECT_CLEAN, out);
}

/* ---- bitmaps --------------------------------------------------------------- */

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

static void set_range(uint64_t *bm, uint64_t i, uint64_t n)
{
	while (n--)
		set_bit(bm, i++);
}

static uint64_t count_bits(const uint64_t *bm, uint64_t n)
{
	uint64_t i, c = 0;

	for (i = 0; i < n; i++)
		c += test_bit(bm, i);
	return c;
}

/* compares, and describes the first differences */
static int same_bits(const uint64_t *got, const uint64_t *want, uint64_t n,
		     const char *what)
{
	int shown = 0, same = 1;
	uint64_t i;

	for (i = 0; i < n; i++) {
		if (test_bit(got, i) == test_bit(want, i))
			continue;
		same = 0;
		if (shown++ < 8)
			note("%s: page %" PRIu64 " %s", what, i,
			     test_bit(got, i) ? "reported but not written" :
			     "written but not reported");
	}
	return same;
}

/* got ⊇ want; the pages missing are described, and counted in *missing */
static int covers(const uint64_t *got, const uint64_t *want, uint64_t n,
		  const char *what, uint64_t *missing, uint64_t *extra)
{
	uint64_t i;
	int shown = 0;

	*missing = *extra = 0;
	for (i = 0; i < n; i++) {
		if (test_bit(want, i) && !test_bit(got, i)) {
			++*missing;
			if (shown++ < 4)
				note("%s: page %" PRIu64 " changed but not reported", what, i);
		} else if (!test_bit(want, i) && test_bit(got, i)) {
			++*extra;
		}
	}
	return !*missing;
}

/* ---- memory and files ------------------------------------------------------ */

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

static int swap_on(void)
{
	char swaps[4096];

	return !read_file("/proc/swaps", swaps, sizeof(swaps)) &&
	       strchr(swaps, '\n') && strchr(strchr(swaps, '\n') + 1, '/');
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* a child that runs fn(arg) and exits 0, or 3 if fn returns nonzero */
static pid_t spawn(int (*fn)(void *), void *arg)
{
	pid_t pid = fork();

	if (pid < 0)
		die("fork");
	if (!pid)
		_exit(fn(arg) ? 3 : 0);
	return pid;
}

static int reap(pid_t pid)
{
	int st;

	if (waitpid(pid, &st, 0) < 0)
		die("waitpid");
	return st;
}

/* ---- the basics ------------------------------------------------------------ */

static void test_track(void)
{
	struct dirtymap_track a = { 0 };
	int fd = new_memfd("dm-track", 16), t;

	a.fd = fd;
	a.length = 16 * psz;
	memset(a.reserved, 0, sizeof(a.reserved));
	t = ioctl(dm, DIRTYMAP_IOC_TRACK, &a);
	ok(t >= 0, "DIRTYMAP_IOC_TRACK makes a tracker descriptor (%d)", t);
	semantics = a.semantics;
	max_pages = a.max_pages;
	ok(a.page_size == (uint64_t)psz && a.max_pages >= 64,
	   "page size %u, at most %" PRIu64 " pages a tracker", a.page_size, a.max_pages);
	note("semantics %#" PRIx64 ":%s%s", semantics,
	     semantics & DIRTYMAP_RECORDS_EVERY_WRITE ? " every write recorded (patched kernel)" :
	     " page-table entries only (module)",
	     semantics & DIRTYMAP_RECORDS_HUGE_WHOLE ? ", huge pages may be reported whole" : "");
	ok(fcntl(t, F_GETFD) == 0, "without DIRTYMAP_TRACK_CLOEXEC: no close-on-exec");
	close(t);
	t = track(fd, 0, 16);
	ok(t >= 0 && fcntl(t, F_GETFD) == FD_CLOEXEC,
	   "with DIRTYMAP_TRACK_CLOEXEC: close-on-exec");
	ok(ioctl(t, DIRTYMAP_IOC_TRACK, &a) < 0 && errno == ENOTTY &&
	   ioctl(dm, DIRTYMAP_IOC_COLLECT, &a) < 0 && errno == ENOTTY,
	   "TRACK on a tracker, COLLECT on the device: ENOTTY");
	ok(ioctl(dm, _IOR(DIRTYMAP_IOC_MAGIC, 0, struct dirtymap_track), &a) < 0 &&
	   errno == ENOTTY, "version 1's ioctls: ENOTTY");
	close(t);
	close(fd);
}

static void test_refused(void)
{
	int fd = new_memfd("dm-bad", 8), ro, pfd[2], ext, t, rc;
	char *p = map(fd, 0, 8, MAP_SHARED), path[64];
	uint64_t bm[2];
	struct dirtymap_track a;
	struct dirtymap_collect c;
	struct statfs sf;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ro = open(path, O_RDONLY);
	if (ro < 0)
		die("reopen read-only");
	ok(track(ro, 0, 8) == -EBADF, "fd open read-only: EBADF");
	ok(track(-1, 0, 8) == -EBADF, "fd -1: EBADF");
	if (pipe(pfd))
		die("pipe");
	ok(track(pfd[1], 0, 8) == -EOPNOTSUPP, "a pipe: EOPNOTSUPP");
	ext = open("dirtymap-test.file", O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (ext < 0 || ftruncate(ext, 8 * psz) || fstatfs(ext, &sf))
		die("regular file");
	if (sf.f_type == EXT4_MAGIC)
		ok(track(ext, 0, 8) == -EOPNOTSUPP, "a regular ext4 file: EOPNOTSUPP");
	else
		skip("a regular ext4 file: EOPNOTSUPP", "the working directory is not ext4");
	close(ext);
	unlink("dirtymap-test.file");

	memset(&a, 0, sizeof(a));
	a.fd = fd;
	a.offset = 100;
	a.length = psz;
	ok(ioctl(dm, DIRTYMAP_IOC_TRACK, &a) < 0 && errno == EINVAL, "unaligned offset: EINVAL");
	a.offset = 0;
	a.length = psz + 1;
	ok(ioctl(dm, DIRTYMAP_IOC_TRACK, &a) < 0 && errno == EINVAL, "unaligned length: EINVAL");
	a.length = 0;
	ok(ioctl(dm, DIRTYMAP_IOC_TRACK, &a) < 0 && errno == EINVAL, "length 0: EINVAL");
	a.length = (max_pages + 1) * psz;
	ok(ioctl(dm, DIRTYMAP_IOC_TRACK, &a) < 0 && errno == EINVAL, "max_pages + 1: EINVAL");
	a.offset = ~0ull & ~(uint64_t)(psz - 1);
	a.length = psz;
	ok(ioctl(dm, DIRTYMAP_IOC_TRACK, &a) < 0 && errno == EINVAL,
	   "past the largest file offset: EINVAL");
	a.offset = 0;
	a.flags = 2;
	ok(ioctl(dm, DIRTYMAP_IOC_TRACK, &a) < 0 && errno == EINVAL, "unknown flag: EINVAL");
	a.flags = 0;
	a.reserved[3] = 1;
	ok(ioctl(dm, DIRTYMAP_IOC_TRACK, &a) < 0 && errno == EINVAL, "reserved not 0: EINVAL");
	ok(ioctl(dm, DIRTYMAP_IOC_TRACK, (void *)8) < 0 && errno == EFAULT,
	   "a bad argument pointer: EFAULT");

	t = track_or_die(fd, 2, 4);	/* pages 2-5 */
	p[3 * psz] = 1;			/* must survive every refused collect */
	ok(collect(t, 1, 2, bm, NULL) == -EINVAL && collect(t, 5, 2, bm, NULL) == -EINVAL &&
	   collect(t, 0, 8, bm, NULL) == -EINVAL, "collect outside the tracked range: EINVAL");
	ok(collect(t, 2, 0, bm, NULL) == -EINVAL, "collect of 0 pages: EINVAL");
	ok(collect_flags(t, 2, 4, bm, 8, NULL) == -EINVAL, "unknown collect flag: EINVAL");
	ok(collect_flags(t, 2, 4, bm, DIRTYMAP_COLLECT_MKWRITE | DIRTYMAP_COLLECT_PAGETABLE,
			 NULL) == -EINVAL, "both methods forced: EINVAL");
	memset(&c, 0, sizeof(c));
	c.offset = 2 * psz;
	c.length = 4 * psz;
	c.reserved[1] = 1;
	ok(ioctl(t, DIRTYMAP_IOC_COLLECT, &c) < 0 && errno == EINVAL, "collect reserved: EINVAL");
	rc = collect(t, 2, 4, (uint64_t *)8, &c);
	ok(rc == -EFAULT && c.done == 0, "a bad bitmap pointer: EFAULT, done %" PRIu64, c.done);
	bm[0] = 0;
	rc = collect(t, 2, 4, bm, &c);
	ok(rc == 0 && bm[0] == 1ull << 1 && c.dirty == 1 && c.done == 4 * (uint64_t)psz,
	   "the refused calls lost nothing: page 3 still reported (bitmap %#" PRIx64 ")", bm[0]);
	p[4 * psz] = 1;
	rc = collect(t, 2, 4, NULL, &c);
	ok(rc == 0 && c.dirty == 1, "bitmap 0: cleans and counts (dirty %" PRIu64 ")", c.dirty);
	bm[0] = ~0ull;
	ok(collect(t, 2, 4, bm, NULL) == 0 && bm[0] == 0, "and it cleaned");
	close(t);
	close(pfd[0]);
	close(pfd[1]);
	close(ro);
	munmap(p, 8 * psz);
	close(fd);
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
	static const int a1[] = { 1, 7, 40, -1 }, a2[] = { 2, -1 };
	static const int b1[] = { 33, 64, 95, -1 }, b2[] = { 94, 40, -1 };
	static const int c1[] = { 16, -1 }, c1b[] = { 20, -1 };
	static const int c2[] = { -1 }, c2b[] = { 47, -1 };
	uint64_t bm[words(MP_PAGES)], want[words(MP_PAGES)];
	struct dirtymap_collect r;
	struct child ch[3];
	int fd, i, rc, t;
	char *p, c;

	fd = new_memfd("dm-multi", MP_PAGES);
	p = map(fd, 0, MP_PAGES, MAP_SHARED);
	(void)*(volatile char *)(p + 5 * psz);	/* a read fault: not a write */
	t = track_or_die(fd, 0, MP_PAGES);

	for (i = 0; i < 3; i++) {
		if (pipe(ch[i].go) || pipe(ch[i].done))
			die("pipe");
		ch[i].pid = fork();
		if (ch[i].pid < 0)
			die("fork");
		if (ch[i].pid)
			continue;
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
		_exit(0);
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
	rc = collect(t, 0, MP_PAGES, bm, &r);
	ok(rc == 0 && same_bits(bm, want, MP_PAGES, "round 1") && r.dirty == 8,
	   "3 processes, 4 mappings at other offsets: exactly the 8 pages written "
	   "are reported (rc %d, dirty %" PRIu64 ", method %u)", rc, r.dirty, r.mode);
	/*
	 * pread, not the mapping: a read fault (and its fault-around) would map
	 * pages writable, which the module, reading page tables, reports.
	 */
	ok(pread(fd, &c, 1, 40 * psz + 7) == 1 && c == (char)0xa1 &&
	   pread(fd, &c, 1, 20 * psz + 7) == 1 && c == (char)0xc2 &&
	   pread(fd, &c, 1, 95 * psz + 7) == 1 && c == (char)0xb1,
	   "the writes are in the file");
	memset(bm, 0xff, sizeof(bm));
	rc = collect(t, 0, MP_PAGES, bm, &r);
	ok(rc == 0 && count_bits(bm, MP_PAGES) == 0 && r.dirty == 0,
	   "a second collect reports nothing (dirty %" PRIu64 ")", r.dirty);
	for (i = 0; i < MP_PAGES; i++)
		if (test_bit(bm, i))
			note("second collect: page %d reported", i);

	for (i = 0; i < 3; i++)
		if (write(ch[i].go[1], "w", 1) != 1 || read(ch[i].done[0], &c, 1) != 1)
			die("child");
	memset(want, 0, sizeof(want));
	set_bit(want, 2);
	set_bit(want, 94);
	/* first a sub-range [32, 48): pages 40 and 47 only, bit 0 = page 32 */
	uint64_t sub[1] = { ~0ull }, subwant[1] = { (1ull << 8) | (1ull << 15) };

	rc = collect(t, 32, 16, sub, &r);
	ok(rc == 0 && same_bits(sub, subwant, 16, "sub-range") && r.dirty == 2,
	   "a sub-range at file page 32 reports its 2 pages at bits 8 and 15");
	memset(bm, 0xff, sizeof(bm));
	rc = collect(t, 0, MP_PAGES, bm, &r);
	ok(rc == 0 && same_bits(bm, want, MP_PAGES, "round 2") && r.dirty == 2,
	   "round 2: the rest reported exactly");
	for (i = 0; i < 3; i++) {
		if (write(ch[i].go[1], "q", 1) != 1)
			die("child");
		reap(ch[i].pid);
		close(ch[i].go[0]);
		close(ch[i].go[1]);
		close(ch[i].done[0]);
		close(ch[i].done[1]);
	}
	close(t);
	munmap(p, MP_PAGES * psz);
	close(fd);
}

/* collect without DIRTYMAP_COLLECT_CLEAN reports and keeps */
static void test_peek(void)
{
	int fd = new_memfd("dm-peek", 16), t = track_or_die(fd, 0, 16), rc;
	char *p = map(fd, 0, 16, MAP_SHARED);
	uint64_t bm[1];
	struct dirtymap_collect r;

	p[2 * psz] = 1;
	p[9 * psz] = 1;
	bm[0] = 0;
	rc = collect_flags(t, 0, 16, bm, 0, &r);
	ok(rc == 0 && bm[0] == ((1ull << 2) | (1ull << 9)) && r.dirty == 2,
	   "a collect without CLEAN reports pages 2 and 9");
	p[11 * psz] = 1;
	bm[0] = 0;
	rc = collect(t, 0, 16, bm, &r);
	ok(rc == 0 && bm[0] == ((1ull << 2) | (1ull << 9) | (1ull << 11)),
	   "and keeps them: a collect with CLEAN reports them, and page 11");
	bm[0] = ~0ull;
	ok(collect(t, 0, 16, bm, NULL) == 0 && bm[0] == 0, "then nothing");
	close(t);
	munmap(p, 16 * psz);
	close(fd);
}

/* two trackers of overlapping ranges each see every write */
static void test_two_trackers(void)
{
	int fd = new_memfd("dm-two", 64), a = track_or_die(fd, 0, 48),
	    b = track_or_die(fd, 16, 48), rc, i;
	char *p = map(fd, 0, 64, MAP_SHARED);
	uint64_t bma[1], bmb[1], wa = 0, wb = 0;

	for (i = 0; i < 64; i += 5) {
		p[i * psz] = 1;
		if (i < 48)
			wa |= 1ull << i;
		if (i >= 16)
			wb |= 1ull << (i - 16);
	}
	rc = collect(a, 0, 48, bma, NULL);
	ok(rc == 0 && bma[0] == wa, "tracker A (pages 0-47): its 10 pages (%#" PRIx64 ")",
	   bma[0]);
	rc = collect(b, 16, 48, bmb, NULL);
	ok(rc == 0 && bmb[0] == wb, "tracker B (pages 16-63), after A took its own: "
	   "all of its 10 (%#" PRIx64 ")", bmb[0]);
	p[20 * psz] = 2;
	rc = collect(b, 16, 48, bmb, NULL);
	ok(rc == 0 && bmb[0] == 1ull << 4, "B: page 20 written again");
	rc = collect(a, 0, 48, bma, NULL);
	ok(rc == 0 && bma[0] == 1ull << 20, "A sees it too");
	close(b);
	p[30 * psz] = 3;
	rc = collect(a, 0, 48, bma, NULL);
	ok(rc == 0 && bma[0] == 1ull << 30, "B closed: A goes on alone");
	close(a);
	munmap(p, 64 * psz);
	close(fd);
}

/* a range over several chunks, past the end of the file */
static void test_big_range(void)
{
	const uint64_t n = 100000, len = n + 1000;
	static const uint64_t pages[] = { 0, 5, 32767, 32768, 40000, 65535,
					  65536, 99999 };
	uint64_t *bm = calloc(words(len) + 1, 8), *want = calloc(words(len), 8);
	struct dirtymap_collect r;
	int fd = new_memfd("dm-big", n), rc, t = track_or_die(fd, 0, len);
	char *p = map(fd, 0, n, MAP_SHARED);
	unsigned int i;

	for (i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
		p[pages[i] * psz + 1] = 1;
		set_bit(want, pages[i]);
	}
	memset(bm, 0xff, (words(len) + 1) * 8);
	rc = collect(t, 0, len, bm, &r);
	ok(rc == 0 && same_bits(bm, want, len, "big") && r.dirty == 8 &&
	   bm[words(len)] == ~0ull && r.done == len * psz,
	   "%" PRIu64 " pages (past EOF, 4 chunks): the 8 written reported, "
	   "every bitmap word written, none beyond", len);
	close(t);
	munmap(p, n * psz);
	close(fd);
	free(bm);
	free(want);
}

/*
 * A private mapping of the file (and a read-only shared one): a write
 * through a shared mapping is reported, a copy-on-write is not the file's.
 */
static void test_private_mapping(void)
{
	uint64_t bm[1], want[1] = { 1ull << 20 };
	int fd = new_memfd("dm-priv", 64), rc, t = track_or_die(fd, 0, 64);
	char *priv = map(fd, 0, 8, MAP_PRIVATE);
	char *ro = mmap(NULL, 8 * psz, PROT_READ, MAP_SHARED, fd, 8 * psz);
	char *shared = map(fd, 4, 60, MAP_SHARED);

	priv[0] = 1;
	(void)*(volatile char *)ro;
	shared[(20 - 4) * psz] = 1;
	rc = collect(t, 0, 64, bm, NULL);
	ok(rc == 0 && same_bits(bm, want, 64, "private"),
	   "a private and a read-only mapping: exactly the shared write (page 20)");
	munmap(priv, 8 * psz);
	munmap(ro, 8 * psz);
	munmap(shared, 60 * psz);
	close(t);
	close(fd);
}

/* a tracker closed while another thread collects from it */
struct closer {
	int t, fd;
	volatile int stop;
	volatile uint64_t collects, errors;
};

static void *collect_loop(void *arg)
{
	struct closer *c = arg;
	uint64_t bm[4];

	while (!c->stop) {
		int rc = collect(c->t, 0, 256, bm, NULL);

		c->collects++;
		if (rc) {
			c->errors++;
			if (rc != -EBADF)
				note("collect after close: %s", strerror(-rc));
			break;
		}
	}
	return NULL;
}

static void test_close_during_collect(void)
{
	struct closer c = { 0 };
	pthread_t th;
	char *p;
	int i;

	c.fd = new_memfd("dm-close", 256);
	c.t = track_or_die(c.fd, 0, 256);
	p = map(c.fd, 0, 256, MAP_SHARED);
	if (pthread_create(&th, NULL, collect_loop, &c))
		die("pthread_create");
	/* until the thread has collected a while (or failed) */
	for (i = 0; c.collects < 50 && !c.errors; i++)
		p[(i % 256) * psz] = (char)i;
	close(c.t);	/* in the middle of collects */
	for (i = 0; i < 1000; i++)
		p[(i % 256) * psz] = (char)i;
	c.stop = 1;
	pthread_join(th, NULL);
	ok(c.collects >= 50 && c.errors <= 1,
	   "a tracker closed while a thread collects from it: %" PRIu64
	   " collects, then EBADF, nothing else", c.collects);
	munmap(p, 256 * psz);
	close(c.fd);
}

/* the file closed and unmapped everywhere: the tracker keeps it and its record */
static void test_file_closed(void)
{
	int fd = new_memfd("dm-orphan", 8), t = track_or_die(fd, 0, 8);
	char *p = map(fd, 0, 8, MAP_SHARED);
	uint64_t bm[1] = { 0 };

	p[6 * psz] = 1;
	munmap(p, 8 * psz);
	close(fd);
	ok_or_todo(collect(t, 0, 8, bm, NULL) == 0 && bm[0] == 1ull << 6,
		   !(semantics & DIRTYMAP_RECORDS_EVERY_WRITE),
		   "the module sees page-table entries only",
		   "the file closed and unmapped everywhere: its tracker still reports page 6");
	close(t);
}

/* ---- huge pages ---------------------------------------------------------- */

/* a write under a huge PMD: reported, within the huge page */
static void huge_write_case(int fd, const char *what)
{
	uint64_t bm[words(2 * HUGE_NR)], want[words(2 * HUGE_NR)], hp[words(2 * HUGE_NR)];
	long before = smaps_kb("ShmemPmdMapped:") + smaps_kb("FilePmdMapped:");
	struct dirtymap_collect r;
	int t = track_or_die(fd, 0, 2 * HUGE_NR), rc;
	char *p = map_aligned(fd, 2 * HUGE_NR);
	uint64_t missing, extra;
	long pmd;

	p[3 * psz] = 1;
	pmd = smaps_kb("ShmemPmdMapped:") + smaps_kb("FilePmdMapped:") - before;
	if (pmd < 2048) {
		skip(what, "the kernel did not map a huge PMD (no huge page free?)");
		goto out;
	}
	memset(hp, 0, sizeof(hp));
	set_range(hp, 0, HUGE_NR);
	memset(want, 0, sizeof(want));
	set_bit(want, 3);
	rc = collect(t, 0, 2 * HUGE_NR, bm, &r);
	ok(rc == 0 && covers(bm, want, 2 * HUGE_NR, what, &missing, &extra) &&
	   covers(hp, bm, 2 * HUGE_NR, what, &missing, &extra),
	   "%s: a write under a huge PMD is reported, within its huge page "
	   "(%" PRIu64 " pages)", what, r.dirty);
	rc = collect(t, 0, 2 * HUGE_NR, bm, &r);
	ok(rc == 0 && count_bits(bm, 2 * HUGE_NR) == 0, "%s: cleaned: nothing next", what);
	p[200 * psz] = 2;
	memset(want, 0, sizeof(want));
	set_bit(want, 200);
	rc = collect(t, 0, 2 * HUGE_NR, bm, &r);
	ok(rc == 0 && covers(bm, want, 2 * HUGE_NR, what, &missing, &extra) &&
	   covers(hp, bm, 2 * HUGE_NR, what, &missing, &extra),
	   "%s: written again: reported again (%" PRIu64 " pages)", what, r.dirty);
	ok(p[3 * psz] == 1 && p[200 * psz] == 2, "%s: contents kept", what);
out:
	close(t);
	munmap(p, 2 * HUGE_NR * psz);
}

/* the knob's selected value into @sel (NUL-terminated), then set it to @value */
static int knob_set(const char *knob, const char *value, char *sel, size_t len)
{
	char old[256], *s, *e;

	if (read_file(knob, old, sizeof(old)) || !(s = strchr(old, '[')) ||
	    !(e = strchr(s, ']')))
		return -ENOENT;
	*e = 0;
	snprintf(sel, len, "%s", s + 1);
	return write_file(knob, value);
}

static const char shmem_knob[] = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";

static void test_huge(void)
{
	const char *dir = "/tmp/dirtymap-huge";
	char sel[64];
	int fd;

	mkdir(dir, 0700);
	if (mount("none", dir, "tmpfs", 0, "huge=always,size=16m")) {
		skip("tmpfs huge=always", strerror(errno));
	} else {
		fd = open("/tmp/dirtymap-huge/f", O_RDWR | O_CREAT, 0600);
		if (fd < 0 || ftruncate(fd, 2 * HUGE_NR * psz))
			die("huge tmpfs file");
		huge_write_case(fd, "tmpfs huge=always");
		close(fd);
		umount(dir);
	}
	rmdir(dir);

	if (knob_set(shmem_knob, "always", sel, sizeof(sel))) {
		skip("memfd, shmem_enabled=always", "no THP shmem knob");
		return;
	}
	fd = new_memfd("dm-huge", 2 * HUGE_NR);
	huge_write_case(fd, "memfd, shmem_enabled=always");
	close(fd);
	write_file(shmem_knob, sel);
}

/* ---- the write oracle ----------------------------------------------------- */

#define OR_PAGES 64

/* one case: a memfd of OR_PAGES pages, each holding data, tracked and clean */
struct oracle {
	int fd;
	char *p;		/* a shared mapping of all of it */
	uint64_t want[(OR_PAGES + 63) / 64];	/* pages whose content the case changed */
};

/* a second mapping of the file, written at @pages, returned */
static char *write_through_new_mapping(struct oracle *o, const int *pages)
{
	char *m = map(o->fd, 0, OR_PAGES, MAP_SHARED);

	for (; *pages >= 0; pages++) {
		m[*pages * psz + 9] ^= 0x5a;
		set_bit(o->want, *pages);
	}
	return m;
}

static const char *case_munmap(struct oracle *o)
{
	char *m = write_through_new_mapping(o, (const int[]){ 3, 4, 40, -1 });

	munmap(m, OR_PAGES * psz);
	return NULL;
}

static int child_writes(void *arg)
{
	struct oracle *o = arg;

	write_through_new_mapping(o, (const int[]){ 10, 11, 12, -1 });
	return 0;
}

static const char *case_exit(struct oracle *o)
{
	int st = reap(spawn(child_writes, o));

	set_range(o->want, 10, 3);
	return WIFEXITED(st) && !WEXITSTATUS(st) ? NULL : "the child failed";
}

static const char *case_sigkill(struct oracle *o)
{
	int sync[2], st;
	pid_t pid;
	char c;

	if (pipe(sync))
		die("pipe");
	pid = fork();
	if (pid < 0)
		die("fork");
	if (!pid) {
		write_through_new_mapping(o, (const int[]){ 13, 14, -1 });
		if (write(sync[1], "w", 1) != 1)
			_exit(2);
		for (;;)
			pause();
	}
	if (read(sync[0], &c, 1) != 1)
		die("read");
	kill(pid, SIGKILL);
	st = reap(pid);
	close(sync[0]);
	close(sync[1]);
	set_range(o->want, 13, 2);
	return WIFSIGNALED(st) ? NULL : "the child was not killed";
}

static const char *case_dontneed(struct oracle *o)
{
	char *m = write_through_new_mapping(o, (const int[]){ 15, 16, -1 });

	if (madvise(m, OR_PAGES * psz, MADV_DONTNEED))
		die("MADV_DONTNEED");
	munmap(m, OR_PAGES * psz);
	return NULL;
}

static const char *case_remove(struct oracle *o)
{
	char *m = map(o->fd, 0, OR_PAGES, MAP_SHARED);

	/* the pages held data: now they read as zeroes */
	if (madvise(m + 17 * psz, 2 * psz, MADV_REMOVE))
		die("MADV_REMOVE");
	set_range(o->want, 17, 2);
	munmap(m, OR_PAGES * psz);
	return NULL;
}

static const char *case_pageout(struct oracle *o)
{
	char *m;

	if (!swap_on())
		return "no swap is on";
	m = write_through_new_mapping(o, (const int[]){ 19, 20, 21, -1 });
	if (madvise(m, OR_PAGES * psz, MADV_PAGEOUT))
		return "MADV_PAGEOUT is refused";
	munmap(m, OR_PAGES * psz);
	return NULL;
}

static const char *case_write(struct oracle *o)
{
	if (pwrite(o->fd, "written", 7, 22 * psz + 100) != 7 ||
	    pwrite(o->fd, "x", 1, 24 * psz - 1) != 1)
		die("pwrite");
	set_bit(o->want, 22);
	set_bit(o->want, 23);
	return NULL;
}

static const char *case_pwritev(struct oracle *o)
{
	char a[16] = "pwritev-a", b[16] = "pwritev-b";
	struct iovec iov[2] = { { a, sizeof(a) }, { b, sizeof(b) } };

	/* one call across the boundary of pages 25 and 26 */
	if (pwritev(o->fd, iov, 2, 26 * psz - 20) != 32)
		die("pwritev");
	set_range(o->want, 25, 2);
	return NULL;
}

static const char *case_io_uring(struct oracle *o)
{
	struct io_uring_params p = { 0 };
	char buf[32] = "io_uring";
	int ring = syscall(__NR_io_uring_setup, 1, &p), res;
	size_t sqsz, cqsz;
	char *sq, *cq;
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	unsigned *tail, mask;

	if (ring < 0)
		return errno == ENOSYS ? "no io_uring in this kernel" : "io_uring_setup is refused";
	sqsz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	cqsz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	sq = mmap(NULL, sqsz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring,
		  IORING_OFF_SQ_RING);
	cq = mmap(NULL, cqsz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring,
		  IORING_OFF_CQ_RING);
	sqe = mmap(NULL, p.sq_entries * sizeof(*sqe), PROT_READ | PROT_WRITE,
		   MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_SQES);
	if (sq == MAP_FAILED || cq == MAP_FAILED || sqe == MAP_FAILED)
		die("io_uring mmap");
	memset(sqe, 0, sizeof(*sqe));
	sqe->opcode = IORING_OP_WRITE;
	sqe->fd = o->fd;
	sqe->addr = (uintptr_t)buf;
	sqe->len = sizeof(buf);
	sqe->off = 27 * psz + 8;
	tail = (unsigned *)(sq + p.sq_off.tail);
	mask = *(unsigned *)(sq + p.sq_off.ring_mask);
	((unsigned *)(sq + p.sq_off.array))[*tail & mask] = 0;
	__atomic_store_n(tail, *tail + 1, __ATOMIC_RELEASE);
	if (syscall(__NR_io_uring_enter, ring, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0)
		die("io_uring_enter");
	cqe = (struct io_uring_cqe *)(cq + p.cq_off.cqes) +
	      (*(unsigned *)(cq + p.cq_off.head) & *(unsigned *)(cq + p.cq_off.ring_mask));
	res = cqe->res;
	munmap(sq, sqsz);
	munmap(cq, cqsz);
	munmap(sqe, p.sq_entries * sizeof(*sqe));
	close(ring);
	if (res != (int)sizeof(buf)) {
		errno = res < 0 ? -res : EIO;
		die("io_uring write");
	}
	set_bit(o->want, 27);
	return NULL;
}

static const char *case_splice(struct oracle *o)
{
	int pfd[2];
	loff_t off = 28 * psz + 4;

	if (pipe(pfd) || write(pfd[1], "spliced!", 8) != 8)
		die("pipe");
	if (splice(pfd[0], NULL, o->fd, &off, 8, 0) != 8)
		die("splice");
	close(pfd[0]);
	close(pfd[1]);
	set_bit(o->want, 28);
	return NULL;
}

static const char *case_copy_file_range(struct oracle *o)
{
	int src = new_memfd("dm-src", 2);
	loff_t in = 0, out = 29 * psz;

	if (pwrite(src, "copied", 6, 0) != 6)
		die("pwrite");
	if (copy_file_range(src, &in, o->fd, &out, psz, 0) != psz)
		die("copy_file_range");
	close(src);
	set_bit(o->want, 29);
	return NULL;
}

static const char *case_punch_hole(struct oracle *o)
{
	if (fallocate(o->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 30 * psz,
		      3 * psz))
		die("fallocate(PUNCH_HOLE)");
	set_range(o->want, 30, 3);
	return NULL;
}

static const char *case_ftruncate(struct oracle *o)
{
	/* pages 50-63 lose their data (they read as zeroes once grown back) */
	if (ftruncate(o->fd, 50 * psz) || ftruncate(o->fd, OR_PAGES * psz))
		die("ftruncate");
	set_range(o->want, 50, OR_PAGES - 50);
	return NULL;
}

static const char *case_odirect(struct oracle *o)
{
	const size_t len = 16 * psz;
	const char *path = odirect_path ? odirect_path : "dirtymap-test.odirect";
	char *buf = aligned_alloc(psz, len);
	int fd;

	if (!odirect_path) {
		/* a file of the working directory, if its file system takes O_DIRECT */
		fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (fd < 0 || !buf)
			return "cannot create a file in the working directory";
		memset(buf, 0xd1, len);
		if (write(fd, buf, len) != (ssize_t)len || fsync(fd))
			die("write the O_DIRECT file");
		close(fd);
	}
	fd = open(path, O_RDONLY | O_DIRECT);
	free(buf);
	if (fd < 0) {
		if (!odirect_path)
			unlink(path);
		return "no O_DIRECT here (--odirect PATH: a file or device it can read)";
	}
	/* the device writes into the memfd's pages 34-49, through no page-table entry */
	if (pread(fd, o->p + 34 * psz, len, 0) != (ssize_t)len)
		die("O_DIRECT read");
	close(fd);
	if (!odirect_path)
		unlink(path);
	set_range(o->want, 34, 16);
	return NULL;
}

static const char *case_process_vm_writev(struct oracle *o)
{
	pid_t parent = getpid(), pid = fork();
	int st;

	if (pid < 0)
		die("fork");
	if (!pid) {
		char data[64] = "process_vm_writev";
		struct iovec local = { data, sizeof(data) };
		struct iovec remote = { o->p + 5 * psz + 64, sizeof(data) };

		_exit(process_vm_writev(parent, &local, 1, &remote, 1, 0) == sizeof(data) ? 0 :
		      errno == ENOSYS ? 3 : 2);
	}
	st = reap(pid);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 3)
		return "no process_vm_writev in this kernel (CROSS_MEMORY_ATTACH)";
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		die("process_vm_writev");
	set_bit(o->want, 5);
	return NULL;
}

static const char *case_migration(struct oracle *o)
{
	void *pages[2] = { o->p + 7 * psz, o->p + 8 * psz };
	int nodes[2], status[2] = { -1, -1 }, to;

	if (access("/sys/devices/system/node/node1", F_OK))
		return "one NUMA node";
	o->p[7 * psz + 3] ^= 1;
	o->p[8 * psz + 3] ^= 1;
	set_range(o->want, 7, 2);
	if (syscall(SYS_move_pages, 0, 2, pages, NULL, status, 0) < 0)
		die("move_pages (query)");
	to = status[0] == 0 ? 1 : 0;
	nodes[0] = nodes[1] = to;
	if (syscall(SYS_move_pages, 0, 2, pages, nodes, status, MPOL_MF_MOVE_ALL) < 0 ||
	    status[0] != to)
		return "move_pages did not move the page";
	return NULL;
}

struct oracle_case {
	const char *name;
	const char *(*run)(struct oracle *o);
	int page_table;	/* the change stays in a page-table entry: the module sees it */
};

static const struct oracle_case oracle_cases[] = {
	{ "a mapping written, then unmapped", case_munmap, 0 },
	{ "a process that wrote, then exited", case_exit, 0 },
	{ "a process that wrote, then was killed (SIGKILL)", case_sigkill, 0 },
	{ "written, then MADV_DONTNEED", case_dontneed, 0 },
	{ "MADV_REMOVE of pages that held data", case_remove, 0 },
	{ "written, then MADV_PAGEOUT (swapped out)", case_pageout, 0 },
	{ "pwrite(2)", case_write, 0 },
	{ "pwritev(2) across two pages", case_pwritev, 0 },
	{ "io_uring IORING_OP_WRITE", case_io_uring, 0 },
	{ "splice(2) from a pipe", case_splice, 0 },
	{ "copy_file_range(2)", case_copy_file_range, 0 },
	{ "fallocate(PUNCH_HOLE)", case_punch_hole, 0 },
	{ "ftruncate(2) down and up again", case_ftruncate, 0 },
	{ "an O_DIRECT read into the mapping", case_odirect, 1 },
	{ "process_vm_writev(2) from another process", case_process_vm_writev, 1 },
	{ "written, then migrated to the other NUMA node", case_migration, 1 },
};

static void run_oracle_case(const struct oracle_case *c, unsigned method)
{
	struct oracle o;
	uint64_t got[words(OR_PAGES)], missing = 0, extra = 0, i;
	struct dirtymap_collect r;
	const char *why, *mname = method == DIRTYMAP_COLLECT_MKWRITE ? "mkwrite" : "page-table";
	char buf[64];
	int t, rc;

	o.fd = new_memfd("dm-oracle", OR_PAGES);
	/* every page holds data, written without mapping it */
	for (i = 0; i < OR_PAGES; i++) {
		snprintf(buf, sizeof(buf), "page %" PRIu64, i);
		if (pwrite(o.fd, buf, sizeof(buf), i * psz) != sizeof(buf))
			die("pwrite");
	}
	o.p = map(o.fd, 0, OR_PAGES, MAP_SHARED);
	t = track_or_die(o.fd, 0, OR_PAGES);
	if (collect_flags(t, 0, OR_PAGES, NULL, DIRTYMAP_COLLECT_CLEAN | method, NULL))
		die("collect");
	memset(o.want, 0, sizeof(o.want));
	why = c->run(&o);
	if (why) {
		snprintf(buf, sizeof(buf), "%s (%s)", c->name, mname);
		skip(buf, why);
	} else {
		rc = collect(t, 0, OR_PAGES, got, &r);
		rc = rc ? rc : !covers(got, o.want, OR_PAGES, c->name, &missing, &extra);
		ok_or_todo(rc == 0,
			   !(semantics & DIRTYMAP_RECORDS_EVERY_WRITE) && !c->page_table,
			   "the module sees page-table entries only",
			   "oracle, %s method: %s: every changed page reported (%" PRIu64
			   " changed, %" PRIu64 " missed, %" PRIu64 " false positives)",
			   mname, c->name, count_bits(o.want, OR_PAGES), missing, extra);
	}
	close(t);
	munmap(o.p, OR_PAGES * psz);
	close(o.fd);
}

/* a huge page written, then unmapped; or split by a partial unmap */
static void run_oracle_huge(unsigned method, int split)
{
	const char *what = split ? "a huge page written, then split" :
				   "a huge page written, then unmapped";
	const char *mname = method == DIRTYMAP_COLLECT_MKWRITE ? "mkwrite" : "page-table";
	uint64_t got[words(2 * HUGE_NR)], want[words(2 * HUGE_NR)], missing = 0, extra = 0;
	long before;
	char sel[64], buf[128];
	int fd, t, rc;
	char *m;

	snprintf(buf, sizeof(buf), "oracle, %s method: %s", mname, what);
	if (knob_set(shmem_knob, "always", sel, sizeof(sel))) {
		skip(buf, "no THP shmem knob");
		return;
	}
	fd = new_memfd("dm-oracle-huge", 2 * HUGE_NR);
	t = track_or_die(fd, 0, 2 * HUGE_NR);
	if (collect_flags(t, 0, 2 * HUGE_NR, NULL, DIRTYMAP_COLLECT_CLEAN | method, NULL))
		die("collect");
	before = smaps_kb("ShmemPmdMapped:");
	m = map_aligned(fd, 2 * HUGE_NR);
	m[3 * psz] = 1;
	if (smaps_kb("ShmemPmdMapped:") - before < 2048) {
		skip(buf, "the kernel did not map a huge PMD");
		goto out;
	}
	if (collect(t, 0, 2 * HUGE_NR, NULL, NULL))	/* clean: the PMD write-protected */
		die("collect");
	m[5 * psz] = 2;				/* through the huge mapping again */
	memset(want, 0, sizeof(want));
	set_bit(want, 5);
	if (split) {
		/* unmapping half of the huge page splits its PMD */
		munmap(m + HUGE_NR / 2 * psz, HUGE_NR / 2 * psz);
		m[6 * psz] = 3;
		set_bit(want, 6);
	} else {
		munmap(m, 2 * HUGE_NR * psz);
		m = NULL;
	}
	rc = collect(t, 0, 2 * HUGE_NR, got, NULL);
	rc = rc ? rc : !covers(got, want, 2 * HUGE_NR, what, &missing, &extra);
	ok_or_todo(rc == 0,
		   !(semantics & DIRTYMAP_RECORDS_EVERY_WRITE) && !split,
		   "the module sees page-table entries only",
		   "%s: every changed page reported (%" PRIu64 " missed, %" PRIu64
		   " reported besides)", buf, missing, extra);
out:
	if (m) {
		munmap(m, HUGE_NR / 2 * psz);
		munmap(m + HUGE_NR * psz, HUGE_NR * psz);
	}
	close(t);
	close(fd);
	write_file(shmem_knob, sel);
}

static void test_oracle(void)
{
	static const unsigned methods[] = { DIRTYMAP_COLLECT_MKWRITE, DIRTYMAP_COLLECT_PAGETABLE };
	unsigned m, i;

	for (m = 0; m < 2; m++) {
		/* the module has the page-table method only */
		if (!(semantics & DIRTYMAP_RECORDS_EVERY_WRITE) &&
		    methods[m] == DIRTYMAP_COLLECT_MKWRITE)
			continue;
		for (i = 0; i < sizeof(oracle_cases) / sizeof(oracle_cases[0]); i++)
			run_oracle_case(&oracle_cases[i], methods[m]);
		run_oracle_huge(methods[m], 0);
		run_oracle_huge(methods[m], 1);
	}
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
	int fd, t, go[2], done[2], round, rc;
	uint64_t missing_total = 0, extra_total = 0, bad = 0, i, *page;
	char info[4096], c;
	pid_t pid;

	if (!swap_on()) {
		skip("reclaim stress", "no swap is on");
		return;
	}
	fd = new_memfd("dm-reclaim", npages);
	t = track_or_die(fd, 0, npages);
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
				 * new, clean folio, and the write then faults
				 * or only sets the dirty bit of the entry.
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
			int st = reap(pid);

			pid = -1;
			ok(0, "reclaim: the writer died in round %d (status %#x)", round, st);
			goto out;
		}
		round_pages(round, npages, wr);
		rc = collect(t, 0, npages, bm, NULL);
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
			note("round %d: %" PRIu64 " written pages not reported", round, missing);
		missing_total += missing;
		extra_total += extra;
	}
	ok_or_todo(!missing_total, !(semantics & DIRTYMAP_RECORDS_EVERY_WRITE),
		   "a write whose page-table entry reclaim removed before the collect is "
		   "not seen (the module reads page tables only)",
		   "reclaim: %d rounds over a %ld MiB memfd%s: every written page reported "
		   "(%" PRIu64 " missed, %" PRIu64 " false positives)", rounds, mib,
		   cg_mib ? " (writer limited by a memory cgroup)" : "",
		   missing_total, extra_total);
	/* the file's content: read with pread, which maps nothing */
	for (i = 0; i < npages; i++) {
		uint64_t b[2];

		if (pread(fd, &b[0], 8, i * psz) != 8 ||
		    pread(fd, &b[1], 8, (i + 1) * psz - 8) != 8)
			die("pread");
		if ((b[0] != stamp(last[i], i) || b[1] != stamp(last[i], i)) && bad++ < 8)
			note("page %" PRIu64 ": %#" PRIx64 " %#" PRIx64 ", written %#"
			     PRIx64 " in round %d", i, b[0], b[1], stamp(last[i], i), last[i]);
	}
	if (!read_file("/proc/vmstat", info, sizeof(info)) && strstr(info, "pswpout "))
		note("reclaim: %s", strtok(strstr(info, "pswpout "), "\n"));
	ok(!bad, "reclaim: no data loss: the file holds exactly what was written "
	   "(%" PRIu64 " pages differ)", bad);
out:
	close(go[1]);
	if (pid > 0)
		reap(pid);
	close(done[0]);
	close(t);
	close(fd);
	free(bm);
	free(wr);
	free(last);
}

/* ---- what each method costs -------------------------------------------------- */

/*
 * For a memfd of @npages pages written at fraction f per round (scattered
 * pages): the time of the writes (the faults they take) and of the collect,
 * per method.  Printed as a table; under TCG only the ratios mean anything.
 */
static void bench(void)
{
	static const double fractions[] = { 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0 };
	static const unsigned methods[] = { DIRTYMAP_COLLECT_MKWRITE, DIRTYMAP_COLLECT_PAGETABLE };
	const uint64_t npages = 16384;
	const int rounds = 8;
	double total[2][sizeof(fractions) / sizeof(fractions[0])] = { { 0 } };
	uint64_t *bm = calloc(words(npages), 8), *wr = calloc(words(npages), 8);
	int fd = new_memfd("dm-bench", npages), t = track_or_die(fd, 0, npages);
	char *p = map(fd, 0, npages, MAP_SHARED);
	unsigned m, f;

	memset(p, 1, npages * psz);
	note("bench: a %" PRIu64 " MiB memfd, %d rounds per cell; ratios only under TCG",
	     npages * psz >> 20, rounds);
	note("bench: %-10s %8s %16s %14s %14s", "method", "written", "write us/page",
	     "collect ms", "round ms");
	for (m = 0; m < 2; m++) {
		if (!(semantics & DIRTYMAP_RECORDS_EVERY_WRITE) &&
		    methods[m] == DIRTYMAP_COLLECT_MKWRITE)
			continue;
		for (f = 0; f < sizeof(fractions) / sizeof(fractions[0]); f++) {
			uint64_t nw = (uint64_t)(fractions[f] * npages), s = 42 + f, i, k;
			double tw = 0, tc = 0, t0;
			int r;

			if (!nw)
				nw = 1;
			collect_flags(t, 0, npages, bm, DIRTYMAP_COLLECT_CLEAN | methods[m], NULL);
			for (r = 0; r < rounds; r++) {
				memset(wr, 0, words(npages) * 8);
				for (k = 0; k < nw; k++) {
					do
						i = rng(&s) % npages;
					while (nw < npages && test_bit(wr, i));
					set_bit(wr, i);
				}
				t0 = now();
				for (i = 0; i < npages; i++)
					if (test_bit(wr, i))
						p[i * psz] ^= 1;
				tw += now() - t0;
				t0 = now();
				collect_flags(t, 0, npages, bm,
					      DIRTYMAP_COLLECT_CLEAN | methods[m], NULL);
				tc += now() - t0;
			}
			total[m][f] = (tw + tc) / rounds;
			note("bench: %-10s %7.1f%% %16.2f %14.3f %14.3f",
			     methods[m] == DIRTYMAP_COLLECT_MKWRITE ? "mkwrite" : "page-table",
			     fractions[f] * 100, tw / rounds / nw * 1e6, tc / rounds * 1e3,
			     total[m][f] * 1e3);
		}
	}
	if (semantics & DIRTYMAP_RECORDS_EVERY_WRITE) {
		for (f = 0; f < sizeof(fractions) / sizeof(fractions[0]); f++)
			note("bench: written %5.1f%%: mkwrite round / page-table round = %.2f",
			     fractions[f] * 100, total[0][f] / total[1][f]);
		for (f = 0; f < sizeof(fractions) / sizeof(fractions[0]) &&
			    total[0][f] <= total[1][f]; f++)
			;
		if (f < sizeof(fractions) / sizeof(fractions[0]))
			note("bench: crossover: page-table is cheaper from %.1f%% written on",
			     fractions[f] * 100);
		else
			note("bench: crossover: mkwrite is cheaper at every fraction measured");
	}
	close(t);
	munmap(p, npages * psz);
	close(fd);
	free(bm);
	free(wr);
}

/* lines of the kernel log since @since (a marker) that say the kernel is unhappy */
static int kernel_complaints(const char *since)
{
	static const char *const bad[] = { "Bad page", "BUG:", "WARNING:", "Oops",
		"general protection", "page table check", NULL };
	int len = klogctl(10, NULL, 0), n, found = 0;
	char *buf, *start, *line;

	if (len <= 0 || !(buf = malloc(len + 1)))
		return -1;
	n = klogctl(3, buf, len);
	if (n < 0) {
		free(buf);
		return -1;
	}
	buf[n] = 0;
	start = buf;
	for (char *m = strstr(buf, since); m; m = strstr(m + 1, since))
		start = m;
	for (line = strtok(start, "\n"); line; line = strtok(NULL, "\n"))
		for (int i = 0; bad[i]; i++)
			if (strstr(line, bad[i])) {
				if (found++ < 20)
					note("kernel: %s", line);
				break;
			}
	free(buf);
	return found;
}

int main(int argc, char **argv)
{
	static const char marker[] = "dirtymap-test: start";
	long reclaim = 0, cg = 0;
	int rounds = 20, do_bench = 0, i, k;

	setvbuf(stdout, NULL, _IOLBF, 0);
	psz = sysconf(_SC_PAGESIZE);
	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--reclaim") && i + 1 < argc)
			reclaim = atol(argv[++i]);
		else if (!strcmp(argv[i], "--cgroup") && i + 1 < argc)
			cg = atol(argv[++i]);
		else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
			rounds = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--odirect") && i + 1 < argc)
			odirect_path = argv[++i];
		else if (!strcmp(argv[i], "--bench"))
			do_bench = 1;
		else {
			fprintf(stderr, "usage: %s [--reclaim MiB] [--cgroup MiB] [--rounds N] "
				"[--odirect PATH] [--bench]\n", argv[0]);
			return 2;
		}
	}
	dm = open("/dev/dirtymap", O_RDWR);
	if (dm < 0) {
		printf("1..0 # SKIP /dev/dirtymap: %s\n", strerror(errno));
		return 77;
	}
	k = open("/dev/kmsg", O_WRONLY);
	if (k >= 0) {
		dprintf(k, "%s\n", marker);
		close(k);
	}
	test_track();
	test_refused();
	test_multiprocess();
	test_peek();
	test_two_trackers();
	test_big_range();
	test_private_mapping();
	test_close_during_collect();
	test_file_closed();
	test_huge();
	test_oracle();
	if (reclaim)
		test_reclaim(reclaim, cg, rounds);
	if (do_bench)
		bench();
	k = kernel_complaints(marker);
	ok(!k, "the kernel logged no error meanwhile (%d lines%s)", k,
	   k < 0 ? ": cannot read the kernel log" : "");
	printf("1..%d\n# %d failed, %d known limits (TODO)\n", ntest, nfail, ntodo);
	return nfail ? 1 : 0;
}
