/*
 * check.c -- objstore_check: the six passes of objstore-fsck (the list is in
 * objstore_admin.h), each problem reported as a finding with a kind, the
 * object or offset concerned and words.
 *
 * Rules:
 *   C1 a check writes no byte of any file: the store's lock file is locked
 *      shared (a writer holds it exclusively, so none runs meanwhile), LMDB
 *      is opened read-only without its lock file (MDB_NOLOCK: its reader
 *      table would otherwise be written), the heap is mapped privately and
 *      pending redo is applied to that mapping only.
 *   C2 LMDB is not hardened against a damaged data.mdb, so it is read first
 *      in a child process (check_meta.c); the checker opens LMDB itself only
 *      after the child found it sound.
 *   C3 a pass runs only on what the passes before it found usable: no walk
 *      over a heap whose header or allocator metadata failed, no walk of a
 *      store whose redo log cannot be replayed.
 *   C4 no recursion over the graph; memory is about 13 bytes per object
 *      plus the mark stack.
 *   C5 the library's own validation is used wherever it exists (heap_open,
 *      heap_rebuild_full, heap_check_obj, store_meta_load, store_types_load,
 *      store_redo_check), so the checker and the store agree on what is
 *      valid.
 */
#include "check_internal.h"

#include <stddef.h>
#include <xxhash.h>

#include "heap_format.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static const int kind_pass[OBJSTORE_C_NKINDS] = {
    [OBJSTORE_C_DIR] = 1,     [OBJSTORE_C_LOCKFILE] = 1, [OBJSTORE_C_HEADER] = 1,
    [OBJSTORE_C_MISMATCH] = 1, [OBJSTORE_C_STRAY] = 1,   [OBJSTORE_C_META] = 2,
    [OBJSTORE_C_REDO] = 2,    [OBJSTORE_C_HEAP] = 3,     [OBJSTORE_C_BADOBJ] = 4,
    [OBJSTORE_C_BADTYPE] = 4, [OBJSTORE_C_DANGLING] = 4, [OBJSTORE_C_BADROOT] = 5,
    [OBJSTORE_C_COUNT] = 5,   [OBJSTORE_C_LEAK] = 5,     [OBJSTORE_C_BADZCT] = 5,
    [OBJSTORE_C_BADCAND] = 5, [OBJSTORE_C_BADWEAK] = 5,
};

const char *objstore_check_kind_name(int kind)
{
    static const char *names[OBJSTORE_C_NKINDS] = {
        "store-dir",      "lock-file",   "heap-header",  "heap-mismatch",
        "stray-heap",     "meta",        "redo",         "heap-structure",
        "bad-object",     "bad-type",    "dangling-slot", "bad-root",
        "wrong-count",    "leak",        "stale-zct",    "stale-candidate",
        "bad-weak",
    };
    if (kind == OBJSTORE_C_NKINDS)
        return "lost+found";   /* a repair action: a group linked under a root */
    return kind >= 0 && kind < OBJSTORE_C_NKINDS ? names[kind] : "unknown";
}

/* ---- findings ---- */

static void emit(struct ck *c, int kind, uint64_t oid, uint64_t value, int fixable,
                 const char *text)
{
    if (c->quiet)
        return;
    objstore_check_report *r = c->r;
    if (c->final) {
        r->left[kind]++;
        r->problems_left++;
    } else {
        r->found[kind]++;
        r->problems++;
    }
    if (!r->first_problem[0] || (c->final && r->problems_left == 1)) {
        /* Cut to fit: the whole text goes to the callback. */
        size_t n = strnlen(text, sizeof r->first_problem - 1);
        memcpy(r->first_problem, text, n);
        r->first_problem[n] = 0;
    }
    if (c->o->on_finding) {
        objstore_finding f = {.kind = kind, .pass = kind_pass[kind], .oid = oid,
                              .value = value, .text = text, .fixable = fixable,
                              .after_repair = c->final};
        c->o->on_finding(c->o->arg, &f);
    }
}

void ck_finding(struct ck *c, int kind, uint64_t oid, uint64_t value, int fixable,
                const char *fmt, ...)
{
    if (c->quiet)
        return;
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    emit(c, kind, oid, value, fixable, text);
}

bool ck_progress(struct ck *c, uint64_t done, uint64_t total)
{
    if (c->o->on_progress && c->o->on_progress(c->o->arg, c->pass, done, total)) {
        c->stop = true;
        c->r->interrupted = 1;
    }
    return c->stop;
}

static bool tick(struct ck *c, uint64_t done, uint64_t total)
{
    if ((++c->ticks & 0xFFFF) == 0)
        return ck_progress(c, done, total);
    return c->stop;
}

static void begin_pass(struct ck *c, int pass, const char *title)
{
    c->pass = pass;
    if (!c->quiet && !c->final && c->o->on_pass)
        c->o->on_pass(c->o->arg, pass, title);
    if (!c->quiet)
        c->r->passes_done = pass - 1;
}

/* ---- the index of live objects ---- */

size_t ck_find(const struct ck *c, uint64_t off)
{
    uint64_t p = off >> HEAP_POOL_SHIFT;
    if ((off & (HEAP_ALIGN - 1)) || p >= c->npools)
        return CK_NONE;
    size_t lo = c->pidx[p], hi = c->pidx[p + 1];
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->off[mid] < off)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < c->pidx[p + 1] && c->off[lo] == off ? lo : CK_NONE;
}

uint64_t ck_indeg(const struct ck *c, size_t i)
{
    if (c->indeg[i] < UINT32_MAX)
        return c->indeg[i];
    const uint64_t *v = u64map_find(&c->big, i);
    return v ? *v : UINT32_MAX;
}

