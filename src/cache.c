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
 *
 * A cache is disposable, so a damaged one must never serve a wrong body:
 * each value carries a checksum, checked on every read; a changed byte is
 * a miss, and the entry goes.  The "meta" database marks the record
 * format; a cache written in another is emptied of its entries.
 */
#include "config.h"

#include <sys/stat.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lmdb.h>
#include <xxhash.h>

#include "cache.h"
#include "log.h"

#define CACHE_MAGIC		0x32454352u	/* "RCE2" */
#define CACHE_FORMAT		2	/* the "format" record of "meta" */
#define CACHE_SYNC_SECONDS	1

/*
 * An entry's value: this header, then the ETag, the replay headers and
 * the body.  sum is XXH3-64 of every byte after it, header and payload
 * alike, seeded with the key's: a value or key changed on disk is never
 * served.  (Format 1, "RCE1", had no sum and began with its magic.)
 */
struct cache_rec {
	uint64_t	sum;
	uint32_t	magic;
	uint16_t	status;
	uint16_t	etag_len;
	uint32_t	hdrs_len;
	uint32_t	body_len;
	uint64_t	stored_at;
	uint64_t	seq;
};

struct cache {
	MDB_env		*env;
	MDB_dbi		 entries;
	MDB_dbi		 age;
	MDB_dbi		 owners;	/* key -> seq, name */
	MDB_dbi		 owner_age;	/* seq -> key, oldest first */
	MDB_dbi		 meta;		/* "format" -> CACHE_FORMAT */
	size_t		 max_size;
	size_t		 map_size;
	double		 ttl;
	struct cache_stats st;
	time_t		 damage_logged;	/* when a damaged entry was last logged */

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

/*
 * The checksum of the value v (of at least sizeof(rec.sum) bytes) stored
 * under key k: a key changed on disk must not find another's answer.
 */
static uint64_t
cache_rec_sum(const MDB_val *k, const MDB_val *v)
{
	return (XXH3_64bits_withSeed((const char *)v->mv_data +
	    sizeof(uint64_t), v->mv_size - sizeof(uint64_t),
	    XXH3_64bits(k->mv_data, k->mv_size)));
}

/* Parse v into rec; -1 unless it is whole and its checksum matches. */
static int
cache_rec_check(const MDB_val *k, const MDB_val *v, struct cache_rec *rec)
{
	if (cache_rec_parse(v, rec) == -1 || rec->sum != cache_rec_sum(k, v))
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

/*
 * Entries written in another record format are never read as ours: a
 * cache without this format's mark loses its entries, with one log line.
 * Owner records, whose format has not changed, are kept.
 */
static int
cache_format(struct cache *c, MDB_txn *txn, const char *dir)
{
	static const char	 name[] = "format";
	MDB_val			 k = { sizeof name - 1, (void *)name }, v;
	MDB_stat		 s;
	uint32_t		 fmt = CACHE_FORMAT, old = 1;
	int			 rc;

	if ((rc = mdb_get(txn, c->meta, &k, &v)) == 0) {
		old = 0;
		if (v.mv_size == sizeof old)
			memcpy(&old, v.mv_data, sizeof old);
	} else if (rc != MDB_NOTFOUND)
		return (rc);
	if (old == fmt)
		return (0);
	if ((rc = mdb_stat(txn, c->entries, &s)) != 0)
		return (rc);
	if (s.ms_entries > 0) {
		log_warnx("cache %s: written in record format %u, not %u; "
		    "dropping its %zu entries", dir, old, fmt, s.ms_entries);
		if ((rc = mdb_drop(txn, c->entries, 0)) != 0 ||
		    (rc = mdb_drop(txn, c->age, 0)) != 0)
			return (rc);
	}
	v.mv_size = sizeof fmt;
	v.mv_data = &fmt;
	return (mdb_put(txn, c->meta, &k, &v, 0));
}

static int
cache_env_open(struct cache *c, const char *dir, char **cause)
{
	MDB_txn	*txn = NULL;
	int	 rc;

	if ((rc = mdb_env_create(&c->env)) != 0 ||
	    (rc = mdb_env_set_maxdbs(c->env, 5)) != 0 ||
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
	    (rc = mdb_dbi_open(txn, "owners", MDB_CREATE, &c->owners)) != 0 ||
	    (rc = mdb_dbi_open(txn, "owner_age", MDB_CREATE | MDB_INTEGERKEY,
	    &c->owner_age)) != 0 ||
	    (rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &c->meta)) != 0 ||
	    (rc = cache_format(c, txn, dir)) != 0)
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

/* Remove the cache's files, to start afresh. */
static void
cache_remove(const char *dir)
{
	char	path[4096];

	snprintf(path, sizeof path, "%s/data.mdb", dir);
	unlink(path);
	snprintf(path, sizeof path, "%s/lock.mdb", dir);
	unlink(path);
}

struct cache *
cache_open(const char *dir, size_t max_size, double ttl, char **cause)
{
	struct cache	*c;
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
		cache_remove(dir);
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

/*
 * Delete the entry under key if its value is still damaged (another
 * thread may have rewritten it since), with its age record if that
 * still names this key: a damaged value's seq cannot be trusted.
 * Counted in errors; logged at most once a minute, at debug otherwise.
 */
static void
cache_drop_damaged(struct cache *c, const void *key, size_t klen)
{
	MDB_val			 k = { klen, (void *)key }, v, ak, av;
	MDB_txn			*txn;
	struct cache_rec	 rec;
	time_t			 now = time(NULL), then;
	int			 rc;

	CACHE_COUNT(c, errors);
	if ((rc = mdb_txn_begin(c->env, NULL, 0, &txn)) != 0)
		goto done;
	rc = mdb_get(txn, c->entries, &k, &v);
	if (rc == 0 && cache_rec_check(&k, &v, &rec) == -1) {
		if (cache_rec_parse(&v, &rec) == 0) {
			ak.mv_size = sizeof rec.seq;
			ak.mv_data = &rec.seq;
			if ((rc = mdb_get(txn, c->age, &ak, &av)) == 0 &&
			    av.mv_size == klen && memcmp(av.mv_data, key,
			    klen) == 0)
				rc = mdb_del(txn, c->age, &ak, NULL);
			if (rc == MDB_NOTFOUND)
				rc = 0;
		}
		if (rc == 0)
			rc = mdb_del(txn, c->entries, &k, NULL);
	} else if (rc == 0 || rc == MDB_NOTFOUND) {
		mdb_txn_abort(txn);	/* gone or rewritten meanwhile */
		rc = 0;
		goto done;
	}
	if (rc != 0)
		mdb_txn_abort(txn);
	else if ((rc = mdb_txn_commit(txn)) == 0) {
		pthread_mutex_lock(&c->mtx);
		c->dirty = 1;
		pthread_mutex_unlock(&c->mtx);
	}
done:
	then = __atomic_load_n(&c->damage_logged, __ATOMIC_RELAXED);
	if (now - then >= 60 && __atomic_compare_exchange_n(&c->damage_logged,
	    &then, now, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		log_warnx("cache: an entry failed its checksum and was "
		    "dropped%s%s (%llu cache errors so far)",
		    rc != 0 ? "; the delete failed: " : "",
		    rc != 0 ? mdb_strerror(rc) : "",
		    (unsigned long long)__atomic_load_n(&c->st.errors,
		    __ATOMIC_RELAXED));
	else
		log_debug("cache: an entry failed its checksum and was "
		    "dropped%s%s", rc != 0 ? "; the delete failed: " : "",
		    rc != 0 ? mdb_strerror(rc) : "");
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
	if (rc == 0 && cache_rec_check(&k, &v, &rec) == -1) {
		mdb_txn_reset(txn);
		cache_drop_damaged(c, key, klen);
		return (0);
	}
	if (rc == 0 && (c->ttl <= 0 ||
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
	    cache_db_used(txn, c->owner_age));
}

/* Every byte counts against max_size; owner records are never evicted
 * to make room for entries. */
static size_t
cache_used(struct cache *c, MDB_txn *txn)
{
	return (cache_db_used(txn, c->entries) + cache_db_used(txn, c->age) +
	    cache_owners_used(c, txn));
}

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

static int
cache_put_once(struct cache *c, const MDB_val *k,
    const struct cache_guard *guard, const struct cache_rec *tpl,
    const char *etag, const char *hdrs, const void *body, size_t need,
    size_t budget)
{
	MDB_txn			*txn;
	MDB_val			 key = *k, g, v, old, ak;
	struct cache_rec	 rec = *tpl, grec;
	char			*p;
	int			 rc;

	if ((rc = mdb_txn_begin(c->env, NULL, 0, &txn)) != 0)
		return (rc);
	/* Checked in the writing transaction: no write can slip between. */
	if (guard != NULL) {
		g.mv_size = guard->len;
		g.mv_data = (void *)guard->key;
		rc = mdb_get(txn, c->entries, &g, &v);
		if (rc == 0 && cache_rec_parse(&v, &grec) == 0 &&
		    (guard->ttl <= 0 || (double)((time_t)rec.stored_at -
		    (time_t)grec.stored_at) < guard->ttl))
			rc = MDB_KEYEXIST;
		else if (rc == 0)		/* spent: it goes */
			rc = cache_del_entry(c, txn, &g, &v);
		else if (rc == MDB_NOTFOUND)
			rc = 0;
		if (rc != 0) {
			mdb_txn_abort(txn);
			return (rc);
		}
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
		rec.sum = cache_rec_sum(&key, &v);
		memcpy(v.mv_data, &rec.sum, sizeof rec.sum);
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
cache_del_id(struct cache *c, MDB_txn *txn, MDB_cursor *cur,
    const void *arg, size_t idlen, int *n)
{
	static const char	 kinds[] = { 'r', 'i', 't' };
	const char		*id = arg;
	MDB_val			 k, v;
	char			*buf = NULL, *p;
	size_t			 tl, i;
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
		for (i = 0; i < sizeof kinds && rc == 0; i++) {
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

int
cache_purge_id(struct cache *c, const char *id)
{
	return (cache_delete(c, "purge", cache_del_id, id, strlen(id)));
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
 * no entry evicts one; past an eighth of max_size, the oldest go.
 */
static int
cache_owner_put_once(struct cache *c, MDB_val *key, const char *name)
{
	MDB_txn		*txn;
	MDB_cursor	*cur;
	MDB_val		 v, ak;
	uint64_t	 seq = 0;
	char		 buf[sizeof seq + 256];
	size_t		 nlen = strlen(name);
	int		 rc;

	if (nlen > 255)
		return (MDB_BAD_VALSIZE);
	if ((rc = mdb_txn_begin(c->env, NULL, 0, &txn)) != 0)
		return (rc);
	/* A rewrite drops the old age record. */
	if ((rc = mdb_get(txn, c->owners, key, &v)) == 0 &&
	    v.mv_size >= sizeof seq) {
		memcpy(&seq, v.mv_data, sizeof seq);
		ak.mv_size = sizeof seq;
		ak.mv_data = &seq;
		rc = mdb_del(txn, c->owner_age, &ak, NULL);
	}
	if (rc == MDB_NOTFOUND)
		rc = 0;
	seq = 0;
	if (rc == 0 && (rc = mdb_cursor_open(txn, c->owner_age, &cur)) == 0) {
		if (mdb_cursor_get(cur, &ak, &v, MDB_LAST) == 0 &&
		    ak.mv_size == sizeof seq)
			memcpy(&seq, ak.mv_data, sizeof seq);
		seq++;
		mdb_cursor_close(cur);
	}
	if (rc == 0) {
		memcpy(buf, &seq, sizeof seq);
		memcpy(buf + sizeof seq, name, nlen);
		v.mv_size = sizeof seq + nlen;
		v.mv_data = buf;
		rc = mdb_put(txn, c->owners, key, &v, 0);
	}
	if (rc == 0) {
		ak.mv_size = sizeof seq;
		ak.mv_data = &seq;
		rc = mdb_put(txn, c->owner_age, &ak, key, 0);
	}
	/* The oldest records go past their share of the budget. */
	if (rc == 0)
		rc = cache_evict_oldest(c, txn, c->owner_age, c->owners,
		    cache_owners_used, 0, c->max_size / 8);
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
	int	 rc;

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
	}
	mdb_txn_reset(txn);
	if (rc == MDB_NOTFOUND)
		return (0);
	return (rc == 0 ? 1 : -1);
}
