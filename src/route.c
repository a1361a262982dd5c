/*
 * route.c - route parsing, id validation and query normalization.
 *
 * The normalized query is the cache key's last part: only the parameters
 * that change the body, sorted, include[] values sorted and de-duplicated,
 * defaults made explicit, every name and value re-encoded, so two queries
 * share a key exactly when the upstream answers them alike.  Only the
 * parameters a route knows make keys: a query with any other is
 * forwarded but never cached.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>

#include "log.h"
#include "route.h"
#include "xmalloc.h"

#define ROUTE_PREFIX	"/v1/responses"
#define ROUTE_CONVERSATIONS	"/v1/conversations"
#define ROUTE_MAXPARAMS	64

static const char *const route_method_names[] = {
	[RM_GET] = "GET", [RM_POST] = "POST", [RM_DELETE] = "DELETE",
	[RM_HEAD] = "HEAD", [RM_PUT] = "PUT", [RM_PATCH] = "PATCH",
	[RM_OPTIONS] = "OPTIONS", [RM_OTHER] = "OTHER"
};

enum route_method
route_method_of(enum evhttp_cmd_type t)
{
	switch (t) {
	case EVHTTP_REQ_GET:	return (RM_GET);
	case EVHTTP_REQ_POST:	return (RM_POST);
	case EVHTTP_REQ_DELETE:	return (RM_DELETE);
	case EVHTTP_REQ_HEAD:	return (RM_HEAD);
	case EVHTTP_REQ_PUT:	return (RM_PUT);
	case EVHTTP_REQ_PATCH:	return (RM_PATCH);
	case EVHTTP_REQ_OPTIONS: return (RM_OPTIONS);
	default:		return (RM_OTHER);
	}
}

const char *
route_method_name(enum route_method m)
{
	return (route_method_names[m]);
}

const char *
route_cmd_name(enum evhttp_cmd_type t)
{
	switch (t) {
	case EVHTTP_REQ_TRACE:		return ("TRACE");
	case EVHTTP_REQ_CONNECT:	return ("CONNECT");
	default:			return (route_method_name(
					    route_method_of(t)));
	}
}

int
route_valid_id(const char *s, size_t len)
{
	static const unsigned char	ok[256] = {
		['a' ... 'z'] = 1, ['A' ... 'Z'] = 1, ['0' ... '9'] = 1,
		['_'] = 1, ['-'] = 1
	};
	unsigned char			all = 1;
	size_t				i;

	if (len == 0 || len > ROUTE_ID_MAX)
		return (0);
	/* No early exit: ids are short, and valid nearly always. */
	for (i = 0; i < len; i++)
		all &= ok[(unsigned char)s[i]];
	return (all);
}

static int
route_fail(struct route_error *err, int status, const char *code,
    const char *allow, const char *fmt, const char *arg)
{
	err->status = status;
	err->code = code;
	err->allow = allow;
	snprintf(err->message, sizeof err->message, fmt, arg);
	return (-1);
}

static int
route_bad_id(struct route_error *err, const char *seg, size_t len)
{
	char	shown[64];
	size_t	i, n = len < 40 ? len : 40;

	/* Echo a printable prefix only: the id may be anything. */
	for (i = 0; i < n; i++)
		shown[i] = (seg[i] >= 0x20 && seg[i] < 0x7f && seg[i] != '"' &&
		    seg[i] != '\\') ? seg[i] : '?';
	shown[n] = '\0';
	if (len > n)
		strcpy(shown + n, "...");
	return (route_fail(err, 400, "invalid_id", NULL, "Invalid id '%s': "
	    "expected 1 to 128 characters of [A-Za-z0-9_-].", shown));
}

/* One decoded query parameter. */
struct route_param {
	char	*name;
	char	*value;
};

static int
route_param_cmp(const void *a, const void *b)
{
	const struct route_param *pa = a, *pb = b;
	int	c;

	if ((c = strcmp(pa->name, pb->name)) != 0)
		return (c);
	return (strcmp(pa->value, pb->value));
}

