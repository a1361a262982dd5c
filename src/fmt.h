/*
 * fmt.h - formatting into a buffer without printf, for the lines every
 * request writes (a hit's head, its access line).  Each call appends to
 * p, bounded by end, and returns the new end of what it wrote, or NULL
 * once something did not fit (and from then on, since p is NULL).
 */
#ifndef RC_FMT_H
#define RC_FMT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline char *
fmt_mem(char *p, const char *end, const void *s, size_t n)
{
	if (p == NULL || (size_t)(end - p) < n)
		return (NULL);
	memcpy(p, s, n);
	return (p + n);
}

static inline char *
fmt_str(char *p, const char *end, const char *s)
{
	return (fmt_mem(p, end, s, strlen(s)));
}

/* A string literal, its length known when compiled. */
#define fmt_lit(p, end, lit)	fmt_mem(p, end, "" lit, sizeof(lit) - 1)

/* v in decimal. */
static inline char *
fmt_u64(char *p, const char *end, uint64_t v)
{
	char	tmp[20];
	size_t	n = 0;

	do
		tmp[sizeof tmp - ++n] = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	return (fmt_mem(p, end, tmp + sizeof tmp - n, n));
}

/* v in decimal, at least width digits (zeros in front). */
static inline char *
fmt_u64_0(char *p, const char *end, uint64_t v, size_t width)
{
	char	tmp[20];
	size_t	n = 0;

	do
		tmp[sizeof tmp - ++n] = (char)('0' + v % 10);
	while ((v /= 10) != 0 || (n < width && n < sizeof tmp));
	return (fmt_mem(p, end, tmp + sizeof tmp - n, n));
}

/* v in lower-case hexadecimal, as a chunk's size line has it. */
static inline char *
fmt_hex(char *p, const char *end, uint64_t v)
{
	char	tmp[16];
	size_t	n = 0;

	do
		tmp[sizeof tmp - ++n] = "0123456789abcdef"[v & 0xf];
	while ((v >>= 4) != 0);
	return (fmt_mem(p, end, tmp + sizeof tmp - n, n));
}

#endif
