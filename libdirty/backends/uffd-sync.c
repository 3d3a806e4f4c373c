/* SPDX-License-Identifier: MIT */
/*
 * The uffd-sync backend (Linux 5.7+; shmem and hugetlb 5.19+), for kernels
 * without the WP_ASYNC + PAGEMAP_SCAN pair that uffd-async needs.
 *
 * Tracked memory is registered with a userfaultfd in write-protect mode
 * (UFFD_FEATURE_PAGEFAULT_FLAG_WP).  A clean page is write-protected; the
 * first write to it blocks in the kernel and queues a message on the
 * userfaultfd.  One handler thread per tracker reads the messages, up to 64
 * per read(2), and for each one un-protects the page (UFFDIO_WRITEPROTECT
 * mode 0, which also wakes the writer) and sets the page's bit in the
 * region's bitmap.  The bitmap is what collect reads, exactly as in
 * mprotect.c, and collect-and-clean re-protects what it reports.
 *
 * Why no write is lost.  The handler does, in this order:
 *     H1  resolve the fault so that the page takes writes without
 *         trapping: UFFDIO_WRITEPROTECT mode 0, or UFFDIO_COPY of a zero
 *         page for a page that was not populated (see below); either one
 *         wakes the writer, whose write may land at once
 *     H2  bit := 1 (atomic OR)
 * and collect-and-clean does, per page:
 *     C1  take the bit (atomic AND with its complement), report the page if
 *         it was 1
 *     C2  if reported: UFFDIO_WRITEPROTECT mode WP over the run
 * A write lands either on a page that traps, and faults into a new H1-H2,
 * or on a page that takes writes, which some H1 made so and whose H2
 * follows (or which was never protected: a page of a run between a C1 and
 * its C2, reported by that collect).  Take a write W on a page opened by an
 * H1-H2:
 *   - H2 before C1: C1 reports the page and C2 comes after W (else W would
 *     have trapped), so the caller, reading the page after the call, sees W;
 *   - H2 after C1: the bit stays set after this collect and the next reports
 *     the page.
 * A page that takes writes with its bit clear exists only between an H1 and
 * its H2.  The other order (H2 then H1) loses writes: C1 and C2 could fall
 * between them, and H1 would then open a re-protected page whose bit this
 * collect already took.  The writer's fault may also be queued long before
 * the handler reads it; nothing changes, since the page traps until H1.
 * Two messages for one page (two threads faulted on it) give two H1-H2: the
 * second may un-protect a page that a collect re-protected meanwhile, and
 * sets its bit again; that is a false positive, never a loss.  clean() is
 * C1 for every page, then one C2 for the range.
 *
 * Unpopulated memory.  On private anonymous memory the kernel keeps
 * write-protection in the page table entry, so a page that has none is not
 * protected: without UFFD_FEATURE_WP_UNPOPULATED (6.4) its first write does
 * not fault, and even with it, MADV_DONTNEED and MADV_FREE (at reclaim)
 * drop the protection with the page (a zap "on anonymous always means
 * dropping everything"), after which writes to the page are silent.
 * Populating at track time would not cover the drops and costs the memory
 * of sparse reservations.  So anonymous regions are registered in MISSING
 * mode as well: every access to a page that has no page table entry, the
 * first touch and the first touch after a drop alike, comes to the handler,
 * which fills the page with zeroes by UFFDIO_COPY: writable, with its bit
 * set (H1-H2 above), for a write; write-protected (UFFDIO_COPY_MODE_WP, one
 * step, so no write slips in unprotected) for a read, which is not a write.
 * No page is ever unprotected and untracked, holes cost nothing until
 * touched, and a page dropped while clean is not reported (the drop is not a
 * write).  The price: the first touch of each page costs a round trip to the
 * handler, as a write fault does.  Shmem and hugetlb keep protection on
 * empty entries and through drops (pte markers, 5.19), so they are
 * registered for write-protection only.  WP_UNPOPULATED is not requested.
 * File-backed memory (other than shmem) cannot be write-protected by a
 * synchronous userfaultfd at all: track() refuses it with -EOPNOTSUPP.
 *
 * Kernel writes.  A write by the kernel (read(2) into tracked memory,
 * process_vm_writev) takes the same path, handled by the same thread, if the
 * userfaultfd is allowed to handle kernel-mode faults: it is created without
 * UFFD_USER_MODE_ONLY when that is permitted (CAP_SYS_PTRACE,
 * vm.unprivileged_userfaultfd=1, or an accessible /dev/userfaultfd).  Else
 * it is created with it (logged at open) and the kernel's accesses that
 * would need the handler fail with EFAULT: its writes to clean pages, as
 * under mprotect, and its reads and writes of anonymous pages that have no
 * page table entry.  To keep kernel reads working, anonymous regions are
 * then populated for reading (MADV_POPULATE_READ, 5.14, else a read of each
 * page: the shared zero page, no memory) before they are registered, except
 * under DIRTY_TRACKER_SPARSE, whose point is not to do that; a page dropped
 * later is again one the kernel cannot read until the program touches it.
 *
 * Events.  Only UFFD_FEATURE_EVENT_UNMAP is requested.  The core's
 * msync-based check sees tracked memory that is unmapped, but not memory
 * replaced at the same address (MAP_FIXED over it, or munmap then mmap);
 * the unmap event, which the kernel sends for both and for the old range of
 * an mremap, marks the region gone (-ESTALE) without a false negative.
 * EVENT_REMOVE is not needed (MISSING mode sees what a drop leaves) and
 * EVENT_REMAP is not requested: without it the kernel drops the
 * registration of moved memory, which is then simply untracked.  An event
 * holds the thread that unmaps until the handler reads it, and until then
 * raises the context's mmap_changing, which makes UFFDIO_WRITEPROTECT and
 * UFFDIO_COPY fail with EAGAIN.  The collector retries (the handler thread
 * reads the event independently); the handler never waits for itself: on
 * EAGAIN it wakes the writer without resolving the fault, the write faults
 * again, and the handler meets it after reading the event.  Reading an
 * event lets the unmapping call return, possibly before the handler has
 * marked the region, so collect and clean first wait for the batch of
 * messages the handler may be in the middle of (batch_seq is odd while it
 * is): every event whose unmapping call has returned has been read, hence
 * is in that batch or an earlier one.
 *
 * The handler finds regions in a per-tracker sorted table under
 * table_lock, held while it processes a batch.  track() inserts a region
 * before registering its memory and untrack() removes it after
 * unregistering (which wakes faults pending there), each holding the lock
 * only to edit the table, so the handler never sees a freed bitmap.  The
 * handler never waits for the tracker lock or for anything its holder
 * does; collect and clean, which hold it, may wait for the handler (the end
 * of a batch, the reading of an unmap event), never the other way round.
 * A fault in memory that is registered but in no region (a message queued
 * before an untrack, read after it) is resolved without recording.
 *
 * The handler writes only memory the tracker owns: its stack, the tracker
 * state (one mapping, with the zero page it copies from) and the regions'
 * bitmaps (a mapping each).  track() refuses ranges that overlap them
 * (-EINVAL): a write fault there would wait for the one thread that would
 * have to resolve it.  The handler blocks every signal, so no signal
 * handler of the program runs on it.
 *
 * Fork.  The userfaultfd acts on the mm that created it, whoever calls, and
 * the child has neither the registrations nor the handler thread: in the
 * child nothing issues an ioctl or takes table_lock (the handler may have
 * held it at fork); close() only releases memory and descriptors.
 *
 * CPU placement.  A fault is a round trip between the faulting thread and
 * the handler: two wake-ups.  On the 2-CPU test VM a fault cost ~7.5 us with
 * both on one CPU and ~50 us across CPUs, where each wake-up of a sleeping
 * thread on an idle CPU costs tens of microseconds.  The library does not
 * pin: pinning a thread of the caller's process overrides the caller's own
 * placement (cpusets, isolated CPUs, a real-time layout), and following the
 * faulting thread's CPU would cost a /proc read per fault (the message
 * carries at most a thread id) and a migration each time writers on two
 * CPUs alternate.  Instead, after a batch of faults the handler keeps
 * polling for HANDLER_SPIN_NS (20 us) before it sleeps, yielding between
 * polls so that a writer it woke on its own CPU runs first.  A writer that
 * faults again soon finds it awake: one writer thread writing page after
 * page measured 52 us a fault without the spin, 29 us with 10 us, 15.6 us
 * with 20 us, 16 us with 40 us, and still 7.3-7.7 us when both share a CPU.
 * The price is at most 20 us of handler CPU time after each burst of
 * faults; an idle handler sleeps.  Reads are batched (64 messages), which
 * is what serves many writers at once: the conformance stress test (3
 * writers, 2 CPUs) saturates the CPUs either way.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "libdirty-int.h"
#include "linux-compat.h"

#define BATCH_MESSAGES 64
#define HANDLER_STACK_SIZE (256 * 1024)
/* after a batch of faults, look for the next one this long before sleeping */
#define HANDLER_SPIN_NS 20000

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* 5.14 */
#endif

