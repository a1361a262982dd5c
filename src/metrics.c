/*
 * metrics.c - per-worker counters, summed into the Prometheus text format.
 *
 * A worker bumps its own counters with relaxed atomic loads and stores
 * (one writer: no read-modify-write lock needed, and the scraping thread
 * never reads a torn value).  Histograms keep per-bucket counts and are
 * made cumulative when rendered.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "accesslog.h"
#include "cache.h"
#include "log.h"
#include "metrics.h"
#include "xmalloc.h"

/* Upper bounds, in seconds, of the duration histograms' buckets. */
static const double metrics_bounds[] = {
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300
};
#define NBOUNDS	(sizeof metrics_bounds / sizeof metrics_bounds[0])
#define NCLASS	5			/* 1xx .. 5xx */

struct metrics_hist {
	uint64_t	 bucket[NBOUNDS + 1];	/* the last: +Inf */
	uint64_t	 sum_ns;
};

struct metrics {
	uint64_t		 req[MR_COUNT][MM_COUNT][NCLASS][MC_COUNT];
	struct metrics_hist	 req_time[MC_COUNT];
	uint64_t		 up[NCLASS];
	struct metrics_hist	 up_time;
	uint64_t		 uperr[MU_COUNT];
	int64_t			 inflight;
	int64_t			 streams;
	int64_t			 states[MS_COUNT];
	uint64_t		 shared[MSH_COUNT];
	int64_t			 ws_open;
	uint64_t		 ws_msgs[2];	/* to the client, to the upstream */
	uint64_t		 ws_bytes[2];
	int64_t			 shared_conf;
	int64_t			 shared_up;
	struct metrics		*next;
};

static const char *const metrics_state_names[MS_COUNT] = {
	"waiting", "fetching", "streaming", "paused", "orphaned", "shared"
};
static const char *const metrics_shared_names[MSH_COUNT] = {
	"hit", "miss", "timeout", "error", "waited", "stored", "refused",
	"dropped"
};

static pthread_mutex_t	 metrics_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct metrics	*metrics_all;
static uint64_t		 metrics_reloads[2];	/* failed, ok */
static uint64_t		 metrics_stream_n;	/* entries applied */
static uint64_t		 metrics_stream_lag_us;	/* the last one's lag */
static int64_t		 metrics_stream_ok = -1;	/* caught up; -1: no stream */
static time_t		 metrics_started;

/* accept() errors, by listener and errno. */
enum metrics_accerr {
	MA_EMFILE, MA_ENFILE, MA_ENOBUFS, MA_ENOMEM, MA_OTHER, MA_COUNT
};
static uint64_t		 metrics_accept[ML_COUNT][MA_COUNT];
static const char *const metrics_listener_names[ML_COUNT] = {
	"client", "admin"
};
static const char *const metrics_accerr_names[MA_COUNT] = {
	"emfile", "enfile", "enobufs", "enomem", "other"
};

static const char *const metrics_route_names[MR_COUNT] = {
	"create", "response", "input_items", "cancel", "other", "none"
};

const char *
metrics_route_name(enum metrics_route r)
{
	return (metrics_route_names[r < MR_COUNT ? r : MR_NONE]);
}

static const char *const metrics_method_names[MM_COUNT] = {
	"GET", "POST", "DELETE", "other"
};
static const char *const metrics_cache_names[MC_COUNT] = {
	"hit", "miss", "coalesced", "bypass", "shared"
};
static const char *const metrics_uperr_names[MU_COUNT] = {
	"connect", "timeout", "tls", "protocol"
};

/* One writer: a plain add, published whole. */
#define BUMP(p, n)	__atomic_store_n((p), __atomic_load_n((p),	\
			    __ATOMIC_RELAXED) + (n), __ATOMIC_RELAXED)
#define READ(p)		__atomic_load_n((p), __ATOMIC_RELAXED)

struct metrics *
metrics_new(void)
{
	struct metrics	*m;

	m = xcalloc(1, sizeof *m);
	pthread_mutex_lock(&metrics_mtx);
	if (metrics_started == 0)
		metrics_started = time(NULL);
	m->next = metrics_all;
	metrics_all = m;
	pthread_mutex_unlock(&metrics_mtx);
	return (m);
}

void
metrics_free(struct metrics *m)
{
	struct metrics	**p;

	if (m == NULL)
		return;
	pthread_mutex_lock(&metrics_mtx);
	for (p = &metrics_all; *p != NULL; p = &(*p)->next)
		if (*p == m) {
			*p = m->next;
			break;
		}
	pthread_mutex_unlock(&metrics_mtx);
	free(m);
}

