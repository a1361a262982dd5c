/*
 * credential.c - loading upstream keys, and the SHA-256 that names a
 * pass-through tenant.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "credential.h"
#include "log.h"

void
sha256_hex(const void *p, size_t len, char out[SHA256_HEX_LEN + 1])
{
	static const char	 hex[] = "0123456789abcdef";
	unsigned char		 md[EVP_MAX_MD_SIZE];
	unsigned int		 mdlen = 0, i;
	static EVP_MD		*sha256;

	/* Fetched once: EVP_sha256() makes EVP_Digest fetch on every call. */
	if (sha256 == NULL && (sha256 = EVP_MD_fetch(NULL, "SHA256",
	    NULL)) == NULL)
		fatalx("SHA-256 unavailable");
	if (EVP_Digest(p, len, md, &mdlen, sha256, NULL) != 1 ||
	    mdlen != 32)
		fatalx("SHA-256 failed");
	for (i = 0; i < mdlen; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 0xf];
	}
	out[SHA256_HEX_LEN] = '\0';
}

struct credential *
credential_load(const char *name, const char *path, char **cause)
{
	struct credential	*cr;
	struct stat		 st;
	FILE			*f;
	char			 buf[1024], *s, *e;
	size_t			 n;

	if ((f = fopen(path, "r")) == NULL) {
		if (asprintf(cause, "%s: %s", path, strerror(errno)) == -1)
			fatalx("out of memory");
		return (NULL);
	}
	if (fstat(fileno(f), &st) == 0 && (st.st_mode & 0044) != 0)
		log_warnx("key file %s is readable by other users; "
		    "chmod 600 it", path);
	n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	s = buf;
	while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
		s++;
	e = s + strcspn(s, "\r\n");
	while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	*e = '\0';
	if (*s == '\0' || strpbrk(s, " \t") != NULL) {
		OPENSSL_cleanse(buf, sizeof buf);
		if (asprintf(cause, "%s: no key on its first line", path) == -1)
			fatalx("out of memory");
		return (NULL);
	}
	if ((cr = calloc(1, sizeof *cr)) == NULL ||
	    (cr->name = strdup(name)) == NULL ||
	    asprintf(&cr->auth, "Bearer %s", s) == -1)
		fatalx("out of memory");
	OPENSSL_cleanse(buf, sizeof buf);
	return (cr);
}

void
credential_free(struct credential *cr)
{
	if (cr == NULL)
		return;
	OPENSSL_cleanse(cr->auth, strlen(cr->auth));
	free(cr->auth);
	free(cr->name);
	free(cr);
}
