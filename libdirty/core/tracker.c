/* SPDX-License-Identifier: MIT */
/*
 * The tracker: its making (which backends, from the options), its freeing
 * while calls are under way, and what it tells about itself.  Its regions
 * and their calls are in regions.c.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <syslog.h>
#include <unistd.h>

#include "libdirty-int.h"

/* ---- the live trackers, and the calls under way on each ---- */

/*
 * dirty_tracker_free() may be called while other threads are inside calls
 * on the same tracker: it takes the tracker out of the live set, so that no
 * call can start on it any more (-EBADF), then waits until the calls under
 * way have left.  A call finds its tracker in the live set by address under
 * live_lock, which is what makes "start" and "free" exclusive: no call ever
 * touches a tracker's memory before knowing it is live.  (A mutex, not a
 * rwlock: held for a binary search only, and a rwlock cannot be released
 * in the child of a fork by the thread that took it, whose id changed.)
 */
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static struct dirty_tracker **live; /* sorted by address */
static size_t nlive, live_cap;
static pthread_once_t live_atfork_once = PTHREAD_ONCE_INIT;

/* The trackers this thread is inside a call of, innermost last (a few suffice). */
#define INSIDE_MAX 8
static __thread struct dirty_tracker *inside[INSIDE_MAX];
static __thread unsigned inside_depth;

/* fork() must not copy live_lock while another thread holds it. */
static void live_prepare(void)
{
	pthread_mutex_lock(&live_lock);
}

static void live_release(void)
{
	pthread_mutex_unlock(&live_lock);
}

static void live_atfork_install(void)
{
	pthread_atfork(live_prepare, live_release, live_release);
}

/* Index of t in live, or of where it would go; *found says which. */
static size_t live_find(const struct dirty_tracker *t, bool *found)
{
	size_t lo = 0, hi = nlive;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if ((uintptr_t)live[mid] < (uintptr_t)t)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = lo < nlive && live[lo] == t;
	return lo;
}

static int live_insert(struct dirty_tracker *t)
{
	bool found;
	size_t i;
	int err;

	pthread_once(&live_atfork_once, live_atfork_install);
	pthread_mutex_lock(&live_lock);
	err = dirty_grow((void **)&live, &live_cap, nlive + 1, sizeof(*live));
	if (!err) {
		i = live_find(t, &found);
		assert(!found);
		memmove(live + i + 1, live + i, (nlive - i) * sizeof(*live));
		live[i] = t;
		nlive++;
	}
	pthread_mutex_unlock(&live_lock);
	return err;
}

/* False if t was not live (a second free of it). */
static bool live_remove(struct dirty_tracker *t)
{
	bool found;
	size_t i;

	pthread_mutex_lock(&live_lock);
	i = live_find(t, &found);
	if (found) {
		memmove(live + i, live + i + 1, (nlive - i - 1) * sizeof(*live));
		nlive--;
	}
	pthread_mutex_unlock(&live_lock);
	return found;
}

int dirty_tracker_enter(struct dirty_tracker *t)
{
	bool found;

	if (!t)
		return -EINVAL;
	pthread_mutex_lock(&live_lock);
	live_find(t, &found);
	if (found)
		atomic_fetch_add(&t->users, 1);
	pthread_mutex_unlock(&live_lock);
	if (!found)
		return -EBADF;
	if (inside_depth < INSIDE_MAX)
		inside[inside_depth] = t;
	inside_depth++;
	return 0;
}

static bool inside_call_of(const struct dirty_tracker *t)
{
	for (unsigned i = 0; i < inside_depth && i < INSIDE_MAX; i++)
		if (inside[i] == t)
			return true;
	return false;
}

static void tracker_destroy(struct dirty_tracker *t);

void dirty_tracker_leave(struct dirty_tracker *t)
{
	bool destroy = false;

	inside_depth--;
	if (atomic_fetch_sub(&t->users, 1) != 1 || !atomic_load(&t->freeing))
		return;
	/* the last call of a tracker being freed: wake the free, or be it */
	pthread_mutex_lock(&t->users_lock);
	destroy = t->free_deferred;
	if (!destroy)
		pthread_cond_broadcast(&t->users_gone);
	pthread_mutex_unlock(&t->users_lock);
	if (destroy)
		tracker_destroy(t);
}

/* ---- which backends: the options ---- */

/* The part of struct dirty_options that the first release defined. */
#define OPTIONS_MIN_SIZE (offsetof(struct dirty_options, flags) + sizeof(unsigned))

