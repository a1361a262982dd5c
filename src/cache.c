/*
 * cache.c - the LMDB store's environment: open and close, the record
 * format, lookup.
 *
 * Layout: the "entries" database maps a cache key to a value that starts
 * with struct cache_rec; "tenant_age" maps "<tenant>\0<seq>" to the key it
 * was written under, so a tenant's oldest entry is the first under its
 * name, and "tenants" counts each tenant's bytes: eviction takes the
 * oldest entries of the tenant holding the most.  Apart from them: delete
 * guards ("guards"), owner records ("owners", "owner_index",
 * "owner_clients", "issued") and the format mark ("meta").  The byte
 * budget is the pages of them all; the map itself is sized with headroom
 * above max_size for LMDB's free pages, and a full map (MDB_MAP_FULL)
 * makes a write evict more and retry, then give up: caching is best
 * effort, serving is not.
 *
 * Transactions are short and never held across loop iterations.  Errors
 * inside a write transaction are sticky (c->rc): a chain of calls is
 * checked once, at the end.
 *
 * A cache is disposable, so a damaged one must never crash the proxy nor
 * serve a wrong body.  At start-up a forked child reads the whole file
 * before this process maps it (cache_check.c): a file shorter than its
 * meta says, a page LMDB cannot read, or one that kills the reader makes
 * the cache start empty.  Each value carries a checksum, checked on every
 * read of an entry this process did not write (see struct cache_rec): a
 * changed byte is a miss, and the entry goes.  The "meta"
 * database marks the record format; a cache written in another is
 * emptied of its entries.
 *
 * The rest of the store lies beside this file, behind cache_int.h:
 * cache_check.c and cache_walk.c (the start-up check), cache_evict.c
 * (the age index, eviction), cache_store.c (store, invalidate, purge),
 * cache_guard.c (delete guards) and cache_owner.c (owner records).
 */
#include "config.h"

#include <sys/random.h>
#include <sys/stat.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>
#include <xxhash.h>

#include "cache.h"
#include "cache_int.h"
#include "log.h"
#include "xmalloc.h"

#define CACHE_SYNC_SECONDS	1

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

int
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

uint64_t
cache_rec_sum(const MDB_val *k, const MDB_val *v)
{
	return (XXH3_64bits_withSeed((const char *)v->mv_data +
	    sizeof(uint64_t), v->mv_size - sizeof(uint64_t),
	    XXH3_64bits(k->mv_data, k->mv_size)));
}

int
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
 * Before format 3, "age" was one index of every tenant's entries (seq ->
 * key): it goes, and the entries with it (see cache_format()).
 */
static int
cache_drop_old_age(MDB_txn *txn)
{
	MDB_dbi	old;
	int	rc;

	if ((rc = mdb_dbi_open(txn, "age", MDB_INTEGERKEY, &old)) ==
	    MDB_NOTFOUND)
		return (0);
	return (rc != 0 ? rc : mdb_drop(txn, old, 1));
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
		    (rc = mdb_drop(txn, c->age, 0)) != 0 ||
		    (rc = mdb_drop(txn, c->tenants, 0)) != 0)
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
	    (rc = mdb_env_set_maxdbs(c->env, 10)) != 0 ||
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
	    (rc = cache_drop_old_age(txn)) != 0 ||
	    (rc = mdb_dbi_open(txn, "tenant_age", MDB_CREATE, &c->age)) != 0 ||
	    (rc = mdb_dbi_open(txn, "tenants", MDB_CREATE, &c->tenants)) != 0 ||
	    (rc = mdb_dbi_open(txn, "guards", MDB_CREATE, &c->guards)) != 0 ||
	    (rc = mdb_dbi_open(txn, "owners", MDB_CREATE, &c->owners)) != 0 ||
	    (rc = mdb_dbi_open(txn, "owner_index", MDB_CREATE,
	    &c->owner_index)) != 0 ||
	    (rc = mdb_dbi_open(txn, "owner_clients", MDB_CREATE,
	    &c->owner_clients)) != 0 ||
	    (rc = mdb_dbi_open(txn, "issued", MDB_CREATE | MDB_INTEGERKEY,
	    &c->issued)) != 0 ||
	    (rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &c->meta)) != 0 ||
	    (rc = cache_format(c, txn, dir)) != 0 ||
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
	xasprintf(cause, "cache %s: %s", dir, mdb_strerror(rc));
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
	char		*why;
	long		 psz = sysconf(_SC_PAGESIZE);
	int		 rc;

	if (cache_mkdirs(dir) == -1) {
		xasprintf(cause, "cache dir %s: %s", dir, strerror(errno));
		return (NULL);
	}
	c = xcalloc(1, sizeof *c);
	/* Only this open's writes may skip their checksum: a fresh epoch. */
	if (getrandom(&c->epoch, sizeof c->epoch, 0) != sizeof c->epoch)
		c->epoch = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^
		    (uint64_t)(uintptr_t)c;
	c->max_size = max_size;
	c->ttl = ttl;
	/* Headroom for free pages and the pages of open snapshots. */
	c->map_size = max_size + max_size / 4 + 1024 * 1024;
	c->map_size = (c->map_size + (size_t)psz - 1) / (size_t)psz *
	    (size_t)psz;

	/* A cache is disposable: start afresh rather than not at all. */
	if (cache_check(dir, c->map_size, &why) == -1) {
		log_warnx("cache %s: %s; starting with an empty cache", dir,
		    why);
		free(why);
		cache_remove(dir);
	}
	rc = cache_env_open(c, dir, cause);
	if (rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH ||
	    rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND) {
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
	cache_writer_start(c);
	return (c);
}

