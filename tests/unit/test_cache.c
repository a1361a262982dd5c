/*
 * Unit tests: the LMDB cache on real files: put, get, invalidate, evict;
 * damaged files and values, and a cache of an older record format.
 */
#include "config.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "../../src/log.c"
#include "../../src/xmalloc.c"
#include "../../src/cache.c"
#include "../../src/cache_check.c"
#include "../../src/cache_evict.c"
#include "../../src/cache_guard.c"
#include "../../src/cache_owner.c"
#include "../../src/cache_store.c"
#include "../../src/cache_walk.c"
#include "../../src/cache_writer.c"
#include "tap.h"

struct got {
	int	status;
	char	body[8192];
	size_t	len;
	char	hdrs[256];
	char	etag[64];
};

static void
visit(const struct cache_entry *e, void *arg)
{
	struct got	*g = arg;

	g->status = e->status;
	memcpy(g->body, e->body, e->body_len);
	g->len = e->body_len;
	snprintf(g->hdrs, sizeof g->hdrs, "%.*s", (int)e->hdrs_len, e->hdrs);
	snprintf(g->etag, sizeof g->etag, "%.*s", (int)e->etag_len, e->etag);
}

/* Many threads, each holding its read transaction (as workers do). */
#define NREADERS	300
static pthread_barrier_t	 readers_bar;
static int			 readers_hits;

static void *
reader(void *arg)
{
	struct cache	*c = arg;
	struct got	*g;

	if ((g = calloc(1, sizeof *g)) == NULL)
		abort();
	if (cache_get(c, "t\0r\0x\0", 6, time(NULL), visit, g) == 1)
		__atomic_add_fetch(&readers_hits, 1, __ATOMIC_RELAXED);
	pthread_barrier_wait(&readers_bar);
	cache_thread_end(c);
	free(g);
	return (NULL);
}

static int
put(struct cache *c, const char *key, size_t klen, const char *body)
{
	return (cache_put(c, key, klen, NULL, 200, "\"e\"", 3, "A: b\r\n", 6,
	    body, strlen(body), time(NULL)));
}

/* What the cache logs between capture_start() and capture_end(). */
static FILE	*capture_file;
static int	 capture_saved = -1;
static char	 captured[8192];

static void
capture_start(void)
{
	if ((capture_file = tmpfile()) == NULL ||
	    (capture_saved = dup(STDERR_FILENO)) == -1 ||
	    dup2(fileno(capture_file), STDERR_FILENO) == -1)
		abort();
}

static const char *
capture_end(void)
{
	size_t	n;

	dup2(capture_saved, STDERR_FILENO);
	close(capture_saved);
	rewind(capture_file);
	n = fread(captured, 1, sizeof captured - 1, capture_file);
	captured[n] = '\0';
	fclose(capture_file);
	fprintf(stderr, "%s", captured);	/* still seen in the test log */
	return (captured);
}

static int
count(const char *s, const char *what)
{
	int	n = 0;

	for (; (s = strstr(s, what)) != NULL; s += strlen(what))
		n++;
	return (n);
}

/* data.mdb of dir, read whole (*len bytes) or written back. */
static char *
file_read(const char *dir, size_t *len)
{
	char	 path[256], *buf;
	FILE	*f;

	snprintf(path, sizeof path, "%s/data.mdb", dir);
	if ((f = fopen(path, "rb")) == NULL || fseek(f, 0, SEEK_END) == -1 ||
	    (*len = (size_t)ftell(f)) == 0 || (buf = malloc(*len)) == NULL)
		abort();
	rewind(f);
	if (fread(buf, 1, *len, f) != *len)
		abort();
	fclose(f);
	return (buf);
}

static void
file_write(const char *dir, const char *buf, size_t len)
{
	char	 path[256];
	FILE	*f;

	snprintf(path, sizeof path, "%s/data.mdb", dir);
	if ((f = fopen(path, "wb")) == NULL || fwrite(buf, 1, len, f) != len)
		abort();
	fclose(f);
}

/* Flip a bit of every copy of text in data.mdb; returns the copies. */
static int
file_flip(const char *dir, const char *text, size_t at)
{
	size_t	 len, tl = strlen(text), i;
	char	*buf = file_read(dir, &len);
	int	 n = 0;

	for (i = 0; i + tl <= len; i++)
		if (memcmp(buf + i, text, tl) == 0) {
			buf[i + at] ^= 0x01;
			n++;
		}
	file_write(dir, buf, len);
	free(buf);
	return (n);
}

/* A new cache in dir (emptied) with n entries "t r resp_N" of blen bytes. */
static void
fill(const char *dir, int n, size_t blen)
{
	struct cache	*c;
	char		 cmd[128], key[64], *body;
	char		*cause = NULL;
	int		 i, kl;

	snprintf(cmd, sizeof cmd, "rm -rf %s/*", dir);
	if (system(cmd) != 0 || (body = malloc(blen + 1)) == NULL ||
	    (c = cache_open(dir, 4 * 1024 * 1024, 0, &cause)) == NULL)
		abort();
	for (i = 0; i < n; i++) {
		memset(body, 'x', blen);
		snprintf(body, blen, "body of resp_%04d.", i);
		body[strlen(body)] = '.';
		kl = snprintf(key, sizeof key, "t%cr%cresp_%04d", 0, 0, i);
		if (cache_put(c, key, (size_t)kl, NULL, 200, "\"e\"", 3,
		    "X-Request-Id: req_0001\r\n", 24, body, blen,
		    time(NULL)) != 0)
			abort();
	}
	free(body);
	cache_close(c);
}

