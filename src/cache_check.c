/*
 * cache_check.c - the start-up check, run in a child.
 *
 * LMDB trusts its file: a page past the end of a truncated one is a
 * SIGBUS, a garbled one an assertion or a wild pointer.  So before this
 * process maps the file, a child reads all of it, and dies in its place
 * if it must.  (LMDB: open an environment after any fork, never use one
 * across it.)  The child uses only LMDB, memory and write(2), so the
 * threads its parent may have (the access log's writer) hold nothing it
 * needs.
 *
 * This file runs the child, keeps its deadline and reads its verdict;
 * the child reads the meta pages itself, and every tree and page with
 * cache_walk.c.
 */
#include "config.h"

#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>

#include "cache.h"
#include "cache_int.h"
#include "log.h"
#include "xmalloc.h"

#define CACHE_CHECK_MAXDBS	32
/* The check may take 10 s, and a second more for every 50 MB. */
#define CACHE_CHECK_SECONDS	10
#define CACHE_CHECK_RATE	(50 * 1024 * 1024)

struct cache_report		cache_check_rep;
static struct cache_report	cache_check_cut;	/* on SIGBUS */
static int			cache_check_fd = -1;

/* Tell the parent, and end the child. */
static void __attribute__((noreturn))
cache_check_end(int verdict)
{
	ssize_t	n;

	cache_check_rep.verdict = verdict;
	n = write(cache_check_fd, &cache_check_rep, sizeof cache_check_rep);
	(void)n;
	_exit(verdict == CACHE_SOUND ? 0 : 1);
}

void
cache_check_fail(int verdict, const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	vsnprintf(cache_check_rep.why, sizeof cache_check_rep.why, fmt, ap);
	va_end(ap);
	cache_check_end(verdict);
}

void
cache_check_rc(const char *what, int rc)
{
	int	verdict = CACHE_UNCHECKED;

	switch (rc) {
	case MDB_INVALID:
	case MDB_VERSION_MISMATCH:
	case MDB_CORRUPTED:
	case MDB_PAGE_NOTFOUND:
	case MDB_INCOMPATIBLE:
	case MDB_CURSOR_FULL:
	case MDB_BAD_TXN:
		verdict = CACHE_DAMAGED;
		break;
	}
	cache_check_fail(verdict, "%s: %s", what, mdb_strerror(rc));
}

static void
cache_check_assert(MDB_env *env, const char *msg)
{
	(void)env;
	cache_check_fail(CACHE_DAMAGED, "reading it failed LMDB's check %s",
	    msg);
}

/* A page past the end of the file was read: it was cut short. */
static void
cache_check_bus(int sig)
{
	ssize_t	n;

	(void)sig;
	n = write(cache_check_fd, &cache_check_cut, sizeof cache_check_cut);
	(void)n;
	_exit(1);
}

/*
 * Check both meta pages, read with pread(2) before LMDB maps the file:
 * the page size, the free list's flags (no API tells them; sorted
 * duplicates there trip LMDB's first write), and the last page in use.
 * The file may end before that page, legitimately, if the pages past its
 * end are free: dirtied and freed in one transaction, LMDB never wrote
 * them.  So a read past the end (SIGBUS) is what tells a file cut short;
 * only a meta claiming more than both the file and the map fails here,
 * for LMDB would map all it claims.  The layout is LMDB 0.9's struct
 * MDB_meta, after a page header: its free list's MDB_db at 24 (the page
 * size in md_pad, then md_flags), mm_last_pg at 120.  A meta that is not
 * one (its magic) is left to mdb_env_open(), which says so.
 */
static void
cache_check_metas(const char *path, off_t size, size_t psize,
    size_t map_size)
{
	char		buf[CACHE_PAGEHDRSZ + 136], *m = buf + CACHE_PAGEHDRSZ;
	uint64_t	last, in_use = 0;
	uint32_t	magic, msize;
	uint16_t	flags;
	int		fd, i;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		cache_check_fail(CACHE_UNCHECKED, "data.mdb: %s",
		    strerror(errno));
	for (i = 0; i < 2; i++) {
		if (pread(fd, buf, sizeof buf, (off_t)(i * psize)) !=
		    (ssize_t)sizeof buf)
			cache_check_fail(CACHE_DAMAGED, "data.mdb's meta page "
			    "%d cannot be read", i);
		memcpy(&magic, m, sizeof magic);
		memcpy(&msize, m + 24, sizeof msize);
		memcpy(&flags, m + 28, sizeof flags);
		memcpy(&last, m + 120, sizeof last);
		if (magic != CACHE_MDB_MAGIC)
			continue;
		if (msize != psize)
			cache_check_fail(CACHE_DAMAGED, "data.mdb's meta page "
			    "%d says its pages are of %u bytes, not this "
			    "machine's %zu", i, msize, psize);
		if (flags != MDB_INTEGERKEY)
			cache_check_fail(CACHE_DAMAGED, "data.mdb's meta page "
			    "%d: the free list's flags are damaged (%#x)", i,
			    flags);
		if (last >= in_use)
			in_use = last + 1;
	}
	close(fd);
	snprintf(cache_check_cut.why, sizeof cache_check_cut.why,
	    "data.mdb is %lld bytes, but its meta says %llu are in use, and "
	    "a page past its end is: the file was cut short", (long long)size,
	    (unsigned long long)in_use * psize);
	cache_check_cut.verdict = CACHE_DAMAGED;
	if (in_use > (uint64_t)size / psize && in_use > map_size / psize)
		cache_check_fail(CACHE_DAMAGED, "%s", cache_check_cut.why);
}

