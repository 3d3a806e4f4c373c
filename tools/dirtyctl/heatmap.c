/* SPDX-License-Identifier: MIT */
/* heatmap: pages dirtied per interval per mapping, drawn as an SVG. */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "heatmap.h"
#include "xml.h"

/*
 * A mapping's pages are counted in at most this many buckets of 2^shift
 * pages each; rows are whole buckets, so this is also a mapping's most rows.
 */
#define MAX_BUCKETS 128
#define ROW_BUDGET 240
/*
 * Time is kept in at most this many epochs of 2^shift intervals each, one
 * column each: when the intervals would fill one more, neighbouring epochs
 * merge in pairs.  So memory does not grow with the length of the run, and
 * past COLUMN_BUDGET intervals there are between half and all of it.
 */
#define COLUMN_BUDGET 480

/* Geometry of the drawing, in pixels. */
#define PLOT_LEFT 420		/* labels end at PLOT_LEFT - 8, right aligned */
#define PLOT_TOP 84
#define PLOT_WIDTH 960		/* target; cells have whole-pixel widths */
#define PLOT_HEIGHT 720		/* target; rows have whole-pixel heights */
#define MIN_ROW_HEIGHT 2
#define MIN_GROUP_HEIGHT 16	/* a label's height, when there is room */
#define MAX_ROW_HEIGHT 20
#define OTHER_BAND_HEIGHT 18
#define MARGIN_RIGHT 24
#define LEGEND_BAR_WIDTH 360
#define NAME_TWO_LINES 56	/* code points of a name on a line of its own */
#define NAME_ONE_LINE 28	/* ... when the address range shares its line */

/*
 * Pages dirtied in one bucket of one mapping in one epoch.  A mapping's
 * cells are in epoch order, and within an epoch in bucket order.
 */
struct cell {
	uint16_t epoch;
	uint16_t bucket;
	uint32_t pages;		/* more than UINT32_MAX: several cells, same key */
};

struct mapping {
	char *name;		/* as given, NULL for none; cleaned when drawn */
	uint64_t start;
	uint64_t len;		/* the longest length declared, bytes */
	uint64_t pages;		/* the same in pages, rounded up */
	unsigned bucket_shift;	/* a bucket is 2^bucket_shift pages */
	uint64_t dirtied;	/* pages added, all intervals */
	struct cell *cells;	/* the finished intervals */
	size_t cell_count, cell_capacity;
	int slot;		/* its counts in the current interval's scratch, or -1 */
};

/* From the start of its first interval to the end of its last. */
struct epoch {
	double t0, t1;
};

struct heatmap {
	char *title;
	struct mapping *mappings;
	size_t mapping_count, mapping_capacity;
	int *by_start;		/* mapping ids in ascending start order */
	size_t by_start_capacity;
	struct epoch epochs[COLUMN_BUDGET];
	size_t epoch_count;
	unsigned epoch_shift;	/* an epoch is 2^epoch_shift intervals */
	size_t interval_count;
	double last_t0;
	/*
	 * The current interval's counts, MAX_BUCKETS per mapping written in it,
	 * dense so that an add is a loop over buckets; moved into each
	 * mapping's sparse cells when the next interval starts.
	 */
	uint64_t *scratch;
	int *slot_mapping;
	size_t slot_count, slot_capacity;
	uint64_t total_pages;
};

static size_t bucket_count(const struct mapping *m)
{
	return (size_t)((m->pages - 1) >> m->bucket_shift) + 1;
}

/* Grow *array to hold at least @need elements of @size bytes; 0 or -ENOMEM. */
static int reserve(void **array, size_t *capacity, size_t need, size_t size)
{
	size_t n = *capacity ? *capacity : 8;
	void *p;

	if (need <= *capacity)
		return 0;
	while (n < need) {
		if (n > SIZE_MAX / 2 / size)
			return -ENOMEM;
		n *= 2;
	}
	p = realloc(*array, n * size);
	if (!p)
		return -ENOMEM;
	*array = p;
	*capacity = n;
	return 0;
}

/* The cells that @counts makes, in bucket order. */
static size_t cells_needed(const uint64_t *counts, size_t buckets)
{
	size_t n = 0;

	for (size_t b = 0; b < buckets; b++)
		n += (size_t)(counts[b] / UINT32_MAX + (counts[b] % UINT32_MAX != 0));
	return n;
}

/* Append @counts as cells of @epoch; the room was reserved. */
static void append_cells(struct mapping *m, unsigned epoch, const uint64_t *counts,
			 size_t buckets)
{
	for (size_t b = 0; b < buckets; b++) {
		for (uint64_t left = counts[b]; left; ) {
			uint32_t pages = left > UINT32_MAX ? UINT32_MAX : (uint32_t)left;

			assert(m->cell_count < m->cell_capacity);
			m->cells[m->cell_count++] = (struct cell){ (uint16_t)epoch, (uint16_t)b, pages };
			left -= pages;
		}
	}
}

uint64_t heatmap_page_size(void)
{
	static uint64_t size;

	if (!size)
		size = (uint64_t)sysconf(_SC_PAGESIZE);
	return size;
}

struct heatmap *heatmap_new(const char *title)
{
	struct heatmap *h = calloc(1, sizeof(*h));

	if (!h)
		goto fail;
	h->title = strdup(title && *title ? title : "pages dirtied per interval");
	if (!h->title)
		goto fail;
	return h;
fail:
	free(h);
	errno = ENOMEM;
	return NULL;
}

