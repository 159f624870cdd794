/*
 * test_crash.c -- the crash suite of objstore: guarantees G1 (a commit that
 * returned is durable) and G2 (a crash at any instant leaves exactly the last
 * committed transaction, counts exact, nothing leaked), checked against a
 * model of the store's logical content that knows nothing of the store.
 *
 * The model:
 *   - a workload generator turns (seed, step number, model state) into one
 *     transaction: new objects of two registered types with 0..3 slots and
 *     8..300 byte payloads (sometimes ~40 KiB, so runs of pools are used),
 *     links into slots and roots "r0".."r9", unlinks, payload edits, bulk
 *     chains under "r9", and now and then a transaction that is aborted;
 *   - every object's payload starts with its model id (8 bytes, little
 *     endian), so after a reopen the checker can match store objects to model
 *     objects whatever their oids became;
 *   - no cycles are ever made (a link that would close one is skipped), so at
 *     each commit the model drops exactly what is unreachable, as reference
 *     counting must; the model then holds only reachable objects;
 *   - each committed transaction also writes user metadata "crash.step" =
 *     (steps done, epoch after this commit), so a reopened store says which
 *     model state it must equal, and acknowledged commits can be compared.
 *
 * The checks after every crash (check_store): the roots; for every reachable
 * object its type, slot count, payload bytes, slot targets (by model id) and
 * persisted count (roots + slots of reachable objects); no store object
 * beyond the model's; stats.live_objects; objstore_verify without problems
 * and without unreachable objects; the epoch is at least what "crash.step"
 * recorded.
 *
 * The tests:
 *   1. kill -9 at random instants: a child runs transactions forever and
 *      reports each commit through a pipe; the parent kills it after a random
 *      delay, reopens and checks, round after round on the same store.
 *   2. a crash before each durability step in turn (objstore_set_crash_hook):
 *      a child runs a fixed script (small transactions, a ~3 MiB bulk one, a
 *      freeing one under a free budget, a checkpoint, more, close) and
 *      _exit()s at its N-th step.  A first run learns the script's steps;
 *      every N is then crashed at, except that a long run of one step (the
 *      pwrite ranges of a bulk commit) is sampled: both ends and a few
 *      between.
 *      OBJSTORE_CRASH_ALL_POINTS=1 crashes at every one.
 *   3. the same with another seed, and after each such crash, crashes at the
 *      M-th step of the recovery (the reopen and close), M = 1, 2, ..., each
 *      attempt starting from what the previous one left, until one finishes
 *      (long runs of one step sampled the same way).
 *   4. a bulk load of 94 MiB of new arenas killed (SIGKILL) at its second
 *      write-back step (heap file rule F6), the first one's having run: the
 *      store reopens at the commit before it, and the next load commits.
 *
 * The epoch: an open that frees what the zero-count table holds commits,
 * so the store's epoch may run ahead of the one the last user commit
 * recorded; "only the commit in flight may be added" is therefore counted
 * in model steps that commit, not in epochs.
 *
 * Children never call Check: they report through the pipe and _exit().
 * OBJSTORE_CRASH_SEED sets the workload seed, OBJSTORE_CRASH_VERBOSE=1 prints
 * a line per round or crash point (on stderr).
 */
#include <check.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "objstore.h"
#include "objstore_admin.h"
#include "support.h"

#define KiB (UINT64_C(1) << 10)
#define MiB (UINT64_C(1) << 20)
#define U(x) ((unsigned long long)(x))

/* ck_assert records every passing check; MUST only reports failures. */
#define MUST(cond, ...)                  \
    do {                                 \
        if (!(cond))                     \
            ck_abort_msg(__VA_ARGS__);   \
    } while (0)

