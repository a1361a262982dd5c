/*
 * main.c - respcache: command line, start-up, signals, shutdown.
 *
 * Start-up reads the configuration (defaults, then the file, then flags),
 * opens the cache, loads the upstream key, binds the listener and runs one
 * event loop that serves clients (evhttp) and talks to the upstream
 * (libcurl) at once.  It stays in the foreground and logs to stderr.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <event2/http.h>

#include "cache.h"
#include "conf.h"
#include "credential.h"
#include "guard.h"
#include "log.h"
#include "proxy.h"
#include "upstream.h"

static void
usage(FILE *f)
{
	fprintf(f,
"usage: respcache [--config FILE] [--listen HOST:PORT] [--upstream URL]\n"
"                 [--cache-dir DIR] [--upstream-key-file FILE] [-t] [-V] [-h]\n"
"       respcache hash-token < token-file\n"
"\n"
"  -c, --config FILE             read this INI file (see respcache.conf)\n"
"  -l, --listen HOST:PORT        client listener (default 127.0.0.1:8080)\n"
"  -u, --upstream URL            upstream API (default https://api.openai.com)\n"
"  -d, --cache-dir DIR           LMDB cache directory\n"
"  -k, --upstream-key-file FILE  send this key upstream instead of the client's\n"
"  -t, --test                    check the configuration and exit\n"
"  -V, --version                 print the version and exit\n"
"  -h, --help                    print this help and exit\n"
"\n"
"  hash-token  read a client token on stdin, print its token_sha256\n"
"\n"
"SIGHUP re-reads the configuration and key files; SIGTERM drains, then exits.\n");
}

/* The configuration's sources: the file and the flags over it. */
struct conf_source {
	const char	*file;
	struct {
		const char	*section, *key;
		char		*value;
	} flags[4];
};

/* Load, validate and read the keys of a configuration; -1 and *cause. */
static int
load(const struct conf_source *src, struct conf *c, struct keyring **keys,
    char **cause)
{
	size_t	i;

	conf_init(c);
	if (src->file != NULL && conf_load(c, src->file, cause) == -1)
		goto fail;
	for (i = 0; i < sizeof src->flags / sizeof src->flags[0]; i++)
		if (src->flags[i].value != NULL && conf_set(c,
		    src->flags[i].section, src->flags[i].key,
		    src->flags[i].value, cause) == -1)
			goto fail;
	if (conf_check(c, cause) == -1 || (*keys = keyring_load(c,
	    cause)) == NULL)
		goto fail;
	return (0);
fail:
	conf_free(c);
	return (-1);
}

/* respcache hash-token: a client token on stdin, its SHA-256 out. */
static int
hash_token(void)
{
	char	buf[4096], hex[SHA256_HEX_LEN + 1];
	size_t	n;

	if (fgets(buf, sizeof buf, stdin) == NULL) {
		fprintf(stderr, "respcache hash-token: no token on stdin\n");
		return (1);
	}
	n = strcspn(buf, "\r\n");
	buf[n] = '\0';
	if (n == 0 || strpbrk(buf, " \t") != NULL) {
		fprintf(stderr, "respcache hash-token: the token is the first "
		    "line of stdin, without blanks\n");
		return (1);
	}
	sha256_hex(buf, n, hex);
	explicit_bzero(buf, sizeof buf);
	printf("%s\n", hex);
	return (0);
}

/* How long requests in flight may take to finish after SIGTERM. */
#define DRAIN_SECONDS	30

struct server {
	struct event_base		*base;
	struct evhttp			*http;
	struct evhttp_bound_socket	*bs;
	struct proxy			*px;
	struct event			*drain_timer;
	const struct conf_source	*src;
	struct conf			*conf;		/* as running */
	int				 stopping;
	int				 flushed;
};

/*
 * SIGHUP: read the configuration and every key file again.  New requests
 * get the new keys and clients; those in flight keep theirs.  A file that
 * does not parse or validate is refused and the old one keeps serving.
 * Settings other than keys, clients, ownership and log level need a
 * restart.
 */
static void
on_reload(evutil_socket_t sig, short what, void *arg)
{
	struct server	*sv = arg;
	struct conf	 nc;
	struct keyring	*keys;
	char		*cause = NULL;

	(void)sig;
	(void)what;
	if (load(sv->src, &nc, &keys, &cause) == -1) {
		log_err("reload refused, the running configuration stays: %s",
		    cause);
		free(cause);
		return;
	}
	if (strcmp(nc.listen, sv->conf->listen) != 0 ||
	    strcmp(nc.upstream_url, sv->conf->upstream_url) != 0 ||
	    strcmp(nc.cache_dir, sv->conf->cache_dir) != 0 ||
	    nc.cache_max_size != sv->conf->cache_max_size ||
	    nc.cache_ttl != sv->conf->cache_ttl ||
	    nc.tombstone_ttl != sv->conf->tombstone_ttl ||
	    nc.client_timeout != sv->conf->client_timeout ||
	    nc.max_body_size != sv->conf->max_body_size ||
	    nc.max_header_size != sv->conf->max_header_size ||
	    nc.connect_timeout != sv->conf->connect_timeout ||
	    nc.timeout != sv->conf->timeout ||
	    nc.stream_idle_timeout != sv->conf->stream_idle_timeout)
		log_warnx("reload: only keys, clients, ownership and the log "
		    "level change now; the other settings changed take "
		    "effect on restart");
	proxy_set_keys(sv->px, keys);
	log_init(nc.log_level);
	log_info("reloaded: %zu credential%s, %zu client%s", nc.ncreds,
	    nc.ncreds == 1 ? "" : "s", nc.nclients,
	    nc.nclients == 1 ? "" : "s");
	conf_free(&nc);
}

