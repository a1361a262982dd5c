/*
 * proxy_fetch.c - a request's upstream exchange, and the fetches other
 * requests wait on (coalesce.h).
 *
 *   proxy_forward:  DELETE/cancel invalidate first -> upstream request
 *   headers hook:   a stream (or a forwarded path's answer) -> relay it
 *                   (proxy_stream.c); anything else is held whole
 *   data hook:      relay, or hold
 *   done hook:      a held answer -> store if final -> reply to the
 *                   client and to every request that waited; a transport
 *                   failure -> 502 / 504, or a stream's error event
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
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "cache.h"
#include "credential.h"
#include "fmt.h"
#include "log.h"
#include "proxy_int.h"
#include "reply.h"
#include "upstream.h"
#include "xmalloc.h"

/*
 * Warnings a request may cause: at most one line a second each, however
 * many requests fail alike (an upstream down, a key revoked).
 */
static struct log_limit	proxy_lim_refused, proxy_lim_stream,
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

int
proxy_in_list(const char *name, const char *const *list)
{
	for (; *list != NULL; list++)
		if (strcasecmp(name, *list) == 0)
			return (1);
	return (0);
}

void
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

/*
 * The answer's whole reply formatted here and written by reply_direct(),
 * as a hit's is (proxy_hit_direct()).  Returns 0, pr untouched, if it
 * may not be; else 1, pr ended.
 */
static int
proxy_answer_direct(struct proxy_req *pr, const struct coalesce_answer *a)
{
	struct evhttp_request	*req = pr->req;
	struct bufferevent	*bev;
	const struct evkeyval	*h;
	char			 head[PROXY_HEAD_MAX];
	char			*p = head, *end = head + sizeof head;

	if (!reply_direct_ok(req) || a->status == 304)
		return (0);
	p = proxy_head_begin(p, end, pr->px, a->status, time(NULL),
	    a->body_len);
	/* Parsed lines of the upstream's, or the proxy's own: no CR or LF. */
	TAILQ_FOREACH(h, a->headers, next) {
		p = fmt_str(p, end, h->key);
		p = fmt_lit(p, end, ": ");
		p = fmt_str(p, end, h->value);
		p = fmt_lit(p, end, "\r\n");
		if (strcasecmp(h->key, "x-request-id") == 0)
			pr->rid = h->value;
	}
	p = fmt_lit(p, end, "\r\n");
	if (p == NULL) {
		pr->rid = NULL;
		return (0);
	}
	bev = evhttp_connection_get_bufferevent(
	    evhttp_request_get_connection(req));
	reply_direct(req, a->status, head, (size_t)(p - head), a->body,
	    a->body_len);
	proxy_req_finish(pr, a->status, a->body_len);	/* pr is gone */
	reply_direct_done(bev);		/* req may be gone */
	return (1);
}

/* Send an answer (see coalesce.h) to this request's client.  Ends pr. */
static void
proxy_send_answer(struct proxy_req *pr, const struct coalesce_answer *a)
{
	struct evhttp_request	*req = pr->req;
	struct evkeyvalq	*out = evhttp_request_get_output_headers(req);
	struct evkeyval		*h;
	const char		*etag, *inm;
	int			 unchanged;

	proxy_unwatch_client(pr);
	etag = evhttp_find_header(a->headers, "ETag");
	inm = evhttp_find_header(evhttp_request_get_input_headers(req),
	    "If-None-Match");
	unchanged = a->status == 200 && etag != NULL &&
	    proxy_etag_match(inm, etag, strlen(etag));
	proxy_track_reply(pr->px, req);
	if (!unchanged && proxy_answer_direct(pr, a))
		return;		/* pr is gone */
	TAILQ_FOREACH(h, a->headers, next)
		evhttp_add_header(out, h->key, h->value);
	if (unchanged) {
		evhttp_send_reply(req, 304, "Not Modified", NULL);
		proxy_req_finish(pr, 304, 0);	/* pr is gone */
		return;
	}
	if (evbuffer_add(evhttp_request_get_output_buffer(req), a->body,
	    a->body_len) == -1)
		fatalx("out of memory");
	evhttp_send_reply(req, a->status, NULL, NULL);
	proxy_req_finish(pr, a->status, a->body_len);	/* pr is gone */
}

