/*
 * server.c - starting and stopping the servers of the peer stores (Redis,
 * memcached) for nsbench.  The benchmark owns them: each is started for one
 * run, in a private directory, on a unix socket, and always stopped and
 * reaped before nsbench moves on, so nothing is left running.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "common.h"

pid_t bench_spawn(const char *prog, char *const argv[], const char *log)
{
	pid_t pid;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "nsbench: fork for %s: %s\n", prog,
			strerror(errno));
		return -1;
	}
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
			      0600);

		if (fd >= 0) {
			dup2(fd, STDOUT_FILENO);
			dup2(fd, STDERR_FILENO);
		}
		signal(SIGINT, SIG_IGN); /* the parent stops us, not ^C */
		signal(SIGTERM, SIG_DFL);
		execvp(prog, argv);
		fprintf(stderr, "nsbench: exec %s: %s\n", prog,
			strerror(errno));
		_exit(127);
	}
	return pid;
}

/* How much of a server's log to show when it failed to start. */
#define LOG_TAIL 2048

static void show_log(const char *log)
{
	char tail[LOG_TAIL + 1];
	FILE *f = fopen(log, "r");
	size_t n;

	if (!f)
		return;
	if (fseek(f, -LOG_TAIL, SEEK_END) != 0)
		rewind(f);
	n = fread(tail, 1, LOG_TAIL, f);
	tail[n] = '\0';
	fclose(f);
	if (n)
		fprintf(stderr, "nsbench: end of %s:\n%s\n", log, tail);
}

int bench_wait_socket(const char *path, pid_t pid, const char *log,
		      unsigned timeout_ms)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000u;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "nsbench: socket path too long: %s\n", path);
		return -1;
	}
	strcpy(sa.sun_path, path);
	for (;;) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int st;

		if (fd < 0) {
			fprintf(stderr, "nsbench: socket: %s\n",
				strerror(errno));
			return -1;
		}
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			close(fd);
			return 0;
		}
		close(fd);
		if (waitpid(pid, &st, WNOHANG) == pid) {
			fprintf(stderr, "nsbench: server for %s exited before "
				"it listened\n", path);
			show_log(log);
			return -1;
		}
		if (now_ns() > deadline || stop_requested) {
			fprintf(stderr, "nsbench: no server on %s after %u ms\n",
				path, timeout_ms);
			show_log(log);
			return -1;
		}
		sleep_ns(10000000);
	}
}

void bench_stop_server(pid_t pid)
{
	uint64_t deadline = now_ns() + 5000000000u;

	if (pid <= 0)
		return;
	kill(pid, SIGTERM);
	for (;;) {
		pid_t r = waitpid(pid, NULL, WNOHANG);

		if (r == pid || (r < 0 && errno != EINTR))
			return;
		if (now_ns() > deadline) {
			kill(pid, SIGKILL);
			while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
				;
			return;
		}
		sleep_ns(10000000);
	}
}

void bench_path(const struct bench *b, const char *name, char *out)
{
	/* B->dir is /dev/shm/nsbench.XXXXXX and NAME a short constant, so
	 * this never truncates; a unix socket path is checked where used. */
	if (snprintf(out, PATH_MAX, "%s/%s", b->dir, name) >= PATH_MAX)
		out[0] = '\0';
}
