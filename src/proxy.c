/*
 * proxy.c - one request's journey, top to bottom.
 *
 *   proxy_handle:  read the route (bad id 400, unknown 404, wrong method
 *                  405) -> tenant -> cacheable?  look up: hit -> reply;
 *                  a deleted id's tombstone -> 404; a fetch of the same
 *                  key in flight -> wait for its answer
 *   proxy_forward: DELETE/cancel invalidate first -> upstream request
 *   headers hook:  an event stream -> start a chunked reply and relay
 *   data hook:     relay a stream's bytes (pausing the upstream while the
 *                  client is behind), or buffer a JSON answer
 *   done hook:     buffered answer -> store if final -> reply to the
 *                  client and to every request that waited;
 *                  transport failure -> 502 / 504, or a stream's error
 *
 * A cache hit touches no JSON and makes no upstream request: the stored
 * status, headers and body are copied into the reply as they are.  A
 * client that goes away ends its upstream transfer at once, unless others
 * wait on that fetch.
 */
#include "config.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/crypto.h>

#include "accesslog.h"
#include "cache.h"
#include "coalesce.h"
#include "credential.h"
#include "guard.h"
#include "log.h"
#include "metrics.h"
#include "proxy.h"
#include "reply.h"
#include "response.h"
#include "route.h"
#include "sse.h"
#include "upstream.h"

/* An answer that is not a stream is held whole; past this it is refused. */
#define PROXY_MAX_BUFFERED	(64 * 1024 * 1024)
#define PROXY_MAX_FWD_HEADERS	64
/* The longest stored header name and value a hit replays (and stores). */
#define PROXY_HDR_NAME		64
#define PROXY_HDR_VALUE		1024
/*
 * A stream's upstream transfer pauses while this much of it waits to be
 * written to a slow client, and resumes once the client has taken it all.
 */
#define PROXY_STREAM_HIGH_WATER	(256 * 1024)

struct proxy {
	struct cache		*cache;
	struct upstream		*up;
	struct keyring		*keys;		/* the newest; requests hold theirs */
	struct coalesce		*flights;	/* fetches others may wait on */
	struct coalesce_box	*box;		/* this loop's, for waiting */
	struct metrics		*metrics;
	struct accesslog	*alog;
	double			 t0;		/* the request being handled */
	struct timeval		 client_tv;
	double			 tombstone_ttl;
	double			 delete_window;
	double			 forward_idle;
	char			 date[40];	/* see proxy_date() */
	time_t			 date_at;
	/* The last pass-through key and its tenant, wiped on change. */
	char			*memo_key;
	size_t			 memo_len;
	char			 memo_tenant[SHA256_HEX_LEN + 1];
	struct proxy_req	*active;
	int			 writing;	/* replies not yet flushed */
	int			 draining;
	void			(*drained)(void *);
	void			*drained_arg;
};

struct proxy_req {
	struct proxy		*px;
	struct evhttp_request	*req;		/* NULL once its client left */
	struct event		*gone;		/* the client's end closing */
	struct coalesce_fetch	*fetch;		/* others may wait on ours */
	struct coalesce_waiter	 waiter;	/* or we wait on another's */
	struct route		 route;
	struct keyring		*keys;		/* as the request began */
	int			 keys_held;	/* a reference: it went async */
	const struct client	*client;	/* NULL: no client auth */
	const struct credential	*cred;		/* NULL: pass-through */
	char			 tenant[SHA256_HEX_LEN + 1];
	struct response_request	 rq;		/* a POST's body, read whole */
	char			*key;		/* cache key, cacheable routes */
	char			*upath;		/* path and query sent upstream */
	size_t			 klen;
	struct upstream_req	*ureq;
	double			 t0;		/* its headers came in */
	double			 ut0;		/* its upstream request went out */
	time_t			 since;		/* the same, by the wall clock */
	double			 usecs;		/* and took this long */
	enum metrics_cache	 result;	/* the cache's part */
	char			*fwd[PROXY_MAX_FWD_HEADERS + 1];
	int			 status;
	const struct evkeyvalq	*uhdrs;		/* upstream's, until done */
	struct evbuffer		*body;
	int			 streaming;
	int			 raw;		/* relayed as bytes, not events */
	int			 paused;	/* the client is behind */
	size_t			 relayed;	/* stream bytes sent on */
	char			 tail[4];	/* the last of them */
	struct sse		*sse;		/* a streamed create's events */
	int			 too_big;
	int			 no_store;	/* never cache this answer */
	int			 own_answer;	/* its answer's id is the client's */
	struct proxy_req	*prev, *next;
};

/*
 * Warnings a request may cause: at most one line a second each, however
 * many requests fail alike (an upstream down, a key revoked).
 */
static struct log_limit	proxy_lim_watch, proxy_lim_refused, proxy_lim_stream,
			proxy_lim_upstream, proxy_lim_invalid, proxy_lim_cache;

/* Client request headers that go upstream (besides Authorization). */
static const char *const proxy_fwd_req[] = {
	"content-type", "accept", "user-agent", "openai-beta",
	"idempotency-key", "openai-organization", "openai-project", NULL
};

/* Upstream answer headers that go back to the client. */
static const char *const proxy_fwd_resp[] = {
	"content-type", "x-request-id", "openai-processing-ms",
	"openai-version", "openai-organization", "openai-project",
	"retry-after", "retry-after-ms", "x-should-retry",
	"content-disposition", "openai-model", NULL
};

/* Of those, the ones a cached entry keeps for its replay. */
static const char *const proxy_stored_resp[] = {
	"content-type", "x-request-id", "openai-version",
	"openai-organization", "openai-project", NULL
};

static int
proxy_in_list(const char *name, const char *const *list)
{
	for (; *list != NULL; list++)
		if (strcasecmp(name, *list) == 0)
			return (1);
	return (0);
}

static enum route_method
proxy_method(enum evhttp_cmd_type t)
{
	switch (t) {
	case EVHTTP_REQ_GET:	return (RM_GET);
	case EVHTTP_REQ_POST:	return (RM_POST);
	case EVHTTP_REQ_DELETE:	return (RM_DELETE);
	case EVHTTP_REQ_HEAD:	return (RM_HEAD);
	case EVHTTP_REQ_PUT:	return (RM_PUT);
	case EVHTTP_REQ_PATCH:	return (RM_PATCH);
	case EVHTTP_REQ_OPTIONS: return (RM_OPTIONS);
	default:		return (RM_OTHER);
	}
}

static const char *
proxy_method_name(enum route_method m)
{
	static const char *const names[] = { "GET", "POST", "DELETE", "HEAD",
	    "PUT", "PATCH", "OPTIONS", "OTHER" };

	return (names[m]);
}

/* A request's method as it came, for the access log. */
static const char *
proxy_cmd_name(enum evhttp_cmd_type t)
{
	switch (t) {
	case EVHTTP_REQ_TRACE:		return ("TRACE");
	case EVHTTP_REQ_CONNECT:	return ("CONNECT");
	default:			return (proxy_method_name(
					    proxy_method(t)));
	}
}

/* 1 if the request is a DELETE of a response: see proxy_delete_begin(). */
static int
proxy_is_delete(const struct proxy_req *pr)
{
	return (pr->route.kind == ROUTE_RESPONSE &&
	    pr->route.method == RM_DELETE);
}

/* Seconds on a monotonic clock. */
static double
proxy_clock(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
}

static const char *const proxy_result_names[MC_COUNT] = {
	"hit", "miss", "coalesced", "bypass"
};

/*
 * A request is answered (or its client left: status 499): count it in
 * the metrics and write its access log line.  pr is NULL for answers
 * made before a request had one.  Called once per request, right after
 * its reply was handed to evhttp (or its client left); a stream's just
 * before its end is, since that may free req.
 */
