/*
 * collect.c -- the online cycle collector, store side: gives gc/ the
 * candidates (or the transaction's young objects), the counts as this
 * transaction sees them and the pins, then frees the garbage it finds
 * inside the write transaction, so the frees are atomic with its commit
 * (ARCHITECTURE §7).  Also the gc module's controls (enable, thresholds,
 * debug flags, callbacks, statistics); introspect.c has the walks.
 *
 * Rules:
 *   C1 a garbage object's references to other garbage are dropped with it;
 *      its references to survivors are released (decref), so a survivor
 *      only the cycle held goes to the zero-count table and is freed by the
 *      same commit's drain.
 *   C2 candidates are forgotten once a complete scan looked at them, and
 *      so are the survivors the garbage pointed at (found referenced from
 *      outside, whatever the garbage did): they become candidates again at
 *      their next decrement.  After a scan the budget cut short, they stay.
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
#include <time.h>

#include "gc.h"
#include "gc_set.h"

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

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void notify(objstore *s, objstore_gc_info *info)
{
    for (unsigned i = 0; i < s->gc_ncb; i++)
        s->gc_cb[i].fn(s->gc_cb[i].arg, info);
}

/* Lets go of one garbage object before it is freed: releases its
 * references to survivors (C1) and takes it out of the store's sets.
 * Young garbage's slots out of the young set were not checked (gc.h). */
static int release_garbage(objstore *s, uint64_t oid, const gc_result *r)
{
    uint32_t nrefs = heap_obj_at(s->heap, oid)->nrefs;
    const uint64_t *slot = heap_obj_slots(s->heap, oid);
    for (uint32_t i = 0; i < nrefs; i++) {
        uint64_t c = slot[i];
        if (!c || gc_set_has(r->found, c))   /* gc_is_garbage, inline */
            continue;
        if (heap_check_ref(s->heap, c) != HEAP_OK)
            return store_err(OBJSTORE_ECORRUPT, "%s: object %llu slot %u points at %llu, "
                             "not a live object", s->dir, (unsigned long long)oid, i,
                             (unsigned long long)c);
        int rc = store_decref(s, c);
        if (rc)
            return rc;
    }
    /* Weak references, R6's set, the zct and the candidates rarely know
     * garbage: when they are empty, they cost no call. */
    int rc = s->weak_cnt.n || s->weak_type ? store_weak_freeing(s, oid) : OBJSTORE_OK;
    if (rc)
        return rc;
    if (s->gc_dec)
        store_dec_forget(s, oid);
    if (s->zct.added.n || s->zct.committed.n)
        oidset_remove(&s->zct, oid);
    if (s->cand.added.n || s->cand.committed.n)
        oidset_remove(&s->cand, oid);
    if (s->zeroed.n)
        u64map_del(&s->zeroed, oid);
    return OBJSTORE_OK;
}

/* C8: links garbage[0..n) under the root "gc.garbage". */
static int save_garbage(objstore_txn *t, const uint64_t *garbage, size_t n)
{
    if (n >= HEAP_MAX_NREFS)
        return store_err(OBJSTORE_EINVAL, "%s: %zu garbage objects do not fit one "
                         "gc.garbage object", t->s->dir, n);
    objstore_oid list, prev = 0;
    int rc = objstore_root_get(t, OBJSTORE_GC_GARBAGE_ROOT, &prev);
    if (rc && rc != OBJSTORE_ENOTFOUND)
        return rc;
    if ((rc = objstore_new(t, 0, (uint32_t)n + 1, 0, &list)) ||
        (prev && (rc = objstore_set_ref(t, list, 0, prev))))
        return rc;
    for (size_t i = 0; i < n && !rc; i++)
        rc = objstore_set_ref(t, list, (uint32_t)i + 1, garbage[i]);
    return rc ? rc : objstore_root_set(t, OBJSTORE_GC_GARBAGE_ROOT, list);
}

