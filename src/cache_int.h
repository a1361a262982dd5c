/*
 * cache_int.h - what the parts of the LMDB store share.
 *
 * Private to the cache_*.c files (cache.c and those beside it); the rest
 * of the proxy sees only cache.h.  It holds struct cache, the layout of
 * an entry's value, the internals of the start-up check, and the
 * functions one part of the store calls in another, grouped by the file
 * that defines them.
 */
#ifndef RC_CACHE_INT_H
#define RC_CACHE_INT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <lmdb.h>

#include "cache.h"

#define CACHE_MAGIC		0x32454352u	/* "RCE2" */
#define CACHE_FORMAT		4	/* the "format" record of "meta" */

/*
 * An entry's value: this header, then the ETag, the replay headers and
 * the body.  sum is XXH3-64 of every byte after it, header and payload
 * alike, seeded with the key's: a value or key changed on disk is never
 * served.  epoch is the cache_open() that wrote it (a random number,
 * new at each open): an entry of this epoch was written by this process
 * and is read without its sum, the others are checked on every read.
 * (Format 1, "RCE1", had no sum and began with its magic; format 3 had
 * no epoch.)
 */
struct cache_rec {
	uint64_t	sum;
	uint32_t	magic;
	uint16_t	status;
	uint16_t	etag_len;
	uint32_t	hdrs_len;
	uint32_t	body_len;
	uint64_t	stored_at;
	uint64_t	seq;
	uint64_t	epoch;
};

struct cache {
	MDB_env		*env;
	MDB_dbi		 entries;
	MDB_dbi		 age;		/* "<tenant>\0<seq>" -> key */
	MDB_dbi		 tenants;	/* tenant -> its bytes; "\0seq" */
	MDB_dbi		 guards;	/* id -> struct cache_gval */
	MDB_dbi		 owners;	/* see "Owner records" in cache.h */
	MDB_dbi		 owner_index;
	MDB_dbi		 owner_clients;
	MDB_dbi		 issued;
	MDB_dbi		 meta;		/* "format" -> CACHE_FORMAT */
	uint64_t	 epoch;		/* see struct cache_rec */
	struct cache_writer *writer;	/* cache_writer.c */
	size_t		 max_size;
	size_t		 map_size;
	double		 ttl;
	struct cache_stats st;
	time_t		 damage_logged;	/* when a damaged entry was last logged */

	pthread_t	 syncer;
	pthread_mutex_t	 mtx;
	pthread_cond_t	 cond;
	int		 dirty;
	int		 stopping;
};

/*
 * Each thread that reads keeps a read transaction, and with it a slot in
 * the lock file's reader table: room for the most workers conf.c allows
 * (1024), the main thread, and a few besides.  LMDB's default is 126.
 */
#define CACHE_MAX_READERS	1152

/* Counters any thread may bump; cache_stats() reads them. */
#define CACHE_COUNT(c, f)	__atomic_add_fetch(&(c)->st.f, 1, __ATOMIC_RELAXED)

/* cache.c */
/* Parse v into rec, its checksum unchecked; -1 unless it is whole. */
int		 cache_rec_parse(const MDB_val *, struct cache_rec *);
/*
 * The checksum of the value v (of at least sizeof(rec.sum) bytes) stored
 * under key k: a key changed on disk must not find another's answer.
 */
uint64_t	 cache_rec_sum(const MDB_val *k, const MDB_val *v);
/* Parse v into rec; -1 unless it is whole and its checksum matches. */
int		 cache_rec_check(const MDB_val *k, const MDB_val *v,
		    struct cache_rec *rec);
/*
 * This thread's read transaction, begun (clearing stale readers if full);
 * NULL on error, logged and counted.
 */
MDB_txn		*cache_read_begin(struct cache *);
/*
 * A counter: a uint64_t under key in dbi, 0 when absent (and removed
 * when set to 0).  Owner records count per client, entries per tenant.
 */
uint64_t	 cache_count_get(MDB_txn *, MDB_dbi, const void *key,
		    size_t klen, int *rc);
int		 cache_count_set(MDB_txn *, MDB_dbi, const void *key,
		    size_t klen, uint64_t n);
/* "<name>\0<seq, big-endian>" into buf (nlen + 9 bytes); its length. */
size_t		 cache_index_key(char *buf, const char *name, size_t nlen,
		    uint64_t seq);

/*
 * cache_check.c and cache_walk.c: the start-up check.  A child reads the
 * whole file and reports; it ends in cache_check_fail() (or
 * cache_check_rc()) as soon as it finds the file damaged.
 */
/* LMDB 0.9's page header (mdb.c, struct MDB_page), read to check pages. */
#define CACHE_PAGEHDRSZ		16
#define CACHE_MDB_MAGIC		0xBEEFC0DEu
#define CACHE_P_BRANCH		0x01
#define CACHE_P_LEAF		0x02
#define CACHE_P_OVERFLOW	0x04
#define CACHE_FREE_DBI		0	/* LMDB's free-page list */

enum cache_verdict { CACHE_SOUND, CACHE_DAMAGED, CACHE_UNCHECKED };

/* What the child tells its parent, in one write. */
struct cache_report {
	int		verdict;
	uint64_t	records;
	uint64_t	bytes;
	uint64_t	bad_entries;	/* pages whole, values failing their sum */
	char		why[240];
};

