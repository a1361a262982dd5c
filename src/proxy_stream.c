/*
 * proxy_stream.c - relaying an answer to its client as it comes: an
 * event stream, or a forwarded path's answer as bytes.
 *
 * The upstream transfer pauses while the client is behind (PAUSED) and
 * resumes once it has taken what was written.  A streamed create's events
 * are read on the way (sse.h) to fill the cache with its final Response.
 */
#include "config.h"

#include <string.h>
#include <sys/time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>

#include "log.h"
#include "proxy_int.h"
#include "reply.h"
#include "sse.h"
#include "upstream.h"
#include "xmalloc.h"

/*
 * A stream's upstream transfer pauses while this much of it waits to be
 * written to a slow client, and resumes once the client has taken it all.
 */
#define PROXY_STREAM_HIGH_WATER	(256 * 1024)

void
proxy_stream_start(struct proxy_req *pr, int sse)
{
	struct evkeyvalq	*out;

	pr->raw = !sse;
	/* A stream is one client's: anyone waiting fetches their own. */
	proxy_end_fetch(pr, NULL);
	if (pr->state == PR_ORPHANED) {
		proxy_req_finish(pr, 499, 0);	/* pr is gone */
		return;
	}
	proxy_req_set_state(pr, PR_STREAMING);
	if (!pr->raw)
		metrics_streams(pr->px->metrics, 1);
	if (pr->route.kind == ROUTE_CREATE && (!pr->no_store ||
	    tenant_owned(&pr->who)))
		pr->sse = sse_new(PROXY_MAX_BUFFERED, proxy_stream_event, pr);
	out = evhttp_request_get_output_headers(pr->req);
	proxy_copy_resp_headers(pr, out);
	evhttp_add_header(out, "Cache-Control", "no-cache");
	proxy_xcache(out, "BYPASS");
	evhttp_send_reply_start(pr->req, pr->status, NULL);
	/* A stream may be quiet for minutes: only a stalled write times out. */
	bufferevent_set_timeouts(evhttp_connection_get_bufferevent(
	    evhttp_request_get_connection(pr->req)), NULL, &pr->px->client_tv);
}

/* The bytes of the client's reply not yet written to its socket. */
static size_t
proxy_backlog(struct proxy_req *pr)
{
	struct evhttp_connection *evcon;

	evcon = evhttp_request_get_connection(pr->req);
	return (evbuffer_get_length(bufferevent_get_output(
	    evhttp_connection_get_bufferevent(evcon))));
}

/* evhttp: the client has taken all we wrote; go on reading upstream. */
static void
proxy_stream_drained(struct evhttp_connection *evcon, void *arg)
{
	struct proxy_req	*pr = arg;

	(void)evcon;
	if (pr->state != PR_PAUSED)
		return;
	proxy_req_set_state(pr, PR_STREAMING);
	upstream_resume(pr->ureq);	/* may relay, pause or end the stream */
}

/* Remember the last bytes relayed, to tell whether an event was cut. */
static void
proxy_stream_tail(struct proxy_req *pr, const char *p, size_t len)
{
	size_t	keep = len < sizeof pr->tail ? len : sizeof pr->tail;

	memmove(pr->tail, pr->tail + keep, sizeof pr->tail - keep);
	memcpy(pr->tail + sizeof pr->tail - keep, p + len - keep, keep);
	pr->relayed += len;
}

/* 1 if what was relayed ends between two events. */
static int
proxy_stream_at_boundary(const struct proxy_req *pr)
{
	const char	*t = pr->tail;

	if (pr->relayed == 0)
		return (1);
	if (pr->relayed >= 2 && ((t[2] == '\n' && t[3] == '\n') ||
	    (t[2] == '\r' && t[3] == '\r')))
		return (1);
	return (pr->relayed >= 4 && memcmp(t, "\r\n\r\n", 4) == 0);
}

int
proxy_stream_data(struct proxy_req *pr, const char *p, size_t len)
{
	struct evbuffer		*chunk;

	/* Hold the upstream while the client is behind. */
	if (proxy_backlog(pr) >= PROXY_STREAM_HIGH_WATER) {
		if (pr->state != PR_PAUSED)
			proxy_req_set_state(pr, PR_PAUSED);
		return (UPSTREAM_PAUSE);
	}
	/*
	 * Straight to the socket once evhttp knows to call
	 * proxy_stream_drained when what is queued is out.
	 */
	if (!pr->drain_cb || !reply_chunk_direct(pr->req, p, len)) {
		chunk = xevbuffer_new();
		evbuffer_add(chunk, p, len);
		evhttp_send_reply_chunk_with_cb(pr->req, chunk,
		    proxy_stream_drained, pr);
		evbuffer_free(chunk);
		pr->drain_cb = 1;
	}
	proxy_stream_tail(pr, p, len);
	/* Relay first: reading the stream adds no delay to it. */
	if (pr->sse != NULL)
		sse_feed(pr->sse, p, len);
	return (UPSTREAM_CONTINUE);
}

/*
 * A stream cut short (code not NULL) ends with an error event, as the
 * API's own failed streams do, so the SDKs raise an error instead of
 * taking a short stream for a whole one.  Cut in the middle of an event,
 * the connection is closed without the last chunk instead: the client
 * sees a truncated body, not a broken event.  Bytes, not events, have no
 * error event to end with.
 */
void
proxy_stream_end(struct proxy_req *pr, const char *type, const char *code,
    const char *message)
{
	struct evhttp_connection *evcon;
	struct evbuffer		 *ev;

	proxy_unwatch_client(pr);
	if (code != NULL && (pr->raw || !proxy_stream_at_boundary(pr))) {
		evcon = evhttp_request_get_connection(pr->req);
		pr->cut = 1;
		proxy_req_finish(pr, pr->status, pr->relayed);	/* pr is gone */
		evhttp_connection_free(evcon);
		return;
	}
	if (code != NULL) {
		ev = xevbuffer_new();
		reply_error_event(ev, type, code, message);
		evhttp_send_reply_chunk(pr->req, ev);
		evbuffer_free(ev);
	}
	proxy_req_finish(pr, pr->status, pr->relayed);	/* ends the reply */
}
