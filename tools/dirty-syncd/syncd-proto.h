/* SPDX-License-Identifier: MIT */
/*
 * The dirty-syncd socket protocol, shared by the daemon (dirty-syncd.c)
 * and its clients (tests/test-syncd.c).  See dirty-syncd.c and dirty-syncd(1)
 * for what each message means.
 *
 * A SOCK_SEQPACKET Unix socket: every message is one struct syncd_msg
 * (48 bytes, integers little-endian), and a reply carries the request's type
 * with SYNCD_REPLY set.  Descriptors travel as SCM_RIGHTS with the message.
 */
#ifndef SYNCD_PROTO_H
#define SYNCD_PROTO_H

#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#define SYNCD_MAGIC 0x4e595344u /* "DSYN" */
#define SYNCD_VERSION 1

enum syncd_type {
	SYNCD_HELLO = 1,    /* -> a: version; <- a: buffer size, b: page size,
	                       c: mode, d: flushes so far; the buffer's fd attached */
	SYNCD_REGISTER = 2, /* -> a: pid, b: address, c: length, d: file offset;
	                       cooperative mode: the producer's uffd attached;
	                       <- status, once tracked */
	SYNCD_FLUSH = 3,    /* -> nothing; <- a: bytes copied, b: runs, c: flush
	                       number, d: bytes copied since the daemon started */
	SYNCD_BYE = 4,      /* -> nothing; <- as FLUSH, after this client's last
	                       collect; then the daemon closes the connection */
	SYNCD_UNREGISTER = 5, /* -> a: address, b: length of a registered range,
	                         before the producer unmaps it; <- as FLUSH */
	SYNCD_FLUSHED = 6,  /* -> a: 0 (wait for the next flush) or SYNCD_FLUSHED_NOW;
	                       <- once the sink (the device) has every write the
	                       client made before sending it: a: flush number,
	                       b: bytes copied (the regions'), c: bytes of the dirty
	                       runs, d: runs and regions (syncd_flushed_runs(),
	                       syncd_flushed_regions()).  The daemon reads nothing
	                       more from the client until it has replied. */
	SYNCD_READBACK = 7, /* -> a writable file attached (a memfd); <- a: bytes
	                       written to it from offset 0: what the sink holds, the
	                       buffer's size (-EPERM unless the daemon runs with
	                       --readback) */
};
#define SYNCD_REPLY 0x80u
/* FLUSHED: flush at once, as FLUSH does, rather than with the next flush */
#define SYNCD_FLUSHED_NOW 0x1u

enum syncd_mode { SYNCD_MODE_MAPPING = 1, SYNCD_MODE_COOPERATIVE = 2 };

/* In host byte order once received (syncd_recv() converts). */
struct syncd_msg {
	uint32_t magic;
	uint16_t version;
	uint16_t type;
	int32_t status; /* replies: 0 or -errno */
	uint32_t reserved;
	uint64_t a, b, c, d;
};

/* The runs and the regions of a flush, in the d of a FLUSHED reply (each saturates at 2^32 - 1). */
static inline uint64_t syncd_flushed_counts(uint64_t runs, uint64_t regions)
{
	return (runs > UINT32_MAX ? UINT32_MAX : runs) |
	       (regions > UINT32_MAX ? UINT32_MAX : regions) << 32;
}

static inline uint64_t syncd_flushed_runs(const struct syncd_msg *reply)
{
	return reply->d & UINT32_MAX;
}

static inline uint64_t syncd_flushed_regions(const struct syncd_msg *reply)
{
	return reply->d >> 32;
}

/*
 * Parse one received message: len bytes of buf, msg_flags as recvmsg() left
 * them.  0 with *m in host byte order, or -EPROTO (not exactly one whole
 * message of our magic and version).
 */
int syncd_parse(const void *buf, size_t len, int msg_flags, struct syncd_msg *m);
/*
 * The arguments of a REGISTER (a: pid, b: address, c: length, d: offset)
 * against a buffer of size bytes in pages of page_size (a power of two):
 * 0, or -EINVAL (empty, unaligned, wrapping, or outside the buffer).
 */
int syncd_check_register(const struct syncd_msg *m, uint64_t size, uint64_t page_size);
/* Send m, with fd attached if fd >= 0.  0 or -errno (-EAGAIN: a non-blocking socket is full). */
int syncd_send(int sock, const struct syncd_msg *m, int fd);
/*
 * Receive one message.  1 on a message, 0 on end of file, -errno on error
 * (-EPROTO: not a protocol message).  *fd (may be NULL: then any descriptor is
 * closed) receives an attached descriptor, close-on-exec, or -1.
 */
int syncd_recv(int sock, struct syncd_msg *m, int *fd);
/* Send a request of type and wait for its reply.  The reply's status or -errno. */
int syncd_call(int sock, uint16_t type, uint64_t a, uint64_t b, uint64_t c, uint64_t d,
	       int fd, struct syncd_msg *reply, int *reply_fd);
/*
 * The address of path: a file system path, or "@name" for a name in the
 * abstract namespace (no file; for guests without a writable directory).
 */
struct sockaddr_un;
int syncd_address(const char *path, struct sockaddr_un *addr, socklen_t *len);
/* A connected client socket, or -errno. */
int syncd_connect(const char *path);
/* The daemon's listening socket (a stale socket file is replaced), or -errno. */
int syncd_listen(const char *path);

#endif
