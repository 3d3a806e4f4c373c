/* SPDX-License-Identifier: MIT */
/*
 * dirtyctl run / attach / heatmap: which pages does another process write?
 *
 * A tracker on the target's pid (uffd-async through a userfaultfd the target
 * is made to create, or soft-dirty), one region per writable mapping of its
 * /proc/PID/maps.  Each interval: read the maps again (regions whose memory
 * is gone are untracked, new writable memory, a new mapping or a grown heap,
 * is tracked as new regions), then collect-and-clean every region, and
 * report.  A region is never re-tracked while its memory stays, so growing a
 * mapping loses nothing of what was tracked; memory that appeared during the
 * interval is tracked with the pages it holds dirty
 * (DIRTY_TRACK_POPULATED_DIRTY), so that its writes count in the interval
 * they were made in.  Memory mapped and unmapped within one interval is not
 * seen.  A target that execs is followed: a new tracker for its new
 * program; a dump then writes the new program's base image, with the
 * sequence going on (DIRTY_IMAGE_NEW_PROGRAM).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "libdirty.h"
#include "heatmap.h"
#include "json.h"
#include "watch.h"

/* the kernel's base page: 4 KiB on x86-64, 4, 16 or 64 KiB on arm64 */
#define PAGE ((uint64_t)heatmap_page_size())
#define COLLECT_RUNS 256

enum mapping_kind { KIND_HEAP, KIND_STACK, KIND_ANON, KIND_FILE_PRIVATE, KIND_SHARED };
static const char *const kind_names[] = { "heap", "stack", "anonymous", "file-private", "shared" };

/* A writable mapping, as long as it has been seen; totals for the summary. */
struct mapping {
	uintptr_t start, end;
	char name[256];
	enum mapping_kind kind;
	int heat;              /* heatmap id, or -1 */
	uint64_t pages, total; /* this interval, all of them */
	struct dirty_range *runs;
	size_t nruns, runs_cap; /* this interval, with --runs */
};

/* A tracked range, inside one mapping. */
struct region {
	uintptr_t start, end;
	size_t mapping;
	bool keep;   /* still inside a writable mapping */
	bool imaged; /* dump: its whole content is in an image already */
};

struct watch {
	const struct watch_options *o;
	pid_t pid;
	struct dirty_tracker *t;
	/*
	 * Its backend's name (a static string): reports still name it after a
	 * failed re-attach has freed the tracker.
	 */
	const char *backend;
	struct mapping *maps;
	size_t nmaps, maps_cap;
	struct region *regions;
	size_t nregions, regions_cap;
	struct heatmap *heat;
	bool exec_pending;      /* dump: the target exec'ed; the next image is its base */
	double start, last;
	unsigned intervals;
	uint64_t pages;
	unsigned report_lines; /* of the last report, to redraw it on a terminal */
	uint64_t skipped_bytes; /* writable memory left untracked (too large) */
	unsigned heat_errors;   /* runs the heatmap could not take */
	/* --numa, this interval */
	unsigned numa_nodes;    /* 0: not counted (numa_reason says why) */
	uint64_t numa_pages[DIRTY_NUMA_MAX_NODES], numa_unknown;
	char numa_reason[128];
	bool tty;
};

static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static bool grow(void **array, size_t *cap, size_t n, size_t size)
{
	void *grown;

	if (n < *cap)
		return true;
	grown = realloc(*array, (*cap ? 2 * *cap : 64) * size);
	if (!grown)
		return false;
	*array = grown;
	*cap = *cap ? 2 * *cap : 64;
	return true;
}

/* ---- the target ---- */

/* Is any thread of pid alive (its main thread may have exited before the others)? */
static bool threads_live(pid_t pid)
{
	char path[64 + NAME_MAX], buf[512], *p, state;
	struct dirent *d;
	bool live = false;
	DIR *dir;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	dir = opendir(path);
	while (dir && !live && (d = readdir(dir))) {
		if (d->d_name[0] < '0' || d->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/stat", (int)pid, d->d_name);
		f = fopen(path, "r");
		state = '?';
		if (f && fgets(buf, sizeof(buf), f) && (p = strrchr(buf, ')')))
			sscanf(p + 1, " %c", &state);
		if (f)
			fclose(f);
		live = state != '?' && state != 'Z' && state != 'X';
	}
	if (dir)
		closedir(dir);
	return live;
}

/*
 * Is pid a process we can watch?  A dirtyctl exit status and a message if
 * not.  The rest (permission, tracer, seccomp, vfork) the library checks,
 * and its reason is the message (open_tracker()).
 */
/*
 * run's command (our child), while it is attached: if it has already ended
 * (a program done in less time than an attach takes), why the attach failed
 * does not matter; its status does.
 */
static pid_t run_child;
#define ENDED_EARLY (-1)

static bool ended_early(pid_t pid)
{
	char path[64], buf[512], *p, state = 'X';
	siginfo_t si = { 0 };
	FILE *f;

	if (run_child != pid)
		return false;
	/*
	 * Dead or exiting (zombie, or its /proc entry going): waitable in a
	 * moment, though perhaps not yet (the attach may have seen it exit
	 * before its parent is told).  WNOWAIT: the status stays to be reaped.
	 */
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (f) {
		if (fgets(buf, sizeof(buf), f) && (p = strrchr(buf, ')')))
			sscanf(p + 1, " %c", &state);
		fclose(f);
	}
	for (int i = 0; i < (state == 'Z' || state == 'X' ? 2000 : 1); i++) {
		if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid)
			return true;
		usleep(1000);
	}
	return false;
}

