/*
 * reply.h - answers the proxy makes itself, in the OpenAI error shape.
 */
#ifndef RC_REPLY_H
#define RC_REPLY_H

#include <stddef.h>

struct evbuffer;
struct evhttp_request;

/*
 * Send status with body (emptied, as any evhttp reply's), or for a HEAD
 * the headers alone; returns the body bytes sent.
 */
size_t	reply_send(struct evhttp_request *, int status, struct evbuffer *body);
/*
 * Send status with {"error":{"message","type","param":null,"code"}}.
 * type NULL means "invalid_request_error".  allow, if not NULL, becomes
 * the Allow header.  4xx answers say x-should-retry: false.  Returns the
 * body's length.
 */
size_t	reply_error(struct evhttp_request *, int status, const char *type,
	    const char *code, const char *message, const char *allow);
/* That error's body, {"error":{...}}; the caller frees it. */
char	*reply_error_json(const char *type, const char *code,
	    const char *message);
/*
 * Append the error as a stream's event, the way the API ends a stream
 * that failed: "event: error" with {"type":"error","error":{...}}.
 */
void	reply_error_event(struct evbuffer *, const char *type,
	    const char *code, const char *message);

/*
 * Call fn(arg, req, status, body length) after each answer evhttp makes
 * itself on this thread (a request it could not read), so that it is
 * logged and counted like the others.
 */
void	reply_on_error(void (*fn)(void *, struct evhttp_request *, int,
	    size_t), void *arg);

#endif
