/* SPDX-License-Identifier: MIT */
/*
 * A tracker's regions and the calls on them: track, untrack, clean and the
 * one collect loop, for address ranges and file ranges alike.  A call names
 * a span: a key (the tracked address space, or a file by device and inode)
 * and [start, end) in it; the registry finds the regions that cover it, and
 * each region's backend does its part.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "libdirty-int.h"

/* What a call is about. */
struct span {
	struct dirty_key key;
	uintptr_t start, end;
};

static bool span_is_memory(const struct span *sp)
{
	return dirty_key_equal(sp->key, DIRTY_KEY_MEMORY);
}

static uintptr_t max_addr(uintptr_t a, uintptr_t b)
{
	return a > b ? a : b;
}

static uintptr_t min_addr(uintptr_t a, uintptr_t b)
{
	return a < b ? a : b;
}

/* ---- the span of a call ---- */

/* An address range: page aligned, non-empty, no wrap. */
static int memory_span(const struct dirty_tracker *t, const void *addr, size_t len,
		       struct span *ret)
{
	uintptr_t a = (uintptr_t)addr;
	size_t page = dirty_page_size();

	if (dirty_tracker_forked(t))
		return -ECHILD;
	if (!len || (a & (page - 1)) || (len & (page - 1)) || a + len < a)
		return -EINVAL;
	*ret = (struct span){ DIRTY_KEY_MEMORY, a, a + len };
	return 0;
}

/*
 * A range of the file open as fd: page aligned, non-empty, within an
 * off_t, and (on a 32-bit system) within what an address counts.
 */
static int file_span(const struct dirty_tracker *t, int fd, uint64_t offset, uint64_t len,
		     struct span *ret)
{
	uint64_t page = dirty_page_size();
	struct stat st;

	if (fd < 0)
		return -EBADF;
	if (!len || (offset | len) & (page - 1) || offset + len < offset ||
	    offset + len > (uint64_t)INT64_MAX)
		return -EINVAL;
	if (offset + len - 1 > UINTPTR_MAX)
		return -EOVERFLOW; /* the sinks count in uintptr_t */
	if (dirty_tracker_forked(t))
		return -ECHILD;
	if (fstat(fd, &st) < 0)
		return -EBADF;
	*ret = (struct span){ { st.st_dev, st.st_ino }, (uintptr_t)offset,
			      (uintptr_t)(offset + len) };
	return 0;
}

/* Open candidate i of t if it is not, probing it first if it was added unprobed. */
static int candidate_open(struct dirty_tracker *t, size_t i)
{
	const struct dirty_backend *b = t->candidates[i];
	char why[DIRTY_REASON_LEN];
	int err;

	if (t->opened & (1u << i))
		return 0;
	if (t->unprobed & (1u << i)) {
		/* cached, as every probe (and LIBDIRTY_PROBE_FAIL applies) */
		err = dirty_backend_probe_cached(b, 0, why, sizeof(why));
		if (err) {
			dirty_log(t, LOG_INFO, "%s: %s", b->name, why);
			return err;
		}
	}
	err = b->open(t, &t->state[i]);
	if (err) {
		dirty_log(t, LOG_WARNING, "%s: cannot open: %s", b->name, strerror(-err));
		return err;
	}
	t->opened |= 1u << i;
	return 0;
}

/*
 * A file call needs a backend that tracks files, open: -EOPNOTSUPP if the
 * tracker has none that works here (another backend was asked for, or the
 * kernel addition is not there).  Lock held.
 */
static int files_ready(struct dirty_tracker *t)
{
	for (size_t i = 0; i < t->ncandidates; i++)
		if ((t->for_files & (1u << i)) && !candidate_open(t, i))
			return 0;
	dirty_log(t, LOG_INFO, "files cannot be tracked by this tracker");
	return -EOPNOTSUPP;
}

/*
 * Find the regions covering sp without a gap: *first and *count.  -ENOENT
 * if any page is untracked, -EINVAL if the span cuts a huge page of a
 * hugetlb region.  A region whose memory has been unmapped or moved is
 * marked gone and the span refused with -ESTALE, before anything is changed.
 */
