/*
 * cache_walk.c - the start-up check's reading of the file: every record
 * of every database, the free list, and the pages they lie in.
 *
 * It runs in the check's child (cache_check.c), on LMDB 0.9's page
 * layout: a page that is not what its tree or the free list says, one
 * used twice, or one neither in use nor free ends the child with the
 * verdict that the cache is damaged.  Entries whose values fail their
 * checksum are counted, not fatal: each goes when it is read.
 */
#include "config.h"

#include <stdint.h>
#include <string.h>

#include <lmdb.h>
#include <xxhash.h>

#include "cache.h"
#include "cache_int.h"

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
