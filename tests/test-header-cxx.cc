// SPDX-License-Identifier: MIT
// The public header is usable from C++: this file must compile with
// -std=c++11 -pedantic -Werror -Wall -Wextra and link (extern "C" linkage).

#include <libdirty.h>

#if !defined(LIBDIRTY_VERSION_MAJOR) || !defined(LIBDIRTY_VERSION_MINOR)
#error "libdirty.h does not define its version"
#endif

int main()
{
	int (*volatile tracker_new)(const dirty_options *, dirty_tracker **) = dirty_tracker_new;
	dirty_tracker *(*volatile tracker_free)(dirty_tracker *) = dirty_tracker_free;
	int (*volatile probe)(const char *, pid_t, char *, size_t) = dirty_backend_probe;
	ssize_t (*volatile collect)(dirty_tracker *, void *, size_t, unsigned, dirty_range *,
				    size_t, void **) = dirty_collect;
	const char *const *(*volatile names)() = dirty_backend_names;
	dirty_log_fn log = nullptr;
	dirty_run_fn run = nullptr;
	dirty_options opts = {};
	dirty_stats st = {};
	unsigned flags = DIRTY_COLLECT_CLEAN;

	opts.sz = sizeof(opts);
	st.sz = sizeof(st);
	(void)tracker_new;
	(void)tracker_free;
	(void)probe;
	(void)collect;
	(void)names;
	(void)log;
	(void)run;
	(void)opts;
	(void)st;
	(void)flags;
	return 0;
}
