/* SPDX-License-Identifier: MIT */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"

size_t page_size;
bool mem_map_no_thp;
bool mem_map_shared;

const char *mem_kind_name(enum test_mem_kind kind)
{
	static const char *const names[] = { "anon", "shared-anon", "memfd", "file", "hugetlb" };

	return kind < MEM_NKINDS ? names[kind] : "?";
}

bool mem_map(struct test_mem *m, enum test_mem_kind kind, size_t npages, char *why, size_t len)
{
	char path[] = "libdirty-test-XXXXXX";
	int flags = MAP_SHARED;

	memset(m, 0, sizeof(*m));
	m->kind = kind;
	m->fd = -1;
	m->page = kind == MEM_HUGETLB ? hugetlb_page_size() : page_size;
	m->len = npages * m->page;
	switch (kind) {
	case MEM_ANON:
		flags = MAP_PRIVATE | MAP_ANONYMOUS;
		break;
	case MEM_SHARED_ANON:
		flags = MAP_SHARED | MAP_ANONYMOUS;
		break;
	case MEM_MEMFD:
		m->fd = memfd_create("libdirty-test", MFD_CLOEXEC);
		break;
	case MEM_FILE:
		/* in the working directory: a disk file system, not tmpfs */
		m->fd = mkstemp(path);
		if (m->fd >= 0)
			unlink(path);
		break;
	case MEM_HUGETLB:
		flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB;
		break;
	default:
		snprintf(why, len, "no such kind");
		return false;
	}
	if ((kind == MEM_MEMFD || kind == MEM_FILE) &&
	    (m->fd < 0 || ftruncate(m->fd, (off_t)m->len) < 0)) {
		snprintf(why, len, "cannot create the %s: %s", mem_kind_name(kind), strerror(errno));
		return false;
	}
	m->addr = mmap(NULL, m->len, PROT_READ | PROT_WRITE, flags, m->fd, 0);
	if (m->addr == MAP_FAILED) {
		snprintf(why, len, "mmap of %s memory failed: %s%s", mem_kind_name(kind),
			 strerror(errno),
			 kind == MEM_HUGETLB ? " (reserve huge pages: vm.nr_hugepages)" : "");
		m->addr = NULL;
		if (m->fd >= 0)
			close(m->fd);
		return false;
	}
	if (kind == MEM_ANON && mem_map_no_thp)
		madvise(m->addr, m->len, MADV_NOHUGEPAGE);
	for (size_t i = 0; i < m->len; i += page_size)
		m->addr[i] = (char)(i / page_size);
	return true;
}

void mem_unmap(struct test_mem *m)
{
	if (m->addr)
		munmap(m->addr, m->len);
	if (m->fd >= 0)
		close(m->fd);
	m->addr = NULL;
	m->fd = -1;
}

char *map_isolated(size_t len)
{
	char *raw = mmap(NULL, len + 2 * page_size, PROT_NONE,
			 (mem_map_shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS, -1, 0);

	ck_assert_ptr_ne(raw, MAP_FAILED);
	ck_assert_int_eq(mprotect(raw + page_size, len, PROT_READ | PROT_WRITE), 0);
	return raw + page_size;
}

void unmap_isolated(char *mem, size_t len)
{
	munmap(mem - page_size, len + 2 * page_size);
}

size_t hugetlb_page_size(void)
{
	static size_t size;
	unsigned long kib;
	char line[128];
	FILE *f;

	if (size)
		return size;
	size = 2 * 1024 * 1024;
	f = fopen("/proc/meminfo", "re");
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "Hugepagesize: %lu kB", &kib) == 1 && kib)
			size = (size_t)kib * 1024;
	if (f)
		fclose(f);
	return size;
}

size_t thp_page_size(void)
{
	static size_t size;
	unsigned long bytes;
	FILE *f;

	if (size)
		return size;
	size = 2 * 1024 * 1024;
	f = fopen("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", "re");
	if (f && fscanf(f, "%lu", &bytes) == 1 && bytes)
		size = (size_t)bytes;
	if (f)
		fclose(f);
	return size;
}

const char *test_backend(void)
{
	const char *name = getenv("DIRTY_TEST_BACKEND");
	char why[512];
	int err;

	page_size = (size_t)sysconf(_SC_PAGESIZE);
	if (!name) {
		fprintf(stderr, "DIRTY_TEST_BACKEND is not set\n");
		exit(1);
	}
	err = dirty_backend_probe(name, 0, why, sizeof(why));
	if (err)
		tap_skip_all("backend %s is not usable here: %s", name, why);
	return name;
}

struct dirty_tracker *tracker_new(void)
{
	/* $DIRTY_TEST_SPARSE=1: the whole suite under DIRTY_TRACKER_SPARSE */
	const char *sparse = getenv("DIRTY_TEST_SPARSE");

	return tracker_new_flags(sparse && !strcmp(sparse, "1") ? DIRTY_TRACKER_SPARSE : 0);
}

struct dirty_tracker *tracker_new_flags(unsigned flags)
{
	struct dirty_options opts = { .sz = sizeof(opts), .backend = test_backend(), .flags = flags };
	struct dirty_tracker *t = NULL;
	int err;

	err = dirty_tracker_new(&opts, &t);
	ck_assert_msg(err == 0, "dirty_tracker_new(%s): %s", opts.backend, strerror(-err));
	ck_assert_str_eq(dirty_tracker_backend(t), opts.backend);
	return t;
}

size_t collect_all(struct dirty_tracker *t, void *addr, size_t len, unsigned flags,
		   struct dirty_range *out, size_t max)
{
	char *cur = addr, *end = (char *)addr + len;
	size_t total = 0;
	void *next;

	while (cur < end) {
		ssize_t n = dirty_collect(t, cur, (size_t)(end - cur), flags, out + total,
					  max - total, &next);

		ck_assert_msg(n >= 0, "dirty_collect: %s", strerror((int)-n));
		ck_assert_msg((char *)next > cur || n > 0, "no progress");
		total += (size_t)n;
		if ((char *)next < end)
			ck_assert_uint_eq(total, max);
		ck_assert((char *)next <= end);
		cur = next;
		if (total == max)
			break;
	}
	return total;
}

unsigned long read_ulong_file(const char *path)
{
	unsigned long value = 0;
	FILE *f = fopen(path, "r");

	ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
	ck_assert_int_eq(fscanf(f, "%lu", &value), 1);
	fclose(f);
	return value;
}

bool thp_enabled(char *why, size_t len)
{
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
	char buf[64] = "";
	bool on = f && fgets(buf, sizeof(buf), f) && !strstr(buf, "[never]");

	if (f)
		fclose(f);
	buf[strcspn(buf, "\n")] = '\0';
	if (!on)
		snprintf(why, len, "transparent huge pages are off or absent (%s)",
			 buf[0] ? buf : "no sysfs file");
	return on;
}

bool thp_backed(const void *addr, size_t len)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	unsigned long lo, hi, kb;
	bool in = false, backed = false;
	char line[512], perms[5];

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx %4s", &lo, &hi, perms) == 3)
			in = lo <= (uintptr_t)addr && (uintptr_t)addr < hi;
		else if (in && sscanf(line, "AnonHugePages: %lu kB", &kb) == 1)
			backed = kb * 1024 >= len;
	}
	fclose(f);
	return backed;
}
