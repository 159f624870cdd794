/*
 * test_faults.c -- the Check suite of I/O faults: every write, sync, resize
 * or file creation a workload makes, the library's and LMDB's alike, fails
 * in turn with ENOSPC and then with EIO, and the store must come through
 * (ARCHITECTURE.md G1, G2, G4).
 *
 * How: the workload runs in a child process, this program exec'd again with
 * tests/fault_shim.so preloaded (built beside it; its header says how it
 * picks the call that fails).  A first run without a fault counts the calls
 * (the sites) and records the logical digest after every step; then one run
 * per site and errno.  For each run:
 *
 *   R1 the child must exit normally: a crash or an abort fails the test;
 *   R2 a step that fails returns a status code with a message; the child
 *      then stops the workload (aborting the transaction it may hold) and
 *      closes the handle, as a program would;
 *   R3 reopened without faults, the store holds exactly the state of the
 *      last step the child saw succeed, or, when the step that failed was a
 *      commit that reported OBJSTORE_EFAILED (outcome unknown), that step's
 *      state; verify finds no problem, and the store takes a new commit.
 *
 * The child writes what it saw ("ok STEP DIGEST", "fail STEP STATUS") to a
 * file outside the faulted directory.  A digest covers what the API shows:
 * roots by name, the objects reachable from them (type name, slot count,
 * payload, slots as visit numbers), user metadata, and the number of live
 * objects (so a collected cycle counts).
 *
 * The workload runs in two processes: the first creates the store, commits,
 * collects and grows the heap, and exits without closing (as if killed), so
 * that the second opens by replaying the redo log, then commits, checkpoints,
 * shrinks and closes.  A fault in the second starts from a copy of the
 * first's clean result.
 */
#include "test_store.h"

#include <dirent.h>

#define NPHASES 2
#define MAXSTEPS 16

/* ------------------------------------------------------------------ */
/* the logical digest                                                   */

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * UINT64_C(0x100000001b3);
    return h;
}

static uint64_t fnv64(uint64_t h, uint64_t v)
{
    return fnv(h, &v, sizeof v);
}

struct walk {
    objstore_oid *seen;        /* visit number i+1 is seen[i] */
    size_t nseen, cap;
    objstore_oid *stack;
    size_t nstack, scap;
    char (*names)[64];
    objstore_oid *roots;
    size_t nroots;
};

static size_t visit_number(struct walk *w, objstore_oid o)
{
    for (size_t i = 0; i < w->nseen; i++)
        if (w->seen[i] == o)
            return i + 1;
    return 0;
}

static int collect_root(void *arg, const char *name, objstore_oid oid)
{
    struct walk *w = arg;
    w->names = realloc(w->names, (w->nroots + 1) * sizeof *w->names);
    w->roots = realloc(w->roots, (w->nroots + 1) * sizeof *w->roots);
    if (!w->names || !w->roots)
        return 1;
    snprintf(w->names[w->nroots], sizeof w->names[0], "%s", name);
    w->roots[w->nroots++] = oid;
    return 0;
}

