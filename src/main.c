/*
 * main.c - respcache: command line, start-up, signals, shutdown.
 *
 * Start-up reads the configuration (defaults, then the file, then flags),
 * opens the cache and the logs, loads the keys, binds the listeners, and
 * starts the workers: event loops on threads of their own that serve
 * clients (evhttp) and talk to the upstream (libcurl), sharing the cache.
 * The main thread keeps an event loop for signals and the admin routes.
 * It stays in the foreground and logs to stderr (or the error_log file).
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <openssl/rand.h>

#include "accesslog.h"
#include "admin.h"
#include "cache.h"
#include "coalesce.h"
#include "conf.h"
#include "credential.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "shared.h"
#include "systemd.h"
#include "worker.h"
#include "xmalloc.h"

static void
usage(FILE *f)
{
	fprintf(f,
"usage: respcache [--config FILE] [--listen HOST:PORT] [--upstream URL]\n"
"                 [--cache-dir DIR] [--upstream-key-file FILE]\n"
"                 [--admin-listen HOST:PORT] [--workers N] [-t] [-V] [-h]\n"
"       respcache hash-token < token-file\n"
"       respcache probe URL\n"
"\n"
"  -c, --config FILE             read this INI file (see respcache.conf)\n"
"  -l, --listen HOST:PORT        client listener (default 127.0.0.1:8080)\n"
"  -u, --upstream URL            upstream API (default https://api.openai.com)\n"
"  -d, --cache-dir DIR           LMDB cache directory\n"
"  -k, --upstream-key-file FILE  send this key upstream instead of the client's\n"
"  -a, --admin-listen HOST:PORT  admin routes and metrics (default\n"
"                                127.0.0.1:9090; \"\" turns them off)\n"
"  -w, --workers N               event-loop threads (default: one per CPU)\n"
"  -t, --test                    check the configuration and exit\n"
"  -V, --version                 print the version and exit\n"
"  -h, --help                    print this help and exit\n"
"\n"
"  hash-token  read a client token on stdin, print its token_sha256\n"
"  probe       GET URL: exit 0 on a 2xx (a container's health check)\n"
"\n"
"The environment sets what the file and the flags do not: RESPCACHE_LISTEN,\n"
"RESPCACHE_UPSTREAM, RESPCACHE_ADMIN_LISTEN, RESPCACHE_WORKERS,\n"
"RESPCACHE_UPSTREAM_KEY_FILE, RESPCACHE_CACHE_DIR, RESPCACHE_CACHE_MAX_SIZE,\n"
"RESPCACHE_SHARED_REDIS, RESPCACHE_LOG_LEVEL (see respcache.conf(5)).\n"
"\n"
"SIGHUP re-reads the configuration and key files; SIGTERM drains, then exits;\n"
"SIGUSR1 reopens the log files.\n");
}

static size_t
probe_discard(char *p, size_t size, size_t n, void *arg)
{
	(void)p;
	(void)arg;
	return (size * n);
}

/* The configuration's sources: the file and the flags over it. */
struct conf_source {
	const char	*file;
	struct {
		const char	*section, *key;
		char		*value;
	} flags[6];
};

