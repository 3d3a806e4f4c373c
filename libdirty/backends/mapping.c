/* SPDX-License-Identifier: MIT */
/*
 * The mapping backend: the kernel addition of kernel/ (/dev/dirtymap).
 *
 * For each tracked range of a shmem file the kernel keeps a tracker: a
 * descriptor with a bitmap of its own, in which it records every write to
 * the range, by any process (DIRTYMAP_RECORDS_EVERY_WRITE, the patched
 * kernel), or the dirty page-table entries it finds at each collect (the
 * module).  Every tracker sees every write: two libdirty trackers of the
 * same memory, in this process or another, take nothing from each other.
 *
 * The kernel's collect-and-clean takes what it reports, so each range keeps
 * the pages taken but not yet reported and cleaned in a bitmap of its own
 * ("pending"): a collect first moves the kernel's bits into it, then reports
 * from it, and with DIRTY_COLLECT_CLEAN clears exactly the bits it
 * reported.  A write after the kernel's collect is recorded again and seen
 * by the next one, so collect-and-clean is atomic per page as the contract
 * asks.
 *
 * Two kinds of region, one state: dirty_track() of an address range of
 * shared memory tracks the file range behind it (found in /proc/PID/maps
 * and opened through /proc/PID/map_files), and reports addresses of that
 * mapping; dirty_track_file() gives a file region (its key the file, its
 * start and end offsets, r->fd the caller's descriptor), which reports
 * offsets.  The core walks both kinds alike.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <syslog.h>
#include <unistd.h>

#include "libdirty-int.h"
#include "kernel/include/uapi/linux/dirtymap.h"

#define DIRTYMAP_DEVICE "/dev/dirtymap"

/* A region's state: the tracked range of its file. */
struct mapping_range {
	int tracker;            /* the kernel's tracker of the range */
	dev_t dev;
	ino_t ino;
	uint64_t offset, end;   /* bytes, page aligned */
	uint64_t *pending;      /* a bit per page: recorded, not yet reported and cleaned */
};

/* ---- the device ---- */

/* What the device says of a tracker: its semantics and limits. */
struct device_info {
	uint64_t semantics;     /* DIRTYMAP_RECORDS_* */
	uint64_t max_pages;
};

/* A kernel tracker of [offset, offset + len) of fd: its descriptor, or -errno. */
static int kernel_track(int dev, int fd, uint64_t offset, uint64_t len,
			struct device_info *info)
{
	struct dirtymap_track a = {
		.fd = fd, .flags = DIRTYMAP_TRACK_CLOEXEC, .offset = offset, .length = len,
	};
	int tracker = ioctl(dev, DIRTYMAP_IOC_TRACK, &a);

	if (tracker < 0)
		return -errno;
	if (info)
		*info = (struct device_info){ a.semantics, a.max_pages };
	return tracker;
}

/*
 * /dev/dirtymap, open, with the tracker interface checked on a memfd of one
 * page: the descriptor, or -errno and why.
 */
static int device_open(struct device_info *info, char *why, size_t why_len)
{
	int dev, fd, tracker, err;

	dev = open(DIRTYMAP_DEVICE, O_RDWR | O_CLOEXEC);
	if (dev < 0) {
		err = errno;
		if (err == ENOENT)
			return dirty_reason(why, why_len, -EOPNOTSUPP,
					    "the libdirty kernel addition is not loaded: "
					    DIRTYMAP_DEVICE " does not exist (kernel/: "
					    "insmod dirtymap.ko, or a kernel with the patch)");
		return dirty_reason(why, why_len, err == EACCES ? -EPERM : -err,
				    "cannot open " DIRTYMAP_DEVICE ": %s", strerror(err));
	}
	fd = memfd_create("libdirty-probe", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, (off_t)dirty_page_size()) < 0) {
		err = -errno;
		if (fd >= 0)
			close(fd);
		close(dev);
		return dirty_reason(why, why_len, err, "cannot make a memfd to probe "
				    DIRTYMAP_DEVICE ": %s", strerror(-err));
	}
	tracker = kernel_track(dev, fd, 0, dirty_page_size(), info);
	close(fd);
	if (tracker < 0) {
		close(dev);
		if (tracker == -ENOTTY)
			return dirty_reason(why, why_len, -EOPNOTSUPP,
					    DIRTYMAP_DEVICE " is version 1 of the module, without "
					    "trackers: build and load kernel/dirtymap.ko again");
		return dirty_reason(why, why_len, -EOPNOTSUPP,
				    DIRTYMAP_DEVICE " refuses a tracker of a memfd: %s",
				    strerror(-tracker));
	}
	close(tracker);
	if (info->max_pages < 64)
		return close(dev), dirty_reason(why, why_len, -EOPNOTSUPP,
						DIRTYMAP_DEVICE " takes %" PRIu64 " pages a tracker",
						info->max_pages);
	return dev;
}

