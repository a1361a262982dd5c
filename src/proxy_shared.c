/*
 * proxy_shared.c - the proxy's use of the shared tier (shared.h).
 *
 * A cacheable GET this node misses, and leads the fetch of (others on
 * this node wait on it), asks the shared tier first (SHARED).  Found,
 * the entry is answered to it and to those waiting, and kept in this
 * node's cache too; not found, or not in [shared] timeout, the request
 * goes upstream as it would have.  What this node stores goes to the
 * shared tier as well, and a DELETE makes it forget the id.
 */
#include "config.h"

#include <sys/queue.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "cache.h"
#include "proxy_int.h"
#include "shared.h"

/* shared_got_fn: what the shared tier said of pr's key. */
static void
proxy_shared_got(void *arg, const struct cache_entry *e, int lease)
{
	struct proxy_req	*pr = arg;
	struct cache_guard	 g;
	struct coalesce_answer	 a;
	struct evkeyvalq	 hdrs;
	time_t			 at;

	pr->sget = NULL;
	if (e == NULL) {
		/* The fleet's one fetch of it, if lease: others wait on it. */
		pr->leased = lease;
		proxy_forward(pr);	/* pr may be gone */
		return;
	}
	/*
	 * An entry older than this node's knowledge of the id's deletion is
	 * one a DELETE left behind (Redis was out of reach): not served.
	 */
	if (cache_deleted(pr->px->cache, pr->route.id, &at) &&
	    at >= e->stored_at) {
		proxy_forward(pr);	/* pr may be gone */
		return;
	}
	/*
	 * Kept here too, unless a DELETE of the id began since it was
	 * fetched (or since this request asked, if that is earlier).
	 */
	g.id = pr->route.id;
	g.since = e->stored_at < pr->since ? e->stored_at : pr->since;
	cache_put_later(pr->px->cache, pr->key, pr->klen, &g, e->status,
	    e->etag, e->etag_len, e->hdrs, e->hdrs_len, e->body, e->body_len,
	    e->stored_at);

	TAILQ_INIT(&hdrs);
	proxy_replay_headers(&hdrs, e, (long)(time(NULL) - e->stored_at));
	proxy_xcache(&hdrs, "HIT");
	a.status = e->status;
	a.headers = &hdrs;
	a.body = e->body;
	a.body_len = e->body_len;
	pr->result = MC_SHARED;
	proxy_answer(pr, &a);	/* pr is gone */
	evhttp_clear_headers(&hdrs);
}

/* The lease's token: this process's name and the request's serial. */
static void
proxy_lease_token(struct proxy_req *pr, char *buf, size_t len)
{
	snprintf(buf, len, "%s:%llu", pr->px->node,
	    (unsigned long long)pr->serial);
}

int
proxy_ask_shared(struct proxy_req *pr)
{
	char	token[64];

	if (pr->px->shared == NULL)
		return (0);
	/* An answer fetched from here on is refused by a DELETE's guard. */
	pr->since = time(NULL);
	proxy_lease_token(pr, token, sizeof token);
	pr->sget = shared_get(pr->px->shared, pr->route.id, pr->key,
	    pr->klen, token, proxy_shared_got, pr);
	if (pr->sget == NULL)
		return (0);
	proxy_req_set_state(pr, PR_SHARED);
	proxy_watch_client(pr);
	return (1);
}

void
proxy_share(struct proxy *px, const char *id, const char *key,
    size_t klen, const char *etag, const char *hdrs, size_t hlen,
    const char *body, size_t blen, time_t now)
{
	struct cache_entry	e;

	if (px->shared == NULL)
		return;
	memset(&e, 0, sizeof e);
	e.status = 200;
	e.etag = etag;
	e.etag_len = strlen(etag);
	e.hdrs = hdrs;
	e.hdrs_len = hlen;
	e.body = body;
	e.body_len = blen;
	e.stored_at = now;
	shared_put(px->shared, id, key, klen, &e);
}

void
proxy_shared_done(struct proxy_req *pr)
{
	char	token[64];

	shared_get_cancel(pr->sget);
	pr->sget = NULL;
	if (!pr->leased)
		return;
	pr->leased = 0;
	proxy_lease_token(pr, token, sizeof token);
	shared_unlease(pr->px->shared, pr->route.id, pr->key, pr->klen, token);
}

void
proxy_unshare(struct proxy_req *pr, const char *id, int ev)
{
	if (pr->px->shared != NULL)
		shared_delete(pr->px->shared, id, (enum shared_event)ev);
}
