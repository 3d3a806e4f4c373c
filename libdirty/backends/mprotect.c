/* SPDX-License-Identifier: MIT */
/*
 * The mprotect backend: works on any kernel.
 *
 * A clean page is mapped without PROT_WRITE.  The first write faults; our
 * SIGSEGV handler makes the page writable again and sets the page's bit in the
 * region's bitmap; the write is then retried by the CPU and succeeds.
 *
 * Why no write is lost.  The handler does, in this order:
 *     H1  mprotect(page, writable)     H2  bit := 1
 * and collect-and-clean does, per page:
 *     C1  take the bit (atomic exchange with 0), report the page if it was 1
 *     C2  if reported: mprotect(page, read-only)
 * A write lands either on a read-only page, and faults into a new H1-H2, or
 * on a writable page, which some handler made writable at its H1 and whose H2
 * follows.  Take a write W on a writable page and the H1-H2 that opened it:
 *   - H2 before C1: C1 reports the page and C2 comes after W (else W would
 *     have faulted), so the caller, reading the page after the call, sees W;
 *   - H2 after C1: the bit stays set after this collect and the next reports
 *     the page.
 * A page left writable with its bit clear exists only between an H1 and its
 * H2, never after H2.  The reverse order (bit first, then unprotect) loses
 * writes: C1 and C2 could fall between H2 and H1, leaving the page writable
 * with a clear bit.  A write racing with a collect may be reported by two
 * collects; that is allowed.
 *
 * The handler finds regions in a process-wide table that it reads without
 * locks (a signal handler cannot take one).  Updates copy the table, publish
 * the copy, and wait until no handler can still be reading the old one: each
 * reader counts itself in one of two counters chosen by a phase bit; the
 * writer flips the phase twice, waiting for the counter of the old phase to
 * drain each time, so that it never waits for readers that started after it.
 *
 * vm.max_map_count.  Each writable island in a read-only region is a separate
 * kernel vma, and the kernel refuses to split past vm.max_map_count (65530 by
 * default): mprotect fails with ENOMEM.  The handler then unprotects a larger
 * aligned block around the page (64 pages, then 4096, then the whole region),
 * which merges the islands inside it, and marks the whole block dirty.  The
 * write always succeeds; the block's pages are reported dirty (counted in
 * dirty_stats.degraded_blocks).  Collect-and-clean re-protects them, which
 * merges the vmas again.  A region that degrades more than DEGRADE_LIMIT
 * times between two collects is being written all over: it is unprotected
 * whole at once, because every further fault near the limit is slow (a
 * failing split, then a merge, in a tree of 65530 vmas).  The handler cannot
 * log; the next clean or collect of the region logs its first degradation,
 * once per region, with the numbers (what it costs: libdirty.h, at
 * dirty_stats.degraded_blocks).
 *
 * Stacks.  The handler runs on the stack of the thread that faulted (or on
 * its alternate signal stack).  A thread whose own stack is read-only cannot
 * even enter the handler: the kernel fails to write the signal frame and
 * kills the process with SIGSEGV.  An alternate stack would not be enough:
 * every other signal handler, and every system call that writes into a
 * buffer on the stack, would meet a read-only page too.  So track() refuses
 * the calling thread's stack, its alternate signal stack (where the kernel
 * writes signal frames), the stack it is running on (a coroutine's), and
 * the main thread's stack ([stack] in /proc/self/maps), with -EOPNOTSUPP
 * and a reason in the log.  The stacks of other threads are not known to
 * the library (they are anonymous memory to the kernel): tracking one of
 * them kills the process the same way, which libdirty.h documents.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>
#include <syslog.h>
#include <unistd.h>

#include "libdirty-int.h"

struct mp_region {
	uintptr_t start, end;
	size_t page_size;    /* protection granularity: base or huge page */
	int prot;            /* the protection to give back */
	size_t nwords;
	_Atomic uint64_t *bits; /* one bit per page_size page */
	_Atomic uint64_t faults, degraded;
	_Atomic uint64_t degraded_pages;  /* pages of the degraded blocks, in all */
	_Atomic uint64_t degraded_whole;  /* of them: the whole region at once */
	_Atomic unsigned degraded_since_collect;
	bool degrade_logged;              /* under the tracker's lock */
};

#define DEGRADE_LIMIT 8

/*
 * Ranges untracked a moment ago.  A write can fault on a page that is then
 * made writable and removed from the table before the handler looks it up;
 * such a fault is not foreign, and retrying the write is right.
 */
