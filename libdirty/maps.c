/* SPDX-License-Identifier: MIT */
/* What a range of memory is, from /proc/PID/smaps. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

#include "libdirty-int.h"

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
