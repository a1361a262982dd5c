/*
 * cache.c - the LMDB store: lookup, store with eviction, invalidation.
 *
 * Layout: the "entries" database maps a cache key to a value that starts
 * with struct cache_rec; the "age" database maps a sequence number
 * (MDB_INTEGERKEY) to the key it was written under, so the first record
 * of "age" is always the oldest entry.  The byte budget is the pages both
 * databases use; the map itself is sized with headroom above max_size for
 * LMDB's free pages, and a full map (MDB_MAP_FULL) makes a write evict
 * more and retry, then give up: caching is best effort, serving is not.
 *
 * Transactions are short and never held across loop iterations.  Errors
 * inside a write transaction are sticky (c->rc): a chain of calls is
 * checked once, at the end.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lmdb.h>

#include "cache.h"
#include "log.h"

#define CACHE_MAGIC		0x31454352u	/* "RCE1" */
#define CACHE_SYNC_SECONDS	1

struct cache_rec {
	uint32_t	magic;
	uint16_t	status;
	uint16_t	etag_len;
	uint32_t	hdrs_len;
	uint32_t	body_len;
	uint64_t	stored_at;
	uint64_t	seq;
};

/*
 * An hour past the time it guards up to, a delete guard is spent: no
 * fetch still in flight began before it.
 */
#define CACHE_GUARD_SPENT	(60 * 60)
#define CACHE_GMAGIC		0x31445243u	/* "CRD1" */
#define CACHE_FLOOR_KEY		"\0floor"

/* A delete guard (the "guards" database, keyed by response id). */
struct cache_gval {
	uint32_t	magic;
	uint32_t	count;		/* DELETEs whose outcome is not known */
	uint32_t	window;		/* seconds they may take effect in */
	uint32_t	keep;		/* seconds its tombstone is served */
	int64_t		pending_at;	/* the last of them began; 0: none */
	int64_t		deleted_at;	/* the upstream said deleted; 0: no */
};

struct cache {
	MDB_env		*env;
	MDB_dbi		 entries;
	MDB_dbi		 age;
	MDB_dbi		 guards;	/* id -> struct cache_gval */
	MDB_dbi		 owners;	/* see "Owner records" below */
	MDB_dbi		 owner_index;
	MDB_dbi		 owner_clients;
	MDB_dbi		 issued;
	size_t		 max_size;
	size_t		 map_size;
	double		 ttl;
	struct cache_stats st;

	pthread_t	 syncer;
	pthread_mutex_t	 mtx;
	pthread_cond_t	 cond;
	int		 dirty;
	int		 stopping;
};

/*
 * Each thread that reads keeps a read transaction, and with it a slot in
 * the lock file's reader table: room for the most workers conf.c allows
 * (1024), the main thread, and a few besides.  LMDB's default is 126.
 */
#define CACHE_MAX_READERS	1152

/* Counters any thread may bump; cache_stats() reads them. */
#define CACHE_COUNT(c, f)	__atomic_add_fetch(&(c)->st.f, 1, __ATOMIC_RELAXED)

static int
cache_mkdirs(const char *dir)
{
	char	 path[4096], *p;

	if (strlen(dir) >= sizeof path) {
		errno = ENAMETOOLONG;
		return (-1);
	}
	strcpy(path, dir);
	for (p = path + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0700) == -1 && errno != EEXIST)
			return (-1);
		*p = '/';
	}
	if (mkdir(path, 0700) == -1 && errno != EEXIST)
		return (-1);
	return (0);
}

/* Syncs the map in the background, so no request ever waits for fsync. */
static void *
cache_sync_loop(void *arg)
{
	struct cache	*c = arg;
	struct timespec	 ts;
	int		 dirty, stop;

	pthread_mutex_lock(&c->mtx);
	for (;;) {
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += CACHE_SYNC_SECONDS;
		while (!c->stopping &&
		    pthread_cond_timedwait(&c->cond, &c->mtx, &ts) == 0)
			;
		dirty = c->dirty;
		c->dirty = 0;
		stop = c->stopping;
		pthread_mutex_unlock(&c->mtx);
		if (dirty)
			mdb_env_sync(c->env, 1);
		if (stop)
			return (NULL);
		pthread_mutex_lock(&c->mtx);
	}
}

static int	cache_owner_upgrade(struct cache *, MDB_txn *);

static int
cache_env_open(struct cache *c, const char *dir, char **cause)
{
	MDB_txn	*txn = NULL;
	int	 rc;

	if ((rc = mdb_env_create(&c->env)) != 0 ||
	    (rc = mdb_env_set_maxdbs(c->env, 8)) != 0 ||
	    (rc = mdb_env_set_maxreaders(c->env, CACHE_MAX_READERS)) != 0 ||
	    (rc = mdb_env_set_mapsize(c->env, c->map_size)) != 0)
		goto fail;
	rc = mdb_env_open(c->env, dir, MDB_NOSYNC | MDB_NOTLS, 0600);
	if (rc != 0)
		goto fail;
	/* Readers left by a crashed process would pin old pages forever. */
	mdb_reader_check(c->env, NULL);
	if ((rc = mdb_txn_begin(c->env, NULL, 0, &txn)) != 0 ||
	    (rc = mdb_dbi_open(txn, "entries", MDB_CREATE, &c->entries)) != 0 ||
	    (rc = mdb_dbi_open(txn, "age", MDB_CREATE | MDB_INTEGERKEY,
	    &c->age)) != 0 ||
	    (rc = mdb_dbi_open(txn, "guards", MDB_CREATE, &c->guards)) != 0 ||
	    (rc = mdb_dbi_open(txn, "owners", MDB_CREATE, &c->owners)) != 0 ||
	    (rc = mdb_dbi_open(txn, "owner_index", MDB_CREATE,
	    &c->owner_index)) != 0 ||
	    (rc = mdb_dbi_open(txn, "owner_clients", MDB_CREATE,
	    &c->owner_clients)) != 0 ||
	    (rc = mdb_dbi_open(txn, "issued", MDB_CREATE | MDB_INTEGERKEY,
	    &c->issued)) != 0 ||
	    (rc = cache_owner_upgrade(c, txn)) != 0)
		goto fail;
	if ((rc = mdb_txn_commit(txn)) != 0) {
		txn = NULL;
		goto fail;
	}
	return (0);
fail:
	if (txn != NULL)
		mdb_txn_abort(txn);
	if (c->env != NULL)
		mdb_env_close(c->env);
	c->env = NULL;
	if (asprintf(cause, "cache %s: %s", dir, mdb_strerror(rc)) == -1)
		fatalx("out of memory");
	return (rc);
}

