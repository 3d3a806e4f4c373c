/* SPDX-License-Identifier: MIT */
/*
 * The compare way: a region whose writes are not trapped, whose changed
 * pages a collect finds by comparing each page with what it held at its
 * last clean.  Chosen by the cost model (cost.c) where trapping costs more
 * than reading: memory written nearly all over between collects, or a
 * filesystem whose every first write to a clean page runs page_mkwrite.
 *
 * What a page held is kept as a keyed 64-bit hash (hash.c): 8 bytes a page,
 * 2 MiB per GiB tracked; or, with DIRTY_TRACKER_COMPARE_COPY, as a copy of
 * the page: exact, at the cost of the region's size again.  The state is
 * mapped, never malloc'd: a collect allocates nothing (a garbage collector
 * calls it with its world stopped).
 *
 * What "changed" means here: a page whose bytes differ from those at its
 * last clean.  A write that leaves a page as it was is not reported (the
 * caller, which reads the contents, loses nothing); with the hash, a
 * changed page whose new contents hash alike (about 2^-64 a changed page)
 * is not either.
 *
 * Why no change is lost.  A collect-and-clean reads each page once, reports
 * it if its hash differs, and stores the hash it read.  A write that lands
 * before the page is read is in what was read, and reported now; one that
 * lands after, or while the page is read (a torn read hashes bytes the page
 * will not keep), leaves the page different from the hash stored, and the
 * next collect reports it.
 *
 * Pages that hold nothing are not read: reading a hole of shared memory
 * would allocate it.  Private anonymous holes (and the shared zero page)
 * hold zeroes: they compare as a zero page.  A page of shared memory that is
 * not resident cannot be compared without reading it back: it is reported,
 * and the region goes back to being trapped (cost.c).  The region must
 * stay mapped while a collect reads it: unmapping it (or truncating its
 * file) during a collect of it ends the program with SIGSEGV or SIGBUS, as
 * any access to it would; unmapped before the collect, it is -ESTALE as
 * ever.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "libdirty-int.h"

/* The state of a compared region, at the start of a mapping of its own. */
struct dirty_compare {
	size_t map_len;
	size_t npages;
	bool copy;               /* pages kept whole, not hashed */
	bool unknown;            /* a collect met a page it could not read */
	uint64_t zero_hash;      /* of a page of zeroes */
	uint64_t *hash;          /* one a page (without copy) */
	uint64_t *forced;        /* a bit a page: reported by the next collect (redirty) */
	unsigned char *pages;    /* with copy: the region as at its last clean */
};

/* A page of zeroes, for holes: pages up to 16 KiB (larger ones are not compared). */
static const unsigned char zeroes[16384];

static size_t page_index(const struct dirty_region *r, uintptr_t addr)
{
	return (addr - r->start) / dirty_page_size();
}

bool dirty_compare_possible(const struct dirty_tracker *t, const struct dirty_region *r)
{
	if (t->pid || (t->flags & (DIRTY_TRACKER_NO_COMPARE | DIRTY_TRACKER_SPARSE)) || !t->hash_ns ||
	    t->pagemap < 0)
		return false; /* another process's memory, a reservation mostly empty, no key */
	if (!dirty_key_equal(r->key, DIRTY_KEY_MEMORY) || r->page_size != dirty_page_size())
		return false; /* files by descriptor, hugetlb */
	if (r->kind != DIRTY_MEM_ANON && r->kind != DIRTY_MEM_SHMEM &&
	    r->kind != DIRTY_MEM_FILE_SHARED)
		return false; /* a private file mapping's pages are the file's until written */
	return r->backend->unprotect && r->backend->clean;
}

static const struct dirty_hash_key *key_of(struct dirty_tracker *t)
{
	return &t->hash_key;
}

/* The hash (or nothing, with copy) of the page at addr. */
static uint64_t page_hash(struct dirty_tracker *t, uintptr_t addr)
{
	return dirty_hash_page((const void *)addr, dirty_page_size(), key_of(t));
}

int dirty_compare_new(struct dirty_tracker *t, struct dirty_region *r)
{
	size_t page = dirty_page_size(), npages = (r->end - r->start) / page;
	size_t header = (sizeof(struct dirty_compare) + 63) & ~(size_t)63;
	size_t forced_bytes = (npages + 63) / 64 * sizeof(uint64_t);
	bool copy = t->flags & DIRTY_TRACKER_COMPARE_COPY;
	size_t body = copy ? npages * page : npages * sizeof(uint64_t);
	size_t map_len = (header + forced_bytes + body + page - 1) & ~(page - 1);
	struct dirty_compare *c;

	c = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		 -1, 0);
	if (c == MAP_FAILED)
		return -ENOMEM;
	c->map_len = map_len;
	c->npages = npages;
	c->copy = copy;
	c->forced = (uint64_t *)((char *)c + header);
	if (copy)
		c->pages = (unsigned char *)c->forced + forced_bytes;
	else
		c->hash = (uint64_t *)((char *)c->forced + forced_bytes);
	c->zero_hash = page <= sizeof(zeroes) ? dirty_hash_page(zeroes, page, key_of(t)) : 0;
	if (page > sizeof(zeroes)) {
		munmap(c, map_len);
		return -EOPNOTSUPP;
	}
	r->compare = c;
	return 0;
}

