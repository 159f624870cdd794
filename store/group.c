/*
 * group.c -- group commit: many writer threads, one sync per group.
 *
 * A durable commit costs a sync, and a commit that holds the write lock
 * through its sync makes every other writer wait for it.  So a commit with
 * other writers behind it (waiting for the write lock, or sealed before it
 * and not yet durable) does not sync under the lock.  It seals: it copies its
 * redo bytes, records its LMDB changes (roots, metadata, types, sets, weak
 * pairs) in a batch, takes the next epoch, folds its RAM state as committed
 * and lets the write lock go, so the next writer builds on it at once.
 * Sealed transactions queue in epoch order.  One of the waiting threads at a
 * time is the leader: it takes the whole queue, writes it as one LMDB
 * transaction (one sync for all of them), pwrites each one's redo bytes into
 * the heap file from its copy, and wakes the group.  Each commit still
 * returns only once it is durable.
 *
 * Rules:
 *   G1 only a small transaction seals: one that neither grows the heap nor
 *      creates meta/'s weak database, whose redo fits STORE_GROUP_BYTES, when
 *      no checkpoint or page drop is due and meta/ has STORE_GROUP_ROOM free
 *      (the map cannot grow while a leader's transaction is open).  Any other
 *      commit drains the queue and commits alone under the write lock (txn.c),
 *      and so does a commit nobody is behind: no writer waiting, none pending,
 *      and no other thread committed in the last GROUP_RECENT_NS (a thread
 *      about to begin again would otherwise find the lock held through the
 *      sync).  One thread alone commits as it always did.
 *   G2 nothing relies on the committed files while a sealed transaction is
 *      pending: a read transaction, once it holds its side of the lock, waits
 *      until every sealed epoch is durable (so LMDB and the mapping agree for
 *      it, and it never sees a commit that could still fail); a write
 *      transaction drains the queue before it reads LMDB (store_rtxn, weak
 *      references), aborts, commits alone, checkpoints, compacts or closes (so
 *      heap rule D1, a clean line equals the file, holds again first).
 *   G3 the leader merges the group's copies, the newest bytes of each line
 *      winning, into one redo record set at the group's last epoch (the group
 *      commits atomically, so it replays whole), and writes the same merged
 *      bytes into the heap file after LMDB's commit (T1) -- never bytes from
 *      the mapping, which holds the next writer's uncommitted changes.
 *   G4 a group whose LMDB commit fails fails every transaction in it, and the
 *      handle: the transactions sealed after them built on their changes.
 *      Every commit that returned success is durable; reopening the store
 *      finds those and none of the failed group's -- unless LMDB's outcome
 *      is unknown (an I/O error inside mdb_txn_commit), which the message
 *      says, and then the group is there whole or not at all.  (A commit that
 *      runs alone still rolls back only itself.)
 *   G5 the leader owns the commit state that only commits touch (redo_last,
 *      redo_high, deleted_upto) while it runs; everyone else touches it only
 *      after draining, under the write lock.  The checkpoint counters are
 *      kept under g_mutex, and freeze_depth, between leaders, under
 *      g_freeze_m (G8).
 *   G6 a new leader first gathers, for at most the last group's sync (and
 *      GATHER_MAX_NS): while a writer holds or waits for the write lock, it
 *      waits for that writer to seal; and it waits until the queue holds
 *      as many transactions as it expects when it starts -- those queued
 *      and those of groups not yet written, whose threads are about to
 *      return (not its own, if an earlier group took it), or as many as
 *      the last group held, if more (its threads, just returned, begin
 *      again).  Otherwise the writers woken by one group would reach the
 *      queue just after the next leader took it, and the threads would
 *      split into two groups taking turns, each paying a sync for half of
 *      them.  It stops at once when a drain or a reader waits for the queue
 *      (the lock holder would wait for the leader, not seal, and the drain
 *      or reader would wait for the gather) or the handle has failed.  The
 *      threads of a group may not come back within a sync (they work
 *      between commits): a gather cut by its cap short of a count that
 *      counted them makes the next GATHER_BACKOFF gathers expect only the
 *      last group's size, which is what came.
 *   G7 a write transaction may look roots up without draining: g_roots holds
 *      every root change sealed since the queue was last found idle, newest
 *      value winning, so it and any LMDB snapshot taken since then give the
 *      sealed state.  It is cleared only by a drain (under the write lock),
 *      which bumps g_roots_gen; a root snapshot older than that is retaken.
 *      Root iteration, metadata and everything else still drain (G2).
 *   G8 a leader hands the lead on as soon as its group's LMDB commit
 *      returns, waking the thread at the head of the queue first, and only
 *      then writes the group's lines into the heap file: the next group's
 *      sync runs meanwhile.  Groups write their lines in turn (g_turn_*),
 *      and a group's transactions return, and its epoch shows, only once
 *      its lines are written; a drain waits for every group to be written
 *      (groups_unwritten), so G2 holds as before.  Overlapping leaders share the
 *      freeze lock: its depth is counted under g_freeze_m.
 *   G9 a group none of whose transactions changes meta/ (their batches are
 *      empty) goes to the journal (journal.c) as one entry at its last
 *      epoch, the merged lines of G3, with one fdatasync, instead of an LMDB
 *      transaction with two; when it does not fit, through LMDB.  Only
 *      leaders touch the journal while groups are pending (alone commits
 *      and checkpoints drain first); a group that fills the run past three
 *      quarters sets g_jfull, and the next commit runs alone and
 *      checkpoints (G1), which begins a new run.
 */
