/* SPDX-License-Identifier: MIT */
/*
 * Check knows three outcomes (pass, failure, error) and no skip, and its
 * own TAP log writes "not ok" for anything but a pass.  So a skip travels
 * as a failure whose message starts with SKIP_MARK, and tap_run() writes
 * the TAP itself, from Check's XML log (the one log that names each case,
 * its iteration, its place and its message, escaped) read after the run.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tap.h"

#define SKIP_MARK "[libdirty-test-skip] "
#define REASON_MAX 512

/* The original stdout, where the TAP lines go; -1 before tap_begin(). */
static int tap_fd = -1;
/* Inside tap_run(): a skip is one case's, not the program's. */
static bool tap_running;

static void die(const char *what)
{
	fprintf(stderr, "tap: %s: %s\n", what, strerror(errno));
	exit(EXIT_FAILURE);
}

void tap_begin(void)
{
	if (tap_fd >= 0)
		return;
	fflush(stdout);
	tap_fd = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
	if (tap_fd < 0)
		die("dup of stdout");
	if (dup2(STDERR_FILENO, STDOUT_FILENO) < 0)
		die("stdout to stderr");
	/* in order with what goes to stderr directly */
	setvbuf(stdout, NULL, _IOLBF, 0);
}

/* The reason on one line: TAP ends a directive at the end of its line. */
static void format_reason(char *reason, const char *fmt, va_list ap)
{
	vsnprintf(reason, REASON_MAX, fmt, ap);
	for (char *p = reason; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
}

void test_skip(const char *fmt, ...)
{
	char reason[REASON_MAX];
	va_list ap;

	va_start(ap, fmt);
	format_reason(reason, fmt, ap);
	va_end(ap);
	ck_abort_msg("%s%s", SKIP_MARK, reason);
	abort(); /* not reached: ck_abort_msg() does not return */
}

void tap_skip_all(const char *fmt, ...)
{
	char reason[REASON_MAX];
	va_list ap;

	va_start(ap, fmt);
	format_reason(reason, fmt, ap);
	va_end(ap);
	if (tap_running)
		test_skip("%s", reason);
	tap_begin();
	if (getenv("DIRTY_TEST_TAP") && !strcmp(getenv("DIRTY_TEST_TAP"), "1")) {
		/* meson takes an exit status of 77 from a TAP test for an error */
		dprintf(tap_fd, "1..0 # SKIP %s\n", reason);
		exit(EXIT_SUCCESS);
	}
	dprintf(tap_fd, "SKIP: %s\n", reason);
	exit(EXIT_SKIP);
}

/* ---- Check's XML log ---- */

struct test_case {
	char *name, *tcase, *where, *message;
	int iteration;
	enum { CASE_PASS, CASE_SKIP, CASE_FAIL } outcome;
};

/* XML text between start and end, its entities (as Check writes them) replaced. */
static char *unescape(const char *start, const char *end)
{
	static const struct {
		const char *entity;
		char c;
	} named[] = { { "&lt;", '<' }, { "&gt;", '>' }, { "&amp;", '&' },
		      { "&quot;", '"' }, { "&apos;", '\'' } };
	char *out = malloc((size_t)(end - start) + 1), *o = out;

	if (!out)
		die("malloc");
	while (start < end) {
		size_t i, n = sizeof(named) / sizeof(named[0]);

		if (*start != '&') {
			*o++ = *start++;
			continue;
		}
		for (i = 0; i < n; i++)
			if (!strncmp(start, named[i].entity, strlen(named[i].entity)))
				break;
		if (i < n) {
			*o++ = named[i].c;
			start += strlen(named[i].entity);
		} else if (start[1] == '#') {
			char *semicolon;
			long c = start[2] == 'x' ? strtol(start + 3, &semicolon, 16)
						 : strtol(start + 2, &semicolon, 10);

			*o++ = c > 0 && c < 256 ? (char)c : '?';
			start = *semicolon == ';' ? semicolon + 1 : semicolon;
		} else {
			*o++ = *start++;
		}
	}
	*o = '\0';
	return out;
}

/* The text of <tag>...</tag> in [record, end), or NULL. */
static char *element(const char *record, const char *end, const char *tag)
{
	char open[32], close[32];
	const char *from, *to;

	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close, sizeof(close), "</%s>", tag);
	from = memmem(record, (size_t)(end - record), open, strlen(open));
	if (!from)
		return NULL;
	from += strlen(open);
	to = memmem(from, (size_t)(end - from), close, strlen(close));
	return to ? unescape(from, to) : NULL;
}

static char *read_file(int fd)
{
	struct stat st;
	char *text;
	ssize_t n;

	if (fstat(fd, &st) < 0)
		die("fstat of Check's XML log");
	text = malloc((size_t)st.st_size + 1);
	if (!text)
		die("malloc");
	n = pread(fd, text, (size_t)st.st_size, 0);
	if (n < 0)
		die("read of Check's XML log");
	text[n] = '\0';
	return text;
}

