/*
 * Unit tests: upstream.c and upstream_req.c on a real event_base and curl
 * multi, against an HTTP server of the test's own (evhttp, on 127.0.0.1,
 * an ephemeral port, the same event_base).  Round trips, bodies sent
 * whole, timeouts, a cut answer, no resend of a POST on a lost
 * connection, aborts from outside and inside hooks, pause and resume.
 * Every wait has a deadline; under ASan, aborts and frees are checked for
 * leaks and for use after free.
 */
#include "config.h"

#include <stdlib.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "../../src/log.c"
#include "../../src/xmalloc.c"
#include "../../src/upstream.c"
#include "../../src/upstream_req.c"
#include "tap.h"

static struct event_base	*base;
static struct event		*deadline_ev;
static int			 deadline_hit;
static const int		 never;

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	deadline_hit = 1;
	event_base_loopbreak(base);
}

/* Run the loop until *flag is set, for at most secs; returns *flag. */
static int
run_until(const int *flag, double secs)
{
	struct timeval	tv;

	tv.tv_sec = (time_t)secs;
	tv.tv_usec = (suseconds_t)((secs - (double)tv.tv_sec) * 1e6);
	deadline_hit = 0;
	evtimer_add(deadline_ev, &tv);
	while (!*flag && !deadline_hit)
		event_base_loop(base, EVLOOP_ONCE);
	evtimer_del(deadline_ev);
	return (*flag);
}

/*
 * The test's upstream.  Its routes:
 *   /hello	200, X-Test: hello, "hello world"
 *   /echo	200, the request's body; what came is noted in srv
 *   /empty	204, no body
 *   /hold	never answers
 *   /cut	Content-Length: 1000, 10 bytes, then the connection is cut
 *   /drop	cuts the connection without a byte of answer
 *   /drop-once	the same the first time, then 200 "second"
 *   /stream	ten chunks "chunk-NN\n", 50 ms apart
 *   /silent	one chunk "first\n", then silence
 */
enum srv_route { R_HELLO, R_ECHO, R_EMPTY, R_HOLD, R_CUT, R_DROP, R_DROP_ONCE,
	R_STREAM, R_SILENT, R_OTHER, R_N };
static const char *const route_paths[R_N] = { "/hello", "/echo", "/empty",
	"/hold", "/cut", "/drop", "/drop-once", "/stream", "/silent", "" };

static struct {
	struct evhttp	*http;
	char		 url[64];
	int		 hits[R_N];
	/* The last request to /echo. */
	char		 method[16];
	char		 uri[256];
	char		 xreq[64];
	char		 clen[32];
	int		 expect;
	char		*body;
	size_t		 body_len;
} srv;

struct srv_stream {
	struct evhttp_request	*req;
	struct event		*ev;
	int			 n;
};

/* Cut the connection: the client sees it closed, whatever evhttp does. */
static void
srv_cut(struct evhttp_connection *evcon, void *arg)
{
	(void)arg;
	shutdown(bufferevent_getfd(evhttp_connection_get_bufferevent(evcon)),
	    SHUT_RDWR);
}

/*
 * A request left unanswered is detached from its connection when the
 * connection fails, and then ours to free (as proxy.c does).
 */
static void
srv_closed(struct evhttp_connection *evcon, void *arg)
{
	struct evhttp_request	*req = arg;

	(void)evcon;
	if (evhttp_request_get_connection(req) == NULL)
		evhttp_request_free(req);
}

static void
srv_keep(struct evhttp_request *req)
{
	evhttp_connection_set_closecb(evhttp_request_get_connection(req),
	    srv_closed, req);
}

static void
srv_stream_free(struct srv_stream *s)
{
	event_free(s->ev);
	free(s);
}

/* The client left mid-stream (only when a test fails). */
static void
srv_stream_closed(struct evhttp_connection *evcon, void *arg)
{
	struct srv_stream	*s = arg;

	(void)evcon;
	if (evhttp_request_get_connection(s->req) == NULL)
		evhttp_request_free(s->req);
	srv_stream_free(s);
}