struct cache *
cache_open(const char *dir, size_t max_size, double ttl, char **cause)
{
	struct cache	*c;
	char		 path[4096];
	long		 psz = sysconf(_SC_PAGESIZE);
	int		 rc;

	if (cache_mkdirs(dir) == -1) {
		if (asprintf(cause, "cache dir %s: %s", dir,
		    strerror(errno)) == -1)
			fatalx("out of memory");
		return (NULL);
	}
	if ((c = calloc(1, sizeof *c)) == NULL)
		fatalx("out of memory");
	c->max_size = max_size;
	c->ttl = ttl;
	/* Headroom for free pages and the pages of open snapshots. */
	c->map_size = max_size + max_size / 4 + 1024 * 1024;
	c->map_size = (c->map_size + (size_t)psz - 1) / (size_t)psz *
	    (size_t)psz;

	rc = cache_env_open(c, dir, cause);
	if (rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH ||
	    rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND) {
		/* A cache is disposable: start afresh rather than not at all. */
		log_warnx("%s; starting with an empty cache", *cause);
		free(*cause);
		*cause = NULL;
		snprintf(path, sizeof path, "%s/data.mdb", dir);
		unlink(path);
		snprintf(path, sizeof path, "%s/lock.mdb", dir);
		unlink(path);
		rc = cache_env_open(c, dir, cause);
	}
	if (rc != 0) {
		free(c);
		return (NULL);
	}
	pthread_mutex_init(&c->mtx, NULL);
	pthread_cond_init(&c->cond, NULL);
	if (pthread_create(&c->syncer, NULL, cache_sync_loop, c) != 0)
		fatalx("cannot start the cache sync thread");
	return (c);
}

void
cache_close(struct cache *c)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&c->mtx);
	c->stopping = 1;
	c->dirty = 1;
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->mtx);
	pthread_join(c->syncer, NULL);
	cache_thread_end(c);
	mdb_env_close(c->env);
	pthread_mutex_destroy(&c->mtx);
	pthread_cond_destroy(&c->cond);
	free(c);
}

/*
 * Each thread keeps one read transaction, reset between lookups and
 * renewed for the next (MDB_NOTLS lets it live on any thread).
 */
static __thread struct cache	*cache_tls_cache;
static __thread MDB_txn		*cache_tls_txn;

void
cache_thread_end(struct cache *c)
{
	if (cache_tls_cache != c || cache_tls_txn == NULL)
		return;
	mdb_txn_abort(cache_tls_txn);
	cache_tls_txn = NULL;
	cache_tls_cache = NULL;
}

/* Begin this thread's read transaction, or renew the one it has. */
static int
cache_read_try(struct cache *c)
{
	if (cache_tls_cache == c && cache_tls_txn != NULL)
		return (mdb_txn_renew(cache_tls_txn));
	cache_tls_cache = c;
	cache_tls_txn = NULL;
	return (mdb_txn_begin(c->env, NULL, MDB_RDONLY, &cache_tls_txn));
}

/* This thread's read transaction, begun (clearing stale readers if full). */
static MDB_txn *
cache_read_begin(struct cache *c)
{
	int	rc;

	if ((rc = cache_read_try(c)) == MDB_READERS_FULL) {
		mdb_reader_check(c->env, NULL);
		rc = cache_read_try(c);
	}
	if (rc != 0) {
		log_warnx("cache: lookup: %s", mdb_strerror(rc));
		CACHE_COUNT(c, errors);
		return (NULL);
	}
	return (cache_tls_txn);
}

static int
cache_rec_parse(const MDB_val *v, struct cache_rec *rec)
{
	if (v->mv_size < sizeof *rec)
		return (-1);
	memcpy(rec, v->mv_data, sizeof *rec);
	if (rec->magic != CACHE_MAGIC ||
	    (uint64_t)sizeof *rec + rec->etag_len + rec->hdrs_len +
	    rec->body_len != v->mv_size)
		return (-1);
	return (0);
}

int
cache_get(struct cache *c, const void *key, size_t klen, time_t now,
    cache_visit_fn fn, void *arg)
{
	MDB_val			 k = { klen, (void *)key }, v;
	MDB_txn			*txn;
	struct cache_rec	 rec;
	struct cache_entry	 e;
	const char		*p;
	int			 rc, hit = 0;

	if (klen > (size_t)mdb_env_get_maxkeysize(c->env))
		return (0);
	if ((txn = cache_read_begin(c)) == NULL)
		return (-1);
	rc = mdb_get(txn, c->entries, &k, &v);
	if (rc == 0 && cache_rec_parse(&v, &rec) == 0 &&
	    (c->ttl <= 0 ||
	    (double)(now - (time_t)rec.stored_at) < c->ttl)) {
		p = (const char *)v.mv_data + sizeof rec;
		e.status = rec.status;
		e.etag = p;
		e.etag_len = rec.etag_len;
		e.hdrs = p + rec.etag_len;
		e.hdrs_len = rec.hdrs_len;
		e.body = p + rec.etag_len + rec.hdrs_len;
		e.body_len = rec.body_len;
		e.stored_at = (time_t)rec.stored_at;
		fn(&e, arg);
		hit = 1;
	} else if (rc != 0 && rc != MDB_NOTFOUND) {
		log_warnx("cache: lookup: %s", mdb_strerror(rc));
		CACHE_COUNT(c, errors);
	}
	mdb_txn_reset(txn);
	return (hit);
}

/* Delete the entry under k (value v) and its age record. */
static int
cache_del_entry(struct cache *c, MDB_txn *txn, MDB_val *k, MDB_val *v)
{
	struct cache_rec	rec;
	MDB_val			ak;
	int			rc;

	if (cache_rec_parse(v, &rec) == 0) {
		ak.mv_size = sizeof rec.seq;
		ak.mv_data = &rec.seq;
		rc = mdb_del(txn, c->age, &ak, NULL);
		if (rc != 0 && rc != MDB_NOTFOUND)
			return (rc);
	}
	rc = mdb_del(txn, c->entries, k, NULL);
	return (rc == MDB_NOTFOUND ? 0 : rc);
}

static size_t
cache_db_used(MDB_txn *txn, MDB_dbi dbi)
{
	MDB_stat	s;

	if (mdb_stat(txn, dbi, &s) != 0)
		return (0);
	return ((s.ms_branch_pages + s.ms_leaf_pages + s.ms_overflow_pages) *
	    (size_t)s.ms_psize);
}

