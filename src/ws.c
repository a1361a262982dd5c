/*
 * ws.c - WebSocket mode on GET /v1/responses (ws.h).
 *
 * A client's upgrade, once admitted (its key known, its credential
 * chosen), opens the upstream's WebSocket first: a TCP connection from
 * the worker's loop, a handshake of ours with the credential's key in
 * place of the client's, its answer read with http_parser.  Only once
 * the upstream said 101 (and the right Sec-WebSocket-Accept) does the
 * client get its 101; any other answer becomes the client's, with an
 * OpenAI-shaped body.  Then the connection's own bufferevent is borrowed
 * from evhttp (which waits for a reply that never comes; the connection
 * goes with the relay) and wslay frames both sides: a server context for the client
 * (its masking removed), a client context for the upstream (ours added).
 * Whole messages are relayed, control frames too (a ping is answered by
 * wslay and passed on); a close passes with its code and reason, then
 * both sockets close.  A side whose peer has more than WS_HIGH_WATER
 * unwritten is not read until it has taken it.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/queue.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <http_parser.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <wslay/wslay.h>

#include "credential.h"
#include "response.h"
#include "tenant.h"
#include "log.h"
#include "metrics.h"
#include "proxy_int.h"
#include "reply.h"
#include "ws.h"
#include "ws_msg.h"
#include "xmalloc.h"

#define WS_GUID		"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_MAX_MSG	(16 * 1024 * 1024)	/* over it: close 1009 */
#define WS_HIGH_WATER	(1024 * 1024)		/* a peer's unwritten bytes */
#define WS_HEAD_MAX	(64 * 1024)		/* the upstream's 101 head */

struct ws_relay;

struct ws_side {
	struct ws_relay		*r;
	struct bufferevent	*bev;
	struct evhttp_connection *evcon;	/* the client's: it owns bev */
	wslay_event_context_ptr	 ctx;
	const char		*name;
	int			 closed;	/* its socket is done */
	int			 closing;	/* a close of ours is on its way */
};

struct ws_relay {
	struct proxy		*px;
	struct proxy_req	*pr;		/* until the client's 101 */
	struct ws_list		*list;
	LIST_ENTRY(ws_relay)	 entry;
	uint64_t		 serial;
	struct ws_side		 c;		/* the client */
	struct ws_side		 u;		/* the upstream */
	char			 accept[32];	/* the client's answer */
	char			 uaccept[32];	/* the upstream's, expected */
	http_parser		 hp;
	http_parser_settings	 hps;
	int			 head_done;
	int			 in_accept;	/* the header being read */
	int			 accept_ok;
	int			 status;
	struct evbuffer		*body;		/* a refusal's */
	int			 body_done;
	/* Who the client is, for its turns' ids (held: see keys). */
	struct keyring		*keys;
	struct tenant_who	 who;
	int			 turn_no_store;	/* this turn's create had include */
	int			 counted;	/* in websockets_open */
	struct event		*idle;		/* no message either way */
	time_t			 turn_since;	/* when this turn went upstream */
};

struct ws_list {
	LIST_HEAD(, ws_relay)	 all;
	int			 freeing;
};

static struct log_limit	ws_lim;

int
ws_upgrade_asked(struct evhttp_request *req)
{
	const char	*u = evhttp_find_header(
	    evhttp_request_get_input_headers(req), "Upgrade");

	return (u != NULL && proxy_conn_names(u, "websocket"));
}

/* base64(SHA-1(key GUID)): a Sec-WebSocket-Accept. */
static int
ws_accept_of(const char *key, char out[32])
{
	unsigned char	md[EVP_MAX_MD_SIZE];
	unsigned int	mdlen;
	char		buf[128];

	if (snprintf(buf, sizeof buf, "%s%s", key, WS_GUID) >=
	    (int)sizeof buf || EVP_Digest(buf, strlen(buf), md, &mdlen,
	    EVP_sha1(), NULL) != 1 || mdlen != 20)
		return (-1);
	EVP_EncodeBlock((unsigned char *)out, md, 20);
	return (0);
}

/* A client's Sec-WebSocket-Key: base64 of 16 bytes (RFC 6455 4.1). */
static int
ws_key_ok(const char *key)
{
	unsigned char	raw[32];

	return (key != NULL && strlen(key) == 24 &&
	    EVP_DecodeBlock(raw, (const unsigned char *)key, 24) == 18 &&
	    key[22] == '=' && key[23] == '=');
}

/* ------------------------------------------------------------------ */
/* Tearing down                                                        */
/* ------------------------------------------------------------------ */