#include "store_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GATHER_MAX_NS 5000000u   /* G6's wait, at most */
#define GATHER_BACKOFF 8u        /* G6: gathers that expect no returning thread */
#define GROUP_RECENT_NS 2000000u /* G1: another thread's commit this recent */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- LMDB batches ---- */

struct wb_op {
    MDB_dbi dbi;
    uint32_t del;
    uint32_t klen;
    uint32_t vlen;
};

static int wb_add(store_wbatch *b, MDB_dbi db, bool del, const void *k, size_t klen,
                  const void *v, size_t vlen)
{
    if (klen > UINT32_MAX || vlen > UINT32_MAX)
        return EINVAL;
    size_t need = (sizeof(struct wb_op) + klen + vlen + 7) & ~(size_t)7;
    if (b->len + need > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1024;
        while (cap < b->len + need)
            cap *= 2;
        uint8_t *p = realloc(b->buf, cap);
        if (!p)
            return ENOMEM;
        b->buf = p;
        b->cap = cap;
    }
    struct wb_op op = {db, del, (uint32_t)klen, (uint32_t)vlen};
    uint8_t *p = b->buf + b->len;
    memcpy(p, &op, sizeof op);
    memcpy(p + sizeof op, k, klen);
    if (vlen)
        memcpy(p + sizeof op + klen, v, vlen);
    b->len += need;
    return 0;
}

int store_wb_put(store_wbatch *b, MDB_dbi db, const void *k, size_t klen, const void *v,
                 size_t vlen)
{
    if (!b->txn)
        return wb_add(b, db, false, k, klen, v, vlen);
    MDB_val kk = {klen, (void *)k}, vv = {vlen, (void *)v};
    return mdb_put(b->txn, db, &kk, &vv, 0);
}

