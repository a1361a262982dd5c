/*
 * shared_follow.c - following the fleet's stream of deletes (shared.h),
 * on the main loop, on a connection of its own.
 *
 * Each node tells the stream "<prefix>invalidations" what became of an id
 * (a DELETE's begin and outcome, a cancel: shared_delete()).  Every node
 * reads it with XREAD BLOCK from the last entry it applied, and does to
 * its own cache what the teller did to its: a begin guards the id and
 * drops its entries, a deletion leaves a tombstone, a refusal lifts the
 * guard, a cancel drops the entries.  Its own entries it skips.  The last
 * entry applied is kept in the cache (meta "shared_stream"), so that a
 * restart goes on from there.
 *
 * The guarantee (README, "Running a fleet"): local entries are served only
 * while this node is caught up with the stream, or for max_stale seconds
 * after it lost it.  Past that, and from start-up until it first caught
 * up, a node answers from the upstream (shared_local_ok()).  When it
 * connects, XINFO STREAM says whether entries it had not read were
 * trimmed (max-deleted-entry-id past its last), or the stream was made
 * anew (last-generated-id before it): then it empties its cache before
 * serving from it again.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <openssl/rand.h>

#include "cache.h"
#include "coalesce.h"
#include "log.h"
#include "metrics.h"
#include "route.h"
#include "shared.h"
#include "shared_int.h"
#include "xmalloc.h"

#define FOLLOW_BLOCK_MS		1000	/* XREAD BLOCK */
#define FOLLOW_COUNT		256	/* entries a read */
#define FOLLOW_META		"shared_stream"
#define FOLLOW_META_GEN		"shared_generation"

/* 1 while this process's cache may answer (see above). */
static int	shared_fresh = 1;

struct shared_follow {
	struct shared_link	 link;
	struct cache		*cache;
	struct coalesce		*flights;
	char			*stream;
	char			*prefix;
	char			*genkey;	/* <prefix>generation */
	char			 gen[40];	/* the one this cache follows */
	char			*node;
	double			 max_stale;
	double			 window;
	double			 tombstone_ttl;
	char			 pos[64];	/* the last entry applied; "": none */
	unsigned long long	 npos;		/* entries added up to it */
	int			 emptied;	/* the cache, at this connection */
	int			 caught_up;
	struct event		*stale;		/* max_stale after a loss */
	struct event		*watch;		/* a read that never ends */
};

int
shared_local_ok(void)
{
	return (__atomic_load_n(&shared_fresh, __ATOMIC_ACQUIRE));
}

static void
follow_fresh(struct shared_follow *f, int fresh)
{
	if (shared_local_ok() == fresh)
		return;
	__atomic_store_n(&shared_fresh, fresh, __ATOMIC_RELEASE);
	metrics_stream_fresh(fresh);
	if (fresh)
		log_info("shared tier: caught up with the fleet's deletes; "
		    "serving from the local cache");
	else
		log_warnx("shared tier: not caught up with the fleet's deletes "
		    "for %.0f s ([shared] max_stale): answering from the "
		    "upstream until it is", f->max_stale);
}

static void
follow_set_pos(struct shared_follow *f, const char *id, unsigned long long n)
{
	char	v[96];

	if (id != f->pos)
		snprintf(f->pos, sizeof f->pos, "%s", id);
	f->npos = n;
	snprintf(v, sizeof v, "%s %llu", f->pos, f->npos);
	if (cache_meta_set(f->cache, FOLLOW_META, v) == -1)
		log_warnx_limited(&shared_lim, "shared tier: cannot record "
		    "the stream's position in the cache");
}

/* Empty the cache: it may hold what a delete it never read removed. */
static void
follow_clear(struct shared_follow *f, const char *why)
{
	if (f->emptied)
		return;
	log_warnx("shared tier: %s; emptying the local cache", why);
	cache_clear(f->cache);
	f->emptied = 1;
}

static const char	*follow_field(const redisReply *, const char *);

/*
 * Do what another node's entry (its [f, v, ...]) says to this node's
 * cache; 0 if it was this node's own, or not one of ours.
 */