/* The child: check the cache in dir, report on fd, and exit. */
static void __attribute__((noreturn))
cache_check_child(const char *dir, size_t map_size, int fd)
{
	static const char	 fname[] = "format";
	static const int	 sigs[] = { SIGSEGV, SIGABRT, SIGFPE, SIGILL };
	char			 path[4096], names[CACHE_CHECK_MAXDBS][512];
	MDB_env			*env;
	MDB_envinfo		 ei;
	MDB_stat		 es;
	MDB_dbi			 dbis[CACHE_CHECK_MAXDBS], main_dbi;
	MDB_cursor		*cur;
	MDB_val			 k, v;
	struct cache_walk	 w;
	struct stat		 sb;
	uint32_t		 fmt;
	size_t			 ndbs = 0, i;
	int			 rc;

	cache_check_fd = fd;
	/* Die of the signal, not of a sanitizer's report of it. */
	for (i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		signal(sigs[i], SIG_DFL);
	signal(SIGBUS, cache_check_bus);
	memset(&w, 0, sizeof w);
	snprintf(path, sizeof path, "%s/data.mdb", dir);
	if ((rc = mdb_env_create(&env)) != 0 ||
	    (rc = mdb_env_set_assert(env, cache_check_assert)) != 0 ||
	    (rc = mdb_env_set_maxdbs(env, CACHE_CHECK_MAXDBS)) != 0 ||
	    (rc = mdb_env_set_maxreaders(env, CACHE_MAX_READERS)) != 0 ||
	    (rc = mdb_env_set_mapsize(env, map_size)) != 0)
		cache_check_rc("LMDB", rc);
	if (stat(path, &sb) == -1)
		cache_check_fail(CACHE_UNCHECKED, "data.mdb: %s",
		    strerror(errno));
	cache_check_metas(path, sb.st_size, (size_t)sysconf(_SC_PAGESIZE),
	    map_size);
	if ((rc = mdb_env_open(env, dir, MDB_RDONLY | MDB_NOTLS, 0600)) != 0)
		cache_check_rc("data.mdb", rc);
	if ((rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &w.txn)) != 0)
		cache_check_rc("data.mdb", rc);
	if ((rc = mdb_env_stat(env, &es)) != 0 ||
	    (rc = mdb_env_info(env, &ei)) != 0)
		cache_check_rc("data.mdb", rc);
	w.psize = es.ms_psize;
	w.limit = ei.me_last_pgno + 1;
	if ((w.seen = calloc(w.limit / 8 + 1, 1)) == NULL)
		cache_check_fail(CACHE_UNCHECKED, "out of memory");

	if ((rc = mdb_dbi_open(w.txn, NULL, 0, &main_dbi)) != 0 ||
	    (rc = mdb_cursor_open(w.txn, main_dbi, &cur)) != 0)
		cache_check_rc("the main database", rc);
	while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
		if (ndbs == CACHE_CHECK_MAXDBS - 2 ||
		    k.mv_size >= sizeof names[0] ||
		    memchr(k.mv_data, '\0', k.mv_size) != NULL)
			cache_check_fail(CACHE_DAMAGED, "the main database "
			    "names a database respcache never made");
		memcpy(names[ndbs], k.mv_data, k.mv_size);
		names[ndbs][k.mv_size] = '\0';
		if ((rc = mdb_dbi_open(w.txn, names[ndbs], 0,
		    &dbis[ndbs])) != 0)
			cache_check_fail(CACHE_DAMAGED, "%s cannot be opened: "
			    "%s", names[ndbs], mdb_strerror(rc));
		ndbs++;
	}
	if (rc != MDB_NOTFOUND)
		cache_check_rc("the main database", rc);
	mdb_cursor_close(cur);
	for (i = 0; i < ndbs; i++) {
		k.mv_size = sizeof fname - 1;
		k.mv_data = (void *)fname;
		if (strcmp(names[i], "meta") == 0 &&
		    mdb_get(w.txn, dbis[i], &k, &v) == 0 &&
		    v.mv_size == sizeof fmt) {
			memcpy(&fmt, v.mv_data, sizeof fmt);
			w.check_entries = fmt == CACHE_FORMAT;
		}
	}

	cache_walk_db(&w, CACHE_FREE_DBI, "the free list");
	cache_walk_db(&w, main_dbi, "the main database");
	for (i = 0; i < ndbs; i++)
		cache_walk_db(&w, dbis[i], names[i]);
	/* Unless a writer has been since, check the pages not yet seen. */
	if (ei.me_last_txnid == mdb_txn_id(w.txn))
		cache_walk_branches(&w);
	free(w.seen);
	mdb_txn_abort(w.txn);
	mdb_env_close(env);
	cache_check_end(CACHE_SOUND);
}

