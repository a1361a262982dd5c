/*
 * cache_writer.c - the writer thread: the stores, owner records,
 * invalidations and purges a worker asks for are queued here
 * and written by one thread, so that no worker loop waits for LMDB's
 * writer lock, a commit or a sync, and a miss is answered before its
 * entry is written.
 *
 * What is queued is seen at once: until the writer has committed it, a
 * queued entry or owner record sits in a table that cache_get() and
 * cache_owner_get() look in after LMDB.  The queue runs in order, so a
 * purge or an invalidation queued after a store undoes it in LMDB as it
 * does in the table (from which it takes the store out at once).
 *
 * Delete guards keep their promise (cache.h): a DELETE's guard is still
 * written before the DELETE goes, and its outcome (the tombstone the
 * next GET is answered with) when it comes back, by the worker itself
 * (cache_delete_begin(), cache_delete_end()); after the first,
 * cache_writer_forget_id() takes the id's queued stores out of the
 * table.  A store queued later checks the guards when it is queued,
 * under the same lock, so none fetched before the DELETE is ever seen;
 * the writer checks again in its own transaction.
 */
#include "config.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lmdb.h>
#include <xxhash.h>

#include "cache.h"
#include "cache_int.h"
#include "log.h"
#include "route.h"
#include "xmalloc.h"

#define CACHE_WRITER_BUCKETS	1024	/* a power of 2 */
/*
 * Woken, the writer gathers for this long first: a burst of misses is
 * answered before the writer takes the CPU (on a host where they share
 * one), and its wake-ups stay few under load.
 */
#define CACHE_WRITER_GATHER_NS	(2 * 1000 * 1000)

enum cache_op_kind { CO_PUT, CO_OWNER, CO_PURGE, CO_INVAL };

struct cache_op {
	enum cache_op_kind	 kind;
	struct cache_op		*next;		/* in the queue */
	struct cache_op		*chain;		/* in its table bucket */
	int			 shown;		/* in the table */
	int			 cancelled;	/* forgotten: not to be written */
	unsigned		 refs;		/* the queue's and readers' */
	uint64_t		 hash;
	/* What the op names: a key, a prefix or a response id. */
	char			*key;
	size_t			 klen;
	/* CO_PUT */
	int			 guarded;
	char			*id;		/* the guard's */
	time_t			 since;
	struct cache_entry	 e;
	/* CO_OWNER: the client's name in e.body */
	/* CO_PURGE */
	int			 guards;
};

struct cache_writer {
	pthread_t		 thread;
	pthread_mutex_t		 mtx;
	pthread_cond_t		 work;		/* the queue has something */
	pthread_cond_t		 idle;		/* and is empty again */
	struct cache_op		*head, **tail;
	int			 busy;		/* a batch being written */
	int			 flushing;	/* someone waits: no gathering */
	int			 stopping;
	struct cache_op		*table[CACHE_WRITER_BUCKETS];
};

static uint64_t
cache_op_hash(enum cache_op_kind kind, const void *key, size_t klen)
{
	return (XXH3_64bits_withSeed(key, klen, (uint64_t)kind));
}

static void
cache_op_unref(struct cache_op *op)
{
	if (__atomic_sub_fetch(&op->refs, 1, __ATOMIC_ACQ_REL) == 0)
		free(op);
}

/* An op with room for n bytes after it; its key copied. */
static struct cache_op *
cache_op_new(enum cache_op_kind kind, const void *key, size_t klen,
    size_t more)
{
	struct cache_op	*op;

	op = xcalloc(1, sizeof *op + klen + 1 + more);
	op->kind = kind;
	op->refs = 1;
	op->key = (char *)(op + 1);
	memcpy(op->key, key, klen);
	op->klen = klen;
	return (op);
}

static void
cache_table_add(struct cache_writer *w, struct cache_op *op)
{
	struct cache_op	**b;

	op->hash = cache_op_hash(op->kind, op->key, op->klen);
	b = &w->table[op->hash & (CACHE_WRITER_BUCKETS - 1)];
	/* The newest first: it is what a lookup must find. */
	op->chain = *b;
	*b = op;
	op->shown = 1;
	__atomic_add_fetch(&op->refs, 1, __ATOMIC_RELAXED);
}