static int check_target(pid_t pid)
{
	char path[64], buf[4096], *p;
	unsigned long flags = 0;
	int field;
	FILE *f;
	char state = '?';

	/*
	 * First, and again where a check below sees the target gone: a
	 * command of run that is exiting can still show a live thread to
	 * threads_live() below, and would be refused instead.
	 */
	if (ended_early(pid))
		return ENDED_EARLY;
	if (pid <= 0 || (kill(pid, 0) < 0 && errno == ESRCH)) {
		if (ended_early(pid))
			return ENDED_EARLY;
		fprintf(stderr, "dirtyctl: no process %d: check the process id (ps, pgrep)\n",
			(int)pid);
		return EXIT_NO_PROCESS;
	}
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f || !fgets(buf, sizeof(buf), f)) {
		if (f)
			fclose(f);
		if (ended_early(pid))
			return ENDED_EARLY;
		fprintf(stderr, "dirtyctl: process %d cannot be seen in /proc (%s): it has exited, or "
			"/proc is mounted with hidepid; run dirtyctl as a user who can see it\n",
			(int)pid, strerror(errno));
		return EXIT_NO_PROCESS;
	}
	fclose(f);
	p = strrchr(buf, ')'); /* the command name may hold anything */
	if (p && sscanf(p + 1, " %c", &state) == 1) {
		for (field = 3, p = p + 2; p && field < 9; field++)
			p = strchr(p + 1, ' ');
		if (p)
			sscanf(p + 1, "%lu", &flags);
	}
	if ((state == 'Z' || state == 'X') && threads_live(pid)) {
		char why[1024];

		/* its main thread has exited, the others run: the library says why it cannot */
		dirty_backend_probe(NULL, pid, why, sizeof(why));
		fprintf(stderr, "dirtyctl: cannot attach to process %d: %s\n", (int)pid, why);
		return EXIT_REFUSED;
	}
	if (state == 'Z' || state == 'X') {
		if (ended_early(pid))
			return ENDED_EARLY;
		fprintf(stderr, "dirtyctl: process %d is a zombie: it has exited, its memory is gone\n",
			(int)pid);
		return EXIT_NO_PROCESS;
	}
	if (flags & 0x00200000) { /* PF_KTHREAD */
		fprintf(stderr, "dirtyctl: process %d is a kernel thread: it has no user memory\n",
			(int)pid);
		return EXIT_NO_PROCESS;
	}
	return 0;
}

static enum mapping_kind kind_of(const char *perms, const char *name)
{
	if (perms[3] == 's')
		return KIND_SHARED;
	if (!strcmp(name, "[heap]"))
		return KIND_HEAP;
	if (!strncmp(name, "[stack", 6))
		return KIND_STACK;
	if (name[0] && name[0] != '[')
		return KIND_FILE_PRIVATE;
	return KIND_ANON;
}

/* The mapping [start, end) named name, added to the known ones if new. */
static int mapping_find(struct watch *w, uintptr_t start, uintptr_t end, const char *name,
			enum mapping_kind kind, size_t *ret)
{
	const char *shown = name[0] ? name : kind == KIND_SHARED ? "[shared anon]" : "[anon]";
	struct mapping *m;
	size_t i;

	for (i = 0; i < w->nmaps; i++) {
		m = &w->maps[i];
		if (m->start == start && !strncmp(m->name, shown, sizeof(m->name) - 1)) {
			if (end > m->end) {
				m->end = end; /* a grown heap stays one mapping */
				if (w->heat)
					heatmap_mapping(w->heat, m->name, m->start, m->end - m->start);
			}
			*ret = i;
			return 0;
		}
	}
	if (!grow((void **)&w->maps, &w->maps_cap, w->nmaps, sizeof(*w->maps)))
		return -ENOMEM;
	m = &w->maps[w->nmaps];
	*m = (struct mapping){ .start = start, .end = end, .kind = kind, .heat = -1 };
	snprintf(m->name, sizeof(m->name), "%.*s", (int)sizeof(m->name) - 1, shown);
	if (w->heat)
		m->heat = heatmap_mapping(w->heat, m->name, m->start, m->end - m->start);
	if (w->heat && m->heat < 0)
		w->heat_errors++;
	*ret = w->nmaps++;
	return 0;
}

