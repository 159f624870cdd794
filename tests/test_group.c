/*
 * test_group.c -- group commit: many threads committing durable
 * transactions at once (store/group.c, rules G1..G6).
 *
 * The suites share one workload, "the ledger": root "h" is a holder with
 * THREADS * PER slots, root "c" a counter object of THREADS 8-byte words.
 * Thread t's commit i creates an object holding (t, i, a stamp), links it
 * into slot t * PER + i, sets word t of the counter to i + 1, and every 8th
 * commit also points root "r<t>" at it.  So each thread's commits form a
 * chain whose state is checkable exactly:
 *
 *   - words c[t] and the slots agree: slots t*PER + 0 .. c[t]-1 hold their
 *     objects, the rest are empty (no commit is half there, none is lost
 *     out of order);
 *   - c[t] is at least the number of commits the thread saw return
 *     (every commit that returned is durable);
 *   - root "r<t>" names the slot of the last multiple of 8 below c[t];
 *   - verify finds nothing wrong.
 *
 * Each commit first looks up the next thread's root and checks it against
 * that thread's counter as the transaction sees it: a write transaction
 * sees the roots of commits sealed before it (G7), without waiting for them.
 *
 * Each case runs it differently: in-process with readers beside, in a child
 * killed with -9, in a child stopped by a crash hook at a step of the
 * group's commit, and in a child whose Nth write or sync fails (the fault
 * shim of test_faults.c).
 */
#include "test_store.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>

#define THREADS 8
#define PER 2048
#define OBJ_BYTES 24
/* Commits a thread makes in a crash-step round: a step passes up to 61
 * times before the crash, once per group of up to THREADS transactions, so
 * every thread still commits when it comes. */
#define STEP_LIMIT 100

static void obj_bytes(uint8_t *p, uint64_t t, uint64_t i)
{
    uint64_t w[3] = {t, i, ts_mix64(t << 32 | i)};
    memcpy(p, w, sizeof w);
}

/* Open flags of the ledger's stores: 0, or OBJSTORE_NO_JOURNAL for groups
 * through LMDB (G9 sends heap-only groups to the journal). */
static int g_flags;

/* ---- the ledger ---- */

static void ledger_create(void)
{
    objstore *s = new_store(NULL);
    objstore_txn *t = wbegin(s);
    root_set(t, "h", new_obj(t, 0, THREADS * PER, 0));
    root_set(t, "c", new_obj(t, 0, 0, THREADS * 8));
    commit(t);
    close_store(s);
}

typedef struct ledger_run {
    objstore *s;
    objstore_oid h, c;
    int report_fd;            /* -1, or where each returned commit is written */
    uint64_t limit;           /* commits per thread, at most */
    int abort_every;          /* 0, or abort each such transaction instead */
    bool stop_on_error;       /* a child: keep going until killed, stop on error */
    _Atomic int failures;
    _Atomic int efailed;      /* commits that failed the handle */
    _Atomic int other_rc;     /* a failure that was not EFAILED, ENOSPC, EIO or ELMDB */
    char first_error[256];
    _Atomic uint64_t done[THREADS];
    int tid;
} ledger_run;

typedef struct { ledger_run *r; int t; } ledger_arg;

/* The next thread's root against its counter, inside a write transaction. */
static int check_neighbour(ledger_run *r, objstore_txn *x, int t)
{
    int u = (t + 1) % THREADS, rc;
    const void *p;
    uint64_t size, n;
    objstore_oid ro = 0, slot = 0;
    char name[16];
    snprintf(name, sizeof name, "r%d", u);
    if ((rc = objstore_get(x, r->c, &p, &size)))
        return rc;
    memcpy(&n, (const uint8_t *)p + u * 8, 8);
    rc = objstore_root_get(x, name, &ro);
    if (n == 0)
        return rc == OBJSTORE_ENOTFOUND ? OBJSTORE_OK : OBJSTORE_ECORRUPT;
    if (rc || (rc = objstore_get_ref(x, r->h, (uint32_t)(u * PER + (n - 1) / 8 * 8), &slot)))
        return rc;
    return ro == slot ? OBJSTORE_OK : OBJSTORE_ECORRUPT;
}

