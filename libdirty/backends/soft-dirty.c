/* SPDX-License-Identifier: MIT */
/*
 * The soft-dirty backend (CONFIG_MEM_SOFT_DIRTY), for kernels whose
 * userfaultfd cannot write-protect, and for memory it cannot take.
 *
 * The kernel mechanism (fs/proc/task_mmu.c).  Writing "4" to
 * /proc/PID/clear_refs clears the soft-dirty bit of every page table entry
 * of the whole process and write-protects the entries; the next write to a
 * page faults in the kernel, which sets the bit again.  Bit 55 of the page's
 * /proc/PID/pagemap entry reads it (or PAGEMAP_SCAN's PAGE_IS_SOFT_DIRTY on
 * 6.7+, which answers with runs instead of 8 bytes a page; used when it
 * works).  No user space is on the fault path, kernel writes (read(2) into
 * tracked memory) are tracked, and another process can be tracked directly.
 *
 * clear_refs is process-wide, so a clean of one region must not lose what
 * the other regions of the same process (of any tracker of ours) have
 * recorded.  Every region keeps a pending bitmap: the pages found dirty by
 * earlier folds.  Every clear is a "fold": read the bits of every region of
 * the target into their pending bitmaps, then clear_refs.  A page is dirty
 * when its pending bit or its soft-dirty bit is set; cleaning a range clears
 * its pending bits after the fold; collect-and-clean folds, then takes the
 * pending bits of what it reports (as page-bits.c does).
 *
 * Why no write is lost.  Between the read of a page's bit and clear_refs, a
 * write to a page whose bit was clear would set it and have it cleared at
 * once: lost.  So the fold runs with the writers stopped.
 *   - This process: every other thread is sent the stop signal (SIGRTMAX-4,
 *     or dirty_options.stop_signal), whose handler
 *     acknowledges and waits on a futex until the fold is over; the tasks
 *     of /proc/self/task are listed again until a pass finds no new thread
 *     (a thread created meanwhile is stopped by the next pass).  Nothing
 *     between the first signal and the release allocates memory or logs: a
 *     stopped thread may hold the allocator's lock.  A thread that blocks
 *     the stop signal cannot be stopped; it is left running, and a write it
 *     makes during a fold may be lost (logged).  The library's own threads
 *     (the uffd-sync handler) block it and write only their own state.
 *   - Another process: each of its threads is seized and interrupted with
 *     ptrace (PTRACE_SEIZE + PTRACE_INTERRUPT, invisible to its parent, as
 *     CRIU does), then detached, re-delivering any signal that arrived.
 *     This needs ptrace permission (probed), a target no one else traces,
 *     and a caller that does not reap the target with waitpid(-1) meanwhile.
 * Kernel writes of an unstopped task (an io_uring worker) have the same window.
 *
 * What the kernel makes inexact (documented in libdirty.h):
 *   - a new mapping is soft-dirty as a whole (VM_SOFTDIRTY), and so is a
 *     mapping that merges with a new neighbour: all its pages read dirty
 *     until the next clean;
 *   - transparent huge pages are reported a whole huge page at a time (a
 *     write to a clean THP marks the whole huge page table entry);
 *   - a page written and then dropped (MADV_DONTNEED) before the collect
 *     loses its bit with its page table entry: it is not reported;
 *   - pages pinned for DMA are never cleaned: always dirty;
 *   - hugetlb memory cannot be tracked at all (clear_refs skips it and its
 *     bit follows only VM_SOFTDIRTY): track() refuses it with -EOPNOTSUPP.
 * Anything else in the process that uses clear_refs (CRIU, another
 * library) clears our bits as well: writes are then lost.
 *
 * Cost: each clean and collect-and-clean stops the process and reads the
 * bits of all its tracked regions: soft-dirty suits fewer, larger regions.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "libdirty-int.h"
#include "linux-compat.h"

#define PAGEMAP_SOFT_DIRTY (UINT64_C(1) << 55)
/* the most threads one stop can hold (a static table: nothing is allocated) */
#define STOP_MAX_THREADS 8192
/*
 * Waiting for a thread to stop: after this long, a thread that blocks the
 * signal (such as the uffd-sync handler) is passed over; give up after the
 * second.
 */