static int device_probe(char *why, size_t why_len)
{
	struct device_info info;
	int dev = device_open(&info, why, why_len);

	if (dev < 0)
		return dev;
	close(dev);
	if (info.semantics & DIRTYMAP_RECORDS_EVERY_WRITE)
		return dirty_reason(why, why_len, 0,
				    DIRTYMAP_DEVICE ": shared-memory files across processes, every "
				    "write recorded (a kernel with the patch series)");
	return dirty_reason(why, why_len, 0,
			    DIRTYMAP_DEVICE ": shared-memory files across processes, page-table "
			    "entries only (the module: a write whose entry is gone before the "
			    "collect, and write(2), are not seen)");
}

/* A tracker's state: the device, and what it said of itself. */
struct mapping_state {
	int dev;
	struct device_info info;
};

extern const struct dirty_backend dirty_backend_mapping;

static struct mapping_state *state_of(const struct dirty_tracker *t)
{
	return dirty_backend_state(t, &dirty_backend_mapping);
}

static int mapping_open(struct dirty_tracker *t, void **ret)
{
	struct mapping_state *s = malloc(sizeof(*s));

	(void)t;
	if (!s)
		return -ENOMEM;
	s->dev = device_open(&s->info, NULL, 0);
	if (s->dev < 0) {
		int err = s->dev;

		free(s);
		return err;
	}
	*ret = s;
	return 0;
}

static void mapping_close(struct dirty_tracker *t, void *state)
{
	struct mapping_state *s = state;

	(void)t;
	close(s->dev);
	free(s);
}

static unsigned mapping_sees(struct dirty_tracker *t)
{
	if (!(state_of(t)->info.semantics & DIRTYMAP_RECORDS_EVERY_WRITE))
		return DIRTY_SEES_ALL_PROCESSES;
	return DIRTY_SEES_ALL_PROCESSES | DIRTY_SEES_GONE_MAPPINGS | DIRTY_SEES_FILE_WRITES;
}

static void range_free(struct mapping_range *m)
{
	if (!m)
		return;
	if (m->tracker >= 0)
		close(m->tracker);
	free(m->pending);
	free(m);
}

/* ---- recording ---- */

static uint64_t pages_of(uint64_t bytes)
{
	return bytes / dirty_page_size();
}

/* OR the bits of npages pages, found at page index first of m, into m->pending. */
static void pending_merge(struct mapping_range *m, uint64_t first, const uint64_t *bits,
			  uint64_t npages)
{
	for (uint64_t w = 0; w < (npages + 63) / 64; w++) {
		uint64_t word = bits[w];

		while (word) {
			uint64_t i = first + w * 64 + (uint64_t)__builtin_ctzll(word);

			m->pending[i / 64] |= UINT64_C(1) << (i % 64);
			word &= word - 1;
		}
	}
}

/* Pages one collect ioctl covers: a 4 KiB bitmap. */
#define COLLECT_CHUNK_PAGES (8 * 4096)

/*
 * Move the kernel's dirty bits of [off, end) into m->pending (record), or
 * drop them (record false: a clean).  The kernel cleans what it reports; a
 * call that fails keeps recorded what it did not report (the kernel gives it
 * back), and what it reported before the failure is merged.
 */
