/* SPDX-License-Identifier: MIT */
/*
 * dirty-syncd's region plan (tools/dirty-syncd/syncd-regions.c): worked
 * examples with the exact regions, then random pages, alignments and caps
 * against a model that counts at the granularity of the alignment: the plan
 * must cover every dirty page, be aligned, sorted, disjoint and apart, hold
 * no more regions than the cap, and copy exactly the model's bytes
 * (syncd-model.h: the covered blocks and the smallest gaps that the cap
 * forces closed).
 */
#include <check.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "syncd-model.h"
#include "syncd-regions.h"

#define P 4096u

static uint64_t bits[8];

static void set_pages(const unsigned *pages, size_t n)
{
	memset(bits, 0, sizeof(bits));
	for (size_t i = 0; i < n; i++)
		bits[pages[i] / 64] |= 1ull << (pages[i] % 64);
}

static void expect(const struct syncd_region *got, ssize_t n, const uint64_t (*want)[2],
		   ssize_t nwant)
{
	ck_assert_int_eq(n, nwant);
	for (ssize_t i = 0; i < n; i++) {
		ck_assert_uint_eq(got[i].offset, want[i][0] * P);
		ck_assert_uint_eq(got[i].len, want[i][1] * P);
	}
}

START_TEST(test_examples)
{
	static const unsigned pages[] = { 0, 1, 5, 9, 10, 11 };
	struct syncd_region r[8];
	struct syncd_flush_stats st;
	ssize_t n;

	set_pages(pages, 6);
	/* as they are: three runs, three regions */
	n = syncd_plan(bits, 16, P, 16 * P, 1, 0, r, &st);
	expect(r, n, (const uint64_t[][2]){ { 0, 2 }, { 5, 1 }, { 9, 3 } }, 3);
	ck_assert_uint_eq(st.runs, 3);
	ck_assert_uint_eq(st.dirty_bytes, 6 * P);
	ck_assert_uint_eq(st.bytes, 6 * P);
	ck_assert_uint_eq(st.regions, 3);
	ck_assert_uint_eq(st.gaps_closed, 0);
	ck_assert_uint_eq(st.time_ns, 0);
	/* an alignment below the page changes nothing */
	n = syncd_plan(bits, 16, P, 16 * P, 256, 0, r, &st);
	expect(r, n, (const uint64_t[][2]){ { 0, 2 }, { 5, 1 }, { 9, 3 } }, 3);
	/* two pages: [0,2) [4,6) [8,12) */
	n = syncd_plan(bits, 16, P, 16 * P, 2 * P, 0, r, &st);
	expect(r, n, (const uint64_t[][2]){ { 0, 2 }, { 4, 2 }, { 8, 4 } }, 3);
	ck_assert_uint_eq(st.bytes, 8 * P);
	ck_assert_uint_eq(st.dirty_bytes, 6 * P);
	/* and at most two: the gaps are equal (two pages each), the first closes */
	n = syncd_plan(bits, 16, P, 16 * P, 2 * P, 2, r, &st);
	expect(r, n, (const uint64_t[][2]){ { 0, 6 }, { 8, 4 } }, 2);
	ck_assert_uint_eq(st.bytes, 10 * P);
	ck_assert_uint_eq(st.gaps_closed, 1);
	/* four pages: the blocks touch, one region */
	n = syncd_plan(bits, 16, P, 16 * P, 4 * P, 0, r, &st);
	expect(r, n, (const uint64_t[][2]){ { 0, 12 } }, 1);
	ck_assert_uint_eq(st.runs, 3);
	/* at most one, unaligned: from the first dirty byte to the last */
	n = syncd_plan(bits, 16, P, 16 * P, 1, 1, r, &st);
	expect(r, n, (const uint64_t[][2]){ { 0, 12 } }, 1);
	ck_assert_uint_eq(st.gaps_closed, 2);
	/* at most two, unaligned: the gaps are equal (three pages), the lower closes */
	n = syncd_plan(bits, 16, P, 16 * P, 1, 2, r, &st);
	expect(r, n, (const uint64_t[][2]){ { 0, 6 }, { 9, 3 } }, 2);
}
END_TEST

