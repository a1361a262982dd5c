/*
 * guard.c - strict request heads, NUL bytes, and a deadline for request
 * headers; see guard.h.
 *
 * Each accepted connection gets a bufferevent of ours (evhttp_set_bevcb)
 * with a callback on its input buffer, called as bytes are read and
 * before evhttp parses them.  A request's head is fed to the validator
 * below as it comes; what follows the head (a body, pipelined requests)
 * is left alone until the request is answered, when guard_done() reads
 * on from the next request's first byte.  No state is freed with a
 * connection: the table (one per worker thread) is indexed by
 * descriptor, and a connection's first read makes its descriptor's entry
 * new.
 */
#include "config.h"

#include <stdint.h>
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
#include "xmalloc.h"

/*
 * The head validator: a state machine over bytes.  A head that breaks a
 * rule gets its cause and is then only read on for its end (the states
 * GH_SKIP*), which is found as evhttp finds it: a line is ended by LF,
 * and a line that is empty but for a CR ends the head.
 */
enum {
	GH_METHOD, GH_TARGET, GH_VERSION, GH_RL_CR,	/* request line */
	GH_BOL,			/* a header line's first byte, or the end */
	GH_NAME, GH_OWS, GH_VALUE, GH_CR,
	GH_END_CR,		/* the blank line's CR */
	GH_DONE,
	GH_SKIP, GH_SKIP_BOL, GH_SKIP_CR	/* bad: looking for the end */
};

/* The fields whose values are checked, and whose count is. */
enum { GF_OTHER, GF_HOST, GF_CL, GF_TE, GF_N };
static const struct {
	const char	*name;		/* lower case */
	size_t		 len;
} guard_fields[GF_N] = {
	[GF_HOST] = { "host", 4 },
	[GF_CL] = { "content-length", 14 },
	[GF_TE] = { "transfer-encoding", 17 },
};
#define GF_ALL		((1 << GF_HOST) | (1 << GF_CL) | (1 << GF_TE))
#define GUARD_CL_DIGITS	18	/* significant digits: fits an int64 */

/* Byte classes (RFC 9110 5.6.2 tchar, 5.5 field-vchar; RFC 3986). */
#define GC_TCHAR	0x01	/* in a method or a field name */
#define GC_TARGET	0x02	/* in a request-target: visible ASCII */
#define GC_VALUE	0x04	/* in a field value: SP, HTAB, VCHAR, obs-text */
#define GC_T		(GC_TCHAR | GC_TARGET | GC_VALUE)
#define GC_V		(GC_TARGET | GC_VALUE)
static const uint8_t guard_class[256] = {
	['\t'] = GC_VALUE, [' '] = GC_VALUE,
	['!'] = GC_T, ['"'] = GC_V, ['#' ... '\''] = GC_T, ['('] = GC_V,
	[')'] = GC_V, ['*' ... '+'] = GC_T, [','] = GC_V, ['-' ... '.'] = GC_T,
	['/'] = GC_V, ['0' ... '9'] = GC_T, [':' ... '@'] = GC_V,
	['A' ... 'Z'] = GC_T, ['[' ... ']'] = GC_V, ['^' ... 'z'] = GC_T,
	['{'] = GC_V, ['|'] = GC_T, ['}'] = GC_V, ['~'] = GC_T,
	[0x80 ... 0xff] = GC_VALUE,
};

static const char guard_bad_line[] = "Malformed request line: expected "
    "'METHOD target HTTP/1.x' with single spaces, and a target of visible "
    "ASCII characters only (no raw space, control or non-ASCII byte).";
static const char guard_bad_name[] = "Malformed header line: expected a "
    "field name of token characters, then ':' with no space before it.";
static const char guard_bad_fold[] = "Obsolete line folding (a header "
    "line that starts with a space or tab) is not accepted.";
static const char guard_bad_value[] = "A header value holds a control "
    "character such as NUL.";
static const char guard_bad_cr[] = "The request head holds a CR that is "
    "not followed by LF.";
static const char guard_bad_cl[] = "Invalid Content-Length: expected one "
    "decimal number, in one Content-Length header.";
static const char guard_bad_te[] = "Invalid Transfer-Encoding: only "
    "'chunked' is accepted, in one header, without Content-Length, on "
    "HTTP/1.1.";
