/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer: dirty-syncd's message parser (tools/dirty-syncd/syncd-proto.c): the bytes
 * as one datagram on a SOCK_SEQPACKET socket pair, with 0 to 3 descriptors
 * attached, through syncd_recv(), the daemon's own receive path; and
 * syncd_parse() and syncd_check_register() directly.  Whatever the input: no
 * crash, no descriptor leaked, a message accepted only if it is exactly one
 * of ours, and a REGISTER range accepted only if it lies in the buffer.
 *
 * Input: byte 0 (bits 0-1: descriptors to attach; bits 2-7: the buffer's
 * size in pages, for the REGISTER checks), then the datagram.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "syncd-proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * The lowest free descriptor: a descriptor received and not closed would
 * take it (the kernel gives the lowest), so it moves if one leaked.
 */
static int lowest_free(int any)
{
	int fd = dup(any);

	if (fd < 0)
		abort();
	close(fd);
	return fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int pair[2] = { -1, -1 }, null_fd = -1;
	union {
		char buf[CMSG_SPACE(3 * sizeof(int))];
		struct cmsghdr align;
	} control;
	struct iovec iov;
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct syncd_msg m, direct;
	int fds[3], nfds, before, got = -1, err, parsed;
	uint64_t buffer_pages;

	if (size < 1 || size > 4096)
		return 0;
	if (pair[0] < 0 && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair))
		abort();
	if (null_fd < 0 && (null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0)
		abort();
	nfds = data[0] & 3;
	buffer_pages = data[0] >> 2;
	iov.iov_base = (void *)(data + 1);
	iov.iov_len = size - 1;
	if (nfds) {
		struct cmsghdr *c;

		for (int i = 0; i < nfds; i++)
			fds[i] = null_fd;
		memset(&control, 0, sizeof(control));
		msg.msg_control = control.buf;
		msg.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
		c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
		memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
	}
	before = lowest_free(null_fd);
	if (sendmsg(pair[1], &msg, MSG_NOSIGNAL) != (ssize_t)(size - 1))
		abort();
	err = syncd_recv(pair[0], &m, &got);
	parsed = syncd_parse(data + 1, size - 1, 0, &direct);
	/* a zero-length datagram without descriptors reads as end of file */
	if (size - 1 == 0 && !nfds) {
		if (err != 0)
			abort();
	} else if (err == 1) {
		if (parsed || memcmp(&m, &direct, sizeof(m)) || size - 1 != sizeof(struct syncd_msg))
			abort();
		if (m.magic != SYNCD_MAGIC || m.version != SYNCD_VERSION)
			abort();
		if ((got >= 0) != (nfds > 0))
			abort(); /* the first descriptor is handed over, the others closed */
	} else {
		if (err != -EPROTO || got != -1 || (!parsed && size - 1 == sizeof(struct syncd_msg)))
			abort();
	}
	if (got >= 0)
		close(got);
	if (lowest_free(null_fd) != before)
		abort(); /* every descriptor received was closed or handed over */
	if (!parsed && !syncd_check_register(&direct, buffer_pages * 4096, 4096)) {
		uint64_t addr = direct.b, len = direct.c, offset = direct.d;

		if (!len || addr % 4096 || len % 4096 || offset % 4096 || offset + len < offset ||
		    offset + len > buffer_pages * 4096 || addr + len < addr)
			abort();
	}
	return 0;
}
