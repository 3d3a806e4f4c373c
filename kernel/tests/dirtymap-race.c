// SPDX-License-Identifier: GPL-2.0
/*
 * dirtymap-race: collects of /dev/dirtymap racing page migration and
 * compaction, run as root in a qemu guest with two NUMA nodes.
 *
 *   dirtymap-race [--seconds N] [--pages N] [--legacy] [--no-collect]
 *
 * A writer process keeps writing every page of a memfd while another moves
 * those pages between NUMA nodes 0 and 1 with move_pages(2), a third writes
 * /proc/sys/vm/compact_memory, and this process collects and cleans the
 * range through /dev/dirtymap as fast as it can.  A collect that touches a
 * page-table entry while it is a migration entry corrupts it (a migration
 * entry's pte_dirty() is true on x86-64): the kernel then logs "Bad page
 * map", an oops, or the writer dies.  On x86-64 Linux 6.12 the damage is
 * quieter: the bits that pte_mkclean() and pte_wrprotect() clear in a
 * migration entry are an unused bit of its offset (masked out of the pfn)
 * and its soft-dirty bit, so the page comes back without the soft-dirty bit
 * of the write that preceded the migration: a soft-dirty user of the same
 * process (CRIU, libdirty's soft-dirty backend) misses that write.  So a
 * fourth process checks soft-dirty as such a user would: it clears the
 * writer's soft-dirty bits (clear_refs 4), waits for the writer to write
 * every page once more, and requires every page to be soft-dirty in
 * /proc/PID/pagemap.  The clear is made while nothing else moves: the
 * writer, the migrator and the compactor pause, and NUMA balancing and
 * proactive compaction are off while the test runs.  Soft-dirty itself
 * loses writes otherwise: clear_refs leaves a writable migration entry
 * writable (the page comes back writable and its next write sets no
 * soft-dirty bit), and in the guest a writer running during the clear
 * left most pages writable and clean for good (both seen with --no-collect
 * and no pause; libdirty's soft-dirty backend stops writers for the same
 * reason).  Passes when the writer survived, the file holds exactly
 * what it wrote last, every collect succeeded, no written page lost its
 * soft-dirty bit, every collect after which the writer made a whole pass
 * over the file before the next one reported every page (no write missed
 * through migration and compaction), and the kernel logged no error while
 * it ran.
 *
 * The device's interface is found at run time: the tracker interface
 * (DIRTYMAP_IOC_TRACK) or, with --legacy or when that is refused with
 * ENOTTY, version 1 of the module (DIRTYMAP_IOC_CLEAN_RECORD on the file),
 * which this test exists to show unsafe.
 *
 * --no-collect runs everything but the collects: the control that shows the
 * checks hold without the device.
 *
 * Output: TAP-like "ok N - ..." lines; exit 0 pass, 1 fail, 77 skip (no
 * device, or fewer than two NUMA nodes).
 *
 * Build: cc -O2 -Wall -I kernel/include/uapi -o dirtymap-race dirtymap-race.c
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
#include <sys/klog.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/dirtymap.h>

#ifndef MPOL_MF_MOVE_ALL
#define MPOL_MF_MOVE_ALL (1 << 2)
#endif

/* version 1 of the module's interface (kernel/ before the trackers) */
struct dirtymap_v1_range {
	__s32 fd;
	__u32 flags;
	__u64 offset, length, bitmap, dirty, changed, reserved[2];
};
#define DIRTYMAP_V1_WRITE_PROTECT _IOWR(DIRTYMAP_IOC_MAGIC, 1, struct dirtymap_v1_range)
#define DIRTYMAP_V1_CLEAN_RECORD  _IOWR(DIRTYMAP_IOC_MAGIC, 2, struct dirtymap_v1_range)

#define MARKER "dirtymap-race: start"

struct control {
	volatile int stop;
	volatile int writer_ready;
	volatile uint64_t writer_rounds;   /* completed passes over the file */
	volatile uint64_t migrated, migrate_calls, migrate_errors;
	volatile uint64_t compactions;
	volatile uint64_t sd_checks, sd_lost;
	/* the soft-dirty checker asks the others to pause */
	volatile int pause, migrator_idle, compactor_idle, writer_idle;
	volatile uintptr_t writer_base;
};