static int ledger_commit(ledger_run *r, int t, uint64_t i, bool abort_it)
{
    objstore_txn *x;
    objstore_oid o;
    uint8_t b[OBJ_BYTES];
    obj_bytes(b, (uint64_t)t, i);
    int rc = objstore_begin(r->s, 0, &x);
    if (rc)
        return rc;
    uint64_t next = i + 1;
    char name[16];
    snprintf(name, sizeof name, "r%d", t);
    if ((rc = check_neighbour(r, x, t)) || (rc = objstore_new(x, 0, 0, OBJ_BYTES, &o)) ||
        (rc = objstore_write(x, o, 0, b, OBJ_BYTES)) ||
        (rc = objstore_set_ref(x, r->h, (uint32_t)(t * PER + i), o)) ||
        (rc = objstore_write(x, r->c, (uint64_t)t * 8, &next, 8)) ||
        (i % 8 == 0 && (rc = objstore_root_set(x, name, o)))) {
        objstore_abort(x);
        return rc;
    }
    if (abort_it) {
        objstore_abort(x);
        return OBJSTORE_OK;
    }
    return objstore_commit(x);
}

static void *ledger_thread(void *arg)
{
    ledger_arg *a = arg;
    ledger_run *r = a->r;
    int t = a->t;
    /* Start where the store's counter says (a later round of the same store). */
    objstore_txn *x;
    uint64_t from = 0;
    if (objstore_begin(r->s, OBJSTORE_TXN_RDONLY, &x) == OBJSTORE_OK) {
        const void *p;
        uint64_t size;
        if (objstore_get(x, r->c, &p, &size) == OBJSTORE_OK)
            memcpy(&from, (const uint8_t *)p + t * 8, 8);
        objstore_commit(x);
    }
    for (uint64_t i = from, n = 0; i < PER && n < r->limit; n++) {
        bool abort_it = r->abort_every && n % (uint64_t)r->abort_every == 1;
        int rc = ledger_commit(r, t, i, abort_it);
        if (rc == OBJSTORE_EFAILED)
            atomic_fetch_add(&r->efailed, 1);
        else if (rc && rc != OBJSTORE_ENOSPC && rc != OBJSTORE_EIO && rc != OBJSTORE_ELMDB)
            atomic_store(&r->other_rc, rc);
        if (rc) {
            if (atomic_fetch_add(&r->failures, 1) == 0)
                snprintf(r->first_error, sizeof r->first_error, "thread %d commit %llu: %s",
                         t, U(i), objstore_errmsg());
            break;
        }
        if (abort_it)
            continue;
        i++;
        atomic_store(&r->done[t], i);
        if (r->report_fd >= 0) {
            uint64_t rec = (uint64_t)t << 32 | i;
            if (write(r->report_fd, &rec, sizeof rec) != (ssize_t)sizeof rec)
                break;
        }
    }
    return NULL;
}

static void ledger_open_roots(ledger_run *r)
{
    objstore_txn *x;
    if (objstore_begin(r->s, OBJSTORE_TXN_RDONLY, &x) ||
        objstore_root_get(x, "h", &r->h) || objstore_root_get(x, "c", &r->c))
        r->h = r->c = 0;
    else
        objstore_commit(x);
}

static void ledger_threads(ledger_run *r, int n)
{
    pthread_t th[THREADS];
    ledger_arg a[THREADS];
    for (int t = 0; t < n; t++) {
        a[t] = (ledger_arg){r, t};
        ck_assert_int_eq(pthread_create(&th[t], NULL, ledger_thread, &a[t]), 0);
    }
    for (int t = 0; t < n; t++)
        pthread_join(th[t], NULL);
}

