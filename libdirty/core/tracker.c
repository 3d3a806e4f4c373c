/* SPDX-License-Identifier: MIT */
/* The tracker: public API, argument checks, span walking and result sinks. */
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
	int err = 0;

	pthread_once(&live_atfork_once, live_atfork_install);
	pthread_mutex_lock(&live_lock);
	if (nlive == live_cap) {
		size_t cap = live_cap ? 2 * live_cap : 16;
		struct dirty_tracker **grown = realloc(live, cap * sizeof(*grown));

		if (!grown) {
			err = -ENOMEM;
			goto out;
		}
		live = grown;
		live_cap = cap;
	}
	i = live_find(t, &found);
	assert(!found);
	memmove(live + i + 1, live + i, (nlive - i) * sizeof(*live));
	live[i] = t;
	nlive++;
out:
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

/* ---- options ---- */

/* The part of struct dirty_options that the first release defined. */
#define OPTIONS_MIN_SIZE (offsetof(struct dirty_options, flags) + sizeof(unsigned))

static int options_check(const struct dirty_options *opts)
{
	const unsigned char *p;
	size_t i;

	if (!opts)
		return 0;
	if (opts->sz < OPTIONS_MIN_SIZE)
		return -EINVAL;
	/* a newer caller's extra fields must be zero: we would ignore them */
	p = (const unsigned char *)opts;
	for (i = sizeof(*opts); i < opts->sz; i++)
		if (p[i])
			return -EINVAL;
	if ((opts->flags & ~(DIRTY_TRACKER_SPARSE | DIRTY_TRACKER_ADAPTIVE |
			     DIRTY_TRACKER_GIVEN_UFFD)) || opts->pid < 0)
		return -EINVAL;
	return 0;
}

/* Read a field of opts that may be beyond what an older caller passed. */
#define OPTS_GET(opts, field, fallback)                                                  \
	((opts) && (opts)->sz >= offsetof(struct dirty_options, field) + sizeof((opts)->field) \
		 ? (opts)->field                                                         \
		 : (fallback))

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
	dirty_log_fn log = OPTS_GET(opts, log, NULL);

	if (log)
		log(LOG_ERR, why, OPTS_GET(opts, log_userdata, NULL));
	return err;
}

