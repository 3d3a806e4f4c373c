/* SPDX-License-Identifier: MIT */
/*
 * libdirty: which pages of this memory were written since I last marked them clean?
 *
 * A tracker watches page-aligned regions of one address space (this process, or
 * another process by pid) with the best write-tracking mechanism the running
 * kernel offers, and answers "collect" queries with exact runs of dirty pages.
 * Every int / ssize_t function returns 0 (or a count) or a negative errno, and
 * a failed call changes nothing; trackers are thread-safe; the library never
 * prints (dirty_options.log hears why).
 *
 * The contract every backend keeps (what is reported, what is not and why, the
 * errors, lifetimes, other processes): docs/CONTRACT.md, installed as
 * share/doc/libdirty/CONTRACT.md.  Each function's own promises are next to it,
 * and in its section 3 page (man 3 dirty_collect; libdirty(7) is the overview).
 */
#ifndef LIBDIRTY_H
#define LIBDIRTY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* LIBDIRTY_VERSION_MAJOR, _MINOR, _MICRO, _STRING, LIBDIRTY_CHECK_VERSION() */
#include "libdirty-version.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The version of the library this program runs with, for example "0.1.0"
 * (LIBDIRTY_VERSION_STRING is the version of the header it was built
 * with).  A static string; never NULL.
 */
const char *dirty_version(void);

struct dirty_tracker; /* opaque, thread-safe */

/* A run of dirty pages: [start, start + len). */
struct dirty_range {
	void *start;
	size_t len;
};

/*
 * Log callback.  priority is a syslog(3) level (LOG_ERR .. LOG_DEBUG); msg has
 * no trailing newline.  Called from the thread that made the library call,
 * never from a signal handler, possibly with the tracker's lock held: it must
 * not call back into the tracker.
 */
typedef void (*dirty_log_fn)(int priority, const char *msg, void *userdata);

/*
 * Tracker flags (dirty_options.flags).
 *
 * DIRTY_TRACKER_SPARSE: the regions are sparse reservations (a large
 *   MAP_NORESERVE range of which little is ever touched).  uffd-async then
 *   leaves never-populated pages unprotected instead of giving the whole range
 *   kernel page tables to hold protection markers, so tracking costs what is
 *   populated, not what is reserved (a 1 TiB reservation otherwise costs 2 GiB
 *   of page tables and a walk over them at every collect).  Each region keeps
 *   the runs of its pages that held data at their last clean, so that a page
 *   dropped since (MADV_DONTNEED, MADV_FREE and then freed by the kernel) is
 *   still reported: that too costs what is populated.  What it does not see
 *   is in docs/CONTRACT.md ("Not reported").  Reads of never-written pages
 *   are still not reported.
 *
 * Each region of this process is tracked the cheaper of two ways, chosen
 * and re-chosen by measuring what each costs here (the cost model):
 *   protect  the backend traps the first write to each clean page (the
 *            default, and the only way for other processes, files given by
 *            descriptor, hugetlb, private file mappings and the mapping
 *            backend);
 *   compare  writes are not trapped; a collect reads every page of the
 *            region and reports those whose bytes differ from what they held
 *            at their last clean.  Chosen for memory written nearly all over
 *            between collects, or where a trapped write is dear (a shared
 *            file mapping whose filesystem runs page_mkwrite at each first
 *            write: tens of microseconds on ext4).  What a page held is kept
 *            as a 64-bit hash keyed at random per tracker: 8 bytes a page;
 *            a page whose new bytes hash like its old ones is missed, a
 *            chance of about 2^-64 per changed page and collect.  A write
 *            that leaves a page's bytes as they were is not reported.  A
 *            collect reads the region: do not unmap it (or truncate its
 *            file) while a collect of it is under way.
 * dirty_stats says how many regions are compared, dirty_tracker_region_way()
 * which way one is.
 *
 * DIRTY_TRACKER_NO_COMPARE: every region is protected: every write is
 *   reported, even one that leaves the bytes as they were, and nothing reads
 *   the tracked memory.
 * DIRTY_TRACKER_COMPARE_COPY: a compared region keeps a copy of its pages
 *   instead of their hashes: exact, at the cost of the region's size again.
 * DIRTY_TRACKER_ADAPTIVE: accepted for compatibility; the cost model is
 *   always on (it replaced the rule this flag chose).
 */
