/*
 * proxy_int.h - what the proxy_*.c files share; private to them.
 *
 * A request (struct proxy_req) moves through the states below, only by
 * proxy_req_set_state(), and ends only by proxy_req_finish(), which
 * counts it, lets go of everything it holds and frees it.  Any function
 * whose contract says "ends pr" may have freed pr when it returns: its
 * caller must not touch pr afterwards.
 *
 *   proxy.c        the request's life: dispatch, states, the one end
 *   proxy_cache.c  the cache's side: hit, tombstone, store, invalidate
 *   proxy_fetch.c  the upstream request and the fetches others wait on
 *   proxy_stream.c relaying a stream to its client as it comes
 *   tenant.c       who asks (tenant) and which ids are theirs
 */
#ifndef RC_PROXY_INT_H
#define RC_PROXY_INT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>
#include <time.h>

#include <event2/http.h>

#include "coalesce.h"
#include "metrics.h"
#include "response.h"
#include "route.h"
#include "tenant.h"

struct cache_entry;
struct evbuffer;
struct evkeyvalq;
struct sse;

/* An answer that is not a stream is held whole; past this it is refused. */
#define PROXY_MAX_BUFFERED	(64 * 1024 * 1024)
#define PROXY_MAX_FWD_HEADERS	64

/*
 * Where a request is.  The legal moves (proxy_state.c):
 *
 *   STARTED  -> WAITING | SHARED | FETCHING | FINISHED
 *   WAITING  -> SHARED | FETCHING (the fetch ended with nothing to share)
 *               | FINISHED
 *   SHARED   -> FETCHING (not there, or no answer in time) | FINISHED
 *   FETCHING -> STREAMING | ORPHANED | FINISHED
 *   STREAMING <-> PAUSED;  STREAMING | PAUSED -> FINISHED
 *   ORPHANED -> FINISHED
 */
enum proxy_state {
	PR_STARTED,	/* read, routed, looked up: no event is pending */
	PR_WAITING,	/* on another request's fetch of the same key */
	PR_SHARED,	/* asking the shared tier; others may wait on it */
	PR_FETCHING,	/* its upstream request is out; the answer is held */
	PR_STREAMING,	/* the answer is relayed to the client as it comes */
	PR_PAUSED,	/* as STREAMING, the upstream held: the client is behind */
	PR_ORPHANED,	/* its client left; the fetch goes on for others */
	PR_FINISHED,	/* counted and about to be freed */
	PR_NSTATES
};

/* proxy_state.c: the state machine's table, no I/O. */
const char	*proxy_state_name(enum proxy_state);
int		 proxy_state_legal(enum proxy_state from, enum proxy_state to);
/* 1 if a request in s relays its answer as it comes (STREAMING, PAUSED). */
int		 proxy_state_relaying(enum proxy_state s);
/*
 * Move *st to to, logging the move at debug with the request's serial.
 * An illegal move is a bug: it aborts, unless built with NDEBUG, where it
 * is logged as an error and made anyway.
 */
void		 proxy_state_move(enum proxy_state *st, enum proxy_state to,
		    uint64_t serial);

struct proxy {
	struct cache		*cache;
	struct upstream		*up;
	struct keyring		*keys;		/* the newest; requests hold theirs */
	struct coalesce		*flights;	/* fetches others may wait on */
	struct coalesce_box	*box;		/* this loop's, for waiting */
	struct shared		*shared;	/* this loop's, or NULL */
	const char		*node;		/* this process's name in the fleet */
	const char		*upstream_url;
	struct evdns_base	*dns;		/* this loop's resolver */
	struct ws_list		*ws;		/* its WebSocket relays */
	struct ssl_ctx_st	*tls;		/* their TLS client context */
	int			 websocket;	/* [server] websocket */
	struct timeval		 ws_idle;	/* websocket_idle_timeout */
	struct metrics		*metrics;
	struct accesslog	*alog;
	struct timeval		 client_tv;
	double			 tombstone_ttl;
	double			 delete_window;
	double			 forward_idle;
	char			 date[40];	/* see proxy_date() */
	time_t			 date_at;
	struct tenant_memo	 memo;		/* the last pass-through key */
	struct proxy_req	*active;	/* every request past STARTED */
	int			 writing;	/* replies not yet flushed */
	int			 draining;
	void			(*drained)(void *);
	void			*drained_arg;
};

