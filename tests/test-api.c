/* SPDX-License-Identifier: MIT */
/*
 * The API around tracking: option checks, backend selection, probing, the
 * backend list, logging and statistics.  Tracking itself is the conformance
 * suite's business; where a test here needs a tracker that tracks, it uses
 * mprotect, which runs on every kernel.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include "config.h"
#include <libdirty.h>
#include "tap.h"

/* Stored in out-parameters before a call that must fail, to see them untouched. */
#define SENTINEL ((struct dirty_tracker *)(uintptr_t)0x5a5a5a5a)

/* The part of struct dirty_options that the first release defined. */
#define OPTIONS_MIN_SIZE (offsetof(struct dirty_options, flags) + sizeof(unsigned))

static size_t page_size(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

static char *map_pages(size_t npages)
{
	char *mem = mmap(NULL, npages * page_size(), PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ck_assert_ptr_ne(mem, MAP_FAILED);
	return mem;
}

static struct dirty_options options_for(const char *backend)
{
	struct dirty_options opts;

	memset(&opts, 0, sizeof(opts));
	opts.sz = sizeof(opts);
	opts.backend = backend;
	return opts;
}

/* A pid that belonged to a process and belongs to none now. */
static pid_t dead_pid(void)
{
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(0);
	ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
	/* a pid reused this fast would make the caller test something else */
	ck_assert_int_eq(kill(pid, 0), -1);
	ck_assert_int_eq(errno, ESRCH);
	return pid;
}

/* The backend automatic selection picks, as a tracker with no options shows it. */
static const char *auto_backend(void)
{
	static char name[32];
	struct dirty_tracker *t;

	unsetenv("LIBDIRTY_BACKEND");
	ck_assert_int_eq(dirty_tracker_new(NULL, &t), 0);
	snprintf(name, sizeof(name), "%s", dirty_tracker_backend(t));
	dirty_tracker_free(t);
	return name;
}

/* ---- dirty_tracker_new: options ---- */

/*
 * dirty_kernel_uffd_features(): the kernel's own list, consistent with the
 * probes (uffd-sync needs PAGEFAULT_FLAG_WP, uffd-async WP_ASYNC), cut
 * cleanly to a small buffer, and the count without a buffer.
 */
START_TEST(test_kernel_uffd_features)
{
	char list[512], small[8];
	int n = dirty_kernel_uffd_features(list, sizeof(list));

	ck_assert_int_eq(dirty_kernel_uffd_features(NULL, 4), -EINVAL);
	if (n == -ENOSYS) {
		ck_assert_int_ne(dirty_backend_probe("uffd-sync", 0, NULL, 0), 0);
		ck_assert_str_eq(list, "");
		return;
	}
	ck_assert_int_gt(n, 0);
	ck_assert_int_eq(dirty_kernel_uffd_features(NULL, 0), n);
	ck_assert_int_eq(dirty_kernel_uffd_features(small, sizeof(small)), n);
	ck_assert_uint_lt(strlen(small), sizeof(small));
	if (dirty_backend_probe("uffd-sync", 0, NULL, 0) == 0)
		ck_assert_ptr_nonnull(strstr(list, "PAGEFAULT_FLAG_WP"));
	if (dirty_backend_probe("uffd-async", 0, NULL, 0) == 0)
		ck_assert_ptr_nonnull(strstr(list, "WP_ASYNC"));
	/* read-write protection: both or neither, RWP_ASYNC only with RWP */
	if (strstr(list, "RWP_ASYNC"))
		ck_assert_ptr_nonnull(strstr(list, "RWP, "));
	printf("userfaultfd features: %s\n", list);
}
END_TEST

START_TEST(test_new_null_ret)
{
	struct dirty_options opts = options_for("mprotect");

	ck_assert_int_eq(dirty_tracker_new(NULL, NULL), -EINVAL);
	ck_assert_int_eq(dirty_tracker_new(&opts, NULL), -EINVAL);
}
END_TEST

START_TEST(test_new_defaults)
{
	struct dirty_tracker *t = SENTINEL;

	unsetenv("LIBDIRTY_BACKEND");
	ck_assert_int_eq(dirty_tracker_new(NULL, &t), 0);
	ck_assert_ptr_nonnull(t);
	ck_assert_ptr_ne(t, SENTINEL);
	ck_assert_ptr_null(dirty_tracker_free(t));
}
END_TEST

START_TEST(test_new_sz_too_small)
{
	struct dirty_options opts = options_for("mprotect");
	struct dirty_tracker *t = SENTINEL;

	opts.sz = OPTIONS_MIN_SIZE - 1;
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), -EINVAL);
	ck_assert_ptr_eq(t, SENTINEL);
	opts.sz = 0;
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), -EINVAL);
	ck_assert_ptr_eq(t, SENTINEL);
}
END_TEST

static void count_calls(int priority, const char *msg, void *userdata)
{
	(void)priority;
	(void)msg;
	(*(unsigned *)userdata)++;
}

/* An older caller's struct ends after flags: the fields beyond are not read. */
START_TEST(test_new_sz_first_release)
{
	struct dirty_options opts = options_for("mprotect");
	struct dirty_tracker *t = SENTINEL;
	unsigned calls = 0;

	opts.sz = OPTIONS_MIN_SIZE;
	opts.log = count_calls;
	opts.log_userdata = &calls;
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), 0);
	ck_assert_str_eq(dirty_tracker_backend(t), "mprotect");
	dirty_tracker_free(t);
	ck_assert_uint_eq(calls, 0);
}
END_TEST

/* A newer caller's struct: what we do not know must be zero. */
struct padded_options {
	struct dirty_options opts;
	unsigned char newer[16];
};

START_TEST(test_new_sz_larger)
{
	struct padded_options p;
	struct dirty_tracker *t = SENTINEL;

	memset(&p, 0, sizeof(p));
	p.opts.sz = sizeof(p);
	p.opts.backend = "mprotect";
	p.newer[sizeof(p.newer) - 1] = 1;
	ck_assert_int_eq(dirty_tracker_new(&p.opts, &t), -EINVAL);
	ck_assert_ptr_eq(t, SENTINEL);
	p.newer[sizeof(p.newer) - 1] = 0;
	p.newer[0] = 0x80;
	ck_assert_int_eq(dirty_tracker_new(&p.opts, &t), -EINVAL);
	ck_assert_ptr_eq(t, SENTINEL);
	p.newer[0] = 0;
	ck_assert_int_eq(dirty_tracker_new(&p.opts, &t), 0);
	ck_assert_str_eq(dirty_tracker_backend(t), "mprotect");
	dirty_tracker_free(t);
}
END_TEST

START_TEST(test_new_flags)
{
	struct dirty_options opts = options_for("mprotect");
	struct dirty_tracker *t = SENTINEL;

	opts.flags = 1u << 6; /* the first undefined DIRTY_TRACKER_* bit */
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), -EINVAL);
	ck_assert_ptr_eq(t, SENTINEL);
	opts.flags = 1u << 31;
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), -EINVAL);
	ck_assert_ptr_eq(t, SENTINEL);
}
END_TEST

START_TEST(test_new_negative_pid)
{
	struct dirty_options opts = options_for("mprotect");
	struct dirty_tracker *t = SENTINEL;

	opts.pid = -1;
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), -EINVAL);
	ck_assert_ptr_eq(t, SENTINEL);
	opts.pid = INT_MIN;
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), -EINVAL);
	ck_assert_ptr_eq(t, SENTINEL);
}
END_TEST

START_TEST(test_new_unknown_backend)
{
	struct dirty_options opts = options_for("no-such-backend");
	struct dirty_tracker *t = SENTINEL;

	ck_assert_int_eq(dirty_tracker_new(&opts, &t), -EINVAL);
	ck_assert_ptr_eq(t, SENTINEL);
}
END_TEST

/* The messages logged at LOG_ERR, counted, the last one kept. */
struct error_log {
	unsigned errors;
	char last[512];
};

