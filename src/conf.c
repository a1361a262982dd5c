/*
 * conf.c - defaults, INI parsing (inih) and validation of the configuration.
 *
 * Every key of conf/respcache.conf has one entry in the table below: its
 * section, its name, how it is parsed and where it lands.  An unknown
 * section or key is an error, so a typo never silently runs on a default.
 * The [credential NAME] and [client NAME] sections are conf_clients.c's.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <netdb.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "conf.h"
#include "conf_int.h"
#include "log.h"
#include "xmalloc.h"

enum conf_type { CT_STRING, CT_OPTSTRING, CT_SIZE, CT_SECONDS, CT_LEVEL,
	CT_OWNERSHIP, CT_UNKNOWN_OWNER, CT_COUNT, CT_FORMAT, CT_FORWARD,
	CT_ONOFF };

/*
 * What a reload (SIGHUP) does with a key whose value changed: applies it
 * (the keyring and the log level are rebuilt), or leaves it for a restart.
 */
enum conf_when { CW_RESTART, CW_RELOAD };

struct conf_key {
	const char	*section;
	const char	*name;
	enum conf_type	 type;
	size_t		 off;
	enum conf_when	 when;
};

#define K(s, n, t, f, w) { s, n, t, offsetof(struct conf, f), w }
static const struct conf_key conf_keys[] = {
	K("server", "listen", CT_STRING, listen, CW_RESTART),
	K("server", "max_body_size", CT_SIZE, max_body_size, CW_RESTART),
	K("server", "max_header_size", CT_SIZE, max_header_size, CW_RESTART),
	K("server", "client_timeout", CT_SECONDS, client_timeout, CW_RESTART),
	K("server", "ownership", CT_OWNERSHIP, ownership, CW_RELOAD),
	K("server", "unknown_owner", CT_UNKNOWN_OWNER, unknown_owner_deny,
	    CW_RELOAD),
	K("server", "forward", CT_FORWARD, forward_responses, CW_RELOAD),
	K("server", "workers", CT_COUNT, workers, CW_RESTART),
	K("server", "websocket", CT_ONOFF, websocket, CW_RESTART),
	K("server", "websocket_idle_timeout", CT_SECONDS, websocket_idle,
	    CW_RESTART),
	K("server", "shutdown_timeout", CT_SECONDS, shutdown_timeout,
	    CW_RESTART),
	K("server", "admin_listen", CT_OPTSTRING, admin_listen, CW_RESTART),
	K("upstream", "url", CT_STRING, upstream_url, CW_RESTART),
	K("upstream", "key_file", CT_OPTSTRING, upstream_key_file, CW_RELOAD),
	K("upstream", "connect_timeout", CT_SECONDS, connect_timeout,
	    CW_RESTART),
	K("upstream", "timeout", CT_SECONDS, timeout, CW_RESTART),
	K("upstream", "stream_idle_timeout", CT_SECONDS, stream_idle_timeout,
	    CW_RESTART),
	K("cache", "dir", CT_STRING, cache_dir, CW_RESTART),
	K("cache", "max_size", CT_SIZE, cache_max_size, CW_RESTART),
	K("cache", "ttl", CT_SECONDS, cache_ttl, CW_RESTART),
	K("cache", "tombstone_ttl", CT_SECONDS, tombstone_ttl, CW_RESTART),
	K("shared", "redis", CT_OPTSTRING, shared_redis, CW_RESTART),
	K("shared", "password_file", CT_OPTSTRING, shared_password_file,
	    CW_RESTART),
	K("shared", "timeout", CT_SECONDS, shared_timeout, CW_RESTART),
	K("shared", "prefix", CT_STRING, shared_prefix, CW_RESTART),
	K("shared", "max_stale", CT_SECONDS, shared_max_stale, CW_RESTART),
	K("log", "level", CT_LEVEL, log_level, CW_RELOAD),
	K("log", "log_format", CT_FORMAT, log_json, CW_RESTART),
	K("log", "access_log", CT_STRING, access_log, CW_RESTART),
	K("log", "error_log", CT_STRING, error_log, CW_RESTART),
};
#undef K

char *
conf_strdup(const char *s)
{
	char	*p;

	p = xstrdup(s);
	return (p);
}

char *
conf_fmt(const char *fmt, ...)
{
	va_list	 ap;
	char	*s;

	va_start(ap, fmt);
	xvasprintf(&s, fmt, ap);
	va_end(ap);
	return (s);
}