static void
srv_stream_tick(evutil_socket_t fd, short what, void *arg)
{
	struct srv_stream	*s = arg;
	struct evbuffer		*buf;
	struct timeval		 tv = { 0, 50 * 1000 };

	(void)fd;
	(void)what;
	if (s->n == 10) {
		evhttp_connection_set_closecb(evhttp_request_get_connection(
		    s->req), NULL, NULL);
		evhttp_send_reply_end(s->req);
		srv_stream_free(s);
		return;
	}
	buf = evbuffer_new();
	evbuffer_add_printf(buf, "chunk-%02d\n", s->n++);
	evhttp_send_reply_chunk(s->req, buf);
	evbuffer_free(buf);
	evtimer_add(s->ev, &tv);
}

static void
srv_cb(struct evhttp_request *req, void *arg)
{
	struct evkeyvalq	*in = evhttp_request_get_input_headers(req);
	struct evkeyvalq	*out = evhttp_request_get_output_headers(req);
	struct evbuffer		*buf, *body;
	struct srv_stream	*s;
	const char		*path, *v;
	int			 r;

	(void)arg;
	path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
	for (r = 0; r < R_OTHER; r++)
		if (strcmp(path, route_paths[r]) == 0)
			break;
	srv.hits[r]++;
	buf = evbuffer_new();
	switch (r) {
	case R_HELLO:
		evhttp_add_header(out, "X-Test", "hello");
		evbuffer_add_printf(buf, "hello world");
		evhttp_send_reply(req, 200, "OK", buf);
		break;
	case R_ECHO:
		switch (evhttp_request_get_command(req)) {
		case EVHTTP_REQ_POST:	v = "POST"; break;
		case EVHTTP_REQ_PUT:	v = "PUT"; break;
		case EVHTTP_REQ_DELETE:	v = "DELETE"; break;
		case EVHTTP_REQ_GET:	v = "GET"; break;
		default:		v = "other"; break;
		}
		snprintf(srv.method, sizeof srv.method, "%s", v);
		snprintf(srv.uri, sizeof srv.uri, "%s",
		    evhttp_request_get_uri(req));
		v = evhttp_find_header(in, "X-Req");
		snprintf(srv.xreq, sizeof srv.xreq, "%s", v ? v : "");
		v = evhttp_find_header(in, "Content-Length");
		snprintf(srv.clen, sizeof srv.clen, "%s", v ? v : "");
		srv.expect = evhttp_find_header(in, "Expect") != NULL;
		body = evhttp_request_get_input_buffer(req);
		free(srv.body);
		srv.body_len = evbuffer_get_length(body);
		if ((srv.body = malloc(srv.body_len + 1)) == NULL)
			abort();
		evbuffer_copyout(body, srv.body, srv.body_len);
		evbuffer_add_buffer(buf, body);
		evhttp_send_reply(req, 200, "OK", buf);
		break;
	case R_EMPTY:
		evhttp_send_reply(req, 204, "No Content", NULL);
		break;
	case R_HOLD:
		srv_keep(req);
		break;
	case R_CUT:
		srv_keep(req);
		evhttp_add_header(out, "Content-Length", "1000");
		evhttp_send_reply_start(req, 200, "OK");
		evbuffer_add(buf, "0123456789", 10);
		evhttp_send_reply_chunk_with_cb(req, buf, srv_cut, NULL);
		break;
	case R_DROP_ONCE:
		if (srv.hits[r] > 1) {
			evbuffer_add_printf(buf, "second");
			evhttp_send_reply(req, 200, "OK", buf);
			break;
		}
		/* FALLTHROUGH */
	case R_DROP:
		srv_keep(req);
		srv_cut(evhttp_request_get_connection(req), NULL);
		break;
	case R_STREAM:
		if ((s = calloc(1, sizeof *s)) == NULL)
			abort();
		s->req = req;
		s->ev = evtimer_new(base, srv_stream_tick, s);
		evhttp_connection_set_closecb(evhttp_request_get_connection(
		    req), srv_stream_closed, s);
		evhttp_send_reply_start(req, 200, "OK");
		srv_stream_tick(-1, 0, s);
		break;
	case R_SILENT:
		srv_keep(req);
		evhttp_send_reply_start(req, 200, "OK");
		evbuffer_add_printf(buf, "first\n");
		evhttp_send_reply_chunk(req, buf);
		break;
	default:
		evhttp_send_reply(req, 404, "Not Found", NULL);
		break;
	}
	evbuffer_free(buf);
}

