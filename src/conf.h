/*
 * conf.h - respcache's configuration: defaults, the INI file, flags.
 *
 * A struct conf is filled in three steps: conf_init() sets the defaults of
 * DESIGN.md, conf_load() reads an INI file over them, conf_set() applies a
 * command-line flag over both; conf_check() validates the result.
 * (The file is conf.c, not config.c: config.h is autoconf's.)
 */
#ifndef RC_CONF_H
#define RC_CONF_H

#include <stddef.h>

/* A [credential NAME] section: an upstream key and what goes with it. */
struct conf_credential {
	char	*name;
	char	*key_file;
	char	*organization;		/* NULL: none */
	char	*project;
};

/* A [client NAME] section: who may use the proxy, with which key. */
struct conf_client {
	char	*name;
	char	*token_sha256;		/* 64 hex digits, lower case */
	char	*credential;		/* NULL: the default credential */
	char	*allow;			/* path prefixes; NULL: any */
};

enum conf_ownership { OWNERSHIP_DEFAULT, OWNERSHIP_STRICT, OWNERSHIP_OFF };

struct conf {
	/* [server] */
	char	*listen;		/* "host:port" as written */
	char	*listen_host;		/* parsed by conf_check() */
	int	 listen_port;
	size_t	 max_body_size;
	size_t	 max_header_size;
	double	 client_timeout;	/* seconds */
	int	 ownership;		/* enum conf_ownership */
	int	 unknown_owner_deny;	/* ids created elsewhere: 404 */
	int	 forward_responses;	/* forward = responses: no other path */
	int	 workers;		/* event loops; 0: one per CPU */
	int	 websocket;		/* WebSocket mode on /v1/responses */
	double	 websocket_idle;	/* a socket silent both ways: closed */
	double	 shutdown_timeout;	/* for what is in flight at SIGTERM */
	char	*admin_listen;		/* NULL: no admin listener */
	char	*admin_host;		/* parsed by conf_check() */
	int	 admin_port;

	/* [upstream] */
	char	*upstream_url;		/* no trailing slash */
	char	*upstream_key_file;	/* NULL: pass the client's key through */
	double	 connect_timeout;
	double	 timeout;		/* whole non-stream exchange */
	double	 stream_idle_timeout;	/* silence allowed inside a stream */

	/* [cache] */
	char	*cache_dir;
	size_t	 cache_max_size;
	double	 cache_ttl;		/* 0: entries never expire */
	double	 tombstone_ttl;		/* 0: no tombstones */

	/* [shared] */
	char	*shared_redis;		/* NULL: no shared tier */
	char	*shared_password_file;	/* NULL: no AUTH */
	double	 shared_timeout;	/* the longest a lookup waits */
	char	*shared_prefix;		/* of every key it writes */
	double	 shared_max_stale;	/* local entries without the stream */
	/* Parsed by conf_check() from shared_redis: */
	char	*shared_host;		/* a numeric address, or NULL */
	int	 shared_port;
	char	*shared_unix;		/* a socket's path, or NULL */
	int	 shared_db;

	/* [log] */
	int	 log_level;
	int	 log_json;		/* access log lines as JSON */
	char	*access_log;		/* "stderr", "off" or a path */
	char	*error_log;		/* "stderr" or a path */

	/* [credential NAME] and [client NAME] sections, in file order */
	struct conf_credential	*creds;
	size_t			 ncreds;
	struct conf_client	*clients;
	size_t			 nclients;
};

void	conf_init(struct conf *);
void	conf_free(struct conf *);
/*
 * Read an INI file over what is set.  On error returns -1 and points
 * *cause at a message (owned by the caller, free() it) naming the line.
 */
int	conf_load(struct conf *, const char *path, char **cause);
/* The RESPCACHE_* environment variables (conf.c), before a file. */
int	conf_env(struct conf *, char **cause);
/* Set one key of one section; -1 and *cause (caller frees) if invalid. */
int	conf_set(struct conf *, const char *section, const char *key,
	    const char *value, char **cause);
/*
 * Check the whole and derive parsed fields; -1 and *cause on error.
 * [upstream] key_file becomes a credential named "default".
 */
int	conf_check(struct conf *, char **cause);

/*
 * 1 if next differs from running (both checked) in a setting that only
 * takes effect on restart; 0 if a reload (SIGHUP) applies all it changes:
 * keys, clients, ownership, unknown_owner, forward and the log level.
 */
int	conf_needs_restart(const struct conf *running,
	    const struct conf *next);

/* Parsers, exposed for the unit tests. 0 on success, -1 if malformed. */
int	conf_parse_size(const char *, size_t *);
int	conf_parse_seconds(const char *, double *);
int	conf_parse_listen(const char *, char **host, int *port);

#endif
