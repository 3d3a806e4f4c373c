/* SPDX-License-Identifier: MIT */
/*
 * Collecting from a bitmap of pages, for the backends that record faults in
 * user space (mprotect, uffd-sync).  The ordering argument that makes it
 * lose no write is at the top of mprotect.c: take the bits (C1), then
 * re-protect what was taken (C2).
 */
#include <stdatomic.h>

#include "libdirty-int.h"

void dirty_page_bits_collect(_Atomic uint64_t *bits, uintptr_t base, size_t page_size,
			     uintptr_t start, uintptr_t end, bool clean, struct dirty_sink *sink,
			     uintptr_t *done, dirty_reprotect_fn reprotect, void *ctx)
{
	size_t first = (start - base) / page_size, last = (end - base) / page_size, w;
	uintptr_t run_start = 0, run_end = 0; /* taken, not yet re-protected */

	*done = end;
	for (w = first / 64; w <= (last - 1) / 64; w++) {
		uint64_t v = atomic_load_explicit(&bits[w], memory_order_acquire) &
			     dirty_bits_mask(w, first, last);

		if (!v)
			continue;
		if (clean) /* C1 */
			v = atomic_fetch_and_explicit(&bits[w], ~v, memory_order_acq_rel) & v;
		while (v) {
			size_t lo = (size_t)__builtin_ctzll(v), hi = lo;
			uintptr_t s, e;

			while (hi < 64 && (v >> hi & 1))
				hi++;
			s = base + (w * 64 + lo) * page_size;
			e = base + (w * 64 + hi) * page_size;
			if (!dirty_sink_add(sink, s, e)) {
				/* no room: give back what this word had left */
				if (clean)
					atomic_fetch_or(&bits[w], v);
				*done = s;
				goto out;
			}
			v &= hi < 64 ? ~((UINT64_C(1) << hi) - 1) : 0;
			if (!clean)
				continue;
			if (run_end != s) {
				if (run_end)
					reprotect(ctx, run_start, run_end); /* C2 */
				run_start = s;
			}
			run_end = e;
		}
	}
out:
	if (run_end)
		reprotect(ctx, run_start, run_end);
}