/* Checks the invariants above; returns the counters. */
static void ledger_check(objstore *s, const uint64_t *returned, uint64_t *count)
{
    objstore_txn *x = rbegin(s);
    objstore_oid h = root_get(x, "h"), c = root_get(x, "c");
    for (int t = 0; t < THREADS; t++) {
        uint64_t n = get_u64(x, c, (uint64_t)t * 8);
        if (count)
            count[t] = n;
        MUST(n <= PER, "thread %d: counter %llu past %d", t, U(n), PER);
        MUST(!returned || n >= returned[t],
             "thread %d: %llu commits returned but the store holds %llu (a durable commit "
             "was lost)", t, U(returned[t]), U(n));
        for (uint64_t i = 0; i < PER; i++) {
            objstore_oid o = get_ref(x, h, (uint32_t)(t * PER + i));
            if (i >= n) {
                MUST(o == 0, "thread %d: slot %llu is set past the counter %llu (a commit "
                     "half there)", t, U(i), U(n));
                continue;
            }
            MUST(o != 0, "thread %d: slot %llu empty below the counter %llu", t, U(i), U(n));
            const void *p;
            uint64_t size;
            OK(objstore_get(x, o, &p, &size));
            uint8_t want[OBJ_BYTES];
            obj_bytes(want, (uint64_t)t, i);
            MUST(size == OBJ_BYTES && !memcmp(p, want, OBJ_BYTES),
                 "thread %d: slot %llu holds the wrong object", t, U(i));
        }
        char name[16];
        snprintf(name, sizeof name, "r%d", t);
        objstore_oid r = 0;
        int rc = objstore_root_get(x, name, &r);
        if (n == 0) {
            MUST(rc == OBJSTORE_ENOTFOUND, "thread %d: root %s without a commit", t, name);
        } else {
            OK(rc);
            uint64_t last = (n - 1) / 8 * 8;
            MUST(r == get_ref(x, h, (uint32_t)(t * PER + last)),
                 "thread %d: root %s does not name the slot of commit %llu", t, name,
                 U(last));
        }
    }
    commit(x);
    verify_clean(s);
}

/* ---- in-process ---- */

START_TEST(test_threads_committing_at_once_share_syncs_and_every_commit_is_durable)
{
    ledger_create();
    ledger_run r = {.report_fd = -1, .limit = 150};
    objstore_options o = {.flags = _i ? OBJSTORE_NO_JOURNAL : 0};
    r.s = open_store(g_store, &o);
    ledger_open_roots(&r);
    ledger_threads(&r, THREADS);
    MUST(atomic_load(&r.failures) == 0, "%s", r.first_error);
    objstore_stats st = get_stats(r.s);
    ck_assert_uint_eq(st.commits, THREADS * 150);
    MUST(st.grouped_commits > 0 && st.group_syncs < st.grouped_commits,
         "8 threads committing at once never shared a sync (%llu grouped commits, %llu "
         "syncs)", U(st.grouped_commits), U(st.group_syncs));
    uint64_t returned[THREADS], count[THREADS];
    for (int t = 0; t < THREADS; t++)
        returned[t] = atomic_load(&r.done[t]);
    ledger_check(r.s, returned, count);
    for (int t = 0; t < THREADS; t++)
        ck_assert_uint_eq(count[t], 150);
    MUST(_i ? st.journal_commits == 0 : st.journal_commits > 0, "%llu journal commits",
         U(st.journal_commits));
    r.s = reopen(r.s, NULL);
    ledger_check(r.s, returned, count);
    for (int t = 0; t < THREADS; t++)
        ck_assert_uint_eq(count[t], 150);
    close_store(r.s);
}
END_TEST

START_TEST(test_checkpoints_among_group_commits_keep_the_redo_chain_whole)
{
    ledger_create();
    objstore_options o = {.checkpoint_bytes = 16 * KiB};
    ledger_run r = {.report_fd = -1, .limit = 150};
    r.s = open_store(g_store, &o);
    ledger_open_roots(&r);
    ledger_threads(&r, THREADS);
    MUST(atomic_load(&r.failures) == 0, "%s", r.first_error);
    objstore_stats st = get_stats(r.s);
    MUST(st.checkpoints >= 3 && st.group_syncs < st.grouped_commits,
         "%llu checkpoints, %llu grouped commits in %llu syncs", U(st.checkpoints),
         U(st.grouped_commits), U(st.group_syncs));
    uint64_t returned[THREADS];
    for (int t = 0; t < THREADS; t++)
        returned[t] = atomic_load(&r.done[t]);
    ledger_check(r.s, returned, NULL);
    /* Reopen without close: what replay finds must be the same. */
    close_store(r.s);
    r.s = open_store(g_store, &o);
    ledger_check(r.s, returned, NULL);
    close_store(r.s);
}
END_TEST