/* OBJSTORE_CRASH_VERBOSE=1 prints a line per round or crash point. */
static bool verbose(void)
{
    const char *e = getenv("OBJSTORE_CRASH_VERBOSE");
    return e != NULL && e[0] != '\0' && strcmp(e, "0") != 0;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t env_u64(const char *name, uint64_t dflt)
{
    const char *e = getenv(name);
    if (e == NULL || e[0] == '\0')
        return dflt;
    char *end;
    unsigned long long v = strtoull(e, &end, 0);
    return *end == '\0' ? (uint64_t)v : dflt;
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* ------------------------------------------------------------------ */
/* random numbers: splitmix64, one stream per step                      */

typedef struct rng { uint64_t s; } rng_t;

static uint64_t rnd(rng_t *r)
{
    uint64_t z = (r->s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static uint64_t below(rng_t *r, uint64_t n)
{
    return n == 0 ? 0 : rnd(r) % n;
}

static uint64_t between(rng_t *r, uint64_t lo, uint64_t hi)   /* inclusive */
{
    return lo + below(r, hi - lo + 1);
}

static rng_t step_rng(uint64_t seed, uint64_t step)
{
    rng_t r = { seed ^ (step * UINT64_C(0xD1B54A32D192ED03)) };
    rnd(&r);
    return r;
}

static void fill(rng_t *r, uint8_t *p, uint64_t n)
{
    while (n >= 8) {
        put64(p, rnd(r));
        p += 8;
        n -= 8;
    }
    if (n > 0) {
        uint8_t t[8];
        put64(t, rnd(r));
        memcpy(p, t, n);
    }
}

/* ------------------------------------------------------------------ */
/* the model                                                            */

#define NROOTS    10
#define BULK_ROOT 9          /* "r9" holds bulk chains; the others random */
#define MAXSLOTS  3
#define BIG_MIN   (36 * KiB)
#define BIG_MAX   (44 * KiB)

static const char *const type_names[2] = { "crash.a", "crash.b" };
static const char meta_key[] = "crash.step";

typedef struct mobj {
    uint64_t id;
    uint64_t size;            /* payload bytes, >= 8 */
    uint8_t *bytes;           /* the payload; bytes[0..8) = id */
    uint64_t slot[MAXSLOTS];  /* model ids, 0 = null */
    objstore_oid oid;         /* where it is in the store, when known */
    uint64_t mark;
    uint64_t rc;
    uint32_t tix;             /* index into type_names */
    uint32_t nrefs;
    uint32_t pos;             /* index in model.live */
    bool bulk;
} mobj;

enum { U_NEW, U_SLOT, U_ROOT, U_BYTES };

typedef struct undo {
    int kind;
    uint64_t id;
    uint32_t i;
    uint64_t old;
    uint64_t off, len;
    uint8_t *old_bytes;
} undo;

typedef struct model {
    mobj **byid;              /* byid[id], NULL when freed */
    uint64_t cap;
    uint64_t *live;           /* ids of live objects, in a deterministic order */
    uint32_t nlive, livecap;
    uint32_t nbulk;           /* live objects made by bulk steps */
    uint64_t root[NROOTS];
    uint64_t next_id;         /* ids start at 1 */
    uint64_t step;            /* steps done = number of the next step */
    uint64_t bytes;           /* payload bytes of live objects */
    uint64_t gen;             /* for marks */
    uint64_t *stack;
    size_t nstack, stackcap;
    undo *log;                /* of the open transaction */
    size_t nlog, logcap;
} model;

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (q == NULL && n != 0) {
        fprintf(stderr, "test_crash: out of memory\n");
        _exit(99);
    }
    return q;
}

static void m_init(model *m)
{
    memset(m, 0, sizeof *m);
    m->next_id = 1;
}

static void m_free(model *m)
{
    for (uint32_t i = 0; i < m->nlive; i++) {
        mobj *o = m->byid[m->live[i]];
        free(o->bytes);
        free(o);
    }
    for (size_t i = 0; i < m->nlog; i++)
        free(m->log[i].old_bytes);
    free(m->byid);
    free(m->live);
    free(m->stack);
    free(m->log);
    memset(m, 0, sizeof *m);
}

static mobj *m_get(const model *m, uint64_t id)
{
    return id != 0 && id < m->next_id ? m->byid[id] : NULL;
}

static void push(model *m, uint64_t id)
{
    if (m->nstack == m->stackcap) {
        m->stackcap = m->stackcap ? 2 * m->stackcap : 1024;
        m->stack = xrealloc(m->stack, m->stackcap * sizeof *m->stack);
    }
    m->stack[m->nstack++] = id;
}

static void log_undo(model *m, undo u)
{
    if (m->nlog == m->logcap) {
        m->logcap = m->logcap ? 2 * m->logcap : 256;
        m->log = xrealloc(m->log, m->logcap * sizeof *m->log);
    }
    m->log[m->nlog++] = u;
}

static mobj *m_random(model *m, rng_t *r)
{
    return m->byid[m->live[below(r, m->nlive)]];
}

/* A live object with at least one slot, or NULL after a few tries. */
static mobj *m_random_with_slots(model *m, rng_t *r)
{
    for (int i = 0; i < 8 && m->nlive > 0; i++) {
        mobj *o = m_random(m, r);
        if (o->nrefs > 0)
            return o;
    }
    return NULL;
}

/* Would a slot of a pointing at b close a cycle (is a reachable from b)? */
static bool would_cycle(model *m, const mobj *a, const mobj *b)
{
    m->gen++;
    m->nstack = 0;
    push(m, b->id);
    while (m->nstack > 0) {
        uint64_t id = m->stack[--m->nstack];
        if (id == a->id)
            return true;
        mobj *o = m->byid[id];
        if (o->mark == m->gen)
            continue;
        o->mark = m->gen;
        for (uint32_t i = 0; i < o->nrefs; i++)
            if (o->slot[i] != 0)
                push(m, o->slot[i]);
    }
    return false;
}

/* Drops the objects no root reaches: what reference counting frees. */
static void m_collect(model *m)
{
    m->gen++;
    m->nstack = 0;
    for (int k = 0; k < NROOTS; k++)
        if (m->root[k] != 0)
            push(m, m->root[k]);
    while (m->nstack > 0) {
        mobj *o = m->byid[m->stack[--m->nstack]];
        if (o->mark == m->gen)
            continue;
        o->mark = m->gen;
        for (uint32_t i = 0; i < o->nrefs; i++)
            if (o->slot[i] != 0)
                push(m, o->slot[i]);
    }
    for (uint32_t i = m->nlive; i-- > 0;) {
        mobj *o = m->byid[m->live[i]];
        if (o->mark == m->gen)
            continue;
        uint64_t last = m->live[--m->nlive];
        m->live[i] = last;
        m->byid[last]->pos = i;
        m->byid[o->id] = NULL;
        m->bytes -= o->size;
        m->nbulk -= o->bulk;
        free(o->bytes);
        free(o);
    }
}

/* Persisted counts as the store must have them: roots + slots. */
static void m_counts(model *m)
{
    for (uint32_t i = 0; i < m->nlive; i++)
        m->byid[m->live[i]]->rc = 0;
    for (int k = 0; k < NROOTS; k++)
        if (m->root[k] != 0)
            m->byid[m->root[k]]->rc++;
    for (uint32_t i = 0; i < m->nlive; i++) {
        mobj *o = m->byid[m->live[i]];
        for (uint32_t s = 0; s < o->nrefs; s++)
            if (o->slot[s] != 0)
                m->byid[o->slot[s]]->rc++;
    }
}

static void m_commit(model *m)
{
    for (size_t i = 0; i < m->nlog; i++)
        free(m->log[i].old_bytes);
    m->nlog = 0;
    m_collect(m);
}

static void m_rollback(model *m)
{
    while (m->nlog > 0) {
        undo *u = &m->log[--m->nlog];
        mobj *o = m->byid[u->id];
        switch (u->kind) {
        case U_NEW:
            /* objects are only added during a transaction: o is last */
            m->nlive--;
            m->byid[u->id] = NULL;
            m->bytes -= o->size;
            m->nbulk -= o->bulk;
            m->next_id = u->id;
            free(o->bytes);
            free(o);
            break;
        case U_SLOT:
            o->slot[u->i] = u->old;
            break;
        case U_ROOT:
            m->root[u->i] = u->old;
            break;
        case U_BYTES:
            memcpy(o->bytes + u->off, u->old_bytes, u->len);
            free(u->old_bytes);
            break;
        }
    }
}

/* ------------------------------------------------------------------ */
/* operations: each changes the model and, when x is given, the store   */

typedef struct exec {
    objstore *s;
    objstore_txn *t;
    uint32_t type_id[2];
    char err[512];
} exec;

#define SCALL(x, what, call)                                                   \
    do {                                                                       \
        int rc_ = (call);                                                      \
        if (rc_ != OBJSTORE_OK) {                                              \
            snprintf((x)->err, sizeof (x)->err, "%s = %d (%s): %s", what, rc_, \
                     objstore_strerror(rc_), objstore_errmsg());               \
            return false;                                                      \
        }                                                                      \
    } while (0)

static bool put_bytes(exec *x, objstore_oid oid, uint64_t off, const uint8_t *p,
                      uint64_t len, uint64_t size, bool via_edit)
{
    if (!via_edit) {
        SCALL(x, "objstore_write", objstore_write(x->t, oid, off, p, len));
        return true;
    }
    void *pl;
    uint64_t sz;
    SCALL(x, "objstore_edit", objstore_edit(x->t, oid, &pl, &sz));
    if (sz != size) {
        snprintf(x->err, sizeof x->err, "objstore_edit: size %llu, model says %llu",
                 U(sz), U(size));
        return false;
    }
    memcpy((uint8_t *)pl + off, p, len);
    return true;
}

static bool op_new(model *m, exec *x, rng_t *r, uint32_t tix, uint32_t nrefs,
                   uint64_t size, bool bulk, mobj **out)
{
    bool via_edit = below(r, 2) == 0;
    if (m->next_id >= m->cap) {
        uint64_t nc = m->cap ? 2 * m->cap : 4096;
        m->byid = xrealloc(m->byid, nc * sizeof *m->byid);
        memset(m->byid + m->cap, 0, (nc - m->cap) * sizeof *m->byid);
        m->cap = nc;
    }
    if (m->nlive == m->livecap) {
        m->livecap = m->livecap ? 2 * m->livecap : 1024;
        m->live = xrealloc(m->live, m->livecap * sizeof *m->live);
    }
    mobj *o = xrealloc(NULL, sizeof *o);
    memset(o, 0, sizeof *o);
    o->id = m->next_id++;
    o->size = size;
    o->tix = tix;
    o->nrefs = nrefs;
    o->bulk = bulk;
    o->bytes = xrealloc(NULL, size);
    put64(o->bytes, o->id);
    fill(r, o->bytes + 8, size - 8);
    o->pos = m->nlive;
    m->live[m->nlive++] = o->id;
    m->byid[o->id] = o;
    m->bytes += size;
    m->nbulk += bulk;
    log_undo(m, (undo){ .kind = U_NEW, .id = o->id });
    *out = o;
    if (x != NULL) {
        SCALL(x, "objstore_new",
              objstore_new(x->t, x->type_id[tix], nrefs, size, &o->oid));
        if (!put_bytes(x, o->oid, 0, o->bytes, size, size, via_edit))
            return false;
    }
    return true;
}

static bool op_slot(model *m, exec *x, mobj *a, uint32_t i, uint64_t target)
{
    log_undo(m, (undo){ .kind = U_SLOT, .id = a->id, .i = i, .old = a->slot[i] });
    a->slot[i] = target;
    if (x != NULL)
        SCALL(x, "objstore_set_ref",
              objstore_set_ref(x->t, a->oid, i, target ? m->byid[target]->oid : 0));
    return true;
}

static bool op_root(model *m, exec *x, int k, uint64_t target)
{
    uint64_t old = m->root[k];
    log_undo(m, (undo){ .kind = U_ROOT, .i = (uint32_t)k, .old = old });
    m->root[k] = target;
    if (x != NULL) {
        char name[8];
        snprintf(name, sizeof name, "r%d", k);
        if (target != 0)
            SCALL(x, "objstore_root_set",
                  objstore_root_set(x->t, name, m->byid[target]->oid));
        else if (old != 0)
            SCALL(x, "objstore_root_del", objstore_root_del(x->t, name));
    }
    return true;
}

static bool op_write(model *m, exec *x, rng_t *r, mobj *o, bool via_edit)
{
    if (o->size <= 8)
        return true;
    uint64_t off = between(r, 8, o->size - 1);
    uint64_t maxlen = o->size - off;
    uint64_t cap = o->size > 512 && below(r, 4) == 0 ? 4096 : 64;
    uint64_t len = between(r, 1, maxlen < cap ? maxlen : cap);
    uint8_t *old = xrealloc(NULL, len);
    memcpy(old, o->bytes + off, len);
    log_undo(m, (undo){ .kind = U_BYTES, .id = o->id, .off = off, .len = len,
                        .old_bytes = old });
    fill(r, o->bytes + off, len);
    if (x != NULL)
        return put_bytes(x, o->oid, off, o->bytes + off, len, o->size, via_edit);
    return true;
}

/* A new object, its slots aimed at existing objects, then linked from a
 * random root or slot (or left unlinked: the commit must free it). */
static bool gen_new(model *m, exec *x, rng_t *r, bool big)
{
    uint32_t tix = (uint32_t)below(r, 2);
    uint32_t nrefs = (uint32_t)below(r, MAXSLOTS + 1);
    uint64_t size = big || below(r, 100) < 4 ? between(r, BIG_MIN, BIG_MAX)
                                             : between(r, 8, 300);
    mobj *o;
    if (!op_new(m, x, r, tix, nrefs, size, false, &o))
        return false;
    for (uint32_t i = 0; i < nrefs; i++) {
        if (below(r, 2) == 0 || m->nlive < 2)
            continue;
        mobj *b = m_random(m, r);
        /* o has nothing pointing at it yet: only o -> o closes a cycle */
        if (b != o && !op_slot(m, x, o, i, b->id))
            return false;
    }
    uint64_t how = below(r, 10);
    if (how < 5)
        return op_root(m, x, (int)below(r, BULK_ROOT), o->id);
    if (how < 9) {
        mobj *a = m_random_with_slots(m, r);
        if (a == NULL || would_cycle(m, a, o))
            return true;
        return op_slot(m, x, a, (uint32_t)below(r, a->nrefs), o->id);
    }
    return true;
}

static bool gen_random(model *m, exec *x, rng_t *r)
{
    uint64_t nops = between(r, 1, 6);
    for (uint64_t n = 0; n < nops; n++) {
        bool crowded = m->nlive - m->nbulk > 300;
        uint64_t w = below(r, 100);
        bool ok = true;
        if (m->nlive == 0 || w < (crowded ? 10u : 30u)) {
            ok = gen_new(m, x, r, false);
        } else if (w < 50) {
            mobj *a = m_random_with_slots(m, r);
            if (a == NULL)
                continue;
            uint32_t i = (uint32_t)below(r, a->nrefs);
            if (below(r, 10) < (crowded ? 6u : 3u)) {
                ok = op_slot(m, x, a, i, 0);
            } else {
                mobj *b = m_random(m, r);
                if (!would_cycle(m, a, b))
                    ok = op_slot(m, x, a, i, b->id);
            }
        } else if (w < 60) {
            int k = (int)below(r, BULK_ROOT);
            ok = op_root(m, x, k, m_random(m, r)->id);
        } else if (w < (crowded ? 80u : 68u)) {
            int k = (int)below(r, BULK_ROOT);
            if (m->root[k] != 0)
                ok = op_root(m, x, k, 0);
        } else {
            ok = op_write(m, x, r, m_random(m, r), w >= 95);
        }
        if (!ok)
            return false;
    }
    return true;
}

/* n objects chained by slot 0 in front of what "r9" names, their other
 * slots aimed at older members of the batch; "r9" then names the newest. */
static bool gen_bulk(model *m, exec *x, rng_t *r, uint32_t n, uint32_t big_pct)
{
    uint64_t prev = m->root[BULK_ROOT];
    uint64_t first = m->next_id;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t tix = (uint32_t)below(r, 2);
        uint32_t nrefs = 1 + (uint32_t)below(r, MAXSLOTS);
        uint64_t size = below(r, 100) < big_pct ? between(r, BIG_MIN, BIG_MAX)
                                                : between(r, 8, 1500);
        mobj *o;
        if (!op_new(m, x, r, tix, nrefs, size, true, &o))
            return false;
        if (prev != 0 && !op_slot(m, x, o, 0, prev))
            return false;
        for (uint32_t s = 1; s < nrefs; s++) {
            if (i == 0 || below(r, 2) == 0)
                continue;
            if (!op_slot(m, x, o, s, first + below(r, i)))
                return false;
        }
        prev = o->id;
    }
    return op_root(m, x, BULK_ROOT, prev);
}

/* ------------------------------------------------------------------ */
/* steps: one transaction each                                          */

enum { MODE_KILL, MODE_SCRIPT };
enum { K_RANDOM, K_BULK, K_BIG, K_DROP };
enum { ST_COMMITTED, ST_ABORTED, ST_ERROR };

#define SCRIPT_STEPS      15
#define SCRIPT_CHECKPOINT 8      /* objstore_checkpoint after this step */

typedef struct plan {
    int kind;
    bool abort;
    uint32_t n, big_pct;
} plan;

/* Bulk chains are dropped when the model's bytes pass this; it rises with
 * the steps so the heap file keeps growing now and then. */
static uint64_t kill_cap(uint64_t step)
{
    return 2 * MiB + step * 2 * KiB;
}

static plan plan_step(const model *m, int mode, rng_t *r, uint64_t step)
{
    plan p = { K_RANDOM, false, 0, 0 };
    if (mode == MODE_SCRIPT) {
        switch (step) {
        case 5:  /* ~3 MiB in 2000 objects: the heap grows, bulk paths */
            p = (plan){ .kind = K_BULK, .n = 2000, .big_pct = 2 };
            break;
        case 7:
            p.abort = true;
            break;
        case 8:  /* frees the bulk chain, but what random links keep */
            p.kind = K_DROP;
            break;
        case 10:
            p = (plan){ .kind = K_BULK, .n = 60, .big_pct = 10, .abort = true };
            break;
        case 13:
            p.kind = K_BIG;
            break;
        }
        return p;
    }
    uint64_t w = below(r, 1000);
    if (m->root[BULK_ROOT] != 0 && m->bytes > kill_cap(step)) {
        p.kind = K_DROP;
    } else if (w < 40) {
        p.kind = K_BULK;
        p.n = (uint32_t)between(r, 50, 150);
        p.big_pct = 8;
        p.abort = below(r, 10) == 0;
    } else if (w < 55) {
        p.kind = K_BIG;
        p.abort = below(r, 10) == 0;
    } else {
        p.abort = below(r, 100) < 7;
    }
    return p;
}

/* Runs step number m->step: on the model alone (x NULL) or on the model and
 * the store.  A committed step writes "crash.step" = (steps done, epoch). */
static int do_step(model *m, int mode, uint64_t seed, exec *x)
{
    rng_t r = step_rng(seed, m->step);
    plan p = plan_step(m, mode, &r, m->step);
    if (x == NULL && p.abort) {
        m->step++;
        return ST_ABORTED;
    }
    uint64_t epoch = 0;
    if (x != NULL) {
        x->t = NULL;
        int rc = objstore_begin(x->s, 0, &x->t);
        if (rc != OBJSTORE_OK) {
            snprintf(x->err, sizeof x->err, "objstore_begin = %d: %s", rc,
                     objstore_errmsg());
            return ST_ERROR;
        }
        epoch = objstore_epoch(x->s) + 1;
    }
    bool ok = true;
    switch (p.kind) {
    case K_RANDOM:
        ok = gen_random(m, x, &r);
        break;
    case K_BULK:
        ok = gen_bulk(m, x, &r, p.n, p.big_pct);
        break;
    case K_BIG:
        for (int i = 0; i < 3 && ok; i++)
            ok = gen_new(m, x, &r, true);
        break;
    case K_DROP:
        if (m->root[BULK_ROOT] != 0)
            ok = op_root(m, x, BULK_ROOT, 0);
        break;
    }
    if (!ok) {
        if (x != NULL && x->t != NULL)
            objstore_abort(x->t);
        if (x != NULL)
            x->t = NULL;
        return ST_ERROR;
    }
    if (p.abort) {
        if (x != NULL) {
            objstore_abort(x->t);
            x->t = NULL;
        }
        m_rollback(m);
        m->step++;
        return ST_ABORTED;
    }
    if (x != NULL) {
        uint8_t v[16];
        put64(v, m->step + 1);
        put64(v + 8, epoch);
        int rc = objstore_meta_set(x->t, meta_key, sizeof meta_key - 1, v, sizeof v);
        if (rc != OBJSTORE_OK) {
            snprintf(x->err, sizeof x->err, "objstore_meta_set = %d: %s", rc,
                     objstore_errmsg());
            objstore_abort(x->t);
            x->t = NULL;
            return ST_ERROR;
        }
        rc = objstore_commit(x->t);
        x->t = NULL;
        if (rc != OBJSTORE_OK) {
            snprintf(x->err, sizeof x->err, "objstore_commit (step %llu) = %d: %s",
                     U(m->step), rc, objstore_errmsg());
            return ST_ERROR;
        }
        if (objstore_epoch(x->s) != epoch) {
            snprintf(x->err, sizeof x->err,
                     "after a commit the epoch is %llu, not %llu (one more)",
                     U(objstore_epoch(x->s)), U(epoch));
            return ST_ERROR;
        }
    }
    m_commit(m);
    m->step++;
    return ST_COMMITTED;
}

/* Replays the model alone up to step (the store's "crash.step"); returns
 * how many of the steps numbered >= since committed. */
static uint64_t m_advance(model *m, int mode, uint64_t seed, uint64_t step,
                          uint64_t since)
{
    uint64_t n = 0;
    while (m->step < step) {
        bool counted = m->step >= since;
        if (do_step(m, mode, seed, NULL) == ST_COMMITTED && counted)
            n++;
    }
    return n;
}

/* ------------------------------------------------------------------ */
/* the checker                                                          */

typedef struct checker {
    char err[768];
} checker;

#define FAIL(c, ...)                                            \
    do {                                                        \
        snprintf((c)->err, sizeof (c)->err, __VA_ARGS__);       \
        goto out;                                               \
    } while (0)

#define CCALL(c, what, call)                                                  \
    do {                                                                      \
        int rc_ = (call);                                                     \
        if (rc_ != OBJSTORE_OK)                                               \
            FAIL(c, "%s = %d (%s): %s", what, rc_, objstore_strerror(rc_),    \
                 objstore_errmsg());                                          \
    } while (0)

static bool read_meta(objstore *s, uint64_t *step, uint64_t *epoch, checker *c)
{
    objstore_txn *t = NULL;
    bool ok = false;
    CCALL(c, "objstore_begin(RDONLY)", objstore_begin(s, OBJSTORE_TXN_RDONLY, &t));
    const void *v;
    size_t vlen;
    CCALL(c, "objstore_meta_get(crash.step)",
          objstore_meta_get(t, meta_key, sizeof meta_key - 1, &v, &vlen));
    if (vlen != 16)
        FAIL(c, "meta crash.step has %zu bytes, not 16", vlen);
    *step = get64(v);
    *epoch = get64((const uint8_t *)v + 8);
    ok = true;
out:
    if (t != NULL)
        objstore_commit(t);
    return ok;
}

typedef struct root_list {
    int n;
    char name[NROOTS + 1][16];
    objstore_oid oid[NROOTS + 1];
    bool overflow;
} root_list;

static int collect_root(void *arg, const char *name, objstore_oid oid)
{
    root_list *l = arg;
    if (l->n == NROOTS + 1) {
        l->overflow = true;
        return 1;
    }
    snprintf(l->name[l->n], sizeof l->name[l->n], "%s", name);
    l->oid[l->n++] = oid;
    return 0;
}

/* The model id an object's payload carries; 0 (with why) if unreadable. */
static uint64_t id_at(objstore_txn *t, objstore_oid oid, char why[400])
{
    const void *p;
    uint64_t size;
    int rc = objstore_get(t, oid, &p, &size);
    if (rc != OBJSTORE_OK) {
        snprintf(why, 400, "objstore_get(oid %#llx) = %d (%s): %.300s", U(oid), rc,
                 objstore_strerror(rc), objstore_errmsg());
        return 0;
    }
    if (size < 8) {
        snprintf(why, 400, "oid %#llx has a %llu-byte payload (< 8)", U(oid), U(size));
        return 0;
    }
    return get64(p);
}

/* Is the store's committed content the model's?  Also records each model
 * object's oid, for a child that continues from this state. */
static bool check_store(objstore *s, model *m, checker *c)
{
    objstore_txn *t = NULL;
    bool ok = false;
    objstore_oid *stack = NULL;
    size_t n = 0, cap = 0;
    m_counts(m);
    m->gen++;
    c->err[0] = '\0';
    CCALL(c, "objstore_begin(RDONLY)", objstore_begin(s, OBJSTORE_TXN_RDONLY, &t));

    root_list rl = { 0 };
    CCALL(c, "objstore_root_iter", objstore_root_iter(t, collect_root, &rl));
    int nmroots = 0;
    for (int k = 0; k < NROOTS; k++)
        nmroots += m->root[k] != 0;
    if (rl.overflow || rl.n != nmroots)
        FAIL(c, "the store has %s%d roots, the model %d", rl.overflow ? "more than " : "",
             rl.n, nmroots);
    for (int i = 0; i < rl.n; i++) {
        int k = -1;
        if (rl.name[i][0] == 'r' && rl.name[i][1] >= '0' && rl.name[i][1] <= '9' &&
            rl.name[i][2] == '\0')
            k = rl.name[i][1] - '0';
        if (k < 0 || m->root[k] == 0)
            FAIL(c, "root \"%s\" is in the store, not in the model", rl.name[i]);
        char why[400];
        uint64_t id = id_at(t, rl.oid[i], why);
        if (id == 0)
            FAIL(c, "root %s: %s", rl.name[i], why);
        if (id != m->root[k])
            FAIL(c, "root %s names model object %llu, the model says %llu", rl.name[i],
                 U(id), U(m->root[k]));
        if (n == cap) {
            cap = cap ? 2 * cap : 1024;
            stack = xrealloc(stack, cap * sizeof *stack);
        }
        stack[n++] = rl.oid[i];
    }

    uint64_t seen = 0;
    while (n > 0) {
        objstore_oid oid = stack[--n];
        const void *pl;
        uint64_t size;
        CCALL(c, "objstore_get", objstore_get(t, oid, &pl, &size));
        uint64_t id = size >= 8 ? get64(pl) : 0;
        mobj *o = m_get(m, id);
        if (o == NULL)
            FAIL(c, "reachable oid %#llx (%llu-byte payload) carries model id %llu, "
                 "which the model does not hold", U(oid), U(size), U(id));
        if (o->mark == m->gen) {
            if (o->oid != oid)
                FAIL(c, "model object %llu is at two oids, %#llx and %#llx", U(id),
                     U(o->oid), U(oid));
            continue;
        }
        o->mark = m->gen;
        o->oid = oid;
        seen++;
        objstore_objinfo info;
        CCALL(c, "objstore_info", objstore_info(t, oid, &info));
        const char *tname = NULL;
        CCALL(c, "objstore_type_name", objstore_type_name(t, info.type, &tname));
        if (strcmp(tname, type_names[o->tix]) != 0)
            FAIL(c, "object %llu (oid %#llx): type %s, model says %s", U(id), U(oid),
                 tname, type_names[o->tix]);
        if (info.nrefs != o->nrefs || info.size != o->size || size != o->size)
            FAIL(c, "object %llu (oid %#llx): %u slots, %llu bytes; model says %u, %llu",
                 U(id), U(oid), info.nrefs, U(info.size), o->nrefs, U(o->size));
        if (info.refcount != o->rc)
            FAIL(c, "object %llu (oid %#llx): count %llu, model says %llu "
                 "(roots + slots of reachable objects)", U(id), U(oid),
                 U(info.refcount), U(o->rc));
        if (memcmp(pl, o->bytes, size) != 0) {
            uint64_t at = 0;
            while (((const uint8_t *)pl)[at] == o->bytes[at])
                at++;
            FAIL(c, "object %llu (oid %#llx, %llu bytes): payload byte %llu is %#x, "
                 "model says %#x", U(id), U(oid), U(size), U(at),
                 ((const uint8_t *)pl)[at], o->bytes[at]);
        }
        for (uint32_t i = 0; i < o->nrefs; i++) {
            objstore_oid to;
            CCALL(c, "objstore_get_ref", objstore_get_ref(t, oid, i, &to));
            if (to == 0 && o->slot[i] == 0)
                continue;
            if (to == 0 || o->slot[i] == 0)
                FAIL(c, "object %llu slot %u: oid %#llx, model says object %llu",
                     U(id), i, U(to), U(o->slot[i]));
            char why[400];
            uint64_t tid = id_at(t, to, why);
            if (tid == 0)
                FAIL(c, "object %llu slot %u: %s", U(id), i, why);
            if (tid != o->slot[i])
                FAIL(c, "object %llu slot %u: object %llu, model says %llu", U(id), i,
                     U(tid), U(o->slot[i]));
            if (n == cap) {
                cap = cap ? 2 * cap : 1024;
                stack = xrealloc(stack, cap * sizeof *stack);
            }
            stack[n++] = to;
        }
    }
    if (seen != m->nlive)
        FAIL(c, "%llu objects are reachable in the store, the model has %u", U(seen),
             m->nlive);
    objstore_commit(t);
    t = NULL;

    objstore_stats st;
    CCALL(c, "objstore_get_stats", objstore_get_stats(s, &st));
    if (st.live_objects != m->nlive)
        FAIL(c, "stats: %llu live objects, the model has %u (all reachable)",
             U(st.live_objects), m->nlive);
    if (st.zct_entries != 0)
        FAIL(c, "stats: %llu zero-count entries left after open", U(st.zct_entries));

    objstore_verify_report vr;
    CCALL(c, "objstore_verify", objstore_verify(s, &vr));
    if (vr.total_problems != 0)
        FAIL(c, "verify: %llu problems, first: %s", U(vr.total_problems),
             vr.first_problem);
    if (vr.unreachable != 0 || vr.reachable != m->nlive || vr.objects != m->nlive ||
        vr.roots != (uint64_t)nmroots)
        FAIL(c, "verify: %llu objects, %llu reachable, %llu unreachable, %llu roots; "
             "model: %u objects, %d roots", U(vr.objects), U(vr.reachable),
             U(vr.unreachable), U(vr.roots), m->nlive, nmroots);
    ok = true;
out:
    if (t != NULL)
        objstore_commit(t);
    free(stack);
    return ok;
}

/* ------------------------------------------------------------------ */
/* the pipe between a child and the parent                              */

enum { MSG_READY = 1, MSG_ACK, MSG_HOOK, MSG_CRASH, MSG_DONE, MSG_ERR };

typedef struct msg {
    uint32_t kind;
    uint32_t pad;
    uint64_t step, epoch;     /* READY, ACK: "crash.step" after the commit */
    char text[232];           /* HOOK, CRASH: the step name; ERR: what */
} msg;                        /* 256 bytes: one write is atomic */

static int g_fd = -1;         /* a child's end of the pipe */

static void send_msg(uint32_t kind, uint64_t step, uint64_t epoch, const char *text)
{
    msg mg;
    memset(&mg, 0, sizeof mg);
    mg.kind = kind;
    mg.step = step;
    mg.epoch = epoch;
    if (text != NULL)
        snprintf(mg.text, sizeof mg.text, "%s", text);
    const char *p = (const char *)&mg;
    size_t left = sizeof mg;
    while (left > 0) {
        ssize_t w = write(g_fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            _exit(5);           /* the parent is gone */
        p += w;
        left -= (size_t)w;
    }
}

static void child_fail(const char *fmt, const char *what)
{
    char buf[232];
    snprintf(buf, sizeof buf, fmt, what);
    send_msg(MSG_ERR, 0, 0, buf);
    _exit(3);
}

/* 1 = a message, 0 = end of file. */
static int read_msg(int fd, msg *mg)
{
    char *p = (char *)mg;
    size_t got = 0;
    while (got < sizeof *mg) {
        ssize_t r = read(fd, p + got, sizeof *mg - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return 0;
        got += (size_t)r;
    }
    return 1;
}

static objstore *child_open(const char *dir, const objstore_options *o, exec *x)
{
    objstore *s;
    int rc = objstore_open(dir, o, &s);
    if (rc != OBJSTORE_OK) {
        char buf[200];
        snprintf(buf, sizeof buf, "objstore_open = %d (%s): %s", rc,
                 objstore_strerror(rc), objstore_errmsg());
        child_fail("%s", buf);
    }
    memset(x, 0, sizeof *x);
    x->s = s;
    objstore_txn *t;
    if (objstore_begin(s, OBJSTORE_TXN_RDONLY, &t) != OBJSTORE_OK)
        child_fail("objstore_begin(RDONLY): %s", objstore_errmsg());
    for (int i = 0; i < 2; i++)
        if (objstore_type_id(t, type_names[i], &x->type_id[i]) != OBJSTORE_OK)
            child_fail("objstore_type_id: %s", objstore_errmsg());
    objstore_commit(t);
    return s;
}

/* ------------------------------------------------------------------ */
/* fixtures and store setup                                             */

static char *g_dir;

static void dir_setup(void)
{
    g_dir = ts_test_dir();
}

static void dir_teardown(void)
{
    ts_rmtree(g_dir);
    free(g_dir);
    g_dir = NULL;
}

/* A new store at dir (1 MiB heap, so it must grow) with the two types and
 * "crash.step" = (0, epoch): the model's empty state. */
static uint64_t make_store(const char *dir)
{
    ts_rmtree(dir);
    objstore_options o = { .initial_size = 1 * MiB };
    int rc = objstore_create(dir, &o);
    MUST(rc == OBJSTORE_OK, "objstore_create(%s) = %d: %s", dir, rc, objstore_errmsg());
    objstore *s;
    rc = objstore_open(dir, NULL, &s);
    MUST(rc == OBJSTORE_OK, "objstore_open = %d: %s", rc, objstore_errmsg());
    objstore_txn *t;
    rc = objstore_begin(s, 0, &t);
    MUST(rc == OBJSTORE_OK, "objstore_begin = %d: %s", rc, objstore_errmsg());
    for (int i = 0; i < 2; i++) {
        uint32_t id;
        rc = objstore_type_register(t, type_names[i], &id);
        MUST(rc == OBJSTORE_OK, "objstore_type_register = %d: %s", rc, objstore_errmsg());
    }
    uint8_t v[16];
    put64(v, 0);
    put64(v + 8, objstore_epoch(s) + 1);
    rc = objstore_meta_set(t, meta_key, sizeof meta_key - 1, v, sizeof v);
    MUST(rc == OBJSTORE_OK, "objstore_meta_set = %d: %s", rc, objstore_errmsg());
    rc = objstore_commit(t);
    MUST(rc == OBJSTORE_OK, "objstore_commit = %d: %s", rc, objstore_errmsg());
    uint64_t epoch = objstore_epoch(s);
    rc = objstore_close(s);
    MUST(rc == OBJSTORE_OK, "objstore_close = %d: %s", rc, objstore_errmsg());
    return epoch;
}

/* Opens dir as a user would after the crash, advances the model to the
 * step the store says it is at, and checks everything.  *step_out gets that
 * step, *epoch_out the store's epoch. */
typedef struct reopened {
    uint64_t step;            /* "crash.step": the steps done */
    uint64_t epoch;           /* the epoch the last commit recorded */
    uint64_t now;             /* objstore_epoch() after the open */
    uint64_t commits_since;   /* commits of steps numbered >= since */
} reopened;

/* Opens dir as a user would after the crash, advances the model to the
 * step the store says it is at, and checks everything. */
static reopened reopen_and_check(const char *dir, model *m, int mode, uint64_t seed,
                                 const char *when, uint64_t since)
{
    reopened ro = { 0, 0, 0, 0 };
    objstore *s;
    int rc = objstore_open(dir, NULL, &s);
    MUST(rc == OBJSTORE_OK, "%s: reopen: objstore_open = %d (%s): %s", when, rc,
         objstore_strerror(rc), objstore_errmsg());
    checker c = { "" };
    bool ok = read_meta(s, &ro.step, &ro.epoch, &c);
    ro.now = objstore_epoch(s);
    if (ok) {
        MUST(ro.step >= m->step, "%s: the store is at step %llu, an earlier check saw "
             "%llu (a committed transaction was lost)", when, U(ro.step), U(m->step));
        /* an open may commit too (it frees what the zero-count table holds) */
        MUST(ro.now >= ro.epoch, "%s: the store's epoch is %llu, but its last commit "
             "(step %llu) recorded epoch %llu", when, U(ro.now), U(ro.step), U(ro.epoch));
        ro.commits_since = m_advance(m, mode, seed, ro.step, since);
        ok = check_store(s, m, &c);
    }
    rc = objstore_close(s);
    MUST(ok, "%s, at step %llu, epoch %llu, seed %#llx: %s", when, U(m->step), U(ro.now),
         U(seed), c.err);
    MUST(rc == OBJSTORE_OK, "%s: objstore_close = %d: %s", when, rc, objstore_errmsg());
    return ro;
}

/* ------------------------------------------------------------------ */
/* 1. kill -9 at random instants                                        */

/* The child: opens, says READY, runs steps forever, ACKs each commit. */
static void kill_child(const char *dir, model *m, uint64_t seed, const objstore_options *o)
{
    exec x;
    child_open(dir, o, &x);
    send_msg(MSG_READY, m->step, objstore_epoch(x.s), NULL);
    for (uint64_t n = 0; n < 10000000; n++) {
        int r = do_step(m, MODE_KILL, seed, &x);
        if (r == ST_ERROR)
            child_fail("%s", x.err);
        if (r == ST_COMMITTED)
            send_msg(MSG_ACK, m->step, objstore_epoch(x.s), NULL);
    }
    _exit(4);   /* never killed: the parent is gone */
}

START_TEST(test_every_acknowledged_commit_survives_kill_9_at_random_instants)
{
    /* No scaling down under the sanitizers: the rounds wait on fdatasync
     * more than they compute (200 take ~5 s in either build). */
    uint64_t kills = env_u64("OBJSTORE_CRASH_KILLS", 200);
    uint64_t seed = env_u64("OBJSTORE_CRASH_SEED", UINT64_C(0xC0FFEE5EED));
    rng_t pr = { seed ^ UINT64_C(0x4B494C4C) };
    uint64_t t0 = now_ns();
    uint64_t epoch = make_store(g_dir);
    model m;
    m_init(&m);
    uint64_t acks = 0, early = 0, unacked = 0, in_open = 0, drains = 0;

    for (uint64_t round = 0; round < kills; round++) {
        objstore_options o = { 0 };
        o.sync = round % 4 == 3 ? OBJSTORE_SYNC_RELAXED : OBJSTORE_SYNC_DURABLE;
        o.checkpoint_bytes = round % 3 == 1 ? 64 * KiB : round % 3 == 2 ? 1 * MiB : 0;
        o.free_budget = round % 5 == 4 ? 40 : 0;
        int fds[2];
        MUST(pipe(fds) == 0, "pipe: %s", strerror(errno));
        pid_t pid = fork();
        MUST(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0) {
            close(fds[0]);
            signal(SIGPIPE, SIG_IGN);
            g_fd = fds[1];
            kill_child(g_dir, &m, seed, &o);
        }
        close(fds[1]);

        /* most rounds: kill 0..30 ms after the child is open; one in eight:
         * 0..8 ms after the fork, which may land in its recovery */
        bool kill_early = below(&pr, 8) == 0;
        uint64_t delay = kill_early ? below(&pr, 8000001)
                                    : below(&pr, 4) == 0 ? below(&pr, 2000001)
                                                         : below(&pr, 30000001);
        uint64_t deadline = kill_early ? now_ns() + delay : 0;
        uint64_t last_step = m.step, last_epoch = epoch;
        bool ready = false, eof = false, stuck = false;
        char err[256] = "";
        for (;;) {
            uint64_t t = now_ns();
            if (deadline != 0 && t >= deadline)
                break;
            int timeout = deadline != 0 ? (int)((deadline - t + 999999) / 1000000) : 60000;
            struct pollfd pf = { .fd = fds[0], .events = POLLIN };
            int pr_ = poll(&pf, 1, timeout);
            if (pr_ < 0 && errno == EINTR)
                continue;
            MUST(pr_ >= 0, "poll: %s", strerror(errno));
            if (pr_ == 0 && deadline == 0) {
                stuck = true;
                break;
            }
            if (pr_ == 0)
                continue;
            msg mg;
            if (!read_msg(fds[0], &mg)) {
                eof = true;
                break;
            }
            if (mg.kind == MSG_READY) {
                ready = true;
                if (deadline == 0)
                    deadline = now_ns() + delay;
            } else if (mg.kind == MSG_ACK) {
                last_step = mg.step, last_epoch = mg.epoch, acks++;
            } else if (mg.kind == MSG_ERR) {
                snprintf(err, sizeof err, "%s", mg.text);
            }
        }
        kill(pid, SIGKILL);
        int status;
        MUST(waitpid(pid, &status, 0) == pid, "waitpid: %s", strerror(errno));
        /* what the child wrote before it died was acknowledged too */
        msg mg;
        while (!eof && read_msg(fds[0], &mg)) {
            if (mg.kind == MSG_READY)
                ready = true;
            else if (mg.kind == MSG_ACK)
                last_step = mg.step, last_epoch = mg.epoch, acks++;
            else if (mg.kind == MSG_ERR)
                snprintf(err, sizeof err, "%s", mg.text);
        }
        close(fds[0]);
        MUST(!stuck, "round %llu: the child did not open the store in 60 s", U(round));
        MUST(err[0] == '\0', "round %llu: the child failed at step %llu: %s", U(round),
             U(last_step), err);
        MUST(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
             "round %llu: the child ended with status %#x before it was killed",
             U(round), status);
        early += kill_early;
        in_open += !ready;

        char when[96];
        snprintf(when, sizeof when, "kill round %llu (last ack: step %llu, epoch %llu)",
                 U(round), U(last_step), U(last_epoch));
        reopened ro = reopen_and_check(g_dir, &m, MODE_KILL, seed, when, last_step);
        MUST(ro.step >= last_step, "%s: the store is at step %llu, before the last "
             "acknowledged commit", when, U(ro.step));
        MUST(ro.commits_since <= 1, "%s: the store is at step %llu, %llu commits past "
             "the last acknowledged: only the one in flight may be added", when,
             U(ro.step), U(ro.commits_since));
        MUST(ro.epoch >= last_epoch, "%s: the last commit recorded epoch %llu, below the "
             "acknowledged %llu", when, U(ro.epoch), U(last_epoch));
        unacked += ro.commits_since;
        drains += ro.now > ro.epoch;   /* an open freed the zero-count table */
        epoch = ro.epoch;
        if (verbose())
            fprintf(stderr, "%s: %s, step %llu, epoch %llu, %.2f s\n", when,
                    kill_early ? "early" : "late", U(ro.step), U(ro.now),
                    (double)(now_ns() - t0) / 1e9);
    }
    m_free(&m);
    char *heap = ts_path(g_dir, "heap.1");
    struct stat sb;
    MUST(heap != NULL && stat(heap, &sb) == 0, "stat heap.1: %s", strerror(errno));
    free(heap);
    printf("random kills: %llu rounds (%llu early, %llu before open finished), "
           "%llu commits acknowledged, %llu unacknowledged commits kept, "
           "%llu drains at open, epoch %llu, heap 1 -> %llu MiB, %.1f s\n",
           U(kills), U(early), U(in_open), U(acks), U(unacked), U(drains), U(epoch),
           U((uint64_t)sb.st_size / MiB), (double)(now_ns() - t0) / 1e9);
    fflush(stdout);
}
END_TEST

/* ------------------------------------------------------------------ */
/* 2, 3. a crash before each durability step                            */

#define AT_FIRST_COMMIT (-1L)   /* target: crash at the first "*-commit" */
#define NEVER           LONG_MAX

static long g_hook_calls, g_hook_target;

static bool is_commit_step(const char *step)
{
    size_t n = strlen(step);
    return n >= 7 && strcmp(step + n - 7, "-commit") == 0;
}

/* Counts durability steps; at the target-th, dies as a crash would, before
 * the step runs.  Every step is reported, so the parent knows the sequence. */
static void crash_hook(const char *step)
{
    g_hook_calls++;
    if (g_hook_calls == g_hook_target ||
        (g_hook_target == AT_FIRST_COMMIT && is_commit_step(step))) {
        send_msg(MSG_CRASH, (uint64_t)g_hook_calls, 0, step);
        _exit(77);
    }
    send_msg(MSG_HOOK, (uint64_t)g_hook_calls, 0, step);
}

/* The fixed script: open, SCRIPT_STEPS steps with a checkpoint after
 * SCRIPT_CHECKPOINT, close.  A commit frees at most SCRIPT_FREE_BUDGET
 * objects, so the bulk chain's release leaves most of it in the zero-count
 * table for later commits, and for the next open, to free. */
#define SCRIPT_FREE_BUDGET 300

static void script_child(const char *dir, model *m, uint64_t seed)
{
    exec x;
    objstore_options o = { .free_budget = SCRIPT_FREE_BUDGET };
    objstore_set_crash_hook(crash_hook);
    child_open(dir, &o, &x);
    send_msg(MSG_READY, m->step, objstore_epoch(x.s), NULL);
    while (m->step < SCRIPT_STEPS) {
        int r = do_step(m, MODE_SCRIPT, seed, &x);
        if (r == ST_ERROR)
            child_fail("%s", x.err);
        if (r == ST_COMMITTED)
            send_msg(MSG_ACK, m->step, objstore_epoch(x.s), NULL);
        if (m->step == SCRIPT_CHECKPOINT + 1) {
            int rc = objstore_checkpoint(x.s);
            if (rc != OBJSTORE_OK)
                child_fail("objstore_checkpoint: %s", objstore_errmsg());
        }
    }
    int rc = objstore_close(x.s);
    if (rc != OBJSTORE_OK)
        child_fail("objstore_close: %s", objstore_errmsg());
    send_msg(MSG_DONE, m->step, 0, NULL);
    _exit(0);
}

/* A reopen (the recovery) and a close. */
static void recovery_child(const char *dir)
{
    exec x;
    objstore_set_crash_hook(crash_hook);
    child_open(dir, NULL, &x);
    int rc = objstore_close(x.s);
    if (rc != OBJSTORE_OK)
        child_fail("objstore_close: %s", objstore_errmsg());
    send_msg(MSG_DONE, 0, 0, NULL);
    _exit(0);
}

/* Step names, interned. */
#define MAX_KINDS 32

typedef struct kinds {
    int n;
    char name[MAX_KINDS][32];
    long count[MAX_KINDS];
} kinds;

static kinds g_names;

static int intern(const char *name)
{
    for (int i = 0; i < g_names.n; i++)
        if (strcmp(g_names.name[i], name) == 0)
            return i;
    MUST(g_names.n < MAX_KINDS, "more than %d step names", MAX_KINDS);
    snprintf(g_names.name[g_names.n], sizeof g_names.name[0], "%.31s", name);
    return g_names.n++;
}

static void note_kind(kinds *k, const char *name)
{
    for (int i = 0; i < k->n; i++)
        if (strcmp(k->name[i], name) == 0) {
            k->count[i]++;
            return;
        }
    if (k->n < MAX_KINDS) {
        snprintf(k->name[k->n], sizeof k->name[k->n], "%.31s", name);
        k->count[k->n++] = 1;
    }
}

static bool has_kind(const kinds *k, const char *name)
{
    for (int i = 0; i < k->n; i++)
        if (strcmp(k->name[i], name) == 0)
            return true;
    return false;
}

typedef struct run_result {
    bool crashed, done;
    char crash_step[64];
    long hooks;               /* steps reached, the crashing one included */
    long committed_hooks;     /* "lmdb-committed" among them */
    uint8_t *seq;             /* interned names of the steps reached */
    uint64_t last_step, last_epoch;
    uint64_t ready_epoch;     /* the epoch the child found at open */
    bool acked, ready;
    char err[256];
    int status;
} run_result;

/* Forks a script (which 0) or recovery (1) child that crashes at its
 * target-th durability step, and collects what it reported. */
static void run_child(int which, const char *dir, model *m, uint64_t seed, long target,
                      run_result *res)
{
    memset(res, 0, sizeof *res);
    long seqcap = 0;
    int fds[2];
    MUST(pipe(fds) == 0, "pipe: %s", strerror(errno));
    pid_t pid = fork();
    MUST(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        close(fds[0]);
        signal(SIGPIPE, SIG_IGN);
        g_fd = fds[1];
        g_hook_calls = 0;
        g_hook_target = target;
        if (which == 0)
            script_child(dir, m, seed);
        recovery_child(dir);
    }
    close(fds[1]);
    msg mg;
    while (read_msg(fds[0], &mg)) {
        switch (mg.kind) {
        case MSG_READY:
            res->ready = true;
            res->ready_epoch = mg.epoch;
            break;
        case MSG_ACK:
            res->acked = true;
            res->last_step = mg.step, res->last_epoch = mg.epoch;
            break;
        case MSG_HOOK:
        case MSG_CRASH:
            if (res->hooks == seqcap) {
                seqcap = seqcap ? 2 * seqcap : 256;
                res->seq = xrealloc(res->seq, (size_t)seqcap);
            }
            res->seq[res->hooks++] = (uint8_t)intern(mg.text);
            res->committed_hooks += strcmp(mg.text, "lmdb-committed") == 0;
            if (mg.kind == MSG_CRASH) {
                res->crashed = true;
                snprintf(res->crash_step, sizeof res->crash_step, "%.60s", mg.text);
            }
            break;
        case MSG_DONE:
            res->done = true;
            break;
        case MSG_ERR:
            snprintf(res->err, sizeof res->err, "%s", mg.text);
            break;
        }
    }
    close(fds[0]);
    MUST(waitpid(pid, &res->status, 0) == pid, "waitpid: %s", strerror(errno));
    int st = res->status;
    bool good = res->err[0] == '\0' &&
                ((res->crashed && WIFEXITED(st) && WEXITSTATUS(st) == 77) ||
                 (res->done && WIFEXITED(st) && WEXITSTATUS(st) == 0));
    if (!good)
        free(res->seq);
    MUST(good, "%s child (crash at step %ld): %s (status %#x, %ld steps seen)",
         which == 0 ? "script" : "recovery", target,
         res->err[0] ? res->err : "ended without reporting", st, res->hooks);
}

/* Which of the steps 1..n of a sequence to crash at: all of them, except
 * that of a long run of the same step (the per-range pwrites of a bulk
 * commit) only both ends and a few between. */
static long pick_points(const uint8_t *seq, long n, long *out)
{
    long k = 0;
    for (long i = 0; i < n;) {
        long j = i;
        while (j < n && seq[j] == seq[i])
            j++;
        long len = j - i;
        if (len <= 8 || env_u64("OBJSTORE_CRASH_ALL_POINTS", 0) != 0) {
            for (long p = i; p < j; p++)
                out[k++] = p + 1;
        } else {
            out[k++] = i + 1, out[k++] = i + 2;
            for (long q = 1; q <= 4; q++)
                out[k++] = i + len * q / 5 + 1;
            out[k++] = j - 1, out[k++] = j;
        }
        i = j;
    }
    return k;
}

typedef struct tally {
    long points, rpoints, drift;
    kinds seen, rseen;
} tally;

/* Crashes the recovery of the store at dir at its durability steps in
 * turn (cumulatively, as repeated crashes would), until one finishes.
 * Steps before a "*-commit" change nothing durable, so a dry run that stops
 * at the first commit step gives the sequence the next attempts follow;
 * after one crash past the commit the sequence is learnt again. */
static void crash_recovery(const char *dir, model *m, uint64_t seed, const char *when,
                           tally *ty)
{
    for (int round = 0;; round++) {
        MUST(round < 100, "%s: recovery never finished", when);
        run_result dry;
        run_child(1, dir, m, seed, AT_FIRST_COMMIT, &dry);
        if (dry.done) {
            free(dry.seq);
            return;
        }
        ty->rpoints++;
        note_kind(&ty->rseen, dry.crash_step);
        long *pts = xrealloc(NULL, (size_t)(dry.hooks + 8) * sizeof *pts);
        long np = pick_points(dry.seq, dry.hooks - 1, pts);
        for (long i = 0; i < np; i++) {
            run_result rr;
            run_child(1, dir, m, seed, pts[i], &rr);
            MUST(rr.crashed, "%s: a recovery that stopped before step %ld of %ld "
                 "finished at the next attempt", when, dry.hooks, pts[i]);
            ty->rpoints++;
            note_kind(&ty->rseen, rr.crash_step);
            ty->drift += strcmp(rr.crash_step, g_names.name[dry.seq[pts[i] - 1]]) != 0;
            free(rr.seq);
        }
        /* cross the commit: crash 1..4 steps after it (varied, so that the
         * steps that follow a commit are reached too), or finish */
        run_result rr;
        run_child(1, dir, m, seed, dry.hooks + 1 + (ty->points + round) % 4, &rr);
        free(pts);
        free(dry.seq);
        free(rr.seq);
        if (rr.done)
            return;
        ty->rpoints++;
        note_kind(&ty->rseen, rr.crash_step);
    }
}

/* Crashes at each durability step N of the script (a long run of one step
 * sampled), each from a new store; with recovery, crashes its recovery
 * too; then reopens and checks. */
static void crash_points(bool recovery, uint64_t seed)
{
    uint64_t t0 = now_ns();
    tally ty;
    memset(&ty, 0, sizeof ty);
    model m;

    /* the whole script once, to learn its steps */
    make_store(g_dir);
    m_init(&m);
    run_result full;
    run_child(0, g_dir, &m, seed, NEVER, &full);
    MUST(full.done && full.last_step == SCRIPT_STEPS, "the script stopped at step %llu",
         U(full.last_step));
    reopened ro = reopen_and_check(g_dir, &m, MODE_SCRIPT, seed, "after the whole script",
                                   0);
    MUST(ro.step == SCRIPT_STEPS, "after the whole script the store is at step %llu",
         U(ro.step));
    m_free(&m);
    long *pts = xrealloc(NULL, (size_t)(full.hooks + 8) * sizeof *pts);
    long np = pick_points(full.seq, full.hooks, pts);

    for (long i = 0; i < np; i++) {
        long n = pts[i];
        make_store(g_dir);
        m_init(&m);
        run_result res;
        run_child(0, g_dir, &m, seed, n, &res);
        MUST(res.crashed, "the script finished before its step %ld of %ld", n,
             full.hooks);
        ty.points++;
        note_kind(&ty.seen, res.crash_step);
        ty.drift += strcmp(res.crash_step, g_names.name[full.seq[n - 1]]) != 0;
        MUST(res.ready, "the script crashed at step %ld, before its open finished", n);
        uint64_t acked = res.acked ? res.last_step : 0;
        uint64_t ack_epoch = res.acked ? res.last_epoch : res.ready_epoch;
        char when[160];
        snprintf(when, sizeof when, "crash before step %ld (%s) of the script, "
                 "last ack at step %llu", n, res.crash_step, U(acked));
        if (recovery)
            crash_recovery(g_dir, &m, seed, when, &ty);
        ro = reopen_and_check(g_dir, &m, MODE_SCRIPT, seed, when, acked);
        if (verbose())
            fprintf(stderr, "%s: step %llu, epoch %llu, %.2f s\n", when, U(ro.step),
                    U(ro.epoch), (double)(now_ns() - t0) / 1e9);
        MUST(ro.step >= acked, "%s: the store is at step %llu, before an acknowledged "
             "commit", when, U(ro.step));
        MUST(ro.commits_since <= 1 && ro.epoch <= ack_epoch + 1, "%s: the store is at "
             "step %llu, epoch %llu, the last acknowledged is epoch %llu: only the commit "
             "in flight may be added", when, U(ro.step), U(ro.epoch), U(ack_epoch));
        /* exact: a crash at "lmdb-committed" or later keeps that commit */
        MUST(ro.epoch == res.ready_epoch + (uint64_t)res.committed_hooks, "%s: the store "
             "is at epoch %llu, but it was at %llu and %ld LMDB commits had completed "
             "(\"lmdb-committed\" reached)", when, U(ro.epoch), U(res.ready_epoch),
             res.committed_hooks);
        free(res.seq);
        m_free(&m);
    }
    free(pts);
    free(full.seq);

    char list[600] = "";
    const kinds *k = recovery ? &ty.rseen : &ty.seen;
    for (int i = 0; i < k->n; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s x%ld",
                 i ? ", " : "", k->name[i], k->count[i]);
    if (recovery)
        printf("recovery crash points run: %ld, after %ld script crash points "
               "(steps seen: %s), %.1f s\n", ty.rpoints, ty.points, list,
               (double)(now_ns() - t0) / 1e9);
    else
        printf("crash points run: %ld of %ld steps (steps seen: %s), %.1f s\n",
               ty.points, full.hooks, list, (double)(now_ns() - t0) / 1e9);
    if (ty.drift != 0)
        printf("  (%ld crash points met another step than the first run had there)\n",
               ty.drift);
    fflush(stdout);
    MUST(has_kind(&ty.seen, "heap-pwrite") && has_kind(&ty.seen, "heap-fdatasync") &&
         has_kind(&ty.seen, "lmdb-commit"),
         "the script did not reach heap-pwrite, heap-fdatasync and lmdb-commit");
    if (recovery)
        MUST(ty.rpoints > 0, "no recovery ever reached a durability step");
}

START_TEST(test_a_crash_before_any_durability_step_keeps_exactly_the_committed_state)
{
    crash_points(false, env_u64("OBJSTORE_CRASH_SEED", UINT64_C(0xC0FFEE5EED)));
}
END_TEST

START_TEST(test_a_crash_during_recovery_from_any_crash_point_loses_nothing)
{
    crash_points(true, env_u64("OBJSTORE_CRASH_SEED", UINT64_C(0xC0FFEE5EED)) + 1);
}
END_TEST

/* ---- a bulk load killed while its new arenas are written back ---- */

#define BULK_OBJECTS 6000
#define BULK_PAYLOAD 16000   /* a pool each: 6,000 make 94 MiB of new arenas */

static int g_writebacks;

/* Kills the process at the second write-back step (heap file rule F6): the
 * first one's sync_file_range has run by then. */
static void die_at_second_writeback(const char *step)
{
    if (strcmp(step, "heap-writeback") == 0 && ++g_writebacks == 2)
        raise(SIGKILL);
}

static void bulk_child(const char *dir)
{
    objstore *s;
    objstore_txn *t;
    objstore_oid holder, o;
    if (objstore_open(dir, NULL, &s) || objstore_begin(s, 0, &t) ||
        objstore_new(t, 0, BULK_OBJECTS, 0, &holder) || objstore_root_set(t, "bulk", holder))
        _exit(10);
    objstore_set_crash_hook(die_at_second_writeback);
    for (uint32_t i = 0; i < BULK_OBJECTS; i++)
        if (objstore_new(t, 0, 0, BULK_PAYLOAD, &o) || objstore_write(t, o, 0, &i, sizeof i) ||
            objstore_set_ref(t, holder, i, o))
            _exit(11);
    objstore_commit(t);
    _exit(12);   /* the transaction never reached a second write-back */
}

START_TEST(test_a_bulk_load_killed_while_its_arenas_are_written_back_leaves_the_last_commit)
{
    char *dir = ts_path(g_dir, "bulk");
    const char keep[] = "committed before the bulk load";
    objstore *s;
    objstore_txn *t;
    objstore_oid o;
    MUST(objstore_create(dir, NULL) == OBJSTORE_OK && objstore_open(dir, NULL, &s) == OBJSTORE_OK,
         "create %s: %s", dir, objstore_errmsg());
    MUST(objstore_begin(s, 0, &t) == OBJSTORE_OK &&
         objstore_new(t, 0, 0, sizeof keep, &o) == OBJSTORE_OK &&
         objstore_write(t, o, 0, keep, sizeof keep) == OBJSTORE_OK &&
         objstore_root_set(t, "keep", o) == OBJSTORE_OK && objstore_commit(t) == OBJSTORE_OK,
         "the first commit: %s", objstore_errmsg());
    MUST(objstore_close(s) == OBJSTORE_OK, "close: %s", objstore_errmsg());

    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        bulk_child(dir);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    MUST(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
         "the bulk load was not killed at its second write-back (exit %d)",
         WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    struct stat sb;
    char *heap = ts_path(dir, "heap.1");
    ck_assert_int_eq(stat(heap, &sb), 0);
    MUST(sb.st_size > (off_t)(64 * MiB), "the heap file is only %lld bytes: no write-back ran",
         (long long)sb.st_size);

    /* The store is at its first commit: the bulk load left nothing. */
    MUST(objstore_open(dir, NULL, &s) == OBJSTORE_OK, "reopen: %s", objstore_errmsg());
    objstore_verify_report r;
    MUST(objstore_verify(s, &r) == OBJSTORE_OK, "verify: %s", objstore_errmsg());
    MUST(r.total_problems == 0 && r.unreachable == 0 && r.objects == 1,
         "after the crash: %llu objects, %llu unreachable, %llu problems (%s)", U(r.objects),
         U(r.unreachable), U(r.total_problems), r.first_problem);
    const void *p;
    uint64_t len;
    objstore_oid got = 0;
    MUST(objstore_begin(s, OBJSTORE_TXN_RDONLY, &t) == OBJSTORE_OK, "begin: %s", objstore_errmsg());
    ck_assert_int_eq(objstore_root_get(t, "bulk", &got), OBJSTORE_ENOTFOUND);
    MUST(objstore_root_get(t, "keep", &got) == OBJSTORE_OK && got == o &&
         objstore_get(t, got, &p, &len) == OBJSTORE_OK,
         "the committed object: %s", objstore_errmsg());
    ck_assert_uint_eq(len, sizeof keep);
    ck_assert(memcmp(p, keep, sizeof keep) == 0);
    objstore_abort(t);

    /* And the next bulk load commits whole. */
    MUST(objstore_begin(s, 0, &t) == OBJSTORE_OK, "begin: %s", objstore_errmsg());
    objstore_oid holder;
    MUST(objstore_new(t, 0, 1000, 0, &holder) == OBJSTORE_OK &&
         objstore_root_set(t, "bulk", holder) == OBJSTORE_OK, "%s", objstore_errmsg());
    for (uint32_t i = 0; i < 1000; i++)
        MUST(objstore_new(t, 0, 0, BULK_PAYLOAD, &o) == OBJSTORE_OK &&
             objstore_set_ref(t, holder, i, o) == OBJSTORE_OK, "%s", objstore_errmsg());
    MUST(objstore_commit(t) == OBJSTORE_OK, "commit: %s", objstore_errmsg());
    MUST(objstore_verify(s, &r) == OBJSTORE_OK && r.total_problems == 0 && r.objects == 1002,
         "after the second load: %llu objects, %llu problems", U(r.objects),
         U(r.total_problems));
    MUST(objstore_close(s) == OBJSTORE_OK, "close: %s", objstore_errmsg());
    free(heap);
    free(dir);
}
END_TEST

/* ------------------------------------------------------------------ */

static TCase *tcase(Suite *s, const char *name)
{
    TCase *tc = tcase_create(name);
    tcase_add_unchecked_fixture(tc, ts_root_setup, ts_root_teardown);
    tcase_add_checked_fixture(tc, dir_setup, dir_teardown);
    tcase_set_timeout(tc, 600);
    suite_add_tcase(s, tc);
    return tc;
}

static Suite *crash_suite(void)
{
    Suite *s = suite_create("crash");
    TCase *tc = tcase(s, "points");
    tcase_add_test(tc, test_a_crash_before_any_durability_step_keeps_exactly_the_committed_state);
    tcase_add_test(tc, test_a_crash_during_recovery_from_any_crash_point_loses_nothing);
    tc = tcase(s, "kill");
    tcase_add_test(tc, test_every_acknowledged_commit_survives_kill_9_at_random_instants);
    tcase_add_test(tc, test_a_bulk_load_killed_while_its_arenas_are_written_back_leaves_the_last_commit);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(crash_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
