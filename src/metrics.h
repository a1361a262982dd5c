/*
 * metrics.h - counters for the admin listener's /metrics.
 *
 * Each worker thread has its own set and is its only writer: a count is
 * a plain load, add and store, no lock and no shared cache line on the
 * hit path.  The admin thread sums every set when scraped.
 */
#ifndef RC_METRICS_H
#define RC_METRICS_H

#include <stdint.h>

struct evbuffer;
struct cache_stats;

/* The cache's part in a request. */
enum metrics_cache {
	MC_HIT,			/* answered from the cache */
	MC_MISS,		/* fetched upstream, maybe stored */
	MC_COALESCED,		/* got the answer of a fetch in flight */
	MC_BYPASS,		/* not a cacheable request */
	MC_SHARED,		/* answered from the shared tier */
	MC_COUNT
};

/* The routes of route.h, and the proxy's own answers before routing. */
enum metrics_route {
	MR_CREATE, MR_RESPONSE, MR_INPUT_ITEMS, MR_CANCEL, MR_OTHER,
	MR_NONE, MR_COUNT
};

enum metrics_method {
	MM_GET, MM_POST, MM_DELETE, MM_OTHER, MM_COUNT
};

/* Upstream transfer failures, as upstream.h tells them apart. */
enum metrics_uperr {
	MU_CONNECT, MU_TIMEOUT, MU_TLS, MU_PROTOCOL, MU_COUNT
};

/* The listening sockets, as the accept errors tell them apart. */
enum metrics_listener {
	ML_CLIENT, ML_ADMIN, ML_COUNT
};

/* What a request in the proxy's hands is doing (proxy_int.h's states). */
enum metrics_state {
	MS_WAITING, MS_FETCHING, MS_STREAMING, MS_PAUSED, MS_ORPHANED,
	MS_SHARED, MS_COUNT
};

/* What a lookup in the shared tier came to, or a failed exchange. */
enum metrics_shared {
	MSH_HIT, MSH_MISS, MSH_TIMEOUT, MSH_ERROR,
	MSH_WAIT,			/* waited on another node's fetch */
	MSH_STORED, MSH_REFUSED,	/* stores: written; the id deleted */
	MSH_DROPPED,			/* too big, or too much in flight */
	MSH_COUNT
};

struct metrics;

/* A worker's set; registered for scraping until metrics_free(). */
struct metrics	*metrics_new(void);
void		 metrics_free(struct metrics *);

/* A reply: its route, method, HTTP status, cache part, seconds taken. */
/* A route class as the metrics and the access log name it. */
const char	*metrics_route_name(enum metrics_route);
void	metrics_request(struct metrics *, enum metrics_route,
	    enum metrics_method, int status, enum metrics_cache, double secs);
/* An upstream exchange: status (0 when it failed) and seconds taken. */
void	metrics_upstream(struct metrics *, int status, double secs);
void	metrics_upstream_error(struct metrics *, enum metrics_uperr);
/* Requests in the proxy's hands, and streams open: +1 or -1. */
void	metrics_inflight(struct metrics *, int delta);
void	metrics_streams(struct metrics *, int delta);
/* Requests in a state: +1 or -1. */
void	metrics_state(struct metrics *, enum metrics_state, int delta);
void	metrics_shared(struct metrics *, enum metrics_shared);
/* WebSocket mode: sockets open (+1, -1); a message relayed, by direction. */
void	metrics_ws_open(struct metrics *, int delta);
void	metrics_ws_message(struct metrics *, int to_upstream, size_t bytes);
/* This worker's connection to the shared tier: configured; up. */
void	metrics_shared_conf(struct metrics *, int on);
void	metrics_shared_up(struct metrics *, int up);
/*
 * The fleet's stream (main thread): another node's entry applied here,
 * lag seconds after Redis took it; whether this node is caught up.
 */
void	metrics_stream_applied(double lag);
void	metrics_stream_fresh(int fresh);
/* From any thread: workers with a connection to the shared tier; up. */
void	metrics_shared_state(int *conf, int *up);

/* Process-wide, from the main thread. */
void	metrics_reload(int ok);
/* Process-wide, from any thread: accept() failed with errno err. */
void	metrics_accept_error(enum metrics_listener, int err);

/* Lookups that hit, and that missed (coalesced ones too), over all. */
void	metrics_hits(uint64_t *hits, uint64_t *misses);
/* The Prometheus text exposition (format 0.0.4) of everything. */
void	metrics_render(struct evbuffer *, const struct cache_stats *,
	    int workers);

#endif