void heatmap_free(struct heatmap *h)
{
	if (!h)
		return;
	for (size_t i = 0; i < h->mapping_count; i++) {
		free(h->mappings[i].name);
		free(h->mappings[i].cells);
	}
	free(h->mappings);
	free(h->by_start);
	free(h->scratch);
	free(h->slot_mapping);
	free(h->title);
	free(h);
}

/* The index in by_start of the first mapping whose start is >= @start. */
static size_t find_start(const struct heatmap *h, uint64_t start)
{
	size_t low = 0, high = h->mapping_count;

	while (low < high) {
		size_t mid = low + (high - low) / 2;

		if (h->mappings[h->by_start[mid]].start < start)
			low = mid + 1;
		else
			high = mid;
	}
	return low;
}

/*
 * Coarsen @m's buckets by @shift more bits: its stored cells and its counts
 * in the current interval.  Cells of one epoch stay in bucket order, so the
 * ones that now share a bucket are neighbours and merge.
 */
static void coarsen(struct heatmap *h, struct mapping *m, unsigned shift)
{
	size_t kept = 0;

	for (size_t i = 0; i < m->cell_count; i++) {
		struct cell c = m->cells[i];

		c.bucket = (uint16_t)(c.bucket >> shift);
		if (kept && m->cells[kept - 1].epoch == c.epoch &&
		    m->cells[kept - 1].bucket == c.bucket &&
		    m->cells[kept - 1].pages <= UINT32_MAX - c.pages)
			m->cells[kept - 1].pages += c.pages;
		else
			m->cells[kept++] = c;
	}
	m->cell_count = kept;
	if (m->slot >= 0) {
		uint64_t *counts = h->scratch + (size_t)m->slot * MAX_BUCKETS;

		/* in place: bucket b reads from b << shift and up, never below */
		for (uint64_t b = 0; b < MAX_BUCKETS; b++) {
			uint64_t sum = 0;

			for (uint64_t i = b << shift; i < (b + 1) << shift && i < MAX_BUCKETS; i++)
				sum += counts[i];
			counts[b] = sum;
		}
	}
	m->bucket_shift += shift;
}

int heatmap_mapping(struct heatmap *h, const char *name, uint64_t start, uint64_t len)
{
	uint64_t pages = len / HEATMAP_PAGE_SIZE + (len % HEATMAP_PAGE_SIZE != 0);
	struct mapping *m;
	char *copy = NULL;
	size_t at;
	int err;

	if (!h || !len)
		return -EINVAL;
	if (len - 1 > UINT64_MAX - start)
		return -ERANGE;
	at = find_start(h, start);
	if (at < h->mapping_count && h->mappings[h->by_start[at]].start == start) {
		unsigned shift = 0;

		m = &h->mappings[h->by_start[at]];
		/* dirtyctl declares every mapping every interval: copy only a new name */
		if (!(name && *name ? m->name && !strcmp(name, m->name) : !m->name)) {
			if (name && *name) {
				copy = strdup(name);
				if (!copy)
					return -ENOMEM;
			}
			free(m->name);
			m->name = copy;
		}
		if (len > m->len) {
			m->len = len;
			m->pages = pages;
			while ((((m->pages - 1) >> m->bucket_shift) >> shift) + 1 > MAX_BUCKETS)
				shift++;
			if (shift)
				coarsen(h, m, shift);
		}
		return h->by_start[at];
	}

	if (h->mapping_count >= INT_MAX)
		return -ENOSPC;
	if (name && *name) {
		copy = strdup(name);
		if (!copy)
			return -ENOMEM;
	}
	err = reserve((void **)&h->mappings, &h->mapping_capacity, h->mapping_count + 1,
		      sizeof(*h->mappings));
	if (!err)
		err = reserve((void **)&h->by_start, &h->by_start_capacity, h->mapping_count + 1,
			      sizeof(*h->by_start));
	if (err) {
		free(copy);
		return err;
	}
	m = &h->mappings[h->mapping_count];
	*m = (struct mapping){ .name = copy, .start = start, .len = len, .pages = pages,
			       .slot = -1 };
	while (bucket_count(m) > MAX_BUCKETS)
		m->bucket_shift++;
	memmove(h->by_start + at + 1, h->by_start + at,
		(h->mapping_count - at) * sizeof(*h->by_start));
	h->by_start[at] = (int)h->mapping_count;
	return (int)h->mapping_count++;
}

/*
 * Move the current interval's counts into each written mapping's cells, of
 * the epoch the interval is in, merging with that epoch's cells so far.
 */
static int finish_interval(struct heatmap *h)
{
	unsigned epoch = (unsigned)((h->interval_count - 1) >> h->epoch_shift);

	/* reserve everything first: a failure leaves the interval as it was */
	for (size_t s = 0; s < h->slot_count; s++) {
		struct mapping *m = &h->mappings[h->slot_mapping[s]];
		size_t need = cells_needed(h->scratch + s * MAX_BUCKETS, bucket_count(m));
		int err;

		/* merged with the epoch's cells, they need no more than both apart */
		err = reserve((void **)&m->cells, &m->cell_capacity, m->cell_count + need,
			      sizeof(*m->cells));
		if (err)
			return err;
	}
	for (size_t s = 0; s < h->slot_count; s++) {
		struct mapping *m = &h->mappings[h->slot_mapping[s]];
		uint64_t *counts = h->scratch + s * MAX_BUCKETS;

		while (m->cell_count && m->cells[m->cell_count - 1].epoch == epoch) {
			m->cell_count--;
			counts[m->cells[m->cell_count].bucket] += m->cells[m->cell_count].pages;
		}
		append_cells(m, epoch, counts, bucket_count(m));
		m->slot = -1;
	}
	h->slot_count = 0;
	return 0;
}

