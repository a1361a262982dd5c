/*
 * cache.c - the LMDB store: lookup, store with eviction, invalidation.
 *
 * Layout: the "entries" database maps a cache key to a value that starts
 * with struct cache_rec; "tenant_age" maps "<tenant>\0<seq>" to the key it
 * was written under, so a tenant's oldest entry is the first under its
 * name, and "tenants" counts each tenant's bytes: eviction takes the
 * oldest entries of the tenant holding the most.  Apart from them: delete
 * guards ("guards"), owner records ("owners", "owner_index",
 * "owner_clients", "issued") and the format mark ("meta").  The byte
 * budget is the pages of them all; the map itself is sized with headroom
 * above max_size for LMDB's free pages, and a full map (MDB_MAP_FULL)
 * makes a write evict more and retry, then give up: caching is best
 * effort, serving is not.
 *
 * Transactions are short and never held across loop iterations.  Errors
 * inside a write transaction are sticky (c->rc): a chain of calls is
 * checked once, at the end.
 *
 * A cache is disposable, so a damaged one must never crash the proxy nor
 * serve a wrong body.  At start-up a forked child reads the whole file
 * before this process maps it (cache_check()): a file shorter than its
 * meta says, a page LMDB cannot read, or one that kills the reader makes
 * the cache start empty.  Each value carries a checksum, checked on every
 * read: a changed byte is a miss, and the entry goes.  The "meta"
 * database marks the record format; a cache written in another is
 * emptied of its entries.
 */
#include "config.h"

#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lmdb.h>
#include <xxhash.h>

#include "cache.h"
#include "cache_int.h"
#include "log.h"

#define CACHE_SYNC_SECONDS	1

/*
 * An hour past the time it guards up to, a delete guard is spent: no
 * fetch still in flight began before it.
 */
#define CACHE_GUARD_SPENT	(60 * 60)
#define CACHE_GMAGIC		0x31445243u	/* "CRD1" */
#define CACHE_FLOOR_KEY		"\0floor"

/* A delete guard (the "guards" database, keyed by response id). */
struct cache_gval {
	uint32_t	magic;
	uint32_t	count;		/* DELETEs whose outcome is not known */
	uint32_t	window;		/* seconds they may take effect in */
	uint32_t	keep;		/* seconds its tombstone is served */
	int64_t		pending_at;	/* the last of them began; 0: none */
	int64_t		deleted_at;	/* the upstream said deleted; 0: no */
};

static int
cache_mkdirs(const char *dir)
{
	char	 path[4096], *p;

	if (strlen(dir) >= sizeof path) {
		errno = ENAMETOOLONG;
		return (-1);
	}
	strcpy(path, dir);
	for (p = path + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0700) == -1 && errno != EEXIST)
			return (-1);
		*p = '/';
	}
	if (mkdir(path, 0700) == -1 && errno != EEXIST)
		return (-1);
	return (0);
}

int
cache_rec_parse(const MDB_val *v, struct cache_rec *rec)
{
	if (v->mv_size < sizeof *rec)
		return (-1);
	memcpy(rec, v->mv_data, sizeof *rec);
	if (rec->magic != CACHE_MAGIC ||
	    (uint64_t)sizeof *rec + rec->etag_len + rec->hdrs_len +
	    rec->body_len != v->mv_size)
		return (-1);
	return (0);
}

uint64_t
cache_rec_sum(const MDB_val *k, const MDB_val *v)
{
	return (XXH3_64bits_withSeed((const char *)v->mv_data +
	    sizeof(uint64_t), v->mv_size - sizeof(uint64_t),
	    XXH3_64bits(k->mv_data, k->mv_size)));
}

int
cache_rec_check(const MDB_val *k, const MDB_val *v, struct cache_rec *rec)
{
	if (cache_rec_parse(v, rec) == -1 || rec->sum != cache_rec_sum(k, v))
		return (-1);
	return (0);
}

/* Syncs the map in the background, so no request ever waits for fsync. */
static void *
cache_sync_loop(void *arg)
{
	struct cache	*c = arg;
	struct timespec	 ts;
	int		 dirty, stop;

	pthread_mutex_lock(&c->mtx);
	for (;;) {
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += CACHE_SYNC_SECONDS;
		while (!c->stopping &&
		    pthread_cond_timedwait(&c->cond, &c->mtx, &ts) == 0)
			;
		dirty = c->dirty;
		c->dirty = 0;
		stop = c->stopping;
		pthread_mutex_unlock(&c->mtx);
		if (dirty)
			mdb_env_sync(c->env, 1);
		if (stop)
			return (NULL);
		pthread_mutex_lock(&c->mtx);
	}
}

/*
 * Before format 3, "age" was one index of every tenant's entries (seq ->
 * key): it goes, and the entries with it (see cache_format()).
 */
static int
cache_drop_old_age(MDB_txn *txn)
{
	MDB_dbi	old;
	int	rc;

	if ((rc = mdb_dbi_open(txn, "age", MDB_INTEGERKEY, &old)) ==
	    MDB_NOTFOUND)
		return (0);
	return (rc != 0 ? rc : mdb_drop(txn, old, 1));
}

/*
 * Entries written in another record format are never read as ours: a
 * cache without this format's mark loses its entries, with one log line.
 * Owner records, whose format has not changed, are kept.
 */
static int
cache_format(struct cache *c, MDB_txn *txn, const char *dir)
{
	static const char	 name[] = "format";
	MDB_val			 k = { sizeof name - 1, (void *)name }, v;
	MDB_stat		 s;
	uint32_t		 fmt = CACHE_FORMAT, old = 1;
	int			 rc;

	if ((rc = mdb_get(txn, c->meta, &k, &v)) == 0) {
		old = 0;
		if (v.mv_size == sizeof old)
			memcpy(&old, v.mv_data, sizeof old);
	} else if (rc != MDB_NOTFOUND)
		return (rc);
	if (old == fmt)
		return (0);
	if ((rc = mdb_stat(txn, c->entries, &s)) != 0)
		return (rc);
	if (s.ms_entries > 0) {
		log_warnx("cache %s: written in record format %u, not %u; "
		    "dropping its %zu entries", dir, old, fmt, s.ms_entries);
		if ((rc = mdb_drop(txn, c->entries, 0)) != 0 ||
		    (rc = mdb_drop(txn, c->age, 0)) != 0 ||
		    (rc = mdb_drop(txn, c->tenants, 0)) != 0)
			return (rc);
	}
	v.mv_size = sizeof fmt;
	v.mv_data = &fmt;
	return (mdb_put(txn, c->meta, &k, &v, 0));
}

static int
cache_env_open(struct cache *c, const char *dir, char **cause)
{
	MDB_txn	*txn = NULL;
	int	 rc;

	if ((rc = mdb_env_create(&c->env)) != 0 ||
	    (rc = mdb_env_set_maxdbs(c->env, 10)) != 0 ||
	    (rc = mdb_env_set_maxreaders(c->env, CACHE_MAX_READERS)) != 0 ||
	    (rc = mdb_env_set_mapsize(c->env, c->map_size)) != 0)
		goto fail;
	rc = mdb_env_open(c->env, dir, MDB_NOSYNC | MDB_NOTLS, 0600);
	if (rc != 0)
		goto fail;
	/* Readers left by a crashed process would pin old pages forever. */
	mdb_reader_check(c->env, NULL);
	if ((rc = mdb_txn_begin(c->env, NULL, 0, &txn)) != 0 ||
	    (rc = mdb_dbi_open(txn, "entries", MDB_CREATE, &c->entries)) != 0 ||
	    (rc = cache_drop_old_age(txn)) != 0 ||
	    (rc = mdb_dbi_open(txn, "tenant_age", MDB_CREATE, &c->age)) != 0 ||
	    (rc = mdb_dbi_open(txn, "tenants", MDB_CREATE, &c->tenants)) != 0 ||
	    (rc = mdb_dbi_open(txn, "guards", MDB_CREATE, &c->guards)) != 0 ||
	    (rc = mdb_dbi_open(txn, "owners", MDB_CREATE, &c->owners)) != 0 ||
	    (rc = mdb_dbi_open(txn, "owner_index", MDB_CREATE,
	    &c->owner_index)) != 0 ||
	    (rc = mdb_dbi_open(txn, "owner_clients", MDB_CREATE,
	    &c->owner_clients)) != 0 ||
	    (rc = mdb_dbi_open(txn, "issued", MDB_CREATE | MDB_INTEGERKEY,
	    &c->issued)) != 0 ||
	    (rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &c->meta)) != 0 ||
	    (rc = cache_format(c, txn, dir)) != 0 ||
	    (rc = cache_owner_upgrade(c, txn)) != 0)
		goto fail;
	if ((rc = mdb_txn_commit(txn)) != 0) {
		txn = NULL;
		goto fail;
	}
	return (0);
fail:
	if (txn != NULL)
		mdb_txn_abort(txn);
	if (c->env != NULL)
		mdb_env_close(c->env);
	c->env = NULL;
	if (asprintf(cause, "cache %s: %s", dir, mdb_strerror(rc)) == -1)
		fatalx("out of memory");
	return (rc);
}

