/* SPDX-License-Identifier: MIT */
/*
 * The checks of an image chain as a whole, for dirtyctl image apply and
 * info: pure functions over the images' headers and region tables (each
 * image already verified on its own with dirty_image_read()), so that the
 * fuzzer (tests/fuzz/fuzz-image-chain.c) runs them as they are.
 *
 * A chain is what dirtyctl dump writes: the images of one process, with
 * sequence numbers 0, 1, 2, ... and no gap.  Sequence 0 has a base image
 * (DIRTY_IMAGE_BASE: every page of its regions).  Each later sequence has
 * at most one base image (regions new at that sequence: their whole
 * content) and at most one incremental image (the pages written since the
 * sequence before, of regions that were live then, with exactly the
 * ranges they had).  A region of the sequence before that neither image
 * lists has ended (unmapped); a base region may reuse its addresses.  So
 * a region is identified by its range and the base image that began it,
 * and only the regions live at the last image applied are written out.
 *
 * After an exec the address space is new, and a sequence that holds only a
 * base image (no incremental one) ends every region before it: a dump that
 * follows an exec can continue its chain that way and these checks accept
 * it as it is.  An explicit exec record (a header flag, say) would be
 * checked in chain_check() where a sequence's images are taken in.
 */
#ifndef IMAGE_CHAIN_H
#define IMAGE_CHAIN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "libdirty.h"

/* One image of the chain, as the caller read it. */
struct chain_image {
	const char *file;        /* for messages */
	off_t offset;            /* of the image in its file */
	struct dirty_image_header header;
	struct dirty_image_region *regions; /* header.nregions */
	/*
	 * Filled by chain_check() for the images it applies: per region, the
	 * index in plan->live of the output it goes to, or -1 if that region
	 * has ended by the last image applied.  NULL for the others.
	 */
	long *target;
};

/* A region live at the last image applied: one output file. */
struct chain_region {
	uint64_t start, end;
	char name[sizeof(((struct dirty_image_region *)0)->name) + 1];
	uint64_t since;          /* the sequence of the base image that began it */
};

struct chain_plan {
	size_t *order;           /* the images to apply (indices), in order */
	size_t napply;
	uint64_t last;           /* the sequence of the last image applied */
	struct chain_region *live; /* sorted by address */
	size_t nlive;
	size_t ended;            /* regions of the images applied that ended before it */
};

/*
 * Check images[0..n) as one chain, in any order (they are sorted by
 * sequence; images of one sequence keep their order), and plan applying
 * the sequences up to upto (UINT64_MAX: all).  Every image is checked,
 * those after upto too.  Returns 0 and fills *plan and the images'
 * target arrays, or -EINVAL (a broken chain) or -ENOMEM with the reason
 * in why, naming the images: FILE@OFFSET.
 */
int chain_check(struct chain_image *images, size_t n, uint64_t upto, struct chain_plan *plan,
		char *why, size_t why_len);

/* Free what chain_check() allocated in plan and in the images. */
void chain_plan_free(struct chain_image *images, size_t n, struct chain_plan *plan);

#endif
