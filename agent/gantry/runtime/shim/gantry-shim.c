/*
 * gantry-shim: what stays behind for a running container.
 *
 * The Python supervisor forked from the agent's launcher sets the container up, then
 * execs this program in its own place, so the container's init stays its child while
 * the interpreter's memory is given back: a running container costs a process of a few
 * hundred KiB instead of a Python heap (conmon's reason for being C, too).
 *
 *   gantry-shim PID STATUS_FILE
 *   gantry-shim PID STATUS_FILE LOG_PATH MAX_SIZE MAX_FILES     (fds 3, 4, 5 open)
 *
 * PID is the container's init, a child of this process (directly, or adopted because
 * this process is a child subreaper: set it before forking the init, it survives execve).
 * When it exits, its wait status is written to
 * STATUS_FILE atomically (a temporary file in the same directory, fsync, rename), as
 * one line of JSON: {"pid":N,"status":RAW,"exit_code":N,"signal":N,"finished_ns":T}.
 * Orphans reparented here are reaped too; the shim exits once it has no child left.
 *
 * With a log, fd 3 and fd 4 are the read ends of the container's stdout and stderr pipes
 * and fd 5 is LOG_PATH opened for appending. Everything read is written to the log in
 * the CRI format (kubelet's and conmon's), one line per piece:
 *
 *   2026-11-23T12:35:05.123456789Z stdout F text of a whole line
 *   2026-11-23T12:35:05.123456789Z stderr P a piece of a line that goes on
 *
 * F ends a line (its newline is not written), P is a piece whose line continues in the
 * stream's next record: a read that ends mid-line, or a line longer than LINE_MAX. The
 * pipes are always drained, so a container never blocks on output nobody reads. When the
 * log reaches MAX_SIZE bytes (0: never) it is rotated: LOG_PATH.N-1 becomes LOG_PATH.N,
 * ..., LOG_PATH becomes LOG_PATH.1, and a new LOG_PATH is started; MAX_FILES (0: none)
 * rotated files are kept. Before the exit status is recorded, what the pipes hold is
 * logged, so the log holds the init's whole output once STATUS_FILE exists.
 *
 * Memory: two static buffers (a read of LINE_MAX bytes, OUT_MAX bytes of log records
 * waiting for one write), no stdio buffers, no heap.
 *
 * Exit status: 0 when the status was recorded, 1 when it could not be, 2 on bad usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h> /* rename(2) only: no stdio streams are used */
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 16384 /* the longest piece in one record */
#define OUT_MAX (4 * LINE_MAX_BYTES)
#define HEADER_MAX 48 /* "2026-11-23T12:35:05.123456789Z stdout P " is 40 */
#define MAX_FILES_LIMIT 1000

static char readbuf[LINE_MAX_BYTES];
static char outbuf[OUT_MAX];
static size_t outlen;

struct stream {
	int fd; /* -1 once at end of file */
	const char *name;
};

struct log {
	const char *path;
	int fd;
	unsigned long long size; /* bytes in the current file */
	unsigned long long max_size;
	unsigned max_files;
};

static void say(const char *a, const char *b)
{
	/* Diagnostics go to stderr, the shim's own log file: unbuffered, no stdio. */
	struct iovec iov[4] = {
		{ "gantry-shim: ", 13 },
		{ (void *)a, strlen(a) },
		{ (void *)b, strlen(b) },
		{ "\n", 1 },
	};
	ssize_t ignored = writev(2, iov, 4);
	(void)ignored;
}

static void say_errno(const char *what)
{
	say(what, errno ? strerror(errno) : "");
}

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

/* Decimal digits of v, right-aligned in width characters (zero-padded). */
static char *put_num(char *p, unsigned long long v, int width)
{
	for (int i = width - 1; i >= 0; i--) {
		p[i] = (char)('0' + v % 10);
		v /= 10;
	}
	return p + width;
}

