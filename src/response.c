/*
 * response.c - reading Response objects and create bodies with jansson.
 *
 * Only the miss path comes here: a cache hit never parses JSON.
 */
#include "config.h"

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

int
response_inspect(const char *body, size_t len, struct response_info *info)
{
	json_t		*root, *v;
	const char	*id;

	memset(info, 0, sizeof *info);
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
	if (root == NULL)
		return (-1);
	if (!json_is_object(root)) {
		json_decref(root);
		return (-1);
	}
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
	json_decref(root);
	return (0);
}

int
response_request_streams(const char *body, size_t len)
{
	json_t	*root;
	int	 stream;

	if (len == 0 || (root = json_loadb(body, len, 0, NULL)) == NULL)
		return (0);
	stream = json_is_true(json_object_get(root, "stream"));
	json_decref(root);
	return (stream);
}