int store_wb_del(store_wbatch *b, MDB_dbi db, const void *k, size_t klen)
{
    if (!b->txn)
        return wb_add(b, db, true, k, klen, NULL, 0);
    MDB_val kk = {klen, (void *)k};
    int rc = mdb_del(b->txn, db, &kk, NULL);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int wb_apply(const store_wbatch *b, MDB_txn *w)
{
    store_wbatch direct = {.txn = w};
    for (size_t at = 0; at < b->len;) {
        struct wb_op op;
        memcpy(&op, b->buf + at, sizeof op);
        const uint8_t *k = b->buf + at + sizeof op;
        int rc = op.del ? store_wb_del(&direct, op.dbi, k, op.klen)
                        : store_wb_put(&direct, op.dbi, k, op.klen, k + op.klen, op.vlen);
        if (rc)
            return rc;
        at += (sizeof op + op.klen + op.vlen + 7) & ~(size_t)7;
    }
    return 0;
}

/* ---- the queue ---- */

struct store_sealed {
    uint64_t epoch;
    heap_range *redo;
    size_t nredo;
    uint8_t *data;            /* the ranges' bytes, in order */
    uint64_t bytes, high;     /* redo bytes; end of the highest range */
    store_wbatch ops;
    int rc;                   /* set by the leader */
    bool taken;               /* in a group a leader took (G6) */
    bool done;
    pthread_cond_t cv;        /* its thread waits here: done, or to lead (G8) */
    char msg[400];
    struct store_sealed *next;
};

static void sealed_free(struct store_sealed *g)
{
    pthread_cond_destroy(&g->cv);
    free(g->redo);
    free(g->data);
    free(g->ops.buf);
    free(g);
}

void store_group_init(objstore *s)
{
    pthread_mutex_init(&s->g_mutex, NULL);
    pthread_cond_init(&s->g_cond, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->g_gather, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&s->g_freeze_m, NULL);
    s->g_sync_ns = 0;
    s->g_head = s->g_tail = NULL;
    s->g_leading = false;
    s->g_turn_next = s->g_turn_done = 0;
    s->g_pending_bytes = 0;
    s->g_queued = s->g_unwritten_n = s->g_last_n = 0;
    s->g_gather_skip = 0;
    s->g_sealed = s->epoch;
}

void store_group_destroy(objstore *s)
{
    kvmap_clear(&s->g_roots);
    pthread_cond_destroy(&s->g_cond);
    pthread_cond_destroy(&s->g_gather);
    pthread_mutex_destroy(&s->g_freeze_m);
    pthread_mutex_destroy(&s->g_mutex);
}

/* Groups taken by a leader whose lines are not yet written (G8): each
 * takes a turn when it starts and gives it back once written.  Under
 * g_mutex. */
static uint64_t groups_unwritten(const objstore *s)
{
    return s->g_turn_next - s->g_turn_done;
}

uint64_t store_epoch(objstore *s)
{
    return atomic_load(&s->epoch);
}

void store_group_drain(objstore *s)
{
    pthread_mutex_lock(&s->g_mutex);
    if (s->g_head || s->g_leading || groups_unwritten(s)) {
        s->g_waiters++;
        pthread_cond_signal(&s->g_gather);   /* G6: do not wait for this thread */
        while (s->g_head || s->g_leading || groups_unwritten(s))
            pthread_cond_wait(&s->g_cond, &s->g_mutex);
        s->g_waiters--;
    }
    pthread_mutex_unlock(&s->g_mutex);
    if (s->g_roots.n) {   /* G7: LMDB holds every sealed root now */
        kvmap_clear(&s->g_roots);
        s->g_roots_gen++;
    }
}

int store_group_root(objstore_txn *t, const char *name, size_t len, bool *decided,
                     uint64_t *oid, MDB_txn **rt)
{
    objstore *s = t->s;
    *rt = NULL;
    *decided = false;
    kv_entry *e = kvmap_get(&s->g_roots, name, len);
    if (e) {
        *decided = true;
        *oid = 0;
        if (!e->deleted)
            memcpy(oid, e->val, 8);
        return OBJSTORE_OK;
    }
    if (t->rtxn) {   /* a drained snapshot is newer still */
        *rt = t->rtxn;
        return OBJSTORE_OK;
    }
    if (t->rtxn_roots && t->rtxn_roots_gen != s->g_roots_gen) {
        mdb_txn_abort(t->rtxn_roots);
        t->rtxn_roots = NULL;
    }
    if (!t->rtxn_roots) {
        int mrc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &t->rtxn_roots);
        if (mrc) {
            t->rtxn_roots = NULL;
            return store_lmdb_err(mrc, "read snapshot");
        }
        t->rtxn_roots_gen = s->g_roots_gen;
    }
    *rt = t->rtxn_roots;
    return OBJSTORE_OK;
}

