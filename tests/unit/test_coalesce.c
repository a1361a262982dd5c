/*
 * Unit tests: coalesce.c's contract (coalesce.h).  One fetch per key and
 * every waiter gets its answer, or NULL when it failed; a waiter that
 * left is never called; coalesce_detach_id() sends later requests to a
 * fresh fetch; waiters on other event loops get a copy on their own loop
 * (and thread).  Run under ASan, the copies and boxes are checked for
 * leaks and for use after free.
 */
#include "config.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "../../src/log.c"
#include "../../src/xmalloc.c"
#include "../../src/coalesce.c"
#include "tap.h"

/* A request waiting, as the proxy embeds its waiter. */
struct req {
	struct coalesce_waiter	 w;
	int			 called;
	int			 order;		/* called 1st, 2nd, ... */
	const struct coalesce_answer *a;	/* what it got, as given */
	int			 status;	/* ... and its content */
	char			 body[64];
	char			 hdr[64];
	pthread_t		 thread;	/* where fn ran */
	int			 free_me;	/* fn frees the request */
	/* fn joins this key, as a waiter that fetches for itself would. */
	const char		*rejoin;
	struct coalesce_fetch	*rejoined;
	struct event_base	*loop;		/* fn stops it, if set */
};

static struct coalesce	*co;
static int		 ncalls;

static void
got(struct coalesce_waiter *w, const struct coalesce_answer *a)
{
	struct req	*r = (struct req *)(void *)w;
	const char	*h;

	r->called++;
	/* Atomic: test_threads' waiters are called on threads of their own. */
	r->order = __atomic_add_fetch(&ncalls, 1, __ATOMIC_RELAXED);
	r->a = a;
	r->thread = pthread_self();
	if (a != NULL) {
		r->status = a->status;
		snprintf(r->body, sizeof r->body, "%.*s", (int)a->body_len,
		    a->body != NULL ? a->body : "");
		h = evhttp_find_header(a->headers, "X-Test");
		snprintf(r->hdr, sizeof r->hdr, "%s", h != NULL ? h : "");
	}
	if (r->rejoin != NULL)
		r->rejoined = coalesce_join(co, r->rejoin, strlen(r->rejoin),
		    &r->w);
	if (r->loop != NULL)
		event_base_loopbreak(r->loop);
	if (r->free_me)
		free(r);
}

static void
req_init(struct req *r, struct coalesce_box *box)
{
	memset(r, 0, sizeof *r);
	r->w.fn = got;
	r->w.box = box;
}

static struct req *
req_new(struct coalesce_box *box)
{
	struct req	*r;

	if ((r = malloc(sizeof *r)) == NULL)
		abort();
	req_init(r, box);
	r->free_me = 1;
	return (r);
}

/* An answer whose every byte is the caller's, to be changed after. */
struct held {
	struct evkeyvalq	 headers;
	char			*body;
	struct coalesce_answer	 a;
};

static const struct coalesce_answer *
held_new(struct held *h, int status, const char *body, const char *hdr)
{
	TAILQ_INIT(&h->headers);
	evhttp_add_header(&h->headers, "X-Test", hdr);
	h->body = body != NULL ? strdup(body) : NULL;
	h->a.status = status;
	h->a.headers = &h->headers;
	h->a.body = h->body;
	h->a.body_len = body != NULL ? strlen(body) : 0;
	return (&h->a);
}

/* Gone, as the caller's own answer is once coalesce_end() returns. */
static void
held_free(struct held *h)
{
	evhttp_clear_headers(&h->headers);
	free(h->body);
	memset(h, 0, sizeof *h);
}

/* Run what is ready on a loop (a box's eventfd), without waiting. */
static void
run(struct event_base *base)
{
	event_base_loop(base, EVLOOP_NONBLOCK);
}

static struct coalesce_fetch *
join(const char *key, struct req *r)
{
	return (coalesce_join(co, key, strlen(key), &r->w));
}

/* A cache key as route_cache_key() makes it: tenant, kind, id, query. */
static char *
mkkey(const char *tenant, char kind, const char *id, const char *query,
    size_t *len)
{
	char	*k;
	int	 n;

	n = asprintf(&k, "%s%c%c%c%s%c%s", tenant, '\0', kind, '\0', id,
	    '\0', query);
	if (n == -1)
		abort();
	*len = (size_t)n;
	return (k);
}

