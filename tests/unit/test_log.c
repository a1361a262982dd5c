/*
 * Unit tests: a rate-limited line is written at most once a second and
 * counts what it held back, from any number of threads without losing a
 * count; fatalx() from a thread exits 1 without running atexit handlers.
 */
#include "config.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

#include "../../src/log.c"
#include "../../src/xmalloc.c"
#include "tap.h"

static char	 path[] = "/tmp/respcache-test-log-XXXXXX";
static int	 saved_stderr = -1;

/* stderr into a fresh file, until captured() gives its text back. */
static void
capture(void)
{
	int	fd;

	if ((fd = mkstemp(path)) == -1) {
		perror("mkstemp");
		exit(2);
	}
	if (saved_stderr == -1)
		saved_stderr = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);
	close(fd);
}

static char *
captured(void)
{
	static char	buf[1 << 16];
	ssize_t		n;
	int		fd;

	dup2(saved_stderr, STDERR_FILENO);
	buf[0] = '\0';
	if ((fd = open(path, O_RDONLY)) != -1) {
		n = read(fd, buf, sizeof buf - 1);
		buf[n > 0 ? n : 0] = '\0';
		close(fd);
	}
	unlink(path);
	memcpy(path + strlen(path) - 6, "XXXXXX", 6);
	return (buf);
}

static int
count(const char *s, const char *what)
{
	int	n = 0;

	while ((s = strstr(s, what)) != NULL) {
		n++;
		s += strlen(what);
	}
	return (n);
}

/* The sum of N over every "(N more in the last" in s. */
static unsigned long long
held_back(const char *s)
{
	unsigned long long	sum = 0;

	while ((s = strstr(s, " (")) != NULL) {
		s += 2;
		if (strstr(s, " more in the last ") != NULL)
			sum += strtoull(s, NULL, 10);
	}
	return (sum);
}

#define NTHREADS	4
#define PER_THREAD	20000

static struct log_limit	shared;

static void *
hammer(void *arg)
{
	int	i;

	(void)arg;
	for (i = 0; i < PER_THREAD; i++) {
		log_warnx_limited(&shared, "hammered");
		/* Now and then, a second has passed. */
		if (i % 5000 == 4999)
			__atomic_store_n(&shared.last_ms, 1, __ATOMIC_RELAXED);
	}
	return (NULL);
}

static void *
die(void *arg)
{
	(void)arg;
	fatalx("fatal from a worker thread");
}

static void
at_exit(void)
{
	static const char	s[] = "atexit handler ran\n";

	write(STDERR_FILENO, s, sizeof s - 1);
}

int
main(void)
{
	struct log_limit	 lim = LOG_LIMIT_INITIALIZER;
	pthread_t		 t[NTHREADS];
	unsigned long long	 lines;
	char			*out;
	pid_t			 pid;
	int			 i, status;

	log_init(LOG_INFO);

	capture();
	for (i = 0; i < 1000; i++)
		log_warnx_limited(&lim, "accept: %s", "Too many open files");
	out = captured();
	ok(count(out, "accept: Too many open files") == 1,
	    "1000 lines within a second: one written");
	ok(count(out, "more in the last") == 0, "the first says no count");

	/* A second later (moved back rather than waited for). */
	lim.last_ms -= 1000;
	capture();
	log_warnx_limited(&lim, "accept: %s", "Too many open files");
	out = captured();
	ok(strstr(out, "accept: Too many open files (999 more in the last "
	    "1.0 s)\n") != NULL, "a second on, the next tells the 999 held "
	    "back");
	ok(strstr(out, "respcache[warn]: ") != NULL, "at its level");

	capture();
	log_init(LOG_ERR);
	lim.last_ms -= 1000;
	log_warnx_limited(&lim, "below the level");
	log_init(LOG_INFO);
	out = captured();
	ok(*out == '\0', "a level not logged writes nothing");

	capture();
	for (i = 0; i < NTHREADS; i++)
		pthread_create(&t[i], NULL, hammer, NULL);
	for (i = 0; i < NTHREADS; i++)
		pthread_join(t[i], NULL);
	out = captured();
	lines = (unsigned long long)count(out, "hammered");
	ok(lines >= 1 && lines <= NTHREADS * (PER_THREAD / 5000) + 1,
	    "%d threads, %d lines each: %llu written", NTHREADS, PER_THREAD,
	    lines);
	ok(lines + held_back(out) + shared.quiet ==
	    (unsigned long long)NTHREADS * PER_THREAD,
	    "every line written or counted: %llu + %llu + %llu", lines,
	    held_back(out), shared.quiet);

	capture();
	fflush(stdout);
	if ((pid = fork()) == 0) {
		pthread_t	th;

		atexit(at_exit);
		pthread_create(&th, NULL, die, NULL);
		pthread_join(th, NULL);
		_exit(0);
	}
	waitpid(pid, &status, 0);
	out = captured();
	ok(WIFEXITED(status) && WEXITSTATUS(status) == 1,
	    "fatalx on a thread: exit status 1 (status %#x)", status);
	ok(strstr(out, "respcache[error]: fatal from a worker thread\n") !=
	    NULL, "its line is written");
	ok(strstr(out, "atexit handler ran") == NULL,
	    "no atexit handler ran under the other threads");

	return (done_testing());
}
