/*
 * proxy.c - one request's life: dispatch, its states, its one end.
 *
 *   proxy_handle:  refuse what may not go on (CONNECT, draining, bad
 *                  framing, upgrades) -> route (bad id 400, unknown 404,
 *                  wrong method 405) -> who asks (tenant.c) -> may they
 *                  (allow list, body, ownership) -> look up (hit or
 *                  tombstone: proxy_cache.c) -> wait on the fetch of the
 *                  same key in flight, or fetch (proxy_fetch.c) -> relay
 *                  a stream (proxy_stream.c) or answer whole
 *   proxy_req_finish: the one end of every request
 *
 * A request's states and their legal moves are in proxy_int.h; every
 * move goes through proxy_req_set_state().  A client that goes away ends
 * its request at once, unless others wait on its fetch or its DELETE's
 * outcome is wanted: then it is ORPHANED until the upstream answers.
 */
#include "config.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <openssl/ssl.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "accesslog.h"
#include "cache.h"
#include "coalesce.h"
#include "credential.h"
#include "guard.h"
#include "log.h"
#include "metrics.h"
#include "proxy.h"
#include "proxy_int.h"
#include "reply.h"
#include "shared.h"
#include "sse.h"
#include "upstream.h"
#include "ws.h"
#include "xmalloc.h"

static struct log_limit	proxy_lim_watch;

/* Every request's number, unique in the process: see its log lines. */
static uint64_t		proxy_serial;

static const char *const proxy_result_names[MC_COUNT] = {
	"hit", "miss", "coalesced", "bypass", "shared"
};

double
proxy_clock(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
}

int
proxy_is_delete(const struct proxy_req *pr)
{
	return (pr->route.kind == ROUTE_RESPONSE &&
	    pr->route.method == RM_DELETE);
}

void
proxy_xcache(struct evkeyvalq *out, const char *what)
{
	evhttp_add_header(out, "X-Cache", what);
}

/* The states the metrics count requests in (metrics.h). */
static const int proxy_state_gauge[PR_NSTATES] = {
	[PR_STARTED] = -1, [PR_WAITING] = MS_WAITING, [PR_SHARED] = MS_SHARED,
	[PR_FETCHING] = MS_FETCHING, [PR_STREAMING] = MS_STREAMING,
	[PR_PAUSED] = MS_PAUSED, [PR_ORPHANED] = MS_ORPHANED,
	[PR_FINISHED] = -1
};

void
proxy_req_set_state(struct proxy_req *pr, enum proxy_state to)
{
	enum proxy_state	from = pr->state;

	proxy_state_move(&pr->state, to, pr->serial);
	if (proxy_state_gauge[from] != -1)
		metrics_state(pr->px->metrics, proxy_state_gauge[from], -1);
	if (proxy_state_gauge[to] != -1)
		metrics_state(pr->px->metrics, proxy_state_gauge[to], 1);
}

static struct proxy_req *
proxy_req_new(struct proxy *px, struct evhttp_request *req)
{
	struct proxy_req	*pr;

	pr = xcalloc(1, sizeof *pr);
	pr->px = px;
	pr->serial = __atomic_add_fetch(&proxy_serial, 1, __ATOMIC_RELAXED);
	pr->state = PR_STARTED;
	pr->req = req;
	pr->t0 = proxy_clock();
	pr->result = MC_BYPASS;
	pr->route.method = RM_OTHER;	/* counted as no route until routed */
	pr->waiter.fn = proxy_waited;
	pr->waiter.box = px->box;
	metrics_inflight(px->metrics, 1);
	return (pr);
}

static void
proxy_check_drained(struct proxy *px)
{
	/* Open WebSockets are in flight too, until closed. */
	if (px->draining && px->active == NULL && px->writing == 0 &&
	    ws_list_empty(px->ws) && px->drained != NULL) {
		px->drained(px->drained_arg);
		px->drained = NULL;
	}
}

/*
 * Count a request in the metrics and write its access log line: what
 * its client got (status, bytes), or for one that left, 499 and what it
 * had been sent when it did.
 */
