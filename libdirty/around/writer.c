/* SPDX-License-Identifier: MIT */
/*
 * dirty_image_write(): collect regions of a tracker and write one image of
 * the pages (the format is in include/libdirty.h, its code in image.c).
 *
 * The runs are collected first, all of them, because the run table comes
 * before the data.  Then the image is written in file order as a stream of
 * chunks (the header and tables, then the pages), each chunk checksummed as
 * it is produced, by one of two engines that write the same bytes:
 *   - io_uring: up to queue_depth chunks in flight, each one IORING_OP_WRITEV
 *     at an offset computed up front from the descriptor's current offset;
 *   - pwritev: one chunk of up to IOV_MAX iovecs at a time; for a pipe, a
 *     socket or an O_APPEND file, writev in order.
 * The trailer goes last, once every other byte is written.
 *
 * Where the pages come from:
 *   - another process: process_vm_readv() into staging buffers (node-local,
 *     dirty_numa_alloc_local()), one per chunk in flight;
 *   - this process: straight from memory (iovecs point at the pages, no
 *     copy) when the image is collected-and-cleaned and the descriptor
 *     takes positioned writes.  A page written by another thread between
 *     its checksum and the kernel's copy of it would make the image fail
 *     its CRC, so once the data is written the tracker is asked (a collect
 *     without clean) whether any page of the image was written since it was
 *     cleaned; if one was, the data is written again through staging
 *     buffers, whose copy is what is checksummed.  Without
 *     DIRTY_IMAGE_CLEAN the tracker cannot tell, and a stream cannot be
 *     rewritten: those images are staged from the start.  Staged reads of
 *     this process also use process_vm_readv(), so memory unmapped
 *     meanwhile is -EFAULT, not a crash.
 */
#include "config.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#if HAVE_LIBURING
#include <liburing.h>
#endif

#include "libdirty-int.h"

#define IMAGE_FLAGS                                                                      \
	(DIRTY_IMAGE_CLEAN | DIRTY_IMAGE_ALL | DIRTY_IMAGE_PWRITEV | DIRTY_IMAGE_DIRECT |      \
	 DIRTY_IMAGE_EXEC)
#define DEFAULT_QUEUE_DEPTH 8
/* More in flight buys nothing that 4096 chunks of 256 KiB do not. */
#define MAX_QUEUE_DEPTH 4096

/*
 * Chunk sizes.  io_uring: 2 MiB or 512 iovecs per submission, 8 in flight
 * (16 MiB staged at most).  Buffered writes to tmpfs cannot be done without
 * blocking, so each submission goes to an io-wq worker: few large ones beat
 * many small ones (dirty-bench --dump: 256 KiB x 64 was 5x slower than a
 * pwrite loop on tmpfs at 1 % dirty; 2 MiB x 8 is on a par with it there,
 * and ahead on ext4).  pwritev: 4 MiB or IOV_MAX iovecs per call.
 */
#define URING_CHUNK_BYTES (2u * 1024 * 1024)
#define URING_CHUNK_IOV 512u
#define PWRITEV_CHUNK_BYTES (4u * 1024 * 1024)

/* The part of struct dirty_image_options that the first release defined: all of it. */
#define IMAGE_OPTIONS_MIN_SIZE                                                           \
	(offsetof(struct dirty_image_options, queue_depth) + sizeof(unsigned))

static int options_check(const struct dirty_image_options *opts)
{
	if (!opts)
		return 0;
	if (dirty_sized_check(opts, opts->sz, IMAGE_OPTIONS_MIN_SIZE, sizeof(*opts)))
		return -EINVAL;
	if ((opts->flags & ~IMAGE_FLAGS) || opts->queue_depth > MAX_QUEUE_DEPTH)
		return -EINVAL;
	/* a new program's first image holds all of its memory */
	if ((opts->flags & DIRTY_IMAGE_EXEC) && !(opts->flags & DIRTY_IMAGE_ALL))
		return -EINVAL;
	return 0;
}

/* ---- what to write ---- */

struct image_region {
	uintptr_t start, end;
	const char *name;
};