/* The pages the owner records and their age index use, in bytes. */
static size_t
cache_owners_used(struct cache *c, MDB_txn *txn)
{
	return (cache_db_used(txn, c->owners) +
	    cache_db_used(txn, c->owner_index) +
	    cache_db_used(txn, c->owner_clients));
}

/* Every byte counts against max_size; owner records are never evicted
 * to make room for entries. */
static size_t	cache_guards_used(struct cache *, MDB_txn *);

static size_t
cache_used(struct cache *c, MDB_txn *txn)
{
	return (cache_db_used(txn, c->entries) + cache_db_used(txn, c->age) +
	    cache_owners_used(c, txn) + cache_db_used(txn, c->issued) +
	    cache_guards_used(c, txn));
}

/*
 * FIFO eviction: delete the oldest records of data (by its age index)
 * while used() + need passes limit.
 */
/*
 * FIFO eviction: delete the oldest records of data (by its age index)
 * while used() + need passes limit.
 */
static int
cache_evict_oldest(struct cache *c, MDB_txn *txn, MDB_dbi age, MDB_dbi data,
    size_t (*used)(struct cache *, MDB_txn *), size_t need, size_t limit)
{
	MDB_cursor	*cur;
	MDB_val		 ak, key;
	int		 rc;

	if ((rc = mdb_cursor_open(txn, age, &cur)) != 0)
		return (rc);
	while (used(c, txn) + need > limit) {
		if ((rc = mdb_cursor_get(cur, &ak, &key, MDB_FIRST)) != 0)
			break;
		if ((rc = mdb_del(txn, data, &key, NULL)) != 0 &&
		    rc != MDB_NOTFOUND)
			break;
		if ((rc = mdb_cursor_del(cur, 0)) != 0)
			break;
		CACHE_COUNT(c, evictions);
	}
	mdb_cursor_close(cur);
	return (rc == MDB_NOTFOUND ? 0 : rc);
}

/* Evict oldest entries until need more bytes fit under the budget. */
static int
cache_evict(struct cache *c, MDB_txn *txn, size_t need, size_t budget)
{
	return (cache_evict_oldest(c, txn, c->age, c->entries, cache_used,
	    need, budget));
}

static int
cache_evict_commit(struct cache *c, size_t need, size_t budget)
{
	MDB_txn	*txn;
	int	 rc;

	if ((rc = mdb_txn_begin(c->env, NULL, 0, &txn)) != 0)
		return (rc);
	if ((rc = cache_evict(c, txn, need, budget)) != 0) {
		mdb_txn_abort(txn);
		return (rc);
	}
	return (mdb_txn_commit(txn));
}

static uint64_t
cache_next_seq(struct cache *c, MDB_txn *txn, int *rc)
{
	MDB_cursor	*cur;
	MDB_val		 k, v;
	uint64_t	 seq = 0;

	if ((*rc = mdb_cursor_open(txn, c->age, &cur)) != 0)
		return (0);
	if ((*rc = mdb_cursor_get(cur, &k, &v, MDB_LAST)) == 0 &&
	    k.mv_size == sizeof seq)
		memcpy(&seq, k.mv_data, sizeof seq);
	if (*rc == MDB_NOTFOUND)
		*rc = 0;
	mdb_cursor_close(cur);
	return (seq + 1);
}

static int	cache_guard_blocks(struct cache *, MDB_txn *, const char *,
		    time_t);

static int
cache_put_once(struct cache *c, const MDB_val *k,
    const struct cache_guard *guard, const struct cache_rec *tpl,
    const char *etag, const char *hdrs, const void *body, size_t need,
    size_t budget)
{
	MDB_txn			*txn;
	MDB_val			 key = *k, v, old, ak;
	struct cache_rec	 rec = *tpl;
	char			*p;
	int			 rc = 0;

	if ((rc = mdb_txn_begin(c->env, NULL, 0, &txn)) != 0)
		return (rc);
	/* Checked in the writing transaction: no write can slip between. */
	if (guard != NULL)
		rc = cache_guard_blocks(c, txn, guard->id, guard->since);
	if (rc != 0) {
		mdb_txn_abort(txn);
		return (rc);
	}
	/* A rewrite of a key replaces its entry and its age record. */
	rc = mdb_get(txn, c->entries, &key, &old);
	if (rc == 0)
		rc = cache_del_entry(c, txn, &key, &old);
	else if (rc == MDB_NOTFOUND)
		rc = 0;
	if (rc == 0)
		rc = cache_evict(c, txn, need, budget);
	if (rc == 0)
		rec.seq = cache_next_seq(c, txn, &rc);
	if (rc == 0) {
		v.mv_size = sizeof rec + rec.etag_len + rec.hdrs_len +
		    rec.body_len;
		v.mv_data = NULL;
		rc = mdb_put(txn, c->entries, &key, &v, MDB_RESERVE);
	}
	if (rc == 0) {
		p = v.mv_data;
		memcpy(p, &rec, sizeof rec);
		p += sizeof rec;
		memcpy(p, etag, rec.etag_len);
		p += rec.etag_len;
		memcpy(p, hdrs, rec.hdrs_len);
		p += rec.hdrs_len;
		memcpy(p, body, rec.body_len);
		ak.mv_size = sizeof rec.seq;
		ak.mv_data = &rec.seq;
		rc = mdb_put(txn, c->age, &ak, &key, 0);
	}
	if (rc != 0) {
		mdb_txn_abort(txn);
		return (rc);
	}
	return (mdb_txn_commit(txn));
}