static long psz;
static int ntest, nfail;

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

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t stamp(uint64_t round, uint64_t page)
{
	return (round << 32) ^ page ^ 0xd1e7000000000000ull;
}

static void writer(struct control *c, int fd, uint64_t npages)
{
	char *p = mmap(NULL, npages * psz, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	uint64_t round, i;

	if (p == MAP_FAILED)
		_exit(2);
	c->writer_base = (uintptr_t)p;
	__sync_synchronize();
	c->writer_ready = 1;
	for (round = 1;; round++) {
		int last;

		while (c->pause && !c->stop)
			c->writer_idle = 1;
		c->writer_idle = 0;
		__sync_synchronize();
		if (c->pause && !c->stop)
			continue;
		last = c->stop;

		for (i = 0; i < npages; i++) {
			volatile uint64_t *w = (uint64_t *)(p + i * psz);

			w[0] = stamp(round, i);
			w[psz / 8 - 1] = stamp(round, i);
		}
		c->writer_rounds = round;
		if (last)
			break;
	}
	_exit(0);
}

static void migrator(struct control *c, pid_t target, uint64_t npages)
{
	void **pages = calloc(npages, sizeof(*pages));
	int *nodes = calloc(npages, sizeof(int)), *status = calloc(npages, sizeof(int));
	uint64_t round, i;

	if (!pages || !nodes || !status)
		_exit(2);
	for (i = 0; i < npages; i++)
		pages[i] = (void *)(c->writer_base + i * psz);
	for (round = 0; !c->stop; round++) {
		while (c->pause && !c->stop) {
			c->migrator_idle = 1;
			usleep(100);
		}
		c->migrator_idle = 0;
		__sync_synchronize();
		if (c->pause)
			continue;
		for (i = 0; i < npages; i++)
			nodes[i] = (int)((round + i) & 1);
		if (syscall(SYS_move_pages, target, npages, pages, nodes, status,
			    MPOL_MF_MOVE_ALL) < 0) {
			c->migrate_errors++;
			continue;
		}
		c->migrate_calls++;
		for (i = 0; i < npages; i++)
			if (status[i] == nodes[i])
				c->migrated++;
	}
	_exit(0);
}

static void compactor(struct control *c)
{
	while (!c->stop) {
		int fd;

		while (c->pause && !c->stop) {
			c->compactor_idle = 1;
			usleep(100);
		}
		c->compactor_idle = 0;
		__sync_synchronize();
		if (c->pause)
			continue;
		fd = open("/proc/sys/vm/compact_memory", O_WRONLY);

		if (fd < 0)
			_exit(0);
		if (write(fd, "1", 1) == 1)
			c->compactions++;
		close(fd);
	}
	_exit(0);
}

static int write_string(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY), rc = -1;

	if (fd >= 0) {
		rc = write(fd, s, strlen(s)) == (ssize_t)strlen(s) ? 0 : -1;
		close(fd);
	}
	return rc;
}