static int region_compare(const void *a, const void *b)
{
	const struct image_region *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

struct run_list {
	struct dirty_range *v;
	size_t n, cap;
	uint64_t pages;
};

static int run_list_reserve(struct run_list *l)
{
	return dirty_grow((void **)&l->v, &l->cap, l->n + 1, sizeof(*l->v));
}

/* Collect [start, end) into l, resuming until the whole range is done. */
static int collect_region(struct dirty_tracker *t, const struct image_region *r, unsigned flags,
			  struct run_list *l)
{
	size_t first = l->n;
	uintptr_t cur = r->start;

	while (cur < r->end) {
		size_t before = l->n;
		void *next;
		ssize_t n;
		int err = run_list_reserve(l);

		if (err)
			return err;
		n = dirty_collect(t, (void *)cur, r->end - cur, flags, l->v + l->n, l->cap - l->n,
				  &next);
		if (n < 0)
			return (int)n;
		l->n += (size_t)n;
		/* a run cut by a full array continues in the next batch: one run again */
		if (n && before > first &&
		    (uintptr_t)l->v[before - 1].start + l->v[before - 1].len ==
			    (uintptr_t)l->v[before].start) {
			l->v[before - 1].len += l->v[before].len;
			memmove(l->v + before, l->v + before + 1,
				(l->n - before - 1) * sizeof(*l->v));
			l->n--;
		}
		cur = (uintptr_t)next;
	}
	for (size_t i = first; i < l->n; i++)
		l->pages += l->v[i].len / dirty_page_size();
	return 0;
}

/*
 * Was a page of the image written since it was collected and cleaned?
 * Then what the kernel copied from memory may differ from what was
 * checksummed.  A collect that fails counts as yes.
 */
static bool image_raced(struct dirty_tracker *t, const struct image_region *regions,
			size_t nregions, const struct run_list *l)
{
	struct dirty_range batch[64];
	size_t k = 0;

	if (!l->n)
		return false;
	for (size_t i = 0; i < nregions; i++) {
		for (uintptr_t cur = regions[i].start; cur < regions[i].end;) {
			void *next;
			ssize_t n = dirty_collect(t, (void *)cur, regions[i].end - cur, 0, batch, 64,
						  &next);

			if (n < 0)
				return true;
			for (ssize_t j = 0; j < n; j++) {
				uintptr_t start = (uintptr_t)batch[j].start, end = start + batch[j].len;

				while (k < l->n && (uintptr_t)l->v[k].start + l->v[k].len <= start)
					k++;
				if (k < l->n && (uintptr_t)l->v[k].start < end)
					return true;
			}
			cur = (uintptr_t)next;
		}
	}
	return false;
}

/* ---- the bytes of the image, in file order, as chunks ---- */

/*
 * Image offsets [fixed_start, fixed_end) come from fixed (the header and
 * tables, or the trailer), [data_start, data_end) from the pages of runs.
 */
struct source {
	const unsigned char *fixed;
	uint64_t fixed_start, fixed_end;
	uint64_t data_start, data_end;
	const struct dirty_range *runs;
	size_t nruns;
	bool staged;
	pid_t pid; /* of the memory, for process_vm_readv */
	bool self; /* pid is this process */
	/* where the next chunk starts */
	uint64_t pos;
	size_t run, run_off;
	uint32_t crc; /* of every byte produced, continued */
};

/* A chunk in flight: the part of it not yet written is iov[first..niov). */
struct slot {
	struct iovec *iov;
	unsigned niov, first;
	uint64_t off; /* image offset of the first byte not yet written */
	size_t left;
	unsigned char *buf; /* staging buffer, buf_len bytes, or NULL */
	size_t buf_len;
};

/* Fill s with the next chunk of src: its length, 0 at the end, or -errno. */
static ssize_t source_next(struct source *src, struct slot *s, size_t max_bytes, unsigned max_iov)
{
	size_t total = 0;

	s->niov = s->first = 0;
	s->off = src->pos;
	if (src->pos < src->fixed_end) {
		total = src->fixed_end - src->pos < max_bytes ? (size_t)(src->fixed_end - src->pos)
							      : max_bytes;
		s->iov[0].iov_base = (void *)(src->fixed + (src->pos - src->fixed_start));
		s->iov[0].iov_len = total;
		s->niov = 1;
		src->crc = dirty_crc32c(src->crc, s->iov[0].iov_base, total);
		goto done;
	}
	if (src->pos < src->data_start)
		src->pos = src->data_start;
	if (src->pos >= src->data_end)
		return 0;
	if (src->staged && !s->buf) {
		s->buf = dirty_numa_alloc_local(max_bytes);
		if (!s->buf)
			return -ENOMEM;
		s->buf_len = max_bytes;
	}
	while (total < max_bytes && s->niov < max_iov && src->run < src->nruns) {
		const struct dirty_range *r = &src->runs[src->run];
		size_t n = r->len - src->run_off;

		if (n > max_bytes - total)
			n = max_bytes - total;
		s->iov[s->niov].iov_base = (char *)r->start + src->run_off;
		s->iov[s->niov++].iov_len = n;
		total += n;
		src->run_off += n;
		if (src->run_off == r->len) {
			src->run++;
			src->run_off = 0;
		}
	}
	if (src->staged) {
		struct iovec local = { .iov_base = s->buf, .iov_len = total };
		ssize_t n = process_vm_readv(src->pid, &local, 1, s->iov, s->niov, 0);

		if (n < 0 && src->self && (errno == ENOSYS || errno == EPERM)) {
			/* a seccomp policy that refuses it even for ourselves */
			n = 0;
			for (unsigned i = 0; i < s->niov; i++) {
				memcpy(s->buf + n, s->iov[i].iov_base, s->iov[i].iov_len);
				n += (ssize_t)s->iov[i].iov_len;
			}
		}
		/* short: a page of the range is no longer mapped */
		if (n != (ssize_t)total)
			return n < 0 ? -errno : -EFAULT;
		s->iov[0] = local;
		s->niov = 1;
		src->crc = dirty_crc32c(src->crc, s->buf, total);
	} else {
		for (unsigned i = 0; i < s->niov; i++)
			src->crc = dirty_crc32c(src->crc, s->iov[i].iov_base, s->iov[i].iov_len);
	}
done:
	src->pos += total;
	s->left = total;
	return (ssize_t)total;
}

/* n bytes of s were written. */
static void slot_advance(struct slot *s, size_t n)
{
	s->off += n;
	s->left -= n;
	while (n) {
		struct iovec *v = &s->iov[s->first];

		if (n >= v->iov_len) {
			n -= v->iov_len;
			s->first++;
		} else {
			v->iov_base = (char *)v->iov_base + n;
			v->iov_len -= n;
			n = 0;
		}
	}
}

/* ---- output ---- */

struct out {
	int fd;
	bool positioned; /* pwritev at base + image offset; else writev in order */
	off_t base;
	struct slot *slots;
	unsigned nslots;
	size_t chunk_bytes;
	unsigned chunk_iov;
#if HAVE_LIBURING
	bool uring;
	struct io_uring ring;
	unsigned *free_slots, nfree;
#endif
};

static int slots_alloc(struct out *o, unsigned n, size_t chunk_bytes, unsigned chunk_iov)
{
	o->slots = calloc(n, sizeof(*o->slots));
	if (!o->slots)
		return -ENOMEM;
	o->nslots = n;
	o->chunk_bytes = chunk_bytes;
	o->chunk_iov = chunk_iov;
	for (unsigned i = 0; i < n; i++) {
		o->slots[i].iov = calloc(chunk_iov, sizeof(struct iovec));
		if (!o->slots[i].iov)
			return -ENOMEM;
	}
	return 0;
}

static void slots_free(struct out *o)
{
	for (unsigned i = 0; o->slots && i < o->nslots; i++) {
		free(o->slots[i].iov);
		if (o->slots[i].buf)
			dirty_numa_free(o->slots[i].buf, o->slots[i].buf_len);
	}
	free(o->slots);
	o->slots = NULL;
}

/* Write all of s, in this thread. */
static int write_slot(struct out *o, struct slot *s)
{
	while (s->left) {
		int cnt = (int)(s->niov - s->first);
		ssize_t n = o->positioned
				    ? pwritev(o->fd, s->iov + s->first, cnt, o->base + (off_t)s->off)
				    : writev(o->fd, s->iov + s->first, cnt);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			/* a non-blocking pipe or socket: wait until it takes more */
			struct pollfd p = { .fd = o->fd, .events = POLLOUT };

			if (poll(&p, 1, -1) < 0 && errno != EINTR)
				return -errno;
			continue;
		}
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		slot_advance(s, (size_t)n);
	}
	return 0;
}