static void record_errors(int priority, const char *msg, void *userdata)
{
	struct error_log *log = userdata;

	if (priority != LOG_ERR)
		return;
	log->errors++;
	snprintf(log->last, sizeof(log->last), "%s", msg);
}

/* A tracker of backend name is refused, nothing made, and why (the probe's reason) logged. */
static void assert_refused(const char *name, const char *why)
{
	struct dirty_options opts = options_for(name);
	struct dirty_tracker *t = SENTINEL;
	struct error_log log = { 0 };

	opts.log = record_errors;
	opts.log_userdata = &log;
	ck_assert_msg(dirty_tracker_new(&opts, &t) == -EOPNOTSUPP, "%s (%s)", name, why);
	ck_assert_ptr_eq(t, SENTINEL);
	ck_assert_msg(log.errors == 1, "%s: %u messages at LOG_ERR", name, log.errors);
	ck_assert_str_eq(log.last, why);
}

/*
 * A tracker of a backend that cannot run is refused with -EOPNOTSUPP and
 * the probe's reason: every backend this kernel lacks, and every backend
 * made to fail with $LIBDIRTY_PROBE_FAIL, so that the refusal is tested
 * where the kernel has them all too (a 6.12 guest with the kernel addition).
 */
START_TEST(test_new_unusable_backend)
{
	const char *const *names = dirty_backend_names();
	size_t refused = 0, n;
	char why[512];

	unsetenv("LIBDIRTY_PROBE_FAIL");
	for (n = 0; names[n]; n++) {
		if (dirty_backend_probe(names[n], 0, why, sizeof(why)) == 0)
			continue;
		assert_refused(names[n], why);
		refused++;
	}
#if LIBDIRTY_PROBE_INJECTION
	for (size_t i = 0; i < n; i++) {
		ck_assert_int_eq(setenv("LIBDIRTY_PROBE_FAIL", names[i], 1), 0);
		ck_assert_int_eq(dirty_backend_probe(names[i], 0, why, sizeof(why)), -EOPNOTSUPP);
		ck_assert_msg(strstr(why, "LIBDIRTY_PROBE_FAIL"), "%s: %s", names[i], why);
		assert_refused(names[i], why);
		refused++;
	}
	unsetenv("LIBDIRTY_PROBE_FAIL");
#endif
	if (!refused)
		test_skip("every backend is usable here, and this build cannot make one fail "
			  "(-Dprobe_injection=false): nothing to refuse");
}
END_TEST

START_TEST(test_new_other_process_mprotect)
{
	struct dirty_options opts = options_for("mprotect");
	struct dirty_tracker *t = SENTINEL;

	opts.pid = getppid();
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), -EOPNOTSUPP);
	ck_assert_ptr_eq(t, SENTINEL);
}
END_TEST

START_TEST(test_new_dead_pid)
{
	struct dirty_options opts = options_for(NULL);
	struct dirty_tracker *t = SENTINEL;

	opts.pid = dead_pid();
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), -ESRCH);
	ck_assert_ptr_eq(t, SENTINEL);
	opts.backend = "mprotect";
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), -ESRCH);
	ck_assert_ptr_eq(t, SENTINEL);
}
END_TEST

/* ---- dirty_tracker_new: LIBDIRTY_BACKEND ---- */

START_TEST(test_env_selects)
{
	struct dirty_tracker *t = SENTINEL;

	ck_assert_int_eq(setenv("LIBDIRTY_BACKEND", "mprotect", 1), 0);
	ck_assert_int_eq(dirty_tracker_new(NULL, &t), 0);
	ck_assert_str_eq(dirty_tracker_backend(t), "mprotect");
	dirty_tracker_free(t);
	unsetenv("LIBDIRTY_BACKEND");
}
END_TEST

START_TEST(test_env_selects_with_options)
{
	struct dirty_options opts = options_for(NULL);
	struct dirty_tracker *t = SENTINEL;

	ck_assert_int_eq(setenv("LIBDIRTY_BACKEND", "mprotect", 1), 0);
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), 0);
	ck_assert_str_eq(dirty_tracker_backend(t), "mprotect");
	dirty_tracker_free(t);
	unsetenv("LIBDIRTY_BACKEND");
}
END_TEST

START_TEST(test_env_options_win)
{
	struct dirty_options opts = options_for("mprotect");
	struct dirty_tracker *t = SENTINEL;

	ck_assert_int_eq(setenv("LIBDIRTY_BACKEND", "no-such-backend", 1), 0);
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), 0);
	ck_assert_str_eq(dirty_tracker_backend(t), "mprotect");
	dirty_tracker_free(t);
	unsetenv("LIBDIRTY_BACKEND");
}
END_TEST

START_TEST(test_env_unknown)
{
	struct dirty_options opts = options_for(NULL);
	struct dirty_tracker *t = SENTINEL;

	ck_assert_int_eq(setenv("LIBDIRTY_BACKEND", "no-such-backend", 1), 0);
	ck_assert_int_eq(dirty_tracker_new(NULL, &t), -EINVAL);
	ck_assert_ptr_eq(t, SENTINEL);
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), -EINVAL);
	ck_assert_ptr_eq(t, SENTINEL);
	unsetenv("LIBDIRTY_BACKEND");
}
END_TEST

/* ---- dirty_tracker_free, dirty_tracker_backend ---- */

START_TEST(test_free_null)
{
	ck_assert_ptr_null(dirty_tracker_free(NULL));
}
END_TEST

START_TEST(test_backend_null)
{
	ck_assert_ptr_nonnull(dirty_tracker_backend(NULL));
}
END_TEST

/* The automatic choice is a listed backend that the probe calls usable. */
START_TEST(test_backend_auto_is_usable)
{
	const char *const *names = dirty_backend_names();
	const char *chosen = auto_backend();
	int i, found = 0;

	for (i = 0; names[i]; i++)
		found += !strcmp(names[i], chosen);
	ck_assert_int_eq(found, 1);
	ck_assert_int_eq(dirty_backend_probe(chosen, 0, NULL, 0), 0);
}
END_TEST

/* ---- dirty_backend_probe ---- */

START_TEST(test_probe_unknown)
{
	char why[256];

	ck_assert_int_eq(dirty_backend_probe("no-such-backend", 0, why, sizeof(why)), -EINVAL);
	ck_assert_ptr_nonnull(memchr(why, '\0', sizeof(why)));
	ck_assert_ptr_nonnull(strstr(why, "no-such-backend"));
}
END_TEST

START_TEST(test_probe_mprotect_self)
{
	char why[256];

	ck_assert_int_eq(dirty_backend_probe("mprotect", 0, why, sizeof(why)), 0);
	ck_assert_ptr_nonnull(memchr(why, '\0', sizeof(why)));
	ck_assert_uint_gt(strlen(why), 0);
	ck_assert_int_eq(dirty_backend_probe("mprotect", getpid(), why, sizeof(why)), 0);
}
END_TEST

START_TEST(test_probe_mprotect_other)
{
	char why[256];

	ck_assert_int_eq(dirty_backend_probe("mprotect", getppid(), why, sizeof(why)),
			 -EOPNOTSUPP);
	ck_assert_ptr_nonnull(memchr(why, '\0', sizeof(why)));
	ck_assert_uint_gt(strlen(why), 0);
}
END_TEST

START_TEST(test_probe_why_null)
{
	ck_assert_int_eq(dirty_backend_probe("mprotect", 0, NULL, 0), 0);
	ck_assert_int_eq(dirty_backend_probe("mprotect", 0, NULL, 256), 0);
	ck_assert_int_eq(dirty_backend_probe("mprotect", getppid(), NULL, 256), -EOPNOTSUPP);
	ck_assert_int_eq(dirty_backend_probe("no-such-backend", 0, NULL, 256), -EINVAL);
	ck_assert_int_eq(dirty_backend_probe("auto", 0, NULL, 256), 0);
	ck_assert_int_eq(dirty_backend_probe(NULL, 0, NULL, 256), 0);
}
END_TEST

