/*
 * objstore_admin.h -- the small administrative API the tools and tests use:
 * verification of every invariant, test hooks.  Not needed by applications.
 */
#ifndef OBJSTORE_ADMIN_H
#define OBJSTORE_ADMIN_H

#include <stdio.h>

#include "objstore.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Problems verify can find; each is counted in the report. */
enum objstore_problem {
    OBJSTORE_P_HEAP,         /* heap structure (allocator metadata) */
    OBJSTORE_P_BADSLOTS,     /* an object's slots do not fit its block */
    OBJSTORE_P_DANGLING,     /* a slot points at no live object's start */
    OBJSTORE_P_BADROOT,      /* a root names no live object */
    OBJSTORE_P_COUNT,        /* a count differs from roots + slots pointing in */
    OBJSTORE_P_LEAK,         /* count 0, not in the zero-count table */
    OBJSTORE_P_BADZCT,       /* zero-count entry not live or count not 0 */
    OBJSTORE_P_BADCAND,      /* cycle candidate that is not live */
    OBJSTORE_P_BADTYPE,      /* an object's type id is not registered */
    OBJSTORE_P_NKINDS
};

typedef struct objstore_verify_report {
    uint64_t objects;            /* live objects */
    uint64_t bytes;              /* their block bytes */
    uint64_t references;         /* non-null slots */
    uint64_t roots;
    uint64_t reachable;          /* objects reachable from the roots */
    uint64_t unreachable;        /* live but unreachable: cycles, leaks */
    uint64_t unreachable_bytes;
    uint64_t problems[OBJSTORE_P_NKINDS];
    uint64_t total_problems;     /* sum of problems[] (unreachable excluded) */
    char first_problem[256];     /* words for the first one found */
} objstore_verify_report;

/* Checks every invariant of the committed state (no write transaction may be
 * open).  Returns OBJSTORE_OK when the walk finished, whatever it found (read
 * the report); an error when it could not run. */
int objstore_verify(objstore *s, objstore_verify_report *r);

/* Test-only: fn is called with a step name before every durability step
 * ("heap-pwrite", "heap-fdatasync", "heap-grow-fdatasync", "lmdb-commit",
 * "lmdb-committed", "checkpoint-fdatasync", "checkpoint-commit",
 * "replay-pwrite", "replay-fdatasync", "replay-commit", "direct-pwrite",
 * "direct-fdatasync").  NULL removes it.  Process-wide. */
void objstore_set_crash_hook(void (*fn)(const char *step));

/* The store's epoch: the number of commits in its life (including the one an
 * open makes when it frees what a crash left at count 0). */
uint64_t objstore_epoch(objstore *s);

/* Runs a checkpoint now: fdatasync the heap, then drop the redo records that
 * are written back.  No transaction may be open. */
int objstore_checkpoint(objstore *s);

/* Releases the empty arenas at the heap's tail and shrinks the file: one
 * commit (it counts as an epoch), a checkpoint, then the file is cut.  No
 * transaction may be open. */
int objstore_shrink(objstore *s);

/* ---- inspection, dump/load, backup ---- */

/* What `objstore info` shows: the store's identity and state. */
typedef struct objstore_store_info {
    unsigned format;             /* store format version (meta/ "format") */
    uint8_t uuid[16];
    uint64_t generation;         /* heap file generation: STORE/heap.<generation> */
    uint64_t epoch;              /* last committed epoch */
    uint64_t redo_records;       /* redo records not yet checkpointed away */
    uint64_t redo_bytes;         /* their bytes */
    uint64_t roots, types, metadata;
    uint64_t meta_bytes;         /* bytes of the meta/ LMDB file */
    objstore_stats stats;        /* heap and counters, as objstore_get_stats */
} objstore_store_info;

/* Fills info for the committed state (takes the read side of the store's
 * lock; not inside this thread's write transaction). */
int objstore_get_store_info(objstore *s, objstore_store_info *info);

/* Calls fn for each user metadata entry in key order (the committed state
 * of a read transaction; refused with OBJSTORE_ETXN in a write transaction).
 * Stops early when fn returns non-zero and returns that value. */
typedef int (*objstore_meta_fn)(void *arg, const void *key, size_t klen, const void *val,
                                size_t vlen);
int objstore_meta_iter(objstore_txn *t, objstore_meta_fn fn, void *arg);

typedef struct objstore_dump_stats {
    uint64_t objects;            /* objects written / loaded */
    uint64_t payload_bytes;
    uint64_t references;         /* non-null slots */
    uint64_t roots, types, metadata;
    uint64_t epoch;              /* dump: the epoch dumped; load: the new store's */
} objstore_dump_stats;

/* Writes the whole logical content of the committed state -- types, user
 * metadata, roots, and every object reachable from the roots -- to out in
 * the text format of docs/FORMAT.md ("Dump format").  Objects unreachable
 * from the roots are not written.  A damaged object graph (a slot or root
 * naming no live object) stops it with an error naming the object.  st may
 * be NULL.  Runs in a read transaction of its own. */
int objstore_dump(objstore *s, FILE *out, objstore_dump_stats *st);

/* Creates a new store in dir (as objstore_create; opts may be NULL) and
 * loads a dump read from in into it, in one transaction: either all of it is
 * committed or, on error (a malformed or truncated dump: the message names
 * the line), nothing is and dir holds an empty store.  st may be NULL. */
int objstore_load(const char *dir, FILE *in, const objstore_options *opts,
                  objstore_dump_stats *st);

#ifdef __cplusplus
}
#endif
#endif
