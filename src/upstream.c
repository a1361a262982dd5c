/*
 * upstream.c - libcurl multi_socket on libevent.
 *
 * The glue follows curl's hiperfifo example: curl tells us which sockets
 * to watch (upstream_sock_cb) and when to wake it (upstream_timer_cb); we
 * hand events back with curl_multi_socket_action() and then drain
 * curl_multi_info_read() for finished transfers.  Handles are only ever
 * removed from the multi outside curl's callbacks.
 *
 * A request that is not idempotent is sent at most once: curl's retry of
 * a request whose reused connection died (transfer.c Curl_retry_request)
 * goes through CURLOPT_PREREQFUNCTION again before it sends, and there
 * upstream_prereq_cb refuses it once any byte of the request was written.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/time.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "log.h"
#include "upstream.h"

struct upstream {
	struct event_base	*base;
	CURLM			*multi;
	struct event		*timer;
	char			*base_url;
	long			 connect_ms;
	long			 timeout_ms;
	struct timeval		 idle;		/* a stream's allowed silence */
	int			 in_curl;	/* inside a curl call */
	int			 npending;	/* started inside a curl call */
	int			 nreap;		/* aborted inside curl or a hook */
	int			 failing;	/* curl_multi_socket_action fails */
	struct timeval		 fail_since;	/* ... since then */
	struct event		*again;		/* after a failure: call curl again */
	struct upstream_req	*reqs;		/* all in flight */
};

struct upstream_req {
	struct upstream		*up;
	CURL			*easy;
	struct curl_slist	*hdrs;
	char			*url;
	struct evkeyvalq	 rhdrs;		/* the answer's headers */
	int			 headers_done;
	int			 aborted;	/* upstream_abort(): no more hooks */
	int			 in_hook;	/* its hook is running: free later */
	int			 reap;		/* aborted; to free after curl */
	int			 stopped;	/* a hook said stop: done still comes */
	int			 paused;	/* a hook said pause */
	int			 pending;	/* not yet added to the multi */
	int			 once;		/* not idempotent: never resent */
	int			 attempts;	/* sends curl began (prereq calls) */
	int			 refused;	/* a retry was refused: conn lost */
	int			 doomed;	/* to fail: the multi is broken */
	struct event		*idle;		/* a stream's silence timer */
	struct timeval		 idle_tv;	/* the silence it allows */
	struct timeval		 last;		/* when its last bytes came */
	const struct upstream_hooks *hooks;
	void			*arg;
	struct upstream_req	*prev, *next;
};

/* A watched socket. */
struct upstream_sock {
	struct event	*ev;
	struct upstream	*up;
};

static void	upstream_check_done(struct upstream *);
static void	upstream_req_free(struct upstream_req *);
static int	upstream_unanswered(struct upstream_req *);

/*
 * Add the transfers started while inside curl (from a hook): curl
 * refuses curl_multi_add_handle() from its own callbacks.
 */
static void
upstream_add_pending(struct upstream *up)
{
	struct upstream_req	*r;

	for (r = up->reqs; up->npending > 0 && r != NULL; r = r->next) {
		if (!r->pending)
			continue;
		r->pending = 0;
		up->npending--;
		if (curl_multi_add_handle(up->multi, r->easy) != CURLM_OK)
			fatalx("curl_multi_add_handle failed");
	}
}

const char *
upstream_err_str(enum upstream_err e)
{
	switch (e) {
	case UPSTREAM_OK:	return ("ok");
	case UPSTREAM_CONNECT:	return ("connect");
	case UPSTREAM_TIMEOUT:	return ("timeout");
	case UPSTREAM_TLS:	return ("tls");
	case UPSTREAM_PROTOCOL:	return ("protocol");
	case UPSTREAM_ABORTED:	return ("aborted");
	case UPSTREAM_CONN_LOST: return ("connection lost");
	}
	return ("unknown");
}

