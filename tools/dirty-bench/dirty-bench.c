/* SPDX-License-Identifier: MIT */
/*
 * dirty-bench: libdirty's backends against the raw kernel primitives and the
 * naive snapshot-and-compare method, side by side, in one run.
 *
 * A cycle is: write one byte to each page of a set (by 1 or 2 writer threads),
 * then collect-and-clean.  The first clean is part of setup; each collect-and-
 * clean leaves the memory clean for the next cycle.  Every cycle's answer is
 * compared with the set of pages written: a wrong answer aborts the run.
 *
 * The reference implementations (raw:*, snapshot+memcmp) use no library code:
 * they are what a user would write by hand.
 *
 * --mapping measures a shared buffer (memfd, MAP_SHARED|MAP_ANONYMOUS): the
 * mapping backend (/dev/dirtymap, kernel/) by address and by file, its raw
 * DIRTYMAP_IOC_CLEAN_RECORD ioctl, uffd-async and snapshot+memcmp, also with
 * the writer in another process.  Without the device its rows are skipped
 * with the reason.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench-dump.h"
#include "bench-report.h"
#include "json.h"
#include "libdirty.h"
#include "linux-compat.h"
#include "../../kernel/include/uapi/linux/dirtymap.h" /* the uapi of kernel/ */

static size_t page_size;

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static _Noreturn void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "\ndirty-bench: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(1);
}

/* ---- bitmaps of pages ---- */

struct pageset {
	size_t npages;
	uint64_t *bits;
};

static void pageset_init(struct pageset *s, size_t npages)
{
	s->npages = npages;
	s->bits = calloc((npages + 63) / 64, sizeof(uint64_t));
	if (!s->bits)
		die("out of memory");
}

static void pageset_clear(struct pageset *s)
{
	memset(s->bits, 0, (s->npages + 63) / 64 * sizeof(uint64_t));
}

static void pageset_add_range(struct pageset *s, size_t first, size_t last)
{
	for (size_t i = first; i < last; i++)
		s->bits[i / 64] |= UINT64_C(1) << (i % 64);
}

/* ---- the run under measurement ---- */

struct run {
	const struct bench_case *c;
	char *mem;            /* the tracked memory */
	size_t len, npages;
	char *map_base;       /* what to munmap (sparse: the reservation) */
	size_t map_len;
	int fd;               /* memfd or file; -1 for anonymous memory */
	int shm_fd;           /* shared-anon: its file, from /proc/self/map_files, or -1 */
	struct pageset found; /* the method's answer for a cycle */
	void *state;          /* the method's own */
};

struct method {
	const char *name;
	/* NULL if it can run for this case, else why not */
	const char *(*unavailable)(const struct bench_case *c);
	void (*setup)(struct run *r);   /* track and clean */
	void (*collect)(struct run *r); /* collect-and-clean into r->found */
	void (*teardown)(struct run *r);
	bool pin_same_cpu, pin_cross_cpu; /* writers vs a handler thread */
	unsigned tracker_flags;           /* libdirty methods */
	bool superset;                    /* may report unwritten pages (adaptive) */
	int warmup;                       /* cycles before measuring; 0 means 1 */
	bool shared;                      /* one of --mapping's methods */
	bool other_process;               /* sees writes by another process */
};

/* ---- libdirty ---- */

struct lib_state {
	struct dirty_tracker *t;
	struct dirty_range *runs;
	struct dirty_file_range *file_runs; /* libdirty:mapping/file */
	size_t max;
};

static const char *lib_backend(const struct run *r);
struct method;
static const struct method *current_method;

static const char *lib_unavailable_for(const char *backend, const struct bench_case *c)
{
	/* one answer per backend, kept for the results that point at it */
	static struct {
		const char *backend;
		char why[300];
		bool usable;
	} cache[8];
	size_t i;

	(void)c;
	for (i = 0; i < 8 && cache[i].backend && strcmp(cache[i].backend, backend); i++)
		;
	if (i == 8)
		die("too many backends");
	if (!cache[i].backend) {
		cache[i].backend = backend;
		cache[i].usable = dirty_backend_probe(backend, 0, cache[i].why,
						      sizeof(cache[i].why)) == 0;
	}
	return cache[i].usable ? NULL : cache[i].why;
}

static void lib_setup(struct run *r)
{
	struct dirty_options opts = {
		.sz = sizeof(opts),
		.backend = lib_backend(r),
		.flags = current_method->tracker_flags | (r->c->sparse ? DIRTY_TRACKER_SPARSE : 0),
	};
	struct lib_state *s = calloc(1, sizeof(*s));
	int err;

	err = dirty_tracker_new(&opts, &s->t);
	if (err)
		die("dirty_tracker_new(%s): %s", opts.backend, strerror(-err));
	err = dirty_track(s->t, r->mem, r->len);
	if (err)
		die("dirty_track: %s", strerror(-err));
	s->max = r->npages / 2 + 1; /* the most runs a set of pages can make */
	s->runs = malloc(s->max * sizeof(*s->runs));
	if (!s->runs)
		die("out of memory");
	r->state = s;
}

static void lib_collect(struct run *r)
{
	struct lib_state *s = r->state;
	ssize_t n = dirty_collect(s->t, r->mem, r->len, DIRTY_COLLECT_CLEAN, s->runs, s->max, NULL);

	if (n < 0)
		die("dirty_collect: %s", strerror((int)-n));
	for (ssize_t i = 0; i < n; i++) {
		size_t first = (size_t)((char *)s->runs[i].start - r->mem) / page_size;

		pageset_add_range(&r->found, first, first + s->runs[i].len / page_size);
	}
}

static void lib_teardown(struct run *r)
{
	struct lib_state *s = r->state;

	dirty_untrack(s->t, r->mem, r->len);
	dirty_tracker_free(s->t);
	free(s->runs);
	free(s);
}

static const char *lib_uffd_async_unavailable(const struct bench_case *c)
{
	return lib_unavailable_for("uffd-async", c);
}

static const char *lib_uffd_sync_unavailable(const struct bench_case *c)
{
	if (!strcmp(c->memory, "file"))
		return "refuses regular files: the kernel has no synchronous write-protection for them";
	return lib_unavailable_for("uffd-sync", c);
}

static const char *lib_soft_dirty_unavailable(const struct bench_case *c)
{
	return lib_unavailable_for("soft-dirty", c);
}

static const char *lib_mprotect_unavailable(const struct bench_case *c)
{
	return lib_unavailable_for("mprotect", c);
}

/* ---- raw (A): userfaultfd WP_ASYNC + PAGEMAP_SCAN ---- */

struct uffd_async_state {
	int uffd, pagemap;
	struct page_region *vec;
	size_t vec_len;
};

static int raw_userfaultfd(int flags)
{
	int fd = (int)syscall(SYS_userfaultfd, flags | O_CLOEXEC | UFFD_USER_MODE_ONLY);

	if (fd < 0 && errno == EINVAL)
		fd = (int)syscall(SYS_userfaultfd, flags | O_CLOEXEC);
	return fd;
}

static const char *raw_uffd_async_unavailable(const struct bench_case *c)
{
	static char why[128];
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_WP_ASYNC };
	int fd = raw_userfaultfd(O_NONBLOCK);

	(void)c;
	if (fd < 0 || ioctl(fd, UFFDIO_API, &api) < 0) {
		snprintf(why, sizeof(why), "no userfaultfd WP_ASYNC: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return why;
	}
	close(fd);
	return NULL;
}

static void pagemap_scan_all(struct uffd_async_state *s, struct run *r, uint64_t flags, bool record)
{
	struct pm_scan_arg arg = {
		.size = sizeof(arg),
		.flags = flags,
		.start = (uintptr_t)r->mem,
		.end = (uintptr_t)r->mem + r->len,
		.vec = flags == PM_SCAN_WP_MATCHING && !record ? 0 : (uintptr_t)s->vec,
		.vec_len = flags == PM_SCAN_WP_MATCHING && !record ? 0 : s->vec_len,
		.category_mask = PAGE_IS_WRITTEN,
		.return_mask = PAGE_IS_WRITTEN,
	};

	/* a sparse reservation: leave holes alone (see DIRTY_TRACKER_SPARSE) */
	if (r->c->sparse) {
		arg.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
		arg.category_inverted = PAGE_IS_PFNZERO;
		arg.category_mask = PAGE_IS_WRITTEN | PAGE_IS_PFNZERO;
		if (!arg.vec) {
			arg.vec = (uintptr_t)s->vec;
			arg.vec_len = s->vec_len;
		}
	}
	while (arg.start < arg.end) {
		int n = ioctl(s->pagemap, PAGEMAP_SCAN, &arg);
		uint64_t resume = arg.walk_end;

		if (n < 0)
			die("PAGEMAP_SCAN: %s", strerror(errno));
		for (int i = 0; record && i < n; i++) {
			pageset_add_range(&r->found, (size_t)(s->vec[i].start - (uintptr_t)r->mem) / page_size,
					  (size_t)(s->vec[i].end - (uintptr_t)r->mem) / page_size);
			if (s->vec[i].end > resume)
				resume = s->vec[i].end;
		}
		arg.start = resume;
	}
}