#define RECENTLY_REMOVED 16

struct mp_range {
	uintptr_t start, end;
};

/* The handler's view: sorted, non-overlapping, immutable once published. */
struct mp_table {
	uint64_t generation; /* never repeats, unlike the table's address */
	struct mp_range removed[RECENTLY_REMOVED];
	size_t n;
	struct mp_region *regions[];
};

static _Atomic(struct mp_table *) table;
/* the last fault this thread retried, to retry each one only once */
static __thread uintptr_t retried_addr __attribute__((tls_model("initial-exec")));
static __thread uint64_t retried_generation __attribute__((tls_model("initial-exec")));
static uint64_t table_generation; /* under table_lock */
static _Atomic unsigned long readers[2];
static _Atomic unsigned phase;
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sigaction previous_action;
static bool handler_installed;
/* what the handler blocks: every tracker's dirty_options.handler_mask */
static uint64_t handler_mask;

/* ---- the signal handler ---- */

static struct mp_region *table_find(const struct mp_table *tab, uintptr_t addr)
{
	size_t lo = 0, hi = tab ? tab->n : 0;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		struct mp_region *r = tab->regions[mid];

		if (addr < r->start)
			hi = mid;
		else if (addr >= r->end)
			lo = mid + 1;
		else
			return r;
	}
	return NULL;
}

static void bits_set(struct mp_region *r, uintptr_t start, uintptr_t end)
{
	dirty_bits_set_atomic(r->bits, (start - r->start) / r->page_size,
			      (end - r->start) / r->page_size);
}

/* H1 then H2 (see the top of the file).  False if the fault is not ours to fix. */
static bool unprotect_and_record(struct mp_region *r, uintptr_t addr)
{
	static const size_t block_pages[] = { 64, 4096 };
	uintptr_t page = addr & ~(uintptr_t)(r->page_size - 1);
	uintptr_t start, end;
	size_t i;

	if (mprotect((void *)page, r->page_size, r->prot) == 0) {
		bits_set(r, page, page + r->page_size);
		atomic_fetch_add_explicit(&r->faults, 1, memory_order_relaxed);
		return true;
	}
	if (errno != ENOMEM)
		return false;
	i = atomic_fetch_add_explicit(&r->degraded_since_collect, 1, memory_order_relaxed) <
			    DEGRADE_LIMIT
		    ? 0
		    : sizeof(block_pages) / sizeof(block_pages[0]);
	for (; i <= sizeof(block_pages) / sizeof(block_pages[0]); i++) {
		if (i < sizeof(block_pages) / sizeof(block_pages[0])) {
			size_t block = block_pages[i] * r->page_size;

			start = page & ~(uintptr_t)(block - 1);
			end = start + block;
			start = start < r->start ? r->start : start;
			end = end > r->end ? r->end : end;
		} else {
			start = r->start;
			end = r->end;
		}
		if (mprotect((void *)start, end - start, r->prot) == 0) {
			bits_set(r, start, end);
			atomic_fetch_add_explicit(&r->faults, 1, memory_order_relaxed);
			atomic_fetch_add_explicit(&r->degraded, 1, memory_order_relaxed);
			atomic_fetch_add_explicit(&r->degraded_pages, (end - start) / r->page_size,
						  memory_order_relaxed);
			if (start == r->start && end == r->end)
				atomic_fetch_add_explicit(&r->degraded_whole, 1,
							  memory_order_relaxed);
			return true;
		}
	}
	return false;
}

/* What would have happened without us. */
static void chain(int sig, siginfo_t *info, void *context)
{
	const struct sigaction *prev = &previous_action;
	struct sigaction dfl;

	if (prev->sa_flags & SA_SIGINFO) {
		prev->sa_sigaction(sig, info, context);
		return;
	}
	if (prev->sa_handler == SIG_IGN && info->si_code <= 0)
		return; /* sent by kill(2): ignored, as asked */
	if (prev->sa_handler == SIG_DFL || prev->sa_handler == SIG_IGN) {
		/*
		 * A fault cannot be ignored.  Restore the default action and
		 * return: the faulting instruction runs again and the kernel
		 * delivers the signal with the default action (and core dump).
		 */
		memset(&dfl, 0, sizeof(dfl));
		dfl.sa_handler = SIG_DFL;
		sigaction(sig, &dfl, NULL);
		if (info->si_code <= 0)
			raise(sig);
		return;
	}
	prev->sa_handler(sig);
}