static int pwritev_write(struct out *o, struct source *src)
{
	for (;;) {
		ssize_t n = source_next(src, &o->slots[0], o->chunk_bytes, o->chunk_iov);
		int err;

		if (n <= 0)
			return (int)n;
		err = write_slot(o, &o->slots[0]);
		if (err)
			return err;
	}
}

#if HAVE_LIBURING
/* 0, -ENOMEM (ours), or 1 with *refused: the kernel's -errno from io_uring_queue_init(). */
static int uring_setup(struct out *o, unsigned queue_depth, int *refused)
{
	int err = slots_alloc(o, queue_depth, URING_CHUNK_BYTES, URING_CHUNK_IOV);

	if (err)
		return err;
	o->free_slots = calloc(queue_depth, sizeof(*o->free_slots));
	if (!o->free_slots)
		return -ENOMEM;
	for (unsigned i = 0; i < queue_depth; i++)
		o->free_slots[i] = queue_depth - 1 - i;
	o->nfree = queue_depth;
	err = io_uring_queue_init(queue_depth, &o->ring, 0);
	if (err) {
		*refused = err;
		return 1;
	}
	o->uring = true;
	return 0;
}

static void uring_teardown(struct out *o)
{
	if (o->uring)
		io_uring_queue_exit(&o->ring);
	o->uring = false;
	free(o->free_slots);
	o->free_slots = NULL;
}