void store_group_wait_durable(objstore *s)
{
    /* g_sealed cannot move while this reader holds its side of the lock. */
    uint64_t sealed = s->g_sealed;
    if (atomic_load(&s->epoch) >= sealed)
        return;
    pthread_mutex_lock(&s->g_mutex);
    s->g_waiters++;
    pthread_cond_signal(&s->g_gather);   /* G6 */
    /* A failed group ends the wait, but not before the groups before it,
     * which may have succeeded, are written (G8). */
    while (groups_unwritten(s) || (atomic_load(&s->epoch) < sealed && !s->failed))
        pthread_cond_wait(&s->g_cond, &s->g_mutex);
    s->g_waiters--;
    pthread_mutex_unlock(&s->g_mutex);
}

/* ---- sealing ---- */

static bool writers_waiting(objstore *s, bool or_writing)
{
    pthread_mutex_lock(&s->lock.m);
    bool w = s->lock.writers_waiting > 0 || (or_writing && s->lock.writer);
    pthread_mutex_unlock(&s->lock.m);
    return w;
}

/* meta/ keeps STORE_GROUP_ROOM free beyond its last page, plus twice the
 * redo of every pending commit and this one (G1): a leader's transaction
 * cannot grow the map. */
static bool meta_has_room(objstore *s, uint64_t pending_bytes)
{
    MDB_envinfo info;
    MDB_stat st;
    if (mdb_env_info(s->env, &info) || mdb_env_stat(s->env, &st))
        return false;
    uint64_t used = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
    return used + STORE_GROUP_ROOM + 2 * pending_bytes < (uint64_t)info.me_mapsize;
}

bool store_group_may_seal(objstore_txn *t, uint64_t redo_bytes)
{
    objstore *s = t->s;
    heap_t *h = s->heap;
    if (s->ro || s->opts.sync == OBJSTORE_SYNC_RELAXED)
        return false;
    if (heap_size(h) != s->tx_heap_len || heap_fresh_from(h) != UINT64_MAX ||
        heap_size_unsynced(h) || redo_bytes > STORE_GROUP_BYTES ||
        heap_private_bytes(h) > STORE_DROP_PRIVATE ||
        (!s->weak_db && (s->weak_add.n || s->weak_del.n)) || s->weak_rebuild)
        return false;
    uintptr_t me = atomic_load(&s->lock.writer_id);
    uint64_t now = now_ns();
    bool others = s->g_prev_writer && s->g_prev_writer != me &&
                  now - s->g_prev_ns < GROUP_RECENT_NS;
    s->g_prev_writer = me;
    s->g_prev_ns = now;
    pthread_mutex_lock(&s->g_mutex);
    bool pending = s->g_head || s->g_leading || groups_unwritten(s);
    uint64_t pending_bytes = s->g_pending_bytes + redo_bytes;
    bool due = s->commits_since_ckpt + 1 >= STORE_CKPT_COMMITS || s->g_jfull ||
               s->redo_since_ckpt + s->g_pending_bytes + redo_bytes >= s->opts.checkpoint_bytes;
    pthread_mutex_unlock(&s->g_mutex);
    if (due || (!pending && !others && !writers_waiting(s, false)))
        return false;
    return meta_has_room(s, pending_bytes);
}