static void
proxy_account(struct proxy *px, struct evhttp_request *req,
    const struct proxy_req *pr, int status, enum metrics_cache result,
    size_t bytes)
{
	struct access_entry	 e;
	enum metrics_route	 route = MR_NONE;
	enum route_method	 rm;
	enum metrics_method	 method;
	double			 now = proxy_clock();

	rm = proxy_method(evhttp_request_get_command(req));
	e.method = proxy_cmd_name(evhttp_request_get_command(req));
	method = rm == RM_GET ? MM_GET : rm == RM_POST ? MM_POST :
	    rm == RM_DELETE ? MM_DELETE : MM_OTHER;
	if (pr != NULL && pr->route.method != RM_OTHER)
		route = pr->route.kind == ROUTE_FORWARD ? MR_OTHER :
		    (enum metrics_route)pr->route.kind;
	e.secs = now - (pr != NULL ? pr->t0 : px->t0);
	metrics_request(px->metrics, route, method, status, result, e.secs);
	e.route = metrics_route_name(route);
	metrics_inflight(px->metrics, -1);
	if (px->alog == NULL)
		return;
	e.client = pr != NULL && pr->client != NULL ? pr->client->name : NULL;
	e.uri = evhttp_request_get_uri(req);
	e.status = status;
	e.cache = proxy_result_names[result];
	e.upstream_status = pr != NULL && result != MC_COALESCED &&
	    result != MC_HIT ? pr->status : 0;
	e.upstream_secs = pr == NULL ? 0 : pr->ureq != NULL ? now - pr->ut0 :
	    pr->usecs;
	e.bytes = bytes;
	e.request_id = evhttp_find_header(evhttp_request_get_output_headers(
	    req), "x-request-id");
	accesslog_write(px->alog, &e);
}

static void
proxy_check_drained(struct proxy *px)
{
	if (px->draining && px->active == NULL && px->writing == 0 &&
	    px->drained != NULL) {
		px->drained(px->drained_arg);
		px->drained = NULL;
	}
}

static void
proxy_written(struct evhttp_request *req, void *arg)
{
	struct proxy			*px = arg;
	struct evhttp_connection	*evcon = evhttp_request_get_connection(req);

	evhttp_connection_set_closecb(evcon, NULL, NULL);
	/*
	 * libevent keeps a CONNECT's connection open whatever the answer says
	 * (a tunnel): once its refusal is written, it is shut, and evhttp
	 * lets it go when it reads the end.  With no guard_done(), the guard
	 * refuses anything that came behind it (see guard.h).
	 */
	if (evhttp_request_get_command(req) == EVHTTP_REQ_CONNECT)
		shutdown(bufferevent_getfd(evhttp_connection_get_bufferevent(
		    evcon)), SHUT_RDWR);
	else
		guard_done(req);
	px->writing--;
	log_debug("reply written (%d being written)", px->writing);
	proxy_check_drained(px);
}

/*
 * A stream's last byte is written: its connection gets its read timeout
 * back for the requests that may follow on it.
 */
static void
proxy_stream_written(struct evhttp_request *req, void *arg)
{
	struct proxy	*px = arg;

	evhttp_connection_set_timeout_tv(evhttp_request_get_connection(req),
	    &px->client_tv);
	proxy_written(req, arg);
}

static void
proxy_write_failed(struct evhttp_connection *evcon, void *arg)
{
	struct proxy	*px = arg;

	(void)evcon;
	px->writing--;
	log_debug("reply cut: client gone (%d being written)", px->writing);
	proxy_check_drained(px);
}

/*
 * Count a reply until its last byte is written (or its connection dies),
 * so a drain never cuts an answer short.  Call it just before the final
 * evhttp_send_reply() or evhttp_send_reply_end().
 */
static void
proxy_track_reply(struct proxy *px, struct evhttp_request *req)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);

	if (evcon == NULL)
		return;
	px->writing++;
	evhttp_request_set_on_complete_cb(req, proxy_written, px);
	evhttp_connection_set_closecb(evcon, proxy_write_failed, px);
}

/* An error the proxy answers itself, counted like any reply. */
static void
proxy_reply_error(struct proxy *px, struct evhttp_request *req,
    const struct proxy_req *pr, int status, const char *type,
    const char *code, const char *message, const char *allow)
{
	size_t	len;

	proxy_track_reply(px, req);
	len = reply_error(req, status, type, code, message, allow);
	proxy_account(px, req, pr, status, MC_BYPASS, len);
}

static void
proxy_req_free(struct proxy_req *pr)
{
	struct proxy	*px = pr->px;
	size_t		 i;

	if (pr->prev != NULL)
		pr->prev->next = pr->next;
	else if (px->active == pr)
		px->active = pr->next;
	if (pr->next != NULL)
		pr->next->prev = pr->prev;
	if (pr->gone != NULL)
		event_free(pr->gone);
	if (pr->streaming && !pr->raw)
		metrics_streams(px->metrics, -1);
	coalesce_leave(&pr->waiter);
	/* Those waiting on a fetch that ends with nothing fetch their own. */
	if (pr->fetch != NULL)
		coalesce_end(px->flights, pr->fetch, NULL);
	proxy_check_drained(px);
	/* One of them may hold a key: none is left in freed memory. */
	for (i = 0; pr->fwd[i] != NULL; i++) {
		explicit_bzero(pr->fwd[i], strlen(pr->fwd[i]));
		free(pr->fwd[i]);
	}
	if (pr->body != NULL)
		evbuffer_free(pr->body);
	sse_free(pr->sse);
	if (pr->keys_held)
		keyring_unref(pr->keys);
	route_clear(&pr->route);
	free(pr->key);
	free(pr->upath);
	free(pr);
}

/* The client is no longer waiting for this request's answer. */
static void
proxy_req_detach(struct proxy_req *pr)
{
	struct evhttp_connection *evcon;

	if (pr->gone != NULL) {
		event_free(pr->gone);
		pr->gone = NULL;
	}
	evcon = evhttp_request_get_connection(pr->req);
	if (evcon != NULL)
		evhttp_connection_set_closecb(evcon, NULL, NULL);
}

/*
 * The client's connection went away while we still owned its request.
 * When evhttp detached the request from the dying connection, it is ours
 * to free; otherwise the connection frees it.  The upstream transfer
 * ends at once, unless other requests wait on its answer.
 */
static void
proxy_client_closed(struct evhttp_connection *evcon, void *arg)
{
	struct proxy_req	*pr = arg;

	(void)evcon;
	log_debug("client closed during %s %s", proxy_method_name(
	    pr->route.method), evhttp_request_get_uri(pr->req));
	proxy_account(pr->px, pr->req, pr, 499, pr->result, pr->relayed);
	if (evhttp_request_get_connection(pr->req) == NULL)
		evhttp_request_free(pr->req);
	pr->req = NULL;
	if (pr->gone != NULL) {
		event_free(pr->gone);
		pr->gone = NULL;
	}
	if (pr->fetch != NULL && coalesce_waiters(pr->px->flights,
	    pr->fetch) > 0)
		return;
	/* A DELETE's outcome is wanted, client or not: see proxy_delete_end. */
	if (proxy_is_delete(pr) && pr->ureq != NULL)
		return;
	upstream_abort(pr->ureq);
	pr->ureq = NULL;
	proxy_req_free(pr);
}

/* EV_CLOSED on the client's socket: closing ours runs the above. */
static void
proxy_client_gone(evutil_socket_t fd, short what, void *arg)
{
	struct proxy_req	*pr = arg;

	(void)fd;
	(void)what;
	evhttp_connection_free(evhttp_request_get_connection(pr->req));
}

/*
 * Notice at once when the client goes away while it waits: evhttp does
 * not read a connection while its request is being served.
 */
static void
proxy_watch_client(struct proxy_req *pr)
{
	struct evhttp_connection *evcon;
	evutil_socket_t		 fd;

	evcon = evhttp_request_get_connection(pr->req);
	evhttp_connection_set_closecb(evcon, proxy_client_closed, pr);
	if (pr->gone != NULL ||
	    (fd = bufferevent_getfd(evhttp_connection_get_bufferevent(evcon))) ==
	    -1)
		return;
	pr->gone = event_new(evhttp_connection_get_base(evcon), fd, EV_CLOSED,
	    proxy_client_gone, pr);
	/* Without it, a client's leaving is seen at the reply instead. */
	if (pr->gone != NULL && event_add(pr->gone, NULL) == -1) {
		event_free(pr->gone);
		pr->gone = NULL;
	}
	if (pr->gone == NULL)
		log_warnx_limited(&proxy_lim_watch, "cannot watch a client "
		    "connection for its close");
}

/* Add the tenant's view of X-Cache to a reply. */
static void
proxy_xcache(struct evkeyvalq *out, const char *what)
{
	evhttp_add_header(out, "X-Cache", what);
}

/* A strong ETag: a quoted prefix of the body's SHA-256. */
static void
proxy_etag(const void *body, size_t len, char out[36])
{
	char	hex[SHA256_HEX_LEN + 1];

	sha256_hex(body, len, hex);
	snprintf(out, 36, "\"%.32s\"", hex);
}

