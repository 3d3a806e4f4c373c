/* SPDX-License-Identifier: MIT */
/* dirtyctl: see which pages programs write.  A thin user of the public API. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "libdirty.h"
#include "watch.h"

/* The kinds of memory automatic selection tells apart, as probe shows them. */
enum probe_kind { KIND_ANON, KIND_SHMEM, KIND_FILE, KIND_HUGETLB, NKINDS };
static const char *const kind_names[NKINDS] = { "anonymous", "shared-memory", "file",
						"hugetlb" };

/* The default hugetlb page: 2 MiB with 4 KiB base pages, 32 MiB with arm64's 16 KiB. */
static size_t hugetlb_size(void)
{
	size_t size = 2 * 1024 * 1024;
	unsigned long kib;
	char line[128];
	FILE *f = fopen("/proc/meminfo", "re");

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "Hugepagesize: %lu kB", &kib) == 1 && kib)
			size = (size_t)kib * 1024;
	if (f)
		fclose(f);
	return size;
}

/* A small mapping of the kind, or NULL with the reason in why. */
static void *map_kind(enum probe_kind kind, size_t *len, int *fd, char *why, size_t why_len)
{
	static const char *const dirs[] = { "/var/tmp", "." };
	int flags = MAP_SHARED;
	void *mem;

	*len = (size_t)sysconf(_SC_PAGESIZE);
	*fd = -1;
	if (kind == KIND_ANON)
		flags = MAP_PRIVATE | MAP_ANONYMOUS;
	else if (kind == KIND_SHMEM)
		*fd = memfd_create("dirtyctl-probe", MFD_CLOEXEC);
	else if (kind == KIND_HUGETLB)
		flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, *len = hugetlb_size();
	for (size_t i = 0; kind == KIND_FILE && *fd < 0 && i < 2; i++) {
		char path[64];

		/* a disk file system: /tmp is often tmpfs, which is shared memory */
		snprintf(path, sizeof(path), "%s/dirtyctl-probe-XXXXXX", dirs[i]);
		*fd = mkstemp(path);
		if (*fd >= 0)
			unlink(path);
	}
	if ((kind == KIND_SHMEM || kind == KIND_FILE) && (*fd < 0 || ftruncate(*fd, (off_t)*len))) {
		snprintf(why, why_len, "cannot create a %s to map: %s", kind_names[kind],
			 strerror(errno));
		return NULL;
	}
	mem = mmap(NULL, *len, PROT_READ | PROT_WRITE, flags, *fd, 0);
	if (mem == MAP_FAILED) {
		snprintf(why, why_len, "cannot map %s memory: %s%s", kind_names[kind],
			 strerror(errno), kind == KIND_HUGETLB ? " (no huge pages reserved)" : "");
		if (*fd >= 0)
			close(*fd);
		return NULL;
	}
	return mem;
}

/*
 * What an automatic tracker picks for each kind of memory: track a page of
 * each and ask.  kinds[k] is the backend's name or NULL with why[k].
 */
static void probe_kinds(const char *kinds[NKINDS], char why[NKINDS][128])
{
	struct dirty_tracker *t = NULL;
	int err = dirty_tracker_new(NULL, &t);

	for (int k = 0; k < NKINDS; k++) {
		size_t len;
		int fd;
		void *mem = err ? NULL : map_kind((enum probe_kind)k, &len, &fd, why[k], 128);

		kinds[k] = NULL;
		if (err)
			snprintf(why[k], 128, "no backend is usable");
		if (!mem)
			continue;
		int track_err = dirty_track(t, mem, len);

		if (track_err)
			snprintf(why[k], 128, "no usable backend tracks it: %s", strerror(-track_err));
		else
			kinds[k] = dirty_tracker_region_backend(t, mem);
		dirty_untrack(t, mem, len);
		munmap(mem, len);
		if (fd >= 0)
			close(fd);
	}
	dirty_tracker_free(t);
}

