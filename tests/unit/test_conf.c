/*
 * Unit tests: configuration defaults, parsing and its errors, and which
 * changed settings a reload applies.
 */
#include "config.h"

#include <stdlib.h>
#include <unistd.h>

#include "../../src/log.c"
#include "../../src/xmalloc.c"
#include "../../src/conf.c"
#include "../../src/conf_clients.c"
#include "tap.h"

static char *
write_tmp(const char *text)
{
	static char	path[64];
	int		fd;

	strcpy(path, "/tmp/rc-conf-XXXXXX");
	if ((fd = mkstemp(path)) == -1 ||
	    write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		abort();
	close(fd);
	return (path);
}

/*
 * Every key of the table, with another valid value, and whether a reload
 * leaves its change for a restart.  A key missing here fails the test.
 */
static const struct {
	const char	*section, *key, *value;
	int		 restart;
} reload_cases[] = {
	{ "server", "listen", "127.0.0.1:8081", 1 },
	{ "server", "max_body_size", "1m", 1 },
	{ "server", "max_header_size", "32k", 1 },
	{ "server", "client_timeout", "61", 1 },
	{ "server", "ownership", "strict", 0 },
	{ "server", "unknown_owner", "deny", 0 },
	{ "server", "forward", "responses", 0 },
	{ "server", "workers", "3", 1 },
	{ "server", "websocket", "off", 1 },
	{ "server", "websocket_idle_timeout", "60", 1 },
	{ "server", "shutdown_timeout", "5", 1 },
	{ "server", "admin_listen", "127.0.0.1:9091", 1 },
	{ "upstream", "url", "http://127.0.0.1:1", 1 },
	{ "upstream", "key_file", "/etc/respcache/key", 0 },
	{ "upstream", "connect_timeout", "5", 1 },
	{ "upstream", "timeout", "60", 1 },
	{ "upstream", "stream_idle_timeout", "30", 1 },
	{ "cache", "dir", "/tmp/rc-conf-elsewhere", 1 },
	{ "cache", "max_size", "2g", 1 },
	{ "cache", "ttl", "60", 1 },
	{ "cache", "tombstone_ttl", "0", 1 },
	{ "shared", "redis", "redis://127.0.0.1:6380", 1 },
	{ "shared", "password_file", "/etc/respcache/redis-password", 1 },
	{ "shared", "timeout", "10ms", 1 },
	{ "shared", "prefix", "fleet-a:", 1 },
	{ "shared", "max_stale", "10", 1 },
	{ "log", "level", "debug", 0 },
	{ "log", "log_format", "json", 1 },
	{ "log", "access_log", "off", 1 },
	{ "log", "error_log", "/tmp/rc-conf-error.log", 1 },
};

/* A checked default configuration with one key set (or none). */
static void
reload_conf(struct conf *c, const char *section, const char *key,
    const char *value)
{
	char	*cause = NULL;

	conf_init(c);
	if ((section != NULL && conf_set(c, section, key, value,
	    &cause) == -1) || conf_check(c, &cause) == -1) {
		printf("# %s\n", cause);
		abort();
	}
}

/*
 * [shared] redis as conf_check() reads it: its address (host "*": any,
 * a name resolved), or a socket's path; both NULL: it refuses it.
 */
static void
shared_url(const char *url, const char *host, int port, const char *unix_path,
    int db)
{
	struct conf	 c;
	char		*cause = NULL;
	int		 rc;

	conf_init(&c);
	rc = conf_set(&c, "shared", "redis", url, &cause) == 0 ?
	    conf_check(&c, &cause) : -1;
	if (host == NULL && unix_path == NULL) {
		ok(rc == -1 && cause != NULL && strstr(cause, "[shared]") != NULL,
		    "shared: %s refused: %s", url, cause ? cause : "(none)");
	} else
		ok(rc == 0 && (host == NULL ? c.shared_host == NULL :
		    c.shared_host != NULL && (strcmp(host, "*") == 0 ||
		    strcmp(c.shared_host, host) == 0)) &&
		    (unix_path == NULL ? c.shared_unix == NULL :
		    c.shared_unix != NULL &&
		    strcmp(c.shared_unix, unix_path) == 0) &&
		    c.shared_port == port && c.shared_db == db,
		    "shared: %s", url);
	free(cause);
	conf_free(&c);
}

static void
test_shared(void)
{
	struct conf	 c;
	char		*cause = NULL;

	conf_init(&c);
	ok(conf_check(&c, &cause) == 0 && c.shared_redis == NULL &&
	    c.shared_host == NULL && c.shared_timeout == 0.005 &&
	    strcmp(c.shared_prefix, "respcache:") == 0,
	    "shared: off by default; timeout 5 ms, prefix respcache:");
	conf_free(&c);
	shared_url("redis://127.0.0.1", "127.0.0.1", 6379, NULL, 0);
	shared_url("redis://127.0.0.1:6380/2", "127.0.0.1", 6380, NULL, 2);
	shared_url("redis://[::1]:7000/", "::1", 7000, NULL, 0);
	shared_url("redis://localhost:6379/1", "*", 6379, NULL, 1);
	shared_url("unix:/run/redis/redis.sock", NULL, 6379,
	    "/run/redis/redis.sock", 0);
	shared_url("redis://:secret@127.0.0.1:6379", NULL, 0, NULL, 0);
	shared_url("rediss://127.0.0.1:6379", NULL, 0, NULL, 0);
	shared_url("redis://127.0.0.1:0", NULL, 0, NULL, 0);
	shared_url("redis://127.0.0.1:6379/x", NULL, 0, NULL, 0);
	shared_url("redis://", NULL, 0, NULL, 0);
	shared_url("unix:", NULL, 0, NULL, 0);
	shared_url("redis://no-such-host.invalid", NULL, 0, NULL, 0);
}

/* RESPCACHE_* variables: over the defaults, under a file. */
static void
test_env(void)
{
	struct conf	 c;
	char		*cause = NULL, *path;

	setenv("RESPCACHE_LISTEN", "0.0.0.0:8081", 1);
	setenv("RESPCACHE_ADMIN_LISTEN", "", 1);
	setenv("RESPCACHE_UPSTREAM", "http://127.0.0.1:7", 1);
	conf_init(&c);
	ok(conf_env(&c, &cause) == 0 && conf_check(&c, &cause) == 0 &&
	    c.listen_port == 8081 && strcmp(c.listen_host, "0.0.0.0") == 0 &&
	    c.admin_listen == NULL &&
	    strcmp(c.upstream_url, "http://127.0.0.1:7") == 0,
	    "env: RESPCACHE_LISTEN, _ADMIN_LISTEN (empty: off), _UPSTREAM");
	path = write_tmp("[server]\nlisten = 127.0.0.1:8082\n");
	ok(conf_load(&c, path, &cause) == 0 && conf_check(&c, &cause) == 0 &&
	    c.listen_port == 8082 &&
	    strcmp(c.upstream_url, "http://127.0.0.1:7") == 0,
	    "env: a file's key wins, the rest stays");
	unlink(path);
	conf_free(&c);
	setenv("RESPCACHE_WORKERS", "many", 1);
	conf_init(&c);
	ok(conf_env(&c, &cause) == -1 && cause != NULL &&
	    strstr(cause, "RESPCACHE_WORKERS") != NULL,
	    "env: a bad value names its variable: %s", cause);
	free(cause);
	conf_free(&c);
	unsetenv("RESPCACHE_LISTEN");
	unsetenv("RESPCACHE_ADMIN_LISTEN");
	unsetenv("RESPCACHE_UPSTREAM");
	unsetenv("RESPCACHE_WORKERS");
}

static void
test_reload(void)
{
	struct conf	 run, next;
	char		*cause = NULL;
	size_t		 i, j, ncases = sizeof reload_cases /
			    sizeof reload_cases[0];
	int		 listed;

	for (i = 0; i < sizeof conf_keys / sizeof conf_keys[0]; i++) {
		listed = 0;
		for (j = 0; j < ncases; j++)
			if (strcmp(reload_cases[j].section,
			    conf_keys[i].section) == 0 &&
			    strcmp(reload_cases[j].key, conf_keys[i].name) == 0)
				listed++;
		ok(listed == 1, "reload: [%s] %s has one case",
		    conf_keys[i].section, conf_keys[i].name);
	}
	reload_conf(&run, NULL, NULL, NULL);
	for (j = 0; j < ncases; j++) {
		reload_conf(&next, reload_cases[j].section, reload_cases[j].key,
		    reload_cases[j].value);
		ok(conf_needs_restart(&run, &next) == reload_cases[j].restart,
		    "reload: [%s] %s changed %s", reload_cases[j].section,
		    reload_cases[j].key, reload_cases[j].restart ?
		    "waits for a restart" : "is applied");
		ok(conf_needs_restart(&next, &run) == reload_cases[j].restart,
		    "reload: [%s] %s changed back, the same",
		    reload_cases[j].section, reload_cases[j].key);
		conf_free(&next);
	}

	reload_conf(&next, NULL, NULL, NULL);
	ok(conf_needs_restart(&run, &next) == 0, "reload: nothing changed");
	conf_free(&next);
	reload_conf(&next, "server", "admin_listen", "");
	ok(next.admin_listen == NULL && conf_needs_restart(&run, &next) == 1,
	    "reload: the admin listener turned off waits for a restart");
	conf_free(&next);
	reload_conf(&next, "server", "max_body_size", "32768k");
	ok(conf_needs_restart(&run, &next) == 0,
	    "reload: the same size written otherwise is no change");
	conf_free(&next);
	reload_conf(&next, "upstream", "url", "https://api.openai.com/");
	ok(conf_needs_restart(&run, &next) == 0,
	    "reload: the same url with a trailing / is no change");
	conf_free(&next);
	reload_conf(&next, "credential team-a", "key_file", "/etc/a.key");
	ok(conf_set(&next, "client alice", "token_sha256", "ab"
	    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd",
	    &cause) == 0, "reload: a client is set");
	ok(conf_check(&next, &cause) == 0 && next.nclients == 1 &&
	    conf_needs_restart(&run, &next) == 0,
	    "reload: new credentials and clients are applied");
	conf_free(&next);
	conf_free(&run);
}

int
main(void)
{
	struct conf	 c;
	char		*cause = NULL, *host = NULL, *path;
	size_t		 sz;
	double		 d;
	int		 port;

	unsetenv("STATE_DIRECTORY");
	conf_init(&c);
	ok(conf_check(&c, &cause) == 0, "defaults are valid");
	is_str(c.listen_host, "127.0.0.1", "default host");
	ok(c.listen_port == 8080, "default port 8080");
	is_str(c.upstream_url, "https://api.openai.com", "default upstream");
	is_str(c.cache_dir, "./respcache-cache", "default cache dir");
	ok(c.upstream_key_file == NULL, "no key file by default");
	conf_free(&c);

	setenv("STATE_DIRECTORY", "/var/lib/respcache", 1);
	conf_init(&c);
	is_str(c.cache_dir, "/var/lib/respcache", "StateDirectory is used");
	conf_free(&c);
	unsetenv("STATE_DIRECTORY");

	ok(conf_parse_size("1024", &sz) == 0 && sz == 1024, "size bytes");
	ok(conf_parse_size("64k", &sz) == 0 && sz == 65536, "size k");
	ok(conf_parse_size("2M", &sz) == 0 && sz == 2097152, "size M");
	ok(conf_parse_size("1g", &sz) == 0 && sz == 1073741824, "size g");
	ok(conf_parse_size("1x", &sz) == -1, "size 1x rejected");
	ok(conf_parse_size("-1", &sz) == -1, "negative size rejected");
	ok(conf_parse_seconds("0.5", &d) == 0 && d == 0.5, "seconds 0.5");
	ok(conf_parse_seconds("250ms", &d) == 0 && d == 0.25, "250ms");
	ok(conf_parse_seconds("2m", &d) == 0 && d == 120, "2m");
	ok(conf_parse_seconds("soon", &d) == -1, "soon rejected");
	ok(conf_parse_listen("0.0.0.0:80", &host, &port) == 0 &&
	    strcmp(host, "0.0.0.0") == 0 && port == 80, "listen v4");
	free(host);
	ok(conf_parse_listen("[::1]:8080", &host, &port) == 0 &&
	    strcmp(host, "::1") == 0 && port == 8080, "listen v6");
	free(host);
	ok(conf_parse_listen("localhost", &host, &port) == -1, "no port");
	ok(conf_parse_listen("h:70000", &host, &port) == -1, "port range");

	conf_init(&c);
	path = write_tmp("[server]\nlisten = 127.0.0.1:9999\n"
	    "[upstream]\nurl = http://127.0.0.1:1/\ntimeout = 1.5\n"
	    "key_file = /etc/key\n[cache]\nmax_size = 64k\n"
	    "[log]\nlevel = debug\n");
	ok(conf_load(&c, path, &cause) == 0, "valid file loads");
	ok(conf_check(&c, &cause) == 0, "valid file checks");
	ok(c.listen_port == 9999, "listen from file");
	is_str(c.upstream_url, "http://127.0.0.1:1", "trailing / trimmed");
	ok(c.timeout == 1.5, "timeout from file");
	is_str(c.upstream_key_file, "/etc/key", "key_file from file");
	ok(c.cache_max_size == 65536, "max_size from file");
	ok(c.log_level == LOG_DEBUG, "log level from file");
	ok(conf_set(&c, "server", "listen", "127.0.0.1:1234", &cause) == 0 &&
	    conf_check(&c, &cause) == 0 && c.listen_port == 1234,
	    "a flag overrides the file");
	unlink(path);
	conf_free(&c);

	conf_init(&c);
	path = write_tmp("[server]\nlisten = 1.2.3.4:1\nbogus = 1\n");
	ok(conf_load(&c, path, &cause) == -1 && strstr(cause, ":3:") != NULL
	    && strstr(cause, "bogus") != NULL, "unknown key named with line");
	free(cause);
	unlink(path);
	path = write_tmp("[nope]\nx = 1\n");
	ok(conf_load(&c, path, &cause) == -1 &&
	    strstr(cause, "unknown section [nope]") != NULL,
	    "unknown section");
	free(cause);
	unlink(path);
	path = write_tmp("[cache]\nmax_size = lots\n");
	ok(conf_load(&c, path, &cause) == -1 &&
	    strstr(cause, "not a size") != NULL, "bad size");
	free(cause);
	unlink(path);
	path = write_tmp("[server]\nthis is not ini\n");
	ok(conf_load(&c, path, &cause) == -1, "syntax error");
	free(cause);
	unlink(path);
	ok(conf_load(&c, "/nonexistent/respcache.conf", &cause) == -1 &&
	    strstr(cause, "No such file") != NULL, "missing file");
	free(cause);
	conf_free(&c);

	conf_init(&c);
	ok(conf_set(&c, "upstream", "url", "ftp://x", &cause) == 0 &&
	    conf_check(&c, &cause) == -1, "non-http upstream rejected");
	free(cause);
	ok(conf_set(&c, "upstream", "url", "http://x", &cause) == 0 &&
	    conf_set(&c, "server", "listen", "nope", &cause) == 0 &&
	    conf_check(&c, &cause) == -1, "bad listen rejected");
	free(cause);
	conf_free(&c);

	test_reload();
	test_shared();
	test_env();
	return (done_testing());
}
