/* SPDX-License-Identifier: MIT */
/*
 * Kernel uapi that Debian 12's linux-libc-dev (6.1) lacks.
 *
 * Every value here is copied from the mainline uapi headers
 * (include/uapi/linux/fs.h and include/uapi/linux/userfaultfd.h, 6.7+) and
 * guarded by #ifndef so that newer system headers win.  The structures are
 * ABI: their layout must never differ from the kernel's.
 */
#ifndef LIBDIRTY_LINUX_COMPAT_H
#define LIBDIRTY_LINUX_COMPAT_H

#include <linux/fs.h>
#include <linux/types.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>

/* ---- userfaultfd (include/uapi/linux/userfaultfd.h) ---- */
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1 /* 5.11 */
#endif
#ifndef USERFAULTFD_IOC
#define USERFAULTFD_IOC 0xAA
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(USERFAULTFD_IOC, 0x00) /* 6.1 */
#endif
#ifndef UFFD_FEATURE_EXACT_ADDRESS
#define UFFD_FEATURE_EXACT_ADDRESS (1 << 11)
#endif
#ifndef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM (1 << 12) /* 5.19 */
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13) /* 6.4 */
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14) /* 6.6 */
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15) /* 6.7 */
#endif
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16) /* 6.8 */
#endif
/*
 * Read-write protection (7.2): a registered range made inaccessible with
 * UFFDIO_RWPROTECT faults on the next read or write; in RWP_ASYNC mode the
 * kernel resolves the fault itself, and PAGEMAP_SCAN's PAGE_IS_ACCESSED tells
 * which pages were touched.  Names and values as in Debian's 7.3.4
 * include/uapi/linux/userfaultfd.h; no backend uses them yet.
 */
#ifndef UFFD_FEATURE_RWP
#define UFFD_FEATURE_RWP (1 << 17)
#define UFFD_FEATURE_RWP_ASYNC (1 << 18)
#define UFFDIO_REGISTER_MODE_RWP ((__u64)1 << 3)
#define _UFFDIO_RWPROTECT (0x09)
struct uffdio_rwprotect {
	struct uffdio_range range;
#define UFFDIO_RWPROTECT_MODE_RWP ((__u64)1 << 0)
#define UFFDIO_RWPROTECT_MODE_DONTWAKE ((__u64)1 << 1)
	__u64 mode;
};
#define UFFDIO_RWPROTECT _IOWR(UFFDIO, _UFFDIO_RWPROTECT, struct uffdio_rwprotect)
#endif

/* ---- PAGEMAP_SCAN (include/uapi/linux/fs.h, 6.7) ---- */
#ifndef PAGEMAP_SCAN

/* Categories, in pm_scan_arg masks and in page_region.categories. */
#define PAGE_IS_WPALLOWED (1 << 0)
#define PAGE_IS_WRITTEN (1 << 1)
#define PAGE_IS_FILE (1 << 2)
#define PAGE_IS_PRESENT (1 << 3)
#define PAGE_IS_SWAPPED (1 << 4)
#define PAGE_IS_PFNZERO (1 << 5)
#define PAGE_IS_HUGE (1 << 6)
#define PAGE_IS_SOFT_DIRTY (1 << 7)

/* One run of pages with the same categories: [start, end). */
struct page_region {
	__u64 start;
	__u64 end;
	__u64 categories;
};

/* Flags for PAGEMAP_SCAN. */
#define PM_SCAN_WP_MATCHING (1 << 0)   /* write-protect the pages matched */
#define PM_SCAN_CHECK_WPASYNC (1 << 1) /* fail on a vma without async uffd-wp */

struct pm_scan_arg {
	__u64 size;
	__u64 flags;
	__u64 start;
	__u64 end;
	__u64 walk_end;
	__u64 vec;
	__u64 vec_len;
	__u64 max_pages;
	__u64 category_inverted;
	__u64 category_mask;
	__u64 category_anyof_mask;
	__u64 return_mask;
};

#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)

#endif /* PAGEMAP_SCAN */

#ifndef PAGE_IS_GUARD
#define PAGE_IS_GUARD (1 << 8) /* 6.14 */
#endif

#endif /* LIBDIRTY_LINUX_COMPAT_H */
