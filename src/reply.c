/*
 * reply.c - the proxy's own answers, in the OpenAI error shape.
 *
 * libevent 2.1 answers some malformed requests itself (a body over
 * max_body_size, bad header lines, an unknown method) through
 * evhttp_send_error(), whose body is an HTML page.  The OpenAI SDKs cannot
 * read that, so this file also defines evhttp_send_error(): the dynamic
 * linker binds libevent's own calls to this definition, and every error
 * the client sees has the one JSON shape.  (libevent 2.2 has
 * evhttp_set_errorcb() for this.)
 */
#include "config.h"

#include <sys/types.h>
#include <sys/queue.h>
#include <sys/uio.h>

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/http_struct.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "fmt.h"
#include "log.h"
#include "reply.h"
#include "xmalloc.h"

/* This thread's listener for evhttp's own error answers; see reply.h. */
static __thread void	(*reply_hook)(void *, struct evhttp_request *, int,
			    size_t);
static __thread void	*reply_hook_arg;

void
reply_on_error(void (*fn)(void *, struct evhttp_request *, int, size_t),
    void *arg)
{
	reply_hook = fn;
	reply_hook_arg = arg;
}

const char *
reply_phrase(int status)
{
	switch (status) {
	case 200: return ("OK");
	case 201: return ("Created");
	case 202: return ("Accepted");
	case 304: return ("Not Modified");
	case 400: return ("Bad Request");
	case 401: return ("Unauthorized");
	case 403: return ("Forbidden");
	case 404: return ("Not Found");
	case 405: return ("Method Not Allowed");
	case 409: return ("Conflict");
	case 413: return ("Payload Too Large");
	case 417: return ("Expectation Failed");
	case 426: return ("Upgrade Required");
	case 429: return ("Too Many Requests");
	case 431: return ("Request Header Fields Too Large");
	case 500: return ("Internal Server Error");
	case 501: return ("Not Implemented");
	case 502: return ("Bad Gateway");
	case 503: return ("Service Unavailable");
	case 504: return ("Gateway Timeout");
	default: return (NULL);
	}
}

/* {"error":{...}}, or as a stream's error event {"type":"error",...}. */
char *
reply_error_text(const char *type, const char *code, const char *message,
    int event)
{
	json_t	*err, *body;
	char	*text;

	err = json_pack("{s:s, s:s, s:n, s:s?}",
	    "message", message,
	    "type", type != NULL ? type : "invalid_request_error",
	    "param",
	    "code", code);
	body = event ? json_pack("{s:s, s:o}", "type", "error", "error", err) :
	    json_pack("{s:o}", "error", err);
	if (body == NULL || (text = json_dumps(body, JSON_COMPACT)) == NULL)
		fatalx("out of memory");
	json_decref(body);
	return (text);
}

char *
reply_error_json(const char *type, const char *code, const char *message)
{
	return (reply_error_text(type, code, message, 0));
}

void
reply_error_event(struct evbuffer *out, const char *type, const char *code,
    const char *message)
{
	char	*text;

	text = reply_error_text(type, code, message, 1);
	evbuffer_add_printf(out, "event: error\ndata: %s\n\n", text);
	free(text);
}

size_t
reply_send(struct evhttp_request *req, int status, struct evbuffer *body)
{
	size_t	len = evbuffer_get_length(body);

	/* libevent 2.1 would send a HEAD's body: the next reply's bytes. */
	if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
		evbuffer_drain(body, len);
		len = 0;
	}
	evhttp_send_reply(req, status, reply_phrase(status), body);
	return (len);
}

size_t
reply_error(struct evhttp_request *req, int status, const char *type,
    const char *code, const char *message, const char *allow)
{
	struct evkeyvalq	*out = evhttp_request_get_output_headers(req);
	struct evbuffer		*buf;
	char			*text;
	size_t			 len;

	text = reply_error_json(type, code, message);
	buf = xevbuffer_new();
	len = strlen(text);
	evbuffer_add(buf, text, len);
	free(text);
	evhttp_add_header(out, "Content-Type", "application/json");
	if (status < 500)
		evhttp_add_header(out, "x-should-retry", "false");
	if (allow != NULL)
		evhttp_add_header(out, "Allow", allow);
	len = reply_send(req, status, buf);
	evbuffer_free(buf);
	return (len);
}

int
reply_direct_ok(struct evhttp_request *req)
{
	const char	*conn;

	/* What evhttp_make_header() would add a header of its own for. */
	switch (evhttp_request_get_command(req)) {
	case EVHTTP_REQ_GET:
	case EVHTTP_REQ_POST:
	case EVHTTP_REQ_DELETE:
		break;
	default:
		return (0);
	}
	if (req->major != 1 || req->minor != 1 ||
	    (req->flags & EVHTTP_PROXY_REQUEST) ||
	    evhttp_request_get_connection(req) == NULL)
		return (0);
	conn = evhttp_find_header(evhttp_request_get_input_headers(req),
	    "Connection");
	return (conn == NULL || evutil_ascii_strcasecmp(conn, "close") != 0);
}

/*
 * The head and body go to the socket first, and only what it does not
 * take is queued.  evhttp_send_reply() then does its bookkeeping on an
 * output buffer frozen at its end, so that all it formats is dropped;
 * stand-ins for the headers it would otherwise make up (and allocate)
 * are in its list only for that call.
 */