/*
 * A fault in a range untracked a moment ago: the untrack made it writable
 * before it left the table, so the write can simply run again.  Once per
 * thread, address and table: a second fault there is not ours.
 */
static bool retry_recently_removed(const struct mp_table *tab, uintptr_t addr)
{
	size_t i;

	if (!tab || (retried_addr == addr && retried_generation == tab->generation))
		return false;
	for (i = 0; i < RECENTLY_REMOVED; i++) {
		if (tab->removed[i].start <= addr && addr < tab->removed[i].end) {
			retried_addr = addr;
			retried_generation = tab->generation;
			return true;
		}
	}
	return false;
}

static void on_sigsegv(int sig, siginfo_t *info, void *context)
{
	int saved_errno = errno;
	unsigned idx = atomic_load(&phase) & 1;
	uintptr_t addr = (uintptr_t)info->si_addr;
	const struct mp_table *tab;
	struct mp_region *r;
	bool handled = false;

	atomic_fetch_add(&readers[idx], 1);
	if (info->si_code == SEGV_ACCERR) {
		tab = atomic_load(&table);
		r = table_find(tab, addr);
		if (r)
			handled = unprotect_and_record(r, addr);
		else
			handled = retry_recently_removed(tab, addr);
	}
	atomic_fetch_sub(&readers[idx], 1);
	errno = saved_errno;
	if (!handled)
		chain(sig, info, context);
}

/*
 * fork() copies table_lock as another thread may hold it, and readers[] as
 * threads in the handler left them; only the forking thread exists in the
 * child, and it is in neither.
 */
static void atfork_prepare(void)
{
	pthread_mutex_lock(&table_lock);
}

static void atfork_parent(void)
{
	pthread_mutex_unlock(&table_lock);
}

static void atfork_child(void)
{
	atomic_store(&readers[0], 0);
	atomic_store(&readers[1], 0);
	pthread_mutex_unlock(&table_lock);
}

/* ---- table updates, under table_lock ---- */

static void wait_for_readers(void)
{
	int flip;

	for (flip = 0; flip < 2; flip++) {
		unsigned old = atomic_fetch_xor(&phase, 1) & 1;

		while (atomic_load(&readers[old]))
			sched_yield();
	}
}

/* Publish a copy of the table with add inserted and/or remove left out. */
static int table_update(struct mp_region *add, struct mp_region *remove)
{
	struct mp_table *old = atomic_load(&table), *next;
	size_t n = old ? old->n : 0, i, j = 0;
	bool inserted = !add;

	next = malloc(sizeof(*next) + (n + 1) * sizeof(next->regions[0]));
	if (!next)
		return -ENOMEM;
	next->generation = ++table_generation;
	if (old)
		memcpy(next->removed, old->removed, sizeof(next->removed));
	else
		memset(next->removed, 0, sizeof(next->removed));
	if (remove) {
		memmove(next->removed + 1, next->removed,
			sizeof(next->removed) - sizeof(next->removed[0]));
		next->removed[0] = (struct mp_range){ remove->start, remove->end };
	}
	for (i = 0; i < n; i++) {
		struct mp_region *r = old->regions[i];

		if (!inserted && add->start < r->start) {
			next->regions[j++] = add;
			inserted = true;
		}
		if (r != remove)
			next->regions[j++] = r;
	}
	if (!inserted)
		next->regions[j++] = add;
	next->n = j;
	atomic_store(&table, next);
	wait_for_readers();
	free(old);
	return 0;
}

/* m must leave the table before it is freed: retry until malloc works. */
static void table_remove(struct mp_region *m)
{
	while (table_update(NULL, m) < 0)
		sched_yield();
}

static bool table_overlaps(uintptr_t start, uintptr_t end)
{
	const struct mp_table *tab = atomic_load(&table);
	size_t i;

	for (i = 0; tab && i < tab->n; i++)
		if (tab->regions[i]->start < end && start < tab->regions[i]->end)
			return true;
	return false;
}

/* ---- the backend ---- */

/* *set := the signals of a dirty_options.handler_mask (bit n - 1: signal n). */
static void signal_mask_set(sigset_t *set, uint64_t mask)
{
	sigemptyset(set);
	for (int sig = 1; sig <= 64; sig++)
		if (mask >> (sig - 1) & 1)
			sigaddset(set, sig);
}

