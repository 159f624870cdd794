/*
 * store_internal.h -- the store layer's shared state and internal calls.
 *
 * The pieces of an open store:
 *
 *   lock_fd       STORE/lock, holding an OFD write (or read) lock
 *   heap          the mapped heap file, STORE/heap.<generation>
 *   env, db_*     the LMDB environment STORE/meta and its named databases
 *   lock          readers hold it shared for a read transaction, the writer
 *                 exclusively for its whole transaction (ARCHITECTURE §9)
 *
 * Committed state is the heap file plus LMDB.  A write transaction's changes
 * live only in RAM until commit: dirty private pages of the heap, and the
 * pending maps below.  Sets that mirror an LMDB database (zct, candidates)
 * are kept as committed + this transaction's additions and removals, so
 * that abort is "forget the deltas" and commit writes only the deltas.
 */
#ifndef OBJSTORE_STORE_INTERNAL_H
#define OBJSTORE_STORE_INTERNAL_H

#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/types.h>

#include "heap.h"
#include "kvmap.h"
#include "objstore.h"
#include "objstore_admin.h"
#include "u64map.h"

#define STORE_FORMAT_VERSION 4u
#define STORE_NAME_MAX 511
#define STORE_TYPE_NAME_MAX 255
#define STORE_META_VALUE_MAX (UINT64_C(64) << 20)
#define STORE_REDO_CHUNK (UINT64_C(1) << 20)   /* data bytes per redo value */
#define STORE_DIRECT_MIN (UINT64_C(1) << 20)   /* bulk path from this size */
/* or after this many LMDB commits (a group commit's one record set counts
 * once): keeps meta/'s main tree two levels deep, so a small commit dirties
 * as few LMDB pages as a raw LMDB put (W3) */
#define STORE_CKPT_COMMITS 1000u
#define STORE_DROP_PRIVATE (UINT64_C(64) << 20)
#define STORE_GROUP_BYTES (UINT64_C(1) << 20)  /* a sealed commit's redo, at most */
#define STORE_GROUP_ROOM (UINT64_C(32) << 20)  /* meta/'s free room for sealing */

/* created[] entries: an oid (16-aligned) with this bit when the object has
 * slots (the young collection looks only at those). */
#define STORE_CREATED_SLOTS UINT64_C(1)

/* A set that mirrors an LMDB database of oids: committed + deltas. */
typedef struct oidset {
    u64map committed;
    u64map added;      /* in this transaction, not in committed */
    u64map removed;    /* in committed, removed in this transaction */
} oidset;

bool oidset_has(const oidset *o, uint64_t oid);
int oidset_add(oidset *o, uint64_t oid);
void oidset_remove(oidset *o, uint64_t oid);
void oidset_rollback(oidset *o);
void oidset_fold(oidset *o);   /* after commit: deltas into committed */
size_t oidset_count(const oidset *o);
void oidset_free(oidset *o);

/* lock.c: the reader/writer lock (its rules K1..K3 are there). */
typedef struct store_lock {
    pthread_mutex_t m;
    pthread_cond_t c;
    unsigned readers, writers_waiting;
    uint64_t next_ticket, serving;   /* K4: writers' turns */
    bool writer;
    _Atomic uintptr_t writer_id;   /* the writing thread, or 0 */
} store_lock;

/* group.c: LMDB changes, written now (txn set) or recorded to be applied
 * later by a group commit's leader (txn NULL). */
typedef struct store_wbatch {
    MDB_txn *txn;
    uint8_t *buf;
    size_t len, cap;
} store_wbatch;

struct store_sealed;   /* group.c: a sealed transaction waiting in the queue */

struct pinlog {
    uint64_t *oid;
    int8_t *delta;
    size_t n, cap;
};

#define STORE_WSEEN 64

struct objstore {
    char *dir;
    int lock_fd;
    dev_t dev;
    ino_t ino;
    bool ro;
    bool beside_writer;        /* read-only, opened while a writer had it (S5) */
    unsigned freeze_depth;     /* store_freeze nesting (writer, or leaders: G8) */
    _Atomic bool failed;       /* set by the writer, or a group's leader (G4) */
    bool forked;               /* inherited by fork: unusable, not closable */
    bool lmdb_nolock;          /* read-only checker: LMDB's lock file untouched
                                  (the store lock already excludes writers) */
    objstore_options opts;

