/*
 * accesslog.h - one line a request, as text or JSON.
 *
 * Each worker buffers its lines and hands them to a writer thread once
 * per pass of its event loop (or when 32 KiB are waiting), waking it only
 * if it sleeps; the writer gathers for 10 ms before it writes.  Under load
 * one write carries many lines and the writer wakes a hundred times a
 * second, not per request; a quiet proxy still logs each request within
 * 10 ms; no event loop ever waits on the log.  Lines go to stderr (journald)
 * or to a file, which SIGUSR1 reopens.
 */
#ifndef RC_ACCESSLOG_H
#define RC_ACCESSLOG_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct accesslog;

/* What one line says; any string may be NULL ("-"). */
struct access_entry {
	uint64_t	 serial;	/* the request's, as its error lines */
	const char	*client;	/* the [client] name */
	const char	*method;
	const char	*uri;		/* as the client sent it */
	const char	*route;		/* its class, as in the metrics */
	int		 status;
	const char	*cache;		/* hit, miss, coalesced, bypass */
	int		 upstream_status;	/* 0: no upstream exchange */
	double		 upstream_secs;
	size_t		 bytes;		/* body bytes sent */
	const char	*request_id;	/* x-request-id */
	double		 secs;		/* headers in to answer handed over */
};

/*
 * Where lines go ("stderr", "off" or a file path) and as what; from the
 * main thread, before any worker starts.  -1 and *cause on failure.
 */
int	accesslog_open(const char *where, int json, char **cause);
/* SIGUSR1: open the file again (after logrotate moved it). */
int	accesslog_reopen(char **cause);
/* Writes what is queued, then stops the writer (workers freed first). */
void	accesslog_close(void);
/* Hand-overs dropped because the writer was too far behind. */
uint64_t accesslog_lost(void);

/* A worker's buffer; NULL when the access log is off. */
struct accesslog *accesslog_new(struct event_base *);
void	accesslog_write(struct accesslog *, const struct access_entry *);
/* Writes what is buffered, then frees. */
void	accesslog_free(struct accesslog *);

#endif
