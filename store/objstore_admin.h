/*
 * objstore_admin.h -- the small administrative API the tools and tests use:
 * verification of every invariant, test hooks.  Not needed by applications.
 */
#ifndef OBJSTORE_ADMIN_H
#define OBJSTORE_ADMIN_H

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

/* ---- full collection, compaction, digest ---- */

/* Called now and then by the long operations below: phase is "mark",
 * "free", "copy" or "switch"; done counts objects out of total (0 when not
 * known yet).  Returning non-zero asks the operation to stop at its next
 * clean point: a full collection stops between two commits (everything
 * committed so far stays, nothing reachable is touched), a compaction
 * before its switch (the store stays as it was).  It then returns
 * OBJSTORE_OK with stats.interrupted set. */
typedef int (*objstore_progress_fn)(void *arg, const char *phase, uint64_t done,
                                    uint64_t total);

typedef struct objstore_gc_stats {
    uint64_t objects_before;     /* live objects before */
    uint64_t bytes_before;       /* their block bytes */
    uint64_t reachable;          /* objects the roots (and pins) reach */
    uint64_t reachable_bytes;
    uint64_t garbage;            /* live objects nothing reachable points at */
    uint64_t garbage_bytes;
    uint64_t freed;              /* objects freed (0 in a dry run) */
    uint64_t freed_bytes;
    uint64_t commits;            /* transactions committed */
    uint64_t file_bytes_before;  /* heap file size */
    uint64_t file_bytes_after;   /* after (a dry run: before) */
    uint64_t compacted_bytes;    /* what a compaction would leave: an
                                    estimate from the reachable blocks' size
                                    classes */
    uint64_t generation;         /* heap generation after */
    int interrupted;             /* the progress callback stopped it */
} objstore_gc_stats;

typedef struct objstore_gc_options {
    int dry_run;                  /* mark and count only; writes nothing */
    uint64_t batch;               /* garbage objects freed per commit
                                     (0 = the store's free_budget) */
    objstore_progress_fn progress;
    void *progress_arg;
} objstore_gc_options;

/* Full collection: marks everything the roots (and this process's pins)
 * reach over the whole heap, then frees every other object -- garbage
 * cycles, leaks, cycles that never had an outside reference -- in bounded
 * commits, each a normal write transaction: a crash between two of them
 * loses nothing reachable and leaves every count exact.  Holds the store's
 * write lock for the whole run (no transaction may be open in this
 * thread).  A damaged slot or root is OBJSTORE_ECORRUPT before anything is
 * changed.  opts and st may be NULL. */
int objstore_full_collect(objstore *s, const objstore_gc_options *opts,
                          objstore_gc_stats *st);

/* Called once per moved object after a compaction's switch committed. */
typedef void (*objstore_oid_map_fn)(void *arg, objstore_oid old_oid,
                                    objstore_oid new_oid);

/* Compaction: copies every object the roots (and pins) reach into a new heap
 * generation file, breadth first from the roots, rewrites every slot and
 * root, and switches to it in one LMDB transaction; then the old file is
 * deleted.  Unreachable objects are left behind (a compaction is also a full
 * collection).  OIDS CHANGE: every oid held outside the store is stale
 * afterwards; map (may be NULL) is told old -> new for each object, and
 * this process's pins move with their objects.  A crash at any instant
 * leaves the old store or the new one; a leftover generation file is
 * removed by the next open.  Exclusive: no transaction may be open.  A full
 * disk is OBJSTORE_ENOSPC with the old store intact.  With opts->dry_run
 * nothing is written; st->compacted_bytes is the size estimate.  Its steps
 * for objstore_set_crash_hook: "compact-create", "compact-pwrite" (then the
 * heap's "heap-pwrite", "heap-ckpt-pwrite" and "heap-fdatasync" of the new
 * file),
 * "compact-dirsync", "compact-commit", "compact-committed",
 * "compact-unlink", "compact-dirsync". */
int objstore_compact(objstore *s, const objstore_gc_options *opts,
                     objstore_oid_map_fn map, void *map_arg, objstore_gc_stats *st);

/* The logical digest (docs/FORMAT.md): XXH3-128 over a canonical walk of the
 * committed content -- roots in name order, objects depth first over slots,
 * each as its type name, payload and slots written as visit numbers -- so
 * the same content gives the same digest before and after collection,
 * compaction and crash recovery, and any change of content changes it.
 * objects (may be NULL) gets the number of reachable objects. */
int objstore_digest(objstore *s, uint8_t digest[16], uint64_t *objects);

#ifdef __cplusplus
}
#endif
#endif
