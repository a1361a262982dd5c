/*
 * listener.c - listening sockets; see listener.h.
 *
 * evhttp accepts through an evconnlistener, which without an error
 * callback logs a failed accept() and returns: out of descriptors, the
 * level-triggered socket is readable again at once, and the loop spins
 * and floods the log.  Ours pauses the listener instead, as nginx does.
 * The error callback is handed evhttp's pointer, not ours, so each
 * listener_accept is found by its evconnlistener in a list.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "xmalloc.h"

#define LISTENER_PAUSE_MIN_MS	100
#define LISTENER_PAUSE_MAX_MS	1000

struct listener_accept {
	struct evhttp			*http;
	struct evhttp_bound_socket	*bs;
	struct evconnlistener		*lev;
	struct event			*resume;
	enum metrics_listener		 kind;
	int				 pause_ms;	/* the last pause */
	long long			 resumed_ms;	/* when it ended */
	char				 who[32];
	char				 name[80];	/* host:port */
	struct listener_accept		*next;
};

/* Every listener_accept, for the error callback to find its own. */
static pthread_mutex_t		 listener_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct listener_accept	*listener_all;
static struct log_limit		 listener_limits[ML_COUNT];

static int
listener_fail(char **cause, const char *what, const char *host, int port,
    const char *why)
{
	const char	*fmt = strchr(host, ':') != NULL ?
			    "cannot listen on [%s]:%d (%s): %s" :
			    "cannot listen on %s:%d (%s): %s";

	xasprintf(cause, fmt, host, port, what, why);
	return (-1);
}

/* One socket bound to ai; -1 and errno on failure. */
static int
listener_bind(const struct addrinfo *ai, int reuseport)
{
	int	fd, one = 1, saved;

	if ((fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, ai->ai_protocol)) == -1)
		return (-1);
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == -1 ||
	    (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one,
	    sizeof one) == -1) ||
	    /*
	     * Accepted sockets inherit it: a stream's small events and a
	     * reply's last segment never wait for a delayed ACK (Nagle).
	     */
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == -1 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) == -1 ||
	    (reuseport && listen(fd, 1024) == -1)) {
		saved = errno;
		close(fd);
		errno = saved;
		return (-1);
	}
	return (fd);
}

static int
listener_port(int fd)
{
	struct sockaddr_storage	ss;
	socklen_t		len = sizeof ss;

	if (getsockname(fd, (struct sockaddr *)&ss, &len) == -1)
		return (-1);
	if (ss.ss_family == AF_INET6)
		return (ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
	return (ntohs(((struct sockaddr_in *)&ss)->sin_port));
}

int
listener_open(const char *what, const char *host, int port, int n,
    int *fds, char **cause)
{
	struct addrinfo	 hints, *res;
	char		 sport[16];
	int		 probe, rc, i;

	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(sport, sizeof sport, "%d", port);
	if ((rc = getaddrinfo(host, sport, &hints, &res)) != 0)
		return (listener_fail(cause, what, host, port,
		    gai_strerror(rc)));
	/*
	 * A bind without SO_REUSEPORT fails if anyone holds the port, even
	 * another respcache with SO_REUSEPORT: two daemons never split one
	 * port's clients between them without a word.
	 */
	if ((probe = listener_bind(res, 0)) == -1) {
		rc = errno;
		freeaddrinfo(res);
		return (listener_fail(cause, what, host, port, rc == EADDRINUSE ?
		    "the address is already in use" : strerror(rc)));
	}
	if (port == 0 && (port = listener_port(probe)) > 0)
		((struct sockaddr_in *)res->ai_addr)->sin_port = htons(port);
	close(probe);
	for (i = 0; i < n; i++) {
		if ((fds[i] = listener_bind(res, 1)) == -1) {
			rc = errno;
			while (i-- > 0)
				close(fds[i]);
			freeaddrinfo(res);
			return (listener_fail(cause, what, host, port,
			    rc == EADDRINUSE ? "the address is already in use" :
			    strerror(rc)));
		}
	}
	freeaddrinfo(res);
	return (0);
}

void
listener_name(int fd, char *buf, size_t len)
{
	struct sockaddr_storage	ss;
	socklen_t		slen = sizeof ss;
	char			host[INET6_ADDRSTRLEN];

	if (getsockname(fd, (struct sockaddr *)&ss, &slen) == -1) {
		snprintf(buf, len, "?");
		return;
	}
	if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof host);
		snprintf(buf, len, "[%s]:%d", host, ntohs(s6->sin6_port));
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		inet_ntop(AF_INET, &s4->sin_addr, host, sizeof host);
		snprintf(buf, len, "%s:%d", host, ntohs(s4->sin_port));
	}
}