int store_group_seal(objstore_txn *t, const heap_range *r, size_t n, struct store_sealed **out)
{
    objstore *s = t->s;
    *out = NULL;
    struct store_sealed *g = calloc(1, sizeof *g);
    if (!g)
        return store_err(OBJSTORE_ENOMEM, "out of memory");
    pthread_cond_init(&g->cv, NULL);
    uint64_t bytes = 0, high = 0;
    for (size_t i = 0; i < n; i++) {
        bytes += r[i].len;
        if (r[i].off + r[i].len > high)
            high = r[i].off + r[i].len;
    }
    g->redo = n ? malloc(n * sizeof *g->redo) : NULL;
    g->data = bytes ? malloc(bytes) : NULL;
    int rc = (n && !g->redo) || (bytes && !g->data) ? ENOMEM : store_put_changes(s, &g->ops);
    if (!rc && g->ops.len > STORE_GROUP_BYTES) {
        sealed_free(g);   /* large metadata: commits alone, which can grow the map (G1) */
        return OBJSTORE_OK;
    }
    kv_entry **re = rc ? NULL : kvmap_sorted(&s->roots_pending);
    if (!rc && s->roots_pending.n && !re)
        rc = ENOMEM;
    for (size_t i = 0; !rc && i < s->roots_pending.n; i++)   /* G7 */
        if (kvmap_put(&s->g_roots, re[i]->key, re[i]->klen, re[i]->val, re[i]->vlen,
                      re[i]->deleted))
            rc = ENOMEM;
    if (rc) {
        /* The overlay may hold part of this transaction's roots: the drain
         * empties it, LMDB holding every sealed root (G7). */
        store_group_drain(s);
        sealed_free(g);
        return rc == ENOMEM ? store_err(OBJSTORE_ENOMEM, "out of memory sealing a commit")
                            : store_lmdb_err(rc, "seal");
    }
    const uint8_t *base = heap_base(s->heap);
    uint8_t *d = g->data;
    for (size_t i = 0; i < n; i++) {
        g->redo[i] = r[i];
        memcpy(d, base + r[i].off, r[i].len);
        d += r[i].len;
    }
    g->nredo = n;
    g->bytes = bytes;
    g->high = high;
    uint64_t last = atomic_load(&s->epoch);
    g->epoch = (s->g_sealed > last ? s->g_sealed : last) + 1;

    /* The point of no return: from here the transaction is the group's. */
    if (heap_mark_clean(s->heap)) {   /* nothing fresh (G1): cannot fail */
        sealed_free(g);
        s->failed = true;
        return store_heap_err(s, HEAP_EFAILED);
    }
    s->g_sealed = g->epoch;
    store_fold_committed(s);
    s->st_redo_bytes += bytes;
    pthread_mutex_lock(&s->g_mutex);
    if (s->g_tail)
        s->g_tail->next = g;
    else
        s->g_head = g;
    s->g_tail = g;
    s->g_queued++;
    s->g_pending_bytes += bytes + g->ops.len;
    pthread_mutex_unlock(&s->g_mutex);
    *out = g;
    return OBJSTORE_OK;
}

/* ---- the leader ---- */