/* Decode one name or value; NULL if it hides a NUL, CR or LF. */
static char *
route_decode(const char *s, size_t len)
{
	char	*raw, *dec;
	size_t	 declen;

	raw = xstrndup(s, len);
	dec = evhttp_uridecode(raw, 1, &declen);
	free(raw);
	if (dec == NULL)
		fatalx("out of memory");
	if (strlen(dec) != declen || strpbrk(dec, "\r\n") != NULL) {
		free(dec);
		return (NULL);
	}
	return (dec);
}

static void
route_params_free(struct route_param *p, size_t n)
{
	while (n-- > 0) {
		free(p[n].name);
		free(p[n].value);
	}
}

/*
 * Split and decode a raw query into p (at most ROUTE_MAXPARAMS).
 * Returns the count, or -1 with *err filled.
 */
static int
route_split_query(const char *q, struct route_param *p,
    struct route_error *err)
{
	const char	*amp, *eq, *end;
	size_t		 n = 0;

	for (; q != NULL && *q != '\0'; q = *end == '\0' ? end : end + 1) {
		if ((amp = strchr(q, '&')) == NULL)
			amp = q + strlen(q);
		end = amp;
		if (amp == q)
			continue;
		if (n == ROUTE_MAXPARAMS) {
			route_params_free(p, n);
			return (route_fail(err, 400, "invalid_query", NULL,
			    "Too many query parameters%s.", ""));
		}
		eq = memchr(q, '=', (size_t)(amp - q));
		p[n].name = route_decode(q, (size_t)((eq ? eq : amp) - q));
		p[n].value = eq ? route_decode(eq + 1, (size_t)(amp - eq - 1)) :
		    xstrdup("");
		n++;
		if (p[n - 1].name == NULL || p[n - 1].value == NULL) {
			route_params_free(p, n);
			return (route_fail(err, 400, "invalid_query", NULL,
			    "Query parameters must not contain NUL, CR or "
			    "LF%s.", ""));
		}
	}
	return ((int)n);
}

static void
route_append(char **buf, size_t *len, size_t *cap, const char *name,
    const char *value)
{
	char	*en, *ev;
	size_t	 need;

	if ((en = evhttp_uriencode(name, -1, 0)) == NULL ||
	    (ev = evhttp_uriencode(value, -1, 0)) == NULL)
		fatalx("out of memory");
	need = *len + strlen(en) + strlen(ev) + 3;
	if (need > *cap) {
		*cap = need * 2;
		*buf = xreallocarray(*buf, *cap, 1);
	}
	*len += (size_t)sprintf(*buf + *len, "%s%s=%s", *len ? "&" : "", en,
	    ev);
	free(en);
	free(ev);
}

static int
route_is_include(const char *name)
{
	return (strcmp(name, "include[]") == 0 || strcmp(name, "include") == 0);
}

/*
 * 1 if the upstream knows the query parameter name on r's route.  Any
 * other makes the request uncacheable: keys are made of known parameters
 * only, so that a client cannot mint keys (and evict others' entries)
 * by adding parameters of its own.
 */
static int
route_known_param(const struct route *r, const char *name)
{
	static const char *const response[] = {
		"include_obfuscation", "starting_after", "stream", NULL
	};
	static const char *const input_items[] = {
		"after", "limit", "order", NULL
	};
	const char *const	*k;

	if (route_is_include(name))
		return (1);
	for (k = r->kind == ROUTE_INPUT_ITEMS ? input_items : response;
	    *k != NULL; k++)
		if (strcmp(name, *k) == 0)
			return (1);
	return (0);
}

/*
 * Build r->norm from the query; decides r->stream and r->cacheable.  A
 * request with a parameter the route does not know stays valid and is
 * forwarded as it came, but is not cacheable.
 */
