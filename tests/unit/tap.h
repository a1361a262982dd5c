/*
 * tap.h - the smallest TAP producer: ok(), is_str(), done_testing().
 */
#ifndef RC_TAP_H
#define RC_TAP_H

#include <stdio.h>
#include <string.h>

static int tap_n, tap_failed;

/* cond is evaluated once: it may have side effects. */
#define ok(cond, ...) do {						\
	int ok_ = (cond) ? 1 : 0;					\
	tap_n++;							\
	if (!ok_) {							\
		tap_failed++;						\
		printf("not ok %d - ", tap_n);				\
	} else								\
		printf("ok %d - ", tap_n);				\
	printf(__VA_ARGS__);						\
	printf("\n");							\
	if (!ok_)							\
		printf("#   at %s:%d: %s\n", __FILE__, __LINE__, #cond);	\
} while (0)

#define is_str(got, want, ...) do {					\
	const char *g_ = (got), *w_ = (want);				\
	int same_ = g_ != NULL && w_ != NULL ? strcmp(g_, w_) == 0 :	\
	    g_ == w_;							\
	ok(same_, __VA_ARGS__);						\
	if (!same_)							\
		printf("#   got \"%s\", want \"%s\"\n", g_ ? g_ : "(null)",	\
		    w_ ? w_ : "(null)");				\
} while (0)

static inline int
done_testing(void)
{
	printf("1..%d\n", tap_n);
	return (tap_failed ? 1 : 0);
}

#endif
