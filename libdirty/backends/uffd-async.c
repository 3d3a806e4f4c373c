/* SPDX-License-Identifier: MIT */
/*
 * The uffd-async backend (Linux 6.7+).
 *
 * Tracked memory is registered with a userfaultfd in write-protect mode with
 * UFFD_FEATURE_WP_ASYNC: the kernel resolves a write to a protected page by
 * itself, clearing the page's uffd-wp bit, with no user space on the fault
 * path.  "Dirty" is therefore "not write-protected", which PAGEMAP_SCAN
 * reports as PAGE_IS_WRITTEN, and PM_SCAN_WP_MATCHING re-protects exactly the
 * pages it reports, atomically under the page-table lock: that is the whole
 * of collect-and-clean, one ioctl per batch.
 *
 * UFFD_FEATURE_WP_UNPOPULATED makes protection stick to pages that are not
 * populated yet (the kernel leaves a marker), so a page that is first read
 * after a clean is not reported.
 *
 * Kernel behaviours this file is written around (fs/proc/task_mmu.c):
 *   - With PM_SCAN_CHECK_WPASYNC, a vma that is not ours (the memory was
 *     replaced with MAP_FIXED) fails the ioctl with EPERM, after the vmas
 *     before it were already re-protected and reported into the vector with
 *     no count returned.  Every scan therefore covers one region only, so
 *     that what is lost belongs to the region that is gone (-ESTALE).
 *   - walk_end can lag behind the last region reported when a call needed
 *     more than one internal batch: resume from whichever is later, or a
 *     collect without clean would report pages twice.
 *   - PM_SCAN_WP_MATCHING over unpopulated hugetlb memory can hang before
 *     the 2026 fixes; hugetlb regions are scanned without it and the reported
 *     runs re-protected with UFFDIO_WRITEPROTECT.  That is still exact: only
 *     reported pages are re-protected, and a write between the scan and the
 *     re-protection lands in a page this collect reports, whose contents the
 *     caller reads after the call.
 *
 * DIRTY_TRACKER_SPARSE leaves holes unprotected, so the kernel has nothing
 * to say about a hole: a page that held data at the last clean and was
 * dropped since (MADV_DONTNEED, MADV_FREE then reclaim) is a hole like any
 * never-touched page, though its contents changed, to zeroes.  Each region
 * therefore keeps the set of its pages that held data at its last clean
 * (runs: a sparse reservation costs what is touched), and a collect reports
 * the pages of that set that hold no data now.  The scan that finds the
 * written pages finds the populated ones too, in the same walk, under the
 * same page-table lock: a page dropped after the walk passed it is still in
 * the new set, and reported by the next collect.  "Holds data" depends on
 * the memory (populated_category()): a page written, then dropped, between
 * two collects, having held nothing at the first, is back to what it was
 * and not reported.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <syslog.h>
#include <unistd.h>

#include "libdirty-int.h"
#include "linux-compat.h"

/* A vector the kernel can fill when the caller's own buffer is too small. */
#define SCRATCH_REGIONS 256
/*
 * A sparse scan returns every populated run, written or not: a larger
 * vector saves system calls (dirty_collect() over 512 MiB with 1 % of it
 * written in scattered pages: 2.6 collects' worth of calls at 256).
 */
#define SPARSE_REGIONS 4096
/*
 * The most regions one ioctl writes into the caller's array: the part of it
 * made writable first (prefault) must stay small whatever max the caller
 * passed (the kernel copies out 512 regions at a time anyway).
 */
#define MAX_REGIONS_PER_SCAN 512

extern const struct dirty_backend dirty_backend_uffd_async;

/* A tracker's state: its userfaultfd, and the pagemap that scans its process. */
struct async_state {
	int uffd, pagemap_fd;
};

static struct async_state *state_of(const struct dirty_tracker *t)
{
	return dirty_backend_state(t, &dirty_backend_uffd_async);
}

/*
 * Calls PAGEMAP_SCAN over [arg->start, arg->end).  Returns the number of
 * regions written to the vector, or -errno.  A vma in the range that is not
 * registered with async write-protection (PM_SCAN_CHECK_WPASYNC) means our
 * memory was replaced under us: -ESTALE.
 */
static int pagemap_scan(struct dirty_tracker *t, struct pm_scan_arg *arg)
{
	int fd = state_of(t)->pagemap_fd, n;

	/* another process's memory may be gone: exited, or exec'ed (a new mm) */
	if (t->pid && dirty_pagemap_alive(fd))
		return -ESRCH;
	do
		n = ioctl(fd, PAGEMAP_SCAN, arg);
	while (n < 0 && errno == EINTR);
	if (n >= 0)
		return n;
	return errno == EPERM ? -ESTALE : -errno;
}

