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
	char	previous[ROUTE_ID_MAX + 1];	/* previous_response_id */
	char	conversation[ROUTE_ID_MAX + 1];	/* conversation, or its id */
};

/*
 * Read a POST's JSON body whole.  Returns 0 and fills *rq, or -1 and a
 * reason in why (size bytes) when the body is not one JSON object that
 * the proxy reads exactly as written: not JSON, a number or string that
 * jansson cannot hold (1e400, an integer past 64 bits, "\u0000"), a
 * repeated key, a previous_response_id that is not a string, or a
 * conversation that is neither a string nor an object with an id.  A body
 * the proxy cannot read whole is never forwarded on a route whose rules
 * depend on it: the upstream's parser might read it otherwise.
 */
int	response_request_read(const char *body, size_t len,
	    struct response_request *rq, char *why, size_t size);

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
