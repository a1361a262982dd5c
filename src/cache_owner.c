/*
 * cache_owner.c - owner records: which client created a response,
 * and the Bloom filter of those evicted.
 *
 * Kept apart from the entries: ttl never expires them and no entry
 * evicts one.  Past an eighth of max_size, the oldest record of the
 * client with the most goes: one client's creates never push out
 * another's records while it has fewer.  An evicted record's key goes
 * into the "issued" Bloom filter, so that a response this proxy created
 * never becomes one "created elsewhere" (see cache_owner_get()).
 *
 * owners:        key -> seq, client name
 * owner_index:   "<name>\0<seq, big-endian>" -> key, a client's oldest first
 * owner_clients: name -> its record count; "\0seq" -> the last seq
 * issued:        block number -> 64 bytes of the filter
 */
#include "config.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <lmdb.h>

#include "cache.h"
#include "cache_int.h"
#include "log.h"

#define CACHE_SEQ_KEY		"\0seq"
#define CACHE_BLOCK		64		/* bytes of a filter block */
#define CACHE_BLOOM_K		6		/* bits set per key */

size_t
cache_owners_used(struct cache *c, MDB_txn *txn)
{
	return (cache_db_used(txn, c->owners) +
	    cache_db_used(txn, c->owner_index) +
	    cache_db_used(txn, c->owner_clients));
}

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
#define cache_client_get(c, txn, name, nlen, rc)			\
	cache_count_get((txn), (c)->owner_clients, (name), (nlen), (rc))
#define cache_client_set(c, txn, name, nlen, n)				\
	cache_count_set((txn), (c)->owner_clients, (name), (nlen), (n))


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
	int	 rc, brc, lost, again = 0;

	if (klen > (size_t)mdb_env_get_maxkeysize(c->env) || size == 0)
		return (-1);
again:
	if ((txn = cache_read_begin(c)) == NULL)
		return (-1);
	lost = 0;
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
	/* Queued, not yet written (a record leaves the queue once it is). */
	if (rc == MDB_NOTFOUND && !again) {
		if (cache_writer_owner(c, key, klen, name, size))
			return (1);
		again = 1;
		goto again;
	}
	if (lost)
		return (CACHE_OWNER_LOST);
	return (rc == 0 ? 1 : 0);
}

int
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
