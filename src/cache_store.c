/*
 * cache_store.c - writing entries: store (with eviction), invalidate,
 * purge a response id.
 *
 * A store runs in one write transaction: the delete guard check, the
 * eviction that makes room, the record and its age index.  A full map
 * makes it evict more in a transaction of its own and try again.
 */
#include "config.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lmdb.h>

#include "cache.h"
#include "cache_int.h"
#include "log.h"
#include "route.h"
#include "xmalloc.h"

static int
cache_put_once(struct cache *c, const MDB_val *k,
    const struct cache_guard *guard, const struct cache_rec *tpl,
    const char *etag, const char *hdrs, const void *body, size_t need,
    size_t budget)
{
	MDB_txn			*txn;
	MDB_val			 key = *k, v, old;
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
		rec.sum = cache_rec_sum(&key, &v);
		memcpy(v.mv_data, &rec.sum, sizeof rec.sum);
		rc = cache_index_add(c, txn, &key, v.mv_size, rec.seq);
	}
	if (rc != 0) {
		mdb_txn_abort(txn);
		return (rc);
	}
	return (mdb_txn_commit(txn));
}

size_t
cache_put_need(struct cache *c, size_t klen, size_t etag_len, size_t hlen,
    size_t blen)
{
	size_t	need;

	need = klen * 2 + sizeof(struct cache_rec) + etag_len + hlen + blen +
	    64;
	if (klen > (size_t)mdb_env_get_maxkeysize(c->env) ||
	    need > c->max_size / 2 || etag_len > UINT16_MAX)
		return (0);
	return (need);
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

	if ((need = cache_put_need(c, klen, etag_len, hlen, blen)) == 0)
		return (1);
	memset(&rec, 0, sizeof rec);
	rec.magic = CACHE_MAGIC;
	rec.epoch = c->epoch;
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
	MDB_val			 k = { plen, (void *)prefix }, v, kc;
	char			 kbuf[512];
	int			 rc;

	rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	while (rc == 0 && k.mv_size >= plen &&
	    memcmp(k.mv_data, prefix, plen) == 0) {
		/* What LMDB lends lasts until the next write: copied. */
		kc.mv_size = k.mv_size < sizeof kbuf ? k.mv_size : sizeof kbuf;
		kc.mv_data = kbuf;
		memcpy(kbuf, k.mv_data, kc.mv_size);
		if ((rc = cache_index_del(c, txn, &kc, &v)) != 0)
			return (rc);
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
		buf = xreallocarray(buf, tl + 3 + idlen + 1, 1);
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
	return (cache_del_id_kinds(c, txn, cur, arg, idlen, ROUTE_KINDS_ANSWERS, n));
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
	return (cache_del_id_kinds(c, txn, cur, arg, idlen, ROUTE_KINDS_ALL, n));
}

int
cache_purge_id(struct cache *c, const char *id, int guards)
{
	int	n;

	n = cache_delete(c, "purge", guards ? cache_del_id_guards :
	    cache_del_id, id, strlen(id));
	/* A full map has no page for the change: eviction makes some. */
	if (n == -1 && cache_evict_commit(c, 64 * 1024, c->max_size / 2) == 0)
		n = cache_delete(c, "purge", guards ? cache_del_id_guards :
		    cache_del_id, id, strlen(id));
	return (n);
}
