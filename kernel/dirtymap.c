// SPDX-License-Identifier: GPL-2.0
/*
 * dirtymap - which pages of a shared-memory file were written, by anyone
 *
 * /dev/dirtymap makes trackers of ranges of shmem files (memfd, tmpfs,
 * /dev/shm, shared anonymous memory): DIRTYMAP_IOC_TRACK returns a file
 * descriptor with a bitmap of its own, and DIRTYMAP_IOC_COLLECT on it
 * reports the pages written since they were last collected, in every
 * process that maps the file.  Every tracker of a range sees every write:
 * a write is recorded in all of them, and a collect takes only its own.
 * See Documentation/userspace-api/dirtymap.rst and
 * include/uapi/linux/dirtymap.h.
 *
 * The kernel records writes as they happen, in the bitmaps of every
 * tracker of the file (mapping_write_tracker_add()): the first write to a
 * write-protected page of a tracked file, write(2) and the other shmem
 * write paths, hole punching and truncation, and the dirty bit of every
 * page-table entry that goes away.  A collect takes its bits and
 * write-protects again, folio by folio, what it returns (vmwgfx's "mkwrite"
 * method), or, for a file rewritten almost whole at every collect, leaves
 * the entries writable and reads their dirty bits (the "page-table"
 * method); the driver switches between them by the fraction of the file
 * each collect finds written.
 */
#ifndef MAPPING_WRITE_TRACKERS
/*
 * The same source builds as an out-of-tree module against a distribution
 * kernel's headers (libdirty's kernel/).  Without write trackers nothing
 * can be hooked: a collect reads the page tables.  For each folio of the
 * range it locks the folio (so that no migration entry for it can exist,
 * and reclaim waits), write-protects and cleans every page-table entry
 * that maps it (folio_mkclean(), which only ever touches present entries
 * that map that folio), records the folio in every tracker of the file if
 * one was writable or dirty, marks the folio dirty (its entries' dirty bits
 * are gone) and unlocks it; the bitmap is copied to user space only after
 * (it may live in the same file).  Writes whose entries are gone before
 * the collect (unmap, exit, reclaim) and write(2) are not seen, and a page
 * mapped again by a read fault (or its fault-around) after it was dropped
 * is reported once: "page-table entries only".
 */
#endif

#include <linux/anon_inodes.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/hashtable.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pagemap.h>
#include <linux/pagevec.h>
#include <linux/rmap.h>
#include <linux/sched/signal.h>
#include <linux/shmem_fs.h>
#include <linux/slab.h>
#include <linux/swap.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>
#include <linux/dirtymap.h>

/* Most pages one tracker covers: 64 GiB with 4 KiB pages (a 2 MiB bitmap). */
#define DIRTYMAP_MAX_PAGES	(1UL << 24)
/* Pages handled per step of a collect: huge-page aligned, a 4 KiB bitmap. */
#define DIRTYMAP_CHUNK_PAGES	(8 * 4096UL)
/* Collects voting for the other method before the driver switches. */
#define DIRTYMAP_SWITCH_VOTES	3

/**
 * struct dirtymap_file - The trackers of one file.
 * @node: In dirtymap_files, hashed by @mapping.
 * @mapping: The file's address_space.
 * @lock: Serializes collects, tracker changes and method switches.
 * @refs: References (trackers, and callers of dirtymap_file_get()), under
 *        dirtymap_files_lock.
 * @trackers: The trackers of the file (under @lock).
 * @ntrackers: Number of them.
 * @mode: DIRTYMAP_MODE_MKWRITE or DIRTYMAP_MODE_PAGETABLE.
 * @votes: Consecutive collects that found the other method cheaper.
 */
struct dirtymap_file {
	struct hlist_node node;
	struct address_space *mapping;
	struct mutex lock;
	unsigned int refs;
	struct list_head trackers;
	unsigned int ntrackers;
	unsigned int mode;
	unsigned int votes;
};

