/*
 * guard.c - NUL bytes and a deadline for request headers; see guard.h.
 *
 * Each accepted connection gets a bufferevent of ours (evhttp_set_bevcb)
 * with a callback on its input buffer, called as bytes are read and
 * before evhttp parses them.  No state is freed with a connection: the
 * table (one per worker thread) is indexed by descriptor, and a connection's first read makes
 * its descriptor's entry new.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>

#include "guard.h"
#include "log.h"

struct guard_conn {
	struct timeval		 started;	/* a request's first byte */
	int			 waiting;	/* its headers still coming */
	int			 in_service;	/* handed to the proxy */
	int			 bad;		/* a NUL byte in its headers */
	char			 tail[3];	/* last bytes, for CRLFCRLF */
	size_t			 ntail;
};

static __thread struct guard_conn *guard_tab;
static __thread size_t		 guard_len;
static __thread struct timeval	 guard_timeout;

/* The entry of fd; fresh makes it a new connection's. */
static struct guard_conn *
guard_get(evutil_socket_t fd, int fresh)
{
	struct guard_conn	*g;
	size_t			 n;

	if (fd < 0)
		return (NULL);
	if ((size_t)fd >= guard_len) {
		n = guard_len ? guard_len : 256;
		while (n <= (size_t)fd)
			n *= 2;
		if ((guard_tab = reallocarray(guard_tab, n,
		    sizeof *guard_tab)) == NULL)
			fatalx("out of memory");
		memset(guard_tab + guard_len, 0,
		    (n - guard_len) * sizeof *guard_tab);
		guard_len = n;
	}
	g = &guard_tab[fd];
	if (fresh)
		memset(g, 0, sizeof *g);
	return (g);
}

/*
 * The end (exclusive) of the first blank line in p[0..n) ("\n\n" or
 * "\n\r\n", as evhttp reads them), or 0.
 */
static size_t
guard_blank_line(const char *p, size_t n)
{
	const char	*q = p, *e = p + n, *nl;

	/* A blank line: a '\n' followed by '\n', or by "\r\n". */
	while ((nl = memchr(q, '\n', (size_t)(e - q))) != NULL) {
		if (nl + 1 < e && nl[1] == '\n')
			return ((size_t)(nl - p) + 2);
		if (nl + 2 < e && nl[1] == '\r' && nl[2] == '\n')
			return ((size_t)(nl - p) + 3);
		q = nl + 1;
	}
	return (0);
}

/*
 * Look for the blank line that ends the headers in the bytes p[0..n),
 * which follow the last bytes seen (g->tail).  Returns how many of p's
 * bytes the headers take, or 0 if they go on.
 */
static size_t
guard_headers_end(struct guard_conn *g, const char *p, size_t n)
{
	char	w[6];
	size_t	tl = g->ntail, k = n < 3 ? n : 3, end, e, used;

	/* Across the seam: what the tail and p's first bytes hold. */
	memcpy(w, g->tail + 3 - tl, tl);
	memcpy(w + tl, p, k);
	e = guard_blank_line(w, tl + k);
	end = e > tl ? e - tl : 0;
	if (end == 0)
		end = guard_blank_line(p, n);
	/* Keep the last three bytes seen, for the next call. */
	used = end != 0 ? end : n;
	memcpy(w, g->tail, 3);
	if (used >= 3)
		memcpy(g->tail, p + used - 3, 3);
	else {
		memcpy(g->tail, w + used, 3 - used);
		memcpy(g->tail + 3 - used, p, used);
	}
	g->ntail = tl + used > 3 ? 3 : tl + used;
	return (end);
}

/*
 * Look at the bytes of buf from offset on, as they arrive for a request
 * not yet handed to the proxy: NUL bytes in its headers, and its deadline.
 */
static void
guard_scan(struct guard_conn *g, struct bufferevent *bev,
    struct evbuffer *buf, size_t offset)
{
	struct evbuffer_ptr	 at;
	struct evbuffer_iovec	 v[16];
	struct timeval		 now, since;
	size_t			 len, n, end;
	int			 i, nv;