/* Queue the unwritten part of s. */
static void uring_queue(struct out *o, struct slot *s)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&o->ring);

	/* at most nslots (the ring's size) are ever prepared and not completed */
	assert(sqe);
	io_uring_prep_writev(sqe, o->fd, s->iov + s->first, s->niov - s->first,
			     (uint64_t)o->base + s->off);
	io_uring_sqe_set_data(sqe, s);
}

/*
 * Keep up to nslots chunks in flight until src is done, then wait for all
 * of them.  After an error nothing new is queued, but what is in flight is
 * waited for: its buffers are ours to free.
 */
static int uring_write(struct out *o, struct source *src)
{
	unsigned inflight = 0, unsubmitted = 0;
	bool more = true;
	int err = 0;

	for (;;) {
		struct io_uring_cqe *cqe;
		struct slot *s;
		int r, res;

		while (!err && more && o->nfree) {
			ssize_t n;

			s = &o->slots[o->free_slots[o->nfree - 1]];
			n = source_next(src, s, o->chunk_bytes, o->chunk_iov);
			if (n < 0)
				err = (int)n;
			if (n <= 0) {
				more = false;
				break;
			}
			o->nfree--;
			uring_queue(o, s);
			inflight++;
			unsubmitted++;
		}
		if (unsubmitted) {
			r = io_uring_submit(&o->ring);
			if (r >= 0) {
				unsubmitted -= (unsigned)r < unsubmitted ? (unsigned)r : unsubmitted;
			} else if (r != -EINTR && r != -EAGAIN && r != -EBUSY) {
				/* never submitted, never completed: forget them */
				if (!err)
					err = r;
				inflight -= unsubmitted;
				unsubmitted = 0;
			}
		}
		if (inflight == unsubmitted) {
			if (!inflight)
				break;
			continue; /* the kernel was short of resources: submit again */
		}
		r = io_uring_wait_cqe(&o->ring, &cqe);
		if (r == -EINTR || r == -EAGAIN)
			continue;
		if (r < 0) {
			/* the ring itself failed: nothing more will complete */
			return err ? err : r;
		}
		s = io_uring_cqe_get_data(cqe);
		res = cqe->res;
		io_uring_cqe_seen(&o->ring, cqe);
		if (res == -EAGAIN || res == -EINTR) {
			res = 0; /* as if nothing was written: again */
		} else if (res < 0) {
			if (!err)
				err = res;
			s->left = 0;
		} else if (res == 0 && s->left) {
			if (!err)
				err = -EIO;
			s->left = 0;
		}
		if (res > 0)
			slot_advance(s, (size_t)res);
		if (s->left && !err) {
			/* a short write: the rest, at its own offset */
			uring_queue(o, s);
			unsubmitted++;
			continue;
		}
		inflight--;
		o->free_slots[o->nfree++] = (unsigned)(s - o->slots);
	}
	return err;
}
#endif

static int out_write(struct out *o, struct source *src)
{
#if HAVE_LIBURING
	if (o->uring)
		return uring_write(o, src);
#endif
	return pwritev_write(o, src);
}