/* Returns 0 and the digest, or the status of the call that failed. */
static int digest(objstore *s, uint64_t *out)
{
    static const char *keys[] = {"name", "size", "note"};
    objstore_txn *t;
    int rc = objstore_begin(s, OBJSTORE_TXN_RDONLY, &t);
    if (rc)
        return rc;
    struct walk w = {0};
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    if ((rc = objstore_root_iter(t, collect_root, &w)))
        goto out;
    for (size_t r = 0; r < w.nroots && !rc; r++) {
        h = fnv(h, w.names[r], strlen(w.names[r]) + 1);
        /* Depth first; an object's number is given when first reached. */
        w.nstack = 0;
        objstore_oid first = w.roots[r];
        size_t vn = visit_number(&w, first);
        h = fnv64(h, vn ? vn : w.nseen + 1);
        if (vn)
            continue;
        w.seen = realloc(w.seen, (w.nseen + 1) * sizeof *w.seen);
        w.seen[w.nseen++] = first;
        w.stack = realloc(w.stack, (w.nstack + 1) * sizeof *w.stack);
        w.stack[w.nstack++] = first;
        while (w.nstack && !rc) {
            objstore_oid o = w.stack[--w.nstack];
            objstore_objinfo info;
            const void *payload;
            uint64_t size;
            const char *tname = "";
            if ((rc = objstore_info(t, o, &info)) ||
                (rc = objstore_get(t, o, &payload, &size)) ||
                (info.type && (rc = objstore_type_name(t, info.type, &tname))))
                break;
            h = fnv(h, tname, strlen(tname) + 1);
            h = fnv64(h, info.nrefs);
            h = fnv64(h, size);
            h = fnv(h, payload, size);
            h = fnv64(h, info.refcount);
            for (uint32_t i = 0; i < info.nrefs; i++) {
                objstore_oid target;
                if ((rc = objstore_get_ref(t, o, i, &target)))
                    break;
                if (!target) {
                    h = fnv64(h, 0);
                    continue;
                }
                size_t tn = visit_number(&w, target);
                if (!tn) {
                    w.seen = realloc(w.seen, (w.nseen + 1) * sizeof *w.seen);
                    w.seen[w.nseen++] = target;
                    tn = w.nseen;
                    w.stack = realloc(w.stack, (w.nstack + 1) * sizeof *w.stack);
                    w.stack[w.nstack++] = target;
                }
                h = fnv64(h, tn);
            }
        }
    }
    for (size_t k = 0; k < sizeof keys / sizeof *keys && !rc; k++) {
        const void *val;
        size_t vlen;
        int mrc = objstore_meta_get(t, keys[k], strlen(keys[k]), &val, &vlen);
        if (mrc == OBJSTORE_ENOTFOUND) {
            h = fnv64(h, UINT64_MAX);
        } else if (mrc) {
            rc = mrc;
        } else {
            h = fnv64(h, vlen);
            h = fnv(h, val, vlen);
        }
    }
    objstore_stats st;
    if (!rc && !(rc = objstore_get_stats(s, &st)))
        h = fnv64(h, st.live_objects);
out:
    objstore_abort(t);
    free(w.seen);
    free(w.stack);
    free(w.names);
    free(w.roots);
    *out = h;
    return rc;
}

/* ------------------------------------------------------------------ */
/* the workload (child side)                                            */

static const objstore_options g_opts = {
    .max_heap_size = UINT64_C(64) << 20,
    .checkpoint_bytes = 16 * KiB,   /* so that commits checkpoint too */
};

struct child {
    const char *store;
    FILE *log;
    objstore *s;
    objstore_txn *t;
    int step;
    bool retried;    /* the current step failed once already */
    bool stopped;
};

/* Records the outcome of the current step.  Returns true when the step must
 * run again: its first failure, with a status that leaves the handle usable
 * (R2).  After a final failure every later step is skipped. */
static bool outcome(struct child *c, int rc, bool retriable)
{
    if (c->stopped)
        return false;
    if (rc && retriable && !c->retried && rc != OBJSTORE_EFAILED) {
        fprintf(c->log, "again %d %d %s\n", c->step, rc, objstore_errmsg());
        c->retried = true;
        return true;
    }
    c->retried = false;
    if (rc) {
        fprintf(c->log, "fail %d %d %s\n", c->step, rc, objstore_errmsg());
        c->stopped = true;
        return false;
    }
    uint64_t h = 0;
    if (c->s && !c->t) {
        int drc = digest(c->s, &h);
        if (drc) {
            fprintf(c->log, "fail %d %d digest: %s\n", c->step, drc, objstore_errmsg());
            c->stopped = true;
            return false;
        }
    }
    fprintf(c->log, "ok %d %016llx\n", c->step, (unsigned long long)h);
    return false;
}

/* Runs body (statements using c->t, stopping at the first failing call with
 * TRY) in a write transaction, then commits; a failure inside aborts the
 * transaction.  The whole step runs again after a first failure. */
