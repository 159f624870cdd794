/*
 * weak.c -- weak references (Python's weakref): a reference that does not
 * count.  A weak reference is an object of the reserved type
 * "objstore.weakref" with no slots and an 8-byte payload, its target's oid.
 * The LMDB database `weak` indexes them: key (target u64 BE, weakref u64
 * BE), empty value.  When a commit frees a target, it writes 0 into the
 * payload of each weak reference to it and deletes their index entries, in
 * the same commit, so both are atomic with the free (docs/FORMAT.md).
 *
 * Rules:
 *   W1 the index holds exactly the pairs (target, weakref) of live weak
 *      references with a non-zero payload; `weak_cnt` (RAM, rebuilt at
 *      open) counts them per target, so a free asks "any weak references?"
 *      with one lookup and touches LMDB only when there are.
 *   W2 clearing a target costs its number of weak references (a range of
 *      the index, plus this transaction's additions), never a heap scan.
 *   W3 a transaction's changes are deltas (weak_add: new pairs, weak_add_t:
 *      the first new one per target, weak_del: committed pairs removed, an
 *      undo log of counts): commit writes them in its single LMDB
 *      transaction, abort forgets them.
 *   W4 a freed block is reused only after its commit, so a cleared weak
 *      reference never names an object that reused its target's oid, also
 *      after a crash: the 0 and the free are in the same commit.
 *   W5 a store made before weak references has no `weak` database: it is
 *      created by the first commit that needs it.
 *   W6 damage never blocks a free: an index entry that does not match a
 *      live weak reference naming its target is dropped when the target
 *      goes; a payload that names no live object reads as ECORRUPT.
 *   W7 every path that frees calls in: the drain and the collectors
 *      (store_weak_freeing), a full collection the same way, a repair that
 *      drops an object beyond use (store_weak_target_gone: its header is
 *      not read); a compaction rewrites each copied weak reference to its
 *      target's new oid, or 0 when the target was not copied, and rebuilds
 *      the index in its switch transaction.
 */
#include "store_internal.h"

#include <errno.h>

#include <stdlib.h>
#include <string.h>

#define WEAK_TYPE "objstore.weakref"
#define WEAK_MORE (UINT64_C(1) << 63)   /* weak_add_t: more than one */

static void weak_key(uint8_t key[16], uint64_t target, uint64_t wref)
{
    store_be64(key, target);
    store_be64(key + 8, wref);
}

/* Counts' undo log: (target, +1 / -1) per change in this transaction. */
static int count_add(objstore *s, uint64_t target, int delta)
{
    if (delta < 0 && !u64map_find(&s->weak_cnt, target))
        return OBJSTORE_OK;   /* a damaged payload named it: nothing counted */
    uint64_t *c = u64map_upsert(&s->weak_cnt, target, NULL);
    if (!c || !u64vec_push(&s->weak_undo, target << 1 | (delta < 0)))
        return store_err(OBJSTORE_ENOMEM, "out of memory");
    *c += (uint64_t)(int64_t)delta;
    if (*c == 0)
        u64map_del(&s->weak_cnt, target);
    return OBJSTORE_OK;
}

/* The id of WEAK_TYPE, looked up at open and set when registered. */
static void find_weak_type(objstore *s)
{
    kv_entry *e = kvmap_get(&s->type_ids, WEAK_TYPE, strlen(WEAK_TYPE));
    if (e && !e->deleted && e->vlen == 4)
        memcpy(&s->weak_type, e->val, 4);
}

int store_weak_dbi(objstore *s, MDB_txn *txn, bool create)
{
    int rc = mdb_dbi_open(txn, "weak", create ? MDB_CREATE : 0, &s->db_weak);
    if (rc == MDB_NOTFOUND) {
        s->weak_db = false;   /* W5 */
        return OBJSTORE_OK;
    }
    if (rc)
        return store_lmdb_err(rc, "meta/: open database 'weak'");
    s->weak_db = true;
    return OBJSTORE_OK;
}