#if HAVE_LIBURING
/* ret->method when io_uring_queue_init() failed; a string that lives forever. */
static const char *uring_refused(int err)
{
	switch (err) {
	case -ENOSYS:
		return "pwritev (io_uring refused: ENOSYS, not in this kernel)";
	case -EPERM:
		return "pwritev (io_uring refused: EPERM, kernel.io_uring_disabled or seccomp)";
	case -ENOMEM:
		return "pwritev (io_uring refused: ENOMEM, locked-memory limit)";
	case -EMFILE:
	case -ENFILE:
		return "pwritev (io_uring refused: no file descriptor left)";
	case -EINVAL:
		return "pwritev (io_uring refused: EINVAL)";
	default:
		return "pwritev (io_uring refused)";
	}
}
#endif

/*
 * Choose the engine: io_uring if wanted, built and accepted, else pwritev.
 * *method says which, and why.
 */
static int out_open(struct dirty_tracker *t, struct out *o, unsigned flags, unsigned queue_depth,
		    const char **method)
{
	if (!o->positioned) {
		*method = "pwritev (not seekable or O_APPEND: writev, in order)";
	} else if (flags & DIRTY_IMAGE_PWRITEV) {
		*method = "pwritev";
	} else {
#if HAVE_LIBURING
		int refused = 0, err = uring_setup(o, queue_depth, &refused);

		if (err <= 0) {
			*method = "io_uring";
			return err;
		}
		uring_teardown(o);
		slots_free(o);
		*method = uring_refused(refused);
		dirty_log(t, LOG_INFO, "io_uring refused (%s): images are written with pwritev",
			  strerror(-refused));
#else
		(void)t;
		(void)queue_depth;
		*method = "pwritev (built without liburing)";
#endif
	}
	return slots_alloc(o, 1, PWRITEV_CHUNK_BYTES, IOV_MAX);
}

static void out_close(struct out *o)
{
#if HAVE_LIBURING
	uring_teardown(o);
#endif
	slots_free(o);
}

/* ---- the call, in phases ---- */

/* One dirty_image_write(), from its arguments to the image's last byte. */
struct image_job {
	struct dirty_tracker *t;
	unsigned flags, queue_depth;
	struct image_region *sorted; /* the regions, in address order */
	size_t nregions;
	struct run_list runs;        /* what the image holds */
	bool cleaned;                /* runs were cleaned: given back if the image fails */
	struct dirty_image_header h;
	unsigned char *meta;         /* header and tables, 4096-aligned */
	unsigned char *trailer_block;
	struct out o;
	const char *method;
	uint64_t total;              /* bytes of the image */
};

/* The arguments, and where the image goes: nothing changes on failure. */
static int job_begin(struct image_job *j, const struct dirty_image_options *opts, int fd,
		     const struct dirty_image_stats *ret)
{
	int fl, err = options_check(opts);

	if (err)
		return err;
	if (ret && ret->sz < offsetof(struct dirty_image_stats, runs))
		return -EINVAL;
	if (fd < 0)
		return -EBADF;
	if (dirty_tracker_forked(j->t))
		return -ECHILD;
	j->flags = DIRTY_SIZED_GET(opts, flags, 0);
	j->queue_depth = DIRTY_SIZED_GET(opts, queue_depth, 0);
	if (!j->queue_depth)
		j->queue_depth = DEFAULT_QUEUE_DEPTH;
	fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return -errno;
	if (fl & O_DIRECT)
		j->flags |= DIRTY_IMAGE_DIRECT; /* the checks below, whether the caller said so or not */
	j->o.fd = fd;
	j->o.base = lseek(fd, 0, SEEK_CUR);
	j->o.positioned = j->o.base >= 0 && !(fl & O_APPEND);
	if (!j->o.positioned)
		j->o.base = 0;
	/* O_DIRECT: aligned memory (always), aligned offsets (the caller's part) */
	if ((j->flags & DIRTY_IMAGE_DIRECT) &&
	    (!j->o.positioned || (j->o.base & (DIRTY_IMAGE_ALIGN - 1))))
		return -EINVAL;
	return 0;
}

/*
 * The regions in address order, so that the runs are: they must not
 * overlap, and each must be a tracked range of t (checked before anything
 * changes).
 */