/*
 * The start-up check.  LMDB trusts its file: a page past the end of a
 * truncated one is a SIGBUS, a garbled one an assertion or a wild
 * pointer.  So before this process maps the file, a child reads all of
 * it, and dies in its place if it must.  (LMDB: open an environment after
 * any fork, never use one across it.)  The child uses only LMDB, memory
 * and write(2), so the threads its parent may have (the access log's
 * writer) hold nothing it needs.
 */

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

/*
 * The page p lies in; fails unless it is a leaf that says it is that
 * page.  The map's address is not told (mdb_env_info()'s me_mapaddr is
 * only MDB_FIXEDMAP's): the first page found gives it, and every other
 * page must agree.
 */
static size_t
cache_walk_leaf(struct cache_walk *w, const void *p, const char *name)
{
	const char	*hp;
	uint64_t	 pgno;
	uint16_t	 flags, lower, upper;

	hp = (const char *)((uintptr_t)p & ~(uintptr_t)(w->psize - 1));
	memcpy(&pgno, hp, sizeof pgno);
	memcpy(&flags, hp + 10, sizeof flags);
	memcpy(&lower, hp + 12, sizeof lower);
	memcpy(&upper, hp + 14, sizeof upper);
	if (w->map == NULL && pgno >= 2 && pgno < w->limit &&
	    (uintptr_t)hp >= pgno * w->psize)
		w->map = hp - pgno * w->psize;
	if (pgno < 2 || pgno >= w->limit || hp != w->map + pgno * w->psize ||
	    (flags & CACHE_P_LEAF) == 0 || lower < CACHE_PAGEHDRSZ ||
	    lower > upper || upper > w->psize)
		cache_check_fail(CACHE_DAMAGED, "%s: page %llu is not the leaf "
		    "it should be", name, (unsigned long long)pgno);
	return ((size_t)pgno);
}

/*
 * Mark n pages from pg as seen; fails if one was already: a page used
 * twice, or used and free, would be given out while in use.
 */
static void
cache_walk_mark(struct cache_walk *w, size_t pg, size_t n, const char *name)
{
	for (; n > 0; pg++, n--) {
		if (w->seen[pg / 8] & (1 << (pg % 8)))
			cache_check_fail(CACHE_DAMAGED, "%s: page %zu is used "
			    "twice", name, pg);
		w->seen[pg / 8] |= 1 << (pg % 8);
	}
}

/* The pages of a value stored on overflow pages, checked. */
static size_t
cache_walk_overflow(struct cache_walk *w, const MDB_val *v, const char *name)
{
	const char	*hp = (const char *)v->mv_data - CACHE_PAGEHDRSZ;
	size_t		 pg = (size_t)(hp - w->map) / w->psize, need;
	uint64_t	 pgno;
	uint32_t	 pages;
	uint16_t	 flags;

	memcpy(&pgno, hp, sizeof pgno);
	memcpy(&flags, hp + 10, sizeof flags);
	memcpy(&pages, hp + 12, sizeof pages);
	need = (CACHE_PAGEHDRSZ + v->mv_size + w->psize - 1) / w->psize;
	if (hp < w->map || pgno != pg || pg >= w->limit ||
	    (flags & CACHE_P_OVERFLOW) == 0 || pages < need ||
	    pages > w->limit - pg)
		cache_check_fail(CACHE_DAMAGED, "%s: the value on page %zu is "
		    "damaged", name, pg);
	cache_walk_mark(w, pg, pages, name);
	return (pages);
}

/* A free-list record: a count, then that many page numbers. */
static void
cache_walk_free(struct cache_walk *w, const MDB_val *v)
{
	uint64_t	n, pg, i;

	if (v->mv_size < sizeof n || v->mv_size % sizeof n != 0)
		cache_check_fail(CACHE_DAMAGED, "the free list is damaged");
	memcpy(&n, v->mv_data, sizeof n);
	if (n != v->mv_size / sizeof n - 1)
		cache_check_fail(CACHE_DAMAGED, "the free list is damaged");
	for (i = 1; i <= n; i++) {
		memcpy(&pg, (const char *)v->mv_data + i * sizeof pg,
		    sizeof pg);
		if (pg < 2 || pg >= w->limit)
			cache_check_fail(CACHE_DAMAGED, "the free list names "
			    "page %llu", (unsigned long long)pg);
		cache_walk_mark(w, (size_t)pg, 1, "the free list");
	}
	w->pages += n;
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

void
cache_walk_branches(struct cache_walk *w)
{
	const char	*hp;
	uint64_t	 pgno, n = 0;
	uint16_t	 flags, lower, upper;
	size_t		 pg;

	if (w->pages + 2 != w->limit)
		cache_check_fail(CACHE_DAMAGED, "%lld of its %zu pages are "
		    "neither in use nor free", (long long)w->limit - 2 -
		    (long long)w->pages, w->limit);
	if (w->map == NULL)
		return;
	for (pg = 2; pg < w->limit; pg++) {
		if (w->seen[pg / 8] & (1 << (pg % 8)))
			continue;
		hp = w->map + pg * w->psize;
		memcpy(&pgno, hp, sizeof pgno);
		memcpy(&flags, hp + 10, sizeof flags);
		memcpy(&lower, hp + 12, sizeof lower);
		memcpy(&upper, hp + 14, sizeof upper);
		if (pgno != pg || (flags & CACHE_P_BRANCH) == 0 ||
		    lower < CACHE_PAGEHDRSZ + 2 * 2 || lower > upper ||
		    upper > w->psize)
			cache_check_fail(CACHE_DAMAGED, "page %zu is not the "
			    "branch it should be", pg);
		n++;
	}
	if (n != w->branches)
		cache_check_fail(CACHE_DAMAGED, "%llu branch pages, but the "
		    "headers say %llu", (unsigned long long)n,
		    (unsigned long long)w->branches);
}

/* The flags respcache opens its databases with; -1 for another name. */
static int
cache_check_flags(const char *name)
{
	static const struct {
		const char	*name;
		unsigned int	 flags;
	} dbs[] = {
		{ "entries", 0 }, { "age", MDB_INTEGERKEY }, { "owners", 0 },
		{ "tenant_age", 0 }, { "tenants", 0 },
		{ "owner_age", MDB_INTEGERKEY }, { "meta", 0 },
		{ "guards", 0 }, { "owner_index", 0 }, { "owner_clients", 0 },
		{ "issued", MDB_INTEGERKEY },
		{ "the main database", 0 },
	};
	size_t	i;

	for (i = 0; i < sizeof dbs / sizeof dbs[0]; i++)
		if (strcmp(name, dbs[i].name) == 0)
			return ((int)dbs[i].flags);
	return (-1);
}

void
cache_walk_db(struct cache_walk *w, MDB_dbi dbi, const char *name)
{
	MDB_cursor		*cur;
	MDB_stat		 st;
	MDB_val			 k, v, pk = { 0, NULL };
	struct cache_rec	 rec;
	unsigned int		 flags;
	uint64_t		 n = 0, leaves = 0, ovpages = 0;
	size_t			 pg, last = (size_t)-1;
	int			 rc, entries;

	entries = w->check_entries && strcmp(name, "entries") == 0;
	flags = 0;	/* mdb_dbi_flags() refuses the free list's */
	if ((rc = mdb_stat(w->txn, dbi, &st)) != 0 ||
	    (dbi != CACHE_FREE_DBI &&
	    (rc = mdb_dbi_flags(w->txn, dbi, &flags)) != 0) ||
	    (rc = mdb_cursor_open(w->txn, dbi, &cur)) != 0)
		cache_check_rc(name, rc);
	if ((flags & MDB_DUPSORT) || (cache_check_flags(name) != -1 &&
	    flags != (unsigned int)cache_check_flags(name)))
		cache_check_fail(CACHE_DAMAGED, "%s: its flags are damaged "
		    "(%#x)", name, flags);
	w->pages += st.ms_branch_pages + st.ms_leaf_pages +
	    st.ms_overflow_pages;
	w->branches += st.ms_branch_pages;
	while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
		if (++n > st.ms_entries)
			cache_check_fail(CACHE_DAMAGED, "%s holds more "
			    "records than its header says (%zu)", name,
			    st.ms_entries);
		if (n > 1 && mdb_cmp(w->txn, dbi, &pk, &k) >= 0)
			cache_check_fail(CACHE_DAMAGED, "%s: keys out of "
			    "order", name);
		pk = k;
		if ((pg = cache_walk_leaf(w, k.mv_data, name)) != last) {
			cache_walk_mark(w, pg, 1, name);
			leaves++;
			last = pg;
		}
		/* A key, and a value not on overflow pages, lie in its leaf. */
		if (k.mv_size == 0 || cache_walk_leaf(w, (const char *)
		    k.mv_data + k.mv_size - 1, name) != pg)
			cache_check_fail(CACHE_DAMAGED, "%s: a key crosses "
			    "page %zu", name, pg);
		if (((uintptr_t)v.mv_data & (w->psize - 1)) == CACHE_PAGEHDRSZ)
			ovpages += cache_walk_overflow(w, &v, name);
		else if (v.mv_size > 0 && (cache_walk_leaf(w, v.mv_data,
		    name) != pg || cache_walk_leaf(w, (const char *)
		    v.mv_data + v.mv_size - 1, name) != pg))
			cache_check_fail(CACHE_DAMAGED, "%s: a value crosses "
			    "page %zu", name, pg);
		/* Every byte read: a page that cannot be, ends us here. */
		w->sink += XXH3_64bits(k.mv_data, k.mv_size);
		if (entries) {
			if (cache_rec_check(&k, &v, &rec) == -1)
				cache_check_rep.bad_entries++;
		} else
			w->sink += XXH3_64bits(v.mv_data, v.mv_size);
		if (dbi == CACHE_FREE_DBI)
			cache_walk_free(w, &v);
		cache_check_rep.records++;
		cache_check_rep.bytes += k.mv_size + v.mv_size;
	}
	if (rc != MDB_NOTFOUND)
		cache_check_rc(name, rc);
	if (n != st.ms_entries || leaves != st.ms_leaf_pages ||
	    ovpages != st.ms_overflow_pages)
		cache_check_fail(CACHE_DAMAGED, "%s: %llu records on %llu+%llu "
		    "pages, but its header says %zu on %zu+%zu", name,
		    (unsigned long long)n, (unsigned long long)leaves,
		    (unsigned long long)ovpages, st.ms_entries,
		    st.ms_leaf_pages, st.ms_overflow_pages);
	mdb_cursor_close(cur);
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
		if (asprintf(why, "data.mdb is %lld bytes, too short for "
		    "LMDB's two meta pages", (long long)sb.st_size) == -1)
			fatalx("out of memory");
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
		r = asprintf(why, "reading it took more than %lld s", limit);
	else if (WIFSIGNALED(status) && WTERMSIG(status) != SIGKILL)
		r = asprintf(why, "reading it killed the reader (%s)",
		    strsignal(WTERMSIG(status)));
	else if (r == -1)
		r = asprintf(why, "its reader ended without a verdict "
		    "(status %d)", status);
	else if (rep.verdict == CACHE_DAMAGED)
		r = asprintf(why, "%s", rep.why);
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
	if (r == -1)
		fatalx("out of memory");
	return (-1);
}