#define STOP_CHECK_MASK_NS (200 * 1000)
#define STOP_GIVE_UP_NS (2000 * 1000 * 1000LL)

struct sd_region {
	uintptr_t start, end;
	_Atomic uint64_t *pending; /* one bit per page; under world_lock */
};

/* A process whose memory we track: shared by every soft-dirty tracker of it. */
struct soft_dirty_target {
	pid_t pid;                /* 0 = this process */
	unsigned long long start_time; /* tells a pid's reuse apart */
	unsigned users;           /* trackers */
	bool inherited;           /* a fork child's copy: its fds are the parent's */
	bool scan;                /* PAGEMAP_SCAN with PAGE_IS_SOFT_DIRTY works */
	int pagemap_fd, clear_refs_fd;
	struct sd_region **regions; /* of every tracker of this target */
	size_t nregions, cap;
	struct soft_dirty_target *next;
};

/*
 * Guards the targets and every pending bitmap, and serializes folds: one
 * clear_refs must not run between another's read and clear.  Taken after a
 * tracker's lock, never before it.
 */
static pthread_mutex_t world_lock = PTHREAD_MUTEX_INITIALIZER;
static struct soft_dirty_target *targets;

/* ---- stopping this process's other threads ---- */

struct stop_slot {
	pid_t tid;
	_Atomic int state; /* STOP_SENT, then STOP_HELD (or STOP_LEFT by the stopper) */
};

enum { STOP_SENT, STOP_HELD, STOP_LEFT };

static struct stop_slot stop_slots[STOP_MAX_THREADS];
static _Atomic size_t stop_nslots;
/* odd while a stop is on; the handler waits for it to change */
static _Atomic uint32_t stop_generation;
/* the signal that stops them, once its handler is installed; under world_lock */
static int stop_signal;

static long futex(_Atomic uint32_t *word, int op, uint32_t value)
{
	return syscall(SYS_futex, (uint32_t *)word, op, value, NULL, NULL, 0);
}

static void on_stop_signal(int sig, siginfo_t *info, void *context)
{
	int saved_errno = errno;
	uint32_t generation = atomic_load(&stop_generation);
	pid_t tid;
	size_t i, n;

	(void)sig;
	(void)context;
	/* a stop of ours, still on (a late signal of an earlier one finds it even) */
	if (!(generation & 1) || info->si_code != SI_TKILL || info->si_pid != getpid())
		goto out;
	tid = (pid_t)syscall(SYS_gettid);
	n = atomic_load(&stop_nslots);
	for (i = 0; i < n && stop_slots[i].tid != tid; i++)
		;
	if (i == n)
		goto out;
	atomic_store(&stop_slots[i].state, STOP_HELD);
	while (atomic_load(&stop_generation) == generation)
		futex(&stop_generation, FUTEX_WAIT_PRIVATE, generation);
out:
	errno = saved_errno;
}

/*
 * Install the handler once, on the tracker's stop signal (0: the one in
 * use, else SIGRTMAX-4).  -EBUSY if the program has its own handler there,
 * or if the tracker names another signal than the one in use.
 */
static int stop_handler_install(struct dirty_tracker *t)
{
	struct sigaction sa = { .sa_sigaction = on_stop_signal,
				.sa_flags = SA_SIGINFO | SA_RESTART }, old;
	int sig = t->stop_signal ? t->stop_signal : stop_signal ? stop_signal : SIGRTMAX - 4;

	if (stop_signal) {
		if (sig == stop_signal)
			return 0;
		dirty_log(t, LOG_ERR,
			  "soft-dirty: this process's threads are stopped with signal %d already; "
			  "a tracker cannot use signal %d", stop_signal, sig);
		return -EBUSY;
	}
	if (sigaction(sig, NULL, &old) < 0)
		return -errno;
	if ((old.sa_flags & SA_SIGINFO) ? old.sa_sigaction != NULL
					: old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN) {
		dirty_log(t, LOG_ERR,
			  "soft-dirty: signal %d, which it needs to stop threads, "
			  "has a handler of the program's (dirty_options.stop_signal picks another)",
			  sig);
		return -EBUSY;
	}
	/* every signal, those of dirty_options.handler_mask among them */
	sigfillset(&sa.sa_mask);
	if (sigaction(sig, &sa, NULL) < 0)
		return -errno;
	stop_signal = sig;
	return 0;
}

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/*
 * Does thread tid block the stop signal?  Blocked and still pending: a
 * thread that runs the stop handler blocks the signal too (the handler's
 * mask) until it marks itself held, and under emulation or load a stopper
 * may look in between; that one is not pending any more.  Read with
 * syscalls only: nothing allocates.
 */
