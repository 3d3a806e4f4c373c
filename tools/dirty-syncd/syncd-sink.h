/* SPDX-License-Identifier: MIT */
/*
 * Where dirty-syncd copies the dirty runs: a sink.  The file sink (pwrite
 * into a regular file or a memfd) stands in for device memory; a GPU upload
 * would be another struct syncd_sink_ops (open: allocate the device buffer;
 * write_run: queue a copy; flush: submit and fence; close: release).
 */
#ifndef SYNCD_SINK_H
#define SYNCD_SINK_H

#include <stddef.h>
#include <stdint.h>

struct syncd_sink;

struct syncd_sink_ops {
	const char *name;
	/* Open the sink named by spec, size bytes long.  0 or -errno. */
	int (*open)(struct syncd_sink *s, const char *spec, uint64_t size);
	/* Copy [src, src + len) to offset of the sink.  0 or -errno. */
	int (*write_run)(struct syncd_sink *s, uint64_t offset, const void *src, size_t len);
	/* Every run written so far is in the sink once this returns.  0 or -errno. */
	int (*flush)(struct syncd_sink *s);
	void (*close)(struct syncd_sink *s);
};

struct syncd_sink {
	const struct syncd_sink_ops *ops;
	uint64_t size;
	int fd;     /* the file sink's */
	void *priv; /* another sink's state */
};

/* spec: a path (created if missing), or "fd:N" for an inherited descriptor. */
extern const struct syncd_sink_ops syncd_file_sink;

#endif
