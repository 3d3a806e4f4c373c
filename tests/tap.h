/* SPDX-License-Identifier: MIT */
/*
 * The Check suites as TAP, the Test Anything Protocol that meson reads
 * (protocol : 'tap'): one line per test case, so that a case that cannot
 * run here is counted as skipped, with its reason, and never as passed.
 *
 * A test program calls tap_begin() first, test_skip() in a case that cannot
 * run, tap_skip_all() where nothing can, and ends with tap_run().
 */
#ifndef LIBDIRTY_TESTS_TAP_H
#define LIBDIRTY_TESTS_TAP_H

#include <check.h>

#define EXIT_SKIP 77

/*
 * Keeps stdout for the TAP lines and sends whatever else the program (and
 * every test case, and every process they start) prints to stderr, so that
 * the TAP stream holds nothing but TAP.  Call it before printing anything.
 */
void tap_begin(void);

/*
 * Ends the running test case as skipped, with the reason (one line).  Only
 * from inside a test case: Check records it as a failure whose message
 * starts with a marker, and tap_run() reports it as a skip.  Whatever the
 * case must undo (a child, an environment variable) it undoes first.
 */
void test_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/*
 * Nothing in this program can run here (a backend, a memory kind, NUMA
 * nodes that this machine lacks): says why and exits.  Under meson
 * ($DIRTY_TEST_TAP=1) that is a plan of no tests with the reason, exit 0;
 * run by hand (or by tests/vm/run-matrix.sh) it is "SKIP: reason" and exit 77.
 */
void tap_skip_all(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/*
 * Runs every suite of sr (CK_RUN_SUITE and CK_RUN_CASE still choose),
 * writes one TAP line per test case to stdout, each failure's place and
 * message as TAP comments, and a count of passed, skipped and failed cases;
 * frees sr.  Returns the exit status: EXIT_FAILURE if a case failed, else
 * EXIT_SUCCESS (skips are not failures).
 */
int tap_run(SRunner *sr);

#endif