static void
srv_start(void)
{
	struct evhttp_bound_socket	*bound;
	struct sockaddr_in		 sin;
	socklen_t			 len = sizeof sin;

	if ((srv.http = evhttp_new(base)) == NULL ||
	    (bound = evhttp_bind_socket_with_handle(srv.http, "127.0.0.1",
	    0)) == NULL ||
	    getsockname(evhttp_bound_socket_get_fd(bound),
	    (struct sockaddr *)&sin, &len) == -1)
		abort();
	evhttp_set_gencb(srv.http, srv_cb, NULL);
	snprintf(srv.url, sizeof srv.url, "http://127.0.0.1:%d",
	    ntohs(sin.sin_port));
}

/* A port nothing listens on (a moment ago, something did). */
static int
closed_port(void)
{
	struct sockaddr_in	sin;
	socklen_t		len = sizeof sin;
	int			fd;

	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((fd = socket(AF_INET, SOCK_STREAM, 0)) == -1 ||
	    bind(fd, (struct sockaddr *)&sin, sizeof sin) == -1 ||
	    getsockname(fd, (struct sockaddr *)&sin, &len) == -1)
		abort();
	close(fd);
	return (ntohs(sin.sin_port));
}

/* One request as a caller sees it, and what its hooks do. */
enum abort_in { ABORT_NONE, ABORT_HEADERS, ABORT_DATA, ABORT_DONE };

struct call {
	struct upstream_req	*r;
	int			 seq;		/* hook calls so far */
	int			 nheaders, headers_seq;
	int			 status;
	char			 xtest[32];
	struct evbuffer		*body;
	int			 ndata;
	int			 done, done_seq;
	enum upstream_err	 err;
	char			 why[256];
	int			 late;		/* a hook called after abort */
	int			 aborted;
	int			 reaped;	/* aborted inside curl */
	/* What the hooks do. */
	enum abort_in		 abort_in;
	int			 stop_at;	/* data call that says stop */
	int			 pause_at;	/* data call that says pause */
	double			 pause_for;
	struct event		*resume_ev;
	char			 paused[64];	/* the bytes not taken */
	size_t			 paused_len;
	int			 calls_paused;	/* data calls while paused */
	int			 resumed;
	int			 same_again;	/* those bytes came first */
	int			 after_resume;
	/* A request its data hook starts (inside curl). */
	struct upstream		*up;
	const struct upstream_opts *child_opts;
	struct call		*child;
	int			 child_pending;	/* it waited for curl */
};

static void
call_init(struct call *c)
{
	memset(c, 0, sizeof *c);
	if ((c->body = evbuffer_new()) == NULL)
		abort();
}

static void
call_clear(struct call *c)
{
	evbuffer_free(c->body);
	if (c->resume_ev != NULL)
		event_free(c->resume_ev);
}

static int
body_is(struct call *c, const char *want)
{
	size_t	len = evbuffer_get_length(c->body);

	if (len != strlen(want))
		return (0);
	return (len == 0 ||
	    memcmp(evbuffer_pullup(c->body, -1), want, len) == 0);
}

static void	start(struct upstream *, struct call *,
		    const struct upstream_opts *);

static void
on_headers(void *arg, int status, const struct evkeyvalq *h)
{
	struct call	*c = arg;
	const char	*v;

	c->late += c->aborted;
	c->nheaders++;
	c->headers_seq = ++c->seq;
	c->status = status;
	v = evhttp_find_header(h, "X-Test");
	snprintf(c->xtest, sizeof c->xtest, "%s", v ? v : "");
	if (c->abort_in == ABORT_HEADERS) {
		upstream_abort(c->r);
		c->aborted = 1;
		c->reaped = c->r->reap;
	}
}

static void
resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct call	*c = arg;

	(void)fd;
	(void)what;
	c->resumed = 1;
	/* The data hook may run from inside this call. */
	upstream_resume(c->r);
}