/**
 * struct dirtymap_tracker - A tracker: what its file descriptor holds.
 * @file: The tracked file (a reference).
 * @df: The trackers of that file.
 * @node: In df->trackers.
 * @mwt: What mm records writes in (in the tree): its range and bitmap.
 * @first: First page of the range.
 * @nr: Pages in the range.
 * @bitmap: Bit i set when page @first + i was written (atomic bit ops).
 */
struct dirtymap_tracker {
	struct file *file;
	struct dirtymap_file *df;
	struct list_head node;
#ifdef MAPPING_WRITE_TRACKERS
	struct mapping_write_tracker mwt;
#endif
	pgoff_t first;
	pgoff_t nr;
	unsigned long *bitmap;
};

static DEFINE_HASHTABLE(dirtymap_files, 6);
static DEFINE_MUTEX(dirtymap_files_lock);

/* Set the bits of [@index, @index + @nr) that lie in @t's range. */
static void dirtymap_tracker_set(struct dirtymap_tracker *t, pgoff_t index,
				 unsigned long nr)
{
	pgoff_t s = max(index, t->first);
	pgoff_t e = min(index + nr, t->first + t->nr);

	for (; s < e; s++)
		set_bit(s - t->first, t->bitmap);
}

/*
 * Record [@index, @index + @nr) written in every tracker of the file, as
 * the write paths do.  Called with df->lock held.
 */
static void dirtymap_record(struct dirtymap_file *df, pgoff_t index,
			    unsigned long nr)
{
#ifdef MAPPING_WRITE_TRACKERS
	mapping_record_write(df->mapping, index, nr);
#else
	struct dirtymap_tracker *t;

	/* a module: the list of the file's trackers is the driver's own */
	list_for_each_entry(t, &df->trackers, node)
		dirtymap_tracker_set(t, index, nr);
#endif
}

/*
 * Write-protect and clean every page-table entry of @folio (locked, in
 * df->mapping); true if one was writable or dirty.  The entries' dirty bits
 * go to the folio first, as unmapping would move them: reclaim must not
 * take a written shmem folio for clean.
 */
static bool dirtymap_folio_mkclean(struct folio *folio)
{
	if (!folio_mapped(folio) || !folio_mkclean(folio))
		return false;
	folio_mark_dirty(folio);
	return true;
}

#ifdef MAPPING_WRITE_TRACKERS

/*
 * Whether someone besides the page cache, the page tables and us holds a
 * reference to @folio: a pin or get_user_pages() reference through which
 * the kernel may write the page without any page-table entry.  Such a page
 * is reported again at every collect until the reference is dropped.
 */
static bool dirtymap_folio_referenced(struct folio *folio)
{
	return folio_ref_count(folio) > folio_expected_ref_count(folio) + 1;
}

/*
 * The mkwrite method: after its bits were taken, write-protect again the
 * pages of [@first, @first + @nr) whose bits are set in @taken (bit 0 =
 * @first).  A write that made an entry writable was recorded (with the
 * folio locked, after the entry was made writable), so a writable entry
 * always has its bit set in every tracker, or a collect that took the bit
 * is about to write-protect it: a write through it is reported by that
 * collect or recorded again after it.  A folio that someone else holds a
 * reference to is recorded again (see dirtymap_folio_referenced()).
 */
static void dirtymap_rearm(struct dirtymap_tracker *t, pgoff_t first,
			   pgoff_t nr, unsigned long *taken)
{
	struct address_space *mapping = t->df->mapping;
	unsigned long bit;
	bool drained = false;

	for_each_set_bit(bit, taken, nr) {
		struct folio *folio = filemap_lock_folio(mapping, first + bit);
		pgoff_t end;

		if (IS_ERR(folio))
			continue;	/* a hole or swapped out: no entries */
		dirtymap_folio_mkclean(folio);
		if (dirtymap_folio_referenced(folio) && !drained) {
			/* a new folio may wait in a per-CPU LRU batch */
			folio_unlock(folio);
			lru_add_drain_all();
			drained = true;
			folio_lock(folio);
		}
		if (folio->mapping == mapping && dirtymap_folio_referenced(folio))
			dirtymap_tracker_set(t, folio->index, folio_nr_pages(folio));
		end = folio_next_index(folio);
		folio_unlock(folio);
		folio_put(folio);
		if (end - first > bit + 1)
			bit = min_t(pgoff_t, end - first, nr) - 1;
		cond_resched();
	}
}

