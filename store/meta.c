/*
 * meta.c -- the LMDB side of a store: the environment, its named databases
 * and the records the store keeps there (docs/FORMAT.md lists them):
 *
 *   meta        "format" u64, "uuid" 16 bytes, "generation" u64, "epoch" u64
 *   roots       root name -> oid (u64, little-endian)
 *   types       type name -> id (u32, big-endian)
 *   typeids     id (u32, big-endian) -> type name
 *   user        application key -> value
 *   zct         oid (u64 BE) -> empty: persisted count 0, not yet freed
 *   candidates  oid (u64 BE) -> empty: cycle candidates
 *   weak        (target u64 BE, weakref u64 BE) -> empty (weak.c)
 *   (main)      the named databases; after them the redo log: 0xFE, epoch u64
 *               BE, seq u32 BE -> redo record; then its head (txn.c T7)
 *
 * Rules:
 *   M1 nothing read from LMDB is trusted: sizes are checked before use, a
 *      missing database or key makes the store "not ours" (OBJSTORE_EMETA).
 *   M2 all writes happen inside commit's single LMDB write transaction
 *      (txn.c); this file only reads, except at create.
 *   M3 before LMDB sees data.mdb, open reads its two meta pages itself: a
 *      file too short for them (a create that never finished) or shorter
 *      than the last page they name (truncated) is refused with
 *      OBJSTORE_EMETA, as LMDB would write into the first and fault on the
 *      second (it maps the file and follows page numbers unchecked).
 */
#include "store_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAP_INITIAL (UINT64_C(1) << 30)

void store_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

uint64_t store_get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* LMDB's meta page (lmdb 0.9, 64-bit): a 16-byte page header, then
 * MDB_meta.  Offsets from the page's start; docs/FORMAT.md names them. */
#define LM_MAGIC 0xBEEFC0DEu
#define LM_OFF_MAGIC 16      /* u32 */
#define LM_OFF_VERSION 20    /* u32, 1 */
#define LM_OFF_PSIZE 40      /* u32: mm_dbs[FREE_DBI].md_pad is the page size */
#define LM_OFF_FREE_ROOT 80  /* u64 */
#define LM_OFF_MAIN_ROOT 128 /* u64 */
#define LM_OFF_LAST_PG 136   /* u64 */
#define LM_OFF_TXNID 144     /* u64 */
#define LM_META_BYTES 152
#define LM_P_INVALID UINT64_MAX

static uint32_t le32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t le64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