    heap_t *heap;
    MDB_env *env;
    MDB_dbi db_main;           /* the unnamed database: the redo log (txn.c T7) */
    MDB_dbi db_meta, db_roots, db_types, db_typeids, db_user, db_zct, db_cand;
    MDB_dbi db_weak;           /* weak.c; valid when weak_db */
    uint64_t mapsize;

    uint8_t uuid[16];
    uint64_t generation;
    _Atomic uint64_t epoch;    /* last committed (durable) */
    uint64_t synced_epoch;     /* redo records <= this are in the synced heap */
    uint64_t deleted_upto;     /* redo records <= this are deleted */
    uint64_t redo_high;        /* highest end of a redo range newer than synced */
    uint64_t redo_since_ckpt;
    uint64_t redo_last;        /* newest commit that wrote redo records */
    uint64_t meta_ckpt;        /* meta/ "ckpt": records up to it are deleted */
    uint64_t commits_since_ckpt;   /* LMDB commits since: a group counts once */

    /* the journal (journal.c, rules J1..J6): heap-only commits */
    bool j_open;               /* jfd is the journal, open for writing */
    bool j_reset_due;          /* no run of this heap yet: reset before an entry */
    int jfd;
    uint64_t j_size;           /* the file's length */
    uint64_t j_run;            /* the run: its header's sequence number */
    uint64_t j_nonce;          /* and nonce, which its entries name (J2) */
    uint64_t j_end;            /* where the next entry goes */
    uint64_t j_entries;        /* entries in the run (replayed in RAM, for a
                                  read-only opener) */
    uint64_t j_high;           /* highest end of a range in the run's entries */
    uint8_t *j_buf;            /* an entry being written */
    size_t j_cap;

    store_lock lock;
    pthread_mutex_t pin_lock;

    /* group commit (group.c, rules G1..G8) */
    pthread_mutex_t g_mutex;
    pthread_cond_t g_cond;
    pthread_cond_t g_gather;   /* a leader gathering (G6): a commit sealed, or a
                                  drain or reader waits */
    uint64_t g_sync_ns;        /* the last group's LMDB commit took this long */
    struct store_sealed *g_head, *g_tail;   /* sealed, not yet taken by a leader */
    bool g_leading;            /* a leader is committing a group */
    bool g_jfull;              /* a group's entry filled the journal's run past 3/4:
                                  the next commit runs alone and checkpoints (G1) */
    uint64_t g_turn_next;      /* G8: the next group's turn to write its lines */
    uint64_t g_turn_done;      /* and the last group that wrote them */
    pthread_mutex_t g_freeze_m;   /* freeze_depth, between overlapping leaders (G8) */
    unsigned g_waiters;        /* drains and readers waiting for the queue (G6) */
    uintptr_t g_prev_writer;   /* the thread of the last commit, and when (G1); */
    uint64_t g_prev_ns;        /* under the write lock */
    uint64_t g_queued;         /* sealed transactions in the queue (G6) */
    uint64_t g_unwritten_n;    /* in groups taken, lines not yet written (G6):
                                  the transactions of turns g_turn_done+1 ..
                                  g_turn_next */
    uint64_t g_last_n;         /* in the last group taken (G6) */
    unsigned g_gather_skip;    /* G6: gathers left expecting only g_last_n */
    uint64_t g_pending_bytes;  /* and their redo bytes */
    uint64_t g_sealed;         /* newest epoch sealed (under the write lock) */
    kvmap g_roots;             /* G7: root changes sealed since the last idle drain */
    uint64_t g_roots_gen;      /* bumped when g_roots is cleared */

    /* types: id i+1 is type_names[i] */
    char **type_names;
    uint32_t ntypes, ntypes_committed, types_cap;
    kvmap type_ids;            /* name -> id (4 bytes); deleted = rolled back */
    char **dead_names;         /* rolled-back names, freed at close */
    size_t ndead;