static int span_find(struct dirty_tracker *t, const struct span *sp, size_t *first,
		     size_t *count)
{
	size_t i = dirty_registry_find(&t->regions, sp->key, sp->start), j;
	uintptr_t cur = sp->start;

	for (j = i; cur < sp->end; j++) {
		if (j == t->regions.n || !dirty_key_equal(t->regions.v[j]->key, sp->key) ||
		    t->regions.v[j]->start > cur)
			return -ENOENT;
		cur = t->regions.v[j]->end;
	}
	*first = i;
	*count = j - i;
	for (; i < j; i++) {
		struct dirty_region *r = t->regions.v[i];

		if ((max_addr(sp->start, r->start) | min_addr(sp->end, r->end)) & (r->page_size - 1))
			return -EINVAL;
		if (!span_is_memory(sp))
			continue; /* a file does not go away under its tracked range */
		if (!r->gone) {
			if (t->pid) {
				int mapped = dirty_range_mapped_pid(t->pid, r->start, r->end);

				if (mapped == -ESRCH)
					return -ESRCH; /* the target process is gone */
				r->gone = mapped == -ENOMEM;
			} else {
				r->gone = !dirty_range_mapped(r->start, r->end);
			}
			if (r->gone)
				dirty_log(t, LOG_WARNING, "region %#lx-%#lx is no longer mapped",
					  (unsigned long)r->start, (unsigned long)r->end);
		}
		if (r->gone)
			return -ESTALE;
	}
	return 0;
}

/*
 * Take the lock (held on return, whatever the outcome), then find the
 * regions of sp as span_find() does; a file span first needs a backend of
 * files.
 */
static int span_begin(struct dirty_tracker *t, const struct span *sp, size_t *first,
		      size_t *count)
{
	int err;

	pthread_mutex_lock(&t->lock);
	err = span_is_memory(sp) ? 0 : files_ready(t);
	return err ? err : span_find(t, sp, first, count);
}

/* ---- track ---- */

int dirty_track_with_candidates(struct dirty_tracker *t, struct dirty_region *r, unsigned mask)
{
	int err = -EOPNOTSUPP;

	/*
	 * A candidate refuses a kind it cannot track with -EOPNOTSUPP
	 * (uffd-sync: regular files; soft-dirty: hugetlb); only then is the
	 * next one tried.
	 */
	for (size_t i = 0; i < t->ncandidates && err == -EOPNOTSUPP; i++) {
		const struct dirty_backend *b = t->candidates[i];

		if (!(mask & (1u << i)))
			continue;
		if (candidate_open(t, i)) {
			err = -EOPNOTSUPP;
			continue;
		}
		r->backend = b;
		err = b->track(t, r);
		if (err == -EOPNOTSUPP)
			dirty_log(t, LOG_INFO, "%s cannot track %#lx-%#lx", b->name,
				  (unsigned long)r->start, (unsigned long)r->end);
	}
	return err;
}

/*
 * Give r to a backend and register it; the lock is held.  Memory of this
 * process is claimed first (claims.c): -EEXIST if another tracker of ours
 * has part of it.  after_track (may be NULL) runs once the backend tracks r.
 */
static int region_add(struct dirty_tracker *t, struct dirty_region *r, unsigned mask,
		      int (*after_track)(struct dirty_tracker *, struct dirty_region *, void *),
		      void *ctx)
{
	bool own_memory = !t->pid && dirty_key_equal(r->key, DIRTY_KEY_MEMORY);
	int err = own_memory ? dirty_claim(r) : 0;

	if (err)
		return err;
	err = dirty_track_with_candidates(t, r, mask);
	if (err) {
		dirty_unclaim(r);
		return err;
	}
	if (r->backend->flags & DIRTY_BACKEND_SHARED)
		dirty_unclaim(r); /* it takes nothing from another tracker */
	if (after_track)
		err = after_track(t, r, ctx);
	if (!err)
		err = dirty_registry_insert(&t->regions, r);
	if (err) {
		r->backend->untrack(t, r);
		dirty_unclaim(r);
		return err;
	}
	t->stats.regions++;
	t->stats.tracked_bytes += r->end - r->start;
	dirty_cost_track(t, r);
	return 0;
}

