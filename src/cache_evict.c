/*
 * cache_evict.c - the entries' age index, and eviction by it.
 *
 * Every entry is indexed under its tenant, oldest first ("tenant_age"),
 * and counted in its tenant's bytes ("tenants").  To make room, the
 * oldest entries of the tenant holding the most go, so that a tenant
 * filling the cache evicts its own entries and never those of one
 * holding less.  The room is counted in the pages of every database
 * (cache_used()): owner records and delete guards count against
 * max_size too, but are never evicted for an entry.
 */
#include "config.h"

#include <stdint.h>
#include <string.h>

#include <lmdb.h>

#include "cache.h"
#include "cache_int.h"

/*
 * The age index, per tenant: "<tenant>\0<seq, big-endian>" -> key, so a
 * tenant's oldest entry is the first under its name; "tenants" holds
 * each tenant's bytes (keys and values) and, under "\0seq", the last seq.
 */
#define CACHE_TENANT_MAX	480

/* The tenant part of an entry's key, "<tenant>\0...": its length. */
static size_t
cache_tenant_len(const MDB_val *k)
{
	const char	*p = memchr(k->mv_data, '\0', k->mv_size);

	return (p != NULL ? (size_t)(p - (const char *)k->mv_data) :
	    k->mv_size);
}

/* key's age key for seq into buf; its length, 0 if the tenant is long. */
static size_t
cache_age_key(char *buf, const MDB_val *key, uint64_t seq)
{
	size_t	tl = cache_tenant_len(key);

	if (tl > CACHE_TENANT_MAX)
		return (0);
	return (cache_index_key(buf, key->mv_data, tl, seq));
}

/* A tenant's bytes (or the last seq, for "\0seq"), and setting them. */
#define cache_tenant_get(c, txn, t, tl, rc)				\
	cache_count_get((txn), (c)->tenants, (t), (tl), (rc))
#define cache_tenant_set(c, txn, t, tl, n)				\
	cache_count_set((txn), (c)->tenants, (t), (tl), (n))

/* Add delta (signed) to the bytes of key's tenant. */
static int
cache_tenant_add(struct cache *c, MDB_txn *txn, const MDB_val *key,
    int64_t delta)
{
	size_t		tl = cache_tenant_len(key);
	uint64_t	n;
	int		rc;

	n = cache_tenant_get(c, txn, key->mv_data, tl, &rc);
	if (rc != 0)
		return (rc);
	if (delta < 0 && (uint64_t)-delta > n)
		n = 0;
	else
		n += (uint64_t)delta;
	return (cache_tenant_set(c, txn, key->mv_data, tl, n));
}

int
cache_index_add(struct cache *c, MDB_txn *txn, MDB_val *key, size_t vsize,
    uint64_t seq)
{
	char	buf[CACHE_TENANT_MAX + 9];
	MDB_val	ak;
	int	rc;

	if ((ak.mv_size = cache_age_key(buf, key, seq)) == 0)
		return (MDB_BAD_VALSIZE);
	ak.mv_data = buf;
	if ((rc = mdb_put(txn, c->age, &ak, key, 0)) != 0)
		return (rc);
	return (cache_tenant_add(c, txn, key, (int64_t)(key->mv_size +
	    vsize)));
}

int
cache_index_del(struct cache *c, MDB_txn *txn, const MDB_val *key,
    const MDB_val *v)
{
	struct cache_rec	rec;
	char			buf[CACHE_TENANT_MAX + 9];
	MDB_val			ak, av;
	size_t			vsize = v->mv_size;
	int			rc = 0;

	if (cache_rec_parse(v, &rec) == 0 &&
	    (ak.mv_size = cache_age_key(buf, key, rec.seq)) != 0) {
		ak.mv_data = buf;
		if ((rc = mdb_get(txn, c->age, &ak, &av)) == 0 &&
		    av.mv_size == key->mv_size &&
		    memcmp(av.mv_data, key->mv_data, key->mv_size) == 0)
			rc = mdb_del(txn, c->age, &ak, NULL);
		if (rc != 0 && rc != MDB_NOTFOUND)
			return (rc);
	}
	return (cache_tenant_add(c, txn, key, -(int64_t)(key->mv_size +
	    vsize)));
}

int
cache_del_entry(struct cache *c, MDB_txn *txn, MDB_val *k, MDB_val *v)
{
	int	rc;

	if ((rc = cache_index_del(c, txn, k, v)) != 0)
		return (rc);
	rc = mdb_del(txn, c->entries, k, NULL);
	return (rc == MDB_NOTFOUND ? 0 : rc);
}