/* Free the requests aborted while curl or their own hook was running. */
static void
upstream_reap(struct upstream *up)
{
	struct upstream_req	*r, *next;

	for (r = up->reqs; up->nreap > 0 && r != NULL; r = next) {
		next = r->next;
		if (r->reap && !r->in_hook)
			upstream_req_free(r);
	}
}

/*
 * Once curl has returned: report finished transfers, free aborted ones,
 * and add those started meanwhile.
 */
static void
upstream_settle(struct upstream *up)
{
	if (up->in_curl)
		return;
	upstream_check_done(up);
	upstream_reap(up);
	upstream_add_pending(up);
}

/*
 * The multi handle has failed for a second: end every request in flight
 * with its done hook rather than leave it waiting for a curl that no
 * longer drives it.  Requests a hook starts meanwhile are spared.  Called
 * outside curl.
 */
static void
upstream_fail_all(struct upstream *up, const char *why)
{
	struct upstream_req	*r;

	for (r = up->reqs; r != NULL; r = r->next)
		if (!r->aborted)
			r->doomed = 1;
	for (;;) {
		/* A hook may start or abort requests: look again each time. */
		for (r = up->reqs; r != NULL; r = r->next)
			if (r->doomed && !r->aborted)
				break;
		if (r == NULL)
			break;
		r->aborted = 1;
		r->in_hook = 1;
		r->hooks->done(r->arg, upstream_unanswered(r) ?
		    UPSTREAM_CONN_LOST : UPSTREAM_PROTOCOL, why);
		upstream_req_free(r);
	}
}

/* The timer set after a failure: give curl its timeouts again. */
static void	upstream_action(struct upstream *, curl_socket_t, int);

static void
upstream_again_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	upstream_action(arg, CURL_SOCKET_TIMEOUT, 0);
}

/*
 * curl_multi_socket_action() fails only when curl itself is in trouble
 * (out of memory, above all), and it may then have left expired timers
 * unprocessed: a transfer could wait forever.  Call it again soon; once
 * every call has failed for upstream_fail_grace, end all requests in
 * flight.
 */
static const struct timeval	upstream_fail_grace = { 1, 0 };
static const struct timeval	upstream_fail_again = { 0, 100 * 1000 };

static void
upstream_action(struct upstream *up, curl_socket_t fd, int flags)
{
	struct timeval	 now, since;
	CURLMcode	 mc;
	int		 running;

	up->in_curl++;
	mc = curl_multi_socket_action(up->multi, fd, flags, &running);
	up->in_curl--;
	/* What did finish reports its own outcome first. */
	upstream_settle(up);
	if (mc == CURLM_OK) {
		up->failing = 0;
		return;
	}
	log_warnx("curl_multi_socket_action: %s", curl_multi_strerror(mc));
	event_base_gettimeofday_cached(up->base, &now);
	if (!up->failing) {
		up->failing = 1;
		up->fail_since = now;
	}
	timersub(&now, &up->fail_since, &since);
	if (timercmp(&since, &upstream_fail_grace, <)) {
		evtimer_add(up->again, &upstream_fail_again);
		return;
	}
	up->failing = 0;
	upstream_fail_all(up, curl_multi_strerror(mc));
}

static void
upstream_event_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upstream	*up = arg;
	int		 flags = 0;

	if (what & EV_READ)
		flags |= CURL_CSELECT_IN;
	if (what & EV_WRITE)
		flags |= CURL_CSELECT_OUT;
	upstream_action(up, fd, flags);
}

static void
upstream_timer_event(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	upstream_action(arg, CURL_SOCKET_TIMEOUT, 0);
}

/* CURLMOPT_TIMERFUNCTION: never calls curl, only arms our timer. */
static int
upstream_timer_cb(CURLM *multi, long timeout_ms, void *arg)
{
	struct upstream	*up = arg;
	struct timeval	 tv;

	(void)multi;
	if (timeout_ms < 0) {
		evtimer_del(up->timer);
		return (0);
	}
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	evtimer_add(up->timer, &tv);
	return (0);
}