static void raw_uffd_async_setup(struct run *r)
{
	struct uffd_async_state *s = calloc(1, sizeof(*s));
	struct uffdio_api api = { .api = UFFD_API,
				  .features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED |
					      UFFD_FEATURE_WP_HUGETLBFS_SHMEM };
	struct uffdio_register reg = { .range = { (uintptr_t)r->mem, r->len },
				       .mode = UFFDIO_REGISTER_MODE_WP };

	s->uffd = raw_userfaultfd(O_NONBLOCK);
	s->pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (s->uffd < 0 || ioctl(s->uffd, UFFDIO_API, &api) < 0 || s->pagemap < 0 ||
	    ioctl(s->uffd, UFFDIO_REGISTER, &reg) < 0)
		die("raw uffd-async setup: %s", strerror(errno));
	s->vec_len = 4096;
	s->vec = malloc(s->vec_len * sizeof(*s->vec));
	r->state = s;
	pagemap_scan_all(s, r, PM_SCAN_WP_MATCHING, false);
}

static void raw_uffd_async_collect(struct run *r)
{
	pagemap_scan_all(r->state, r, PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC, true);
}

static void raw_uffd_async_teardown(struct run *r)
{
	struct uffd_async_state *s = r->state;

	close(s->uffd);
	close(s->pagemap);
	free(s->vec);
	free(s);
}

/* ---- raw (B): synchronous userfaultfd WP with a handler thread ---- */

struct uffd_sync_state {
	int uffd;
	pthread_t handler;
	_Atomic uint64_t *bits;
	char *mem;
	atomic_bool stop;
	int cpu; /* -1: unpinned */
};

static const char *raw_uffd_sync_unavailable_up_to(const struct bench_case *c, double max)
{
	static char why[128];
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_PAGEFAULT_FLAG_WP };
	int fd;

	if (c->sparse)
		return "a sync handler thread per fault: not run on the sparse case";
	if (!strcmp(c->memory, "file"))
		return "synchronous userfaultfd write-protection does not take regular files";
	/* tens of microseconds a fault: the time limit of a default run */
	if (c->fraction > max) {
		snprintf(why, sizeof(why), "run at <= %g%% dirty only (a fault costs 7-70 us)",
			 max * 100);
		return why;
	}
	fd = raw_userfaultfd(O_NONBLOCK);
	if (fd < 0 || ioctl(fd, UFFDIO_API, &api) < 0) {
		snprintf(why, sizeof(why), "no userfaultfd write-protect: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return why;
	}
	close(fd);
	return NULL;
}

static const char *raw_uffd_sync_same_unavailable(const struct bench_case *c)
{
	return raw_uffd_sync_unavailable_up_to(c, 0.1);
}

static const char *raw_uffd_sync_cross_unavailable(const struct bench_case *c)
{
	return raw_uffd_sync_unavailable_up_to(c, 0.01);
}