int
cache_put(struct cache *c, const void *key, size_t klen,
    const struct cache_guard *guard, int status, const char *etag,
    size_t etag_len, const char *hdrs, size_t hlen, const void *body,
    size_t blen, time_t now)
{
	struct cache_rec	 rec;
	MDB_val			 k = { klen, (void *)key };
	size_t			 need, budget = c->max_size;
	int			 rc, tries;

	need = klen * 2 + sizeof rec + etag_len + hlen + blen + 64;
	if (klen > (size_t)mdb_env_get_maxkeysize(c->env) ||
	    need > c->max_size / 2 || etag_len > UINT16_MAX)
		return (1);
	memset(&rec, 0, sizeof rec);
	rec.magic = CACHE_MAGIC;
	rec.status = (uint16_t)status;
	rec.etag_len = (uint16_t)etag_len;
	rec.hdrs_len = (uint32_t)hlen;
	rec.body_len = (uint32_t)blen;
	rec.stored_at = (uint64_t)now;

	for (tries = 0; tries < 3; tries++) {
		rc = cache_put_once(c, &k, guard, &rec, etag, hdrs, body,
		    need, budget);
		if (rc != MDB_MAP_FULL && rc != MDB_TXN_FULL)
			break;
		/*
		 * Free pages were short.  Pages freed in a transaction are
		 * reused only by later ones: evict in one of its own, commit,
		 * then write again.
		 */
		budget /= 2;
		if (cache_evict_commit(c, need, budget) != 0)
			break;
	}
	if (rc == 0) {
		pthread_mutex_lock(&c->mtx);
		c->dirty = 1;
		pthread_mutex_unlock(&c->mtx);
		return (0);
	}
	if (rc == MDB_KEYEXIST)
		return (1);
	if (rc == MDB_MAP_FULL || rc == MDB_TXN_FULL) {
		CACHE_COUNT(c, map_full);
		log_warnx("cache: full even after eviction; answer not cached");
		return (1);
	}
	CACHE_COUNT(c, errors);
	log_warnx("cache: store: %s", mdb_strerror(rc));
	return (-1);
}

/*
 * Delete, in txn, every entry whose key starts with prefix, with its age
 * record; adds the count to *n.
 */
static int
cache_del_prefix(struct cache *c, MDB_txn *txn, MDB_cursor *cur,
    const void *prefix, size_t plen, int *n)
{
	MDB_val			 k = { plen, (void *)prefix }, v, ak;
	struct cache_rec	 rec;
	int			 rc;

	rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	while (rc == 0 && k.mv_size >= plen &&
	    memcmp(k.mv_data, prefix, plen) == 0) {
		if (cache_rec_parse(&v, &rec) == 0) {
			ak.mv_size = sizeof rec.seq;
			ak.mv_data = &rec.seq;
			rc = mdb_del(txn, c->age, &ak, NULL);
			if (rc != 0 && rc != MDB_NOTFOUND)
				return (rc);
		}
		if ((rc = mdb_cursor_del(cur, 0)) != 0)
			return (rc);
		(*n)++;
		/* After a delete, MDB_NEXT yields the record that followed. */
		rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
	}
	return (rc == MDB_NOTFOUND ? 0 : rc);
}

/*
 * Run fn(c, txn, cursor, arg, &n) in a write transaction over the
 * entries, committed if it deleted anything; returns the count or -1.
 */
static int
cache_delete(struct cache *c, const char *what,
    int (*fn)(struct cache *, MDB_txn *, MDB_cursor *, const void *, size_t,
    int *), const void *arg, size_t len)
{
	MDB_txn		*txn;
	MDB_cursor	*cur;
	int		 rc, n = 0;

	if ((rc = mdb_txn_begin(c->env, NULL, 0, &txn)) != 0)
		goto fail;
	if ((rc = mdb_cursor_open(txn, c->entries, &cur)) != 0) {
		mdb_txn_abort(txn);
		goto fail;
	}
	rc = fn(c, txn, cur, arg, len, &n);
	mdb_cursor_close(cur);
	if (rc != 0 || n == 0) {
		mdb_txn_abort(txn);
		if (rc != 0)
			goto fail;
		return (0);
	}
	if ((rc = mdb_txn_commit(txn)) != 0)
		goto fail;
	pthread_mutex_lock(&c->mtx);
	c->dirty = 1;
	pthread_mutex_unlock(&c->mtx);
	return (n);
fail:
	CACHE_COUNT(c, errors);
	log_warnx("cache: %s: %s", what, mdb_strerror(rc));
	return (-1);
}

int
cache_invalidate(struct cache *c, const void *prefix, size_t plen)
{
	return (cache_delete(c, "invalidate", cache_del_prefix, prefix, plen));
}

/*
 * Keys start "<tenant>\0<kind>\0<id>\0": for each tenant in turn, delete
 * the id's entries of every kind, then seek past that tenant's keys.
 */
static int
cache_del_id_kinds(struct cache *c, MDB_txn *txn, MDB_cursor *cur,
    const char *id, size_t idlen, const char *kinds, int *n)
{
	MDB_val			 k, v;
	char			*buf = NULL, *p;
	size_t			 tl, i, nk = strlen(kinds);
	int			 rc;

	rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
	while (rc == 0) {
		if ((p = memchr(k.mv_data, '\0', k.mv_size)) == NULL)
			tl = k.mv_size;
		else
			tl = (size_t)(p - (char *)k.mv_data);
		if ((p = realloc(buf, tl + 3 + idlen + 1)) == NULL)
			fatalx("out of memory");
		buf = p;
		memcpy(buf, k.mv_data, tl);
		for (i = 0; i < nk && rc == 0; i++) {
			buf[tl] = '\0';
			buf[tl + 1] = kinds[i];
			buf[tl + 2] = '\0';
			memcpy(buf + tl + 3, id, idlen);
			buf[tl + 3 + idlen] = '\0';
			rc = cache_del_prefix(c, txn, cur, buf, tl + 4 + idlen,
			    n);
		}
		if (rc != 0)
			break;
		/* "<tenant>\1" sorts after every "<tenant>\0..." key. */
		buf[tl] = '\1';
		k.mv_data = buf;
		k.mv_size = tl + 1;
		rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	}
	free(buf);
	return (rc == MDB_NOTFOUND ? 0 : rc);
}

static int
cache_del_id(struct cache *c, MDB_txn *txn, MDB_cursor *cur,
    const void *arg, size_t idlen, int *n)
{
	return (cache_del_id_kinds(c, txn, cur, arg, idlen, "ri", n));
}

static int
cache_del_id_guards(struct cache *c, MDB_txn *txn, MDB_cursor *cur,
    const void *arg, size_t idlen, int *n)
{
	MDB_val	k = { idlen, (void *)arg };
	int	rc;

	if ((rc = mdb_del(txn, c->guards, &k, NULL)) == 0)
		(*n)++;
	else if (rc != MDB_NOTFOUND)
		return (rc);
	return (cache_del_id_kinds(c, txn, cur, arg, idlen, "rit", n));
}

int
cache_purge_id(struct cache *c, const char *id, int guards)
{
	return (cache_delete(c, "purge", guards ? cache_del_id_guards :
	    cache_del_id, id, strlen(id)));
}

/* A guard's end: the last time it forbids a store for. */
static int64_t
cache_guard_until(const struct cache_gval *g)
{
	int64_t	p = g->pending_at != 0 ? g->pending_at + g->window : 0;

	return (p > g->deleted_at ? p : g->deleted_at);
}