/*
 * Install the handler once, blocking the signals of every tracker's
 * handler_mask while it runs; a tracker that adds signals to the mask
 * installs it again with them, if it is still the one installed.
 */
static int mprotect_open(struct dirty_tracker *t, void **ret)
{
	uint64_t mask = handler_mask | t->handler_mask;
	struct sigaction action, current;
	int err = 0;

	pthread_mutex_lock(&table_lock);
	if (!handler_installed && pthread_atfork(atfork_prepare, atfork_parent, atfork_child)) {
		pthread_mutex_unlock(&table_lock);
		return -ENOMEM;
	}
	if (!handler_installed || mask != handler_mask) {
		memset(&action, 0, sizeof(action));
		action.sa_sigaction = on_sigsegv;
		action.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
		signal_mask_set(&action.sa_mask, mask);
		if (handler_installed &&
		    (sigaction(SIGSEGV, NULL, &current) < 0 || !(current.sa_flags & SA_SIGINFO) ||
		     current.sa_sigaction != on_sigsegv)) {
			dirty_log(t, LOG_ERR, "mprotect: the program replaced the SIGSEGV handler "
				  "of the library's: cannot add signals to what it blocks");
			err = -EBUSY;
		} else if (sigaction(SIGSEGV, &action, handler_installed ? NULL : &previous_action) <
			   0) {
			err = -errno;
			dirty_log(t, LOG_ERR, "mprotect: cannot install the SIGSEGV handler");
		} else {
			handler_installed = true;
			handler_mask = mask;
		}
	}
	pthread_mutex_unlock(&table_lock);
	/* the handler stays: it passes on every fault that is not ours */
	*ret = NULL; /* the handler's table is process-wide: nothing of the tracker's own */
	return err;
}

static void mprotect_close(struct dirty_tracker *t, void *state)
{
	(void)t;
	(void)state;
}

static void mp_region_free(struct mp_region *m)
{
	if (!m)
		return;
	if (m->bits)
		munmap((void *)m->bits, m->nwords * sizeof(uint64_t));
	free(m);
}

/* ---- stacks ---- */

static bool overlaps(uintptr_t start, uintptr_t end, uintptr_t lo, uintptr_t hi)
{
	return start < hi && lo < end;
}

/* The main thread's stack, from the line of /proc/self/maps named [stack]. */
static bool main_stack(uintptr_t *lo, uintptr_t *hi)
{
	char *text, *line, *save = NULL;
	bool found = false;

	if (dirty_read_file("/proc/self/maps", &text, NULL))
		return false;
	for (line = strtok_r(text, "\n", &save); line && !found;
	     line = strtok_r(NULL, "\n", &save)) {
		uint64_t a, b;
		size_t len = strlen(line);

		if (len > 7 && !strcmp(line + len - 7, "[stack]") &&
		    sscanf(line, "%" SCNx64 "-%" SCNx64, &a, &b) == 2) {
			*lo = (uintptr_t)a;
			*hi = (uintptr_t)b;
			found = true;
		}
	}
	free(text);
	return found;
}

/*
 * Which stack of this process [start, end) holds, if one the library knows
 * of: the calling thread's (pthread's idea of it), its alternate signal
 * stack (the kernel writes signal frames there), the one it is running on
 * now (a coroutine's), or the main thread's.  NULL if none.
 */
static const char *stack_in(uintptr_t start, uintptr_t end)
{
	uintptr_t here = (uintptr_t)__builtin_frame_address(0), lo, hi;
	pthread_attr_t attr;
	stack_t alt;
	void *addr;
	size_t size;

	if (pthread_getattr_np(pthread_self(), &attr) == 0) {
		bool mine = pthread_attr_getstack(&attr, &addr, &size) == 0 &&
			    overlaps(start, end, (uintptr_t)addr, (uintptr_t)addr + size);

		pthread_attr_destroy(&attr);
		if (mine)
			return "the calling thread's stack";
	}
	if (sigaltstack(NULL, &alt) == 0 && !(alt.ss_flags & SS_DISABLE) &&
	    overlaps(start, end, (uintptr_t)alt.ss_sp, (uintptr_t)alt.ss_sp + alt.ss_size))
		return "the calling thread's alternate signal stack";
	if (start <= here && here < end)
		return "the stack the calling thread is running on";
	if (main_stack(&lo, &hi) && overlaps(start, end, lo, hi))
		return "the main thread's stack";
	return NULL;
}

