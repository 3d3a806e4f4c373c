/* SPDX-License-Identifier: MIT */
/*
 * LD_PRELOAD'ed into dirtyctl by test-image-chain: changes an image file at
 * the moment `image apply` has checked the chain and creates DIR.partial,
 * that is between its check of the images and its writing of them.
 *
 *   DIRTY_TEST_FLIP=FILE:OFFSET     flip one bit of the byte at OFFSET
 *   DIRTY_TEST_REPLACE=FILE:SOURCE  overwrite FILE with SOURCE's bytes, in
 *                                   place (the same inode, which apply has open)
 *   DIRTY_TEST_MARK=PATH            create PATH once it did, so that the test
 *                                   knows the change happened
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int mkdir(const char *path, mode_t mode);

static void die(const char *what)
{
	fprintf(stderr, "apply-race-shim: %s\n", what);
	_exit(99);
}

/* "A:B" into a (copied) and b; the colon is the last one. */
static void split(const char *value, char *a, size_t a_len, const char **b)
{
	const char *colon = strrchr(value, ':');

	if (!colon || (size_t)(colon - value) >= a_len)
		die("bad variable");
	memcpy(a, value, (size_t)(colon - value));
	a[colon - value] = '\0';
	*b = colon + 1;
}

static void flip(const char *value)
{
	char file[4096];
	const char *offset_text;
	unsigned char byte;
	off_t offset;
	int fd;

	split(value, file, sizeof(file), &offset_text);
	offset = (off_t)strtoll(offset_text, NULL, 0);
	fd = open(file, O_RDWR | O_CLOEXEC);
	if (fd < 0 || pread(fd, &byte, 1, offset) != 1)
		die("cannot read the byte to flip");
	byte ^= 0x10;
	if (pwrite(fd, &byte, 1, offset) != 1)
		die("cannot write the flipped byte");
	close(fd);
}

static void replace(const char *value)
{
	char file[4096], buf[65536];
	const char *source;
	int in, out;
	ssize_t n;

	split(value, file, sizeof(file), &source);
	in = open(source, O_RDONLY | O_CLOEXEC);
	out = open(file, O_WRONLY | O_TRUNC | O_CLOEXEC);
	if (in < 0 || out < 0)
		die("cannot open the files to replace");
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (write(out, buf, (size_t)n) != n)
			die("cannot write the replacement");
	close(in);
	close(out);
}

int mkdir(const char *path, mode_t mode)
{
	static int (*real)(const char *, mode_t);
	size_t n = strlen(path);

	if (!real)
		real = (int (*)(const char *, mode_t))dlsym(RTLD_NEXT, "mkdir");
	if (!real)
		die("no mkdir");
	if (n > 8 && !strcmp(path + n - 8, ".partial")) {
		if (getenv("DIRTY_TEST_FLIP"))
			flip(getenv("DIRTY_TEST_FLIP"));
		if (getenv("DIRTY_TEST_REPLACE"))
			replace(getenv("DIRTY_TEST_REPLACE"));
		if (getenv("DIRTY_TEST_MARK"))
			close(open(getenv("DIRTY_TEST_MARK"), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
	}
	return real(path, mode);
}