static int options_check(const struct dirty_options *opts)
{
	if (!opts)
		return 0;
	if (dirty_sized_check(opts, opts->sz, OPTIONS_MIN_SIZE, sizeof(*opts)))
		return -EINVAL;
	if ((opts->flags & ~(DIRTY_TRACKER_SPARSE | DIRTY_TRACKER_ADAPTIVE |
			     DIRTY_TRACKER_GIVEN_UFFD | DIRTY_TRACKER_NO_COMPARE |
			     DIRTY_TRACKER_COMPARE_COPY)) ||
	    opts->pid < 0)
		return -EINVAL;
	return 0;
}

/* Is fd a userfaultfd?  (Its /proc/self/fd link names the anonymous inode.) */
static bool fd_is_userfaultfd(int fd)
{
	char path[64], target[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return false;
	target[n] = '\0';
	return !strcmp(target, "anon_inode:[userfaultfd]");
}

/* No tracker: say why through the caller's log callback, and return err. */
static int log_refusal(const struct dirty_options *opts, int err, const char *why)
{
	dirty_log_fn log = DIRTY_SIZED_GET(opts, log, NULL);

	if (log)
		log(LOG_ERR, why, DIRTY_SIZED_GET(opts, log_userdata, NULL));
	return err;
}

/* Add b as candidate, with the masks of what it may take; its index. */
static size_t candidate_add(struct dirty_tracker *t, const struct dirty_backend *b, bool memory,
			    bool probed)
{
	size_t i;

	for (i = 0; i < t->ncandidates && t->candidates[i] != b; i++)
		;
	if (i == t->ncandidates)
		t->candidates[t->ncandidates++] = b;
	if (memory)
		t->for_memory |= 1u << i;
	if (b->flags & DIRTY_BACKEND_FILES)
		t->for_files |= 1u << i;
	if (!probed)
		t->unprobed |= 1u << i;
	return i;
}

/*
 * A userfaultfd of the target's own (DIRTY_TRACKER_GIVEN_UFFD): only a
 * backend that takes one, named or the first that works here.  No ptrace of
 * the target: the kernel's features are probed in this process.
 */
static int choose_given(struct dirty_tracker *t, const char *name, char *why, size_t why_len)
{
	const struct dirty_backend *named = dirty_backend_named(name);

	if (!t->pid || t->given_uffd < 0 || (name && strcmp(name, "auto") &&
					     !(named && (named->flags & DIRTY_BACKEND_TAKES_UFFD))))
		return -EINVAL;
	if (!fd_is_userfaultfd(t->given_uffd))
		return -EBADF;
	for (size_t i = 0; dirty_backends[i]; i++) {
		const struct dirty_backend *b = dirty_backends[i];

		if ((b->flags & DIRTY_BACKEND_TAKES_UFFD) && (!named || b == named) &&
		    !dirty_backend_probe_cached(b, 0, why, why_len)) {
			candidate_add(t, b, true, true);
			return 0;
		}
	}
	return -EOPNOTSUPP;
}

/*
 * "auto": every usable backend for memory, best first, and the backends of
 * files, probed when a file is first tracked (in this process: a file is
 * the same file whoever maps it).
 */
static int choose_auto(struct dirty_tracker *t, char *why, size_t why_len)
{
	const struct dirty_backend *found[DIRTY_MAX_BACKENDS];
	size_t n;
	int err = dirty_backend_choose(t->pid, found, &n, why, why_len);

	if (err)
		return err;
	for (size_t i = 0; i < n; i++)
		candidate_add(t, found[i], true, true);
	for (size_t i = 0; dirty_backends[i]; i++)
		if (dirty_backends[i]->flags & DIRTY_BACKEND_FILES)
			candidate_add(t, dirty_backends[i], false, false);
	return 0;
}

static int choose_named(struct dirty_tracker *t, const char *name, char *why, size_t why_len)
{
	int err = dirty_backend_probe(name, t->pid, why, why_len);

	if (err == -EINVAL)
		return err; /* no such backend */
	if (err)
		/* the target's refusal as it is (gone, permission, traced, sandbox) */
		return dirty_target_error(err) ? err : -EOPNOTSUPP;
	candidate_add(t, dirty_backend_named(name), true, true);
	return 0;
}

/* The candidates of t from the options; -errno and why. */
static int choose(struct dirty_tracker *t, const struct dirty_options *opts, char *why,
		  size_t why_len)
{
	const char *name = DIRTY_SIZED_GET(opts, backend, NULL);

	/* a given userfaultfd decides the backend: the environment does not */
	if (t->flags & DIRTY_TRACKER_GIVEN_UFFD) {
		t->given_uffd = DIRTY_SIZED_GET(opts, uffd, -1);
		return choose_given(t, name, why, why_len);
	}
	if (!name) {
		name = secure_getenv("LIBDIRTY_BACKEND");
		if (name && !*name)
			name = NULL; /* set but empty: as if unset */
	}
	if (!name || !strcmp(name, "auto"))
		return choose_auto(t, why, why_len);
	return choose_named(t, name, why, why_len);
}

/* ---- making and freeing ---- */

static void tracker_release(struct dirty_tracker *t)
{
	if (t->pagemap >= 0)
		close(t->pagemap);
	pthread_cond_destroy(&t->users_gone);
	pthread_mutex_destroy(&t->users_lock);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

/* A tracker with its locks, nothing chosen yet. */
static int tracker_alloc(const struct dirty_options *opts, pid_t pid, struct dirty_tracker **ret)
{
	struct dirty_tracker *t = calloc(1, sizeof(*t));
	int err;

	if (!t)
		return -ENOMEM;
	err = pthread_mutex_init(&t->lock, NULL);
	if (err) {
		free(t);
		return -err;
	}
	err = pthread_mutex_init(&t->users_lock, NULL);
	if (!err) {
		err = pthread_cond_init(&t->users_gone, NULL);
		if (err)
			pthread_mutex_destroy(&t->users_lock);
	}
	if (err) {
		pthread_mutex_destroy(&t->lock);
		free(t);
		return -err;
	}
	t->pid = pid;
	t->flags = DIRTY_SIZED_GET(opts, flags, 0);
	t->given_uffd = -1;
	t->fork_generation = dirty_fork_generation();
	t->log = DIRTY_SIZED_GET(opts, log, NULL);
	t->log_userdata = DIRTY_SIZED_GET(opts, log_userdata, NULL);
	t->stats.sz = sizeof(t->stats);
	/*
	 * The target's pagemap, opened once: for another process, what tells
	 * its exec (dirty_tracker_target_alive()); for this one, where the
	 * compare way finds the pages that hold data (-1 if /proc is missing:
	 * then nothing is compared)
	 */
	if (pid) {
		char path[64];

		snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)pid);
		t->pagemap = open(path, O_RDONLY | O_CLOEXEC);
	} else {
		t->pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	}
	*ret = t;
	return 0;
}