static void
ws_side_free(struct ws_side *s)
{
	if (s->ctx != NULL)
		wslay_event_context_free(s->ctx);
	s->ctx = NULL;
	if (s->evcon != NULL)
		evhttp_connection_free(s->evcon);	/* and bev, its socket */
	else if (s->bev != NULL)
		bufferevent_free(s->bev);	/* closes its socket */
	s->bev = NULL;
	s->evcon = NULL;
}

static void
ws_free(struct ws_relay *r)
{
	int	gone = r->list != NULL && !r->list->freeing;

	if (r->pr != NULL)
		r->pr->ws = NULL;
	if (r->list != NULL)
		LIST_REMOVE(r, entry);
	ws_side_free(&r->c);
	ws_side_free(&r->u);
	if (r->body != NULL)
		evbuffer_free(r->body);
	keyring_unref(r->keys);
	if (r->idle != NULL)
		event_free(r->idle);
	if (r->counted)
		metrics_ws_open(r->px->metrics, -1);
	if (gone)
		proxy_ws_gone(r->px);
	free(r);
}

/* Free r once both sockets are done (closed, and what was queued written). */
static void
ws_maybe_free(struct ws_relay *r)
{
	if (r->c.closed && r->u.closed)
		ws_free(r);
}

/* ------------------------------------------------------------------ */
/* Frames, once both are open                                          */
/* ------------------------------------------------------------------ */

static struct ws_side *
ws_peer(struct ws_side *s)
{
	return (s == &s->r->c ? &s->r->u : &s->r->c);
}

static ssize_t
ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
    void *arg)
{
	struct ws_side	*s = arg;
	int		 n;

	(void)flags;
	n = evbuffer_remove(bufferevent_get_input(s->bev), buf, len);
	if (n <= 0) {
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return (-1);
	}
	return (n);
}

static ssize_t
ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
    int flags, void *arg)
{
	struct ws_side	*s = arg;

	(void)flags;
	if (evbuffer_add(bufferevent_get_output(s->bev), data, len) == -1) {
		wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
		return (-1);
	}
	return ((ssize_t)len);
}

static int
ws_genmask_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
    void *arg)
{
	(void)arg;
	if (RAND_bytes(buf, (int)len) != 1) {
		wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
		return (-1);
	}
	return (0);
}

static void	ws_flush(struct ws_side *);
static void	ws_close_peer_with(struct ws_side *, uint16_t, const uint8_t *,
		    size_t);
static void	ws_read_cb(struct bufferevent *, void *);
static int	ws_side_open(struct ws_side *, int);


/*
 * A client's response.create that names another client's previous
 * response or conversation: the API's own error event, and nothing
 * upstream.  Returns 1 if it was refused.
 */
static int
ws_client_turn(struct ws_relay *r, const struct wslay_event_on_msg_recv_arg *m)
{
	static const char *const creates[] = { "response.create", NULL };
	struct response_request	 rq;
	struct route		 rt;
	struct wslay_event_msg	 msg;
	const char		*what = "", *label = "Response";
	char			 type[64], why[200], *text, *note;

	if (!ws_msg_type(m->msg, m->msg_length, creates, type, sizeof type) ||
	    strcmp(type, "response.create") != 0)
		return (0);
	r->turn_since = time(NULL);
	if (response_request_read((const char *)m->msg, m->msg_length, &rq,
	    why, sizeof why) == -1) {
		r->turn_no_store = 1;
		if (!tenant_owned(&r->who))
			return (0);
		/* Unreadable exactly: its ids cannot be checked. */
		xasprintf(&note, "The response.create is not JSON that "
		    "respcache can read exactly: %s.", why);
		text = reply_error_text("invalid_request_error",
		    "invalid_json", note, 1);
		free(note);
	} else {
		r->turn_no_store = rq.include;
		memset(&rt, 0, sizeof rt);
		rt.kind = ROUTE_CREATE;
		rt.method = RM_POST;
		if (tenant_may_use(r->px->cache, &r->who, &rt, &rq, &what,
		    &label))
			return (0);
		note = proxy_not_found_msg(label, what);
		text = reply_error_text("invalid_request_error",
		    strcmp(label, "Previous response") == 0 ?
		    "previous_response_not_found" : "not_found", note, 1);
		free(note);
	}
	msg.opcode = WSLAY_TEXT_FRAME;
	msg.msg = (const uint8_t *)text;
	msg.msg_length = strlen(text);
	wslay_event_queue_msg(r->c.ctx, &msg);
	free(text);
	return (1);
}

