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
 *      to the heap: no hashing either.  Membership is a bitmap per arena
 *      touched (one bit per 16-byte unit), and rank() over it turns an
 *      offset into a dense index (address order) into plain arrays of
 *      trial counts and colours.
 *   Y2 a bit is set only at a young object's start, so a slot that finds
 *      its bit set names a young object; any other slot (old object, or a
 *      bad one) is not followed here.  The caller checks the slots of the
 *      garbage it frees.
 *   Y3 pins are asked about only for objects that would otherwise be
 *      garbage (rare), so the common case takes no lock per object.
 *   Y4 an object at count 0 (left in the zero-count table by the free
 *      budget, or pinned) is no cycle: the drain frees it.  It counts as
 *      referenced from outside, so what it holds is not garbage yet.
 */
#include "gc.h"

#include <stdlib.h>

#include "u64map.h"

#define UNITS_PER_ARENA (HEAP_ARENA_SIZE / HEAP_ALIGN)   /* 65536 */
#define WORDS_PER_ARENA (UNITS_PER_ARENA / 64)           /* 1024 */

struct young_arena {
    uint64_t bits[WORDS_PER_ARENA];
    uint32_t rank[WORDS_PER_ARENA];   /* young objects before this word */
};

struct young {
    struct young_arena **arena;       /* by arena number; NULL = none young */
    uint64_t narenas;
};

/* Bits set in x.  Inline (no libgcc call where the build does not assume
 * a popcount instruction): it runs for every young object and slot. */
static inline uint64_t bits_in(uint64_t x)
{
    x = x - ((x >> 1) & UINT64_C(0x5555555555555555));
    x = (x & UINT64_C(0x3333333333333333)) + ((x >> 2) & UINT64_C(0x3333333333333333));
    x = (x + (x >> 4)) & UINT64_C(0x0f0f0f0f0f0f0f0f);
    return (x * UINT64_C(0x0101010101010101)) >> 56;
}

/* Dense index of off, or -1 if off is not a young object's start (Y2). */
static inline int64_t young_index(const struct young *y, uint64_t off)
{
    uint64_t a = off >> HEAP_ARENA_SHIFT;
    if (a >= y->narenas || (off & (HEAP_ALIGN - 1)) || !y->arena[a])
        return -1;
    const struct young_arena *ya = y->arena[a];
    uint64_t unit = (off & (HEAP_ARENA_SIZE - 1)) / HEAP_ALIGN;
    uint64_t w = ya->bits[unit / 64], bit = UINT64_C(1) << (unit % 64);
    if (!(w & bit))
        return -1;
    return (int64_t)ya->rank[unit / 64] + bits_in(w & (bit - 1));
}

static void young_free(struct young *y)
{
    for (uint64_t a = 0; y->arena && a < y->narenas; a++)
        free(y->arena[a]);
    free(y->arena);
}

heap_status gc_find_young(const gc_env *env, const uint64_t *objs, size_t n, gc_result *r)
{
    *r = (gc_result){0};
    heap_t *h = env->heap;
    struct young y = {.narenas = heap_size(h) >> HEAP_ARENA_SHIFT};
    uint64_t *order = NULL;
    int64_t *trial = NULL;
    uint32_t *nrefs = NULL, *stack = NULL;
    struct u64vec garbage = {0};
    heap_status st = HEAP_ENOMEM;
    if (!n)
        return HEAP_OK;
    if (!(y.arena = calloc(y.narenas ? y.narenas : 1, sizeof *y.arena)))
        goto out;

    /* Membership bits, then ranks: m distinct young objects. */
    for (size_t i = 0; i < n; i++) {
        uint64_t a = objs[i] >> HEAP_ARENA_SHIFT;
        if (a >= y.narenas)
            continue;
        if (!y.arena[a] && !(y.arena[a] = calloc(1, sizeof *y.arena[a])))
            goto out;
        uint64_t unit = (objs[i] & (HEAP_ARENA_SIZE - 1)) / HEAP_ALIGN;
        y.arena[a]->bits[unit / 64] |= UINT64_C(1) << (unit % 64);
    }
    uint64_t m = 0;
    for (uint64_t a = 0; a < y.narenas; a++) {
        struct young_arena *ya = y.arena[a];
        for (unsigned w = 0; ya && w < WORDS_PER_ARENA; w++) {
            ya->rank[w] = (uint32_t)m;
            m += (uint64_t)bits_in(ya->bits[w]);
        }
    }
    if (m > UINT32_MAX)
        goto out;   /* ranks are 32 bits */
    order = malloc((m ? m : 1) * sizeof *order);
    trial = calloc(m ? m : 1, sizeof *trial);
    nrefs = malloc((m ? m : 1) * sizeof *nrefs);
    stack = malloc((m ? m : 1) * sizeof *stack);
    if (!order || !trial || !nrefs || !stack)
        goto out;
    /* One pass over the objects: each count in, each edge inside out.  The
     * slot counts are kept so that blackening reads no leaf's header. */
    for (size_t i = 0; i < n; i++) {
        if (i + 8 < n)
            __builtin_prefetch(heap_ptr(h, objs[i + 8]));
        int64_t k = young_index(&y, objs[i]);
        if (k < 0)
            continue;
        order[k] = objs[i];
        uint64_t c = env->count(env->ctx, objs[i]);
        trial[k] += c > HEAP_MAX_REFCOUNT ? (int64_t)HEAP_MAX_REFCOUNT : (int64_t)c;
        uint32_t nr = heap_obj_at(h, objs[i])->nrefs;
        const uint64_t *slot = heap_obj_slots(h, objs[i]);
        nrefs[k] = nr;
        if (c == 0) {   /* Y4: the drain's, and what it holds lives until then */
            trial[k] = INT64_MAX / 2;
            continue;
        }
        for (uint32_t j = 0; j < nr; j++) {
            int64_t q = slot[j] ? young_index(&y, slot[j]) : -1;
            if (q >= 0)
                trial[q]--;
        }
    }

    /* Referenced from outside (trial > 0): black, with everything young it
     * reaches; then the held (Y3), the same way.  Black is written as a
     * trial count of INT64_MAX: the counts are not needed any more. */
    for (int pass = 0; pass < (env->held ? 2 : 1); pass++) {
        size_t top = 0;
        for (uint64_t k = 0; k < m; k++)
            if (trial[k] != INT64_MAX &&
                (pass == 0 ? trial[k] > 0 : env->held(env->ctx, order[k]))) {
                trial[k] = INT64_MAX;
                stack[top++] = (uint32_t)k;
            }
        while (top) {
            uint32_t k = stack[--top];
            const uint64_t *slot = nrefs[k] ? heap_obj_slots(h, order[k]) : NULL;
            for (uint32_t i = 0; i < nrefs[k]; i++) {
                int64_t j = slot[i] ? young_index(&y, slot[i]) : -1;
                if (j >= 0 && trial[j] != INT64_MAX) {
                    trial[j] = INT64_MAX;
                    stack[top++] = (uint32_t)j;   /* each index once: fits in m */
                }
            }
        }
    }
    for (uint64_t k = 0; k < m; k++)
        if (trial[k] != INT64_MAX && !u64vec_push(&garbage, order[k]))
            goto out;
    r->scanned = r->reached = m;
    r->garbage = garbage.v;
    r->ngarbage = garbage.n;
    garbage.v = NULL;
    st = HEAP_OK;
out:
    free(garbage.v);
    free(stack);
    free(nrefs);
    free(trial);
    free(order);
    young_free(&y);
    return st;
}
