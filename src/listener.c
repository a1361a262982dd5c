/*
 * listener.c - listening sockets; see listener.h.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "listener.h"
#include "log.h"

static int
listener_fail(char **cause, const char *what, const char *host, int port,
    const char *why)
{
	const char	*fmt = strchr(host, ':') != NULL ?
			    "cannot listen on [%s]:%d (%s): %s" :
			    "cannot listen on %s:%d (%s): %s";

	if (asprintf(cause, fmt, host, port, what, why) == -1)
		fatalx("out of memory");
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