static const char guard_bad_host[] = "An HTTP/1.1 request needs exactly "
    "one Host header (an HTTP/1.0 request at most one).";
static const char guard_bad_unseen[] = "The request head was not seen "
    "whole by the proxy's checks.";

void
guard_head_init(struct guard_head *h)
{
	memset(h, 0, sizeof *h);
	h->state = GH_METHOD;
}

int
guard_head_done(const struct guard_head *h)
{
	return (h->state == GH_DONE);
}

/*
 * The head is bad for cause: from now on only its end is looked for,
 * from where the line being read stands.  Returns -1.
 */
static int
guard_fail(struct guard_head *h, const char *cause)
{
	h->cause = cause;
	if (h->state == GH_BOL)
		h->state = GH_SKIP_BOL;
	else if (h->state == GH_END_CR)
		h->state = GH_SKIP_CR;
	else
		h->state = GH_SKIP;
	return (-1);
}

/* One byte of a bad head; 1 if it ends the head. */
static inline int
guard_skip(struct guard_head *h, unsigned char c)
{
	switch (h->state) {
	case GH_SKIP_BOL:
	case GH_SKIP_CR:
		if (c == '\n')
			return (1);
		h->state = c == '\r' && h->state == GH_SKIP_BOL ?
		    GH_SKIP_CR : GH_SKIP;
		return (0);
	default:
		if (c == '\n')
			h->state = GH_SKIP_BOL;
		return (0);
	}
}

/* The blank line: the counts a whole head must have.  Returns 1. */
static int
guard_end(struct guard_head *h)
{
	if (h->minor >= 1 ? h->nhost != 1 : h->nhost > 1)
		h->cause = guard_bad_host;
	return (1);
}

/* A field name's colon: which field it is, and may it be here. */
static int
guard_field(struct guard_head *h)
{
	int	f;

	for (f = GF_N - 1; f > GF_OTHER; f--)
		if ((h->names & (1 << f)) && h->len == guard_fields[f].len)
			break;
	switch (f) {
	case GF_HOST:
		if (h->nhost++ > 0)
			return (guard_fail(h, guard_bad_host));
		break;
	case GF_CL:
		if (h->ncl++ > 0)
			return (guard_fail(h, guard_bad_cl));
		if (h->nte > 0)
			return (guard_fail(h, guard_bad_te));
		break;
	case GF_TE:
		if (h->nte++ > 0 || h->ncl > 0 || h->minor == 0)
			return (guard_fail(h, guard_bad_te));
		break;
	}
	h->field = (uint8_t)f;
	h->vstate = 0;
	h->len = 0;
	h->state = GH_OWS;
	return (0);
}

/* A value byte (not CR or LF) of a checked field. */
static inline int
guard_value(struct guard_head *h, unsigned char c)
{
	int	ws = c == ' ' || c == '\t';

	switch (h->field) {
	case GF_CL:
		/* 1*DIGIT OWS: vstate 1 in the digits, 2 after them. */
		if (c >= '0' && c <= '9' && h->vstate <= 1) {
			if ((h->len > 0 || c != '0') &&
			    ++h->len > GUARD_CL_DIGITS)
				return (guard_fail(h, guard_bad_cl));
			h->vstate = 1;
		} else if (ws && h->vstate >= 1)
			h->vstate = 2;
		else
			return (guard_fail(h, guard_bad_cl));
		break;
	case GF_TE:
		/* "chunked" in any case, OWS: vstate 7 at its end, 8 after. */
		if (h->vstate < 7 && (c | 0x20) == "chunked"[h->vstate])
			h->vstate++;
		else if (ws && h->vstate >= 7)
			h->vstate = 8;
		else
			return (guard_fail(h, guard_bad_te));
		break;
	}
	return (0);
}

/* A header line's end: is its value whole? */
static int
guard_line_end(struct guard_head *h)
{
	if (h->field == GF_CL && h->vstate == 0)
		return (guard_fail(h, guard_bad_cl));
	if (h->field == GF_TE && h->vstate < 7)
		return (guard_fail(h, guard_bad_te));
	h->state = GH_BOL;
	return (0);
}