static int region_cmp(const void *a, const void *b)
{
	const struct region *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

/*
 * soft-dirty reads 8 bytes of /proc/PID/pagemap per page of every region at
 * every collect where the kernel has no PAGEMAP_SCAN (before 6.7): a
 * reservation of terabytes would take minutes.  Larger mappings are left
 * out there, and counted.
 */
#define SOFT_DIRTY_MAX_REGION ((uintptr_t)16 << 30)

static int track_piece(struct watch *w, uintptr_t start, uintptr_t end, size_t mapping,
		       bool appeared)
{
	int err;

	/*
	 * A dump's base image holds every page of a region: for a reservation
	 * of terabytes (sanitizer shadow) that is no image.  Left out, counted.
	 */
	if (end - start > SOFT_DIRTY_MAX_REGION &&
	    (w->o->dump_dir || !strcmp(dirty_tracker_backend(w->t), "soft-dirty"))) {
		w->skipped_bytes += end - start;
		return -EFBIG;
	}
	if (!grow((void **)&w->regions, &w->regions_cap, w->nregions, sizeof(*w->regions)))
		return -ENOMEM;
	err = dirty_track_flags(w->t, (void *)start, end - start,
				appeared ? DIRTY_TRACK_POPULATED_DIRTY : 0);
	if (err)
		return err; /* memory the backend cannot take (a device mapping), gone meanwhile,
			       or -ESRCH: the target exec'ed */
	w->regions[w->nregions++] = (struct region){ .start = start, .end = end,
						     .mapping = mapping, .keep = true };
	return 0;
}

/*
 * Read the maps again: untrack regions whose memory is no longer a writable
 * mapping, track what is writable and not yet tracked; with appeared, as
 * memory that appeared since the last collect, whose pages holding data
 * were written in this interval.  (A region cut short by an munmap is
 * replaced by what remains of it: its dirty state since the last collect
 * went with the region, so it counts as appeared too.)  Returns -ESRCH when
 * the tracker's address space is gone (the target exited, or exec'ed).
 */
static int reconcile(struct watch *w, bool appeared)
{
	char path[64], line[4600];
	size_t i, before = w->nregions;
	bool gone = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/maps", (int)w->pid);
	f = fopen(path, "r");
	if (!f)
		return -ESRCH;
	for (i = 0; i < w->nregions; i++)
		w->regions[i].keep = false;
	while (fgets(line, sizeof(line), f)) {
		char perms[5], name[4096] = "";
		uint64_t lo, hi;
		size_t mapping, r;
		uintptr_t cur;

		if (gone)
			break;
		line[strcspn(line, "\n")] = '\0';
		if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %4s %*s %*s %*s %4095[^\n]", &lo, &hi,
			   perms, name) < 3 || perms[1] != 'w')
			continue;
		if (!strcmp(name, "[vvar]") || !strcmp(name, "[vsyscall]"))
			continue;
		if (mapping_find(w, lo, hi, name, kind_of(perms, name), &mapping))
			break;
		/* the regions inside it stay; the gaps between them are new */
		cur = lo;
		for (r = 0; r < before; r++) {
			struct region *g = &w->regions[r];

			if (g->start < lo || g->end > hi)
				continue;
			g->keep = true;
			g->mapping = mapping;
			if (g->start > cur &&
			    track_piece(w, cur, g->start, mapping, appeared) == -ESRCH)
				gone = true;
			if (g->end > cur)
				cur = g->end;
		}
		if (cur < hi && track_piece(w, cur, hi, mapping, appeared) == -ESRCH)
			gone = true;
	}
	fclose(f);
	for (i = 0; i < before; i++)
		if (!w->regions[i].keep)
			dirty_untrack(w->t, (void *)w->regions[i].start,
				      w->regions[i].end - w->regions[i].start);
	for (i = 0, before = 0; i < w->nregions; i++)
		if (w->regions[i].keep)
			w->regions[before++] = w->regions[i];
	w->nregions = before;
	qsort(w->regions, w->nregions, sizeof(*w->regions), region_cmp);
	return gone ? -ESRCH : 0;
}

/* ---- collecting and reporting ---- */

static void record_run(struct watch *w, struct mapping *m, const struct dirty_range *run)
{
	uintptr_t start = (uintptr_t)run->start;

	m->pages += run->len / PAGE;
	if (w->heat && m->heat >= 0 &&
	    heatmap_add(w->heat, m->heat, (start - m->start) / PAGE, run->len / PAGE))
		w->heat_errors++;
	if (!w->o->runs)
		return;
	if (m->nruns && (uintptr_t)m->runs[m->nruns - 1].start + m->runs[m->nruns - 1].len == start) {
		m->runs[m->nruns - 1].len += run->len;
		return;
	}
	if (grow((void **)&m->runs, &m->runs_cap, m->nruns, sizeof(*m->runs)))
		m->runs[m->nruns++] = *run;
}

/* Collect-and-clean every region.  -ESRCH when the target is gone. */
/* --numa: which node holds the pages just collected (their node at this moment). */
static void numa_account(struct watch *w, const struct dirty_range *runs, size_t n)
{
	struct dirty_numa_counts c = { .sz = sizeof(c) };

	if (dirty_numa_count(w->t, runs, n, &c))
		return;
	if (!c.available) {
		snprintf(w->numa_reason, sizeof(w->numa_reason), "%s", c.reason);
		return;
	}
	w->numa_nodes = c.nnodes < DIRTY_NUMA_MAX_NODES ? c.nnodes : DIRTY_NUMA_MAX_NODES;
	for (unsigned i = 0; i < w->numa_nodes; i++)
		w->numa_pages[i] += c.pages[i];
	w->numa_unknown += c.unknown;
}