/* Remove the cache's files, to start afresh. */
static void
cache_remove(const char *dir)
{
	char	path[4096];

	snprintf(path, sizeof path, "%s/data.mdb", dir);
	unlink(path);
	snprintf(path, sizeof path, "%s/lock.mdb", dir);
	unlink(path);
}

struct cache *
cache_open(const char *dir, size_t max_size, double ttl, char **cause)
{
	struct cache	*c;
	char		*why;
	long		 psz = sysconf(_SC_PAGESIZE);
	int		 rc;

	if (cache_mkdirs(dir) == -1) {
		if (asprintf(cause, "cache dir %s: %s", dir,
		    strerror(errno)) == -1)
			fatalx("out of memory");
		return (NULL);
	}
	if ((c = calloc(1, sizeof *c)) == NULL)
		fatalx("out of memory");
	c->max_size = max_size;
	c->ttl = ttl;
	/* Headroom for free pages and the pages of open snapshots. */
	c->map_size = max_size + max_size / 4 + 1024 * 1024;
	c->map_size = (c->map_size + (size_t)psz - 1) / (size_t)psz *
	    (size_t)psz;

	/* A cache is disposable: start afresh rather than not at all. */
	if (cache_check(dir, c->map_size, &why) == -1) {
		log_warnx("cache %s: %s; starting with an empty cache", dir,
		    why);
		free(why);
		cache_remove(dir);
	}
	rc = cache_env_open(c, dir, cause);
	if (rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH ||
	    rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND) {
		log_warnx("%s; starting with an empty cache", *cause);
		free(*cause);
		*cause = NULL;
		cache_remove(dir);
		rc = cache_env_open(c, dir, cause);
	}
	if (rc != 0) {
		free(c);
		return (NULL);
	}
	pthread_mutex_init(&c->mtx, NULL);
	pthread_cond_init(&c->cond, NULL);
	if (pthread_create(&c->syncer, NULL, cache_sync_loop, c) != 0)
		fatalx("cannot start the cache sync thread");
	return (c);
}

void
cache_close(struct cache *c)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&c->mtx);
	c->stopping = 1;
	c->dirty = 1;
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->mtx);
	pthread_join(c->syncer, NULL);
	cache_thread_end(c);
	mdb_env_close(c->env);
	pthread_mutex_destroy(&c->mtx);
	pthread_cond_destroy(&c->cond);
	free(c);
}

/*
 * Each thread keeps one read transaction, reset between lookups and
 * renewed for the next (MDB_NOTLS lets it live on any thread).
 */
static __thread struct cache	*cache_tls_cache;
static __thread MDB_txn		*cache_tls_txn;

void
cache_thread_end(struct cache *c)
{
	if (cache_tls_cache != c || cache_tls_txn == NULL)
		return;
	mdb_txn_abort(cache_tls_txn);
	cache_tls_txn = NULL;
	cache_tls_cache = NULL;
}

/* Begin this thread's read transaction, or renew the one it has. */
static int
cache_read_try(struct cache *c)
{
	if (cache_tls_cache == c && cache_tls_txn != NULL)
		return (mdb_txn_renew(cache_tls_txn));
	cache_tls_cache = c;
	cache_tls_txn = NULL;
	return (mdb_txn_begin(c->env, NULL, MDB_RDONLY, &cache_tls_txn));
}

MDB_txn *
cache_read_begin(struct cache *c)
{
	int	rc;

	if ((rc = cache_read_try(c)) == MDB_READERS_FULL) {
		mdb_reader_check(c->env, NULL);
		rc = cache_read_try(c);
	}
	if (rc != 0) {
		log_warnx("cache: lookup: %s", mdb_strerror(rc));
		CACHE_COUNT(c, errors);
		return (NULL);
	}
	return (cache_tls_txn);
}

uint64_t
cache_count_get(MDB_txn *txn, MDB_dbi dbi, const void *key, size_t klen,
    int *rc)
{
	MDB_val		k = { klen, (void *)key }, v;
	uint64_t	n = 0;

	if ((*rc = mdb_get(txn, dbi, &k, &v)) == 0 && v.mv_size == sizeof n)
		memcpy(&n, v.mv_data, sizeof n);
	if (*rc == MDB_NOTFOUND)
		*rc = 0;
	return (n);
}

int
cache_count_set(MDB_txn *txn, MDB_dbi dbi, const void *key, size_t klen,
    uint64_t n)
{
	MDB_val	k = { klen, (void *)key }, v = { sizeof n, &n };
	int	rc;

	if (n == 0) {
		rc = mdb_del(txn, dbi, &k, NULL);
		return (rc == MDB_NOTFOUND ? 0 : rc);
	}
	return (mdb_put(txn, dbi, &k, &v, 0));
}

/*
 * The age index, per tenant: "<tenant>\0<seq, big-endian>" -> key, so a
 * tenant's oldest entry is the first under its name; "tenants" holds
 * each tenant's bytes (keys and values) and, under "\0seq", the last seq.
 */
#define CACHE_TENANT_MAX	480

/* The tenant part of an entry's key, "<tenant>\0...": its length. */
static size_t
cache_tenant_len(const MDB_val *k)
{
	const char	*p = memchr(k->mv_data, '\0', k->mv_size);

	return (p != NULL ? (size_t)(p - (const char *)k->mv_data) :
	    k->mv_size);
}

size_t
cache_index_key(char *buf, const char *name, size_t nlen, uint64_t seq)
{
	int	i;

	if (buf != name)
		memcpy(buf, name, nlen);
	buf[nlen] = '\0';
	for (i = 0; i < 8; i++)
		buf[nlen + 1 + i] = (char)(seq >> (56 - 8 * i));
	return (nlen + 9);
}

/* key's age key for seq into buf; its length, 0 if the tenant is long. */
static size_t
cache_age_key(char *buf, const MDB_val *key, uint64_t seq)
{
	size_t	tl = cache_tenant_len(key);

	if (tl > CACHE_TENANT_MAX)
		return (0);
	return (cache_index_key(buf, key->mv_data, tl, seq));
}

/* A tenant's bytes (or the last seq, for "\0seq"), and setting them. */
#define cache_tenant_get(c, txn, t, tl, rc)				\
	cache_count_get((txn), (c)->tenants, (t), (tl), (rc))
#define cache_tenant_set(c, txn, t, tl, n)				\
	cache_count_set((txn), (c)->tenants, (t), (tl), (n))

/* Add delta (signed) to the bytes of key's tenant. */
static int
cache_tenant_add(struct cache *c, MDB_txn *txn, const MDB_val *key,
    int64_t delta)
{
	size_t		tl = cache_tenant_len(key);
	uint64_t	n;
	int		rc;

	n = cache_tenant_get(c, txn, key->mv_data, tl, &rc);
	if (rc != 0)
		return (rc);
	if (delta < 0 && (uint64_t)-delta > n)
		n = 0;
	else
		n += (uint64_t)delta;
	return (cache_tenant_set(c, txn, key->mv_data, tl, n));
}