/* Calls whose reason is longer than 3 characters; -1 stands for a dead pid. */
static const struct {
	const char *backend;
	int pid;
} probe_cases[] = {
	{ "mprotect", 0 }, { "no-such-backend", 0 }, { "auto", 0 },
	{ "uffd-sync", 0 }, { "soft-dirty", 0 }, { "mapping", 0 },
	{ "mprotect", -1 },
};

static pid_t probe_case_pid(int i)
{
	return probe_cases[i].pid < 0 ? dead_pid() : probe_cases[i].pid;
}

#define CANARY 0xa5

START_TEST(test_probe_why_tiny)
{
	unsigned char buf[8 + 4 + 8];
	char *why = (char *)buf + 8;
	size_t i;

	memset(buf, CANARY, sizeof(buf));
	dirty_backend_probe(probe_cases[_i].backend, probe_case_pid(_i), why, 4);
	ck_assert_uint_eq(strnlen(why, 4), 3);
	for (i = 0; i < 8; i++) {
		ck_assert_uint_eq(buf[i], CANARY);
		ck_assert_uint_eq(buf[sizeof(buf) - 1 - i], CANARY);
	}
}
END_TEST

START_TEST(test_probe_why_one)
{
	unsigned char buf[8 + 1 + 8];
	size_t i;

	memset(buf, CANARY, sizeof(buf));
	dirty_backend_probe(probe_cases[_i].backend, probe_case_pid(_i), (char *)buf + 8, 1);
	ck_assert_uint_eq(buf[8], '\0');
	for (i = 0; i < 8; i++) {
		ck_assert_uint_eq(buf[i], CANARY);
		ck_assert_uint_eq(buf[sizeof(buf) - 1 - i], CANARY);
	}
}
END_TEST

/* why_len 0 means no room at all, as with snprintf(3). */
START_TEST(test_probe_why_zero)
{
	unsigned char buf[16];
	size_t i;

	memset(buf, CANARY, sizeof(buf));
	dirty_backend_probe(probe_cases[_i].backend, probe_case_pid(_i), (char *)buf + 8, 0);
	for (i = 0; i < sizeof(buf); i++)
		ck_assert_uint_eq(buf[i], CANARY);
}
END_TEST

START_TEST(test_probe_auto)
{
	const char *chosen = auto_backend();
	char why[1024], why_null[1024];

	ck_assert_int_eq(dirty_backend_probe("auto", 0, why, sizeof(why)), 0);
	ck_assert_ptr_nonnull(memchr(why, '\0', sizeof(why)));
	ck_assert_msg(strstr(why, chosen), "\"%s\" does not name %s", why, chosen);
	/* NULL is "auto" */
	ck_assert_int_eq(dirty_backend_probe(NULL, 0, why_null, sizeof(why_null)), 0);
	ck_assert_str_eq(why_null, why);
}
END_TEST

START_TEST(test_probe_dead_pid)
{
	pid_t pid = dead_pid();
	char why[256];

	ck_assert_int_eq(dirty_backend_probe("mprotect", pid, why, sizeof(why)), -ESRCH);
	ck_assert_ptr_nonnull(memchr(why, '\0', sizeof(why)));
	ck_assert_uint_gt(strlen(why), 0);
	ck_assert_int_eq(dirty_backend_probe("auto", pid, why, sizeof(why)), -ESRCH);
	ck_assert_uint_gt(strlen(why), 0);
}
END_TEST

/* A failure comes with its reason, this one too. */
START_TEST(test_probe_negative_pid)
{
	char why[256];

	memset(why, 'x', sizeof(why));
	ck_assert_int_eq(dirty_backend_probe("mprotect", -1, why, sizeof(why)), -EINVAL);
	ck_assert_msg(memchr(why, '\0', sizeof(why)), "no reason written to why");
	ck_assert_uint_gt(strlen(why), 0);
	ck_assert_int_eq(dirty_backend_probe("auto", -1, NULL, 0), -EINVAL);
}
END_TEST

/* ---- dirty_backend_names ---- */

START_TEST(test_names)
{
	static const char *const expected[] = { "uffd-async", "uffd-sync", "soft-dirty",
						"mprotect", "mapping" };
	const char *const *names = dirty_backend_names();
	size_t i;

	ck_assert_ptr_nonnull(names);
	for (i = 0; i < sizeof(expected) / sizeof(expected[0]); i++) {
		ck_assert_ptr_nonnull(names[i]);
		ck_assert_str_eq(names[i], expected[i]);
	}
	ck_assert_ptr_null(names[i]);
}
END_TEST

/* Every listed name is one the probe knows. */
START_TEST(test_names_known)
{
	const char *const *names = dirty_backend_names();
	size_t i;

	for (i = 0; names[i]; i++)
		ck_assert_int_ne(dirty_backend_probe(names[i], 0, NULL, 0), -EINVAL);
	ck_assert_uint_eq(i, 5);
}
END_TEST

/* ---- logging and silence ---- */

struct log_record {
	pthread_t thread;
	unsigned calls, debug_calls;
	unsigned bad_priority, bad_message, bad_thread;
};

static void record_log(int priority, const char *msg, void *userdata)
{
	struct log_record *rec = userdata;
	size_t len = msg ? strlen(msg) : 0;

	rec->calls++;
	if (priority < LOG_EMERG || priority > LOG_DEBUG)
		rec->bad_priority++;
	if (priority == LOG_DEBUG)
		rec->debug_calls++;
	if (!len || msg[len - 1] == '\n')
		rec->bad_message++;
	if (!pthread_equal(pthread_self(), rec->thread))
		rec->bad_thread++;
}

START_TEST(test_log_callback)
{
	struct dirty_options opts = options_for("mprotect");
	struct log_record rec = { .thread = pthread_self() };
	struct dirty_tracker *t;
	char *mem = map_pages(4);

	opts.log = record_log;
	opts.log_userdata = &rec;
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), 0);
	ck_assert_uint_ge(rec.debug_calls, 1);
	ck_assert_int_eq(dirty_track(t, mem, 4 * page_size()), 0);
	dirty_tracker_free(t);
	ck_assert_uint_ge(rec.calls, 1);
	ck_assert_uint_eq(rec.bad_priority, 0);
	ck_assert_uint_eq(rec.bad_message, 0);
	ck_assert_uint_eq(rec.bad_thread, 0);
	munmap(mem, 4 * page_size());
}
END_TEST

/* Send fds 1 and 2 to a temporary file; quiet_end() says how much came. */
struct quiet {
	int saved[2];
	FILE *sink;
};

static void quiet_begin(struct quiet *q)
{
	int fd;

	fflush(stdout);
	fflush(stderr);
	q->sink = tmpfile();
	ck_assert_ptr_nonnull(q->sink);
	for (fd = 1; fd <= 2; fd++) {
		q->saved[fd - 1] = dup(fd);
		ck_assert_int_ge(q->saved[fd - 1], 0);
		ck_assert_int_eq(dup2(fileno(q->sink), fd), fd);
	}
}

static off_t quiet_end(struct quiet *q)
{
	struct stat st;
	int fd;

	fflush(stdout);
	fflush(stderr);
	for (fd = 1; fd <= 2; fd++) {
		dup2(q->saved[fd - 1], fd);
		close(q->saved[fd - 1]);
	}
	ck_assert_int_eq(fstat(fileno(q->sink), &st), 0);
	fclose(q->sink);
	return st.st_size;
}

/* One tracker's life, with a write and a collect-and-clean. */
static void track_cycle(const struct dirty_options *opts)
{
	struct dirty_range runs[4];
	struct dirty_tracker *t;
	char *mem = map_pages(8);
	ssize_t n;

	ck_assert_int_eq(dirty_tracker_new(opts, &t), 0);
	ck_assert_int_eq(dirty_track(t, mem, 8 * page_size()), 0);
	mem[2 * page_size()] = 1;
	n = dirty_collect(t, mem, 8 * page_size(), DIRTY_COLLECT_CLEAN, runs, 4, NULL);
	ck_assert_int_eq(n, 1);
	ck_assert_int_eq(dirty_clean(t, mem, 8 * page_size()), 0);
	ck_assert_int_eq(dirty_untrack(t, mem, 8 * page_size()), 0);
	dirty_tracker_free(t);
	munmap(mem, 8 * page_size());
}

