/*
 * shared.c - the shared tier on Redis (see shared.h).
 *
 * Each worker has its own connection, on its own loop, through
 * hiredis's libevent adapter.  It connects with AUTH (the password file's)
 * and SELECT, and is up once a PING after them is answered.  A lost
 * connection is retried after 100 ms, doubling to 5 s.  A lookup not
 * answered within [shared] timeout is a miss; eight in a row drop the
 * connection, so that a Redis that hangs counts as one that is gone.
 *
 * In Redis, every key starting with [shared] prefix:
 *
 *   <prefix>r:<id>  a hash: cache key (tenant, kind, id, query; see
 *                   route_cache_key()) -> an encoded entry.  Its TTL is
 *                   [cache] ttl, 30 days at most (the upstream keeps a
 *                   response no longer), renewed by each store.  One DEL
 *                   forgets every tenant's answers of the id.
 *   <prefix>d:<id>  the id was deleted: for mark_ttl, a store of it is
 *                   refused.  The store is a script that checks the mark
 *                   and writes in one step, so an answer fetched before
 *                   a DELETE never lands after it.
 *
 * An entry: a 32-byte head, "RCS1", status (2 bytes), ETag length (2),
 * header lines' length (4), body length (4), stored_at (8, seconds),
 * then a checksum (8): XXH3 of the rest seeded with that of the head's
 * first 24 bytes; then the ETag, the header lines, the body.  Numbers
 * are little-endian.  A damaged or foreign value is a miss.
 */
#include "config.h"

#include <sys/time.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <xxhash.h>

#include "cache.h"
#include "log.h"
#include "metrics.h"
#include "shared.h"
#include "shared_int.h"
#include "xmalloc.h"

#define SHARED_HEAD		32
#define SHARED_MAX_TTL		(30.0 * 24 * 3600)
#define SHARED_TIMEOUTS_MAX	8	/* lookups in a row, then reconnect */
/*
 * A store bigger than this is not shared; past this much of stores not
 * yet answered (a slow or hung Redis), new ones are dropped: a worker's
 * memory stays bounded whatever Redis does.
 */
#define SHARED_ENTRY_MAX	(4 * 1024 * 1024)
#define SHARED_STORING_MAX	(32 * 1024 * 1024)

/* One store: the mark first, then the entry, and the hash's TTL. */
static const char	shared_put_lua[] =
	"if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end "
	"redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) "
	"redis.call('PEXPIRE', KEYS[1], ARGV[3]) "
	"return 1";

/*
 * A lookup: the entry if it is there; else the lease on its fetch if no
 * node holds it (1: this node fetches), else 0: another node fetches it.
 */
static const char	shared_get_lua[] =
	"local v = redis.call('HGET', KEYS[1], ARGV[1]) "
	"if v then return v end "
	"if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then "
	"return 1 end "
	"return 0";

/* The lease goes once its holder is done, if it still holds it. */
static const char	shared_unlease_lua[] =
	"if redis.call('GET', KEYS[1]) == ARGV[1] then "
	"return redis.call('DEL', KEYS[1]) end "
	"return 0";

/* What waits to be told while Redis is away. */
#define SHARED_WAIT_MAX		4096
struct shared_wait {
	char	id[129];
	char	ev;
	char	tenant[72];		/* SHARED_OWNED's */
	char	client[72];
};

struct shared {
	struct shared_link	 link;
	struct event_base	*base;
	char			*prefix;
	size_t			 plen;
	struct timeval		 timeout;
	double			 ttl;
	long long		 ttl_ms;
	long long		 mark_ms;
	long long		 lease_ms;
	struct metrics		*metrics;
	char			*node;
	int			 timeouts;	/* lookups in a row */
	size_t			 storing;	/* bytes of stores on their way */
	struct shared_wait	*wait;		/* a ring of SHARED_WAIT_MAX */
	size_t			 wait0, nwait;
};

