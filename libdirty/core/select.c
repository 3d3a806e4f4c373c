/* SPDX-License-Identifier: MIT */
/*
 * Which backends work here, and why not, through each backend's probe.  A
 * probe exercises the mechanism for real on a scratch page (a kernel can
 * accept a request and do nothing, as clear_refs "4" does without
 * CONFIG_MEM_SOFT_DIRTY).  Answers for this process are cached: the kernel
 * does not change under a running process.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "libdirty-int.h"

/* The answers for this process, by position in dirty_backends[]. */
struct probe_cache {
	bool probed;
	int result;
	char reason[DIRTY_REASON_LEN];
};

static struct probe_cache cache[DIRTY_MAX_BACKENDS];
static pthread_mutex_t probe_lock = PTHREAD_MUTEX_INITIALIZER;

const struct dirty_backend *dirty_backend_named(const char *name)
{
	for (size_t i = 0; name && dirty_backends[i]; i++)
		if (!strcmp(dirty_backends[i]->name, name))
			return dirty_backends[i];
	return NULL;
}

#if LIBDIRTY_PROBE_INJECTION
/*
 * $LIBDIRTY_PROBE_FAIL (a comma-separated list of backend names) makes those
 * probes fail, so that tests can take every fallback path on any kernel.
 * Read at every probe, past the cache, so one test process can vary it.
 * Builds for hardened use leave it out (-Dprobe_injection=false).
 */
static bool probe_disabled(const char *name)
{
	const char *list = secure_getenv("LIBDIRTY_PROBE_FAIL"), *p;
	size_t len = strlen(name);

	for (p = list; p && *p; p += strcspn(p, ","), p += *p == ',') {
		if (!strncmp(p, name, len) && (p[len] == ',' || p[len] == '\0'))
			return true;
	}
	return false;
}
#else
static bool probe_disabled(const char *name)
{
	(void)name;
	return false;
}
#endif

int dirty_backend_probe_cached(const struct dirty_backend *b, pid_t pid, char *why,
			       size_t why_len)
{
	struct probe_cache *c = NULL;
	int err;

	if (probe_disabled(b->name))
		return dirty_reason(why, why_len, -EOPNOTSUPP,
				    "disabled for testing by LIBDIRTY_PROBE_FAIL");
	if (pid)
		return b->probe(pid, why, why_len);
	for (size_t i = 0; dirty_backends[i]; i++)
		if (dirty_backends[i] == b)
			c = &cache[i];
	pthread_mutex_lock(&probe_lock);
	if (!c->probed) {
		c->result = b->probe(0, c->reason, sizeof(c->reason));
		c->probed = true;
	}
	err = c->result;
	if (why && why_len)
		snprintf(why, why_len, "%s", c->reason);
	pthread_mutex_unlock(&probe_lock);
	return err;
}

/* Append to why at *used (what fits). */
static void why_add(char *why, size_t why_len, size_t *used, const char *fmt, const char *name,
		    const char *reason)
{
	if (!why || *used >= why_len)
		return;
	*used += (size_t)snprintf(why + *used, why_len - *used, fmt, name, reason);
	if (*used > why_len)
		*used = why_len;
}

int dirty_backend_choose(pid_t pid, const struct dirty_backend **out, size_t *ret_n, char *why,
			 size_t why_len)
{
	char reason[DIRTY_REASON_LEN], target[DIRTY_REASON_LEN] = "";
	size_t n = 0, used = 0;
	int target_err = 0;

	if (why && why_len)
		why[0] = '\0';
	for (size_t i = 0; dirty_backends[i]; i++) {
		const struct dirty_backend *b = dirty_backends[i];
		int err;

		if (b->flags & DIRTY_BACKEND_MANUAL)
			continue;
		err = dirty_backend_probe_cached(b, pid, reason, sizeof(reason));
		if (!err) {
			out[n++] = b;
			if (n == 1)
				why_add(why, why_len, &used, "%s: %s", b->name, reason);
		} else if (!n) {
			why_add(why, why_len, &used, "%s unusable (%s); ", b->name, reason);
		}
		if (err && !target_err && dirty_target_error(err)) {
			/* the target refused (gone, permission, busy, sandbox): that is the answer */
			target_err = err;
			snprintf(target, sizeof(target), "%s", reason);
		}
	}
	*ret_n = n;
	if (n)
		return 0;
	if (!target_err) {
		if (why && used >= 2 && used < why_len && !strcmp(why + used - 2, "; "))
			why[used - 2] = '\0'; /* the list of reasons ends here */
		return -EOPNOTSUPP;
	}
	if (why && why_len)
		snprintf(why, why_len, "%s", target);
	return target_err;
}

DIRTY_EXPORT int dirty_backend_probe(const char *backend, pid_t pid, char *why, size_t why_len)
{
	const struct dirty_backend *b;
	int err;

	if (pid < 0)
		return dirty_reason(why, why_len, -EINVAL, "bad pid %d", (int)pid);
	if (pid == getpid())
		pid = 0;
	if (pid && kill(pid, 0) < 0 && errno == ESRCH)
		return dirty_reason(why, why_len, -ESRCH, "no process %d", (int)pid);
	if (!backend || !strcmp(backend, "auto")) {
		const struct dirty_backend *found[DIRTY_MAX_BACKENDS];
		size_t n;

		return dirty_backend_choose(pid, found, &n, why, why_len);
	}
	b = dirty_backend_named(backend);
	if (!b)
		return dirty_reason(why, why_len, -EINVAL, "no backend named \"%s\"", backend);
	err = dirty_backend_probe_cached(b, pid, why, why_len);
	/* -EINVAL means "no such backend"; a probe's own EINVAL means unusable */
	return err == -EINVAL ? -EOPNOTSUPP : err;
}

static const char *names[DIRTY_MAX_BACKENDS + 1];
static pthread_once_t names_once = PTHREAD_ONCE_INIT;

static void names_fill(void)
{
	for (size_t i = 0; dirty_backends[i]; i++)
		names[i] = dirty_backends[i]->name;
}

DIRTY_EXPORT int dirty_kernel_uffd_features(char *buf, size_t len)
{
	if (!buf && len)
		return -EINVAL;
	return dirty_uffd_feature_list(buf, len);
}

DIRTY_EXPORT const char *const *dirty_backend_names(void)
{
	pthread_once(&names_once, names_fill);
	return names;
}
