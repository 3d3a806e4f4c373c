/* SPDX-License-Identifier: MIT */
/* The checks of an image chain as a whole: see image-chain.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image-chain.h"

/* A region live at some point of the walk: its range and which one it is. */
struct live {
	uint64_t start, end;
	size_t identity; /* index in the identities: the base image region that began it */
};

struct identity {
	uint64_t since;
	const struct dirty_image_region *region;
};

struct walk {
	struct chain_image *images;
	size_t *order;
	char *why;
	size_t why_len;
	struct identity *ids;
	size_t nids;
	struct live *live, *next; /* now, and being built */
	size_t nlive, nnext;
};

static int reason(struct walk *w, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int reason(struct walk *w, int err, const char *fmt, ...)
{
	va_list ap;

	if (w->why && w->why_len) {
		va_start(ap, fmt);
		vsnprintf(w->why, w->why_len, fmt, ap);
		va_end(ap);
	}
	return err;
}

/* "FILE@OFFSET (sequence S, base)" for messages; one of two static buffers. */
static const char *image_name(const struct chain_image *img)
{
	static char buf[2][600];
	static unsigned which;
	char *b = buf[which++ % 2];

	snprintf(b, sizeof(buf[0]), "%.500s@%lld (sequence %" PRIu64 ", %s)", img->file,
		 (long long)img->offset, img->header.sequence,
		 img->header.flags & DIRTY_IMAGE_BASE ? "base" : "incremental");
	return b;
}

static int region_name(const struct dirty_image_region *r, char *buf, size_t len)
{
	return snprintf(buf, len, "%#" PRIx64 "-%#" PRIx64 "%s%.*s", r->start, r->end,
			r->name[0] ? " " : "", (int)sizeof(r->name), r->name);
}

static bool mul_overflows(size_t a, size_t b, size_t *ret)
{
	return __builtin_mul_overflow(a, b, ret);
}

static void *alloc_array(size_t n, size_t size)
{
	size_t bytes;

	if (mul_overflows(n ? n : 1, size, &bytes))
		return NULL;
	return calloc(1, bytes);
}

/* By sequence, then by the order the images were given. */
static int by_sequence(const void *a, const void *b, void *images)
{
	const struct chain_image *img = images;
	size_t x = *(const size_t *)a, y = *(const size_t *)b;
	uint64_t sx = img[x].header.sequence, sy = img[y].header.sequence;

	if (sx != sy)
		return sx < sy ? -1 : 1;
	return x < y ? -1 : x > y;
}

/* What dirty_image_read() checked, again: the walk below relies on it. */
static int regions_sound(struct walk *w, const struct chain_image *img)
{
	uint64_t prev_end = 0;

	if (img->header.nregions && !img->regions)
		return reason(w, -EINVAL, "%s: no region table", image_name(img));
	for (uint64_t i = 0; i < img->header.nregions; i++) {
		const struct dirty_image_region *r = &img->regions[i];

		if (r->start >= r->end || r->start < prev_end)
			return reason(w, -EINVAL, "%s: its regions are not in address order "
				      "(not a verified image)", image_name(img));
		prev_end = r->end;
	}
	return 0;
}

/* The live region with exactly this range, or NULL; live is sorted. */
static const struct live *live_find(const struct walk *w, uint64_t start, uint64_t end)
{
	size_t lo = 0, hi = w->nlive;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (w->live[mid].start < start)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < w->nlive && w->live[lo].start == start && w->live[lo].end == end)
		return &w->live[lo];
	return NULL;
}

/* The live region that overlaps [start, end), if any (for the message). */
static const struct live *live_overlapping(const struct walk *w, uint64_t start, uint64_t end)
{
	for (size_t i = 0; i < w->nlive; i++)
		if (w->live[i].start < end && start < w->live[i].end)
			return &w->live[i];
	return NULL;
}

static int by_start(const void *a, const void *b)
{
	const struct live *x = a, *y = b;

	if (x->start != y->start)
		return x->start < y->start ? -1 : 1;
	return x->end < y->end ? -1 : x->end > y->end;
}

/*
 * Take in the images of one sequence: inc (may be NULL) continues regions
 * live before, base (may be NULL) begins new ones; every other live region
 * ends.  record: set the images' target arrays to identities.
 */