static int job_regions(struct image_job *j, const struct dirty_range *regions,
		       const char *const *names)
{
	j->sorted = calloc(j->nregions + 1, sizeof(*j->sorted));
	if (!j->sorted)
		return -ENOMEM;
	for (size_t i = 0; i < j->nregions; i++) {
		j->sorted[i].start = (uintptr_t)regions[i].start;
		j->sorted[i].end = j->sorted[i].start + regions[i].len;
		j->sorted[i].name = names && names[i] ? names[i] : "";
	}
	qsort(j->sorted, j->nregions, sizeof(*j->sorted), region_compare);
	for (size_t i = 1; i < j->nregions; i++)
		if (j->sorted[i].start < j->sorted[i - 1].end)
			return -EINVAL;
	for (size_t i = 0; i < j->nregions; i++) {
		struct dirty_range one;
		ssize_t n = dirty_collect(j->t, regions[i].start, regions[i].len, 0, &one, 1, NULL);

		if (n < 0)
			return (int)n;
	}
	return 0;
}

/* What the image holds: every page (DIRTY_IMAGE_ALL), or the dirty runs. */
static int job_runs(struct image_job *j)
{
	size_t page = dirty_page_size();
	bool clean = j->flags & DIRTY_IMAGE_CLEAN;
	int err = 0;

	j->cleaned = clean;
	if (!(j->flags & DIRTY_IMAGE_ALL)) {
		for (size_t i = 0; !err && i < j->nregions; i++)
			err = collect_region(j->t, &j->sorted[i], clean ? DIRTY_COLLECT_CLEAN : 0,
					     &j->runs);
		return err;
	}
	j->runs.v = calloc(j->nregions + 1, sizeof(*j->runs.v));
	if (!j->runs.v)
		return -ENOMEM;
	for (size_t i = 0; i < j->nregions; i++) {
		j->runs.v[i] = (struct dirty_range){ (void *)j->sorted[i].start,
						     j->sorted[i].end - j->sorted[i].start };
		j->runs.pages += j->runs.v[i].len / page;
	}
	j->runs.n = j->runs.cap = j->nregions;
	/* cleaned before the pages are read: later writes go to the next image */
	for (size_t i = 0; !err && clean && i < j->nregions; i++) {
		err = dirty_clean(j->t, j->runs.v[i].start, j->runs.v[i].len);
		if (err) /* the regions before this one were cleaned */
			j->runs.n = i;
	}
	return err;
}

/* The header and the tables, in one 4096-aligned buffer. */
static int job_meta(struct image_job *j, const struct dirty_image_options *opts)
{
	size_t page = dirty_page_size();
	struct dirty_image_header *h = &j->h;
	struct timespec now;
	int err;

	clock_gettime(CLOCK_REALTIME, &now);
	err = dirty_image_layout(h, (uint32_t)page, j->nregions, j->runs.n, j->runs.pages);
	if (err)
		return err;
	if (h->data_offset > SIZE_MAX)
		return -ENOMEM;
	j->meta = aligned_alloc(DIRTY_IMAGE_ALIGN, (size_t)h->data_offset);
	j->trailer_block = aligned_alloc(DIRTY_IMAGE_ALIGN, DIRTY_IMAGE_ALIGN);
	if (!j->meta || !j->trailer_block)
		return -ENOMEM;
	memset(j->meta, 0, (size_t)h->data_offset);
	memset(j->trailer_block, 0, DIRTY_IMAGE_ALIGN);
	h->flags = (j->flags & DIRTY_IMAGE_ALL ? DIRTY_IMAGE_BASE : 0) |
		   (j->flags & DIRTY_IMAGE_EXEC ? DIRTY_IMAGE_NEW_PROGRAM : 0);
	h->sequence = DIRTY_SIZED_GET(opts, sequence, 0);
	h->pid = (uint64_t)(j->t->pid ? j->t->pid : getpid());
	h->time_ns = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
	h->crc = dirty_image_header_crc(h);
	memcpy(j->meta, h, sizeof(*h));
	for (size_t i = 0; i < j->nregions; i++) {
		struct dirty_image_region *r =
			(struct dirty_image_region *)(j->meta + h->regions_offset) + i;

		r->start = j->sorted[i].start;
		r->end = j->sorted[i].end;
		strncpy(r->name, j->sorted[i].name, sizeof(r->name) - 1);
	}
	for (size_t i = 0; i < j->runs.n; i++) {
		struct dirty_image_run *r = (struct dirty_image_run *)(j->meta + h->runs_offset) + i;

		r->start = (uintptr_t)j->runs.v[i].start;
		r->npages = j->runs.v[i].len / page;
	}
	return 0;
}