/* Halve the epochs: each pair becomes one, in the cells of every mapping. */
static void merge_epochs(struct heatmap *h)
{
	for (size_t i = 0; i < h->mapping_count; i++) {
		struct mapping *m = &h->mappings[i];
		size_t read = 0, count = m->cell_count;

		/* a pair's cells make no more cells merged: writing never passes reading */
		m->cell_count = 0;
		while (read < count) {
			unsigned epoch = m->cells[read].epoch >> 1;
			uint64_t counts[MAX_BUCKETS] = { 0 };

			for (; read < count && m->cells[read].epoch >> 1 == epoch; read++)
				counts[m->cells[read].bucket] += m->cells[read].pages;
			append_cells(m, epoch, counts, bucket_count(m));
		}
	}
	for (size_t e = 0; e < h->epoch_count; e += 2)
		h->epochs[e / 2] = (struct epoch){ h->epochs[e].t0,
			e + 1 < h->epoch_count ? h->epochs[e + 1].t1 : h->epochs[e].t1 };
	h->epoch_count = (h->epoch_count + 1) / 2;
	h->epoch_shift++;
}

int heatmap_interval(struct heatmap *h, double t0, double t1)
{
	size_t epoch;
	int err;

	if (!h || !isfinite(t0) || !isfinite(t1) || t0 < 0 || t1 <= t0)
		return -EINVAL;
	if (h->interval_count && t0 < h->last_t0)
		return -EINVAL;
	if (h->interval_count) {
		err = finish_interval(h);
		if (err)
			return err;
	}
	epoch = h->interval_count >> h->epoch_shift;
	if (epoch == COLUMN_BUDGET) {
		merge_epochs(h);
		epoch = h->interval_count >> h->epoch_shift;
	}
	if (epoch == h->epoch_count)
		h->epochs[h->epoch_count++] = (struct epoch){ t0, t1 };
	else
		h->epochs[epoch].t1 = t1;
	h->interval_count++;
	h->last_t0 = t0;
	return 0;
}

int heatmap_add(struct heatmap *h, int mapping, uint64_t page_index, uint64_t npages)
{
	uint64_t end, first, last, *counts;
	struct mapping *m;

	if (!h || mapping < 0 || (size_t)mapping >= h->mapping_count || !h->interval_count)
		return -EINVAL;
	m = &h->mappings[mapping];
	if (page_index > m->pages || npages > m->pages - page_index)
		return -ERANGE;
	if (!npages)
		return 0;
	/* the total bounds every count: none can overflow once it does not */
	if (npages > UINT64_MAX - h->total_pages)
		return -ERANGE;
	if (m->slot < 0) {
		if (h->slot_count >= h->slot_capacity) {
			size_t capacity = h->slot_capacity;
			int err;
			void *p;

			err = reserve((void **)&h->slot_mapping, &capacity, h->slot_count + 1,
				      sizeof(*h->slot_mapping));
			if (err)
				return err;
			if (capacity > SIZE_MAX / MAX_BUCKETS / sizeof(*h->scratch))
				return -ENOMEM;
			p = realloc(h->scratch, capacity * MAX_BUCKETS * sizeof(*h->scratch));
			if (!p)
				return -ENOMEM;	/* slot_mapping's larger block is harmless */
			h->scratch = p;
			h->slot_capacity = capacity;
		}
		m->slot = (int)h->slot_count++;
		h->slot_mapping[m->slot] = mapping;
		memset(h->scratch + (size_t)m->slot * MAX_BUCKETS, 0,
		       MAX_BUCKETS * sizeof(*h->scratch));
	}
	counts = h->scratch + (size_t)m->slot * MAX_BUCKETS;
	end = page_index + npages;
	first = page_index >> m->bucket_shift;
	last = (end - 1) >> m->bucket_shift;
	for (uint64_t b = first; b <= last; b++) {
		uint64_t from = b << m->bucket_shift, to = (b + 1) << m->bucket_shift;

		if (from < page_index)
			from = page_index;
		if (to > end)
			to = end;
		counts[b] += to - from;
	}
	m->dirtied += npages;
	h->total_pages += npages;
	return 0;
}

/* ---- drawing ---- */

/* The byte offset of code point @index of valid UTF-8 @s. */
static size_t code_point_offset(const char *s, size_t index)
{
	size_t at = 0;

	while (index--) {
		at++;
		while (((unsigned char)s[at] & 0xc0) == 0x80)
			at++;
	}
	return at;
}

/*
 * A copy of @s that is valid XML character data once escaped: invalid UTF-8
 * becomes U+FFFD and control characters '?' (paths may hold any byte).  When
 * it has more than @max code points, the middle is cut and replaced by "…",
 * keeping the first @head code points and as many of the last as fit (for a
 * path, head 0: its end says most).  NULL on ENOMEM.
 */