struct proxy_req {
	struct proxy		*px;
	uint64_t		 serial;	/* in every log line about it */
	enum proxy_state	 state;
	struct evhttp_request	*req;		/* NULL once its client left */
	struct event		*gone;		/* the client's end closing */
	int			 watching;	/* proxy_client_closed is set */
	struct coalesce_fetch	*fetch;		/* others may wait on ours */
	struct coalesce_waiter	 waiter;	/* or we wait on another's */
	struct shared_get	*sget;		/* SHARED: its lookup */
	struct ws_relay		*ws;		/* its WebSocket, until its 101 */
	int			 ws_asked;	/* a WebSocket upgrade */
	int			 leased;	/* holds the fleet's lease on its key */
	struct route		 route;
	struct keyring		*keys;		/* as the request began */
	int			 keys_held;	/* a reference: it went async */
	struct tenant_who	 who;		/* client, credential, tenant */
	struct response_request	 rq;		/* a POST's body, read whole */
	char			*key;		/* cache key, cacheable routes */
	size_t			 klen;
	char			*upath;		/* path and query sent upstream */
	struct upstream_req	*ureq;
	double			 t0;		/* its headers came in */
	double			 ut0;		/* its upstream request went out */
	time_t			 since;		/* the same, by the wall clock */
	double			 usecs;		/* and took this long */
	enum metrics_cache	 result;	/* the cache's part */
	char			**fwd;		/* forwarded: headers sent */
	int			 status;	/* the upstream's */
	const struct evkeyvalq	*uhdrs;		/* upstream's, until done */
	struct evbuffer		*body;		/* the answer, held whole */
	void			*sent;		/* a DELETE's body, our own copy */
	int			 raw;		/* relayed as bytes, not events */
	int			 cut;		/* its stream ends mid-event */
	int			 drain_cb;	/* evhttp has proxy_stream_drained */
	size_t			 relayed;	/* stream bytes sent on */
	char			 tail[4];	/* the last of them */
	struct sse		*sse;		/* a streamed create's events */
	int			 too_big;
	int			 no_store;	/* never cache this answer */
	int			 own_answer;	/* its answer's id is the client's */
	const char		*rid;		/* a direct reply's x-request-id */
	/* Once its client left (ORPHANED): what its access line says. */
	double			 left_at;
	enum evhttp_cmd_type	 cmd;
	char			*uri;
	struct proxy_req	*prev, *next;
};

/* proxy.c */
double	proxy_clock(void);
void	proxy_req_set_state(struct proxy_req *, enum proxy_state);
/*
 * The one end of a request: count it (metrics and access log, once: a
 * request that left is counted as 499 with what it had been sent), end
 * an open stream reply (after counting: ending it may free req), let go
 * of its client's connection, leave the fetch it waited on, end its own
 * fetch (waiters get nothing and fetch for themselves) and upstream
 * transfer, drop its keyring reference and free it.  Ends pr.
 */
void	proxy_req_finish(struct proxy_req *, int status, size_t bytes);
/* Notice at once when the client goes away while its request waits. */
void	proxy_watch_client(struct proxy_req *);
/* Stop watching: the request no longer waits on anything of its own. */
void	proxy_unwatch_client(struct proxy_req *);
/*
 * Count a reply until its last byte is written (or its connection dies),
 * so a drain never cuts an answer short; just before the final
 * evhttp_send_reply() or evhttp_send_reply_end().  Unwatch first.
 */
void	proxy_track_reply(struct proxy *, struct evhttp_request *);
/* After a stream's last byte: its connection's read timeout is back. */
void	proxy_stream_written(struct evhttp_request *, void *);
/* An error of the proxy's own as the reply.  Ends pr. */
void	proxy_fail(struct proxy_req *, int status, const char *type,
	    const char *code, const char *message, const char *allow);
/* 1 if the request is a DELETE of a response: see proxy_delete_begin(). */
int	proxy_is_delete(const struct proxy_req *);
/* Add X-Cache to a reply. */
void	proxy_xcache(struct evkeyvalq *, const char *);

/* proxy_cache.c */
/* The longest head written past evhttp (else evhttp formats it). */
#define PROXY_HEAD_MAX		8192
/*
 * The start of a head written past evhttp (see fmt.h): the status line,
 * Date and Content-Length; NULL if status has no reason phrase of ours
 * (reply_phrase()) or it does not fit.
 */
char	*proxy_head_begin(char *p, const char *end, struct proxy *,
	    int status, time_t now, size_t body_len);
/* The hit path: 1 if the cache (an entry or a tombstone) answered; ends pr. */
int	proxy_lookup(struct proxy_req *);
/*
 * A stored entry's reply headers into out: its "Name: value" lines (not
 * one with a line feed inside, nor too long), Age (secs) and its ETag.
 */