START_TEST(test_aborts_among_group_commits_roll_back_only_themselves)
{
    ledger_create();
    ledger_run r = {.report_fd = -1, .limit = 120, .abort_every = 3};
    r.s = open_store(g_store, NULL);
    ledger_open_roots(&r);
    ledger_threads(&r, THREADS);
    MUST(atomic_load(&r.failures) == 0, "%s", r.first_error);
    uint64_t returned[THREADS], count[THREADS];
    for (int t = 0; t < THREADS; t++)
        returned[t] = atomic_load(&r.done[t]);
    ledger_check(r.s, returned, count);
    for (int t = 0; t < THREADS; t++)
        ck_assert_uint_eq(count[t], 80);   /* 120 transactions, each third aborted */
    objstore_stats st = get_stats(r.s);
    ck_assert_uint_eq(st.aborts, THREADS * 40);
    r.s = reopen(r.s, NULL);
    ledger_check(r.s, returned, NULL);
    close_store(r.s);
}
END_TEST

/* Readers beside the committing threads: each read transaction sees, for
 * every thread, a counter, a root and a slot that agree, and never a
 * counter smaller than one it saw before (G2: no sealed state that LMDB does
 * not hold yet, and nothing that could still fail). */
typedef struct {
    ledger_run *r;
    _Atomic int *stop;
    uint64_t reads;
    char error[400];
} reader_arg;

static void *reader_thread(void *arg)
{
    reader_arg *a = arg;
    uint64_t seen[THREADS] = {0};
    while (!atomic_load(a->stop) && !a->error[0]) {
        objstore_txn *x;
        if (objstore_begin(a->r->s, OBJSTORE_TXN_RDONLY, &x)) {
            snprintf(a->error, sizeof a->error, "begin: %s", objstore_errmsg());
            break;
        }
        for (int t = 0; t < THREADS && !a->error[0]; t++) {
            const void *p;
            uint64_t size, n;
            int rc = objstore_get(x, a->r->c, &p, &size);
            if (rc) {
                snprintf(a->error, sizeof a->error, "counter: %s", objstore_errmsg());
                break;
            }
            memcpy(&n, (const uint8_t *)p + t * 8, 8);
            if (n < seen[t])
                snprintf(a->error, sizeof a->error, "thread %d's counter went back from "
                         "%llu to %llu", t, U(seen[t]), U(n));
            seen[t] = n;
            if (n == 0)
                continue;
            char name[16];
            snprintf(name, sizeof name, "r%d", t);
            objstore_oid o, slot;
            uint64_t last = (n - 1) / 8 * 8;
            if ((rc = objstore_root_get(x, name, &o)) ||
                (rc = objstore_get_ref(x, a->r->h, (uint32_t)(t * PER + last), &slot)) ||
                (rc = objstore_get(x, o, &p, &size))) {
                snprintf(a->error, sizeof a->error, "thread %d at %llu: %s", t, U(n),
                         objstore_errmsg());
                break;
            }
            uint8_t want[OBJ_BYTES];
            obj_bytes(want, (uint64_t)t, last);
            if (o != slot || size != OBJ_BYTES || memcmp(p, want, OBJ_BYTES))
                snprintf(a->error, sizeof a->error, "thread %d: counter %llu, but root %s "
                         "is not commit %llu's object", t, U(n), name, U(last));
        }
        objstore_commit(x);
        a->reads++;
    }
    return NULL;
}

/* objstore_verify beside the committing threads: never a problem (it must
 * not read LMDB behind the sealed commits the heap already shows). */
static void *verify_thread(void *arg)
{
    reader_arg *a = arg;
    while (!atomic_load(a->stop) && !a->error[0]) {
        objstore_verify_report vr;
        int rc = objstore_verify(a->r->s, &vr);
        if (rc)
            snprintf(a->error, sizeof a->error, "verify: %s", objstore_errmsg());
        else if (vr.total_problems)
            snprintf(a->error, sizeof a->error, "verify beside group commits: %.300s",
                     vr.first_problem);
        a->reads++;
    }
    return NULL;
}

