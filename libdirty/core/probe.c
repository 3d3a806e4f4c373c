/* SPDX-License-Identifier: MIT */
/*
 * Which kernel mechanisms work here, and why not.  Each probe exercises the
 * mechanism for real on a scratch page (a kernel can accept a request and do
 * nothing, as clear_refs "4" does without CONFIG_MEM_SOFT_DIRTY).  Answers for
 * this process are cached: the kernel does not change under a running process.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include "config.h"
#include "libdirty-int.h"
#include "linux-compat.h"

static int probe_uffd_async(pid_t pid, char *why, size_t why_len)
{
	char target[DIRTY_REASON_LEN];
	struct page_region region;
	struct pm_scan_arg arg;
	int uffd, pagemap, err;
	size_t page = dirty_page_size();
	char *mem;

	if (pid) {
		/*
		 * The kernel's features, as this process sees them, then the
		 * target.  A failure here is the kernel's (or this process's),
		 * never the target's.
		 */
		err = probe_uffd_async(0, why, why_len);
		if (err)
			return dirty_target_error(err) ? -EOPNOTSUPP : err;
		/* from /proc, without touching it: the injection itself checks the rest */
		err = dirty_remote_check(pid, true, target, sizeof(target));
		if (err)
			return dirty_reason(why, why_len, err, "%s", target);
		return dirty_reason(why, why_len, 0,
				    "userfaultfd WP_ASYNC and PAGEMAP_SCAN work (Linux 6.7+); %s",
				    target);
	}
	uffd = dirty_uffd_open(O_CLOEXEC | O_NONBLOCK, why, why_len);
	if (uffd < 0)
		return uffd;
	err = dirty_uffd_api(uffd, DIRTY_UFFD_ASYNC_FEATURES, why, why_len);
	if (err)
		goto out_uffd;
	pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (pagemap < 0) {
		err = dirty_reason(why, why_len, -errno, "cannot open /proc/self/pagemap: %s",
				   strerror(errno));
		goto out_uffd;
	}
	mem = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		err = -ENOMEM;
		goto out_pagemap;
	}
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)mem, .len = page },
		.mode = UFFDIO_REGISTER_MODE_WP,
	};
	if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) {
		err = dirty_reason(why, why_len, -errno,
				   "UFFDIO_REGISTER in write-protect mode failed: %s",
				   strerror(errno));
		goto out_mem;
	}
	/* clean, write, and the scan must see exactly that page */
	mem[0] = 1;
	arg = (struct pm_scan_arg){
		.size = sizeof(arg),
		.flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
		.start = (uintptr_t)mem,
		.end = (uintptr_t)mem + page,
		.category_mask = PAGE_IS_WRITTEN,
		.return_mask = PAGE_IS_WRITTEN,
	};
	if (ioctl(pagemap, PAGEMAP_SCAN, &arg) < 0) {
		err = errno == ENOTTY || errno == EINVAL ? -EOPNOTSUPP : -errno;
		dirty_reason(why, why_len, err,
			     "the kernel has no PAGEMAP_SCAN ioctl on /proc/PID/pagemap (6.7+): %s",
			     strerror(errno));
		goto out_mem;
	}
	mem[0] = 2;
	arg.flags = 0;
	arg.vec = (uintptr_t)&region;
	arg.vec_len = 1;
	if (ioctl(pagemap, PAGEMAP_SCAN, &arg) != 1 || region.start != (uintptr_t)mem) {
		err = dirty_reason(why, why_len, -EOPNOTSUPP,
				   "PAGEMAP_SCAN did not report a page written after "
				   "write-protection");
		goto out_mem;
	}
	err = dirty_reason(why, why_len, 0,
			   "userfaultfd WP_ASYNC and PAGEMAP_SCAN work (Linux 6.7+)");
out_mem:
	munmap(mem, page);
out_pagemap:
	close(pagemap);
out_uffd:
	close(uffd);
	return err;
}

/* Write-protect faults on a scratch page: what uffd-sync needs (5.7+ for anonymous memory). */
static int probe_uffd_sync(pid_t pid, char *why, size_t why_len)
{
	size_t page = dirty_page_size();
	int uffd, err;
	char *mem;

	if (pid)
		return dirty_reason(why, why_len, -EOPNOTSUPP,
				    "uffd-sync tracks the calling process only: a userfaultfd "
				    "acts on the process that created it");
	uffd = dirty_uffd_open(O_CLOEXEC | O_NONBLOCK, why, why_len);
	if (uffd < 0)
		return uffd;
	err = dirty_uffd_api(uffd, UFFD_FEATURE_PAGEFAULT_FLAG_WP, why, why_len);
	if (err)
		goto out_uffd;
	mem = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		err = -ENOMEM;
		goto out_uffd;
	}
	mem[0] = 1;
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)mem, .len = page },
		.mode = UFFDIO_REGISTER_MODE_WP | UFFDIO_REGISTER_MODE_MISSING,
	};
	struct uffdio_writeprotect wp = { .range = reg.range, .mode = UFFDIO_WRITEPROTECT_MODE_WP };
	if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0 || ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) < 0) {
		err = dirty_reason(why, why_len, errno == EINVAL ? -EOPNOTSUPP : -errno,
				   "userfaultfd write-protection of anonymous memory failed: %s",
				   strerror(errno));
		goto out_mem;
	}
	err = dirty_reason(why, why_len, 0,
			   "userfaultfd write-protect faults work (Linux 5.7+; shmem/hugetlb 5.19+)");
