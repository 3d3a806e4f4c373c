/* SPDX-License-Identifier: MIT */
/* The dirty-syncd socket protocol: framing and descriptor passing. */
#include <endian.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "syncd-proto.h"

_Static_assert(sizeof(struct syncd_msg) == 48, "the wire size is fixed");

static void to_wire(struct syncd_msg *w, const struct syncd_msg *m)
{
	w->magic = htole32(m->magic);
	w->version = htole16(m->version);
	w->type = htole16(m->type);
	w->status = (int32_t)htole32((uint32_t)m->status);
	w->reserved = 0;
	w->a = htole64(m->a);
	w->b = htole64(m->b);
	w->c = htole64(m->c);
	w->d = htole64(m->d);
}

static void from_wire(struct syncd_msg *m, const struct syncd_msg *w)
{
	m->magic = le32toh(w->magic);
	m->version = le16toh(w->version);
	m->type = le16toh(w->type);
	m->status = (int32_t)le32toh((uint32_t)w->status);
	m->reserved = le32toh(w->reserved);
	m->a = le64toh(w->a);
	m->b = le64toh(w->b);
	m->c = le64toh(w->c);
	m->d = le64toh(w->d);
}

int syncd_parse(const void *buf, size_t len, int msg_flags, struct syncd_msg *m)
{
	struct syncd_msg wire, host;

	if (len != sizeof(wire) || (msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
		return -EPROTO;
	memcpy(&wire, buf, sizeof(wire));
	from_wire(&host, &wire);
	if (host.magic != SYNCD_MAGIC || host.version != SYNCD_VERSION)
		return -EPROTO;
	*m = host;
	return 0;
}

int syncd_check_register(const struct syncd_msg *m, uint64_t size, uint64_t page_size)
{
	uint64_t addr = m->b, len = m->c, offset = m->d, end;

	if (!page_size || (page_size & (page_size - 1)))
		return -EINVAL;
	if (!len || ((addr | len | offset) & (page_size - 1)) || offset > size ||
	    len > size - offset || __builtin_add_overflow(addr, len, &end))
		return -EINVAL;
	return 0;
}

int syncd_send(int sock, const struct syncd_msg *m, int fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} control;
	struct syncd_msg wire;
	struct iovec iov = { .iov_base = &wire, .iov_len = sizeof(wire) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	to_wire(&wire, m);
	if (fd >= 0) {
		struct cmsghdr *cmsg;

		memset(&control, 0, sizeof(control));
		msg.msg_control = control.buf;
		msg.msg_controllen = sizeof(control.buf);
		cmsg = CMSG_FIRSTHDR(&msg);
		cmsg->cmsg_level = SOL_SOCKET;
		cmsg->cmsg_type = SCM_RIGHTS;
		cmsg->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
	}
	do
		n = sendmsg(sock, &msg, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return n == (ssize_t)sizeof(wire) ? 0 : -EPROTO;
}

int syncd_recv(int sock, struct syncd_msg *m, int *fd)
{
	union {
		char buf[CMSG_SPACE(4 * sizeof(int))];
		struct cmsghdr align;
	} control;
	struct syncd_msg wire;
	struct iovec iov = { .iov_base = &wire, .iov_len = sizeof(wire) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
			      .msg_control = control.buf, .msg_controllen = sizeof(control.buf) };
	int got = -1;
	ssize_t n;

	if (fd)
		*fd = -1;
	do
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	/* keep the first descriptor; close any other a confused peer sent */
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
			int one;

			memcpy(&one, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (got < 0)
				got = one;
			else
				close(one);
		}
	}
	if (n == 0 && got < 0)
		return 0;
	if (syncd_parse(&wire, (size_t)n, msg.msg_flags, m))
		goto bad;
	if (fd)
		*fd = got;
	else if (got >= 0)
		close(got);
	return 1;
bad:
	if (got >= 0)
		close(got);
	return -EPROTO;
}

int syncd_call(int sock, uint16_t type, uint64_t a, uint64_t b, uint64_t c, uint64_t d,
	       int fd, struct syncd_msg *reply, int *reply_fd)
{
	struct syncd_msg m = { .magic = SYNCD_MAGIC, .version = SYNCD_VERSION, .type = type,
			       .a = a, .b = b, .c = c, .d = d };
	int err = syncd_send(sock, &m, fd);

	if (err)
		return err;
	err = syncd_recv(sock, reply, reply_fd);
	if (err <= 0)
		return err ? err : -ECONNRESET;
	if (reply->type != (type | SYNCD_REPLY)) {
		if (reply_fd && *reply_fd >= 0) {
			close(*reply_fd);
			*reply_fd = -1;
		}
		return -EPROTO;
	}
	return reply->status;
}

int syncd_address(const char *path, struct sockaddr_un *addr, socklen_t *len)
{
	size_t n = strlen(path);

	if (!n || n >= sizeof(addr->sun_path))
		return -ENAMETOOLONG;
	memset(addr, 0, sizeof(*addr));
	addr->sun_family = AF_UNIX;
	memcpy(addr->sun_path, path, n);
	if (path[0] == '@')
		addr->sun_path[0] = 0; /* abstract: the length says where the name ends */
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (path[0] != '@'));
	return 0;
}

/* A SOCK_SEQPACKET socket connected to path, or listening there. */
static int seqpacket_socket(const char *path, bool listening)
{
	struct sockaddr_un addr;
	socklen_t len;
	int sock, err = syncd_address(path, &addr, &len);

	if (err)
		return err;
	sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (sock < 0)
		return -errno;
	if (listening && path[0] != '@')
		unlink(path); /* a stale socket of an earlier run */
	if (listening ? bind(sock, (struct sockaddr *)&addr, len) || listen(sock, 64)
		      : connect(sock, (struct sockaddr *)&addr, len)) {
		err = -errno;
		close(sock);
		return err;
	}
	return sock;
}

int syncd_connect(const char *path)
{
	return seqpacket_socket(path, false);
}

int syncd_listen(const char *path)
{
	return seqpacket_socket(path, true);
}
