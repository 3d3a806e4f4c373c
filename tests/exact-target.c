/* SPDX-License-Identifier: MIT */
/*
 * A process that does to its memory exactly what it is told, one command a
 * line on standard input, and answers each with one line on standard output
 * once it is done (tests/test-exact.py drives it):
 *
 *   map NAME PAGES            private anonymous pages (no THP), untouched:
 *                             "ok ADDRESS"
 *   mapfill NAME PAGES BYTE   the same, every page then written: "ok ADDRESS"
 *   fill NAME FIRST COUNT BYTE   write BYTE to every byte of the pages: "ok"
 *   dontneed NAME FIRST COUNT    MADV_DONTNEED: "ok"
 *   unmap NAME                munmap(2) all of it: "ok"
 *   free NAME FIRST COUNT     MADV_FREE, then MADV_PAGEOUT, which frees them
 *                             at once where the kernel can: "ok FREED" with
 *                             how many of them are no longer in memory
 *   exec PATH ARG...          execv(2): no answer; the program it starts
 *                             says "ready PID" (this one does at its start)
 *   quit                      exit 0 (so does the end of the input)
 *
 * With two arguments IN OUT (named pipes), those are its standard input and
 * output from the start, kept across exec: so that under dirtyctl run, whose
 * standard output is the report, the two do not mix.
 *
 * NAME is a letter, a to z.  Anything wrong: "error WHAT" on standard output
 * and exit 1.
 */
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif

static struct {
	char *addr;
	size_t pages;
} maps[26];

static size_t page_size;

static void answer(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void answer(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static void fail(const char *what)
{
	answer("error %s", what);
	exit(1);
}

/* The pages [first, first + count) of map name, checked. */
static char *pages_of(const char *name, unsigned long first, unsigned long count)
{
	int i = name[0] - 'a';

	if (name[1] || i < 0 || i >= 26 || !maps[i].addr)
		fail("no such map");
	if (!count || first + count > maps[i].pages || first + count < first)
		fail("pages out of the map");
	return maps[i].addr + first * page_size;
}

static void map(const char *name, unsigned long pages, int fill)
{
	int i = name[0] - 'a';

	if (name[1] || i < 0 || i >= 26 || maps[i].addr || !pages)
		fail("bad map");
	maps[i].addr = mmap(NULL, pages * page_size, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (maps[i].addr == MAP_FAILED)
		fail("mmap");
	maps[i].pages = pages;
	madvise(maps[i].addr, pages * page_size, MADV_NOHUGEPAGE);
	if (fill >= 0)
		memset(maps[i].addr, fill, pages * page_size);
	answer("ok %p", (void *)maps[i].addr);
}

static unsigned long not_present(const char *mem, unsigned long count)
{
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	unsigned long gone = 0;

	if (fd < 0)
		fail("open pagemap");
	for (unsigned long i = 0; i < count; i++) {
		uint64_t entry;

		if (pread(fd, &entry, sizeof(entry),
			  (off_t)((uintptr_t)(mem + i * page_size) / page_size * sizeof(entry))) !=
		    sizeof(entry))
			fail("read pagemap");
		gone += !(entry >> 63 & 1);
	}
	close(fd);
	return gone;
}

/*
 * On one CPU (best effort): MADV_FREE and MADV_PAGEOUT drain only this
 * CPU's batches of new and lazy-free pages, so "free" could leave pages
 * filled on another CPU in memory.
 */
static void pin_to_one_cpu(void)
{
	int cpu = sched_getcpu();
	cpu_set_t one;

	CPU_ZERO(&one);
	CPU_SET(cpu < 0 ? 0 : cpu, &one);
	(void)sched_setaffinity(0, sizeof(one), &one);
}

int main(int argc, char **argv)
{
	char line[4096];

	page_size = (size_t)sysconf(_SC_PAGESIZE);
	if (argc == 3) {
		int in = open(argv[1], O_RDONLY), out = in < 0 ? -1 : open(argv[2], O_WRONLY);

		if (in < 0 || out < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0)
			return 2;
		close(in);
		close(out);
	}
	pin_to_one_cpu();
	answer("ready %d", (int)getpid());
	while (fgets(line, sizeof(line), stdin)) {
		char cmd[16], name[8], *args[64];
		unsigned long a = 0, b = 0, c = 0;
		int n = sscanf(line, "%15s %7s %lu %lu %lu", cmd, name, &a, &b, &c);

		if (n < 1)
			continue;
		if (!strcmp(cmd, "map") && n == 3) {
			map(name, a, -1);
		} else if (!strcmp(cmd, "mapfill") && n == 4) {
			map(name, a, (int)b);
		} else if (!strcmp(cmd, "fill") && n == 5) {
			memset(pages_of(name, a, b), (int)c, b * page_size);
			answer("ok");
		} else if (!strcmp(cmd, "dontneed") && n == 4) {
			if (madvise(pages_of(name, a, b), b * page_size, MADV_DONTNEED))
				fail("madvise");
			answer("ok");
		} else if (!strcmp(cmd, "unmap") && n == 2) {
			char *mem = pages_of(name, 0, 1);
			int i = name[0] - 'a';

			if (munmap(mem, maps[i].pages * page_size))
				fail("munmap");
			maps[i].addr = NULL;
			answer("ok");
		} else if (!strcmp(cmd, "free") && n == 4) {
			char *mem = pages_of(name, a, b);

			if (madvise(mem, b * page_size, MADV_FREE) ||
			    madvise(mem, b * page_size, MADV_PAGEOUT))
				fail("madvise");
			answer("ok %lu", not_present(mem, b));
		} else if (!strcmp(cmd, "exec")) {
			int nargs = 0;

			line[strcspn(line, "\n")] = '\0';
			for (char *p = strtok(line + 4, " "); p && nargs < 63; p = strtok(NULL, " "))
				args[nargs++] = p;
			args[nargs] = NULL;
			if (!nargs)
				fail("exec what?");
			execv(args[0], args);
			fail("execv");
		} else if (!strcmp(cmd, "quit")) {
			return 0;
		} else {
			fail("unknown command");
		}
	}
	return 0;
}
