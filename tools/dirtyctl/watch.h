/* SPDX-License-Identifier: MIT */
/* dirtyctl run / attach / heatmap: watch another process's page writes. */
#ifndef DIRTYCTL_WATCH_H
#define DIRTYCTL_WATCH_H

#include <stdbool.h>
#include <stdio.h>
#include <sys/types.h>

/* Exit statuses of dirtyctl (documented in dirtyctl.1). */
enum {
	EXIT_TRACKING = 1, /* an error while tracking */
	EXIT_USAGE = 2,
	EXIT_REFUSED = 3,  /* attach refused: permission, traced, no backend */
	EXIT_NO_PROCESS = 4, /* no such process, a zombie, a kernel thread */
};

struct watch_options {
	double interval;     /* seconds between collects */
	double duration;     /* stop after this long; 0 = until the target exits or a signal */
	unsigned top;        /* mappings shown per interval */
	const char *backend; /* NULL = automatic */
	bool json, runs;
	bool numa;           /* per-node counts of the dirty pages */
	FILE *out;           /* the report */
	const char *svg;     /* heatmap file, or NULL */
	const char *label;   /* what is watched, for titles: the command line */
	const char *dump_dir; /* dump: write an image per interval here */
	unsigned count;      /* dump: stop after this many images (0 = no limit) */
	bool pwritev;        /* dump: do not use io_uring */
};

/*
 * Attach to pid and report until the end (see struct watch_options).  With
 * child set, pid is our child: its exit ends the watch and *exit_status gets
 * its wait status (else -1).  Returns a dirtyctl exit status.
 */
int watch_process(pid_t pid, bool child, const struct watch_options *o, int *exit_status);

/* dirtyctl image info|verify|apply (image-verbs.c). */
int verb_image(int argc, char **argv);

#endif
