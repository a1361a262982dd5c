/*
 * coalesce.h - one upstream fetch per cache miss, across every worker.
 *
 * While a fetch for a cache key is in flight, later requests with the
 * same key wait on it instead of sending their own, whichever worker
 * thread they arrived on.  When it completes, every waiter gets the same
 * answer (final or not, error or not).  Keys hold the tenant, so two
 * tenants never share a fetch.
 *
 * The table is shared and locked; only misses touch it.  Each event loop
 * has a box: a waiter on another loop than the fetch's gets a copy of
 * the answer through its box, on its own thread.
 */
#ifndef RC_COALESCE_H
#define RC_COALESCE_H

#include <stddef.h>
#include <sys/queue.h>

struct event_base;
struct evkeyvalq;
struct coalesce;
struct coalesce_box;
struct coalesce_fetch;
struct coalesce_copy;

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
 * (the upstream sent a stream): the waiter fetches for itself.  fn runs
 * on the waiter's own event loop.
 */
struct coalesce_waiter {
	void			(*fn)(struct coalesce_waiter *,
				    const struct coalesce_answer *);
	struct coalesce_box	*box;		/* the waiter's event loop */
	int			 joined;	/* waiting; its own thread's */
	/* Under the table's lock: */
	struct coalesce_fetch	*fetch;		/* the fetch waited on, or */
	int			 queued;	/* in box, the answer on its way */
	struct coalesce_copy	*copy;		/* that answer, NULL for none */
	TAILQ_ENTRY(coalesce_waiter) entry;
};

struct coalesce	*coalesce_new(void);
/* Every fetch must have ended first. */
void		 coalesce_free(struct coalesce *);

/* The box of one event loop; freed after its loop is done. */
struct coalesce_box *coalesce_box_new(struct coalesce *, struct event_base *);
void		 coalesce_box_free(struct coalesce_box *);

/*
 * Wait on the fetch in flight for key, or if there is none, register a
 * new one, which the caller leads (and must end) and gets back.  w->fn
 * and w->box must be set.  Returns NULL when w waits.
 */
struct coalesce_fetch *coalesce_join(struct coalesce *, const void *key,
		    size_t klen, struct coalesce_waiter *w);
/* A waiter gives up (its client left).  Harmless if not waiting. */
void		 coalesce_leave(struct coalesce_waiter *);
int		 coalesce_waiters(struct coalesce *,
		    const struct coalesce_fetch *);
/*
 * The fetch is over: hand answer (or NULL) to every waiter, in the order
 * they came, then forget the fetch.  Waiters of this loop get it now,
 * the others on their own loops.  New requests for the key start a fetch
 * of their own from the moment this is called.
 */
void		 coalesce_end(struct coalesce *, struct coalesce_fetch *,
		    const struct coalesce_answer *);

/*
 * A DELETE of id goes out: the fetches of id's answers in flight (every
 * tenant's) take no more waiters, so that no request that comes after
 * it shares an answer fetched before it.  Those already waiting still
 * get it.
 */
void		 coalesce_detach_id(struct coalesce *, const char *id);

#endif