/* Stop tracking r, which has left the registry, and free it. */
static void region_drop(struct dirty_tracker *t, struct dirty_region *r)
{
	dirty_compare_free(r);
	r->backend->untrack(t, r);
	dirty_unclaim(r);
	t->stats.regions--;
	t->stats.tracked_bytes -= r->end - r->start;
	free(r);
}

/* ---- DIRTY_TRACK_POPULATED_DIRTY ---- */

struct populated {
	int pagemap_fd;
	struct dirty_span *v;
	size_t n, cap;
};

static int populated_keep(uintptr_t start, uintptr_t end, void *ctx)
{
	struct populated *p = ctx;
	int err = dirty_grow((void **)&p->v, &p->cap, p->n + 1, sizeof(*p->v));

	if (!err)
		p->v[p->n++] = (struct dirty_span){ start, end };
	return err;
}

static void populated_free(struct populated *p)
{
	if (p->pagemap_fd >= 0)
		close(p->pagemap_fd);
	free(p->v);
}

/*
 * The region starts with its pages that hold data dirty.  They are read
 * twice: before tracking starts (with swapped-out pages, before any
 * protection marker can look like one) and after, present ones only (a page
 * populated in between was protected by the clean): so that no page that
 * held data when the call returned reads clean.  Then the backend marks
 * them dirty as it does pages a collect could not deliver.
 */
static int populated_before(const struct dirty_tracker *t, uintptr_t start, uintptr_t end,
			    enum dirty_memory_kind kind, struct populated *ret)
{
	char path[64];

	snprintf(path, sizeof(path), t->pid ? "/proc/%d/pagemap" : "/proc/self/pagemap",
		 (int)t->pid);
	ret->pagemap_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (ret->pagemap_fd < 0)
		return errno == ENOENT ? -ESRCH : -errno;
	return dirty_populated_each(ret->pagemap_fd, start, end, kind, true, populated_keep, ret);
}

struct redirty_ctx {
	struct dirty_tracker *t;
	struct dirty_region *r;
};

static int populated_redirty(uintptr_t start, uintptr_t end, void *ctx)
{
	struct redirty_ctx *c = ctx;

	c->r->backend->redirty(c->t, c->r, start, end);
	return 0;
}

static int populated_after(struct dirty_tracker *t, struct dirty_region *r, void *ctx)
{
	struct populated *before = ctx;
	struct redirty_ctx c = { t, r };

	for (size_t i = 0; i < before->n; i++)
		r->backend->redirty(t, r, before->v[i].start, before->v[i].end);
	return dirty_populated_each(before->pagemap_fd, r->start, r->end, r->kind, false,
				    populated_redirty, &c);
}

/* ---- track, untrack, clean ---- */

/* A new region of memory, described from /proc: refused as dirty_track() says. */
static int memory_region_new(struct dirty_tracker *t, const struct span *sp,
			     struct dirty_range_info *info, struct dirty_region **ret)
{
	struct dirty_region *r;
	int err = dirty_describe_range(t->pid, sp->start, sp->end, info);

	if (err)
		return err;
	if (!(info->prot & PROT_WRITE))
		return -EACCES;
	if ((sp->start | sp->end) & (info->page_size - 1))
		return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	*r = (struct dirty_region){
		.key = DIRTY_KEY_MEMORY,
		.start = sp->start,
		.end = sp->end,
		.fd = -1,
		.page_size = info->page_size,
		.kind = info->kind,
		.prot = info->mixed_prot ? -1 : info->prot,
	};
	*ret = r;
	return 0;
}