static int
follow_apply(struct shared_follow *f, const redisReply *kv)
{
	const char	*node = follow_field(kv, "node");
	const char	*id = follow_field(kv, "id");
	const char	*ev = follow_field(kv, "ev");
	const char	*tenant, *client;
	char		*key;
	size_t		 klen;
	time_t		 now = time(NULL);

	if (strcmp(node, f->node) == 0 || !route_valid_id(id, strlen(id)) ||
	    ev[0] == '\0' || ev[1] != '\0')
		return (0);
	switch (ev[0]) {
	case SHARED_DELETE_BEGIN:
		coalesce_detach_id(f->flights, id);
		cache_delete_begin(f->cache, id, f->window, now);
		cache_purge_id(f->cache, id, 0);
		cache_writer_forget_id(f->cache, id);
		break;
	case SHARED_DELETE_DONE:
		coalesce_detach_id(f->flights, id);
		cache_delete_begin(f->cache, id, f->window, now);
		cache_delete_end(f->cache, id, 1, f->tombstone_ttl, now);
		cache_purge_id(f->cache, id, 0);
		cache_writer_forget_id(f->cache, id);
		break;
	case SHARED_DELETE_REFUSED:
		cache_delete_end(f->cache, id, 0, 0, now);
		break;
	case SHARED_CANCELLED:
		coalesce_detach_id(f->flights, id);
		cache_purge_id(f->cache, id, 0);
		cache_writer_forget_id(f->cache, id);
		break;
	case SHARED_OWNED:
		tenant = follow_field(kv, "tenant");
		client = follow_field(kv, "client");
		if (*tenant == '\0' || *client == '\0')
			return (0);
		key = route_id_prefix(tenant, RK_OWNER, id, &klen);
		cache_owner_put(f->cache, key, klen, client);
		free(key);
		break;
	default:
		return (0);
	}
	return (1);
}

static void	follow_read(struct shared_follow *);

/* The value of field name in a [f, v, f, v, ...] reply, of type, or NULL. */
static const redisReply *
follow_get(const redisReply *kv, const char *name, int type)
{
	size_t	i;

	for (i = 0; i + 1 < kv->elements; i += 2)
		if (kv->element[i]->type == REDIS_REPLY_STRING &&
		    kv->element[i + 1]->type == type &&
		    strcmp(kv->element[i]->str, name) == 0)
			return (kv->element[i + 1]);
	return (NULL);
}

/* A string field, or "". */
static const char *
follow_field(const redisReply *kv, const char *name)
{
	const redisReply	*v = follow_get(kv, name, REDIS_REPLY_STRING);

	return (v != NULL ? v->str : "");
}

/* An integer field, or -1. */
static long long
follow_int(const redisReply *kv, const char *name)
{
	const redisReply	*v = follow_get(kv, name, REDIS_REPLY_INTEGER);

	return (v != NULL ? v->integer : -1);
}

/* An entry's id starts with the ms Redis took it at: the lag since. */
static void
follow_lag(const char *entry)
{
	struct timespec	ts;
	double		ms = strtod(entry, NULL);

	clock_gettime(CLOCK_REALTIME, &ts);
	metrics_stream_applied(((double)ts.tv_sec * 1e3 +
	    (double)ts.tv_nsec / 1e6 - ms) / 1e3);
}

static void
follow_read_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct shared_follow	*f = priv;
	redisReply		*reply = r, *entries, *e;
	const char		*why;
	size_t			 i, n = 0;

	(void)ac;
	if (reply == NULL || f->link.freeing)
		return;		/* lost: the link reconnects */
	evtimer_del(f->watch);
	if ((why = shared_link_err(&f->link, reply)) != NULL) {
		log_warnx_limited(&shared_lim, "shared tier: reading the "
		    "stream: %s", why);
		shared_link_drop(&f->link);
		return;
	}
	/* [[stream, [[id, [f, v, ...]], ...]]], or nil: nothing new. */
	if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 1 &&
	    reply->element[0]->type == REDIS_REPLY_ARRAY &&
	    reply->element[0]->elements == 2 &&
	    (entries = reply->element[0]->element[1])->type ==
	    REDIS_REPLY_ARRAY) {
		for (i = 0; i < entries->elements; i++) {
			e = entries->element[i];
			if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
			    e->element[0]->type != REDIS_REPLY_STRING ||
			    e->element[1]->type != REDIS_REPLY_ARRAY)
				continue;
			if (follow_apply(f, e->element[1]))
				follow_lag(e->element[0]->str);
			snprintf(f->pos, sizeof f->pos, "%s",
			    e->element[0]->str);
			f->npos++;
		}
		n = entries->elements;
		if (n > 0)
			follow_set_pos(f, f->pos, f->npos);
	}
	if (n < FOLLOW_COUNT) {
		f->caught_up = 1;
		evtimer_del(f->stale);
		follow_fresh(f, 1);
	}
	follow_read(f);
}

