/* SPDX-License-Identifier: MIT */
/*
 * A program that carries a tar archive after its own end, for the qemu guests
 * of tests/vm/run-matrix.sh, which take one program (LIBDIRTY_VM_EXEC): it
 * unpacks the archive into /tmp/bdwgc-guest with the guest's tar and runs
 * the run.sh inside with the guest's sh (busybox).  bench.sh --guest builds
 * it: the program, then the archive, then the archive's size as 8 bytes,
 * little-endian.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define DIR "/tmp/bdwgc-guest"
#define ARCHIVE DIR ".tar"

static int run(char *const argv[])
{
	int status;
	pid_t pid = fork();

	if (pid == 0) {
		execv(argv[0], argv);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) < 0)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int main(void)
{
	unsigned char trailer[8];
	uint64_t size = 0;
	char buf[65536];
	off_t end;
	int in, out;

	in = open("/proc/self/exe", O_RDONLY);
	if (in < 0 || (end = lseek(in, -8, SEEK_END)) < 0 ||
	    read(in, trailer, sizeof(trailer)) != (ssize_t)sizeof(trailer)) {
		perror("bdwgc-guest: /proc/self/exe");
		return 1;
	}
	for (int i = 7; i >= 0; i--)
		size = size << 8 | trailer[i];
	if (size == 0 || size > (uint64_t)end || lseek(in, end - (off_t)size, SEEK_SET) < 0) {
		fprintf(stderr, "bdwgc-guest: no archive appended\n");
		return 1;
	}
	out = open(ARCHIVE, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (out < 0) {
		perror("bdwgc-guest: " ARCHIVE);
		return 1;
	}
	while (size) {
		ssize_t n = read(in, buf, size < sizeof(buf) ? size : sizeof(buf));

		if (n <= 0 || write(out, buf, (size_t)n) != n) {
			fprintf(stderr, "bdwgc-guest: copying the archive: %s\n", strerror(errno));
			return 1;
		}
		size -= (uint64_t)n;
	}
	close(out);
	close(in);
	mkdir(DIR, 0700);
	if (run((char *const[]){ "/bin/tar", "-xf", ARCHIVE, "-C", DIR, NULL }) != 0) {
		fprintf(stderr, "bdwgc-guest: tar failed\n");
		return 1;
	}
	unlink(ARCHIVE);
	return run((char *const[]){ "/bin/sh", DIR "/run.sh", NULL });
}