static void pin_to_cpu(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

/* Read fault events in batches; record the page and un-protect it (waking the writer). */
static void *uffd_sync_handler(void *p)
{
	struct uffd_sync_state *s = p;
	struct uffd_msg msgs[64];
	struct pollfd pfd = { .fd = s->uffd, .events = POLLIN };

	pin_to_cpu(s->cpu);
	while (!atomic_load(&s->stop)) {
		ssize_t n;

		if (poll(&pfd, 1, 50) <= 0)
			continue;
		n = read(s->uffd, msgs, sizeof(msgs));
		for (ssize_t i = 0; n > 0 && i < n / (ssize_t)sizeof(msgs[0]); i++) {
			uintptr_t addr = (uintptr_t)msgs[i].arg.pagefault.address & ~(page_size - 1);
			size_t page = (addr - (uintptr_t)s->mem) / page_size;
			struct uffdio_writeprotect wp = { .range = { addr, page_size }, .mode = 0 };

			if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			atomic_fetch_or(&s->bits[page / 64], UINT64_C(1) << (page % 64));
			if (ioctl(s->uffd, UFFDIO_WRITEPROTECT, &wp) < 0 && errno != ENOENT)
				die("UFFDIO_WRITEPROTECT (unprotect): %s", strerror(errno));
		}
	}
	return NULL;
}

static void uffd_sync_protect(struct uffd_sync_state *s, uintptr_t start, size_t len)
{
	struct uffdio_writeprotect wp = { .range = { start, len },
					  .mode = UFFDIO_WRITEPROTECT_MODE_WP };

	if (ioctl(s->uffd, UFFDIO_WRITEPROTECT, &wp) < 0)
		die("UFFDIO_WRITEPROTECT: %s", strerror(errno));
}

static void raw_uffd_sync_setup_on(struct run *r, int cpu)
{
	struct uffd_sync_state *s = calloc(1, sizeof(*s));
	struct uffdio_api api = { .api = UFFD_API,
				  .features = UFFD_FEATURE_PAGEFAULT_FLAG_WP |
					      UFFD_FEATURE_WP_HUGETLBFS_SHMEM };
	struct uffdio_register reg = { .range = { (uintptr_t)r->mem, r->len },
				       .mode = UFFDIO_REGISTER_MODE_WP };

	s->uffd = raw_userfaultfd(O_NONBLOCK);
	if (s->uffd < 0 || ioctl(s->uffd, UFFDIO_API, &api) < 0 ||
	    ioctl(s->uffd, UFFDIO_REGISTER, &reg) < 0)
		die("raw uffd-sync setup: %s", strerror(errno));
	s->bits = calloc((r->npages + 63) / 64, sizeof(uint64_t));
	s->mem = r->mem;
	s->cpu = cpu;
	uffd_sync_protect(s, (uintptr_t)r->mem, r->len);
	pthread_create(&s->handler, NULL, uffd_sync_handler, s);
	r->state = s;
}

static void raw_uffd_sync_setup_same(struct run *r)
{
	raw_uffd_sync_setup_on(r, 0);
}

static void raw_uffd_sync_setup_cross(struct run *r)
{
	raw_uffd_sync_setup_on(r, 1);
}

/* Take the bits, then re-protect what was taken (a write between is in a reported page). */
static void take_bits_and_reprotect(_Atomic uint64_t *bits, struct run *r,
				    void (*protect)(void *ctx, uintptr_t start, size_t len),
				    void *ctx)
{
	size_t run_start = 0, run_end = 0;

	for (size_t w = 0; w < (r->npages + 63) / 64; w++) {
		uint64_t v = atomic_load_explicit(&bits[w], memory_order_relaxed);

		if (!v)
			continue;
		v = atomic_fetch_and(&bits[w], ~v) & v;
		r->found.bits[w] |= v;
		while (v) {
			size_t b = (size_t)__builtin_ctzll(v), page = w * 64 + b;

			v &= v - 1;
			if (page != run_end) {
				if (run_end)
					protect(ctx, (uintptr_t)r->mem + run_start * page_size,
						(run_end - run_start) * page_size);
				run_start = page;
			}
			run_end = page + 1;
		}
	}
	if (run_end)
		protect(ctx, (uintptr_t)r->mem + run_start * page_size,
			(run_end - run_start) * page_size);
}

static void uffd_sync_protect_cb(void *ctx, uintptr_t start, size_t len)
{
	uffd_sync_protect(ctx, start, len);
}

static void raw_uffd_sync_collect(struct run *r)
{
	struct uffd_sync_state *s = r->state;

	take_bits_and_reprotect(s->bits, r, uffd_sync_protect_cb, s);
}

static void raw_uffd_sync_teardown(struct run *r)
{
	struct uffd_sync_state *s = r->state;

	atomic_store(&s->stop, true);
	pthread_join(s->handler, NULL);
	close(s->uffd);
	free((void *)s->bits);
	free(s);
}

/* ---- raw (C): mprotect + SIGSEGV ---- */

static struct {
	char *mem;
	size_t len;
	_Atomic uint64_t *bits;
	struct sigaction previous;
} raw_mp;

static void raw_mp_handler(int sig, siginfo_t *info, void *context)
{
	uintptr_t addr = (uintptr_t)info->si_addr & ~(page_size - 1);
	size_t page;

	(void)sig, (void)context;
	if (addr < (uintptr_t)raw_mp.mem || addr >= (uintptr_t)raw_mp.mem + raw_mp.len)
		abort();
	page = (addr - (uintptr_t)raw_mp.mem) / page_size;
	if (mprotect((void *)addr, page_size, PROT_READ | PROT_WRITE) < 0) {
		/*
		 * vm.max_map_count: the kernel will not split the mapping
		 * again.  The least a hand-written tracker must do not to
		 * loop forever: give the whole region back, all of it dirty.
		 */
		mprotect(raw_mp.mem, raw_mp.len, PROT_READ | PROT_WRITE);
		for (size_t w = 0; w < (raw_mp.len / page_size + 63) / 64; w++)
			atomic_store(&raw_mp.bits[w], UINT64_MAX);
		if (raw_mp.len / page_size % 64)
			atomic_store(&raw_mp.bits[raw_mp.len / page_size / 64],
				     (UINT64_C(1) << (raw_mp.len / page_size % 64)) - 1);
		return;
	}
	atomic_fetch_or(&raw_mp.bits[page / 64], UINT64_C(1) << (page % 64));
}

static const char *raw_mprotect_unavailable(const struct bench_case *c)
{
	(void)c;
	return NULL;
}

static void raw_mprotect_setup(struct run *r)
{
	struct sigaction sa = { .sa_sigaction = raw_mp_handler, .sa_flags = SA_SIGINFO };

	raw_mp.mem = r->mem;
	raw_mp.len = r->len;
	raw_mp.bits = mmap(NULL, (r->npages + 63) / 64 * 8, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &raw_mp.previous);
	if (mprotect(r->mem, r->len, PROT_READ) < 0)
		die("mprotect: %s", strerror(errno));
}

static void mprotect_cb(void *ctx, uintptr_t start, size_t len)
{
	(void)ctx;
	if (mprotect((void *)start, len, PROT_READ) < 0)
		die("mprotect: %s", strerror(errno));
}

static void raw_mprotect_collect(struct run *r)
{
	take_bits_and_reprotect(raw_mp.bits, r, mprotect_cb, NULL);
}

static void raw_mprotect_teardown(struct run *r)
{
	mprotect(r->mem, r->len, PROT_READ | PROT_WRITE);
	sigaction(SIGSEGV, &raw_mp.previous, NULL);
	munmap((void *)raw_mp.bits, (r->npages + 63) / 64 * 8);
	memset(&raw_mp, 0, sizeof(raw_mp));
}

/* ---- (D): snapshot + memcmp ---- */

static const char *snapshot_unavailable(const struct bench_case *c)
{
	if (c->sparse)
		return "would copy and compare the whole reservation";
	return NULL;
}

static void snapshot_setup(struct run *r)
{
	char *copy = mmap(NULL, r->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (copy == MAP_FAILED)
		die("snapshot: %s", strerror(errno));
	memcpy(copy, r->mem, r->len);
	r->state = copy;
}

static void snapshot_collect(struct run *r)
{
	char *copy = r->state;

	for (size_t i = 0; i < r->npages; i++) {
		if (memcmp(r->mem + i * page_size, copy + i * page_size, page_size)) {
			memcpy(copy + i * page_size, r->mem + i * page_size, page_size);
			r->found.bits[i / 64] |= UINT64_C(1) << (i % 64);
		}
	}
}

static void snapshot_teardown(struct run *r)
{
	munmap(r->state, r->len);
}

/* ---- (E): soft-dirty ---- */

#define PM_SOFT_DIRTY (UINT64_C(1) << 55)

struct soft_dirty_state {
	int clear_refs, pagemap;
	uint64_t *entries;
};

static void soft_dirty_clear(struct soft_dirty_state *s)
{
	if (pwrite(s->clear_refs, "4", 1, 0) != 1)
		die("clear_refs: %s", strerror(errno));
}

static const char *raw_soft_dirty_unavailable(const struct bench_case *c)
{
	static const char *answer;
	static bool probed;
	char *page;
	uint64_t entry = 0;
	int cr, pm;

	(void)c;
	if (probed)
		return answer;
	probed = true;
	page = mmap(NULL, page_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
	pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	page[0] = 1;
	if (cr < 0 || pm < 0 || write(cr, "4", 1) != 1) {
		answer = "cannot write /proc/self/clear_refs";
	} else {
		page[0] = 2;
		if (pread(pm, &entry, 8, (off_t)((uintptr_t)page / page_size * 8)) != 8 ||
		    !(entry & PM_SOFT_DIRTY))
			answer = "the kernel does not implement soft-dirty (CONFIG_MEM_SOFT_DIRTY)";
	}
	if (cr >= 0)
		close(cr);
	if (pm >= 0)
		close(pm);
	munmap(page, page_size);
	return answer;
}

static void raw_soft_dirty_setup(struct run *r)
{
	struct soft_dirty_state *s = calloc(1, sizeof(*s));

	s->clear_refs = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
	s->pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	s->entries = malloc(r->npages * sizeof(uint64_t));
	soft_dirty_clear(s);
	r->state = s;
}

static void raw_soft_dirty_collect(struct run *r)
{
	struct soft_dirty_state *s = r->state;
	off_t off = (off_t)((uintptr_t)r->mem / page_size * 8);

	if (pread(s->pagemap, s->entries, r->npages * 8, off) != (ssize_t)(r->npages * 8))
		die("pagemap: %s", strerror(errno));
	for (size_t i = 0; i < r->npages; i++)
		if (s->entries[i] & PM_SOFT_DIRTY)
			r->found.bits[i / 64] |= UINT64_C(1) << (i % 64);
	soft_dirty_clear(s);
}

static void raw_soft_dirty_teardown(struct run *r)
{
	struct soft_dirty_state *s = r->state;

	close(s->clear_refs);
	close(s->pagemap);
	free(s->entries);
	free(s);
}

/* ---- mapping: /dev/dirtymap (kernel/), shared memory only ---- */

/*
 * The kernel's clean-and-record of every shared mapping of a range of a
 * shmem file.  It sees every process's writes; here the writers are threads
 * of this process, so that it is measured on the workloads of the others.
 */

static bool shared_memory(const struct bench_case *c)
{
	return !c->sparse && (!strcmp(c->memory, "memfd") || !strcmp(c->memory, "shared-anon"));
}

static int map_files_open(const void *addr, size_t len)
{
	char path[96];

	snprintf(path, sizeof(path), "/proc/self/map_files/%lx-%lx", (unsigned long)(uintptr_t)addr,
		 (unsigned long)((uintptr_t)addr + len));
	return open(path, O_RDWR | O_CLOEXEC);
}

/*
 * The file behind shared memory, opened through /proc/self/map_files, which
 * takes CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE: what the library's
 * dirty_track() does under mapping, and the only descriptor of shared
 * anonymous memory there is.
 */
static const char *map_files_unavailable(void)
{
	static char why[200];
	static const char *answer;
	static bool probed;
	void *page;
	int fd;

	if (probed)
		return answer;
	probed = true;
	page = mmap(NULL, page_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	fd = page == MAP_FAILED ? -1 : map_files_open(page, page_size);
	if (fd < 0) {
		snprintf(why, sizeof(why),
			 "cannot open the file of shared memory through /proc/self/map_files: %s "
			 "(needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE)", strerror(errno));
		answer = why;
	} else {
		close(fd);
	}
	if (page != MAP_FAILED)
		munmap(page, page_size);
	return answer;
}

/* A writable descriptor of the tracked memory's file (-1: none). */
static int run_fd(const struct run *r)
{
	return r->fd >= 0 ? r->fd : r->shm_fd;
}

static const char *lib_mapping_unavailable_for(const struct bench_case *c, bool by_address)
{
	const char *why;

	if (!shared_memory(c))
		return "tracks shared memory only (memfd, MAP_SHARED|MAP_ANONYMOUS)";
	why = lib_unavailable_for("mapping", c);
	if (!why && (by_address || !strcmp(c->memory, "shared-anon")))
		why = map_files_unavailable();
	return why;
}

/* dirty_track() + dirty_collect(): finds the file behind the addresses itself */
static const char *lib_mapping_unavailable(const struct bench_case *c)
{
	return lib_mapping_unavailable_for(c, true);
}

/* dirty_track_file() + dirty_collect_file(): given the descriptor */
static const char *lib_mapping_file_unavailable(const struct bench_case *c)
{
	return lib_mapping_unavailable_for(c, false);
}

static void lib_file_setup(struct run *r)
{
	struct dirty_options opts = { .sz = sizeof(opts), .backend = "mapping" };
	struct lib_state *s = calloc(1, sizeof(*s));
	int err;

	err = dirty_tracker_new(&opts, &s->t);
	if (err)
		die("dirty_tracker_new(mapping): %s", strerror(-err));
	err = dirty_track_file(s->t, run_fd(r), 0, r->len);
	if (err)
		die("dirty_track_file: %s", strerror(-err));
	s->max = r->npages / 2 + 1;
	s->file_runs = malloc(s->max * sizeof(*s->file_runs));
	if (!s->file_runs)
		die("out of memory");
	r->state = s;
}

static void lib_file_collect(struct run *r)
{
	struct lib_state *s = r->state;
	uint64_t next = 0;

	do {
		ssize_t n = dirty_collect_file(s->t, run_fd(r), next, r->len - next,
					       DIRTY_COLLECT_CLEAN, s->file_runs, s->max, &next);

		if (n < 0)
			die("dirty_collect_file: %s", strerror((int)-n));
		for (ssize_t i = 0; i < n; i++) {
			size_t first = (size_t)(s->file_runs[i].offset / page_size);

			pageset_add_range(&r->found, first, first + s->file_runs[i].len / page_size);
		}
	} while (next < r->len);
}

static void lib_file_teardown(struct run *r)
{
	struct lib_state *s = r->state;

	dirty_untrack_file(s->t, run_fd(r), 0, r->len);
	dirty_tracker_free(s->t);
	free(s->file_runs);
	free(s);
}

/* raw: a kernel tracker of the memfd, DIRTYMAP_IOC_COLLECT straight into the answer's bitmap */

struct raw_mapping_state {
	int dev, tracker;
};

/* A kernel tracker of npages pages of fd, or -errno; its semantics in *semantics. */
static int raw_mapping_track(int dev, int fd, uint64_t npages, uint64_t *semantics)
{
	struct dirtymap_track a = {
		.fd = fd, .flags = DIRTYMAP_TRACK_CLOEXEC, .length = npages * page_size,
	};
	int tracker = ioctl(dev, DIRTYMAP_IOC_TRACK, &a);

	if (semantics)
		*semantics = a.semantics;
	return tracker < 0 ? -errno : tracker;
}

static const char *raw_mapping_unavailable(const struct bench_case *c)
{
	static char why[200];
	static const char *answer;
	static bool probed;

	if (!shared_memory(c))
		return "tracks shared memory only (memfd, MAP_SHARED|MAP_ANONYMOUS)";
	if (!probed) {
		int dev = open("/dev/dirtymap", O_RDWR | O_CLOEXEC), fd = -1, t = -1;

		probed = true;
		if (dev < 0) {
			snprintf(why, sizeof(why), "cannot open /dev/dirtymap: %s%s", strerror(errno),
				 errno == ENOENT ? " (kernel/'s dirtymap.ko is not loaded)" : "");
		} else {
			fd = memfd_create("dirty-bench-probe", MFD_CLOEXEC);
			if (fd < 0 || ftruncate(fd, (off_t)page_size) < 0)
				snprintf(why, sizeof(why), "memfd: %s", strerror(errno));
			else if ((t = raw_mapping_track(dev, fd, 1, NULL)) < 0)
				snprintf(why, sizeof(why), "DIRTYMAP_IOC_TRACK: %s%s", strerror(-t),
					 t == -ENOTTY ? " (version 1 of the module: load kernel/'s "
							"dirtymap.ko again)" : "");
			else
				why[0] = '\0';
		}
		answer = why[0] ? why : NULL;
		if (t >= 0)
			close(t);
		if (fd >= 0)
			close(fd);
		if (dev >= 0)
			close(dev);
	}
	if (answer)
		return answer;
	return strcmp(c->memory, "shared-anon") ? NULL : map_files_unavailable();
}

/* record: into the answer's bitmap; else a clean, reported nowhere */
static void raw_mapping_call(struct raw_mapping_state *s, struct run *r, bool record)
{
	struct dirtymap_collect arg = {
		.length = r->npages * page_size,
		.bitmap = record ? (uintptr_t)r->found.bits : 0,
		.flags = DIRTYMAP_COLLECT_CLEAN,
	};

	if (ioctl(s->tracker, DIRTYMAP_IOC_COLLECT, &arg) < 0)
		die("DIRTYMAP_IOC_COLLECT: %s", strerror(errno));
}

static void raw_mapping_setup(struct run *r)
{
	struct raw_mapping_state *s = calloc(1, sizeof(*s));

	if (!s)
		die("raw mapping setup: out of memory");
	s->dev = open("/dev/dirtymap", O_RDWR | O_CLOEXEC);
	if (s->dev < 0)
		die("raw mapping setup: /dev/dirtymap: %s", strerror(errno));
	s->tracker = raw_mapping_track(s->dev, run_fd(r), r->npages, NULL);
	if (s->tracker < 0)
		die("raw mapping setup: DIRTYMAP_IOC_TRACK: %s", strerror(-s->tracker));
	r->state = s;
	raw_mapping_call(s, r, false); /* the first clean */
}

static void raw_mapping_collect(struct run *r)
{
	raw_mapping_call(r->state, r, true);
}

static void raw_mapping_teardown(struct run *r)
{
	struct raw_mapping_state *s = r->state;

	close(s->tracker);
	close(s->dev);
	free(s);
}

/* ---- the methods, in table order ---- */

static const struct method methods[] = {
	{ "libdirty:uffd-async", lib_uffd_async_unavailable, lib_setup, lib_collect, lib_teardown,
	  .shared = true },
	{ "libdirty:uffd-sync", lib_uffd_sync_unavailable, lib_setup, lib_collect, lib_teardown },
	{ "libdirty:soft-dirty", lib_soft_dirty_unavailable, lib_setup, lib_collect, lib_teardown },
	{ "libdirty:mprotect", lib_mprotect_unavailable, lib_setup, lib_collect, lib_teardown,
	  .superset = true /* vm.max_map_count degradation */ },
	{ "libdirty:mapping", lib_mapping_unavailable, lib_setup, lib_collect, lib_teardown,
	  .shared = true, .other_process = true },
	{ "libdirty:mapping/file", lib_mapping_file_unavailable, lib_file_setup, lib_file_collect,
	  lib_file_teardown, .shared = true, .other_process = true },
	{ "libdirty:uffd-async/adaptive", lib_uffd_async_unavailable, lib_setup, lib_collect,
	  lib_teardown, .tracker_flags = DIRTY_TRACKER_ADAPTIVE, .superset = true, .warmup = 4 },
	{ "libdirty:mprotect/adaptive", lib_mprotect_unavailable, lib_setup, lib_collect,
	  lib_teardown, .tracker_flags = DIRTY_TRACKER_ADAPTIVE, .superset = true, .warmup = 4 },
	{ "raw:uffd-async", raw_uffd_async_unavailable, raw_uffd_async_setup,
	  raw_uffd_async_collect, raw_uffd_async_teardown, .shared = true },
	{ "raw:uffd-sync/same-cpu", raw_uffd_sync_same_unavailable, raw_uffd_sync_setup_same,
	  raw_uffd_sync_collect, raw_uffd_sync_teardown, .pin_same_cpu = true },
	{ "raw:uffd-sync/cross-cpu", raw_uffd_sync_cross_unavailable, raw_uffd_sync_setup_cross,
	  raw_uffd_sync_collect, raw_uffd_sync_teardown, .pin_cross_cpu = true },
	{ "raw:mprotect", raw_mprotect_unavailable, raw_mprotect_setup, raw_mprotect_collect,
	  raw_mprotect_teardown, .superset = true },
	{ "raw:soft-dirty", raw_soft_dirty_unavailable, raw_soft_dirty_setup,
	  raw_soft_dirty_collect, raw_soft_dirty_teardown },
	{ "raw:mapping", raw_mapping_unavailable, raw_mapping_setup, raw_mapping_collect,
	  raw_mapping_teardown, .shared = true, .other_process = true },
	{ "snapshot+memcmp", snapshot_unavailable, snapshot_setup, snapshot_collect,
	  snapshot_teardown, .shared = true, .other_process = true },
};

#define NMETHODS (sizeof(methods) / sizeof(methods[0]))

static const char *lib_backend(const struct run *r)
{
	static char name[32];

	(void)r;
	snprintf(name, sizeof(name), "%s", strchr(current_method->name, ':') + 1);
	name[strcspn(name, "/")] = '\0';
	return name;
}

/* ---- memory ---- */

#define SPARSE_CHUNKS 64

static void memory_map(struct run *r, const struct bench_case *c, const char *dir)
{
	char path[4096];
	int flags = MAP_SHARED;

	r->fd = -1;
	r->shm_fd = -1;
	r->len = c->size;
	r->npages = c->size / page_size;
	if (!strcmp(c->memory, "memfd")) {
		r->fd = memfd_create("dirty-bench", MFD_CLOEXEC);
	} else if (!strcmp(c->memory, "file")) {
		snprintf(path, sizeof(path), "%s/dirty-bench-XXXXXX", dir);
		r->fd = mkstemp(path);
		if (r->fd >= 0)
			unlink(path);
	} else if (!strcmp(c->memory, "shared-anon")) {
		flags = MAP_SHARED | MAP_ANONYMOUS;
	} else {
		flags = MAP_PRIVATE | MAP_ANONYMOUS | (c->sparse ? MAP_NORESERVE : 0);
	}
	if (!(flags & MAP_ANONYMOUS) && (r->fd < 0 || ftruncate(r->fd, (off_t)r->len) < 0))
		die("cannot create %s memory: %s", c->memory, strerror(errno));
	r->mem = mmap(NULL, r->len, PROT_READ | PROT_WRITE, flags, r->fd, 0);
	if (r->mem == MAP_FAILED)
		die("mmap %zu bytes of %s: %s", r->len, c->memory, strerror(errno));
	/* its file, for the mapping methods that take a descriptor (-1 if not allowed) */
	if (!strcmp(c->memory, "shared-anon"))
		r->shm_fd = map_files_open(r->mem, r->len);
	r->map_base = r->mem;
	r->map_len = r->len;
	if (!strcmp(c->memory, "anon"))
		madvise(r->mem, r->len, c->thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	/* populate what the case touches: every page, or the sparse chunks */
	if (!c->sparse) {
		memset(r->mem, 0, r->len);
	} else {
		size_t chunk = c->touched / SPARSE_CHUNKS, stride = r->len / SPARSE_CHUNKS;

		for (size_t i = 0; i < SPARSE_CHUNKS; i++)
			memset(r->mem + i * stride, 0, chunk);
	}
	pageset_init(&r->found, r->npages);
}

static void memory_unmap(struct run *r)
{
	munmap(r->map_base, r->map_len);
	if (r->fd >= 0)
		close(r->fd);
	if (r->shm_fd >= 0)
		close(r->shm_fd);
	free(r->found.bits);
}

/* The pages a case may write: all of them, or the sparse chunks. */
static size_t *touchable_pages(const struct bench_case *c, size_t *count)
{
	size_t npages = c->size / page_size, n = c->touched / page_size, *all;

	all = malloc(n * sizeof(*all));
	if (!all)
		die("out of memory");
	if (!c->sparse) {
		for (size_t i = 0; i < n; i++)
			all[i] = i;
	} else {
		size_t per = n / SPARSE_CHUNKS, stride = npages / SPARSE_CHUNKS;

		for (size_t i = 0; i < n; i++)
			all[i] = (i / per) * stride + i % per;
	}
	*count = n;
	return all;
}

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/*
 * Choose this cycle's pages: k scattered pages, or runs of 64 pages, by a
 * partial shuffle of the touchable pages (or of 64-page blocks of them).
 */
static size_t choose_pages(const struct bench_case *c, size_t *all, size_t nall, size_t *out)
{
	size_t k = (size_t)llround(c->fraction * (double)nall), n = 0;

	if (k < 1)
		k = 1;
	if (!strcmp(c->pattern, "runs")) {
		size_t run = k < 64 ? k : 64, nblocks = nall / 64, want = k / run;

		for (size_t i = 0; i < want && i < nblocks; i++) {
			size_t j = i + rng() % (nblocks - i), tmp = all[i * 64];

			/* swap whole blocks by their first page index: blocks are contiguous */
			all[i * 64] = all[j * 64];
			all[j * 64] = tmp;
			for (size_t p = 0; p < run; p++)
				out[n++] = all[i * 64] + p;
		}
		return n;
	}
	for (size_t i = 0; i < k; i++) {
		size_t j = i + rng() % (nall - i), tmp = all[i];

		all[i] = all[j];
		all[j] = tmp;
		out[n++] = all[i];
	}
	return n;
}

/* ---- writer threads ---- */

/* Writer threads, or writer processes (forked; then this is in shared memory). */
struct writers {
	int n;
	bool process;
	pthread_t threads[2];
	pid_t pids[2];
	pthread_barrier_t start, done;
	char *mem;
	const size_t *pages;
	size_t count;
	bool quit;
	int cpu;
};

struct writer_slot {
	struct writers *w;
	int index;
};

static struct writer_slot slots[2];

static void *writer_main(void *p)
{
	struct writer_slot *slot = p;
	struct writers *w = slot->w;

	pin_to_cpu(w->cpu);
	for (;;) {
		pthread_barrier_wait(&w->start);
		if (w->quit)
			return NULL;
		size_t first = w->count * (size_t)slot->index / (size_t)w->n;
		size_t last = w->count * (size_t)(slot->index + 1) / (size_t)w->n;

		for (size_t i = first; i < last; i++)
			((volatile char *)w->mem)[w->pages[i] * page_size] += 1;
		pthread_barrier_wait(&w->done);
	}
}

static void writers_start(struct writers *w, int n, char *mem, int cpu, bool process)
{
	pthread_barrierattr_t attr;

	*w = (struct writers){ .n = n, .mem = mem, .cpu = cpu, .process = process };
	pthread_barrierattr_init(&attr);
	if (process)
		pthread_barrierattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
	pthread_barrier_init(&w->start, &attr, (unsigned)n + 1);
	pthread_barrier_init(&w->done, &attr, (unsigned)n + 1);
	pthread_barrierattr_destroy(&attr);
	for (int i = 0; i < n; i++) {
		slots[i] = (struct writer_slot){ .w = w, .index = i };
		if (!process) {
			pthread_create(&w->threads[i], NULL, writer_main, &slots[i]);
			continue;
		}
		fflush(NULL);
		w->pids[i] = fork();
		if (w->pids[i] < 0)
			die("fork: %s", strerror(errno));
		if (!w->pids[i]) {
			/* writes through its own page tables: the memory is MAP_SHARED */
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			writer_main(&slots[i]);
			_exit(0);
		}
	}
}

static void writers_run(struct writers *w, const size_t *pages, size_t count)
{
	w->pages = pages;
	w->count = count;
	pthread_barrier_wait(&w->start);
	pthread_barrier_wait(&w->done);
}

static void writers_stop(struct writers *w)
{
	w->quit = true;
	pthread_barrier_wait(&w->start);
	for (int i = 0; i < w->n; i++)
		if (w->process)
			waitpid(w->pids[i], NULL, 0);
		else
			pthread_join(w->threads[i], NULL);
	pthread_barrier_destroy(&w->start);
	pthread_barrier_destroy(&w->done);
}

/* ---- measuring one method on one case ---- */

struct options {
	bool quick;
	double budget_ms;  /* measured time per method and case, after warm-up */
	int max_cycles;
	const char *dir;   /* for file-backed memory */
	const char *only;  /* run only methods whose name contains this */
	bool mapping;      /* --mapping: shared memory, the mapping backend's comparison */
	size_t size;       /* --size: bytes of memory per case (--mapping), 0 for the default */
};

static size_t resident_bytes(void)
{
	unsigned long size = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (f) {
		if (fscanf(f, "%lu %lu", &size, &resident) != 2)
			resident = 0;
		fclose(f);
	}
	return resident * page_size;
}

static int compare_doubles(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), compare_doubles);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/*
 * Exact, or with allow_extra: every page written reported, and the pages
 * reported but not written counted (returned).
 */
static size_t check_answer(const struct run *r, const struct pageset *want, const struct method *m,
			   int cycle, bool allow_extra)
{
	const char *method = m->name;
	size_t extra = 0;

	for (size_t w = 0; w < (r->npages + 63) / 64; w++) {
		uint64_t diff = r->found.bits[w] ^ want->bits[w];

		if (allow_extra) {
			extra += (size_t)__builtin_popcountll(diff & r->found.bits[w]);
			diff &= want->bits[w];
		}
		if (diff) {
			size_t page = w * 64 + (size_t)__builtin_ctzll(diff);

			die("WRONG ANSWER: %s, %s %zuM %s, cycle %d: page %zu was %s but %s",
			    method, r->c->memory, r->len >> 20, r->c->pattern, cycle, page,
			    want->bits[w] >> (page % 64) & 1 ? "written" : "not written",
			    r->found.bits[w] >> (page % 64) & 1 ? "reported" : "not reported");
		}
	}
	return extra;
}

#define MAX_CYCLES 64

static void measure(const struct method *m, const struct bench_case *c, const struct options *o,
		    struct bench_result *res)
{
	double writes[MAX_CYCLES], collects[MAX_CYCLES], cycles[MAX_CYCLES], spent = 0, t0, t1, t2;
	size_t nall, *all = touchable_pages(c, &nall), *pages;
	size_t count = 0, rss_before, extra_pages = 0;
	struct pageset want;
	struct writers *w, threads;
	struct run r = { .c = c };
	int n = 0, cycle;

	/* a writer process reads its pages and barriers from shared memory */
	if (c->process) {
		w = mmap(NULL, sizeof(*w), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		pages = mmap(NULL, nall * sizeof(*pages), PROT_READ | PROT_WRITE,
			     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if (w == MAP_FAILED || pages == MAP_FAILED)
			die("out of memory");
	} else {
		w = &threads;
		pages = malloc(nall * sizeof(*pages));
	}

	memory_map(&r, c, o->dir);
	pageset_init(&want, r.npages);
	current_method = m;
	writers_start(w, c->threads, r.mem, m->pin_same_cpu || m->pin_cross_cpu ? 0 : -1, c->process);
	/* the benchmark's own bitmaps are resident before the method's state is counted */
	pageset_clear(&want);
	pageset_clear(&r.found);
	rss_before = resident_bytes();
	t0 = now_ms();
	m->setup(&r);
	res->setup_ms = now_ms() - t0;

	int warmup = m->warmup ? m->warmup : 1;

	for (cycle = 0; n < o->max_cycles && (n < 1 || spent < o->budget_ms); cycle++) {
		count = choose_pages(c, all, nall, pages);
		pageset_clear(&want);
		pageset_clear(&r.found);
		for (size_t i = 0; i < count; i++)
			want.bits[pages[i] / 64] |= UINT64_C(1) << (pages[i] % 64);
		t0 = now_ms();
		writers_run(w, pages, count);
		t1 = now_ms();
		m->collect(&r);
		t2 = now_ms();
		/*
		 * File memory that the page cache maps with huge pages is
		 * tracked a huge page at a time by userfaultfd: a write to a
		 * protected huge mapping is resolved by dropping the mapping,
		 * and the page is mapped again whole and unprotected
		 * (documented in libdirty.h).  Every page written must still
		 * be reported; the extra ones are counted and shown.
		 */
		extra_pages += check_answer(&r, &want, m, cycle,
					    m->superset || !strcmp(c->memory, "file"));
		if (cycle < warmup)
			continue;
		writes[n] = t1 - t0;
		collects[n] = t2 - t1;
		cycles[n] = t2 - t0;
		spent += t2 - t0;
		n++;
	}
	if (extra_pages && !m->superset)
		printf("note: %s, %s %zuM %g%%: %zu pages reported beyond those written in %d cycles "
		       "(huge-page granularity of file memory)\n",
		       m->name, c->memory, c->size >> 20, c->fraction * 100, extra_pages, cycle);
	res->library_bytes = resident_bytes() > rss_before ? resident_bytes() - rss_before : 0;
	m->teardown(&r);
	writers_stop(w);
	memory_unmap(&r);
	free(want.bits);
	free(all);
	if (c->process) {
		munmap(w, sizeof(*w));
		munmap(pages, nall * sizeof(*pages));
	} else {
		free(pages);
	}

	res->ok = true;
	res->cycles = n;
	res->pages_per_cycle = count;
	res->write_ns_per_page = median(writes, n) * 1e6 / (double)count;
	res->collect_ms = median(collects, n);
	res->cycle_ms = median(cycles, n);
}

/* ---- the cases ---- */

#define MiB (UINT64_C(1) << 20)
#define GiB (UINT64_C(1) << 30)

struct case_list {
	struct bench_case *v;
	size_t n, cap;
	bool *chart; /* this case starts a fraction sweep worth a chart */
};

static void add_case(struct case_list *l, struct bench_case c)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 32;
		l->v = realloc(l->v, l->cap * sizeof(*l->v));
	}
	if (!c.touched)
		c.touched = c.size;
	l->v[l->n++] = c;
}

static void add_sweep(struct case_list *l, struct bench_case c, const double *fractions, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		c.fraction = fractions[i];
		add_case(l, c);
	}
}

static void default_cases(struct case_list *l, bool quick)
{
	static const double all[] = { 0.001, 0.01, 0.1, 1.0 };
	static const double low[] = { 0.001, 0.01, 0.1 };
	static const double some[] = { 0.01, 0.1 };
	struct bench_case base = { .memory = "anon", .size = quick ? 64 * MiB : 1 * GiB,
				   .pattern = "scattered", .threads = 1 };
	struct bench_case c;

	add_sweep(l, base, all, 4); /* the chart */
	if (quick) {
		c = base, c.memory = "memfd";
		add_sweep(l, c, some, 1);
		c = base, c.memory = "shared-anon";
		add_sweep(l, c, some, 1);
		c = base, c.pattern = "runs", c.threads = 2;
		add_sweep(l, c, some, 1);
		c = base, c.sparse = true, c.size = 64 * GiB, c.touched = 16 * MiB, c.fraction = 0.01;
		add_case(l, c);
		return;
	}
	c = base, c.pattern = "runs";
	add_sweep(l, c, low, 3);
	c = base, c.fraction = 0.01;
	c.size = 64 * MiB, add_case(l, c);
	c.size = 256 * MiB, add_case(l, c);
	c.size = 4 * GiB, add_case(l, c);
	c = base, c.memory = "memfd";
	add_sweep(l, c, all, 4);
	c = base, c.memory = "file";
	add_sweep(l, c, some, 2);
	c = base, c.threads = 2;
	add_sweep(l, c, some, 2);
	c = base, c.thp = true;
	add_sweep(l, c, all, 4);
	/* sparse: 1 TiB reserved, 256 MiB touched; and the plain 256 MiB to compare */
	c = base, c.sparse = true, c.size = 1024 * GiB, c.touched = 256 * MiB, c.fraction = 0.01;
	add_case(l, c);
}

/*
 * --mapping: one shared buffer (a memfd, and MAP_SHARED|MAP_ANONYMOUS),
 * tracked by the mapping backend both ways in, by the raw ioctl, by
 * uffd-async and by snapshot+memcmp, at five dirty fractions; and a writer
 * in another process, which only mapping and snapshot+memcmp can see.
 */
static void mapping_cases(struct case_list *l, size_t size)
{
	static const double all[] = { 0.001, 0.01, 0.03, 0.1, 1.0 };
	static const double some[] = { 0.01, 0.1 };
	struct bench_case base = { .memory = "memfd", .size = size, .pattern = "scattered",
				   .threads = 1 };
	struct bench_case c;

	add_sweep(l, base, all, 5);
	c = base, c.memory = "shared-anon";
	add_sweep(l, c, all, 5);
	c = base, c.pattern = "runs";
	add_sweep(l, c, some, 2);
	c = base, c.threads = 2;
	add_sweep(l, c, some, 2);
	/* what mapping is for: the writer is another process */
	c = base, c.process = true;
	add_sweep(l, c, some, 2);
}

/* ---- main ---- */

/* The machine as a JSON object: the header line, and "machine" in --json. */
static const char *machine_json(void)
{
	static char *json;
	struct utsname u;
	char model[256] = "unknown", line[512], thp[64] = "";
	FILE *f, *out;
	size_t len;

	if (json)
		return json;
	f = fopen("/proc/cpuinfo", "r");
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "model name : %255[^\n]", model) == 1)
			break;
	if (f)
		fclose(f);
	f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
	if (f) {
		if (!fgets(thp, sizeof(thp), f))
			thp[0] = '\0';
		thp[strcspn(thp, "\n")] = '\0';
		fclose(f);
	}
	uname(&u);
	out = open_memstream(&json, &len);
	if (!out)
		return "null";
	fputs("{\"kernel\": ", out);
	json_string(out, u.release);
	fprintf(out, ", \"cpus\": %ld, \"cpu\": ", sysconf(_SC_NPROCESSORS_ONLN));
	json_string(out, model);
	fprintf(out, ", \"page_size\": %zu, \"thp\": ", page_size);
	json_string(out, thp);
	fputc('}', out);
	if (fclose(out)) {
		free(json);
		json = NULL;
		return "null";
	}
	return json;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: dirty-bench [--quick] [--json FILE] [--svg FILE] [--method SUBSTRING]\n"
		   "                   [--dir DIR] [--budget MS] [--max-cycles N]\n"
		   "       dirty-bench --mapping [--size MiB] [--quick] [--json FILE] [--method SUBSTRING]\n"
		   "       dirty-bench --dump [--dump-size MiB] [--dir DIR] [--json FILE] [--quick]\n"
		   "Measure every usable libdirty backend, the raw kernel primitives and\n"
		   "snapshot+memcmp on the same workloads; check every answer.  --dump: write\n"
		   "1/10/100 %% scattered dirty pages (of 1 GiB) to tmpfs and to DIR with\n"
		   "io_uring, pwritev and a pwrite loop.  --mapping: a shared buffer (memfd and\n"
		   "shared anonymous, 256 MiB) tracked by the mapping backend (/dev/dirtymap),\n"
		   "its raw ioctl, uffd-async and snapshot+memcmp.\n");
}