START_TEST(test_readers_beside_group_commits_see_only_durable_whole_states)
{
    ledger_create();
    ledger_run r = {.report_fd = -1, .limit = 200};
    r.s = open_store(g_store, NULL);
    ledger_open_roots(&r);
    _Atomic int stop = 0;
    reader_arg ra[3] = {{&r, &stop, 0, ""}, {&r, &stop, 0, ""}, {&r, &stop, 0, ""}};
    pthread_t rt[3];
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(pthread_create(&rt[i], NULL, i < 2 ? reader_thread : verify_thread,
                                        &ra[i]), 0);
    ledger_threads(&r, THREADS);
    atomic_store(&stop, 1);
    for (int i = 0; i < 3; i++)
        pthread_join(rt[i], NULL);
    MUST(atomic_load(&r.failures) == 0, "%s", r.first_error);
    for (int i = 0; i < 3; i++) {
        MUST(!ra[i].error[0], "reader %d: %s", i, ra[i].error);
        MUST(ra[i].reads > 0, "reader %d never read", i);
    }
    objstore_stats st = get_stats(r.s);
    MUST(st.grouped_commits > 0, "no commit was grouped");
    ledger_check(r.s, NULL, NULL);
    close_store(r.s);
}
END_TEST

/* ---- in a child ---- */

/* The child: opens the store, runs the ledger's threads (reporting each
 * returned commit on fd), closes.  Returns its exit code: 0, or 10 + why. */
static int ledger_child(int fd, uint64_t limit, const objstore_options *o)
{
    ledger_run r = {.report_fd = fd, .limit = limit};
    if (objstore_open(g_store, o, &r.s) != OBJSTORE_OK)
        return 10;
    ledger_open_roots(&r);
    if (!r.h)
        return 11;
    pthread_t th[THREADS];
    ledger_arg a[THREADS];
    for (int t = 0; t < THREADS; t++) {
        a[t] = (ledger_arg){&r, t};
        if (pthread_create(&th[t], NULL, ledger_thread, &a[t]))
            return 12;
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    int code = 0;
    if (atomic_load(&r.other_rc))
        code = 13;   /* a failing write or sync must read as one */
    objstore_txn *x;
    if (!code && atomic_load(&r.efailed)) {
        /* G4: a failed commit of a group fails the handle: nothing more. */
        int rc = objstore_begin(r.s, 0, &x);
        if (rc == OBJSTORE_OK)
            objstore_abort(x);
        if (rc != OBJSTORE_EFAILED)
            code = 14;
    }
    objstore_close(r.s);
    return code;
}

/* Reads the child's reports until EOF into returned[]. */
static void read_reports(int fd, uint64_t *returned)
{
    uint64_t rec;
    ssize_t n;
    while ((n = read(fd, &rec, sizeof rec)) == (ssize_t)sizeof rec) {
        int t = (int)(rec >> 32);
        uint64_t i = rec & 0xffffffffu;
        ck_assert_int_lt(t, THREADS);
        if (i > returned[t])
            returned[t] = i;
    }
}

static uint64_t test_seed(void)
{
    const char *e = getenv("OBJSTORE_TEST_SEED");
    return e ? strtoull(e, NULL, 0) : (uint64_t)time(NULL);
}

/* A crash hook that kills the process at the k-th passage of a step, as
 * kill -9 would: no exit path runs (and no sanitizer's report at exit, such
 * as a finished thread not joined, can change how the child ended). */
static const char *hook_step;
static _Atomic int hook_left;

static void stop_at_step(const char *step)
{
    if (!strcmp(step, hook_step) && atomic_fetch_sub(&hook_left, 1) == 1)
        raise(SIGKILL);
}

/* One round of a crash test: a child runs the ledger (round's settings), the
 * parent kills it after kill_ms (0: lets it end), reads what it reported,
 * reopens and checks; returned[] becomes what the store holds.  Returns
 * the child's exit code, or 128 + the signal that ended it. */
static int crash_round(uint64_t *returned, uint64_t kill_ms, const char *step, int after,
                       uint64_t ckpt_bytes)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(p[0]);
        if (step) {
            hook_step = step;
            atomic_store(&hook_left, after);
            objstore_set_crash_hook(stop_at_step);
        }
        objstore_options o = {.checkpoint_bytes = ckpt_bytes, .flags = g_flags};
        _exit(ledger_child(p[1], kill_ms ? UINT64_MAX : STEP_LIMIT, &o));
    }
    close(p[1]);
    if (kill_ms) {
        struct timespec ts = {0, (long)(kill_ms * 1000000)};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
    }
    read_reports(p[0], returned);
    close(p[0]);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    objstore *s = open_store(g_store, NULL);
    uint64_t count[THREADS];
    ledger_check(s, returned, count);
    close_store(s);
    memcpy(returned, count, sizeof count);   /* the next round starts from there */
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* ---- G8: the next group commits while the last one writes its lines ---- */

