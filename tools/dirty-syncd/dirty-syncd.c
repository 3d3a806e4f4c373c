/* SPDX-License-Identifier: MIT */
/*
 * dirty-syncd: a reference buffer sync daemon.  A thin user of the public API.
 *
 * Producers (other processes) map a shared buffer and write to it; the daemon
 * keeps a sink (a Vulkan device buffer, syncd-vulkan.c; or a file standing in
 * for device memory) equal to the buffer by copying only the pages written
 * since the last copy.  Each --interval, and whenever a client asks for a
 * flush, it collects-and-cleans the dirty pages and copies the dirty runs,
 * as the regions the sink takes (syncd-regions.c), from its own mapping of
 * the buffer to the sink.
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
 * Protocol (syncd-proto.h): a SOCK_SEQPACKET Unix socket at --socket;
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
 *   FLUSHED   -> a = 0 or SYNCD_FLUSHED_NOW (1)
 *             <- once the sink has every write the client made before
 *                sending it: with the next flush, whoever makes it (at once
 *                with NOW or --interval 0); a = flush number, b = bytes
 *                copied, c = bytes of the dirty runs, d = runs | regions << 32.
 *                Until then the daemon reads nothing more from that client.
 *   READBACK  -> a file attached; <- a = bytes: what the sink holds, written
 *                to the file (with --readback only: a test's check of the
 *                device's copy).
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

#include "json.h"
#include "libdirty.h"
#include "syncd-proto.h"
#include "syncd-regions.h"
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
	bool waiting;                 /* sent FLUSHED: answered after the next flush */
	bool backlog_noted;           /* its first queued reply was logged */
	unsigned queue_head, queue_len;
	struct queued_reply queue[REPLY_QUEUE];
	struct dirty_tracker *tracker; /* cooperative */
	unsigned nranges;
	struct producer_range ranges[MAX_RANGES];
};

