/*
 * Unit tests: the guard finds the blank line that ends a request's
 * headers however the bytes are split across reads.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include "../../src/log.c"
#include "../../src/guard.c"
#include "tap.h"

/* Feed s in pieces of at most step bytes; the offset in s of the end. */
static size_t
feed(const char *s, size_t step)
{
	struct guard_conn	g;
	size_t			n = strlen(s), off = 0, k, end;

	memset(&g, 0, sizeof g);
	while (off < n) {
		k = n - off < step ? n - off : step;
		if ((end = guard_headers_end(&g, s + off, k)) != 0)
			return (off + end);
		off += k;
	}
	return (0);
}

/* Feed s cut once at every position. */
static int
split_everywhere(const char *s, size_t want)
{
	struct guard_conn	g;
	size_t			n = strlen(s), cut, end;

	for (cut = 0; cut <= n; cut++) {
		memset(&g, 0, sizeof g);
		if ((end = guard_headers_end(&g, s, cut)) != 0) {
			if (end != want)
				return (0);
			continue;
		}
		end = guard_headers_end(&g, s + cut, n - cut);
		if (end == 0 || cut + end != want)
			return (0);
	}
	return (1);
}

int
main(void)
{
	const char	*crlf = "GET /v1/responses/r HTTP/1.1\r\nHost: x\r\n\r\nBODY";
	const char	*lf = "GET /v1/responses/r HTTP/1.1\nHost: x\n\nBODY";
	const char	*open = "GET /v1/responses/r HTTP/1.1\r\nHost: x\r\n";
	size_t		 step;
	int		 good;

	ok(feed(crlf, 4096) == strlen(crlf) - 4, "CRLF headers end whole");
	ok(feed(lf, 4096) == strlen(lf) - 4, "LF headers end whole");
	for (good = 1, step = 1; step <= 8; step++)
		good &= feed(crlf, step) == strlen(crlf) - 4 &&
		    feed(lf, step) == strlen(lf) - 4;
	ok(good, "headers end found in pieces of 1 to 8 bytes");
	ok(split_everywhere(crlf, strlen(crlf) - 4),
	    "CRLF headers cut at every position");
	ok(split_everywhere(lf, strlen(lf) - 4),
	    "LF headers cut at every position");
	ok(feed(open, 1) == 0 && feed(open, 4096) == 0,
	    "headers still open are not taken as ended");
	ok(feed("GET / HTTP/1.1\r\nA: b\r\n\nX", 3) == 23,
	    "a CRLF line then a bare LF ends them too");
	return (done_testing());
}
