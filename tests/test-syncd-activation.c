/* SPDX-License-Identifier: MIT */
/*
 * dirty-syncd started the way systemd starts it from dirty-syncd.socket:
 * the listening socket is descriptor 3, LISTEN_FDS=1 and LISTEN_PID its pid,
 * and no --socket.  The daemon must serve that socket (a client's HELLO is
 * answered with the buffer, a FLUSH with its count, and the sink holds the
 * buffer), leave the socket file alone when it stops (it is the manager's),
 * and refuse what it cannot serve: two sockets, a descriptor that is not a
 * listening SOCK_SEQPACKET socket.  Variables meant for another process are
 * not its: without --socket it then stops with its usage.
 *
 *   test-syncd-activation --daemon PATH
 *
 * Exit 0 pass, 1 fail, 77 when neither mode of the daemon can run here.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libdirty.h>

#include "syncd-proto.h"

#define BUFFER_SIZE (1u << 20)

static char dir[64], socket_path[96];

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	printf("not ok - ");
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
	unlink(socket_path);
	rmdir(dir);
	exit(1);
}

/*
 * Start the daemon with fd as descriptor 3 and the LISTEN_* variables
 * (listen_pid: 0 for the daemon's own pid, else that number), a 1 MiB
 * buffer and sink_fd as its sink; its readiness is written to ready_fd.
 * extra: more arguments (NULL-terminated), such as --socket.
 */
static pid_t start(const char *daemon, int fd, const char *listen_fds, pid_t listen_pid,
		   int sink_fd, int ready_fd, const char *const *extra)
{
	pid_t pid = fork();

	if (pid < 0)
		fail("fork: %s", strerror(errno));
	if (pid == 0) {
		char sink_arg[32], ready_arg[16], pid_text[16], size_arg[16];
		const char *argv[16];
		int n = 0;

		if (fd >= 0 && (dup2(fd, 3) < 0 || fcntl(3, F_SETFD, 0) < 0))
			_exit(126);
		if (fd < 0 && sink_fd != 3 && ready_fd != 3)
			close(3); /* nothing passed there */
		snprintf(pid_text, sizeof(pid_text), "%d", listen_pid ? (int)listen_pid : (int)getpid());
		setenv("LISTEN_PID", pid_text, 1);
		setenv("LISTEN_FDS", listen_fds, 1);
		setenv("LISTEN_FDNAMES", "dirty-syncd.socket", 1);
		snprintf(sink_arg, sizeof(sink_arg), "fd:%d", sink_fd);
		snprintf(ready_arg, sizeof(ready_arg), "%d", ready_fd);
		snprintf(size_arg, sizeof(size_arg), "%u", BUFFER_SIZE);
		argv[n++] = daemon;
		argv[n++] = "--size";
		argv[n++] = size_arg;
		argv[n++] = "--sink";
		argv[n++] = sink_arg;
		argv[n++] = "--ready-fd";
		argv[n++] = ready_arg;
		argv[n++] = "--interval";
		argv[n++] = "0";
		for (; extra && *extra; extra++)
			argv[n++] = *extra;
		argv[n] = NULL;
		execv(daemon, (char *const *)argv);
		fprintf(stderr, "cannot run %s: %s\n", daemon, strerror(errno));
		_exit(127);
	}
	return pid;
}

