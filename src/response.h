/*
 * response.h - what the proxy needs to know of a Response object.
 */
#ifndef RC_RESPONSE_H
#define RC_RESPONSE_H

#include <stddef.h>

#include "route.h"

struct response_info {
	char	id[ROUTE_ID_MAX + 1];	/* "" if absent or not a valid id */
	int	final;		/* status is completed|failed|cancelled|incomplete */
	int	store_false;	/* "store": false */
};

/*
 * Parse a JSON Response body.  Returns 0 and fills *info, or -1 if the
 * body is not a JSON object.
 */
int	response_inspect(const char *body, size_t len, struct response_info *);
/* 1 if status names a terminal state. */
int	response_status_final(const char *status);
/* What the proxy needs to know of a create's request body. */
struct response_request {
	int	stream;		/* "stream": true */
	int	include;	/* a non-empty "include": its answer is not
				   the plain GET's */
	int	duplicate_keys;	/* an object repeats a key: two parsers
				   could read it two ways */
	char	previous[ROUTE_ID_MAX + 1];	/* previous_response_id */
};

/*
 * Read a create's JSON body.  A body that is not JSON asks for nothing
 * (the upstream will say what is wrong with it).
 */
void	response_request_read(const char *body, size_t len,
	    struct response_request *);

/*
 * If an SSE event (its type, "" if none, and its data) is a final event
 * of a stream (response.completed, .failed, .incomplete) that carries a
 * Response, return it as new compact JSON (caller frees; its length in
 * *len) and fill *info.  NULL otherwise.
 */
char	*response_from_event(const char *type, const char *data, size_t len,
	    struct response_info *info, size_t *outlen);

/*
 * The id of the Response an event carries (response.created, say) into
 * id; 0, or -1 if it carries none.
 */
int	response_event_id(const char *data, size_t len,
	    char id[ROUTE_ID_MAX + 1]);

#endif