struct shared_get {
	struct shared		*s;
	shared_got_fn		*fn;		/* NULL once answered or cancelled */
	void			*arg;
	struct event		*timer;		/* its reply's timeout; the poll */
	int			 inflight;	/* a command is out */
	int			 waited;	/* on another node's fetch */
	char			*hk, *lk, *key;	/* hash, lease and cache keys */
	size_t			 hl, ll, klen;
	char			 token[64];	/* the lease's, if it takes it */
};

/* Between two lookups of a key another node fetches. */
static const struct timeval	shared_poll = { 0, 5 * 1000 };

static void	shared_delete_flush(struct shared *);
static void	shared_wrote(redisAsyncContext *, void *, void *);

static void
shared_link_up(void *arg)
{
	struct shared	*s = arg;
	char		 where[160];

	s->timeouts = 0;
	metrics_shared_up(s->metrics, 1);
	shared_link_where(&s->link, where, sizeof where);
	log_info("shared tier: connected to Redis at %s", where);
	shared_delete_flush(s);
}

static void
shared_link_down(void *arg)
{
	struct shared	*s = arg;
	char		 where[160];

	metrics_shared_up(s->metrics, 0);
	shared_link_where(&s->link, where, sizeof where);
	log_warnx_limited(&shared_lim, "shared tier: lost Redis at %s; "
	    "serving from the local cache and the upstream until it is back",
	    where);
}

struct shared *
shared_new(struct event_base *base, const struct shared_conf *sc,
    struct metrics *m)
{
	struct shared	*s;

	s = xcalloc(1, sizeof *s);
	s->base = base;
	s->prefix = xstrdup(sc->prefix);
	s->plen = strlen(s->prefix);
	s->timeout.tv_sec = (time_t)sc->timeout;
	s->timeout.tv_usec = (suseconds_t)((sc->timeout -
	    (double)s->timeout.tv_sec) * 1e6);
	s->ttl = sc->ttl > 0 && sc->ttl < SHARED_MAX_TTL ? sc->ttl : 0;
	s->ttl_ms = (long long)((s->ttl > 0 ? s->ttl : SHARED_MAX_TTL) * 1000);
	s->mark_ms = (long long)(sc->mark_ttl * 1000);
	if (s->mark_ms < 1000)
		s->mark_ms = 1000;
	s->lease_ms = (long long)(sc->lease * 1000);
	if (s->lease_ms < 100)
		s->lease_ms = 100;
	s->metrics = m;
	s->node = xstrdup(sc->node != NULL ? sc->node : "-");
	s->wait = xcalloc(SHARED_WAIT_MAX, sizeof *s->wait);
	metrics_shared_up(m, 0);
	metrics_shared_conf(m, 1);
	shared_link_init(&s->link, base, sc, "shared tier", m, shared_link_up,
	    shared_link_down, s);
	shared_link_start(&s->link);
	return (s);
}

void
shared_free(struct shared *s)
{
	if (s == NULL)
		return;
	shared_link_free(&s->link);
	free(s->prefix);
	free(s->node);
	free(s->wait);
	metrics_shared_conf(s->metrics, 0);
	free(s);
}

int
shared_up(const struct shared *s)
{
	return (s != NULL && s->link.is_up && s->link.ac != NULL);
}

/* "<prefix><what>:<id>" into buf (at least plen + 3 + 128 + 1 bytes). */
static size_t
shared_key(const struct shared *s, char *buf, char what, const char *id)
{
	size_t	il = strnlen(id, 128);

	memcpy(buf, s->prefix, s->plen);
	buf[s->plen] = what;
	buf[s->plen + 1] = ':';
	memcpy(buf + s->plen + 2, id, il);
	return (s->plen + 2 + il);
}

static void
shared_le(unsigned char *p, uint64_t v, size_t n)
{
	size_t	i;

	for (i = 0; i < n; i++, v >>= 8)
		p[i] = (unsigned char)(v & 0xff);
}

static uint64_t
shared_unle(const unsigned char *p, size_t n)
{
	uint64_t	v = 0;

	while (n-- > 0)
		v = v << 8 | p[n];
	return (v);
}

