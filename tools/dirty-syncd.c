/* SPDX-License-Identifier: MIT */
/*
 * dirty-syncd: a reference buffer sync daemon.  A thin user of the public API.
 *
 * Producers (other processes) map a shared buffer and write to it; the daemon
 * keeps a sink (a file standing in for device memory) equal to the buffer by
 * copying only the pages written since the last copy.  Each --interval, and
 * whenever a client asks for a flush, it collects-and-cleans the dirty pages
 * and copies the dirty runs from its own mapping of the buffer to the sink.
 *
 * Modes
 *   mapping      the "mapping" backend (/dev/dirtymap): one tracker tracks
 *                the buffer file and sees the writes of every process that
 *                maps it (dirty_track_file(), dirty_collect_file_bitmap()).
 *   cooperative  uffd-async, one tracker per producer: each producer makes a
 *                userfaultfd (dirty_userfaultfd_share()) and sends it with its
 *                pid and the address, length and file offset of its mapping;
 *                the daemon tracks that range of the producer
 *                (DIRTY_TRACKER_GIVEN_UFFD) and, at each collect, unions the
 *                runs of every producer, converted to file offsets.
 *   auto         mapping if dirty_backend_probe("mapping") says it can run,
 *                else cooperative.
 *
 * Protocol (tools/syncd-proto.h): a SOCK_SEQPACKET Unix socket at --socket;
 * every message is one fixed 48-byte struct syncd_msg { u32 magic "DSYN",
 * u16 version 1, u16 type, s32 status, u32 reserved, u64 a, b, c, d },
 * integers little-endian; a reply has the request's type | 0x80 and status
 * 0 or -errno.  Descriptors travel as SCM_RIGHTS.
 *   HELLO     -> a = version
 *             <- a = buffer size, b = page size, c = mode (1 mapping,
 *                2 cooperative), d = flushes so far; the buffer's fd attached
 *   REGISTER  -> a = pid, b = address, c = length, d = file offset of the
 *                producer's shared mapping of the buffer (page aligned);
 *                cooperative: the producer's uffd attached (needed on the
 *                first REGISTER of a connection).  The reply comes once the
 *                range is tracked: the producer must not write to it before.
 *                The pid must be the connecting process's (SO_PEERCRED), and
 *                its /proc/PID/maps must show the buffer at that offset.
 *   FLUSH     <- a = bytes copied, b = runs copied, c = flush number,
 *                d = bytes copied since start.  Sent after the copy: every
 *                write a client made before sending FLUSH is in the sink.
 *   UNREGISTER -> a = address, b = length of a registered range that the
 *                producer has stopped writing and will unmap; <- as FLUSH,
 *                once its last collect is copied and it is untracked
 *                (-ENOENT: no such range).  Unmapping a registered range
 *                without it costs a whole copy of the range in cooperative
 *                mode, and loses writes in mapping mode on the module (it
 *                drops them with the page tables, and nothing tells the
 *                daemon); a kernel that records every write keeps them.
 *   BYE       <- as FLUSH: the client's last collect is copied, its trackers
 *                freed; then the daemon closes the connection.
 *
 * Clients that misbehave cannot stall the others.  Sockets are non-blocking:
 * a reply that does not fit in the client's socket waits in a queue of
 * REPLY_QUEUE replies, and a client whose queue is full (it sends requests
 * and does not read the answers) is dropped, as a producer that went away.
 * A client that has registered nothing and sent nothing for --idle-timeout
 * seconds is dropped too (registered producers may stay silent: their writes
 * are tracked without a word).  At most --max-per-uid connections per peer
 * uid (SO_PEERCRED) and --max-clients in all; more are accepted and closed
 * at once.  Each drop and refusal is logged (--json: drop and refuse events).
 *
 * A producer that goes without BYE (crash, kill, close) takes the dirty state
 * that was not yet collected with it (its page tables are gone), unless the
 * kernel records every write (mapping mode, DIRTY_SEES_GONE_MAPPINGS): the daemon
 * then copies every range that producer registered, whole (the whole buffer
 * for a client of mapping mode that registered none), after a last collect
 * of its tracker in cooperative mode.  A collect that fails with -ESRCH or
 * -ESTALE (the producer exited or unmapped) is handled the same way.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "libdirty.h"
#include "syncd-proto.h"
#include "syncd-sink.h"

#define MAX_RANGES 16 /* per client */
#define REPLY_QUEUE 64 /* replies waiting for a client that does not read */
#define ACCEPT_BATCH 64 /* connections accepted per turn of the loop */

struct producer_range {
	uint64_t addr, len, offset;
};

struct queued_reply {
	struct syncd_msg m;
	int fd; /* the buffer's, which lives as long as the daemon, or -1 */
};

struct client {
	int sock;
	pid_t peer_pid;               /* SO_PEERCRED */
	uid_t peer_uid;
	uint64_t heard_ms;            /* when it last sent a message */
	bool has_buffer;              /* was sent the buffer's fd */
	bool closing;                 /* said BYE: closed once its replies are out */
	bool backlog_noted;           /* its first queued reply was logged */
	unsigned queue_head, queue_len;
	struct queued_reply queue[REPLY_QUEUE];
	struct dirty_tracker *tracker; /* cooperative */
	unsigned nranges;
	struct producer_range ranges[MAX_RANGES];
};