/* What the upstream says of a turn fills the cache, as a stream's does. */
static void
ws_upstream_event(struct ws_relay *r,
    const struct wslay_event_on_msg_recv_arg *m)
{
	static const char *const wanted[] = {
		"response.created", "response.completed", "response.failed",
		"response.incomplete", NULL
	};
	struct response_info	 info;
	char			 type[64], *body;
	size_t			 blen;

	if (!ws_msg_type(m->msg, m->msg_length, wanted, type, sizeof type))
		return;
	if (strcmp(type, "response.created") == 0) {
		if (response_event_id((const char *)m->msg, m->msg_length,
		    info.id) == 0)
			proxy_own_who(r->px, &r->who, info.id);
		return;
	}
	if (r->turn_no_store || (body = response_from_event(type,
	    (const char *)m->msg, m->msg_length, &info, &blen)) == NULL)
		return;
	proxy_store_ws(r->px, r->who.tenant, info.id, body, blen,
	    r->turn_since);
	free(body);
}

/* A message from one side goes to the other as it came. */
static void
ws_msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg
    *m, void *arg)
{
	struct ws_side		*s = arg, *p = ws_peer(s);
	struct wslay_event_msg	 msg;
	uint16_t		 code;

	(void)ctx;
	if (p->ctx == NULL || p->closed)
		return;
	if (m->opcode == WSLAY_CONNECTION_CLOSE) {
		/* Its code and reason, after the 2-byte code in the payload. */
		code = m->status_code;
		ws_close_peer_with(p, code, m->msg_length > 2 ? m->msg + 2 :
		    NULL, m->msg_length > 2 ? m->msg_length - 2 : 0);
		return;
	}
	if (m->opcode == WSLAY_TEXT_FRAME && s == &s->r->c &&
	    ws_client_turn(s->r, m))
		return;		/* refused here, answered with an error */
	if (m->opcode == WSLAY_TEXT_FRAME && s == &s->r->u)
		ws_upstream_event(s->r, m);
	metrics_ws_message(s->r->px->metrics, s == &s->r->c, m->msg_length);
	if (s->r->idle != NULL)
		evtimer_add(s->r->idle, &s->r->px->ws_idle);
	/* wslay answers a ping itself; the peer's pong comes back too. */
	msg.opcode = m->opcode;
	msg.msg = m->msg;
	msg.msg_length = m->msg_length;
	if (wslay_event_queue_msg(p->ctx, &msg) != 0)
		log_debug("req=%llu: websocket: %s message not relayed",
		    (unsigned long long)s->r->serial, s->name);
}

static const struct wslay_event_callbacks ws_callbacks = {
	ws_recv_cb, ws_send_cb, ws_genmask_cb, NULL, NULL, NULL, ws_msg_cb
};

/*
 * Write what wslay queued for s; once its close went both ways, s is
 * done: its socket closes when what is written has left.
 */
static void
ws_flush(struct ws_side *s)
{
	if (s->closed || s->ctx == NULL)
		return;
	if (wslay_event_send(s->ctx) != 0)
		wslay_event_shutdown_write(s->ctx);
	if (!wslay_event_want_read(s->ctx) && !wslay_event_want_write(s->ctx))
		s->closed = -1;		/* done once written */
}

/* A side with nothing left to write, and done: close its socket. */
static void
ws_close_if_done(struct ws_side *s)
{
	if (s->closed == -1 && evbuffer_get_length(
	    bufferevent_get_output(s->bev)) == 0) {
		s->closed = 1;
		bufferevent_disable(s->bev, EV_READ | EV_WRITE);
		shutdown(bufferevent_getfd(s->bev), SHUT_RDWR);
	}
}

/* Read s only while its peer has room for what it sends on. */
static void
ws_pace(struct ws_side *s)
{
	struct ws_side	*p = ws_peer(s);

	if (s->closed == 1)
		return;
	/*
	 * Not while its peer is behind, nor while it does not take what is
	 * written to it (pongs, error events), nor once wslay reads no more.
	 */
	if ((!p->closed && evbuffer_get_length(bufferevent_get_output(
	    p->bev)) >= WS_HIGH_WATER) || evbuffer_get_length(
	    bufferevent_get_output(s->bev)) >= WS_HIGH_WATER ||
	    (s->ctx != NULL && !wslay_event_want_read(s->ctx)))
		bufferevent_disable(s->bev, EV_READ);
	else
		bufferevent_enable(s->bev, EV_READ);
}

/*
 * Close p (its side's peer is done): a close frame with code, and 5 s for
 * its answer before its socket just closes.
 */
