// SPDX-License-Identifier: GPL-2.0
/*
 * NOT FOR USE: version 1 of the dirtymap module (libdirty 88a06fa), kept only
 * as the negative control of kernel/tests/dirtymap-race.c.  It runs the page
 * walk of Linux 6.12's mapping_dirty_helpers, which modifies migration
 * entries, and the race test must show that (tests/vm/run-matrix.sh, kernel
 * "6.12-v1").  kernel/dirtymap.c is the module to use.
 */
/*
 * dirtymap - address_space-wide dirty tracking of shared-memory files
 *
 * /dev/dirtymap exposes wp_shared_mapping_range() and
 * clean_record_shared_mapping_range() (mm/mapping_dirty_helpers.c) to user
 * space: for a range of a shmem file (memfd, tmpfs, /dev/shm, shared
 * anonymous memory) that the caller has open for writing, it write-protects,
 * or cleans and records, the page-table entries of every shared mapping of
 * the range, in every process.  See Documentation/userspace-api/dirtymap.rst
 * and include/uapi/linux/dirtymap.h.
 *
 * The same source builds in the tree (drivers/misc, CONFIG_DIRTYMAP) and as
 * an out-of-tree module against a distribution kernel's headers.  A kernel
 * whose helpers define MAPPING_DIRTY_HELPERS_FULL (the patch series that adds
 * this driver) records and cleans huge PMDs, moves the dirty bit of each
 * cleaned entry to its folio, and walks every mapping of the range.  Without
 * it (the helpers of Linux 6.12 as released), this driver works around what
 * it can and documents the rest:
 *
 * - Huge pages: the helpers skip huge PMDs, so a write through one would be
 *   missed.  A file whose mount may allocate huge pages (the huge= mount
 *   option, or the shmem_enabled knob for memfds and shared anonymous
 *   memory) is refused with -EOPNOTSUPP.  A PMD-sized folio found in the
 *   range anyway (per-size mTHP knobs, "force") is reported dirty as a whole
 *   at every clean-and-record and left out of the walk: a false positive,
 *   never a lost write.
 * - No data loss: the helpers clear the dirty bit of a page-table entry
 *   without moving it to the folio, and reclaim drops a clean shmem folio.
 *   Every folio of the range in the page cache is marked dirty before the
 *   walk, and every folio recorded dirty again after it.  A folio that is
 *   first faulted in between the two passes, written, cleaned by the walk and
 *   reclaimed before the second pass (microseconds) would lose its data.
 * - Mappings the helpers do not handle: walk_page_mapping() stops at the
 *   first mapping that the helpers' test_walk refuses (private, read-only or
 *   hugetlb), so the shared mappings after it in the interval tree are not
 *   walked.  Pages of the file that such a mapping covers are reported dirty
 *   at every clean-and-record (and left out of the walk) for as long as that
 *   mapping exists; such a mapping created during a walk is caught by a
 *   second look after it, unless it was also removed before that.
 * - Pages under migration: the helpers test pte_dirty() and pte_write() on
 *   every pte, present or not, and on x86-64 pte_dirty() can be true for a
 *   migration entry, which clean_record_pte() then modifies.  A collect
 *   racing with the migration of a page of the file (compaction, NUMA
 *   balancing) can thus damage that migration entry ("BUG: Bad page map").
 *   A module cannot avoid it: the page walker is not exported.
 */

#include <linux/bitmap.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/pagemap.h>
#include <linux/pagevec.h>
#include <linux/rbtree.h>
#include <linux/sched.h>
#include <linux/shmem_fs.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include "dirtymap-v1.h"

/* Pages handled per step: a 4 KiB kernel bitmap; a multiple of 64. */
#define DIRTYMAP_CHUNK_PAGES	(8 * 4096UL)
/* Most pages one call may cover: 64 GiB with 4 KiB pages. */
#define DIRTYMAP_MAX_PAGES	(1UL << 24)

#ifndef SHMEM_HUGE_NEVER
#define SHMEM_HUGE_NEVER	0	/* mm/shmem.c: huge=never */
#endif