static int take_sequence(struct walk *w, struct chain_image *base, struct chain_image *inc,
			 bool record)
{
	char a[200], b[200];

	/* an exec: the new program's memory begins here, nothing continues */
	if (base && (base->header.flags & DIRTY_IMAGE_NEW_PROGRAM) && inc)
		return reason(w, -EINVAL, "%s begins a new program (exec), but %s continues "
			      "regions of the old one", image_name(base), image_name(inc));
	w->nnext = 0;
	for (uint64_t i = 0; inc && i < inc->header.nregions; i++) {
		const struct dirty_image_region *r = &inc->regions[i];
		const struct live *l = live_find(w, r->start, r->end);

		if (!l) {
			const struct live *near = live_overlapping(w, r->start, r->end);

			region_name(r, a, sizeof(a));
			if (near) {
				region_name(w->ids[near->identity].region, b, sizeof(b));
				return reason(w, -EINVAL, "%s continues region %s, but the chain has "
					      "%s there at the sequence before: its range changed "
					      "without a base image", image_name(inc), a, b);
			}
			return reason(w, -EINVAL, "%s continues region %s, which the chain does not "
				      "have at the sequence before", image_name(inc), a);
		}
		w->next[w->nnext++] = *l;
		if (record)
			inc->target[i] = (long)l->identity;
	}
	for (uint64_t i = 0; base && i < base->header.nregions; i++) {
		w->ids[w->nids] = (struct identity){ base->header.sequence, &base->regions[i] };
		w->next[w->nnext++] = (struct live){ base->regions[i].start, base->regions[i].end,
						     w->nids };
		if (record)
			base->target[i] = (long)w->nids;
		w->nids++;
	}
	/* both tables are sorted; together they must not overlap */
	qsort(w->next, w->nnext, sizeof(*w->next), by_start);
	for (size_t i = 1; i < w->nnext; i++) {
		if (w->next[i].start < w->next[i - 1].end) {
			region_name(w->ids[w->next[i - 1].identity].region, a, sizeof(a));
			region_name(w->ids[w->next[i].identity].region, b, sizeof(b));
			/* each table is sorted and live regions never overlap: base and inc */
			return reason(w, -EINVAL, "%s and %s overlap: regions %s and %s",
				      base ? image_name(base) : "?", inc ? image_name(inc) : "?", a,
				      b);
		}
	}
	{
		struct live *swap = w->live;

		w->live = w->next;
		w->next = swap;
		w->nlive = w->nnext;
	}
	return 0;
}

void chain_plan_free(struct chain_image *images, size_t n, struct chain_plan *plan)
{
	for (size_t i = 0; images && i < n; i++) {
		free(images[i].target);
		images[i].target = NULL;
	}
	free(plan->order);
	free(plan->live);
	memset(plan, 0, sizeof(*plan));
}