DIRTY_EXPORT int dirty_tracker_new(const struct dirty_options *opts, struct dirty_tracker **ret)
{
	char why[DIRTY_REASON_LEN] = "";
	struct dirty_tracker *t;
	int err;
	pid_t pid;

	if (!ret)
		return -EINVAL;
	err = options_check(opts);
	if (err)
		return err;
	pid = DIRTY_SIZED_GET(opts, pid, 0);
	if (pid == getpid())
		pid = 0;
	if (pid && kill(pid, 0) < 0 && errno == ESRCH)
		return -ESRCH;
	err = tracker_alloc(opts, pid, &t);
	if (err)
		return err;
	err = choose(t, opts, why, sizeof(why));
	if (err) {
		bool quiet = err == -EINVAL || err == -EBADF || (t->flags & DIRTY_TRACKER_GIVEN_UFFD);

		tracker_release(t);
		return quiet ? err : log_refusal(opts, err, why);
	}
	/* the first choice must work now; the others are opened when needed */
	err = t->candidates[0]->open(t, &t->state[0]);
	if (!err) {
		t->opened = 1;
		err = live_insert(t);
		if (err)
			t->candidates[0]->close(t, t->state[0]);
	}
	if (err) {
		tracker_release(t);
		return err;
	}
	dirty_log(t, LOG_DEBUG, "tracker using %s (%s)", t->candidates[0]->name, why);
	*ret = t;
	return 0;
}

static void tracker_destroy(struct dirty_tracker *t)
{
	/*
	 * In a forked child this undoes what the child inherited: its own
	 * copy of the protections (mprotect) and its fds.  Backends tolerate
	 * kernel state that is already gone.
	 */
	for (size_t i = 0; i < t->regions.n; i++) {
		struct dirty_region *r = t->regions.v[i];

		dirty_compare_free(r);
		r->backend->untrack(t, r);
		dirty_unclaim(r);
		free(r);
	}
	free(t->regions.v);
	for (size_t i = 0; i < t->ncandidates; i++)
		if (t->opened & (1u << i))
			t->candidates[i]->close(t, t->state[i]);
	tracker_release(t);
}