struct cache_walk {
	MDB_txn		*txn;
	const char	*map;
	size_t		 psize;
	size_t		 limit;		/* pages a record may lie in */
	uint64_t	 pages;		/* counted in trees and the free list */
	uint64_t	 branches;	/* of the trees, by their headers */
	unsigned char	*seen;		/* a bit a page: leaf, overflow, free */
	int		 check_entries;
	uint64_t	 sink;
};

/* cache_check.c */
/* The child's report, filled as it reads. */
extern struct cache_report	cache_check_rep;

/*
 * Check the cache in dir before it is opened.  Returns -1 and *why
 * (caller frees) if it is damaged: it must start empty.  Returns 0 if it
 * is sound, absent, or could not be checked (which is logged).  It reads
 * the whole file: 50k entries in 200 MB take about 70 ms from the page
 * cache, 0.45 s from disk; a child still reading after 10 s and a second
 * for every 50 MB is killed, and the cache starts empty.
 */
int		 cache_check(const char *dir, size_t map_size, char **why);
/* In the child: report verdict, and why, to the parent and exit. */
void		 cache_check_fail(int verdict, const char *fmt, ...)
		    __attribute__((noreturn, format(printf, 2, 3)));
/* An LMDB error: damage if it says so, otherwise no verdict. */
void		 cache_check_rc(const char *what, int rc)
		    __attribute__((noreturn));

/* cache_walk.c */
/*
 * Read every record of dbi: keys in order, as many as its header says,
 * each on a page that says it is that page, values whole; entries' values
 * are checked against their sums.
 */
void		 cache_walk_db(struct cache_walk *, MDB_dbi, const char *name);
/*
 * Every page is a meta page, in a tree, or free (mdb.c's audit): those
 * not seen as leaves, values or free must be the trees' branch pages,
 * and say so.  A branch page's number, wrong, would free another page
 * when the page is next copied.
 */
void		 cache_walk_branches(struct cache_walk *);

/* cache_evict.c: the entries' age index and eviction */
/* Index the entry under key (value size vsize) as its tenant's newest. */
int		 cache_index_add(struct cache *, MDB_txn *, MDB_val *key,
		    size_t vsize, uint64_t seq);
/*
 * Forget the entry under key (value v) in its tenant's bytes, and in the
 * age index if its record can be read (its seq).  The age record goes
 * only if it still names key: a damaged value's seq cannot be trusted.
 */
int		 cache_index_del(struct cache *, MDB_txn *, const MDB_val *key,
		    const MDB_val *v);
/* Delete the entry under k (value v) and its age record. */
int		 cache_del_entry(struct cache *, MDB_txn *, MDB_val *k,
		    MDB_val *v);
/* The pages dbi uses, in bytes; 0 if it cannot be told. */
size_t		 cache_db_used(MDB_txn *, MDB_dbi);
/*
 * The pages of every database, in bytes.  Every byte counts against
 * max_size; owner records are never evicted to make room for entries.
 */
size_t		 cache_used(struct cache *, MDB_txn *);
/*
 * Evict until need more bytes fit under the budget: the oldest entries
 * of the tenant that holds the most, so that a tenant filling the cache
 * evicts its own entries and never those of one holding less.  With one
 * tenant this is FIFO.
 */
int		 cache_evict(struct cache *, MDB_txn *, size_t need,
		    size_t budget);
/*
 * cache_evict() in a write transaction of its own, committed, so that
 * the pages it frees are there for the next: 0 or an LMDB error.
 */
int		 cache_evict_commit(struct cache *, size_t need, size_t budget);
/* The next sequence number, counted in "tenants" under "\0seq". */
uint64_t	 cache_next_seq(struct cache *, MDB_txn *, int *rc);

/* cache_guard.c: delete guards */
/*
 * In a writing transaction: MDB_KEYEXIST if id's guard (or the floor)
 * forbids storing an answer fetched at since, else 0 (or an error).  An
 * unreadable guard forbids.
 */
int		 cache_guard_blocks(struct cache *, MDB_txn *, const char *id,
		    time_t since);
/* The pages the guards use, in bytes. */
size_t		 cache_guards_used(struct cache *, MDB_txn *);

/* cache_store.c */
/*
 * The room a store of these sizes needs (key, record and its index), or
 * 0 if it is never stored: a key LMDB refuses, or over half of max_size.
 */
size_t		 cache_put_need(struct cache *, size_t klen, size_t etag_len,
		    size_t hlen, size_t blen);

/* cache_writer.c: the writer thread */
void		 cache_writer_start(struct cache *);
/* Write what is queued, then end the thread. */
void		 cache_writer_stop(struct cache *);
/* A queued entry (1) or owner record (1, name filled), or 0. */
int		 cache_writer_get(struct cache *, const void *key, size_t klen,
		    time_t now, cache_visit_fn fn, void *arg);
int		 cache_writer_owner(struct cache *, const void *key,
		    size_t klen, char *name, size_t size);
/* cache_owner.c: owner records */
/* The pages the owner records and their age index use, in bytes. */
size_t		 cache_owners_used(struct cache *, MDB_txn *);
/*
 * A cache written before owner records had a per-client index kept them
 * in "owner_age" (seq -> key): index them, count them, and drop it, so
 * no record is lost (a lost one would make its id "created elsewhere").
 */
int		 cache_owner_upgrade(struct cache *, MDB_txn *);

#endif