/* ---- degradation ---- */

/* The number of mappings of this process (lines of /proc/self/maps), or 0. */
static size_t count_mappings(void)
{
	char *text;
	size_t len, n = 0;

	if (dirty_read_file("/proc/self/maps", &text, &len))
		return 0;
	for (size_t i = 0; i < len; i++)
		n += text[i] == '\n';
	free(text);
	return n;
}

/*
 * The handler cannot log: the first clean or collect of a region after it
 * degraded says so, once per region, with what it cost so far.  Called with
 * the tracker's lock held.
 */
static void degrade_report(struct dirty_tracker *t, struct mp_region *m)
{
	uint64_t blocks = atomic_load_explicit(&m->degraded, memory_order_relaxed);
	char *limit = NULL;

	if (m->degrade_logged || !blocks)
		return;
	m->degrade_logged = true;
	if (dirty_read_file("/proc/sys/vm/max_map_count", &limit, NULL) == 0)
		limit[strcspn(limit, "\n")] = '\0';
	dirty_log(t, LOG_WARNING,
		  "mprotect: region %#lx-%#lx (%zu pages) degraded: the kernel refused to split "
		  "its mapping further (vm.max_map_count %s, this process has %zu mappings); "
		  "%" PRIu64 " writes unprotected a block instead of a page (%" PRIu64
		  " of them the whole region), %" PRIu64 " pages reported dirty that may not "
		  "have been written; logged once for this region, counted in "
		  "dirty_stats.degraded_blocks",
		  (unsigned long)m->start, (unsigned long)m->end,
		  (size_t)((m->end - m->start) / m->page_size), limit ? limit : "unknown",
		  count_mappings(), blocks,
		  atomic_load_explicit(&m->degraded_whole, memory_order_relaxed),
		  atomic_load_explicit(&m->degraded_pages, memory_order_relaxed));
	free(limit);
}

static int mprotect_track(struct dirty_tracker *t, struct dirty_region *r)
{
	struct mp_region *m;
	const char *stack;
	size_t npages;
	int err;

	if (r->prot < 0) {
		dirty_log(t, LOG_ERR, "mprotect: the range mixes protections");
		return -EINVAL;
	}
	stack = t->pid ? NULL : stack_in(r->start, r->end);
	if (stack) {
		dirty_log(t, LOG_ERR, "mprotect: %#lx-%#lx holds %s: a write to it would fault "
			  "where the SIGSEGV handler cannot run, and kill the process; track it "
			  "with uffd-async or uffd-sync", (unsigned long)r->start,
			  (unsigned long)r->end, stack);
		return -EOPNOTSUPP;
	}
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	npages = (r->end - r->start) / r->page_size;
	*m = (struct mp_region){
		.start = r->start,
		.end = r->end,
		.page_size = r->page_size,
		.prot = r->prot,
		.nwords = (npages + 63) / 64,
	};
	/* zero-filled on demand: a sparse 1 TiB region costs nothing until written */
	m->bits = mmap(NULL, m->nwords * sizeof(uint64_t), PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m->bits == MAP_FAILED) {
		m->bits = NULL;
		mp_region_free(m);
		return -ENOMEM;
	}

	pthread_mutex_lock(&table_lock);
	if (table_overlaps(r->start, r->end)) {
		err = -EEXIST; /* the claims (claims.c) keep this from happening */
		goto fail;
	}
	/* in the table before any page is read-only, so no fault finds it missing */
	err = table_update(m, NULL);
	if (err)
		goto fail;
	if (mprotect((void *)r->start, r->end - r->start, r->prot & ~PROT_WRITE) < 0) {
		/* it may have failed half way (ENOMEM splitting a vma): undo all */
		err = -errno;
		mprotect((void *)r->start, r->end - r->start, r->prot);
		table_remove(m);
		goto fail;
	}
	pthread_mutex_unlock(&table_lock);
	r->priv = m;
	return 0;
fail:
	pthread_mutex_unlock(&table_lock);
	mp_region_free(m);
	return err;
}

