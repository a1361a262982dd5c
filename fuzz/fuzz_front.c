/*
 * libFuzzer target for the request front: the guard's head validator
 * (src/guard.c), then route parsing, query normalization and cache keys
 * (src/route.c) on the target the head holds.
 *
 * Input: 4 control bytes, then the bytes a client sends.  Bytes 1-3 seed
 * the generator that picks the split points (feeds of 0 to 1 + byte 3 %
 * 64 bytes, empty feeds included).  The head is validated three ways: in
 * one feed, in the input-chosen feeds, and one byte per feed; all three
 * must give the same end and the same cause.  The verdict (good or bad)
 * and the end must also be those of a plain line-by-line reference
 * validator below, written apart from the state machine.
 *
 * Then the target: of a good head, parsed as evhttp parses it
 * (evhttp_uri_parse_with_flags, EVHTTP_URI_NONCONFORMANT), and the first
 * line's second word of any head, split at '?' by hand, both go through
 * route_parse().  A route it accepts must have a path and a query of
 * visible ASCII only; a cacheable one a normalized query made of known
 * parameters only, re-encoded, that normalizes to itself, and a cache
 * key laid out as route.h says.  Byte 0 picks the method when the head
 * has none route_parse knows.  Any difference aborts, as does any ASan
 * or UBSan report.
 */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>

#include "guard.h"
#include "route.h"

static uint32_t
next(uint32_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 17;
	*x ^= *x << 5;
	return (*x);
}

static void
fail(const char *what, const char *p, size_t n)
{
	size_t	i;

	fprintf(stderr, "fuzz_front: %s\ninput (%zu bytes): \"", what, n);
	for (i = 0; i < n && i < 400; i++)
		fprintf(stderr, p[i] >= 0x20 && p[i] < 0x7f ? "%c" : "\\x%02x",
		    (unsigned char)p[i]);
	fprintf(stderr, "\"\n");
	abort();
}

/* ------------------------------------------------------------------ */
/* The reference: whole lines, one rule at a time                      */
/* ------------------------------------------------------------------ */

static int
ref_tchar(unsigned char c)
{
	return ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
	    (c >= 'A' && c <= 'Z') || (c != '\0' &&
	    strchr("!#$%&'*+-.^_`|~", c) != NULL));
}

static int
ref_ows(unsigned char c)
{
	return (c == ' ' || c == '\t');
}

static int
ref_name_is(const char *s, size_t n, const char *name)
{
	size_t	i;

	if (n != strlen(name))
		return (0);
	for (i = 0; i < n; i++)
		if (((unsigned char)s[i] | 0x20) != (unsigned char)name[i])
			return (0);
	return (1);
}

/*
 * The end of the head in p[0..n) as evhttp finds it (the first line after
 * the first that is empty but for one CR), or 0; and *good, whether every
 * line before it keeps the rules guard.h states.
 */
static size_t
reference(const unsigned char *p, size_t n, int *good)
{
	size_t	 at = 0, eol, len, i, j, e, digits, nline = 0;
	int	 minor = -1, nhost = 0, ncl = 0, nte = 0, ok = 1;

	for (at = 0; at < n; at = eol + 1, nline++) {
		const unsigned char *l = p + at;
		const unsigned char *nl = memchr(l, '\n', n - at);

		if (nl == NULL)
			return (0);
		eol = (size_t)(nl - p);
		len = eol - at;
		if (len > 0 && l[len - 1] == '\r')
			len--;
		if (nline > 0 && len == 0)
			break;
		/* A CR but the one before LF. */
		if (memchr(l, '\r', len) != NULL)
			ok = 0;
		if (nline == 0) {
			/* method SP target SP HTTP/1.d */
			for (i = 0; i < len && ref_tchar(l[i]); i++)
				;
			if (i == 0 || i == len || l[i] != ' ') {
				ok = 0;
				continue;
			}
			for (j = ++i; j < len && l[j] > 0x20 && l[j] < 0x7f; j++)
				;
			if (j == i || j == len || l[j] != ' ' ||
			    len - j - 1 != 8 ||
			    memcmp(l + j + 1, "HTTP/1.", 7) != 0 ||
			    l[len - 1] < '0' || l[len - 1] > '9') {
				ok = 0;
				continue;
			}
			minor = l[len - 1] - '0';
			continue;
		}
		if (ref_ows(l[0])) {		/* obs-fold */
			ok = 0;
			continue;
		}
		for (i = 0; i < len && l[i] != ':'; i++)
			if (!ref_tchar(l[i]))
				ok = 0;
		if (i == 0 || i == len) {
			ok = 0;
			continue;
		}
		/* The value, trimmed of OWS. */
		for (j = i + 1; j < len && ref_ows(l[j]); j++)
			;
		for (e = len; e > j && ref_ows(l[e - 1]); e--)
			;
		for (digits = j; digits < e; digits++)
			if (l[digits] < 0x20 ? l[digits] != '\t' :
			    l[digits] == 0x7f)
				ok = 0;
		if (ref_name_is((const char *)l, i, "host"))
			nhost++;
		else if (ref_name_is((const char *)l, i, "content-length")) {
			ncl++;
			if (e == j)
				ok = 0;
			for (digits = 0; j < e; j++) {
				if (l[j] < '0' || l[j] > '9')
					ok = 0;
				else if (digits > 0 || l[j] != '0')
					digits++;
			}
			if (digits > 18)
				ok = 0;
		} else if (ref_name_is((const char *)l, i,
		    "transfer-encoding")) {
			nte++;
			if (!ref_name_is((const char *)l + j, e - j, "chunked"))
				ok = 0;
		}
	}
	if (at >= n)
		return (0);
	if (minor < 0 || ncl > 1 || nte > 1 || (ncl && nte) ||
	    (nte && minor == 0) || (minor >= 1 ? nhost != 1 : nhost > 1))
		ok = 0;
	*good = ok;
	return (at + (size_t)(p[at] == '\n' ? 1 : 2));
}

