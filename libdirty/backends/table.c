/* SPDX-License-Identifier: MIT */
/*
 * The backends, best first: the one list of them.  Automatic selection
 * takes the first usable one (and keeps the others as fallbacks for memory
 * it cannot take); the flags of each (libdirty-int.h) say the rest.
 */
#include "libdirty-int.h"

extern const struct dirty_backend dirty_backend_uffd_async;
extern const struct dirty_backend dirty_backend_uffd_sync;
extern const struct dirty_backend dirty_backend_soft_dirty;
extern const struct dirty_backend dirty_backend_mprotect;
extern const struct dirty_backend dirty_backend_mapping;

const struct dirty_backend *const dirty_backends[] = {
	&dirty_backend_uffd_async,
	&dirty_backend_uffd_sync,
	&dirty_backend_soft_dirty,
	&dirty_backend_mprotect,
	&dirty_backend_mapping,
	NULL,
};

_Static_assert(sizeof(dirty_backends) / sizeof(dirty_backends[0]) <= DIRTY_MAX_BACKENDS + 1,
	       "DIRTY_MAX_BACKENDS holds every backend");
