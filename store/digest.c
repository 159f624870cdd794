/*
 * digest.c -- the logical digest of a store (ARCHITECTURE §7), and the list
 * of roots the whole-heap operations share (gcstore.h).
 *
 * Rules:
 *   D1 the digest reads only committed state, under a read transaction: an
 *      LMDB snapshot for the roots and the type names registered before it.
 *   D2 it depends on content only (names, types by name, payloads, the
 *      shape of the graph), never on an offset: the walk itself is gc/'s
 *      (gc_digest; docs/FORMAT.md gives its byte stream).
 */
#include "gcstore.h"

#include <stdlib.h>
#include <string.h>

/* ---- roots as an iterator ---- */

static int rl_push(store_rootlist *l, const void *name, size_t len, uint64_t oid)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        char **nm = realloc(l->name, cap * sizeof *nm);
        if (nm)
            l->name = nm;
        size_t *ln = realloc(l->len, cap * sizeof *ln);
        if (ln)
            l->len = ln;
        uint64_t *o = realloc(l->oid, cap * sizeof *o);
        if (o)
            l->oid = o;
        if (!nm || !ln || !o)
            return store_err(OBJSTORE_ENOMEM, "out of memory reading the roots");
        l->cap = cap;
    }
    char *copy = NULL;
    if (name) {
        if (!(copy = malloc(len + 1)))
            return store_err(OBJSTORE_ENOMEM, "out of memory reading the roots");
        memcpy(copy, name, len);
        copy[len] = 0;
    }
    l->name[l->n] = copy;
    l->len[l->n] = len;
    l->oid[l->n++] = oid;
    return OBJSTORE_OK;
}

int store_rootlist_load(objstore *s, MDB_txn *txn, bool pins, store_rootlist *l)
{
    *l = (store_rootlist){0};
    MDB_cursor *c;
    int mrc = mdb_cursor_open(txn, s->db_roots, &c);
    if (mrc)
        return store_lmdb_err(mrc, "meta/: roots");
    MDB_val k, v;
    int rc = OBJSTORE_OK;
    for (mrc = mdb_cursor_get(c, &k, &v, MDB_FIRST); !mrc && !rc;
         mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (v.mv_size != 8) {
            rc = store_err(OBJSTORE_ECORRUPT, "%s: root '%.*s' holds %zu bytes, not an oid",
                           s->dir, (int)(k.mv_size > 200 ? 200 : k.mv_size),
                           (const char *)k.mv_data, v.mv_size);
            break;
        }
        uint64_t oid;
        memcpy(&oid, v.mv_data, 8);
        rc = rl_push(l, k.mv_data, k.mv_size, oid);
    }
    mdb_cursor_close(c);
    if (!rc && mrc != MDB_NOTFOUND)
        rc = store_lmdb_err(mrc, "meta/: roots");
    if (!rc && pins) {
        pthread_mutex_lock(&s->pin_lock);
        uint64_t oid;
        for (size_t i = 0; !rc && u64map_next(&s->pins, &i, &oid, NULL);)
            rc = rl_push(l, NULL, 0, oid);
        pthread_mutex_unlock(&s->pin_lock);
    }
    if (rc)
        store_rootlist_free(l);
    return rc;
}

void store_rootlist_free(store_rootlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->name[i]);
    free(l->name);
    free(l->len);
    free(l->oid);
    *l = (store_rootlist){0};
}

static int rl_next(void *ctx, uint64_t *oid, const char **name, size_t *len)
{
    store_rootlist *l = ctx;
    if (l->pos >= l->n)
        return 0;
    *oid = l->oid[l->pos];
    *name = l->name[l->pos];
    *len = l->len[l->pos];
    l->pos++;
    return 1;
}

gc_roots store_rootlist_iter(store_rootlist *l)
{
    l->pos = 0;
    return (gc_roots){.next = rl_next, .ctx = l};
}

int store_gc_err(objstore *s, heap_status st, const char *what)
{
    switch (st) {
    case HEAP_OK:
        return OBJSTORE_OK;
    case HEAP_ENOMEM:
        return store_err(OBJSTORE_ENOMEM, "%s: %s: out of memory", s->dir, what);
    case HEAP_ECORRUPT:
    case HEAP_EBADOFF:
        return store_err(OBJSTORE_ECORRUPT, "%s: %s: %s", s->dir, what,
                         heap_errmsg(s->heap)[0] ? heap_errmsg(s->heap)
                                                 : "a root or slot names no live object");
    default:
        return store_err((int)st, "%s: %s: %s", s->dir, what, heap_errmsg(s->heap));
    }
}

/* ---- the digest ---- */

struct tctx {
    objstore *s;
    uint32_t bad;   /* an unregistered type id met, or 0 */
};

static const char *type_name_cb(void *ctx, uint32_t type, size_t *len)
{
    struct tctx *c = ctx;
    objstore *s = c->s;
    if (type == 0 || type > s->ntypes_committed) {
        c->bad = type;
        return NULL;
    }
    const char *name = s->type_names[type - 1];
    *len = strlen(name);
    return name;
}

int objstore_digest(objstore *s, uint8_t digest[16], uint64_t *objects)
{
    memset(digest, 0, 16);
    if (objects)
        *objects = 0;
    objstore_txn *t;
    int rc = objstore_begin(s, OBJSTORE_TXN_RDONLY, &t);
    if (rc)
        return rc;
    store_rootlist l;
    if (!(rc = store_rootlist_load(s, t->rtxn, false, &l))) {
        gc_roots it = store_rootlist_iter(&l);
        struct tctx c = {.s = s};
        heap_status hs = gc_digest(s->heap, &it, type_name_cb, &c, s->weak_type, digest, objects);
        if (hs == HEAP_ECORRUPT && c.bad)
            rc = store_err(OBJSTORE_ECORRUPT, "%s: digest: an object has type id %u, "
                           "which is not registered", s->dir, c.bad);
        else
            rc = store_gc_err(s, hs, "digest");
        store_rootlist_free(&l);
    }
    objstore_commit(t);
    return rc;
}
