/*
 * objstore.h -- the public API of objstore, a persistent, reference-counted
 * object store backed by a memory-mapped file.
 *
 * A store is a directory holding a heap file (the objects) and an LMDB
 * environment (roots, types, user metadata, the redo log).  Objects live in
 * the heap; each has a type id, a fixed number of reference slots and a
 * payload of raw bytes:
 *
 *     header (16 bytes) | nrefs x 64-bit reference slots | payload
 *
 * An object is named by its objstore_oid, its offset in the heap (0 = null).
 * An oid stays the same while the object lives, across closes and crashes;
 * once the object is freed, its oid may name a later object.
 *
 * Reference counting (as CPython's, made durable): an object's count is the
 * number of roots naming it plus the number of reference slots of live
 * objects pointing at it.  Handles (oids in your variables) are not counted.
 * When a commit ends with an object's count at 0 and the object is not
 * pinned, the object is freed and its slots released, which may free more
 * (iteratively: a chain of any length frees without recursion).  So a new
 * object must be linked from a root or a slot, or pinned, before commit, or
 * the commit frees it.
 *
 * Transactions: one write transaction at a time per store; any number of read
 * transactions, which wait while a write transaction is open and never see
 * one half-applied.  Every object access happens inside a transaction.
 * commit is durable (it survives kill -9 and power loss) when it returns
 * OBJSTORE_OK, unless the store was opened with OBJSTORE_SYNC_RELAXED.
 *
 * Errors: every fallible call returns an objstore_status; objstore_errmsg()
 * gives the calling thread's last message, naming the file, offset or object.
 * Nothing a damaged file holds makes the library crash or abort.
 *
 * Thread safety: a store handle and its transactions may be used from any
 * thread; a single transaction must not be used by two threads at once.
 */
#ifndef OBJSTORE_H
#define OBJSTORE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef uint64_t objstore_oid;            /* 0 is null */
typedef struct objstore objstore;
typedef struct objstore_txn objstore_txn;

/* Status codes.  1..16 are shared with the heap layer. */
typedef enum objstore_status {
    OBJSTORE_OK = 0,
    OBJSTORE_EINVAL = 1,       /* bad argument (slot index, size, name...) */
    OBJSTORE_ENOMEM = 2,       /* out of memory or address space */
    OBJSTORE_EIO = 3,          /* a system call on a store file failed */
    OBJSTORE_ENOSPC = 4,       /* the disk is full */
    OBJSTORE_EBUSY = 5,        /* the store is open elsewhere (locked) */
    OBJSTORE_EEXIST = 6,       /* create: the store already exists */
    OBJSTORE_ENOENT = 7,       /* open: no such store or heap file */
    OBJSTORE_EBADMAGIC = 8,    /* the heap file is not a heap */
    OBJSTORE_EVERSION = 9,     /* a format version this build cannot read */
    OBJSTORE_ECHECKSUM = 10,   /* the heap header's checksum is wrong */
    OBJSTORE_EGEOMETRY = 11,   /* heap geometry differs from this build's */
    OBJSTORE_ETRUNCATED = 12,  /* the heap file is shorter than it says */
    OBJSTORE_ECORRUPT = 13,    /* heap metadata or an object is inconsistent */
    OBJSTORE_EBADOID = 14,     /* not the oid of a live object */
    OBJSTORE_EREADONLY = 15,   /* a write in a read-only store or transaction */
    OBJSTORE_EFAILED = 16,     /* the handle failed; close and reopen */
    OBJSTORE_ENOTFOUND = 20,   /* no such root, type or metadata key */
    OBJSTORE_EMETA = 21,       /* meta/ is missing, not LMDB, not ours, or
                                  meta/data.mdb is truncated */
    OBJSTORE_EMISMATCH = 22,   /* heap file and meta/ belong to different
                                  stores, or to different states of one */
    OBJSTORE_EREDO = 23,       /* a redo record is damaged or missing: open
                                  refused */
    OBJSTORE_ELMDB = 24,       /* LMDB returned an error (see the message) */
    OBJSTORE_ETXN = 25,        /* transaction misuse (e.g. a second writer
                                  from the thread that holds the first) */
    OBJSTORE_EOVERFLOW = 26,   /* a reference count would exceed 2^48-1 */
} objstore_status;

