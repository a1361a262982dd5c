/* TEMPORARY STUB - replaced by helper patch */
#ifndef RC_SYSTEMD_H
#define RC_SYSTEMD_H
void	systemd_ready(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	systemd_reloading(void);
void	systemd_stopping(void);
int	systemd_listen_fds(int *fds, int max, char **cause);
#endif