static bool same_case(const struct bench_case *a, const struct bench_case *b)
{
	return !strcmp(a->memory, b->memory) && a->size == b->size && a->fraction == b->fraction &&
	       !strcmp(a->pattern, b->pattern) && a->threads == b->threads && a->thp == b->thp &&
	       a->sparse == b->sparse && a->process == b->process;
}

/* libdirty against its own raw primitive, case by case. */
static void print_ratios(FILE *f, const struct bench_result *r, size_t n)
{
	static const char *const pairs[][2] = {
		{ "libdirty:uffd-async", "raw:uffd-async" },
		{ "libdirty:mprotect", "raw:mprotect" },
		{ "libdirty:uffd-sync", "raw:uffd-sync/same-cpu" },
		{ "libdirty:soft-dirty", "raw:soft-dirty" },
		{ "snapshot+memcmp", "raw:uffd-async" },
		{ "libdirty:mapping", "raw:mapping" },
		{ "libdirty:mapping/file", "raw:mapping" },
		{ "raw:mapping", "raw:uffd-async" },
		{ "libdirty:mapping", "libdirty:uffd-async" },
		{ "snapshot+memcmp", "raw:mapping" },
	};

	fprintf(f, "\nratios of whole-cycle medians (lower is better for the first):\n");
	for (size_t p = 0; p < sizeof(pairs) / sizeof(pairs[0]); p++) {
		bool any = false;

		for (size_t i = 0; i < n; i++) {
			if (strcmp(r[i].method, pairs[p][0]) || r[i].skip_reason)
				continue;
			for (size_t j = 0; j < n; j++) {
				if (strcmp(r[j].method, pairs[p][1]) || r[j].skip_reason ||
				    !same_case(&r[i].c, &r[j].c))
					continue;
				if (!any)
					fprintf(f, "  %s / %s:", pairs[p][0], pairs[p][1]);
				fprintf(f, " %s%s%s%s%zuM/%g%%%s=%.2f", any ? "," : "",
					r[i].c.sparse ? "sparse " : "",
					strcmp(r[i].c.memory, "anon") ? r[i].c.memory : "",
					strcmp(r[i].c.memory, "anon") ? " " : "", r[i].c.size >> 20,
					r[i].c.fraction * 100,
					!strcmp(r[i].c.pattern, "runs") ? " runs"
					: r[i].c.process		 ? " process"
					: r[i].c.threads > 1		 ? " 2 threads"
									 : "",
					r[i].cycle_ms / r[j].cycle_ms);
				any = true;
			}
		}
		if (any)
			fprintf(f, "\n");
	}
}