void
conf_init(struct conf *c)
{
	const char	*state;

	memset(c, 0, sizeof *c);
	c->listen = conf_strdup("127.0.0.1:8080");
	c->max_body_size = 32 * 1024 * 1024;
	c->max_header_size = 64 * 1024;
	c->client_timeout = 60;
	c->workers = 0;
	c->websocket = 1;
	c->websocket_idle = 3600;
	c->shutdown_timeout = 30;
	c->admin_listen = conf_strdup("127.0.0.1:9090");
	c->upstream_url = conf_strdup("https://api.openai.com");
	c->connect_timeout = 10;
	c->timeout = 600;
	c->stream_idle_timeout = 300;
	/* Under systemd, StateDirectory= says where state belongs. */
	state = getenv("STATE_DIRECTORY");
	if (state != NULL && *state != '\0' && strchr(state, ':') == NULL)
		c->cache_dir = conf_strdup(state);
	else
		c->cache_dir = conf_strdup("./respcache-cache");
	c->cache_max_size = (size_t)1024 * 1024 * 1024;
	c->cache_ttl = 0;
	c->tombstone_ttl = 60;
	c->shared_timeout = 0.005;
	c->shared_max_stale = 5;
	c->shared_prefix = conf_strdup("respcache:");
	c->log_level = LOG_INFO;
	c->access_log = conf_strdup("stderr");
	c->error_log = conf_strdup("stderr");
}

void
conf_free(struct conf *c)
{
	size_t	i;

	for (i = 0; i < c->ncreds; i++) {
		free(c->creds[i].name);
		free(c->creds[i].key_file);
		free(c->creds[i].organization);
		free(c->creds[i].project);
	}
	free(c->creds);
	for (i = 0; i < c->nclients; i++) {
		free(c->clients[i].name);
		free(c->clients[i].token_sha256);
		free(c->clients[i].credential);
		free(c->clients[i].allow);
	}
	free(c->clients);
	free(c->listen);
	free(c->listen_host);
	free(c->admin_listen);
	free(c->admin_host);
	free(c->access_log);
	free(c->error_log);
	free(c->upstream_url);
	free(c->upstream_key_file);
	free(c->cache_dir);
	free(c->shared_redis);
	free(c->shared_password_file);
	free(c->shared_prefix);
	free(c->shared_host);
	free(c->shared_unix);
	memset(c, 0, sizeof *c);
}

int
conf_parse_size(const char *s, size_t *out)
{
	char			*end;
	unsigned long long	 v, mul = 1;

	if (*s < '0' || *s > '9')
		return (-1);
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return (-1);
	switch (*end) {
	case '\0':
		break;
	case 'k': case 'K':
		mul = 1024ULL;
		end++;
		break;
	case 'm': case 'M':
		mul = 1024ULL * 1024;
		end++;
		break;
	case 'g': case 'G':
		mul = 1024ULL * 1024 * 1024;
		end++;
		break;
	default:
		return (-1);
	}
	if (*end == 'b' || *end == 'B')
		end++;
	if (*end != '\0' || v > SIZE_MAX / mul)
		return (-1);
	*out = (size_t)(v * mul);
	return (0);
}

int
conf_parse_seconds(const char *s, double *out)
{
	char	*end;
	double	 v;

	if ((*s < '0' || *s > '9') && *s != '.')
		return (-1);
	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || !isfinite(v) || v < 0)
		return (-1);
	if (strcmp(end, "ms") == 0)
		v /= 1000;
	else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
		v *= 60;
	else if (strcmp(end, "s") != 0 && *end != '\0')
		return (-1);
	if (v > 86400 * 365)
		return (-1);
	*out = v;
	return (0);
}

int
conf_parse_listen(const char *s, char **host, int *port)
{
	const char	*colon;
	char		*end;
	long		 p;
	size_t		 hlen;

	if (*s == '[') {
		const char *close = strchr(s, ']');

		if (close == NULL || close[1] != ':')
			return (-1);
		colon = close + 1;
		s++;
		hlen = (size_t)(close - s);
	} else {
		if ((colon = strrchr(s, ':')) == NULL)
			return (-1);
		hlen = (size_t)(colon - s);
		if (memchr(s, ':', hlen) != NULL)
			return (-1);	/* bare IPv6 needs brackets */
	}
	if (hlen == 0 || colon[1] == '\0')
		return (-1);
	errno = 0;
	p = strtol(colon + 1, &end, 10);
	if (errno != 0 || *end != '\0' || p < 0 || p > 65535)
		return (-1);
	*host = xstrndup(s, hlen);
	*port = (int)p;
	return (0);
}