/* A static description of a status code. */
const char *objstore_strerror(int status);

/* The calling thread's last error message ("" if none).  Valid until the
 * thread's next objstore call. */
const char *objstore_errmsg(void);

/* The library's version, "MAJOR.MINOR.PATCH" (static storage). */
#define OBJSTORE_VERSION_STRING "0.2.0"
const char *objstore_version(void);

/* The store format this build reads and writes (the `format` key of meta/;
 * docs/FORMAT.md).  A store of another format is refused with
 * OBJSTORE_EVERSION. */
unsigned objstore_format_version(void);

/* ---- stores ---- */

enum objstore_sync {
    OBJSTORE_SYNC_DURABLE = 0,  /* commit survives power loss (default) */
    OBJSTORE_SYNC_RELAXED = 1,  /* for bulk loads you can redo: a commit
                                   survives a crash of the process, but after
                                   a crash of the machine (power, kernel) the
                                   store may be lost or inconsistent, because
                                   meta/ is not flushed while the heap file
                                   may be; close makes everything durable */
};

enum objstore_open_flags {
    OBJSTORE_RDONLY = 1,        /* read-only: shared lock, writes nothing */
    OBJSTORE_NO_JOURNAL = 2,    /* every commit through meta/'s redo log (two
                                   flushes), none through the journal (one);
                                   for comparison and tests */
};

typedef struct objstore_options {
    uint64_t initial_size;      /* create: heap bytes to start with (0 = 4 MiB) */
    int sync;                   /* enum objstore_sync */
    int flags;                  /* enum objstore_open_flags */
    uint64_t free_budget;       /* objects a commit may free (0 = 1,000,000);
                                   the rest is freed by later commits */
    uint64_t checkpoint_bytes;  /* redo bytes between checkpoints (0 = 64 MiB) */
    uint64_t gc_threshold;      /* cycle candidates added since the last
                                   collection (counted from open) that make a
                                   commit run the cycle collector (0 = 100,000;
                                   UINT64_MAX = only objstore_collect: commits
                                   then run no collection, young ones
                                   included) */
    uint64_t gc_budget;         /* objects one collection may scan
                                   (0 = 1,000,000) */
    uint64_t max_heap_size;     /* the heap may grow to this many bytes: the
                                   virtual range reserved at open, so that
                                   the mapping never moves (0 = 256 GiB; where
                                   the process cannot get that much address
                                   space, the largest range it can, halving) */
} objstore_options;

/* Creates a store in directory dir, which must not exist or be empty.  The
 * store is durable when this returns OBJSTORE_OK.  opts may be NULL. */
int objstore_create(const char *dir, const objstore_options *opts);

/* Opens a store.  Replays what a crash left, frees what a crash left
 * unreachable at count 0, checks the heap file against meta/.  A second
 * opener in this process gets OBJSTORE_EBUSY, and so does a second
 * read-write opener in another process.  OBJSTORE_RDONLY openers in other
 * processes share the store, with each other and with one writer: a
 * read-only handle sees the store as it was committed when it opened, for
 * as long as it stays open, and while it is open the writer's commits (and
 * checkpoints) wait for it to close.  A writer cannot open a store that
 * read-only handles opened while no writer had it (EBUSY).
 * opts may be NULL. */
int objstore_open(const char *dir, const objstore_options *opts, objstore **out);

/* Closes the store: checkpoints (so the next open replays nothing) and frees
 * the handle.  No transaction may be open, and no other thread may still be
 * in a call on the handle (a commit that has not returned).  Returns the
 * checkpoint's status; the handle is freed either way. */
int objstore_close(objstore *s);

/* ---- transactions ---- */

enum objstore_txn_flags {
    OBJSTORE_TXN_RDONLY = 1,
};

