/*
 * cache_guard.c - delete guards: no answer of a response being deleted,
 * or deleted, is stored.
 *
 * The "guards" database holds one guard per response id, for every
 * tenant: the DELETEs of it whose outcome is not known yet, and when the
 * upstream said it was deleted (a tombstone, served by the proxy).  A
 * store checks its id's guard, and the floor, in its writing transaction
 * (cache_guard_blocks()).  Past their share of max_size the guards are
 * trimmed; the contract is in cache.h.
 */
#include "config.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>

#include "cache.h"
#include "cache_int.h"
#include "log.h"

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

int
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

size_t
cache_guards_used(struct cache *c, MDB_txn *txn)
{
	return (cache_db_used(txn, c->guards));
}

/* The guards' share of max_size. */
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
			if ((int64_t)now > g.deleted_at)
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
	int	rc;

	/* No room: entries make some (a guard matters more than they do). */
	if ((rc = cache_guard_update(c, id, -1, window, now)) == -1 &&
	    cache_evict_commit(c, 64 * 1024, c->max_size / 2) == 0)
		rc = cache_guard_update(c, id, -1, window, now);
	return (rc);
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