    oidset zct;                /* persisted count 0, not yet freed */
    oidset cand;               /* cycle candidates */
    u64map pins;               /* oid -> pin count (RAM only) */
    u64map unpinned;           /* last pin gone: candidates at the next commit */
    struct pinlog pinlog;      /* this write transaction's pins, for abort */

    /* this write transaction */
    uint64_t *created;         /* objects created: freed at commit if still 0;
                                  | STORE_CREATED_SLOTS if it has slots */
    size_t ncreated, created_cap;
    size_t created_at_zero;    /* of those, how many have never been linked */
    u64map zeroed;             /* counts at 0, headers still 1 (object.c R5) */
    kvmap roots_pending;
    kvmap user_pending;
    uint64_t tx_heap_len;      /* committed heap length at begin */
    /* The write transaction's checked oids (object.c, R8): a direct-mapped
     * set of live objects it made or found sound; emptied at write begin and
     * at commit. */
    uint64_t wseen[STORE_WSEEN];

    /* the cycle collector (collect.c) */
    uint64_t gc_cand_since;    /* candidates added since the last collection */
    uint64_t gc_next_budget;   /* objstore_collect's next budget (C4) */
    objstore_collect_stats *gc_request;   /* objstore_collect asked for one */
    bool gc_collected;         /* this write transaction ran a collection */
    bool gc_defer;             /* inside the commit's frees: decrements wait (R6) */
    struct gc_set *gc_dec;     /* R6: headers one above the count (candidates) */
    _Atomic int gc_disabled;   /* automatic collections off */
    _Atomic int gc_debug;      /* OBJSTORE_GC_DEBUG_* */
    objstore_gc_kinds gc_stats;
    struct { objstore_gc_callback fn; void *arg; } gc_cb[16];
    unsigned gc_ncb;

    /* weak references (weak.c, rules W1..W5) */
    bool weak_db;              /* meta/ has the `weak` database */
    uint32_t weak_type;        /* id of "objstore.weakref", 0 = not yet known */
    u64map weak_cnt;           /* target -> weak references to it */
    u64map weak_add;           /* this transaction's new pairs: wref -> target */
    u64map weak_add_t;         /* target -> its first new wref (| bit 63: more) */
    u64map weak_del;           /* committed pairs it removed: wref -> target */
    struct u64vec weak_undo;   /* target << 1 | (decrement), for abort */
    struct u64vec weak_pairs;  /* a compaction's new (target, wref) pairs, or a
                                  repair's whole index (weak_rebuild) */
    bool weak_rebuild;         /* this commit replaces the index with weak_pairs */

    /* statistics since open */
    uint64_t st_grouped, st_group_syncs;   /* under g_mutex */
    uint64_t st_commits, st_aborts, st_redo_bytes, st_direct_bytes, st_checkpoints,
        st_freed, st_collections, st_cycles_freed, st_journal_commits;

    struct objstore *next_open;
};

struct objstore_txn {
    objstore *s;
    bool write;
    /* A read transaction's heap, for the read path's one check
     * (heap_obj_fast); NULL in a write transaction.  No writer can fail the
     * handle while a read transaction runs, so it needs no other look. */
    const heap_t *fast;
    /* The read path's last object found sound, and its exact size: a get
     * and a get_ref of the same object check it once (1 = none). */
    objstore_oid seen;
    uint64_t seen_size;
    MDB_txn *rtxn;             /* LMDB read snapshot of the committed state */
    MDB_txn *rtxn_roots;       /* a write transaction's snapshot for root lookups,
                                  taken without draining (G7) */
    uint64_t rtxn_roots_gen;   /* g_roots_gen when it was taken */
};

/* lock.c */
void store_lock_init(store_lock *l);
void store_lock_destroy(store_lock *l);
bool store_is_writer(const objstore *s);   /* this thread holds the write lock */
bool store_is_reader(const objstore *s);   /* this thread holds a read lock */
void store_read_begin(objstore *s);
void store_read_end(objstore *s);
void store_write_lock(objstore *s);
void store_write_unlock(objstore *s);