static int
route_normalize(struct route *r, const char *query, struct route_error *err)
{
	struct route_param	 p[ROUTE_MAXPARAMS];
	const char		*limit = NULL, *order = NULL, *after = NULL;
	const char		*stream = NULL;
	char			*buf = NULL, *end;
	size_t			 len = 0, cap = 0;
	int			 n, i, ret = -1, unknown = 0;
	long			 lim = 20;

	if ((n = route_split_query(query, p, err)) == -1)
		return (-1);
	for (i = 0; i < n; i++) {
		const char **one = NULL;

		if (!route_known_param(r, p[i].name)) {
			unknown = 1;
			continue;
		}
		if (r->kind == ROUTE_INPUT_ITEMS) {
			if (strcmp(p[i].name, "limit") == 0)
				one = &limit;
			else if (strcmp(p[i].name, "order") == 0)
				one = &order;
			else if (strcmp(p[i].name, "after") == 0)
				one = &after;
		} else if (strcmp(p[i].name, "stream") == 0)
			one = &stream;
		if (one == NULL)
			continue;
		if (*one != NULL) {
			route_fail(err, 400, "invalid_query", NULL,
			    "Query parameter '%s' is given more than once.",
			    p[i].name);
			goto out;
		}
		*one = p[i].value;
	}
	if (stream != NULL && strcmp(stream, "false") != 0) {
		/* Streams pass through; an odd value is the upstream's call. */
		r->stream = strcmp(stream, "true") == 0;
		r->cacheable = 0;
		ret = 0;
		goto out;
	}
	if (r->kind == ROUTE_INPUT_ITEMS) {
		lim = 20;
		if (limit != NULL) {
			lim = strtol(limit, &end, 10);
			if (*limit < '0' || *limit > '9' || *end != '\0' ||
			    lim < 1 || lim > 100) {
				route_fail(err, 400, "invalid_query", NULL,
				    "Invalid 'limit': expected an integer from "
				    "1 to 100%s.", "");
				goto out;
			}
		}
		if (order != NULL && strcmp(order, "asc") != 0 &&
		    strcmp(order, "desc") != 0) {
			route_fail(err, 400, "invalid_query", NULL,
			    "Invalid 'order': expected 'asc' or 'desc'%s.", "");
			goto out;
		}
	}
	if (unknown) {
		r->cacheable = 0;
		ret = 0;
		goto out;
	}

	qsort(p, (size_t)n, sizeof p[0], route_param_cmp);
	{
		/* include[] and repeated include= are one list: sorted, each once. */
		const char	*vals[ROUTE_MAXPARAMS];
		int		 nv = 0, a, b;

		for (i = 0; i < n; i++)
			if (route_is_include(p[i].name))
				vals[nv++] = p[i].value;
		for (a = 1; a < nv; a++)	/* insertion sort: tiny n */
			for (b = a; b > 0 && strcmp(vals[b - 1], vals[b]) > 0;
			    b--) {
				const char *t = vals[b];
				vals[b] = vals[b - 1];
				vals[b - 1] = t;
			}
		if (r->kind == ROUTE_INPUT_ITEMS && after != NULL)
			route_append(&buf, &len, &cap, "after", after);
		for (a = 0; a < nv; a++)
			if (a == 0 || strcmp(vals[a - 1], vals[a]) != 0)
				route_append(&buf, &len, &cap, "include[]",
				    vals[a]);
		if (r->kind == ROUTE_INPUT_ITEMS) {
			char lbuf[16];

			snprintf(lbuf, sizeof lbuf, "%ld", lim);
			route_append(&buf, &len, &cap, "limit", lbuf);
			route_append(&buf, &len, &cap, "order",
			    order != NULL ? order : "desc");
		}
	}
	/* starting_after, sorted as it is; include_obfuscation is not kept. */
	for (i = 0; i < n; i++)
		if (r->kind == ROUTE_RESPONSE &&
		    strcmp(p[i].name, "starting_after") == 0)
			route_append(&buf, &len, &cap, p[i].name, p[i].value);
	if (buf == NULL)
		buf = xstrdup("");
	r->norm = buf;
	r->cacheable = 1;
	buf = NULL;
	ret = 0;
out:
	free(buf);
	route_params_free(p, (size_t)n);
	return (ret);
}

/*
 * 1 if a raw path or query holds only visible ASCII (no space, control or
 * non-ASCII byte) and no encoded NUL, CR or LF: checked on every route,
 * forwarded or not, so that no such target ever reaches the upstream's
 * request line.
 */
static int
route_clean(const char *q)
{
	const unsigned char	*p;

	for (p = (const unsigned char *)q; p != NULL && *p != '\0'; p++) {
		if (*p <= 0x20 || *p >= 0x7f)
			return (0);
		if (*p == '%' && p[1] == '0' && (p[2] == '0' || p[2] == 'a' ||
		    p[2] == 'A' || p[2] == 'd' || p[2] == 'D'))
			return (0);
	}
	return (1);
}

