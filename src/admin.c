/*
 * admin.c - the admin listener's routes; see admin.h.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <jansson.h>

#include "admin.h"
#include "cache.h"
#include "log.h"
#include "metrics.h"
#include "reply.h"
#include "route.h"
#include "shared.h"
#include "xmalloc.h"

struct admin {
	struct cache	*cache;
	struct shared_follow *follow;	/* or NULL */
	int		 workers;
	int		 draining;
};

static void
admin_json(struct evhttp_request *req, int status, json_t *o)
{
	struct evbuffer	*b;
	char		*s;

	if (o == NULL || (s = json_dumps(o, JSON_COMPACT)) == NULL)
		fatalx("out of memory");
	json_decref(o);
	b = xevbuffer_new();
	evbuffer_add_printf(b, "%s\n", s);
	free(s);
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Content-Type", "application/json");
	reply_send(req, status, b);
	evbuffer_free(b);
}

static void
admin_stats(struct admin *a, struct evhttp_request *req)
{
	struct cache_stats	cs;
	uint64_t		hits, misses;

	cache_stats(a->cache, &cs);
	metrics_hits(&hits, &misses);
	admin_json(req, 200, json_pack("{s:I, s:I, s:I, s:I, s:I, s:f, s:I, "
	    "s:I, s:f, s:I, s:I, s:I}",
	    "entries", (json_int_t)cs.entries,
	    "bytes", (json_int_t)cs.bytes,
	    "max_size", (json_int_t)cs.max_size,
	    "map_size", (json_int_t)cs.map_size,
	    "map_used", (json_int_t)cs.map_used,
	    "map_used_ratio", cs.map_size ? (double)cs.map_used /
	    (double)cs.map_size : 0.0,
	    "hits", (json_int_t)hits,
	    "misses", (json_int_t)misses,
	    "hit_ratio", hits + misses ? (double)hits /
	    (double)(hits + misses) : 0.0,
	    "evictions", (json_int_t)cs.evictions,
	    "map_full", (json_int_t)cs.map_full,
	    "errors", (json_int_t)cs.errors));
}

static void
admin_purge(struct admin *a, struct evhttp_request *req, const char *id)
{
	int	n, fleet;

	if (!route_valid_id(id, strlen(id))) {
		reply_error(req, 400, NULL, "invalid_id", "Not a response "
		    "id: 1 to 128 letters, digits, '_' or '-'.", NULL);
		return;
	}
	/* What the writer holds goes first, or it would come back. */
	cache_writer_flush(a->cache);
	if ((n = cache_purge_id(a->cache, id, 1)) == -1) {
		reply_error(req, 500, "server_error", "cache_error", "The "
		    "cache could not be written; see the error log.", NULL);
		return;
	}
	log_info("admin: purged %d entr%s of %s", n, n == 1 ? "y" : "ies",
	    id);
	if (a->follow == NULL) {
		admin_json(req, 200, json_pack("{s:s, s:i}", "id", id,
		    "purged", n));
		return;
	}
	/* The fleet's copies too: Redis's, and every node's. */
	fleet = shared_follow_purge(a->follow, id) == 0;
	if (!fleet)
		log_warnx("admin: %s purged here only: Redis is out of reach",
		    id);
	admin_json(req, 200, json_pack("{s:s, s:i, s:b}", "id", id, "purged",
	    n, "fleet", fleet));
}

void
admin_set_follow(struct admin *a, struct shared_follow *f)
{
	a->follow = f;
}

static void
admin_healthz(struct admin *a, struct evhttp_request *req)
{
	(void)a;
	admin_json(req, 200, json_pack("{s:s}", "status", "ok"));
}

/*
 * Ready unless draining.  The shared tier, when configured, is told but
 * never makes a node unready: without it a node serves from its own cache
 * and the upstream.
 */
static void
admin_readyz(struct admin *a, struct evhttp_request *req)
{
	json_t	*o;
	int	 conf, up;

	o = json_pack("{s:s}", "status", a->draining ? "draining" : "ready");
	metrics_shared_state(&conf, &up);
	if (conf > 0)
		json_object_set_new(o, "shared", json_pack("{s:s,s:i,s:i}",
		    "redis", up == conf ? "up" : up > 0 ? "partly up" : "down",
		    "connections_up", up, "connections", conf));
	admin_json(req, a->draining ? 503 : 200, o);
}

static void
admin_metrics(struct admin *a, struct evhttp_request *req)
{
	struct evbuffer		*b;
	struct cache_stats	 cs;

	b = xevbuffer_new();
	cache_stats(a->cache, &cs);
	metrics_render(b, &cs, a->workers);
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
	reply_send(req, 200, b);
	evbuffer_free(b);
}

/* The routes a GET (or HEAD) reads; other methods get 405. */
static const struct {
	const char	*path;
	void		(*fn)(struct admin *, struct evhttp_request *);
} admin_gets[] = {
	{ "/healthz", admin_healthz },
	{ "/readyz", admin_readyz },
	{ "/metrics", admin_metrics },
	{ "/cache/stats", admin_stats },
};

static void
admin_handle(struct evhttp_request *req, void *arg)
{
	struct admin		*a = arg;
	const char		*path;
	enum evhttp_cmd_type	 cmd = evhttp_request_get_command(req);
	size_t			 i;

	path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
	if (path == NULL)
		path = "";
	for (i = 0; i < sizeof admin_gets / sizeof admin_gets[0]; i++) {
		if (strcmp(path, admin_gets[i].path) != 0)
			continue;
		if (cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD)
			admin_gets[i].fn(a, req);
		else
			reply_error(req, 405, NULL, "method_not_allowed",
			    "Method not allowed.", "GET, HEAD");
		return;
	}
	if (strncmp(path, "/cache/", 7) == 0) {
		if (cmd != EVHTTP_REQ_DELETE)
			reply_error(req, 405, NULL, "method_not_allowed",
			    "Method not allowed.", "DELETE");
		else
			admin_purge(a, req, path + 7);
		return;
	}
	reply_error(req, 404, NULL, "unknown_route", "No such admin route: "
	    "/healthz, /readyz, /metrics, /cache/stats, DELETE /cache/{id}.",
	    NULL);
}

/* No admin route reads a body; a scrape's headers are a few hundred bytes. */
#define ADMIN_MAX_HEADERS	8192
#define ADMIN_MAX_BODY		4096

struct admin *
admin_new(struct evhttp *http, struct cache *cache, int workers,
    double timeout)
{
	struct admin	*a;
	struct timeval	 tv;

	a = xcalloc(1, sizeof *a);
	a->cache = cache;
	a->workers = workers;
	/* evhttp's own defaults: no limit at all, and 50 s. */
	evhttp_set_max_headers_size(http, ADMIN_MAX_HEADERS);
	evhttp_set_max_body_size(http, ADMIN_MAX_BODY);
	tv.tv_sec = (time_t)timeout;
	tv.tv_usec = (suseconds_t)((timeout - (double)tv.tv_sec) * 1e6);
	evhttp_set_timeout_tv(http, &tv);
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD |
	    EVHTTP_REQ_POST | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
	    EVHTTP_REQ_PATCH | EVHTTP_REQ_OPTIONS);
	evhttp_set_gencb(http, admin_handle, a);
	return (a);
}

void
admin_draining(struct admin *a)
{
	if (a != NULL)
		a->draining = 1;
}

void
admin_free(struct admin *a)
{
	free(a);
}