static bool thread_blocks_stop(pid_t tid)
{
	char path[64], buf[4096], *p;
	unsigned long long mask, pending;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/self/task/%d/status", (int)tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return true; /* gone: do not wait for it */
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return true;
	buf[n] = '\0';
	p = strstr(buf, "SigBlk:");
	if (!p || sscanf(p + 7, "%llx", &mask) != 1)
		return false;
	p = strstr(buf, "SigPnd:"); /* the thread's own: tgkill's */
	if (!p || sscanf(p + 7, "%llx", &pending) != 1)
		return false;
	return (mask & pending) >> (stop_signal - 1) & 1;
}

/*
 * Signal the threads of /proc/self/task that have no slot yet.  Returns
 * how many were signalled, or -errno.  getdents64 into a buffer on the
 * stack: opendir() would allocate.
 */
static int stop_signal_new_threads(pid_t self)
{
	char buf[8192];
	int fd, sent = 0;
	long n;

	fd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	while ((n = syscall(SYS_getdents64, fd, buf, sizeof(buf))) > 0) {
		for (long off = 0; off < n;) {
			struct {
				uint64_t ino;
				int64_t off;
				unsigned short reclen;
				unsigned char type;
				char name[];
			} *d = (void *)(buf + off);
			pid_t tid = (pid_t)atoi(d->name);
			size_t i, nslots = atomic_load(&stop_nslots);

			off += d->reclen;
			if (tid <= 0 || tid == self)
				continue;
			for (i = 0; i < nslots && stop_slots[i].tid != tid; i++)
				;
			if (i < nslots)
				continue;
			if (nslots == STOP_MAX_THREADS) {
				close(fd);
				return -E2BIG;
			}
			stop_slots[nslots].tid = tid;
			atomic_store(&stop_slots[nslots].state, STOP_SENT);
			atomic_store(&stop_nslots, nslots + 1);
			if (syscall(SYS_tgkill, getpid(), tid, stop_signal) < 0)
				atomic_store(&stop_slots[nslots].state, STOP_LEFT); /* exited */
			else
				sent++;
		}
	}
	close(fd);
	return n < 0 ? -errno : sent;
}

/*
 * Stop every other thread of this process.  *left receives the number of
 * threads that could not be stopped (they block the stop signal, or did not
 * answer in time).  On error the world is resumed.
 */
static int world_stop(size_t *left)
{
	pid_t self = (pid_t)syscall(SYS_gettid);
	long long start = now_ns();
	bool masks_checked = false;
	int sent;

	*left = 0;
	atomic_store(&stop_nslots, 0);
	atomic_fetch_add(&stop_generation, 1); /* odd: on */
	do {
		sent = stop_signal_new_threads(self);
		if (sent < 0) {
			atomic_fetch_add(&stop_generation, 1);
			futex(&stop_generation, FUTEX_WAKE_PRIVATE, INT_MAX);
			return sent;
		}
		for (;;) {
			size_t i, n = atomic_load(&stop_nslots), waiting = 0;
			long long elapsed = now_ns() - start;

			for (i = 0; i < n; i++) {
				if (atomic_load(&stop_slots[i].state) != STOP_SENT)
					continue;
				if ((elapsed > STOP_CHECK_MASK_NS && !masks_checked &&
				     thread_blocks_stop(stop_slots[i].tid)) ||
				    elapsed > STOP_GIVE_UP_NS) {
					atomic_store(&stop_slots[i].state, STOP_LEFT);
					++*left;
					continue;
				}
				waiting++;
			}
			if (elapsed > STOP_CHECK_MASK_NS)
				masks_checked = true;
			if (!waiting)
				break;
			sched_yield();
		}
	} while (sent > 0);
	return 0;
}