static void mprotect_untrack(struct dirty_tracker *t, struct dirty_region *r)
{
	struct mp_region *m = r->priv;

	/*
	 * Writable first, then out of the table: in the other order a write
	 * in between would fault with nobody to handle it.  A region that is
	 * gone is left alone; whatever is mapped there now is not ours.
	 */
	if (!r->gone && mprotect((void *)r->start, r->end - r->start, r->prot) < 0)
		dirty_log(t, LOG_WARNING, "mprotect: cannot restore %#lx-%#lx: %s",
			  (unsigned long)r->start, (unsigned long)r->end, strerror(errno));
	pthread_mutex_lock(&table_lock);
	table_remove(m);
	pthread_mutex_unlock(&table_lock);
	mp_region_free(m);
	r->priv = NULL;
}

static int mprotect_clean(struct dirty_tracker *t, struct dirty_region *r, uintptr_t start,
			  uintptr_t end)
{
	struct mp_region *m = r->priv;

	degrade_report(t, m);
	/* C1 for every page, then C2 for all of them at once */
	dirty_bits_clear_atomic(m->bits, (start - m->start) / m->page_size,
				(end - m->start) / m->page_size);
	if (mprotect((void *)start, end - start, m->prot & ~PROT_WRITE) < 0) {
		/* possibly half done: writable pages must not be left clean */
		int err = -errno;

		bits_set(m, start, end);
		return err;
	}
	return 0;
}

/* C2 for a run that was reported; on failure the run must stay dirty. */
static void reprotect(struct dirty_tracker *t, struct mp_region *m, uintptr_t start, uintptr_t end)
{
	if (mprotect((void *)start, end - start, m->prot & ~PROT_WRITE) == 0)
		return;
	dirty_log(t, LOG_WARNING, "mprotect: cannot re-protect %#lx-%#lx (%s); it stays dirty",
		  (unsigned long)start, (unsigned long)end, strerror(errno));
	bits_set(m, start, end);
}

struct reprotect_ctx {
	struct dirty_tracker *t;
	struct mp_region *m;
};

static void reprotect_cb(void *ctx, uintptr_t start, uintptr_t end)
{
	struct reprotect_ctx *c = ctx;

	reprotect(c->t, c->m, start, end);
}

static int mprotect_collect(struct dirty_tracker *t, struct dirty_region *r, uintptr_t start,
			    uintptr_t end, bool clean, struct dirty_sink *sink, uintptr_t *done)
{
	struct mp_region *m = r->priv;
	struct reprotect_ctx ctx = { t, m };

	degrade_report(t, m);
	if (clean)
		atomic_store_explicit(&m->degraded_since_collect, 0, memory_order_relaxed);
	dirty_page_bits_collect(m->bits, m->start, m->page_size, start, end, clean, sink, done,
				reprotect_cb, &ctx);
	return 0;
}

static void mprotect_redirty(struct dirty_tracker *t, struct dirty_region *r, uintptr_t start,
			     uintptr_t end)
{
	(void)t;
	bits_set(r->priv, start, end);
}

static void mprotect_unprotect(struct dirty_tracker *t, struct dirty_region *r)
{
	struct mp_region *m = r->priv;

	if (mprotect((void *)r->start, r->end - r->start, m->prot) < 0)
		dirty_log(t, LOG_WARNING, "mprotect: cannot unprotect %#lx-%#lx: %s",
			  (unsigned long)r->start, (unsigned long)r->end, strerror(errno));
}

static void mprotect_stats(const struct dirty_region *r, struct dirty_stats *st)
{
	const struct mp_region *m = r->priv;

	st->faults += atomic_load(&m->faults);
	st->degraded_blocks += atomic_load(&m->degraded);
}

/* ---- can it run here ---- */

static int probe_mprotect(pid_t pid, char *why, size_t why_len)
{
	if (pid)
		return dirty_reason(why, why_len, -EOPNOTSUPP,
				    "mprotect tracks the calling process only");
	return dirty_reason(why, why_len, 0,
			    "PROT_READ and a SIGSEGV handler work on any kernel");
}

/* ---- the table ---- */

const struct dirty_backend dirty_backend_mprotect = {
	.name = "mprotect",
	/* a child of fork() inherits the protections: its copies stay claimed */
	.flags = DIRTY_BACKEND_INHERITED | DIRTY_BACKEND_SIGNALS,
	.probe = probe_mprotect,
	.open = mprotect_open,
	.close = mprotect_close,
	.track = mprotect_track,
	.untrack = mprotect_untrack,
	.clean = mprotect_clean,
	.collect = mprotect_collect,
	.redirty = mprotect_redirty,
	.unprotect = mprotect_unprotect,
	.stats = mprotect_stats,
};
