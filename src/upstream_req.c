/*
 * upstream_req.c - one upstream request: its easy handle and headers,
 * curl's callbacks, pause and resume, abort and free.
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
#include "xmalloc.h"
#include "upstream.h"
#include "upstream_int.h"

void
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
	if (up->nspare < UPSTREAM_SPARE) {
		curl_easy_reset(r->easy);
		up->spare[up->nspare++] = r->easy;
	} else
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

/* Collect the final answer's headers (curl has parsed them) and report. */
void
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
	log_debug("req=%llu: upstream retry #%d of %s: %ld bytes of it "
	    "written before", (unsigned long long)r->serial, r->attempts - 1,
	    r->url, sent);
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
int
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
int
upstream_conn_lost(struct upstream_req *r, CURLcode rc)
{
	if (rc == CURLE_OK || rc == CURLE_OPERATION_TIMEDOUT ||
	    rc == CURLE_WRITE_ERROR)
		return (0);
	return (upstream_unanswered(r));
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

	r = xcalloc(1, sizeof *r);
	if (up->nspare > 0)
		e = up->spare[--up->nspare];
	else if ((e = curl_easy_init()) == NULL)
		fatalx("out of memory");
	TAILQ_INIT(&r->rhdrs);
	r->up = up;
	r->easy = e;
	r->hooks = hooks;
	r->arg = arg;
	r->serial = o->serial;
	xasprintf(&r->url, "%s%s", up->base_url, o->path);
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
		log_warnx("req=%llu: could not resume an upstream transfer",
		    (unsigned long long)r->serial);
	up->in_curl--;
	upstream_settle(up);
}
