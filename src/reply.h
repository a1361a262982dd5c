/*
 * reply.h - answers the proxy makes itself, in the OpenAI error shape.
 */
#ifndef RC_REPLY_H
#define RC_REPLY_H

#include <stddef.h>

struct bufferevent;
struct evbuffer;
struct evhttp_request;

/* The reason phrase the proxy sends with status, or NULL. */
const char	*reply_phrase(int status);

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
/* As an event (a stream's, a WebSocket's): {"type":"error","error":{...}}. */
char	*reply_error_text(const char *type, const char *code,
	    const char *message, int event);
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
 * A reply the caller formatted whole, for the hit path: head is the
 * status line to the blank line (with Date and Content-Length), and
 * evhttp formats nothing of its own.  Only for a request that
 * reply_direct_ok() allows: a GET, POST or DELETE over HTTP/1.1 that does
 * not close its connection (evhttp would add a header to the others),
 * and a status with a body (not 1xx, 204 or 304).  The bytes go
 * straight to the socket when nothing is queued before them.  Once the
 * caller is done with req, reply_direct_done() with its connection's
 * bufferevent ends it, at once if all was written: req is gone then.
 */
int	reply_direct_ok(struct evhttp_request *);
void	reply_direct(struct evhttp_request *, int status, const char *head,
	    size_t hlen, const void *body, size_t blen);
void	reply_direct_done(struct bufferevent *);

/*
 * One chunk of a reply evhttp_send_reply_start() made chunked, written
 * straight to the socket when nothing is queued before it; what the
 * socket does not take is queued behind.  0 if it did nothing (not
 * chunked, or bytes queued already): evhttp_send_reply_chunk() then.
 */
int	reply_chunk_direct(struct evhttp_request *, const void *, size_t);

/*
 * Call fn(arg, req, status, body length) after each answer evhttp makes
 * itself on this thread (a request it could not read), so that it is
 * logged and counted like the others.
 */
void	reply_on_error(void (*fn)(void *, struct evhttp_request *, int,
	    size_t), void *arg);

#endif