/* A region's state, at the start of a mapping of its own that the bits follow. */
struct sync_region {
	uintptr_t start, end;
	size_t page_size; /* protection granularity: base or huge page */
	size_t map_len;   /* of this mapping */
	bool missing;     /* registered in MISSING mode too (anonymous memory) */
	_Atomic bool gone; /* unmapped or replaced: -ESTALE */
	_Atomic uint64_t faults;
	_Atomic uint64_t *bits; /* one bit per page_size page */
};

/* A tracker's state, at the start of a mapping of its own (see the top). */
struct sync_tracker {
	int uffd, stop_fd;
	bool user_mode_only;     /* kernel-mode faults get EFAULT */
	bool shmem_ok;           /* WP_HUGETLBFS_SHMEM was granted */
	bool handler_running;
	pthread_t handler;
	uintptr_t stack_lo, stack_hi; /* the handler's stack and TLS */
	size_t map_len;
	const void *zero_page;   /* UFFDIO_COPY's source, never written */
	/* odd while the handler reads and processes a batch */
	_Atomic uint64_t batch_seq;
	/* the handler's view of the regions: sorted, never overlapping */
	pthread_mutex_t table_lock;
	struct sync_region **table;
	size_t ntable, table_cap;
};

extern const struct dirty_backend dirty_backend_uffd_sync;

