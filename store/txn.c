/*
 * txn.c -- transactions and the commit protocol (ARCHITECTURE §5).
 *
 * A write transaction changes heap bytes in place in the private mapping
 * (dirty-tracked) and keeps roots, types, metadata and set changes in RAM.
 * Commit:
 *
 *   1. free what sits at count 0 (object.c), within the free budget, then
 *      collect cycles when due and free what only they held (collect.c);
 *   2. bulk path: dirty ranges above the direct floor are pwritten and
 *      fdatasynced now, when there are at least STORE_DIRECT_MIN bytes of
 *      them; the direct floor is the committed heap length at begin, raised
 *      past every range of a redo record that will still exist after this
 *      commit, so no replay can ever write over these bytes;
 *   3. one LMDB write transaction: redo records for the other ranges, root,
 *      type, metadata and set changes, the deletion of checkpointed redo,
 *      the new epoch (in meta/epoch only when no redo record carries it in
 *      its key, or when records are deleted).  mdb_txn_commit is the single
 *      commit point;
 *   4. pwrite the redo ranges into the heap file;
 *   5. now and then, fdatasync the heap: the records up to this epoch may go
 *      (their deletion rides in the next commit, or runs at close).
 *
 * Rules:
 *   T1 the heap file only ever holds committed bytes, or bytes above the
 *      committed length that nothing committed refers to (bulk path).
 *   T2 a redo record is validated whole (checksum, bounds, uuid, generation,
 *      epoch) before replay applies any record; a bad one refuses the open.
 *   T3 when the heap cannot be written after a durable commit, the commit
 *      reports success and the handle fails: the redo log still holds it.
 *   T4 abort restores every RAM structure: heap pages and allocator, pending
 *      maps, set deltas, types, pins.
 *   T5 the redo log is a chain: each record names its commit's predecessor
 *      with records and its commit's record count, and the log's head
 *      names the newest; a record missing anywhere refuses the open.
 *   T6 a checkpoint writes its epoch into the heap header (ckpt_epoch) and
 *      syncs before any record up to it is deleted and meta/ "ckpt" moves:
 *      open refuses a heap whose ckpt_epoch is below meta/'s "ckpt" (an
 *      older copy of the file: the records that would bring it forward are
 *      gone) or above meta/'s epoch (meta/ is the older one).
 *   T7 the log's keys are meta/'s main database's last ones (records, then
 *      the head): a commit that writes records and touches no named
 *      database rewrites one path of that tree, as a raw LMDB put does.
 */
#include "store_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define REDO_MAGIC 0x4F444552u   /* "REDO" */
#define REDO_VERSION 2u

/* A record's header.  Records chain (T5): every record of a commit names
 * the epoch of the commit before it that wrote records (prev_epoch) and how
 * many records its own commit wrote (nseq), and meta/'s main database holds
 * the newest such epoch under "redo-head" — so a record missing from the
 * start, the middle or the end of the log is found at open. */
struct redo_hdr {
    uint32_t magic;
    uint32_t version;
    uint64_t epoch;
    uint32_t seq;
    uint32_t nranges;
    uint8_t uuid[16];
    uint64_t generation;
    uint64_t data_bytes;
    uint64_t prev_epoch;     /* the previous commit with redo records, or 0 */
    uint32_t nseq;           /* records this commit wrote (seq 0..nseq-1) */
    uint32_t zero;
    uint64_t checksum;       /* XXH3_64bits of the record, this field zero */
};
_Static_assert(sizeof(struct redo_hdr) == 80, "redo header");

struct redo_range {
    uint64_t off;
    uint64_t len;
};

/* The redo log lives in meta/'s main database (T7): each record under
 * STORE_REDO_PREFIX ‖ epoch ‖ seq, and the head -- the newest commit that
 * wrote records -- under the one key that sorts after them all.  A commit's
 * records and the head land in the tree's rightmost leaf, so a small commit
 * dirties the path to that leaf and nothing else: no named database's root,
 * and no other leaf of the main database. */
struct redo_head {
    uint64_t epoch;
    uint32_t nseq;
    uint32_t zero;
};
const MDB_val store_redo_head_key = {10, "\xffredo-head"};

void store_redo_key(uint8_t key[STORE_REDO_KEY], uint64_t epoch, uint32_t seq)
{
    key[0] = STORE_REDO_PREFIX;
    store_be64(key + 1, epoch);
    key[9] = (uint8_t)(seq >> 24);
    key[10] = (uint8_t)(seq >> 16);
    key[11] = (uint8_t)(seq >> 8);
    key[12] = (uint8_t)seq;
}

uint64_t store_redo_key_epoch(const MDB_val *k)
{
    uint8_t e[8] = {0};
    size_t n = k->mv_size > 9 ? 8 : k->mv_size > 1 ? k->mv_size - 1 : 0;
    memcpy(e, (const uint8_t *)k->mv_data + 1, n);
    uint64_t epoch = store_get_be64(e);
    return epoch ? epoch : 1;
}

/* Whether the cursor's key is in the log's key range (any size: a record
 * with a malformed key is still the log's, and fails its check). */
static int in_log(int rc, const MDB_val *k)
{
    if (rc)
        return rc;
    return k->mv_size && *(const uint8_t *)k->mv_data == STORE_REDO_PREFIX ? 0 : MDB_NOTFOUND;
}

int store_redo_seek(MDB_cursor *c, uint64_t epoch, MDB_val *k, MDB_val *v)
{
    uint8_t key[STORE_REDO_KEY];
    store_redo_key(key, epoch, 0);
    *k = (MDB_val){epoch ? sizeof key : 1, key};   /* epoch 0: a malformed key too */
    return in_log(mdb_cursor_get(c, k, v, MDB_SET_RANGE), k);
}

int store_redo_next(MDB_cursor *c, MDB_val *k, MDB_val *v)
{
    return in_log(mdb_cursor_get(c, k, v, MDB_NEXT), k);
}

int store_redo_last(MDB_cursor *c, MDB_val *k, MDB_val *v)
{
    uint8_t past = STORE_REDO_PREFIX + 1;   /* the first key past the log's range */
    *k = (MDB_val){1, &past};
    int rc = mdb_cursor_get(c, k, v, MDB_SET_RANGE);
    if (rc == 0 || rc == MDB_NOTFOUND)
        rc = mdb_cursor_get(c, k, v, rc == 0 ? MDB_PREV : MDB_LAST);
    return in_log(rc, k);
}

/* XXH3 of the header (checksum field zero), seeding XXH3 of the rest. */
static uint64_t redo_sum(const uint8_t *rec, size_t len)
{
    struct redo_hdr h;
    memcpy(&h, rec, sizeof h);
    h.checksum = 0;
    return XXH3_64bits_withSeed(rec + sizeof h, len - sizeof h, XXH3_64bits(&h, sizeof h));
}

