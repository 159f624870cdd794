/*
 * compact.c -- compaction: a new heap generation holding only what the roots
 * reach, packed in breadth-first order, switched to in one LMDB transaction
 * (ARCHITECTURE §2, §7); and the removal of generation files a crashed
 * compaction left.
 *
 * The steps, the store's write lock held throughout:
 *   1. checkpoint: the redo log is empty and the old file current;
 *   2. create STORE/heap.<g+1> (heap_create: same uuid, generation g+1,
 *      written and fsynced), copy into it (gc_copy), release its empty tail,
 *      write it back, cut it to length, fdatasync it, fsync the directory;
 *   3. ONE LMDB transaction: meta generation = g+1, every root rewritten,
 *      the zero-count set = copied objects at count 0 (pinned ones), the
 *      candidate set and the redo log emptied, the epoch bumped and "ckpt"
 *      set to it (the new file's header carries the same checkpoint epoch,
 *      written before its fdatasync); types and user metadata are untouched.  mdb_txn_commit is the commit point;
 *   4. map the new file, unlink the old one, fsync the directory; tell the
 *      caller old -> new.
 *
 * Rules:
 *   K1 before step 3 commits, the store is the old one: meta/ names
 *      generation g, whose file is untouched; heap.<g+1> is a stray.  After,
 *      it is the new one: meta/ names g+1, whose file was durable before the
 *      commit; heap.<g> is a stray.  Open removes strays (read-write opens
 *      only), so a crash at any instant leaves exactly the old store or the
 *      new one.
 *   K2 any failure before the commit (a full disk, I/O, an interrupt)
 *      removes heap.<g+1> and leaves the store as it was, still open.
 *   K3 a failure after the commit cannot undo it: the new store is on disk;
 *      if the new file cannot be mapped the handle fails (reopen), and a
 *      failed unlink of the old file is left to the next open.
 */
#include "gcstore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- strays ---- */

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static void heap_path(char *buf, size_t n, const char *dir, uint64_t gen)
{
    snprintf(buf, n, "%s/heap.%llu", dir, (unsigned long long)gen);
}

/* True when name is "heap.N" with N a decimal generation other than gen. */
static bool is_stray(const char *name, uint64_t gen)
{
    if (strncmp(name, "heap.", 5) != 0 || !name[5])
        return false;
    uint64_t g = 0;
    for (const char *p = name + 5; *p; p++) {
        if (*p < '0' || *p > '9' || g > UINT64_MAX / 10 - 1)
            return false;
        g = g * 10 + (uint64_t)(*p - '0');
    }
    return g != gen;
}

int store_remove_stray_heaps(objstore *s)
{
    if (s->ro)
        return OBJSTORE_OK;
    DIR *d = opendir(s->dir);
    if (!d)
        return store_err(OBJSTORE_EIO, "%s: cannot read the store directory: %s", s->dir,
                         strerror(errno));
    int removed = 0, rc = OBJSTORE_OK;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!is_stray(e->d_name, s->generation))
            continue;
        if (unlinkat(dirfd(d), e->d_name, 0) != 0 && errno != ENOENT) {
            rc = store_err(OBJSTORE_EIO, "%s/%s: cannot remove a heap file of another "
                           "generation: %s", s->dir, e->d_name, strerror(errno));
            break;
        }
        removed++;
    }
    closedir(d);
    if (!rc && removed && fsync_dir(s->dir) != 0)
        rc = store_err(OBJSTORE_EIO, "%s: fsync: %s", s->dir, strerror(errno));
    return rc;
}

/* ---- compaction ---- */

struct cctx {
    objstore_gc_options o;
    objstore_oid_map_fn map;
    void *map_arg;
    objstore_gc_stats *st;
};

static _Thread_local struct cctx *tl_compact;

static int copy_tick(void *ctx, uint64_t copied)
{
    struct cctx *c = ctx;
    return c->o.progress &&
           c->o.progress(c->o.progress_arg, "copy", copied, c->st->objects_before);
}

