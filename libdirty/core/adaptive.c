/* SPDX-License-Identifier: MIT */
/*
 * DIRTY_TRACKER_ADAPTIVE (the idea of the vmwgfx driver): protecting a page
 * costs a fault at its first write; when nearly every page is written every
 * cycle, reporting the whole region without protecting it is cheaper.  A
 * region found mostly dirty by ADAPTIVE_STREAK collect-and-cleans in a row
 * is unprotected and reported whole; every ADAPTIVE_RETEST collects it is
 * protected again, to measure it again.
 */
#include <syslog.h>

#include "libdirty-int.h"

#define ADAPTIVE_DENSE_PERCENT 50
#define ADAPTIVE_STREAK 3
#define ADAPTIVE_RETEST 16

int dirty_adaptive_collect(struct dirty_tracker *t, struct dirty_region *r, uintptr_t start,
			   uintptr_t end, bool clean, struct dirty_sink *sink, uintptr_t *done)
{
	if (!dirty_sink_add(sink, start, end)) {
		*done = start;
		return 0;
	}
	*done = end;
	if (clean && start == r->start && end == r->end &&
	    ++r->unprotected_collects >= ADAPTIVE_RETEST &&
	    r->backend->clean(t, r, r->start, r->end) == 0) {
		/* measure it again: protected, the next collect counts its pages */
		r->unprotected = false;
		r->dense_streak = 0;
		dirty_log(t, LOG_DEBUG, "adaptive: region %#lx-%#lx protected again to re-test",
			  (unsigned long)r->start, (unsigned long)r->end);
	}
	return 0;
}

void dirty_adaptive_account(struct dirty_tracker *t, struct dirty_region *r, uint64_t pages)
{
	uint64_t total = (r->end - r->start) / dirty_page_size();

	if (!r->backend->unprotect)
		return; /* writes are not trapped: nothing to save */
	if (pages * 100 < total * ADAPTIVE_DENSE_PERCENT) {
		r->dense_streak = 0;
		return;
	}
	if (++r->dense_streak < ADAPTIVE_STREAK)
		return;
	r->backend->unprotect(t, r);
	r->unprotected = true;
	r->unprotected_collects = 0;
	dirty_log(t, LOG_DEBUG, "adaptive: region %#lx-%#lx is reported whole, unprotected",
		  (unsigned long)r->start, (unsigned long)r->end);
}