static int kernel_clean_record(struct mapping_range *m, uint64_t off, uint64_t end, bool record)
{
	uint64_t total = pages_of(end - off), chunk = COLLECT_CHUNK_PAGES;
	size_t bytes = (size_t)((total < chunk ? total : chunk) + 63) / 64 * sizeof(uint64_t);
	uint64_t *bits = NULL;
	int err = 0;

	if (record) {
		/* not the heap, which another tracker of this process may protect */
		bits = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (bits == MAP_FAILED)
			return -ENOMEM;
	}
	while (off < end) {
		uint64_t npages = pages_of(end - off) < chunk ? pages_of(end - off) : chunk;
		struct dirtymap_collect arg = {
			.offset = off,
			.length = npages * dirty_page_size(),
			.bitmap = (uintptr_t)bits,
			.flags = DIRTYMAP_COLLECT_CLEAN,
		};

		if (ioctl(m->tracker, DIRTYMAP_IOC_COLLECT, &arg) < 0) {
			err = -errno;
			if (record && arg.done)
				pending_merge(m, pages_of(off - m->offset), bits, pages_of(arg.done));
			break;
		}
		if (record && arg.dirty)
			pending_merge(m, pages_of(off - m->offset), bits, npages);
		off += arg.length;
	}
	if (bits)
		munmap(bits, bytes);
	return err;
}

static void pending_clear(struct mapping_range *m, uint64_t off, uint64_t end)
{
	dirty_bits_clear(m->pending, pages_of(off - m->offset), pages_of(end - m->offset));
}

static void pending_set(struct mapping_range *m, uint64_t off, uint64_t end)
{
	dirty_bits_set(m->pending, pages_of(off - m->offset), pages_of(end - m->offset));
}

static int range_clean(struct mapping_range *m, uint64_t off, uint64_t end)
{
	int err = kernel_clean_record(m, off, end, false);

	if (!err)
		pending_clear(m, off, end);
	return err;
}

/*
 * Report the dirty pages of [off, end) of m to sink, as base + (page offset
 * - m->offset), in order, stopping when it is full; with clean, exactly the
 * pages reported become clean.  *done receives the first offset not examined.
 */
static int range_collect(struct mapping_range *m, uint64_t off, uint64_t end, uintptr_t base,
			 bool clean, struct dirty_sink *sink, uint64_t *done)
{
	uint64_t page = dirty_page_size(), i, last = pages_of(end - m->offset);
	int err = kernel_clean_record(m, off, end, true);

	*done = off;
	if (err)
		return err;
	for (i = pages_of(off - m->offset); i < last;) {
		uint64_t j;

		if (!dirty_bits_test(m->pending, i)) {
			i = i % 64 || m->pending[i / 64] ? i + 1 : i + 64;
			continue;
		}
		for (j = i + 1; j < last && dirty_bits_test(m->pending, j); j++)
			;
		if (!dirty_sink_add(sink, base + (uintptr_t)(i * page), base + (uintptr_t)(j * page))) {
			*done = m->offset + i * page;
			return 0;
		}
		if (clean)
			pending_clear(m, m->offset + i * page, m->offset + j * page);
		i = j;
	}
	*done = end;
	return 0;
}

/* A range of fd's file, with a kernel tracker of its own: it starts clean. */
static int range_new(struct dirty_tracker *t, int fd, uint64_t offset, uint64_t end,
		     struct mapping_range **ret)
{
	struct mapping_range *m;
	struct stat st;
	int flags, err;

	flags = fcntl(fd, F_GETFL);
	if (flags < 0)
		return -EBADF;
	if ((flags & O_ACCMODE) == O_RDONLY)
		return -EBADF; /* the kernel needs a writer's descriptor */
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EOPNOTSUPP;
	if (pages_of(end - offset) > state_of(t)->info.max_pages) {
		dirty_log(t, LOG_WARNING, "mapping: a range of %" PRIu64 " pages is more than the "
			  "%" PRIu64 " one kernel tracker covers", pages_of(end - offset),
			  state_of(t)->info.max_pages);
		return -E2BIG;
	}
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->dev = st.st_dev;
	m->ino = st.st_ino;
	m->offset = offset;
	m->end = end;
	m->tracker = kernel_track(state_of(t)->dev, fd, offset, end - offset, NULL);
	m->pending = calloc((pages_of(end - offset) + 63) / 64, sizeof(uint64_t));
	if (m->tracker < 0 || !m->pending) {
		err = m->tracker < 0 ? m->tracker : -ENOMEM;
		goto fail;
	}
	*ret = m;
	return 0;
fail:
	range_free(m);
	return err;
}