static int
on_data(void *arg, const char *p, size_t len)
{
	struct call	*c = arg;
	struct timeval	 tv;

	c->late += c->aborted;
	c->ndata++;
	c->seq++;
	if (c->pause_at > 0 && c->ndata > c->pause_at && !c->resumed)
		c->calls_paused++;
	if (c->resumed && c->after_resume++ == 0)
		c->same_again = len >= c->paused_len &&
		    memcmp(p, c->paused, c->paused_len) == 0;
	if (c->ndata == c->stop_at)
		return (UPSTREAM_STOP);
	if (c->ndata == c->pause_at) {
		c->paused_len = len < sizeof c->paused ? len :
		    sizeof c->paused;
		memcpy(c->paused, p, c->paused_len);
		tv.tv_sec = (time_t)c->pause_for;
		tv.tv_usec = (suseconds_t)((c->pause_for -
		    (double)tv.tv_sec) * 1e6);
		c->resume_ev = evtimer_new(base, resume_cb, c);
		evtimer_add(c->resume_ev, &tv);
		return (UPSTREAM_PAUSE);
	}
	evbuffer_add(c->body, p, len);
	if (c->child_opts != NULL && c->child->r == NULL) {
		start(c->up, c->child, c->child_opts);
		c->child_pending = c->child->r->pending;
	}
	if (c->abort_in == ABORT_DATA) {
		upstream_abort(c->r);
		c->aborted = 1;
		c->reaped = c->r->reap;
	}
	return (UPSTREAM_CONTINUE);
}

static void
on_done(void *arg, enum upstream_err err, const char *why)
{
	struct call	*c = arg;

	c->late += c->aborted;
	c->done++;
	c->done_seq = ++c->seq;
	c->err = err;
	snprintf(c->why, sizeof c->why, "%s", why ? why : "");
	if (c->abort_in == ABORT_DONE) {
		/* Its own request, from its done hook: freed once, after. */
		upstream_abort(c->r);
	}
}

static const struct upstream_hooks	hooks = {
	on_headers, on_data, on_done
};

static void
start(struct upstream *up, struct call *c, const struct upstream_opts *o)
{
	c->r = upstream_start(up, o, &hooks, c);
}

static const char *const	req_headers[] = {
	"X-Req: 1", "Authorization: Bearer sk-test", NULL
};

static const struct upstream_opts	get_hello = {
	.method = "GET", .path = "/hello", .headers = req_headers
};
static const struct upstream_opts	get_hold = {
	.method = "GET", .path = "/hold"
};

static struct upstream *
up_new(double timeout)
{
	return (upstream_new(base, srv.url, 5, timeout, 5));
}

static void
test_get(void)
{
	struct upstream	*up = up_new(5);
	struct call	 c;
	struct upstream_opts o = { .method = "GET",
	    .path = "/echo?a=1&b=%2F..%2F", .headers = req_headers };

	call_init(&c);
	start(up, &c, &get_hello);
	ok(run_until(&c.done, 5), "GET: done");
	ok(c.err == UPSTREAM_OK && c.status == 200,
	    "GET: ok, status 200 (%s)", c.why);
	ok(c.nheaders == 1 && strcmp(c.xtest, "hello") == 0,
	    "GET: the answer's headers, once");
	ok(body_is(&c, "hello world") && c.headers_seq == 1 &&
	    c.done_seq == c.seq, "GET: headers, then the body, then done");
	call_clear(&c);

	call_init(&c);
	start(up, &c, &o);
	ok(run_until(&c.done, 5) && c.err == UPSTREAM_OK, "GET: echo done");
	is_str(srv.method, "GET", "GET: the server saw a GET");
	is_str(srv.uri, "/echo?a=1&b=%2F..%2F",
	    "GET: the path and query went as they are");
	is_str(srv.xreq, "1", "GET: the request's headers went along");
	ok(srv.body_len == 0 && body_is(&c, ""), "GET: no body either way");
	call_clear(&c);

	call_init(&c);
	o.path = "/empty";
	start(up, &c, &o);
	ok(run_until(&c.done, 5) && c.err == UPSTREAM_OK && c.status == 204,
	    "GET: a 204 ends ok");
	ok(c.nheaders == 1 && c.ndata == 0 && c.headers_seq < c.done_seq,
	    "GET: with no body, the headers hook comes before done");
	call_clear(&c);
	upstream_free(up);
}