/* How many of fill()'s n entries hit, each with its exact body. */
static int
hits_of(struct cache *c, int n, size_t blen)
{
	struct got	*g;
	char		 key[64], want[64];
	int		 i, kl, hits = 0;

	if ((g = calloc(1, sizeof *g)) == NULL)
		abort();
	for (i = 0; i < n; i++) {
		kl = snprintf(key, sizeof key, "t%cr%cresp_%04d", 0, 0, i);
		snprintf(want, sizeof want, "body of resp_%04d..", i);
		memset(g, 0, sizeof *g);
		if (cache_get(c, key, (size_t)kl, time(NULL), visit, g) != 1)
			continue;
		if (g->len != blen || memcmp(g->body, want, strlen(want)) != 0
		    || g->body[blen - 1] != 'x')
			return (-1);
		hits++;
	}
	free(g);
	return (hits);
}

/* Open dir, logging to captured; ok() that it opened. */
static struct cache *
reopen(const char *dir, const char *what)
{
	struct cache	*c;
	char		*cause = NULL;

	capture_start();
	c = cache_open(dir, 4 * 1024 * 1024, 0, &cause);
	capture_end();
	ok(c != NULL, "%s: the cache opens", what);
	if (c == NULL)
		abort();
	return (c);
}

/*
 * Damaged files: a start-up check empties what cannot be trusted, with
 * one line; a damaged value is a miss, counted, and goes.
 */
static void
test_damage(const char *dir)
{
	struct cache	*c;
	struct stat	 sb;
	char		 path[256], *buf;
	size_t		 len;

	snprintf(path, sizeof path, "%s/data.mdb", dir);

	fill(dir, 40, 3000);
	c = reopen(dir, "a sound cache");
	ok(hits_of(c, 40, 3000) == 40 && count(captured, "warn") == 0,
	    "a sound cache is kept whole, and nothing is logged");
	cache_close(c);

	fill(dir, 40, 3000);
	ok(file_flip(dir, "body of resp_0007", 5) == 1,
	    "one stored body has a byte changed");
	c = reopen(dir, "a changed body");
	ok(count(captured, "1 entries fail their checksum") == 1 &&
	    count(captured, "empty cache") == 0,
	    "the start-up check counts it, and keeps the cache");
	ok(hits_of(c, 40, 3000) == 39, "every other entry hits, exactly");
	ok(c->st.errors == 1, "the damaged entry is counted in errors (%llu)",
	    (unsigned long long)c->st.errors);
	{
		MDB_txn		*txn;
		MDB_stat	 se, sa;

		mdb_txn_begin(c->env, NULL, MDB_RDONLY, &txn);
		mdb_stat(txn, c->entries, &se);
		mdb_stat(txn, c->age, &sa);
		mdb_txn_abort(txn);
		ok(se.ms_entries == 39 && sa.ms_entries == 39,
		    "it was deleted, with its age record (%zu, %zu)",
		    se.ms_entries, sa.ms_entries);
	}
	ok(hits_of(c, 40, 3000) == 39 && c->st.errors == 1,
	    "a second read misses without an error");
	ok(cache_put(c, "t\0r\0resp_0007", 14, NULL, 200, "\"e\"", 3,
	    "X-Request-Id: req_0001\r\n", 24, "body of resp_0007..x", 20,
	    time(NULL)) == 0, "it can be stored again");
	cache_close(c);

	fill(dir, 40, 3000);
	ok(file_flip(dir, "req_0001", 7) == 40, "a stored header changed");
	c = reopen(dir, "changed headers");
	ok(hits_of(c, 40, 3000) == 0 && c->st.errors == 40,
	    "an entry whose header changed never hits");
	cache_close(c);

	fill(dir, 10, 100);	/* small values, inside leaf pages */
	ok(file_flip(dir, "body of resp_0003", 9) >= 1,
	    "a small stored body changed");
	c = reopen(dir, "a small body changed");
	ok(hits_of(c, 10, 100) == 9, "only that entry misses");
	cache_close(c);

	fill(dir, 40, 3000);
	if (stat(path, &sb) == -1 || truncate(path, sb.st_size / 2) == -1)
		abort();
	c = reopen(dir, "data.mdb cut to half");
	ok(count(captured, "starting with an empty cache") == 1 &&
	    count(captured, "cut short") == 1, "one line says why");
	ok(hits_of(c, 40, 3000) == 0, "it starts empty");
	ok(put(c, "t\0r\0x\0", 6, "{}") == 0 &&
	    cache_get(c, "t\0r\0x\0", 6, time(NULL), visit, &(struct got){0})
	    == 1, "and works");
	cache_close(c);

	fill(dir, 40, 3000);
	if (truncate(path, 4096) == -1)
		abort();
	c = reopen(dir, "data.mdb cut to a page");
	ok(count(captured, "starting with an empty cache") == 1 &&
	    count(captured, "too short") == 1 && hits_of(c, 40, 3000) == 0,
	    "it starts empty, and says why");
	cache_close(c);

	fill(dir, 40, 3000);
	buf = file_read(dir, &len);
	memset(buf, 0, 2 * 4096);
	file_write(dir, buf, len);
	free(buf);
	c = reopen(dir, "meta pages zeroed");
	ok(count(captured, "starting with an empty cache") == 1 &&
	    hits_of(c, 40, 3000) == 0, "it starts empty, and says why");
	cache_close(c);

	/* Garbage over each page in turn past the metas: never a wrong body. */
	{
		int	pg, npages, empty = 0, wrong = 0;

		fill(dir, 40, 3000);
		buf = file_read(dir, &len);
		free(buf);
		npages = (int)(len / 4096);
		for (pg = 2; pg < npages; pg++) {
			fill(dir, 40, 3000);
			buf = file_read(dir, &len);
			for (size_t i = 0; i < 4096; i++)
				buf[pg * 4096 + i] = (char)(i * 7 + pg);
			file_write(dir, buf, len);
			free(buf);
			capture_start();
			c = cache_open(dir, 4 * 1024 * 1024, 0, &(char *){0});
			capture_end();
			if (c == NULL)
				abort();
			empty += count(captured, "empty cache");
			if (hits_of(c, 40, 3000) == -1)
				wrong++;
			cache_close(c);
		}
		ok(wrong == 0, "garbage over any of %d pages: no wrong body "
		    "(%d started empty)", npages - 2, empty);
	}

}