#define DIRTY_TRACKER_SPARSE 0x1u
#define DIRTY_TRACKER_ADAPTIVE 0x2u
#define DIRTY_TRACKER_NO_COMPARE 0x10u
#define DIRTY_TRACKER_COMPARE_COPY 0x20u
/*
 * DIRTY_TRACKER_GIVEN_UFFD: cooperative tracking of another process
 *   (uffd-async, opts->pid set): opts->uffd is a userfaultfd that the target
 *   itself created (dirty_userfaultfd_share()) and passed here, for example
 *   over a Unix socket with SCM_RIGHTS.  The tracker uses a duplicate of it
 *   (the caller keeps opts->uffd) instead of making the target create one
 *   with ptrace, so no ptrace permission over a running target is needed,
 *   only the right to read its /proc/PID/pagemap.  dirty_track() checks
 *   that the descriptor is the target's (-EBADF otherwise: what it
 *   registered elsewhere is let go); a descriptor that is not a userfaultfd
 *   is -EBADF at once.  LIBDIRTY_BACKEND is ignored: only uffd-async (or
 *   NULL, "auto") may be named (-EINVAL).
 */
#define DIRTY_TRACKER_GIVEN_UFFD 0x4u
/*
 * DIRTY_TRACKER_NO_SIGNALS: the tracker installs no signal handler.  The
 *   backends that need one to track this process are left out: mprotect
 *   (SIGSEGV) and soft-dirty (its stop signal; soft-dirty of another process
 *   stops it with ptrace and stays usable).  Automatic selection passes over
 *   them; naming one is -EOPNOTSUPP, as is a machine where no other backend
 *   works.  For programs whose own handlers those signals are (a garbage
 *   collector, a language runtime).  See "Signals" below.
 */
#define DIRTY_TRACKER_NO_SIGNALS 0x8u

/*
 * Signals.  Two backends install a process-wide signal handler when a
 * tracker of this process first uses them, and keep it:
 *   - mprotect, on SIGSEGV.  A fault that is not its own goes to the
 *     handler that was installed before it (or to the default action).
 *   - soft-dirty, on its stop signal, with which a clean stops the other
 *     threads of this process (docs/CONTRACT.md).
 * dirty_options says what they may take:
 *   stop_signal   soft-dirty's stop signal: SIGUSR1, SIGUSR2 or a real-time
 *                 signal (SIGRTMIN..SIGRTMAX); other values are -EINVAL.
 *                 0: the one in use, or SIGRTMAX-4 for the first tracker.
 *                 Every soft-dirty tracker of a process uses one signal:
 *                 naming another than the one in use, or one the program
 *                 handles already, makes dirty_tracker_new() (or the first
 *                 dirty_track() that needs soft-dirty) fail with -EBUSY.
 *   handler_mask  the signals to hold off (block) while the library's
 *                 handlers run: bit n - 1 for signal n.  A program that
 *                 stops its threads with a signal (a garbage collector
 *                 stopping the world) names that signal here.  Under
 *                 mprotect a faulting thread makes the page writable, then
 *                 records it; stopped in between, it leaves a page that
 *                 takes writes without being recorded for as long as it is
 *                 stopped, and writes that other threads make to the page
 *                 meanwhile are reported one collect late.  The handlers are
 *                 process-wide: each blocks the signals of every tracker's
 *                 mask (soft-dirty's blocks all signals anyway).  Adding
 *                 signals after the program replaced the library's SIGSEGV
 *                 handler is -EBUSY.
 *   DIRTY_TRACKER_NO_SIGNALS  no handler at all.
 */

/* Tracker options.  Pass NULL for the defaults: this process, automatic backend. */
struct dirty_options {
	size_t sz;           /* sizeof(struct dirty_options), for extension */
	const char *backend; /* NULL or "auto", "uffd-async", "uffd-sync",
	                        "soft-dirty", "mprotect", "mapping" */
	pid_t pid;           /* 0 = this process */
	unsigned flags;      /* DIRTY_TRACKER_* */
	dirty_log_fn log;    /* NULL = silent */
	void *log_userdata;
	int uffd;            /* with DIRTY_TRACKER_GIVEN_UFFD: the target's userfaultfd */
	int stop_signal;     /* soft-dirty: the signal that stops threads (Signals, above) */
	uint64_t handler_mask; /* signals blocked in the library's handlers (above) */
};