/*
 * The page-table method: clean the dirty entries of [@first, +@nr) and,
 * with @record, record them in every tracker.
 */
static void dirtymap_clean_record(struct dirtymap_file *df, pgoff_t first,
				  pgoff_t nr, unsigned long *scratch, bool record)
{
	pgoff_t start = 0, end = 0, done, n;
	unsigned int rs, re;

	for (done = 0; done < nr; done += n) {
		n = min(nr - done, DIRTYMAP_CHUNK_PAGES);
		bitmap_zero(scratch, n);
		start = n;
		end = 0;
		clean_record_shared_mapping_range(df->mapping, first + done, n,
						  first + done, scratch,
						  &start, &end);
		for_each_set_bitrange(rs, re, scratch, n)
			if (record)
				dirtymap_record(df, first + done + rs, re - rs);
		cond_resched();
	}
}

static void dirtymap_scan(struct dirtymap_file *df, pgoff_t first, pgoff_t nr,
			  unsigned long *scratch)
{
	dirtymap_clean_record(df, first, nr, scratch, true);
}

/* The span of every tracker of @df. */
static void dirtymap_span(struct dirtymap_file *df, pgoff_t *first, pgoff_t *nr)
{
	struct dirtymap_tracker *t;
	pgoff_t s = ULONG_MAX, e = 0;

	list_for_each_entry(t, &df->trackers, node) {
		s = min(s, t->first);
		e = max(e, t->first + t->nr);
	}
	*first = s;
	*nr = e > s ? e - s : 0;
}

/*
 * Switch @df to @mode.  To mkwrite: write-protect every tracked page, then
 * record the dirty bits that the page-table method had not read yet
 * (writes before the write-protection set them; writes after it fault and
 * are recorded).  To page-table: clean the dirty bits without recording
 * them: under mkwrite, a page written since it was last write-protected
 * took a fault, which recorded it, and the other dirty bits are older than
 * every tracker.
 */
static void dirtymap_set_mode(struct dirtymap_file *df, unsigned int mode,
			      unsigned long *scratch)
{
	pgoff_t first, nr;

	if (df->mode == mode)
		return;
	dirtymap_span(df, &first, &nr);
	if (mode == DIRTYMAP_MODE_MKWRITE) {
		wp_shared_mapping_range(df->mapping, first, nr);
		dirtymap_scan(df, first, nr, scratch);
	} else {
		dirtymap_clean_record(df, first, nr, scratch, false);
	}
	df->mode = mode;
	df->votes = 0;
}

/*
 * After a collect that cleaned @nr pages and found @dirty of them written:
 * a file found much written, collect after collect, is cheaper to scan than
 * to fault on; one found mostly clean, cheaper to write-protect.  Measured
 * (dirtymap-test --bench): the page-table method costs less from a few
 * percent written on; switch at a tenth, and back below a fortieth.
 */
static void dirtymap_vote(struct dirtymap_file *df, pgoff_t nr, u64 dirty,
			  unsigned long *scratch)
{
	bool other;

	if (nr < 64)
		return;
	if (df->mode == DIRTYMAP_MODE_MKWRITE)
		other = dirty * 10 >= nr;
	else
		other = dirty * 40 < nr;
	df->votes = other ? df->votes + 1 : 0;
	if (df->votes >= DIRTYMAP_SWITCH_VOTES)
		dirtymap_set_mode(df, df->mode == DIRTYMAP_MODE_MKWRITE ?
				  DIRTYMAP_MODE_PAGETABLE : DIRTYMAP_MODE_MKWRITE,
				  scratch);
}