static const struct bench_result *find_result(const struct bench_result *r, size_t n,
					      const char *method, const struct bench_case *c)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(r[i].method, method) && !r[i].skip_reason && same_case(&r[i].c, c))
			return &r[i];
	return NULL;
}

/* The worst ratio of a method's cycle to a reference's over every case both ran. */
static void target_ratio(FILE *f, const struct bench_result *r, size_t n, const char *method,
			 const char *reference, double limit)
{
	double worst = 0;
	const struct bench_result *at = NULL;
	char where[160];
	size_t cases = 0;

	for (size_t i = 0; i < n; i++) {
		const struct bench_result *ref;

		if (strcmp(r[i].method, method) || r[i].skip_reason)
			continue;
		ref = find_result(r, n, reference, &r[i].c);
		if (!ref)
			continue;
		cases++;
		if (r[i].cycle_ms / ref->cycle_ms > worst) {
			worst = r[i].cycle_ms / ref->cycle_ms;
			at = &r[i];
		}
	}
	if (!at) {
		fprintf(f, "  %s <= %.2f x %s: not measured here (%s is not usable)\n", method, limit,
			reference, method);
		return;
	}
	bench_case_describe(where, sizeof(where), &at->c);
	fprintf(f, "  %s <= %.2f x %s in every case: worst %.2f x (%s) over %zu cases: %s\n",
		method, limit, reference, worst, where, cases, worst <= limit ? "met" : "MISSED");
}