/*
 * A new userfaultfd of this process, for a tracker in another process to
 * track this process's memory cooperatively (DIRTY_TRACKER_GIVEN_UFFD): pass
 * it over a Unix socket, then close it here.  Nothing is registered until
 * that tracker tracks a range.  One descriptor may serve several trackers
 * in turn (a new one after the first was freed); two trackers of the same
 * memory at once would take each other's dirty pages.  Returns the descriptor (close-on-exec)
 * or -errno (-ENOSYS, -EPERM: see vm.unprivileged_userfaultfd;
 * -EOPNOTSUPP: the kernel lacks WP_ASYNC, Linux 6.7+).
 */
int dirty_userfaultfd_share(void);

/*
 * Create a tracker.  The backend is chosen as follows: opts->backend if set,
 * else the LIBDIRTY_BACKEND environment variable (ignored in set-uid programs),
 * else "auto": each region is tracked by the first usable backend, in the
 * order uffd-async, uffd-sync, soft-dirty, mprotect, that can track its kind
 * of memory (uffd-sync cannot track regular files, soft-dirty hugetlb).
 * Errors: -EINVAL bad options or unknown backend name; -EOPNOTSUPP the named
 * backend cannot run here (dirty_backend_probe() says why) or needs a signal
 * handler that DIRTY_TRACKER_NO_SIGNALS forbids; -EBUSY a signal it needs is
 * taken (Signals, above); for a pid,
 * -ESRCH, -EPERM, -EBUSY or -EACCES when the target refused (see "Another
 * process" above; the reason goes to the log callback); -ENOMEM; or the
 * errno of the kernel facility that refused.
 */
int dirty_tracker_new(const struct dirty_options *opts, struct dirty_tracker **ret);

/*
 * Stop tracking everything and release the tracker.  NULL is fine.  Returns NULL.
 *
 * Other threads may be inside calls on t: the free waits until they have
 * returned, and a call that starts once the free has begun returns -EBADF
 * (what it was to do is not done).  A free from inside a call on t (a
 * dirty_collect_each() callback) cannot wait for that call: t is released
 * when the call returns.  A call that starts after dirty_tracker_free() has
 * returned is a use of freed memory, as for any freed object: it usually
 * gets -EBADF, but not if a new tracker was given the same address since.
 * Do not free a tracker from its log callback.
 */
struct dirty_tracker *dirty_tracker_free(struct dirty_tracker *t);

/*
 * The backend in use, for example "uffd-async".  Never NULL.  An automatic
 * tracker names its first choice; a region of a kind of memory that backend
 * cannot track is tracked by the next usable one (dirty_tracker_region_backend()).
 */
const char *dirty_tracker_backend(const struct dirty_tracker *t);

/*
 * The backend tracking the region that holds addr, or NULL (errno is not set)
 * if addr is not tracked or t is a forked child's copy.
 */
const char *dirty_tracker_region_backend(struct dirty_tracker *t, const void *addr);
/*
 * How the region holding addr is tracked now: "protect" or "compare" (the
 * cost model, at DIRTY_TRACKER_NO_COMPARE); NULL if addr is in no region.
 */
const char *dirty_tracker_region_way(struct dirty_tracker *t, const void *addr);

/*
 * What a tracker sees beyond the writes made through the address space it
 * tracks, for every backend it uses (dirty_tracker_sees()):
 *   DIRTY_SEES_ALL_PROCESSES  writes through any process's mapping of the
 *                             memory (the mapping backend)
 *   DIRTY_SEES_GONE_MAPPINGS  writes through a mapping that is gone before the
 *                             collect: unmapped, its process exited or was
 *                             killed, its pages reclaimed or dropped
 *   DIRTY_SEES_FILE_WRITES    write(2) and the other write paths of a tracked
 *                             file, hole punching and truncation
 * The mapping backend has all three on a kernel with the patch series
 * (kernel/patches: every write recorded), DIRTY_SEES_ALL_PROCESSES only with
 * the module, which reads page tables.  The others have none: a page that
 * their own address space drops is reported (the contract), but they see
 * nothing of other processes.
 */
