/* SPDX-License-Identifier: MIT */
/*
 * A set of pages kept as sorted, disjoint, coalesced runs: what memory it
 * describes costs what the set holds, not the size of the range (a 1 TiB
 * reservation with a few touched chunks is a few runs).
 *
 * The operations a collect needs cannot fail: a collect that has re-protected
 * pages must not lose what it learned for want of memory.  Without memory,
 * they widen a neighbouring run instead, so that the set only ever grows to
 * a superset of what it should hold (a false positive for its user, never a
 * loss).  For that the array always has room for one run more (cap >= 1).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "libdirty-int.h"

#define RUN_SET_MIN_CAP 16

int dirty_run_set_init(struct dirty_run_set *s)
{
	s->v = malloc(RUN_SET_MIN_CAP * sizeof(*s->v));
	if (!s->v)
		return -ENOMEM;
	s->n = 0;
	s->cap = RUN_SET_MIN_CAP;
	return 0;
}

void dirty_run_set_free(struct dirty_run_set *s)
{
	free(s->v);
	s->v = NULL;
	s->n = s->cap = 0;
}

size_t dirty_run_set_lower_bound(const struct dirty_run_set *s, uintptr_t addr)
{
	size_t lo = 0, hi = s->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (s->v[mid].end <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static bool grow(struct dirty_run_set *s, size_t want)
{
	return dirty_grow((void **)&s->v, &s->cap, want, sizeof(*s->v)) == 0;
}

void dirty_run_set_add(struct dirty_run_set *s, uintptr_t start, uintptr_t end)
{
	/* the runs that touch [start, end) (overlap or adjacency) merge with it */
	size_t i = dirty_run_set_lower_bound(s, start), j;

	if (i > 0 && s->v[i - 1].end == start)
		i--;
	for (j = i; j < s->n && s->v[j].start <= end; j++) {
		if (s->v[j].start < start)
			start = s->v[j].start;
		if (s->v[j].end > end)
			end = s->v[j].end;
	}
	if (j == i && !grow(s, s->n + 1)) {
		/* no room for a run of its own: widen a neighbour over the gap */
		if (i > 0)
			start = s->v[--i].start;
		else
			end = s->v[j++].end; /* cap >= 1 and no room: the set is not empty */
	}
	if (j == i) {
		memmove(s->v + i + 1, s->v + i, (s->n - i) * sizeof(*s->v));
		s->n++;
		j = i + 1;
	}
	s->v[i].start = start;
	s->v[i].end = end;
	memmove(s->v + i + 1, s->v + j, (s->n - j) * sizeof(*s->v));
	s->n -= j - i - 1;
}

int dirty_run_set_builder_init(struct dirty_run_set *b, const struct dirty_run_set *replaced)
{
	b->n = 0;
	b->cap = 0;
	b->v = NULL;
	return grow(b, replaced->n + 1 + RUN_SET_MIN_CAP) ? 0 : -ENOMEM;
}

void dirty_run_set_builder_add(struct dirty_run_set *b, const struct dirty_run_set *replaced,
			       uintptr_t start, uintptr_t end)
{
	/* dirty_run_set_replace() needs room for what it keeps of the old set */
	size_t keep = replaced->n + 1;

	if (b->n && b->v[b->n - 1].end >= start) {
		if (end > b->v[b->n - 1].end)
			b->v[b->n - 1].end = end;
		return;
	}
	if (b->n + 1 + keep > b->cap && !grow(b, 2 * (b->n + 1 + keep))) {
		/* builder_init() left room: b->n > 0 here */
		b->v[b->n - 1].end = end;
		return;
	}
	b->v[b->n].start = start;
	b->v[b->n++].end = end;
}

void dirty_run_set_replace(struct dirty_run_set *s, uintptr_t start, uintptr_t end,
			   struct dirty_run_set *b)
{
	size_t first = dirty_run_set_lower_bound(s, start), last = first, before, n;
	struct dirty_span head = { 0, 0 }, tail = { 0, 0 };

	/* s's runs [0, first) end at or before start; [last, n) start at or after end */
	while (last < s->n && s->v[last].start < end)
		last++;
	if (first < last && s->v[first].start < start)
		head = (struct dirty_span){ s->v[first].start, start };
	if (first < last && s->v[last - 1].end > end)
		tail = (struct dirty_span){ end, s->v[last - 1].end };
	before = first + (head.end > head.start);
	/* the builder kept room for all of s and one run more: nothing is allocated */
	memmove(b->v + before, b->v, b->n * sizeof(*b->v));
	memcpy(b->v, s->v, first * sizeof(*b->v));
	if (head.end > head.start)
		b->v[first] = head;
	n = before + b->n;
	if (tail.end > tail.start)
		b->v[n++] = tail;
	memcpy(b->v + n, s->v + last, (s->n - last) * sizeof(*b->v));
	n += s->n - last;
	b->n = n;
	/* coalesce at the seams */
	n = 0;
	for (size_t i = 0; i < b->n; i++) {
		if (n && b->v[n - 1].end >= b->v[i].start) {
			if (b->v[i].end > b->v[n - 1].end)
				b->v[n - 1].end = b->v[i].end;
		} else {
			b->v[n++] = b->v[i];
		}
	}
	b->n = n;
	free(s->v);
	*s = *b;
	b->v = NULL;
	b->n = b->cap = 0;
}