/* 1 if g can no longer forbid anything nor answer as a tombstone. */
static int
cache_guard_spent(const struct cache_gval *g, time_t now)
{
	int64_t	keep = g->keep > CACHE_GUARD_SPENT ? g->keep : CACHE_GUARD_SPENT;

	return ((int64_t)now > cache_guard_until(g) + keep);
}

/* Read id's guard in txn: 0 and *g, MDB_NOTFOUND, or an LMDB error. */
static int
cache_guard_get(struct cache *c, MDB_txn *txn, const char *id,
    struct cache_gval *g)
{
	MDB_val	k = { strlen(id), (void *)id }, v;
	int	rc;

	if ((rc = mdb_get(txn, c->guards, &k, &v)) != 0)
		return (rc);
	if (v.mv_size != sizeof *g)
		return (MDB_CORRUPTED);
	memcpy(g, v.mv_data, sizeof *g);
	return (g->magic == CACHE_GMAGIC ? 0 : MDB_CORRUPTED);
}

/* The floor: every answer fetched at or before it is refused. */
static int64_t
cache_guard_floor(struct cache *c, MDB_txn *txn, int *rc)
{
	MDB_val		k = { sizeof CACHE_FLOOR_KEY - 1, CACHE_FLOOR_KEY }, v;
	int64_t		f = 0;

	if ((*rc = mdb_get(txn, c->guards, &k, &v)) == 0 &&
	    v.mv_size == sizeof f)
		memcpy(&f, v.mv_data, sizeof f);
	if (*rc == MDB_NOTFOUND)
		*rc = 0;
	return (f);
}

/*
 * In a writing transaction: MDB_KEYEXIST if id's guard (or the floor)
 * forbids storing an answer fetched at since, else 0 (or an error).  An
 * unreadable guard forbids.
 */
static int
cache_guard_blocks(struct cache *c, MDB_txn *txn, const char *id,
    time_t since)
{
	struct cache_gval	g;
	int64_t			floor;
	int			rc;

	floor = cache_guard_floor(c, txn, &rc);
	if (rc != 0)
		return (rc);
	if ((int64_t)since <= floor)
		return (MDB_KEYEXIST);
	rc = cache_guard_get(c, txn, id, &g);
	if (rc == MDB_NOTFOUND)
		return (0);
	if (rc != 0 || (int64_t)since <= cache_guard_until(&g))
		return (MDB_KEYEXIST);
	return (0);
}

/* The pages the guards use, in bytes; their share of max_size. */
static size_t
cache_guards_used(struct cache *c, MDB_txn *txn)
{
	return (cache_db_used(txn, c->guards));
}

static size_t
cache_guards_share(struct cache *c)
{
	return (c->max_size / 32 + 2 * (size_t)sysconf(_SC_PAGESIZE));
}

/*
 * Past their share, spent guards go; if that is not enough, every guard
 * goes and the floor rises to the last time any of them guarded: the
 * cache then stores nothing fetched before it, for every id.  Never a
 * stale answer, at worst a while of misses.
 */
static int
cache_guards_trim(struct cache *c, MDB_txn *txn, time_t now)
{
	MDB_cursor		*cur;
	MDB_val			 k, v;
	struct cache_gval	 g;
	int64_t			 floor, until;
	int			 rc, pass;

	floor = cache_guard_floor(c, txn, &rc);
	for (pass = 0; rc == 0 && pass < 2 &&
	    cache_guards_used(c, txn) > cache_guards_share(c); pass++) {
		if ((rc = mdb_cursor_open(txn, c->guards, &cur)) != 0)
			return (rc);
		for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
		    rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
			if (v.mv_size != sizeof g ||
			    *(const char *)k.mv_data == '\0')
				continue;
			memcpy(&g, v.mv_data, sizeof g);
			if (pass == 0 && !cache_guard_spent(&g, now))
				continue;
			until = cache_guard_until(&g);
			if (pass == 1 && until > floor)
				floor = until;
			/* After a delete, MDB_NEXT yields the record that
			 * followed. */
			if ((rc = mdb_cursor_del(cur, 0)) != 0)
				break;
		}
		mdb_cursor_close(cur);
		if (rc != MDB_NOTFOUND)
			return (rc);
		rc = 0;
		if (pass == 1) {
			log_warnx("cache: delete guards past their share: "
			    "nothing fetched before now is stored");
			k.mv_size = sizeof CACHE_FLOOR_KEY - 1;
			k.mv_data = CACHE_FLOOR_KEY;
			v.mv_size = sizeof floor;
			v.mv_data = &floor;
			rc = mdb_put(txn, c->guards, &k, &v, 0);
		}
	}
	return (rc);
}

/*
 * Change id's guard in one writing transaction: begin (deleted < 0) adds
 * a pending DELETE; end says deleted (1) or refused (0).
 */
static int
cache_guard_update(struct cache *c, const char *id, int deleted,
    double secs, time_t now)
{
	MDB_txn			*txn;
	MDB_val			 k = { strlen(id), (void *)id }, v;
	struct cache_gval	 g;
	int			 rc;

	if (k.mv_size == 0 ||
	    k.mv_size > (size_t)mdb_env_get_maxkeysize(c->env))
		return (-1);
	if ((rc = mdb_txn_begin(c->env, NULL, 0, &txn)) != 0)
		goto fail;
	rc = cache_guard_get(c, txn, id, &g);
	if (rc == MDB_NOTFOUND || rc == MDB_CORRUPTED) {
		if (deleted >= 0) {		/* nothing to end */
			mdb_txn_abort(txn);
			return (0);
		}
		memset(&g, 0, sizeof g);
		g.magic = CACHE_GMAGIC;
		rc = 0;
	}
	if (rc != 0)
		goto fail;
	if (deleted < 0) {
		g.count++;
		g.pending_at = now;
		if (secs > g.window)
			g.window = secs > UINT32_MAX ? UINT32_MAX :
			    (uint32_t)secs;
	} else {
		if (g.count > 0)
			g.count--;
		if (deleted) {
			g.deleted_at = now;
			if (secs > g.keep)
				g.keep = secs > UINT32_MAX ? UINT32_MAX :
				    (uint32_t)secs;
		}
		/* Every DELETE it counted has answered: it guards no more. */
		if (g.count == 0)
			g.pending_at = 0;
	}
	if (g.pending_at == 0 && g.deleted_at == 0)
		rc = mdb_del(txn, c->guards, &k, NULL);
	else {
		v.mv_size = sizeof g;
		v.mv_data = &g;
		rc = mdb_put(txn, c->guards, &k, &v, 0);
	}
	if (rc == 0 && deleted < 0)
		rc = cache_guards_trim(c, txn, now);
	if (rc != 0)
		goto fail;
	if ((rc = mdb_txn_commit(txn)) != 0) {
		txn = NULL;
		goto fail;
	}
	pthread_mutex_lock(&c->mtx);
	c->dirty = 1;
	pthread_mutex_unlock(&c->mtx);
	return (0);
fail:
	if (txn != NULL)
		mdb_txn_abort(txn);
	CACHE_COUNT(c, errors);
	log_warnx("cache: delete guard of %s: %s", id, mdb_strerror(rc));
	return (-1);
}

