/*
 * tenant.h - who asks, and which ids are theirs.
 *
 * A request's tenant is its namespace in the cache: its credential's name
 * when the proxy holds the key, else (pass-through) the hex SHA-256 of the
 * key the client sent, so one key's entries never reach another.  With
 * client sections and ownership on, an id is its creator's: the other
 * clients of its credential get the upstream's own 404 for it.  Owner
 * records live in the cache (cache_owner_put(), cache_owner_get()).
 */
#ifndef RC_TENANT_H
#define RC_TENANT_H

#include <stddef.h>

#include "credential.h"

struct cache;
struct response_request;
struct route;

/* Who a request is. */
struct tenant_who {
	const struct keyring	*keys;		/* borrowed: as it began */
	const struct client	*client;	/* NULL: no client auth */
	const struct credential	*cred;		/* NULL: pass-through */
	char			 tenant[SHA256_HEX_LEN + 1];
};

/*
 * The last pass-through key and its tenant, one per event loop (a sidecar
 * sees one key): a hit does not hash the key again.  Wiped on change.
 */
struct tenant_memo {
	char	*key;
	size_t	 len;
	char	 tenant[SHA256_HEX_LEN + 1];
};

/* The key a client authenticates with: its bearer token, or NULL. */
const char	*tenant_client_key(const char *authorization);
/*
 * Who sends key (NULL: none) under keys: 0 and *who filled, or -1 when
 * clients are configured and none has this key.
 */
int		 tenant_identify(struct tenant_memo *, const struct keyring *,
		    const char *key, struct tenant_who *);
/* Wipe and free the memo's key. */
void		 tenant_memo_clear(struct tenant_memo *);

/* 1 if ownership applies to who: ownership on and a client known. */
int		 tenant_owned(const struct tenant_who *);
/* Record who's client as the creator of id (when ownership applies). */
void		 tenant_own(struct cache *, const struct tenant_who *,
		    const char *id);
/*
 * 1 if who's client may use id: it created it, or no record says who
 * did and unknown owners are allowed.  A record the cache lost, or an
 * unreadable one, refuses.
 */
int		 tenant_owns(struct cache *, const struct tenant_who *,
		    const char *id);
/*
 * 1 if who may use every id a request names: the one in its path (rq may
 * be NULL), and a POST's previous_response_id and conversation (which
 * would hand it that conversation).  With a refusal, *what says which id
 * and *label what it is, for the upstream's own 404.
 */
int		 tenant_may_use(struct cache *, const struct tenant_who *,
		    const struct route *, const struct response_request *,
		    const char **what, const char **label);

#endif
