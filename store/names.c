/*
 * names.c -- roots, types and user metadata: the named things LMDB holds.
 *
 * Reads look at the transaction's pending changes first, then at its LMDB
 * read snapshot of the committed state.  Writes go to the pending maps
 * (roots, metadata) or the RAM type table; commit writes them (txn.c).
 *
 * Rules:
 *   N1 a root counts as a reference: setting one increments the new target
 *      before the old one is decremented (so re-setting the same object never
 *      passes through 0).
 *   N2 a root's stored oid is checked before use: a damaged entry is an
 *      error naming the root, never a wild access.
 */
#include "store_internal.h"

#include <stdlib.h>
#include <string.h>

static int check_name(objstore *s, const char *name, size_t *len, size_t max,
                      const char *what)
{
    *len = name ? strnlen(name, max + 1) : 0;
    if (*len == 0 || *len > max)
        return store_err(OBJSTORE_EINVAL, "%s: %s name must have 1..%zu bytes", s->dir,
                         what, max);
    return OBJSTORE_OK;
}

/* ---- roots ---- */

int store_root_lookup(objstore_txn *t, const char *name, size_t len, uint64_t *oid)
{
    objstore *s = t->s;
    *oid = 0;
    if (t->write) {
        kv_entry *e = kvmap_get(&s->roots_pending, name, len);
        if (e) {
            if (e->deleted)
                return store_err(OBJSTORE_ENOTFOUND, "%s: no root '%s'", s->dir, name);
            memcpy(oid, e->val, 8);
            return OBJSTORE_OK;
        }
    }
    MDB_val k = {len, (void *)name}, v;
    int rc;
    MDB_txn *rt = NULL;
    if (t->write) {
        /* G7: the roots sealed for group commit, without waiting for them */
        bool decided;
        if ((rc = store_group_root(t, name, len, &decided, oid, &rt)))
            return rc;
        if (decided && !*oid)
            return store_err(OBJSTORE_ENOTFOUND, "%s: no root '%s'", s->dir, name);
        if (decided)
            return OBJSTORE_OK;
    } else if (!(rt = store_rtxn(t, &rc))) {
        return rc;
    }
    rc = mdb_get(rt, s->db_roots, &k, &v);
    if (rc == MDB_NOTFOUND)
        return store_err(OBJSTORE_ENOTFOUND, "%s: no root '%s'", s->dir, name);
    if (rc)
        return store_lmdb_err(rc, "root lookup");
    if (v.mv_size != 8)
        return store_err(OBJSTORE_ECORRUPT, "%s: root '%s' holds %zu bytes, not an oid",
                         s->dir, name, v.mv_size);
    memcpy(oid, v.mv_data, 8);
    if (heap_check_ref(s->heap, *oid) != HEAP_OK || !*oid) {
        uint64_t bad = *oid;
        *oid = 0;
        return store_err(OBJSTORE_ECORRUPT, "%s: root '%s' names %llu, not a live object",
                         s->dir, name, (unsigned long long)bad);
    }
    return OBJSTORE_OK;
}

int objstore_root_get(objstore_txn *t, const char *name, objstore_oid *oid)
{
    *oid = 0;
    size_t len;
    int rc = store_check_txn(t, false);
    if (rc || (rc = check_name(t->s, name, &len, STORE_NAME_MAX, "root")))
        return rc;
    return store_root_lookup(t, name, len, oid);
}

int objstore_root_set(objstore_txn *t, const char *name, objstore_oid oid)
{
    size_t len;
    int rc = store_check_txn(t, true);
    objstore *s = t ? t->s : NULL;
    if (rc || (rc = check_name(s, name, &len, STORE_NAME_MAX, "root")))
        return rc;
    if (!oid)
        return store_err(OBJSTORE_EINVAL, "%s: root '%s': null oid (use objstore_root_del)",
                         s->dir, name);
    if (heap_check_ref(s->heap, oid) != HEAP_OK)
        return store_err(OBJSTORE_EBADOID, "%s: root '%s': oid %llu is not a live object",
                         s->dir, name, (unsigned long long)oid);
    uint64_t old = 0;
    rc = store_root_lookup(t, name, len, &old);
    if (rc && rc != OBJSTORE_ENOTFOUND)
        return rc;
    if (old == oid)
        return OBJSTORE_OK;
    if ((rc = store_incref(s, oid)))
        return rc;
    if (kvmap_put(&s->roots_pending, name, len, &oid, 8, false)) {
        store_decref(s, oid);
        return store_err(OBJSTORE_ENOMEM, "out of memory");
    }
    return old ? store_decref(s, old) : OBJSTORE_OK;
}

