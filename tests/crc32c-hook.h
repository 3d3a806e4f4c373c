/* SPDX-License-Identifier: MIT */
/*
 * Forced into libdirty/around/image.c (gcc -include) for test-crc32c-paths
 * only: the CPU feature test that picks dirty_crc32c()'s code path becomes
 * the test's, so that each path runs on demand (tests/test-crc32c.c).
 */
#ifndef LIBDIRTY_TESTS_CRC32C_HOOK_H
#define LIBDIRTY_TESTS_CRC32C_HOOK_H

int crc32c_test_cpu_supports(const char *feature);

#define __builtin_cpu_supports(feature) crc32c_test_cpu_supports(feature)

#endif