static struct sync_tracker *state_of(const struct dirty_tracker *t)
{
	return dirty_backend_state(t, &dirty_backend_uffd_sync);
}

/* ---- bits ---- */

/* Set or clear the bits of the pages of [start, end). */
static void bits_update(struct sync_region *m, uintptr_t start, uintptr_t end, bool set)
{
	size_t first = (start - m->start) / m->page_size, last = (end - m->start) / m->page_size;

	if (set)
		dirty_bits_set_atomic(m->bits, first, last);
	else
		dirty_bits_clear_atomic(m->bits, first, last);
}

static void bit_set(struct sync_region *m, uintptr_t page)
{
	size_t i = (page - m->start) / m->page_size;

	dirty_bits_set_atomic(m->bits, i, i + 1);
}

/* ---- the handler thread ---- */

static struct sync_region *table_find(const struct sync_tracker *s, uintptr_t addr)
{
	size_t lo = 0, hi = s->ntable;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		struct sync_region *m = s->table[mid];

		if (addr < m->start)
			hi = mid;
		else if (addr >= m->end)
			lo = mid + 1;
		else
			return m;
	}
	return NULL;
}

static void wake(const struct sync_tracker *s, uintptr_t start, size_t len)
{
	struct uffdio_range range = { .start = start, .len = len };

	ioctl(s->uffd, UFFDIO_WAKE, &range);
}

/*
 * H1 for the page of one fault: make it take writes (or, for a read of a
 * missing page, fill it protected).  Returns true if the page now takes
 * writes.  The faulting thread is woken whatever happens, so that it
 * retries: a fault that could not be resolved (EAGAIN while an unmap event
 * is pending, a range no longer registered) simply faults again or goes
 * through.
 */
static bool resolve(struct sync_tracker *s, uintptr_t page, size_t len, uint64_t flags,
		    bool *again)
{
	bool write = flags & UFFD_PAGEFAULT_FLAG_WRITE;
	int ret;

	if (flags & UFFD_PAGEFAULT_FLAG_WP) {
		struct uffdio_writeprotect wp = { .range = { .start = page, .len = len } };

		ret = ioctl(s->uffd, UFFDIO_WRITEPROTECT, &wp);
		write = true;
	} else {
		/* missing: a zero page, writable for a write, protected for a read */
		struct uffdio_copy copy = {
			.dst = page,
			.src = (uintptr_t)s->zero_page,
			.len = len,
			.mode = write ? 0 : UFFDIO_COPY_MODE_WP,
		};

		ret = ioctl(s->uffd, UFFDIO_COPY, &copy);
	}
	if (ret == 0)
		return write; /* and the ioctl woke the thread */
	if (errno == EAGAIN)
		*again = true;
	wake(s, page, len);
	return false;
}

static void handle_fault(struct sync_tracker *s, const struct uffd_msg *msg, bool *again)
{
	uintptr_t addr = (uintptr_t)msg->arg.pagefault.address;
	struct sync_region *m = table_find(s, addr);
	size_t page_size = m ? m->page_size : dirty_page_size();
	uintptr_t page = addr & ~(uintptr_t)(page_size - 1);

	if (resolve(s, page, page_size, msg->arg.pagefault.flags, again) && m) {
		bit_set(m, page); /* H2 */
		atomic_fetch_add_explicit(&m->faults, 1, memory_order_relaxed);
	}
}

/* Every region that [start, end) touches is gone, even in part. */
static void handle_unmap(struct sync_tracker *s, uintptr_t start, uintptr_t end)
{
	for (size_t i = 0; i < s->ntable; i++)
		if (s->table[i]->start < end && start < s->table[i]->end)
			atomic_store(&s->table[i]->gone, true);
}

