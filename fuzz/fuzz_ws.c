/*
 * fuzz_ws.c - libFuzzer target for WebSocket mode's frame path: the bytes
 * a client (masked frames) or an upstream (unmasked) sends, through wslay
 * as ws.c sets it up (a server context for the client, a client one for
 * the upstream, 16 MiB a message), in input-chosen reads, into what
 * ws.c does with each text message: its type sniffed (ws_msg_type()), a
 * client's response.create read exactly (response_request_read()), an
 * upstream's final event turned into its Response (response_from_event())
 * and a created event's id read (response_event_id()).
 *
 * The first input byte picks the side and the read size; the rest is the
 * stream.  A type must come back NUL-terminated within its buffer, a
 * Response from a final event must be non-empty and NUL-terminated, and
 * ASan or UBSan must stay quiet.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <wslay/wslay.h>

#include "response.h"
#include "ws_msg.h"

/* The context's user data, for every callback (as ws.c's side is). */
struct feed {
	const uint8_t	*p;
	size_t		 len;
	size_t		 step;
	int		 server;	/* reading a client's frames */
};

static ssize_t
feed_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
    void *arg)
{
	struct feed	*f = arg;
	size_t		 n = len < f->step ? len : f->step;

	(void)flags;
	if (n > f->len)
		n = f->len;
	if (n == 0) {
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return (-1);
	}
	memcpy(buf, f->p, n);
	f->p += n;
	f->len -= n;
	return ((ssize_t)n);
}

static ssize_t
feed_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
    int flags, void *arg)
{
	(void)ctx;
	(void)data;
	(void)flags;
	(void)arg;
	return ((ssize_t)len);		/* replies (pongs, closes) go nowhere */
}

static int
feed_mask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *arg)
{
	(void)ctx;
	(void)arg;
	memset(buf, 0x5a, len);
	return (0);
}

static void
check_type(const char *type, size_t size)
{
	if (memchr(type, '\0', size) == NULL)
		abort();
}

static void
on_msg(wslay_event_context_ptr ctx,
    const struct wslay_event_on_msg_recv_arg *m, void *arg)
{
	static const char *const creates[] = { "response.create", NULL };
	static const char *const events[] = {
		"response.created", "response.completed", "response.failed",
		"response.incomplete", NULL
	};
	struct feed		*f = arg;
	struct response_request	 rq;
	struct response_info	 info;
	char			 type[64], why[200], id[ROUTE_ID_MAX + 1];
	char			*body;
	size_t			 blen;

	(void)ctx;
	if (m->opcode != WSLAY_TEXT_FRAME)
		return;
	if (f->server) {
		if (ws_msg_type(m->msg, m->msg_length, creates, type,
		    sizeof type)) {
			check_type(type, sizeof type);
			(void)response_request_read((const char *)m->msg,
			    m->msg_length, &rq, why, sizeof why);
		}
		return;
	}
	if (!ws_msg_type(m->msg, m->msg_length, events, type, sizeof type))
		return;
	check_type(type, sizeof type);
	if (strcmp(type, "response.created") == 0) {
		(void)response_event_id((const char *)m->msg, m->msg_length,
		    id);
		return;
	}
	if ((body = response_from_event(type, (const char *)m->msg,
	    m->msg_length, &info, &blen)) != NULL) {
		if (blen == 0 || body[blen] != '\0')
			abort();
		free(body);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct wslay_event_callbacks cb = {
		feed_recv, feed_send, feed_mask, NULL, NULL, NULL, on_msg
	};
	wslay_event_context_ptr	 ctx;
	struct feed		 f;
	int			 i;

	if (size < 1)
		return (0);
	f.server = data[0] & 1;
	f.step = (size_t)(data[0] >> 1) + 1;	/* 1..128 bytes a read */
	f.p = data + 1;
	f.len = size - 1;
	if ((f.server ? wslay_event_context_server_init(&ctx, &cb, &f) :
	    wslay_event_context_client_init(&ctx, &cb, &f)) != 0)
		return (0);
	wslay_event_config_set_max_recv_msg_length(ctx, 16 * 1024 * 1024);
	/* As ws.c does: read, then write what it queued, while it wants to. */
	for (i = 0; i < 100000 && f.len > 0 && wslay_event_want_read(ctx);
	    i++) {
		if (wslay_event_recv(ctx) != 0)
			break;
		if (wslay_event_send(ctx) != 0)
			break;
	}
	wslay_event_context_free(ctx);
	return (0);
}
