/* Unit tests: route parsing, id validation, query normalization, keys. */
#include "config.h"

#include "../../src/log.c"
#include "../../src/xmalloc.c"
#include "../../src/route.c"
#include "tap.h"

static struct route r;
static struct route_error e;

static int
parse(enum route_method m, const char *path, const char *q)
{
	route_clear(&r);
	return (route_parse(m, path, q, &r, &e));
}

static const char *
norm(enum route_method m, const char *path, const char *q)
{
	if (parse(m, path, q) == -1)
		return ("ERROR");
	return (r.norm != NULL ? r.norm : "NULL");
}

int
main(void)
{
	char	 id128[130], id129[131], *k;
	size_t	 klen;

	/* Ids. */
	ok(route_valid_id("resp_abc-XYZ_09", 15), "plain id is valid");
	ok(!route_valid_id("", 0), "empty id is invalid");
	ok(!route_valid_id("a.b", 3), "dot is invalid");
	ok(!route_valid_id("a%2Fb", 5), "percent-encoding is invalid");
	memset(id128, 'a', 128);
	id128[128] = '\0';
	memset(id129, 'a', 129);
	id129[129] = '\0';
	ok(route_valid_id(id128, 128), "128 chars is valid");
	ok(!route_valid_id(id129, 129), "129 chars is invalid");

	/* Routes. */
	ok(parse(RM_POST, "/v1/responses", NULL) == 0 &&
	    r.kind == ROUTE_CREATE, "POST /v1/responses is a create");
	ok(parse(RM_GET, "/v1/responses", NULL) == -1 && e.status == 405,
	    "GET /v1/responses is 405");
	ok(parse(RM_GET, "/v1/responses/resp_1", NULL) == 0 &&
	    r.kind == ROUTE_RESPONSE && r.cacheable &&
	    strcmp(r.id, "resp_1") == 0, "GET response is cacheable");
	ok(parse(RM_DELETE, "/v1/responses/resp_1", NULL) == 0 &&
	    r.kind == ROUTE_RESPONSE && !r.cacheable, "DELETE is not cacheable");
	ok(parse(RM_PUT, "/v1/responses/resp_1", NULL) == -1 &&
	    e.status == 405 && e.allow != NULL, "PUT response is 405 with Allow");
	ok(parse(RM_GET, "/v1/responses/resp_1/input_items", "limit=5") == 0
	    && r.kind == ROUTE_INPUT_ITEMS && r.cacheable, "input_items");
	ok(parse(RM_POST, "/v1/responses/resp_1/input_items", NULL) == -1 &&
	    e.status == 405, "POST input_items is 405");
	ok(parse(RM_POST, "/v1/responses/resp_1/cancel", NULL) == 0 &&
	    r.kind == ROUTE_CANCEL, "cancel");
	ok(parse(RM_GET, "/v1/responses/resp_1/cancel", NULL) == -1 &&
	    e.status == 405, "GET cancel is 405");
	ok(parse(RM_POST, "/v1/responses/input_tokens", NULL) == 0 &&
	    r.kind == ROUTE_OTHER, "input_tokens is forwarded");
	ok(parse(RM_POST, "/v1/responses/compact", NULL) == 0 &&
	    r.kind == ROUTE_OTHER, "compact is forwarded");
	ok(parse(RM_GET, "/v1/responses/resp_1/other/deep", NULL) == 0 &&
	    r.kind == ROUTE_OTHER, "deeper paths are forwarded");
	ok(parse(RM_GET, "/v1/models", NULL) == 0 && r.kind == ROUTE_FORWARD &&
	    !r.cacheable, "/v1/models is forwarded, never cached");
	ok(parse(RM_POST, "/v1/chat/completions", NULL) == 0 &&
	    r.kind == ROUTE_FORWARD, "so is POST /v1/chat/completions");
	ok(parse(RM_PATCH, "/v1/files/file-1/x:y@z", NULL) == 0 &&
	    r.kind == ROUTE_FORWARD, "any method of the API, any plain path");
	ok(parse(RM_GET, "/v1/responsesX", NULL) == 0 &&
	    r.kind == ROUTE_FORWARD, "/v1/responsesX is another path");
	ok(parse(RM_GET, "/v1/", NULL) == -1 && e.status == 404, "/v1/ is 404");
	ok(parse(RM_GET, "/v2/models", NULL) == -1 && e.status == 404,
	    "outside /v1/: 404");
	ok(parse(RM_OPTIONS, "/v1/models", NULL) == -1 && e.status == 405,
	    "OPTIONS is 405");
	ok(parse(RM_GET, "/v1/embeddings/../chat/completions", NULL) == -1 &&
	    e.status == 400, "a '..' segment is refused");
	ok(parse(RM_GET, "/v1/embeddings/./x", NULL) == -1 && e.status == 400,
	    "a '.' segment is refused");
	ok(parse(RM_GET, "/v1/embeddings/%2e%2E/chat", NULL) == -1 &&
	    e.status == 400, "an encoded dot is refused");
	ok(parse(RM_GET, "/v1/embeddings%2Fx", NULL) == -1 && e.status == 400,
	    "an encoded slash is refused");
	ok(parse(RM_GET, "/v1//models", NULL) == -1 && e.status == 400,
	    "an empty segment is refused");
	ok(parse(RM_GET, "/v1/models%2", NULL) == -1 && e.status == 400,
	    "a cut percent-encoding is refused");
	ok(parse(RM_GET, "/v1/models/", NULL) == 0 && r.kind == ROUTE_FORWARD,
	    "a trailing slash is kept");
	ok(parse(RM_GET, "/", NULL) == -1 && e.status == 404, "/ is 404");
	ok(parse(RM_GET, "/v1/responses/resp%2Fx", NULL) == -1 &&
	    e.status == 400, "encoded slash is 400");
	ok(parse(RM_GET, "/v1/responses/..", NULL) == -1 && e.status == 400,
	    ".. is 400");
	ok(parse(RM_GET, "/v1/responses/", NULL) == -1 && e.status == 400,
	    "empty id is 400");
	ok(parse(RM_GET, "/v1/responses/a/../b", NULL) == -1 &&
	    e.status == 400, "dot segment deeper is 400");
	ok(parse(RM_GET, "/v1/responses/resp%00x", NULL) == -1 &&
	    e.status == 400, "encoded NUL is 400");

	/* Normalization. */
	is_str(norm(RM_GET, "/v1/responses/r", NULL), "",
	    "no query: empty norm");
	is_str(norm(RM_GET, "/v1/responses/r", "include[]=b&include[]=a"),
	    "include%5B%5D=a&include%5B%5D=b", "include[] sorted");
	is_str(norm(RM_GET, "/v1/responses/r",
	    "include%5B%5D=b&include%5B%5D=a"),
	    "include%5B%5D=a&include%5B%5D=b", "encoded brackets alike");
	is_str(norm(RM_GET, "/v1/responses/r", "include=b&include=a&include=b"),
	    "include%5B%5D=a&include%5B%5D=b", "repeated include= alike, dedup");
	is_str(norm(RM_GET, "/v1/responses/r", "include_obfuscation=false"),
	    "", "include_obfuscation is not in the key");
	is_str(norm(RM_GET, "/v1/responses/r", "starting_after=3&include[]=a"),
	    "include%5B%5D=a&starting_after=3", "starting_after is in the key");
	is_str(norm(RM_GET, "/v1/responses/r",
	    "include=a&include_obfuscation=true&stream=false&starting_after=1"),
	    "include%5B%5D=a&starting_after=1",
	    "every known parameter at once is cacheable");

	/* Unknown parameters: valid, forwarded, never cached. */
	ok(parse(RM_GET, "/v1/responses/r", "zeta=1&alpha=2") == 0 &&
	    !r.cacheable && r.norm == NULL && !r.stream,
	    "unknown parameters: not cacheable, no key");
	ok(parse(RM_GET, "/v1/responses/r", "include[]=a&v=1") == 0 &&
	    !r.cacheable && r.norm == NULL,
	    "one unknown among known ones: not cacheable");
	ok(parse(RM_GET, "/v1/responses/r", "v") == 0 && !r.cacheable,
	    "an unknown parameter without a value: not cacheable");
	ok(parse(RM_GET, "/v1/responses/r", "Include[]=a") == 0 &&
	    !r.cacheable, "names are case-sensitive: Include[] is unknown");
	ok(parse(RM_GET, "/v1/responses/r", "limit=5") == 0 && !r.cacheable,
	    "limit is input_items', unknown on a response");
	ok(parse(RM_GET, "/v1/responses/r/input_items", "limit=5&x=1") == 0 &&
	    r.kind == ROUTE_INPUT_ITEMS && !r.cacheable && r.norm == NULL,
	    "input_items with an unknown parameter: not cacheable");
	ok(parse(RM_GET, "/v1/responses/r/input_items", "stream=false") ==
	    0 && !r.cacheable, "stream is unknown on input_items");
	ok(parse(RM_GET, "/v1/responses/r/input_items",
	    "starting_after=2") == 0 && !r.cacheable,
	    "starting_after is unknown on input_items");
	ok(parse(RM_GET, "/v1/responses/r/input_items", "limit=0&x=1") == -1 &&
	    e.status == 400, "a bad limit is 400 even with an unknown one");
	ok(parse(RM_GET, "/v1/responses/r", "stream=true&x=1") == 0 &&
	    r.stream && !r.cacheable, "a stream with an unknown parameter");
	ok(parse(RM_GET, "/v1/responses/r", "x=1&x=2") == 0 && !r.cacheable,
	    "an unknown parameter twice is forwarded, not refused");
	ok(parse(RM_GET, "/v1/responses/r", "include[]=a&&&") == 0 &&
	    r.cacheable, "empty pieces of a query are no parameters");
	ok(parse(RM_GET, "/v1/responses/r", "stream=true") == 0 && r.stream &&
	    !r.cacheable, "stream=true passes through");
	ok(parse(RM_GET, "/v1/responses/r", "stream=true&starting_after=3")
	    == 0 && r.stream && !r.cacheable, "resume passes through");
	ok(parse(RM_GET, "/v1/responses/r", "stream=false") == 0 &&
	    !r.stream && r.cacheable, "stream=false is cacheable");
	is_str(norm(RM_GET, "/v1/responses/r/input_items", NULL),
	    "limit=20&order=desc", "input_items defaults explicit");
	is_str(norm(RM_GET, "/v1/responses/r/input_items",
	    "order=asc&limit=2&after=msg_1&include[]=x"),
	    "after=msg_1&include%5B%5D=x&limit=2&order=asc",
	    "input_items parameters sorted");
	is_str(norm(RM_GET, "/v1/responses/r/input_items", "limit=20&order=desc"),
	    "limit=20&order=desc", "explicit defaults equal implicit");
	ok(parse(RM_GET, "/v1/responses/r/input_items", "limit=0") == -1 &&
	    e.status == 400, "limit=0 is 400");
	ok(parse(RM_GET, "/v1/responses/r/input_items", "limit=101") == -1 &&
	    e.status == 400, "limit=101 is 400");
	ok(parse(RM_GET, "/v1/responses/r/input_items", "limit=1x") == -1 &&
	    e.status == 400, "limit=1x is 400");
	ok(parse(RM_GET, "/v1/responses/r/input_items", "order=up") == -1 &&
	    e.status == 400, "order=up is 400");
	ok(parse(RM_GET, "/v1/responses/r/input_items", "limit=1&limit=2") ==
	    -1 && e.status == 400, "limit twice is 400");
	ok(parse(RM_GET, "/v1/responses/r", "include[]=a%0Db") == -1 &&
	    e.status == 400, "CR in a query value is 400");
	ok(parse(RM_GET, "/v1/responses/r", "x=a%00b") == -1 &&
	    e.status == 400, "NUL in a query value is 400");

	/* Raw bytes that are not visible ASCII, in the query or the path. */
	ok(parse(RM_GET, "/v1/responses/r", "a=b c") == -1 &&
	    e.status == 400 && strcmp(e.code, "invalid_query") == 0,
	    "a raw space in the query is 400");
	ok(parse(RM_GET, "/v1/responses/r", " ") == -1 && e.status == 400,
	    "a query of one space is 400");
	ok(parse(RM_GET, "/v1/responses/r", "a=\tb") == -1 && e.status == 400,
	    "a raw tab in the query is 400");
	ok(parse(RM_GET, "/v1/responses/r", "a=\x01") == -1 &&
	    e.status == 400, "a raw control byte in the query is 400");
	ok(parse(RM_GET, "/v1/responses/r", "a=\x7f") == -1 &&
	    e.status == 400, "a raw DEL in the query is 400");
	ok(parse(RM_GET, "/v1/responses/r", "a=caf\xc3\xa9") == -1 &&
	    e.status == 400, "raw UTF-8 in the query is 400");
	ok(parse(RM_POST, "/v1/responses", "a=b c") == -1 && e.status == 400,
	    "a raw space in a create's query is 400");
	ok(parse(RM_DELETE, "/v1/responses/r", "a=\x80") == -1 &&
	    e.status == 400, "a raw non-ASCII byte in a DELETE's query is 400");
	ok(parse(RM_GET, "/v1/responses/r", "a=caf%C3%A9%20x") == 0,
	    "the same bytes percent-encoded are fine");
	ok(parse(RM_GET, "/v1/responses/r b", NULL) == -1 && e.status == 400,
	    "a raw space in the path is 400");
	ok(parse(RM_GET, "/v1/responses/r\xc3\xa9", NULL) == -1 &&
	    e.status == 400, "raw UTF-8 in the path is 400");
	ok(parse(RM_GET, "/v1/models x", NULL) == -1 && e.status == 400,
	    "a raw space in any path is 400, not 404");
	is_str(norm(RM_GET, "/v1/responses/r", "include[]=x%26y"),
	    "include%5B%5D=x%26y", "an encoded & stays encoded");
	k = strdup(norm(RM_GET, "/v1/responses/r", "include[]=x%26y"));
	ok(strcmp(k, norm(RM_GET, "/v1/responses/r",
	    "include[]=x&include[]=y")) != 0,
	    "include[]=x%%26y and include[]=x&include[]=y differ");
	free(k);

	/* Keys. */
	parse(RM_GET, "/v1/responses/resp_1", "include[]=a");
	k = route_cache_key("tenant", &r, &klen);
	ok(klen == strlen("tenant") + 3 + strlen("resp_1") + 1 +
	    strlen(r.norm) && memcmp(k, "tenant\0r\0resp_1\0", 16) == 0,
	    "response key layout");
	free(k);
	parse(RM_GET, "/v1/responses/resp_1/input_items", NULL);
	k = route_cache_key("tenant", &r, &klen);
	ok(memcmp(k, "tenant\0i\0resp_1\0limit=20", 24) == 0,
	    "input_items key layout");
	free(k);
	k = route_id_prefix("t", 'r', "resp_1", &klen);
	ok(klen == 11 && memcmp(k, "t\0r\0resp_1\0", 11) == 0, "id prefix");
	free(k);
	route_clear(&r);
	/* Method names, by the enum; the request line's own for the log. */
	is_str(route_method_name(RM_DELETE), "DELETE", "method names by enum");
	is_str(route_method_name(RM_OPTIONS), "OPTIONS", "OPTIONS by enum");
	ok(route_method_of(EVHTTP_REQ_PATCH) == RM_PATCH, "evhttp's PATCH");
	ok(route_method_of(EVHTTP_REQ_TRACE) == RM_OTHER, "TRACE is no route");
	is_str(route_cmd_name(EVHTTP_REQ_TRACE), "TRACE", "TRACE logged as TRACE");
	is_str(route_cmd_name(EVHTTP_REQ_CONNECT), "CONNECT", "and CONNECT");
	is_str(route_cmd_name(EVHTTP_REQ_GET), "GET", "GET as GET");

	/* A conversation's paths name its id; POST /v1/conversations creates. */
	ok(parse(RM_GET, "/v1/conversations/conv_1/items", NULL) == 0 &&
	    r.kind == ROUTE_FORWARD && strcmp(r.id, "conv_1") == 0 &&
	    !r.creates, "a conversation's path names its id");
	ok(parse(RM_POST, "/v1/conversations", NULL) == 0 && r.creates &&
	    r.id[0] == '\0', "POST /v1/conversations creates one");
	ok(parse(RM_GET, "/v1/conversations", NULL) == 0 && !r.creates,
	    "GET /v1/conversations creates nothing");
	ok(parse(RM_GET, "/v1/conversationsX/c1", NULL) == 0 && r.id[0] == '\0',
	    "another path that starts alike names no conversation");
	ok(parse(RM_GET, "/v1/files/file_1", NULL) == 0 && r.id[0] == '\0' &&
	    !r.creates, "other forwarded paths name no id");
	k = route_id_prefix("t", RK_TOMBSTONE, "resp_1", &klen);
	ok(klen == 11 && memcmp(k, "t\0t\0resp_1\0", 12) == 0,
	    "a tombstone's prefix: tenant, kind 't', id");
	free(k);

	return (done_testing());
}