#define DIRTY_SEES_ALL_PROCESSES 0x1u
#define DIRTY_SEES_GONE_MAPPINGS 0x2u
#define DIRTY_SEES_FILE_WRITES   0x4u
/* The DIRTY_SEES_* flags of t; 0 for NULL or a forked child's copy. */
unsigned dirty_tracker_sees(struct dirty_tracker *t);

/*
 * Can this backend run here (for pid, 0 = this process)?  Returns 0 if usable,
 * else a negative errno (-EOPNOTSUPP, -EPERM, -ENOSYS, -ESRCH, -EINVAL for an
 * unknown name) with a one-line reason in why (may be NULL).  The kernel is
 * probed once per process; the answer is cached.  backend NULL or "auto"
 * reports the backend automatic selection would use, named in why.
 */
int dirty_backend_probe(const char *backend, pid_t pid, char *why, size_t why_len);

/*
 * What the running kernel's userfaultfd offers, as UFFDIO_API reports it
 * (probed once per process, cached): the feature names, comma-separated, in
 * buf (NUL-terminated, cut to len), e.g. "PAGEFAULT_FLAG_WP, ..., WP_ASYNC,
 * MOVE, RWP, RWP_ASYNC".  RWP and RWP_ASYNC (7.2) are read-write protection
 * (UFFDIO_REGISTER_MODE_RWP), which no backend uses yet.  Returns the number
 * of features, -ENOSYS where no userfaultfd can be opened (none, or not
 * permitted), -EINVAL for buf NULL with len > 0.
 */
int dirty_kernel_uffd_features(char *buf, size_t len);

/* The backend names, best first, NULL-terminated. */
const char *const *dirty_backend_names(void);

/*
 * Start tracking [addr, addr + len): page aligned (huge page aligned for
 * hugetlb), mapped writable, not overlapping a region tracked by any tracker
 * of this process (-EEXIST; a region that is gone keeps its range until it
 * is untracked).  The range may span several
 * mappings; under mprotect they must have the same protection (-EINVAL).
 * The region starts clean.
 */
int dirty_track(struct dirty_tracker *t, void *addr, size_t len);

/*
 * dirty_track() with flags:
 *
 * DIRTY_TRACK_POPULATED_DIRTY: the range is memory that appeared since the
 *   last collect (a new mapping, a heap that grew, memory that replaced a
 *   region that went away): its pages that hold data when tracking starts
 *   are reported by the next collect, as pages written after a clean would
 *   be, so that writes made before the call are not lost.  Pages that hold
 *   data: present pages other than the shared zero page (only read), and
 *   swapped-out ones; of a private file mapping, its private copies only
 *   (the written ones); of hugetlb memory, present pages.  A page of shared
 *   memory or of a shared file that was only read is reported too (the
 *   kernel does not tell it from one written), and so is any page where
 *   /proc/PID/pagemap hides frame numbers and lacks PAGEMAP_SCAN (before
 *   Linux 6.7, without CAP_SYS_ADMIN: the zero page cannot be told apart).
 *   Not seen, because nothing of them remains: pages written and dropped
 *   again before the call, and memory mapped and unmapped again.  The
 *   pages are read from /proc/PID/pagemap (-EACCES, -ESRCH as for it):
 *   with PAGEMAP_SCAN this costs what is populated; before Linux 6.7, 8
 *   bytes per page of the range.
 * flags 0 is dirty_track(); unknown flags are -EINVAL.
 */
#define DIRTY_TRACK_POPULATED_DIRTY 0x1u
int dirty_track_flags(struct dirty_tracker *t, void *addr, size_t len, unsigned flags);

/*
 * Stop tracking.  The range must consist of whole tracked regions (-EINVAL if
 * it cuts one).  Writes no longer trap or fault; memory contents are untouched.
 * A region that is gone (-ESTALE elsewhere) is forgotten and this succeeds.
 */
int dirty_untrack(struct dirty_tracker *t, void *addr, size_t len);

/*
 * Mark [addr, addr + len) clean.  The range must be entirely tracked; it may
 * span several adjacent regions and cover parts of them.  Each region is
 * cleaned or not: if a later region of the span fails (-ESTALE, or -ENOMEM
 * from the kernel), earlier ones are clean.  A region that fails keeps its
 * dirty pages (mprotect may then report all of the range dirty).
 */
int dirty_clean(struct dirty_tracker *t, void *addr, size_t len);