void ck_indeg_add(struct ck *c, size_t i)
{
    if (c->indeg[i] < UINT32_MAX - 1) {
        c->indeg[i]++;
        return;
    }
    uint64_t *v = u64map_find(&c->big, i);
    if (!v && (v = u64map_upsert(&c->big, i, NULL)))
        *v = c->indeg[i];
    c->indeg[i] = UINT32_MAX;
    if (v)
        ++*v;
}

void ck_free(struct ck *c)
{
    free(c->off);
    free(c->pidx);
    free(c->indeg);
    free(c->fl);
    u64map_free(&c->big);
    for (size_t i = 0; i < c->nbadroots; i++)
        free(c->badroots[i].name);
    free(c->badroots);
    c->off = c->pidx = NULL;
    c->indeg = NULL;
    c->fl = NULL;
    c->badroots = NULL;
    c->n = c->nbadroots = c->badroots_cap = 0;
}

static int oom(void) { return store_err(OBJSTORE_ENOMEM, "check: out of memory"); }

static int index_objects(struct ck *c)
{
    heap_t *h = c->s->heap;
    c->npools = heap_size(h) >> HEAP_POOL_SHIFT;
    c->pidx = calloc(c->npools + 1, sizeof *c->pidx);
    size_t cap = 4096;
    c->off = malloc(cap * sizeof *c->off);
    if (!c->pidx || !c->off)
        return oom();
    uint64_t cur = 0, off, bytes = 0, p = 0;
    while (heap_next_live(h, &cur, &off)) {
        if (c->n == cap) {
            cap *= 2;
            uint64_t *np = realloc(c->off, cap * sizeof *np);
            if (!np)
                return oom();
            c->off = np;
        }
        for (uint64_t q = off >> HEAP_POOL_SHIFT; p < q;)
            c->pidx[++p] = c->n;
        c->off[c->n++] = off;
        bytes += heap_block_size(h, off);
        if (tick(c, off, heap_size(h)))
            return OBJSTORE_OK;
    }
    while (p < c->npools)
        c->pidx[++p] = c->n;
    c->indeg = calloc(c->n + 1, sizeof *c->indeg);
    c->fl = calloc(c->n + 1, 1);
    if (!c->indeg || !c->fl)
        return oom();
    if (!c->quiet) {
        c->r->objects = c->n;
        c->r->bytes = bytes;
        c->r->heap_bytes = heap_size(h);
        c->r->free_bytes = heap_size(h) > bytes ? heap_size(h) - bytes : 0;
    }
    return OBJSTORE_OK;
}

/* ---- pass 4: objects ---- */

static void pass_objects(struct ck *c)
{
    objstore *s = c->s;
    heap_t *h = s->heap;
    uint64_t refs = 0;
    for (size_t i = 0; i < c->n && !c->stop; i++) {
        uint64_t off = c->off[i], size;
        if (heap_check_obj(h, off, &size) != HEAP_OK) {
            c->fl[i] |= CK_BAD;
            ck_finding(c, OBJSTORE_C_BADOBJ, off, heap_obj_at(h, off)->nrefs, 2,
                       "object %" PRIu64 ": header beyond use: %u reference slots do not fit "
                       "its %" PRIu64 "-byte block", off, heap_obj_at(h, off)->nrefs,
                       heap_block_size(h, off));
            continue;
        }
        const heap_obj *o = heap_obj_at(h, off);
        if (o->type > s->ntypes_committed)
            ck_finding(c, OBJSTORE_C_BADTYPE, off, o->type, 2,
                       "object %" PRIu64 ": type id %u is not registered (%u types)", off,
                       o->type, s->ntypes_committed);
        const uint64_t *slot = heap_obj_slots(h, off);
        for (uint32_t j = 0; j < o->nrefs; j++) {
            if (!slot[j])
                continue;
            refs++;
            size_t t = ck_find(c, slot[j]);
            if (t == CK_NONE)
                ck_finding(c, OBJSTORE_C_DANGLING, off, j, 2,
                           "object %" PRIu64 " slot %u points at %" PRIu64
                           ", which is no live object's start", off, j, slot[j]);
            else
                ck_indeg_add(c, t);
        }
        tick(c, i, c->n);
    }
    if (!c->quiet)
        c->r->references = refs;
}

/* ---- pass 5: counts and tables ---- */

static int add_badroot(struct ck *c, const MDB_val *k, uint64_t oid)
{
    if (c->nbadroots == c->badroots_cap) {
        size_t cap = c->badroots_cap ? c->badroots_cap * 2 : 16;
        struct ck_root *p = realloc(c->badroots, cap * sizeof *p);
        if (!p)
            return oom();
        c->badroots = p;
        c->badroots_cap = cap;
    }
    char *name = malloc(k->mv_size + 1);
    if (!name)
        return oom();
    memcpy(name, k->mv_data, k->mv_size);
    name[k->mv_size] = 0;
    c->badroots[c->nbadroots++] = (struct ck_root){name, k->mv_size, oid};
    return OBJSTORE_OK;
}

