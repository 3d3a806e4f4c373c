/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * dirtymap: address_space-wide dirty tracking of shared-memory files.
 *
 * /dev/dirtymap write-protects, or cleans and records, the page-table
 * entries of every shared mapping of a range of a shmem file (memfd, tmpfs,
 * /dev/shm, shared anonymous memory), in every process that maps it.  A page
 * is reported dirty when a page-table entry mapping it was dirty in any
 * process.  Writes made with write(2) and friends, which go through no
 * page-table entry, are not seen.
 */
#ifndef _UAPI_LINUX_DIRTYMAP_H
#define _UAPI_LINUX_DIRTYMAP_H

#include <linux/ioctl.h>
#include <linux/types.h>

/* DIRTYMAP_IOC_INFO returns this; a different major is incompatible. */
#define DIRTYMAP_VERSION_MAJOR 1
#define DIRTYMAP_VERSION_MINOR 0
#define DIRTYMAP_VERSION ((DIRTYMAP_VERSION_MAJOR << 16) | DIRTYMAP_VERSION_MINOR)

/* dirtymap_info.flags: what this build of the driver does */
#define DIRTYMAP_INFO_HUGE_PMD	(1u << 0) /* huge PMD mappings are cleaned and recorded */
#define DIRTYMAP_INFO_FOLIO_DIRTY (1u << 1) /* dirty bits reach the folio before the clean */

struct dirtymap_info {
	__u32 version;		/* out: DIRTYMAP_VERSION */
	__u32 flags;		/* out: DIRTYMAP_INFO_* */
	__u64 page_size;	/* out: PAGE_SIZE */
	__u64 max_pages;	/* out: most pages one call may cover */
	__u64 reserved[4];	/* out: zero */
};

/*
 * A range of a file.  @fd must be open for writing (-EBADF otherwise) on a
 * shmem file (-EOPNOTSUPP for any other kind); @offset and @length are in
 * bytes, page aligned, @length not 0 and at most max_pages pages (-EINVAL);
 * the range may extend past the end of the file.  @flags must be 0.
 *
 * DIRTYMAP_IOC_CLEAN_RECORD sets bit i of the user bitmap at @bitmap
 * ((length / page_size + 63) / 64 u64 words, all of them written: bits of
 * clean pages are 0) when page i of the range was dirty, and makes those
 * pages clean.  @bitmap may be 0 to clean without recording.
 *
 * A huge page mapped whole (a PMD) is recorded whole when any process
 * wrote it; where the driver cannot clean huge mappings
 * (DIRTYMAP_INFO_HUGE_PMD is not set), such a page is reported dirty at
 * every call, and a file whose mount may allocate huge pages is refused
 * (-EOPNOTSUPP).
 *
 * DIRTYMAP_IOC_WRITE_PROTECT write-protects every writable page-table entry
 * of the range: the next write through any of them faults, and so is
 * ordered after the call.  Clean-and-record after write-protect gives an
 * exact snapshot.  Entries of pages that the next clean-and-record reports
 * dirty anyway are left writable: a dirty huge PMD (a write fault would
 * split it and lose its dirty bit), and the pages a driver without
 * DIRTYMAP_INFO_HUGE_PMD reports at every call.
 */
struct dirtymap_range {
	__s32 fd;
	__u32 flags;
	__u64 offset;
	__u64 length;
	__u64 bitmap;		/* user pointer to u64 words, or 0 */
	__u64 dirty;		/* out: pages recorded dirty */
	__u64 changed;		/* out: page-table entries changed */
	__u64 reserved[2];	/* in: zero */
};

#define DIRTYMAP_IOC_MAGIC 0xD7
#define DIRTYMAP_IOC_INFO	 _IOR(DIRTYMAP_IOC_MAGIC, 0, struct dirtymap_info)
#define DIRTYMAP_IOC_WRITE_PROTECT _IOWR(DIRTYMAP_IOC_MAGIC, 1, struct dirtymap_range)
#define DIRTYMAP_IOC_CLEAN_RECORD  _IOWR(DIRTYMAP_IOC_MAGIC, 2, struct dirtymap_range)

#endif /* _UAPI_LINUX_DIRTYMAP_H */