static int collect_all(struct watch *w)
{
	struct dirty_range runs[COLLECT_RUNS];

	for (size_t i = 0; i < w->nregions; i++) {
		struct region *g = &w->regions[i];
		char *cur = (char *)g->start, *end = (char *)g->end;

		while (cur < end) {
			void *next;
			ssize_t n = dirty_collect(w->t, cur, (size_t)(end - cur), DIRTY_COLLECT_CLEAN,
						  runs, COLLECT_RUNS, &next);

			if (n == -ESRCH)
				return -ESRCH;
			if (n < 0)
				break; /* -ESTALE: gone; reconcile() forgets it */
			for (ssize_t k = 0; k < n; k++)
				record_run(w, &w->maps[g->mapping], &runs[k]);
			if (w->o->numa && n > 0)
				numa_account(w, runs, (size_t)n);
			cur = next;
		}
	}
	return 0;
}

static int by_pages(const void *a, const void *b, void *maps)
{
	const struct mapping *m = maps;
	uint64_t x = m[*(const size_t *)a].pages, y = m[*(const size_t *)b].pages;

	return x < y ? 1 : x > y ? -1 : 0;
}

static double mib_per_s(uint64_t pages, double seconds)
{
	return seconds > 0 ? pages * (double)PAGE / (1 << 20) / seconds : 0;
}

static void json_mapping(struct watch *w, const struct mapping *m, uint64_t pages, double secs,
			 bool with_runs)
{
	FILE *f = w->o->out;
	const char *way;

	fprintf(f, "{\"name\": ");
	json_string(f, m->name);
	fprintf(f, ", \"kind\": \"%s\", \"start\": \"%#" PRIxPTR "\", \"end\": \"%#" PRIxPTR "\", "
		   "\"pages\": %" PRIu64 ", \"mib_per_s\": %.3f", kind_names[m->kind], m->start,
		m->end, pages, mib_per_s(pages, secs));
	/* how the library tracks it: "protect" or "compare" (its cost model) */
	way = w->t ? dirty_tracker_region_way(w->t, (const void *)m->start) : NULL;
	fprintf(f, ", \"way\": ");
	if (way)
		json_string(f, way);
	else
		fprintf(f, "null");
	if (with_runs) {
		fprintf(f, ", \"runs\": [");
		for (size_t r = 0; r < m->nruns; r++)
			fprintf(f, "%s[\"%p\", \"%#zx\"]", r ? ", " : "", m->runs[r].start,
				m->runs[r].len);
		fprintf(f, "]");
	}
	fprintf(f, "}");
}

/* Mapping indexes sorted by the pages of this interval (total: of all of them). */
static size_t *sorted_mappings(struct watch *w, bool total)
{
	size_t *order = malloc((w->nmaps + 1) * sizeof(*order));

	if (!order)
		return NULL;
	for (size_t i = 0; i < w->nmaps; i++) {
		order[i] = i;
		if (total) /* sort by totals: borrow the interval field */
			w->maps[i].pages = w->maps[i].total;
	}
	qsort_r(order, w->nmaps, sizeof(*order), by_pages, w->maps);
	return order;
}

static void report_interval(struct watch *w, double t, double secs)
{
	FILE *f = w->o->out;
	uint64_t pages = 0;
	size_t *order, shown = 0;

	for (size_t i = 0; i < w->nmaps; i++)
		pages += w->maps[i].pages;
	w->pages += pages;
	w->intervals++;
	order = sorted_mappings(w, false);
	if (w->o->json) {
		fprintf(f, "{\"type\": \"interval\", \"t\": %.3f, \"interval\": %.3f, \"pid\": %d, "
			   "\"backend\": ", t, secs, (int)w->pid);
		json_string(f, w->backend);
		fprintf(f, ", \"pages\": %" PRIu64 ", \"bytes\": %" PRIu64 ", \"mib_per_s\": %.3f, "
			   "\"mappings\": [", pages, pages * PAGE, mib_per_s(pages, secs));
		for (size_t i = 0; order && i < w->nmaps && w->maps[order[i]].pages; i++) {
			if (i)
				fprintf(f, ", ");
			json_mapping(w, &w->maps[order[i]], w->maps[order[i]].pages, secs, w->o->runs);
		}
		fprintf(f, "]");
		if (w->o->numa) {
			fprintf(f, ", \"numa\": {\"available\": %s, \"nodes\": [",
				w->numa_nodes ? "true" : "false");
			for (unsigned i = 0; i < w->numa_nodes; i++)
				fprintf(f, "%s%" PRIu64, i ? ", " : "", w->numa_pages[i]);
			fprintf(f, "], \"unknown\": %" PRIu64 ", \"reason\": ", w->numa_unknown);
			json_string(f, w->numa_nodes ? "" : w->numa_reason);
			fprintf(f, "}");
		}
		fprintf(f, "}\n");
	} else {
		if (w->tty && w->report_lines)
			fprintf(f, "\033[%uA\033[J", w->report_lines);
		fprintf(f, "%7.1f s  %9" PRIu64 " pages  %9.2f MiB/s  (%zu regions tracked)\n", t,
			pages, mib_per_s(pages, secs), w->nregions);
		w->report_lines = 1;
		if (w->o->numa) {
			fprintf(f, "           per node:");
			for (unsigned i = 0; i < w->numa_nodes; i++)
				fprintf(f, "  node%u %" PRIu64, i, w->numa_pages[i]);
			if (w->numa_nodes)
				fprintf(f, "  not present %" PRIu64 "\n", w->numa_unknown);
			else
				fprintf(f, " not counted: %s\n", w->numa_reason[0] ? w->numa_reason
										      : "no pages");
			w->report_lines++;
		}
		for (size_t i = 0; order && i < w->nmaps && shown < w->o->top; i++) {
			const struct mapping *m = &w->maps[order[i]];

			if (!m->pages)
				break;
			fprintf(f, "           %9" PRIu64 " pages  %9.2f MiB/s  %-12s %#" PRIxPTR
				   "-%#" PRIxPTR " %s\n", m->pages, mib_per_s(m->pages, secs),
				kind_names[m->kind], m->start, m->end, m->name);
			shown++;
			w->report_lines++;
		}
	}
	fflush(f);
	free(order);
	for (size_t i = 0; i < w->nmaps; i++) {
		w->maps[i].total += w->maps[i].pages;
		w->maps[i].pages = 0;
		w->maps[i].nruns = 0;
	}
	memset(w->numa_pages, 0, sizeof(w->numa_pages));
	w->numa_unknown = 0;
}

