/* Unit tests: the incremental SSE parser, fed whole and in every split. */
#include "config.h"

#include <stdlib.h>

#include "../../src/log.c"
#include "../../src/sse.c"
#include "tap.h"

static char	got[4096];

static void
collect(void *arg, const char *type, const char *data, size_t len)
{
	size_t	n = strlen(got);

	(void)arg;
	snprintf(got + n, sizeof got - n, "[%s|%.*s]", type, (int)len, data);
}

/* Feed text whole, then split at every pair of points; all must agree. */
static int
same_every_split(const char *text, const char *want, size_t max)
{
	struct sse	*s;
	size_t		 len = strlen(text), i, j;

	for (i = 0; i <= len; i++) {
		for (j = i; j <= len; j++) {
			got[0] = '\0';
			s = sse_new(max, collect, NULL);
			sse_feed(s, text, i);
			sse_feed(s, text + i, j - i);
			sse_feed(s, text + j, len - j);
			sse_free(s);
			if (strcmp(got, want) != 0) {
				printf("# split %zu,%zu: got %s\n", i, j, got);
				return (0);
			}
		}
	}
	return (1);
}

int
main(void)
{
	ok(same_every_split("event: a\ndata: {\"x\":1}\n\n", "[a|{\"x\":1}]",
	    1024), "one event, LF");
	ok(same_every_split("event: a\r\ndata: 1\r\n\r\nevent: b\r\ndata: 2\r\n"
	    "\r\n", "[a|1][b|2]", 1024), "CRLF line ends");
	ok(same_every_split("event: a\rdata: 1\r\r", "[a|1]", 1024),
	    "CR line ends");
	ok(same_every_split("data: line1\ndata: line2\n\n", "[|line1\nline2]",
	    1024), "multi-line data joined with LF");
	ok(same_every_split(": keep-alive\n\n:comment\ndata: x\n\n", "[|x]",
	    1024), "comments ignored, empty events not dispatched");
	ok(same_every_split("data:nospace\n\n", "[|nospace]", 1024),
	    "the space after the colon is optional");
	ok(same_every_split("data:  two\n\n", "[| two]", 1024),
	    "only one space is removed");
	ok(same_every_split("id: 7\nretry: 10\nevent: e\ndata: d\n\n", "[e|d]",
	    1024), "id and retry ignored");
	ok(same_every_split("data\n\n", "[|]", 1024), "a bare data field");
	ok(same_every_split("event: a\ndata: 1\n", "", 1024),
	    "an unterminated event is not dispatched");
	ok(same_every_split("data: 0123456789\n\ndata: ok\n\n", "[|ok]", 8),
	    "an event over max_data is dropped, the next one kept");
	ok(same_every_split("data: 0123456789012345678901234567\ndata: x\n\n"
	    "data: ok\n\n", "[|ok]", 8),
	    "a line over the bound is dropped whole");
	return (done_testing());
}
