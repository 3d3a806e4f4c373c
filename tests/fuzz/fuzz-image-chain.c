/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer: the chain checks of dirtyctl image apply (tools/dirtyctl/image-chain.c)
 * on chains decoded from the input.  Whatever the input: no crash, no leak,
 * and a chain that is accepted has a sound plan: the images applied in
 * sequence order from a base image 0, with no gap and one process; the
 * regions written out sorted, not overlapping, each from a base image; each
 * applied image's region going to the output of exactly its own range, or
 * to none.
 *
 * Input: byte 0 the --upto (255: all), then per image 8 bytes: sequence,
 * flags (bit 0 base, bit 1 another pid, bit 2 another page size), number of
 * regions (0-7), then that many pairs (start, length) in pages, one byte
 * each; start is relative to the previous region's end unless bit 3 of the
 * flags asks for absolute starts (out of order, overlapping).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image-chain.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_IMAGES 32
#define MAX_REGIONS 7

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct dirty_image_region regions[MAX_IMAGES][MAX_REGIONS];
	struct chain_image images[MAX_IMAGES];
	struct chain_plan plan;
	uint64_t upto;
	size_t n = 0, at = 1;
	char why[512];

	if (size < 1)
		return 0;
	upto = data[0] == 255 ? UINT64_MAX : data[0];
	while (n < MAX_IMAGES && at + 3 <= size) {
		struct chain_image *img = &images[n];
		uint8_t flags = data[at + 1];
		size_t nregions = data[at + 2] % (MAX_REGIONS + 1);
		uint64_t cur = 0;

		memset(img, 0, sizeof(*img));
		img->file = "fuzz";
		img->offset = (off_t)n;
		img->header.sequence = data[at];
		img->header.flags = flags & 1 ? DIRTY_IMAGE_BASE : 0;
		img->header.pid = flags & 2 ? 2 : 1;
		img->header.page_size = flags & 4 ? 8192 : 4096;
		img->header.nregions = nregions;
		img->regions = regions[n];
		at += 3;
		for (size_t r = 0; r < nregions; r++) {
			uint64_t start = at < size ? data[at] : 0, len = at + 1 < size ? data[at + 1] : 1;

			at += 2;
			start = flags & 8 ? start : cur + start;
			img->regions[r] = (struct dirty_image_region){ start * 4096,
								       (start + len) * 4096 };
			snprintf(img->regions[r].name, sizeof(img->regions[r].name), "%zu", r);
			cur = start + len;
		}
		n++;
	}
	if (chain_check(images, n, upto, &plan, why, sizeof(why))) {
		if (!why[0] || plan.order || plan.live)
			abort(); /* refused: with a reason, nothing allocated */
		return 0;
	}
	/* accepted: the plan is sound */
	if (!plan.napply || plan.napply > n)
		abort();
	for (size_t i = 0; i < plan.napply; i++) {
		const struct chain_image *img = &images[plan.order[i]];

		if (i && img->header.sequence < images[plan.order[i - 1]].header.sequence)
			abort();
		if (img->header.sequence > plan.last || img->header.pid != images[plan.order[0]].header.pid)
			abort();
		for (uint64_t r = 0; r < img->header.nregions; r++) {
			long t = img->target[r];

			if (t < -1 || t >= (long)plan.nlive)
				abort();
			if (t >= 0 && (plan.live[t].start != img->regions[r].start ||
				       plan.live[t].end != img->regions[r].end))
				abort();
		}
	}
	if (images[plan.order[0]].header.sequence || !(images[plan.order[0]].header.flags & DIRTY_IMAGE_BASE))
		abort();
	for (size_t i = 0; i < plan.nlive; i++) {
		if (plan.live[i].start >= plan.live[i].end || plan.live[i].since > plan.last)
			abort();
		if (i && plan.live[i].start < plan.live[i - 1].end)
			abort();
	}
	chain_plan_free(images, n, &plan);
	return 0;
}