#define DIRTY_COLLECT_CLEAN 0x1u /* atomically re-clean what is reported */

/*
 * Report the dirty pages of [addr, addr + len) (entirely tracked) as runs in
 * address order, coalesced, at most max of them in out.  Returns the number
 * written.  *next (may be NULL) receives where to resume: addr + len when the
 * whole range was covered, else the first address not examined.  With
 * DIRTY_COLLECT_CLEAN only the pages reported are re-cleaned; the rest stay
 * dirty for the resumed call.  max may be 0 only with out NULL; then nothing
 * is examined and *next is addr.
 */
ssize_t dirty_collect(struct dirty_tracker *t, void *addr, size_t len, unsigned flags,
		      struct dirty_range *out, size_t max, void **next);

/*
 * The same as a bitmap: bit i (bitmap[i / 64] >> (i % 64) & 1) is page i of
 * [addr, addr + len), in base pages.  The caller provides
 * (len / page_size + 63) / 64 words; all of them are written.  A call that
 * fails leaves the tracker as it was (pages a collect-and-clean had taken
 * are dirty again); the bitmap is untouched if the range was refused as a
 * whole (bad arguments, a page not tracked, a region found gone before the
 * collect began: -EINVAL, -ENOENT, -ESTALE, -ECHILD), and its contents are
 * meaningless after any other failure.
 */
int dirty_collect_bitmap(struct dirty_tracker *t, void *addr, size_t len, unsigned flags,
			 uint64_t *bitmap);

/*
 * The same with a callback per coalesced run, in address order.  A non-zero
 * return from fn stops the walk and is returned; with DIRTY_COLLECT_CLEAN the
 * runs already passed to fn are clean, the rest still dirty.
 */
typedef int (*dirty_run_fn)(void *start, size_t len, void *userdata);
int dirty_collect_each(struct dirty_tracker *t, void *addr, size_t len, unsigned flags,
		       dirty_run_fn fn, void *userdata);

/*
 * Collecting with the world stopped (a garbage collector; tests/test-collector.c).
 * dirty_collect(), dirty_collect_bitmap(), dirty_collect_each() and
 * dirty_clean() allocate no memory, so they may be called while other
 * threads of the process are stopped anywhere, inside malloc() included, and
 * while the process's malloc() is the caller's own collector.  The locks
 * they take are the tracker's and the library's own, which no signal handler
 * takes, and which only threads inside a call on a tracker hold (a caller
 * that stops threads must not stop one in the middle of a libdirty call,
 * nor let such a thread hold the tracker it collects).  Exceptions:
 * uffd-async under DIRTY_TRACKER_SPARSE allocates the runs it keeps; fn of
 * dirty_collect_each() and the log callback are the caller's.  dirty_track()
 * and the other calls do allocate.  Under soft-dirty a clean stops the other
 * threads itself (docs/CONTRACT.md); a thread the caller has stopped with
 * its stop signal blocked is passed over after 0.2 ms, as any thread that
 * blocks the stop signal.
 */

/* ---- shared buffers, tracked in every process that maps them ---- */

/*
 * The "mapping" backend (the kernel addition in kernel/: /dev/dirtymap)
 * tracks a range of a shared-memory file (memfd, a file in /dev/shm or
 * another tmpfs, shared anonymous memory) through every shared mapping of it
 * in every process: a page is dirty when any process wrote it through a
 * mapping.  Ranges are file offsets in bytes, page aligned; fd must be open
 * for writing (-EBADF) on a shmem file (-EOPNOTSUPP for any other kind).  The
 * tracker keeps its own descriptor of the file: the caller may close fd.  A
 * file is identified by its device and inode: another descriptor of the same
 * file names the same tracked ranges.  Only a tracker of the "mapping"
 * backend (opts->backend, or auto when the kernel addition is present)
 * tracks files (-EOPNOTSUPP otherwise).
 *
 * What is seen depends on the kernel (dirty_tracker_sees()).  With the patch
 * series (kernel/patches), every change to the content of the range:
 * writes through any mapping, whatever happens to it afterwards (unmapped,
 * its process exited or killed, dropped, swapped out, migrated), write(2)
 * and the file's other write paths, hole punching and truncation, kernel
 * writes into a mapped page (O_DIRECT, process_vm_writev).  With the module
 * on a distribution kernel, page-table entries only: a write whose entry is
 * gone before the next collect, and the write paths without a mapping, are
 * not seen (a user that must not miss those treats a range as dirty once
 * when its writer goes away, as dirty-syncd does); and a page that a read
 * fault maps (with its fault-around neighbours), after it was dropped or
 * before it was ever mapped, is reported once, a false positive of the
 * module's way of reading page tables (write-protect and clean each folio).
 * Every kernel: a large folio mapped whole by a write may be reported whole.
 *
 * Every tracker of a range sees every write: two trackers of the same pages,
 * in one process or several, take nothing from each other.
 *
 * dirty_track() of an address range of shared memory under the mapping
 * backend tracks the file range behind it; collects then report addresses
 * of this mapping for writes made through any mapping of those pages.  It
 * opens the file through /proc/PID/map_files, which needs CAP_SYS_ADMIN or
 * CAP_CHECKPOINT_RESTORE (-EPERM otherwise); dirty_track_file() needs no
 * privilege.  Memory unmapped or replaced in place is -ESTALE.
 * DIRTY_TRACKER_ADAPTIVE changes nothing here: writes are never trapped.
 */
