/*
 * accesslog.c - the access log; see accesslog.h.
 *
 * Workers never write themselves: each hands its buffered lines to a
 * queue, and one writer thread writes the queue out.  A stalled journald
 * pipe or disk holds only that thread; past ACCESSLOG_QUEUE_MAX waiting,
 * lines are dropped (and counted), never requests.  A reopen opens the
 * file again and dup2()s it over the one descriptor, so each write goes
 * wholly to the old file or wholly to the new one.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>

#include "accesslog.h"
#include "fmt.h"
#include "log.h"
#include "xmalloc.h"

#define ACCESSLOG_FLUSH_AT	(32 * 1024)
#define ACCESSLOG_QUEUE_MAX	(16 * 1024 * 1024)
/*
 * Once woken, the writer lets lines gather this long before it writes:
 * under load it takes the queue a hundred times a second, not once per
 * loop pass of every worker, and workers find it awake and need not wake
 * it (a futex call and two context switches per pass otherwise).
 */
#define ACCESSLOG_BATCH_NS	(10 * 1000 * 1000)

struct accesslog {
	struct evbuffer		*buf;
	struct event		*flush;		/* end of this loop pass */
	time_t			 stamp_at;
	char			 stamp[24];	/* "2026-11-23T10:00:00" */
};

static pthread_mutex_t	 accesslog_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t	 accesslog_cond = PTHREAD_COND_INITIALIZER;
static pthread_t	 accesslog_writer;
/* Under accesslog_mtx: */
static struct evbuffer	*accesslog_queue;	/* lines to write */
static int		 accesslog_stopping;
static int		 accesslog_asleep;	/* the writer waits: wake it */
static uint64_t		 accesslog_dropped;

static int		 accesslog_fd = -1;	/* -1: off */
static char		*accesslog_path;	/* NULL: stderr */
static int		 accesslog_json;

/*
 * How much of out to write at once: whole lines, at most PIPE_BUF bytes
 * (a pipe keeps such a write whole), so that the error log's lines, also
 * on stderr, fall between access lines and never inside one.
 */
static size_t
accesslog_chunk(struct evbuffer *out)
{
	struct evbuffer_ptr	 eol;
	size_t			 len = evbuffer_get_length(out), n;
	const char		*p, *nl;

	n = len < PIPE_BUF ? len : PIPE_BUF;
	if ((p = (const char *)evbuffer_pullup(out, (ev_ssize_t)n)) == NULL)
		return (len);
	if ((nl = memrchr(p, '\n', n)) != NULL)
		return ((size_t)(nl - p) + 1);
	/* A line longer than PIPE_BUF goes whole, on its own. */
	eol = evbuffer_search(out, "\n", 1, NULL);
	return (eol.pos >= 0 ? (size_t)eol.pos + 1 : len);
}

/* The writer thread: write out whatever the workers queued. */
static void *
accesslog_write_loop(void *arg)
{
	const struct timespec batch = { 0, ACCESSLOG_BATCH_NS };
	struct evbuffer	*out;
	size_t		 len;
	ssize_t		 n;

	(void)arg;
	out = xevbuffer_new();
	pthread_mutex_lock(&accesslog_mtx);
	for (;;) {
		while (evbuffer_get_length(accesslog_queue) == 0 &&
		    !accesslog_stopping) {
			accesslog_asleep = 1;
			pthread_cond_wait(&accesslog_cond, &accesslog_mtx);
		}
		accesslog_asleep = 0;
		if (evbuffer_get_length(accesslog_queue) == 0)
			break;
		if (!accesslog_stopping) {
			pthread_mutex_unlock(&accesslog_mtx);
			nanosleep(&batch, NULL);
			pthread_mutex_lock(&accesslog_mtx);
		}
		evbuffer_add_buffer(out, accesslog_queue);
		pthread_mutex_unlock(&accesslog_mtx);
		while ((len = evbuffer_get_length(out)) > 0) {
			n = evbuffer_write_atmost(out, accesslog_fd,
			    (ev_ssize_t)accesslog_chunk(out));
			if (n == -1 && errno == EINTR)
				continue;
			if (n <= 0) {
				/* Unwritable: lines are lost, not requests. */
				evbuffer_drain(out, len);
				break;
			}
		}
		pthread_mutex_lock(&accesslog_mtx);
	}
	pthread_mutex_unlock(&accesslog_mtx);
	evbuffer_free(out);
	return (NULL);
}

int
accesslog_open(const char *where, int json, char **cause)
{
	int	rc;

	accesslog_json = json;
	if (strcmp(where, "off") == 0)
		return (0);
	if (strcmp(where, "stderr") == 0)
		accesslog_fd = STDERR_FILENO;
	else {
		if ((accesslog_fd = log_open_append("access log", where,
		    cause)) == -1)
			return (-1);
		accesslog_path = xstrdup(where);
	}
	accesslog_queue = xevbuffer_new();
	if ((rc = pthread_create(&accesslog_writer, NULL,
	    accesslog_write_loop, NULL)) != 0)
		fatalx("cannot start the access log thread: %s", strerror(rc));
	return (0);
}