static int
metrics_class(int status)
{
	if (status < 100 || status > 599)
		return (NCLASS - 1);
	return (status / 100 - 1);
}

static void
metrics_observe(struct metrics_hist *h, double secs)
{
	size_t	i;

	for (i = 0; i < NBOUNDS && secs > metrics_bounds[i]; i++)
		;
	BUMP(&h->bucket[i], 1);
	BUMP(&h->sum_ns, (uint64_t)(secs > 0 ? secs * 1e9 : 0));
}

void
metrics_request(struct metrics *m, enum metrics_route r,
    enum metrics_method me, int status, enum metrics_cache c, double secs)
{
	if (m == NULL)
		return;
	BUMP(&m->req[r][me][metrics_class(status)][c], 1);
	metrics_observe(&m->req_time[c], secs);
}

void
metrics_upstream(struct metrics *m, int status, double secs)
{
	if (m == NULL)
		return;
	if (status > 0)
		BUMP(&m->up[metrics_class(status)], 1);
	metrics_observe(&m->up_time, secs);
}

void
metrics_upstream_error(struct metrics *m, enum metrics_uperr e)
{
	if (m != NULL)
		BUMP(&m->uperr[e], 1);
}

void
metrics_inflight(struct metrics *m, int delta)
{
	if (m != NULL)
		BUMP(&m->inflight, delta);
}

void
metrics_streams(struct metrics *m, int delta)
{
	if (m != NULL)
		BUMP(&m->streams, delta);
}

void
metrics_state(struct metrics *m, enum metrics_state s, int delta)
{
	if (m != NULL)
		BUMP(&m->states[s], delta);
}

void
metrics_shared(struct metrics *m, enum metrics_shared r)
{
	if (m != NULL)
		BUMP(&m->shared[r], 1);
}

void
metrics_ws_open(struct metrics *m, int delta)
{
	if (m != NULL)
		BUMP(&m->ws_open, delta);
}

void
metrics_ws_message(struct metrics *m, int to_upstream, size_t bytes)
{
	if (m == NULL)
		return;
	BUMP(&m->ws_msgs[to_upstream != 0], 1);
	BUMP(&m->ws_bytes[to_upstream != 0], bytes);
}

void
metrics_shared_conf(struct metrics *m, int on)
{
	if (m != NULL)
		__atomic_store_n(&m->shared_conf, on, __ATOMIC_RELAXED);
}

void
metrics_shared_up(struct metrics *m, int up)
{
	if (m != NULL)
		__atomic_store_n(&m->shared_up, up, __ATOMIC_RELAXED);
}

void
metrics_stream_applied(double lag)
{
	__atomic_add_fetch(&metrics_stream_n, 1, __ATOMIC_RELAXED);
	__atomic_store_n(&metrics_stream_lag_us,
	    (uint64_t)(lag > 0 ? lag * 1e6 : 0), __ATOMIC_RELAXED);
}

void
metrics_stream_fresh(int fresh)
{
	__atomic_store_n(&metrics_stream_ok, fresh, __ATOMIC_RELAXED);
}

void
metrics_shared_state(int *conf, int *up)
{
	struct metrics	*m;

	*conf = *up = 0;
	pthread_mutex_lock(&metrics_mtx);
	for (m = metrics_all; m != NULL; m = m->next) {
		*conf += (int)READ(&m->shared_conf);
		*up += (int)READ(&m->shared_up);
	}
	pthread_mutex_unlock(&metrics_mtx);
}

void
metrics_reload(int ok)
{
	__atomic_add_fetch(&metrics_reloads[ok != 0], 1, __ATOMIC_RELAXED);
}

void
metrics_accept_error(enum metrics_listener l, int err)
{
	enum metrics_accerr	e;

	switch (err) {
	case EMFILE:
		e = MA_EMFILE;
		break;
	case ENFILE:
		e = MA_ENFILE;
		break;
	case ENOBUFS:
		e = MA_ENOBUFS;
		break;
	case ENOMEM:
		e = MA_ENOMEM;
		break;
	default:
		e = MA_OTHER;
		break;
	}
	__atomic_add_fetch(&metrics_accept[l][e], 1, __ATOMIC_RELAXED);
}

