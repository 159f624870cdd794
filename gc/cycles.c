/*
 * cycles.c -- trial deletion over candidates (gc.h has the rules G1..G4).
 *
 * The working map holds, per object reached: its trial count (count minus
 * the references found inside the scanned set) in the high bits and two
 * flags in the low bits.
 *
 *   mark    from each candidate, expand objects (scanned, up to the budget):
 *           every slot found takes 1 off its target's trial count;
 *   black   objects with a trial count above 0, held ones, and those not
 *           scanned are referenced from outside: they and everything they
 *           reach in the map are black;
 *   white   the rest — referenced only from inside, by white objects — are
 *           the garbage.
 */
#include "gc.h"

#include <stdlib.h>

#include "u64map.h"

#define F_SCANNED UINT64_C(1)
#define F_BLACK   UINT64_C(2)
#define F_BITS    2

static inline int64_t trial(uint64_t v) { return (int64_t)v >> F_BITS; }

static inline uint64_t with_trial(uint64_t v, int64_t t)
{
    return ((uint64_t)t << F_BITS) | (v & ((UINT64_C(1) << F_BITS) - 1));
}

/* Adds oid to the map with its count as trial count; *added if new. */
static uint64_t *reach(const gc_env *env, u64map *m, uint64_t oid, int *added)
{
    bool fresh;
    uint64_t *v = u64map_upsert(m, oid, &fresh);
    if (v && fresh) {
        uint64_t c = env->count(env->ctx, oid);
        *v = with_trial(0, c > (UINT64_C(1) << 60) ? (INT64_C(1) << 60) : (int64_t)c);
    }
    *added = fresh;
    return v;
}

static heap_status mark(const gc_env *env, u64map *m, struct u64vec *s, uint64_t budget,
                        gc_result *r)
{
    heap_t *h = env->heap;
    while (s->n) {
        uint64_t x = s->v[--s->n];
        uint64_t *v = u64map_find(m, x);
        if (!v || (*v & F_SCANNED))
            continue;
        if (budget && r->scanned >= budget) {
            r->cut = 1;   /* x stays unscanned: counted as held from outside (G3) */
            continue;
        }
        *v |= F_SCANNED;
        r->scanned++;
        uint32_t nrefs = heap_obj_at(h, x)->nrefs;
        const uint64_t *slot = heap_obj_slots(h, x);
        for (uint32_t i = 0; i < nrefs; i++) {
            uint64_t y = slot[i];
            if (!y)
                continue;
            if (heap_check_ref(h, y) != HEAP_OK)
                return HEAP_ECORRUPT;   /* the heap's message names the slot's target */
            int added;
            uint64_t *w = reach(env, m, y, &added);
            if (!w || (added && !u64vec_push(s, y)))
                return HEAP_ENOMEM;
            *w = with_trial(*w, trial(*w) - 1);
        }
    }
    return HEAP_OK;
}

/* Blackens x and everything it reaches in the map. */
static heap_status spread(const gc_env *env, u64map *m, struct u64vec *s)
{
    heap_t *h = env->heap;
    while (s->n) {
        uint64_t x = s->v[--s->n];
        uint32_t nrefs = heap_obj_at(h, x)->nrefs;
        const uint64_t *slot = heap_obj_slots(h, x);
        for (uint32_t i = 0; i < nrefs; i++) {
            uint64_t *w = slot[i] ? u64map_find(m, slot[i]) : NULL;
            if (w && !(*w & F_BLACK)) {
                *w |= F_BLACK;
                if (!u64vec_push(s, slot[i]))
                    return HEAP_ENOMEM;
            }
        }
    }
    return HEAP_OK;
}

/* Referenced from outside: black with what they reach.  Pins are asked
 * about only for what would otherwise be garbage, after the first spread,
 * so the common case takes no lock per object. */
static heap_status blacken(const gc_env *env, u64map *m, struct u64vec *s)
{
    uint64_t oid, val;
    for (int pass = 0; pass < (env->held ? 2 : 1); pass++) {
        for (size_t i = 0; u64map_next(m, &i, &oid, &val);) {
            if (val & F_BLACK)
                continue;
            if (pass == 0 ? !(val & F_SCANNED) || trial(val) > 0 : env->held(env->ctx, oid)) {
                *u64map_find(m, oid) |= F_BLACK;
                if (!u64vec_push(s, oid))
                    return HEAP_ENOMEM;
            }
        }
        heap_status st = spread(env, m, s);
        if (st)
            return st;
    }
    return HEAP_OK;
}

heap_status gc_find_cycles(const gc_env *env, const uint64_t *cand, size_t n,
                           uint64_t budget, gc_result *r)
{
    *r = (gc_result){0};
    u64map m = {0};
    struct u64vec s = {0};
    heap_status st = HEAP_OK;
    for (size_t i = 0; i < n && !st; i++) {
        if (heap_check_ref(env->heap, cand[i]) != HEAP_OK || !cand[i])
            continue;   /* freed since, or never an object: nothing to scan */
        int added;
        if (!reach(env, &m, cand[i], &added) || (added && !u64vec_push(&s, cand[i])))
            st = HEAP_ENOMEM;
    }
    if (!st)
        st = mark(env, &m, &s, budget, r);
    s.n = 0;
    if (!st)
        st = blacken(env, &m, &s);
    if (!st) {
        uint64_t oid, val;
        for (size_t i = 0; u64map_next(&m, &i, &oid, &val);)
            if (!(val & F_BLACK)) {
                if (!u64vec_push(&s, oid)) {
                    st = HEAP_ENOMEM;
                    break;
                }
            }
    }
    r->reached = m.n;
    u64map_free(&m);
    if (st) {
        free(s.v);
        r->garbage = NULL;
        r->ngarbage = 0;
        return st;
    }
    r->garbage = s.v;
    r->ngarbage = s.n;
    return HEAP_OK;
}