/* ---- begin ---- */

MDB_txn *store_rtxn(objstore_txn *t, int *rc)
{
    *rc = OBJSTORE_OK;
    if (!t->rtxn) {
        if (t->write)
            store_group_drain(t->s);   /* G2: LMDB holds every sealed commit */
        int mrc = mdb_txn_begin(t->s->env, NULL, MDB_RDONLY, &t->rtxn);
        if (mrc) {
            t->rtxn = NULL;
            *rc = store_lmdb_err(mrc, "read snapshot");
        }
    }
    return t->rtxn;
}

int store_check_txn_slow(objstore_txn *t, bool write)
{
    if (!t || !t->s)
        return store_err(OBJSTORE_EINVAL, "no transaction");
    if (heap_failed(t->s->heap) && !t->s->failed) {
        t->s->failed = true;
        return store_err(OBJSTORE_EFAILED, "%s: %s; reopen the store", t->s->dir,
                         heap_errmsg(t->s->heap));
    }
    if (t->s->failed)
        return store_err(OBJSTORE_EFAILED, "%s: the store handle failed earlier; reopen it",
                         t->s->dir);
    if (write && !t->write)
        return store_err(OBJSTORE_EREADONLY, "%s: a write in a read-only transaction",
                         t->s->dir);
    return OBJSTORE_OK;
}

int store_write_begin(objstore *s, objstore_txn **out)
{
    objstore_txn *t = calloc(1, sizeof *t);
    if (!t)
        return store_err(OBJSTORE_ENOMEM, "out of memory");
    store_write_lock(s);
    t->s = s;
    t->write = true;
    /* The LMDB read snapshot is taken when first needed (store_rtxn). */
    s->tx_heap_len = heap_size(s->heap);
    memset(s->wseen, 0, sizeof s->wseen);
    *out = t;
    return OBJSTORE_OK;
}

int objstore_begin(objstore *s, int flags, objstore_txn **txn)
{
    *txn = NULL;
    if (!s)
        return store_err(OBJSTORE_EINVAL, "begin: no store");
    if (s->failed)
        return store_err(OBJSTORE_EFAILED, "%s: the store handle failed earlier; reopen it",
                         s->dir);
    if (store_is_writer(s))
        return store_err(OBJSTORE_ETXN, "%s: this thread already holds the write "
                         "transaction", s->dir);
    if (!(flags & OBJSTORE_TXN_RDONLY) && store_is_reader(s))
        return store_err(OBJSTORE_ETXN, "%s: a write transaction from a thread that "
                         "holds a read transaction would wait for itself", s->dir);
    if (!(flags & OBJSTORE_TXN_RDONLY)) {
        if (s->ro)
            return store_err(OBJSTORE_EREADONLY, "%s: store opened read-only", s->dir);
        return store_write_begin(s, txn);
    }
    objstore_txn *t = calloc(1, sizeof *t);
    if (!t)
        return store_err(OBJSTORE_ENOMEM, "out of memory");
    store_read_begin(s);
    t->s = s;
    /* Checked under the lock: while this transaction runs no writer can
     * fail the handle, so its object calls need not look again. */
    if (s->failed || heap_failed(s->heap)) {
        store_read_end(s);
        free(t);
        return store_err(OBJSTORE_EFAILED, "%s: the store handle failed earlier; reopen it",
                         s->dir);
    }
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &t->rtxn);
    if (rc) {
        store_read_end(s);
        free(t);
        return store_lmdb_err(rc, "begin");
    }
    t->fast = s->heap;
    t->seen = 1;   /* no oid: oids are 16-byte aligned */
    *txn = t;
    return OBJSTORE_OK;
}

static void txn_end(objstore_txn *t)
{
    objstore *s = t->s;
    if (t->rtxn)
        mdb_txn_abort(t->rtxn);
    if (t->rtxn_roots)
        mdb_txn_abort(t->rtxn_roots);
    if (t->write)
        store_write_unlock(s);
    else
        store_read_end(s);
    free(t);
}

/* ---- abort ---- */

static void rollback(objstore *s)
{
    store_group_drain(s);   /* G2: the file holds every sealed byte again (D1) */
    u64map_clear(&s->zeroed);
    heap_status hs = heap_discard(s->heap);
    if (hs) {
        store_heap_err(s, hs);
        s->failed = true;
    }
    kvmap_clear(&s->roots_pending);
    kvmap_clear(&s->user_pending);
    s->ncreated = 0;
    s->created_at_zero = 0;
    oidset_rollback(&s->zct);
    oidset_rollback(&s->cand);
    s->gc_collected = false;
    s->gc_request = NULL;
    while (s->ntypes > s->ntypes_committed) {
        char *name = s->type_names[--s->ntypes];
        kvmap_put(&s->type_ids, name, strlen(name), NULL, 0, true);
        char **d = realloc(s->dead_names, (s->ndead + 1) * sizeof *d);
        if (d) {
            s->dead_names = d;
            d[s->ndead++] = name;
        } else {
            free(name);
        }
    }
    store_weak_rollback(s);
    pthread_mutex_lock(&s->pin_lock);
    for (size_t i = s->pinlog.n; i-- > 0;) {
        uint64_t *v = u64map_find(&s->pins, s->pinlog.oid[i]);
        if (s->pinlog.delta[i] > 0) {
            if (v && --*v == 0)
                u64map_del(&s->pins, s->pinlog.oid[i]);
        } else {
            uint64_t *p = u64map_upsert(&s->pins, s->pinlog.oid[i], NULL);
            if (p)
                ++*p;
        }
    }
    s->pinlog.n = 0;
    pthread_mutex_unlock(&s->pin_lock);
    s->st_aborts++;
}

void objstore_abort(objstore_txn *t)
{
    if (!t)
        return;
    if (t->write)
        rollback(t->s);
    txn_end(t);
}

/* ---- the LMDB half of commit ---- */

/* Writes the redo records for ranges r[0..n) (as pieces of at most
 * STORE_REDO_CHUNK data bytes each), their bytes from data (in range order)
 * or, when data is NULL, from the mapping. */
