/* SPDX-License-Identifier: MIT */
/*
 * A program of a library user, built against an installed libdirty with
 * nothing but pkg-config (tests/test-installed.sh: meson install into a
 * staging tree; tests/test-installed-packages.sh: the Debian packages).  It
 * tracks 16 pages, writes three, and checks the runs it is given.  With an
 * argument, the version that dirty_version() and the header must both say.
 */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <libdirty.h>

int main(int argc, char **argv)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	struct dirty_tracker *t;
	struct dirty_range runs[4];
	char *mem = mmap(NULL, 16 * page, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ssize_t n;

	if (argc == 2 && (strcmp(dirty_version(), argv[1]) ||
			  strcmp(LIBDIRTY_VERSION_STRING, argv[1]))) {
		fprintf(stderr, "dirty_version() %s, header %s, expected %s\n", dirty_version(),
			LIBDIRTY_VERSION_STRING, argv[1]);
		return 1;
	}
	if (mem == MAP_FAILED || dirty_tracker_new(NULL, &t) ||
	    dirty_track(t, mem, 16 * page)) {
		fprintf(stderr, "setup failed\n");
		return 1;
	}
	mem[3 * page] = mem[4 * page] = mem[9 * page] = 1;
	n = dirty_collect(t, mem, 16 * page, DIRTY_COLLECT_CLEAN, runs, 4, NULL);
	if (n != 2 || runs[0].start != mem + 3 * page || runs[0].len != 2 * page ||
	    runs[1].start != mem + 9 * page || runs[1].len != page) {
		fprintf(stderr, "%s: expected runs [3,5) [9,10), got %zd runs\n",
			dirty_tracker_backend(t), n);
		return 1;
	}
	printf("libdirty %s, %s: dirty pages [3,5) [9,10)\n", dirty_version(),
	       dirty_tracker_backend(t));
	dirty_tracker_free(t);
	return 0;
}
