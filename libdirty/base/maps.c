/* SPDX-License-Identifier: MIT */
/* What a range of memory is, from /proc/PID/smaps. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/sysmacros.h>

#include "libdirty-int.h"
#include "linux-compat.h"

static bool path_is_shmem(const char *path)
{
	static const char *const prefixes[] = { "/memfd:", "/dev/shm/", "/SYSV", "/dev/zero" };
	size_t i;

	for (i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
		if (!strncmp(path, prefixes[i], strlen(prefixes[i])))
			return true;
	return false;
}

static enum dirty_memory_kind mapping_kind(const char *perms, unsigned long inode,
					   const char *path, bool hugetlb)
{
	if (hugetlb)
		return DIRTY_MEM_HUGETLB;
	if (perms[3] == 's')
		return path_is_shmem(path) ? DIRTY_MEM_SHMEM : DIRTY_MEM_FILE_SHARED;
	return inode ? DIRTY_MEM_FILE_PRIVATE : DIRTY_MEM_ANON;
}

static int perms_prot(const char *perms)
{
	return (perms[0] == 'r' ? PROT_READ : 0) | (perms[1] == 'w' ? PROT_WRITE : 0) |
	       (perms[2] == 'x' ? PROT_EXEC : 0);
}

/*
 * smaps lists each mapping as a header line followed by "Key: value" lines;
 * the ones we need are KernelPageSize and VmFlags (where "ht" is hugetlb).
 * Mappings are in address order, so the range is covered when the mappings
 * that overlap it leave no gap.
 */
int dirty_describe_range(pid_t pid, uintptr_t start, uintptr_t end, struct dirty_range_info *ret)
{
	struct dirty_range_info info = { .page_size = dirty_page_size(), .prot = -1 };
	char path[64], *text, *line, *save = NULL;
	uintptr_t covered = start, lo = 0, hi = 0;
	bool in_range = false, first = true;
	int err;

	if (pid)
		snprintf(path, sizeof(path), "/proc/%d/smaps", (int)pid);
	else
		snprintf(path, sizeof(path), "/proc/self/smaps");
	err = dirty_read_file(path, &text, NULL);
	if (err)
		return err == -ENOENT ? -ESRCH : err;

	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char perms[5], name[4096] = "";
		unsigned long inode;
		uint64_t a, b, value;

		if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %4s %*s %*s %lu %4095[^\n]", &a, &b,
			   perms, &inode, name) >= 4) {
			lo = (uintptr_t)a;
			hi = (uintptr_t)b;
			if (lo >= end)
				break; /* past the range: the last mapping's details are read */
			in_range = hi > covered;
			if (!in_range)
				continue;
			if (lo > covered)
				break; /* a hole */
			covered = hi;
			if (first) {
				info.prot = perms_prot(perms);
				info.kind = mapping_kind(perms, inode, name + strspn(name, " "),
							 false);
			} else if (perms_prot(perms) != info.prot) {
				info.mixed_prot = true;
				info.prot &= perms_prot(perms);
			}
			first = false;
			continue;
		}
		if (!in_range)
			continue;
		if (sscanf(line, "KernelPageSize: %" SCNu64 " kB", &value) == 1) {
			if (value * 1024 > info.page_size)
				info.page_size = (size_t)value * 1024;
		} else if (!strncmp(line, "VmFlags:", 8) && strstr(line, " ht")) {
			info.kind = DIRTY_MEM_HUGETLB;
		}
	}
	free(text);
	if (covered < end)
		return -ENOMEM;
	*ret = info;
	return 0;
}

int dirty_mapped_file(uintptr_t addr, dev_t *ret_dev, char *path, size_t path_len)
{
	char *text, *line, *save = NULL;
	int err = dirty_read_file("/proc/self/maps", &text, NULL);

	if (err)
		return err;
	err = -ENOMEM;
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		unsigned int maj, min;
		uint64_t lo, hi;
		int name = 0;

		if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %*s %*x %x:%x %*u %n", &lo, &hi, &maj,
			   &min, &name) < 4 || addr < lo || addr >= hi)
			continue;
		*ret_dev = makedev(maj, min);
		snprintf(path, path_len, "%s", name ? line + name : "");
		err = 0;
		break;
	}
	free(text);
	return err;
}