static int pass_roots(struct ck *c, MDB_txn *txn)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, c->s->db_roots, &cur);
    if (rc)
        return store_lmdb_err(rc, "check: roots");
    MDB_val k, d;
    uint64_t nroots = 0;
    int err = OBJSTORE_OK;
    for (rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); rc == 0 && !err;
         rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
        nroots++;
        uint64_t oid = 0;
        if (d.mv_size == 8)
            memcpy(&oid, d.mv_data, 8);
        size_t t = oid ? ck_find(c, oid) : CK_NONE;
        int klen = (int)(k.mv_size > 200 ? 200 : k.mv_size);
        if (t == CK_NONE) {
            ck_finding(c, OBJSTORE_C_BADROOT, oid, 0, 2,
                       "root '%.*s' names %" PRIu64 ", which is no live object", klen,
                       (const char *)k.mv_data, oid);
            err = add_badroot(c, &k, oid);
        } else if (c->fl[t] & CK_BAD) {
            err = add_badroot(c, &k, oid);   /* the object's finding covers it */
        } else {
            ck_indeg_add(c, t);
        }
    }
    mdb_cursor_close(cur);
    if (!c->quiet)
        c->r->roots = nroots;
    return err;
}

static void pass_counts(struct ck *c, MDB_txn *txn)
{
    objstore *s = c->s;
    heap_t *h = s->heap;
    for (size_t i = 0; i < c->n && !c->stop; i++) {
        if (c->fl[i] & CK_BAD)
            continue;
        uint64_t rc = heap_obj_refcount(heap_obj_at(h, c->off[i])), in = ck_indeg(c, i);
        if (rc != in)
            ck_finding(c, OBJSTORE_C_COUNT, c->off[i], rc, 1,
                       "object %" PRIu64 ": count %" PRIu64 ", but %" PRIu64
                       " reference%s point%s at it", c->off[i], rc, in, in == 1 ? "" : "s",
                       in == 1 ? "s" : "");
        else if (rc == 0 && !u64map_find(&s->zct.committed, c->off[i]))
            ck_finding(c, OBJSTORE_C_LEAK, c->off[i], 0, 1,
                       "object %" PRIu64 ": count 0 and not in the zero-count table "
                       "(it would never be freed)", c->off[i]);
        tick(c, i, c->n);
    }
    MDB_dbi dbs[2] = {s->db_zct, s->db_cand};
    for (int d = 0; d < 2 && !c->stop; d++) {
        MDB_cursor *cur;
        if (mdb_cursor_open(txn, dbs[d], &cur))
            continue;
        MDB_val k, v;
        for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            if (k.mv_size != 8)
                continue;   /* malformed: pass 2's finding */
            uint64_t oid = store_get_be64(k.mv_data);
            size_t t = ck_find(c, oid);
            bool bad = t == CK_NONE || (c->fl[t] & CK_BAD);
            if (d == 0 && (bad || heap_obj_refcount(heap_obj_at(h, oid))))
                ck_finding(c, OBJSTORE_C_BADZCT, oid, 0, 1,
                           "zero-count table entry %" PRIu64 " is %s", oid,
                           bad ? "no live object" : "at a count above 0");
            else if (d == 1 && bad)
                ck_finding(c, OBJSTORE_C_BADCAND, oid, 0, 1,
                           "cycle candidate %" PRIu64 " is no live object", oid);
        }
        mdb_cursor_close(cur);
    }
}

/* Weak references (weak.c W1): every index entry names a live weak
 * reference whose payload is its live target, and every live weak reference
 * with a target is in the index. */
static const char *weak_entry_problem(struct ck *c, uint64_t target, uint64_t wref)
{
    objstore *s = c->s;
    size_t w = ck_find(c, wref), t = ck_find(c, target);
    if (w == CK_NONE || (c->fl[w] & CK_BAD))
        return "the weak reference is no live object";
    if (!s->weak_type || heap_obj_at(s->heap, wref)->type != s->weak_type ||
        heap_obj_payload_size(s->heap, wref) < 8)
        return "that object is no weak reference";
    uint64_t cur;
    memcpy(&cur, heap_obj_payload(s->heap, wref), 8);
    if (cur != target)
        return "the weak reference names another object";
    if (t == CK_NONE || (c->fl[t] & CK_BAD))
        return "the target is no live object";
    return NULL;
}

static void pass_weak(struct ck *c, MDB_txn *txn)
{
    objstore *s = c->s;
    heap_t *h = s->heap;
    MDB_cursor *cur;
    if (s->weak_db && !mdb_cursor_open(txn, s->db_weak, &cur)) {
        MDB_val k, v;
        for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && !c->stop;
             rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            if (k.mv_size != 16)
                continue;   /* malformed: the open refuses it (pass 2) */
            uint64_t target = store_get_be64(k.mv_data);
            uint64_t wref = store_get_be64((const uint8_t *)k.mv_data + 8);
            const char *why = weak_entry_problem(c, target, wref);
            c->weak_bad |= why != NULL;
            if (why)
                ck_finding(c, OBJSTORE_C_BADWEAK, wref, target, 1,
                           "weak index entry (target %" PRIu64 ", weak reference %" PRIu64
                           "): %s", target, wref, why);
        }
        mdb_cursor_close(cur);
    }
    if (!s->weak_type)
        return;
    for (size_t i = 0; i < c->n && !c->stop; i++) {
        uint64_t off = c->off[i], target;
        if ((c->fl[i] & CK_BAD) || heap_obj_at(h, off)->type != s->weak_type ||
            heap_obj_payload_size(h, off) < 8)
            continue;
        memcpy(&target, heap_obj_payload(h, off), 8);
        if (!target)
            continue;
        size_t t = ck_find(c, target);
        uint8_t key[16];
        store_be64(key, target);
        store_be64(key + 8, off);
        MDB_val k = {16, key}, v;
        bool gone = t == CK_NONE || (c->fl[t] & CK_BAD);
        c->weak_bad |= gone || !s->weak_db || mdb_get(txn, s->db_weak, &k, &v);
        if (gone)
            ck_finding(c, OBJSTORE_C_BADWEAK, off, target, 1,
                       "weak reference %" PRIu64 " names %" PRIu64 ", no live object (it "
                       "would read as that oid's next tenant)", off, target);
        else if (!s->weak_db || mdb_get(txn, s->db_weak, &k, &v))
            ck_finding(c, OBJSTORE_C_BADWEAK, off, target, 1,
                       "weak reference %" PRIu64 " (to %" PRIu64 ") is missing from meta/'s "
                       "weak index: it would not be cleared when its target is freed", off,
                       target);
    }
}