static void world_resume(void)
{
	atomic_fetch_add(&stop_generation, 1); /* even: off */
	futex(&stop_generation, FUTEX_WAKE_PRIVATE, INT_MAX);
}

/* ---- stopping another process: ptrace ---- */

struct frozen {
	pid_t tids[STOP_MAX_THREADS];
	int signals[STOP_MAX_THREADS]; /* to deliver at detach */
	size_t n;
};

static int freeze_thread(struct frozen *f, pid_t tid);
static void target_thaw(struct frozen *f);

static void target_thaw(struct frozen *f)
{
	for (size_t i = 0; i < f->n; i++)
		ptrace(PTRACE_DETACH, f->tids[i], NULL, (void *)(uintptr_t)f->signals[i]);
	f->n = 0;
}

/* Seize, interrupt and wait for one thread.  1 if held, 0 if it exited, -errno. */
static int freeze_thread(struct frozen *f, pid_t tid)
{
	int status;

	size_t slot;

	if (ptrace(PTRACE_SEIZE, tid, NULL, NULL) < 0)
		return errno == ESRCH ? 0 : -errno;
	slot = f->n++; /* seized: detached by target_thaw() whatever happens next */
	f->tids[slot] = tid;
	f->signals[slot] = 0;
	if (ptrace(PTRACE_INTERRUPT, tid, NULL, NULL) < 0)
		goto gone;
	for (;;) {
		pid_t got = waitpid(tid, &status, __WALL);

		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0 || WIFEXITED(status) || WIFSIGNALED(status))
			goto gone;
		break;
	}
	/* a signal came first: stopped to deliver it; deliver it at detach */
	if (status >> 16 == 0)
		f->signals[slot] = WSTOPSIG(status);
	return 1;
gone:
	f->n--; /* it exited: nothing to detach */
	return 0;
}

/* Stop every thread of pid, listing its tasks until no new one appears. */
static int target_freeze(pid_t pid, struct frozen *f)
{
	char path[64];
	bool found;
	int err = 0;

	f->n = 0;
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	do {
		struct dirent *d;
		DIR *dir = opendir(path);

		if (!dir) {
			err = errno == ENOENT ? -ESRCH : -errno;
			break;
		}
		found = false;
		while (!err && (d = readdir(dir))) {
			pid_t tid = (pid_t)atoi(d->d_name);
			size_t i;

			if (tid <= 0)
				continue;
			for (i = 0; i < f->n && f->tids[i] != tid; i++)
				;
			if (i < f->n)
				continue;
			if (f->n == STOP_MAX_THREADS) {
				err = -E2BIG;
				break;
			}
			err = freeze_thread(f, tid);
			found |= err > 0;
			if (err > 0)
				err = 0;
		}
		closedir(dir);
	} while (!err && found);
	if (!err && !f->n)
		err = -ESRCH;
	if (err)
		target_thaw(f);
	return err;
}

/* ---- reading the bits ---- */

/* Where read_bits() puts what it finds: bit 0 of bits is the page at base. */
struct bits_sink {
	_Atomic uint64_t *bits;
	uintptr_t base;
};

static int bits_add_run(uintptr_t start, uintptr_t end, void *ctx)
{
	struct bits_sink *b = ctx;
	size_t page = dirty_page_size();

	dirty_bits_set_atomic(b->bits, (start - b->base) / page, (end - b->base) / page);
	return 0;
}

static int bits_add_entries(uintptr_t addr, const uint64_t *entries, size_t n, void *ctx)
{
	struct bits_sink *b = ctx;
	size_t page = dirty_page_size(), first = (addr - b->base) / page;

	for (size_t i = 0; i < n; i++)
		if (entries[i] & PAGEMAP_SOFT_DIRTY)
			dirty_bits_set_atomic(b->bits, first + i, first + i + 1);
	return 0;
}

