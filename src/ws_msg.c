/*
 * ws_msg.c - what WebSocket mode reads of a message (ws_msg.h).
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "ws_msg.h"

int
ws_msg_type(const void *msg, size_t len, const char *const *wanted,
    char *type, size_t size)
{
	json_t		*o;
	const char	*t;
	size_t		 i;
	int		 found = 0;

	/* An empty message: wslay hands it over as NULL. */
	if (msg == NULL || len == 0)
		return (0);
	for (i = 0; wanted[i] != NULL; i++)
		if (memmem(msg, len, wanted[i], strlen(wanted[i])) != NULL)
			found = 1;
	if (!found || (o = json_loadb(msg, len, 0, NULL)) == NULL)
		return (0);
	found = (t = json_string_value(json_object_get(o, "type"))) != NULL &&
	    strlen(t) < size;
	if (found)
		snprintf(type, size, "%s", t);
	json_decref(o);
	return (found);
}