/* Frees (or saves) what a collection found. */
static int dispose(objstore_txn *t, const gc_result *r)
{
    objstore *s = t->s;
    if (!r->ngarbage)
        return OBJSTORE_OK;
    if (s->gc_debug & OBJSTORE_GC_DEBUG_SAVEALL)
        return save_garbage(t, r->garbage, r->ngarbage);
    int rc = OBJSTORE_OK;
    for (size_t i = 0; i < r->ngarbage && !rc; i++) {
        if (i + 8 < r->ngarbage)
            __builtin_prefetch(heap_ptr(s->heap, r->garbage[i + 8]));
        rc = release_garbage(s, r->garbage[i], r);
    }
    /* Then the blocks, all at once: the list is in address order, so the
     * objects of one pool share a lookup of it (heap_free_many). */
    heap_status hs = rc ? HEAP_OK : heap_free_many(s->heap, r->garbage, r->ngarbage, NULL);
    return rc ? rc : hs ? store_heap_err(s, hs) : OBJSTORE_OK;
}

static void account(objstore *s, objstore_gc_info *info, uint64_t t0)
{
    info->phase = OBJSTORE_GC_STOP;
    info->time_ns = now_ns() - t0;
    objstore_gc_kind_stats *k = &s->gc_stats.kind[info->kind];
    k->collections++;
    k->scanned += info->scanned;
    k->collected += info->collected;
    k->incomplete += info->incomplete != 0;
    k->time_ns += info->time_ns;
    if (!(s->gc_debug & OBJSTORE_GC_DEBUG_SAVEALL) && info->kind != OBJSTORE_GC_FULL)
        s->st_cycles_freed += info->collected;   /* a full collection counts its own */
    s->gc_collected = info->kind != OBJSTORE_GC_YOUNG || s->gc_collected;   /* C5 */
    notify(s, info);
}

/* R6: forgets the unwritten decrements (settled, or the transaction goes). */
static void drop_decrements(objstore *s)
{
    if (s->gc_dec) {
        gc_set_free(s->gc_dec);
        free(s->gc_dec);
        s->gc_dec = NULL;
    }
}

/* C2: a complete scan looked at cand[0..k): every candidate this
 * transaction added is among them (the rest are at count 0, the drain's, or
 * freed), so that half of the set is emptied at once, not object by object;
 * committed ones are removed one by one (the commit deletes them from
 * LMDB).  Before the garbage goes: what freeing it decrements becomes a
 * candidate again, and stays one. */
static void forget_candidates(objstore *s, const uint64_t *cand, size_t k)
{
    u64map_clear(&s->cand.added);
    if (s->cand.committed.n)
        for (size_t i = 0; i < k; i++)
            oidset_remove(&s->cand, cand[i]);
}

/* R6 (object.c): writes the counts this commit's frees left one below
 * their headers, before the commit writes anything.  add_cand: they stay
 * cycle candidates; else a complete scan just looked at every one (C2:
 * they were candidates of it, or survivors the garbage pointed at). */
static int settle_decrements(objstore *s, bool add_cand)
{
    gc_set *d = s->gc_dec;
    int rc = OBJSTORE_OK;
    uint64_t off;
    for (uint64_t i = 0; d && !rc && gc_set_next(d, &i, &off);) {
        if (!heap_is_live(s->heap, off))
            continue;   /* a free takes its object out; nothing to write */
        heap_obj_set_refcount(s->heap, off, heap_obj_refcount(heap_obj_at(s->heap, off)) - 1);
        if (add_cand)
            rc = oidset_add(&s->cand, off);
    }
    drop_decrements(s);
    return rc;
}

