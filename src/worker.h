/*
 * worker.h - one event loop on a thread of its own, serving clients.
 *
 * Each worker has its own event_base, evhttp, upstream (curl multi) and
 * proxy, and accepts on its own listening socket (SO_REUSEPORT spreads
 * connections over them) or on a shared one handed down by systemd.  The
 * cache, the table of fetches in flight and the keyring are shared.  The
 * main thread steers a worker only through worker_set_keys(),
 * worker_drain() and worker_stop(), which post to it: the worker acts on
 * its own thread.
 */
#ifndef RC_WORKER_H
#define RC_WORKER_H

struct cache;
struct coalesce;
struct conf;
struct keyring;
struct worker;

/*
 * Build a worker on the calling thread, accepting on listen_fd (which it
 * then owns).  sc: its connection to the shared tier (copied), or NULL.
 * drained_fd is an eventfd the worker adds 1 to once a drain is complete.
 */
struct shared_conf;
struct worker	*worker_new(int id, const struct conf *, struct cache *,
		    struct coalesce *, struct keyring *,
		    const struct shared_conf *sc, int listen_fd,
		    int drained_fd);
/* Run its loop on a new thread. */
void		 worker_start(struct worker *);
/* Serve new requests with these keys (takes the reference given). */
void		 worker_set_keys(struct worker *, struct keyring *);
/* Stop accepting; tell drained_fd when nothing is left in flight. */
void		 worker_drain(struct worker *);
/* End what is still in flight, give replies 1 s to go out, then return. */
void		 worker_stop(struct worker *);
/* Wait for its thread to end, then free it (every worker stopped first). */
void		 worker_join(struct worker *);
void		 worker_free(struct worker *);

#endif