void
proxy_end_fetch(struct proxy_req *pr, const struct coalesce_answer *a)
{
	struct coalesce_fetch	*f = pr->fetch;

	if (f == NULL)
		return;
	pr->fetch = NULL;
	coalesce_end(pr->px->flights, f, a);
}

/* Answer this request's client, if still there, and all who waited.  Ends pr. */
void
proxy_answer(struct proxy_req *pr, const struct coalesce_answer *a)
{
	proxy_end_fetch(pr, a);
	if (pr->req != NULL)
		proxy_send_answer(pr, a);	/* pr is gone */
	else
		proxy_req_finish(pr, 499, 0);	/* pr is gone */
}

/*
 * An error of the proxy's own as the answer, shared with those who
 * waited.  no_retry adds x-should-retry: false, which the OpenAI SDKs
 * obey instead of retrying a 5xx.  Ends pr.
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
	proxy_answer(pr, &a);	/* pr is gone */
	free(body);
	evhttp_clear_headers(&hdrs);
}

void
proxy_waited(struct coalesce_waiter *w, const struct coalesce_answer *a)
{
	struct proxy_req	*pr;

	pr = (struct proxy_req *)(void *)((char *)w -
	    offsetof(struct proxy_req, waiter));
	if (a == NULL) {
		/*
		 * It ended with nothing to share (its client left, a stream):
		 * fetch for ourselves, through the fleet's lease if there is
		 * one, so that those who waited do not all go upstream.
		 */
		pr->result = MC_MISS;
		if (pr->route.cacheable && proxy_ask_shared(pr))
			return;
		proxy_forward(pr);	/* pr may be gone */
		return;
	}
	proxy_send_answer(pr, a);	/* pr is gone */
}

static void
proxy_up_headers(void *arg, int status, const struct evkeyvalq *hdrs)
{
	struct proxy_req	*pr = arg;
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
	if ((pr->route.kind == ROUTE_FORWARD && !pr->own_answer &&
	    !(status == 401 && pr->who.cred != NULL)) || (status == 200 && sse))
		proxy_stream_start(pr, sse);	/* may end pr */
}

static int
proxy_up_data(void *arg, const char *p, size_t len)
{
	struct proxy_req	*pr = arg;

	if (proxy_state_relaying(pr->state))
		return (proxy_stream_data(pr, p, len));
	if (evbuffer_get_length(pr->body) + len > PROXY_MAX_BUFFERED) {
		pr->too_big = 1;
		return (UPSTREAM_STOP);
	}
	evbuffer_add(pr->body, p, len);
	return (UPSTREAM_CONTINUE);
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
	log_warnx_limited(&proxy_lim_refused, "req=%llu: upstream refused "
	    "credential '%s' (401) for %s %s: %.*s",
	    (unsigned long long)pr->serial, pr->who.cred->name,
	    route_method_name(pr->route.method), pr->upath,
	    (int)(len < 300 ? len : 300), body);
	proxy_answer_error(pr, 401, "upstream_key_refused", "The upstream "
	    "API refused the API key that respcache holds for this client; "
	    "the proxy's operator must replace it (see the proxy's log).",
	    0);	/* pr is gone */
}