static int format_uint(char *out, unsigned long long v)
{
	char tmp[24];
	int n = 0, i;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (i = 0; i < n; i++)
		out[i] = tmp[n - 1 - i];
	return n;
}

/* --- the exit status ----------------------------------------------------------------- */

static int record(const char *path, pid_t pid, int status)
{
	char tmp[PATH_MAX], line[256], *p = line;
	struct timespec now;
	int exit_code, sig, fd;
	size_t plen = strlen(path);

	if (WIFEXITED(status)) {
		exit_code = WEXITSTATUS(status);
		sig = 0;
	} else {
		sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
		exit_code = 128 + sig;
	}
	clock_gettime(CLOCK_REALTIME, &now);
#define PUT(s) (memcpy(p, s, sizeof(s) - 1), p += sizeof(s) - 1)
	PUT("{\"pid\":");
	p += format_uint(p, (unsigned long long)pid);
	PUT(",\"status\":");
	p += format_uint(p, (unsigned)status);
	PUT(",\"exit_code\":");
	p += format_uint(p, (unsigned)exit_code);
	PUT(",\"signal\":");
	p += format_uint(p, (unsigned)sig);
	PUT(",\"finished_ns\":");
	p += format_uint(p, (unsigned long long)now.tv_sec * 1000000000ULL +
				    (unsigned long long)now.tv_nsec);
	PUT("}\n");
#undef PUT
	if (plen + 5 > sizeof(tmp))
		return -1;
	memcpy(tmp, path, plen);
	memcpy(tmp + plen, ".tmp", 5);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	if (write_all(fd, line, (size_t)(p - line)) < 0 || fsync(fd) < 0) {
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

/* --- the log ------------------------------------------------------------------------- */

static void flush_log(struct log *log)
{
	if (outlen == 0)
		return;
	/* A full disk loses records, never the container: the pipes keep being drained. */
	if (write_all(log->fd, outbuf, outlen) < 0)
		say_errno("writing the log: ");
	log->size += outlen;
	outlen = 0;
}

static int rotated_name(char *out, const char *path, unsigned n)
{
	size_t plen = strlen(path);
	char digits[16];
	int dlen = format_uint(digits, n);

	if (plen + 1 + (size_t)dlen + 1 > PATH_MAX)
		return -1;
	memcpy(out, path, plen);
	out[plen] = '.';
	memcpy(out + plen + 1, digits, (size_t)dlen);
	out[plen + 1 + dlen] = '\0';
	return 0;
}

static void rotate_log(struct log *log)
{
	char from[PATH_MAX], to[PATH_MAX];
	int fd;

	flush_log(log);
	if (log->max_files == 0) {
		/* No rotated file is kept: the log starts over. */
		if (ftruncate(log->fd, 0) < 0)
			say_errno("truncating the log: ");
		log->size = 0;
		return;
	}
	for (unsigned n = log->max_files; n > 1; n--) {
		if (rotated_name(from, log->path, n - 1) == 0 &&
		    rotated_name(to, log->path, n) == 0 && rename(from, to) < 0 && errno != ENOENT)
			say_errno("rotating the log: ");
	}
	if (rotated_name(to, log->path, 1) < 0 || rename(log->path, to) < 0) {
		say_errno("rotating the log: ");
		return; /* keep appending to the current file */
	}
	fd = open(log->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	if (fd < 0) {
		say_errno("reopening the log: ");
		return; /* the renamed file stays open: records go on there */
	}
	close(log->fd);
	log->fd = fd;
	log->size = 0;
}

static size_t format_header(char *h, const struct timespec *now, const char *stream, char tag)
{
	struct tm tm;
	char *p = h;

	gmtime_r(&now->tv_sec, &tm);
	p = put_num(p, (unsigned long long)tm.tm_year + 1900, 4);
	*p++ = '-';
	p = put_num(p, (unsigned long long)tm.tm_mon + 1, 2);
	*p++ = '-';
	p = put_num(p, (unsigned long long)tm.tm_mday, 2);
	*p++ = 'T';
	p = put_num(p, (unsigned long long)tm.tm_hour, 2);
	*p++ = ':';
	p = put_num(p, (unsigned long long)tm.tm_min, 2);
	*p++ = ':';
	p = put_num(p, (unsigned long long)tm.tm_sec, 2);
	*p++ = '.';
	p = put_num(p, (unsigned long long)now->tv_nsec, 9);
	*p++ = 'Z';
	*p++ = ' ';
	memcpy(p, stream, 6); /* "stdout" or "stderr" */
	p += 6;
	*p++ = ' ';
	*p++ = tag;
	*p++ = ' ';
	return (size_t)(p - h);
}

static void log_record(struct log *log, const struct timespec *now, const char *stream, char tag,
		       const char *text, size_t len)
{
	char header[HEADER_MAX];
	size_t hlen = format_header(header, now, stream, tag), total = hlen + len + 1;

	if (log->max_size && log->size + outlen > 0 && log->size + outlen + total > log->max_size)
		rotate_log(log);
	if (outlen + total > sizeof(outbuf))
		flush_log(log);
	memcpy(outbuf + outlen, header, hlen);
	memcpy(outbuf + outlen + hlen, text, len);
	outbuf[outlen + hlen + len] = '\n';
	outlen += total;
}

/* Log one read: a record per line, F for whole lines, P for the piece left at the end. */
static void log_chunk(struct log *log, const char *stream, const char *buf, size_t len)
{
	struct timespec now;
	const char *end = buf + len, *nl;

	clock_gettime(CLOCK_REALTIME, &now);
	while (buf < end) {
		nl = memchr(buf, '\n', (size_t)(end - buf));
		if (nl == NULL) {
			log_record(log, &now, stream, 'P', buf, (size_t)(end - buf));
			break;
		}
		log_record(log, &now, stream, 'F', buf, (size_t)(nl - buf));
		buf = nl + 1;
	}
}

/* Read what the pipe holds now (non-blocking) into the log; closes it at end of file. */
static void drain(struct log *log, struct stream *s)
{
	while (s->fd >= 0) {
		ssize_t n = read(s->fd, readbuf, sizeof(readbuf));
		if (n > 0) {
			log_chunk(log, s->name, readbuf, (size_t)n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		close(s->fd); /* end of file, or an error that will not go away */
		s->fd = -1;
	}
	flush_log(log);
}

/* --- waiting ------------------------------------------------------------------------- */

static int note_exit(pid_t pid, int status, pid_t target, const char *status_file)
{
	if (pid != target)
		return -1;
	if (record(status_file, pid, status) < 0) {
		say_errno("recording the exit status: ");
		return 1;
	}
	return 0;
}

/* Without a log: block in waitpid until no child is left. */
static int supervise(pid_t target, const char *status_file)
{
	int status, recorded = -1, r;
	pid_t pid;

	for (;;) {
		pid = waitpid(-1, &status, __WALL);
		if (pid < 0) {
			if (errno == EINTR)
				continue;
			break; /* ECHILD: nothing left to wait for */
		}
		r = note_exit(pid, status, target, status_file);
		if (r >= 0)
			recorded = r;
	}
	return recorded;
}

/* With a log: poll the pipes and a signalfd for SIGCHLD. */
static int supervise_logging(pid_t target, const char *status_file, struct log *log)
{
	struct stream streams[2] = { { 3, "stdout" }, { 4, "stderr" } };
	struct pollfd pfd[3];
	sigset_t chld;
	int sfd, recorded = -1, r, status, children = 1;
	pid_t pid;

	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &chld, NULL) < 0 ||
	    (sfd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC)) < 0) {
		say_errno("signalfd: ");
		return 1;
	}
	for (int i = 0; i < 2; i++)
		fcntl(streams[i].fd, F_SETFL, fcntl(streams[i].fd, F_GETFL) | O_NONBLOCK);
	while (children) {
		/* Reap first: a SIGCHLD may have come before the signalfd existed. */
		for (;;) {
			pid = waitpid(-1, &status, __WALL | WNOHANG);
			if (pid == 0)
				break;
			if (pid < 0) {
				if (errno == EINTR)
					continue;
				children = 0; /* ECHILD */
				break;
			}
			if (pid == target) { /* its output first, then its status */
				drain(log, &streams[0]);
				drain(log, &streams[1]);
			}
			r = note_exit(pid, status, target, status_file);
			if (r >= 0)
				recorded = r;
		}
		if (!children)
			break;
		pfd[0] = (struct pollfd){ .fd = sfd, .events = POLLIN };
		pfd[1] = (struct pollfd){ .fd = streams[0].fd, .events = POLLIN };
		pfd[2] = (struct pollfd){ .fd = streams[1].fd, .events = POLLIN };
		if (poll(pfd, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			say_errno("poll: ");
			break;
		}
		for (int i = 0; i < 2; i++)
			if (pfd[i + 1].revents)
				drain(log, &streams[i]);
		if (pfd[0].revents) {
			struct signalfd_siginfo info[4];
			while (read(sfd, info, sizeof(info)) > 0)
				;
		}
	}
	/* No process of the container is left: what it wrote last is still in the pipes. */
	drain(log, &streams[0]);
	drain(log, &streams[1]);
	for (int i = 0; i < 2; i++)
		if (streams[i].fd >= 0)
			close(streams[i].fd);
	return recorded;
}

static int parse_number(const char *text, unsigned long long max, unsigned long long *out)
{
	char *end;

	errno = 0;
	*out = strtoull(text, &end, 10);
	return errno || *end || !*text || text[0] == '-' || *out > max ? -1 : 0;
}

int main(int argc, char **argv)
{
	unsigned long long value;
	struct stat st;
	struct log log = { 0 };
	pid_t target;
	int recorded;

	if (argc != 3 && argc != 6) {
		say("usage: gantry-shim PID STATUS_FILE [LOG_PATH MAX_SIZE MAX_FILES]", "");
		return 2;
	}
	if (parse_number(argv[1], INT_MAX, &value) < 0 || value == 0) {
		say("bad pid: ", argv[1]);
		return 2;
	}
	target = (pid_t)value;
	if (argc == 6) {
		log.path = argv[3];
		log.fd = 5;
		if (parse_number(argv[4], ULLONG_MAX, &log.max_size) < 0) {
			say("bad log size: ", argv[4]);
			return 2;
		}
		if (parse_number(argv[5], MAX_FILES_LIMIT, &value) < 0) {
			say("bad log file count: ", argv[5]);
			return 2;
		}
		log.max_files = (unsigned)value;
		if (fstat(3, &st) < 0 || !S_ISFIFO(st.st_mode) || fstat(4, &st) < 0 ||
		    !S_ISFIFO(st.st_mode) || fstat(5, &st) < 0) {
			say("with a log, fds 3 and 4 are pipes and fd 5 the log file", "");
			return 2;
		}
		log.size = (unsigned long long)st.st_size;
		fcntl(5, F_SETFD, FD_CLOEXEC);
	}
	/* Orphans of the container (its init died first) land here, not on the host's init. */
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) {
		say_errno("PR_SET_CHILD_SUBREAPER: ");
		return 1;
	}
	/* A terminal hang-up or ^C aimed at whoever started the container is not for us. */
	signal(SIGHUP, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);

	recorded = log.path ? supervise_logging(target, argv[2], &log)
			    : supervise(target, argv[2]);
	if (recorded == -1) {
		char digits[16];
		digits[format_uint(digits, (unsigned long long)target)] = '\0';
		say("this pid was never a child of this process: ", digits);
	}
	return recorded == 0 ? 0 : 1;
}