static void scan_arg_init(struct dirty_tracker *t, struct pm_scan_arg *arg, uintptr_t start,
			  uintptr_t end, bool clean)
{
	*arg = (struct pm_scan_arg){
		.size = sizeof(*arg),
		.flags = PM_SCAN_CHECK_WPASYNC | (clean ? PM_SCAN_WP_MATCHING : 0),
		.start = start,
		.end = end,
		/* exactly WRITTEN in and out: the kernel's fast path */
		.category_mask = PAGE_IS_WRITTEN,
		.return_mask = PAGE_IS_WRITTEN,
	};
	/*
	 * The kernel counts a page that has no page-table entry as written
	 * until it is given a protection marker, which needs a page table.
	 * DIRTY_TRACKER_SPARSE matches only pages that exist (present or
	 * swapped) and are not the shared zero page (only read), so holes are
	 * neither reported nor protected.
	 */
	if (t->flags & DIRTY_TRACKER_SPARSE) {
		arg->category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
		arg->category_inverted = PAGE_IS_PFNZERO;
		arg->category_mask = PAGE_IS_WRITTEN | PAGE_IS_PFNZERO;
	}
}

static void state_free(struct async_state *s)
{
	if (s->uffd >= 0)
		close(s->uffd);
	if (s->pagemap_fd >= 0)
		close(s->pagemap_fd);
	free(s);
}

/*
 * The userfaultfd: for this process our own; for another, one made by the
 * target (remote.c), so that every ioctl on it acts on the target's memory
 * (the target holds no descriptor); or a duplicate of the one the caller
 * gave.  -errno and why.
 */
static int uffd_for(struct dirty_tracker *t, char *why, size_t why_len)
{
	int fd, err;

	if (t->given_uffd >= 0) {
		fd = fcntl(t->given_uffd, F_DUPFD_CLOEXEC, 3);
		return fd >= 0 ? fd : dirty_reason(why, why_len, -errno,
						   "cannot duplicate the given userfaultfd: %s",
						   strerror(errno));
	}
	if (!t->pid)
		return dirty_uffd_open(O_CLOEXEC | O_NONBLOCK, why, why_len);
	err = dirty_remote_userfaultfd(t->pid, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY, &fd,
				       why, why_len);
	return err < 0 ? err : fd;
}

static int uffd_async_open(struct dirty_tracker *t, void **ret)
{
	char why[DIRTY_REASON_LEN], path[64];
	struct async_state *s = malloc(sizeof(*s));
	int err;

	if (!s)
		return -ENOMEM;
	s->uffd = -1;
	snprintf(path, sizeof(path), t->pid ? "/proc/%d/pagemap" : "/proc/self/pagemap",
		 (int)t->pid);
	s->pagemap_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (s->pagemap_fd < 0) {
		err = errno == ENOENT ? -ESRCH : -errno;
		snprintf(why, sizeof(why), "cannot open %s: %s", path, strerror(errno));
		goto fail;
	}
	err = s->uffd = uffd_for(t, why, sizeof(why));
	if (err < 0)
		goto fail;
	/*
	 * UFFDIO_API is once per userfaultfd: dirty_userfaultfd_share() did it
	 * for a given one (EINVAL here), so that it can serve several trackers
	 * in turn.  Whether it was done with WP_ASYNC, dirty_track() checks.
	 */
	if (t->given_uffd >= 0) {
		struct uffdio_api api = { .api = UFFD_API,
					  .features = DIRTY_UFFD_ASYNC_FEATURES };

		if (ioctl(s->uffd, UFFDIO_API, &api) == 0 || errno == EINVAL) {
			*ret = s;
			return 0;
		}
	}
	err = dirty_uffd_api(s->uffd, DIRTY_UFFD_ASYNC_FEATURES, why, sizeof(why));
	if (err)
		goto fail;
	*ret = s;
	return 0;
fail:
	dirty_log(t, LOG_ERR, "uffd-async: %s", why);
	state_free(s);
	return err;
}

static void uffd_async_close(struct dirty_tracker *t, void *state)
{
	(void)t;
	state_free(state);
}

static int write_protect(struct dirty_tracker *t, uintptr_t start, uintptr_t end, bool protect)
{
	struct uffdio_writeprotect wp = {
		.range = { .start = start, .len = end - start },
		.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
	};

	return ioctl(state_of(t)->uffd, UFFDIO_WRITEPROTECT, &wp) < 0 ? -errno : 0;
}

/* ---- DIRTY_TRACKER_SPARSE: the pages that held data at the last clean ---- */

/*
 * Each sparse region keeps the set of its pages that held data at their
 * last clean (and the pages a collect reported dropped: below).  A collect
 * makes two scans of the range:
 *   1. the holes: where the set has pages, which of them hold no data now;
 *      the set's pages among them were dropped, and are reported;
 *   2. the written pages, as without the set (re-protected with clean).
 * The new set is the old one, less what is known to hold nothing and be
 * untouched, plus the written pages: no page that holds data now can be
 * outside it, for private memory gets data by a write (scan 2), and a page
 * dropped between the scans is still in it (and reported next time).  The
 * set only ever needs pages that exist: each scan costs what is populated,
 * and matches few pages (not every populated one: the kernel's output per
 * matched page is what a scan of dense memory spends its time on).
 *
 * What is a hole depends on the memory:
 *   - private anonymous memory, shared memory and files: no page-table
 *     entry, or the zero page not protected yet (read after a drop).  A
 *     protected zero page is neither a hole nor data: the set forgets it.
 *     A protection marker (swapped, for the kernel) holds data: in shared
 *     memory it is the kernel's, left on a protected page it unmapped
 *     (reclaim, MADV_DONTNEED), whose contents are still in the file; in
 *     private memory it is ours (below).
 *   - a private file mapping: anything but a present private copy (a page
 *     of the file's page cache holds what the file does; a protected copy
 *     dropped leaves a marker, which looks like a copy swapped out: taken
 *     as a hole, a copy swapped out is reported once, a false positive).
 *   - hugetlb: anything not present (a clean leaves markers in every hole,
 *     and hugetlb memory is never swapped).
 *
 * A page reported dropped is read by the caller after the call, and may
 * hold what a write put there meanwhile: it stays in the set, so that
 * dropped again it is reported again, and gets a protection marker, which
 * makes it count as holding data (not reported again) for as long as
 * nothing drops it, and a write to it reported.  Private file mappings and
 * hugetlb: their markers are the kernel's too (a drop leaves one), and
 * cannot say that: a page reported dropped leaves the set, and what a write
 * puts there is lost if it is dropped again before the next collect
 * (libdirty.h).
 */

