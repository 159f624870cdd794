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
 *   G1 working state lives in RAM (a gc_set of the objects reached, a
 *      bitmap per arena, and arrays of trial counts by the set's dense
 *      index: gc_set.h), never in object headers; the heap is only read.
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

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "heap.h"
#include "u64map.h"

typedef struct gc_env {
    heap_t *heap;
    /* The object's persisted count (roots + slots pointing at it). */
    uint64_t (*count)(void *ctx, uint64_t oid);
    /* True when something outside the heap holds the object (a pin); NULL
     * when nothing is held. */
    int (*held)(void *ctx, uint64_t oid);
    void *ctx;
    /* gc_find_cycles: cand[0..nchecked) are live objects the caller checked
     * (heap_check_ref) in this transaction; the rest are checked here. */
    size_t nchecked;
} gc_env;

struct gc_set;

typedef struct gc_result {
    uint64_t *garbage;      /* in address order; gc_result_free frees it */
    size_t ngarbage;
    uint64_t scanned;       /* objects whose references were subtracted */
    uint64_t reached;       /* objects in the working set */
    int cut;                /* the budget stopped the scan */
    struct gc_set *found;   /* the garbage as a set, for gc_is_garbage */
} gc_result;

/* Whether oid is one of r's garbage: a bit test, no hashing, so a caller
 * freeing the garbage can tell slots into it from slots to survivors. */
bool gc_is_garbage(const gc_result *r, uint64_t oid);
/* Frees what a successful gc_find_cycles or gc_find_young gave r (the
 * list and the set; the counts stay, ngarbage included). */
void gc_result_free(gc_result *r);

/* Finds the garbage cycles reachable from cand[0..n).  Candidates that are
 * not live objects are skipped.  budget = most objects to scan (0 = no
 * limit).  On error (HEAP_ECORRUPT, HEAP_ENOMEM) the heap's message says why
 * and r holds nothing to free. */
heap_status gc_find_cycles(const gc_env *env, const uint64_t *cand, size_t n,
                           uint64_t budget, gc_result *r);

/* Young cycles (young.c): the garbage among objs[0..n), live objects one
 * transaction created.  Only edges between them are subtracted; anything
 * outside the set counts as outside, so no budget is needed: the cost is
 * proportional to the objects and their slots.  Slots that leave the set
 * are not checked here: the caller checks those of the garbage it frees. */
heap_status gc_find_young(const gc_env *env, const uint64_t *objs, size_t n, gc_result *r);

/* ---- mark from roots, batches of garbage, the canonical walk (mark.c) ----
 *
 * The whole-heap algorithms: a full collection marks what the roots reach
 * and calls the rest garbage; the logical digest walks the same graph in a
 * canonical order.  Roots come from the caller as an iterator (the store
 * reads them from LMDB; this layer knows no LMDB).
 *
 * Rules:
 *   M1 no recursion: the mark and the walk use explicit stacks in RAM.
 *   M2 every root and slot is checked (heap_check_ref) before it is
 *      followed; a bad one ends the call with HEAP_ECORRUPT and the heap's
 *      message names the offset.  Nothing here writes the heap.
 *   M3 the marks are one bit per 16-byte granule of the heap (heap bytes /
 *      128 in RAM), so marking costs no hashing.
 */

/* Gives the next root: its oid in *oid and returns 1, or returns 0 at the
 * end (or a negative value on error, which ends the call with HEAP_EIO).
 * *name / *len name the root; a NULL name is a hold that is not a counted
 * reference (a pin): marked and copied, not part of the digest. */
typedef struct gc_roots {
    int (*next)(void *ctx, uint64_t *oid, const char **name, size_t *len);
    void *ctx;
} gc_roots;

typedef struct gc_marks {
    uint64_t *bits;          /* bit (off >> 4) */
    uint64_t nwords;
    uint64_t marked;         /* objects marked */
    uint64_t marked_bytes;   /* their block bytes */
} gc_marks;

static inline int gc_is_marked(const gc_marks *m, uint64_t off)
{
    uint64_t g = off >> 4;
    return (g >> 6) < m->nwords && ((m->bits[g >> 6] >> (g & 63)) & 1);
}

/* Marks everything the roots reach.  tick (may be NULL) is called every
 * 1,048,576 objects with the count so far. */
heap_status gc_mark(heap_t *h, const gc_roots *roots, gc_marks *m,
                    void (*tick)(void *ctx, uint64_t marked), void *tick_ctx);
void gc_marks_free(gc_marks *m);

/* Of batch[0..n) (live, unreachable objects), which may be freed together
 * now without leaving a dangling slot: those whose every referrer is in the
 * batch and freeable too (trial deletion restricted to the batch: count
 * minus references from inside; what keeps a positive count, and what it
 * reaches inside the batch, stays).  free_[i] is set to 1 or 0. */
heap_status gc_batch_freeable(heap_t *h, const uint64_t *batch, size_t n,
                              uint64_t (*count)(void *ctx, uint64_t oid), void *ctx,
                              uint8_t *free_);

/* The canonical walk of the logical digest (docs/FORMAT.md, "Logical
 * digest"): XXH3-128 over the roots in the order the iterator gives them
 * (the caller gives name order) and the objects depth first over slots,
 * each as its type name, payload bytes and slots written as visit numbers.
 * type_name gives a type id's name (NULL = not registered: HEAP_ECORRUPT).
 * weak_type (0 = none) is the type id of weak references (0 slots, an
 * 8-byte payload naming the target): their payload is not hashed as bytes
 * but, after the walk, as the visit number of the target (0 when the walk
 * did not reach it), so it too depends on content, not on offsets.
 * objects (may be NULL) gets the number of objects walked. */
heap_status gc_digest(heap_t *h, const gc_roots *roots,
                      const char *(*type_name)(void *ctx, uint32_t type, size_t *len),
                      void *ctx, uint32_t weak_type, uint8_t out[16], uint64_t *objects);

/* ---- copying into a new heap generation (compact.c) ----
 *
 * Copies everything the roots reach from src into dst (a fresh heap), in
 * breadth-first order from the roots, as a copying collector does, so a walk
 * from a root reads the new file front to back.  Slots are rewritten to the
 * new offsets; counts are recomputed (counted roots + slots of copied
 * objects), so garbage is simply left behind.  map gets old -> new for every
 * copied object.  dst's dirty bytes are written back every 64 MiB (heap_
 * writeback) so private pages do not pile up; the caller writes back the
 * rest and syncs.  tick (may be NULL) is called every 65,536 objects and
 * stops the copy with HEAP_EINVAL when it returns non-zero. */
heap_status gc_copy(heap_t *src, heap_t *dst, const gc_roots *roots, u64map *map,
                    int (*tick)(void *ctx, uint64_t copied), void *tick_ctx,
                    uint64_t *copied_bytes);

#endif
