/*
 * xmalloc.c - allocation that never returns NULL: see xmalloc.h.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "log.h"
#include "xmalloc.h"

void *
xmalloc(size_t size)
{
	void	*p;

	if (size == 0)
		size = 1;
	if ((p = malloc(size)) == NULL)
		fatalx("out of memory");
	return (p);
}

void *
xcalloc(size_t n, size_t size)
{
	void	*p;

	if (n == 0 || size == 0)
		n = size = 1;
	if ((p = calloc(n, size)) == NULL)
		fatalx("out of memory");
	return (p);
}

void *
xreallocarray(void *old, size_t n, size_t size)
{
	void	*p;

	if (n == 0 || size == 0)
		n = size = 1;
	if ((p = reallocarray(old, n, size)) == NULL)
		fatalx("out of memory");
	return (p);
}

char *
xstrdup(const char *s)
{
	char	*p;

	if ((p = strdup(s)) == NULL)
		fatalx("out of memory");
	return (p);
}

char *
xstrndup(const char *s, size_t len)
{
	char	*p;

	if ((p = strndup(s, len)) == NULL)
		fatalx("out of memory");
	return (p);
}

int
xvasprintf(char **out, const char *fmt, va_list ap)
{
	int	n;

	if ((n = vasprintf(out, fmt, ap)) == -1)
		fatalx("out of memory");
	return (n);
}

int
xasprintf(char **out, const char *fmt, ...)
{
	va_list	ap;
	int	n;

	va_start(ap, fmt);
	n = xvasprintf(out, fmt, ap);
	va_end(ap);
	return (n);
}

struct evbuffer *
xevbuffer_new(void)
{
	struct evbuffer	*b;

	if ((b = evbuffer_new()) == NULL)
		fatalx("out of memory");
	return (b);
}
