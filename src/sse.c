/*
 * sse.c - incremental text/event-stream parser (WHATWG HTML, "Server-sent
 * events", the event stream interpretation), keeping only what a cache
 * needs: the event type and its data.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "sse.h"
#include "xmalloc.h"

#define SSE_TYPE_MAX	128
#define SSE_LINE_SLACK	16	/* a line may be max_data + this long */

struct sse {
	sse_event_fn	 fn;
	void		*arg;
	size_t		 max_data;
	char		*line;		/* the line being read */
	size_t		 line_len, line_cap;
	char		*data;		/* the event's data so far */
	size_t		 data_len, data_cap;
	char		 type[SSE_TYPE_MAX + 1];
	int		 has_data;
	int		 overflow;	/* this event is too large: drop it */
	int		 skip_lf;	/* last feed ended in "\r" */
	int		 skip_line;	/* rest of a too-long line */
};

struct sse *
sse_new(size_t max_data, sse_event_fn fn, void *arg)
{
	struct sse	*s;

	s = xcalloc(1, sizeof *s);
	s->fn = fn;
	s->arg = arg;
	s->max_data = max_data;
	return (s);
}

void
sse_free(struct sse *s)
{
	if (s == NULL)
		return;
	free(s->line);
	free(s->data);
	free(s);
}

static int
sse_append(char **buf, size_t *len, size_t *cap, const char *p, size_t n,
    size_t max)
{
	if (*len + n + 1 > max + 1)
		return (-1);
	if (*len + n + 1 > *cap) {
		size_t ncap = (*len + n + 1) * 2;

		if (ncap > max + 1)
			ncap = max + 1;
		*buf = xreallocarray(*buf, ncap, 1);
		*cap = ncap;
	}
	memcpy(*buf + *len, p, n);
	*len += n;
	(*buf)[*len] = '\0';
	return (0);
}

static void
sse_dispatch(struct sse *s)
{
	if (s->has_data && !s->overflow)
		s->fn(s->arg, s->type, s->data != NULL ? s->data : "",
		    s->data_len);
	s->data_len = 0;
	if (s->data != NULL)
		s->data[0] = '\0';
	s->type[0] = '\0';
	s->has_data = 0;
	s->overflow = 0;
}

static void
sse_line(struct sse *s, const char *line, size_t len)
{
	const char	*colon, *value;
	size_t		 nlen, vlen;

	if (len == 0) {
		sse_dispatch(s);
		return;
	}
	if (line[0] == ':')
		return;		/* a comment, or a keep-alive */
	if ((colon = memchr(line, ':', len)) != NULL) {
		nlen = (size_t)(colon - line);
		value = colon + 1;
		vlen = len - nlen - 1;
		if (vlen > 0 && *value == ' ') {
			value++;
			vlen--;
		}
	} else {
		nlen = len;
		value = "";
		vlen = 0;
	}
	if (nlen == 5 && memcmp(line, "event", 5) == 0) {
		if (vlen > SSE_TYPE_MAX)
			vlen = SSE_TYPE_MAX;
		memcpy(s->type, value, vlen);
		s->type[vlen] = '\0';
	} else if (nlen == 4 && memcmp(line, "data", 4) == 0) {
		if (s->overflow)
			return;
		if ((s->has_data && sse_append(&s->data, &s->data_len,
		    &s->data_cap, "\n", 1, s->max_data) == -1) ||
		    sse_append(&s->data, &s->data_len, &s->data_cap, value,
		    vlen, s->max_data) == -1)
			s->overflow = 1;
		s->has_data = 1;
	}
	/* id, retry and unknown fields change nothing a cache needs. */
}

void
sse_feed(struct sse *s, const char *p, size_t n)
{
	const char	*end = p + n, *eol;

	if (n == 0)
		return;
	if (s->skip_lf && *p == '\n')
		p++;
	s->skip_lf = 0;
	while (p < end) {
		for (eol = p; eol < end && *eol != '\n' && *eol != '\r'; eol++)
			;
		if (eol == end) {
			/* A partial line: keep it, unless it is hopeless. */
			if (!s->skip_line && sse_append(&s->line, &s->line_len,
			    &s->line_cap, p, (size_t)(end - p),
			    s->max_data + SSE_LINE_SLACK) == -1) {
				s->overflow = 1;
				s->skip_line = 1;
				s->line_len = 0;
			}
			return;
		}
		if (s->skip_line) {
			s->skip_line = 0;
			s->line_len = 0;
		} else if (s->line_len > 0) {
			if (sse_append(&s->line, &s->line_len, &s->line_cap, p,
			    (size_t)(eol - p),
			    s->max_data + SSE_LINE_SLACK) == -1)
				s->overflow = 1;
			else
				sse_line(s, s->line, s->line_len);
			s->line_len = 0;
		} else if ((size_t)(eol - p) > s->max_data + SSE_LINE_SLACK)
			s->overflow = 1;	/* as when it comes in pieces */
		else
			sse_line(s, p, (size_t)(eol - p));
		if (*eol == '\r') {
			if (eol + 1 == end)
				s->skip_lf = 1;
			else if (eol[1] == '\n')
				eol++;
		}
		p = eol + 1;
	}
}
