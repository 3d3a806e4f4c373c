/* SPDX-License-Identifier: MIT */
/*
 * The cost model: each region is tracked the cheaper of two ways that keep
 * the contract, and the choice follows what they cost here.
 *
 *   protect  the backend traps the first write to each clean page (a fault:
 *            about a microsecond under uffd-async on anonymous memory, tens
 *            of them where a filesystem's page_mkwrite runs, more where user
 *            space resolves it), and a collect asks it which pages took one;
 *   compare  writes are not trapped; a collect reads every page and compares
 *            it with what it held at its last clean (compare.c): the cost of
 *            reading the region, whatever was written.
 *
 * What each costs is measured, per region: a whole-region collect-and-clean
 * is timed; under protect the faults of the pages it reports are added at
 * the cost of one fault of this backend on this kind of memory, measured
 * once per tracker on scratch memory of the same kind (a file in the same
 * directory, for a mapped file); under compare the pages found changed are
 * priced the same way to tell what protect would have cost.  The cost of
 * comparing is the tracker's measured rate of reading, times the region's
 * pages.  A region changes way when the other one has been the cheaper by a
 * quarter at ADAPT_STREAK whole-region collect-and-cleans in a row, and not
 * sooner than ADAPT_SETTLE of them after its last change (twice as many
 * after each change that came that soon: a region at the break-even point
 * does not flip at every chance): every collect re-measures, so a region
 * whose writes change is followed.
 *
 * Only whole-region collect-and-cleans decide and switch.  Going to compare:
 * the region's pages are recorded first, then the collect runs as before
 * (reporting what the backend caught), then the backend stops trapping: a
 * write after the record is either caught by that collect or differs from
 * the record at the next.  Going back: the backend protects the whole region
 * first, then the comparison reports what changed since the last collect; a
 * write after the protection is caught by the backend.  Pages a full sink
 * left unexamined are handed to the backend as dirty.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "libdirty-int.h"

#define ADAPT_STREAK 3
#define ADAPT_SETTLE 4
#define ADAPT_SETTLE_MAX 64
/* scratch memory for measuring a backend: pages, of which some are written */
#define CALIBRATION_PAGES 512
#define CALIBRATION_WRITES 64
#define CALIBRATION_ROUNDS 3
/* A filesystem's write fault where no scratch file can be made beside the file (ext4: 30-40 us). */
#define FILE_FAULT_DEFAULT_NS 30000

uint64_t dirty_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- measuring: reading, and one fault ---- */

/*
 * Private anonymous scratch memory between two PROT_NONE guard pages, so that
 * it cannot merge with a neighbour: the kernel marks a mapping that grows by
 * a merge soft-dirty as a whole, and a region just tracked beside the scratch
 * would read all dirty under soft-dirty.  MAP_FAILED if none can be made.
 */