/* ---- pass 6: connectivity ---- */

int ck_mark_from(struct ck *c, size_t root)
{
    heap_t *h = c->s->heap;
    if (c->fl[root] & CK_MARK)
        return OBJSTORE_OK;
    size_t cap = 1024, sp = 0;
    size_t *stack = malloc(cap * sizeof *stack);
    if (!stack)
        return oom();
    c->fl[root] |= CK_MARK;
    stack[sp++] = root;
    while (sp) {
        size_t i = stack[--sp];
        if (c->fl[i] & CK_BAD)
            continue;
        const heap_obj *o = heap_obj_at(h, c->off[i]);
        const uint64_t *slot = heap_obj_slots(h, c->off[i]);
        for (uint32_t j = 0; j < o->nrefs; j++) {
            size_t t = slot[j] ? ck_find(c, slot[j]) : CK_NONE;
            if (t == CK_NONE || (c->fl[t] & CK_MARK))
                continue;
            c->fl[t] |= CK_MARK;
            if (sp == cap) {
                size_t *p = realloc(stack, 2 * cap * sizeof *p);
                if (!p) {
                    free(stack);
                    return oom();
                }
                stack = p;
                cap *= 2;
            }
            stack[sp++] = t;
        }
    }
    free(stack);
    return OBJSTORE_OK;
}

static int mark_roots(struct ck *c, MDB_txn *txn)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, c->s->db_roots, &cur);
    if (rc)
        return store_lmdb_err(rc, "check: roots");
    MDB_val k, d;
    int err = OBJSTORE_OK;
    for (rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); rc == 0 && !err && !c->stop;
         rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
        uint64_t oid = 0;
        if (d.mv_size == 8)
            memcpy(&oid, d.mv_data, 8);
        size_t t = oid ? ck_find(c, oid) : CK_NONE;
        if (t != CK_NONE)
            err = ck_mark_from(c, t);
        ck_progress(c, 0, 1);
    }
    mdb_cursor_close(cur);
    return err;
}

