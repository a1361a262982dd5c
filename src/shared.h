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
};

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
 * slower than [shared] timeout.
 */
typedef void	 shared_got_fn(void *arg, const struct cache_entry *e);

/*
 * Look up a cache key (route_cache_key()) of response id.  NULL, and fn
 * is never called, when the tier is down: look elsewhere now.  Else fn
 * runs once, later, on this loop, unless shared_get_cancel() first.
 */
struct shared_get *shared_get(struct shared *, const char *id,
		    const void *key, size_t klen, shared_got_fn *fn,
		    void *arg);
void		 shared_get_cancel(struct shared_get *);

/*
 * Store an entry under key, unless id was marked deleted meanwhile (see
 * shared_delete()).  Dropped when the tier is down.
 */
void		 shared_put(struct shared *, const char *id, const void *key,
		    size_t klen, const struct cache_entry *);
/*
 * Forget every tenant's entries of id and mark it deleted for
 * mark_ttl: a store of an answer fetched before cannot bring it back.
 */
void		 shared_delete(struct shared *, const char *id);

#endif
