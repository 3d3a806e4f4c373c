/* SPDX-License-Identifier: MIT */
/* NUMA: on which node the pages of dirty runs live; staging buffers on the local node. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "config.h"
#include "libdirty-int.h"

#if HAVE_LIBNUMA
#include <numa.h>
#include <numaif.h>
#endif

/* What this machine offers, found once per process: it does not change while we run. */
enum numa_mode {
	NUMA_NOT_BUILT,   /* built without libnuma */
	NUMA_UNAVAILABLE, /* numa_available() < 0: no NUMA support in the kernel */
	NUMA_REFUSED,     /* the NUMA system calls fail (a seccomp filter) */
	NUMA_ONE_NODE,    /* nothing to tell apart */
	NUMA_NODES,       /* several nodes: count them */
};

static enum numa_mode numa_mode;
static unsigned numa_nnodes; /* 0 where libnuma cannot tell */
static char numa_refused[96];
static pthread_once_t numa_once = PTHREAD_ONCE_INIT;

static void numa_init_mode(void)
{
#if HAVE_LIBNUMA
	int n;

	if (numa_available() < 0) {
		numa_mode = NUMA_UNAVAILABLE;
		return;
	}
	n = numa_num_configured_nodes(); /* the nodes with memory, from sysfs */
	numa_nnodes = n > 0 ? (unsigned)n : 0;
	if (n <= 1) {
		numa_mode = NUMA_ONE_NODE;
		return;
	}
	/*
	 * numa_available() only tells ENOSYS.  A container's seccomp filter
	 * may refuse these calls with EPERM: every count would then fail, and
	 * libnuma would print its own failures to stderr.  Neither call asks
	 * for anything here.
	 */
	if (move_pages(0, 0, NULL, NULL, NULL, 0) < 0 ||
	    get_mempolicy(NULL, NULL, 0, NULL, 0) < 0) {
		snprintf(numa_refused, sizeof(numa_refused),
			 "the NUMA system calls are refused here: %s", strerror(errno));
		numa_mode = NUMA_REFUSED;
		return;
	}
	numa_mode = NUMA_NODES;
#else
	numa_mode = NUMA_NOT_BUILT;
#endif
}

static enum numa_mode numa_get_mode(void)
{
	pthread_once(&numa_once, numa_init_mode);
	return numa_mode;
}

/* ---- counting ---- */

/* The part of struct dirty_numa_counts that a caller must pass at least. */
#define COUNTS_MIN_SIZE (offsetof(struct dirty_numa_counts, available) + sizeof(int))

/*
 * Pages per move_pages(2) call: the kernel walks them 16 at a time anyway
 * (DO_PAGES_STAT_CHUNK_NR), so a larger batch only saves system calls;
 * 512 keeps the arrays at 6 KiB of stack.
 */
#define NUMA_BATCH 512

/*
 * 0 while t's process lives.  move_pages(2) of no pages finds the target's
 * address space and does nothing else: ESRCH if the process is gone, EINVAL
 * if it has no memory any more (a zombie), as kill(2) cannot tell; an exec,
 * in the pagemap the tracker keeps open.
 */
static int target_alive(struct dirty_tracker *t)
{
	if (!t->pid)
		return 0;
	if (syscall(SYS_move_pages, t->pid, 0UL, NULL, NULL, NULL, 0) < 0) {
		if (errno == ESRCH || errno == EINVAL)
			return -ESRCH;
		/* ENOSYS: a kernel without CONFIG_MIGRATION; EPERM: seccomp, say */
		if (kill(t->pid, 0) < 0 && errno == ESRCH)
			return -ESRCH;
	}
	return dirty_tracker_target_alive(t);
}

#if HAVE_LIBNUMA
/* Ask the kernel for the nodes of pages[0..n) and add them to c. */
static int count_batch(pid_t pid, void **pages, int *status, size_t n,
		       struct dirty_numa_counts *c)
{
	/* nodes NULL: only the status of each page is asked, nothing moves */
	if (move_pages(pid, n, pages, NULL, status, 0) < 0) {
		/*
		 * The arguments are ours and valid: EINVAL for another process
		 * means it has no memory any more (a zombie).
		 */
		if (pid && (errno == ESRCH || errno == EINVAL))
			return -ESRCH;
		return -errno;
	}
	for (size_t i = 0; i < n; i++) {
		/* < 0: -ENOENT not present (or the zero page), -EFAULT not mapped */
		if (status[i] >= 0 && status[i] < DIRTY_NUMA_MAX_NODES)
			c->pages[status[i]]++;
		else
			c->unknown++;
	}
	return 0;
}