void dirty_compare_free(struct dirty_region *r)
{
	struct dirty_compare *c = r->compare;

	if (!c)
		return;
	munmap(c, c->map_len);
	r->compare = NULL;
}

/* ---- walking a range: each page read where it holds data ---- */

struct walk {
	struct dirty_tracker *t;
	struct dirty_region *r;
	struct dirty_compare *c;
	bool record;             /* store what was read (collect-and-clean, clean, a baseline) */
	struct dirty_sink *sink; /* NULL: record only */
	uintptr_t cur;           /* the next page to look at */
	bool full;               /* the sink is: stop at cur */
};

/* Does the page at addr differ from its record (or is it forced)?  *h gets what it holds. */
static bool page_changed(struct walk *w, uintptr_t addr, bool hole, uint64_t *h)
{
	struct dirty_compare *c = w->c;
	size_t i = page_index(w->r, addr), page = dirty_page_size();
	bool forced = dirty_bits_test(c->forced, i);

	if (c->copy)
		return forced || memcmp(c->pages + i * page, hole ? zeroes : (const void *)addr, page);
	*h = hole ? c->zero_hash : page_hash(w->t, addr);
	return forced || *h != c->hash[i];
}

/* Make the record of the page at addr what it holds now (h, or a copy of it). */
static void page_record(struct walk *w, uintptr_t addr, bool hole, uint64_t h)
{
	struct dirty_compare *c = w->c;
	size_t i = page_index(w->r, addr), page = dirty_page_size();

	if (c->copy) {
		if (hole)
			memset(c->pages + i * page, 0, page);
		else
			memcpy(c->pages + i * page, (const void *)addr, page);
	} else {
		c->hash[i] = h;
	}
	dirty_bits_clear(c->forced, i, i + 1);
}

/* The pages of [w->cur, end), all holding data (hole false) or none (true). */
static int walk_pages(struct walk *w, uintptr_t end, bool hole)
{
	size_t page = dirty_page_size();

	for (; w->cur < end; w->cur += page) {
		uint64_t h = 0;
		bool changed = page_changed(w, w->cur, hole, &h);

		if (changed && w->sink && !dirty_sink_add(w->sink, w->cur, w->cur + page)) {
			w->full = true;
			return 1; /* stops the walk at cur */
		}
		if (w->record && (changed || !w->sink))
			page_record(w, w->cur, hole, h);
	}
	return 0;
}

/*
 * Where a range holds nothing: a private anonymous page reads as zeroes; a
 * page of shared memory that is not resident cannot be read without
 * allocating or reading it back: it is reported (forced, so that it stays
 * reported until a collect can read it) and the region marked for the way
 * back to trapping.
 */
static int walk_hole(struct walk *w, uintptr_t end)
{
	struct dirty_compare *c = w->c;

	if (w->r->kind == DIRTY_MEM_ANON)
		return walk_pages(w, end, true);
	c->unknown = true;
	dirty_bits_set(c->forced, page_index(w->r, w->cur), page_index(w->r, end));
	if (!w->sink) {
		w->cur = end;
		return 0;
	}
	if (!dirty_sink_add(w->sink, w->cur, end)) {
		w->full = true;
		return 1;
	}
	w->cur = end;
	return 0;
}

static int walk_run(uintptr_t start, uintptr_t end, void *ctx)
{
	struct walk *w = ctx;
	int stop = w->cur < start ? walk_hole(w, start) : 0;

	return stop ? stop : walk_pages(w, end, false);
}

static int walk(struct walk *w, uintptr_t end)
{
	int err = dirty_populated_each(w->t->pagemap, w->cur, end, w->r->kind, true, walk_run,
				       w);

	if (err < 0)
		return err == -ESRCH ? -ESTALE : err;
	if (!w->full && w->cur < end)
		walk_hole(w, end);
	return 0;
}

int dirty_compare_collect(struct dirty_tracker *t, struct dirty_region *r, uintptr_t start,
			  uintptr_t end, bool clean, struct dirty_sink *sink, uintptr_t *done)
{
	struct walk w = { t, r, r->compare, clean, sink, start, false };
	int err = walk(&w, end);

	*done = w.cur;
	return err;
}

int dirty_compare_clean(struct dirty_tracker *t, struct dirty_region *r, uintptr_t start,
			uintptr_t end)
{
	struct walk w = { t, r, r->compare, true, NULL, start, false };

	return walk(&w, end);
}

void dirty_compare_redirty(struct dirty_region *r, uintptr_t start, uintptr_t end)
{
	dirty_bits_set(r->compare->forced, page_index(r, start), page_index(r, end));
}

bool dirty_compare_unknown(const struct dirty_region *r)
{
	return r->compare && r->compare->unknown;
}
