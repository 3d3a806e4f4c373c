/* SPDX-License-Identifier: MIT */
/* dirty-syncd: the regions a sink copies, from the pages to copy (syncd-regions.h). */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#include "syncd-regions.h"

struct gap {
	uint64_t len;
	size_t after; /* the gap between region after and region after + 1 */
};

/* Smallest first; among equal gaps the lowest offset, so that a plan is reproducible. */
static int gap_order(const void *a, const void *b)
{
	const struct gap *x = a, *y = b;

	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	return x->after < y->after ? -1 : x->after > y->after;
}

/* Close the n - max smallest gaps of out[0..n): the regions that remain are at most max. */
static int close_smallest_gaps(struct syncd_region *out, size_t *n, uint64_t max,
			       uint64_t *closed_count)
{
	size_t k = *n - (size_t)max, m = 0;
	struct gap *gaps = malloc((*n - 1) * sizeof(*gaps));
	bool *closed = calloc(*n - 1, sizeof(*closed));

	if (!gaps || !closed) {
		free(gaps);
		free(closed);
		return -ENOMEM;
	}
	for (size_t i = 0; i + 1 < *n; i++)
		gaps[i] = (struct gap){ out[i + 1].offset - (out[i].offset + out[i].len), i };
	qsort(gaps, *n - 1, sizeof(*gaps), gap_order);
	for (size_t j = 0; j < k; j++)
		closed[gaps[j].after] = true;
	for (size_t i = 0; i < *n; i++) {
		if (i && closed[i - 1])
			out[m - 1].len = out[i].offset + out[i].len - out[m - 1].offset;
		else
			out[m++] = out[i];
	}
	*n = m;
	*closed_count = k;
	free(gaps);
	free(closed);
	return 0;
}

/* [start, end) widened to align, within [0, size). */
static void widen(uint64_t *start, uint64_t *end, uint64_t align, uint64_t size)
{
	uint64_t over = *end % align;

	*start -= *start % align;
	if (over && *end - over + align > *end && *end - over + align <= size)
		*end = *end - over + align;
	else if (over)
		*end = size;
}

ssize_t syncd_plan(const uint64_t *bitmap, uint64_t npages, uint64_t page_size, uint64_t size,
		   uint64_t align, uint64_t max_regions, struct syncd_region *out,
		   struct syncd_flush_stats *stats)
{
	struct syncd_flush_stats st = { 0 };
	uint64_t p = 0;
	size_t n = 0;

	if (!align || (align & (align - 1)) || !page_size || size % page_size ||
	    size / page_size != npages)
		return -EINVAL;
	while (p < npages) {
		uint64_t word = bitmap[p / 64] >> (p % 64), start, end;

		if (!word) {
			p = (p / 64 + 1) * 64;
			continue;
		}
		p += (uint64_t)__builtin_ctzll(word);
		if (p >= npages)
			break; /* bits past the last page mean nothing */
		start = p;
		while (p < npages && (bitmap[p / 64] >> (p % 64) & 1))
			p++;
		st.runs++;
		st.dirty_bytes += (p - start) * page_size;
		start *= page_size;
		end = p * page_size;
		widen(&start, &end, align, size);
		if (n && start <= out[n - 1].offset + out[n - 1].len) {
			/* widened into the previous region: one region */
			if (end > out[n - 1].offset + out[n - 1].len)
				out[n - 1].len = end - out[n - 1].offset;
		} else {
			out[n++] = (struct syncd_region){ start, end - start };
		}
	}
	if (max_regions && n > max_regions) {
		int err = close_smallest_gaps(out, &n, max_regions, &st.gaps_closed);

		if (err)
			return err;
	}
	for (size_t i = 0; i < n; i++)
		st.bytes += out[i].len;
	st.regions = n;
	*stats = st;
	return (ssize_t)n;
}