static int verb_probe(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *const *names = dirty_backend_names();
	char why[512], auto_why[1024], features[512];
	int nfeatures;
	const char *chosen = NULL, *kinds[NKINDS];
	char kinds_why[NKINDS][128];
	struct dirty_tracker *t;
	struct utsname uts;
	bool json = false;
	int opt, i;

	while ((opt = getopt_long(argc, argv, "jh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'j':
			json = true;
			break;
		case 'h':
			printf("usage: dirtyctl probe [--json]\n"
			       "Show the kernel, which backends can run here and why not.\n");
			return 0;
		default:
			return EXIT_USAGE;
		}
	}
	uname(&uts);
	/* the automatic choice, as dirty_tracker_new() with no options makes it */
	if (dirty_tracker_new(NULL, &t) == 0) {
		chosen = dirty_tracker_backend(t);
		dirty_tracker_free(t);
	}
	dirty_backend_probe("auto", 0, auto_why, sizeof(auto_why));
	probe_kinds(kinds, kinds_why);
	nfeatures = dirty_kernel_uffd_features(features, sizeof(features));

	if (json) {
		printf("{\"kernel\": ");
		json_string(stdout, uts.release);
		printf(", \"machine\": ");
		json_string(stdout, uts.machine);
		printf(", \"page_size\": %ld, \"userfaultfd_features\": [", sysconf(_SC_PAGESIZE));
		for (char *p = nfeatures > 0 ? features : NULL, *end; p && *p; p = end ? end + 2 : NULL) {
			end = strstr(p, ", ");
			printf("%s\"%.*s\"", p == features ? "" : ", ",
			       (int)(end ? (size_t)(end - p) : strlen(p)), p);
		}
		printf("]");
		printf(", \"backends\": [");
		for (i = 0; names[i]; i++) {
			int err = dirty_backend_probe(names[i], 0, why, sizeof(why));

			printf("%s{\"name\": ", i ? ", " : "");
			json_string(stdout, names[i]);
			printf(", \"usable\": %s, \"reason\": ", err ? "false" : "true");
			json_string(stdout, why);
			printf("}");
		}
		printf("], \"default\": ");
		if (chosen)
			json_string(stdout, chosen);
		else
			printf("null");
		printf(", \"default_reason\": ");
		json_string(stdout, auto_why);
		printf(", \"auto_per_kind\": {");
		for (i = 0; i < NKINDS; i++) {
			printf("%s", i ? ", " : "");
			json_string(stdout, kind_names[i]);
			printf(": {\"backend\": ");
			if (kinds[i])
				json_string(stdout, kinds[i]);
			else
				printf("null");
			printf(", \"reason\": ");
			json_string(stdout, kinds[i] ? "" : kinds_why[i]);
			printf("}");
		}
		printf("}}\n");
		return chosen ? 0 : 1;
	}
	printf("kernel: %s %s (%s, %ld-byte pages)\n", uts.sysname, uts.release, uts.machine,
	       sysconf(_SC_PAGESIZE));
	printf("userfaultfd: %s\n\n", nfeatures > 0 ? features : "none (not available here)");
	for (i = 0; names[i]; i++) {
		int err = dirty_backend_probe(names[i], 0, why, sizeof(why));

		printf("  %-11s %-8s %s\n", names[i], err ? "no" : "usable", why);
	}
	printf("\ndefault: %s\n  because %s\n", chosen ? chosen : "(none)", auto_why);
	printf("\nauto, per kind of memory (a page of each, tracked):\n");
	for (i = 0; i < NKINDS; i++)
		printf("  %-14s %s\n", kind_names[i], kinds[i] ? kinds[i] : kinds_why[i]);
	return chosen ? 0 : 1;
}


/* ---- demo: watch this process's own buffer being written ---- */

struct demo_writer {
	char *mem;
	size_t len, page;
	atomic_bool stop;
};

static double now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * A hot window of 4 MiB that sweeps across the buffer, plus a trickle of
 * scattered single-page writes: the shape of a real heap.
 */
static void *demo_writer_main(void *p)
{
	struct demo_writer *w = p;
	size_t npages = w->len / w->page, window = (4u << 20) / w->page, pos = 0;
	uint64_t x = 88172645463325252ull;

	while (!atomic_load_explicit(&w->stop, memory_order_relaxed)) {
		for (size_t i = 0; i < 64; i++) {
			size_t page = (pos + i * 7) % window + pos;

			w->mem[(page % npages) * w->page] += 1;
		}
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		w->mem[(x % npages) * w->page + 8] += 1;
		pos = (pos + 3) % npages;
		usleep(200);
	}
	return NULL;
}

static void heat_strip(const uint64_t *bitmap, size_t npages, char *out, size_t cells)
{
	static const char shades[] = " .:-=+*#%@";
	size_t per = (npages + cells - 1) / cells;

	for (size_t c = 0; c < cells; c++) {
		size_t n = 0, first = c * per, last = first + per < npages ? first + per : npages;

		for (size_t i = first; i < last; i++)
			n += bitmap[i / 64] >> (i % 64) & 1;
		out[c] = shades[n ? 1 + n * 8 / (per ? per : 1) : 0];
	}
	out[cells] = '\0';
}

static int demo_backend(const char *name, size_t size, double seconds, double interval)
{
	struct dirty_options opts = { .sz = sizeof(opts), .backend = name };
	struct demo_writer w = { .len = size, .page = (size_t)sysconf(_SC_PAGESIZE) };
	size_t npages = size / w.page, total = 0;
	struct dirty_tracker *t;
	uint64_t *bitmap;
	char strip[65];
	pthread_t writer;
	double start, last;
	int err;

	err = dirty_tracker_new(&opts, &t);
	if (err) {
		fprintf(stderr, "dirtyctl: %s: %s\n", name, strerror(-err));
		return 1;
	}
	w.mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	bitmap = calloc((npages + 63) / 64, sizeof(*bitmap));
	if (w.mem == MAP_FAILED || !bitmap) {
		fprintf(stderr, "dirtyctl: out of memory\n");
		return 1;
	}
	memset(w.mem, 0, size);
	err = dirty_track(t, w.mem, size);
	if (err) {
		fprintf(stderr, "dirtyctl: dirty_track: %s\n", strerror(-err));
		return 1;
	}
	printf("\nbackend %s: a %zu MiB buffer, a writer thread sweeping a hot window\n",
	       dirty_tracker_backend(t), size >> 20);
	printf("%6s %9s %9s  %-64s\n", "time", "pages", "MiB/s", "where (start .. end of the buffer)");
	pthread_create(&writer, NULL, demo_writer_main, &w);
	start = last = now_seconds();
	while (last - start < seconds) {
		size_t dirty = 0;
		double t1;

		usleep((useconds_t)(interval * 1e6));
		err = dirty_collect_bitmap(t, w.mem, size, DIRTY_COLLECT_CLEAN, bitmap);
		t1 = now_seconds();
		if (err) {
			fprintf(stderr, "dirtyctl: collect: %s\n", strerror(-err));
			break;
		}
		for (size_t i = 0; i < (npages + 63) / 64; i++)
			dirty += (size_t)__builtin_popcountll(bitmap[i]);
		total += dirty;
		heat_strip(bitmap, npages, strip, 64);
		printf("%5.1fs %9zu %9.1f  %s\n", t1 - start, dirty,
		       (double)dirty * (double)w.page / (t1 - last) / (1 << 20), strip);
		fflush(stdout);
		last = t1;
	}
	atomic_store(&w.stop, true);
	pthread_join(writer, NULL);
	printf("total: %zu pages dirtied in %.1f s\n", total, last - start);
	dirty_untrack(t, w.mem, size);
	dirty_tracker_free(t);
	munmap(w.mem, size);
	free(bitmap);
	return err ? 1 : 0;
}

static int verb_demo(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "backend", required_argument, NULL, 'b' },
		{ "seconds", required_argument, NULL, 's' },
		{ "interval", required_argument, NULL, 'i' },
		{ "size", required_argument, NULL, 'm' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *const *names = dirty_backend_names();
	const char *only = NULL;
	double seconds = 3, interval = 0.5;
	size_t size = 256u << 20;
	int opt, rc = 0;

	while ((opt = getopt_long(argc, argv, "b:s:i:m:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'b':
			only = optarg;
			break;
		case 's':
			seconds = atof(optarg);
			break;
		case 'i':
			interval = atof(optarg);
			break;
		case 'm':
			size = (size_t)strtoul(optarg, NULL, 10) << 20;
			break;
		case 'h':
			printf("usage: dirtyctl demo [--backend NAME] [--seconds S] [--interval S] "
			       "[--size MiB]\n"
			       "Track a buffer of this process while a thread writes to it, and show\n"
			       "what each usable backend reports, interval by interval.\n");
			return 0;
		default:
			return EXIT_USAGE;
		}
	}
	if (seconds <= 0 || interval <= 0 || size < (8u << 20)) {
		fprintf(stderr, "dirtyctl: --seconds and --interval must be positive, --size >= 8\n");
		return EXIT_USAGE;
	}
	if (only)
		return demo_backend(only, size, seconds, interval);
	for (int i = 0; names[i]; i++)
		if (dirty_backend_probe(names[i], 0, NULL, 0) == 0)
			rc |= demo_backend(names[i], size, seconds, interval);
	return rc;
}

/* ---- run, attach, heatmap ---- */

enum watch_verb { VERB_RUN, VERB_ATTACH, VERB_HEATMAP, VERB_DUMP };

static const char watch_usage[] =
	"usage: dirtyctl run [options] -- CMD [ARGS...]\n"
	"       dirtyctl attach PID [options]\n"
	"       dirtyctl heatmap --svg FILE [options] (-- CMD [ARGS...] | PID)\n"
	"       dirtyctl dump --dir DIR [--count N] [--pwritev] [options] (-- CMD [ARGS...] | PID)\n"
	"Report every interval the pages a process dirtied: total, MiB/s, per mapping.\n"
	"  --interval SECONDS   between reports (default 1)\n"
	"  --duration SECONDS   stop after this long (default: until it exits, or Ctrl-C)\n"
	"  --top N              mappings listed per interval (default 10)\n"
	"  --backend NAME       force a backend (default: automatic)\n"
	"  --json               one JSON object per line (see dirtyctl(1))\n"
	"  --runs               with --json: the dirty runs of each mapping\n"
	"  --svg FILE           write a heatmap of the whole run\n"
	"  --output FILE        the report goes to FILE, not standard output\n"
	"  --numa               per NUMA node: where the dirty pages live\n"
	"  --dir DIR            dump: a base image, then one image of the pages dirtied\n"
	"                       since the previous one, each interval (DIR/000000.img, ...)\n"
	"  --count N            dump: stop after N images, the base one included\n"
	"  --pwritev            dump: write with pwritev(2), not io_uring\n";

/* Start argv; returns its pid once it has exec'ed, or -1 (message printed). */
static pid_t start_command(char **argv)
{
	int pipefd[2], err = 0;
	pid_t pid;
	ssize_t n;

	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return -1;
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		close(pipefd[0]);
		execvp(argv[0], argv);
		err = errno;
		if (write(pipefd[1], &err, sizeof(err)) < 0)
			_exit(127);
		_exit(127);
	}
	close(pipefd[1]);
	/* end of file: exec succeeded (the pipe is close-on-exec) */
	while ((n = read(pipefd[0], &err, sizeof(err))) < 0 && errno == EINTR)
		;
	close(pipefd[0]);
	if (n == sizeof(err)) {
		waitpid(pid, NULL, 0);
		fprintf(stderr, "dirtyctl: cannot run %s (%s): %s\n", argv[0], strerror(err),
			err == ENOENT ? "check its name, and PATH for a name without a slash"
			: err == EACCES ? "it must be an executable file, on a file system mounted "
					  "without noexec"
			: err == ENOEXEC ? "it is not a program for this machine, nor a script with #!"
					 : "check the command");
		return -1;
	}
	return pid;
}

/* The command line of pid, its arguments joined by spaces ("process N" if unknown). */
static void command_line(pid_t pid, char *buf, size_t len)
{
	char path[64];
	ssize_t n = 0;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		n = read(fd, buf, len - 1);
		close(fd);
	}
	if (n <= 0) {
		snprintf(buf, len, "process %d", (int)pid);
		return;
	}
	for (ssize_t i = 0; i < n; i++)
		if (!buf[i])
			buf[i] = ' ';
	while (n > 0 && buf[n - 1] == ' ')
		n--;
	buf[n] = '\0';
}