static void report_summary(struct watch *w, int exit_status)
{
	double secs = w->last - w->start;
	size_t *order = sorted_mappings(w, true), shown = 0;
	FILE *f = w->o->out;

	if (w->o->json) {
		fprintf(f, "{\"type\": \"summary\", \"pid\": %d, \"duration\": %.3f, \"intervals\": %u, "
			   "\"pages\": %" PRIu64 ", \"exit_status\": ", (int)w->pid, secs, w->intervals,
			w->pages);
		if (exit_status >= 0)
			fprintf(f, "%d", exit_status);
		else
			fprintf(f, "null");
		fprintf(f, ", \"mappings\": [");
		for (size_t i = 0; order && i < w->nmaps && w->maps[order[i]].total; i++) {
			if (i)
				fprintf(f, ", ");
			json_mapping(w, &w->maps[order[i]], w->maps[order[i]].total, secs, false);
		}
		fprintf(f, "]}\n");
	} else {
		fprintf(f, "summary: %.1f s, %u intervals, %" PRIu64 " pages (%.1f MiB) dirtied, "
			   "%.2f MiB/s on average\n", secs, w->intervals, w->pages,
			w->pages * (double)PAGE / (1 << 20), mib_per_s(w->pages, secs));
		for (size_t i = 0; order && i < w->nmaps && shown < w->o->top; i++) {
			const struct mapping *m = &w->maps[order[i]];

			if (!m->total)
				break;
			fprintf(f, "  %9" PRIu64 " pages  %-12s %#" PRIxPTR "-%#" PRIxPTR " %s\n",
				m->total, kind_names[m->kind], m->start, m->end, m->name);
			shown++;
		}
		if (exit_status >= 0)
			fprintf(f, "exit status: %d\n", exit_status);
	}
	fflush(f);
	free(order);
}

/* ---- dump: an image per interval ---- */

/*
 * Write file seq: the whole content of regions that no image has yet (all
 * of them in the first, the base), then the dirty pages of the others, as
 * two images one after the other.  After an exec, one image: all of the new
 * program's memory, marked DIRTY_IMAGE_NEW_PROGRAM.  Pages are written and
 * cleaned by the same collect (DIRTY_IMAGE_CLEAN), so the chain misses no
 * write.  An image that fails gives its pages back (and regions not imaged
 * whole yet are imaged whole next time): the file, which would make the
 * chain unreadable, is removed.  A failed fsync leaves it: its pages are
 * clean now.  Reports nothing: -errno for the caller to act on.
 */
static int write_image_file(struct watch *w, unsigned seq, const char *path,
			    struct dirty_image_stats *total)
{
	const struct dirty_range none = { 0 };
	struct dirty_range *ranges = calloc(w->nregions + 1, sizeof(*ranges));
	const char **names = calloc(w->nregions + 1, sizeof(*names));
	struct dirty_image_stats st;
	int fd = -1, err = 0;

	*total = (struct dirty_image_stats){ .sz = sizeof(*total) };
	if (!ranges || !names) {
		err = -ENOMEM;
		goto out;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		err = -errno;
		goto out;
	}
	for (int pass = 0; pass < 2 && !err; pass++) {
		struct dirty_image_options opts = {
			.sz = sizeof(opts), .sequence = seq,
			.flags = DIRTY_IMAGE_CLEAN | (pass ? 0 : DIRTY_IMAGE_ALL) |
				 (!pass && w->exec_pending ? DIRTY_IMAGE_EXEC : 0) |
				 (w->o->pwritev ? DIRTY_IMAGE_PWRITEV : 0),
		};
		size_t n = 0;

		for (size_t i = 0; i < w->nregions; i++) {
			if (w->regions[i].imaged == !pass && !w->exec_pending)
				continue;
			ranges[n] = (struct dirty_range){ (void *)w->regions[i].start,
							  w->regions[i].end - w->regions[i].start };
			names[n++] = w->maps[w->regions[i].mapping].name;
		}
		/* the base pass always writes an image, so that every file starts with one */
		if (!n && pass)
			continue;
		st = (struct dirty_image_stats){ .sz = sizeof(st) };
		err = dirty_image_write(w->t, n ? ranges : &none, names, n, &opts, fd, &st);
		total->pages += st.pages;
		total->bytes += st.bytes;
		total->method = st.method;
		if (w->exec_pending)
			break; /* the new program's base holds every region */
	}
	if (err)
		unlink(path);
	else if (fsync(fd) < 0)
		err = -errno;
	for (size_t i = 0; !err && i < w->nregions; i++)
		w->regions[i].imaged = true;
out:
	if (fd >= 0)
		close(fd);
	free(ranges);
	free(names);
	return err;
}

