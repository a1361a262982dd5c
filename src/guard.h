/*
 * guard.h - watching what clients send, below evhttp.
 *
 * evhttp (libevent 2.1) cuts a header value at a NUL byte and forwards
 * the rest, and its client_timeout is an idle timeout: a client that
 * sends a header byte every few seconds holds its connection forever.
 * The guard sees every byte a client sends, as it is read:
 *  - a NUL byte in a request's headers or body (no JSON body may hold
 *    one) marks it bad, and the proxy answers it 400;
 *  - a request whose headers have not all arrived within client_timeout
 *    of its first byte has its connection shut.
 * State is kept per socket, in a table indexed by descriptor, one table
 * per worker thread: call guard_init() and guard_free() on that thread.
 */
#ifndef RC_GUARD_H
#define RC_GUARD_H

struct evhttp;
struct evhttp_request;
struct timeval;

/* Watch every connection http accepts from now on. */
void	guard_init(struct evhttp *, const struct timeval *header_timeout);
void	guard_free(void);
/*
 * The request is in the proxy's hands: its headers are in.  Returns -1 if
 * a NUL byte came with it (answer 400 and close), 0 otherwise.
 */
int	guard_request(struct evhttp_request *);
/* Its answer is written: the next bytes begin a new request. */
void	guard_done(struct evhttp_request *);

#endif