int chain_check(struct chain_image *images, size_t n, uint64_t upto, struct chain_plan *plan,
		char *why, size_t why_len)
{
	struct walk w = { .images = images, .why = why, .why_len = why_len };
	const struct chain_image *first;
	size_t total = 0, i, j, k;
	uint64_t expected = 0;
	long *to_live = NULL;
	int err = 0;

	memset(plan, 0, sizeof(*plan));
	if (!n)
		return reason(&w, -EINVAL, "no image");
	for (i = 0; i < n; i++) {
		err = regions_sound(&w, &images[i]);
		if (err)
			return err;
		if (__builtin_add_overflow(total, (size_t)images[i].header.nregions, &total) ||
		    images[i].header.nregions > SIZE_MAX / sizeof(struct live))
			return reason(&w, -ENOMEM, "%s: too many regions", image_name(&images[i]));
	}
	w.order = alloc_array(n, sizeof(*w.order));
	w.ids = alloc_array(total, sizeof(*w.ids));
	w.live = alloc_array(total, sizeof(*w.live));
	w.next = alloc_array(total, sizeof(*w.next));
	plan->order = alloc_array(n, sizeof(*plan->order));
	if (!w.order || !w.ids || !w.live || !w.next || !plan->order) {
		err = reason(&w, -ENOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < n; i++)
		w.order[i] = i;
	qsort_r(w.order, n, sizeof(*w.order), by_sequence, images);

	first = &images[w.order[0]];
	if (first->header.sequence || !(first->header.flags & DIRTY_IMAGE_BASE)) {
		err = reason(&w, -EINVAL, "the chain does not start with a base image (sequence 0): "
			     "the first is %s", image_name(first));
		goto out;
	}
	/* one process, one page size */
	for (i = 0; i < n; i++) {
		const struct chain_image *img = &images[i];

		if (img->header.pid != first->header.pid) {
			err = reason(&w, -EINVAL, "%s is of process %" PRIu64 ", the base image %s "
				     "of process %" PRIu64 ": images of two processes",
				     image_name(img), img->header.pid, image_name(first),
				     first->header.pid);
			goto out;
		}
		if (img->header.page_size != first->header.page_size) {
			err = reason(&w, -EINVAL, "%s has %" PRIu32 "-byte pages, the base image "
				     "%" PRIu32 "-byte ones", image_name(img), img->header.page_size,
				     first->header.page_size);
			goto out;
		}
	}

	for (i = 0; i < n; i = j) {
		struct chain_image *base = NULL, *inc = NULL;
		uint64_t seq = images[w.order[i]].header.sequence;
		bool record = seq <= upto;

		for (j = i; j < n && images[w.order[j]].header.sequence == seq; j++) {
			struct chain_image *img = &images[w.order[j]];
			struct chain_image **slot = img->header.flags & DIRTY_IMAGE_BASE ? &base : &inc;

			if (*slot) {
				err = reason(&w, -EINVAL, "two %s images with sequence %" PRIu64 ": "
					     "%s and %s (one given twice, or two chains mixed)",
					     slot == &base ? "base" : "incremental", seq,
					     image_name(*slot), image_name(img));
				goto out;
			}
			*slot = img;
		}
		if (seq != expected) {
			err = reason(&w, -EINVAL, "no image with sequence %" PRIu64 ": the chain has "
				     "a gap before %s", expected, image_name(&images[w.order[i]]));
			goto out;
		}
		for (k = i; record && k < j; k++) {
			struct chain_image *img = &images[w.order[k]];

			img->target = alloc_array(img->header.nregions, sizeof(*img->target));
			if (!img->target) {
				err = reason(&w, -ENOMEM, "out of memory");
				goto out;
			}
			plan->order[plan->napply++] = w.order[k];
		}
		err = take_sequence(&w, base, inc, record);
		if (err)
			goto out;
		if (record) {
			/* the state at the last image applied: what is written out */
			free(plan->live);
			plan->live = alloc_array(w.nlive, sizeof(*plan->live));
			if (!plan->live) {
				err = reason(&w, -ENOMEM, "out of memory");
				goto out;
			}
			plan->nlive = w.nlive;
			plan->last = seq;
			for (k = 0; k < w.nlive; k++) {
				const struct identity *id = &w.ids[w.live[k].identity];

				plan->live[k] = (struct chain_region){ .start = w.live[k].start,
								       .end = w.live[k].end,
								       .since = id->since };
				memcpy(plan->live[k].name, id->region->name, sizeof(id->region->name));
			}
			/* identities up to here: which of them are live at the end */
			free(to_live);
			to_live = alloc_array(w.nids, sizeof(*to_live));
			if (!to_live) {
				err = reason(&w, -ENOMEM, "out of memory");
				goto out;
			}
			for (k = 0; k < w.nids; k++)
				to_live[k] = -1;
			for (k = 0; k < w.nlive; k++)
				to_live[w.live[k].identity] = (long)k;
			plan->ended = w.nids - w.nlive;
		}
		expected = seq + 1;
	}
	/* the images applied write to the outputs of the regions still live */
	for (i = 0; i < plan->napply; i++) {
		struct chain_image *img = &images[plan->order[i]];

		for (uint64_t r = 0; r < img->header.nregions; r++)
			img->target[r] = to_live[img->target[r]];
	}
out:
	if (err)
		chain_plan_free(images, n, plan);
	free(to_live);
	free(w.order);
	free(w.ids);
	free(w.live);
	free(w.next);
	return err;
}
