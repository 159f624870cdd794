/*
 * verify.c -- checks every invariant of a store's committed state.
 *
 *   V1 the heap's allocator metadata is consistent (heap_rebuild's checks);
 *   V2 every object's slots fit its block; every non-null slot and every
 *      root lands on a live object's start;
 *   V3 every count equals roots + slots pointing at the object (R1);
 *   V4 an object at count 0 is in the zero-count table; every zct entry is
 *      live at count 0; every candidate is live; every type id is known;
 *   V5 objects unreachable from the roots are counted and reported (cycles,
 *      or objects the zct still holds), not treated as errors.
 *
 * The walk uses the sorted array of live offsets (the heap iterates in
 * address order) as its index, and an explicit stack: memory is a few words
 * per object and no recursion.
 */
#include "store_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct vctx {
    objstore *s;
    objstore_verify_report *r;
    uint64_t *off;      /* live objects, ascending */
    uint64_t *indeg;
    uint8_t *mark;
    size_t n;
};

static void problem(struct vctx *v, enum objstore_problem kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void problem(struct vctx *v, enum objstore_problem kind, const char *fmt, ...)
{
    v->r->problems[kind]++;
    if (v->r->total_problems++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(v->r->first_problem, sizeof v->r->first_problem, fmt, ap);
        va_end(ap);
    }
}

static size_t find(const struct vctx *v, uint64_t off)
{
    size_t lo = 0, hi = v->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v->off[mid] < off)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < v->n && v->off[lo] == off ? lo : SIZE_MAX;
}

static bool slots_ok(struct vctx *v, size_t i)
{
    return heap_check_ref(v->s->heap, v->off[i]) == HEAP_OK;
}

static int collect(struct vctx *v)
{
    heap_t *h = v->s->heap;
    size_t cap = 1024;
    v->off = malloc(cap * sizeof *v->off);
    if (!v->off)
        return store_err(OBJSTORE_ENOMEM, "verify: out of memory");
    uint64_t cur = 0, off;
    while (heap_next_live(h, &cur, &off)) {
        if (v->n == cap) {
            cap *= 2;
            uint64_t *p = realloc(v->off, cap * sizeof *p);
            if (!p)
                return store_err(OBJSTORE_ENOMEM, "verify: out of memory");
            v->off = p;
        }
        v->off[v->n++] = off;
        v->r->bytes += heap_block_size(h, off);
    }
    v->r->objects = v->n;
    v->indeg = calloc(v->n + 1, sizeof *v->indeg);
    v->mark = calloc(v->n + 1, 1);
    if (!v->indeg || !v->mark)
        return store_err(OBJSTORE_ENOMEM, "verify: out of memory");
    return OBJSTORE_OK;
}

static void count_slots(struct vctx *v)
{
    heap_t *h = v->s->heap;
    for (size_t i = 0; i < v->n; i++) {
        const heap_obj *o = heap_obj_at(h, v->off[i]);
        if (!slots_ok(v, i)) {
            problem(v, OBJSTORE_P_BADSLOTS, "object %llu: %u slots do not fit its block",
                    (unsigned long long)v->off[i], o->nrefs);
            continue;
        }
        if (o->type > v->s->ntypes_committed)
            problem(v, OBJSTORE_P_BADTYPE, "object %llu: type id %u is not registered",
                    (unsigned long long)v->off[i], o->type);
        const uint64_t *slot = heap_obj_slots(h, v->off[i]);
        for (uint32_t j = 0; j < o->nrefs; j++) {
            if (!slot[j])
                continue;
            v->r->references++;
            size_t t = find(v, slot[j]);
            if (t == SIZE_MAX)
                problem(v, OBJSTORE_P_DANGLING, "object %llu slot %u points at %llu, no live "
                        "object", (unsigned long long)v->off[i], j,
                        (unsigned long long)slot[j]);
            else
                v->indeg[t]++;
        }
    }
}

/* Marks from root index i with an explicit stack. */
static int mark_from(struct vctx *v, size_t root, uint64_t **stack, size_t *cap)
{
    heap_t *h = v->s->heap;
    size_t sp = 0;
    if (v->mark[root])
        return OBJSTORE_OK;
    v->mark[root] = 1;
    (*stack)[sp++] = root;
    while (sp) {
        size_t i = (size_t)(*stack)[--sp];
        if (!slots_ok(v, i))
            continue;
        const heap_obj *o = heap_obj_at(h, v->off[i]);
        const uint64_t *slot = heap_obj_slots(h, v->off[i]);
        for (uint32_t j = 0; j < o->nrefs; j++) {
            size_t t = slot[j] ? find(v, slot[j]) : SIZE_MAX;
            if (t == SIZE_MAX || v->mark[t])
                continue;
            v->mark[t] = 1;
            if (sp == *cap) {
                size_t nc = *cap * 2;
                uint64_t *p = realloc(*stack, nc * sizeof *p);
                if (!p)
                    return store_err(OBJSTORE_ENOMEM, "verify: out of memory");
                *stack = p;
                *cap = nc;
            }
            (*stack)[sp++] = t;
        }
    }
    return OBJSTORE_OK;
}