/* ---- address regions (struct dirty_backend) ---- */

/* The file behind an address range, as /proc/PID/maps tells it. */
struct maps_file {
	uint64_t first_lo, first_hi; /* the first mapping, for map_files */
	dev_t dev;
	ino_t ino;
	uint64_t offset;             /* the file offset of the range's start */
};

/*
 * Every mapping of [start, end) of pid must be a shared mapping of one file,
 * at contiguous offsets: -EOPNOTSUPP otherwise, -ENOMEM for a hole.
 */
static int maps_lookup(pid_t pid, uintptr_t start, uintptr_t end, struct maps_file *ret)
{
	char path[64], *text, *line, *save = NULL;
	struct maps_file f = { 0 };
	uintptr_t covered = start;
	bool first = true;
	int err;

	snprintf(path, sizeof(path), pid ? "/proc/%d/maps" : "/proc/self/maps", (int)pid);
	err = dirty_read_file(path, &text, NULL);
	if (err)
		return err == -ENOENT ? -ESRCH : err;
	err = -ENOMEM;
	for (line = strtok_r(text, "\n", &save); line && covered < end;
	     line = strtok_r(NULL, "\n", &save)) {
		unsigned int maj, min;
		uint64_t lo, hi, off;
		unsigned long ino;
		char perms[5];

		if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %4s %" SCNx64 " %x:%x %lu", &lo, &hi,
			   perms, &off, &maj, &min, &ino) != 7 || hi <= covered)
			continue;
		if (lo > covered)
			break; /* a hole */
		if (perms[3] != 's' || !ino) {
			err = -EOPNOTSUPP;
			break;
		}
		if (first) {
			f = (struct maps_file){ .first_lo = lo, .first_hi = hi,
						.dev = makedev(maj, min), .ino = (ino_t)ino,
						.offset = off + (start - lo) };
			first = false;
		} else if (makedev(maj, min) != f.dev || (ino_t)ino != f.ino ||
			   off != f.offset + (lo - start)) {
			err = -EOPNOTSUPP; /* another file, or not at the following offsets */
			break;
		}
		covered = hi;
	}
	free(text);
	if (covered < end)
		return err;
	*ret = f;
	return 0;
}

/*
 * The file behind [start, end) of pid's shared memory: a descriptor open for
 * writing, through /proc/PID/map_files (which needs CAP_SYS_ADMIN or
 * CAP_CHECKPOINT_RESTORE: -EPERM otherwise), and the file offset of start.
 */
static int file_of_range(pid_t pid, uintptr_t start, uintptr_t end, int *ret_fd,
			 uint64_t *ret_offset)
{
	struct maps_file f;
	char path[96];
	int fd, err;

	err = maps_lookup(pid, start, end, &f);
	if (err)
		return err;
	if (pid)
		snprintf(path, sizeof(path), "/proc/%d/map_files/%" PRIx64 "-%" PRIx64, (int)pid,
			 f.first_lo, f.first_hi);
	else
		snprintf(path, sizeof(path), "/proc/self/map_files/%" PRIx64 "-%" PRIx64,
			 f.first_lo, f.first_hi);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ESTALE : -errno;
	*ret_fd = fd;
	*ret_offset = f.offset;
	return 0;
}

/*
 * Is the region's memory still the file range it was?  Memory unmapped, or
 * replaced in place (MAP_FIXED, or unmapped and mapped again), is -ESTALE:
 * its writes would otherwise go unseen.  One read of /proc/PID/maps.
 */
static int region_check(struct dirty_tracker *t, struct dirty_region *r)
{
	struct mapping_range *m = r->priv;
	struct maps_file f;
	int err = maps_lookup(t->pid, r->start, r->end, &f);

	if (err == -ESRCH || (!err && f.dev == m->dev && f.ino == m->ino && f.offset == m->offset))
		return err;
	dirty_log(t, LOG_WARNING, "mapping: region %#lx-%#lx was unmapped or replaced",
		  (unsigned long)r->start, (unsigned long)r->end);
	return -ESTALE;
}