static uint64_t
shared_sum(const unsigned char *head, const void *rest, size_t len)
{
	return (XXH3_64bits_withSeed(rest, len, XXH3_64bits(head, 24)));
}

/* The encoded entry; the caller frees it. */
static unsigned char *
shared_encode(const struct cache_entry *e, size_t *len)
{
	unsigned char	*b, *p;

	*len = SHARED_HEAD + e->etag_len + e->hdrs_len + e->body_len;
	b = xmalloc(*len);
	memcpy(b, "RCS1", 4);
	shared_le(b + 4, (uint64_t)e->status, 2);
	shared_le(b + 6, e->etag_len, 2);
	shared_le(b + 8, e->hdrs_len, 4);
	shared_le(b + 12, e->body_len, 4);
	shared_le(b + 16, (uint64_t)(int64_t)e->stored_at, 8);
	p = b + SHARED_HEAD;
	memcpy(p, e->etag, e->etag_len);
	memcpy(p + e->etag_len, e->hdrs, e->hdrs_len);
	memcpy(p + e->etag_len + e->hdrs_len, e->body, e->body_len);
	shared_le(b + 24, shared_sum(b, p, *len - SHARED_HEAD), 8);
	return (b);
}

/* 0 and e filled (pointing into b) if b is a whole, sound entry. */
static int
shared_decode(const unsigned char *b, size_t len, struct cache_entry *e)
{
	size_t	n;

	if (len < SHARED_HEAD || memcmp(b, "RCS1", 4) != 0)
		return (-1);
	e->status = (int)shared_unle(b + 4, 2);
	e->etag_len = (size_t)shared_unle(b + 6, 2);
	e->hdrs_len = (size_t)shared_unle(b + 8, 4);
	e->body_len = (size_t)shared_unle(b + 12, 4);
	e->stored_at = (time_t)(int64_t)shared_unle(b + 16, 8);
	n = e->etag_len + e->hdrs_len + e->body_len;
	if (e->status < 100 || e->status > 599 || n != len - SHARED_HEAD ||
	    shared_unle(b + 24, 8) != shared_sum(b, b + SHARED_HEAD, n))
		return (-1);
	e->etag = (const char *)b + SHARED_HEAD;
	e->hdrs = e->etag + e->etag_len;
	e->body = e->hdrs + e->hdrs_len;
	return (0);
}

static void
shared_get_free(struct shared_get *g)
{
	event_free(g->timer);
	free(g->hk);
	free(g->lk);
	free(g->key);
	free(g);
}

/* Answer the caller once: e found, or not (lease: it holds the fleet's). */
static void
shared_get_done(struct shared_get *g, const struct cache_entry *e, int lease)
{
	shared_got_fn	*fn = g->fn;

	g->fn = NULL;
	evtimer_del(g->timer);
	fn(g->arg, e, lease);
}

static void	shared_get_send(struct shared_get *);

static void
shared_got(redisAsyncContext *ac, void *r, void *priv)
{
	struct shared_get	*g = priv;
	struct shared		*s = g->s;
	redisReply		*reply = r;
	struct cache_entry	 e;
	const char		*why;

	(void)ac;
	g->inflight = 0;
	if (reply != NULL)
		s->timeouts = 0;
	if (g->fn == NULL) {		/* timed out, or cancelled */
		shared_get_free(g);
		return;
	}
	if (reply != NULL && reply->type == REDIS_REPLY_STRING &&
	    shared_decode((const unsigned char *)reply->str, reply->len,
	    &e) == 0 && (s->ttl == 0 ||
	    (double)(time(NULL) - e.stored_at) < s->ttl)) {
		metrics_shared(s->metrics, MSH_HIT);
		shared_get_done(g, &e, 0);
		shared_get_free(g);
		return;
	}
	if (reply != NULL && reply->type == REDIS_REPLY_INTEGER &&
	    reply->integer == 0) {
		/* Another node fetches it: ask again soon. */
		if (!g->waited)
			metrics_shared(s->metrics, MSH_WAIT);
		g->waited = 1;
		evtimer_add(g->timer, &shared_poll);
		return;
	}
	if (reply != NULL && (reply->type == REDIS_REPLY_INTEGER ||
	    reply->type == REDIS_REPLY_STRING)) {
		/* Not there (or not sound): this node fetches, holding the lease. */
		metrics_shared(s->metrics, MSH_MISS);
		shared_get_done(g, NULL, reply->type == REDIS_REPLY_INTEGER);
		shared_get_free(g);
		return;
	}
	metrics_shared(s->metrics, MSH_ERROR);
	if (reply != NULL && (why = shared_link_err(&s->link, reply)) != NULL)
		log_warnx_limited(&shared_lim, "shared tier: a lookup failed: "
		    "%s", why);
	shared_get_done(g, NULL, 0);
	shared_get_free(g);
}