DIRTY_EXPORT int dirty_tracker_new(const struct dirty_options *opts, struct dirty_tracker **ret)
{
	const struct dirty_backend *candidates[DIRTY_MAX_BACKENDS];
	char why[DIRTY_REASON_LEN];
	const char *name;
	struct dirty_tracker *t;
	size_t ncandidates;
	int err, given_uffd = -1;
	bool given;
	pid_t pid;

	if (!ret)
		return -EINVAL;
	err = options_check(opts);
	if (err)
		return err;

	pid = OPTS_GET(opts, pid, 0);
	if (pid == getpid())
		pid = 0;
	if (pid && kill(pid, 0) < 0 && errno == ESRCH)
		return -ESRCH;

	name = OPTS_GET(opts, backend, NULL);
	given = OPTS_GET(opts, flags, 0) & DIRTY_TRACKER_GIVEN_UFFD;
	/* a given userfaultfd decides the backend: the environment does not */
	if (!name && !given) {
		name = secure_getenv("LIBDIRTY_BACKEND");
		if (name && !*name)
			name = NULL; /* set but empty: as if unset */
	}
	if (given) {
		/* a userfaultfd of the target's own: only uffd-async takes one */
		given_uffd = OPTS_GET(opts, uffd, -1);
		if (!pid || given_uffd < 0 || (name && strcmp(name, "auto") &&
					       strcmp(name, "uffd-async")))
			return -EINVAL;
		if (!fd_is_userfaultfd(given_uffd))
			return -EBADF;
		/* no ptrace of the target: probe the kernel's features only */
		if (dirty_backend_probe("uffd-async", 0, why, sizeof(why)))
			return -EOPNOTSUPP;
		candidates[0] = &dirty_backend_uffd_async;
		ncandidates = 1;
	} else if (!name || !strcmp(name, "auto")) {
		err = dirty_backend_choose(pid, candidates, &ncandidates, why, sizeof(why));
		if (err)
			return log_refusal(opts, err, why);
	} else {
		err = dirty_backend_probe(name, pid, why, sizeof(why));
		if (err == -EINVAL)
			return err; /* no such backend */
		if (err)
			/* the target's refusal as it is (gone, permission, traced, sandbox) */
			return log_refusal(opts, dirty_target_error(err) ? err : -EOPNOTSUPP, why);
		candidates[0] = dirty_backend_find(name);
		ncandidates = 1;
		assert(candidates[0]);
	}

	t = calloc(1, sizeof(*t));
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
	memcpy(t->candidates, candidates, ncandidates * sizeof(candidates[0]));
	t->ncandidates = ncandidates;
	t->pid = pid;
	t->flags = OPTS_GET(opts, flags, 0);
	t->fork_generation = dirty_fork_generation();
	t->log = OPTS_GET(opts, log, NULL);
	t->log_userdata = OPTS_GET(opts, log_userdata, NULL);
	t->uffd = -1;
	t->given_uffd = given_uffd;
	t->pagemap_fd = -1;
	t->mapping_fd = -1;
	t->automatic = !given && (!name || !strcmp(name, "auto"));
	t->stats.sz = sizeof(t->stats);

	/* the first choice must work now; the others are opened when needed */
	err = candidates[0]->open(t);
	if (!err) {
		t->opened = 1;
		err = live_insert(t);
		if (err)
			candidates[0]->close(t);
	}
	if (err) {
		pthread_cond_destroy(&t->users_gone);
		pthread_mutex_destroy(&t->users_lock);
		pthread_mutex_destroy(&t->lock);
		free(t);
		return err;
	}
	dirty_log(t, LOG_DEBUG, "tracker using %s (%s)", candidates[0]->name, why);
	*ret = t;
	return 0;
}

static void tracker_destroy(struct dirty_tracker *t)
{
	size_t i;

	/*
	 * In a forked child this undoes what the child inherited: its own
	 * copy of the protections (mprotect) and its fds.  Backends tolerate
	 * kernel state that is already gone.
	 */
	for (i = 0; i < t->nregions; i++) {
		t->regions[i]->backend->untrack(t, t->regions[i]);
		free(t->regions[i]);
	}
	free(t->regions);
	for (i = 0; i < t->ncandidates; i++)
		if (t->opened & (1u << i))
			t->candidates[i]->close(t);
	dirty_mapping_release(t); /* files tracked by an automatic tracker */
	pthread_cond_destroy(&t->users_gone);
	pthread_mutex_destroy(&t->users_lock);
	pthread_mutex_destroy(&t->lock);
	free(t);
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
	/* the file calls (mapping.c) hold the lock throughout: let one under way finish */
	pthread_mutex_lock(&t->lock);
	pthread_mutex_unlock(&t->lock);
	tracker_destroy(t);
	return NULL;
}

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

static const char *region_backend_call(struct dirty_tracker *t, const void *addr)
{
	const char *name = NULL;
	size_t i;

	if (!t || dirty_tracker_forked(t))
		return NULL;
	pthread_mutex_lock(&t->lock);
	i = dirty_registry_lower_bound(t, (uintptr_t)addr);
	if (i < t->nregions && t->regions[i]->start <= (uintptr_t)addr)
		name = t->regions[i]->backend->name;
	pthread_mutex_unlock(&t->lock);
	return name;
}

static unsigned sees_call(struct dirty_tracker *t)
{
	unsigned sees = ~0u;
	size_t i;

	if (dirty_tracker_forked(t))
		return 0;
	pthread_mutex_lock(&t->lock);
	for (i = 0; i < t->ncandidates; i++)
		if (t->opened & (1u << i))
			sees &= t->candidates[i]->sees ? t->candidates[i]->sees(t) : 0;
	pthread_mutex_unlock(&t->lock);
	return sees == ~0u ? 0 : sees;
}