static void report_image(struct watch *w, unsigned seq, double t, const char *path,
			 const struct dirty_image_stats *total, bool new_program, int err)
{
	w->pages += total->pages;
	w->intervals++;
	if (w->o->json) {
		fprintf(w->o->out, "{\"type\": \"image\", \"t\": %.3f, \"sequence\": %u, \"file\": ",
			t, seq);
		json_string(w->o->out, path);
		fprintf(w->o->out, ", \"pages\": %" PRIu64 ", \"bytes\": %" PRIu64 ", \"method\": ",
			total->pages, total->bytes);
		json_string(w->o->out, total->method ? total->method : "none");
		fprintf(w->o->out, ", \"new_program\": %s, \"error\": %d}\n",
			new_program ? "true" : "false", err);
	} else {
		fprintf(w->o->out, "%7.1f s  image %u: %9" PRIu64 " pages, %.2f MiB  %s%s%s%s\n", t,
			seq, total->pages, total->bytes / (double)(1 << 20), path,
			total->method ? "  via " : "", total->method ? total->method : "",
			new_program ? "  (the base of the new program)" : "");
	}
	fflush(w->o->out);
}

/* ---- the loop ---- */

/* Has the target ended?  For our child, reap it and keep its status. */
static bool target_ended(struct watch *w, bool child, int *status)
{
	char path[64], buf[512], *p, state = '?';
	FILE *f;

	if (child)
		return waitpid(w->pid, status, WNOHANG) == w->pid;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)w->pid);
	f = fopen(path, "r");
	if (!f)
		return true;
	if (fgets(buf, sizeof(buf), f) && (p = strrchr(buf, ')')))
		sscanf(p + 1, " %c", &state);
	fclose(f);
	return state == 'Z' || state == 'X';
}

/* Sleep until t, waking early for a signal or the target's end. */
static bool sleep_until(struct watch *w, double t, bool child, int *status)
{
	while (!stop_requested) {
		double left = t - now();
		struct timespec ts;

		if (target_ended(w, child, status))
			return false;
		if (left <= 0)
			return true;
		if (left > 0.05)
			left = 0.05;
		ts.tv_sec = 0;
		ts.tv_nsec = (long)(left * 1e9);
		nanosleep(&ts, NULL);
	}
	return false;
}

/* The library's reasons: the last error it logged, for the message if the tracker fails. */
struct log_capture {
	char last[1024];
};

static void capture_log(int priority, const char *msg, void *userdata)
{
	struct log_capture *c = userdata;

	if (priority <= LOG_WARNING)
		snprintf(c->last, sizeof(c->last), "%s", msg);
}

/* The signals that end dirtyctl or stop it, blocked while the library holds the target. */
static void block_signals(sigset_t *old)
{
	static const int synchronous[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS };
	sigset_t all;

	sigfillset(&all);
	for (size_t i = 0; i < sizeof(synchronous) / sizeof(synchronous[0]); i++)
		sigdelset(&all, synchronous[i]);
	sigprocmask(SIG_BLOCK, &all, old);
}

static int open_tracker(struct watch *w)
{
	/*
	 * Sparse: programs reserve far more than they touch (sanitizer shadow,
	 * Go and Java heaps: terabytes of MAP_NORESERVE).  Exact tracking of a
	 * hole needs a page table for its protection marker: for a sanitized
	 * target that is more memory than the machine has.  Pages dropped
	 * after a collect are still reported (libdirty.h says what is not).
	 */
	struct log_capture log = { "" };
	struct dirty_options opts = { .sz = sizeof(opts), .backend = w->o->backend,
				      .pid = w->pid, .flags = DIRTY_TRACKER_SPARSE,
				      .log = capture_log, .log_userdata = &log };
	const char *advice = "";
	sigset_t old;
	int err;

	/*
	 * The library borrows a thread of the target for a moment (ptrace):
	 * a signal that would end dirtyctl meanwhile waits until it is done.
	 */
	block_signals(&old);
	err = dirty_tracker_new(&opts, &w->t);
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (!err) {
		w->backend = dirty_tracker_backend(w->t);
		return 0;
	}
	if (ended_early(w->pid))
		return ENDED_EARLY;
	if (err == -EINVAL) {
		fprintf(stderr, "dirtyctl: no backend named \"%s\": see dirtyctl probe\n",
			w->o->backend);
		return EXIT_USAGE;
	}
	if (err == -EOPNOTSUPP && w->o->backend &&
	    (!strcmp(w->o->backend, "uffd-async") || !strcmp(w->o->backend, "soft-dirty")))
		advice = ": dirtyctl probe shows what this kernel offers; without --backend, the "
			 "best usable one is taken";
	else if (err == -EOPNOTSUPP && w->o->backend && strcmp(w->o->backend, "auto"))
		advice = ": only uffd-async and soft-dirty track another process, and dirtyctl "
			 "probe shows which of them work here";
	else if (err == -EOPNOTSUPP)
		advice = ": another process can be tracked with uffd-async (Linux 6.7 or later) or "
			 "soft-dirty (a kernel built with CONFIG_MEM_SOFT_DIRTY), and this kernel "
			 "offers neither (see dirtyctl probe)";
	else if (err == -ENOMEM)
		advice = ": free some memory and try again";
	if (log.last[0])
		fprintf(stderr, "dirtyctl: cannot attach to process %d: %s%s\n", (int)w->pid, log.last,
			advice);
	else
		fprintf(stderr, "dirtyctl: cannot attach to process %d: %s%s\n", (int)w->pid,
			strerror(-err), advice[0] ? advice : ": please report this as a bug");
	switch (err) {
	case -ESRCH:
		return EXIT_NO_PROCESS;
	case -EPERM:
	case -EACCES:
	case -EBUSY:
	case -EOPNOTSUPP:
	case -ENOSYS:
	case -ENOEXEC:
		return EXIT_REFUSED;
	default:
		return EXIT_TRACKING;
	}
}