static void
cache_table_remove(struct cache_writer *w, struct cache_op *op)
{
	struct cache_op	**p;

	if (!op->shown)
		return;
	for (p = &w->table[op->hash & (CACHE_WRITER_BUCKETS - 1)]; *p != NULL;
	    p = &(*p)->chain)
		if (*p == op) {
			*p = op->chain;
			break;
		}
	op->shown = 0;
	cache_op_unref(op);
}

/* What a purge of a response id takes: see cache_purge_id(). */
struct cache_id_match {
	const char	*id;
	size_t		 idlen;
	const char	*kinds;
};

/*
 * Take every shown store that match() picks out of the table, and out of
 * the queue: a purge or a DELETE forgets them (the writer would write
 * them before the purge runs, or, a DELETE refused meanwhile, for good).
 */
static void
cache_table_forget(struct cache_writer *w,
    int (*match)(const struct cache_op *, const void *), const void *arg)
{
	struct cache_op	**p, *op;
	size_t		  i;

	for (i = 0; i < CACHE_WRITER_BUCKETS; i++)
		for (p = &w->table[i]; (op = *p) != NULL; ) {
			if (op->kind == CO_PUT && match(op, arg)) {
				*p = op->chain;
				op->shown = 0;
				/* Unless the writer has it in hand already. */
				__atomic_store_n(&op->cancelled, 1,
				    __ATOMIC_RELAXED);
				cache_op_unref(op);
			} else
				p = &op->chain;
		}
}

static int
cache_match_prefix(const struct cache_op *op, const void *arg)
{
	const MDB_val	*prefix = arg;

	return (op->klen >= prefix->mv_size &&
	    memcmp(op->key, prefix->mv_data, prefix->mv_size) == 0);
}

/* Keys start "<tenant>\0<kind>\0<id>\0" (route_cache_key()). */
static int
cache_match_id(const struct cache_op *op, const void *arg)
{
	const struct cache_id_match	*m = arg;
	const char			*p, *end = op->key + op->klen;

	if ((p = memchr(op->key, '\0', op->klen)) == NULL ||
	    (size_t)(end - p) < 3 + m->idlen || p[1] == '\0' ||
	    strchr(m->kinds, p[1]) == NULL || p[2] != '\0')
		return (0);
	return (memcmp(p + 3, m->id, m->idlen) == 0 &&
	    (p + 3 + m->idlen == end || p[3 + m->idlen] == '\0'));
}

static void
cache_enqueue(struct cache_writer *w, struct cache_op *op)
{
	int	first = w->head == NULL;

	op->next = NULL;
	*w->tail = op;
	w->tail = &op->next;
	/* Once a batch: the writer gathers the rest without more wake-ups. */
	if (first)
		pthread_cond_signal(&w->work);
}

/* Run one op as the synchronous calls would. */
static void
cache_op_run(struct cache *c, struct cache_op *op)
{
	struct cache_guard	g;

	if (__atomic_load_n(&op->cancelled, __ATOMIC_RELAXED))
		return;
	switch (op->kind) {
	case CO_PUT:
		g.id = op->id;
		g.since = op->since;
		cache_put(c, op->key, op->klen, op->guarded ? &g : NULL,
		    op->e.status, op->e.etag, op->e.etag_len, op->e.hdrs,
		    op->e.hdrs_len, op->e.body, op->e.body_len,
		    op->e.stored_at);
		break;
	case CO_OWNER:
		cache_owner_put(c, op->key, op->klen, op->e.body);
		break;
	case CO_PURGE:
		cache_purge_id(c, op->key, op->guards);
		break;
	case CO_INVAL:
		cache_invalidate(c, op->key, op->klen);
		break;
	}
}