/*
 * 1 if a path segment is plain: not empty, "." or "..", and no encoded
 * '/', '\\' or '.', so that the upstream reads the path the proxy read
 * (and a client's allow-list prefix cannot be walked out of).
 */
static int
route_plain_segment(const char *s, size_t len)
{
	size_t	i;
	char	c;

	if (len == 0 || (len == 1 && s[0] == '.') ||
	    (len == 2 && s[0] == '.' && s[1] == '.'))
		return (0);
	for (i = 0; i < len; i++) {
		c = s[i];
		if (c == '\\')
			return (0);
		if (c != '%')
			continue;
		if (i + 2 >= len)
			return (0);
		if (s[i + 1] == '2' && (s[i + 2] == 'e' || s[i + 2] == 'E' ||
		    s[i + 2] == 'f' || s[i + 2] == 'F'))
			return (0);
		if (s[i + 1] == '5' && (s[i + 2] == 'c' || s[i + 2] == 'C'))
			return (0);
	}
	return (1);
}

/*
 * Conversations belong to their creator, as responses do: a path under
 * /v1/conversations/{id} names the id that ownership checks, and a POST
 * /v1/conversations creates one.
 */
static void
route_conversation(enum route_method m, const char *path, struct route *r)
{
	const char	*id, *end;

	if (strncmp(path, ROUTE_CONVERSATIONS,
	    sizeof ROUTE_CONVERSATIONS - 1) != 0)
		return;
	id = path + sizeof ROUTE_CONVERSATIONS - 1;
	if (*id == '\0') {
		r->creates = m == RM_POST;
		return;
	}
	if (*id++ != '/')
		return;
	if ((end = strchr(id, '/')) == NULL)
		end = id + strlen(id);
	if (route_valid_id(id, (size_t)(end - id))) {
		memcpy(r->id, id, (size_t)(end - id));
		r->id[end - id] = '\0';
	}
}

/*
 * Any other path under /v1/: forwarded as it came, never cached.  Paths
 * outside /v1/, and /v1/ itself, are unknown.
 */
static int
route_forward(enum route_method m, const char *path, struct route *r,
    struct route_error *err)
{
	const char	*s, *slash;
	size_t		 len;

	if (strncmp(path, "/v1/", 4) != 0 || path[4] == '\0')
		return (route_fail(err, 404, "unknown_route", NULL,
		    "Unknown route: respcache serves the API's /v1/ paths "
		    "only%s.", ""));
	for (s = path + 4; *s != '\0'; s = slash != NULL ? slash + 1 :
	    s + len) {
		slash = strchr(s, '/');
		len = slash != NULL ? (size_t)(slash - s) : strlen(s);
		if (!route_plain_segment(s, len) && !(slash == NULL &&
		    len == 0))
			return (route_fail(err, 400, "invalid_path", NULL,
			    "Invalid path: empty, '.' or '..' segments and "
			    "encoded '/', '\\' or '.' are refused%s.", ""));
		if (slash == NULL)
			break;
	}
	if (m != RM_GET && m != RM_POST && m != RM_PUT && m != RM_PATCH &&
	    m != RM_DELETE)
		return (route_fail(err, 405, "method_not_allowed",
		    "GET, POST, PUT, PATCH, DELETE", "Method not allowed%s.",
		    ""));
	r->kind = ROUTE_FORWARD;
	route_conversation(m, path, r);
	return (0);
}

int
route_parse(enum route_method m, const char *path, const char *query,
    struct route *r, struct route_error *err)
{
	const char	*seg[3], *s, *slash;
	size_t		 seglen[3], nseg = 0;