static size_t uf_find(size_t *parent, size_t x)
{
    while (parent[x] != x) {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    return x;
}

/* Connected parts of the unreachable objects (edges taken both ways). */
static int report_groups(struct ck *c)
{
    heap_t *h = c->s->heap;
    size_t u = 0;
    for (size_t i = 0; i < c->n; i++)
        if (!(c->fl[i] & CK_MARK))
            u++;
    if (!c->quiet)
        c->r->reachable = c->n - u;
    if (!u)
        return OBJSTORE_OK;
    size_t *uidx = malloc(u * sizeof *uidx), *parent = malloc(u * sizeof *parent);
    if (!uidx || !parent) {
        free(uidx);
        free(parent);
        return oom();
    }
    for (size_t i = 0, k = 0; i < c->n; i++)
        if (!(c->fl[i] & CK_MARK)) {
            uidx[k] = i;
            parent[k] = k;
            k++;
        }
    for (size_t k = 0; k < u; k++) {
        size_t i = uidx[k];
        if (c->fl[i] & CK_BAD)
            continue;
        const heap_obj *o = heap_obj_at(h, c->off[i]);
        const uint64_t *slot = heap_obj_slots(h, c->off[i]);
        for (uint32_t j = 0; j < o->nrefs; j++) {
            size_t t = slot[j] ? ck_find(c, slot[j]) : CK_NONE;
            if (t == CK_NONE || (c->fl[t] & CK_MARK))
                continue;
            /* t is unreachable too: its place among uidx (both ascending). */
            size_t lo = 0, hi = u;
            while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (uidx[mid] < t)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            size_t a = uf_find(parent, k), b = uf_find(parent, lo);
            if (a != b)
                parent[a > b ? a : b] = a < b ? a : b;
        }
    }
    /* Each group is announced once, in the order of its lowest member (the
     * root of its set, since unions keep the lower index). */
    size_t ngroups = 0;
    for (size_t k = 0; k < u; k++) {
        parent[k] = uf_find(parent, k);
        if (parent[k] == k)
            ngroups++;
    }
    size_t *gnum = malloc(u * sizeof *gnum);
    objstore_group *grp = calloc(ngroups, sizeof *grp);
    bool *head = calloc(ngroups, sizeof *head);
    if (!gnum || !grp || !head) {
        free(gnum);
        free(grp);
        free(head);
        free(uidx);
        free(parent);
        return oom();
    }
    for (size_t k = 0, g = 0; k < u; k++) {
        if (parent[k] == k) {
            gnum[k] = g;
            grp[g++].oid = c->off[uidx[k]];
        }
        objstore_group *G = &grp[gnum[parent[k]]];
        size_t i = uidx[k];
        G->objects++;
        G->bytes += heap_block_size(h, c->off[i]);
        if (!head[G - grp] && ck_indeg(c, i) == 0 && !(c->fl[i] & CK_BAD)) {
            G->oid = c->off[i];
            head[G - grp] = true;
        }
        uint32_t ty = heap_obj_at(h, c->off[i])->type;
        bool seen = false;
        for (uint32_t q = 0; q < G->ntypes; q++)
            seen |= G->types[q] == ty;
        if (!seen && G->ntypes < 8)
            G->types[G->ntypes++] = ty;
    }
    for (size_t g = 0; g < ngroups && !c->quiet; g++) {
        c->r->groups++;
        c->r->group_objects += grp[g].objects;
        c->r->group_bytes += grp[g].bytes;
        if (!c->final && c->o->on_group)
            c->o->on_group(c->o->arg, &grp[g]);
    }
    free(gnum);
    free(grp);
    free(head);
    free(uidx);
    free(parent);
    return OBJSTORE_OK;
}

int ck_walk(struct ck *c, MDB_txn *txn)
{
    int rc;
    begin_pass(c, 4, "Checking objects: headers, slots, types");
    if ((rc = index_objects(c)) || c->stop)
        return rc;
    pass_objects(c);
    if (c->stop)
        return OBJSTORE_OK;
    begin_pass(c, 5, "Checking reference counts, the zero-count and candidate tables and the "
                     "weak index");
    if ((rc = pass_roots(c, txn)))
        return rc;
    pass_counts(c, txn);
    pass_weak(c, txn);
    if (c->stop)
        return OBJSTORE_OK;
    begin_pass(c, 6, "Checking connectivity from the roots");
    if ((rc = mark_roots(c, txn)) || c->stop)
        return rc;
    if ((rc = report_groups(c)))
        return rc;
    if (!c->quiet && !c->stop)
        c->r->passes_done = 6;
    return OBJSTORE_OK;
}

/* ---- pass 1: files ---- */

static int heap_gen_of(const char *name, uint64_t *gen)
{
    if (strncmp(name, "heap.", 5) || !name[5])
        return 0;
    uint64_t g = 0;
    for (const char *p = name + 5; *p; p++) {
        if (*p < '0' || *p > '9' || g > UINT64_MAX / 10 - 10)
            return 0;
        g = g * 10 + (uint64_t)(*p - '0');
    }
    *gen = g;
    return 1;
}

/* The heap generation to check: meta/'s, or when meta/ is unusable the
 * highest heap.N present.  Reports stray generations. */
static uint64_t pass_files(struct ck *c, const char *dir, const struct metainfo *mi,
                           bool lock_missing, uint64_t *stray_out)
{
    if (lock_missing)
        ck_finding(c, OBJSTORE_C_LOCKFILE, 0, 0, 2,
                   "%s/lock is missing (a read-write open or a repair creates it)", dir);
    DIR *d = opendir(dir);
    uint64_t gens[64], ng = 0, best = 0;
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            uint64_t g;
            if (heap_gen_of(e->d_name, &g)) {
                if (ng < 64)
                    gens[ng++] = g;
                if (g > best)
                    best = g;
            }
        }
        closedir(d);
    }
    uint64_t cur = mi->usable ? mi->generation : best;
    bool present = false;
    *stray_out = 0;
    for (uint64_t i = 0; i < ng; i++) {
        if (gens[i] == cur) {
            present = true;
        } else if (mi->usable) {
            ck_finding(c, OBJSTORE_C_STRAY, gens[i], cur, 2,
                       "%s/heap.%" PRIu64 " is a stray heap generation (meta/ names heap.%"
                       PRIu64 ")", dir, gens[i], cur);
            *stray_out += 1;
        }
    }
    if (!present) {
        if (cur)
            ck_finding(c, OBJSTORE_C_DIR, cur, 0, 0,
                       "%s/heap.%" PRIu64 ", the heap file meta/ names, is missing", dir, cur);
        else
            ck_finding(c, OBJSTORE_C_DIR, 0, 0, 0, "%s: no heap file (heap.N)", dir);
        return 0;
    }
    return cur;
}

/* True when the header's checksum matches its bytes: whatever it says
 * (another version, another geometry, a length the file lacks) was written
 * so, and is not damage a rebuild should paper over. */
static bool header_authentic(const char *path)
{
    struct heap_file_header h;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return true;
    bool ok = pread(fd, &h, sizeof h, 0) == (ssize_t)sizeof h &&
              XXH3_64bits(&h, offsetof(struct heap_file_header, checksum)) == h.checksum;
    close(fd);
    return ok;
}

/* Opens heap.<gen> as a check reads it; findings for its header. */
static heap_t *open_heap_checked(struct ck *c, const char *dir, uint64_t gen,
                                 const struct metainfo *mi, bool rw)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/heap.%" PRIu64, dir, gen);
    heap_open_opts ho = {.flags = HEAP_OPEN_NOLOCK | HEAP_OPEN_NOREBUILD |
                                  (rw ? 0 : HEAP_OPEN_RDONLY)};
    char msg[HEAP_MSG_MAX];
    heap_t *h = NULL;
    heap_status hs = heap_open(path, &ho, &h, msg);
    if (hs) {
        /* Rebuilt from meta/ by a repair when its own checksum fails or its
         * magic is gone; a sound header of another version or geometry, or a
         * truncated file, is not overwritten. */
        bool rebuild = mi->usable && hs != HEAP_ENOENT && hs != HEAP_EIO &&
                       hs != HEAP_ENOMEM && !header_authentic(path);
        if (rebuild)
            c->header_bad = true;
        ck_finding(c, OBJSTORE_C_HEADER, 0, (uint64_t)hs, rebuild ? 2 : 0, "heap header: %s",
                   msg);
        return NULL;
    }
    if (mi->usable && memcmp(heap_uuid(h), mi->uuid, 16)) {
        ck_finding(c, OBJSTORE_C_MISMATCH, 40, 0, 0,
                   "%s: the heap file belongs to another store (its uuid differs from meta/'s)",
                   path);
        heap_close(h);
        return NULL;
    }
    if (mi->usable && heap_generation(h) != mi->generation) {
        ck_finding(c, OBJSTORE_C_MISMATCH, 56, heap_generation(h), 0,
                   "%s: the header says generation %" PRIu64 ", meta/ names %" PRIu64, path,
                   heap_generation(h), mi->generation);
        heap_close(h);
        return NULL;
    }
    return h;
}