static long long
listener_now_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

/*
 * An error of the connection being accepted, not of the listener: the
 * next accept() may well succeed (Linux's accept(2) says to retry these).
 */
static int
listener_conn_error(int err)
{
	switch (err) {
	case ENETDOWN:
	case EPROTO:
	case ENOPROTOOPT:
	case EHOSTDOWN:
#ifdef ENONET
	case ENONET:
#endif
	case EHOSTUNREACH:
	case EOPNOTSUPP:
	case ENETUNREACH:
	case EPERM:		/* a firewall rule refused it */
		return (1);
	default:
		return (0);
	}
}

static struct listener_accept *
listener_find(struct evconnlistener *lev)
{
	struct listener_accept	*la;

	pthread_mutex_lock(&listener_mtx);
	for (la = listener_all; la != NULL && la->lev != lev; la = la->next)
		;
	pthread_mutex_unlock(&listener_mtx);
	return (la);
}

static void
listener_resume(evutil_socket_t fd, short what, void *arg)
{
	struct listener_accept	*la = arg;

	(void)fd;
	(void)what;
	la->resumed_ms = listener_now_ms();
	if (evconnlistener_enable(la->lev) == -1)
		log_warnx("%s: cannot watch %s again", la->who, la->name);
}

/*
 * accept() failed with an error libevent does not retry (it retries
 * EAGAIN, EINTR and ECONNABORTED).  arg is evhttp's, not ours.
 */
static void
listener_error(struct evconnlistener *lev, void *arg)
{
	struct listener_accept	*la;
	struct timeval		 tv;
	int			 err = EVUTIL_SOCKET_ERROR();

	(void)arg;
	if ((la = listener_find(lev)) == NULL)
		return;
	if (listener_conn_error(err)) {
		log_debug("%s: accept on %s: %s", la->who, la->name,
		    strerror(err));
		return;
	}
	/* Still failing since it resumed: wait longer. */
	if (la->resumed_ms != 0 && listener_now_ms() - la->resumed_ms < 1000)
		la->pause_ms = la->pause_ms * 2 < LISTENER_PAUSE_MAX_MS ?
		    la->pause_ms * 2 : LISTENER_PAUSE_MAX_MS;
	else
		la->pause_ms = LISTENER_PAUSE_MIN_MS;
	evconnlistener_disable(lev);
	tv.tv_sec = la->pause_ms / 1000;
	tv.tv_usec = (suseconds_t)(la->pause_ms % 1000) * 1000;
	if (evtimer_add(la->resume, &tv) == -1) {
		/* Never left deaf: spinning is the lesser harm. */
		log_warnx("%s: cannot arm a timer to pause %s", la->who,
		    la->name);
		evconnlistener_enable(lev);
	}
	metrics_accept_error(la->kind, err);
	log_warnx_limited(&listener_limits[la->kind], "%s: accept on %s: %s; "
	    "not accepting for %d ms", la->who, la->name, strerror(err),
	    la->pause_ms);
}

struct listener_accept *
listener_accept(struct evhttp *http, int fd, enum metrics_listener kind,
    const char *who)
{
	struct listener_accept	*la;

	la = xcalloc(1, sizeof *la);
	la->http = http;
	la->kind = kind;
	snprintf(la->who, sizeof la->who, "%s", who);
	listener_name(fd, la->name, sizeof la->name);
	if ((la->bs = evhttp_accept_socket_with_handle(http, fd)) == NULL) {
		free(la);
		return (NULL);
	}
	la->lev = evhttp_bound_socket_get_listener(la->bs);
	if ((la->resume = evtimer_new(evconnlistener_get_base(la->lev),
	    listener_resume, la)) == NULL)
		fatalx("out of memory");
	pthread_mutex_lock(&listener_mtx);
	la->next = listener_all;
	listener_all = la;
	pthread_mutex_unlock(&listener_mtx);
	evconnlistener_set_error_cb(la->lev, listener_error);
	return (la);
}

void
listener_accept_close(struct listener_accept *la)
{
	struct listener_accept	**p;

	if (la == NULL)
		return;
	pthread_mutex_lock(&listener_mtx);
	for (p = &listener_all; *p != NULL; p = &(*p)->next)
		if (*p == la) {
			*p = la->next;
			break;
		}
	pthread_mutex_unlock(&listener_mtx);
	event_free(la->resume);
	evhttp_del_accept_socket(la->http, la->bs);
	free(la);
}
