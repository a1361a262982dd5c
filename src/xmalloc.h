/*
 * xmalloc.h - allocation that never returns NULL.
 *
 * Out of memory, the process ends with "out of memory" in the error log
 * (fatalx): a proxy that cannot allocate cannot answer either, and its
 * supervisor restarts it.  As tmux's xmalloc.c.
 */
#ifndef RC_XMALLOC_H
#define RC_XMALLOC_H

#include <stdarg.h>
#include <stddef.h>

struct evbuffer;

void	*xmalloc(size_t);
void	*xcalloc(size_t, size_t);
void	*xreallocarray(void *, size_t, size_t);
char	*xstrdup(const char *);
char	*xstrndup(const char *, size_t);
int	 xasprintf(char **, const char *, ...)
	    __attribute__((format(printf, 2, 3)));
int	 xvasprintf(char **, const char *, va_list)
	    __attribute__((format(printf, 2, 0)));
/* A new evbuffer. */
struct evbuffer	*xevbuffer_new(void);

#endif
