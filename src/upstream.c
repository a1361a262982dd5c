/*
 * upstream.c - libcurl multi_socket on libevent.
 *
 * The glue follows curl's hiperfifo example: curl tells us which sockets
 * to watch (upstream_sock_cb) and when to wake it (upstream_timer_cb); we
 * hand events back with curl_multi_socket_action() and then drain
 * curl_multi_info_read() for finished transfers.  Handles are only ever
 * removed from the multi outside curl's callbacks.
 *
 * One request's own life (its easy handle, callbacks and the no-retry
 * rule) is in upstream_req.c.
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

/* A watched socket. */
struct upstream_sock {
	struct event	*ev;
	struct upstream	*up;
};

static void	upstream_check_done(struct upstream *);

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
void
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
		us = xcalloc(1, sizeof *us);
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

	up = xcalloc(1, sizeof *up);
	up->base_url = xstrdup(base_url);
	if ((up->multi = curl_multi_init()) == NULL)
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

void
upstream_free(struct upstream *up)
{
	if (up == NULL)
		return;
	while (up->reqs != NULL)
		upstream_req_free(up->reqs);
	while (up->nspare > 0)
		curl_easy_cleanup(up->spare[--up->nspare]);
	curl_multi_cleanup(up->multi);
	event_free(up->timer);
	event_free(up->again);
	free(up->base_url);
	free(up);
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