struct totals {
	uint64_t flushes, bytes, runs;
	uint64_t leave_bytes;  /* copied whole because a producer went away */
	uint64_t joined, left, gone;
	uint64_t dropped, refused;
};

static struct daemon {
	enum syncd_mode mode;
	bool json;
	int buffer_fd;
	uint64_t size;
	size_t page_size;
	const unsigned char *map;
	struct stat buffer_st;
	struct dirty_tracker *file_tracker; /* mapping */
	uint64_t *marked;                   /* pages to copy, one bit each */
	uint64_t *scratch;
	size_t nwords;
	struct syncd_sink sink;
	struct client **clients;            /* max_clients slots, NULL when free */
	size_t max_clients, nclients;
	unsigned max_per_uid;
	uint64_t idle_ms;                   /* 0: no idle timeout */
	bool sees_gone;                     /* mapping: the kernel records every write */
	bool accept_paused;                 /* out of descriptors: until a client leaves */
	struct totals total;
} d;

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
	stop_signal = sig;
}

/* A message on stderr; quiet ones are left out in --json mode. */
static void say(bool quiet, const char *fmt, va_list ap)
{
	if (quiet && d.json)
		return;
	fputs("dirty-syncd: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	say(true, fmt, ap);
	va_end(ap);
}

/* Errors are printed in --json mode too. */
static void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	say(false, fmt, ap);
	va_end(ap);
}