/* Issue 3's targets, measured by this run. */
static void print_targets(FILE *f, const struct bench_result *r, size_t n)
{
	struct bench_case dense = { .memory = "anon", .size = GiB, .fraction = 1.0,
				    .pattern = "scattered", .threads = 1, .touched = GiB };
	struct bench_case light = dense, plain = dense, sparse = dense;
	const struct bench_result *a, *b, *d;

	fprintf(f, "\ntargets:\n");
	target_ratio(f, r, n, "libdirty:uffd-async", "raw:uffd-async", 1.10);
	target_ratio(f, r, n, "libdirty:mprotect", "raw:mprotect", 1.20);
	target_ratio(f, r, n, "libdirty:uffd-sync", "raw:uffd-sync/same-cpu", 1.20);

	/* sparse: track + clean + one collect, against a plain region of what it touches */
	plain.size = plain.touched = 256 * MiB, plain.fraction = 0.01;
	sparse = plain, sparse.sparse = true, sparse.size = 1024 * GiB;
	a = find_result(r, n, "libdirty:uffd-async", &sparse);
	b = find_result(r, n, "libdirty:uffd-async", &plain);
	if (a && b)
		fprintf(f, "  sparse 1T (256M touched) setup+collect <= 2 x plain 256M: %.2f ms vs "
			   "%.2f ms = %.2f x: %s; state %zu KiB vs %zu KiB\n",
			a->setup_ms + a->collect_ms, b->setup_ms + b->collect_ms,
			(a->setup_ms + a->collect_ms) / (b->setup_ms + b->collect_ms),
			a->setup_ms + a->collect_ms <= 2 * (b->setup_ms + b->collect_ms) ? "met" : "MISSED",
			a->library_bytes >> 10, b->library_bytes >> 10);

	/* adaptive: 100 % dirty much faster than raw (A) and than snapshot; 0.1 % unharmed */
	a = find_result(r, n, "libdirty:uffd-async/adaptive", &dense);
	b = find_result(r, n, "raw:uffd-async", &dense);
	d = find_result(r, n, "snapshot+memcmp", &dense);
	if (a && b && d)
		fprintf(f, "  adaptive, 1G 100%%: raw:uffd-async / adaptive = %.1f x (>= 5: %s), "
			   "snapshot+memcmp / adaptive = %.1f x (> 1: %s)\n",
			b->cycle_ms / a->cycle_ms, b->cycle_ms >= 5 * a->cycle_ms ? "met" : "MISSED",
			d->cycle_ms / a->cycle_ms, d->cycle_ms > a->cycle_ms ? "met" : "MISSED");
	light.fraction = 0.001;
	a = find_result(r, n, "libdirty:uffd-async/adaptive", &light);
	b = find_result(r, n, "raw:uffd-async", &light);
	if (a && b)
		fprintf(f, "  adaptive, 1G 0.1%%: adaptive / raw:uffd-async = %.2f x (<= 1.10: %s)\n",
			a->cycle_ms / b->cycle_ms, a->cycle_ms <= 1.10 * b->cycle_ms ? "met" : "MISSED");
}