static int walk_roots(struct vctx *v, MDB_txn *txn)
{
    objstore *s = v->s;
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, s->db_roots, &c);
    if (rc)
        return store_lmdb_err(rc, "verify: roots");
    size_t cap = 1024;
    uint64_t *stack = malloc(cap * sizeof *stack);
    int err = stack ? OBJSTORE_OK : store_err(OBJSTORE_ENOMEM, "verify: out of memory");
    MDB_val k, d;
    for (rc = mdb_cursor_get(c, &k, &d, MDB_FIRST); rc == 0 && !err;
         rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
        v->r->roots++;
        uint64_t oid = 0;
        if (d.mv_size == 8)
            memcpy(&oid, d.mv_data, 8);
        size_t t = oid ? find(v, oid) : SIZE_MAX;
        if (t == SIZE_MAX) {
            problem(v, OBJSTORE_P_BADROOT, "root '%.*s' names %llu, no live object",
                    (int)(k.mv_size > 200 ? 200 : k.mv_size), (const char *)k.mv_data,
                    (unsigned long long)oid);
            continue;
        }
        v->indeg[t]++;
        err = mark_from(v, t, &stack, &cap);
    }
    free(stack);
    mdb_cursor_close(c);
    return err;
}

static void check_counts(struct vctx *v)
{
    heap_t *h = v->s->heap;
    for (size_t i = 0; i < v->n; i++) {
        uint64_t rc = heap_obj_refcount(heap_obj_at(h, v->off[i]));
        if (rc != v->indeg[i])
            problem(v, OBJSTORE_P_COUNT, "object %llu: count %llu, but %llu references "
                    "point at it", (unsigned long long)v->off[i], (unsigned long long)rc,
                    (unsigned long long)v->indeg[i]);
        else if (rc == 0 && !u64map_find(&v->s->zct.committed, v->off[i]))
            problem(v, OBJSTORE_P_LEAK, "object %llu: count 0 and not in the zero-count "
                    "table (leaked)", (unsigned long long)v->off[i]);
        if (v->mark[i]) {
            v->r->reachable++;
        } else {
            v->r->unreachable++;
            v->r->unreachable_bytes += heap_block_size(h, v->off[i]);
        }
    }
}

static void check_sets(struct vctx *v, MDB_txn *txn)
{
    objstore *s = v->s;
    MDB_dbi dbs[2] = {s->db_zct, s->db_cand};
    for (int d = 0; d < 2; d++) {
        MDB_cursor *c;
        if (mdb_cursor_open(txn, dbs[d], &c))
            continue;
        MDB_val k, val;
        for (int rc = mdb_cursor_get(c, &k, &val, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(c, &k, &val, MDB_NEXT)) {
            uint64_t oid = k.mv_size == 8 ? store_get_be64(k.mv_data) : 0;
            size_t t = oid ? find(v, oid) : SIZE_MAX;
            if (d == 0 && (t == SIZE_MAX || heap_obj_refcount(heap_obj_at(s->heap, oid))))
                problem(v, OBJSTORE_P_BADZCT, "zero-count entry %llu is %s",
                        (unsigned long long)oid, t == SIZE_MAX ? "not a live object"
                                                               : "at a count above 0");
            else if (d == 1 && t == SIZE_MAX)
                problem(v, OBJSTORE_P_BADCAND, "cycle candidate %llu is not a live object",
                        (unsigned long long)oid);
        }
        mdb_cursor_close(c);
    }
}

int objstore_verify(objstore *s, objstore_verify_report *r)
{
    memset(r, 0, sizeof *r);
    if (store_is_writer(s) || store_is_reader(s))
        return store_err(OBJSTORE_ETXN, "%s: verify inside a transaction", s->dir);
    if (s->failed)
        return store_err(OBJSTORE_EFAILED, "%s: the store handle failed earlier", s->dir);
    /* Exclusive: heap_rebuild re-derives the allocator state.  The drain:
     * LMDB must hold every sealed commit the heap shows (group.c G2). */
    store_write_lock(s);
    store_group_drain(s);
    struct vctx v = {.s = s, .r = r};
    int rc = OBJSTORE_OK;
    if (s->failed) {
        store_write_unlock(s);
        return store_err(OBJSTORE_EFAILED, "%s: a commit failed; reopen the store", s->dir);
    }
    heap_status hs = heap_rebuild_full(s->heap);
    if (hs) {
        problem(&v, OBJSTORE_P_HEAP, "%s", heap_errmsg(s->heap));
        s->failed = true;   /* the allocator cannot be trusted any more */
        goto out;
    }
    MDB_txn *txn;
    int mrc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (mrc) {
        rc = store_lmdb_err(mrc, "verify");
        goto out;
    }
    if (!(rc = collect(&v))) {
        count_slots(&v);
        if (!(rc = walk_roots(&v, txn))) {
            check_counts(&v);
            check_sets(&v, txn);
        }
    }
    mdb_txn_abort(txn);
out:
    free(v.off);
    free(v.indeg);
    free(v.mark);
    store_write_unlock(s);
    return rc;
}