/*
 * Poll without sleeping for up to HANDLER_SPIN_NS: true if a descriptor is
 * ready.  A writer on this CPU that the last batch woke runs first.
 */
static bool spin_for_messages(struct pollfd *pfd)
{
	struct timespec start, now;

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		if (poll(pfd, 2, 0) > 0)
			return true;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((now.tv_sec - start.tv_sec) * 1000000000L + now.tv_nsec - start.tv_nsec >
		    HANDLER_SPIN_NS)
			return false;
		sched_yield();
	}
}

static void *handler_main(void *arg)
{
	struct sync_tracker *s = arg;
	struct uffd_msg msgs[BATCH_MESSAGES];
	struct pollfd pfd[2] = { { .fd = s->uffd, .events = POLLIN },
				 { .fd = s->stop_fd, .events = POLLIN } };
	bool faults = false;

	for (;;) {
		bool again = false;
		ssize_t n;

		if (!(faults && spin_for_messages(pfd)) && poll(pfd, 2, -1) < 0)
			continue; /* EINTR; every signal is blocked anyway */
		faults = false;
		if (pfd[1].revents)
			break;
		if (!(pfd[0].revents & POLLIN))
			continue;
		atomic_fetch_add(&s->batch_seq, 1); /* odd: see wait_for_handler() */
		n = read(s->uffd, msgs, sizeof(msgs));
		pthread_mutex_lock(&s->table_lock);
		for (ssize_t i = 0; i < n / (ssize_t)sizeof(msgs[0]); i++) {
			switch (msgs[i].event) {
			case UFFD_EVENT_PAGEFAULT:
				handle_fault(s, &msgs[i], &again);
				faults = true;
				break;
			case UFFD_EVENT_UNMAP:
				handle_unmap(s, (uintptr_t)msgs[i].arg.remove.start,
					     (uintptr_t)msgs[i].arg.remove.end);
				break;
			default:
				break;
			}
		}
		pthread_mutex_unlock(&s->table_lock);
		atomic_fetch_add(&s->batch_seq, 1);
		/* let the unmapping thread finish before its event clears mmap_changing */
		if (again)
			sched_yield();
	}
	return NULL;
}

/*
 * Wait until the handler is not in the middle of a batch it has read: then
 * every unmap event already delivered has been applied (see the top).
 */
static void wait_for_handler(struct sync_tracker *s)
{
	uint64_t seq = atomic_load(&s->batch_seq);

	if (seq & 1)
		while (atomic_load(&s->batch_seq) == seq)
			sched_yield();
}

/* ---- helpers for the collector side ---- */

/*
 * UFFDIO_WRITEPROTECT, retried while an unmap event holds mmap_changing up
 * (the handler thread reads it independently).  Mode 0 also wakes faults
 * pending in the range.
 */
static int write_protect_one(struct sync_tracker *s, uintptr_t start, uintptr_t end,
			     bool protect)
{
	struct uffdio_writeprotect wp = {
		.range = { .start = start, .len = end - start },
		.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
	};

	while (ioctl(s->uffd, UFFDIO_WRITEPROTECT, &wp) < 0) {
		if (errno != EAGAIN && errno != EINTR)
			return -errno;
		sched_yield();
	}
	return 0;
}

/*
 * On older kernels UFFDIO_WRITEPROTECT takes a range inside one vma (6.1's
 * mwriteprotect_range() looks up a single vma and fails with ENOENT
 * otherwise; 6.12's walks every vma of the range), and a region spans
 * several once part of it is mprotect()ed or was mapped separately.  Protect such a range one vma at a time; ENOENT on
 * a single vma, or a hole, means the memory is gone.  Not on the fault
 * path: the handler's single pages lie in one vma.
 */
static int write_protect_by_vma(struct sync_tracker *s, uintptr_t start, uintptr_t end,
				bool protect)
{
	char *text, *line, *save = NULL;
	uintptr_t covered = start;
	int err;

	err = dirty_read_file("/proc/self/maps", &text, NULL);
	if (err)
		return err;
	err = -ENOENT;
	for (line = strtok_r(text, "\n", &save); line && covered < end;
	     line = strtok_r(NULL, "\n", &save)) {
		uint64_t lo, hi;

		if (sscanf(line, "%" SCNx64 "-%" SCNx64, &lo, &hi) != 2 || hi <= covered)
			continue;
		if (lo > covered || (lo <= start && hi >= end))
			break; /* a hole, or one vma: the ENOENT was real */
		err = write_protect_one(s, covered, hi < end ? (uintptr_t)hi : end, protect);
		if (err)
			break;
		covered = hi < end ? (uintptr_t)hi : end;
	}
	free(text);
	return covered >= end ? 0 : err ? err : -ENOENT;
}

