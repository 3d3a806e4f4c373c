/* SPDX-License-Identifier: MIT */
/*
 * The one internal header every libdirty source file shares, in the order of
 * the layers (libdirty/README.md): what a file may call is declared above
 * its own layer's part.
 */
#ifndef LIBDIRTY_INT_H
#define LIBDIRTY_INT_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "libdirty.h"

#define DIRTY_EXPORT __attribute__((visibility("default")))

#define DIRTY_REASON_LEN 512 /* a reason says what happened and what to do */

struct dirty_tracker;
struct dirty_backend;

/* ======== base/: knows no backend ======== */

/* base/log.c */
size_t dirty_page_size(void);
/* Log through t's callback (none: nothing). */
void dirty_log(const struct dirty_tracker *t, int priority, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* snprintf into why, ignoring truncation; returns err for tail calls. */
int dirty_reason(char *why, size_t why_len, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Is err a refusal by the target (gone, no permission, busy, its sandbox), not the kernel's lack? */
bool dirty_target_error(int err);
/* The fork generation of this process: changes in the child of every fork(). */
uint64_t dirty_fork_generation(void);
/* True in the child of a fork(): the kernel state behind t is the parent's. */
bool dirty_tracker_forked(const struct dirty_tracker *t);
/* A file read as a whole into a NUL-terminated malloc'd string. */
int dirty_read_file(const char *path, char **ret, size_t *ret_len);
/*
 * Make room for need elements of size bytes in *array (capacity *cap,
 * doubled as needed); nothing changes on failure (-ENOMEM).
 */
int dirty_grow(void **array, size_t *cap, size_t need, size_t size);
/*
 * The public structs that start with their own size (sz), so that callers
 * built against another release keep working.  A struct passed in must hold
 * at least min_size bytes (what the first release defined), and whatever a
 * newer caller put past the known bytes must be zero, since we would ignore
 * it: 0 or -EINVAL.
 */
int dirty_sized_check(const void *in, size_t sz, size_t min_size, size_t known);
/* Does the caller's *p hold field? */
#define DIRTY_SIZED_HAS(p, field)                                                        \
	((p) && (p)->sz >= offsetof(__typeof__(*(p)), field) + sizeof((p)->field))
/* p->field, or fallback where the caller's struct ends before it. */
#define DIRTY_SIZED_GET(p, field, fallback) (DIRTY_SIZED_HAS(p, field) ? (p)->field : (fallback))
/*
 * Copy a result of known bytes (its sz field first) into the caller's *out,
 * as much of it as the caller's sz holds, and set the caller's sz to that.
 */
void dirty_sized_out(void *out, const void *result, size_t known);

/* base/results.c: where collected runs go, and bitmaps of pages */
/*
 * Where collected runs go: an array of runs or a bitmap (the callback form is
 * built on the array form).  Backends only call dirty_sink_room() and
 * dirty_sink_add().  Runs are addresses, or offsets of a tracked file.
 */
struct dirty_sink {
	/* runs form */
	struct dirty_range *out;
	size_t max, n;
	/* bitmap form */
	uint64_t *bitmap;
	uintptr_t base;
	uint64_t pages; /* base pages added */
};
/*
 * The number of new, non-adjacent runs the sink can still take.  A run
 * adjacent to the last one merges and needs no room.
 */
size_t dirty_sink_room(const struct dirty_sink *s);
/* Add [start, end).  Returns false (and adds nothing) if there is no room. */
bool dirty_sink_add(struct dirty_sink *s, uintptr_t start, uintptr_t end);
/* Bitmaps, one bit per page (bit i is bit i % 64 of word i / 64). */
bool dirty_bits_test(const uint64_t *bits, uint64_t i);
/* The bits of word w that [first, last) covers. */
uint64_t dirty_bits_mask(uint64_t w, uint64_t first, uint64_t last);
/* Set or clear [first, last). */
void dirty_bits_set(uint64_t *bits, uint64_t first, uint64_t last);
void dirty_bits_clear(uint64_t *bits, uint64_t first, uint64_t last);
/* The same, each word with one atomic operation (release order). */
void dirty_bits_set_atomic(_Atomic uint64_t *bits, uint64_t first, uint64_t last);
void dirty_bits_clear_atomic(_Atomic uint64_t *bits, uint64_t first, uint64_t last);

/* base/page-bits.c */
/* Re-protect [start, end), which a collect took; on failure, mark it dirty again. */
typedef void (*dirty_reprotect_fn)(void *ctx, uintptr_t start, uintptr_t end);
/*
 * Feed the pages whose bits are set in [start, end) to sink (bit i is the
 * page at base + i * page_size).  With clean, take each word's bits, then
 * re-protect the runs taken, coalesced; bits that do not fit the sink are
 * given back.  *done is the first address not examined.
 */
void dirty_page_bits_collect(_Atomic uint64_t *bits, uintptr_t base, size_t page_size,
			     uintptr_t start, uintptr_t end, bool clean, struct dirty_sink *sink,
			     uintptr_t *done, dirty_reprotect_fn reprotect, void *ctx);

/* base/hash.c: a keyed hash of a page's contents */
/*
 * The key: words 0..22 for the stripes (16 stripes of 8 lanes, each
 * stripe's key one word on from the last), then the lanes' first values,
 * the scramble's and the final fold's.
 */
#define DIRTY_HASH_INIT 23
#define DIRTY_HASH_SCRAMBLE 31
#define DIRTY_HASH_FINAL 39
struct dirty_hash_key {
	uint64_t k[47];
};
/*
 * The compare way reads pages that the application's threads may be writing
 * at that moment: by design (a write racing with the read is reported now or
 * at the next collect, CONTRACT.md), like any reader of another's memory.
 * The code that reads them is left uninstrumented by the sanitizers
 * (DIRTY_READS_RACING), and ThreadSanitizer is told to ignore the reads of
 * the library calls it intercepts in between (DIRTY_RACING_READS_BEGIN/END:
 * memcmp and memcpy of the copies under DIRTY_TRACKER_COMPARE_COPY).
 */
#define DIRTY_READS_RACING __attribute__((no_sanitize("thread", "address")))
#if defined(__SANITIZE_THREAD__)
void AnnotateIgnoreReadsBegin(const char *file, int line);
void AnnotateIgnoreReadsEnd(const char *file, int line);
#define DIRTY_RACING_READS_BEGIN() AnnotateIgnoreReadsBegin(__FILE__, __LINE__)
#define DIRTY_RACING_READS_END() AnnotateIgnoreReadsEnd(__FILE__, __LINE__)
#else
#define DIRTY_RACING_READS_BEGIN() ((void)0)
#define DIRTY_RACING_READS_END() ((void)0)
#endif
/* A random key (getrandom); 0 or -errno. */
int dirty_hash_key_new(struct dirty_hash_key *key);
/* The hash of len bytes (a multiple of 1 KiB: a page), by the fastest code here. */
uint64_t dirty_hash_page(const void *page, size_t len, const struct dirty_hash_key *key);
/* The same by the plain C code (the answer is the same; for tests). */
uint64_t dirty_hash_page_c(const void *page, size_t len, const struct dirty_hash_key *key);
/* Does dirty_hash_page() use SIMD code here? */
bool dirty_hash_simd(void);

/* base/registry.c: a tracker's regions */
/* What the memory of a region is, as /proc/PID/smaps shows it. */
enum dirty_memory_kind {
	DIRTY_MEM_ANON,        /* private anonymous (heap, stack, MAP_ANONYMOUS) */
	DIRTY_MEM_FILE_PRIVATE,/* MAP_PRIVATE of a file */
	DIRTY_MEM_SHMEM,       /* MAP_SHARED anonymous, memfd, /dev/shm, SysV */
	DIRTY_MEM_FILE_SHARED, /* MAP_SHARED of another file */
	DIRTY_MEM_HUGETLB,     /* hugetlbfs, MAP_HUGETLB */
};

/*
 * What a region's start and end count in: addresses of the tracked address
 * space (DIRTY_KEY_MEMORY), or byte offsets of the file of that device and
 * inode (dirty_track_file()).
 */
struct dirty_key {
	dev_t dev;
	ino_t ino;
};
#define DIRTY_KEY_MEMORY ((struct dirty_key){ 0, 0 })

/* How a region is tracked: the cost model's choice (core/cost.c). */
enum dirty_way {
	DIRTY_WAY_PROTECT, /* the backend traps writes */
	DIRTY_WAY_COMPARE, /* pages compared with their record (core/compare.c) */
};

/* What trapping writes costs, measured for a backend on a kind of memory (core/cost.c). */
struct dirty_fault_cost {
	const struct dirty_backend *backend;
	enum dirty_memory_kind kind;
	dev_t dev;           /* of the file, 0 for anonymous memory */
	uint64_t write_ns;   /* a write fault on a clean page */
	uint64_t dirty_ns;   /* a dirty page's share of a collect-and-clean */
	uint64_t scan_ns;    /* a clean page's share of one */
};

/* What the cost model knows of a region. */
struct dirty_cost {
	const struct dirty_fault_cost *trap; /* for its backend and memory */
	unsigned collects;   /* whole-region collect-and-cleans since the last change of way */
	unsigned streak;     /* of them in a row where the other way was the cheaper */
	bool switch_pending; /* change way at the next whole-region collect-and-clean */
	unsigned settle;     /* collects a way is kept at least (0: the first time's) */
};

struct dirty_compare;

struct dirty_region {
	struct dirty_key key;
	uintptr_t start, end; /* [start, end), page aligned */
	int fd;               /* a file region, while it is being tracked: the caller's descriptor */
	size_t page_size;     /* base page, or huge page for hugetlb */
	enum dirty_memory_kind kind;
	int prot;             /* protection when tracking started, -1 mixed */
	bool gone;            /* unmapped or replaced since: -ESTALE */
	const struct dirty_backend *backend; /* the one tracking it */
	void *priv;           /* the backend's per-region state */
	/* how it is tracked (core/cost.c) */
	enum dirty_way way;
	struct dirty_cost cost;
	struct dirty_compare *compare; /* the compare way's state (core/compare.c), else NULL */
};

/* Regions sorted by key, then start; regions of one key never overlap. */
struct dirty_registry {
	struct dirty_region **v;
	size_t n, cap;
};
bool dirty_key_equal(struct dirty_key a, struct dirty_key b);
/*
 * Index of the first region of key whose end is above at, or where one
 * would go (n if none).
 */
size_t dirty_registry_find(const struct dirty_registry *g, struct dirty_key key, uintptr_t at);
/* Does a region of key overlap [start, end)? */
bool dirty_registry_overlaps(const struct dirty_registry *g, struct dirty_key key,
			     uintptr_t start, uintptr_t end);
int dirty_registry_insert(struct dirty_registry *g, struct dirty_region *r);
void dirty_registry_remove(struct dirty_registry *g, size_t index, size_t count);

/* base/claims.c: what the trackers of this process track of its own memory */
/*
 * Claim r's range for r, unless part of it is claimed already (-EEXIST), or
 * -ENOMEM.  A claim outlives fork() only if r's backend says that its hold
 * on the pages does (DIRTY_BACKEND_INHERITED).
 */
int dirty_claim(const struct dirty_region *r);
void dirty_unclaim(const struct dirty_region *r);
/* Is part of [start, end) claimed? */
bool dirty_claimed(uintptr_t start, uintptr_t end);

/* base/uffd.c: opening userfaultfds */
#define DIRTY_UFFD_ASYNC_FEATURES                                                        \
	(UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED | UFFD_FEATURE_WP_HUGETLBFS_SHMEM)
/* A new userfaultfd (user-mode faults only where possible), or -errno + why. */
int dirty_uffd_open(int flags, char *why, size_t why_len);
/*
 * A new userfaultfd; with kernel_faults one that handles faults the kernel
 * takes too where this process may (CAP_SYS_PTRACE, the sysctl, or
 * /dev/userfaultfd), else user-mode only (*ret_user_only set).  -errno + why.
 */
int dirty_uffd_new(int flags, bool kernel_faults, bool *ret_user_only, char *why,
		   size_t why_len);
/* The features UFFDIO_API offers here (asked once, on a scratch descriptor). */
uint64_t dirty_uffd_features(void);
/*
 * The features of dirty_uffd_features() by name ("PAGEFAULT_FLAG_WP, ...,
 * WP_ASYNC, RWP, RWP_ASYNC"), comma-separated into buf; returns how many, or
 * -ENOSYS when no userfaultfd can be opened.
 */
int dirty_uffd_feature_list(char *buf, size_t len);
/* UFFDIO_API with features; -EOPNOTSUPP names the first missing feature. */
int dirty_uffd_api(int uffd, uint64_t features, char *why, size_t why_len);

/* base/maps.c: /proc/PID/maps, smaps and pagemap */
/* What dirty_describe_range() learns about a range. */
struct dirty_range_info {
	enum dirty_memory_kind kind; /* of the first mapping */
	size_t page_size;            /* the largest KernelPageSize in the range */
	int prot;                    /* PROT_* common to every mapping */
	bool mixed_prot;             /* mappings differ in protection */
};

/*
 * Describe [start, end) of pid's address space (0 = self) from
 * /proc/PID/smaps.  -ENOMEM if part of the range is not mapped, -ESRCH if the
 * process is gone.
 */
int dirty_describe_range(pid_t pid, uintptr_t start, uintptr_t end,
			 struct dirty_range_info *ret);
/*
 * The mapping of this process at addr: the device of its file (0 for
 * anonymous memory) and its path as /proc/self/maps shows it ("" if none).
 * -ENOMEM if nothing is mapped there.
 */
int dirty_mapped_file(uintptr_t addr, dev_t *ret_dev, char *path, size_t path_len);
/* Is [start, end) of this process entirely mapped?  One cheap syscall. */
bool dirty_range_mapped(uintptr_t start, uintptr_t end);
/* The same for another process, from /proc/PID/maps: 0, -ENOMEM or -ESRCH. */
int dirty_range_mapped_pid(pid_t pid, uintptr_t start, uintptr_t end);
/*
 * 0 while the address space a /proc/PID/pagemap descriptor was opened on
 * lives; -ESRCH once the process has exited or exec'ed.
 */
int dirty_pagemap_alive(int pagemap_fd);
typedef int (*dirty_run_fn_int)(uintptr_t start, uintptr_t end, void *ctx);
struct pm_scan_arg;
/*
 * PAGEMAP_SCAN over [arg->start, arg->end) with the caller's masks (the
 * vector is ours): fn for each run found, in order.  0, fn's non-zero
 * return, or -errno: -ENOTTY at once on a kernel without it (before 6.7),
 * -ESRCH when the address space is gone.
 */
int dirty_pagemap_scan_each(int pagemap_fd, struct pm_scan_arg *arg, dirty_run_fn_int fn,
			    void *ctx);
/*
 * The 8-byte entries of /proc/PID/pagemap for [start, end), a chunk at a
 * time: fn(address of entries[0], entries, n, ctx).  0, fn's non-zero
 * return, or -errno (-ESRCH: the address space is gone).
 */
typedef int (*dirty_entries_fn)(uintptr_t addr, const uint64_t *entries, size_t n, void *ctx);
int dirty_pagemap_read_each(int pagemap_fd, uintptr_t start, uintptr_t end, dirty_entries_fn fn,
			    void *ctx);
/*
 * Call fn for each run of [start, end) whose pages hold data, in address
 * order: present pages other than the shared zero page, and with swapped
 * swapped-out ones (and, once userfaultfd has left its protection markers
 * there, those too: the kernel does not tell them apart).  Of a private
 * file mapping, only its private copies; of hugetlb memory, present pages.
 * PAGEMAP_SCAN, else 8 bytes of pagemap per page (where frame numbers are
 * hidden, the zero page then counts as data).  A non-zero return from fn
 * stops the walk and is returned; else 0 or -errno (-ESRCH: gone).
 */
int dirty_populated_each(int pagemap_fd, uintptr_t start, uintptr_t end,
			 enum dirty_memory_kind kind, bool swapped, dirty_run_fn_int fn, void *ctx);

/* base/remote.c: a userfaultfd made by another process */
/*
 * Make process pid create a userfaultfd (flags as for userfaultfd(2)) and
 * put a descriptor of it in *ret_fd; the target keeps none and cannot tell
 * (registers, mask, pending signals, state, seccomp outcome unchanged).
 * Borrows one of its threads with ptrace for a moment, from a helper
 * process.  -errno and a reason in why: -ESRCH gone (or its main thread
 * has exited), -EPERM ptrace refused (the rule named), -EBUSY traced by
 * another, or held in vfork(), -EACCES its seccomp filters (or syscall user
 * dispatch) would not let the calls through or cannot be read, -EOPNOTSUPP
 * not a 64-bit x86 process.
 */
int dirty_remote_userfaultfd(pid_t pid, int flags, int *ret_fd, char *why, size_t why_len);
/*
 * Whether pid can be ptraced (and with inject, made to run system calls),
 * as far as /proc tells without touching it: 0, or the -errno and reason
 * dirty_remote_userfaultfd() would give.  Seccomp filters are evaluated at
 * the real thing.
 */
int dirty_remote_check(pid_t pid, bool inject, char *why, size_t why_len);

/* base/seccomp.c: what a target's seccomp filters let through */
struct sock_filter;
struct seccomp_data;
/*
 * Run a seccomp filter (classic BPF, as PTRACE_SECCOMP_GET_FILTER gives it)
 * on sd as the kernel does: 0 and its return value in *ret, or -EINVAL for
 * a program the kernel would not have accepted.
 */
int dirty_seccomp_run(const struct sock_filter *prog, size_t len, const struct seccomp_data *sd,
		      uint32_t *ret);
/*
 * Of the return values of an older and a newer filter (or of the filters
 * before it), the one the kernel acts on: the lower action, the newer of
 * two equal ones.
 */
uint32_t dirty_seccomp_combine(uint32_t older, uint32_t newer);
/* Does the return value let the system call run (ALLOW, LOG)? */
bool dirty_seccomp_allows(uint32_t ret);
/* What the return value makes the kernel do, in words ("kill the process (...)"). */
const char *dirty_seccomp_action_name(uint32_t ret);

/* base/run-set.c: a set of pages as sorted, disjoint, coalesced runs */
struct dirty_span {
	uintptr_t start, end;
};
struct dirty_run_set {
	struct dirty_span *v;
	size_t n, cap; /* cap >= 1 once initialized */
};
int dirty_run_set_init(struct dirty_run_set *s);
void dirty_run_set_free(struct dirty_run_set *s);
/* Index of the first run that ends above addr (n if none). */
size_t dirty_run_set_lower_bound(const struct dirty_run_set *s, uintptr_t addr);
/* Add [start, end).  Never fails: without memory the set grows to a superset. */
void dirty_run_set_add(struct dirty_run_set *s, uintptr_t start, uintptr_t end);
/*
 * Replacing the part of a set inside [start, end) with runs found in
 * address order: builder_init() (-ENOMEM, nothing changed), builder_add()
 * for each run, in order (never fails: without memory, it widens the last
 * run), then replace(), which cannot fail and consumes the builder.
 * Nothing else may change the replaced set in between.
 */
int dirty_run_set_builder_init(struct dirty_run_set *b, const struct dirty_run_set *replaced);
void dirty_run_set_builder_add(struct dirty_run_set *b, const struct dirty_run_set *replaced,
			       uintptr_t start, uintptr_t end);
void dirty_run_set_replace(struct dirty_run_set *s, uintptr_t start, uintptr_t end,
			   struct dirty_run_set *b);

/* ======== backends/: one file per kernel mechanism, and the table ======== */

/* dirty_backend.flags */
#define DIRTY_BACKEND_MANUAL     0x01u /* memory: only when asked for by name */
#define DIRTY_BACKEND_FILES      0x02u /* tracks file regions (dirty_track_file()) */
#define DIRTY_BACKEND_TAKES_UFFD 0x04u /* takes a userfaultfd given by the caller */
#define DIRTY_BACKEND_SHARED     0x08u /* every tracker sees every write: claims nothing */
#define DIRTY_BACKEND_INHERITED  0x10u /* its hold on the pages outlives fork() (a claim too) */
/* installs a signal handler to track this process's memory (DIRTY_TRACKER_NO_SIGNALS) */
#define DIRTY_BACKEND_SIGNALS    0x20u

/*
 * One kernel mechanism.  The core validates every argument, holds the tracker
 * lock around every call but probe, and passes ranges that lie inside one
 * region.
 */
struct dirty_backend {
	const char *name;
	unsigned flags;       /* DIRTY_BACKEND_* */
	/*
	 * 0 if usable for pid (0 = self), else -errno and a reason in why.
	 * The core caches the answer for this process.
	 */
	int (*probe)(pid_t pid, char *why, size_t why_len);
	/*
	 * Make this tracker's state for the backend, into *ret (what
	 * dirty_backend_state() then gives), when the tracker is made or a
	 * region first needs the backend; close() releases it.
	 */
	int (*open)(struct dirty_tracker *t, void **ret);
	void (*close)(struct dirty_tracker *t, void *state);
	/* Start tracking r (described, or a file range with r->fd); leave it clean. */
	int (*track)(struct dirty_tracker *t, struct dirty_region *r);
	/* Stop tracking r; must succeed for a gone region. */
	void (*untrack)(struct dirty_tracker *t, struct dirty_region *r);
	int (*clean)(struct dirty_tracker *t, struct dirty_region *r, uintptr_t start,
		     uintptr_t end);
	/*
	 * Feed the dirty runs of [start, end) to sink in order, stopping when
	 * it is full.  *done receives the first address not examined.  With
	 * clean, exactly the pages fed to the sink are re-cleaned.
	 */
	int (*collect)(struct dirty_tracker *t, struct dirty_region *r, uintptr_t start,
		       uintptr_t end, bool clean, struct dirty_sink *sink, uintptr_t *done);
	/* Optional: stop trapping writes to the whole of r (adaptive mode); clean() resumes. */
	void (*unprotect)(struct dirty_tracker *t, struct dirty_region *r);
	/* Mark [start, end) dirty again (a collect could not deliver it). */
	void (*redirty)(struct dirty_tracker *t, struct dirty_region *r, uintptr_t start,
			uintptr_t end);
	/* Optional: add r's own counters to *st. */
	void (*stats)(const struct dirty_region *r, struct dirty_stats *st);
	/* Optional: the DIRTY_SEES_* flags of this backend here (none without). */
	unsigned (*sees)(struct dirty_tracker *t);
};

/* backends/table.c: every backend, best first, NULL-terminated */
extern const struct dirty_backend *const dirty_backends[];
/* The most backends there are (and one tracker can use). */
#define DIRTY_MAX_BACKENDS 8
/* Fault costs a tracker remembers: backend, kind of memory and filesystem. */
#define DIRTY_FAULT_COSTS 8

/* ======== core/: the tracker ======== */

struct dirty_tracker {
	pthread_mutex_t lock;
	/*
	 * Calls under way (dirty_tracker_enter()), so that dirty_tracker_free()
	 * can wait for them.  users_lock and users_gone only serve the free.
	 */
	_Atomic unsigned users;
	_Atomic bool freeing;
	bool free_deferred;  /* freed from inside a call: the last to leave frees */
	pthread_mutex_t users_lock;
	pthread_cond_t users_gone;
	/*
	 * The backends this tracker may use, best first: the one named, or
	 * for "auto" every usable one, each region going to the first that
	 * takes its kind of memory.  Bit i of each mask is about candidates[i]:
	 * opened (state[i] is its open()'s state), for_memory and for_files
	 * (which regions it may take), unprobed (added without a probe: one
	 * is made for this process before it is opened).  candidates[0] is
	 * opened with the tracker, the others when a region first needs them.
	 */
	const struct dirty_backend *candidates[DIRTY_MAX_BACKENDS];
	size_t ncandidates;
	unsigned opened, for_memory, for_files, unprobed;
	void *state[DIRTY_MAX_BACKENDS];
	pid_t pid;           /* target, 0 = self */
	unsigned flags;      /* DIRTY_TRACKER_* */
	int given_uffd;      /* DIRTY_TRACKER_GIVEN_UFFD: the caller's userfaultfd, else -1 */
	int pagemap;         /* the target's /proc/PID/pagemap (or self's) since t was made, or -1 */
	uint64_t fork_generation;
	dirty_log_fn log;
	void *log_userdata;
	int stop_signal;       /* soft-dirty: dirty_options.stop_signal, 0 = the default */
	uint64_t handler_mask; /* dirty_options.handler_mask */
	struct dirty_registry regions;
	struct dirty_stats stats;
	/* the cost model (core/cost.c): set up by the first region that may be compared */
	struct dirty_hash_key hash_key;
	uint64_t hash_ns;    /* to read and hash a page, as measured */
	struct dirty_fault_cost fault_costs[DIRTY_FAULT_COSTS];
	size_t nfault_costs;
};

/* The state backend b made for t (its open()), or NULL if b is not open on t. */
static inline void *dirty_backend_state(const struct dirty_tracker *t,
					const struct dirty_backend *b)
{
	for (size_t i = 0; i < t->ncandidates; i++)
		if (t->candidates[i] == b)
			return (t->opened & (1u << i)) ? t->state[i] : NULL;
	return NULL;
}

/* core/select.c: which backends work here */
/* The backend of that name, or NULL. */
const struct dirty_backend *dirty_backend_named(const char *name);
/* Probe b for pid (0 = this process, cached); 0, or -errno and why. */
int dirty_backend_probe_cached(const struct dirty_backend *b, pid_t pid, char *why,
			       size_t why_len);
/*
 * The usable backends for memory of pid, best first (MANUAL ones left out),
 * into out (room for DIRTY_MAX_BACKENDS): 0 with *ret_n >= 1 and the choice
 * in why.  With none: -ESRCH, -EPERM, -EBUSY or -EACCES when one was refused
 * by the target (why then gives that reason), else -EOPNOTSUPP (why gives
 * every backend's).
 */
int dirty_backend_choose(pid_t pid, const struct dirty_backend **out, size_t *ret_n, char *why,
			 size_t why_len);

/* core/tracker.c */
/*
 * Every public call on a tracker runs between these two, so that
 * dirty_tracker_free() waits for it.  enter: 0, -EINVAL for NULL, -EBADF if
 * t is not a live tracker (being freed, or freed).  Calls nest.
 */
int dirty_tracker_enter(struct dirty_tracker *t);
void dirty_tracker_leave(struct dirty_tracker *t);
/*
 * The body of a public call: return call's value, made between enter and
 * leave; or, if t is not a live tracker, on_refusal (which may name err_,
 * enter's error).
 */
#define DIRTY_COUNTED_CALL(t, type, on_refusal, call)                                    \
	do {                                                                             \
		int err_ = dirty_tracker_enter(t);                                       \
		type ret_;                                                               \
		if (err_)                                                                \
			return (type)(on_refusal);                                       \
		ret_ = (call);                                                           \
		dirty_tracker_leave(t);                                                  \
		return ret_;                                                             \
	} while (0)
/*
 * 0 while the process t tracks runs the program it ran when t was made;
 * -ESRCH once it has exited or exec'ed.
 */
int dirty_tracker_target_alive(struct dirty_tracker *t);

/* core/regions.c */
/*
 * Mark runs of memory dirty again (a collect-and-clean whose pages could not
 * be delivered).  Takes the lock; parts no longer tracked are skipped.
 */
void dirty_redirty_runs(struct dirty_tracker *t, const struct dirty_range *runs, size_t n);
/*
 * Give r to the first candidate of mask (for_memory or for_files) that
 * takes its kind of memory, opening it if need be; -EOPNOTSUPP if none does.
 */
int dirty_track_with_candidates(struct dirty_tracker *t, struct dirty_region *r, unsigned mask);

/* core/cost.c: each region tracked the cheaper way */
uint64_t dirty_now_ns(void);
/* A region just tracked: its way (protect), and what a fault costs on it. */
void dirty_cost_track(struct dirty_tracker *t, struct dirty_region *r);
/*
 * The collect of a region, by its way; a whole-region collect-and-clean is
 * timed and may change the way (see the top of cost.c).  As the backends'.
 */
int dirty_cost_collect(struct dirty_tracker *t, struct dirty_region *r, uintptr_t start,
		       uintptr_t end, bool clean, struct dirty_sink *sink, uintptr_t *done);
/* "protect" or "compare". */
const char *dirty_way_name(const struct dirty_region *r);

/* core/compare.c: the compare way */
/* May r be compared (this process's memory of a kind that can be read safely)? */
bool dirty_compare_possible(const struct dirty_tracker *t, const struct dirty_region *r);
/* Its state, unrecorded (then dirty_compare_clean() records every page); -ENOMEM. */
int dirty_compare_new(struct dirty_tracker *t, struct dirty_region *r);
void dirty_compare_free(struct dirty_region *r);
/* As a backend's collect, clean and redirty, for a compared region. */
int dirty_compare_collect(struct dirty_tracker *t, struct dirty_region *r, uintptr_t start,
			  uintptr_t end, bool clean, struct dirty_sink *sink, uintptr_t *done);
int dirty_compare_clean(struct dirty_tracker *t, struct dirty_region *r, uintptr_t start,
			uintptr_t end);
void dirty_compare_redirty(struct dirty_region *r, uintptr_t start, uintptr_t end);
/* Did a collect meet a page it could not read (shared memory not resident)? */
bool dirty_compare_unknown(const struct dirty_region *r);

/* ======== around/: on the public API ======== */

/* around/image.c: the image format (writer.c writes it) */
/* CRC-32C of buf, continuing crc (0 to start): crc32c("123456789") = 0xE3069283. */
uint32_t dirty_crc32c(uint32_t crc, const void *buf, size_t len);
/*
 * Zero *h, then set its magic, version, sizes, counts and section offsets.
 * -EOVERFLOW if the image would not fit in an off_t.
 */
int dirty_image_layout(struct dirty_image_header *h, uint32_t page_size, uint64_t nregions,
		       uint64_t nruns, uint64_t npages);
/* The crc field's value for *h: the CRC of the header with crc = 0. */
uint32_t dirty_image_header_crc(const struct dirty_image_header *h);

/* around/numa.c */
/*
 * A staging buffer of len bytes on the NUMA node of the calling CPU
 * (numa_alloc_onnode), or from mmap where there is no NUMA (one node, no
 * libnuma).  NULL on failure.  Free with dirty_numa_free(p, len).
 */
void *dirty_numa_alloc_local(size_t len);
void dirty_numa_free(void *p, size_t len);

#endif /* LIBDIRTY_INT_H */