static void
stop_now(void *arg)
{
	struct server	*sv = arg;

	event_base_loopbreak(sv->base);
}

static void
flushed(void *arg)
{
	struct server	*sv = arg;

	sv->flushed = 1;
	event_base_loopbreak(sv->base);
}

static void
drain_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	log_warnx("requests still in flight after %d s: stopping anyway",
	    DRAIN_SECONDS);
	stop_now(arg);
}

/*
 * SIGTERM or SIGINT: stop accepting, let what is in flight finish (a
 * stream runs to its end), then leave the loop.  A second signal, or the
 * drain time running out, stops at once.
 */
static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct server	*sv = arg;
	struct timeval	 tv = { DRAIN_SECONDS, 0 };

	(void)what;
	if (sv->stopping++) {
		log_info("signal %d again: stopping now", (int)sig);
		stop_now(sv);
		return;
	}
	log_info("signal %d: draining, then stopping", (int)sig);
	evhttp_del_accept_socket(sv->http, sv->bs);
	sv->bs = NULL;
	evtimer_add(sv->drain_timer, &tv);
	proxy_drain(sv->px, stop_now, sv);
}

/* Print the address clients can use: tests and scripts wait for it. */
static void
announce(struct evhttp_bound_socket *bs)
{
	struct sockaddr_storage	ss;
	socklen_t		len = sizeof ss;
	char			host[INET6_ADDRSTRLEN];
	int			port;

	if (getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&ss,
	    &len) == -1)
		fatalx("getsockname failed");
	if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof host);
		port = ntohs(s6->sin6_port);
		fprintf(stderr, "respcache: listening on [%s]:%d\n", host,
		    port);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		inet_ntop(AF_INET, &s4->sin_addr, host, sizeof host);
		port = ntohs(s4->sin_port);
		fprintf(stderr, "respcache: listening on %s:%d\n", host, port);
	}
	fflush(stderr);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "listen", required_argument, NULL, 'l' },
		{ "upstream", required_argument, NULL, 'u' },
		{ "cache-dir", required_argument, NULL, 'd' },
		{ "upstream-key-file", required_argument, NULL, 'k' },
		{ "test", no_argument, NULL, 't' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct conf_source		 src = { NULL, {
		{ "server", "listen", NULL },
		{ "upstream", "url", NULL },
		{ "cache", "dir", NULL },
		{ "upstream", "key_file", NULL },
	} };
	struct conf			 conf;
	struct event_config		*evcfg;
	struct event_base		*base;
	struct evhttp			*http;
	struct evhttp_bound_socket	*bs;
	struct event			*sigterm, *sigint, *sighup;
	struct cache			*cache;
	struct upstream			*up;
	struct keyring			*keys;
	struct proxy			*px;
	struct timeval			 tv;
	struct server			 sv;
	char				*cause = NULL;
	int				 ch, test = 0, one;

	if (argc == 2 && strcmp(argv[1], "hash-token") == 0)
		return (hash_token());
	while ((ch = getopt_long(argc, argv, "c:l:u:d:k:tVh", longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 'c':
			src.file = optarg;
			break;
		case 'l':
			src.flags[0].value = optarg;
			break;
		case 'u':
			src.flags[1].value = optarg;
			break;
		case 'd':
			src.flags[2].value = optarg;
			break;
		case 'k':
			src.flags[3].value = optarg;
			break;
		case 't':
			test = 1;
			break;
		case 'V':
			printf("respcache %s\n", PACKAGE_VERSION);
			return (0);
		case 'h':
			usage(stdout);
			return (0);
		default:
			usage(stderr);
			return (2);
		}
	}
	if (optind != argc) {
		usage(stderr);
		return (2);
	}

	log_init(LOG_INFO);
	if (load(&src, &conf, &keys, &cause) == -1)
		fatalx("%s", cause);
	log_init(conf.log_level);
	if (conf.ncreds > 0 && conf.nclients == 0 &&
	    strcmp(conf.listen_host, "127.0.0.1") != 0 &&
	    strcmp(conf.listen_host, "::1") != 0 &&
	    strcmp(conf.listen_host, "localhost") != 0)
		log_warnx("%s is not a loopback address and no [client] "
		    "section is set: anyone who can connect uses the upstream "
		    "key", conf.listen_host);
	if (test) {
		printf("respcache: configuration OK (%zu credential%s, %zu "
		    "client%s)\n", conf.ncreds, conf.ncreds == 1 ? "" : "s",
		    conf.nclients, conf.nclients == 1 ? "" : "s");
		keyring_unref(keys);
		conf_free(&conf);
		return (0);
	}

	signal(SIGPIPE, SIG_IGN);
	/* Holding keys: no core dump and no ptrace by the same user. */
	if (conf.ncreds > 0 && prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == -1)
		log_warnx("prctl(PR_SET_DUMPABLE): %s", strerror(errno));
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
		fatalx("curl_global_init failed");
	if ((cache = cache_open(conf.cache_dir, conf.cache_max_size,
	    conf.cache_ttl, &cause)) == NULL)
		fatalx("%s", cause);
	/*
	 * The changelist folds evhttp's per-request disable and enable of
	 * EV_READ and EV_WRITE into one epoll_ctl per real change, applied
	 * just before epoll_wait: a quarter of a cache hit's CPU.
	 */
	if ((evcfg = event_config_new()) == NULL ||
	    event_config_set_flag(evcfg,
	    EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST) != 0 ||
	    (base = event_base_new_with_config(evcfg)) == NULL ||
	    (http = evhttp_new(base)) == NULL)
		fatalx("cannot create the event loop");
	event_config_free(evcfg);
	evhttp_set_max_headers_size(http, (ev_ssize_t)conf.max_header_size);
	evhttp_set_max_body_size(http, (ev_ssize_t)conf.max_body_size);
	tv.tv_sec = (time_t)conf.client_timeout;
	tv.tv_usec = (suseconds_t)((conf.client_timeout - (double)tv.tv_sec) *
	    1e6);
	evhttp_set_timeout_tv(http, &tv);
	/* NUL bytes, and client_timeout for a request's whole headers. */
	guard_init(http, &tv);
	/* Every method reaches the router, which answers 405 itself. */
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST |
	    EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
	    EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT |
	    EVHTTP_REQ_PATCH);
	up = upstream_new(base, conf.upstream_url, conf.connect_timeout,
	    conf.timeout, conf.stream_idle_timeout);
	px = proxy_new(http, cache, up, keys, &tv, conf.tombstone_ttl);
	if ((bs = evhttp_bind_socket_with_handle(http, conf.listen_host,
	    (ev_uint16_t)conf.listen_port)) == NULL)
		fatalx("cannot listen on %s (in use, or not an address of "
		    "this host)", conf.listen);
	/*
	 * Accepted sockets inherit it: a stream's small events and a reply's
	 * last segment never wait for the client's delayed ACK (Nagle).
	 */
	one = 1;
	if (setsockopt(evhttp_bound_socket_get_fd(bs), IPPROTO_TCP,
	    TCP_NODELAY, &one, sizeof one) == -1)
		log_warnx("cannot set TCP_NODELAY on the listener: %s",
		    strerror(errno));
	memset(&sv, 0, sizeof sv);
	sv.base = base;
	sv.http = http;
	sv.bs = bs;
	sv.px = px;
	sv.src = &src;
	sv.conf = &conf;
	if ((sv.drain_timer = evtimer_new(base, drain_timeout, &sv)) == NULL)
		fatalx("out of memory");
	sigterm = evsignal_new(base, SIGTERM, on_signal, &sv);
	sigint = evsignal_new(base, SIGINT, on_signal, &sv);
	sighup = evsignal_new(base, SIGHUP, on_reload, &sv);
	if (sigterm == NULL || sigint == NULL || sighup == NULL ||
	    evsignal_add(sigterm, NULL) || evsignal_add(sigint, NULL) ||
	    evsignal_add(sighup, NULL))
		fatalx("cannot set up signals");
	log_info("respcache %s: upstream %s, cache %s (max %zu bytes), %s",
	    PACKAGE_VERSION, conf.upstream_url, conf.cache_dir,
	    conf.cache_max_size, conf.ncreds == 0 ?
	    "client keys passed through" : conf.nclients == 0 ?
	    "upstream key from file, no client auth" :
	    "upstream keys from files, clients by token");
	announce(bs);

	event_base_dispatch(base);

	/* What proxy_stop() answers gets 1 s to reach its clients. */
	proxy_stop(px);
	proxy_drain(px, flushed, &sv);
	if (!sv.flushed) {
		tv.tv_sec = 1;
		tv.tv_usec = 0;
		event_base_loopexit(base, &tv);
		event_base_dispatch(base);
	}
	evhttp_free(http);
	proxy_free(px);
	upstream_free(up);
	event_free(sigterm);
	event_free(sigint);
	event_free(sighup);
	event_free(sv.drain_timer);
	event_base_free(base);
	cache_close(cache);
	guard_free();
	curl_global_cleanup();
	conf_free(&conf);
	log_info("stopped");
	return (0);
}