/* 1 if an If-None-Match value names etag (weak comparison, RFC 9110). */
static int
proxy_etag_match(const char *inm, const char *etag, size_t etag_len)
{
	const char	*p;

	if (inm == NULL)
		return (0);
	if (strcmp(inm, "*") == 0)
		return (1);
	for (p = inm; (p = strstr(p, "\"")) != NULL; p++) {
		if (strncmp(p, etag, etag_len) == 0)
			return (1);
		if ((p = strchr(p + 1, '"')) == NULL)
			break;
	}
	return (0);
}

/* The Date header's value, formatted once a second (IMF-fixdate). */
static const char *
proxy_date(struct proxy *px, time_t now)
{
	static const char	 days[] = "SunMonTueWedThuFriSat";
	static const char	 months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	struct tm		 tm;

	if (now != px->date_at && gmtime_r(&now, &tm) != NULL) {
		snprintf(px->date, sizeof px->date,
		    "%.3s, %02d %.3s %04d %02d:%02d:%02d GMT",
		    days + 3 * tm.tm_wday, tm.tm_mday, months + 3 * tm.tm_mon,
		    tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
		px->date_at = now;
	}
	return (px->date);
}

struct proxy_hit {
	struct proxy		*px;
	struct proxy_req	*pr;
	struct evhttp_request	*req;
	time_t			 now;
	double			 max_age;	/* 0: any age */
	int			 served;
};

/* cache_visit_fn: the hit path.  Copies the entry into the reply. */
static void
proxy_serve_hit(const struct cache_entry *e, void *arg)
{
	struct proxy_hit	*h = arg;
	struct evhttp_request	*req = h->req;
	struct evkeyvalq	*out = evhttp_request_get_output_headers(req);
	const char		*p, *end, *colon, *eol;
	char			 name[PROXY_HDR_NAME], value[PROXY_HDR_VALUE];
	char			 age[24], etag[64];
	const char		*inm;
	long			 secs;

	secs = (long)(h->now - e->stored_at);
	if (h->max_age > 0 && (double)secs >= h->max_age)
		return;
	h->served = 1;
	/* The stored lines are our own "Name: value\r\n" records. */
	for (p = e->hdrs, end = e->hdrs + e->hdrs_len; p < end; p = eol + 2) {
		if ((eol = memchr(p, '\r', (size_t)(end - p))) == NULL)
			break;
		if ((colon = memchr(p, ':', (size_t)(eol - p))) == NULL ||
		    (size_t)(colon - p) >= sizeof name ||
		    (size_t)(eol - colon - 2) >= sizeof value)
			continue;
		memcpy(name, p, (size_t)(colon - p));
		name[colon - p] = '\0';
		memcpy(value, colon + 2, (size_t)(eol - colon - 2));
		value[eol - colon - 2] = '\0';
		evhttp_add_header(out, name, value);
	}
	snprintf(age, sizeof age, "%ld", secs < 0 ? 0 : secs);
	evhttp_add_header(out, "Age", age);
	if (e->etag_len > 0 && e->etag_len < sizeof etag) {
		memcpy(etag, e->etag, e->etag_len);
		etag[e->etag_len] = '\0';
		evhttp_add_header(out, "ETag", etag);
	}
	/* evhttp would format Date for every reply itself. */
	evhttp_add_header(out, "Date", proxy_date(h->px, h->now));
	proxy_xcache(out, "HIT");
	inm = evhttp_find_header(evhttp_request_get_input_headers(req),
	    "If-None-Match");
	proxy_track_reply(h->px, req);
	if (e->status == 200 && e->etag_len > 0 &&
	    proxy_etag_match(inm, e->etag, e->etag_len)) {
		evhttp_send_reply(req, 304, "Not Modified", NULL);
		proxy_account(h->px, req, h->pr, 304, MC_HIT, 0);
		return;
	}
	/* Straight into the reply's buffer: no evbuffer of our own. */
	if (evbuffer_add(evhttp_request_get_output_buffer(req), e->body,
	    e->body_len) == -1)
		fatalx("out of memory");
	evhttp_send_reply(req, e->status, NULL, NULL);
	proxy_account(h->px, req, h->pr, e->status, MC_HIT, e->body_len);
}

/* The upstream's own 404 body for an unknown id; the caller frees it. */
static char	*proxy_not_found_body(const char *, const char *);

/*
 * A deleted id's tombstone answers GETs of it with the upstream's 404
 * for tombstone_ttl, without asking the upstream: the id's own, kept by
 * its delete guard once the upstream deleted it (for every tenant), or
 * this tenant's, written when the upstream answered its DELETE with 404.
 * Returns 1 if served.
 */
static int
proxy_tombstoned(struct proxy_req *pr, time_t now)
{
	static const char	 hdrs[] = "content-type: application/json\r\n";
	struct proxy_hit	 h;
	struct cache_entry	 e;
	char			*key, *body;
	size_t			 klen;
	time_t			 at;

	if (pr->route.method != RM_GET || pr->px->tombstone_ttl <= 0 ||
	    (pr->route.kind != ROUTE_RESPONSE &&
	    pr->route.kind != ROUTE_INPUT_ITEMS))
		return (0);
	memset(&h, 0, sizeof h);
	h.px = pr->px;
	h.pr = pr;
	h.req = pr->req;
	h.now = now;
	h.max_age = pr->px->tombstone_ttl;
	if (cache_deleted(pr->px->cache, pr->route.id, &at)) {
		body = proxy_not_found_body("Response", pr->route.id);
		memset(&e, 0, sizeof e);
		e.status = 404;
		e.etag = "";
		e.hdrs = hdrs;
		e.hdrs_len = sizeof hdrs - 1;
		e.body = body;
		e.body_len = strlen(body);
		e.stored_at = at;
		proxy_serve_hit(&e, &h);
		free(body);
		if (h.served)
			return (1);
	}
	key = route_id_prefix(pr->tenant, 't', pr->route.id, &klen);
	cache_get(pr->px->cache, key, klen, now, proxy_serve_hit, &h);
	free(key);
	return (h.served);
}

/* The upstream's own message for an unknown id; the caller frees it. */
static char *
proxy_not_found_msg(const char *what, const char *id)
{
	char	*msg;

	if (asprintf(&msg, "%s with id '%s' not found.", what, id) == -1)
		fatalx("out of memory");
	return (msg);
}

static char *
proxy_not_found_body(const char *what, const char *id)
{
	char	*msg, *body;

	msg = proxy_not_found_msg(what, id);
	body = reply_error_json("invalid_request_error", NULL, msg);
	free(msg);
	return (body);
}

/*
 * A DELETE goes out: its id's guard says so before it leaves (see
 * cache.h), every tenant's entries of the id go, and fetches of it in
 * flight take no new waiters.  From here on no answer fetched before the
 * delete can take effect is stored or shared, whatever becomes of the
 * DELETE: an outcome that never comes back (a timeout, a cut connection,
 * the proxy killed) leaves the guard in place for delete_window.
 * Returns -1 if the cache could not record it: the DELETE must not go,
 * or the cache would go on serving what the upstream deleted.
 */
static int
proxy_delete_begin(struct proxy_req *pr)
{
	coalesce_detach_id(pr->px->flights, pr->route.id);
	if (cache_delete_begin(pr->px->cache, pr->route.id,
	    pr->px->delete_window, time(NULL)) == -1 ||
	    cache_purge_id(pr->px->cache, pr->route.id, 0) == -1)
		return (-1);
	return (0);
}

/*
 * The upstream answered the DELETE with status: a 2xx deleted it (a
 * tombstone for every tenant); 404 did not, for this tenant (a tombstone
 * of its own); any other 4xx was refused (the guard counts one DELETE
 * less); a 1xx, 3xx, 5xx or 408 may or may not have deleted it (the
 * guard stays).  Fetches of the id begun meanwhile take no new waiters.
 */
static void
proxy_delete_end(struct proxy_req *pr, int status)
{
	static const char	 hdrs[] = "content-type: application/json\r\n";
	struct proxy		*px = pr->px;
	char			*key, *body;
	size_t			 klen;
	time_t			 now = time(NULL);

	coalesce_detach_id(px->flights, pr->route.id);
	if (status >= 500 || status == 408 || status < 200 ||
	    (status >= 300 && status < 400))
		return;
	cache_delete_end(px->cache, pr->route.id, status < 300,
	    px->tombstone_ttl, now);
	if (status < 300)	/* the guard kept any new one out: a backstop */
		cache_purge_id(px->cache, pr->route.id, 0);
	if (status == 404 && px->tombstone_ttl > 0) {
		body = proxy_not_found_body("Response", pr->route.id);
		key = route_id_prefix(pr->tenant, 't', pr->route.id, &klen);
		cache_put(px->cache, key, klen, NULL, 404, "", 0, hdrs,
		    sizeof hdrs - 1, body, strlen(body), now);
		free(key);
		free(body);
	}
}

/*
 * Ownership: with client sections, the client that created a response
 * is the only one of its credential that may read, delete or cancel it.
 * The record, "<tenant>\0o\0<id>\0" -> client name, is a cache owner
 * record (see cache.h).
 */
static void
proxy_own(struct proxy_req *pr, const char *id)
{
	char	*key;
	size_t	 klen;

	if (!pr->keys->ownership || pr->client == NULL || *id == '\0')
		return;
	key = route_id_prefix(pr->tenant, 'o', id, &klen);
	cache_owner_put(pr->px->cache, key, klen, pr->client->name);
	free(key);
}

/* 1 if this request's client may use id. */
static int
proxy_owns(struct proxy_req *pr, const char *id)
{
	char			 name[72], *key;
	size_t			 klen;
	int			 rc;

	key = route_id_prefix(pr->tenant, 'o', id, &klen);
	rc = cache_owner_get(pr->px->cache, key, klen, name, sizeof name);
	free(key);
	/* Unsure, or created here with its record since evicted: refuse. */
	if (rc == -1 || rc == CACHE_OWNER_LOST)
		return (0);
	if (rc == 0)
		return (!pr->keys->unknown_owner_deny);
	return (strcmp(name, pr->client->name) == 0);
}

/*
 * 1 if this request's client may use the ids it names: the one in its
 * path, and a create's previous_response_id (which would hand it that
 * conversation).  With a refusal, *what says which id.
 */
static int
proxy_owner_ok(struct proxy_req *pr, const char **what,
    const char **label)
{
	if (!pr->keys->ownership || pr->client == NULL)
		return (1);
	*what = pr->route.id;
	*label = pr->route.kind == ROUTE_FORWARD ? "Conversation" :
	    "Response";
	if (pr->route.id[0] != '\0' && !proxy_owns(pr, pr->route.id))
		return (0);
	if (pr->route.method != RM_POST)
		return (1);
	*what = pr->rq.previous;
	*label = "Previous response";
	if (pr->rq.previous[0] != '\0' && !proxy_owns(pr, pr->rq.previous))
		return (0);
	*what = pr->rq.conversation;
	*label = "Conversation";
	return (pr->rq.conversation[0] == '\0' ||
	    proxy_owns(pr, pr->rq.conversation));
}

/* The upstream's own 404 for an id, as another client would get it. */
static void
proxy_reply_not_found(struct proxy_req *pr, const char *label,
    const char *id)
{
	char	*msg;

	msg = proxy_not_found_msg(label, id);
	proxy_reply_error(pr->px, pr->req, pr, 404, "invalid_request_error", NULL,
	    msg, NULL);
	free(msg);
}

/* Copy the upstream headers that go back to the client into out. */
static void
proxy_copy_resp_headers(struct proxy_req *pr, struct evkeyvalq *out)
{
	struct evkeyval		*h;

	if (pr->uhdrs == NULL)
		return;
	TAILQ_FOREACH(h, pr->uhdrs, next) {
		if (proxy_in_list(h->key, proxy_fwd_resp) ||
		    strncasecmp(h->key, "x-ratelimit-", 12) == 0)
			evhttp_add_header(out, h->key, h->value);
	}
}

/* Send an answer (see coalesce.h) to one client. */
static void
proxy_send_answer(struct proxy_req *pr, const struct coalesce_answer *a)
{
	struct proxy		*px = pr->px;
	struct evhttp_request	*req = pr->req;
	struct evkeyvalq	*out = evhttp_request_get_output_headers(req);
	struct evkeyval		*h;
	const char		*etag, *inm;

	TAILQ_FOREACH(h, a->headers, next)
		evhttp_add_header(out, h->key, h->value);
	etag = evhttp_find_header(a->headers, "ETag");
	inm = evhttp_find_header(evhttp_request_get_input_headers(req),
	    "If-None-Match");
	proxy_track_reply(px, req);
	if (a->status == 200 && etag != NULL &&
	    proxy_etag_match(inm, etag, strlen(etag))) {
		evhttp_send_reply(req, 304, "Not Modified", NULL);
		proxy_account(px, req, pr, 304, pr->result, 0);
		return;
	}
	if (evbuffer_add(evhttp_request_get_output_buffer(req), a->body,
	    a->body_len) == -1)
		fatalx("out of memory");
	evhttp_send_reply(req, a->status, NULL, NULL);
	proxy_account(px, req, pr, a->status, pr->result, a->body_len);
}

/* End this request's fetch: those waiting on it get answer (or NULL). */
static void
proxy_end_fetch(struct proxy_req *pr, const struct coalesce_answer *a)
{
	struct coalesce_fetch	*f = pr->fetch;

	if (f == NULL)
		return;
	pr->fetch = NULL;
	coalesce_end(pr->px->flights, f, a);
}

/* Answer this request's client, if still there, and all who waited. */
static void
proxy_answer(struct proxy_req *pr, const struct coalesce_answer *a)
{
	proxy_end_fetch(pr, a);
	if (pr->req != NULL) {
		proxy_req_detach(pr);
		proxy_send_answer(pr, a);
	}
}

/*
 * An error of the proxy's own as the answer; frees pr.  no_retry adds
 * x-should-retry: false, which the OpenAI SDKs obey instead of retrying
 * a 5xx.
 */
static void
proxy_answer_error(struct proxy_req *pr, int status, const char *code,
    const char *message, int no_retry)
{
	struct evkeyvalq	 hdrs;
	struct coalesce_answer	 a;
	char			*body;

	TAILQ_INIT(&hdrs);
	evhttp_add_header(&hdrs, "Content-Type", "application/json");
	if (no_retry)
		evhttp_add_header(&hdrs, "x-should-retry", "false");
	proxy_xcache(&hdrs, pr->route.cacheable ? "MISS" : "BYPASS");
	body = reply_error_json("upstream_error", code, message);
	a.status = status;
	a.headers = &hdrs;
	a.body = body;
	a.body_len = strlen(body);
	proxy_answer(pr, &a);
	free(body);
	evhttp_clear_headers(&hdrs);
	proxy_req_free(pr);
}

/* coalesce waiter: the fetch this request waited on is over. */
static void	proxy_forward(struct proxy_req *);

static void
proxy_waited(struct coalesce_waiter *w, const struct coalesce_answer *a)
{
	struct proxy_req	*pr;

	pr = (struct proxy_req *)(void *)((char *)w -
	    offsetof(struct proxy_req, waiter));
	if (a == NULL) {
		/* It ended with nothing to share: fetch for ourselves. */
		pr->result = MC_MISS;
		proxy_forward(pr);
		return;
	}
	proxy_req_detach(pr);
	proxy_send_answer(pr, a);
	proxy_req_free(pr);
}

/* The bytes of the client's reply not yet written to its socket. */
static size_t
proxy_backlog(struct proxy_req *pr)
{
	struct evhttp_connection *evcon;

	evcon = evhttp_request_get_connection(pr->req);
	return (evbuffer_get_length(bufferevent_get_output(
	    evhttp_connection_get_bufferevent(evcon))));
}

/* evhttp: the client has taken all we wrote; go on reading upstream. */
static void
proxy_stream_drained(struct evhttp_connection *evcon, void *arg)
{
	struct proxy_req	*pr = arg;

	(void)evcon;
	if (!pr->paused)
		return;
	pr->paused = 0;
	upstream_resume(pr->ureq);	/* may relay, pause or end the stream */
}

/* Remember the last bytes relayed, to tell whether an event was cut. */
static void
proxy_stream_tail(struct proxy_req *pr, const char *p, size_t len)
{
	size_t	keep = len < sizeof pr->tail ? len : sizeof pr->tail;

	memmove(pr->tail, pr->tail + keep, sizeof pr->tail - keep);
	memcpy(pr->tail + sizeof pr->tail - keep, p + len - keep, keep);
	pr->relayed += len;
}

/* 1 if what was relayed ends between two events. */
static int
proxy_stream_at_boundary(const struct proxy_req *pr)
{
	const char	*t = pr->tail;

	if (pr->relayed == 0)
		return (1);
	if (pr->relayed >= 2 && ((t[2] == '\n' && t[3] == '\n') ||
	    (t[2] == '\r' && t[3] == '\r')))
		return (1);
	return (pr->relayed >= 4 && memcmp(t, "\r\n\r\n", 4) == 0);
}

/*
 * End a relayed stream; frees pr.  A stream cut short (code not NULL)
 * ends with an error event, as the API's own failed streams do, so the
 * SDKs raise an error instead of taking a short stream for a whole one.
 * Cut in the middle of an event, the connection is closed without the
 * last chunk instead: the client sees a truncated body, not a broken
 * event.
 */
static void
proxy_stream_end(struct proxy_req *pr, const char *type, const char *code,
    const char *message)
{
	struct evhttp_request	 *req = pr->req;
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct evbuffer		 *ev;

	proxy_req_detach(pr);
	/* Bytes, not events, have no error event to end with. */
	if (code != NULL && (pr->raw || !proxy_stream_at_boundary(pr))) {
		proxy_account(pr->px, req, pr, pr->status, pr->result,
		    pr->relayed);
		proxy_req_free(pr);
		evhttp_connection_free(evcon);
		return;
	}
	if (code != NULL) {
		if ((ev = evbuffer_new()) == NULL)
			fatalx("out of memory");
		reply_error_event(ev, type, code, message);
		evhttp_send_reply_chunk(req, ev);
		evbuffer_free(ev);
	}
	/*
	 * Counted first: when nothing is left to write (an HTTP/1.0 client,
	 * not chunked, that took every byte), evhttp_send_reply_end() ends
	 * the request at once and frees req.
	 */
	proxy_account(pr->px, req, pr, pr->status, pr->result, pr->relayed);
	proxy_track_reply(pr->px, req);
	evhttp_request_set_on_complete_cb(req, proxy_stream_written, pr->px);
	evhttp_send_reply_end(req);
	proxy_req_free(pr);
}

static void	proxy_stream_event(void *, const char *, const char *, size_t);

static void
proxy_up_headers(void *arg, int status, const struct evkeyvalq *hdrs)
{
	struct proxy_req	*pr = arg;
	struct evkeyvalq	*out;
	const char		*ct;
	int			 sse;

	pr->status = status;
	pr->uhdrs = hdrs;
	ct = evhttp_find_header(hdrs, "Content-Type");
	sse = ct != NULL && strncasecmp(ct, "text/event-stream", 17) == 0;
	/*
	 * A forwarded path's answer goes through as it comes, whatever it
	 * is, but for the upstream refusing the proxy's own key (see
	 * proxy_key_refused()).
	 */
	if (!(pr->route.kind == ROUTE_FORWARD && !pr->own_answer &&
	    !(status == 401 && pr->cred != NULL)) && !(status == 200 && sse))
		return;
	/* An event stream goes through as it comes, never held whole. */
	pr->streaming = 1;
	pr->raw = !sse;
	if (!pr->raw)
		metrics_streams(pr->px->metrics, 1);
	/* A stream is one client's: anyone waiting fetches their own. */
	proxy_end_fetch(pr, NULL);
	if (pr->req == NULL) {
		upstream_abort(pr->ureq);
		pr->ureq = NULL;
		proxy_req_free(pr);
		return;
	}
	if (pr->route.kind == ROUTE_CREATE && (!pr->no_store ||
	    (pr->keys->ownership && pr->client != NULL)))
		pr->sse = sse_new(PROXY_MAX_BUFFERED, proxy_stream_event, pr);
	out = evhttp_request_get_output_headers(pr->req);
	proxy_copy_resp_headers(pr, out);
	evhttp_add_header(out, "Cache-Control", "no-cache");
	proxy_xcache(out, "BYPASS");
	evhttp_send_reply_start(pr->req, status, NULL);
	/* A stream may be quiet for minutes: only a stalled write times out. */
	bufferevent_set_timeouts(evhttp_connection_get_bufferevent(
	    evhttp_request_get_connection(pr->req)), NULL, &pr->px->client_tv);
}

static int
proxy_up_data(void *arg, const char *p, size_t len)
{
	struct proxy_req	*pr = arg;
	struct evbuffer		*chunk;

	if (pr->streaming) {
		/* Hold the upstream while the client is behind. */
		if (proxy_backlog(pr) >= PROXY_STREAM_HIGH_WATER) {
			pr->paused = 1;
			return (UPSTREAM_PAUSE);
		}
		if ((chunk = evbuffer_new()) == NULL)
			fatalx("out of memory");
		evbuffer_add(chunk, p, len);
		evhttp_send_reply_chunk_with_cb(pr->req, chunk,
		    proxy_stream_drained, pr);
		evbuffer_free(chunk);
		proxy_stream_tail(pr, p, len);
		/* Relay first: reading the stream adds no delay to it. */
		if (pr->sse != NULL)
			sse_feed(pr->sse, p, len);
		return (UPSTREAM_CONTINUE);
	}
	if (evbuffer_get_length(pr->body) + len > PROXY_MAX_BUFFERED) {
		pr->too_big = 1;
		return (UPSTREAM_STOP);
	}
	evbuffer_add(pr->body, p, len);
	return (UPSTREAM_CONTINUE);
}

/*
 * Write body under key, with the headers its replay needs (a stream's
 * Response is replayed as JSON), unless id has been deleted since;
 * returns 1 and fills etag if stored.
 */
static int
proxy_put(struct proxy_req *pr, const char *key, size_t klen,
    const char *id, const char *body, size_t len, int as_json, char etag[36])
{
	struct evkeyval		*h;
	struct evbuffer		*hb;
	struct cache_guard	 g;
	int			 rc;

	if ((hb = evbuffer_new()) == NULL)
		fatalx("out of memory");
	if (as_json)
		evbuffer_add_printf(hb, "content-type: application/json\r\n");
	TAILQ_FOREACH(h, pr->uhdrs, next)
		if (proxy_in_list(h->key, proxy_stored_resp) &&
		    strlen(h->value) < PROXY_HDR_VALUE &&
		    !(as_json && strcasecmp(h->key, "content-type") == 0))
			evbuffer_add_printf(hb, "%s: %s\r\n", h->key, h->value);
	proxy_etag(body, len, etag);
	/* An answer fetched before a DELETE of its id may not come back. */
	g.id = id;
	g.since = pr->since;
	rc = cache_put(pr->px->cache, key, klen, &g, 200, etag, strlen(etag),
	    (const char *)evbuffer_pullup(hb, -1), evbuffer_get_length(hb),
	    body, len, time(NULL));
	evbuffer_free(hb);
	return (rc == 0);
}

/* Store a Response as its id's plain GET entry; see proxy_put. */
static int
proxy_put_response(struct proxy_req *pr, const char *id, const char *body,
    size_t len, int as_json, char etag[36])
{
	char	*key;
	size_t	 klen;
	int	 stored;

	key = route_id_prefix(pr->tenant, 'r', id, &klen);
	stored = proxy_put(pr, key, klen, id, body, len, as_json, etag);
	free(key);
	return (stored);
}

/*
 * Store a buffered 200 answer (info: what it says of itself) if it may
 * be served again; see proxy_put.
 */
static int
proxy_store(struct proxy_req *pr, const struct response_info *info,
    const char *body, size_t len, char etag[36])
{
	if (pr->route.kind == ROUTE_CREATE)
		proxy_own(pr, info->id);
	if (pr->no_store)
		return (0);
	switch (pr->route.kind) {
	case ROUTE_RESPONSE:
		if (!info->final || info->store_false)
			return (0);
		/* FALLTHROUGH */
	case ROUTE_INPUT_ITEMS:		/* a response's input never changes */
		if (!pr->route.cacheable)	/* a stream, an unknown query */
			return (0);
		return (proxy_put(pr, pr->key, pr->klen, pr->route.id, body,
		    len, 0, etag));
	case ROUTE_CREATE:
	case ROUTE_CANCEL:
		/* The answer is the Response itself: the plain GET's entry. */
		if (!info->final || info->store_false || info->id[0] == '\0' ||
		    (pr->route.kind == ROUTE_CANCEL &&
		    strcmp(info->id, pr->route.id) != 0))
			return (0);
		return (proxy_put_response(pr, info->id, body, len, 0, etag));
	default:
		return (0);
	}
}

/* sse_event_fn: a streamed create's final Response fills the cache. */
static void
proxy_stream_event(void *arg, const char *type, const char *data, size_t len)
{
	struct proxy_req	*pr = arg;
	struct response_info	 info;
	char			*body, etag[36];
	size_t			 blen;

	/* The first event names the new id: its owner is known at once. */
	if (strcmp(type, "response.created") == 0) {
		if (response_event_id(data, len, info.id) == 0)
			proxy_own(pr, info.id);
		return;
	}
	if (pr->no_store || (body = response_from_event(type, data, len,
	    &info, &blen)) == NULL)
		return;
	proxy_put_response(pr, info.id, body, blen, 1, etag);
	free(body);
}

static void
proxy_invalidate(struct proxy_req *pr)
{
	static const char	 kinds[] = { 'r', 'i' };
	char			*prefix;
	size_t			 plen, i;

	for (i = 0; i < sizeof kinds; i++) {
		prefix = route_id_prefix(pr->tenant, kinds[i], pr->route.id,
		    &plen);
		cache_invalidate(pr->px->cache, prefix, plen);
		free(prefix);
	}
}

/*
 * The upstream refused the key the proxy holds for this client: the
 * client, which never had that key, gets the proxy's own message (the
 * upstream's names the key's last characters), and the log gets the
 * upstream's.  Ends pr.
 */
static void
proxy_key_refused(struct proxy_req *pr, const char *body, size_t len)
{
	log_warnx_limited(&proxy_lim_refused, "upstream refused credential "
	    "'%s' (401) for %s %s: %.*s",
	    pr->cred->name, proxy_method_name(pr->route.method), pr->upath,
	    (int)(len < 300 ? len : 300), body);
	proxy_answer_error(pr, 401, "upstream_key_refused", "The upstream "
	    "API refused the API key that respcache holds for this client; "
	    "the proxy's operator must replace it (see the proxy's log).", 0);
}

static void
proxy_up_done(void *arg, enum upstream_err err, const char *why)
{
	struct proxy_req	*pr = arg;
	struct evkeyvalq	 hdrs;
	struct coalesce_answer	 a;
	struct response_info	 info;
	char			 etag[36];
	int			 stored = 0;

	pr->ureq = NULL;
	pr->usecs = proxy_clock() - pr->ut0;
	metrics_upstream(pr->px->metrics, err == UPSTREAM_OK ? pr->status : 0,
	    pr->usecs);
	if (err != UPSTREAM_OK && err != UPSTREAM_ABORTED)
		metrics_upstream_error(pr->px->metrics, err == UPSTREAM_CONNECT ?
		    MU_CONNECT : err == UPSTREAM_TIMEOUT ? MU_TIMEOUT :
		    err == UPSTREAM_TLS ? MU_TLS : MU_PROTOCOL);
	log_debug("upstream done: %s %s: %s, status %d%s", proxy_method_name(
	    pr->route.method), pr->upath, upstream_err_str(err), pr->status,
	    pr->streaming ? ", streamed" : "");
	if (pr->streaming) {
		if (err == UPSTREAM_OK) {
			proxy_stream_end(pr, NULL, NULL, NULL);
			return;
		}
		log_warnx_limited(&proxy_lim_stream, "upstream stream of %s "
		    "ended early: %s", pr->upath,
		    why);
		if (err == UPSTREAM_TIMEOUT)
			proxy_stream_end(pr, "upstream_error",
			    "upstream_timeout", "The upstream API's stream "
			    "went silent for longer than the proxy's "
			    "stream_idle_timeout; the stream was ended.");
		else
			proxy_stream_end(pr, "upstream_error",
			    "upstream_stream_cut", "The upstream API's stream "
			    "ended before its final event.");
		return;
	}
	if (err != UPSTREAM_OK || pr->too_big) {
		log_warnx_limited(&proxy_lim_upstream, "upstream %s %s: %s",
		    proxy_method_name(pr->route.method), pr->upath,
		    pr->too_big ? "answer too large" : why);
		/*
		 * A POST that reached the upstream may have been carried
		 * out (a create is a generation paid for): the SDKs are told
		 * not to send it again by themselves.
		 */
		if (err == UPSTREAM_TIMEOUT)
			proxy_answer_error(pr, 504, "upstream_timeout",
			    "The upstream API did not answer in time.",
			    pr->route.method == RM_POST);
		else if (err == UPSTREAM_CONNECT)
			proxy_answer_error(pr, 502, "upstream_unreachable",
			    "The upstream API could not be reached.", 0);
		else if (err == UPSTREAM_CONN_LOST)
			/* Sending it again could create (and bill) it twice. */
			proxy_answer_error(pr, 502, "upstream_connection_lost",
			    "The connection to the upstream API closed after "
			    "the request was sent and before any answer: the "
			    "request may have reached the upstream and been "
			    "carried out. It was not sent again. Check its "
			    "effect before you repeat it.", 1);
		else
			proxy_answer_error(pr, 502, "bad_upstream_response",
			    "The upstream API sent an invalid answer.",
			    pr->route.method == RM_POST);
		return;
	}

	a.body_len = evbuffer_get_length(pr->body);
	a.body = (const char *)evbuffer_pullup(pr->body, -1);
	/* Every answer of the Responses API is a JSON object. */
	if (pr->status == 200 &&
	    response_inspect(a.body, a.body_len, &info) == -1) {
		log_warnx_limited(&proxy_lim_invalid, "upstream %s %s: a 200 "
		    "whose body is not a JSON "
		    "object (%zu bytes)", proxy_method_name(pr->route.method),
		    pr->upath, a.body_len);
		metrics_upstream_error(pr->px->metrics, MU_PROTOCOL);
		proxy_answer_error(pr, 502, "upstream_invalid_answer",
		    "The upstream API answered 200 with a body that is not "
		    "a JSON object.", pr->route.method == RM_POST);
		return;
	}
	if (proxy_is_delete(pr))
		proxy_delete_end(pr, pr->status);
	if (pr->status == 401 && pr->cred != NULL) {
		proxy_key_refused(pr, a.body, a.body_len);
		return;
	}
	if (pr->status == 200 && pr->own_answer)
		proxy_own(pr, info.id);
	else if (pr->status == 200 && !proxy_is_delete(pr))
		stored = proxy_store(pr, &info, a.body, a.body_len, etag);

	TAILQ_INIT(&hdrs);
	proxy_copy_resp_headers(pr, &hdrs);
	if (stored && pr->route.cacheable)
		evhttp_add_header(&hdrs, "ETag", etag);
	proxy_xcache(&hdrs, pr->route.cacheable ? "MISS" : "BYPASS");
	a.status = pr->status;
	a.headers = &hdrs;
	proxy_answer(pr, &a);
	evhttp_clear_headers(&hdrs);
	proxy_req_free(pr);
}

static const struct upstream_hooks proxy_hooks = {
	proxy_up_headers, proxy_up_data, proxy_up_done
};

/* 1 if the Connection header value conn names header (RFC 9110 7.6.1). */
static int
proxy_conn_names(const char *conn, const char *name)
{
	const char	*p = conn, *e;
	size_t		 n = strlen(name);

	while (p != NULL && *p != '\0') {
		p += strspn(p, " \t,");
		e = p + strcspn(p, ",");
		while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		if ((size_t)(e - p) == n && strncasecmp(p, name, n) == 0)
			return (1);
		p = strchr(p, ',');
	}
	return (0);
}

/* The upstream request's headers, from the client's and the credential. */
static void
proxy_build_headers(struct proxy_req *pr, const char *client_auth)
{
	struct evkeyval		*h;
	size_t			 n = 0;
	int			 has_ct = 0;

	const struct credential	*cr = pr->cred;
	struct evkeyval		*c;
	int			 hop;

	TAILQ_FOREACH(h, evhttp_request_get_input_headers(pr->req), next) {
		if (n == PROXY_MAX_FWD_HEADERS - 4)
			break;
		if (!proxy_in_list(h->key, proxy_fwd_req) &&
		    strncasecmp(h->key, "x-stainless-", 12) != 0)
			continue;
		/* What any Connection header names is hop-by-hop too. */
		hop = 0;
		TAILQ_FOREACH(c, evhttp_request_get_input_headers(pr->req), next)
			if (strcasecmp(c->key, "Connection") == 0 &&
			    proxy_conn_names(c->value, h->key))
				hop = 1;
		if (hop)
			continue;
		/* What the credential sets, no client overrides. */
		if (cr != NULL && ((cr->organization != NULL &&
		    strcasecmp(h->key, "openai-organization") == 0) ||
		    (cr->project != NULL &&
		    strcasecmp(h->key, "openai-project") == 0)))
			continue;
		if (strcasecmp(h->key, "content-type") == 0)
			has_ct = 1;
		if (asprintf(&pr->fwd[n++], "%s: %s", h->key, h->value) == -1)
			fatalx("out of memory");
	}
	if (cr != NULL) {
		/* The credential's key, never the client's. */
		if (asprintf(&pr->fwd[n++], "Authorization: %s", cr->auth) ==
		    -1 || (cr->organization != NULL && asprintf(&pr->fwd[n++],
		    "OpenAI-Organization: %s", cr->organization) == -1) ||
		    (cr->project != NULL && asprintf(&pr->fwd[n++],
		    "OpenAI-Project: %s", cr->project) == -1))
			fatalx("out of memory");
	} else if (client_auth != NULL) {
		if (asprintf(&pr->fwd[n++], "Authorization: %s",
		    client_auth) == -1)
			fatalx("out of memory");
	}
	/* Otherwise curl would label a POST as a form. */
	if (!has_ct && (pr->fwd[n++] = strdup("Content-Type:")) == NULL)
		fatalx("out of memory");
	pr->fwd[n] = NULL;
}

static void
proxy_forward(struct proxy_req *pr)
{
	struct evhttp_request	*req = pr->req;
	struct evbuffer		*in = evhttp_request_get_input_buffer(req);
	const struct evhttp_uri	*uri;
	const char		*query;
	struct upstream_opts	 o;

	memset(&o, 0, sizeof o);
	o.method = proxy_method_name(pr->route.method);
	/* Origin form only: an absolute-form request line never picks a host. */
	uri = evhttp_request_get_evhttp_uri(req);
	query = evhttp_uri_get_query(uri);
	if (asprintf(&pr->upath, "%s%s%s", evhttp_uri_get_path(uri),
	    query != NULL ? "?" : "", query != NULL ? query : "") == -1)
		fatalx("out of memory");
	o.path = pr->upath;
	o.body_len = evbuffer_get_length(in);
	o.body = o.body_len ? evbuffer_pullup(in, -1) : NULL;
	o.has_body = pr->route.method != RM_GET;
	if (pr->route.kind == ROUTE_CREATE) {
		o.stream = pr->rq.stream;
		/* Its answer carries the included fields: not the plain GET's. */
		if (pr->rq.include)
			pr->no_store = 1;
	} else
		o.stream = pr->route.stream;
	/* Relayed as it comes, however long: only silence ends it. */
	if (pr->route.kind == ROUTE_FORWARD) {
		o.stream = 1;
		o.idle = pr->px->forward_idle;
	}
	/*
	 * A create's or cancel's answer is stored as the plain GET's: not
	 * when a query string (include[], say) may have shaped it.
	 */
	if ((pr->route.kind == ROUTE_CREATE || pr->route.kind ==
	    ROUTE_CANCEL) && query != NULL && *query != '\0')
		pr->no_store = 1;
	if (proxy_is_delete(pr) && proxy_delete_begin(pr) == -1) {
		log_warnx_limited(&proxy_lim_cache, "DELETE of %s not sent: "
		    "the cache could not record it", pr->route.id);
		proxy_answer_error(pr, 503, "cache_unavailable", "respcache "
		    "could not record this DELETE in its cache, so it was not "
		    "sent: the cache would have gone on serving the response. "
		    "See the proxy's error log; retry later.", 0);
		return;
	}
	if (pr->route.kind == ROUTE_CANCEL)
		proxy_invalidate(pr);
	proxy_build_headers(pr, evhttp_find_header(
	    evhttp_request_get_input_headers(req), "Authorization"));
	o.headers = (const char *const *)pr->fwd;
	if ((pr->body = evbuffer_new()) == NULL)
		fatalx("out of memory");
	proxy_watch_client(pr);
	pr->ut0 = proxy_clock();
	pr->since = time(NULL);
	pr->ureq = upstream_start(pr->px->up, &o, &proxy_hooks, pr);
}

/*
 * A pass-through tenant: the SHA-256 of the client's key.  The last key
 * and its hash are remembered (a sidecar sees one key), compared in
 * constant time for keys of the same length.
 */
static void
proxy_key_tenant(struct proxy *px, const char *key,
    char tenant[SHA256_HEX_LEN + 1])
{
	size_t	len = key != NULL ? strlen(key) : 0;

	if (px->memo_key != NULL && len == px->memo_len &&
	    CRYPTO_memcmp(key != NULL ? key : "", px->memo_key, len) == 0) {
		memcpy(tenant, px->memo_tenant, SHA256_HEX_LEN + 1);
		return;
	}
	sha256_hex(key != NULL ? key : "", len, tenant);
	if (px->memo_key != NULL) {
		explicit_bzero(px->memo_key, px->memo_len);
		free(px->memo_key);
	}
	if ((px->memo_key = malloc(len + 1)) == NULL)
		fatalx("out of memory");
	memcpy(px->memo_key, key != NULL ? key : "", len);
	px->memo_key[len] = '\0';
	px->memo_len = len;
	memcpy(px->memo_tenant, tenant, SHA256_HEX_LEN + 1);
}

/* The key a client authenticates with: its bearer token, or NULL. */
static const char *
proxy_client_key(const char *auth)
{
	if (auth == NULL)
		return (NULL);
	if (strncasecmp(auth, "Bearer ", 7) == 0)
		auth += 7;
	while (*auth == ' ')
		auth++;
	return (auth);
}

/*
 * 1 if the request's route has rules that depend on its body: a create
 * (stream, include, previous_response_id), and with ownership any POST
 * that may name a previous_response_id (input_tokens, compact).
 */
static int
proxy_reads_body(const struct proxy_req *pr)
{
	if (pr->route.method != RM_POST)
		return (0);
	if (pr->route.kind == ROUTE_CREATE)
		return (1);
	return (pr->route.kind == ROUTE_OTHER && pr->keys->ownership &&
	    pr->client != NULL);
}

/*
 * Conversations belong to their creator, as responses do: a path under
 * /v1/conversations/{id} names the id (pr->route.id) that ownership
 * checks, and a POST /v1/conversations records its answer's id.
 */
static void
proxy_conversation(struct proxy_req *pr, const char *path)
{
	static const char	 prefix[] = "/v1/conversations";
	const char		*id, *end;

	if (strncmp(path, prefix, sizeof prefix - 1) != 0)
		return;
	id = path + sizeof prefix - 1;
	if (*id == '\0') {
		pr->own_answer = pr->route.method == RM_POST;
		return;
	}
	if (*id++ != '/')
		return;
	if ((end = strchr(id, '/')) == NULL)
		end = id + strlen(id);
	if (route_valid_id(id, (size_t)(end - id))) {
		memcpy(pr->route.id, id, (size_t)(end - id));
		pr->route.id[end - id] = '\0';
	}
}

/* A body the proxy cannot read whole is refused, never forwarded. */
static void
proxy_reply_bad_body(struct proxy_req *pr, const char *why)
{
	char	*msg;

	if (asprintf(&msg, "The request body is not JSON that respcache "
	    "can read exactly: %s.", why) == -1)
		fatalx("out of memory");
	proxy_reply_error(pr->px, pr->req, pr, 400, NULL, "invalid_json", msg,
	    NULL);
	free(msg);
}

static void
proxy_handle(struct evhttp_request *req, void *arg)
{
	struct proxy		*px = arg;
	struct evkeyvalq	*in = evhttp_request_get_input_headers(req);
	const struct evhttp_uri	*uri = evhttp_request_get_evhttp_uri(req);
	struct proxy_req	*pr;
	struct coalesce_fetch	*f;
	struct route_error	 err;
	struct proxy_hit	 hit;
	const char		*upgrade, *key, *what = "", *cause;
	const char		*label = "Response";
	struct bufferevent	*bev;
	char			 why[200];

	px->t0 = proxy_clock();
	metrics_inflight(px->metrics, 1);
	if (evhttp_request_get_command(req) == EVHTTP_REQ_CONNECT) {
		/* Nothing behind it on this connection is ever run. */
		bev = evhttp_connection_get_bufferevent(
		    evhttp_request_get_connection(req));
		bufferevent_disable(bev, EV_READ);
		evbuffer_drain(bufferevent_get_input(bev),
		    evbuffer_get_length(bufferevent_get_input(bev)));
		shutdown(bufferevent_getfd(bev), SHUT_RD);
		proxy_reply_error(px, req, NULL, 405, NULL, "method_not_allowed",
		    "respcache is not a forward proxy: CONNECT is not "
		    "supported.", "GET, POST, DELETE");
		return;
	}
	if (px->draining) {
		evhttp_add_header(evhttp_request_get_output_headers(req),
		    "Connection", "close");
		proxy_reply_error(px, req, NULL, 503, "server_error",
		    "shutting_down", "respcache is shutting down.", NULL);
		return;
	}
	if (guard_request(req, &cause) == -1) {
		/* Closed: what came after it on the connection is not run. */
		evhttp_add_header(evhttp_request_get_output_headers(req),
		    "Connection", "close");
		proxy_reply_error(px, req, NULL, 400, NULL, "bad_request",
		    cause, NULL);
		return;
	}
	upgrade = evhttp_find_header(in, "Upgrade");
	if (upgrade != NULL) {
		proxy_reply_error(px, req, NULL, 400, NULL,
		    "websocket_not_supported",
		    "respcache does not support WebSocket or other protocol "
		    "upgrades; use HTTP requests (streams work as SSE).", NULL);
		return;
	}
	if ((pr = calloc(1, sizeof *pr)) == NULL)
		fatalx("out of memory");
	pr->px = px;
	pr->req = req;
	pr->t0 = px->t0;
	pr->result = MC_BYPASS;
	pr->waiter.fn = proxy_waited;
	pr->waiter.box = px->box;
	if (route_parse(proxy_method(evhttp_request_get_command(req)),
	    evhttp_uri_get_path(uri), evhttp_uri_get_query(uri), &pr->route,
	    &err) == -1) {
		pr->route.method = RM_OTHER;	/* counted as no route */
		proxy_reply_error(px, req, pr, err.status, NULL, err.code,
		    err.message, err.allow);
		route_clear(&pr->route);
		free(pr);
		return;
	}

	/* The Responses API's bodies are JSON: a raw NUL is a smuggled one. */
	if (pr->route.kind != ROUTE_FORWARD && guard_body_nul(req)) {
		evhttp_add_header(evhttp_request_get_output_headers(req),
		    "Connection", "close");
		proxy_reply_error(px, req, pr, 400, NULL, "bad_request",
		    "The request body holds a NUL byte.", NULL);
		route_clear(&pr->route);
		free(pr);
		return;
	}

	/*
	 * Who asks, with which key: the tenant.  The keyring cannot change
	 * while this runs; a reference is taken if the request goes on.
	 */
	pr->keys = px->keys;
	key = proxy_client_key(evhttp_find_header(in, "Authorization"));
	if (pr->keys->nclients > 0) {
		if ((pr->client = keyring_client(pr->keys, key)) == NULL) {
			proxy_reply_error(px, req, pr, 401, NULL,
			    "invalid_api_key",
			    "Incorrect API key provided: this proxy does not "
			    "know the key the client sent.", NULL);
			proxy_req_free(pr);
			return;
		}
		pr->cred = pr->client->cred;
	} else
		pr->cred = pr->keys->dflt;
	if (pr->cred != NULL)
		snprintf(pr->tenant, sizeof pr->tenant, "%s", pr->cred->name);
	else
		proxy_key_tenant(px, key, pr->tenant);
	/* Which paths this door lets through, for everyone and this client. */
	if (pr->route.kind == ROUTE_FORWARD && !pr->keys->forward_all) {
		proxy_reply_error(px, req, pr, 404, NULL, "unknown_route",
		    "Unknown route: respcache serves /v1/responses only "
		    "(forward = responses).", NULL);
		proxy_req_free(pr);
		return;
	}
	/* A conversation's paths name it: ownership covers it (see below). */
	if (pr->route.kind == ROUTE_FORWARD)
		proxy_conversation(pr, evhttp_uri_get_path(uri));
	if (!keyring_allows(pr->client, evhttp_uri_get_path(uri))) {
		proxy_reply_error(px, req, pr, 403, NULL, "route_not_allowed",
		    "This client may not use this path: it is outside the "
		    "client's allow list.", NULL);
		proxy_req_free(pr);
		return;
	}
	if (proxy_reads_body(pr) && response_request_read((const char *)
	    evbuffer_pullup(evhttp_request_get_input_buffer(req), -1),
	    evbuffer_get_length(evhttp_request_get_input_buffer(req)),
	    &pr->rq, why, sizeof why) == -1) {
		proxy_reply_bad_body(pr, why);
		proxy_req_free(pr);
		return;
	}
	if (!proxy_owner_ok(pr, &what, &label)) {
		proxy_reply_not_found(pr, label, what);
		proxy_req_free(pr);
		return;
	}

	memset(&hit, 0, sizeof hit);
	hit.px = px;
	hit.pr = pr;
	hit.req = req;
	hit.now = time(NULL);
	/*
	 * A beta feature (OpenAI-Beta, the SDK's ?beta=true twins) may shape
	 * the body: such a request is neither answered from the cache nor
	 * stored in it, nor does a create's answer become the plain GET's.
	 */
	if (evhttp_find_header(in, "OpenAI-Beta") != NULL) {
		if (pr->route.cacheable) {
			pr->route.cacheable = 0;
			free(pr->route.norm);
			pr->route.norm = NULL;
		}
		pr->no_store = 1;
	}
	if (pr->route.cacheable) {
		pr->key = route_cache_key(pr->tenant, &pr->route, &pr->klen);
		cache_get(px->cache, pr->key, pr->klen, hit.now,
		    proxy_serve_hit, &hit);
	}
	if (hit.served || proxy_tombstoned(pr, hit.now)) {
		proxy_req_free(pr);
		return;
	}
	pr->next = px->active;
	if (px->active != NULL)
		px->active->prev = pr;
	px->active = pr;
	keyring_ref(pr->keys);
	pr->keys_held = 1;
	if (pr->route.cacheable) {
		/* One upstream fetch per key: wait for the one in flight. */
		if ((f = coalesce_join(px->flights, pr->key, pr->klen,
		    &pr->waiter)) == NULL) {
			pr->result = MC_COALESCED;
			log_debug("GET %s waits on the fetch in flight",
			    evhttp_request_get_uri(req));
			proxy_watch_client(pr);
			return;
		}
		pr->fetch = f;
		pr->result = MC_MISS;
	}
	proxy_forward(pr);
}

struct proxy *
proxy_new(struct evhttp *http, const struct proxy_env *env)
{
	struct proxy	*px;

	if ((px = calloc(1, sizeof *px)) == NULL)
		fatalx("out of memory");
	px->cache = env->cache;
	px->up = env->up;
	px->keys = keyring_ref(env->keys);
	px->flights = env->flights;
	px->box = env->box;
	px->metrics = env->metrics;
	px->alog = env->alog;
	px->client_tv = env->client_tv;
	px->tombstone_ttl = env->tombstone_ttl;
	px->delete_window = env->delete_window;
	px->forward_idle = env->forward_idle;
	evhttp_set_gencb(http, proxy_handle, px);
	return (px);
}

/* reply.h: evhttp answered a request it could not read. */
static void
proxy_evhttp_error(void *arg, struct evhttp_request *req, int status,
    size_t len)
{
	struct proxy	*px = arg;

	px->t0 = proxy_clock();
	metrics_inflight(px->metrics, 1);
	proxy_account(px, req, NULL, status, MC_BYPASS, len);
}

void
proxy_thread_init(struct proxy *px)
{
	reply_on_error(proxy_evhttp_error, px);
}

void
proxy_drain(struct proxy *px, void (*done)(void *), void *arg)
{
	px->draining = 1;
	px->drained = done;
	px->drained_arg = arg;
	proxy_check_drained(px);
}

void
proxy_stop(struct proxy *px)
{
	struct proxy_req	*pr;

	px->drained = NULL;
	/* Waiters leave first: no fetch ending here may start another. */
	for (pr = px->active; pr != NULL; pr = pr->next)
		coalesce_leave(&pr->waiter);
	while ((pr = px->active) != NULL) {
		if (pr->ureq != NULL)
			pr->usecs = proxy_clock() - pr->ut0;
		upstream_abort(pr->ureq);
		pr->ureq = NULL;
		if (pr->req == NULL)
			proxy_req_free(pr);
		else if (pr->streaming)
			proxy_stream_end(pr, "server_error", "shutting_down",
			    "respcache is shutting down; the stream was ended "
			    "early.");
		else {
			proxy_req_detach(pr);
			proxy_track_reply(px, pr->req);
			proxy_account(px, pr->req, pr, 503, pr->result,
			    reply_error(pr->req, 503, "server_error",
			    "shutting_down", "respcache is shutting down.",
			    NULL));
			proxy_req_free(pr);
		}
	}
}

void
proxy_set_keys(struct proxy *px, struct keyring *keys)
{
	keyring_unref(px->keys);
	px->keys = keys;
}

void
proxy_free(struct proxy *px)
{
	keyring_unref(px->keys);
	if (px->memo_key != NULL) {
		explicit_bzero(px->memo_key, px->memo_len);
		free(px->memo_key);
	}
	free(px);
}