static void fail_group(struct store_sealed *first, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail_group(struct store_sealed *first, int rc, const char *fmt, ...)
{
    char msg[sizeof first->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    for (struct store_sealed *x = first; x; x = x->next) {
        x->rc = rc;
        memcpy(x->msg, msg, sizeof msg);
    }
}

/* The group's redo, merged (G3): ranges are whole 64-byte lines (heap rule
 * D1's unit); a line several transactions wrote is kept once, with the
 * newest bytes, and adjacent lines make one range.  The group commits
 * atomically, so one record set at its last epoch replays it whole. */
struct merged {
    heap_range *r;
    size_t n;
    uint8_t *data;
    uint64_t bytes;
};

struct wline {
    uint64_t off;
    const uint8_t *src;
    uint64_t order;
};

static int cmp_wline(const void *a, const void *b)
{
    const struct wline *x = a, *y = b;
    if (x->off != y->off)
        return x->off < y->off ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

static bool merge_group(struct store_sealed *first, uint64_t bytes, struct merged *m)
{
    size_t n = (size_t)(bytes >> HEAP_LINE_SHIFT), k = 0;
    memset(m, 0, sizeof *m);
    if (!n)
        return true;
    struct wline *l = malloc(n * sizeof *l);
    m->r = malloc(n * sizeof *m->r);
    m->data = malloc(bytes);
    if (!l || !m->r || !m->data) {
        free(l);
        free(m->r);
        free(m->data);
        memset(m, 0, sizeof *m);   /* the caller frees m's arrays either way */
        return false;
    }
    for (struct store_sealed *x = first; x; x = x->next) {
        const uint8_t *d = x->data;
        for (size_t i = 0; i < x->nredo; i++)
            for (uint64_t o = 0; o < x->redo[i].len; o += HEAP_LINE_SIZE, d += HEAP_LINE_SIZE)
                l[k] = (struct wline){x->redo[i].off + o, d, k}, k++;
    }
    qsort(l, k, sizeof *l, cmp_wline);
    for (size_t i = 0; i < k;) {
        heap_range run = {l[i].off, 0};
        while (i < k && l[i].off == run.off + run.len) {
            while (i + 1 < k && l[i + 1].off == l[i].off)
                i++;   /* the newest copy of the line */
            memcpy(m->data + m->bytes, l[i].src, HEAP_LINE_SIZE);
            m->bytes += HEAP_LINE_SIZE;
            run.len += HEAP_LINE_SIZE;
            i++;
        }
        m->r[m->n++] = run;
    }
    free(l);
    return true;
}

/* One LMDB transaction for the group; returns an LMDB code. */
static int group_lmdb(objstore *s, struct store_sealed *first, const struct merged *m,
                      uint64_t last, bool *attempted)
{
    MDB_txn *w;
    *attempted = false;
    int rc = mdb_txn_begin(s->env, NULL, 0, &w);
    if (rc)
        return rc;
    if (m->n)
        rc = store_put_redo(s, w, last, s->redo_last, m->r, m->n, m->data);
    for (struct store_sealed *x = first; x && !rc; x = x->next)
        rc = wb_apply(&x->ops, w);
    bool drop = s->synced_epoch > s->deleted_upto;
    if (!rc && drop && !(rc = store_del_redo(s, w, s->synced_epoch)))
        rc = store_put_u64(w, s->db_meta, "ckpt", s->synced_epoch) ? ENOSPC : 0;
    /* Replay takes the epoch from the log's head when the newest commit wrote
     * records; otherwise (or when records go) meta/ "epoch" must carry it. */
    if (!rc && (!m->n || drop))
        rc = store_put_u64(w, s->db_meta, "epoch", last) ? ENOSPC : 0;
    if (rc) {
        mdb_txn_abort(w);
        return rc;
    }
    store_hook("lmdb-commit");
    *attempted = true;
    uint64_t t0 = now_ns();
    rc = mdb_txn_commit(w);
    s->g_sync_ns = now_ns() - t0;   /* read by the next leader, under g_mutex */
    return rc;
}

/* A group from its leader's start to its lines in the heap file (G8). */
struct group_job {
    struct store_sealed *first, *last;
    uint64_t n, turn;         /* its transactions (g_queued when taken); its turn (G8) */
    struct merged m;
    bool frozen;              /* holds its share of the freeze lock */
    bool journal;             /* went to the journal (G9), not through LMDB */
    bool durable;             /* its LMDB commit succeeded: lines to write */
};

/* store_freeze can block (a read-only opener in another process holds the
 * freeze) only at depth 0: then no other leader holds a share, and none
 * waits on g_freeze_m to give one back. */
static int group_freeze(objstore *s)
{
    pthread_mutex_lock(&s->g_freeze_m);
    int rc = store_freeze(s);
    pthread_mutex_unlock(&s->g_freeze_m);
    return rc;
}

static void group_thaw(objstore *s)
{
    pthread_mutex_lock(&s->g_freeze_m);
    store_thaw(s);
    pthread_mutex_unlock(&s->g_freeze_m);
}

/* The leader's half (G5): the group's LMDB transaction. */
static void commit_group(objstore *s, struct group_job *job)
{
    struct store_sealed *first = job->first, *lastg = first;
    uint64_t bytes = 0, high = 0;
    for (struct store_sealed *x = first; x; x = x->next) {
        lastg = x;
        bytes += x->bytes;
        if (x->high > high)
            high = x->high;
    }
    job->last = lastg;
    if (s->failed) {
        fail_group(first, OBJSTORE_EFAILED, "%s: the store handle failed before this "
                   "commit reached the disk (an earlier error); nothing committed, reopen "
                   "the store", s->dir);
        return;
    }
    int rc = group_freeze(s);
    if (rc) {
        s->failed = true;
        fail_group(first, OBJSTORE_EFAILED, "%s (nothing committed; the handle failed, "
                   "reopen the store)", objstore_errmsg());
        return;
    }
    job->frozen = true;
    struct merged *m = &job->m;
    bool attempted = false;
    if (!merge_group(first, bytes, m)) {
        s->failed = true;
        fail_group(first, OBJSTORE_EFAILED, "%s: group commit of epochs %llu..%llu: out of "
                   "memory; nothing committed; the handle failed, reopen the store", s->dir,
                   (unsigned long long)first->epoch, (unsigned long long)lastg->epoch);
        return;
    }
    /* G9: a group that changes only heap bytes is one journal entry. */
    bool heap_only = m->n != 0;
    for (struct store_sealed *x = first; x && heap_only; x = x->next)
        heap_only = x->ops.len == 0;
    if (heap_only) {
        bool unknown;
        uint64_t t0 = now_ns();
        int jrc = store_journal_commit(s, lastg->epoch, s->redo_last, m->r, m->n, m->data,
                                       &unknown);
        s->g_sync_ns = now_ns() - t0;   /* read by the next leader, under g_mutex */
        if (jrc && jrc != STORE_JOURNAL_NOROOM) {
            s->failed = true;
            fail_group(first, OBJSTORE_EFAILED, "%s: group commit of epochs %llu..%llu: %s; "
                       "%s; the handle failed, reopen the store", s->dir,
                       (unsigned long long)first->epoch, (unsigned long long)lastg->epoch,
                       objstore_errmsg(), unknown ? "whether it is durable is unknown"
                                                  : "nothing committed");
            return;
        }
        job->journal = jrc == OBJSTORE_OK;
    }
    if (job->journal) {
        store_hook("journal-committed");
        job->durable = true;
        s->redo_last = lastg->epoch;   /* j_high covers its ranges (journal.c) */
        return;
    }
    int mrc = group_lmdb(s, first, m, lastg->epoch, &attempted);
    if (mrc) {
        bool unknown = attempted && (mrc == EIO || store_env_panicked(s));
        s->failed = true;
        fail_group(first, OBJSTORE_EFAILED, "%s: group commit of epochs %llu..%llu: LMDB: "
                   "%s; %s; the handle failed, reopen the store", s->dir,
                   (unsigned long long)first->epoch, (unsigned long long)lastg->epoch,
                   mdb_strerror(mrc), unknown ? "whether it is durable is unknown"
                                              : "nothing committed");
        return;
    }
    store_hook("lmdb-committed");
    /* Durable.  From here nothing may report failure (T3). */
    job->durable = true;
    if (m->n)
        s->redo_last = lastg->epoch;
    if (s->synced_epoch > s->deleted_upto) {
        s->deleted_upto = s->synced_epoch;
        s->redo_high = 0;
    }
    if (high > s->redo_high)
        s->redo_high = high;
}

/* After the lead is handed on (G8): the group's lines into the heap file,
 * in turn, then its transactions return.  Returns with g_mutex held: the
 * caller must not let it go and take it again, since once the last group
 * is written a drain may return and the store be closed. */
static void write_group(objstore *s, struct group_job *job)
{
    pthread_mutex_lock(&s->g_mutex);
    while (s->g_turn_done + 1 != job->turn)
        pthread_cond_wait(&s->g_cond, &s->g_mutex);
    pthread_mutex_unlock(&s->g_mutex);
    struct merged *m = &job->m;
    /* A failed handle's file -- this group's write failed, or a later
     * group's commit -- is left to the next open's replay (T3): the
     * group's commits, durable in the redo log, still return success. */
    for (size_t i = 0, at = 0; job->durable && !s->failed && i < m->n; at += m->r[i].len, i++)
        if (heap_write_copy(s->heap, m->r[i].off, m->data + at, m->r[i].len))
            s->failed = true;   /* durable in the redo log; the next open replays it (T3) */
    free(m->r);
    free(m->data);
    if (job->frozen)
        group_thaw(s);
    pthread_mutex_lock(&s->g_mutex);
    if (job->durable) {
        s->st_commits += job->n;
        s->st_journal_commits += job->journal ? job->n : 0;
        s->st_grouped += job->n;
        s->st_group_syncs++;
        atomic_store(&s->epoch, job->last->epoch);
    }
    s->g_turn_done = job->turn;
    s->g_unwritten_n -= job->n;
    for (struct store_sealed *x = job->first, *next; x; x = next) {
        next = x->next;   /* x is its thread's to free once done is seen */
        x->done = true;
        pthread_cond_signal(&x->cv);
    }
    pthread_cond_broadcast(&s->g_cond);   /* drains, readers, the next group's turn */
}

void store_group_sealed(objstore *s)
{
    pthread_mutex_lock(&s->g_mutex);
    if (s->g_leading)
        pthread_cond_signal(&s->g_gather);
    pthread_mutex_unlock(&s->g_mutex);
}

/* G6: how many sealed transactions a new leader waits for; g is its own.
 * Under g_mutex. */
static uint64_t gather_expect(objstore *s, const struct store_sealed *g)
{
    uint64_t expect = s->g_last_n;
    if (s->g_gather_skip) {
        s->g_gather_skip--;
        return expect;
    }
    /* The threads of groups not yet written come back -- but not the
     * leader's own, when an earlier group took it: it cannot seal again
     * while it leads.  (Then its group is not written: no underflow.) */
    uint64_t coming = s->g_queued + s->g_unwritten_n - (g->taken ? 1 : 0);
    return coming > expect ? coming : expect;
}

int store_group_wait(objstore *s, struct store_sealed *g)
{
    pthread_mutex_lock(&s->g_mutex);
    while (!g->done) {
        /* Lead when nobody does and the queue holds work; g may be in a
         * group already committed, whose writer will wake it (G8). */
        if (s->g_leading || !s->g_head) {
            pthread_cond_wait(&g->cv, &s->g_mutex);
            continue;
        }
        s->g_leading = true;
        /* G6: gather the writers under way, and those coming back. */
        uint64_t wait = s->g_sync_ns < GATHER_MAX_NS ? s->g_sync_ns : GATHER_MAX_NS;
        uint64_t until = now_ns() + wait;
        uint64_t expect = gather_expect(s, g);
        bool guessed = expect > s->g_last_n, timed_out = false;
        while (wait && !s->g_waiters && !s->failed &&
               (s->g_queued < expect || writers_waiting(s, true))) {
            if (now_ns() >= until) {
                timed_out = true;
                break;
            }
            struct timespec ts = {(time_t)(until / 1000000000u), (long)(until % 1000000000u)};
            pthread_cond_timedwait(&s->g_gather, &s->g_mutex, &ts);
        }
        if (timed_out && guessed && s->g_queued < expect)
            s->g_gather_skip = GATHER_BACKOFF;   /* they did not come back in time */
        struct group_job job = {.first = s->g_head, .n = s->g_queued, .turn = ++s->g_turn_next};
        for (struct store_sealed *x = job.first; x; x = x->next)
            x->taken = true;
        s->g_last_n = s->g_queued;
        s->g_unwritten_n += s->g_queued;
        s->g_queued = 0;
        s->g_head = s->g_tail = NULL;
        pthread_mutex_unlock(&s->g_mutex);
        commit_group(s, &job);
        pthread_mutex_lock(&s->g_mutex);
        for (struct store_sealed *x = job.first; x; x = x->next)
            s->g_pending_bytes -= x->bytes + x->ops.len;
        if (job.durable) {   /* in the log now: counted for the next checkpoint */
            s->commits_since_ckpt++;   /* one record set for the group */
            s->redo_since_ckpt += job.m.bytes;
            if (job.journal && store_journal_fill_due(s))
                s->g_jfull = true;   /* G1: the next commit checkpoints */
        }
        /* G8: the lead goes to the head of the queue, then the lines. */
        s->g_leading = false;
        if (s->g_head)
            pthread_cond_signal(&s->g_head->cv);
        pthread_mutex_unlock(&s->g_mutex);
        write_group(s, &job);   /* returns holding g_mutex */
    }
    pthread_mutex_unlock(&s->g_mutex);
    int rc = g->rc;
    if (rc)
        store_err(rc, "%s", g->msg);
    sealed_free(g);
    return rc;
}