/**
 * struct dirtymap_chunk - Working state of one ioctl.
 * @mapping: The address_space of the shmem file.
 * @bitmap: One bit per page of the current chunk.
 * @words: @bitmap as u64 words, as user space reads them.
 * @dirty: Pages recorded dirty so far.
 * @changed: Page-table entries changed so far.
 */
struct dirtymap_chunk {
	struct address_space *mapping;
	unsigned long *bitmap;
	u64 *words;
	u64 dirty;
	u64 changed;
};

#ifdef MAPPING_DIRTY_HELPERS_FULL

#define DIRTYMAP_FLAGS	(DIRTYMAP_INFO_HUGE_PMD | DIRTYMAP_INFO_FOLIO_DIRTY)

static bool dirtymap_may_be_huge(struct inode *inode)
{
	return false;
}

static void dirtymap_mark_forced(struct dirtymap_chunk *c, pgoff_t first,
				 pgoff_t nr, bool clean)
{
}

static bool dirtymap_walk_was_cut(struct dirtymap_chunk *c, pgoff_t first,
				  pgoff_t nr)
{
	return false;
}

static void dirtymap_redirty(struct dirtymap_chunk *c, pgoff_t first,
			     pgoff_t nr)
{
}

#else /* !MAPPING_DIRTY_HELPERS_FULL */

#define DIRTYMAP_FLAGS	0

/*
 * The helpers skip huge PMDs: refuse a file whose mount may allocate huge
 * folios.  For memfds and shared anonymous memory (the internal shm mount)
 * this follows /sys/kernel/mm/transparent_hugepage/shmem_enabled.
 */
static bool dirtymap_may_be_huge(struct inode *inode)
{
#ifdef CONFIG_TRANSPARENT_HUGEPAGE
	struct shmem_sb_info *sbinfo = inode->i_sb->s_fs_info;

	return sbinfo->huge != SHMEM_HUGE_NEVER;
#else
	return false;
#endif
}

/* Whether walk_page_mapping() stops at @vma (see wp_clean_test_walk()). */
static bool dirtymap_vma_stops_walk(struct vm_area_struct *vma)
{
	unsigned long vm_flags = READ_ONCE(vma->vm_flags);

	return (vm_flags & (VM_SHARED | VM_MAYWRITE | VM_HUGETLB)) !=
		(VM_SHARED | VM_MAYWRITE);
}

/*
 * Set the bits of the pages in [@first, @first + @nr) that a mapping the
 * walk stops at covers.  vma_interval_tree_iter_first() is not exported:
 * visit the whole tree (a file has few mappings).
 */
static void dirtymap_mark_stoppers(struct dirtymap_chunk *c, pgoff_t first,
				   pgoff_t nr)
{
	struct address_space *mapping = c->mapping;
	struct rb_node *node;

	i_mmap_lock_read(mapping);
	for (node = rb_first_cached(&mapping->i_mmap); node;
	     node = rb_next(node)) {
		struct vm_area_struct *vma =
			rb_entry(node, struct vm_area_struct, shared.rb);
		pgoff_t s = max(vma->vm_pgoff, first);
		pgoff_t e = min(vma->vm_pgoff + vma_pages(vma), first + nr);

		if (s < e && dirtymap_vma_stops_walk(vma))
			bitmap_set(c->bitmap, s - first, e - s);
	}
	i_mmap_unlock_read(mapping);
}

/* Whether a mapping the walk stops at overlaps [@first, @first + @nr). */
static bool dirtymap_walk_was_cut(struct dirtymap_chunk *c, pgoff_t first,
				  pgoff_t nr)
{
	struct address_space *mapping = c->mapping;
	struct rb_node *node;
	bool cut = false;

	i_mmap_lock_read(mapping);
	for (node = rb_first_cached(&mapping->i_mmap); node && !cut;
	     node = rb_next(node)) {
		struct vm_area_struct *vma =
			rb_entry(node, struct vm_area_struct, shared.rb);

		cut = vma->vm_pgoff < first + nr &&
		      vma->vm_pgoff + vma_pages(vma) > first &&
		      dirtymap_vma_stops_walk(vma);
	}
	i_mmap_unlock_read(mapping);
	return cut;
}