int store_meta_precheck(const char *dir, const char *data)
{
    int fd = open(data, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return store_err(OBJSTORE_EMETA, "%s: no meta/data.mdb (not a store, or its creation "
                         "did not finish): %s", dir, strerror(errno));
    struct stat sb;
    uint8_t m[2][LM_META_BYTES];
    int rc = OBJSTORE_OK;
    uint64_t size = 0;
    uint32_t psize = 0;
    if (fstat(fd, &sb) != 0) {
        rc = store_err(OBJSTORE_EIO, "%s: fstat: %s", data, strerror(errno));
        goto out;
    }
    size = (uint64_t)sb.st_size;
    if (size < LM_META_BYTES || pread(fd, m[0], LM_META_BYTES, 0) != LM_META_BYTES) {
        rc = store_err(OBJSTORE_EMETA, "%s: meta/data.mdb has %llu bytes, too few for LMDB's "
                       "meta pages (its creation did not finish?)", dir,
                       (unsigned long long)size);
        goto out;
    }
    psize = le32(m[0] + LM_OFF_PSIZE);
    if (le32(m[0] + LM_OFF_MAGIC) != LM_MAGIC || le32(m[0] + LM_OFF_VERSION) != 1 ||
        psize < 512 || psize > 65536 || (psize & (psize - 1))) {
        rc = store_err(OBJSTORE_EMETA, "%s: meta/data.mdb: the first meta page is not LMDB's "
                       "(magic, version or page size)", dir);
        goto out;
    }
    if (size < 2 * (uint64_t)psize ||
        pread(fd, m[1], LM_META_BYTES, psize) != LM_META_BYTES) {
        rc = store_err(OBJSTORE_EMETA, "%s: meta/data.mdb has %llu bytes, fewer than LMDB's "
                       "two meta pages of %u (truncated, or its creation did not finish)",
                       dir, (unsigned long long)size, psize);
        goto out;
    }
    if (le32(m[1] + LM_OFF_MAGIC) != LM_MAGIC || le32(m[1] + LM_OFF_VERSION) != 1) {
        rc = store_err(OBJSTORE_EMETA, "%s: meta/data.mdb: the second meta page is not "
                       "LMDB's", dir);
        goto out;
    }
    /* LMDB reads through the meta page with the larger transaction id. */
    const uint8_t *cur = le64(m[1] + LM_OFF_TXNID) > le64(m[0] + LM_OFF_TXNID) ? m[1] : m[0];
    uint64_t last = le64(cur + LM_OFF_LAST_PG), froot = le64(cur + LM_OFF_FREE_ROOT),
             mroot = le64(cur + LM_OFF_MAIN_ROOT);
    if (last < 1 || last > size / psize - 1 ||
        (froot != LM_P_INVALID && (froot < 2 || froot > last)) ||
        (mroot != LM_P_INVALID && (mroot < 2 || mroot > last)))
        rc = store_err(OBJSTORE_EMETA, "%s: meta/data.mdb has %llu bytes (%llu pages of %u), "
                       "but its meta page names page %llu as the last and roots at %lld, "
                       "%lld: the file is truncated or damaged", dir,
                       (unsigned long long)size, (unsigned long long)(size / psize), psize,
                       (unsigned long long)last, (long long)froot, (long long)mroot);
out:
    close(fd);
    return rc;
}

int store_env_open(objstore *s, const char *metadir, bool create)
{
    (void)create;
    int rc = mdb_env_create(&s->env);
    if (rc)
        return store_lmdb_err(rc, metadir);
    s->mapsize = MAP_INITIAL;
    mdb_env_set_maxdbs(s->env, 16);
    mdb_env_set_mapsize(s->env, s->mapsize);
    unsigned flags = MDB_NOTLS | MDB_NORDAHEAD;
    if (s->ro)
        flags |= MDB_RDONLY;
    if (s->lmdb_nolock)
        flags |= MDB_NOLOCK;
    if (s->opts.sync == OBJSTORE_SYNC_RELAXED)
        flags |= MDB_NOSYNC;
    rc = mdb_env_open(s->env, metadir, flags, 0644);
    if (rc) {
        mdb_env_close(s->env);
        s->env = NULL;
        if (rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH)
            return store_err(OBJSTORE_EMETA, "%s: not an LMDB environment objstore can "
                             "read: %s", metadir, mdb_strerror(rc));
        return store_lmdb_err(rc, metadir);
    }
    MDB_envinfo info;
    if (mdb_env_info(s->env, &info) == 0 && info.me_mapsize > s->mapsize)
        s->mapsize = info.me_mapsize;
    return OBJSTORE_OK;
}

int store_grow_map(objstore *s)
{
    uint64_t size = s->mapsize * 2;
    int rc = mdb_env_set_mapsize(s->env, size);
    if (rc)
        return store_lmdb_err(rc, "grow meta/ map");
    s->mapsize = size;
    return OBJSTORE_OK;
}

static int get_exact(objstore *s, MDB_txn *txn, const char *key, void *out, size_t len);

/* The store's format, read before anything else of meta/ is looked at: a
 * store of another format may lack databases this one has (or have others),
 * and must be named as such, never taken for a damaged store of this one. */
static int check_format(objstore *s, MDB_txn *txn)
{
    uint64_t format;
    int rc = get_exact(s, txn, "format", &format, 8);
    if (rc || format == STORE_FORMAT_VERSION)
        return rc;
    return store_err(OBJSTORE_EVERSION, "%s: store format %llu, this build reads %u%s", s->dir,
                     (unsigned long long)format, STORE_FORMAT_VERSION,
                     format < STORE_FORMAT_VERSION
                         ? " (dump it with the objstore of its format, objstore dump, and "
                           "load the dump with this one)"
                         : "");
}

int store_dbs_open(objstore *s, MDB_txn *txn, bool create)
{
    static const char *names[] = {"meta", "roots", "types", "typeids",
                                  "user", "zct", "candidates"};
    MDB_dbi *dbis[] = {&s->db_meta, &s->db_roots, &s->db_types, &s->db_typeids,
                       &s->db_user, &s->db_zct, &s->db_cand};
    for (unsigned i = 0; i < sizeof names / sizeof *names; i++) {
        int rc = mdb_dbi_open(txn, names[i], create ? MDB_CREATE : 0, dbis[i]);
        if (rc == MDB_NOTFOUND || rc == MDB_INCOMPATIBLE)
            return store_err(OBJSTORE_EMETA, "%s: meta/ has no '%s' database: not an "
                             "objstore store", s->dir, names[i]);
        if (rc)
            return store_lmdb_err(rc, "meta/: open database");
        if (i == 0 && !create && (rc = check_format(s, txn)))
            return rc;
    }
    int rc = mdb_dbi_open(txn, NULL, 0, &s->db_main);
    if (rc)
        return store_lmdb_err(rc, "meta/: open the main database");
    return store_weak_dbi(s, txn, create);   /* optional: weak.c W5 */
}

int store_put_u64(MDB_txn *txn, MDB_dbi db, const char *key, uint64_t v)
{
    MDB_val k = {strlen(key), (void *)key}, d = {8, &v};
    int rc = mdb_put(txn, db, &k, &d, 0);
    return rc ? store_lmdb_err(rc, "meta/: put") : OBJSTORE_OK;
}

static int get_exact(objstore *s, MDB_txn *txn, const char *key, void *out, size_t len)
{
    MDB_val k = {strlen(key), (void *)key}, d;
    int rc = mdb_get(txn, s->db_meta, &k, &d);
    if (rc == MDB_NOTFOUND)
        return store_err(OBJSTORE_EMETA, "%s: meta/ lacks the '%s' key: not an objstore "
                         "store", s->dir, key);
    if (rc)
        return store_lmdb_err(rc, "meta/: get");
    if (d.mv_size != len)
        return store_err(OBJSTORE_EMETA, "%s: meta/ key '%s' has %zu bytes, expected %zu",
                         s->dir, key, d.mv_size, len);
    memcpy(out, d.mv_data, len);
    return OBJSTORE_OK;
}

/* After store_dbs_open(s, txn, false), which read and checked the format. */
int store_meta_load(objstore *s, MDB_txn *txn)
{
    int rc;
    if ((rc = get_exact(s, txn, "uuid", s->uuid, 16)) ||
        (rc = get_exact(s, txn, "generation", &s->generation, 8)) ||
        (rc = get_exact(s, txn, "epoch", &s->epoch, 8)))
        return rc;
    /* "ckpt" (the epoch up to which redo records were deleted) was added
     * after format 1 first shipped: a store without it never deleted any
     * record under the chain rules, so 0 is exact. */
    s->meta_ckpt = 0;
    MDB_val ck = {4, "ckpt"}, cv;
    int mrc = mdb_get(txn, s->db_meta, &ck, &cv);
    if (mrc == 0 && cv.mv_size == 8)
        memcpy(&s->meta_ckpt, cv.mv_data, 8);
    else if (mrc == 0)
        return store_err(OBJSTORE_EMETA, "%s: meta/ key 'ckpt' has %zu bytes, expected 8",
                         s->dir, cv.mv_size);
    else if (mrc != MDB_NOTFOUND)
        return store_lmdb_err(mrc, "meta/: get");
    if (s->generation == 0 || s->generation > (UINT64_C(1) << 48))
        return store_err(OBJSTORE_EMETA, "%s: meta/ names heap generation %llu", s->dir,
                         (unsigned long long)s->generation);
    s->synced_epoch = s->deleted_upto = 0;
    return OBJSTORE_OK;
}

/* Adds a type to the RAM tables (ids are dense: id = count + 1). */
int store_type_add(objstore *s, const char *name, size_t len, uint32_t id);
int store_type_add(objstore *s, const char *name, size_t len, uint32_t id)
{
    if (id != s->ntypes + 1)
        return store_err(OBJSTORE_EMETA, "%s: type ids are not dense (id %u after %u)",
                         s->dir, id, s->ntypes);
    if (s->ntypes == s->types_cap) {
        uint32_t cap = s->types_cap ? s->types_cap * 2 : 16;
        char **p = realloc(s->type_names, cap * sizeof *p);
        if (!p)
            return store_err(OBJSTORE_ENOMEM, "out of memory");
        s->type_names = p;
        s->types_cap = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy)
        return store_err(OBJSTORE_ENOMEM, "out of memory");
    memcpy(copy, name, len);
    copy[len] = 0;
    if (kvmap_put(&s->type_ids, name, len, &id, sizeof id, false)) {
        free(copy);
        return store_err(OBJSTORE_ENOMEM, "out of memory");
    }
    s->type_names[s->ntypes++] = copy;
    return OBJSTORE_OK;
}

int store_types_load(objstore *s, MDB_txn *txn)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, s->db_typeids, &c);
    if (rc)
        return store_lmdb_err(rc, "meta/: types");
    MDB_val k, v;
    int err = OBJSTORE_OK;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0 && !err;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 4 || v.mv_size < 1 || v.mv_size > STORE_TYPE_NAME_MAX ||
            memchr(v.mv_data, 0, v.mv_size)) {
            err = store_err(OBJSTORE_EMETA, "%s: meta/ typeids holds a malformed entry",
                            s->dir);
            break;
        }
        const uint8_t *p = k.mv_data;
        uint32_t id = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        err = store_type_add(s, v.mv_data, v.mv_size, id);
    }
    mdb_cursor_close(c);
    if (!err && rc != MDB_NOTFOUND && rc != 0)
        err = store_lmdb_err(rc, "meta/: types");
    s->ntypes_committed = s->ntypes;
    return err;
}