/* A collection from the candidates (automatic or objstore_collect's). */
static int collect_candidates(objstore_txn *t, bool automatic, objstore_collect_stats *st)
{
    objstore *s = t->s;
    memset(st, 0, sizeof *st);
    int rc = store_take_unpinned(s);
    if (rc)
        return rc;
    size_t n = oidset_count(&s->cand) + (s->gc_dec ? s->gc_dec->n : 0), k = 0;
    uint64_t *cand = malloc((n + 1) * sizeof *cand), oid;
    if (!cand)
        return automatic ? OBJSTORE_OK : store_err(OBJSTORE_ENOMEM, "out of memory");
    /* R6: this commit's, in address order: live objects (each was checked
     * before its decrement; a free takes it out) with counts above 0. */
    for (uint64_t i = 0; s->gc_dec && gc_set_next(s->gc_dec, &i, &oid);)
        cand[k++] = oid;
    size_t checked = k;
    for (size_t i = 0; u64map_next(&s->cand.added, &i, &oid, NULL);)
        cand[k++] = oid;
    for (size_t i = 0; u64map_next(&s->cand.committed, &i, &oid, NULL);)
        if (!u64map_find(&s->cand.removed, oid))
            cand[k++] = oid;
    /* C6: those at count 0 are the drain's. */
    size_t kept = checked;
    for (size_t i = checked; i < k; i++)
        if (!heap_is_live(s->heap, cand[i]) || store_refcount(s, cand[i]) != 0)
            cand[kept++] = cand[i];
    k = kept;
    st->candidates = k;

    uint64_t budget = s->opts.gc_budget;
    if (!automatic && s->gc_next_budget > budget)
        budget = s->gc_next_budget;   /* C4 */
    objstore_gc_info info = {.phase = OBJSTORE_GC_START,
                             .kind = automatic ? OBJSTORE_GC_CANDIDATES : OBJSTORE_GC_COLLECT,
                             .objects = k};
    uint64_t t0 = now_ns();
    notify(s, &info);
    gc_env env = {.heap = s->heap, .count = count_cb, .held = store_any_pins(s) ? held_cb : NULL,
                  .ctx = s, .nchecked = checked};
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
    if (!r.cut)
        forget_candidates(s, cand, k);
    rc = dispose(t, &r);
    if (!rc && !r.cut)
        rc = settle_decrements(s, false);
    st->freed = rc ? 0 : r.ngarbage;
    gc_result_free(&r);
    free(cand);
    if (!rc) {
        s->st_collections++;
        info.scanned = r.scanned;
        info.collected = r.ngarbage;
        info.incomplete = r.cut;
        account(s, &info, t0);
        if (!automatic)           /* C4: 0 = no limit, past doubling's reach */
            s->gc_next_budget = !r.cut ? 0 : budget > UINT64_MAX / 4 ? UINT64_MAX : budget * 2;
    }
    return rc;
}

/* C7: objs[0..n) the transaction's created objects (some freed since). */
static int collect_young(objstore_txn *t, uint64_t *objs, size_t n, bool drained,
                         uint64_t *found)
{
    objstore *s = t->s;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {   /* C9: only those with slots */
        uint64_t o = objs[i] & ~STORE_CREATED_SLOTS;
        if ((objs[i] & STORE_CREATED_SLOTS) && (!drained || heap_is_live(s->heap, o)))
            objs[m++] = o;   /* drained: the drain freed some, perhaps young ones */
    }
    *found = 0;
    if (!m)
        return OBJSTORE_OK;
    objstore_gc_info info = {.phase = OBJSTORE_GC_START, .kind = OBJSTORE_GC_YOUNG,
                             .objects = m};
    uint64_t t0 = now_ns();
    notify(s, &info);
    gc_env env = {.heap = s->heap, .count = count_cb, .held = store_any_pins(s) ? held_cb : NULL,
                  .ctx = s};
    gc_result r;
    heap_status hs = gc_find_young(&env, objs, m, &r);
    if (hs)
        return OBJSTORE_OK;   /* out of memory: nothing changed, skipped as in C3 */
    int rc = dispose(t, &r);
    gc_result_free(&r);
    if (rc)
        return rc;
    *found = r.ngarbage;
    info.scanned = r.scanned;
    info.collected = r.ngarbage;
    account(s, &info, t0);
    return OBJSTORE_OK;
}