#define TXN(c, body)                                                   \
    (c)->step++;                                                       \
    for (bool again_ = true; again_ && !(c)->stopped;) {              \
        int trc_ = objstore_begin((c)->s, 0, &(c)->t);                 \
        if (trc_) {                                                    \
            (c)->t = NULL;                                             \
            again_ = outcome((c), trc_, true);                         \
            continue;                                                  \
        }                                                              \
        do {                                                           \
            body                                                       \
        } while (0);                                                   \
        if (trc_) {                                                    \
            objstore_abort((c)->t);                                    \
            (c)->t = NULL;                                             \
            again_ = outcome((c), trc_, true);                         \
            continue;                                                  \
        }                                                              \
        trc_ = objstore_commit((c)->t);                                \
        (c)->t = NULL;                                                 \
        again_ = outcome((c), trc_, true);                             \
    }

#define TRY(expr)                  \
    if ((trc_ = (expr)))           \
        break

/* A plain call as one step; `retriable` says whether to run it again after
 * a first failure. */
#define STEP(c, expr, retriable)                                       \
    (c)->step++;                                                       \
    for (bool again_ = true; again_ && !(c)->stopped;)                \
        again_ = outcome((c), (expr), (retriable))

static uint8_t g_buf[64 * 1024];

/* A transaction that is rolled back: it must leave no trace. */
static int aborted_txn(struct child *c, uint32_t type)
{
    objstore_txn *t;
    objstore_oid junk;
    int rc = objstore_begin(c->s, 0, &t);
    if (rc)
        return rc;
    if (!(rc = objstore_new(t, type, 0, 100, &junk)))
        rc = objstore_root_set(t, "junk", junk);
    objstore_abort(t);
    return rc;
}

static void phase_one(struct child *c)
{
    static objstore_oid node[12], ring[3], big, blob;
    static uint32_t tnode, tleaf;
    c->step = -1;
    STEP(c, objstore_create(c->store, &g_opts), false);
    STEP(c, objstore_open(c->store, &g_opts, &c->s), true);
    TXN(c, {
        TRY(objstore_type_register(c->t, "node", &tnode));
        TRY(objstore_type_register(c->t, "leaf", &tleaf));
        for (int i = 0; i < 12 && !trc_; i++) {
            if ((trc_ = objstore_new(c->t, tnode, 2, 40, &node[i])))
                break;
            pattern_into(g_buf, 40, (uint64_t)i);
            trc_ = objstore_write(c->t, node[i], 0, g_buf, 40);
        }
        for (int i = 0; i < 11 && !trc_; i++)
            trc_ = objstore_set_ref(c->t, node[i], 0, node[i + 1]);
        if (trc_)
            break;
        TRY(objstore_root_set(c->t, "list", node[0]));
        TRY(objstore_meta_set(c->t, "name", 4, "alpha", 5));
    });
    TXN(c, {
        for (int i = 0; i < 3 && !trc_; i++)
            trc_ = objstore_new(c->t, tleaf, 1, 24, &ring[i]);
        for (int i = 0; i < 3 && !trc_; i++)
            trc_ = objstore_set_ref(c->t, ring[i], 0, ring[(i + 1) % 3]);
        if (trc_)
            break;
        TRY(objstore_root_set(c->t, "ring", ring[0]));
        for (int i = 3; i < 7 && !trc_; i++) {
            pattern_into(g_buf, 16, 100 + (uint64_t)i);
            trc_ = objstore_write(c->t, node[i], 8, g_buf, 16);
        }
        if (trc_)
            break;
        TRY(objstore_new(c->t, tleaf, 0, 40 * KiB, &big));
        pattern_into(g_buf, 40 * KiB, 7);
        TRY(objstore_write(c->t, big, 0, g_buf, 40 * KiB));
        TRY(objstore_set_ref(c->t, node[0], 1, big));
    });
    TXN(c, {
        TRY(objstore_root_del(c->t, "ring"));   /* a garbage cycle */
        TRY(objstore_set_ref(c->t, node[7], 0, 0));   /* frees 8..11 */
        TRY(objstore_meta_set(c->t, "name", 4, "beta", 4));
        TRY(objstore_meta_set(c->t, "note", 4, "n", 1));
    });
    STEP(c, objstore_collect(c->s, NULL), true);
    STEP(c, aborted_txn(c, tleaf), true);
    TXN(c, {
        /* 1.5 MiB: the heap grows past its first 4 MiB. */
        for (int k = 0; k < 2 && !trc_; k++) {
            TRY(objstore_new(c->t, tleaf, 0, 1536 * KiB, &blob));
            for (uint64_t off = 0; off < 1536 * KiB && !trc_; off += sizeof g_buf) {
                pattern_into(g_buf, sizeof g_buf, off);
                trc_ = objstore_write(c->t, blob, off, g_buf, sizeof g_buf);
            }
            if (!trc_)
                trc_ = objstore_root_set(c->t, k ? "blob2" : "blob", blob);
        }
    });
    /* Exit without closing: the next process replays the redo log. */
}

