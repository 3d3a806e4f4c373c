/* SPDX-License-Identifier: MIT */
/*
 * libdirty/run-set.c against a model: a set of pages as runs, changed at
 * random by add() and by the builder's replace(), must hold exactly the
 * pages a bitmap of the same changes holds, in sorted, disjoint, coalesced
 * runs.  (Internal: linked with the static library.)
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "libdirty-int.h"
#include "tap.h"

#define PAGES 512
#define P 4096u

static bool model[PAGES];

/* What is wrong with s against the model, or NULL (no ck_assert per page: each one writes). */
static const char *differs(const struct dirty_run_set *s, size_t *ret_page)
{
	bool seen[PAGES] = { false };

	*ret_page = 0;
	for (size_t i = 0; i < s->n; i++) {
		if (s->v[i].start >= s->v[i].end || s->v[i].start % P || s->v[i].end % P)
			return "a run that is empty or not page aligned";
		if (i && s->v[i - 1].end >= s->v[i].start)
			return "runs out of order, overlapping or not coalesced";
		for (uintptr_t a = s->v[i].start; a < s->v[i].end; a += P)
			seen[a / P] = true;
	}
	for (size_t p = 0; p < PAGES; p++) {
		if (seen[p] != model[p]) {
			*ret_page = p;
			return seen[p] ? "a page the model does not hold" : "a page missing";
		}
	}
	return s->cap < s->n ? "more runs than room" : NULL;
}

START_TEST(test_against_model)
{
	struct dirty_run_set s;
	unsigned x = 12345u + (unsigned)_i;

	memset(model, 0, sizeof(model));
	ck_assert_int_eq(dirty_run_set_init(&s), 0);
	for (int step = 0; step < 4000; step++) {
		size_t a, b;

		x = x * 1103515245u + 12345u;
		a = (x >> 8) % PAGES;
		x = x * 1103515245u + 12345u;
		b = a + 1 + (x >> 8) % 24;
		if (b > PAGES)
			b = PAGES;
		if ((x >> 20) % 3) {
			dirty_run_set_add(&s, a * P, b * P);
			for (size_t p = a; p < b; p++)
				model[p] = true;
		} else {
			/* [a, b) becomes: some runs of its own, in order */
			struct dirty_run_set builder;

			ck_assert_int_eq(dirty_run_set_builder_init(&builder, &s), 0);
			for (size_t p = a; p < b; p++) {
				x = x * 1103515245u + 12345u;
				model[p] = (x >> 16) & 1;
				if (model[p])
					dirty_run_set_builder_add(&builder, &s, p * P, (p + 1) * P);
			}
			dirty_run_set_replace(&s, a * P, b * P, &builder);
			ck_assert_ptr_null(builder.v);
		}
		{
			size_t page;
			const char *wrong = differs(&s, &page);

			ck_assert_msg(!wrong, "step %d: %s (page %zu)", step, wrong ? wrong : "", page);
		}
	}
	/* lower_bound: the first run that ends above the address */
	for (size_t p = 0; p < PAGES; p++) {
		size_t i = dirty_run_set_lower_bound(&s, p * P);

		if ((i < s.n && s.v[i].end <= p * P) || (i && s.v[i - 1].end > p * P))
			ck_abort_msg("lower_bound(page %zu) = %zu", p, i);
	}
	dirty_run_set_free(&s);
	ck_assert_ptr_null(s.v);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("run-set");
	TCase *tc = tcase_create("model");

	tap_begin();
	tcase_add_loop_test(tc, test_against_model, 0, 8);
	suite_add_tcase(s, tc);
	return tap_run(srunner_create(s));
}