struct totals {
	uint64_t flushes, bytes, runs;
	uint64_t dirty_bytes, regions; /* bytes - dirty_bytes: what alignment and merging cost */
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
	struct syncd_source source;
	struct syncd_sink sink;
	struct syncd_region *regions;       /* a flush's plan: room for every run */
	struct client **clients;            /* max_clients slots, NULL when free */
	size_t max_clients, nclients;
	unsigned max_per_uid;
	uint64_t idle_ms;                   /* 0: no idle timeout */
	uint64_t interval_ms;               /* 0: flush only when asked */
	bool readback;                      /* --readback: READBACK is allowed */
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

/*
 * --json: one event a line, {"event":"EVENT",...}.  json_event() begins the
 * line, or returns false without --json; the caller prints the fields, each
 * after a comma, the strings with json_field() so that they are escaped; and
 * json_event_end() ends the line and flushes it.
 */
static bool json_event(const char *event)
{
	if (!d.json)
		return false;
	fputs("{\"event\":", stdout);
	json_string(stdout, event);
	return true;
}

static void json_field(const char *key, const char *value)
{
	printf(",\"%s\":", key);
	json_string(stdout, value);
}

static void json_event_end(void)
{
	fputs("}\n", stdout);
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

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000 + (uint64_t)ts.tv_nsec;
}

/*
 * Copy the marked pages to the sink, as the regions the sink takes, and
 * unmark them once the sink has them (its upload returns after the device's
 * fence): a failed upload leaves them marked, and the next flush tries
 * again.  *st: what was copied; its time from since (ns) to now.
 */
static int copy_marked(uint64_t since, struct syncd_flush_stats *st)
{
	uint64_t npages = d.size / d.page_size;
	ssize_t n = syncd_plan(d.marked, npages, d.page_size, d.size, d.sink.align,
			       d.sink.max_regions, d.regions, st);
	int err = n < 0 ? (int)n : 0;

	if (n > 0)
		err = d.sink.ops->upload(&d.sink, d.regions, (size_t)n);
	if (err) {
		warn("sink %s: %s", d.sink.ops->name, strerror(-err));
		return err;
	}
	memset(d.marked, 0, d.nwords * sizeof(*d.marked));
	st->time_ns = now_ns() - since;
	return 0;
}

/* A copy after the start, in the totals. */
static void count_copy(const struct syncd_flush_stats *st)
{
	d.total.bytes += st->bytes;
	d.total.runs += st->runs;
	d.total.dirty_bytes += st->dirty_bytes;
	d.total.regions += st->regions;
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
		if (json_event("gone")) {
			printf(",\"pid\":%d", (int)c->peer_pid);
			json_field("reason", why);
			fputs(",\"bytes\":0", stdout);
			json_event_end();
		}
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
	if (json_event("gone")) {
		printf(",\"pid\":%d", (int)c->peer_pid);
		json_field("reason", why);
		printf(",\"bytes\":%" PRIu64, bytes);
		json_event_end();
	}
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
	if (json_event("drop")) {
		printf(",\"pid\":%d,\"uid\":%u", (int)c->peer_pid, (unsigned)c->peer_uid);
		json_field("reason", reason);
		printf(",\"queued\":%u", c->queue_len);
		json_event_end();
	}
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
		if (json_event("backlog")) {
			printf(",\"pid\":%d,\"uid\":%u", (int)c->peer_pid, (unsigned)c->peer_uid);
			json_event_end();
		}
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
static void answer_waiters(int status, const struct syncd_flush_stats *st);

static int flush_now(size_t requester, struct syncd_flush_stats *st)
{
	uint64_t start = now_ns();
	int err;

	sweep_hangups(requester);
	collect_all();
	err = copy_marked(start, st);
	if (!err) {
		count_copy(st);
		d.total.flushes++;
	}
	/* a failed collect was made up for by whole copies: the sink is exact */
	answer_waiters(err, st);
	return err;
}

/* The reply to FLUSHED: the flush's numbers, or the error of its upload. */
static struct syncd_msg flushed_reply(int status, const struct syncd_flush_stats *st)
{
	struct syncd_msg reply = { .magic = SYNCD_MAGIC, .version = SYNCD_VERSION,
				   .type = SYNCD_FLUSHED | SYNCD_REPLY, .status = status };

	if (!status) {
		reply.a = d.total.flushes;
		reply.b = st->bytes;
		reply.c = st->dirty_bytes;
		reply.d = syncd_flushed_counts(st->runs, st->regions);
	}
	return reply;
}

/*
 * A flush was made, or failed: every client that waits on FLUSHED has its
 * writes in the sink now (they were made before its request, which came
 * before this flush's collect), or is told the error.
 */
static void answer_waiters(int status, const struct syncd_flush_stats *st)
{
	struct syncd_msg reply = flushed_reply(status, st);

	for (size_t i = 0; i < d.max_clients; i++) {
		struct client *c = d.clients[i];

		if (!c || !c->waiting)
			continue;
		c->waiting = false;
		(void)client_reply(i, &reply, -1);
	}
}

/* A flush, said: for a client, once its reply is sent or queued (pid, queued). */
static void flush_said(const char *reason, const struct client *c,
		       const struct syncd_flush_stats *st)
{
	if (!c && !st->bytes && !strcmp(reason, "interval"))
		return; /* idle ticks are not news */
	note("flush %" PRIu64 " (%s): %" PRIu64 " bytes in %" PRIu64 " runs, %" PRIu64
	     " bytes in %" PRIu64 " regions to the sink, %.3f ms", d.total.flushes, reason,
	     st->dirty_bytes, st->runs, st->bytes, st->regions, (double)st->time_ns / 1e6);
	if (json_event("flush")) {
		printf(",\"flush\":%" PRIu64, d.total.flushes);
		json_field("reason", reason);
		printf(",\"bytes\":%" PRIu64 ",\"runs\":%" PRIu64 ",\"dirty_bytes\":%" PRIu64
		       ",\"regions\":%" PRIu64 ",\"gaps_closed\":%" PRIu64 ",\"time_us\":%" PRIu64,
		       st->bytes, st->runs, st->dirty_bytes, st->regions, st->gaps_closed,
		       st->time_ns / 1000);
		if (c)
			printf(",\"pid\":%d,\"queued\":%u", (int)c->peer_pid, c->queue_len);
		json_event_end();
	}
}

/* Producers that left marked their ranges: copy them now, not at the next flush. */
static void copy_leftovers(void)
{
	struct syncd_flush_stats st;

	for (size_t i = 0; i < d.nwords; i++) {
		if (!d.marked[i])
			continue;
		if (copy_marked(now_ns(), &st))
			return;
		count_copy(&st);
		note("copied %" PRIu64 " bytes in %" PRIu64 " runs for producers that went away",
		     st.bytes, st.runs);
		if (json_event("copy")) {
			json_field("reason", "gone");
			printf(",\"bytes\":%" PRIu64 ",\"runs\":%" PRIu64 ",\"dirty_bytes\":%" PRIu64
			       ",\"regions\":%" PRIu64 ",\"time_us\":%" PRIu64, st.bytes, st.runs,
			       st.dirty_bytes, st.regions, st.time_ns / 1000);
			json_event_end();
		}
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
	if (json_event("register")) {
		printf(",\"pid\":%d,\"address\":%" PRIu64 ",\"length\":%" PRIu64
		       ",\"offset\":%" PRIu64, (int)c->peer_pid, addr, len, offset);
		json_event_end();
	}
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

/* READBACK: what the sink holds, into the client's file. */
static int do_readback(int fd)
{
	struct stat st;

	if (!d.readback)
		return -EPERM;
	if (fd < 0)
		return -EBADF;
	if (!d.sink.ops->read_back)
		return -EOPNOTSUPP;
	if (fstat(fd, &st))
		return -errno;
	if (S_ISREG(st.st_mode) && (uint64_t)st.st_size < d.size && ftruncate(fd, (off_t)d.size))
		return -errno;
	return d.sink.ops->read_back(&d.sink, fd);
}

/* Serve one message.  false: the client is gone (closed here). */
static bool serve(size_t slot)
{
	struct client *c = d.clients[slot];
	struct syncd_msg m, reply = { .magic = SYNCD_MAGIC, .version = SYNCD_VERSION };
	struct syncd_flush_stats st = { 0 };
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
	case SYNCD_FLUSHED:
		if (m.a & ~(uint64_t)SYNCD_FLUSHED_NOW) {
			reply.status = -EINVAL;
			break;
		}
		if (!(m.a & SYNCD_FLUSHED_NOW) && d.interval_ms) {
			/* answered by the next flush, whoever makes it */
			c->waiting = true;
			if (fd >= 0)
				close(fd);
			return true;
		}
		reply = flushed_reply(flush_now(slot, &st), &st);
		flushed = !reply.status;
		reason = "flushed";
		break;
	case SYNCD_READBACK:
		reply.status = do_readback(fd);
		if (!reply.status)
			reply.a = d.size;
		else
			warn("client %d: read back: %s", (int)c->peer_pid, strerror(-reply.status));
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
		reply.status = flush_now(slot, &st);
		flushed = !reply.status;
		reply.a = st.bytes;
		reply.b = st.runs;
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
		flush_said(reason, c, &st);
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
	if (json_event("refuse")) {
		printf(",\"pid\":%d,\"uid\":%u", (int)cred->pid, (unsigned)cred->uid);
		json_field("reason", why);
		printf(",\"refused\":%" PRIu64, d.total.refused);
		json_event_end();
	}
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

		if (!c || c->nranges || c->waiting)
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
	d.regions = calloc(syncd_max_runs(size / d.page_size), sizeof(*d.regions));
	d.source = (struct syncd_source){ .fd = d.buffer_fd, .map = d.map, .size = size,
					  .page_size = d.page_size };
	return d.marked && d.scratch && d.regions ? 0 : -ENOMEM;
}

static const char usage[] =
	"usage: dirty-syncd [--socket PATH] (--size SIZE | --shm NAME [--size SIZE])\n"
	"                   [--sink-type file|vulkan] --sink SPEC [--align BYTES]\n"
	"                   [--max-regions N]\n"
	"                   [--mode auto|mapping|cooperative]\n"
	"                   [--interval MS] [--json] [--ready-fd N] [--idle-timeout S]\n"
	"                   [--max-clients N] [--max-per-uid N] [--readback]\n"
	"Keeps the sink equal to a shared buffer by copying only its dirty pages.\n"
	"--socket is required unless a service manager passes the listening socket.\n"
	"See dirty-syncd(1).\n";

/* What the command line asks for. */
struct options {
	const char *socket_path, *shm, *sink, *sink_type, *mode;
	uint64_t size, interval, idle_s, max_clients, max_per_uid, align, max_regions;
	int ready_fd;
	/* socket activation: the listening socket the service manager passed, or -errno */
	int inherited;
};

/* 0, or -EINVAL for a bad command line; *help set for --help. */
static int parse_options(int argc, char **argv, struct options *o, bool *help)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "size", required_argument, NULL, 'S' },
		{ "shm", required_argument, NULL, 'm' },
		{ "sink", required_argument, NULL, 'k' },
		{ "sink-type", required_argument, NULL, 'T' },
		{ "align", required_argument, NULL, 'A' },
		{ "max-regions", required_argument, NULL, 'R' },
		{ "readback", no_argument, NULL, 'B' },
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
	int opt;

	while ((opt = getopt_long(argc, argv, "s:S:m:k:T:A:R:BM:i:jr:I:C:U:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 's': o->socket_path = optarg; break;
		case 'S':
			if (parse_size(optarg, &o->size) || !o->size)
				return -EINVAL;
			break;
		case 'm': o->shm = optarg; break;
		case 'k': o->sink = optarg; break;
		case 'T': o->sink_type = optarg; break;
		case 'B': d.readback = true; break;
		case 'A':
			/* a power of two; past the buffer's size it means the whole buffer */
			if (parse_size(optarg, &o->align) || !o->align || (o->align & (o->align - 1)))
				return -EINVAL;
			break;
		case 'R':
			/* Vulkan counts regions in 32 bits */
			if (parse_size(optarg, &o->max_regions) || o->max_regions > UINT32_MAX)
				return -EINVAL;
			break;
		case 'M': o->mode = optarg; break;
		case 'i':
			if (parse_size(optarg, &o->interval))
				return -EINVAL;
			break;
		case 'j': d.json = true; break;
		case 'r': o->ready_fd = atoi(optarg); break;
		case 'I':
			if (parse_size(optarg, &o->idle_s) || o->idle_s > UINT32_MAX)
				return -EINVAL;
			break;
		case 'C':
			if (parse_size(optarg, &o->max_clients) || !o->max_clients ||
			    o->max_clients > 1 << 20)
				return -EINVAL;
			break;
		case 'U':
			if (parse_size(optarg, &o->max_per_uid) || !o->max_per_uid ||
			    o->max_per_uid > 1 << 20)
				return -EINVAL;
			break;
		case 'h': *help = true; return 0;
		default: return -EINVAL;
		}
	}
	if (optind != argc || (!o->socket_path && o->inherited < 0) || (!o->size && !o->shm) ||
	    !syncd_sink_find(o->sink_type))
		return -EINVAL;
	if (!o->socket_path)
		o->socket_path = "(passed by the service manager)";
	/* the file sink needs a file; another takes options, or none */
	if (!o->sink && !strcmp(o->sink_type, "file"))
		return -EINVAL;
	if (!o->sink)
		o->sink = "";
	return 0;
}

/*
 * A descriptor per client, and some for the daemon itself: raise the soft
 * limit to the hard one, and take fewer clients if that is still too low.
 */
static uint64_t clients_within_descriptor_limit(uint64_t max_clients)
{
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
	return max_clients;
}

/*
 * d.mode from --mode (auto: mapping where it can run, else cooperative), and
 * *mode its name.  0, or an exit status: 2 for an unknown mode, 3 for one
 * that cannot run here (the probe's reason printed).
 */
static int choose_mode(const char **mode)
{
	char why[256] = "";
	int err;

	if (!strcmp(*mode, "auto"))
		*mode = dirty_backend_probe("mapping", 0, NULL, 0) ? "cooperative" : "mapping";
	if (!strcmp(*mode, "mapping")) {
		d.mode = SYNCD_MODE_MAPPING;
		err = dirty_backend_probe("mapping", 0, why, sizeof(why));
	} else if (!strcmp(*mode, "cooperative")) {
		d.mode = SYNCD_MODE_COOPERATIVE;
		err = dirty_backend_probe("uffd-async", 0, why, sizeof(why));
	} else {
		return 2;
	}
	if (err) {
		fprintf(stderr, "dirty-syncd: %s mode cannot run here: %s\n", *mode, why);
		return 3;
	}
	return 0;
}

/* mapping mode: one tracker on the buffer file, for every process that maps it. */
static int track_buffer_file(void)
{
	struct dirty_options o = { .sz = sizeof(o), .backend = "mapping" };
	int err;

	err = dirty_tracker_new(&o, &d.file_tracker);
	if (!err)
		err = dirty_track_file(d.file_tracker, d.buffer_fd, 0, d.size);
	if (err) {
		fprintf(stderr, "dirty-syncd: tracking the buffer: %s\n", strerror(-err));
		return err;
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
	return 0;
}

/*
 * The buffer, the sink and (mapping) the buffer's tracker; then the sink is
 * made equal to the buffer (*initial_bytes copied).  0, or an exit status,
 * the reason printed.
 */
static int set_up_buffer_and_sink(const struct options *o, uint64_t *initial_bytes)
{
	struct syncd_flush_stats initial;
	char why[512] = "";
	int err;

	err = open_buffer(o->shm, o->size);
	if (err) {
		fprintf(stderr, "dirty-syncd: buffer: %s\n", strerror(-err));
		return 1;
	}
	d.sink = (struct syncd_sink){ .ops = syncd_sink_find(o->sink_type), .src = &d.source,
				      .size = d.size, .align = o->align,
				      .max_regions = o->max_regions, .fd = -1 };
	err = d.sink.ops->open(&d.sink, o->sink, why, sizeof(why));
	if (err) {
		/* -ENODEV: this sink cannot run here, like a mode that cannot */
		fprintf(stderr, "dirty-syncd: %s sink%s: %s\n", d.sink.ops->name,
			err == -ENODEV ? " cannot run here" : "", why[0] ? why : strerror(-err));
		return err == -ENODEV ? 3 : 1;
	}
	if (d.mode == SYNCD_MODE_MAPPING && track_buffer_file())
		return 1;
	/* the sink starts equal to the buffer; from here on, only dirty pages */
	mark_pages(0, d.size);
	if (copy_marked(now_ns(), &initial))
		return 1;
	*initial_bytes = initial.bytes;
	return 0;
}

/*
 * The listening socket (the one the service manager passed, if it did),
 * non-blocking; -1 with the reason printed.
 */
static int start_listening(const struct options *o)
{
	int listen_fd = o->inherited >= 0 ? o->inherited : syncd_listen(o->socket_path);

	if (listen_fd < 0 || fcntl(listen_fd, F_SETFL, O_NONBLOCK) < 0) {
		fprintf(stderr, "dirty-syncd: %s: %s\n", o->socket_path,
			strerror(listen_fd < 0 ? -listen_fd : errno));
		return -1;
	}
	return listen_fd;
}

/*
 * SIGTERM and SIGINT stop the daemon: they are blocked but inside ppoll(),
 * so that one cannot slip in between the loop's check and its wait.
 */
static void catch_stop_signals(void)
{
	struct sigaction sa = { .sa_handler = on_signal };
	sigset_t block;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigprocmask(SIG_BLOCK, &block, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
}

static void say_started(const struct options *o, uint64_t initial_bytes)
{
	note("%s mode, buffer %" PRIu64 " bytes, %s sink: %s; regions aligned to %" PRIu64
	     " bytes, at most %" PRIu64 " per flush (0: any), interval %" PRIu64 " ms, socket %s, "
	     "idle timeout %" PRIu64 " s, at most %zu clients and %u per uid", o->mode, d.size,
	     d.sink.ops->name, d.sink.description, d.sink.align, d.sink.max_regions, o->interval,
	     o->socket_path, o->idle_s, d.max_clients, d.max_per_uid);
	if (json_event("start")) {
		json_field("mode", o->mode);
		json_field("sink", d.sink.ops->name);
		json_field("sink_description", d.sink.description);
		printf(",\"size\":%" PRIu64 ",\"interval_ms\":%" PRIu64 ",\"initial_bytes\":%"
		       PRIu64 ",\"align\":%" PRIu64 ",\"max_regions\":%" PRIu64, d.size,
		       o->interval, initial_bytes, d.sink.align, d.sink.max_regions);
		json_event_end();
	}
	if (o->ready_fd >= 0) {
		(void)!write(o->ready_fd, "ready\n", 6);
		close(o->ready_fd);
	}
}

/*
 * The poll set: the listening socket first (not while out of descriptors),
 * then each client, whose slot goes to slot[] at the same index.  Returns
 * its size.
 */
static size_t poll_set(int listen_fd, struct pollfd *pfd, size_t *slot)
{
	size_t n = 1;

	pfd[0] = (struct pollfd){ .fd = d.accept_paused ? -1 : listen_fd, .events = POLLIN };
	for (size_t i = 0; i < d.max_clients; i++) {
		const struct client *c = d.clients[i];

		if (!c)
			continue;
		pfd[n] = (struct pollfd){ .fd = c->sock,
					  .events = (short)((c->closing || c->waiting ? 0 : POLLIN) |
							    (c->queue_len ? POLLOUT : 0)) };
		slot[n++] = i;
	}
	return n;
}

/* What ppoll() found: replies drained, messages served, hang-ups, new clients. */
static void serve_ready(int listen_fd, const struct pollfd *pfd, const size_t *slot, size_t n,
			int ready)
{
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
}

/*
 * The daemon's loop until SIGTERM or SIGINT: serve clients, flush every
 * interval (0: only when asked), drop idle clients, copy what producers
 * that went away leave.
 */
static void serve_until_stopped(int listen_fd, uint64_t interval, struct pollfd *pfd,
				size_t *slot)
{
	uint64_t deadline = now_ms() + interval;
	sigset_t empty;

	sigemptyset(&empty);
	while (!stop_signal) {
		struct timespec timeout, *tp = NULL;
		uint64_t now = now_ms(), wake = drop_idle(now);
		size_t n = poll_set(listen_fd, pfd, slot);
		int ready;

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
		serve_ready(listen_fd, pfd, slot, n, ready);
		if (interval && now_ms() >= deadline) {
			struct syncd_flush_stats st;

			if (!flush_now(SIZE_MAX, &st))
				flush_said("interval", NULL, &st);
			deadline = now_ms() + interval;
		}
		copy_leftovers();
	}
}

/* A last flush, so that the sink is exact when the daemon stops; then close all. */
static void shut_down(int listen_fd, const struct options *o)
{
	struct syncd_flush_stats st;

	if (!flush_now(SIZE_MAX, &st))
		flush_said("exit", NULL, &st);
	for (size_t i = 0; i < d.max_clients; i++)
		if (d.clients[i])
			client_close(i);
	close(listen_fd);
	if (o->inherited < 0 && o->socket_path[0] != '@')
		unlink(o->socket_path); /* an inherited socket is its manager's */
	d.file_tracker = dirty_tracker_free(d.file_tracker);
	d.sink.ops->close(&d.sink);
}

static void say_summary(uint64_t initial_bytes)
{
	note("summary: %" PRIu64 " flushes, %" PRIu64 " bytes in %" PRIu64 " regions copied for %"
	     PRIu64 " bytes in %" PRIu64 " dirty runs (%" PRIu64 " of them whole ranges of %"
	     PRIu64 " producers that went away), %.2f buffers' worth; initial copy %" PRIu64
	     " bytes; %" PRIu64 " clients dropped, %" PRIu64 " connections refused",
	     d.total.flushes, d.total.bytes, d.total.regions, d.total.dirty_bytes, d.total.runs,
	     d.total.leave_bytes, d.total.gone, (double)d.total.bytes / (double)d.size,
	     initial_bytes, d.total.dropped, d.total.refused);
	if (json_event("summary")) {
		printf(",\"flushes\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"runs\":%" PRIu64
		       ",\"dirty_bytes\":%" PRIu64 ",\"regions\":%" PRIu64
		       ",\"gone_bytes\":%" PRIu64 ",\"gone\":%" PRIu64 ",\"registered\":%" PRIu64
		       ",\"initial_bytes\":%" PRIu64 ",\"dropped\":%" PRIu64 ",\"refused\":%" PRIu64
		       ",\"signal\":%d", d.total.flushes, d.total.bytes, d.total.runs,
		       d.total.dirty_bytes, d.total.regions, d.total.leave_bytes, d.total.gone,
		       d.total.joined, initial_bytes, d.total.dropped, d.total.refused,
		       (int)stop_signal);
		json_event_end();
	}
}

int main(int argc, char **argv)
{
	struct options o = {
		.mode = "auto", .sink_type = "file", .interval = 100, .idle_s = 60,
		.max_clients = 1024, .max_per_uid = 64, .align = 1, .ready_fd = -1,
	};
	uint64_t initial_bytes = 0;
	struct pollfd *pfd;
	size_t *slot;
	bool help = false;
	int err, listen_fd;

	o.inherited = syncd_listen_inherited();
	if (o.inherited < 0 && o.inherited != -ENOENT) {
		fprintf(stderr, "dirty-syncd: the socket passed by the service manager (LISTEN_FDS): "
			"%s: one listening Unix SOCK_SEQPACKET socket is expected\n",
			strerror(-o.inherited));
		return 1;
	}
	if (parse_options(argc, argv, &o, &help))
		goto bad_usage;
	if (help) {
		fputs(usage, stdout);
		return 0;
	}
	d.page_size = (size_t)sysconf(_SC_PAGESIZE);
	d.idle_ms = o.idle_s * 1000;
	d.interval_ms = o.interval;
	d.max_per_uid = (unsigned)o.max_per_uid;
	d.max_clients = (size_t)clients_within_descriptor_limit(o.max_clients);
	d.clients = calloc(d.max_clients, sizeof(*d.clients));
	pfd = calloc(d.max_clients + 1, sizeof(*pfd));
	slot = calloc(d.max_clients + 1, sizeof(*slot));
	if (!d.clients || !pfd || !slot) {
		fprintf(stderr, "dirty-syncd: out of memory\n");
		return 1;
	}
	/*
	 * Before any thread exists (a Vulkan driver starts its own): they all
	 * inherit the blocked stop signals, which then reach this thread's
	 * ppoll() only.
	 */
	catch_stop_signals();
	err = choose_mode(&o.mode);
	if (!err)
		err = set_up_buffer_and_sink(&o, &initial_bytes);
	listen_fd = err ? -1 : start_listening(&o);
	if (!err && listen_fd < 0)
		err = 1;
	if (err) {
		/* an exit status: freed first, so that a leak checker keeps it */
		free(d.clients);
		free(pfd);
		free(slot);
		if (err == 2)
			goto bad_usage;
		return err;
	}
	say_started(&o, initial_bytes);

	serve_until_stopped(listen_fd, o.interval, pfd, slot);

	shut_down(listen_fd, &o);
	free(d.clients);
	free(pfd);
	free(slot);
	say_summary(initial_bytes);
	return 0;

bad_usage:
	fputs(usage, stderr);
	return 2;
}
