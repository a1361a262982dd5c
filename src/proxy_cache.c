/*
 * proxy_cache.c - the cache's side of a request: the hit, a deleted id's
 * tombstone, a DELETE's guard, storing an answer, invalidating.
 *
 * A hit touches no JSON and makes no upstream request: the stored status,
 * headers and body are copied into the reply as they are.
 */
#include "config.h"

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
#include "shared.h"
#include "xmalloc.h"

/* The longest stored header name and value a hit replays (and stores). */
#define PROXY_HDR_NAME		64
#define PROXY_HDR_VALUE		1024

/* Of the upstream's answer headers, the ones a cached entry keeps. */
static const char *const proxy_stored_resp[] = {
	"content-type", "x-request-id", "openai-version",
	"openai-organization", "openai-project", NULL
};

static const char	proxy_json_hdrs[] = "content-type: application/json\r\n";

/* A strong ETag: a quoted prefix of the body's SHA-256. */
static void
proxy_etag(const void *body, size_t len, char out[36])
{
	char	hex[SHA256_HEX_LEN + 1];

	sha256_hex(body, len, hex);
	snprintf(out, 36, "\"%.32s\"", hex);
}

int
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
const char *
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

char *
proxy_head_begin(char *p, const char *end, struct proxy *px, int status,
    time_t now, size_t body_len)
{
	const char	*phrase;

	if ((phrase = reply_phrase(status)) == NULL)
		return (NULL);
	p = fmt_lit(p, end, "HTTP/1.1 ");
	p = fmt_u64(p, end, (uint64_t)status);
	p = fmt_lit(p, end, " ");
	p = fmt_str(p, end, phrase);
	p = fmt_lit(p, end, "\r\nDate: ");
	p = fmt_str(p, end, proxy_date(px, now));
	p = fmt_lit(p, end, "\r\nContent-Length: ");
	p = fmt_u64(p, end, body_len);
	return (fmt_lit(p, end, "\r\n"));
}

#define PROXY_RID_MAX		128

struct proxy_hit {
	struct proxy_req	*pr;
	time_t			 now;
	double			 max_age;	/* 0: any age */
	int			 served;
	int			 status;	/* what the client got */
	size_t			 bytes;
	struct bufferevent	*direct;	/* reply_direct() wrote it */
	char			 rid[PROXY_RID_MAX];
};

/* The stored x-request-id, for the access line of a direct reply. */
static void
proxy_hit_rid(struct proxy_hit *h, const struct cache_entry *e)
{
	static const char	 name[] = "x-request-id: ";
	const char		*p, *end = e->hdrs + e->hdrs_len, *eol;

	for (p = e->hdrs; p < end; p = eol + 2) {
		if ((eol = memchr(p, '\r', (size_t)(end - p))) == NULL)
			return;
		if ((size_t)(eol - p) > sizeof name - 1 &&
		    (size_t)(eol - p) - (sizeof name - 1) < sizeof h->rid &&
		    strncasecmp(p, name, sizeof name - 1) == 0) {
			p += sizeof name - 1;
			memcpy(h->rid, p, (size_t)(eol - p));
			h->rid[eol - p] = '\0';
			h->pr->rid = h->rid;
			return;
		}
	}
}

/*
 * The hit's whole reply formatted here, and written by reply_direct():
 * the stored lines are our own "Name: value\r\n" records, copied as they
 * are.  Returns 0 if it does not fit or its status has no phrase of
 * ours, for evhttp to format.
 */