/* A cache of record format 1 ("RCE1", no checksum) loses its entries. */
/*
 * The writer thread: what is queued is seen at once, before it is
 * written (the test holds LMDB's writer lock meanwhile), and after; a
 * purge or an invalidation queued behind a store hides it at once and
 * removes it in order; a delete guard keeps a store fetched before the
 * DELETE from ever being seen; what is queued at close is written.
 */
static void
test_writer(const char *dir)
{
	struct cache		*c;
	struct cache_guard	 g;
	struct got		 got;
	MDB_txn			*hold;
	char			*cause, name[32];
	time_t			 now = time(NULL);

	c = cache_open(dir, 4 * 1024 * 1024, 0, &cause);
	if (c == NULL || mdb_txn_begin(c->env, NULL, 0, &hold) != 0)
		abort();
	ok(cache_put_later(c, "t\0r\0resp_w1\0", 13, NULL, 200, "\"e\"", 3,
	    "A: b\r\n", 6, "queued body", 11, now) == 0,
	    "a store is queued");
	memset(&got, 0, sizeof got);
	ok(cache_get(c, "t\0r\0resp_w1\0", 13, now, visit, &got) == 1 &&
	    got.len == 11 && memcmp(got.body, "queued body", 11) == 0 &&
	    strcmp(got.hdrs, "A: b\r\n") == 0 && strcmp(got.etag, "\"e\"") == 0,
	    "it is a hit before the writer could write it");
	cache_owner_put_later(c, "t\0o\0resp_w1\0", 13, "alice");
	ok(cache_owner_get(c, "t\0o\0resp_w1\0", 13, name, sizeof name) == 1 &&
	    strcmp(name, "alice") == 0, "so is a queued owner record");
	ok(cache_put_later(c, "t\0r\0resp_w2\0", 13, NULL, 200, "", 0, "", 0,
	    "two", 3, now) == 0 && cache_put_later(c, "u\0i\0resp_w2\0x", 14,
	    NULL, 200, "", 0, "", 0, "items", 5, now) == 0,
	    "two stores of another id, for two tenants");
	cache_purge_id_later(c, "resp_w2", 0);
	ok(cache_get(c, "t\0r\0resp_w2\0", 13, now, visit, &got) == 0 &&
	    cache_get(c, "u\0i\0resp_w2\0x", 14, now, visit, &got) == 0,
	    "a purge queued behind them hides both at once");
	ok(cache_put_later(c, "t\0r\0resp_w3\0", 13, NULL, 200, "", 0, "", 0,
	    "three", 5, now) == 0, "a third store");
	cache_invalidate_later(c, "t\0r\0resp_w3", 11);
	ok(cache_get(c, "t\0r\0resp_w3\0", 13, now, visit, &got) == 0,
	    "an invalidation of its prefix hides it at once");
	mdb_txn_abort(hold);

	cache_writer_flush(c);
	ok(cache_get(c, "t\0r\0resp_w1\0", 13, now, visit, &got) == 1 &&
	    cache_owner_get(c, "t\0o\0resp_w1\0", 13, name, sizeof name) == 1,
	    "once written, the store and the owner record are in LMDB");
	ok(cache_get(c, "t\0r\0resp_w2\0", 13, now, visit, &got) == 0 &&
	    cache_get(c, "u\0i\0resp_w2\0x", 14, now, visit, &got) == 0 &&
	    cache_get(c, "t\0r\0resp_w3\0", 13, now, visit, &got) == 0,
	    "and the purged and invalidated ones are not");

	/* A DELETE of resp_w4 begins: a store fetched before it is refused. */
	ok(cache_delete_begin(c, "resp_w4", 60, now) == 0, "a DELETE begins");
	g.id = "resp_w4";
	g.since = now - 1;
	ok(cache_put_later(c, "t\0r\0resp_w4\0", 13, &g, 200, "", 0, "", 0,
	    "stale", 5, now) == 1 &&
	    cache_get(c, "t\0r\0resp_w4\0", 13, now, visit, &got) == 0,
	    "a store fetched before it is refused when queued, never seen");
	/* Queued before the DELETE began: seen, until the DELETE forgets it. */
	g.id = "resp_w5";
	if (mdb_txn_begin(c->env, NULL, 0, &hold) != 0)
		abort();
	ok(cache_put_later(c, "t\0r\0resp_w5\0", 13, &g, 200, "", 0, "", 0,
	    "early", 5, now) == 0 &&
	    cache_get(c, "t\0r\0resp_w5\0", 13, now, visit, &got) == 1,
	    "a store queued before a DELETE is seen");
	mdb_txn_abort(hold);
	ok(cache_delete_begin(c, "resp_w5", 60, now) == 0,
	    "the DELETE's guard is written");
	cache_writer_forget_id(c, "resp_w5");
	cache_writer_flush(c);
	ok(cache_get(c, "t\0r\0resp_w5\0", 13, now, visit, &got) == 0,
	    "after it, the store is neither seen nor written");

	/* Forgotten, it is not written either, guard or none. */
	if (mdb_txn_begin(c->env, NULL, 0, &hold) != 0)
		abort();
	ok(cache_put_later(c, "t\0r\0resp_w7\0", 13, NULL, 200, "", 0, "", 0,
	    "seven", 5, now) == 0, "a store queued, unguarded");
	cache_writer_forget_id(c, "resp_w7");
	mdb_txn_abort(hold);
	cache_writer_flush(c);
	ok(cache_get(c, "t\0r\0resp_w7\0", 13, now, visit, &got) == 0,
	    "forgotten while queued: never written");

	ok(cache_put_later(c, "t\0r\0resp_w6\0", 13, NULL, 200, "", 0, "", 0,
	    "last", 4, now) == 0, "a store queued just before close");
	cache_close(c);
	c = cache_open(dir, 4 * 1024 * 1024, 0, &cause);
	ok(c != NULL && cache_get(c, "t\0r\0resp_w6\0", 13, now, visit,
	    &got) == 1 && got.len == 4, "is written by close");
	cache_close(c);
}

