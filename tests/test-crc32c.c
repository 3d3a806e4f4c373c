/* SPDX-License-Identifier: MIT */
/*
 * dirty_crc32c() (libdirty/around/image.c), the checksum of every image,
 * against the definition (bitwise, below) and published values: known
 * vectors, the empty input, every length from 0 to 64 at every alignment,
 * checksums continued across every split, and a long buffer.  Two programs
 * from this file:
 *   test-crc32c        linked with the static library: the function as the
 *                      library has it, on the path this CPU takes;
 *   test-crc32c-paths  (CRC32C_PATHS) built with libdirty/around/image.c,
 *                      whose CPU feature test is this file's hook
 *                      (tests/crc32c-hook.h): each case runs on the tables
 *                      (what a CPU without SSE4.2 runs, qemu's TCG for one)
 *                      and on the SSE4.2 crc32 instruction (skipped where
 *                      the CPU has none).
 */
#include <check.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "libdirty-int.h"
#include "tap.h"

#include "ref-crc32c.h"

/* The CPU's own answer (CPUID), not the compiler's runtime that image.c asks. */
static bool cpu_has_sse42(void)
{
#if defined(__x86_64__)
	unsigned a, b, c, d;

	return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_SSE4_2);
#else
	return false;
#endif
}

#ifdef CRC32C_PATHS
#include "crc32c-hook.h"

enum crc_path { PATH_TABLES, PATH_SSE42, NPATHS };
static const char *const path_names[NPATHS] = { "tables", "sse4.2" };
static enum crc_path path;
static unsigned hook_calls;

int crc32c_test_cpu_supports(const char *feature)
{
	hook_calls++;
	return path == PATH_SSE42 && !strcmp(feature, "sse4.2");
}

/* Each case runs once per path: _i is the path. */
static void use_path(int i)
{
	path = (enum crc_path)i;
	if (path == PATH_SSE42 && !cpu_has_sse42())
		test_skip("this CPU has no SSE4.2 (CPUID): the crc32 instruction path cannot run");
	hook_calls = 0;
}

/* The hook was asked: the path chosen is the one this case means. */
static void assert_path_taken(void)
{
	ck_assert_msg(hook_calls > 0, "dirty_crc32c() did not ask the CPU feature hook: the %s "
		      "path is not known to have run", path_names[path]);
}
#else
#define NPATHS 1

static void use_path(int i)
{
	(void)i;
}

static void assert_path_taken(void)
{
}
#endif

/* ---- published values ---- */

struct vector {
	const char *name;
	unsigned char bytes[64];
	size_t len;
	uint32_t crc;
};

/* RFC 3720 (iSCSI), B.4, and the check value of the CRC catalogue. */
static struct vector vectors[] = {
	{ "\"123456789\"", "123456789", 9, 0xE3069283u },
	{ "the empty input", "", 0, 0 },
	{ "32 bytes of zeroes", { 0 }, 32, 0x8A9136AAu },
	{ "32 bytes of 0xff", { 0 }, 32, 0x62A8AB43u },
	{ "bytes 0 to 31", { 0 }, 32, 0x46DD794Eu },
	{ "bytes 31 to 0", { 0 }, 32, 0x113FDB5Cu },
};

static void fill_vectors(void)
{
	for (int i = 0; i < 32; i++) {
		vectors[3].bytes[i] = 0xff;
		vectors[4].bytes[i] = (unsigned char)i;
		vectors[5].bytes[i] = (unsigned char)(31 - i);
	}
}

#define NVECTORS (int)(sizeof(vectors) / sizeof(vectors[0]))

/* Each vector at every alignment of its first byte, from 0 and continued from a checksum. */
START_TEST(test_known_vectors)
{
	unsigned char buf[64 + 16];

	use_path(_i);
	fill_vectors();
	for (int v = 0; v < NVECTORS; v++) {
		const struct vector *vec = &vectors[v];

		/* the definition agrees: the values are copied right */
		ck_assert_msg(ref_crc32c(0, vec->bytes, vec->len) == vec->crc, "%s: reference %#x",
			      vec->name, ref_crc32c(0, vec->bytes, vec->len));
		for (size_t align = 0; align < 16; align++) {
			memcpy(buf + align, vec->bytes, vec->len);
			ck_assert_msg(dirty_crc32c(0, buf + align, vec->len) == vec->crc,
				      "%s at offset %zu: %#x, expected %#x", vec->name, align,
				      dirty_crc32c(0, buf + align, vec->len), vec->crc);
		}
	}
	assert_path_taken();
}
END_TEST

