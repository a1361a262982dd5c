/*
 * proxy.h - the request path: route, look up, forward, store, reply.
 */
#ifndef RC_PROXY_H
#define RC_PROXY_H

struct cache;
struct evhttp;
struct keyring;
struct proxy;
struct timeval;
struct upstream;

/*
 * Serve http's requests.  Borrows everything it is given but the keyring,
 * whose reference it takes.  client_tv is
 * the clients' read and write timeout (a stream's client only has the
 * write one); tombstone_ttl how long a DELETEd id answers 404 from here
 * (0: never).  To stop:
 * proxy_stop() ends the requests still in flight, then the caller frees
 * the evhttp (which closes every connection), then proxy_free().
 */
struct proxy	*proxy_new(struct evhttp *, struct cache *, struct upstream *,
		    struct keyring *, const struct timeval *client_tv,
		    double tombstone_ttl);
/* Serve new requests with these keys (takes a reference: see credential.h). */
void		 proxy_set_keys(struct proxy *, struct keyring *);
void		 proxy_stop(struct proxy *);
void		 proxy_free(struct proxy *);
/*
 * Stop taking requests (new ones get 503) and call done(arg) once every
 * request in flight has finished: at once if none is.
 */
void		 proxy_drain(struct proxy *, void (*done)(void *), void *arg);

#endif