static int stats_call(struct dirty_tracker *t, struct dirty_stats *ret)
{
	struct dirty_stats stats;
	size_t sz;

	if (!t || !ret || ret->sz < offsetof(struct dirty_stats, regions))
		return -EINVAL;
	if (dirty_tracker_forked(t))
		return -ECHILD;
	sz = ret->sz < sizeof(*ret) ? ret->sz : sizeof(*ret);
	pthread_mutex_lock(&t->lock);
	stats = t->stats;
	for (size_t i = 0; i < t->nregions; i++)
		stats.unprotected_regions += t->regions[i]->unprotected;
	for (size_t i = 0; i < t->ncandidates; i++)
		if ((t->opened & (1u << i)) && t->candidates[i]->stats)
			t->candidates[i]->stats(t, &stats);
	pthread_mutex_unlock(&t->lock);
	memcpy(ret, &stats, sz);
	ret->sz = sz;
	return 0;
}

/* ---- range checks ---- */

/* The checks every range-taking call shares: page aligned, non-empty, no wrap. */
static int range_check(const struct dirty_tracker *t, const void *addr, size_t len,
		       uintptr_t *start, uintptr_t *end)
{
	uintptr_t a = (uintptr_t)addr;
	size_t page = dirty_page_size();

	if (!t)
		return -EINVAL;
	if (dirty_tracker_forked(t))
		return -ECHILD;
	if (!len || (a & (page - 1)) || (len & (page - 1)) || a + len < a)
		return -EINVAL;
	*start = a;
	*end = a + len;
	return 0;
}

static uintptr_t max_addr(uintptr_t a, uintptr_t b)
{
	return a > b ? a : b;
}

static uintptr_t min_addr(uintptr_t a, uintptr_t b)
{
	return a < b ? a : b;
}

/*
 * Find the regions covering [start, end) without a gap: *first and *count.
 * -ENOENT if any page is untracked, -EINVAL if the span cuts a huge page of a
 * hugetlb region.  A region whose memory has been unmapped
 * or moved is marked gone and the span refused with -ESTALE, before anything
 * is changed.
 */
static int span_find(struct dirty_tracker *t, uintptr_t start, uintptr_t end, size_t *first,
		     size_t *count)
{
	size_t i = dirty_registry_lower_bound(t, start), j;
	uintptr_t cur = start;

	for (j = i; cur < end; j++) {
		if (j == t->nregions || t->regions[j]->start > cur)
			return -ENOENT;
		cur = t->regions[j]->end;
	}
	*first = i;
	*count = j - i;
	for (; i < j; i++) {
		struct dirty_region *r = t->regions[i];

		if ((max_addr(start, r->start) | min_addr(end, r->end)) & (r->page_size - 1))
			return -EINVAL;
		if (!r->gone) {
			if (t->pid) {
				int mapped = dirty_range_mapped_pid(t->pid, r->start, r->end);

				if (mapped == -ESRCH)
					return -ESRCH; /* the target process is gone */
				r->gone = mapped == -ENOMEM;
			} else {
				r->gone = !dirty_range_mapped(r->start, r->end);
			}
			if (r->gone)
				dirty_log(t, LOG_WARNING, "region %#lx-%#lx is no longer mapped",
					  (unsigned long)r->start, (unsigned long)r->end);
		}
		if (r->gone)
			return -ESTALE;
	}
	return 0;
}

/* ---- track / untrack / clean ---- */

/* Is part of [start, end) tracked by a tracker of this process, of any backend? */
static bool claimed_by_any(uintptr_t start, uintptr_t end)
{
	static const struct dirty_backend *const all[] = {
		&dirty_backend_uffd_async, &dirty_backend_uffd_sync, &dirty_backend_soft_dirty,
		&dirty_backend_mprotect, &dirty_backend_mapping,
	};

	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		if (all[i]->claimed && all[i]->claimed(start, end))
			return true;
	return false;
}

