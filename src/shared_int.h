/*
 * shared_int.h - what shared.c (the tier's lookups and stores, on each
 * worker) and shared_follow.c (the stream of deletes, on the main loop)
 * share: one Redis connection that keeps itself up (shared_link.c).
 */
#ifndef RC_SHARED_INT_H
#define RC_SHARED_INT_H

#include <sys/time.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "log.h"

struct event;
struct event_base;
struct metrics;
struct shared_conf;

/*
 * A connection to Redis: connects, sends AUTH and SELECT, and is up once
 * a PING after them is answered; then up(arg).  Lost or refused, down(arg)
 * (if it was up), and it connects again after 100 ms, doubling to 5 s.
 */
struct shared_link {
	struct event_base	*base;
	const char		*who;		/* in its log lines */
	char			*host;		/* or */
	char			*unix_path;
	int			 port;
	int			 db;
	char			*password;
	struct metrics		*metrics;	/* errors count there */
	void			(*up)(void *);
	void			(*down)(void *);
	void			*arg;

	redisAsyncContext	*ac;		/* NULL while there is none */
	int			 is_up;
	int			 refused;	/* this connection's AUTH or SELECT */
	int			 freeing;
	struct event		*retry;
	struct timeval		 backoff;
};

void	shared_link_init(struct shared_link *, struct event_base *,
	    const struct shared_conf *, const char *who, struct metrics *,
	    void (*up)(void *), void (*down)(void *), void *arg);
/* Connect now (then whenever it must). */
void	shared_link_start(struct shared_link *);
/* Drop the connection (pending callbacks run with no reply), try again. */
void	shared_link_drop(struct shared_link *);
void	shared_link_free(struct shared_link *);
/* "host:port" or "unix:path", for a log line. */
void	shared_link_where(const struct shared_link *, char *, size_t);
/* An error reply's text (Redis's own words, never what was sent), or NULL. */
const char *shared_link_err(const struct shared_link *, const redisReply *);

extern struct log_limit	shared_lim;

#endif