struct dirty_file_range {
	uint64_t offset;
	uint64_t len;
};

/* The same contract as dirty_track() and friends, in file offsets. */
int dirty_track_file(struct dirty_tracker *t, int fd, uint64_t offset, uint64_t len);
int dirty_untrack_file(struct dirty_tracker *t, int fd, uint64_t offset, uint64_t len);
int dirty_clean_file(struct dirty_tracker *t, int fd, uint64_t offset, uint64_t len);
/* *next: the offset to resume at (offset + len when the whole range was covered). */
ssize_t dirty_collect_file(struct dirty_tracker *t, int fd, uint64_t offset, uint64_t len,
			   unsigned flags, struct dirty_file_range *out, size_t max,
			   uint64_t *next);
int dirty_collect_file_bitmap(struct dirty_tracker *t, int fd, uint64_t offset, uint64_t len,
			      unsigned flags, uint64_t *bitmap);

/* Counters of a tracker, since it was created. */
struct dirty_stats {
	size_t sz;                /* sizeof(struct dirty_stats) */
	uint64_t regions;         /* regions tracked now */
	uint64_t tracked_bytes;   /* bytes tracked now */
	uint64_t collects;        /* collect calls that succeeded */
	uint64_t dirty_pages;     /* base pages reported by those collects */
	uint64_t faults;          /* write faults handled in user space (mprotect) */
	uint64_t degraded_blocks; /* mprotect: blocks unprotected whole because the
	                             kernel refused to split a mapping further
	                             (vm.max_map_count); all their pages were
	                             reported dirty.  See below. */
	uint64_t unprotected_regions; /* regions whose writes are not trapped:
	                                 those compared (the cost model) */
	uint64_t compared_regions;    /* regions tracked by comparison now */
	uint64_t way_switches;        /* changes of way since the tracker was made */
};

/*
 * mprotect near vm.max_map_count: every written page of a region is a
 * writable island in a read-only mapping, one more kernel mapping (vma)
 * each, and a process may have vm.max_map_count of them (65530 by
 * default).  When the kernel refuses to split further, the write still
 * succeeds: the library unprotects an aligned block around the page (64
 * pages, else 4096, else the whole region) and reports every page of the
 * block dirty.  What that costs: those pages are false positives in the
 * next collect (a region written at more than about vm.max_map_count / 2
 * scattered pages between two collects is reported whole at every collect,
 * since after 8 degradations between two collects the whole region is
 * unprotected at once), and each degraded fault is slow (a failed split,
 * then a merge).  No write is lost.  The first clean or collect of a region
 * after it first degraded logs it (LOG_WARNING, once per region) with the
 * limit, the process's mapping count, the blocks and the pages reported;
 * later ones only count here.  uffd-async and uffd-sync have no such limit.
 */
int dirty_tracker_stats(struct dirty_tracker *t, struct dirty_stats *ret);

/* ---- images: the dirty pages' contents, written to a file or socket ---- */