static char *clean_text(const char *s, size_t max, size_t head)
{
	static const char replacement[] = "\xef\xbf\xbd", ellipsis[] = "\xe2\x80\xa6";
	size_t len = strlen(s), n = 0, points = 0, cut_from, cut_to;
	char *out = malloc(3 * len + sizeof(ellipsis));

	if (!out)
		return NULL;
	for (const unsigned char *u = (const unsigned char *)s; *u; ) {
		size_t more = 0;
		unsigned lead = *u;
		unsigned char low = 0x80, high = 0xbf;
		bool valid;

		if (lead < 0x80) {
			out[n++] = lead < 0x20 || lead == 0x7f ? '?' : (char)lead;
			u++;
			points++;
			continue;
		}
		if (lead >= 0xc2 && lead <= 0xdf)
			more = 1;
		else if (lead >= 0xe0 && lead <= 0xef)
			more = 2, low = lead == 0xe0 ? 0xa0 : 0x80, high = lead == 0xed ? 0x9f : 0xbf;
		else if (lead >= 0xf0 && lead <= 0xf4)
			more = 3, low = lead == 0xf0 ? 0x90 : 0x80, high = lead == 0xf4 ? 0x8f : 0xbf;
		/* no overlong forms, no surrogates, nothing past U+10FFFF */
		valid = more > 0 && u[1] >= low && u[1] <= high;
		for (size_t i = 2; valid && i <= more; i++)
			valid = u[i] >= 0x80 && u[i] <= 0xbf;
		/* U+FFFE and U+FFFF are not XML characters */
		if (valid && lead == 0xef && u[1] == 0xbf && u[2] >= 0xbe)
			valid = false;
		if (valid) {
			memcpy(out + n, u, more + 1);
			n += more + 1;
			u += more + 1;
		} else {
			memcpy(out + n, replacement, 3);
			n += 3;
			u++;
		}
		points++;
	}
	out[n] = '\0';
	if (points <= max || max < 2 || head > max - 2)
		return out;
	/* at least two code points go: the gap holds the ellipsis but for one byte */
	cut_from = code_point_offset(out, head);
	cut_to = code_point_offset(out, points - (max - 1 - head));
	memmove(out + cut_from + strlen(ellipsis), out + cut_to, n - cut_to + 1);
	memcpy(out + cut_from, ellipsis, strlen(ellipsis));
	return out;
}

/* 1,234,567 */
static void format_count(char *buf, size_t size, uint64_t n)
{
	char digits[32];
	int len = snprintf(digits, sizeof(digits), "%" PRIu64, n), out = 0;

	for (int i = 0; i < len && out + 2 < (int)size; i++) {
		if (i && (len - i) % 3 == 0)
			buf[out++] = ',';
		buf[out++] = digits[i];
	}
	buf[out] = '\0';
}