/*
 * The header, tables and pages; *crc receives the checksum of them all.
 * Pages are read where they are when nothing can change them under the
 * write (this process, positioned, cleaned first): if some were written
 * meanwhile, the data are written again from copies.
 */
static int job_data(struct image_job *j, uint32_t *crc)
{
	struct dirty_tracker *t = j->t;
	bool staged;
	struct source src;
	int err = out_open(t, &j->o, j->flags, j->queue_depth, &j->method);

	if (err)
		return err;
	staged = t->pid || !j->o.positioned || !(j->flags & DIRTY_IMAGE_CLEAN);
	src = (struct source){
		.fixed = j->meta,
		.fixed_end = j->h.data_offset,
		.data_start = j->h.data_offset,
		.data_end = j->h.trailer_offset,
		.runs = j->runs.v,
		.nruns = j->runs.n,
		.staged = staged,
		.pid = t->pid ? t->pid : getpid(),
		.self = !t->pid,
	};
	err = out_write(&j->o, &src);
	if (!err && !staged && image_raced(t, j->sorted, j->nregions, &j->runs)) {
		/* write the pages again from copies, and checksum those */
		dirty_log(t, LOG_DEBUG, "image: pages written during the write; staging them");
		src.fixed_end = 0;
		src.pos = j->h.data_offset;
		src.run = src.run_off = 0;
		src.crc = dirty_crc32c(0, j->meta, (size_t)j->h.data_offset);
		src.staged = true;
		err = out_write(&j->o, &src);
	}
	*crc = src.crc;
	return err;
}

/* The trailer, which makes the image whole; then the file offset past it. */
static int job_trailer(struct image_job *j, uint32_t crc)
{
	struct dirty_image_trailer trailer = { .crc = crc };
	struct source src;
	int err;

	j->total = j->h.trailer_offset + DIRTY_IMAGE_ALIGN;
	memcpy(trailer.magic, DIRTY_IMAGE_TRAILER_MAGIC, sizeof(trailer.magic));
	trailer.total_size = j->total;
	memcpy(j->trailer_block, &trailer, sizeof(trailer));
	src = (struct source){
		.fixed = j->trailer_block,
		.fixed_start = j->h.trailer_offset,
		.fixed_end = j->total,
		.data_start = j->total,
		.data_end = j->total,
		.pos = j->h.trailer_offset,
	};
	err = out_write(&j->o, &src);
	if (!err && j->o.positioned && lseek(j->o.fd, j->o.base + (off_t)j->total, SEEK_SET) < 0)
		err = -errno;
	return err;
}

static void job_end(struct image_job *j, int err)
{
	/* an image without its trailer is refused whole: none of its pages was delivered */
	if (err && j->cleaned)
		dirty_redirty_runs(j->t, j->runs.v, j->runs.n);
	out_close(&j->o);
	free(j->trailer_block);
	free(j->meta);
	free(j->runs.v);
	free(j->sorted);
}

static int image_write_call(struct dirty_tracker *t, const struct dirty_range *regions,
			    const char *const *names, size_t nregions,
			    const struct dirty_image_options *opts, int fd,
			    struct dirty_image_stats *ret)
{
	struct image_job j = { .t = t, .nregions = nregions, .o = { .fd = -1 } };
	uint32_t crc = 0;
	int err;

	if (nregions && !regions)
		return -EINVAL;
	err = job_begin(&j, opts, fd, ret);
	if (err)
		return err;
	err = job_regions(&j, regions, names);
	if (!err)
		err = job_runs(&j);
	if (!err)
		err = job_meta(&j, opts);
	if (!err)
		err = job_data(&j, &crc);
	if (!err)
		err = job_trailer(&j, crc);
	if (!err && ret) {
		struct dirty_image_stats st = {
			.runs = j.runs.n, .pages = j.runs.pages, .bytes = j.total,
			.method = j.method,
		};

		dirty_sized_out(ret, &st, sizeof(st));
	}
	job_end(&j, err);
	return err;
}

DIRTY_EXPORT int dirty_image_write(struct dirty_tracker *t, const struct dirty_range *regions,
				   const char *const *names, size_t nregions,
				   const struct dirty_image_options *opts, int fd,
				   struct dirty_image_stats *ret)
{
	DIRTY_COUNTED_CALL(t, int, err_,
			   image_write_call(t, regions, names, nregions, opts, fd, ret));
}