static void
ws_close_peer_with(struct ws_side *p, uint16_t code, const uint8_t *why,
    size_t wlen)
{
	static const struct timeval	grace = { 5, 0 };

	if (p->closed || p->ctx == NULL || p->closing)
		return;
	p->closing = 1;
	/* Codes never sent on the wire (RFC 6455 7.4.1): going away. */
	if (code < 1000 || code == WSLAY_CODE_NO_STATUS_RCVD ||
	    code == WSLAY_CODE_ABNORMAL_CLOSURE || code == 1015)
		code = WSLAY_CODE_GOING_AWAY;
	if (!wslay_event_get_close_sent(p->ctx))
		wslay_event_queue_close(p->ctx, code, why, wlen);
	bufferevent_set_timeouts(p->bev, &grace, &grace);
	/* Its answer must be read, whatever paced it before. */
	bufferevent_enable(p->bev, EV_READ);
	ws_flush(p);
	ws_close_if_done(p);
}

static void
ws_close_peer(struct ws_side *p, uint16_t code, const char *why)
{
	ws_close_peer_with(p, code, (const uint8_t *)why, why != NULL ?
	    strlen(why) : 0);
}

/* The other end of s went away without a close: close its peer (1001). */
static void
ws_lost(struct ws_side *s, uint16_t code, const char *why)
{
	s->closed = 1;
	bufferevent_disable(s->bev, EV_READ | EV_WRITE);
	ws_close_peer(ws_peer(s), code, why);
}

static void
ws_read_cb(struct bufferevent *bev, void *arg)
{
	struct ws_side	*s = arg, *p = ws_peer(s);
	struct ws_relay	*r = s->r;

	(void)bev;
	if (wslay_event_recv(s->ctx) != 0) {
		/*
		 * A frame it cannot take (too big: 1009; broken: 1002):
		 * wslay may have queued its close; else one of ours.  Its
		 * peer is closed with the same code.
		 */
		if (!wslay_event_get_close_sent(s->ctx))
			wslay_event_queue_close(s->ctx,
			    WSLAY_CODE_PROTOCOL_ERROR, NULL, 0);
		wslay_event_send(s->ctx);
		bufferevent_disable(s->bev, EV_READ);
		s->closed = -1;
		ws_close_if_done(s);
		ws_close_peer(p, wslay_event_get_status_code_sent(s->ctx), NULL);
		ws_maybe_free(r);
		return;
	}
	ws_flush(s);		/* its pongs and close replies */
	ws_flush(p);		/* what it sent on */
	/* s closing (a close of ours, 1009 say): so does its peer. */
	if (s->closed && wslay_event_get_close_sent(s->ctx) &&
	    !wslay_event_get_close_received(s->ctx))
		ws_close_peer(p, wslay_event_get_status_code_sent(s->ctx),
		    NULL);
	ws_close_if_done(s);
	ws_close_if_done(p);
	ws_pace(s);
	ws_maybe_free(r);
}

/* s's socket took what was queued: the peer may be read again. */
static void
ws_write_cb(struct bufferevent *bev, void *arg)
{
	struct ws_side	*s = arg, *p = ws_peer(s);
	struct ws_relay	*r = s->r;

	(void)bev;
	ws_close_if_done(s);
	/* Room again: its peer may send on, and it may be read again. */
	ws_pace(p);
	ws_pace(s);
	ws_maybe_free(r);
}

static void
ws_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct ws_side	*s = arg;
	struct ws_relay	*r = s->r;

	(void)bev;
	if (what & BEV_EVENT_TIMEOUT)
		ws_lost(s, WSLAY_CODE_GOING_AWAY, "idle timeout");
	else if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		ws_lost(s, s == &r->c ? WSLAY_CODE_GOING_AWAY :
		    WSLAY_CODE_INTERNAL_SERVER_ERROR, s == &r->c ?
		    "client gone" : "upstream gone");
	ws_maybe_free(r);
}

static int
ws_side_open(struct ws_side *s, int server)
{
	int	rc;

	rc = server ? wslay_event_context_server_init(&s->ctx, &ws_callbacks,
	    s) : wslay_event_context_client_init(&s->ctx, &ws_callbacks, s);
	if (rc != 0)
		return (-1);
	wslay_event_config_set_max_recv_msg_length(s->ctx, WS_MAX_MSG);
	bufferevent_setcb(s->bev, ws_read_cb, ws_write_cb, ws_event_cb, s);
	bufferevent_setwatermark(s->bev, EV_WRITE, WS_HIGH_WATER / 2, 0);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	return (0);
}

/* ------------------------------------------------------------------ */
/* The client's side: borrowed from evhttp                             */
/* ------------------------------------------------------------------ */

