/*
 * repair.c -- what objstore_check does with OBJSTORE_CHECK_PREEN or
 * OBJSTORE_CHECK_REPAIR, after the check found problems.
 *
 * Rules:
 *   R1 every change to the heap, the roots and the tables is made inside one
 *      ordinary write transaction of the store and committed by the store's
 *      commit protocol: a crash at any instant leaves the store as it was or
 *      repaired, never a mix (G2, G4).  Dropping redo records is one LMDB
 *      transaction; renaming a stray heap file is one rename.
 *   R2 nothing reachable and intact is lost: only slots that land on no live
 *      object (or on an object whose header is beyond use) are nulled, only
 *      roots naming no live object are removed, only objects whose header is
 *      beyond use are freed.
 *   R3 the repair frees no unreachable object (that is objstore-gc's job):
 *      objects whose count is repaired to 0 stay in the zero-count table,
 *      pinned so that the repair's own commit keeps them (a later read-write
 *      open frees them, as it frees any zero-count entry); --lost-found links
 *      the unreachable groups under roots instead.
 *   R4 preen mode changes only counts and the zero-count and candidate
 *      tables.
 *   R5 each repair is reported in words: object, slot, old and new value.
 */
#include "check_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void ck_action(struct ck *c, int kind, uint64_t oid, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    c->r->repairs++;
    if (c->o->on_repair) {
        objstore_repair_action a = {.kind = kind, .oid = oid, .text = text};
        c->o->on_repair(c->o->arg, &a);
    }
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int ck_repair_files(struct ck *c, const char *dir, uint64_t generation)
{
    char path[4200], to[4300];
    bool changed = false;
    snprintf(path, sizeof path, "%s/lock", dir);
    if (access(path, F_OK) == 0 && c->r->found[OBJSTORE_C_LOCKFILE]) {
        ck_action(c, OBJSTORE_C_LOCKFILE, 0, "%s created", path);
        changed = true;
    }
    if (generation && c->r->found[OBJSTORE_C_STRAY]) {
        DIR *d = opendir(dir);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (strncmp(e->d_name, "heap.", 5))
                continue;
            char *end;
            errno = 0;
            unsigned long long g = strtoull(e->d_name + 5, &end, 10);
            if (*end || !e->d_name[5] || errno || g == generation)
                continue;
            /* Kept, never deleted (G4): renamed out of the heap.N namespace. */
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            snprintf(to, sizeof to, "%s/stray-%s", dir, e->d_name);
            if (rename(path, to) != 0) {
                closedir(d);
                return store_err(OBJSTORE_EIO, "%s: rename: %s", path, strerror(errno));
            }
            ck_action(c, OBJSTORE_C_STRAY, g, "%s renamed %s (kept, not deleted)", path, to);
            changed = true;
        }
        if (d)
            closedir(d);
    }
    if (changed && fsync_dir(dir) != 0)
        return store_err(OBJSTORE_EIO, "%s: fsync: %s", dir, strerror(errno));
    return OBJSTORE_OK;
}

