/*
 * Unit tests: a request's state machine (proxy_state.c): every legal move
 * is allowed, every other one is refused, and an illegal move aborts.
 */
#include "config.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../src/log.c"
#include "../../src/xmalloc.c"
#include "../../src/proxy_state.c"
#include "tap.h"

/* The picture in proxy_int.h, written out once more. */
static const struct {
	enum proxy_state	from, to;
} legal[] = {
	{ PR_STARTED, PR_WAITING }, { PR_STARTED, PR_SHARED },
	{ PR_STARTED, PR_FETCHING }, { PR_STARTED, PR_FINISHED },
	{ PR_WAITING, PR_SHARED }, { PR_WAITING, PR_FETCHING },
	{ PR_WAITING, PR_FINISHED },
	{ PR_SHARED, PR_FETCHING }, { PR_SHARED, PR_FINISHED },
	{ PR_FETCHING, PR_STREAMING }, { PR_FETCHING, PR_ORPHANED },
	{ PR_FETCHING, PR_FINISHED },
	{ PR_STREAMING, PR_PAUSED }, { PR_STREAMING, PR_FINISHED },
	{ PR_PAUSED, PR_STREAMING }, { PR_PAUSED, PR_FINISHED },
	{ PR_ORPHANED, PR_FINISHED },
};

static int
in_picture(enum proxy_state from, enum proxy_state to)
{
	size_t	i;

	for (i = 0; i < sizeof legal / sizeof legal[0]; i++)
		if (legal[i].from == from && legal[i].to == to)
			return (1);
	return (0);
}

/* The signal that ended a child making the move, or 0 if it exited. */
static int
move_in_child(enum proxy_state from, enum proxy_state to)
{
	enum proxy_state	 st = from;
	pid_t			 pid;
	int			 status;

	fflush(stdout);
	if ((pid = fork()) == 0) {
		/* Its error line is expected: keep the TAP output clean. */
		freopen("/dev/null", "w", stderr);
		proxy_state_move(&st, to, 42);
		_exit(st == to ? 0 : 1);
	}
	if (pid == -1 || waitpid(pid, &status, 0) != pid)
		return (-1);
	return (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

int
main(void)
{
	enum proxy_state	 from, to, st;
	int			 agree = 1, n = 0;

	log_init(LOG_ERR);
	for (from = 0; from < PR_NSTATES; from++)
		for (to = 0; to < PR_NSTATES; to++) {
			if (proxy_state_legal(from, to) != in_picture(from, to)) {
				printf("# %s -> %s disagrees with the picture\n",
				    proxy_state_name(from), proxy_state_name(to));
				agree = 0;
			}
			n += proxy_state_legal(from, to);
		}
	ok(agree, "the table allows exactly the moves in proxy_int.h's picture");
	ok(n == (int)(sizeof legal / sizeof legal[0]), "%d legal moves", n);
	ok(!proxy_state_legal(PR_FINISHED, PR_FINISHED),
	    "finishing twice is illegal: a request is counted once");
	ok(!proxy_state_legal(PR_STARTED, PR_STREAMING),
	    "a stream starts only from a fetch");
	ok(!proxy_state_legal(PR_ORPHANED, PR_STREAMING),
	    "a request whose client left never streams");
	ok(!proxy_state_legal(PR_WAITING, PR_ORPHANED),
	    "a waiter whose client left ends; it holds no fetch");
	ok(!proxy_state_legal(PR_NSTATES, PR_FINISHED) &&
	    !proxy_state_legal(PR_STARTED, PR_NSTATES),
	    "states out of range are refused");
	ok(proxy_state_relaying(PR_STREAMING) && proxy_state_relaying(PR_PAUSED) &&
	    !proxy_state_relaying(PR_FETCHING) &&
	    !proxy_state_relaying(PR_ORPHANED),
	    "streaming and paused requests relay; others hold their answer");
	is_str(proxy_state_name(PR_ORPHANED), "orphaned", "states have names");
	is_str(proxy_state_name(PR_NSTATES), "invalid", "and nonsense has one");

	st = PR_STARTED;
	proxy_state_move(&st, PR_FETCHING, 1);
	proxy_state_move(&st, PR_STREAMING, 1);
	proxy_state_move(&st, PR_PAUSED, 1);
	proxy_state_move(&st, PR_STREAMING, 1);
	proxy_state_move(&st, PR_FINISHED, 1);
	ok(st == PR_FINISHED, "a stream's journey: started, fetching, "
	    "streaming, paused, streaming, finished");

	ok(move_in_child(PR_STARTED, PR_WAITING) == 0,
	    "a legal move does not abort");
#ifdef NDEBUG
	ok(move_in_child(PR_FINISHED, PR_FINISHED) == 0,
	    "NDEBUG: an illegal move is logged, not fatal");
#else
	ok(move_in_child(PR_FINISHED, PR_FINISHED) == SIGABRT,
	    "an illegal move (finished twice) aborts");
	ok(move_in_child(PR_ORPHANED, PR_STREAMING) == SIGABRT,
	    "an illegal move (orphaned -> streaming) aborts");
#endif
	return (done_testing());
}