static void *
cache_writer_loop(void *arg)
{
	struct cache		*c = arg;
	struct cache_writer	*w = c->writer;
	struct cache_op		*batch, *op, *next;
	struct timespec		 ts;

	pthread_mutex_lock(&w->mtx);
	for (;;) {
		while (w->head == NULL && !w->stopping)
			pthread_cond_wait(&w->work, &w->mtx);
		if (w->head == NULL)
			break;
		if (!w->stopping && !w->flushing) {
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += CACHE_WRITER_GATHER_NS;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			while (!w->stopping && !w->flushing &&
			    pthread_cond_timedwait(&w->work, &w->mtx, &ts) == 0)
				;
		}
		batch = w->head;
		w->head = NULL;
		w->tail = &w->head;
		w->busy = 1;
		pthread_mutex_unlock(&w->mtx);

		for (op = batch; op != NULL; op = op->next)
			cache_op_run(c, op);
		cache_thread_end(c);

		/* Written: LMDB has them now, the table need not. */
		pthread_mutex_lock(&w->mtx);
		for (op = batch; op != NULL; op = next) {
			next = op->next;
			cache_table_remove(w, op);
			cache_op_unref(op);
		}
		w->busy = 0;
		if (w->head == NULL)
			pthread_cond_broadcast(&w->idle);
	}
	pthread_mutex_unlock(&w->mtx);
	return (NULL);
}

void
cache_writer_start(struct cache *c)
{
	struct cache_writer	*w;

	w = xcalloc(1, sizeof *w);
	w->tail = &w->head;
	pthread_mutex_init(&w->mtx, NULL);
	pthread_cond_init(&w->work, NULL);
	pthread_cond_init(&w->idle, NULL);
	c->writer = w;
	if (pthread_create(&w->thread, NULL, cache_writer_loop, c) != 0)
		fatalx("cache: cannot start the writer thread");
}

void
cache_writer_stop(struct cache *c)
{
	struct cache_writer	*w = c->writer;

	if (w == NULL)
		return;
	/* What is queued is written first. */
	pthread_mutex_lock(&w->mtx);
	w->stopping = 1;
	pthread_cond_signal(&w->work);
	pthread_mutex_unlock(&w->mtx);
	pthread_join(w->thread, NULL);
	pthread_mutex_destroy(&w->mtx);
	pthread_cond_destroy(&w->work);
	pthread_cond_destroy(&w->idle);
	free(w);
	c->writer = NULL;
}

void
cache_writer_flush(struct cache *c)
{
	struct cache_writer	*w = c->writer;

	pthread_mutex_lock(&w->mtx);
	w->flushing++;
	pthread_cond_signal(&w->work);
	while (w->head != NULL || w->busy)
		pthread_cond_wait(&w->idle, &w->mtx);
	w->flushing--;
	pthread_mutex_unlock(&w->mtx);
}

int
cache_put_later(struct cache *c, const void *key, size_t klen,
    const struct cache_guard *guard, int status, const char *etag,
    size_t etag_len, const char *hdrs, size_t hlen, const void *body,
    size_t blen, time_t now)
{
	struct cache_writer	*w = c->writer;
	struct cache_op		*op;
	MDB_txn			*txn;
	size_t			 idlen = guard != NULL ? strlen(guard->id) : 0;
	char			*p;
	int			 rc = 0;

	if (cache_put_need(c, klen, etag_len, hlen, blen) == 0)
		return (1);
	op = cache_op_new(CO_PUT, key, klen, idlen + 1 + etag_len + 1 +
	    hlen + 1 + blen);
	p = op->key + klen + 1;
	if (guard != NULL) {
		op->guarded = 1;
		op->id = p;
		memcpy(p, guard->id, idlen);
		p += idlen + 1;
		op->since = guard->since;
	}
	op->e.status = status;
	op->e.etag = memcpy(p, etag, etag_len);
	op->e.etag_len = etag_len;
	p += etag_len + 1;
	op->e.hdrs = memcpy(p, hdrs, hlen);
	op->e.hdrs_len = hlen;
	p += hlen + 1;
	op->e.body = memcpy(p, body, blen);
	op->e.body_len = blen;
	op->e.stored_at = now;

	pthread_mutex_lock(&w->mtx);
	/*
	 * A guard written before this lock was taken is seen here; one
	 * written after takes this store out of the table again
	 * (cache_writer_forget_id()).
	 */
	if (guard != NULL) {
		if ((txn = cache_read_begin(c)) == NULL)
			rc = -1;
		else {
			rc = cache_guard_blocks(c, txn, guard->id,
			    guard->since);
			mdb_txn_reset(txn);
		}
	}
	if (rc == 0) {
		cache_table_add(w, op);
		cache_enqueue(w, op);
	}
	pthread_mutex_unlock(&w->mtx);
	if (rc != 0) {
		free(op);
		return (rc == MDB_KEYEXIST ? 1 : -1);
	}
	return (0);
}

