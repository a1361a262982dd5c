/*
 * Unit tests: the guard's request head validator, case by case, each
 * head fed whole, cut once at every position, cut twice at every pair
 * of positions, and a byte at a time; the verdict and the end must be
 * the same every way.  Then the connection side: a head spread over more
 * pieces than one evbuffer_peek() returns.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include "../../src/log.c"
#include "../../src/xmalloc.c"
#include "../../src/guard.c"
#include "tap.h"

#define S(lit)	lit, sizeof(lit) - 1

struct hcase {
	const char	*what;
	const char	*head;		/* the head, blank line included */
	size_t		 len;
	const char	*cause;		/* NULL: good */
};

static const char SDK_POST[] =
    "POST /v1/responses HTTP/1.1\r\n"
    "Host: 127.0.0.1:8080\r\n"
    "Accept-Encoding: gzip, deflate\r\n"
    "Connection: keep-alive\r\n"
    "Accept: application/json\r\n"
    "Content-Type: application/json\r\n"
    "User-Agent: OpenAI/Python 1.99.9\r\n"
    "X-Stainless-Lang: python\r\n"
    "X-Stainless-Package-Version: 1.99.9\r\n"
    "X-Stainless-OS: Linux\r\n"
    "X-Stainless-Arch: x64\r\n"
    "X-Stainless-Runtime: CPython\r\n"
    "X-Stainless-Runtime-Version: 3.11.2\r\n"
    "Authorization: Bearer sk-test\r\n"
    "X-Stainless-Async: false\r\n"
    "x-stainless-retry-count: 0\r\n"
    "x-stainless-read-timeout: 600\r\n"
    "Content-Length: 41\r\n"
    "\r\n";