/* One byte of a head still good: 0, 1 if it ends the head, -1 if bad. */
static inline int
guard_step(struct guard_head *h, unsigned char c)
{
	uint8_t	cl = guard_class[c];
	int	f;

	switch (h->state) {
	case GH_METHOD:
		if (cl & GC_TCHAR) {
			h->len++;
			return (0);
		}
		if (c != ' ' || h->len == 0)
			return (guard_fail(h, guard_bad_line));
		h->state = GH_TARGET;
		h->len = 0;
		return (0);
	case GH_TARGET:
		if (cl & GC_TARGET) {
			h->len++;
			return (0);
		}
		if (c != ' ' || h->len == 0)
			return (guard_fail(h, guard_bad_line));
		h->state = GH_VERSION;
		h->len = 0;
		return (0);
	case GH_VERSION:
		if (h->len < 7) {
			if (c != (unsigned char)"HTTP/1."[h->len])
				return (guard_fail(h, guard_bad_line));
		} else if (h->len == 7) {
			if (c < '0' || c > '9')
				return (guard_fail(h, guard_bad_line));
			h->minor = (uint8_t)(c - '0');
		} else if (c == '\r')
			h->state = GH_RL_CR;
		else if (c == '\n')
			h->state = GH_BOL;
		else
			return (guard_fail(h, guard_bad_line));
		h->len++;
		return (0);
	case GH_RL_CR:
	case GH_CR:
	case GH_END_CR:
		if (c != '\n')
			return (guard_fail(h, guard_bad_cr));
		if (h->state == GH_END_CR)
			return (guard_end(h));
		if (h->state == GH_CR)
			return (guard_line_end(h));
		h->state = GH_BOL;
		return (0);
	case GH_BOL:
		if (c == '\r') {
			h->state = GH_END_CR;
			return (0);
		}
		if (c == '\n')
			return (guard_end(h));
		if (c == ' ' || c == '\t')
			return (guard_fail(h, guard_bad_fold));
		if (!(cl & GC_TCHAR))
			return (guard_fail(h, guard_bad_name));
		h->state = GH_NAME;
		h->names = GF_ALL;
		h->len = 0;
		/* FALLTHROUGH */
	case GH_NAME:
		if (cl & GC_TCHAR) {
			/* Which checked fields the name may still be. */
			for (f = GF_OTHER + 1; f < GF_N; f++)
				if ((h->names & (1 << f)) &&
				    (h->len >= guard_fields[f].len ||
				    (c | 0x20) != guard_fields[f].name[h->len]))
					h->names &= ~(1 << f);
			h->len++;
			return (0);
		}
		if (c != ':')
			return (guard_fail(h, guard_bad_name));
		return (guard_field(h));
	case GH_OWS:
		if (c == ' ' || c == '\t')
			return (0);
		h->state = GH_VALUE;
		/* FALLTHROUGH */
	case GH_VALUE:
		if (c == '\r') {
			h->state = GH_CR;
			return (0);
		}
		if (c == '\n')
			return (guard_line_end(h));
		if (!(cl & GC_VALUE))
			return (guard_fail(h, guard_bad_value));
		return (guard_value(h, c));
	}
	return (0);
}

size_t
guard_head_feed(struct guard_head *hp, const char *buf, size_t n)
{
	const unsigned char	*p = (const unsigned char *)buf;
	struct guard_head	 h = *hp;
	size_t			 i, end = 0;
	uint8_t			 cl;
	int			 r;

	if (h.state == GH_DONE)
		return (0);
	for (i = 0; i < n; i++) {
		/*
		 * Most bytes are a value's, the target's or a name's that no
		 * checked field has (only its syntax counts): run over them.
		 */
		cl = 0;
		switch (h.state) {
		case GH_VALUE:
			if (h.field < GF_CL)
				cl = GC_VALUE;
			break;
		case GH_TARGET:
			if (h.len > 0)
				cl = GC_TARGET;
			break;
		case GH_NAME:
			if (h.names == 0)
				cl = GC_TCHAR;
			break;
		}
		if (cl != 0) {
			while (i < n && (guard_class[p[i]] & cl))
				i++;
			if (i == n)
				break;
		}
		if (h.state < GH_DONE) {
			if ((r = guard_step(&h, p[i])) == 0)
				continue;
			if (r == 1) {
				end = i + 1;
				break;
			}
		}
		/* Bad, now or before: p[i] is read for the end alone. */
		if (guard_skip(&h, p[i])) {
			end = i + 1;
			break;
		}
	}
	if (end != 0)
		h.state = GH_DONE;
	*hp = h;
	return (end);
}