/*
 * Read the child's report, within ms milliseconds; 0 when it is whole, -1
 * if the child ended without one, -2 on time out.
 */
static int
cache_check_read(int fd, struct cache_report *rep, int ms)
{
	struct timespec	 t0, t;
	struct pollfd	 pfd = { fd, POLLIN, 0 };
	size_t		 got = 0;
	ssize_t		 n;
	int		 left;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (got < sizeof *rep) {
		clock_gettime(CLOCK_MONOTONIC, &t);
		left = ms - (int)((t.tv_sec - t0.tv_sec) * 1000 +
		    (t.tv_nsec - t0.tv_nsec) / 1000000);
		if (left <= 0)
			return (-2);
		if (poll(&pfd, 1, left) == -1) {
			if (errno == EINTR)
				continue;
			return (-1);
		}
		if ((n = read(fd, (char *)rep + got, sizeof *rep - got)) == -1) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return (-1);
		}
		if (n == 0)
			return (-1);
		got += (size_t)n;
	}
	return (0);
}

int
cache_check(const char *dir, size_t map_size, char **why)
{
	struct cache_report	 rep;
	struct timespec		 t0, t1;
	struct stat		 sb;
	char			 path[4096];
	pid_t			 pid;
	long long		 ms, limit;
	int			 fds[2], status, r;

	*why = NULL;
	snprintf(path, sizeof path, "%s/data.mdb", dir);
	if (stat(path, &sb) == -1)
		return (0);
	if (sb.st_size < 2 * sysconf(_SC_PAGESIZE)) {
		xasprintf(why, "data.mdb is %lld bytes, too short for "
		    "LMDB's two meta pages", (long long)sb.st_size);
		return (-1);
	}
	if (pipe2(fds, O_CLOEXEC) == -1) {
		log_warnx("cache %s: not checked: pipe: %s", dir,
		    strerror(errno));
		return (0);
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if ((pid = fork()) == -1) {
		log_warnx("cache %s: not checked: fork: %s", dir,
		    strerror(errno));
		close(fds[0]);
		close(fds[1]);
		return (0);
	}
	if (pid == 0) {
		close(fds[0]);
		cache_check_child(dir, map_size, fds[1]);
	}
	close(fds[1]);
	limit = CACHE_CHECK_SECONDS + sb.st_size / CACHE_CHECK_RATE;
	memset(&rep, 0, sizeof rep);
	if ((r = cache_check_read(fds[0], &rep, (int)(limit * 1000))) == -2)
		kill(pid, SIGKILL);
	close(fds[0]);
	while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
		;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (t1.tv_sec - t0.tv_sec) * 1000LL +
	    (t1.tv_nsec - t0.tv_nsec) / 1000000;
	rep.why[sizeof rep.why - 1] = '\0';

	if (r == -2)
		xasprintf(why, "reading it took more than %lld s", limit);
	else if (WIFSIGNALED(status) && WTERMSIG(status) != SIGKILL)
		xasprintf(why, "reading it killed the reader (%s)",
		    strsignal(WTERMSIG(status)));
	else if (r == -1)
		xasprintf(why, "its reader ended without a verdict "
		    "(status %d)", status);
	else if (rep.verdict == CACHE_DAMAGED)
		xasprintf(why, "%s", rep.why);
	else {
		if (rep.verdict == CACHE_UNCHECKED)
			log_warnx("cache %s: not checked: %s", dir, rep.why);
		else if (rep.bad_entries > 0)
			log_warnx("cache %s: %llu entries fail their checksum; "
			    "each goes when it is read", dir,
			    (unsigned long long)rep.bad_entries);
		log_debug("cache %s: checked %llu records (%llu MB) in %lld "
		    "ms", dir, (unsigned long long)rep.records,
		    (unsigned long long)(rep.bytes >> 20), ms);
		return (0);
	}
	return (-1);
}