int
cache_delete_begin(struct cache *c, const char *id, double window,
    time_t now)
{
	return (cache_guard_update(c, id, -1, window, now));
}

int
cache_delete_end(struct cache *c, const char *id, int deleted, double keep,
    time_t now)
{
	return (cache_guard_update(c, id, deleted != 0, keep, now));
}

int
cache_deleted(struct cache *c, const char *id, time_t *at)
{
	MDB_txn			*txn;
	struct cache_gval	 g;
	int			 rc;

	if (strlen(id) == 0 ||
	    strlen(id) > (size_t)mdb_env_get_maxkeysize(c->env))
		return (0);
	if ((txn = cache_read_begin(c)) == NULL)
		return (0);
	rc = cache_guard_get(c, txn, id, &g);
	mdb_txn_reset(txn);
	if (rc != 0 || g.deleted_at == 0)
		return (0);
	*at = (time_t)g.deleted_at;
	return (1);
}

void
cache_stats(struct cache *c, struct cache_stats *out)
{
	MDB_txn		*txn;
	MDB_stat	 s;
	MDB_envinfo	 ei;

	memset(out, 0, sizeof *out);
	out->evictions = __atomic_load_n(&c->st.evictions, __ATOMIC_RELAXED);
	out->map_full = __atomic_load_n(&c->st.map_full, __ATOMIC_RELAXED);
	out->errors = __atomic_load_n(&c->st.errors, __ATOMIC_RELAXED);
	out->map_size = c->map_size;
	out->max_size = c->max_size;
	if (mdb_env_info(c->env, &ei) == 0 &&
	    mdb_env_stat(c->env, &s) == 0)
		out->map_used = (ei.me_last_pgno + 1) * (uint64_t)s.ms_psize;
	if (mdb_txn_begin(c->env, NULL, MDB_RDONLY, &txn) != 0)
		return;
	if (mdb_stat(txn, c->entries, &s) == 0)
		out->entries = s.ms_entries;
	out->bytes = cache_used(c, txn);
	mdb_txn_abort(txn);
}

/*
 * Owner records.  Kept apart from the entries: ttl never expires them and
 * no entry evicts one.  Past an eighth of max_size, the oldest record of
 * the client with the most goes: one client's creates never push out
 * another's records while it has fewer.  An evicted record's key goes
 * into the "issued" Bloom filter, so that a response this proxy created
 * never becomes one "created elsewhere" (see cache_owner_get()).
 *
 * owners:        key -> seq, client name
 * owner_index:   "<name>\0<seq, big-endian>" -> key, a client's oldest first
 * owner_clients: name -> its record count; "\0seq" -> the last seq
 * issued:        block number -> 64 bytes of the filter
 */
#define CACHE_SEQ_KEY		"\0seq"
#define CACHE_BLOCK		64		/* bytes of a filter block */
#define CACHE_BLOOM_K		6		/* bits set per key */

/*
 * The owner records' share of max_size: an eighth, plus the root pages
 * of their three databases, so that a small cache still keeps some.
 * (The filter of evicted ones, a 64th, is counted apart.)
 */
static size_t
cache_owners_share(struct cache *c)
{
	return (c->max_size / 8 + 3 * (size_t)sysconf(_SC_PAGESIZE));
}

/* Two 64-bit hashes of a key (FNV-1a, then a finalizer for the second). */
static void
cache_hash2(const void *key, size_t len, uint64_t *h1, uint64_t *h2)
{
	const unsigned char	*p = key;
	uint64_t		 h = 1469598103934665603ULL;
	size_t			 i;

	for (i = 0; i < len; i++) {
		h ^= p[i];
		h *= 1099511628211ULL;
	}
	*h1 = h;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	*h2 = h;
}

/*
 * The filter's size in blocks: fixed when it is made (a 64th of the
 * max_size of that day, at least 1 KiB), and kept under a block number
 * of its own, so that a new max_size never moves a key's bits.
 */
#define CACHE_BLOOM_SIZE_KEY	UINT32_MAX

static uint32_t
cache_bloom_blocks(struct cache *c, MDB_txn *txn, int add, int *rc)
{
	uint32_t	b = CACHE_BLOOM_SIZE_KEY, n;
	MDB_val		k = { sizeof b, &b }, v;
	size_t		want = c->max_size / 64 / CACHE_BLOCK;

	if ((*rc = mdb_get(txn, c->issued, &k, &v)) == 0 &&
	    v.mv_size == sizeof n) {
		memcpy(&n, v.mv_data, sizeof n);
		return (n);
	}
	n = want < 16 ? 16 : want >= UINT32_MAX ? UINT32_MAX - 1 :
	    (uint32_t)want;
	*rc = 0;
	if (add) {
		v.mv_size = sizeof n;
		v.mv_data = &n;
		*rc = mdb_put(txn, c->issued, &k, &v, 0);
	}
	return (n);
}

/*
 * Add key to the issued filter (add) or test it: 1 if every bit is set.
 * All of a key's bits are in one block, so a test reads 64 bytes.
 */