/* websocket_idle_timeout without a message either way: both close (1001). */
static void
ws_idle_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ws_relay	*r = arg;

	(void)fd;
	(void)what;
	ws_close_peer(&r->c, WSLAY_CODE_GOING_AWAY, "idle");
	ws_close_peer(&r->u, WSLAY_CODE_GOING_AWAY, "idle");
	ws_maybe_free(r);
}

/*
 * The client's 101, and pr's end; the relay goes on without it, on the
 * connection's own bufferevent, which evhttp no longer reads (it waits
 * for a reply that never comes) and which goes with the connection
 * (evhttp_connection_free()) once the relay is over.
 */
static void
ws_answer_101(struct ws_relay *r)
{
	struct proxy_req	*pr = r->pr;
	struct evhttp_connection *evcon;
	struct bufferevent	*bev;

	evcon = evhttp_request_get_connection(pr->req);
	bev = evhttp_connection_get_bufferevent(evcon);
	evbuffer_add_printf(bufferevent_get_output(bev), "HTTP/1.1 101 "
	    "Switching Protocols\r\nUpgrade: websocket\r\nConnection: "
	    "Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", r->accept);
	proxy_unwatch_client(pr);
	pr->cut = 1;			/* no reply of evhttp's to end */
	pr->ws = NULL;
	r->pr = NULL;
	proxy_req_finish(pr, 101, 0);	/* pr is gone */
	r->c.bev = bev;
	r->c.evcon = evcon;
	/* A socket may stay quiet for long: only a stalled write times out. */
	bufferevent_set_timeouts(bev, NULL, &r->px->client_tv);
	bufferevent_set_timeouts(r->u.bev, NULL, &r->px->client_tv);
	if (ws_side_open(&r->c, 1) == -1 || ws_side_open(&r->u, 0) == -1) {
		r->c.closed = r->u.closed = 1;
		ws_maybe_free(r);
		return;
	}
	r->counted = 1;
	metrics_ws_open(r->px->metrics, 1);
	if (r->px->ws_idle.tv_sec > 0 || r->px->ws_idle.tv_usec > 0) {
		if ((r->idle = evtimer_new(bufferevent_get_base(r->c.bev),
		    ws_idle_cb, r)) == NULL)
			fatalx("out of memory");
		evtimer_add(r->idle, &r->px->ws_idle);
	}
	/* What either side sent ahead of the 101s. */
	ws_read_cb(r->u.bev, &r->u);
}

/* ------------------------------------------------------------------ */
/* The upstream's side: its handshake                                  */
/* ------------------------------------------------------------------ */

static int
ws_hp_header_field(http_parser *hp, const char *at, size_t len)
{
	struct ws_relay	*r = hp->data;

	r->in_accept = len == 20 && strncasecmp(at, "Sec-WebSocket-Accept",
	    20) == 0;
	return (0);
}

static int
ws_hp_header_value(http_parser *hp, const char *at, size_t len)
{
	struct ws_relay	*r = hp->data;

	if (r->in_accept)
		r->accept_ok = len == strlen(r->uaccept) &&
		    memcmp(at, r->uaccept, len) == 0;
	return (0);
}

static int
ws_hp_headers_complete(http_parser *hp)
{
	struct ws_relay	*r = hp->data;

	r->head_done = 1;
	r->status = hp->status_code;
	return (0);
}

static int
ws_hp_body(http_parser *hp, const char *at, size_t len)
{
	struct ws_relay	*r = hp->data;

	if (evbuffer_get_length(r->body) + len <= WS_HEAD_MAX)
		evbuffer_add(r->body, at, len);
	return (0);
}

static int
ws_hp_message_complete(http_parser *hp)
{
	struct ws_relay	*r = hp->data;

	r->body_done = 1;
	return (0);
}

/* The upstream refused (or failed): the client gets its answer, pr ends. */
static void
ws_refused(struct ws_relay *r, int status, const char *code, const char *why)
{
	struct proxy_req	*pr = r->pr;
	struct evkeyvalq	*out;
	size_t			 len = evbuffer_get_length(r->body);

	r->pr = NULL;
	r->u.closed = r->c.closed = 1;
	if (pr != NULL)
		pr->ws = NULL;
	if (pr == NULL) {
		ws_maybe_free(r);
		return;
	}
	if (status >= 400 && status < 600 && len > 0 &&
	    *(const char *)evbuffer_pullup(r->body, 1) == '{') {
		/* The upstream's own error, as it said it. */
		out = evhttp_request_get_output_headers(pr->req);
		evhttp_add_header(out, "Content-Type", "application/json");
		proxy_track_reply(pr->px, pr->req);
		reply_send(pr->req, status, r->body);
		proxy_req_finish(pr, status, len);	/* pr is gone */
	} else
		proxy_fail(pr, status, "server_error", code, why,
		    NULL);	/* pr is gone */
	ws_maybe_free(r);
}