int
conf_set(struct conf *c, const char *section, const char *key,
    const char *value, char **cause)
{
	const struct conf_key	*k = NULL;
	size_t			 i;
	void			*field;
	size_t			 n;
	int			 level;
	int			 section_known = 0;

	if (strncmp(section, "credential ", 11) == 0 ||
	    strncmp(section, "client ", 7) == 0)
		return (conf_set_section(c, section, key, value, cause));
	for (i = 0; i < sizeof conf_keys / sizeof conf_keys[0]; i++) {
		if (strcmp(conf_keys[i].section, section) != 0)
			continue;
		section_known = 1;
		if (strcmp(conf_keys[i].name, key) == 0) {
			k = &conf_keys[i];
			break;
		}
	}
	if (k == NULL) {
		*cause = section_known ?
		    conf_fmt("unknown key \"%s\" in [%s]", key, section) :
		    conf_fmt("unknown section [%s]", section);
		return (-1);
	}
	field = (char *)c + k->off;
	switch (k->type) {
	case CT_OPTSTRING:
		free(*(char **)field);
		*(char **)field = *value == '\0' ? NULL : conf_strdup(value);
		return (0);
	case CT_STRING:
		if (*value == '\0') {
			*cause = conf_fmt("[%s] %s must not be empty", section,
			    key);
			return (-1);
		}
		free(*(char **)field);
		*(char **)field = conf_strdup(value);
		return (0);
	case CT_SIZE:
		if (conf_parse_size(value, field) == -1) {
			*cause = conf_fmt("[%s] %s: \"%s\" is not a size "
			    "(bytes, or a number with k, m or g)", section, key,
			    value);
			return (-1);
		}
		return (0);
	case CT_SECONDS:
		if (conf_parse_seconds(value, field) == -1) {
			*cause = conf_fmt("[%s] %s: \"%s\" is not a duration "
			    "(seconds, or a number with ms, s or m)", section,
			    key, value);
			return (-1);
		}
		return (0);
	case CT_LEVEL:
		if ((level = log_level_parse(value)) == -1) {
			*cause = conf_fmt("[%s] %s: \"%s\" is not one of error, "
			    "warn, info, debug", section, key, value);
			return (-1);
		}
		*(int *)field = level;
		return (0);
	case CT_ONOFF:
		if (strcmp(value, "on") != 0 && strcmp(value, "off") != 0) {
			*cause = conf_fmt("[%s] %s: \"%s\" is not on or off",
			    section, key, value);
			return (-1);
		}
		*(int *)field = strcmp(value, "on") == 0;
		return (0);
	case CT_OWNERSHIP:
		if (strcmp(value, "strict") == 0)
			*(int *)field = OWNERSHIP_STRICT;
		else if (strcmp(value, "off") == 0)
			*(int *)field = OWNERSHIP_OFF;
		else {
			*cause = conf_fmt("[%s] %s: \"%s\" is not strict or off",
			    section, key, value);
			return (-1);
		}
		return (0);
	case CT_UNKNOWN_OWNER:
		if (strcmp(value, "allow") != 0 && strcmp(value, "deny") != 0) {
			*cause = conf_fmt("[%s] %s: \"%s\" is not allow or deny",
			    section, key, value);
			return (-1);
		}
		*(int *)field = strcmp(value, "deny") == 0;
		return (0);
	case CT_COUNT:
		if (conf_parse_size(value, &n) == -1 || n > 1024) {
			*cause = conf_fmt("[%s] %s: \"%s\" is not a number from "
			    "0 to 1024", section, key, value);
			return (-1);
		}
		*(int *)field = (int)n;
		return (0);
	case CT_FORWARD:
		if (strcmp(value, "all") != 0 &&
		    strcmp(value, "responses") != 0) {
			*cause = conf_fmt("[%s] %s: \"%s\" is not all or "
			    "responses", section, key, value);
			return (-1);
		}
		*(int *)field = strcmp(value, "responses") == 0;
		return (0);
	case CT_FORMAT:
		if (strcmp(value, "text") != 0 && strcmp(value, "json") != 0) {
			*cause = conf_fmt("[%s] %s: \"%s\" is not text or json",
			    section, key, value);
			return (-1);
		}
		*(int *)field = strcmp(value, "json") == 0;
		return (0);
	}
	return (-1);
}

