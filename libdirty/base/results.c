/* SPDX-License-Identifier: MIT */
/*
 * Results: where collected runs go (the sink), and the bitmaps that backends
 * and sinks keep, one bit per page (bit i of word i / 64 is bit i % 64).
 */
#include <assert.h>
#include <stdatomic.h>
#include <stdint.h>

#include "libdirty-int.h"

bool dirty_bits_test(const uint64_t *bits, uint64_t i)
{
	return bits[i / 64] >> (i % 64) & 1;
}

uint64_t dirty_bits_mask(uint64_t w, uint64_t first, uint64_t last)
{
	uint64_t lo = first > w * 64 ? first - w * 64 : 0;
	uint64_t hi = last < (w + 1) * 64 ? last - w * 64 : 64;

	return (hi == 64 ? UINT64_MAX : (UINT64_C(1) << hi) - 1) & ~((UINT64_C(1) << lo) - 1);
}

void dirty_bits_set(uint64_t *bits, uint64_t first, uint64_t last)
{
	for (uint64_t w = first / 64; first < last && w <= (last - 1) / 64; w++)
		bits[w] |= dirty_bits_mask(w, first, last);
}

void dirty_bits_clear(uint64_t *bits, uint64_t first, uint64_t last)
{
	for (uint64_t w = first / 64; first < last && w <= (last - 1) / 64; w++)
		bits[w] &= ~dirty_bits_mask(w, first, last);
}

void dirty_bits_set_atomic(_Atomic uint64_t *bits, uint64_t first, uint64_t last)
{
	for (uint64_t w = first / 64; first < last && w <= (last - 1) / 64; w++)
		atomic_fetch_or_explicit(&bits[w], dirty_bits_mask(w, first, last),
					 memory_order_release);
}

void dirty_bits_clear_atomic(_Atomic uint64_t *bits, uint64_t first, uint64_t last)
{
	for (uint64_t w = first / 64; first < last && w <= (last - 1) / 64; w++)
		atomic_fetch_and_explicit(&bits[w], ~dirty_bits_mask(w, first, last),
					  memory_order_release);
}

size_t dirty_sink_room(const struct dirty_sink *s)
{
	if (s->bitmap)
		return SIZE_MAX;
	return s->max - s->n;
}

bool dirty_sink_add(struct dirty_sink *s, uintptr_t start, uintptr_t end)
{
	size_t page = dirty_page_size();

	assert(start < end);
	if (s->bitmap) {
		dirty_bits_set(s->bitmap, (start - s->base) / page, (end - s->base) / page);
	} else if (s->n && (uintptr_t)s->out[s->n - 1].start + s->out[s->n - 1].len == start) {
		s->out[s->n - 1].len += end - start;
	} else if (s->n < s->max) {
		s->out[s->n].start = (void *)start;
		s->out[s->n].len = end - start;
		s->n++;
	} else {
		return false;
	}
	s->pages += (end - start) / page;
	return true;
}