static int write_protect(struct sync_tracker *s, uintptr_t start, uintptr_t end, bool protect)
{
	int err = write_protect_one(s, start, end, protect);

	if (err == -ENOENT && end - start > dirty_page_size())
		err = write_protect_by_vma(s, start, end, protect);
	return err;
}

/* Memory that is not registered with us any more was unmapped or replaced. */
static int protect_error(struct sync_region *m, int err)
{
	if (err == -ENOENT) {
		atomic_store(&m->gone, true);
		return -ESTALE;
	}
	return err;
}

static bool region_gone(struct sync_tracker *s, struct sync_region *m)
{
	wait_for_handler(s);
	return atomic_load(&m->gone);
}

/* ---- the backend ---- */

/*
 * A userfaultfd that handles kernel-mode faults too if we may have one, else
 * a user-mode-only one.
 */
static int open_uffd(struct sync_tracker *s, char *why, size_t why_len)
{
	return dirty_uffd_new(O_CLOEXEC | O_NONBLOCK, true, &s->user_mode_only, why, why_len);
}

static void state_free(struct sync_tracker *s)
{
	if (s->uffd >= 0)
		close(s->uffd);
	if (s->stop_fd >= 0)
		close(s->stop_fd);
	free(s->table);
	if (!s->handler_running)
		pthread_mutex_destroy(&s->table_lock);
	munmap(s, s->map_len);
}

static int start_handler(struct sync_tracker *s)
{
	pthread_attr_t attr, actual;
	sigset_t all, old;
	void *stack;
	size_t size;
	int err;

	err = pthread_attr_init(&attr);
	if (err)
		return -err;
	if (HANDLER_STACK_SIZE >= PTHREAD_STACK_MIN)
		pthread_attr_setstacksize(&attr, HANDLER_STACK_SIZE);
	/* the handler inherits a mask that blocks everything */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = pthread_create(&s->handler, &attr, handler_main, s);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	if (err)
		return -err;
	s->handler_running = true;
	if (pthread_getattr_np(s->handler, &actual) == 0) {
		if (pthread_attr_getstack(&actual, &stack, &size) == 0) {
			s->stack_lo = (uintptr_t)stack;
			s->stack_hi = (uintptr_t)stack + size;
		}
		pthread_attr_destroy(&actual);
	}
	return 0;
}

static int uffd_sync_open(struct dirty_tracker *t, void **ret)
{
	size_t page = dirty_page_size();
	size_t map_len = ((sizeof(struct sync_tracker) + page - 1) & ~(page - 1)) + page;
	char why[DIRTY_REASON_LEN] = "";
	struct sync_tracker *s;
	uint64_t features;
	int err;

	s = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (s == MAP_FAILED)
		return -ENOMEM;
	s->map_len = map_len;
	s->zero_page = (const char *)s + map_len - page;
	s->stop_fd = -1;
	err = pthread_mutex_init(&s->table_lock, NULL);
	if (err) {
		munmap(s, map_len);
		return -err;
	}
	s->uffd = open_uffd(s, why, sizeof(why));
	if (s->uffd < 0) {
		err = s->uffd;
		goto fail;
	}
	features = UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_EVENT_UNMAP;
	if (dirty_uffd_features() & UFFD_FEATURE_WP_HUGETLBFS_SHMEM)
		features |= UFFD_FEATURE_WP_HUGETLBFS_SHMEM;
	err = dirty_uffd_api(s->uffd, features, why, sizeof(why));
	if (err)
		goto fail;
	s->shmem_ok = features & UFFD_FEATURE_WP_HUGETLBFS_SHMEM;
	s->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->stop_fd < 0) {
		err = -errno;
		snprintf(why, sizeof(why), "eventfd: %s", strerror(errno));
		goto fail;
	}
	err = start_handler(s);
	if (err) {
		snprintf(why, sizeof(why), "cannot start the fault-handling thread: %s",
			 strerror(-err));
		goto fail;
	}
	if (s->user_mode_only)
		dirty_log(t, LOG_WARNING,
			  "uffd-sync: userfaultfd for user-mode faults only (no CAP_SYS_PTRACE, "
			  "vm.unprivileged_userfaultfd=0, no /dev/userfaultfd): kernel writes "
			  "into clean tracked memory, and kernel accesses to dropped pages, "
			  "fail with EFAULT");
	if (!s->shmem_ok)
		dirty_log(t, LOG_INFO,
			  "uffd-sync: no UFFD_FEATURE_WP_HUGETLBFS_SHMEM (5.19): anonymous "
			  "memory only");
	*ret = s;
	return 0;
