/*
 * upstream.h - requests to the upstream API through libcurl's multi_socket
 * interface, driven by the proxy's own event_base.
 *
 * One struct upstream per event loop holds the multi handle, so
 * connections (HTTP/1.1 keep-alive or multiplexed HTTP/2) are reused
 * across requests.  A request reports through three hooks; none of them is
 * ever called after upstream_abort().
 *
 * When a reused connection turns out dead, curl sends the request again
 * on a fresh one.  Only idempotent methods (GET, HEAD, PUT, DELETE,
 * OPTIONS) keep that retry, and others only while no byte of them has
 * been written: see UPSTREAM_CONN_LOST.
 */
#ifndef RC_UPSTREAM_H
#define RC_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct evkeyvalq;
struct upstream;
struct upstream_req;

enum upstream_err {
	UPSTREAM_OK,
	UPSTREAM_CONNECT,	/* could not connect or resolve */
	UPSTREAM_TIMEOUT,	/* connect, total or idle timeout */
	UPSTREAM_TLS,
	UPSTREAM_PROTOCOL,	/* a broken or cut answer */
	UPSTREAM_ABORTED,	/* a hook asked to stop */
	/*
	 * A request that is not idempotent (POST, PATCH, ...) was written to
	 * a connection that then closed before any answer: the upstream may
	 * have acted on it.  It is never sent again (curl's silent retry on a
	 * fresh connection is refused), so the caller must not resend it
	 * blindly either.
	 */
	UPSTREAM_CONN_LOST,
};

/* What a data hook returns. */
#define UPSTREAM_CONTINUE	0
#define UPSTREAM_STOP		(-1)
/* Not taken: hold the transfer and offer this data again on resume. */
#define UPSTREAM_PAUSE		(-2)

struct upstream_hooks {
	/*
	 * The answer's status and headers (borrowed; valid until done) are
	 * known.  Called once, before the first data, or before done when
	 * there is no body.
	 */
	void	(*headers)(void *arg, int status, const struct evkeyvalq *);
	/*
	 * A piece of the (decoded) body; returns UPSTREAM_CONTINUE, _STOP,
	 * or _PAUSE (the same bytes come again after upstream_resume()).
	 */
	int	(*data)(void *arg, const char *, size_t);
	/*
	 * The exchange is over; err says how.  Called from the event loop,
	 * outside any curl call; the request is freed right after.
	 */
	void	(*done)(void *arg, enum upstream_err err, const char *why);
};

struct upstream_opts {
	const char		*method;	/* "GET", "POST", ... */
	const char		*path;		/* raw path and query */
	const char *const	*headers;	/* "Name: value", NULL-terminated */
	const void		*body;		/* borrowed until done */
	size_t			 body_len;
	int			 has_body;
	int			 stream;	/* idle timeout, not total */
	double			 idle;		/* that timeout; 0: the
						   stream_idle_timeout */
	uint64_t		 serial;	/* the request's, for its log
						   lines */
};

struct upstream	*upstream_new(struct event_base *, const char *base_url,
	    double connect_timeout, double timeout, double stream_idle_timeout);
/* Aborts whatever is in flight (no hooks are called) and frees. */
void		 upstream_free(struct upstream *);

struct upstream_req *upstream_start(struct upstream *,
	    const struct upstream_opts *, const struct upstream_hooks *,
	    void *arg);
/* Stop a request; no hook is called after this returns. */
void		 upstream_abort(struct upstream_req *);
/*
 * Resume a request whose data hook paused it.  The data hook may be
 * called (and may pause again) before this returns.
 */
void		 upstream_resume(struct upstream_req *);

const char	*upstream_err_str(enum upstream_err);

#endif
