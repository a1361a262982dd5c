/*
 * coalesce.c - the table of upstream fetches in flight, by cache key.
 *
 * A POSIX binary search tree (tsearch) of fetches; only misses touch it,
 * and it holds only what is in flight right now, so it stays small.
 */
#include "config.h"

#include <search.h>
#include <stdlib.h>
#include <string.h>

#include "coalesce.h"
#include "log.h"

struct coalesce_fetch {
	char			*key;
	size_t			 klen;
	int			 nwaiters;
	TAILQ_HEAD(, coalesce_waiter) waiters;
};

struct coalesce {
	void			*root;		/* tsearch tree of fetches */
	size_t			 n;
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

	if ((co = calloc(1, sizeof *co)) == NULL)
		fatalx("out of memory");
	return (co);
}

void
coalesce_free(struct coalesce *co)
{
	if (co == NULL)
		return;
	if (co->n != 0)
		log_warnx("%zu upstream fetches still in flight at exit", co->n);
	free(co);
}

struct coalesce_fetch *
coalesce_find(struct coalesce *co, const void *key, size_t klen)
{
	struct coalesce_fetch	 probe, **found;

	if (co->root == NULL)
		return (NULL);
	probe.key = (char *)key;
	probe.klen = klen;
	found = tfind(&probe, &co->root, coalesce_cmp);
	return (found != NULL ? *found : NULL);
}

struct coalesce_fetch *
coalesce_begin(struct coalesce *co, const void *key, size_t klen)
{
	struct coalesce_fetch	*f, **slot;

	if ((f = calloc(1, sizeof *f)) == NULL ||
	    (f->key = malloc(klen)) == NULL)
		fatalx("out of memory");
	memcpy(f->key, key, klen);
	f->klen = klen;
	TAILQ_INIT(&f->waiters);
	if ((slot = tsearch(f, &co->root, coalesce_cmp)) == NULL)
		fatalx("out of memory");
	if (*slot != f)
		fatalx("coalesce_begin: a fetch is already in flight");
	co->n++;
	return (f);
}

void
coalesce_wait(struct coalesce_fetch *f, struct coalesce_waiter *w)
{
	w->fetch = f;
	TAILQ_INSERT_TAIL(&f->waiters, w, entry);
	f->nwaiters++;
}

void
coalesce_leave(struct coalesce_waiter *w)
{
	if (w->fetch == NULL)
		return;
	TAILQ_REMOVE(&w->fetch->waiters, w, entry);
	w->fetch->nwaiters--;
	w->fetch = NULL;
}

int
coalesce_waiters(const struct coalesce_fetch *f)
{
	return (f->nwaiters);
}

void
coalesce_end(struct coalesce *co, struct coalesce_fetch *f,
    const struct coalesce_answer *answer)
{
	struct coalesce_waiter	*w;

	if (tdelete(f, &co->root, coalesce_cmp) == NULL)
		fatalx("coalesce_end: unknown fetch");
	co->n--;
	/* A waiter's fn frees the waiter: unlink it first. */
	while ((w = TAILQ_FIRST(&f->waiters)) != NULL) {
		TAILQ_REMOVE(&f->waiters, w, entry);
		f->nwaiters--;
		w->fetch = NULL;
		w->fn(w, answer);
	}
	free(f->key);
	free(f);
}