int ck_discard_redo(struct ck *c, const char *dir, uint64_t from, uint64_t *lost)
{
    objstore s = {.dir = (char *)dir};
    char meta[4200];
    snprintf(meta, sizeof meta, "%s/meta", dir);
    int rc = store_env_open(&s, meta, false);
    if (rc)
        return rc;
    MDB_txn *w = NULL, *r = NULL;
    MDB_cursor *cur = NULL;
    uint64_t records = 0, epochs = 0, last = UINT64_MAX, lo = 0, hi = 0;
    int mrc = mdb_txn_begin(s.env, NULL, MDB_RDONLY, &r);
    if (!mrc && !(rc = store_dbs_open(&s, r, false)))
        mrc = mdb_txn_commit(r);   /* keeps the database handles */
    else if (r)
        mdb_txn_abort(r);
    if (!rc && !mrc)
        mrc = mdb_txn_begin(s.env, NULL, 0, &w);
    if (!rc && !mrc)
        mrc = mdb_cursor_open(w, s.db_redo, &cur);
    if (!rc && !mrc) {
        uint8_t key[12] = {0};
        store_be64(key, from);
        MDB_val k, v;
        /* Sought again after each deletion, as txn.c's del_redo does. */
        for (k = (MDB_val){12, key}; (mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE)) == 0;
             k = (MDB_val){12, key}) {
            uint64_t e = k.mv_size >= 8 ? store_get_be64(k.mv_data) : UINT64_MAX;
            if (e != last) {
                epochs++;
                if (!lo)
                    lo = e;
                hi = e;
                last = e;
            }
            records++;
            if ((mrc = mdb_cursor_del(cur, 0)))
                break;
        }
        if (mrc == MDB_NOTFOUND)
            mrc = 0;
        /* The chain (FORMAT.md 2.1) now ends at the newest record left:
         * redo-head names it (nseq, u32 at offset 64 of its header), or
         * goes when no record is left. */
        MDB_val hk = {9, "redo-head"};
        if (!mrc && (mrc = mdb_cursor_get(cur, &k, &v, MDB_LAST)) == 0 && k.mv_size == 12 &&
            v.mv_size >= 80) {
            uint8_t head[16] = {0};
            uint64_t e = store_get_be64(k.mv_data);
            memcpy(head, &e, 8);
            memcpy(head + 8, (const uint8_t *)v.mv_data + 64, 4);
            MDB_val hv = {16, head};
            mrc = mdb_put(w, s.db_main, &hk, &hv, 0);
        } else if (mrc == MDB_NOTFOUND || !mrc) {
            mrc = mdb_del(w, s.db_main, &hk, NULL);
            if (mrc == MDB_NOTFOUND)
                mrc = 0;
        }
        mdb_cursor_close(cur);
        if (!mrc) {
            store_hook("lmdb-commit");
            mrc = mdb_txn_commit(w);
            w = NULL;
        }
    }
    if (w)
        mdb_txn_abort(w);
    mdb_env_close(s.env);
    if (rc)
        return rc;
    if (mrc)
        return store_lmdb_err(mrc, "discard redo records");
    *lost = epochs;
    ck_action(c, OBJSTORE_C_REDO, from,
              "redo records of epochs %" PRIu64 "..%" PRIu64 " dropped (%" PRIu64
              " records): the last %" PRIu64 " commit%s lost", lo, hi, records, epochs,
              epochs == 1 ? " is" : "s are");
    return OBJSTORE_OK;
}

/* A root name lost+found/<oid> that no root has yet. */
static int lost_found_root(struct ck *c, MDB_txn *txn, uint64_t oid, char *name, size_t cap)
{
    for (unsigned k = 0; k < 100; k++) {
        if (k)
            snprintf(name, cap, "lost+found/%" PRIu64 ".%u", oid, k);
        else
            snprintf(name, cap, "lost+found/%" PRIu64, oid);
        MDB_val key = {strlen(name), name}, v;
        if (mdb_get(txn, c->s->db_roots, &key, &v) == MDB_NOTFOUND &&
            !kvmap_get(&c->s->roots_pending, name, strlen(name)))
            return OBJSTORE_OK;
    }
    return store_err(OBJSTORE_EEXIST, "no free lost+found name for %" PRIu64, oid);
}

static int link_lost(struct ck *c, MDB_txn *txn, size_t i)
{
    char name[64];
    uint64_t oid = c->off[i];
    int rc = lost_found_root(c, txn, oid, name, sizeof name);
    if (rc)
        return rc;
    if (kvmap_put(&c->s->roots_pending, name, strlen(name), &oid, 8, false))
        return store_err(OBJSTORE_ENOMEM, "out of memory");
    ck_indeg_add(c, i);
    ck_action(c, OBJSTORE_C_NKINDS, oid, "root '%s' added: it names unreachable object %" PRIu64,
              name, oid);
    return ck_mark_from(c, i);
}

