/* SPDX-License-Identifier: MIT */
/*
 * The one process-wide record of what the trackers of this process track of
 * its own memory.  The kernel mechanisms keep one registration per page (a
 * userfaultfd registration, a protection, a soft-dirty record): a second
 * tracker of the same pages would take the first one's writes, so
 * dirty_track() refuses it (-EEXIST).  A region whose memory was unmapped
 * without untracking keeps its claim until it is untracked: its untrack
 * acts on its whole range, which must not be another tracker's meanwhile
 * (a stale uffd-async region's scans, which cannot tell whose registration
 * they meet, would re-protect and report the other tracker's pages).
 *
 * A child of fork() keeps only the claims whose backend's hold outlives the
 * fork: userfaultfd registrations are not inherited, protections are.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "libdirty-int.h"

struct claim {
	const struct dirty_region *owner;
	uintptr_t start, end;
};

static pthread_mutex_t claims_lock = PTHREAD_MUTEX_INITIALIZER;
static struct claim *claims;
static size_t nclaims, claims_cap;
static pthread_once_t claims_once = PTHREAD_ONCE_INIT;

static void claims_atfork_prepare(void)
{
	pthread_mutex_lock(&claims_lock);
}

static void claims_atfork_parent(void)
{
	pthread_mutex_unlock(&claims_lock);
}

static void claims_atfork_child(void)
{
	size_t kept = 0;

	for (size_t i = 0; i < nclaims; i++) {
		const struct dirty_backend *b = claims[i].owner->backend;

		if (b && (b->flags & DIRTY_BACKEND_INHERITED))
			claims[kept++] = claims[i];
	}
	nclaims = kept;
	pthread_mutex_unlock(&claims_lock);
}

static void claims_init(void)
{
	pthread_atfork(claims_atfork_prepare, claims_atfork_parent, claims_atfork_child);
}

static bool overlaps_locked(uintptr_t start, uintptr_t end)
{
	for (size_t i = 0; i < nclaims; i++)
		if (claims[i].start < end && start < claims[i].end)
			return true;
	return false;
}

int dirty_claim(const struct dirty_region *r)
{
	int err = -EEXIST;

	pthread_once(&claims_once, claims_init);
	pthread_mutex_lock(&claims_lock);
	if (!overlaps_locked(r->start, r->end))
		err = dirty_grow((void **)&claims, &claims_cap, nclaims + 1, sizeof(*claims));
	if (!err)
		claims[nclaims++] = (struct claim){ r, r->start, r->end };
	pthread_mutex_unlock(&claims_lock);
	return err;
}

void dirty_unclaim(const struct dirty_region *r)
{
	pthread_mutex_lock(&claims_lock);
	for (size_t i = 0; i < nclaims; i++)
		if (claims[i].owner == r)
			claims[i--] = claims[--nclaims];
	pthread_mutex_unlock(&claims_lock);
}

bool dirty_claimed(uintptr_t start, uintptr_t end)
{
	bool found;

	pthread_mutex_lock(&claims_lock);
	found = overlaps_locked(start, end);
	pthread_mutex_unlock(&claims_lock);
	return found;
}
