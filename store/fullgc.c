/*
 * fullgc.c -- full collection: mark from the roots over the whole heap, free
 * everything unmarked in bounded commits (ARCHITECTURE §7, "offline"; the
 * same call serves a store a program has open).
 *
 * The online collector starts from candidates and so misses garbage that
 * never had a decrement (a cycle built unreachable, what a bug leaked);
 * marking from the roots misses nothing.  Pins count as roots: a pinned
 * object is held by this process.
 *
 * Rules:
 *   F1 every change is a normal write transaction (objstore_begin/commit),
 *      at most `batch` garbage objects freed by each: a crash between two
 *      commits leaves a consistent store that lost nothing reachable; the
 *      garbage not yet freed is still garbage for the next run.
 *   F2 counts stay exact at every commit.  Freeing a set F of garbage
 *      objects together is allowed only when no object outside F points into
 *      F (gc_batch_freeable); F's references to objects outside F are
 *      released (decref), so a survivor's count drops by what garbage held.
 *      When the garbage does not fit one batch, batch members that must stay
 *      have their slots cleared (decref, as objstore_set_ref to null does):
 *      that breaks cycles that span batches, and the zero-count drain of
 *      later commits frees what falls to 0.  Only garbage is ever written.
 *   F3 the mark is valid while nobody else writes: each batch begins by
 *      comparing the store's epoch with the one its last commit left, and
 *      marks again if another writer committed in between (or while pins
 *      exist, since a pin can be taken outside a write transaction).
 *   F4 a bad root or slot found by the mark is OBJSTORE_ECORRUPT before
 *      anything is freed.
 *   F5 a dry run marks inside a read transaction and writes nothing.
 */
#include "gcstore.h"

#include <stdlib.h>
#include <string.h>

struct fgc {
    objstore *s;
    objstore_gc_options o;
    objstore_gc_stats *st;
    gc_marks marks;
    struct u64vec garbage;   /* unmarked objects, address order */
    size_t pos;              /* garbage[pos..] not yet looked at */
    uint64_t cls[HEAP_NCLASSES], run_pools, huge_arenas;   /* marked blocks */
    bool stop;
    bool marked_once;
};

static void mark_tick(void *ctx, uint64_t marked)
{
    struct fgc *f = ctx;
    if (f->o.progress && f->o.progress(f->o.progress_arg, "mark", marked, 0))
        f->stop = true;
}

static uint64_t estimate_file(const struct fgc *f);

/* Marks from the roots of t's snapshot and lists the garbage (F3, F4). */
static int mark(struct fgc *f, objstore_txn *t)
{
    objstore *s = f->s;
    gc_marks_free(&f->marks);
    f->garbage.n = 0;
    f->pos = 0;
    int rc;
    MDB_txn *rt = store_rtxn(t, &rc);
    if (!rt)
        return rc;
    store_rootlist l;
    if ((rc = store_rootlist_load(s, rt, true, &l)))
        return rc;
    gc_roots it = store_rootlist_iter(&l);
    heap_status hs = gc_mark(s->heap, &it, &f->marks, mark_tick, f);
    store_rootlist_free(&l);
    if (hs)
        return store_gc_err(s, hs, "full collection: mark");
    /* The figures describe the store as the run found it: the first mark. */
    objstore_gc_stats *st = f->marked_once ? &(objstore_gc_stats){0} : f->st;
    f->marked_once = true;
    st->objects_before = st->bytes_before = st->garbage = st->garbage_bytes = 0;
    memset(f->cls, 0, sizeof f->cls);
    f->run_pools = f->huge_arenas = 0;
    uint64_t cursor = 0, off;
    while (heap_next_live(s->heap, &cursor, &off)) {
        uint64_t size = heap_block_size(s->heap, off);
        st->objects_before++;
        st->bytes_before += size;
        if (gc_is_marked(&f->marks, off)) {
            if (size <= HEAP_SMALL_MAX)
                f->cls[heap_size_class(size)]++;
            else if (size <= HEAP_RUN_MAX)
                f->run_pools += (size + HEAP_POOL_SIZE - 1) / HEAP_POOL_SIZE;
            else
                f->huge_arenas += (size + HEAP_POOL_SIZE + HEAP_ARENA_SIZE - 1) / HEAP_ARENA_SIZE;
            continue;
        }
        st->garbage++;
        st->garbage_bytes += size;
        if (!u64vec_push(&f->garbage, off))
            return store_err(OBJSTORE_ENOMEM, "%s: full collection: out of memory listing "
                             "garbage", s->dir);
    }
    st->reachable = f->marks.marked;
    st->compacted_bytes = estimate_file(f);
    st->reachable_bytes = f->marks.marked_bytes;
    return OBJSTORE_OK;
}