int store_weak_load(objstore *s, MDB_txn *txn)
{
    find_weak_type(s);
    if (!s->weak_db)
        return OBJSTORE_OK;
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, s->db_weak, &c);
    if (rc)
        return store_lmdb_err(rc, "meta/: weak");
    MDB_val k, v;
    while ((rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) == 0) {
        if (k.mv_size != 16) {
            mdb_cursor_close(c);
            return store_err(OBJSTORE_EMETA, "%s: meta/ weak: a key of %zu bytes, expected "
                             "16", s->dir, k.mv_size);
        }
        uint64_t *n = u64map_upsert(&s->weak_cnt, store_get_be64(k.mv_data), NULL);
        if (!n) {
            mdb_cursor_close(c);
            return store_err(OBJSTORE_ENOMEM, "out of memory");
        }
        ++*n;
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? OBJSTORE_OK : store_lmdb_err(rc, "meta/: weak");
}

/* Forgets the pair (target, wref): this transaction's or a committed one. */
static int unpair(objstore *s, uint64_t target, uint64_t wref)
{
    if (!u64map_del(&s->weak_add, wref)) {
        uint64_t *p = u64map_upsert(&s->weak_del, wref, NULL);
        if (!p)
            return store_err(OBJSTORE_ENOMEM, "out of memory");
        *p = target;
    }
    return count_add(s, target, -1);
}

/* Sets a weak reference's payload (marks it dirty). */
static void set_target(objstore *s, uint64_t wref, uint64_t target)
{
    uint8_t *p = heap_obj_payload(s->heap, wref);
    heap_mark_dirty(s->heap, (uint64_t)(p - heap_base(s->heap)), 8);
    memcpy(p, &target, 8);
}

/* W2: clears every weak reference to target. */
static int clear_target(objstore *s, uint64_t target)
{
    struct u64vec w = {0};
    uint64_t wref, t, *first = u64map_find(&s->weak_add_t, target), *tp;
    int rc = OBJSTORE_OK;
    if (first && (*first & WEAK_MORE)) {   /* several new ones: look at all */
        for (size_t i = 0; !rc && u64map_next(&s->weak_add, &i, &wref, &t);)
            if (t == target && !u64vec_push(&w, wref))
                rc = store_err(OBJSTORE_ENOMEM, "out of memory");
    } else if (first && (tp = u64map_find(&s->weak_add, *first)) && *tp == target &&
               !u64vec_push(&w, *first)) {
        rc = store_err(OBJSTORE_ENOMEM, "out of memory");
    }
    if (!rc && s->weak_db) {
        MDB_txn *txn;
        MDB_cursor *c;
        store_group_drain(s);   /* G2: the index holds every sealed pair */
        int mrc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
        if (!mrc && (mrc = mdb_cursor_open(txn, s->db_weak, &c)))
            mdb_txn_abort(txn);
        if (mrc)
            rc = store_lmdb_err(mrc, "meta/: weak");
        else {
            uint8_t key[16];
            weak_key(key, target, 0);
            MDB_val k = {16, key}, v;
            for (mrc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
                 !mrc && !rc && k.mv_size == 16 && store_get_be64(k.mv_data) == target;
                 mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
                wref = store_get_be64((const uint8_t *)k.mv_data + 8);
                if (!u64map_find(&s->weak_del, wref) && !u64vec_push(&w, wref))
                    rc = store_err(OBJSTORE_ENOMEM, "out of memory");
            }
            mdb_cursor_close(c);
            mdb_txn_abort(txn);
        }
    }
    for (size_t i = 0; i < w.n && !rc; i++) {
        wref = w.v[i];
        uint64_t cur = 0;
        /* W6: an entry whose object is no live weak reference naming target
         * (a damaged or hand-written payload) is dropped, the heap left. */
        if (heap_check_ref(s->heap, wref) == HEAP_OK && s->weak_type &&
            heap_obj_at(s->heap, wref)->type == s->weak_type &&
            heap_obj_payload_size(s->heap, wref) >= 8)
            memcpy(&cur, heap_obj_payload(s->heap, wref), 8);
        if (cur == target)
            set_target(s, wref, 0);
        rc = unpair(s, target, wref);
    }
    free(w.v);
    return rc;
}

int store_weak_target_gone(objstore *s, uint64_t oid)
{
    return s->weak_cnt.n && u64map_find(&s->weak_cnt, oid) ? clear_target(s, oid)
                                                          : OBJSTORE_OK;
}