int objstore_root_del(objstore_txn *t, const char *name)
{
    size_t len;
    int rc = store_check_txn(t, true);
    objstore *s = t ? t->s : NULL;
    if (rc || (rc = check_name(s, name, &len, STORE_NAME_MAX, "root")))
        return rc;
    uint64_t old;
    rc = store_root_lookup(t, name, len, &old);
    /* A damaged entry (not an oid, or naming no live object) holds no
     * count: deleting it is how a program gets rid of it. */
    if (rc && rc != OBJSTORE_ECORRUPT)
        return rc;
    if (kvmap_put(&s->roots_pending, name, len, NULL, 0, true))
        return store_err(OBJSTORE_ENOMEM, "out of memory");
    return rc == OBJSTORE_ECORRUPT ? OBJSTORE_OK : store_decref(s, old);
}

int objstore_root_iter(objstore_txn *t, objstore_root_fn fn, void *arg)
{
    int rc = store_check_txn(t, false);
    if (rc)
        return rc;
    objstore *s = t->s;
    kv_entry **pend = NULL;
    size_t np = 0, ip = 0;
    if (t->write && s->roots_pending.n) {
        pend = kvmap_sorted(&s->roots_pending);
        if (!pend)
            return store_err(OBJSTORE_ENOMEM, "out of memory");
        np = s->roots_pending.n;
    }
    MDB_cursor *c;
    MDB_txn *rt = store_rtxn(t, &rc);
    if (!rt)
        return rc;
    if ((rc = mdb_cursor_open(rt, s->db_roots, &c)))
        return store_lmdb_err(rc, "root iteration");
    MDB_val k, v;
    int mrc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    char name[STORE_NAME_MAX + 1];
    int ret = 0;
    /* Merge the committed roots with the pending ones (pending wins). */
    while (!ret && (mrc == 0 || ip < np)) {
        int cmp = mrc != 0 ? 1 : ip >= np ? -1
                  : kvmap_keycmp(k.mv_data, k.mv_size, pend[ip]->key, pend[ip]->klen);
        uint64_t oid;
        size_t len;
        bool deleted = false;
        if (cmp < 0) {
            if (k.mv_size > STORE_NAME_MAX || v.mv_size != 8) {
                ret = store_err(OBJSTORE_ECORRUPT, "%s: malformed root entry", s->dir);
                break;
            }
            len = k.mv_size;
            memcpy(name, k.mv_data, len);
            memcpy(&oid, v.mv_data, 8);
            mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
        } else {
            len = pend[ip]->klen;
            memcpy(name, pend[ip]->key, len);
            deleted = pend[ip]->deleted;
            if (!deleted)
                memcpy(&oid, pend[ip]->val, 8);
            ip++;
            if (cmp == 0)
                mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
        }
        name[len] = 0;
        if (!deleted)
            ret = fn(arg, name, oid);
    }
    mdb_cursor_close(c);
    return ret;
}

/* ---- types ---- */

int store_type_add(objstore *s, const char *name, size_t len, uint32_t id);

static int type_find(objstore *s, const char *name, size_t len, uint32_t *id)
{
    kv_entry *e = kvmap_get(&s->type_ids, name, len);
    if (!e || e->deleted)
        return store_err(OBJSTORE_ENOTFOUND, "%s: no type '%s'", s->dir, name);
    memcpy(id, e->val, 4);
    return OBJSTORE_OK;
}