static int track_memory(struct dirty_tracker *t, const struct span *sp, unsigned flags)
{
	struct populated populated = { .pagemap_fd = -1 };
	bool with_populated = flags & DIRTY_TRACK_POPULATED_DIRTY;
	struct dirty_range_info info;
	struct dirty_region *r = NULL;
	int err = 0;

	if (flags & ~DIRTY_TRACK_POPULATED_DIRTY)
		return -EINVAL;
	pthread_mutex_lock(&t->lock);
	/* before the description: another tracker's protection makes the range read-only */
	if (dirty_registry_overlaps(&t->regions, sp->key, sp->start, sp->end) ||
	    (!t->pid && dirty_claimed(sp->start, sp->end)))
		err = -EEXIST;
	if (!err)
		err = memory_region_new(t, sp, &info, &r);
	if (!err && with_populated)
		err = populated_before(t, sp->start, sp->end, info.kind, &populated);
	if (!err)
		err = region_add(t, r, t->for_memory, with_populated ? populated_after : NULL,
				 &populated);
	pthread_mutex_unlock(&t->lock);
	if (err)
		free(r);
	populated_free(&populated);
	return err;
}

static int track_file(struct dirty_tracker *t, int fd, const struct span *sp)
{
	struct dirty_region *r;
	int err;

	pthread_mutex_lock(&t->lock);
	err = files_ready(t);
	if (!err && dirty_registry_overlaps(&t->regions, sp->key, sp->start, sp->end))
		err = -EEXIST;
	r = err ? NULL : calloc(1, sizeof(*r));
	if (!err && !r)
		err = -ENOMEM;
	if (!err) {
		*r = (struct dirty_region){
			.key = sp->key,
			.start = sp->start,
			.end = sp->end,
			.fd = fd, /* for the backend's track() only */
			.page_size = dirty_page_size(),
			.kind = DIRTY_MEM_FILE_SHARED,
			.prot = PROT_READ | PROT_WRITE,
		};
		err = region_add(t, r, t->for_files, NULL, NULL);
		r->fd = -1;
		if (err)
			free(r);
	}
	pthread_mutex_unlock(&t->lock);
	return err;
}

static int untrack_span(struct dirty_tracker *t, const struct span *sp)
{
	size_t first, count;
	int err;

	err = span_begin(t, sp, &first, &count);
	if (err == -ESTALE || err == -ESRCH)
		err = 0; /* forgetting a gone region (or process) is what the caller wants */
	if (!err && (t->regions.v[first]->start != sp->start ||
		     t->regions.v[first + count - 1]->end != sp->end))
		err = -EINVAL; /* it cuts a region */
	if (!err) {
		for (size_t i = first; i < first + count; i++)
			region_drop(t, t->regions.v[i]);
		dirty_registry_remove(&t->regions, first, count);
	}
	pthread_mutex_unlock(&t->lock);
	return err;
}

static int clean_span(struct dirty_tracker *t, const struct span *sp)
{
	size_t first, count;
	int err;

	err = span_begin(t, sp, &first, &count);
	for (size_t i = first; !err && i < first + count; i++) {
		struct dirty_region *r = t->regions.v[i];

		uintptr_t start = max_addr(sp->start, r->start), end = min_addr(sp->end, r->end);

		err = r->way == DIRTY_WAY_COMPARE ? dirty_compare_clean(t, r, start, end)
						  : r->backend->clean(t, r, start, end);
	}
	pthread_mutex_unlock(&t->lock);
	return err;
}

/* ---- collect ---- */

/*
 * Give back pages that a collect-and-clean re-cleaned but could not deliver.
 * Called with the lock held.  A region that vanished meanwhile has nothing
 * left to give back to.
 */
static void redirty_locked(struct dirty_tracker *t, struct dirty_key key, uintptr_t start,
			   uintptr_t end)
{
	size_t i = dirty_registry_find(&t->regions, key, start);

	for (; i < t->regions.n && dirty_key_equal(t->regions.v[i]->key, key) &&
	       t->regions.v[i]->start < end;
	     i++) {
		struct dirty_region *r = t->regions.v[i];

		uintptr_t s = max_addr(start, r->start), e = min_addr(end, r->end);

		if (r->gone)
			continue;
		if (r->way == DIRTY_WAY_COMPARE)
			dirty_compare_redirty(r, s, e);
		else
			r->backend->redirty(t, r, s, e);
	}
}

void dirty_redirty_runs(struct dirty_tracker *t, const struct dirty_range *runs, size_t n)
{
	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < n; i++)
		redirty_locked(t, DIRTY_KEY_MEMORY, (uintptr_t)runs[i].start,
			       (uintptr_t)runs[i].start + runs[i].len);
	pthread_mutex_unlock(&t->lock);
}