int
conf_needs_restart(const struct conf *running, const struct conf *next)
{
	const struct conf_key	*k;
	const char		*a, *b, *sa, *sb;
	size_t			 i;

	for (i = 0; i < sizeof conf_keys / sizeof conf_keys[0]; i++) {
		k = &conf_keys[i];
		if (k->when == CW_RELOAD)
			continue;
		a = (const char *)running + k->off;
		b = (const char *)next + k->off;
		switch (k->type) {
		case CT_STRING:
		case CT_OPTSTRING:
			sa = *(char *const *)a;
			sb = *(char *const *)b;
			if ((sa == NULL) != (sb == NULL) ||
			    (sa != NULL && strcmp(sa, sb) != 0))
				return (1);
			break;
		case CT_SIZE:
			if (*(const size_t *)a != *(const size_t *)b)
				return (1);
			break;
		case CT_SECONDS:
			if (*(const double *)a != *(const double *)b)
				return (1);
			break;
		default:
			if (*(const int *)a != *(const int *)b)
				return (1);
			break;
		}
	}
	return (0);
}

struct conf_load_ctx {
	struct conf	*c;
	char		*cause;
};

static int
conf_load_cb(void *arg, const char *section, const char *key,
    const char *value)
{
	struct conf_load_ctx	*ctx = arg;

	if (ctx->cause != NULL)
		return (0);
	if (key == NULL)	/* a section header alone */
		return (1);
	return (conf_set(ctx->c, section, key, value, &ctx->cause) == 0);
}

/*
 * The common settings from the environment, for containers: applied over
 * the defaults, under a configuration file and the flags.  Never a key:
 * only a key file's name.
 */
static const struct {
	const char	*env, *section, *key;
} conf_envs[] = {
	{ "RESPCACHE_LISTEN", "server", "listen" },
	{ "RESPCACHE_ADMIN_LISTEN", "server", "admin_listen" },
	{ "RESPCACHE_WORKERS", "server", "workers" },
	{ "RESPCACHE_UPSTREAM", "upstream", "url" },
	{ "RESPCACHE_UPSTREAM_KEY_FILE", "upstream", "key_file" },
	{ "RESPCACHE_CACHE_DIR", "cache", "dir" },
	{ "RESPCACHE_CACHE_MAX_SIZE", "cache", "max_size" },
	{ "RESPCACHE_SHARED_REDIS", "shared", "redis" },
	{ "RESPCACHE_LOG_LEVEL", "log", "level" },
};

int
conf_env(struct conf *c, char **cause)
{
	const char	*v;
	char		*why = NULL;
	size_t		 i;

	for (i = 0; i < sizeof conf_envs / sizeof conf_envs[0]; i++) {
		if ((v = getenv(conf_envs[i].env)) == NULL)
			continue;
		if (conf_set(c, conf_envs[i].section, conf_envs[i].key, v,
		    &why) == -1) {
			*cause = conf_fmt("%s: %s", conf_envs[i].env, why);
			free(why);
			return (-1);
		}
	}
	return (0);
}

int
conf_load(struct conf *c, const char *path, char **cause)
{
	struct conf_load_ctx	 ctx = { c, NULL };
	int			 line;

	line = ini_parse(path, conf_load_cb, &ctx);
	if (line == 0)
		return (0);
	if (line == -1)
		*cause = conf_fmt("%s: %s", path, strerror(errno));
	else if (line == -2)
		*cause = conf_fmt("%s: out of memory", path);
	else if (ctx.cause != NULL)
		*cause = conf_fmt("%s:%d: %s", path, line, ctx.cause);
	else
		*cause = conf_fmt("%s:%d: syntax error", path, line);
	free(ctx.cause);
	return (-1);
}

/*
 * [shared] redis: "redis://HOST[:PORT][/DB]" or "unix:PATH".  HOST is
 * resolved here, once, so that no worker ever waits on a name lookup
 * (hiredis resolves with getaddrinfo(), which blocks).  A password in
 * the URL is refused: it belongs in password_file, kept out of logs.
 */