uint64_t store_gc_full_begin(objstore *s, uint64_t objects)
{
    objstore_gc_info info = {.phase = OBJSTORE_GC_START, .kind = OBJSTORE_GC_FULL,
                             .objects = objects};
    store_write_lock(s);
    notify(s, &info);
    store_write_unlock(s);
    return now_ns();
}

void store_gc_full_end(objstore *s, uint64_t t0, uint64_t scanned, uint64_t collected)
{
    objstore_gc_info info = {.kind = OBJSTORE_GC_FULL, .scanned = scanned,
                             .collected = collected};
    store_write_lock(s);
    account(s, &info, t0);
    store_write_unlock(s);
}

static int commit_frees(objstore_txn *t)
{
    objstore *s = t->s;
    uint64_t budget = s->opts.free_budget, before = s->st_freed, found = 0;
    size_t nyoung = s->ncreated;   /* the drain forgets the list, not its entries */
    int rc = store_drain_zct(s, budget);
    if (rc)
        return rc;
    /* gc_threshold UINT64_MAX: commits collect nothing by themselves. */
    bool enabled = !s->gc_disabled;
    if (enabled && s->opts.gc_threshold != UINT64_MAX && nyoung && (rc = collect_young(t, s->created, nyoung, s->st_freed != before, &found)))
        return rc;
    objstore_collect_stats *req = s->gc_request, local;
    s->gc_request = NULL;
    uint64_t pending = s->gc_dec ? s->gc_dec->n : 0;   /* R6: new candidates too */
    bool due = enabled && s->gc_cand_since + s->cand.added.n + pending >= s->opts.gc_threshold;
    if (req || due) {
        objstore_collect_stats *st = req ? req : &local;
        if ((rc = collect_candidates(t, !req, st)))
            return rc;
        found += st->freed;
    }
    if (!found)
        return OBJSTORE_OK;
    uint64_t used = s->st_freed - before;   /* C6: drain again */
    return store_drain_zct(s, budget > used ? budget - used : 0);
}

