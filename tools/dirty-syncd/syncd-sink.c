/* SPDX-License-Identifier: MIT */
/* The file sink of dirty-syncd (pwrite(2) into a file or memfd), and the table of sinks. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "syncd-sink.h"

int syncd_pwrite_all(int fd, const void *buf, size_t len, uint64_t offset)
{
	const char *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)offset);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		p += n;
		offset += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

static int file_open(struct syncd_sink *s, const char *spec, char *why, size_t why_len)
{
	struct stat st;
	int fd, err;

	if (!strncmp(spec, "fd:", 3)) {
		char *end;
		long n = strtol(spec + 3, &end, 10);

		if (end == spec + 3 || *end || n < 0 || n > 1 << 20) {
			snprintf(why, why_len, "%s: not a descriptor number", spec);
			return -EINVAL;
		}
		fd = (int)n;
		if (fcntl(fd, F_SETFD, FD_CLOEXEC)) {
			err = -errno;
			snprintf(why, why_len, "%s: %s", spec, strerror(errno));
			return err;
		}
	} else {
		fd = open(spec, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
		if (fd < 0) {
			err = -errno;
			snprintf(why, why_len, "%s: %s", spec, strerror(errno));
			return err;
		}
	}
	/* a regular file (memfds are) is sized to the buffer; a device is what it is */
	if (fstat(fd, &st) ||
	    (S_ISREG(st.st_mode) && (uint64_t)st.st_size != s->size && ftruncate(fd, (off_t)s->size))) {
		err = -errno;
		snprintf(why, why_len, "%s: %s", spec, strerror(errno));
		close(fd);
		return err;
	}
	s->fd = fd;
	snprintf(s->description, sizeof(s->description), "%s", spec);
	return 0;
}

/* The page cache is the "device" here: a pwrite is in place when it returns. */
static int file_upload(struct syncd_sink *s, const struct syncd_region *regions, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int err;

		if (regions[i].offset > s->size || regions[i].len > s->size - regions[i].offset)
			return -ERANGE;
		err = syncd_pwrite_all(s->fd, s->src->map + regions[i].offset, regions[i].len,
				       regions[i].offset);
		if (err)
			return err;
	}
	return 0;
}

static int file_read_back(struct syncd_sink *s, int fd)
{
	size_t chunk = 1 << 20;
	char *buf = malloc(chunk);
	int err = 0;

	if (!buf)
		return -ENOMEM;
	for (uint64_t at = 0; !err && at < s->size;) {
		ssize_t n = pread(s->fd, buf, s->size - at < chunk ? (size_t)(s->size - at) : chunk,
				  (off_t)at);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			err = n ? -errno : -EIO;
			break;
		}
		err = syncd_pwrite_all(fd, buf, (size_t)n, at);
		at += (uint64_t)n;
	}
	free(buf);
	return err;
}

static void file_close(struct syncd_sink *s)
{
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
}

const struct syncd_sink_ops syncd_file_sink = {
	.name = "file",
	.open = file_open,
	.upload = file_upload,
	.read_back = file_read_back,
	.close = file_close,
};

const struct syncd_sink_ops *syncd_sink_find(const char *name)
{
	static const struct syncd_sink_ops *const sinks[] = { &syncd_file_sink, &syncd_vulkan_sink };

	for (size_t i = 0; i < sizeof(sinks) / sizeof(sinks[0]); i++)
		if (!strcmp(sinks[i]->name, name))
			return sinks[i];
	return NULL;
}

#if !SYNCD_HAVE_VULKAN
/* Built without the Vulkan loader's headers: the sink exists to say so. */
static int vulkan_absent_open(struct syncd_sink *s, const char *spec, char *why, size_t why_len)
{
	(void)s;
	(void)spec;
	snprintf(why, why_len, "dirty-syncd was built without Vulkan (the meson option vulkan, "
		 "and the loader's headers: Debian's libvulkan-dev)");
	return -ENODEV;
}

const struct syncd_sink_ops syncd_vulkan_sink = {
	.name = "vulkan",
	.open = vulkan_absent_open,
};
#endif