uint64_t
accesslog_lost(void)
{
	uint64_t	n;

	pthread_mutex_lock(&accesslog_mtx);
	n = accesslog_dropped;
	pthread_mutex_unlock(&accesslog_mtx);
	return (n);
}

int
accesslog_reopen(char **cause)
{
	if (accesslog_path == NULL)
		return (0);
	return (log_reopen_file("access log", accesslog_path, accesslog_fd,
	    cause));
}

void
accesslog_close(void)
{
	struct timespec	ts;

	if (accesslog_queue != NULL) {
		pthread_mutex_lock(&accesslog_mtx);
		accesslog_stopping = 1;
		pthread_cond_signal(&accesslog_cond);
		pthread_mutex_unlock(&accesslog_mtx);
		/* A log that cannot be written must not hold the exit up. */
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 2;
		if (pthread_timedjoin_np(accesslog_writer, NULL, &ts) != 0) {
			log_warnx("access log: lines still unwritten at exit");
			return;
		}
		evbuffer_free(accesslog_queue);
		accesslog_queue = NULL;
	}
	if (accesslog_path != NULL)
		close(accesslog_fd);
	accesslog_fd = -1;
	free(accesslog_path);
	accesslog_path = NULL;
}

/* Hand this worker's lines to the writer (or drop them if it is behind). */
static void
accesslog_flush(struct accesslog *al)
{
	size_t	len = evbuffer_get_length(al->buf);
	int	dropped = 0;

	if (len == 0)
		return;
	pthread_mutex_lock(&accesslog_mtx);
	if (evbuffer_get_length(accesslog_queue) + len > ACCESSLOG_QUEUE_MAX) {
		accesslog_dropped++;
		dropped = accesslog_dropped == 1;
	} else
		evbuffer_add_buffer(accesslog_queue, al->buf);
	if (accesslog_asleep)
		pthread_cond_signal(&accesslog_cond);
	pthread_mutex_unlock(&accesslog_mtx);
	if (evbuffer_get_length(al->buf) > 0) {
		evbuffer_drain(al->buf, len);
		if (dropped)
			log_warnx("access log: the writer is behind by %d MiB: "
			    "lines are dropped (see respcache_access_log_"
			    "dropped_total)", ACCESSLOG_QUEUE_MAX >> 20);
	}
}

static void
accesslog_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	accesslog_flush(arg);
}

struct accesslog *
accesslog_new(struct event_base *base)
{
	struct accesslog	*al;

	if (accesslog_fd == -1)
		return (NULL);
	al = xcalloc(1, sizeof *al);
	al->buf = xevbuffer_new();
	if ((al->flush = event_new(base, -1, 0, accesslog_flush_cb, al)) ==
	    NULL)
		fatalx("out of memory");
	return (al);
}

void
accesslog_free(struct accesslog *al)
{
	if (al == NULL)
		return;
	accesslog_flush(al);
	event_free(al->flush);
	evbuffer_free(al->buf);
	free(al);
}

/* 1 if a byte must be escaped in a text line. */
static int
accesslog_escaped(unsigned char c)
{
	return (c <= ' ' || c >= 0x7f || c == '"' || c == '\\');
}

static const char accesslog_hex[] = "0123456789abcdef";

/*
 * Text: a string with blanks, quotes, backslashes or controls escaped
 * (\xHH: at most 4 bytes for each of s); its clean runs go in whole.
 */
static char *
accesslog_text(char *p, const char *end, const char *s)
{
	const unsigned char	*c, *run;
	char			 esc[4] = { '\\', 'x' };

	if (s == NULL || *s == '\0')
		return (fmt_lit(p, end, "-"));
	for (c = run = (const unsigned char *)s; *c != '\0'; c++) {
		if (!accesslog_escaped(*c))
			continue;
		p = fmt_mem(p, end, run, (size_t)(c - run));
		esc[2] = accesslog_hex[*c >> 4];
		esc[3] = accesslog_hex[*c & 0xf];
		p = fmt_mem(p, end, esc, sizeof esc);
		run = c + 1;
	}
	return (fmt_mem(p, end, run, (size_t)(c - run)));
}

/* Seconds with six decimals, from integers: no floating-point printf. */
static char *
accesslog_secs(char *p, const char *end, double secs)
{
	uint64_t	us = secs > 0 ? (uint64_t)(secs * 1e6 + 0.5) : 0;

	p = fmt_u64(p, end, us / 1000000);
	p = fmt_lit(p, end, ".");
	return (fmt_u64_0(p, end, us % 1000000, 6));
}

static size_t
accesslog_len(const char *s)
{
	return (s != NULL ? strlen(s) : 0);
}