/* CURLMOPT_SOCKETFUNCTION: watch, re-watch or forget a socket. */
static int
upstream_sock_cb(CURL *easy, curl_socket_t s, int what, void *arg,
    void *sockp)
{
	struct upstream		*up = arg;
	struct upstream_sock	*us = sockp;
	CURLMcode		 mc;
	short			 ev;

	(void)easy;
	if (what == CURL_POLL_REMOVE) {
		if (us != NULL) {
			event_free(us->ev);
			free(us);
			/* curl forgets the socket next; a failure costs nothing. */
			if ((mc = curl_multi_assign(up->multi, s, NULL)) !=
			    CURLM_OK)
				log_debug("curl_multi_assign: %s",
				    curl_multi_strerror(mc));
		}
		return (0);
	}
	ev = EV_PERSIST;
	if (what & CURL_POLL_IN)
		ev |= EV_READ;
	if (what & CURL_POLL_OUT)
		ev |= EV_WRITE;
	if (us == NULL) {
		if ((us = calloc(1, sizeof *us)) == NULL)
			fatalx("out of memory");
		us->up = up;
		/*
		 * An event curl never hands back would leak and fire twice:
		 * unwatched, the socket's transfer ends by its timeout.  (curl
		 * knows the socket before it calls us: this should not
		 * happen.)
		 */
		if ((mc = curl_multi_assign(up->multi, s, us)) != CURLM_OK) {
			log_warnx("curl_multi_assign: %s; socket %d unwatched",
			    curl_multi_strerror(mc), (int)s);
			free(us);
			return (0);
		}
	} else
		event_free(us->ev);
	us->ev = event_new(up->base, s, ev, upstream_event_cb, up);
	if (us->ev == NULL)
		fatalx("out of memory");
	event_add(us->ev, NULL);
	return (0);
}

