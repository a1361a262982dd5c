/* Unit tests: final-status detection and create bodies. */
#include "config.h"

#include "../../src/log.c"
#include "../../src/route.c"
#include "../../src/response.c"
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

	response_request_read(S("{\"model\":\"m\",\"stream\":true}"), &rq);
	ok(rq.stream && !rq.include, "stream:true streams");
	response_request_read(S("{\"model\":\"m\",\"stream\":false}"), &rq);
	ok(!rq.stream, "stream:false does not");
	response_request_read(S("{\"model\":\"m\"}"), &rq);
	ok(!rq.stream && !rq.include, "no stream key: no");
	response_request_read(S("{\"include\":[\"reasoning.encrypted_content\"]}"),
	    &rq);
	ok(rq.include, "a non-empty include is seen");
	response_request_read(S("{\"include\":[]}"), &rq);
	ok(!rq.include, "an empty include is none");
	response_request_read(S("{\"include\":null}"), &rq);
	ok(!rq.include, "a null include is none");
	response_request_read(S("{oops"), &rq);
	ok(!rq.stream && !rq.include, "bad JSON asks for nothing");
	response_request_read("", 0, &rq);
	ok(!rq.stream, "empty body: no stream");
	return (done_testing());
}