int store_put_redo(objstore *s, MDB_txn *w, uint64_t epoch, uint64_t prev, const heap_range *r,
                   size_t n, const uint8_t *src)
{
    if (!n)
        return 0;
    /* The head goes and comes back last (T7), so that the records are
     * appended: LMDB then fills leaf pages instead of splitting them in
     * two.  All three changes fall in the rightmost leaf. */
    MDB_val hk = store_redo_head_key;
    int hrc = mdb_del(w, s->db_main, &hk, NULL);
    if (hrc && hrc != MDB_NOTFOUND)
        return hrc;
    uint32_t seq = 0;
    size_t i = 0;
    uint64_t done = 0;   /* bytes of r[i] already placed */
    const uint8_t *base = heap_base(s->heap);
    /* Every record but the last carries STORE_REDO_CHUNK data bytes. */
    uint64_t total = 0;
    for (size_t q = 0; q < n; q++)
        total += r[q].len;
    uint32_t nseq = (uint32_t)((total + STORE_REDO_CHUNK - 1) / STORE_REDO_CHUNK);
    while (i < n) {
        /* Which pieces go in this record. */
        size_t j = i;
        uint64_t d = done, bytes = 0;
        uint32_t nr = 0;
        while (j < n && bytes < STORE_REDO_CHUNK) {
            uint64_t take = r[j].len - d;
            if (take > STORE_REDO_CHUNK - bytes)
                take = STORE_REDO_CHUNK - bytes;
            bytes += take;
            nr++;
            d += take;
            if (d == r[j].len) {
                j++;
                d = 0;
            }
        }
        size_t size = sizeof(struct redo_hdr) + (size_t)nr * sizeof(struct redo_range) + bytes;
        uint8_t key[STORE_REDO_KEY];
        store_redo_key(key, epoch, seq);
        MDB_val k = {sizeof key, key}, v = {size, NULL};
        int rc = mdb_put(w, s->db_main, &k, &v, MDB_RESERVE | MDB_APPEND);
        if (rc == MDB_KEYEXIST)   /* not past every key: a damaged log, checked at open */
            rc = mdb_put(w, s->db_main, &k, &v, MDB_RESERVE);
        if (rc)
            return rc;
        uint8_t *rec = v.mv_data;
        struct redo_hdr h = {.magic = REDO_MAGIC, .version = REDO_VERSION, .epoch = epoch,
                             .seq = seq, .nranges = nr, .generation = s->generation,
                             .data_bytes = bytes, .prev_epoch = prev, .nseq = nseq};
        memcpy(h.uuid, s->uuid, 16);
        memcpy(rec, &h, sizeof h);
        struct redo_range *rr = (struct redo_range *)(rec + sizeof h);
        uint8_t *data = (uint8_t *)(rr + nr);
        for (uint32_t q = 0; q < nr; q++) {
            uint64_t take = r[i].len - done;
            if (take > STORE_REDO_CHUNK - (uint64_t)(data - (uint8_t *)(rr + nr)))
                take = STORE_REDO_CHUNK - (uint64_t)(data - (uint8_t *)(rr + nr));
            struct redo_range one = {r[i].off + done, take};
            memcpy(&rr[q], &one, sizeof one);
            if (src) {
                memcpy(data, src, take);
                src += take;
            } else {
                memcpy(data, base + one.off, take);
            }
            data += take;
            done += take;
            if (done == r[i].len) {
                i++;
                done = 0;
            }
        }
        h.checksum = redo_sum(rec, size);
        memcpy(rec + offsetof(struct redo_hdr, checksum), &h.checksum, 8);
        seq++;
    }
    struct redo_head head = {.epoch = epoch, .nseq = nseq};
    MDB_val hv = {sizeof head, &head};
    int rc = mdb_put(w, s->db_main, &hk, &hv, MDB_APPEND);
    return rc == MDB_KEYEXIST ? mdb_put(w, s->db_main, &hk, &hv, 0) : rc;
}

size_t store_redo_size(const heap_range *r, size_t n)
{
    size_t size = sizeof(struct redo_hdr) + n * sizeof(struct redo_range);
    for (size_t i = 0; i < n; i++)
        size += (size_t)r[i].len;
    return size;
}

uint64_t store_redo_stored_sum(const uint8_t *rec)
{
    uint64_t v;
    memcpy(&v, rec + offsetof(struct redo_hdr, checksum), 8);
    return v;
}

bool store_redo_whole(const uint8_t *rec, size_t len)
{
    return len >= sizeof(struct redo_hdr) && redo_sum(rec, len) == store_redo_stored_sum(rec);
}

uint64_t store_redo_build(objstore *s, uint8_t *rec, size_t size, uint64_t epoch,
                          uint64_t prev, const heap_range *r, size_t n, const uint8_t *src)
{
    const uint8_t *base = heap_base(s->heap);
    struct redo_hdr h = {.magic = REDO_MAGIC, .version = REDO_VERSION, .epoch = epoch,
                         .seq = 0, .nranges = (uint32_t)n, .generation = s->generation,
                         .data_bytes = size - sizeof h - n * sizeof(struct redo_range),
                         .prev_epoch = prev, .nseq = 1};
    memcpy(h.uuid, s->uuid, 16);
    uint8_t *data = rec + sizeof h + n * sizeof(struct redo_range);
    for (size_t i = 0; i < n; i++) {
        struct redo_range one = {r[i].off, r[i].len};
        memcpy(rec + sizeof h + i * sizeof one, &one, sizeof one);
        memcpy(data, src ? src : base + r[i].off, (size_t)r[i].len);
        data += r[i].len;
        if (src)
            src += r[i].len;
    }
    memcpy(rec, &h, sizeof h);
    h.checksum = redo_sum(rec, size);
    memcpy(rec + offsetof(struct redo_hdr, checksum), &h.checksum, 8);
    return h.checksum;
}

