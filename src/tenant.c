/*
 * tenant.c - who asks, and which ids are theirs: see tenant.h.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "cache.h"
#include "response.h"
#include "route.h"
#include "tenant.h"
#include "xmalloc.h"

const char *
tenant_client_key(const char *auth)
{
	if (auth == NULL)
		return (NULL);
	if (strncasecmp(auth, "Bearer ", 7) == 0)
		auth += 7;
	while (*auth == ' ')
		auth++;
	return (auth);
}

/*
 * A pass-through tenant: the SHA-256 of the client's key, remembered for
 * the next request, compared in constant time for keys of one length.
 */
static void
tenant_of_key(struct tenant_memo *m, const char *key,
    char tenant[SHA256_HEX_LEN + 1])
{
	size_t	len;

	if (key == NULL)
		key = "";
	len = strlen(key);
	if (m->key != NULL && len == m->len &&
	    CRYPTO_memcmp(key, m->key, len) == 0) {
		memcpy(tenant, m->tenant, SHA256_HEX_LEN + 1);
		return;
	}
	sha256_hex(key, len, tenant);
	tenant_memo_clear(m);
	m->key = xmalloc(len + 1);
	memcpy(m->key, key, len + 1);
	m->len = len;
	memcpy(m->tenant, tenant, SHA256_HEX_LEN + 1);
}

int
tenant_identify(struct tenant_memo *m, const struct keyring *keys,
    const char *key, struct tenant_who *who)
{
	who->keys = keys;
	who->client = NULL;
	if (keys->nclients > 0) {
		if ((who->client = keyring_client(keys, key)) == NULL)
			return (-1);
		who->cred = who->client->cred;
	} else
		who->cred = keys->dflt;
	if (who->cred != NULL)
		snprintf(who->tenant, sizeof who->tenant, "%s",
		    who->cred->name);
	else
		tenant_of_key(m, key, who->tenant);
	return (0);
}

void
tenant_memo_clear(struct tenant_memo *m)
{
	if (m->key == NULL)
		return;
	explicit_bzero(m->key, m->len);
	free(m->key);
	m->key = NULL;
	m->len = 0;
}

int
tenant_owned(const struct tenant_who *who)
{
	return (who->keys->ownership && who->client != NULL);
}

/* The record, "<tenant>\0o\0<id>\0" -> client name: see cache.h. */
void
tenant_own(struct cache *c, const struct tenant_who *who, const char *id)
{
	char	*key;
	size_t	 klen;

	if (!tenant_owned(who) || *id == '\0')
		return;
	key = route_id_prefix(who->tenant, RK_OWNER, id, &klen);
	cache_owner_put_later(c, key, klen, who->client->name);
	free(key);
}

int
tenant_owns(struct cache *c, const struct tenant_who *who, const char *id)
{
	char	 name[72], *key;
	size_t	 klen;
	int	 rc;

	key = route_id_prefix(who->tenant, RK_OWNER, id, &klen);
	rc = cache_owner_get(c, key, klen, name, sizeof name);
	free(key);
	/* Unsure, or created here with its record since evicted: refuse. */
	if (rc == -1 || rc == CACHE_OWNER_LOST)
		return (0);
	if (rc == 0)
		return (!who->keys->unknown_owner_deny);
	return (strcmp(name, who->client->name) == 0);
}

int
tenant_may_use(struct cache *c, const struct tenant_who *who,
    const struct route *r, const struct response_request *rq,
    const char **what, const char **label)
{
	if (!tenant_owned(who))
		return (1);
	*what = r->id;
	*label = r->kind == ROUTE_FORWARD ? "Conversation" : "Response";
	if (r->id[0] != '\0' && !tenant_owns(c, who, r->id))
		return (0);
	if (r->method != RM_POST || rq == NULL)
		return (1);
	*what = rq->previous;
	*label = "Previous response";
	if (rq->previous[0] != '\0' && !tenant_owns(c, who, rq->previous))
		return (0);
	*what = rq->conversation;
	*label = "Conversation";
	return (rq->conversation[0] == '\0' ||
	    tenant_owns(c, who, rq->conversation));
}