/* Step 3: the switch, as one LMDB transaction; returns an LMDB code. */
static int switch_txn(objstore *s, uint64_t gen, const store_rootlist *l, const u64map *map,
                      const struct u64vec *zero, bool *unknown)
{
    MDB_txn *w;
    *unknown = false;
    int rc = mdb_txn_begin(s->env, NULL, 0, &w);
    if (rc)
        return rc;
    uint64_t epoch = s->epoch + 1;
    MDB_val gk = {10, "generation"}, gv = {8, &gen};
    MDB_val ek = {5, "epoch"}, ev = {8, &epoch};
    MDB_val ck = {4, "ckpt"}, cv = {8, &epoch};
    /* The new file's header says it holds everything up to this epoch
     * (ckpt_epoch), and so does meta/'s "ckpt": no redo record is needed
     * (redo-head keeps naming an older epoch, at most "ckpt": nothing is
     * missing from the log). */
    if ((rc = mdb_put(w, s->db_meta, &gk, &gv, 0)) ||
        (rc = mdb_put(w, s->db_meta, &ek, &ev, 0)) ||
        (rc = mdb_put(w, s->db_meta, &ck, &cv, 0)) ||
        (rc = store_del_redo(s, w, UINT64_MAX)) ||
        (rc = mdb_drop(w, s->db_zct, 0)) || (rc = mdb_drop(w, s->db_cand, 0)) ||
        (rc = store_weak_switch(s, w)))   /* weak.c W7 */
        goto fail;
    for (size_t i = 0; i < l->n; i++) {
        if (!l->name[i])
            continue;
        uint64_t *nw = u64map_find(map, l->oid[i]);
        if (!nw) {
            rc = EINVAL;   /* cannot happen: every root was copied */
            goto fail;
        }
        MDB_val k = {l->len[i], l->name[i]}, v = {8, nw};
        if ((rc = mdb_put(w, s->db_roots, &k, &v, 0)))
            goto fail;
    }
    for (size_t i = 0; i < zero->n; i++) {
        uint8_t key[8];
        store_be64(key, zero->v[i]);
        MDB_val k = {8, key}, v = {0, ""};
        if ((rc = mdb_put(w, s->db_zct, &k, &v, 0)))
            goto fail;
    }
    store_hook("compact-commit");
    rc = mdb_txn_commit(w);
    if (rc == EIO)
        *unknown = true;
    return rc;
fail:
    mdb_txn_abort(w);
    return rc;
}

/* Step 4's RAM side: the handle now serves the new generation. */
static void remap_sets(objstore *s, const u64map *map, const struct u64vec *zero)
{
    oidset_free(&s->zct);
    oidset_free(&s->cand);
    for (size_t i = 0; i < zero->n; i++)
        u64map_upsert(&s->zct.committed, zero->v[i], NULL);
    pthread_mutex_lock(&s->pin_lock);
    u64map pins = {0}, unpinned = {0};
    uint64_t k, v;
    for (size_t i = 0; u64map_next(&s->pins, &i, &k, &v);) {
        uint64_t *nw = u64map_find(map, k), *p;
        if (nw && (p = u64map_upsert(&pins, *nw, NULL)))
            *p = v;
    }
    for (size_t i = 0; u64map_next(&s->unpinned, &i, &k, NULL);) {
        uint64_t *nw = u64map_find(map, k);
        if (nw)
            u64map_upsert(&unpinned, *nw, NULL);
    }
    u64map_free(&s->pins);
    u64map_free(&s->unpinned);
    s->pins = pins;
    s->unpinned = unpinned;
    pthread_mutex_unlock(&s->pin_lock);
}

