/*
 * upstream_int.h - private to upstream.c and upstream_req.c: the
 * structures both files reach into, and the functions one calls in the
 * other.  Nothing else includes it; upstream.h is the module's contract.
 */
#ifndef RC_UPSTREAM_INT_H
#define RC_UPSTREAM_INT_H

#include <sys/time.h>

#include <curl/curl.h>
#include <event2/keyvalq_struct.h>

/* Easy handles kept for reuse: curl_easy_init() costs every miss. */
#define UPSTREAM_SPARE		64

struct upstream {
	struct event_base	*base;
	CURLM			*multi;
	struct event		*timer;
	char			*base_url;
	long			 connect_ms;
	long			 timeout_ms;
	struct timeval		 idle;		/* a stream's allowed silence */
	int			 in_curl;	/* inside a curl call */
	int			 npending;	/* started inside a curl call */
	int			 nreap;		/* aborted inside curl or a hook */
	int			 failing;	/* curl_multi_socket_action fails */
	struct timeval		 fail_since;	/* ... since then */
	struct event		*again;		/* after a failure: call curl again */
	struct upstream_req	*reqs;		/* all in flight */
	/* Easy handles of ended requests, reset for the next ones. */
	CURL			*spare[UPSTREAM_SPARE];
	int			 nspare;
};

struct upstream_req {
	struct upstream		*up;
	CURL			*easy;
	struct curl_slist	*hdrs;
	char			*url;
	uint64_t		 serial;	/* its request's, for log lines */
	struct evkeyvalq	 rhdrs;		/* the answer's headers */
	int			 headers_done;
	int			 aborted;	/* upstream_abort(): no more hooks */
	int			 in_hook;	/* its hook is running: free later */
	int			 reap;		/* aborted; to free after curl */
	int			 stopped;	/* a hook said stop: done still comes */
	int			 paused;	/* a hook said pause */
	int			 pending;	/* not yet added to the multi */
	int			 once;		/* not idempotent: never resent */
	int			 attempts;	/* sends curl began (prereq calls) */
	int			 refused;	/* a retry was refused: conn lost */
	int			 doomed;	/* to fail: the multi is broken */
	struct event		*idle;		/* a stream's silence timer */
	struct timeval		 idle_tv;	/* the silence it allows */
	struct timeval		 last;		/* when its last bytes came */
	const struct upstream_hooks *hooks;
	void			*arg;
	struct upstream_req	*prev, *next;
};

/* upstream.c */
/*
 * Once curl has returned: report finished transfers, free the requests
 * aborted meanwhile and add those started meanwhile.  Does nothing while
 * inside a curl call.  Hooks may run.
 */
void	upstream_settle(struct upstream *);

/* upstream_req.c */
/* Unlink r, take it out of the multi and free it; no hook is called. */
void	upstream_req_free(struct upstream_req *);
/* Collect the final answer's headers and call the headers hook. */
void	upstream_deliver_headers(struct upstream_req *);
/* 1 if a request that is not idempotent may have reached the upstream. */
int	upstream_unanswered(struct upstream_req *);
/* 1 if a transfer that ended with that code ends as UPSTREAM_CONN_LOST. */
int	upstream_conn_lost(struct upstream_req *, CURLcode);

#endif
