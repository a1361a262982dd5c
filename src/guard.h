/*
 * guard.h - watching what clients send, below evhttp.
 *
 * evhttp (libevent 2.1) reads request heads laxly: it ignores a
 * "Content-Length : 5" (space before the colon) instead of refusing it,
 * takes "+31" for 31, folds lines, cuts a header value at a NUL byte and
 * lets a raw space into the target; a body it did not see as one is then
 * run as a second request.  And its client_timeout is an idle timeout: a
 * client that sends a header byte every few seconds holds its connection
 * forever.  The guard sees every byte a client sends, as it is read and
 * before evhttp parses it:
 *  - each request head is checked strictly (guard_head_feed below); a
 *    bad one, or a NUL byte in a body, makes the request bad, and the
 *    proxy answers it 400 and closes the connection, so that nothing
 *    after it on that connection is run;
 *  - a request whose headers have not all arrived within client_timeout
 *    of its first byte has its connection shut.
 * State is kept per socket, in a table indexed by descriptor, one table
 * per worker thread: call guard_init() and guard_free() on that thread.
 */
#ifndef RC_GUARD_H
#define RC_GUARD_H

#include <stddef.h>
#include <stdint.h>

struct evhttp;
struct evhttp_request;
struct timeval;

/* Watch every connection http accepts from now on. */
void	guard_init(struct evhttp *, const struct timeval *header_timeout);
void	guard_free(void);
/*
 * The request is in the proxy's hands: its headers and body are in.
 * Returns -1 with *cause (a static sentence for the client) if its head
 * broke the rules of guard_head_feed(): answer 400 and close.  Returns 0
 * otherwise.
 */
int	guard_request(struct evhttp_request *, const char **cause);
/*
 * 1 if the request's body holds a NUL byte, which no JSON body does (a
 * file upload may).
 */
int	guard_body_nul(struct evhttp_request *);
/*
 * A CONNECT is refused: stop reading its connection and drop what came
 * behind it, so nothing after it is ever run (libevent would keep the
 * connection open as a tunnel; see guard_done()).
 */
void	guard_refuse_tunnel(struct evhttp_request *);
/*
 * Its answer is written: the next bytes begin a new request.  Call it
 * after every answer on a connection kept open: a request that comes
 * after one never done is refused.  A refused CONNECT's connection is
 * shut instead (see guard_refuse_tunnel()).
 */
void	guard_done(struct evhttp_request *);

/*
 * A strict validator of one HTTP/1.x request head, fed its bytes in any
 * pieces; a pure function of those bytes (the same verdict, and the same
 * end, however they are split), with no allocation.  It accepts:
 *
 *   method SP request-target SP "HTTP/1." DIGIT EOL
 *   *( field-name ":" OWS field-value OWS EOL )
 *   EOL
 *
 * where EOL is CRLF or a bare LF (as evhttp reads lines), method and
 * field-name are 1*tchar (RFC 9110 5.6.2: no space in a name or before
 * its colon), the target is 1*(visible ASCII), and a value holds no
 * control byte but HTAB (so no NUL and no CR but the one ending its
 * line).  Refused besides: a line that starts with SP or HTAB (obs-fold);
 * a Content-Length that is not 1*DIGIT, or given twice; a
 * Transfer-Encoding that is not "chunked", given twice, with a
 * Content-Length, or on HTTP/1.0; not exactly one Host on HTTP/1.1, or
 * more than one on HTTP/1.0 (RFC 9112 3.2, 5.1, 6.1, 6.3).
 */
struct guard_head {
	const char	*cause;		/* why the head is bad, or NULL */
	uint32_t	 len;		/* of the token being read */
	uint8_t		 state;
	uint8_t		 field;		/* which field's value is read */
	uint8_t		 names;		/* fields the name may still be */
	uint8_t		 minor;		/* HTTP/1.minor */
	uint8_t		 nhost, ncl, nte;
	uint8_t		 vstate;	/* within a checked value */
};

void	guard_head_init(struct guard_head *);
/*
 * Feed the next n bytes of the head.  Returns how many of them the head
 * takes if it ends among them (its blank line included), or 0 if it goes
 * on.  After the end, h->cause says whether the head is bad.  A head
 * found bad early is only read on for its end, the way evhttp finds it.
 */
size_t	guard_head_feed(struct guard_head *, const char *, size_t);
/* 1 once the head has ended. */
int	guard_head_done(const struct guard_head *);

#endif