static int count_runs(pid_t pid, const struct dirty_range *runs, size_t nruns,
		      struct dirty_numa_counts *c)
{
	size_t page = dirty_page_size(), n = 0;
	void *pages[NUMA_BATCH];
	int status[NUMA_BATCH];
	int err;

	for (size_t i = 0; i < nruns; i++) {
		uintptr_t a = (uintptr_t)runs[i].start, end = a + runs[i].len;

		for (; a < end; a += page) {
			pages[n++] = (void *)a;
			if (n < NUMA_BATCH)
				continue;
			err = count_batch(pid, pages, status, n, c);
			if (err)
				return err;
			n = 0;
		}
	}
	return n ? count_batch(pid, pages, status, n, c) : 0;
}
#endif

static int numa_count_call(struct dirty_tracker *t, const struct dirty_range *runs,
			   size_t nruns, struct dirty_numa_counts *ret)
{
	struct dirty_numa_counts counts;
	size_t page = dirty_page_size();
	const char *reason;
	int err;

	/* a newer caller's extra fields must be zero: we would leave them unset */
	if (!t || !ret || (!runs && nruns) ||
	    dirty_sized_check(ret, ret->sz, COUNTS_MIN_SIZE, sizeof(*ret)))
		return -EINVAL;
	if (dirty_tracker_forked(t))
		return -ECHILD;
	for (size_t i = 0; i < nruns; i++) {
		uintptr_t a = (uintptr_t)runs[i].start;
		size_t len = runs[i].len;

		/* the end must be an address: a run may not wrap, nor end at 2^64 */
		if (!len || (a & (page - 1)) || (len & (page - 1)) || len > UINTPTR_MAX - a)
			return -EINVAL;
	}
	err = target_alive(t);
	if (err)
		return err;

	memset(&counts, 0, sizeof(counts));
	switch (numa_get_mode()) {
	case NUMA_NOT_BUILT:
		reason = "built without libnuma";
		break;
	case NUMA_UNAVAILABLE:
		reason = "the kernel or machine has no NUMA support (numa_available() < 0)";
		break;
	case NUMA_REFUSED:
		reason = numa_refused;
		break;
	case NUMA_ONE_NODE:
		reason = "one NUMA node: nothing to tell apart";
		break;
	default:
		reason = NULL;
		break;
	}
	counts.nnodes = numa_nnodes;
	if (reason) {
		snprintf(counts.reason, sizeof(counts.reason), "%s", reason);
	} else {
#if HAVE_LIBNUMA
		err = count_runs(t->pid, runs, nruns, &counts);
		if (err)
			return err;
		counts.available = 1;
#endif
	}
	dirty_sized_out(ret, &counts, sizeof(counts));
	return 0;
}

/* ---- staging buffers ---- */

/*
 * What this relies on in libnuma (numa(3)): numa_alloc_onnode() and
 * numa_alloc_local() return whole pages from mmap(2) (the size "will be
 * rounded up to a multiple of the system page size"), so the buffer is
 * page aligned for O_DIRECT, and their memory is freed with numa_free().
 * Which of mmap and libnuma allocated is decided by the mode, which is fixed
 * for the life of the process, so dirty_numa_free() always matches.
 */
void *dirty_numa_alloc_local(size_t len)
{
	void *p;

	if (!len) {
		errno = EINVAL;
		return NULL;
	}
#if HAVE_LIBNUMA
	if (numa_get_mode() == NUMA_NODES) {
		int cpu = sched_getcpu();
		int node = cpu >= 0 ? numa_node_of_cpu(cpu) : -1;
		bool allowed = false;

		/*
		 * numa_alloc_onnode() binds with mbind(2), which refuses a node
		 * that our cpuset denies or that has no memory (a CPU-only
		 * node); libnuma then prints to stderr, and a library must not.
		 * Such a node gets "local" allocation instead.
		 */
		if (node >= 0) {
			struct bitmask *mems = numa_get_mems_allowed();

			allowed = mems && numa_bitmask_isbitset(mems, (unsigned)node);
			numa_bitmask_free(mems);
		}
		/* NULL only when mmap(2) failed, with its errno */
		return allowed ? numa_alloc_onnode(len, node) : numa_alloc_local(len);
	}
#endif
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

void dirty_numa_free(void *p, size_t len)
{
	if (!p)
		return;
#if HAVE_LIBNUMA
	if (numa_get_mode() == NUMA_NODES) {
		numa_free(p, len);
		return;
	}
#endif
	munmap(p, len);
}

DIRTY_EXPORT int dirty_numa_count(struct dirty_tracker *t, const struct dirty_range *runs,
				  size_t nruns, struct dirty_numa_counts *ret)
{
	int err = dirty_tracker_enter(t);

	if (err)
		return err;
	err = numa_count_call(t, runs, nruns, ret);
	dirty_tracker_leave(t);
	return err;
}