static void json_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void json_line(const char *fmt, ...)
{
	va_list ap;

	if (!d.json)
		return;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

/* ---- the pages to copy ---- */

static void mark_pages(uint64_t offset, uint64_t len)
{
	uint64_t first, end;

	if (offset >= d.size)
		return;
	if (len > d.size - offset)
		len = d.size - offset;
	first = offset / d.page_size;
	end = (offset + len + d.page_size - 1) / d.page_size;
	for (uint64_t p = first; p < end; p++)
		d.marked[p / 64] |= 1ull << (p % 64);
}

/* Copy the marked runs to the sink and unmark them. */
static int copy_marked(uint64_t *ret_bytes, uint64_t *ret_runs)
{
	uint64_t npages = d.size / d.page_size, bytes = 0, runs = 0, p = 0;
	int err = 0;

	while (p < npages) {
		uint64_t word = d.marked[p / 64] >> (p % 64), start;

		if (!word) {
			p = (p / 64 + 1) * 64;
			continue;
		}
		p += (uint64_t)__builtin_ctzll(word);
		start = p;
		while (p < npages && (d.marked[p / 64] >> (p % 64) & 1))
			p++;
		if (!err)
			err = d.sink.ops->write_run(&d.sink, start * d.page_size,
						    d.map + start * d.page_size,
						    (p - start) * d.page_size);
		bytes += (p - start) * d.page_size;
		runs++;
	}
	if (!err)
		err = d.sink.ops->flush(&d.sink);
	if (err) {
		/* keep the marks: the next flush tries again */
		warn("sink %s: %s", d.sink.ops->name, strerror(-err));
		return err;
	}
	memset(d.marked, 0, d.nwords * sizeof(*d.marked));
	*ret_bytes = bytes;
	*ret_runs = runs;
	return 0;
}

/* ---- collecting ---- */

struct mark_ctx {
	const struct producer_range *range;
};

static int mark_run(void *start, size_t len, void *userdata)
{
	const struct producer_range *r = ((struct mark_ctx *)userdata)->range;

	mark_pages(r->offset + ((uint64_t)(uintptr_t)start - r->addr), len);
	return 0;
}

static void mark_client_ranges(const struct client *c)
{
	for (unsigned i = 0; i < c->nranges; i++)
		mark_pages(c->ranges[i].offset, c->ranges[i].len);
}

/*
 * Collect-and-clean one producer's ranges into the marks.  0, or the errno of
 * the first range that failed: -ESRCH / -ESTALE mean the producer's mapping
 * is gone, and with it the record of its last writes.
 */
static int collect_range(struct client *c, unsigned i)
{
	struct mark_ctx ctx = { &c->ranges[i] };

	return dirty_collect_each(c->tracker, (void *)(uintptr_t)c->ranges[i].addr,
				  c->ranges[i].len, DIRTY_COLLECT_CLEAN, mark_run, &ctx);
}

static int collect_client(struct client *c)
{
	int first_err = 0;

	for (unsigned i = 0; c->tracker && i < c->nranges; i++) {
		int err = collect_range(c, i);

		if (err && !first_err)
			first_err = err;
	}
	return first_err;
}

/*
 * A producer went away (or its mapping did): copy all it had mapped, once;
 * in mapping mode on a kernel that records every write, nothing: its writes
 * are in the buffer's tracker.
 */
static void client_gone(struct client *c, const char *why)
{
	uint64_t bytes = 0;

	if (d.mode == SYNCD_MODE_MAPPING && d.sees_gone) {
		d.total.gone++;
		note("producer %d gone (%s): its writes are recorded", (int)c->peer_pid, why);
		json_line("{\"event\":\"gone\",\"pid\":%d,\"reason\":\"%s\",\"bytes\":0}",
			  (int)c->peer_pid, why);
		c->tracker = dirty_tracker_free(c->tracker);
		c->nranges = 0;
		c->has_buffer = false;
		return;
	}

	for (unsigned i = 0; i < c->nranges; i++)
		bytes += c->ranges[i].len;
	if (!c->nranges && c->has_buffer && d.mode == SYNCD_MODE_MAPPING) {
		/* it may have written anywhere, and no one knows where */
		mark_pages(0, d.size);
		bytes = d.size;
	}
	mark_client_ranges(c);
	d.total.leave_bytes += bytes;
	d.total.gone++;
	note("producer %d gone (%s): copying its %" PRIu64 " bytes whole", (int)c->peer_pid,
	     why, bytes);
	json_line("{\"event\":\"gone\",\"pid\":%d,\"reason\":\"%s\",\"bytes\":%" PRIu64 "}",
		  (int)c->peer_pid, why, bytes);
	c->tracker = dirty_tracker_free(c->tracker);
	c->nranges = 0;
	c->has_buffer = false;
}

static void collect_all(void)
{
	if (d.mode == SYNCD_MODE_MAPPING) {
		int err;

		memset(d.scratch, 0, d.nwords * sizeof(*d.scratch));
		err = dirty_collect_file_bitmap(d.file_tracker, d.buffer_fd, 0, d.size,
						DIRTY_COLLECT_CLEAN, d.scratch);
		if (err) {
			/* whatever the failure cleaned, a whole copy is right */
			warn("collect: %s; copying the whole buffer", strerror(-err));
			mark_pages(0, d.size);
			return;
		}
		for (size_t i = 0; i < d.nwords; i++)
			d.marked[i] |= d.scratch[i];
		return;
	}
	for (size_t i = 0; i < d.max_clients; i++) {
		struct client *c = d.clients[i];
		int err;

		if (!c || !c->tracker)
			continue;
		err = collect_client(c);
		if (err == -ESRCH || err == -ESTALE)
			client_gone(c, err == -ESRCH ? "exited" : "unmapped");
		else if (err) {
			/* unexpected: copy its ranges whole, which is always right */
			warn("collect of producer %d: %s; copying its ranges whole", (int)c->peer_pid,
			     strerror(-err));
			mark_client_ranges(c);
		}
	}
}

/* ---- clients ---- */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void client_close(size_t slot)
{
	struct client *c = d.clients[slot];

	dirty_tracker_free(c->tracker);
	close(c->sock);
	free(c);
	d.clients[slot] = NULL;
	d.nclients--;
	d.total.left++;
	d.accept_paused = false; /* a descriptor is free again */
}

/*
 * A client left without BYE.  In cooperative mode, one last collect while its
 * pages may still be there, then its ranges whole: the writes it made since
 * that collect, or that the collect could no longer see, are in the buffer.
 */
static void client_lost(size_t slot)
{
	struct client *c = d.clients[slot];

	if (c->tracker)
		(void)collect_client(c);
	if (c->nranges || (c->has_buffer && d.mode == SYNCD_MODE_MAPPING))
		client_gone(c, "disconnected");
	client_close(slot);
}

/* Drop a client that misbehaves: said, then as a client that left. */
static void client_drop(size_t slot, const char *reason)
{
	struct client *c = d.clients[slot];

	d.total.dropped++;
	warn("dropping client %d (uid %u): %s (%u replies unread)", (int)c->peer_pid,
	     (unsigned)c->peer_uid, reason, c->queue_len);
	json_line("{\"event\":\"drop\",\"pid\":%d,\"uid\":%u,\"reason\":\"%s\",\"queued\":%u}",
		  (int)c->peer_pid, (unsigned)c->peer_uid, reason, c->queue_len);
	client_lost(slot);
}

/* Send the queued replies that fit now.  false: the client is gone (closed here). */
static bool client_drain(size_t slot)
{
	struct client *c = d.clients[slot];

	while (c->queue_len) {
		struct queued_reply *q = &c->queue[c->queue_head];
		int err = syncd_send(c->sock, &q->m, q->fd);

		if (err == -EAGAIN || err == -EWOULDBLOCK)
			return true;
		if (err) {
			client_lost(slot);
			return false;
		}
		c->queue_head = (c->queue_head + 1) % REPLY_QUEUE;
		c->queue_len--;
	}
	if (c->closing) {
		client_close(slot);
		return false;
	}
	return true;
}

/*
 * Reply, without ever waiting for the client: what its socket cannot take
 * now waits in its queue, and a client whose queue is full does not read
 * its replies and is dropped.  false: the client is gone (closed here).
 */
static bool client_reply(size_t slot, const struct syncd_msg *reply, int fd)
{
	struct client *c = d.clients[slot];

	if (!c->queue_len) {
		int err = syncd_send(c->sock, reply, fd);

		if (!err)
			return true;
		if (err != -EAGAIN && err != -EWOULDBLOCK) {
			client_lost(slot); /* it hung up */
			return false;
		}
	}
	if (c->queue_len == REPLY_QUEUE) {
		client_drop(slot, "it does not read its replies");
		return false;
	}
	c->queue[(c->queue_head + c->queue_len) % REPLY_QUEUE] = (struct queued_reply){ *reply, fd };
	c->queue_len++;
	if (!c->backlog_noted) {
		c->backlog_noted = true;
		note("client %d (uid %u) is not reading its replies: queueing them (up to %d)",
		     (int)c->peer_pid, (unsigned)c->peer_uid, REPLY_QUEUE);
		json_line("{\"event\":\"backlog\",\"pid\":%d,\"uid\":%u}", (int)c->peer_pid,
			  (unsigned)c->peer_uid);
	}
	return true;
}

/* Drop the clients that hung up, but not except (the one being answered). */
static void sweep_hangups(size_t except)
{
	struct pollfd *pfd = calloc(d.nclients + 1, sizeof(*pfd));
	size_t *slot = calloc(d.nclients + 1, sizeof(*slot)), n = 0;

	for (size_t i = 0; pfd && slot && i < d.max_clients; i++) {
		if (!d.clients[i] || i == except)
			continue;
		pfd[n] = (struct pollfd){ .fd = d.clients[i]->sock, .events = POLLIN };
		slot[n++] = i;
	}
	if (n && poll(pfd, n, 0) > 0)
		for (size_t i = 0; i < n; i++)
			if (pfd[i].revents & (POLLHUP | POLLERR))
				client_lost(slot[i]);
	free(pfd);
	free(slot);
}

/*
 * Collect everything and copy.  A client's flush is answered after this:
 * the clients that hung up before it are swept first, so that a producer that
 * is known to be gone when the flush is sent has its pages in the sink.
 */
static int flush_now(size_t requester, uint64_t *ret_bytes, uint64_t *ret_runs)
{
	uint64_t bytes = 0, runs = 0;
	int err;

	sweep_hangups(requester);
	collect_all();
	err = copy_marked(&bytes, &runs);
	if (err)
		return err;
	d.total.flushes++;
	d.total.bytes += bytes;
	d.total.runs += runs;
	*ret_bytes = bytes;
	*ret_runs = runs;
	/* a failed collect was made up for by whole copies: the sink is exact */
	return 0;
}

/* A flush, said: for a client, once its reply is sent or queued (pid, queued). */
static void flush_said(const char *reason, const struct client *c, uint64_t bytes, uint64_t runs)
{
	if (!c && !bytes && !strcmp(reason, "interval"))
		return; /* idle ticks are not news */
	note("flush %" PRIu64 " (%s): %" PRIu64 " bytes in %" PRIu64 " runs", d.total.flushes,
	     reason, bytes, runs);
	if (c)
		json_line("{\"event\":\"flush\",\"flush\":%" PRIu64 ",\"reason\":\"%s\",\"bytes\":%"
			  PRIu64 ",\"runs\":%" PRIu64 ",\"pid\":%d,\"queued\":%u}", d.total.flushes,
			  reason, bytes, runs, (int)c->peer_pid, c->queue_len);
	else
		json_line("{\"event\":\"flush\",\"flush\":%" PRIu64 ",\"reason\":\"%s\",\"bytes\":%"
			  PRIu64 ",\"runs\":%" PRIu64 "}", d.total.flushes, reason, bytes, runs);
}

/* Producers that left marked their ranges: copy them now, not at the next flush. */
static void copy_leftovers(void)
{
	uint64_t bytes, runs;

	for (size_t i = 0; i < d.nwords; i++) {
		if (!d.marked[i])
			continue;
		if (copy_marked(&bytes, &runs))
			return;
		d.total.bytes += bytes;
		d.total.runs += runs;
		note("copied %" PRIu64 " bytes in %" PRIu64 " runs for producers that went away",
		     bytes, runs);
		json_line("{\"event\":\"copy\",\"reason\":\"gone\",\"bytes\":%" PRIu64
			  ",\"runs\":%" PRIu64 "}", bytes, runs);
		return;
	}
}

/* Is [addr, addr + len) of pid a shared mapping of the buffer at offset? */
static int check_mapping(pid_t pid, uint64_t addr, uint64_t len, uint64_t offset)
{
	char path[64], line[512];
	uint64_t covered = addr;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? -ESRCH : -errno;
	while (covered < addr + len && fgets(line, sizeof(line), f)) {
		unsigned long long start, end, off, ino;
		unsigned maj, min;
		char perms[8];

		if (sscanf(line, "%llx-%llx %7s %llx %x:%x %llu", &start, &end, perms, &off, &maj,
			   &min, &ino) != 7)
			continue;
		if (end <= covered || start > covered)
			continue;
		if (perms[3] != 's' || makedev(maj, min) != d.buffer_st.st_dev ||
		    ino != d.buffer_st.st_ino || off + (covered - start) != offset + (covered - addr))
			break;
		covered = end;
	}
	fclose(f);
	return covered >= addr + len ? 0 : -EINVAL;
}

static int do_register(struct client *c, const struct syncd_msg *m, int fd)
{
	uint64_t addr = m->b, len = m->c, offset = m->d;
	struct producer_range *r;
	int err;

	if ((pid_t)m->a != c->peer_pid)
		return -EPERM; /* only the connecting process registers itself */
	if (syncd_check_register(m, d.size, d.page_size))
		return -EINVAL;
	if (c->nranges == MAX_RANGES)
		return -ENOSPC;
	for (unsigned i = 0; i < c->nranges; i++)
		if (addr < c->ranges[i].addr + c->ranges[i].len &&
		    c->ranges[i].addr < addr + len)
			return -EEXIST;
	err = check_mapping(c->peer_pid, addr, len, offset);
	if (err)
		return err;
	if (d.mode == SYNCD_MODE_COOPERATIVE) {
		if (!c->tracker) {
			struct dirty_options o = {
				.sz = sizeof(o),
				.backend = "uffd-async",
				.pid = c->peer_pid,
				.flags = DIRTY_TRACKER_GIVEN_UFFD,
				.uffd = fd,
			};

			if (fd < 0)
				return -EBADF;
			err = dirty_tracker_new(&o, &c->tracker);
			if (err)
				return err;
		}
		err = dirty_track(c->tracker, (void *)(uintptr_t)addr, len);
		if (err)
			return err;
	}
	r = &c->ranges[c->nranges++];
	*r = (struct producer_range){ addr, len, offset };
	d.total.joined++;
	note("producer %d: tracking %#" PRIx64 "+%" PRIu64 " at offset %" PRIu64,
	     (int)c->peer_pid, addr, len, offset);
	json_line("{\"event\":\"register\",\"pid\":%d,\"address\":%" PRIu64 ",\"length\":%" PRIu64
		  ",\"offset\":%" PRIu64 "}", (int)c->peer_pid, addr, len, offset);
	return 0;
}

/*
 * The producer will unmap a range: collect it one last time (cooperative) and
 * stop tracking it.  The flush that follows copies it; in mapping mode that
 * flush is what saves the writes the unmap would drop.
 */
static int do_unregister(struct client *c, const struct syncd_msg *m)
{
	unsigned i;

	for (i = 0; i < c->nranges; i++)
		if (c->ranges[i].addr == m->a && c->ranges[i].len == m->b)
			break;
	if (i == c->nranges)
		return -ENOENT;
	if (c->tracker) {
		if (collect_range(c, i))
			mark_pages(c->ranges[i].offset, c->ranges[i].len);
		(void)dirty_untrack(c->tracker, (void *)(uintptr_t)m->a, m->b);
	}
	c->ranges[i] = c->ranges[--c->nranges];
	note("producer %d: untracking %#" PRIx64 "+%" PRIu64, (int)c->peer_pid, m->a, m->b);
	return 0;
}

/* Serve one message.  false: the client is gone (closed here). */
static bool serve(size_t slot)
{
	struct client *c = d.clients[slot];
	struct syncd_msg m, reply = { .magic = SYNCD_MAGIC, .version = SYNCD_VERSION };
	uint64_t bytes = 0, runs = 0;
	int fd = -1, attach = -1, n;
	const char *reason = NULL;
	bool flushed = false;

	n = syncd_recv(c->sock, &m, &fd);
	if (n == -EAGAIN || n == -EWOULDBLOCK)
		return true; /* nothing after all */
	if (n <= 0) {
		if (n < 0 && n != -ECONNRESET)
			warn("client %d: %s", (int)c->peer_pid, strerror(-n));
		client_lost(slot);
		return false;
	}
	c->heard_ms = now_ms();
	reply.type = (uint16_t)(m.type | SYNCD_REPLY);
	switch (m.type) {
	case SYNCD_HELLO:
		reply.a = d.size;
		reply.b = d.page_size;
		reply.c = d.mode;
		reply.d = d.total.flushes;
		attach = d.buffer_fd;
		c->has_buffer = true;
		break;
	case SYNCD_REGISTER:
		reply.status = do_register(c, &m, fd);
		if (reply.status)
			warn("producer %d: register refused: %s", (int)c->peer_pid,
			     strerror(-reply.status));
		break;
	case SYNCD_FLUSH:
	case SYNCD_BYE:
	case SYNCD_UNREGISTER:
		if (m.type == SYNCD_UNREGISTER) {
			reply.status = do_unregister(c, &m);
			if (reply.status)
				break;
		}
		if (m.type == SYNCD_BYE) {
			/* it has stopped writing: its last collect is exact */
			if (c->tracker && collect_client(c))
				mark_client_ranges(c); /* or, if that failed, a whole copy */
			c->tracker = dirty_tracker_free(c->tracker);
			c->nranges = 0;
			c->has_buffer = false;
		}
		reason = m.type == SYNCD_BYE ? "bye" : m.type == SYNCD_FLUSH ? "request" : "unregister";
		reply.status = flush_now(slot, &bytes, &runs);
		flushed = !reply.status;
		reply.a = bytes;
		reply.b = runs;
		reply.c = d.total.flushes;
		reply.d = d.total.bytes;
		break;
	default:
		reply.status = -EOPNOTSUPP;
		break;
	}
	if (fd >= 0)
		close(fd); /* a tracker keeps its own duplicate */
	if (!client_reply(slot, &reply, attach))
		return false;
	if (flushed)
		flush_said(reason, c, bytes, runs);
	if (m.type == SYNCD_BYE) {
		/* closed once the reply is out; a client that never takes it goes idle */
		c->closing = true;
		return client_drain(slot);
	}
	return true;
}

/* The connections of uid now. */
static unsigned uid_connections(uid_t uid)
{
	unsigned n = 0;

	for (size_t i = 0; i < d.max_clients; i++)
		n += d.clients[i] && d.clients[i]->peer_uid == uid;
	return n;
}

/* Refuse a connection: closed at once, said (the first, then at each power of two). */
static void refuse(int sock, const struct ucred *cred, const char *why)
{
	d.total.refused++;
	close(sock);
	if (!(d.total.refused & (d.total.refused - 1)))
		warn("refusing a connection of pid %d (uid %u): %s (%" PRIu64 " refused so far)",
		     (int)cred->pid, (unsigned)cred->uid, why, d.total.refused);
	json_line("{\"event\":\"refuse\",\"pid\":%d,\"uid\":%u,\"reason\":\"%s\",\"refused\":%"
		  PRIu64 "}", (int)cred->pid, (unsigned)cred->uid, why, d.total.refused);
}

/* Accept what is waiting, up to a batch, within the limits. */
static void accept_clients(int listen_fd)
{
	for (int k = 0; k < ACCEPT_BATCH; k++) {
		struct ucred cred = { .pid = 0, .uid = (uid_t)-1 };
		socklen_t cred_len = sizeof(cred);
		struct client *c;
		size_t slot;
		int sock = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

		if (sock < 0) {
			if (errno == EMFILE || errno == ENFILE) {
				/* the connection waits in the backlog until a client leaves */
				warn("out of file descriptors (%s): not accepting until a client leaves",
				     strerror(errno));
				d.accept_paused = true;
			}
			return;
		}
		if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len)) {
			refuse(sock, &cred, "no peer credentials");
			continue;
		}
		if (d.nclients == d.max_clients) {
			refuse(sock, &cred, "too many clients");
			continue;
		}
		if (uid_connections(cred.uid) >= d.max_per_uid) {
			refuse(sock, &cred, "too many connections of its uid");
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			refuse(sock, &cred, "out of memory");
			continue;
		}
		for (slot = 0; d.clients[slot]; slot++)
			;
		c->sock = sock;
		c->peer_pid = cred.pid;
		c->peer_uid = cred.uid;
		c->heard_ms = now_ms();
		d.clients[slot] = c;
		d.nclients++;
	}
}