static void
ws_up_read(struct bufferevent *bev, void *arg)
{
	struct ws_relay	*r = arg;
	struct evbuffer	*in = bufferevent_get_input(bev);
	struct evbuffer_ptr end;
	size_t		 len, n;
	char		*p;

	/*
	 * The head whole before it is parsed: http_parser hands a header
	 * split across reads over in pieces, and its Accept is checked whole.
	 */
	if (!r->head_done) {
		end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
		if (end.pos == -1) {
			if (evbuffer_get_length(in) > WS_HEAD_MAX)
				ws_refused(r, 502, "upstream_error", "The "
				    "upstream's answer to the WebSocket "
				    "handshake is too long.");
			return;
		}
	}
	while ((len = evbuffer_get_length(in)) > 0 && !(r->head_done &&
	    (r->status == 101 || r->body_done))) {
		p = (char *)evbuffer_pullup(in, -1);
		n = http_parser_execute(&r->hp, &r->hps, p, len);
		if (r->hp.upgrade || (r->head_done && r->status == 101)) {
			evbuffer_drain(in, n);
			break;
		}
		if (HTTP_PARSER_ERRNO(&r->hp) != HPE_OK || n != len) {
			ws_refused(r, 502, "upstream_error", "The upstream's "
			    "answer to the WebSocket handshake could not be "
			    "read.");
			return;
		}
		evbuffer_drain(in, n);
	}
	if (!r->head_done)
		return;
	if (r->status != 101) {
		/* Not an error of its own (a 2xx, a 3xx): a bad gateway. */
		if (r->body_done)
			ws_refused(r, r->status >= 400 && r->status < 600 ?
			    r->status : 502, "upstream_error", "The upstream "
			    "refused the WebSocket.");
		return;
	}
	if (!r->accept_ok) {
		ws_refused(r, 502, "upstream_error", "The upstream's "
		    "WebSocket handshake answer is not valid.");
		return;
	}
	/* Both sides next: the client's 101, the takeover. */
	bufferevent_disable(bev, EV_READ);
	ws_answer_101(r);
}

static void
ws_up_event(struct bufferevent *bev, short what, void *arg)
{
	struct ws_relay	*r = arg;

	(void)bev;
	if (what & BEV_EVENT_CONNECTED)
		return;
	if (r->head_done && r->status != 101 && (what & BEV_EVENT_EOF)) {
		/* A refusal whose body ends with the connection. */
		http_parser_execute(&r->hp, &r->hps, NULL, 0);
		ws_refused(r, r->status >= 400 && r->status < 600 ? r->status :
		    502, "upstream_error", "The upstream refused the "
		    "WebSocket.");
		return;
	}
	ws_refused(r, (what & BEV_EVENT_TIMEOUT) ? 504 : 502,
	    "upstream_unreachable", (what & BEV_EVENT_TIMEOUT) ? "The "
	    "upstream did not answer the WebSocket handshake in time." :
	    "The upstream could not be reached for the WebSocket.");
}

/* The upstream handshake of ours: the credential's key, allowed headers. */
static void
ws_up_request(struct ws_relay *r, struct proxy_req *pr, const char *hostport,
    const char *path)
{
	static const char *const fwd[] = {
		"user-agent", "openai-beta", "openai-organization",
		"openai-project", NULL
	};
	const struct credential	*cr = pr->who.cred;
	struct evkeyvalq	*in = evhttp_request_get_input_headers(pr->req);
	struct evbuffer		*out = bufferevent_get_output(r->u.bev);
	struct evkeyval		*h;
	unsigned char		 raw[16];
	char			 key[32];
	const char		*auth;

	RAND_bytes(raw, sizeof raw);
	EVP_EncodeBlock((unsigned char *)key, raw, sizeof raw);
	ws_accept_of(key, r->uaccept);
	evbuffer_add_printf(out, "GET %s HTTP/1.1\r\nHost: %s\r\n"
	    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
	    "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n",
	    path, hostport, key);
	auth = cr != NULL ? cr->auth : evhttp_find_header(in, "Authorization");
	if (auth != NULL)
		evbuffer_add_printf(out, "Authorization: %s\r\n", auth);
	if (cr != NULL && cr->organization != NULL)
		evbuffer_add_printf(out, "OpenAI-Organization: %s\r\n",
		    cr->organization);
	if (cr != NULL && cr->project != NULL)
		evbuffer_add_printf(out, "OpenAI-Project: %s\r\n", cr->project);
	TAILQ_FOREACH(h, in, next) {
		if (!proxy_in_list(h->key, fwd) &&
		    strncasecmp(h->key, "x-stainless-", 12) != 0)
			continue;
		if (credential_sets(cr, h->key))
			continue;
		evbuffer_add_printf(out, "%s: %s\r\n", h->key, h->value);
	}
	evbuffer_add(out, "\r\n", 2);
}

