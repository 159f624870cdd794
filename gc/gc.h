/*
 * gc.h -- graph algorithms over the heap: the online cycle collector.
 *
 * Trial deletion (Bacon & Rajan's synchronous cycle collection, the idea of
 * CPython's gc_refs): starting from candidate objects — whose count went
 * down but stayed above 0 — subtract every reference found inside the
 * scanned set from a copy of each count.  What is left over is referenced
 * from outside (a root, an object not scanned, a pin); everything reachable
 * from such an object lives.  The rest is garbage: cycles nothing outside
 * points at.
 *
 * Rules:
 *   G1 working state lives in RAM (a map oid -> trial count, colour), never
 *      in object headers; the heap is only read.
 *   G2 no recursion: explicit stacks, growing in RAM.
 *   G3 bounded: past `budget` objects the scan stops expanding; an object
 *      reached but not scanned counts as referenced from outside (its own
 *      references were not subtracted), which keeps the answer sound: the
 *      cut can only make garbage look alive, never the reverse.
 *   G4 every slot is checked (heap_check_ref) before it is followed; a bad
 *      one ends the collection with HEAP_ECORRUPT.
 *
 * This layer knows no LMDB and no transactions: the caller (store/) gives the
 * counts (which may differ from the headers inside a transaction) and the
 * pins, and frees the garbage itself.
 */
#ifndef OBJSTORE_GC_H
#define OBJSTORE_GC_H

#include <stddef.h>
#include <stdint.h>

#include "heap.h"

typedef struct gc_env {
    heap_t *heap;
    /* The object's persisted count (roots + slots pointing at it). */
    uint64_t (*count)(void *ctx, uint64_t oid);
    /* True when something outside the heap holds the object (a pin). */
    int (*held)(void *ctx, uint64_t oid);
    void *ctx;
} gc_env;

typedef struct gc_result {
    uint64_t *garbage;      /* malloc'd; the caller frees it */
    size_t ngarbage;
    uint64_t scanned;       /* objects whose references were subtracted */
    uint64_t reached;       /* objects in the working set */
    int cut;                /* the budget stopped the scan */
} gc_result;

/* Finds the garbage cycles reachable from cand[0..n).  Candidates that are
 * not live objects are skipped.  budget = most objects to scan (0 = no
 * limit).  On error (HEAP_ECORRUPT, HEAP_ENOMEM) the heap's message says why
 * and r holds nothing to free. */
heap_status gc_find_cycles(const gc_env *env, const uint64_t *cand, size_t n,
                           uint64_t budget, gc_result *r);

#endif
