/* SPDX-License-Identifier: MIT */
/*
 * The public header is usable from strict C99: this file must compile with
 * -std=c99 -pedantic -Werror -Wall -Wextra and link.  No feature-test macro:
 * the header must bring what it needs itself.
 */
#undef _GNU_SOURCE
#undef _DEFAULT_SOURCE
#undef _POSIX_C_SOURCE

#include <libdirty.h>

#if !defined(LIBDIRTY_VERSION_MAJOR) || !defined(LIBDIRTY_VERSION_MINOR)
#error "libdirty.h does not define its version"
#endif

int main(void)
{
	int (*volatile tracker_new)(const struct dirty_options *, struct dirty_tracker **) =
		dirty_tracker_new;
	struct dirty_tracker *(*volatile tracker_free)(struct dirty_tracker *) = dirty_tracker_free;
	int (*volatile probe)(const char *, pid_t, char *, size_t) = dirty_backend_probe;
	ssize_t (*volatile collect)(struct dirty_tracker *, void *, size_t, unsigned,
				    struct dirty_range *, size_t, void **) = dirty_collect;
	int (*volatile stats)(struct dirty_tracker *, struct dirty_stats *) = dirty_tracker_stats;
	struct dirty_options opts = { sizeof(struct dirty_options), NULL, 0, 0, NULL, NULL };
	struct dirty_range range = { NULL, 0 };
	unsigned flags = DIRTY_COLLECT_CLEAN;
	uint64_t word = 0;

	(void)tracker_new;
	(void)tracker_free;
	(void)probe;
	(void)collect;
	(void)stats;
	(void)opts;
	(void)range;
	(void)flags;
	(void)word;
	return 0;
}