START_TEST(test_silent)
{
	const char *const *names = dirty_backend_names();
	struct dirty_options opts = options_for("mprotect");
	struct dirty_options bogus = options_for("no-such-backend");
	struct dirty_tracker *t = SENTINEL;
	char why[256];
	struct quiet q;
	pid_t dead = dead_pid();
	size_t i;

	unsetenv("LIBDIRTY_BACKEND");
	quiet_begin(&q);
	track_cycle(&opts);
	track_cycle(NULL);
	for (i = 0; names[i]; i++) {
		dirty_backend_probe(names[i], 0, why, sizeof(why));
		dirty_backend_probe(names[i], getppid(), why, sizeof(why));
	}
	dirty_backend_probe("auto", dead, why, sizeof(why));
	dirty_tracker_new(&bogus, &t);
	ck_assert_int_eq(quiet_end(&q), 0);
}
END_TEST

/* ---- dirty_tracker_stats ---- */

START_TEST(test_stats_bad)
{
	struct dirty_options opts = options_for("mprotect");
	struct dirty_stats st, before;
	struct dirty_tracker *t;

	ck_assert_int_eq(dirty_tracker_new(&opts, &t), 0);
	memset(&st, 0x5a, sizeof(st));
	st.sz = 0;
	before = st;
	ck_assert_int_eq(dirty_tracker_stats(t, &st), -EINVAL);
	ck_assert_mem_eq(&st, &before, sizeof(st));
	st.sz = offsetof(struct dirty_stats, regions) - 1;
	before = st;
	ck_assert_int_eq(dirty_tracker_stats(t, &st), -EINVAL);
	ck_assert_mem_eq(&st, &before, sizeof(st));
	ck_assert_int_eq(dirty_tracker_stats(t, NULL), -EINVAL);
	st.sz = sizeof(st);
	ck_assert_int_eq(dirty_tracker_stats(NULL, &st), -EINVAL);
	dirty_tracker_free(t);
}
END_TEST

static struct dirty_stats stats_of(struct dirty_tracker *t)
{
	struct dirty_stats st;

	memset(&st, 0x5a, sizeof(st));
	st.sz = sizeof(st);
	ck_assert_int_eq(dirty_tracker_stats(t, &st), 0);
	ck_assert_uint_eq(st.sz, sizeof(st));
	return st;
}

/* Two adjacent regions of 4 and 8 pages; pages 3, 4 and 9 written. */
START_TEST(test_stats_counts)
{
	struct dirty_options opts = options_for("mprotect");
	size_t page = page_size();
	struct dirty_range runs[4];
	struct dirty_tracker *t;
	struct dirty_stats st;
	char *mem = map_pages(12);
	ssize_t n;

	ck_assert_int_eq(dirty_tracker_new(&opts, &t), 0);
	st = stats_of(t);
	ck_assert_uint_eq(st.regions, 0);
	ck_assert_uint_eq(st.tracked_bytes, 0);
	ck_assert_uint_eq(st.collects, 0);
	ck_assert_uint_eq(st.dirty_pages, 0);

	ck_assert_int_eq(dirty_track(t, mem, 4 * page), 0);
	ck_assert_int_eq(dirty_track(t, mem + 4 * page, 8 * page), 0);
	st = stats_of(t);
	ck_assert_uint_eq(st.regions, 2);
	ck_assert_uint_eq(st.tracked_bytes, 12 * page);
	ck_assert_uint_eq(st.collects, 0);
	ck_assert_uint_eq(st.dirty_pages, 0);
	ck_assert_uint_eq(st.faults, 0);
	ck_assert_uint_eq(st.degraded_blocks, 0);

	mem[3 * page] = 1;
	mem[4 * page] = 1;
	mem[9 * page] = 1;
	n = dirty_collect(t, mem, 12 * page, DIRTY_COLLECT_CLEAN, runs, 4, NULL);
	ck_assert_int_eq(n, 2);
	ck_assert_ptr_eq(runs[0].start, mem + 3 * page);
	ck_assert_uint_eq(runs[0].len, 2 * page);
	ck_assert_ptr_eq(runs[1].start, mem + 9 * page);
	ck_assert_uint_eq(runs[1].len, page);
	st = stats_of(t);
	ck_assert_uint_eq(st.regions, 2);
	ck_assert_uint_eq(st.tracked_bytes, 12 * page);
	ck_assert_uint_eq(st.collects, 1);
	ck_assert_uint_eq(st.dirty_pages, 3);
	ck_assert_uint_eq(st.faults, 3);
	ck_assert_uint_eq(st.degraded_blocks, 0);

	ck_assert_int_eq(dirty_untrack(t, mem, 4 * page), 0);
	st = stats_of(t);
	ck_assert_uint_eq(st.regions, 1);
	ck_assert_uint_eq(st.tracked_bytes, 8 * page);
	ck_assert_uint_eq(st.collects, 1);
	ck_assert_uint_eq(st.dirty_pages, 3);
	dirty_tracker_free(t);
	munmap(mem, 12 * page);
}
END_TEST

/* A failed collect is not counted. */
START_TEST(test_stats_failed_collect)
{
	struct dirty_options opts = options_for("mprotect");
	size_t page = page_size();
	struct dirty_range runs[4];
	struct dirty_tracker *t;
	struct dirty_stats st;
	char *mem = map_pages(4);

	ck_assert_int_eq(dirty_tracker_new(&opts, &t), 0);
	ck_assert_int_eq(dirty_track(t, mem, 2 * page), 0);
	ck_assert_int_eq(dirty_collect(t, mem, 4 * page, 0, runs, 4, NULL), -ENOENT);
	st = stats_of(t);
	ck_assert_uint_eq(st.collects, 0);
	ck_assert_uint_eq(st.dirty_pages, 0);
	dirty_tracker_free(t);
	munmap(mem, 4 * page);
}
END_TEST

/* ---- fallbacks, with probes made to fail ($LIBDIRTY_PROBE_FAIL) ---- */

/* The backends automatic selection chooses from, best first. */
static const char *const implemented[] = { "uffd-async", "uffd-sync", "soft-dirty", "mprotect" };
#define NIMPLEMENTED (sizeof(implemented) / sizeof(implemented[0]))

/* The implemented backends usable here, best first, with no probe made to fail. */
static size_t usable_backends(const char **out)
{
	size_t n = 0;

	unsetenv("LIBDIRTY_PROBE_FAIL");
	for (size_t i = 0; i < NIMPLEMENTED; i++)
		if (dirty_backend_probe(implemented[i], 0, NULL, 0) == 0)
			out[n++] = implemented[i];
	return n;
}

/* The cases that make probes fail need the build's probe_injection option. */
static void require_probe_injection(void)
{
#if !LIBDIRTY_PROBE_INJECTION
	test_skip("built with -Dprobe_injection=false: $LIBDIRTY_PROBE_FAIL makes no probe fail");
#endif
}

