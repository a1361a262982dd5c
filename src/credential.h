/*
 * credential.h - upstream keys and tenants.
 *
 * For now one credential at most: [upstream] key_file, named "default".
 * The tenant of a request is the credential's name, or in pass-through
 * mode the hex SHA-256 of the client's own key, so entries of one key are
 * never served to another.
 */
#ifndef RC_CREDENTIAL_H
#define RC_CREDENTIAL_H

#include <stddef.h>

#define SHA256_HEX_LEN	64

struct credential {
	char	*name;
	char	*auth;		/* "Bearer <key>" */
};

/*
 * Read a key file: the first line, surrounding blanks trimmed.  Returns a
 * new credential named name, or NULL with *cause (caller frees) if the
 * file cannot be read or holds no usable key.  The key never appears in
 * *cause.
 */
struct credential *credential_load(const char *name, const char *path,
	    char **cause);
/* Wipe the key from memory and free. */
void	credential_free(struct credential *);

/* out gets the lower-case hex SHA-256 of p[0..len) and a NUL. */
void	sha256_hex(const void *p, size_t len, char out[SHA256_HEX_LEN + 1]);

#endif