/* Load, validate and read the keys of a configuration; -1 and *cause. */
static int
load(const struct conf_source *src, struct conf *c, struct keyring **keys,
    char **cause)
{
	size_t	i;

	conf_init(c);
	/* The environment, then the file over it, then the flags. */
	if (conf_env(c, cause) == -1 ||
	    (src->file != NULL && conf_load(c, src->file, cause) == -1))
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

/*
 * respcache probe URL: 0 if a GET of URL answers 2xx within 2 s (a
 * container's HEALTHCHECK, where there is no curl(1)), 1 otherwise.
 */
static int
probe(const char *url)
{
	CURL	*h;
	long	 status = 0;
	int	 rc;

	if ((h = curl_easy_init()) == NULL)
		return (1);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 2000L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_NOBODY, 0L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, probe_discard);
	rc = curl_easy_perform(h);
	if (rc == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(h);
	if (rc != CURLE_OK)
		fprintf(stderr, "respcache probe: %s: %s\n", url,
		    curl_easy_strerror((CURLcode)rc));
	return (status >= 200 && status < 300 ? 0 : 1);
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

struct server {
	struct event_base		*base;
	struct evhttp			*admin_http;
	struct listener_accept		*admin_la;
	struct admin			*admin;
	struct worker			**workers;
	int				 nworkers;
	int				 ndrained;
	int				 drained_fd;
	struct event			*drained_ev;
	struct event			*drain_timer;
	struct shared_follow		*follow;	/* or NULL */
	const struct conf_source	*src;
	struct conf			*conf;		/* as running */
	int				 stopping;
	int				 stopped;
};

/*
 * The shared tier's settings for every connection to it; node is this
 * process's name in the fleet's stream (random hex, new at each start).
 */
static void
shared_conf_of(const struct conf *c, const char *password, char *node,
    size_t nsize, struct shared_conf *sc)
{
	unsigned char	r[8];
	size_t		i;

	if (RAND_bytes(r, sizeof r) != 1)
		fatalx("cannot name this node: no random bytes");
	for (i = 0; i < sizeof r && 2 * i + 2 < nsize; i++)
		snprintf(node + 2 * i, 3, "%02x", r[i]);
	memset(sc, 0, sizeof *sc);
	sc->host = c->shared_host;
	sc->port = c->shared_port;
	sc->unix_path = c->shared_unix;
	sc->db = c->shared_db;
	sc->password = password;
	sc->prefix = c->shared_prefix;
	sc->timeout = c->shared_timeout;
	sc->ttl = c->cache_ttl;
	/* A DELETE given up on may still take effect upstream meanwhile. */
	sc->mark_ttl = 2 * (c->connect_timeout + c->timeout);
	/* About as long as a fetch may take, and no longer than 30 s. */
	sc->lease = c->connect_timeout + c->timeout < 30 ?
	    c->connect_timeout + c->timeout : 30;
	sc->node = node;
}

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
	int		 i;

	(void)sig;
	(void)what;
	systemd_reloading();
	if (load(sv->src, &nc, &keys, &cause) == -1) {
		log_err("reload refused, the running configuration stays: %s",
		    cause);
		free(cause);
		metrics_reload(0);
		systemd_ready("reload refused; serving the previous "
		    "configuration");
		return;
	}
	if (conf_needs_restart(sv->conf, &nc))
		log_warnx("reload: only keys, clients, ownership and the log "
		    "level change now; the other settings changed take "
		    "effect on restart");
	for (i = 0; i < sv->nworkers; i++)
		worker_set_keys(sv->workers[i], keyring_ref(keys));
	keyring_unref(keys);
	log_init(nc.log_level);
	log_info("reloaded: %zu credential%s, %zu client%s", nc.ncreds,
	    nc.ncreds == 1 ? "" : "s", nc.nclients,
	    nc.nclients == 1 ? "" : "s");
	metrics_reload(1);
	systemd_ready("serving; configuration reloaded");
	conf_free(&nc);
}

/* SIGUSR1: logrotate moved the log files; open them again. */
static void
on_reopen(evutil_socket_t sig, short what, void *arg)
{
	char	*cause = NULL;

	(void)sig;
	(void)what;
	(void)arg;
	if (log_reopen(&cause) == -1 || accesslog_reopen(&cause) == -1) {
		log_err("cannot reopen the logs: %s", cause);
		free(cause);
		return;
	}
	log_info("log files reopened");
}

/* Every worker ends what is left and returns; the main loop ends too. */
static void
stop_all(struct server *sv)
{
	int	i;

	if (sv->stopped++)
		return;
	for (i = 0; i < sv->nworkers; i++)
		worker_stop(sv->workers[i]);
	event_base_loopbreak(sv->base);
}

/* A worker's drain is complete. */
static void
on_drained(evutil_socket_t fd, short what, void *arg)
{
	struct server	*sv = arg;
	uint64_t	 n;

	(void)what;
	if (read(fd, &n, sizeof n) != sizeof n)
		return;
	sv->ndrained += (int)n;
	if (sv->ndrained >= sv->nworkers) {
		log_info("nothing left in flight: stopping");
		stop_all(sv);
	}
}

static void
drain_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct server	*sv = arg;

	(void)fd;
	(void)what;
	log_warnx("requests still in flight after shutdown_timeout (%g s): "
	    "stopping anyway", sv->conf->shutdown_timeout);
	stop_all(sv);
}

/*
 * SIGTERM or SIGINT: readiness goes false, every worker stops accepting
 * and lets what is in flight finish (a stream runs to its end) within
 * shutdown_timeout.  A second signal stops at once.
 */
