/*
 * sse.h - an incremental parser of server-sent events (text/event-stream).
 *
 * Bytes go in as they arrive, split anywhere; each complete event comes
 * out through a callback with its type and its data (data lines joined
 * by "\n").  Handles "\n", "\r\n" and "\r" line ends (also split across
 * feeds), multi-line data, comments and the optional space after ":".
 * Memory is bounded: an event whose data passes max_data, or with any line
 * (even a comment) longer than max_data + 16 bytes, is dropped, however
 * its bytes were split.
 */
#ifndef RC_SSE_H
#define RC_SSE_H

#include <stddef.h>

struct sse;

/* type is "" when the event had no "event:" line; data is NUL-terminated. */
typedef void (*sse_event_fn)(void *arg, const char *type, const char *data,
	    size_t len);

struct sse	*sse_new(size_t max_data, sse_event_fn, void *arg);
void		 sse_free(struct sse *);
void		 sse_feed(struct sse *, const char *, size_t);

#endif