static void phase_two(struct child *c)
{
    static objstore_oid list, second, extra;
    c->step = -1;
    STEP(c, objstore_open(c->store, &g_opts, &c->s), true);
    TXN(c, {
        TRY(objstore_root_get(c->t, "list", &list));
        TRY(objstore_get_ref(c->t, list, 0, &second));
        TRY(objstore_pin(c->t, second));
        pattern_into(g_buf, 32, 555);
        TRY(objstore_write(c->t, second, 0, g_buf, 32));
        TRY(objstore_unpin(c->t, second));
        TRY(objstore_new(c->t, 0, 1, 300, &extra));
        TRY(objstore_set_ref(c->t, extra, 0, second));
        TRY(objstore_root_set(c->t, "extra", extra));
        TRY(objstore_meta_set(c->t, "size", 4, "xl", 2));
    });
    STEP(c, objstore_checkpoint(c->s), true);
    TXN(c, {
        TRY(objstore_root_del(c->t, "blob"));
        TRY(objstore_root_del(c->t, "blob2"));   /* the heap's tail empties */
    });
    STEP(c, objstore_shrink(c->s), true);
    TXN(c, {
        TRY(objstore_root_set(c->t, "list2", second));
        TRY(objstore_meta_del(c->t, "name", 4));
    });
    objstore *s = c->s;
    c->s = NULL;   /* no digest after close */
    STEP(c, objstore_close(s), false);
}

/* The child's main: run phase argv[2] on store argv[3], log to argv[4]. */
static int child_main(char **argv)
{
    struct child c = {.store = argv[3]};
    c.log = fopen(argv[4], "w");
    if (!c.log)
        return 3;
    setvbuf(c.log, NULL, _IOLBF, 0);
    if (atoi(argv[2]) == 0) {
        phase_one(&c);
        fprintf(c.log, "end\n");
        fclose(c.log);
        if (c.stopped && c.s)
            objstore_close(c.s);   /* R2; its status is not the point */
        exit(0);                  /* without closing when all went well */
    }
    phase_two(&c);
    if (c.s)
        objstore_close(c.s);
    fprintf(c.log, "end\n");
    fclose(c.log);
    return 0;
}

/* ------------------------------------------------------------------ */
/* the parent side                                                      */

struct run {
    unsigned long count;       /* sites the shim counted */
    char calls[1024];          /* its counts by name */
    bool injected;             /* the shim failed a call */
    char failed_call[32];
    int nok;                   /* steps 0..nok-1 succeeded */
    uint64_t digest[MAXSTEPS];
    int fail_step, fail_rc;    /* -1 if none */
    char fail_msg[256];
    int nagain;                /* steps that failed once, then ran again */
    int again_rc[MAXSTEPS];
    char again_msg[MAXSTEPS][256];
    bool ended;
};