bool dirty_range_mapped(uintptr_t start, uintptr_t end)
{
	/* msync(MS_ASYNC) checks that every page is mapped and does nothing else */
	return msync((void *)start, end - start, MS_ASYNC) == 0 || errno != ENOMEM;
}

int dirty_range_mapped_pid(pid_t pid, uintptr_t start, uintptr_t end)
{
	char path[64], *text, *line, *save = NULL;
	uintptr_t covered = start;
	int err;

	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	err = dirty_read_file(path, &text, NULL);
	if (err)
		return err == -ENOENT ? -ESRCH : err;
	for (line = strtok_r(text, "\n", &save); line && covered < end;
	     line = strtok_r(NULL, "\n", &save)) {
		uint64_t a, b;

		if (sscanf(line, "%" SCNx64 "-%" SCNx64, &a, &b) != 2 || b <= covered)
			continue;
		if (a > covered)
			break; /* a hole */
		covered = (uintptr_t)b;
	}
	free(text);
	/* an empty maps file: the process is a zombie, its memory gone */
	return covered >= end ? 0 : -ENOMEM;
}

int dirty_pagemap_alive(int pagemap_fd)
{
	uint64_t entry;
	ssize_t n;

	/*
	 * The file holds the address space it was opened on.  Once that is
	 * gone (the process exited, or execve() gave it a new one), a read
	 * returns nothing, and PAGEMAP_SCAN finds no memory and says so
	 * without an error.
	 */
	do
		n = pread(pagemap_fd, &entry, sizeof(entry), 0);
	while (n < 0 && errno == EINTR);
	return n == sizeof(entry) ? 0 : -ESRCH;
}

/* ---- pages that hold data ---- */

#define PM_ENTRY_PRESENT (UINT64_C(1) << 63)
#define PM_ENTRY_SWAPPED (UINT64_C(1) << 62)
#define PM_ENTRY_FILE (UINT64_C(1) << 61) /* a page of a file, or shared anonymous */
#define PM_ENTRY_PFN ((UINT64_C(1) << 55) - 1)

/*
 * The shared zero page's frame number, from a read-only touch of our own
 * memory: 0 where pagemap hides frame numbers (no CAP_SYS_ADMIN), and then
 * the zero page cannot be told from a page that holds data.
 */
static uint64_t zero_pfn;
static pthread_once_t zero_pfn_once = PTHREAD_ONCE_INIT;

static void zero_pfn_find(void)
{
	size_t page = dirty_page_size();
	volatile char *mem = mmap(NULL, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t entry = 0;
	int fd;

	if (mem == MAP_FAILED)
		return;
	(void)mem[0];
	fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd >= 0 && pread(fd, &entry, sizeof(entry),
			     (off_t)((uintptr_t)mem / page * sizeof(entry))) == sizeof(entry) &&
	    (entry & PM_ENTRY_PRESENT))
		zero_pfn = entry & PM_ENTRY_PFN;
	if (fd >= 0)
		close(fd);
	munmap((void *)mem, page);
}

/* ---- walking pagemap ---- */

#define SCAN_CHUNK 512 /* PAGEMAP_SCAN runs per call, pagemap entries per pread */

int dirty_pagemap_scan_each(int pagemap_fd, struct pm_scan_arg *arg, dirty_run_fn_int fn,
			    void *ctx)
{
	struct page_region runs[SCAN_CHUNK];
	uint64_t first = arg->start;
	int err;

	arg->size = sizeof(*arg);
	arg->vec = (uintptr_t)runs;
	arg->vec_len = SCAN_CHUNK;
	while (arg->start < arg->end) {
		int n = ioctl(pagemap_fd, PAGEMAP_SCAN, arg);
		uint64_t resume;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && arg->start == first && (errno == ENOTTY || errno == EINVAL))
			return -ENOTTY;
		if (n < 0)
			return -errno;
		for (int i = 0; i < n; i++)
			if ((err = fn((uintptr_t)runs[i].start, (uintptr_t)runs[i].end, ctx)))
				return err;
		/* walk_end can lag the last run reported (see uffd-async.c) */
		resume = n > 0 && runs[n - 1].end > arg->walk_end ? runs[n - 1].end : arg->walk_end;
		if (resume <= arg->start)
			return dirty_pagemap_alive(pagemap_fd) ? -ESRCH : -EAGAIN;
		arg->start = resume;
	}
	return 0;
}