void
metrics_hits(uint64_t *hits, uint64_t *misses)
{
	struct metrics	*m;
	size_t		 r, me, cl;

	*hits = *misses = 0;
	pthread_mutex_lock(&metrics_mtx);
	for (m = metrics_all; m != NULL; m = m->next)
		for (r = 0; r < MR_COUNT; r++)
			for (me = 0; me < MM_COUNT; me++)
				for (cl = 0; cl < NCLASS; cl++) {
					*hits += READ(&m->req[r][me][cl][MC_HIT]);
					*misses += READ(&m->req[r][me][cl][MC_MISS]) +
					    READ(&m->req[r][me][cl][MC_COALESCED]);
				}
	pthread_mutex_unlock(&metrics_mtx);
}

static void
metrics_head(struct evbuffer *b, const char *name, const char *type,
    const char *help)
{
	evbuffer_add_printf(b, "# HELP respcache_%s %s\n# TYPE respcache_%s %s\n",
	    name, help, name, type);
}

/* A series without labels, with its HELP and TYPE. */
static void
metrics_one(struct evbuffer *b, const char *name, const char *type,
    const char *help, long long value)
{
	metrics_head(b, name, type, help);
	evbuffer_add_printf(b, "respcache_%s %lld\n", name, value);
}

/* A histogram's series; labels is "" or `name="value",`. */
static void
metrics_hist_put(struct evbuffer *b, const char *name, const char *labels,
    const struct metrics_hist *h)
{
	uint64_t	cum = 0;
	size_t		i;
	char		le[32];

	for (i = 0; i <= NBOUNDS; i++) {
		cum += h->bucket[i];
		if (i < NBOUNDS)
			snprintf(le, sizeof le, "%g", metrics_bounds[i]);
		else
			snprintf(le, sizeof le, "+Inf");
		evbuffer_add_printf(b, "respcache_%s_bucket{%sle=\"%s\"} %llu\n",
		    name, labels, le, (unsigned long long)cum);
	}
	evbuffer_add_printf(b, "respcache_%s_sum%s%.*s%s %.9f\n", name,
	    *labels ? "{" : "", (int)(*labels ? strlen(labels) - 1 : 0),
	    labels, *labels ? "}" : "", (double)h->sum_ns / 1e9);
	evbuffer_add_printf(b, "respcache_%s_count%s%.*s%s %llu\n", name,
	    *labels ? "{" : "", (int)(*labels ? strlen(labels) - 1 : 0),
	    labels, *labels ? "}" : "", (unsigned long long)cum);
}

static void
metrics_hist_add(struct metrics_hist *to, const struct metrics_hist *from)
{
	size_t	i;

	for (i = 0; i <= NBOUNDS; i++)
		to->bucket[i] += READ(&from->bucket[i]);
	to->sum_ns += READ(&from->sum_ns);
}