/* The daemon's exit status (or 128 + its signal). */
static int reap(pid_t pid)
{
	int status;

	if (waitpid(pid, &status, 0) != pid)
		fail("waitpid: %s", strerror(errno));
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* A daemon that must refuse to start: its exit status, with nothing served. */
static int refused(const char *daemon, int fd, const char *listen_fds, pid_t listen_pid,
		   int sink_fd)
{
	int pipefd[2], status;
	char ready[8];
	pid_t pid;

	if (pipe(pipefd))
		fail("pipe: %s", strerror(errno));
	pid = start(daemon, fd, listen_fds, listen_pid, sink_fd, pipefd[1], NULL);
	close(pipefd[1]);
	if (read(pipefd[0], ready, sizeof(ready)) > 0) {
		kill(pid, SIGKILL);
		reap(pid);
		fail("the daemon started (LISTEN_FDS=%s, descriptor 3 %s)", listen_fds,
		     fd >= 0 ? "given" : "absent");
	}
	close(pipefd[0]);
	status = reap(pid);
	return status;
}

int main(int argc, char **argv)
{
	const char *daemon = argc == 3 && !strcmp(argv[1], "--daemon") ? argv[2] : NULL;
	const char *const with_socket[] = { "--socket", socket_path, NULL };
	int listen_fd, sink_fd, sock, buffer_fd = -1, pipefd[2], status, other[2];
	unsigned char *buffer, *sink;
	struct syncd_msg reply;
	char why[256], ready[8] = "";
	struct stat st;
	pid_t pid;
	int err;

	if (!daemon) {
		fprintf(stderr, "usage: test-syncd-activation --daemon PATH\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	alarm(120); /* a hang guard: the test takes well under a second */
	if (dirty_backend_probe("mapping", 0, NULL, 0) &&
	    dirty_backend_probe("uffd-async", 0, why, sizeof(why))) {
		printf("SKIP: dirty-syncd needs the mapping or the uffd-async backend: %s\n", why);
		return 77;
	}
	snprintf(dir, sizeof(dir), "/tmp/syncd-activation.XXXXXX");
	if (!mkdtemp(dir))
		fail("mkdtemp: %s", strerror(errno));
	snprintf(socket_path, sizeof(socket_path), "%s/socket", dir);
	/* what systemd does for ListenSequentialPacket= */
	listen_fd = syncd_listen(socket_path);
	if (listen_fd < 0)
		fail("listen on %s: %s", socket_path, strerror(-listen_fd));
	sink_fd = memfd_create("sink", 0);
	if (sink_fd < 0)
		fail("memfd_create: %s", strerror(errno));

	/* activated: no --socket */
	if (pipe(pipefd))
		fail("pipe: %s", strerror(errno));
	pid = start(daemon, listen_fd, "1", 0, sink_fd, pipefd[1], NULL);
	close(pipefd[1]);
	if (read(pipefd[0], ready, sizeof(ready) - 1) != 6 || strcmp(ready, "ready\n"))
		fail("the activated daemon did not start (status %d)", reap(pid));
	close(pipefd[0]);
	printf("ok - the daemon started on the socket it was passed, without --socket\n");

	sock = syncd_connect(socket_path);
	if (sock < 0)
		fail("connect to %s: %s", socket_path, strerror(-sock));
	err = syncd_call(sock, SYNCD_HELLO, SYNCD_VERSION, 0, 0, 0, -1, &reply, &buffer_fd);
	if (err || buffer_fd < 0 || reply.a != BUFFER_SIZE)
		fail("HELLO: %s, buffer fd %d, size %llu", strerror(-err), buffer_fd,
		     (unsigned long long)reply.a);
	printf("ok - HELLO answered through the passed socket: a buffer of %llu bytes\n",
	       (unsigned long long)reply.a);
	err = syncd_call(sock, SYNCD_FLUSH, 0, 0, 0, 0, -1, &reply, NULL);
	if (err)
		fail("FLUSH: %s", strerror(-err));
	printf("ok - FLUSH answered (flush %llu)\n", (unsigned long long)reply.c);
	buffer = mmap(NULL, BUFFER_SIZE, PROT_READ, MAP_SHARED, buffer_fd, 0);
	sink = mmap(NULL, BUFFER_SIZE, PROT_READ, MAP_SHARED, sink_fd, 0);
	if (buffer == MAP_FAILED || sink == MAP_FAILED)
		fail("mmap: %s", strerror(errno));
	if (memcmp(buffer, sink, BUFFER_SIZE))
		fail("the sink differs from the buffer");
	printf("ok - the sink holds the buffer\n");
	close(sock);

	kill(pid, SIGTERM);
	status = reap(pid);
	if (status)
		fail("the daemon exited with status %d on SIGTERM", status);
	if (stat(socket_path, &st) || !S_ISSOCK(st.st_mode))
		fail("the daemon removed %s, which its service manager made", socket_path);
	printf("ok - stopped with status 0, the socket file left to its manager\n");

	/* two sockets: the daemon serves one */
	status = refused(daemon, listen_fd, "2", 0, sink_fd);
	if (status != 1)
		fail("LISTEN_FDS=2: exit status %d, not 1", status);
	printf("ok - LISTEN_FDS=2 refused\n");
	/* descriptor 3 is not a listening SOCK_SEQPACKET socket */
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, other))
		fail("socketpair: %s", strerror(errno));
	status = refused(daemon, other[0], "1", 0, sink_fd);
	if (status != 1)
		fail("a stream socket as descriptor 3: exit status %d, not 1", status);
	printf("ok - a descriptor that is not a listening SOCK_SEQPACKET socket refused\n");
	status = refused(daemon, -1, "1", 0, sink_fd);
	if (status != 1)
		fail("no descriptor 3: exit status %d, not 1", status);
	printf("ok - LISTEN_FDS=1 without a descriptor 3 refused\n");
	/* meant for another process: not the daemon's, and without --socket a usage error */
	status = refused(daemon, listen_fd, "1", getpid(), sink_fd);
	if (status != 2)
		fail("LISTEN_PID of another process: exit status %d, not 2 (usage)", status);
	printf("ok - LISTEN_PID of another process ignored (usage: --socket is needed)\n");

	/* not activated: --socket as before, and the daemon removes its own socket file */
	close(listen_fd);
	if (pipe(pipefd))
		fail("pipe: %s", strerror(errno));
	pid = start(daemon, -1, "1", getpid(), sink_fd, pipefd[1], with_socket);
	close(pipefd[1]);
	if (read(pipefd[0], ready, sizeof(ready) - 1) != 6)
		fail("the daemon with --socket did not start (status %d)", reap(pid));
	close(pipefd[0]);
	kill(pid, SIGTERM);
	status = reap(pid);
	if (status)
		fail("the daemon with --socket exited with status %d on SIGTERM", status);
	if (stat(socket_path, &st) == 0)
		fail("the daemon left its own socket file %s", socket_path);
	printf("ok - with --socket the daemon makes and removes its socket file\n");
	rmdir(dir);
	return 0;
}
