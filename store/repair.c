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

#include <xxhash.h>

#include "heap_format.h"

#include <dirent.h>
#include <ftw.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
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

int ck_discard_redo(struct ck *c, const char *dir, uint64_t from, const uint8_t *uuid,
                    uint64_t generation, uint64_t *lost)
{
    /* The journal first (journal.c J3): its entries from the epoch on, and
     * from any damage on. */
    uint64_t jlost = 0;
    bool remade = false;
    if (uuid) {
        int jrc = store_journal_discard(dir, uuid, generation, from, &jlost, &remade);
        if (jrc)
            return jrc;
    }
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
        mrc = mdb_cursor_open(w, s.db_main, &cur);
    if (!rc && !mrc) {
        MDB_val k, v;
        /* The first record at or past from, a malformed key going by the
         * epoch it sorts at (as the checker names it); everything after
         * it goes too.  Sought again after each deletion, as txn.c's
         * del_redo does. */
        for (mrc = store_redo_seek(cur, 0, &k, &v); mrc == 0 && store_redo_key_epoch(&k) < from;
             mrc = store_redo_next(cur, &k, &v))
            ;
        uint8_t at[512];   /* LMDB's keys are at most 511 bytes */
        size_t atlen = 0;
        if (mrc == 0) {
            atlen = k.mv_size < sizeof at ? k.mv_size : sizeof at;
            memcpy(at, k.mv_data, atlen);
        }
        for (; mrc == 0; k = (MDB_val){atlen, at}, mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE)) {
            if (!k.mv_size || *(const uint8_t *)k.mv_data != STORE_REDO_PREFIX) {
                mrc = MDB_NOTFOUND;   /* past the log */
                break;
            }
            uint64_t e = store_redo_key_epoch(&k);
            if (k.mv_size == STORE_REDO_KEY && e != last) {   /* a commit's records */
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
        MDB_val hk = store_redo_head_key;
        if (!mrc && (mrc = store_redo_last(cur, &k, &v)) == 0 && k.mv_size == STORE_REDO_KEY &&
            v.mv_size >= 80) {
            uint8_t head[16] = {0};
            uint64_t e = store_redo_key_epoch(&k);
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
    *lost = epochs + jlost;
    char what[200] = "";
    if (remade)
        snprintf(what, sizeof what, "a new, empty journal made (the commits the old one "
                 "held are lost with it)%s", records ? "; " : "");
    if (records || (!jlost && !remade))
        snprintf(what + strlen(what), sizeof what - strlen(what), "redo records of epochs %" PRIu64 "..%" PRIu64
                 " dropped (%" PRIu64 " records)%s", lo, hi, records, jlost ? ", and " : "");
    if (remade && !records) {
        ck_action(c, OBJSTORE_C_REDO, from, "%s", what);
        return OBJSTORE_OK;
    }
    if (jlost)
        snprintf(what + strlen(what), sizeof what - strlen(what),
                 "%" PRIu64 " journal entr%s from epoch %" PRIu64, jlost,
                 jlost == 1 ? "y" : "ies", from);
    ck_action(c, OBJSTORE_C_REDO, from, "%s: the last %" PRIu64 " commit%s lost", what, *lost,
              *lost == 1 ? " is" : "s are");
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
        /* Type ids nobody registered: the object keeps its slots and
         * payload, untyped (type 0); the old id is said. */
        for (size_t i = 0; i < c->n; i++) {
            if (c->fl[i] & CK_BAD)
                continue;
            heap_obj *o = heap_obj_at(h, c->off[i]);
            if (o->type <= s->ntypes_committed)
                continue;
            uint32_t old = o->type;
            heap_mark_dirty(h, c->off[i] + 8, 4);
            o->type = 0;
            ck_action(c, OBJSTORE_C_BADTYPE, c->off[i],
                      "object %" PRIu64 ": type id %u (not registered) set to 0, untyped",
                      c->off[i], old);
        }
        /* Objects beyond use: freed (their slots cannot be read). */
        for (size_t i = 0; i < c->n; i++) {
            if (!(c->fl[i] & CK_BAD))
                continue;
            uint64_t off = c->off[i];
            int wrc = store_weak_target_gone(s, off);   /* weak.c W7 */
            if (wrc)
                return wrc;
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
        /* The weak index (weak.c W1), when the check found it wrong: weak
         * references naming no live object read 0, and the index is made
         * anew from the rest, in this transaction's commit. */
        if (c->weak_bad && s->weak_type) {
            s->weak_pairs.n = 0;
            for (size_t i = 0; i < c->n; i++) {
                uint64_t off = c->off[i], target;
                if ((c->fl[i] & CK_BAD) || heap_obj_at(h, off)->type != s->weak_type ||
                    heap_obj_payload_size(h, off) < 8)
                    continue;
                uint8_t *p = heap_obj_payload(h, off);
                memcpy(&target, p, 8);
                if (!target)
                    continue;
                size_t tg = ck_find(c, target);
                if (tg == CK_NONE || (c->fl[tg] & CK_BAD)) {
                    heap_mark_dirty(h, (uint64_t)(p - heap_base(h)), 8);
                    memset(p, 0, 8);
                    ck_action(c, OBJSTORE_C_BADWEAK, off, "weak reference %" PRIu64
                              ": named %" PRIu64 " (no live object), set to none", off,
                              target);
                } else if (!u64vec_push(&s->weak_pairs, target) ||
                           !u64vec_push(&s->weak_pairs, off)) {
                    return store_err(OBJSTORE_ENOMEM, "out of memory");
                }
            }
            s->weak_rebuild = true;
            ck_action(c, OBJSTORE_C_BADWEAK, 0, "weak index rebuilt from the %zu live weak "
                      "references with a target", s->weak_pairs.n / 2);
        } else if (c->weak_bad) {
            s->weak_pairs.n = 0;   /* no weak reference type: the index goes empty */
            s->weak_rebuild = true;
            ck_action(c, OBJSTORE_C_BADWEAK, 0, "weak index emptied (no weak reference "
                      "type is registered)");
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
    if (rc || ck_progress(c, 1, 1) || (c->r->repairs == before && !c->tables_fixed)) {
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

/* ---- the heap header, rebuilt from meta/ ---- */

/* How many arenas the heap has, from the file: arena k counts when its table
 * says so (magic or index k), or when a huge run that starts earlier covers
 * it.  The first arena that does neither ends the heap. */
static uint64_t count_arenas(int fd, uint64_t file_bytes)
{
    uint64_t k = 0, max = file_bytes >> HEAP_ARENA_SHIFT;
    while (k < max) {
        struct heap_arena_table t;
        /* One of magic and index intact is enough: a repair of the
         * tables rewrites the other. */
        if (store_pread_all(fd, &t, 64 + sizeof t.pool, (k << HEAP_ARENA_SHIFT) + HEAP_TABLE_OFFSET) ||
            (t.magic != HEAP_ARENA_MAGIC && t.index != (uint32_t)k))
            break;
        uint64_t span = 1;
        if (t.pool[1].kind == HEAP_POOL_HUGE)
            span = ((uint64_t)t.pool[1].npools + 1) / HEAP_POOLS_PER_ARENA;
        if (span < 1 || span > max - k)
            break;
        k += span;
    }
    return k;
}

int ck_rebuild_header(struct ck *c, const char *dir, uint64_t generation,
                      const uint8_t uuid[16], uint64_t ckpt)
{
    char path[4200], keep[4300];
    snprintf(path, sizeof path, "%s/heap.%" PRIu64, dir, generation);
    snprintf(keep, sizeof keep, "%s/old-header.heap.%" PRIu64, dir, generation);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return store_err(OBJSTORE_EIO, "%s: %s", path, strerror(errno));
    struct stat sb;
    uint8_t old[HEAP_HEADER_SIZE];
    int rc = OBJSTORE_OK;
    if (fstat(fd, &sb) != 0 || store_pread_all(fd, old, sizeof old, 0)) {
        rc = store_err(OBJSTORE_EIO, "%s: cannot read the header: %s", path, strerror(errno));
        goto out;
    }
    uint64_t narenas = count_arenas(fd, (uint64_t)sb.st_size);
    if (narenas == 0) {
        rc = OBJSTORE_OK;   /* no arena validates: the finding stays */
        goto out;
    }
    /* The old bytes are kept, never lost (G4): written and synced first. */
    int kfd = open(keep, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (kfd < 0 || write(kfd, old, sizeof old) != (ssize_t)sizeof old || fsync(kfd) != 0) {
        rc = store_err(OBJSTORE_EIO, "%s: %s", keep, strerror(errno));
        if (kfd >= 0)
            close(kfd);
        goto out;
    }
    close(kfd);
    struct heap_file_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, HEAP_MAGIC, 8);
    h.version = HEAP_FORMAT_VERSION;
    h.header_size = HEAP_HEADER_SIZE;
    h.arena_size = HEAP_ARENA_SIZE;
    h.pool_size = HEAP_POOL_SIZE;
    h.align = HEAP_ALIGN;
    h.nclasses = HEAP_NCLASSES;
    h.table_offset = HEAP_TABLE_OFFSET;
    memcpy(h.uuid, uuid, 16);
    h.generation = generation;
    h.narenas = narenas;
    /* meta/'s "ckpt" is what the store vouches the file holds (txn.c T6). */
    h.ckpt_epoch = ckpt;
    h.checksum = XXH3_64bits(&h, offsetof(struct heap_file_header, checksum));
    /* One 128-byte write inside one sector: the old header or the new. */
    store_hook("heap-pwrite");
    if (pwrite(fd, &h, sizeof h, 0) != (ssize_t)sizeof h) {
        rc = store_err(OBJSTORE_EIO, "%s: pwrite: %s", path, strerror(errno));
        goto out;
    }
    store_hook("heap-fdatasync");
    if (fdatasync(fd) != 0 || fsync_dir(dir) != 0) {
        rc = store_err(OBJSTORE_EIO, "%s: fdatasync: %s", path, strerror(errno));
        goto out;
    }
    ck_action(c, OBJSTORE_C_HEADER, 0,
              "heap header of %s rebuilt from meta/ (%" PRIu64 " arena%s; the old bytes kept "
              "in %s)", path, narenas, narenas == 1 ? "" : "s", keep);
out:
    close(fd);
    return rc;
}

/* ---- allocator metadata, rebuilt from what validates ---- */

static unsigned popcount_bitmap(const uint64_t *b)
{
    unsigned n = 0;
    for (unsigned w = 0; w < HEAP_BITMAP_WORDS; w++)
        n += (unsigned)__builtin_popcountll(b[w]);
    return n;
}

static uint32_t class_blocks(unsigned cls) { return HEAP_POOL_SIZE / heap_class_size(cls); }

/* True when every block the bitmap of pool i marks holds a header whose
 * slots fit a block of class cls: the pool's objects vouch for it. */
static bool small_pool_validates(heap_t *h, uint64_t k, unsigned i, unsigned cls,
                                 const uint64_t *bitmap)
{
    uint32_t size = heap_class_size(cls), nb = class_blocks(cls);
    uint64_t base = (k << HEAP_ARENA_SHIFT) + ((uint64_t)i << HEAP_POOL_SHIFT);
    for (uint32_t b = 0; b < nb; b++) {
        if (!((bitmap[b >> 6] >> (b & 63)) & 1))
            continue;
        const heap_obj *o = heap_obj_at(h, base + (uint64_t)b * size);
        uint64_t pad = (o->rc_bits & HEAP_PAD_MASK) >> HEAP_PAD_SHIFT;
        if (pad >= size || size - pad < HEAP_OBJ_HEADER ||
            (uint64_t)o->nrefs * 8 > size - pad - HEAP_OBJ_HEADER)
            return false;
    }
    return true;
}

/* Fixes, in the private mapping (marked dirty, so the repair's commit
 * writes them through the redo log with everything else), what arena k's
 * table says that its own other fields and the object headers contradict.
 * Returns how many fields it changed. */
static unsigned fix_table(struct ck *c, heap_t *h, uint64_t k)
{
    struct heap_arena_table *t =
        (struct heap_arena_table *)heap_ptr(h, (k << HEAP_ARENA_SHIFT) + HEAP_TABLE_OFFSET);
    uint64_t toff = (k << HEAP_ARENA_SHIFT) + HEAP_TABLE_OFFSET;
    unsigned changed = 0;
    heap_mark_dirty(h, toff, sizeof *t);
    if (t->magic != HEAP_ARENA_MAGIC || t->index != (uint32_t)k) {
        ck_action(c, OBJSTORE_C_HEAP, toff, "arena %" PRIu64 ": table magic %08x and index %u "
                  "rewritten", k, t->magic, t->index);
        t->magic = HEAP_ARENA_MAGIC;
        t->index = (uint32_t)k;
        changed++;
    }
    unsigned run_left = 0, run_at = 0;   /* a run covering the pools after run_at */
    for (unsigned i = 1; i <= HEAP_DATA_POOLS; i++) {
        struct heap_pooldesc *d = &t->pool[i];
        uint64_t at = (k << HEAP_ARENA_SHIFT) + ((uint64_t)i << HEAP_POOL_SHIFT);
        if (run_left) {
            run_left--;
            if (d->kind != HEAP_POOL_RUNCONT || d->npools != i - run_at) {
                ck_action(c, OBJSTORE_C_HEAP, at, "pool at offset %" PRIu64 ": marked as "
                          "pool %u of the run at offset %" PRIu64 " (was kind %u, %u)", at,
                          i - run_at, (k << HEAP_ARENA_SHIFT) + ((uint64_t)run_at << HEAP_POOL_SHIFT),
                          d->kind, d->npools);
                d->kind = HEAP_POOL_RUNCONT;
                d->npools = i - run_at;
                changed++;
            }
            continue;
        }
        if (d->kind == HEAP_POOL_HUGE && i == 1)
            break;   /* whole arenas: not rebuilt here */
        if (d->kind == HEAP_POOL_RUN && d->size) {
            /* Its length, from the continuations that follow it. */
            unsigned n = 1;
            while (i + n <= HEAP_DATA_POOLS && t->pool[i + n].kind == HEAP_POOL_RUNCONT &&
                   t->pool[i + n].npools == n)
                n++;
            if (d->npools != n && d->size > (uint64_t)(n - 1) * HEAP_POOL_SIZE &&
                d->size <= (uint64_t)n * HEAP_POOL_SIZE) {
                ck_action(c, OBJSTORE_C_HEAP, at, "run at offset %" PRIu64 ": %u pools (was "
                          "%u), as its continuations and size say", at, n, d->npools);
                d->npools = n;
                changed++;
            }
            if (d->npools >= 1 && d->npools <= HEAP_DATA_POOLS + 1 - i) {
                run_left = d->npools - 1;
                run_at = i;
            }
            continue;
        }
        bool small_ok = d->cls < HEAP_NCLASSES;
        if (d->kind != HEAP_POOL_SMALL && d->kind != HEAP_POOL_FREE &&
            d->kind != HEAP_POOL_RUNCONT) {
            /* Unknown kind: small when its class, count and bitmap agree and
             * its blocks' headers validate; free when it says nothing. */
            bool empty = !d->cls && !d->nalloc && !d->npools && !d->size;
            if (small_ok && d->nalloc && popcount_bitmap(t->bitmap[i]) == d->nalloc &&
                small_pool_validates(h, k, i, d->cls, t->bitmap[i])) {
                ck_action(c, OBJSTORE_C_HEAP, at, "pool at offset %" PRIu64 ": kind %u set to "
                          "small (class %u, %u blocks, their headers validate)", at, d->kind,
                          d->cls, d->nalloc);
                d->kind = HEAP_POOL_SMALL;
                changed++;
            } else if (empty) {
                ck_action(c, OBJSTORE_C_HEAP, at, "pool at offset %" PRIu64 ": kind %u set to "
                          "free (it describes nothing)", at, d->kind);
                d->kind = HEAP_POOL_FREE;
                changed++;
            }
        }
        if (d->kind == HEAP_POOL_SMALL && small_ok) {
            uint32_t nb = class_blocks(d->cls);
            unsigned lastw = (nb - 1) / 64;
            uint64_t tail = nb % 64 ? ~((UINT64_C(1) << (nb % 64)) - 1) : 0;
            if ((t->bitmap[i][lastw] & tail)) {
                t->bitmap[i][lastw] &= ~tail;
                changed++;
                ck_action(c, OBJSTORE_C_HEAP, at, "pool at offset %" PRIu64 ": bitmap bits "
                          "past its %u blocks cleared", at, nb);
            }
            for (unsigned w = lastw + 1; w < HEAP_BITMAP_WORDS; w++)
                if (t->bitmap[i][w]) {
                    t->bitmap[i][w] = 0;
                    changed++;
                }
            unsigned count = popcount_bitmap(t->bitmap[i]);
            if (count != d->nalloc && small_pool_validates(h, k, i, d->cls, t->bitmap[i])) {
                ck_action(c, OBJSTORE_C_HEAP, at, "pool at offset %" PRIu64 ": count %u set "
                          "to %u, as its bitmap and its blocks' headers say", at, d->nalloc,
                          count);
                d->nalloc = (uint16_t)count;
                changed++;
            }
        }
    }
    return changed;
}

int ck_fix_tables(struct ck *c, objstore *s)
{
    heap_t *h = s->heap;
    uint64_t last = UINT64_MAX;
    heap_status hs;
    while ((hs = heap_rebuild_full(h)) == HEAP_ECORRUPT) {
        uint64_t k = heap_arenas_validated(h);
        if (k == last || k >= heap_size(h) >> HEAP_ARENA_SHIFT)
            return OBJSTORE_ECORRUPT;   /* no progress: the finding stays */
        last = k;
        if (!fix_table(c, h, k))
            return OBJSTORE_ECORRUPT;
        c->tables_fixed = true;
    }
    return hs ? store_heap_err(s, hs) : OBJSTORE_OK;
}

/* ---- meta/, rebuilt from the heap alone ---- */

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    return (flag == FTW_DP ? rmdir(p) : unlink(p)) == 0 || errno == ENOENT ? 0 : -1;
}

/* Removes a meta.new/ an interrupted rebuild left (only ever ours). */
static int ts_rmtree_quiet(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) != 0)
        return 0;
    return nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

#define REBUILD_MAX_TYPES 4096   /* ids above: the walk makes those untyped */

static int put_type_name(MDB_txn *w, objstore *s, uint32_t id)
{
    char name[32];
    snprintf(name, sizeof name, "type#%u", id);
    uint8_t key[4] = {(uint8_t)(id >> 24), (uint8_t)(id >> 16), (uint8_t)(id >> 8), (uint8_t)id};
    MDB_val kn = {strlen(name), name}, vi = {4, key}, ki = {4, key}, vn = {strlen(name), name};
    int rc = mdb_put(w, s->db_types, &kn, &vi, 0);
    return rc ? rc : mdb_put(w, s->db_typeids, &ki, &vn, 0);
}

int ck_rebuild_meta(struct ck *c, const char *dir, uint64_t generation, uint8_t uuid[16],
                    uint64_t *ckpt)
{
    char path[4200], meta[4200], fresh[4200], old[4300];
    snprintf(path, sizeof path, "%s/heap.%" PRIu64, dir, generation);
    snprintf(meta, sizeof meta, "%s/meta", dir);
    snprintf(fresh, sizeof fresh, "%s/meta.new", dir);
    heap_open_opts ho = {.flags = HEAP_OPEN_RDONLY | HEAP_OPEN_NOLOCK | HEAP_OPEN_NOREBUILD};
    char msg[HEAP_MSG_MAX];
    heap_t *h = NULL;
    if (heap_open(path, &ho, &h, msg))
        return OBJSTORE_OK;   /* no heap to build from: the findings stay */
    /* The type ids the objects use: the new meta/ names them all. */
    uint32_t maxtype = 0;
    uint64_t cur = 0, off, size;
    if (heap_rebuild_full(h) == HEAP_OK)
        while (heap_next_live(h, &cur, &off))
            if (heap_check_obj(h, off, &size) == HEAP_OK) {
                uint32_t t = heap_obj_at(h, off)->type;
                if (t > maxtype && t <= REBUILD_MAX_TYPES)
                    maxtype = t;
            }
    memcpy(uuid, heap_uuid(h), 16);
    *ckpt = heap_ckpt_epoch(h);
    heap_close(h);

    /* Built aside in meta.new/, made durable, then swapped in at once. */
    objstore s = {.dir = (char *)dir};
    if (ts_rmtree_quiet(fresh) != 0 || mkdir(fresh, 0755) != 0)
        return store_err(OBJSTORE_EIO, "%s: %s", fresh, strerror(errno));
    int rc = store_env_open(&s, fresh, true);
    if (rc)
        return rc;
    MDB_txn *w;
    int mrc = mdb_txn_begin(s.env, NULL, 0, &w);
    if (!mrc) {
        if ((rc = store_dbs_open(&s, w, true)) ||
            (rc = store_put_u64(w, s.db_meta, "format", STORE_FORMAT_VERSION)) ||
            (rc = store_put_u64(w, s.db_meta, "generation", generation)) ||
            (rc = store_put_u64(w, s.db_meta, "epoch", *ckpt)) ||
            (rc = store_put_u64(w, s.db_meta, "ckpt", *ckpt))) {
            mdb_txn_abort(w);
        } else {
            MDB_val k = {4, "uuid"}, v = {16, uuid};
            mrc = mdb_put(w, s.db_meta, &k, &v, 0);
            for (uint32_t id = 1; !mrc && id <= maxtype; id++)
                mrc = put_type_name(w, &s, id);
            if (mrc)
                mdb_txn_abort(w);
            else
                mrc = mdb_txn_commit(w);
        }
    }
    if (!rc && !mrc)
        mrc = mdb_env_sync(s.env, 1);
    mdb_env_close(s.env);
    if (rc)
        return rc;
    if (mrc)
        return store_lmdb_err(mrc, fresh);
    if (fsync_dir(fresh) != 0)
        return store_err(OBJSTORE_EIO, "%s: fsync: %s", fresh, strerror(errno));
    struct stat sb;
    bool had = lstat(meta, &sb) == 0;
    unsigned n = 1;
    do
        snprintf(old, sizeof old, "%s/meta.damaged-%u", dir, n++);
    while (lstat(old, &sb) == 0 && n < 10000);
    if (had) {
        /* One atomic exchange: meta/ is the old or the new, never absent. */
        if (renameat2(AT_FDCWD, fresh, AT_FDCWD, meta, RENAME_EXCHANGE) != 0 ||
            rename(fresh, old) != 0)
            return store_err(OBJSTORE_EIO, "%s: swap in the new meta/: %s", dir,
                             strerror(errno));
    } else if (rename(fresh, meta) != 0) {
        return store_err(OBJSTORE_EIO, "%s: %s", meta, strerror(errno));
    }
    if (fsync_dir(dir) != 0)
        return store_err(OBJSTORE_EIO, "%s: fsync: %s", dir, strerror(errno));
    ck_action(c, OBJSTORE_C_META, 0, "meta/ rebuilt from %s (%u type%s named type#<id>, epoch "
              "%" PRIu64 ")%s%s", path, maxtype, maxtype == 1 ? "" : "s", *ckpt,
              had ? "; the old one kept as " : "", had ? old : "");
    return OBJSTORE_OK;
}