/* 4 KiB, 132 KiB, 1.5 GiB */
static void format_bytes(char *buf, size_t size, double bytes)
{
	static const char *const units[] = { "bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
	size_t unit = 0;

	while (bytes >= 1024 && unit + 1 < sizeof(units) / sizeof(units[0])) {
		bytes /= 1024;
		unit++;
	}
	if (unit == 0 || bytes >= 100 || bytes == floor(bytes))
		snprintf(buf, size, "%.0f %s", bytes, units[unit]);
	else
		snprintf(buf, size, "%.1f %s", bytes, units[unit]);
}

/* 1, 10, 100, 1k, 10k, 100k, 1M ... for the legend's powers of ten */
static void format_power_of_ten(char *buf, size_t size, int exponent)
{
	static const char suffix[] = " kMGTPE";

	if (exponent < 3)
		snprintf(buf, size, "%d", exponent == 0 ? 1 : exponent == 1 ? 10 : 100);
	else if (exponent / 3 < (int)strlen(suffix))
		snprintf(buf, size, "%d%c", exponent % 3 == 0 ? 1 : exponent % 3 == 1 ? 10 : 100,
			 suffix[exponent / 3]);
	else
		snprintf(buf, size, "1e%d", exponent);
}

/*
 * The colour ramp: viridis, reversed so that more is darker, from the light
 * yellow of a single page (still clearly not the white of none) to deep
 * violet.  Viridis is perceptually uniform and reads in grey print and for
 * colour-blind readers.
 */
static uint32_t ramp_colour(double t)
{
	static const uint32_t stops[] = {
		0xfde725, 0xaadc32, 0x5cc863, 0x27ad81, 0x21908d,
		0x2c718e, 0x3b518b, 0x472c7a, 0x440154,
	};
	const int last = (int)(sizeof(stops) / sizeof(stops[0])) - 1;
	double x = (t < 0 ? 0 : t > 1 ? 1 : t) * last, frac;
	int i = (int)x;
	uint32_t colour = 0;

	if (i >= last)
		return stops[last];
	frac = x - i;
	for (int shift = 0; shift <= 16; shift += 8) {
		double a = (stops[i] >> shift) & 0xff, b = (stops[i + 1] >> shift) & 0xff;

		colour |= (uint32_t)lround(a + (b - a) * frac) << shift;
	}
	return colour;
}

/* Where a count sits on the log scale from 1 (0.0) to @max (1.0). */
static double scale_position(uint64_t pages, uint64_t max)
{
	if (max <= 1)
		return 1;
	return log((double)pages) / log((double)max);
}

/*
 * One mapping's place in the drawing.  A row is 2^row_shift buckets, so all
 * of a mapping's rows cover the same number of pages (but its last, which
 * ends with the mapping).
 */
struct group {
	const struct mapping *m;
	unsigned row_shift;
	size_t rows;
	int y, height, row_height;	/* pixels */
	char *name;		/* clean, whole */
	char *label;		/* clean, cut to share a line with the range */
	char *label_long;	/* clean, cut to fit a line of its own */
};

struct layout {
	size_t columns;
	size_t per_column;	/* intervals per column: per epoch */
	int cell_width;
	int plot_width, plot_height, bottom;
	int decimals;		/* of the times in tooltips */
	struct group *groups;
	size_t group_count;
	size_t other_count;	/* mappings never written, in the band */
	uint64_t other_bytes;
	uint64_t max_pages;	/* the largest cell */
	char *title;		/* clean, whole */
	char *title_shown;	/* clean, cut to the width */
};

/* The address of page @page of @m, or of its end when that is sooner. */
static uint64_t page_address(const struct mapping *m, uint64_t page)
{
	uint64_t offset = page * HEATMAP_PAGE_SIZE;

	return m->start + (offset < m->len ? offset : m->len);
}

static size_t rows_at(const struct group *g, unsigned row_shift)
{
	return ((bucket_count(g->m) - 1) >> row_shift) + 1;
}

/* The first page of @row of @g, or the mapping's page count past its last row. */
static uint64_t row_first_page(const struct group *g, size_t row)
{
	uint64_t page = (uint64_t)row << (g->row_shift + g->m->bucket_shift);

	return page < g->m->pages ? page : g->m->pages;
}

/*
 * Sum @g's cells into values[column * rows + row]; returns the largest.
 * The current interval's counts come from the scratch.
 */
static uint64_t group_values(const struct heatmap *h, const struct layout *l,
			     const struct group *g, uint64_t *values)
{
	uint64_t max = 0;

	memset(values, 0, l->columns * g->rows * sizeof(*values));
	for (size_t i = 0; i < g->m->cell_count; i++) {
		const struct cell *c = &g->m->cells[i];

		values[c->epoch * g->rows + (c->bucket >> g->row_shift)] += c->pages;
	}
	if (g->m->slot >= 0) {
		const uint64_t *counts = h->scratch + (size_t)g->m->slot * MAX_BUCKETS;
		size_t column = (h->interval_count - 1) >> h->epoch_shift;

		for (size_t b = 0; b < bucket_count(g->m); b++)
			values[column * g->rows + (b >> g->row_shift)] += counts[b];
	}
	for (size_t i = 0; i < l->columns * g->rows; i++)
		if (values[i] > max)
			max = values[i];
	return max;
}

/*
 * Rows for each mapping ever written: one each, then, while the budget
 * lasts, halve the rows of the mapping with the most pages per row.  That
 * shares rows in proportion to size, and gives the rows a small mapping
 * cannot use (one per bucket at most) to the others.  With more mappings
 * than the budget, a quarter of it is still shared, so the largest ones
 * keep some detail.
 */
static void share_rows(struct group *groups, size_t count)
{
	size_t left = count + ROW_BUDGET / 4 < ROW_BUDGET ? ROW_BUDGET - count : ROW_BUDGET / 4;

	for (size_t i = 0; i < count; i++) {
		groups[i].row_shift = 0;
		while (rows_at(&groups[i], groups[i].row_shift) > 1)
			groups[i].row_shift++;
		groups[i].rows = 1;
	}
	for (;;) {
		double most = 0;
		size_t best = count;

		for (size_t i = 0; i < count; i++) {
			double pages_per_row = (double)groups[i].m->pages / (double)groups[i].rows;

			if (groups[i].row_shift > 0 && pages_per_row > most &&
			    rows_at(&groups[i], groups[i].row_shift - 1) - groups[i].rows <= left) {
				most = pages_per_row;
				best = i;
			}
		}
		if (best == count)
			break;
		groups[best].row_shift--;
		left -= rows_at(&groups[best], groups[best].row_shift) - groups[best].rows;
		groups[best].rows = rows_at(&groups[best], groups[best].row_shift);
	}
}

/*
 * Pixel heights: @row_height per row, but every mapping at least
 * @min_height tall so that it can be seen and labelled; a mapping that must
 * be taller than its rows gets finer rows where its buckets allow, else
 * taller ones.  Returns the total height.
 */
static int size_groups(struct group *groups, size_t count, int row_height, int min_height,
		       bool commit)
{
	int total = 0;

	for (size_t i = 0; i < count; i++) {
		struct group g = groups[i];

		while (g.row_shift > 0 && (int)g.rows * row_height < min_height) {
			g.row_shift--;
			g.rows = rows_at(&g, g.row_shift);
		}
		g.row_height = row_height;
		if ((int)g.rows * g.row_height < min_height)
			g.row_height = (min_height + (int)g.rows - 1) / (int)g.rows;
		g.height = (int)g.rows * g.row_height;
		total += g.height;
		if (commit)
			groups[i] = g;
	}
	return total;
}

static void free_layout(struct layout *l)
{
	for (size_t i = 0; i < l->group_count; i++) {
		free(l->groups[i].name);
		free(l->groups[i].label);
		free(l->groups[i].label_long);
	}
	free(l->groups);
	free(l->title);
	free(l->title_shown);
}

static int make_layout(const struct heatmap *h, struct layout *l, uint64_t **ret_values)
{
	int y = PLOT_TOP, row_height, min_height;
	double shortest = INFINITY;
	size_t max_rows = 1;
	uint64_t *values;

	*l = (struct layout){ .per_column = (size_t)1 << h->epoch_shift, .columns = h->epoch_count };
	l->cell_width = l->columns ? PLOT_WIDTH / (int)l->columns : PLOT_WIDTH;
	l->plot_width = l->columns ? l->cell_width * (int)l->columns : PLOT_WIDTH;

	l->groups = calloc(h->mapping_count + 1, sizeof(*l->groups));
	if (!l->groups)
		return -ENOMEM;
	for (size_t i = 0; i < h->mapping_count; i++) {
		const struct mapping *m = &h->mappings[h->by_start[i]];

		if (m->dirtied) {
			l->groups[l->group_count++].m = m;
		} else {
			l->other_count++;
			l->other_bytes += m->len;
		}
	}
	share_rows(l->groups, l->group_count);
	/* a label's height each when there is room, else an even share */
	min_height = l->group_count ? PLOT_HEIGHT / (int)l->group_count : MIN_GROUP_HEIGHT;
	if (min_height > MIN_GROUP_HEIGHT)
		min_height = MIN_GROUP_HEIGHT;
	for (row_height = MAX_ROW_HEIGHT; row_height > MIN_ROW_HEIGHT; row_height--)
		if (size_groups(l->groups, l->group_count, row_height, min_height, false) <= PLOT_HEIGHT)
			break;
	size_groups(l->groups, l->group_count, row_height, min_height, true);

	for (size_t i = 0; i < l->group_count; i++) {
		struct group *g = &l->groups[i];
		const char *name = g->m->name ? g->m->name : "anonymous";

		g->y = y;
		y += g->height;
		if (g->rows > max_rows)
			max_rows = g->rows;
		g->name = clean_text(name, SIZE_MAX, 0);
		g->label = clean_text(name, NAME_ONE_LINE, 0);
		g->label_long = clean_text(name, NAME_TWO_LINES, 0);
		if (!g->name || !g->label || !g->label_long)
			return -ENOMEM;
	}
	if (l->other_count)
		y += OTHER_BAND_HEIGHT;
	l->plot_height = y - PLOT_TOP;
	if (l->plot_height < 2 * OTHER_BAND_HEIGHT)
		l->plot_height = 2 * OTHER_BAND_HEIGHT;	/* room for "no pages dirtied" */
	l->bottom = PLOT_TOP + l->plot_height;

	/* enough decimals that a column spans at least 5 in the last digit */
	for (size_t c = 0; c < l->columns; c++)
		if (h->epochs[c].t1 - h->epochs[c].t0 < shortest)
			shortest = h->epochs[c].t1 - h->epochs[c].t0;
	l->decimals = 1;
	while (l->decimals < 3 && shortest < 5 * pow(10, -l->decimals) * (1 - 1e-9))
		l->decimals++;

	values = malloc((l->columns ? l->columns : 1) * max_rows * sizeof(*values));
	if (!values)
		return -ENOMEM;
	for (size_t i = 0; i < l->group_count; i++) {
		uint64_t max = group_values(h, l, &l->groups[i], values);

		if (max > l->max_pages)
			l->max_pages = max;
	}
	*ret_values = values;
	return 0;
}

static void write_header(const struct heatmap *h, const struct layout *l, FILE *f, int width,
			 int height)
{
	char pages[32], bytes[32];
	size_t written = l->group_count;

	format_count(pages, sizeof(pages), h->total_pages);
	format_bytes(bytes, sizeof(bytes), (double)h->total_pages * HEATMAP_PAGE_SIZE);
	fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
		"viewBox=\"0 0 %d %d\" font-family=\"DejaVu Sans, Verdana, sans-serif\" "
		"font-size=\"11\" data-total-pages=\"%" PRIu64 "\">\n<title>",
		width, height, width, height, h->total_pages);
	xml_text(f, l->title);
	fputs("</title>\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
	      "<text x=\"12\" y=\"26\" font-size=\"16\" font-weight=\"bold\">", f);
	xml_text(f, l->title_shown);
	fprintf(f, "</text>\n<text x=\"12\" y=\"46\" font-size=\"12\" fill=\"#444\">%s page%s "
		"(%s) dirtied", pages, h->total_pages == 1 ? "" : "s", bytes);
	if (h->interval_count)
		fprintf(f, " in %zu interval%s, %.*f to %.*f s", h->interval_count,
			h->interval_count == 1 ? "" : "s", l->decimals, h->epochs[0].t0,
			l->decimals, h->epochs[h->epoch_count - 1].t1);
	fprintf(f, "; %zu of %zu mapping%s written</text>\n", written, h->mapping_count,
		h->mapping_count == 1 ? "" : "s");
	fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\" font-weight=\"bold\" "
		"fill=\"#444\">mapping, by address \xe2\x86\x93</text>\n", PLOT_LEFT - 8, PLOT_TOP - 8);
	if (l->per_column > 1)
		fprintf(f, "<text x=\"%d\" y=\"%d\" fill=\"#444\">each column: %zu consecutive "
			"intervals</text>\n", PLOT_LEFT, PLOT_TOP - 8, l->per_column);
}