	len = evbuffer_get_length(buf);
	if (g->in_service || offset >= len ||
	    evbuffer_ptr_set(buf, &at, offset, EVBUFFER_PTR_SET) == -1)
		return;
	event_base_gettimeofday_cached(bufferevent_get_base(bev), &now);
	if (!g->waiting && g->ntail == 0) {
		g->waiting = 1;
		g->started = now;
	}
	nv = evbuffer_peek(buf, (ev_ssize_t)(len - offset), &at, v, 16);
	for (i = 0; i < nv && i < 16 && g->waiting; i++) {
		n = v[i].iov_len;
		if ((end = guard_headers_end(g, v[i].iov_base, n)) != 0) {
			n = end;
			g->waiting = 0;
		}
		/* Only the headers: a pipelined request is its own. */
		if (memchr(v[i].iov_base, '\0', n) != NULL)
			g->bad = 1;
	}
	if (!g->waiting)
		return;
	timersub(&now, &g->started, &since);
	if (timercmp(&since, &guard_timeout, >)) {
		log_debug("a client took over client_timeout to send its "
		    "request headers: closing its connection");
		/* evhttp reads the end of the stream and lets it go. */
		shutdown(bufferevent_getfd(bev), SHUT_RDWR);
	}
}

/* evbuffer callback on a client connection's input, after its first. */
static void
guard_read(struct evbuffer *buf, const struct evbuffer_cb_info *info,
    void *arg)
{
	struct bufferevent	*bev = arg;
	struct guard_conn	*g;

	if (info->n_added == 0 ||
	    (g = guard_get(bufferevent_getfd(bev), 0)) == NULL)
		return;
	guard_scan(g, bev, buf, evbuffer_get_length(buf) - info->n_added);
}

/*
 * The first bytes a connection reads: its descriptor's entry is made new
 * (whatever a closed connection on that descriptor left in it), then
 * guard_read() takes over.
 */
static void
guard_first_read(struct evbuffer *buf, const struct evbuffer_cb_info *info,
    void *arg)
{
	struct bufferevent	*bev = arg;

	if (info->n_added == 0 ||
	    guard_get(bufferevent_getfd(bev), 1) == NULL)
		return;
	evbuffer_remove_cb(buf, guard_first_read, bev);
	if (evbuffer_add_cb(buf, guard_read, bev) == NULL)
		fatalx("out of memory");
	guard_read(buf, info, bev);
}

/* evhttp_set_bevcb: every accepted connection's bufferevent. */
static struct bufferevent *
guard_new_bev(struct event_base *base, void *arg)
{
	struct bufferevent	*bev;

	(void)arg;
	/* As evhttp makes its own: evhttp closes the socket itself. */
	if ((bev = bufferevent_socket_new(base, -1, 0)) == NULL)
		return (NULL);
	if (evbuffer_add_cb(bufferevent_get_input(bev), guard_first_read,
	    bev) == NULL) {
		bufferevent_free(bev);
		return (NULL);
	}
	return (bev);
}

void
guard_init(struct evhttp *http, const struct timeval *header_timeout)
{
	guard_timeout = *header_timeout;
	evhttp_set_bevcb(http, guard_new_bev, NULL);
}

void
guard_free(void)
{
	free(guard_tab);
	guard_tab = NULL;
	guard_len = 0;
}

static struct guard_conn *
guard_of(struct evhttp_request *req)
{
	struct evhttp_connection	*evcon;
	struct bufferevent		*bev;

	if ((evcon = evhttp_request_get_connection(req)) == NULL)
		return (NULL);
	bev = evhttp_connection_get_bufferevent(evcon);
	return (guard_get(bufferevent_getfd(bev), 0));
}

int
guard_request(struct evhttp_request *req)
{
	struct guard_conn	*g;
	int			 bad;

	struct evbuffer		*body = evhttp_request_get_input_buffer(req);

	if ((g = guard_of(req)) == NULL)
		return (0);
	bad = g->bad;
	g->in_service = 1;
	g->waiting = 0;
	g->bad = 0;
	/* No JSON body holds a raw NUL either. */
	if (evbuffer_get_length(body) > 0 &&
	    evbuffer_search(body, "", 1, NULL).pos != -1)
		bad = 1;
	return (bad ? -1 : 0);
}

void
guard_done(struct evhttp_request *req)
{
	struct evhttp_connection	*evcon;
	struct bufferevent		*bev;
	struct guard_conn		*g;

	if ((evcon = evhttp_request_get_connection(req)) == NULL)
		return;
	bev = evhttp_connection_get_bufferevent(evcon);
	if ((g = guard_get(bufferevent_getfd(bev), 1)) == NULL)
		return;
	/* What a pipelining client sent meanwhile is the next request. */
	guard_scan(g, bev, bufferevent_get_input(bev), 0);
}