static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct server	*sv = arg;
	struct timeval	 tv;
	int		 i;

	(void)what;
	if (sv->stopping++) {
		log_info("signal %d again: stopping now", (int)sig);
		stop_all(sv);
		return;
	}
	log_info("signal %d: draining, then stopping", (int)sig);
	systemd_stopping();
	admin_draining(sv->admin);
	tv.tv_sec = (time_t)sv->conf->shutdown_timeout;
	tv.tv_usec = (suseconds_t)((sv->conf->shutdown_timeout -
	    (double)tv.tv_sec) * 1e6);
	evtimer_add(sv->drain_timer, &tv);
	for (i = 0; i < sv->nworkers; i++)
		worker_drain(sv->workers[i]);
}

/* What the daemon runs with: the error log's first line. */
static void
log_started(const struct conf *c, int nworkers)
{
	log_info("respcache %s: upstream %s, cache %s (max %zu bytes), %d "
	    "worker%s, %s", PACKAGE_VERSION, c->upstream_url, c->cache_dir,
	    c->cache_max_size, nworkers, nworkers == 1 ? "" : "s",
	    c->ncreds == 0 ? "client keys passed through" :
	    c->nclients == 0 ? "upstream key from file, no client auth" :
	    "upstream keys from files, clients by token");
}