struct upstream *
upstream_new(struct event_base *base, const char *base_url,
    double connect_timeout, double timeout, double stream_idle_timeout)
{
	struct upstream	*up;

	if ((up = calloc(1, sizeof *up)) == NULL ||
	    (up->base_url = strdup(base_url)) == NULL ||
	    (up->multi = curl_multi_init()) == NULL)
		fatalx("out of memory");
	up->base = base;
	up->connect_ms = (long)(connect_timeout * 1000);
	up->timeout_ms = (long)(timeout * 1000);
	up->idle.tv_sec = (time_t)stream_idle_timeout;
	up->idle.tv_usec = (suseconds_t)((stream_idle_timeout -
	    (double)up->idle.tv_sec) * 1e6);
	if ((up->timer = evtimer_new(base, upstream_timer_event, up)) == NULL ||
	    (up->again = evtimer_new(base, upstream_again_cb, up)) == NULL)
		fatalx("out of memory");
	curl_multi_setopt(up->multi, CURLMOPT_SOCKETFUNCTION, upstream_sock_cb);
	curl_multi_setopt(up->multi, CURLMOPT_SOCKETDATA, up);
	curl_multi_setopt(up->multi, CURLMOPT_TIMERFUNCTION, upstream_timer_cb);
	curl_multi_setopt(up->multi, CURLMOPT_TIMERDATA, up);
	curl_multi_setopt(up->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
	curl_multi_setopt(up->multi, CURLMOPT_MAXCONNECTS, 256L);
	return (up);
}

static void
upstream_req_free(struct upstream_req *r)
{
	struct upstream		*up = r->up;
	struct curl_slist	*h;

	if (r->prev != NULL)
		r->prev->next = r->next;
	else
		up->reqs = r->next;
	if (r->next != NULL)
		r->next->prev = r->prev;
	if (r->reap)
		up->nreap--;
	if (r->pending)
		up->npending--;
	else
		curl_multi_remove_handle(up->multi, r->easy);
	curl_easy_cleanup(r->easy);
	if (r->idle != NULL)
		event_free(r->idle);
	/* The Authorization line holds a key: wiped, not just freed. */
	for (h = r->hdrs; h != NULL; h = h->next)
		explicit_bzero(h->data, strlen(h->data));
	curl_slist_free_all(r->hdrs);
	evhttp_clear_headers(&r->rhdrs);
	free(r->url);
	free(r);
}

void
upstream_free(struct upstream *up)
{
	if (up == NULL)
		return;
	while (up->reqs != NULL)
		upstream_req_free(up->reqs);
	curl_multi_cleanup(up->multi);
	event_free(up->timer);
	event_free(up->again);
	free(up->base_url);
	free(up);
}

/* Collect the final answer's headers (curl has parsed them) and report. */
static void
upstream_deliver_headers(struct upstream_req *r)
{
	struct curl_header	*h = NULL;
	long			 status = 0;

	r->headers_done = 1;
	/* -1: the last request of the transfer, after any 100 or redirect. */
	while ((h = curl_easy_nextheader(r->easy, CURLH_HEADER, -1, h)) !=
	    NULL) {
		/* evhttp refuses values with CR or LF: they are dropped. */
		evhttp_add_header(&r->rhdrs, h->name, h->value);
	}
	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
	if (!r->aborted && r->hooks->headers != NULL)
		r->hooks->headers(r->arg, (int)status, &r->rhdrs);
}

static size_t
upstream_write_cb(char *p, size_t size, size_t n, void *arg)
{
	struct upstream_req	*r = arg;
	size_t			 len = size * n;

	if (r->aborted)
		return (0);
	if (!r->headers_done)
		upstream_deliver_headers(r);
	if (r->aborted || r->stopped)
		return (0);
	if (r->idle != NULL)
		event_base_gettimeofday_cached(r->up->base, &r->last);
	switch (r->hooks->data(r->arg, p, len)) {
	case UPSTREAM_STOP:
		r->stopped = 1;
		return (0);
	case UPSTREAM_PAUSE:
		/* curl keeps these bytes and stops reading the socket. */
		r->paused = 1;
		return (CURL_WRITEFUNC_PAUSE);
	default:
		return (len);
	}
}

/*
 * CURLOPT_PREREQFUNCTION, set for requests that are not idempotent:
 * called once per attempt, after the connection is made and before the
 * request is written.  A second call is curl's retry after a reused
 * connection died with no answer; CURLINFO_REQUEST_SIZE then counts the
 * bytes the earlier attempts wrote (it adds up over a transfer's
 * attempts).  None: the request never left us, and the retry is safe.
 * Some: the upstream may have read and acted on it; refuse.
 *
 * This refuses HTTP/2's retries after REFUSED_STREAM or a GOAWAY too,
 * which are safe by protocol, because curl does not say why it retries;
 * with CURL_HTTP_VERSION_2TLS those happen only on TLS connections, and
 * cost a 502 rather than a duplicate.
 */
static int
upstream_prereq_cb(void *arg, char *conn_ip, char *local_ip, int conn_port,
    int local_port)
{
	struct upstream_req	*r = arg;
	long			 sent = 0;

	(void)conn_ip;
	(void)local_ip;
	(void)conn_port;
	(void)local_port;
	if (r->attempts++ == 0)
		return (CURL_PREREQFUNC_OK);
	if (curl_easy_getinfo(r->easy, CURLINFO_REQUEST_SIZE, &sent) !=
	    CURLE_OK)
		sent = 1;
	log_debug("upstream retry #%d of %s: %ld bytes of it written before",
	    r->attempts - 1, r->url, sent);
	if (sent == 0)
		return (CURL_PREREQFUNC_OK);
	r->refused = 1;
	return (CURL_PREREQFUNC_ABORT);
}

/*
 * 1 if a request that is not idempotent may have reached the upstream
 * with no byte of an answer back: ending it now, the caller must not
 * send it again blindly.
 */
static int
upstream_unanswered(struct upstream_req *r)
{
	long	sent = 0, got = 0;

	if (r->refused)
		return (1);
	if (!r->once)
		return (0);
	if (curl_easy_getinfo(r->easy, CURLINFO_REQUEST_SIZE, &sent) !=
	    CURLE_OK || curl_easy_getinfo(r->easy, CURLINFO_HEADER_SIZE,
	    &got) != CURLE_OK)
		return (1);
	return (sent > 0 && got == 0);
}

/*
 * 1 if the transfer ended as UPSTREAM_CONN_LOST: the retry refused, and
 * the same loss where curl does not retry (a fresh connection closed)
 * or where its retry failed before we were asked (the new connect
 * failed).  A timeout keeps its own answer.
 */
static int
upstream_conn_lost(struct upstream_req *r, CURLcode rc)
{
	if (rc == CURLE_OK || rc == CURLE_OPERATION_TIMEDOUT ||
	    rc == CURLE_WRITE_ERROR)
		return (0);
	return (upstream_unanswered(r));
}

static enum upstream_err
upstream_map_err(CURLcode rc)
{
	switch (rc) {
	case CURLE_OK:
		return (UPSTREAM_OK);
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_CONNECT:
		return (UPSTREAM_CONNECT);
	case CURLE_OPERATION_TIMEDOUT:
		return (UPSTREAM_TIMEOUT);
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
		return (UPSTREAM_TLS);
	case CURLE_WRITE_ERROR:
		return (UPSTREAM_ABORTED);
	default:
		return (UPSTREAM_PROTOCOL);
	}
}

static void
upstream_check_done(struct upstream *up)
{
	struct upstream_req	*r;
	CURLMsg			*msg;
	enum upstream_err	 err;
	const char		*why;
	int			 left;

	if (up->in_curl)
		return;
	while ((msg = curl_multi_info_read(up->multi, &left)) != NULL) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &r);
		err = upstream_map_err(msg->data.result);
		why = curl_easy_strerror(msg->data.result);
		if (upstream_conn_lost(r, msg->data.result)) {
			err = UPSTREAM_CONN_LOST;
			if (r->refused)
				why = "connection closed after the request was "
				    "sent; not sent again";
		}
		/* A hook may abort its own request: it is freed here. */
		r->in_hook = 1;
		if (!r->aborted) {
			if (err == UPSTREAM_OK && !r->headers_done)
				upstream_deliver_headers(r);
			if (!r->aborted)
				r->hooks->done(r->arg, err, why);
		}
		upstream_req_free(r);
	}
}