static int
cache_bloom(struct cache *c, MDB_txn *txn, const void *key, size_t klen,
    int add, int *rc)
{
	unsigned char	 blk[CACHE_BLOCK];
	uint64_t	 h1, h2;
	uint32_t	 b;
	MDB_val		 k = { sizeof b, &b }, v;
	int		 i, bit, all = 1;

	cache_hash2(key, klen, &h1, &h2);
	b = cache_bloom_blocks(c, txn, add, rc);
	if (*rc != 0)
		return (0);
	b = (uint32_t)(h1 % b);
	memset(blk, 0, sizeof blk);
	if ((*rc = mdb_get(txn, c->issued, &k, &v)) == 0 &&
	    v.mv_size == sizeof blk)
		memcpy(blk, v.mv_data, sizeof blk);
	if (*rc == MDB_NOTFOUND)
		*rc = 0;
	if (*rc != 0)
		return (0);
	for (i = 0; i < CACHE_BLOOM_K; i++) {
		bit = (int)((h2 >> (i * 9)) & (CACHE_BLOCK * 8 - 1));
		if (!(blk[bit / 8] & (1 << (bit % 8))))
			all = 0;
		blk[bit / 8] |= (unsigned char)(1 << (bit % 8));
	}
	if (add && !all) {
		v.mv_size = sizeof blk;
		v.mv_data = blk;
		*rc = mdb_put(txn, c->issued, &k, &v, 0);
	}
	return (all);
}

/* A client's record count (or the last seq, for CACHE_SEQ_KEY). */
static uint64_t
cache_client_get(struct cache *c, MDB_txn *txn, const char *name,
    size_t nlen, int *rc)
{
	MDB_val		k = { nlen, (void *)name }, v;
	uint64_t	n = 0;

	if ((*rc = mdb_get(txn, c->owner_clients, &k, &v)) == 0 &&
	    v.mv_size == sizeof n)
		memcpy(&n, v.mv_data, sizeof n);
	if (*rc == MDB_NOTFOUND)
		*rc = 0;
	return (n);
}

static int
cache_client_set(struct cache *c, MDB_txn *txn, const char *name,
    size_t nlen, uint64_t n)
{
	MDB_val	k = { nlen, (void *)name }, v = { sizeof n, &n };

	if (n == 0) {
		int rc = mdb_del(txn, c->owner_clients, &k, NULL);
		return (rc == MDB_NOTFOUND ? 0 : rc);
	}
	return (mdb_put(txn, c->owner_clients, &k, &v, 0));
}

/* "<name>\0<seq, big-endian>" into buf (nlen + 9 bytes); its length. */
static size_t
cache_index_key(char *buf, const char *name, size_t nlen, uint64_t seq)
{
	int	i;

	if (buf != name)
		memcpy(buf, name, nlen);
	buf[nlen] = '\0';
	for (i = 0; i < 8; i++)
		buf[nlen + 1 + i] = (char)(seq >> (56 - 8 * i));
	return (nlen + 9);
}

/* Remove the owner record under key (value v) and its index entry. */
static int
cache_owner_del(struct cache *c, MDB_txn *txn, MDB_val *key,
    const MDB_val *v)
{
	char		 ik[256 + 9];
	uint64_t	 seq, n;
	MDB_val		 k;
	size_t		 nlen;
	int		 rc;

	if (v->mv_size < sizeof seq || v->mv_size - sizeof seq > 255)
		return (mdb_del(txn, c->owners, key, NULL));
	memcpy(&seq, v->mv_data, sizeof seq);
	nlen = v->mv_size - sizeof seq;
	memcpy(ik, (const char *)v->mv_data + sizeof seq, nlen);
	k.mv_size = cache_index_key(ik, ik, nlen, seq);
	k.mv_data = ik;
	if ((rc = mdb_del(txn, c->owner_index, &k, NULL)) != 0 &&
	    rc != MDB_NOTFOUND)
		return (rc);
	n = cache_client_get(c, txn, ik, nlen, &rc);
	if (rc == 0 && n > 0)
		rc = cache_client_set(c, txn, ik, nlen, n - 1);
	if (rc == 0)
		rc = mdb_del(txn, c->owners, key, NULL);
	return (rc);
}

/*
 * Evict the oldest record of the client with the most, until the owner
 * records fit their share; each evicted key goes into the filter.
 */
static int
cache_owner_evict(struct cache *c, MDB_txn *txn)
{
	MDB_cursor	*cur;
	MDB_val		 k, v, ok, ov;
	char		 name[256 + 9], kbuf[512];
	size_t		 nlen = 0;
	uint64_t	 n, most;
	MDB_cursor_op	 op;
	int		 rc = 0;

	while (cache_owners_used(c, txn) > cache_owners_share(c)) {
		/* The client with the most records (few clients: a scan). */
		if ((rc = mdb_cursor_open(txn, c->owner_clients, &cur)) != 0)
			return (rc);
		most = 0;
		for (op = MDB_FIRST; (rc = mdb_cursor_get(cur, &k, &v, op)) == 0;
		    op = MDB_NEXT) {
			if (v.mv_size != sizeof n || k.mv_size > 255 ||
			    (k.mv_size > 0 && *(char *)k.mv_data == '\0'))
				continue;
			memcpy(&n, v.mv_data, sizeof n);
			if (n > most) {
				most = n;
				memcpy(name, k.mv_data, k.mv_size);
				nlen = k.mv_size + 1;
			}
		}
		mdb_cursor_close(cur);
		if (rc != MDB_NOTFOUND)
			return (rc);
		if (most == 0)
			return (0);
		nlen--;
		/* Its oldest record. */
		if ((rc = mdb_cursor_open(txn, c->owner_index, &cur)) != 0)
			return (rc);
		k.mv_size = cache_index_key(name, name, nlen, 0);
		k.mv_data = name;
		rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
		mdb_cursor_close(cur);
		if (rc != 0 || k.mv_size != nlen + 9 ||
		    memcmp(k.mv_data, name, nlen) != 0 || v.mv_size >
		    sizeof kbuf) {
			/* A count with no records: the count goes. */
			if (rc != 0 && rc != MDB_NOTFOUND)
				return (rc);
			if ((rc = cache_client_set(c, txn, name, nlen, 0)) != 0)
				return (rc);
			continue;
		}
		memcpy(kbuf, v.mv_data, v.mv_size);
		ok.mv_size = v.mv_size;
		ok.mv_data = kbuf;
		if ((rc = mdb_get(txn, c->owners, &ok, &ov)) == 0)
			rc = cache_owner_del(c, txn, &ok, &ov);
		else if (rc == MDB_NOTFOUND) {
			rc = mdb_del(txn, c->owner_index, &k, NULL);
			if (rc == 0)
				rc = cache_client_set(c, txn, name, nlen,
				    most - 1);
		}
		if (rc == 0)
			cache_bloom(c, txn, kbuf, ok.mv_size, 1, &rc);
		if (rc != 0)
			return (rc);
		CACHE_COUNT(c, evictions);
	}
	return (rc);
}

