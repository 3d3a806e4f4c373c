/* SPDX-License-Identifier: MIT */
/* The tracker's regions: a sorted array, binary-searched, never overlapping. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "libdirty-int.h"

size_t dirty_registry_lower_bound(const struct dirty_tracker *t, uintptr_t addr)
{
	size_t lo = 0, hi = t->nregions;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (t->regions[mid]->end <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

bool dirty_registry_overlaps(const struct dirty_tracker *t, uintptr_t start, uintptr_t end)
{
	size_t i = dirty_registry_lower_bound(t, start);

	return i < t->nregions && t->regions[i]->start < end;
}

int dirty_registry_insert(struct dirty_tracker *t, struct dirty_region *r)
{
	size_t i;

	if (t->nregions == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 8;
		struct dirty_region **grown = realloc(t->regions, cap * sizeof(*grown));

		if (!grown)
			return -ENOMEM;
		t->regions = grown;
		t->cap = cap;
	}
	i = dirty_registry_lower_bound(t, r->start);
	memmove(t->regions + i + 1, t->regions + i, (t->nregions - i) * sizeof(*t->regions));
	t->regions[i] = r;
	t->nregions++;
	return 0;
}

void dirty_registry_remove(struct dirty_tracker *t, size_t index, size_t count)
{
	memmove(t->regions + index, t->regions + index + count,
		(t->nregions - index - count) * sizeof(*t->regions));
	t->nregions -= count;
}
