/*
 * cycles.c -- trial deletion over candidates (gc.h has the rules G1..G4).
 *
 * No hashing: the objects reached are a gc_set (a bitmap per arena,
 * gc_set.h), numbered in address order once they are all known, and the
 * working state is plain arrays by that number.  In four passes:
 *
 *   reach     from each candidate, expand objects (scanned, up to the
 *             budget; each slot checked the first time its target is
 *             seen, G4): every target joins the set.  What the stack still
 *             holds when the budget stops the scan is reached, not scanned;
 *   subtract  in address order (the heap read front to back), each scanned
 *             object's count in, each of its slots takes 1 off its target;
 *             an object not scanned starts at UNSCANNED, far above any
 *             count, so it is referenced from outside (G3);
 *   black     objects whose trial count stayed above 0 — then the held
 *             ones — and everything they reach in the set are black: they
 *             leave the set (a bit cleared, no index looked up);
 *   white     the rest, referenced only from inside by white objects, are
 *             the garbage: what the set still holds, for gc_is_garbage.
 */
#include "gc.h"

#include <stdlib.h>

#include "gc_set.h"
#include "u64map.h"

#define UNSCANNED (INT64_MAX / 2)

/* Expands from the stack's objects until it is empty or the budget is
 * spent; what it leaves on the stack was reached and not scanned. */
static heap_status reach(heap_t *h, gc_set *set, struct u64vec *s, uint64_t budget,
                         gc_result *r)
{
    while (s->n) {
        if (budget && r->scanned >= budget) {
            r->cut = 1;   /* the rest stays unscanned: held from outside (G3) */
            return HEAP_OK;
        }
        uint64_t x = s->v[--s->n];
        if (s->n)
            __builtin_prefetch(heap_ptr(h, s->v[s->n - 1]));
        r->scanned++;
        uint32_t nrefs = heap_obj_at(h, x)->nrefs;
        const uint64_t *slot = heap_obj_slots(h, x);
        for (uint32_t i = 0; i < nrefs; i++) {
            uint64_t y = slot[i];
            if (!y || gc_set_has(set, y))
                continue;   /* a member was checked when it joined */
            if (heap_check_ref(h, y) != HEAP_OK)
                return HEAP_ECORRUPT;   /* the heap's message names the slot's target */
            if (gc_set_add(set, y) < 0 || !u64vec_push(s, y))
                return HEAP_ENOMEM;
        }
    }
    return HEAP_OK;
}

/* Blackens the members whose trial count is above 0 (pass 0) or that are
 * held (pass 1), and everything they reach.  Black is leaving the set, so
 * a slot's target is tested with one bit, no index, and what the set
 * still holds at the end is the garbage.  Pins are asked about only for
 * what would otherwise be garbage, after the first pass, so the common
 * case takes no lock per object.  stack has room for every member: each
 * leaves the set, and is pushed, once. */
static void blacken(const gc_env *env, gc_set *set, const uint64_t *order,
                    const int64_t *trial, uint64_t *stack, uint64_t m)
{
    heap_t *h = env->heap;
    for (int pass = 0; pass < (env->held ? 2 : 1); pass++) {
        size_t top = 0;
        for (uint64_t k = 0; k < m; k++)
            if (pass == 0 ? trial[k] > 0
                          : gc_set_has(set, order[k]) && env->held(env->ctx, order[k])) {
                gc_set_remove(set, order[k]);
                stack[top++] = order[k];
            }
        while (top) {
            uint64_t x = stack[--top];
            if (top)
                __builtin_prefetch(heap_ptr(h, stack[top - 1]));
            /* Slots of an object not scanned were not checked: only looked
             * up in the set, which answers for any value (gc_set.h S1). */
            uint32_t nrefs = heap_obj_at(h, x)->nrefs;
            const uint64_t *slot = heap_obj_slots(h, x);
            for (uint32_t i = 0; i < nrefs; i++)
                if (slot[i] && gc_set_take(set, slot[i]))
                    stack[top++] = slot[i];
        }
    }
}

heap_status gc_find_cycles(const gc_env *env, const uint64_t *cand, size_t n,
                           uint64_t budget, gc_result *r)
{
    *r = (gc_result){0};
    heap_t *h = env->heap;
    gc_set *set = malloc(sizeof *set);
    struct u64vec s = {0}, garbage = {0};
    uint64_t *order = NULL;
    int64_t *trial = NULL;
    uint64_t *stack = NULL;
    heap_status st = HEAP_ENOMEM;
    if (!set)
        return HEAP_ENOMEM;
    if (!gc_set_init(set, h)) {
        free(set);
        return HEAP_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        if (!cand[i] || (i >= env->nchecked && heap_check_ref(h, cand[i]) != HEAP_OK))
            continue;   /* freed since, or never an object: nothing to scan */
        int added = gc_set_add(set, cand[i]);
        if (added < 0 || (added && !u64vec_push(&s, cand[i])))
            goto out;
    }
    if ((st = reach(h, set, &s, budget, r)))
        goto out;
    st = HEAP_ENOMEM;
    uint64_t m = set->n;
    order = gc_array(m, sizeof *order, false);
    trial = gc_array(m, sizeof *trial, true);
    stack = gc_array(m, sizeof *stack, false);
    if (!order || !trial || !stack || !gc_set_rank(set, order))
        goto out;
    for (size_t i = 0; i < s.n; i++)
        trial[gc_set_index(set, s.v[i])] = UNSCANNED;

    /* Subtract, in address order.  A scanned object's slots are all
     * members (reach added each). */
    for (uint64_t k = 0; k < m; k++) {
        if (k + 8 < m)
            __builtin_prefetch(heap_ptr(h, order[k + 8]));
        if (trial[k] > UNSCANNED / 2)
            continue;
        uint64_t c = env->count(env->ctx, order[k]);
        trial[k] += c > HEAP_MAX_REFCOUNT ? (int64_t)HEAP_MAX_REFCOUNT : (int64_t)c;
        uint32_t nrefs = heap_obj_at(h, order[k])->nrefs;
        const uint64_t *slot = heap_obj_slots(h, order[k]);
        for (uint32_t i = 0; i < nrefs; i++) {
            int64_t q = slot[i] ? gc_set_index(set, slot[i]) : -1;
            if (q >= 0)
                trial[q]--;
        }
    }
    blacken(env, set, order, trial, stack, m);

    /* The garbage list is order[], compacted in place (address order). */
    size_t white = 0;
    for (uint64_t k = 0; set->n && k < m; k++)
        if (gc_set_has(set, order[k]))
            order[white++] = order[k];
    garbage.v = order;
    garbage.n = white;
    order = NULL;
    r->reached = m;
    r->garbage = garbage.v;
    r->ngarbage = garbage.n;
    r->found = set;
    garbage.v = NULL;
    set = NULL;
    st = HEAP_OK;
out:
    if (st) {
        r->scanned = 0;
        r->cut = 0;
    }
    free(garbage.v);
    free(stack);
    free(trial);
    free(order);
    free(s.v);
    if (set) {
        gc_set_free(set);
        free(set);
    }
    return st;
}

bool gc_is_garbage(const gc_result *r, uint64_t oid)
{
    return r->found && gc_set_has(r->found, oid);
}

void gc_result_free(gc_result *r)
{
    free(r->garbage);
    if (r->found) {
        gc_set_free(r->found);
        free(r->found);
    }
    r->garbage = NULL;   /* the figures stay for the caller's statistics */
    r->found = NULL;
}