static void
test_one_answer(struct coalesce_box *box)
{
	struct coalesce_fetch	*f, *g;
	struct req		 lead, w[3];
	struct held		 h;
	const struct coalesce_answer *a;
	int			 i, same = 1, order = 1;

	req_init(&lead, box);
	f = join("one", &lead);
	ok(f != NULL, "one answer: the first request leads a fetch");
	for (i = 0; i < 3; i++) {
		req_init(&w[i], box);
		ok(join("one", &w[i]) == NULL && w[i].w.joined,
		    "one answer: request %d on the same key waits", i + 2);
	}
	ok(coalesce_waiters(co, f) == 3, "one answer: 3 waiters counted");
	a = held_new(&h, 200, "{\"id\":\"resp_1\"}", "one");
	ncalls = 0;
	/* The first waiter, answered, joins again: a fetch of its own. */
	w[0].rejoin = "one";
	coalesce_end(co, f, a);
	for (i = 0; i < 3; i++) {
		same &= w[i].called == 1 && w[i].a == a && !w[i].w.joined;
		order &= w[i].order == i + 1;
	}
	ok(same, "one answer: every waiter of this loop got it, at once");
	ok(order, "one answer: in the order they came");
	ok(lead.called == 0, "one answer: the leader is not a waiter");
	/*
	 * A new fetch, not a wait on the one ending (a join that waits gives
	 * NULL).  Not g != f: f is freed before the fan-out, and an allocator
	 * without a quarantine (TSan's) gives g the same address.
	 */
	g = w[0].rejoined;
	ok(g != NULL,
	    "one answer: a join from inside the fan-out starts a new fetch");
	req_init(&w[1], box);
	ok(join("one", &w[1]) == NULL,
	    "one answer: and later requests wait on that one");
	if (g != NULL)
		coalesce_end(co, g, a);
	ok(w[1].called == 1 && w[1].a == a, "one answer: which answers them");
	held_free(&h);
	ok(co->n == 0 && co->root == NULL, "one answer: the table is empty");
}

static void
test_distinct_keys(struct coalesce_box *box)
{
	static const struct {
		const char	*k;
		size_t		 len;
	} keys[] = {
		{ "ab", 2 }, { "abc", 3 }, { "abd", 3 }, { "abc\0", 4 },
		{ "\0abc", 4 }, { "t1\0r\0resp_1\0", 12 },
		{ "t2\0r\0resp_1\0", 12 }, { "t1\0i\0resp_1\0", 12 },
	};
	struct coalesce_fetch	*f[8];
	struct req		 r[8], w;
	size_t			 i, n = sizeof keys / sizeof keys[0];
	int			 all = 1;

	for (i = 0; i < n; i++) {
		req_init(&r[i], box);
		f[i] = coalesce_join(co, keys[i].k, keys[i].len, &r[i].w);
		all &= f[i] != NULL;
	}
	ok(all && co->n == n, "distinct keys: each starts its own fetch "
	    "(prefixes, NULs, tenants, kinds)");
	req_init(&w, box);
	ok(coalesce_join(co, "abc\0", 4, &w.w) == NULL &&
	    coalesce_waiters(co, f[3]) == 1 && coalesce_waiters(co, f[1]) == 0,
	    "distinct keys: a waiter joins the one its key names exactly");
	for (i = 0; i < n; i++)
		coalesce_end(co, f[i], NULL);
	ok(w.called == 1 && w.a == NULL && co->n == 0,
	    "distinct keys: ending them all answers only that waiter");
}

static void
test_leave(struct coalesce_box *box, struct event_base *base2,
    struct coalesce_box *box2)
{
	struct coalesce_fetch	*f;
	struct req		 lead, stay, gone, never, far, far2;
	struct held		 h;
	const struct coalesce_answer *a;

	req_init(&lead, box);
	req_init(&stay, box);
	req_init(&gone, box);
	req_init(&never, box);
	f = join("leave", &lead);
	join("leave", &gone);
	join("leave", &stay);
	coalesce_leave(&gone.w);
	ok(!gone.w.joined && coalesce_waiters(co, f) == 1,
	    "leave: the waiter is no longer counted");
	coalesce_leave(&gone.w);
	coalesce_leave(&never.w);
	ok(coalesce_waiters(co, f) == 1,
	    "leave: twice, or never having joined, is harmless");
	a = held_new(&h, 200, "x", "leave");
	coalesce_end(co, f, a);
	ok(gone.called == 0 && stay.called == 1,
	    "leave: the waiter that left is not called; the other is");
	coalesce_leave(&stay.w);
	ok(stay.called == 1, "leave: after its answer, harmless");