/* Is r a file region (dirty_track_file()), not an address range? */
static bool file_region(const struct dirty_region *r)
{
	return !dirty_key_equal(r->key, DIRTY_KEY_MEMORY);
}

static int mapping_track(struct dirty_tracker *t, struct dirty_region *r)
{
	struct mapping_range *m;
	uint64_t offset = 0;
	int fd = -1, err;

	if (file_region(r)) {
		err = range_new(t, r->fd, r->start, r->end, &m);
		if (!err)
			r->priv = m;
		return err;
	}
	/* shared memory; the kernel refuses any other file (-EOPNOTSUPP) */
	if (r->kind != DIRTY_MEM_SHMEM && r->kind != DIRTY_MEM_FILE_SHARED)
		return -EOPNOTSUPP; /* page tables of one process, or hugetlb: not ours */
	err = file_of_range(t->pid, r->start, r->end, &fd, &offset);
	if (err) {
		dirty_log(t, LOG_WARNING, "mapping: no shared-memory file behind %#lx-%#lx: %s%s",
			  (unsigned long)r->start, (unsigned long)r->end, strerror(-err),
			  err == -EPERM ? " (opening /proc/PID/map_files needs CAP_SYS_ADMIN or "
					  "CAP_CHECKPOINT_RESTORE; dirty_track_file() does not)"
					: "");
		return err;
	}
	err = range_new(t, fd, offset, offset + (r->end - r->start), &m);
	close(fd);
	if (err)
		return err;
	r->priv = m;
	return 0;
}

static void mapping_untrack(struct dirty_tracker *t, struct dirty_region *r)
{
	(void)t;
	range_free(r->priv);
	r->priv = NULL;
}

static uint64_t region_offset(const struct dirty_region *r, uintptr_t addr)
{
	const struct mapping_range *m = r->priv;

	return m->offset + (addr - r->start);
}

static int mapping_clean(struct dirty_tracker *t, struct dirty_region *r, uintptr_t start,
			 uintptr_t end)
{
	int err = file_region(r) ? 0 : region_check(t, r);

	return err ? err : range_clean(r->priv, region_offset(r, start), region_offset(r, end));
}

static int mapping_collect(struct dirty_tracker *t, struct dirty_region *r, uintptr_t start,
			   uintptr_t end, bool clean, struct dirty_sink *sink, uintptr_t *done)
{
	uint64_t off_done;
	int err = file_region(r) ? 0 : region_check(t, r);

	if (err)
		return err;
	err = range_collect(r->priv, region_offset(r, start), region_offset(r, end), r->start,
			    clean, sink, &off_done);
	*done = r->start + (uintptr_t)(off_done - ((struct mapping_range *)r->priv)->offset);
	return err;
}

static void mapping_redirty(struct dirty_tracker *t, struct dirty_region *r, uintptr_t start,
			    uintptr_t end)
{
	(void)t;
	pending_set(r->priv, region_offset(r, start), region_offset(r, end));
}

/* ---- can it run here ---- */

static int probe_mapping(pid_t pid, char *why, size_t why_len)
{
	if (pid)
		return dirty_reason(why, why_len, -EOPNOTSUPP,
				    "mapping tracks shared-memory files in every process that "
				    "maps them, not one process's view: track the file "
				    "(dirty_track_file) from a tracker of this process");
	return device_probe(why, why_len);
}

/* ---- the table ---- */

const struct dirty_backend dirty_backend_mapping = {
	.name = "mapping",
	/*
	 * Files in every process that maps them: for memory an answer other
	 * than the others', taken only when asked for by name; every tracker
	 * sees every write, so it claims nothing.
	 */
	.flags = DIRTY_BACKEND_MANUAL | DIRTY_BACKEND_FILES | DIRTY_BACKEND_SHARED,
	.probe = probe_mapping,
	.open = mapping_open,
	.close = mapping_close,
	.track = mapping_track,
	.untrack = mapping_untrack,
	.clean = mapping_clean,
	.collect = mapping_collect,
	/* no unprotect: writes are never trapped, so DIRTY_TRACKER_ADAPTIVE has nothing to save */
	.redirty = mapping_redirty,
	.sees = mapping_sees,
};