/* Begins a transaction.  A write transaction waits for the current writer
 * and for readers to finish; a read transaction waits for the writer.
 * Returns OBJSTORE_ETXN if this thread already holds the write transaction. */
int objstore_begin(objstore *s, int flags, objstore_txn **txn);

/* Commits a write transaction (ends a read one) and frees txn.  On an error
 * other than OBJSTORE_EFAILED the transaction was rolled back as by abort.
 * OBJSTORE_EFAILED means the outcome is unknown, or the store could not
 * write or sync its heap file (before the commit point: nothing committed;
 * after it: durable in the redo log); the message says which, and the
 * handle accepts only objstore_close. */
int objstore_commit(objstore_txn *txn);

/* Rolls back everything the transaction did (objects, counts, roots, types,
 * metadata, pins) and frees txn. */
void objstore_abort(objstore_txn *txn);

/* ---- objects ----
 * oid arguments are checked: a value that is not a live object's start gives
 * OBJSTORE_EBADOID.  Pointers handed out stay valid until the transaction
 * ends; write through a pointer only from objstore_edit. */

/* Creates an object with count 0: nrefs null slots, a zeroed payload of size
 * bytes.  type is 0 or an id from objstore_type_register. */
int objstore_new(objstore_txn *t, uint32_t type, uint32_t nrefs, uint64_t size,
                 objstore_oid *oid);

/* Read access to the payload and its exact size. */
int objstore_get(objstore_txn *t, objstore_oid oid, const void **payload,
                 uint64_t *size);

/* Write access to the whole payload (marks it dirty). */
int objstore_edit(objstore_txn *t, objstore_oid oid, void **payload, uint64_t *size);

/* Writes len bytes at offset off of the payload (marks just those). */
int objstore_write(objstore_txn *t, objstore_oid oid, uint64_t off, const void *buf,
                   uint64_t len);

/* Sets reference slot slot of oid to target (0 = null): target's count goes
 * up, the old target's down. */
int objstore_set_ref(objstore_txn *t, objstore_oid oid, uint32_t slot,
                     objstore_oid target);
int objstore_get_ref(objstore_txn *t, objstore_oid oid, uint32_t slot,
                     objstore_oid *target);

typedef struct objstore_objinfo {
    uint32_t type;
    uint32_t nrefs;
    uint64_t size;       /* payload bytes */
    uint64_t refcount;   /* persisted count: roots + slots */
    uint64_t sizeof_;    /* bytes taken in the heap, as getsizeof */
} objstore_objinfo;

int objstore_info(objstore_txn *t, objstore_oid oid, objstore_objinfo *info);

/* Bytes the object takes: header, slots, payload (sys.getsizeof). */
int objstore_getsizeof(objstore_txn *t, objstore_oid oid, uint64_t *bytes);

/* The persisted count: roots naming oid + slots pointing at it.  (Unlike
 * sys.getrefcount there is no temporary reference to add.) */
int objstore_getrefcount(objstore_txn *t, objstore_oid oid, uint64_t *count);

/* Pins keep an object alive at count 0 while this process holds them (they
 * are not persisted).  A pin taken in a transaction that aborts is undone. */
int objstore_pin(objstore_txn *t, objstore_oid oid);
int objstore_unpin(objstore_txn *t, objstore_oid oid);

/* ---- cycles ----
 * Objects that point at each other keep their counts above 0 after nothing
 * else points at them.  The cycle collector finds them by trial deletion
 * (as CPython's gc) from the cycle candidates — objects whose count went
 * down but stayed above 0 — and frees them.  It runs inside a commit when
 * gc_threshold candidates were added since the last collection, or when
 * asked.  Objects freed because their count fell to 0 are counted in
 * objstore_stats.objects_freed, never as cycles. */