int
cache_index_add(struct cache *c, MDB_txn *txn, MDB_val *key, size_t vsize,
    uint64_t seq)
{
	char	buf[CACHE_TENANT_MAX + 9];
	MDB_val	ak;
	int	rc;

	if ((ak.mv_size = cache_age_key(buf, key, seq)) == 0)
		return (MDB_BAD_VALSIZE);
	ak.mv_data = buf;
	if ((rc = mdb_put(txn, c->age, &ak, key, 0)) != 0)
		return (rc);
	return (cache_tenant_add(c, txn, key, (int64_t)(key->mv_size +
	    vsize)));
}

int
cache_index_del(struct cache *c, MDB_txn *txn, const MDB_val *key,
    const MDB_val *v)
{
	struct cache_rec	rec;
	char			buf[CACHE_TENANT_MAX + 9];
	MDB_val			ak, av;
	size_t			vsize = v->mv_size;
	int			rc = 0;

	if (cache_rec_parse(v, &rec) == 0 &&
	    (ak.mv_size = cache_age_key(buf, key, rec.seq)) != 0) {
		ak.mv_data = buf;
		if ((rc = mdb_get(txn, c->age, &ak, &av)) == 0 &&
		    av.mv_size == key->mv_size &&
		    memcmp(av.mv_data, key->mv_data, key->mv_size) == 0)
			rc = mdb_del(txn, c->age, &ak, NULL);
		if (rc != 0 && rc != MDB_NOTFOUND)
			return (rc);
	}
	return (cache_tenant_add(c, txn, key, -(int64_t)(key->mv_size +
	    vsize)));
}

/*
 * Delete the entry under key if its value is still damaged (another
 * thread may have rewritten it since), with its age record if that
 * still names this key: a damaged value's seq cannot be trusted.
 * Counted in errors; logged at most once a minute, at debug otherwise.
 */
