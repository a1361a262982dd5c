/*
 * systemd.h - telling systemd how start-up, reloads and shutdown go, and
 * taking the listening sockets it passes (socket activation).
 *
 * Built without libsystemd, the notifications do nothing and
 * systemd_listen_fds() finds no sockets.  Outside systemd (no
 * $NOTIFY_SOCKET, no $LISTEN_FDS) every call is harmless.
 */
#ifndef RC_SYSTEMD_H
#define RC_SYSTEMD_H

/* READY=1 with a STATUS= line (printf-style). */
void	systemd_ready(const char *fmt, ...)
	    __attribute__((format(printf, 1, 2)));
/* RELOADING=1 (before a SIGHUP reload), then systemd_ready() again after. */
void	systemd_reloading(void);
/* STOPPING=1 at the start of a drain. */
void	systemd_stopping(void);
/*
 * The listening sockets systemd passed (socket activation): fills fds (up
 * to max) and returns their count, 0 if none were passed to this process.
 * Each is checked to be a listening SOCK_STREAM socket and is made
 * non-blocking and close-on-exec; the caller owns them.  Returns -1 with a
 * message in *cause (malloc'd; the caller frees it) if one is not, if more
 * than max were passed, or if sockets were passed to a build without
 * libsystemd.  $LISTEN_PID, $LISTEN_FDS and $LISTEN_FDNAMES are removed
 * from the environment: only the first call finds the sockets.
 */
int	systemd_listen_fds(int *fds, int max, char **cause);

#endif