/* host, port, TLS and path prefix of the upstream URL ([upstream] url). */
static int
ws_upstream_where(const char *url, char *host, size_t hsize, int *port,
    int *tls, const char **path)
{
	const char	*h, *e, *colon;
	long		 n;

	if (strncmp(url, "http://", 7) == 0) {
		*tls = 0;
		h = url + 7;
	} else if (strncmp(url, "https://", 8) == 0) {
		*tls = 1;
		h = url + 8;
	} else
		return (-1);
	e = h + strcspn(h, "/");
	*path = e;
	colon = memchr(h, ':', (size_t)(e - h));
	if ((size_t)((colon != NULL ? colon : e) - h) >= hsize)
		return (-1);
	memcpy(host, h, (size_t)((colon != NULL ? colon : e) - h));
	host[(colon != NULL ? colon : e) - h] = '\0';
	*port = *tls ? 443 : 80;
	if (colon != NULL) {
		n = strtol(colon + 1, NULL, 10);
		if (n < 1 || n > 65535)
			return (-1);
		*port = (int)n;
	}
	return (0);
}

/*
 * The worker's TLS client context: the system's CAs (SSL_CERT_FILE and
 * SSL_CERT_DIR may name others), peer verification, HTTP/1.1 by ALPN
 * (the upgrade is HTTP/1.1's).
 */
static SSL_CTX *
ws_tls_ctx(struct proxy *px)
{
	static const unsigned char	alpn[] = "\x08http/1.1";
	SSL_CTX				*ctx;

	if (px->tls != NULL)
		return (px->tls);
	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL ||
	    SSL_CTX_set_default_verify_paths(ctx) != 1 ||
	    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
	    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn - 1) != 0) {
		log_warnx_limited(&ws_lim, "websocket: no TLS context");
		SSL_CTX_free(ctx);
		return (NULL);
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	px->tls = ctx;
	return (ctx);
}

/* A TLS session for host: its name sent (SNI) and checked (or its IP). */
static SSL *
ws_tls_new(struct proxy *px, const char *host)
{
	unsigned char	ip[16];
	SSL		*ssl;
	int		 is_ip;

	if ((ssl = SSL_new(px->tls)) == NULL)
		return (NULL);
	is_ip = inet_pton(AF_INET, host, ip) == 1 ||
	    inet_pton(AF_INET6, host, ip) == 1;
	if ((!is_ip && (SSL_set_tlsext_host_name(ssl, host) != 1 ||
	    SSL_set1_host(ssl, host) != 1)) || (is_ip &&
	    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) != 1)) {
		SSL_free(ssl);
		return (NULL);
	}
	return (ssl);
}