void
reply_direct(struct evhttp_request *req, int status, const char *head,
    size_t hlen, const void *body, size_t blen)
{
	static const char *const stand_names[] = {
		"Date", "Content-Length", "Content-Type"
	};
	struct evkeyvalq	*hdrs = evhttp_request_get_output_headers(req);
	struct evkeyval		 stand[3];
	struct bufferevent	*bev;
	struct evbuffer		*out;
	struct iovec		 iov[2];
	ssize_t			 n = 0;
	size_t			 i;

	bev = evhttp_connection_get_bufferevent(
	    evhttp_request_get_connection(req));
	out = bufferevent_get_output(bev);
	if (evbuffer_get_length(out) == 0) {
		iov[0].iov_base = (void *)(uintptr_t)head;
		iov[0].iov_len = hlen;
		iov[1].iov_base = (void *)(uintptr_t)body;
		iov[1].iov_len = blen;
		do
			n = writev(bufferevent_getfd(bev), iov, 2);
		while (n == -1 && errno == EINTR);
		/* A full socket, or an error its next write meets again. */
		if (n < 0)
			n = 0;
	}
	if ((size_t)n < hlen) {
		if (evbuffer_expand(out, hlen - (size_t)n + blen) == -1 ||
		    evbuffer_add(out, head + n, hlen - (size_t)n) == -1)
			fatalx("out of memory");
		n = 0;
	} else
		n -= (ssize_t)hlen;
	if ((size_t)n < blen &&
	    evbuffer_add(out, (const char *)body + n, blen - (size_t)n) == -1)
		fatalx("out of memory");

	for (i = 0; i < 3; i++) {
		stand[i].key = (char *)(uintptr_t)stand_names[i];
		stand[i].value = (char *)(uintptr_t)"";
		TAILQ_INSERT_TAIL(hdrs, &stand[i], next);
	}
	evbuffer_freeze(out, 0);
	evhttp_send_reply(req, status, reply_phrase(status), NULL);
	evbuffer_unfreeze(out, 0);
	for (i = 0; i < 3; i++)
		TAILQ_REMOVE(hdrs, &stand[i], next);
}

void
reply_direct_done(struct bufferevent *bev)
{
	/*
	 * All written: evhttp's write callback now, in place of a turn of
	 * the loop for a writable socket (and write interest set, then
	 * cleared, in the poller).
	 */
	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		bufferevent_trigger(bev, EV_WRITE, 0);
}

/*
 * Like reply_direct(), for a chunk: with nothing queued, the chunk goes
 * to the socket in one writev and evhttp never sets write interest for
 * it (two epoll_ctl and a loop turn per relayed event, else).  The rest,
 * if the socket does not take it all, is queued where evhttp's own
 * chunks go: the bufferevent writes it, and its write callback (the one
 * evhttp_send_reply_chunk_with_cb() set last) runs once all is out.
 */
int
reply_chunk_direct(struct evhttp_request *req, const void *p, size_t len)
{
	static const char	 crlf[] = "\r\n";
	struct bufferevent	*bev;
	struct evbuffer		*out;
	struct iovec		 iov[3];
	char			 size[24], *e;
	ssize_t			 n;
	size_t			 i, skip;

	if (!req->chunked || len == 0 ||
	    evhttp_request_get_connection(req) == NULL)
		return (0);
	bev = evhttp_connection_get_bufferevent(
	    evhttp_request_get_connection(req));
	out = bufferevent_get_output(bev);
	if (evbuffer_get_length(out) != 0)
		return (0);
	e = fmt_hex(size, size + sizeof size, len);
	e = fmt_lit(e, size + sizeof size, "\r\n");
	iov[0].iov_base = size;
	iov[0].iov_len = (size_t)(e - size);
	iov[1].iov_base = (void *)(uintptr_t)p;
	iov[1].iov_len = len;
	iov[2].iov_base = (void *)(uintptr_t)crlf;
	iov[2].iov_len = 2;
	do
		n = writev(bufferevent_getfd(bev), iov, 3);
	while (n == -1 && errno == EINTR);
	/* A full socket, or an error its next write meets again. */
	skip = n < 0 ? 0 : (size_t)n;
	for (i = 0; i < 3; i++) {
		if (skip >= iov[i].iov_len) {
			skip -= iov[i].iov_len;
			continue;
		}
		if (evbuffer_add(out, (char *)iov[i].iov_base + skip,
		    iov[i].iov_len - skip) == -1)
			fatalx("out of memory");
		skip = 0;
	}
	/* Queued: evhttp left write enabled, so the bufferevent writes it. */
	return (1);
}

/*
 * Replaces libevent's evhttp_send_error() (see the top of this file).
 * libevent calls it for requests it could not read whole; those may not
 * have a usable connection state to keep, so the answer closes it.
 */
void
evhttp_send_error(struct evhttp_request *req, int error, const char *reason)
{
	const char	*code, *msg;
	size_t		 len;

	(void)reason;
	switch (error) {
	case 413:
		code = "request_too_large";
		msg = "The request body is larger than this proxy accepts.";
		break;
	case 400:
		code = "bad_request";
		msg = "The request could not be read: malformed or too large "
		    "headers, or a bad body framing.";
		break;
	case 405:
	case 501:
		error = 405;
		code = "method_not_allowed";
		msg = "Method not allowed.";
		break;
	case 404:
		code = "unknown_route";
		msg = "Unknown route.";
		break;
	default:
		code = "bad_request";
		msg = "The request could not be served.";
		break;
	}
	/* A request whose first line could not be read has no version. */
	if (req->major == 0) {
		req->major = 1;
		req->minor = 1;
	}
	evhttp_clear_headers(evhttp_request_get_output_headers(req));
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Connection", "close");
	len = reply_error(req, error, NULL, code, msg, NULL);
	if (reply_hook != NULL)
		reply_hook(reply_hook_arg, req, error, len);
}