/* OR the soft-dirty pages of [start, end) into bits (bit 0 = page at base). */
static int read_bits(struct soft_dirty_target *sd, uintptr_t base, uintptr_t start,
		     uintptr_t end, _Atomic uint64_t *bits)
{
	struct bits_sink b = { bits, base };
	struct pm_scan_arg arg = {
		.start = start,
		.end = end,
		.category_mask = PAGE_IS_SOFT_DIRTY,
		.return_mask = PAGE_IS_SOFT_DIRTY,
	};

	if (sd->scan)
		return dirty_pagemap_scan_each(sd->pagemap_fd, &arg, bits_add_run, &b);
	return dirty_pagemap_read_each(sd->pagemap_fd, start, end, bits_add_entries, &b);
}

/* Fold the current bits of every region of sd into their pending bitmaps. */
static int fold_all(struct soft_dirty_target *sd)
{
	/* a scan of a gone address space finds nothing and says nothing */
	if (sd->pid && dirty_pagemap_alive(sd->pagemap_fd))
		return -ESRCH;
	for (size_t i = 0; i < sd->nregions; i++) {
		struct sd_region *m = sd->regions[i];
		int err = read_bits(sd, m->start, m->start, m->end, m->pending);

		if (err)
			return err;
	}
	return 0;
}

static int clear_refs(struct soft_dirty_target *sd)
{
	while (pwrite(sd->clear_refs_fd, "4", 1, 0) != 1) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

/*
 * The fold: with the target's writers stopped, record every region's bits,
 * then clear them all.  Under world_lock.  On failure nothing is lost: the
 * pending bitmaps only gained bits.
 */
static int fold_and_clear(struct dirty_tracker *t, struct soft_dirty_target *sd)
{
	static struct frozen frozen; /* under world_lock; too large for a stack */
	size_t left = 0;
	int err;

	err = sd->pid ? target_freeze(sd->pid, &frozen) : world_stop(&left);
	if (err) {
		dirty_log(t, LOG_ERR, "soft-dirty: cannot stop %s: %s",
			  sd->pid ? "the target process" : "this process's threads",
			  strerror(-err));
		return err;
	}
	err = fold_all(sd);
	if (!err)
		err = clear_refs(sd);
	if (sd->pid)
		target_thaw(&frozen);
	else
		world_resume();
	if (left)
		dirty_log(t, LOG_WARNING,
			  "soft-dirty: %zu thread(s) block signal %d or did not stop: their "
			  "writes during this clean may be lost", left, stop_signal);
	return err;
}

/* ---- targets ---- */

/* Field 22 of /proc/PID/stat, the start time: with the pid, names one process. */
static int process_start_time(pid_t pid, unsigned long long *ret)
{
	char path[64], *text, *p;
	int err, field;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid ? (int)pid : (int)getpid());
	err = dirty_read_file(path, &text, NULL);
	if (err)
		return err == -ENOENT ? -ESRCH : err;
	p = strrchr(text, ')'); /* the name may hold spaces and parentheses */
	for (field = 2; p && field < 22; field++)
		p = strchr(p + 1, ' ');
	err = p && sscanf(p + 1, "%llu", ret) == 1 ? 0 : -EIO;
	free(text);
	return err;
}

static bool scan_works(int pagemap_fd)
{
	struct page_region run;
	struct pm_scan_arg arg = {
		.size = sizeof(arg),
		.start = (uintptr_t)&run & ~(uintptr_t)(dirty_page_size() - 1),
		.end = ((uintptr_t)&run & ~(uintptr_t)(dirty_page_size() - 1)) + dirty_page_size(),
		.vec = (uintptr_t)&run,
		.vec_len = 1,
		.category_mask = PAGE_IS_SOFT_DIRTY,
		.return_mask = PAGE_IS_SOFT_DIRTY,
	};

	/* any address of ours will do: the question is whether the ioctl exists */
	return ioctl(pagemap_fd, PAGEMAP_SCAN, &arg) >= 0;
}

