/*
 * Unit tests: socket activation takes only listening stream sockets that
 * were passed to this process, and the notifications reach
 * $NOTIFY_SOCKET.  Built without libsystemd, passed sockets are refused
 * and nothing is sent.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include "../../src/log.c"
#include "../../src/xmalloc.c"
#include "../../src/systemd.c"
#include "tap.h"

/* Make fd 3 (SD_LISTEN_FDS_START) a copy of fd, and close fd. */
static void
as_fd3(int fd)
{
	if (fd == -1 || dup2(fd, 3) == -1) {
		perror("test_systemd: dup2");
		exit(1);
	}
	if (fd != 3)
		close(fd);
}

/* A TCP socket on 127.0.0.1, listening or not. */
static int
tcp_socket(int listening)
{
	struct sockaddr_in	sin;
	int			s;

	if ((s = socket(AF_INET, SOCK_STREAM, 0)) == -1)
		return (-1);
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(s, (struct sockaddr *)&sin, sizeof sin) == -1 ||
	    (listening && listen(s, 1) == -1)) {
		close(s);
		return (-1);
	}
	return (s);
}

/* Say systemd passed n sockets to pid. */
static void
pass(long pid, int n)
{
	char	buf[32];

	snprintf(buf, sizeof buf, "%ld", pid);
	setenv("LISTEN_PID", buf, 1);
	snprintf(buf, sizeof buf, "%d", n);
	setenv("LISTEN_FDS", buf, 1);
}

/* What systemd_listen_fds() says about the sockets passed now. */
static int
take(int max, int *fds, char **cause)
{
	fds[0] = -1;
	*cause = NULL;
	return (systemd_listen_fds(fds, max, cause));
}

static void
test_listen_fds(void)
{
	char	*cause;
	int	 fds[2], n;

	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	ok(take(2, fds, &cause) == 0 && cause == NULL,
	    "no $LISTEN_FDS: no sockets, no error");

	as_fd3(tcp_socket(1));
	pass((long)getpid() + 1, 1);
	ok(take(2, fds, &cause) == 0 && cause == NULL,
	    "sockets passed to another process: not ours");

#ifdef HAVE_LIBSYSTEMD
	pass((long)getpid(), 1);
	n = take(2, fds, &cause);
	ok(n == 1 && fds[0] == 3, "a listening TCP socket as fd 3: taken (%d)",
	    n);
	ok(getenv("LISTEN_FDS") == NULL && getenv("LISTEN_PID") == NULL,
	    "$LISTEN_FDS and $LISTEN_PID are removed");
	ok((fcntl(3, F_GETFL) & O_NONBLOCK) != 0 &&
	    (fcntl(3, F_GETFD) & FD_CLOEXEC) != 0,
	    "it is made non-blocking and close-on-exec");
	ok(take(2, fds, &cause) == 0, "a second call finds no sockets");

	as_fd3(tcp_socket(1));
	if (dup2(3, 4) == -1) {
		perror("test_systemd: dup2");
		exit(1);
	}
	pass((long)getpid(), 2);
	ok(take(1, fds, &cause) == -1 && cause != NULL &&
	    strstr(cause, "at most 1") != NULL,
	    "more sockets than the caller takes: refused (%s)", cause);
	free(cause);
	close(4);

	as_fd3(tcp_socket(0));
	pass((long)getpid(), 1);
	ok(take(2, fds, &cause) == -1 && cause != NULL &&
	    strstr(cause, "fd 3") != NULL,
	    "a socket that does not listen: refused (%s)", cause);
	free(cause);
#else
	pass((long)getpid(), 1);
	n = take(2, fds, &cause);
	ok(n == -1 && cause != NULL && strstr(cause, "without libsystemd") !=
	    NULL, "without libsystemd, passed sockets are refused (%s)",
	    cause);
	free(cause);
#endif

	as_fd3(open("/dev/null", O_RDONLY));
	pass((long)getpid(), 1);
	ok(take(2, fds, &cause) == -1 && cause != NULL,
	    "a file as fd 3: refused (%s)", cause);
	free(cause);
	close(3);
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
}

/* One datagram from s, as a string; "" if none waits. */
static const char *
recv_msg(int s)
{
	static char	buf[1024];
	ssize_t		n;

	n = recv(s, buf, sizeof buf - 1, MSG_DONTWAIT);
	buf[n > 0 ? n : 0] = '\0';
	return (buf);
}

static void
test_notify(void)
{
	struct sockaddr_un	 sun;
	char			 dir[] = "/tmp/test_systemd.XXXXXX";
	const char		*m;
	int			 s;

	if (mkdtemp(dir) == NULL) {
		perror("test_systemd: mkdtemp");
		exit(1);
	}
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s/notify", dir);
	if ((s = socket(AF_UNIX, SOCK_DGRAM, 0)) == -1 ||
	    bind(s, (struct sockaddr *)&sun, sizeof sun) == -1) {
		perror("test_systemd: notify socket");
		exit(1);
	}
	setenv("NOTIFY_SOCKET", sun.sun_path, 1);

	systemd_ready("listening on %s,\n%d worker%s", "127.0.0.1:8080", 2,
	    "s");
	m = recv_msg(s);
#ifdef HAVE_LIBSYSTEMD
	ok(strncmp(m, "READY=1\n", 8) == 0, "systemd_ready sends READY=1");
	ok(strstr(m, "\nSTATUS=listening on 127.0.0.1:8080, 2 workers") !=
	    NULL && strchr(strstr(m, "STATUS="), '\n') == NULL,
	    "and its status, on one line");
	systemd_reloading();
	m = recv_msg(s);
	ok(strncmp(m, "RELOADING=1\n", 12) == 0 &&
	    strstr(m, "\nMONOTONIC_USEC=") != NULL,
	    "systemd_reloading sends RELOADING=1 and the time");
	systemd_stopping();
	m = recv_msg(s);
	ok(strncmp(m, "STOPPING=1", 10) == 0, "systemd_stopping sends "
	    "STOPPING=1");
	ok(getenv("NOTIFY_SOCKET") != NULL, "$NOTIFY_SOCKET stays, for the "
	    "next notification");
#else
	systemd_reloading();
	systemd_stopping();
	ok(*m == '\0' && *recv_msg(s) == '\0', "without libsystemd, nothing "
	    "is sent");
#endif
	unsetenv("NOTIFY_SOCKET");
	systemd_ready("not under systemd");
	ok(*recv_msg(s) == '\0', "no $NOTIFY_SOCKET: nothing is sent");

	close(s);
	unlink(sun.sun_path);
	rmdir(dir);
}

int
main(void)
{
	test_listen_fds();
	test_notify();
	return (done_testing());
}