/* Deletes redo records with epoch <= upto. */
int store_del_redo(objstore *s, MDB_txn *w, uint64_t upto)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(w, s->db_main, &c);
    if (rc)
        return rc;
    MDB_val k, v;
    /* A malformed key goes by the epoch it sorts at, as the checker names
     * it: the log is emptied whole when upto is UINT64_MAX. */
    while ((rc = store_redo_seek(c, 0, &k, &v)) == 0) {
        if (store_redo_key_epoch(&k) > upto)
            break;
        if ((rc = mdb_cursor_del(c, 0)))
            break;
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int put_set_delta(store_wbatch *b, MDB_dbi db, oidset *o)
{
    uint8_t key[8];
    uint64_t oid;
    int rc;
    for (size_t i = 0; u64map_next(&o->removed, &i, &oid, NULL);) {
        store_be64(key, oid);
        if ((rc = store_wb_del(b, db, key, 8)))
            return rc;
    }
    for (size_t i = 0; u64map_next(&o->added, &i, &oid, NULL);) {
        store_be64(key, oid);
        if ((rc = store_wb_put(b, db, key, 8, "", 0)))
            return rc;
    }
    return 0;
}

static int put_pending(store_wbatch *b, MDB_dbi db, kvmap *m)
{
    kv_entry **e = kvmap_sorted(m);
    if (m->n && !e)
        return ENOMEM;
    for (size_t i = 0; i < m->n; i++) {
        int rc = e[i]->deleted ? store_wb_del(b, db, e[i]->key, e[i]->klen)
                               : store_wb_put(b, db, e[i]->key, e[i]->klen, e[i]->val,
                                              e[i]->vlen);
        if (rc)
            return rc;
    }
    return 0;
}

static int put_types(objstore *s, store_wbatch *b)
{
    for (uint32_t id = s->ntypes_committed + 1; id <= s->ntypes; id++) {
        const char *name = s->type_names[id - 1];
        uint8_t key[4] = {(uint8_t)(id >> 24), (uint8_t)(id >> 16), (uint8_t)(id >> 8),
                          (uint8_t)id};
        int rc = store_wb_put(b, s->db_types, name, strlen(name), key, 4);
        if (rc || (rc = store_wb_put(b, s->db_typeids, key, 4, name, strlen(name))))
            return rc;
    }
    return 0;
}

int store_put_changes(objstore *s, store_wbatch *b)
{
    int rc;
    if ((rc = put_pending(b, s->db_roots, &s->roots_pending)) ||
        (rc = put_pending(b, s->db_user, &s->user_pending)) || (rc = put_types(s, b)) ||
        (rc = put_set_delta(b, s->db_zct, &s->zct)) ||
        (rc = put_set_delta(b, s->db_cand, &s->cand)))
        return rc;
    return store_weak_put(s, b);
}

bool store_has_changes(objstore *s)
{
    if (s->roots_pending.n || s->user_pending.n || s->ntypes != s->ntypes_committed ||
        s->weak_rebuild || s->weak_add.n || s->weak_del.n)
        return true;
    const oidset *sets[2] = {&s->zct, &s->cand};
    for (int i = 0; i < 2; i++)
        if (sets[i]->added.n || sets[i]->removed.n)
            return true;
    return false;
}

void store_fold_committed(objstore *s)
{
    kvmap_clear(&s->roots_pending);
    kvmap_clear(&s->user_pending);
    oidset_fold(&s->zct);
    store_gc_committed(s);
    oidset_fold(&s->cand);
    store_weak_committed(s);
    pthread_mutex_lock(&s->pin_lock);
    u64map_clear(&s->unpinned);
    pthread_mutex_unlock(&s->pin_lock);
    s->ntypes_committed = s->ntypes;
    s->pinlog.n = 0;
}

/* Fails the handle after an I/O error that leaves it unsound; the status
 * says so (EFAILED), the message keeps the error's words. */
static int handle_failed(objstore *s, const char *what)
{
    char msg[512];
    snprintf(msg, sizeof msg, "%s", objstore_errmsg());
    s->failed = true;
    return store_err(OBJSTORE_EFAILED, "%s (%s; the handle failed, reopen the store)", msg,
                     what);
}

/* LMDB makes its environment unusable (every later begin: MDB_PANIC) when
 * it could not write a meta page.  Whether that commit reached the disk is
 * then unknown, and only a reopen can tell (T3). */
bool store_env_panicked(objstore *s)
{
    MDB_txn *p;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &p);
    if (rc == 0)
        mdb_txn_abort(p);
    return rc == MDB_PANIC;
}

/* One try at the LMDB transaction; returns an LMDB code. */
static int lmdb_commit(objstore *s, uint64_t epoch, const heap_range *redo, size_t nredo,
                       bool *unknown)
{
    MDB_txn *w;
    *unknown = false;
    uint64_t ckpt = s->synced_epoch;
    MDB_val ek = {5, "epoch"}, ev = {8, &epoch}, ck = {4, "ckpt"}, cv = {8, &ckpt};
    int rc = mdb_txn_begin(s->env, NULL, 0, &w);
    if (rc)
        return rc;
    store_wbatch b = {.txn = w};
    if ((rc = store_put_redo(s, w, epoch, s->redo_last, redo, nredo, NULL)) ||
        (rc = store_put_changes(s, &b)) ||
        (s->synced_epoch > s->deleted_upto &&
         ((rc = store_del_redo(s, w, s->synced_epoch)) ||
          (rc = mdb_put(w, s->db_meta, &ck, &cv, 0)))) ||
        ((nredo == 0 || s->synced_epoch > s->deleted_upto) &&
         (rc = mdb_put(w, s->db_meta, &ek, &ev, 0)))) {
        mdb_txn_abort(w);
        return rc;
    }
    store_hook("lmdb-commit");
    rc = mdb_txn_commit(w);
    /* Errors LMDB reports before it writes the meta page leave nothing
     * committed; an I/O error may come after: the outcome is unknown. */
    if (rc == EIO || (rc && store_env_panicked(s)))
        *unknown = true;
    return rc;
}

/* ---- commit ---- */

/* Makes every commit up to epoch durable in the heap file: the header
 * records the epoch (heap_write_ckpt), and one fdatasync covers it and the
 * bytes it vouches for.  Only after this may redo records up to epoch go,
 * and meta/'s "ckpt" follow (T6). */
static int heap_checkpoint(objstore *s, uint64_t epoch)
{
    heap_status hs = heap_write_ckpt(s->heap, epoch);
    if (!hs) {
        store_hook("checkpoint-fdatasync");
        hs = heap_sync(s->heap);
    }
    return hs ? store_heap_err(s, hs) : OBJSTORE_OK;
}

/* meta/'s half of a checkpoint at epoch, after heap_checkpoint: the redo
 * records up to upto go, "epoch" and "ckpt" move to epoch (so meta/ is
 * never behind a journal run's base: J4).  An LMDB code. */
static int meta_checkpoint(objstore *s, uint64_t epoch, uint64_t upto, const char *hook)
{
    MDB_txn *w;
    int rc = mdb_txn_begin(s->env, NULL, 0, &w);
    if (!rc && ((rc = store_del_redo(s, w, upto)) ||
                (rc = store_put_u64(w, s->db_meta, "epoch", epoch) ? EIO : 0) ||
                (rc = store_put_u64(w, s->db_meta, "ckpt", epoch) ? EIO : 0)))
        mdb_txn_abort(w);
    if (!rc) {
        store_hook(hook);
        rc = mdb_txn_commit(w);
    }
    if (rc)
        return rc;
    s->deleted_upto = s->meta_ckpt = epoch;
    s->redo_high = 0;
    return 0;
}

/* A commit's checkpoint: the heap synced up to epoch (T6); when the journal
 * holds entries, meta/ records the checkpoint and the journal starts anew.
 * Fails only when the heap could not be synced. */
static int store_ckpt(objstore *s, uint64_t epoch)
{
    int rc = heap_checkpoint(s, epoch);
    if (rc || !s->j_open || (store_journal_empty(s) && !s->j_reset_due))
        return rc;
    /* On an LMDB error the run stays as it is (nothing of it is
     * overwritten) but takes no more entries until a later checkpoint;
     * meta/'s records go at the next commit that writes some. */
    if (meta_checkpoint(s, epoch, epoch, "checkpoint-commit") == 0)
        store_journal_restart(s, epoch);
    else
        store_journal_stop(s);
    return OBJSTORE_OK;
}