/*
 * Each mapping's background band, across the label column and the plot,
 * with its name, range and total as a tooltip, and the band of the
 * mappings never written.
 */
static void write_bands(const struct layout *l, FILE *f)
{
	for (size_t i = 0; i < l->group_count; i++) {
		const struct group *g = &l->groups[i];
		char size[32], pages[32];

		format_bytes(size, sizeof(size), (double)g->m->len);
		format_count(pages, sizeof(pages), g->m->dirtied);
		fprintf(f, "<rect x=\"8\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\"><title>",
			g->y, PLOT_LEFT - 8 + l->plot_width, g->height, i % 2 ? "#e9edf3" : "#ffffff");
		xml_text(f, g->name);
		fprintf(f, " 0x%" PRIx64 "-0x%" PRIx64 " (%s): %s page%s dirtied in all, %zu row%s"
			"</title></rect>\n", g->m->start, page_address(g->m, g->m->pages), size, pages,
			g->m->dirtied == 1 ? "" : "s", g->rows, g->rows == 1 ? "" : "s");
	}
	if (l->other_count) {
		char size[32];
		int y = l->bottom - OTHER_BAND_HEIGHT;

		format_bytes(size, sizeof(size), (double)l->other_bytes);
		fprintf(f, "<rect x=\"8\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#e4e4e4\"/>\n",
			y, PLOT_LEFT - 8 + l->plot_width, OTHER_BAND_HEIGHT);
	}
}

