/*
 * log.c - leveled logging to stderr (journald picks it up under systemd).
 *
 * libevent's own messages are routed here too, so everything the process
 * says goes through one place.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "log.h"

int log_level_now = LOG_INFO;

static const char *const log_names[] = { "error", "warn", "info", "debug" };

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
	log_at(level, "libevent: %s", msg);
}

void
log_init(int level)
{
	log_level_now = level;
	event_set_log_callback(log_event_cb);
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

static void
log_vwrite(int level, const char *fmt, va_list ap)
{
	char		tbuf[32];
	struct timespec	ts;
	struct tm	tm;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(tbuf, sizeof tbuf, "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "%s.%03ldZ respcache[%s]: ", tbuf, ts.tv_nsec / 1000000,
	    log_names[level]);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void
log_write(int level, const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	log_vwrite(level, fmt, ap);
	va_end(ap);
}

void
fatalx(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	log_vwrite(LOG_ERR, fmt, ap);
	va_end(ap);
	exit(1);
}