	/* Another loop's waiter leaves before the end: no copy is made. */
	f = join("leave", &lead);
	req_init(&far, box2);
	join("leave", &far);
	coalesce_leave(&far.w);
	coalesce_end(co, f, a);
	run(base2);
	ok(far.called == 0, "leave: another loop's waiter that left first "
	    "is not called");

	/* It leaves with the answer queued in its box: the copy goes too. */
	f = join("leave", &lead);
	req_init(&far, box2);
	req_init(&far2, box2);
	join("leave", &far);
	join("leave", &far2);
	coalesce_end(co, f, a);
	ok(far.called == 0 && far.w.queued && far.w.copy != NULL &&
	    far.w.copy->refs == 2,
	    "leave: another loop's answer waits in its box, one copy shared");
	coalesce_leave(&far.w);
	ok(!far.w.queued && far2.w.copy->refs == 1,
	    "leave: leaving drops the waiter's share of the copy");
	coalesce_leave(&far2.w);
	run(base2);
	ok(far.called == 0 && far2.called == 0 &&
	    TAILQ_EMPTY(&box2->inbox),
	    "leave: waiters that left with the answer queued are not called "
	    "(and under ASan, the copy is freed)");
	held_free(&h);
}

static void
test_failure(struct coalesce_box *box, struct event_base *base2,
    struct coalesce_box *box2)
{
	struct coalesce_fetch	*f;
	struct req		 lead, near, far;

	req_init(&lead, box);
	req_init(&near, box);
	req_init(&far, box2);
	f = join("fail", &lead);
	join("fail", &near);
	join("fail", &far);
	coalesce_end(co, f, NULL);
	ok(near.called == 1 && near.a == NULL,
	    "failure: this loop's waiter gets NULL at once");
	ok(far.called == 0 && far.w.copy == NULL,
	    "failure: another loop's waiter gets nothing yet");
	run(base2);
	ok(far.called == 1 && far.a == NULL,
	    "failure: and NULL on its own loop");
	ok(!near.w.joined && !far.w.joined, "failure: neither waits any more");
}

static void
test_cross_loop(struct coalesce_box *box, struct event_base *base2,
    struct coalesce_box *box2)
{
	struct coalesce_fetch	*f;
	struct req		 lead, near, far[2];
	struct held		 h;
	const struct coalesce_answer *a;

	req_init(&lead, box);
	req_init(&near, box);
	req_init(&far[0], box2);
	req_init(&far[1], box2);
	f = join("far", &lead);
	join("far", &far[0]);
	join("far", &near);
	join("far", &far[1]);
	a = held_new(&h, 201, "the body", "far");
	coalesce_end(co, f, a);
	/* The caller's answer is gone once coalesce_end() returns. */
	held_free(&h);
	ok(near.called == 1 && far[0].called == 0 && far[1].called == 0,
	    "other loop: only this loop's waiter is called at once");
	run(base2);
	ok(far[0].called == 1 && far[1].called == 1 &&
	    far[0].order < far[1].order, "other loop: its waiters are called "
	    "on their loop, in order");
	ok(far[0].a != a && far[0].a == far[1].a,
	    "other loop: they share one copy of the answer");
	ok(far[0].status == 201 && strcmp(far[0].body, "the body") == 0 &&
	    strcmp(far[0].hdr, "far") == 0 && far[1].status == 201 &&
	    strcmp(far[1].body, "the body") == 0,
	    "other loop: the copy holds status, headers and body");

	/* An empty body may come with no buffer at all. */
	req_init(&far[0], box2);
	f = join("far", &lead);
	join("far", &far[0]);
	a = held_new(&h, 204, NULL, "empty");
	coalesce_end(co, f, a);
	held_free(&h);
	run(base2);
	ok(far[0].called == 1 && far[0].status == 204 &&
	    far[0].body[0] == '\0' && strcmp(far[0].hdr, "empty") == 0,
	    "other loop: an empty body with no buffer is copied");
}

static void
test_free_in_fn(struct coalesce_box *box, struct event_base *base2,
    struct coalesce_box *box2)
{
	struct coalesce_fetch	*f;
	struct req		 lead;
	struct held		 h;
	int			 i, before;