void	proxy_replay_headers(struct evkeyvalq *, const struct cache_entry *,
	    long secs);
/* 1 if If-None-Match names etag (weak comparison, RFC 9110). */
int	proxy_etag_match(const char *inm, const char *etag, size_t etag_len);
/* The upstream's own 404 body and message for an unknown id (caller frees). */
char	*proxy_not_found_msg(const char *what, const char *id);
int	proxy_delete_begin(struct proxy_req *);
void	proxy_delete_end(struct proxy_req *, int status);
/* The cache's part of a cancel going out: the id's entries go. */
void	proxy_invalidate(struct proxy_req *);
/* Store a 200 answer if it may be served again; 1 and etag if stored. */
int	proxy_store(struct proxy_req *, const struct response_info *,
	    const char *body, size_t len, char etag[36]);
/* sse_event_fn: a streamed create's events fill the cache. */
void	proxy_stream_event(void *, const char *, const char *, size_t);
/* Ownership of an id this request's client created (tenant.h). */
void	proxy_own(struct proxy_req *, const char *id);
/* The same for a client known by who (a WebSocket's, after its request). */
void	proxy_own_who(struct proxy *, const struct tenant_who *, const char *id);
/* A WebSocket relay ended (ws.c): a drain may be over. */
void	proxy_ws_gone(struct proxy *);
/*
 * A WebSocket's final Response (ws.c), stored as its id's plain GET entry
 * under tenant, as a streamed create's is; since: when its turn began.
 */
int	proxy_store_ws(struct proxy *, const char *tenant, const char *id,
	    const char *body, size_t len, time_t since);

/* proxy_fetch.c */
/*
 * STARTED, WAITING or SHARED -> FETCHING: the upstream request goes out.
 * May end pr.
 */
void	proxy_forward(struct proxy_req *);
/* coalesce waiter: the fetch this request waited on is over.  Ends pr or forwards. */
void	proxy_waited(struct coalesce_waiter *, const struct coalesce_answer *);
/* Those waiting on this request's fetch get a (or NULL: fetch their own). */
void	proxy_end_fetch(struct proxy_req *, const struct coalesce_answer *);
/* Answer the client, if still there, and all who waited.  Ends pr. */
void	proxy_answer(struct proxy_req *, const struct coalesce_answer *);
/* Copy the upstream headers that go back to the client into out. */
void	proxy_copy_resp_headers(struct proxy_req *, struct evkeyvalq *);
/*
 * 1 if a comma-separated header value names name, case-insensitively (a
 * Connection header's option, RFC 9110 7.6.1; an Upgrade protocol).
 */
int	proxy_conn_names(const char *list, const char *name);
/* 1 if name is in a NULL-terminated list (case-insensitive). */
int	proxy_in_list(const char *name, const char *const *list);

/* proxy_shared.c */
/*
 * STARTED -> SHARED: a cacheable GET this node missed asks the shared
 * tier, and then answers, or forwards.  0 (pr untouched) if it cannot
 * ask: no tier, or it is down.
 */
int	proxy_ask_shared(struct proxy_req *);
/*
 * The request is done with the shared tier: its lookup, if pending, is
 * cancelled, and its lease on the key's fetch, if it holds one, goes (its
 * answer, if stored, went before it, on the same connection).
 */
void	proxy_shared_done(struct proxy_req *);
/* What this node stores (status 200) goes to the shared tier too. */
void	proxy_share(struct proxy *, const char *id, const char *key,
	    size_t klen, const char *etag, const char *hdrs, size_t hlen,
	    const char *body, size_t blen, time_t now);
/*
 * What became of id (enum shared_event: a DELETE's begin, its outcome, a
 * cancel), told to the fleet: the shared tier forgets it, and every node
 * drops its own copies (shared.h).
 */
void	proxy_unshare(struct proxy_req *, const char *id, int ev);

/* proxy_stream.c */
/* FETCHING -> STREAMING: the reply starts.  May end pr. */
void	proxy_stream_start(struct proxy_req *, int sse);
/* Relay bytes; UPSTREAM_PAUSE while the client is behind. */
int	proxy_stream_data(struct proxy_req *, const char *, size_t);
/*
 * End a relayed stream: code NULL for a whole one, else an error event
 * (or a cut connection, mid-event).  Ends pr.
 */
void	proxy_stream_end(struct proxy_req *, const char *type,
	    const char *code, const char *message);

#endif