/* ------------------------------------------------------------------ */
/* Routes                                                              */
/* ------------------------------------------------------------------ */

static enum route_method
method_of(const char *m, size_t len, uint8_t pick)
{
	static const struct {
		const char		*name;
		enum route_method	 m;
	} ms[] = {
		{ "GET", RM_GET }, { "POST", RM_POST }, { "DELETE", RM_DELETE },
		{ "HEAD", RM_HEAD }, { "PUT", RM_PUT }, { "PATCH", RM_PATCH },
		{ "OPTIONS", RM_OPTIONS },
	};
	size_t	i;

	for (i = 0; i < sizeof ms / sizeof ms[0]; i++)
		if (len == strlen(ms[i].name) && memcmp(m, ms[i].name, len) == 0)
			return (ms[i].m);
	/* Not one route_parse knows: let the input pick one. */
	return ((enum route_method)(pick % (RM_OTHER + 1)));
}

static int
visible(const char *s)
{
	for (; s != NULL && *s != '\0'; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			return (0);
	return (1);
}

/* 1 if every parameter of a normalized query is one its route knows. */
static int
known_only(const char *norm, enum route_kind kind)
{
	static const char *const response[] = {
		"include%5B%5D", "starting_after", NULL
	};
	static const char *const items[] = {
		"after", "include%5B%5D", "limit", "order", NULL
	};
	const char *const	*k;
	const char		*p = norm, *eq, *amp;
	size_t			 len;

	while (*p != '\0') {
		amp = strchr(p, '&');
		len = amp != NULL ? (size_t)(amp - p) : strlen(p);
		if ((eq = memchr(p, '=', len)) == NULL)
			return (0);
		for (k = kind == ROUTE_INPUT_ITEMS ? items : response;
		    *k != NULL; k++)
			if ((size_t)(eq - p) == strlen(*k) &&
			    memcmp(p, *k, strlen(*k)) == 0)
				break;
		if (*k == NULL)
			return (0);
		p += len + (amp != NULL);
	}
	return (1);
}

/* route_parse on path and query, and what must hold of what it gives. */
static void
route_check(enum route_method m, const char *path, const char *query,
    const char *in, size_t n)
{
	struct route		r, again;
	struct route_error	err;
	char			*key, *pre;
	size_t			klen, plen, tl = strlen("tenant");

	if (route_parse(m, path, query, &r, &err) == -1) {
		if (err.status != 400 && err.status != 404 && err.status != 405)
			fail("route_parse: an error status not 400/404/405", in,
			    n);
		if (err.code == NULL || strlen(err.message) == 0)
			fail("route_parse: an error without code or message",
			    in, n);
		return;
	}
	if (!visible(path) || !visible(query))
		fail("route_parse took a path or query with a byte that is "
		    "not visible ASCII", in, n);
	if (r.cacheable != (r.norm != NULL))
		fail("route: cacheable without a key, or a key uncacheable",
		    in, n);
	/* A forwarded path is read by the upstream as the proxy read it. */
	if (r.kind == ROUTE_FORWARD && (r.cacheable ||
	    strncmp(path, "/v1/", 4) != 0 || strstr(path, "//") != NULL ||
	    strstr(path, "/./") != NULL || strstr(path, "/../") != NULL ||
	    strcasestr(path, "%2e") != NULL || strcasestr(path, "%2f") != NULL ||
	    strcasestr(path, "%5c") != NULL || strchr(path, '\\') != NULL ||
	    (strlen(path) >= 2 && strcmp(path + strlen(path) - 2, "/.") == 0) ||
	    (strlen(path) >= 3 && strcmp(path + strlen(path) - 3, "/..") == 0)))
		fail("route: a forwarded path the upstream could read otherwise",
		    in, n);
	if (r.cacheable) {
		if (m != RM_GET || (r.kind != ROUTE_RESPONSE &&
		    r.kind != ROUTE_INPUT_ITEMS) || r.stream)
			fail("route: cacheable, not a plain GET of a response "
			    "or its input items", in, n);
		if (!visible(r.norm) || !known_only(r.norm, r.kind))
			fail("route: a normalized query not re-encoded, or "
			    "with an unknown parameter", in, n);
		/* Normalized is a fixed point. */
		if (route_parse(m, path, r.norm, &again, &err) == -1 ||
		    !again.cacheable || strcmp(again.norm, r.norm) != 0)
			fail("route: the normalized query normalizes to "
			    "something else", in, n);
		route_clear(&again);
		key = route_cache_key("tenant", &r, &klen);
		pre = route_id_prefix("tenant", r.kind == ROUTE_INPUT_ITEMS ?
		    'i' : 'r', r.id, &plen);
		if (klen != plen + strlen(r.norm) ||
		    memcmp(key, pre, plen) != 0 ||
		    memcmp(key + plen, r.norm, klen - plen) != 0 ||
		    key[klen] != '\0' || key[tl] != '\0' ||
		    key[tl + 2] != '\0' || key[plen - 1] != '\0' ||
		    plen != tl + 3 + strlen(r.id) + 1)
			fail("route: a cache key not laid out as route.h says",
			    in, n);
		free(key);
		free(pre);
	}
	route_clear(&r);
}

/* The target of the first line, as evhttp takes it apart. */
static void
target_check(const char *line, size_t len, uint8_t pick, int good,
    const char *in, size_t n)
{
	const char		*sp1, *sp2, *q;
	char			*target, *path;
	struct evhttp_uri	*uri;
	enum route_method	 m;

	if ((sp1 = memchr(line, ' ', len)) == NULL)
		return;
	sp2 = memchr(sp1 + 1, ' ', len - (size_t)(sp1 + 1 - line));
	if (sp2 == NULL)
		sp2 = line + len;
	m = method_of(line, (size_t)(sp1 - line), pick);
	if ((target = strndup(sp1 + 1, (size_t)(sp2 - sp1 - 1))) == NULL)
		abort();
	/* By hand, whatever the head's verdict: route.c's own checks. */
	if ((q = strchr(target, '?')) != NULL) {
		if ((path = strndup(target, (size_t)(q - target))) == NULL)
			abort();
		route_check(m, path, q + 1, in, n);
		free(path);
	} else
		route_check(m, target, NULL, in, n);
	/* As evhttp would hand a good head's target to the proxy. */
	if (good && (uri = evhttp_uri_parse_with_flags(target,
	    EVHTTP_URI_NONCONFORMANT)) != NULL) {
		if (evhttp_uri_get_path(uri) != NULL)
			route_check(m, evhttp_uri_get_path(uri),
			    evhttp_uri_get_query(uri), in, n);
		evhttp_uri_free(uri);
	}
	free(target);
}

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *in, size_t n)
{
	struct guard_head	 whole, split, bytes;
	const char		*p, *nl;
	size_t			 max_feed, off, k, e_whole, e_split, e_bytes;
	size_t			 e_ref;
	uint32_t		 x;
	int			 good = 0;

	if (n < 4)
		return (0);
	x = ((uint32_t)in[1] << 16 | (uint32_t)in[2] << 8 | in[3]) | 1;
	max_feed = 1 + in[3] % 64;
	p = (const char *)in + 4;
	n -= 4;

	guard_head_init(&whole);
	e_whole = guard_head_feed(&whole, p, n);

	guard_head_init(&split);
	for (off = 0, e_split = 0; off < n && e_split == 0; off += k) {
		k = next(&x) % (max_feed + 1);
		if (k > n - off)
			k = n - off;
		if ((e_split = guard_head_feed(&split, p + off, k)) != 0)
			e_split += off;
	}

	guard_head_init(&bytes);
	for (off = 0, e_bytes = 0; off < n && e_bytes == 0; off++)
		if (guard_head_feed(&bytes, p + off, 1) != 0)
			e_bytes = off + 1;

	if (e_split != e_whole || split.cause != whole.cause)
		fail("input-chosen feeds vs one feed", p, n);
	if (e_bytes != e_whole || bytes.cause != whole.cause)
		fail("one byte per feed vs one feed", p, n);
	if ((e_whole != 0) != guard_head_done(&whole))
		fail("an end without done, or done without an end", p, n);

	e_ref = reference((const unsigned char *)p, n, &good);
	if (e_ref != e_whole)
		fail("the head's end differs from the reference's", p, n);
	if (e_whole != 0 && good != (whole.cause == NULL))
		fail(good ? "a head the reference takes is refused" :
		    "a head the reference refuses is taken", p, n);

	if ((nl = memchr(p, '\n', n)) != NULL)
		target_check(p, (size_t)(nl - p), in[0], e_whole != 0 &&
		    whole.cause == NULL, p, n);
	return (0);
}