static void
proxy_req_count(struct proxy_req *pr, int status, size_t bytes)
{
	struct proxy		*px = pr->px;
	struct access_entry	 e;
	enum metrics_route	 route = MR_NONE;
	enum route_method	 rm;
	enum metrics_method	 method;
	enum evhttp_cmd_type	 cmd;
	double			 now = proxy_clock();

	cmd = pr->req != NULL ? evhttp_request_get_command(pr->req) : pr->cmd;
	rm = route_method_of(cmd);
	e.method = route_cmd_name(cmd);
	method = rm == RM_GET ? MM_GET : rm == RM_POST ? MM_POST :
	    rm == RM_DELETE ? MM_DELETE : MM_OTHER;
	if (pr->route.method != RM_OTHER)
		route = pr->route.kind == ROUTE_FORWARD ? MR_OTHER :
		    (enum metrics_route)pr->route.kind;
	e.secs = (pr->left_at > 0 ? pr->left_at : now) - pr->t0;
	metrics_request(px->metrics, route, method, status, pr->result,
	    e.secs);
	metrics_inflight(px->metrics, -1);
	if (px->alog == NULL)
		return;
	e.serial = pr->serial;
	e.route = metrics_route_name(route);
	e.client = pr->who.client != NULL ? pr->who.client->name : NULL;
	e.uri = pr->req != NULL ? evhttp_request_get_uri(pr->req) : pr->uri;
	e.status = status;
	e.cache = proxy_result_names[pr->result];
	e.upstream_status = pr->result != MC_COALESCED &&
	    pr->result != MC_HIT && pr->result != MC_SHARED ? pr->status : 0;
	e.upstream_secs = pr->ureq != NULL ? now - pr->ut0 : pr->usecs;
	e.bytes = bytes;
	if ((e.request_id = pr->rid) == NULL && pr->req != NULL)
		e.request_id = evhttp_find_header(
		    evhttp_request_get_output_headers(pr->req), "x-request-id");
	accesslog_write(px->alog, &e);
}

void
proxy_req_finish(struct proxy_req *pr, int status, size_t bytes)
{
	struct proxy		*px = pr->px;
	struct evhttp_request	*req = pr->req;
	enum proxy_state	 was = pr->state;
	size_t			 i;

	proxy_req_set_state(pr, PR_FINISHED);
	proxy_shared_done(pr);
	if (pr->ws != NULL) {
		ws_abandon(pr->ws);
		pr->ws = NULL;
	}
	if (pr->ureq != NULL) {
		pr->usecs = proxy_clock() - pr->ut0;
		upstream_abort(pr->ureq);
		pr->ureq = NULL;
	}
	if (pr->left_at > 0) {
		status = 499;
		bytes = pr->relayed;
	}
	proxy_req_count(pr, status, bytes);
	proxy_unwatch_client(pr);
	if (proxy_state_relaying(was) && req != NULL &&
	    !pr->cut) {
		/* With nothing left to write, this may free req at once. */
		proxy_track_reply(px, req);
		evhttp_request_set_on_complete_cb(req, proxy_stream_written, px);
		evhttp_send_reply_end(req);
	}
	if (proxy_state_relaying(was) && !pr->raw)
		metrics_streams(px->metrics, -1);
	coalesce_leave(&pr->waiter);
	/* Those waiting on a fetch that ends with nothing fetch their own. */
	proxy_end_fetch(pr, NULL);
	if (pr->prev != NULL)
		pr->prev->next = pr->next;
	else if (px->active == pr)
		px->active = pr->next;
	if (pr->next != NULL)
		pr->next->prev = pr->prev;
	/* One of them may hold a key: none is left in freed memory. */
	for (i = 0; pr->fwd != NULL && pr->fwd[i] != NULL; i++) {
		explicit_bzero(pr->fwd[i], strlen(pr->fwd[i]));
		free(pr->fwd[i]);
	}
	free(pr->fwd);
	if (pr->body != NULL)
		evbuffer_free(pr->body);
	sse_free(pr->sse);
	if (pr->keys_held)
		keyring_unref(pr->keys);
	route_clear(&pr->route);
	free(pr->key);
	free(pr->upath);
	free(pr->uri);
	free(pr->sent);
	free(pr);
	proxy_check_drained(px);
}