/* The bitmap form failed: give back what it had taken. */
static void redirty_bitmap(struct dirty_tracker *t, const struct span *sp,
			   const struct dirty_sink *s)
{
	size_t page = dirty_page_size(), npages = (sp->end - s->base) / page, i, j;

	for (i = 0; i < npages; i = j) {
		if (!dirty_bits_test(s->bitmap, i)) {
			j = i + 1;
			continue;
		}
		for (j = i + 1; j < npages && dirty_bits_test(s->bitmap, j); j++)
			;
		redirty_locked(t, sp->key, s->base + i * page, s->base + j * page);
	}
}

/*
 * The one collect loop behind every public form, of memory and of files.
 * Returns 0 or -errno; *next is the first address (or offset) not examined.
 * A failure after some runs were delivered must not lose what was already
 * re-cleaned: the runs form reports success with *next at the failing
 * region (the resumed call meets the error); the bitmap form, which has no
 * partial answer, gives the pages back.
 */
static int collect_span(struct dirty_tracker *t, const struct span *sp, unsigned flags,
			struct dirty_sink *sink, uintptr_t *next)
{
	bool clean = flags & DIRTY_COLLECT_CLEAN;
	uintptr_t done = sp->start;
	size_t first, count, i;
	int err;

	err = span_begin(t, sp, &first, &count);
	for (i = first; !err && i < first + count &&
			done == max_addr(sp->start, t->regions.v[i]->start);
	     i++) {
		struct dirty_region *r = t->regions.v[i];

		err = dirty_cost_collect(t, r, done, min_addr(sp->end, r->end), clean, sink, &done);
		if (err == -ESTALE)
			r->gone = true;
	}
	if (err && sink->pages) {
		if (!sink->bitmap)
			err = 0;
		else if (clean)
			redirty_bitmap(t, sp, sink);
	}
	if (!err) {
		t->stats.collects++;
		t->stats.dirty_pages += sink->pages;
		*next = done;
	}
	pthread_mutex_unlock(&t->lock);
	return err;
}

/* The runs form: up to max runs into out; *next the first address not examined. */
static ssize_t collect_runs(struct dirty_tracker *t, const struct span *sp, unsigned flags,
			    struct dirty_range *out, size_t max, uintptr_t *next)
{
	struct dirty_sink sink = { .out = out, .max = max };
	int err;

	if (!out != !max || max > SSIZE_MAX || (flags & ~DIRTY_COLLECT_CLEAN))
		return -EINVAL;
	if (!max) {
		/* nothing examined; a tracker that cannot have files still says so */
		*next = sp->start;
		if (span_is_memory(sp))
			return 0;
		pthread_mutex_lock(&t->lock);
		err = files_ready(t);
		pthread_mutex_unlock(&t->lock);
		return err;
	}
	err = collect_span(t, sp, flags, &sink, next);
	return err ? err : (ssize_t)sink.n;
}

/* The bitmap form: all or nothing, so a private copy is filled and published on success. */
static int collect_bitmap(struct dirty_tracker *t, const struct span *sp, unsigned flags,
			  uint64_t *bitmap)
{
	size_t words = ((sp->end - sp->start) / dirty_page_size() + 63) / 64;
	struct dirty_sink sink = { .base = sp->start };
	uintptr_t done;
	int err;

	if (!bitmap || (flags & ~DIRTY_COLLECT_CLEAN))
		return -EINVAL;
	sink.bitmap = calloc(words, sizeof(uint64_t));
	if (!sink.bitmap)
		return -ENOMEM;
	err = collect_span(t, sp, flags, &sink, &done);
	if (!err)
		memcpy(bitmap, sink.bitmap, words * sizeof(uint64_t));
	free(sink.bitmap);
	return err;
}

/* ---- the calls on memory ---- */

static int track_call(struct dirty_tracker *t, void *addr, size_t len, unsigned flags)
{
	struct span sp;
	int err = memory_span(t, addr, len, &sp);

	return err ? err : track_memory(t, &sp, flags);
}