/* The timer: a reply later than [shared] timeout, or the next poll. */
static void
shared_get_timer(evutil_socket_t fd, short what, void *arg)
{
	struct shared_get	*g = arg;
	struct shared		*s = g->s;

	(void)fd;
	(void)what;
	if (!g->inflight) {		/* polling: ask again */
		if (!shared_up(s)) {
			shared_get_done(g, NULL, 0);
			shared_get_free(g);
			return;
		}
		shared_get_send(g);
		return;
	}
	/* The reply, if it ever comes, frees g. */
	metrics_shared(s->metrics, MSH_TIMEOUT);
	shared_get_done(g, NULL, 0);
	if (++s->timeouts >= SHARED_TIMEOUTS_MAX && s->link.ac != NULL) {
		log_warnx_limited(&shared_lim, "shared tier: %d lookups in a "
		    "row took longer than [shared] timeout; reconnecting",
		    s->timeouts);
		s->timeouts = 0;
		shared_link_drop(&s->link);	/* frees g, among others */
	}
}

static void
shared_get_send(struct shared_get *g)
{
	struct shared	*s = g->s;

	if (redisAsyncCommand(s->link.ac, shared_got, g, "EVAL %s 2 %b %b "
	    "%b %s %lld", shared_get_lua, g->hk, g->hl, g->lk, g->ll, g->key,
	    g->klen, g->token, s->lease_ms) != REDIS_OK) {
		metrics_shared(s->metrics, MSH_ERROR);
		shared_get_done(g, NULL, 0);
		shared_get_free(g);
		return;
	}
	g->inflight = 1;
	evtimer_add(g->timer, &s->timeout);
}

/* "<prefix>l:<id>:<cache key>": the lease on one key's fetch. */
static char *
shared_lease_key(const struct shared *s, const char *id, const void *key,
    size_t klen, size_t *len)
{
	char	*lk;
	size_t	 n;

	lk = xmalloc(s->plen + 3 + 128 + 1 + klen);
	n = shared_key(s, lk, 'l', id);
	lk[n++] = ':';
	memcpy(lk + n, key, klen);
	*len = n + klen;
	return (lk);
}

struct shared_get *
shared_get(struct shared *s, const char *id, const void *key, size_t klen,
    const char *token, shared_got_fn *fn, void *arg)
{
	struct shared_get	*g;

	if (!shared_up(s) || strlen(token) >= sizeof g->token)
		return (NULL);
	g = xcalloc(1, sizeof *g);
	g->s = s;
	g->fn = fn;
	g->arg = arg;
	g->hk = xmalloc(s->plen + 3 + 128);
	g->hl = shared_key(s, g->hk, 'r', id);
	g->lk = shared_lease_key(s, id, key, klen, &g->ll);
	g->key = xmalloc(klen);
	memcpy(g->key, key, klen);
	g->klen = klen;
	memcpy(g->token, token, strlen(token) + 1);
	if ((g->timer = evtimer_new(s->base, shared_get_timer, g)) == NULL)
		fatalx("out of memory");
	shared_get_send(g);
	return (g->fn != NULL ? g : NULL);
}