/*
 * The labels, drawn after every band, grid line and cell so that none
 * covers them: for each mapping its name and range, on two lines, on one,
 * or not at all where it would overlap the label above (its band's tooltip
 * still names it).
 */
static void write_labels(const struct layout *l, FILE *f)
{
	int free_from = 0;	/* the first y a new label may use */

	if (l->other_count) {
		char size[32];

		format_bytes(size, sizeof(size), (double)l->other_bytes);
		fprintf(f, "<text x=\"%d\" y=\"%d\" fill=\"#555\">other: %zu mapping%s never "
			"written, %s in all</text>\n", PLOT_LEFT + 6,
			l->bottom - OTHER_BAND_HEIGHT / 2 + 4, l->other_count,
			l->other_count == 1 ? "" : "s", size);
	}
	if (!l->group_count)
		fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" fill=\"#666\">%s</text>\n",
			PLOT_LEFT + l->plot_width / 2, PLOT_TOP + OTHER_BAND_HEIGHT - 4,
			l->columns ? "no pages dirtied" : "no intervals recorded");
	fputs("<g text-anchor=\"end\">\n", f);
	for (size_t i = 0; i < l->group_count; i++) {
		const struct group *g = &l->groups[i];
		int centre = g->y + g->height / 2;
		char size[32];

		format_bytes(size, sizeof(size), (double)g->m->len);
		/* two lines, one line, or none when it would overlap the one above */
		if (g->height >= 30 && centre - 13 >= free_from) {
			fprintf(f, "<text x=\"%d\" y=\"%d\">", PLOT_LEFT - 8, centre - 2);
			xml_text(f, g->label_long);
			fprintf(f, "</text>\n<text x=\"%d\" y=\"%d\" font-family=\"DejaVu Sans Mono, "
				"monospace\" font-size=\"10\" fill=\"#555\">0x%" PRIx64 "-0x%" PRIx64 " %s"
				"</text>\n", PLOT_LEFT - 8, centre + 11, g->m->start,
				page_address(g->m, g->m->pages), size);
			free_from = centre + 16;
		} else if (centre - 6 >= free_from) {
			fprintf(f, "<text x=\"%d\" y=\"%d\">", PLOT_LEFT - 10, centre + 4);
			xml_text(f, g->label);
			fprintf(f, " <tspan font-family=\"DejaVu Sans Mono, monospace\" font-size=\"10\" "
				"fill=\"#555\">0x%" PRIx64 "-0x%" PRIx64 "</tspan></text>\n",
				g->m->start, page_address(g->m, g->m->pages));
			/* which thin band the label names */
			if (g->height < 12)
				fprintf(f, "<line x1=\"%d\" y1=\"%d.5\" x2=\"%d\" y2=\"%d.5\" "
					"stroke=\"#555\"/>\n", PLOT_LEFT - 7, centre, PLOT_LEFT - 1, centre);
			free_from = centre + 10;
		}
	}
	fputs("</g>\n", f);
}

/* The x position of time @t, or -1 when no column holds it. */
static int time_position(const struct heatmap *h, const struct layout *l, double t)
{
	size_t low = 0, high = l->columns;
	double t0, t1;

	/* the last column that starts at or before t */
	while (high - low > 1) {
		size_t mid = low + (high - low) / 2;

		if (h->epochs[mid].t0 <= t)
			low = mid;
		else
			high = mid;
	}
	t0 = h->epochs[low].t0;
	t1 = h->epochs[low].t1;
	if (t < t0 || t > t1)
		return -1;
	return PLOT_LEFT + (int)low * l->cell_width + (int)lround((t - t0) / (t1 - t0) * l->cell_width);
}

/* Grid lines and labels of the time axis at 1, 2 or 5 times a power of ten. */
static void write_time_axis(const struct heatmap *h, const struct layout *l, FILE *f)
{
	double first, last, raw, magnitude, step;
	int decimals;

	fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" fill=\"#444\">time since the "
		"start, s</text>\n", PLOT_LEFT + l->plot_width / 2, l->bottom + 34);
	if (!l->columns)
		return;
	first = h->epochs[0].t0;
	last = h->epochs[h->epoch_count - 1].t1;
	raw = (last - first) / 8;
	magnitude = pow(10, floor(log10(raw)));
	step = magnitude * (raw <= magnitude ? 1 : raw <= 2 * magnitude ? 2 :
			    raw <= 5 * magnitude ? 5 : 10);
	decimals = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
	fputs("<g stroke=\"#d8d8d8\" stroke-width=\"1\">\n", f);
	for (double k = ceil(first / step - 1e-9); k * step <= last + step * 1e-9; k++) {
		int x = time_position(h, l, k * step);

		if (x >= 0)
			fprintf(f, "<line x1=\"%d.5\" y1=\"%d\" x2=\"%d.5\" y2=\"%d\"/>\n", x, PLOT_TOP,
				x, l->bottom + 4);
	}
	fputs("</g>\n<g text-anchor=\"middle\" fill=\"#444\">\n", f);
	for (double k = ceil(first / step - 1e-9); k * step <= last + step * 1e-9; k++) {
		int x = time_position(h, l, k * step);

		/* + 0.0: no "-0" */
		if (x >= 0)
			fprintf(f, "<text x=\"%d\" y=\"%d\">%.*f</text>\n", x, l->bottom + 16, decimals,
				k * step + 0.0);
	}
	fputs("</g>\n", f);
}

