/*
 * conf_int.h - private to conf.c and conf_clients.c: what one calls in
 * the other.  Nothing else includes it; conf.h is the module's contract.
 */
#ifndef RC_CONF_INT_H
#define RC_CONF_INT_H

struct conf;

/* conf.c */
/* strdup() and asprintf() that cannot fail; the caller frees. */
char	*conf_strdup(const char *);
char	*conf_fmt(const char *, ...)
	    __attribute__((__format__ (printf, 1, 2)));

/* conf_clients.c */
/*
 * Set key of a [credential NAME] or [client NAME] section (the section
 * string holds the name); -1 and *cause (caller frees) if invalid.
 */
int	conf_set_section(struct conf *, const char *section, const char *key,
	    const char *value, char **cause);
/*
 * Check credentials and clients once all is set, and fill in what they
 * imply (the "default" credential, clients' credentials, ownership);
 * -1 and *cause on error.
 */
int	conf_check_keys(struct conf *, char **cause);

#endif