typedef struct objstore_collect_stats {
    uint64_t candidates;   /* candidates looked at */
    uint64_t scanned;      /* objects scanned */
    uint64_t freed;        /* objects of garbage cycles freed (what only they
                              held is freed by the same commit, and counted in
                              objstore_stats.objects_freed); under
                              OBJSTORE_GC_DEBUG_SAVEALL: found and saved */
    int incomplete;        /* the scan budget cut it short: run it again */
} objstore_collect_stats;

/* Runs the cycle collector in a transaction of its own and commits it: the
 * commit frees what sits at count 0, collects, and frees what only the
 * cycles held.  st may be NULL.  When a call's scan was cut by its budget
 * (st->incomplete), the next call's budget is twice as large, until a scan
 * completes, so calling again until incomplete is 0 always finishes.
 * No write transaction may be open in this thread. */
int objstore_collect(objstore *s, objstore_collect_stats *st);

/* ---- the gc module: control and introspection ----
 * What Python's gc module gives, for a store handle (RAM settings: nothing
 * here is persisted).  Collections are of three kinds:
 *   young       every commit: the garbage among the objects the transaction
 *               created that survive it (CPython's generation 0): cycles
 *               that never had an outside reference, or lost it (it looks
 *               at those with slots; what only they held goes with them);
 *   candidates  a commit, when gc_threshold candidates were added since the
 *               last collection;
 *   collect     objstore_collect: every pending candidate, the budget
 *               doubling after a cut scan until one completes;
 *   full        objstore_full_collect (objstore_admin.h): marks from the
 *               roots over the whole heap and frees everything else.
 * The setters may be called from any thread, also inside a transaction of
 * this thread's (the write transaction's own thread, or none): a thread that
 * holds only a read transaction gets OBJSTORE_ETXN from those that take the
 * store's lock (thresholds, callbacks). */

enum objstore_gc_kind {
    OBJSTORE_GC_YOUNG = 0,
    OBJSTORE_GC_CANDIDATES = 1,   /* automatic, at gc_threshold */
    OBJSTORE_GC_COLLECT = 2,      /* objstore_collect */
    OBJSTORE_GC_FULL = 3,         /* objstore_full_collect (objstore_admin.h) */
    OBJSTORE_GC_NKINDS = 4
};

/* Automatic collections (young and candidates) on or off; objstore_collect
 * runs either way (gc.enable, gc.disable, gc.isenabled: 1 or 0). */
int objstore_gc_enable(objstore *s);
int objstore_gc_disable(objstore *s);
int objstore_gc_isenabled(objstore *s);

/* The options gc_threshold and gc_budget of an open handle (0 = default,
 * as at open). */
int objstore_gc_set_threshold(objstore *s, uint64_t threshold, uint64_t budget);
int objstore_gc_get_threshold(objstore *s, uint64_t *threshold, uint64_t *budget);

typedef struct objstore_gc_count {
    uint64_t young;        /* objects this thread's write transaction created
                              (0 outside one) */
    uint64_t candidates;   /* candidates added since the last collection:
                              the automatic one runs at gc_threshold */
    uint64_t pending;      /* candidates waiting (as objstore_stats) */
} objstore_gc_count;

int objstore_gc_get_count(objstore *s, objstore_gc_count *c);

typedef struct objstore_gc_kind_stats {
    uint64_t collections;
    uint64_t scanned;      /* objects scanned */
    uint64_t collected;    /* garbage found (freed, or saved: DEBUG_SAVEALL) */
    uint64_t incomplete;   /* collections the budget cut short */
    uint64_t time_ns;      /* time spent finding and freeing */
} objstore_gc_kind_stats;

typedef struct objstore_gc_kinds {
    objstore_gc_kind_stats kind[OBJSTORE_GC_NKINDS];   /* enum objstore_gc_kind */
} objstore_gc_kinds;

/* Since open, per kind (gc.get_stats). */
int objstore_gc_get_stats(objstore *s, objstore_gc_kinds *st);

enum objstore_gc_phase { OBJSTORE_GC_START = 0, OBJSTORE_GC_STOP = 1 };