/*
 * The image format (version 1), all integers little-endian; every section
 * starts on a 4096-byte boundary, so that an image can be written with
 * O_DIRECT:
 *   header   struct dirty_image_header, zero-padded to 4096 bytes
 *   regions  nregions x struct dirty_image_region (what was tracked), padded
 *   runs     nruns x struct dirty_image_run, in address order, padded
 *   data     the pages of the runs, in run order, page_size bytes each
 *   trailer  struct dirty_image_trailer, zero-padded to 4096 bytes
 * Offsets are from the image's first byte.  The header's crc covers its
 * header_size bytes with crc = 0; the trailer's crc covers every byte before
 * the trailer.  CRC-32C (Castagnoli).  Regions are sorted and do not overlap;
 * runs are sorted, do not overlap, and lie inside the regions.
 */
#define DIRTY_IMAGE_MAGIC "LDIRTYIM"
#define DIRTY_IMAGE_TRAILER_MAGIC "LDIRTYEN"
#define DIRTY_IMAGE_VERSION 1
#define DIRTY_IMAGE_ALIGN 4096

struct dirty_image_header {
	char magic[8];          /* DIRTY_IMAGE_MAGIC */
	uint32_t version;       /* DIRTY_IMAGE_VERSION */
	uint32_t header_size;   /* sizeof(struct dirty_image_header) */
	uint32_t page_size;
	uint32_t flags;         /* DIRTY_IMAGE_BASE, DIRTY_IMAGE_NEW_PROGRAM */
	uint64_t sequence;      /* its place in a chain: 0 = the base image */
	uint64_t pid;           /* the process, 0 = unknown */
	uint64_t time_ns;       /* CLOCK_REALTIME when the collect began */
	uint64_t nregions, nruns, npages;
	uint64_t regions_offset, runs_offset, data_offset, trailer_offset;
	uint32_t crc;
	uint32_t reserved;
};
#define DIRTY_IMAGE_BASE 0x1u        /* every page of its regions */
/*
 * With DIRTY_IMAGE_BASE: the process replaced its program (execve(2)) since
 * the previous image of the chain.  The memory the earlier images describe
 * is gone; this image starts the new program's: a reader rebuilding the
 * memory starts over here (nothing of the earlier images is part of it).
 * The pid and the sequence go on.  A reader that does not know this flag
 * refuses the image (unknown flags are -EBADMSG).
 */
#define DIRTY_IMAGE_NEW_PROGRAM 0x2u

struct dirty_image_region {
	uint64_t start, end;    /* a tracked range */
	char name[112];         /* what it is (a path, [heap]), NUL-padded */
};

struct dirty_image_run {
	uint64_t start;         /* address of the first page */
	uint64_t npages;
};

struct dirty_image_trailer {
	char magic[8];          /* DIRTY_IMAGE_TRAILER_MAGIC */
	uint64_t total_size;    /* of the whole image, trailer block included */
	uint32_t crc;
	uint32_t reserved;
};

/* What to write (dirty_image_write()). */
struct dirty_image_options {
	size_t sz;              /* sizeof(struct dirty_image_options) */
	unsigned flags;         /* DIRTY_IMAGE_* below */
	uint64_t sequence;      /* recorded in the header */
	unsigned queue_depth;   /* io_uring submissions in flight (up to 2 MiB each); 0 = 8 */
};
#define DIRTY_IMAGE_CLEAN 0x1u   /* collect with DIRTY_COLLECT_CLEAN */
#define DIRTY_IMAGE_ALL 0x2u     /* every page of the regions: a base image */
#define DIRTY_IMAGE_PWRITEV 0x4u /* do not use io_uring */
#define DIRTY_IMAGE_DIRECT 0x8u  /* fd was opened with O_DIRECT: aligned buffers only */
/* with DIRTY_IMAGE_ALL: the header says DIRTY_IMAGE_NEW_PROGRAM (the process exec'ed) */
#define DIRTY_IMAGE_EXEC 0x10u

struct dirty_image_stats {
	size_t sz;
	uint64_t runs, pages, bytes;
	const char *method;     /* "io_uring" or "pwritev" (and why, if io_uring was
	                           refused): a static string */
};