static void
test_old_format(const char *dir)
{
	struct {
		uint32_t	magic;
		uint16_t	status, etag_len;
		uint32_t	hdrs_len, body_len;
		uint64_t	stored_at, seq;
		char		body[2];
	} old = { 0x31454352u, 200, 0, 0, 2, 0, 1, "{}" };
	MDB_env		*env;
	MDB_txn		*txn;
	MDB_dbi		 e, a, o, oa;
	MDB_val		 k = { 8, "t\0r\0old\0" }, v = { 32 + 2, &old };
	MDB_val		 ownk = { 8, "t\0o\0old\0" }, ov, sk;
	struct cache	*c;
	struct cache_stats st;
	char		 want[128];
	char		 cmd[128], name[16], oval[8 + 5];
	uint64_t	 seq = 1;

	snprintf(cmd, sizeof cmd, "rm -rf %s/*", dir);
	if (system(cmd) != 0)
		abort();
	old.stored_at = (uint64_t)time(NULL);
	memcpy(oval, &seq, 8);
	memcpy(oval + 8, "alice", 5);
	ov.mv_size = sizeof oval;
	ov.mv_data = oval;
	sk.mv_size = sizeof seq;
	sk.mv_data = &seq;
	if (mdb_env_create(&env) != 0 || mdb_env_set_maxdbs(env, 4) != 0 ||
	    mdb_env_open(env, dir, 0, 0600) != 0 ||
	    mdb_txn_begin(env, NULL, 0, &txn) != 0 ||
	    mdb_dbi_open(txn, "entries", MDB_CREATE, &e) != 0 ||
	    mdb_dbi_open(txn, "age", MDB_CREATE | MDB_INTEGERKEY, &a) != 0 ||
	    mdb_dbi_open(txn, "owners", MDB_CREATE, &o) != 0 ||
	    mdb_dbi_open(txn, "owner_age", MDB_CREATE | MDB_INTEGERKEY,
	    &oa) != 0 || mdb_put(txn, e, &k, &v, 0) != 0 ||
	    mdb_put(txn, a, &sk, &k, 0) != 0 ||
	    mdb_put(txn, o, &ownk, &ov, 0) != 0 ||
	    mdb_put(txn, oa, &sk, &ownk, 0) != 0 || mdb_txn_commit(txn) != 0)
		abort();
	mdb_env_close(env);

	c = reopen(dir, "a format 1 cache");
	snprintf(want, sizeof want, "written in record format 1, not %d; "
	    "dropping its 1 entries", CACHE_FORMAT);
	ok(count(captured, want) == 1 && count(captured, "empty cache") == 0,
	    "one line says its entries go");
	cache_stats(c, &st);
	ok(cache_get(c, k.mv_data, k.mv_size, time(NULL), visit,
	    &(struct got){0}) == 0 && st.entries == 0 && st.errors == 0,
	    "its entries are gone");
	ok(cache_owner_get(c, ownk.mv_data, ownk.mv_size, name,
	    sizeof name) == 1 && strcmp(name, "alice") == 0,
	    "its owner records are kept");
	ok(put(c, "t\0r\0new\0", 8, "{}") == 0, "new entries are stored");
	cache_close(c);
	c = reopen(dir, "it, again");
	ok(count(captured, "record format") == 0 && cache_get(c,
	    "t\0r\0new\0", 8, time(NULL), visit, &(struct got){0}) == 1,
	    "the next start keeps them, and says nothing");
	cache_close(c);
}