void
shared_get_cancel(struct shared_get *g)
{
	if (g == NULL)
		return;
	g->fn = NULL;
	evtimer_del(g->timer);
	/* Between two polls no reply is coming to free it. */
	if (!g->inflight)
		shared_get_free(g);
}

void
shared_unlease(struct shared *s, const char *id, const void *key,
    size_t klen, const char *token)
{
	char	*lk;
	size_t	 ll;

	if (!shared_up(s))
		return;		/* it expires */
	lk = shared_lease_key(s, id, key, klen, &ll);
	redisAsyncCommand(s->link.ac, shared_wrote, s, "EVAL %s 1 %b %s",
	    shared_unlease_lua, lk, ll, token);
	free(lk);
}

/* A write's reply: only its failures count. */
static void
shared_wrote(redisAsyncContext *ac, void *r, void *priv)
{
	struct shared	*s = priv;
	const char	*why;

	(void)ac;
	if (s->link.freeing || (why = shared_link_err(&s->link, r)) == NULL)
		return;
	metrics_shared(s->metrics, MSH_ERROR);
	if (r != NULL)
		log_warnx_limited(&shared_lim, "shared tier: a write failed: "
		    "%s", why);
}

struct shared_store {
	struct shared	*s;
	size_t		 bytes;
};

/* A store's reply: 1 written, 0 refused (the id is marked deleted). */
static void
shared_stored(redisAsyncContext *ac, void *r, void *priv)
{
	struct shared_store	*st = priv;
	struct shared		*s = st->s;
	redisReply		*reply = r;

	s->storing -= st->bytes;
	free(st);
	if (s->link.freeing)
		return;
	if (reply != NULL && reply->type == REDIS_REPLY_INTEGER)
		metrics_shared(s->metrics, reply->integer == 1 ? MSH_STORED :
		    MSH_REFUSED);
	else
		shared_wrote(ac, r, s);
}

void
shared_put(struct shared *s, const char *id, const void *key, size_t klen,
    const struct cache_entry *e)
{
	struct shared_store	*st;
	unsigned char		*v;
	char			 hk[256], dk[256];
	size_t			 hl, dl, vl;

	if (!shared_up(s))
		return;
	vl = SHARED_HEAD + e->etag_len + e->hdrs_len + e->body_len;
	if (vl > SHARED_ENTRY_MAX || s->storing + vl > SHARED_STORING_MAX) {
		metrics_shared(s->metrics, MSH_DROPPED);
		if (vl <= SHARED_ENTRY_MAX)
			log_warnx_limited(&shared_lim, "shared tier: %zu bytes "
			    "of stores not answered yet; not sharing more "
			    "until Redis takes them", s->storing);
		return;
	}
	hl = shared_key(s, hk, 'r', id);
	dl = shared_key(s, dk, 'd', id);
	v = shared_encode(e, &vl);
	st = xmalloc(sizeof *st);
	st->s = s;
	st->bytes = vl;
	s->storing += vl;
	if (redisAsyncCommand(s->link.ac, shared_stored, st, "EVAL %s 2 %b %b "
	    "%b %b %lld", shared_put_lua, hk, hl, dk, dl, key, klen, v, vl,
	    s->ttl_ms) != REDIS_OK) {
		s->storing -= vl;
		free(st);
	}
	free(v);
}

static void	shared_tell_or_wait(struct shared *, const struct shared_wait *);
static void	shared_wait_push(struct shared *, const struct shared_wait *);

/* What was told, until Redis has taken it. */
struct shared_told {
	struct shared		*s;
	struct shared_wait	 w;
};

/*
 * The reply to what told the fleet (its XADD, the last of its commands):
 * lost with the connection, it is told again once Redis is back.
 */
static void
shared_told(redisAsyncContext *ac, void *r, void *priv)
{
	struct shared_told	*t = priv;
	struct shared		*s = t->s;

	if (r == NULL && !s->link.freeing)
		shared_tell_or_wait(s, &t->w);
	else
		shared_wrote(ac, r, s);
	free(t);
}