/* Step 1 of commit, under the write lock: the frees and collections. */
static int commit_prepare(objstore_txn *t)
{
    objstore *s = t->s;
    if (heap_failed(s->heap)) {
        s->failed = true;   /* some change was not tracked: commit nothing */
        return store_err(OBJSTORE_EFAILED, "%s: %s; nothing committed, reopen the store",
                         s->dir, heap_errmsg(s->heap));
    }
    memset(s->wseen, 0, sizeof s->wseen);   /* R8: frees come now */
    int rc = store_take_unpinned(s);
    if (rc)
        return rc;
    if ((rc = store_commit_frees(t)))
        return rc;
#ifdef OBJSTORE_CHECK_WRITES
    heap_status cs = heap_check_unmarked(s->heap);
    if (cs)
        return store_heap_err(s, cs);
#endif
    if (t->rtxn)
        mdb_txn_abort(t->rtxn);
    if (t->rtxn_roots)
        mdb_txn_abort(t->rtxn_roots);
    t->rtxn = t->rtxn_roots = NULL;
    return OBJSTORE_OK;
}

/* Steps 2-5 for a commit that runs alone: under the write lock, with no
 * sealed transaction pending (G2) and the freeze held. */
static int commit_alone(objstore_txn *t)
{
    objstore *s = t->s;
    int rc;
    const heap_range *r;
    /* What this transaction made and freed itself costs no write: arenas it
     * grew and left empty are cut, pages in free pools dropped. */
    heap_status fs = heap_cut_fresh_tail(s->heap, s->tx_heap_len);
    if (!fs)
        fs = heap_forget_free(s->heap);
    if (fs) {
        store_heap_err(s, fs);
        return handle_failed(s, "nothing committed");
    }
    size_t n = heap_dirty_ranges(s->heap, &r);
    if (heap_dirty_bytes(s->heap) && !n)
        return store_heap_err(s, HEAP_ENOMEM);

    /* Three kinds of dirty bytes, by address:
     *   [fresh, ...)     arenas grown past the file's old end, mapped shared:
     *                    already in the page cache, need only the sync (and
     *                    are not in the dirty ranges);
     *   [floor, fresh)   above everything committed or in a live redo
     *                    record: written directly when there are enough;
     *   [0, floor)       through the redo log. */
    uint64_t fresh = heap_fresh_from(s->heap);
    uint64_t floor = s->tx_heap_len > s->redo_high ? s->tx_heap_len : s->redo_high;
    if (s->j_high > floor)
        floor = s->j_high;   /* the journal run's ranges are live redo too */
    if (floor > fresh)
        floor = fresh;
    heap_range *redo = malloc((n + 1) * sizeof *redo), *direct = malloc((n + 1) * sizeof *direct);
    if (!redo || !direct) {
        free(redo);
        free(direct);
        return store_err(OBJSTORE_ENOMEM, "out of memory");
    }
    size_t nredo = 0, ndirect = 0;
    uint64_t direct_bytes = 0;
    /* Fresh arenas are not tracked line by line: all of them is synced. */
    uint64_t fresh_bytes = fresh < heap_size(s->heap) ? heap_size(s->heap) - fresh : 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t a = r[i].off, b = r[i].off + r[i].len;
        uint64_t db = b < fresh ? b : fresh;              /* [da, db): direct */
        uint64_t da = a > floor ? a : floor;
        if (db > da) {
            direct[ndirect++] = (heap_range){da, db - da};
            direct_bytes += db - da;
        }
        uint64_t rb = b < floor ? b : floor;              /* [a, rb): redo */
        if (rb > a)
            redo[nredo++] = (heap_range){a, rb - a};
    }
    bool use_direct = direct_bytes >= STORE_DIRECT_MIN;
    if (!use_direct && ndirect) {
        /* Too little to pay a sync for: it all goes through the redo log. */
        nredo = 0;
        for (size_t i = 0; i < n; i++) {
            uint64_t a = r[i].off, b = r[i].off + r[i].len < fresh ? r[i].off + r[i].len : fresh;
            if (b > a)
                redo[nredo++] = (heap_range){a, b - a};
        }
        ndirect = 0;
    }
    heap_status hs = HEAP_OK;
    if (ndirect) {
        store_hook("direct-pwrite");
        hs = heap_write_ranges(s->heap, direct, ndirect);
    }
    free(direct);
    if (!hs && (ndirect || fresh != UINT64_MAX || heap_size_unsynced(s->heap))) {
        /* Direct bytes, fresh bytes and a grown length must be durable
         * before LMDB's commit refers to them. */
        store_hook("direct-fdatasync");
        hs = heap_sync(s->heap);
    }
    if (hs) {
        /* A failed pwrite or fdatasync may have left pages the kernel now
         * calls clean without writing them: no later sync can be trusted to
         * cover them, so no redo record may ever be deleted by this handle. */
        free(redo);
        store_heap_err(s, hs);
        return handle_failed(s, "nothing committed");
    }

    uint64_t epoch = s->epoch + 1, redo_bytes = 0, high = 0;
    for (size_t i = 0; i < nredo; i++) {
        redo_bytes += redo[i].len;
        if (redo[i].off + redo[i].len > high)
            high = redo[i].off + redo[i].len;
    }
    bool unknown;
    /* A commit that changes heap bytes and nothing else in meta/ goes to
     * the journal: one sync instead of LMDB's two (journal.c). */
    bool journaled = false;
    if (nredo && !ndirect && fresh == UINT64_MAX && !store_has_changes(s)) {
        rc = store_journal_commit(s, epoch, s->redo_last, redo, nredo, NULL, &unknown);
        if (rc && rc != STORE_JOURNAL_NOROOM) {
            free(redo);
            if (!unknown)
                return rc;
            char msg[512];
            snprintf(msg, sizeof msg, "%s", objstore_errmsg());
            s->failed = true;
            return store_err(OBJSTORE_EFAILED, "%s (commit outcome unknown; reopen the store "
                             "to find out)", msg);
        }
        journaled = rc == OBJSTORE_OK;
    }
    for (rc = 0; !journaled;) {
        rc = lmdb_commit(s, epoch, redo, nredo, &unknown);
        if (rc != MDB_MAP_FULL)
            break;
        if ((rc = store_grow_map(s))) {
            free(redo);
            return rc;
        }
    }
    if (rc) {
        free(redo);
        if (unknown) {
            s->failed = true;
            return store_err(OBJSTORE_EFAILED, "%s: commit outcome unknown (LMDB: %s); "
                             "reopen the store to find out", s->dir, mdb_strerror(rc));
        }
        return store_lmdb_err(rc, "commit");
    }
    store_hook(journaled ? "journal-committed" : "lmdb-committed");

    /* Committed.  From here on nothing may report failure (T3). */
    s->epoch = epoch;
    if (nredo)
        s->redo_last = epoch;
    if (!journaled) {
        if (s->synced_epoch > s->deleted_upto) {
            s->deleted_upto = s->synced_epoch;
            s->redo_high = 0;
        }
        if (high > s->redo_high)
            s->redo_high = high;
    }
    s->st_journal_commits += journaled;
    s->st_commits++;
    s->st_redo_bytes += redo_bytes;
    s->st_direct_bytes += (use_direct ? direct_bytes : 0) + fresh_bytes;
    s->redo_since_ckpt += redo_bytes;
    s->g_sealed = epoch;
    store_fold_committed(s);

    hs = heap_write_ranges(s->heap, redo, nredo);
    free(redo);
    if (hs) {
        store_heap_err(s, hs);
        s->failed = true;
        return OBJSTORE_OK;   /* durable in the redo log; the handle is failed */
    }
    if (heap_mark_clean(s->heap)) {
        store_heap_err(s, HEAP_EFAILED);
        s->failed = true;   /* durable, but the heap's mapping is not sound */
        return OBJSTORE_OK;
    }
    s->commits_since_ckpt++;
    /* A full journal checkpoints whatever this commit wrote: groups wait
     * for it (group.c G1). */
    if ((nredo && (s->redo_since_ckpt >= s->opts.checkpoint_bytes ||
                   s->commits_since_ckpt >= STORE_CKPT_COMMITS)) ||
        store_journal_fill_due(s)) {
        if (store_ckpt(s, epoch) == OBJSTORE_OK) {
            s->synced_epoch = epoch;
            s->redo_since_ckpt = 0;
            s->commits_since_ckpt = 0;
            s->st_checkpoints++;
        } else {
            s->failed = true;
        }
    }
    if (heap_private_bytes(s->heap) > STORE_DROP_PRIVATE)
        heap_drop_clean(s->heap);
    return OBJSTORE_OK;
}