/* A failed probe is reported as such, and a forced backend then refuses. */
START_TEST(test_probe_fail_injected)
{
	const char *name = implemented[_i];
	struct dirty_options opts = options_for(name);
	struct dirty_tracker *t = SENTINEL;
	int before = dirty_backend_probe(name, 0, NULL, 0);
	char why[256];

	require_probe_injection();
	ck_assert_int_eq(setenv("LIBDIRTY_PROBE_FAIL", "nothing,mapping,", 1), 0);
	ck_assert_int_eq(dirty_backend_probe(name, 0, NULL, 0), before);
	ck_assert_int_eq(setenv("LIBDIRTY_PROBE_FAIL", name, 1), 0);
	ck_assert_int_eq(dirty_backend_probe(name, 0, why, sizeof(why)), -EOPNOTSUPP);
	ck_assert_msg(strstr(why, "LIBDIRTY_PROBE_FAIL"), "reason: %s", why);
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), -EOPNOTSUPP);
	ck_assert_ptr_eq(t, SENTINEL);
	ck_assert_int_eq(setenv("LIBDIRTY_BACKEND", name, 1), 0);
	ck_assert_int_eq(dirty_tracker_new(NULL, &t), -EOPNOTSUPP);
	ck_assert_ptr_eq(t, SENTINEL);
	unsetenv("LIBDIRTY_BACKEND");
	/* in a list, and the cache is untouched by it */
	ck_assert_int_eq(setenv("LIBDIRTY_PROBE_FAIL", "mapping,", 1), 0);
	ck_assert_int_eq(dirty_backend_probe(name, 0, NULL, 0), before);
	snprintf(why, sizeof(why), "mapping,%s,nothing", name);
	ck_assert_int_eq(setenv("LIBDIRTY_PROBE_FAIL", why, 1), 0);
	ck_assert_int_eq(dirty_backend_probe(name, 0, NULL, 0), -EOPNOTSUPP);
	unsetenv("LIBDIRTY_PROBE_FAIL");
	ck_assert_int_eq(dirty_backend_probe(name, 0, NULL, 0), before);
}
END_TEST

/* Automatic selection takes the next usable backend each time the best one fails. */
START_TEST(test_auto_falls_back)
{
	const char *usable[NIMPLEMENTED];
	size_t n = usable_backends(usable);
	char disabled[256] = "", why[1024];
	struct dirty_tracker *t = SENTINEL;

	require_probe_injection();
	ck_assert_uint_ge(n, 1); /* mprotect works everywhere */
	ck_assert_str_eq(usable[n - 1], "mprotect");
	for (size_t k = 0; k <= n; k++) {
		ck_assert_int_eq(setenv("LIBDIRTY_PROBE_FAIL", disabled, 1), 0);
		if (k == n) {
			ck_assert_int_eq(dirty_backend_probe(NULL, 0, why, sizeof(why)), -EOPNOTSUPP);
			ck_assert_int_eq(dirty_tracker_new(NULL, &t), -EOPNOTSUPP);
			ck_assert_ptr_eq(t, SENTINEL);
			break;
		}
		ck_assert_int_eq(dirty_backend_probe(NULL, 0, why, sizeof(why)), 0);
		/* the reasons of those passed over, then the choice */
		for (size_t j = 0; j < k; j++)
			ck_assert_msg(strstr(why, usable[j]), "%s missing from: %s", usable[j], why);
		ck_assert_msg(strstr(why, usable[k]), "%s missing from: %s", usable[k], why);
		ck_assert_int_eq(dirty_tracker_new(NULL, &t), 0);
		ck_assert_str_eq(dirty_tracker_backend(t), usable[k]);
		t = dirty_tracker_free(t);
		t = SENTINEL;
		snprintf(disabled + strlen(disabled), sizeof(disabled) - strlen(disabled), "%s,",
			 usable[k]);
	}
	unsetenv("LIBDIRTY_PROBE_FAIL");
}
END_TEST

/*
 * DIRTY_TRACKER_NO_SIGNALS: automatic selection passes over the backends
 * that install a signal handler; with only those left, there is none.
 */
START_TEST(test_auto_no_signals)
{
	const char *usable[NIMPLEMENTED], *expect = NULL;
	size_t n = usable_backends(usable);
	struct dirty_options opts = options_for(NULL);
	struct dirty_tracker *t = SENTINEL;

	unsetenv("LIBDIRTY_BACKEND");
	for (size_t i = 0; i < n && !expect; i++)
		if (strcmp(usable[i], "mprotect") && strcmp(usable[i], "soft-dirty"))
			expect = usable[i];
	opts.flags = DIRTY_TRACKER_NO_SIGNALS;
	if (expect) {
		ck_assert_int_eq(dirty_tracker_new(&opts, &t), 0);
		ck_assert_str_eq(dirty_tracker_backend(t), expect);
		dirty_tracker_free(t);
		t = SENTINEL;
	}
	ck_assert_int_eq(setenv("LIBDIRTY_PROBE_FAIL", "uffd-async,uffd-sync", 1), 0);
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), -EOPNOTSUPP);
	ck_assert_ptr_eq(t, SENTINEL);
	/* the control: without the flag, a backend with a handler is taken */
	opts.flags = 0;
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), 0);
	ck_assert_msg(!strcmp(dirty_tracker_backend(t), "soft-dirty") ||
			      !strcmp(dirty_tracker_backend(t), "mprotect"),
		      "%s", dirty_tracker_backend(t));
	dirty_tracker_free(t);
	unsetenv("LIBDIRTY_PROBE_FAIL");
}
END_TEST

/* A MAP_SHARED regular file in the working directory (a disk file system). */
static char *map_file_pages(size_t npages, int *ret_fd)
{
	char path[] = "libdirty-api-XXXXXX";
	int fd = mkstemp(path);
	char *mem;

	ck_assert_int_ge(fd, 0);
	unlink(path);
	ck_assert_int_eq(ftruncate(fd, (off_t)(npages * page_size())), 0);
	mem = mmap(NULL, npages * page_size(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ck_assert_ptr_ne(mem, MAP_FAILED);
	*ret_fd = fd;
	return mem;
}

/* Write page index of mem, then expect exactly it from a collect-and-clean. */
static void assert_tracks_page(struct dirty_tracker *t, char *mem, size_t npages, size_t index)
{
	struct dirty_range runs[4];

	mem[index * page_size() + 1] ^= 1;
	ck_assert_int_eq(dirty_collect(t, mem, npages * page_size(), DIRTY_COLLECT_CLEAN, runs, 4,
				       NULL), 1);
	ck_assert_ptr_eq(runs[0].start, mem + index * page_size());
	ck_assert_uint_eq(runs[0].len, page_size());
}

/*
 * Per memory kind: with uffd-async made to fail, uffd-sync comes first, and
 * it cannot track a regular file; an automatic tracker gives the file to
 * the next usable backend and keeps tracking both exactly.
 */
START_TEST(test_auto_per_kind)
{
	const char *usable[NIMPLEMENTED], *file_backend = NULL;
	size_t n = usable_backends(usable), i;
	struct dirty_stats st = { .sz = sizeof(st) };
	struct dirty_options opts;
	struct dirty_tracker *t;
	char *anon, *file, why[512];
	int fd;

	require_probe_injection();
	if (dirty_backend_probe("uffd-sync", 0, why, sizeof(why)) != 0)
		test_skip("uffd-sync is not usable here, no kind to fall back from: %s", why);
	anon = map_pages(8);
	for (i = 0; i < n; i++)
		if (strcmp(usable[i], "uffd-async") && strcmp(usable[i], "uffd-sync"))
			break;
	file_backend = usable[i];
	file = map_file_pages(8, &fd);
	ck_assert_int_eq(setenv("LIBDIRTY_PROBE_FAIL", "uffd-async", 1), 0);
	ck_assert_int_eq(dirty_tracker_new(NULL, &t), 0);
	ck_assert_str_eq(dirty_tracker_backend(t), "uffd-sync");
	ck_assert_int_eq(dirty_track(t, anon, 8 * page_size()), 0);
	ck_assert_int_eq(dirty_track(t, file, 8 * page_size()), 0);
	ck_assert_str_eq(dirty_tracker_region_backend(t, anon + page_size()), "uffd-sync");
	ck_assert_str_eq(dirty_tracker_region_backend(t, file + page_size()), file_backend);
	assert_tracks_page(t, anon, 8, 3);
	assert_tracks_page(t, file, 8, 6);
	/*
	 * Each backend counts the faults of its own regions only (it once read
	 * the other's region state as its own): one write fault each where
	 * writes are handled in user space.
	 */
	ck_assert_int_eq(dirty_tracker_stats(t, &st), 0);
	ck_assert_uint_eq(st.faults, !strcmp(file_backend, "mprotect") ? 2 : 1);
	ck_assert_uint_eq(st.degraded_blocks, 0);
	ck_assert_int_eq(dirty_untrack(t, file, 8 * page_size()), 0);
	ck_assert_int_eq(dirty_untrack(t, anon, 8 * page_size()), 0);
	ck_assert_ptr_null(dirty_tracker_region_backend(t, anon));
	ck_assert_ptr_null(dirty_tracker_region_backend(NULL, anon));
	dirty_tracker_free(t);
	/* a backend named outright does not fall back: the file is refused */
	opts = options_for("uffd-sync");
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), 0);
	ck_assert_int_eq(dirty_track(t, file, 8 * page_size()), -EOPNOTSUPP);
	dirty_tracker_free(t);
	unsetenv("LIBDIRTY_PROBE_FAIL");
	munmap(file, 8 * page_size());
	close(fd);
	munmap(anon, 8 * page_size());
}
END_TEST

