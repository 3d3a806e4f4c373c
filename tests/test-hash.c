/* SPDX-License-Identifier: MIT */
/*
 * The page hash of the compare way (dirty_hash_page(), libdirty/base/hash.c):
 * the SIMD code and the plain C code give the same answer for every key and
 * content; the answer depends on every bit of the page, on the key, and on
 * nothing else (not the page's address); keys differ from one another.
 * Whether a collision is rare is the hash's design, not something a test can
 * show; what a test can show is that no single-bit change, no swap of two
 * words and no change of length goes unseen.
 */
#include <check.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libdirty-int.h"
#include "tap.h"

#define PAGE 4096

static void random_fill(unsigned char *p, size_t len, unsigned seed)
{
	uint64_t x = 0x9E3779B97F4A7C15u * (seed + 1);

	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (unsigned char)x;
	}
}

static struct dirty_hash_key key_of(int i)
{
	struct dirty_hash_key k;

	if (i == 0) { /* a fixed key: the same answers on every run */
		for (size_t j = 0; j < sizeof(k.k) / sizeof(k.k[0]); j++)
			k.k[j] = 0x0123456789abcdefu * (j + 1);
		return k;
	}
	ck_assert_int_eq(dirty_hash_key_new(&k), 0);
	return k;
}

/* SIMD and C agree, on random contents, zeroes, ones, at 1 KiB to 16 KiB. */
START_TEST(test_simd_equals_c)
{
	static const size_t lens[] = { 1024, 2048, PAGE, 16384 };
	unsigned char *buf = aligned_alloc(64, 16384 + 64);
	struct dirty_hash_key k = key_of(_i);

	ck_assert_ptr_nonnull(buf);
	for (unsigned seed = 0; seed < 64; seed++) {
		size_t len = lens[seed % 4], off = seed % 3 ? 0 : 8 * (seed % 8);

		if (seed == 1)
			memset(buf + off, 0, len);
		else if (seed == 2)
			memset(buf + off, 0xff, len);
		else
			random_fill(buf + off, len, seed);
		ck_assert_msg(dirty_hash_page(buf + off, len, &k) == dirty_hash_page_c(buf + off, len, &k),
			      "SIMD and C differ: %zu bytes, seed %u, offset %zu", len, seed, off);
	}
	free(buf);
}
END_TEST

/* Every single-bit change of a page changes its hash, in both codes. */
START_TEST(test_every_bit)
{
	unsigned char *page = aligned_alloc(64, PAGE);
	struct dirty_hash_key k = key_of(_i);
	uint64_t h, hc;

	ck_assert_ptr_nonnull(page);
	random_fill(page, PAGE, 7 + _i);
	h = dirty_hash_page(page, PAGE, &k);
	hc = dirty_hash_page_c(page, PAGE, &k);
	ck_assert_uint_eq(h, hc);
	for (size_t bit = 0; bit < PAGE * 8; bit++) {
		page[bit / 8] ^= (unsigned char)(1u << (bit % 8));
		ck_assert_msg(dirty_hash_page(page, PAGE, &k) != h, "bit %zu unseen", bit);
		if (bit % 61 == 0)
			ck_assert_msg(dirty_hash_page_c(page, PAGE, &k) != hc, "bit %zu unseen by C",
				      bit);
		page[bit / 8] ^= (unsigned char)(1u << (bit % 8));
	}
	ck_assert_uint_eq(dirty_hash_page(page, PAGE, &k), h); /* restored, the same again */
	free(page);
}
END_TEST

/* Two different 8-byte words swapped: a different hash (the order counts). */
START_TEST(test_word_swaps)
{
	unsigned char *page = aligned_alloc(64, PAGE), w[8];
	struct dirty_hash_key k = key_of(0);
	uint64_t h;

	ck_assert_ptr_nonnull(page);
	random_fill(page, PAGE, 99);
	h = dirty_hash_page(page, PAGE, &k);
	for (size_t a = 0; a < PAGE / 8; a += 5) {
		size_t b = (a * 37 + 11) % (PAGE / 8);

		if (a == b || !memcmp(page + 8 * a, page + 8 * b, 8))
			continue;
		memcpy(w, page + 8 * a, 8);
		memcpy(page + 8 * a, page + 8 * b, 8);
		memcpy(page + 8 * b, w, 8);
		ck_assert_msg(dirty_hash_page(page, PAGE, &k) != h, "words %zu and %zu swapped unseen",
			      a, b);
		memcpy(page + 8 * b, page + 8 * a, 8);
		memcpy(page + 8 * a, w, 8);
	}
	free(page);
}
END_TEST

/* The hash is of the contents: the same at another address; another key, another hash. */
START_TEST(test_contents_and_key)
{
	unsigned char *a = aligned_alloc(64, PAGE), *b = aligned_alloc(64, PAGE + 64);
	struct dirty_hash_key k1 = key_of(0), k2 = key_of(1), k3 = key_of(1);

	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_nonnull(b);
	ck_assert_mem_ne(&k2, &k3, sizeof(k2)); /* two keys drawn: not the same */
	random_fill(a, PAGE, 5);
	memcpy(b + 8, a, PAGE); /* unaligned too */
	ck_assert_uint_eq(dirty_hash_page(a, PAGE, &k1), dirty_hash_page(b + 8, PAGE, &k1));
	ck_assert_uint_ne(dirty_hash_page(a, PAGE, &k1), dirty_hash_page(a, PAGE, &k2));
	ck_assert_uint_ne(dirty_hash_page(a, PAGE, &k2), dirty_hash_page(a, PAGE, &k3));
	/* the length is part of the answer: a page of zeroes and half of one differ */
	memset(a, 0, PAGE);
	ck_assert_uint_ne(dirty_hash_page(a, PAGE, &k1), dirty_hash_page(a, PAGE / 2, &k1));
	free(a);
	free(b);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("hash");
	TCase *tc = tcase_create("hash");

	tap_begin();
	printf("dirty_hash_page(): %s code against the plain C code\n",
	       dirty_hash_simd() ? "the SIMD" : "no SIMD here: the same plain");
	tcase_add_loop_test(tc, test_simd_equals_c, 0, 3);
	tcase_add_loop_test(tc, test_every_bit, 0, 2);
	tcase_add_test(tc, test_word_swaps);
	tcase_add_test(tc, test_contents_and_key);
	suite_add_tcase(s, tc);
	return tap_run(srunner_create(s));
}