static void
shared_tell(struct shared *s, const struct shared_wait *w)
{
	struct shared_told	*t;
	char			 hk[256], dk[256], sk[256];
	char			 evs[2] = { w->ev, '\0' };
	size_t			 hl, dl;

	hl = shared_key(s, hk, 'r', w->id);
	dl = shared_key(s, dk, 'd', w->id);
	snprintf(sk, sizeof sk, "%s%s", s->prefix, SHARED_STREAM);
	/* One connection keeps its order: mark, forget, then tell. */
	if (w->ev == SHARED_DELETE_BEGIN)
		redisAsyncCommand(s->link.ac, shared_wrote, s, "SET %b 1 PX %lld",
		    dk, dl, s->mark_ms);
	if (w->ev != SHARED_DELETE_REFUSED && w->ev != SHARED_OWNED)
		redisAsyncCommand(s->link.ac, shared_wrote, s, "DEL %b", hk, hl);
	t = xmalloc(sizeof *t);
	t->s = s;
	t->w = *w;
	if ((w->ev == SHARED_OWNED ? redisAsyncCommand(s->link.ac, shared_told,
	    t, "XADD %s MAXLEN ~ %d * node %s id %s ev %s tenant %s client %s",
	    sk, SHARED_STREAM_MAX, s->node, w->id, evs, w->tenant, w->client) :
	    redisAsyncCommand(s->link.ac, shared_told, t, "XADD %s MAXLEN ~ %d "
	    "* node %s id %s ev %s", sk, SHARED_STREAM_MAX, s->node, w->id,
	    evs)) != REDIS_OK) {
		free(t);
		shared_wait_push(s, w);		/* told once it is back */
	}
}

/* Told now, or queued (the newest SHARED_WAIT_MAX) until Redis is back. */
static void
shared_tell_or_wait(struct shared *s, const struct shared_wait *w)
{
	if (shared_up(s))
		shared_tell(s, w);
	else
		shared_wait_push(s, w);
}

static void
shared_wait_push(struct shared *s, const struct shared_wait *w)
{
	if (s->nwait == SHARED_WAIT_MAX) {
		log_warnx_limited(&shared_lim, "shared tier: Redis has been "
		    "away for %d deletes and creates; the oldest is not told "
		    "to the fleet", SHARED_WAIT_MAX);
		s->wait0 = (s->wait0 + 1) % SHARED_WAIT_MAX;
		s->nwait--;
	}
	s->wait[(s->wait0 + s->nwait++) % SHARED_WAIT_MAX] = *w;
}


/* Tell what waited for the connection, oldest first. */
static void
shared_delete_flush(struct shared *s)
{
	size_t	i;

	for (i = 0; i < s->nwait; i++)
		shared_tell(s, &s->wait[(s->wait0 + i) % SHARED_WAIT_MAX]);
	s->wait0 = s->nwait = 0;
}

void
shared_delete(struct shared *s, const char *id, enum shared_event ev)
{
	struct shared_wait	w;

	if (s == NULL || strlen(id) >= sizeof w.id)
		return;
	memset(&w, 0, sizeof w);
	memcpy(w.id, id, strlen(id) + 1);
	w.ev = (char)ev;
	shared_tell_or_wait(s, &w);
}

void
shared_own(struct shared *s, const char *id, const char *tenant,
    const char *client)
{
	struct shared_wait	w;

	if (s == NULL || strlen(id) >= sizeof w.id ||
	    strlen(tenant) >= sizeof w.tenant ||
	    strlen(client) >= sizeof w.client)
		return;
	memset(&w, 0, sizeof w);
	memcpy(w.id, id, strlen(id) + 1);
	memcpy(w.tenant, tenant, strlen(tenant) + 1);
	memcpy(w.client, client, strlen(client) + 1);
	w.ev = SHARED_OWNED;
	shared_tell_or_wait(s, &w);
}