static void
test_bodies(void)
{
	struct upstream	*up = up_new(10);
	struct call	 c;
	struct upstream_opts o = { .method = "POST", .path = "/echo",
	    .headers = req_headers, .has_body = 1 };
	char		*big;
	size_t		 i, n = 3 * 1024 * 1024 + 7;
	char		 clen[32];

	if ((big = malloc(n)) == NULL)
		abort();
	for (i = 0; i < n; i++)
		big[i] = (char)('a' + (i * 7 + i / 4096) % 26);
	o.body = big;
	o.body_len = n;
	call_init(&c);
	start(up, &c, &o);
	ok(run_until(&c.done, 10) && c.err == UPSTREAM_OK && c.status == 200,
	    "POST: 3 MB done (%s)", c.why);
	snprintf(clen, sizeof clen, "%zu", n);
	ok(strcmp(srv.method, "POST") == 0 && strcmp(srv.clen, clen) == 0,
	    "POST: sent as a POST with its Content-Length");
	ok(srv.body_len == n && memcmp(srv.body, big, n) == 0,
	    "POST: the server got the body whole, byte for byte");
	ok(!srv.expect, "POST: no Expect: 100-continue round trip");
	ok(evbuffer_get_length(c.body) == n &&
	    memcmp(evbuffer_pullup(c.body, -1), big, n) == 0,
	    "POST: and the answer came back whole");
	call_clear(&c);

	call_init(&c);
	o.method = "PUT";
	o.body = "put body";
	o.body_len = 8;
	start(up, &c, &o);
	ok(run_until(&c.done, 5) && c.err == UPSTREAM_OK &&
	    strcmp(srv.method, "PUT") == 0 && srv.body_len == 8 &&
	    memcmp(srv.body, "put body", 8) == 0, "PUT: sent with its body");
	call_clear(&c);

	call_init(&c);
	o.method = "DELETE";
	o.has_body = 0;
	start(up, &c, &o);
	ok(run_until(&c.done, 5) && c.err == UPSTREAM_OK &&
	    strcmp(srv.method, "DELETE") == 0 && srv.body_len == 0,
	    "DELETE: sent with no body");
	call_clear(&c);

	call_init(&c);
	o.method = "POST";
	o.has_body = 1;
	o.body = NULL;
	o.body_len = 0;
	start(up, &c, &o);
	ok(run_until(&c.done, 5) && c.err == UPSTREAM_OK &&
	    strcmp(srv.method, "POST") == 0 && srv.body_len == 0 &&
	    strcmp(srv.clen, "0") == 0, "POST: an empty body is sent as one");
	call_clear(&c);
	upstream_free(up);
	free(big);
}

static void
test_timeouts(void)
{
	struct upstream	*up;
	struct call	 c;
	struct upstream_opts o = { .method = "GET", .path = "/silent",
	    .stream = 1, .idle = 0.3 };
	char		 url[64];

	up = up_new(0.3);
	call_init(&c);
	start(up, &c, &get_hold);
	ok(run_until(&c.done, 5) && c.err == UPSTREAM_TIMEOUT,
	    "timeout: a request with no answer ends in a timeout (%s)",
	    upstream_err_str(c.err));
	ok(c.nheaders == 0 && c.ndata == 0, "timeout: no headers, no data");
	call_clear(&c);

	/* A stream is not bound by the total timeout: by its silence. */
	call_init(&c);
	start(up, &c, &o);
	ok(run_until(&c.done, 5) && c.err == UPSTREAM_TIMEOUT &&
	    strstr(c.why, "stream_idle_timeout") != NULL,
	    "timeout: a stream that falls silent ends by its idle timeout");
	ok(c.nheaders == 1 && body_is(&c, "first\n"),
	    "timeout: after what it did send");
	call_clear(&c);
	upstream_free(up);

	snprintf(url, sizeof url, "http://127.0.0.1:%d", closed_port());
	up = upstream_new(base, url, 5, 5, 5);
	call_init(&c);
	start(up, &c, &get_hello);
	ok(run_until(&c.done, 5) && c.err == UPSTREAM_CONNECT,
	    "connect: nothing listening ends in a connect error (%s)",
	    upstream_err_str(c.err));
	call_clear(&c);
	upstream_free(up);
}