static int load_set(objstore *s, MDB_txn *txn, MDB_dbi db, oidset *o, const char *what)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, db, &c);
    if (rc)
        return store_lmdb_err(rc, what);
    MDB_val k, v;
    int err = OBJSTORE_OK;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        uint64_t oid = k.mv_size == 8 ? store_get_be64(k.mv_data) : 0;
        if (!oid || !heap_is_live(s->heap, oid)) {
            /* A stale entry names no object: nothing to free or scan.  It is
             * listed as committed and removed, so the first commit deletes
             * it from LMDB (a malformed key cannot be named: it stays). */
            if (oid && (!u64map_upsert(&o->committed, oid, NULL) ||
                        !u64map_upsert(&o->removed, oid, NULL))) {
                err = store_err(OBJSTORE_ENOMEM, "out of memory");
                break;
            }
            continue;
        }
        if (!u64map_upsert(&o->committed, oid, NULL)) {
            err = store_err(OBJSTORE_ENOMEM, "out of memory");
            break;
        }
    }
    mdb_cursor_close(c);
    return err;
}

int store_sets_load(objstore *s, MDB_txn *txn)
{
    int rc = load_set(s, txn, s->db_zct, &s->zct, "meta/: zct");
    if (!rc)
        rc = load_set(s, txn, s->db_cand, &s->cand, "meta/: candidates");
    return rc ? rc : store_weak_load(s, txn);
}