/* The text line, formatted in place in the buffer's own space. */
static void
accesslog_line_text(struct evbuffer *b, const char *ts,
    const struct access_entry *e)
{
	struct evbuffer_iovec	 v;
	char			*p, *end;
	size_t			 most;

	/* Fixed words and numbers, then what may need escaping. */
	most = 256 + strlen(ts) + strlen(e->method) + strlen(e->route) +
	    strlen(e->cache) + 4 * (accesslog_len(e->client) +
	    accesslog_len(e->uri) + accesslog_len(e->request_id));
	if (evbuffer_reserve_space(b, (ev_ssize_t)most, &v, 1) != 1)
		fatalx("out of memory");
	p = v.iov_base;
	end = p + v.iov_len;
	p = fmt_str(p, end, ts);
	p = fmt_lit(p, end, " req=");
	p = fmt_u64(p, end, e->serial);
	p = fmt_lit(p, end, " client=");
	p = accesslog_text(p, end, e->client);
	p = fmt_lit(p, end, " method=");
	p = fmt_str(p, end, e->method);
	p = fmt_lit(p, end, " path=");
	p = accesslog_text(p, end, e->uri);
	p = fmt_lit(p, end, " route=");
	p = fmt_str(p, end, e->route);
	p = fmt_lit(p, end, " status=");
	p = fmt_u64(p, end, (uint64_t)e->status);
	p = fmt_lit(p, end, " cache=");
	p = fmt_str(p, end, e->cache);
	if (e->upstream_status > 0) {
		p = fmt_lit(p, end, " upstream_status=");
		p = fmt_u64(p, end, (uint64_t)e->upstream_status);
		p = fmt_lit(p, end, " upstream_time=");
		p = accesslog_secs(p, end, e->upstream_secs);
	} else
		p = fmt_lit(p, end, " upstream_status=- upstream_time=-");
	p = fmt_lit(p, end, " bytes=");
	p = fmt_u64(p, end, e->bytes);
	p = fmt_lit(p, end, " request_id=");
	p = accesslog_text(p, end, e->request_id);
	p = fmt_lit(p, end, " time=");
	p = accesslog_secs(p, end, e->secs);
	p = fmt_lit(p, end, "\n");
	if (p == NULL)
		fatalx("access log: a line outgrew its bound");
	v.iov_len = (size_t)(p - (char *)v.iov_base);
	evbuffer_commit_space(b, &v, 1);
}

/*
 * A JSON string of s: as it is when it is UTF-8, else with every byte
 * outside printable ASCII written \xHH (what a client or the upstream
 * sends need not be UTF-8, and its line must not be lost).
 */
static json_t *
accesslog_json_str(const char *s)
{
	json_t	*j;
	char	*esc, *end;
	size_t	 n;

	if (s == NULL)
		return (json_null());
	if ((j = json_string(s)) != NULL)
		return (j);
	n = 4 * strlen(s) + 1;
	esc = xmalloc(n);
	end = accesslog_text(esc, esc + n, s);
	j = json_stringn(esc, (size_t)(end - esc));
	free(esc);
	return (j);
}

static void
accesslog_line_json(struct evbuffer *b, const char *ts,
    const struct access_entry *e)
{
	json_t	*o;
	char	*s;

	o = json_pack("{s:s, s:I, s:o, s:s, s:o, s:s, s:i, s:s, s:o, s:o, "
	    "s:I, s:o, s:f}", "time", ts, "req", (json_int_t)e->serial,
	    "client", accesslog_json_str(e->client),
	    "method", e->method, "path", accesslog_json_str(e->uri != NULL ?
	    e->uri : ""), "route", e->route, "status", e->status,
	    "cache", e->cache,
	    "upstream_status", e->upstream_status > 0 ?
	    json_integer(e->upstream_status) : json_null(), "upstream_time",
	    e->upstream_status > 0 ? json_real(e->upstream_secs) : json_null(),
	    "bytes", (json_int_t)e->bytes, "request_id",
	    accesslog_json_str(e->request_id), "duration", e->secs);
	if (o == NULL || (s = json_dumps(o, JSON_COMPACT |
	    JSON_ENSURE_ASCII)) == NULL) {
		json_decref(o);
		log_warnx("access log: a line could not be written as JSON");
		return;
	}
	evbuffer_add_printf(b, "%s\n", s);
	free(s);
	json_decref(o);
}

void
accesslog_write(struct accesslog *al, const struct access_entry *e)
{
	struct timespec	ts;
	struct tm	tm;
	char		stamp[40], *p;

	if (al == NULL)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	if (ts.tv_sec != al->stamp_at) {
		gmtime_r(&ts.tv_sec, &tm);
		strftime(al->stamp, sizeof al->stamp, "%Y-%m-%dT%H:%M:%S", &tm);
		al->stamp_at = ts.tv_sec;
	}
	p = fmt_str(stamp, stamp + sizeof stamp - 1, al->stamp);
	p = fmt_lit(p, stamp + sizeof stamp - 1, ".");
	p = fmt_u64_0(p, stamp + sizeof stamp - 1,
	    (uint64_t)ts.tv_nsec / 1000000, 3);
	p = fmt_lit(p, stamp + sizeof stamp - 1, "Z");
	if (p == NULL)
		return;
	*p = '\0';
	if (accesslog_json)
		accesslog_line_json(al->buf, stamp, e);
	else
		accesslog_line_text(al->buf, stamp, e);
	if (evbuffer_get_length(al->buf) >= ACCESSLOG_FLUSH_AT)
		accesslog_flush(al);
	else
		event_active(al->flush, EV_TIMEOUT, 0);
}