	req_init(&lead, box);
	f = join("free", &lead);
	for (i = 0; i < 4; i++)
		join("free", req_new(i % 2 ? box2 : box));
	before = ncalls;
	coalesce_end(co, f, held_new(&h, 200, "b", "free"));
	held_free(&h);
	run(base2);
	ok(ncalls - before == 4, "free in fn: every waiter that frees itself "
	    "in its fn was called once (ASan: no use after free)");
}

static void
test_detach(struct coalesce_box *box, struct event_base *base2,
    struct coalesce_box *box2)
{
	struct coalesce_fetch	*f1, *f2, *fi, *fo, *fq, *fl[70];
	struct req		 lead, w1, far, w2, w3, lr[70], late;
	struct held		 h1, h2;
	char			*k, *ki, *ko, *kq, *kl[70], tenant[16];
	size_t			 len, leni, leno, lenq, lenl[70], i;
	int			 all;

	k = mkkey("t1", 'r', "resp_1", "", &len);
	ki = mkkey("t2", 'i', "resp_1", "limit=2", &leni);
	ko = mkkey("t1", 'r', "resp_12", "", &leno);
	kq = mkkey("t1", 'r', "resp_1", "include=x", &lenq);
	req_init(&lead, box);
	req_init(&w1, box);
	req_init(&far, box2);
	f1 = coalesce_join(co, k, len, &lead.w);
	coalesce_join(co, k, len, &w1.w);
	coalesce_join(co, k, len, &far.w);
	fi = coalesce_join(co, ki, leni, &lead.w);
	fo = coalesce_join(co, ko, leno, &lead.w);
	fq = coalesce_join(co, kq, lenq, &lead.w);
	ok(f1 && fi && fo && fq && co->n == 4, "detach: four fetches");

	coalesce_detach_id(co, "resp_1");
	ok(f1->detached && fi->detached && fq->detached && !fo->detached &&
	    co->n == 1, "detach: every tenant's and kind's fetch of the id "
	    "leaves the table, not another id's");
	req_init(&w2, box);
	f2 = coalesce_join(co, k, len, &w2.w);
	ok(f2 != NULL && f2 != f1,
	    "detach: a later request for the id starts a fresh fetch");
	req_init(&w3, box);
	ok(coalesce_join(co, k, len, &w3.w) == NULL &&
	    coalesce_waiters(co, f2) == 1 && coalesce_waiters(co, f1) == 2,
	    "detach: and those after it wait on the fresh one");

	coalesce_end(co, f1, held_new(&h1, 200, "before", "1"));
	held_free(&h1);
	run(base2);
	ok(w1.called == 1 && strcmp(w1.body, "before") == 0 &&
	    far.called == 1 && strcmp(far.body, "before") == 0,
	    "detach: the earlier waiters still get the earlier answer");
	ok(w3.called == 0 && co->n == 2,
	    "detach: ending it leaves the fresh fetch in the table");
	coalesce_end(co, f2, held_new(&h2, 200, "after", "2"));
	held_free(&h2);
	ok(w3.called == 1 && strcmp(w3.body, "after") == 0,
	    "detach: the later waiter gets the fresh answer");
	coalesce_end(co, fi, NULL);
	coalesce_end(co, fo, NULL);
	coalesce_end(co, fq, NULL);
	ok(co->n == 0 && co->root == NULL, "detach: the table is empty");

	/* More fetches of one id than one walk collects (64). */
	for (i = 0; i < 70; i++) {
		snprintf(tenant, sizeof tenant, "t%zu", i);
		kl[i] = mkkey(tenant, i % 2 ? 'i' : 'r', "resp_9", "",
		    &lenl[i]);
		req_init(&lr[i], box);
		fl[i] = coalesce_join(co, kl[i], lenl[i], &lr[i].w);
	}
	coalesce_detach_id(co, "resp_9");
	all = co->n == 0;
	for (i = 0; i < 70; i++)
		all &= fl[i]->detached;
	ok(all, "detach: all 70 fetches of the id leave the table");
	req_init(&late, box);
	f2 = coalesce_join(co, kl[69], lenl[69], &late.w);
	ok(f2 != NULL && f2 != fl[69], "detach: and a request starts afresh");
	if (f2 != NULL)
		coalesce_end(co, f2, NULL);
	for (i = 0; i < 70; i++) {
		coalesce_end(co, fl[i], NULL);
		free(kl[i]);
	}
	ok(co->n == 0 && co->root == NULL, "detach: the table is empty");
	coalesce_detach_id(co, "resp_none");
	ok(co->n == 0, "detach: an id with no fetch is harmless");
	free(k);
	free(ki);
	free(ko);
	free(kq);
}

