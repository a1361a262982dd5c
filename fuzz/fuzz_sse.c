/*
 * libFuzzer target for the SSE parser (src/sse.c).
 *
 * Input: 4 control bytes, then the stream.  Byte 0 picks max_data; bytes
 * 1-3 seed the generator that picks the split points (feeds of 0 to
 * 1 + byte 3 % 64 bytes, empty feeds included).  The stream is parsed
 * three ways: in one feed, in the input-chosen feeds, and one byte per
 * feed.  All three must give the same sequence of events (type, data),
 * and it must be the one a plain whole-input reference parser below gives
 * (the WHATWG event stream interpretation, restricted to type and data,
 * with sse.c's bounds: a line longer than max_data + 16 or data longer
 * than max_data drops its event; the type is cut at 128 bytes).  Every
 * event's data must be NUL-terminated at its stated length, no longer than
 * max_data, and hold no CR; its type no CR or LF.  Any difference aborts.
 */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sse.h"

#define TYPE_MAX	128	/* SSE_TYPE_MAX in sse.c */
#define LINE_SLACK	16	/* a line may be max_data + 16 bytes */

static const size_t	max_datas[] = { 0, 1, 5, 8, 16, 100, 256, 1 << 20 };

struct evlog {
	unsigned char	*buf;
	size_t		 len, cap;
	size_t		 events;
	size_t		 max_data;
};

static void
evlog_put(struct evlog *l, const void *p, size_t n)
{
	if (l->len + n > l->cap) {
		size_t	ncap = (l->len + n) * 2 + 64;

		if ((l->buf = realloc(l->buf, ncap)) == NULL)
			abort();
		l->cap = ncap;
	}
	if (n > 0)
		memcpy(l->buf + l->len, p, n);
	l->len += n;
}

/* One event in the log: type length, type, data length, data. */
static void
evlog_event(struct evlog *l, const char *type, size_t tlen, const char *data,
    size_t dlen)
{
	evlog_put(l, &tlen, sizeof tlen);
	evlog_put(l, type, tlen);
	evlog_put(l, &dlen, sizeof dlen);
	evlog_put(l, data, dlen);
	l->events++;
}

static void
sink(void *arg, const char *type, const char *data, size_t len)
{
	struct evlog	*l = arg;
	size_t		 tlen = strlen(type);

	if (data[len] != '\0') {
		fprintf(stderr, "event data not NUL-terminated at len %zu\n",
		    len);
		abort();
	}
	if (len > l->max_data) {
		fprintf(stderr, "event data %zu > max_data %zu\n", len,
		    l->max_data);
		abort();
	}
	if (tlen > TYPE_MAX || memchr(type, '\r', tlen) != NULL ||
	    memchr(type, '\n', tlen) != NULL) {
		fprintf(stderr, "bad event type (%zu bytes)\n", tlen);
		abort();
	}
	if (memchr(data, '\r', len) != NULL) {
		fprintf(stderr, "CR in event data\n");
		abort();
	}
	evlog_event(l, type, tlen, data, len);
}

/* The reference: split the whole input into lines, then interpret them. */
static void
reference(const char *p, size_t n, size_t max_data, struct evlog *out)
{
	const char	*end = p + n, *eol, *colon, *value;
	char		 type[TYPE_MAX + 1] = "";
	char		*data;
	size_t		 len, nlen, vlen, dlen = 0;
	int		 has_data = 0, overflow = 0;

	if ((data = malloc(n + 1)) == NULL)
		abort();
	while (p < end) {
		for (eol = p; eol < end && *eol != '\n' && *eol != '\r'; eol++)
			;
		if (eol == end)
			break;		/* an unterminated last line */
		len = (size_t)(eol - p);
		if (len == 0) {
			if (has_data && !overflow)
				evlog_event(out, type, strlen(type), data,
				    dlen);
			type[0] = '\0';
			dlen = 0;
			has_data = overflow = 0;
		} else if (len > max_data + LINE_SLACK)
			overflow = 1;
		else if (*p != ':') {
			if ((colon = memchr(p, ':', len)) != NULL) {
				nlen = (size_t)(colon - p);
				value = colon + 1;
				vlen = len - nlen - 1;
				if (vlen > 0 && *value == ' ') {
					value++;
					vlen--;
				}
			} else {
				nlen = len;
				value = "";
				vlen = 0;
			}
			if (nlen == 5 && memcmp(p, "event", 5) == 0) {
				if (vlen > TYPE_MAX)
					vlen = TYPE_MAX;
				memcpy(type, value, vlen);
				type[vlen] = '\0';
			} else if (nlen == 4 && memcmp(p, "data", 4) == 0) {
				if (has_data && dlen + 1 <= n)
					data[dlen++] = '\n';
				if (dlen + vlen <= n) {
					memcpy(data + dlen, value, vlen);
					dlen += vlen;
				}
				if (dlen > max_data)
					overflow = 1;
				has_data = 1;
			}
		}
		if (*eol == '\r' && eol + 1 < end && eol[1] == '\n')
			eol++;
		p = eol + 1;
	}
	free(data);
}

static uint32_t
next(uint32_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 17;
	*x ^= *x << 5;
	return (*x);
}

static void
differ(const char *what, const struct evlog *a, const struct evlog *b)
{
	size_t	i;

	for (i = 0; i < a->len && i < b->len && a->buf[i] == b->buf[i]; i++)
		;
	fprintf(stderr, "%s: %zu events (%zu bytes) vs %zu events (%zu bytes),"
	    " first difference at byte %zu of the event log\n", what,
	    a->events, a->len, b->events, b->len, i);
	abort();
}

static int
same(const struct evlog *a, const struct evlog *b)
{
	return (a->len == b->len && a->events == b->events &&
	    (a->len == 0 || memcmp(a->buf, b->buf, a->len) == 0));
}

int
LLVMFuzzerTestOneInput(const uint8_t *in, size_t n)
{
	struct evlog	 whole = { 0 }, split = { 0 }, bytes = { 0 };
	struct evlog	 ref = { 0 };
	struct sse	*s;
	const char	*p;
	size_t		 max_data, max_feed, off, k;
	uint32_t	 x;

	if (n < 4)
		return (0);
	max_data = max_datas[in[0] % (sizeof max_datas / sizeof max_datas[0])];
	x = ((uint32_t)in[1] << 16 | (uint32_t)in[2] << 8 | in[3]) | 1;
	max_feed = 1 + in[3] % 64;
	p = (const char *)in + 4;
	n -= 4;
	whole.max_data = split.max_data = bytes.max_data = max_data;

	s = sse_new(max_data, sink, &whole);
	sse_feed(s, p, n);
	sse_free(s);

	s = sse_new(max_data, sink, &split);
	for (off = 0; off < n; off += k) {
		k = next(&x) % (max_feed + 1);
		if (k > n - off)
			k = n - off;
		sse_feed(s, p + off, k);
	}
	sse_free(s);

	s = sse_new(max_data, sink, &bytes);
	for (off = 0; off < n; off++)
		sse_feed(s, p + off, 1);
	sse_free(s);

	reference(p, n, max_data, &ref);

	if (!same(&whole, &ref))
		differ("one feed vs reference", &whole, &ref);
	if (!same(&split, &whole))
		differ("input-chosen feeds vs one feed", &split, &whole);
	if (!same(&bytes, &whole))
		differ("one byte per feed vs one feed", &bytes, &whole);
	free(whole.buf);
	free(split.buf);
	free(bytes.buf);
	free(ref.buf);
	return (0);
}
