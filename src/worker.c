/*
 * worker.c - an event loop thread: its objects, its mailbox, its end.
 *
 * The mailbox is an eventfd on the worker's loop and a few fields under
 * a mutex: the main thread sets a field and writes the eventfd; the
 * worker reads the fields on its own thread.  libevent's objects are
 * never touched from two threads (no evthread locking on the hot path).
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include <event2/event.h>
#include <event2/http.h>

#include "accesslog.h"
#include "cache.h"
#include "coalesce.h"
#include "conf.h"
#include "credential.h"
#include "guard.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "proxy.h"
#include "shared.h"
#include "upstream.h"
#include "worker.h"
#include "xmalloc.h"

struct worker {
	int				 id;
	pthread_t			 thread;
	int				 started;
	struct cache			*cache;
	struct event_base		*base;
	struct evhttp			*http;
	struct listener_accept		*la;
	struct upstream			*up;
	struct shared			*shared;	/* or NULL */
	struct proxy			*px;
	struct coalesce_box		*box;
	struct metrics			*metrics;
	struct accesslog		*alog;
	struct timeval			 client_tv;
	int				 drained_fd;
	int				 flushed;

	struct event			*mail;
	int				 mail_fd;
	pthread_mutex_t			 mtx;
	/* Under mtx: */
	struct keyring			*new_keys;
	int				 drain;
	int				 stop;
};

static void	worker_mail(evutil_socket_t, short, void *);