static int commit_write(objstore_txn *t)
{
    int rc = commit_prepare(t);
    return rc ? rc : commit_alone(t);
}

int objstore_commit(objstore_txn *t)
{
    if (!t)
        return store_err(OBJSTORE_EINVAL, "commit: no transaction");
    if (!t->write) {
        txn_end(t);
        return OBJSTORE_OK;
    }
    objstore *s = t->s;
    int rc = s->failed ? store_err(OBJSTORE_EFAILED, "%s: the store handle failed earlier",
                                   s->dir)
                       : commit_prepare(t);
    struct store_sealed *g = NULL;
    uint64_t dirty = rc ? 0 : heap_dirty_bytes(s->heap);
    if (!rc && store_group_may_seal(t, dirty)) {
        /* g stays NULL when the transaction's LMDB changes are too large */
        const heap_range *r;
        size_t n = heap_dirty_ranges(s->heap, &r);
        if (n || !dirty)
            rc = store_group_seal(t, r, n, &g);
    }
    if (!rc && !g) {
        /* Alone (G1).  S5: readers in other processes keep the committed
         * files as they are until they close; the commit waits for them. */
        store_group_drain(s);
        rc = s->failed ? store_err(OBJSTORE_EFAILED, "%s: a group commit failed; reopen the "
                                   "store", s->dir)
                       : store_freeze(s);
        if (!rc) {
            rc = commit_alone(t);
            store_thaw(s);
        }
    }
    if (rc && !s->failed) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", objstore_errmsg());
        rollback(s);
        store_err(rc, "%s (transaction rolled back)", msg);
    }
    txn_end(t);   /* the next writer may begin, on top of a sealed commit */
    if (!g)
        return rc;
    store_group_sealed(s);
    return store_group_wait(s, g);
}

/* ---- checkpoint ---- */

/* fdatasync the heap, then delete every redo record (caller holds the
 * store's lock exclusively). */
int store_checkpoint_all(objstore *s)
{
    /* A failed handle may hold heap bytes it could not write (T3): only
     * replay at the next open may drop their redo records. */
    if (s->failed)
        return store_err(OBJSTORE_EFAILED, "%s: checkpoint: the store handle failed; "
                         "the redo log is kept for the next open", s->dir);
    if (s->epoch <= s->deleted_upto)
        return OBJSTORE_OK;
    if (heap_checkpoint(s, s->epoch))
        return handle_failed(s, "checkpoint");   /* as in commit: the redo log stays */
    s->synced_epoch = s->epoch;
    int rc = meta_checkpoint(s, s->epoch, s->epoch, "checkpoint-commit");
    if (rc && store_env_panicked(s)) {
        s->failed = true;
        return store_err(OBJSTORE_EFAILED, "%s: checkpoint: LMDB: %s; reopen the store",
                         s->dir, mdb_strerror(rc));
    }
    if (rc)
        return store_lmdb_err(rc, "checkpoint");
    store_journal_restart(s, s->epoch);
    s->redo_since_ckpt = 0;
    s->st_checkpoints++;
    return OBJSTORE_OK;
}

int objstore_checkpoint(objstore *s)
{
    return store_exclusive(s, store_checkpoint_all, "checkpoint");
}

/* ---- replay (open) ---- */