int
main(void)
{
	char		 dir[] = "/tmp/rc-cache-XXXXXX", cmd[128], key[64];
	char		 big[3000];
	struct cache	*c;
	struct got	 g;
	char		*cause = NULL;
	int		 i, hits;
	struct cache_guard guard;
	time_t		 now = time(NULL), at;

	if (mkdtemp(dir) == NULL)
		abort();
	c = cache_open(dir, 1024 * 1024, 0, &cause);
	ok(c != NULL, "cache opens");
	ok(cache_get(c, "t\0r\0x\0", 6, time(NULL), visit, &g) == 0,
	    "empty cache misses");
	ok(put(c, "t\0r\0x\0", 6, "{\"a\":1}") == 0, "put stores");
	memset(&g, 0, sizeof g);
	ok(cache_get(c, "t\0r\0x\0", 6, time(NULL), visit, &g) == 1 &&
	    g.status == 200 && g.len == 7 && memcmp(g.body, "{\"a\":1}", 7) == 0
	    && strcmp(g.hdrs, "A: b\r\n") == 0 && strcmp(g.etag, "\"e\"") == 0,
	    "get returns what was put");
	{
		pthread_t	t[NREADERS];

		pthread_barrier_init(&readers_bar, NULL, NREADERS);
		for (i = 0; i < NREADERS; i++)
			if (pthread_create(&t[i], NULL, reader, c) != 0)
				abort();
		for (i = 0; i < NREADERS; i++)
			pthread_join(t[i], NULL);
		pthread_barrier_destroy(&readers_bar);
		ok(readers_hits == NREADERS, "%d threads at once each read "
		    "(%d hits)", NREADERS, readers_hits);
	}
	ok(cache_get(c, "u\0r\0x\0", 6, time(NULL), visit, &g) == 0,
	    "another tenant's key misses");
	ok(put(c, "t\0r\0x\0", 6, "{\"a\":2}") == 0 &&
	    cache_get(c, "t\0r\0x\0", 6, time(NULL), visit, &g) == 1 &&
	    memcmp(g.body, "{\"a\":2}", 7) == 0, "a rewrite replaces");
	put(c, "t\0r\0x\0include", 13, "1");
	put(c, "t\0i\0x\0limit=20", 14, "2");
	put(c, "t\0r\0xy\0", 7, "3");
	ok(cache_invalidate(c, "t\0r\0x\0", 6) == 2,
	    "invalidate removes the id's entries of one kind");
	ok(cache_get(c, "t\0r\0xy\0", 7, time(NULL), visit, &g) == 1,
	    "an id sharing a prefix is kept");
	ok(cache_get(c, "t\0i\0x\0limit=20", 14, time(NULL), visit, &g) == 1,
	    "the other kind is kept");
	/* Delete guards: see cache.h. */
	memset(&guard, 0, sizeof guard);
	guard.id = "z";
#define GPUT(b, since_) (guard.since = (since_), cache_put(c, \
	"t\0r\0z\0", 6, &guard, 200, "\"e\"", 3, "", 0, b, 1, now))