/*
 * A stream's silence timer.  Bytes only note the time they came; the
 * timer, when it fires, sleeps again for what is left.  A stream paused
 * for a slow client is not silent.
 */
static void
upstream_idle_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upstream_req	*r = arg;
	struct upstream		*up = r->up;
	struct timeval		 now, since, left;

	(void)fd;
	(void)what;
	event_base_gettimeofday_cached(up->base, &now);
	timersub(&now, &r->last, &since);
	if (r->paused || timercmp(&since, &r->idle_tv, <)) {
		if (r->paused)
			left = r->idle_tv;
		else
			timersub(&r->idle_tv, &since, &left);
		evtimer_add(r->idle, &left);
		return;
	}
	/* Outside curl here: report and free at once. */
	if (!r->aborted) {
		r->aborted = 1;
		r->in_hook = 1;
		r->hooks->done(r->arg, UPSTREAM_TIMEOUT,
		    "no data within stream_idle_timeout");
	}
	upstream_req_free(r);
}

/* RFC 9110 9.2.2: sending these twice does no more than sending once. */
static int
upstream_idempotent(const char *method)
{
	static const char *const	 idem[] = {
		"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE", NULL
	};
	const char *const		*m;

	for (m = idem; *m != NULL; m++)
		if (strcmp(method, *m) == 0)
			return (1);
	return (0);
}

