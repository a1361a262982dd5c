/*
 * proxy_state.c - the states a request moves through, and the legal
 * moves between them (see proxy_int.h for the picture).  No I/O: the
 * unit test checks the table and that an illegal move aborts.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>

#include "log.h"
#include "proxy_int.h"

static const char *const proxy_state_names[PR_NSTATES] = {
	[PR_STARTED] = "started",
	[PR_WAITING] = "waiting",
	[PR_SHARED] = "shared",
	[PR_FETCHING] = "fetching",
	[PR_STREAMING] = "streaming",
	[PR_PAUSED] = "paused",
	[PR_ORPHANED] = "orphaned",
	[PR_FINISHED] = "finished",
};

#define TO(s)	(1u << (s))
static const unsigned proxy_state_moves[PR_NSTATES] = {
	[PR_STARTED] = TO(PR_WAITING) | TO(PR_SHARED) | TO(PR_FETCHING) |
	    TO(PR_FINISHED),
	[PR_WAITING] = TO(PR_SHARED) | TO(PR_FETCHING) | TO(PR_FINISHED),
	[PR_SHARED] = TO(PR_FETCHING) | TO(PR_FINISHED),
	[PR_FETCHING] = TO(PR_STREAMING) | TO(PR_ORPHANED) | TO(PR_FINISHED),
	[PR_STREAMING] = TO(PR_PAUSED) | TO(PR_FINISHED),
	[PR_PAUSED] = TO(PR_STREAMING) | TO(PR_FINISHED),
	[PR_ORPHANED] = TO(PR_FINISHED),
	[PR_FINISHED] = 0,
};
#undef TO

const char *
proxy_state_name(enum proxy_state s)
{
	if ((unsigned)s >= PR_NSTATES)
		return ("invalid");
	return (proxy_state_names[s]);
}

int
proxy_state_legal(enum proxy_state from, enum proxy_state to)
{
	if ((unsigned)from >= PR_NSTATES || (unsigned)to >= PR_NSTATES)
		return (0);
	return ((proxy_state_moves[from] & (1u << to)) != 0);
}

int
proxy_state_relaying(enum proxy_state s)
{
	return (s == PR_STREAMING || s == PR_PAUSED);
}

void
proxy_state_move(enum proxy_state *st, enum proxy_state to, uint64_t serial)
{
	if (!proxy_state_legal(*st, to)) {
#ifdef NDEBUG
		log_warnx("req=%llu: illegal state move %s -> %s",
		    (unsigned long long)serial, proxy_state_name(*st),
		    proxy_state_name(to));
#else
		log_warnx("req=%llu: illegal state move %s -> %s; aborting",
		    (unsigned long long)serial, proxy_state_name(*st),
		    proxy_state_name(to));
		abort();
#endif
	}
	log_debug("req=%llu: %s -> %s", (unsigned long long)serial,
	    proxy_state_name(*st), proxy_state_name(to));
	*st = to;
}