static void copy_tree(const char *from, const char *to)
{
    ck_assert_msg(mkdir(to, 0755) == 0, "mkdir %s: %s", to, strerror(errno));
    DIR *d = opendir(from);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") ||
            !strcmp(e->d_name, "lock.mdb"))
            continue;
        char *a = ts_path(from, e->d_name), *b = ts_path(to, e->d_name);
        struct stat st;
        ck_assert_int_eq(lstat(a, &st), 0);
        if (S_ISDIR(st.st_mode)) {
            copy_tree(a, b);
        } else {
            size_t len;
            uint8_t *buf = read_all(a, &len);
            int fd = open(b, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
            ck_assert_msg(fd >= 0, "open %s: %s", b, strerror(errno));
            ck_assert_int_eq(write(fd, buf, len), (ssize_t)len);
            close(fd);
            free(buf);
        }
        free(a);
        free(b);
    }
    closedir(d);
}

/* Runs phase `phase` in a child with the fault at site `at` (0: none). */
static struct run run_child(const char *shim, const char *fdir, const char *store,
                            int phase, unsigned long at, const char *err)
{
    struct run r = {.fail_step = -1};
    char *log = ts_path(g_dir, "child.log"), *rep = ts_path(g_dir, "shim.report");
    unlink(log);
    unlink(rep);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        char phasebuf[8];
        snprintf(phasebuf, sizeof phasebuf, "%d", phase);
        char *argv[] = {"test_faults", "--fault-child", phasebuf, (char *)store, log, NULL};
        exec_with_fault_shim(shim, fdir, at, err, rep, argv);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    MUST(!WIFSIGNALED(st), "phase %d, site %lu (%s): the child died of signal %d (R1)",
         phase + 1, at, err, WTERMSIG(st));
    MUST(WIFEXITED(st) && WEXITSTATUS(st) == 0, "phase %d, site %lu (%s): child exit %d",
         phase + 1, at, err, WEXITSTATUS(st));

    FILE *f = fopen(rep, "r");
    MUST(f != NULL, "phase %d, site %lu: no report from the shim (is %s preloaded?)",
         phase + 1, at, shim);
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        unsigned long n;
        char name[32];
        if (sscanf(line, "count %lu", &n) == 1)
            r.count = n;
        else if (sscanf(line, "failed %lu %31s", &n, name) == 2) {
            r.injected = true;
            snprintf(r.failed_call, sizeof r.failed_call, "%s", name);
        } else if (!strncmp(line, "calls ", 6))
            snprintf(r.calls, sizeof r.calls, "%s", line + 6);
    }
    fclose(f);
    f = fopen(log, "r");
    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof line, f)) {
        int k, rc, off = 0;
        if (strncmp(line, "end", 3) != 0)
            line[strcspn(line, "\n")] = '\0';
        unsigned long long h;
        if (sscanf(line, "ok %d %llx", &k, &h) == 2) {
            MUST(k == r.nok && k < MAXSTEPS, "child log out of order: %s", line);
            r.digest[r.nok++] = h;
        } else if (sscanf(line, "fail %d %d %n", &k, &rc, &off) == 2) {
            r.fail_step = k;
            r.fail_rc = rc;
            snprintf(r.fail_msg, sizeof r.fail_msg, "%s", line + off);
        } else if (sscanf(line, "again %d %d %n", &k, &rc, &off) == 2) {
            MUST(r.nagain < MAXSTEPS, "too many retries");
            r.again_rc[r.nagain] = rc;
            snprintf(r.again_msg[r.nagain++], sizeof r.again_msg[0], "%s", line + off);
        } else if (!strcmp(line, "end\n")) {
            r.ended = true;
        }
    }
    fclose(f);
    MUST(r.ended, "phase %d, site %lu (%s): the child's log has no end", phase + 1, at, err);
    free(log);
    free(rep);
    return r;
}