static int untrack_call(struct dirty_tracker *t, void *addr, size_t len)
{
	struct span sp;
	int err = memory_span(t, addr, len, &sp);

	return err ? err : untrack_span(t, &sp);
}

static int clean_call(struct dirty_tracker *t, void *addr, size_t len)
{
	struct span sp;
	int err = memory_span(t, addr, len, &sp);

	return err ? err : clean_span(t, &sp);
}

static ssize_t collect_call(struct dirty_tracker *t, void *addr, size_t len, unsigned flags,
			    struct dirty_range *out, size_t max, void **next)
{
	uintptr_t done = 0;
	struct span sp;
	ssize_t n = memory_span(t, addr, len, &sp);

	if (!n)
		n = collect_runs(t, &sp, flags, out, max, &done);
	if (n >= 0 && next)
		*next = (void *)done;
	return n;
}

static int collect_bitmap_call(struct dirty_tracker *t, void *addr, size_t len, unsigned flags,
			       uint64_t *bitmap)
{
	struct span sp;
	int err = memory_span(t, addr, len, &sp);

	return err ? err : collect_bitmap(t, &sp, flags, bitmap);
}

#define EACH_BATCH 128

static int collect_each_call(struct dirty_tracker *t, void *addr, size_t len, unsigned flags,
			     dirty_run_fn fn, void *userdata)
{
	struct dirty_range runs[EACH_BATCH];
	uintptr_t cur;
	struct span sp;
	void *next;
	int err = memory_span(t, addr, len, &sp);

	if (err)
		return err;
	if (!fn || (flags & ~DIRTY_COLLECT_CLEAN))
		return -EINVAL;
	/*
	 * Collect a batch, then deliver it.  With DIRTY_COLLECT_CLEAN the whole
	 * batch is clean once collected, so if fn stops early the undelivered
	 * rest is marked dirty again: nothing is lost.
	 */
	for (cur = sp.start; cur < sp.end; cur = (uintptr_t)next) {
		/* each batch a call of its own: a free from fn ends the loop (-EBADF) */
		ssize_t n = dirty_collect(t, (void *)cur, sp.end - cur, flags, runs, EACH_BATCH,
					  &next);

		if (n < 0)
			return (int)n;
		for (ssize_t i = 0; i < n; i++) {
			err = fn(runs[i].start, runs[i].len, userdata);
			if (err) {
				/* the undelivered rest of this batch was cleaned: give it back */
				if (flags & DIRTY_COLLECT_CLEAN)
					dirty_redirty_runs(t, runs + i + 1, (size_t)(n - i - 1));
				return err;
			}
		}
	}
	return 0;
}

DIRTY_EXPORT int dirty_track(struct dirty_tracker *t, void *addr, size_t len)
{
	DIRTY_COUNTED_CALL(t, int, err_, track_call(t, addr, len, 0));
}

DIRTY_EXPORT int dirty_track_flags(struct dirty_tracker *t, void *addr, size_t len, unsigned flags)
{
	DIRTY_COUNTED_CALL(t, int, err_, track_call(t, addr, len, flags));
}

DIRTY_EXPORT int dirty_untrack(struct dirty_tracker *t, void *addr, size_t len)
{
	DIRTY_COUNTED_CALL(t, int, err_, untrack_call(t, addr, len));
}

DIRTY_EXPORT int dirty_clean(struct dirty_tracker *t, void *addr, size_t len)
{
	DIRTY_COUNTED_CALL(t, int, err_, clean_call(t, addr, len));
}

DIRTY_EXPORT ssize_t dirty_collect(struct dirty_tracker *t, void *addr, size_t len,
				   unsigned flags, struct dirty_range *out, size_t max,
				   void **next)
{
	DIRTY_COUNTED_CALL(t, ssize_t, err_, collect_call(t, addr, len, flags, out, max, next));
}

DIRTY_EXPORT int dirty_collect_bitmap(struct dirty_tracker *t, void *addr, size_t len,
				      unsigned flags, uint64_t *bitmap)
{
	DIRTY_COUNTED_CALL(t, int, err_, collect_bitmap_call(t, addr, len, flags, bitmap));
}