static int
cache_owner_put_once(struct cache *c, MDB_val *key, const char *name)
{
	MDB_txn		*txn;
	MDB_val		 v, ik;
	uint64_t	 seq, n;
	char		 buf[sizeof seq + 256], ibuf[256 + 9];
	size_t		 nlen = strlen(name);
	int		 rc;

	if (nlen == 0 || nlen > 255)
		return (MDB_BAD_VALSIZE);
	if ((rc = mdb_txn_begin(c->env, NULL, 0, &txn)) != 0)
		return (rc);
	/* A rewrite drops the old record first. */
	if ((rc = mdb_get(txn, c->owners, key, &v)) == 0)
		rc = cache_owner_del(c, txn, key, &v);
	if (rc == MDB_NOTFOUND)
		rc = 0;
	seq = 0;
	if (rc == 0)
		seq = cache_client_get(c, txn, CACHE_SEQ_KEY,
		    sizeof CACHE_SEQ_KEY - 1, &rc) + 1;
	if (rc == 0)
		rc = cache_client_set(c, txn, CACHE_SEQ_KEY,
		    sizeof CACHE_SEQ_KEY - 1, seq);
	if (rc == 0) {
		memcpy(buf, &seq, sizeof seq);
		memcpy(buf + sizeof seq, name, nlen);
		v.mv_size = sizeof seq + nlen;
		v.mv_data = buf;
		rc = mdb_put(txn, c->owners, key, &v, 0);
	}
	if (rc == 0) {
		ik.mv_size = cache_index_key(ibuf, name, nlen, seq);
		ik.mv_data = ibuf;
		rc = mdb_put(txn, c->owner_index, &ik, key, 0);
	}
	if (rc == 0)
		n = cache_client_get(c, txn, name, nlen, &rc);
	if (rc == 0)
		rc = cache_client_set(c, txn, name, nlen, n + 1);
	/* Past their share of the budget, the largest client's oldest go. */
	if (rc == 0)
		rc = cache_owner_evict(c, txn);
	if (rc != 0) {
		mdb_txn_abort(txn);
		return (rc);
	}
	return (mdb_txn_commit(txn));
}

int
cache_owner_put(struct cache *c, const void *key, size_t klen,
    const char *name)
{
	MDB_val	k = { klen, (void *)key };
	int	rc;

	if (klen > (size_t)mdb_env_get_maxkeysize(c->env))
		return (-1);
	rc = cache_owner_put_once(c, &k, name);
	if (rc == MDB_MAP_FULL || rc == MDB_TXN_FULL) {
		/* Entries make room for it. */
		if (cache_evict_commit(c, 4096, c->max_size / 2) == 0)
			rc = cache_owner_put_once(c, &k, name);
	}
	if (rc != 0) {
		CACHE_COUNT(c, errors);
		log_warnx("cache: owner record: %s", mdb_strerror(rc));
		return (-1);
	}
	pthread_mutex_lock(&c->mtx);
	c->dirty = 1;
	pthread_mutex_unlock(&c->mtx);
	return (0);
}

int
cache_owner_get(struct cache *c, const void *key, size_t klen, char *name,
    size_t size)
{
	MDB_val	 k = { klen, (void *)key }, v;
	MDB_txn	*txn;
	size_t	 n;
	int	 rc, brc, lost = 0;

	if (klen > (size_t)mdb_env_get_maxkeysize(c->env) || size == 0)
		return (-1);
	if ((txn = cache_read_begin(c)) == NULL)
		return (-1);
	rc = mdb_get(txn, c->owners, &k, &v);
	if (rc == 0 && v.mv_size >= sizeof(uint64_t)) {
		n = v.mv_size - sizeof(uint64_t);
		if (n >= size)
			n = size - 1;
		memcpy(name, (const char *)v.mv_data + sizeof(uint64_t), n);
		name[n] = '\0';
	} else if (rc == MDB_NOTFOUND) {
		lost = cache_bloom(c, txn, key, klen, 0, &brc);
		if (brc != 0)
			rc = brc;
	}
	mdb_txn_reset(txn);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return (-1);
	if (lost)
		return (CACHE_OWNER_LOST);
	return (rc == 0 ? 1 : 0);
}

/*
 * A cache written before owner records had a per-client index kept them
 * in "owner_age" (seq -> key): index them, count them, and drop it, so
 * no record is lost (a lost one would make its id "created elsewhere").
 */
static int
cache_owner_upgrade(struct cache *c, MDB_txn *txn)
{
	MDB_dbi		 old;
	MDB_cursor	*cur;
	MDB_val		 k, v, ik;
	char		 ibuf[256 + 9];
	uint64_t	 seq, n, last = 0;
	size_t		 nlen;
	int		 rc;

	if ((rc = mdb_dbi_open(txn, "owner_age", MDB_INTEGERKEY, &old)) ==
	    MDB_NOTFOUND)
		return (0);
	if (rc != 0)
		return (rc);
	/* Made afresh from the records: an old process may have come back. */
	last = cache_client_get(c, txn, CACHE_SEQ_KEY,
	    sizeof CACHE_SEQ_KEY - 1, &rc);
	if (rc != 0 || (rc = mdb_drop(txn, c->owner_index, 0)) != 0 ||
	    (rc = mdb_drop(txn, c->owner_clients, 0)) != 0)
		return (rc);
	if ((rc = mdb_cursor_open(txn, c->owners, &cur)) != 0)
		return (rc);
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	    rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (v.mv_size <= sizeof seq || v.mv_size - sizeof seq > 255)
			continue;
		memcpy(&seq, v.mv_data, sizeof seq);
		nlen = v.mv_size - sizeof seq;
		memcpy(ibuf, (const char *)v.mv_data + sizeof seq, nlen);
		if (seq > last)
			last = seq;
		n = cache_client_get(c, txn, ibuf, nlen, &rc);
		if (rc == 0)
			rc = cache_client_set(c, txn, ibuf, nlen, n + 1);
		ik.mv_size = cache_index_key(ibuf, ibuf, nlen, seq);
		ik.mv_data = ibuf;
		if (rc == 0)
			rc = mdb_put(txn, c->owner_index, &ik, &k, 0);
		if (rc != 0)
			break;
	}
	mdb_cursor_close(cur);
	if (rc != MDB_NOTFOUND)
		return (rc);
	if ((rc = cache_client_set(c, txn, CACHE_SEQ_KEY,
	    sizeof CACHE_SEQ_KEY - 1, last)) != 0)
		return (rc);
	log_info("cache: owner records indexed per client");
	return (mdb_drop(txn, old, 1));
}
