/* SPDX-License-Identifier: MIT */
/*
 * A keyed 64-bit hash of a page, for telling whether its contents changed
 * (the compare way, core/compare.c).  Speed is the point: a collect hashes
 * every page of a region, so the hash must run at memory speed.
 *
 * The shape is that of XXH3's long-input loop, written anew: eight 64-bit
 * lanes; each 64-byte stripe adds to lane i the neighbouring word d[i ^ 1]
 * and the product of the two 32-bit halves of d[i] ^ k, with a key word
 * that differs per stripe and lane (so that moving data between stripes or
 * lanes changes the sum); every 1 KiB the lanes are scrambled (shift, xor
 * with a key, multiply), which keeps the blocks in order.  The lanes are
 * then folded two by two with a full 64x64->128 multiply and mixed.  The
 * key is random per tracker (getrandom): what a page must hold to collide
 * with another is unknown to whoever writes it.
 *
 * What a collision means: a page whose new contents hash like its old ones
 * is not reported.  For a fixed pair of contents and a random key the
 * chance is about 2^-64 per changed page per collect: far below that of a
 * memory error.
 *
 * One C version, and the same arithmetic in AVX2 where the CPU has it
 * (chosen once per process; both give the same answer, which the tests
 * check).
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>

#include "libdirty-int.h"

#define LANES 8
#define STRIPE_BYTES (LANES * 8)
#define BLOCK_BYTES 1024
#define STRIPES_PER_BLOCK (BLOCK_BYTES / STRIPE_BYTES)
#define PRIME32 UINT64_C(0x9E3779B1)

static uint64_t load64(const unsigned char *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static uint64_t fold128(uint64_t a, uint64_t b)
{
	unsigned __int128 p = (unsigned __int128)a * b;

	return (uint64_t)p ^ (uint64_t)(p >> 64);
}

static uint64_t avalanche(uint64_t h)
{
	h ^= h >> 37;
	h *= UINT64_C(0x165667919E3779F9);
	return h ^ (h >> 32);
}

int dirty_hash_key_new(struct dirty_hash_key *key)
{
	size_t got = 0;

	while (got < sizeof(key->k)) {
		ssize_t n = getrandom((char *)key->k + got, sizeof(key->k) - got, 0);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		got += (size_t)n;
	}
	return 0;
}

static void scramble(uint64_t *acc, const uint64_t *k)
{
	for (int i = 0; i < LANES; i++) {
		uint64_t a = acc[i];

		a ^= a >> 47;
		a ^= k[i];
		acc[i] = a * PRIME32;
	}
}

static uint64_t finish(const uint64_t *acc, const struct dirty_hash_key *key, size_t len)
{
	const uint64_t *k = key->k + DIRTY_HASH_FINAL;
	uint64_t h = len * UINT64_C(0x9E3779B97F4A7C15);

	for (int i = 0; i < LANES; i += 2)
		h += fold128(acc[i] ^ k[i], acc[i + 1] ^ k[i + 1]);
	return avalanche(h);
}

static void acc_init(uint64_t *acc, const struct dirty_hash_key *key)
{
	memcpy(acc, key->k + DIRTY_HASH_INIT, LANES * sizeof(*acc));
}

static uint64_t hash_c(const void *data, size_t len, const struct dirty_hash_key *key)
{
	const unsigned char *p = data;
	uint64_t acc[LANES];

	acc_init(acc, key);
	for (size_t block = 0; block < len / BLOCK_BYTES; block++) {
		for (int s = 0; s < STRIPES_PER_BLOCK; s++, p += STRIPE_BYTES) {
			const uint64_t *k = key->k + s; /* a different key per stripe */

			for (int i = 0; i < LANES; i++) {
				uint64_t d = load64(p + 8 * i), v = d ^ k[i];

				acc[i] += load64(p + 8 * (i ^ 1)) + (v & 0xFFFFFFFFu) * (v >> 32);
			}
		}
		scramble(acc, key->k + DIRTY_HASH_SCRAMBLE);
	}
	return finish(acc, key, len);
}

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx2"))) static uint64_t hash_avx2(const void *data, size_t len,
							  const struct dirty_hash_key *key)
{
	const unsigned char *p = data;
	uint64_t acc_out[LANES];
	__m256i acc0, acc1;
	const __m256i prime = _mm256_set1_epi64x((long long)PRIME32);

	acc0 = _mm256_loadu_si256((const __m256i *)(key->k + DIRTY_HASH_INIT));
	acc1 = _mm256_loadu_si256((const __m256i *)(key->k + DIRTY_HASH_INIT + 4));
	for (size_t block = 0; block < len / BLOCK_BYTES; block++) {
		for (int s = 0; s < STRIPES_PER_BLOCK; s++, p += STRIPE_BYTES) {
			const uint64_t *k = key->k + s;
			__m256i d0 = _mm256_loadu_si256((const __m256i *)p);
			__m256i d1 = _mm256_loadu_si256((const __m256i *)(p + 32));
			__m256i v0 = _mm256_xor_si256(d0, _mm256_loadu_si256((const __m256i *)k));
			__m256i v1 = _mm256_xor_si256(d1, _mm256_loadu_si256((const __m256i *)(k + 4)));
			/* low half times high half of each 64-bit lane */
			__m256i m0 = _mm256_mul_epu32(v0, _mm256_srli_epi64(v0, 32));
			__m256i m1 = _mm256_mul_epu32(v1, _mm256_srli_epi64(v1, 32));
			/* the neighbouring word: lanes swapped within each 128-bit half */
			__m256i n0 = _mm256_shuffle_epi32(d0, _MM_SHUFFLE(1, 0, 3, 2));
			__m256i n1 = _mm256_shuffle_epi32(d1, _MM_SHUFFLE(1, 0, 3, 2));

			acc0 = _mm256_add_epi64(acc0, _mm256_add_epi64(n0, m0));
			acc1 = _mm256_add_epi64(acc1, _mm256_add_epi64(n1, m1));
		}
		{
			const uint64_t *k = key->k + DIRTY_HASH_SCRAMBLE;
			__m256i a0 = _mm256_xor_si256(acc0, _mm256_srli_epi64(acc0, 47));
			__m256i a1 = _mm256_xor_si256(acc1, _mm256_srli_epi64(acc1, 47));

			a0 = _mm256_xor_si256(a0, _mm256_loadu_si256((const __m256i *)k));
			a1 = _mm256_xor_si256(a1, _mm256_loadu_si256((const __m256i *)(k + 4)));
			/* a * PRIME32 in 64 bits: low x prime + (high x prime) << 32 */
			acc0 = _mm256_add_epi64(_mm256_mul_epu32(a0, prime),
						_mm256_slli_epi64(_mm256_mul_epu32(_mm256_srli_epi64(a0, 32),
										   prime),
								  32));
			acc1 = _mm256_add_epi64(_mm256_mul_epu32(a1, prime),
						_mm256_slli_epi64(_mm256_mul_epu32(_mm256_srli_epi64(a1, 32),
										   prime),
								  32));
		}
	}
	_mm256_storeu_si256((__m256i *)acc_out, acc0);
	_mm256_storeu_si256((__m256i *)(acc_out + 4), acc1);
	return finish(acc_out, key, len);
}
#endif

typedef uint64_t (*hash_fn)(const void *, size_t, const struct dirty_hash_key *);

static hash_fn chosen(void)
{
	static _Atomic(hash_fn) fn;
	hash_fn f = atomic_load_explicit(&fn, memory_order_relaxed);

	if (!f) {
		f = hash_c;
#if defined(__x86_64__)
		if (__builtin_cpu_supports("avx2"))
			f = hash_avx2;
#endif
		atomic_store_explicit(&fn, f, memory_order_relaxed);
	}
	return f;
}

uint64_t dirty_hash_page(const void *page, size_t len, const struct dirty_hash_key *key)
{
	return chosen()(page, len, key);
}

uint64_t dirty_hash_page_c(const void *page, size_t len, const struct dirty_hash_key *key)
{
	return hash_c(page, len, key);
}

bool dirty_hash_simd(void)
{
	return chosen() != hash_c;
}