static pthread_mutex_t g8_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g8_cv = PTHREAD_COND_INITIALIZER;
static bool g8_armed, g8_release;   /* under g8_m */
static _Atomic bool g8_held;
static _Atomic int g8_committed;   /* group commits that passed their commit point */

/* Holds the first heap write after it is armed until released. */
static void g8_hook(const char *step)
{
    if (!strcmp(step, "lmdb-committed") || !strcmp(step, "journal-committed"))
        atomic_fetch_add(&g8_committed, 1);
    if (strcmp(step, "heap-pwrite"))
        return;
    pthread_mutex_lock(&g8_m);
    if (g8_armed) {
        g8_armed = false;
        atomic_store(&g8_held, true);
        pthread_cond_broadcast(&g8_cv);
        while (!g8_release)
            pthread_cond_wait(&g8_cv, &g8_m);
    }
    pthread_mutex_unlock(&g8_m);
}

typedef struct {
    objstore *s;
    objstore_oid h;
    uint32_t slot;
    _Atomic int stage;        /* 1 holds the write lock, 2 may commit, 3 returned */
    int rc;
} g8_writer;

static void *g8_write(void *arg)
{
    g8_writer *w = arg;
    objstore_txn *t = wbegin(w->s);
    atomic_store(&w->stage, 1);
    while (atomic_load(&w->stage) < 2)
        ts_sleep_ms(1);
    objstore_oid o = new_obj(t, 0, 0, 8);
    set_ref(t, w->h, w->slot, o);
    w->rc = objstore_commit(t);
    atomic_store(&w->stage, 3);
    return NULL;
}

typedef struct {
    objstore *s;
    objstore_oid h;
    _Atomic bool began;
    objstore_oid seen[2];
} g8_reader;

static void *g8_read(void *arg)
{
    g8_reader *r = arg;
    objstore_txn *t = rbegin(r->s);
    atomic_store(&r->began, true);
    r->seen[0] = get_ref(t, r->h, 0);
    r->seen[1] = get_ref(t, r->h, 1);
    objstore_abort(t);
    return NULL;
}

/* While the first group writes its lines (held at its first pwrite), the
 * next group's commit (a journal entry; with _i, an LMDB commit) goes
 * through; neither commit returns, and a read transaction does not begin,
 * until both groups' lines are written. */