/* No bytes: the checksum it continues, unchanged, whatever it is. */
START_TEST(test_empty)
{
	static const uint32_t crcs[] = { 0, 1, 0xE3069283u, 0x80000000u, 0xffffffffu };
	unsigned char buf[16] = { 0 };

	use_path(_i);
	for (size_t c = 0; c < sizeof(crcs) / sizeof(crcs[0]); c++)
		for (size_t align = 0; align < 8; align++)
			ck_assert_uint_eq(dirty_crc32c(crcs[c], buf + align, 0), crcs[c]);
	assert_path_taken();
}
END_TEST

/* Pseudo-random bytes, the same every run. */
static void fill_random(unsigned char *buf, size_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;

	for (size_t i = 0; i < len; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		buf[i] = (unsigned char)(x >> 24);
	}
}

/*
 * Every length from 0 to 64 (odd ones, and those around the 8-byte steps
 * of both paths) at every alignment from 0 to 15, from 0 and continued.
 */
START_TEST(test_every_length_and_alignment)
{
	unsigned char buf[64 + 16];

	use_path(_i);
	fill_random(buf, sizeof(buf), 1);
	for (size_t align = 0; align < 16; align++) {
		for (size_t len = 0; len <= 64; len++) {
			const unsigned char *p = buf + align;

			ck_assert_msg(dirty_crc32c(0, p, len) == ref_crc32c(0, p, len),
				      "length %zu at offset %zu: %#x, expected %#x", len, align,
				      dirty_crc32c(0, p, len), ref_crc32c(0, p, len));
			ck_assert_msg(dirty_crc32c(0xE3069283u, p, len) ==
					      ref_crc32c(0xE3069283u, p, len),
				      "length %zu at offset %zu, continued: %#x, expected %#x", len,
				      align, dirty_crc32c(0xE3069283u, p, len),
				      ref_crc32c(0xE3069283u, p, len));
		}
	}
	assert_path_taken();
}
END_TEST

/* A checksum continued across any split is the checksum of the whole (as the writer does). */
START_TEST(test_continued_across_splits)
{
	enum { LEN = 301 };
	unsigned char buf[LEN + 3];
	const unsigned char *p = buf + 3;
	uint32_t whole;

	use_path(_i);
	fill_random(buf, sizeof(buf), 2);
	whole = ref_crc32c(0, p, LEN);
	ck_assert_uint_eq(dirty_crc32c(0, p, LEN), whole);
	for (size_t split = 0; split <= LEN; split++)
		ck_assert_msg(dirty_crc32c(dirty_crc32c(0, p, split), p + split, LEN - split) == whole,
			      "split at %zu", split);
	assert_path_taken();
}
END_TEST

/* A buffer of a few pages, unaligned and of an odd length, as images checksum them. */
START_TEST(test_long_buffer)
{
	size_t len = (1u << 20) + 13;
	unsigned char *buf = malloc(len + 5);

	use_path(_i);
	ck_assert_ptr_nonnull(buf);
	fill_random(buf, len + 5, 3);
	ck_assert_uint_eq(dirty_crc32c(0, buf + 5, len), ref_crc32c(0, buf + 5, len));
	ck_assert_uint_eq(dirty_crc32c(0, buf, len + 5), ref_crc32c(0, buf, len + 5));
	free(buf);
	assert_path_taken();
}
END_TEST

int main(void)
{
	Suite *s = suite_create("crc32c");
	TCase *tc = tcase_create("crc32c");

	tap_begin();
#ifdef CRC32C_PATHS
	printf("dirty_crc32c() of libdirty/around/image.c, on each path: %s and %s\n",
	       path_names[0], path_names[1]);
#else
	printf("dirty_crc32c() of the static library, on the path this CPU takes (%s)\n",
	       cpu_has_sse42() ? "sse4.2" : "tables");
#endif
	tcase_add_loop_test(tc, test_known_vectors, 0, NPATHS);
	tcase_add_loop_test(tc, test_empty, 0, NPATHS);
	tcase_add_loop_test(tc, test_every_length_and_alignment, 0, NPATHS);
	tcase_add_loop_test(tc, test_continued_across_splits, 0, NPATHS);
	tcase_add_loop_test(tc, test_long_buffer, 0, NPATHS);
	suite_add_tcase(s, tc);
	return tap_run(srunner_create(s));
}
