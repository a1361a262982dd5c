/*
 * ws_msg.h - what WebSocket mode reads of the messages it relays
 * (ws_msg.c): no I/O, so that a fuzz target can feed it (fuzz/fuzz_ws.c).
 */
#ifndef RC_WS_MSG_H
#define RC_WS_MSG_H

#include <stddef.h>

/*
 * The JSON "type" of a text message, into type (size bytes, NUL-ended),
 * if the message names one of wanted (NULL-terminated) at all: 1, else 0.
 * Messages that name none are not parsed (most are deltas).
 */
int	ws_msg_type(const void *msg, size_t len, const char *const *wanted,
	    char *type, size_t size);

#endif