START_TEST(test_the_next_group_commits_while_the_last_one_writes_and_readers_wait)
{
    objstore *s = new_store(&(objstore_options){.flags = _i ? OBJSTORE_NO_JOURNAL : 0});
    objstore_txn *t = wbegin(s);
    objstore_oid h = new_obj(t, 0, 2, 0);
    root_set(t, "h", h);
    commit(t);
    g8_armed = g8_release = false;
    atomic_store(&g8_held, false);
    atomic_store(&g8_committed, 0);
    objstore_set_crash_hook(g8_hook);

    g8_writer a = {.s = s, .h = h, .slot = 0}, b = {.s = s, .h = h, .slot = 1};
    pthread_t ta, tb, tr;
    ck_assert_int_eq(pthread_create(&ta, NULL, g8_write, &a), 0);
    while (atomic_load(&a.stage) < 1)
        ts_sleep_ms(1);
    ck_assert_int_eq(pthread_create(&tb, NULL, g8_write, &b), 0);
    ts_sleep_ms(200);   /* b waits for the write lock: a's commit seals (G1) */
    pthread_mutex_lock(&g8_m);
    g8_armed = true;
    pthread_mutex_unlock(&g8_m);
    atomic_store(&a.stage, 2);
    while (atomic_load(&b.stage) < 1)
        ts_sleep_ms(1);
    atomic_store(&b.stage, 2);

    /* a's group is held writing; b's commit (a journal entry, G9) goes
     * through meanwhile. */
    for (int ms = 0; ms < 10000 && (!atomic_load(&g8_held) || atomic_load(&g8_committed) < 2);
         ms++)
        ts_sleep_ms(1);
    ck_assert_msg(atomic_load(&g8_held), "the first group never reached its heap write");
    ck_assert_int_eq(atomic_load(&g8_committed), 2);
    g8_reader r = {.s = s, .h = h};
    ck_assert_int_eq(pthread_create(&tr, NULL, g8_read, &r), 0);
    ts_sleep_ms(100);
    ck_assert_int_eq(atomic_load(&a.stage), 2);   /* neither returned */
    ck_assert_int_eq(atomic_load(&b.stage), 2);
    ck_assert(!atomic_load(&r.began));             /* the reader waits */

    pthread_mutex_lock(&g8_m);
    g8_release = true;
    pthread_cond_broadcast(&g8_cv);
    pthread_mutex_unlock(&g8_m);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    pthread_join(tr, NULL);
    objstore_set_crash_hook(NULL);
    ck_assert_int_eq(a.rc, OBJSTORE_OK);
    ck_assert_int_eq(b.rc, OBJSTORE_OK);
    ck_assert(r.seen[0] != 0 && r.seen[1] != 0);
    objstore_stats st;
    ck_assert_int_eq(objstore_get_stats(s, &st), OBJSTORE_OK);
    ck_assert_uint_eq(st.group_syncs, 2);
    close_store(s);
    s = open_store(g_store, NULL);
    t = rbegin(s);
    ck_assert(get_ref(t, h, 0) != 0 && get_ref(t, h, 1) != 0);
    objstore_abort(t);
    close_store(s);
}
END_TEST

START_TEST(test_kill_9_while_threads_commit_loses_no_returned_commit_and_leaves_none_half)
{
    ledger_create();
    uint64_t seed = test_seed(), returned[THREADS] = {0};
    for (int round = 0; round < 6; round++) {
        /* Every other round checkpoints every few commits: redo records are
         * deleted by group commits too (the chain across a drop). */
        uint64_t ms = 40 + ts_mix64(seed + (uint64_t)round) % 200;
        g_flags = round % 3 == 2 ? OBJSTORE_NO_JOURNAL : 0;   /* groups through LMDB */
        crash_round(returned, ms, NULL, 0, round % 2 ? 16 * KiB : 0);
        if (getenv("OBJSTORE_TEST_VERBOSE"))
            printf("round %d (seed %llu, kill at %llu ms): thread 0 at %llu\n", round,
                   U(seed), U(ms), U(returned[0]));
    }
}
END_TEST

START_TEST(test_a_crash_at_each_step_of_a_group_commit_keeps_exactly_the_returned_commits)
{
    /* Groups with a root change go through LMDB, the others to the journal
     * (G9): both kinds' steps. */
    static const char *const steps[] = {"lmdb-commit", "journal-fdatasync", "lmdb-committed",
                                        "journal-committed", "heap-pwrite", "journal-write"};
    ledger_create();
    uint64_t seed = test_seed(), returned[THREADS] = {0};
    int stopped = 0;
    for (int round = 0; round < 12; round++) {
        int after = (int)(2 + ts_mix64(seed * 31 + (uint64_t)round) % 60);
        /* LMDB's steps with every group through LMDB, the others as they
         * come (heap-only groups to the journal). */
        g_flags = round % 6 == 0 || round % 6 == 2 ? OBJSTORE_NO_JOURNAL : 0;
        int code = crash_round(returned, 0, steps[round % 6], after, 0);
        MUST(code == 128 + SIGKILL || code == 0, "round %d (%s): the child ended with %d",
             round, steps[round % 6], code);
        stopped += code == 128 + SIGKILL;
    }
    MUST(stopped >= 8, "only %d of 12 children reached their crash step", stopped);
}
END_TEST