static void
proxy_written(struct evhttp_request *req, void *arg)
{
	struct proxy			*px = arg;
	struct evhttp_connection	*evcon = evhttp_request_get_connection(req);

	evhttp_connection_set_closecb(evcon, NULL, NULL);
	guard_done(req);
	px->writing--;
	log_debug("reply written (%d being written)", px->writing);
	proxy_check_drained(px);
}

void
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

void
proxy_track_reply(struct proxy *px, struct evhttp_request *req)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);

	if (evcon == NULL)
		return;
	px->writing++;
	evhttp_request_set_on_complete_cb(req, proxy_written, px);
	evhttp_connection_set_closecb(evcon, proxy_write_failed, px);
}

void
proxy_fail(struct proxy_req *pr, int status, const char *type,
    const char *code, const char *message, const char *allow)
{
	size_t	len;

	proxy_unwatch_client(pr);
	proxy_track_reply(pr->px, pr->req);
	len = reply_error(pr->req, status, type, code, message, allow);
	proxy_req_finish(pr, status, len);	/* pr is gone */
}

void
proxy_unwatch_client(struct proxy_req *pr)
{
	struct evhttp_connection *evcon;

	if (pr->gone != NULL) {
		event_free(pr->gone);
		pr->gone = NULL;
	}
	if (!pr->watching)
		return;
	pr->watching = 0;
	if (pr->req != NULL &&
	    (evcon = evhttp_request_get_connection(pr->req)) != NULL)
		evhttp_connection_set_closecb(evcon, NULL, NULL);
}

/*
 * The client's connection went away while we still owned its request.
 * When evhttp detached the request from the dying connection, it is ours
 * to free; otherwise the connection frees it.  The request ends, unless
 * others wait on its fetch or it is a DELETE whose outcome is wanted
 * (see proxy_delete_end()): then it is ORPHANED, counted when it ends.
 */
static void
proxy_client_closed(struct evhttp_connection *evcon, void *arg)
{
	struct proxy_req	*pr = arg;
	struct evhttp_request	*req = pr->req;
	int			 own = evhttp_request_get_connection(req) == NULL;

	(void)evcon;
	log_debug("req=%llu: client closed during %s %s",
	    (unsigned long long)pr->serial,
	    route_method_name(pr->route.method), evhttp_request_get_uri(req));
	pr->watching = 0;	/* evhttp drops the callback itself */
	pr->cut = 1;		/* no reply to end: the connection is gone */
	if (pr->state == PR_FETCHING && ((pr->fetch != NULL &&
	    coalesce_waiters(pr->px->flights, pr->fetch) > 0) ||
	    proxy_is_delete(pr))) {
		pr->left_at = proxy_clock();
		pr->cmd = evhttp_request_get_command(req);
		pr->uri = xstrdup(evhttp_request_get_uri(req));
		proxy_unwatch_client(pr);
		pr->req = NULL;
		proxy_req_set_state(pr, PR_ORPHANED);
	} else
		proxy_req_finish(pr, 499, pr->relayed);	/* pr is gone */
	if (own)
		evhttp_request_free(req);
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

/* evhttp does not read a connection while its request is being served. */
void
proxy_watch_client(struct proxy_req *pr)
{
	struct evhttp_connection *evcon;
	evutil_socket_t		 fd;

	evcon = evhttp_request_get_connection(pr->req);
	evhttp_connection_set_closecb(evcon, proxy_client_closed, pr);
	pr->watching = 1;
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
		log_warnx_limited(&proxy_lim_watch, "req=%llu: cannot watch a "
		    "client connection for its close",
		    (unsigned long long)pr->serial);
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
	return (pr->route.kind == ROUTE_OTHER && tenant_owned(&pr->who));
}

/*
 * What may not go on, refused before it is routed: a CONNECT, anything
 * while draining, a request the guard finds badly framed, a WebSocket
 * upgrade.  Returns 1 if refused (pr ended).
 */
static int
proxy_refused(struct proxy_req *pr)
{
	struct evhttp_request	*req = pr->req;
	struct evkeyvalq	*out = evhttp_request_get_output_headers(req);
	const char		*cause;

	if (evhttp_request_get_command(req) == EVHTTP_REQ_CONNECT) {
		guard_refuse_tunnel(req);
		proxy_fail(pr, 405, NULL, "method_not_allowed", "respcache is "
		    "not a forward proxy: CONNECT is not supported.",
		    "GET, POST, DELETE");	/* pr is gone */
		return (1);
	}
	if (pr->px->draining) {
		evhttp_add_header(out, "Connection", "close");
		proxy_fail(pr, 503, "server_error", "shutting_down",
		    "respcache is shutting down.", NULL);	/* pr is gone */
		return (1);
	}
	if (guard_request(req, &cause) == -1) {
		/* Closed: what came after it on the connection is not run. */
		evhttp_add_header(out, "Connection", "close");
		proxy_fail(pr, 400, NULL, "bad_request", cause,
		    NULL);	/* pr is gone */
		return (1);
	}
	/*
	 * A WebSocket upgrade anywhere else, or with websocket = off: 426 at
	 * once, which clients that try WebSocket mode first (Codex-style
	 * agents) take as "use HTTP", where a 400 makes them retry.  Another Upgrade (h2c, say) is declined by serving
	 * the request as HTTP/1.1, as RFC 9110 lets a server; it is never
	 * forwarded (not on proxy_fwd_req).
	 */
	if (ws_upgrade_asked(req)) {
		/* WebSocket mode: on GET /v1/responses, unless it is off. */
		if (pr->px->websocket && strcmp(evhttp_uri_get_path(
		    evhttp_request_get_evhttp_uri(req)), "/v1/responses") == 0 &&
		    evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req)) ==
		    NULL) {
			pr->ws_asked = 1;
			return (0);
		}
		proxy_fail(pr, 426, "invalid_request_error",
		    "websocket_not_supported", "WebSocket mode is not "
		    "available through this proxy; use HTTP requests (a "
		    "stream: true create streams as server-sent events).",
		    NULL);	/* pr is gone */
		return (1);
	}
	return (0);
}

