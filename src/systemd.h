/*
 * systemd.h - readiness notification and socket activation.
 * (No-ops for now: libsystemd is wired in by the next change.)
 */
#ifndef RC_SYSTEMD_H
#define RC_SYSTEMD_H

void	systemd_ready(const char *fmt, ...)
	    __attribute__((format(printf, 1, 2)));
void	systemd_reloading(void);
void	systemd_stopping(void);
int	systemd_listen_fds(int *fds, int max, char **cause);

#endif
