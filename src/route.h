/*
 * route.h - what a request is: its route, its response id, its cache key.
 *
 * Pure functions of the method, the raw path and the raw query; no I/O.
 * Ids are validated before anything else: a bad one never reaches the
 * upstream.
 */
#ifndef RC_ROUTE_H
#define RC_ROUTE_H

#include <stddef.h>

#define ROUTE_ID_MAX	128

enum route_method {
	RM_GET, RM_POST, RM_DELETE, RM_HEAD, RM_PUT, RM_PATCH, RM_OPTIONS,
	RM_OTHER
};

enum route_kind {
	ROUTE_CREATE,		/* POST /v1/responses */
	ROUTE_RESPONSE,		/* GET|DELETE /v1/responses/{id} */
	ROUTE_INPUT_ITEMS,	/* GET /v1/responses/{id}/input_items */
	ROUTE_CANCEL,		/* POST /v1/responses/{id}/cancel */
	ROUTE_OTHER,		/* any other /v1/responses/...: forwarded */
	ROUTE_FORWARD,		/* any other path under /v1/: forwarded */
};

struct route {
	enum route_kind	 kind;
	enum route_method method;
	char		 id[ROUTE_ID_MAX + 1];	/* "" for CREATE */
	int		 stream;	/* GET with stream=true */
	int		 cacheable;	/* the answer may come from the cache:
					   a GET whose query names only the
					   parameters its route knows */
	char		*norm;		/* normalized query; set if cacheable */
};

/* An error the proxy answers itself. */
struct route_error {
	int		 status;	/* 400, 404 or 405 */
	const char	*code;		/* OpenAI error code */
	char		 message[256];
	const char	*allow;		/* for 405: the Allow header */
};

/*
 * Parse a request.  path is the raw (still percent-encoded) path, query the
 * raw query string or NULL; either holding a byte that is not visible
 * ASCII is refused.  Returns 0 and fills *r (free r->norm with
 * route_clear()), or -1 and fills *err.
 */
int	route_parse(enum route_method, const char *path, const char *query,
	    struct route *r, struct route_error *err);
void	route_clear(struct route *);

/* 1 if s is a valid response id: [A-Za-z0-9_-]{1,128}. */
int	route_valid_id(const char *s, size_t len);

/*
 * The cache key of a cacheable route for a tenant:
 * "<tenant>\0<kind>\0<id>\0<norm>".  Returns a new buffer (caller frees)
 * and its length in *len.
 */
char	*route_cache_key(const char *tenant, const struct route *,
	    size_t *len);
/*
 * The prefix that every key of one kind ('r' or 'i') of one id of one
 * tenant starts with; same contract as route_cache_key().
 */
char	*route_id_prefix(const char *tenant, char kind, const char *id,
	    size_t *len);

#endif