static bool keeps_dropped(const struct dirty_region *r)
{
	return r->kind != DIRTY_MEM_FILE_PRIVATE && r->kind != DIRTY_MEM_HUGETLB;
}

/* Scan 1: the pages that hold no data, with what tells them apart. */
static void holes_arg_init(const struct dirty_region *r, struct pm_scan_arg *arg,
			   uintptr_t start, uintptr_t end)
{
	*arg = (struct pm_scan_arg){
		.size = sizeof(*arg),
		.flags = PM_SCAN_CHECK_WPASYNC,
		.start = start,
		.end = end,
	};
	if (r->kind == DIRTY_MEM_HUGETLB) {
		/* not present */
		arg->category_inverted = PAGE_IS_PRESENT;
		arg->category_mask = PAGE_IS_PRESENT;
	} else if (r->kind == DIRTY_MEM_FILE_PRIVATE) {
		/* not present, or a page of the file */
		arg->category_inverted = PAGE_IS_PRESENT;
		arg->category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_FILE;
	} else {
		/* not swapped, and not present or the zero page */
		arg->category_inverted = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
		arg->category_mask = PAGE_IS_SWAPPED;
		arg->category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_PFNZERO;
		arg->return_mask = PAGE_IS_PFNZERO | PAGE_IS_WRITTEN;
	}
}

/* Scan 2: the written pages that hold data (what a sparse region reports written). */
static void written_arg_init(const struct dirty_region *r, struct pm_scan_arg *arg,
			     uintptr_t start, uintptr_t end, bool protect)
{
	*arg = (struct pm_scan_arg){
		.size = sizeof(*arg),
		.flags = PM_SCAN_CHECK_WPASYNC | (protect ? PM_SCAN_WP_MATCHING : 0),
		.start = start,
		.end = end,
		.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
		.category_inverted = PAGE_IS_PFNZERO,
		.category_mask = PAGE_IS_WRITTEN | PAGE_IS_PFNZERO,
		.return_mask = PAGE_IS_WRITTEN,
	};
	if (r->kind == DIRTY_MEM_HUGETLB)
		arg->category_anyof_mask = PAGE_IS_PRESENT;
	/* which written pages are private copies, the set's */
	if (r->kind == DIRTY_MEM_FILE_PRIVATE)
		arg->return_mask |= PAGE_IS_PRESENT | PAGE_IS_FILE;
}

/* Does a written run (scan 2) hold data of the set's? */
static bool written_holds_data(const struct dirty_region *r, uint64_t categories)
{
	if (r->kind == DIRTY_MEM_FILE_PRIVATE)
		return (categories & PAGE_IS_PRESENT) && !(categories & PAGE_IS_FILE);
	return true;
}

struct sparse_region {
	struct dirty_run_set populated; /* held data at the last clean, or reported dropped */
};

static void sparse_region_free(struct dirty_region *r)
{
	struct sparse_region *sr = r->priv;

	if (sr)
		dirty_run_set_free(&sr->populated);
	free(sr);
	r->priv = NULL;
}

/* Runs in address order, of one collect. */
struct span_list {
	struct dirty_span *v;
	size_t n, cap;
};

static int span_list_reserve(struct span_list *l, size_t cap)
{
	struct dirty_span *v = reallocarray(l->v, cap, sizeof(*v));

	if (!v)
		return -ENOMEM;
	l->v = v;
	l->cap = cap;
	return 0;
}

/*
 * Append [start, end), after every run already there.  Without memory:
 * -ENOMEM, or with widen the last run is widened over it (a superset).
 */
static int span_list_add(struct span_list *l, uintptr_t start, uintptr_t end, bool widen)
{
	if (l->n && l->v[l->n - 1].end >= start) {
		if (end > l->v[l->n - 1].end)
			l->v[l->n - 1].end = end;
		return 0;
	}
	if (dirty_grow((void **)&l->v, &l->cap, l->n + 1, sizeof(*l->v))) {
		if (!widen || !l->n)
			return -ENOMEM;
		l->v[l->n - 1].end = end;
		return 0;
	}
	l->v[l->n++] = (struct dirty_span){ start, end };
	return 0;
}

/*
 * Holes between two runs of the set this large or larger are not scanned
 * over: the kernel would report every missing page table of them (a sparse
 * reservation of a terabyte has tens of thousands), for nothing.
 */