/* ---- the store, opened as the check (or the repair) needs it ---- */

/* Builds an objstore over heap h for passes 3..6: LMDB read-only without its
 * lock file (check) or read-write (repair), redo replayed (in RAM for a
 * check), allocator state rebuilt and validated whole.  On a finding or an
 * error, *out is NULL; *finding says whether it was a finding. */
int ck_open_store(struct ck *c, const char *dir, heap_t *h, bool rw, objstore **out);
int ck_open_store(struct ck *c, const char *dir, heap_t *h, bool rw, objstore **out)
{
    *out = NULL;
    objstore *s = calloc(1, sizeof *s);
    if (!s || !(s->dir = strdup(dir))) {
        free(s);
        heap_close(h);
        return oom();
    }
    s->lock_fd = -1;
    s->ro = !rw;
    s->lmdb_nolock = !rw;
    s->opts.free_budget = 1000000;
    s->opts.checkpoint_bytes = UINT64_C(64) << 20;
    s->opts.gc_threshold = UINT64_MAX;   /* a repair collects nothing */
    s->opts.gc_budget = 1000000;
    store_lock_init(&s->lock);
    store_group_init(s);
    pthread_mutex_init(&s->pin_lock, NULL);
    s->heap = h;
    char meta[4200], data[4300];
    snprintf(meta, sizeof meta, "%s/meta", dir);
    snprintf(data, sizeof data, "%s/data.mdb", meta);
    int rc = store_meta_precheck(dir, data);
    if (!rc)
        rc = store_env_open(s, meta, false);
    MDB_txn *txn = NULL;
    if (!rc && (rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn)))
        rc = store_lmdb_err(rc, meta);
    if (!rc && ((rc = store_dbs_open(s, txn, false)) || (rc = store_meta_load(s, txn)))) {
        mdb_txn_abort(txn);
        txn = NULL;
    }
    if (txn && (rc = mdb_txn_commit(txn)))
        rc = store_lmdb_err(rc, meta);
    if (rc) {
        ck_finding(c, OBJSTORE_C_META, 0, 0, 0, "%s", objstore_errmsg());
        goto fail;
    }
    if ((rc = store_replay(s))) {
        /* The chain of records and the heap's age against meta/ are the
         * store's own checks (txn.c T5, T6). */
        int kind = rc == OBJSTORE_EREDO       ? OBJSTORE_C_REDO
                   : rc == OBJSTORE_EMISMATCH ? OBJSTORE_C_MISMATCH
                                              : OBJSTORE_C_META;
        if (kind == OBJSTORE_C_REDO)
            c->redo_bad = true;
        ck_finding(c, kind, 0, 0, kind == OBJSTORE_C_REDO ? 2 : 0, "%s", objstore_errmsg());
        goto fail;
    }
    heap_status hs = heap_reload_header(s->heap);
    if (hs) {
        ck_finding(c, OBJSTORE_C_HEADER, 0, (uint64_t)hs, 0,
                   "heap header after the pending redo records: %s", heap_errmsg(s->heap));
        rc = (int)hs;
        goto fail;
    }
    c->pass = 3;
    if (!c->quiet && !c->final && c->o->on_pass)
        c->o->on_pass(c->o->arg, 3, "Checking heap structure: arena tables, pools, bitmaps, runs");
    if (!c->quiet)
        c->r->passes_done = 2;
    if ((hs = heap_rebuild_full(s->heap))) {
        if (rw && c->o->mode == OBJSTORE_CHECK_REPAIR && hs == HEAP_ECORRUPT &&
            ck_fix_tables(c, s) == OBJSTORE_OK) {
            hs = HEAP_OK;   /* fixed in the mapping; the repair commits it */
        } else {
            if (hs == HEAP_ECORRUPT)
                c->heap_bad = true;
            ck_finding(c, OBJSTORE_C_HEAP, heap_arenas_validated(s->heap), (uint64_t)hs,
                       hs == HEAP_ECORRUPT ? 2 : 0, "%s", heap_errmsg(s->heap));
            rc = (int)hs;
            goto fail;
        }
    }
    if ((rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn))) {
        rc = store_lmdb_err(rc, meta);
        goto fail;
    }
    rc = store_types_load(s, txn);
    if (!rc)
        rc = store_sets_load(s, txn);
    mdb_txn_abort(txn);
    if (rc) {
        ck_finding(c, OBJSTORE_C_META, 0, 0, 0, "%s", objstore_errmsg());
        goto fail;
    }
    *out = s;
    return OBJSTORE_OK;
fail:
    s->failed = true;   /* closing writes nothing (no checkpoint) */
    objstore_close(s);
    return rc ? rc : OBJSTORE_ECORRUPT;
}

/* ---- the lock ---- */

/* The pid of a process holding a write lock on the file (dev, ino), or 0.
 * An OFD lock names no process in /proc/locks (its pid is -1), so the open
 * files of every process we may look at are searched, and their fdinfo says
 * whether that descriptor holds the lock. */