static int compact_locked(objstore *s)
{
    struct cctx *c = tl_compact;
    objstore_gc_stats *st = c->st;
    heap_stats hst;
    heap_get_stats(s->heap, &hst);
    st->objects_before = hst.live_blocks;
    st->bytes_before = hst.live_bytes;
    st->file_bytes_before = heap_file_size(s->heap);
    st->generation = s->generation;

    int rc = store_checkpoint_all(s);   /* step 1 */
    if (rc)
        return rc;
    MDB_txn *rt;
    int mrc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &rt);
    if (mrc)
        return store_lmdb_err(mrc, "compact: read roots");
    store_rootlist l;
    rc = store_rootlist_load(s, rt, true, &l);
    mdb_txn_abort(rt);
    if (rc)
        return rc;

    uint64_t gen = s->generation + 1;
    char newp[4096], oldp[4096], msg[HEAP_MSG_MAX];
    heap_path(newp, sizeof newp, s->dir, gen);
    heap_path(oldp, sizeof oldp, s->dir, s->generation);
    unlink(newp);   /* a stray from a crashed run (open removes them too) */

    /* Step 2. */
    heap_t *dst = NULL;
    u64map map = {0};
    struct u64vec zero = {0};
    store_hook("compact-create");
    heap_create_opts co = {.generation = gen, .uuid = s->uuid};
    heap_status hs = heap_create(newp, &co, msg);
    if (hs) {
        rc = store_err((int)hs, "compact: %s", msg);
        goto out;
    }
    heap_open_opts oo = {.flags = HEAP_OPEN_NOLOCK, .reserve_bytes = s->opts.max_heap_size};
    if ((hs = heap_open(newp, &oo, &dst, msg))) {
        rc = store_err((int)hs, "compact: %s", msg);
        goto out_unlink;
    }
    gc_roots it = store_rootlist_iter(&l);
    uint64_t bytes = 0;
    hs = gc_copy(s->heap, dst, &it, &map, copy_tick, c, &bytes);
    if (hs == HEAP_EINVAL) {   /* the progress callback asked to stop (K2) */
        st->interrupted = 1;
        goto out_unlink;
    }
    if (hs == HEAP_ECORRUPT || hs == HEAP_EBADOFF) {
        rc = store_gc_err(s, hs, "compact");
        goto out_unlink;
    }
    if (hs) {
        rc = store_err((int)hs, "compact: %s: %s", newp, heap_errmsg(dst));
        goto out_unlink;
    }
    uint64_t k, v;
    for (size_t i = 0; u64map_next(&map, &i, &k, &v);)
        if (heap_obj_refcount(heap_obj_at(dst, v)) == 0 && !u64vec_push(&zero, v)) {
            rc = store_err(OBJSTORE_ENOMEM, "compact: out of memory");
            goto out_unlink;
        }
    if ((rc = store_weak_compact(s, dst, &map)))   /* weak.c W7 */
        goto out_unlink;
    heap_release_tail(dst);
    store_hook("compact-pwrite");
    /* The header's checkpoint epoch is the switch's epoch (T6 of txn.c):
     * written after the write-back, so the header's page is clean. */
    if ((hs = heap_writeback(dst)) || (hs = heap_write_ckpt(dst, s->epoch + 1)) ||
        (hs = heap_truncate(dst)) || (hs = heap_sync(dst))) {
        rc = store_err((int)hs, "compact: %s", heap_errmsg(dst));
        goto out_unlink;
    }
    st->reachable = map.n;
    st->reachable_bytes = bytes;
    st->file_bytes_after = heap_file_size(dst);
    heap_close(dst);
    dst = NULL;
    store_hook("compact-dirsync");
    if (fsync_dir(s->dir) != 0) {
        rc = store_err(OBJSTORE_EIO, "compact: %s: fsync: %s", s->dir, strerror(errno));
        goto out_unlink;
    }
    if (c->o.progress && c->o.progress(c->o.progress_arg, "switch", map.n, map.n)) {
        st->interrupted = 1;
        goto out_unlink;
    }

    /* Step 3: the commit point. */
    bool unknown;
    for (;;) {
        mrc = switch_txn(s, gen, &l, &map, &zero, &unknown);
        if (mrc != MDB_MAP_FULL)
            break;
        if ((rc = store_grow_map(s)))
            goto out_unlink;
    }
    if (mrc) {
        if (unknown) {
            s->failed = true;   /* K3: the file must stay, it may be the store */
            rc = store_err(OBJSTORE_EFAILED, "%s: compaction's switch: outcome unknown "
                           "(LMDB: %s); reopen the store", s->dir, mdb_strerror(mrc));
            goto out;
        }
        rc = store_lmdb_err(mrc, "compact: switch");
        goto out_unlink;
    }
    store_hook("compact-committed");

    /* Step 4 (K3). */
    s->generation = gen;
    s->epoch++;
    s->synced_epoch = s->deleted_upto = s->meta_ckpt = s->epoch;
    s->redo_high = s->redo_since_ckpt = s->commits_since_ckpt = 0;
    s->st_commits++;
    /* The journal's run belongs to the old heap (J6): a new one, or none
     * until the next checkpoint makes one. */
    store_journal_restart(s, s->epoch);
    oo.flags = HEAP_OPEN_NOLOCK | HEAP_OPEN_NOREBUILD;
    heap_t *nh = NULL;
    if ((hs = heap_open(newp, &oo, &nh, msg)) || (hs = heap_rebuild(nh))) {
        if (nh)
            heap_close(nh);
        s->failed = true;
        rc = store_err((int)hs, "%s: compaction committed, but the new heap file cannot be "
                       "mapped: %s; reopen the store", s->dir, msg);
        goto out;
    }
    heap_close(s->heap);
    s->heap = nh;
    s->tx_heap_len = heap_size(nh);
    remap_sets(s, &map, &zero);
    store_weak_switched(s);
    st->commits = 1;
    st->generation = gen;
    st->freed = st->objects_before - map.n;
    st->freed_bytes = st->bytes_before > bytes ? st->bytes_before - bytes : 0;
    st->garbage = st->freed;
    st->garbage_bytes = st->freed_bytes;
    /* Under OBJSTORE_SYNC_RELAXED meta/ is not flushed at commit: the old
     * file may go only once the switch is on disk (else it stays, a stray
     * for the next open to remove). */
    bool durable = s->opts.sync != OBJSTORE_SYNC_RELAXED || mdb_env_sync(s->env, 1) == 0;
    store_hook("compact-unlink");
    if (durable && unlink(oldp) == 0) {
        store_hook("compact-dirsync");
        fsync_dir(s->dir);   /* if this fails, the next open removes the stray */
    }
    if (c->map)
        for (size_t i = 0; u64map_next(&map, &i, &k, &v);)
            c->map(c->map_arg, k, v);
    goto out;

out_unlink:
    if (dst)
        heap_close(dst);
    dst = NULL;
    unlink(newp);
    fsync_dir(s->dir);
    st->file_bytes_after = st->file_bytes_before;
out:
    if (dst)
        heap_close(dst);
    u64map_free(&map);
    free(zero.v);
    store_rootlist_free(&l);
    return rc;
}

int objstore_compact(objstore *s, const objstore_gc_options *opts, objstore_oid_map_fn map,
                     void *map_arg, objstore_gc_stats *stats)
{
    objstore_gc_stats local;
    objstore_gc_stats *st = stats ? stats : &local;
    memset(st, 0, sizeof *st);
    if (!s)
        return store_err(OBJSTORE_EINVAL, "compact: no store");
    if (opts && opts->dry_run)
        return objstore_full_collect(s, opts, st);
    struct cctx c = {.map = map, .map_arg = map_arg, .st = st};
    if (opts)
        c.o = *opts;
    tl_compact = &c;
    int rc = store_exclusive(s, compact_locked, "compact");
    tl_compact = NULL;
    return rc;
}
