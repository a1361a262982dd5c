/*
 * response.c - reading Response objects and create bodies with jansson
 * (an upstream's Response body: response_scan.c).
 *
 * Only the miss path comes here: a cache hit never parses JSON.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "response.h"

int
response_status_final(const char *status)
{
	return (status != NULL && (strcmp(status, "completed") == 0 ||
	    strcmp(status, "failed") == 0 || strcmp(status, "cancelled") == 0 ||
	    strcmp(status, "incomplete") == 0));
}

static void
response_fill(json_t *root, struct response_info *info)
{
	json_t		*v;
	const char	*id;

	id = json_string_value(json_object_get(root, "id"));
	if (id != NULL && route_valid_id(id, strlen(id)))
		strcpy(info->id, id);
	/* Only a Response is cached, never another object with a status. */
	v = json_object_get(root, "object");
	info->final = json_is_string(v) &&
	    strcmp(json_string_value(v), "response") == 0 &&
	    response_status_final(json_string_value(json_object_get(root,
	    "status")));
	info->store_false = json_is_false(json_object_get(root, "store"));
}

static int
response_final_event(const char *type)
{
	return (strcmp(type, "response.completed") == 0 ||
	    strcmp(type, "response.failed") == 0 ||
	    strcmp(type, "response.incomplete") == 0);
}

char *
response_from_event(const char *type, const char *data, size_t len,
    struct response_info *info, size_t *outlen)
{
	json_t		*root, *resp;
	const char	*jtype;
	char		*out = NULL;

	memset(info, 0, sizeof *info);
	/* Cheap test first: most events are deltas. */
	if (*type != '\0' && !response_final_event(type))
		return (NULL);
	if ((root = json_loadb(data, len, 0, NULL)) == NULL)
		return (NULL);
	jtype = json_string_value(json_object_get(root, "type"));
	resp = json_object_get(root, "response");
	if (jtype != NULL && response_final_event(jtype) &&
	    json_is_object(resp)) {
		response_fill(resp, info);
		if (info->final && !info->store_false && info->id[0] != '\0')
			out = json_dumps(resp, JSON_COMPACT);
	}
	json_decref(root);
	if (out != NULL)
		*outlen = strlen(out);
	return (out);
}

int
response_event_id(const char *data, size_t len, char id[ROUTE_ID_MAX + 1])
{
	struct response_info	 info;
	json_t			*root, *resp;

	memset(&info, 0, sizeof info);
	if ((root = json_loadb(data, len, 0, NULL)) == NULL)
		return (-1);
	if (json_is_object(resp = json_object_get(root, "response")))
		response_fill(resp, &info);
	json_decref(root);
	memcpy(id, info.id, sizeof info.id);
	return (info.id[0] != '\0' ? 0 : -1);
}

int
response_request_read(const char *body, size_t len,
    struct response_request *rq, char *why, size_t size)
{
	json_t		*root, *inc, *prev, *conv;
	json_error_t	 err;
	const char	*p;

	memset(rq, 0, sizeof *rq);
	if ((root = json_loadb(body, len, JSON_REJECT_DUPLICATES,
	    &err)) == NULL) {
		snprintf(why, size, "%s (line %d, column %d)", err.text,
		    err.line, err.column);
		return (-1);
	}
	if (!json_is_object(root)) {
		snprintf(why, size, "the body is not a JSON object");
		json_decref(root);
		return (-1);
	}
	rq->stream = json_is_true(json_object_get(root, "stream"));
	prev = json_object_get(root, "previous_response_id");
	if (prev != NULL && !json_is_null(prev) && !json_is_string(prev)) {
		snprintf(why, size, "'previous_response_id' must be a string");
		json_decref(root);
		return (-1);
	}
	if ((p = json_string_value(prev)) != NULL &&
	    strlen(p) <= ROUTE_ID_MAX)
		snprintf(rq->previous, sizeof rq->previous, "%s", p);
	else if (p != NULL)		/* too long to be an id: kept bad */
		snprintf(rq->previous, sizeof rq->previous, "-");
	/* A conversation is named by its id, or by an object holding it. */
	conv = json_object_get(root, "conversation");
	if (json_is_object(conv))
		conv = json_object_get(conv, "id");
	if (conv != NULL && !json_is_null(conv) && !json_is_string(conv)) {
		snprintf(why, size, "'conversation' must be an id or an "
		    "object with an id");
		json_decref(root);
		return (-1);
	}
	if ((p = json_string_value(conv)) != NULL &&
	    strlen(p) <= ROUTE_ID_MAX)
		snprintf(rq->conversation, sizeof rq->conversation, "%s", p);
	else if (p != NULL)
		snprintf(rq->conversation, sizeof rq->conversation, "-");
	inc = json_object_get(root, "include");
	rq->include = inc != NULL && !json_is_null(inc) &&
	    !(json_is_array(inc) && json_array_size(inc) == 0);
	json_decref(root);
	return (0);
}
