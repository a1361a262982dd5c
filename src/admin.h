/*
 * admin.h - the admin listener: health, readiness, metrics, the cache.
 *
 *   GET /healthz        200 while the process runs
 *   GET /readyz         200 when serving; 503 while draining
 *   GET /metrics        Prometheus text format, names respcache_*
 *   GET /cache/stats    JSON: entries, bytes, map use, hit ratio
 *   DELETE /cache/{id}  purge every tenant's entries of a response id
 *
 * It runs on the main thread's event loop, apart from the workers: a
 * scrape or a purge never waits behind client traffic.
 */
#ifndef RC_ADMIN_H
#define RC_ADMIN_H

struct cache;
struct evhttp;
struct admin;

/*
 * Serve http (already bound) with the cache's numbers.  Its requests get
 * small header and body limits, and timeout (seconds) to come in and to
 * be answered, as clients get client_timeout.
 */
struct admin	*admin_new(struct evhttp *, struct cache *, int workers,
		    double timeout);
/* With a shared tier: a purge reaches the fleet too (shared.h). */
struct shared_follow;
void		 admin_set_follow(struct admin *, struct shared_follow *);
/* Readiness goes false for good (a drain began). */
void		 admin_draining(struct admin *);
void		 admin_free(struct admin *);

#endif