DIRTY_EXPORT struct dirty_tracker *dirty_tracker_free(struct dirty_tracker *t)
{
	if (!t || !live_remove(t))
		return NULL; /* NULL, or freed already */
	/*
	 * A forked child's copy: the calls its counters show were the parent's
	 * threads', which the child does not have, and its locks may have been
	 * copied held.
	 */
	if (dirty_tracker_forked(t)) {
		tracker_destroy(t);
		return NULL;
	}
	pthread_mutex_lock(&t->users_lock);
	atomic_store(&t->freeing, true);
	if (inside_call_of(t)) {
		/* from a callback of a call on t: it cannot wait for itself */
		t->free_deferred = true;
		pthread_mutex_unlock(&t->users_lock);
		return NULL;
	}
	while (atomic_load(&t->users))
		pthread_cond_wait(&t->users_gone, &t->users_lock);
	pthread_mutex_unlock(&t->users_lock);
	tracker_destroy(t);
	return NULL;
}

int dirty_tracker_target_alive(struct dirty_tracker *t)
{
	return t->pid && t->pagemap >= 0 ? dirty_pagemap_alive(t->pagemap) : 0;
}

/* ---- what a tracker tells about itself ---- */

DIRTY_EXPORT const char *dirty_tracker_backend(const struct dirty_tracker *t)
{
	/* the live set holds trackers, which calls may count in: not const there */
	struct dirty_tracker *counted = (struct dirty_tracker *)t;
	const char *name;

	if (dirty_tracker_enter(counted))
		return "none";
	name = t->candidates[0]->name;
	dirty_tracker_leave(counted);
	return name;
}

/* The backend's name (way false) or the way's (true) of the region holding addr. */
static const char *region_call(struct dirty_tracker *t, const void *addr, bool way)
{
	const char *name = NULL;
	size_t i;

	if (dirty_tracker_forked(t))
		return NULL;
	pthread_mutex_lock(&t->lock);
	i = dirty_registry_find(&t->regions, DIRTY_KEY_MEMORY, (uintptr_t)addr);
	if (i < t->regions.n && dirty_key_equal(t->regions.v[i]->key, DIRTY_KEY_MEMORY) &&
	    t->regions.v[i]->start <= (uintptr_t)addr)
		name = way ? dirty_way_name(t->regions.v[i]) : t->regions.v[i]->backend->name;
	pthread_mutex_unlock(&t->lock);
	return name;
}

static unsigned sees_call(struct dirty_tracker *t)
{
	unsigned sees = ~0u;

	if (dirty_tracker_forked(t))
		return 0;
	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->ncandidates; i++)
		if (t->opened & (1u << i))
			sees &= t->candidates[i]->sees ? t->candidates[i]->sees(t) : 0;
	pthread_mutex_unlock(&t->lock);
	return sees == ~0u ? 0 : sees;
}

static int stats_call(struct dirty_tracker *t, struct dirty_stats *ret)
{
	struct dirty_stats stats;

	if (!ret || ret->sz < offsetof(struct dirty_stats, regions))
		return -EINVAL;
	if (dirty_tracker_forked(t))
		return -ECHILD;
	pthread_mutex_lock(&t->lock);
	stats = t->stats;
	for (size_t i = 0; i < t->regions.n; i++) {
		const struct dirty_region *r = t->regions.v[i];

		stats.compared_regions += r->way == DIRTY_WAY_COMPARE;
		if (r->backend->stats)
			r->backend->stats(r, &stats);
	}
	pthread_mutex_unlock(&t->lock);
	stats.unprotected_regions = stats.compared_regions;
	dirty_sized_out(ret, &stats, sizeof(stats));
	return 0;
}

DIRTY_EXPORT const char *dirty_tracker_region_backend(struct dirty_tracker *t, const void *addr)
{
	DIRTY_COUNTED_CALL(t, const char *, NULL, region_call(t, addr, false));
}

DIRTY_EXPORT const char *dirty_tracker_region_way(struct dirty_tracker *t, const void *addr)
{
	DIRTY_COUNTED_CALL(t, const char *, NULL, region_call(t, addr, true));
}

DIRTY_EXPORT int dirty_tracker_stats(struct dirty_tracker *t, struct dirty_stats *ret)
{
	DIRTY_COUNTED_CALL(t, int, err_, stats_call(t, ret));
}

DIRTY_EXPORT unsigned dirty_tracker_sees(struct dirty_tracker *t)
{
	DIRTY_COUNTED_CALL(t, unsigned, 0, sees_call(t));
}