/*
 * Give r to the first candidate that takes its kind of memory.  A candidate
 * refuses a kind it cannot track with -EOPNOTSUPP (uffd-sync: regular
 * files; soft-dirty: hugetlb); only then is the next one tried.
 */
static int track_with_candidates(struct dirty_tracker *t, struct dirty_region *r)
{
	int err = -EOPNOTSUPP;

	for (size_t i = 0; i < t->ncandidates && err == -EOPNOTSUPP; i++) {
		const struct dirty_backend *b = t->candidates[i];

		if (!(t->opened & (1u << i))) {
			err = b->open(t);
			if (err) {
				dirty_log(t, LOG_WARNING, "%s: cannot open: %s", b->name,
					  strerror(-err));
				err = -EOPNOTSUPP;
				continue;
			}
			t->opened |= 1u << i;
		}
		r->backend = b;
		err = b->track(t, r);
		if (err == -EOPNOTSUPP && i + 1 < t->ncandidates)
			dirty_log(t, LOG_INFO, "%s cannot track %#lx-%#lx; trying %s", b->name,
				  (unsigned long)r->start, (unsigned long)r->end,
				  t->candidates[i + 1]->name);
	}
	return err;
}

/* ---- DIRTY_TRACK_POPULATED_DIRTY ---- */

struct populated_runs {
	struct dirty_span *v;
	size_t n, cap;
};

static int populated_keep(uintptr_t start, uintptr_t end, void *ctx)
{
	struct populated_runs *l = ctx;

	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 64;
		struct dirty_span *v = reallocarray(l->v, cap, sizeof(*v));

		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = (struct dirty_span){ start, end };
	return 0;
}

struct populated_redirty {
	struct dirty_tracker *t;
	struct dirty_region *r;
};

static int populated_redirty(uintptr_t start, uintptr_t end, void *ctx)
{
	struct populated_redirty *p = ctx;

	p->r->backend->redirty(p->t, p->r, start, end);
	return 0;
}