int objstore_type_register(objstore_txn *t, const char *name, uint32_t *id)
{
    size_t len;
    *id = 0;
    int rc = store_check_txn(t, true);
    if (rc || (rc = check_name(t->s, name, &len, STORE_TYPE_NAME_MAX, "type")))
        return rc;
    if (type_find(t->s, name, len, id) == OBJSTORE_OK)
        return OBJSTORE_OK;
    if ((rc = store_type_add(t->s, name, len, t->s->ntypes + 1)))
        return rc;
    *id = t->s->ntypes;
    return OBJSTORE_OK;
}

int objstore_type_id(objstore_txn *t, const char *name, uint32_t *id)
{
    size_t len;
    *id = 0;
    int rc = store_check_txn(t, false);
    if (rc || (rc = check_name(t->s, name, &len, STORE_TYPE_NAME_MAX, "type")))
        return rc;
    return type_find(t->s, name, len, id);
}

int objstore_type_name(objstore_txn *t, uint32_t id, const char **name)
{
    *name = NULL;
    int rc = store_check_txn(t, false);
    if (rc)
        return rc;
    if (id == 0 || id > t->s->ntypes)
        return store_err(OBJSTORE_ENOTFOUND, "%s: no type with id %u", t->s->dir, id);
    *name = t->s->type_names[id - 1];
    return OBJSTORE_OK;
}

/* ---- user metadata ---- */

static int check_key(objstore *s, size_t klen)
{
    if (klen == 0 || klen > STORE_NAME_MAX)
        return store_err(OBJSTORE_EINVAL, "%s: metadata key must have 1..%d bytes", s->dir,
                         STORE_NAME_MAX);
    return OBJSTORE_OK;
}

int objstore_meta_set(objstore_txn *t, const void *key, size_t klen, const void *val,
                      size_t vlen)
{
    int rc = store_check_txn(t, true);
    if (rc || (rc = check_key(t->s, klen)))
        return rc;
    if (vlen > STORE_META_VALUE_MAX || (vlen && !val))
        return store_err(OBJSTORE_EINVAL, "%s: metadata value of %zu bytes (at most 64 MiB)",
                         t->s->dir, vlen);
    if (kvmap_put(&t->s->user_pending, key, klen, val, vlen, false))
        return store_err(OBJSTORE_ENOMEM, "out of memory");
    return OBJSTORE_OK;
}

int objstore_meta_get(objstore_txn *t, const void *key, size_t klen, const void **val,
                      size_t *vlen)
{
    *val = NULL;
    *vlen = 0;
    int rc = store_check_txn(t, false);
    if (rc || (rc = check_key(t->s, klen)))
        return rc;
    objstore *s = t->s;
    if (t->write) {
        kv_entry *e = kvmap_get(&s->user_pending, key, klen);
        if (e) {
            if (e->deleted)
                return store_err(OBJSTORE_ENOTFOUND, "%s: no such metadata key", s->dir);
            *val = e->val;
            *vlen = e->vlen;
            return OBJSTORE_OK;
        }
    }
    MDB_val k = {klen, (void *)key}, v;
    MDB_txn *rt = store_rtxn(t, &rc);
    if (!rt)
        return rc;
    rc = mdb_get(rt, s->db_user, &k, &v);
    if (rc == MDB_NOTFOUND)
        return store_err(OBJSTORE_ENOTFOUND, "%s: no such metadata key", s->dir);
    if (rc)
        return store_lmdb_err(rc, "metadata get");
    *val = v.mv_data;
    *vlen = v.mv_size;
    return OBJSTORE_OK;
}

int objstore_meta_del(objstore_txn *t, const void *key, size_t klen)
{
    const void *v;
    size_t vlen;
    int rc = store_check_txn(t, true);
    if (rc || (rc = objstore_meta_get(t, key, klen, &v, &vlen)))
        return rc;
    if (kvmap_put(&t->s->user_pending, key, klen, NULL, 0, true))
        return store_err(OBJSTORE_ENOMEM, "out of memory");
    return OBJSTORE_OK;
}