static int dirtymap_register(struct dirtymap_tracker *t, unsigned long *scratch)
{
	struct dirtymap_file *df = t->df;
	bool pagetable = df->ntrackers && df->mode == DIRTYMAP_MODE_PAGETABLE;
	int ret;

	/* entries left dirty by the page-table method are the others' */
	if (pagetable)
		dirtymap_scan(df, t->first, t->nr, scratch);
	t->mwt.first = t->first;
	t->mwt.nr = t->nr;
	t->mwt.bitmap = t->bitmap;
	/* write notification for the file's mappings, the range protected */
	ret = mapping_write_tracker_add(df->mapping, &t->mwt);
	if (ret)
		return ret;
	/*
	 * The dirty bits left in the range: under mkwrite they are no
	 * tracker's (a page written since its entry was last write-protected
	 * took a fault, which recorded it), so this tracker starts clean; under
	 * the page-table method, those set since the scan above are writes
	 * made during this call, for every tracker.
	 */
	dirtymap_clean_record(df, t->first, t->nr, scratch, pagetable);
	list_add(&t->node, &df->trackers);
	if (!df->ntrackers++)
		df->mode = DIRTYMAP_MODE_MKWRITE;
	return 0;
}

static void dirtymap_unregister(struct dirtymap_tracker *t)
{
	list_del(&t->node);
	t->df->ntrackers--;
	/* waits until no write path can see the bitmap */
	mapping_write_tracker_del(t->df->mapping, &t->mwt);
}

#define DIRTYMAP_SEMANTICS	(DIRTYMAP_RECORDS_EVERY_WRITE | \
				 DIRTYMAP_RECORDS_HUGE_WHOLE)

#else /* !MAPPING_WRITE_TRACKERS: the module */

/*
 * The page-table method as a module can do it: for every folio of
 * [@first, @first + @nr), locked, write-protect and clean its entries and
 * record it in every tracker if one was writable or dirty (the whole folio:
 * its entries are cleaned whole).
 */
static void dirtymap_scan(struct dirtymap_file *df, pgoff_t first, pgoff_t nr,
			  unsigned long *scratch)
{
	struct address_space *mapping = df->mapping;
	pgoff_t index = first, last = first + nr - 1;
	struct folio_batch fbatch;
	unsigned int i;

	folio_batch_init(&fbatch);
	while (filemap_get_folios(mapping, &index, last, &fbatch)) {
		for (i = 0; i < folio_batch_count(&fbatch); i++) {
			struct folio *folio = fbatch.folios[i];

			pgoff_t at = folio->index;

			/*
			 * Locked even when it looks unmapped: a folio under
			 * migration is unmapped and locked, and its entries'
			 * dirty bits come back on the new folio, which the
			 * lock lets us find.
			 */
			folio_lock(folio);
			if (folio->mapping != mapping) {
				/*
				 * Migrated (or truncated) while we waited for
				 * the lock: the entries map the folio now at
				 * its index, if any.
				 */
				folio_unlock(folio);
				folio = filemap_lock_folio(mapping, at);
				if (IS_ERR(folio))
					continue;
				if (dirtymap_folio_mkclean(folio))
					dirtymap_record(df, folio->index,
							folio_nr_pages(folio));
				folio_unlock(folio);
				folio_put(folio);
				continue;
			}
			if (dirtymap_folio_mkclean(folio))
				dirtymap_record(df, folio->index,
						folio_nr_pages(folio));
			folio_unlock(folio);
		}
		folio_batch_release(&fbatch);
		cond_resched();
	}
}

static void dirtymap_rearm(struct dirtymap_tracker *t, pgoff_t first,
			   pgoff_t nr, unsigned long *taken)
{
}

static void dirtymap_vote(struct dirtymap_file *df, pgoff_t nr, u64 dirty,
			  unsigned long *scratch)
{
}

static void dirtymap_set_mode(struct dirtymap_file *df, unsigned int mode,
			      unsigned long *scratch)
{
}

static int dirtymap_register(struct dirtymap_tracker *t, unsigned long *scratch)
{
	struct dirtymap_file *df = t->df;

	/* the entries' present state belongs to the trackers already there */
	dirtymap_scan(df, t->first, t->nr, scratch);
	list_add(&t->node, &df->trackers);
	df->ntrackers++;
	df->mode = DIRTYMAP_MODE_PAGETABLE;
	return 0;
}

