/*
 * shared.h - the shared tier: one Redis behind every node's cache
 * ([shared] redis), so that a fleet fetches an answer once and forgets
 * a deleted one everywhere.  See shared.c for what it keeps in Redis.
 *
 * One struct shared per worker, on the worker's loop; nothing blocks.
 * The tier is best effort: down, a lookup is a miss at once and a
 * write is dropped, and the node serves from its own cache and the
 * upstream as it would without one.
 */
#ifndef RC_SHARED_H
#define RC_SHARED_H

#include <stddef.h>
#include <time.h>

struct event_base;
struct metrics;
struct cache_entry;

struct shared_conf {
	const char	*host;		/* a numeric address, or NULL */
	int		 port;
	const char	*unix_path;	/* or a socket's path */
	int		 db;
	const char	*password;	/* NULL: no AUTH; copied */
	const char	*prefix;	/* of every key; copied */
	double		 timeout;	/* a lookup's longest wait, seconds */
	double		 ttl;		/* an entry's; 0: the most (30 days) */
	double		 mark_ttl;	/* a deleted id's mark */
	double		 lease;		/* a fetch's hold on its key, seconds */
	const char	*node;		/* this process's name in the stream */
};

/* What a node tells the fleet of an id (shared_delete()). */
enum shared_event {
	SHARED_DELETE_BEGIN = 'b',	/* a DELETE goes upstream */
	SHARED_DELETE_DONE = 'd',	/* the upstream deleted it */
	SHARED_DELETE_REFUSED = 'r',	/* the upstream refused the DELETE */
	SHARED_CANCELLED = 'c',		/* a cancel went upstream */
	SHARED_OWNED = 'o'		/* a client created it (tenant.h) */
};

/* The stream every node follows (shared_follow.c), after the prefix. */
#define SHARED_STREAM		"invalidations"
/* Entries it keeps, about (XADD MAXLEN ~). */
#define SHARED_STREAM_MAX	100000

struct shared;
struct shared_get;

/* Connects at once, and again with backoff whenever it must. */
struct shared	*shared_new(struct event_base *, const struct shared_conf *,
		    struct metrics *);
/* Ends every lookup unanswered: cancel those first (their fn never runs). */
void		 shared_free(struct shared *);
/* 1 while connected, authenticated and answering. */
int		 shared_up(const struct shared *);

/*
 * e is the entry found (its bytes valid only during the call), or NULL
 * for none: not there, expired, damaged, an error, the tier down or
 * slower than [shared] timeout.  lease: not there, and this node now
 * holds the fleet's lease on fetching it (shared_unlease() once done).
 */
typedef void	 shared_got_fn(void *arg, const struct cache_entry *e,
		    int lease);

/*
 * Look up a cache key (route_cache_key()) of response id.  Not there,
 * the caller gets the fleet's lease on fetching it (as token, unique to
 * the request); while another node holds it, the lookup waits for that
 * node's answer, or for the lease's end (then takes it).  NULL, and fn is
 * never called, when the tier is down: look elsewhere now.  Else fn runs
 * once, later, on this loop, unless shared_get_cancel() first.
 */
struct shared_get *shared_get(struct shared *, const char *id,
		    const void *key, size_t klen, const char *token,
		    shared_got_fn *fn, void *arg);
void		 shared_get_cancel(struct shared_get *);
/* The fetch the lease was for is over (stored, or not): others go on. */
void		 shared_unlease(struct shared *, const char *id,
		    const void *key, size_t klen, const char *token);

/*
 * Store an entry under key, unless id was marked deleted meanwhile (see
 * shared_delete()).  Dropped when the tier is down.
 */
void		 shared_put(struct shared *, const char *id, const void *key,
		    size_t klen, const struct cache_entry *);
/*
 * Tell the fleet what became of id, on the stream every node follows.
 * A DELETE's begin also forgets every tenant's entries of id in Redis and
 * marks it deleted for mark_ttl, so that a store of an answer fetched
 * before cannot bring it back; its end and a cancel forget them again.
 * While the tier is down, what is told waits (the newest 4096) and goes
 * once it is back.
 */
void		 shared_delete(struct shared *, const char *id,
		    enum shared_event);
/*
 * Tell the fleet that client created id under tenant, so that every
 * node keeps the owner record (ownership is the same through any node);
 * told later, like a delete, while Redis is away.
 */
void		 shared_own(struct shared *, const char *id, const char *tenant,
		    const char *client);

/*
 * The fleet's stream of deletes, followed on the main loop
 * (shared_follow.c): what other nodes deleted goes from this node's cache.
 */
struct cache;
struct coalesce;
struct shared_follow;

struct shared_follow *shared_follow_new(struct event_base *,
		    const struct shared_conf *, struct cache *,
		    struct coalesce *, double max_stale, double tombstone_ttl);
void		 shared_follow_free(struct shared_follow *);
/*
 * An operator's purge of id (the admin routes, main loop): the fleet's
 * copies go too, Redis's and every node's (told as a cancel is).  0, or
 * -1 if Redis is out of reach (only this node's cache was purged).
 */
int		 shared_follow_purge(struct shared_follow *, const char *id);
/*
 * From any thread: 1 unless a follower is behind the stream (since start,
 * or for max_stale after it lost it): this node's entries may be served.
 */
int		 shared_local_ok(void);

#endif