struct upstream_req *
upstream_start(struct upstream *up, const struct upstream_opts *o,
    const struct upstream_hooks *hooks, void *arg)
{
	struct upstream_req	*r;
	const char *const	*h;
	CURL			*e;

	if ((r = calloc(1, sizeof *r)) == NULL ||
	    (e = curl_easy_init()) == NULL)
		fatalx("out of memory");
	TAILQ_INIT(&r->rhdrs);
	r->up = up;
	r->easy = e;
	r->hooks = hooks;
	r->arg = arg;
	if (asprintf(&r->url, "%s%s", up->base_url, o->path) == -1)
		fatalx("out of memory");
	for (h = o->headers; h != NULL && *h != NULL; h++)
		r->hdrs = curl_slist_append(r->hdrs, *h);
	/* No 100-continue round trip, and none of curl's own defaults. */
	r->hdrs = curl_slist_append(r->hdrs, "Expect:");

	curl_easy_setopt(e, CURLOPT_URL, r->url);
	curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
	curl_easy_setopt(e, CURLOPT_PRIVATE, r);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, upstream_write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, up->connect_ms);
	if (o->stream) {
		/* A stream may run long; silence is what ends it. */
		if ((r->idle = evtimer_new(up->base, upstream_idle_cb, r)) ==
		    NULL)
			fatalx("out of memory");
		event_base_gettimeofday_cached(up->base, &r->last);
		r->idle_tv = up->idle;
		if (o->idle > 0) {
			r->idle_tv.tv_sec = (time_t)o->idle;
			r->idle_tv.tv_usec = (suseconds_t)((o->idle -
			    (double)r->idle_tv.tv_sec) * 1e6);
		}
		evtimer_add(r->idle, &r->idle_tv);
	} else
		curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, up->timeout_ms);
	if (strcmp(o->method, "POST") == 0) {
		curl_easy_setopt(e, CURLOPT_POST, 1L);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
		    (curl_off_t)o->body_len);
		curl_easy_setopt(e, CURLOPT_POSTFIELDS,
		    o->body_len ? o->body : "");
	} else if (strcmp(o->method, "GET") != 0) {
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, o->method);
		if (o->has_body) {
			curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
			    (curl_off_t)o->body_len);
			curl_easy_setopt(e, CURLOPT_POSTFIELDS,
			    o->body_len ? o->body : "");
		}
	}
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->hdrs);
	if (!upstream_idempotent(o->method)) {
		r->once = 1;
		curl_easy_setopt(e, CURLOPT_PREREQFUNCTION,
		    upstream_prereq_cb);
		curl_easy_setopt(e, CURLOPT_PREREQDATA, r);
	}

	r->next = up->reqs;
	if (up->reqs != NULL)
		up->reqs->prev = r;
	up->reqs = r;
	if (up->in_curl) {
		r->pending = 1;
		up->npending++;
	} else if (curl_multi_add_handle(up->multi, e) != CURLM_OK)
		fatalx("curl_multi_add_handle failed");
	return (r);
}

void
upstream_abort(struct upstream_req *r)
{
	if (r == NULL)
		return;
	r->aborted = 1;
	/* Inside curl or its own hook, it is freed once that returns. */
	if (r->up->in_curl || r->in_hook) {
		if (!r->reap) {
			r->reap = 1;
			r->up->nreap++;
		}
		return;
	}
	upstream_req_free(r);
}

void
upstream_resume(struct upstream_req *r)
{
	struct upstream	*up;

	if (r == NULL || !r->paused || r->aborted)
		return;
	up = r->up;
	r->paused = 0;
	/* curl may hand over the held bytes from inside this call. */
	up->in_curl++;
	if (curl_easy_pause(r->easy, CURLPAUSE_CONT) != CURLE_OK)
		log_warnx("could not resume an upstream transfer");
	up->in_curl--;
	upstream_settle(up);
}