/* A GET to its end, ok: a connection for the next request to reuse. */
static int
warm(struct upstream *up)
{
	struct call	c;
	int		done_ok;

	call_init(&c);
	start(up, &c, &get_hello);
	done_ok = run_until(&c.done, 5) && c.err == UPSTREAM_OK;
	call_clear(&c);
	return (done_ok);
}

static void
test_lost(void)
{
	struct upstream	*up;
	struct call	 c;
	struct upstream_opts o = { .method = "GET", .path = "/cut" };

	up = up_new(5);
	call_init(&c);
	start(up, &c, &o);
	ok(run_until(&c.done, 5) && c.err == UPSTREAM_PROTOCOL,
	    "cut: a GET cut mid-answer ends in an error (%s: %s)",
	    upstream_err_str(c.err), c.why);
	ok(c.status == 200 && body_is(&c, "0123456789"),
	    "cut: after the part that came");
	call_clear(&c);

	call_init(&c);
	o.method = "POST";
	o.has_body = 1;
	o.body = "x";
	o.body_len = 1;
	start(up, &c, &o);
	ok(run_until(&c.done, 5) && c.err == UPSTREAM_PROTOCOL,
	    "cut: a POST cut mid-answer too (answered: not connection lost)");
	call_clear(&c);
	upstream_free(up);

	/* A fresh connection closed on the POST: curl does not retry. */
	up = up_new(5);
	call_init(&c);
	o.path = "/drop";
	start(up, &c, &o);
	ok(run_until(&c.done, 5) && c.err == UPSTREAM_CONN_LOST,
	    "lost: a POST whose fresh connection closed unanswered: "
	    "connection lost (%s)", c.why);
	ok(srv.hits[R_DROP] == 1, "lost: the server saw it once");
	call_clear(&c);
	upstream_free(up);

	/*
	 * A reused connection closed on the POST: curl would send it again
	 * on a fresh one; it is refused.
	 */
	up = up_new(5);
	ok(warm(up), "lost: a GET opens a connection to reuse");
	call_init(&c);
	srv.hits[R_DROP] = 0;
	start(up, &c, &o);
	ok(run_until(&c.done, 5) && c.err == UPSTREAM_CONN_LOST &&
	    strstr(c.why, "not sent again") != NULL,
	    "lost: a POST on a reused connection that closed: curl's retry "
	    "is refused (%s)", c.why);
	ok(srv.hits[R_DROP] == 1, "lost: the server saw the POST once");
	call_clear(&c);

	/* The same for a GET: idempotent, it keeps curl's retry. */
	ok(warm(up), "lost: another GET for a connection to reuse");
	call_init(&c);
	o.method = "GET";
	o.has_body = 0;
	o.path = "/drop-once";
	start(up, &c, &o);
	ok(run_until(&c.done, 5) && c.err == UPSTREAM_OK &&
	    body_is(&c, "second") && srv.hits[R_DROP_ONCE] == 2,
	    "lost: a GET on a reused connection that closed is sent again");
	call_clear(&c);
	upstream_free(up);
}