/* Checks R2 and R3 for one run against the clean run. */
static void check_run(const struct run *clean, const struct run *r, const char *store,
                      int phase, unsigned long at, const char *err, unsigned *absorbed)
{
    char where[512];
    if (r->fail_step >= 0)
        snprintf(where, sizeof where, "phase %d, site %lu (%s, errno %s; %d steps done, "
                 "step %d failed: %d %s)", phase + 1, at, r->failed_call, err, r->nok,
                 r->fail_step, r->fail_rc, r->fail_msg);
    else
        snprintf(where, sizeof where, "phase %d, site %lu (%s, errno %s; all %d steps "
                 "done)", phase + 1, at, r->failed_call, err, r->nok);
    for (int k = 0; k < r->nok; k++)
        MUST(r->digest[k] == clean->digest[k] || (phase == 0 && k == 0),
             "%s: step %d succeeded but its state differs from the clean run's", where, k);
    for (int i = 0; i < r->nagain; i++) {
        int rc = r->again_rc[i];
        MUST(rc == OBJSTORE_EIO || rc == OBJSTORE_ENOSPC || rc == OBJSTORE_ELMDB,
             "%s: a step failed with status %d (%s): %s", where, rc,
             objstore_strerror(rc), r->again_msg[i]);
        MUST(strlen(r->again_msg[i]) > 1, "%s: a step failed without a message", where);
    }
    if (r->fail_step < 0) {
        MUST(r->nok == clean->nok, "%s: %d steps of %d, and no failure", where, r->nok,
             clean->nok);
        if (r->injected && !r->nagain) {
            ++*absorbed;
            printf("  absorbed: %s\n", where);
        }
    } else {
        MUST(r->fail_step == r->nok, "%s: failure at step %d after %d steps", where,
             r->fail_step, r->nok);
        /* R2: a status this kind of fault can cause, with a message. */
        int rc = r->fail_rc;
        MUST(rc == OBJSTORE_EIO || rc == OBJSTORE_ENOSPC || rc == OBJSTORE_ELMDB ||
                 rc == OBJSTORE_EFAILED,
             "%s: step %d failed with status %d (%s): %s", where, r->fail_step, rc,
             objstore_strerror(rc), r->fail_msg);
        MUST(strlen(r->fail_msg) > 1, "%s: step %d failed without a message", where,
             r->fail_step);
        /* The fault is gone when a step runs again: a second failure means
         * the first left the handle broken without saying so (EFAILED). */
        MUST(!r->nagain, "%s: the step failed again after %d (%s): %s", where,
             r->again_rc[0], objstore_strerror(r->again_rc[0]), r->again_msg[0]);
    }

    /* R3: which states the store may hold now. */
    int last = r->nok - 1;   /* the last step that succeeded */
    uint64_t want[2];
    int nwant = 0;
    bool may_fail_open = false;
    if (phase == 0 && last < 1) {
        /* Before the first open: the created store is empty (its digest is
         * the clean run's step 1), or creation did not finish and open
         * refuses it. */
        want[nwant++] = clean->digest[1];
        may_fail_open = last < 0;
    } else if (phase == 1 && last < 0) {
        want[nwant++] = clean->digest[0];   /* phase one's result */
    } else {
        want[nwant++] = clean->digest[last];
    }
    if (r->fail_step >= 0 && r->fail_rc == OBJSTORE_EFAILED && r->fail_step < clean->nok)
        want[nwant++] = clean->digest[r->fail_step];
    if (phase == 1 && want[0] == 0)
        want[0] = clean->digest[last - 1];   /* the close step has no digest */

    objstore *s = NULL;
    int rc = objstore_open(store, &g_opts, &s);
    if (may_fail_open && rc != OBJSTORE_OK) {
        MUST(rc != OBJSTORE_OK && objstore_errmsg()[0], "%s: no message", where);
        return;
    }
    MUST(rc == OBJSTORE_OK, "%s: reopen = %d (%s): %s", where, rc, objstore_strerror(rc),
         objstore_errmsg());
    uint64_t h;
    rc = digest(s, &h);
    MUST(rc == OBJSTORE_OK, "%s: reading the reopened store: %d: %s", where, rc,
         objstore_errmsg());
    MUST(h == want[0] || (nwant > 1 && h == want[1]),
         "%s: after step %d%s the reopened store holds another state (R3)", where, last,
         nwant > 1 ? " (or the next, unknown outcome)" : "");
    verify_clean(s);
    /* And it takes a new commit. */
    objstore_txn *t = wbegin(s);
    objstore_oid o = new_obj(t, 0, 0, 8);
    root_set(t, "probe", o);
    commit(t);
    close_store(s);
}