/* ---- the suites ---- */

static Suite *options_suite(void)
{
	Suite *s = suite_create("options");
	TCase *tc = tcase_create("new");

	tcase_add_test(tc, test_new_null_ret);
	tcase_add_test(tc, test_new_defaults);
	tcase_add_test(tc, test_new_sz_too_small);
	tcase_add_test(tc, test_new_sz_first_release);
	tcase_add_test(tc, test_new_sz_larger);
	tcase_add_test(tc, test_new_flags);
	tcase_add_test(tc, test_new_negative_pid);
	tcase_add_test(tc, test_new_unknown_backend);
	tcase_add_test(tc, test_new_unusable_backend);
	tcase_add_test(tc, test_new_other_process_mprotect);
	tcase_add_test(tc, test_new_dead_pid);
	suite_add_tcase(s, tc);

	tc = tcase_create("environment");
	tcase_add_test(tc, test_env_selects);
	tcase_add_test(tc, test_env_selects_with_options);
	tcase_add_test(tc, test_env_options_win);
	tcase_add_test(tc, test_env_unknown);
	suite_add_tcase(s, tc);

	tc = tcase_create("lifetime");
	tcase_add_test(tc, test_free_null);
	tcase_add_test(tc, test_backend_null);
	tcase_add_test(tc, test_backend_auto_is_usable);
	suite_add_tcase(s, tc);
	return s;
}

static Suite *probe_suite(void)
{
	Suite *s = suite_create("probe");
	TCase *tc = tcase_create("probe");
	int ncases = (int)(sizeof(probe_cases) / sizeof(probe_cases[0]));

	tcase_add_test(tc, test_probe_unknown);
	tcase_add_test(tc, test_probe_mprotect_self);
	tcase_add_test(tc, test_probe_mprotect_other);
	tcase_add_test(tc, test_probe_why_null);
	tcase_add_loop_test(tc, test_probe_why_tiny, 0, ncases);
	tcase_add_loop_test(tc, test_probe_why_one, 0, ncases);
	tcase_add_loop_test(tc, test_probe_why_zero, 0, ncases);
	tcase_add_test(tc, test_probe_auto);
	tcase_add_test(tc, test_probe_dead_pid);
	tcase_add_test(tc, test_probe_negative_pid);
	suite_add_tcase(s, tc);

	tc = tcase_create("names");
	tcase_add_test(tc, test_names);
	tcase_add_test(tc, test_names_known);
	suite_add_tcase(s, tc);
	return s;
}

static Suite *fallback_suite(void)
{
	Suite *s = suite_create("fallback");
	TCase *tc = tcase_create("fallback");

	tcase_add_loop_test(tc, test_probe_fail_injected, 0, (int)NIMPLEMENTED);
	tcase_add_test(tc, test_auto_falls_back);
	tcase_add_test(tc, test_auto_per_kind);
	tcase_add_test(tc, test_auto_no_signals);
	suite_add_tcase(s, tc);
	return s;
}

/* ---- cooperative tracking of another process (DIRTY_TRACKER_GIVEN_UFFD) ---- */

static void send_fd(int sock, int fd, const void *data, size_t len)
{
	char control[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { .iov_base = (void *)data, .iov_len = len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
			      .msg_controllen = sizeof(control) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);

	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	if (sendmsg(sock, &msg, 0) != (ssize_t)len)
		_exit(3);
}

static int recv_fd(int sock, void *data, size_t len)
{
	char control[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { .iov_base = data, .iov_len = len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
			      .msg_controllen = sizeof(control) };
	struct cmsghdr *c;
	int fd = -1;

	ck_assert_int_eq(recvmsg(sock, &msg, 0), (ssize_t)len);
	c = CMSG_FIRSTHDR(&msg);
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(c->cmsg_type, SCM_RIGHTS);
	memcpy(&fd, CMSG_DATA(c), sizeof(int));
	return fd;
}

/*
 * The producer: fills its copy of mem (mapped before the fork, so that the
 * parent has memory of its own at the same address), shares a userfaultfd
 * and the address, then writes the page each command byte names and
 * acknowledges; 0xff ends it.
 */
static void producer_main(int sock, char *mem, size_t npages)
{
	unsigned char cmd;
	uintptr_t addr = (uintptr_t)mem;
	int uffd;

	memset(mem, 1, npages * page_size());
	uffd = dirty_userfaultfd_share();
	if (uffd < 0)
		_exit(4);
	send_fd(sock, uffd, &addr, sizeof(addr));
	close(uffd);
	while (read(sock, &cmd, 1) == 1 && cmd != 0xff) {
		mem[cmd * page_size() + 7]++;
		if (write(sock, &cmd, 1) != 1)
			_exit(5);
	}
	_exit(0);
}

static void producer_write(int sock, unsigned char page)
{
	unsigned char ack;

	ck_assert_int_eq(write(sock, &page, 1), 1);
	ck_assert_int_eq(read(sock, &ack, 1), 1);
	ck_assert_uint_eq(ack, page);
}

/*
 * Where uffd-async cannot run (a kernel without WP_ASYNC, or its probe made
 * to fail), a given userfaultfd is refused, with nothing made.
 */
START_TEST(test_given_uffd_refused)
{
	struct dirty_options opts = options_for(NULL);
	struct dirty_tracker *t = SENTINEL;
	int uffd;

	if (dirty_backend_probe("uffd-async", 0, NULL, 0) == 0) {
		require_probe_injection();
		uffd = dirty_userfaultfd_share();
		ck_assert_int_ge(uffd, 0);
		ck_assert_int_eq(setenv("LIBDIRTY_PROBE_FAIL", "uffd-async", 1), 0);
	} else {
		/* the kernel's own: dirty_userfaultfd_share() makes none without WP_ASYNC */
		uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
		if (uffd < 0)
			test_skip("no userfaultfd here (%s): nothing to give", strerror(errno));
		ck_assert_int_eq(dirty_userfaultfd_share(), -EOPNOTSUPP);
	}
	opts.pid = getppid();
	opts.flags = DIRTY_TRACKER_GIVEN_UFFD;
	opts.uffd = uffd;
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), -EOPNOTSUPP);
	ck_assert_ptr_eq(t, SENTINEL);
	unsetenv("LIBDIRTY_PROBE_FAIL");
	close(uffd);
}
END_TEST