static int check_record(objstore *s, const MDB_val *k, const MDB_val *v, bool journal,
                        struct redo_hdr *out)
{
    if (k->mv_size != STORE_REDO_KEY)
        return store_err(OBJSTORE_EREDO, "%s: redo key of %zu bytes, not %d", s->dir,
                         k->mv_size, STORE_REDO_KEY);
    const uint8_t *kp = k->mv_data;
    uint64_t epoch = store_redo_key_epoch(k);
    uint32_t seq = (uint32_t)kp[9] << 24 | (uint32_t)kp[10] << 16 | (uint32_t)kp[11] << 8 | kp[12];
    struct redo_hdr h;
    if (v->mv_size < sizeof h)
        return store_err(OBJSTORE_EREDO, "%s: %s (epoch %llu, seq %u) is %zu bytes, "
                         "shorter than its header", s->dir,
                         journal ? "journal entry" : "meta/ redo record",
                         (unsigned long long)epoch, seq, v->mv_size);
    memcpy(&h, v->mv_data, sizeof h);
    const char *why = NULL;
    /* Without a heap (a checker reading meta/ alone, check.c): the largest
     * heap the format allows, 2^32 arenas. */
    uint64_t limit = s->heap ? heap_reserve_size(s->heap)
                             : (uint64_t)UINT32_MAX << HEAP_ARENA_SHIFT;
    if (h.magic != REDO_MAGIC)
        why = "bad magic";
    else if (h.version != REDO_VERSION)
        why = h.version < REDO_VERSION ? "written by an older objstore (redo version 1): "
                                         "open it with that version to replay it"
                                       : "unknown redo version";
    else if (h.epoch != epoch || h.seq != seq)
        why = "header does not match its key";
    else if (memcmp(h.uuid, s->uuid, 16) || h.generation != s->generation)
        why = "written for another heap (uuid or generation)";
    else if (h.nranges > v->mv_size / sizeof(struct redo_range) ||
             h.data_bytes != v->mv_size - sizeof h - (uint64_t)h.nranges * sizeof(struct redo_range))
        why = "sizes do not add up";
    else if (h.nseq == 0 || h.seq >= h.nseq || h.prev_epoch >= h.epoch || h.zero)
        why = "its place in the log (sequence or predecessor) is impossible";
    else if (redo_sum(v->mv_data, v->mv_size) != h.checksum)
        why = "checksum mismatch";
    if (!why) {
        const uint8_t *rp = (const uint8_t *)v->mv_data + sizeof h;
        uint64_t sum = 0;
        for (uint32_t i = 0; i < h.nranges && !why; i++) {
            struct redo_range r;
            memcpy(&r, rp + (size_t)i * sizeof r, sizeof r);
            if (r.len == 0 || r.off >= limit || r.len > limit - r.off)
                why = "a range lies outside the heap's reserved range";
            sum += r.len;
        }
        if (!why && sum != h.data_bytes)
            why = "range lengths do not match the data";
    }
    if (why)
        return store_err(OBJSTORE_EREDO, "%s: %s (epoch %llu, seq %u): %s; "
                         "open refused, nothing changed", s->dir,
                         journal ? "journal entry" : "meta/ redo record",
                         (unsigned long long)epoch, seq, why);
    *out = h;
    return OBJSTORE_OK;
}

int store_redo_check(objstore *s, const MDB_val *k, const MDB_val *v)
{
    struct redo_hdr h;
    return check_record(s, k, v, false, &h);
}

static int apply_record(objstore *s, const MDB_val *v)
{
    struct redo_hdr h;
    memcpy(&h, v->mv_data, sizeof h);
    const uint8_t *rp = (const uint8_t *)v->mv_data + sizeof h;
    const uint8_t *data = rp + (size_t)h.nranges * sizeof(struct redo_range);
    for (uint32_t i = 0; i < h.nranges; i++) {
        struct redo_range r;
        memcpy(&r, rp + (size_t)i * sizeof r, sizeof r);
        heap_status hs = heap_apply(s->heap, r.off, data, r.len, !s->ro);
        if (hs)
            return store_heap_err(s, hs);
        data += r.len;
    }
    return OBJSTORE_OK;
}

/* The chain of T5, walked record by record in key order. */
struct redo_chain {
    uint64_t group;      /* epoch of the records being walked, 0 before any */
    uint32_t nseq, next; /* that commit's record count, the seq expected next */
};

static int chain_missing(objstore *s, const char *fmt, uint64_t a, uint64_t b)
{
    char what[160];
    snprintf(what, sizeof what, fmt, (unsigned long long)a, (unsigned long long)b);
    return store_err(OBJSTORE_EREDO, "%s: meta/ redo log: %s; replaying the rest would mix "
                     "old and new bytes: open refused, nothing changed", s->dir, what);
}

static int chain_step(objstore *s, struct redo_chain *c, const struct redo_hdr *h,
                      uint64_t base)
{
    if (h->epoch != c->group) {
        if (c->group && c->next != c->nseq)
            return chain_missing(s, "the commit of epoch %llu lacks its record %llu",
                                 c->group, c->next);
        if (!c->group && h->prev_epoch > base)
            return chain_missing(s, "the records of epoch %llu are missing (the oldest "
                                 "left is epoch %llu)", h->prev_epoch, h->epoch);
        if (c->group && h->prev_epoch != c->group)
            return chain_missing(s, "the records of epoch %llu are missing (before epoch "
                                 "%llu)", h->prev_epoch, h->epoch);
        c->group = h->epoch;
        c->nseq = h->nseq;
        c->next = 0;
    }
    if (h->seq != c->next || h->nseq != c->nseq)
        return chain_missing(s, "the commit of epoch %llu lacks its record %llu", h->epoch,
                             c->next);
    c->next++;
    return OBJSTORE_OK;
}

/* Reads "redo-head" (T5) into *head; zero when the store never wrote one. */
static int read_head(objstore *s, MDB_txn *txn, struct redo_head *head)
{
    memset(head, 0, sizeof *head);
    MDB_val k = store_redo_head_key, v;
    int rc = mdb_get(txn, s->db_main, &k, &v);
    if (rc == MDB_NOTFOUND)
        return OBJSTORE_OK;
    if (rc)
        return store_lmdb_err(rc, "replay: redo-head");
    if (v.mv_size != sizeof *head)
        return store_err(OBJSTORE_EREDO, "%s: meta/ redo-head holds %zu bytes, not %zu",
                         s->dir, v.mv_size, sizeof *head);
    memcpy(head, v.mv_data, sizeof *head);
    if (head->nseq == 0 || head->zero)
        return store_err(OBJSTORE_EREDO, "%s: meta/ redo-head is malformed", s->dir);
    return OBJSTORE_OK;
}

/* The heap file against meta/ (T6): the file must hold every commit whose
 * records are gone, and no commit meta/ has not seen. */
static int check_heap_age(objstore *s, uint64_t jbase, uint64_t meta_epoch)
{
    uint64_t hc = heap_ckpt_epoch(s->heap);
    if (hc < s->meta_ckpt)
        return store_err(OBJSTORE_EMISMATCH, "%s: heap.%llu holds the store as of epoch %llu, "
                         "but meta/ dropped the redo records up to epoch %llu: the heap file "
                         "is older than meta/ (a restored copy?); open refused",
                         s->dir, (unsigned long long)s->generation, (unsigned long long)hc,
                         (unsigned long long)s->meta_ckpt);
    if (hc > s->epoch)
        return store_err(OBJSTORE_EMISMATCH, "%s: heap.%llu records a checkpoint at epoch "
                         "%llu, but meta/ ends at epoch %llu: meta/ is older than the heap "
                         "file (a restored copy?); open refused",
                         s->dir, (unsigned long long)s->generation, (unsigned long long)hc,
                         (unsigned long long)s->epoch);
    if (jbase > meta_epoch)
        return store_err(OBJSTORE_EMISMATCH, "%s: the journal starts after epoch %llu, but "
                         "meta/ ends at epoch %llu: meta/ is older than the journal (a "
                         "restored copy?); open refused", s->dir, (unsigned long long)jbase,
                         (unsigned long long)meta_epoch);
    if (hc < jbase)
        return store_err(OBJSTORE_EMISMATCH, "%s: heap.%llu holds the store as of epoch %llu, "
                         "but the journal starts after epoch %llu: the heap file is older "
                         "than meta/ and the journal (a restored copy?); open refused",
                         s->dir, (unsigned long long)s->generation, (unsigned long long)hc,
                         (unsigned long long)jbase);
    return OBJSTORE_OK;
}