/* ---- a failing write or sync (the fault shim) ---- */

/* --fault-child STORE REPORTS: the ledger, 30 commits a thread; the shim in
 * LD_PRELOAD fails one call.  Exit 0 unless something crashed. */
static int fault_child(char **argv)
{
    free(g_store);
    g_store = strdup(argv[2]);
    int fd = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return 20;
    int code = ledger_child(fd, 30, NULL);
    close(fd);
    return code;
}

static unsigned long run_fault_child(const char *shim, unsigned long at, uint64_t *returned,
                                     unsigned long *count)
{
    char *rep = ts_path(g_dir, "shim.report"), *log = ts_path(g_dir, "reports");
    unlink(rep);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        char *argv[] = {"test_group", "--fault-child", g_store, log, NULL};
        exec_with_fault_shim(shim, g_store, at, at % 2 ? "EIO" : "ENOSPC", rep, argv);
    }
    int code = wait_child(pid);
    MUST(code == 0 || code == 10, "fault at call %lu: the child exited %d", at, code);
    int fd = open(log, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    read_reports(fd, returned);
    close(fd);
    unsigned long failed = 0;
    FILE *f = fopen(rep, "r");
    MUST(f != NULL, "no report from the shim");
    char line[512];
    while (fgets(line, sizeof line, f)) {
        unsigned long n;
        if (sscanf(line, "count %lu", &n) == 1 && count)
            *count = n;
        else if (sscanf(line, "failed %lu", &n) == 1)
            failed = n;
    }
    fclose(f);
    free(rep);
    free(log);
    return failed;
}

START_TEST(test_a_failing_write_or_sync_under_group_commit_keeps_every_returned_commit)
{
    char *shim = fault_shim_path();
    MUST(access(shim, R_OK) == 0, "%s is missing", shim);
    ledger_create();
    uint64_t returned[THREADS] = {0};
    unsigned long total = 0;
    run_fault_child(shim, 0, returned, &total);
    MUST(total > 100, "the shim counted %lu calls", total);
    uint64_t count[THREADS];
    objstore *s = open_store(g_store, NULL);
    ledger_check(s, returned, count);
    close_store(s);
    uint64_t seed = test_seed();
    int injected = 0;
    for (int k = 0; k < 8; k++) {
        for (int t = 0; t < THREADS; t++)
            returned[t] = count[t];
        unsigned long at = 1 + ts_mix64(seed + (uint64_t)k) % total;
        injected += run_fault_child(shim, at, returned, NULL) != 0;
        s = open_store(g_store, NULL);
        ledger_check(s, returned, count);
        close_store(s);
    }
    MUST(injected > 0, "no fault was injected in 8 runs");
    free(shim);
}
END_TEST

static Suite *group_suite(void)
{
    Suite *s = suite_create("group");
    TCase *tc = ts_tcase(s, "group", 300);
    tcase_add_loop_test(tc, test_threads_committing_at_once_share_syncs_and_every_commit_is_durable,
                        0, 2);
    tcase_add_test(tc, test_checkpoints_among_group_commits_keep_the_redo_chain_whole);
    tcase_add_test(tc, test_aborts_among_group_commits_roll_back_only_themselves);
    tcase_add_test(tc, test_readers_beside_group_commits_see_only_durable_whole_states);
    tcase_add_loop_test(tc, test_the_next_group_commits_while_the_last_one_writes_and_readers_wait,
                        0, 2);
    tcase_add_test(tc, test_kill_9_while_threads_commit_loses_no_returned_commit_and_leaves_none_half);
    tcase_add_test(tc, test_a_crash_at_each_step_of_a_group_commit_keeps_exactly_the_returned_commits);
    tcase_add_test(tc, test_a_failing_write_or_sync_under_group_commit_keeps_every_returned_commit);
    return s;
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "--fault-child"))
        return fault_child(argv);
    SRunner *sr = srunner_create(group_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
