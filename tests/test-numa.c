/* SPDX-License-Identifier: MIT */
/*
 * NUMA: dirty_numa_count() and the node-local staging buffers.
 *
 * Two suites, chosen by DIRTY_TEST_SUITE (unset: both):
 *   api    argument checks, and what this machine answers: the explicit
 *          no-op with its reason on one node, without NUMA support or
 *          without libnuma; exact counts where there are several nodes.
 *   nodes  exact per-node counts: two regions, each bound to a node with
 *          mbind(2), tracked, a known number of their pages written; the
 *          same for another process (a tracker with .pid); staging buffers
 *          on the node of the CPU that asks.  Needs two NUMA nodes: skipped
 *          with the reason on a machine with one, unless
 *          DIRTY_TEST_NUMA_NODES=N says there must be N (the qemu guest of
 *          tests/vm/run-matrix.sh boots with 2), and then fails instead.
 *
 * Linked with the static library: dirty_numa_alloc_local() is internal.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <linux/mempolicy.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "libdirty-int.h"
#include "tap.h"

/* The part of struct dirty_numa_counts that a caller must pass at least. */
#define COUNTS_MIN_SIZE (offsetof(struct dirty_numa_counts, available) + sizeof(int))

#define REASON_NOT_BUILT "built without libnuma"
#define REASON_UNAVAILABLE "the kernel or machine has no NUMA support (numa_available() < 0)"
#define REASON_ONE_NODE "one NUMA node: nothing to tell apart"
#define REASON_REFUSED "the NUMA system calls are refused here" /* : strerror */

static size_t page_size;

/* ---- the machine, as the kernel shows it (without libnuma) ---- */