int store_weak_freeing(objstore *s, uint64_t oid)
{
    int rc = store_weak_target_gone(s, oid);
    if (rc)
        return rc;
    uint64_t wt = s->weak_type;
    if (!wt || heap_obj_at(s->heap, oid)->type != wt)
        return OBJSTORE_OK;
    uint64_t target;   /* a weak reference goes: its pair too */
    if (heap_obj_payload_size(s->heap, oid) < 8)
        return OBJSTORE_OK;
    memcpy(&target, heap_obj_payload(s->heap, oid), 8);
    return target ? unpair(s, target, oid) : OBJSTORE_OK;
}

int store_weak_put(objstore *s, store_wbatch *b)
{
    if (s->weak_rebuild)   /* a repair's: the whole index anew */
        return b->txn ? store_weak_switch(s, b->txn) : EINVAL;
    if (!s->weak_add.n && !s->weak_del.n)
        return 0;
    int rc;
    if (!s->weak_db) {
        if (!b->txn)
            return EINVAL;   /* a sealed commit cannot create it (group.c G1) */
        if ((rc = mdb_dbi_open(b->txn, "weak", MDB_CREATE, &s->db_weak)))
            return rc;   /* W5; weak_db is set once this commits */
    }
    uint8_t key[16];
    uint64_t wref, target;
    for (size_t i = 0; u64map_next(&s->weak_del, &i, &wref, &target);) {
        weak_key(key, target, wref);
        if ((rc = store_wb_del(b, s->db_weak, key, 16)))
            return rc;
    }
    for (size_t i = 0; u64map_next(&s->weak_add, &i, &wref, &target);) {
        weak_key(key, target, wref);
        if ((rc = store_wb_put(b, s->db_weak, key, 16, "", 0)))
            return rc;
    }
    return 0;
}

void store_weak_committed(objstore *s)
{
    if (s->weak_rebuild) {
        s->weak_rebuild = false;
        store_weak_switched(s);   /* counts from the new index */
    }
    if (s->weak_add.n || s->weak_del.n)
        s->weak_db = true;
    u64map_clear(&s->weak_add);
    u64map_clear(&s->weak_add_t);
    u64map_clear(&s->weak_del);
    s->weak_undo.n = 0;
}

void store_weak_rollback(objstore *s)
{
    s->weak_rebuild = false;
    s->weak_pairs.n = 0;
    for (size_t i = s->weak_undo.n; i-- > 0;) {
        uint64_t target = s->weak_undo.v[i] >> 1;
        uint64_t *c = u64map_upsert(&s->weak_cnt, target, NULL);
        if (!c)
            continue;   /* out of memory: a count too low only skips a clear check */
        *c += (s->weak_undo.v[i] & 1) ? 1 : (uint64_t)-1;
        if (*c == 0)
            u64map_del(&s->weak_cnt, target);
    }
    s->weak_undo.n = 0;
    u64map_clear(&s->weak_add);
    u64map_clear(&s->weak_add_t);
    u64map_clear(&s->weak_del);
    if (s->weak_type > s->ntypes)
        s->weak_type = 0;   /* registered by the aborted transaction */
}

/* ---- compaction (W7) ---- */

int store_weak_compact(objstore *s, heap_t *dst, const u64map *map)
{
    s->weak_pairs.n = 0;
    if (!s->weak_type)
        return OBJSTORE_OK;
    uint64_t old, nw;
    for (size_t i = 0; u64map_next(map, &i, &old, &nw);) {
        if (heap_obj_at(dst, nw)->type != s->weak_type || heap_obj_payload_size(dst, nw) < 8)
            continue;
        uint8_t *p = heap_obj_payload(dst, nw);
        uint64_t target, moved = 0;
        memcpy(&target, p, 8);
        const uint64_t *m = target ? u64map_find(map, target) : NULL;
        if (m)
            moved = *m;   /* not copied: unreachable, so it goes: 0 */
        if (moved != target) {
            heap_mark_dirty(dst, (uint64_t)(p - heap_base(dst)), 8);
            memcpy(p, &moved, 8);
        }
        if (moved && (!u64vec_push(&s->weak_pairs, moved) || !u64vec_push(&s->weak_pairs, nw)))
            return store_err(OBJSTORE_ENOMEM, "compact: out of memory");
    }
    return OBJSTORE_OK;
}