/* The heap file a compaction would leave: the marked blocks packed into
 * pools of their class, runs and arenas. */
static uint64_t estimate_file(const struct fgc *f)
{
    uint64_t pools = f->run_pools;
    for (unsigned c = 0; c < HEAP_NCLASSES; c++) {
        uint64_t per = HEAP_POOL_SIZE / heap_class_size(c);
        pools += (f->cls[c] + per - 1) / per;
    }
    uint64_t arenas = (pools + HEAP_DATA_POOLS - 1) / HEAP_DATA_POOLS + f->huge_arenas;
    return (arenas ? arenas : 1) << HEAP_ARENA_SHIFT;
}

static int decref_survivor(struct fgc *f, uint64_t t)
{
    int rc = store_decref(f->s, t);
    /* A marked object is reachable: no use scanning it for cycles. */
    if (!rc && gc_is_marked(&f->marks, t))
        oidset_remove(&f->s->cand, t);
    return rc;
}

/* One batch inside write transaction t (F2). */
static int free_batch(struct fgc *f, const uint64_t *batch, size_t n, bool all)
{
    objstore *s = f->s;
    heap_t *h = s->heap;
    uint8_t *fr = malloc(n + 1);
    if (!fr)
        return store_err(OBJSTORE_ENOMEM, "out of memory");
    int rc = OBJSTORE_OK;
    heap_status hs = HEAP_OK;
    if (all)
        memset(fr, 1, n);   /* every remaining garbage object: nothing outside */
    else
        hs = gc_batch_freeable(h, batch, n, (uint64_t (*)(void *, uint64_t))store_refcount,
                               s, fr);
    /* F as a set.  When the batch is all the garbage left, F is the live
     * unmarked objects from batch[0] on (the list is in address order;
     * those kept by earlier batches lie below it): the marks answer
     * without a map. */
    u64map white = {0};
    if (hs)
        rc = store_gc_err(s, hs, "full collection");
    for (size_t i = 0; i < n && !rc && !all; i++)
        if (fr[i] && !u64map_upsert(&white, batch[i], NULL))
            rc = store_err(OBJSTORE_ENOMEM, "out of memory");
    for (size_t i = 0; i < n && !rc; i++) {
        uint64_t x = batch[i];
        uint32_t nrefs = heap_obj_at(h, x)->nrefs;
        uint64_t *slot = heap_obj_slots(h, x);
        for (uint32_t k = 0; k < nrefs && !rc; k++) {
            uint64_t t = slot[k];
            if (!t || (fr[i] && (all ? t >= batch[0] && !gc_is_marked(&f->marks, t)
                                     : u64map_find(&white, t) != NULL)))
                continue;   /* freed with x: no count to keep */
            if (heap_check_ref(h, t) != HEAP_OK) {
                rc = store_err(OBJSTORE_ECORRUPT, "%s: object %llu slot %u points at %llu, "
                               "not a live object", s->dir, (unsigned long long)x, k,
                               (unsigned long long)t);
                break;
            }
            if (!fr[i]) {   /* stays this commit: its slot is cleared */
                heap_mark_dirty(h, x + HEAP_OBJ_HEADER + (uint64_t)k * 8, 8);
                slot[k] = 0;
            }
            rc = decref_survivor(f, t);
        }
        if (rc || !fr[i])
            continue;
        if ((rc = store_weak_freeing(s, x)))   /* weak.c W7 */
            continue;
        oidset_remove(&s->zct, x);
        oidset_remove(&s->cand, x);
        u64map_del(&s->zeroed, x);
        if ((hs = heap_free(h, x)))
            rc = store_heap_err(s, hs);
        else
            f->st->freed++;
    }
    u64map_free(&white);
    free(fr);
    return rc;
}