void
ws_begin(struct proxy_req *pr)
{
	struct evkeyvalq	*in = evhttp_request_get_input_headers(pr->req);
	const char		*key, *ver, *base_path;
	struct ws_relay		*r;
	struct event_base	*base;
	char			 host[256], hostport[300], path[512];
	int			 port, tls;
	SSL			*ssl = NULL;

	key = evhttp_find_header(in, "Sec-WebSocket-Key");
	ver = evhttp_find_header(in, "Sec-WebSocket-Version");
	if (evhttp_request_get_command(pr->req) != EVHTTP_REQ_GET ||
	    !ws_key_ok(key) || ver == NULL || strcmp(ver, "13") != 0) {
		proxy_fail(pr, 400, NULL, "bad_websocket_handshake", "The "
		    "WebSocket handshake is not valid (RFC 6455: GET, "
		    "Sec-WebSocket-Key, Sec-WebSocket-Version: 13).",
		    NULL);	/* pr is gone */
		return;
	}
	if (ws_upstream_where(pr->px->upstream_url, host, sizeof host, &port,
	    &tls, &base_path) == -1 || (tls && ws_tls_ctx(pr->px) == NULL)) {
		proxy_fail(pr, 426, "invalid_request_error",
		    "websocket_not_supported", "WebSocket mode is not "
		    "available through this proxy (its upstream URL); use "
		    "HTTP requests.", NULL);	/* pr is gone */
		return;
	}
	r = xcalloc(1, sizeof *r);
	r->px = pr->px;
	r->pr = pr;
	r->serial = pr->serial;
	r->c.r = r->u.r = r;
	r->c.name = "client";
	r->u.name = "upstream";
	r->body = xevbuffer_new();
	ws_accept_of(key, r->accept);
	http_parser_init(&r->hp, HTTP_RESPONSE);
	r->hp.data = r;
	http_parser_settings_init(&r->hps);
	r->hps.on_header_field = ws_hp_header_field;
	r->hps.on_header_value = ws_hp_header_value;
	r->hps.on_headers_complete = ws_hp_headers_complete;
	r->hps.on_body = ws_hp_body;
	r->hps.on_message_complete = ws_hp_message_complete;
	r->list = pr->px->ws;
	LIST_INSERT_HEAD(&r->list->all, r, entry);
	/* The client as admitted: its tenant, its ownership rules. */
	r->keys = keyring_ref(pr->keys);
	r->who = pr->who;

	base = evhttp_connection_get_base(evhttp_request_get_connection(
	    pr->req));
	snprintf(path, sizeof path, "%s/v1/responses", base_path);
	snprintf(hostport, sizeof hostport, port == (tls ? 443 : 80) ? "%s" :
	    "%s:%d", host, port);
	proxy_req_set_state(pr, PR_FETCHING);
	proxy_watch_client(pr);
	pr->ws = r;
	if (pr->px->dns == NULL && (pr->px->dns = evdns_base_new(base,
	    EVDNS_BASE_INITIALIZE_NAMESERVERS)) == NULL)
		log_warnx_limited(&ws_lim, "websocket: no name resolver: "
		    "upstream names will not resolve");
	if (tls && (ssl = ws_tls_new(pr->px, host)) == NULL) {
		ws_refused(r, 502, "upstream_unreachable", "TLS to the upstream "
		    "could not be set up for the WebSocket.");
		return;
	}
	r->u.bev = tls ? bufferevent_openssl_socket_new(base, -1, ssl,
	    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE) :
	    bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (r->u.bev == NULL)
		fatalx("out of memory");
	bufferevent_setcb(r->u.bev, ws_up_read, NULL, ws_up_event, r);
	bufferevent_set_timeouts(r->u.bev, &pr->px->client_tv,
	    &pr->px->client_tv);
	bufferevent_enable(r->u.bev, EV_READ | EV_WRITE);
	ws_up_request(r, pr, hostport, path);
	if (bufferevent_socket_connect_hostname(r->u.bev, pr->px->dns,
	    AF_UNSPEC, host, port) == -1)
		ws_refused(r, 502, "upstream_unreachable", "The upstream "
		    "could not be reached for the WebSocket.");
}

/* pr ends before the upstream answered (its client left): r goes too. */
void
ws_abandon(struct ws_relay *r)
{
	r->pr = NULL;
	r->c.closed = r->u.closed = 1;
	ws_maybe_free(r);
}

/* ------------------------------------------------------------------ */
/* A worker's relays                                                   */
/* ------------------------------------------------------------------ */

struct ws_list *
ws_list_new(void)
{
	struct ws_list	*l = xcalloc(1, sizeof *l);

	LIST_INIT(&l->all);
	return (l);
}

void
ws_list_close(struct ws_list *l)
{
	struct ws_relay	*r, *next;

	for (r = LIST_FIRST(&l->all); r != NULL; r = next) {
		next = LIST_NEXT(r, entry);
		if (r->pr != NULL) {
			/* Still in its handshake: its request ends (503). */
			ws_refused(r, 503, "shutting_down", "respcache is "
			    "shutting down.");	/* r is gone */
			continue;
		}
		if (!r->c.closed && r->c.ctx != NULL) {
			wslay_event_queue_close(r->c.ctx,
			    WSLAY_CODE_GOING_AWAY, (const uint8_t *)
			    "shutting down", 13);
			ws_flush(&r->c);
		}
		if (!r->u.closed && r->u.ctx != NULL) {
			wslay_event_queue_close(r->u.ctx,
			    WSLAY_CODE_GOING_AWAY, (const uint8_t *)
			    "shutting down", 13);
			ws_flush(&r->u);
		}
	}
}

int
ws_list_empty(const struct ws_list *l)
{
	return (l == NULL || LIST_EMPTY(&l->all));
}

void
ws_list_free(struct ws_list *l)
{
	struct ws_relay	*r;

	if (l == NULL)
		return;
	l->freeing = 1;
	while ((r = LIST_FIRST(&l->all)) != NULL)
		ws_free(r);
	free(l);
}
