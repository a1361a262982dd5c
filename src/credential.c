/*
 * credential.c - loading upstream keys and clients into a keyring,
 * finding a request's client, and the SHA-256 that names a pass-through
 * tenant.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include <pthread.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "conf.h"
#include "credential.h"
#include "log.h"
#include "xmalloc.h"

/* Fetched once: EVP_sha256() makes EVP_Digest fetch on every call. */
static EVP_MD		*sha256;
static pthread_once_t	 sha256_once = PTHREAD_ONCE_INIT;

static void
sha256_fetch(void)
{
	if ((sha256 = EVP_MD_fetch(NULL, "SHA256", NULL)) == NULL)
		fatalx("SHA-256 unavailable");
}

void
sha256_raw(const void *p, size_t len, unsigned char out[32])
{
	unsigned int	 mdlen = 0;

	/* Workers hash on their own threads: the first ones race here. */
	pthread_once(&sha256_once, sha256_fetch);
	if (EVP_Digest(p, len, out, &mdlen, sha256, NULL) != 1 || mdlen != 32)
		fatalx("SHA-256 failed");
}

void
sha256_hex(const void *p, size_t len, char out[SHA256_HEX_LEN + 1])
{
	static const char	 hex[] = "0123456789abcdef";
	unsigned char		 md[32];
	size_t			 i;

	sha256_raw(p, len, md);
	for (i = 0; i < sizeof md; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 0xf];
	}
	out[SHA256_HEX_LEN] = '\0';
}

static char *
keyring_strdup(const char *s)
{
	if (s == NULL)
		return (NULL);
	return (xstrdup(s));
}

int
secret_read(const char *what, const char *file, char **out, char **cause)
{
	struct stat	 st;
	const char	*dir;
	char		 buf[1024], *path, *s, *e;
	ssize_t		 n;
	int		 fd;

	*out = NULL;
	dir = getenv("CREDENTIALS_DIRECTORY");
	if (file[0] != '/' && dir != NULL && *dir != '\0')
		xasprintf(&path, "%s/%s", dir, file);
	else
		path = keyring_strdup(file);
	/* read(2) into our buffer: no stdio copy of the secret is left. */
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		/* A key written where its file's name belongs is not shown. */
		xasprintf(cause, "%s %s: %s", what, strncmp(file, "sk-", 3) ==
		    0 ? "(it looks like a key, not the name of a file holding "
		    "one)" : path, strerror(errno));
		free(path);
		return (-1);
	}
	if (fstat(fd, &st) == 0 && (st.st_mode & 0044) != 0)
		log_warnx("%s %s is readable by other users; chmod 600 it",
		    what, path);
	n = read(fd, buf, sizeof buf - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	s = buf;
	while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
		s++;
	e = s + strcspn(s, "\r\n");
	while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	*e = '\0';
	for (e = s; *e > ' ' && *e < 0x7f; e++)
		;
	if (*s == '\0' || *e != '\0') {
		OPENSSL_cleanse(buf, sizeof buf);
		xasprintf(cause, "%s %s: no secret on its first line (one "
		    "word of printable ASCII)", what, path);
		free(path);
		return (-1);
	}
	*out = xstrdup(s);
	OPENSSL_cleanse(buf, sizeof buf);
	free(path);
	return (0);
}

/*
 * Read a key file into cr->auth: the first line, surrounding blanks
 * trimmed.  Returns -1 and *cause if it cannot be read or holds no key.
 */
static int
keyring_read_key(struct credential *cr, const char *file, char **cause)
{
	char	*what, *key;
	int	 ok;

	xasprintf(&what, "[credential %s] key_file", cr->name);
	if (secret_read(what, file, &key, cause) == -1) {
		free(what);
		return (-1);
	}
	ok = strspn(key, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "0123456789-_.:+/=") == strlen(key);
	if (ok)
		xasprintf(&cr->auth, "Bearer %s", key);
	else
		xasprintf(cause, "%s %s: no key on its first line", what,
		    file);
	OPENSSL_cleanse(key, strlen(key));
	free(key);
	free(what);
	return (ok ? 0 : -1);
}

int
credential_sets(const struct credential *cr, const char *name)
{
	return (cr != NULL && ((cr->organization != NULL &&
	    strcasecmp(name, "openai-organization") == 0) ||
	    (cr->project != NULL && strcasecmp(name, "openai-project") == 0)));
}

static int
keyring_hex(const char *hex, unsigned char out[32])
{
	size_t	i;
	int	hi, lo;

	for (i = 0; i < 32; i++) {
		hi = hex[2 * i] <= '9' ? hex[2 * i] - '0' : hex[2 * i] - 'a' + 10;
		lo = hex[2 * i + 1] <= '9' ? hex[2 * i + 1] - '0' :
		    hex[2 * i + 1] - 'a' + 10;
		if (hi < 0 || hi > 15 || lo < 0 || lo > 15)
			return (-1);
		out[i] = (unsigned char)(hi << 4 | lo);
	}
	return (0);
}