/* A blocked read that outlives its BLOCK by far: Redis hangs. */
static void
follow_watch_cb(evutil_socket_t fd, short what, void *arg)
{
	struct shared_follow	*f = arg;

	(void)fd;
	(void)what;
	log_warnx_limited(&shared_lim, "shared tier: the stream's read has "
	    "not come back; reconnecting");
	shared_link_drop(&f->link);
}

static void
follow_read(struct shared_follow *f)
{
	struct timeval	tv = { FOLLOW_BLOCK_MS / 1000 + 2, 0 };

	if (f->link.ac == NULL)
		return;
	/* Behind, it reads without waiting: caught up as soon as it is. */
	if (f->caught_up)
		redisAsyncCommand(f->link.ac, follow_read_cb, f, "XREAD COUNT "
		    "%d BLOCK %d STREAMS %s %s", FOLLOW_COUNT, FOLLOW_BLOCK_MS,
		    f->stream, f->pos);
	else
		redisAsyncCommand(f->link.ac, follow_read_cb, f, "XREAD COUNT "
		    "%d STREAMS %s %s", FOLLOW_COUNT, f->stream, f->pos);
	evtimer_add(f->watch, &tv);
}

/* XINFO STREAM: may this node go on from its position? */
static void
follow_info_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct shared_follow	*f = priv;
	redisReply		*reply = r;
	const char		*last, *why = NULL;
	long long		 added, len;

	(void)ac;
	if (reply == NULL || f->link.freeing)
		return;
	if (reply->type != REDIS_REPLY_ARRAY) {
		/* No stream: none was written, or Redis lost it. */
		if (strcmp(f->pos, "") == 0)
			why = "this node has never read the fleet's stream of "
			    "deletes";
		else if (f->npos > 0)
			why = "the fleet's stream of deletes is gone from Redis";
		if (why != NULL)
			follow_clear(f, why);
		follow_set_pos(f, "0-0", 0);
		follow_read(f);
		return;
	}
	/*
	 * Entries are numbered as added (entries-added, Redis 7); those
	 * still there are the last "length" of them.  This node needs every
	 * one after npos.
	 */
	last = follow_field(reply, "last-generated-id");
	added = follow_int(reply, "entries-added");
	len = follow_int(reply, "length");
	if (last[0] == '\0' || added < 0 || len < 0)
		why = "Redis does not number the stream's entries (Redis 7 "
		    "does)";
	else if (strcmp(f->pos, "") == 0)
		why = "this node has never read the fleet's stream of deletes";
	else if ((unsigned long long)added < f->npos)
		why = "the fleet's stream of deletes was made anew";
	else if ((unsigned long long)(added - len) > f->npos)
		why = "deletes this node had not read were trimmed from the "
		    "fleet's stream";
	if (why != NULL) {
		/* Emptied: what came before does not matter. */
		follow_clear(f, why);
		follow_set_pos(f, last[0] != '\0' ? last : "0-0",
		    added > 0 ? (unsigned long long)added : 0);
	}
	follow_read(f);
}

/*
 * The generation: a random name the first node sets in an empty Redis.
 * Another one than this cache followed says Redis lost what it held (a
 * restart without persistence, a flush): deletes may be lost with it.
 */
static void
follow_gen_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct shared_follow	*f = priv;
	redisReply		*reply = r;

	(void)ac;
	if (reply == NULL || f->link.freeing)
		return;
	if (reply->type != REDIS_REPLY_STRING || reply->len == 0 ||
	    reply->len >= sizeof f->gen) {
		log_warnx_limited(&shared_lim, "shared tier: no generation in "
		    "Redis: %s", shared_link_err(&f->link, reply) != NULL ?
		    shared_link_err(&f->link, reply) : "(none)");
		shared_link_drop(&f->link);
		return;
	}
	if (strcmp(f->gen, reply->str) != 0) {
		if (f->gen[0] != '\0')
			follow_clear(f, "Redis no longer holds the fleet's "
			    "state this node followed (restarted empty, or "
			    "flushed)");
		else if (strcmp(f->pos, "") != 0)
			follow_clear(f, "this node has never followed this "
			    "fleet's stream of deletes");
		snprintf(f->gen, sizeof f->gen, "%s", reply->str);
		if (cache_meta_set(f->cache, FOLLOW_META_GEN, f->gen) == -1)
			log_warnx_limited(&shared_lim, "shared tier: cannot "
			    "record the generation in the cache");
		f->pos[0] = '\0';
		f->npos = 0;
	}
	redisAsyncCommand(f->link.ac, follow_info_cb, f, "XINFO STREAM %s",
	    f->stream);
}