/* Where a connection's current request stands. */
enum guard_phase {
	GUARD_IDLE,		/* no byte of it yet */
	GUARD_HEAD,		/* its head is coming: validated, timed */
	GUARD_BODY,		/* its head is in: what follows is not read */
	GUARD_SERVICE,		/* in the proxy's hands, until guard_done() */
};

struct guard_conn {
	struct timeval		 started;	/* a request's first byte */
	enum guard_phase	 phase;
	struct guard_head	 head;
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
		guard_tab = xreallocarray(guard_tab, n, sizeof *guard_tab);
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
 * Look at the bytes of buf from offset on, as they arrive for a request
 * whose head is not all in: feed them to its validator, and keep its
 * deadline.
 */
static void
guard_scan(struct guard_conn *g, struct bufferevent *bev,
    struct evbuffer *buf, size_t offset)
{
	struct evbuffer_ptr	 at;
	struct evbuffer_iovec	 v[16];
	struct timeval		 now, since;
	size_t			 len;
	int			 i, nv;

	len = evbuffer_get_length(buf);
	if (g->phase >= GUARD_BODY || offset >= len)
		return;
	event_base_gettimeofday_cached(bufferevent_get_base(bev), &now);
	if (g->phase == GUARD_IDLE) {
		g->phase = GUARD_HEAD;
		g->started = now;
		guard_head_init(&g->head);
	}
	while (g->phase == GUARD_HEAD && offset < len) {
		if (evbuffer_ptr_set(buf, &at, offset, EVBUFFER_PTR_SET) == -1)
			break;
		nv = evbuffer_peek(buf, (ev_ssize_t)(len - offset), &at, v, 16);
		if (nv <= 0)
			break;
		/* More than 16 pieces: the next turn peeks at the rest. */
		for (i = 0; i < nv && i < 16; i++) {
			if (guard_head_feed(&g->head, v[i].iov_base,
			    v[i].iov_len) != 0) {
				/* A pipelined request is read in its turn. */
				g->phase = GUARD_BODY;
				break;
			}
			offset += v[i].iov_len;
		}
	}
	if (g->phase != GUARD_HEAD)
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
guard_request(struct evhttp_request *req, const char **cause)
{
	struct guard_conn	*g;

	*cause = NULL;
	if ((g = guard_of(req)) == NULL)
		return (0);
	/*
	 * evhttp found a head the guard did not see end (or, the last
	 * request not done, did not see at all): refused, not trusted.
	 */
	if (g->phase != GUARD_BODY)
		*cause = g->phase == GUARD_HEAD && g->head.cause != NULL ?
		    g->head.cause : guard_bad_unseen;
	else
		*cause = g->head.cause;
	g->phase = GUARD_SERVICE;
	return (*cause != NULL ? -1 : 0);
}

int
guard_body_nul(struct evhttp_request *req)
{
	struct evbuffer	*body = evhttp_request_get_input_buffer(req);

	return (evbuffer_get_length(body) > 0 &&
	    evbuffer_search(body, "", 1, NULL).pos != -1);
}

void
guard_refuse_tunnel(struct evhttp_request *req)
{
	struct bufferevent	*bev;

	bev = evhttp_connection_get_bufferevent(
	    evhttp_request_get_connection(req));
	bufferevent_disable(bev, EV_READ);
	evbuffer_drain(bufferevent_get_input(bev),
	    evbuffer_get_length(bufferevent_get_input(bev)));
	shutdown(bufferevent_getfd(bev), SHUT_RD);
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
	/*
	 * libevent keeps a CONNECT's connection open whatever the answer says
	 * (a tunnel): once its refusal is written, it is shut, and evhttp
	 * lets it go when it reads the end.  Never done, the guard refuses
	 * anything that came behind it.
	 */
	if (evhttp_request_get_command(req) == EVHTTP_REQ_CONNECT) {
		shutdown(bufferevent_getfd(bev), SHUT_RDWR);
		return;
	}
	if ((g = guard_get(bufferevent_getfd(bev), 1)) == NULL)
		return;
	/* What a pipelining client sent meanwhile is the next request. */
	guard_scan(g, bev, bufferevent_get_input(bev), 0);
}
