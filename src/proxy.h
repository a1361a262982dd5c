/*
 * proxy.h - the request path: route, look up, forward, store, reply.
 */
#ifndef RC_PROXY_H
#define RC_PROXY_H

#include <sys/time.h>

struct accesslog;
struct cache;
struct coalesce;
struct coalesce_box;
struct evhttp;
struct keyring;
struct metrics;
struct proxy;
struct upstream;

/* What one event loop's proxy works with. */
struct proxy_env {
	struct cache		*cache;		/* shared by every worker */
	struct coalesce		*flights;	/* shared by every worker */
	struct coalesce_box	*box;		/* this loop's */
	struct upstream		*up;		/* this loop's */
	struct shared		*shared;	/* this loop's, or NULL */
	const char		*node;		/* this process's name, or NULL */
	const char		*upstream_url;
	int			 websocket;	/* [server] websocket = on */
	struct timeval		 ws_idle;	/* websocket_idle_timeout */
	struct keyring		*keys;		/* a reference is taken */
	struct metrics		*metrics;	/* this loop's, or NULL */
	struct accesslog	*alog;		/* this loop's, or NULL */
	struct timeval		 client_tv;	/* clients' read/write timeout */
	double			 tombstone_ttl;	/* 0: no tombstones */
	double			 delete_window;	/* a DELETE may take effect in */
	double			 forward_idle;	/* silence a forwarded answer
						   may keep */
};

/*
 * Serve http's requests, on http's event loop.  Borrows everything env
 * names but the keyring.  A stream's client only has the write timeout.
 * To stop: proxy_stop() ends the requests still in flight, then the
 * caller frees the evhttp (which closes every connection), then
 * proxy_free().
 */
struct proxy	*proxy_new(struct evhttp *, const struct proxy_env *);
/* On the thread that runs http's loop, before it runs. */
void		 proxy_thread_init(struct proxy *);
/* Serve new requests with these keys (takes a reference: see credential.h). */
void		 proxy_set_keys(struct proxy *, struct keyring *);
void		 proxy_stop(struct proxy *);
/* Free its WebSocket relays, before evhttp_free() (they hold connections). */
void		 proxy_ws_free(struct proxy *);
void		 proxy_free(struct proxy *);
/*
 * Stop taking requests (new ones get 503) and call done(arg) once every
 * request in flight has finished: at once if none is.
 */
void		 proxy_drain(struct proxy *, void (*done)(void *), void *arg);

#endif
