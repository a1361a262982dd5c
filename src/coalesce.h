/*
 * coalesce.h - one upstream fetch per cache miss.
 *
 * While a fetch for a cache key is in flight, later requests with the
 * same key wait on it instead of sending their own.  When it completes,
 * every waiter gets the same answer (final or not, error or not).  Keys
 * hold the tenant, so two tenants never share a fetch.
 *
 * One table per event loop; nothing here is thread-safe.
 */
#ifndef RC_COALESCE_H
#define RC_COALESCE_H

#include <stddef.h>
#include <sys/queue.h>

struct evkeyvalq;
struct coalesce;
struct coalesce_fetch;

/* The answer a fetch ends with; borrowed for the duration of the call. */
struct coalesce_answer {
	int			 status;
	const struct evkeyvalq	*headers;
	const char		*body;
	size_t			 body_len;
};

/*
 * A request waiting on a fetch, embedded in the caller's own request.
 * answer is NULL when the fetch ended without one the waiter can use
 * (the upstream sent a stream): the waiter fetches for itself.
 */
struct coalesce_waiter {
	void			(*fn)(struct coalesce_waiter *,
				    const struct coalesce_answer *);
	struct coalesce_fetch	*fetch;		/* NULL when not waiting */
	TAILQ_ENTRY(coalesce_waiter) entry;
};

struct coalesce	*coalesce_new(void);
/* Every fetch must have ended first. */
void		 coalesce_free(struct coalesce *);

/* The fetch in flight for key, or NULL. */
struct coalesce_fetch *coalesce_find(struct coalesce *, const void *key,
		    size_t klen);
/* Register a fetch for key (none may be in flight for it). */
struct coalesce_fetch *coalesce_begin(struct coalesce *, const void *key,
		    size_t klen);
void		 coalesce_wait(struct coalesce_fetch *,
		    struct coalesce_waiter *);
/* A waiter gives up (its client left).  Harmless if not waiting. */
void		 coalesce_leave(struct coalesce_waiter *);
int		 coalesce_waiters(const struct coalesce_fetch *);
/*
 * The fetch is over: hand answer (or NULL) to every waiter, in the order
 * they came, then forget the fetch.  New requests for the key start a
 * fetch of their own from the moment this is called.
 */
void		 coalesce_end(struct coalesce *, struct coalesce_fetch *,
		    const struct coalesce_answer *);

#endif