static void *scratch_anon(size_t len)
{
	size_t page = dirty_page_size();
	char *mem = mmap(NULL, len + 2 * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (mem == MAP_FAILED)
		return MAP_FAILED;
	if (mprotect(mem + page, len, PROT_READ | PROT_WRITE) < 0) {
		munmap(mem, len + 2 * page);
		return MAP_FAILED;
	}
	return mem + page;
}

static void scratch_anon_free(void *mem, size_t len)
{
	munmap((char *)mem - dirty_page_size(), len + 2 * dirty_page_size());
}

/* Nanoseconds to hash a page, from a scratch buffer larger than the caches. */
static uint64_t calibrate_hash(struct dirty_tracker *t)
{
	size_t page = dirty_page_size(), len = 8u << 20, n = len / page;
	unsigned char *buf = scratch_anon(len);
	uint64_t t0, best = UINT64_MAX, sum = 0;

	if (buf == MAP_FAILED)
		return 1000; /* a guess: a microsecond a page */
	memset(buf, 0x5a, len);
	for (int round = 0; round < 2; round++) {
		t0 = dirty_now_ns();
		for (size_t i = 0; i < n; i++)
			sum += dirty_hash_page(buf + i * page, page, &t->hash_key);
		if (dirty_now_ns() - t0 < best)
			best = dirty_now_ns() - t0;
	}
	scratch_anon_free(buf, len);
	(void)sum;
	return best / n ? best / n : 1;
}

/*
 * A file's pages written by write(2) in one call, as a program's data would
 * be: the page cache takes them in folios as large as the filesystem allows
 * (ext4: up to 2 MiB), and what a write fault costs there depends on that
 * (page_mkwrite prepares the whole folio: 30 us a 4 KiB page on a 2 MiB
 * folio here, a few on a 4 KiB one).
 */
static int fill(int fd, size_t len)
{
	void *buf = malloc(len);
	ssize_t n;

	if (!buf)
		return -1;
	memset(buf, 1, len);
	n = pwrite(fd, buf, len, 0);
	free(buf);
	return n == (ssize_t)len ? 0 : -1;
}

/* len bytes mapped at an address aligned to len (a huge page's worth: the kernel may map it huge). */
static void *map_aligned(size_t len, int flags, int fd)
{
	char *area = mmap(NULL, 2 * len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
			  -1, 0);
	uintptr_t aligned;
	void *mem;

	if (area == MAP_FAILED)
		return MAP_FAILED;
	aligned = ((uintptr_t)area + len - 1) & ~(uintptr_t)(len - 1);
	mem = mmap((void *)aligned, len, PROT_READ | PROT_WRITE, flags | MAP_FIXED, fd, 0);
	if (mem == MAP_FAILED) {
		int err = errno;

		munmap(area, 2 * len);
		errno = err;
		return MAP_FAILED;
	}
	/* the reservation around it goes */
	if ((char *)aligned > area)
		munmap(area, aligned - (uintptr_t)area);
	munmap((char *)aligned + len, (uintptr_t)area + 2 * len - aligned - len);
	return mem;
}

/*
 * Scratch memory of r's kind, CALIBRATION_PAGES long (a file beside path
 * for a mapped file); -errno if none can be made.
 */
static int scratch_map(const struct dirty_region *r, char *path, void **ret, size_t *ret_len)
{
	size_t len = CALIBRATION_PAGES * dirty_page_size();
	int fd = -1, flags = MAP_SHARED;
	void *mem;

	if (r->kind == DIRTY_MEM_ANON) {
		mem = scratch_anon(len);
		if (mem == MAP_FAILED)
			return -errno;
		*ret = mem;
		*ret_len = len;
		return 0;
	} else if (r->kind == DIRTY_MEM_SHMEM) {
		fd = memfd_create("libdirty-calibration", MFD_CLOEXEC);
	} else {
		if (path[0] != '/')
			return -ENOENT;
		/* an unnamed file beside the mapped one: the same filesystem */
		fd = open(dirname(path), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	}
	if (fd < 0 || ftruncate(fd, (off_t)len) < 0 ||
	    (r->kind == DIRTY_MEM_FILE_SHARED && fill(fd, len) < 0)) {
		int err = -errno;

		if (fd >= 0)
			close(fd);
		return err;
	}
	mem = map_aligned(len, flags, fd);
	if (fd >= 0)
		close(fd);
	if (mem == MAP_FAILED)
		return -errno;
	*ret = mem;
	*ret_len = len;
	return 0;
}

/* A whole-region collect-and-clean of fake, timed: ns, or 0 if it failed. */
static uint64_t timed_collect(struct dirty_tracker *t, struct dirty_region *fake)
{
	struct dirty_range out[CALIBRATION_PAGES];
	struct dirty_sink sink = { .out = out, .max = CALIBRATION_PAGES };
	uint64_t t0 = dirty_now_ns();
	uintptr_t done;

	if (fake->backend->collect(t, fake, fake->start, fake->end, true, &sink, &done))
		return 0;
	return dirty_now_ns() - t0;
}

/*
 * What trapping costs under r's backend on memory of r's kind: scratch
 * memory of that kind (a file beside path for a mapped file) is tracked,
 * written all over and cleaned; then a collect of it clean (its cost a page:
 * the scan), CALIBRATION_WRITES pages written (a fault each) and collected
 * (their share of a collect).
 */
static void calibrate_faults(struct dirty_tracker *t, const struct dirty_region *r, char *path,
			     struct dirty_fault_cost *ret)
{
	size_t page = dirty_page_size(), len = 0, step = CALIBRATION_PAGES / CALIBRATION_WRITES;
	uint64_t t0, scan, write, dirty;
	struct dirty_region fake;
	void *mem = NULL;
	int err = scratch_map(r, path, &mem, &len);

	if (err) {
		dirty_log(t, LOG_INFO, "cost: no scratch memory beside %#lx (%s): a file's write "
			  "fault is taken as %d us", (unsigned long)r->start, strerror(-err),
			  FILE_FAULT_DEFAULT_NS / 1000);
		if (r->kind == DIRTY_MEM_FILE_SHARED)
			ret->write_ns = FILE_FAULT_DEFAULT_NS;
		return;
	}
	fake = *r;
	fake.start = (uintptr_t)mem;
	fake.end = fake.start + len;
	fake.priv = NULL;
	fake.compare = NULL;
	memset(mem, 1, len); /* every page present */
	if (r->backend->track(t, &fake) == 0) {
		memset(mem, 2, len); /* the faults of a first write, outside the timing */
		err = r->backend->clean(t, &fake, fake.start, fake.end);
		/*
		 * The least of a few rounds: a round the scheduler interrupted
		 * (other threads, other programs) measures them, not the backend.
		 */
		for (int round = 0; !err && round < CALIBRATION_ROUNDS; round++) {
			scan = timed_collect(t, &fake);
			t0 = dirty_now_ns();
			for (size_t i = round; scan && i < CALIBRATION_PAGES; i += step)
				((volatile unsigned char *)mem)[i * page] = (unsigned char)(3 + round);
			write = dirty_now_ns() - t0;
			dirty = scan ? timed_collect(t, &fake) : 0;
			if (!scan || !dirty)
				break;
			if (!round || scan / CALIBRATION_PAGES < ret->scan_ns)
				ret->scan_ns = scan / CALIBRATION_PAGES;
			if (!round || write / CALIBRATION_WRITES < ret->write_ns)
				ret->write_ns = write / CALIBRATION_WRITES;
			if (!round || (dirty > scan ? (dirty - scan) / CALIBRATION_WRITES : 0) < ret->dirty_ns)
				ret->dirty_ns = dirty > scan ? (dirty - scan) / CALIBRATION_WRITES : 0;
		}
		r->backend->untrack(t, &fake);
	}
	if (r->kind == DIRTY_MEM_ANON)
		scratch_anon_free(mem, len);
	else
		munmap(mem, len);
}

/* What trapping costs for r, measured once per backend, kind and device. */
static const struct dirty_fault_cost *fault_cost(struct dirty_tracker *t,
						 const struct dirty_region *r)
{
	struct dirty_fault_cost *f = t->fault_costs;
	char path[PATH_MAX] = "";
	dev_t dev = 0;
	size_t i;

	/*
	 * Only a mapped file's device matters (its scratch is a file beside
	 * it): /proc/self/maps is read for those alone, not at every track.
	 */
	if (r->kind == DIRTY_MEM_FILE_SHARED)
		dirty_mapped_file(r->start, &dev, path, sizeof(path));
	for (i = 0; i < t->nfault_costs; i++)
		if (f[i].backend == r->backend && f[i].kind == r->kind && f[i].dev == dev)
			return &f[i];
	if (i == DIRTY_FAULT_COSTS)
		i = DIRTY_FAULT_COSTS - 1; /* full: the last entry serves the rest */
	else
		t->nfault_costs++;
	f[i] = (struct dirty_fault_cost){ .backend = r->backend, .kind = r->kind, .dev = dev };
	calibrate_faults(t, r, path, &f[i]);
	dirty_log(t, LOG_DEBUG, "cost: under %s on this memory a write fault costs %" PRIu64
		  " ns, a dirty page's collect %" PRIu64 " ns, a clean page's %" PRIu64 " ns; "
		  "reading a page costs %" PRIu64 " ns", r->backend->name, f[i].write_ns,
		  f[i].dirty_ns, f[i].scan_ns, t->hash_ns);
	return &f[i];
}

/* ---- the forced switches of the tests ---- */

#if LIBDIRTY_PROBE_INJECTION
/*
 * $LIBDIRTY_FORCE_WAYS=N (test builds): every region that can change way
 * does so at every Nth whole-region collect-and-clean, whatever it costs, so
 * that the conformance suite runs with switches under it.
 */
static unsigned forced_every(void)
{
	const char *v = secure_getenv("LIBDIRTY_FORCE_WAYS");

	return v ? (unsigned)strtoul(v, NULL, 10) : 0;
}
#else
static unsigned forced_every(void)
{
	return 0;
}
#endif

/* ---- tracking a region ---- */

void dirty_cost_track(struct dirty_tracker *t, struct dirty_region *r)
{
	r->way = DIRTY_WAY_PROTECT;
	if (!t->hash_ns && !(t->flags & DIRTY_TRACKER_NO_COMPARE)) {
		/* without a key, nothing is compared (dirty_compare_possible()) */
		if (dirty_hash_key_new(&t->hash_key) == 0)
			t->hash_ns = calibrate_hash(t);
	}
	if (dirty_compare_possible(t, r))
		r->cost.trap = fault_cost(t, r);
}

/* ---- deciding, at a whole-region collect-and-clean ---- */

static const char *way_name(enum dirty_way way)
{
	return way == DIRTY_WAY_COMPARE ? "compare" : "protect";
}

const char *dirty_way_name(const struct dirty_region *r)
{
	return way_name(r->way);
}

static unsigned settle_of(const struct dirty_cost *c)
{
	return c->settle ? c->settle : ADAPT_SETTLE;
}

/* Record what this collect cost, and whether the other way would have cost less. */
static void cost_account(struct dirty_tracker *t, struct dirty_region *r, uint64_t pages,
			 uint64_t elapsed_ns)
{
	struct dirty_cost *c = &r->cost;
	uint64_t npages = (r->end - r->start) / dirty_page_size(), here, there;
	unsigned every = forced_every();

	if (!dirty_compare_possible(t, r))
		return;
	c->collects++;
	if (r->way == DIRTY_WAY_PROTECT) {
		/* the collect's time has the dirty pages' share; their faults are the writers' */
		here = elapsed_ns + pages * c->trap->write_ns;
		there = npages * t->hash_ns;
	} else {
		uint64_t sample = elapsed_ns / (npages ? npages : 1);

		here = elapsed_ns;
		/*
		 * Reading got its own measure: the tracker's rate follows it,
		 * quickly down and slowly up (a collect the scheduler
		 * interrupted says little of what reading costs).
		 */
		t->hash_ns = sample < t->hash_ns ? (t->hash_ns + sample + 1) / 2
						 : (7 * t->hash_ns + sample + 7) / 8;
		there = npages * c->trap->scan_ns + pages * (c->trap->write_ns + c->trap->dirty_ns);
	}
	c->streak = there * 4 < here * 3 ? c->streak + 1 : 0;
	if (every ? c->collects % every == 0
		  : c->streak >= ADAPT_STREAK && c->collects >= settle_of(c))
		c->switch_pending = true;
	if (r->way == DIRTY_WAY_COMPARE && dirty_compare_unknown(r))
		c->switch_pending = true; /* shared memory not resident: it cannot be compared */
}

static void switched(struct dirty_tracker *t, struct dirty_region *r, enum dirty_way way)
{
	unsigned settle = settle_of(&r->cost);

	/*
	 * A way left within twice its settling time: the region's writes sit
	 * near where the two ways cost the same, and each change costs a
	 * whole-region record or protection; the next change waits twice as
	 * long (up to ADAPT_SETTLE_MAX collects).  A way kept longer starts over.
	 */
	r->cost.settle = r->cost.collects < 2 * settle
				 ? (2 * settle < ADAPT_SETTLE_MAX ? 2 * settle : ADAPT_SETTLE_MAX)
				 : ADAPT_SETTLE;
	r->way = way;
	r->cost.collects = 0;
	r->cost.streak = 0;
	r->cost.switch_pending = false;
	t->stats.way_switches++;
	dirty_log(t, LOG_DEBUG, "cost: region %#lx-%#lx is tracked by %s now",
		  (unsigned long)r->start, (unsigned long)r->end, way_name(way));
}

int dirty_cost_collect(struct dirty_tracker *t, struct dirty_region *r, uintptr_t start,
		       uintptr_t end, bool clean, struct dirty_sink *sink, uintptr_t *done)
{
	bool whole = clean && start == r->start && end == r->end;
	bool to_compare = whole && r->way == DIRTY_WAY_PROTECT && r->cost.switch_pending;
	bool to_protect = whole && r->way == DIRTY_WAY_COMPARE && r->cost.switch_pending;
	uint64_t pages = sink->pages, t0 = dirty_now_ns();
	int err;

	if (to_compare) {
		/* the record first: a write after it is caught now, or differs next time */
		err = dirty_compare_new(t, r);
		if (!err)
			err = dirty_compare_clean(t, r, r->start, r->end);
		if (err) {
			dirty_compare_free(r);
			r->cost.switch_pending = false;
			to_compare = false;
		}
	}
	if (to_protect) {
		/* protected first: what the comparison misses from here, the backend catches */
		err = r->backend->clean(t, r, r->start, r->end);
		if (err)
			to_protect = false;
	}
	if (r->way == DIRTY_WAY_COMPARE)
		err = dirty_compare_collect(t, r, start, end, clean, sink, done);
	else
		err = r->backend->collect(t, r, start, end, clean, sink, done);
	if (to_protect) {
		/* what a full sink left unexamined is dirty for the backend now */
		if (*done < r->end)
			r->backend->redirty(t, r, *done, r->end);
		dirty_compare_free(r);
		switched(t, r, DIRTY_WAY_PROTECT);
		return err;
	}
	if (to_compare) {
		if (err || *done != r->end) {
			dirty_compare_free(r); /* not a whole collect: stay, try again next time */
		} else {
			r->backend->unprotect(t, r);
			switched(t, r, DIRTY_WAY_COMPARE);
		}
		return err;
	}
	if (!err && whole && *done == r->end)
		cost_account(t, r, sink->pages - pages, dirty_now_ns() - t0);
	return err;
}