static bool parse_seconds(const char *s, double *ret)
{
	char *end;
	double v = strtod(s, &end);

	if (end == s || *end || !(v > 0) || v > 1e6)
		return false;
	*ret = v;
	return true;
}

/*
 * The options of run, attach, heatmap and dump into *o (and --output's file
 * name into *output).  -1 to go on; else the exit status (--help, or a bad
 * option or value, the message printed).
 */
static int parse_watch_options(int argc, char **argv, enum watch_verb verb,
			       struct watch_options *o, const char **output)
{
	static const struct option longopts[] = {
		{ "interval", required_argument, NULL, 'i' },
		{ "duration", required_argument, NULL, 'd' },
		{ "top", required_argument, NULL, 't' },
		{ "backend", required_argument, NULL, 'b' },
		{ "json", no_argument, NULL, 'j' },
		{ "runs", no_argument, NULL, 'r' },
		{ "svg", required_argument, NULL, 's' },
		{ "output", required_argument, NULL, 'o' },
		{ "dir", required_argument, NULL, 'D' },
		{ "count", required_argument, NULL, 'c' },
		{ "pwritev", no_argument, NULL, 'P' },
		{ "numa", no_argument, NULL, 'N' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char *end;
	long top;
	int opt;

	/* options may follow a PID; "--" ends them, so CMD's options stay CMD's */
	while ((opt = getopt_long(argc, argv, "i:d:t:b:jrs:o:D:c:PNh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'i':
			if (!parse_seconds(optarg, &o->interval))
				goto bad_value;
			break;
		case 'd':
			if (!parse_seconds(optarg, &o->duration))
				goto bad_value;
			break;
		case 't':
			top = strtol(optarg, &end, 10);
			if (*end || top < 0 || top > 100000)
				goto bad_value;
			o->top = (unsigned)top;
			break;
		case 'b':
			o->backend = optarg;
			break;
		case 'j':
			o->json = true;
			break;
		case 'r':
			o->runs = true;
			break;
		case 's':
			o->svg = optarg;
			break;
		case 'o':
			*output = optarg;
			break;
		case 'D':
			o->dump_dir = optarg;
			break;
		case 'c':
			top = strtol(optarg, &end, 10);
			if (*end || top <= 0 || top > 1000000)
				goto bad_value;
			o->count = (unsigned)top;
			break;
		case 'P':
			o->pwritev = true;
			break;
		case 'N':
			o->numa = true;
			break;
		case 'h':
			fputs(watch_usage, stdout);
			return 0;
		default:
			fprintf(stderr, "dirtyctl: bad option (see dirtyctl %s --help)\n",
				verb == VERB_RUN      ? "run"
				: verb == VERB_ATTACH ? "attach"
				: verb == VERB_DUMP   ? "dump"
						      : "heatmap");
			return EXIT_USAGE;
		}
	}
	return -1;
bad_value:
	fprintf(stderr, "dirtyctl: bad value for --%s: %s\n",
		opt == 'i' ? "interval" : opt == 'd' ? "duration" : opt == 'c' ? "count" : "top",
		optarg);
	return EXIT_USAGE;
}

/* The options that go together, per verb; dump's --dir made.  0 or EXIT_USAGE. */
static int check_watch_options(enum watch_verb verb, const struct watch_options *o)
{
	if (verb == VERB_HEATMAP && !o->svg) {
		fprintf(stderr, "dirtyctl: heatmap needs --svg FILE\n");
		return EXIT_USAGE;
	}
	if ((verb == VERB_DUMP) != !!o->dump_dir || (verb != VERB_DUMP && (o->count || o->pwritev))) {
		fprintf(stderr, "dirtyctl: --dir (and --count, --pwritev) go with dump, which needs "
			"--dir\n");
		return EXIT_USAGE;
	}
	if (o->dump_dir && mkdir(o->dump_dir, 0755) < 0 && errno != EEXIST) {
		fprintf(stderr, "dirtyctl: cannot create the directory %s (%s): choose a --dir "
			"where you may write\n", o->dump_dir, strerror(errno));
		return EXIT_USAGE;
	}
	if (o->runs && !o->json) {
		fprintf(stderr, "dirtyctl: --runs goes with --json\n");
		return EXIT_USAGE;
	}
	return 0;
}

/*
 * What is watched, from the arguments after the options: run, the command
 * after "--" (*child set); attach, a pid (*pid); heatmap and dump, either.
 * label gets its command line, on one line.  0 or EXIT_USAGE.
 */
static int choose_target(int argc, char **argv, enum watch_verb verb, bool *child, pid_t *pid,
			 char *label, size_t label_size)
{
	char *end;

	if (optind < argc && !strcmp(argv[optind - 1], "--") && verb != VERB_ATTACH) {
		*child = true;
	} else if (optind + 1 == argc && verb != VERB_RUN) {
		long v = strtol(argv[optind], &end, 10);

		if (*end || v <= 0 || v > INT32_MAX) {
			fprintf(stderr, "dirtyctl: not a process id: %s\n", argv[optind]);
			return EXIT_USAGE;
		}
		*pid = (pid_t)v;
		command_line(*pid, label, label_size);
	} else {
		fprintf(stderr, "dirtyctl: %s\n", verb == VERB_RUN ? "run needs -- CMD [ARGS...]"
				 : verb == VERB_ATTACH ? "attach needs one PID"
				 : "heatmap and dump need -- CMD [ARGS...] or one PID");
		fputs(watch_usage, stderr);
		return EXIT_USAGE;
	}
	for (int i = optind; *child && i < argc; i++)
		snprintf(label + strlen(label), label_size - strlen(label), "%s%s",
			 i > optind ? " " : "", argv[i]);
	for (char *c = label; *c; c++)
		if ((unsigned char)*c < ' ')
			*c = ' '; /* one line: newlines of a -c script */
	return 0;
}

/*
 * watch_process() to the end, and a child that could not be watched reaped
 * all the same: it runs on, and its status is still ours.
 */
static int watch_to_the_end(pid_t pid, bool child, const struct watch_options *o,
			    int *exit_status)
{
	int rc = watch_process(pid, child, o, exit_status);

	if (child && rc && *exit_status < 0) {
		int status;

		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
	}
	return rc;
}

static int verb_watch(int argc, char **argv, enum watch_verb verb)
{
	struct watch_options o = { .interval = 1, .top = 10, .out = stdout };
	const char *output = NULL;
	char label[512] = "";
	bool child = false;
	pid_t pid = 0;
	int rc, exit_status;

	rc = parse_watch_options(argc, argv, verb, &o, &output);
	if (rc >= 0)
		return rc;
	rc = check_watch_options(verb, &o);
	if (!rc)
		rc = choose_target(argc, argv, verb, &child, &pid, label, sizeof(label));
	if (rc)
		return rc;
	o.label = label;
	if (output) {
		o.out = fopen(output, "w");
		if (!o.out) {
			fprintf(stderr, "dirtyctl: cannot open %s (%s): choose an --output file you "
				"may write\n", output, strerror(errno));
			return EXIT_USAGE;
		}
	}
	if (child) {
		pid = start_command(argv + optind);
		if (pid < 0) {
			if (output)
				fclose(o.out);
			return 127;
		}
	}
	rc = watch_to_the_end(pid, child, &o, &exit_status);
	if (output && fclose(o.out) && !rc)
		rc = EXIT_TRACKING;
	return child && !rc ? exit_status : rc;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: dirtyctl VERB [options]\n\n"
		   "verbs:\n"
		   "  probe [--json]                 kernel release and which backends can run here\n"
		   "  run [options] -- CMD [ARGS]    start CMD and report the pages it dirties\n"
		   "  attach PID [options]           the same for a running process\n"
		   "  heatmap --svg FILE [options] (-- CMD [ARGS] | PID)   and draw a heatmap\n"
		   "  dump --dir DIR [options] (-- CMD [ARGS] | PID)   incremental images\n"
		   "  image info|verify|apply ...    show, check, rebuild an image chain\n"
		   "  demo [options]                 watch a buffer of this process being written\n"
		   "`dirtyctl VERB --help` for a verb's options; dirtyctl(1) for all of it.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "probe"))
		return verb_probe(argc - 1, argv + 1);
	if (!strcmp(argv[1], "run"))
		return verb_watch(argc - 1, argv + 1, VERB_RUN);
	if (!strcmp(argv[1], "attach"))
		return verb_watch(argc - 1, argv + 1, VERB_ATTACH);
	if (!strcmp(argv[1], "heatmap"))
		return verb_watch(argc - 1, argv + 1, VERB_HEATMAP);
	if (!strcmp(argv[1], "dump"))
		return verb_watch(argc - 1, argv + 1, VERB_DUMP);
	if (!strcmp(argv[1], "image"))
		return verb_image(argc - 1, argv + 1);
	if (!strcmp(argv[1], "demo"))
		return verb_demo(argc - 1, argv + 1);
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "dirtyctl: unknown verb \"%s\"\n", argv[1]);
	usage(stderr);
	return EXIT_USAGE;
}
