/* SPDX-License-Identifier: MIT */
/*
 * The bottom layer's odds and ends, which every file uses and which know no
 * backend: the page size, logging through a tracker's callback, reasons,
 * fork generations, reading a /proc file whole, growing an array, the
 * public structs that carry their own size.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "libdirty-int.h"

/*
 * A child of fork() inherits a copy of every tracker but not the kernel state
 * behind it (uffd registrations are dropped, signal-handler bookkeeping is
 * the parent's).  Each tracker remembers the generation it was made in.
 */
static _Atomic uint64_t fork_generation;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void atfork_child(void)
{
	atomic_fetch_add(&fork_generation, 1);
}

static void atfork_install(void)
{
	pthread_atfork(NULL, NULL, atfork_child);
}

uint64_t dirty_fork_generation(void)
{
	pthread_once(&atfork_once, atfork_install);
	return atomic_load_explicit(&fork_generation, memory_order_relaxed);
}

bool dirty_tracker_forked(const struct dirty_tracker *t)
{
	return t->fork_generation != atomic_load_explicit(&fork_generation, memory_order_relaxed);
}

size_t dirty_page_size(void)
{
	static _Atomic size_t page_size;
	size_t size = atomic_load_explicit(&page_size, memory_order_relaxed);

	if (!size) {
		size = (size_t)sysconf(_SC_PAGESIZE);
		atomic_store_explicit(&page_size, size, memory_order_relaxed);
	}
	return size;
}

void dirty_log(const struct dirty_tracker *t, int priority, const char *fmt, ...)
{
	char msg[DIRTY_REASON_LEN + 128];
	va_list ap;

	if (!t || !t->log)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	t->log(priority, msg, t->log_userdata);
}

int dirty_reason(char *why, size_t why_len, int err, const char *fmt, ...)
{
	va_list ap;

	if (why && why_len) {
		va_start(ap, fmt);
		vsnprintf(why, why_len, fmt, ap);
		va_end(ap);
	}
	return err;
}

bool dirty_target_error(int err)
{
	return err == -ESRCH || err == -EPERM || err == -EBUSY || err == -EACCES;
}

int dirty_read_file(const char *path, char **ret, size_t *ret_len)
{
	size_t cap = 16384, len = 0;
	char *buf, *grown;
	ssize_t n;
	int fd, err;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	buf = malloc(cap);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	for (;;) {
		if (cap - len < 4096) {
			grown = realloc(buf, cap * 2);
			if (!grown) {
				err = -ENOMEM;
				goto fail;
			}
			buf = grown;
			cap *= 2;
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			err = -errno;
			goto fail;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	*ret = buf;
	if (ret_len)
		*ret_len = len;
	return 0;
fail:
	close(fd);
	free(buf);
	return err;
}


int dirty_grow(void **array, size_t *cap, size_t need, size_t size)
{
	size_t n = *cap ? *cap : 8;
	void *grown;

	if (need <= *cap)
		return 0;
	while (n < need) {
		if (n > SIZE_MAX / 2 / size)
			return -ENOMEM;
		n *= 2;
	}
	grown = realloc(*array, n * size);
	if (!grown)
		return -ENOMEM;
	*array = grown;
	*cap = n;
	return 0;
}

int dirty_sized_check(const void *in, size_t sz, size_t min_size, size_t known)
{
	const unsigned char *p = in;

	if (sz < min_size)
		return -EINVAL;
	for (size_t i = known; i < sz; i++)
		if (p[i])
			return -EINVAL;
	return 0;
}

void dirty_sized_out(void *out, const void *result, size_t known)
{
	size_t sz;

	memcpy(&sz, out, sizeof(sz));
	if (sz > known)
		sz = known;
	memcpy(out, result, sz);
	memcpy(out, &sz, sizeof(sz));
}