size_t
cache_db_used(MDB_txn *txn, MDB_dbi dbi)
{
	MDB_stat	s;

	if (mdb_stat(txn, dbi, &s) != 0)
		return (0);
	return ((s.ms_branch_pages + s.ms_leaf_pages + s.ms_overflow_pages) *
	    (size_t)s.ms_psize);
}

size_t
cache_used(struct cache *c, MDB_txn *txn)
{
	return (cache_db_used(txn, c->entries) + cache_db_used(txn, c->age) +
	    cache_db_used(txn, c->tenants) + cache_owners_used(c, txn) +
	    cache_db_used(txn, c->issued) + cache_guards_used(c, txn));
}

/*
 * The tenant holding the most bytes into name (its length in *len), and
 * the bytes of the one after it in *second; 0 if there is none.
 */
static uint64_t
cache_tenant_most(struct cache *c, MDB_txn *txn, char *name, size_t *len,
    uint64_t *second, int *rc)
{
	MDB_cursor	*cur;
	MDB_cursor_op	 op;
	MDB_val		 k, v;
	uint64_t	 n, most = 0;

	*second = 0;
	if ((*rc = mdb_cursor_open(txn, c->tenants, &cur)) != 0)
		return (0);
	for (op = MDB_FIRST; (*rc = mdb_cursor_get(cur, &k, &v, op)) == 0;
	    op = MDB_NEXT) {
		if (v.mv_size != sizeof n || k.mv_size > CACHE_TENANT_MAX ||
		    (k.mv_size > 0 && *(const char *)k.mv_data == '\0'))
			continue;
		memcpy(&n, v.mv_data, sizeof n);
		if (n > most) {
			*second = most;
			most = n;
			memcpy(name, k.mv_data, k.mv_size);
			*len = k.mv_size;
		} else if (n > *second)
			*second = n;
	}
	mdb_cursor_close(cur);
	if (*rc == MDB_NOTFOUND)
		*rc = 0;
	return (most);
}

int
cache_evict(struct cache *c, MDB_txn *txn, size_t need, size_t budget)
{
	MDB_cursor	*cur;
	MDB_val		 ak, key, v;
	char		 name[CACHE_TENANT_MAX + 9], kbuf[512];
	size_t		 tl = 0;
	uint64_t	 most, second, n;
	int		 rc = 0, batch;

	while (cache_used(c, txn) + need > budget) {
		/* A scan of the tenants, then up to 8 entries at least. */
		most = cache_tenant_most(c, txn, name, &tl, &second, &rc);
		if (rc != 0 || most == 0)
			return (rc);
		batch = 0;
		/* Its oldest entries, while it still holds the most. */
		do {
			if ((rc = mdb_cursor_open(txn, c->age, &cur)) != 0)
				return (rc);
			memset(name + tl, 0, 9);
			ak.mv_size = tl + 9;
			ak.mv_data = name;
			rc = mdb_cursor_get(cur, &ak, &key, MDB_SET_RANGE);
			mdb_cursor_close(cur);
			if (rc == 0 && (ak.mv_size != tl + 9 ||
			    memcmp(ak.mv_data, name, tl + 1) != 0))
				rc = MDB_NOTFOUND;
			if (rc == MDB_NOTFOUND) {
				/* Bytes counted, no entry left: forget them. */
				if ((rc = cache_tenant_set(c, txn, name, tl,
				    0)) != 0)
					return (rc);
				break;
			}
			if (rc != 0 || key.mv_size > sizeof kbuf)
				return (rc != 0 ? rc : MDB_BAD_VALSIZE);
			memcpy(kbuf, key.mv_data, key.mv_size);
			key.mv_data = kbuf;
			if ((rc = mdb_get(txn, c->entries, &key, &v)) == 0)
				rc = cache_del_entry(c, txn, &key, &v);
			else if (rc == MDB_NOTFOUND)	/* a stray age record */
				rc = mdb_del(txn, c->age, &ak, NULL);
			if (rc != 0)
				return (rc);
			CACHE_COUNT(c, evictions);
			n = cache_tenant_get(c, txn, name, tl, &rc);
			batch++;
		} while (rc == 0 && n > 0 && (n >= second || batch < 8) &&
		    cache_used(c, txn) + need > budget);
		if (rc != 0)
			return (rc);
	}
	return (0);
}

int
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

uint64_t
cache_next_seq(struct cache *c, MDB_txn *txn, int *rc)
{
	static const char	key[] = "\0seq";
	uint64_t		seq;

	seq = cache_tenant_get(c, txn, key, sizeof key - 1, rc) + 1;
	if (*rc == 0)
		*rc = cache_tenant_set(c, txn, key, sizeof key - 1, seq);
	return (seq);
}
