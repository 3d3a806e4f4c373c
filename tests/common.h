/* SPDX-License-Identifier: MIT */
/* Helpers shared by the test programs. */
#ifndef LIBDIRTY_TESTS_COMMON_H
#define LIBDIRTY_TESTS_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "libdirty.h"
#include "tap.h"

/* The memory kinds every backend must handle. */
enum test_mem_kind {
	MEM_ANON,        /* MAP_PRIVATE | MAP_ANONYMOUS */
	MEM_SHARED_ANON, /* MAP_SHARED | MAP_ANONYMOUS (shmem) */
	MEM_MEMFD,       /* MAP_SHARED of a memfd */
	MEM_FILE,        /* MAP_SHARED of a regular file on disk */
	MEM_HUGETLB,     /* MAP_HUGETLB, when huge pages are reserved */
	MEM_NKINDS,
};

struct test_mem {
	enum test_mem_kind kind;
	char *addr;
	size_t len;
	size_t page; /* the tracking granularity: base or huge page */
	int fd;
};

extern size_t page_size;
/*
 * The kernel's huge page sizes, which follow the base page: 2 MiB with 4 KiB
 * pages, 32 MiB with arm64's 16 KiB.  hugetlb_page_size(): the default hugetlb
 * size (/proc/meminfo Hugepagesize); thp_page_size(): a PMD-mapped
 * transparent huge page (/sys/kernel/mm/transparent_hugepage/hpage_pmd_size).
 * Both 2 MiB where the kernel does not say.
 */
size_t hugetlb_page_size(void);
size_t thp_page_size(void);
/*
 * mem_map() gives private anonymous memory MADV_NOHUGEPAGE: set for backends
 * that report transparent huge pages whole (soft-dirty), so that the tests of
 * base-page answers test those; the thp suite tests huge pages themselves.
 */
extern bool mem_map_no_thp;
/* map_isolated() maps shared anonymous memory (the mapping backend's tests) */
extern bool mem_map_shared;

const char *mem_kind_name(enum test_mem_kind kind);
/*
 * Map npages granularity pages of the kind, populated with a pattern.
 * Returns false (with the reason in why) if this machine cannot have it.
 */
bool mem_map(struct test_mem *m, enum test_mem_kind kind, size_t npages, char *why, size_t len);
void mem_unmap(struct test_mem *m);

/*
 * Private anonymous memory between two PROT_NONE guard pages, so that the
 * kernel cannot merge it with a neighbour.  For memory mapped while other
 * memory is tracked: under soft-dirty the kernel marks a mapping that grows
 * by a merge soft-dirty as a whole (documented), which would make the
 * tracked neighbour read dirty.
 */
char *map_isolated(size_t len);
void unmap_isolated(char *mem, size_t len);

/* The backend named by $DIRTY_TEST_BACKEND; tap_skip_all() with the reason if unusable. */
const char *test_backend(void);
struct dirty_tracker *tracker_new(void);
struct dirty_tracker *tracker_new_flags(unsigned flags);

/* Collect [addr, addr+len) fully (resuming as needed) into runs; returns count. */
size_t collect_all(struct dirty_tracker *t, void *addr, size_t len, unsigned flags,
		   struct dirty_range *out, size_t max);

/* Whether transparent huge pages are on; if not, false and why. */
bool thp_enabled(char *why, size_t len);
/*
 * Whether the kernel maps len bytes of the private anonymous mapping at addr
 * with huge pages (its AnonHugePages: the test wrote only those bytes).
 */
bool thp_backed(const void *addr, size_t len);

/* The number at the start of a file such as /proc/sys/vm/max_map_count. */
unsigned long read_ulong_file(const char *path);

#endif