static void
test_abort(void)
{
	struct upstream	*up;
	struct call	 c, c2;
	struct upstream_opts o = { .method = "GET", .path = "/silent",
	    .stream = 1, .idle = 5 };
	int		 i;

	up = up_new(5);
	call_init(&c);
	srv.hits[R_HOLD] = 0;
	start(up, &c, &get_hold);
	ok(run_until(&srv.hits[R_HOLD], 5) && srv.hits[R_HOLD] == 1,
	    "abort: the request reached the server");
	upstream_abort(c.r);
	c.aborted = 1;
	run_until(&never, 0.3);
	ok(c.done == 0 && c.late == 0 && up->reqs == NULL,
	    "abort: in flight, freed, and no hook is called after");
	upstream_abort(NULL);
	call_clear(&c);

	/* From its headers hook, then its data hook: inside curl. */
	for (i = ABORT_HEADERS; i <= ABORT_DATA; i++) {
		call_init(&c);
		c.abort_in = i;
		start(up, &c, &o);
		run_until(i == ABORT_HEADERS ? &c.nheaders : &c.ndata, 5);
		run_until(&never, 0.3);
		ok(c.nheaders == 1 && c.ndata == (i == ABORT_DATA) &&
		    c.done == 0 && c.late == 0 && c.reaped &&
		    up->reqs == NULL && up->nreap == 0, "abort: from its %s "
		    "hook, inside curl: no hook after, freed once curl returns",
		    i == ABORT_HEADERS ? "headers" : "data");
		call_clear(&c);
	}

	call_init(&c);
	c.abort_in = ABORT_DONE;
	start(up, &c, &get_hello);
	ok(run_until(&c.done, 5) && c.err == UPSTREAM_OK && up->reqs == NULL,
	    "abort: from its own done hook, harmless (freed once)");
	call_clear(&c);

	call_init(&c);
	c.stop_at = 1;
	start(up, &c, &get_hello);
	ok(run_until(&c.done, 5) && c.err == UPSTREAM_ABORTED &&
	    c.ndata == 1 && c.done == 1,
	    "stop: a data hook's stop ends it as aborted, done still comes");
	call_clear(&c);

	/* A request started from a hook, inside curl, waits for it. */
	call_init(&c);
	call_init(&c2);
	c.up = up;
	c.child_opts = &get_hello;
	c.child = &c2;
	start(up, &c, &get_hello);
	ok(run_until(&c2.done, 5) && c.err == UPSTREAM_OK &&
	    c2.err == UPSTREAM_OK && body_is(&c2, "hello world"),
	    "start from a data hook: both requests end ok");
	ok(c.child_pending && up->npending == 0,
	    "start from a data hook: added to the multi once curl returned");
	call_clear(&c);
	call_clear(&c2);
	upstream_free(up);

	/* upstream_free with requests in flight: no hook, nothing left. */
	up = up_new(5);
	call_init(&c);
	call_init(&c2);
	srv.hits[R_HOLD] = 0;
	start(up, &c, &get_hold);
	start(up, &c2, &o);
	run_until(&c2.ndata, 5);
	run_until(&srv.hits[R_HOLD], 5);
	ok(srv.hits[R_HOLD] == 1 && c2.ndata == 1,
	    "free: two requests in flight");
	upstream_free(up);
	c.aborted = c2.aborted = 1;
	run_until(&never, 0.3);
	ok(c.done == 0 && c2.done == 0 && c.late == 0 && c2.late == 0,
	    "free: their hooks are not called");
	call_clear(&c);
	call_clear(&c2);
}

static void
test_pause(void)
{
	struct upstream	*up = up_new(5);
	struct call	 c;
	struct upstream_opts o = { .method = "GET", .path = "/stream",
	    .stream = 1, .idle = 0.3 };
	char		 want[128];
	int		 i;

	for (i = 0, want[0] = '\0'; i < 10; i++)
		snprintf(want + strlen(want), sizeof want - strlen(want),
		    "chunk-%02d\n", i);
	call_init(&c);
	c.pause_at = 1;
	c.pause_for = 0.7;
	start(up, &c, &o);
	ok(run_until(&c.done, 5) && c.err == UPSTREAM_OK,
	    "pause: a stream paused for longer than its idle timeout ends "
	    "ok (%s)", c.why);
	ok(c.calls_paused == 0, "pause: no data while paused");
	ok(c.resumed && c.same_again,
	    "pause: after resume the bytes not taken come again first");
	ok(body_is(&c, want), "pause: the whole stream, nothing lost or "
	    "twice");
	upstream_resume(NULL);
	call_clear(&c);
	upstream_free(up);
}

int
main(void)
{
	int	i;

	/* Each line as it comes, should a sanitizer end the test. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0 ||
	    (base = event_base_new()) == NULL ||
	    (deadline_ev = evtimer_new(base, deadline_cb, NULL)) == NULL)
		abort();
	srv_start();

	for (i = UPSTREAM_OK; i <= UPSTREAM_CONN_LOST; i++)
		ok(strcmp(upstream_err_str(i), "unknown") != 0,
		    "err_str: %d is %s", i, upstream_err_str(i));
	test_get();
	test_bodies();
	test_timeouts();
	test_lost();
	test_abort();
	test_pause();

	evhttp_free(srv.http);
	free(srv.body);
	event_free(deadline_ev);
	event_base_free(base);
	curl_global_cleanup();
	return (done_testing());
}