/*
 * Drop the clients that registered nothing and said nothing for the idle
 * timeout.  Returns when the next one would be due (UINT64_MAX: none).
 */
static uint64_t drop_idle(uint64_t now)
{
	uint64_t next = UINT64_MAX;

	for (size_t i = 0; d.idle_ms && i < d.max_clients; i++) {
		struct client *c = d.clients[i];

		if (!c || c->nranges)
			continue; /* a registered producer may write without a word */
		if (now - c->heard_ms >= d.idle_ms)
			client_drop(i, "idle");
		else if (c->heard_ms + d.idle_ms < next)
			next = c->heard_ms + d.idle_ms;
	}
	return next;
}

/* ---- setup ---- */

static int parse_size(const char *s, uint64_t *ret)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	}
	if (*end == 'i' && end[1] == 'B')
		end += 2;
	if (*end)
		return -EINVAL;
	*ret = v;
	return 0;
}

static int open_buffer(const char *shm, uint64_t size)
{
	struct stat st;
	char path[PATH_MAX];

	if (shm) {
		snprintf(path, sizeof(path), "%s%s", strchr(shm, '/') ? "" : "/dev/shm/", shm);
		d.buffer_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	} else {
		d.buffer_fd = memfd_create("dirty-syncd-buffer", MFD_CLOEXEC);
	}
	if (d.buffer_fd < 0 || fstat(d.buffer_fd, &st))
		return -errno;
	if (!size)
		size = (uint64_t)st.st_size;
	if (!size || size % d.page_size)
		return -EINVAL;
	if ((uint64_t)st.st_size != size && ftruncate(d.buffer_fd, (off_t)size))
		return -errno;
	if (fstat(d.buffer_fd, &d.buffer_st))
		return -errno;
	d.size = size;
	d.map = mmap(NULL, size, PROT_READ, MAP_SHARED, d.buffer_fd, 0);
	if (d.map == MAP_FAILED)
		return -errno;
	d.nwords = (size / d.page_size + 63) / 64;
	d.marked = calloc(d.nwords, sizeof(*d.marked));
	d.scratch = calloc(d.nwords, sizeof(*d.scratch));
	return d.marked && d.scratch ? 0 : -ENOMEM;
}

