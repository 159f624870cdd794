/*
 * young.c -- the garbage among the objects one transaction created
 * (CPython's generation 0), found by trial deletion restricted to them.
 *
 * Only edges between young objects are subtracted, so a young object whose
 * count is still above 0 is referenced from outside the young set (a root,
 * an old object's slot): it and what it reaches lives.  The rest, unless
 * held (a pin), is referenced only by young garbage: cycles that never had
 * an outside reference, or lost it in the same transaction.
 *
 * Rules (besides gc.h's G1, G2, G4):
 *   Y1 the cost is proportional to the young objects and their slots, never
 *      to the heap: no hashing either.  Membership is a gc_set (a bitmap
 *      per arena touched, gc_set.h), whose rank turns an offset into a
 *      dense index (address order) into plain arrays of trial counts and
 *      colours.
 *   Y2 a bit is set only at a young object's start, so a slot that finds
 *      its bit set names a young object; any other slot (old object, or a
 *      bad one) is not followed here.  The caller checks the slots of the
 *      garbage it frees.
 *   Y3 pins are asked about only for objects that would otherwise be
 *      garbage (rare), so the common case takes no lock per object.
 *   Y4 an object at count 0 (left in the zero-count table by the free
 *      budget, or pinned) is no cycle: the drain frees it.  It counts as
 *      referenced from outside, so what it holds is not garbage yet.
 *   Y5 the first pass notes which objects have a slot naming a young
 *      object; the marking pass reads the slots of those only.  A holder
 *      of objects without slots (a bulk load's, W1's) is read once, not
 *      twice.  (An object at count 0 is skipped by both: the first pass
 *      takes none of its edges off, so what it names stays above 0 on its
 *      own count.)
 */
#include "gc.h"

#include <stdlib.h>

#include "gc_set.h"
#include "u64map.h"

/* Trial counts are 32 bits (Y1: half the memory of 64).  A count above
 * TRIAL_CAP is taken as referenced from outside at once: no young set holds
 * that many slots, and if one did, keeping the object is only conservative. */
#define TRIAL_CAP   (INT32_MAX / 4)
#define TRIAL_BLACK INT32_MAX          /* reached from outside, or held */
#define TRIAL_HELD  (INT32_MAX / 2)    /* Y4, and counts past TRIAL_CAP */

/* Y5: object k has a slot naming a young object. */
static inline void set_linked(uint64_t *linked, uint64_t k)
{
    linked[k / 64] |= UINT64_C(1) << (k % 64);
}

heap_status gc_find_young(const gc_env *env, const uint64_t *objs, size_t n, gc_result *r)
{
    *r = (gc_result){0};
    heap_t *h = env->heap;
    gc_set *y = NULL;
    uint64_t *order = NULL;
    int32_t *trial = NULL;
    uint32_t *stack = NULL;
    uint64_t *linked = NULL;
    struct u64vec garbage = {0};
    heap_status st = HEAP_ENOMEM;
    if (!n)
        return HEAP_OK;
    if (!(y = malloc(sizeof *y)))
        return HEAP_ENOMEM;
    if (!gc_set_init(y, h)) {
        free(y);
        return HEAP_ENOMEM;
    }

    /* Membership bits, then ranks: m distinct young objects. */
    for (size_t i = 0; i < n; i++)
        if (gc_set_add(y, objs[i]) < 0)
            goto out;
    uint64_t m = y->n;
    order = gc_array(m, sizeof *order, false);
    trial = gc_array(m, sizeof *trial, true);
    stack = gc_array(m, sizeof *stack, false);   /* touched only when used */
    linked = gc_array(m / 64 + 1, sizeof *linked, true);
    if (!order || !trial || !stack || !linked || !gc_set_rank(y, order))
        goto out;
    /* One pass over the objects, in address order: each count in, each
     * edge inside out (saturating: a count that cannot go lower stays
     * below 0, which is what it would be; a held one, above TRIAL_CAP, is
     * never counted down, however many young slots point at it). */
    for (uint64_t k = 0; k < m; k++) {
        if (k + 8 < m)
            __builtin_prefetch(heap_ptr(h, order[k + 8]));
        uint64_t c = env->count(env->ctx, order[k]);
        if (c == 0 || c > TRIAL_CAP) {
            /* Y4 (the drain's, and what it holds lives until then), or
             * referenced from outside for sure. */
            trial[k] = TRIAL_HELD;
            if (c == 0)
                continue;
        } else {
            trial[k] += (int32_t)c;
        }
        uint32_t nr = heap_obj_at(h, order[k])->nrefs;
        const uint64_t *slot = heap_obj_slots(h, order[k]);
        for (uint32_t j = 0; j < nr; j++) {
            int64_t q = slot[j] ? gc_set_index(y, slot[j]) : -1;
            if (q < 0)
                continue;
            set_linked(linked, k);
            if (trial[q] != INT32_MIN && trial[q] <= TRIAL_CAP)
                trial[q]--;   /* (a held one stays held) */
        }
    }

    /* Referenced from outside (trial > 0): black, with everything young it
     * reaches; then the held (Y3), the same way.  Black is written as
     * TRIAL_BLACK: the counts are not needed any more. */
    for (int pass = 0; pass < (env->held ? 2 : 1); pass++) {
        size_t top = 0;
        for (uint64_t k = 0; k < m; k++)
            if (trial[k] != TRIAL_BLACK &&
                (pass == 0 ? trial[k] > 0 : env->held(env->ctx, order[k]))) {
                trial[k] = TRIAL_BLACK;
                stack[top++] = (uint32_t)k;
            }
        while (top) {
            uint32_t k = stack[--top];
            if (!(linked[k / 64] >> (k % 64) & 1))
                continue;   /* Y5 */
            uint32_t nr = heap_obj_at(h, order[k])->nrefs;
            const uint64_t *slot = heap_obj_slots(h, order[k]);
            for (uint32_t i = 0; i < nr; i++) {
                int64_t j = slot[i] ? gc_set_index(y, slot[i]) : -1;
                if (j >= 0 && trial[j] != TRIAL_BLACK) {
                    trial[j] = TRIAL_BLACK;
                    stack[top++] = (uint32_t)j;   /* each index once: fits in m */
                }
            }
        }
    }
    /* The garbage list is order[], compacted in place (address order). */
    size_t white = 0;
    for (uint64_t k = 0; k < m; k++) {
        if (trial[k] == TRIAL_BLACK)
            gc_set_remove(y, order[k]);   /* the set keeps the garbage */
        else
            order[white++] = order[k];
    }
    garbage.v = order;
    garbage.n = white;
    order = NULL;
    r->scanned = r->reached = m;
    r->garbage = garbage.v;
    r->ngarbage = garbage.n;
    r->found = y;
    garbage.v = NULL;
    y = NULL;
    st = HEAP_OK;
out:
    free(garbage.v);
    free(linked);
    free(stack);
    free(trial);
    free(order);
    if (y) {
        gc_set_free(y);
        free(y);
    }
    return st;
}
