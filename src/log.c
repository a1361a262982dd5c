/*
 * log.c - leveled logging to stderr (journald picks it up under systemd),
 * or to a file put in stderr's place, which SIGUSR1 reopens.
 *
 * libevent's own messages are routed here too, so everything the process
 * says goes through one place; they are rate-limited like any line that
 * a peer can make repeat (log_write_limited).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#include "xmalloc.h"

int log_level_now = LOG_INFO;

static const char *const log_names[] = { "error", "warn", "info", "debug" };
static char *log_path;		/* NULL: stderr as it was given */
/* libevent warns once per event (a failed connection, say): no flood. */
static struct log_limit log_event_limit;

/* libevent's messages, in our format; never calls back into libevent. */
static void
log_event_cb(int severity, const char *msg)
{
	int	level;

	switch (severity) {
	case EVENT_LOG_DEBUG:
		level = LOG_DEBUG;
		break;
	case EVENT_LOG_MSG:
		level = LOG_INFO;
		break;
	case EVENT_LOG_WARN:
		level = LOG_WARN;
		break;
	default:
		level = LOG_ERR;
		break;
	}
	if (level == LOG_DEBUG)
		log_debug("libevent: %s", msg);
	else
		log_limit_at(&log_event_limit, level, "libevent: %s", msg);
}

void
log_init(int level)
{
	/* Worker threads read it as they log. */
	__atomic_store_n(&log_level_now, level, __ATOMIC_RELAXED);
	event_set_log_callback(log_event_cb);
}

static int log_fd = -1;		/* the file, until it takes stderr's place */

int
log_open_append(const char *what, const char *path, char **cause)
{
	int	fd;

	if ((fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
	    0640)) == -1) {
		xasprintf(cause, "%s %s: %s", what, path, strerror(errno));
		return (-1);
	}
	return (fd);
}

int
log_open(const char *where, char **cause)
{
	if (strcmp(where, "stderr") == 0)
		return (0);
	if ((log_fd = log_open_append("error log", where, cause)) == -1)
		return (-1);
	free(log_path);
	log_path = xstrdup(where);
	return (0);
}

/* Put fd in target's place and close it; -1 and *cause on failure. */
static int
log_swap(int fd, int target, const char *what, const char *path,
    char **cause)
{
	int	rc = 0;

	if (target == STDERR_FILENO)
		fflush(stderr);
	if (dup2(fd, target) == -1) {
		xasprintf(cause, "%s %s: dup2: %s", what, path,
		    strerror(errno));
		rc = -1;
	}
	close(fd);
	return (rc);
}

int
log_reopen_file(const char *what, const char *path, int target,
    char **cause)
{
	int	fd;

	if ((fd = log_open_append(what, path, cause)) == -1)
		return (-1);
	return (log_swap(fd, target, what, path, cause));
}

void
log_start(void)
{
	char	*cause = NULL;

	if (log_fd == -1)
		return;
	/* Whatever libraries print goes to the file too. */
	if (log_swap(log_fd, STDERR_FILENO, "error log", log_path,
	    &cause) == -1) {
		log_err("%s", cause);
		free(cause);
	}
	log_fd = -1;
}

int
log_reopen(char **cause)
{
	if (log_path == NULL)
		return (0);
	return (log_reopen_file("error log", log_path, STDERR_FILENO, cause));
}

int
log_level_parse(const char *s)
{
	size_t	i;

	for (i = 0; i < sizeof log_names / sizeof log_names[0]; i++) {
		if (strcmp(s, log_names[i]) == 0)
			return ((int)i);
	}
	return (-1);
}

/*
 * One line, one write(2): lines from several threads, and the access log
 * writer's (see accesslog.c) on the same descriptor, never interleave
 * inside a line (a pipe keeps writes of up to PIPE_BUF whole).
 */
static void
log_vwrite(int level, const char *fmt, va_list ap)
{
	char		line[4096], tbuf[32];
	struct timespec	ts;
	struct tm	tm;
	size_t		len, off;
	ssize_t		n;
	int		rc;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(tbuf, sizeof tbuf, "%Y-%m-%dT%H:%M:%S", &tm);
	rc = snprintf(line, sizeof line, "%s.%03ldZ respcache[%s]: ", tbuf,
	    ts.tv_nsec / 1000000, log_names[level]);
	len = rc > 0 ? (size_t)rc : 0;
	rc = vsnprintf(line + len, sizeof line - len - 1, fmt, ap);
	if (rc > 0)
		len += (size_t)rc < sizeof line - len - 1 ? (size_t)rc :
		    sizeof line - len - 2;
	line[len++] = '\n';
	off = 0;
	while (off < len) {
		n = write(STDERR_FILENO, line + off, len - off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		off += (size_t)n;
	}
}

void
log_write(int level, const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	log_vwrite(level, fmt, ap);
	va_end(ap);
}

static long long
log_now_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

void
log_write_limited(struct log_limit *lim, int level, const char *fmt, ...)
{
	va_list			 ap;
	char			 msg[3072];
	long long		 now = log_now_ms(), last;
	unsigned long long	 n;

	last = __atomic_load_n(&lim->last_ms, __ATOMIC_RELAXED);
	/* Of the threads that find the second over, one wins it. */
	if ((last != 0 && now - last < 1000) ||
	    !__atomic_compare_exchange_n(&lim->last_ms, &last, now, 0,
	    __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
		__atomic_add_fetch(&lim->quiet, 1, __ATOMIC_RELAXED);
		return;
	}
	n = __atomic_exchange_n(&lim->quiet, 0, __ATOMIC_RELAXED);
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (n == 0) {
		log_write(level, "%s", msg);
		return;
	}
	log_write(level, "%s (%llu more in the last %.1f s)", msg, n,
	    (double)(now - last) / 1000.0);
}

void
fatalx(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	log_vwrite(LOG_ERR, fmt, ap);
	va_end(ap);
	/*
	 * Not exit(): from a worker thread it would run atexit handlers
	 * (libraries', the sanitizers') while the other threads still run.
	 * The line above is written already; stdio holds nothing of ours.
	 */
	_exit(1);
}