static void dirtymap_unregister(struct dirtymap_tracker *t)
{
	list_del(&t->node);
	t->df->ntrackers--;
}

#define DIRTYMAP_SEMANTICS	DIRTYMAP_RECORDS_HUGE_WHOLE

#endif /* MAPPING_WRITE_TRACKERS */

/* The dirtymap_file of @mapping, made if needed; NULL without memory. */
static struct dirtymap_file *dirtymap_file_get(struct address_space *mapping)
{
	struct dirtymap_file *df;

	mutex_lock(&dirtymap_files_lock);
	hash_for_each_possible(dirtymap_files, df, node, (unsigned long)mapping)
		if (df->mapping == mapping)
			goto out;
	df = kzalloc(sizeof(*df), GFP_KERNEL_ACCOUNT);
	if (df) {
		df->mapping = mapping;
		mutex_init(&df->lock);
		INIT_LIST_HEAD(&df->trackers);
		hash_add(dirtymap_files, &df->node, (unsigned long)mapping);
	}
out:
	if (df)
		df->refs++;
	mutex_unlock(&dirtymap_files_lock);
	return df;
}

static void dirtymap_file_put(struct dirtymap_file *df)
{
	mutex_lock(&dirtymap_files_lock);
	if (!--df->refs) {
		hash_del(&df->node);
		mutex_destroy(&df->lock);
		kfree(df);
	}
	mutex_unlock(&dirtymap_files_lock);
}

static int dirtymap_tracker_release(struct inode *inode, struct file *file)
{
	struct dirtymap_tracker *t = file->private_data;
	struct dirtymap_file *df = t->df;

	mutex_lock(&df->lock);
	dirtymap_unregister(t);
	mutex_unlock(&df->lock);
	dirtymap_file_put(df);
	fput(t->file);
	kvfree(t->bitmap);
	kfree(t);
	return 0;
}

/*
 * Take (or, without @clean, read) the bits of [@first, @first + @nr) of
 * @t into @words, as u64 words; returns how many were set.
 */
static u64 dirtymap_take(struct dirtymap_tracker *t, pgoff_t first, pgoff_t nr,
			 bool clean, unsigned long *taken, u64 *words)
{
	pgoff_t i;
	u64 dirty;

	bitmap_zero(taken, nr);
	for (i = 0; i < nr; i++) {
		unsigned long bit = first - t->first + i;

		/* a word at a time where the range allows it */
		if (!(bit % BITS_PER_LONG) && !(i % BITS_PER_LONG) &&
		    nr - i >= BITS_PER_LONG) {
			unsigned long *w = &t->bitmap[bit / BITS_PER_LONG];
			unsigned long v = clean ? xchg(w, 0) : READ_ONCE(*w);

			taken[i / BITS_PER_LONG] = v;
			i += BITS_PER_LONG - 1;
			continue;
		}
		if (clean ? test_and_clear_bit(bit, t->bitmap) :
			    test_bit(bit, t->bitmap))
			__set_bit(i, taken);
	}
	dirty = bitmap_weight(taken, nr);
	bitmap_to_arr64(words, taken, nr);
	return dirty;
}

/* Give back what a collect took but could not deliver. */
static void dirtymap_give_back(struct dirtymap_tracker *t, pgoff_t first,
			       pgoff_t nr, unsigned long *taken)
{
	unsigned long bit;

	for_each_set_bit(bit, taken, nr)
		set_bit(first - t->first + bit, t->bitmap);
}

static long dirtymap_collect(struct dirtymap_tracker *t,
			     struct dirtymap_collect __user *argp)
{
	struct dirtymap_file *df = t->df;
	unsigned long *taken = NULL, *scratch = NULL;
	struct dirtymap_collect c;
	pgoff_t first, npages, done = 0, nr;
	u64 __user *ubitmap;
	u64 *words = NULL;
	bool clean;
	long ret;

