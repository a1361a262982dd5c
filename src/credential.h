/*
 * credential.h - upstream keys, the clients allowed to use them, tenants.
 *
 * A keyring holds what [credential NAME] and [client NAME] sections say,
 * with the keys read from their files.  Requests take a reference when
 * they start, so a reload (SIGHUP) swaps in a new keyring while those in
 * flight finish with the one they started with.
 *
 * The tenant of a request is its credential's name, or in pass-through
 * mode (no credential) the hex SHA-256 of the client's own key, so
 * entries of one key are never served to another.
 */
#ifndef RC_CREDENTIAL_H
#define RC_CREDENTIAL_H

#include <stddef.h>

#define SHA256_HEX_LEN	64

struct conf;

struct credential {
	char	*name;
	char	*auth;		/* "Bearer <key>" */
	char	*organization;	/* NULL: the client's own passes */
	char	*project;
};

struct client {
	char				*name;
	unsigned char			 token_sha256[32];
	const struct credential		*cred;
	char				**allow;	/* path prefixes */
	size_t				 nallow;	/* 0: any path */
};

struct keyring {
	int			 refs;
	struct credential	*creds;
	size_t			 ncreds;
	struct client		*clients;	/* none: no client auth */
	size_t			 nclients;
	const struct credential	*dflt;		/* without clients; or NULL */
	int			 ownership;	/* strict, with clients */
	int			 forward_all;	/* every /v1/ path, not only
						   /v1/responses */
	int			 unknown_owner_deny;
};

/*
 * Build a keyring from a checked configuration, reading every key file
 * (a relative path is looked up in $CREDENTIALS_DIRECTORY when that is
 * set, as systemd's LoadCredential= provides it).  Returns NULL and
 * *cause (caller frees; never holding a key) on failure.
 */
/*
 * A secret's file (a name without a slash is looked up in
 * $CREDENTIALS_DIRECTORY when set): its first line, blanks trimmed, one
 * word of printable ASCII, into *out (the caller wipes and frees it).
 * what names the setting in *cause and in the warning about a file
 * others may read; the secret itself is never in either.
 */
int		 secret_read(const char *what, const char *file, char **out,
		    char **cause);
struct keyring	*keyring_load(const struct conf *, char **cause);
/*
 * 1 if cr (NULL: pass-through) sends header name itself (its
 * OpenAI-Organization, OpenAI-Project): the client's is not forwarded.
 */
int		 credential_sets(const struct credential *cr, const char *name);
struct keyring	*keyring_ref(struct keyring *);
/* Drop a reference; the last one wipes the keys from memory and frees. */
void		 keyring_unref(struct keyring *);
/*
 * The client whose token this is, compared in constant time with every
 * client's; NULL if none.
 */
const struct client *keyring_client(const struct keyring *,
		    const char *token);

/* out gets the lower-case hex SHA-256 of p[0..len) and a NUL. */
void	sha256_hex(const void *p, size_t len, char out[SHA256_HEX_LEN + 1]);
/* out gets the raw SHA-256 of p[0..len). */
void	sha256_raw(const void *p, size_t len, unsigned char out[32]);

/* 1 if the client (NULL: no client auth) may use path; see allow. */
int	keyring_allows(const struct client *, const char *path);

#endif