/*
 * Who asks and whether they may: the client's key, the paths this door
 * and this client let through, a body the proxy reads exactly, the ids
 * it names.  Returns 1 if admitted, 0 if refused (pr ended).
 */
static int
proxy_admitted(struct proxy_req *pr)
{
	struct evhttp_request	*req = pr->req;
	struct evbuffer		*body = evhttp_request_get_input_buffer(req);
	const char		*path, *what = "", *label = "Response";
	char			 why[200], *msg;

	/* The keyring cannot change while this runs; see keys_held. */
	pr->keys = pr->px->keys;
	if (tenant_identify(&pr->px->memo, pr->keys, tenant_client_key(
	    evhttp_find_header(evhttp_request_get_input_headers(req),
	    "Authorization")), &pr->who) == -1) {
		proxy_fail(pr, 401, NULL, "invalid_api_key", "Incorrect API "
		    "key provided: this proxy does not know the key the client "
		    "sent.", NULL);	/* pr is gone */
		return (0);
	}
	if (pr->route.kind == ROUTE_FORWARD && !pr->keys->forward_all) {
		proxy_fail(pr, 404, NULL, "unknown_route", "Unknown route: "
		    "respcache serves /v1/responses only (forward = "
		    "responses).", NULL);	/* pr is gone */
		return (0);
	}
	pr->own_answer = pr->route.creates;
	path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
	if (!keyring_allows(pr->who.client, path)) {
		proxy_fail(pr, 403, NULL, "route_not_allowed", "This client "
		    "may not use this path: it is outside the client's allow "
		    "list.", NULL);	/* pr is gone */
		return (0);
	}
	/* A body the proxy cannot read whole is refused, never forwarded. */
	if (proxy_reads_body(pr) && response_request_read((const char *)
	    evbuffer_pullup(body, -1), evbuffer_get_length(body), &pr->rq,
	    why, sizeof why) == -1) {
		xasprintf(&msg, "The request body is not JSON that respcache "
		    "can read exactly: %s.", why);
		proxy_fail(pr, 400, NULL, "invalid_json", msg,
		    NULL);	/* pr is gone */
		free(msg);
		return (0);
	}
	if (!tenant_may_use(pr->px->cache, &pr->who, &pr->route, &pr->rq,
	    &what, &label)) {
		/* The upstream's own 404, as another client would get it. */
		msg = proxy_not_found_msg(label, what);
		proxy_fail(pr, 404, "invalid_request_error", NULL, msg,
		    NULL);	/* pr is gone */
		free(msg);
		return (0);
	}
	return (1);
}