static long lock_holder(const struct stat *sb, bool readers_too)
{
    DIR *proc = opendir("/proc");
    if (!proc)
        return 0;
    long found = 0;
    struct dirent *pe;
    while (!found && (pe = readdir(proc))) {
        char *end;
        long pid = strtol(pe->d_name, &end, 10);
        if (*end || pid <= 0 || pid == (long)getpid())
            continue;
        char path[300];
        snprintf(path, sizeof path, "/proc/%ld/fd", pid);
        DIR *fds = opendir(path);
        if (!fds)
            continue;
        struct dirent *fe;
        while (!found && (fe = readdir(fds))) {
            if (fe->d_name[0] == '.')
                continue;
            struct stat fsb;
            snprintf(path, sizeof path, "/proc/%ld/fd/%s", pid, fe->d_name);
            if (stat(path, &fsb) != 0 || fsb.st_ino != sb->st_ino || fsb.st_dev != sb->st_dev)
                continue;
            snprintf(path, sizeof path, "/proc/%ld/fdinfo/%s", pid, fe->d_name);
            FILE *f = fopen(path, "re");
            if (!f)
                continue;
            char line[512];
            while (fgets(line, sizeof line, f))
                if (strncmp(line, "lock:", 5) == 0 &&
                    (strstr(line, "WRITE") || (readers_too && strstr(line, "READ"))))
                    found = pid;
            fclose(f);
        }
        closedir(fds);
    }
    closedir(proc);
    return found;
}

/* Takes the store lock (shared for a check, exclusive for a repair) on fd. */
static int take_lock(int fd, const char *dir, bool exclusive)
{
    struct flock fl = {.l_type = exclusive ? F_WRLCK : F_RDLCK, .l_whence = SEEK_SET};
    if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
        return OBJSTORE_OK;
    if (errno != EAGAIN && errno != EACCES)
        return store_err(OBJSTORE_EIO, "%s/lock: %s", dir, strerror(errno));
    struct stat sb;
    long pid = fstat(fd, &sb) == 0 ? lock_holder(&sb, exclusive) : 0;
    char comm[64] = "";
    if (pid) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%ld/comm", pid);
        FILE *f = fopen(path, "re");
        if (f) {
            if (fgets(comm, sizeof comm, f))
                comm[strcspn(comm, "\n")] = 0;
            fclose(f);
        }
    }
    /* A repair needs the store to itself: a reader blocks it too. */
    const char *how = exclusive ? "open" : "open for writing";
    if (pid)
        return store_err(OBJSTORE_EBUSY, "%s is %s by process %ld%s%s%s; run %s once it has "
                         "closed the store", dir, how, pid, comm[0] ? " (" : "", comm,
                         comm[0] ? ")" : "", exclusive ? "the repair" : "the check");
    return store_err(OBJSTORE_EBUSY, "%s is %s by another process; run %s once it has closed "
                     "the store", dir, how, exclusive ? "the repair" : "the check");
}

/* ---- one whole check ---- */

struct state {
    struct childres cr;
    uint64_t gen;
    uint64_t strays;
};

static int check_once(struct ck *c, const char *dir, bool lock_missing, struct state *st)
{
    objstore_check_report *r = c->r;
    int rc = ck_meta_run(c, dir, &st->cr);
    if (rc || c->stop)
        return rc;
    const struct metainfo *mi = &st->cr.mi;
    begin_pass(c, 1, "Checking the store's files: directory, lock, heap header");
    st->gen = pass_files(c, dir, mi, lock_missing, &st->strays);
    heap_t *h = st->gen ? open_heap_checked(c, dir, st->gen, mi, false) : NULL;
    begin_pass(c, 2, "Checking meta/ (LMDB, read in a child process) and the redo log");
    ck_meta_report(c, &st->cr);
    if (!c->quiet) {
        r->epoch = mi->epoch;
        r->redo_records = mi->redo_records;
        r->redo_bytes = mi->redo_bytes;
        r->types = mi->types;
        r->roots = mi->roots;
    }
    if (!h || !mi->usable || mi->redo_bad) {
        if (h)
            heap_close(h);
        if (!c->quiet)
            r->passes_done = 2;
        return OBJSTORE_OK;   /* C3 */
    }
    if (!c->quiet)
        r->heap_bytes = heap_size(h);
    objstore *s;
    if ((rc = ck_open_store(c, dir, h, false, &s)))
        return OBJSTORE_OK;   /* its finding is reported */
    c->s = s;
    MDB_txn *txn;
    if ((rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn))) {
        rc = store_lmdb_err(rc, "check");
    } else {
        rc = ck_walk(c, txn);
        mdb_txn_abort(txn);
    }
    if (!c->quiet)
        r->types = s->ntypes_committed;
    return rc;
}

static void end_walk(struct ck *c)
{
    if (c->s)
        objstore_close(c->s);
    c->s = NULL;
    ck_free(c);
}