/* Both logs' records in epoch order (a tie: meta/'s first, and the chain
 * then refuses it). */
struct merged {
    MDB_cursor *c;
    int lrc;                      /* 0 while (lk, lv) is meta/'s next record */
    MDB_val lk, lv;
    const struct store_jrun *j;
    size_t ji;
    uint8_t jkey[STORE_REDO_KEY]; /* a journal record's key, as meta/ would have it */
};

static void merged_start(struct merged *m, MDB_cursor *c, const struct store_jrun *j)
{
    m->c = c;
    m->j = j;
    m->ji = 0;
    m->lrc = store_redo_seek(c, 0, &m->lk, &m->lv);
}

/* 0 with the next record, MDB_NOTFOUND past both logs, or an LMDB code. */
static int merged_next(struct merged *m, MDB_val *k, MDB_val *v, bool *journal)
{
    if (m->lrc && m->lrc != MDB_NOTFOUND)
        return m->lrc;
    bool have_j = m->ji < m->j->n;
    if (m->lrc == MDB_NOTFOUND && !have_j)
        return MDB_NOTFOUND;
    if (m->lrc == 0 && (!have_j || store_redo_key_epoch(&m->lk) <= m->j->e[m->ji].epoch)) {
        *k = m->lk;
        *v = m->lv;
        *journal = false;
        m->lrc = store_redo_next(m->c, &m->lk, &m->lv);   /* read-only: k, v stay */
        return 0;
    }
    const struct store_jentry *e = &m->j->e[m->ji++];
    store_redo_key(m->jkey, e->epoch, 0);
    *k = (MDB_val){STORE_REDO_KEY, m->jkey};
    *v = (MDB_val){e->len, m->j->buf + e->off};
    *journal = true;
    return 0;
}

int store_replay(objstore *s)
{
    struct store_jrun jr;
    int err = store_journal_load(s, &jr);
    if (err)
        return err;
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc) {
        store_journal_free(&jr);
        return store_lmdb_err(rc, "replay");
    }
    struct redo_head head;
    err = read_head(s, txn, &head);
    MDB_cursor *c;
    if (err || (rc = mdb_cursor_open(txn, s->db_main, &c))) {
        mdb_txn_abort(txn);
        store_journal_free(&jr);
        return err ? err : store_lmdb_err(rc, "replay");
    }
    /* J4: every commit up to base is in the heap file, synced. */
    uint64_t base = jr.base > s->meta_ckpt ? jr.base : s->meta_ckpt;
    MDB_val k, v;
    bool journal;
    uint64_t nrec = 0, lmdb_last = 0, lmdb_chained = 0, jlast = 0;
    struct redo_chain chain = {0};
    struct merged m;
    /* Pass 1 checks every record and the chain (T2, T5); pass 2 applies
     * those after base in epoch order. */
    merged_start(&m, c, &jr);
    while (!err && (rc = merged_next(&m, &k, &v, &journal)) == 0) {
        struct redo_hdr h = {0};
        nrec++;
        if ((err = check_record(s, &k, &v, journal, &h)))
            break;
        if (journal)
            jlast = h.epoch;
        else if (h.epoch > lmdb_last)
            lmdb_last = h.epoch;
        if (h.epoch <= base)
            continue;
        if (!journal)
            lmdb_chained = h.epoch;
        err = chain_step(s, &chain, &h, base);
    }
    if (!err && rc != MDB_NOTFOUND)
        err = store_lmdb_err(rc, "replay: read the redo log");
    if (!err && chain.group && chain.next != chain.nseq)
        err = chain_missing(s, "the commit of epoch %llu lacks its record %llu", chain.group,
                            chain.next);
    if (!err && lmdb_last && !head.epoch)
        err = store_err(OBJSTORE_EREDO, "%s: meta/ holds redo records but no redo-head",
                        s->dir);
    if (!err && head.epoch > base && head.epoch > lmdb_chained)
        err = chain_missing(s, "the newest records (epoch %llu, %llu of them) are missing",
                            head.epoch, head.nseq);
    if (!err && lmdb_last > head.epoch)
        err = chain_missing(s, "records reach epoch %llu, past the newest one named "
                            "(epoch %llu)", lmdb_last, head.epoch);
    /* A commit that writes redo records does not write meta/epoch: the
     * head names it (one database page less per commit), or the journal. */
    uint64_t meta_epoch = head.epoch > s->epoch ? head.epoch : s->epoch;
    uint64_t newest = head.epoch > jlast ? head.epoch : jlast;
    if (!err && newest > s->epoch)
        s->epoch = newest;
    if (!err && jr.base > s->epoch)
        s->epoch = jr.base;
    s->redo_last = newest;
    if (!err)
        err = check_heap_age(s, jr.base, meta_epoch);
    if (!err) {
        merged_start(&m, c, &jr);
        while (!err && (rc = merged_next(&m, &k, &v, &journal)) == 0)
            if (store_redo_key_epoch(&k) > base)
                err = apply_record(s, &v);
        if (!err && rc != MDB_NOTFOUND)
            err = store_lmdb_err(rc, "replay: read the redo log");
    }
    mdb_cursor_close(c);
    mdb_txn_abort(txn);
    store_journal_free(&jr);
    if (err || s->ro || (!nrec && !s->j_reset_due))
        return err;
    /* The replayed bytes are in the file: make them durable, drop meta/'s
     * log, begin a new journal run (J5). */
    store_hook("replay-fdatasync");
    if ((err = heap_checkpoint(s, s->epoch)))
        return err;
    if ((rc = meta_checkpoint(s, s->epoch, UINT64_MAX, "replay-commit")))
        return store_lmdb_err(rc, "replay");
    s->synced_epoch = s->epoch;
    store_journal_restart(s, s->epoch);
    return OBJSTORE_OK;
}

/* ---- shrinking (close) ---- */

/* Releases the empty arenas at the heap's tail and shrinks the file, in the
 * order of ARCHITECTURE §10: the new length is committed (redo) and made
 * durable by a checkpoint before the file is cut.  Caller holds the lock, no
 * transaction is open. */
int store_shrink(objstore *s)
{
    s->tx_heap_len = heap_size(s->heap);
    if (!heap_release_tail(s->heap))
        return OBJSTORE_OK;
    objstore_txn t = {.s = s, .write = true};
    int rc = commit_write(&t);
    if (rc) {
        if (!s->failed)
            rollback(s);
        return rc;
    }
    if ((rc = store_checkpoint_all(s)))
        return rc;
    heap_status hs = heap_truncate(s->heap);
    return hs ? store_heap_err(s, hs) : OBJSTORE_OK;
}
