/* Unit tests: the incremental SSE parser, fed whole and in every split. */
#include "config.h"

#include <stdarg.h>
#include <stdlib.h>

#include "../../src/log.c"
#include "../../src/xmalloc.c"
#include "../../src/sse.c"
#include "tap.h"

static char	got[4096];
static int	unterminated;	/* an event's data[len] was not NUL */

static void
collect(void *arg, const char *type, const char *data, size_t len)
{
	size_t	n = strlen(got);

	(void)arg;
	if (data[len] != '\0')
		unterminated = 1;
	snprintf(got + n, sizeof got - n, "[%s|%.*s]", type, (int)len, data);
}

/*
 * Feed text one byte at a time, then split in three at every pair of
 * points (whole, when both are at an end); all must give want.
 */
static int
same_every_split(const char *text, const char *want, size_t max)
{
	struct sse	*s;
	size_t		 len = strlen(text), i, j;

	got[0] = '\0';
	s = sse_new(max, collect, NULL);
	for (i = 0; i < len; i++)
		sse_feed(s, text + i, 1);
	sse_free(s);
	if (strcmp(got, want) != 0) {
		printf("# one byte per feed: got %s\n", got);
		return (0);
	}
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

/* Feed the NULL-terminated list of pieces, in order, to one parser. */
static int
feeds(const char *want, size_t max, ...)
{
	struct sse	*s;
	const char	*piece;
	va_list		 ap;

	got[0] = '\0';
	s = sse_new(max, collect, NULL);
	va_start(ap, max);
	while ((piece = va_arg(ap, const char *)) != NULL)
		sse_feed(s, piece, strlen(piece));
	va_end(ap);
	sse_free(s);
	if (strcmp(got, want) != 0) {
		printf("# got %s\n", got);
		return (0);
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
	ok(same_every_split("data: 1\r\ndata: 2\r\n\r\n", "[|1\n2]", 1024),
	    "a CRLF split between feeds is one line end, not two");
	ok(feeds("[|1\n2]", 1024, "data: 1\r", "", "\n", "data: 2\r",
	    "\n\r", "\n", NULL), "empty feeds between CR and LF");
	ok(same_every_split("data: a\rdata: b\ndata: c\r\n\r", "[|a\nb\nc]",
	    1024), "mixed CR, LF and CRLF line ends");
	ok(same_every_split("event: a\ndata: 1\n\ndata: 2\n\n", "[a|1][|2]",
	    1024), "no event: line gives type \"\", not the last one's");
	ok(same_every_split("event: a\nevent: b\ndata: 1\n\n", "[b|1]", 1024),
	    "the last event: line wins");
	ok(same_every_split("data: 01234567\n\n", "[|01234567]", 8),
	    "data of exactly max_data is kept");
	ok(same_every_split("data: 0123\ndata: 4567\n\ndata: ok\n\n", "[|ok]",
	    8), "data over max_data only once joined is dropped");
	/* Found by fuzz/fuzz_sse: kept whole, dropped when split. */
	ok(same_every_split(": a comment longer than max_data + 16\n"
	    "data: x\n\ndata: ok\n\n", "[|ok]", 8),
	    "a long comment line drops its event in every split");
	ok(same_every_split("event: a-type-longer-than-max_data-16\n"
	    "data: x\n\ndata: ok\n\n", "[|ok]", 8),
	    "a long event: line drops its event in every split");
	ok(!unterminated, "every event's data is NUL-terminated at its length");
	return (done_testing());
}