static const char usage[] =
	"usage: dirty-syncd [--socket PATH] (--size SIZE | --shm NAME [--size SIZE])\n"
	"                   --sink PATH|fd:N [--mode auto|mapping|cooperative]\n"
	"                   [--interval MS] [--json] [--ready-fd N] [--idle-timeout S]\n"
	"                   [--max-clients N] [--max-per-uid N]\n"
	"Keeps the sink equal to a shared buffer by copying only its dirty pages.\n"
	"--socket is required unless a service manager passes the listening socket.\n"
	"See dirty-syncd(1).\n";

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "size", required_argument, NULL, 'S' },
		{ "shm", required_argument, NULL, 'm' },
		{ "sink", required_argument, NULL, 'k' },
		{ "mode", required_argument, NULL, 'M' },
		{ "interval", required_argument, NULL, 'i' },
		{ "json", no_argument, NULL, 'j' },
		{ "ready-fd", required_argument, NULL, 'r' },
		{ "idle-timeout", required_argument, NULL, 'I' },
		{ "max-clients", required_argument, NULL, 'C' },
		{ "max-per-uid", required_argument, NULL, 'U' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *socket_path = NULL, *shm = NULL, *sink = NULL, *mode = "auto";
	uint64_t size = 0, interval = 100, initial_bytes = 0, initial_runs = 0, deadline;
	uint64_t idle_s = 60, max_clients = 1024, max_per_uid = 64;
	struct pollfd *pfd;
	size_t *slot;
	int opt, err, listen_fd, ready_fd = -1;
	char why[256] = "";
	struct sigaction sa = { .sa_handler = on_signal };
	sigset_t block, empty;
	/* socket activation: the listening socket comes from the service manager */
	int inherited = syncd_listen_inherited();

	while ((opt = getopt_long(argc, argv, "s:S:m:k:M:i:jr:I:C:U:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 's': socket_path = optarg; break;
		case 'S':
			if (parse_size(optarg, &size) || !size)
				goto bad_usage;
			break;
		case 'm': shm = optarg; break;
		case 'k': sink = optarg; break;
		case 'M': mode = optarg; break;
		case 'i':
			if (parse_size(optarg, &interval))
				goto bad_usage;
			break;
		case 'j': d.json = true; break;
		case 'r': ready_fd = atoi(optarg); break;
		case 'I':
			if (parse_size(optarg, &idle_s) || idle_s > UINT32_MAX)
				goto bad_usage;
			break;
		case 'C':
			if (parse_size(optarg, &max_clients) || !max_clients || max_clients > 1 << 20)
				goto bad_usage;
			break;
		case 'U':
			if (parse_size(optarg, &max_per_uid) || !max_per_uid || max_per_uid > 1 << 20)
				goto bad_usage;
			break;
		case 'h': fputs(usage, stdout); return 0;
		default: goto bad_usage;
		}
	}
	if (inherited < 0 && inherited != -ENOENT) {
		fprintf(stderr, "dirty-syncd: the socket passed by the service manager (LISTEN_FDS): "
			"%s: one listening Unix SOCK_SEQPACKET socket is expected\n",
			strerror(-inherited));
		return 1;
	}
	if (optind != argc || (!socket_path && inherited < 0) || !sink || (!size && !shm))
		goto bad_usage;
	if (!socket_path)
		socket_path = "(passed by the service manager)";

	d.page_size = (size_t)sysconf(_SC_PAGESIZE);
	d.idle_ms = idle_s * 1000;
	d.max_per_uid = (unsigned)max_per_uid;
	{
		/* a descriptor per client, and some for the daemon itself */
		struct rlimit rl;

		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
			rl.rlim_cur = rl.rlim_max;
			(void)setrlimit(RLIMIT_NOFILE, &rl);
		}
		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
		    max_clients + 64 > rl.rlim_cur) {
			warn("RLIMIT_NOFILE is %llu: at most %llu clients", (unsigned long long)rl.rlim_cur,
			     rl.rlim_cur > 128 ? (unsigned long long)rl.rlim_cur - 64 : 64ull);
			max_clients = rl.rlim_cur > 128 ? rl.rlim_cur - 64 : 64;
		}
	}
	d.max_clients = (size_t)max_clients;
	d.clients = calloc(d.max_clients, sizeof(*d.clients));
	pfd = calloc(d.max_clients + 1, sizeof(*pfd));
	slot = calloc(d.max_clients + 1, sizeof(*slot));
	if (!d.clients || !pfd || !slot) {
		fprintf(stderr, "dirty-syncd: out of memory\n");
		return 1;
	}
	if (!strcmp(mode, "auto"))
		mode = dirty_backend_probe("mapping", 0, NULL, 0) ? "cooperative" : "mapping";
	if (!strcmp(mode, "mapping")) {
		d.mode = SYNCD_MODE_MAPPING;
		err = dirty_backend_probe("mapping", 0, why, sizeof(why));
	} else if (!strcmp(mode, "cooperative")) {
		d.mode = SYNCD_MODE_COOPERATIVE;
		err = dirty_backend_probe("uffd-async", 0, why, sizeof(why));
	} else {
		goto bad_usage;
	}
	if (err) {
		fprintf(stderr, "dirty-syncd: %s mode cannot run here: %s\n", mode, why);
		return 3;
	}

	err = open_buffer(shm, size);
	if (err) {
		fprintf(stderr, "dirty-syncd: buffer: %s\n", strerror(-err));
		return 1;
	}
	d.sink.fd = -1;
	d.sink.ops = &syncd_file_sink;
	err = d.sink.ops->open(&d.sink, sink, d.size);
	if (err) {
		fprintf(stderr, "dirty-syncd: sink %s: %s\n", sink, strerror(-err));
		return 1;
	}
	if (d.mode == SYNCD_MODE_MAPPING) {
		struct dirty_options o = { .sz = sizeof(o), .backend = "mapping" };

		err = dirty_tracker_new(&o, &d.file_tracker);
		if (!err)
			err = dirty_track_file(d.file_tracker, d.buffer_fd, 0, d.size);
		if (err) {
			fprintf(stderr, "dirty-syncd: tracking the buffer: %s\n", strerror(-err));
			return 1;
		}
		/*
		 * A kernel that records every write keeps the record of a
		 * producer that goes away, and of pages reclaim takes.  The
		 * module reads page tables: reclaim unmaps a page from every
		 * process before it swaps it out, and the dirty bits leave with
		 * the entries, so a locked mapping of the whole buffer keeps its
		 * pages unevictable, and a producer that goes costs a whole copy
		 * of what it mapped.
		 */
		d.sees_gone = dirty_tracker_sees(d.file_tracker) & DIRTY_SEES_GONE_MAPPINGS;
		note("mapping mode: %s", d.sees_gone ? "the kernel records every write" :
		     "the kernel reads page tables (the module): the buffer is locked in memory, "
		     "a producer that goes costs a copy of what it mapped");
		if (!d.sees_gone && mlock(d.map, d.size))
			warn("cannot lock the buffer in memory (%s): under memory pressure, "
			     "writes to pages the kernel swaps out are not seen (RLIMIT_MEMLOCK)",
			     strerror(errno));
	}
	/* the sink starts equal to the buffer; from here on, only dirty pages */
	mark_pages(0, d.size);
	err = copy_marked(&initial_bytes, &initial_runs);
	if (err)
		return 1;

	listen_fd = inherited >= 0 ? inherited : syncd_listen(socket_path);
	if (listen_fd < 0 || fcntl(listen_fd, F_SETFL, O_NONBLOCK) < 0) {
		fprintf(stderr, "dirty-syncd: %s: %s\n", socket_path,
			strerror(listen_fd < 0 ? -listen_fd : errno));
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&block);
	sigemptyset(&empty);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigprocmask(SIG_BLOCK, &block, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	note("%s mode, buffer %" PRIu64 " bytes, sink %s, interval %" PRIu64 " ms, socket %s, "
	     "idle timeout %" PRIu64 " s, at most %zu clients and %u per uid", mode, d.size, sink,
	     interval, socket_path, idle_s, d.max_clients, d.max_per_uid);
	json_line("{\"event\":\"start\",\"mode\":\"%s\",\"size\":%" PRIu64 ",\"interval_ms\":%"
		  PRIu64 ",\"initial_bytes\":%" PRIu64 "}", mode, d.size, interval, initial_bytes);
	if (ready_fd >= 0) {
		(void)!write(ready_fd, "ready\n", 6);
		close(ready_fd);
	}

	deadline = now_ms() + interval;
	while (!stop_signal) {
		struct timespec timeout, *tp = NULL;
		uint64_t now = now_ms(), wake = drop_idle(now);
		size_t n = 1;
		int ready;

		/* the listening socket first; not while out of descriptors */
		pfd[0] = (struct pollfd){ .fd = d.accept_paused ? -1 : listen_fd, .events = POLLIN };
		for (size_t i = 0; i < d.max_clients; i++) {
			const struct client *c = d.clients[i];

			if (!c)
				continue;
			pfd[n] = (struct pollfd){ .fd = c->sock,
						  .events = (short)((c->closing ? 0 : POLLIN) |
								    (c->queue_len ? POLLOUT : 0)) };
			slot[n++] = i;
		}
		if (interval && deadline < wake)
			wake = deadline;
		if (wake != UINT64_MAX) {
			uint64_t left = wake > now ? wake - now : 0;

			timeout.tv_sec = (time_t)(left / 1000);
			timeout.tv_nsec = (long)(left % 1000) * 1000000;
			tp = &timeout;
		}
		ready = ppoll(pfd, n, tp, &empty);
		if (ready < 0 && errno != EINTR) {
			warn("poll: %s", strerror(errno));
			break;
		}
		for (size_t i = 1; ready > 0 && i < n; i++) {
			struct client *c = d.clients[slot[i]];

			/* the slot may have been emptied by a flush meanwhile */
			if (!pfd[i].revents || !c || c->sock != pfd[i].fd)
				continue;
			if ((pfd[i].revents & POLLOUT) && !client_drain(slot[i]))
				continue;
			if (pfd[i].revents & POLLIN)
				serve(slot[i]);
			else if (pfd[i].revents & (POLLHUP | POLLERR))
				client_lost(slot[i]);
		}
		if (ready > 0 && (pfd[0].revents & POLLIN))
			accept_clients(listen_fd);
		if (interval && now_ms() >= deadline) {
			uint64_t bytes, runs;

			if (!flush_now(SIZE_MAX, &bytes, &runs))
				flush_said("interval", NULL, bytes, runs);
			deadline = now_ms() + interval;
		}
		copy_leftovers();
	}

	/* a last flush, so that the sink is exact when the daemon stops */
	{
		uint64_t bytes, runs;

		if (!flush_now(SIZE_MAX, &bytes, &runs))
			flush_said("exit", NULL, bytes, runs);
	}
	for (size_t i = 0; i < d.max_clients; i++)
		if (d.clients[i])
			client_close(i);
	close(listen_fd);
	if (inherited < 0 && socket_path[0] != '@')
		unlink(socket_path); /* an inherited socket is its manager's */
	d.file_tracker = dirty_tracker_free(d.file_tracker);
	d.sink.ops->close(&d.sink);
	free(d.clients);
	free(pfd);
	free(slot);

	note("summary: %" PRIu64 " flushes, %" PRIu64 " bytes in %" PRIu64 " runs copied "
	     "(%" PRIu64 " of them whole ranges of %" PRIu64 " producers that went away), "
	     "%.2f buffers' worth; initial copy %" PRIu64 " bytes; %" PRIu64 " clients dropped, %"
	     PRIu64 " connections refused",
	     d.total.flushes, d.total.bytes, d.total.runs, d.total.leave_bytes, d.total.gone,
	     (double)d.total.bytes / (double)d.size, initial_bytes, d.total.dropped,
	     d.total.refused);
	json_line("{\"event\":\"summary\",\"flushes\":%" PRIu64 ",\"bytes\":%" PRIu64
		  ",\"runs\":%" PRIu64 ",\"gone_bytes\":%" PRIu64 ",\"gone\":%" PRIu64
		  ",\"registered\":%" PRIu64 ",\"initial_bytes\":%" PRIu64 ",\"dropped\":%" PRIu64
		  ",\"refused\":%" PRIu64 ",\"signal\":%d}",
		  d.total.flushes, d.total.bytes, d.total.runs, d.total.leave_bytes,
		  d.total.gone, d.total.joined, initial_bytes, d.total.dropped, d.total.refused,
		  (int)stop_signal);
	return 0;

bad_usage:
	fputs(usage, stderr);
	return 2;
}