/* Whether soft-dirty works here: a page written after clear_refs 4 shows bit 55. */
static int soft_dirty_works(void)
{
	volatile char *p = mmap(NULL, psz, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t e = 0;
	int fd, works = 0;

	if (p == MAP_FAILED)
		return 0;
	p[0] = 1;
	fd = open("/proc/self/pagemap", O_RDONLY);
	if (fd >= 0 && !write_string("/proc/self/clear_refs", "4")) {
		p[0] = 2;
		works = pread(fd, &e, 8, (uintptr_t)p / psz * 8) == 8 && (e >> 55 & 1);
	}
	if (fd >= 0)
		close(fd);
	munmap((void *)p, psz);
	return works;
}

/*
 * Clear the writer's soft-dirty bits, wait for it to write every page once
 * more, and count the pages that are not soft-dirty: each is a write whose
 * soft-dirty bit a collect destroyed in a migration entry.
 */
static void soft_dirty_checker(struct control *c, pid_t target, uint64_t npages)
{
	char path[64];
	uint64_t *pm = calloc(npages, 8), i;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)target);
	fd = open(path, O_RDONLY);
	if (!pm || fd < 0)
		_exit(2);
	snprintf(path, sizeof(path), "/proc/%d/clear_refs", (int)target);
	while (!c->stop) {
		uint64_t r0;
		int failed;

		/* no migration under way while the soft-dirty bits are cleared */
		c->pause = 1;
		while (!c->stop && !(c->migrator_idle && c->compactor_idle && c->writer_idle))
			usleep(100);
		r0 = c->writer_rounds;
		failed = write_string(path, "4");
		c->pause = 0;
		if (failed)
			_exit(2);
		/* the writer was between passes: the next one began after the clear */
		while (!c->stop && c->writer_rounds < r0 + 1)
			usleep(200);
		if (c->stop)
			break;
		if (pread(fd, pm, npages * 8, c->writer_base / psz * 8) != (ssize_t)(npages * 8))
			_exit(2);
		for (i = 0; i < npages; i++) {
			if ((pm[i] >> 63 & 1) && !(pm[i] >> 55 & 1)) {
				if (c->sd_lost++ < 5)
					note("soft-dirty lost: page %" PRIu64 " pagemap %#" PRIx64
					     " (writer pass %" PRIu64 ", cleared before pass %"
					     PRIu64 ")", i, pm[i], c->writer_rounds, r0 + 1);
			}
		}
		c->sd_checks++;
	}
	_exit(0);
}

/* lines of the kernel log after our marker that say the kernel is unhappy */
static int kernel_complaints(void)
{
	static const char *const bad[] = { "Bad page", "BUG:", "WARNING:", "Oops",
		"general protection", "Bad swap", "page table check", NULL };
	int len = klogctl(10 /* SYSLOG_ACTION_SIZE_BUFFER */, NULL, 0), n, found = 0;
	char *buf, *start, *line;

	if (len <= 0 || !(buf = malloc(len + 1)))
		return -1;
	n = klogctl(3 /* SYSLOG_ACTION_READ_ALL */, buf, len);
	if (n < 0) {
		free(buf);
		return -1;
	}
	buf[n] = 0;
	start = buf;
	for (char *m = strstr(buf, MARKER); m; m = strstr(m + 1, MARKER))
		start = m;
	for (line = strtok(start, "\n"); line; line = strtok(NULL, "\n")) {
		for (int i = 0; bad[i]; i++) {
			if (strstr(line, bad[i])) {
				if (found++ < 20)
					note("kernel: %s", line);
				break;
			}
		}
	}
	free(buf);
	return found;
}