struct worker *
worker_new(int id, const struct conf *c, struct cache *cache,
    struct coalesce *flights, struct keyring *keys,
    const struct shared_conf *sc, int listen_fd, int drained_fd)
{
	struct worker	*w;
	struct event_config *evcfg;
	struct proxy_env env;
	char		 who[32];

	w = xcalloc(1, sizeof *w);
	w->id = id;
	w->cache = cache;
	w->drained_fd = drained_fd;
	pthread_mutex_init(&w->mtx, NULL);
	w->client_tv.tv_sec = (time_t)c->client_timeout;
	w->client_tv.tv_usec = (suseconds_t)((c->client_timeout -
	    (double)w->client_tv.tv_sec) * 1e6);
	/*
	 * The changelist folds evhttp's per-request disable and enable of
	 * EV_READ and EV_WRITE into one epoll_ctl per real change, applied
	 * just before epoll_wait: a quarter of a cache hit's CPU.
	 */
	if ((evcfg = event_config_new()) == NULL ||
	    event_config_set_flag(evcfg,
	    EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST) != 0 ||
	    (w->base = event_base_new_with_config(evcfg)) == NULL ||
	    (w->http = evhttp_new(w->base)) == NULL)
		fatalx("cannot create an event loop");
	event_config_free(evcfg);
	evhttp_set_max_headers_size(w->http, (ev_ssize_t)c->max_header_size);
	evhttp_set_max_body_size(w->http, (ev_ssize_t)c->max_body_size);
	evhttp_set_timeout_tv(w->http, &w->client_tv);
	/* Every method reaches the router, which answers 405 itself. */
	evhttp_set_allowed_methods(w->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST |
	    EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
	    EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT |
	    EVHTTP_REQ_PATCH);
	if ((w->mail_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1)
		fatalx("eventfd: %s", strerror(errno));
	if ((w->mail = event_new(w->base, w->mail_fd, EV_READ | EV_PERSIST,
	    worker_mail, w)) == NULL || event_add(w->mail, NULL) == -1)
		fatalx("cannot create a worker's mailbox");
	w->up = upstream_new(w->base, c->upstream_url, c->connect_timeout,
	    c->timeout, c->stream_idle_timeout);
	w->box = coalesce_box_new(flights, w->base);
	if (c->admin_listen != NULL)
		w->metrics = metrics_new();
	w->alog = accesslog_new(w->base);
	memset(&env, 0, sizeof env);
	/* A DELETE given up on may still take effect upstream meanwhile. */
	env.delete_window = 2 * (c->connect_timeout + c->timeout);
	if (sc != NULL)
		w->shared = shared_new(w->base, sc, w->metrics);
	env.shared = w->shared;
	env.node = sc != NULL ? sc->node : NULL;
	env.upstream_url = c->upstream_url;
	env.websocket = c->websocket;
	env.ws_idle.tv_sec = (time_t)c->websocket_idle;
	env.ws_idle.tv_usec = (suseconds_t)((c->websocket_idle -
	    (double)env.ws_idle.tv_sec) * 1e6);
	env.cache = cache;
	env.flights = flights;
	env.box = w->box;
	env.up = w->up;
	env.keys = keys;
	env.metrics = w->metrics;
	env.alog = w->alog;
	env.client_tv = w->client_tv;
	env.tombstone_ttl = c->tombstone_ttl;
	/* A forwarded answer is relayed as it comes: silence ends it. */
	env.forward_idle = c->timeout > c->stream_idle_timeout ? c->timeout :
	    c->stream_idle_timeout;
	w->px = proxy_new(w->http, &env);
	snprintf(who, sizeof who, "worker %d", id);
	if ((w->la = listener_accept(w->http, listen_fd, ML_CLIENT, who)) ==
	    NULL)
		fatalx("cannot accept on the listening socket");
	return (w);
}

static void
worker_post(struct worker *w)
{
	uint64_t	one = 1;

	if (write(w->mail_fd, &one, sizeof one) == -1)
		log_warnx("worker %d: mailbox: %s", w->id, strerror(errno));
}

void
worker_set_keys(struct worker *w, struct keyring *keys)
{
	pthread_mutex_lock(&w->mtx);
	keyring_unref(w->new_keys);
	w->new_keys = keys;
	pthread_mutex_unlock(&w->mtx);
	worker_post(w);
}

void
worker_drain(struct worker *w)
{
	pthread_mutex_lock(&w->mtx);
	w->drain = 1;
	pthread_mutex_unlock(&w->mtx);
	worker_post(w);
}

void
worker_stop(struct worker *w)
{
	pthread_mutex_lock(&w->mtx);
	w->stop = 1;
	pthread_mutex_unlock(&w->mtx);
	worker_post(w);
}

static void
worker_drained(void *arg)
{
	struct worker	*w = arg;
	uint64_t	 one = 1;

	log_debug("worker %d: drained", w->id);
	if (write(w->drained_fd, &one, sizeof one) == -1)
		log_warnx("worker %d: drained: %s", w->id, strerror(errno));
}

static void
worker_flushed(void *arg)
{
	struct worker	*w = arg;

	w->flushed = 1;
	event_base_loopbreak(w->base);
}

/* The mailbox, on the worker's own thread. */
static void
worker_mail(evutil_socket_t fd, short what, void *arg)
{
	struct worker	*w = arg;
	struct keyring	*keys;
	uint64_t	 n;
	int		 drain, stop;

	(void)what;
	if (read(fd, &n, sizeof n) == -1 && errno != EAGAIN)
		log_warnx("worker %d: mailbox: %s", w->id, strerror(errno));
	pthread_mutex_lock(&w->mtx);
	keys = w->new_keys;
	w->new_keys = NULL;
	drain = w->drain;
	w->drain = 0;
	stop = w->stop;
	pthread_mutex_unlock(&w->mtx);
	if (keys != NULL)
		proxy_set_keys(w->px, keys);
	if (drain && w->la != NULL) {
		listener_accept_close(w->la);
		w->la = NULL;
		proxy_drain(w->px, worker_drained, w);
	}
	if (stop)
		event_base_loopbreak(w->base);
}

static void *
worker_run(void *arg)
{
	struct worker	*w = arg;
	struct timeval	 tv = { 1, 0 };

	/* NUL bytes, and client_timeout for a request's whole headers. */
	guard_init(w->http, &w->client_tv);
	proxy_thread_init(w->px);
	event_base_dispatch(w->base);
	/* What proxy_stop() answers gets 1 s to reach its clients. */
	proxy_stop(w->px);
	proxy_drain(w->px, worker_flushed, w);
	if (!w->flushed) {
		event_base_loopexit(w->base, &tv);
		event_base_dispatch(w->base);
	}
	/* What is thread-local goes with the thread. */
	listener_accept_close(w->la);
	w->la = NULL;
	proxy_ws_free(w->px);		/* before the connections it holds */
	evhttp_free(w->http);
	w->http = NULL;
	guard_free();
	cache_thread_end(w->cache);
	return (NULL);
}

void
worker_start(struct worker *w)
{
	int	rc;

	if ((rc = pthread_create(&w->thread, NULL, worker_run, w)) != 0)
		fatalx("cannot start a worker thread: %s", strerror(rc));
	w->started = 1;
}

void
worker_join(struct worker *w)
{
	if (w->started)
		pthread_join(w->thread, NULL);
	w->started = 0;
}

void
worker_free(struct worker *w)
{
	if (w == NULL)
		return;
	listener_accept_close(w->la);
	if (w->http != NULL)
		evhttp_free(w->http);
	proxy_free(w->px);
	shared_free(w->shared);
	upstream_free(w->up);
	accesslog_free(w->alog);
	coalesce_box_free(w->box);
	metrics_free(w->metrics);
	keyring_unref(w->new_keys);
	event_free(w->mail);
	close(w->mail_fd);
	event_base_free(w->base);
	pthread_mutex_destroy(&w->mtx);
	free(w);
}