/* The colour scale: a white box for 0, the ramp with its powers of ten, the maximum. */
static void write_legend(const struct layout *l, FILE *f)
{
	int y = l->bottom + 56, bar_x = PLOT_LEFT + 36, decades;
	char max[32];

	fputs("<defs><linearGradient id=\"ramp\">", f);
	for (int i = 0; i <= 20; i++)
		fprintf(f, "<stop offset=\"%d%%\" stop-color=\"#%06" PRIx32 "\"/>", i * 5,
			ramp_colour(i / 20.0));
	fputs("</linearGradient></defs>\n", f);
	fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\" fill=\"#444\">pages dirtied "
		"per cell (log scale)</text>\n", PLOT_LEFT - 8, y + 10);
	fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"14\" height=\"12\" fill=\"white\" "
		"stroke=\"#999\"/>\n<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">0</text>\n",
		PLOT_LEFT, y, PLOT_LEFT + 7, y + 26);
	fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"12\" fill=\"url(#ramp)\" "
		"stroke=\"#999\"/>\n", bar_x, y, LEGEND_BAR_WIDTH);
	/* ticks at powers of ten, thinned out past 8 decades */
	decades = l->max_pages > 1 ? (int)floor(log10((double)l->max_pages) + 1e-9) : 0;
	for (int e = 0; e <= decades; e += decades > 8 ? 2 : 1) {
		double t = l->max_pages > 1 ? e * log(10) / log((double)l->max_pages) : 0;
		int x = bar_x + (int)lround(t * LEGEND_BAR_WIDTH);
		char label[16];

		if (t > 1)
			break;
		format_power_of_ten(label, sizeof(label), e);
		fprintf(f, "<line x1=\"%d.5\" y1=\"%d\" x2=\"%d.5\" y2=\"%d\" stroke=\"#666\"/>\n"
			"<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%s</text>\n",
			x, y + 12, x, y + 16, x, y + 26, label);
	}
	format_count(max, sizeof(max), l->max_pages);
	if (l->max_pages)
		fprintf(f, "<text x=\"%d\" y=\"%d\">%s page%s: the fullest cell</text>\n",
			bar_x + LEGEND_BAR_WIDTH + 10, y + 10, max, l->max_pages == 1 ? "" : "s");
	fprintf(f, "<text x=\"%d\" y=\"%d\" fill=\"#666\">Each row is an equal share of its "
		"mapping's pages (mappings ever written get rows by size, at least one); "
		"hover a cell for its range and count.</text>\n", 12, y + 50);
}

/* The cells of one mapping: a rect for each that is not zero. */
static void write_cells(const struct heatmap *h, const struct layout *l, const struct group *g,
			const uint64_t *values, FILE *f)
{
	fprintf(f, "<g data-mapping=\"0x%" PRIx64 "\">\n", g->m->start);
	for (size_t row = 0; row < g->rows; row++) {
		uint64_t from = page_address(g->m, row_first_page(g, row));
		uint64_t to = page_address(g->m, row_first_page(g, row + 1));
		int y = g->y + (int)row * g->row_height;

		for (size_t column = 0; column < l->columns; column++) {
			uint64_t pages = values[column * g->rows + row];
			double t0, t1;

			if (!pages)
				continue;
			t0 = h->epochs[column].t0;
			t1 = h->epochs[column].t1;
			fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#%06" PRIx32
				"\" data-pages=\"%" PRIu64 "\"><title>", PLOT_LEFT + (int)column * l->cell_width,
				y, l->cell_width, g->row_height,
				ramp_colour(scale_position(pages, l->max_pages)), pages);
			xml_text(f, g->name);
			fprintf(f, " 0x%" PRIx64 "-0x%" PRIx64 ", t=%.*f-%.*f s: %" PRIu64 " page%s"
				"</title></rect>\n", from, to, l->decimals, t0, l->decimals, t1, pages,
				pages == 1 ? "" : "s");
		}
	}
	fputs("</g>\n", f);
}

int heatmap_write_svg(const struct heatmap *h, FILE *f)
{
	struct layout l;
	uint64_t *values = NULL;
	int err, width, height;

	if (!h || !f)
		return -EINVAL;
	err = make_layout(h, &l, &values);
	if (err)
		goto out;
	width = PLOT_LEFT + l.plot_width + MARGIN_RIGHT;
	if (width < PLOT_LEFT + LEGEND_BAR_WIDTH + 300)
		width = PLOT_LEFT + LEGEND_BAR_WIDTH + 300;
	height = l.bottom + 120;
	/* about 10 pixels a character in the bold title; keep its start and end */
	l.title = clean_text(h->title, SIZE_MAX, 0);
	l.title_shown = clean_text(h->title, (size_t)(width - 24) / 10, (size_t)(width - 24) / 20);
	if (!l.title || !l.title_shown) {
		err = -ENOMEM;
		goto out;
	}

	write_header(h, &l, f, width, height);
	write_bands(&l, f);
	write_time_axis(h, &l, f);
	fputs("<g shape-rendering=\"crispEdges\">\n", f);
	for (size_t i = 0; i < l.group_count; i++) {
		group_values(h, &l, &l.groups[i], values);
		write_cells(h, &l, &l.groups[i], values, f);
	}
	fputs("</g>\n", f);
	fprintf(f, "<rect x=\"%d.5\" y=\"%d.5\" width=\"%d\" height=\"%d\" fill=\"none\" "
		"stroke=\"#888\"/>\n", PLOT_LEFT - 1, PLOT_TOP - 1, l.plot_width + 1, l.plot_height + 1);
	write_labels(&l, f);
	write_legend(&l, f);
	fputs("</svg>\n", f);
	if (fflush(f) || ferror(f))
		err = -EIO;
out:
	free(values);
	free_layout(&l);
	return err;
}