fail:
	dirty_log(t, LOG_ERR, "uffd-sync: %s", why);
	state_free(s);
	return err;
}

static void uffd_sync_close(struct dirty_tracker *t, void *state)
{
	struct sync_tracker *s = state;
	uint64_t one = 1;

	/* in a forked child the handler thread does not exist */
	if (s->handler_running && !dirty_tracker_forked(t)) {
		/*
		 * The core untracks every region first.  Should one be left,
		 * unregister it while the handler still runs: after it stops,
		 * a fault or an unmap there would wait for nobody (until the
		 * descriptor's last copy, perhaps in a child, is closed).
		 */
		for (size_t i = 0; i < s->ntable; i++) {
			struct uffdio_range range = { .start = s->table[i]->start,
						      .len = s->table[i]->end - s->table[i]->start };

			ioctl(s->uffd, UFFDIO_UNREGISTER, &range);
		}
		while (write(s->stop_fd, &one, sizeof(one)) < 0 && errno == EINTR)
			;
		pthread_join(s->handler, NULL);
		s->handler_running = false;
	}
	state_free(s);
}

static bool overlaps(uintptr_t start, uintptr_t end, uintptr_t lo, uintptr_t hi)
{
	return lo < end && start < hi;
}

/* Does [start, end) hold memory the handler writes?  (Under the tracker lock: the table is ours.) */
static bool holds_own_state(struct sync_tracker *s, uintptr_t start, uintptr_t end)
{
	if (overlaps(start, end, (uintptr_t)s, (uintptr_t)s + s->map_len) ||
	    overlaps(start, end, s->stack_lo, s->stack_hi))
		return true;
	for (size_t i = 0; i < s->ntable; i++)
		if (overlaps(start, end, (uintptr_t)s->table[i],
			     (uintptr_t)s->table[i] + s->table[i]->map_len))
			return true;
	return false;
}

static int table_insert(struct sync_tracker *s, struct sync_region *m)
{
	size_t i;
	int err;

	pthread_mutex_lock(&s->table_lock);
	err = dirty_grow((void **)&s->table, &s->table_cap, s->ntable + 1, sizeof(*s->table));
	if (!err) {
		for (i = s->ntable; i > 0 && s->table[i - 1]->start > m->start; i--)
			s->table[i] = s->table[i - 1];
		s->table[i] = m;
		s->ntable++;
	}
	pthread_mutex_unlock(&s->table_lock);
	return err;
}

static void table_remove(struct sync_tracker *s, struct sync_region *m)
{
	pthread_mutex_lock(&s->table_lock);
	for (size_t i = 0; i < s->ntable; i++) {
		if (s->table[i] == m) {
			memmove(s->table + i, s->table + i + 1,
				(s->ntable - i - 1) * sizeof(s->table[0]));
			s->ntable--;
			break;
		}
	}
	pthread_mutex_unlock(&s->table_lock);
}

static struct sync_region *region_new(struct dirty_region *r)
{
	size_t page = dirty_page_size(), npages = (r->end - r->start) / r->page_size;
	size_t nwords = (npages + 63) / 64;
	size_t header = (sizeof(struct sync_region) + 63) & ~(size_t)63;
	size_t map_len = (header + nwords * sizeof(uint64_t) + page - 1) & ~(page - 1);
	struct sync_region *m;

	/* zero-filled on demand: a sparse 1 TiB region costs nothing until written */
	m = mmap(NULL, map_len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m == MAP_FAILED)
		return NULL;
	m->start = r->start;
	m->end = r->end;
	m->page_size = r->page_size;
	m->map_len = map_len;
	m->missing = r->kind == DIRTY_MEM_ANON;
	m->bits = (_Atomic uint64_t *)((char *)m + header);
	return m;
}

static const char *kind_name(enum dirty_memory_kind kind)
{
	switch (kind) {
	case DIRTY_MEM_ANON:
		return "private anonymous";
	case DIRTY_MEM_FILE_PRIVATE:
		return "private file-backed";
	case DIRTY_MEM_SHMEM:
		return "shared memory";
	case DIRTY_MEM_FILE_SHARED:
		return "shared file-backed";
	case DIRTY_MEM_HUGETLB:
		return "hugetlb";
	}
	return "unknown";
}

/*
 * Map every page of [start, end) that has no entry, for reading (the zero
 * page): done before a user-mode-only userfaultfd registers anonymous
 * memory, so that the kernel can read pages not written yet (see the top).
 */
static void populate_for_reads(uintptr_t start, uintptr_t end)
{
	size_t page = dirty_page_size();

	if (madvise((void *)start, end - start, MADV_POPULATE_READ) == 0 || errno != EINVAL)
		return;
	for (uintptr_t a = start; a < end; a += page) /* before 5.14 */
		(void)*(volatile const char *)a;
}