static int pagemap_open(const struct dirty_tracker *t)
{
	char path[64];
	int fd;

	snprintf(path, sizeof(path), t->pid ? "/proc/%d/pagemap" : "/proc/self/pagemap",
		 (int)t->pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	return fd < 0 ? (errno == ENOENT ? -ESRCH : -errno) : fd;
}

/*
 * The region starts with its pages that hold data dirty.  They are read
 * twice: before tracking starts (with swapped-out pages, before any
 * protection marker can look like one) and after, present ones only (a page
 * populated in between was protected by the clean): so that no page that
 * held data when the call returned reads clean.  Then the backend marks
 * them dirty as it does pages a collect could not deliver.
 */
static int populated_before(const struct dirty_tracker *t, uintptr_t start, uintptr_t end,
			    enum dirty_memory_kind kind, int *ret_fd, struct populated_runs *ret)
{
	int fd = pagemap_open(t), err;

	if (fd < 0)
		return fd;
	err = dirty_populated_each(fd, start, end, kind, true, populated_keep, ret);
	if (err) {
		close(fd);
		free(ret->v);
		return err;
	}
	*ret_fd = fd;
	return 0;
}

static int populated_after(struct dirty_tracker *t, struct dirty_region *r, int fd,
			   const struct populated_runs *before)
{
	struct populated_redirty p = { t, r };

	for (size_t i = 0; i < before->n; i++)
		r->backend->redirty(t, r, before->v[i].start, before->v[i].end);
	return dirty_populated_each(fd, r->start, r->end, r->kind, false, populated_redirty, &p);
}

static int track_flags_call(struct dirty_tracker *t, void *addr, size_t len, unsigned flags)
{
	struct populated_runs populated = { 0 };
	struct dirty_range_info info;
	struct dirty_region *r;
	uintptr_t start, end;
	int err, pagemap_fd = -1;

	err = range_check(t, addr, len, &start, &end);
	if (err)
		return err;
	if (flags & ~DIRTY_TRACK_POPULATED_DIRTY)
		return -EINVAL;

	pthread_mutex_lock(&t->lock);
	if (dirty_registry_overlaps(t, start, end) || (!t->pid && claimed_by_any(start, end))) {
		err = -EEXIST;
		goto out;
	}
	err = dirty_describe_range(t->pid, start, end, &info);
	if (err)
		goto out;
	if (!(info.prot & PROT_WRITE)) {
		err = -EACCES;
		goto out;
	}
	if ((start | end) & (info.page_size - 1)) {
		err = -EINVAL;
		goto out;
	}
	if (flags & DIRTY_TRACK_POPULATED_DIRTY) {
		err = populated_before(t, start, end, info.kind, &pagemap_fd, &populated);
		if (err)
			goto out;
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		err = -ENOMEM;
		goto out;
	}
	*r = (struct dirty_region){
		.start = start,
		.end = end,
		.page_size = info.page_size,
		.kind = info.kind,
		.prot = info.mixed_prot ? -1 : info.prot,
	};
	err = track_with_candidates(t, r);
	if (err) {
		free(r);
		goto out;
	}
	if (flags & DIRTY_TRACK_POPULATED_DIRTY)
		err = populated_after(t, r, pagemap_fd, &populated);
	if (!err)
		err = dirty_registry_insert(t, r);
	if (err) {
		r->backend->untrack(t, r);
		free(r);
		goto out;
	}
	t->stats.regions++;
	t->stats.tracked_bytes += len;
out:
	pthread_mutex_unlock(&t->lock);
	if (pagemap_fd >= 0)
		close(pagemap_fd);
	free(populated.v);
	return err;
}

static int untrack_call(struct dirty_tracker *t, void *addr, size_t len)
{
	uintptr_t start, end;
	size_t first, count, i;
	int err;

	err = range_check(t, addr, len, &start, &end);
	if (err)
		return err;

	pthread_mutex_lock(&t->lock);
	err = span_find(t, start, end, &first, &count);
	if (err == -ESTALE || err == -ESRCH)
		err = 0; /* forgetting a gone region (or process) is what the caller wants */
	if (err)
		goto out;
	if (t->regions[first]->start != start || t->regions[first + count - 1]->end != end) {
		err = -EINVAL;
		goto out;
	}
	for (i = first; i < first + count; i++) {
		struct dirty_region *r = t->regions[i];

		r->backend->untrack(t, r);
		t->stats.regions--;
		t->stats.tracked_bytes -= r->end - r->start;
		free(r);
	}
	dirty_registry_remove(t, first, count);
out:
	pthread_mutex_unlock(&t->lock);
	return err;
}

static int clean_call(struct dirty_tracker *t, void *addr, size_t len)
{
	uintptr_t start, end;
	size_t first, count, i;
	int err;

	err = range_check(t, addr, len, &start, &end);
	if (err)
		return err;

	pthread_mutex_lock(&t->lock);
	err = span_find(t, start, end, &first, &count);
	for (i = first; !err && i < first + count; i++) {
		struct dirty_region *r = t->regions[i];

		if (!r->unprotected) /* reported whole anyway */
			err = r->backend->clean(t, r, max_addr(start, r->start),
						min_addr(end, r->end));
	}
	pthread_mutex_unlock(&t->lock);
	return err;
}

/* ---- collect ---- */

/*
 * Give back pages that a collect-and-clean re-cleaned but could not deliver.
 * Called with the lock held.  A region that vanished meanwhile has nothing
 * left to give back to.
 */
static void redirty_locked(struct dirty_tracker *t, uintptr_t start, uintptr_t end)
{
	size_t i = dirty_registry_lower_bound(t, start);

	for (; i < t->nregions && t->regions[i]->start < end; i++) {
		struct dirty_region *r = t->regions[i];

		if (!r->gone)
			r->backend->redirty(t, r, max_addr(start, r->start),
					    min_addr(end, r->end));
	}
}

void dirty_redirty_runs(struct dirty_tracker *t, const struct dirty_range *runs, size_t n)
{
	size_t i;

	pthread_mutex_lock(&t->lock);
	for (i = 0; i < n; i++)
		redirty_locked(t, (uintptr_t)runs[i].start,
			       (uintptr_t)runs[i].start + runs[i].len);
	pthread_mutex_unlock(&t->lock);
}

static void redirty_bitmap(struct dirty_tracker *t, const struct dirty_sink *s, uintptr_t end)
{
	size_t page = dirty_page_size(), npages = (end - s->base) / page, i, j;

	for (i = 0; i < npages; i = j) {
		if (!(s->bitmap[i / 64] >> (i % 64) & 1)) {
			j = i + 1;
			continue;
		}
		for (j = i + 1; j < npages && (s->bitmap[j / 64] >> (j % 64) & 1); j++)
			;
		redirty_locked(t, s->base + i * page, s->base + j * page);
	}
}

/*
 * The one collect loop behind every public form.  Returns 0 or -errno;
 * *next is the first address not examined.  A failure after some runs were
 * delivered must not lose what was already re-cleaned: the runs form reports
 * success with *next at the failing region (the resumed call meets the
 * error); the bitmap form, which has no partial answer, gives the pages back.
 */
/*
 * DIRTY_TRACKER_ADAPTIVE (the idea of the vmwgfx driver): protecting a page
 * costs a fault at its first write; when nearly every page is written every
 * cycle, reporting the whole region without protecting it is cheaper.
 */
#define ADAPTIVE_DENSE_PERCENT 50
#define ADAPTIVE_STREAK 3
#define ADAPTIVE_RETEST 16

/* Collect [start, end) of an unprotected region: all of it is dirty. */
static int collect_unprotected(struct dirty_tracker *t, struct dirty_region *r, uintptr_t start,
			       uintptr_t end, bool clean, struct dirty_sink *sink, uintptr_t *done)
{
	if (!dirty_sink_add(sink, start, end)) {
		*done = start;
		return 0;
	}
	*done = end;
	if (clean && start == r->start && end == r->end &&
	    ++r->unprotected_collects >= ADAPTIVE_RETEST &&
	    r->backend->clean(t, r, r->start, r->end) == 0) {
		/* measure it again: protected, the next collect counts its pages */
		r->unprotected = false;
		r->dense_streak = 0;
		dirty_log(t, LOG_DEBUG, "adaptive: region %#lx-%#lx protected again to re-test",
			  (unsigned long)r->start, (unsigned long)r->end);
	}
	return 0;
}

/* After a whole-region collect-and-clean that found pages dirty. */
static void adaptive_account(struct dirty_tracker *t, struct dirty_region *r, uint64_t pages)
{
	uint64_t total = (r->end - r->start) / dirty_page_size();

	if (!r->backend->unprotect)
		return; /* writes are not trapped (mapping): nothing to save */
	if (pages * 100 < total * ADAPTIVE_DENSE_PERCENT) {
		r->dense_streak = 0;
		return;
	}
	if (++r->dense_streak < ADAPTIVE_STREAK)
		return;
	r->backend->unprotect(t, r);
	r->unprotected = true;
	r->unprotected_collects = 0;
	dirty_log(t, LOG_DEBUG, "adaptive: region %#lx-%#lx is reported whole, unprotected",
		  (unsigned long)r->start, (unsigned long)r->end);
}

/*
 * The one collect loop behind every public form.  Returns 0 or -errno;
 * *next is the first address not examined.  A failure after some runs were
 * delivered must not lose what was already re-cleaned: the runs form reports
 * success with *next at the failing region (the resumed call meets the
 * error); the bitmap form, which has no partial answer, gives the pages back.
 */
static int collect_span(struct dirty_tracker *t, uintptr_t start, uintptr_t end, unsigned flags,
			struct dirty_sink *sink, uintptr_t *next)
{
	bool clean = flags & DIRTY_COLLECT_CLEAN;
	size_t first, count, i;
	uintptr_t done = start;
	int err;

	if (flags & ~DIRTY_COLLECT_CLEAN)
		return -EINVAL;
	pthread_mutex_lock(&t->lock);
	err = span_find(t, start, end, &first, &count);
	for (i = first; !err && i < first + count && done == max_addr(start, t->regions[i]->start);
	     i++) {
		struct dirty_region *r = t->regions[i];
		uintptr_t seg_start = done, seg_end = min_addr(end, r->end);
		uint64_t pages_before = sink->pages;

		if (r->unprotected) {
			err = collect_unprotected(t, r, seg_start, seg_end, clean, sink, &done);
			continue;
		}
		err = r->backend->collect(t, r, seg_start, seg_end, clean, sink, &done);
		if (err == -ESTALE)
			r->gone = true;
		if (!err && clean && (t->flags & DIRTY_TRACKER_ADAPTIVE) && seg_start == r->start &&
		    done == r->end)
			adaptive_account(t, r, sink->pages - pages_before);
	}
	if (err && sink->pages) {
		if (!sink->bitmap)
			err = 0;
		else if (flags & DIRTY_COLLECT_CLEAN)
			redirty_bitmap(t, sink, end);
	}
	if (!err) {
		t->stats.collects++;
		t->stats.dirty_pages += sink->pages;
		*next = done;
	}
	pthread_mutex_unlock(&t->lock);
	return err;
}

static ssize_t collect_call(struct dirty_tracker *t, void *addr, size_t len, unsigned flags,
			    struct dirty_range *out, size_t max, void **next)
{
	struct dirty_sink sink = { .out = out, .max = max };
	uintptr_t start, end, done;
	int err;

	err = range_check(t, addr, len, &start, &end);
	if (err)
		return err;
	if (!out != !max || max > SSIZE_MAX || (flags & ~DIRTY_COLLECT_CLEAN))
		return -EINVAL;
	if (!max) {
		done = start;
	} else {
		err = collect_span(t, start, end, flags, &sink, &done);
		if (err)
			return err;
	}
	if (next)
		*next = (void *)done;
	return (ssize_t)sink.n;
}

static int collect_bitmap_call(struct dirty_tracker *t, void *addr, size_t len, unsigned flags,
			       uint64_t *bitmap)
{
	struct dirty_sink sink = { .bitmap = bitmap, .base = (uintptr_t)addr };
	uintptr_t start, end, done;
	int err;

	err = range_check(t, addr, len, &start, &end);
	if (err)
		return err;
	if (!bitmap || (flags & ~DIRTY_COLLECT_CLEAN))
		return -EINVAL;
	/* all or nothing: fill a private copy, publish it on success */
	sink.bitmap = calloc((len / dirty_page_size() + 63) / 64, sizeof(uint64_t));
	if (!sink.bitmap)
		return -ENOMEM;
	err = collect_span(t, start, end, flags, &sink, &done);
	if (!err)
		memcpy(bitmap, sink.bitmap, (len / dirty_page_size() + 63) / 64 * sizeof(uint64_t));
	free(sink.bitmap);
	return err;
}

static int collect_each_call(struct dirty_tracker *t, void *addr, size_t len, unsigned flags,
			     dirty_run_fn fn, void *userdata)
{
	struct dirty_range runs[128];
	uintptr_t start, end, cur;
	ssize_t n, i;
	void *next;
	int err;

	err = range_check(t, addr, len, &start, &end);
	if (err)
		return err;
	if (!fn || (flags & ~DIRTY_COLLECT_CLEAN))
		return -EINVAL;
	/*
	 * Collect a batch, then deliver it.  With DIRTY_COLLECT_CLEAN the whole
	 * batch is clean once collected, so if fn stops early the undelivered
	 * rest is marked dirty again: nothing is lost.
	 */
	for (cur = start; cur < end; cur = (uintptr_t)next) {
		n = dirty_collect(t, (void *)cur, end - cur, flags, runs, 128, &next);
		if (n < 0)
			return (int)n;
		for (i = 0; i < n; i++) {
			err = fn(runs[i].start, runs[i].len, userdata);
			if (err) {
				/* the undelivered rest of this batch was cleaned: give it back */
				if (flags & DIRTY_COLLECT_CLEAN)
					dirty_redirty_runs(t, runs + i + 1, (size_t)(n - i - 1));
				return err;
			}
		}
	}
	return 0;
}

/* ---- the public calls: each counted, so that a free waits for it ---- */

DIRTY_EXPORT const char *dirty_tracker_region_backend(struct dirty_tracker *t, const void *addr)
{
	const char *name;

	if (dirty_tracker_enter(t))
		return NULL;
	name = region_backend_call(t, addr);
	dirty_tracker_leave(t);
	return name;
}

DIRTY_EXPORT int dirty_tracker_stats(struct dirty_tracker *t, struct dirty_stats *ret)
{
	int err = dirty_tracker_enter(t);

	if (err)
		return err;
	err = stats_call(t, ret);
	dirty_tracker_leave(t);
	return err;
}

DIRTY_EXPORT unsigned dirty_tracker_sees(struct dirty_tracker *t)
{
	unsigned sees;

	if (dirty_tracker_enter(t))
		return 0;
	sees = sees_call(t);
	dirty_tracker_leave(t);
	return sees;
}

DIRTY_EXPORT int dirty_track(struct dirty_tracker *t, void *addr, size_t len)
{
	return dirty_track_flags(t, addr, len, 0);
}

DIRTY_EXPORT int dirty_track_flags(struct dirty_tracker *t, void *addr, size_t len, unsigned flags)
{
	int err = dirty_tracker_enter(t);

	if (err)
		return err;
	err = track_flags_call(t, addr, len, flags);
	dirty_tracker_leave(t);
	return err;
}

DIRTY_EXPORT int dirty_untrack(struct dirty_tracker *t, void *addr, size_t len)
{
	int err = dirty_tracker_enter(t);

	if (err)
		return err;
	err = untrack_call(t, addr, len);
	dirty_tracker_leave(t);
	return err;
}

DIRTY_EXPORT int dirty_clean(struct dirty_tracker *t, void *addr, size_t len)
{
	int err = dirty_tracker_enter(t);

	if (err)
		return err;
	err = clean_call(t, addr, len);
	dirty_tracker_leave(t);
	return err;
}

DIRTY_EXPORT ssize_t dirty_collect(struct dirty_tracker *t, void *addr, size_t len,
				   unsigned flags, struct dirty_range *out, size_t max,
				   void **next)
{
	int err = dirty_tracker_enter(t);
	ssize_t n;

	if (err)
		return err;
	n = collect_call(t, addr, len, flags, out, max, next);
	dirty_tracker_leave(t);
	return n;
}

DIRTY_EXPORT int dirty_collect_bitmap(struct dirty_tracker *t, void *addr, size_t len,
				      unsigned flags, uint64_t *bitmap)
{
	int err = dirty_tracker_enter(t);

	if (err)
		return err;
	err = collect_bitmap_call(t, addr, len, flags, bitmap);
	dirty_tracker_leave(t);
	return err;
}

DIRTY_EXPORT int dirty_collect_each(struct dirty_tracker *t, void *addr, size_t len,
				    unsigned flags, dirty_run_fn fn, void *userdata)
{
	int err = dirty_tracker_enter(t);

	if (err)
		return err;
	err = collect_each_call(t, addr, len, flags, fn, userdata);
	dirty_tracker_leave(t);
	return err;
}
