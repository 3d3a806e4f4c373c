/* SPDX-License-Identifier: MIT */
/*
 * A tracker's regions: one sorted array, by key (memory, or a file), then
 * start; binary-searched; regions of one key never overlap.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "libdirty-int.h"

bool dirty_key_equal(struct dirty_key a, struct dirty_key b)
{
	return a.dev == b.dev && a.ino == b.ino;
}

/* Is region r before every page of key at or after at? */
static bool region_before(const struct dirty_region *r, struct dirty_key key, uintptr_t at)
{
	if (r->key.dev != key.dev)
		return r->key.dev < key.dev;
	if (r->key.ino != key.ino)
		return r->key.ino < key.ino;
	return r->end <= at;
}

size_t dirty_registry_find(const struct dirty_registry *g, struct dirty_key key, uintptr_t at)
{
	size_t lo = 0, hi = g->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (region_before(g->v[mid], key, at))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

bool dirty_registry_overlaps(const struct dirty_registry *g, struct dirty_key key,
			     uintptr_t start, uintptr_t end)
{
	size_t i = dirty_registry_find(g, key, start);

	return i < g->n && dirty_key_equal(g->v[i]->key, key) && g->v[i]->start < end;
}

int dirty_registry_insert(struct dirty_registry *g, struct dirty_region *r)
{
	size_t i;
	int err = dirty_grow((void **)&g->v, &g->cap, g->n + 1, sizeof(*g->v));

	if (err)
		return err;
	i = dirty_registry_find(g, r->key, r->start);
	memmove(g->v + i + 1, g->v + i, (g->n - i) * sizeof(*g->v));
	g->v[i] = r;
	g->n++;
	return 0;
}

void dirty_registry_remove(struct dirty_registry *g, size_t index, size_t count)
{
	memmove(g->v + index, g->v + index + count, (g->n - index - count) * sizeof(*g->v));
	g->n -= count;
}