typedef struct objstore_gc_info {
    int phase;             /* enum objstore_gc_phase */
    int kind;              /* enum objstore_gc_kind */
    uint64_t objects;      /* what it starts from: young objects with slots,
                              candidates (full: live objects before) */
    /* at OBJSTORE_GC_STOP: */
    uint64_t scanned;
    uint64_t collected;
    int incomplete;
    uint64_t time_ns;
} objstore_gc_info;

/* Called before and after each collection (gc.callbacks), on the thread
 * that commits, inside the commit, with the store's lock held: it must not
 * call objstore functions on this store.  Up to 16 callbacks;
 * remove names a registered (fn, arg) pair or gives OBJSTORE_ENOTFOUND. */
typedef void (*objstore_gc_callback)(void *arg, const objstore_gc_info *info);
int objstore_gc_callback_add(objstore *s, objstore_gc_callback fn, void *arg);
int objstore_gc_callback_remove(objstore *s, objstore_gc_callback fn, void *arg);

/* Debug flags (gc.set_debug).  DEBUG_SAVEALL: instead of freeing the
 * garbage a collection finds, link it under the root "gc.garbage": an
 * object of type 0 whose slot 0 names the previous "gc.garbage" object (or
 * is null) and whose slots 1.. name the garbage of one collection.  Delete
 * the root to let all of it go. */
#define OBJSTORE_GC_DEBUG_SAVEALL 1
#define OBJSTORE_GC_GARBAGE_ROOT "gc.garbage"
int objstore_gc_set_debug(objstore *s, int flags);
int objstore_gc_get_debug(objstore *s);

/* The non-null slots of oid, in slot order (gc.get_referents): fills
 * out[0..cap) and sets *n to how many there are (cap may be 0 to ask). */
int objstore_gc_get_referents(objstore_txn *t, objstore_oid oid, objstore_oid *out,
                              size_t cap, size_t *n);

/* Calls fn for each root naming oid (root = its name, from = 0, slot = 0)
 * and for each slot of a live object pointing at it (root = NULL), roots
 * first (gc.get_referrers).  Costs a pass over every root and every live
 * object's slots: O(heap), as CPython's does.  Stops when fn returns
 * non-zero and returns that value. */
typedef int (*objstore_referrer_fn)(void *arg, const char *root, objstore_oid from,
                                    uint32_t slot);
int objstore_gc_get_referrers(objstore_txn *t, objstore_oid oid, objstore_referrer_fn fn,
                              void *arg);

/* Calls fn for every live object in address order, or only those of
 * *type when type is not NULL (gc.get_objects).  Stops when fn returns
 * non-zero and returns that value. */
typedef int (*objstore_object_fn)(void *arg, objstore_oid oid);
int objstore_gc_get_objects(objstore_txn *t, const uint32_t *type, objstore_object_fn fn,
                            void *arg);

/* Prints the allocator's state in the shape of sys._debugmallocstats(): per
 * size class the block size, pools, blocks in use and free; arenas; bytes
 * in use, free, lost to pool headers and quantization; fragmentation. */
int objstore_print_mallocstats(objstore *s, FILE *out);

/* ---- weak references (weakref) ----
 * A weak reference is an object (type "objstore.weakref", no slots, an
 * 8-byte payload) that names a target without counting: it reads as the
 * target while the target lives, and as 0 in every transaction after the
 * commit that freed it (also after a crash: the clearing is part of that
 * commit).  Like any object it lives while linked from a root or a slot
 * (or pinned); link it where you keep it.  Do not write its payload. */

/* Creates a weak reference to target (count 0, as objstore_new). */
int objstore_weakref_new(objstore_txn *t, objstore_oid target, objstore_oid *wref);

/* The target, or 0 once it was freed.  OBJSTORE_EBADOID if wref is not a
 * weak reference. */
int objstore_weakref_get(objstore_txn *t, objstore_oid wref, objstore_oid *target);

/* ---- roots: names (1..511 bytes, no NUL) -> objects, counted ---- */