static int target_open(pid_t pid, struct soft_dirty_target **ret)
{
	struct soft_dirty_target *sd;
	char path[64];
	int err;

	sd = calloc(1, sizeof(*sd));
	if (!sd)
		return -ENOMEM;
	sd->pid = pid;
	sd->pagemap_fd = sd->clear_refs_fd = -1;
	err = process_start_time(pid, &sd->start_time);
	if (err)
		goto fail;
	snprintf(path, sizeof(path), pid ? "/proc/%d/pagemap" : "/proc/self/pagemap", (int)pid);
	sd->pagemap_fd = open(path, O_RDONLY | O_CLOEXEC);
	snprintf(path, sizeof(path), pid ? "/proc/%d/clear_refs" : "/proc/self/clear_refs",
		 (int)pid);
	sd->clear_refs_fd = open(path, O_WRONLY | O_CLOEXEC);
	if (sd->pagemap_fd < 0 || sd->clear_refs_fd < 0) {
		err = errno == ENOENT ? -ESRCH : -errno;
		goto fail;
	}
	sd->scan = scan_works(sd->pagemap_fd);
	*ret = sd;
	return 0;
fail:
	if (sd->pagemap_fd >= 0)
		close(sd->pagemap_fd);
	if (sd->clear_refs_fd >= 0)
		close(sd->clear_refs_fd);
	free(sd);
	return err;
}

static void target_release(struct soft_dirty_target *sd)
{
	struct soft_dirty_target **p;

	if (--sd->users)
		return;
	for (p = &targets; *p; p = &(*p)->next) {
		if (*p == sd) {
			*p = sd->next;
			break;
		}
	}
	close(sd->pagemap_fd);
	close(sd->clear_refs_fd);
	free(sd->regions);
	free(sd);
}

static void atfork_prepare(void)
{
	pthread_mutex_lock(&world_lock);
}

static void atfork_parent(void)
{
	pthread_mutex_unlock(&world_lock);
}

/* The child's targets hold the parent's /proc files: no new tracker may use them. */
static void atfork_child(void)
{
	for (struct soft_dirty_target *sd = targets; sd; sd = sd->next)
		sd->inherited = true;
	pthread_mutex_unlock(&world_lock);
}

static void atfork_install(void)
{
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

static int soft_dirty_open(struct dirty_tracker *t, void **ret)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	struct soft_dirty_target *sd;
	unsigned long long start_time = 0;
	int err;

	pthread_once(&once, atfork_install);
	if (t->pid) {
		err = process_start_time(t->pid, &start_time);
		if (err)
			return err;
	}
	pthread_mutex_lock(&world_lock);
	if (!t->pid) {
		err = stop_handler_install(t);
		if (err)
			goto out;
	}
	for (sd = targets; sd; sd = sd->next)
		if (sd->pid == t->pid && !sd->inherited && (!t->pid || sd->start_time == start_time))
			break;
	if (!sd) {
		err = target_open(t->pid, &sd);
		if (err) {
			dirty_log(t, LOG_ERR, "soft-dirty: cannot open the /proc files of %s: %s",
				  t->pid ? "the target" : "this process", strerror(-err));
			goto out;
		}
		sd->next = targets;
		targets = sd;
	}
	sd->users++;
	*ret = sd;
	err = 0;
out:
	pthread_mutex_unlock(&world_lock);
	return err;
}

static void soft_dirty_close(struct dirty_tracker *t, void *state)
{
	(void)t;
	pthread_mutex_lock(&world_lock);
	target_release(state);
	pthread_mutex_unlock(&world_lock);
}

extern const struct dirty_backend dirty_backend_soft_dirty;

/* The target of t's regions (its state: one per process, shared by its trackers). */
static struct soft_dirty_target *target_of(const struct dirty_tracker *t)
{
	return dirty_backend_state(t, &dirty_backend_soft_dirty);
}

/* ---- regions ---- */

static void region_free(struct sd_region *m)
{
	if (m)
		free((void *)m->pending);
	free(m);
}

static void pending_clear(struct sd_region *m, uintptr_t start, uintptr_t end)
{
	size_t page = dirty_page_size();

	dirty_bits_clear_atomic(m->pending, (start - m->start) / page, (end - m->start) / page);
}

static void target_remove(struct soft_dirty_target *sd, struct sd_region *m)
{
	for (size_t i = 0; i < sd->nregions; i++) {
		if (sd->regions[i] == m) {
			sd->regions[i] = sd->regions[--sd->nregions];
			return;
		}
	}
}

