/*
 * listener.h - listening sockets for clients and for the admin routes.
 */
#ifndef RC_LISTENER_H
#define RC_LISTENER_H

#include "metrics.h"

struct evhttp;
struct listener_accept;

/*
 * Bind and listen on host:port, n times over with SO_REUSEPORT (one
 * socket per worker; the kernel spreads connections across them), into
 * fds.  Port 0 picks one port for all.  A port another process holds is
 * refused even if that process set SO_REUSEPORT too.  Returns 0, or -1
 * with *cause (caller frees) naming the address and the reason.
 */
int	listener_open(const char *what, const char *host, int port, int n,
	    int *fds, char **cause);
/* "host:port" of a listening socket, as clients would write it. */
void	listener_name(int fd, char *buf, size_t len);

/*
 * Have http accept on the listening socket fd (http then owns it), on
 * http's loop.  When accept() fails for want of a resource (EMFILE,
 * ENFILE, ENOBUFS, ENOMEM: any error but a connection's own), the
 * socket is not watched for 100 ms, then twice as long each time it
 * fails again within a second of resuming, up to 1 s; the connections
 * http has meanwhile are served as ever.  A failure is counted under
 * kind (metrics.h) and logged at most once a second per kind, with who
 * ("worker 1", "admin") and the address.  Returns NULL if libevent
 * refuses fd.
 */
struct listener_accept	*listener_accept(struct evhttp *http, int fd,
			    enum metrics_listener kind, const char *who);
/*
 * Stop accepting, close the socket and free la; the connections already
 * accepted stay http's.  On http's loop's thread, before evhttp_free().
 * NULL is ignored.
 */
void			 listener_accept_close(struct listener_accept *la);

#endif