static int uffd_sync_track(struct dirty_tracker *t, struct dirty_region *r)
{
	struct sync_tracker *s = state_of(t);
	struct uffdio_register reg = {
		.range = { .start = r->start, .len = r->end - r->start },
		.mode = UFFDIO_REGISTER_MODE_WP,
	};
	struct uffdio_range range = reg.range;
	struct sync_region *m;
	int err;

	if (r->kind == DIRTY_MEM_FILE_PRIVATE || r->kind == DIRTY_MEM_FILE_SHARED ||
	    (!s->shmem_ok && r->kind != DIRTY_MEM_ANON)) {
		dirty_log(t, LOG_ERR,
			  "uffd-sync: cannot track %s memory at %#lx-%#lx: %s",
			  kind_name(r->kind), (unsigned long)r->start, (unsigned long)r->end,
			  s->shmem_ok ? "a synchronous userfaultfd write-protects anonymous, "
					"shared and hugetlb memory only"
				      : "this kernel write-protects anonymous memory only "
					"(shmem and hugetlb need Linux 5.19)");
		return -EOPNOTSUPP;
	}
	if (holds_own_state(s, r->start, r->end)) {
		dirty_log(t, LOG_ERR,
			  "uffd-sync: %#lx-%#lx holds the tracker's own fault-handling state",
			  (unsigned long)r->start, (unsigned long)r->end);
		return -EINVAL;
	}
	m = region_new(r);
	if (!m)
		return -ENOMEM;
	/* in the table before any fault can come, so none finds it missing */
	err = table_insert(s, m);
	if (err)
		goto fail_free;
	if (m->missing)
		reg.mode |= UFFDIO_REGISTER_MODE_MISSING;
	if (m->missing && s->user_mode_only && !(t->flags & DIRTY_TRACKER_SPARSE))
		populate_for_reads(r->start, r->end);
	if (ioctl(s->uffd, UFFDIO_REGISTER, &reg) < 0) {
		err = -errno;
		/* EBUSY: registered with another userfaultfd, such as another tracker */
		dirty_log(t, LOG_ERR, "uffd-sync: UFFDIO_REGISTER %#lx-%#lx: %s",
			  (unsigned long)r->start, (unsigned long)r->end, strerror(-err));
		if (err == -EBUSY)
			err = -EEXIST;
		goto fail_table;
	}
	if (!(reg.ioctls & (UINT64_C(1) << _UFFDIO_WRITEPROTECT))) {
		err = -EOPNOTSUPP;
		dirty_log(t, LOG_ERR, "uffd-sync: %#lx-%#lx cannot be write-protected",
			  (unsigned long)r->start, (unsigned long)r->end);
		goto fail_register;
	}
	err = write_protect(s, r->start, r->end, true);
	if (err)
		goto fail_register;
	r->priv = m;
	return 0;
fail_register:
	ioctl(s->uffd, UFFDIO_UNREGISTER, &range);
fail_table:
	table_remove(s, m);
fail_free:
	munmap(m, m->map_len);
	return err;
}

static void uffd_sync_untrack(struct dirty_tracker *t, struct dirty_region *r)
{
	struct sync_tracker *s = state_of(t);
	struct uffdio_range range = { .start = r->start, .len = r->end - r->start };
	struct sync_region *m = r->priv;

	/*
	 * In a forked child: an ioctl would unregister the parent's memory,
	 * and the handler may have held table_lock at fork.  The child's own
	 * memory lost its registration at fork anyway.
	 */
	if (!dirty_tracker_forked(t)) {
		/*
		 * Unregistering drops the protection and wakes faults pending
		 * in the range; only then can the region leave the table.  A
		 * gone region may still have a part mapped and registered; its
		 * claim (claims.c) kept anybody else from registering the rest
		 * meanwhile.
		 */
		if (ioctl(s->uffd, UFFDIO_UNREGISTER, &range) < 0 && !r->gone &&
		    !atomic_load(&m->gone))
			dirty_log(t, LOG_WARNING, "uffd-sync: UFFDIO_UNREGISTER %#lx-%#lx: %s",
				  (unsigned long)r->start, (unsigned long)r->end, strerror(errno));
		table_remove(s, m);
	}
	munmap(m, m->map_len);
	r->priv = NULL;
}

static int uffd_sync_clean(struct dirty_tracker *t, struct dirty_region *r, uintptr_t start,
			   uintptr_t end)
{
	struct sync_tracker *s = state_of(t);
	struct sync_region *m = r->priv;
	int err;

	if (region_gone(s, m))
		return -ESTALE;
	/* C1 for every page, then C2 for all of them at once */
	bits_update(m, start, end, false);
	err = write_protect(s, start, end, true);
	if (err) {
		/* possibly half done: pages that take writes must not be left clean */
		bits_update(m, start, end, true);
		return protect_error(m, err);
	}
	return 0;
}