/*
 * The tracker's address space is gone.  If the process lives on, it has
 * exec'ed: watch its new program with a new tracker; all of its memory
 * appeared since the last collect (a dump's next image is its base).  0,
 * or -ESRCH.
 */
static int reattach(struct watch *w, bool child, int *status)
{
	if (target_ended(w, child, status))
		return -ESRCH;
	w->t = dirty_tracker_free(w->t);
	w->nregions = 0;
	if (open_tracker(w))
		return -ESRCH;
	w->exec_pending = w->o->dump_dir != NULL;
	if (!w->o->json)
		fprintf(w->o->out, "dirtyctl: process %d exec'ed a new program: watching it\n",
			(int)w->pid);
	return reconcile(w, true);
}

/*
 * Track what appeared since the last collect, and follow an exec.  -ESRCH
 * when the target is gone.
 */
static int refresh(struct watch *w, bool child, int *status)
{
	if (reconcile(w, true) != -ESRCH)
		return 0;
	return stop_requested ? -ESRCH : reattach(w, child, status);
}

/* Tries at writing one file of a dump while the target's memory changes under it. */
#define DUMP_TRIES 8

/*
 * This interval's file of the dump.  Memory unmapped since the maps were
 * read makes an image fail with -ESTALE; an exec, with -ESRCH (or -ESTALE)
 * while the process lives: read the maps again, or follow the exec, and
 * write the file again.  -ESRCH when the target is gone.
 */
static int dump_image(struct watch *w, unsigned seq, double t, bool child, int *status)
{
	struct dirty_image_stats total = { .sz = sizeof(total) };
	char path[4200];
	bool new_program = false;
	int err = 0;

	snprintf(path, sizeof(path), "%s/%06u.img", w->o->dump_dir, seq);
	for (unsigned try = 0; try < DUMP_TRIES; try++) {
		/*
		 * -ESRCH: the address space is gone even if the maps look the
		 * same (an exec of the same program without ASLR)
		 */
		if (err == -ESRCH)
			err = stop_requested ? -ESRCH : reattach(w, child, status);
		else
			err = refresh(w, child, status);
		if (err)
			break;
		new_program = w->exec_pending;
		err = write_image_file(w, seq, path, &total);
		if (!err) {
			w->exec_pending = false;
			break;
		}
		if (err != -ESTALE && err != -ESRCH)
			break;
	}
	if (err == -ESRCH)
		return err;
	if (err == -ESTALE)
		fprintf(stderr, "dirtyctl: writing %s: the process's memory kept changing under "
			"%d tries (mappings going away while their pages were read); stopped\n",
			path, DUMP_TRIES);
	else if (err)
		fprintf(stderr, "dirtyctl: cannot write %s (%s): the chain ends before it; check the "
			"room and the file system of --dir\n", path, strerror(-err));
	report_image(w, seq, t, path, &total, new_program, err);
	return err;
}

/* The first line of the report: what is watched, and how. */
static void report_attached(const struct watch *w)
{
	const struct watch_options *o = w->o;

	if (o->json) {
		fprintf(o->out, "{\"type\": \"attached\", \"pid\": %d, \"backend\": ", (int)w->pid);
		json_string(o->out, dirty_tracker_backend(w->t));
		fprintf(o->out, ", \"regions\": %zu, \"untracked_bytes\": %" PRIu64 ", "
			"\"clock\": %.6f}\n", w->nregions, w->skipped_bytes, w->start);
	} else {
		fprintf(o->out, "dirtyctl: watching %s (pid %d) with %s: %zu writable regions; "
			"every %.2g s\n", o->label, (int)w->pid, dirty_tracker_backend(w->t),
			w->nregions, o->interval);
		if (w->skipped_bytes)
			fprintf(o->out, "dirtyctl: %.1f GiB of writable mappings larger than 16 GiB "
				"are not watched: %s\n", w->skipped_bytes / (double)(1 << 30),
				o->dump_dir ? "a base image would hold every page of them"
					    : "soft-dirty would read 8 bytes of pagemap per page");
	}
	fflush(o->out);
}