/* MemTotal of node id in kB, 0 if it has no memory or does not exist. */
static unsigned long sysfs_node_memory(int id)
{
	char path[80], line[256];
	unsigned long kb = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/devices/system/node/node%d/meminfo", id);
	f = fopen(path, "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Node %*d MemTotal: %lu kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

/* Nodes with memory in /sys/devices/system/node: what libnuma counts too. */
static unsigned sysfs_memory_nodes(void)
{
	DIR *d = opendir("/sys/devices/system/node");
	struct dirent *e;
	unsigned n = 0;
	int id;

	if (!d)
		return 0;
	while ((e = readdir(d)))
		if (sscanf(e->d_name, "node%d", &id) == 1)
			n += sysfs_node_memory(id) > 0;
	closedir(d);
	return n;
}

/* The node of a CPU, from the nodeN link in /sys/devices/system/cpu/cpuC/; -1 if none. */
static int sysfs_node_of_cpu(int cpu)
{
	char path[64];
	struct dirent *e;
	int node = -1;
	DIR *d;

	snprintf(path, sizeof(path), "/sys/devices/system/cpu/cpu%d", cpu);
	d = opendir(path);
	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (sscanf(e->d_name, "node%d", &node) == 1)
			break;
	closedir(d);
	return node;
}

/* numa_available() is get_mempolicy(2) failing with ENOSYS. */
static bool kernel_has_numa(void)
{
	return !(syscall(SYS_get_mempolicy, NULL, NULL, 0UL, NULL, 0U) < 0 && errno == ENOSYS);
}

/* DIRTY_TEST_NUMA_NODES: the nodes this machine must have; 0 if unset. */
static unsigned required_nodes(void)
{
	const char *s = getenv("DIRTY_TEST_NUMA_NODES");

	return s && *s ? (unsigned)strtoul(s, NULL, 10) : 0;
}

/* Whether dirty_numa_count() counts here, and if not, the reason it must give. */
static const char *expected_reason(void)
{
	if (!HAVE_LIBNUMA)
		return REASON_NOT_BUILT;
	if (!kernel_has_numa())
		return REASON_UNAVAILABLE;
	if (sysfs_memory_nodes() <= 1)
		return REASON_ONE_NODE;
	if (syscall(SYS_move_pages, 0, 0UL, NULL, NULL, NULL, 0) < 0 ||
	    syscall(SYS_get_mempolicy, NULL, NULL, 0UL, NULL, 0U) < 0)
		return REASON_REFUSED; /* a seccomp filter, say */
	return NULL;
}

/* ---- helpers ---- */

static char *map_pages(size_t npages)
{
	char *mem = mmap(NULL, npages * page_size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ck_assert_ptr_ne(mem, MAP_FAILED);
	/* base pages only: a huge page would be one page to the kernel, many to us */
	madvise(mem, npages * page_size, MADV_NOHUGEPAGE);
	return mem;
}

static void counts_init(struct dirty_numa_counts *c)
{
	memset(c, 0xa5, sizeof(*c));
	c->sz = sizeof(*c);
}

/* The node of each page of [addr, addr + npages pages) of process pid (0: this one). */
static void page_nodes(pid_t pid, char *addr, size_t npages, int *status)
{
	void *pages[npages];

	for (size_t i = 0; i < npages; i++)
		pages[i] = addr + i * page_size;
	ck_assert_int_eq(syscall(SYS_move_pages, pid, (unsigned long)npages, pages, NULL, status, 0),
			 0);
}

/* Bind [mem, mem + npages pages) to node, moving what is there already. */
static void bind_to_node(char *mem, size_t npages, int node)
{
	unsigned long mask = 1UL << node;

	ck_assert_msg(syscall(SYS_mbind, mem, npages * page_size, MPOL_BIND, &mask,
			      sizeof(mask) * 8 + 1, MPOL_MF_MOVE) == 0,
		      "mbind to node %d: %s", node, strerror(errno));
}

static void write_pages(char *mem, size_t first, size_t count)
{
	for (size_t i = first; i < first + count; i++)
		mem[i * page_size + 7] ^= 0x5a;
}

/* Collect and clean the whole of [addr, addr + len), appending its runs to out. */
static size_t collect_into(struct dirty_tracker *t, char *addr, size_t len,
			   struct dirty_range *out, size_t n, size_t max)
{
	void *next = addr;

	while ((char *)next < addr + len) {
		char *from = next;
		ssize_t got = dirty_collect(t, from, (size_t)(addr + len - from), DIRTY_COLLECT_CLEAN,
					    out + n, max - n, &next);

		ck_assert_int_ge(got, 0);
		n += (size_t)got;
		ck_assert_uint_lt(n, max); /* room left: the array was not what stopped it */
	}
	return n;
}

static uint64_t run_pages(const struct dirty_range *runs, size_t n)
{
	uint64_t pages = 0;

	for (size_t i = 0; i < n; i++)
		pages += runs[i].len / page_size;
	return pages;
}

/* A tracker of this process, automatic backend. */
static struct dirty_tracker *tracker_self(void)
{
	struct dirty_tracker *t;

	ck_assert_int_eq(dirty_tracker_new(NULL, &t), 0);
	return t;
}

/*
 * A child that waits for commands: each is a (region base, first page,
 * count) to write; it acknowledges each.  Exits when cmd is closed.
 */
struct child {
	pid_t pid;
	int cmd, ack;
};

struct child_write {
	char *mem;
	size_t first, count;
};

static struct child child_start(void)
{
	struct child c;
	int cmd[2], ack[2];

	ck_assert_int_eq(pipe(cmd), 0);
	ck_assert_int_eq(pipe(ack), 0);
	c.pid = fork();
	ck_assert_int_ge(c.pid, 0);
	if (c.pid == 0) {
		struct child_write w;

		close(cmd[1]);
		close(ack[0]);
		while (read(cmd[0], &w, sizeof(w)) == sizeof(w)) {
			write_pages(w.mem, w.first, w.count);
			if (write(ack[1], "", 1) != 1)
				break;
		}
		_exit(0);
	}
	close(cmd[0]);
	close(ack[1]);
	c.cmd = cmd[1];
	c.ack = ack[0];
	return c;
}

static void child_write(const struct child *c, char *mem, size_t first, size_t count)
{
	struct child_write w = { mem, first, count };
	char byte;

	ck_assert_int_eq(write(c->cmd, &w, sizeof(w)), sizeof(w));
	ck_assert_int_eq(read(c->ack, &byte, 1), 1);
}

static void child_stop(struct child *c)
{
	int status;

	close(c->cmd);
	ck_assert_int_eq(waitpid(c->pid, &status, 0), c->pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(c->ack);
}

/* A tracker of the child, or NULL (and the reason in why) where no backend can track it. */
static struct dirty_tracker *tracker_of(pid_t pid, char *why, size_t why_len)
{
	struct dirty_options opts = { .sz = sizeof(opts), .pid = pid };
	struct dirty_tracker *t;

	if (dirty_backend_probe("auto", pid, why, why_len) != 0)
		return NULL;
	ck_assert_int_eq(dirty_tracker_new(&opts, &t), 0);
	return t;
}

/* ---- api: argument checks ---- */

START_TEST(test_null_arguments)
{
	struct dirty_tracker *t = tracker_self();
	char *mem = map_pages(4);
	struct dirty_range run = { mem, page_size };
	struct dirty_numa_counts c, before;

	counts_init(&c);
	before = c;
	ck_assert_int_eq(dirty_numa_count(NULL, &run, 1, &c), -EINVAL);
	ck_assert_int_eq(dirty_numa_count(t, &run, 1, NULL), -EINVAL);
	ck_assert_int_eq(dirty_numa_count(t, NULL, 1, &c), -EINVAL);
	/* failed calls leave the result alone */
	ck_assert_mem_eq(&c, &before, sizeof(c));
	/* no runs: nothing to count, and no error */
	ck_assert_int_eq(dirty_numa_count(t, NULL, 0, &c), 0);
	ck_assert_uint_eq(c.unknown, 0);
	for (int i = 0; i < DIRTY_NUMA_MAX_NODES; i++)
		ck_assert_uint_eq(c.pages[i], 0);
	dirty_tracker_free(t);
	munmap(mem, 4 * page_size);
}
END_TEST

START_TEST(test_bad_runs)
{
	struct dirty_tracker *t = tracker_self();
	char *mem = map_pages(4);
	const struct dirty_range bad[] = {
		{ mem + 1, page_size },                 /* start not page aligned */
		{ mem, page_size + 1 },                 /* length not page aligned */
		{ mem, 0 },                             /* empty */
		{ (void *)(UINTPTR_MAX - page_size + 1), 2 * page_size }, /* wraps */
	};
	struct dirty_numa_counts c, before;

	counts_init(&c);
	before = c;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		/* a bad run after a good one: nothing is counted */
		struct dirty_range runs[2] = { { mem, 2 * page_size }, bad[i] };

		ck_assert_int_eq(dirty_numa_count(t, &bad[i], 1, &c), -EINVAL);
		ck_assert_int_eq(dirty_numa_count(t, runs, 2, &c), -EINVAL);
		ck_assert_mem_eq(&c, &before, sizeof(c));
	}
	dirty_tracker_free(t);
	munmap(mem, 4 * page_size);
}
END_TEST

START_TEST(test_sizes)
{
	struct dirty_tracker *t = tracker_self();
	char *mem = map_pages(2);
	struct dirty_range run = { mem, 2 * page_size };
	struct {
		struct dirty_numa_counts c;
		unsigned char tail[16];
	} big;
	struct dirty_numa_counts c, before;

	/* too small to hold even available */
	counts_init(&c);
	c.sz = 0;
	before = c;
	ck_assert_int_eq(dirty_numa_count(t, &run, 1, &c), -EINVAL);
	c.sz = COUNTS_MIN_SIZE - 1;
	before.sz = c.sz;
	ck_assert_int_eq(dirty_numa_count(t, &run, 1, &c), -EINVAL);
	ck_assert_mem_eq(&c, &before, sizeof(c));

	/* an older, smaller caller: only its part is written */
	counts_init(&c);
	c.sz = COUNTS_MIN_SIZE;
	before = c;
	ck_assert_int_eq(dirty_numa_count(t, &run, 1, &c), 0);
	ck_assert_uint_eq(c.sz, COUNTS_MIN_SIZE);
	ck_assert_int_eq(c.available, expected_reason() ? 0 : 1);
	ck_assert_mem_eq((char *)&c + COUNTS_MIN_SIZE, (char *)&before + COUNTS_MIN_SIZE,
			 sizeof(c) - COUNTS_MIN_SIZE);

	/* a newer, larger caller with its extra fields zero: fine, sz says what we wrote */
	memset(&big, 0, sizeof(big));
	big.c.sz = sizeof(big);
	ck_assert_int_eq(dirty_numa_count(t, &run, 1, &big.c), 0);
	ck_assert_uint_eq(big.c.sz, sizeof(big.c));
	for (size_t i = 0; i < sizeof(big.tail); i++)
		ck_assert_uint_eq(big.tail[i], 0);

	/* ... and with a non-zero extra field, which we would leave unset: refused */
	memset(&big, 0, sizeof(big));
	big.c.sz = sizeof(big);
	big.tail[5] = 1;
	ck_assert_int_eq(dirty_numa_count(t, &run, 1, &big.c), -EINVAL);
	ck_assert_uint_eq(big.c.sz, sizeof(big));
	ck_assert_int_eq(big.c.available, 0);
	dirty_tracker_free(t);
	munmap(mem, 2 * page_size);
}
END_TEST

/* A fork()ed child's copy of the tracker refuses with -ECHILD. */
START_TEST(test_forked)
{
	struct dirty_tracker *t = tracker_self();
	char *mem = map_pages(2);
	struct dirty_range run = { mem, 2 * page_size };
	struct dirty_numa_counts c;
	int status;
	pid_t pid;

	counts_init(&c);
	ck_assert_int_eq(dirty_numa_count(t, &run, 1, &c), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct dirty_numa_counts before;

		counts_init(&c);
		before = c;
		_exit(dirty_numa_count(t, &run, 1, &c) == -ECHILD &&
				      !memcmp(&c, &before, sizeof(c))
			      ? 0
			      : 1);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);
	dirty_tracker_free(t);
	munmap(mem, 2 * page_size);
}
END_TEST

/* A tracker of another process: counts while it lives, -ESRCH once it has exited. */
START_TEST(test_target_gone)
{
	char *mem = map_pages(4);
	struct dirty_range run = { mem, 4 * page_size };
	struct dirty_numa_counts c, before;
	struct dirty_tracker *t;
	struct child child;
	char why[256];
	int status;

	write_pages(mem, 0, 4);
	child = child_start();
	t = tracker_of(child.pid, why, sizeof(why));
	if (!t) {
		child_stop(&child);
		munmap(mem, 4 * page_size);
		test_skip("no backend tracks another process here: %s", why);
	}
	counts_init(&c);
	ck_assert_int_eq(dirty_numa_count(t, &run, 1, &c), 0);
	ck_assert_int_eq(c.available, expected_reason() ? 0 : 1);

	/* exited, not yet reaped: a zombie has no memory */
	close(child.cmd);
	ck_assert_int_eq(waitid(P_PID, (id_t)child.pid, NULL, WEXITED | WNOWAIT), 0);
	counts_init(&c);
	before = c;
	ck_assert_int_eq(dirty_numa_count(t, &run, 1, &c), -ESRCH);
	ck_assert_mem_eq(&c, &before, sizeof(c));
	/* reaped: no process at all */
	ck_assert_int_eq(waitpid(child.pid, &status, 0), child.pid);
	ck_assert_int_eq(dirty_numa_count(t, &run, 1, &c), -ESRCH);
	ck_assert_mem_eq(&c, &before, sizeof(c));
	close(child.ack);
	dirty_tracker_free(t);
	munmap(mem, 4 * page_size);
}
END_TEST

/* ---- api: what this machine answers ---- */

START_TEST(test_status)
{
	struct dirty_tracker *t = tracker_self();
	const char *reason = expected_reason();
	char *mem = map_pages(8);
	struct dirty_range run = { mem, 8 * page_size };
	struct dirty_numa_counts c;
	uint64_t counted = 0;

	write_pages(mem, 0, 5);
	counts_init(&c);
	ck_assert_int_eq(dirty_numa_count(t, &run, 1, &c), 0);
	ck_assert_uint_eq(c.sz, sizeof(c));
	for (int i = 0; i < DIRTY_NUMA_MAX_NODES; i++)
		counted += c.pages[i];
	if (reason) {
		/* the explicit no-op: nothing counted, and why */
		printf("dirty_numa_count here: not available: %s\n", c.reason);
		ck_assert_int_eq(c.available, 0);
		if (!strcmp(reason, REASON_REFUSED)) /* and why: strerror(3) */
			ck_assert_int_eq(strncmp(c.reason, REASON_REFUSED ": ", strlen(REASON_REFUSED ": ")), 0);
		else
			ck_assert_str_eq(c.reason, reason);
		ck_assert_uint_eq(counted, 0);
		ck_assert_uint_eq(c.unknown, 0);
		if (!strcmp(reason, REASON_ONE_NODE))
			ck_assert_uint_eq(c.nnodes, 1);
		else
			ck_assert_uint_eq(c.nnodes, 0); /* libnuma could not tell */
	} else {
		printf("dirty_numa_count here: %u nodes\n", c.nnodes);
		ck_assert_int_eq(c.available, 1);
		ck_assert_str_eq(c.reason, "");
		ck_assert_uint_eq(c.nnodes, sysfs_memory_nodes());
		ck_assert_uint_eq(counted, 5);
		ck_assert_uint_eq(c.unknown, 3); /* never touched: not present */
	}
	dirty_tracker_free(t);
	munmap(mem, 8 * page_size);
}
END_TEST

START_TEST(test_alloc_local)
{
	size_t len = 3 * page_size + 1; /* not a page multiple: whole pages anyway */
	unsigned char vec[4];
	char *p;

	errno = 0;
	ck_assert_ptr_null(dirty_numa_alloc_local(0));
	ck_assert_int_eq(errno, EINVAL);
	dirty_numa_free(NULL, page_size); /* as free(NULL) */

	p = dirty_numa_alloc_local(len);
	ck_assert_ptr_nonnull(p);
	ck_assert_uint_eq((uintptr_t)p % page_size, 0); /* for O_DIRECT */
	memset(p, 0x3c, 4 * page_size);
	dirty_numa_free(p, len);
	/* gone: mincore(2) says ENOMEM for memory that is not mapped */
	ck_assert_int_eq(mincore(p, 4 * page_size, vec), -1);
	ck_assert_int_eq(errno, ENOMEM);
}
END_TEST

/* ---- nodes: exact counts on two nodes ---- */

/* NULL if the nodes suite can run here, else why not. */
static const char *nodes_missing(char *why, size_t len)
{
	const char *reason = expected_reason();
	unsigned nodes = sysfs_memory_nodes();

	if (reason)
		snprintf(why, len, "%s (%u node%s with memory in /sys/devices/system/node)", reason,
			 nodes, nodes == 1 ? "" : "s");
	else if (nodes < 2)
		snprintf(why, len, "%u nodes", nodes);
	else
		return NULL;
	return why;
}

/* Each case of the nodes suite skips, with the reason, where it cannot run. */
static void require_nodes(void)
{
	char why[256];

	if (nodes_missing(why, sizeof(why)))
		test_skip("per-node counts need two NUMA nodes: %s", why);
}

#define REGION_PAGES 1536 /* 6 MiB: counts cross move_pages batches */

/* Two regions, the first bound to node 0, the second to node 1, every page present. */
static void map_two_nodes(char **a, char **b)
{
	int status[REGION_PAGES];

	*a = map_pages(REGION_PAGES);
	*b = map_pages(REGION_PAGES);
	bind_to_node(*a, REGION_PAGES, 0);
	bind_to_node(*b, REGION_PAGES, 1);
	write_pages(*a, 0, REGION_PAGES);
	write_pages(*b, 0, REGION_PAGES);
	/* the test's own premise, from the kernel */
	page_nodes(0, *a, REGION_PAGES, status);
	for (size_t i = 0; i < REGION_PAGES; i++)
		ck_assert_int_eq(status[i], 0);
	page_nodes(0, *b, REGION_PAGES, status);
	for (size_t i = 0; i < REGION_PAGES; i++)
		ck_assert_int_eq(status[i], 1);
}

static void assert_counts(const struct dirty_numa_counts *c, uint64_t node0, uint64_t node1,
			  uint64_t unknown)
{
	ck_assert_int_eq(c->available, 1);
	ck_assert_str_eq(c->reason, "");
	ck_assert_uint_eq(c->nnodes, sysfs_memory_nodes());
	ck_assert_uint_eq(c->pages[0], node0);
	ck_assert_uint_eq(c->pages[1], node1);
	for (int i = 2; i < DIRTY_NUMA_MAX_NODES; i++)
		ck_assert_uint_eq(c->pages[i], 0);
	ck_assert_uint_eq(c->unknown, unknown);
}

/*
 * Written: region a pages [0, 600) and [1000, 1100): 700 pages on node 0;
 * region b pages [3, 520): 517 pages on node 1.
 */
#define WRITTEN_NODE0 700
#define WRITTEN_NODE1 517

START_TEST(test_count_self)
{
	static struct dirty_range runs[256];
	struct dirty_tracker *t = tracker_self();
	struct dirty_numa_counts c;
	char *a, *b, *untouched;
	size_t n = 0;

	require_nodes();
	map_two_nodes(&a, &b);
	ck_assert_int_eq(dirty_track(t, a, REGION_PAGES * page_size), 0);
	ck_assert_int_eq(dirty_track(t, b, REGION_PAGES * page_size), 0);
	write_pages(a, 0, 600);
	write_pages(a, 1000, 100);
	write_pages(b, 3, 517);
	n = collect_into(t, a, REGION_PAGES * page_size, runs, n, 256);
	n = collect_into(t, b, REGION_PAGES * page_size, runs, n, 256);
	ck_assert_uint_eq(run_pages(runs, n), WRITTEN_NODE0 + WRITTEN_NODE1);
	counts_init(&c);
	ck_assert_int_eq(dirty_numa_count(t, runs, n, &c), 0);
	assert_counts(&c, WRITTEN_NODE0, WRITTEN_NODE1, 0);

	/* pages not present (never touched) and not mapped are unknown */
	untouched = map_pages(5);
	munmap(untouched + 3 * page_size, 2 * page_size);
	runs[0] = (struct dirty_range){ a + 10 * page_size, 10 * page_size };
	runs[1] = (struct dirty_range){ untouched, 5 * page_size };
	runs[2] = (struct dirty_range){ b, page_size };
	counts_init(&c);
	ck_assert_int_eq(dirty_numa_count(t, runs, 3, &c), 0);
	assert_counts(&c, 10, 1, 5);

	dirty_tracker_free(t);
	munmap(untouched, 3 * page_size);
	munmap(a, REGION_PAGES * page_size);
	munmap(b, REGION_PAGES * page_size);
}
END_TEST

/*
 * The same in a child, tracked from here (.pid).  The child's copies of
 * the regions keep their binding across fork(); the pages it writes are
 * its own copies, allocated on the bound node.
 */
START_TEST(test_count_other_process)
{
	static struct dirty_range runs[256];
	struct dirty_numa_counts c;
	struct dirty_tracker *t;
	struct child child;
	int status[REGION_PAGES];
	char *a, *b, why[256];
	size_t n = 0;

	require_nodes();
	map_two_nodes(&a, &b);
	child = child_start();
	t = tracker_of(child.pid, why, sizeof(why));
	if (!t) {
		child_stop(&child);
		/*
		 * in the guest every kernel with uffd-async or soft-dirty tracks
		 * another process; arm64 before 6.10 has neither (mprotect only)
		 */
		ck_assert_msg(!required_nodes() ||
				      (dirty_backend_probe("uffd-async", 0, NULL, 0) &&
				       dirty_backend_probe("soft-dirty", 0, NULL, 0)),
			      "no backend tracks another process: %s", why);
		munmap(a, REGION_PAGES * page_size);
		munmap(b, REGION_PAGES * page_size);
		test_skip("no backend tracks another process here: %s", why);
	}
	ck_assert_int_eq(dirty_track(t, a, REGION_PAGES * page_size), 0);
	ck_assert_int_eq(dirty_track(t, b, REGION_PAGES * page_size), 0);
	child_write(&child, a, 0, 600);
	child_write(&child, a, 1000, 100);
	child_write(&child, b, 3, 517);
	/* our own writes are not the child's */
	write_pages(a, 700, 50);
	n = collect_into(t, a, REGION_PAGES * page_size, runs, n, 256);
	n = collect_into(t, b, REGION_PAGES * page_size, runs, n, 256);
	ck_assert_uint_eq(run_pages(runs, n), WRITTEN_NODE0 + WRITTEN_NODE1);
	counts_init(&c);
	ck_assert_int_eq(dirty_numa_count(t, runs, n, &c), 0);
	assert_counts(&c, WRITTEN_NODE0, WRITTEN_NODE1, 0);
	/* the premise: the child's copies are where the binding says */
	page_nodes(child.pid, b + 3 * page_size, 517, status);
	for (size_t i = 0; i < 517; i++)
		ck_assert_int_eq(status[i], 1);
	child_stop(&child);
	dirty_tracker_free(t);
	munmap(a, REGION_PAGES * page_size);
	munmap(b, REGION_PAGES * page_size);
}
END_TEST

static void run_on_cpu(int cpu)
{
	cpu_set_t one;

	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	ck_assert_int_eq(sched_setaffinity(0, sizeof(one), &one), 0);
	ck_assert_int_eq(sched_getcpu(), cpu);
}

/*
 * A staging buffer is on the node of the CPU that asked for it, on every
 * CPU, even when a CPU of another node first touches it (plain memory would
 * be placed where it is first touched).
 */
START_TEST(test_alloc_on_each_cpu)
{
	int ncpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
	int status[4], tested = 0;
	cpu_set_t saved;

	require_nodes();
	ck_assert_int_eq(sched_getaffinity(0, sizeof(saved), &saved), 0);
	for (int cpu = 0; cpu < ncpus && cpu < CPU_SETSIZE; cpu++) {
		int node = sysfs_node_of_cpu(cpu), toucher = -1;
		char *p;

		/* a CPU of a node without memory gets memory from elsewhere */
		if (!CPU_ISSET(cpu, &saved) || node < 0 || !sysfs_node_memory(node))
			continue;
		for (int other = 0; other < ncpus && other < CPU_SETSIZE && toucher < 0; other++)
			if (CPU_ISSET(other, &saved) && sysfs_node_of_cpu(other) != node)
				toucher = other;
		if (toucher < 0)
			continue;
		run_on_cpu(cpu);
		p = dirty_numa_alloc_local(4 * page_size);
		ck_assert_ptr_nonnull(p);
		ck_assert_uint_eq((uintptr_t)p % page_size, 0);
		run_on_cpu(toucher);
		memset(p, 1, 4 * page_size);
		page_nodes(0, p, 4, status);
		for (int i = 0; i < 4; i++)
			ck_assert_msg(status[i] == node,
				      "allocated on cpu %d (node %d), touched on cpu %d: page %d on node %d",
				      cpu, node, toucher, i, status[i]);
		dirty_numa_free(p, 4 * page_size);
		tested++;
	}
	ck_assert_int_eq(sched_setaffinity(0, sizeof(saved), &saved), 0);
	ck_assert_int_ge(tested, 2); /* a CPU of each of two nodes */
}
END_TEST

/* ---- the suites ---- */

static Suite *api_suite(void)
{
	Suite *s = suite_create("api");
	TCase *tc = tcase_create("arguments");

	tcase_add_test(tc, test_null_arguments);
	tcase_add_test(tc, test_bad_runs);
	tcase_add_test(tc, test_sizes);
	tcase_add_test(tc, test_forked);
	tcase_add_test(tc, test_target_gone);
	suite_add_tcase(s, tc);
	tc = tcase_create("machine");
	tcase_add_test(tc, test_status);
	tcase_add_test(tc, test_alloc_local);
	suite_add_tcase(s, tc);
	return s;
}

static Suite *nodes_suite(void)
{
	Suite *s = suite_create("nodes");
	TCase *tc = tcase_create("nodes");

	tcase_add_test(tc, test_count_self);
	tcase_add_test(tc, test_count_other_process);
	tcase_add_test(tc, test_alloc_on_each_cpu);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	const char *suite = getenv("DIRTY_TEST_SUITE");
	bool api, nodes;
	unsigned required = required_nodes();
	SRunner *sr = NULL;
	char why[256];

	tap_begin();
	page_size = (size_t)sysconf(_SC_PAGESIZE);
	if (suite && !*suite)
		suite = NULL; /* set but empty: both */
	api = !suite || !strcmp(suite, "api");
	nodes = !suite || !strcmp(suite, "nodes");
	if (!api && !nodes) {
		fprintf(stderr, "DIRTY_TEST_SUITE must be api or nodes, not %s\n", suite);
		return EXIT_FAILURE;
	}
	if (required && sysfs_memory_nodes() != required) {
		printf("FAIL: DIRTY_TEST_NUMA_NODES=%u, but /sys/devices/system/node has %u nodes with memory\n",
		       required, sysfs_memory_nodes());
		return EXIT_FAILURE;
	}
	if (nodes && nodes_missing(why, sizeof(why))) {
		if (required) {
			printf("FAIL: DIRTY_TEST_NUMA_NODES=%u, but per-node counts cannot run: %s\n",
			       required, why);
			return EXIT_FAILURE;
		}
		/* the nodes suite alone: nothing to run; with the api suite: its cases skip */
		if (!api)
			tap_skip_all("per-node counts need two NUMA nodes: %s", why);
	}
	if (api)
		sr = srunner_create(api_suite());
	if (nodes) {
		if (sr)
			srunner_add_suite(sr, nodes_suite());
		else
			sr = srunner_create(nodes_suite());
	}
	return tap_run(sr);
}