void
cache_owner_put_later(struct cache *c, const void *key, size_t klen,
    const char *name)
{
	struct cache_writer	*w = c->writer;
	struct cache_op		*op;
	size_t			 nlen = strlen(name);

	op = cache_op_new(CO_OWNER, key, klen, nlen + 1);
	op->e.body = memcpy(op->key + klen + 1, name, nlen + 1);
	op->e.body_len = nlen;
	pthread_mutex_lock(&w->mtx);
	cache_table_add(w, op);
	cache_enqueue(w, op);
	pthread_mutex_unlock(&w->mtx);
}

void
cache_purge_id_later(struct cache *c, const char *id, int guards)
{
	struct cache_writer	*w = c->writer;
	struct cache_op		*op;
	size_t			 idlen = strlen(id);
	struct cache_id_match	 m = { id, idlen,
	    guards ? ROUTE_KINDS_ALL : ROUTE_KINDS_ANSWERS };

	op = cache_op_new(CO_PURGE, id, idlen, 0);
	op->guards = guards;
	pthread_mutex_lock(&w->mtx);
	cache_table_forget(w, cache_match_id, &m);
	cache_enqueue(w, op);
	pthread_mutex_unlock(&w->mtx);
}

void
cache_invalidate_later(struct cache *c, const void *prefix, size_t plen)
{
	struct cache_writer	*w = c->writer;
	struct cache_op		*op;
	MDB_val			 m = { plen, (void *)(uintptr_t)prefix };

	op = cache_op_new(CO_INVAL, prefix, plen, 0);
	pthread_mutex_lock(&w->mtx);
	cache_table_forget(w, cache_match_prefix, &m);
	cache_enqueue(w, op);
	pthread_mutex_unlock(&w->mtx);
}

void
cache_writer_forget_id(struct cache *c, const char *id)
{
	struct cache_writer	*w = c->writer;
	struct cache_id_match	 m = { id, strlen(id), ROUTE_KINDS_ANSWERS };

	pthread_mutex_lock(&w->mtx);
	cache_table_forget(w, cache_match_id, &m);
	pthread_mutex_unlock(&w->mtx);
}

/* The newest shown op of kind under key, with a reference; or NULL. */
static struct cache_op *
cache_table_find(struct cache_writer *w, enum cache_op_kind kind,
    const void *key, size_t klen)
{
	struct cache_op	*op;
	uint64_t	 h = cache_op_hash(kind, key, klen);

	pthread_mutex_lock(&w->mtx);
	for (op = w->table[h & (CACHE_WRITER_BUCKETS - 1)]; op != NULL;
	    op = op->chain)
		if (op->hash == h && op->kind == kind && op->klen == klen &&
		    memcmp(op->key, key, klen) == 0) {
			__atomic_add_fetch(&op->refs, 1, __ATOMIC_RELAXED);
			break;
		}
	pthread_mutex_unlock(&w->mtx);
	return (op);
}

int
cache_writer_get(struct cache *c, const void *key, size_t klen, time_t now,
    cache_visit_fn fn, void *arg)
{
	struct cache_op	*op;

	if (c->writer == NULL ||
	    (op = cache_table_find(c->writer, CO_PUT, key, klen)) == NULL)
		return (0);
	if (c->ttl > 0 && (double)(now - op->e.stored_at) >= c->ttl) {
		cache_op_unref(op);
		return (0);
	}
	fn(&op->e, arg);
	cache_op_unref(op);
	return (1);
}

int
cache_writer_owner(struct cache *c, const void *key, size_t klen,
    char *name, size_t size)
{
	struct cache_op	*op;
	size_t		 n;

	if (c->writer == NULL ||
	    (op = cache_table_find(c->writer, CO_OWNER, key, klen)) == NULL)
		return (0);
	n = op->e.body_len < size ? op->e.body_len : size - 1;
	memcpy(name, op->e.body, n);
	name[n] = '\0';
	cache_op_unref(op);
	return (1);
}