static int run(struct fgc *f)
{
    objstore *s = f->s;
    objstore_gc_stats *st = f->st;
    uint64_t batch = f->o.batch ? f->o.batch : s->opts.free_budget;
    uint64_t expect = 0;
    bool first = true;
    int rc = OBJSTORE_OK;
    for (;;) {
        objstore_txn *t;
        if ((rc = objstore_begin(s, 0, &t)))
            return rc;
        if (first || s->epoch != expect || s->pins.n) {   /* F3 */
            if ((rc = mark(f, t))) {
                objstore_abort(t);
                return rc;
            }
            if (first) {
                /* Reachable candidates hide no garbage cycle: drop them. */
                uint64_t oid;
                for (size_t i = 0; u64map_next(&s->cand.committed, &i, &oid, NULL);)
                    if (gc_is_marked(&f->marks, oid))
                        oidset_remove(&s->cand, oid);
            }
            first = false;
            if (f->stop) {   /* asked during the mark: nothing was changed */
                objstore_abort(t);
                st->interrupted = 1;
                return OBJSTORE_OK;
            }
        }
        /* The next batch: garbage still live, in address order. */
        struct u64vec b = {0};
        while (f->pos < f->garbage.n && b.n < batch) {
            uint64_t x = f->garbage.v[f->pos++];
            if (heap_is_live(s->heap, x) && !u64vec_push(&b, x)) {
                rc = store_err(OBJSTORE_ENOMEM, "out of memory");
                break;
            }
        }
        uint64_t freed_before = s->st_freed;
        bool all = f->pos >= f->garbage.n;
        if (!rc && b.n)
            rc = free_batch(f, b.v, b.n, all);
        free(b.v);
        if (rc) {
            objstore_abort(t);
            return rc;
        }
        bool nothing = !b.n && !oidset_count(&s->zct);
        if (nothing) {
            objstore_abort(t);   /* nothing changed: no commit needed */
            break;
        }
        if ((rc = objstore_commit(t)))
            return rc;
        st->commits++;
        expect = s->epoch;
        uint64_t drained = s->st_freed - freed_before;
        st->freed += drained;
        if (!b.n && !drained)
            break;   /* what the zero-count table keeps is pinned */
        if (f->o.progress &&
            f->o.progress(f->o.progress_arg, "free", st->freed, st->garbage))
            f->stop = true;
        if (f->stop) {
            st->interrupted = 1;
            break;
        }
    }
    return OBJSTORE_OK;
}

int objstore_full_collect(objstore *s, const objstore_gc_options *opts,
                          objstore_gc_stats *stats)
{
    objstore_gc_stats local;
    objstore_gc_stats *st = stats ? stats : &local;
    memset(st, 0, sizeof *st);
    struct fgc f = {.s = s, .st = st};
    if (opts)
        f.o = *opts;
    if (!s)
        return store_err(OBJSTORE_EINVAL, "full collection: no store");
    st->file_bytes_before = heap_file_size(s->heap);
    st->generation = s->generation;
    int rc;
    if (f.o.dry_run) {   /* F5 */
        objstore_txn *t;
        if ((rc = objstore_begin(s, OBJSTORE_TXN_RDONLY, &t)))
            return rc;
        rc = mark(&f, t);
        objstore_commit(t);
        st->file_bytes_after = rc ? 0 : st->file_bytes_before;
        st->compacted_bytes = rc ? 0 : estimate_file(&f);
        st->interrupted = f.stop;
    } else {
        if (s->ro)
            return store_err(OBJSTORE_EREADONLY, "%s: full collection: store opened "
                             "read-only", s->dir);
        uint64_t live0 = 0, bytes0 = 0;
        objstore_stats ss;
        if ((rc = objstore_get_stats(s, &ss)))
            return rc;
        uint64_t t0 = store_gc_full_begin(s, ss.live_objects);   /* collect.c */
        rc = run(&f);
        if (!rc && !st->interrupted)
            rc = objstore_shrink(s);   /* give back the empty tail arenas */
        if (!rc && objstore_get_stats(s, &ss) == OBJSTORE_OK) {
            live0 = st->objects_before;
            bytes0 = st->bytes_before;
            /* The drain's frees are counted by object; bytes from the heap. */
            st->freed = live0 >= ss.live_objects ? live0 - ss.live_objects : st->freed;
            st->freed_bytes = bytes0 >= ss.live_bytes ? bytes0 - ss.live_bytes : 0;
        }
        st->file_bytes_after = heap_file_size(s->heap);
        store_gc_full_end(s, t0, st->objects_before, rc ? 0 : st->freed);
    }
    gc_marks_free(&f.marks);
    free(f.garbage.v);
    return rc;
}