#define HOLES_WINDOW_GAP ((uintptr_t)2 << 20)

/*
 * Scan 1 where the set has pages in [start, end): the set's pages that are
 * holes go to dropped; those the set must forget (a protected zero page;
 * with forget_dropped, the dropped ones too) to forget.  Nothing changes in
 * the kernel: an error (-ENOMEM, or the scan's) leaves everything as it was.
 */
static int holes_find(struct dirty_tracker *t, struct dirty_region *r, uintptr_t start,
		      uintptr_t end, struct page_region *vec, size_t vec_max,
		      bool forget_dropped, struct span_list *dropped, struct span_list *forget)
{
	const struct dirty_run_set *set = &((struct sparse_region *)r->priv)->populated;
	size_t index = dirty_run_set_lower_bound(set, start), next = index;
	struct pm_scan_arg arg;
	int stalls = 0;

	while (next < set->n && set->v[next].start < end) {
		/* a window: runs of the set with small holes between them */
		uintptr_t window_start = set->v[next].start > start ? set->v[next].start : start;
		uintptr_t window_end = set->v[next].end;

		while (++next < set->n && set->v[next].start < end &&
		       set->v[next].start - window_end < HOLES_WINDOW_GAP)
			window_end = set->v[next].end;
		if (window_end > end)
			window_end = end;
		holes_arg_init(r, &arg, window_start, window_end);
		arg.vec = (uintptr_t)vec;
		arg.vec_len = vec_max;
		while (arg.start < window_end) {
			int n = pagemap_scan(t, &arg), err;
			uint64_t walked;

			if (n < 0)
				return n;
			walked = arg.walk_end;
			if (n > 0 && vec[n - 1].end > walked)
				walked = vec[n - 1].end;
			if (walked <= arg.start && ++stalls > 1000)
				return -EAGAIN; /* the kernel must move on */
			for (int i = 0; i < n; i++) {
				bool zero_protected = (vec[i].categories & PAGE_IS_PFNZERO) &&
						      !(vec[i].categories & PAGE_IS_WRITTEN);

				/* the set's pages in the run */
				while (index < set->n && set->v[index].end <= vec[i].start)
					index++;
				for (size_t k = index; k < set->n && set->v[k].start < vec[i].end; k++) {
					uintptr_t a = set->v[k].start > vec[i].start ? set->v[k].start
										    : vec[i].start;
					uintptr_t b = set->v[k].end < vec[i].end ? set->v[k].end
										  : vec[i].end;

					err = zero_protected ? 0 : span_list_add(dropped, a, b, false);
					if (!err && (zero_protected || forget_dropped))
						err = span_list_add(forget, a, b, false);
					if (err)
						return err;
				}
			}
			arg.start = walked;
		}
	}
	return 0;
}

/* One collect of a sparse region, for sparse_scan(). */
struct sparse_walk {
	struct dirty_tracker *t;
	struct dirty_region *r;
	const struct span_list *dropped;
	size_t index;            /* a cursor into dropped, forward only */
	uintptr_t cur;           /* everything before it is done */
	struct dirty_sink *sink; /* NULL: a clean, nothing reported */
	bool mark;               /* protect what is reported dropped (keeps_dropped()) */
};

/*
 * Feed the dropped pages in [w->cur, gap_end) to the sink.  Returns false,
 * w->cur at the first page not fed, if the sink is full.
 */
static bool feed_dropped(struct sparse_walk *w, uintptr_t gap_end)
{
	const struct span_list *d = w->dropped;

	if (w->cur >= gap_end)
		return true;
	while (w->index < d->n && d->v[w->index].end <= w->cur)
		w->index++;
	for (; w->sink && w->index < d->n && d->v[w->index].start < gap_end; w->index++) {
		uintptr_t a = d->v[w->index].start > w->cur ? d->v[w->index].start : w->cur;
		uintptr_t b = d->v[w->index].end < gap_end ? d->v[w->index].end : gap_end;

		if (!dirty_sink_add(w->sink, a, b)) {
			w->cur = a;
			return false;
		}
		if (w->mark && write_protect(w->t, a, b, true))
			dirty_log(w->t, LOG_DEBUG, "uffd-async: cannot mark %#lx-%#lx, dropped: it "
				  "will be reported again", (unsigned long)a, (unsigned long)b);
		if (b < d->v[w->index].end)
			break; /* the rest of the run is after a written one */
	}
	w->cur = gap_end;
	return true;
}

/*
 * The runs of [start, end) of a set less those of forget, for
 * merge_into(): next() gives them in order, false at the end.
 */
struct set_less {
	const struct dirty_run_set *set;
	const struct span_list *forget;
	size_t index, fi;
	uintptr_t cur, end;
};

static bool set_less_next(struct set_less *q, struct dirty_span *ret)
{
	while (q->cur < q->end && q->index < q->set->n && q->set->v[q->index].start < q->end) {
		const struct dirty_span *p = &q->set->v[q->index];
		uintptr_t a = p->start > q->cur ? p->start : q->cur;
		uintptr_t b = p->end < q->end ? p->end : q->end;

		while (q->fi < q->forget->n && q->forget->v[q->fi].end <= a)
			q->fi++;
		if (q->fi < q->forget->n && q->forget->v[q->fi].start <= a) {
			/* forgotten from a on */
			q->cur = q->forget->v[q->fi].end;
		} else {
			if (q->fi < q->forget->n && q->forget->v[q->fi].start < b)
				b = q->forget->v[q->fi].start;
			q->cur = b;
			if (a < b) {
				*ret = (struct dirty_span){ a, b };
				return true;
			}
		}
		if (q->cur >= p->end)
			q->index++;
	}
	return false;
}