	if (copy_from_user(&c, argp, sizeof(c)))
		return -EFAULT;
	if ((c.flags & ~(DIRTYMAP_COLLECT_CLEAN | DIRTYMAP_COLLECT_MKWRITE |
			 DIRTYMAP_COLLECT_PAGETABLE)) ||
	    (c.flags & DIRTYMAP_COLLECT_MKWRITE &&
	     c.flags & DIRTYMAP_COLLECT_PAGETABLE) ||
	    c.reserved[0] || c.reserved[1])
		return -EINVAL;
	if (!PAGE_ALIGNED(c.offset) || !PAGE_ALIGNED(c.length) || !c.length ||
	    c.offset >> PAGE_SHIFT < t->first ||
	    c.length >> PAGE_SHIFT > t->nr ||
	    (c.offset >> PAGE_SHIFT) - t->first > t->nr - (c.length >> PAGE_SHIFT))
		return -EINVAL;
	first = c.offset >> PAGE_SHIFT;
	npages = c.length >> PAGE_SHIFT;
	clean = c.flags & DIRTYMAP_COLLECT_CLEAN;
	ubitmap = u64_to_user_ptr(c.bitmap);

	taken = bitmap_zalloc(DIRTYMAP_CHUNK_PAGES, GFP_KERNEL);
	scratch = bitmap_zalloc(DIRTYMAP_CHUNK_PAGES, GFP_KERNEL);
	words = kcalloc(DIRTYMAP_CHUNK_PAGES / 64, sizeof(u64), GFP_KERNEL);
	ret = -ENOMEM;
	if (!taken || !scratch || !words)
		goto out;

	c.dirty = 0;
	ret = 0;
	mutex_lock(&df->lock);
	if (c.flags & DIRTYMAP_COLLECT_MKWRITE)
		dirtymap_set_mode(df, DIRTYMAP_MODE_MKWRITE, scratch);
	else if (c.flags & DIRTYMAP_COLLECT_PAGETABLE)
		dirtymap_set_mode(df, DIRTYMAP_MODE_PAGETABLE, scratch);
	c.mode = df->mode;
	mutex_unlock(&df->lock);

	for (done = 0; done < npages; done += nr) {
		pgoff_t at = first + done;
		u64 dirty;

		/* chunks end on multiples of DIRTYMAP_CHUNK_PAGES: huge-page aligned */
		nr = min(npages - done,
			 DIRTYMAP_CHUNK_PAGES - at % DIRTYMAP_CHUNK_PAGES);
		mutex_lock(&df->lock);
		if (df->mode == DIRTYMAP_MODE_PAGETABLE)
			dirtymap_scan(df, at, nr, scratch);
		dirty = dirtymap_take(t, at, nr, clean, taken, words);
		if (clean && df->mode == DIRTYMAP_MODE_MKWRITE)
			dirtymap_rearm(t, at, nr, taken);
		mutex_unlock(&df->lock);

		/* no lock held: the bitmap may be in the tracked file itself */
		if (ubitmap && copy_to_user(ubitmap + done / 64, words,
					    DIV_ROUND_UP(nr, 64) * sizeof(u64))) {
			if (clean)
				dirtymap_give_back(t, at, nr, taken);
			ret = -EFAULT;
			break;
		}
		c.dirty += dirty;
		if (fatal_signal_pending(current)) {
			ret = -EINTR;
			done += nr;
			break;
		}
	}
	if (clean && !ret) {
		mutex_lock(&df->lock);
		dirtymap_vote(df, npages, c.dirty, scratch);
		mutex_unlock(&df->lock);
	}
	c.done = (u64)done << PAGE_SHIFT;
	if (copy_to_user(argp, &c, sizeof(c)) && !ret)
		ret = -EFAULT;
out:
	kfree(words);
	bitmap_free(scratch);
	bitmap_free(taken);
	return ret;
}

static long dirtymap_tracker_ioctl(struct file *file, unsigned int cmd,
				   unsigned long arg)
{
	if (cmd != DIRTYMAP_IOC_COLLECT)
		return -ENOTTY;
	return dirtymap_collect(file->private_data, (void __user *)arg);
}

static const struct file_operations dirtymap_tracker_fops = {
	.owner = THIS_MODULE,
	.release = dirtymap_tracker_release,
	.unlocked_ioctl = dirtymap_tracker_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
};

