/* SPDX-License-Identifier: MIT */
/*
 * Where dirty-syncd copies the dirty runs: a sink.  The daemon plans each
 * flush as regions (syncd-regions.h: aligned to what the sink asks, at most
 * as many as it takes) and hands them over in one call, as a GPU copy takes
 * them.  The file sink (pwrite into a regular file or a memfd) stands in for
 * device memory; the Vulkan sink (syncd-vulkan.c) makes them the regions of
 * one vkCmdCopyBuffer into a device-local buffer and waits for its fence.
 */
#ifndef SYNCD_SINK_H
#define SYNCD_SINK_H

#include <stddef.h>
#include <stdint.h>

#include "syncd-regions.h"

/* The shared buffer the regions are copied from. */
struct syncd_source {
	int fd;                   /* the buffer: a memfd, or a file in /dev/shm */
	const unsigned char *map; /* the daemon's mapping of all of it, read-only */
	uint64_t size;            /* a multiple of page_size */
	size_t page_size;
};

struct syncd_sink;

struct syncd_sink_ops {
	const char *name;
	/*
	 * Open the sink that spec names for src (s->src set, s->align and
	 * s->max_regions as the command line asks: the sink may raise the one
	 * and lower the other to what it needs).  0, or -errno with the reason
	 * in why: -ENODEV when this sink cannot run on this machine (no device,
	 * not built in), which is not an error of the sink.
	 */
	int (*open)(struct syncd_sink *s, const char *spec, char *why, size_t why_len);
	/*
	 * Copy the regions (in offset order, disjoint, aligned and counted as
	 * the sink asked) from the source to the same offsets of the sink, and
	 * return once the sink has them: the device, not a queue.  0, or -errno
	 * (then what was copied is unknown: the daemon keeps the pages marked).
	 */
	int (*upload)(struct syncd_sink *s, const struct syncd_region *regions, size_t n);
	/*
	 * Write what the sink holds, all s->size bytes, to fd from offset 0 (a
	 * check that the device has what the buffer has).  0 or -errno.
	 */
	int (*read_back)(struct syncd_sink *s, int fd);
	void (*close)(struct syncd_sink *s);
};

struct syncd_sink {
	const struct syncd_sink_ops *ops;
	const struct syncd_source *src;
	uint64_t size;
	uint64_t align;       /* a power of two; 1: the runs as they are (whole pages) */
	uint64_t max_regions; /* regions per upload; 0: no cap */
	int fd;               /* the file sink's */
	void *priv;           /* another sink's state */
	char description[512]; /* what open made, for the daemon's start message */
};

/* spec: a path (created if missing), or "fd:N" for an inherited descriptor. */
extern const struct syncd_sink_ops syncd_file_sink;
/*
 * spec: options, comma-separated (syncd-vulkan.c, dirty-syncd(1)); built with
 * the meson option vulkan, else its open says so (-ENODEV).
 */
extern const struct syncd_sink_ops syncd_vulkan_sink;
/* The sink of that name ("file", "vulkan"), or NULL. */
const struct syncd_sink_ops *syncd_sink_find(const char *name);

/* Write len bytes of buf at offset of fd, whole (EINTR and short writes retried).  0 or -errno. */
int syncd_pwrite_all(int fd, const void *buf, size_t len, uint64_t offset);

#endif