static int
proxy_hit_direct(struct proxy_hit *h, const struct cache_entry *e, long secs)
{
	struct evhttp_request	*req = h->pr->req;
	char			 head[PROXY_HEAD_MAX];
	char			*p = head, *end = head + sizeof head;

	p = proxy_head_begin(p, end, h->pr->px, e->status, h->now,
	    e->body_len);
	p = fmt_mem(p, end, e->hdrs, e->hdrs_len);
	p = fmt_lit(p, end, "Age: ");
	p = fmt_u64(p, end, (unsigned long long)(secs < 0 ? 0 : secs));
	if (e->etag_len > 0) {
		p = fmt_lit(p, end, "\r\nETag: ");
		p = fmt_mem(p, end, e->etag, e->etag_len);
	}
	p = fmt_lit(p, end, "\r\nX-Cache: HIT\r\n\r\n");
	if (p == NULL)
		return (0);
	if (h->pr->px->alog != NULL)
		proxy_hit_rid(h, e);
	h->direct = evhttp_connection_get_bufferevent(
	    evhttp_request_get_connection(req));
	reply_direct(req, e->status, head, (size_t)(p - head), e->body,
	    e->body_len);
	h->status = e->status;
	h->bytes = e->body_len;
	return (1);
}

void
proxy_replay_headers(struct evkeyvalq *out, const struct cache_entry *e,
    long secs)
{
	const char	*p, *end, *colon, *eol;
	char		 name[PROXY_HDR_NAME], value[PROXY_HDR_VALUE];
	char		 age[24], etag[64];

	/* "Name: value\r\n" records; a line feed inside would split a head. */
	for (p = e->hdrs, end = e->hdrs + e->hdrs_len; p < end; p = eol + 2) {
		if ((eol = memchr(p, '\r', (size_t)(end - p))) == NULL)
			break;
		if (memchr(p, '\n', (size_t)(eol - p)) != NULL ||
		    (colon = memchr(p, ':', (size_t)(eol - p))) == NULL ||
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
}

/* cache_visit_fn: the hit path.  Copies the entry into the reply. */
static void
proxy_serve_hit(const struct cache_entry *e, void *arg)
{
	struct proxy_hit	*h = arg;
	struct evhttp_request	*req = h->pr->req;
	struct evkeyvalq	*out = evhttp_request_get_output_headers(req);
	long			 secs;
	int			 unchanged;

	secs = (long)(h->now - e->stored_at);
	if (h->max_age > 0 && (double)secs >= h->max_age)
		return;
	h->served = 1;
	unchanged = e->status == 200 && e->etag_len > 0 &&
	    proxy_etag_match(evhttp_find_header(
	    evhttp_request_get_input_headers(req), "If-None-Match"),
	    e->etag, e->etag_len);
	proxy_track_reply(h->pr->px, req);
	if (!unchanged && reply_direct_ok(req) &&
	    proxy_hit_direct(h, e, secs))
		return;
	proxy_replay_headers(out, e, secs);
	/* evhttp would format Date for every reply itself. */
	evhttp_add_header(out, "Date", proxy_date(h->pr->px, h->now));
	proxy_xcache(out, "HIT");
	if (unchanged) {
		evhttp_send_reply(req, 304, "Not Modified", NULL);
		h->status = 304;
		return;
	}
	/* Straight into the reply's buffer: no evbuffer of our own. */
	if (evbuffer_add(evhttp_request_get_output_buffer(req), e->body,
	    e->body_len) == -1)
		fatalx("out of memory");
	evhttp_send_reply(req, e->status, NULL, NULL);
	h->status = e->status;
	h->bytes = e->body_len;
}

char *
proxy_not_found_msg(const char *what, const char *id)
{
	char	*msg;

	xasprintf(&msg, "%s with id '%s' not found.", what, id);
	return (msg);
}

/* The upstream's own 404 body for an unknown id; the caller frees it. */
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
 * A deleted id's tombstone answers GETs of it with the upstream's 404
 * for tombstone_ttl, without asking the upstream: the id's own, kept by
 * its delete guard once the upstream deleted it (for every tenant), or
 * this tenant's, written when the upstream answered its DELETE with 404.
 */
static void
proxy_tombstoned(struct proxy_hit *h)
{
	struct proxy_req	*pr = h->pr;
	struct cache_entry	 e;
	char			*key, *body;
	size_t			 klen;
	time_t			 at;

	if (pr->route.method != RM_GET || pr->px->tombstone_ttl <= 0 ||
	    (pr->route.kind != ROUTE_RESPONSE &&
	    pr->route.kind != ROUTE_INPUT_ITEMS))
		return;
	h->max_age = pr->px->tombstone_ttl;
	if (cache_deleted(pr->px->cache, pr->route.id, &at)) {
		body = proxy_not_found_body("Response", pr->route.id);
		memset(&e, 0, sizeof e);
		e.status = 404;
		e.etag = "";
		e.hdrs = proxy_json_hdrs;
		e.hdrs_len = sizeof proxy_json_hdrs - 1;
		e.body = body;
		e.body_len = strlen(body);
		e.stored_at = at;
		proxy_serve_hit(&e, h);
		free(body);
		if (h->served)
			return;
	}
	key = route_id_prefix(pr->who.tenant, RK_TOMBSTONE, pr->route.id,
	    &klen);
	cache_get(pr->px->cache, key, klen, h->now, proxy_serve_hit, h);
	free(key);
}

int
proxy_lookup(struct proxy_req *pr)
{
	struct proxy_hit	 h;

	/*
	 * A beta feature (OpenAI-Beta, the SDK's ?beta=true twins) may shape
	 * the body: such a request is neither answered from the cache nor
	 * stored in it, nor does a create's answer become the plain GET's.
	 */
	if (evhttp_find_header(evhttp_request_get_input_headers(pr->req),
	    "OpenAI-Beta") != NULL) {
		if (pr->route.cacheable) {
			pr->route.cacheable = 0;
			free(pr->route.norm);
			pr->route.norm = NULL;
		}
		pr->no_store = 1;
	}
	memset(&h, 0, sizeof h);
	h.pr = pr;
	h.now = time(NULL);
	if (pr->route.cacheable) {
		pr->key = route_cache_key(pr->who.tenant, &pr->route,
		    &pr->klen);
		/* A node behind the fleet's deletes serves none of its own. */
		if (shared_local_ok())
			cache_get(pr->px->cache, pr->key, pr->klen, h.now,
			    proxy_serve_hit, &h);
	}
	if (!h.served)
		proxy_tombstoned(&h);
	if (!h.served)
		return (0);
	pr->result = MC_HIT;
	proxy_req_finish(pr, h.status, h.bytes);	/* pr is gone */
	if (h.direct != NULL)
		reply_direct_done(h.direct);	/* req may be gone */
	return (1);
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
int
proxy_delete_begin(struct proxy_req *pr)
{
	coalesce_detach_id(pr->px->flights, pr->route.id);
	if (cache_delete_begin(pr->px->cache, pr->route.id,
	    pr->px->delete_window, time(NULL)) == -1 ||
	    cache_purge_id(pr->px->cache, pr->route.id, 0) == -1)
		return (-1);
	cache_writer_forget_id(pr->px->cache, pr->route.id);
	proxy_unshare(pr, pr->route.id, SHARED_DELETE_BEGIN);
	return (0);
}

/*
 * The upstream answered the DELETE with status: a 2xx deleted it (a
 * tombstone for every tenant); 404 did not, for this tenant (a tombstone
 * of its own); any other 4xx was refused (the guard counts one DELETE
 * less); a 1xx, 3xx, 5xx or 408 may or may not have deleted it (the
 * guard stays).  Fetches of the id begun meanwhile take no new waiters.
 */
void
proxy_delete_end(struct proxy_req *pr, int status)
{
	struct proxy		*px = pr->px;
	char			*key, *body;
	size_t			 klen;
	time_t			 now = time(NULL);

	coalesce_detach_id(px->flights, pr->route.id);
	if (status >= 500 || status == 408 || status < 200 ||
	    (status >= 300 && status < 400))
		return;
	proxy_unshare(pr, pr->route.id, status < 300 ? SHARED_DELETE_DONE :
	    SHARED_DELETE_REFUSED);
	/* Not queued: its tombstone answers the next GET of the id. */
	cache_delete_end(px->cache, pr->route.id, status < 300,
	    px->tombstone_ttl, now);
	if (status < 300)	/* the guard kept any new one out: a backstop */
		cache_purge_id_later(px->cache, pr->route.id, 0);
	if (status == 404 && px->tombstone_ttl > 0) {
		body = proxy_not_found_body("Response", pr->route.id);
		key = route_id_prefix(pr->who.tenant, RK_TOMBSTONE,
		    pr->route.id, &klen);
		cache_put_later(px->cache, key, klen, NULL, 404, "", 0,
		    proxy_json_hdrs, sizeof proxy_json_hdrs - 1, body,
		    strlen(body), now);
		free(key);
		free(body);
	}
}

void
proxy_invalidate(struct proxy_req *pr)
{
	static const char	 kinds[] = ROUTE_KINDS_ANSWERS;
	char			*prefix;
	size_t			 plen, i;

	for (i = 0; i < sizeof kinds - 1; i++) {
		prefix = route_id_prefix(pr->who.tenant, kinds[i],
		    pr->route.id, &plen);
		cache_invalidate_later(pr->px->cache, prefix, plen);
		free(prefix);
	}
	proxy_unshare(pr, pr->route.id, SHARED_CANCELLED);
}

void
proxy_own(struct proxy_req *pr, const char *id)
{
	proxy_own_who(pr->px, &pr->who, id);
}

void
proxy_own_who(struct proxy *px, const struct tenant_who *who, const char *id)
{
	tenant_own(px->cache, who, id);
	/* Every node of a fleet keeps the record too. */
	if (tenant_owned(who) && *id != '\0')
		shared_own(px->shared, id, who->tenant, who->client->name);
}

int
proxy_store_ws(struct proxy *px, const char *tenant, const char *id,
    const char *body, size_t len, time_t since)
{
	struct cache_guard	 g;
	char			 etag[36], *key;
	size_t			 klen;
	time_t			 now = time(NULL);
	int			 rc;

	key = route_id_prefix(tenant, RK_RESPONSE, id, &klen);
	proxy_etag(body, len, etag);
	g.id = id;
	g.since = since;
	rc = cache_put_later(px->cache, key, klen, &g, 200, etag, strlen(etag),
	    proxy_json_hdrs, sizeof proxy_json_hdrs - 1, body, len, now);
	if (rc == 0)
		proxy_share(px, id, key, klen, etag, proxy_json_hdrs,
		    sizeof proxy_json_hdrs - 1, body, len, now);
	free(key);
	return (rc == 0);
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
	time_t			 now = time(NULL);
	int			 rc;

	hb = xevbuffer_new();
	if (as_json)
		evbuffer_add(hb, proxy_json_hdrs, sizeof proxy_json_hdrs - 1);
	TAILQ_FOREACH(h, pr->uhdrs, next)
		if (proxy_in_list(h->key, proxy_stored_resp) &&
		    strlen(h->value) < PROXY_HDR_VALUE &&
		    !(as_json && strcasecmp(h->key, "content-type") == 0))
			evbuffer_add_printf(hb, "%s: %s\r\n", h->key, h->value);
	proxy_etag(body, len, etag);
	/* An answer fetched before a DELETE of its id may not come back. */
	g.id = id;
	g.since = pr->since;
	rc = cache_put_later(pr->px->cache, key, klen, &g, 200, etag,
	    strlen(etag), (const char *)evbuffer_pullup(hb, -1),
	    evbuffer_get_length(hb), body, len, now);
	if (rc == 0)
		proxy_share(pr->px, id, key, klen, etag,
		    (const char *)evbuffer_pullup(hb, -1),
		    evbuffer_get_length(hb), body, len, now);
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

	key = route_id_prefix(pr->who.tenant, RK_RESPONSE, id, &klen);
	stored = proxy_put(pr, key, klen, id, body, len, as_json, etag);
	free(key);
	return (stored);
}

int
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

void
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
