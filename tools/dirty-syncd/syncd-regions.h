/* SPDX-License-Identifier: MIT */
/*
 * From the pages dirty-syncd must copy to the regions a sink copies.
 *
 * A GPU copy takes a list of regions (VkBufferCopy, cuMemcpy batches), may
 * want them aligned, and costs something per region.  The plan widens each
 * run of marked pages to the sink's alignment (clipped to the buffer's end),
 * joins what then touches or overlaps, and, when more regions remain than
 * the sink takes per flush, closes the smallest gaps between neighbours:
 * those clean bytes are copied too, so that the count fits.  Closing the k
 * smallest gaps is the cheapest way to lose k regions, since each gap closed
 * removes exactly one.  What alignment and merging cost is counted.
 */
#ifndef SYNCD_REGIONS_H
#define SYNCD_REGIONS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct syncd_region {
	uint64_t offset, len;
};

/* One flush, as the daemon reports it (--json, the FLUSHED reply). */
struct syncd_flush_stats {
	uint64_t runs;        /* runs of dirty pages collected */
	uint64_t dirty_bytes; /* their bytes */
	uint64_t regions;     /* regions the sink copied */
	uint64_t bytes;       /* their bytes: dirty_bytes and what alignment and merging added */
	uint64_t gaps_closed; /* gaps merged away to stay within the cap */
	uint64_t time_ns;     /* the daemon's: from the start of the collect to the sink's fence */
};

/* The most regions npages pages can make: every other page marked. */
static inline uint64_t syncd_max_runs(uint64_t npages)
{
	return (npages + 1) / 2;
}

/*
 * Plan the copy of the pages set in bitmap (bit p = page p, npages pages of
 * page_size bytes; the buffer is size bytes, npages * page_size).  align is
 * a power of two (1 or any value up to page_size: the runs as they are);
 * max_regions caps the count (0: no cap).  out has room for
 * syncd_max_runs(npages) regions.  Returns the number of regions, in offset
 * order, disjoint and not touching, with *stats filled (time_ns 0); or
 * -EINVAL (align not a power of two, size not npages pages), -ENOMEM.
 */
ssize_t syncd_plan(const uint64_t *bitmap, uint64_t npages, uint64_t page_size, uint64_t size,
		   uint64_t align, uint64_t max_regions, struct syncd_region *out,
		   struct syncd_flush_stats *stats);

#endif