START_TEST(test_given_uffd)
{
	const size_t npages = 16;
	struct dirty_options opts = options_for(NULL);
	struct dirty_tracker *t = SENTINEL, *own;
	struct dirty_range runs[4];
	int sv[2], uffd, status, closed;
	uintptr_t addr;
	char *mem, why[512];
	pid_t child;

	if (dirty_backend_probe("uffd-async", 0, why, sizeof(why)) != 0)
		test_skip("uffd-async is not usable here: %s", why);
	mem = map_pages(npages);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	child = fork();
	ck_assert_int_ge(child, 0);
	if (child == 0) {
		close(sv[0]);
		producer_main(sv[1], mem, npages);
	}
	close(sv[1]);
	uffd = recv_fd(sv[0], &addr, sizeof(addr));
	ck_assert_ptr_eq((char *)addr, mem);
	opts.pid = child;
	opts.flags = DIRTY_TRACKER_GIVEN_UFFD;
	opts.uffd = uffd;
	/* bad options: no pid, no descriptor, another backend, a closed descriptor */
	opts.pid = 0;
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), -EINVAL);
	opts.pid = child;
	opts.uffd = -1;
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), -EINVAL);
	opts.uffd = uffd;
	opts.backend = "mprotect";
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), -EINVAL);
	opts.backend = "uffd-async";
	closed = dup(uffd);
	close(closed);
	opts.uffd = closed;
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), -EBADF);
	ck_assert_ptr_eq(t, SENTINEL);
	opts.uffd = uffd;

	/*
	 * A userfaultfd of another process (ours) for the child's pid: refused
	 * at dirty_track(), and our memory at that address is left as it was
	 */
	opts.uffd = dirty_userfaultfd_share();
	ck_assert_int_ge(opts.uffd, 0);
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), 0);
	close(opts.uffd);
	ck_assert_int_eq(dirty_track(t, mem, npages * page_size()), -EBADF);
	t = dirty_tracker_free(t);
	/* not left registered: a tracker of ours takes it (else -EEXIST) */
	opts.pid = 0;
	opts.flags = 0;
	ck_assert_int_eq(dirty_tracker_new(&opts, &own), 0);
	ck_assert_int_eq(dirty_track(own, mem, npages * page_size()), 0);
	ck_assert_int_eq(dirty_untrack(own, mem, npages * page_size()), 0);
	dirty_tracker_free(own);
	opts.pid = child;
	opts.flags = DIRTY_TRACKER_GIVEN_UFFD;
	opts.uffd = uffd;
	/* the environment does not override the given descriptor's backend */
	setenv("LIBDIRTY_BACKEND", "mprotect", 1);
	opts.backend = NULL;
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), 0);
	t = dirty_tracker_free(t);
	unsetenv("LIBDIRTY_BACKEND");
	/* a descriptor that is not a userfaultfd */
	opts.uffd = sv[0];
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), -EBADF);
	opts.uffd = uffd;

	ck_assert_int_eq(dirty_tracker_new(&opts, &t), 0);
	close(uffd); /* the tracker keeps a duplicate */
	uffd = -1;
	ck_assert_str_eq(dirty_tracker_backend(t), "uffd-async");
	ck_assert_int_eq(dirty_track(t, mem, npages * page_size()), 0);
	ck_assert_int_eq(dirty_collect(t, mem, npages * page_size(), 0, runs, 4, NULL), 0);
	producer_write(sv[0], 3);
	producer_write(sv[0], 10);
	producer_write(sv[0], 11);
	ck_assert_int_eq(dirty_collect(t, mem, npages * page_size(), DIRTY_COLLECT_CLEAN, runs, 4,
				       NULL), 2);
	ck_assert_ptr_eq(runs[0].start, mem + 3 * page_size());
	ck_assert_uint_eq(runs[0].len, page_size());
	ck_assert_ptr_eq(runs[1].start, mem + 10 * page_size());
	ck_assert_uint_eq(runs[1].len, 2 * page_size());
	ck_assert_int_eq(dirty_collect(t, mem, npages * page_size(), DIRTY_COLLECT_CLEAN, runs, 4,
				       NULL), 0);
	producer_write(sv[0], 15);
	ck_assert_int_eq(dirty_collect(t, mem, npages * page_size(), DIRTY_COLLECT_CLEAN, runs, 4,
				       NULL), 1);
	ck_assert_ptr_eq(runs[0].start, mem + 15 * page_size());
	/* the producer goes: the tracker says so, and lets go */
	ck_assert_int_eq(write(sv[0], "\xff", 1), 1);
	ck_assert_int_eq(waitpid(child, &status, 0), child);
	ck_assert_int_eq(status, 0);
	child = 0;
	ck_assert_int_eq(dirty_collect(t, mem, npages * page_size(), 0, runs, 4, NULL), -ESRCH);
	ck_assert_int_eq(dirty_untrack(t, mem, npages * page_size()), 0);
	dirty_tracker_free(t);
	if (uffd >= 0)
		close(uffd);
	close(sv[0]);
	munmap(mem, npages * page_size());
}
END_TEST

/* ---- files (the mapping backend): what holds where it is absent too ---- */

START_TEST(test_file_calls_refused)
{
	struct dirty_options opts = options_for("mprotect");
	struct dirty_file_range runs[2];
	struct dirty_tracker *t;
	uint64_t bitmap[1], next = 7;
	size_t page = page_size();
	int fd = memfd_create("libdirty-api", MFD_CLOEXEC), ro;
	char path[64];

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, 16 * (off_t)page), 0);
	/* a tracker of another backend does not track files */
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), 0);
	ck_assert_int_eq(dirty_track_file(t, fd, 0, 16 * page), -EOPNOTSUPP);
	ck_assert_int_eq(dirty_collect_file(t, fd, 0, page, 0, runs, 2, &next), -EOPNOTSUPP);
	ck_assert_uint_eq(next, 7);
	/* bad arguments come first, whatever the backend */
	ck_assert_int_eq(dirty_track_file(NULL, fd, 0, page), -EINVAL);
	ck_assert_int_eq(dirty_track_file(t, -1, 0, page), -EBADF);
	ck_assert_int_eq(dirty_track_file(t, fd, 1, page), -EINVAL);
	ck_assert_int_eq(dirty_track_file(t, fd, 0, page + 1), -EINVAL);
	ck_assert_int_eq(dirty_track_file(t, fd, 0, 0), -EINVAL);
	ck_assert_int_eq(dirty_track_file(t, fd, UINT64_MAX - page + 1, 2 * page), -EINVAL);
	ck_assert_int_eq(dirty_clean_file(t, fd, 0, 3), -EINVAL);
	ck_assert_int_eq(dirty_collect_file(t, fd, 0, page, 0x80, runs, 2, NULL), -EINVAL);
	ck_assert_int_eq(dirty_collect_file(t, fd, 0, page, 0, NULL, 2, NULL), -EINVAL);
	ck_assert_int_eq(dirty_collect_file_bitmap(t, fd, 0, page, 0, NULL), -EINVAL);
	ck_assert_int_eq(dirty_collect_file_bitmap(t, fd, 0, page, 2, bitmap), -EINVAL);
	dirty_tracker_free(t);

	/* an automatic tracker tracks files only where the kernel addition is */
	ck_assert_int_eq(dirty_tracker_new(NULL, &t), 0);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ro = open(path, O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(ro, 0);
	if (dirty_backend_probe("mapping", 0, NULL, 0) != 0) {
		ck_assert_int_eq(dirty_track_file(t, fd, 0, 16 * page), -EOPNOTSUPP);
	} else {
		ck_assert_int_eq(dirty_track_file(t, ro, 0, 16 * page), -EBADF);
		ck_assert_int_eq(dirty_track_file(t, fd, 0, 16 * page), 0);
		ck_assert_int_eq(dirty_track_file(t, ro, 4 * page, page), -EEXIST);
		ck_assert_int_eq(dirty_untrack_file(t, fd, 0, page), -EINVAL);
		ck_assert_int_eq(dirty_untrack_file(t, fd, 0, 16 * page), 0);
		ck_assert_int_eq(dirty_untrack_file(t, fd, 0, 16 * page), -ENOENT);
	}
	close(ro);
	dirty_tracker_free(t);
	close(fd);
}
END_TEST

/* ---- lifetime: dirty_tracker_free() while other threads use the tracker ---- */

/*
 * The free happens in the main thread while another thread is inside
 * dirty_collect(), held there by its log callback: the collect meets a
 * region whose memory is gone, logs it with the tracker's lock held, and the
 * callback waits until the main thread is blocked in the free (its state in
 * /proc is S) or has returned from it.  The free must wait for the collect.
 */