int main(int argc, char **argv)
{
	uint64_t npages = 256, collects = 0, errors = 0, dirty = 0, i, bad = 0;
	uint64_t whole = 0, short_collects = 0, prev_end = 0, first_short = 0;
	int seconds = 20, legacy = 0, no_collect = 0, no_migrate = 0, dm, fd, tracker = -1, st, kmsg, first_err = 0;
	struct dirtymap_track tr = { 0 };
	char saved_knobs[2][32] = { "", "" };
	struct control *c;
	pid_t pw, pm, pc, ps = -1;
	uint64_t *bm;
	double end;

	setvbuf(stdout, NULL, _IOLBF, 0);
	psz = sysconf(_SC_PAGESIZE);
	for (int a = 1; a < argc; a++) {
		if (!strcmp(argv[a], "--seconds") && a + 1 < argc)
			seconds = atoi(argv[++a]);
		else if (!strcmp(argv[a], "--pages") && a + 1 < argc)
			npages = strtoull(argv[++a], NULL, 0);
		else if (!strcmp(argv[a], "--legacy"))
			legacy = 1;
		else if (!strcmp(argv[a], "--no-collect"))
			no_collect = 1;
		else if (!strcmp(argv[a], "--no-migrate"))
			no_migrate = 1;
		else {
			fprintf(stderr, "usage: %s [--seconds N] [--pages N] [--legacy] "
				"[--no-collect]\n", argv[0]);
			return 2;
		}
	}
	dm = open("/dev/dirtymap", O_RDWR);
	if (dm < 0) {
		printf("1..0 # SKIP /dev/dirtymap: %s\n", strerror(errno));
		return 77;
	}
	if (access("/sys/devices/system/node/node1", F_OK)) {
		printf("1..0 # SKIP needs two NUMA nodes (node1 is missing)\n");
		return 77;
	}
	fd = memfd_create("dirtymap-race", 0);
	if (fd < 0 || ftruncate(fd, npages * psz))
		die("memfd");
	if (!legacy) {
		tr.fd = fd;
		tr.length = npages * psz;
		tracker = ioctl(dm, DIRTYMAP_IOC_TRACK, &tr);
		if (tracker < 0 && errno == ENOTTY)
			legacy = 1;
		else if (tracker < 0)
			die("DIRTYMAP_IOC_TRACK");
	}
	note("interface: %s", legacy ? "version 1 (DIRTYMAP_IOC_CLEAN_RECORD on the file)" :
	     "trackers (DIRTYMAP_IOC_TRACK)");
	bm = calloc((npages + 63) / 64, 8);
	c = mmap(NULL, sizeof(*c), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (!bm || c == MAP_FAILED)
		die("memory");
	kmsg = open("/dev/kmsg", O_WRONLY);
	if (kmsg >= 0) {
		dprintf(kmsg, MARKER "\n");
		close(kmsg);
	}

	/* no migration but ours (see soft_dirty_checker()) */
	{
		static const char *const knobs[][2] = {
			{ "/proc/sys/kernel/numa_balancing", "0" },
			{ "/proc/sys/vm/compaction_proactiveness", "0" },
		};

		for (i = 0; i < 2; i++) {
			int kfd = open(knobs[i][0], O_RDWR);
			ssize_t n;

			if (kfd < 0)
				continue;
			n = read(kfd, saved_knobs[i], sizeof(saved_knobs[i]) - 1);
			saved_knobs[i][n > 0 ? n : 0] = 0;
			close(kfd);
			write_string(knobs[i][0], knobs[i][1]);
		}
	}
	pw = fork();
	if (pw < 0)
		die("fork");
	if (!pw)
		writer(c, fd, npages);
	while (!c->writer_ready) {
		if (waitpid(pw, &st, WNOHANG) == pw)
			die("the writer exited before it started");
		usleep(1000);
	}
	pm = fork();
	if (pm < 0)
		die("fork");
	if (!pm) {
		if (no_migrate) {
			c->migrated = 1;
			while (!c->stop) {
				c->migrator_idle = 1;
				usleep(1000);
			}
			_exit(0);
		}
		migrator(c, pw, npages);
	}
	pc = fork();
	if (pc < 0)
		die("fork");
	if (!pc) {
		if (no_migrate) {
			while (!c->stop) {
				c->compactor_idle = 1;
				usleep(1000);
			}
			_exit(0);
		}
		compactor(c);
	}
	if (soft_dirty_works()) {
		ps = fork();
		if (ps < 0)
			die("fork");
		if (!ps)
			soft_dirty_checker(c, pw, npages);
	} else {
		note("soft-dirty does not work here: the soft-dirty check is skipped");
	}

	end = now() + seconds;
	while (now() < end) {
		/* a pass that began after the last collect ended, and finished */
		int full = c->writer_rounds >= prev_end + 2, rc;

		if (no_collect) {
			rc = 0;
			usleep(1000);
		} else if (legacy) {
			struct dirtymap_v1_range r = {
				.fd = fd, .length = npages * psz,
				.bitmap = (collects & 1) ? (uintptr_t)bm : 0,
			};

			rc = ioctl(dm, (collects % 3 == 2) ? DIRTYMAP_V1_WRITE_PROTECT :
				   DIRTYMAP_V1_CLEAN_RECORD, &r);
			dirty += r.dirty;
		} else {
			struct dirtymap_collect col = {
				.offset = 0, .length = npages * psz,
				.bitmap = (uintptr_t)bm, .flags = DIRTYMAP_COLLECT_CLEAN,
			};

			/* both modes of a kernel that has them */
			if (collects % 64 == 32)
				col.flags |= DIRTYMAP_COLLECT_PAGETABLE;
			else if (collects % 64 == 0)
				col.flags |= DIRTYMAP_COLLECT_MKWRITE;
			rc = ioctl(tracker, DIRTYMAP_IOC_COLLECT, &col);
			dirty += col.dirty;
			if (!rc && full && collects) {
				whole++;
				if (col.dirty < npages && short_collects++ == 0)
					first_short = col.dirty;
			}
		}
		prev_end = c->writer_rounds;
		if (rc < 0 && errors++ == 0)
			first_err = errno;
		collects++;
		if (waitpid(pw, &st, WNOHANG) == pw) {
			pw = -1;
			break;
		}
	}
	c->stop = 1;
	if (pw > 0 && waitpid(pw, &st, 0) < 0)
		die("waitpid");
	waitpid(pm, NULL, 0);
	waitpid(pc, NULL, 0);
	if (ps > 0)
		waitpid(ps, NULL, 0);
	if (saved_knobs[0][0])
		write_string("/proc/sys/kernel/numa_balancing", saved_knobs[0]);
	if (saved_knobs[1][0])
		write_string("/proc/sys/vm/compaction_proactiveness", saved_knobs[1]);

	note("%" PRIu64 " collects (%" PRIu64 " pages reported), %" PRIu64 " move_pages calls "
	     "moving %" PRIu64 " pages (%" PRIu64 " failed calls), %" PRIu64 " compactions, %"
	     PRIu64 " writer passes", collects, dirty, c->migrate_calls, c->migrated,
	     c->migrate_errors, c->compactions, c->writer_rounds);
	ok(c->migrated > 0, "pages were migrated between the two nodes meanwhile");
	ok(!errors, "every collect succeeded (%" PRIu64 " failed%s%s)", errors,
	   errors ? ": first " : "", errors ? strerror(first_err) : "");
	ok(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the writer survived (status %#x)", st);
	if (!legacy && !no_collect)
		ok(whole > 0 && !short_collects, "every page reported by each of the %" PRIu64
		   " collects after a whole pass of the writer (%" PRIu64 " reported fewer%s)",
		   whole, short_collects, short_collects ? ", the first " : "");
	if (short_collects)
		note("first short collect: %" PRIu64 " of %" PRIu64 " pages", first_short, npages);
	if (ps > 0)
		ok(c->sd_checks > 0 && !c->sd_lost, "no write lost its soft-dirty bit (%" PRIu64
		   " checks of every page, %" PRIu64 " written pages not soft-dirty)",
		   c->sd_checks, c->sd_lost);
	else
		printf("ok %d - no write lost its soft-dirty bit # SKIP soft-dirty does not "
		       "work on this kernel\n", ++ntest);
	for (i = 0; i < npages && WIFEXITED(st); i++) {
		uint64_t b[2];

		if (pread(fd, &b[0], 8, i * psz) != 8 ||
		    pread(fd, &b[1], 8, (i + 1) * psz - 8) != 8)
			die("pread");
		if (b[0] != stamp(c->writer_rounds, i) || b[1] != stamp(c->writer_rounds, i))
			if (bad++ < 8)
				note("page %" PRIu64 ": %#" PRIx64 " %#" PRIx64 ", wrote %#" PRIx64,
				     i, b[0], b[1], stamp(c->writer_rounds, i));
	}
	ok(WIFEXITED(st) && !bad, "the file holds exactly the writer's last pass (%" PRIu64
	   " pages differ)", bad);
	{
		int k = kernel_complaints();

		ok(k == 0, "the kernel logged no error meanwhile (%d lines%s)", k,
		   k < 0 ? ": cannot read the kernel log" : "");
	}
	printf("1..%d\n# %d failed\n", ntest, nfail);
	if (tracker >= 0)
		close(tracker);
	return nfail ? 1 : 0;
}
