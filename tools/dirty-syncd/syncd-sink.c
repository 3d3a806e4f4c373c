/* SPDX-License-Identifier: MIT */
/* The file sink of dirty-syncd: pwrite(2) into a file or memfd. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "syncd-sink.h"

static int file_open(struct syncd_sink *s, const char *spec, uint64_t size)
{
	struct stat st;
	int fd, err;

	if (!strncmp(spec, "fd:", 3)) {
		char *end;
		long n = strtol(spec + 3, &end, 10);

		if (end == spec + 3 || *end || n < 0 || n > 1 << 20)
			return -EINVAL;
		fd = (int)n;
		if (fcntl(fd, F_SETFD, FD_CLOEXEC))
			return -errno;
	} else {
		fd = open(spec, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
		if (fd < 0)
			return -errno;
	}
	if (fstat(fd, &st)) {
		err = -errno;
		goto fail;
	}
	/* a regular file (memfds are) is sized to the buffer; a device is what it is */
	if (S_ISREG(st.st_mode) && (uint64_t)st.st_size != size && ftruncate(fd, (off_t)size)) {
		err = -errno;
		goto fail;
	}
	s->fd = fd;
	s->size = size;
	return 0;
fail:
	close(fd);
	return err;
}

static int file_write_run(struct syncd_sink *s, uint64_t offset, const void *src, size_t len)
{
	const char *p = src;

	if (offset > s->size || len > s->size - offset)
		return -ERANGE;
	while (len) {
		ssize_t n = pwrite(s->fd, p, len, (off_t)offset);

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

/* The page cache is the "device" here: a pwrite is in place when it returns. */
static int file_flush(struct syncd_sink *s)
{
	(void)s;
	return 0;
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
	.write_run = file_write_run,
	.flush = file_flush,
	.close = file_close,
};