/*
 * The set over [start, end), from now on: what it held less forget, plus
 * the written runs that hold data.  Cannot fail.
 */
static void set_update(struct sparse_region *sr, uintptr_t start, uintptr_t end,
		       const struct span_list *forget, const struct span_list *written,
		       struct dirty_run_set *b)
{
	struct set_less q = { .set = &sr->populated, .forget = forget, .cur = start, .end = end,
			      .index = dirty_run_set_lower_bound(&sr->populated, start) };
	struct dirty_span k;
	bool more = set_less_next(&q, &k);
	size_t wi = 0;

	while (more || wi < written->n) {
		if (wi < written->n && written->v[wi].start >= end) {
			wi = written->n;
			continue;
		}
		if (more && (wi == written->n || k.start <= written->v[wi].start)) {
			dirty_run_set_builder_add(b, &sr->populated, k.start, k.end);
			more = set_less_next(&q, &k);
		} else {
			uintptr_t we = written->v[wi].end < end ? written->v[wi].end : end;

			dirty_run_set_builder_add(b, &sr->populated, written->v[wi].start, we);
			wi++;
		}
	}
	dirty_run_set_replace(&sr->populated, start, end, b);
}

/*
 * The sparse form of collect, and of clean (sink NULL: nothing reported,
 * every page clean).  Scan 1, then scan 2, whose written runs are fed to
 * the sink in address order with the dropped pages between them.  With
 * protect the kernel re-protects the written pages it returns; with rebuild
 * the set of [start, *done) is brought up to date.  When the sink is full,
 * the written pages the kernel protected and that could not be fed are made
 * written again, and *done is where the next call resumes.
 */
static int sparse_scan(struct dirty_tracker *t, struct dirty_region *r, uintptr_t start,
		       uintptr_t end, bool protect, bool rebuild, struct dirty_sink *sink,
		       uintptr_t *done)
{
	struct sparse_region *sr = r->priv;
	struct page_region scratch[SCRATCH_REGIONS], *vec = malloc(SPARSE_REGIONS * sizeof(*vec));
	size_t vec_max = vec ? SPARSE_REGIONS : SCRATCH_REGIONS;
	bool protect_after = protect && r->kind == DIRTY_MEM_HUGETLB;
	struct span_list dropped = { 0 }, forget = { 0 }, written = { 0 };
	struct dirty_run_set b = { 0 };
	struct sparse_walk w = {
		.t = t, .r = r, .dropped = &dropped, .cur = start, .sink = sink,
		.mark = rebuild && keeps_dropped(r),
	};
	struct pm_scan_arg arg;
	uintptr_t walked;
	int n = 0, i, err, stalls = 0;
	bool full = false;

	if (!vec)
		vec = scratch; /* slower, as good */
	/* everything that can fail for want of memory fails before anything changes */
	err = rebuild ? dirty_run_set_builder_init(&b, &sr->populated) : 0;
	if (!err && rebuild) /* room for one: it widens without memory */
		err = span_list_reserve(&written, 64);
	if (!err)
		err = holes_find(t, r, start, end, vec, vec_max, !sink || !keeps_dropped(r),
				 &dropped, &forget);
	if (err)
		goto out;
	written_arg_init(r, &arg, start, end, protect && !protect_after);
	while (w.cur < end && !full) {
		size_t room = sink ? dirty_sink_room(sink) : vec_max;

		if (!room)
			break;
		arg.start = w.cur;
		arg.vec = (uintptr_t)vec;
		arg.vec_len = room < vec_max ? room : vec_max;
		n = pagemap_scan(t, &arg);
		if (n < 0) {
			err = n;
			break;
		}
		walked = (uintptr_t)arg.walk_end;
		if (n > 0 && vec[n - 1].end > walked)
			walked = (uintptr_t)vec[n - 1].end;
		if (walked <= w.cur && !n && ++stalls > 1000) {
			err = -EAGAIN; /* the kernel must move on */
			break;
		}
		for (i = 0; i < n; i++) {
			uintptr_t run_start = (uintptr_t)vec[i].start, run_end = (uintptr_t)vec[i].end;

			if (!feed_dropped(&w, run_start) ||
			    (sink && !dirty_sink_add(sink, run_start, run_end))) {
				full = true;
				break;
			}
			if (protect_after) {
				err = write_protect(t, run_start, run_end, true);
				if (err)
					break;
			}
			if (rebuild && written_holds_data(r, vec[i].categories))
				span_list_add(&written, run_start, run_end, true);
			w.cur = run_end;
		}
		if (err)
			break;
		/* written pages the kernel protected and that were not fed: written again */
		for (; full && protect && !protect_after && i < n; i++)
			write_protect(t, (uintptr_t)vec[i].start, (uintptr_t)vec[i].end, false);
		if (!full && !feed_dropped(&w, walked))
			full = true;
	}
	/* what was learned of [start, w.cur) stands, whatever stopped the walk */
	if (rebuild)
		set_update(sr, start, w.cur, &forget, &written, &b);
	if (!err)
		*done = w.cur;
out:
	if (rebuild)
		dirty_run_set_free(&b); /* what set_update() did not take */
	free(dropped.v);
	free(forget.v);
	free(written.v);
	if (vec != scratch)
		free(vec);
	return err;
}

