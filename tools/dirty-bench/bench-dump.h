/* SPDX-License-Identifier: MIT */
/* dirty-bench --dump: writing dirty pages out (bench-dump.c). */
#ifndef DIRTY_BENCH_DUMP_H
#define DIRTY_BENCH_DUMP_H

#include <stddef.h>
#include <stdio.h>

/* Run the dump benchmark; a table on stdout, JSON to json (may be NULL). */
int bench_dump_main(size_t size, const char *disk_dir, int reps, FILE *json);

#endif