static int repair(struct ck *c, objstore_txn *t, MDB_txn *txn)
{
    objstore *s = c->s;
    heap_t *h = s->heap;
    bool full = c->o->mode == OBJSTORE_CHECK_REPAIR;
    int rc;
    if (full) {
        /* Slots that land on no live object, or on one beyond use: null. */
        for (size_t i = 0; i < c->n; i++) {
            if (c->fl[i] & CK_BAD)
                continue;
            uint64_t off = c->off[i];
            uint32_t nrefs = heap_obj_at(h, off)->nrefs;
            uint64_t *slot = heap_obj_slots(h, off);
            for (uint32_t j = 0; j < nrefs; j++) {
                if (!slot[j])
                    continue;
                size_t tg = ck_find(c, slot[j]);
                if (tg != CK_NONE && !(c->fl[tg] & CK_BAD))
                    continue;
                uint64_t old = slot[j];
                heap_mark_dirty(h, off + HEAP_OBJ_HEADER + (uint64_t)j * 8, 8);
                slot[j] = 0;
                ck_action(c, OBJSTORE_C_DANGLING, off,
                          "object %" PRIu64 " slot %u: was %" PRIu64 " (%s), set to null", off,
                          j, old, tg == CK_NONE ? "no live object" : "an object beyond use");
            }
        }
        /* Objects beyond use: freed (their slots cannot be read). */
        for (size_t i = 0; i < c->n; i++) {
            if (!(c->fl[i] & CK_BAD))
                continue;
            uint64_t off = c->off[i];
            heap_status hs = heap_free(h, off);
            if (hs)
                return store_heap_err(s, hs);
            oidset_remove(&s->zct, off);
            oidset_remove(&s->cand, off);
            ck_action(c, OBJSTORE_C_BADOBJ, off,
                      "object %" PRIu64 " removed: its header is beyond use", off);
        }
        /* Roots naming no live object (or one beyond use): removed. */
        for (size_t i = 0; i < c->nbadroots; i++) {
            struct ck_root *br = &c->badroots[i];
            if (kvmap_put(&s->roots_pending, br->name, br->len, NULL, 0, true))
                return store_err(OBJSTORE_ENOMEM, "out of memory");
            ck_action(c, OBJSTORE_C_BADROOT, br->oid,
                      "root '%.*s' removed (it named %" PRIu64 ")",
                      (int)(br->len > 200 ? 200 : br->len), br->name, br->oid);
        }
        /* lost+found: heads first (nothing points at them), then whatever
         * a head does not reach (cycles). */
        if (c->o->flags & OBJSTORE_CHECK_LOST_FOUND) {
            for (size_t i = 0; i < c->n; i++)
                if (!(c->fl[i] & (CK_MARK | CK_BAD)) && ck_indeg(c, i) == 0 &&
                    (rc = link_lost(c, txn, i)))
                    return rc;
            for (size_t i = 0; i < c->n; i++)
                if (!(c->fl[i] & (CK_MARK | CK_BAD)) && (rc = link_lost(c, txn, i)))
                    return rc;
        }
    }
    /* Counts: the in-degree.  At 0: in the zero-count table, pinned (R3). */
    for (size_t i = 0; i < c->n; i++) {
        if (c->fl[i] & CK_BAD)
            continue;
        uint64_t off = c->off[i], want = ck_indeg(c, i);
        uint64_t have = heap_obj_refcount(heap_obj_at(h, off));
        if (have != want) {
            if (want > HEAP_MAX_REFCOUNT)
                return store_err(OBJSTORE_EOVERFLOW, "object %" PRIu64 ": %" PRIu64
                                 " references exceed the largest count", off, want);
            heap_status hs = heap_obj_set_refcount(h, off, want);
            if (hs)
                return store_heap_err(s, hs);
            ck_action(c, OBJSTORE_C_COUNT, off, "object %" PRIu64 ": count %" PRIu64
                      " set to %" PRIu64, off, have, want);
        }
        bool in_zct = oidset_has(&s->zct, off);
        if (want == 0) {
            if (!in_zct) {
                if ((rc = oidset_add(&s->zct, off)))
                    return rc;
                ck_action(c, OBJSTORE_C_LEAK, off, "object %" PRIu64 ": added to the "
                          "zero-count table (nothing points at it)", off);
            }
            if ((rc = objstore_pin(t, off)))
                return rc;
        } else if (in_zct) {
            oidset_remove(&s->zct, off);
            ck_action(c, OBJSTORE_C_BADZCT, off, "zero-count entry %" PRIu64 " dropped (count %"
                      PRIu64 ")", off, want);
        }
    }
    /* Stale entries: tables naming no live object. */
    oidset *sets[2] = {&s->zct, &s->cand};
    for (int d = 0; d < 2; d++) {
        uint64_t oid;
        for (size_t i = 0; u64map_next(&sets[d]->committed, &i, &oid, NULL);) {
            size_t k = ck_find(c, oid);
            bool gone = k == CK_NONE || (c->fl[k] & CK_BAD);
            if (!gone)
                continue;
            oidset_remove(sets[d], oid);
            ck_action(c, d ? OBJSTORE_C_BADCAND : OBJSTORE_C_BADZCT, oid,
                      "%s entry %" PRIu64 " dropped (no live object)",
                      d ? "cycle candidate" : "zero-count", oid);
        }
    }
    return OBJSTORE_OK;
}

int ck_repair_store(struct ck *c)
{
    objstore *s = c->s;
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc)
        return store_lmdb_err(rc, "repair");
    rc = ck_walk(c, txn);
    if (rc || c->stop) {
        mdb_txn_abort(txn);
        return rc;
    }
    objstore_txn *t;
    if ((rc = store_write_begin(s, &t))) {
        mdb_txn_abort(txn);
        return rc;
    }
    uint64_t before = c->r->repairs;
    rc = repair(c, t, txn);
    mdb_txn_abort(txn);
    if (rc || ck_progress(c, 1, 1) || c->r->repairs == before) {
        objstore_abort(t);   /* nothing of it reaches a file */
        if (c->stop)
            c->r->repairs = before;
        return rc;
    }
    if ((rc = objstore_commit(t)))
        return rc;
    c->r->repaired = 1;
    return OBJSTORE_OK;
}