/*
 * Write-protect every page of [start, end).  UFFDIO_WRITEPROTECT leaves a
 * marker on pages that have no page table entry, so that a first touch
 * after the clean is seen, on every kernel.  A scan with PM_SCAN_WP_MATCHING
 * does not on all of them: Debian's 6.12 matches a range without a page
 * table only by the vma's categories, which lack PAGE_IS_WRITTEN, so it
 * leaves such a range unprotected (a read then maps the zero page
 * unprotected, and the page table's other holes read as written).
 * DIRTY_TRACKER_SPARSE wants exactly that, and uses the scan: it protects
 * only pages that exist.  A vma that is not ours (ENOENT, or EPERM from the
 * scan) means the memory was replaced: -ESTALE.
 */
/*
 * hugetlb under DIRTY_TRACKER_SPARSE, after a clean that protected the whole
 * range: the set of [start, end) becomes its present pages.  A page written
 * in between is present (and written, hence reported).
 */
static int present_rebuild(struct dirty_tracker *t, struct dirty_region *r, uintptr_t start,
			   uintptr_t end)
{
	struct sparse_region *sr = r->priv;
	struct page_region vec[SCRATCH_REGIONS];
	struct pm_scan_arg arg = {
		.size = sizeof(arg),
		.flags = PM_SCAN_CHECK_WPASYNC,
		.start = start,
		.end = end,
		.vec = (uintptr_t)vec,
		.vec_len = SCRATCH_REGIONS,
		.category_mask = PAGE_IS_PRESENT,
	};
	struct dirty_run_set b;
	int stalls = 0;

	if (dirty_run_set_builder_init(&b, &sr->populated))
		return -ENOMEM;
	while (arg.start < end) {
		int n = pagemap_scan(t, &arg);
		uint64_t walked;

		if (n < 0) {
			dirty_run_set_free(&b);
			return n;
		}
		for (int i = 0; i < n; i++)
			dirty_run_set_builder_add(&b, &sr->populated, vec[i].start, vec[i].end);
		walked = n > 0 && vec[n - 1].end > arg.walk_end ? vec[n - 1].end : arg.walk_end;
		if (walked <= arg.start && ++stalls > 1000) {
			dirty_run_set_free(&b);
			return -EAGAIN;
		}
		arg.start = walked;
	}
	dirty_run_set_replace(&sr->populated, start, end, &b);
	return 0;
}

static int uffd_async_clean(struct dirty_tracker *t, struct dirty_region *r, uintptr_t start,
			    uintptr_t end)
{
	uintptr_t done;
	int err;

	if (r->kind == DIRTY_MEM_HUGETLB || !(t->flags & DIRTY_TRACKER_SPARSE)) {
		if (t->pid && dirty_pagemap_alive(state_of(t)->pagemap_fd))
			return -ESRCH;
		err = write_protect(t, start, end, true);
		if (err)
			return err == -ENOENT ? -ESTALE : err;
		if (!(t->flags & DIRTY_TRACKER_SPARSE))
			return 0;
		/* then what holds data: a page populated meanwhile is written, hence reported */
		err = present_rebuild(t, r, start, end);
		if (err) /* the range keeps its dirty pages, and more */
			write_protect(t, start, end, false);
		return err;
	}
	/* the populated set of the range becomes what the protecting scan finds */
	return sparse_scan(t, r, start, end, true, true, NULL, &done);
}

static int uffd_async_track(struct dirty_tracker *t, struct dirty_region *r)
{
	struct uffdio_register reg = {
		.range = { .start = r->start, .len = r->end - r->start },
		.mode = UFFDIO_REGISTER_MODE_WP,
	};
	struct uffdio_range range = reg.range;
	struct async_state *s = state_of(t);
	struct sparse_region *sr = NULL;
	int err;

	if (t->flags & DIRTY_TRACKER_SPARSE) {
		sr = calloc(1, sizeof(*sr));
		if (!sr || dirty_run_set_init(&sr->populated)) {
			free(sr);
			return -ENOMEM;
		}
		r->priv = sr;
	}
	if (ioctl(s->uffd, UFFDIO_REGISTER, &reg) < 0) {
		err = -errno;
		sparse_region_free(r);
		if (t->pid && dirty_pagemap_alive(s->pagemap_fd))
			return -ESRCH; /* the target exec'ed: our userfaultfd is of its old mm */
		/* EBUSY: registered with another userfaultfd, such as another tracker */
		dirty_log(t, LOG_ERR, "uffd-async: UFFDIO_REGISTER %#lx-%#lx: %s",
			  (unsigned long)r->start, (unsigned long)r->end, strerror(-err));
		return err == -EBUSY ? -EEXIST : err;
	}
	err = uffd_async_clean(t, r, r->start, r->end);
	if (!err && t->given_uffd >= 0) {
		/*
		 * A userfaultfd acts on the memory of the process that made
		 * it: the target's pagemap must now see the range registered,
		 * or the descriptor came from another process (whose memory
		 * at these addresses was registered just now, and is let go).
		 */
		struct pm_scan_arg arg;

		scan_arg_init(t, &arg, r->start, r->end, false);
		err = pagemap_scan(t, &arg);
		err = err < 0 ? err : 0;
	}
	/* the check above, or the sparse clean's own scan, found it not registered */
	if (err == -ESTALE && t->given_uffd >= 0) {
		dirty_log(t, LOG_ERR, "uffd-async: the given userfaultfd is not process %d's",
			  (int)t->pid);
		err = -EBADF;
	}
	if (err) {
		ioctl(s->uffd, UFFDIO_UNREGISTER, &range);
		sparse_region_free(r);
	}
	return err;
}

