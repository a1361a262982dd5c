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

#include <event2/http.h>

#define ROUTE_ID_MAX	128

enum route_method {
	RM_GET, RM_POST, RM_DELETE, RM_HEAD, RM_PUT, RM_PATCH, RM_OPTIONS,
	RM_OTHER
};

/*
 * The kinds of key in the cache, the byte after the tenant in
 * "<tenant>\0<kind>\0<id>\0...": every module that makes or reads keys
 * names them from here.
 */
enum route_key_kind {
	RK_RESPONSE = 'r',	/* GET /v1/responses/{id}[?query] */
	RK_INPUT_ITEMS = 'i',	/* GET /v1/responses/{id}/input_items[?query] */
	RK_TOMBSTONE = 't',	/* a tenant's 404 for a deleted id */
	RK_OWNER = 'o',		/* the client that created an id */
};
/* The kinds of an id's answers; and those with its tombstone. */
#define ROUTE_KINDS_ANSWERS	"ri"
#define ROUTE_KINDS_ALL		"rit"

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
	int		 creates;	/* POST /v1/conversations: its answer's
					   id becomes its creator's */
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

/* A request's method, from evhttp's; and its name, by the enum. */
enum route_method route_method_of(enum evhttp_cmd_type);
const char	*route_method_name(enum route_method);
/* The method as the request line said it (TRACE, CONNECT too). */
const char	*route_cmd_name(enum evhttp_cmd_type);

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
 * The prefix that every key of one kind of one id of one tenant starts
 * with; same contract as route_cache_key().
 */
char	*route_id_prefix(const char *tenant, enum route_key_kind,
	    const char *id, size_t *len);

#endif
