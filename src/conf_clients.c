/*
 * conf_clients.c - the [credential NAME] and [client NAME] sections of the
 * configuration: setting their keys, and checking that credentials and
 * clients are complete and name each other correctly.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "conf_int.h"
#include "log.h"
#include "xmalloc.h"

/* A name of a [credential NAME] or [client NAME] section. */
static int
conf_valid_name(const char *s)
{
	size_t	n = strlen(s);

	return (n > 0 && n <= 64 && strspn(s, "abcdefghijklmnopqrstuvwxyz"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == n);
}

/* The value of a key of a named section, replacing any earlier one. */
static void
conf_set_named(char **field, const char *value)
{
	free(*field);
	*field = *value == '\0' ? NULL : conf_strdup(value);
}

/* The [credential NAME] section; with add, a new one if there is none. */
static struct conf_credential *
conf_find_credential(struct conf *c, const char *name, int add)
{
	struct conf_credential	*cr;
	size_t			 i;

	for (i = 0; i < c->ncreds; i++)
		if (strcmp(c->creds[i].name, name) == 0)
			return (&c->creds[i]);
	if (!add)
		return (NULL);
	c->creds = xreallocarray(c->creds, c->ncreds + 1, sizeof *c->creds);
	cr = &c->creds[c->ncreds++];
	memset(cr, 0, sizeof *cr);
	cr->name = conf_strdup(name);
	return (cr);
}

/* The [client NAME] section, a new one if there is none. */
static struct conf_client *
conf_find_client(struct conf *c, const char *name)
{
	struct conf_client	*cl;
	size_t			 i;

	for (i = 0; i < c->nclients; i++)
		if (strcmp(c->clients[i].name, name) == 0)
			return (&c->clients[i]);
	c->clients = xreallocarray(c->clients, c->nclients + 1,
	    sizeof *c->clients);
	cl = &c->clients[c->nclients++];
	memset(cl, 0, sizeof *cl);
	cl->name = conf_strdup(name);
	return (cl);
}

/*
 * [credential NAME] and [client NAME]: their sections may repeat (inih
 * calls us key by key), so each name is looked up, then created.
 */
int
conf_set_section(struct conf *c, const char *section, const char *key,
    const char *value, char **cause)
{
	const char		*name;
	struct conf_credential	*cr;
	struct conf_client	*cl;
	int			 is_client;

	is_client = strncmp(section, "client ", 7) == 0;
	name = section + (is_client ? 7 : 11);
	while (*name == ' ')
		name++;
	if (!conf_valid_name(name)) {
		*cause = conf_fmt("[%s]: a name is 1 to 64 letters, digits, "
		    "'_', '.' or '-'", section);
		return (-1);
	}
	/* A pass-through tenant is 64 hex digits: no credential looks so. */
	if (!is_client && strlen(name) == 64 &&
	    strspn(name, "0123456789abcdefABCDEF") == 64) {
		*cause = conf_fmt("[%s]: a credential's name must not be 64 "
		    "hex digits", section);
		return (-1);
	}
	if (is_client) {
		cl = conf_find_client(c, name);
		if (strcmp(key, "token_sha256") == 0)
			conf_set_named(&cl->token_sha256, value);
		else if (strcmp(key, "credential") == 0)
			conf_set_named(&cl->credential, value);
		else if (strcmp(key, "allow") == 0)
			conf_set_named(&cl->allow, value);
		else {
			*cause = conf_fmt("unknown key \"%s\" in [%s] (a client "
			    "has token_sha256, credential and allow)", key,
			    section);
			return (-1);
		}
		return (0);
	}
	cr = conf_find_credential(c, name, 1);
	if (strcmp(key, "key_file") == 0)
		conf_set_named(&cr->key_file, value);
	else if (strcmp(key, "organization") == 0)
		conf_set_named(&cr->organization, value);
	else if (strcmp(key, "project") == 0)
		conf_set_named(&cr->project, value);
	else if (strcmp(key, "key") == 0) {
		*cause = conf_fmt("[%s]: keys are never written in the "
		    "configuration; put it in a file named by key_file",
		    section);
		return (-1);
	} else {
		*cause = conf_fmt("unknown key \"%s\" in [%s] (a credential "
		    "has key_file, organization and project)", key, section);
		return (-1);
	}
	return (0);
}

/*
 * 0 if s is a list of path prefixes, each under /v1/ (no "." or ".."
 * segment, no '%'), separated by spaces or commas: at least one, at
 * most 32.
 */
static int
conf_check_allow(const char *s)
{
	const char	*p, *e;
	size_t		 n = 0, len;

	for (p = s; *p != '\0'; p = e) {
		p += strspn(p, " ,\t");
		if (*p == '\0')
			break;
		e = p + strcspn(p, " ,\t");
		len = (size_t)(e - p);
		if (len <= 4 || strncmp(p, "/v1/", 4) != 0 ||
		    memchr(p, '%', len) != NULL || memchr(p, '\\', len) != NULL)
			return (-1);
		if ((len >= 3 && memcmp(e - 3, "/..", 3) == 0) ||
		    (len >= 2 && memcmp(e - 2, "/.", 2) == 0))
			return (-1);
		{
			const char *d;

			for (d = p; d < e - 1; d++)
				if (d[0] == '/' && d[1] == '.' &&
				    (d + 2 == e || d[2] == '/' ||
				    (d[2] == '.' && (d + 3 == e || d[3] == '/'))))
					return (-1);
		}
		n++;
	}
	return (n >= 1 && n <= 32 ? 0 : -1);
}

/* Credentials and clients: complete, and naming each other correctly. */
int
conf_check_keys(struct conf *c, char **cause)
{
	struct conf_credential	*cr, *dflt;
	struct conf_client	*cl;
	size_t			 i, j;
	char			*p;

	if (c->upstream_key_file != NULL) {
		if ((cr = conf_find_credential(c, "default", 0)) == NULL) {
			cr = conf_find_credential(c, "default", 1);
			cr->key_file = conf_strdup(c->upstream_key_file);
		} else if (cr->key_file == NULL ||
		    strcmp(cr->key_file, c->upstream_key_file) != 0) {
			*cause = conf_fmt("[upstream] key_file and [credential "
			    "default] both name the default key: keep one");
			return (-1);
		}
	}
	for (i = 0; i < c->ncreds; i++)
		if (c->creds[i].key_file == NULL) {
			*cause = conf_fmt("[credential %s] has no key_file",
			    c->creds[i].name);
			return (-1);
		}
	/* The credential of requests (or clients) that name none. */
	dflt = conf_find_credential(c, "default", 0);
	if (dflt == NULL && c->ncreds == 1)
		dflt = &c->creds[0];
	if (c->nclients == 0 && c->ncreds > 1 && dflt == NULL) {
		*cause = conf_fmt("with several credentials and no [client] "
		    "sections, one credential must be named default");
		return (-1);
	}
	for (i = 0; i < c->nclients; i++) {
		cl = &c->clients[i];
		if (cl->token_sha256 == NULL || strlen(cl->token_sha256) != 64 ||
		    strspn(cl->token_sha256, "0123456789abcdefABCDEF") != 64) {
			*cause = conf_fmt("[client %s] token_sha256 must be 64 "
			    "hex digits (respcache hash-token prints them)",
			    cl->name);
			return (-1);
		}
		for (p = cl->token_sha256; *p != '\0'; p++)
			if (*p >= 'A' && *p <= 'F')
				*p = (char)(*p - 'A' + 'a');
		for (j = 0; j < i; j++)
			if (strcmp(c->clients[j].token_sha256,
			    cl->token_sha256) == 0) {
				*cause = conf_fmt("[client %s] and [client %s] "
				    "have the same token", c->clients[j].name,
				    cl->name);
				return (-1);
			}
		if (cl->allow != NULL && conf_check_allow(cl->allow) == -1) {
			*cause = conf_fmt("[client %s] allow: \"%s\" is not a "
			    "list of path prefixes under /v1/ (at most 32)",
			    cl->name, cl->allow);
			return (-1);
		}
		if (c->ncreds == 0) {
			*cause = conf_fmt("[client %s]: clients need a "
			    "[credential] (or [upstream] key_file) to use",
			    cl->name);
			return (-1);
		}
		if (cl->credential == NULL) {
			if (dflt == NULL) {
				*cause = conf_fmt("[client %s] names no "
				    "credential and none is named default",
				    cl->name);
				return (-1);
			}
			cl->credential = conf_strdup(dflt->name);
		} else if (conf_find_credential(c, cl->credential, 0) == NULL) {
			*cause = conf_fmt("[client %s]: no [credential %s]",
			    cl->name, cl->credential);
			return (-1);
		}
	}
	if (c->ownership == OWNERSHIP_DEFAULT)
		c->ownership = c->nclients > 0 ? OWNERSHIP_STRICT :
		    OWNERSHIP_OFF;
	return (0);
}