/*
 * Collect the regions (each a tracked range of t; names may be NULL) and write
 * one image of the pages reported, contents included, to fd at its current
 * offset, which is advanced.  Pages of this process are written from memory,
 * those of another process read with process_vm_readv(2); a page's content is
 * from collect time or later (for an exact image, stop the target first).
 * Regions must be sorted and must not overlap (-EINVAL); DIRTY_IMAGE_EXEC
 * needs DIRTY_IMAGE_ALL (-EINVAL).  With
 * DIRTY_IMAGE_DIRECT (or an fd opened O_DIRECT) fd must be seekable, not
 * O_APPEND, at a 4096-aligned offset (-EINVAL).  Pages of this process that
 * are written while the image is written are staged and written again, so
 * that the image's checksums hold; a pipe, a socket or O_APPEND is written
 * in order from copies.  With DIRTY_IMAGE_CLEAN, a failure marks all the
 * image's pages dirty again (an image without its trailer is refused whole).
 * Errors: those of dirty_collect() (-ESTALE, -ESRCH), -EINVAL bad options,
 * -EFAULT memory gone meanwhile, and the errno of a failed write; the image
 * is then incomplete: its trailer is missing and readers refuse it.
 */
int dirty_image_write(struct dirty_tracker *t, const struct dirty_range *regions,
		      const char *const *names, size_t nregions,
		      const struct dirty_image_options *opts, int fd,
		      struct dirty_image_stats *ret);

/*
 * Check an image at fd's current offset (a file of images one after the
 * other is read in turn): magic, version, sizes, order of the runs, both
 * CRCs.  Fills *ret (may be NULL) and leaves fd after the image.  Errors:
 * -EBADMSG a corrupt image (bad checksum, runs out of order or outside the
 * regions), -EPROTO an unknown version, -ENODATA a truncated one.
 */
int dirty_image_verify(int fd, struct dirty_image_header *ret);

/*
 * What dirty_image_read() hands over as it reads.  Each callback may be
 * NULL; a non-zero return stops the read, and the call returns it.
 */
struct dirty_image_reader {
	size_t sz;              /* sizeof(struct dirty_image_reader) */
	/*
	 * The header and the tables (h->nregions regions, h->nruns runs), once
	 * they are read and checked (the header's checksum, the layout, the
	 * order of regions and runs), before the first page.  Valid during the
	 * call only; never NULL, even when a table is empty.
	 */
	int (*tables)(const struct dirty_image_header *h, const struct dirty_image_region *regions,
		      const struct dirty_image_run *runs, void *userdata);
	/*
	 * The contents of [address, address + len) of the image's process: a
	 * piece of one run (len a multiple of 4096), in run and address order.
	 * Not yet checked: the image's checksum, which covers them, is checked
	 * after the last piece.
	 */
	int (*pages)(uint64_t address, const void *data, size_t len, void *userdata);
	void *userdata;
};

/*
 * dirty_image_verify() that also hands the image's tables and pages to the
 * reader as it reads them, in one pass: what a restore does, so that the
 * bytes it uses are the bytes the checksums were checked on (a second read
 * of a file may find it changed).  A caller that keeps the pages must throw
 * them away unless this returns 0.  reader may be NULL (then it is
 * dirty_image_verify()).  Errors: those of dirty_image_verify(), -EINVAL a
 * reader whose sz is too small (or larger, with the extra bytes not zero),
 * or what a callback returned.
 */
int dirty_image_read(int fd, const struct dirty_image_reader *reader,
		     struct dirty_image_header *ret);

/* ---- NUMA: on which node do the dirty pages live? ---- */

#define DIRTY_NUMA_MAX_NODES 64

struct dirty_numa_counts {
	size_t sz;              /* sizeof(struct dirty_numa_counts) */
	int available;          /* 1 if nodes were counted; 0 and a reason if not */
	unsigned nnodes;        /* nodes of the machine */
	uint64_t pages[DIRTY_NUMA_MAX_NODES]; /* per node */
	uint64_t unknown;       /* pages not present (or not queryable) */
	char reason[128];       /* with available == 0: single node, no libnuma, ... */
};

/*
 * Count the pages of runs (of t's process) by the node that holds them
 * (move_pages(2) status queries, batched).  On a machine with one node, or
 * without NUMA support, it returns 0 with available = 0 and the reason.
 */
int dirty_numa_count(struct dirty_tracker *t, const struct dirty_range *runs, size_t nruns,
		     struct dirty_numa_counts *ret);

#ifdef __cplusplus
}
#endif

#endif /* LIBDIRTY_H */