int store_commit_frees(objstore_txn *t)
{
    objstore *s = t->s;
    s->gc_defer = true;   /* R6 */
    int rc = commit_frees(t);
    s->gc_defer = false;
    if (!rc)
        rc = settle_decrements(s, true);
    drop_decrements(s);   /* on error: the rollback restores every header */
    return rc;
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

/* ---- controls ---- */

/* Settings the commit reads are changed under the store's lock, or by the
 * thread whose write transaction holds it. */
static int config_begin(objstore *s, bool *locked, const char *what)
{
    *locked = false;
    if (!s)
        return store_err(OBJSTORE_EINVAL, "%s: no store", what);
    if (store_is_writer(s))
        return OBJSTORE_OK;
    if (store_is_reader(s))
        return store_err(OBJSTORE_ETXN, "%s: %s from a thread that holds a read "
                         "transaction would wait for itself", s->dir, what);
    store_write_lock(s);
    *locked = true;
    return OBJSTORE_OK;
}

static void config_end(objstore *s, bool locked)
{
    if (locked)
        store_write_unlock(s);
}

int objstore_gc_enable(objstore *s)
{
    if (!s)
        return store_err(OBJSTORE_EINVAL, "gc_enable: no store");
    s->gc_disabled = 0;
    return OBJSTORE_OK;
}

int objstore_gc_disable(objstore *s)
{
    if (!s)
        return store_err(OBJSTORE_EINVAL, "gc_disable: no store");
    s->gc_disabled = 1;
    return OBJSTORE_OK;
}

int objstore_gc_isenabled(objstore *s)
{
    return s && !s->gc_disabled;
}

int objstore_gc_set_threshold(objstore *s, uint64_t threshold, uint64_t budget)
{
    bool locked;
    int rc = config_begin(s, &locked, "gc_set_threshold");
    if (rc)
        return rc;
    s->opts.gc_threshold = threshold ? threshold : 100000;
    s->opts.gc_budget = budget ? budget : 1000000;
    s->gc_next_budget = 0;
    config_end(s, locked);
    return OBJSTORE_OK;
}

int objstore_gc_get_threshold(objstore *s, uint64_t *threshold, uint64_t *budget)
{
    bool locked;
    int rc = config_begin(s, &locked, "gc_get_threshold");
    if (rc)
        return rc;
    if (threshold)
        *threshold = s->opts.gc_threshold;
    if (budget)
        *budget = s->opts.gc_budget;
    config_end(s, locked);
    return OBJSTORE_OK;
}

int objstore_gc_get_count(objstore *s, objstore_gc_count *c)
{
    memset(c, 0, sizeof *c);
    if (!s)
        return store_err(OBJSTORE_EINVAL, "gc_get_count: no store");
    bool writer = store_is_writer(s);
    bool locked = store_read_lock(s);
    if (writer) {
        c->young = s->ncreated;
        c->candidates = s->gc_cand_since + s->cand.added.n;
    } else {
        c->candidates = s->gc_cand_since;
    }
    c->pending = oidset_count(&s->cand);
    if (locked)
        store_read_end(s);
    return OBJSTORE_OK;
}

int objstore_gc_get_stats(objstore *s, objstore_gc_kinds *st)
{
    memset(st, 0, sizeof *st);
    if (!s)
        return store_err(OBJSTORE_EINVAL, "gc_get_stats: no store");
    bool locked = store_read_lock(s);
    *st = s->gc_stats;
    if (locked)
        store_read_end(s);
    return OBJSTORE_OK;
}

int objstore_gc_callback_add(objstore *s, objstore_gc_callback fn, void *arg)
{
    if (!fn)
        return store_err(OBJSTORE_EINVAL, "gc_callback_add: no function");
    bool locked;
    int rc = config_begin(s, &locked, "gc_callback_add");
    if (rc)
        return rc;
    if (s->gc_ncb == sizeof s->gc_cb / sizeof s->gc_cb[0]) {
        rc = store_err(OBJSTORE_EINVAL, "%s: gc_callback_add: %u callbacks already", s->dir,
                       s->gc_ncb);
    } else {
        s->gc_cb[s->gc_ncb].fn = fn;
        s->gc_cb[s->gc_ncb++].arg = arg;
    }
    config_end(s, locked);
    return rc;
}

int objstore_gc_callback_remove(objstore *s, objstore_gc_callback fn, void *arg)
{
    bool locked;
    int rc = config_begin(s, &locked, "gc_callback_remove");
    if (rc)
        return rc;
    rc = store_err(OBJSTORE_ENOTFOUND, "%s: gc_callback_remove: no such callback", s->dir);
    for (unsigned i = 0; i < s->gc_ncb; i++)
        if (s->gc_cb[i].fn == fn && s->gc_cb[i].arg == arg) {
            memmove(&s->gc_cb[i], &s->gc_cb[i + 1], (s->gc_ncb - i - 1) * sizeof s->gc_cb[0]);
            s->gc_ncb--;
            rc = OBJSTORE_OK;
            break;
        }
    config_end(s, locked);
    return rc;
}

int objstore_gc_set_debug(objstore *s, int flags)
{
    if (!s)
        return store_err(OBJSTORE_EINVAL, "gc_set_debug: no store");
    if (flags & ~OBJSTORE_GC_DEBUG_SAVEALL)
        return store_err(OBJSTORE_EINVAL, "%s: gc_set_debug: unknown flags %#x", s->dir,
                         (unsigned)(flags & ~OBJSTORE_GC_DEBUG_SAVEALL));
    s->gc_debug = flags;
    return OBJSTORE_OK;
}

int objstore_gc_get_debug(objstore *s)
{
    return s ? s->gc_debug : 0;
}
