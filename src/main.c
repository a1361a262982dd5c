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
#include "log.h"
#include "proxy.h"
#include "upstream.h"

static void
usage(FILE *f)
{
	fprintf(f,
"usage: respcache [--config FILE] [--listen HOST:PORT] [--upstream URL]\n"
"                 [--cache-dir DIR] [--upstream-key-file FILE] [-t] [-V] [-h]\n"
"\n"
"  -c, --config FILE             read this INI file (see respcache.conf)\n"
"  -l, --listen HOST:PORT        client listener (default 127.0.0.1:8080)\n"
"  -u, --upstream URL            upstream API (default https://api.openai.com)\n"
"  -d, --cache-dir DIR           LMDB cache directory\n"
"  -k, --upstream-key-file FILE  send this key upstream instead of the client's\n"
"  -t, --test                    check the configuration and exit\n"
"  -V, --version                 print the version and exit\n"
"  -h, --help                    print this help and exit\n");
}

/* How long requests in flight may take to finish after SIGTERM. */
#define DRAIN_SECONDS	30

struct server {
	struct event_base		*base;
	struct evhttp			*http;
	struct evhttp_bound_socket	*bs;
	struct proxy			*px;
	struct event			*drain_timer;
	int				 stopping;
	int				 flushed;
};

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
	struct {
		const char	*section, *key;
		char		*value;
	} flags[] = {
		{ "server", "listen", NULL },
		{ "upstream", "url", NULL },
		{ "cache", "dir", NULL },
		{ "upstream", "key_file", NULL },
	};
	struct conf			 conf;
	struct event_config		*evcfg;
	struct event_base		*base;
	struct evhttp			*http;
	struct evhttp_bound_socket	*bs;
	struct event			*sigterm, *sigint;
	struct cache			*cache;
	struct upstream			*up;
	struct credential		*cred = NULL;
	struct proxy			*px;
	struct timeval			 tv;
	struct server			 sv;
	const char			*config_file = NULL;
	char				*cause = NULL;
	int				 ch, test = 0, one;
	size_t				 i;

	while ((ch = getopt_long(argc, argv, "c:l:u:d:k:tVh", longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 'c':
			config_file = optarg;
			break;
		case 'l':
			flags[0].value = optarg;
			break;
		case 'u':
			flags[1].value = optarg;
			break;
		case 'd':
			flags[2].value = optarg;
			break;
		case 'k':
			flags[3].value = optarg;
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
	conf_init(&conf);
	if (config_file != NULL && conf_load(&conf, config_file, &cause) == -1)
		fatalx("%s", cause);
	for (i = 0; i < sizeof flags / sizeof flags[0]; i++)
		if (flags[i].value != NULL && conf_set(&conf, flags[i].section,
		    flags[i].key, flags[i].value, &cause) == -1)
			fatalx("%s", cause);
	if (conf_check(&conf, &cause) == -1)
		fatalx("%s", cause);
	log_init(conf.log_level);
	if (conf.upstream_key_file != NULL && (cred = credential_load("default",
	    conf.upstream_key_file, &cause)) == NULL)
		fatalx("%s", cause);
	if (test) {
		printf("respcache: configuration OK\n");
		credential_free(cred);
		conf_free(&conf);
		return (0);
	}

	signal(SIGPIPE, SIG_IGN);
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
	/* Every method reaches the router, which answers 405 itself. */
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST |
	    EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
	    EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT |
	    EVHTTP_REQ_PATCH);
	up = upstream_new(base, conf.upstream_url, conf.connect_timeout,
	    conf.timeout, conf.stream_idle_timeout);
	px = proxy_new(http, cache, up, cred, &tv, conf.tombstone_ttl);
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
	if ((sv.drain_timer = evtimer_new(base, drain_timeout, &sv)) == NULL)
		fatalx("out of memory");
	sigterm = evsignal_new(base, SIGTERM, on_signal, &sv);
	sigint = evsignal_new(base, SIGINT, on_signal, &sv);
	if (sigterm == NULL || sigint == NULL || evsignal_add(sigterm, NULL) ||
	    evsignal_add(sigint, NULL))
		fatalx("cannot set up signals");
	log_info("respcache %s: upstream %s, cache %s (max %zu bytes)%s",
	    PACKAGE_VERSION, conf.upstream_url, conf.cache_dir,
	    conf.cache_max_size, cred != NULL ? ", upstream key from file" :
	    ", client keys passed through");
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
	event_free(sv.drain_timer);
	event_base_free(base);
	cache_close(cache);
	credential_free(cred);
	curl_global_cleanup();
	conf_free(&conf);
	log_info("stopped");
	return (0);
}
