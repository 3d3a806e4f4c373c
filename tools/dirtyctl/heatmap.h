/* SPDX-License-Identifier: MIT */
/*
 * heatmap: the SVG of `dirtyctl heatmap`.  Time runs across (one column per
 * interval), addresses run down, grouped by mapping in address order, and
 * the colour of a cell is the number of pages dirtied in it (log scale).
 *
 * It only records and draws what it is given; it measures nothing.  Memory
 * stays small for long runs of large processes: a mapping's pages are
 * counted in at most 128 buckets (each a power-of-two number of pages,
 * coarsened as the mapping grows), and time in at most 480 epochs (one
 * interval each, then 2, 4, 8 ... as the run goes on: neighbours merge in
 * pairs).  Only the buckets dirtied in an epoch are kept, 8 bytes each, so
 * memory is bounded whatever the length of the run, and adding a run of
 * pages costs O(buckets it spans), not O(pages).
 *
 * The drawing keeps to a budget so that it opens in any browser: one column
 * per epoch (so per interval up to 480 of them), and about 240 rows in all,
 * shared between the mappings that were ever dirtied in proportion to their
 * size (at least one row each, at most one per bucket; a row is a
 * power-of-two number of buckets, so a mapping's rows are equal shares of
 * it).  Mappings never dirtied are folded into one band at the bottom,
 * "other: N mappings never written".
 */
#ifndef DIRTYCTL_HEATMAP_H
#define DIRTYCTL_HEATMAP_H

#include <stdint.h>
#include <stdio.h>

/*
 * Pages are counted in units of the system's base page size from a
 * mapping's start (4096 bytes on x86-64; 4, 16 or 64 KiB on arm64), as the
 * kernel gives it (sysconf(_SC_PAGESIZE)).
 */
#define HEATMAP_PAGE_SIZE heatmap_page_size()
uint64_t heatmap_page_size(void);

struct heatmap;

/*
 * A new, empty heatmap.  @title is the SVG's first line (say what was run or
 * attached to, the backend and the interval); the totals are added under it.
 * NULL gives a generic title.  Returns NULL with errno ENOMEM on failure.
 */
struct heatmap *heatmap_new(const char *title);

/* Free everything; NULL is fine. */
void heatmap_free(struct heatmap *h);

/*
 * Declare the mapping [start, start + len) named @name (as /proc/PID/maps
 * names it; NULL or "" for an anonymous one).  Declaring the same @start
 * again updates the name and the length and returns the same id; the rows
 * drawn cover the longest length ever declared for it, so that pages added
 * while it was longer stay in the picture.  The name is copied.
 *
 * Returns the mapping's id (>= 0), or -EINVAL (h NULL, len 0), -ERANGE
 * (start + len past 2^64), -ENOSPC (over INT_MAX mappings), -ENOMEM.  On
 * failure nothing changes.
 */
int heatmap_mapping(struct heatmap *h, const char *name, uint64_t start, uint64_t len);

/*
 * Start the next interval, covering [t0, t1) seconds since the start of the
 * run; intervals come in time order.  Later heatmap_add() calls count in it.
 * Returns 0, -EINVAL (h NULL, t0 or t1 not finite, t0 < 0, t1 <= t0, t0
 * before the previous interval's t0) or -ENOMEM; on failure the previous
 * interval stays the current one.
 */
int heatmap_interval(struct heatmap *h, double t0, double t1);

/*
 * Count @npages pages dirtied in the current interval from page @page_index
 * (in HEATMAP_PAGE_SIZE pages from the mapping's start) of @mapping.  Every
 * page added is drawn: the SVG's data-total-pages is the sum of all
 * @npages added.  npages 0 does nothing.
 *
 * Returns 0, -EINVAL (h NULL, no such mapping, no interval started yet),
 * -ERANGE (the run goes past the longest length declared for the mapping)
 * or -ENOMEM; on failure nothing is counted.
 */
int heatmap_add(struct heatmap *h, int mapping, uint64_t page_index, uint64_t npages);

/*
 * Write the heatmap as a standalone SVG document to @f, which stays open.
 * Each non-zero cell is a <rect> with data-pages="N" (its exact count) and a
 * <title> tooltip; zero cells are not written.  A mapping's cells are in one
 * <g data-mapping="0xSTART">.  The root <svg> carries data-total-pages, the
 * sum of every cell.  Returns 0, -EINVAL (h or f NULL), -ENOMEM, or -EIO
 * when writing to @f failed.
 */
int heatmap_write_svg(const struct heatmap *h, FILE *f);

#endif