out_mem:
	close(uffd); /* first: it unregisters the page */
	munmap(mem, page);
	return err;
out_uffd:
	close(uffd);
	return err;
}

/* ---- soft-dirty ---- */

#define PAGEMAP_SOFT_DIRTY (UINT64_C(1) << 55)

static int pagemap_entry(int fd, const void *addr, uint64_t *entry)
{
	off_t off = (off_t)((uintptr_t)addr / dirty_page_size() * sizeof(*entry));

	return pread(fd, entry, sizeof(*entry), off) == sizeof(*entry) ? 0 : -1;
}

/*
 * Runs in a forked child: clear_refs "4" clears soft-dirty bits process-wide
 * and must not disturb the caller.  Exit status: 0 works, 1 clear_refs
 * refused, 2 the bit stays clear after a write, 3 the bit never clears,
 * 4 setup failed.
 */
static int soft_dirty_child(void)
{
	size_t page = dirty_page_size();
	uint64_t entry;
	int cr, pm;
	char *mem;

	mem = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
	pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (mem == MAP_FAILED || cr < 0 || pm < 0)
		return 4;
	mem[0] = 1;
	if (write(cr, "4", 1) != 1)
		return 1;
	if (pagemap_entry(pm, mem, &entry))
		return 4;
	if (entry & PAGEMAP_SOFT_DIRTY)
		return 3;
	mem[0] = 2;
	if (pagemap_entry(pm, mem, &entry))
		return 4;
	return entry & PAGEMAP_SOFT_DIRTY ? 0 : 2;
}

/* What tracking pid with soft-dirty needs beyond the kernel feature. */
static int soft_dirty_target_access(pid_t pid, char *why, size_t why_len)
{
	char path[64];
	int fd, err;

	/*
	 * Collect-and-clean stops the target's threads with ptrace
	 * (soft-dirty.c): the rules first, from /proc, without touching it.
	 */
	err = dirty_remote_check(pid, false, why, why_len);
	if (err)
		return err;
	snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return dirty_reason(why, why_len, errno == ENOENT ? -ESRCH : -errno,
				    "cannot open %s: %s", path, strerror(errno));
	close(fd);
	snprintf(path, sizeof(path), "/proc/%d/clear_refs", (int)pid);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return dirty_reason(why, why_len, errno == ENOENT ? -ESRCH : -errno,
				    "cannot open %s for writing: %s", path, strerror(errno));
	close(fd);
	return 0;
}

static int probe_soft_dirty(pid_t pid, char *why, size_t why_len)
{
	int status, err;
	pid_t child;

	child = fork();
	if (child < 0)
		return dirty_reason(why, why_len, -errno, "fork for the probe failed: %s",
				    strerror(errno));
	if (child == 0)
		_exit(soft_dirty_child());
	while (waitpid(child, &status, 0) < 0)
		if (errno != EINTR)
			return dirty_reason(why, why_len, -errno, "waitpid: %s", strerror(errno));
	switch (WIFEXITED(status) ? WEXITSTATUS(status) : 4) {
	case 0:
		break;
	case 1:
		return dirty_reason(why, why_len, -EPERM,
				    "/proc/PID/clear_refs refused \"4\"");
	case 2:
	case 3:
		return dirty_reason(why, why_len, -EOPNOTSUPP,
				    "the kernel does not implement soft-dirty "
				    "(CONFIG_MEM_SOFT_DIRTY is off): clear_refs accepts \"4\" but "
				    "pagemap bit 55 does not follow writes");
	default:
		return dirty_reason(why, why_len, -EIO, "the soft-dirty probe could not run");
	}
	if (pid) {
		err = soft_dirty_target_access(pid, why, why_len);
		if (err)
			return err;
	}
	return dirty_reason(why, why_len, 0,
			    "clear_refs \"4\" and pagemap bit 55 work (CONFIG_MEM_SOFT_DIRTY)");
}

/* ---- mprotect, mapping ---- */

static int probe_mprotect(pid_t pid, char *why, size_t why_len)
{
	if (pid)
		return dirty_reason(why, why_len, -EOPNOTSUPP,
				    "mprotect tracks the calling process only");
	return dirty_reason(why, why_len, 0,
			    "PROT_READ and a SIGSEGV handler work on any kernel");
}