int objstore_root_set(objstore_txn *t, const char *name, objstore_oid oid);
/* OBJSTORE_ECORRUPT when the entry holds no oid or names no live object. */
int objstore_root_get(objstore_txn *t, const char *name, objstore_oid *oid);
/* Removes the root and releases its count.  A damaged entry (as root_get
 * reports ECORRUPT) is removed too: it held no count. */
int objstore_root_del(objstore_txn *t, const char *name);

/* Calls fn for each root in name order; stops early when fn returns non-zero
 * and returns that value. */
typedef int (*objstore_root_fn)(void *arg, const char *name, objstore_oid oid);
int objstore_root_iter(objstore_txn *t, objstore_root_fn fn, void *arg);

/* ---- types: names (1..255 bytes) -> stable ids (1, 2, ...) ---- */

/* Returns the id of name, registering it if new (write transaction). */
int objstore_type_register(objstore_txn *t, const char *name, uint32_t *id);
int objstore_type_id(objstore_txn *t, const char *name, uint32_t *id);
/* The name of id; the string stays valid while the store is open. */
int objstore_type_name(objstore_txn *t, uint32_t id, const char **name);

/* ---- user metadata: key (1..511 bytes) -> value (up to 64 MiB) ---- */

int objstore_meta_set(objstore_txn *t, const void *key, size_t klen, const void *val,
                      size_t vlen);
/* *val stays valid until the transaction ends. */
int objstore_meta_get(objstore_txn *t, const void *key, size_t klen, const void **val,
                      size_t *vlen);
int objstore_meta_del(objstore_txn *t, const void *key, size_t klen);

/* ---- statistics ---- */

typedef struct objstore_stats {
    /* heap */
    uint64_t heap_file_bytes;
    uint64_t heap_arenas;
    uint64_t heap_arenas_free;
    uint64_t heap_pools_total;
    uint64_t heap_pools_free;
    uint64_t live_objects;
    uint64_t live_bytes;        /* bytes of live blocks */
    double fragmentation;       /* 1 - live bytes / bytes of pools in use */
    struct {
        uint32_t block_size;
        uint64_t pools, blocks_used, blocks_free;
    } size_class[32];
    /* store, since open */
    uint64_t commits;
    uint64_t aborts;
    uint64_t redo_bytes;        /* heap bytes committed through the redo log */
    uint64_t direct_bytes;      /* heap bytes of bulk commits written directly */
    uint64_t checkpoints;
    uint64_t objects_freed;
    uint64_t epoch;             /* commits in the store's life */
    uint64_t zct_entries;       /* objects waiting at count 0 (pinned, budget) */
    uint64_t cycle_candidates;
    uint64_t collections;       /* candidate collections run since open
                                   (automatic and objstore_collect; young
                                   ones: objstore_gc_get_stats) */
    uint64_t cycles_freed;      /* objects trial deletion freed (all kinds) */
    uint64_t roots;
    uint64_t types;
    /* group commit (docs/API.md, "Transactions"): commits that shared a sync
     * with others, and the syncs (LMDB commits) their groups took */
    uint64_t grouped_commits;
    uint64_t group_syncs;
    /* commits whose redo went to the journal (one sync) rather than meta/ */
    uint64_t journal_commits;
} objstore_stats;

int objstore_get_stats(objstore *s, objstore_stats *st);

/* ---- backup ---- */

/* Copies the store, as of its last commit, into a new store at dest (which
 * must not exist, or be an empty directory), while the store stays open:
 * other threads' read transactions go on, a write transaction waits until
 * the copy is taken (the heap file and meta/ are copied under the read side
 * of the store's lock, so they agree).  The copy is durable (files and
 * directories fsynced) when this returns; *epoch (may be NULL) receives the
 * epoch it holds.  Not inside this thread's write transaction.  To back up
 * a store another process has open, or none, open it with OBJSTORE_RDONLY
 * and call this (the writer's commits wait while it copies). */
int objstore_backup(objstore *s, const char *dest, uint64_t *epoch);

#ifdef __cplusplus
}
#endif
#endif