/* Mark @folio dirty unless it left @mapping (truncation). */
static void dirtymap_dirty_folio(struct address_space *mapping,
				 struct folio *folio)
{
	if (folio_test_dirty(folio))
		return;
	folio_lock(folio);
	if (folio->mapping == mapping)
		folio_mark_dirty(folio);
	folio_unlock(folio);
}

/*
 * Set the bits that the walk must not cover and that are reported dirty
 * whatever the page tables say: PMD-sized folios (the helpers skip huge
 * PMDs) and pages under mappings the walk stops at.  With @clean, mark every
 * folio of the range dirty first: the walk is about to clear the dirty bits
 * of page-table entries that reclaim would otherwise move to the folio.
 */
static void dirtymap_mark_forced(struct dirtymap_chunk *c, pgoff_t first,
				 pgoff_t nr, bool clean)
{
	pgoff_t index = first, last = first + nr - 1;
	struct folio_batch fbatch;
	unsigned int i;

	folio_batch_init(&fbatch);
	while (filemap_get_folios(c->mapping, &index, last, &fbatch)) {
		for (i = 0; i < folio_batch_count(&fbatch); i++) {
			struct folio *folio = fbatch.folios[i];
			pgoff_t s, e;

			if (clean)
				dirtymap_dirty_folio(c->mapping, folio);
			if (!folio_test_pmd_mappable(folio))
				continue;
			s = max(folio->index, first);
			e = min(folio_next_index(folio), first + nr);
			if (s < e)
				bitmap_set(c->bitmap, s - first, e - s);
		}
		folio_batch_release(&fbatch);
		cond_resched();
	}
	dirtymap_mark_stoppers(c, first, nr);
}

/* Second pass: mark the folio of every page recorded dirty. */
static void dirtymap_redirty(struct dirtymap_chunk *c, pgoff_t first,
			     pgoff_t nr)
{
	unsigned long bit;

	for_each_set_bit(bit, c->bitmap, nr) {
		struct folio *folio = filemap_get_folio(c->mapping, first + bit);

		if (IS_ERR(folio))
			continue;
		dirtymap_dirty_folio(c->mapping, folio);
		bit = folio_next_index(folio) - 1 - first;
		folio_put(folio);
	}
}

#endif /* MAPPING_DIRTY_HELPERS_FULL */

/*
 * Write-protect, or clean and record, the pages [@first, @first + @nr) of
 * c->mapping into c->bitmap (bit 0 = @first).  The bits already set (forced)
 * are left out of the walk.
 */
static void dirtymap_walk_chunk(struct dirtymap_chunk *c, pgoff_t first,
				pgoff_t nr, bool clean)
{
	unsigned long s, e = 0;
	pgoff_t start, end;

	for (;;) {
		s = find_next_zero_bit(c->bitmap, nr, e);
		if (s >= nr)
			break;
		e = find_next_bit(c->bitmap, nr, s);
		if (!clean) {
			c->changed += wp_shared_mapping_range(c->mapping,
							      first + s, e - s);
		} else {
			start = 0;
			end = 0;
			c->changed += clean_record_shared_mapping_range(c->mapping,
					first + s, e - s, first, c->bitmap,
					&start, &end);
		}
		/* a mapping that cut the walk short: report [s, e) whole */
		if (dirtymap_walk_was_cut(c, first + s, e - s))
			bitmap_set(c->bitmap, s, e - s);
		cond_resched();
	}
}

static long dirtymap_range(struct file *dev, unsigned int cmd,
			   struct dirtymap_range __user *argp)
{
	bool clean = cmd == DIRTYMAP_IOC_CLEAN_RECORD;
	struct dirtymap_chunk c = { };
	struct dirtymap_range r;
	u64 __user *ubitmap;
	pgoff_t first, npages, done, nr;
	struct file *file;
	long ret;