#define GOT(b) (cache_get(c, "t\0r\0z\0", 6, now, visit, &g) == 1 && \
	memcmp(g.body, b, 1) == 0)
	ok(GPUT("4", now) == 0 && GOT("4"),
	    "a guarded put with no guard stores");
	ok(cache_delete_begin(c, "z", 60, now) == 0,
	    "a DELETE's pending guard is written");
	ok(GPUT("5", now) == 1 && GOT("4"), "a pending guard forbids an "
	    "answer fetched before the DELETE");
	ok(GPUT("5", now + 60) == 1 && GOT("4"), "... or while the DELETE "
	    "may still take effect (its window)");
	ok(GPUT("5", now + 61) == 0 && GOT("5"), "an answer fetched after "
	    "the window is stored");
	ok(cache_delete_begin(c, "z", 60, now) == 0 &&
	    cache_delete_end(c, "z", 0, 60, now) == 0 && GPUT("6", now + 1) == 1,
	    "two DELETEs pending, one refused: the guard stays");
	ok(cache_delete_end(c, "z", 0, 60, now) == 0 && GPUT("6", now + 1) == 0,
	    "the other refused too: the guard goes");
	ok(cache_deleted(c, "z", &at) == 0, "no tombstone for a refused one");
	ok(cache_delete_begin(c, "z", 60, now) == 0 &&
	    cache_delete_end(c, "z", 1, 60, now + 5) == 0 &&
	    cache_deleted(c, "z", &at) == 1 && at == now + 5,
	    "a DELETE done: the guard keeps its tombstone's time");
	ok(GPUT("7", now + 5) == 1 && GOT("6"), "a tombstone forbids an answer "
	    "fetched before it");
	ok(GPUT("7", now + 6) == 0 && GOT("7"), "... but not one fetched "
	    "after it");
	ok(cache_delete_begin(c, "z", 60, now + 10) == 0 &&
	    cache_delete_end(c, "z", 0, 60, now + 10) == 0 &&
	    GPUT("8", now + 5) == 1 && cache_deleted(c, "z", &at) == 1,
	    "a DELETE refused after one that deleted keeps the tombstone");
	ok(cache_delete_begin(c, "y", 60, now) == 0 &&
	    cache_delete_begin(c, "y", 60, now) == 0 &&
	    cache_delete_end(c, "y", 1, 60, now) == 0 &&
	    cache_delete_end(c, "y", 0, 60, now) == 0 &&
	    cache_deleted(c, "y", &at) == 1,
	    "deleted by one, refused by the other: still deleted");
	ok(cache_purge_id(c, "z", 1) >= 2 && cache_deleted(c, "z", &at) == 0 &&
	    GPUT("9", now) == 0, "a purge with guards removes them");
	ok(cache_delete_end(c, "never", 1, 60, now) == 0 &&
	    cache_deleted(c, "never", &at) == 0,
	    "an end with no begin makes no guard");
	/* Tenants "a", "ab" and "b": "ab" sorts between "a\0..." keys. */
	put(c, "a\0r\0p\0", 6, "1");
	put(c, "a\0i\0p\0limit=5", 13, "2");
	put(c, "a\0r\0pq\0", 7, "3");
	put(c, "ab\0r\0p\0include=x", 16, "4");
	put(c, "ab\0t\0p\0", 7, "5");
	put(c, "b\0r\0p\0", 6, "6");
	put(c, "b\0r\0q\0", 6, "7");
	ok(cache_purge_id(c, "p", 1) == 5, "purge removes an id's entries in "
	    "every tenant, of every kind");
	ok(cache_get(c, "a\0r\0p\0", 6, time(NULL), visit, &g) == 0 &&
	    cache_get(c, "ab\0t\0p\0", 7, time(NULL), visit, &g) == 0 &&
	    cache_get(c, "b\0r\0p\0", 6, time(NULL), visit, &g) == 0,
	    "the purged entries miss");
	ok(cache_get(c, "a\0r\0pq\0", 7, time(NULL), visit, &g) == 1 &&
	    cache_get(c, "b\0r\0q\0", 6, time(NULL), visit, &g) == 1 &&
	    cache_get(c, "t\0r\0xy\0", 7, time(NULL), visit, &g) == 1,
	    "other ids are kept");
	ok(cache_purge_id(c, "p", 1) == 0, "a second purge finds nothing");
	cache_close(c);

	c = cache_open(dir, 1024 * 1024, 0, &cause);
	ok(c != NULL && cache_get(c, "t\0r\0xy\0", 7, time(NULL), visit,
	    &g) == 1, "entries survive close and reopen");
	cache_close(c);

	c = cache_open(dir, 1024 * 1024, 10, &cause);
	ok(cache_get(c, "t\0r\0xy\0", 7, time(NULL) + 60, visit, &g) == 0,
	    "an entry past its ttl misses");
	ok(cache_owner_put(c, "t\0o\0x\0", 6, "bob") == 0 &&
	    cache_owner_get(c, "t\0o\0x\0", 6, key, sizeof key) == 1 &&
	    strcmp(key, "bob") == 0 && cache_owner_put(c, "t\0o\0x\0", 6,
	    "carol") == 0 && cache_owner_get(c, "t\0o\0x\0", 6, key,
	    sizeof key) == 1 && strcmp(key, "carol") == 0,
	    "owner records are read back, and rewritten");
	ok(cache_owner_get(c, "t\0o\0y\0", 6, key, sizeof key) == 0,
	    "an unknown id has no owner");
	cache_close(c);

	/* A small cache keeps storing by evicting the oldest entries. */
	snprintf(cmd, sizeof cmd, "rm -rf %s/*", dir);
	if (system(cmd) != 0)
		abort();
	c = cache_open(dir, 64 * 1024, 0, &cause);
	ok(cache_owner_put(c, "t\0o\0resp_000\0", 14, "alice") == 0,
	    "an owner record is stored");
	ok(cache_delete_begin(c, "resp_g", 600, time(NULL)) == 0,
	    "a delete guard is stored");
	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	for (i = 0; i < 200; i++) {
		snprintf(key, sizeof key, "t%cr%cresp_%03d", 0, 0, i);
		ok(put(c, key, 12, big) == 0, "store %d in a 64k cache", i);
	}
	hits = 0;
	ok(cache_owner_get(c, "t\0o\0resp_000\0", 14, key, sizeof key) == 1 &&
	    strcmp(key, "alice") == 0,
	    "an owner record outlives the entries evicted around it");
	for (i = 0; i < 200; i++) {
		snprintf(key, sizeof key, "t%cr%cresp_%03d", 0, 0, i);
		hits += cache_get(c, key, 12, time(NULL), visit, &g);
	}
	snprintf(key, sizeof key, "t%cr%cresp_%03d", 0, 0, 0);
	ok(cache_get(c, key, 12, time(NULL), visit, &g) == 0,
	    "the oldest entry was evicted");
	snprintf(key, sizeof key, "t%cr%cresp_%03d", 0, 0, 199);
	ok(cache_get(c, key, 12, time(NULL), visit, &g) == 1,
	    "the newest entry is kept");
	ok(hits > 5 && hits < 30, "some entries fit (%d)", hits);
	guard.id = "resp_g";
	guard.since = time(NULL);
	ok(cache_put(c, "t\0r\0resp_g\0", 11, &guard, 200, "", 0, "", 0, "x",
	    1, time(NULL)) == 1,
	    "a pending delete guard is never evicted by newer entries");
	ok(c->st.evictions > 100, "evictions counted (%llu)",
	    (unsigned long long)c->st.evictions);
	cache_close(c);

	/* A tenant filling the cache evicts its own entries, not others'. */
	snprintf(cmd, sizeof cmd, "rm -rf %s/*", dir);
	if (system(cmd) != 0)
		abort();
	c = cache_open(dir, 128 * 1024, 0, &cause);
	for (i = 0; i < 5; i++) {
		snprintf(key, sizeof key, "a%cr%cid_%03d", 0, 0, i);
		put(c, key, 11, big);
	}
	for (i = 0; i < 400; i++) {
		snprintf(key, sizeof key, "bb%cr%cid_%03d", 0, 0, i);
		put(c, key, 12, big);
	}
	hits = 0;
	for (i = 0; i < 5; i++) {
		snprintf(key, sizeof key, "a%cr%cid_%03d", 0, 0, i);
		hits += cache_get(c, key, 11, time(NULL), visit, &g);
	}
	ok(hits == 5, "a tenant within its share keeps every entry (%d of 5)",
	    hits);
	snprintf(key, sizeof key, "bb%cr%cid_%03d", 0, 0, 0);
	ok(cache_get(c, key, 12, time(NULL), visit, &g) == 0,
	    "the flooding tenant's oldest went");
	snprintf(key, sizeof key, "bb%cr%cid_%03d", 0, 0, 399);
	ok(cache_get(c, key, 12, time(NULL), visit, &g) == 1,
	    "its newest stayed");
	for (i = 0; i < 400; i++) {
		snprintf(key, sizeof key, "a%cr%cid_%03d", 0, 0, 100 + i);
		put(c, key, 11, big);
	}
	snprintf(key, sizeof key, "a%cr%cid_%03d", 0, 0, 0);
	ok(cache_get(c, key, 11, time(NULL), visit, &g) == 0,
	    "once it holds the most, a tenant's own oldest go");
	ok(cache_invalidate(c, "a\0r\0id_499\0", 11) == 1 &&
	    cache_get(c, "a\0r\0id_499\0", 11, time(NULL), visit, &g) == 0,
	    "an invalidated entry goes from the tenant's index too");
	cache_close(c);

	/* A damaged record's bytes still leave its tenant's count. */
	c = cache_open(dir, 128 * 1024, 0, &cause);
	put(c, "q\0r\0dmg\0", 9, "{\"x\":1}");
	{
		MDB_txn		*txn;
		MDB_val		 k = { 9, "q\0r\0dmg\0" }, v, nv;
		char		 copy[512];
		uint64_t	 before, after;
		int		 rc;

		if (mdb_txn_begin(c->env, NULL, 0, &txn) != 0 ||
		    mdb_get(txn, c->entries, &k, &v) != 0 ||
		    v.mv_size > sizeof copy)
			abort();
		before = cache_count_get(txn, c->tenants, "q", 1, &rc);
		memcpy(copy, v.mv_data, v.mv_size);
		copy[8] ^= 0x55;		/* the magic, after the sum */
		nv.mv_size = v.mv_size;
		nv.mv_data = copy;
		if (mdb_put(txn, c->entries, &k, &nv, 0) != 0 ||
		    mdb_txn_commit(txn) != 0)
			abort();
		ok(cache_get(c, "q\0r\0dmg\0", 9, time(NULL), visit, &g) == 0,
		    "a record with a damaged magic misses");
		if (mdb_txn_begin(c->env, NULL, MDB_RDONLY, &txn) != 0)
			abort();
		after = cache_count_get(txn, c->tenants, "q", 1, &rc);
		mdb_txn_abort(txn);
		ok(before > 0 && after == 0, "and its bytes leave its tenant's "
		    "count (%llu then %llu)", (unsigned long long)before,
		    (unsigned long long)after);
	}
	cache_close(c);

	/* Past their share, guards go, and the floor keeps every id safe. */
	snprintf(cmd, sizeof cmd, "rm -rf %s/*", dir);
	if (system(cmd) != 0)
		abort();
	c = cache_open(dir, 64 * 1024, 0, &cause);
	for (i = 0; i < 2000; i++) {
		snprintf(key, sizeof key, "resp_%05d", i);
		if (cache_delete_begin(c, key, 60, now) != 0)
			break;
	}
	ok(i == 2000, "2000 pending guards in a 64k cache");
	guard.id = "resp_00000";
	guard.since = now;
	ok(cache_put(c, "t\0r\0resp_00000\0", 15, &guard, 200, "", 0, "", 0,
	    "x", 1, now) == 1, "the oldest guard's id still refuses an "
	    "answer fetched before it");
	guard.id = "resp_other";
	ok(cache_put(c, "t\0r\0resp_other\0", 15, &guard, 200, "", 0, "", 0,
	    "x", 1, now) == 1, "so does any id, fetched before the floor");
	guard.since = now + 61;
	ok(cache_put(c, "t\0r\0resp_other\0", 15, &guard, 200, "", 0, "", 0,
	    "x", 1, now) == 0, "an answer fetched after the floor is stored");
	cache_close(c);

	/* Owner records: one client's creates never push out another's. */
	snprintf(cmd, sizeof cmd, "rm -rf %s/*", dir);
	if (system(cmd) != 0)
		abort();
	c = cache_open(dir, 256 * 1024, 0, &cause);
	for (i = 0; i < 10; i++) {
		snprintf(key, sizeof key, "t%co%calice_%03d", 0, 0, i);
		cache_owner_put(c, key, 13, "alice");
	}
	for (i = 0; i < 3000; i++) {
		snprintf(key, sizeof key, "t%co%cbob_%05d", 0, 0, i);
		if (cache_owner_put(c, key, 13, "bob") != 0)
			break;
	}
	ok(i == 3000, "3000 owner records stored in a 256k cache");
	hits = 0;
	for (i = 0; i < 10; i++) {
		char name[16];

		snprintf(key, sizeof key, "t%co%calice_%03d", 0, 0, i);
		hits += cache_owner_get(c, key, 13, name, sizeof name) == 1 &&
		    strcmp(name, "alice") == 0;
	}
	ok(hits == 10, "another client's flood evicts none of alice's records "
	    "(%d of 10 kept)", hits);
	ok(cache_owner_get(c, "t\0o\0bob_00000", 13, key, sizeof key) ==
	    CACHE_OWNER_LOST, "bob's oldest record went, and is known lost");
	ok(cache_owner_get(c, "t\0o\0bob_02999", 13, key, sizeof key) == 1 &&
	    strcmp(key, "bob") == 0, "bob's newest is kept");
	hits = 0;
	for (i = 0; i < 200; i++) {
		snprintf(key, sizeof key, "t%co%cnever_%03d", 0, 0, i);
		hits += cache_owner_get(c, key, 13, key + 32, 16) ==
		    CACHE_OWNER_LOST;
	}
	ok(hits <= 4, "ids never recorded are rarely taken for lost ones "
	    "(%d of 200)", hits);
	cache_close(c);
	c = cache_open(dir, 8 * 1024 * 1024, 0, &cause);
	hits = 0;
	for (i = 0; i < 100; i++) {
		snprintf(key, sizeof key, "t%co%cbob_%05d", 0, 0, i);
		hits += cache_owner_get(c, key, 13, key + 32, 16) ==
		    CACHE_OWNER_LOST;
	}
	ok(hits == 100, "reopened with another max_size, evicted records are "
	    "still known lost (%d of 100)", hits);
	cache_close(c);

	/* In the smallest cache, a client still keeps its newest records. */
	snprintf(cmd, sizeof cmd, "rm -rf %s/*", dir);
	if (system(cmd) != 0)
		abort();
	c = cache_open(dir, 16 * 1024, 0, &cause);
	hits = 0;
	for (i = 0; i < 3000; i++) {
		char name[16];

		snprintf(key, sizeof key, "t%co%cc_%05d", 0, 0, i);
		snprintf(name, sizeof name, "c%d", i % 50);
		if (cache_owner_put(c, key, 11, name) == 0 &&
		    cache_owner_get(c, key, 11, key + 32, 16) == 1)
			hits++;
	}
	ok(hits == 3000, "in a 16k cache each of 3000 new records is kept "
	    "(%d)", hits);
	cache_close(c);

	/* A cache from before the per-client index keeps its records. */
	snprintf(cmd, sizeof cmd, "rm -rf %s/*", dir);
	if (system(cmd) != 0)
		abort();
	{
		MDB_env		*env;
		MDB_txn		*txn;
		MDB_dbi		 own, age;
		uint64_t	 seq = 5;
		char		 val[16];
		MDB_val		 k = { 9, "t\0o\0old\0" }, v, ak;

		memcpy(val, &seq, sizeof seq);
		memcpy(val + sizeof seq, "zed", 3);
		v.mv_size = sizeof seq + 3;
		v.mv_data = val;
		ak.mv_size = sizeof seq;
		ak.mv_data = &seq;
		if (mdb_env_create(&env) != 0 ||
		    mdb_env_set_maxdbs(env, 4) != 0 ||
		    mdb_env_open(env, dir, 0, 0600) != 0 ||
		    mdb_txn_begin(env, NULL, 0, &txn) != 0 ||
		    mdb_dbi_open(txn, "owners", MDB_CREATE, &own) != 0 ||
		    mdb_dbi_open(txn, "owner_age", MDB_CREATE | MDB_INTEGERKEY,
		    &age) != 0 || mdb_put(txn, own, &k, &v, 0) != 0 ||
		    mdb_put(txn, age, &ak, &k, 0) != 0 ||
		    mdb_txn_commit(txn) != 0)
			abort();
		mdb_env_close(env);
	}
	c = cache_open(dir, 256 * 1024, 0, &cause);
	ok(c != NULL && cache_owner_get(c, "t\0o\0old\0", 9, key,
	    sizeof key) == 1 && strcmp(key, "zed") == 0,
	    "an owner record of the old layout is read after the upgrade");
	ok(cache_owner_put(c, "t\0o\0new\0", 9, "zed") == 0 &&
	    cache_owner_get(c, "t\0o\0new\0", 9, key, sizeof key) == 1,
	    "and new ones are written beside it");
	cache_close(c);

	test_damage(dir);
	test_old_format(dir);
	test_writer(dir);

	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	if (system(cmd) != 0)
		abort();
	return (done_testing());
}
