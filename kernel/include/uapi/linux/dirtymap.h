/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * dirtymap: which pages of a shared-memory file were written, by anyone.
 *
 * DIRTYMAP_IOC_TRACK on /dev/dirtymap makes a tracker of a range of a shmem
 * file (memfd, tmpfs, /dev/shm, shared anonymous memory) that the caller has
 * open for writing.  A tracker is a file descriptor with a bitmap of its
 * own: every tracker of a range sees every write to it, and collecting from
 * one takes nothing from another.  DIRTYMAP_IOC_COLLECT on the tracker
 * reports the pages written since they were last collected with
 * DIRTYMAP_COLLECT_CLEAN (or since the tracker was made), in every process
 * that maps the file.  Closing the tracker ends it.
 *
 * What is recorded depends on the kernel (dirtymap_track.semantics):
 * with DIRTYMAP_RECORDS_EVERY_WRITE, every change to the content of the
 * range: writes through any shared mapping, whatever happens to its page
 * tables afterwards (unmap, exit, reclaim, migration), write(2) and the
 * other write paths, hole punching and truncation, and kernel writes into
 * pages that are pinned or otherwise referenced.  Without it (the
 * out-of-tree module), only writes whose page-table entries still exist at
 * the collect.
 */
#ifndef _UAPI_LINUX_DIRTYMAP_H
#define _UAPI_LINUX_DIRTYMAP_H

#include <linux/ioctl.h>
#include <linux/types.h>

/* dirtymap_track.flags */
#define DIRTYMAP_TRACK_CLOEXEC		(1u << 0)	/* O_CLOEXEC on the new descriptor */

/* dirtymap_track.semantics (out) */
#define DIRTYMAP_RECORDS_EVERY_WRITE	(1ull << 0)	/* see above */
#define DIRTYMAP_RECORDS_HUGE_WHOLE	(1ull << 1)	/* a huge page may be reported whole */

/*
 * DIRTYMAP_IOC_TRACK: @fd is a shmem file open for writing (-EBADF when it
 * is not open for writing, -EOPNOTSUPP when it is not shmem); @offset and
 * @length are bytes, page aligned, @length at least one page and at most
 * @max_pages pages (-EINVAL).  The range may extend past the end of the
 * file.  Returns the new tracker's descriptor; the range starts clean.
 */
struct dirtymap_track {
	__s32 fd;		/* in: the file */
	__u32 flags;		/* in: DIRTYMAP_TRACK_* */
	__u64 offset;		/* in: bytes */
	__u64 length;		/* in: bytes */
	__u64 semantics;	/* out: DIRTYMAP_RECORDS_* */
	__u32 page_size;	/* out: the page size of the bitmaps */
	__u32 reserved0;	/* in: zero */
	__u64 max_pages;	/* out: the most pages one tracker covers */
	__u64 reserved[4];	/* in: zero */
};

/* dirtymap_collect.flags */
#define DIRTYMAP_COLLECT_CLEAN		(1u << 0)	/* take what is reported */
#define DIRTYMAP_COLLECT_MKWRITE	(1u << 1)	/* force the mkwrite mode */
#define DIRTYMAP_COLLECT_PAGETABLE	(1u << 2)	/* force the page-table mode */

/*
 * dirtymap_collect.mode (out): how the file's writes are being found.
 * MKWRITE: the mappings are write-protected and the first write to a page
 * records it (vmwgfx's "mkwrite" method): a collect costs what was written.
 * PAGETABLE: page-table entries stay writable and their dirty bits are read
 * at each collect: no fault per write, a collect costs the whole range;
 * chosen for a file that is rewritten almost whole at every collect.
 * Both give the same answers.  The module has the page-table mode only.
 */
#define DIRTYMAP_MODE_MKWRITE		1
#define DIRTYMAP_MODE_PAGETABLE		2

/*
 * DIRTYMAP_IOC_COLLECT, on a tracker: sets bit i of the user bitmap at
 * @bitmap when page i of [@offset, @offset + @length) was written, and with
 * DIRTYMAP_COLLECT_CLEAN makes those pages clean for this tracker (a write
 * racing with the call is reported by it or by the next one).  Offsets are
 * the file's, in bytes, page aligned, inside the tracked range (-EINVAL).
 * Every u64 word of the bitmap is written ((length / page_size + 63) / 64);
 * @bitmap 0 with DIRTYMAP_COLLECT_CLEAN cleans without reporting.  @dirty
 * receives the number of pages reported, @mode the mode that ran.  If the
 * bitmap cannot be written (-EFAULT), @done receives the bytes of the range
 * that were reported (and cleaned) before the failure; the rest stays
 * recorded.  On success @done == @length.
 */
struct dirtymap_collect {
	__u64 offset;		/* in: bytes, the file's */
	__u64 length;		/* in: bytes */
	__u64 bitmap;		/* in: user pointer to u64 words, or 0 */
	__u32 flags;		/* in: DIRTYMAP_COLLECT_* */
	__u32 mode;		/* out: DIRTYMAP_MODE_* */
	__u64 dirty;		/* out: pages reported */
	__u64 done;		/* out: bytes handled */
	__u64 reserved[2];	/* in: zero */
};

#define DIRTYMAP_IOC_MAGIC	0xD7
#define DIRTYMAP_IOC_TRACK	_IOWR(DIRTYMAP_IOC_MAGIC, 0x10, struct dirtymap_track)
#define DIRTYMAP_IOC_COLLECT	_IOWR(DIRTYMAP_IOC_MAGIC, 0x11, struct dirtymap_collect)

#endif /* _UAPI_LINUX_DIRTYMAP_H */