struct free_race {
	struct dirty_tracker *t;
	char *mem;
	size_t len;
	pid_t freer;            /* the main thread's tid */
	_Atomic int inside;     /* the collector is in its callback */
	_Atomic int freeing;    /* the main thread is about to call the free */
	_Atomic int freed;      /* the free returned */
	_Atomic int go;         /* the memory is unmapped: collect */
	_Atomic int collected;  /* the collect returned */
	int freed_while_inside; /* the free returned while the collect was under way */
	ssize_t result;
};

static char thread_state(pid_t tid)
{
	char path[64], buf[256], *p;
	int fd;
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	ck_assert_int_gt(n, 0);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	ck_assert_ptr_nonnull(p);
	return p[2];
}

static struct free_race race;

static void hold_collect(int priority, const char *msg, void *userdata)
{
	(void)priority, (void)userdata;
	if (!strstr(msg, "no longer mapped"))
		return;
	atomic_store(&race.inside, 1);
	while (!atomic_load(&race.freeing))
		sched_yield();
	/* until the free blocks (S), or returns: a free that does not wait */
	for (;;) {
		if (atomic_load(&race.freed)) {
			race.freed_while_inside = 1;
			return;
		}
		if (thread_state(race.freer) == 'S')
			break;
		sched_yield();
	}
	if (atomic_load(&race.freed))
		race.freed_while_inside = 1;
}

static void *collector_main(void *p)
{
	struct dirty_range runs[4];

	(void)p;
	while (!atomic_load(&race.go))
		sched_yield();
	race.result = dirty_collect(race.t, race.mem, race.len, DIRTY_COLLECT_CLEAN, runs, 4,
				    NULL);
	atomic_store(&race.collected, 1);
	return NULL;
}

START_TEST(test_free_waits_for_collect)
{
	const char *usable[NIMPLEMENTED];
	struct dirty_options opts;
	pthread_t collector;

	ck_assert_uint_gt(usable_backends(usable), (size_t)_i);
	opts = options_for(usable[_i]);
	memset(&race, 0, sizeof(race));
	opts.log = hold_collect;
	race.len = 8 * page_size();
	race.mem = map_pages(8);
	race.freer = (pid_t)syscall(SYS_gettid);
	ck_assert_int_eq(dirty_tracker_new(&opts, &race.t), 0);
	ck_assert_int_eq(dirty_track(race.t, race.mem, race.len), 0);
	/*
	 * The collector's stack first: made after the unmap, it could take the
	 * freed range, which would then not be gone.
	 */
	ck_assert_int_eq(pthread_create(&collector, NULL, collector_main, NULL), 0);
	ck_assert_int_eq(munmap(race.mem, race.len), 0); /* the collect logs that it is gone */
	atomic_store(&race.go, 1);
	while (!atomic_load(&race.inside) && !atomic_load(&race.collected))
		sched_yield();
	ck_assert_msg(atomic_load(&race.inside),
		      "%s: the collect returned %zd without finding the region gone", opts.backend,
		      race.result);
	atomic_store(&race.freeing, 1);
	ck_assert_ptr_null(dirty_tracker_free(race.t));
	atomic_store(&race.freed, 1);
	ck_assert_int_eq(pthread_join(collector, NULL), 0);
	ck_assert_msg(!race.freed_while_inside,
		      "%s: dirty_tracker_free() returned while dirty_collect() was under way",
		      opts.backend);
	ck_assert_int_eq(race.result, -ESTALE);
}
END_TEST

/*
 * A free from inside a call on the same tracker (here dirty_collect_each()'s
 * callback) cannot wait for that call: the tracker goes when the call
 * leaves, calls that start meanwhile get -EBADF, and the memory is free
 * for another tracker afterwards.
 */
struct free_inside {
	struct dirty_tracker *t;
	char *mem;
	int clean_after_free;
	unsigned runs;
};

static int free_in_callback(void *start, size_t len, void *userdata)
{
	struct free_inside *f = userdata;

	(void)start, (void)len;
	if (f->runs++ == 0) {
		ck_assert_ptr_null(dirty_tracker_free(f->t));
		f->clean_after_free = dirty_clean(f->t, f->mem, page_size());
	}
	return 0;
}

START_TEST(test_free_from_callback)
{
	const char *usable[NIMPLEMENTED];
	struct free_inside f = { 0 };
	struct dirty_options opts;
	struct dirty_tracker *again;
	int err;

	ck_assert_uint_gt(usable_backends(usable), (size_t)_i);
	opts = options_for(usable[_i]);
	f.mem = map_pages(300);
	ck_assert_int_eq(dirty_tracker_new(&opts, &f.t), 0);
	ck_assert_int_eq(dirty_track(f.t, f.mem, 300 * page_size()), 0);
	/* 150 runs: more than one batch of dirty_collect_each() */
	for (size_t i = 0; i < 300; i += 2)
		f.mem[i * page_size()] = 1;
	err = dirty_collect_each(f.t, f.mem, 300 * page_size(), DIRTY_COLLECT_CLEAN,
				 free_in_callback, &f);
	/* the batch under way was delivered; the next could not start */
	ck_assert_int_eq(err, -EBADF);
	ck_assert_uint_eq(f.runs, 128);
	ck_assert_int_eq(f.clean_after_free, -EBADF);
	/* it is gone: another tracker may take the memory */
	ck_assert_int_eq(dirty_tracker_new(&opts, &again), 0);
	ck_assert_int_eq(dirty_track(again, f.mem, 300 * page_size()), 0);
	dirty_tracker_free(again);
	munmap(f.mem, 300 * page_size());
}
END_TEST

/* Freeing twice is harmless while nothing else took the address. */
START_TEST(test_free_twice)
{
	struct dirty_options opts = options_for("mprotect");
	struct dirty_tracker *t;
	char *mem = map_pages(2);

	ck_assert_int_eq(dirty_tracker_new(&opts, &t), 0);
	ck_assert_int_eq(dirty_track(t, mem, 2 * page_size()), 0);
	ck_assert_ptr_null(dirty_tracker_free(t));
	mem[0] = 1; /* not protected any more */
	ck_assert_ptr_null(dirty_tracker_free(t));
	munmap(mem, 2 * page_size());
}
END_TEST

static Suite *lifetime_suite(void)
{
	Suite *s = suite_create("lifetime");
	TCase *tc = tcase_create("free");
	const char *usable[NIMPLEMENTED];
	int n = (int)usable_backends(usable); /* one run per backend usable here */

	tcase_add_loop_test(tc, test_free_waits_for_collect, 0, n);
	tcase_add_loop_test(tc, test_free_from_callback, 0, n);
	tcase_add_test(tc, test_free_twice);
	suite_add_tcase(s, tc);
	return s;
}

static Suite *cooperative_suite(void)
{
	Suite *s = suite_create("cooperative");
	TCase *tc = tcase_create("given uffd");

	tcase_add_test(tc, test_given_uffd);
	tcase_add_test(tc, test_given_uffd_refused);
	tcase_add_test(tc, test_file_calls_refused);
	suite_add_tcase(s, tc);
	return s;
}

static Suite *log_suite(void)
{
	Suite *s = suite_create("log");
	TCase *tc = tcase_create("log");

	tcase_add_test(tc, test_log_callback);
	tcase_add_test(tc, test_silent);
	suite_add_tcase(s, tc);
	return s;
}

static Suite *stats_suite(void)
{
	Suite *s = suite_create("stats");
	TCase *tc = tcase_create("stats");

	tcase_add_test(tc, test_stats_bad);
	tcase_add_test(tc, test_stats_counts);
	tcase_add_test(tc, test_stats_failed_collect);
	tcase_add_test(tc, test_kernel_uffd_features);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr;

	tap_begin();
	sr = srunner_create(options_suite());
	srunner_add_suite(sr, probe_suite());
	srunner_add_suite(sr, fallback_suite());
	srunner_add_suite(sr, log_suite());
	srunner_add_suite(sr, stats_suite());
	srunner_add_suite(sr, cooperative_suite());
	srunner_add_suite(sr, lifetime_suite());
	return tap_run(sr);
}