/* All sites of one phase, with both errnos. */
static void inject_phase(int phase)
{
    static const char *errs[] = {"ENOSPC", "EIO"};
    char *shim = fault_shim_path();
    MUST(path_exists(shim), "%s is not built", shim);
    char *fdir = ts_path(g_dir, "faulted"), *store = ts_path(fdir, "store");
    char *tmpl = ts_path(g_dir, "template");

    /* Phase two starts from phase one's clean result. */
    struct run first = {0};
    if (phase == 1) {
        ck_assert_int_eq(mkdir(fdir, 0755), 0);
        first = run_child(shim, fdir, store, 0, 0, "ENOSPC");
        ck_assert_int_eq(first.fail_step, -1);
        copy_tree(store, tmpl);
        ts_rmtree(fdir);
    }
    ck_assert_int_eq(mkdir(fdir, 0755), 0);
    if (phase == 1)
        copy_tree(tmpl, store);
    struct run clean = run_child(shim, fdir, store, phase, 0, "ENOSPC");
    MUST(clean.fail_step == -1, "the workload fails without a fault: step %d: %s",
         clean.fail_step, clean.fail_msg);
    if (phase == 1) {
        /* The first step (open) shows phase one's final state; close none. */
        MUST(clean.digest[0] == first.digest[first.nok - 1],
             "phase two opens another state than phase one left");
    }
    MUST(clean.count > 10, "the shim counted only %lu calls (%s)", clean.count, clean.calls);
    MUST(strstr(clean.calls, "writev") || strstr(clean.calls, "pwritev"),
         "no LMDB write counted: %s", clean.calls);
    ts_rmtree(fdir);

    unsigned absorbed = 0;
    for (unsigned e = 0; e < 2; e++)
        for (unsigned long at = 1; at <= clean.count; at++) {
            ck_assert_int_eq(mkdir(fdir, 0755), 0);
            if (phase == 1)
                copy_tree(tmpl, store);
            struct run r = run_child(shim, fdir, store, phase, at, errs[e]);
            MUST(r.injected, "phase %d, site %lu (%s): the shim did not reach the site "
                 "(the workload is not deterministic?)", phase + 1, at, errs[e]);
            check_run(&clean, &r, store, phase, at, errs[e], &absorbed);
            ts_rmtree(fdir);
        }
    printf("fault injection, phase %d: %lu sites x 2 errnos (%u absorbed without an "
           "error, state kept); calls: %s", phase + 1, clean.count, absorbed, clean.calls);
    fflush(stdout);
    free(shim);
    free(fdir);
    free(store);
    free(tmpl);
}

START_TEST(test_each_failing_io_call_from_create_to_a_crash_keeps_the_last_commit)
{
    inject_phase(0);
}
END_TEST

START_TEST(test_each_failing_io_call_from_replay_to_close_keeps_the_last_commit)
{
    inject_phase(1);
}
END_TEST

static Suite *faults_suite(void)
{
    Suite *s = suite_create("faults");
    TCase *tc = ts_tcase(s, "io", 600);
    tcase_add_test(tc, test_each_failing_io_call_from_create_to_a_crash_keeps_the_last_commit);
    tcase_add_test(tc, test_each_failing_io_call_from_replay_to_close_keeps_the_last_commit);
    return s;
}

int main(int argc, char **argv)
{
    if (argc == 5 && !strcmp(argv[1], "--fault-child"))
        return child_main(argv);
    SRunner *sr = srunner_create(faults_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