/*
 * Interval after interval until the target ends, the duration or --count
 * is reached, or a signal asks to stop: a report line or (dump) an image
 * each, and the heatmap's column.  dump starts with the base image.
 * Returns a dirtyctl exit status.
 */
static int watch_intervals(struct watch *w, bool child, int *status)
{
	const struct watch_options *o = w->o;
	int rc = 0, err;

	if (o->dump_dir) {
		/* the base image, at once: everything from here on is incremental */
		w->exec_pending = false;
		err = dump_image(w, 0, now() - w->start, child, status);
		if (err)
			return err == -ESRCH ? EXIT_NO_PROCESS : EXIT_TRACKING;
		if (o->count && w->intervals >= o->count)
			return 0;
	}
	for (;;) {
		double t = w->last + o->interval;
		bool last;

		if (o->duration > 0 && t > w->start + o->duration)
			t = w->start + o->duration;
		last = !sleep_until(w, t, child, status);
		if (last && !stop_requested)
			break; /* the target ended: its memory is gone, nothing to collect */
		/* on time, or on a signal: one last collect while the memory is there */
		t = now();
		if (w->heat && heatmap_interval(w->heat, w->last - w->start, t - w->start))
			w->heat_errors++;
		if (o->dump_dir) {
			err = dump_image(w, w->intervals, t - w->start, child, status);
			if (err == -ESRCH)
				last = true;
			else if (err)
				rc = EXIT_TRACKING, last = true;
			if (o->count && w->intervals >= o->count)
				last = true;
		} else {
			/* memory that appeared during the interval first: its writes are this interval's */
			if (refresh(w, child, status) < 0 ||
			    (collect_all(w) == -ESRCH &&
			     (stop_requested || reattach(w, child, status))))
				last = true;
			report_interval(w, t - w->start, t - w->last);
		}
		w->last = t;
		if (last || (o->duration > 0 && t - w->start >= o->duration - 1e-6))
			break;
	}
	return rc;
}

/* --svg: 0, or EXIT_TRACKING with the reason printed. */
static int write_heatmap(const struct watch *w)
{
	const char *path = w->o->svg;
	FILE *f = fopen(path, "w");
	int err = f ? heatmap_write_svg(w->heat, f) : -errno;

	if (f && fclose(f) && !err)
		err = -EIO;
	if (!err && w->heat_errors)
		fprintf(stderr, "dirtyctl: %u updates of the heatmap failed: its cells add up "
			"to less than the report\n", w->heat_errors);
	if (err) {
		fprintf(stderr, "dirtyctl: cannot write %s (%s): choose an --svg file you may "
			"write, on a file system with room\n", path, strerror(-err));
		return EXIT_TRACKING;
	}
	return 0;
}

static void free_watch(struct watch *w)
{
	heatmap_free(w->heat);
	for (size_t i = 0; i < w->nmaps; i++)
		free(w->maps[i].runs);
	free(w->maps);
	free(w->regions);
}

int watch_process(pid_t pid, bool child, const struct watch_options *o, int *exit_status)
{
	struct sigaction sa = { .sa_handler = on_stop_signal }, old_int, old_term;
	struct watch w = { .o = o, .pid = pid };
	int status = -1, rc;

	*exit_status = -1;
	/* from the start: a Ctrl-C while attaching ends the watch once attached */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);
	run_child = child ? pid : 0;
	rc = check_target(pid);
	if (!rc)
		rc = open_tracker(&w);
	if (rc == ENDED_EARLY) {
		/* nothing was tracked; the command's status is still run's */
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		*exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		fprintf(stderr, "dirtyctl: %s ended before it could be attached (it ran for less "
			"than an attach takes): none of its writes are reported\n", o->label);
		rc = 0;
	}
	if (rc || *exit_status >= 0) {
		sigaction(SIGINT, &old_int, NULL);
		sigaction(SIGTERM, &old_term, NULL);
		return rc;
	}
	if (o->svg) {
		char title[600];

		snprintf(title, sizeof(title), "%s (pid %d), %s, every %.2g s", o->label,
			 (int)pid, dirty_tracker_backend(w.t), o->interval);
		w.heat = heatmap_new(title);
	}
	w.tty = !o->json && isatty(fileno(o->out));

	w.start = w.last = now();
	/* what is there at the attach starts clean: its earlier writes are not seen */
	if (reconcile(&w, false) < 0 && reattach(&w, child, &status) < 0) {
		fprintf(stderr, "dirtyctl: process %d exited before its memory could be read: there "
			"is nothing to report\n", (int)pid);
		rc = EXIT_NO_PROCESS;
	} else {
		report_attached(&w);
		rc = watch_intervals(&w, child, &status);
	}

	/* detach: freeing the tracker unregisters everything and closes the userfaultfd */
	w.t = dirty_tracker_free(w.t);
	if (child && status == -1) {
		/* stopped watching before it ended: wait for it, its status is ours */
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
	}
	if (status != -1)
		*exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	if (!rc && !o->dump_dir)
		report_summary(&w, *exit_status);
	if (w.heat && !rc)
		rc = write_heatmap(&w);
	free_watch(&w);
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	return rc;
}