static void
proxy_handle(struct evhttp_request *req, void *arg)
{
	struct proxy		*px = arg;
	const struct evhttp_uri	*uri = evhttp_request_get_evhttp_uri(req);
	struct proxy_req	*pr;
	struct route_error	 err;

	pr = proxy_req_new(px, req);
	if (proxy_refused(pr))
		return;
	if (pr->ws_asked) {
		pr->route.method = RM_GET;
		pr->route.kind = ROUTE_OTHER;
		if (!proxy_admitted(pr))
			return;
		/* Async from here: its keys must outlive a reload. */
		keyring_ref(pr->keys);
		pr->keys_held = 1;
		ws_begin(pr);	/* pr is gone */
		return;
	}
	if (route_parse(route_method_of(evhttp_request_get_command(req)),
	    evhttp_uri_get_path(uri), evhttp_uri_get_query(uri), &pr->route,
	    &err) == -1) {
		pr->route.method = RM_OTHER;	/* counted as no route */
		proxy_fail(pr, err.status, NULL, err.code, err.message,
		    err.allow);	/* pr is gone */
		return;
	}
	/* The Responses API's bodies are JSON: a raw NUL is a smuggled one. */
	if (pr->route.kind != ROUTE_FORWARD && guard_body_nul(req)) {
		evhttp_add_header(evhttp_request_get_output_headers(req),
		    "Connection", "close");
		proxy_fail(pr, 400, NULL, "bad_request",	/* pr is gone */
		    "The request body holds a NUL byte.", NULL);
		return;
	}
	if (!proxy_admitted(pr) || proxy_lookup(pr))
		return;

	pr->next = px->active;
	if (px->active != NULL)
		px->active->prev = pr;
	px->active = pr;
	keyring_ref(pr->keys);
	pr->keys_held = 1;
	if (pr->route.cacheable) {
		/* One upstream fetch per key: wait for the one in flight. */
		if ((pr->fetch = coalesce_join(px->flights, pr->key, pr->klen,
		    &pr->waiter)) == NULL) {
			pr->result = MC_COALESCED;
			proxy_req_set_state(pr, PR_WAITING);
			proxy_watch_client(pr);
			return;
		}
		pr->result = MC_MISS;
		/* The fleet may have it: the shared tier, then upstream. */
		if (proxy_ask_shared(pr))
			return;
	}
	proxy_forward(pr);	/* pr may be gone */
}

struct proxy *
proxy_new(struct evhttp *http, const struct proxy_env *env)
{
	struct proxy	*px;

	px = xcalloc(1, sizeof *px);
	px->cache = env->cache;
	px->up = env->up;
	px->shared = env->shared;
	px->node = env->node;
	px->upstream_url = env->upstream_url;
	px->websocket = env->websocket;
	px->ws_idle = env->ws_idle;
	px->ws = ws_list_new();
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
	proxy_req_finish(proxy_req_new(arg, req), status, len);	/* pr is gone */
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
	/* Open WebSockets get a close (1001), sent in the second given. */
	ws_list_close(px->ws);
	while ((pr = px->active) != NULL) {
		if (pr->state == PR_ORPHANED)
			proxy_req_finish(pr, 499, pr->relayed);	/* pr is gone */
		else if (proxy_state_relaying(pr->state))
			proxy_stream_end(pr, "server_error", "shutting_down",
			    "respcache is shutting down; the stream was ended "
			    "early.");	/* pr is gone */
		else
			proxy_fail(pr, 503, "server_error", "shutting_down",
			    "respcache is shutting down.", NULL); /* pr gone */
	}
}

void
proxy_ws_gone(struct proxy *px)
{
	proxy_check_drained(px);
}

void
proxy_ws_free(struct proxy *px)
{
	ws_list_free(px->ws);
	px->ws = NULL;
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
	tenant_memo_clear(&px->memo);
	ws_list_free(px->ws);
	if (px->dns != NULL)
		evdns_base_free(px->dns, 1);	/* a lookup pending: ended */
	SSL_CTX_free(px->tls);
	free(px);
}