/* The CPUs this process may run on (its affinity, as taskset sets it). */
static int
cpu_count(void)
{
	cpu_set_t	set;
	long		n;

	if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
		return (CPU_COUNT(&set));
	n = sysconf(_SC_NPROCESSORS_ONLN);
	return (n > 0 && n < INT_MAX ? (int)n : 1);
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
		{ "admin-listen", required_argument, NULL, 'a' },
		{ "workers", required_argument, NULL, 'w' },
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
		{ "server", "admin_listen", NULL },
		{ "server", "workers", NULL },
	} };
	struct conf			 conf;
	struct event			*sigs[4];
	struct cache			*cache;
	struct coalesce			*flights;
	struct keyring			*keys;
	struct server			 sv;
	sigset_t			 all, old;
	char				*cause = NULL, name[80], aname[80];
	char				*shared_pw = NULL, node[40];
	struct shared_conf		 sc;
	int				*fds, admin_fd = -1, nfds, ch, i;
	int				 test = 0;

	if (argc == 2 && strcmp(argv[1], "hash-token") == 0)
		return (hash_token());
	if (argc == 3 && strcmp(argv[1], "probe") == 0)
		return (probe(argv[2]));
	while ((ch = getopt_long(argc, argv, "c:l:u:d:k:a:w:tVh", longopts,
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
		case 'a':
			src.flags[4].value = optarg;
			break;
		case 'w':
			src.flags[5].value = optarg;
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
	/*
	 * Keys (a reload may bring the first), clients' tokens and cached
	 * answers: no core dump, no ptrace and no /proc/PID/environ or mem
	 * for the same user.
	 */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == -1)
		log_warnx("prctl(PR_SET_DUMPABLE): %s", strerror(errno));
	/* First, while no other thread runs: it checks the file in a child. */
	if ((cache = cache_open(conf.cache_dir, conf.cache_max_size,
	    conf.cache_ttl, &cause)) == NULL)
		fatalx("%s", cause);
	if (log_open(conf.error_log, &cause) == -1 ||
	    accesslog_open(conf.access_log, conf.log_json, &cause) == -1)
		fatalx("%s", cause);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
		fatalx("curl_global_init failed");

	memset(&sv, 0, sizeof sv);
	sv.src = &src;
	sv.conf = &conf;
	sv.nworkers = conf.workers > 0 ? conf.workers : cpu_count();
	fds = xcalloc((size_t)sv.nworkers, sizeof *fds);
	sv.workers = xcalloc((size_t)sv.nworkers, sizeof *sv.workers);
	/* Socket activation: every worker accepts on what systemd passed. */
	if ((nfds = systemd_listen_fds(fds, 1, &cause)) == -1)
		fatalx("%s", cause);
	if (nfds == 1) {
		for (i = 1; i < sv.nworkers; i++)
			if ((fds[i] = dup(fds[0])) == -1)
				fatalx("dup: %s", strerror(errno));
	} else if (listener_open("[server] listen", conf.listen_host,
	    conf.listen_port, sv.nworkers, fds, &cause) == -1)
		fatalx("%s", cause);
	if (conf.admin_listen != NULL && listener_open("[server] "
	    "admin_listen; empty turns it off", conf.admin_host,
	    conf.admin_port, 1, &admin_fd, &cause) == -1)
		fatalx("%s", cause);

	if ((sv.base = event_base_new()) == NULL)
		fatalx("cannot create the event loop");
	if (admin_fd != -1) {
		if ((sv.admin_http = evhttp_new(sv.base)) == NULL ||
		    (sv.admin_la = listener_accept(sv.admin_http, admin_fd,
		    ML_ADMIN, "admin")) == NULL)
			fatalx("cannot serve the admin routes");
		sv.admin = admin_new(sv.admin_http, cache, sv.nworkers,
		    conf.client_timeout);
	}
	if ((sv.drained_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1)
		fatalx("eventfd: %s", strerror(errno));
	flights = coalesce_new();
	if (conf.shared_redis != NULL) {
		if (conf.shared_password_file != NULL &&
		    secret_read("[shared] password_file",
		    conf.shared_password_file, &shared_pw, &cause) == -1)
			fatalx("%s", cause);
		shared_conf_of(&conf, shared_pw, node, sizeof node, &sc);
		sv.follow = shared_follow_new(sv.base, &sc, cache, flights,
		    conf.shared_max_stale, conf.tombstone_ttl);
		if (sv.admin != NULL)
			admin_set_follow(sv.admin, sv.follow);
	}
	for (i = 0; i < sv.nworkers; i++)
		sv.workers[i] = worker_new(i, &conf, cache, flights, keys,
		    conf.shared_redis != NULL ? &sc : NULL, fds[i],
		    sv.drained_fd);
	/* Each connection keeps its own copy. */
	if (shared_pw != NULL) {
		explicit_bzero(shared_pw, strlen(shared_pw));
		free(shared_pw);
	}
	/* Each worker holds its own: rotated keys leave memory with them. */
	keyring_unref(keys);
	listener_name(fds[0], name, sizeof name);
	if (admin_fd != -1)
		listener_name(admin_fd, aname, sizeof aname);
	free(fds);

	if ((sv.drain_timer = evtimer_new(sv.base, drain_timeout, &sv)) ==
	    NULL || (sv.drained_ev = event_new(sv.base, sv.drained_fd,
	    EV_READ | EV_PERSIST, on_drained, &sv)) == NULL ||
	    event_add(sv.drained_ev, NULL) == -1)
		fatalx("out of memory");
	sigs[0] = evsignal_new(sv.base, SIGTERM, on_signal, &sv);
	sigs[1] = evsignal_new(sv.base, SIGINT, on_signal, &sv);
	sigs[2] = evsignal_new(sv.base, SIGHUP, on_reload, &sv);
	sigs[3] = evsignal_new(sv.base, SIGUSR1, on_reopen, &sv);
	for (i = 0; i < 4; i++)
		if (sigs[i] == NULL || evsignal_add(sigs[i], NULL) == -1)
			fatalx("cannot set up signals");
	/* Signals are the main thread's: workers start with them blocked. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	for (i = 0; i < sv.nworkers; i++)
		worker_start(sv.workers[i]);
	pthread_sigmask(SIG_SETMASK, &old, NULL);

	/* Tests and scripts wait for these lines, on stderr. */
	if (strcmp(conf.error_log, "stderr") == 0)
		log_started(&conf, sv.nworkers);
	if (admin_fd != -1)
		fprintf(stderr, "respcache: admin on %s\n", aname);
	fprintf(stderr, "respcache: listening on %s\n", name);
	fflush(stderr);
	/* From here on, an error_log file takes stderr's place. */
	log_start();
	if (strcmp(conf.error_log, "stderr") != 0)
		log_started(&conf, sv.nworkers);
	systemd_ready("serving on %s with %d worker%s", name, sv.nworkers,
	    sv.nworkers == 1 ? "" : "s");

	event_base_dispatch(sv.base);

	stop_all(&sv);
	for (i = 0; i < sv.nworkers; i++)
		worker_join(sv.workers[i]);
	for (i = 0; i < sv.nworkers; i++)
		worker_free(sv.workers[i]);
	free(sv.workers);
	shared_follow_free(sv.follow);
	coalesce_free(flights);
	listener_accept_close(sv.admin_la);
	if (sv.admin_http != NULL)
		evhttp_free(sv.admin_http);
	admin_free(sv.admin);
	for (i = 0; i < 4; i++)
		event_free(sigs[i]);
	event_free(sv.drain_timer);
	event_free(sv.drained_ev);
	close(sv.drained_fd);
	event_base_free(sv.base);
	cache_close(cache);
	curl_global_cleanup();
	accesslog_close();
	conf_free(&conf);
	log_info("stopped");
	return (0);
}
