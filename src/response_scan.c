/*
 * response_scan.c - response_inspect(): what the proxy must know of an
 * upstream's Response body (is it a JSON object; its id, object, status
 * and store) read in one streaming pass with yajl, which builds nothing.
 *
 * Every miss reads its answer before answering its client, and building
 * the whole tree with jansson cost about six times the pass (some 60 us
 * for a 3 KB Response): this is that pass.  The rest of response.c still
 * reads with jansson.  yajl's defaults are strict JSON: no comments, no
 * trailing bytes, no second value, strings checked as UTF-8.  Of the
 * top-level keys read here, one given twice makes the body unreadable;
 * other keys may repeat (the proxy reads nothing of them).
 */
#include "config.h"

#include <string.h>

#include <yajl/yajl_parse.h>

#include "response.h"
#include "route.h"

enum { RS_OTHER, RS_ID, RS_OBJECT, RS_STATUS, RS_STORE };

struct response_scan {
	struct response_info	*info;
	int			 depth;		/* 1: in the top object */
	int			 top;		/* it began with '{' */
	int			 key;		/* the next value's, at depth 1 */
	unsigned		 seen;
	int			 is_response;
	int			 final;
};

/* A value at depth 0 that is not an object: not a Response. */
static int
response_scan_value(struct response_scan *s)
{
	if (s->depth == 0)
		return (0);
	if (s->depth == 1)
		s->key = RS_OTHER;
	return (1);
}

static int
response_scan_null(void *ctx)
{
	return (response_scan_value(ctx));
}

static int
response_scan_bool(void *ctx, int b)
{
	struct response_scan	*s = ctx;

	if (s->depth == 1 && s->key == RS_STORE && !b)
		s->info->store_false = 1;
	return (response_scan_value(s));
}

static int
response_scan_number(void *ctx, const char *n, size_t len)
{
	(void)n;
	(void)len;
	return (response_scan_value(ctx));
}

static int
response_scan_string(void *ctx, const unsigned char *v, size_t len)
{
	struct response_scan	*s = ctx;
	char			 status[16];

	if (s->depth == 1) {
		switch (s->key) {
		case RS_ID:
			/* Valid, it fits: at most ROUTE_ID_MAX bytes. */
			if (route_valid_id((const char *)v, len)) {
				memcpy(s->info->id, v, len);
				s->info->id[len] = '\0';
			}
			break;
		case RS_OBJECT:
			s->is_response = len == 8 && memcmp(v, "response", 8) == 0;
			break;
		case RS_STATUS:
			if (len < sizeof status) {
				memcpy(status, v, len);
				status[len] = '\0';
				s->final = response_status_final(status);
			}
			break;
		}
	}
	return (response_scan_value(s));
}

static int
response_scan_key(void *ctx, const unsigned char *k, size_t len)
{
	static const struct {
		const char	*name;
		size_t		 len;
		int		 key;
	} keys[] = {
		{ "id", 2, RS_ID }, { "object", 6, RS_OBJECT },
		{ "status", 6, RS_STATUS }, { "store", 5, RS_STORE }
	};
	struct response_scan	*s = ctx;
	size_t			 i;

	if (s->depth != 1)
		return (1);
	s->key = RS_OTHER;
	for (i = 0; i < sizeof keys / sizeof keys[0]; i++)
		if (len == keys[i].len && memcmp(k, keys[i].name, len) == 0) {
			if (s->seen & (1u << keys[i].key))
				return (0);	/* which one holds? */
			s->seen |= 1u << keys[i].key;
			s->key = keys[i].key;
		}
	return (1);
}

static int
response_scan_open(void *ctx)
{
	struct response_scan	*s = ctx;

	if (s->depth == 0)
		s->top = 1;
	else if (s->depth == 1)
		s->key = RS_OTHER;
	s->depth++;
	return (1);
}

static int
response_scan_open_array(void *ctx)
{
	struct response_scan	*s = ctx;

	if (s->depth == 0)
		return (0);
	return (response_scan_open(s));
}

static int
response_scan_close(void *ctx)
{
	struct response_scan	*s = ctx;

	s->depth--;
	return (1);
}

static const yajl_callbacks response_scan_cbs = {
	.yajl_null = response_scan_null,
	.yajl_boolean = response_scan_bool,
	.yajl_number = response_scan_number,
	.yajl_string = response_scan_string,
	.yajl_start_map = response_scan_open,
	.yajl_map_key = response_scan_key,
	.yajl_end_map = response_scan_close,
	.yajl_start_array = response_scan_open_array,
	.yajl_end_array = response_scan_close,
};

int
response_inspect(const char *body, size_t len, struct response_info *info)
{
	struct response_scan	 s;
	yajl_handle		 h;
	yajl_status		 st;

	memset(info, 0, sizeof *info);
	memset(&s, 0, sizeof s);
	s.info = info;
	if ((h = yajl_alloc(&response_scan_cbs, NULL, &s)) == NULL)
		return (-1);
	st = yajl_parse(h, (const unsigned char *)body, len);
	if (st == yajl_status_ok)
		st = yajl_complete_parse(h);
	yajl_free(h);
	if (st != yajl_status_ok || !s.top) {
		memset(info, 0, sizeof *info);
		return (-1);
	}
	info->final = s.is_response && s.final;
	return (0);
}