static void
cache_drop_damaged(struct cache *c, const void *key, size_t klen)
{
	MDB_val			 k = { klen, (void *)key }, v;
	MDB_txn			*txn;
	struct cache_rec	 rec;
	time_t			 now = time(NULL), then;
	int			 rc;

	CACHE_COUNT(c, errors);
	if ((rc = mdb_txn_begin(c->env, NULL, 0, &txn)) != 0)
		goto done;
	rc = mdb_get(txn, c->entries, &k, &v);
	if (rc == 0 && cache_rec_check(&k, &v, &rec) == -1) {
		rc = cache_index_del(c, txn, &k, &v);
		if (rc == 0)
			rc = mdb_del(txn, c->entries, &k, NULL);
	} else if (rc == 0 || rc == MDB_NOTFOUND) {
		mdb_txn_abort(txn);	/* gone or rewritten meanwhile */
		rc = 0;
		goto done;
	}
	if (rc != 0)
		mdb_txn_abort(txn);
	else if ((rc = mdb_txn_commit(txn)) == 0) {
		pthread_mutex_lock(&c->mtx);
		c->dirty = 1;
		pthread_mutex_unlock(&c->mtx);
	}
done:
	then = __atomic_load_n(&c->damage_logged, __ATOMIC_RELAXED);
	if (now - then >= 60 && __atomic_compare_exchange_n(&c->damage_logged,
	    &then, now, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		log_warnx("cache: an entry failed its checksum and was "
		    "dropped%s%s (%llu cache errors so far)",
		    rc != 0 ? "; the delete failed: " : "",
		    rc != 0 ? mdb_strerror(rc) : "",
		    (unsigned long long)__atomic_load_n(&c->st.errors,
		    __ATOMIC_RELAXED));
	else
		log_debug("cache: an entry failed its checksum and was "
		    "dropped%s%s", rc != 0 ? "; the delete failed: " : "",
		    rc != 0 ? mdb_strerror(rc) : "");
}

int
cache_get(struct cache *c, const void *key, size_t klen, time_t now,
    cache_visit_fn fn, void *arg)
{
	MDB_val			 k = { klen, (void *)key }, v;
	MDB_txn			*txn;
	struct cache_rec	 rec;
	struct cache_entry	 e;
	const char		*p;
	int			 rc, hit = 0;

	if (klen > (size_t)mdb_env_get_maxkeysize(c->env))
		return (0);
	if ((txn = cache_read_begin(c)) == NULL)
		return (-1);
	rc = mdb_get(txn, c->entries, &k, &v);
	if (rc == 0 && cache_rec_check(&k, &v, &rec) == -1) {
		mdb_txn_reset(txn);
		cache_drop_damaged(c, key, klen);
		return (0);
	}
	if (rc == 0 && (c->ttl <= 0 ||
	    (double)(now - (time_t)rec.stored_at) < c->ttl)) {
		p = (const char *)v.mv_data + sizeof rec;
		e.status = rec.status;
		e.etag = p;
		e.etag_len = rec.etag_len;
		e.hdrs = p + rec.etag_len;
		e.hdrs_len = rec.hdrs_len;
		e.body = p + rec.etag_len + rec.hdrs_len;
		e.body_len = rec.body_len;
		e.stored_at = (time_t)rec.stored_at;
		fn(&e, arg);
		hit = 1;
	} else if (rc != 0 && rc != MDB_NOTFOUND) {
		log_warnx("cache: lookup: %s", mdb_strerror(rc));
		CACHE_COUNT(c, errors);
	}
	mdb_txn_reset(txn);
	return (hit);
}

int
cache_del_entry(struct cache *c, MDB_txn *txn, MDB_val *k, MDB_val *v)
{
	int	rc;

	if ((rc = cache_index_del(c, txn, k, v)) != 0)
		return (rc);
	rc = mdb_del(txn, c->entries, k, NULL);
	return (rc == MDB_NOTFOUND ? 0 : rc);
}

size_t
cache_db_used(MDB_txn *txn, MDB_dbi dbi)
{
	MDB_stat	s;

	if (mdb_stat(txn, dbi, &s) != 0)
		return (0);
	return ((s.ms_branch_pages + s.ms_leaf_pages + s.ms_overflow_pages) *
	    (size_t)s.ms_psize);
}

size_t
cache_owners_used(struct cache *c, MDB_txn *txn)
{
	return (cache_db_used(txn, c->owners) +
	    cache_db_used(txn, c->owner_index) +
	    cache_db_used(txn, c->owner_clients));
}

size_t
cache_used(struct cache *c, MDB_txn *txn)
{
	return (cache_db_used(txn, c->entries) + cache_db_used(txn, c->age) +
	    cache_db_used(txn, c->tenants) + cache_owners_used(c, txn) +
	    cache_db_used(txn, c->issued) + cache_guards_used(c, txn));
}

/*
 * The tenant holding the most bytes into name (its length in *len), and
 * the bytes of the one after it in *second; 0 if there is none.
 */
static uint64_t
cache_tenant_most(struct cache *c, MDB_txn *txn, char *name, size_t *len,
    uint64_t *second, int *rc)
{
	MDB_cursor	*cur;
	MDB_cursor_op	 op;
	MDB_val		 k, v;
	uint64_t	 n, most = 0;

	*second = 0;
	if ((*rc = mdb_cursor_open(txn, c->tenants, &cur)) != 0)
		return (0);
	for (op = MDB_FIRST; (*rc = mdb_cursor_get(cur, &k, &v, op)) == 0;
	    op = MDB_NEXT) {
		if (v.mv_size != sizeof n || k.mv_size > CACHE_TENANT_MAX ||
		    (k.mv_size > 0 && *(const char *)k.mv_data == '\0'))
			continue;
		memcpy(&n, v.mv_data, sizeof n);
		if (n > most) {
			*second = most;
			most = n;
			memcpy(name, k.mv_data, k.mv_size);
			*len = k.mv_size;
		} else if (n > *second)
			*second = n;
	}
	mdb_cursor_close(cur);
	if (*rc == MDB_NOTFOUND)
		*rc = 0;
	return (most);
}

int
cache_evict(struct cache *c, MDB_txn *txn, size_t need, size_t budget)
{
	MDB_cursor	*cur;
	MDB_val		 ak, key, v;
	char		 name[CACHE_TENANT_MAX + 9], kbuf[512];
	size_t		 tl = 0;
	uint64_t	 most, second, n;
	int		 rc = 0, batch;

	while (cache_used(c, txn) + need > budget) {
		/* A scan of the tenants, then up to 8 entries at least. */
		most = cache_tenant_most(c, txn, name, &tl, &second, &rc);
		if (rc != 0 || most == 0)
			return (rc);
		batch = 0;
		/* Its oldest entries, while it still holds the most. */
		do {
			if ((rc = mdb_cursor_open(txn, c->age, &cur)) != 0)
				return (rc);
			memset(name + tl, 0, 9);
			ak.mv_size = tl + 9;
			ak.mv_data = name;
			rc = mdb_cursor_get(cur, &ak, &key, MDB_SET_RANGE);
			mdb_cursor_close(cur);
			if (rc == 0 && (ak.mv_size != tl + 9 ||
			    memcmp(ak.mv_data, name, tl + 1) != 0))
				rc = MDB_NOTFOUND;
			if (rc == MDB_NOTFOUND) {
				/* Bytes counted, no entry left: forget them. */
				if ((rc = cache_tenant_set(c, txn, name, tl,
				    0)) != 0)
					return (rc);
				break;
			}
			if (rc != 0 || key.mv_size > sizeof kbuf)
				return (rc != 0 ? rc : MDB_BAD_VALSIZE);
			memcpy(kbuf, key.mv_data, key.mv_size);
			key.mv_data = kbuf;
			if ((rc = mdb_get(txn, c->entries, &key, &v)) == 0)
				rc = cache_del_entry(c, txn, &key, &v);
			else if (rc == MDB_NOTFOUND)	/* a stray age record */
				rc = mdb_del(txn, c->age, &ak, NULL);
			if (rc != 0)
				return (rc);
			CACHE_COUNT(c, evictions);
			n = cache_tenant_get(c, txn, name, tl, &rc);
			batch++;
		} while (rc == 0 && n > 0 && (n >= second || batch < 8) &&
		    cache_used(c, txn) + need > budget);
		if (rc != 0)
			return (rc);
	}
	return (0);
}

int
cache_evict_commit(struct cache *c, size_t need, size_t budget)
{
	MDB_txn	*txn;
	int	 rc;

	if ((rc = mdb_txn_begin(c->env, NULL, 0, &txn)) != 0)
		return (rc);
	if ((rc = cache_evict(c, txn, need, budget)) != 0) {
		mdb_txn_abort(txn);
		return (rc);
	}
	return (mdb_txn_commit(txn));
}

uint64_t
cache_next_seq(struct cache *c, MDB_txn *txn, int *rc)
{
	static const char	key[] = "\0seq";
	uint64_t		seq;

	seq = cache_tenant_get(c, txn, key, sizeof key - 1, rc) + 1;
	if (*rc == 0)
		*rc = cache_tenant_set(c, txn, key, sizeof key - 1, seq);
	return (seq);
}

static int
cache_put_once(struct cache *c, const MDB_val *k,
    const struct cache_guard *guard, const struct cache_rec *tpl,
    const char *etag, const char *hdrs, const void *body, size_t need,
    size_t budget)
{
	MDB_txn			*txn;
	MDB_val			 key = *k, v, old;
	struct cache_rec	 rec = *tpl;
	char			*p;
	int			 rc = 0;

	if ((rc = mdb_txn_begin(c->env, NULL, 0, &txn)) != 0)
		return (rc);
	/* Checked in the writing transaction: no write can slip between. */
	if (guard != NULL)
		rc = cache_guard_blocks(c, txn, guard->id, guard->since);
	if (rc != 0) {
		mdb_txn_abort(txn);
		return (rc);
	}
	/* A rewrite of a key replaces its entry and its age record. */
	rc = mdb_get(txn, c->entries, &key, &old);
	if (rc == 0)
		rc = cache_del_entry(c, txn, &key, &old);
	else if (rc == MDB_NOTFOUND)
		rc = 0;
	if (rc == 0)
		rc = cache_evict(c, txn, need, budget);
	if (rc == 0)
		rec.seq = cache_next_seq(c, txn, &rc);
	if (rc == 0) {
		v.mv_size = sizeof rec + rec.etag_len + rec.hdrs_len +
		    rec.body_len;
		v.mv_data = NULL;
		rc = mdb_put(txn, c->entries, &key, &v, MDB_RESERVE);
	}
	if (rc == 0) {
		p = v.mv_data;
		memcpy(p, &rec, sizeof rec);
		p += sizeof rec;
		memcpy(p, etag, rec.etag_len);
		p += rec.etag_len;
		memcpy(p, hdrs, rec.hdrs_len);
		p += rec.hdrs_len;
		memcpy(p, body, rec.body_len);
		rec.sum = cache_rec_sum(&key, &v);
		memcpy(v.mv_data, &rec.sum, sizeof rec.sum);
		rc = cache_index_add(c, txn, &key, v.mv_size, rec.seq);
	}
	if (rc != 0) {
		mdb_txn_abort(txn);
		return (rc);
	}
	return (mdb_txn_commit(txn));
}

int
cache_put(struct cache *c, const void *key, size_t klen,
    const struct cache_guard *guard, int status, const char *etag,
    size_t etag_len, const char *hdrs, size_t hlen, const void *body,
    size_t blen, time_t now)
{
	struct cache_rec	 rec;
	MDB_val			 k = { klen, (void *)key };
	size_t			 need, budget = c->max_size;
	int			 rc, tries;

	need = klen * 2 + sizeof rec + etag_len + hlen + blen + 64;
	if (klen > (size_t)mdb_env_get_maxkeysize(c->env) ||
	    need > c->max_size / 2 || etag_len > UINT16_MAX)
		return (1);
	memset(&rec, 0, sizeof rec);
	rec.magic = CACHE_MAGIC;
	rec.status = (uint16_t)status;
	rec.etag_len = (uint16_t)etag_len;
	rec.hdrs_len = (uint32_t)hlen;
	rec.body_len = (uint32_t)blen;
	rec.stored_at = (uint64_t)now;

	for (tries = 0; tries < 3; tries++) {
		rc = cache_put_once(c, &k, guard, &rec, etag, hdrs, body,
		    need, budget);
		if (rc != MDB_MAP_FULL && rc != MDB_TXN_FULL)
			break;
		/*
		 * Free pages were short.  Pages freed in a transaction are
		 * reused only by later ones: evict in one of its own, commit,
		 * then write again.
		 */
		budget /= 2;
		if (cache_evict_commit(c, need, budget) != 0)
			break;
	}
	if (rc == 0) {
		pthread_mutex_lock(&c->mtx);
		c->dirty = 1;
		pthread_mutex_unlock(&c->mtx);
		return (0);
	}
	if (rc == MDB_KEYEXIST)
		return (1);
	if (rc == MDB_MAP_FULL || rc == MDB_TXN_FULL) {
		CACHE_COUNT(c, map_full);
		log_warnx("cache: full even after eviction; answer not cached");
		return (1);
	}
	CACHE_COUNT(c, errors);
	log_warnx("cache: store: %s", mdb_strerror(rc));
	return (-1);
}

/*
 * Delete, in txn, every entry whose key starts with prefix, with its age
 * record; adds the count to *n.
 */
static int
cache_del_prefix(struct cache *c, MDB_txn *txn, MDB_cursor *cur,
    const void *prefix, size_t plen, int *n)
{
	MDB_val			 k = { plen, (void *)prefix }, v, kc;
	char			 kbuf[512];
	int			 rc;

	rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	while (rc == 0 && k.mv_size >= plen &&
	    memcmp(k.mv_data, prefix, plen) == 0) {
		/* What LMDB lends lasts until the next write: copied. */
		kc.mv_size = k.mv_size < sizeof kbuf ? k.mv_size : sizeof kbuf;
		kc.mv_data = kbuf;
		memcpy(kbuf, k.mv_data, kc.mv_size);
		if ((rc = cache_index_del(c, txn, &kc, &v)) != 0)
			return (rc);
		if ((rc = mdb_cursor_del(cur, 0)) != 0)
			return (rc);
		(*n)++;
		/* After a delete, MDB_NEXT yields the record that followed. */
		rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
	}
	return (rc == MDB_NOTFOUND ? 0 : rc);
}

/*
 * Run fn(c, txn, cursor, arg, &n) in a write transaction over the
 * entries, committed if it deleted anything; returns the count or -1.
 */
static int
cache_delete(struct cache *c, const char *what,
    int (*fn)(struct cache *, MDB_txn *, MDB_cursor *, const void *, size_t,
    int *), const void *arg, size_t len)
{
	MDB_txn		*txn;
	MDB_cursor	*cur;
	int		 rc, n = 0;

	if ((rc = mdb_txn_begin(c->env, NULL, 0, &txn)) != 0)
		goto fail;
	if ((rc = mdb_cursor_open(txn, c->entries, &cur)) != 0) {
		mdb_txn_abort(txn);
		goto fail;
	}
	rc = fn(c, txn, cur, arg, len, &n);
	mdb_cursor_close(cur);
	if (rc != 0 || n == 0) {
		mdb_txn_abort(txn);
		if (rc != 0)
			goto fail;
		return (0);
	}
	if ((rc = mdb_txn_commit(txn)) != 0)
		goto fail;
	pthread_mutex_lock(&c->mtx);
	c->dirty = 1;
	pthread_mutex_unlock(&c->mtx);
	return (n);
fail:
	CACHE_COUNT(c, errors);
	log_warnx("cache: %s: %s", what, mdb_strerror(rc));
	return (-1);
}

int
cache_invalidate(struct cache *c, const void *prefix, size_t plen)
{
	return (cache_delete(c, "invalidate", cache_del_prefix, prefix, plen));
}

/*
 * Keys start "<tenant>\0<kind>\0<id>\0": for each tenant in turn, delete
 * the id's entries of every kind, then seek past that tenant's keys.
 */
static int
cache_del_id_kinds(struct cache *c, MDB_txn *txn, MDB_cursor *cur,
    const char *id, size_t idlen, const char *kinds, int *n)
{
	MDB_val			 k, v;
	char			*buf = NULL, *p;
	size_t			 tl, i, nk = strlen(kinds);
	int			 rc;

	rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
	while (rc == 0) {
		if ((p = memchr(k.mv_data, '\0', k.mv_size)) == NULL)
			tl = k.mv_size;
		else
			tl = (size_t)(p - (char *)k.mv_data);
		if ((p = realloc(buf, tl + 3 + idlen + 1)) == NULL)
			fatalx("out of memory");
		buf = p;
		memcpy(buf, k.mv_data, tl);
		for (i = 0; i < nk && rc == 0; i++) {
			buf[tl] = '\0';
			buf[tl + 1] = kinds[i];
			buf[tl + 2] = '\0';
			memcpy(buf + tl + 3, id, idlen);
			buf[tl + 3 + idlen] = '\0';
			rc = cache_del_prefix(c, txn, cur, buf, tl + 4 + idlen,
			    n);
		}
		if (rc != 0)
			break;
		/* "<tenant>\1" sorts after every "<tenant>\0..." key. */
		buf[tl] = '\1';
		k.mv_data = buf;
		k.mv_size = tl + 1;
		rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	}
	free(buf);
	return (rc == MDB_NOTFOUND ? 0 : rc);
}

static int
cache_del_id(struct cache *c, MDB_txn *txn, MDB_cursor *cur,
    const void *arg, size_t idlen, int *n)
{
	return (cache_del_id_kinds(c, txn, cur, arg, idlen, "ri", n));
}

static int
cache_del_id_guards(struct cache *c, MDB_txn *txn, MDB_cursor *cur,
    const void *arg, size_t idlen, int *n)
{
	MDB_val	k = { idlen, (void *)arg };
	int	rc;

	if ((rc = mdb_del(txn, c->guards, &k, NULL)) == 0)
		(*n)++;
	else if (rc != MDB_NOTFOUND)
		return (rc);
	return (cache_del_id_kinds(c, txn, cur, arg, idlen, "rit", n));
}

int
cache_purge_id(struct cache *c, const char *id, int guards)
{
	int	n;

	n = cache_delete(c, "purge", guards ? cache_del_id_guards :
	    cache_del_id, id, strlen(id));
	/* A full map has no page for the change: eviction makes some. */
	if (n == -1 && cache_evict_commit(c, 64 * 1024, c->max_size / 2) == 0)
		n = cache_delete(c, "purge", guards ? cache_del_id_guards :
		    cache_del_id, id, strlen(id));
	return (n);
}

/* A guard's end: the last time it forbids a store for. */
static int64_t
cache_guard_until(const struct cache_gval *g)
{
	int64_t	p = g->pending_at != 0 ? g->pending_at + g->window : 0;

	return (p > g->deleted_at ? p : g->deleted_at);
}

/* 1 if g can no longer forbid anything nor answer as a tombstone. */
static int
cache_guard_spent(const struct cache_gval *g, time_t now)
{
	int64_t	keep = g->keep > CACHE_GUARD_SPENT ? g->keep : CACHE_GUARD_SPENT;

	return ((int64_t)now > cache_guard_until(g) + keep);
}

/* Read id's guard in txn: 0 and *g, MDB_NOTFOUND, or an LMDB error. */
static int
cache_guard_get(struct cache *c, MDB_txn *txn, const char *id,
    struct cache_gval *g)
{
	MDB_val	k = { strlen(id), (void *)id }, v;
	int	rc;

	if ((rc = mdb_get(txn, c->guards, &k, &v)) != 0)
		return (rc);
	if (v.mv_size != sizeof *g)
		return (MDB_CORRUPTED);
	memcpy(g, v.mv_data, sizeof *g);
	return (g->magic == CACHE_GMAGIC ? 0 : MDB_CORRUPTED);
}

/* The floor: every answer fetched at or before it is refused. */
static int64_t
cache_guard_floor(struct cache *c, MDB_txn *txn, int *rc)
{
	MDB_val		k = { sizeof CACHE_FLOOR_KEY - 1, CACHE_FLOOR_KEY }, v;
	int64_t		f = 0;

	if ((*rc = mdb_get(txn, c->guards, &k, &v)) == 0 &&
	    v.mv_size == sizeof f)
		memcpy(&f, v.mv_data, sizeof f);
	if (*rc == MDB_NOTFOUND)
		*rc = 0;
	return (f);
}

int
cache_guard_blocks(struct cache *c, MDB_txn *txn, const char *id,
    time_t since)
{
	struct cache_gval	g;
	int64_t			floor;
	int			rc;

	floor = cache_guard_floor(c, txn, &rc);
	if (rc != 0)
		return (rc);
	if ((int64_t)since <= floor)
		return (MDB_KEYEXIST);
	rc = cache_guard_get(c, txn, id, &g);
	if (rc == MDB_NOTFOUND)
		return (0);
	if (rc != 0 || (int64_t)since <= cache_guard_until(&g))
		return (MDB_KEYEXIST);
	return (0);
}

size_t
cache_guards_used(struct cache *c, MDB_txn *txn)
{
	return (cache_db_used(txn, c->guards));
}

/* The guards' share of max_size. */
static size_t
cache_guards_share(struct cache *c)
{
	return (c->max_size / 32 + 2 * (size_t)sysconf(_SC_PAGESIZE));
}

/*
 * Past their share, spent guards go; if that is not enough, every guard
 * goes and the floor rises to the last time any of them guarded: the
 * cache then stores nothing fetched before it, for every id.  Never a
 * stale answer, at worst a while of misses.
 */
static int
cache_guards_trim(struct cache *c, MDB_txn *txn, time_t now)
{
	MDB_cursor		*cur;
	MDB_val			 k, v;
	struct cache_gval	 g;
	int64_t			 floor, until;
	int			 rc, pass;

	floor = cache_guard_floor(c, txn, &rc);
	for (pass = 0; rc == 0 && pass < 2 &&
	    cache_guards_used(c, txn) > cache_guards_share(c); pass++) {
		if ((rc = mdb_cursor_open(txn, c->guards, &cur)) != 0)
			return (rc);
		for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
		    rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
			if (v.mv_size != sizeof g ||
			    *(const char *)k.mv_data == '\0')
				continue;
			memcpy(&g, v.mv_data, sizeof g);
			if (pass == 0 && !cache_guard_spent(&g, now))
				continue;
			until = cache_guard_until(&g);
			if (pass == 1 && until > floor)
				floor = until;
			/* After a delete, MDB_NEXT yields the record that
			 * followed. */
			if ((rc = mdb_cursor_del(cur, 0)) != 0)
				break;
		}
		mdb_cursor_close(cur);
		if (rc != MDB_NOTFOUND)
			return (rc);
		rc = 0;
		if (pass == 1) {
			log_warnx("cache: delete guards past their share: "
			    "nothing fetched before now is stored");
			k.mv_size = sizeof CACHE_FLOOR_KEY - 1;
			k.mv_data = CACHE_FLOOR_KEY;
			v.mv_size = sizeof floor;
			v.mv_data = &floor;
			rc = mdb_put(txn, c->guards, &k, &v, 0);
		}
	}
	return (rc);
}

/*
 * Change id's guard in one writing transaction: begin (deleted < 0) adds
 * a pending DELETE; end says deleted (1) or refused (0).
 */
static int
cache_guard_update(struct cache *c, const char *id, int deleted,
    double secs, time_t now)
{
	MDB_txn			*txn;
	MDB_val			 k = { strlen(id), (void *)id }, v;
	struct cache_gval	 g;
	int			 rc;

	if (k.mv_size == 0 ||
	    k.mv_size > (size_t)mdb_env_get_maxkeysize(c->env))
		return (-1);
	if ((rc = mdb_txn_begin(c->env, NULL, 0, &txn)) != 0)
		goto fail;
	rc = cache_guard_get(c, txn, id, &g);
	if (rc == MDB_NOTFOUND || rc == MDB_CORRUPTED) {
		if (deleted >= 0) {		/* nothing to end */
			mdb_txn_abort(txn);
			return (0);
		}
		memset(&g, 0, sizeof g);
		g.magic = CACHE_GMAGIC;
		rc = 0;
	}
	if (rc != 0)
		goto fail;
	if (deleted < 0) {
		g.count++;
		g.pending_at = now;
		if (secs > g.window)
			g.window = secs > UINT32_MAX ? UINT32_MAX :
			    (uint32_t)secs;
	} else {
		if (g.count > 0)
			g.count--;
		if (deleted) {
			if ((int64_t)now > g.deleted_at)
				g.deleted_at = now;
			if (secs > g.keep)
				g.keep = secs > UINT32_MAX ? UINT32_MAX :
				    (uint32_t)secs;
		}
		/* Every DELETE it counted has answered: it guards no more. */
		if (g.count == 0)
			g.pending_at = 0;
	}
	if (g.pending_at == 0 && g.deleted_at == 0)
		rc = mdb_del(txn, c->guards, &k, NULL);
	else {
		v.mv_size = sizeof g;
		v.mv_data = &g;
		rc = mdb_put(txn, c->guards, &k, &v, 0);
	}
	if (rc == 0 && deleted < 0)
		rc = cache_guards_trim(c, txn, now);
	if (rc != 0)
		goto fail;
	if ((rc = mdb_txn_commit(txn)) != 0) {
		txn = NULL;
		goto fail;
	}
	pthread_mutex_lock(&c->mtx);
	c->dirty = 1;
	pthread_mutex_unlock(&c->mtx);
	return (0);
fail:
	if (txn != NULL)
		mdb_txn_abort(txn);
	CACHE_COUNT(c, errors);
	log_warnx("cache: delete guard of %s: %s", id, mdb_strerror(rc));
	return (-1);
}

int
cache_delete_begin(struct cache *c, const char *id, double window,
    time_t now)
{
	int	rc;

	/* No room: entries make some (a guard matters more than they do). */
	if ((rc = cache_guard_update(c, id, -1, window, now)) == -1 &&
	    cache_evict_commit(c, 64 * 1024, c->max_size / 2) == 0)
		rc = cache_guard_update(c, id, -1, window, now);
	return (rc);
}

int
cache_delete_end(struct cache *c, const char *id, int deleted, double keep,
    time_t now)
{
	return (cache_guard_update(c, id, deleted != 0, keep, now));
}

int
cache_deleted(struct cache *c, const char *id, time_t *at)
{
	MDB_txn			*txn;
	struct cache_gval	 g;
	int			 rc;

	if (strlen(id) == 0 ||
	    strlen(id) > (size_t)mdb_env_get_maxkeysize(c->env))
		return (0);
	if ((txn = cache_read_begin(c)) == NULL)
		return (0);
	rc = cache_guard_get(c, txn, id, &g);
	mdb_txn_reset(txn);
	if (rc != 0 || g.deleted_at == 0)
		return (0);
	*at = (time_t)g.deleted_at;
	return (1);
}

void
cache_stats(struct cache *c, struct cache_stats *out)
{
	MDB_txn		*txn;
	MDB_stat	 s;
	MDB_envinfo	 ei;

	memset(out, 0, sizeof *out);
	out->evictions = __atomic_load_n(&c->st.evictions, __ATOMIC_RELAXED);
	out->map_full = __atomic_load_n(&c->st.map_full, __ATOMIC_RELAXED);
	out->errors = __atomic_load_n(&c->st.errors, __ATOMIC_RELAXED);
	out->map_size = c->map_size;
	out->max_size = c->max_size;
	if (mdb_env_info(c->env, &ei) == 0 &&
	    mdb_env_stat(c->env, &s) == 0)
		out->map_used = (ei.me_last_pgno + 1) * (uint64_t)s.ms_psize;
	if (mdb_txn_begin(c->env, NULL, MDB_RDONLY, &txn) != 0)
		return;
	if (mdb_stat(txn, c->entries, &s) == 0)
		out->entries = s.ms_entries;
	out->bytes = cache_used(c, txn);
	mdb_txn_abort(txn);
}

/*
 * Owner records.  Kept apart from the entries: ttl never expires them and
 * no entry evicts one.  Past an eighth of max_size, the oldest record of
 * the client with the most goes: one client's creates never push out
 * another's records while it has fewer.  An evicted record's key goes
 * into the "issued" Bloom filter, so that a response this proxy created
 * never becomes one "created elsewhere" (see cache_owner_get()).
 *
 * owners:        key -> seq, client name
 * owner_index:   "<name>\0<seq, big-endian>" -> key, a client's oldest first
 * owner_clients: name -> its record count; "\0seq" -> the last seq
 * issued:        block number -> 64 bytes of the filter
 */
#define CACHE_SEQ_KEY		"\0seq"
#define CACHE_BLOCK		64		/* bytes of a filter block */
#define CACHE_BLOOM_K		6		/* bits set per key */

/*
 * The owner records' share of max_size: an eighth, plus the root pages
 * of their three databases, so that a small cache still keeps some.
 * (The filter of evicted ones, a 64th, is counted apart.)
 */
static size_t
cache_owners_share(struct cache *c)
{
	return (c->max_size / 8 + 3 * (size_t)sysconf(_SC_PAGESIZE));
}

/* Two 64-bit hashes of a key (FNV-1a, then a finalizer for the second). */
static void
cache_hash2(const void *key, size_t len, uint64_t *h1, uint64_t *h2)
{
	const unsigned char	*p = key;
	uint64_t		 h = 1469598103934665603ULL;
	size_t			 i;

	for (i = 0; i < len; i++) {
		h ^= p[i];
		h *= 1099511628211ULL;
	}
	*h1 = h;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	*h2 = h;
}

/*
 * The filter's size in blocks: fixed when it is made (a 64th of the
 * max_size of that day, at least 1 KiB), and kept under a block number
 * of its own, so that a new max_size never moves a key's bits.
 */
#define CACHE_BLOOM_SIZE_KEY	UINT32_MAX

static uint32_t
cache_bloom_blocks(struct cache *c, MDB_txn *txn, int add, int *rc)
{
	uint32_t	b = CACHE_BLOOM_SIZE_KEY, n;
	MDB_val		k = { sizeof b, &b }, v;
	size_t		want = c->max_size / 64 / CACHE_BLOCK;

	if ((*rc = mdb_get(txn, c->issued, &k, &v)) == 0 &&
	    v.mv_size == sizeof n) {
		memcpy(&n, v.mv_data, sizeof n);
		return (n);
	}
	n = want < 16 ? 16 : want >= UINT32_MAX ? UINT32_MAX - 1 :
	    (uint32_t)want;
	*rc = 0;
	if (add) {
		v.mv_size = sizeof n;
		v.mv_data = &n;
		*rc = mdb_put(txn, c->issued, &k, &v, 0);
	}
	return (n);
}

/*
 * Add key to the issued filter (add) or test it: 1 if every bit is set.
 * All of a key's bits are in one block, so a test reads 64 bytes.
 */
static int
cache_bloom(struct cache *c, MDB_txn *txn, const void *key, size_t klen,
    int add, int *rc)
{
	unsigned char	 blk[CACHE_BLOCK];
	uint64_t	 h1, h2;
	uint32_t	 b;
	MDB_val		 k = { sizeof b, &b }, v;
	int		 i, bit, all = 1;

	cache_hash2(key, klen, &h1, &h2);
	b = cache_bloom_blocks(c, txn, add, rc);
	if (*rc != 0)
		return (0);
	b = (uint32_t)(h1 % b);
	memset(blk, 0, sizeof blk);
	if ((*rc = mdb_get(txn, c->issued, &k, &v)) == 0 &&
	    v.mv_size == sizeof blk)
		memcpy(blk, v.mv_data, sizeof blk);
	if (*rc == MDB_NOTFOUND)
		*rc = 0;
	if (*rc != 0)
		return (0);
	for (i = 0; i < CACHE_BLOOM_K; i++) {
		bit = (int)((h2 >> (i * 9)) & (CACHE_BLOCK * 8 - 1));
		if (!(blk[bit / 8] & (1 << (bit % 8))))
			all = 0;
		blk[bit / 8] |= (unsigned char)(1 << (bit % 8));
	}
	if (add && !all) {
		v.mv_size = sizeof blk;
		v.mv_data = blk;
		*rc = mdb_put(txn, c->issued, &k, &v, 0);
	}
	return (all);
}

/* A client's record count (or the last seq, for CACHE_SEQ_KEY). */
#define cache_client_get(c, txn, name, nlen, rc)			\
	cache_count_get((txn), (c)->owner_clients, (name), (nlen), (rc))
#define cache_client_set(c, txn, name, nlen, n)				\
	cache_count_set((txn), (c)->owner_clients, (name), (nlen), (n))


/* Remove the owner record under key (value v) and its index entry. */
static int
cache_owner_del(struct cache *c, MDB_txn *txn, MDB_val *key,
    const MDB_val *v)
{
	char		 ik[256 + 9];
	uint64_t	 seq, n;
	MDB_val		 k;
	size_t		 nlen;
	int		 rc;

	if (v->mv_size < sizeof seq || v->mv_size - sizeof seq > 255)
		return (mdb_del(txn, c->owners, key, NULL));
	memcpy(&seq, v->mv_data, sizeof seq);
	nlen = v->mv_size - sizeof seq;
	memcpy(ik, (const char *)v->mv_data + sizeof seq, nlen);
	k.mv_size = cache_index_key(ik, ik, nlen, seq);
	k.mv_data = ik;
	if ((rc = mdb_del(txn, c->owner_index, &k, NULL)) != 0 &&
	    rc != MDB_NOTFOUND)
		return (rc);
	n = cache_client_get(c, txn, ik, nlen, &rc);
	if (rc == 0 && n > 0)
		rc = cache_client_set(c, txn, ik, nlen, n - 1);
	if (rc == 0)
		rc = mdb_del(txn, c->owners, key, NULL);
	return (rc);
}

/*
 * Evict the oldest record of the client with the most, until the owner
 * records fit their share; each evicted key goes into the filter.
 */
static int
cache_owner_evict(struct cache *c, MDB_txn *txn)
{
	MDB_cursor	*cur;
	MDB_val		 k, v, ok, ov;
	char		 name[256 + 9], kbuf[512];
	size_t		 nlen = 0;
	uint64_t	 n, most;
	MDB_cursor_op	 op;
	int		 rc = 0;

	while (cache_owners_used(c, txn) > cache_owners_share(c)) {
		/* The client with the most records (few clients: a scan). */
		if ((rc = mdb_cursor_open(txn, c->owner_clients, &cur)) != 0)
			return (rc);
		most = 0;
		for (op = MDB_FIRST; (rc = mdb_cursor_get(cur, &k, &v, op)) == 0;
		    op = MDB_NEXT) {
			if (v.mv_size != sizeof n || k.mv_size > 255 ||
			    (k.mv_size > 0 && *(char *)k.mv_data == '\0'))
				continue;
			memcpy(&n, v.mv_data, sizeof n);
			if (n > most) {
				most = n;
				memcpy(name, k.mv_data, k.mv_size);
				nlen = k.mv_size + 1;
			}
		}
		mdb_cursor_close(cur);
		if (rc != MDB_NOTFOUND)
			return (rc);
		if (most == 0)
			return (0);
		nlen--;
		/* Its oldest record. */
		if ((rc = mdb_cursor_open(txn, c->owner_index, &cur)) != 0)
			return (rc);
		k.mv_size = cache_index_key(name, name, nlen, 0);
		k.mv_data = name;
		rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
		mdb_cursor_close(cur);
		if (rc != 0 || k.mv_size != nlen + 9 ||
		    memcmp(k.mv_data, name, nlen) != 0 || v.mv_size >
		    sizeof kbuf) {
			/* A count with no records: the count goes. */
			if (rc != 0 && rc != MDB_NOTFOUND)
				return (rc);
			if ((rc = cache_client_set(c, txn, name, nlen, 0)) != 0)
				return (rc);
			continue;
		}
		memcpy(kbuf, v.mv_data, v.mv_size);
		ok.mv_size = v.mv_size;
		ok.mv_data = kbuf;
		if ((rc = mdb_get(txn, c->owners, &ok, &ov)) == 0)
			rc = cache_owner_del(c, txn, &ok, &ov);
		else if (rc == MDB_NOTFOUND) {
			rc = mdb_del(txn, c->owner_index, &k, NULL);
			if (rc == 0)
				rc = cache_client_set(c, txn, name, nlen,
				    most - 1);
		}
		if (rc == 0)
			cache_bloom(c, txn, kbuf, ok.mv_size, 1, &rc);
		if (rc != 0)
			return (rc);
		CACHE_COUNT(c, evictions);
	}
	return (rc);
}

static int
cache_owner_put_once(struct cache *c, MDB_val *key, const char *name)
{
	MDB_txn		*txn;
	MDB_val		 v, ik;
	uint64_t	 seq, n;
	char		 buf[sizeof seq + 256], ibuf[256 + 9];
	size_t		 nlen = strlen(name);
	int		 rc;

	if (nlen == 0 || nlen > 255)
		return (MDB_BAD_VALSIZE);
	if ((rc = mdb_txn_begin(c->env, NULL, 0, &txn)) != 0)
		return (rc);
	/* A rewrite drops the old record first. */
	if ((rc = mdb_get(txn, c->owners, key, &v)) == 0)
		rc = cache_owner_del(c, txn, key, &v);
	if (rc == MDB_NOTFOUND)
		rc = 0;
	seq = 0;
	if (rc == 0)
		seq = cache_client_get(c, txn, CACHE_SEQ_KEY,
		    sizeof CACHE_SEQ_KEY - 1, &rc) + 1;
	if (rc == 0)
		rc = cache_client_set(c, txn, CACHE_SEQ_KEY,
		    sizeof CACHE_SEQ_KEY - 1, seq);
	if (rc == 0) {
		memcpy(buf, &seq, sizeof seq);
		memcpy(buf + sizeof seq, name, nlen);
		v.mv_size = sizeof seq + nlen;
		v.mv_data = buf;
		rc = mdb_put(txn, c->owners, key, &v, 0);
	}
	if (rc == 0) {
		ik.mv_size = cache_index_key(ibuf, name, nlen, seq);
		ik.mv_data = ibuf;
		rc = mdb_put(txn, c->owner_index, &ik, key, 0);
	}
	if (rc == 0)
		n = cache_client_get(c, txn, name, nlen, &rc);
	if (rc == 0)
		rc = cache_client_set(c, txn, name, nlen, n + 1);
	/* Past their share of the budget, the largest client's oldest go. */
	if (rc == 0)
		rc = cache_owner_evict(c, txn);
	if (rc != 0) {
		mdb_txn_abort(txn);
		return (rc);
	}
	return (mdb_txn_commit(txn));
}

int
cache_owner_put(struct cache *c, const void *key, size_t klen,
    const char *name)
{
	MDB_val	k = { klen, (void *)key };
	int	rc;

	if (klen > (size_t)mdb_env_get_maxkeysize(c->env))
		return (-1);
	rc = cache_owner_put_once(c, &k, name);
	if (rc == MDB_MAP_FULL || rc == MDB_TXN_FULL) {
		/* Entries make room for it. */
		if (cache_evict_commit(c, 4096, c->max_size / 2) == 0)
			rc = cache_owner_put_once(c, &k, name);
	}
	if (rc != 0) {
		CACHE_COUNT(c, errors);
		log_warnx("cache: owner record: %s", mdb_strerror(rc));
		return (-1);
	}
	pthread_mutex_lock(&c->mtx);
	c->dirty = 1;
	pthread_mutex_unlock(&c->mtx);
	return (0);
}

int
cache_owner_get(struct cache *c, const void *key, size_t klen, char *name,
    size_t size)
{
	MDB_val	 k = { klen, (void *)key }, v;
	MDB_txn	*txn;
	size_t	 n;
	int	 rc, brc, lost = 0;

	if (klen > (size_t)mdb_env_get_maxkeysize(c->env) || size == 0)
		return (-1);
	if ((txn = cache_read_begin(c)) == NULL)
		return (-1);
	rc = mdb_get(txn, c->owners, &k, &v);
	if (rc == 0 && v.mv_size >= sizeof(uint64_t)) {
		n = v.mv_size - sizeof(uint64_t);
		if (n >= size)
			n = size - 1;
		memcpy(name, (const char *)v.mv_data + sizeof(uint64_t), n);
		name[n] = '\0';
	} else if (rc == MDB_NOTFOUND) {
		lost = cache_bloom(c, txn, key, klen, 0, &brc);
		if (brc != 0)
			rc = brc;
	}
	mdb_txn_reset(txn);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return (-1);
	if (lost)
		return (CACHE_OWNER_LOST);
	return (rc == 0 ? 1 : 0);
}

int
cache_owner_upgrade(struct cache *c, MDB_txn *txn)
{
	MDB_dbi		 old;
	MDB_cursor	*cur;
	MDB_val		 k, v, ik;
	char		 ibuf[256 + 9];
	uint64_t	 seq, n, last = 0;
	size_t		 nlen;
	int		 rc;

	if ((rc = mdb_dbi_open(txn, "owner_age", MDB_INTEGERKEY, &old)) ==
	    MDB_NOTFOUND)
		return (0);
	if (rc != 0)
		return (rc);
	/* Made afresh from the records: an old process may have come back. */
	last = cache_client_get(c, txn, CACHE_SEQ_KEY,
	    sizeof CACHE_SEQ_KEY - 1, &rc);
	if (rc != 0 || (rc = mdb_drop(txn, c->owner_index, 0)) != 0 ||
	    (rc = mdb_drop(txn, c->owner_clients, 0)) != 0)
		return (rc);
	if ((rc = mdb_cursor_open(txn, c->owners, &cur)) != 0)
		return (rc);
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	    rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (v.mv_size <= sizeof seq || v.mv_size - sizeof seq > 255)
			continue;
		memcpy(&seq, v.mv_data, sizeof seq);
		nlen = v.mv_size - sizeof seq;
		memcpy(ibuf, (const char *)v.mv_data + sizeof seq, nlen);
		if (seq > last)
			last = seq;
		n = cache_client_get(c, txn, ibuf, nlen, &rc);
		if (rc == 0)
			rc = cache_client_set(c, txn, ibuf, nlen, n + 1);
		ik.mv_size = cache_index_key(ibuf, ibuf, nlen, seq);
		ik.mv_data = ibuf;
		if (rc == 0)
			rc = mdb_put(txn, c->owner_index, &ik, &k, 0);
		if (rc != 0)
			break;
	}
	mdb_cursor_close(cur);
	if (rc != MDB_NOTFOUND)
		return (rc);
	if ((rc = cache_client_set(c, txn, CACHE_SEQ_KEY,
	    sizeof CACHE_SEQ_KEY - 1, last)) != 0)
		return (rc);
	log_info("cache: owner records indexed per client");
	return (mdb_drop(txn, old, 1));
}