/* C2 for a run that was reported; on failure the run must stay dirty. */
static void reprotect(struct dirty_tracker *t, struct sync_tracker *s, struct sync_region *m,
		      uintptr_t start, uintptr_t end)
{
	int err = write_protect(s, start, end, true);

	if (!err)
		return;
	bits_update(m, start, end, true);
	if (protect_error(m, err) != -ESTALE)
		dirty_log(t, LOG_WARNING,
			  "uffd-sync: cannot re-protect %#lx-%#lx (%s); it stays dirty",
			  (unsigned long)start, (unsigned long)end, strerror(-err));
}

struct reprotect_ctx {
	struct dirty_tracker *t;
	struct sync_tracker *s;
	struct sync_region *m;
};

static void reprotect_cb(void *ctx, uintptr_t start, uintptr_t end)
{
	struct reprotect_ctx *c = ctx;

	reprotect(c->t, c->s, c->m, start, end);
}

static int uffd_sync_collect(struct dirty_tracker *t, struct dirty_region *r, uintptr_t start,
			     uintptr_t end, bool clean, struct dirty_sink *sink, uintptr_t *done)
{
	struct sync_tracker *s = state_of(t);
	struct sync_region *m = r->priv;
	struct reprotect_ctx ctx = { t, s, m };

	if (region_gone(s, m))
		return -ESTALE;
	dirty_page_bits_collect(m->bits, m->start, m->page_size, start, end, clean, sink, done,
				reprotect_cb, &ctx);
	return 0;
}

static void uffd_sync_redirty(struct dirty_tracker *t, struct dirty_region *r, uintptr_t start,
			      uintptr_t end)
{
	(void)t;
	bits_update(r->priv, start, end, true);
}

static void uffd_sync_unprotect(struct dirty_tracker *t, struct dirty_region *r)
{
	int err = write_protect(state_of(t), r->start, r->end, false);

	if (err)
		dirty_log(t, LOG_WARNING, "uffd-sync: cannot unprotect %#lx-%#lx: %s",
			  (unsigned long)r->start, (unsigned long)r->end, strerror(-err));
}

static void uffd_sync_stats(const struct dirty_region *r, struct dirty_stats *st)
{
	const struct sync_region *m = r->priv;

	st->faults += atomic_load(&m->faults);
}

/* ---- can it run here ---- */

static int probe_uffd_sync(pid_t pid, char *why, size_t why_len)
{
	size_t page = dirty_page_size();
	int uffd, err;
	char *mem;

	if (pid)
		return dirty_reason(why, why_len, -EOPNOTSUPP,
				    "uffd-sync tracks the calling process only: a userfaultfd "
				    "acts on the process that created it");
	uffd = dirty_uffd_open(O_CLOEXEC | O_NONBLOCK, why, why_len);
	if (uffd < 0)
		return uffd;
	err = dirty_uffd_api(uffd, UFFD_FEATURE_PAGEFAULT_FLAG_WP, why, why_len);
	if (err)
		goto out_uffd;
	mem = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		err = -ENOMEM;
		goto out_uffd;
	}
	mem[0] = 1;
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)mem, .len = page },
		.mode = UFFDIO_REGISTER_MODE_WP | UFFDIO_REGISTER_MODE_MISSING,
	};
	struct uffdio_writeprotect wp = { .range = reg.range, .mode = UFFDIO_WRITEPROTECT_MODE_WP };
	if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0 || ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) < 0) {
		err = dirty_reason(why, why_len, errno == EINVAL ? -EOPNOTSUPP : -errno,
				   "userfaultfd write-protection of anonymous memory failed: %s",
				   strerror(errno));
		goto out_mem;
	}
	err = dirty_reason(why, why_len, 0,
			   "userfaultfd write-protect faults work (Linux 5.7+; shmem/hugetlb 5.19+)");
out_mem:
	close(uffd); /* first: it unregisters the page */
	munmap(mem, page);
	return err;
out_uffd:
	close(uffd);
	return err;
}

/* ---- the table ---- */

const struct dirty_backend dirty_backend_uffd_sync = {
	.name = "uffd-sync",
	.probe = probe_uffd_sync,
	.open = uffd_sync_open,
	.close = uffd_sync_close,
	.track = uffd_sync_track,
	.untrack = uffd_sync_untrack,
	.clean = uffd_sync_clean,
	.collect = uffd_sync_collect,
	.redirty = uffd_sync_redirty,
	.unprotect = uffd_sync_unprotect,
	.stats = uffd_sync_stats,
};
