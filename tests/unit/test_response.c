/* Unit tests: final-status detection and create bodies. */
#include "config.h"

#include "../../src/log.c"
#include "../../src/xmalloc.c"
#include "../../src/route.c"
#include "../../src/response.c"
#include "../../src/response_scan.c"
#include "tap.h"

#define S(lit)	(lit), strlen(lit)

static int
final_of(const char *json)
{
	struct response_info	i;

	if (response_inspect(json, strlen(json), &i) == -1)
		return (-1);
	return (i.final);
}

int
main(void)
{
	struct response_info	 i;
	struct response_request	 rq;
	char			 why[200];
	const char		*s;
	const char *const	 finals[] = { "completed", "failed", "cancelled",
	    "incomplete" };
	const char *const	 open[] = { "queued", "in_progress" };
	char			 buf[256];
	size_t			 n;

	for (n = 0; n < 4; n++) {
		snprintf(buf, sizeof buf, "{\"id\":\"resp_1\",\"object\":"
		    "\"response\",\"status\":\"%s\"}", finals[n]);
		ok(final_of(buf) == 1, "%s is final", finals[n]);
	}
	for (n = 0; n < 2; n++) {
		snprintf(buf, sizeof buf, "{\"id\":\"resp_1\",\"object\":"
		    "\"response\",\"status\":\"%s\"}", open[n]);
		ok(final_of(buf) == 0, "%s is not final", open[n]);
	}
	ok(final_of("{\"object\":\"response\"}") == 0, "no status: not final");
	ok(final_of("{\"object\":\"list\",\"status\":\"completed\"}") == 0,
	    "only a response object is final");
	ok(final_of("{\"object\":\"response\",\"status\":1}") == 0,
	    "non-string status: not final");
	ok(final_of("not json") == -1, "malformed JSON is rejected");
	ok(final_of("[1,2]") == -1, "an array is rejected");
	ok(final_of("{\"object\":\"response\",\"status\":\"completed\"") == -1,
	    "truncated JSON is rejected");

	s = "{\"id\":\"resp_9\",\"object\":\"response\",\"status\":"
	    "\"completed\",\"store\":false}";
	ok(response_inspect(s, strlen(s), &i) == 0 && i.store_false &&
	    strcmp(i.id, "resp_9") == 0, "store:false and id read");
	s = "{\"id\":\"bad/id\",\"object\":\"response\"}";
	ok(response_inspect(s, strlen(s), &i) == 0 && i.id[0] == '\0',
	    "an invalid id is not taken");

	/* The one-pass reader (response_scan.c) reads what jansson would. */
	ok(final_of("\"response\"") == -1 && final_of("42") == -1 &&
	    final_of("null") == -1 && final_of("true") == -1,
	    "a string, number, null or boolean body is rejected");
	ok(final_of("{\"object\":\"response\"} {}") == -1 &&
	    final_of("{\"object\":\"response\"}x") == -1,
	    "bytes after the object are rejected");
	ok(final_of("{\"object\":\"response\",/* c */\"status\":"
	    "\"completed\"}") == -1, "comments are rejected");
	ok(final_of("{\"object\":\"response\",\"note\":\"\xff\xfe\"}") ==
	    -1, "a string that is not UTF-8 is rejected");
	ok(final_of("{\"object\":\"response\",\"status\":\"completed\","
	    "\"status\":\"in_progress\"}") == -1,
	    "a status given twice is rejected: which one holds?");
	ok(final_of("{\"object\":\"response\",\"status\":\"completed\","
	    "\"metadata\":{\"a\":1},\"metadata\":{}}") == 1,
	    "another key given twice is read past");
	s = "{\"object\":\"response\",\"output\":[{\"id\":\"msg_1\","
	    "\"status\":\"in_progress\",\"store\":false,\"object\":\"x\"}],"
	    "\"id\":\"resp_7\",\"status\":\"completed\",\"store\":true}";
	ok(response_inspect(s, strlen(s), &i) == 0 && i.final &&
	    !i.store_false && strcmp(i.id, "resp_7") == 0,
	    "only top-level keys count, in any order, around nested ones");
	s = "{\"id\":{\"id\":\"resp_1\"},\"object\":\"response\","
	    "\"status\":\"completed\"}";
	ok(response_inspect(s, strlen(s), &i) == 0 && i.id[0] == '\0' &&
	    i.final, "an id that is not a string is no id");
	memset(buf, 'a', sizeof buf);
	memcpy(buf, "{\"id\":\"", 7);
	memcpy(buf + 7 + 200, "\"}", 3);
	ok(response_inspect(buf, strlen(buf), &i) == 0 && i.id[0] == '\0',
	    "an id longer than an id may be is not taken");

#define READ(lit)	response_request_read(S(lit), &rq, why, sizeof why)
	ok(READ("{\"model\":\"m\",\"stream\":true}") == 0 && rq.stream &&
	    !rq.include, "stream:true streams");
	ok(READ("{\"model\":\"m\",\"stream\":false}") == 0 && !rq.stream,
	    "stream:false does not");
	ok(READ("{\"model\":\"m\"}") == 0 && !rq.stream && !rq.include,
	    "no stream key: no");
	ok(READ("{\"include\":[\"reasoning.encrypted_content\"]}") == 0 &&
	    rq.include, "a non-empty include is seen");
	ok(READ("{\"include\":[]}") == 0 && !rq.include,
	    "an empty include is none");
	ok(READ("{\"include\":null}") == 0 && !rq.include,
	    "a null include is none");
	ok(READ("{\"include\":\"x\"}") == 0 && rq.include,
	    "an include that is not a list still counts");
	ok(READ("{\"previous_response_id\":\"resp_1\"}") == 0 &&
	    strcmp(rq.previous, "resp_1") == 0, "previous_response_id read");
	ok(READ("{\"previous_response_id\":null}") == 0 &&
	    rq.previous[0] == '\0', "a null previous_response_id is none");
	/* What jansson cannot hold exactly is refused, never guessed. */
	ok(READ("{oops") == -1 && why[0] != '\0', "bad JSON is refused (%s)",
	    why);
	ok(READ("") == -1, "an empty body is refused");
	ok(READ("[1]") == -1, "a body that is not an object is refused");
	ok(READ("{\"a\":1e400,\"previous_response_id\":\"resp_1\"}") == -1,
	    "a real that overflows is refused (%s)", why);
	ok(READ("{\"a\":123456789012345678901234567890,"
	    "\"previous_response_id\":\"resp_1\"}") == -1,
	    "an integer past 64 bits is refused");
	ok(READ("{\"previous_response_id\":\"resp_1\\u0000x\"}") == -1,
	    "a \\u0000 in a string is refused");
	ok(READ("{\"model\":\"m\",\"model\":\"n\"}") == -1,
	    "a repeated key is refused");
	ok(READ("{\"previous_response_id\":\"a\",\"previous_response_id\":"
	    "\"b\"}") == -1, "a repeated previous_response_id is refused");
	ok(READ("{\"previous_response_id\":7}") == -1,
	    "a previous_response_id that is not a string is refused");
	ok(response_request_read("{\"a\":\"\xff\"}", 9, &rq, why,
	    sizeof why) == -1, "invalid UTF-8 is refused");
	return (done_testing());
}