static long dirtymap_track(struct dirtymap_track __user *argp)
{
	struct dirtymap_tracker *t;
	struct dirtymap_track a;
	unsigned long *scratch = NULL;
	struct file *file;
	int fd, ret;

	if (copy_from_user(&a, argp, sizeof(a)))
		return -EFAULT;
	if ((a.flags & ~DIRTYMAP_TRACK_CLOEXEC) || a.reserved0 ||
	    memchr_inv(a.reserved, 0, sizeof(a.reserved)))
		return -EINVAL;
	if (!PAGE_ALIGNED(a.offset) || !PAGE_ALIGNED(a.length) || !a.length ||
	    a.length >> PAGE_SHIFT > DIRTYMAP_MAX_PAGES ||
	    a.offset > MAX_LFS_FILESIZE || a.length > MAX_LFS_FILESIZE - a.offset)
		return -EINVAL;

	file = fget(a.fd);
	if (!file)
		return -EBADF;
	ret = -EBADF;
	if (!(file->f_mode & FMODE_WRITE))
		goto out_fput;
	ret = -EOPNOTSUPP;
	if (!shmem_mapping(file->f_mapping))
		goto out_fput;

	ret = -ENOMEM;
	t = kzalloc(sizeof(*t), GFP_KERNEL_ACCOUNT);
	if (!t)
		goto out_fput;
	t->first = a.offset >> PAGE_SHIFT;
	t->nr = a.length >> PAGE_SHIFT;
	t->bitmap = kvcalloc(BITS_TO_LONGS(t->nr), sizeof(unsigned long),
			     GFP_KERNEL_ACCOUNT);
	scratch = bitmap_zalloc(DIRTYMAP_CHUNK_PAGES, GFP_KERNEL);
	if (!t->bitmap || !scratch)
		goto out_free;
	t->file = file;
	t->df = dirtymap_file_get(file->f_mapping);
	if (!t->df)
		goto out_free;

	mutex_lock(&t->df->lock);
	ret = dirtymap_register(t, scratch);
	mutex_unlock(&t->df->lock);
	if (ret)
		goto out_put;

	a.semantics = DIRTYMAP_SEMANTICS;
	a.page_size = PAGE_SIZE;
	a.max_pages = DIRTYMAP_MAX_PAGES;
	if (copy_to_user(argp, &a, sizeof(a))) {
		ret = -EFAULT;
		goto out_unregister;
	}
	fd = anon_inode_getfd("[dirtymap]", &dirtymap_tracker_fops, t,
			      O_RDWR | (a.flags & DIRTYMAP_TRACK_CLOEXEC ?
					O_CLOEXEC : 0));
	if (fd < 0) {
		ret = fd;
		goto out_unregister;
	}
	bitmap_free(scratch);
	return fd;

out_unregister:
	mutex_lock(&t->df->lock);
	dirtymap_unregister(t);
	mutex_unlock(&t->df->lock);
out_put:
	dirtymap_file_put(t->df);
out_free:
	bitmap_free(scratch);
	kvfree(t->bitmap);
	kfree(t);
out_fput:
	fput(file);
	return ret;
}

static long dirtymap_ioctl(struct file *dev, unsigned int cmd,
			   unsigned long arg)
{
	if (cmd != DIRTYMAP_IOC_TRACK)
		return -ENOTTY;
	return dirtymap_track((void __user *)arg);
}

static const struct file_operations dirtymap_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = dirtymap_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
};

/*
 * Anyone may open the device: a tracker needs a descriptor of the file open
 * for writing, whose owner could write every page of it anyway; its bitmap
 * is charged to the caller's memory cgroup, and no operation touches a
 * page-table entry other than through folio_mkclean() on a locked folio or
 * (in the tree) the page walks of mm/mapping_dirty_helpers.c.
 */
static struct miscdevice dirtymap_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "dirtymap",
	.fops = &dirtymap_fops,
	.mode = 0666,
};

module_misc_device(dirtymap_dev);

MODULE_DESCRIPTION("which pages of a shared-memory file were written, by anyone");
MODULE_LICENSE("GPL");