/* The transfer failed, or its answer was too large.  Ends pr. */
static void
proxy_up_failed(struct proxy_req *pr, enum upstream_err err, const char *why)
{
	int	post = pr->route.method == RM_POST;

	log_warnx_limited(&proxy_lim_upstream, "req=%llu: upstream %s %s: %s",
	    (unsigned long long)pr->serial,
	    route_method_name(pr->route.method), pr->upath,
	    pr->too_big ? "answer too large" : why);
	/*
	 * A POST that reached the upstream may have been carried out (a
	 * create is a generation paid for): the SDKs are told not to send
	 * it again by themselves.
	 */
	if (err == UPSTREAM_TIMEOUT)
		proxy_answer_error(pr, 504, "upstream_timeout",	/* pr is gone */
		    "The upstream API did not answer in time.", post);
	else if (err == UPSTREAM_CONNECT)
		proxy_answer_error(pr, 502, "upstream_unreachable",
		    "The upstream API could not be reached.", 0); /* pr gone */
	else if (err == UPSTREAM_CONN_LOST)
		/* Sending it again could create (and bill) it twice. */
		proxy_answer_error(pr, 502, "upstream_connection_lost",
		    "The connection to the upstream API closed after the "
		    "request was sent and before any answer: the request may "
		    "have reached the upstream and been carried out. It was "
		    "not sent again. Check its effect before you repeat it.",
		    1);	/* pr is gone */
	else
		proxy_answer_error(pr, 502, "bad_upstream_response",
		    "The upstream API sent an invalid answer.",
		    post);	/* pr is gone */
}

/* A stream's transfer ended.  Ends pr. */
static void
proxy_up_stream_done(struct proxy_req *pr, enum upstream_err err,
    const char *why)
{
	if (err == UPSTREAM_OK) {
		proxy_stream_end(pr, NULL, NULL, NULL);	/* pr is gone */
		return;
	}
	log_warnx_limited(&proxy_lim_stream, "req=%llu: upstream stream of %s "
	    "ended early: %s", (unsigned long long)pr->serial, pr->upath, why);
	if (err == UPSTREAM_TIMEOUT)
		proxy_stream_end(pr, "upstream_error", "upstream_timeout",
		    "The upstream API's stream went silent for longer than "
		    "the proxy's stream_idle_timeout; the stream was "
		    "ended.");	/* pr is gone */
	else
		proxy_stream_end(pr, "upstream_error", "upstream_stream_cut",
		    "The upstream API's stream ended before its final "
		    "event.");	/* pr is gone */
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
	log_debug("req=%llu: upstream done: %s %s: %s, status %d",
	    (unsigned long long)pr->serial,
	    route_method_name(pr->route.method), pr->upath,
	    upstream_err_str(err), pr->status);
	if (proxy_state_relaying(pr->state)) {
		proxy_up_stream_done(pr, err, why);	/* pr is gone */
		return;
	}
	if (err != UPSTREAM_OK || pr->too_big) {
		proxy_up_failed(pr, err, why);	/* pr is gone */
		return;
	}

	a.body_len = evbuffer_get_length(pr->body);
	a.body = (const char *)evbuffer_pullup(pr->body, -1);
	/* Every answer of the Responses API is a JSON object. */
	if (pr->status == 200 &&
	    response_inspect(a.body, a.body_len, &info) == -1) {
		log_warnx_limited(&proxy_lim_invalid, "req=%llu: upstream %s "
		    "%s: a 200 whose body is not a JSON object (%zu bytes)",
		    (unsigned long long)pr->serial,
		    route_method_name(pr->route.method), pr->upath,
		    a.body_len);
		metrics_upstream_error(pr->px->metrics, MU_PROTOCOL);
		proxy_answer_error(pr, 502, "upstream_invalid_answer",
		    "The upstream API answered 200 with a body that is not "
		    "a JSON object.",
		    pr->route.method == RM_POST);	/* pr is gone */
		return;
	}
	if (proxy_is_delete(pr))
		proxy_delete_end(pr, pr->status);
	if (pr->status == 401 && pr->who.cred != NULL) {
		proxy_key_refused(pr, a.body, a.body_len);	/* pr is gone */
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
	proxy_answer(pr, &a);	/* pr is gone */
	evhttp_clear_headers(&hdrs);
}

static const struct upstream_hooks proxy_hooks = {
	proxy_up_headers, proxy_up_data, proxy_up_done
};

int
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
	const struct credential	*cr = pr->who.cred;
	struct evkeyvalq	*in = evhttp_request_get_input_headers(pr->req);
	struct evkeyval		*h, *c;
	size_t			 n = 0;
	int			 has_ct = 0, hop;

	pr->fwd = xcalloc(PROXY_MAX_FWD_HEADERS + 1, sizeof *pr->fwd);
	TAILQ_FOREACH(h, in, next) {
		if (n == PROXY_MAX_FWD_HEADERS - 4)
			break;
		if (!proxy_in_list(h->key, proxy_fwd_req) &&
		    strncasecmp(h->key, "x-stainless-", 12) != 0)
			continue;
		/* What any Connection header names is hop-by-hop too. */
		hop = 0;
		TAILQ_FOREACH(c, in, next)
			if (strcasecmp(c->key, "Connection") == 0 &&
			    proxy_conn_names(c->value, h->key))
				hop = 1;
		if (hop)
			continue;
		/* What the credential sets, no client overrides. */
		if (credential_sets(cr, h->key))
			continue;
		if (strcasecmp(h->key, "content-type") == 0)
			has_ct = 1;
		xasprintf(&pr->fwd[n++], "%s: %s", h->key, h->value);
	}
	if (cr != NULL) {
		/* The credential's key, never the client's. */
		xasprintf(&pr->fwd[n++], "Authorization: %s", cr->auth);
		if (cr->organization != NULL)
			xasprintf(&pr->fwd[n++], "OpenAI-Organization: %s",
			    cr->organization);
		if (cr->project != NULL)
			xasprintf(&pr->fwd[n++], "OpenAI-Project: %s",
			    cr->project);
	} else if (client_auth != NULL)
		xasprintf(&pr->fwd[n++], "Authorization: %s", client_auth);
	/* Otherwise curl would label a POST as a form. */
	if (!has_ct)
		pr->fwd[n++] = xstrdup("Content-Type:");
	pr->fwd[n] = NULL;
}