	if (copy_from_user(&r, argp, sizeof(r)))
		return -EFAULT;
	if (r.flags || r.reserved[0] || r.reserved[1])
		return -EINVAL;
	if (!PAGE_ALIGNED(r.offset) || !PAGE_ALIGNED(r.length) || !r.length ||
	    r.length >> PAGE_SHIFT > DIRTYMAP_MAX_PAGES ||
	    r.offset > MAX_LFS_FILESIZE || r.length > MAX_LFS_FILESIZE - r.offset)
		return -EINVAL;
	first = r.offset >> PAGE_SHIFT;
	npages = r.length >> PAGE_SHIFT;
	ubitmap = clean ? u64_to_user_ptr(r.bitmap) : NULL;

	file = fget(r.fd);
	if (!file)
		return -EBADF;
	ret = -EBADF;
	if (!(file->f_mode & FMODE_WRITE))
		goto out_fput;
	ret = -EOPNOTSUPP;
	c.mapping = file->f_mapping;
	if (!shmem_mapping(c.mapping) ||
	    dirtymap_may_be_huge(file_inode(file)))
		goto out_fput;

	ret = -ENOMEM;
	c.bitmap = bitmap_zalloc(DIRTYMAP_CHUNK_PAGES, GFP_KERNEL);
	c.words = kcalloc(DIRTYMAP_CHUNK_PAGES / 64, sizeof(u64), GFP_KERNEL);
	if (!c.bitmap || !c.words)
		goto out_free;

	/* a bad bitmap pointer fails the call before anything is cleaned */
	ret = -EFAULT;
	for (done = 0; ubitmap && done < npages; done += nr) {
		nr = min(npages - done, DIRTYMAP_CHUNK_PAGES);
		if (copy_to_user(ubitmap + done / 64, c.words,
				 DIV_ROUND_UP(nr, 64) * sizeof(u64)))
			goto out_free;
	}

	for (done = 0; done < npages; done += nr) {
		nr = min(npages - done, DIRTYMAP_CHUNK_PAGES);
		bitmap_zero(c.bitmap, nr);
		dirtymap_mark_forced(&c, first + done, nr, clean);
		dirtymap_walk_chunk(&c, first + done, nr, clean);
		if (!clean)
			continue;
		dirtymap_redirty(&c, first + done, nr);
		c.dirty += bitmap_weight(c.bitmap, nr);
		if (!ubitmap)
			continue;
		bitmap_to_arr64(c.words, c.bitmap, nr);
		/* only if user space unmapped the bitmap meanwhile */
		if (copy_to_user(ubitmap + done / 64, c.words,
				 DIV_ROUND_UP(nr, 64) * sizeof(u64)))
			goto out_free;
	}

	r.dirty = c.dirty;
	r.changed = c.changed;
	ret = copy_to_user(argp, &r, sizeof(r)) ? -EFAULT : 0;
out_free:
	kfree(c.words);
	bitmap_free(c.bitmap);
out_fput:
	fput(file);
	return ret;
}

static long dirtymap_ioctl(struct file *dev, unsigned int cmd,
			   unsigned long arg)
{
	void __user *argp = (void __user *)arg;
	struct dirtymap_info info = {
		.version = DIRTYMAP_VERSION,
		.flags = DIRTYMAP_FLAGS,
		.page_size = PAGE_SIZE,
		.max_pages = DIRTYMAP_MAX_PAGES,
	};

	switch (cmd) {
	case DIRTYMAP_IOC_INFO:
		return copy_to_user(argp, &info, sizeof(info)) ? -EFAULT : 0;
	case DIRTYMAP_IOC_WRITE_PROTECT:
	case DIRTYMAP_IOC_CLEAN_RECORD:
		return dirtymap_range(dev, cmd, argp);
	default:
		return -ENOTTY;
	}
}

static const struct file_operations dirtymap_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = dirtymap_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
};

/*
 * Anyone may open the device: every operation needs a file descriptor of the
 * file open for writing, whose owner could write every page of it anyway.
 */
static struct miscdevice dirtymap_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "dirtymap",
	.fops = &dirtymap_fops,
	.mode = 0666,
};

module_misc_device(dirtymap_dev);

MODULE_DESCRIPTION("address_space-wide dirty tracking of shared-memory files");
MODULE_LICENSE("GPL");