int store_weak_switch(objstore *s, MDB_txn *w)
{
    int rc;
    if (s->weak_db && (rc = mdb_drop(w, s->db_weak, 0)))
        return rc;
    if (!s->weak_pairs.n)
        return 0;
    if (!s->weak_db && (rc = mdb_dbi_open(w, "weak", MDB_CREATE, &s->db_weak)))
        return rc;
    uint8_t key[16];
    MDB_val k = {16, key}, v = {0, ""};
    for (size_t i = 0; i + 1 < s->weak_pairs.n; i += 2) {
        weak_key(key, s->weak_pairs.v[i], s->weak_pairs.v[i + 1]);
        if ((rc = mdb_put(w, s->db_weak, &k, &v, 0)))
            return rc;
    }
    return 0;
}

void store_weak_switched(objstore *s)
{
    u64map_clear(&s->weak_cnt);
    u64map_clear(&s->weak_add);
    u64map_clear(&s->weak_add_t);
    u64map_clear(&s->weak_del);
    s->weak_undo.n = 0;
    if (s->weak_pairs.n)
        s->weak_db = true;
    for (size_t i = 0; i + 1 < s->weak_pairs.n; i += 2) {
        uint64_t *c = u64map_upsert(&s->weak_cnt, s->weak_pairs.v[i], NULL);
        if (c)
            ++*c;   /* out of memory: a missing count only skips clearing (W6) */
    }
    s->weak_pairs.n = 0;
}

void store_weak_free(objstore *s)
{
    free(s->weak_pairs.v);
    u64map_free(&s->weak_cnt);
    u64map_free(&s->weak_add);
    u64map_free(&s->weak_add_t);
    u64map_free(&s->weak_del);
    free(s->weak_undo.v);
}

/* ---- the calls ---- */

int objstore_weakref_new(objstore_txn *t, objstore_oid target, objstore_oid *wref)
{
    *wref = 0;
    int rc = store_check_txn(t, true);
    if (rc)
        return rc;
    objstore *s = t->s;
    if (!target || heap_check_ref(s->heap, target) != HEAP_OK)
        return store_err(OBJSTORE_EBADOID, "%s: weakref_new: oid %llu is not a live object",
                         s->dir, (unsigned long long)target);
    uint32_t type;
    if ((rc = objstore_type_register(t, WEAK_TYPE, &type)))
        return rc;
    s->weak_type = type;
    objstore_oid w;
    if ((rc = objstore_new(t, type, 0, 8, &w)))
        return rc;
    set_target(s, w, target);
    bool fresh;
    uint64_t *p = u64map_upsert(&s->weak_add, w, NULL);
    uint64_t *f = p ? u64map_upsert(&s->weak_add_t, target, &fresh) : NULL;
    if (!f)
        return store_err(OBJSTORE_ENOMEM, "out of memory");
    *p = target;
    *f = fresh ? w : *f | WEAK_MORE;
    if ((rc = count_add(s, target, +1))) {
        u64map_del(&s->weak_add, w);
        return rc;
    }
    *wref = w;
    return OBJSTORE_OK;
}

int objstore_weakref_get(objstore_txn *t, objstore_oid wref, objstore_oid *target)
{
    *target = 0;
    int rc = store_check_txn(t, false);
    if (rc)
        return rc;
    objstore *s = t->s;
    uint64_t wt = s->weak_type;
    if (!wref || heap_check_ref(s->heap, wref) != HEAP_OK || !wt ||
        heap_obj_at(s->heap, wref)->type != wt || heap_obj_payload_size(s->heap, wref) < 8)
        return store_err(OBJSTORE_EBADOID, "%s: oid %llu is not a weak reference", s->dir,
                         (unsigned long long)wref);
    uint64_t v;
    memcpy(&v, heap_obj_payload(s->heap, wref), 8);
    if (v && heap_check_ref(s->heap, v) != HEAP_OK)
        return store_err(OBJSTORE_ECORRUPT, "%s: weak reference %llu names %llu, not a live "
                         "object", s->dir, (unsigned long long)wref, (unsigned long long)v);
    *target = v;
    return OBJSTORE_OK;
}
