/*
 * systemd.c - readiness notification and socket activation.
 *
 * With Type=notify, systemd counts the service as started only when it
 * says READY=1: units ordered after respcache then find it answering, and
 * a start-up that fails (a bad key file, a port in use) fails the start
 * job instead of looking like a crash later.  RELOADING=1 and STOPPING=1
 * let `systemctl status` tell a reload or a drain from a hang.
 *
 * With a .socket unit, systemd binds the listener itself and passes it as
 * fd 3 onwards ($LISTEN_FDS): the port is held across restarts, and
 * connections made while the daemon starts wait in the backlog.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "log.h"
#include "systemd.h"
#include "xmalloc.h"

static int	systemd_fail(char **, const char *, ...)
		    __attribute__((format(printf, 2, 3)));

/* Set *cause (malloc'd) and return -1. */
static int
systemd_fail(char **cause, const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	xvasprintf(cause, fmt, ap);
	va_end(ap);
	return (-1);
}

#ifdef HAVE_LIBSYSTEMD

void
systemd_ready(const char *fmt, ...)
{
	va_list	 ap;
	char	 status[256], *p;

	va_start(ap, fmt);
	vsnprintf(status, sizeof status, fmt, ap);
	va_end(ap);
	/* STATUS= is one line of the message: a newline would end it. */
	for (p = status; (p = strpbrk(p, "\r\n")) != NULL; p++)
		*p = ' ';
	/* Not under systemd (no $NOTIFY_SOCKET) this sends nothing. */
	(void)sd_notifyf(0, "READY=1\nSTATUS=%s", status);
}

void
systemd_reloading(void)
{
	struct timespec	ts;

	/*
	 * systemd 253 and later want the time of the reload with it (for
	 * Type=notify-reload); older ones ignore the field.
	 */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	(void)sd_notifyf(0, "RELOADING=1\nSTATUS=reloading the configuration"
	    "\nMONOTONIC_USEC=%llu", (unsigned long long)ts.tv_sec *
	    1000000ULL + (unsigned long long)ts.tv_nsec / 1000ULL);
}

void
systemd_stopping(void)
{
	(void)sd_notify(0, "STOPPING=1\nSTATUS=draining requests in flight");
}

int
systemd_listen_fds(int *fds, int max, char **cause)
{
	int	n, i, fd, r, fl;

	*cause = NULL;
	/* 1: unset $LISTEN_*, so nothing we start takes them for its own. */
	if ((n = sd_listen_fds(1)) < 0)
		return (systemd_fail(cause, "socket activation: $LISTEN_FDS: "
		    "%s", strerror(-n)));
	if (n == 0)
		return (0);
	if (n > max)
		return (systemd_fail(cause, "socket activation: systemd passed "
		    "%d sockets, respcache takes at most %d", n, max));
	for (i = 0; i < n; i++) {
		fd = SD_LISTEN_FDS_START + i;
		/* A Datagram= or an Accept=yes unit would hang or misbehave. */
		if ((r = sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1)) <= 0)
			return (systemd_fail(cause, "socket activation: fd %d "
			    "is not a listening stream socket%s%s (use "
			    "ListenStream= and Accept=no)", fd, r < 0 ? ": " :
			    "", r < 0 ? strerror(-r) : ""));
		/*
		 * Several loops may wait on one listener: a blocking accept
		 * would hang the loops that lose the race.
		 */
		if ((fl = fcntl(fd, F_GETFL)) == -1 ||
		    fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1)
			return (systemd_fail(cause, "socket activation: fd %d: "
			    "%s", fd, strerror(errno)));
		fds[i] = fd;
	}
	return (n);
}

#else /* !HAVE_LIBSYSTEMD */

void
systemd_ready(const char *fmt, ...)
{
	(void)fmt;
}

void
systemd_reloading(void)
{
}

void
systemd_stopping(void)
{
}

int
systemd_listen_fds(int *fds, int max, char **cause)
{
	const char	*pid;

	(void)fds;
	(void)max;
	*cause = NULL;
	pid = getenv("LISTEN_PID");
	/*
	 * Sockets passed to us that we cannot take: binding [server] listen
	 * instead would fail on the port systemd holds, with a less clear
	 * message than this one.
	 */
	if (pid != NULL && getenv("LISTEN_FDS") != NULL &&
	    strtol(pid, NULL, 10) == (long)getpid())
		return (systemd_fail(cause, "socket activation: systemd passed "
		    "sockets, but respcache was built without libsystemd"));
	return (0);
}

#endif /* HAVE_LIBSYSTEMD */