DIRTY_EXPORT int dirty_collect_each(struct dirty_tracker *t, void *addr, size_t len,
				    unsigned flags, dirty_run_fn fn, void *userdata)
{
	DIRTY_COUNTED_CALL(t, int, err_, collect_each_call(t, addr, len, flags, fn, userdata));
}

/* ---- the calls on files: the same, keyed by the file ---- */

static int track_file_call(struct dirty_tracker *t, int fd, uint64_t offset, uint64_t len)
{
	struct span sp;
	int err = file_span(t, fd, offset, len, &sp);

	return err ? err : track_file(t, fd, &sp);
}

static int untrack_file_call(struct dirty_tracker *t, int fd, uint64_t offset, uint64_t len)
{
	struct span sp;
	int err = file_span(t, fd, offset, len, &sp);

	return err ? err : untrack_span(t, &sp);
}

static int clean_file_call(struct dirty_tracker *t, int fd, uint64_t offset, uint64_t len)
{
	struct span sp;
	int err = file_span(t, fd, offset, len, &sp);

	return err ? err : clean_span(t, &sp);
}

static ssize_t collect_file_call(struct dirty_tracker *t, int fd, uint64_t offset, uint64_t len,
				 unsigned flags, struct dirty_file_range *out, size_t max,
				 uint64_t *next)
{
	/*
	 * The sink writes runs of offsets as struct dirty_range into the front
	 * of out, which they fit; they are widened in place afterwards, last
	 * first.
	 */
	struct dirty_range *runs = (struct dirty_range *)out;
	uintptr_t done = 0;
	struct span sp;
	ssize_t n;

	_Static_assert(sizeof(struct dirty_range) <= sizeof(struct dirty_file_range),
		       "runs fit where file runs go");
	n = file_span(t, fd, offset, len, &sp);
	if (!n)
		n = collect_runs(t, &sp, flags, runs, max, &done);
	if (n < 0)
		return n;
	for (ssize_t i = n; i-- > 0;) {
		uint64_t start = (uintptr_t)runs[i].start, run_len = runs[i].len;

		out[i] = (struct dirty_file_range){ .offset = start, .len = run_len };
	}
	if (next)
		*next = done;
	return n;
}

static int collect_file_bitmap_call(struct dirty_tracker *t, int fd, uint64_t offset,
				    uint64_t len, unsigned flags, uint64_t *bitmap)
{
	struct span sp;
	int err = file_span(t, fd, offset, len, &sp);

	return err ? err : collect_bitmap(t, &sp, flags, bitmap);
}

DIRTY_EXPORT int dirty_track_file(struct dirty_tracker *t, int fd, uint64_t offset, uint64_t len)
{
	DIRTY_COUNTED_CALL(t, int, err_, track_file_call(t, fd, offset, len));
}

DIRTY_EXPORT int dirty_untrack_file(struct dirty_tracker *t, int fd, uint64_t offset, uint64_t len)
{
	DIRTY_COUNTED_CALL(t, int, err_, untrack_file_call(t, fd, offset, len));
}

DIRTY_EXPORT int dirty_clean_file(struct dirty_tracker *t, int fd, uint64_t offset, uint64_t len)
{
	DIRTY_COUNTED_CALL(t, int, err_, clean_file_call(t, fd, offset, len));
}

DIRTY_EXPORT ssize_t dirty_collect_file(struct dirty_tracker *t, int fd, uint64_t offset,
					uint64_t len, unsigned flags,
					struct dirty_file_range *out, size_t max, uint64_t *next)
{
	DIRTY_COUNTED_CALL(t, ssize_t, err_,
			   collect_file_call(t, fd, offset, len, flags, out, max, next));
}

DIRTY_EXPORT int dirty_collect_file_bitmap(struct dirty_tracker *t, int fd, uint64_t offset,
					   uint64_t len, unsigned flags, uint64_t *bitmap)
{
	DIRTY_COUNTED_CALL(t, int, err_,
			   collect_file_bitmap_call(t, fd, offset, len, flags, bitmap));
}
