/*
 * cache.h - the LMDB store of finished answers.
 *
 * One environment in the cache directory holds the entries (key: see
 * route_cache_key(), value: status, replay headers, ETag, body) and an
 * age index used to evict the oldest entries when max_size is reached.
 * Any thread may use it.  Writes never wait for fsync: a background thread syncs the map now and
 * then, and once more at cache_close().
 */
#ifndef RC_CACHE_H
#define RC_CACHE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct cache;

/* One stored answer; the pointers live only during a cache_get() visit. */
struct cache_entry {
	int		 status;
	const char	*etag;		/* "\"...\"", etag_len bytes */
	size_t		 etag_len;
	const char	*hdrs;		/* "Name: value\r\n" lines */
	size_t		 hdrs_len;
	const char	*body;
	size_t		 body_len;
	time_t		 stored_at;
};

struct cache_stats {
	uint64_t	entries;
	uint64_t	bytes;		/* pages in use, in bytes */
	uint64_t	max_size;	/* the configured budget */
	uint64_t	map_size;
	uint64_t	map_used;	/* the map's highest page in use, in bytes */
	uint64_t	evictions;
	uint64_t	map_full;	/* writes skipped: no room even after eviction */
	uint64_t	errors;
};

/*
 * Open (creating dir if needed) the cache.  ttl is in seconds, 0 for
 * none.  Returns NULL and *cause (caller frees) on failure.
 */
struct cache *cache_open(const char *dir, size_t max_size, double ttl,
	    char **cause);
/* Sync and close.  Accepts NULL.  Every other thread called the below. */
void	cache_close(struct cache *);
/* A thread that used the cache is done with it: end its read transaction. */
void	cache_thread_end(struct cache *);

typedef void (*cache_visit_fn)(const struct cache_entry *, void *arg);
/*
 * Look key up.  On a live hit, calls fn (which must copy what it keeps)
 * and returns 1; returns 0 on a miss or an expired entry, -1 on error.
 */
int	cache_get(struct cache *, const void *key, size_t klen, time_t now,
	    cache_visit_fn fn, void *arg);
/*
 * Delete guards, one per response id, for every tenant (the "guards"
 * database).  A DELETE of an id begins before it is forwarded: from then
 * on, until its outcome is known and window seconds after, no answer of
 * the id is stored, so an outcome that never reaches the proxy (a
 * timeout, a cut connection, the proxy killed) still guards the id,
 * across restarts.  Once the upstream said deleted, no answer fetched
 * before that is stored; refused, the guard forgets that DELETE.  A store
 * names its id and when its upstream request went out (since).  Past
 * their share of max_size (a 32nd), spent guards go, then all of them,
 * and the cache stores nothing fetched before the last time they
 * guarded: never a stale answer, at worst a while of misses.
 */
struct cache_guard {
	const char	*id;
	time_t		 since;		/* when the answer's fetch began */
};

/*
 * Store an answer, evicting the oldest entries to stay under max_size,
 * unless guard (if not NULL) forbids it.  Returns 0 if stored, 1 if
 * skipped (guarded, too large, or no room), -1 on error.  A request is
 * never failed by the outcome.
 */
int	cache_put(struct cache *, const void *key, size_t klen,
	    const struct cache_guard *, int status, const char *etag,
	    size_t etag_len, const char *hdrs, size_t hlen, const void *body,
	    size_t blen, time_t now);
/* A DELETE of id goes out; it may take effect upstream within window s. */
int	cache_delete_begin(struct cache *, const char *id, double window,
	    time_t now);
/*
 * The upstream answered a DELETE of id begun with cache_delete_begin():
 * deleted or refused.  keep is how long the tombstone is wanted (see
 * cache_deleted()).  An outcome never known is never reported.  0, or -1
 * on error.
 */
int	cache_delete_end(struct cache *, const char *id, int deleted,
	    double keep, time_t now);
/* 1 and *at if the upstream said id was deleted, at *at; else 0. */
int	cache_deleted(struct cache *, const char *id, time_t *at);

/* Delete every entry whose key starts with prefix; returns the count. */
int	cache_invalidate(struct cache *, const void *prefix, size_t plen);
/*
 * Delete every tenant's entries of a response id: its GETs and input
 * items, and with guards its tombstones and delete guard too.  Returns
 * the count, or -1 on error.
 */
int	cache_purge_id(struct cache *, const char *id, int guards);

/*
 * Forget every entry (owner records and delete guards stay): a node of a
 * fleet that may have missed deletes.  0, or -1 on error.
 */
int	cache_clear(struct cache *);
/*
 * A small value of the cache's own under name (not "format"): get
 * returns 1 with it in buf (NUL-terminated), 0 if there is none, -1 on
 * error or if it does not fit; set returns 0 or -1.  A write transaction
 * each: not for a worker's loop.
 */
int	cache_meta_get(struct cache *, const char *name, char *buf,
	    size_t size);
int	cache_meta_set(struct cache *, const char *name, const char *value);
/* Once what is queued for the writer is written (cache_writer_flush()). */
void	cache_stats(struct cache *, struct cache_stats *);

/*
 * Owner records: which client created a response.  They are kept apart
 * from the entries: ttl never expires them and no entry evicts one; past
 * an eighth of max_size, the oldest record of the client with the most
 * goes (one client's creates never push out another's records while it
 * has fewer).  put returns 0 or -1.  get returns 1 with name filled
 * (NUL-terminated, cut to size); CACHE_OWNER_LOST if this cache once
 * held a record of key but evicted it (a Bloom filter: rarely, a key it
 * never held); 0 if none; -1 on error.
 */
#define CACHE_OWNER_LOST	2

int	cache_owner_put(struct cache *, const void *key, size_t klen,
	    const char *name);

/*
 * The writer thread's queue (cache_writer.c): the same writes as above,
 * queued and done by one thread, so that a worker loop never waits for
 * LMDB's writer lock or a commit.  Each returns at once, and what it
 * stores is seen at once by cache_get() and cache_owner_get().  They run
 * in the order queued; cache_close() writes what is left.
 * cache_put_later() returns as cache_put() does, its guard checked now
 * (and again when written).  A DELETE's own writes are not queued: it
 * waits for its guard (cache_delete_begin(), after which
 * cache_writer_forget_id() keeps the id's queued stores from being seen
 * or written), and its tombstone answers the next GET
 * (cache_delete_end()).
 */
int	cache_put_later(struct cache *, const void *key, size_t klen,
	    const struct cache_guard *, int status, const char *etag,
	    size_t etag_len, const char *hdrs, size_t hlen, const void *body,
	    size_t blen, time_t now);
void	cache_owner_put_later(struct cache *, const void *key, size_t klen,
	    const char *name);
void	cache_purge_id_later(struct cache *, const char *id, int guards);
void	cache_invalidate_later(struct cache *, const void *prefix,
	    size_t plen);
void	cache_writer_forget_id(struct cache *, const char *id);
/* Wait until everything queued so far is written. */
void	cache_writer_flush(struct cache *);
int	cache_owner_get(struct cache *, const void *key, size_t klen,
	    char *name, size_t size);

#endif