	memset(r, 0, sizeof *r);
	memset(err, 0, sizeof *err);
	r->method = m;
	if (!route_clean(query))
		return (route_fail(err, 400, "invalid_query", NULL,
		    "The query must hold visible ASCII characters only, and "
		    "no encoded NUL, CR or LF%s.", ""));
	if (!route_clean(path))
		return (route_fail(err, 400, "invalid_path", NULL,
		    "The path must hold visible ASCII characters only, and "
		    "no encoded NUL, CR or LF%s.", ""));
	if (strncmp(path, ROUTE_PREFIX, sizeof ROUTE_PREFIX - 1) != 0 ||
	    (path[sizeof ROUTE_PREFIX - 1] != '\0' &&
	    path[sizeof ROUTE_PREFIX - 1] != '/'))
		return (route_forward(m, path, r, err));
	s = path + sizeof ROUTE_PREFIX - 1;
	if (*s == '\0') {
		if (m != RM_POST)
			return (route_fail(err, 405, "method_not_allowed",
			    "POST", "Method not allowed on /v1/responses: "
			    "use POST%s.", ""));
		r->kind = ROUTE_CREATE;
		return (0);
	}

	/* Every segment after the prefix is validated, ids or not. */
	while (*s == '/') {
		s++;
		slash = strchr(s, '/');
		seglen[nseg < 3 ? nseg : 2] = slash ? (size_t)(slash - s) :
		    strlen(s);
		if (!route_valid_id(s, nseg < 3 ? seglen[nseg] : seglen[2]))
			return (route_bad_id(err, s, slash ? (size_t)(slash - s)
			    : strlen(s)));
		if (nseg < 3)
			seg[nseg] = s;
		nseg++;
		s = slash ? slash : s + strlen(s);
	}
	memcpy(r->id, seg[0], seglen[0]);
	r->id[seglen[0]] = '\0';

	if (nseg == 1) {
		if (m == RM_POST) {
			/* input_tokens, compact and any later POST verb. */
			r->kind = ROUTE_OTHER;
			r->id[0] = '\0';
			return (0);
		}
		if (m != RM_GET && m != RM_DELETE)
			return (route_fail(err, 405, "method_not_allowed",
			    "GET, DELETE", "Method not allowed on "
			    "/v1/responses/{id}: use GET or DELETE%s.", ""));
		r->kind = ROUTE_RESPONSE;
		if (m == RM_DELETE)
			return (0);
		return (route_normalize(r, query, err));
	}
	if (nseg == 2 && seglen[1] == 11 &&
	    memcmp(seg[1], "input_items", 11) == 0) {
		if (m != RM_GET)
			return (route_fail(err, 405, "method_not_allowed", "GET",
			    "Method not allowed on input_items: use GET%s.",
			    ""));
		r->kind = ROUTE_INPUT_ITEMS;
		return (route_normalize(r, query, err));
	}
	if (nseg == 2 && seglen[1] == 6 && memcmp(seg[1], "cancel", 6) == 0) {
		if (m != RM_POST)
			return (route_fail(err, 405, "method_not_allowed",
			    "POST", "Method not allowed on cancel: use "
			    "POST%s.", ""));
		r->kind = ROUTE_CANCEL;
		return (0);
	}
	if (m != RM_GET && m != RM_POST && m != RM_DELETE)
		return (route_fail(err, 405, "method_not_allowed",
		    "GET, POST, DELETE", "Method not allowed%s.", ""));
	r->kind = ROUTE_OTHER;
	return (0);
}

void
route_clear(struct route *r)
{
	free(r->norm);
	r->norm = NULL;
}

static char *
route_key(const char *tenant, char kind, const char *id, const char *norm,
    size_t *len)
{
	size_t	 tl = strlen(tenant), il = strlen(id);
	size_t	 nl = norm ? strlen(norm) : 0;
	char	*k, *p;

	*len = tl + 1 + 1 + 1 + il + 1 + nl;
	k = xmalloc(*len + 1);
	p = k;
	memcpy(p, tenant, tl);
	p += tl;
	*p++ = '\0';
	*p++ = kind;
	*p++ = '\0';
	memcpy(p, id, il);
	p += il;
	*p++ = '\0';
	if (nl)
		memcpy(p, norm, nl);
	k[*len] = '\0';
	return (k);
}

char *
route_cache_key(const char *tenant, const struct route *r, size_t *len)
{
	return (route_key(tenant, r->kind == ROUTE_INPUT_ITEMS ?
	    RK_INPUT_ITEMS : RK_RESPONSE, r->id, r->norm, len));
}

char *
route_id_prefix(const char *tenant, enum route_key_kind kind, const char *id,
    size_t *len)
{
	return (route_key(tenant, kind, id, NULL, len));
}