void
metrics_render(struct evbuffer *b, const struct cache_stats *cs, int workers)
{
	struct metrics	*m, *sum;
	size_t		 r, me, cl, c, i;
	char		 labels[64];

	sum = xcalloc(1, sizeof *sum);
	pthread_mutex_lock(&metrics_mtx);
	for (m = metrics_all; m != NULL; m = m->next) {
		for (r = 0; r < MR_COUNT; r++)
			for (me = 0; me < MM_COUNT; me++)
				for (cl = 0; cl < NCLASS; cl++)
					for (c = 0; c < MC_COUNT; c++)
						sum->req[r][me][cl][c] +=
						    READ(&m->req[r][me][cl][c]);
		for (c = 0; c < MC_COUNT; c++)
			metrics_hist_add(&sum->req_time[c], &m->req_time[c]);
		for (cl = 0; cl < NCLASS; cl++)
			sum->up[cl] += READ(&m->up[cl]);
		metrics_hist_add(&sum->up_time, &m->up_time);
		for (i = 0; i < MU_COUNT; i++)
			sum->uperr[i] += READ(&m->uperr[i]);
		sum->inflight += READ(&m->inflight);
		sum->streams += READ(&m->streams);
		for (i = 0; i < MS_COUNT; i++)
			sum->states[i] += READ(&m->states[i]);
		for (i = 0; i < MSH_COUNT; i++)
			sum->shared[i] += READ(&m->shared[i]);
		sum->shared_conf += READ(&m->shared_conf);
		sum->ws_open += READ(&m->ws_open);
		for (i = 0; i < 2; i++) {
			sum->ws_msgs[i] += READ(&m->ws_msgs[i]);
			sum->ws_bytes[i] += READ(&m->ws_bytes[i]);
		}
		sum->shared_up += READ(&m->shared_up);
	}
	pthread_mutex_unlock(&metrics_mtx);

	metrics_head(b, "requests_total", "counter", "Requests answered, by "
	    "route, method, status class and the cache's part.");
	for (r = 0; r < MR_COUNT; r++)
		for (me = 0; me < MM_COUNT; me++)
			for (cl = 0; cl < NCLASS; cl++)
				for (c = 0; c < MC_COUNT; c++)
					if (sum->req[r][me][cl][c] != 0)
						evbuffer_add_printf(b,
						    "respcache_requests_total{"
						    "route=\"%s\",method=\"%s\","
						    "status=\"%zuxx\",cache="
						    "\"%s\"} %llu\n",
						    metrics_route_names[r],
						    metrics_method_names[me],
						    cl + 1, metrics_cache_names[c],
						    (unsigned long long)
						    sum->req[r][me][cl][c]);
	metrics_head(b, "request_duration_seconds", "histogram", "Time from "
	    "a request's headers to its answer being handed to the client, "
	    "by the cache's part.");
	for (c = 0; c < MC_COUNT; c++) {
		snprintf(labels, sizeof labels, "cache=\"%s\",",
		    metrics_cache_names[c]);
		metrics_hist_put(b, "request_duration_seconds", labels,
		    &sum->req_time[c]);
	}
	metrics_head(b, "upstream_requests_total", "counter", "Upstream "
	    "answers, by status class.");
	for (cl = 0; cl < NCLASS; cl++)
		evbuffer_add_printf(b, "respcache_upstream_requests_total{"
		    "status=\"%zuxx\"} %llu\n", cl + 1,
		    (unsigned long long)sum->up[cl]);
	metrics_head(b, "upstream_duration_seconds", "histogram", "Time "
	    "from sending an upstream request to its answer's end (or "
	    "failure).");
	metrics_hist_put(b, "upstream_duration_seconds", "", &sum->up_time);
	metrics_head(b, "upstream_errors_total", "counter", "Upstream "
	    "exchanges that failed, by kind.");
	for (i = 0; i < MU_COUNT; i++)
		evbuffer_add_printf(b, "respcache_upstream_errors_total{kind="
		    "\"%s\"} %llu\n", metrics_uperr_names[i],
		    (unsigned long long)sum->uperr[i]);
	metrics_one(b, "inflight_requests", "gauge", "Requests in the "
	    "proxy's hands.",
	    (long long)sum->inflight);
	metrics_one(b, "open_streams", "gauge", "Event streams being "
	    "relayed.",
	    (long long)sum->streams);
	metrics_one(b, "websockets_open", "gauge", "WebSocket-mode sockets "
	    "being relayed.", (long long)sum->ws_open);
	metrics_head(b, "websocket_messages_total", "counter", "WebSocket "
	    "messages relayed (control frames included), by direction.");
	metrics_head(b, "websocket_bytes_total", "counter", "Payload bytes "
	    "of the WebSocket messages relayed, by direction.");
	for (i = 0; i < 2; i++)
		evbuffer_add_printf(b, "respcache_websocket_messages_total{"
		    "direction=\"%s\"} %llu\nrespcache_websocket_bytes_total{"
		    "direction=\"%s\"} %llu\n", i ? "to_upstream" : "to_client",
		    (unsigned long long)sum->ws_msgs[i], i ? "to_upstream" :
		    "to_client", (unsigned long long)sum->ws_bytes[i]);
	metrics_head(b, "requests_by_state", "gauge", "Requests in the "
	    "proxy's hands past their lookup, by what they are doing.");
	for (i = 0; i < MS_COUNT; i++)
		evbuffer_add_printf(b, "respcache_requests_by_state{state="
		    "\"%s\"} %lld\n", metrics_state_names[i],
		    (long long)sum->states[i]);
	if (sum->shared_conf > 0) {
		metrics_one(b, "shared_up", "gauge", "1 while every worker's "
		    "connection to the shared tier (Redis) is up.",
		    sum->shared_up == sum->shared_conf ? 1LL : 0LL);
		metrics_one(b, "shared_connections", "gauge", "Workers' "
		    "connections to the shared tier that are up.",
		    (long long)sum->shared_up);
		metrics_head(b, "shared_lookups_total", "counter", "Lookups "
		    "in the shared tier by result, failed exchanges (error), "
		    "and those that waited on another node's fetch.");
		for (i = 0; i < MSH_STORED; i++)
			evbuffer_add_printf(b, "respcache_shared_lookups_total"
			    "{result=\"%s\"} %llu\n", metrics_shared_names[i],
			    (unsigned long long)sum->shared[i]);
		metrics_head(b, "shared_stores_total", "counter", "Stores in "
		    "the shared tier: written, refused because the id was "
		    "deleted meanwhile, or dropped (too big, or too much "
		    "already on its way).");
		for (i = MSH_STORED; i < MSH_COUNT; i++)
			evbuffer_add_printf(b, "respcache_shared_stores_total"
			    "{result=\"%s\"} %llu\n", metrics_shared_names[i],
			    (unsigned long long)sum->shared[i]);
		metrics_one(b, "shared_stream_caught_up", "gauge", "1 while "
		    "this node is caught up with the fleet's stream of deletes "
		    "(else its own cache serves only for max_stale).",
		    (long long)(READ(&metrics_stream_ok) == 1));
		metrics_one(b, "shared_stream_applied_total", "counter",
		    "Other nodes' deletes, cancels and creates applied here.",
		    (long long)READ(&metrics_stream_n));
		metrics_head(b, "shared_stream_lag_seconds", "gauge", "From "
		    "Redis taking the last entry applied to its applying here "
		    "(the two clocks' skew included).");
		evbuffer_add_printf(b, "respcache_shared_stream_lag_seconds "
		    "%.6f\n", (double)READ(&metrics_stream_lag_us) / 1e6);
	}
	free(sum);

	metrics_one(b, "cache_entries", "gauge", "Entries in the cache.",
	    (long long)cs->entries);
	metrics_one(b, "cache_bytes", "gauge", "Bytes the cache's records "
	    "use (counted against max_size).",
	    (long long)cs->bytes);
	metrics_one(b, "cache_max_bytes", "gauge", "The cache's max_size.",
	    (long long)cs->max_size);
	metrics_one(b, "cache_map_bytes", "gauge", "The LMDB map's size.",
	    (long long)cs->map_size);
	metrics_one(b, "cache_map_used_bytes", "gauge", "The LMDB map's "
	    "highest page in use, in bytes.",
	    (long long)cs->map_used);
	metrics_one(b, "cache_evictions_total", "counter", "Records evicted "
	    "to stay under max_size.",
	    (long long)cs->evictions);
	metrics_one(b, "cache_map_full_total", "counter", "Answers not "
	    "stored: no room even after eviction.",
	    (long long)cs->map_full);
	metrics_one(b, "cache_errors_total", "counter", "LMDB errors (the "
	    "request was served anyway).",
	    (long long)cs->errors);

	metrics_one(b, "access_log_dropped_total", "counter", "Batches of "
	    "access log lines dropped because the log could not keep up.",
	    (long long)accesslog_lost());
	metrics_head(b, "config_reloads_total", "counter", "SIGHUP reloads, "
	    "by result.");
	evbuffer_add_printf(b, "respcache_config_reloads_total{result=\"ok\"} "
	    "%llu\nrespcache_config_reloads_total{result=\"failed\"} %llu\n",
	    (unsigned long long)READ(&metrics_reloads[1]),
	    (unsigned long long)READ(&metrics_reloads[0]));
	metrics_head(b, "accept_errors_total", "counter", "Failed accept() "
	    "calls, by listener and error; each pauses accepting on that "
	    "listener for 100 ms to 1 s.");
	for (i = 0; i < ML_COUNT; i++)
		for (c = 0; c < MA_COUNT; c++)
			evbuffer_add_printf(b, "respcache_accept_errors_total{"
			    "listener=\"%s\",error=\"%s\"} %llu\n",
			    metrics_listener_names[i], metrics_accerr_names[c],
			    (unsigned long long)READ(&metrics_accept[i][c]));
	metrics_one(b, "workers", "gauge", "Event-loop threads serving "
	    "clients.",
	    (long long)workers);
	metrics_one(b, "start_time_seconds", "gauge", "When the process "
	    "started, in seconds since the epoch.",
	    (long long)metrics_started);
	metrics_head(b, "build_info", "gauge", "Always 1; the version is a "
	    "label.");
	evbuffer_add_printf(b, "respcache_build_info{version=\"%s\"} 1\n",
	    PACKAGE_VERSION);
}