static int soft_dirty_track(struct dirty_tracker *t, struct dirty_region *r)
{
	struct soft_dirty_target *sd = target_of(t);
	size_t npages = (r->end - r->start) / dirty_page_size();
	struct sd_region *m;
	int err;

	if (r->kind == DIRTY_MEM_HUGETLB) {
		dirty_log(t, LOG_ERR, "soft-dirty: cannot track hugetlb memory at %#lx-%#lx: the "
			  "kernel keeps no soft-dirty bit for huge pages of hugetlbfs",
			  (unsigned long)r->start, (unsigned long)r->end);
		return -EOPNOTSUPP;
	}
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->start = r->start;
	m->end = r->end;
	m->pending = calloc((npages + 63) / 64, sizeof(uint64_t));
	if (!m->pending) {
		region_free(m);
		return -ENOMEM;
	}
	pthread_mutex_lock(&world_lock);
	err = dirty_grow((void **)&sd->regions, &sd->cap, sd->nregions + 1, sizeof(*sd->regions));
	if (err)
		goto fail;
	sd->regions[sd->nregions++] = m;
	err = fold_and_clear(t, sd);
	if (err) {
		target_remove(sd, m);
		goto fail;
	}
	pending_clear(m, m->start, m->end); /* it starts clean */
	pthread_mutex_unlock(&world_lock);
	r->priv = m;
	return 0;
fail:
	pthread_mutex_unlock(&world_lock);
	region_free(m);
	return err;
}

static void soft_dirty_untrack(struct dirty_tracker *t, struct dirty_region *r)
{
	pthread_mutex_lock(&world_lock);
	target_remove(target_of(t), r->priv);
	pthread_mutex_unlock(&world_lock);
	region_free(r->priv);
	r->priv = NULL;
}

static int soft_dirty_clean(struct dirty_tracker *t, struct dirty_region *r, uintptr_t start,
			    uintptr_t end)
{
	int err;

	pthread_mutex_lock(&world_lock);
	err = fold_and_clear(t, target_of(t));
	if (!err)
		pending_clear(r->priv, start, end);
	pthread_mutex_unlock(&world_lock);
	return err;
}

static void no_reprotect(void *ctx, uintptr_t start, uintptr_t end)
{
	/* the fold before the take already cleared and write-protected everything */
	(void)ctx;
	(void)start;
	(void)end;
}

/*
 * Without clean the current bits are folded into pending without clearing
 * them (the same answer, no stop); with clean the whole target is folded and
 * cleared first, then the reported pending bits are taken.
 */
static int soft_dirty_collect(struct dirty_tracker *t, struct dirty_region *r, uintptr_t start,
			      uintptr_t end, bool clean, struct dirty_sink *sink, uintptr_t *done)
{
	struct soft_dirty_target *sd = target_of(t);
	struct sd_region *m = r->priv;
	int err;

	pthread_mutex_lock(&world_lock);
	err = clean ? fold_and_clear(t, sd)
		    : sd->pid && dirty_pagemap_alive(sd->pagemap_fd)
		    ? -ESRCH
		    : read_bits(sd, m->start, start, end, m->pending);
	if (!err)
		dirty_page_bits_collect(m->pending, m->start, dirty_page_size(), start, end, clean,
					sink, done, no_reprotect, NULL);
	pthread_mutex_unlock(&world_lock);
	return err;
}

static void soft_dirty_redirty(struct dirty_tracker *t, struct dirty_region *r, uintptr_t start,
			       uintptr_t end)
{
	struct sd_region *m = r->priv;
	size_t page = dirty_page_size();

	(void)t;
	pthread_mutex_lock(&world_lock);
	dirty_bits_set_atomic(m->pending, (start - m->start) / page, (end - m->start) / page);
	pthread_mutex_unlock(&world_lock);
}

/* Adaptive mode: soft-dirty faults are the kernel's and cheap; nothing to stop. */
static void soft_dirty_unprotect(struct dirty_tracker *t, struct dirty_region *r)
{
	(void)t;
	(void)r;
}

/* ---- can it run here ---- */