START_TEST(test_edges)
{
	static const unsigned last[] = { 9 }, none[] = { 0 };
	struct syncd_region r[8];
	struct syncd_flush_stats st;
	ssize_t n;

	/* a buffer that is not a multiple of the alignment: clipped at its end */
	set_pages(last, 1);
	n = syncd_plan(bits, 10, P, 10 * P, 4 * P, 0, r, &st);
	expect(r, n, (const uint64_t[][2]){ { 8, 2 } }, 1);
	/* an alignment larger than the buffer: the whole buffer */
	n = syncd_plan(bits, 10, P, 10 * P, 1ull << 62, 0, r, &st);
	expect(r, n, (const uint64_t[][2]){ { 0, 10 } }, 1);
	/* nothing marked: nothing planned; bits past the last page are no pages */
	set_pages(none, 0);
	bits[0] = ~0ull << 10;
	n = syncd_plan(bits, 10, P, 10 * P, 1, 0, r, &st);
	ck_assert_int_eq(n, 0);
	ck_assert_uint_eq(st.runs, 0);
	ck_assert_uint_eq(st.bytes, 0);
	/* every page: one region */
	bits[0] = ~0ull;
	n = syncd_plan(bits, 64, P, 64 * P, 1, 1, r, &st);
	expect(r, n, (const uint64_t[][2]){ { 0, 64 } }, 1);
	/* bad arguments */
	ck_assert_int_eq(syncd_plan(bits, 10, P, 10 * P, 3, 0, r, &st), -EINVAL);
	ck_assert_int_eq(syncd_plan(bits, 10, P, 10 * P, 0, 0, r, &st), -EINVAL);
	ck_assert_int_eq(syncd_plan(bits, 10, P, 11 * P, 1, 0, r, &st), -EINVAL);
	ck_assert_int_eq(syncd_plan(bits, 10, P, 10 * P + 1, 1, 0, r, &st), -EINVAL);
}
END_TEST

static uint64_t next_random(uint64_t *state)
{
	*state ^= *state << 13;
	*state ^= *state >> 7;
	*state ^= *state << 17;
	return *state;
}

START_TEST(test_against_model)
{
	static const uint64_t aligns[] = { 1, 512, P, 2 * P, 8 * P, 64 * P, 1ull << 40 };
	static const uint64_t caps[] = { 0, 1, 2, 3, 7, 1000 };
	uint64_t state = 0x9e3779b97f4a7c15ull ^ (uint64_t)_i;
	struct syncd_region r[256];

	for (int iteration = 0; iteration < 500; iteration++) {
		uint64_t npages = 1 + next_random(&state) % 500, density = next_random(&state) % 100;
		uint64_t align = aligns[next_random(&state) % 7], max = caps[next_random(&state) % 6];
		uint64_t size = npages * P, dirty = 0;
		struct syncd_model want;
		struct syncd_flush_stats st;
		ssize_t n;

		memset(bits, 0, sizeof(bits));
		for (uint64_t p = 0; p < npages; p++)
			if (next_random(&state) % 100 < density) {
				bits[p / 64] |= 1ull << (p % 64);
				dirty++;
			}
		n = syncd_plan(bits, npages, P, size, align, max, r, &st);
		ck_assert_int_ge(n, 0);
		ck_assert(syncd_model(bits, npages, P, align, max, &want));
		ck_assert_uint_eq((uint64_t)n, want.regions);
		ck_assert_uint_eq(st.regions, want.regions);
		ck_assert_uint_eq(st.bytes, want.bytes);
		ck_assert_uint_eq(st.runs, want.runs);
		ck_assert_uint_eq(st.dirty_bytes, dirty * P);
		ck_assert_uint_eq(want.dirty_bytes, dirty * P);
		ck_assert(!max || (uint64_t)n <= max);
		for (ssize_t i = 0; i < n; i++) {
			uint64_t end = r[i].offset + r[i].len;

			ck_assert_uint_gt(r[i].len, 0);
			ck_assert_uint_le(end, size);
			ck_assert_uint_eq(r[i].offset % (align < size ? align : 1), 0);
			ck_assert(end == size || end % align == 0);
			if (i)
				ck_assert_uint_gt(r[i].offset, r[i - 1].offset + r[i - 1].len);
		}
		for (uint64_t p = 0, i = 0; p < npages; p++) {
			if (!(bits[p / 64] >> (p % 64) & 1))
				continue;
			while (i < (uint64_t)n && r[i].offset + r[i].len <= p * P)
				i++;
			ck_assert_msg(i < (uint64_t)n && r[i].offset <= p * P,
				      "dirty page %llu is in no region", (unsigned long long)p);
		}
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("syncd-regions");
	TCase *tc = tcase_create("plan");
	SRunner *runner;
	int failed;

	tcase_add_test(tc, test_examples);
	tcase_add_test(tc, test_edges);
	tcase_add_loop_test(tc, test_against_model, 0, 8);
	suite_add_tcase(s, tc);
	runner = srunner_create(s);
	srunner_run_all(runner, CK_NORMAL);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed ? 1 : 0;
}