/* ---- oidset ---- */

bool oidset_has(const oidset *o, uint64_t oid)
{
    if (u64map_find(&o->added, oid))
        return true;
    return u64map_find(&o->committed, oid) && !u64map_find(&o->removed, oid);
}

int oidset_add(oidset *o, uint64_t oid)
{
    if (u64map_find(&o->committed, oid)) {
        u64map_del(&o->removed, oid);
        return OBJSTORE_OK;
    }
    return u64map_upsert(&o->added, oid, NULL) ? OBJSTORE_OK
                                               : store_err(OBJSTORE_ENOMEM, "out of memory");
}

void oidset_remove(oidset *o, uint64_t oid)
{
    if (u64map_del(&o->added, oid))
        return;
    if (u64map_find(&o->committed, oid))
        u64map_upsert(&o->removed, oid, NULL);
}

void oidset_rollback(oidset *o)
{
    u64map_clear(&o->added);
    u64map_clear(&o->removed);
}

void oidset_fold(oidset *o)
{
    uint64_t k;
    for (size_t i = 0; u64map_next(&o->removed, &i, &k, NULL);)
        u64map_del(&o->committed, k);
    for (size_t i = 0; u64map_next(&o->added, &i, &k, NULL);)
        u64map_upsert(&o->committed, k, NULL);
    oidset_rollback(o);
}

size_t oidset_count(const oidset *o)
{
    return o->committed.n - o->removed.n + o->added.n;
}

void oidset_free(oidset *o)
{
    u64map_free(&o->committed);
    u64map_free(&o->added);
    u64map_free(&o->removed);
}