/* The command line: what measuring takes, and what is done with the results. */
struct command {
	struct options o;
	const char *json_path, *svg_path;
	bool dump;                /* --dump: bench-dump.c instead */
	unsigned long dump_mib;
};

/* -1 to go on; else the exit status (--help, a bad option), the message printed. */
static int parse_options(int argc, char **argv, struct command *cmd)
{
	static const struct option longopts[] = {
		{ "quick", no_argument, NULL, 'q' },   { "json", required_argument, NULL, 'j' },
		{ "svg", required_argument, NULL, 's' }, { "method", required_argument, NULL, 'm' },
		{ "dir", required_argument, NULL, 'd' }, { "budget", required_argument, NULL, 'b' },
		{ "max-cycles", required_argument, NULL, 'c' }, { "help", no_argument, NULL, 'h' },
		{ "dump", no_argument, NULL, 'D' }, { "dump-size", required_argument, NULL, 'S' },
		{ "mapping", no_argument, NULL, 'M' }, { "size", required_argument, NULL, 'z' },
		{ NULL, 0, NULL, 0 },
	};
	struct options *o = &cmd->o;
	int opt;

	while ((opt = getopt_long(argc, argv, "qj:s:m:d:b:c:hDS:Mz:", longopts, NULL)) != -1) {
		switch (opt) {
		case 'q':
			o->quick = true;
			break;
		case 'j':
			cmd->json_path = optarg;
			break;
		case 's':
			cmd->svg_path = optarg;
			break;
		case 'm':
			o->only = optarg;
			break;
		case 'd':
			o->dir = optarg;
			break;
		case 'b':
			o->budget_ms = atof(optarg);
			break;
		case 'c':
			o->max_cycles = atoi(optarg);
			break;
		case 'D':
			cmd->dump = true;
			break;
		case 'S':
			cmd->dump_mib = strtoul(optarg, NULL, 10);
			break;
		case 'M':
			o->mapping = true;
			break;
		case 'z':
			o->size = strtoul(optarg, NULL, 10) << 20;
			if (!o->size) {
				fprintf(stderr, "dirty-bench: --size takes MiB, at least 1\n");
				return 2;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	return -1;
}

/* --dump (bench-dump.c), its --json file opened here. */
static int run_dump(const struct command *cmd)
{
	FILE *json = cmd->json_path ? fopen(cmd->json_path, "w") : NULL;
	int rc;

	if (cmd->json_path && !json) {
		fprintf(stderr, "dirty-bench: %s: %s\n", cmd->json_path, strerror(errno));
		return 1;
	}
	rc = bench_dump_main((cmd->o.quick ? 64 : cmd->dump_mib) << 20, cmd->o.dir,
			     cmd->o.quick ? 1 : 5, json);
	if (json && fclose(json))
		rc = 1;
	return rc;
}

/*
 * Every chosen method on every case, with a progress line, and a table per
 * case; each answer is checked (a wrong one ends the program).  Returns the
 * results, *ret_n of them: one per method that ran or was skipped with its
 * reason.
 */
static struct bench_result *measure_cases(const struct case_list *cases,
					  const struct options *o, size_t *ret_n)
{
	size_t nresults = 0, total = cases->n * NMETHODS, done = 0;
	struct bench_result *results = calloc(total, sizeof(*results));

	for (size_t ci = 0; ci < cases->n; ci++) {
		size_t first = nresults;

		for (size_t mi = 0; mi < NMETHODS; mi++) {
			const struct method *m = &methods[mi];
			struct bench_result *res = &results[nresults];
			char what[160];

			done++;
			if ((o->only && !strstr(m->name, o->only)) || (o->mapping && !m->shared))
				continue;
			nresults++;
			res->c = cases->v[ci];
			res->method = m->name;
			res->skip_reason = cases->v[ci].process && !m->other_process
						   ? "sees the page tables of this process only: the "
						     "writer is another process"
						   : m->unavailable(&cases->v[ci]);
			if (res->skip_reason)
				continue;
			snprintf(what, sizeof(what), "%s %s %zuM %g%% %s", m->name,
				 cases->v[ci].memory, cases->v[ci].size >> 20,
				 cases->v[ci].fraction * 100, cases->v[ci].pattern);
			bench_progress(stderr, done, total, what);
			measure(m, &cases->v[ci], o, res);
		}
		bench_progress_end(stderr);
		/* --mapping: against the kernel's primitive, where it ran */
		bench_print_table(stdout, results + first, nresults - first,
				  o->mapping && find_result(results + first, nresults - first,
							    "raw:mapping", &cases->v[ci])
					  ? "raw:mapping"
					  : "raw:uffd-async");
		fflush(stdout);
	}
	*ret_n = nresults;
	return results;
}

/* --json and --svg. */
static void write_reports(const struct command *cmd, const struct case_list *cases,
			  const struct bench_result *results, size_t nresults)
{
	if (cmd->json_path) {
		FILE *f = strcmp(cmd->json_path, "-") ? fopen(cmd->json_path, "w") : stdout;

		if (!f)
			die("%s: %s", cmd->json_path, strerror(errno));
		bench_write_json(f, results, nresults, machine_json());
		if (f != stdout)
			fclose(f);
	}
	if (cmd->svg_path) {
		char title[160];
		int err;

		snprintf(title, sizeof(title), "cycle time by dirty fraction: %s, %zu MiB, %s, 1 writer",
			 cases->v[0].memory, cases->v[0].size >> 20, cases->v[0].pattern);
		err = bench_write_svg(cmd->svg_path, title, results, nresults, &cases->v[0]);
		if (err)
			die("%s: %s", cmd->svg_path, strerror(-err));
	}
}

int main(int argc, char **argv)
{
	struct command cmd = {
		.o = { .budget_ms = 1000, .max_cycles = MAX_CYCLES - 1, .dir = "." },
		.dump_mib = 1024,
	};
	struct options *o = &cmd.o;
	struct case_list cases = { 0 };
	struct bench_result *results;
	size_t nresults;
	double started = now_ms();
	int rc;

	page_size = (size_t)sysconf(_SC_PAGESIZE);
	rc = parse_options(argc, argv, &cmd);
	if (rc >= 0)
		return rc;
	if (cmd.dump)
		return run_dump(&cmd);
	if (o->max_cycles < 1 || o->max_cycles >= MAX_CYCLES) {
		fprintf(stderr, "dirty-bench: --max-cycles must be 1..%d\n", MAX_CYCLES - 1);
		return 2;
	}
	if (o->quick) {
		o->budget_ms = 50;
		o->max_cycles = 2;
	}
	if (o->mapping)
		mapping_cases(&cases, o->size ? o->size : o->quick ? 16 * MiB : 256 * MiB);
	else
		default_cases(&cases, o->quick);

	printf("dirty-bench on %s\n", machine_json());
	results = measure_cases(&cases, o, &nresults);
	print_ratios(stdout, results, nresults);
	if (!o->quick && !o->mapping)
		print_targets(stdout, results, nresults);
	printf("\nall answers checked: correct.  %.1f s in all.\n", (now_ms() - started) / 1e3);

	write_reports(&cmd, &cases, results, nresults);
	free(results);
	free(cases.v);
	return 0;
}