/* More loops than coalesce_end() keeps wake slots for (16). */
static void
test_many_loops(struct coalesce_box *box)
{
	struct event_base	*bases[20];
	struct coalesce_box	*boxes[20];
	struct coalesce_fetch	*f;
	struct req		 lead, w[20];
	struct held		 h;
	int			 i, all = 1;

	req_init(&lead, box);
	f = join("many", &lead);
	for (i = 0; i < 20; i++) {
		if ((bases[i] = event_base_new()) == NULL)
			abort();
		boxes[i] = coalesce_box_new(co, bases[i]);
		req_init(&w[i], boxes[i]);
		join("many", &w[i]);
	}
	coalesce_end(co, f, held_new(&h, 200, "many", "many"));
	held_free(&h);
	for (i = 0; i < 20; i++) {
		run(bases[i]);
		all &= w[i].called == 1 && strcmp(w[i].body, "many") == 0;
	}
	ok(all, "many loops: each of 20 loops is woken and answered");
	for (i = 0; i < 20; i++) {
		coalesce_box_free(boxes[i]);
		event_base_free(bases[i]);
	}
}

/* Waiters on their own threads, as workers are. */
#define NTHREADS	4
static pthread_barrier_t	threads_joined;

struct waiter_thread {
	pthread_t		 id;
	struct event_base	*base;
	struct coalesce_box	*box;
	struct req		 r;
};

static void *
waiter_main(void *arg)
{
	struct waiter_thread	*t = arg;
	struct timeval		 deadline = { 5, 0 };

	req_init(&t->r, t->box);
	t->r.loop = t->base;
	if (join("threads", &t->r) != NULL)
		abort();
	pthread_barrier_wait(&threads_joined);
	event_base_loopexit(t->base, &deadline);
	event_base_dispatch(t->base);
	return (NULL);
}

static void
test_threads(struct coalesce_box *box)
{
	struct waiter_thread	 t[NTHREADS];
	struct coalesce_fetch	*f;
	struct req		 lead;
	struct held		 h;
	int			 i, all = 1;

	req_init(&lead, box);
	f = join("threads", &lead);
	pthread_barrier_init(&threads_joined, NULL, NTHREADS + 1);
	for (i = 0; i < NTHREADS; i++) {
		if ((t[i].base = event_base_new()) == NULL)
			abort();
		t[i].box = coalesce_box_new(co, t[i].base);
		if (pthread_create(&t[i].id, NULL, waiter_main, &t[i]) != 0)
			abort();
	}
	pthread_barrier_wait(&threads_joined);
	ok(coalesce_waiters(co, f) == NTHREADS,
	    "threads: %d waiters from %d threads", NTHREADS, NTHREADS);
	coalesce_end(co, f, held_new(&h, 200, "threads", "threads"));
	held_free(&h);
	for (i = 0; i < NTHREADS; i++) {
		pthread_join(t[i].id, NULL);
		all &= t[i].r.called == 1 &&
		    pthread_equal(t[i].r.thread, t[i].id) &&
		    strcmp(t[i].r.body, "threads") == 0;
		coalesce_box_free(t[i].box);
		event_base_free(t[i].base);
	}
	ok(all, "threads: each waiter got the answer on its own thread");
	pthread_barrier_destroy(&threads_joined);
}

int
main(void)
{
	struct event_base	*base, *base2;
	struct coalesce_box	*box, *box2;

	if ((base = event_base_new()) == NULL ||
	    (base2 = event_base_new()) == NULL)
		abort();
	co = coalesce_new();
	box = coalesce_box_new(co, base);
	box2 = coalesce_box_new(co, base2);

	test_one_answer(box);
	test_distinct_keys(box);
	test_leave(box, base2, box2);
	test_failure(box, base2, box2);
	test_cross_loop(box, base2, box2);
	test_free_in_fn(box, base2, box2);
	test_detach(box, base2, box2);
	test_many_loops(box);
	test_threads(box);

	run(base);
	ok(TAILQ_EMPTY(&box->inbox) && TAILQ_EMPTY(&box2->inbox) &&
	    co->n == 0, "at the end: no fetch and no answer left");
	coalesce_box_free(box);
	coalesce_box_free(box2);
	coalesce_free(co);
	event_base_free(base);
	event_base_free(base2);
	return (done_testing());
}
