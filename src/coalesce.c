/*
 * coalesce.c - the table of upstream fetches in flight, by cache key.
 *
 * A POSIX binary search tree (tsearch) of fetches under one mutex; only
 * misses touch it, and it holds only what is in flight right now, so it
 * stays small.  An answer for a waiter on another event loop is copied
 * once, shared by reference, and queued in that loop's box; an eventfd
 * wakes the loop, which hands it over on its own thread.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <search.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "coalesce.h"
#include "log.h"
#include "xmalloc.h"
#include "route.h"

struct coalesce_fetch {
	char			*key;
	size_t			 klen;
	struct coalesce_box	*box;		/* the leader's event loop */
	int			 detached;	/* out of the table: see below */
	int			 nwaiters;
	TAILQ_HEAD(, coalesce_waiter) waiters;
};

TAILQ_HEAD(coalesce_waiters, coalesce_waiter);

struct coalesce {
	pthread_mutex_t		 mtx;
	void			*root;		/* tsearch tree of fetches */
	size_t			 n;
};

struct coalesce_box {
	struct coalesce		*co;
	int			 efd;
	struct event		*ev;
	struct coalesce_waiters	 inbox;		/* under co->mtx */
};

/* An answer copied for waiters on other loops; the last one frees it. */
struct coalesce_copy {
	int			 refs;		/* under co->mtx */
	struct coalesce_answer	 a;
	struct evkeyvalq	 headers;
	char			*body;
};

static int
coalesce_cmp(const void *a, const void *b)
{
	const struct coalesce_fetch	*fa = a, *fb = b;
	size_t				 n;
	int				 c;

	n = fa->klen < fb->klen ? fa->klen : fb->klen;
	if ((c = memcmp(fa->key, fb->key, n)) != 0)
		return (c);
	return (fa->klen < fb->klen ? -1 : fa->klen > fb->klen);
}

struct coalesce *
coalesce_new(void)
{
	struct coalesce	*co;

	co = xcalloc(1, sizeof *co);
	pthread_mutex_init(&co->mtx, NULL);
	return (co);
}

void
coalesce_free(struct coalesce *co)
{
	if (co == NULL)
		return;
	if (co->n != 0)
		log_warnx("%zu upstream fetches still in flight at exit", co->n);
	pthread_mutex_destroy(&co->mtx);
	free(co);
}

static struct coalesce_copy *
coalesce_copy_new(const struct coalesce_answer *a)
{
	struct coalesce_copy	*c;
	struct evkeyval		*h;

	c = xcalloc(1, sizeof *c);
	c->body = xmalloc(a->body_len + 1);
	TAILQ_INIT(&c->headers);
	TAILQ_FOREACH(h, a->headers, next)
		if (evhttp_add_header(&c->headers, h->key, h->value) == -1)
			fatalx("out of memory");
	if (a->body_len > 0)		/* an empty body may have no buffer */
		memcpy(c->body, a->body, a->body_len);
	c->a.status = a->status;
	c->a.headers = &c->headers;
	c->a.body = c->body;
	c->a.body_len = a->body_len;
	return (c);
}

/* Drop a reference to a copy; call with co->mtx held. */
static struct coalesce_copy *
coalesce_copy_drop(struct coalesce_copy *c)
{
	if (c == NULL || --c->refs > 0)
		return (NULL);
	return (c);		/* the caller frees it, unlocked */
}

static void
coalesce_copy_free(struct coalesce_copy *c)
{
	if (c == NULL)
		return;
	evhttp_clear_headers(&c->headers);
	free(c->body);
	free(c);
}

/* The box's eventfd: answers arrived for waiters of this loop. */
static void
coalesce_box_read(evutil_socket_t fd, short what, void *arg)
{
	struct coalesce_box	*box = arg;
	struct coalesce		*co = box->co;
	struct coalesce_waiter	*w;
	struct coalesce_copy	*c, *spent;
	uint64_t		 n;

	(void)what;
	if (read(fd, &n, sizeof n) == -1 && errno != EAGAIN)
		log_warnx("coalesce: read: %s", strerror(errno));
	for (;;) {
		pthread_mutex_lock(&co->mtx);
		if ((w = TAILQ_FIRST(&box->inbox)) != NULL) {
			TAILQ_REMOVE(&box->inbox, w, entry);
			w->queued = 0;
			c = w->copy;
			w->copy = NULL;
		}
		pthread_mutex_unlock(&co->mtx);
		if (w == NULL)
			break;
		/* w->fn may free w. */
		w->joined = 0;
		w->fn(w, c != NULL ? &c->a : NULL);
		pthread_mutex_lock(&co->mtx);
		spent = coalesce_copy_drop(c);
		pthread_mutex_unlock(&co->mtx);
		coalesce_copy_free(spent);
	}
}

