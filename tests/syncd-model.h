/* SPDX-License-Identifier: MIT */
/*
 * What dirty-syncd's region plan must copy for a set of dirty pages, counted
 * the simple way (tests/test-syncd-regions.c checks the plan against it,
 * tests/test-syncd.c a whole daemon): blocks of max(align, page) bytes, the
 * last one clipped at the buffer's end, a block covered when one of its
 * pages is dirty; the covered blocks make intervals, and over the cap the
 * smallest gaps between them are copied too.
 */
#ifndef SYNCD_MODEL_H
#define SYNCD_MODEL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

struct syncd_model {
	uint64_t runs, dirty_bytes, regions, bytes;
};

static int syncd_model_order(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static inline bool syncd_model_dirty(const uint64_t *bits, uint64_t p)
{
	return bits[p / 64] >> (p % 64) & 1;
}

/* false: out of memory. */
static inline bool syncd_model(const uint64_t *bits, uint64_t npages, uint64_t page,
			       uint64_t align, uint64_t max, struct syncd_model *ret)
{
	uint64_t size = npages * page, block = align > page ? align : page;
	uint64_t nblocks = (size + block - 1) / block, ngaps = 0, last_end = 0;
	uint64_t *gaps = malloc((nblocks + 1) * sizeof(*gaps));
	struct syncd_model m = { 0 };
	bool in = false;

	if (!gaps)
		return false;
	for (uint64_t p = 0; p < npages; p++) {
		m.runs += syncd_model_dirty(bits, p) && !(p && syncd_model_dirty(bits, p - 1));
		m.dirty_bytes += syncd_model_dirty(bits, p) ? page : 0;
	}
	for (uint64_t b = 0; b < nblocks; b++) {
		uint64_t start = b * block, end = start + block < size ? start + block : size;
		bool covered = false;

		for (uint64_t p = start / page; p < end / page; p++)
			covered |= syncd_model_dirty(bits, p);
		if (covered && !in) {
			if (m.regions)
				gaps[ngaps++] = start - last_end;
			m.regions++;
		}
		if (covered) {
			m.bytes += end - start;
			last_end = end;
		}
		in = covered;
	}
	if (max && m.regions > max) {
		qsort(gaps, ngaps, sizeof(*gaps), syncd_model_order);
		for (uint64_t k = 0; k < m.regions - max; k++)
			m.bytes += gaps[k];
		m.regions = max;
	}
	free(gaps);
	*ret = m;
	return true;
}

#endif
