/*
 * shared_link.c - one connection to the shared tier's Redis that keeps
 * itself up (see shared_int.h), on one event loop, through hiredis's
 * libevent adapter.  Never blocks: the address is numeric (conf.c
 * resolved it) and the connect is non-blocking.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <openssl/crypto.h>

#include "log.h"
#include "metrics.h"
#include "shared.h"
#include "shared_int.h"
#include "xmalloc.h"

struct log_limit	shared_lim;

static const struct timeval	shared_backoff_min = { 0, 100 * 1000 };
static const struct timeval	shared_backoff_max = { 5, 0 };

void
shared_link_where(const struct shared_link *l, char *buf, size_t len)
{
	if (l->unix_path != NULL)
		snprintf(buf, len, "unix:%s", l->unix_path);
	else if (strchr(l->host, ':') != NULL)
		snprintf(buf, len, "[%s]:%d", l->host, l->port);
	else
		snprintf(buf, len, "%s:%d", l->host, l->port);
}

const char *
shared_link_err(const struct shared_link *l, const redisReply *r)
{
	if (r == NULL)
		return (l->ac != NULL && l->ac->errstr[0] != '\0' ?
		    l->ac->errstr : "connection lost");
	if (r->type == REDIS_REPLY_ERROR)
		return (r->str);
	return (NULL);
}

static void
shared_link_set_up(struct shared_link *l, int up)
{
	if (l->is_up == up)
		return;
	l->is_up = up;
	if (up)
		l->up(l->arg);
	else
		l->down(l->arg);
}

static void
shared_link_retry_later(struct shared_link *l)
{
	if (l->freeing || evtimer_pending(l->retry, NULL))
		return;
	evtimer_add(l->retry, &l->backoff);
	timeradd(&l->backoff, &l->backoff, &l->backoff);
	if (timercmp(&l->backoff, &shared_backoff_max, >))
		l->backoff = shared_backoff_max;
}

static void
shared_link_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	shared_link_start(arg);
}

static void
shared_link_connected(const redisAsyncContext *ac, int status)
{
	struct shared_link	*l = ac->data;
	char			 where[160];

	if (status == REDIS_OK)
		return;
	/* hiredis frees ac once this returns. */
	l->ac = NULL;
	shared_link_where(l, where, sizeof where);
	log_warnx_limited(&shared_lim, "%s: cannot connect to Redis at %s: "
	    "%s", l->who, where, ac->errstr);
	metrics_shared(l->metrics, MSH_ERROR);
	shared_link_retry_later(l);
}

static void
shared_link_disconnected(const redisAsyncContext *ac, int status)
{
	struct shared_link	*l = ac->data;

	(void)status;
	l->ac = NULL;
	if (l->freeing)
		return;
	shared_link_set_up(l, 0);
	shared_link_retry_later(l);
}

/* AUTH or SELECT: an error leaves the connection, to be tried again. */
static void
shared_link_setup_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct shared_link	*l = priv;
	const char		*why;

	if (r == NULL || (why = shared_link_err(l, r)) == NULL)
		return;
	log_warnx_limited(&shared_lim, "%s: Redis refused the connection's "
	    "set-up (AUTH or SELECT): %s", l->who, why);
	metrics_shared(l->metrics, MSH_ERROR);
	/* The PING queued behind must not make it up. */
	l->refused = 1;
	redisAsyncDisconnect(ac);
}

static void
shared_link_ready_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct shared_link	*l = priv;
	const char		*why;

	if (r == NULL || l->refused ||
	    (ac->c.flags & REDIS_DISCONNECTING) != 0)
		return;
	if ((why = shared_link_err(l, r)) != NULL) {
		log_warnx_limited(&shared_lim, "%s: Redis answers %s", l->who,
		    why);
		metrics_shared(l->metrics, MSH_ERROR);
		redisAsyncDisconnect(ac);
		return;
	}
	l->backoff = shared_backoff_min;
	shared_link_set_up(l, 1);
}

void
shared_link_init(struct shared_link *l, struct event_base *base,
    const struct shared_conf *sc, const char *who, struct metrics *m,
    void (*up)(void *), void (*down)(void *), void *arg)
{
	memset(l, 0, sizeof *l);
	l->base = base;
	l->who = who;
	l->host = sc->host != NULL ? xstrdup(sc->host) : NULL;
	l->unix_path = sc->unix_path != NULL ? xstrdup(sc->unix_path) : NULL;
	l->port = sc->port;
	l->db = sc->db;
	l->password = sc->password != NULL ? xstrdup(sc->password) : NULL;
	l->metrics = m;
	l->up = up;
	l->down = down;
	l->arg = arg;
	l->backoff = shared_backoff_min;
	if ((l->retry = evtimer_new(base, shared_link_retry_cb, l)) == NULL)
		fatalx("out of memory");
}

void
shared_link_start(struct shared_link *l)
{
	redisAsyncContext	*ac;
	char			 where[160];

	ac = l->unix_path != NULL ? redisAsyncConnectUnix(l->unix_path) :
	    redisAsyncConnect(l->host, l->port);
	if (ac == NULL || ac->err) {
		shared_link_where(l, where, sizeof where);
		log_warnx_limited(&shared_lim, "%s: cannot connect to Redis "
		    "at %s: %s", l->who, where, ac != NULL ? ac->errstr :
		    "out of memory");
		if (ac != NULL)
			redisAsyncFree(ac);
		metrics_shared(l->metrics, MSH_ERROR);
		shared_link_retry_later(l);
		return;
	}
	ac->data = l;
	if (redisLibeventAttach(ac, l->base) != REDIS_OK)
		fatalx("%s: cannot attach to the event loop", l->who);
	redisAsyncSetConnectCallback(ac, shared_link_connected);
	redisAsyncSetDisconnectCallback(ac, shared_link_disconnected);
	l->ac = ac;
	l->refused = 0;
	/* Sent once connected, in this order: the PING says all went. */
	if (l->password != NULL)
		redisAsyncCommand(ac, shared_link_setup_cb, l, "AUTH %b",
		    l->password, strlen(l->password));
	if (l->db != 0)
		redisAsyncCommand(ac, shared_link_setup_cb, l, "SELECT %d",
		    l->db);
	redisAsyncCommand(ac, shared_link_ready_cb, l, "PING");
}

void
shared_link_drop(struct shared_link *l)
{
	redisAsyncContext	*ac = l->ac;

	if (ac == NULL)
		return;
	l->ac = NULL;
	shared_link_set_up(l, 0);
	/* Not from inside a hiredis callback: the caller's timer runs this. */
	redisAsyncFree(ac);
	shared_link_retry_later(l);
}

void
shared_link_free(struct shared_link *l)
{
	l->freeing = 1;
	/* Runs every pending callback with no reply, and the disconnect's. */
	if (l->ac != NULL)
		redisAsyncFree(l->ac);
	l->ac = NULL;
	event_free(l->retry);
	if (l->password != NULL) {
		OPENSSL_cleanse(l->password, strlen(l->password));
		free(l->password);
	}
	free(l->host);
	free(l->unix_path);
}
