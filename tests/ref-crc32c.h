/* SPDX-License-Identifier: MIT */
/*
 * Bitwise CRC-32C (Castagnoli, reflected polynomial 0x82F63B78): the
 * definition itself, for the tests that check the library's checksums
 * against it (test-crc32c.c, test-image.c).
 */
#ifndef LIBDIRTY_TESTS_REF_CRC32C_H
#define LIBDIRTY_TESTS_REF_CRC32C_H

#include <stddef.h>
#include <stdint.h>

static inline uint32_t ref_crc32c(uint32_t crc, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	crc = ~crc;
	while (len--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = crc & 1 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
	}
	return ~crc;
}

#endif
