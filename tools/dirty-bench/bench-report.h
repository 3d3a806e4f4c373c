/* SPDX-License-Identifier: MIT */
/*
 * bench-report: the output side of dirty-bench.  A table for people, JSON for
 * scripts, an SVG chart per case and a progress line on a terminal.  Nothing
 * here measures; it only formats what dirty-bench measured.
 */
#ifndef DIRTY_BENCH_REPORT_H
#define DIRTY_BENCH_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* One point of the parameter space. */
struct bench_case {
	const char *memory;	/* "anon", "memfd", "shared-anon" (MAP_SHARED|MAP_ANONYMOUS), "file" */
	size_t size;		/* bytes tracked */
	double fraction;	/* dirty fraction per cycle, 0.001 .. 1.0 */
	const char *pattern;	/* "scattered" or "runs" */
	int threads;		/* writer threads, 1 or 2 */
	bool process;		/* the writer is another process (a forked child) */
	bool thp;		/* MADV_HUGEPAGE (true) or MADV_NOHUGEPAGE */
	bool sparse;		/* the 1 TiB MAP_NORESERVE reservation case */
	size_t touched;		/* for sparse: bytes actually touched; else = size */
};

struct bench_result {
	struct bench_case c;
	const char *method;	/* "libdirty:uffd-async", "raw:mprotect", ... */
	bool ok;		/* every cycle's answer was checked and correct */
	const char *skip_reason; /* non-NULL: not run here, why */
	double setup_ms;	/* initial track + clean (or snapshot) */
	double write_ns_per_page; /* median write-phase time / pages dirtied */
	double collect_ms;	/* median collect(-and-clean) time */
	double cycle_ms;	/* median whole cycle: clean + writes + collect */
	int cycles;		/* measured cycles (after warm-up) */
	size_t pages_per_cycle;	/* pages dirtied per cycle */
	size_t library_bytes;	/* memory the method itself allocated, 0 if n/a */
};

/*
 * Describe a case in words, as the table's group headers do:
 * "1G anon 1% scattered, 1 thread, THP".  Returns what snprintf() returns.
 */
int bench_case_describe(char *buf, size_t size, const struct bench_case *c);

/* True when a and b are the same point of the parameter space. */
bool bench_case_equal(const struct bench_case *a, const struct bench_case *b);

/*
 * The table for people: one header line per case (in order of first
 * appearance), one row per method.  The "x vs ref" column is cycle_ms
 * divided by the cycle_ms of the result of the same case whose method is
 * @reference; "-" when there is none or it was skipped or wrong.
 */
void bench_print_table(FILE *f, const struct bench_result *r, size_t n, const char *reference);

/*
 * JSON: {"machine": <machine_json>, "results": [{...}, ...]}.  machine_json
 * is written as given (it must already be JSON); NULL writes null.
 * Non-finite numbers are written as null.
 */
void bench_write_json(FILE *f, const struct bench_result *r, size_t n, const char *machine_json);

/*
 * A standalone SVG chart, about 800x500: cycle time (log y) by dirty fraction
 * (log x), one line per method, for the results that are neither skipped nor
 * wrong and whose case matches @filter in everything but the fraction.
 * Returns 0 or -errno.
 */
int bench_write_svg(const char *path, const char *title, const struct bench_result *r, size_t n,
		    const struct bench_case *filter);

/*
 * "[12/40] what" on one terminal line, overwritten by the next call.  Does
 * nothing when f is not a terminal, so logs and pipes stay clean.
 */
void bench_progress(FILE *f, size_t done, size_t total, const char *what);
/* Clear the progress line; call before printing anything else. */
void bench_progress_end(FILE *f);

#endif