void
proxy_forward(struct proxy_req *pr)
{
	struct evhttp_request	*req = pr->req;
	struct evbuffer		*in = evhttp_request_get_input_buffer(req);
	const struct evhttp_uri	*uri;
	const char		*query;
	struct upstream_opts	 o;

	memset(&o, 0, sizeof o);
	o.method = route_method_name(pr->route.method);
	/* Origin form only: an absolute-form request line never picks a host. */
	uri = evhttp_request_get_evhttp_uri(req);
	query = evhttp_uri_get_query(uri);
	xasprintf(&pr->upath, "%s%s%s", evhttp_uri_get_path(uri),
	    query != NULL ? "?" : "", query != NULL ? query : "");
	o.path = pr->upath;
	o.body_len = evbuffer_get_length(in);
	o.body = o.body_len ? evbuffer_pullup(in, -1) : NULL;
	o.has_body = pr->route.method != RM_GET;
	/*
	 * A DELETE goes on when its client leaves (ORPHANED), and its client's
	 * request, which holds the body curl sends from, goes with the client.
	 */
	if (proxy_is_delete(pr) && o.body_len > 0) {
		pr->sent = xmalloc(o.body_len);
		memcpy(pr->sent, o.body, o.body_len);
		o.body = pr->sent;
	}
	o.serial = pr->serial;
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
		log_warnx_limited(&proxy_lim_cache, "req=%llu: DELETE of %s "
		    "not sent: the cache could not record it",
		    (unsigned long long)pr->serial, pr->route.id);
		proxy_answer_error(pr, 503, "cache_unavailable", "respcache "
		    "could not record this DELETE in its cache, so it was not "
		    "sent: the cache would have gone on serving the response. "
		    "See the proxy's error log; retry later.", 0); /* pr gone */
		return;
	}
	if (pr->route.kind == ROUTE_CANCEL)
		proxy_invalidate(pr);
	proxy_build_headers(pr, evhttp_find_header(
	    evhttp_request_get_input_headers(req), "Authorization"));
	o.headers = (const char *const *)pr->fwd;
	pr->body = xevbuffer_new();
	proxy_req_set_state(pr, PR_FETCHING);
	proxy_watch_client(pr);
	pr->ut0 = proxy_clock();
	pr->since = time(NULL);
	pr->ureq = upstream_start(pr->px->up, &o, &proxy_hooks, pr);
}