static const struct hcase cases[] = {
	/* Good. */
	{ "an SDK's POST", S(SDK_POST), NULL },
	{ "a GET with a query", S("GET /v1/responses/resp_1?include[]="
	    "message.output_text.logprobs&stream=false HTTP/1.1\r\n"
	    "Host: x\r\nAuthorization: Bearer sk\r\n\r\n"), NULL },
	{ "bare LF lines", S("GET /v1/responses/r HTTP/1.1\nHost: x\n\n"),
	    NULL },
	{ "CRLF lines then a bare LF", S("GET / HTTP/1.1\r\nHost: x\r\n\n"),
	    NULL },
	{ "HTTP/1.0 without Host", S("GET / HTTP/1.0\r\n\r\n"), NULL },
	{ "HTTP/1.0 with one Host", S("GET / HTTP/1.0\r\nHost: x\r\n\r\n"),
	    NULL },
	{ "HTTP/1.9 is 1.1", S("GET / HTTP/1.9\r\nHost: x\r\n\r\n"), NULL },
	{ "names in any case", S("GET / HTTP/1.1\r\nhOsT: x\r\n"
	    "content-LENGTH: 5\r\n\r\n"), NULL },
	{ "Transfer-Encoding: chunked", S("POST / HTTP/1.1\r\nHost: x\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n"), NULL },
	{ "Transfer-Encoding: Chunked with OWS", S("POST / HTTP/1.1\r\n"
	    "Host: x\r\nTransfer-Encoding:\t CHUNKED \t\r\n\r\n"), NULL },
	{ "Content-Length: 0", S("POST / HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length: 0\r\n\r\n"), NULL },
	{ "Content-Length with OWS and leading zeros", S("POST / HTTP/1.1\r\n"
	    "Host: x\r\nContent-Length:\t000000000000000000000042 \r\n\r\n"),
	    NULL },
	{ "Content-Length of 18 digits", S("POST / HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length: 999999999999999999\r\n\r\n"), NULL },
	{ "an empty value", S("GET / HTTP/1.1\r\nHost: x\r\nX-Empty:\r\n"
	    "X-Blank:   \r\n\r\n"), NULL },
	{ "a value with spaces, tabs and UTF-8", S("GET / HTTP/1.1\r\n"
	    "Host: x\r\nUser-Agent: caf\xc3\xa9 a\tb  c\r\n\r\n"), NULL },
	{ "every tchar in a name", S("GET / HTTP/1.1\r\nHost: x\r\n"
	    "!#$%&'*+-.^_`|~09AZaz: v\r\n\r\n"), NULL },
	{ "names that only look like checked ones", S("GET / HTTP/1.1\r\n"
	    "Host: x\r\nHosts: a\r\nHos: b\r\nContent-Lengths: c\r\n"
	    "Content-Type: d\r\nTransfer-Encodings: e\r\nX-Host: f\r\n\r\n"),
	    NULL },
	{ "an absolute-form target", S("GET http://x/v1/responses/r?a=b "
	    "HTTP/1.1\r\nHost: x\r\n\r\n"), NULL },
	{ "a target with every visible character", S("GET /!\"#$%&'()*+,-./"
	    "09:;<=>?@AZ[\\]^_`az{|}~ HTTP/1.1\r\nHost: x\r\n\r\n"), NULL },
	{ "an unknown method", S("FOO / HTTP/1.1\r\nHost: x\r\n\r\n"), NULL },

	/* Request line. */
	{ "a raw space in the query", S("GET /v1/responses/r?a=b c "
	    "HTTP/1.1\r\nHost: x\r\n\r\n"), guard_bad_line },
	{ "two spaces after the method", S("GET  / HTTP/1.1\r\nHost: x\r\n"
	    "\r\n"), guard_bad_line },
	{ "two spaces before the version", S("GET /  HTTP/1.1\r\nHost: x\r\n"
	    "\r\n"), guard_bad_line },
	{ "a space after the version", S("GET / HTTP/1.1 \r\nHost: x\r\n\r\n"),
	    guard_bad_line },
	{ "a tab in the target", S("GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n"),
	    guard_bad_line },
	{ "a control byte in the target", S("GET /a\x01 HTTP/1.1\r\n"
	    "Host: x\r\n\r\n"), guard_bad_line },
	{ "DEL in the target", S("GET /a\x7f HTTP/1.1\r\nHost: x\r\n\r\n"),
	    guard_bad_line },
	{ "a NUL in the target", S("GET /a\0b HTTP/1.1\r\nHost: x\r\n\r\n"),
	    guard_bad_line },
	{ "UTF-8 in the target", S("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n"
	    "\r\n"), guard_bad_line },
	{ "no target", S("GET HTTP/1.1\r\nHost: x\r\n\r\n"), guard_bad_line },
	{ "a space before the method", S(" GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
	    guard_bad_line },
	{ "an empty line before the request line", S("\r\nGET / HTTP/1.1\r\n"
	    "Host: x\r\n\r\n"), guard_bad_line },
	{ "a method with a non-token byte", S("G(T / HTTP/1.1\r\nHost: x\r\n"
	    "\r\n"), guard_bad_line },
	{ "HTTP/2.0", S("GET / HTTP/2.0\r\nHost: x\r\n\r\n"), guard_bad_line },
	{ "http/1.1 in lower case", S("GET / http/1.1\r\nHost: x\r\n\r\n"),
	    guard_bad_line },
	{ "HTTP/1.", S("GET / HTTP/1.\r\nHost: x\r\n\r\n"), guard_bad_line },
	{ "HTTP/1.10", S("GET / HTTP/1.10\r\nHost: x\r\n\r\n"), guard_bad_line },
	{ "no version", S("GET /\r\nHost: x\r\n\r\n"), guard_bad_line },
	{ "a bare CR after the request line", S("GET / HTTP/1.1\rHost: x\r\n"
	    "\r\n"), guard_bad_cr },

	/* Field names. */
	{ "Content-Length : (space before the colon)", S("POST / HTTP/1.1\r\n"
	    "Host: x\r\nContent-Length : 5\r\n\r\n"), guard_bad_name },
	{ "Transfer-Encoding : chunked", S("POST / HTTP/1.1\r\nHost: x\r\n"
	    "Transfer-Encoding : chunked\r\n\r\n"), guard_bad_name },
	{ "a tab before the colon", S("POST / HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length\t: 5\r\n\r\n"), guard_bad_name },
	{ "a space inside a name", S("GET / HTTP/1.1\r\nHost: x\r\n"
	    "Foo Bar: x\r\n\r\n"), guard_bad_name },
	{ "a space inside Content-Length's name", S("POST / HTTP/1.1\r\n"
	    "Host: x\r\nContent- Length: 5\r\n\r\n"), guard_bad_name },
	{ "an empty name", S("GET / HTTP/1.1\r\nHost: x\r\n: x\r\n\r\n"),
	    guard_bad_name },
	{ "a line without a colon", S("GET / HTTP/1.1\r\nHost: x\r\n"
	    "NoColon\r\n\r\n"), guard_bad_name },
	{ "a non-token byte in a name", S("GET / HTTP/1.1\r\nHost: x\r\n"
	    "X(y): 1\r\n\r\n"), guard_bad_name },
	{ "a NUL in a name", S("GET / HTTP/1.1\r\nHost: x\r\nUser\0-Agent: "
	    "x\r\n\r\n"), guard_bad_name },
	{ "a CR in a name", S("GET / HTTP/1.1\r\nHost: x\r\n"
	    "X-Stainless-Os\r: Linux\r\n\r\n"), guard_bad_name },
	{ "a UTF-8 name", S("GET / HTTP/1.1\r\nHost: x\r\nX-\xc3\xa9: 1\r\n"
	    "\r\n"), guard_bad_name },

	/* obs-fold. */
	{ "a folded value (space)", S("GET / HTTP/1.1\r\nHost: x\r\n"
	    "User-Agent: abc\r\n def\r\n\r\n"), guard_bad_fold },
	{ "a folded value (tab)", S("GET / HTTP/1.1\r\nHost: x\r\n"
	    "User-Agent: abc\r\n\tdef\r\n\r\n"), guard_bad_fold },
	{ "a folded Content-Length", S("POST / HTTP/1.1\r\nHost: x\r\n"
	    "X: a\r\n Content-Length: 5\r\n\r\n"), guard_bad_fold },
	{ "a first header line folded", S("GET / HTTP/1.1\r\n Host: x\r\n"
	    "\r\n"), guard_bad_fold },

	/* Values. */
	{ "a NUL in a value", S("GET / HTTP/1.1\r\nHost: x\r\n"
	    "User-Agent: abc\0def\r\n\r\n"), guard_bad_value },
	{ "a control byte in a value", S("GET / HTTP/1.1\r\nHost: x\r\n"
	    "X: a\x01" "b\r\n\r\n"), guard_bad_value },
	{ "DEL in a value", S("GET / HTTP/1.1\r\nHost: x\r\nX: a\x7f\r\n\r\n"),
	    guard_bad_value },
	{ "a NUL in Host", S("GET / HTTP/1.1\r\nHost: x\0y\r\n\r\n"),
	    guard_bad_value },
	{ "a bare CR in a value", S("GET / HTTP/1.1\r\nHost: x\r\n"
	    "User-Agent: abc\rdef\r\n\r\n"), guard_bad_cr },
	{ "a bare CR then a space", S("GET / HTTP/1.1\r\nHost: x\r\n"
	    "X: js\r X-Injected: 1\r\n\r\n"), guard_bad_cr },
	{ "a CR CR LF line end", S("GET / HTTP/1.1\r\nHost: x\r\nX: a\r\r\n"
	    "\r\n"), guard_bad_cr },
	{ "a CR CR LF blank line", S("GET / HTTP/1.1\r\nHost: x\r\n\r\r\n"
	    "\r\n"), guard_bad_cr },

	/* Content-Length. */
	{ "Content-Length: +31", S("POST / HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length: +31\r\n\r\n"), guard_bad_cl },
	{ "Content-Length: -1", S("POST / HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length: -1\r\n\r\n"), guard_bad_cl },
	{ "Content-Length: 1 0", S("POST / HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length: 1 0\r\n\r\n"), guard_bad_cl },
	{ "Content-Length: 5, 5", S("POST / HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length: 5, 5\r\n\r\n"), guard_bad_cl },
	{ "Content-Length: 0x10", S("POST / HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length: 0x10\r\n\r\n"), guard_bad_cl },
	{ "Content-Length: 12abc", S("POST / HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length: 12abc\r\n\r\n"), guard_bad_cl },
	{ "an empty Content-Length", S("POST / HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length: \r\n\r\n"), guard_bad_cl },
	{ "Content-Length of 19 digits", S("POST / HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length: 1000000000000000000\r\n\r\n"), guard_bad_cl },
	{ "two equal Content-Lengths", S("POST / HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length: 5\r\nContent-Length: 5\r\n\r\n"), guard_bad_cl },
	{ "two different Content-Lengths", S("POST / HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length: 5\r\ncontent-length: 40\r\n\r\n"), guard_bad_cl },
	{ "a NUL in Content-Length", S("POST / HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length: 5\0" "0\r\n\r\n"), guard_bad_value },

	/* Transfer-Encoding. */
	{ "Transfer-Encoding: gzip, chunked", S("POST / HTTP/1.1\r\n"
	    "Host: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
	    guard_bad_te },
	{ "Transfer-Encoding: chunked, identity", S("POST / HTTP/1.1\r\n"
	    "Host: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n"),
	    guard_bad_te },
	{ "Transfer-Encoding: identity", S("POST / HTTP/1.1\r\nHost: x\r\n"
	    "Transfer-Encoding: identity\r\n\r\n"), guard_bad_te },
	{ "Transfer-Encoding: chunkedx", S("POST / HTTP/1.1\r\nHost: x\r\n"
	    "Transfer-Encoding: chunkedx\r\n\r\n"), guard_bad_te },
	{ "Transfer-Encoding: chunk", S("POST / HTTP/1.1\r\nHost: x\r\n"
	    "Transfer-Encoding: chunk\r\n\r\n"), guard_bad_te },
	{ "an empty Transfer-Encoding", S("POST / HTTP/1.1\r\nHost: x\r\n"
	    "Transfer-Encoding:\r\n\r\n"), guard_bad_te },
	{ "Transfer-Encoding twice", S("POST / HTTP/1.1\r\nHost: x\r\n"
	    "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
	    guard_bad_te },
	{ "Content-Length then Transfer-Encoding", S("POST / HTTP/1.1\r\n"
	    "Host: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n"
	    "\r\n"), guard_bad_te },
	{ "Transfer-Encoding then Content-Length", S("POST / HTTP/1.1\r\n"
	    "Host: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n"
	    "\r\n"), guard_bad_te },
	{ "Transfer-Encoding on HTTP/1.0", S("POST / HTTP/1.0\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n"), guard_bad_te },

	/* Host. */
	{ "no Host on HTTP/1.1", S("GET / HTTP/1.1\r\nX: y\r\n\r\n"),
	    guard_bad_host },
	{ "no header at all on HTTP/1.1", S("GET / HTTP/1.1\r\n\r\n"),
	    guard_bad_host },
	{ "two Hosts", S("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
	    guard_bad_host },
	{ "two equal Hosts", S("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"),
	    guard_bad_host },
	{ "two Hosts on HTTP/1.0", S("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n"
	    "\r\n"), guard_bad_host },
};

/* What comes after a head: a pipelined request, never part of it. */
static const char NEXT[] = "GET /v1/responses/smuggled HTTP/1.1\r\n"
    "Host: x\r\n\r\n";

/*
 * Feed s[0..n) cut at the positions in cuts (ascending); the offset just
 * past the head's end, or 0 if it did not end.  *h is left as it ends.
 */
static size_t
feed_cuts(struct guard_head *h, const char *s, size_t n, const size_t *cuts,
    int ncuts)
{
	size_t	from = 0, to, end;
	int	i;

	guard_head_init(h);
	for (i = 0; i <= ncuts; i++) {
		to = i < ncuts ? cuts[i] : n;
		if ((end = guard_head_feed(h, s + from, to - from)) != 0)
			return (from + end);
		from = to;
	}
	return (0);
}

/* 1 if one feeding gives the end and the cause wanted. */
static int
same(struct guard_head *h, size_t end, size_t want, const char *cause,
    const char *how, const struct hcase *c, size_t a, size_t b)
{
	if (end == want && guard_head_done(h) && h->cause == cause)
		return (1);
	printf("#   %s: %s (cuts %zu, %zu): end %zu want %zu, cause %s\n",
	    c->what, how, a, b, end, want, h->cause ? h->cause : "none");
	return (0);
}

/* The head of c, then NEXT: fed every way, always the same verdict. */
static int
check(const struct hcase *c)
{
	struct guard_head	 h;
	char			*s;
	size_t			 n = c->len + sizeof NEXT - 1, cuts[2], a, b, i;
	size_t			 end;
	int			 good = 1;

	if ((s = malloc(n)) == NULL)
		abort();
	memcpy(s, c->head, c->len);
	memcpy(s + c->len, NEXT, sizeof NEXT - 1);
	end = feed_cuts(&h, s, n, NULL, 0);
	good &= same(&h, end, c->len, c->cause, "whole", c, 0, 0);
	/* Fed again after its end, a head takes nothing more. */
	good &= guard_head_feed(&h, NEXT, sizeof NEXT - 1) == 0;
	for (a = 0; a <= n && good; a++) {
		cuts[0] = a;
		end = feed_cuts(&h, s, n, cuts, 1);
		good &= same(&h, end, c->len, c->cause, "one cut", c, a, 0);
		for (b = a; b <= c->len + 1 && good; b++) {
			cuts[1] = b;
			end = feed_cuts(&h, s, n, cuts, 2);
			good &= same(&h, end, c->len, c->cause, "two cuts", c,
			    a, b);
		}
	}
	guard_head_init(&h);
	for (i = 0, end = 0; i < n && end == 0; i++)
		if (guard_head_feed(&h, s + i, 1) != 0)
			end = i + 1;
	good &= same(&h, end, c->len, c->cause, "a byte at a time", c, 0, 0);
	free(s);
	return (good);
}

/* A head still open is not taken as ended, however it is cut. */
static int
open_head(const char *s)
{
	struct guard_head	h;
	size_t			n = strlen(s), cut;

	for (cut = 0; cut <= n; cut++)
		if (feed_cuts(&h, s, n, &cut, 1) != 0 || guard_head_done(&h))
			return (0);
	return (1);
}

/*
 * The connection side: a head in 40 pieces of one evbuffer (more than
 * the 16 evbuffer_peek() fills at once) is fed whole, and its end found.
 */
static int
many_pieces(const char *head, const char *want_cause)
{
	struct event_base	*base;
	struct bufferevent	*bev;
	struct evbuffer		*in;
	struct guard_conn	 g;
	size_t			 n = strlen(head), at, k, step = n / 40 + 1;
	int			 good;

	if ((base = event_base_new()) == NULL ||
	    (bev = bufferevent_socket_new(base, -1, 0)) == NULL)
		abort();
	guard_timeout.tv_sec = 60;
	/* Not the bufferevent's own input: only its reads may add to it. */
	if ((in = evbuffer_new()) == NULL)
		abort();
	for (at = 0; at < n; at += k) {
		k = n - at < step ? n - at : step;
		evbuffer_add_reference(in, head + at, k, NULL, NULL);
	}
	evbuffer_add_reference(in, NEXT, sizeof NEXT - 1, NULL, NULL);
	memset(&g, 0, sizeof g);
	guard_scan(&g, bev, in, 0);
	good = g.phase == GUARD_BODY && g.head.cause == want_cause;
	evbuffer_free(in);
	bufferevent_free(bev);
	event_base_free(base);
	return (good);
}

int
main(void)
{
	size_t	i;
	char	big[4096];

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++)
		ok(check(&cases[i]), "%s: %s, however it is cut",
		    cases[i].what, cases[i].cause == NULL ? "accepted" :
		    "refused");
	ok(open_head("GET /v1/responses/r HTTP/1.1\r\nHost: x\r\n"),
	    "a head still open is not taken as ended");
	ok(open_head("GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n"),
	    "a bad head still open is not taken as ended");
	ok(open_head("GET / HTTP/1.1\r\n\r"),
	    "a blank line's CR alone does not end the head");

	snprintf(big, sizeof big, "GET /v1/responses/r HTTP/1.1\r\nHost: x\r\n"
	    "X-Filler: %0600d\r\n\r\n", 0);
	ok(many_pieces(big, NULL),
	    "a good head in 40 evbuffer pieces is read whole");
	snprintf(big, sizeof big, "GET /v1/responses/r HTTP/1.1\r\nHost: x\r\n"
	    "X-Filler: %0600d\r\nContent-Length : 5\r\n\r\n", 0);
	ok(many_pieces(big, guard_bad_name),
	    "a bad line in the 40th evbuffer piece is seen");
	return (done_testing());
}
