/*
 * systemd.c - see systemd.h.
 */
#include "config.h"

#include "systemd.h"

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
	(void)fds;
	(void)max;
	(void)cause;
	return (0);
}