static void uffd_async_untrack(struct dirty_tracker *t, struct dirty_region *r)
{
	struct uffdio_range range = { .start = r->start, .len = r->end - r->start };

	/*
	 * A userfaultfd acts on the mm that created it, whoever calls: in a
	 * forked child, unregistering would stop the parent's tracking.  The
	 * child's own memory lost its registration at fork anyway.
	 */
	if (dirty_tracker_forked(t)) {
		sparse_region_free(r);
		return;
	}
	/*
	 * Unregistering also drops the uffd-wp bits: writes no longer trap.
	 * A gone region may still have a part mapped and registered; the
	 * claim kept anybody else from registering the rest meanwhile.
	 */
	if (ioctl(state_of(t)->uffd, UFFDIO_UNREGISTER, &range) < 0 && !r->gone)
		dirty_log(t, LOG_DEBUG, "uffd-async: UFFDIO_UNREGISTER: %s", strerror(errno));
	sparse_region_free(r);
}

static void prefault(uintptr_t start, size_t len)
{
	size_t page = dirty_page_size();

	for (uintptr_t a = start; a < start + len; a = (a & ~(uintptr_t)(page - 1)) + page) {
		volatile char *c = (volatile char *)a;

		*c = *c;
	}
}

/*
 * The kernel writes struct page_region (24 bytes) and the caller wants struct
 * dirty_range (16 bytes).  Rather than copy through a buffer of our own, the
 * kernel writes into the free tail of the caller's array and each region is
 * converted in place, front to back: output i (with merging, at most i slots
 * after the first free one) ends at or before input i + 1 begins, and input i
 * is read before output i is written.
 */
static int uffd_async_collect(struct dirty_tracker *t, struct dirty_region *r, uintptr_t start,
			      uintptr_t end, bool clean, struct dirty_sink *sink, uintptr_t *done)
{
	struct page_region scratch[SCRATCH_REGIONS];
	bool protect_after = clean && r->kind == DIRTY_MEM_HUGETLB;
	uintptr_t resume;
	struct pm_scan_arg arg;
	size_t room;
	int n, i, err, stalls = 0;

	if (t->flags & DIRTY_TRACKER_SPARSE)
		return sparse_scan(t, r, start, end, clean, clean, sink, done);
	scan_arg_init(t, &arg, start, end, clean && !protect_after);
	while (arg.start < end) {
		room = dirty_sink_room(sink);
		if (!room)
			break;
		if (!sink->bitmap && room * sizeof(*sink->out) / sizeof(scratch[0]) > 0) {
			arg.vec = (uintptr_t)(sink->out + sink->n);
			arg.vec_len = room * sizeof(*sink->out) / sizeof(scratch[0]);
			if (arg.vec_len > MAX_REGIONS_PER_SCAN)
				arg.vec_len = MAX_REGIONS_PER_SCAN;
		} else {
			arg.vec = (uintptr_t)scratch;
			arg.vec_len = room < SCRATCH_REGIONS ? room : SCRATCH_REGIONS;
		}
		/*
		 * Should the kernel fail to write the vector (EFAULT: memory it
		 * cannot fault in, such as a buffer tracked by mprotect), the
		 * pages it re-protected would be lost with it.  Make sure the
		 * caller's buffer is writable first, from user space.
		 */
		if (clean && arg.vec != (uintptr_t)scratch)
			prefault(arg.vec, arg.vec_len * sizeof(scratch[0]));
		n = pagemap_scan(t, &arg);
		if (n < 0)
			return n;
		resume = (uintptr_t)arg.walk_end;
		for (i = 0; i < n; i++) {
			const struct page_region *pr = (const struct page_region *)arg.vec + i;
			uintptr_t run_start = (uintptr_t)pr->start, run_end = (uintptr_t)pr->end;
			bool added;

			if (protect_after) {
				err = write_protect(t, run_start, run_end, true);
				if (err)
					return err;
			}
			added = dirty_sink_add(sink, run_start, run_end);
			assert(added);
			(void)added;
			if (run_end > resume)
				resume = run_end;
		}
		/* the kernel may stop early with nothing to show; it must move on */
		if (resume <= arg.start && ++stalls > 1000)
			return -EAGAIN;
		arg.start = resume;
	}
	*done = arg.start < end ? (uintptr_t)arg.start : end;
	return 0;
}

