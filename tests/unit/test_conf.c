/* Unit tests: configuration defaults, parsing and its errors. */
#include "config.h"

#include <stdlib.h>
#include <unistd.h>

#include "../../src/log.c"
#include "../../src/xmalloc.c"
#include "../../src/conf.c"
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
	return (done_testing());
}