/* A client's allow list, from "/v1/a /v1/b,/v1/c" (checked by conf.c). */
static void
keyring_allow(struct client *cl, const char *s)
{
	const char	*p, *e;

	for (p = s; p != NULL && *p != '\0'; p = e) {
		p += strspn(p, " ,\t");
		if (*p == '\0')
			break;
		e = p + strcspn(p, " ,\t");
		cl->allow = xreallocarray(cl->allow, cl->nallow + 1,
		    sizeof *cl->allow);
		cl->allow[cl->nallow] = xstrndup(p, (size_t)(e - p));
		/* "/v1/files/" and "/v1/files" are one prefix. */
		while (strlen(cl->allow[cl->nallow]) > 4 &&
		    cl->allow[cl->nallow][strlen(cl->allow[cl->nallow]) - 1] ==
		    '/')
			cl->allow[cl->nallow][strlen(cl->allow[cl->nallow]) -
			    1] = '\0';
		cl->nallow++;
	}
}

/*
 * 1 if cl may use path: no list, or one of its prefixes ends at a
 * segment boundary of path ("/v1/files" allows /v1/files and
 * /v1/files/x, not /v1/filesx).
 */
int
keyring_allows(const struct client *cl, const char *path)
{
	size_t	i, n;

	if (cl == NULL || cl->nallow == 0)
		return (1);
	for (i = 0; i < cl->nallow; i++) {
		n = strlen(cl->allow[i]);
		if (strncmp(path, cl->allow[i], n) == 0 &&
		    (path[n] == '\0' || path[n] == '/'))
			return (1);
	}
	return (0);
}

struct keyring *
keyring_load(const struct conf *c, char **cause)
{
	struct keyring	*kr;
	size_t		 i, j;

	kr = xcalloc(1, sizeof *kr);
	/* An empty list stays NULL; xcalloc(0, ...) would return a byte. */
	if (c->ncreds > 0)
		kr->creds = xcalloc(c->ncreds, sizeof *kr->creds);
	if (c->nclients > 0)
		kr->clients = xcalloc(c->nclients, sizeof *kr->clients);
	kr->refs = 1;
	for (i = 0; i < c->ncreds; i++) {
		kr->creds[i].name = keyring_strdup(c->creds[i].name);
		kr->creds[i].organization =
		    keyring_strdup(c->creds[i].organization);
		kr->creds[i].project = keyring_strdup(c->creds[i].project);
		kr->ncreds++;
		if (keyring_read_key(&kr->creds[i], c->creds[i].key_file,
		    cause) == -1) {
			keyring_unref(kr);
			return (NULL);
		}
		if (strcmp(c->creds[i].name, "default") == 0 ||
		    c->ncreds == 1)
			kr->dflt = &kr->creds[i];
	}
	for (i = 0; i < c->nclients; i++) {
		kr->clients[i].name = keyring_strdup(c->clients[i].name);
		kr->nclients++;
		if (keyring_hex(c->clients[i].token_sha256,
		    kr->clients[i].token_sha256) == -1)
			fatalx("keyring_load: unchecked token_sha256");
		for (j = 0; j < kr->ncreds; j++)
			if (strcmp(kr->creds[j].name,
			    c->clients[i].credential) == 0)
				kr->clients[i].cred = &kr->creds[j];
		if (kr->clients[i].cred == NULL)
			fatalx("keyring_load: unchecked credential");
		keyring_allow(&kr->clients[i], c->clients[i].allow);
	}
	kr->forward_all = !c->forward_responses;
	kr->ownership = c->nclients > 0 && c->ownership == OWNERSHIP_STRICT;
	kr->unknown_owner_deny = c->unknown_owner_deny;
	return (kr);
}

struct keyring *
keyring_ref(struct keyring *kr)
{
	__atomic_add_fetch(&kr->refs, 1, __ATOMIC_RELAXED);
	return (kr);
}

void
keyring_unref(struct keyring *kr)
{
	size_t	i, j;

	/* Workers let go of a keyring on their own threads. */
	if (kr == NULL || __atomic_sub_fetch(&kr->refs, 1, __ATOMIC_ACQ_REL) > 0)
		return;
	for (i = 0; i < kr->ncreds; i++) {
		if (kr->creds[i].auth != NULL) {
			OPENSSL_cleanse(kr->creds[i].auth,
			    strlen(kr->creds[i].auth));
			free(kr->creds[i].auth);
		}
		free(kr->creds[i].name);
		free(kr->creds[i].organization);
		free(kr->creds[i].project);
	}
	for (i = 0; i < kr->nclients; i++) {
		OPENSSL_cleanse(kr->clients[i].token_sha256, 32);
		free(kr->clients[i].name);
		for (j = 0; j < kr->clients[i].nallow; j++)
			free(kr->clients[i].allow[j]);
		free(kr->clients[i].allow);
	}
	free(kr->creds);
	free(kr->clients);
	free(kr);
}

const struct client *
keyring_client(const struct keyring *kr, const char *token)
{
	const struct client	*found = NULL;
	unsigned char		 md[32];
	size_t			 i;

	if (token == NULL)
		return (NULL);
	sha256_raw(token, strlen(token), md);
	/* Every client is compared, whichever matches. */
	for (i = 0; i < kr->nclients; i++)
		if (CRYPTO_memcmp(md, kr->clients[i].token_sha256, 32) == 0)
			found = &kr->clients[i];
	OPENSSL_cleanse(md, sizeof md);
	return (found);
}
