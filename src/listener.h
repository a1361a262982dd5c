/*
 * listener.h - listening sockets for clients and for the admin routes.
 */
#ifndef RC_LISTENER_H
#define RC_LISTENER_H

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

#endif
