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
/*
 * 1 if a JSON request body asks for a stream ("stream": true).  A body
 * that is not JSON is not a stream (the upstream will say what is wrong).
 */
int	response_request_streams(const char *body, size_t len);

/*
 * If an SSE event (its type, "" if none, and its data) is a final event
 * of a stream (response.completed, .failed, .incomplete) that carries a
 * Response, return it as new compact JSON (caller frees; its length in
 * *len) and fill *info.  NULL otherwise.
 */
char	*response_from_event(const char *type, const char *data, size_t len,
	    struct response_info *info, size_t *outlen);

#endif