static void
follow_up(void *arg)
{
	struct shared_follow	*f = arg;
	unsigned char		 r[8];
	char			 gen[20];
	size_t			 i;

	f->emptied = 0;
	if (RAND_bytes(r, sizeof r) != 1)
		fatalx("no random bytes");
	for (i = 0; i < sizeof r; i++)
		snprintf(gen + 2 * i, 3, "%02x", r[i]);
	redisAsyncCommand(f->link.ac, NULL, NULL, "SET %s %s NX", f->genkey,
	    gen);
	redisAsyncCommand(f->link.ac, follow_gen_cb, f, "GET %s", f->genkey);
}

static void
follow_down(void *arg)
{
	struct shared_follow	*f = arg;
	struct timeval		 tv;

	evtimer_del(f->watch);
	f->caught_up = 0;
	if (!shared_local_ok() || evtimer_pending(f->stale, NULL))
		return;
	tv.tv_sec = (time_t)f->max_stale;
	tv.tv_usec = (suseconds_t)((f->max_stale - (double)tv.tv_sec) * 1e6);
	evtimer_add(f->stale, &tv);
}

static void
follow_stale_cb(evutil_socket_t fd, short what, void *arg)
{
	struct shared_follow	*f = arg;

	(void)fd;
	(void)what;
	if (!f->caught_up)
		follow_fresh(f, 0);
}

struct shared_follow *
shared_follow_new(struct event_base *base, const struct shared_conf *sc,
    struct cache *cache, struct coalesce *flights, double max_stale,
    double tombstone_ttl)
{
	struct shared_follow	*f;
	char			 meta[96];

	f = xcalloc(1, sizeof *f);
	f->cache = cache;
	f->flights = flights;
	xasprintf(&f->stream, "%s%s", sc->prefix, SHARED_STREAM);
	xasprintf(&f->genkey, "%sgeneration", sc->prefix);
	f->prefix = xstrdup(sc->prefix);
	if (cache_meta_get(cache, FOLLOW_META_GEN, f->gen, sizeof f->gen) != 1)
		f->gen[0] = '\0';
	f->node = xstrdup(sc->node);
	f->max_stale = max_stale;
	f->window = sc->mark_ttl;
	f->tombstone_ttl = tombstone_ttl;
	/* "" until known: a cache that never followed one is emptied. */
	if (cache_meta_get(cache, FOLLOW_META, meta, sizeof meta) != 1 ||
	    sscanf(meta, "%63s %llu", f->pos, &f->npos) != 2) {
		f->pos[0] = '\0';
		f->npos = 0;
	}
	if ((f->stale = evtimer_new(base, follow_stale_cb, f)) == NULL ||
	    (f->watch = evtimer_new(base, follow_watch_cb, f)) == NULL)
		fatalx("out of memory");
	__atomic_store_n(&shared_fresh, 0, __ATOMIC_RELEASE);
	metrics_stream_fresh(0);
	shared_link_init(&f->link, base, sc, "shared tier (stream)", NULL,
	    follow_up, follow_down, f);
	shared_link_start(&f->link);
	return (f);
}

int
shared_follow_purge(struct shared_follow *f, const char *id)
{
	static const char	evs[] = { SHARED_CANCELLED, '\0' };

	if (f == NULL || !f->link.is_up || f->link.ac == NULL)
		return (-1);
	/* Redis's entries of id, then the others' caches, like a cancel. */
	redisAsyncCommand(f->link.ac, NULL, NULL, "DEL %sr:%s", f->prefix, id);
	redisAsyncCommand(f->link.ac, NULL, NULL, "XADD %s MAXLEN ~ %d * node %s "
	    "id %s ev %s", f->stream, SHARED_STREAM_MAX, f->node, id, evs);
	return (0);
}

void
shared_follow_free(struct shared_follow *f)
{
	if (f == NULL)
		return;
	shared_link_free(&f->link);
	event_free(f->stale);
	event_free(f->watch);
	free(f->stream);
	free(f->genkey);
	free(f->prefix);
	free(f->node);
	free(f);
}