int dirty_pagemap_read_each(int pagemap_fd, uintptr_t start, uintptr_t end,
			    dirty_entries_fn fn, void *ctx)
{
	size_t page = dirty_page_size();
	int err;

	for (uintptr_t a = start; a < end;) {
		uint64_t entries[SCAN_CHUNK];
		size_t want = (end - a) / page < SCAN_CHUNK ? (end - a) / page : SCAN_CHUNK;
		ssize_t n = pread(pagemap_fd, entries, want * sizeof(entries[0]),
				  (off_t)(a / page * sizeof(entries[0])));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ESRCH; /* the address space is gone */
		n /= (ssize_t)sizeof(entries[0]);
		if ((err = fn(a, entries, (size_t)n, ctx)))
			return err;
		a += (size_t)n * page;
	}
	return 0;
}

/* ---- pages that hold data ---- */

/* Runs of pages with data, from pagemap entries, a chunk at a time. */
struct populated_runs {
	enum dirty_memory_kind kind;
	bool swapped;
	uintptr_t run_start, run_end;
	dirty_run_fn_int fn;
	void *ctx;
};

static int populated_entries(uintptr_t addr, const uint64_t *entries, size_t n, void *ctx)
{
	struct populated_runs *p = ctx;
	size_t page = dirty_page_size();
	int err;

	for (size_t i = 0; i < n; i++, addr += page) {
		uint64_t e = entries[i];
		bool data = (e & PM_ENTRY_PRESENT) ? !zero_pfn || (e & PM_ENTRY_PFN) != zero_pfn
						   : p->swapped && (e & PM_ENTRY_SWAPPED);

		if (p->kind == DIRTY_MEM_FILE_PRIVATE && (e & PM_ENTRY_FILE))
			data = false;
		if (!data)
			continue;
		if (p->run_end == addr) {
			p->run_end = addr + page;
			continue;
		}
		if (p->run_end > p->run_start && (err = p->fn(p->run_start, p->run_end, p->ctx)))
			return err;
		p->run_start = addr;
		p->run_end = addr + page;
	}
	return 0;
}

/* The same from 8 bytes of /proc/PID/pagemap per page, before Linux 6.7. */
static int populated_read(int pagemap_fd, uintptr_t start, uintptr_t end,
			  enum dirty_memory_kind kind, bool swapped, dirty_run_fn_int fn, void *ctx)
{
	struct populated_runs p = { kind, swapped, 0, 0, fn, ctx };
	int err;

	pthread_once(&zero_pfn_once, zero_pfn_find);
	err = dirty_pagemap_read_each(pagemap_fd, start, end, populated_entries, &p);
	if (err)
		return err;
	return p.run_end > p.run_start ? fn(p.run_start, p.run_end, ctx) : 0;
}

int dirty_populated_each(int pagemap_fd, uintptr_t start, uintptr_t end,
			 enum dirty_memory_kind kind, bool swapped, dirty_run_fn_int fn, void *ctx)
{
	struct pm_scan_arg arg = {
		.start = start,
		.end = end,
		.category_anyof_mask = PAGE_IS_PRESENT | (swapped ? PAGE_IS_SWAPPED : 0),
		.category_inverted = PAGE_IS_PFNZERO,
		.category_mask = PAGE_IS_PFNZERO,
	};
	int err;

	/* hugetlb memory is never swapped out; a private file mapping's data are its copies */
	if (kind == DIRTY_MEM_HUGETLB)
		arg.category_anyof_mask = PAGE_IS_PRESENT;
	if (kind == DIRTY_MEM_FILE_PRIVATE) {
		arg.category_inverted |= PAGE_IS_FILE;
		arg.category_mask |= PAGE_IS_FILE;
	}
	err = dirty_pagemap_scan_each(pagemap_fd, &arg, fn, ctx);
	if (err == -ENOTTY)
		return populated_read(pagemap_fd, start, end, kind, swapped, fn, ctx);
	return err;
}