void
cache_close(struct cache *c)
{
	if (c == NULL)
		return;
	cache_writer_stop(c);
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

MDB_txn *
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

uint64_t
cache_count_get(MDB_txn *txn, MDB_dbi dbi, const void *key, size_t klen,
    int *rc)
{
	MDB_val		k = { klen, (void *)key }, v;
	uint64_t	n = 0;

	if ((*rc = mdb_get(txn, dbi, &k, &v)) == 0 && v.mv_size == sizeof n)
		memcpy(&n, v.mv_data, sizeof n);
	if (*rc == MDB_NOTFOUND)
		*rc = 0;
	return (n);
}

int
cache_count_set(MDB_txn *txn, MDB_dbi dbi, const void *key, size_t klen,
    uint64_t n)
{
	MDB_val	k = { klen, (void *)key }, v = { sizeof n, &n };
	int	rc;

	if (n == 0) {
		rc = mdb_del(txn, dbi, &k, NULL);
		return (rc == MDB_NOTFOUND ? 0 : rc);
	}
	return (mdb_put(txn, dbi, &k, &v, 0));
}

size_t
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

/*
 * Delete the entry under key if its value is still damaged (another
 * thread may have rewritten it since), with its age record if that
 * still names this key: a damaged value's seq cannot be trusted.
 * Counted in errors; logged at most once a minute, at debug otherwise.
 */
static void
cache_drop_damaged(struct cache *c, const void *key, size_t klen)
{
	MDB_val			 k = { klen, (void *)key }, v;
	MDB_txn			*txn;
	struct cache_rec	 rec;
	time_t			 now = time(NULL), then;
	int			 rc;

	CACHE_COUNT(c, errors);
	if ((rc = mdb_txn_begin(c->env, NULL, 0, &txn)) != 0)
		goto done;
	rc = mdb_get(txn, c->entries, &k, &v);
	if (rc == 0 && cache_rec_check(&k, &v, &rec) == -1) {
		rc = cache_index_del(c, txn, &k, &v);
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
	int			 rc, hit = 0, again = 0;

	if (klen > (size_t)mdb_env_get_maxkeysize(c->env))
		return (0);
again:
	if ((txn = cache_read_begin(c)) == NULL)
		return (-1);
	rc = mdb_get(txn, c->entries, &k, &v);
	if (rc == 0 && (cache_rec_parse(&v, &rec) == -1 ||
	    (rec.epoch != c->epoch && rec.sum != cache_rec_sum(&k, &v)))) {
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
	if (rc != MDB_NOTFOUND || again)
		return (hit);
	/*
	 * Queued, not yet written?  An entry leaves the writer's table only
	 * once committed: missed there, it is in LMDB by now.
	 */
	if (cache_writer_get(c, key, klen, now, fn, arg))
		return (1);
	again = 1;
	goto again;
}

int
cache_clear(struct cache *c)
{
	MDB_txn	*txn;
	int	 rc;

	/* What is queued would land after: it goes first. */
	if (c->writer != NULL)
		cache_writer_flush(c);
	if ((rc = mdb_txn_begin(c->env, NULL, 0, &txn)) != 0)
		goto fail;
	if ((rc = mdb_drop(txn, c->entries, 0)) != 0 ||
	    (rc = mdb_drop(txn, c->age, 0)) != 0 ||
	    (rc = mdb_drop(txn, c->tenants, 0)) != 0) {
		mdb_txn_abort(txn);
		goto fail;
	}
	if ((rc = mdb_txn_commit(txn)) != 0)
		goto fail;
	return (0);
fail:
	CACHE_COUNT(c, errors);
	log_warnx("cache: cannot empty it: %s", mdb_strerror(rc));
	return (-1);
}

int
cache_meta_get(struct cache *c, const char *name, char *buf, size_t size)
{
	MDB_txn	*txn;
	MDB_val	 k = { strlen(name), (void *)name }, v;
	int	 rc;

	if (mdb_txn_begin(c->env, NULL, MDB_RDONLY, &txn) != 0)
		return (-1);
	rc = mdb_get(txn, c->meta, &k, &v);
	if (rc == 0 && v.mv_size < size) {
		memcpy(buf, v.mv_data, v.mv_size);
		buf[v.mv_size] = '\0';
	}
	mdb_txn_abort(txn);
	return (rc == 0 && v.mv_size < size ? 1 : rc == MDB_NOTFOUND ? 0 : -1);
}

int
cache_meta_set(struct cache *c, const char *name, const char *value)
{
	MDB_txn	*txn;
	MDB_val	 k = { strlen(name), (void *)name };
	MDB_val	 v = { strlen(value), (void *)value };
	int	 rc;

	if ((rc = mdb_txn_begin(c->env, NULL, 0, &txn)) != 0)
		return (-1);
	if ((rc = mdb_put(txn, c->meta, &k, &v, 0)) != 0) {
		mdb_txn_abort(txn);
		return (-1);
	}
	return (mdb_txn_commit(txn) == 0 ? 0 : -1);
}

void
cache_stats(struct cache *c, struct cache_stats *out)
{
	MDB_txn		*txn;
	MDB_stat	 s;
	MDB_envinfo	 ei;

	/* What was asked for before counts: the writer's queue goes first. */
	if (c->writer != NULL)
		cache_writer_flush(c);
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
