/*
 * collect.c -- the online cycle collector, store side: gives gc/ the
 * candidates, the counts as this transaction sees them and the pins, then
 * frees the garbage it finds inside the write transaction, so the frees are
 * atomic with its commit (ARCHITECTURE §7).
 *
 * Rules:
 *   C1 a garbage object's references to other garbage are dropped with it;
 *      its references to survivors are released (decref), so a survivor
 *      only the cycle held goes to the zero-count table and is freed by the
 *      same commit's drain.
 *   C2 candidates are forgotten once a complete scan looked at them (the
 *      survivors become candidates again at their next decrement); after a
 *      scan the budget cut short, they stay.
 *   C3 a collection that fails before freeing anything leaves the
 *      transaction as it was: an automatic one (commit's threshold) is then
 *      skipped, never the user's commit failed for it.
 *   C4 repeated objstore_collect calls finish: one the budget cut short
 *      doubles the budget of the next call, until a scan completes; then it
 *      is gc_budget again.  (Resuming a cut scan would need its map kept
 *      across transactions that may change the graph; doubling keeps every
 *      scan a plain, sound trial deletion, and costs at most twice the
 *      work of one big enough scan.)
 *   C5 a commit's collection cost stays bounded: the automatic trigger
 *      counts candidates added since the last collection (as CPython counts
 *      allocations), not those pending, so candidates a cut scan kept, or a
 *      live structure behind them, do not make every later commit scan
 *      again; the count starts at 0 at open.  Automatic collections keep
 *      gc_budget.
 *   C6 a candidate at count 0 is not scanned: it is not a cycle, the drain
 *      frees it (objects_freed).  The commit drains first, so what the
 *      freed objects held is decremented — and becomes a candidate — before
 *      the collection looks, and drains again after it, so what only the
 *      cycles held goes in the same commit.
 */
#include "store_internal.h"

#include <stdlib.h>
#include <string.h>

#include "gc.h"

static uint64_t count_cb(void *ctx, uint64_t oid)
{
    return store_refcount(ctx, oid);
}

static int held_cb(void *ctx, uint64_t oid)
{
    objstore *s = ctx;
    pthread_mutex_lock(&s->pin_lock);
    int held = u64map_find(&s->pins, oid) != NULL;
    pthread_mutex_unlock(&s->pin_lock);
    return held;
}

/* Frees one garbage object: releases its references to survivors (C1). */
static int free_garbage(objstore *s, uint64_t oid, const u64map *white)
{
    uint32_t nrefs = heap_obj_at(s->heap, oid)->nrefs;
    const uint64_t *slot = heap_obj_slots(s->heap, oid);
    for (uint32_t i = 0; i < nrefs; i++) {
        uint64_t c = slot[i];
        if (!c || u64map_find(white, c))
            continue;
        int rc = store_decref(s, c);
        if (rc)
            return rc;
    }
    oidset_remove(&s->zct, oid);
    oidset_remove(&s->cand, oid);
    u64map_del(&s->zeroed, oid);
    heap_status hs = heap_free(s->heap, oid);
    return hs ? store_heap_err(s, hs) : OBJSTORE_OK;
}

int store_collect(objstore *s, bool automatic, objstore_collect_stats *st)
{
    memset(st, 0, sizeof *st);
    int rc = store_take_unpinned(s);
    if (rc)
        return rc;
    size_t n = oidset_count(&s->cand), k = 0;
    uint64_t *cand = malloc((n + 1) * sizeof *cand), oid;
    if (!cand)
        return automatic ? OBJSTORE_OK : store_err(OBJSTORE_ENOMEM, "out of memory");
    for (size_t i = 0; u64map_next(&s->cand.added, &i, &oid, NULL);)
        cand[k++] = oid;
    for (size_t i = 0; u64map_next(&s->cand.committed, &i, &oid, NULL);)
        if (!u64map_find(&s->cand.removed, oid))
            cand[k++] = oid;
    /* C6: those at count 0 are the drain's. */
    size_t kept = 0;
    for (size_t i = 0; i < k; i++)
        if (!heap_is_live(s->heap, cand[i]) || store_refcount(s, cand[i]) != 0)
            cand[kept++] = cand[i];
    k = kept;
    st->candidates = k;

    uint64_t budget = s->opts.gc_budget;
    if (!automatic && s->gc_next_budget > budget)
        budget = s->gc_next_budget;   /* C4 */
    gc_env env = {.heap = s->heap, .count = count_cb, .held = held_cb, .ctx = s};
    gc_result r;
    heap_status hs = gc_find_cycles(&env, cand, k, budget, &r);
    if (hs) {
        free(cand);
        if (automatic)
            return OBJSTORE_OK;   /* C3: nothing was changed */
        return store_heap_err(s, hs);
    }
    st->scanned = r.scanned;
    st->incomplete = r.cut;

    u64map white = {0};
    for (size_t i = 0; i < r.ngarbage && !rc; i++)
        if (!u64map_upsert(&white, r.garbage[i], NULL))
            rc = store_err(OBJSTORE_ENOMEM, "out of memory");
    for (size_t i = 0; i < r.ngarbage && !rc; i++)
        rc = free_garbage(s, r.garbage[i], &white);
    if (!rc && !r.cut)
        for (size_t i = 0; i < k; i++)   /* C2 */
            oidset_remove(&s->cand, cand[i]);
    st->freed = rc ? 0 : r.ngarbage;
    u64map_free(&white);
    free(r.garbage);
    free(cand);
    if (!rc) {
        s->st_collections++;
        s->st_cycles_freed += st->freed;
        s->gc_collected = true;   /* C5 */
        if (!automatic)           /* C4: 0 = no limit, past doubling's reach */
            s->gc_next_budget = !r.cut ? 0 : budget > UINT64_MAX / 4 ? UINT64_MAX : budget * 2;
    }
    return rc;
}

int store_commit_frees(objstore *s)
{
    uint64_t budget = s->opts.free_budget, before = s->st_freed;
    int rc = store_drain_zct(s, budget);
    if (rc)
        return rc;
    objstore_collect_stats *req = s->gc_request, local;
    s->gc_request = NULL;
    bool due = s->gc_cand_since + s->cand.added.n >= s->opts.gc_threshold;
    if (!req && !due)
        return OBJSTORE_OK;
    objstore_collect_stats *st = req ? req : &local;
    if ((rc = store_collect(s, !req, st)))
        return rc;
    if (!st->freed)
        return OBJSTORE_OK;
    uint64_t used = s->st_freed - before;   /* C6: drain again */
    return store_drain_zct(s, budget > used ? budget - used : 0);
}

void store_gc_committed(objstore *s)
{
    if (s->gc_collected)
        s->gc_cand_since = 0;
    else
        s->gc_cand_since += s->cand.added.n;
    s->gc_collected = false;
}

int objstore_collect(objstore *s, objstore_collect_stats *st)
{
    objstore_collect_stats local;
    if (!st)
        st = &local;
    memset(st, 0, sizeof *st);
    objstore_txn *t;
    int rc = objstore_begin(s, 0, &t);
    if (rc)
        return rc;
    /* The commit runs it between its two drains (C6), and takes the
     * request back (or rollback does) while it holds the store's lock. */
    s->gc_request = st;
    return objstore_commit(t);
}