struct coalesce_box *
coalesce_box_new(struct coalesce *co, struct event_base *base)
{
	struct coalesce_box	*box;

	box = xcalloc(1, sizeof *box);
	box->co = co;
	TAILQ_INIT(&box->inbox);
	if ((box->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1)
		fatalx("eventfd: %s", strerror(errno));
	if ((box->ev = event_new(base, box->efd, EV_READ | EV_PERSIST,
	    coalesce_box_read, box)) == NULL || event_add(box->ev, NULL) == -1)
		fatalx("cannot watch a coalescing box");
	return (box);
}

void
coalesce_box_free(struct coalesce_box *box)
{
	if (box == NULL)
		return;
	if (!TAILQ_EMPTY(&box->inbox))
		log_warnx("coalesce: answers left undelivered at exit");
	event_free(box->ev);
	close(box->efd);
	free(box);
}

struct coalesce_fetch *
coalesce_join(struct coalesce *co, const void *key, size_t klen,
    struct coalesce_waiter *w)
{
	struct coalesce_fetch	 probe, *f, **slot;

	probe.key = (char *)key;
	probe.klen = klen;
	pthread_mutex_lock(&co->mtx);
	if ((slot = tfind(&probe, &co->root, coalesce_cmp)) != NULL) {
		f = *slot;
		w->fetch = f;
		w->joined = 1;
		TAILQ_INSERT_TAIL(&f->waiters, w, entry);
		f->nwaiters++;
		pthread_mutex_unlock(&co->mtx);
		return (NULL);
	}
	f = xcalloc(1, sizeof *f);
	f->key = xmalloc(klen);
	memcpy(f->key, key, klen);
	f->klen = klen;
	f->box = w->box;
	TAILQ_INIT(&f->waiters);
	if ((slot = tsearch(f, &co->root, coalesce_cmp)) == NULL)
		fatalx("out of memory");
	co->n++;
	pthread_mutex_unlock(&co->mtx);
	return (f);
}

void
coalesce_leave(struct coalesce_waiter *w)
{
	struct coalesce		*co;
	struct coalesce_copy	*spent = NULL;

	/* Not waiting: nothing to lock (hits, and most requests, end here). */
	if (!w->joined)
		return;
	co = w->box->co;
	pthread_mutex_lock(&co->mtx);
	if (w->fetch != NULL) {
		TAILQ_REMOVE(&w->fetch->waiters, w, entry);
		w->fetch->nwaiters--;
		w->fetch = NULL;
	} else if (w->queued) {
		TAILQ_REMOVE(&w->box->inbox, w, entry);
		w->queued = 0;
		spent = coalesce_copy_drop(w->copy);
		w->copy = NULL;
	}
	pthread_mutex_unlock(&co->mtx);
	w->joined = 0;
	coalesce_copy_free(spent);
}

int
coalesce_waiters(struct coalesce *co, const struct coalesce_fetch *f)
{
	int	n;

	pthread_mutex_lock(&co->mtx);
	n = f->nwaiters;
	pthread_mutex_unlock(&co->mtx);
	return (n);
}

void
coalesce_end(struct coalesce *co, struct coalesce_fetch *f,
    const struct coalesce_answer *answer)
{
	struct coalesce_waiters	 here;
	struct coalesce_waiter	*w;
	struct coalesce_copy	*copy = NULL;
	struct coalesce_box	*wake[16];
	size_t			 nwake = 0, i;
	uint64_t		 one = 1;
	int			 given = 0;

	TAILQ_INIT(&here);
	pthread_mutex_lock(&co->mtx);
	/*
	 * The copy for other loops is made unlocked (an answer may be large),
	 * while the fetch stays in the table: waiters may come and go
	 * meanwhile, so look again once locked.  Once the fetch is out of the
	 * table, no waiter can come.
	 */
	while (answer != NULL && copy == NULL) {
		TAILQ_FOREACH(w, &f->waiters, entry)
			if (w->box != f->box)
				break;
		if (w == NULL)
			break;
		pthread_mutex_unlock(&co->mtx);
		copy = coalesce_copy_new(answer);
		pthread_mutex_lock(&co->mtx);
	}
	if (!f->detached) {
		if (tdelete(f, &co->root, coalesce_cmp) == NULL)
			fatalx("coalesce_end: unknown fetch");
		co->n--;
	}
	while ((w = TAILQ_FIRST(&f->waiters)) != NULL) {
		TAILQ_REMOVE(&f->waiters, w, entry);
		w->fetch = NULL;
		if (w->box == f->box) {
			TAILQ_INSERT_TAIL(&here, w, entry);
			continue;
		}
		if (copy != NULL) {
			copy->refs++;
			given = 1;
		}
		w->copy = copy;
		w->queued = 1;
		TAILQ_INSERT_TAIL(&w->box->inbox, w, entry);
		for (i = 0; i < nwake && wake[i] != w->box; i++)
			;
		if (i == nwake && nwake < sizeof wake / sizeof wake[0])
			wake[nwake++] = w->box;
		else if (i == nwake)	/* more loops than slots: wake anyway */
			if (write(w->box->efd, &one, sizeof one) == -1)
				log_warnx("coalesce: wake: %s", strerror(errno));
	}
	pthread_mutex_unlock(&co->mtx);
	if (!given)
		coalesce_copy_free(copy);	/* its waiters all left */
	for (i = 0; i < nwake; i++)
		if (write(wake[i]->efd, &one, sizeof one) == -1)
			log_warnx("coalesce: wake: %s", strerror(errno));
	free(f->key);
	free(f);
	/* A waiter's fn frees the waiter: unlinked first. */
	while ((w = TAILQ_FIRST(&here)) != NULL) {
		TAILQ_REMOVE(&here, w, entry);
		w->joined = 0;
		w->fn(w, answer);
	}
}

/*
 * 1 if a cache key, "<tenant>\0<kind>\0<id>\0<query>", is one of id's
 * answers (ROUTE_KINDS_ANSWERS).
 */
static int
coalesce_key_of(const struct coalesce_fetch *f, const char *id, size_t idlen)
{
	const char	*p = memchr(f->key, '\0', f->klen);
	const char	*end = f->key + f->klen;

	if (p == NULL || end - p < (ptrdiff_t)(idlen + 4) ||
	    p[1] == '\0' || strchr(ROUTE_KINDS_ANSWERS, p[1]) == NULL ||
	    p[2] != '\0')
		return (0);
	return (memcmp(p + 3, id, idlen) == 0 && p[3 + idlen] == '\0');
}

struct coalesce_walk {
	const char		*id;
	size_t			 idlen;
	struct coalesce_fetch	*found[64];
	size_t			 n;
};

static void
coalesce_walk_id(const void *node, VISIT which, void *arg)
{
	struct coalesce_fetch	*f = *(struct coalesce_fetch *const *)node;
	struct coalesce_walk	*cw = arg;

	if ((which == postorder || which == leaf) &&
	    cw->n < sizeof cw->found / sizeof cw->found[0] &&
	    coalesce_key_of(f, cw->id, cw->idlen))
		cw->found[cw->n++] = f;
}

void
coalesce_detach_id(struct coalesce *co, const char *id)
{
	struct coalesce_walk	cw;
	size_t			i;

	memset(&cw, 0, sizeof cw);
	cw.id = id;
	cw.idlen = strlen(id);
	pthread_mutex_lock(&co->mtx);
	do {
		cw.n = 0;
		twalk_r(co->root, coalesce_walk_id, &cw);
		for (i = 0; i < cw.n; i++) {
			if (tdelete(cw.found[i], &co->root, coalesce_cmp) ==
			    NULL)
				fatalx("coalesce_detach_id: unknown fetch");
			cw.found[i]->detached = 1;
			co->n--;
		}
	} while (cw.n == sizeof cw.found / sizeof cw.found[0]);
	pthread_mutex_unlock(&co->mtx);
}
