/*
 * guard.c - NUL bytes and a deadline for request headers; see guard.h.
 *
 * Each accepted connection gets a bufferevent of ours (evhttp_set_bevcb)
 * with a callback on its input buffer, called as bytes are read and
 * before evhttp parses them.  No state is freed with a connection: the
 * table is indexed by descriptor, and an entry is taken over by the next
 * bufferevent that reads on the same descriptor.
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
	const struct bufferevent *bev;		/* whose entry this is */
	struct timeval		 started;	/* a request's first byte */
	int			 waiting;	/* its headers still coming */
	int			 in_service;	/* handed to the proxy */
	int			 bad;		/* a NUL byte came */
	char			 tail[3];	/* last bytes, for CRLFCRLF */
	size_t			 ntail;
};

static struct guard_conn	*guard_tab;
static size_t			 guard_len;
static struct timeval		 guard_timeout;

static struct guard_conn *
guard_get(const struct bufferevent *bev, evutil_socket_t fd)
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
	if (g->bev != bev) {		/* a new connection on this fd */
		memset(g, 0, sizeof *g);
		g->bev = bev;
	}
	return (g);
}

/* Look for the blank line that ends the headers in the bytes p[0..n). */
static int
guard_headers_end(struct guard_conn *g, const char *p, size_t n)
{
	char	w[4];
	size_t	i;

	for (i = 0; i < n; i++) {
		/* The window is the last three bytes and this one. */
		memcpy(w, g->tail, 3);
		w[3] = p[i];
		memmove(g->tail, g->tail + 1, 2);
		g->tail[2] = p[i];
		if (g->ntail < 3)
			g->ntail++;
		if ((w[2] == '\n' && w[3] == '\n') ||
		    (g->ntail >= 3 && memcmp(w, "\r\n\r\n", 4) == 0))
			return (1);
	}
	return (0);
}

/* evbuffer callback on a client connection's input. */
static void
guard_read(struct evbuffer *buf, const struct evbuffer_cb_info *info,
    void *arg)
{
	struct bufferevent	*bev = arg;
	struct guard_conn	*g;
	struct evbuffer_ptr	 at;
	struct evbuffer_iovec	 v[8];
	struct timeval		 now, since;
	size_t			 len;
	int			 i, nv;

	if (info->n_added == 0 ||
	    (g = guard_get(bev, bufferevent_getfd(bev))) == NULL)
		return;
	len = evbuffer_get_length(buf);
	if (evbuffer_ptr_set(buf, &at, len - info->n_added,
	    EVBUFFER_PTR_SET) == -1)
		return;
	event_base_gettimeofday_cached(bufferevent_get_base(bev), &now);
	if (!g->in_service && !g->waiting && g->ntail == 0) {
		g->waiting = 1;
		g->started = now;
	}
	nv = evbuffer_peek(buf, (ev_ssize_t)info->n_added, &at, v, 8);
	for (i = 0; i < nv && i < 8; i++) {
		if (memchr(v[i].iov_base, '\0', v[i].iov_len) != NULL)
			g->bad = 1;
		if (g->waiting && guard_headers_end(g, v[i].iov_base,
		    v[i].iov_len))
			g->waiting = 0;
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

/* evhttp_set_bevcb: every accepted connection's bufferevent. */
static struct bufferevent *
guard_new_bev(struct event_base *base, void *arg)
{
	struct bufferevent	*bev;

	(void)arg;
	/* As evhttp makes its own: evhttp closes the socket itself. */
	if ((bev = bufferevent_socket_new(base, -1, 0)) == NULL)
		return (NULL);
	if (evbuffer_add_cb(bufferevent_get_input(bev), guard_read, bev) ==
	    NULL) {
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
	return (guard_get(bev, bufferevent_getfd(bev)));
}

int
guard_request(struct evhttp_request *req)
{
	struct guard_conn	*g;
	int			 bad;

	if ((g = guard_of(req)) == NULL)
		return (0);
	bad = g->bad;
	g->in_service = 1;
	g->waiting = 0;
	g->bad = 0;
	return (bad ? -1 : 0);
}

void
guard_done(struct evhttp_request *req)
{
	struct guard_conn	*g;

	if ((g = guard_of(req)) == NULL)
		return;
	g->in_service = 0;
	g->waiting = 0;
	g->ntail = 0;
	memset(g->tail, 0, sizeof g->tail);
}
