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

#ifdef __cplusplus
}
#endif
#endif