static int
conf_check_shared(struct conf *c, char **cause)
{
	struct addrinfo	 hints, *res = NULL;
	const char	*u = c->shared_redis, *h, *e, *slash;
	char		*host = NULL, addr[INET6_ADDRSTRLEN], *end;
	long		 n;
	int		 rc;

	free(c->shared_host);
	free(c->shared_unix);
	c->shared_host = c->shared_unix = NULL;
	c->shared_port = 6379;
	c->shared_db = 0;
	if (c->shared_timeout <= 0) {
		*cause = conf_fmt("[shared] timeout must be greater than 0");
		return (-1);
	}
	if (u == NULL)
		return (0);
	if (strlen(c->shared_prefix) > 64) {
		*cause = conf_fmt("[shared] prefix: at most 64 bytes");
		return (-1);
	}
	if (strncmp(u, "unix:", 5) == 0) {
		if (u[5] == '\0' || strlen(u + 5) > 100) {
			*cause = conf_fmt("[shared] redis: unix: names no "
			    "socket, or too long a path (unix:/path/to/"
			    "redis.sock)");
			return (-1);
		}
		c->shared_unix = conf_strdup(u + 5);
		return (0);
	}
	/* The URL is never echoed: it may hold a password. */
	if (strncmp(u, "redis://", 8) != 0) {
		*cause = conf_fmt("[shared] redis: not redis://HOST[:PORT][/DB] "
		    "nor unix:PATH (rediss://: no TLS; see README)");
		return (-1);
	}
	h = u + 8;
	slash = h + strcspn(h, "/");
	if (memchr(h, '@', (size_t)(slash - h)) != NULL) {
		*cause = conf_fmt("[shared] redis: the URL holds a user or "
		    "password; put the password in [shared] password_file");
		return (-1);
	}
	if (*h == '[') {
		if ((e = memchr(h, ']', (size_t)(slash - h))) == NULL)
			goto bad;
		host = conf_fmt("%.*s", (int)(e - h - 1), h + 1);
		e++;
	} else {
		e = h + strcspn(h, ":/");
		host = conf_fmt("%.*s", (int)(e - h), h);
	}
	if (*host == '\0')
		goto bad;
	if (*e == ':') {
		n = strtol(e + 1, &end, 10);
		if (end == e + 1 || end != slash || n < 1 || n > 65535)
			goto bad;
		c->shared_port = (int)n;
	} else if (e != slash)
		goto bad;
	if (*slash == '/' && slash[1] != '\0') {
		n = strtol(slash + 1, &end, 10);
		if (*end != '\0' || n < 0 || n > 100000)
			goto bad;
		c->shared_db = (int)n;
	}
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	if ((rc = getaddrinfo(host, NULL, &hints, &res)) != 0) {
		*cause = conf_fmt("[shared] redis: cannot resolve %s: %s",
		    host, gai_strerror(rc));
		free(host);
		return (-1);
	}
	rc = getnameinfo(res->ai_addr, res->ai_addrlen, addr, sizeof addr,
	    NULL, 0, NI_NUMERICHOST);
	freeaddrinfo(res);
	free(host);
	host = NULL;
	if (rc != 0)
		goto bad;
	c->shared_host = conf_strdup(addr);
	return (0);
bad:
	free(host);
	*cause = conf_fmt("[shared] redis: not redis://HOST[:PORT][/DB] nor "
	    "unix:PATH");
	return (-1);
}

int
conf_check(struct conf *c, char **cause)
{
	size_t	len;

	free(c->listen_host);
	c->listen_host = NULL;
	if (conf_parse_listen(c->listen, &c->listen_host,
	    &c->listen_port) == -1) {
		*cause = conf_fmt("[server] listen: \"%s\" is not HOST:PORT",
		    c->listen);
		return (-1);
	}
	free(c->admin_host);
	c->admin_host = NULL;
	if (c->admin_listen != NULL && conf_parse_listen(c->admin_listen,
	    &c->admin_host, &c->admin_port) == -1) {
		*cause = conf_fmt("[server] admin_listen: \"%s\" is not "
		    "HOST:PORT (or empty, for no admin listener)",
		    c->admin_listen);
		return (-1);
	}
	if (strncmp(c->upstream_url, "http://", 7) != 0 &&
	    strncmp(c->upstream_url, "https://", 8) != 0) {
		*cause = conf_fmt("[upstream] url: \"%s\" is not an http:// "
		    "or https:// URL", c->upstream_url);
		return (-1);
	}
	len = strlen(c->upstream_url);
	while (len > 0 && c->upstream_url[len - 1] == '/')
		c->upstream_url[--len] = '\0';
	if (strchr(c->upstream_url, '?') != NULL ||
	    strchr(c->upstream_url, '#') != NULL) {
		*cause = conf_fmt("[upstream] url must not have a query or "
		    "fragment");
		return (-1);
	}
	if (c->max_body_size == 0 || c->max_header_size < 1024) {
		*cause = conf_fmt("[server] max_body_size must be > 0 and "
		    "max_header_size at least 1k");
		return (-1);
	}
	if (c->connect_timeout <= 0 || c->timeout <= 0 ||
	    c->stream_idle_timeout <= 0 || c->client_timeout <= 0) {
		*cause = conf_fmt("timeouts must be greater than 0");
		return (-1);
	}
	if (c->cache_max_size < 16 * 1024) {
		*cause = conf_fmt("[cache] max_size must be at least 16k");
		return (-1);
	}
	if (conf_check_shared(c, cause) == -1)
		return (-1);
	return (conf_check_keys(c, cause));
}