static int probe_mapping(pid_t pid, char *why, size_t why_len)
{
	if (pid)
		return dirty_reason(why, why_len, -EOPNOTSUPP,
				    "mapping tracks shared-memory files in every process that "
				    "maps them, not one process's view: track the file "
				    "(dirty_track_file) from a tracker of this process");
	return dirty_mapping_probe(why, why_len);
}

/* ---- the table ---- */

struct backend_entry {
	const char *name;
	int (*probe)(pid_t pid, char *why, size_t why_len);
	const struct dirty_backend *impl; /* NULL: not implemented */
	/* cache for pid 0 */
	bool probed;
	int result;
	char reason[DIRTY_REASON_LEN];
};

static struct backend_entry backends[] = {
	{ "uffd-async", probe_uffd_async, &dirty_backend_uffd_async },
	{ "uffd-sync", probe_uffd_sync, &dirty_backend_uffd_sync },
	{ "soft-dirty", probe_soft_dirty, &dirty_backend_soft_dirty },
	{ "mprotect", probe_mprotect, &dirty_backend_mprotect },
	{ "mapping", probe_mapping, &dirty_backend_mapping },
};

#define NBACKENDS (sizeof(backends) / sizeof(backends[0]))

static pthread_mutex_t probe_lock = PTHREAD_MUTEX_INITIALIZER;

static struct backend_entry *entry_find(const char *name)
{
	size_t i;

	for (i = 0; name && i < NBACKENDS; i++)
		if (!strcmp(backends[i].name, name))
			return &backends[i];
	return NULL;
}

const struct dirty_backend *dirty_backend_find(const char *name)
{
	struct backend_entry *e = entry_find(name);

	return e ? e->impl : NULL;
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

static int entry_probe(struct backend_entry *e, pid_t pid, char *why, size_t why_len)
{
	int err;

	if (probe_disabled(e->name))
		return dirty_reason(why, why_len, -EOPNOTSUPP,
				    "disabled for testing by LIBDIRTY_PROBE_FAIL");
	if (pid)
		return e->probe(pid, why, why_len);
	pthread_mutex_lock(&probe_lock);
	if (!e->probed) {
		e->result = e->probe(0, e->reason, sizeof(e->reason));
		e->probed = true;
	}
	err = e->result;
	if (why && why_len)
		snprintf(why, why_len, "%s", e->reason);
	pthread_mutex_unlock(&probe_lock);
	return err;
}

bool dirty_target_error(int err)
{
	return err == -ESRCH || err == -EPERM || err == -EBUSY || err == -EACCES;
}

int dirty_backend_choose(pid_t pid, const struct dirty_backend **out, size_t *ret_n, char *why,
			 size_t why_len)
{
	char reason[DIRTY_REASON_LEN], target[DIRTY_REASON_LEN] = "";
	size_t i, n = 0, used = 0;
	int target_err = 0;

	if (why && why_len)
		why[0] = '\0';
	for (i = 0; i < NBACKENDS; i++) {
		int err;

		/*
		 * mapping tracks files in every process that maps them: a
		 * different answer, taken only when asked for by name (or for
		 * files, by dirty_track_file()).
		 */
		if (backends[i].impl == &dirty_backend_mapping)
			continue;
		err = entry_probe(&backends[i], pid, reason, sizeof(reason));
		if (!err && backends[i].impl) {
			assert(n < DIRTY_MAX_BACKENDS);
			out[n++] = backends[i].impl;
			if (n == 1 && why && why_len > used)
				used += (size_t)snprintf(why + used, why_len - used, "%s: %s",
							 backends[i].name, reason);
		} else if (!n && why && why_len > used) {
			used += (size_t)snprintf(why + used, why_len - used, "%s unusable (%s); ",
						 backends[i].name, reason);
		}
		if (err && !target_err && dirty_target_error(err)) {
			/* the target refused (gone, permission, busy, sandbox): that is the answer */
			target_err = err;
			snprintf(target, sizeof(target), "%s", reason);
		}
		if (used >= why_len)
			used = why_len;
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

size_t dirty_backend_candidates(pid_t pid, const struct dirty_backend **out, char *why,
				size_t why_len)
{
	size_t n;

	dirty_backend_choose(pid, out, &n, why, why_len);
	return n;
}

DIRTY_EXPORT int dirty_backend_probe(const char *backend, pid_t pid, char *why, size_t why_len)
{
	struct backend_entry *e;
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
	e = entry_find(backend);
	if (!e)
		return dirty_reason(why, why_len, -EINVAL, "no backend named \"%s\"", backend);
	err = entry_probe(e, pid, why, why_len);
	if (!err && !e->impl)
		err = dirty_reason(why, why_len, -EOPNOTSUPP, "not implemented");
	/* -EINVAL means "no such backend"; a probe's own EINVAL means unusable */
	return err == -EINVAL ? -EOPNOTSUPP : err;
}

DIRTY_EXPORT const char *const *dirty_backend_names(void)
{
	static const char *const names[] = { "uffd-async", "uffd-sync", "soft-dirty",
					     "mprotect", "mapping", NULL };

	return names;
}