/*
 * Remove write-protection: the pages read as written again.  Used only to
 * give back pages a collect re-cleaned and could not deliver.
 */
static void uffd_async_redirty(struct dirty_tracker *t, struct dirty_region *r, uintptr_t start,
			       uintptr_t end)
{
	struct sparse_region *sr = r->priv;
	int err = write_protect(t, start, end, false);

	/* a dropped page given back: a hole, which only the populated set can report */
	if (sr)
		dirty_run_set_add(&sr->populated, start, end);
	if (err)
		dirty_log(t, LOG_ERR, "uffd-async: cannot mark %#lx-%#lx dirty again: %s",
			  (unsigned long)start, (unsigned long)end, strerror(-err));
}

static void uffd_async_unprotect(struct dirty_tracker *t, struct dirty_region *r)
{
	uffd_async_redirty(t, r, r->start, r->end);
}

/* ---- can it run here ---- */

static int probe_uffd_async(pid_t pid, char *why, size_t why_len)
{
	char target[DIRTY_REASON_LEN];
	struct page_region region;
	struct pm_scan_arg arg;
	int uffd, pagemap, err;
	size_t page = dirty_page_size();
	char *mem;

	if (pid) {
		/*
		 * The kernel's features, as this process sees them, then the
		 * target.  A failure here is the kernel's (or this process's),
		 * never the target's.
		 */
		err = probe_uffd_async(0, why, why_len);
		if (err)
			return dirty_target_error(err) ? -EOPNOTSUPP : err;
		/* from /proc, without touching it: the injection itself checks the rest */
		err = dirty_remote_check(pid, true, target, sizeof(target));
		if (err)
			return dirty_reason(why, why_len, err, "%s", target);
		return dirty_reason(why, why_len, 0,
				    "userfaultfd WP_ASYNC and PAGEMAP_SCAN work (Linux 6.7+); %s",
				    target);
	}
	uffd = dirty_uffd_open(O_CLOEXEC | O_NONBLOCK, why, why_len);
	if (uffd < 0)
		return uffd;
	err = dirty_uffd_api(uffd, DIRTY_UFFD_ASYNC_FEATURES, why, why_len);
	if (err)
		goto out_uffd;
	pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (pagemap < 0) {
		err = dirty_reason(why, why_len, -errno, "cannot open /proc/self/pagemap: %s",
				   strerror(errno));
		goto out_uffd;
	}
	mem = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		err = -ENOMEM;
		goto out_pagemap;
	}
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)mem, .len = page },
		.mode = UFFDIO_REGISTER_MODE_WP,
	};
	if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) {
		err = dirty_reason(why, why_len, -errno,
				   "UFFDIO_REGISTER in write-protect mode failed: %s",
				   strerror(errno));
		goto out_mem;
	}
	/* clean, write, and the scan must see exactly that page */
	mem[0] = 1;
	arg = (struct pm_scan_arg){
		.size = sizeof(arg),
		.flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
		.start = (uintptr_t)mem,
		.end = (uintptr_t)mem + page,
		.category_mask = PAGE_IS_WRITTEN,
		.return_mask = PAGE_IS_WRITTEN,
	};
	if (ioctl(pagemap, PAGEMAP_SCAN, &arg) < 0) {
		err = errno == ENOTTY || errno == EINVAL ? -EOPNOTSUPP : -errno;
		dirty_reason(why, why_len, err,
			     "the kernel has no PAGEMAP_SCAN ioctl on /proc/PID/pagemap (6.7+): %s",
			     strerror(errno));
		goto out_mem;
	}
	mem[0] = 2;
	arg.flags = 0;
	arg.vec = (uintptr_t)&region;
	arg.vec_len = 1;
	if (ioctl(pagemap, PAGEMAP_SCAN, &arg) != 1 || region.start != (uintptr_t)mem) {
		err = dirty_reason(why, why_len, -EOPNOTSUPP,
				   "PAGEMAP_SCAN did not report a page written after "
				   "write-protection");
		goto out_mem;
	}
	err = dirty_reason(why, why_len, 0,
			   "userfaultfd WP_ASYNC and PAGEMAP_SCAN work (Linux 6.7+)");
out_mem:
	munmap(mem, page);
out_pagemap:
	close(pagemap);
out_uffd:
	close(uffd);
	return err;
}

/* ---- the table ---- */

const struct dirty_backend dirty_backend_uffd_async = {
	.name = "uffd-async",
	.flags = DIRTY_BACKEND_TAKES_UFFD,
	.probe = probe_uffd_async,
	.open = uffd_async_open,
	.close = uffd_async_close,
	.track = uffd_async_track,
	.untrack = uffd_async_untrack,
	.clean = uffd_async_clean,
	.collect = uffd_async_collect,
	.redirty = uffd_async_redirty,
	.unprotect = uffd_async_unprotect,
};

DIRTY_EXPORT int dirty_userfaultfd_share(void)
{
	int fd = dirty_uffd_open(O_CLOEXEC | O_NONBLOCK, NULL, 0), err;

	/* the kind this process's own trackers make, with the features set */
	if (fd < 0)
		return fd;
	err = dirty_uffd_api(fd, DIRTY_UFFD_ASYNC_FEATURES, NULL, 0);
	if (err) {
		close(fd);
		return err;
	}
	return fd;
}
