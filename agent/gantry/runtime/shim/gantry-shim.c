/*
 * gantry-shim: what stays behind for a running container.
 *
 * The Python supervisor forked from the agent's launcher sets the container up, then
 * execs this program in its own place, so the container's init stays its child while
 * the interpreter's memory is given back: a running container costs a process of a few
 * hundred KiB instead of a Python heap (conmon's reason for being C, too).
 *
 *   gantry-shim PID STATUS_FILE
 *
 * PID is the container's init, a child of this process (directly, or adopted because
 * this process is a child subreaper: set it before forking the init, it survives execve).
 * When it exits, its wait status is written to
 * STATUS_FILE atomically (a temporary file in the same directory, fsync, rename), as
 * one line of JSON: {"pid":N,"status":RAW,"exit_code":N,"signal":N,"finished_ns":T}.
 * Orphans reparented here are reaped too; the shim exits once it has no child left.
 * Exit status: 0 when the status was recorded, 1 when it could not be, 2 on bad usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

static int record(const char *path, pid_t pid, int status)
{
	char tmp[PATH_MAX], line[256];
	struct timespec now;
	int exit_code, sig, fd, len;

	if (WIFEXITED(status)) {
		exit_code = WEXITSTATUS(status);
		sig = 0;
	} else {
		sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
		exit_code = 128 + sig;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	len = snprintf(line, sizeof(line),
		       "{\"pid\":%d,\"status\":%d,\"exit_code\":%d,\"signal\":%d,"
		       "\"finished_ns\":%lld}\n",
		       (int)pid, status, exit_code, sig,
		       (long long)now.tv_sec * 1000000000LL + now.tv_nsec);
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -1;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	if (write_all(fd, line, (size_t)len) < 0 || fsync(fd) < 0) {
		close(fd);
		unlink(tmp);
		return -1;
	}
	close(fd);
	if (rename(tmp, path) < 0) {
		unlink(tmp);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	pid_t target, pid;
	int status, recorded = -1;
	char *end;

	if (argc != 3) {
		fprintf(stderr, "usage: gantry-shim PID STATUS_FILE\n");
		return 2;
	}
	errno = 0;
	target = (pid_t)strtol(argv[1], &end, 10);
	if (errno || *end || target <= 0) {
		fprintf(stderr, "gantry-shim: bad pid '%s'\n", argv[1]);
		return 2;
	}
	/* Orphans of the container (its init died first) land here, not on the host's init. */
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) {
		perror("gantry-shim: PR_SET_CHILD_SUBREAPER");
		return 1;
	}
	/* A terminal hang-up or ^C aimed at whoever started the container is not for us. */
	signal(SIGHUP, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);

	for (;;) {
		pid = waitpid(-1, &status, __WALL);
		if (pid < 0) {
			if (errno == EINTR)
				continue;
			break; /* ECHILD: nothing left to wait for */
		}
		if (pid == target) {
			recorded = record(argv[2], pid, status);
			if (recorded < 0)
				perror("gantry-shim: recording the exit status");
		}
	}
	if (recorded == -1)
		fprintf(stderr, "gantry-shim: pid %d was never a child of this process\n",
			(int)target);
	return recorded == 0 ? 0 : 1;
}