/* Every <test> record of the log, in the order the cases ran. */
static size_t parse_log(const char *text, struct test_case **ret)
{
	static const char open[] = "<test result=\"";
	struct test_case *cases = NULL;
	size_t n = 0;

	for (const char *p = strstr(text, open); p; p = strstr(p, open)) {
		const char *end = strstr(p, "</test>");
		struct test_case *c;
		char *iteration;

		if (!end)
			break;
		cases = realloc(cases, (n + 1) * sizeof(*cases));
		if (!cases)
			die("realloc");
		c = &cases[n++];
		p += strlen(open);
		c->name = element(p, end, "id");
		c->tcase = element(p, end, "description");
		c->where = element(p, end, "fn");
		c->message = element(p, end, "message");
		iteration = element(p, end, "iteration");
		c->iteration = iteration ? atoi(iteration) : 0;
		free(iteration);
		if (!strncmp(p, "success\"", 8))
			c->outcome = CASE_PASS;
		else if (!strncmp(p, "failure\"", 8) && c->message &&
			 !strncmp(c->message, SKIP_MARK, strlen(SKIP_MARK)))
			c->outcome = CASE_SKIP;
		else
			c->outcome = CASE_FAIL;
		p = end;
	}
	*ret = cases;
	return n;
}

/* A loop test runs one case per iteration, under one name: tell them apart. */
static bool is_loop(const struct test_case *cases, size_t n, const struct test_case *c)
{
	size_t same = 0;

	for (size_t i = 0; i < n; i++)
		same += cases[i].name && c->name && !strcmp(cases[i].name, c->name) &&
			cases[i].tcase && c->tcase && !strcmp(cases[i].tcase, c->tcase);
	return same > 1 || c->iteration != 0;
}

/* Each line of a failure's message, as TAP comments. */
static void print_diagnostic(const struct test_case *c)
{
	const char *line = c->message ? c->message : "(no message)";

	dprintf(tap_fd, "# %s: ", c->where ? c->where : "?");
	for (;;) {
		size_t len = strcspn(line, "\n");

		dprintf(tap_fd, "%.*s\n", (int)len, line);
		if (!line[len] || !line[len + 1])
			break;
		line += len + 1;
		dprintf(tap_fd, "#   ");
	}
}

/* Check opens its log by name: /proc/self/fd/N of a memfd needs no file system. */
static int open_log(void)
{
	int fd = memfd_create("check-xml-log", MFD_CLOEXEC);

	if (fd < 0)
		die("memfd for Check's XML log");
	return fd;
}

int tap_run(SRunner *sr)
{
	static char log_path[64];
	size_t n, passed = 0, skipped = 0, failed = 0, ran;
	struct test_case *cases;
	char *text;
	int log_fd;

	tap_begin();
	log_fd = open_log();
	snprintf(log_path, sizeof(log_path), "/proc/self/fd/%d", log_fd);
	srunner_set_xml(sr, log_path);
	tap_running = true;
	srunner_run_all(sr, CK_SILENT);
	tap_running = false;
	ran = (size_t)srunner_ntests_run(sr);
	srunner_free(sr);

	text = read_file(log_fd);
	close(log_fd);
	n = parse_log(text, &cases);
	/* the plan, then a line per case; one more if the log lost a case */
	dprintf(tap_fd, "1..%zu\n", n + (n != ran));
	for (size_t i = 0; i < n; i++) {
		struct test_case *c = &cases[i];
		char name[256];

		if (is_loop(cases, n, c))
			snprintf(name, sizeof(name), "%s:%d", c->name ? c->name : "?", c->iteration);
		else
			snprintf(name, sizeof(name), "%s", c->name ? c->name : "?");
		switch (c->outcome) {
		case CASE_PASS:
			dprintf(tap_fd, "ok %zu - %s\n", i + 1, name);
			passed++;
			break;
		case CASE_SKIP:
			dprintf(tap_fd, "ok %zu - %s # SKIP %s\n", i + 1, name,
				c->message + strlen(SKIP_MARK));
			skipped++;
			break;
		case CASE_FAIL:
			dprintf(tap_fd, "not ok %zu - %s\n", i + 1, name);
			print_diagnostic(c);
			failed++;
			break;
		}
	}
	if (n != ran) {
		dprintf(tap_fd, "not ok %zu - the runner: Check ran %zu cases, its XML log holds %zu\n",
			n + 1, ran, n);
		failed++;
	}
	dprintf(tap_fd, "# %zu passed, %zu skipped, %zu failed\n", passed, skipped, failed);
	for (size_t i = 0; i < n; i++) {
		free(cases[i].name);
		free(cases[i].tcase);
		free(cases[i].where);
		free(cases[i].message);
	}
	free(cases);
	free(text);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
