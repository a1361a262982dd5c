/*
 * libFuzzer target for the SSE parser: the input is split into three
 * feeds at points taken from its first two bytes.
 */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "sse.h"

static void
sink(void *arg, const char *type, const char *data, size_t len)
{
	volatile size_t	*n = arg;

	*n += len + strlen(type) + (data[len] == '\0');
}

int
LLVMFuzzerTestOneInput(const uint8_t *p, size_t n)
{
	volatile size_t	 seen = 0;
	struct sse	*s;
	size_t		 a, b;

	if (n < 2)
		return (0);
	a = p[0] % (n - 1);
	b = a + p[1] % (n - 1 - a + 1);
	p += 2;
	n -= 2;
	if (a > n)
		a = n;
	if (b > n)
		b = n;
	s = sse_new(256, sink, (void *)&seen);
	sse_feed(s, (const char *)p, a);
	sse_feed(s, (const char *)p + a, b - a);
	sse_feed(s, (const char *)p + b, n - b);
	sse_free(s);
	return (0);
}