static int pagemap_entry(int fd, const void *addr, uint64_t *entry)
{
	off_t off = (off_t)((uintptr_t)addr / dirty_page_size() * sizeof(*entry));

	return pread(fd, entry, sizeof(*entry), off) == sizeof(*entry) ? 0 : -1;
}

/*
 * Runs in a forked child: clear_refs "4" clears soft-dirty bits process-wide
 * and must not disturb the caller.  Exit status: 0 works, 1 clear_refs
 * refused, 2 the bit stays clear after a write, 3 the bit never clears,
 * 4 setup failed.
 */
static int soft_dirty_child(void)
{
	size_t page = dirty_page_size();
	uint64_t entry;
	int cr, pm;
	char *mem;

	mem = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
	pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (mem == MAP_FAILED || cr < 0 || pm < 0)
		return 4;
	mem[0] = 1;
	if (write(cr, "4", 1) != 1)
		return 1;
	if (pagemap_entry(pm, mem, &entry))
		return 4;
	if (entry & PAGEMAP_SOFT_DIRTY)
		return 3;
	mem[0] = 2;
	if (pagemap_entry(pm, mem, &entry))
		return 4;
	return entry & PAGEMAP_SOFT_DIRTY ? 0 : 2;
}

/* What tracking pid with soft-dirty needs beyond the kernel feature. */
static int soft_dirty_target_access(pid_t pid, char *why, size_t why_len)
{
	char path[64];
	int fd, err;

	/*
	 * Collect-and-clean stops the target's threads with ptrace
	 * (soft-dirty.c): the rules first, from /proc, without touching it.
	 */
	err = dirty_remote_check(pid, false, why, why_len);
	if (err)
		return err;
	snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return dirty_reason(why, why_len, errno == ENOENT ? -ESRCH : -errno,
				    "cannot open %s: %s", path, strerror(errno));
	close(fd);
	snprintf(path, sizeof(path), "/proc/%d/clear_refs", (int)pid);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return dirty_reason(why, why_len, errno == ENOENT ? -ESRCH : -errno,
				    "cannot open %s for writing: %s", path, strerror(errno));
	close(fd);
	return 0;
}

static int probe_soft_dirty(pid_t pid, char *why, size_t why_len)
{
	int status, err;
	pid_t child;

	child = fork();
	if (child < 0)
		return dirty_reason(why, why_len, -errno, "fork for the probe failed: %s",
				    strerror(errno));
	if (child == 0)
		_exit(soft_dirty_child());
	while (waitpid(child, &status, 0) < 0)
		if (errno != EINTR)
			return dirty_reason(why, why_len, -errno, "waitpid: %s", strerror(errno));
	switch (WIFEXITED(status) ? WEXITSTATUS(status) : 4) {
	case 0:
		break;
	case 1:
		return dirty_reason(why, why_len, -EPERM,
				    "/proc/PID/clear_refs refused \"4\"");
	case 2:
	case 3:
		return dirty_reason(why, why_len, -EOPNOTSUPP,
				    "the kernel does not implement soft-dirty "
				    "(CONFIG_MEM_SOFT_DIRTY is off): clear_refs accepts \"4\" but "
				    "pagemap bit 55 does not follow writes");
	default:
		return dirty_reason(why, why_len, -EIO, "the soft-dirty probe could not run");
	}
	if (pid) {
		err = soft_dirty_target_access(pid, why, why_len);
		if (err)
			return err;
	}
	return dirty_reason(why, why_len, 0,
			    "clear_refs \"4\" and pagemap bit 55 work (CONFIG_MEM_SOFT_DIRTY)");
}

/* ---- the table ---- */

const struct dirty_backend dirty_backend_soft_dirty = {
	.name = "soft-dirty",
	.flags = DIRTY_BACKEND_SIGNALS, /* for this process; another is stopped with ptrace */
	.probe = probe_soft_dirty,
	.open = soft_dirty_open,
	.close = soft_dirty_close,
	.track = soft_dirty_track,
	.untrack = soft_dirty_untrack,
	.clean = soft_dirty_clean,
	.collect = soft_dirty_collect,
	.redirty = soft_dirty_redirty,
	.unprotect = soft_dirty_unprotect,
};