int objstore_check(const char *dir, const objstore_check_opts *opts,
                   objstore_check_report *r)
{
    static const objstore_check_opts none;
    memset(r, 0, sizeof *r);
    if (!opts)
        opts = &none;
    struct stat sb;
    if (!dir || stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return store_err(OBJSTORE_ENOENT, "%s: no such store directory", dir ? dir : "(null)");
    char lockpath[4200];
    snprintf(lockpath, sizeof lockpath, "%s/lock", dir);
    int fd = open(lockpath, O_RDONLY | O_CLOEXEC);
    bool lock_missing = fd < 0 && errno == ENOENT;
    if (fd < 0 && !lock_missing)
        return store_err(OBJSTORE_EIO, "%s: %s", lockpath, strerror(errno));
    int rc = fd >= 0 ? take_lock(fd, dir, false) : OBJSTORE_OK;
    if (rc) {
        close(fd);
        return rc;
    }
    struct ck c = {.o = opts, .r = r};
    struct state st = {0};
    rc = check_once(&c, dir, lock_missing, &st);
    bool walked = c.s != NULL && r->passes_done == 6;
    end_walk(&c);
    uint64_t want_lf = (opts->flags & OBJSTORE_CHECK_LOST_FOUND) && r->groups;
    if (rc || c.stop || opts->mode == OBJSTORE_CHECK_READONLY ||
        (!r->problems && !want_lf)) {
        memcpy(r->left, r->found, sizeof r->left);
        r->problems_left = r->problems;
        ck_meta_free(&st.cr);
        if (fd >= 0)
            close(fd);
        return rc;
    }

    /* Repair (or preen): the store to ourselves, then a check again. */
    if (fd < 0) {
        fd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) {
            ck_meta_free(&st.cr);
            return store_err(OBJSTORE_EIO, "%s: %s", lockpath, strerror(errno));
        }
    }
    /* An exclusive lock needs a descriptor open for writing. */
    close(fd);
    fd = open(lockpath, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        ck_meta_free(&st.cr);
        return store_err(OBJSTORE_EIO, "%s: %s", lockpath, strerror(errno));
    }
    if ((rc = take_lock(fd, dir, true)))
        goto out;
    if (opts->mode == OBJSTORE_CHECK_REPAIR) {
        if ((rc = ck_repair_files(&c, dir, st.gen)))
            goto out;
        if (c.header_bad && st.gen) {
            const struct metainfo *mi = &st.cr.mi;
            if ((rc = ck_rebuild_header(&c, dir, st.gen, mi->uuid, mi->ckpt)))
                goto out;
            walked = !st.cr.mi.redo_bad;   /* the store is walked now */
        }
        /* The epoch must not be past the damaged record's, when a record is
         * damaged; a chain with a record missing names no record. */
        bool redo_bad = st.cr.mi.redo_bad || c.redo_bad;
        if (redo_bad && opts->discard_redo_from &&
            (!st.cr.mi.redo_bad || opts->discard_redo_from <= st.cr.mi.redo_bad_epoch)) {
            if ((rc = ck_discard_redo(&c, dir, opts->discard_redo_from,
                                      st.cr.mi.usable ? st.cr.mi.uuid : NULL,
                                      st.gen ? st.gen : st.cr.mi.generation,
                                      &r->lost_commits)))
                goto out;
            st.cr.mi.redo_bad = false;
            walked = st.gen != 0;   /* the store is walked now */
        }
    }
    bool force_lf = false;
    if (opts->mode == OBJSTORE_CHECK_REPAIR && (opts->flags & OBJSTORE_CHECK_REBUILD_META) &&
        !st.cr.mi.usable && st.gen && r->found[OBJSTORE_C_META]) {
        struct metainfo *mi = &st.cr.mi;
        uint64_t before = r->repairs;
        if ((rc = ck_rebuild_meta(&c, dir, st.gen, mi->uuid, &mi->ckpt)))
            goto out;
        if (r->repairs > before) {
            mi->usable = true;
            mi->generation = st.gen;
            mi->redo_bad = false;
            walked = true;
            force_lf = true;   /* objects nothing points at become roots */
        }
    }
    if (c.heap_bad && opts->mode == OBJSTORE_CHECK_REPAIR && !st.cr.mi.redo_bad)
        walked = true;   /* the tables are fixed as the store opens */
    if (walked && st.gen) {
        objstore_check_opts wo = *opts;
        if (force_lf)
            wo.flags |= OBJSTORE_CHECK_LOST_FOUND;
        struct ck w = {.o = &wo, .r = r, .quiet = true};
        heap_t *h = open_heap_checked(&w, dir, st.gen, &st.cr.mi, true);
        objstore *s = NULL;
        if (h && !(rc = ck_open_store(&w, dir, h, true, &s))) {
            w.s = s;
            rc = ck_repair_store(&w);
        } else if (h) {
            rc = OBJSTORE_OK;   /* not repairable here: the check says why */
        }
        bool stopped = w.stop;
        end_walk(&w);
        if (rc)
            goto out;
        if (stopped) {   /* nothing of the repair was committed */
            memcpy(r->left, r->found, sizeof r->left);
            r->problems_left = r->problems;
            r->interrupted = 1;
            goto out;
        }
    }
    /* The check after the repair gives what is left. */
    struct ck f = {.o = opts, .r = r, .final = true};
    objstore_check_report keep = *r;
    memset(r, 0, sizeof *r);
    r->repairs = keep.repairs;
    r->repaired = keep.repaired;
    r->lost_commits = keep.lost_commits;
    memcpy(r->first_problem, keep.first_problem, sizeof r->first_problem);
    struct state st2 = {0};
    {
        struct flock fl = {.l_type = F_RDLCK, .l_whence = SEEK_SET};
        fcntl(fd, F_OFD_SETLK, &fl);   /* downgrade: cannot fail */
    }
    rc = check_once(&f, dir, false, &st2);
    end_walk(&f);
    ck_meta_free(&st2.cr);
    /* The figures describe the store as it is now; found[] as first seen. */
    memcpy(r->found, keep.found, sizeof r->found);
    r->problems = keep.problems;
out:
    ck_meta_free(&st.cr);
    close(fd);
    return rc;
}