/* store.c */
int store_err(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int store_heap_err(objstore *s, heap_status st);
int store_lmdb_err(int rc, const char *what);
void store_hook(const char *step);
/* pread/pwrite of all n bytes (EINTR retried): 0, or -1 with errno set (EIO
 * for a file shorter than asked). */
int store_pread_all(int fd, void *p, size_t n, uint64_t off);
int store_pwrite_all(int fd, const void *p, size_t n, uint64_t off);
/* Runs fn with the store to itself (no transaction open): checkpoint,
 * shrink.  Refused in a read-only or failed store, or inside this thread's
 * write transaction. */
int store_exclusive(objstore *s, int (*fn)(objstore *), const char *what);
/* S5: the writer's hold on the lock file's freeze byte, around changes of
 * the committed files; nests.  Waits while a reader in another process
 * holds the store.  No-ops for a read-only handle. */
int store_freeze(objstore *s);
void store_thaw(objstore *s);
/* Takes the read side unless this thread holds the write transaction;
 * returns whether it took it. */
bool store_read_lock(objstore *s);

/* meta.c */
/* M3: data.mdb's meta pages against its size, before LMDB opens it. */
int store_meta_precheck(const char *dir, const char *data);
int store_env_open(objstore *s, const char *metadir, bool create);
int store_dbs_open(objstore *s, MDB_txn *txn, bool create);
int store_meta_load(objstore *s, MDB_txn *txn);
int store_types_load(objstore *s, MDB_txn *txn);
int store_sets_load(objstore *s, MDB_txn *txn);
int store_root_lookup(objstore_txn *t, const char *name, size_t len, uint64_t *oid);
int store_put_u64(MDB_txn *txn, MDB_dbi db, const char *key, uint64_t v);
void store_be64(uint8_t *p, uint64_t v);
uint64_t store_get_be64(const uint8_t *p);
int store_grow_map(objstore *s);

/* txn.c */
int store_replay(objstore *s);
/* Validates one redo record (key k, value v) against s's uuid and generation
 * (rule T2; without s->heap its ranges are bounded by the largest heap the
 * format allows); OBJSTORE_EREDO with a message naming its epoch and what is
 * wrong.  The chain of records (T5) is store_replay's to check. */
int store_redo_check(objstore *s, const MDB_val *k, const MDB_val *v);
/* The redo log's keys in meta/'s main database (FORMAT.md 2.1, rule T7):
 * STORE_REDO_PREFIX, u64 epoch BE, u32 seq BE; the head's key sorts after. */
#define STORE_REDO_PREFIX 0xFEu
#define STORE_REDO_KEY 13
extern const MDB_val store_redo_head_key;
void store_redo_key(uint8_t key[STORE_REDO_KEY], uint64_t epoch, uint32_t seq);
uint64_t store_redo_key_epoch(const MDB_val *k);   /* 0 for a malformed key */
/* Cursor moves over the log alone (a cursor on db_main): the first record
 * at or after (epoch, seq 0) -- epoch 0: the first, malformed keys
 * included --, the next, the last.  MDB_NOTFOUND past the log's range. */
int store_redo_seek(MDB_cursor *c, uint64_t epoch, MDB_val *k, MDB_val *v);
int store_redo_next(MDB_cursor *c, MDB_val *k, MDB_val *v);
int store_redo_last(MDB_cursor *c, MDB_val *k, MDB_val *v);
int store_checkpoint_all(objstore *s);
int store_shrink(objstore *s);
int store_write_begin(objstore *s, objstore_txn **out);
/* The transaction's LMDB read snapshot, begun on first use (in a write
 * transaction, after draining the group queue: G2). */
MDB_txn *store_rtxn(objstore_txn *t, int *rc);

/* txn.c, for group.c */
/* The redo records of one commit (T5's chain: prev names the commit before
 * with records); data is the ranges' bytes in order, or NULL to read them
 * from the mapping.  An LMDB code. */
int store_put_redo(objstore *s, MDB_txn *w, uint64_t epoch, uint64_t prev, const heap_range *r,
                   size_t n, const uint8_t *data);
int store_del_redo(objstore *s, MDB_txn *w, uint64_t upto);
/* A transaction's roots, metadata, types, sets and weak pairs into b. */
int store_put_changes(objstore *s, store_wbatch *b);
/* After the commit point (or sealing): the RAM state becomes committed. */
void store_fold_committed(objstore *s);
bool store_env_panicked(objstore *s);

/* txn.c, for journal.c: one commit's redo record (seq 0 of 1); returns its
 * checksum */
size_t store_redo_size(const heap_range *r, size_t n);
uint64_t store_redo_build(objstore *s, uint8_t *rec, size_t size, uint64_t epoch,
                          uint64_t prev, const heap_range *r, size_t n, const uint8_t *src);
/* A record's checksum as its header stores it (the record is at least its
 * header long), and whether the record matches it. */
uint64_t store_redo_stored_sum(const uint8_t *rec);
bool store_redo_whole(const uint8_t *rec, size_t len);
/* Whether a commit would change meta/ beyond the redo log (roots, metadata,
 * types, sets, weak pairs). */
bool store_has_changes(objstore *s);

/* journal.c: heap-only commits (FORMAT.md 2.4, rules J1..J6) */
#define STORE_JOURNAL_SIZE (UINT64_C(1) << 20)      /* the file, made at create */
#define STORE_JOURNAL_ENTRY_MAX (UINT64_C(64) << 10)   /* larger go to meta/ */
#define STORE_JOURNAL_NOROOM 1000                   /* no room: use meta/ */
/* One run's entries, read at open: records (redo format) in epoch order. */
struct store_jrun {
    uint8_t *buf;                /* the file */
    struct store_jentry { uint64_t epoch; size_t off, len; } *e;
    size_t n;
    uint64_t base;               /* 0 with no run of this heap */
};
int store_journal_create(const char *dir, const uint8_t uuid[16], uint64_t generation);
/* Reads dir/journal into run (J2..J4); for a writer, keeps it open. */
int store_journal_load(objstore *s, struct store_jrun *run);
void store_journal_free(struct store_jrun *run);
/* Appends the commit's entry -- the ranges' bytes from data (in range order)
 * or, when data is NULL, from the mapping -- and syncs it: OBJSTORE_OK when
 * durable; STORE_JOURNAL_NOROOM, nothing written, when it does not fit or
 * the store does not use the journal (OBJSTORE_NO_JOURNAL, relaxed); or an
 * error with *unknown set when the entry may or may not be durable. */
int store_journal_commit(objstore *s, uint64_t epoch, uint64_t prev, const heap_range *r,
                         size_t n, const uint8_t *data, bool *unknown);
/* A new run from base: every commit up to base is in the synced heap (J5). */
int store_journal_reset(objstore *s, uint64_t base);
/* That, or when the header cannot be written, no entries until a later
 * checkpoint's reset works: commits go through meta/ meanwhile, and no group
 * waits for a checkpoint (group.c G1). */
void store_journal_restart(objstore *s, uint64_t base);
void store_journal_stop(objstore *s);
void store_journal_close(objstore *s);
bool store_journal_empty(const objstore *s);   /* no entry in the run */
bool store_journal_fill_due(const objstore *s); /* the run fills 3/4: checkpoint */
uint64_t store_journal_used(const objstore *s);  /* bytes of the run's entries */
/* objstore-fsck's --discard-redo-from: drops the entries from epoch from
 * (and from any damage) on; makes a new journal when none can be read. */
int store_journal_discard(const char *dir, const uint8_t uuid[16], uint64_t generation,
                          uint64_t from, uint64_t *lost, bool *remade);

/* group.c: group commit */
void store_group_init(objstore *s);
void store_group_destroy(objstore *s);
int store_wb_put(store_wbatch *b, MDB_dbi db, const void *k, size_t klen, const void *v,
                 size_t vlen);
int store_wb_del(store_wbatch *b, MDB_dbi db, const void *k, size_t klen);   /* absent: 0 */
/* Whether this commit (after its frees, under the write lock) may seal (G1). */
bool store_group_may_seal(objstore_txn *t, uint64_t redo_bytes);
/* Seals t's commit (G1) and queues it; the caller then lets the write lock
 * go and calls store_group_wait.  On error, or when the transaction's LMDB
 * changes turn out too large to seal (*out NULL), nothing was sealed. */
int store_group_seal(objstore_txn *t, const heap_range *r, size_t n,
                     struct store_sealed **out);
/* After the sealing writer let the write lock go: a gathering leader looks
 * again (G6). */
void store_group_sealed(objstore *s);
/* Leads or waits until g's group is durable (or failed); frees g. */
int store_group_wait(objstore *s, struct store_sealed *g);
/* G2: waits until no sealed transaction is pending, no leader runs and no
 * group is still writing its lines (G8). */
void store_group_drain(objstore *s);
/* G7: a root lookup in a write transaction: the sealed roots' overlay
 * (*decided, *oid 0 when deleted), else *rt, an LMDB snapshot to look in,
 * taken without draining. */
int store_group_root(objstore_txn *t, const char *name, size_t len, bool *decided,
                     uint64_t *oid, MDB_txn **rt);
/* G2: a reader, holding its side of the lock, waits for the sealed epochs. */
void store_group_wait_durable(objstore *s);
uint64_t store_epoch(objstore *s);

/* collect.c: the cycle collector inside the current write transaction */
/* Commit's frees: drain the zero-count table, collect cycles when due (or
 * asked), drain what only the cycles held. */
int store_commit_frees(objstore_txn *t);
/* After the commit point, before the candidate set folds: counts the new
 * candidates towards the next automatic collection. */
void store_gc_committed(objstore *s);
/* A full collection (fullgc.c) in the gc module's statistics and
 * callbacks: begin returns the start time for end.  Outside any
 * transaction of this thread's. */
uint64_t store_gc_full_begin(objstore *s, uint64_t objects);
void store_gc_full_end(objstore *s, uint64_t t0, uint64_t scanned, uint64_t collected);

/* weak.c: weak references */
int store_weak_dbi(objstore *s, MDB_txn *txn, bool create);
int store_weak_load(objstore *s, MDB_txn *txn);
/* Before oid is freed: clears the weak references to it, forgets its own. */
int store_weak_freeing(objstore *s, uint64_t oid);
/* Before an object beyond use goes: clears the weak references to it
 * (its header is not read). */
int store_weak_target_gone(objstore *s, uint64_t oid);
/* Compaction: rewrites the weak references copied into dst (map: old ->
 * new), then the index in the switch transaction (an LMDB code), then RAM. */
int store_weak_compact(objstore *s, heap_t *dst, const u64map *map);
int store_weak_switch(objstore *s, MDB_txn *w);
void store_weak_switched(objstore *s);
int store_weak_put(objstore *s, store_wbatch *b);   /* an LMDB code */
void store_weak_committed(objstore *s);
void store_weak_rollback(objstore *s);
void store_weak_free(objstore *s);

/* object.c */
/* Objects whose last pin went become cycle candidates (in this transaction). */
int store_take_unpinned(objstore *s);
/* Whether any object is pinned.  Pins change only in transactions, and none
 * runs beside a commit: a commit asks once, not per object. */
bool store_any_pins(objstore *s);
uint64_t store_refcount(objstore *s, uint64_t oid);
int store_incref(objstore *s, uint64_t oid);
int store_decref(objstore *s, uint64_t oid);
/* Before oid is freed: it leaves s->gc_dec (R6). */
void store_dec_forget(objstore *s, uint64_t oid);
int store_drain_zct(objstore *s, uint64_t budget);
int store_check_txn_slow(objstore_txn *t, bool write);
/* The transaction is open on a sound handle, and is a write transaction
 * when write is asked; else the error, worded. */
static inline int store_check_txn(objstore_txn *t, bool write)
{
    if (t && t->s && !t->s->failed && !heap_failed(t->s->heap) && (t->write || !write))
        return OBJSTORE_OK;
    return store_check_txn_slow(t, write);
}

#endif
